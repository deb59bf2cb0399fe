"""Sessions bound WITHOUT XEP-0198 on several tetherd nodes sharing one
real redis-server (issue 10): each such session has a direct entry in the
account's route directory ("~<owner>|<avail>|<prio>"), so full-JID and
bare-JID messages, iqs and presence from a client on another node reach
it through its owner node's inbox; a session that is gone gets RFC 6121's
treatment, a resource bound on two nodes ends the older stream, and a
killed node's entries stop swallowing stanzas once its lease lapses. What
a killed node leaves behind: the reaper undoes its sessions' directed
presence and hands the stanzas in its inbox to RFC 6121's rules."""

import signal
import time

import pytest

import conftest as cf
import sm_client as smc
import xmpp_raw as xr
from test_cluster import Cluster, cluster  # noqa: F401  (cluster: a fixture)
from xmpp_raw import q, tostr

# Every server here names its store: the TETHER_STORE=redis run skips this file.
pytestmark = pytest.mark.fixed_store

PING = "<ping xmlns='urn:xmpp:ping'/>"


def login(node, user, resource, priority=None, presence=True):
    """A plain client: TLS, SASL, bind, initial presence; no <enable/>."""
    c = xr.login(node, user, cf.USERS[user], resource, priority=priority, presence=presence)
    c.roundtrip()        # the bind and the presence are written through by now
    return c


def entry(cluster, bare, resource):
    return cluster.redis.cli('HGET', 't:{%s}:dir' % bare, resource).strip()


def is_error(kind):
    return lambda e: e.tag == q(xr.NS_CLIENT, kind) and e.get('type') == 'error'


def test_full_jid_messages_between_nodes_both_ways_in_order(cluster, conns):
    a, b = cluster.nodes['a'], cluster.nodes['b']
    alice = login(a, 'alice', 'phone')
    bob = login(b, 'bob', 'desk')
    conns.extend([alice, bob])
    assert entry(cluster, 'bob@localhost', 'desk').startswith('~b.'), 'no direct entry'
    for i in range(20):
        alice.message(bob.jid, 'ab-%02d' % i)
        bob.message(alice.jid, 'ba-%02d' % i)
    for i in range(20):
        m = bob.wait_message('ab-%02d' % i, timeout=10)
        assert m.get('from') == alice.jid, tostr(m)
        alice.wait_message('ba-%02d' % i, timeout=10)
    xr.assert_no_message(bob, wait=0.5, body='ab-00')      # nothing twice


def test_bare_jid_message_goes_to_the_highest_priority_anywhere(cluster, conns):
    """RFC 6121 §8.5.2.1.1 across nodes: bob on a (priority 1) and on b
    (priority 5): a message to bob's bare JID from node c goes to b only;
    once b's resource drops to a negative priority, to a."""
    a, b, c = cluster.nodes['a'], cluster.nodes['b'], cluster.nodes['c']
    low = login(a, 'bob', 'low', priority=1)
    high = login(b, 'bob', 'high', priority=5)
    alice = login(c, 'alice', 'phone')
    conns.extend([low, high, alice])
    alice.message('bob@localhost', 'to-high')
    m = high.wait_message('to-high', timeout=10)
    assert m.get('from') == alice.jid, tostr(m)
    xr.assert_no_message(low, wait=1.0, body='to-high')
    high.presence(priority=-1)
    high.roundtrip()
    alice.message('bob@localhost', 'to-low')
    low.wait_message('to-low', timeout=10)
    xr.assert_no_message(high, wait=1.0, body='to-low')


def test_iq_round_trip_between_nodes(cluster, conns):
    a, b = cluster.nodes['a'], cluster.nodes['b']
    alice = login(a, 'alice', 'phone')
    bob = login(b, 'bob', 'desk')
    conns.extend([alice, bob])
    alice.send("<iq type='get' id='v1' to='%s'><query xmlns='jabber:iq:version'/></iq>" % bob.jid)
    req = bob.wait_for(lambda e: e.tag == q(xr.NS_CLIENT, 'iq') and e.get('id') == 'v1', timeout=10)
    assert req.get('from') == alice.jid and req.get('type') == 'get', tostr(req)
    bob.send("<iq type='result' id='v1' to='%s'><query xmlns='jabber:iq:version'>"
             "<name>bot</name></query></iq>" % alice.jid)
    res = alice.wait_for(lambda e: e.tag == q(xr.NS_CLIENT, 'iq') and e.get('id') == 'v1', timeout=10)
    assert res.get('type') == 'result' and res.get('from') == bob.jid, tostr(res)


