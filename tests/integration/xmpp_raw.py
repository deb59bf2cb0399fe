"""xmpp_raw.py - a small raw-XML XMPP client for tether's integration tests.

Everything here is bounded by timeouts and talks to loopback only. The raw
client keeps full control over the bytes on the wire (needed for the stream
error cases), yet parses what the server sends with an incremental XML parser
so tests can work with elements instead of regexes.

Main entry points:
  XMPPConn.connect(host, port, direct_tls=False)  TCP (+ direct TLS, ALPN xmpp-client)
  conn.open_stream() / conn.starttls() / conn.auth_scram() / conn.auth_plain()
  conn.bind() / conn.next() / conn.wait_for() / conn.expect_stream_error()
  login(server, user, password, ...)             connect + TLS + SASL + bind (+ presence)
  slix_client(...)                                a slixmpp ClientXMPP set up for the test server
"""

import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import os
import re
import socket
import ssl
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

NS_STREAM = 'http://etherx.jabber.org/streams'
NS_CLIENT = 'jabber:client'
NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls'
NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl'
NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind'
NS_SESSION = 'urn:ietf:params:xml:ns:xmpp-session'
NS_STREAMS_ERR = 'urn:ietf:params:xml:ns:xmpp-streams'
NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas'
NS_SASL_CB = 'urn:xmpp:sasl-cb:0'
NS_PING = 'urn:xmpp:ping'
NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info'
NS_VERSION = 'jabber:iq:version'
NS_ROSTER = 'jabber:iq:roster'

DEFAULT_TIMEOUT = 10.0


class StreamClosed(Exception):
    """The server closed the stream (</stream:stream>) or the connection."""


class XMPPTimeout(AssertionError):
    """Nothing (matching) arrived in time. An AssertionError so pytest shows it as a failure."""


def q(ns, name):
    """Clark notation: '{ns}name'."""
    return '{%s}%s' % (ns, name)


def local(tag):
    """Local name of an ElementTree tag."""
    return tag.rsplit('}', 1)[-1]


def nsof(tag):
    return tag[1:].split('}', 1)[0] if tag.startswith('{') else ''


def tostr(el):
    return ET.tostring(el, encoding='unicode')


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode('ascii')


def stanza_error(el):
    """(error type, condition) of a stanza of type 'error', or (None, None)."""
    err = el.find(q(NS_CLIENT, 'error'))
    if err is None:
        return None, None
    for child in err:
        if nsof(child.tag) == NS_STANZAS and local(child.tag) != 'text':
            return err.get('type'), local(child.tag)
    return err.get('type'), None


def stream_error_condition(el):
    """Condition name of a <stream:error/> element (None if it has none)."""
    for child in el:
        if nsof(child.tag) == NS_STREAMS_ERR and local(child.tag) != 'text':
            return local(child.tag)
    return None


def new_id(prefix='t'):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:12])


def _is_eof_error(exc):
    return isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                            ssl.SSLEOFError, ssl.SSLZeroReturnError)) or (
        isinstance(exc, ssl.SSLError) and 'EOF' in str(exc).upper())


