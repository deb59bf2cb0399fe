"""Routing (RFC 6120 §10, RFC 6121 §8), presence to own resources, binding
rules, and delivery across worker threads."""

import re
import time

import pytest

import xmpp_raw as xr
from xmpp_raw import NS_CLIENT, q


def online(server, users, conns, user, resource, priority=0, presence=True, direct_tls=False):
    """Logs in, sends presence (with priority), and waits until the server has
    processed it (a ping round trip on the same stream is answered in order)."""
    c = xr.login(server, user, users[user], resource, priority=priority, presence=presence,
                 direct_tls=direct_tls)
    conns.append(c)
    c.roundtrip()
    return c


def drain_presence(*cs):
    for c in cs:
        c.pump(0.2)
        for e in list(c.inbox):
            if e.tag == q(NS_CLIENT, 'presence'):
                c.inbox.remove(e)


# ----------------------------------------------------------------------------- bare JID delivery

def test_bare_jid_goes_to_highest_priority(server, users, conns):
    b5 = online(server, users, conns, 'bob', 'p5', priority=5)
    b1 = online(server, users, conns, 'bob', 'p1', priority=1, direct_tls=True)
    a = online(server, users, conns, 'alice', 'a')
    a.message('bob@localhost', 'to-bare-1')
    m = b5.wait_message('to-bare-1')
    assert m.get('from') == a.jid
    xr.assert_no_message(b1, 1.5, body='to-bare-1')
    assert xr.stanza_error(m) == (None, None)


def test_bare_jid_priority_change_moves_delivery(server, users, conns):
    b5 = online(server, users, conns, 'bob', 'p5', priority=5)
    b1 = online(server, users, conns, 'bob', 'p1', priority=1)
    a = online(server, users, conns, 'alice', 'a')
    b1.presence(priority=10)
    b1.roundtrip()
    a.message('bob@localhost', 'after-change')
    assert b1.wait_message('after-change').get('from') == a.jid
    xr.assert_no_message(b5, 1.5, body='after-change')


def test_bare_jid_skips_negative_priority(server, users, conns):
    neg = online(server, users, conns, 'bob', 'neg', priority=-1)
    zero = online(server, users, conns, 'bob', 'zero', priority=0)
    a = online(server, users, conns, 'alice', 'a')
    a.message('bob@localhost', 'mixed-prio')
    assert zero.wait_message('mixed-prio').get('from') == a.jid
    xr.assert_no_message(neg, 1.5, body='mixed-prio')


def test_bare_jid_only_negative_priority_not_delivered(server, users, conns):
    neg = online(server, users, conns, 'bob', 'neg', priority=-1)
    a = online(server, users, conns, 'alice', 'a')
    a.message('bob@localhost', 'only-neg', id_='neg1')
    xr.assert_no_message(neg, 2.0, body='only-neg')
    # RFC 6121 §8.5.2.1.1: offline storage or <service-unavailable/>; no other error
    err = a.maybe(lambda e: e.tag == q(NS_CLIENT, 'message') and e.get('type') == 'error', 0.5)
    if err is not None:
        assert err.get('id') == 'neg1', xr.tostr(err)
        assert xr.stanza_error(err)[1] == 'service-unavailable', xr.tostr(err)


def test_bare_jid_not_delivered_to_resource_without_presence(server, users, conns):
    quiet = online(server, users, conns, 'bob', 'quiet', presence=False)
    a = online(server, users, conns, 'alice', 'a')
    a.message('bob@localhost', 'to-nobody-available')
    xr.assert_no_message(quiet, 1.5, body='to-nobody-available')
    # but its full JID works
    a.message(quiet.jid, 'direct')
    assert quiet.wait_message('direct').get('from') == a.jid


# ----------------------------------------------------------------------------- full JID delivery

def test_chat_to_unconnected_full_jid_goes_to_bare(server, users, conns):
    home = online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a')
    a.message('bob@localhost/no-such-resource', 'redirected', type_='chat')
    m = home.wait_message('redirected')
    assert m.get('from') == a.jid


