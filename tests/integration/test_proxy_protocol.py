"""[c2s] proxy_protocol: a PROXY v1/v2 header from a trusted address gives
the client's address to logs; anything else closes the connection."""

import socket
import struct
import subprocess

import pytest

import conftest as cf
import xmpp_raw as xr
from xmpp_raw import NS_BIND, q

SIG = b'\r\n\r\n\x00\r\nQUIT\n'


def v2(src, sport, dst='10.0.0.1', dport=5222, cmd=0x21, tlvs=b''):
    if ':' in src:
        fam = 0x21
        blk = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam = 0x11
        blk = socket.inet_aton(src) + socket.inet_aton(dst)
    blk += struct.pack('>HH', sport, dport) + tlvs
    return SIG + bytes([cmd, fam]) + struct.pack('>H', len(blk)) + blk


def v2_local():
    return SIG + bytes([0x20, 0x00, 0, 0])


def v1(src, sport, dst='10.0.0.1', dport=5222):
    proto = 'TCP6' if ':' in src else 'TCP4'
    return ('PROXY %s %s %s %d %d\r\n' % (proto, src, dst, sport, dport)).encode()


@pytest.fixture
def proxied(server_factory):
    srv = server_factory(**{'c2s.proxy_protocol': 'true',
                            'c2s.trusted_proxies': '127.0.0.1/32, ::1/128, 10.0.0.0/8'})
    for local, pw in cf.USERS.items():
        srv.add_user(local, pw)
    srv.settle_users()
    return srv


