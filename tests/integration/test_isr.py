"""XEP-0397 Instant Stream Resumption on tether, raw XML, and the security
stance of /work/shared/protocol/isr.md §8 (one test per point).

Token comparison in constant time (stance C) is a unit test:
tests/unit/test_token.c (secret_eq / ht_verify); it is not observable here.

"One flight" (test_isr_pipelined_one_flight): the client writes the stream
header and <authenticate><inst-resume/></authenticate> in ONE write right
after the TLS handshake (its TLS 1.3 Finished rides in the same write), then
only reads, with an idle gap of 0.5 s. Everything needed - server stream
header, features, <success/> with <inst-resumed/> and a fresh token, and the
queued stanzas - must have arrived by then, and the FlightSocket must show a
single client flight from that write on (nothing else had to be sent)."""

import time

import pytest

import xmpp_raw as xr
from conftest import USERS
from sasl2_client import (NS_ISR, NS_SASL2, TOKEN_RE, assert_success, bind2_xml,
                          check_ht_success, failure_condition, ht_initiator, inst_resume_xml, isr_race,
                          kill, new_ua_id, open_conn, sasl2_login, success_parts)
from sm_client import NS_SM, sm_condition, sm_overrides
from xmpp_raw import NS_CLIENT, NS_STREAM, q, tostr

NS_DELAY = 'urn:xmpp:delay'


@pytest.fixture
def srv(server_factory):
    s = server_factory(**sm_overrides(max_resume=60))
    for u, pw in USERS.items():
        s.add_user(u, pw)
    s.settle_users()
    return s


@pytest.fixture
def srv_many_failures(server_factory):
    """As srv, for a test that makes 70 failures from one address on purpose:
    the guessing limits (test_auth_rate.py) would refuse most of them."""
    s = server_factory(**sm_overrides(max_resume=60), **{
        'limits.auth_fail_burst_per_ip': 1000, 'limits.auth_fail_burst_per_account': 1000})
    for u, pw in USERS.items():
        s.add_user(u, pw)
    s.settle_users()
    return s


# ---------------------------------------------------------------- helpers

def enable_rfc6120(srv, user, mech):
    """RFC 6120 SASL (SCRAM) + restart + bind + <enable><isr-enable/></enable>."""
    c = open_conn(srv)
    c.ua_id = None
    c.open_stream()
    ok, cond = c.authenticate(user, USERS[user], 'SCRAM-SHA-256')
    assert ok, cond
    feats = c.open_stream()
    isr = feats.find(q(NS_ISR, 'isr'))
    assert isr is not None, 'post-auth features lack <isr/>: %s' % tostr(feats)
    assert mech in c.isr_mechanisms(), c.isr_mechanisms()
    assert c.bind('isr').get('type') == 'result'
    el = c.enable_isr(mech)
    assert xr.local(el.tag) == 'enabled' and el.get('resume') == 'true', tostr(el)
    return c


def enable_bind2(srv, user, mech):
    c, el = sasl2_login(srv, user, USERS[user], tag='isr', isr_mech=mech)
    c.wait_for(q(NS_STREAM, 'features'))
    return c


ENABLERS = {'rfc6120': enable_rfc6120, 'bind2': enable_bind2}


def isr_session(srv, user='alice', mech='HT-SHA-256-ENDP', how='bind2'):
    c = ENABLERS[how](srv, user, mech)
    assert c.sm_id and c.isr_token, 'no ISR token from <enable/>'
    assert TOKEN_RE.match(c.isr_token), c.isr_token
    return c


def detach(srv, c):
    kill(c)
    srv.wait_log('session detached jid=%s' % c.jid, 10)


def isr_attempt(srv, user, token, sm_id, h, mech='HT-SHA-256-ENDP', flights=False, with_token=None,
                extra=''):
    """New direct-TLS connection; stream header + <authenticate/> with
    <inst-resume/> in one write; reads until idle. Returns (conn, reply)."""
    c = open_conn(srv, flights=flights)
    try:
        cb = c.cb_data(mech)
        auth = c.authenticate_xml(mech, ht_initiator(user, token, cb), None,
                                  inst_resume_xml(sm_id, h, with_token) + extra)
        c.pipelined(auth, from_=srv.jid(user), resume_h=h)
        el = c.sasl2_reply()
        c.cb = cb
    except BaseException:
        c.abort()
        raise
    return c, el