def test_iq_to_unconnected_full_jid_is_service_unavailable(server, users, conns):
    online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a')
    r = a.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to='bob@localhost/no-such-resource')
    assert r.get('type') == 'error', xr.tostr(r)
    assert xr.stanza_error(r)[1] == 'service-unavailable', xr.tostr(r)


def test_iq_to_connected_full_jid_is_routed_both_ways(server, users, conns):
    b = online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a', direct_tls=True)
    a.send("<iq type='get' id='q1' to='%s'><query xmlns='jabber:iq:version'/></iq>" % b.jid)
    got = b.wait_for(lambda e: e.tag == q(NS_CLIENT, 'iq') and e.get('id') == 'q1')
    assert got.get('from') == a.jid and got.get('type') == 'get', xr.tostr(got)
    b.send("<iq type='result' id='q1' to='%s'><query xmlns='jabber:iq:version'>"
           "<name>bobclient</name><version>1</version></query></iq>" % a.jid)
    r = a.wait_for(lambda e: e.tag == q(NS_CLIENT, 'iq') and e.get('id') == 'q1')
    assert r.get('type') == 'result' and r.get('from') == b.jid, xr.tostr(r)


def test_iq_to_bare_jid_answered_by_server(server, users, conns):
    b = online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a')
    r = a.iq('get', "<query xmlns='%s'/>" % xr.NS_DISCO_INFO, to='bob@localhost', id_='bare-disco')
    assert r.get('type') in ('result', 'error'), xr.tostr(r)
    assert r.get('from') in ('bob@localhost', None), xr.tostr(r)
    leaked = b.maybe(lambda e: e.tag == q(NS_CLIENT, 'iq') and e.get('id') == 'bare-disco', 1.0)
    assert leaked is None, 'iq to a bare JID was forwarded to a resource: %s' % xr.tostr(leaked)
    r = a.iq('get', "<query xmlns='urn:example:unknown'/>", to='bob@localhost')
    assert xr.stanza_error(r)[1] == 'service-unavailable', xr.tostr(r)


def test_iq_to_bare_jid_does_not_tell_whether_the_account_exists(server, users, conns):
    """Issue 11 item 9: an iq to an account that does not exist gets the
    same answer as one to an existing account with no available resource
    (and one that is online): ping and disco#info included, which the
    server would otherwise answer on the account's behalf."""
    a = online(server, users, conns, 'alice', 'a')
    payloads = ["<ping xmlns='urn:xmpp:ping'/>", "<query xmlns='%s'/>" % xr.NS_DISCO_INFO,
                "<query xmlns='jabber:iq:version'/>"]

    def answers(to):
        got = []
        for i, p in enumerate(payloads):
            r = a.iq('get', p, to=to, id_='enum-%d' % i)
            got.append((r.get('type'), r.get('from'), xr.stanza_error(r), len(list(r))))
        return got

    nobody = [(t, f.replace('nobody', 'X'), e, n) for t, f, e, n in answers('nobody@localhost')]
    offline = [(t, f.replace('bob', 'X'), e, n) for t, f, e, n in answers('bob@localhost')]
    assert nobody == offline
    assert all(e == ('cancel', 'service-unavailable') for _, _, e, _ in nobody), nobody
    online(server, users, conns, 'bob', 'home')
    assert [(t, f.replace('bob', 'X'), e, n) for t, f, e, n in answers('bob@localhost')] == nobody
    # One's own bare JID is still answered on the account's behalf.
    r = a.iq('get', payloads[0], to='alice@localhost')
    assert r.get('type') == 'result', xr.tostr(r)


def test_stanzas_to_nonexistent_account(server, users, conns):
    a = online(server, users, conns, 'alice', 'a')
    r = a.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to='nobody@localhost')
    assert xr.stanza_error(r)[1] == 'service-unavailable', xr.tostr(r)
    r = a.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to='nobody@localhost/r')
    assert xr.stanza_error(r)[1] == 'service-unavailable', xr.tostr(r)
    a.message('nobody@localhost', 'void', id_='void1')
    err = a.maybe(lambda e: e.tag == q(NS_CLIENT, 'message') and e.get('id') == 'void1', 1.0)
    if err is not None:   # silently dropped or service-unavailable
        assert xr.stanza_error(err)[1] == 'service-unavailable', xr.tostr(err)
    a.roundtrip()


