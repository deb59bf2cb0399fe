"""SM queues are bounded in bytes as well as in stanzas ([sm] max_queue_bytes),
and a sender can never end someone else's session by filling its queue
(issue 11, items 3 and 4): what does not fit in a detached queue goes back
to its sender with resource-constraint; the session stays resumable and
everything it kept arrives on <resume/>, once, in order."""

import os

import pytest

import xmpp_raw as xr
from conftest import USERS
from sm_client import kill, numbered, sm_login, sm_overrides, sm_resume
from xmpp_raw import NS_CLIENT, q, tostr

BODY = 4000          # bytes of body per message
SENT = 60            # 60 x ~4.1 KB: far past a 64 KiB queue
QUEUE_BYTES = 65536


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


@pytest.fixture
def srv(server_factory):
    s = server_factory(**sm_overrides(max_queue_bytes=QUEUE_BYTES, max_resume=60))
    for user, pw in USERS.items():
        s.add_user(user, pw)
    s.settle_users()
    return s


def test_detached_queue_full_bounces_to_sender_and_session_survives(srv, conns):
    alice = sm_login(srv, 'alice', USERS['alice'], 'phone')
    jid = alice.jid
    kill(alice)
    srv.wait_log('session detached jid=%s' % jid, 10)

    bob = xr.login(srv, 'bob', USERS['bob'], 'desk')
    conns.append(bob)
    pad = 'x' * BODY
    for i in range(SENT):
        bob.message(jid, numbered('q', i) + ' ' + pad, id_='q%d' % i)
    # every message is either queued or comes back: none vanishes
    bob.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=srv.domain, timeout=30)
    errors = []
    while True:
        el = bob.maybe(lambda e: e.tag == q(NS_CLIENT, 'message') and e.get('type') == 'error', 2.0)
        if el is None:
            break
        errors.append(el)
    assert errors, 'nothing bounced: the queue took %d x %d bytes past %d' % (SENT, BODY, QUEUE_BYTES)
    for el in errors:
        assert xr.stanza_error(el)[1] == 'resource-constraint', tostr(el)
    bounced = sorted(int(el.get('id')[1:]) for el in errors)
    kept = SENT - len(bounced)
    # the bound is on bytes: about 64 KiB of 4 KB stanzas, never all 60
    assert 8 <= kept <= QUEUE_BYTES // BODY, (kept, bounced)
    assert bounced == list(range(kept, SENT)), bounced   # the first ones fit, the rest came back
    assert 'session expired' not in srv.log()

    # the session lives on and gives back exactly what it kept, in order
    c, el = sm_resume(srv, 'alice', USERS['alice'], alice.sm_id, 0, auto_ack=True)
    conns.append(c)
    assert xr.local(el.tag) == 'resumed', tostr(el)
    got = c.wait_bodies('q', kept, timeout=15)
    assert [b.split(' ')[0] for b in got] == [numbered('q', i) for i in range(kept)]
    c.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=srv.domain, timeout=10)
    assert len(c.messages('q')) == kept, 'more than the queue kept arrived'


@pytest.mark.skipif(os.environ.get('TETHER_BUILD', 'build').rstrip('/').endswith('asan'),
                    reason='RSS is measured on the release build only')
def test_four_full_detached_sessions_cost_little_memory(server_factory, conns):
    """Issue 11 item 4: 4 detached sessions filled to the brim grow RSS by
    < 150 MiB (with the default 1 MiB bound they hold about 4 MiB)."""
    s = server_factory(**sm_overrides(max_resume=60))
    for user, pw in USERS.items():
        s.add_user(user, pw)
    s.settle_users()
    before = rss_kib(s.pid)
    victims = []
    for r in range(4):
        a = sm_login(s, 'alice', USERS['alice'], 'r%d' % r)
        victims.append(a.jid)
        kill(a)
        s.wait_log('session detached jid=%s' % a.jid, 10)
    bob = xr.login(s, 'bob', USERS['bob'], 'desk')
    conns.append(bob)
    pad = 'y' * 16000
    for jid in victims:
        for i in range(100):                 # 1.6 MB each: past the 1 MiB bound
            bob.message(jid, pad, id_='m%d' % i)
    bob.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=s.domain, timeout=60)
    grown = rss_kib(s.pid) - before
    assert grown < 150 * 1024, 'RSS grew %d KiB' % grown