class XMPPConn:
    """One raw client connection.

    Received top-level elements go to an inbox; next() pops the oldest,
    wait_for(pred) removes the first matching one (others stay queued)."""

    def __init__(self, sock, host, port, domain, timeout):
        self.sock = sock
        self.host = host
        self.port = port
        self.domain = domain
        self.timeout = timeout
        self.tls = False
        self.raw = b''              # every byte received, for textual checks
        self.inbox = collections.deque()
        self.header = None          # attributes of the server's current stream header
        self.features = None        # last <stream:features/>
        self.stream_ended = False   # saw </stream:stream>
        self.eof = False            # TCP/TLS connection gone
        self.jid = None             # full JID after bind
        self._new_parser()

    # ---------------------------------------------------------------- setup
    @classmethod
    def connect(cls, host, port, *, domain='localhost', direct_tls=False,
                alpn=('xmpp-client',), sni=None, timeout=DEFAULT_TIMEOUT):
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = cls(sock, host, port, domain, timeout)
        if direct_tls:
            conn._wrap_tls(alpn=alpn, sni=sni)
        return conn

    @staticmethod
    def client_context(alpn=('xmpp-client',)):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def _wrap_tls(self, alpn=('xmpp-client',), sni=None):
        ctx = self.client_context(alpn)
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=sni or self.domain)
        self.tls = True

    def _new_parser(self):
        self.parser = ET.XMLPullParser(events=('start', 'end'))
        self.depth = 0

    def close(self):
        """Polite close: send </stream:stream> if possible, then close the socket."""
        if self.sock is None:
            return
        if not self.eof:
            with contextlib.suppress(OSError, ValueError):
                self.sock.settimeout(1.0)
                self.sock.sendall(b'</stream:stream>')
        self.abort()

    def abort(self):
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
        self.eof = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- I/O
    def send(self, data):
        if isinstance(data, str):
            data = data.encode('utf-8')
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def send_quiet(self, data):
        """send(), but a connection the server already closed is not an error.
        Returns False if the send failed."""
        try:
            self.send(data)
            return True
        except (OSError, ValueError):
            return False

    def _recv_some(self, deadline):
        """Reads one chunk into the parser. Returns False on EOF."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        self.sock.settimeout(min(remaining, 1.0))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        except ssl.SSLWantReadError:
            return True
        except (OSError, ssl.SSLError) as e:
            if _is_eof_error(e) or isinstance(e, OSError):
                self.eof = True
                return False
            raise
        if not data:
            self.eof = True
            return False
        self.raw += data
        self._feed(data)
        return True

    def _feed(self, data):
        try:
            self.parser.feed(data)
            events = list(self.parser.read_events())
        except ET.ParseError as e:
            raise AssertionError('server sent bad XML (%s); received so far:\n%r'
                                 % (e, self.raw[-4000:])) from None
        for ev, el in events:
            if ev == 'start':
                self.depth += 1
                if self.depth == 1:
                    if el.tag != q(NS_STREAM, 'stream'):
                        raise AssertionError('server stream root is %s, not stream:stream' % el.tag)
                    self.header = dict(el.attrib)
            else:
                self.depth -= 1
                if self.depth == 1:
                    if el.tag == q(NS_STREAM, 'features'):
                        self.features = el
                    self.inbox.append(el)
                elif self.depth == 0:
                    self.stream_ended = True

    def pump(self, timeout):
        """Reads for up to <timeout> seconds (or until EOF)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(socket.timeout):
            while time.monotonic() < deadline:
                if not self._recv_some(deadline):
                    break

    def next(self, timeout=None):
        """The next top-level element from the server.
        Raises StreamClosed at end of stream, XMPPTimeout on timeout."""
        return self.wait_for(lambda el: True, timeout)

    def wait_for(self, pred, timeout=None, what='matching element'):
        """Removes and returns the first inbox element with pred(el) true,
        reading more as needed. Non-matching elements stay queued."""
        if isinstance(pred, str):
            tag = pred
            pred = lambda el: el.tag == tag  # noqa: E731
            what = tag
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            for el in list(self.inbox):
                if pred(el):
                    self.inbox.remove(el)
                    return el
            if self.stream_ended or self.eof:
                raise StreamClosed('stream closed while waiting for %s; queued: %s; tail: %r'
                                   % (what, [tostr(e)[:200] for e in self.inbox], self.raw[-500:]))
            try:
                self._recv_some(deadline)
            except socket.timeout:
                raise XMPPTimeout('timeout (%.1fs) waiting for %s; queued: %s'
                                  % (timeout, what, [tostr(e)[:300] for e in self.inbox])) from None

    def maybe(self, pred, timeout):
        """Like wait_for(), but returns None on timeout or close instead of raising."""
        try:
            return self.wait_for(pred, timeout)
        except (XMPPTimeout, StreamClosed):
            return None

    def wait_closed(self, timeout=5.0):
        """Reads until the server closes the connection. True if it did within <timeout>."""
        deadline = time.monotonic() + timeout
        try:
            while self._recv_some(deadline):
                pass
        except socket.timeout:
            return False
        return True

    def expect_stream_error(self, timeout=None, close_timeout=5.0):
        """Waits for <stream:error/>; checks that </stream:stream> follows and that
        the server closes the connection. Returns the condition name."""
        timeout = self.timeout if timeout is None else timeout
        try:
            err = self.wait_for(q(NS_STREAM, 'error'), timeout)
        except StreamClosed:
            raise AssertionError('connection closed without <stream:error/>; received: %r'
                                 % self.raw[-1500:]) from None
        cond = stream_error_condition(err)
        closed = self.wait_closed(close_timeout)
        assert self.stream_ended, ('<stream:error/> (%s) not followed by </stream:stream>; received: %r'
                                   % (cond, self.raw[-1500:]))
        assert closed, 'server did not close the connection within %.0fs after <stream:error/> (%s)' % (
            close_timeout, cond)
        return cond

    # ---------------------------------------------------------------- stream
    def stream_header(self, to=None, *, version='1.0', xmlns=NS_CLIENT, stream_ns=NS_STREAM,
                      prefix='stream', lang='en', from_=None, prolog="<?xml version='1.0'?>"):
        to = self.domain if to is None else to
        attrs = []
        if to is not False:
            attrs.append('to=%s' % quoteattr(to))
        if from_:
            attrs.append('from=%s' % quoteattr(from_))
        if version is not None:
            attrs.append('version=%s' % quoteattr(version))
        if lang:
            attrs.append("xml:lang='%s'" % lang)
        if xmlns is not None:
            attrs.append('xmlns=%s' % quoteattr(xmlns))
        if prefix:
            attrs.append('xmlns:%s=%s' % (prefix, quoteattr(stream_ns)))
            root = prefix + ':stream'
        else:
            root = 'stream'
        return '%s<%s %s>' % (prolog or '', root, ' '.join(attrs))

    def open_stream(self, to=None, *, wait_features=True, timeout=None, **kw):
        """Sends a stream header (restarting the parser) and returns the
        <stream:features/> that follow (None if wait_features is False)."""
        self._new_parser()
        self.header = None
        self.features = None
        self.send(self.stream_header(to, **kw))
        if not wait_features:
            return None
        return self.wait_for(q(NS_STREAM, 'features'), timeout, what='<stream:features/>')

    def mechanisms(self):
        if self.features is None:
            return []
        m = self.features.find(q(NS_SASL, 'mechanisms'))
        if m is None:
            return []
        return [(e.text or '').strip() for e in m.findall(q(NS_SASL, 'mechanism'))]

    def cb_types(self):
        if self.features is None:
            return []
        cb = self.features.find(q(NS_SASL_CB, 'sasl-channel-binding'))
        if cb is None:
            return []
        return [e.get('type') for e in cb.findall(q(NS_SASL_CB, 'channel-binding'))]

    def starttls(self, alpn=('xmpp-client',)):
        """<starttls/> → <proceed/> → TLS handshake → new stream. Returns the new features."""
        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        el = self.next()
        assert el.tag == q(NS_TLS, 'proceed'), 'expected <proceed/>, got %s' % tostr(el)
        assert not self.inbox, 'server sent data after <proceed/>'
        self._wrap_tls(alpn=alpn)
        return self.open_stream()

    # ---------------------------------------------------------------- SASL
    def _sasl_result(self, timeout=None):
        el = self.wait_for(lambda e: nsof(e.tag) in (NS_SASL, NS_STREAM) and local(e.tag) in (
            'success', 'failure', 'challenge', 'error'), timeout, what='SASL reply')
        return el

    @staticmethod
    def _failure_condition(el):
        for child in el:
            if local(child.tag) != 'text':
                return local(child.tag)
        return None

    def auth_plain(self, user, password, authzid=''):
        """Returns (ok, condition)."""
        msg = ('%s\0%s\0%s' % (authzid, user, password)).encode('utf-8')
        self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, b64(msg)))
        el = self._sasl_result()
        if el.tag == q(NS_SASL, 'success'):
            return True, None
        if el.tag == q(NS_STREAM, 'error'):
            self.inbox.appendleft(el)
            return False, 'stream-error:%s' % stream_error_condition(el)
        assert el.tag == q(NS_SASL, 'failure'), 'unexpected SASL reply %s' % tostr(el)
        return False, self._failure_condition(el)

    def tls_server_end_point(self):
        """RFC 5929 tls-server-end-point channel binding data for this connection."""
        der = self.sock.getpeercert(binary_form=True)
        return hashlib.new(cert_cb_hash(der), der).digest()

    def auth_scram(self, user, password, hashname='sha256', cb_type=None, cb_data=None,
                   authzid=None, flag=None):
        """SCRAM-SHA-1 / SCRAM-SHA-256 (-PLUS when cb_type is given).
        Returns (ok, condition). Verifies the server signature on success."""
        hname = {'sha1': 'SHA-1', 'sha256': 'SHA-256'}[hashname]
        mech = 'SCRAM-%s%s' % (hname, '-PLUS' if cb_type else '')
        if cb_type and cb_data is None:
            if cb_type == 'tls-server-end-point':
                cb_data = self.tls_server_end_point()
            else:
                raise ValueError('no channel binding data for %s' % cb_type)
        if flag is None:
            flag = 'p=%s' % cb_type if cb_type else 'n'
        gs2 = '%s,%s,' % (flag, ('a=' + saslname(authzid)) if authzid else '')
        cnonce = base64.b64encode(os.urandom(18)).decode()
        cfmb = 'n=%s,r=%s' % (saslname(user), cnonce)
        self.send("<auth xmlns='%s' mechanism='%s'>%s</auth>" % (NS_SASL, mech, b64(gs2 + cfmb)))
        el = self._sasl_result()
        if el.tag != q(NS_SASL, 'challenge'):
            if el.tag == q(NS_STREAM, 'error'):
                self.inbox.appendleft(el)
                return False, 'stream-error:%s' % stream_error_condition(el)
            assert el.tag == q(NS_SASL, 'failure'), 'unexpected SASL reply %s' % tostr(el)
            return False, self._failure_condition(el)
        sfm = base64.b64decode(el.text or '').decode('utf-8')
        attrs = dict(kv.split('=', 1) for kv in sfm.split(','))
        assert attrs['r'].startswith(cnonce) and len(attrs['r']) > len(cnonce), 'bad server nonce: %r' % sfm
        salt = base64.b64decode(attrs['s'])
        iters = int(attrs['i'])
        assert iters >= 4096, 'SCRAM iteration count %d < 4096' % iters
        salted = hashlib.pbkdf2_hmac(hashname, password.encode('utf-8'), salt, iters)
        client_key = hmac.new(salted, b'Client Key', hashname).digest()
        stored_key = hashlib.new(hashname, client_key).digest()
        cbind_input = gs2.encode() + (cb_data if cb_type else b'')
        cfwop = 'c=%s,r=%s' % (b64(cbind_input), attrs['r'])
        auth_msg = ('%s,%s,%s' % (cfmb, sfm, cfwop)).encode('utf-8')
        client_sig = hmac.new(stored_key, auth_msg, hashname).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
        server_key = hmac.new(salted, b'Server Key', hashname).digest()
        server_sig = hmac.new(server_key, auth_msg, hashname).digest()
        self.send("<response xmlns='%s'>%s</response>" % (NS_SASL, b64('%s,p=%s' % (cfwop, b64(proof)))))
        el = self._sasl_result()
        if el.tag == q(NS_SASL, 'challenge'):
            # Allowed but discouraged: server-final in a challenge, empty response.
            final = base64.b64decode(el.text or '').decode()
            self.send("<response xmlns='%s'/>" % NS_SASL)
            el = self._sasl_result()
        else:
            final = None
        if el.tag == q(NS_STREAM, 'error'):
            self.inbox.appendleft(el)
            return False, 'stream-error:%s' % stream_error_condition(el)
        if el.tag == q(NS_SASL, 'failure'):
            return False, self._failure_condition(el)
        assert el.tag == q(NS_SASL, 'success'), 'unexpected SASL reply %s' % tostr(el)
        if final is None:
            text = (el.text or '').strip()
            final = base64.b64decode(text).decode() if text and text != '=' else ''
        assert final == 'v=' + b64(server_sig), 'bad SCRAM server signature: %r' % final
        return True, None

    def authenticate(self, user, password, mech='SCRAM-SHA-256'):
        """Runs one SASL mechanism by name. Returns (ok, condition)."""
        if mech == 'PLAIN':
            return self.auth_plain(user, password)
        m = re.fullmatch(r'SCRAM-SHA-(1|256)(-PLUS)?', mech)
        assert m, 'unsupported mechanism %s' % mech
        hashname = 'sha1' if m.group(1) == '1' else 'sha256'
        cb = 'tls-server-end-point' if m.group(2) else None
        return self.auth_scram(user, password, hashname, cb_type=cb)

    # ---------------------------------------------------------------- bind & stanzas
    def bind(self, resource=None, timeout=None):
        """Binds a resource. Returns the iq reply element (result or error);
        on result sets self.jid."""
        rid = new_id('bind')
        inner = '<resource>%s</resource>' % escape(resource) if resource else ''
        self.send("<iq type='set' id='%s'><bind xmlns='%s'>%s</bind></iq>" % (rid, NS_BIND, inner))
        el = self.wait_for(lambda e: e.tag == q(NS_CLIENT, 'iq') and e.get('id') == rid, timeout,
                           what='bind reply')
        if el.get('type') == 'result':
            j = el.find('%s/%s' % (q(NS_BIND, 'bind'), q(NS_BIND, 'jid')))
            assert j is not None and j.text, 'bind result without <jid/>: %s' % tostr(el)
            self.jid = j.text.strip()
        return el

    def iq(self, type_, payload, to=None, timeout=None, id_=None):
        """Sends an iq get/set and returns the reply with the same id."""
        rid = id_ or new_id('iq')
        to_attr = ' to=%s' % quoteattr(to) if to is not None else ''
        self.send("<iq type='%s' id='%s'%s>%s</iq>" % (type_, rid, to_attr, payload))
        return self.wait_for(lambda e: e.tag == q(NS_CLIENT, 'iq') and e.get('id') == rid
                             and e.get('type') in ('result', 'error'), timeout,
                             what='iq reply id=%s' % rid)

    def presence(self, priority=None, type_=None, to=None, extra=''):
        attrs = ''
        if type_:
            attrs += ' type=%s' % quoteattr(type_)
        if to:
            attrs += ' to=%s' % quoteattr(to)
        body = ''
        if priority is not None:
            body += '<priority>%d</priority>' % priority
        self.send('<presence%s>%s%s</presence>' % (attrs, body, extra))

    def message(self, to, body, type_='chat', id_=None, from_=None, extra=''):
        attrs = ' to=%s' % quoteattr(to) if to is not None else ''
        if type_:
            attrs += ' type=%s' % quoteattr(type_)
        if id_:
            attrs += ' id=%s' % quoteattr(id_)
        if from_:
            attrs += ' from=%s' % quoteattr(from_)
        self.send('<message%s><body>%s</body>%s</message>' % (attrs, escape(body), extra))

    def wait_message(self, body=None, timeout=None, type_=None):
        """Next <message/> (with that body text, if given; errors skipped unless type_='error')."""
        def pred(e):
            if e.tag != q(NS_CLIENT, 'message'):
                return False
            if type_ is not None and e.get('type') != type_:
                return False
            if type_ is None and e.get('type') == 'error':
                return False
            if body is not None:
                b = e.find(q(NS_CLIENT, 'body'))
                return b is not None and b.text == body
            return True
        return self.wait_for(pred, timeout, what='<message/> body=%r' % (body,))

    def wait_presence(self, from_=None, type_=None, timeout=None):
        def pred(e):
            if e.tag != q(NS_CLIENT, 'presence'):
                return False
            if from_ is not None and e.get('from') != from_:
                return False
            if type_ is not None and e.get('type') != type_:
                return False
            if type_ is None and e.get('type') not in (None, 'available'):
                return False
            return True
        return self.wait_for(pred, timeout, what='<presence/> from=%s type=%s' % (from_, type_))

    def roundtrip(self, timeout=None):
        """Pings the server and waits for the answer: proves the stream still works."""
        reply = self.iq('get', "<ping xmlns='%s'/>" % NS_PING, to=self.domain, timeout=timeout)
        assert reply.get('type') == 'result', 'ping failed: %s' % tostr(reply)
        return reply


