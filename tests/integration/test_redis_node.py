"""tetherd serving with [store] backend = redis: users added with tetherctl log
in (the SASL lookup goes through each worker's rlink, store/redis_async.c),
messages flow, and XEP-0198 sessions live in Redis (t:{bare}:s:<sid>)."""

import pytest

import conftest as cf
import sm_client as smc
import xmpp_raw as xr
from redis_server import redis  # noqa: F401  (fixture)

# Every server here names its store: the TETHER_STORE=redis run skips this file.
pytestmark = pytest.mark.fixed_store


@pytest.fixture
def rserver(server_factory, redis):  # noqa: F811
    s = server_factory(backend='redis', **{'store.redis': redis.addr, 'cluster.node': 'a'})
    s.redis = redis
    return s


def test_starts_and_logs_in_users_from_tetherctl(rserver):
    rserver.add_user('alice', 'alice-pw')
    rserver.add_user('bob', 'bob-pw')
    assert 't:{alice@localhost}:user' in rserver.redis.cli('KEYS', 't:*:user')
    a = xr.login(rserver, 'alice', 'alice-pw', 'laptop')
    b = xr.login(rserver, 'bob', 'bob-pw', 'phone', direct_tls=True)
    try:
        xr.message_roundtrip(a, b)
    finally:
        a.close()
        b.close()
    # a wrong password and an unknown user fail like on the memory store
    c = xr.connect_tls(rserver)
    try:
        ok, cond = c.authenticate('alice', 'wrong')
        assert not ok and cond == 'not-authorized', cond
    finally:
        c.abort()
    c = xr.connect_tls(rserver)
    try:
        ok, cond = c.authenticate('nobody', 'x')
        assert not ok and cond == 'not-authorized', cond
    finally:
        c.abort()
    for marker in cf.SANITIZER_MARKERS:
        assert marker not in rserver.log()


def test_password_change_applies_at_once(rserver):
    """No reload delay on Redis: tetherctl writes, the next login reads."""
    rserver.add_user('carol', 'one')
    xr.login(rserver, 'carol', 'one', 'a').close()
    rserver.passwd('carol', 'two')
    c = xr.connect_tls(rserver)
    try:
        ok, cond = c.authenticate('carol', 'one')
        assert not ok, 'the old password still works'
    finally:
        c.abort()
    xr.login(rserver, 'carol', 'two', 'a').close()


def test_sm_session_in_redis_and_resume(rserver):
    rserver.add_user('dave', 'dave-pw')
    conn = smc.sm_login(rserver, 'dave', 'dave-pw', 'phone', enable=False)
    el = conn.enable(resume=True)
    assert xr.local(el.tag) == 'enabled', xr.tostr(el)
    sid = conn.sm_id
    assert rserver.redis.cli('HGET', 't:{dave@localhost}:s:%s' % sid, 'owner').startswith('a.')
    h = conn.h
    smc.kill(conn)
    new, reply = smc.sm_resume(rserver, 'dave', 'dave-pw', sid, h)
    try:
        assert xr.local(reply.tag) == 'resumed', xr.tostr(reply)
        assert rserver.redis.cli('HGET', 't:{dave@localhost}:s:%s' % sid, 'epoch').strip() == '2'
    finally:
        new.close()


def _get(port, path):
    import http.client
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
    try:
        c.request('GET', path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def _wait_status(port, want, timeout=10.0):
    import time
    deadline = time.monotonic() + timeout
    while True:
        status, body = _get(port, '/readyz')
        if status == want or time.monotonic() > deadline:
            return status, body
        time.sleep(0.1)


def test_readyz_follows_redis_and_recovers(server_factory, redis):  # noqa: F811
    """/readyz says not ready while the workers cannot reach Redis; a Redis
    that comes back empty gets the library from the links' first command,
    and logins work again."""
    import redis_server as rs
    port = cf.free_port()
    s = server_factory(backend='redis', **{'store.redis': redis.addr, 'cluster.node': 'a',
                                           'admin.listen': '127.0.0.1:%d' % port})
    status, body = _wait_status(port, 200)
    assert status == 200, body
    redis.stop()
    status, body = _wait_status(port, 503)
    assert status == 503 and 'no connection to redis' in body, (status, body)
    again = rs.RedisServer(redis.dir)            # same socket, empty: no library, no users
    try:
        status, body = _wait_status(port, 200)
        assert status == 200, body
        assert 'tether' in again.cli('FUNCTION', 'LIST', 'LIBRARYNAME', 'tether')
        s.add_user('erin', 'erin-pw')
        xr.login(s, 'erin', 'erin-pw', 'x').close()
    finally:
        again.stop()