def proxy_login(server, header, user='alice', *, direct_tls=False, split=False):
    """Connects, sends <header> (byte by byte if <split>), then logs in."""
    server.settle_users()
    port = server.tls_port if direct_tls else server.port
    sock = socket.create_connection((server.host, port), timeout=xr.DEFAULT_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if split:
        for b in header:
            sock.sendall(bytes([b]))
    else:
        sock.sendall(header)
    conn = xr.XMPPConn(sock, server.host, port, server.domain, xr.DEFAULT_TIMEOUT)
    try:
        if direct_tls:
            conn._wrap_tls()
            conn.open_stream()
        else:
            conn.open_stream()
            conn.starttls()
        ok, cond = conn.authenticate(user, cf.USERS[user])
        assert ok, cond
        feats = conn.open_stream()
        assert feats.find(q(NS_BIND, 'bind')) is not None
        assert conn.bind('proxied').get('type') == 'result'
    except BaseException:
        conn.abort()
        raise
    return conn


def stream_open(srv):
    return ("<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" % srv.domain).encode()


def test_v2_starttls_login_logs_client_address(proxied, conns):
    conns.append(proxy_login(proxied, v2('192.0.2.7', 54321)))
    proxied.wait_log('c2s 192.0.2.7:54321: authenticated as alice@localhost')
    proxied.wait_log('peer=192.0.2.7:54321')


def test_v2_direct_tls_ipv6_with_tlvs(proxied, conns):
    alpn = b'\x01' + struct.pack('>H', 11) + b'xmpp-client'
    conns.append(proxy_login(proxied, v2('2001:db8::7', 40000, '2001:db8::1', tlvs=alpn),
                             'bob', direct_tls=True))
    proxied.wait_log('c2s 2001:db8::7:40000: authenticated as bob@localhost')


def test_v1_starttls_and_direct_tls(proxied, conns):
    conns.append(proxy_login(proxied, v1('198.51.100.20', 1234)))
    proxied.wait_log('c2s 198.51.100.20:1234: authenticated as alice@localhost')
    conns.append(proxy_login(proxied, v1('198.51.100.21', 4321), 'bob', direct_tls=True))
    proxied.wait_log('c2s 198.51.100.21:4321: authenticated as bob@localhost')


def test_header_in_pieces(proxied, conns):
    conns.append(proxy_login(proxied, v2('203.0.113.5', 999), split=True))
    proxied.wait_log('c2s 203.0.113.5:999: authenticated as alice@localhost')
    conns.append(proxy_login(proxied, v1('203.0.113.6', 998), 'bob', split=True))
    proxied.wait_log('c2s 203.0.113.6:998: authenticated as bob@localhost')


def test_local_keeps_socket_address(proxied, conns):
    conns.append(proxy_login(proxied, v2_local()))
    text = proxied.wait_log(': authenticated as alice@localhost')
    assert 'c2s 127.0.0.1:' in text


def _closed_with(server, data, port=None, why='PROXY protocol'):
    sock = socket.create_connection((server.host, port or server.port), timeout=5)
    try:
        sock.sendall(data)
        sock.settimeout(5)
        got = b''
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        got = b''
    finally:
        sock.close()
    assert got == b'', 'server answered before the header: %r' % got[:200]
    server.wait_log(why)


@pytest.mark.parametrize('data', [
    b'PROXY TCP4 192.0.2.1 10.0.0.1 012 5222\r\n<stream>',     # leading zero
    b'PROXY TCP4 192.0.2.1 10.0.0.1 1 5222\n',                  # LF only
    SIG + b'\x21\x12\x00\x0c' + b'\x00' * 12,                   # UDP
    SIG + b'\x21\x11\x02\x01' + b'\x00' * 513,                  # block over 512 bytes
    b'PROXY UNKNOWN ' + b'A' * 120 + b'\r\n',                   # v1 over 107 bytes
])
def test_malformed_header_closes(proxied, data):
    _closed_with(proxied, data)


def test_no_header_closes(proxied):
    _closed_with(proxied, b"<?xml version='1.0'?><stream:stream to='localhost' "
                          b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                          b"version='1.0'>", why='no PROXY header')
    # Direct TLS: a ClientHello where the header should be.
    ctx = xr.XMPPConn.client_context()
    sock = socket.create_connection((proxied.host, proxied.tls_port), timeout=5)
    with pytest.raises((ssl_errors())):
        ctx.wrap_socket(sock, server_hostname='localhost')
    sock.close()


def ssl_errors():
    import ssl
    return (ssl.SSLError, ConnectionError, OSError)


def test_log_lines_are_rate_limited(proxied):
    before = proxied.log().count('PROXY protocol:')
    for _ in range(20):
        _closed_with(proxied, b'GARBAGE\r\n')
    after = proxied.log().count('PROXY protocol:')
    # 20 refusals well within a couple of seconds, over two workers.
    assert after - before <= 8, 'not rate-limited: %d lines' % (after - before)


def test_untrusted_address_header_closes(server_factory):
    srv = server_factory(**{'c2s.proxy_protocol': 'true', 'c2s.trusted_proxies': '10.0.0.0/8'})
    _closed_with(srv, v2('192.0.2.7', 54321) + b'<?xml', why='not from a trusted proxy')
    _closed_with(srv, b"<?xml version='1.0'?>", why='not from a trusted proxy')


def test_off_by_default_a_header_is_just_bad_xml(server, conns):
    c = xr.XMPPConn.connect(server.host, server.port, domain=server.domain)
    conns.append(c)
    c.send(v1('192.0.2.7', 1))
    assert c.wait_closed(5)
    assert '192.0.2.7' not in server.log()


@pytest.mark.parametrize('value, why', [
    ('127.0.0.1/32, 10.0.0.1/8', "'10.0.0.1/8': address has bits set beyond the prefix"),
    ('10.0.0.0/33', "'10.0.0.0/33': prefix length too long"),
    ('::1/128, localhost', "'localhost': expected an IPv4 or IPv6 address"),
    ('10.0.0.0/8,', 'empty entry (a stray comma?)'),
    ('10.0.0.0/8,,::1', 'empty entry (a stray comma?)'),
])
def test_bad_trusted_proxies_names_file_line_key(tmp_path, tls_cert, value, why):
    cf.require_binaries()
    p = tmp_path / 'pp.ini'
    p.write_text('[server]\ndomain = localhost\n[c2s]\nproxy_protocol = true\n'
                 'trusted_proxies = %s\n[tls]\ncert = %s\nkey = %s\n'
                 % (value, tls_cert[0], tls_cert[1]))
    r = subprocess.run([str(cf.tetherd_path()), '-c', str(p), '--check'],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode != 0
    assert '%s:5: [c2s] trusted_proxies: %s' % (p, why) in r.stderr, r.stderr


def test_proxy_protocol_needs_trusted_proxies(tmp_path, tls_cert):
    cf.require_binaries()
    p = tmp_path / 'pp.ini'
    p.write_text('[server]\ndomain = localhost\n[c2s]\nproxy_protocol = true\n'
                 '[tls]\ncert = %s\nkey = %s\n' % tls_cert)
    r = subprocess.run([str(cf.tetherd_path()), '-c', str(p), '--check'],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode != 0
    assert 'proxy_protocol: needs [c2s] trusted_proxies' in r.stderr, r.stderr


HAPROXY_CFG = """
global
    log stdout format raw local0
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend starttls
    bind 127.0.0.1:%(fp)d
    default_backend b_starttls
frontend direct
    bind 127.0.0.1:%(ftp)d
    default_backend b_direct
backend b_starttls
    server n1 127.0.0.1:%(port)d send-proxy-v2 check check-send-proxy inter 200ms
backend b_direct
    server n1 127.0.0.1:%(tls_port)d send-proxy-v2
"""


@pytest.fixture
def haproxy(proxied, tmp_path):
    from haproxy_server import HAProxy
    fp, ftp = cf.free_port(), cf.free_port()
    hp = HAProxy(tmp_path, HAPROXY_CFG % dict(fp=fp, ftp=ftp, port=proxied.port,
                                              tls_port=proxied.tls_port), (fp, ftp))

    class Front:
        host = '127.0.0.1'
        port = fp
        tls_port = ftp
        domain = proxied.domain

        def settle_users(self):
            proxied.settle_users()
    yield Front()
    hp.stop()


@pytest.mark.parametrize('direct_tls', [False, True])
def test_through_haproxy_send_proxy_v2(proxied, haproxy, conns, direct_tls):
    import time
    c = xr.login(haproxy, 'carol', cf.USERS['carol'], 'ha', direct_tls=direct_tls)
    conns.append(c)
    client_port = c.sock.getsockname()[1]
    # The log names the client's own port, not the one HAProxy connected from.
    proxied.wait_log('c2s 127.0.0.1:%d: authenticated as carol@localhost' % client_port)
    # HAProxy's health checks (a v2 LOCAL header, then close) are not refused.
    time.sleep(0.6)
    assert 'PROXY protocol:' not in proxied.log()


def test_per_address_limit_counts_the_client_not_the_proxy(server_factory, conns):
    """Behind a proxy every socket comes from the proxy's address: the
    per-address limit must count the client each header names."""
    srv = server_factory(**{'c2s.proxy_protocol': 'true', 'c2s.trusted_proxies': '127.0.0.1/32',
                            'limits.max_conns_per_ip': 3})
    for local, pw in cf.USERS.items():
        srv.add_user(local, pw)
    srv.settle_users()
    # six clients through the one proxy address: more than the limit of 3
    for i in range(6):
        conns.append(proxy_login(srv, v2('192.0.2.%d' % (10 + i), 40000 + i)))
    # one client, four connections through the proxy: the fourth is refused
    held = []
    for i in range(3):
        s = socket.create_connection((srv.host, srv.port), timeout=5)
        s.sendall(v2('198.51.100.7', 50000 + i) + stream_open(srv))
        # the server answered the stream header, so it counted this one
        # (workers take sockets in any order: without this the fourth may
        # be counted before the third)
        assert s.recv(4096) != b'', 'connection %d of one client was closed' % (i + 1)
        held.append(s)
    fourth = socket.create_connection((srv.host, srv.port), timeout=5)
    fourth.sendall(v2('198.51.100.7', 50003))
    fourth.settimeout(5)
    assert fourth.recv(4096) == b'', 'the fourth connection of one client was not closed'
    srv.wait_log('max_conns_per_ip')
    for s in held + [fourth]:
        s.close()