def test_from_is_stamped_by_server(server, users, conns):
    b = online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a')
    a.message(b.jid, 'forged-1', from_='carol@localhost/evil')
    assert b.wait_message('forged-1').get('from') == a.jid
    a.message(b.jid, 'forged-2', from_='localhost')
    assert b.wait_message('forged-2').get('from') == a.jid
    a.send("<iq type='get' id='fiq' to='%s' from='bob@localhost/home'><query xmlns='jabber:iq:version'/></iq>"
           % b.jid)
    got = b.wait_for(lambda e: e.tag == q(NS_CLIENT, 'iq') and e.get('id') == 'fiq')
    assert got.get('from') == a.jid, xr.tostr(got)


def test_message_order_preserved(server, users, conns):
    b = online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a', direct_tls=True)
    n = 50
    a.send(''.join("<message to='%s' type='chat'><body>seq-%d</body></message>" % (b.jid, i)
                   for i in range(n)))
    for i in range(n):
        m = b.wait_for(lambda e: e.tag == q(NS_CLIENT, 'message'))
        assert m.find(q(NS_CLIENT, 'body')).text == 'seq-%d' % i


# ----------------------------------------------------------------------------- presence

def test_presence_to_own_resources(server, users, conns):
    r2 = online(server, users, conns, 'alice', 'r2')
    r1 = online(server, users, conns, 'alice', 'r1')
    p = r2.wait_presence(from_='alice@localhost/r1')
    assert p.get('type') in (None, 'available'), xr.tostr(p)
    # clean close → unavailable
    r1.close()
    p = r2.wait_presence(from_='alice@localhost/r1', type_='unavailable')
    # abrupt close (no </stream:stream>) → unavailable too
    r3 = online(server, users, conns, 'alice', 'r3')
    r2.wait_presence(from_='alice@localhost/r3')
    r3.abort()
    r2.wait_presence(from_='alice@localhost/r3', type_='unavailable', timeout=15)


def test_presence_not_sent_to_other_accounts_without_subscription(server, users, conns):
    b = online(server, users, conns, 'bob', 'home')
    online(server, users, conns, 'alice', 'a')
    p = b.maybe(lambda e: e.tag == q(NS_CLIENT, 'presence') and (e.get('from') or '').startswith('alice@'), 1.0)
    assert p is None, 'presence leaked to a non-subscriber: %s' % xr.tostr(p)


# ----------------------------------------------------------------------------- binding

def test_same_full_jid_conflict(server, users, conns):
    old = online(server, users, conns, 'alice', 'dup')
    new = xr.login(server, 'alice', users['alice'], 'dup', direct_tls=True, presence=False)
    conns.append(new)
    assert new.jid == 'alice@localhost/dup'
    assert old.expect_stream_error(timeout=10) == 'conflict'
    b = online(server, users, conns, 'bob', 'home')
    b.message('alice@localhost/dup', 'to-new')
    assert new.wait_message('to-new').get('from') == b.jid


def test_legacy_session_iq(server, users, conns):
    c = xr.login(server, 'alice', users['alice'], 'legacy', presence=False)
    conns.append(c)
    r = c.iq('set', "<session xmlns='%s'/>" % xr.NS_SESSION)
    assert r.get('type') == 'result', xr.tostr(r)


def test_server_generated_resource(server, users, conns):
    c1 = xr.login(server, 'alice', users['alice'], None)
    conns.append(c1)
    m = re.fullmatch(r'alice@localhost/(.+)', c1.jid or '')
    assert m and m.group(1), c1.jid
    # an explicitly empty <resource/> also means "generate one"
    c2 = xr.connect_tls(server)
    conns.append(c2)
    assert c2.auth_scram('alice', users['alice']) == (True, None)
    c2.open_stream()
    c2.send("<iq type='set' id='b2'><bind xmlns='%s'><resource/></bind></iq>" % xr.NS_BIND)
    r = c2.wait_for(lambda e: e.get('id') == 'b2')
    assert r.get('type') == 'result', xr.tostr(r)
    jid2 = r.find('%s/%s' % (q(xr.NS_BIND, 'bind'), q(xr.NS_BIND, 'jid'))).text
    assert re.fullmatch(r'alice@localhost/.+', jid2), jid2
    assert jid2 != c1.jid, 'generated resources must be unique'


