"""SASL2 (XEP-0388) + Bind2 (XEP-0386) + inline XEP-0198 on tether, raw XML.

Helpers: sasl2_client.py. Spec notes: /work/shared/protocol/sasl2-bind2-fast.md,
sm.md §7."""

import base64
import re

import pytest

import xmpp_raw as xr
from conftest import USERS
from sasl2_client import (NS_BIND2, NS_FAST, NS_ISR, NS_SASL2, assert_success, bind2_xml,
                          failure_condition, kill, new_ua_id, open_conn, resume_xml, sasl2_login,
                          success_parts)
from sm_client import NS_SM, sm_condition, sm_overrides
from xmpp_raw import NS_SASL, NS_SASL_CB, NS_STREAM, q, tostr

SUFFIX_RE = re.compile(r'^[A-Za-z0-9_-]{16}$')


@pytest.fixture
def srv(server_factory):
    s = server_factory(**sm_overrides(max_resume=60))
    for u, pw in USERS.items():
        s.add_user(u, pw)
    s.settle_users()
    return s


def resource_parts(jid):
    resource = jid.split('/', 1)[1]
    tag, _, suffix = resource.rpartition('/')
    return tag, suffix


def test_features_pre_auth(srv):
    c = open_conn(srv)
    try:
        f = c.open_stream()
        assert f.find(q(NS_SASL, 'mechanisms')) is not None, tostr(f)
        assert f.find(q(NS_SASL_CB, 'sasl-channel-binding')) is not None, tostr(f)
        auth = c.authentication()
        assert auth is not None, tostr(f)
        # same mechanisms as RFC 6120 <mechanisms/>, no HT-* among them
        assert c.sasl2_mechanisms() == c.mechanisms(), (c.sasl2_mechanisms(), c.mechanisms())
        assert 'SCRAM-SHA-256' in c.sasl2_mechanisms()
        assert not [m for m in c.sasl2_mechanisms() if m.startswith('HT-')]
        inline = auth.find(q(NS_SASL2, 'inline'))
        assert inline.find(q(NS_SM, 'sm')) is not None
        feat = inline.findall('%s/%s/%s' % (q(NS_BIND2, 'bind'), q(NS_BIND2, 'inline'), q(NS_BIND2, 'feature')))
        assert [x.get('var') for x in feat] == [NS_SM, 'urn:xmpp:carbons:2', 'urn:xmpp:csi:0']
        fast = c.fast_mechanisms()
        assert 'HT-SHA-256-NONE' in fast and 'HT-SHA-256-ENDP' in fast, fast
        if c.sock.version() == 'TLSv1.3':
            assert 'HT-SHA-256-EXPR' in fast and 'HT-SHA-256-UNIQ' not in fast, fast
        assert c.isr_mechanisms() == fast, (c.isr_mechanisms(), fast)
    finally:
        c.close()


def test_scram_bind2_inline_enable(srv):
    ua = new_ua_id()
    c, el = sasl2_login(srv, 'alice', USERS['alice'], ua_id=ua, tag='phone')
    try:
        p = success_parts(el)
        assert p['bound'] is not None, tostr(el)
        assert p['enabled'] is not None and p['enabled'].get('resume') == 'true', tostr(el)
        assert int(p['enabled'].get('max')) == 60
        assert p['resumed'] is None and p['failed'] is None and p['token'] is None
        assert p['aid'].startswith('alice@localhost/phone/'), p['aid']
        assert c.jid == p['aid']
        tag, suffix = resource_parts(c.jid)
        assert tag == 'phone' and SUFFIX_RE.match(suffix), c.jid
        feats = c.wait_for(q(NS_STREAM, 'features'))
        assert len(feats) == 0, 'features after a Bind2 success must be empty: %s' % tostr(feats)
        # the session works and SM is on (h counts)
        c.roundtrip()
        c.request()
        assert c.wait_a() == 1
        bob = xr.login(srv, 'bob', USERS['bob'], 'b', presence=False)
        try:
            bob.message(c.jid, 'hello-bind2')
            c.wait_message('hello-bind2')
        finally:
            bob.close()
    finally:
        c.close()


def test_plain(srv):
    c, el = sasl2_login(srv, 'bob', USERS['bob'], mech='PLAIN', enable=None)
    try:
        p = success_parts(el)
        assert p['aid'] == 'bob@localhost', p['aid']       # bare: nothing bound
        assert el.find(q(NS_SASL2, 'additional-data')) is None
        feats = c.wait_for(q(NS_STREAM, 'features'))
        # not bound: RFC 6120 bind (and sm, isr) offered
        assert feats.find(q(xr.NS_BIND, 'bind')) is not None, tostr(feats)
        assert feats.find(q(NS_SM, 'sm')) is not None, tostr(feats)
        assert feats.find(q(NS_ISR, 'isr')) is not None, tostr(feats)
        reply = c.bind('classic')
        assert reply.get('type') == 'result', tostr(reply)
        assert c.jid == 'bob@localhost/classic'
        c.roundtrip()
    finally:
        c.close()


