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
