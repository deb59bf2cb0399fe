"""FAST (XEP-0484) token authentication on tether: HT-SHA-256-NONE/-ENDP/-EXPR,
rotation, pinning, invalidation, revocation, inline resume.

Spec notes: /work/shared/protocol/sasl2-bind2-fast.md §3, sasl.md §7-8.
Helpers: sasl2_client.py. Constant-time comparison of tokens is covered by
the unit tests (tests/unit/test_token.c: secret_eq), not here."""

import datetime
import time

import pytest

import xmpp_raw as xr
from conftest import USERS
from sasl2_client import (EXPIRY_RE, NS_FAST, NS_SASL2, TOKEN_RE, Sasl2Conn, assert_success,
                          bind2_xml, check_ht_success, failure_condition, ht_initiator, kill,
                          new_ua_id, open_conn, request_token_xml, resume_xml, sasl2_login,
                          success_parts)
from sm_client import sm_condition, sm_overrides
from xmpp_raw import NS_STREAM, q, tostr


@pytest.fixture
def srv(server_factory):
    s = server_factory(**sm_overrides(max_resume=60))
    for u, pw in USERS.items():
        s.add_user(u, pw)
    s.settle_users()
    return s


def get_token(srv, user, mech, ua):
    """SCRAM login with <request-token/>; returns the token string (connection closed)."""
    c, el = sasl2_login(srv, user, USERS[user], ua_id=ua, enable=False, request_token=mech)
    try:
        tok = success_parts(el)['token']
        assert tok is not None, 'no <token/> for <request-token/>: %s' % tostr(el)
        return tok.get('token')
    finally:
        c.close()


def fast_attempt(srv, user, token, mech, ua, inline=None, fast=True, conn=None, exporter=None,
                 resume_h=None):
    """One FAST <authenticate/> on a new direct-TLS connection (or <conn>).
    Returns (conn, reply); the caller closes conn."""
    c = conn or open_conn(srv)
    try:
        if conn is None:
            c.open_stream(from_=srv.jid(user))
        el = c.sasl2_ht(user, token, mech, ua, bind2_xml('fast') if inline is None else inline,
                        fast=fast, exporter=exporter, resume_h=resume_h)
    except BaseException:
        c.abort()
        raise
    return c, el


def fast_ok(srv, user, token, mech, ua, **kw):
    """FAST login that must succeed; returns (conn, new token)."""
    c, el = fast_attempt(srv, user, token, mech, ua, **kw)
    assert_success(el)
    new = success_parts(el)['token']
    assert new is not None, 'FAST success without a rotated <token/>: %s' % tostr(el)
    return c, new.get('token')


def fast_refused(srv, user, token, mech, ua, **kw):
    c, el = fast_attempt(srv, user, token, mech, ua, **kw)
    try:
        return failure_condition(el)
    finally:
        c.close()


def test_request_token(srv):
    ua = new_ua_id()
    c, el = sasl2_login(srv, 'alice', USERS['alice'], ua_id=ua, request_token='HT-SHA-256-NONE')
    try:
        tok = success_parts(el)['token']
        assert tok is not None, tostr(el)
        assert TOKEN_RE.match(tok.get('token')), tok.get('token')
        assert EXPIRY_RE.match(tok.get('expiry')), tok.get('expiry')
        exp = datetime.datetime.strptime(tok.get('expiry')[:19], '%Y-%m-%dT%H:%M:%S').replace(
            tzinfo=datetime.timezone.utc)
        left = exp - datetime.datetime.now(datetime.timezone.utc)
        assert datetime.timedelta(days=13) < left <= datetime.timedelta(days=14, minutes=1), left
        # the <token/> comes after the Bind2 result, all inside one <success/>
        assert success_parts(el)['bound'] is not None
        c.wait_for(q(NS_STREAM, 'features'))
    finally:
        c.close()
    # a second request gives a different token
    assert get_token(srv, 'alice', 'HT-SHA-256-NONE', ua) != tok.get('token')


def test_request_token_unoffered_mechanism_is_malformed(srv):
    c = open_conn(srv)
    try:
        c.open_stream()
        el = c.sasl2_scram('alice', USERS['alice'], new_ua_id(), request_token_xml('HT-SHA-256-BOGUS'))
        assert failure_condition(el) == 'malformed-request', tostr(el)
    finally:
        c.close()