def bob_login(srv):
    return xr.login(srv, 'bob', USERS['bob'], 'b', presence=False)


# ---------------------------------------------------------------- the flow

@pytest.mark.parametrize('how', ['rfc6120', 'bind2'])
@pytest.mark.parametrize('mech', ['HT-SHA-256-ENDP', 'HT-SHA-256-NONE'])
def test_isr_pipelined_one_flight(srv, how, mech):
    a = isr_session(srv, mech=mech, how=how)
    jid, sm_id, old_token = a.jid, a.sm_id, a.isr_token
    bob = bob_login(srv)
    try:
        bob.message(jid, 'pre')
        a.wait_message('pre')
        h = a.h
        assert h == 1
        detach(srv, a)
        for i in range(5):
            bob.message(jid, 'gone-%d' % i)
        bob.roundtrip()

        c = open_conn(srv, flights=True)
        try:
            sock = c.sock
            cb = c.cb_data(mech)
            auth = c.authenticate_xml(mech, ht_initiator('alice', old_token, cb), None,
                                      inst_resume_xml(sm_id, h))
            start_flights = sock.flights
            t0 = time.monotonic()
            c.pipelined(auth, from_=srv.jid('alice'), resume_h=h)
            c.read_idle(0.5)
            # exactly one client flight for the whole exchange
            assert sock.flights == start_flights + 1, sock.log
            writes = [e for e in sock.log if e[1] == 'C' and e[0] >= t0]
            assert len(writes) == 1, 'client wrote %d times: %s' % (len(writes), writes)
            reads = [e for e in sock.log if e[1] == 'S' and e[0] >= t0]
            print('\nISR %s/%s: server answered in %d read(s), %d bytes, over %.1f ms'
                  % (how, mech, len(reads), sum(e[2] for e in reads),
                     (reads[-1][0] - reads[0][0]) * 1000 if reads else -1))
            # ... and everything is there
            assert c.header is not None and c.header.get('from') == srv.domain, c.header
            order = [e for _, e in c.received]
            tags = [e.tag for e in order]
            assert q(NS_STREAM, 'features') in tags, tags
            succ = [e for e in order if e.tag == q(NS_SASL2, 'success')]
            assert len(succ) == 1, 'no <success/> in the first server flight: %r' % c.raw[-2000:]
            el = succ[0]
            check_ht_success(el, old_token, cb)
            p = success_parts(el)
            ir = p['inst_resumed']
            assert ir is not None, tostr(el)
            new_token = ir.get('token')
            assert TOKEN_RE.match(new_token or '') and new_token != old_token, tostr(el)
            resumed = ir.find(q(NS_SM, 'resumed'))
            assert resumed is not None and resumed.get('previd') == sm_id, tostr(el)
            assert int(resumed.get('h')) == 0
            assert p['aid'] == jid
            assert p['bound'] is None and p['resumed'] is None
            assert c.messages('gone-') == ['gone-%d' % i for i in range(5)], c.messages()
            assert c.messages('pre') == []
            for m in c.message_els('gone-'):
                assert m.find(q(NS_DELAY, 'delay')) is not None
            # order: features, success, then the stanzas; no features after success
            i_succ = order.index(el)
            assert tags.index(q(NS_STREAM, 'features')) < i_succ
            assert q(NS_STREAM, 'features') not in tags[i_succ + 1:]
            assert c.isr_token == new_token
            # the stream is live, SM counters carried over
            bob.message(jid, 'live')
            c.wait_message('live')
            c.request()
            assert c.wait_a() == 0
            c.ack()
            c.roundtrip()
        finally:
            c.close()
    finally:
        bob.close()
    srv.wait_log('session resumed jid=%s' % jid, 5)


def test_isr_new_token_works_again(srv):
    a = isr_session(srv, mech='HT-SHA-256-NONE')
    sm_id, token = a.sm_id, a.isr_token
    detach(srv, a)
    c, el = isr_attempt(srv, 'alice', token, sm_id, 0, 'HT-SHA-256-NONE')
    ir = success_parts(assert_success(el))['inst_resumed']
    token2 = ir.get('token')
    detach(srv, c)
    c, el = isr_attempt(srv, 'alice', token2, sm_id, c.h, 'HT-SHA-256-NONE')
    try:
        assert success_parts(assert_success(el))['inst_resumed'] is not None, tostr(el)
        c.roundtrip()
    finally:
        c.close()


