"""Several tetherd nodes on one real redis-server (AOF, appendfsync always):
XEP-0198 sessions resumed on another node than the one they began on, after
that node was killed with SIGKILL, with XEP-0397 ISR tokens used once across
nodes, through a real HAProxy, and across a Redis restart.

What this covers of the cluster issue: takeover on any node with the queue
kept in Redis (nothing lost, nothing twice), kicks through node inboxes,
and delivery to XEP-0198 sessions on other nodes (appended to their queue
in Redis, announced through the owner's inbox). Sessions without
XEP-0198 on other nodes: test_cluster_direct.py."""

import signal
import shutil
import tempfile
import time

import pytest

import conftest as cf
import sm_client as smc
import xmpp_raw as xr
from haproxy_server import HAProxy
from redis_server import RedisServer
from sasl2_client import failure_condition, isr_race, success_parts
from test_isr import detach, isr_attempt, isr_session
from xmpp_raw import q, tostr

# Every server here names its store: the TETHER_STORE=redis run skips this file.
pytestmark = pytest.mark.fixed_store

NS_SASL2 = 'urn:xmpp:sasl:2'


class Cluster:
    def __init__(self, factory, tmp_path, n=3, extra=None):
        """<extra>: more config for every node, {'section.key': value}."""
        self.dir = tempfile.mkdtemp(prefix='tether-cl-')   # short: unix socket paths
        self.redis = RedisServer(self.dir, aof=True)
        self.key = str(tmp_path / 'token.key')
        self.factory = factory
        self.extra = extra or {}
        self.nodes = {}
        for name in 'abc'[:n]:
            self.start(name)
        for user, pw in cf.USERS.items():
            self.nodes['a'].add_user(user, pw)

    def start(self, name, **extra):
        s = self.factory(backend='redis', **dict({'store.redis': self.redis.addr, 'cluster.node': name,
                                                  'tokens.key_file': self.key, 'sm.max_resume': 120},
                                                 **self.extra, **extra))
        self.nodes[name] = s
        return s

    def restart_redis(self):
        self.redis.cli('SHUTDOWN')          # AOF: fsynced on every write
        self.redis.proc.wait(10)
        self.redis = RedisServer(self.dir, aof=True)

    def close(self):
        self.redis.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster(server_factory, tmp_path):
    c = Cluster(server_factory, tmp_path)
    yield c
    c.close()


def sm_login(node, user, resource):
    return smc.sm_login(node, user, cf.USERS[user], resource)


def queue_while_detached(node, to_jid, prefix, n):
    """bob on <node> sends <n> numbered messages to <to_jid> and makes sure
    the server handled them (a ping answered after them)."""
    bob = xr.login(node, 'bob', cf.USERS['bob'], 'desk')
    try:
        for i in range(n):
            bob.message(to_jid, smc.numbered(prefix, i))
        bob.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=node.domain, timeout=10)
    finally:
        bob.close()


def assert_exactly(conn, prefix, n):
    got = conn.wait_bodies(prefix, n, timeout=15)
    conn.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to='localhost', timeout=10)
    got = conn.messages(prefix)
    assert got == [smc.numbered(prefix, i) for i in range(n)], got


