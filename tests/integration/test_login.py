"""Login paths: slixmpp over STARTTLS and direct TLS, server IQs, SASL mechanisms
and failures, STARTTLS policy, stream headers, ALPN."""

import asyncio
import base64
import socket
import ssl

import pytest

import xmpp_raw as xr
from xmpp_raw import NS_CLIENT, NS_SASL, NS_STREAM, NS_TLS, q


def run(coro, timeout=40):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ----------------------------------------------------------------------------- 1. real clients

def test_slixmpp_starttls_and_direct_tls_exchange_messages(server, users):
    async def scenario():
        a = await xr.slix_login(server, 'alice', users['alice'], 'laptop')
        b = None
        try:
            b = await xr.slix_login(server, 'bob', users['bob'], 'phone', direct_tls=True)
            assert str(a.boundjid) == 'alice@localhost/laptop'
            assert str(b.boundjid) == 'bob@localhost/phone'
            a.send_message(mto='bob@localhost/phone', mbody='hello bob', mtype='chat')
            m = await asyncio.wait_for(b.inbox.get(), 10)
            assert m['body'] == 'hello bob'
            assert str(m['from']) == 'alice@localhost/laptop'
            assert m['type'] == 'chat'
            b.send_message(mto='alice@localhost/laptop', mbody='hello alice', mtype='chat')
            m = await asyncio.wait_for(a.inbox.get(), 10)
            assert m['body'] == 'hello alice'
            assert str(m['from']) == 'bob@localhost/phone'
            await asyncio.sleep(1.0)           # nothing else (no duplicates, no echoes)
            assert a.inbox.empty(), 'alice got extra messages: %s' % a.inbox.get_nowait()
            assert b.inbox.empty(), 'bob got extra messages: %s' % b.inbox.get_nowait()
        finally:
            if b is not None:
                await xr.slix_close(b)
            await xr.slix_close(a)
    run(scenario())


@pytest.mark.parametrize('mech', ['SCRAM-SHA-1', 'PLAIN'])
def test_slixmpp_other_mechanisms(server, users, mech):
    async def scenario():
        a = await xr.slix_login(server, 'carol', users['carol'], 'desk', mech=mech)
        await xr.slix_close(a)
    run(scenario())


def test_slixmpp_wrong_password_fails(server, users):
    async def scenario():
        server.settle_users()
        x = xr.slix_client(server, 'alice', 'not-the-password', 'laptop')
        x.start()
        try:
            done, _ = await asyncio.wait([x.session_started, x.auth_failed], timeout=15,
                                         return_when=asyncio.FIRST_COMPLETED)
            assert x.session_started not in done, 'slixmpp logged in with a wrong password'
            assert x.auth_failed in done, 'no failed_auth event within 15s'
        finally:
            await xr.slix_close(x)
    run(scenario())


# ----------------------------------------------------------------------------- 2. server IQs

@pytest.fixture
def alice(server, users, conns):
    c = xr.login(server, 'alice', users['alice'], 'home')
    conns.append(c)
    return c


def test_ping_server(alice):
    r = alice.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to='localhost')
    assert r.get('type') == 'result', xr.tostr(r)
    assert r.get('from') == 'localhost', xr.tostr(r)


def test_disco_info_server(alice):
    r = alice.iq('get', "<query xmlns='%s'/>" % xr.NS_DISCO_INFO, to='localhost')
    assert r.get('type') == 'result', xr.tostr(r)
    query = r.find(q(xr.NS_DISCO_INFO, 'query'))
    assert query is not None, xr.tostr(r)
    idents = [(i.get('category'), i.get('type')) for i in query.findall(q(xr.NS_DISCO_INFO, 'identity'))]
    assert any(cat == 'server' for cat, _ in idents), idents
    feats = {f.get('var') for f in query.findall(q(xr.NS_DISCO_INFO, 'feature'))}
    for needed in (xr.NS_DISCO_INFO, xr.NS_PING, xr.NS_VERSION):
        assert needed in feats, 'feature %s missing from %s' % (needed, sorted(feats))
    assert xr.NS_ROSTER not in feats, 'roster advertised but not implemented'


