"""The admin endpoint: /metrics (checked by promtool), /healthz, /readyz."""

import http.client
import shutil
import subprocess

import pytest

import xmpp_raw as xr
from conftest import USERS, free_port


def get(port, path):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
    try:
        c.request('GET', path)
        r = c.getresponse()
        return r.status, r.getheader('Content-Type'), r.read().decode()
    finally:
        c.close()


def metric(text, series):
    """The value of one series ('name' or 'name{labels}') in an exposition."""
    for line in text.splitlines():
        if line.startswith(series + ' '):
            return float(line.split()[-1])
    raise AssertionError('%s not in /metrics' % series)


@pytest.fixture
def admin_server(server_factory):
    port = free_port()
    srv = server_factory(**{'admin.listen': '127.0.0.1:%d' % port})
    for local, pw in USERS.items():
        srv.add_user(local, pw)
    srv.settle_users()
    srv.admin_port = port
    return srv


def test_health_and_readiness(admin_server):
    assert get(admin_server.admin_port, '/healthz')[0] == 200
    status, _, body = get(admin_server.admin_port, '/readyz')
    assert status == 200 and body.strip() == 'ready'
    assert get(admin_server.admin_port, '/nope')[0] == 404


def test_metrics_count_what_happens_and_pass_promtool(admin_server, conns):
    port = admin_server.admin_port
    _, ctype, before = get(port, '/metrics')
    assert ctype.startswith('text/plain; version=0.0.4')
    a = xr.login(admin_server, 'alice', USERS['alice'], 'm')
    conns.append(a)
    b = xr.login(admin_server, 'bob', USERS['bob'], 'm')
    conns.append(b)
    for i in range(3):
        a.message(b.jid, 'm%d' % i)
        b.wait_message('m%d' % i)
    bad = xr.connect_tls(admin_server)
    conns.append(bad)
    ok, _ = bad.auth_plain('carol', 'wrong')
    assert not ok
    bad.send('<a></b>')
    bad.expect_stream_error()
    _, _, after = get(port, '/metrics')
    def delta(series):
        return metric(after, series) - metric(before, series)
    assert delta('tether_stanzas_in_total{kind="message"}') >= 3
    assert delta('tether_authentications_total{result="success"}') == 2
    assert delta('tether_authentications_total{result="failure"}') == 1
    assert delta('tether_sessions_bound_total') == 2
    assert delta('tether_stream_errors_total{condition="not-well-formed"}') == 1
    assert metric(after, 'tether_process_resident_memory_bytes') > 1 << 20
    assert metric(after, 'tether_process_open_fds') > 4
    promtool = shutil.which('promtool')
    if not promtool:
        pytest.fail('promtool (Debian package prometheus) is missing: run scripts/deps.sh')
    p = subprocess.run([promtool, 'check', 'metrics'], input=after, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr


def test_bad_admin_address_names_file_and_key(server_factory):
    with pytest.raises(pytest.fail.Exception) as e:
        server_factory(**{'admin.listen': 'localhost:notaport'})
    assert '[admin] listen' in str(e.value) and '.ini' in str(e.value), str(e.value)[-500:]


def test_admin_port_in_use_is_an_error(server_factory, admin_server):
    with pytest.raises(pytest.fail.Exception) as e:
        server_factory(**{'admin.listen': '127.0.0.1:%d' % admin_server.admin_port})
    assert 'cannot serve on' in str(e.value), str(e.value)[-500:]


def test_metrics_resume_store_tls_and_gauges(admin_server, conns):
    """A login with SM, a message, a drop and a resume, a resume that fails:
    the families added for operations move as they should."""
    import sm_client as smc
    port = admin_server.admin_port
    _, _, before = get(port, '/metrics')
    a = smc.sm_login(admin_server, 'alice', USERS['alice'], 'ma')
    conns.append(a)
    b = xr.login(admin_server, 'bob', USERS['bob'], 'mb')
    conns.append(b)
    b.message(a.jid, 'hello')
    a.wait_message('hello')
    previd = a.sm_id
    smc.kill(a)
    admin_server.wait_log('session detached jid=%s' % a.jid, 10)
    a2, el = smc.sm_resume(admin_server, 'alice', USERS['alice'], previd, a.h)
    conns.append(a2)
    assert smc.is_sm(el, 'resumed'), xr.tostr(el)
    a2.roundtrip()
    c, el = smc.sm_resume(admin_server, 'carol', USERS['carol'], 'A' * len(previd), 0)
    conns.append(c)
    assert smc.is_sm(el, 'failed'), xr.tostr(el)
    _, _, after = get(port, '/metrics')

    def delta(series):
        return metric(after, series) - metric(before, series)
    res = 'tether_resumptions_total{kind="%s",result="%s",node="%s"}'
    assert delta(res % ('classic', 'ok', 'same')) == 1
    assert delta(res % ('classic', 'failed', 'same')) == 1
    for kind in ('classic', 'isr', 'sasl2'):
        assert delta(res % (kind, 'ok', 'other')) == 0
        assert delta(res % (kind, 'failed', 'other')) == 0
    assert delta(res % ('isr', 'ok', 'same')) == 0
    assert delta('tether_resume_duration_seconds_count') == 1
    assert 0 < delta('tether_resume_duration_seconds_sum') < 5
    ops = 0
    for op in ('user_get', 'sm_take', 'sm_write', 'sm_append', 'sm_ack', 'sm_destroy', 'fast',
               'deliver', 'node_notice', 'barrier'):
        ops += delta('tether_store_operations_total{op="%s"}' % op)
        assert delta('tether_store_errors_total{op="%s"}' % op) == 0, op
    assert delta('tether_store_operations_total{op="sm_take"}') == 2
    assert delta('tether_store_operations_total{op="sm_write"}') >= 1   # the <enable/>'s create
    assert delta('tether_store_operations_total{op="sm_append"}') >= 1  # 'hello' queued
    hist = 'tether_store_operation_duration_seconds'
    assert delta(hist + '_count') == ops
    assert delta(hist + '_bucket{le="+Inf"}') == ops
    assert 0 < delta(hist + '_sum') < ops * 5
    assert delta('tether_tls_handshakes_total{resumed="false"}') + \
        delta('tether_tls_handshakes_total{resumed="true"}') >= 4
    assert delta('tether_stanzas_out_total{kind="message"}') >= 1
    assert metric(after, 'tether_connections{listener="starttls"}') >= 3
    assert metric(after, 'tether_redis_link_up') == 1
    p = subprocess.run(['promtool', 'check', 'metrics'], input=after, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr


STAGES = ('tether_connections{listener="starttls"}', 'tether_connections{listener="direct_tls"}',
          'tether_connection_states{state="pre_tls"}', 'tether_connection_states{state="pre_auth"}',
          'tether_connection_states{state="bound"}', 'tether_sessions{state="attached"}',
          'tether_sessions{state="detached"}')


def wait_gauges(port, want, timeout=10.0):
    """Polls /metrics until every series in <want> has its value (connections
    are freed a little after their sockets close); returns the exposition."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        _, _, text = get(port, '/metrics')
        got = {k: metric(text, k) for k in want}
        if got == want or time.monotonic() > deadline:
            assert got == want, got
            return text
        time.sleep(0.05)


def stages(**nonzero):
    names = {'starttls': STAGES[0], 'direct_tls': STAGES[1], 'pre_tls': STAGES[2],
             'pre_auth': STAGES[3], 'bound': STAGES[4], 'attached': STAGES[5],
             'detached': STAGES[6]}
    want = {k: 0.0 for k in STAGES}
    for k, v in nonzero.items():
        want[names[k]] = float(v)
    return want


def test_metrics_stage_gauges_follow_sessions_and_return_to_zero(admin_server, conns):
    """Connections by listener and stage, sessions attached and detached, a
    takeover, bytes and loop lag: each gauge follows logins, a drop, a
    resumption and logouts, and is back at zero when everything has ended."""
    import socket
    import sm_client as smc
    port = admin_server.admin_port
    before = wait_gauges(port, stages())
    raw = socket.create_connection((admin_server.host, admin_server.port), timeout=5)
    wait_gauges(port, stages(starttls=1, pre_tls=1))
    pre = xr.connect_tls(admin_server, direct_tls=True)
    conns.append(pre)
    wait_gauges(port, stages(starttls=1, direct_tls=1, pre_tls=1, pre_auth=1))
    a = smc.sm_login(admin_server, 'alice', USERS['alice'], 'ga')
    conns.append(a)
    b = xr.login(admin_server, 'bob', USERS['bob'], 'gb', direct_tls=True)
    conns.append(b)
    wait_gauges(port, stages(starttls=2, direct_tls=2, pre_tls=1, pre_auth=1, bound=2, attached=2))
    for i in range(5):
        b.message(a.jid, 'g%d' % i)
        a.wait_message('g%d' % i)
    a.ack()
    a.roundtrip()
    previd = a.sm_id
    smc.kill(a)
    admin_server.wait_log('session detached jid=%s' % a.jid, 10)
    mid = wait_gauges(port, stages(starttls=2, direct_tls=2, pre_tls=1, pre_auth=1, bound=1,
                                   attached=1, detached=1))
    a2, el = smc.sm_resume(admin_server, 'alice', USERS['alice'], previd, a.h)
    conns.append(a2)
    assert smc.is_sm(el, 'resumed'), xr.tostr(el)
    a2.roundtrip()
    wait_gauges(port, stages(starttls=2, direct_tls=2, pre_tls=1, pre_auth=1, bound=2, attached=2))
    raw.close()
    pre.close()
    a2.close()
    b.close()
    after = wait_gauges(port, stages())

    def delta(series, frm=before):
        return metric(after, series) - metric(frm, series)
    take = 'tether_session_takeovers_total{previous="%s",node="%s",owner="live"}'
    assert delta(take % ('detached', 'same')) == 1
    assert delta(take % ('attached', 'same')) == 0
    assert delta(take % ('detached', 'other')) == 0
    assert delta('tether_client_bytes_total{direction="in"}') > 5 * 40
    assert delta('tether_client_bytes_total{direction="out"}') > 5 * 40
    assert delta('tether_client_bytes_total{direction="in"}', mid) > 0
    assert delta('tether_sm_queue_depth_count') >= 1
    assert delta('tether_sm_queue_depth_bucket{le="+Inf"}') == delta('tether_sm_queue_depth_count')
    assert metric(after, 'tether_worker_loop_lag_seconds_count') > 0
    assert metric(after, 'tether_worker_loop_lag_seconds_bucket{le="+Inf"}') == \
        metric(after, 'tether_worker_loop_lag_seconds_count')
    p = subprocess.run(['promtool', 'check', 'metrics'], input=after, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr


def test_metrics_isr_resumptions(admin_server):
    """An ISR resumption that works, then one with the spent token."""
    from sasl2_client import assert_success, failure_condition
    from test_isr import detach, isr_attempt, isr_session
    port = admin_server.admin_port
    _, _, before = get(port, '/metrics')
    a = isr_session(admin_server)
    sm_id, token = a.sm_id, a.isr_token
    detach(admin_server, a)
    c, el = isr_attempt(admin_server, 'alice', token, sm_id, 0)
    try:
        assert_success(el)
        d, el2 = isr_attempt(admin_server, 'alice', token, sm_id, 0)
        d.close()
        assert failure_condition(el2) == 'not-authorized', xr.tostr(el2)
        c.roundtrip()
    finally:
        c.close()
    _, _, after = get(port, '/metrics')

    def delta(series):
        return metric(after, series) - metric(before, series)
    res = 'tether_resumptions_total{kind="%s",result="%s",node="%s"}'
    assert delta(res % ('isr', 'ok', 'same')) == 1
    assert delta(res % ('isr', 'failed', 'same')) == 1
    assert delta(res % ('classic', 'ok', 'same')) == 0
    assert delta(res % ('sasl2', 'ok', 'same')) == 0
    assert delta('tether_resume_duration_seconds_count') == 1
    assert delta('tether_tls_handshakes_total{resumed="false"}') + \
        delta('tether_tls_handshakes_total{resumed="true"}') >= 3


def test_metrics_resume_from_another_node(server_factory, tmp_path, conns):
    """Two nodes on one Redis: a session begun on a and resumed on b counts
    on b as a classic resumption from another node; b's Redis link is up."""
    import shutil as sh
    import tempfile
    import sm_client as smc
    from redis_server import RedisServer
    from test_isr import detach
    d = tempfile.mkdtemp(prefix='tether-mt-')   # short: unix socket paths
    redis = RedisServer(d, aof=False)
    try:
        common = {'store.redis': redis.addr, 'tokens.key_file': str(tmp_path / 'token.key'),
                  'sm.max_resume': 120}
        a = server_factory(backend='redis', **common, **{'cluster.node': 'a'})
        port = free_port()
        b = server_factory(backend='redis', **common,
                           **{'cluster.node': 'b', 'admin.listen': '127.0.0.1:%d' % port})
        a.add_user('alice', USERS['alice'])
        a.settle_users()
        _, _, before = get(port, '/metrics')
        alice = smc.sm_login(a, 'alice', USERS['alice'], 'phone')
        sid = alice.sm_id
        detach(a, alice)
        new, el = smc.sm_resume(b, 'alice', USERS['alice'], sid, alice.h)
        conns.append(new)
        assert smc.is_sm(el, 'resumed'), xr.tostr(el)
        new.roundtrip()
        _, _, after = get(port, '/metrics')
        def delta(series):
            return metric(after, series) - metric(before, series)
        res = 'tether_resumptions_total{kind="classic",result="%s",node="%s"}'
        assert delta(res % ('ok', 'other')) == 1
        assert delta(res % ('ok', 'same')) == 0
        assert delta(res % ('failed', 'other')) == 0
        assert delta('tether_store_operations_total{op="sm_take"}') == 1
        assert delta('tether_store_errors_total{op="sm_take"}') == 0
        assert metric(after, 'tether_redis_link_up') == 1
        p = subprocess.run(['promtool', 'check', 'metrics'], input=after, capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        redis.stop()
        sh.rmtree(d, ignore_errors=True)
