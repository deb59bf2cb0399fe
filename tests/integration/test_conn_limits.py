"""[limits] max_conns_per_ip and max_preauth_conns (issue 11, item 5).

One address holds its maximum of idle sockets; the next one from it is
closed at accept, before TLS, without a byte; a login from another loopback
address (127.0.0.2: the client socket is bound to it) still works at once;
closing some lets the address in again; /metrics counts the hits and the
log has one line a second at most per limit. The same for the process-wide
count of unauthenticated connections, which authenticated ones leave."""

import socket
import time

import xmpp_raw as xr
from conftest import USERS, free_port
from test_metrics import get, metric

HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
          b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")


def limited_server(server_factory, **limits):
    port = free_port()
    overrides = {'admin.listen': '127.0.0.1:%d' % port}
    overrides.update({'limits.%s' % k: v for k, v in limits.items()})
    srv = server_factory(**overrides)
    for local, pw in USERS.items():
        srv.add_user(local, pw)
    srv.settle_users()
    srv.admin_port = port
    return srv


def connect_from(server, src, port=None):
    port = port or server.port
    s = socket.create_connection((server.host, port), timeout=5, source_address=(src, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def hold(server, src, n):
    """<n> idle sockets from <src>, each known to be accepted (the server
    answered its stream header), so later ones cannot overtake them on
    another worker."""
    socks = []
    for _ in range(n):
        s = connect_from(server, src)
        s.sendall(HEADER)
        assert s.recv(4096), 'an idle socket under the limit got no stream header'
        socks.append(s)
    return socks


def assert_refused(server, src):
    """The connection is closed at once, without a byte from the server."""
    s = connect_from(server, src)
    s.settimeout(3)
    t0 = time.monotonic()
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        data = b''
    except socket.timeout:
        raise AssertionError('a connection over the limit from %s was kept open' % src)
    finally:
        s.close()
    assert data == b'', 'the server wrote %r to a refused connection' % data[:100]
    assert time.monotonic() - t0 < 1.0


def assert_accepted(server, src, timeout=3.0):
    """Connects from <src> until the server answers (closed sockets are
    released asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        s = connect_from(server, src)
        try:
            s.sendall(HEADER)
            if s.recv(4096):
                return
        except OSError:
            pass
        finally:
            s.close()
        assert time.monotonic() < deadline, '%s could not connect again' % src
        time.sleep(0.05)


def login_from(server, src, user='alice'):
    """A full login (STARTTLS, SCRAM, bind) from <src>; returns (conn, seconds)."""
    t0 = time.monotonic()
    sock = connect_from(server, src)
    c = xr.XMPPConn(sock, server.host, server.port, server.domain, xr.DEFAULT_TIMEOUT)
    c.open_stream()
    c.starttls()
    ok, cond = c.authenticate(user, USERS[user])
    assert ok, cond
    c.open_stream()
    assert c.bind().get('type') == 'result'
    return c, time.monotonic() - t0


def hits(server, limit):
    _, _, text = get(server.admin_port, '/metrics')
    return metric(text, 'tether_limit_hits_total{limit="%s"}' % limit)


def test_max_conns_per_ip(server_factory, conns):
    srv = limited_server(server_factory, max_conns_per_ip=20)
    held = hold(srv, '127.0.0.1', 20)
    try:
        for _ in range(5):
            assert_refused(srv, '127.0.0.1')
        assert hits(srv, 'max_conns_per_ip') == 5
        # Someone else is not affected.
        c, took = login_from(srv, '127.0.0.2')
        conns.append(c)
        assert took < 2.0, 'login from another address took %.2f s' % took
        c.roundtrip()
        # Closing some lets the address in again.
        for s in held[:5]:
            s.close()
        del held[:5]
        assert_accepted(srv, '127.0.0.1')
    finally:
        for s in held:
            s.close()
    # Five refusals within a second: one log line.
    log = srv.wait_log('over max_conns_per_ip (20)')
    assert log.count('over max_conns_per_ip') <= 2, log[-3000:]


def test_max_preauth_conns(server_factory, conns):
    srv = limited_server(server_factory, max_preauth_conns=10)
    # Authenticated streams leave the pre-auth count.
    for user in ('alice', 'bob'):
        c, _ = login_from(srv, '127.0.0.1', user)
        conns.append(c)
    held = hold(srv, '127.0.0.1', 10)
    try:
        assert_refused(srv, '127.0.0.1')
        assert_refused(srv, '127.0.0.3')    # a total: any address
        assert hits(srv, 'max_preauth_conns') == 2
        assert hits(srv, 'max_conns_per_ip') == 0
        for s in held[:2]:
            s.close()
        del held[:2]
        deadline = time.monotonic() + 3
        while True:                         # the closes are seen asynchronously
            try:
                c, took = login_from(srv, '127.0.0.2', 'carol')
                break
            except (AssertionError, OSError, xr.StreamClosed):
                assert time.monotonic() < deadline, 'no login after closing pre-auth sockets'
                time.sleep(0.05)
        conns.append(c)
        assert took < 2.0
        # carol is authenticated now: both closed slots are free again.
        held += hold(srv, '127.0.0.1', 2)
        assert_refused(srv, '127.0.0.1')
    finally:
        for s in held:
            s.close()
    srv.wait_log('over max_preauth_conns (10)')