def test_software_version(alice):
    r = alice.iq('get', "<query xmlns='%s'/>" % xr.NS_VERSION, to='localhost')
    assert r.get('type') == 'result', xr.tostr(r)
    name = r.find('%s/%s' % (q(xr.NS_VERSION, 'query'), q(xr.NS_VERSION, 'name')))
    assert name is not None and name.text == 'tether', xr.tostr(r)
    ver = r.find('%s/%s' % (q(xr.NS_VERSION, 'query'), q(xr.NS_VERSION, 'version')))
    assert ver is not None and (ver.text or '').strip(), xr.tostr(r)


def test_unknown_namespace_to_domain_is_service_unavailable(alice):
    r = alice.iq('get', "<query xmlns='urn:example:nothing-here'/>", to='localhost')
    assert r.get('type') == 'error', xr.tostr(r)
    assert xr.stanza_error(r) == ('cancel', 'service-unavailable'), xr.tostr(r)
    r = alice.iq('set', "<frob xmlns='urn:example:nothing-here'/>", to='localhost')
    assert xr.stanza_error(r)[1] == 'service-unavailable', xr.tostr(r)
    alice.roundtrip()


def test_malformed_iq_is_bad_request(alice):
    # get with no child, get with two children: bad-request (RFC 6120 §8.2.3)
    alice.send("<iq type='get' id='empty1' to='localhost'/>")
    r = alice.wait_for(lambda e: e.get('id') == 'empty1')
    assert r.get('type') == 'error' and xr.stanza_error(r)[1] == 'bad-request', xr.tostr(r)
    alice.send("<iq type='get' id='two1' to='localhost'><ping xmlns='urn:xmpp:ping'/>"
               "<query xmlns='jabber:iq:version'/></iq>")
    r = alice.wait_for(lambda e: e.get('id') == 'two1')
    assert r.get('type') == 'error' and xr.stanza_error(r)[1] == 'bad-request', xr.tostr(r)
    # iq result / error addressed to the server: never answered
    alice.send("<iq type='result' id='res1' to='localhost'/>")
    assert alice.maybe(lambda e: e.get('id') == 'res1', 1.0) is None
    alice.roundtrip()


# ----------------------------------------------------------------------------- 3. failures, STARTTLS policy

def test_features_before_tls_only_required_starttls(server, conns):
    c = xr.XMPPConn.connect(server.host, server.port)
    conns.append(c)
    feats = c.open_stream()
    children = list(feats)
    assert [ch.tag for ch in children] == [q(NS_TLS, 'starttls')], xr.tostr(feats)
    assert children[0].find(q(NS_TLS, 'required')) is not None, xr.tostr(feats)
    assert not c.mechanisms()


def test_auth_before_starttls_refused(server, users, conns):
    c = xr.XMPPConn.connect(server.host, server.port)
    conns.append(c)
    c.open_stream()
    msg = base64.b64encode(b'\0alice\0' + users['alice'].encode()).decode()
    c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, msg))
    el = c.wait_for(lambda e: e.tag in (q(NS_SASL, 'failure'), q(NS_SASL, 'success'),
                                        q(NS_STREAM, 'error')))
    assert el.tag != q(NS_SASL, 'success'), 'PLAIN succeeded before TLS'
    if el.tag == q(NS_SASL, 'failure'):
        assert el.find(q(NS_SASL, 'encryption-required')) is not None, xr.tostr(el)
        # still a usable plaintext stream: STARTTLS works afterwards
        c.starttls()
        assert 'SCRAM-SHA-256' in c.mechanisms()
    else:
        assert c.wait_closed(5), 'stream error but connection left open'


def test_wrong_password_then_policy_close(server, users, conns):
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    ok, cond = c.auth_scram('alice', 'wrong-password', 'sha256')
    assert (ok, cond) == (False, 'not-authorized')
    # unknown user: same answer (no account enumeration)
    ok, cond = c.auth_scram('mallory', 'whatever', 'sha1')
    assert (ok, cond) == (False, 'not-authorized')
    # third failure (max_auth_failures = 3): the stream is closed
    c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
           % (NS_SASL, base64.b64encode(b'\0alice\0nope').decode()))
    c.pump(5)
    assert c.eof, 'stream still open after 3 failed authentications'
    failures = [e for e in c.inbox if e.tag == q(NS_SASL, 'failure')]
    successes = [e for e in c.inbox if e.tag == q(NS_SASL, 'success')]
    errors = [e for e in c.inbox if e.tag == q(NS_STREAM, 'error')]
    assert not successes
    assert len(failures) <= 1
    if errors:
        assert xr.stream_error_condition(errors[0]) == 'policy-violation', xr.tostr(errors[0])
        assert c.stream_ended, 'stream error without </stream:stream>'