@pytest.mark.parametrize('mech', ['HT-SHA-256-NONE', 'HT-SHA-256-ENDP'])
def test_fast_login(srv, mech):
    ua = new_ua_id()
    token = get_token(srv, 'alice', mech, ua)
    c, new = fast_ok(srv, 'alice', token, mech, ua,
                     inline=bind2_xml('fast', enable=True))   # responder verified inside
    try:
        assert new != token and TOKEN_RE.match(new)
        feats = c.wait_for(q(NS_STREAM, 'features'))
        assert len(feats) == 0
        assert c.jid.startswith('alice@localhost/fast/'), c.jid
        assert c.sm_id, 'inline enable after FAST did not give <enabled/>'
        c.roundtrip()
    finally:
        c.close()
    srv.wait_log('authenticated as alice@localhost (SASL2, FAST token)', 5)


def test_fast_login_expr(srv):
    """HT-SHA-256-EXPR needs the RFC 9266 tls-exporter value, which Python 3.11's
    ssl module cannot compute: the FAST connection runs through `openssl
    s_client` (xmpp_raw.openssl_direct_tls, as test_login.py does for SCRAM-PLUS)."""
    ua = new_ua_id()
    token = get_token(srv, 'alice', 'HT-SHA-256-EXPR', ua)
    base, exporter = xr.openssl_direct_tls(srv)
    c = Sasl2Conn.from_conn(base)
    try:
        c.open_stream(from_=srv.jid('alice'))
        assert 'HT-SHA-256-EXPR' in c.fast_mechanisms(), c.fast_mechanisms()
        el = c.sasl2_ht('alice', token, 'HT-SHA-256-EXPR', ua, bind2_xml('expr'), exporter=exporter)
        check_ht_success(el, token, exporter)
        new = success_parts(el)['token']
        assert new is not None and new.get('token') != token
        c.wait_for(q(NS_STREAM, 'features'))
        c.roundtrip()
    finally:
        c.close()
    # a wrong exporter value does not authenticate (token already rotated: use the new one)
    base, exporter = xr.openssl_direct_tls(srv)
    c = Sasl2Conn.from_conn(base)
    try:
        c.open_stream(from_=srv.jid('alice'))
        el = c.sasl2_ht('alice', new.get('token'), 'HT-SHA-256-EXPR', ua, '',
                        cb=bytes(b ^ 0x55 for b in exporter))
        assert failure_condition(el) == 'not-authorized', tostr(el)
    finally:
        c.close()


def test_endp_wrong_channel_binding_refused(srv):
    ua = new_ua_id()
    token = get_token(srv, 'alice', 'HT-SHA-256-ENDP', ua)
    c = open_conn(srv)
    try:
        c.open_stream()
        el = c.sasl2_ht('alice', token, 'HT-SHA-256-ENDP', ua, '', cb=b'\x00' * 32)
        assert failure_condition(el) == 'not-authorized', tostr(el)
    finally:
        c.close()
    fast_ok(srv, 'alice', token, 'HT-SHA-256-ENDP', ua)[0].close()   # the token survived


def test_old_token_refused_after_rotation(srv):
    """Two slots (XEP-0484 0.2.0): using the "new" token promotes it to
    "current" and retires the one before it."""
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    t1 = get_token(srv, 'alice', mech, ua)
    c, t2 = fast_ok(srv, 'alice', t1, mech, ua)
    c.close()
    c, t3 = fast_ok(srv, 'alice', t2, mech, ua)           # t2 used: t1 retired
    c.close()
    assert len({t1, t2, t3}) == 3
    assert fast_refused(srv, 'alice', t1, mech, ua) == 'not-authorized'
    c, t4 = fast_ok(srv, 'alice', t3, mech, ua)           # t3 used: t2 retired
    c.close()
    assert fast_refused(srv, 'alice', t2, mech, ua) == 'not-authorized'
    assert fast_refused(srv, 'alice', t1, mech, ua) == 'not-authorized'
    fast_ok(srv, 'alice', t4, mech, ua)[0].close()


