"""IM across nodes (issue 12): three tetherd nodes on one real redis-server.

XEP-0280 carbons reach the account's resources on other nodes, with and
without XEP-0198; the IM state of a session (carbons, XEP-0352 CSI, its
available presence) survives an XEP-0198 resumption on another node; and
offline messages handed to a session whose node is killed with SIGKILL
before the client acknowledged them are not lost."""

import signal

import pytest

import conftest as cf
import sm_client as smc
import xmpp_raw as xr
from sasl2_client import (bind2_xml, new_ua_id, resume_xml, sasl2_login, success_parts)
from test_cluster import Cluster, cluster  # noqa: F401  (cluster: a fixture)
from test_fast import fast_attempt
from test_im import (NS_CARBONS, carbons, no_carbon, roster_get, subscribe_both, wait_carbon)
from test_isr import detach, isr_attempt
from xmpp_raw import q, tostr

# Every server here names its store: the TETHER_STORE=redis run skips this file.
pytestmark = pytest.mark.fixed_store

ISR_MECH = 'HT-SHA-256-ENDP'

PING = "<ping xmlns='urn:xmpp:ping'/>"


def plain(node, user, resource, presence=True):
    """Without XEP-0198: a direct entry in the account's directory."""
    c = xr.login(node, user, cf.USERS[user], resource, presence=presence)
    c.roundtrip()
    return c


def with_sm(node, user, resource):
    """With XEP-0198 (acks answered), available."""
    c = smc.sm_login(node, user, cf.USERS[user], resource, presence=True, auto_ack=True)
    c.roundtrip()
    return c


# ----------------------------------------------------------------------------- carbons

def test_carbons_reach_resources_on_other_nodes(cluster, conns):
    """alice/phone on a (SM), alice/laptop on b (no SM) and alice/tablet on
    c (SM) with carbons, alice/watch on b without; bob on c. Received and
    sent copies cross nodes; <private/>, <no-copy/> and copies are not
    copied; a resource that disabled carbons gets none."""
    a, b, c = (cluster.nodes[n] for n in 'abc')
    phone = with_sm(a, 'alice', 'phone')
    laptop = plain(b, 'alice', 'laptop')
    tablet = with_sm(c, 'alice', 'tablet')
    watch = plain(b, 'alice', 'watch')
    bob = plain(c, 'bob', 'desk')
    conns.extend([phone, laptop, tablet, watch, bob])
    for r in (phone, laptop, tablet):
        carbons(r)

    bob.message(phone.jid, 'in-1')
    phone.wait_message('in-1', timeout=10)
    for r in (laptop, tablet):
        inner = wait_carbon(r, 'received', 'in-1')
        assert inner.get('from') == bob.jid and inner.get('to') == phone.jid, tostr(inner)

    phone.message(bob.jid, 'out-1')
    bob.wait_message('out-1', timeout=10)
    for r in (laptop, tablet):
        inner = wait_carbon(r, 'sent', 'out-1')
        assert inner.get('from') == phone.jid and inner.get('to') == bob.jid, tostr(inner)

    laptop.message(bob.jid, 'out-2')                 # from the plain session, to the SM ones
    bob.wait_message('out-2', timeout=10)
    for r in (phone, tablet):
        wait_carbon(r, 'sent', 'out-2')

    phone.message(bob.jid, 'secret', extra="<private xmlns='%s'/>" % NS_CARBONS)
    bob.message(phone.jid, 'nocopy', extra="<no-copy xmlns='urn:xmpp:hints'/>")
    bob.wait_message('secret', timeout=10)
    phone.wait_message('nocopy', timeout=10)
    for r in (phone, laptop, tablet, watch):
        no_carbon(r)                              # none of the above, nor copies of copies

    carbons(tablet, on=False)
    bob.message(phone.jid, 'in-2')
    phone.wait_message('in-2', timeout=10)
    wait_carbon(laptop, 'received', 'in-2')
    no_carbon(tablet)
    no_carbon(watch)
    no_carbon(phone)


# ----------------------------------------------------------------------------- IM state across a resumption

NS_CSI = 'urn:xmpp:csi:0'
NS_CHATSTATES = 'http://jabber.org/protocol/chatstates'
STATUS = 'on the bus'


def _classic(node):
    return smc.sm_login(node, 'alice', cf.USERS['alice'], 'phone', auto_ack=True)


def _sasl2(node, **kw):
    c, _ = sasl2_login(node, 'alice', cf.USERS['alice'], tag='phone', **kw)
    c.wait_for(q(xr.NS_STREAM, 'features'))
    c.auto_ack = True
    return c


def start_session(method, node):
    """alice's XEP-0198 session on <node>, begun the way <method> resumes it."""
    if method == 'classic':
        return _classic(node), None
    if method == 'isr':
        c = _sasl2(node, isr_mech=ISR_MECH)
        return c, c.isr_token
    ua = new_ua_id()
    c = _sasl2(node, ua_id=ua, request_token=ISR_MECH)
    return c, (ua, c.fast_token)