def test_failure_does_not_lock_stream(server, users, conns):
    """One failure, then the right password on the same stream works."""
    c = xr.connect_tls(server)
    conns.append(c)
    assert c.auth_scram('bob', 'bad', 'sha256') == (False, 'not-authorized')
    assert c.auth_scram('bob', users['bob'], 'sha256') == (True, None)
    c.open_stream()
    assert c.bind('x').get('type') == 'result'
    c.roundtrip()


def test_abort_sasl(server, users, conns):
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    c.send("<auth xmlns='%s' mechanism='SCRAM-SHA-256'>%s</auth>"
           % (NS_SASL, xr.b64('n,,n=alice,r=abcdefghijklmnop')))
    ch = c.next()
    assert ch.tag == q(NS_SASL, 'challenge'), xr.tostr(ch)
    c.send("<abort xmlns='%s'/>" % NS_SASL)
    f = c.next()
    assert f.tag == q(NS_SASL, 'failure') and f.find(q(NS_SASL, 'aborted')) is not None, xr.tostr(f)
    assert c.auth_scram('alice', users['alice'], 'sha256') == (True, None)


# ----------------------------------------------------------------------------- 4. mechanisms

@pytest.mark.parametrize('direct_tls', [False, True], ids=['starttls', 'directtls'])
@pytest.mark.parametrize('mech', ['SCRAM-SHA-1', 'SCRAM-SHA-256', 'PLAIN'])
def test_raw_mechanism_login(server, users, conns, mech, direct_tls):
    c = xr.login(server, 'bob', users['bob'], 'res-' + mech.lower(), mech=mech, direct_tls=direct_tls)
    conns.append(c)
    assert c.jid == 'bob@localhost/res-' + mech.lower()
    c.roundtrip()


def test_mechanisms_offered_after_tls(server, conns):
    c = xr.connect_tls(server)
    conns.append(c)
    mechs = c.mechanisms()
    for m in ('SCRAM-SHA-1', 'SCRAM-SHA-256', 'SCRAM-SHA-1-PLUS', 'SCRAM-SHA-256-PLUS'):
        assert m in mechs, '%s not offered: %s' % (m, mechs)
    assert 'tls-server-end-point' in c.cb_types(), 'XEP-0440 list lacks tls-server-end-point: %s' % c.cb_types()


@pytest.mark.parametrize('direct_tls', [False, True], ids=['starttls', 'directtls'])
@pytest.mark.parametrize('hashname', ['sha1', 'sha256'])
def test_scram_plus_tls_server_end_point(server, users, conns, hashname, direct_tls):
    c = xr.connect_tls(server, direct_tls=direct_tls)
    conns.append(c)
    ok, cond = c.auth_scram('alice', users['alice'], hashname, cb_type='tls-server-end-point')
    assert ok, 'SCRAM-%s-PLUS tls-server-end-point failed: %s' % (hashname, cond)
    c.open_stream()
    assert c.bind().get('type') == 'result'
    c.roundtrip()


@pytest.mark.parametrize('hashname', ['sha1', 'sha256'])
def test_scram_plus_tls_exporter(server, users, conns, hashname):
    """SCRAM-*-PLUS with tls-exporter (RFC 9266) on TLS 1.3. Python 3.11's ssl
    cannot export keying material, so the TLS side is `openssl s_client`."""
    c, exporter = xr.openssl_direct_tls(server)
    conns.append(c)
    c.open_stream()
    assert 'tls-exporter' in c.cb_types(), c.cb_types()
    ok, cond = c.auth_scram('alice', users['alice'], hashname, cb_type='tls-exporter', cb_data=exporter)
    assert ok, 'SCRAM-%s-PLUS tls-exporter failed: %s' % (hashname, cond)
    c.open_stream()
    assert c.bind('exp').get('type') == 'result'
    c.roundtrip()


