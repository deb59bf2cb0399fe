"""sasl2_client.py - SASL2 (XEP-0388), Bind2 (XEP-0386), FAST (XEP-0484) and
Instant Stream Resumption (XEP-0397) helpers for tether's integration tests.

Built on xmpp_raw.py and sm_client.py (imported, never edited here).
Everything is bounded by timeouts and talks to loopback only.

  ht_initiator(user, token, cb) / ht_responder(token, cb)
                       HT-SHA-256-* (draft-schmaus-kitten-sasl-ht-09, sasl.md §7):
                       initiator = authcid NUL HMAC-SHA256(token, "Initiator"||cb),
                       responder = HMAC-SHA256(token, "Responder"||cb); the HMAC key
                       is the token string's UTF-8 bytes (never base64-decoded)
  Sasl2Conn            SMConn + SASL2: sasl2_scram(), sasl2_plain(), sasl2_ht(),
                       pipelined_login(); SM counting starts the moment a
                       <success/> with <enabled/>/<resumed/> is parsed (queued
                       stanzas arrive in the same read as the <success/>)
  FlightSocket         a TCP socket with TLS done through ssl.MemoryBIO +
                       SSLObject, counting client->server flights (see below)
  open_conn(server, direct_tls=True, flights=False)
                       a connected Sasl2Conn with TLS up, stream not opened
  sasl2_login(server, user, pw, ...)
                       TLS + header + SASL2 SCRAM-SHA-256 (+ Bind2/enable/
                       request-token/resume inline) -> (conn, <success/>)

Flight counting (FlightSocket), same definition as tether-bench (bench/net.c):
  * the TCP connect is flight 1 (the SYN); its completion (SYN-ACK) counts as
    "the server sent something", so the first client write starts flight 2;
  * after that, a client write starts a new flight iff server bytes were
    received since the previous client write; consecutive writes with no
    server bytes in between belong to the same flight.
  TLS is driven through memory BIOs, so every ciphertext byte the client
  writes (ClientHello, Finished, application records) goes through one place
  and every server byte is seen when it arrives. After the handshake the
  client's TLS 1.3 Finished stays in the outgoing BIO and leaves together
  with the first application write (as any pipelining client would send it).
  handshake_flights = flights that began between the TCP connect and the end
  of the client handshake (TLS 1.3 full handshake: 1, the ClientHello; TLS
  1.2: 2), so "one flight after the handshake" means
  flights == 1 + handshake_flights + 1.
"""

import base64
import contextlib
import hashlib
import hmac
import os
import re
import select
import socket
import ssl
import time
import uuid
from xml.sax.saxutils import escape, quoteattr

import xmpp_raw as xr
from sm_client import NS_SM, SMConn, kill  # noqa: F401  (kill re-exported)
from xmpp_raw import NS_SASL, NS_STREAM, q, tostr

NS_SASL2 = 'urn:xmpp:sasl:2'
NS_BIND2 = 'urn:xmpp:bind:0'
NS_FAST = 'urn:xmpp:fast:0'
NS_ISR = 'https://xmpp.org/extensions/isr/0'

HT_MECHS = ('HT-SHA-256-EXPR', 'HT-SHA-256-ENDP', 'HT-SHA-256-UNIQ', 'HT-SHA-256-NONE')
TOKEN_RE = re.compile(r'^[A-Za-z0-9_-]{43}$')        # 256 bits, base64url, unpadded
EXPIRY_RE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$')


def new_ua_id():
    return str(uuid.uuid4())


# ------------------------------------------------------------------ HT-*

def ht_initiator(user, token, cb=b''):
    """HT-SHA-256 initiator message (bytes): authcid NUL HMAC(token, "Initiator"||cb)."""
    mac = hmac.new(token.encode('utf-8'), b'Initiator' + cb, hashlib.sha256).digest()
    return user.encode('utf-8') + b'\0' + mac


def ht_responder(token, cb=b''):
    return hmac.new(token.encode('utf-8'), b'Responder' + cb, hashlib.sha256).digest()