def test_previous_token_kept_until_new_token_used(srv):
    """sasl2-bind2-fast.md §3.4 (XEP-0484): the server "MUST NOT invalidate the
    existing token until the new token is actually used by the client" (two
    slots: issue into 'new', verify 'new' first then 'current'). A client whose
    connection died before it read the rotated <token/> must still get in with
    the one it has, and is given the pending new token again."""
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    t1 = get_token(srv, 'alice', mech, ua)
    c, t2 = fast_ok(srv, 'alice', t1, mech, ua)
    kill(c)                                    # as if <success/> had been lost
    c, el = fast_attempt(srv, 'alice', t1, mech, ua)
    try:
        assert el.tag == q(NS_SASL2, 'success'), (
            'previous FAST token refused before the rotated one was ever used: %s' % tostr(el))
        again = success_parts(el)['token']
        assert again is not None and again.get('token') == t2, tostr(el)
    finally:
        c.close()
    # still usable as long as t2 has not been used...
    fast_ok(srv, 'alice', t1, mech, ua)[0].close()
    # ...and retired once it has
    c, t3 = fast_ok(srv, 'alice', t2, mech, ua)
    c.close()
    assert fast_refused(srv, 'alice', t1, mech, ua) == 'not-authorized'
    fast_ok(srv, 'alice', t3, mech, ua)[0].close()


def test_concurrent_logins_one_token(srv):
    """Eight connections present one FAST token ("new") at once: one login
    promotes it and issues the next token, the others (compare-and-set, read
    again) find it "current" and are given that same pending token, so no
    token handed out is lost; the token before is retired."""
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    t1 = get_token(srv, 'alice', mech, ua)
    c, t2 = fast_ok(srv, 'alice', t1, mech, ua)          # current t1, new t2
    c.close()
    conns = []
    try:
        for _ in range(8):
            c = open_conn(srv)
            c.open_stream(from_=srv.jid('alice'))
            conns.append(c)
        auth = conns[0].authenticate_xml(mech, ht_initiator('alice', t2, b''), ua,
                                         "<fast xmlns='%s'/>" % NS_FAST + bind2_xml('fast'))
        for c in conns:
            c.send(auth)
        replies = [c.sasl2_reply() for c in conns]
    finally:
        for c in conns:
            c.close()
    got = set()
    for el in replies:
        p = success_parts(assert_success(el))
        assert p['token'] is not None, tostr(el)
        got.add(p['token'].get('token'))
    assert len(got) == 1, got
    assert fast_refused(srv, 'alice', t1, mech, ua) == 'not-authorized'
    fast_ok(srv, 'alice', got.pop(), mech, ua)[0].close()


def test_token_pinned_to_mechanism(srv):
    ua = new_ua_id()
    token = get_token(srv, 'alice', 'HT-SHA-256-NONE', ua)
    assert fast_refused(srv, 'alice', token, 'HT-SHA-256-ENDP', ua) == 'not-authorized'
    endp = get_token(srv, 'bob', 'HT-SHA-256-ENDP', ua)
    assert fast_refused(srv, 'bob', endp, 'HT-SHA-256-NONE', ua) == 'not-authorized'
    # the failed attempts did not destroy the tokens
    fast_ok(srv, 'alice', token, 'HT-SHA-256-NONE', ua)[0].close()
    fast_ok(srv, 'bob', endp, 'HT-SHA-256-ENDP', ua)[0].close()


def test_token_pinned_to_user_agent_and_account(srv):
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    token = get_token(srv, 'alice', mech, ua)
    assert fast_refused(srv, 'alice', token, mech, new_ua_id()) == 'not-authorized'
    assert fast_refused(srv, 'bob', token, mech, ua) == 'not-authorized'
    fast_ok(srv, 'alice', token, mech, ua)[0].close()


def test_unknown_token_and_user(srv):
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    assert fast_refused(srv, 'alice', 'A' * 43, mech, ua) == 'not-authorized'
    assert fast_refused(srv, 'nobody', 'A' * 43, mech, ua) == 'not-authorized'