def test_scram_plus_tls_exporter_wrong_value_fails(server, users, conns):
    c, exporter = xr.openssl_direct_tls(server)
    conns.append(c)
    c.open_stream()
    bad = bytes(b ^ 0xff for b in exporter)
    ok, cond = c.auth_scram('alice', users['alice'], 'sha256', cb_type='tls-exporter', cb_data=bad)
    assert (ok, cond) == (False, 'not-authorized')


def test_scram_plus_wrong_binding_fails(server, users, conns):
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    ok, cond = c.auth_scram('alice', users['alice'], 'sha256', cb_type='tls-server-end-point',
                            cb_data=b'\0' * 32)
    assert (ok, cond) == (False, 'not-authorized')


def test_scram_downgrade_flag_y_rejected(server, users, conns):
    """gs2 flag 'y' ("I support CB but you don't") while -PLUS was offered = downgrade."""
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    assert 'SCRAM-SHA-256-PLUS' in c.mechanisms()
    ok, cond = c.auth_scram('alice', users['alice'], 'sha256', flag='y')
    assert not ok and cond == 'not-authorized', cond


# ----------------------------------------------------------------------------- headers, ALPN

def _id(c):
    return c.header.get('id')


def test_stream_headers_and_fresh_ids(server, users, conns):
    c = xr.XMPPConn.connect(server.host, server.port)
    conns.append(c)
    c.open_stream()
    h0 = dict(c.header)
    assert h0.get('from') == 'localhost', h0
    assert h0.get('version') == '1.0', h0
    assert h0.get('id'), h0
    c.starttls()
    h1 = dict(c.header)
    assert _id(c) and _id(c) != h0['id']
    feats = c.features
    assert feats.find(q(NS_TLS, 'starttls')) is None, 'STARTTLS offered again after TLS'
    assert c.auth_scram('alice', users['alice']) == (True, None)
    c.open_stream()
    assert _id(c) and _id(c) not in (h0['id'], h1['id'])
    assert c.features.find(q(xr.NS_BIND, 'bind')) is not None
    assert c.features.find(q(NS_SASL, 'mechanisms')) is None, 'SASL offered again after success'


def test_second_auth_after_success_is_error(server, users, conns):
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    assert c.auth_scram('alice', users['alice']) == (True, None)
    c.open_stream()
    c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
           % (NS_SASL, base64.b64encode(b'\0alice\0' + users['alice'].encode()).decode()))
    el = c.wait_for(lambda e: e.tag in (q(NS_SASL, 'success'), q(NS_SASL, 'failure'), q(NS_STREAM, 'error')))
    assert el.tag != q(NS_SASL, 'success'), 'second <auth/> succeeded'


def test_direct_tls_alpn(server, conns):
    c = xr.XMPPConn.connect(server.host, server.tls_port, direct_tls=True)
    conns.append(c)
    assert c.sock.selected_alpn_protocol() == 'xmpp-client'
    feats = c.open_stream()
    assert feats.find(q(NS_TLS, 'starttls')) is None, 'STARTTLS offered on direct TLS'
    assert 'SCRAM-SHA-256' in c.mechanisms()
    # no ALPN at all: still fine
    c2 = xr.XMPPConn.connect(server.host, server.tls_port, direct_tls=True, alpn=None)
    conns.append(c2)
    assert c2.open_stream() is not None
    # ALPN without xmpp-client: fatal no_application_protocol alert
    with pytest.raises((ssl.SSLError, ConnectionError, socket.timeout, OSError, xr.StreamClosed)):
        c3 = xr.XMPPConn.connect(server.host, server.tls_port, direct_tls=True, alpn=('http/1.1',))
        conns.append(c3)
        c3.open_stream()


# ----------------------------------------------------------------------------- SASL edge cases

def _raw_auth(c, mech, payload):
    c.send("<auth xmlns='%s' mechanism='%s'>%s</auth>" % (NS_SASL, mech, payload))
    return c.wait_for(lambda e: nsof_sasl(e), what='SASL reply')


def nsof_sasl(e):
    return e.tag in (q(NS_SASL, 'failure'), q(NS_SASL, 'success'), q(NS_SASL, 'challenge'),
                     q(NS_STREAM, 'error'))


