"""Store operations completing late ([store] test_delay): connections dropped
while an operation is pending free nothing a later callback uses, and input
that arrives behind the element that started the operation waits for it
(even across the SASL stream restart)."""

import socket
import time

import pytest

import xmpp_raw as xr
from xmpp_raw import NS_SASL, NS_STREAM, q

NS_SASL2 = 'urn:xmpp:sasl:2'
DELAY = 3


@pytest.fixture
def slow(server_factory):
    from conftest import USERS
    # Dozens of failing logins from one address on purpose: the guessing
    # limits (test_auth_rate.py) must not turn the last real one away.
    srv = server_factory(**{'store.test_delay': DELAY, 'limits.auth_fail_burst_per_ip': 1000,
                            'limits.auth_fail_burst_per_account': 1000})
    for local, pw in USERS.items():
        srv.add_user(local, pw)
    srv.settle_users()
    return srv, dict(USERS)


def _tls_stream(srv):
    c = xr.XMPPConn.connect(srv.host, srv.port, domain=srv.domain)
    c.open_stream()
    c.starttls()
    return c


def _plain(user, pw):
    return xr.b64(('\0%s\0%s' % (user, pw)).encode())


def _drop(c):
    # RST rather than FIN: the server learns at once, mid-operation.
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
    c.abort()


def _still_works(srv, users, conns):
    c = _tls_stream(srv)
    conns.append(c)
    ok, cond = c.auth_plain('alice', users['alice'])
    assert ok, cond


@pytest.mark.parametrize('kind', ['plain', 'scram', 'sasl2-plain', 'sasl2-scram'])
def test_dropped_while_creds_lookup_pending(slow, conns, kind):
    srv, users = slow
    for i in range(20):
        c = _tls_stream(srv)
        if kind == 'plain':
            c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, _plain('alice', users['alice'])))
        elif kind == 'scram':
            c.send("<auth xmlns='%s' mechanism='SCRAM-SHA-256'>%s</auth>"
                   % (NS_SASL, xr.b64(b'n,,n=alice,r=abcdefghijklmnop')))
        elif kind == 'sasl2-plain':
            c.send("<authenticate xmlns='%s' mechanism='PLAIN'><initial-response>%s</initial-response>"
                   "</authenticate>" % (NS_SASL2, _plain('alice', users['alice'])))
        else:
            c.send("<authenticate xmlns='%s' mechanism='SCRAM-SHA-256'><initial-response>%s"
                   "</initial-response></authenticate>" % (NS_SASL2, xr.b64(b'n,,n=alice,r=abcdefghijklmnop')))
        if i % 2:
            # More input behind the pending element, then the drop.
            c.send_quiet("<iq type='get' id='x'><query xmlns='jabber:iq:version'/></iq>")
        _drop(c)
    _still_works(srv, users, conns)


def test_input_behind_auth_waits_and_starts_the_new_stream(slow, conns):
    """<auth/>, the restarted stream's header and a bind in one write: the
    bytes after <auth/> are parsed only once the lookup completed and the
    stream restarted, as the new stream."""
    srv, users = slow
    for _ in range(5):
        c = _tls_stream(srv)
        conns.append(c)
        c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>%s"
               "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
               % (NS_SASL, _plain('alice', users['alice']), c.stream_header()))
        # The reply comes in one piece (success, header, features, bind):
        # read raw bytes, the client's parser would choke on the restart.
        data = b''
        c.sock.settimeout(5)
        while b"id='b1'" not in data or not data.rstrip().endswith(b'</iq>'):
            chunk = c.sock.recv(65536)
            assert chunk, 'closed; got %r' % data
            data += chunk
        i_ok = data.index(b'<success')
        i_hdr = data.index(b'<stream:stream', i_ok)
        i_feat = data.index(b'<stream:features>', i_hdr)
        i_bind = data.index(b"<iq type='result' id='b1'>", i_feat)
        assert i_ok < i_hdr < i_feat < i_bind