# ------------------------------------------------------------------ flight counting

class FlightSocket:
    """Socket-like object for XMPPConn: plain TCP first, TLS (start_tls) through
    ssl.MemoryBIO + SSLObject. Counts client flights (module docstring) and keeps
    a log of (time, 'C'|'S', bytes, flight) for every write and read."""

    def __init__(self, host, port, timeout=xr.DEFAULT_TIMEOUT):
        self.timeout = timeout
        self.raw = socket.create_connection((host, port), timeout=timeout)
        self.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.flights = 1            # the SYN
        self.rx_since_tx = True     # the SYN-ACK: the next write starts a new flight
        self.log = [(time.monotonic(), 'connect', 0, 1)]
        self.obj = None
        self.inb = self.outb = None
        self.handshake_flights = None
        self.eof = False

    # -------------------------------------------------------- raw I/O
    def _raw_write(self, data):
        if not data:
            return
        if self.rx_since_tx:
            self.flights += 1
            self.rx_since_tx = False
        self.log.append((time.monotonic(), 'C', len(data), self.flights))
        self.raw.sendall(data)

    def _raw_read(self, timeout):
        """One read from the TCP socket. Returns the bytes, b'' at EOF; raises
        socket.timeout if nothing came within <timeout>."""
        r, _, _ = select.select([self.raw], [], [], max(0.0, timeout))
        if not r:
            raise socket.timeout()
        try:
            data = self.raw.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError):
            data = b''
        if data:
            self.rx_since_tx = True
            self.log.append((time.monotonic(), 'S', len(data), self.flights))
        else:
            self.eof = True
        return data

    def _flush(self):
        if self.outb is not None and self.outb.pending:
            self._raw_write(self.outb.read())

    # -------------------------------------------------------- TLS
    def start_tls(self, ctx, server_hostname):
        """Runs the client handshake. The client's last handshake flight
        (TLS 1.3 Finished) stays buffered until the first application write."""
        self.inb, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inb, self.outb, server_hostname=server_hostname)
        deadline = time.monotonic() + self.timeout
        start = self.flights
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self._raw_read(deadline - time.monotonic())
                if not data:
                    raise ConnectionError('EOF during the TLS handshake')
                self.inb.write(data)
        self.handshake_flights = self.flights - start
        self.flights_at_handshake = self.flights

    # -------------------------------------------------------- socket API used by XMPPConn
    def settimeout(self, t):
        self.timeout = t

    def sendall(self, data):
        if self.obj is None:
            self._raw_write(bytes(data))
            return
        view = memoryview(bytes(data))
        while view:
            n = self.obj.write(view)
            view = view[n:]
        self._flush()

    send = sendall

    def recv(self, n):
        deadline = time.monotonic() + (self.timeout if self.timeout is not None else 3600)
        if self.obj is None:
            if self.eof:
                return b''
            return self._raw_read(deadline - time.monotonic())
        self._flush()
        while True:
            try:
                data = self.obj.read(n)
                self._flush()   # e.g. a KeyUpdate answer; counted honestly
                return data
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b''
            self._flush()
            if self.eof:
                return b''
            data = self._raw_read(deadline - time.monotonic())
            if not data:
                self.inb.write_eof()
                continue
            self.inb.write(data)

    def getpeercert(self, binary_form=False):
        return self.obj.getpeercert(binary_form)

    def version(self):
        return self.obj.version() if self.obj else None

    def setsockopt(self, *a):
        self.raw.setsockopt(*a)

    def fileno(self):
        return self.raw.fileno()

    def close(self):
        with contextlib.suppress(OSError):
            self.raw.close()

    # -------------------------------------------------------- reporting
    def client_writes(self):
        return [e for e in self.log if e[1] == 'C']

    def server_reads_after(self, t):
        return [e for e in self.log if e[1] == 'S' and e[0] >= t]


# ------------------------------------------------------------------ the connection