def test_wrong_password_then_retry(srv):
    c = open_conn(srv)
    try:
        c.open_stream()
        el = c.sasl2_scram('alice', 'not-the-password', new_ua_id(), bind2_xml('x', enable=True))
        assert failure_condition(el) == 'not-authorized', tostr(el)
        el = c.sasl2_plain('alice', 'still-wrong')
        assert failure_condition(el) == 'not-authorized', tostr(el)
        # inline requests were not processed; the stream is unchanged and can retry
        el = c.sasl2_scram('alice', USERS['alice'], new_ua_id(), bind2_xml('x', enable=True))
        assert_success(el)
        assert success_parts(el)['bound'] is not None
        c.wait_for(q(NS_STREAM, 'features'))
        c.roundtrip()
    finally:
        c.close()


def test_too_many_failures_closes_stream(srv):
    c = open_conn(srv)
    try:
        c.open_stream()
        for _ in range(2):
            assert failure_condition(c.sasl2_plain('alice', 'wrong')) == 'not-authorized'
        c.send(c.authenticate_xml('PLAIN', b'\0alice\0wrong', new_ua_id()))
        el = c.sasl2_reply()
        if el.tag == q(NS_SASL2, 'failure'):
            el = c.wait_for(q(NS_STREAM, 'error'))
        assert xr.stream_error_condition(el) == 'policy-violation', tostr(el)
    finally:
        c.close()


@pytest.mark.parametrize('mech', ['DIGEST-MD5', 'X-NOPE', 'HT-SHA-256-FOO', 'SCRAM-SHA-512'])
def test_bad_mechanism(srv, mech):
    c = open_conn(srv)
    try:
        c.open_stream()
        c.send(c.authenticate_xml(mech, b'\0alice\0x', new_ua_id()))
        el = c.sasl2_reply()
        assert failure_condition(el) == 'invalid-mechanism', tostr(el)
        el = c.sasl2_scram('alice', USERS['alice'], new_ua_id())
        assert_success(el)
    finally:
        c.close()


def test_ht_mechanism_not_offered_on_tls13_is_invalid(srv):
    c = open_conn(srv)
    try:
        c.open_stream()
        if c.sock.version() != 'TLSv1.3':
            pytest.skip('needs TLS 1.3 (UNIQ is offered on 1.2)')
        c.send(c.authenticate_xml('HT-SHA-256-UNIQ', b'alice\0' + bytes(32), new_ua_id(),
                                  "<fast xmlns='%s'/>" % NS_FAST))
        assert failure_condition(c.sasl2_reply()) == 'invalid-mechanism'
    finally:
        c.close()


def test_stanza_during_sasl2_is_stream_error(srv):
    c = open_conn(srv)
    try:
        c.open_stream()
        c.send(c.authenticate_xml('SCRAM-SHA-256', b'n,,n=alice,r=abcdefghijklmnop', new_ua_id()))
        el = c.sasl2_reply()
        assert el.tag == q(NS_SASL2, 'challenge'), tostr(el)
        c.send("<message to='bob@localhost' type='chat'><body>too early</body></message>")
        assert c.expect_stream_error() == 'not-authorized'
    finally:
        c.close()


def test_nonza_during_sasl2_is_stream_error(srv):
    c = open_conn(srv)
    try:
        c.open_stream()
        c.send(c.authenticate_xml('SCRAM-SHA-256', b'n,,n=alice,r=abcdefghijklmnop', new_ua_id()))
        assert c.sasl2_reply().tag == q(NS_SASL2, 'challenge')
        c.send("<enable xmlns='%s'/>" % NS_SM)
        assert c.expect_stream_error() == 'policy-violation'
    finally:
        c.close()


def test_abort(srv):
    c = open_conn(srv)
    try:
        c.open_stream()
        c.send(c.authenticate_xml('SCRAM-SHA-256', b'n,,n=alice,r=abcdefghijklmnop', new_ua_id()))
        assert c.sasl2_reply().tag == q(NS_SASL2, 'challenge')
        c.send("<abort xmlns='%s'/>" % NS_SASL2)
        assert failure_condition(c.sasl2_reply()) == 'aborted'
        assert_success(c.sasl2_scram('alice', USERS['alice'], new_ua_id()))
    finally:
        c.close()


