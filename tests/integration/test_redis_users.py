"""tetherctl with [store] backend = redis: users land in Redis under the
documented keys (t:{bare}:user, see store/redis_lib.lua and store/redis.c),
through the FUNCTION library; a password change revokes FAST and ISR."""

import hashlib
import hmac
import subprocess

import pytest

import conftest as cf
from redis_server import redis  # noqa: F401  (fixture)

# Every server here names its store: the TETHER_STORE=redis run skips this file.
pytestmark = pytest.mark.fixed_store


@pytest.fixture
def ctl_config(tmp_path, tls_cert, redis):  # noqa: F811
    cf.require_binaries()
    cert, key = tls_cert
    p = tmp_path / 'ctl.ini'
    p.write_text('[server]\ndomain = localhost\n[tls]\ncert = %s\nkey = %s\n'
                 '[store]\nbackend = redis\nredis = %s\npath = %s\n[cluster]\nnode = a\n'
                 % (cert, key, redis.addr, tmp_path / 'var'))
    return str(p)


def ctl(config, *args, stdin=None):
    return subprocess.run([str(cf.tetherctl_path()), '-c', config, *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def user_hash(redis, bare):  # noqa: F811
    flat = redis.command('HGETALL', 't:{%s}:user' % bare)
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def scram_keys(password, salt, iterations, name):
    salted = hashlib.pbkdf2_hmac(name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b'Client Key', name).digest()
    return hashlib.new(name, client_key).digest(), hmac.new(salted, b'Server Key', name).digest()


def assert_password(redis, bare, password):  # noqa: F811
    u = user_hash(redis, bare)
    assert set(u) == {'salt', 'iter', 'stored_sha1', 'server_sha1', 'stored_sha256', 'server_sha256'}
    it = int(u['iter'])
    assert (u['stored_sha1'], u['server_sha1']) == scram_keys(password, u['salt'], it, 'sha1')
    assert (u['stored_sha256'], u['server_sha256']) == scram_keys(password, u['salt'], it, 'sha256')


def test_adduser_list_passwd_deluser(ctl_config, redis):  # noqa: F811
    # No node has run: tetherctl loads the library itself.
    assert redis.command('FUNCTION', 'LIST', 'LIBRARYNAME', 'tether') == []
    r = ctl(ctl_config, 'adduser', 'alice@localhost', stdin='secret-1\n')
    assert r.returncode == 0, r.stderr
    assert redis.command('FUNCTION', 'LIST', 'LIBRARYNAME', 'tether') != []
    assert_password(redis, 'alice@localhost', 'secret-1')
    r = ctl(ctl_config, 'adduser', 'alice@localhost', stdin='other\n')
    assert r.returncode == 1 and 'already exists' in r.stderr
    assert ctl(ctl_config, 'adduser', 'bob@localhost', stdin='secret-2\n').returncode == 0
    r = ctl(ctl_config, 'list')
    assert r.returncode == 0 and r.stdout == 'alice@localhost\nbob@localhost\n', r.stdout

    # Tokens of the account, as the session code will write them.
    redis.command('HSET', 't:{alice@localhost}:fast', 'v', '7', 'v:ua', '7', 'b:ua', 'slots')
    redis.command('HSET', 't:{alice@localhost}:isr', 'sid1', 'sealed')
    r = ctl(ctl_config, 'passwd', 'alice@localhost', stdin='secret-3\n')
    assert r.returncode == 0, r.stderr
    assert_password(redis, 'alice@localhost', 'secret-3')
    # Revoked in the same function: FAST entries and ISR tokens gone, the
    # version counter kept (no version is ever given twice).
    fast = redis.command('HGETALL', 't:{alice@localhost}:fast')
    assert fast == [b'v', b'7']
    assert redis.command('EXISTS', 't:{alice@localhost}:isr') == 0

    r = ctl(ctl_config, 'passwd', 'nobody@localhost', stdin='x\n')
    assert r.returncode == 1 and 'does not exist' in r.stderr
    assert ctl(ctl_config, 'deluser', 'alice@localhost').returncode == 0
    assert redis.command('EXISTS', 't:{alice@localhost}:user') == 0
    r = ctl(ctl_config, 'deluser', 'alice@localhost')
    assert r.returncode == 1 and 'does not exist' in r.stderr
    assert ctl(ctl_config, 'list').stdout == 'bob@localhost\n'


def test_import_100(ctl_config, redis):  # noqa: F811
    assert ctl(ctl_config, 'adduser', 'u7@localhost', stdin='old\n').returncode == 0
    lines = ''.join('u%d@localhost pass-%d\n' % (i, i) for i in range(100))
    r = ctl(ctl_config, 'import', stdin=lines)
    assert r.returncode == 0, r.stderr
    assert 'imported 100 users (1 replaced)' in r.stderr
    listed = ctl(ctl_config, 'list').stdout.split()
    assert sorted(listed) == sorted('u%d@localhost' % i for i in range(100))
    keys = redis.command('KEYS', 't:{*}:user')
    assert len(keys) == 100
    for i in (0, 7, 99):
        assert_password(redis, 'u%d@localhost' % i, 'pass-%d' % i)


def test_import_refuses_bad_line_writes_nothing(ctl_config, redis):  # noqa: F811
    r = ctl(ctl_config, 'import', stdin='a@localhost pw\nnot-a-jid\n')
    assert r.returncode == 1 and 'stdin:2' in r.stderr
    assert redis.command('KEYS', 't:{*}:user') == []


def test_unreachable_redis_names_address(tmp_path, tls_cert):
    cf.require_binaries()
    cert, key = tls_cert
    addr = '127.0.0.1:%d' % cf.free_port()
    p = tmp_path / 'down.ini'
    p.write_text('[tls]\ncert = %s\nkey = %s\n[store]\nbackend = redis\nredis = %s\n'
                 '[cluster]\nnode = a\n' % (cert, key, addr))
    r = ctl(str(p), 'list')
    assert r.returncode == 1 and addr in r.stderr, r.stderr