def test_own_presence_between_nodes_without_sm(cluster, conns):
    """A user's plain resources on two nodes: broadcast presence, directed
    presence to the other resource's full JID, and unavailable when one
    goes (RFC 6121 §4.2, §4.5, §4.6)."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    phone = login(a, 'alice', 'phone')
    desk = login(b, 'alice', 'desk')
    conns.extend([phone, desk])
    phone.presence(priority=3)
    desk.wait_presence(from_=phone.jid, timeout=10)
    desk.send("<presence to='%s'><status>directed</status></presence>" % phone.jid)
    el = phone.wait_for(lambda e: e.tag == q(xr.NS_CLIENT, 'presence') and e.get('from') == desk.jid
                        and e.findtext(q(xr.NS_CLIENT, 'status')) == 'directed', timeout=10)
    assert el.get('type') is None, tostr(el)
    desk.close()
    phone.wait_presence(from_=desk.jid, type_='unavailable', timeout=10)


def test_recipient_gone_gets_rfc6121_treatment(cluster, conns):
    """bob's plain session on b ends: its entry goes with it, and a chat
    message to its full JID is treated as to the bare JID (no resource
    left: stored offline, RFC 6121 §8.5.2.2, not lost), an iq gets
    service-unavailable."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    alice = login(a, 'alice', 'phone')
    bob = login(b, 'bob', 'desk')
    conns.append(alice)
    jid = bob.jid
    bob.close()
    deadline = time.monotonic() + 5
    while entry(cluster, 'bob@localhost', 'desk') and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not entry(cluster, 'bob@localhost', 'desk'), 'entry left behind'
    alice.message(jid, 'anyone?', id_='g1')
    alice.send("<iq type='get' id='g2' to='%s'>%s</iq>" % (jid, PING))
    err = alice.wait_for(is_error('iq'), timeout=10, what='iq error')
    assert err.get('id') == 'g2' and xr.stanza_error(err)[1] == 'service-unavailable', tostr(err)
    assert alice.maybe(is_error('message'), 0.5) is None, 'message bounced'
    back = login(a, 'bob', 'back')
    conns.append(back)
    back.wait_message('anyone?', 10)