# ---------------------------------------------------------------- stance B/E: one-time tokens

def test_old_token_refused_after_use(srv):
    a = isr_session(srv)
    sm_id, token = a.sm_id, a.isr_token
    detach(srv, a)
    c, el = isr_attempt(srv, 'alice', token, sm_id, 0)
    assert_success(el)
    try:
        d, el2 = isr_attempt(srv, 'alice', token, sm_id, 0)
        d.close()
        assert failure_condition(el2) == 'not-authorized', tostr(el2)
        # the stream that holds the session is untouched (attached sessions are not ended)
        c.roundtrip()
        # but the session's current token died with the failed attempt (stance B)
        d, el3 = isr_attempt(srv, 'alice', c.isr_token, sm_id, 0)
        d.close()
        assert failure_condition(el3) == 'not-authorized', tostr(el3)
        c.roundtrip()
    finally:
        c.close()


def test_wrong_token_destroys_token_and_ends_detached_session(srv):
    a = isr_session(srv)
    jid, sm_id, token = a.jid, a.sm_id, a.isr_token
    bob = bob_login(srv)
    try:
        detach(srv, a)
        for i in range(3):
            bob.message(jid, 'q-%d' % i, id_='q%d' % i)
        bob.roundtrip()
        wrong = token[:-1] + ('A' if token[-1] != 'A' else 'B')
        c, el = isr_attempt(srv, 'alice', wrong, sm_id, 0)
        try:
            assert failure_condition(el) == 'not-authorized', tostr(el)
        finally:
            c.close()
        log = srv.wait_log('session expired jid=%s' % jid, 5)
        assert 'ISR with a wrong token' in log
        # the queued messages are stored offline (no other alice resource),
        # not bounced, and come at alice's next login (RFC 6121 §8.5.2.2),
        # on Redis as in memory (deliver.c on_orphan_sent), each with the
        # one delay stamp it got when it was queued (XEP-0203)
        assert bob.maybe(lambda e: e.tag == q(NS_CLIENT, 'message')
                         and e.get('type') == 'error', 1.0) is None
        back = xr.login(srv, 'alice', USERS['alice'], 'back', presence=True)
        try:
            for i in range(3):
                m = back.wait_message('q-%d' % i, 10)
                assert len(m.findall(q('urn:xmpp:delay', 'delay'))) == 1, tostr(m)
        finally:
            back.close()
        # the right token does not work any more either
        c, el = isr_attempt(srv, 'alice', token, sm_id, 0)
        c.close()
        assert failure_condition(el) == 'not-authorized', tostr(el)
    finally:
        bob.close()


def test_wrong_token_reroutes_to_other_resource(srv):
    a = isr_session(srv)
    jid, sm_id = a.jid, a.sm_id
    other = xr.login(srv, 'alice', USERS['alice'], 'desk', priority=1)
    bob = bob_login(srv)
    try:
        detach(srv, a)
        for i in range(3):
            bob.message(jid, 'rr-%d' % i)
        bob.roundtrip()
        c, el = isr_attempt(srv, 'alice', 'B' * 43, sm_id, 0)
        c.close()
        assert failure_condition(el) == 'not-authorized'
        srv.wait_log('session expired jid=%s' % jid, 5)
        for i in range(3):
            m = other.wait_message('rr-%d' % i, 10)
            assert m.find(q(NS_DELAY, 'delay')) is not None
    finally:
        bob.close()
        other.close()


def test_wrong_account_does_not_touch_the_session(srv):
    """An SM-ID of another account is 'unknown' (stance C: same answer) and
    must not let bob destroy alice's token or session."""
    a = isr_session(srv)
    sm_id, token = a.sm_id, a.isr_token
    detach(srv, a)
    c, el = isr_attempt(srv, 'bob', token, sm_id, 0)
    c.close()
    assert failure_condition(el) == 'not-authorized'
    c, el = isr_attempt(srv, 'alice', token, sm_id, 0)
    try:
        assert success_parts(assert_success(el))['inst_resumed'] is not None
    finally:
        c.close()


def test_token_pinned_to_mechanism(srv):
    a = isr_session(srv, mech='HT-SHA-256-ENDP')
    sm_id, token = a.sm_id, a.isr_token
    detach(srv, a)
    c, el = isr_attempt(srv, 'alice', token, sm_id, 0, mech='HT-SHA-256-NONE')
    c.close()
    assert failure_condition(el) == 'not-authorized', tostr(el)