class Sasl2Conn(SMConn):
    """SMConn that speaks SASL2. Attributes set from what the server sent:
    fast_token / fast_expiry (last <token/>), isr_token (last isr-enabled or
    inst-resumed token), sm_id, jid, success (last <success/>)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.fast_token = None
        self.fast_expiry = None
        self.isr_token = None
        self.isr_location = None
        self.success = None
        self._resume_h = None

    # SM counting must switch on while the <success/> is parsed: stanzas queued
    # for a resumed session come in the same read.
    def _on_element(self, el):
        if el.tag == q(NS_SASL2, 'success'):
            self._absorb_success(el)
        super()._on_element(el)

    def _absorb_success(self, el):
        aid = el.findtext(q(NS_SASL2, 'authorization-identifier'))
        if aid and '/' in aid:
            self.jid = aid.strip()
        tok = el.find(q(NS_FAST, 'token'))
        if tok is not None:
            self.fast_token, self.fast_expiry = tok.get('token'), tok.get('expiry')
        resumed = el.find(q(NS_SM, 'resumed'))
        ir = el.find(q(NS_ISR, 'inst-resumed'))
        if ir is not None:
            self.isr_token = ir.get('token')
            resumed = ir.find(q(NS_SM, 'resumed'))
        if resumed is not None:
            self.counting = True
            self.h = self._resume_h or 0
            self.out = int(resumed.get('h'))
            self.sm_id = resumed.get('previd')
        enabled = el.find('%s/%s' % (q(NS_BIND2, 'bound'), q(NS_SM, 'enabled')))
        if enabled is not None:
            self._absorb_enabled(enabled)

    def _absorb_enabled(self, enabled):
        self.counting = True
        self.h = 0
        self.out = 0
        self.enabled_el = enabled
        self.sm_id = enabled.get('id')
        ie = enabled.find(q(NS_ISR, 'isr-enabled'))
        if ie is not None:
            self.isr_token = ie.get('token')
            self.isr_location = ie.get('location')

    def _wrap_tls(self, alpn=('xmpp-client',), sni=None):
        if isinstance(self.sock, FlightSocket):
            self.sock.start_tls(self.client_context(alpn), sni or self.domain)
            self.tls = True
        else:
            super()._wrap_tls(alpn=alpn, sni=sni)

    # ---------------------------------------------------------------- features
    def authentication(self):
        f = self.features
        return None if f is None else f.find(q(NS_SASL2, 'authentication'))

    def sasl2_mechanisms(self):
        a = self.authentication()
        return [] if a is None else [(m.text or '').strip() for m in a.findall(q(NS_SASL2, 'mechanism'))]

    def fast_mechanisms(self):
        a = self.authentication()
        fast = None if a is None else a.find('%s/%s' % (q(NS_SASL2, 'inline'), q(NS_FAST, 'fast')))
        return [] if fast is None else [(m.text or '').strip() for m in fast.findall(q(NS_FAST, 'mechanism'))]

    def isr_mechanisms(self):
        f = self.features
        isr = None if f is None else f.find(q(NS_ISR, 'isr'))
        if isr is None:
            return []
        return [(m.text or '').strip() for m in isr.findall('%s/%s' % (q(NS_SASL, 'mechanisms'),
                                                                        q(NS_SASL, 'mechanism')))]

    # ---------------------------------------------------------------- pieces
    @staticmethod
    def authenticate_xml(mech, initial=None, ua_id=None, inline=''):
        """<authenticate/>; <initial> bytes (None = no initial response)."""
        parts = []
        if initial is not None:
            parts.append('<initial-response>%s</initial-response>' % xr.b64(initial))
        if ua_id is not None:
            parts.append("<user-agent id=%s><software>tether-tests</software>"
                         "<device>pytest</device></user-agent>" % quoteattr(ua_id))
        parts.append(inline)
        return "<authenticate xmlns='%s' mechanism=%s>%s</authenticate>" % (
            NS_SASL2, quoteattr(mech), ''.join(parts))

    def sasl2_reply(self, timeout=None):
        """Next SASL2 challenge/success/failure (or a stream error)."""
        return self.wait_for(lambda e: (xr.nsof(e.tag) == NS_SASL2 and xr.local(e.tag) in (
            'challenge', 'success', 'failure', 'continue')) or e.tag == q(NS_STREAM, 'error'),
            timeout, what='SASL2 reply')

    def cb_data(self, mech, exporter=None):
        """Channel-binding data for an HT mechanism on this connection."""
        if mech.endswith('-NONE'):
            return b''
        if mech.endswith('-ENDP'):
            return self.tls_server_end_point()
        if mech.endswith('-EXPR'):
            assert exporter is not None, 'tls-exporter value needed (openssl_direct_tls)'
            return exporter
        raise ValueError('no channel binding data for %s here' % mech)

    # ---------------------------------------------------------------- mechanisms
    def sasl2_plain(self, user, password, ua_id=None, inline='', timeout=None):
        """Returns the <success/> or <failure/> element (or a stream error)."""
        msg = ('\0%s\0%s' % (user, password)).encode('utf-8')
        self.send(self.authenticate_xml('PLAIN', msg, ua_id, inline))
        return self.sasl2_reply(timeout)

    def sasl2_scram(self, user, password, ua_id=None, inline='', hashname='sha256',
                    cb_type=None, cb_data=None, resume_h=None, timeout=None):
        """SCRAM-SHA-1/256(-PLUS) over SASL2. Returns the final <success/> or
        <failure/> (or a stream error element); on success the server
        signature in <additional-data/> is verified."""
        hname = {'sha1': 'SHA-1', 'sha256': 'SHA-256'}[hashname]
        mech = 'SCRAM-%s%s' % (hname, '-PLUS' if cb_type else '')
        if cb_type == 'tls-server-end-point' and cb_data is None:
            cb_data = self.tls_server_end_point()
        gs2 = 'p=%s,,' % cb_type if cb_type else 'n,,'
        cnonce = base64.b64encode(os.urandom(18)).decode()
        cfmb = 'n=%s,r=%s' % (xr.saslname(user), cnonce)
        self._resume_h = resume_h
        self.send(self.authenticate_xml(mech, (gs2 + cfmb).encode(), ua_id, inline))
        el = self.sasl2_reply(timeout)
        if el.tag != q(NS_SASL2, 'challenge'):
            return el
        sfm = base64.b64decode(el.text or '').decode('utf-8')
        attrs = dict(kv.split('=', 1) for kv in sfm.split(','))
        assert attrs['r'].startswith(cnonce) and len(attrs['r']) > len(cnonce), sfm
        salted = hashlib.pbkdf2_hmac(hashname, password.encode('utf-8'),
                                     base64.b64decode(attrs['s']), int(attrs['i']))
        client_key = hmac.new(salted, b'Client Key', hashname).digest()
        stored_key = hashlib.new(hashname, client_key).digest()
        cbind = gs2.encode() + (cb_data if cb_type else b'')
        cfwop = 'c=%s,r=%s' % (xr.b64(cbind), attrs['r'])
        auth_msg = ('%s,%s,%s' % (cfmb, sfm, cfwop)).encode('utf-8')
        proof = bytes(a ^ b for a, b in zip(client_key, hmac.new(stored_key, auth_msg, hashname).digest()))
        server_sig = hmac.new(hmac.new(salted, b'Server Key', hashname).digest(), auth_msg,
                              hashname).digest()
        self.send("<response xmlns='%s'>%s</response>" % (NS_SASL2, xr.b64('%s,p=%s' % (cfwop, xr.b64(proof)))))
        el = self.sasl2_reply(timeout)
        if el.tag == q(NS_SASL2, 'success'):
            ad = el.findtext(q(NS_SASL2, 'additional-data'))
            assert ad is not None, 'SCRAM <success/> without <additional-data/>: %s' % tostr(el)
            final = base64.b64decode(ad.strip()).decode()
            assert final == 'v=' + xr.b64(server_sig), 'bad SCRAM server signature: %r' % final
        return el

    def sasl2_ht(self, user, token, mech='HT-SHA-256-NONE', ua_id=None, inline='', fast=True,
                 exporter=None, cb=None, resume_h=None, check_responder=True, timeout=None):
        """HT-* with <token>. fast=True adds <fast xmlns='urn:xmpp:fast:0'/> (a
        string adds it verbatim). Returns <success/>/<failure/>; on success the
        responder message in <additional-data/> is verified."""
        cb = self.cb_data(mech, exporter) if cb is None else cb
        if fast is True:
            inline = "<fast xmlns='%s'/>" % NS_FAST + inline
        elif fast:
            inline = fast + inline
        self._resume_h = resume_h
        self.send(self.authenticate_xml(mech, ht_initiator(user, token, cb), ua_id, inline))
        el = self.sasl2_reply(timeout)
        if el.tag == q(NS_SASL2, 'success') and check_responder:
            check_ht_success(el, token, cb)
        return el

    # ---------------------------------------------------------------- pipelining
    def pipelined(self, auth_xml, from_=None, resume_h=None):
        """Stream header and <authenticate/> in ONE write (no wait for features)."""
        self._new_parser()
        self.header = None
        self.features = None
        self._resume_h = resume_h
        self.send(self.stream_header(from_=from_) + auth_xml)

    def read_idle(self, idle=0.5, limit=10.0):
        """Reads until nothing arrived for <idle> s (or <limit> s in total)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not self.eof:
            before = len(self.raw)
            self.pump(idle)
            if len(self.raw) == before:
                break

    def enable_isr(self, mech, resume=True, timeout=None):
        """RFC 6120-flow <enable/> with <isr-enable mechanism/> inside."""
        self.counting = True
        self.h = 0
        self.send("<enable xmlns='%s'%s>%s</enable>" % (
            NS_SM, " resume='true'" if resume else '', isr_enable_xml(mech)))
        el = self.wait_sm(('enabled', 'failed'), timeout)
        if xr.local(el.tag) == 'enabled':
            self._absorb_enabled(el)
        return el