def _cond(el):
    return [xr.local(ch.tag) for ch in el if xr.local(ch.tag) != 'text'][:1]


def test_sasl_invalid_base64(server, users, conns):
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    el = _raw_auth(c, 'PLAIN', '!!!not*base64!!!')
    assert el.tag == q(NS_SASL, 'failure') and _cond(el) == ['incorrect-encoding'], xr.tostr(el)
    assert c.auth_plain('alice', users['alice']) == (True, None)


def test_sasl_unknown_mechanism(server, users, conns):
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    el = _raw_auth(c, 'DIGEST-MD5', '=')
    assert el.tag == q(NS_SASL, 'failure') and _cond(el) == ['invalid-mechanism'], xr.tostr(el)
    assert c.auth_scram('alice', users['alice'], 'sha1') == (True, None)


def test_plain_authzid(server, users, conns):
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    # someone else's JID as authzid: refused
    ok, cond = c.auth_plain('alice', users['alice'], authzid='bob@localhost')
    assert not ok and cond in ('invalid-authzid', 'not-authorized'), cond
    # own bare JID as authzid: fine
    assert c.auth_plain('alice', users['alice'], authzid='alice@localhost') == (True, None)
    c.open_stream()
    assert c.bind('authz').get('type') == 'result'
    assert c.jid == 'alice@localhost/authz'


def test_scram_authzid_other_user_refused(server, users, conns):
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    ok, cond = c.auth_scram('alice', users['alice'], 'sha256', authzid='bob@localhost')
    assert not ok and cond in ('invalid-authzid', 'not-authorized'), cond


def test_scram_mandatory_extension_refused(server, users, conns):
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    el = _raw_auth(c, 'SCRAM-SHA-256', xr.b64('n,,m=ext,n=alice,r=abcdefghijklmnopqr'))
    assert el.tag == q(NS_SASL, 'failure'), xr.tostr(el)


def test_scram_wrong_nonce_in_final_refused(server, users, conns):
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    el = _raw_auth(c, 'SCRAM-SHA-256', xr.b64('n,,n=alice,r=clientnonce12345678'))
    assert el.tag == q(NS_SASL, 'challenge'), xr.tostr(el)
    c.send("<response xmlns='%s'>%s</response>"
           % (NS_SASL, xr.b64('c=biws,r=clientnonce12345678TAMPERED,p=' + xr.b64(b'\0' * 32))))
    el = c.wait_for(nsof_sasl)
    assert el.tag == q(NS_SASL, 'failure'), xr.tostr(el)


def test_plain_case_insensitive_username(server, users, conns):
    """authcid is prepared as a localpart: ALICE logs in as alice."""
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    assert c.auth_plain('ALICE', users['alice']) == (True, None)
    c.open_stream()
    assert c.bind('upper').get('type') == 'result'
    assert c.jid == 'alice@localhost/upper'


def test_starttls_plaintext_injection_discarded(server, users, conns):
    """Bytes sent after <starttls/> in the same packet must be dropped (RFC 6120 §5.4.3.3)."""
    c = xr.XMPPConn.connect(server.host, server.port)
    conns.append(c)
    c.open_stream()
    c.send("<starttls xmlns='%s'/><iq type='get' id='injected' to='localhost'>"
           "<ping xmlns='urn:xmpp:ping'/></iq>" % NS_TLS)
    el = c.next()
    assert el.tag == q(NS_TLS, 'proceed'), xr.tostr(el)
    c._wrap_tls()
    feats = c.open_stream()
    assert 'SCRAM-SHA-256' in c.mechanisms(), xr.tostr(feats)
    assert c.auth_scram('alice', users['alice']) == (True, None)
    c.open_stream()
    assert c.bind('inj').get('type') == 'result'
    c.roundtrip()
    assert c.maybe(lambda e: e.get('id') == 'injected', 0.5) is None, 'injected plaintext was processed'


def test_new_password_after_passwd(server, users, conns):
    server.passwd('carol', 'new-carol-pw')
    server.settle_users()
    c = xr.connect_tls(server, direct_tls=True)
    conns.append(c)
    assert c.auth_scram('carol', users['carol']) == (False, 'not-authorized')
    assert c.auth_scram('carol', 'new-carol-pw') == (True, None)
