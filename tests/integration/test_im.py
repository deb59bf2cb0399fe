"""IM essentials (RFC 6121, XEP-0160, XEP-0237) against a real tetherd with raw
clients: roster get/set/remove and pushes, versioning, subscriptions with an
offline contact, presence broadcast and probes, offline messages."""

import pytest

import xmpp_raw as xr
from xmpp_raw import NS_CLIENT, NS_ROSTER, NS_STANZAS, q

NS_DELAY = 'urn:xmpp:delay'

NS_ROSTERVER = 'urn:xmpp:features:rosterver'


def online(server, users, conns, user, resource, priority=0, presence=True):
    c = xr.login(server, user, users[user], resource, priority=priority, presence=presence)
    conns.append(c)
    c.roundtrip()
    return c


def roster_get(c, ver=None):
    attr = '' if ver is None else " ver='%s'" % ver
    r = c.iq('get', "<query xmlns='%s'%s/>" % (NS_ROSTER, attr))
    assert r.get('type') == 'result', xr.tostr(r)
    return r.find(q(NS_ROSTER, 'query'))


def items(query):
    return {i.get('jid'): i for i in query.findall(q(NS_ROSTER, 'item'))}


def roster_set(c, item_xml):
    return c.iq('set', "<query xmlns='%s'>%s</query>" % (NS_ROSTER, item_xml))


def is_push(e):
    return (e.tag == q(NS_CLIENT, 'iq') and e.get('type') == 'set'
            and e.find(q(NS_ROSTER, 'query')) is not None)


def wait_push(c, jid, subscription=None, timeout=None):
    """The next roster push about <jid> (with that subscription, if given:
    earlier ones are skipped); answers it like a client."""
    def pred(e):
        if not is_push(e):
            return False
        it = e.find('%s/%s' % (q(NS_ROSTER, 'query'), q(NS_ROSTER, 'item')))
        return it is not None and it.get('jid') == jid and (
            subscription is None or it.get('subscription') == subscription)
    e = c.wait_for(pred, timeout, what='roster push for %s' % jid)
    assert e.get('from') in (None, c.jid.split('/')[0]), xr.tostr(e)
    c.send("<iq type='result' id='%s'/>" % e.get('id'))
    return e.find('%s/%s' % (q(NS_ROSTER, 'query'), q(NS_ROSTER, 'item')))


def error_condition(el):
    err = el.find(q(NS_CLIENT, 'error'))
    assert err is not None, xr.tostr(el)
    return [xr.local(c.tag) for c in err if xr.nsof(c.tag) == NS_STANZAS][0]


def no_probe(c, wait=0.5):
    e = c.maybe(lambda e: e.tag == q(NS_CLIENT, 'presence') and e.get('type') == 'probe', wait)
    assert e is None, 'a probe reached a client: %s' % xr.tostr(e)


def subscribe_both(a, b, users_a='alice', users_b='bob'):
    """Mutual subscription between two online clients; waits for the pushes."""
    ja, jb = '%s@localhost' % users_a, '%s@localhost' % users_b
    a.presence(type_='subscribe', to=jb)
    b.wait_presence(from_=ja, type_='subscribe')
    b.presence(type_='subscribed', to=ja)
    wait_push(a, jb, 'to')
    b.presence(type_='subscribe', to=ja)
    a.wait_presence(from_=jb, type_='subscribe')
    a.presence(type_='subscribed', to=jb)
    wait_push(b, ja, 'both')


# ----------------------------------------------------------------------------- roster (§2)

def test_roster_set_pushed_to_two_resources(server, users, conns):
    r1 = online(server, users, conns, 'alice', 'r1')
    r2 = online(server, users, conns, 'alice', 'r2')
    quiet = online(server, users, conns, 'alice', 'quiet')   # never asks for the roster
    assert len(items(roster_get(r1))) == 0
    roster_get(r2)
    reply = roster_set(r1, "<item jid='Carol@LOCALHOST' name='Carol C'>"
                           "<group>Friends</group><group>Work</group></item>")
    assert reply.get('type') == 'result', xr.tostr(reply)
    for c in (r1, r2):
        it = wait_push(c, 'carol@localhost')
        assert it.get('name') == 'Carol C'
        assert it.get('subscription') == 'none'
        assert sorted(g.text for g in it.findall(q(NS_ROSTER, 'group'))) == ['Friends', 'Work']
    assert quiet.maybe(is_push, 1.0) is None, 'push to a resource that never asked'
    got = items(roster_get(r2))
    assert list(got) == ['carol@localhost']
    # remove
    reply = roster_set(r2, "<item jid='carol@localhost' subscription='remove'/>")
    assert reply.get('type') == 'result', xr.tostr(reply)
    for c in (r1, r2):
        wait_push(c, 'carol@localhost', 'remove')
    assert items(roster_get(r1)) == {}