# ---------------------------------------------------------------- stance F

def test_token_ok_resume_failed_stays_unauthenticated(srv):
    a = isr_session(srv)
    sm_id, token = a.sm_id, a.isr_token
    detach(srv, a)
    c, el = isr_attempt(srv, 'alice', token, sm_id, 1000)    # h higher than anything sent
    try:
        assert failure_condition(el) == 'not-authorized', tostr(el)
        failed = el.find(q(NS_SM, 'failed'))
        assert failed is not None, 'no SM <failed/> inside the SASL2 <failure/>: %s' % tostr(el)
        assert el.find(q(NS_ISR, 'inst-resumed')) is None and el.find(q(NS_ISR, 'inst-resume-failed')) is None
        # not authenticated: binding is refused with a stream error
        c.send("<iq type='set' id='b1'><bind xmlns='%s'/></iq>" % xr.NS_BIND)
        assert c.expect_stream_error() == 'not-authorized'
    finally:
        c.close()


def test_token_ok_resume_failed_full_login_allowed(srv):
    a = isr_session(srv)
    sm_id, token = a.sm_id, a.isr_token
    detach(srv, a)
    c, el = isr_attempt(srv, 'alice', token, sm_id, 1000)
    try:
        assert failure_condition(el) == 'not-authorized', tostr(el)
        el = c.sasl2_scram('alice', USERS['alice'], new_ua_id(), bind2_xml('again', enable=True))
        p = success_parts(assert_success(el))
        assert p['bound'] is not None, tostr(el)
        c.wait_for(q(NS_STREAM, 'features'))
        c.roundtrip()
    finally:
        c.close()


# ---------------------------------------------------------------- stance B: takeover visible

def test_resume_conflicts_old_open_connection(srv):
    a = isr_session(srv)
    sm_id, token = a.sm_id, a.isr_token
    try:
        a.roundtrip()
        c, el = isr_attempt(srv, 'alice', token, sm_id, a.h)
        try:
            assert success_parts(assert_success(el))['inst_resumed'] is not None, tostr(el)
            assert a.expect_stream_error() == 'conflict'
            c.roundtrip()
        finally:
            c.close()
    finally:
        a.close()


def test_password_change_kills_token(srv):
    a = isr_session(srv)
    sm_id, token = a.sm_id, a.isr_token
    detach(srv, a)
    srv.passwd('alice', 'changed-password')
    srv.settle_users()
    time.sleep(0.2)
    c, el = isr_attempt(srv, 'alice', token, sm_id, 0)
    c.close()
    assert failure_condition(el) == 'not-authorized', tostr(el)


def test_account_deletion_kills_token(srv):
    a = isr_session(srv, user='carol')
    sm_id, token = a.sm_id, a.isr_token
    detach(srv, a)
    srv.deluser('carol')
    srv.settle_users()
    time.sleep(0.2)
    c, el = isr_attempt(srv, 'carol', token, sm_id, 0)
    c.close()
    assert failure_condition(el) == 'not-authorized', tostr(el)


# ---------------------------------------------------------------- with-isr-token='false'

def test_without_token_scram_inst_resumed(srv):
    a = isr_session(srv)
    jid, sm_id = a.jid, a.sm_id
    bob = bob_login(srv)
    try:
        detach(srv, a)
        bob.message(jid, 'wt-0')
        bob.roundtrip()
        c = open_conn(srv)
        try:
            c.open_stream()
            el = c.sasl2_scram('alice', USERS['alice'], None, inst_resume_xml(sm_id, 0, False),
                               resume_h=0)
            p = success_parts(assert_success(el))
            ir = p['inst_resumed']
            assert ir is not None and ir.find(q(NS_SM, 'resumed')) is not None, tostr(el)
            assert p['aid'] == jid
            c.wait_bodies('wt-', 1)
            c.roundtrip()
        finally:
            c.close()
    finally:
        bob.close()


