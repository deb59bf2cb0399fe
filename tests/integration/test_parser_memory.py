"""What a client can make the XML parser hold (issue: hardening, items 1 and 2).
Each test watches the server's RSS (/proc/PID/status) and keeps a canary
session logged in and pinging: the canary must never wait more than 1 s."""

import socket
import subprocess
import threading
import time

import xmpp_raw as xr
from conftest import tetherd_path

MiB = 1 << 20


def sanitized():
    """ASan holds freed memory in its quarantine (and never hands it back),
    so RSS says nothing about what the parser holds there: the release
    build checks the bounds, the ASan build checks the rest."""
    out = subprocess.run(['nm', '-D', str(tetherd_path())], capture_output=True, text=True).stdout
    return '__asan_init' in out


def rss(server):
    for line in open('/proc/%d/status' % server.pid):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
    raise AssertionError('no VmRSS for pid %d' % server.pid)


class Canary:
    """Pings the server from a logged-in session until stopped; records the
    slowest round trip and the highest RSS seen meanwhile."""

    def __init__(self, server, conn):
        self.server, self.conn = server, conn
        self.worst = 0.0
        self.peak = rss(server)
        self.done = threading.Event()

    def run_while(self, attack):
        t = threading.Thread(target=attack, daemon=True)
        t.start()
        while t.is_alive():
            t0 = time.monotonic()
            r = self.conn.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=self.server.domain)
            assert r.get('type') == 'result'
            self.worst = max(self.worst, time.monotonic() - t0)
            self.peak = max(self.peak, rss(self.server))
            time.sleep(0.05)
        t.join()


def default_limits(server_factory):
    """A server with the default stanza limits (the suite's is 64 KiB) and users."""
    from conftest import USERS
    # 400 connections from one address: above max_conns_per_ip's default
    server = server_factory(**{'limits.max_stanza_size': 262144, 'limits.max_conns_per_ip': 1000})
    for local, pw in USERS.items():
        server.add_user(local, pw)
    server.settle_users()
    return server, dict(USERS)


def _send_all(sock, data):
    """Sends until done or the server closed; returns the bytes sent."""
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:sent + 65536])
    except OSError:
        pass
    return sent


