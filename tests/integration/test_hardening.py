"""Small hardening items: strict stream versions, partial stanzas held
forever, forged log lines, oversized resumption ids."""

import time

import pytest

import xmpp_raw as xr
from xmpp_raw import NS_STREAM, q

NS_SM = 'urn:xmpp:sm:3'


@pytest.mark.parametrize('version', ['1.0junk', '1.', '.0', '', '1', '1.0 ', 'x.0', '2.0', '0.9'])
def test_malformed_or_unsupported_version(server, conns, version):
    c = xr.XMPPConn.connect(server.host, server.port, domain=server.domain)
    conns.append(c)
    c.open_stream(version=version, wait_features=False)
    assert c.expect_stream_error() == 'unsupported-version'


@pytest.mark.parametrize('version', ['1.0', '1.1', '01.0'])
def test_version_one_point_anything_is_accepted(server, conns, version):
    c = xr.XMPPConn.connect(server.host, server.port, domain=server.domain)
    conns.append(c)
    feats = c.open_stream(version=version)
    assert feats is not None


def _stanza_timeout_server(server_factory):
    from conftest import USERS
    srv = server_factory(**{'limits.stanza_timeout': 2})
    for local, pw in USERS.items():
        srv.add_user(local, pw)
    srv.settle_users()
    return srv, dict(USERS)


def test_partial_stanza_times_out(server_factory, conns):
    srv, users = _stanza_timeout_server(server_factory)
    a = xr.login(srv, 'alice', users['alice'], 'slow')
    conns.append(a)
    t0 = time.monotonic()
    a.send("<message to='bob@localhost'><body>never fini")
    assert a.expect_stream_error(timeout=6) == 'policy-violation'
    took = time.monotonic() - t0
    assert 1.5 < took < 5, 'cut after %.1f s (stanza_timeout = 2)' % took


def test_trickled_stanza_times_out_from_its_first_byte(server_factory, conns):
    srv, users = _stanza_timeout_server(server_factory)
    a = xr.login(srv, 'alice', users['alice'], 'trickle')
    conns.append(a)
    t0 = time.monotonic()
    a.send("<message to='bob@localhost'><body>")
    cut = None
    for _ in range(40):                   # a byte every 0.2 s: never silent for long
        try:
            a.send('x')
        except OSError:
            cut = time.monotonic()
            break
        el = a.maybe(lambda e: e.tag == q(NS_STREAM, 'error'), 0.2)
        if el is not None:
            assert xr.stream_error_condition(el) == 'policy-violation'
            cut = time.monotonic()
            break
    assert cut is not None, 'a stanza trickled for 8 s was not cut'
    assert cut - t0 < 5


def test_complete_stanzas_are_not_timed(server_factory, conns):
    srv, users = _stanza_timeout_server(server_factory)
    a = xr.login(srv, 'alice', users['alice'], 'ok')
    conns.append(a)
    for _ in range(4):                    # 3 s of normal traffic with pauses
        time.sleep(0.75)
        r = a.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=srv.domain)
        assert r.get('type') == 'result'


def test_log_lines_cannot_be_forged(server, users, conns):
    c = xr.connect_tls(server)
    conns.append(c)
    ok, _ = c.authenticate('alice', users['alice'])
    assert ok
    c.open_stream()
    c.send("<resume xmlns='%s' previd='nope&#10;00:00:00.000 info  FORGED line' h='0'/>" % NS_SM)
    el = c.wait_for(lambda e: e.tag == q(NS_SM, 'failed'))
    assert el.find(q('urn:ietf:params:xml:ns:xmpp-stanzas', 'item-not-found')) is not None
    # an id of the issued length with a newline reaches the log: escaped
    bad = 'A' * 10 + '\n' + 'B' * 11
    c.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, bad.replace('\n', '&#10;')))
    c.wait_for(lambda e: e.tag == q(NS_SM, 'failed'))
    log = server.wait_log('AAAAAAAAAA\\x0aBBBBBBBBBBB')
    assert not any(line.startswith(('FORGED', 'BBBB')) for line in log.splitlines()), log[-2000:]


def test_oversized_previd_is_refused_at_once(server, users, conns):
    c = xr.connect_tls(server)
    conns.append(c)
    ok, _ = c.authenticate('alice', users['alice'])
    assert ok
    c.open_stream()
    c.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, 'x' * 30000))
    el = c.wait_for(lambda e: e.tag == q(NS_SM, 'failed'))
    assert el.find(q('urn:ietf:params:xml:ns:xmpp-stanzas', 'item-not-found')) is not None
    assert 'x' * 100 not in server.log()