@pytest.mark.parametrize('resource', ['bad\u0081res', 'x' * 1024], ids=['control-char', 'too-long'])
def test_bind_bad_resource(server, users, conns, resource):
    c = xr.connect_tls(server)
    conns.append(c)
    assert c.auth_scram('alice', users['alice']) == (True, None)
    c.open_stream()
    r = c.bind(resource)
    assert r.get('type') == 'error', xr.tostr(r)
    assert xr.stanza_error(r)[1] == 'bad-request', xr.tostr(r)
    # the stream stays usable: bind a good resource
    assert c.bind('good').get('type') == 'result'
    c.roundtrip()


def test_bind_resource_is_prepared(server, users, conns):
    """Resourcepart: case preserved, NFC applied (OpaqueString / resourceprep)."""
    c2 = xr.connect_tls(server)
    conns.append(c2)
    assert c2.auth_scram('alice', users['alice']) == (True, None)
    c2.open_stream()
    r = c2.bind('Caf\u0065\u0301Res')   # e + combining acute → é (NFC)
    assert r.get('type') == 'result', xr.tostr(r)
    assert c2.jid == 'alice@localhost/Caf\u00e9Res', c2.jid


BAD_TOS = ['@localhost', 'bob@localhost/', 'bob@', 'a"b@localhost', 'bob@localhost/bad\u0081res',
           'x' * 1024 + '@localhost']


@pytest.mark.parametrize('to', BAD_TOS, ids=['empty-local', 'empty-resource', 'empty-domain',
                                             'quote-in-local', 'control-in-resource', 'long-local'])
def test_malformed_to_is_jid_malformed(server, users, conns, to):
    a = online(server, users, conns, 'alice', 'a')
    r = a.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=to)
    assert r.get('type') == 'error', xr.tostr(r)
    assert xr.stanza_error(r)[1] == 'jid-malformed', xr.tostr(r)
    a.message(to, 'bad-to', id_='m-bad')
    err = a.wait_for(lambda e: e.tag == q(NS_CLIENT, 'message') and e.get('id') == 'm-bad')
    assert err.get('type') == 'error', xr.tostr(err)
    assert xr.stanza_error(err)[1] == 'jid-malformed', xr.tostr(err)
    a.roundtrip()


def test_localpart_is_case_folded(server, users, conns):
    b = online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a')
    a.message('BOB@LocalHost/home', 'folded')
    assert b.wait_message('folded').get('from') == a.jid


# ----------------------------------------------------------------------------- workers

BOUND_RE = re.compile(r'session bound jid=(\S+) worker=(\d+)')


def bound_workers(server):
    return {m.group(1): int(m.group(2)) for m in BOUND_RE.finditer(server.log())}