def test_roster_errors(server, users, conns):
    a = online(server, users, conns, 'alice', 'r')
    cases = [
        ("<item jid='bob@localhost'/><item jid='carol@localhost'/>", 'bad-request'),
        ("<item jid='bob@localhost'><group>x</group><group>x</group></item>", 'bad-request'),
        ("<item jid='bob@localhost'><group></group></item>", 'not-acceptable'),
        ("<item jid='bob@localhost' name='%s'/>" % ('n' * 2000), 'not-acceptable'),
        ("<item jid='@@bad'/>", 'bad-request'),
        ("<item jid='nobody@localhost' subscription='remove'/>", 'item-not-found'),
    ]
    for xml, cond in cases:
        r = roster_set(a, xml)
        assert r.get('type') == 'error' and error_condition(r) == cond, (xml, xr.tostr(r))
    # someone else's roster: not served
    r = a.iq('get', "<query xmlns='%s'/>" % NS_ROSTER, to='bob@localhost')
    assert r.get('type') == 'error', xr.tostr(r)


def test_roster_cap(server_factory, conns):
    server = server_factory(**{'im.max_roster_items': 2})
    users = dict(xr_users())
    for u, pw in users.items():
        server.add_user(u, pw)
    server.settle_users()
    a = online(server, users, conns, 'alice', 'r')
    for j in ('x@localhost', 'y@localhost'):
        assert roster_set(a, "<item jid='%s'/>" % j).get('type') == 'result'
    r = roster_set(a, "<item jid='z@localhost'/>")
    assert r.get('type') == 'error' and error_condition(r) == 'not-allowed', xr.tostr(r)
    assert roster_set(a, "<item jid='x@localhost' name='ok'/>").get('type') == 'result'


def xr_users():
    from conftest import USERS
    return USERS


def test_roster_versioning(server, users, conns):
    c = xr.connect_tls(server)
    conns.append(c)
    ok, cond = c.authenticate('alice', users['alice'])
    assert ok, cond
    feats = c.open_stream()
    assert feats.find(q(NS_ROSTERVER, 'ver')) is not None, xr.tostr(feats)
    assert c.bind('v').get('type') == 'result'
    qry = roster_get(c, ver='')
    ver0 = qry.get('ver')
    assert ver0 is not None
    assert roster_set(c, "<item jid='bob@localhost'/>").get('type') == 'result'
    wait_push(c, 'bob@localhost')
    qry = roster_get(c, ver=ver0)                 # stale: the full roster
    assert qry is not None and list(items(qry)) == ['bob@localhost']
    ver1 = qry.get('ver')
    assert ver1 and ver1 != ver0
    r = c.iq('get', "<query xmlns='%s' ver='%s'/>" % (NS_ROSTER, ver1))
    assert r.get('type') == 'result' and r.find(q(NS_ROSTER, 'query')) is None, xr.tostr(r)


def test_roster_and_offline_survive_restart(server_factory, conns, tmp_path):
    store = str(tmp_path / 'im-store')
    users = dict(xr_users())
    server = server_factory(path=store)
    for u, pw in users.items():
        server.add_user(u, pw)
    server.settle_users()
    a = online(server, users, conns, 'alice', 'r')
    assert roster_set(a, "<item jid='bob@localhost' name='B'/>").get('type') == 'result'
    a.message('bob@localhost', 'kept')
    a.roundtrip()
    a.close()
    conns.remove(a)
    server.finish()
    server = server_factory(path=store)
    a = online(server, users, conns, 'alice', 'r')
    assert items(roster_get(a))['bob@localhost'].get('name') == 'B'
    b = online(server, users, conns, 'bob', 'b')
    b.wait_message('kept')


# ----------------------------------------------------------------------------- subscriptions (§3)

def test_subscription_with_offline_contact(server, users, conns):
    a = online(server, users, conns, 'alice', 'a')
    roster_get(a)
    a.presence(type_='subscribe', to='bob@localhost/ignored')
    it = wait_push(a, 'bob@localhost')
    assert it.get('ask') == 'subscribe' and it.get('subscription') == 'none'
    # bob logs in later: the request is delivered at his initial presence,
    # from alice's bare JID
    b = online(server, users, conns, 'bob', 'b', presence=False)
    roster_get(b)
    assert items(roster_get(b)) == {}         # a pending request is not an item
    b.presence()
    p = b.wait_presence(from_='alice@localhost', type_='subscribe')
    assert p.get('to') in (None, 'bob@localhost', b.jid)
    b.presence(type_='subscribed', to='alice@localhost')
    wait_push(b, 'alice@localhost', 'from')
    it = wait_push(a, 'bob@localhost')
    assert it.get('subscription') == 'to' and it.get('ask') is None
    a.wait_presence(from_='bob@localhost', type_='subscribed')
    a.wait_presence(from_=b.jid)              # bob's presence follows the approval
    # and back
    b.presence(type_='subscribe', to='alice@localhost')
    a.wait_presence(from_='bob@localhost', type_='subscribe')
    a.presence(type_='subscribed', to='bob@localhost')
    wait_push(a, 'bob@localhost', 'both')
    wait_push(b, 'alice@localhost', 'both')
    assert items(roster_get(a))['bob@localhost'].get('subscription') == 'both'
    assert items(roster_get(b))['alice@localhost'].get('subscription') == 'both'
    no_probe(a)
    no_probe(b)