def test_resume_on_another_node_gets_the_queue_once(cluster, conns):
    a, b = cluster.nodes['a'], cluster.nodes['b']
    alice = sm_login(a, 'alice', 'phone')
    jid, sid = alice.jid, alice.sm_id
    detach(a, alice)
    queue_while_detached(a, jid, 'q', 5)
    new, el = smc.sm_resume(b, 'alice', cf.USERS['alice'], sid, alice.h, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    assert_exactly(new, 'q', 5)
    owner = cluster.redis.cli('HGET', 't:{alice@localhost}:s:%s' % sid, 'owner')
    assert owner.startswith('b.'), owner


def test_resume_elsewhere_while_the_old_connection_is_open(cluster, conns):
    """The old node learns through its inbox that the session moved: its
    stream ends with <conflict/> at once, not at its next write; the new
    one on another node has everything after the client's h, once."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    alice = sm_login(a, 'alice', 'old')
    conns.append(alice)
    queue_while_detached(a, alice.jid, 'o', 6)        # sent to the open stream, not acked
    alice.wait_bodies('o', 6, timeout=10)
    claimed = alice.h_at_body(smc.numbered('o', 2))   # pretend 3..5 were lost in flight
    new, el = smc.sm_resume(b, 'alice', cf.USERS['alice'], alice.sm_id, claimed, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    got = new.wait_bodies('o', 3, timeout=10)
    assert got == [smc.numbered('o', i) for i in range(3, 6)], got
    err = alice.wait_for(q(xr.NS_STREAM, 'error'), timeout=5)
    assert xr.stream_error_condition(err) == 'conflict', tostr(err)
    assert alice.wait_closed(5), 'old connection not closed after <conflict/>'


def test_node_killed_its_sessions_resume_elsewhere(cluster, conns):
    """SIGKILL of the node holding the session, with stanzas it sent but the
    client never acknowledged: everything comes back from Redis, once, in
    order, on another node."""
    a, c = cluster.nodes['a'], cluster.nodes['c']
    alice = sm_login(a, 'alice', 'phone')
    jid, sid = alice.jid, alice.sm_id
    queue_while_detached(a, jid, 'k', 6)          # alice is attached: sent, not acked
    alice.wait_bodies('k', 6, timeout=10)
    a.stop(signal.SIGKILL)
    smc.kill(alice)
    new, el = smc.sm_resume(c, 'alice', cf.USERS['alice'], sid, 0, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    assert int(el.get('h')) == 0
    assert_exactly(new, 'k', 6)
    for i, el in enumerate(new.message_els('k')):
        assert smc.delay_of(el) is not None, tostr(el)     # XEP-0203 on retransmission


def test_isr_on_another_node(cluster):
    a, b = cluster.nodes['a'], cluster.nodes['b']
    s = isr_session(a)
    sid, token = s.sm_id, s.isr_token
    detach(a, s)
    c, el = isr_attempt(b, 'alice', token, sid, 0)
    try:
        assert el.tag == q(NS_SASL2, 'success'), tostr(el)
        parts = success_parts(el)
        assert parts['inst_resumed'] is not None, tostr(el)
    finally:
        c.close()
    # the token was used up: a second use, on a third node, fails
    c, el = isr_attempt(cluster.nodes['c'], 'alice', token, sid, 0)
    c.close()
    assert failure_condition(el) == 'not-authorized', tostr(el)


def test_one_isr_token_on_two_nodes_at_once(cluster):
    """Issue 10: one ISR token used on two nodes at once: exactly one
    <inst-resumed/>, every round."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    for rnd in range(5):
        s = isr_session(a)
        sid, token = s.sm_id, s.isr_token
        detach(a, s)
        replies = isr_race((a, b, a, b), 'alice', token, sid)
        won = [el for el in replies if el.tag == q(NS_SASL2, 'success')]
        assert len(won) == 1, 'round %d: %d resumed: %s' % (rnd, len(won), [tostr(e) for e in replies])


def test_redis_restart_keeps_sessions(cluster, conns):
    """Redis stops (SHUTDOWN) and starts again from its AOF: the nodes
    reconnect by themselves, and a session made before resumes after, on
    another node, with its queue."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    alice = sm_login(a, 'alice', 'phone')
    jid, sid = alice.jid, alice.sm_id
    detach(a, alice)
    queue_while_detached(a, jid, 'r', 3)
    cluster.restart_redis()
    deadline = time.monotonic() + 15
    while True:                                   # the nodes' links come back (back-off <= 2 s)
        try:
            new, el = smc.sm_resume(b, 'alice', cf.USERS['alice'], sid, 0, auto_ack=True)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    assert_exactly(new, 'r', 3)


HAPROXY_CFG = """
global
    maxconn 1000
    log stderr format raw local0 debug
defaults
    mode tcp
    log global
    option tcplog
    option redispatch 1
    retries 2
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend f
    bind 127.0.0.1:%(port)d
    default_backend nodes
backend nodes
    balance first
%(servers)s
"""


@pytest.fixture
def haproxy(cluster, tmp_path):
    port = cf.free_port()
    servers = '\n'.join('    server %s 127.0.0.1:%d check inter 200ms fall 1 rise 1'
                        % (name, n.port) for name, n in sorted(cluster.nodes.items()))
    hp = HAProxy(tmp_path, HAPROXY_CFG % dict(port=port, servers=servers), (port,))

    class Front:
        host = '127.0.0.1'
        domain = cf.DOMAIN

        def __init__(self):
            self.port = port

        def settle_users(self):
            pass

        def jid(self, local):
            return '%s@%s' % (local, self.domain)

        def wait_down(self, node, timeout=10):
            """Until HAProxy's health check has taken <node> out (its log
            says so): a node that has just died can still complete a
            handshake, its socket not yet closed by the kernel."""
            deadline = time.monotonic() + timeout
            while 'Server nodes/%s is DOWN' % node not in hp.logpath.read_text():
                assert time.monotonic() < deadline, 'HAProxy did not mark %s down' % node
                time.sleep(0.05)
    yield Front()
    hp.stop()


def test_through_haproxy_node_killed_resume_lands_elsewhere(cluster, haproxy, conns):
    """The client only knows the load balancer: its node dies, it reconnects
    to the same address, lands on a live node and gets its session back."""
    a = cluster.nodes['a']                        # 'balance first': a takes the first client
    alice = sm_login(haproxy, 'alice', 'phone')
    sid = alice.sm_id
    queue_while_detached(a, alice.jid, 'h', 4)
    alice.wait_bodies('h', 4, timeout=10)
    a.stop(signal.SIGKILL)
    smc.kill(alice)
    haproxy.wait_down('a')
    new, el = smc.sm_resume(haproxy, 'alice', cf.USERS['alice'], sid, 0, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    assert_exactly(new, 'h', 4)


def sm_online(node, user, resource):
    """Logged in with SM, available presence broadcast (so the directory
    says available), answering <r/> by itself."""
    c = smc.sm_login(node, user, cf.USERS[user], resource, presence=True, auto_ack=True)
    return c


def test_messages_between_nodes_both_ways_in_order_once(cluster, conns):
    a, b = cluster.nodes['a'], cluster.nodes['b']
    alice = sm_online(a, 'alice', 'phone')
    bob = sm_online(b, 'bob', 'desk')
    carol = sm_online(a, 'carol', 'tab')              # alice's neighbour on her own node
    conns.extend([alice, bob, carol])
    for i in range(40):
        bob.message(alice.jid, smc.numbered('fb', i))            # full JID, other node
        if i % 2 == 0:
            carol.message(alice.jid, smc.numbered('fc', i))       # same node, interleaved
    for i in range(10):
        alice.message('bob@localhost', smc.numbered('ba', i))     # bare JID, other node
    assert alice.wait_bodies('fb', 40, timeout=15) == [smc.numbered('fb', i) for i in range(40)]
    assert alice.wait_bodies('fc', 20, timeout=15) == [smc.numbered('fc', i) for i in range(0, 40, 2)]
    assert bob.wait_bodies('ba', 10, timeout=15) == [smc.numbered('ba', i) for i in range(10)]
    for c in (alice, bob):
        c.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to='localhost', timeout=10)
    assert len(alice.messages('fb')) == 40 and len(alice.messages('fc')) == 20   # nothing twice
    assert len(bob.messages('ba')) == 10
    # what came from the other node carries its sender, stamped by the server
    el = alice.message_els('fb')[0]
    assert el.get('from') == bob.jid, tostr(el)


def test_lost_notice_found_at_the_next_and_resumed(cluster, conns):
    """A notice that never reaches the owner's node (here: an entry appended
    behind the nodes' backs, announced to nobody) is found at the next one,
    here a batched delivery of several: the stream sees the gap, holds what
    follows it, and after a few ack timer ticks closes so the client
    resumes; the resume hands out the queue: the unannounced entry and
    those after it, in order, once."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    alice = sm_online(a, 'alice', 'phone')
    bob = sm_online(b, 'bob', 'desk')
    conns.extend([alice, bob])
    jid, sid = alice.jid, alice.sm_id
    bob.message(jid, smc.numbered('g', 0))
    assert alice.wait_bodies('g', 1, timeout=15) == [smc.numbered('g', 0)]
    stanza = ("<message xmlns='jabber:client' from='%s' to='%s' type='chat' id='g1'>"
              "<body>%s</body></message>" % (bob.jid, jid, smc.numbered('g', 1)))
    meta = b'0' + b'\0'.join(x.encode() for x in (bob.jid, jid, 'g1', 'chat')) + b'\0'
    base = 't:{alice@localhost}:'
    seq = cluster.redis.command('FCALL', 'tether_sm_append', '2', base + 's:' + sid,
                                base + 'q:' + sid, '0', stanza, '0', meta)
    assert isinstance(seq, list) and seq[0] > 1, seq
    for i in range(2, 6):
        bob.message(jid, smc.numbered('g', i))
    assert alice.wait_closed(timeout=15), 'the gap did not close the stream'
    assert alice.messages('g') == [smc.numbered('g', 0)], 'sent past the gap'
    new, el = smc.sm_resume(a, 'alice', cf.USERS['alice'], sid, alice.h, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    want = [smc.numbered('g', i) for i in range(1, 6)]
    assert new.wait_bodies('g', 5, timeout=15) == want
    new.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to='localhost', timeout=10)
    assert new.messages('g') == want