def saslname(name):
    return name.replace('=', '=3D').replace(',', '=2C')


def cert_cb_hash(der):
    """Hash for tls-server-end-point: the certificate's signature hash, with MD5
    and SHA-1 upgraded to SHA-256 (RFC 5929 §4.1). Uses the openssl CLI."""
    out = subprocess.run(['openssl', 'x509', '-inform', 'DER', '-noout', '-text'], input=der,
                         capture_output=True, timeout=10).stdout.decode(errors='replace').lower()
    m = re.search(r'signature algorithm:\s*(\S+)', out)
    alg = m.group(1) if m else ''
    for h in ('sha512', 'sha384', 'sha256', 'sha224'):
        if h in alg:
            return h
    return 'sha256'


def connect_tls(server, *, direct_tls=False, timeout=DEFAULT_TIMEOUT):
    """A connection with TLS up and the post-TLS features read (SASL offered)."""
    settle = getattr(server, 'settle_users', None)
    if settle:
        settle()
    if direct_tls:
        conn = XMPPConn.connect(server.host, server.tls_port, domain=server.domain,
                                direct_tls=True, timeout=timeout)
        conn.open_stream()
    else:
        conn = XMPPConn.connect(server.host, server.port, domain=server.domain, timeout=timeout)
        conn.open_stream()
        conn.starttls()
    return conn