def test_stale_entry_on_a_live_node_is_rerouted_and_removed(cluster, conns):
    """An entry whose stream is gone but which was never removed (say its
    removal was lost): the owner node finds no stream at that address,
    removes the entry (check-and-delete) and applies RFC 6121: a chat
    message goes to the account's other resources, here another node's."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    alice = login(a, 'alice', 'phone')
    other = login(a, 'bob', 'other')
    conns.extend([alice, other])
    inc = cluster.redis.cli('GET', 't:{node:b}:lease').strip()
    assert inc.startswith('b.'), inc
    ghost = '~%s/0/4000/7|1|9' % inc                  # a slot b never gave out
    cluster.redis.cli('HSET', 't:{bob@localhost}:dir', 'ghost', ghost)
    alice.message('bob@localhost/ghost', 'for-ghost', id_='s1')
    m = other.wait_message('for-ghost', timeout=10)
    assert m.get('from') == alice.jid, tostr(m)
    assert not entry(cluster, 'bob@localhost', 'ghost'), 'stale entry not removed'
    alice.send("<iq type='get' id='s2' to='bob@localhost/ghost'>%s</iq>" % PING)
    err = alice.wait_for(is_error('iq'), timeout=10, what='iq error')
    assert xr.stanza_error(err)[1] == 'service-unavailable', tostr(err)
    # To the bare JID: the ghost has the highest priority, so it is chosen;
    # its node removes it and picks again among the rest, here on node a.
    cluster.redis.cli('HSET', 't:{bob@localhost}:dir', 'ghost2', '~%s/0/4001/7|1|9' % inc)
    alice.message('bob@localhost', 'bare-ghost')
    m = other.wait_message('bare-ghost', timeout=10)
    assert m.get('from') == alice.jid, tostr(m)
    assert not entry(cluster, 'bob@localhost', 'ghost2'), 'stale entry not removed'
    xr.assert_no_message(other, wait=1.0, body='bare-ghost')     # once


@pytest.mark.parametrize('old_sm,new_sm', [(False, False), (False, True), (True, False)])
def test_same_resource_on_another_node_wins(cluster, conns, old_sm, new_sm):
    """RFC 6120 §7.7.2.2 across nodes, with or without XEP-0198 on either
    side: the newer bind wins, the older stream gets conflict."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    mk = lambda node, sm: (smc.sm_login(node, 'alice', cf.USERS['alice'], 'phone', presence=True,
                                        auto_ack=True) if sm else login(node, 'alice', 'phone'))
    old = mk(a, old_sm)
    conns.append(old)
    new = mk(b, new_sm)
    conns.append(new)
    err = old.wait_for(q(xr.NS_STREAM, 'error'), timeout=10)
    assert xr.stream_error_condition(err) == 'conflict', tostr(err)
    new.iq('get', PING, to='localhost', timeout=10)
    assert new.maybe(lambda e: e.tag == q(xr.NS_STREAM, 'error'), 0.5) is None
    time.sleep(0.3)
    v = entry(cluster, 'alice@localhost', 'phone')
    assert v.startswith('~b.' if not new_sm else new.sm_id), v      # the old end left it alone


