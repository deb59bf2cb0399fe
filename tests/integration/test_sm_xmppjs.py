"""XEP-0198 with xmpp.js (@xmpp/client 0.14, node), driven through
tests/integration/js/sm_resume.mjs (JSON lines on stdout, commands on stdin).

The script works around an xmpp.js 0.14.0 client bug (it writes its stream
header before listening for the reply, so against a fast server the login can
stall): see the patched open() in sm_resume.mjs.
"""

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import xmpp_raw as xr
from conftest import USERS
from sm_client import SM_ID_RE, numbered, sm_overrides

JS_DIR = Path(__file__).resolve().parent / 'js'
SCRIPT = JS_DIR / 'sm_resume.mjs'


def require_node():
    if shutil.which('node') is None:
        pytest.skip('node not installed')
    if not (JS_DIR / 'node_modules' / '@xmpp' / 'client').is_dir():
        pytest.skip('xmpp.js not installed (cd tests/integration/js && npm ci)')


class JSClient:
    """The node process; events() are parsed JSON lines."""

    def __init__(self, srv, user, resource='js'):
        env = dict(os.environ, NODE_TLS_REJECT_UNAUTHORIZED='0', NODE_NO_WARNINGS='1')
        self.proc = subprocess.Popen(
            ['node', str(SCRIPT), '--host', srv.host, '--port', str(srv.port), '--domain', srv.domain,
             '--user', user, '--password', USERS[user], '--resource', resource,
             '--timeout-ms', '10000', '--max-seconds', '120'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=str(JS_DIR), env=env)
        self.lines = queue.Queue()
        self.seen = []
        self.stderr = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    @staticmethod
    def _read(f, q):
        for line in f:
            q.put(line)
        q.put(None)

    def _read_err(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def cmd(self, line):
        self.proc.stdin.write(line + '\n')
        self.proc.stdin.flush()

    def wait(self, *events, timeout=15):
        """Next event whose name is in <events> (others are kept in .seen)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError('xmpp.js: no %s within %ss; events: %s; stderr: %s'
                                     % (events, timeout, self.seen[-10:], ''.join(self.stderr)[-2000:]))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError('xmpp.js exited (%s) waiting for %s; events: %s; stderr: %s'
                                     % (self.proc.poll(), events, self.seen[-10:], ''.join(self.stderr)[-2000:]))
            if not line.startswith('{'):
                continue
            ev = json.loads(line)
            self.seen.append(ev)
            if ev.get('event') == 'fatal':
                raise AssertionError('xmpp.js fatal: %s; stderr: %s' % (ev, ''.join(self.stderr)[-2000:]))
            if ev.get('event') in events:
                return ev

    def state(self):
        self.cmd('state')
        return self.wait('state')

    def quit(self):
        self.cmd('quit')
        return self.wait('done')

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def js_clients():
    require_node()
    lst = []
    yield lst
    for c in lst:
        c.close()


def start(server_factory, **sm):
    srv = server_factory(**sm_overrides(**sm))
    for user, pw in USERS.items():
        srv.add_user(user, pw)
    srv.settle_users()
    return srv


def wait_state(js, pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        st = js.state()
        if pred(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError('xmpp.js: %s not reached; last state %s' % (what, st))
        time.sleep(0.1)


def test_xmppjs_resume_after_abrupt_drop(server_factory, js_clients):
    srv = start(server_factory, max_resume=60, ack_after_ms=300)
    js = JSClient(srv, 'alice', 'js')
    js_clients.append(js)
    online = js.wait('online', timeout=20)
    jid = online['jid']
    # xmpp.js 0.14 logs in with SASL2 + Bind2 when offered: the server picks
    # the resource (its tag, a '/', a suffix stable for this user agent).
    assert jid.startswith('alice@localhost/'), jid
    # xmpp.js goes online at bind and sends <enable/> right after
    online = wait_state(js, lambda s: s['sm']['enabled'], 10, 'SM enabled')
    assert SM_ID_RE.match(online['sm']['id'] or ''), online
    assert int(online['sm']['max']) == 60, online

    bob = xr.login(srv, 'bob', USERS['bob'], 'b', presence=False)
    try:
        # acks both ways: the server <r/>s after its stanzas (ack_after_ms) and
        # xmpp.js answers; xmpp.js <r/>s after its own stanzas and the server answers
        for i in range(6):
            bob.message(jid, numbered('pre', i))
        wait_state(js, lambda s: s['messages'] >= 6 and s['acks_out'] >= 1, 10, 'messages + <a/> sent')
        js.cmd('send %s hello-bob' % bob.jid)
        js.wait('sent')
        bob.wait_message('hello-bob')
        wait_state(js, lambda s: s['acks_in'] >= 1 and s['sm']['outbound_queue'] == 0, 10,
                   'server <a/> for xmpp.js\'s stanza')

        js.cmd('kill')
        js.wait('killed')
        srv.wait_log('session detached jid=%s' % jid, 10)
        for i in range(20):
            bob.message(jid, numbered('gone', i))
        bob.roundtrip()
        js.cmd('reconnect')
        ev = js.wait('resumed', 'online', timeout=20)
        assert ev['event'] == 'resumed', 'xmpp.js did not resume: %s' % ev
        st = wait_state(js, lambda s: s['messages'] >= 26, 10, '20 messages after resume')
        time.sleep(1.0)
        done = js.quit()
    finally:
        bob.close()
    bodies = [m['body'] for m in done['messages']]
    assert bodies[:6] == [numbered('pre', i) for i in range(6)]
    assert bodies[6:] == [numbered('gone', i) for i in range(20)], 'not exactly once in order: %s' % bodies[6:]
    assert all(m['delay'] for m in done['messages'][6:]), 'queued stanzas without <delay/>'
    assert not done['stream_errors'], done
    srv.wait_log('session resumed jid=%s' % jid, 5)


def test_xmppjs_resume_after_expiry_binds_fresh(server_factory, js_clients):
    srv = start(server_factory, max_resume=2)
    js = JSClient(srv, 'alice', 'js')
    js_clients.append(js)
    jid = js.wait('online', timeout=20)['jid']
    online = wait_state(js, lambda s: s['sm']['enabled'], 10, 'SM enabled')
    old_id = online['sm']['id']
    assert online['sm']['enabled'] and int(online['sm']['max']) == 2, online
    js.cmd('kill')
    js.wait('killed')
    srv.wait_log('session detached jid=%s' % jid, 10)
    srv.wait_log('session expired jid=%s' % jid, 10)
    js.cmd('reconnect')
    ev = js.wait('resumed', 'online', timeout=20)
    assert ev['event'] == 'online', 'resumed an expired session: %s' % ev
    assert ev['jid'] == jid, ev                       # same resource, freshly bound
    st = wait_state(js, lambda s: s['sm']['enabled'], 10, 'SM enabled on the fresh session')
    assert st['sm']['id'] and st['sm']['id'] != old_id, st
    bob = xr.login(srv, 'bob', USERS['bob'], 'b', presence=False)
    try:
        bob.message(jid, 'fresh-hello')
        wait_state(js, lambda s: s['messages'] >= 1, 10, 'message on the fresh session')
    finally:
        bob.close()
    done = js.quit()
    assert [m['body'] for m in done['messages']] == ['fresh-hello']
    assert not done['stream_errors'], done