class _ProcSock:
    """Socket-like wrapper around an `openssl s_client` process (its stdin/stdout
    carry the decrypted stream). Used where Python's ssl module falls short."""

    def __init__(self, proc, pending=b''):
        self.proc = proc
        self.pending = pending
        self.timeout = DEFAULT_TIMEOUT

    def settimeout(self, t):
        self.timeout = t

    def recv(self, n):
        import select
        if self.pending:
            data, self.pending = self.pending[:n], self.pending[n:]
            return data
        r, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not r:
            raise socket.timeout()
        return os.read(self.proc.stdout.fileno(), n)

    def sendall(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close(self):
        with contextlib.suppress(Exception):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(Exception):
                f.close()


def openssl_direct_tls(server, tls13=True, timeout=DEFAULT_TIMEOUT):
    """Direct TLS through `openssl s_client` (ALPN xmpp-client, SNI = domain),
    which can print the RFC 9266 tls-exporter value that Python 3.11's ssl
    module cannot compute. Returns (XMPPConn, exporter bytes); the stream is
    not opened yet. s_client exports with no context, which on TLS 1.3 equals
    the empty context RFC 9266 asks for."""
    import select
    cmd = ['openssl', 's_client', '-connect', '%s:%d' % (server.host, server.tls_port),
           '-servername', server.domain, '-alpn', 'xmpp-client',
           '-keymatexport', 'EXPORTER-Channel-Binding', '-keymatexportlen', '32',
           '-ign_eof', '-nocommands']
    if tls13:
        cmd.append('-tls1_3')
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    out = b''
    deadline = time.monotonic() + timeout
    m = None
    while time.monotonic() < deadline:
        m = re.search(rb'Keying material: ([0-9A-Fa-f]{64})\s*\n---\n', out)
        if m:
            break
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    if not m:
        _ProcSock(proc).close()
        raise AssertionError('openssl s_client printed no keying material: %r' % out[-2000:])
    sock = _ProcSock(proc, out[m.end():])
    conn = XMPPConn(sock, server.host, server.tls_port, server.domain, timeout)
    conn.tls = True
    return conn, bytes.fromhex(m.group(1).decode())


def login(server, user, password, resource=None, *, direct_tls=False, mech='SCRAM-SHA-256',
          priority=None, presence=True, timeout=DEFAULT_TIMEOUT):
    """Connects, negotiates TLS, authenticates, restarts, binds.
    presence=True sends initial presence (with <priority/> if priority is given).
    Returns the XMPPConn (conn.jid = bound full JID)."""
    conn = connect_tls(server, direct_tls=direct_tls, timeout=timeout)
    try:
        assert mech in conn.mechanisms(), '%s not offered: %s' % (mech, conn.mechanisms())
        ok, cond = conn.authenticate(user, password, mech)
        assert ok, 'login %s with %s failed: %s' % (user, mech, cond)
        feats = conn.open_stream()
        assert feats.find(q(NS_BIND, 'bind')) is not None, 'no <bind/> after SASL: %s' % tostr(feats)
        reply = conn.bind(resource)
        assert reply.get('type') == 'result', 'bind failed: %s' % tostr(reply)
        if resource:
            assert conn.jid == '%s@%s/%s' % (user, server.domain, resource), conn.jid
        if presence:
            conn.presence(priority=priority)
    except BaseException:
        conn.abort()
        raise
    return conn


def message_bodies(conn, n, timeout=10.0):
    """Removes and returns the bodies of the next <n> messages, in order;
    fewer if <timeout> passes first."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = conn.maybe(lambda e: e.tag == q(NS_CLIENT, 'message'), 0.5)
        if m is not None:
            got.append(m.find(q(NS_CLIENT, 'body')).text)
    return got


def assert_no_message(conn, wait=1.5, body=None):
    """Asserts that no <message/> (with that body) arrives within <wait> seconds."""
    el = conn.maybe(lambda e: e.tag == q(NS_CLIENT, 'message') and e.get('type') != 'error' and (
        body is None or (e.find(q(NS_CLIENT, 'body')) is not None
                         and e.find(q(NS_CLIENT, 'body')).text == body)), wait)
    assert el is None, '%s received an unexpected message: %s' % (conn.jid, tostr(el))


def message_roundtrip(a, b, timeout=DEFAULT_TIMEOUT):
    """a → b and b → a chat messages to full JIDs; checks body and stamped from."""
    tok = uuid.uuid4().hex[:8]
    a.message(b.jid, 'ping-' + tok)
    m = b.wait_message('ping-' + tok, timeout)
    assert m.get('from') == a.jid, 'from=%r, expected %r' % (m.get('from'), a.jid)
    b.message(a.jid, 'pong-' + tok)
    m = a.wait_message('pong-' + tok, timeout)
    assert m.get('from') == b.jid, 'from=%r, expected %r' % (m.get('from'), b.jid)


# --------------------------------------------------------------------------
# slixmpp glue: a ClientXMPP wired to the test server (self-signed cert,
# explicit address, no DNS, SCRAM without channel binding).

def slix_client(server, user, password, resource, *, direct_tls=False, mech='SCRAM-SHA-256'):
    """Creates (does not connect) a slixmpp ClientXMPP. Call inside a running
    asyncio loop. Attributes added: .inbox (asyncio.Queue of messages),
    .session_started / .auth_failed (asyncio.Future), .start() to connect."""
    import slixmpp

    # slixmpp 1.8.3 fills the channel_binding credential with tls-unique even
    # on TLS 1.3 and would then pick a -PLUS mechanism with p=tls-unique (or
    # flag 'y' on plain SCRAM, which a server offering -PLUS must reject as a
    # downgrade). Supplying the credentials ourselves leaves channel binding
    # empty → gs2 flag 'n' with the non-PLUS mechanism chosen here.
    def creds(required, optional):
        return {'username': user, 'password': password}

    xmpp = slixmpp.ClientXMPP('%s@%s/%s' % (user, server.domain, resource), password,
                              sasl_mech=mech,
                              plugin_config={'feature_mechanisms': {'sasl_callback': creds}})
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    if direct_tls:
        xmpp.ssl_context.set_alpn_protocols(['xmpp-client'])
    xmpp.register_plugin('xep_0199')  # answers server pings
    xmpp.whitespace_keepalive = False
    loop = asyncio.get_running_loop()
    xmpp.inbox = asyncio.Queue()
    xmpp.session_started = loop.create_future()
    xmpp.auth_failed = loop.create_future()
    host, port = server.host, (server.tls_port if direct_tls else server.port)

    async def no_dns(domain, port_=None):
        return [(host, host, port)]
    xmpp.get_dns_records = no_dns

    def on_session_start(_event):
        if not xmpp.session_started.done():
            xmpp.session_started.set_result(True)

    def on_failed_auth(event=None):
        if not xmpp.auth_failed.done():
            xmpp.auth_failed.set_result(event)

    xmpp.add_event_handler('session_start', on_session_start)
    xmpp.add_event_handler('failed_auth', on_failed_auth)
    xmpp.add_event_handler('failed_all_auth', on_failed_auth)
    xmpp.add_event_handler('message', lambda msg: xmpp.inbox.put_nowait(msg))

    def start():
        xmpp.connect((host, port), use_ssl=direct_tls)
        # connect() leaves default_domain empty for an IP address; it is the
        # SNI / STARTTLS server_hostname (our get_dns_records ignores it).
        xmpp.default_domain = server.domain
    xmpp.start = start
    return xmpp


async def slix_login(server, user, password, resource, *, direct_tls=False, mech='SCRAM-SHA-256',
                     timeout=DEFAULT_TIMEOUT):
    """Connects a slixmpp client and waits for session_start."""
    settle = getattr(server, 'settle_users', None)
    if settle:
        settle()
    xmpp = slix_client(server, user, password, resource, direct_tls=direct_tls, mech=mech)
    xmpp.start()
    done, _ = await asyncio.wait([xmpp.session_started, xmpp.auth_failed], timeout=timeout,
                                 return_when=asyncio.FIRST_COMPLETED)
    if xmpp.session_started not in done:
        await slix_close(xmpp)
        raise AssertionError('slixmpp %s/%s did not log in (auth failed: %s)' % (
            user, resource, xmpp.auth_failed.done()))
    return xmpp


async def slix_close(xmpp, timeout=5.0):
    with contextlib.suppress(Exception):
        xmpp.cancel_connection_attempt()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(xmpp.disconnect(wait=1.0), timeout)
    with contextlib.suppress(Exception):
        xmpp.abort()
