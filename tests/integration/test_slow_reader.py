"""A receiver without XEP-0198 that reads slowly (issue: hardening, item 3):
a burst from someone else must never end its connection. The senders are
slowed down; what still arrives past half of max_send_queue goes back to its
sender with resource-constraint; nothing is lost in silence, and only the
receiver's own failure to read (past ack_timeout) ends its stream. A canary
keeps pinging, and the server's RSS is watched."""

import socket
import time

import conftest as cf
import xmpp_raw as xr
from xmpp_raw import NS_CLIENT, q
from test_parser_memory import rss, sanitized

MiB = 1 << 20
SEND_QUEUE = 1 << 20         # [limits] max_send_queue: congested past 256 KiB, bounces past 512 KiB
BODY = 4000
COUNT = 150                  # 150 x ~4 KB = 600 KB in one burst


def slow_server(server_factory, **more):
    srv = server_factory(**{'limits.max_send_queue': SEND_QUEUE, 'limits.max_stanza_size': 65536,
                            'sm.max_queue_bytes': SEND_QUEUE // 2},
                         **more)
    for local, pw in cf.USERS.items():
        srv.add_user(local, pw)
    srv.settle_users()
    return srv


def small_window(conn):
    """The receiver's TCP window stays small, so what it does not read stays
    in the server's queue rather than in the kernel's buffers."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)


def burst(to, n, tag):
    return ''.join("<message to='%s' id='%s%d' type='chat'><body>%s%05d %s</body></message>"
                   % (to, tag, i, tag, i, 'x' * BODY) for i in range(n)).encode()


def body_no(el, tag):
    b = el.find(q(NS_CLIENT, 'body'))
    if b is None or not (b.text or '').startswith(tag):
        return None
    return int(b.text[len(tag):len(tag) + 5])


def drain_messages(conn, tag, want, timeout):
    """Reads <conn> (slowly enough to be a real reader) until <want> numbered
    messages (or errors) of <tag> came; returns their numbers in order."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        conn.pump(0.2)
        for el in list(conn.inbox):
            if el.tag == q(NS_CLIENT, 'message'):
                n = body_no(el, tag)
                if n is None and el.get('type') == 'error' and (el.get('id') or '').startswith(tag):
                    n = int(el.get('id')[len(tag):])
                if n is not None:
                    got.append(n)
                    conn.inbox.remove(el)
    return got


def ping(conn, srv):
    t0 = time.monotonic()
    r = conn.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=srv.domain)
    assert r.get('type') == 'result'
    return time.monotonic() - t0


def test_burst_to_a_slow_reader_without_sm_ends_nobody(server_factory, conns):
    srv = slow_server(server_factory)
    bob = xr.login(srv, 'bob', cf.USERS['bob'], 'slow', presence=False)
    conns.append(bob)
    small_window(bob)
    alice = xr.login(srv, 'alice', cf.USERS['alice'], 'burst', presence=False)
    conns.append(alice)
    carol = xr.login(srv, 'carol', cf.USERS['carol'], 'canary', presence=False)
    conns.append(carol)
    before, worst, peak = rss(srv), 0.0, 0
    # one burst: the kernel's buffers take it at once, the server reads it
    # as fast as flow control lets it
    alice.sock.settimeout(30)
    alice.sock.sendall(burst(bob.jid, COUNT, 'm'))
    got, bounced = [], []
    # bob reads nothing for 3 s; alice reads her bounces; the canary pings
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        bounced += drain_messages(alice, 'm', COUNT, 0.1)
        worst, peak = max(worst, ping(carol, srv)), max(peak, rss(srv))
    # then bob reads, through his small window
    deadline = time.monotonic() + 90
    while len(got) + len(bounced) < COUNT and time.monotonic() < deadline:
        got += drain_messages(bob, 'm', COUNT, 0.3)
        bounced += drain_messages(alice, 'm', COUNT, 0.05)
        worst, peak = max(worst, ping(carol, srv)), max(peak, rss(srv))
    assert not bob.eof and not bob.stream_ended, 'the slow reader was cut off by a burst'
    assert not alice.eof, 'the sender was cut off'
    assert got == sorted(got), 'delivered out of order'
    assert len(set(got)) == len(got), 'delivered twice'
    assert not set(got) & set(bounced), 'both delivered and bounced'
    assert sorted(got + bounced) == list(range(COUNT)), \
        'lost without a word: %s' % sorted(set(range(COUNT)) - set(got + bounced))[:20]
    assert worst < 1.0, 'canary waited %.2f s' % worst
    if not sanitized():
        assert peak - before < 100 * MiB, 'RSS grew %d MiB' % ((peak - before) // MiB)
    xr.message_roundtrip(alice, bob)
    print('slow reader: %d delivered, %d bounced, canary worst %.3f s, RSS +%.1f MiB'
          % (len(got), len(bounced), worst, (peak - before) / MiB))


def test_a_receiver_that_never_reads_is_closed_after_ack_timeout(server_factory, conns):
    srv = slow_server(server_factory, **{'sm.ack_timeout': 2})
    bob = xr.login(srv, 'bob', cf.USERS['bob'], 'deaf', presence=False)
    conns.append(bob)
    small_window(bob)
    alice = xr.login(srv, 'alice', cf.USERS['alice'], 'burst', presence=False)
    conns.append(alice)
    alice.sock.settimeout(30)
    alice.sock.sendall(burst(bob.jid, 1400, 'd'))  # 5.6 MB: more than the kernel's buffers take (tcp_wmem: 4 MB)
    alice.roundtrip(30)
    srv.wait_log('output not read for too long', 15)  # the stream error's text, logged
    assert not alice.eof, 'the sender was cut off'
    alice.roundtrip()
