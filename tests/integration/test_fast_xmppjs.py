"""FAST (XEP-0484) + inline XEP-0198 resume with xmpp.js (@xmpp/client 0.14),
driven through tests/integration/js/fast_resume.mjs (JSON lines on stdout,
commands on stdin).

@xmpp/client 0.14.0 ships FAST with HT-SHA-256-NONE (its only FAST
mechanism) and SASL2 + Bind2; fast_resume.mjs explains the wiring and the two
client-side workarounds it needs (stream-header race, stale token on a shared
credentials object). Reuses the node process wrapper of test_sm_xmppjs.py."""

import os
import subprocess
import threading
import queue
import time
import uuid
from pathlib import Path

import pytest

import xmpp_raw as xr
from conftest import USERS
from sm_client import SM_ID_RE, numbered, sm_overrides
from test_sm_xmppjs import JSClient, require_node, wait_state

JS_DIR = Path(__file__).resolve().parent / 'js'
SCRIPT = JS_DIR / 'fast_resume.mjs'


class FastJSClient(JSClient):
    def __init__(self, srv, user, tag='jsfast', ua_id=None):  # noqa: super().__init__ not called on purpose
        env = dict(os.environ, NODE_TLS_REJECT_UNAUTHORIZED='0', NODE_NO_WARNINGS='1')
        self.ua_id = ua_id or str(uuid.uuid4())
        self.proc = subprocess.Popen(
            ['node', str(SCRIPT), '--host', srv.host, '--port', str(srv.port), '--domain', srv.domain,
             '--user', user, '--password', USERS[user], '--tag', tag, '--ua-id', self.ua_id,
             '--timeout-ms', '10000', '--max-seconds', '120'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=str(JS_DIR), env=env)
        self.lines = queue.Queue()
        self.seen = []
        self.stderr = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def events(self, name):
        return [e for e in self.seen if e.get('event') == name]

    def nth(self, name, n, timeout=10):
        """The n-th (1-based) event <name>, whether already seen or still to come."""
        deadline = time.monotonic() + timeout
        while len(self.events(name)) < n:
            self.wait(name, timeout=max(0.1, deadline - time.monotonic()))
        return self.events(name)[n - 1]


@pytest.fixture
def js_clients():
    require_node()
    lst = []
    yield lst
    for c in lst:
        c.close()


def test_xmppjs_fast_reconnect_resumes_inline(server_factory, js_clients):
    srv = server_factory(**sm_overrides(max_resume=60, ack_after_ms=300))
    for user, pw in USERS.items():
        srv.add_user(user, pw)
    srv.settle_users()
    js = FastJSClient(srv, 'alice')
    js_clients.append(js)
    jid = js.wait('online', timeout=20)['jid']
    assert jid.startswith('alice@localhost/jsfast/'), jid
    tok1 = js.nth('token', 1)
    assert tok1['mechanism'] == 'HT-SHA-256-NONE', tok1
    first = js.events('authenticate')[0]
    assert not first['fast'] and first['request_token'] == 'HT-SHA-256-NONE', first
    assert first['mechanism'].startswith('SCRAM-') and first['bind'] and first['user_agent'] == js.ua_id
    st = wait_state(js, lambda s: s['sm']['enabled'], 10, 'SM enabled')
    assert SM_ID_RE.match(st['sm']['id'] or ''), st
    sm_id = st['sm']['id']

    bob = xr.login(srv, 'bob', USERS['bob'], 'b', presence=False)
    try:
        for i in range(3):
            bob.message(jid, numbered('pre', i))
        wait_state(js, lambda s: s['messages'] >= 3, 10, '3 messages')
        js.cmd('kill')
        js.wait('killed')
        srv.wait_log('session detached jid=%s' % jid, 10)
        for i in range(10):
            bob.message(jid, numbered('gone', i))
        bob.roundtrip()
        js.cmd('reconnect')
        ev = js.wait('resumed', 'online', timeout=20)
        assert ev['event'] == 'resumed', 'xmpp.js did not resume: %s; seen %s' % (ev, js.seen[-8:])
        assert ev['jid'] == jid and ev['sm']['id'] == sm_id, ev
        second = js.events('authenticate')[-1]
        assert second['mechanism'] == 'HT-SHA-256-NONE' and second['fast'], second
        assert second['resume'] and second['user_agent'] == js.ua_id, second
        succ = js.events('sasl2-success')[-1]
        assert succ['resumed'] and succ['additional_data'] and succ['token'], succ
        assert not succ['bound'], succ
        tok2 = js.nth('token', 2)
        assert tok2['token'] != tok1['token'], 'FAST token not rotated'
        wait_state(js, lambda s: s['messages'] >= 13, 10, '10 messages after resume')
        time.sleep(1.0)                       # anything duplicated would show up now
        done = js.quit()
    finally:
        bob.close()
    bodies = [m['body'] for m in done['messages']]
    assert bodies[:3] == [numbered('pre', i) for i in range(3)], bodies
    assert bodies[3:] == [numbered('gone', i) for i in range(10)], 'not exactly once, in order: %s' % bodies[3:]
    assert all(m['delay'] for m in done['messages'][3:]), 'queued stanzas without <delay/>'
    assert not done['stream_errors'], done
    assert len(done['authenticates']) == 2, done['authenticates']   # no password fallback
    srv.wait_log('authenticated as alice@localhost (SASL2, FAST token)', 5)
    srv.wait_log('session resumed jid=%s' % jid, 5)


def test_xmppjs_fast_after_expiry_binds_fresh(server_factory, js_clients):
    """Token fine, session gone: FAST success, inline <failed/>, Bind2 (same
    resource: stable per user agent), new SM session."""
    srv = server_factory(**sm_overrides(max_resume=2))
    for user, pw in USERS.items():
        srv.add_user(user, pw)
    srv.settle_users()
    js = FastJSClient(srv, 'alice')
    js_clients.append(js)
    jid = js.wait('online', timeout=20)['jid']
    js.nth('token', 1)
    old_id = wait_state(js, lambda s: s['sm']['enabled'], 10, 'SM enabled')['sm']['id']
    js.cmd('kill')
    js.wait('killed')
    srv.wait_log('session expired jid=%s' % jid, 10)
    js.cmd('reconnect')
    ev = js.wait('resumed', 'online', timeout=20)
    assert ev['event'] == 'online' and ev['jid'] == jid, ev
    second = js.events('authenticate')[-1]
    assert second['fast'] and second['resume'] and second['bind'], second
    succ = js.events('sasl2-success')[-1]
    assert succ['failed'] and succ['bound'] and succ['token'], succ
    st = wait_state(js, lambda s: s['sm']['enabled'], 10, 'SM on the fresh session')
    assert st['sm']['id'] != old_id
    done = js.quit()
    assert not done['stream_errors'], done