def test_preauth_unfinished_elements_are_bounded(server_factory, conns):
    """400 plaintext connections, each an unfinished element of ~63k empty
    children (255 KiB), then a 255 KiB header of namespace declarations:
    before the fix 400 held 2.4 GB for the 30 s pre-auth timeout."""
    server, users = default_limits(server_factory)
    canary = xr.login(server, 'alice', users['alice'], 'canary')
    conns.append(canary)
    c = Canary(server, canary)
    base = rss(server)
    children = ("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
                "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                "<message>" + "<a/>" * 63000).encode()
    header = ("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
              "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' " +
              ' '.join("xmlns:p%d='urn:x:%d'" % (i, i) for i in range(9000))).encode()
    socks = []
    sent = []

    def attack():
        for i in range(400):
            s = socket.create_connection((server.host, server.port))
            s.settimeout(2)
            socks.append(s)
            sent.append(_send_all(s, children if i % 2 == 0 else header))

    try:
        c.run_while(attack)
        time.sleep(0.5)
        c.peak = max(c.peak, rss(server))
        grow = c.peak - base
        print('preauth: RSS +%.1f MiB, canary worst %.3f s' % (grow / MiB, c.worst))
        assert sanitized() or grow < 200 * MiB, 'RSS grew by %.0f MiB' % (grow / MiB)
        assert c.worst < 1.0, 'canary waited %.2f s' % c.worst
        # refused at the pre-auth limit (16 KiB), long before 255 KiB
        assert max(sent) < 255 * 1024, 'the server read a whole 255 KiB pre-auth element'
        closed = 0
        for s in socks:
            try:
                s.settimeout(2)
                data = b''
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                closed += b'policy-violation' in data
            except OSError:
                pass
        assert closed >= 390, 'only %d of 400 connections got policy-violation' % closed
    finally:
        for s in socks:
            s.close()


def test_never_seen_names_after_auth_are_bounded(server_factory, conns):
    """An authenticated session sends 24 MB of elements with never-seen names
    (iq results, which get no answer): expat's name pool used to grow 6-9
    bytes per byte sent, for the life of the parser."""
    server, users = default_limits(server_factory)
    canary = xr.login(server, 'alice', users['alice'], 'canary')
    conns.append(canary)
    attacker = xr.login(server, 'bob', users['bob'], 'names', presence=False)
    conns.append(attacker)
    attacker.sock.settimeout(120)   # a partial TLS write must not be retried with other data
    c = Canary(server, canary)
    base = rss(server)
    total = 24 * MiB

    def attack():
        sent = i = 0
        while sent < total:
            chunk = ''.join("<iq type='result' id='r' to='localhost'><n%d xmlns='urn:n:%d' "
                            "a%d='v'/></iq>" % (k, k, k) for k in range(i, i + 2000)).encode()
            attacker.sock.sendall(chunk)
            sent += len(chunk)
            i += 2000

    c.run_while(attack)
    # the attacker's stream is still fine afterwards
    r = attacker.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=server.domain, timeout=30)
    assert r.get('type') == 'result'
    c.peak = max(c.peak, rss(server))      # everything sent has been parsed by now
    grow = c.peak - base
    print('names: RSS +%.1f MiB, canary worst %.3f s' % (grow / MiB, c.worst))
    assert sanitized() or grow < 24 * MiB, \
        'RSS grew by %.0f MiB for %d MiB of names' % (grow / MiB, total // MiB)
    assert c.worst < 1.0, 'canary waited %.2f s' % c.worst


def test_memory_handed_back_after_a_burst(server_factory, conns):
    """Item 9: memory is returned to the system after a burst ends, even
    when no session goes idle (an idle stream's trim used to be the only
    occasion). 40 sessions each send themselves 300 messages of 4 KB at
    once and read them only afterwards (the server queues ~48 MB meanwhile,
    interleaved on the workers' heaps), then keep pinging (never idle for
    C2S_TRIM_MS). RSS then must be where it gets when every session goes
    idle and the heap is trimmed for that reason: the floor, which also
    holds what a burst leaves for good (the workers' receive-buffer rings,
    touched page by page). On this workload glibc gives most pages back by
    itself (the queues are big buffers at the top of the heap), so this
    guards the outcome; the worker's trim at a burst's end (worker.c
    watch_load) is for heaps whose top is pinned."""
    if sanitized():
        return  # ASan's allocator keeps what is freed: nothing to measure
    server, users = default_limits(server_factory)
    sess = []
    for i in range(40):
        user = 'alice' if i % 2 else 'bob'
        c = xr.login(server, user, users[user], 'burst%d' % i, presence=False)
        c.sock.settimeout(60)
        conns.append(c)
        sess.append(c)
    body = 'x' * 4000
    peak = rss(server)
    for c in sess:
        c.send(''.join("<message to='%s' id='b%d'><body>%s</body></message>" % (c.jid, k, body)
                       for k in range(300)))
    for c in sess:
        c.roundtrip(timeout=60)     # reads (and drops) its 300 messages on the way
        c.inbox.clear()
        peak = max(peak, rss(server))
    # Busy, never idle: every session pings every ~0.1 s for 2.5 s.
    t_end = time.monotonic() + 2.5
    while time.monotonic() < t_end:
        for c in sess:
            c.roundtrip()
        time.sleep(0.05)
    busy = rss(server)
    time.sleep(1.5)                 # now idle: parsers dropped, heap trimmed
    for c in sess:
        c.roundtrip()
    floor = rss(server)
    print('burst: RSS peak %.1f, busy after %.1f, idle floor %.1f MiB' % (
        peak / MiB, busy / MiB, floor / MiB))
    assert peak - floor > 4 * MiB, 'the burst did not grow the heap: nothing measured'
    assert busy - floor < max(MiB, (peak - floor) / 5), \
        'RSS %.1f MiB above the idle floor 2.5 s after the burst (peak +%.1f)' % (
            (busy - floor) / MiB, (peak - floor) / MiB)