def resume(method, node, sid, h, secret):
    if method == 'classic':
        c, el = smc.sm_resume(node, 'alice', cf.USERS['alice'], sid, h, auto_ack=True)
        assert xr.local(el.tag) == 'resumed', tostr(el)
        return c
    if method == 'isr':
        c, el = isr_attempt(node, 'alice', secret, sid, h)
        assert success_parts(el)['inst_resumed'] is not None, tostr(el)
    else:
        ua, token = secret
        c, el = fast_attempt(node, 'alice', token, ISR_MECH, ua,
                             inline=resume_xml(sid, h) + bind2_xml('phone'), resume_h=h)
        assert success_parts(el)['resumed'] is not None, tostr(el)
    c.auto_ack = True
    return c


def is_presence(frm, type_=None):
    return lambda e: (e.tag == q(xr.NS_CLIENT, 'presence') and e.get('from') == frm
                      and e.get('type') == type_)


def status_of(e):
    return e.findtext(q(xr.NS_CLIENT, 'status'))


@pytest.fixture(params=['memory', 'redis-same-node', 'redis-other-node'])
def where(request, server_factory, tmp_path):
    """(node the session begins on, node it resumes on, a third node)."""
    if request.param == 'memory':
        s = server_factory(backend='memory', **{'sm.max_resume': 120})
        for user, pw in cf.USERS.items():
            s.add_user(user, pw)
        s.settle_users()
        yield s, s, s
        return
    c = Cluster(server_factory, tmp_path)
    a, b, third = (c.nodes[n] for n in 'abc')
    yield (a, a, third) if request.param == 'redis-same-node' else (a, b, third)
    c.close()


@pytest.mark.parametrize('method', ['classic', 'isr', 'fast'])
def test_im_state_survives_resumption(where, method, conns):
    """alice/phone (XEP-0198) enables carbons, is available with a status and
    priority 5, has asked for her roster, goes CSI-inactive, then loses her
    TCP connection and resumes (<resume/>, ISR, or FAST with an inline
    <resume/>), on the same node or another. Afterwards: a message to
    another resource of hers is carbon-copied to her; bob's new resource
    gets her status in answer to its probe; a bare-JID message reaches her
    (priority 5 beats her laptop's 0); a chat state is dropped and bob's
    presence is held until she says <active/>."""
    first, then, third = where
    phone, secret = start_session(method, first)
    conns.append(phone)
    laptop = plain(third, 'alice', 'laptop')
    bob = plain(third, 'bob', 'desk')
    conns.extend([laptop, bob])
    roster_get(phone)
    roster_get(bob)
    carbons(phone)
    phone.presence(priority=5, extra='<status>%s</status>' % STATUS)
    phone.wait_for(is_presence(phone.jid), what='own presence echo')
    subscribe_both(phone, bob)
    phone.send("<inactive xmlns='%s'/>" % NS_CSI)
    phone.roundtrip()
    jid, sid, h = phone.jid, phone.sm_id, phone.h
    detach(first, phone)

    new = resume(method, then, sid, h, secret)
    conns.append(new)
    assert new.jid == jid or method == 'classic', (new.jid, jid)
    new.jid = jid

    bob.message(laptop.jid, 'to-laptop')
    laptop.wait_message('to-laptop', timeout=10)
    wait_carbon(new, 'received', 'to-laptop')           # carbons: still enabled

    bob2 = plain(third, 'bob', 'desk2')                  # its initial presence probes alice
    conns.append(bob2)
    p = bob2.wait_for(is_presence(jid), timeout=10, what="alice's presence")
    assert status_of(p) == STATUS, tostr(p)              # the last presence, not a bare one

    bob.message('alice@localhost', 'to-bare')
    new.wait_message('to-bare', timeout=10)              # available, priority 5
    xr.assert_no_message(laptop, wait=0.5, body='to-bare')

    # A chat state waits (dropped, or written with the next message that
    # matters: on Redis it is in the queue already), a message does not.
    bob.send("<message to='%s' type='chat'><composing xmlns='%s'/></message>"
             % (jid, NS_CHATSTATES))
    assert new.maybe(lambda e: e.find(q(NS_CHATSTATES, 'composing')) is not None, 1.0) is None, \
        'CSI inactive not restored: chat state delivered at once'
    bob.message(jid, 'after-state')
    new.wait_message('after-state', timeout=10)

    bob.presence(extra='<status>away now</status>')
    assert new.maybe(is_presence(bob.jid), 1.0) is None, 'CSI inactive not restored: presence not held'
    new.send("<active xmlns='%s'/>" % NS_CSI)
    p = new.wait_for(lambda e: is_presence(bob.jid)(e) and status_of(e) == 'away now', timeout=10,
                     what="bob's held presence")


# ----------------------------------------------------------------------------- offline messages and kill -9

