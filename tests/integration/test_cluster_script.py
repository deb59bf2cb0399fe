"""deploy/cluster.sh (make cluster): Redis with AOF, three nodes and HAProxy
come up on loopback, a user added with tetherctl logs in through HAProxy,
every node is ready, and `down` stops exactly what `up` started."""

import os
import random
import shutil
import subprocess
import tempfile
import urllib.request

import pytest

import conftest as cf
import xmpp_raw as xr

# Every server here names its store: the TETHER_STORE=redis run skips this file.
pytestmark = pytest.mark.fixed_store

REPO = cf.REPO


def run(args, env, **kw):
    return subprocess.run([str(REPO / 'deploy' / 'cluster.sh')] + args, env=env, text=True,
                          capture_output=True, timeout=60, **kw)


@pytest.mark.skipif(not shutil.which('haproxy') and not os.path.exists('/usr/sbin/haproxy'),
                    reason='no haproxy (apt-get install haproxy)')
def test_cluster_up_login_through_haproxy_down():
    d = tempfile.mkdtemp(prefix='tether-cls-')
    base = random.randrange(20000, 32000, 400)  # below the ephemeral ports other tests use
    env = dict(os.environ, TETHER_CLUSTER_DIR=d, TETHER_CLUSTER_BASE=str(base),
               TETHER_BUILD=str(cf.build_dir()))
    try:
        up = run(['up'], env)
        if up.returncode:
            logs = ''.join('--- %s\n%s' % (n, open(os.path.join(d, n + '.log')).read()[-2000:])
                           for n in 'abc' if os.path.exists(os.path.join(d, n + '.log')))
            pytest.fail('cluster.sh up failed: %s%s\n%s' % (up.stdout, up.stderr, logs))
        assert 'clients (HAProxy): STARTTLS 127.0.0.1:%d' % (base + 22) in up.stdout, up.stdout
        again = run(['up'], env)
        assert again.returncode != 0 and 'already up' in again.stderr
        subprocess.run([str(cf.tetherctl_path()), '-c', os.path.join(d, 'a.ini'), 'adduser',
                        'zoe@localhost'], input='zoe-pw\n', text=True, check=True, timeout=30)

        class Front:
            host = '127.0.0.1'
            port = base + 22
            tls_port = base + 23
            domain = cf.DOMAIN

            @staticmethod
            def settle_users():
                pass
        for direct in (False, True):
            c = xr.login(Front, 'zoe', 'zoe-pw', 'r', direct_tls=direct)
            c.close()
        for i in range(3):
            with urllib.request.urlopen('http://127.0.0.1:%d/readyz' % (base + 102 + 10 * i),
                                        timeout=5) as r:
                assert r.status == 200
        pids = [open(os.path.join(d, p + '.pid')).read().strip()
                for p in ('redis', 'a', 'b', 'c', 'haproxy')]
        down = run(['down'], env)
        assert down.returncode == 0, down.stderr
        for pid in pids:
            assert not os.path.exists('/proc/%s' % pid) or \
                'zombie' in open('/proc/%s/status' % pid).read().lower(), 'pid %s still runs' % pid
        st = run(['status'], env)
        assert st.stdout.count('stopped') == 5, st.stdout
    finally:
        run(['down'], env)
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(not shutil.which('redis-server'), reason='no redis-server (scripts/deps.sh)')
def test_cluster_up_that_fails_leaves_nothing_running(tmp_path):
    """A node that exits at start: `up` says which, at once, and stops the
    redis-server it had started (before, Redis was left running)."""
    fake = tmp_path / 'bin'
    fake.mkdir()
    (fake / 'tetherd').write_text('#!/bin/sh\necho "tetherd: refusing to start" >&2\nexit 1\n')
    (fake / 'tetherd').chmod(0o755)
    d = tmp_path / 'cls'
    base = random.randrange(20000, 32000, 400)
    env = dict(os.environ, TETHER_CLUSTER_DIR=str(d), TETHER_CLUSTER_BASE=str(base),
               TETHER_BUILD=str(fake))
    try:
        up = run(['up'], env)
        assert up.returncode != 0
        assert 'node a did not come up' in up.stderr, up.stderr
        st = run(['status'], env)
        assert st.stdout.count('stopped') == 5, st.stdout
    finally:
        run(['down'], env)


@pytest.mark.skipif(not shutil.which('haproxy'), reason='no haproxy (scripts/deps.sh)')
def test_deploy_haproxy_cfg_is_valid_and_checks_readyz():
    """The example in deploy/ parses, and its health checks ask /readyz on
    every server line, so a draining node leaves the rotation (README,
    drain) rather than when its listeners close."""
    cfg = os.path.join(str(REPO), 'deploy', 'haproxy.cfg')
    r = subprocess.run(['haproxy', '-c', '-f', cfg], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    text = open(cfg).read()
    assert text.count('option httpchk GET /readyz') == 2
    servers = [ln for ln in text.splitlines() if ln.strip().startswith('server ')]
    assert servers and all('check port 9100' in ln for ln in servers), servers
