"""tetherd with [store] backend = redis: the start-up checks against a real
redis-server (see redis_server.py); once they pass, it serves (what it serves
on Redis: test_redis_node.py)."""

import signal
import subprocess
import time

import pytest

import conftest as cf
from redis_server import redis  # noqa: F401  (fixture)

# Every server here names its store: the TETHER_STORE=redis run skips this file.
pytestmark = pytest.mark.fixed_store

READY = 'workers, c2s'   # tetherd's "up" line: "tetherd V: domain D, N workers, c2s ..."


@pytest.fixture
def redis_config(tmp_path, tls_cert):
    """write(redis_addr, node='a', key_file=None) -> path of a config using Redis."""
    cf.require_binaries()
    cert, key = tls_cert

    def write(addr, node='a', key_file=None, name='redis.ini'):
        lines = [
            '[server]',                                   # 1
            'domain = localhost',                         # 2
            '[c2s]',                                      # 3
            'listen = 127.0.0.1:%d' % cf.free_port(),     # 4
            'tls_listen = 127.0.0.1:%d' % cf.free_port(), # 5
            '[tls]',                                      # 6
            'cert = %s' % cert,                           # 7
            'key = %s' % key,                             # 8
            '[store]',                                    # 9
            'backend = redis',                            # 10
            'redis = %s' % addr,                          # 11
            'path = %s' % (tmp_path / 'var'),             # 12
        ]
        if key_file:
            lines += ['[tokens]', 'key_file = %s' % key_file]
        if node is not None:
            lines += ['[cluster]', 'node = %s' % node]
        p = tmp_path / name
        p.write_text('\n'.join(lines) + '\n')
        return str(p)
    return write


def run(path, *extra, timeout=20):
    # cwd elsewhere: the library is compiled in, tetherd reads no source file.
    r = subprocess.run([str(cf.tetherd_path()), '-c', path, *extra], cwd=str(cf.Path(path).parent),
                       capture_output=True, text=True, timeout=timeout)
    for marker in cf.SANITIZER_MARKERS:
        assert marker not in r.stderr, r.stderr
    return r


def start_stop(path, timeout=20):
    """Starts tetherd, waits for its "up" line (or its exit), then SIGTERM.
    Returns (exit code, stderr)."""
    p = subprocess.Popen([str(cf.tetherd_path()), '-c', path], cwd=str(cf.Path(path).parent),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    lines, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            if not line:
                break                          # exited
            lines.append(line)
            if READY in line:
                p.send_signal(signal.SIGTERM)
                break
        rc = p.wait(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = ''.join(lines) + p.stderr.read()
    for marker in cf.SANITIZER_MARKERS:
        assert marker not in err, err
    return rc, err


def test_check_needs_cluster_node(redis_config):
    p = redis_config('127.0.0.1:6379', node=None)
    r = run(p, '--check')
    assert r.returncode != 0
    assert '%s:10: [cluster] node:' % p in r.stderr, r.stderr


def test_check_refuses_bad_node_and_address(redis_config):
    r = run(redis_config('127.0.0.1:6379', node='a b'), '--check')
    assert r.returncode != 0 and '[cluster] node' in r.stderr, r.stderr
    r = run(redis_config('localhost', node='a'), '--check')
    assert r.returncode != 0 and '[store] redis' in r.stderr, r.stderr
    r = run(redis_config('unix:relative.sock', node='a'), '--check')
    assert r.returncode != 0 and '[store] redis' in r.stderr, r.stderr


def test_check_passes_with_node(redis_config):
    r = run(redis_config('unix:/nonexistent/redis.sock'), '--check')
    assert r.returncode == 0, r.stderr


def test_unreachable_tcp_names_address(redis_config):
    addr = '127.0.0.1:%d' % cf.free_port()     # nobody listens there
    r = run(redis_config(addr))
    assert r.returncode != 0
    assert addr in r.stderr, r.stderr


def test_unreachable_unix_names_address(redis_config, tmp_path):
    addr = 'unix:%s' % (tmp_path / 'no-such.sock')
    r = run(redis_config(addr))
    assert r.returncode != 0
    assert addr in r.stderr, r.stderr


def test_loads_library_then_serves(redis_config, redis):  # noqa: F811
    rc, err = start_stop(redis_config(redis.addr))
    assert READY in err, err
    assert rc == 0, err
    # The library is loaded and the key check value stored (not the key).
    assert 'tether' in redis.cli('FUNCTION', 'LIST', 'LIBRARYNAME', 'tether')
    check = redis.cli('GET', 't:{cluster}:keycheck').strip()
    assert len(check) == 64 and all(c in '0123456789abcdef' for c in check)


def test_key_check_is_not_the_key(redis_config, redis, tmp_path):  # noqa: F811
    keyfile = tmp_path / 'token.key'
    start_stop(redis_config(redis.addr, key_file=str(keyfile)))
    raw = keyfile.read_bytes()
    check = redis.cli('GET', 't:{cluster}:keycheck').strip()
    assert raw.hex() not in check and raw.hex() != check
    # Same key again: still accepted as the cluster's.
    rc, err = start_stop(redis_config(redis.addr, key_file=str(keyfile), name='again.ini'))
    assert READY in err, err


def test_key_mismatch_refused(redis_config, redis, tmp_path):  # noqa: F811
    rc, err = start_stop(redis_config(redis.addr, key_file=str(tmp_path / 'a.key'), name='a.ini'))
    assert READY in err, err
    r = run(redis_config(redis.addr, node='b', key_file=str(tmp_path / 'b.key'), name='b.ini'))
    assert r.returncode != 0
    assert "this node's token key differs from the cluster's" in r.stderr, r.stderr
    assert READY not in r.stderr


def test_waits_while_redis_loads_its_dataset(redis_config, tmp_path):
    """A node started with a Redis that is still loading its AOF (every
    command answered -LOADING: a restarted host, `deploy/cluster.sh up`
    after a run) waits until the dataset is in, then serves; it used to
    exit at once ("FUNCTION LOAD ...: LOADING")."""
    from redis_server import RedisServer
    d = tmp_path / 'r'
    rs = RedisServer(d, aof=True)
    try:
        rs.cli('DEBUG', 'POPULATE', '2000000', 'k', '32')   # a dataset that takes a while to load
        rs.cli('BGREWRITEAOF')                                # POPULATE writes no AOF itself
        deadline = time.monotonic() + 60
        while 'aof_rewrite_in_progress:0' not in rs.cli('INFO', 'persistence') or \
                'aof_rewrite_scheduled:0' not in rs.cli('INFO', 'persistence'):
            assert time.monotonic() < deadline, 'AOF rewrite did not finish'
            time.sleep(0.1)
        rs.cli('SHUTDOWN')
        rs.proc.wait(60)
        proc = subprocess.Popen(rs.proc.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        rs.proc = proc
        deadline, seen = time.monotonic() + 10, ''
        while time.monotonic() < deadline and 'LOADING' not in seen:
            r = subprocess.run([rs.cli_bin, '-s', rs.sock, 'PING'], capture_output=True, text=True)
            seen = r.stdout + r.stderr
            if 'PONG' in seen:
                pytest.fail('Redis loaded its dataset before tetherd could be started')
        assert 'LOADING' in seen, seen
        rc, err = start_stop(redis_config(rs.addr), timeout=60)
        assert READY in err, err
        assert rc == 0, err
    finally:
        rs.stop()