def test_offline_messages_unacked_survive_kill9_of_the_node(cluster, conns):
    """alice has offline messages; she logs in with XEP-0198 on node a and
    sends initial presence: they come, she does not acknowledge them, and
    node a is killed with SIGKILL. She resumes on node b with h=0: every
    one of them again, in order, once, with its delay stamp; none is left
    in offline storage to come a second time."""
    a, b, c = (cluster.nodes[n] for n in 'abc')
    bob = plain(c, 'bob', 'desk')
    conns.append(bob)
    n = 8
    for i in range(n):
        bob.message('alice@localhost', smc.numbered('off', i))
    bob.roundtrip()
    assert not [e for e in bob.inbox if e.get('type') == 'error'], 'bounced'
    alice = smc.sm_login(a, 'alice', cf.USERS['alice'], 'phone', auto_ack=False)
    alice.presence()
    got = alice.wait_bodies('off', n, timeout=15)
    assert got == [smc.numbered('off', i) for i in range(n)], got
    sid = alice.sm_id
    a.stop(signal.SIGKILL)
    smc.kill(alice)
    new, el = smc.sm_resume(b, 'alice', cf.USERS['alice'], sid, 0, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    got = new.wait_bodies('off', n, timeout=15)
    new.iq('get', PING, to='localhost', timeout=10)
    assert new.messages('off') == [smc.numbered('off', i) for i in range(n)], new.messages('off')
    for m in new.message_els('off'):
        assert smc.delay_of(m) is not None, tostr(m)
    # nothing stayed in offline storage: a second login gets none again
    other = plain(c, 'alice', 'tablet')
    conns.append(other)
    xr.assert_no_message(other, wait=1.0)


# ----------------------------------------------------------------------------- blocking (XEP-0191)

NS_BLOCKING = 'urn:xmpp:blocking'


def block(c, verb, jid=None):
    item = "<item jid='%s'/>" % jid if jid else ''
    r = c.iq('set', "<%s xmlns='%s'>%s</%s>" % (verb, NS_BLOCKING, item, verb), timeout=10)
    assert r.get('type') == 'result', tostr(r)


def test_blocking_across_nodes(cluster, conns):
    """alice/phone (XEP-0198) on a, alice/laptop (no XEP-0198) on b, bob on c,
    carol on b. Once phone has the result for <block/> of bob, nothing of
    bob's reaches alice anywhere: not her SM queue (also while detached: her
    resumption on b retransmits carol's message, not bob's), not her other
    node, not offline storage; bob's iq gets service-unavailable, and bob
    gets her unavailable presence. After <unblock/> from b, bob gets through."""
    a, b, c = (cluster.nodes[n] for n in 'abc')
    phone = with_sm(a, 'alice', 'phone')
    laptop = plain(b, 'alice', 'laptop')
    bob = plain(c, 'bob', 'desk')
    carol = plain(b, 'carol', 'pc')
    conns.extend([phone, laptop, bob, carol])
    block(phone, 'block', 'bob@localhost')
    for x in (phone, laptop):
        bob.wait_presence(from_=x.jid, type_='unavailable', timeout=10)

    bob.message(phone.jid, 'blocked-full')
    bob.message(laptop.jid, 'blocked-other-node')
    bob.message('alice@localhost', 'blocked-bare')
    bob.presence(to=phone.jid)
    r = bob.iq('get', "<query xmlns='jabber:iq:version'/>", to=phone.jid, timeout=10)
    assert r.get('type') == 'error' and r.find('%s/%s' % (q(xr.NS_CLIENT, 'error'), q(
        xr.NS_STANZAS, 'service-unavailable'))) is not None, tostr(r)
    carol.message(phone.jid, 'carol-1')
    carol.message(laptop.jid, 'carol-2')
    phone.wait_message('carol-1', timeout=10)
    laptop.wait_message('carol-2', timeout=10)
    for x in (phone, laptop):
        assert not [e for e in x.inbox if e.get('from', '').startswith('bob@')], \
            [tostr(e) for e in x.inbox]

    # detached: what bob sends now is not queued for the resumption
    jid, sid, h = phone.jid, phone.sm_id, phone.h
    smc.kill(phone)
    a.wait_log('session detached jid=%s' % jid, 10)
    bob.message(jid, 'blocked-while-detached')
    carol.message(jid, 'carol-while-detached')
    carol.roundtrip()
    bob.roundtrip()
    new, el = smc.sm_resume(b, 'alice', cf.USERS['alice'], sid, h, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    new.jid = jid
    new.wait_message('carol-while-detached', timeout=10)
    new.iq('get', PING, to='localhost', timeout=10)
    assert not [e for e in new.inbox if (e.get('from') or '').startswith('bob@')], \
        [tostr(e) for e in new.inbox]

    # nothing of bob's was stored offline either
    block(laptop, 'unblock')
    laptop.close()
    conns.remove(laptop)
    new.send("<presence type='unavailable'/>")
    new.roundtrip()
    later = plain(c, 'alice', 'tablet')
    conns.append(later)
    assert later.maybe(lambda e: e.tag == q(xr.NS_CLIENT, 'message'), 1.0) is None, \
        'a blocked message was stored offline'
    bob.message(later.jid, 'unblocked')
    later.wait_message('unblocked', timeout=10)
