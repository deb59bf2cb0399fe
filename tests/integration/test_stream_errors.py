"""Stream errors (RFC 6120 §4.9) for bad input, each followed by </stream:stream>
and a closed connection, while two logged-in witnesses keep working."""

import time

import pytest

import xmpp_raw as xr
from xmpp_raw import NS_CLIENT, q

SNEAKY = 'sneaky-should-not-arrive'


def plain(server):
    return xr.XMPPConn.connect(server.host, server.port)


def plain_open(server):
    c = plain(server)
    c.open_stream()
    return c


def tls_open(server):
    c = xr.XMPPConn.connect(server.host, server.tls_port, direct_tls=True)
    c.open_stream()
    return c


def logged_in(server, users):
    return xr.login(server, 'carol', users['carol'], 'bad')


def sneaky_message():
    return "<message to='bob@localhost/w' type='chat'><body>%s</body></message>" % SNEAKY


# ---- cases: (server, users, bob_jid) -> connection on which the bad input was sent

def case_doctype(server, users):
    c = plain(server)
    c.send("<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x 'y'>]>"
           + c.stream_header(prolog=None))
    return c


def case_doctype_tls(server, users):
    c = xr.XMPPConn.connect(server.host, server.tls_port, direct_tls=True)
    c.send("<?xml version='1.0'?><!DOCTYPE stream:stream SYSTEM 'file:///etc/passwd'>"
           + c.stream_header(prolog=None))
    return c


def case_comment(server, users):
    c = plain_open(server)
    c.send('<!-- a comment -->')
    return c


def case_comment_logged_in(server, users):
    c = logged_in(server, users)
    c.send("<message to='bob@localhost/w'><body>x</body><!-- c --></message>")
    return c


def case_processing_instruction(server, users):
    c = tls_open(server)
    c.send("<?evil instruction?>")
    return c


def case_entity_reference(server, users):
    c = logged_in(server, users)
    c.send("<message to='bob@localhost/w'><body>&xxe;</body></message>")
    return c


def case_malformed(server, users):
    c = logged_in(server, users)
    c.send("<message to='bob@localhost/w' type='chat'><body>%s</message>" % SNEAKY)
    return c


def case_malformed_preauth(server, users):
    c = plain_open(server)
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' <")
    return c


def case_bad_utf8(server, users):
    c = logged_in(server, users)
    c.send(b"<message to='bob@localhost/w' type='chat'><body>\xff\xfe\xc3</body></message>")
    return c


def case_encoding_declaration(server, users):
    c = plain(server)
    c.send("<?xml version='1.0' encoding='ISO-8859-1'?>" + c.stream_header(prolog=None))
    return c


def case_oversized(server, users):
    c = logged_in(server, users)
    big = 'A' * (server_max_stanza(server) + 4096)
    c.send_quiet("<message to='bob@localhost/w' type='chat'><body>%s%s</body></message>" % (SNEAKY, big))
    return c


def case_deep_nesting(server, users):
    c = logged_in(server, users)
    depth = 200
    c.send_quiet("<message to='bob@localhost/w' type='chat'><body>%s</body>" % SNEAKY
                 + "<x xmlns='urn:example:deep'>" * depth + '</x>' * depth + '</message>')
    return c


def case_host_unknown(server, users):
    c = plain(server)
    c.open_stream(to='example.org', wait_features=False)
    return c


def case_host_unknown_tls(server, users):
    c = xr.XMPPConn.connect(server.host, server.tls_port, direct_tls=True)
    c.open_stream(to='example.org', wait_features=False)
    return c


def case_content_namespace(server, users):
    c = plain(server)
    c.open_stream(xmlns='jabber:server', wait_features=False)
    return c


def case_stream_namespace(server, users):
    c = plain(server)
    c.open_stream(stream_ns='http://example.com/not-streams', wait_features=False)
    return c


def case_version_2(server, users):
    c = plain(server)
    c.open_stream(version='2.0', wait_features=False)
    return c


def case_stanza_before_tls(server, users):
    c = plain_open(server)
    c.send(sneaky_message())
    return c


def case_stanza_before_auth(server, users):
    c = tls_open(server)
    c.send(sneaky_message())
    return c


def case_stanza_before_bind(server, users):
    c = xr.connect_tls(server, direct_tls=True)
    ok, cond = c.auth_scram('carol', users['carol'])
    assert ok, cond
    c.open_stream()
    c.send(sneaky_message())
    return c