def test_enable_after_bind_keeps_the_resource(cluster, conns):
    """A plain bind, then <enable/> on the same stream: the session's
    entry replaces the direct one (no self-kick), and a message from
    another node lands in its XEP-0198 queue."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    conn = xr.login(a, 'alice', cf.USERS['alice'], 'phone')
    alice = smc.SMConn.from_conn(conn)
    conns.append(alice)
    alice.iq('get', PING, to='localhost', timeout=10)
    assert entry(cluster, 'alice@localhost', 'phone').startswith('~a.')
    alice.enable(resume=True)
    alice.iq('get', PING, to='localhost', timeout=10)
    assert entry(cluster, 'alice@localhost', 'phone').startswith(alice.sm_id)
    bob = login(b, 'bob', 'desk')
    conns.append(bob)
    bob.message(alice.jid, smc.numbered('e', 0))
    assert alice.wait_bodies('e', 1, timeout=10) == [smc.numbered('e', 0)]
    assert not alice.stream_errors()
    assert cluster.redis.cli('LLEN', 't:{alice@localhost}:q:%s' % alice.sm_id).strip() != '0'


def test_killed_node_entries_stop_swallowing_stanzas(cluster, conns):
    """kill -9 of the node that holds bob's plain session: once its lease
    lapses (5 s), stanzas to bob's full JID are not put in a dead inbox: an
    iq gets service-unavailable, a chat message is stored offline (no
    resource left, RFC 6121 §8.5.3.2.1 then §8.5.2.2) and reaches bob at
    his next login; the reaper removes the entry."""
    a, b, c = cluster.nodes['a'], cluster.nodes['b'], cluster.nodes['c']
    alice = login(a, 'alice', 'phone')
    bob = login(c, 'bob', 'desk')
    conns.append(alice)
    jid = bob.jid
    c.stop(signal.SIGKILL)
    bob.abort()
    deadline = time.monotonic() + 20
    err = None
    n = 0
    while err is None and time.monotonic() < deadline:
        n += 1
        alice.send("<iq type='get' id='k%d' to='%s'>%s</iq>" % (n, jid, PING))
        err = alice.maybe(is_error('iq'), 1.0)
    assert err is not None, 'still swallowed after the lease lapsed'
    assert xr.stanza_error(err)[1] == 'service-unavailable', tostr(err)
    alice.message(jid, 'after-kill', id_='m1')
    assert alice.maybe(is_error('message'), 1.0) is None
    deadline = time.monotonic() + 5                   # the reaper's next tick or two
    while entry(cluster, 'bob@localhost', 'desk') and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not entry(cluster, 'bob@localhost', 'desk')
    back = login(b, 'bob', 'back')
    conns.append(back)
    back.wait_message('after-kill', 10)


def test_killed_node_direct_session_goes_unavailable_for_contacts(cluster, conns):
    """kill -9 of the node that holds bob's plain session, available and
    subscribed to by alice: the reaper removes its directory entry once the
    node's lease lapses, and alice (another node) and bob's other resource
    get its unavailable presence (RFC 6121 §4.5.2)."""
    from test_im import roster_get, subscribe_both
    a, b, c = cluster.nodes['a'], cluster.nodes['b'], cluster.nodes['c']
    alice = login(a, 'alice', 'phone')
    bob = login(c, 'bob', 'desk')
    other = login(b, 'bob', 'laptop')
    conns.extend([alice, other])
    roster_get(alice)
    roster_get(bob)
    subscribe_both(alice, bob)
    bob.presence()                                    # again, now that alice is subscribed
    alice.wait_presence(from_=bob.jid, timeout=10)
    unavailable = lambda e: (e.tag == q(xr.NS_CLIENT, 'presence') and
                             e.get('from') == bob.jid and e.get('type') == 'unavailable')
    c.stop(signal.SIGKILL)
    bob.abort()
    alice.wait_for(unavailable, timeout=20, what='bob unavailable on alice')
    other.wait_for(unavailable, timeout=5, what='bob/desk unavailable on bob/laptop')
    assert not entry(cluster, 'bob@localhost', 'desk')


# A short lease and tick, so that the reaper finds a killed node fast.
FAST_REAPER = {'cluster.lease_ms': 1000, 'cluster.tick_ms': 200}


def dp_keys(cluster, bare):
    return cluster.redis.cli('KEYS', 't:{%s}:dp:*' % bare).split()


def unavailable_from(jid):
    return lambda e: (e.tag == q(xr.NS_CLIENT, 'presence') and e.get('from') == jid and
                      e.get('type') == 'unavailable')


def wait_no_dp_keys(cluster, bare, timeout=5):
    deadline = time.monotonic() + timeout
    while dp_keys(cluster, bare) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not dp_keys(cluster, bare), 'directed-presence set left behind'


def login_as(node, sm, user, resource):
    if sm:
        return smc.sm_login(node, user, cf.USERS[user], resource)
    return login(node, user, resource, presence=False)


@pytest.mark.parametrize('sm', [False, True], ids=['direct', 'sm'])
def test_killed_node_directed_presence_is_undone(server_factory, tmp_path, conns, sm):
    """alice on node a sends directed presence to carol (on b, not a
    contact: RFC 6121 §4.6); node a is killed with SIGKILL. Once the reaper
    removes alice's session (direct: when a's lease lapses; XEP-0198: once
    its resumption window is over too), carol gets alice's unavailable
    presence (§4.6.3), and the set that kept carol is gone."""
    cluster = Cluster(server_factory, tmp_path, extra=dict(FAST_REAPER, **{'sm.max_resume': 1}))
    try:
        a, b = cluster.nodes['a'], cluster.nodes['b']
        carol = login(b, 'carol', 'pad')
        conns.append(carol)
        alice = login_as(a, sm, 'alice', 'phone')
        alice.presence(to=carol.jid)
        carol.wait_presence(from_=alice.jid, timeout=10)
        alice.roundtrip()
        assert dp_keys(cluster, 'alice@localhost'), 'directed presence not kept in Redis'
        a.stop(signal.SIGKILL)
        alice.abort()
        carol.wait_for(unavailable_from(alice.jid), timeout=20, what='alice unavailable on carol')
        wait_no_dp_keys(cluster, 'alice@localhost')
    finally:
        cluster.close()


@pytest.mark.parametrize('sm', [False, True], ids=['direct', 'sm'])
def test_session_end_removes_directed_presence_set(cluster, conns, sm):
    """A session on a live node keeps its directed-presence recipients in
    Redis as they change (an unavailable one takes a JID out, a broadcast
    unavailable clears them), and its end leaves no set behind (no leak)."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    carol = login(b, 'carol', 'pad')
    conns.append(carol)
    alice = login_as(a, sm, 'alice', 'phone')
    alice.presence(to=carol.jid)
    alice.presence(to='bob@localhost')
    carol.wait_presence(from_=alice.jid, timeout=10)
    alice.presence(to='bob@localhost', type_='unavailable')
    alice.roundtrip()
    keys = dp_keys(cluster, 'alice@localhost')
    assert len(keys) == 1, keys
    assert cluster.redis.cli('SMEMBERS', keys[0]).split() == [carol.jid]
    alice.presence(type_='unavailable')          # the broadcast undoes all of it
    carol.wait_for(unavailable_from(alice.jid), timeout=10, what='alice unavailable on carol')
    alice.roundtrip()
    assert not dp_keys(cluster, 'alice@localhost')
    alice.presence(to=carol.jid)
    carol.wait_presence(from_=alice.jid, timeout=10)
    alice.roundtrip()
    assert dp_keys(cluster, 'alice@localhost')
    alice.close()
    wait_no_dp_keys(cluster, 'alice@localhost')