# ------------------------------------------------------------------ XML pieces

def bind2_xml(tag=None, enable=False, isr_mech=None, max_=None):
    inner = '<tag>%s</tag>' % escape(tag) if tag else ''
    if enable:
        inner += "<enable xmlns='%s' resume='true'%s>%s</enable>" % (
            NS_SM, " max='%s'" % max_ if max_ else '', isr_enable_xml(isr_mech) if isr_mech else '')
    return "<bind xmlns='%s'>%s</bind>" % (NS_BIND2, inner)


def isr_enable_xml(mech):
    return "<isr-enable xmlns='%s' mechanism='%s'/>" % (NS_ISR, mech)


def request_token_xml(mech):
    return "<request-token xmlns='%s' mechanism='%s'/>" % (NS_FAST, mech)


def resume_xml(previd, h):
    return "<resume xmlns='%s' previd=%s h='%d'/>" % (NS_SM, quoteattr(previd), h)


def inst_resume_xml(previd, h, with_isr_token=None):
    attr = '' if with_isr_token is None else " with-isr-token='%s'" % ('true' if with_isr_token else 'false')
    return "<inst-resume xmlns='%s'%s>%s</inst-resume>" % (NS_ISR, attr, resume_xml(previd, h))


# ------------------------------------------------------------------ checks

