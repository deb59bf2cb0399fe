"""A real C client: libstrophe 0.12 (Debian libstrophe-dev), the XMPP
library of profanity, through tests/integration/strophe_client.c (built by
`make` as $TETHER_BUILD/strophe_client).

libstrophe logs in (STARTTLS or direct TLS, SASL, bind, XEP-0198 on by
default) and chats with a raw client; then its socket is cut (no
</stream:stream>), messages arrive for it while it is away, and it
reconnects with its own stream-management state: the session resumes,
with the h it had, and everything sent to it while away arrives once and
in order."""

import queue
import re
import signal
import subprocess
import threading

import pytest

import conftest as cf
import xmpp_raw as xr
from sm_client import sm_overrides
from test_cluster import cluster, haproxy  # noqa: F401  (fixtures)

TIMEOUT = 15


def client_path():
    p = cf.build_dir() / 'strophe_client'
    if not p.exists():
        pytest.skip('%s not built (make builds it when libstrophe-dev is installed)' % p)
    return p


class Strophe:
    """The client process; its event lines are read by a thread."""

    def __init__(self, server, user, resource, peer, log_dir, direct_tls=False):
        jid = '%s@%s/%s' % (user, server.domain, resource)
        self.err_path = log_dir / ('strophe-%s.log' % resource)   # STROPHE_DEBUG=1: its log
        self.err = open(self.err_path, 'w')
        port, tls = (server.tls_port, ['direct-tls']) if direct_tls else (server.port, [])
        self.proc = subprocess.Popen(
            [str(client_path()), server.host, str(port), jid, cf.USERS[user], peer] + tls,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip('\n'))
        self.lines.put(None)

    def expect(self, prefix):
        """The next event line, which must start with <prefix>."""
        try:
            line = self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError('libstrophe said nothing in %ss (wanted %r)' % (TIMEOUT, prefix))
        assert line is not None and line.startswith(prefix), \
            'wanted %r, got %r; stderr: %s' % (prefix, line, self._stderr())
        return line[len(prefix):].strip()

    def resume(self):
        self.proc.stdin.write('resume\n')
        self.proc.stdin.flush()

    def _stderr(self):
        self.err.flush()
        return 'exit %s: %s' % (self.proc.poll(), self.err_path.read_text()[-3000:])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.err.close()


@pytest.fixture
def strophe_srv(server_factory):
    client_path()
    srv = server_factory(**sm_overrides(max_resume=60))
    for user, pw in cf.USERS.items():
        srv.add_user(user, pw)
    srv.settle_users()
    return srv


def drop(alice, bob, full, node):
    """bob tells libstrophe to cut its socket; <node> detaches the session."""
    bob.message(full, 'drop')
    assert alice.expect('GOT') == 'drop'
    alice.expect('DROPPED')
    node.wait_log('session detached jid=%s' % full, TIMEOUT)


def resume_and_finish(alice, bob, full, node, h):
    """Three messages while libstrophe is away; it resumes on <node>, which
    logs its h (<h>: a number, or a pattern) and resends exactly those
    three; it sends 's2', then 'quit' from bob ends it cleanly, nothing
    twice."""
    for i in range(3):
        bob.message(full, 'away-%d' % i)
    bob.roundtrip()
    alice.resume()
    assert alice.expect('CONNECTED') == full
    assert [alice.expect('GOT') for _ in range(3)] == ['away-0', 'away-1', 'away-2']
    log = node.wait_log('session resumed jid=%s' % full, TIMEOUT)
    assert re.search(r'session resumed jid=%s worker=\d+ id=\S+ h=%s resent=3' % (re.escape(full), h), log)
    assert xr.message_bodies(bob, 1) == ['s2']
    bob.message(full, 'quit')
    assert alice.expect('GOT') == 'quit'
    alice.expect('BYE')
    assert alice.proc.wait(TIMEOUT) == 0
    xr.assert_no_message(bob, 1.0)


@pytest.mark.parametrize('tls', ['starttls', 'direct-tls'])
def test_libstrophe_chats_drops_and_resumes(strophe_srv, conns, tmp_path, tls):
    srv = strophe_srv
    bob = xr.login(srv, 'bob', cf.USERS['bob'], 'desk')
    conns.append(bob)
    alice = Strophe(srv, 'alice', 'term', bob.jid, tmp_path, direct_tls=tls == 'direct-tls')
    try:
        full = alice.expect('CONNECTED')
        assert full == 'alice@%s/term' % srv.domain
        assert xr.message_bodies(bob, 1) == ['s1']
        bob.message(full, 'before')
        assert alice.expect('GOT') == 'before'
        drop(alice, bob, full, srv)
        # libstrophe had 3 stanzas: its own presence, 'before', 'drop'.
        resume_and_finish(alice, bob, full, srv, 3)
    finally:
        alice.close()


@pytest.mark.fixed_store
def test_libstrophe_resumes_on_another_node_after_a_kill(cluster, haproxy, conns, tmp_path):  # noqa: F811
    """Through HAProxy: libstrophe's session is on node a; its connection
    drops, node a is killed, three messages are queued for it in Redis, and
    the reconnect to the same address (once HAProxy has taken a out: see
    strophe_client.c on libstrophe's failed reconnects) lands on b, which
    takes the session over from the dead node and hands them over once, in
    order."""
    client_path()
    a, b = cluster.nodes['a'], cluster.nodes['b']
    bob = xr.login(b, 'bob', cf.USERS['bob'], 'desk')
    conns.append(bob)
    alice = Strophe(haproxy, 'alice', 'train', bob.jid, tmp_path)  # 'balance first': on a
    try:
        full = alice.expect('CONNECTED')
        assert xr.message_bodies(bob, 1) == ['s1']
        drop(alice, bob, full, a)
        a.stop(signal.SIGKILL)
        haproxy.wait_down('a')
        resume_and_finish(alice, bob, full, b, r'\d+')
    finally:
        alice.close()