def test_subscription_request_to_unknown_account(server, users, conns):
    a = online(server, users, conns, 'alice', 'a')
    roster_get(a)
    a.presence(type_='subscribe', to='nobody@localhost')
    a.wait_presence(from_='nobody@localhost', type_='unsubscribed')


def test_no_pre_approval(server, users, conns):
    """RFC 6121 §3.4 is optional and not offered: no pre-approval stream
    feature, and a <subscribed/> to a contact that asked nothing changes
    no state (Appendix A: no pending-in, so ignored): no push, nothing
    delivered, and the contact's later request still waits for an answer."""
    a = online(server, users, conns, 'alice', 'a')
    b = online(server, users, conns, 'bob', 'b')
    assert a.features.find(q('urn:xmpp:features:pre-approval', 'sub')) is None, \
        xr.tostr(a.features)
    roster_get(a)
    roster_get(b)
    a.presence(type_='subscribed', to='bob@localhost')
    a.roundtrip()
    assert a.maybe(is_push, 0.5) is None, 'a roster push for an ignored <subscribed/>'
    assert b.maybe(lambda e: e.tag == q(NS_CLIENT, 'presence') and e.get('type') == 'subscribed',
                   0.5) is None, 'an ignored <subscribed/> was delivered'
    assert 'bob@localhost' not in items(roster_get(a))
    b.presence(type_='subscribe', to='alice@localhost')
    a.wait_presence(from_='bob@localhost', type_='subscribe')        # asked, not pre-approved
    assert b.maybe(lambda e: e.tag == q(NS_CLIENT, 'presence') and e.get('type') == 'subscribed',
                   0.5) is None, 'answered as if pre-approved'
    assert items(roster_get(b))['alice@localhost'].get('subscription') == 'none'


def test_unsubscribe_both_ways(server, users, conns):
    a = online(server, users, conns, 'alice', 'a')
    b = online(server, users, conns, 'bob', 'b')
    roster_get(a)
    roster_get(b)
    subscribe_both(a, b)
    a.pump(0.5)
    b.pump(0.5)
    a.inbox.clear()
    b.inbox.clear()
    a.presence(type_='unsubscribe', to='bob@localhost')
    wait_push(a, 'bob@localhost', 'from')
    wait_push(b, 'alice@localhost', 'to')
    b.wait_presence(from_='alice@localhost', type_='unsubscribe')
    a.wait_presence(from_=b.jid, type_='unavailable')   # bob's presence stops for alice
    # alice cancels bob's subscription to her: nothing left either way
    a.presence(type_='unsubscribed', to='bob@localhost')
    wait_push(a, 'bob@localhost', 'none')
    wait_push(b, 'alice@localhost', 'none')
    b.wait_presence(from_='alice@localhost', type_='unsubscribed')
    b.wait_presence(from_=a.jid, type_='unavailable')   # alice's presence stops for bob


# ----------------------------------------------------------------------------- presence (§4)

def test_presence_broadcast_and_probes(server, users, conns):
    a = online(server, users, conns, 'alice', 'a')
    b = online(server, users, conns, 'bob', 'b')
    roster_get(a)
    roster_get(b)
    subscribe_both(a, b)
    b.close()
    conns.remove(b)
    a.wait_presence(from_='bob@localhost/b', type_='unavailable')
    # bob comes back: alice sees him, and he sees alice (probe answered by
    # the server from alice's session, never shown to a client)
    b = online(server, users, conns, 'bob', 'b2', presence=False)
    b.presence(priority=3, extra='<status>back</status>')
    p = a.wait_presence(from_='bob@localhost/b2')
    assert p.find(q(NS_CLIENT, 'status')).text == 'back'
    b.wait_presence(from_='alice@localhost/a')
    no_probe(a)
    no_probe(b)
    # an update goes to subscribers too
    a.presence(extra='<show>away</show>')
    p = b.wait_presence(from_='alice@localhost/a')
    # carol has no subscription: sees nothing of either
    c = online(server, users, conns, 'carol', 'c')
    a.presence(extra='<show>dnd</show>')
    b.wait_presence(from_='alice@localhost/a')
    assert c.maybe(lambda e: e.tag == q(NS_CLIENT, 'presence')
                   and (e.get('from') or '').startswith('alice@'), 1.0) is None
    # unavailable on disconnect
    a.close()
    conns.remove(a)
    b.wait_presence(from_='alice@localhost/a', type_='unavailable')