def failure_condition(el):
    """Condition of a SASL2 <failure/> (or 'stream-error:X')."""
    if el.tag == q(NS_STREAM, 'error'):
        return 'stream-error:%s' % xr.stream_error_condition(el)
    assert el.tag == q(NS_SASL2, 'failure'), 'expected SASL2 <failure/>, got %s' % tostr(el)
    conds = [xr.local(c.tag) for c in el if xr.nsof(c.tag) == NS_SASL]
    assert len(conds) == 1, 'SASL2 <failure/> needs exactly one condition: %s' % tostr(el)
    return conds[0]


def assert_success(el):
    assert el.tag == q(NS_SASL2, 'success'), 'expected SASL2 <success/>, got %s' % tostr(el)
    return el


def check_ht_success(el, token, cb=b''):
    assert_success(el)
    ad = el.findtext(q(NS_SASL2, 'additional-data'))
    assert ad is not None, 'HT <success/> without <additional-data/>: %s' % tostr(el)
    got = base64.b64decode(ad.strip())
    assert hmac.compare_digest(got, ht_responder(token, cb)), (
        'HT responder message wrong: %s' % got.hex())


def success_parts(el):
    """Dict of the interesting children of a SASL2 <success/>."""
    return {
        'aid': (el.findtext(q(NS_SASL2, 'authorization-identifier')) or '').strip(),
        'resumed': el.find(q(NS_SM, 'resumed')),
        'failed': el.find(q(NS_SM, 'failed')),
        'bound': el.find(q(NS_BIND2, 'bound')),
        'enabled': el.find('%s/%s' % (q(NS_BIND2, 'bound'), q(NS_SM, 'enabled'))),
        'token': el.find(q(NS_FAST, 'token')),
        'inst_resumed': el.find(q(NS_ISR, 'inst-resumed')),
        'inst_resume_failed': el.find(q(NS_ISR, 'inst-resume-failed')),
    }