def test_message_to_a_detached_session_on_another_node_waits_in_its_queue(cluster, conns):
    """Sent from node b to alice detached on node a, then alice resumes on
    node c: the queue in Redis has it, once."""
    a, b, c = cluster.nodes['a'], cluster.nodes['b'], cluster.nodes['c']
    alice = sm_online(a, 'alice', 'phone')
    jid, sid = alice.jid, alice.sm_id
    detach(a, alice)
    bob = sm_online(b, 'bob', 'desk')
    conns.append(bob)
    for i in range(5):
        bob.message(jid, smc.numbered('d', i))
    bob.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to='localhost', timeout=10)
    assert not [e for _, e in bob.received if e.get('type') == 'error'], 'bounced'
    new, el = smc.sm_resume(c, 'alice', cf.USERS['alice'], sid, alice.h, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    assert_exactly(new, 'd', 5)


def test_message_to_nobody_online_anywhere_stored_offline(cluster, conns):
    """A message for an account with no session on any node is stored
    offline in Redis (RFC 6121 8.5.2.2, XEP-0160) and comes, delay-stamped,
    at its first available presence, on another node; one for an account
    that does not exist bounces service-unavailable."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    bob = sm_online(b, 'bob', 'desk')
    conns.append(bob)
    bob.message('carol@localhost/nowhere', 'hello?', id_='x1')
    bob.message('nobody@localhost', 'anyone?', id_='x2')
    err = bob.wait_for(lambda e: e.tag == q(xr.NS_CLIENT, 'message') and e.get('type') == 'error',
                       timeout=10, what='bounce')
    assert err.get('id') == 'x2' and xr.stanza_error(err)[1] == 'service-unavailable', tostr(err)
    assert bob.maybe(lambda e: e.tag == q(xr.NS_CLIENT, 'message') and e.get('type') == 'error',
                     0.5) is None
    carol = sm_online(a, 'carol', 'tab')
    conns.append(carol)
    m = carol.wait_message('hello?', timeout=10)
    assert m.find(q('urn:xmpp:delay', 'delay')) is not None, tostr(m)


def test_sigterm_drains_sessions_resume_on_other_nodes(cluster, conns):
    """SIGTERM on a Redis node (issue 13, drain): the node stops accepting,
    closes its clients' connections without ending their sessions (no
    </stream:stream>, no system-shutdown), exits 0 within drain_timeout,
    and every session resumes on another node with all it had, once."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    users = ['alice', 'bob', 'carol']
    sess = [sm_login(a, u, 'r%d' % i) for i, u in enumerate(users)]
    for s in sess:
        queue_while_detached(a, s.jid, 'z', 3)          # sent, not acked
        s.wait_bodies('z', 3, timeout=10)
    t0 = time.monotonic()
    assert a.stop(signal.SIGTERM, timeout=15) == 0
    assert time.monotonic() - t0 < 10.5
    for s in sess:
        s.pump(0.2)
        assert not s.stream_errors(), [tostr(e) for e in s.stream_errors()]
    for u, s in zip(users, sess):
        new, el = smc.sm_resume(b, u, cf.USERS[u], s.sm_id, 0, auto_ack=True)
        conns.append(new)
        assert xr.local(el.tag) == 'resumed', tostr(el)
        assert_exactly(new, 'z', 3)


