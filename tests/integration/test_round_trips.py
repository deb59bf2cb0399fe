"""Client->server flights from TCP connect to a resumed session.

Counted with sasl2_client.FlightSocket (TLS through memory BIOs), the same
definition tether-bench uses (bench/net.c): the TCP connect (SYN) is flight 1;
a client write starts a new flight iff server bytes arrived since the client's
previous write. The count stops at the write that gets the session resumed
(the server's answer to it contains <resumed/>). No TLS session resumption
(every connection does a full handshake) and no 0-RTT.

  classic_starttls   TCP, stream header, <starttls/>, TLS, header, SCRAM (RFC 6120,
                     2 client messages), restart, <resume/>          expect 9 (TLS 1.3)
  classic_direct_tls the same on the direct-TLS port (for comparison)
  isr_direct_tls     TLS, then header + <authenticate HT-*><inst-resume/> in one write
  fast_direct_tls    TLS, then header + <authenticate HT-*><fast/><resume/><bind/> in one write

ISR and FAST must take exactly ONE flight once the TLS handshake is done:
total == 1 (TCP) + TLS handshake flights + 1. The client's TLS 1.3 Finished
leaves in the same write as its first XMPP bytes, so on TLS 1.3 the handshake
counts one flight (the ClientHello) and the total is 3.

Counts are printed (run with -s) and written to build/round_trips.json.
"""

import json
import pytest

import xmpp_raw as xr
from conftest import REPO, USERS
from sasl2_client import (assert_success, bind2_xml, check_ht_success, ht_initiator,
                          inst_resume_xml, kill, open_conn, resume_xml, sasl2_login, success_parts)
from sm_client import sm_login, sm_overrides
from xmpp_raw import NS_STREAM, q, tostr

OUT = REPO / 'build' / 'round_trips.json'


@pytest.fixture
def srv(server_factory):
    s = server_factory(**sm_overrides(max_resume=60))
    for u, pw in USERS.items():
        s.add_user(u, pw)
    s.settle_users()
    return s


def record(name, sock, **extra):
    data = {}
    if OUT.exists():
        try:
            data = json.loads(OUT.read_text())
        except ValueError:
            data = {}
    entry = {'flights': sock.flights, 'tls': sock.version(),
             'tls_handshake_flights': sock.handshake_flights}
    entry.update(extra)
    data[name] = entry
    data['_definition'] = ('client->server flights from TCP connect (SYN = flight 1) to the write '
                           'answered by <resumed/>; a write starts a new flight iff server bytes '
                           'arrived since the previous client write (as tether-bench); full TLS '
                           'handshake, no 0-RTT. tests/integration/test_round_trips.py')
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2, sort_keys=True) + '\n')
    print('\nround trips %-20s %d flights (%s, TLS handshake flights %s) %s'
          % (name, sock.flights, sock.version(), sock.handshake_flights, extra or ''))


def detached_session(srv, sasl2=False, request_token=None):
    """alice with a resumable session, dropped (RST); one message queued for her."""
    if sasl2:
        a, el = sasl2_login(srv, 'alice', USERS['alice'], tag='rt', isr_mech='HT-SHA-256-ENDP',
                            request_token=request_token)
        a.wait_for(q(NS_STREAM, 'features'))
    else:
        a = sm_login(srv, 'alice', USERS['alice'], 'rt')
    bob = xr.login(srv, 'bob', USERS['bob'], 'b', presence=False)
    kill(a)
    srv.wait_log('session detached jid=%s' % a.jid, 10)
    bob.message(a.jid, 'queued')
    bob.roundtrip()
    bob.close()
    return a


def classic(srv, direct_tls, name):
    a = detached_session(srv)
    c = open_conn(srv, direct_tls=direct_tls, flights=True)
    try:
        if direct_tls:
            c.open_stream()
        ok, cond = c.authenticate('alice', USERS['alice'], 'SCRAM-SHA-256')
        assert ok, cond
        c.open_stream()
        el = c.resume(a.sm_id, a.h)
        assert xr.local(el.tag) == 'resumed', tostr(el)
        c.wait_bodies('queued', 1)
        record(name, c.sock)      # before close() writes </stream:stream>
        return c.sock.flights, c.sock.version(), list(c.sock.log)
    finally:
        c.close()


def test_classic_starttls(srv):
    flights, version, log = classic(srv, False, 'classic_starttls')
    if version == 'TLSv1.3':
        assert flights == 9, log


def test_classic_direct_tls(srv):
    flights, version, log = classic(srv, True, 'classic_direct_tls')
    if version == 'TLSv1.3':
        assert flights == 7, log


def one_flight_checks(sock):
    assert sock.flights == 1 + sock.handshake_flights + 1, (
        'expected TCP + %d TLS handshake flight(s) + 1, counted %d: %s'
        % (sock.handshake_flights, sock.flights, sock.log))
    if sock.version() == 'TLSv1.3':
        assert sock.handshake_flights == 1 and sock.flights == 3


def test_isr_direct_tls(srv):
    a = detached_session(srv, sasl2=True)
    mech = 'HT-SHA-256-ENDP'
    c = open_conn(srv, flights=True)
    try:
        cb = c.cb_data(mech)
        c.pipelined(c.authenticate_xml(mech, ht_initiator('alice', a.isr_token, cb), None,
                                       inst_resume_xml(a.sm_id, a.h)),
                    from_=srv.jid('alice'), resume_h=a.h)
        el = c.sasl2_reply()
        check_ht_success(el, a.isr_token, cb)
        assert success_parts(el)['inst_resumed'] is not None, tostr(el)
        c.wait_bodies('queued', 1)
        c.read_idle(0.3)
        record('isr_direct_tls', c.sock)
        one_flight_checks(c.sock)
    finally:
        c.close()


def test_fast_direct_tls(srv):
    mech = 'HT-SHA-256-ENDP'
    a = detached_session(srv, sasl2=True, request_token=mech)
    token = a.fast_token
    assert token
    c = open_conn(srv, flights=True)
    try:
        cb = c.cb_data(mech)
        inline = ("<fast xmlns='urn:xmpp:fast:0'/>" + resume_xml(a.sm_id, a.h)
                  + bind2_xml('rt', enable=True))
        c.pipelined(c.authenticate_xml(mech, ht_initiator('alice', token, cb), a.ua_id, inline),
                    from_=srv.jid('alice'), resume_h=a.h)
        el = c.sasl2_reply()
        check_ht_success(el, token, cb)
        p = success_parts(assert_success(el))
        assert p['resumed'] is not None, tostr(el)
        assert p['token'] is not None
        c.wait_bodies('queued', 1)
        c.read_idle(0.3)
        record('fast_direct_tls', c.sock)
        one_flight_checks(c.sock)
    finally:
        c.close()
