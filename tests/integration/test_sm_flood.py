"""Open-loop flood with XEP-0198 receivers: 20 senders each send 20,000
messages to their own receiver as fast as they can (ASan build: 20 x 2,000);
receivers have SM enabled, send <a h/> every 50 stanzas and answer <r/>.
Every message must arrive exactly once and in order, and no session may be
ended (no stream error on any connection): the server has to hold back the
senders (flow control) instead of dropping anything or cutting anyone off.

Driven by build/tether-bench's `flood P M --window 0` mode, which does exactly
this: senders user(2i) → receivers user(2i+1) (full JID), a per-pair bitmap
for lost/duplicated/reordered, receivers acking every --ack-every and
answering <r/>, every connection end counted in ended_sessions, and the
senders' own stanzas checked against the server's final <a h/>.

Skip with TETHER_SKIP_FLOOD=1.
"""

import json
import os
import subprocess
import time

import pytest

from conftest import build_dir

PAIRS = 20
ASAN = str(os.environ.get('TETHER_BUILD', 'build')).rstrip('/').endswith('/asan') or \
    str(os.environ.get('TETHER_BUILD', 'build')).rstrip('/') == 'asan'
PER_PAIR = 2000 if ASAN else 20000
ACK_EVERY = 50
PASSWORD = 'flood-pw-%d'

pytestmark = pytest.mark.skipif(os.environ.get('TETHER_SKIP_FLOOD') == '1',
                                reason='TETHER_SKIP_FLOOD=1')


def bench_path():
    p = build_dir() / 'tether-bench'
    if not os.access(p, os.X_OK):
        pytest.skip('%s not built' % p)
    return p


def test_flood_open_loop_exactly_once_no_session_ended(server_factory):
    bench = bench_path()
    srv = server_factory()
    for i in range(2 * PAIRS):
        srv.add_user('flood%d' % i, PASSWORD % i)
    srv.settle_users()
    cmd = [str(bench), '--host', srv.host, '--port', str(srv.port), '--tls', 'starttls',
           '--domain', srv.domain, '--user', 'flood%d', '--pass', 'flood-pw-%d',
           '--label', 'tether', '--server-pid', str(srv.pid), '--sources', '2',
           '--timeout', '30', '--rate', '200', '--quiet',
           '--window', '0', '--ack-every', str(ACK_EVERY),
           'flood', str(PAIRS), str(PER_PAIR)]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as e:
        pytest.fail('tether-bench flood did not finish within 240 s; stdout: %s' % (e.stdout or '')[-3000:])
    elapsed = time.monotonic() - t0
    assert r.returncode in (0, 1), 'tether-bench failed to run (%d): %s %s' % (r.returncode, r.stdout, r.stderr)
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith('{')]
    assert len(lines) == 1, 'expected one JSON result:\n%s\n%s' % (r.stdout, r.stderr[-2000:])
    o = lines[0]
    report = '%s\n%s' % (r.stdout[-3000:], json.dumps(o))
    assert o['mode'] == 'flood-open' and o['window'] == 0 and o['ack_every'] == ACK_EVERY, report
    assert o['logins_failed'] == 0 and o['logins_ok'] == 2 * PAIRS, report
    assert o['sm_enabled'] == 2 * PAIRS, 'SM not enabled everywhere: ' + report
    assert o['sent'] == PAIRS * PER_PAIR, report
    assert o['ended_sessions'] == 0, 'sessions ended by the server (stream errors / closes): ' + report
    assert not o['errors'], 'errors: ' + report
    assert o['lost'] == 0, 'messages lost: ' + report
    assert o['duplicated'] == 0, 'messages duplicated: ' + report
    assert o['reordered'] == 0, 'messages reordered: ' + report
    assert o['delivered'] == PAIRS * PER_PAIR, report
    assert o['unacked_by_server'] == 0, 'sender stanzas the server never acked: ' + report
    assert o['ok'] is True and r.returncode == 0, report
    assert srv.alive(), 'tetherd died during the flood'
    print('flood %dx%d: %.0f msg/s, %.1f s wall' % (PAIRS, PER_PAIR, o['msgs_per_s'] or 0, elapsed))