def _stamp_s(m):
    """The XEP-0203 stamp of message <m>, in Unix seconds."""
    import calendar
    d = m.findall(q('urn:xmpp:delay', 'delay'))
    assert len(d) == 1, tostr(m)
    day, ms = d[0].get('stamp').rstrip('Z').split('.')
    return calendar.timegm(time.strptime(day, '%Y-%m-%dT%H:%M:%S')) + int(ms) / 1000.0


def test_dead_nodes_sessions_are_reaped_and_their_messages_stored_offline(cluster, conns):
    """kill -9 of a node: once its lease lapses (5 s) the reaper (one node,
    by lease) detaches its sessions, resumable for their window; past it,
    removes them. What they never acknowledged goes to another resource, or,
    with none, to offline storage as on one node (RFC 6121 §8.5.2.2,
    XEP-0160), with the stamp of its queueing (XEP-0203): nothing bounces."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    alice = smc.sm_login(a, 'alice', cf.USERS['alice'], 'phone', max_=2)
    sid = alice.sm_id
    bob = sm_online(b, 'bob', 'desk')
    conns.append(bob)
    sent = time.time()
    for i in range(2):
        bob.message(alice.jid, smc.numbered('x', i), id_='x%d' % i)
    alice.wait_bodies('x', 2, timeout=10)            # sent to her, never acked
    a.stop(signal.SIGKILL)
    smc.kill(alice)
    killed = time.time()
    deadline = time.monotonic() + 25
    key = 't:{alice@localhost}:s:%s' % sid
    while cluster.redis.cli('EXISTS', key).strip() == '1' and time.monotonic() < deadline:
        time.sleep(0.3)
    assert cluster.redis.cli('EXISTS', key).strip() == '0', 'not reaped'
    assert bob.maybe(lambda e: e.get('type') == 'error', 1.0) is None, 'bounced'
    back = xr.login(b, 'alice', cf.USERS['alice'], 'back', presence=True)
    conns.append(back)
    for i in range(2):
        m = back.wait_message(smc.numbered('x', i), 10)
        assert m.get('from') == bob.jid, tostr(m)
        assert sent - 1 <= _stamp_s(m) <= killed + 1, tostr(m)   # not the reap's time
    new, el = smc.sm_resume(b, 'alice', cf.USERS['alice'], sid, 0)
    conns.append(new)
    assert xr.local(el.tag) == 'failed', tostr(el)


def test_reaped_session_goes_unavailable_for_contacts_and_own_resources(cluster, conns):
    """kill -9 of the node of an available session: when the reaper removes
    it (lease lapsed, then its resumption window), its contacts with a From
    subscription and the account's other resources, on other nodes, get its
    unavailable presence, as at the end of a session on one node (RFC 6121
    §4.5.2)."""
    from test_im import roster_get, subscribe_both
    a, b, c = cluster.nodes['a'], cluster.nodes['b'], cluster.nodes['c']
    alice = smc.sm_login(a, 'alice', cf.USERS['alice'], 'phone', max_=2, presence=True,
                         auto_ack=True)
    bob = sm_online(b, 'bob', 'desk')
    desk = sm_online(c, 'alice', 'desk')
    conns.extend([bob, desk])
    roster_get(alice)
    roster_get(bob)
    subscribe_both(alice, bob)
    alice.presence()                                  # again, now that bob is subscribed
    bob.wait_presence(from_=alice.jid, timeout=10)
    unavailable = lambda e: (e.tag == q(xr.NS_CLIENT, 'presence') and
                             e.get('from') == alice.jid and e.get('type') == 'unavailable')
    a.stop(signal.SIGKILL)
    smc.kill(alice)
    # the lease lapses after 5 s, the window (2 s) after that
    bob.wait_for(unavailable, timeout=25, what='alice unavailable on bob')
    desk.wait_for(unavailable, timeout=5, what='alice/phone unavailable on alice/desk')


def test_own_presence_between_nodes(cluster, conns):
    """A user's resources on two nodes see each other's presence, and the
    unavailable presence when one goes (RFC 6121 §4.2, §4.5, between XEP-0198
    sessions on different nodes)."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    phone = sm_online(a, 'alice', 'phone')
    desk = sm_online(b, 'alice', 'desk')
    conns.extend([phone, desk])
    phone.send("<presence><priority>1</priority></presence>")   # again, now that desk is on
    pres = lambda frm, typ: (lambda e: e.tag == q(xr.NS_CLIENT, 'presence') and
                             e.get('from') == frm and e.get('type') == typ)
    desk.wait_for(pres(phone.jid, None), timeout=10, what='phone presence on desk')
    desk.close()
    phone.wait_for(pres(desk.jid, 'unavailable'), timeout=10, what='desk unavailable on phone')


