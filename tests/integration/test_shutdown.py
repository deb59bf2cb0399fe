"""SIGTERM: every open stream gets <system-shutdown/> + </stream:stream>, exit 0."""

import signal
import subprocess
import time

import xmpp_raw as xr
from xmpp_raw import NS_STREAM, q


def test_sigterm_sends_system_shutdown(server, users, conns):
    a = xr.login(server, 'alice', users['alice'], 'sd')
    b = xr.login(server, 'bob', users['bob'], 'sd', direct_tls=True)
    pre = xr.XMPPConn.connect(server.host, server.port)   # a stream that is not logged in
    conns.extend([a, b, pre])
    pre.open_stream()
    xr.message_roundtrip(a, b)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for c in (a, b, pre):
        err = c.wait_for(q(NS_STREAM, 'error'), timeout=10)
        assert xr.stream_error_condition(err) == 'system-shutdown', xr.tostr(err)
        deadline = time.monotonic() + 5
        while not c.stream_ended and not c.eof and time.monotonic() < deadline:
            c.pump(0.2)
        assert c.stream_ended, '<system-shutdown/> not followed by </stream:stream>: %r' % c.raw[-500:]
        c.send_quiet('</stream:stream>')     # complete the closing handshake
    for c in (a, b, pre):
        assert c.wait_closed(10), 'connection not closed after shutdown'
    try:
        rc = server.proc.wait(max(0.1, 10 - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        raise AssertionError('tetherd still running 10s after SIGTERM')
    server.stopped_with = signal.SIGTERM
    assert rc == 0, 'exit code %s after SIGTERM' % rc


def test_sigterm_with_silent_clients(server, users, conns):
    """Clients that never answer </stream:stream> must not keep the server alive."""
    a = xr.login(server, 'alice', users['alice'], 'mute')
    conns.append(a)
    raw = xr.XMPPConn.connect(server.host, server.tls_port, direct_tls=True)  # TLS, no stream yet
    conns.append(raw)
    rc = server.stop(signal.SIGTERM, timeout=15)
    assert rc == 0, 'exit code %s after SIGTERM' % rc
    a.pump(1)
    err = [e for e in a.inbox if e.tag == q(NS_STREAM, 'error')]
    assert err and xr.stream_error_condition(err[0]) == 'system-shutdown', a.raw[-500:]
    assert a.eof or a.wait_closed(2)


def test_sigterm_idle_server(server):
    rc = server.stop(signal.SIGTERM, timeout=10)
    assert rc == 0


def test_restart_on_the_same_ports_accepts_every_connection(server_factory):
    """A tetherd started on the ports of one that just exited answers every
    connection. The old one's listeners (SO_REUSEPORT, one per worker, each
    with a multishot accept in flight) must leave the port's group when it
    stops: the kernel may drop a ring's last hold on them after the
    process is gone, and until then a new process shares its connections
    with listeners nobody serves (clients got connection resets)."""
    srv = server_factory(**{'server.workers': 2})
    for round_ in range(3):
        held = [xr.XMPPConn.connect(srv.host, srv.tls_port, direct_tls=True) for _ in range(90)]
        assert srv.stop(signal.SIGTERM, timeout=10) == 0
        for c in held:
            c.close()
        srv = server_factory(ports=(srv.port, srv.tls_port), **{'server.workers': 2})
        for i in range(40):
            c = xr.XMPPConn.connect(srv.host, srv.port if i % 2 else srv.tls_port, direct_tls=not i % 2)
            try:
                c.open_stream()
                assert c.features is not None, 'round %d, connection %d: no features' % (round_, i)
            finally:
                c.close()