def _scram_salt(server, user):
    """The salt tetherd's SCRAM-SHA-256 server-first message gives <user>."""
    import base64
    c = xr.connect_tls(server)
    try:
        c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>%s</auth>"
               % xr.b64('n,,n=%s,r=abcdefghijklmnop' % user))
        el = c.wait_for(lambda e: e.tag == q('urn:ietf:params:xml:ns:xmpp-sasl', 'challenge'))
        sfm = base64.b64decode(el.text).decode()
        return dict(kv.split('=', 1) for kv in sfm.split(','))['s']
    finally:
        c.abort()


def test_unknown_user_salt_survives_a_restart(server_factory, tmp_path):
    """A fake salt that changed across restarts would tell unknown names
    from accounts (whose salts never change)."""
    key = str(tmp_path / 'persistent-token.key')
    first = server_factory(**{'tokens.key_file': key})
    s1, s2 = _scram_salt(first, 'nobody'), _scram_salt(first, 'somebody')
    assert s1 == _scram_salt(first, 'nobody') and s1 != s2
    first.stop()
    second = server_factory(**{'tokens.key_file': key})
    assert _scram_salt(second, 'nobody') == s1
    assert _scram_salt(second, 'somebody') == s2
    other = server_factory(**{'tokens.key_file': str(tmp_path / 'other.key')})
    assert _scram_salt(other, 'nobody') != s1      # derived from the secret, not the name alone


def _read_until_closed(sock, limit=8.0):
    """Everything the server writes until it closes the socket."""
    import socket
    got, deadline = b'', time.monotonic() + limit
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return got, True
        if not chunk:
            return got, True
        got += chunk
    return got, False


# The first 40 bytes of a TLS 1.2/1.3 ClientHello record: the handshake
# never gets the rest.
PARTIAL_CLIENT_HELLO = bytes.fromhex('160301020001' '0001fc0303') + b'\x11' * 29


@pytest.mark.parametrize('send', [b'', PARTIAL_CLIENT_HELLO], ids=['silent', 'partial-hello'])
def test_direct_tls_handshake_timeout_writes_no_plaintext(server_factory, send):
    """Item 9: a direct-TLS connection whose handshake never completes is
    closed at preauth_timeout without a byte: before, the server wrote a
    plaintext stream header and <connection-timeout/> into the TLS port."""
    import socket
    srv = server_factory(**{'limits.preauth_timeout': 1})
    s = socket.create_connection((srv.host, srv.tls_port), timeout=5)
    try:
        if send:
            s.sendall(send)
        t0 = time.monotonic()
        got, closed = _read_until_closed(s)
        assert closed, 'still open after %.1f s (preauth_timeout = 1)' % (time.monotonic() - t0)
        assert b'<' not in got and b'stream' not in got, 'plaintext on the TLS port: %r' % got[:200]
        # Silence gets nothing at all; a partial hello may at most get a
        # TLS alert record (content type 21), never application bytes.
        assert got == b'' or got[0] == 21, got[:64]
    finally:
        s.close()


def test_restart_header_is_capped(server_factory, conns):
    """Item 9: after authentication the stanza limit is 256 KiB, and a
    restart header of that size used to be replayed into every new parser
    (after each idle drop): 2.96 ms of CPU per byte the client sent. The
    header has its own limit, [limits] max_header_size (4096)."""
    from conftest import USERS, free_port
    from test_metrics import get, metric
    port = free_port()
    srv = server_factory(**{'admin.listen': '127.0.0.1:%d' % port,
                            'limits.max_stanza_size': 262144})
    srv.add_user('alice', USERS['alice'])
    srv.settle_users()
    decls = ''.join(" xmlns:p%d='urn:example:%d'" % (i, i) for i in range(200))
    assert len(decls) > 4096
    c = xr.connect_tls(srv)
    conns.append(c)
    ok, cond = c.authenticate('alice', USERS['alice'])
    assert ok, cond
    c._new_parser()
    c.send("<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams'%s>" % decls)
    assert c.expect_stream_error() == 'policy-violation'
    _, _, text = get(port, '/metrics')
    assert metric(text, 'tether_limit_hits_total{limit="max_header_size"}') == 1
    assert 'stream header too large' in srv.log()
    # An ordinary restart is still fine.
    ok = xr.login(srv, 'alice', USERS['alice'], 'fine')
    conns.append(ok)
    ok.roundtrip()
