"""What stopped real clients in their first minutes: replies to iqs without
'to' (aioxmpp), whitespace before a restarted stream (go-sendxmpp), PLAIN's
<success/>, the roster request (Gajim) and bounces that keep the body."""

import asyncio

import pytest

import xmpp_raw as xr
from xmpp_raw import NS_CLIENT, NS_SASL, NS_STREAM, q

NS_ROSTER = 'jabber:iq:roster'
NS_VCARD = 'vcard-temp'
NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind'


def _plain_success(conn, user, password, trailer=''):
    """PLAIN auth written as one chunk with <trailer> after </auth>, as
    go-sendxmpp does; returns the <success/> element."""
    msg = ('\0%s\0%s' % (user, password)).encode()
    conn.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>%s" % (NS_SASL, xr.b64(msg), trailer))
    el = conn._sasl_result()
    assert el.tag == q(NS_SASL, 'success'), xr.tostr(el)
    return el


def _restart(conn, prefix):
    """Sends <prefix> + a stream header without XML declaration; returns the features."""
    conn._new_parser()
    conn.send(prefix + conn.stream_header(prolog=None))
    return conn.wait_for(q(NS_STREAM, 'features'), what='<stream:features/> after the restart')


# -------------------------------------------------------------- restarts

@pytest.mark.parametrize('trailer,prefix', [
    ('\n', "<?xml version='1.0'?>"),       # go-sendxmpp: "</auth>\n", then the declaration
    ('', "\n<?xml version='1.0'?>"),       # newline + declaration + header
    ('\n', ''),                            # newline + header
    ('', "<?xml version='1.0'?>"),         # declaration + header
    (' \r\n\t', "\n \n<?xml version='1.0'?>"),
], ids=['auth-newline-decl', 'newline-decl', 'newline-header', 'decl-header', 'much-space'])
def test_whitespace_before_restarted_header_after_sasl(server, users, conns, trailer, prefix):
    c = xr.connect_tls(server)
    conns.append(c)
    _plain_success(c, 'alice', users['alice'], trailer)
    feats = _restart(c, prefix)
    assert feats.find(q(NS_BIND, 'bind')) is not None, xr.tostr(feats)
    reply = c.bind('gosend')
    assert reply.get('type') == 'result'


@pytest.mark.parametrize('direct_tls', [False, True])
def test_whitespace_before_header_after_starttls_or_tls(server, users, conns, direct_tls):
    settle = server.settle_users
    settle()
    if direct_tls:
        c = xr.XMPPConn.connect(server.host, server.tls_port, domain=server.domain,
                                direct_tls=True)
    else:
        c = xr.XMPPConn.connect(server.host, server.port, domain=server.domain)
        c.open_stream()
        c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert c.next().tag == q('urn:ietf:params:xml:ns:xmpp-tls', 'proceed')
        c._wrap_tls()
    conns.append(c)
    feats = _restart(c, "\n<?xml version='1.0'?>")
    assert 'PLAIN' in [m.text for m in feats.iter(q(NS_SASL, 'mechanism'))]


def test_not_well_formed_says_what(server, users, conns):
    c = xr.connect_tls(server)
    conns.append(c)
    c.send('<message><body>x</bogus>')
    assert c.expect_stream_error() == 'not-well-formed'
    assert b'mismatched tag at line 1, column' in c.raw, c.raw[-500:]
    server.wait_log('stream error not-well-formed: mismatched tag')


def test_plain_success_is_empty(server, users, conns):
    c = xr.connect_tls(server)
    conns.append(c)
    el = _plain_success(c, 'bob', users['bob'])
    assert not (el.text or '').strip(), 'PLAIN <success/> carries data: %r' % el.text
    assert len(el) == 0


# -------------------------------------------------------------- iqs without 'to'

def _no_to_iq(c, type_, payload):
    return c.iq(type_, payload)      # xmpp_raw sends no 'to' unless given one


