"""The authentication guessing rate (issue 11, item 6).

Failures go into token buckets per source address (burst 20, then 5 a
second by default) and per account (applied only to addresses that have
failed themselves): an attempt over the limit is answered with
temporary-auth-failure before any password or token is checked, and the
real user from another address logs in at once. Failure log lines are
rate-limited with a count of what was left out."""

import base64
import os
import socket
import statistics
import time

import xmpp_raw as xr
from conftest import USERS, free_port
from sasl2_client import Sasl2Conn, failure_condition, ht_initiator, inst_resume_xml, new_ua_id
from test_metrics import get, metric
from xmpp_raw import NS_SASL, NS_STREAM, q

PER_STREAM = 9   # attempts per connection, under max_auth_failures = 10


def rate_server(server_factory, **limits):
    port = free_port()
    overrides = {'admin.listen': '127.0.0.1:%d' % port, 'max_auth_failures': 10}
    overrides.update({'limits.%s' % k: v for k, v in limits.items()})
    srv = server_factory(**overrides)
    for local, pw in USERS.items():
        srv.add_user(local, pw)
    srv.settle_users()
    srv.admin_port = port
    return srv


def connect_from(server, src, direct_tls=False, cls=xr.XMPPConn):
    port = server.tls_port if direct_tls else server.port
    sock = socket.create_connection((server.host, port), timeout=5, source_address=(src, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c = cls(sock, server.host, port, server.domain, xr.DEFAULT_TIMEOUT)
    if direct_tls:
        c._wrap_tls()
        c.open_stream()
    else:
        c.open_stream()
        c.starttls()
    return c


def hits(server, limit):
    _, _, text = get(server.admin_port, '/metrics')
    return metric(text, 'tether_limit_hits_total{limit="%s"}' % limit)


def plain_attempts(server, src, user, password, n):
    """<n> SASL PLAIN attempts from <src>; returns [(condition, seconds)]
    (condition None = success)."""
    out = []
    c = None
    try:
        for i in range(n):
            if c is None or i % PER_STREAM == 0:
                if c:
                    c.close()
                c = connect_from(server, src)
            t0 = time.monotonic()
            ok, cond = c.auth_plain(user, password)
            out.append((None if ok else cond, time.monotonic() - t0))
    finally:
        if c:
            c.close()
    return out


def test_plain_guessing_is_limited_per_address(server_factory, conns):
    srv = rate_server(server_factory)
    t0 = time.monotonic()
    res = plain_attempts(srv, '127.0.0.1', 'alice', 'wrong', 40)
    elapsed = time.monotonic() - t0
    conds = [c for c, _ in res]
    verified = [t for c, t in res if c == 'not-authorized']
    refused = [t for c, t in res if c == 'temporary-auth-failure']
    assert set(conds) <= {'not-authorized', 'temporary-auth-failure'}, conds
    assert conds[:20] == ['not-authorized'] * 20, conds
    # after the burst, at most 5 a second are checked
    assert len(verified) <= 20 + 5 * elapsed + 1, (len(verified), elapsed)
    assert len(refused) >= 10, conds
    # Refused attempts check no password: they cost no PBKDF2 ...
    print('PLAIN: verified failure median %.2f ms, refused median %.2f ms'
          % (1000 * statistics.median(verified), 1000 * statistics.median(refused)))
    assert statistics.median(refused) < statistics.median(verified)
    # ... so even the right password is refused from this address now.
    (cond, _), = plain_attempts(srv, '127.0.0.1', 'alice', USERS['alice'], 1)
    assert cond == 'temporary-auth-failure'
    # The real user from another address logs in at once.
    t1 = time.monotonic()
    c = connect_from(srv, '127.0.0.2')
    conns.append(c)
    ok, cond = c.auth_plain('alice', USERS['alice'])
    assert ok, cond
    assert time.monotonic() - t1 < 1.0
    assert hits(srv, 'auth_fail_rate_per_ip') >= len(refused) + 1
    # After a quiet second this address gets a few attempts again.
    time.sleep(1.1)
    (cond, _), = plain_attempts(srv, '127.0.0.1', 'alice', USERS['alice'], 1)
    assert cond is None
    # One failure line a second at most, saying how many it stands for.
    log = srv.log()
    lines = [ln for ln in log.splitlines() if 'authentication failed' in ln]
    assert 1 <= len(lines) <= 2 + elapsed, lines
    assert any('more failures not logged' in ln and ' (0 more' not in ln for ln in lines) or \
        len(lines) == 1, lines
    refusals = [ln for ln in log.splitlines() if 'refused with temporary-auth-failure' in ln]
    assert 1 <= len(refusals) <= 3 + elapsed, refusals


def sasl2_attempts(server, src, make_auth, n):
    """<n> SASL2 <authenticate/> from <src> on direct TLS; <make_auth>(conn)
    gives the element. Returns the failure conditions."""
    out = []
    c = None
    try:
        for i in range(n):
            if c is None or i % PER_STREAM == 0:
                if c:
                    c.close()
                c = connect_from(server, src, direct_tls=True, cls=Sasl2Conn)
            c.send(make_auth(c))
            out.append(failure_condition(c.sasl2_reply()))
    finally:
        if c:
            c.close()
    return out


def random_token():
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip('=')


def test_fast_and_isr_guessing_is_limited(server_factory, conns):
    srv = rate_server(server_factory)
    fast = sasl2_attempts(srv, '127.0.0.1', lambda c: c.authenticate_xml(
        'HT-SHA-256-NONE', ht_initiator('alice', random_token()), new_ua_id(),
        "<fast xmlns='urn:xmpp:fast:0'/>"), 40)
    assert fast[:20] == ['not-authorized'] * 20, fast
    assert fast.count('temporary-auth-failure') >= 10, fast
    isr = sasl2_attempts(srv, '127.0.0.4', lambda c: c.authenticate_xml(
        'HT-SHA-256-NONE', ht_initiator('alice', random_token()), new_ua_id(),
        inst_resume_xml(os.urandom(6).hex(), 0)), 40)
    assert isr.count('temporary-auth-failure') >= 10, isr
    assert set(isr) <= {'not-authorized', 'temporary-auth-failure', 'credentials-expired'}, isr
    # SASL2 PLAIN, the right password, from a clean address: at once.
    t0 = time.monotonic()
    c = connect_from(srv, '127.0.0.2', direct_tls=True, cls=Sasl2Conn)
    conns.append(c)
    el = c.sasl2_plain('alice', USERS['alice'])
    assert el.tag == q('urn:xmpp:sasl:2', 'success'), xr.tostr(el)
    assert time.monotonic() - t0 < 1.0
    assert hits(srv, 'auth_fail_rate_per_ip') >= 20


def test_account_bucket_spares_clean_addresses(server_factory, conns):
    """A guesser spread over addresses: once each has failed, their attempts
    on bob share bob's bucket and are then refused; bob on a clean address,
    and those addresses on other accounts, are not."""
    # An address is "failed" while its own bucket is not full again: with
    # one attempt a second that is a second after its failure. So each
    # address fails once (clean: bob not charged) and comes back at once
    # (charged); not all ten first and then again, which on a slow build
    # let the first addresses become clean again in between.
    srv = rate_server(server_factory, auth_fail_burst_per_account=5, auth_fail_rate_per_account=1,
                      auth_fail_rate_per_ip=1)
    addrs = ['127.0.1.%d' % i for i in range(1, 11)]
    t0 = time.monotonic()
    conds = []
    for a in addrs:
        (cond, _), = plain_attempts(srv, a, 'bob', 'wrong', 1)
        assert cond == 'not-authorized'   # a clean address is never held back
        conds.append(plain_attempts(srv, a, 'bob', 'wrong', 1)[0][0])
    elapsed = time.monotonic() - t0
    assert conds[:5] == ['not-authorized'] * 5, conds
    assert conds.count('not-authorized') <= 5 + elapsed + 1, conds
    assert 'temporary-auth-failure' in conds, conds
    # SCRAM names the account too.
    c = connect_from(srv, addrs[0])
    conns.append(c)
    assert c.authenticate('bob', USERS['bob']) == (False, 'temporary-auth-failure')
    # The same addresses may still log in to other accounts...
    (cond, _), = plain_attempts(srv, addrs[1], 'alice', USERS['alice'], 1)
    assert cond is None
    # ...and bob from a clean address at once.
    t1 = time.monotonic()
    c = connect_from(srv, '127.0.0.2')
    conns.append(c)
    assert c.authenticate('bob', USERS['bob']) == (True, None)
    assert time.monotonic() - t1 < 1.0
    assert hits(srv, 'auth_fail_rate_per_account') >= 2
