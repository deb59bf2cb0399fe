"""XEP-0198 with a real client: slixmpp 1.8.3 (Debian python3-slixmpp), plugin xep_0198.

slixmpp enables SM with resumption, acks flow both ways, then the test drops
the TCP connection abruptly (RST, no </stream:stream>), another account sends
20 messages while the session is detached, and slixmpp resumes (driven by
hand: connect() again, wait for session_resumed) and must get each exactly
once, in order.
"""

import asyncio
import contextlib
import socket
import struct

import pytest

import xmpp_raw as xr
from conftest import USERS
from sm_client import SM_ID_RE, numbered, sm_overrides

pytest.importorskip('slixmpp')


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def sm_srv(server_factory):
    srv = server_factory(**sm_overrides(max_resume=60, ack_after_ms=500))
    for user, pw in USERS.items():
        srv.add_user(user, pw)
    srv.settle_users()
    return srv


async def wait_future(fut, timeout, what):
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except asyncio.TimeoutError:
        raise AssertionError('slixmpp: no %s within %ss' % (what, timeout)) from None


async def wait_until(pred, timeout, what):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError('timeout (%ss) waiting for %s' % (timeout, what))
        await asyncio.sleep(0.05)


def rst_abort(xmpp):
    """Abrupt TCP drop of a slixmpp connection: SO_LINGER 0 + transport.abort() → RST,
    no </stream:stream>, no TLS close_notify."""
    sock = xmpp.transport.get_extra_info('socket')
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    xmpp.transport.abort()


def test_slixmpp_sm_resume_after_abrupt_drop(sm_srv):
    srv = sm_srv

    async def main():
        loop = asyncio.get_running_loop()
        bob = await asyncio.to_thread(xr.login, srv, 'bob', USERS['bob'], 'b', presence=True)
        a = xr.slix_client(srv, 'alice', USERS['alice'], 'slix')
        a.register_plugin('xep_0198')
        sm = a.plugin['xep_0198']
        sm.window = 5                    # <r/> after every 5 sent stanzas (the default)
        enabled, resumed = loop.create_future(), loop.create_future()
        disconnected = asyncio.Event()
        stats = {'acks_sent': 0, 'acked': 0, 'sm_failed': 0}

        def on_enabled(st):
            if not enabled.done():
                enabled.set_result(st)

        def on_resumed(st):
            if not resumed.done():
                resumed.set_result(st)

        orig_send_ack = sm.send_ack

        def counting_send_ack():
            stats['acks_sent'] += 1
            orig_send_ack()
        sm.send_ack = counting_send_ack
        a.add_event_handler('sm_enabled', on_enabled)
        a.add_event_handler('session_resumed', on_resumed)
        a.add_event_handler('stanza_acked', lambda st: stats.__setitem__('acked', stats['acked'] + 1))
        a.add_event_handler('sm_failed', lambda st: stats.__setitem__('sm_failed', stats['sm_failed'] + 1))
        a.add_event_handler('disconnected', lambda ev: disconnected.set())
        try:
            srv.settle_users()
            a.start()
            await wait_future(a.session_started, 15, 'session_start')
            st = await wait_future(enabled, 10, 'sm_enabled')
            assert st['resume'] in (True, 'true', '1'), str(st)
            assert SM_ID_RE.match(sm.sm_id or ''), 'SM-ID %r' % sm.sm_id
            jid = str(a.boundjid)
            a.send_presence()

            # client → server stanzas, acked by the server (slixmpp sends <r/> every 5)
            for i in range(6):
                a.send_message(mto=bob.jid, mbody=numbered('up', i), mtype='chat')
            await asyncio.to_thread(lambda: [bob.wait_message(numbered('up', i)) for i in range(6)])
            await wait_until(lambda: stats['acked'] >= 1, 10, 'server <a/> for slixmpp\'s <r/>')
            sm.request_ack()
            await wait_until(lambda: not sm.unacked_queue, 10, 'server acks of all of alice\'s stanzas')
            assert stats['acked'] == 7, stats            # presence + 6 messages

            # server → client stanzas, the server asks (<r/> after 5) and slixmpp answers
            for i in range(6):
                bob.message(jid, numbered('down', i))
            got = []
            while len(got) < 6:
                m = await asyncio.wait_for(a.inbox.get(), 10)
                got.append(m['body'])
            assert got == [numbered('down', i) for i in range(6)]
            await wait_until(lambda: stats['acks_sent'] >= 1, 10, 'slixmpp <a/> for the server\'s <r/>')
            handled_before = sm.handled

            # abrupt drop; the server keeps the session
            rst_abort(a)
            await asyncio.wait_for(disconnected.wait(), 10)
            await asyncio.to_thread(srv.wait_log, 'session detached jid=%s' % jid, 10)
            for i in range(20):
                bob.message(jid, numbered('gone', i))
            await asyncio.to_thread(bob.roundtrip)      # all 20 routed (queued) by now

            # resume by hand
            srv.settle_users()
            a.start()
            await wait_future(resumed, 15, 'session_resumed')
            assert sm.handled >= handled_before
            got = []
            while len(got) < 20:
                try:
                    m = await asyncio.wait_for(a.inbox.get(), 10)
                except asyncio.TimeoutError:
                    raise AssertionError('after resume only %d of 20 messages: %s' % (len(got), got)) from None
                got.append(m['body'])
            await asyncio.sleep(1.0)
            while not a.inbox.empty():
                got.append(a.inbox.get_nowait()['body'])
            assert got == [numbered('gone', i) for i in range(20)], 'not exactly once in order: %s' % got
            await asyncio.to_thread(srv.wait_log, 'session resumed jid=%s' % jid, 5)
            assert str(a.boundjid) == jid
            assert stats['sm_failed'] == 0

            # the resumed stream still works both ways
            a.send_message(mto=bob.jid, mbody='after-resume', mtype='chat')
            await asyncio.to_thread(bob.wait_message, 'after-resume')
            bob.message(jid, 'to-resumed')
            m = await asyncio.wait_for(a.inbox.get(), 10)
            assert m['body'] == 'to-resumed'
        finally:
            await xr.slix_close(a)
            await asyncio.to_thread(bob.close)

    run(main())