def case_unknown_top_level_element(server, users):
    c = logged_in(server, users)
    c.send("<frobnicate xmlns='urn:example:frob'/>")
    return c


def server_max_stanza(server):
    return 65536  # the server fixture's [limits] max_stanza_size


CASES = [
    ('doctype', case_doctype, {'restricted-xml'}),
    ('doctype-direct-tls', case_doctype_tls, {'restricted-xml'}),
    ('comment', case_comment, {'restricted-xml'}),
    ('comment-in-stanza', case_comment_logged_in, {'restricted-xml'}),
    ('processing-instruction', case_processing_instruction, {'restricted-xml'}),
    # an undefined entity is also a well-formedness error for a non-validating parser
    ('entity-reference', case_entity_reference, {'restricted-xml', 'not-well-formed'}),
    ('malformed', case_malformed, {'not-well-formed'}),
    ('malformed-preauth', case_malformed_preauth, {'not-well-formed'}),
    ('invalid-utf8', case_bad_utf8, {'not-well-formed', 'unsupported-encoding'}),
    ('encoding-declaration', case_encoding_declaration, {'unsupported-encoding'}),
    ('oversized-stanza', case_oversized, {'policy-violation'}),
    ('deep-nesting', case_deep_nesting, {'policy-violation'}),
    ('wrong-to', case_host_unknown, {'host-unknown'}),
    ('wrong-to-direct-tls', case_host_unknown_tls, {'host-unknown'}),
    ('content-namespace', case_content_namespace, {'invalid-namespace'}),
    ('stream-namespace', case_stream_namespace, {'invalid-namespace'}),
    ('version-2.0', case_version_2, {'unsupported-version'}),
    ('stanza-before-tls', case_stanza_before_tls, {'not-authorized'}),
    ('stanza-before-auth', case_stanza_before_auth, {'not-authorized'}),
    ('stanza-before-bind', case_stanza_before_bind, {'not-authorized'}),
    ('unknown-top-level-element', case_unknown_top_level_element, {'unsupported-stanza-type'}),
]


@pytest.fixture
def witnesses(server, users, conns):
    a = xr.login(server, 'alice', users['alice'], 'w')
    conns.append(a)
    b = xr.login(server, 'bob', users['bob'], 'w', direct_tls=True)
    conns.append(b)
    xr.message_roundtrip(a, b)
    return a, b


@pytest.mark.parametrize('case,expected', [(f, e) for _, f, e in CASES], ids=[n for n, _, _ in CASES])
def test_stream_error(server, users, conns, witnesses, case, expected):
    alice, bob = witnesses
    c = case(server, users)
    conns.append(c)
    cond = c.expect_stream_error(timeout=10, close_timeout=5)
    assert cond in expected, 'stream error <%s/>, expected one of %s' % (cond, sorted(expected))
    assert c.header is not None, 'stream error without a response stream header first'
    # the server and the other sessions are unaffected
    xr.message_roundtrip(alice, bob)
    bob.pump(0.3)
    leaked = [e for e in bob.inbox if e.tag == q(NS_CLIENT, 'message') and SNEAKY in xr.tostr(e)]
    assert not leaked, 'the rejected stanza was delivered: %s' % xr.tostr(leaked[0])


def test_whitespace_keepalive_between_stanzas(server, users, conns, witnesses):
    alice, bob = witnesses
    alice.send(' ')
    alice.send('\n \t ')
    alice.message(bob.jid, 'after-whitespace')
    alice.send('   ')
    assert bob.wait_message('after-whitespace').get('from') == alice.jid
    bob.send(' \r\n')
    xr.message_roundtrip(alice, bob)
    # whitespace before authentication is fine too
    c = xr.connect_tls(server)
    conns.append(c)
    c.send('  ')
    assert c.auth_scram('carol', users['carol']) == (True, None)


def test_stanza_split_across_writes(server, users, conns, witnesses):
    """The parser must cope with arbitrary TCP/TLS fragmentation."""
    alice, bob = witnesses
    data = ("<message to='%s' type='chat'><body>fragm\u00e9nted \u2603</body></message>" % bob.jid).encode()
    for i in range(len(data)):
        alice.send(data[i:i + 1])
    m = bob.wait_message('fragm\u00e9nted \u2603')
    assert m.get('from') == alice.jid


def test_stanza_just_under_limit_is_accepted(server, users, conns, witnesses):
    alice, bob = witnesses
    body = 'B' * (server_max_stanza(server) - 2048)
    alice.message(bob.jid, body)
    m = bob.wait_message(body, timeout=15)
    assert m.get('from') == alice.jid