def test_ht_without_fast_or_user_agent_is_malformed(srv):
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    token = get_token(srv, 'alice', mech, ua)
    fast_tag = "<fast xmlns='%s'/>" % NS_FAST
    cases = [  # one connection each: max_auth_failures = 3 counts these too
        lambda c: c.sasl2_ht('alice', token, mech, ua, '', fast=False),      # no <fast/>
        lambda c: c.sasl2_ht('alice', token, mech, None, ''),                # no user-agent id
        lambda c: (c.send(c.authenticate_xml(mech, None, ua, fast_tag)), c.sasl2_reply())[1],
        lambda c: (c.send(c.authenticate_xml(mech, b'alice-no-nul', ua, fast_tag)), c.sasl2_reply())[1],
    ]
    for i, case in enumerate(cases):
        c = open_conn(srv)
        try:
            c.open_stream()
            el = case(c)
            assert failure_condition(el) == 'malformed-request', (i, tostr(el))
        finally:
            c.close()
    fast_ok(srv, 'alice', token, mech, ua)[0].close()


def test_invalidate(srv):
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    token = get_token(srv, 'alice', mech, ua)
    c, el = fast_attempt(srv, 'alice', token, mech, ua,
                         fast="<fast xmlns='%s' invalidate='true'/>" % NS_FAST)
    try:
        assert_success(el)
        assert success_parts(el)['token'] is None, 'invalidate=true must not issue a new token: %s' % tostr(el)
    finally:
        c.close()
    assert fast_refused(srv, 'alice', token, mech, ua) == 'not-authorized'


def test_invalidate_with_request_token(srv):
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    token = get_token(srv, 'alice', mech, ua)
    c, el = fast_attempt(srv, 'alice', token, mech, ua, inline=request_token_xml(mech),
                         fast="<fast xmlns='%s' invalidate='true'/>" % NS_FAST)
    c.close()
    new = success_parts(assert_success(el))['token']
    assert new is not None and new.get('token') != token
    assert fast_refused(srv, 'alice', token, mech, ua) == 'not-authorized'
    fast_ok(srv, 'alice', new.get('token'), mech, ua)[0].close()


def test_password_change_kills_token(srv):
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    token = get_token(srv, 'alice', mech, ua)
    other = get_token(srv, 'bob', mech, ua)
    srv.passwd('alice', 'a-new-password')
    srv.settle_users()
    time.sleep(0.2)
    cond = fast_refused(srv, 'alice', token, mech, ua)
    assert cond in ('not-authorized', 'credentials-expired'), cond
    fast_ok(srv, 'bob', other, mech, ua)[0].close()        # other accounts unaffected
    # the new password works and can get a new token
    c, el = sasl2_login(srv, 'alice', 'a-new-password', ua_id=ua, request_token=mech)
    c.close()
    assert success_parts(el)['token'] is not None


def test_account_deletion_kills_token(srv):
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    token = get_token(srv, 'carol', mech, ua)
    srv.deluser('carol')
    srv.settle_users()
    time.sleep(0.2)
    cond = fast_refused(srv, 'carol', token, mech, ua)
    assert cond in ('not-authorized', 'credentials-expired'), cond
    # re-created with the same name: the old token must not come back to life
    srv.add_user('carol', USERS['carol'])
    srv.settle_users()
    time.sleep(0.2)
    cond = fast_refused(srv, 'carol', token, mech, ua)
    assert cond in ('not-authorized', 'credentials-expired'), cond