def test_cross_worker_delivery(server_factory, conns):
    srv = server_factory(workers=2)
    by_worker = {}
    clients = []
    for i in range(24):
        user = 'w%d' % i
        srv.add_user(user, 'pw-%d' % i)
        c = xr.login(srv, user, 'pw-%d' % i, 'r', priority=0, direct_tls=bool(i % 2))
        conns.append(c)
        clients.append(c)
        srv.wait_log('session bound jid=%s ' % c.jid, timeout=5)
        w = bound_workers(srv)[c.jid]
        assert w in (0, 1), 'worker index %d with workers=2' % w
        by_worker.setdefault(w, []).append(c)
        if i >= 7 and len(by_worker) >= 2:
            break
    assert len(by_worker) >= 2, 'all %d sessions landed on worker(s) %s' % (len(clients), list(by_worker))
    a, b = by_worker[0][0], by_worker[1][0]
    xr.message_roundtrip(a, b)
    # bare JID (b has priority 0) and an iq round trip across workers
    a.message(b.jid.split('/')[0], 'bare-cross')
    assert b.wait_message('bare-cross').get('from') == a.jid
    a.send("<iq type='get' id='xw' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % b.jid)
    got = b.wait_for(lambda e: e.tag == q(NS_CLIENT, 'iq') and e.get('id') == 'xw')
    assert got.get('from') == a.jid
    b.send("<iq type='result' id='xw' to='%s'/>" % a.jid)
    r = a.wait_for(lambda e: e.tag == q(NS_CLIENT, 'iq') and e.get('id') == 'xw')
    assert r.get('type') == 'result' and r.get('from') == b.jid
    # a burst both ways keeps order across the inbox queues
    a.send(''.join("<message to='%s' type='chat'><body>x-%d</body></message>" % (b.jid, i) for i in range(30)))
    b.send(''.join("<message to='%s' type='chat'><body>y-%d</body></message>" % (a.jid, i) for i in range(30)))
    def next_body(c, prefix):
        m = c.wait_for(lambda e: e.tag == q(NS_CLIENT, 'message') and (
            e.findtext(q(NS_CLIENT, 'body')) or '').startswith(prefix))
        return m.get('from'), m.findtext(q(NS_CLIENT, 'body'))
    for i in range(30):
        assert next_body(b, 'x-') == (a.jid, 'x-%d' % i)
        assert next_body(a, 'y-') == (b.jid, 'y-%d' % i)


# ----------------------------------------------------------------------------- message types, odd XML

def test_message_without_to_goes_to_own_bare_jid(server, users, conns):
    r1 = online(server, users, conns, 'alice', 'r1', priority=1)
    r2 = online(server, users, conns, 'alice', 'r2', priority=0)
    r2.send("<message type='chat'><body>note-to-self</body></message>")
    m = r1.wait_message('note-to-self')
    assert m.get('from') == r2.jid


def test_groupchat_to_bare_jid_not_delivered(server, users, conns):
    b = online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a')
    a.message('bob@localhost', 'gc-msg', type_='groupchat', id_='gc1')
    err = a.wait_for(lambda e: e.tag == q(NS_CLIENT, 'message') and e.get('id') == 'gc1')
    assert err.get('type') == 'error' and xr.stanza_error(err)[1] == 'service-unavailable', xr.tostr(err)
    xr.assert_no_message(b, 1.0, body='gc-msg')


def test_headline_to_bare_jid_goes_to_all_non_negative(server, users, conns):
    b1 = online(server, users, conns, 'bob', 'h1', priority=1)
    b2 = online(server, users, conns, 'bob', 'h2', priority=0)
    bn = online(server, users, conns, 'bob', 'hn', priority=-5)
    a = online(server, users, conns, 'alice', 'a')
    a.message('bob@localhost', 'news', type_='headline')
    assert b1.wait_message('news').get('from') == a.jid
    assert b2.wait_message('news').get('from') == a.jid
    xr.assert_no_message(bn, 1.0, body='news')


def test_error_message_never_bounced(server, users, conns):
    a = online(server, users, conns, 'alice', 'a')
    a.send("<message type='error' id='e1' to='nobody@localhost/x'><error type='cancel'>"
           "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    a.send("<message type='error' id='e2' to='bob@localhost/not-online'><error type='cancel'>"
           "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    assert a.maybe(lambda e: e.get('id') in ('e1', 'e2'), 1.0) is None
    a.roundtrip()


def test_entities_and_char_refs_survive_routing(server, users, conns):
    b = online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a')
    a.send("<message to='%s' type='chat'><body>a&amp;b&lt;c&gt;&quot;&apos;&#x41;&#66;\u00e9\U0001F600</body>"
           "<x xmlns='urn:example:ext' attr='1&amp;2'><y>t</y></x></message>" % b.jid)
    m = b.wait_for(lambda e: e.tag == q(NS_CLIENT, 'message'))
    assert m.findtext(q(NS_CLIENT, 'body')) == 'a&b<c>"\'AB\u00e9\U0001F600', xr.tostr(m)
    x = m.find(q('urn:example:ext', 'x'))
    assert x is not None and x.get('attr') == '1&2' and x.findtext(q('urn:example:ext', 'y')) == 't', xr.tostr(m)


def test_prefixed_stanza_namespace(server, users, conns):
    """Namespaces are matched by URI, not by prefix text."""
    b = online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a')
    a.send("<cl:message xmlns:cl='jabber:client' to='%s' type='chat'><cl:body>prefixed</cl:body>"
           "</cl:message>" % b.jid)
    assert b.wait_message('prefixed').get('from') == a.jid


def test_xml_lang_kept(server, users, conns):
    b = online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a')
    a.send("<message to='%s' type='chat' xml:lang='de'><body>hallo</body></message>" % b.jid)
    m = b.wait_message('hallo')
    assert m.get('{http://www.w3.org/XML/1998/namespace}lang') == 'de', xr.tostr(m)


def test_directed_presence_to_full_jid(server, users, conns):
    b = online(server, users, conns, 'bob', 'home')
    a = online(server, users, conns, 'alice', 'a')
    a.send("<presence to='%s'><status>directed</status></presence>" % b.jid)
    p = b.wait_presence(from_=a.jid)
    assert p.findtext(q(NS_CLIENT, 'status')) == 'directed'


def test_many_concurrent_sessions(server, users, conns):
    """50 sessions of one account; each gets its own full-JID message."""
    sessions = [xr.login(server, 'carol', users['carol'], 'm%d' % i, presence=False,
                         direct_tls=bool(i % 2)) for i in range(50)]
    conns.extend(sessions)
    a = online(server, users, conns, 'alice', 'a')
    for s in sessions:
        a.message(s.jid, 'hi-' + s.jid)
    for s in sessions:
        assert s.wait_message('hi-' + s.jid).get('from') == a.jid


# ----------------------------------------------------------------------------- store operations pending

def test_bare_jid_burst_keeps_order(server, users, conns):
    """A message to a bare JID waits for the account lookup (an asynchronous
    store operation: the stream parks its input meanwhile). A burst mixing
    bare and full JIDs, iqs and a close arrives in order. Run with
    TETHER_STORE_DELAY=3 to delay every completion."""
    b = online(server, users, conns, 'bob', 'b')
    a = online(server, users, conns, 'alice', 'a')
    burst = []
    for i in range(40):
        to = 'bob@localhost' if i % 3 else b.jid
        burst.append("<message to='%s' type='chat' id='o%d'><body>ord-%d</body></message>" % (to, i, i))
        if i % 10 == 9:
            burst.append("<iq type='get' id='v%d' to='bob@localhost'><query xmlns='jabber:iq:version'/></iq>" % i)
    a.send(''.join(burst) + "<iq type='get' id='last'><ping xmlns='urn:xmpp:ping'/></iq>")
    a.wait_for(lambda e: e.get('id') == 'last', 10, what='ping reply after the burst')
    def body(e):
        bd = e.find(q(NS_CLIENT, 'body'))
        return bd.text if bd is not None else None
    got = []
    for _ in range(40):
        m = b.wait_for(lambda e: e.tag == q(NS_CLIENT, 'message') and (body(e) or '').startswith('ord-'),
                       10, what='ord-* message')
        got.append(body(m))
    assert got == ['ord-%d' % i for i in range(40)], got


def test_connection_dropped_while_lookups_pending(server, users, conns):
    """Connections that go away with account lookups pending and stanzas
    parked behind them: nothing a late completion uses is freed (ASan), and
    the server goes on serving."""
    b = online(server, users, conns, 'bob', 'b')
    for round_ in range(5):
        a = xr.login(server, 'alice', users['alice'], 'drop%d' % round_, presence=False)
        a.send(''.join("<message to='bob@localhost' type='chat'><body>drop-%d-%d</body></message>"
                       % (round_, i) for i in range(30)))
        if round_ % 2:
            a.send('</stream:stream>')
        a.abort()
    b.roundtrip()
    c = online(server, users, conns, 'alice', 'after')
    c.message('bob@localhost', 'still-here')
    b.wait_message('still-here')