def test_killed_node_inbox_goes_to_offline_storage_and_bounces(server_factory, tmp_path, conns):
    """bob (no XEP-0198) on node a; a is stopped (SIGSTOP), alice on node b
    sends bob/desk chat messages and iqs while a's lease still holds, so
    they wait in a's inbox (the first read by a's blocked XREADGROUP but
    never handled, the rest unread), then a is killed. The reaper drains
    a's inbox as stanzas for an unavailable resource (RFC 6121 §8.5.3.2):
    bob has no other resource, so the chat messages are stored offline
    and reach bob at his next login, once each, delay-stamped; the iqs
    come back to alice as service-unavailable; a's stream goes."""
    cluster = Cluster(server_factory, tmp_path,
                      extra={'cluster.lease_ms': 4000, 'cluster.tick_ms': 200})
    try:
        a, b = cluster.nodes['a'], cluster.nodes['b']
        bob = login(a, 'bob', 'desk')
        alice = login(b, 'alice', 'phone')
        conns.append(alice)
        n, niq = 100, 5
        a.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(n):
                alice.message(bob.jid, smc.numbered('in', i))
            for i in range(niq):
                alice.send("<iq type='get' id='q%d' to='%s'>%s</iq>" % (i, bob.jid, PING))
            alice.roundtrip()
            def notices():    # several an entry since tether_deliver_many
                entries = cluster.redis.command('XRANGE', 't:{node:a}:in', '-', '+') or []
                return sum(f[0::2].count(b'e') for _, f in entries)
            deadline = time.monotonic() + 5      # b's last batch may still be on its way
            while notices() < n + niq and time.monotonic() < deadline:
                time.sleep(0.05)
            assert notices() >= n + niq, 'not in the inbox: %d' % notices()
        finally:
            a.stop(signal.SIGKILL)
        bob.abort()
        for i in range(niq):
            err = alice.wait_for(lambda e, i=i: e.get('id') == 'q%d' % i and e.get('type') == 'error',
                                 timeout=30, what='iq q%d bounced' % i)
            assert xr.stanza_error(err)[1] == 'service-unavailable', tostr(err)
        deadline = time.monotonic() + 10
        while cluster.redis.cli('EXISTS', 't:{node:a}:in').strip() != '0' and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        assert cluster.redis.cli('EXISTS', 't:{node:a}:in').strip() == '0', 'dead inbox left'
        back = login(b, 'bob', 'back')
        conns.append(back)
        got = []
        for i in range(n):
            el = back.wait_message(smc.numbered('in', i), timeout=10)
            assert smc.delay_of(el) is not None, tostr(el)
            got.append(el)
        back.roundtrip()
        xr.assert_no_message(back, wait=0.5)          # nothing twice
    finally:
        cluster.close()