def test_second_authenticate_after_success_is_stream_error(srv):
    c, _ = sasl2_login(srv, 'alice', USERS['alice'])
    try:
        c.wait_for(q(NS_STREAM, 'features'))
        c.send(c.authenticate_xml('PLAIN', b'\0alice\0' + USERS['alice'].encode(), new_ua_id()))
        # XEP-0388 names no condition (sasl2-bind2-fast.md §1.3 rule 9 recommends
        # policy-violation); any stream error that closes the stream is conformant.
        cond = c.expect_stream_error()
        assert cond in ('policy-violation', 'not-authorized', 'unsupported-stanza-type'), cond
    finally:
        c.close()


def test_bind2_resource_stable_per_user_agent(srv):
    ua1, ua2 = new_ua_id(), new_ua_id()
    c1, _ = sasl2_login(srv, 'alice', USERS['alice'], ua_id=ua1, tag='app')
    c1.wait_for(q(NS_STREAM, 'features'))
    jid1 = c1.jid
    c1.close()
    c2, _ = sasl2_login(srv, 'alice', USERS['alice'], ua_id=ua1, tag='app')
    c3, _ = sasl2_login(srv, 'alice', USERS['alice'], ua_id=ua2, tag='app')
    c4, _ = sasl2_login(srv, 'bob', USERS['bob'], ua_id=ua1, tag='app')
    try:
        assert c2.jid == jid1, (c2.jid, jid1)            # same account + user agent: same resource
        assert c3.jid != jid1 and c3.jid.startswith('alice@localhost/app/'), c3.jid
        assert resource_parts(c4.jid)[1] != resource_parts(jid1)[1], 'suffix must depend on the account'
        for c in (c2, c3, c4):
            assert SUFFIX_RE.match(resource_parts(c.jid)[1]), c.jid
        assert ua1 not in jid1 and ua1.replace('-', '') not in jid1
        # both of alice's sessions are live side by side
        c2.wait_for(q(NS_STREAM, 'features'))
        c3.wait_for(q(NS_STREAM, 'features'))
        c2.message(c3.jid, 'x-ua')
        c3.wait_message('x-ua')
    finally:
        for c in (c2, c3, c4):
            c.close()


def test_bind2_no_user_agent_random_resource(srv):
    c = open_conn(srv)
    d = open_conn(srv)
    try:
        jids = []
        for conn in (c, d):
            conn.open_stream()
            el = assert_success(conn.sasl2_scram('alice', USERS['alice'], None, bind2_xml('t')))
            jids.append(success_parts(el)['aid'])
        assert jids[0] != jids[1], jids
    finally:
        c.close()
        d.close()


def test_same_user_agent_second_login_conflicts_old_stream(srv):
    ua = new_ua_id()
    old, _ = sasl2_login(srv, 'alice', USERS['alice'], ua_id=ua, tag='app')
    try:
        old.wait_for(q(NS_STREAM, 'features'))
        old.roundtrip()
        new, _ = sasl2_login(srv, 'alice', USERS['alice'], ua_id=ua, tag='app')
        try:
            assert new.jid == old.jid
            assert old.expect_stream_error() == 'conflict'
            new.wait_for(q(NS_STREAM, 'features'))
            new.roundtrip()
        finally:
            new.close()
    finally:
        old.close()


def test_scram_inline_resume_fails_then_bound(srv):
    c = open_conn(srv)
    try:
        c.open_stream()
        inline = resume_xml('AAAAAAAAAAAAAAAAAAAAAA', 0) + bind2_xml('fb', enable=True)
        el = assert_success(c.sasl2_scram('alice', USERS['alice'], new_ua_id(), inline))
        p = success_parts(el)
        assert p['resumed'] is None
        assert p['failed'] is not None and sm_condition(p['failed']) == 'item-not-found', tostr(el)
        assert p['bound'] is not None and p['enabled'] is not None, tostr(el)
        children = [c_.tag for c_ in el]
        assert children.index(q(NS_SM, 'failed')) < children.index(q(NS_BIND2, 'bound')), children
        assert p['aid'].startswith('alice@localhost/fb/'), p['aid']
        feats = c.wait_for(q(NS_STREAM, 'features'))
        assert len(feats) == 0
        c.roundtrip()
    finally:
        c.close()


def test_scram_inline_resume_of_other_account_fails(srv):
    bob, bel = sasl2_login(srv, 'bob', USERS['bob'])
    try:
        bob_id = success_parts(bel)['enabled'].get('id')
        kill(bob)
        srv.wait_log('session detached jid=%s' % bob.jid, 10)
        c = open_conn(srv)
        try:
            c.open_stream()
            el = assert_success(c.sasl2_scram('alice', USERS['alice'], new_ua_id(),
                                              resume_xml(bob_id, 0) + bind2_xml('x', enable=True)))
            p = success_parts(el)
            assert p['resumed'] is None and sm_condition(p['failed']) == 'item-not-found', tostr(el)
            assert p['aid'].startswith('alice@'), p['aid']
        finally:
            c.close()
    finally:
        bob.abort()