def test_same_resource_on_another_node_wins(cluster, conns):
    """Binding a resource that a session on another node holds: the newer
    bind wins, the older stream gets conflict (RFC 6120 §7.7.2.2)."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    old = sm_online(a, 'alice', 'phone')
    conns.append(old)
    new = sm_online(b, 'alice', 'phone')
    conns.append(new)
    err = old.wait_for(q(xr.NS_STREAM, 'error'), timeout=10)
    assert xr.stream_error_condition(err) == 'conflict', tostr(err)
    assert not new.stream_errors()


def test_same_user_agent_on_another_node_wins(cluster, conns):
    """Bind2 (XEP-0386): a second login of one user agent (same id, same
    tag) on another node gets the same resource (its suffix is keyed by the
    cluster's shared token key), so the older stream, on the first node,
    gets conflict."""
    from sasl2_client import new_ua_id, sasl2_login
    a, b = cluster.nodes['a'], cluster.nodes['b']
    ua = new_ua_id()
    old, _ = sasl2_login(a, 'alice', cf.USERS['alice'], ua_id=ua, tag='app')
    conns.append(old)
    old.wait_for(q(xr.NS_STREAM, 'features'))
    old.roundtrip()
    new, _ = sasl2_login(b, 'alice', cf.USERS['alice'], ua_id=ua, tag='app')
    conns.append(new)
    assert new.jid == old.jid
    assert old.expect_stream_error() == 'conflict'
    new.wait_for(q(xr.NS_STREAM, 'features'))
    new.roundtrip()


def _tls_hello(ctx, node, session=None):
    """Direct TLS to <node>, a stream header, its features read (TLS 1.3
    tickets come with them); returns (session, reused)."""
    import socket
    import ssl  # noqa: F401
    raw = socket.create_connection((node.host, node.tls_port), timeout=5)
    t = ctx.wrap_socket(raw, server_hostname='localhost', session=session)
    try:
        t.sendall(b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
                  b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
        got = b''
        while b'</stream:features>' not in got:
            chunk = t.recv(4096)
            if not chunk:
                break
            got += chunk
        return t.session, t.session_reused
    finally:
        t.close()


def test_tls_ticket_from_one_node_resumes_on_another(cluster):
    """The nodes share their TLS ticket keys through Redis (sealed with the
    cluster's token key): a ticket from node a resumes TLS on node b, so a
    client moving between nodes pays no full handshake."""
    import ssl
    a, b = cluster.nodes['a'], cluster.nodes['b']
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 10
    while True:                          # the shared ring arrives within a tick (1 s)
        sess, _ = _tls_hello(ctx, a)
        _, reused = _tls_hello(ctx, b, sess)
        if reused or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert reused, 'a ticket from node a did not resume TLS on node b'
    ring = cluster.redis.command('HMGET', 't:{cluster}:tickets', 'next', 'cur', 'prev')
    assert all(len(k) == 24 + 16 + 48 for k in ring), ring   # sealed, never in the clear


def test_tetherctl_sessions_kick_drain(cluster, conns):
    """tetherctl through the store (issue 13): list an account's sessions
    with their node, kick one resource (its node ends it), drain a node."""
    a, b = cluster.nodes['a'], cluster.nodes['b']
    phone = sm_online(a, 'alice', 'phone')
    desk = sm_online(b, 'alice', 'desk')
    conns.extend([phone, desk])
    out = a.ctl('sessions', 'alice@localhost').stdout
    lines = sorted(l.split('\t') for l in out.strip().split('\n'))
    assert [(l[0], l[2].split('.')[0], l[3]) for l in lines] == \
        [('desk', 'b', 'attached'), ('phone', 'a', 'attached')], out
    r = b.ctl('kick', 'alice@localhost/phone')              # from any node's config
    assert '1 session(s)' in r.stderr, r.stderr
    err = phone.wait_for(q(xr.NS_STREAM, 'error'), timeout=10)
    assert xr.stream_error_condition(err) == 'policy-violation', tostr(err)
    assert not desk.stream_errors()
    a.ctl('drain', 'b')
    assert b.proc.wait(15) == 0, b.log()[-2000:]
    b.stop(signal.SIGTERM)          # already gone: tells the fixture it was on purpose
    new, el = smc.sm_resume(a, 'alice', cf.USERS['alice'], desk.sm_id, desk.h, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)   # drained, not ended


def test_tetherctl_sessions_needs_a_shared_store(server_factory):
    server = server_factory(backend='memory')
    r = server.ctl('sessions', 'alice@localhost', check=False)
    assert r.returncode == 1 and 'backend = redis' in r.stderr, r.stderr


def test_roster_pushes_presence_and_probes_cross_nodes(cluster, conns):
    """RFC 6121 across nodes: a roster change made on one node is pushed to
    the account's resource on another; a subscription between users on
    two nodes; a contact who logs in later on a third node gets the
    account's presence through the probe its initial presence sends."""
    from test_im import roster_get, roster_set, subscribe_both, wait_push
    a, b, c = cluster.nodes['a'], cluster.nodes['b'], cluster.nodes['c']
    phone = sm_online(a, 'alice', 'phone')
    desk = sm_online(c, 'alice', 'desk')
    bob = sm_online(b, 'bob', 'desk')
    conns.extend([phone, desk, bob])
    for x in (phone, desk, bob):
        roster_get(x)
    r = roster_set(phone, "<item jid='carol@localhost' name='Carol'/>")
    assert r.get('type') == 'result', tostr(r)
    wait_push(desk, 'carol@localhost')                # pushed on node c
    subscribe_both(phone, bob)
    phone.presence()
    bob.wait_presence(from_=phone.jid, timeout=10)    # broadcast to node b
    bob.close()
    later = sm_online(c, 'bob', 'laptop')             # probes from node c
    conns.append(later)
    later.wait_presence(from_=phone.jid, timeout=10)


def test_takeover_metrics_tell_a_dead_owner_from_a_live_one(cluster, conns):
    """tether_session_takeovers_total says whether the node that held the
    session was alive (it is told to let go) or dead (its lease lapsed:
    nothing is sent to it), for the operator to tell a node crash from
    clients roaming."""
    from test_metrics import get, metric
    port = cf.free_port()
    d = cluster.start('d', **{'admin.listen': '127.0.0.1:%d' % port})
    a, b = cluster.nodes['a'], cluster.nodes['b']
    take = 'tether_session_takeovers_total{previous="%s",node="other",owner="%s"}'
    before = get(port, '/metrics')[2]
    alice = sm_login(a, 'alice', 'live')
    conns.append(alice)
    new, el = smc.sm_resume(d, 'alice', cf.USERS['alice'], alice.sm_id, 0, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    assert alice.wait_closed(5), 'the live owner did not let go'
    bob = sm_login(b, 'bob', 'dead')
    b.stop(signal.SIGKILL)
    smc.kill(bob)
    lease = 't:{node:b}:lease'
    deadline = time.monotonic() + 15
    while cluster.redis.cli('EXISTS', lease).strip() == '1' and time.monotonic() < deadline:
        time.sleep(0.3)
    new, el = smc.sm_resume(d, 'bob', cf.USERS['bob'], bob.sm_id, 0, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    after = get(port, '/metrics')[2]

    def delta(prev, owner):
        return metric(after, take % (prev, owner)) - metric(before, take % (prev, owner))
    assert delta('attached', 'live') == 1
    assert delta('attached', 'dead') + delta('detached', 'dead') == 1   # the reaper may detach first
    assert delta('detached', 'live') == 0