def test_client_close_handshake(server, users, conns, witnesses):
    """Client sends </stream:stream>: server answers </stream:stream> and closes."""
    c = xr.login(server, 'carol', users['carol'], 'closer')
    conns.append(c)
    c.send('</stream:stream>')
    assert c.wait_closed(10), 'server did not close after the client closed the stream'
    assert c.stream_ended, 'server did not answer </stream:stream>'
    xr.message_roundtrip(*witnesses)


# ----------------------------------------------------------------------------- preauth timeout

@pytest.mark.parametrize('stage', ['silent-tcp', 'silent-direct-tls', 'stream-open-no-auth'])
def test_preauth_timeout(server_factory, conns, stage):
    timeout = 2
    srv = server_factory(preauth_timeout=timeout)
    t0 = time.monotonic()
    if stage == 'silent-tcp':
        c = xr.XMPPConn.connect(srv.host, srv.port)
    elif stage == 'silent-direct-tls':
        c = xr.XMPPConn.connect(srv.host, srv.tls_port, direct_tls=True)
    else:
        c = xr.connect_tls(srv)
    conns.append(c)
    assert c.wait_closed(timeout + 5), 'unauthenticated connection still open after %ds' % (timeout + 5)
    elapsed = time.monotonic() - t0
    assert elapsed >= timeout - 0.5, 'closed after %.1fs, before preauth_timeout=%ds' % (elapsed, timeout)
    errs = [e for e in c.inbox if e.tag == q(xr.NS_STREAM, 'error')]
    if errs:   # a stream error is optional here; if sent it must be followed by the close tag
        assert c.stream_ended
    # an authenticated session on the same server is not affected by the timer
    srv.add_user('dora', 'dora-pw')
    d = xr.login(srv, 'dora', 'dora-pw', 'x')
    conns.append(d)
    time.sleep(timeout + 1.5)
    d.roundtrip()


# ----------------------------------------------------------------------------- more negotiation edge cases

def test_oversized_before_auth(server, users, conns, witnesses):
    c = tls_open(server)
    conns.append(c)
    c.send_quiet("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
                 % ('QUFB' * (server_max_stanza(server) // 4 + 1024)))
    assert c.expect_stream_error() == 'policy-violation'
    xr.message_roundtrip(*witnesses)


def test_starttls_twice_is_refused(server, users, conns):
    """<starttls/> on an encrypted stream (direct TLS, or after STARTTLS) is not honoured."""
    for direct in (True, False):
        c = xr.connect_tls(server, direct_tls=direct)
        conns.append(c)
        c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        el = c.wait_for(lambda e: True)
        assert el.tag != q('urn:ietf:params:xml:ns:xmpp-tls', 'proceed'), 'STARTTLS inside TLS'
        if el.tag == q(xr.NS_STREAM, 'error'):
            assert xr.stream_error_condition(el) in ('policy-violation', 'unsupported-stanza-type',
                                                     'not-authorized'), xr.tostr(el)


def test_close_before_auth(server, conns):
    c = plain_open(server)
    conns.append(c)
    c.send('</stream:stream>')
    assert c.wait_closed(10)
    assert c.stream_ended, 'server did not answer </stream:stream>'


def test_second_bind_refused(server, users, conns):
    c = xr.login(server, 'alice', users['alice'], 'once', presence=False)
    conns.append(c)
    rid = 'bind-again'
    c.send("<iq type='set' id='%s'><bind xmlns='%s'><resource>twice</resource></bind></iq>"
           % (rid, xr.NS_BIND))
    r = c.maybe(lambda e: e.get('id') == rid, 5)
    if r is not None:
        assert r.get('type') == 'error', 'second bind accepted: %s' % xr.tostr(r)
        c.roundtrip()
    else:   # or a stream error
        assert c.stream_ended or c.eof


@pytest.mark.parametrize('iq', ["<iq id='nt' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
                                "<iq type='fetch' id='nt' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"],
                         ids=['no-type', 'bad-type'])
def test_iq_bad_type(server, users, conns, iq):
    c = xr.login(server, 'alice', users['alice'], 'bt', presence=False)
    conns.append(c)
    c.send(iq)
    r = c.maybe(lambda e: e.get('id') == 'nt', 5)
    if r is not None:
        assert r.get('type') == 'error' and xr.stanza_error(r)[1] == 'bad-request', xr.tostr(r)
        c.roundtrip()
    else:
        assert c.stream_ended, 'iq with a bad type ignored (no error, no stream error)'