def test_scram_inline_resume_succeeds(srv):
    a, el = sasl2_login(srv, 'alice', USERS['alice'], tag='r')
    a.wait_for(q(NS_STREAM, 'features'))
    jid, sm_id = a.jid, a.sm_id
    bob = xr.login(srv, 'bob', USERS['bob'], 'b', presence=False)
    try:
        bob.message(jid, 'before')
        a.wait_message('before')
        h = a.h
        kill(a)
        srv.wait_log('session detached jid=%s' % jid, 10)
        for i in range(3):
            bob.message(jid, 'queued-%d' % i)
        bob.roundtrip()
        c = open_conn(srv)
        try:
            c.open_stream()
            el = assert_success(c.sasl2_scram('alice', USERS['alice'], new_ua_id(),
                                              resume_xml(sm_id, h) + bind2_xml('x', enable=True),
                                              resume_h=h))
            p = success_parts(el)
            assert p['resumed'] is not None and p['bound'] is None, tostr(el)
            assert p['aid'] == jid
            c.wait_bodies('queued-', 3)
            assert c.messages('queued-') == ['queued-0', 'queued-1', 'queued-2']
            assert c.messages('before') == []
            # no stream features after a resume
            assert c.maybe(lambda e: e.tag == q(NS_STREAM, 'features'), 0.5) is None
            c.roundtrip()
        finally:
            c.close()
    finally:
        bob.close()


def test_disco_info_advertises_exactly_what_works(srv):
    c, _ = sasl2_login(srv, 'alice', USERS['alice'])
    try:
        c.wait_for(q(NS_STREAM, 'features'))
        reply = c.iq('get', "<query xmlns='%s'/>" % xr.NS_DISCO_INFO, to=srv.domain)
        assert reply.get('type') == 'result', tostr(reply)
        feats = {f.get('var') for f in reply.iter(q(xr.NS_DISCO_INFO, 'feature'))}
        expected = {xr.NS_DISCO_INFO, 'http://jabber.org/protocol/disco#items', xr.NS_PING,
                    xr.NS_VERSION, NS_SM, 'msgoffline', 'urn:xmpp:carbons:2',
                    'urn:xmpp:blocking'}
        assert feats == expected, feats
        # each one answers
        for payload in ("<query xmlns='http://jabber.org/protocol/disco#items'/>",
                        "<query xmlns='%s'/>" % xr.NS_VERSION, "<ping xmlns='%s'/>" % xr.NS_PING):
            r = c.iq('get', payload, to=srv.domain)
            assert r.get('type') == 'result', tostr(r)
        c.request()
        c.wait_a()
    finally:
        c.close()


def test_every_advertised_sasl2_mechanism_works(srv):
    probe = open_conn(srv)
    probe.open_stream()
    mechs = probe.sasl2_mechanisms()
    probe.close()
    assert mechs, 'no SASL2 mechanisms'
    for mech in mechs:
        c = open_conn(srv)
        try:
            c.open_stream()
            if mech == 'PLAIN':
                el = c.sasl2_plain('carol', USERS['carol'], new_ua_id(), bind2_xml('m'))
            else:
                m = re.fullmatch(r'SCRAM-SHA-(1|256)(-PLUS)?', mech)
                assert m, 'advertised mechanism the tests do not know: %s' % mech
                el = c.sasl2_scram('carol', USERS['carol'], new_ua_id(), bind2_xml('m'),
                                   hashname='sha1' if m.group(1) == '1' else 'sha256',
                                   cb_type='tls-server-end-point' if m.group(2) else None)
            assert_success(el)
            assert success_parts(el)['bound'] is not None, (mech, tostr(el))
        finally:
            c.close()


def test_sasl2_over_starttls(srv):
    c, el = sasl2_login(srv, 'alice', USERS['alice'], direct_tls=False, tag='st')
    try:
        assert success_parts(el)['enabled'] is not None
        c.wait_for(q(NS_STREAM, 'features'))
        c.roundtrip()
    finally:
        c.close()


def test_scram_additional_data_is_server_final(srv):
    c, el = sasl2_login(srv, 'alice', USERS['alice'], enable=None)
    try:
        ad = base64.b64decode(el.findtext(q(NS_SASL2, 'additional-data')))
        assert ad.startswith(b'v='), ad
    finally:
        c.close()