def test_fast_inline_resume_exactly_once(srv):
    mech, ua = 'HT-SHA-256-ENDP', new_ua_id()
    a, el = sasl2_login(srv, 'alice', USERS['alice'], ua_id=ua, tag='m', request_token=mech)
    token = success_parts(el)['token'].get('token')
    a.wait_for(q(NS_STREAM, 'features'))
    jid, sm_id = a.jid, a.sm_id
    bob = xr.login(srv, 'bob', USERS['bob'], 'b', presence=False)
    try:
        for i in range(3):
            bob.message(jid, 'pre-%d' % i)
        a.wait_bodies('pre-', 3)
        a.ack()
        a.message(bob.jid, 'from-alice')
        bob.wait_message('from-alice')
        a.request()
        a.wait_a()
        h = a.h
        kill(a)
        srv.wait_log('session detached jid=%s' % jid, 10)
        for i in range(5):
            bob.message(jid, 'gone-%d' % i)
        bob.roundtrip()
        c, el = fast_attempt(srv, 'alice', token, mech, ua,
                             inline=resume_xml(sm_id, h) + bind2_xml('m', enable=True), resume_h=h)
        try:
            p = success_parts(assert_success(el))
            assert p['resumed'] is not None, tostr(el)
            assert p['bound'] is None and p['failed'] is None, tostr(el)
            assert p['aid'] == jid
            assert int(p['resumed'].get('h')) == 1     # the server had handled alice's one message
            assert p['token'] is not None and p['token'].get('token') != token
            c.wait_bodies('gone-', 5)
            c.read_idle(0.5)
            assert c.messages('gone-') == ['gone-%d' % i for i in range(5)], c.messages()
            assert c.messages('pre-') == [], 'acked stanzas retransmitted'
            for m in c.message_els('gone-'):
                assert m.find(q('urn:xmpp:delay', 'delay')) is not None
            after = [e for _, e in c.received][[e for _, e in c.received].index(el) + 1:]
            assert not [e for e in after if e.tag == q(NS_STREAM, 'features')], 'features after a resume'
            bob.message(jid, 'live')
            c.wait_message('live')
            c.request()
            assert c.wait_a() == 1
        finally:
            c.close()
    finally:
        bob.close()
    srv.wait_log('session resumed jid=%s' % jid, 5)


def test_fast_inline_resume_fails_continues_with_bind2(srv):
    """XEP-0484/sm.md §7: after a FAST success a failed inline resume proceeds to
    Bind2 (unlike ISR's stance F)."""
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    token = get_token(srv, 'alice', mech, ua)
    c, el = fast_attempt(srv, 'alice', token, mech, ua,
                         inline=resume_xml('AAAAAAAAAAAAAAAAAAAAAA', 3) + bind2_xml('m', enable=True))
    try:
        p = success_parts(assert_success(el))
        assert p['resumed'] is None and sm_condition(p['failed']) == 'item-not-found', tostr(el)
        assert p['bound'] is not None and p['enabled'] is not None, tostr(el)
        assert p['token'] is not None
        c.wait_for(q(NS_STREAM, 'features'))
        c.roundtrip()
    finally:
        c.close()


def test_password_change_kills_token_at_once(srv):
    """A token login checks users.db itself (store/memory.c refresh_now): right
    after tetherctl passwd returns, the token is refused, with no reload delay."""
    mech, ua = 'HT-SHA-256-NONE', new_ua_id()
    token = get_token(srv, 'alice', mech, ua)
    srv.passwd('alice', 'a-new-password')
    srv._users_changed_at = None        # no settling: the next login must see it
    cond = fast_refused(srv, 'alice', token, mech, ua)
    assert cond in ('not-authorized', 'credentials-expired'), cond


def test_entries_per_account_capped(server_factory):
    """[tokens] max_fast_per_account: a token for one user-agent id more
    than the cap evicts the least recently written entry. The oldest token
    stops working, the newest works, and /metrics counts the eviction."""
    from conftest import free_port
    from test_metrics import get, metric
    cap, mech = 4, 'HT-SHA-256-NONE'
    port = free_port()
    s = server_factory(**{'tokens.max_fast_per_account': cap, 'admin.listen': '127.0.0.1:%d' % port})
    s.add_user('alice', USERS['alice'])
    s.settle_users()
    uas = [new_ua_id() for _ in range(cap + 2)]
    tokens = [get_token(s, 'alice', mech, ua) for ua in uas]
    # Two over the cap: the first two entries are gone, the rest work.
    for i in (0, 1):
        assert fast_refused(s, 'alice', tokens[i], mech, uas[i]) == 'not-authorized'
    for i in (2, len(uas) - 1):
        c, _ = fast_ok(s, 'alice', tokens[i], mech, uas[i])
        c.close()
    _, _, text = get(port, '/metrics')
    assert metric(text, 'tether_limit_hits_total{limit="max_fast_per_account"}') == 2
    assert 'over max_fast_per_account (4)' in s.log()
