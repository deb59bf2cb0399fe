"""What a client sent before its connection went away is processed (RFC 6120
§4.4), even when it waited for a store operation at that moment; and what
was delivered to the session meanwhile is not sent into the dead socket.
Redis is held in DEBUG SLEEP so that the operation is still pending when
the server sees the connection close."""

import subprocess
import time

import pytest

import sm_client as smc
import xmpp_raw as xr
from redis_server import redis  # noqa: F401  (fixture)

# Every server here names its store: the TETHER_STORE=redis run skips this file.
pytestmark = pytest.mark.fixed_store

USERS = {'alice': 'alice-pw', 'bob': 'bob-pw', 'carol': 'carol-pw'}


@pytest.fixture
def rserver(server_factory, redis):  # noqa: F811
    s = server_factory(backend='redis', log_level='debug',
                       **{'store.redis': redis.addr, 'cluster.node': 'a'})
    s.redis = redis
    for user, pw in USERS.items():
        s.add_user(user, pw)
    return s


class RedisAsleep:
    """Redis blocked for <seconds> from the time the with-block starts."""

    def __init__(self, redis, seconds):  # noqa: F811
        self.p = subprocess.Popen([redis.cli_bin, '-s', redis.sock, 'DEBUG', 'SLEEP', str(seconds)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        time.sleep(0.2)                           # asleep now
        return self

    def __exit__(self, *exc):
        self.p.wait(10)


def test_parked_message_then_hang_up(rserver, conns):
    """A message to an offline account waits for the account lookup; the
    sender closes its stream and its socket meanwhile. A message delivered
    to the sender's full JID in that time is stored offline for it, not
    written to the dead socket."""
    carol = xr.login(rserver, 'carol', USERS['carol'], 'c')
    conns.append(carol)
    a = xr.login(rserver, 'alice', USERS['alice'], 'a')
    a.roundtrip()
    carol.message(a.jid, 'warm-up')               # carol's own loads are done
    a.wait_message('warm-up')
    carol.roundtrip()
    with RedisAsleep(rserver.redis, 1.5):
        # One write: the server stops reading while the first message
        # waits for the store, so a </stream:stream> sent apart from it
        # may stay unread until Redis answers, and a message written to
        # the session meanwhile is lost as on any stream without XEP-0198.
        a.send("<message to='bob@localhost' type='chat' id='p1'><body>parked-1</body></message>"
               "<message to='bob@localhost' type='chat' id='p2'><body>parked-2</body></message>"
               "</stream:stream>")
        a.abort()                                 # then the socket
        time.sleep(0.3)                           # the server saw the close
        carol.message(a.jid, 'while-gone')
    b = xr.login(rserver, 'bob', USERS['bob'], 'b')
    conns.append(b)
    assert xr.message_bodies(b, 2) == ['parked-1', 'parked-2']
    a = xr.login(rserver, 'alice', USERS['alice'], 'a2')
    conns.append(a)
    assert xr.message_bodies(a, 1) == ['while-gone']
    assert carol.maybe(lambda e: e.get('type') == 'error', 0.5) is None


def test_parked_input_of_a_dropped_sm_session_is_counted(rserver, conns):
    """With XEP-0198 and no </stream:stream>: the parked message is routed
    and counted in h before the session detaches, so a resume says so and
    the client does not send it twice."""
    a = smc.sm_login(rserver, 'alice', USERS['alice'], 'a')
    sid = a.sm_id
    with RedisAsleep(rserver.redis, 1.5):
        a.send("<message to='bob@localhost' type='chat' id='s1'><body>sm-parked</body></message>")
        smc.kill(a)
    new, el = smc.sm_resume(rserver, 'alice', USERS['alice'], sid, 0)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', xr.tostr(el)
    assert el.get('previd') == sid
    assert int(el.get('h')) == 1, xr.tostr(el)
    b = xr.login(rserver, 'bob', USERS['bob'], 'b')
    conns.append(b)
    assert xr.message_bodies(b, 1) == ['sm-parked']