@pytest.mark.parametrize('with_token', [False, None, True], ids=['false', 'default', 'true'])
def test_without_token_plain_inst_resume_failed(srv, with_token):
    """A correct password with an <inst-resume/> that fails is <success/>
    with <inst-resume-failed/> inside, whatever with-isr-token says (it
    concerns HT-* token logins: PLAIN presented no token): never
    not-authorized, and not an authentication failure."""
    c = open_conn(srv)
    try:
        c.open_stream()
        el = c.sasl2_plain('alice', USERS['alice'], None,
                           inst_resume_xml('AAAAAAAAAAAAAAAAAAAAAA', 0, with_token))
        p = success_parts(assert_success(el))
        f = p['inst_resume_failed']
        assert f is not None, tostr(el)
        assert sm_condition(f.find(q(NS_SM, 'failed'))) == 'item-not-found', tostr(el)
        assert p['aid'] == 'alice@localhost'
        # authenticated (password), not bound: the classic way on
        feats = c.wait_for(q(NS_STREAM, 'features'))
        assert feats.find(q(xr.NS_BIND, 'bind')) is not None, tostr(feats)
        assert c.bind('after-isr').get('type') == 'result'
        c.roundtrip()
    finally:
        c.close()
    assert 'authentication failed' not in srv.log()


# ---------------------------------------------------------------- more edges

def test_token_dies_with_clean_close(srv):
    """Stance B: the token lives as long as its SM session; </stream:stream> ends both."""
    a = isr_session(srv)
    jid, sm_id, token = a.jid, a.sm_id, a.isr_token
    a.close()
    srv.wait_log('session ended jid=%s' % jid, 5)
    c, el = isr_attempt(srv, 'alice', token, sm_id, 0)
    c.close()
    assert failure_condition(el) == 'not-authorized', tostr(el)


def test_isr_enable_unoffered_mechanism_gives_no_token(srv):
    c = open_conn(srv)
    try:
        c.open_stream()
        if c.sock.version() != 'TLSv1.3':
            pytest.skip('UNIQ is offered on TLS 1.2')
        el = assert_success(c.sasl2_scram('alice', USERS['alice'], new_ua_id(),
                                          bind2_xml('u', enable=True, isr_mech='HT-SHA-256-UNIQ')))
        enabled = success_parts(el)['enabled']
        assert enabled is not None and enabled.get('resume') == 'true', tostr(el)
        assert enabled.find(q(NS_ISR, 'isr-enabled')) is None, tostr(el)
    finally:
        c.close()


def test_isr_over_starttls(srv):
    a = isr_session(srv, mech='HT-SHA-256-ENDP')
    jid, sm_id, token = a.jid, a.sm_id, a.isr_token
    detach(srv, a)
    c = open_conn(srv, direct_tls=False)     # STARTTLS done, post-TLS features read
    try:
        cb = c.cb_data('HT-SHA-256-ENDP')
        c.send(c.authenticate_xml('HT-SHA-256-ENDP', ht_initiator('alice', token, cb), None,
                                  inst_resume_xml(sm_id, 0)))
        c._resume_h = 0
        el = c.sasl2_reply()
        check_ht_success(el, token, cb)
        assert success_parts(el)['inst_resumed'] is not None, tostr(el)
        assert success_parts(el)['aid'] == jid
        c.roundtrip()
    finally:
        c.close()


# ---------------------------------------------------------------- one token, many connections

def test_one_token_many_connections_at_once(srv_many_failures):
    """Issue 9 item 4: eight connections present one ISR token at once; the
    store checks and consumes the token in the same step that takes the
    session over, so exactly one gets <inst-resumed/>, every round."""
    srv = srv_many_failures
    for rnd in range(10):
        a = isr_session(srv)
        sm_id, token = a.sm_id, a.isr_token
        detach(srv, a)
        replies = isr_race([srv] * 8, 'alice', token, sm_id)
        won = [el for el in replies if el.tag == q(NS_SASL2, 'success')]
        assert len(won) == 1, 'round %d: %d of 8 resumed: %s' % (rnd, len(won), [tostr(e) for e in replies])
        assert success_parts(won[0])['inst_resumed'] is not None, tostr(won[0])
        for el in replies:
            if el is not won[0]:
                assert failure_condition(el) == 'not-authorized', tostr(el)


def test_password_change_kills_token_at_once(srv):
    """As test_password_change_kills_token, without waiting for the store's
    periodic reload: the ISR login itself checks users.db."""
    a = isr_session(srv)
    sm_id, token = a.sm_id, a.isr_token
    detach(srv, a)
    srv.passwd('alice', 'changed-password')
    srv._users_changed_at = None
    c, el = isr_attempt(srv, 'alice', token, sm_id, 0)
    c.close()
    assert failure_condition(el) == 'not-authorized', tostr(el)