# ------------------------------------------------------------------ connecting

def open_conn(server, direct_tls=True, flights=False, timeout=xr.DEFAULT_TIMEOUT):
    """A Sasl2Conn with TLS up. Direct TLS: the stream is not opened yet (the
    caller may pipeline header + <authenticate/>). STARTTLS: header, <starttls/>,
    TLS, new header done, post-TLS features read (conn.features).
    flights=True uses a FlightSocket (conn.sock.flights)."""
    settle = getattr(server, 'settle_users', None)
    if settle:
        settle()
    port = server.tls_port if direct_tls else server.port
    if flights:
        sock = FlightSocket(server.host, port, timeout)
    else:
        sock = socket.create_connection((server.host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Sasl2Conn(sock, server.host, port, server.domain, timeout)
    try:
        if direct_tls:
            conn._wrap_tls()
        else:
            conn.open_stream()
            conn.starttls()
    except BaseException:
        conn.abort()
        raise
    return conn


def sasl2_login(server, user, password, *, ua_id=None, tag='tests', enable=True, isr_mech=None,
                request_token=None, inline='', direct_tls=True, mech='SCRAM-SHA-256',
                timeout=xr.DEFAULT_TIMEOUT):
    """Logs in with SASL2 (+ Bind2 + SM enable inline unless enable is None).
    Returns (conn, <success/>). ua_id None → a fresh UUID (conn.ua_id)."""
    conn = open_conn(server, direct_tls=direct_tls, timeout=timeout)
    conn.ua_id = ua_id or new_ua_id()
    try:
        if direct_tls:
            conn.open_stream(from_=server.jid(user))
        extra = inline
        if enable is not None:
            extra += bind2_xml(tag, enable=enable, isr_mech=isr_mech)
        if request_token:
            extra += request_token_xml(request_token)
        if mech == 'PLAIN':
            el = conn.sasl2_plain(user, password, conn.ua_id, extra)
        else:
            el = conn.sasl2_scram(user, password, conn.ua_id, extra,
                                  hashname='sha1' if 'SHA-1' in mech else 'sha256')
        assert_success(el)
        conn.success = el
    except BaseException:
        conn.abort()
        raise
    return conn, el


def isr_race(servers, user, token, sm_id, mech='HT-SHA-256-ENDP'):
    """One ISR token presented at once on one connection to each of
    <servers> (a server may repeat): the <authenticate/>s are written back
    to back, the replies read afterwards. Returns the replies in order."""
    conns = []
    try:
        for srv in servers:
            c = open_conn(srv)
            c.open_stream(from_=srv.jid(user))
            conns.append(c)
        auths = [c.authenticate_xml(mech, ht_initiator(user, token, c.cb_data(mech)), None,
                                    inst_resume_xml(sm_id, 0)) for c in conns]
        for c, auth in zip(conns, auths):
            c.send(auth)
        return [c.sasl2_reply() for c in conns]
    finally:
        for c in conns:
            c.close()