@pytest.mark.parametrize('sm', [False, True], ids=['plain', 'sm'])
@pytest.mark.parametrize('available', [True, False], ids=['available', 'unavailable'])
def test_directed_presence_undone_at_end(server, users, conns, available, sm):
    """RFC 6121 §4.6.3-4: the recipients of directed presence get
    unavailable presence when the session ends, also when the session never
    sent initial presence (§4.6.1: a client may, while unavailable); a
    contact it never sent presence to gets nothing."""
    if sm:
        from sm_client import sm_login
        a = sm_login(server, 'alice', users['alice'], 'a', presence=available, auto_ack=True)
        conns.append(a)
    else:
        a = online(server, users, conns, 'alice', 'a', presence=available)
    c = online(server, users, conns, 'carol', 'c')
    d = online(server, users, conns, 'bob', 'b')
    a.presence(to='carol@localhost')
    c.wait_presence(from_='alice@localhost/a')
    a.close()
    conns.remove(a)
    c.wait_presence(from_='alice@localhost/a', type_='unavailable')
    assert d.maybe(lambda e: e.tag == q(NS_CLIENT, 'presence')
                   and (e.get('from') or '').startswith('alice@'), 0.5) is None


def test_client_probe_dropped(server, users, conns):
    a = online(server, users, conns, 'alice', 'a')
    b = online(server, users, conns, 'bob', 'b')
    a.presence(type_='probe', to='bob@localhost')
    no_probe(b, 1.0)
    a.roundtrip()


# ----------------------------------------------------------------------------- offline (XEP-0160)

@pytest.mark.parametrize('sm', [False, True], ids=['plain', 'sm'])
def test_offline_messages_delivered_in_order_with_delay(server, users, conns, sm):
    """With XEP-0198 the store moves them into the session's queue (one
    step); without, they are taken and written. Either way: in order, with
    a delay stamp, once; one from a JID blocked since it was stored is
    dropped (XEP-0191)."""
    a = online(server, users, conns, 'alice', 'a')
    c = online(server, users, conns, 'carol', 'c')
    a.message('bob@localhost', 'offline-0')
    c.message('bob@localhost', 'from-carol')       # stored, then carol is blocked
    for i in range(1, 3):
        a.message('bob@localhost', 'offline-%d' % i)
    a.message('bob@localhost/gone', 'offline-3')   # a full JID that is not bound
    a.roundtrip()
    c.roundtrip()
    assert a.maybe(lambda e: e.get('type') == 'error', 1.0) is None
    # a bound resource without presence does not get them
    if sm:
        from sm_client import sm_login
        b = sm_login(server, 'bob', users['bob'], 'b', auto_ack=True)
        conns.append(b)
    else:
        b = online(server, users, conns, 'bob', 'b', presence=False)
    xr.assert_no_message(b, 1.0)
    r = b.iq('set', "<block xmlns='urn:xmpp:blocking'><item jid='carol@localhost'/></block>")
    assert r.get('type') == 'result', xr.tostr(r)
    b.presence(priority=1)
    for i in range(4):
        m = b.wait_message()
        assert m.find(q(NS_CLIENT, 'body')).text == 'offline-%d' % i
        assert m.get('from') == a.jid
        d = m.find(q(NS_DELAY, 'delay'))
        assert d is not None and d.get('stamp'), xr.tostr(m)
    xr.assert_no_message(b, 0.5, body='from-carol')
    if sm:
        server.wait_log('offline: 4 messages of bob@localhost moved into session %s' % b.sm_id)
        b.ack()                                   # else stored again when the session ends
        b.roundtrip()
    # delivered once: gone from storage
    b.close()
    conns.remove(b)
    b = online(server, users, conns, 'bob', 'b')
    xr.assert_no_message(b, 1.0)


def test_message_then_hang_up_is_not_lost(server, users, conns):
    """The sendxmpp pattern: log in, send, </stream:stream>, close the
    socket at once. A message to a bare JID waits for the account lookup (a
    store operation); the socket is gone before it completes. RFC 6120 §4.4:
    what was received before the close is processed, so every one of these
    reaches the offline store."""
    n = 12
    for i in range(n):
        a = xr.login(server, 'alice', users['alice'], 'hang%d' % i, presence=False)
        a.send("<message to='bob@localhost' type='chat' id='h%d'><body>hang-%d</body></message>"
               "<message to='bob@localhost' type='chat' id='k%d'><body>hang-%d-b</body></message>"
               % (i, i, i, i))
        a.close()                                 # </stream:stream>, then the socket
    b = online(server, users, conns, 'bob', 'b')
    got = set(xr.message_bodies(b, 2 * n))
    want = {'hang-%d' % i for i in range(n)} | {'hang-%d-b' % i for i in range(n)}
    assert got == want, sorted(want - got)


def test_offline_negative_priority_waits(server, users, conns):
    a = online(server, users, conns, 'alice', 'a')
    a.message('bob@localhost', 'later')
    a.roundtrip()
    b = online(server, users, conns, 'bob', 'b', priority=-1)
    xr.assert_no_message(b, 1.0)
    b.presence(priority=0)
    b.wait_message('later')


def test_offline_cap_resource_constraint(server_factory, conns):
    server = server_factory(**{'im.max_offline': 2})
    users = dict(xr_users())
    for u, pw in users.items():
        server.add_user(u, pw)
    server.settle_users()
    a = online(server, users, conns, 'alice', 'a')
    for i in range(3):
        a.message('bob@localhost', 'cap-%d' % i, id_='cap%d' % i)
    e = a.wait_message(type_='error')
    assert e.get('id') == 'cap2' and error_condition(e) == 'resource-constraint', xr.tostr(e)
    b = online(server, users, conns, 'bob', 'b')
    b.wait_message('cap-0')
    b.wait_message('cap-1')