def test_wrong_password_then_retry_behind_it(slow, conns):
    """A failing <auth/> and a second one in the same write: each waits for
    its own lookup, in order."""
    srv, users = slow
    c = _tls_stream(srv)
    conns.append(c)
    c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth><auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
           % (NS_SASL, _plain('alice', 'wrong'), NS_SASL, _plain('alice', users['alice'])))
    first = c.next()
    assert first.tag == q(NS_SASL, 'failure'), xr.tostr(first)
    second = c.next()
    assert second.tag == q(NS_SASL, 'success'), xr.tostr(second)


# ----------------------------------------------------------------------------- resume

def _sm_slow(server_factory):
    from conftest import USERS
    from sm_client import sm_overrides
    ov = sm_overrides()
    ov['store.test_delay'] = DELAY
    srv = server_factory(**ov)
    for local, pw in USERS.items():
        srv.add_user(local, pw)
    srv.settle_users()
    return srv, dict(USERS)


def test_dropped_while_resume_pending_leaves_session_resumable(server_factory, conns):
    """Resumes whose connection dies while the take is pending: whether the
    take never happened (cancelled) or happened just before the drop (then
    the new stream detaches the session again), the session is never left
    owned by nobody: a last resume gets it, queue intact."""
    from sm_client import kill, sm_authed, sm_login, is_sm, numbered, body_of
    srv, users = _sm_slow(server_factory)
    alice = sm_login(srv, 'alice', users['alice'])
    previd, jid = alice.sm_id, alice.jid
    kill(alice)
    srv.wait_log('session detached jid=%s' % jid, 10)
    bob = sm_login(srv, 'bob', users['bob'])
    conns.append(bob)
    bob.message(jid, numbered('q', 1))
    bob.ping()
    for _ in range(12):
        c = sm_authed(srv, 'alice', users['alice'])
        c.send("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>" % previd)
        kill(c)
    c = None
    for _ in range(50):   # a take that did happen detaches again on its own
        c = sm_authed(srv, 'alice', users['alice'])
        conns.append(c)
        el = c.resume(previd, 0)
        if is_sm(el, 'resumed'):
            break
        c.abort()
        time.sleep(0.1)
    assert is_sm(el, 'resumed'), xr.tostr(el)
    c.wait_bodies('q', 1)


@pytest.mark.parametrize('kind', ['fast', 'isr'])
def test_dropped_while_token_check_pending(slow, conns, kind):
    """HT-* logins (a FAST get and CAS, an ISR take with its proof) whose
    connection dies while the store has not answered yet."""
    srv, users = slow
    ir = xr.b64(b'alice\0' + b'\x01' * 32)
    if kind == 'fast':
        extra = "<user-agent id='d7b1c7e4-0000-4000-8000-000000000001'/><fast xmlns='urn:xmpp:fast:0'/>"
    else:
        extra = ("<inst-resume xmlns='https://xmpp.org/extensions/isr/0' with-isr-token='true'>"
                 "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/></inst-resume>" % ('A' * 22))
    for i in range(20):
        c = _tls_stream(srv)
        c.send("<authenticate xmlns='%s' mechanism='HT-SHA-256-NONE'><initial-response>%s"
               "</initial-response>%s</authenticate>" % (NS_SASL2, ir, extra))
        if i % 2:
            c.send_quiet("<iq type='get' id='x'><query xmlns='jabber:iq:version'/></iq>")
        _drop(c)
    # One that waits gets its answer: not authorized (no such token).
    c = _tls_stream(srv)
    conns.append(c)
    c.send("<authenticate xmlns='%s' mechanism='HT-SHA-256-NONE'><initial-response>%s"
           "</initial-response>%s</authenticate>" % (NS_SASL2, ir, extra))
    el = c.next()
    assert el.tag == q(NS_SASL2, 'failure'), xr.tostr(el)
    _still_works(srv, users, conns)