def test_iq_without_to_answered_from_bare_jid(server, users, conns):
    a = xr.login(server, 'alice', users['alice'], 'desk')
    conns.append(a)
    bare = 'alice@%s' % server.domain
    cases = [
        ('get', "<query xmlns='%s'/>" % NS_ROSTER, 'result'),
        ('get', "<vCard xmlns='%s'/>" % NS_VCARD, 'error'),
        ('get', "<ping xmlns='urn:xmpp:ping'/>", 'result'),
        ('set', "<query xmlns='%s'><item jid='bob@localhost'/></query>" % NS_ROSTER,
         'result'),
        ('get', "<query xmlns='jabber:iq:version'/>", 'error'),
    ]
    for type_, payload, want in cases:
        r = _no_to_iq(a, type_, payload)
        assert r.get('type') == want, xr.tostr(r)
        assert r.get('from') in (None, bare), 'reply to %s from %r' % (payload, r.get('from'))
        assert r.get('to') == a.jid
        if want == 'error':
            assert xr.stanza_error(r)[1] == 'service-unavailable', xr.tostr(r)
    roster = _no_to_iq(a, 'get', "<query xmlns='%s'/>" % NS_ROSTER)
    query = roster.find(q(NS_ROSTER, 'query'))
    assert query is not None and len(query) == 1, xr.tostr(roster)
    # an iq with a bad type and no 'to' also answers from the account
    a.send("<iq type='bogus' id='bt1'><ping xmlns='urn:xmpp:ping'/></iq>")
    r = a.wait_for(lambda e: e.get('id') == 'bt1')
    assert r.get('type') == 'error' and r.get('from') in (None, bare), xr.tostr(r)
    # explicitly to the account: unchanged
    r = a.iq('get', "<query xmlns='%s'/>" % NS_ROSTER, to=bare)
    assert r.get('type') == 'result' and r.get('from') == bare


def test_roster_of_another_account_is_refused(server, users, conns):
    a = xr.login(server, 'alice', users['alice'], 'desk')
    conns.append(a)
    r = a.iq('get', "<query xmlns='%s'/>" % NS_ROSTER, to='bob@%s' % server.domain)
    assert r.get('type') == 'error', xr.tostr(r)
    assert xr.stanza_error(r)[1] == 'service-unavailable'


def test_aioxmpp_roster_and_own_vcard(server, users):
    """aioxmpp drops replies whose 'from' is not what it asked: before the
    fix its roster request and its own vCard request waited forever."""
    aioxmpp = pytest.importorskip('aioxmpp')
    import aioxmpp.roster
    import aioxmpp.vcard
    from aioxmpp.connector import STARTTLSConnector

    async def scenario():
        server.settle_users()
        jid = aioxmpp.JID.fromstr('alice@%s/aio' % server.domain)
        client = aioxmpp.Client(
            jid, aioxmpp.make_security_layer(users['alice'], no_verify=True),
            override_peer=[(server.host, server.port, STARTTLSConnector())])
        roster = client.summon(aioxmpp.RosterClient)
        vcards = client.summon(aioxmpp.vcard.VCardService)
        got_roster = asyncio.Event()
        roster.on_initial_roster_received.connect(lambda: got_roster.set())
        async with client.connected():
            await asyncio.wait_for(got_roster.wait(), 10)
            assert roster.items == {}
            with pytest.raises(aioxmpp.errors.XMPPCancelError) as e:
                await asyncio.wait_for(vcards.get_vcard(), 10)
            assert e.value.condition == aioxmpp.errors.ErrorCondition.SERVICE_UNAVAILABLE
            ping = aioxmpp.IQ(type_=aioxmpp.IQType.GET, payload=aioxmpp.ping.Ping())
            await asyncio.wait_for(client.send(ping), 10)   # no 'to': the account answers
    asyncio.run(asyncio.wait_for(scenario(), 40))


# -------------------------------------------------------------- bounces

def test_bounce_carries_the_original_body(server, users, conns):
    a = xr.login(server, 'alice', users['alice'], 'desk')
    conns.append(a)
    # (bob exists: to him, or to a resource of his that is gone, a message
    # is stored offline, test_im.py)
    for to in ('nobody@%s' % server.domain, 'nobody@%s/gone' % server.domain):
        a.message(to, 'which one failed?', id_='b-' + to)
        err = a.wait_for(lambda e: e.tag == q(NS_CLIENT, 'message') and e.get('type') == 'error'
                         and e.get('id') == 'b-' + to)
        body = err.find(q(NS_CLIENT, 'body'))
        assert body is not None and body.text == 'which one failed?', xr.tostr(err)
        assert xr.stanza_error(err)[1] == 'service-unavailable'