def test_headline_and_unknown_account_not_stored(server, users, conns):
    a = online(server, users, conns, 'alice', 'a')
    a.message('nobody@localhost', 'x', id_='n1')
    e = a.wait_message(type_='error')
    assert error_condition(e) == 'service-unavailable'
    a.message('bob@localhost', 'h', type_='headline')
    a.roundtrip()
    b = online(server, users, conns, 'bob', 'b')
    xr.assert_no_message(b, 1.0)


# ----------------------------------------------------------------------------- what Gajim does

def test_gajim_like_login(server, users, conns):
    a = online(server, users, conns, 'alice', 'g', presence=False)
    qry = roster_get(a, ver='')
    assert qry is not None and qry.get('ver') is not None
    a.presence(priority=50)
    for to in ('localhost', 'alice@localhost'):
        r = a.iq('get', "<query xmlns='%s'/>" % xr.NS_DISCO_INFO, to=to)
        assert r.get('type') == 'result', xr.tostr(r)
    feats = [f.get('var') for f in r.find(q(xr.NS_DISCO_INFO, 'query'))
             if xr.local(f.tag) == 'feature']
    assert xr.NS_DISCO_INFO in feats
    a.roundtrip()


# ----------------------------------------------------------------------------- real clients

def test_slixmpp_subscription_and_presence(server, users):
    """Two slixmpp clients with their default roster handling (auto-authorize,
    auto-subscribe): a request ends in 'both' on both sides, each sees the
    other online, and an offline message arrives with its delay stamp."""
    import asyncio

    async def until(pred, what, timeout=10.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            assert loop.time() < deadline, 'timeout waiting for ' + what
            await asyncio.sleep(0.05)

    async def run():
        a = await xr.slix_login(server, 'alice', users['alice'], 'sa')
        b = await xr.slix_login(server, 'bob', users['bob'], 'sb')
        try:
            for c in (a, b):
                await c.get_roster(timeout=10)
                c.send_presence()
            a.send_presence_subscription(pto='bob@localhost')
            await until(lambda: a.client_roster['bob@localhost']['subscription'] == 'both'
                        and b.client_roster['alice@localhost']['subscription'] == 'both',
                        'both subscriptions')
            await until(lambda: 'sb' in a.client_roster['bob@localhost'].resources,
                        "bob's presence at alice")
            await until(lambda: 'sa' in b.client_roster['alice@localhost'].resources,
                        "alice's presence at bob")
            await xr.slix_close(b)
            await until(lambda: 'sb' not in a.client_roster['bob@localhost'].resources,
                        "bob's unavailable presence at alice")
            a.send_message(mto='bob@localhost', mbody='while you were away', mtype='chat')
            await asyncio.sleep(0.5)
            b = await xr.slix_login(server, 'bob', users['bob'], 'sb2')
            await b.get_roster(timeout=10)
            b.send_presence()
            msg = await asyncio.wait_for(b.inbox.get(), 10)
            assert msg['body'] == 'while you were away'
            d = msg.xml.find('{%s}delay' % NS_DELAY)
            assert d is not None and d.get('stamp'), str(msg)
        finally:
            await xr.slix_close(a)
            await xr.slix_close(b)

    asyncio.run(run())


def test_sm_expiry_broadcasts_unavailable_to_contacts(server_factory, conns):
    """A session that detaches (XEP-0198) stays available for its contacts
    until it expires; then they get its unavailable presence."""
    from sm_client import kill, sm_login, sm_overrides
    users = dict(xr_users())
    server = server_factory(**sm_overrides(max_resume=2))
    for u, pw in users.items():
        server.add_user(u, pw)
    server.settle_users()
    b = online(server, users, conns, 'bob', 'b')
    roster_get(b)
    a = sm_login(server, 'alice', users['alice'], 'sm', presence=True, auto_ack=True)
    conns.append(a)
    roster_get(a)
    subscribe_both(a, b)
    b.wait_presence(from_=a.jid)
    kill(a)
    server.wait_log('session detached jid=%s' % a.jid, 10)
    assert b.maybe(lambda e: e.tag == q(NS_CLIENT, 'presence') and e.get('type') == 'unavailable',
                   0.5) is None
    server.wait_log('session expired jid=%s' % a.jid, 10)
    b.wait_presence(from_=a.jid, type_='unavailable', timeout=5)


# ----------------------------------------------------------------------------- carbons (XEP-0280)

NS_CARBONS = 'urn:xmpp:carbons:2'
NS_FORWARD = 'urn:xmpp:forward:0'


def carbons(c, on=True):
    r = c.iq('set', "<%s xmlns='%s'/>" % ('enable' if on else 'disable', NS_CARBONS))
    assert r.get('type') == 'result', xr.tostr(r)


def wait_carbon(c, kind, body):
    def pred(e):
        w = e.find(q(NS_CARBONS, kind))
        if e.tag != q(NS_CLIENT, 'message') or w is None:
            return False
        inner = w.find('%s/%s' % (q(NS_FORWARD, 'forwarded'), q(NS_CLIENT, 'message')))
        b = inner.find(q(NS_CLIENT, 'body')) if inner is not None else None
        return b is not None and b.text == body
    e = c.wait_for(pred, what='%s carbon %r' % (kind, body))
    assert e.get('from') == c.jid.split('/')[0], xr.tostr(e)
    return e.find(q(NS_CARBONS, kind)).find(q(NS_FORWARD, 'forwarded')).find(q(NS_CLIENT, 'message'))


def no_carbon(c, wait=0.8):
    e = c.maybe(lambda e: e.tag == q(NS_CLIENT, 'message') and (
        e.find(q(NS_CARBONS, 'received')) is not None or e.find(q(NS_CARBONS, 'sent')) is not None),
        wait)
    assert e is None, 'unexpected carbon: %s' % xr.tostr(e)


def test_carbons_both_ways(server, users, conns):
    r1 = online(server, users, conns, 'alice', 'r1')
    r2 = online(server, users, conns, 'alice', 'r2')
    r3 = online(server, users, conns, 'alice', 'r3')     # never enables carbons
    b = online(server, users, conns, 'bob', 'b')
    carbons(r1)
    carbons(r2)
    # received: to r1, copied to r2 only
    b.message('alice@localhost/r1', 'in-1')
    r1.wait_message('in-1')
    inner = wait_carbon(r2, 'received', 'in-1')
    assert inner.get('from') == b.jid and inner.get('to') == 'alice@localhost/r1'
    no_carbon(r1)
    no_carbon(r3)
    # sent: from r2, copied to r1 only
    r2.message('bob@localhost', 'out-1')
    b.wait_message('out-1')
    inner = wait_carbon(r1, 'sent', 'out-1')
    assert inner.get('from') == r2.jid and inner.get('to') == 'bob@localhost'
    no_carbon(r2)
    no_carbon(r3)
    # <private/> and <no-copy/>: not copied; copies of copies: never
    r2.message('bob@localhost', 'secret', extra="<private xmlns='%s'/>" % NS_CARBONS)
    b.message('alice@localhost/r1', 'nocopy', extra="<no-copy xmlns='urn:xmpp:hints'/>")
    b.wait_message('secret')
    r1.wait_message('nocopy')
    no_carbon(r1)
    no_carbon(r2)
    # disable
    carbons(r2, on=False)
    b.message('alice@localhost/r1', 'in-2')
    r1.wait_message('in-2')
    no_carbon(r2)
    r = r1.iq('get', "<query xmlns='%s'/>" % xr.NS_DISCO_INFO, to='localhost')
    feats = [f.get('var') for f in r.find(q(xr.NS_DISCO_INFO, 'query'))]
    assert NS_CARBONS in feats


# ----------------------------------------------------------------------------- CSI (XEP-0352)

NS_CSI = 'urn:xmpp:csi:0'
NS_CHATSTATES = 'http://jabber.org/protocol/chatstates'


def test_csi_holds_presence_drops_chat_states_flushes(server, users, conns):
    c = xr.connect_tls(server)
    conns.append(c)
    ok, cond = c.authenticate('alice', users['alice'])
    assert ok, cond
    feats = c.open_stream()
    assert feats.find(q(NS_CSI, 'csi')) is not None, xr.tostr(feats)
    assert c.bind('csi').get('type') == 'result'
    roster_get(c)
    c.presence()
    b = online(server, users, conns, 'bob', 'b')
    roster_get(b)
    subscribe_both(c, b)
    c.wait_presence(from_=b.jid)
    c.pump(0.5)
    c.inbox.clear()
    c.send("<inactive xmlns='%s'/>" % NS_CSI)
    c.roundtrip()
    for show in ('away', 'xa', 'dnd'):
        b.presence(extra='<show>%s</show>' % show)
    b.send("<message to='%s' type='chat'><composing xmlns='%s'/></message>"
           % (c.jid, NS_CHATSTATES))
    b.roundtrip()
    got = c.maybe(lambda e: e.tag in (q(NS_CLIENT, 'presence'), q(NS_CLIENT, 'message')), 1.0)
    assert got is None, 'delivered to an inactive client: %s' % xr.tostr(got)
    # a message with a body: what was held first (collapsed), then the message
    b.message(c.jid, 'wake up')
    m = c.wait_message('wake up')
    held = [e for e in c.inbox if e.tag == q(NS_CLIENT, 'presence')]
    assert len(held) == 1, [xr.tostr(e) for e in held]
    assert held[0].find(q(NS_CLIENT, 'show')).text == 'dnd'
    assert m is not None
    # chat states were dropped, not held
    assert not [e for e in c.inbox if e.find(q(NS_CHATSTATES, 'composing')) is not None]
    # <active/> flushes what is held
    c.inbox.clear()
    b.presence(extra='<show>chat</show>')
    b.roundtrip()
    assert c.maybe(lambda e: e.tag == q(NS_CLIENT, 'presence'), 0.8) is None
    c.send("<active xmlns='%s'/>" % NS_CSI)
    p = c.wait_presence(from_=b.jid)
    assert p.find(q(NS_CLIENT, 'show')).text == 'chat'


# ----------------------------------------------------------------------------- blocking (XEP-0191)

NS_BLOCKING = 'urn:xmpp:blocking'
NS_BLOCKING_ERRORS = 'urn:xmpp:blocking:errors'


def blocklist(c):
    r = c.iq('get', "<blocklist xmlns='%s'/>" % NS_BLOCKING)
    assert r.get('type') == 'result', xr.tostr(r)
    return sorted(i.get('jid') for i in r.find(q(NS_BLOCKING, 'blocklist')))


def is_block_push(name):
    return lambda e: (e.tag == q(NS_CLIENT, 'iq') and e.get('type') == 'set'
                      and e.find(q(NS_BLOCKING, name)) is not None)


def online_sm(server, users, conns, user, resource):
    """A client with XEP-0198 on (resumable) and initial presence: on Redis
    every stanza to it goes through the store, appended to its queue."""
    from sm_client import sm_login
    c = sm_login(server, user, users[user], resource, presence=True, auto_ack=True)
    conns.append(c)
    return c


@pytest.mark.parametrize('sm', [False, True], ids=['plain', 'sm'])
def test_blocking(server, users, conns, sm):
    login = online_sm if sm else online
    a1 = login(server, users, conns, 'alice', 'a1')
    a2 = login(server, users, conns, 'alice', 'a2')
    b = online(server, users, conns, 'bob', 'b')
    c = online(server, users, conns, 'carol', 'c')
    assert blocklist(a1) == []
    assert blocklist(a2) == []
    r = a1.iq('set', "<block xmlns='%s'/>" % NS_BLOCKING)
    assert r.get('type') == 'error' and error_condition(r) == 'bad-request'
    r = a1.iq('set', "<block xmlns='%s'><item jid='Bob@LocalHost'/></block>" % NS_BLOCKING)
    assert r.get('type') == 'result', xr.tostr(r)
    for x in (a1, a2):
        p = x.wait_for(is_block_push('block'), what='block push')
        assert p.find(q(NS_BLOCKING, 'block')).find(q(NS_BLOCKING, 'item')).get('jid') == \
            'bob@localhost'
        x.send("<iq type='result' id='%s'/>" % p.get('id'))
    # the blocked contact loses the user's presence (XEP-0191 §3.3)
    for x in (a1, a2):
        b.wait_presence(from_=x.jid, type_='unavailable')
    assert blocklist(a2) == ['bob@localhost']
    # from bob: messages and presence dropped, iqs answered service-unavailable
    b.message(a1.jid, 'blocked?')
    b.presence(to=a1.jid)
    r = b.iq('get', "<query xmlns='jabber:iq:version'/>", to=a1.jid)
    assert r.get('type') == 'error' and error_condition(r) == 'service-unavailable'
    c.message(a1.jid, 'from carol')
    a1.wait_message('from carol')
    xr.assert_no_message(a1, 0.5, body='blocked?')
    assert a1.maybe(lambda e: e.tag == q(NS_CLIENT, 'presence') and e.get('from') == b.jid,
                    0.3) is None
    # to bob: not-acceptable with <blocked/>
    a2.message('bob@localhost/b', 'to blocked', id_='tb')
    e = a2.wait_message(type_='error')
    assert e.get('id') == 'tb' and error_condition(e) == 'not-acceptable'
    assert e.find(q(NS_CLIENT, 'error')).find(q(NS_BLOCKING_ERRORS, 'blocked')) is not None
    xr.assert_no_message(b, 0.5, body='to blocked')
    # a domain item blocks everyone there; unblock-all clears
    r = a1.iq('set', "<unblock xmlns='%s'><item jid='bob@localhost'/></unblock>" % NS_BLOCKING)
    assert r.get('type') == 'result'
    a1.wait_for(is_block_push('unblock'), what='unblock push')
    b.message(a1.jid, 'unblocked')
    a1.wait_message('unblocked')
    a1.iq('set', "<block xmlns='%s'><item jid='localhost'/></block>" % NS_BLOCKING)
    a1.wait_for(is_block_push('block'), what='block push')
    c.message(a1.jid, 'domain blocked')
    a2.message(a1.jid, 'own resource')            # the account itself is never blocked
    a1.wait_message('own resource')
    xr.assert_no_message(a1, 0.5, body='domain blocked')
    a1.iq('set', "<unblock xmlns='%s'/>" % NS_BLOCKING)
    a1.wait_for(is_block_push('unblock'), what='unblock-all push')
    assert blocklist(a1) == []
    c.message(a1.jid, 'all clear')
    a1.wait_message('all clear')


def test_blocklist_survives_restart_and_applies_at_login(server_factory, conns, tmp_path):
    store = str(tmp_path / 'bl-store')
    users = dict(xr_users())
    server = server_factory(path=store)
    for u, pw in users.items():
        server.add_user(u, pw)
    server.settle_users()
    a = online(server, users, conns, 'alice', 'a')
    r = a.iq('set', "<block xmlns='%s'><item jid='bob@localhost'/></block>" % NS_BLOCKING)
    assert r.get('type') == 'result'
    a.close()
    conns.remove(a)
    server.finish()
    server = server_factory(path=store)
    a = online(server, users, conns, 'alice', 'a')
    assert blocklist(a) == ['bob@localhost']
    b = online(server, users, conns, 'bob', 'b')
    b.message(a.jid, 'still blocked')
    xr.assert_no_message(a, 1.0, body='still blocked')


def test_roster_pushes_continue_after_sm_resume(server_factory, conns):
    """A client that resumes (XEP-0198) keeps getting roster pushes."""
    from sm_client import is_sm, kill, sm_login, sm_overrides, sm_resume
    users = dict(xr_users())
    server = server_factory(**sm_overrides(max_resume=30))
    for u, pw in users.items():
        server.add_user(u, pw)
    server.settle_users()
    a = sm_login(server, 'alice', users['alice'], 'm', presence=True, auto_ack=True)
    conns.append(a)
    roster_get(a)
    kill(a)
    server.wait_log('session detached jid=%s' % a.jid, 10)
    b, el = sm_resume(server, 'alice', users['alice'], a.sm_id, a.h, auto_ack=True)
    conns.append(b)
    assert is_sm(el, 'resumed'), xr.tostr(el)
    b.jid = a.jid
    other = online(server, users, conns, 'alice', 'other')
    assert roster_set(other, "<item jid='dave@localhost'/>").get('type') == 'result'
    wait_push(b, 'dave@localhost')


def test_bind2_inline_carbons_and_csi(server, users, conns):
    """XEP-0386 Bind2 with XEP-0280 <enable/> and XEP-0352 <inactive/> inline."""
    from sasl2_client import NS_BIND2, new_ua_id, open_conn
    c = open_conn(server)
    conns.append(c)
    c.open_stream(from_='alice@localhost')
    bind = ("<bind xmlns='%s'><tag>inl</tag><enable xmlns='%s'/><inactive xmlns='%s'/></bind>"
            % (NS_BIND2, NS_CARBONS, NS_CSI))
    el = c.sasl2_scram('alice', users['alice'], new_ua_id(), bind)
    assert xr.local(el.tag) == 'success', xr.tostr(el)
    c.jid = 'alice@localhost/inl'
    other = online(server, users, conns, 'alice', 'other')   # its presence: held (inactive)
    p = c.maybe(lambda e: e.tag == q(NS_CLIENT, 'presence'), 0.8)
    assert p is None, xr.tostr(p)
    other.message('bob@localhost', 'copied')
    wait_carbon(c, 'sent', 'copied')                 # carbons on, from the bind
    # a message with a body flushed what was held, before it
    assert [e for e in c.inbox if e.tag == q(NS_CLIENT, 'presence')
            and e.get('from') == 'alice@localhost/other']


def test_csi_bytes_in_a_presence_storm(server, users, conns):
    """XEP-0352 is a bandwidth feature: the bytes an inactive client gets
    during a presence storm (10 contacts x 20 updates), then one message,
    against an active client getting the same. Printed, and at least 5x."""
    senders = []
    for i in range(10):
        name = 'storm%d' % i
        server.add_user(name, 'pw-%d' % i)
    server.settle_users()
    pw = dict(users)
    pw.update({'storm%d' % i: 'pw-%d' % i for i in range(10)})
    active = online(server, pw, conns, 'alice', 'active')
    idle = online(server, pw, conns, 'alice', 'idle')
    idle.send("<inactive xmlns='%s'/>" % NS_CSI)
    idle.roundtrip()
    for i in range(10):
        senders.append(online(server, pw, conns, 'storm%d' % i, 's'))
    start = {c: len(c.raw) for c in (active, idle)}
    for n in range(20):
        for s in senders:
            for to in (active.jid, idle.jid):
                s.presence(to=to, extra='<status>update %d</status>' % n)
    for s in senders:
        s.roundtrip()
    senders[0].message(active.jid, 'done')
    senders[0].message(idle.jid, 'done')
    active.wait_message('done')
    idle.wait_message('done')
    got = {c: len(c.raw) - start[c] for c in (active, idle)}
    print('\nCSI presence storm: active client %d bytes, inactive client %d bytes (%.1fx)'
          % (got[active], got[idle], got[active] / max(got[idle], 1)))
    assert got[active] >= 5 * got[idle], got
    held = [e for e in idle.inbox if e.tag == q(NS_CLIENT, 'presence')
            and (e.get('from') or '').startswith('storm')]
    assert len(held) == 10 and all(e.find(q(NS_CLIENT, 'status')).text == 'update 19'
                                   for e in held), [xr.tostr(e) for e in held]
