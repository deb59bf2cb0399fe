"""test_bench.py - smoke test of build/tether-bench against a tetherd started here.

One short run of each mode with small N. Checks that every run prints one
complete JSON line per result and that nothing was lost or duplicated. SM
is not in tetherd yet: the bench must say so ("sm: not offered") and not
crash; resume then reports ok=false with no resumable session. Once tetherd
offers SM these tests demand that it works (resume ok, no loss).
"""

import json
import os
import subprocess

import pytest

from conftest import build_dir, start_server

PASSWORD = 'bench-pw'
COMMON_KEYS = {'mode', 'server', 'logins_ok', 'logins_failed', 'sm_enabled', 'ended_sessions',
               'lost', 'duplicated', 'errors', 'ok', 'login_p50_ms', 'login_p99_ms', 'login_max_ms'}
MODE_KEYS = {
    'idle': {'sessions', 'rss_before_kib', 'rss_after_kib', 'bytes_per_session'},
    'login': {'logins_per_s', 'round_trips_min', 'round_trips_max', 'login_round_trips'},
    'flood-windowed': {'pairs', 'messages_per_pair', 'sent', 'delivered', 'msgs_per_s', 'latency_p50_ms',
                       'latency_p99_ms', 'reordered'},
    'flood-open': {'pairs', 'messages_per_pair', 'sent', 'delivered', 'msgs_per_s', 'latency_p50_ms',
                   'latency_p99_ms', 'reordered'},
    'resume': {'resume_kind', 'resumes_ok', 'resumes_failed', 'resumes_per_s', 'resume_p50_ms',
               'resume_p99_ms', 'round_trips', 'redelivered', 'redeliver_expected'},
}
NUSERS = 12


def bench_path():
    p = build_dir() / 'tether-bench'
    if not os.access(p, os.X_OK):
        pytest.skip('%s not built (make build/tether-bench)' % p)
    return p


@pytest.fixture
def bench_server(tmp_path, tls_cert):
    # tetherd (memory store) reads its users at start: create them with
    # tetherctl through a first instance, then start again on the same store.
    first = start_server(tmp_path, cert=tls_cert[0], key=tls_cert[1])
    try:
        for i in range(NUSERS):
            first.add_user('bench%d' % i, PASSWORD)
    finally:
        first.finish()
    srv = start_server(tmp_path, cert=tls_cert[0], key=tls_cert[1])
    yield srv
    srv.finish()


def run_bench(srv, *args, tls='starttls', timeout=60):
    port = srv.tls_port if tls == 'direct' else srv.port
    cmd = [str(bench_path()), '--host', srv.host, '--port', str(port), '--tls', tls, '--domain', srv.domain,
           '--user', 'bench%d', '--pass', PASSWORD, '--label', 'tether', '--server-pid', str(srv.pid),
           '--sources', '2', '--timeout', '5', '--quiet'] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode in (0, 1), 'tether-bench crashed or bad usage (%d): %s' % (r.returncode, r.stderr)
    lines = [l for l in r.stdout.splitlines() if l.startswith('{')]
    assert lines, 'no JSON line in:\n%s\n%s' % (r.stdout, r.stderr)
    res = [json.loads(l) for l in lines]       # prefix-free, one object per line
    for o in res:
        missing = (COMMON_KEYS | MODE_KEYS.get(o['mode'], set())) - set(o)
        assert not missing, 'JSON line lacks %s: %s' % (sorted(missing), o)
        assert o['server'] == 'tether'
    return res, r


def sm_offered(o):
    return o['sm_enabled'] > 0


def test_idle(bench_server):
    (o,), _ = run_bench(bench_server, '--settle', '0.5', '--rate', '200', 'idle', '8')
    assert o['mode'] == 'idle'
    assert o['sessions'] == 8 and o['logins_failed'] == 0 and o['ended_sessions'] == 0
    assert o['rss_after_kib'] > 0 and o['bytes_per_session'] is not None
    if not sm_offered(o):
        assert o['errors'].get('sm: not offered') == 8
    assert o['ok'] is True


@pytest.mark.parametrize('tls', ['starttls', 'direct'])
def test_login(bench_server, tls):
    (o,), _ = run_bench(bench_server, 'login', '--duration', '1.5', '--concurrency', '4', '--users',
                        str(NUSERS), tls=tls)
    assert o['mode'] == 'login' and o['ok'] is True
    assert o['logins_ok'] > 0 and o['logins_failed'] == 0
    assert o['login_p50_ms'] > 0 and o['login_p99_ms'] >= o['login_p50_ms']
    # TCP, TLS, SASL (2), restart, bind (+ SM enable), plus 2 for STARTTLS
    base = 7 if tls == 'direct' else 9
    assert o['round_trips_min'] >= base and o['round_trips_max'] <= base + 1


@pytest.mark.parametrize('window', [8, 0])
def test_flood(bench_server, window):
    (o,), r = run_bench(bench_server, '--window', str(window), '--ack-every', '5', 'flood', '3', '300')
    assert o['mode'] == ('flood-windowed' if window else 'flood-open')
    assert o['pairs'] == 3 and o['messages_per_pair'] == 300
    assert o['lost'] == 0 and o['duplicated'] == 0 and o['reordered'] == 0, r.stdout
    assert o['delivered'] == 900 and o['ended_sessions'] == 0
    assert o['msgs_per_s'] > 0 and o['ok'] is True


def test_resume(bench_server):
    (o,), r = run_bench(bench_server, '--concurrency', '2', 'resume', '4', tls='direct')
    assert o['mode'] == 'resume' and o['resume_kind'] == 'classic'
    if not sm_offered(o):
        # SM not in tetherd yet: reported cleanly, nothing resumed, not "ok"
        assert o['ok'] is False and o['resumes_ok'] == 0
        assert 'sm: not offered' in o['errors'], o
        pytest.xfail('tetherd does not offer XEP-0198 yet')
    assert o['ok'] is True, r.stdout
    assert o['resumes_ok'] == 4 and o['redelivered'] == o['redeliver_expected'] == 4
    assert o['round_trips'] == 7


def test_bad_usage_is_not_a_crash():
    r = subprocess.run([str(bench_path()), 'flood', '0'], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and 'usage' in r.stderr
