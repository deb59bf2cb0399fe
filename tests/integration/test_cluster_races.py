"""Cluster races with real clients: a node killed between the takeover in
Redis and the <resumed/> it would have sent, and slixmpp (a real client
library) resuming through HAProxy on another node after its node died.

Each test starts a real redis-server (AOF), three tetherd nodes and, where
it says so, HAProxy in front of their STARTTLS ports."""

import asyncio
import signal
import subprocess
import time

import pytest

import conftest as cf
import sm_client as smc
import xmpp_raw as xr
from test_cluster import assert_exactly, cluster, haproxy, queue_while_detached, sm_login  # noqa: F401
from xmpp_raw import tostr

# Every server here names its store: the TETHER_STORE=redis run skips this file.
pytestmark = pytest.mark.fixed_store


def test_node_killed_between_take_and_resumed_resume_on_a_third(cluster, conns):
    """Node b performs the takeover (Redis runs its tether_sm_take) but dies
    before its <resumed/> reaches the client: the client, which never heard
    of b's success, resumes on c with the h it had. c takes the session
    from b and hands out everything unacknowledged, once, in order.

    Redis is made to sleep (DEBUG SLEEP) while b's take is on its way, and
    b is killed meanwhile: Redis then runs the take b had sent, for a node
    that no longer exists."""
    a, b, c = cluster.nodes['a'], cluster.nodes['b'], cluster.nodes['c']
    alice = sm_login(a, 'alice', 'phone')
    sid, jid = alice.sm_id, alice.jid
    queue_while_detached(a, jid, 't', 5)          # sent to alice, never acked
    alice.wait_bodies('t', 5, timeout=10)
    smc.kill(alice)
    on_b = smc.sm_authed(b, 'alice', cf.USERS['alice'])
    conns.append(on_b)
    # Margins for a loaded machine: b has 0.8 s to send its take, and is
    # killed at least 1.2 s before Redis wakes.
    sleeper = subprocess.Popen([cluster.redis.cli_bin, '-s', cluster.redis.sock, 'DEBUG', 'SLEEP', '2.5'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)                           # Redis is asleep now
        on_b.send("<resume xmlns='%s' previd=%s h='0'/>" % (smc.NS_SM, xr.quoteattr(sid)))
        time.sleep(0.8)                           # b has sent its take
        b.stop(signal.SIGKILL)
    finally:
        sleeper.wait(10)
    rec = 't:{alice@localhost}:s:%s' % sid
    assert cluster.redis.cli('HGET', rec, 'owner').startswith('b.'), 'the take did not run for b'
    assert cluster.redis.cli('HGET', rec, 'att').strip() == '1'
    new, el = smc.sm_resume(c, 'alice', cf.USERS['alice'], sid, 0, auto_ack=True)
    conns.append(new)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    assert int(el.get('h')) == 0
    assert_exactly(new, 't', 5)
    assert cluster.redis.cli('HGET', rec, 'owner').startswith('c.')


def test_slixmpp_resumes_through_haproxy_after_its_node_died(cluster, haproxy):
    """slixmpp's own XEP-0198 plugin (python3-slixmpp), connected through
    HAProxy, lands on node a ('balance first'); a is killed with SIGKILL
    while messages to alice are in flight; slixmpp reconnects to the same
    address, lands on a live node and resumes: every message once, in
    order, and the stream works both ways afterwards."""
    pytest.importorskip('slixmpp')
    from test_sm_slixmpp import wait_future
    a, b = cluster.nodes['a'], cluster.nodes['b']

    async def main():
        loop = asyncio.get_running_loop()
        bob = await asyncio.to_thread(xr.login, b, 'bob', cf.USERS['bob'], 'desk', presence=True)
        x = xr.slix_client(haproxy, 'alice', cf.USERS['alice'], 'slix')
        x.register_plugin('xep_0198')
        enabled, resumed = loop.create_future(), loop.create_future()
        disconnected = asyncio.Event()
        x.add_event_handler('sm_enabled', lambda st: enabled.done() or enabled.set_result(st))
        x.add_event_handler('session_resumed', lambda st: resumed.done() or resumed.set_result(st))
        x.add_event_handler('disconnected', lambda ev: disconnected.set())
        try:
            x.start()
            await wait_future(x.session_started, 15, 'session_start')
            await wait_future(enabled, 10, 'sm_enabled')
            jid = str(x.boundjid)
            x.send_presence()
            for i in range(10):
                bob.message(jid, smc.numbered('m', i))
            got = []
            while len(got) < 3:                    # some arrive before the crash
                got.append((await asyncio.wait_for(x.inbox.get(), 10))['body'])
            a.stop(signal.SIGKILL)
            await asyncio.wait_for(disconnected.wait(), 15)
            await asyncio.to_thread(haproxy.wait_down, 'a')
            x.start()
            await wait_future(resumed, 20, 'session_resumed')
            while len(got) < 10:
                try:
                    got.append((await asyncio.wait_for(x.inbox.get(), 10))['body'])
                except asyncio.TimeoutError:
                    raise AssertionError('after resume only %s' % got) from None
            await asyncio.sleep(1.0)
            while not x.inbox.empty():
                got.append(x.inbox.get_nowait()['body'])
            assert got == [smc.numbered('m', i) for i in range(10)], 'not exactly once in order: %s' % got
            assert str(x.boundjid) == jid
            x.send_message(mto=bob.jid, mbody='after-resume', mtype='chat')
            await asyncio.to_thread(bob.wait_message, 'after-resume')
        finally:
            await xr.slix_close(x)
            await asyncio.to_thread(bob.close)

    asyncio.run(asyncio.wait_for(main(), 90))

