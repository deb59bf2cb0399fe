"""sm_client.py - XEP-0198 Stream Management helpers for tether's integration tests.

Built on xmpp_raw.py (imported, never edited here). Everything is bounded by
timeouts and talks to loopback only.

  sm_overrides(max_resume=2, ...)      start_server/server_factory overrides for [sm]
  SMConn                               XMPPConn that counts stanzas both ways (h / out),
                                       keeps every received top-level element in order
                                       (conn.received) and can answer <r/> by itself
  sm_login(server, user, pw, ...)      TLS + SASL + bind + <enable/> → SMConn
  sm_authed(server, user, pw)          TLS + SASL + restart, not bound → SMConn
  sm_resume(server, user, pw, previd, h)
                                       new connection, SASL, <resume/> → (SMConn, reply)
  kill(conn)                           abrupt TCP close (SO_LINGER 0 → RST), no </stream:stream>
"""

import collections
import contextlib
import re
import socket
import struct
import time

import xmpp_raw as xr
from xmpp_raw import NS_CLIENT, NS_STANZAS, NS_STREAM, q, tostr

NS_SM = 'urn:xmpp:sm:3'
NS_DELAY = 'urn:xmpp:delay'
STANZAS = frozenset(q(NS_CLIENT, n) for n in ('message', 'presence', 'iq'))
SM_ID_RE = re.compile(r'^[A-Za-z0-9_-]{22}$')          # 128 bits, base64url, unpadded
STAMP_RE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$')


def sm_overrides(**sm):
    """{'max_resume': 2} → {'sm.max_resume': 2} (conftest's 'section.key' overrides)."""
    return {'sm.%s' % k: v for k, v in sm.items()}


def is_stanza(el):
    return el.tag in STANZAS


def is_sm(el, name=None):
    return xr.nsof(el.tag) == NS_SM and (name is None or xr.local(el.tag) == name)


def body_of(el):
    b = el.find(q(NS_CLIENT, 'body'))
    return None if b is None else b.text


def sm_condition(el):
    """Stanza error condition inside an SM <failed/>."""
    for child in el:
        if xr.nsof(child.tag) == NS_STANZAS and xr.local(child.tag) != 'text':
            return xr.local(child.tag)
    return None


class _Inbox(collections.deque):
    """XMPPConn's inbox; append() sees every top-level element as it is parsed
    (appendleft() is XMPPConn re-queuing an element it already popped)."""

    def __init__(self, owner):
        super().__init__()
        self.owner = owner

    def append(self, el):
        super().append(el)
        self.owner._on_element(el)


class SMConn(xr.XMPPConn):
    """Raw connection with XEP-0198 bookkeeping.

    h          stanzas received (counting starts at enable()/resume())
    out        stanzas sent through send_stanza() (or counted by count_out())
    received   every top-level element, in arrival order, as (h after it, element)
    auto_ack   answer each <r/> at once with <a h/> (off by default)"""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.inbox = _Inbox(self)
        self.counting = False
        self.h = 0
        self.out = 0
        self.received = []
        self.auto_ack = False
        self.acks_sent = []
        self.sm_id = None
        self.enabled_el = None

    @classmethod
    def from_conn(cls, conn):
        """Adopts a connected XMPPConn (socket, parser state, inbox contents)."""
        new = cls(conn.sock, conn.host, conn.port, conn.domain, conn.timeout)
        for attr in ('tls', 'raw', 'header', 'features', 'stream_ended', 'eof', 'jid',
                     'parser', 'depth'):
            setattr(new, attr, getattr(conn, attr))
        for el in conn.inbox:
            collections.deque.append(new.inbox, el)
        conn.sock = None        # now owned by <new>
        return new

    # ---------------------------------------------------------------- counting
    def _on_element(self, el):
        if self.counting and is_stanza(el):
            self.h = (self.h + 1) & 0xFFFFFFFF
        self.received.append((self.h, el))
        if self.auto_ack and is_sm(el, 'r') and not self.eof:
            with contextlib.suppress(OSError, ValueError):
                self.ack()

    def ack(self, h=None):
        h = self.h if h is None else h
        self.acks_sent.append(h)
        self.send("<a xmlns='%s' h='%d'/>" % (NS_SM, h))

    def request(self):
        self.send("<r xmlns='%s'/>" % NS_SM)

    def send_stanza(self, data):
        self.send(data)
        self.count_out()

    def count_out(self, n=1):
        if self.counting:
            self.out = (self.out + n) & 0xFFFFFFFF

    # stanza helpers of XMPPConn, counted
    def message(self, *a, **kw):
        super().message(*a, **kw)
        self.count_out()

    def presence(self, *a, **kw):
        super().presence(*a, **kw)
        self.count_out()

    def iq(self, type_, payload, to=None, timeout=None, id_=None):
        rid = id_ or xr.new_id('iq')
        to_attr = ' to=%s' % xr.quoteattr(to) if to is not None else ''
        self.send_stanza("<iq type='%s' id='%s'%s>%s</iq>" % (type_, rid, to_attr, payload))
        return self.wait_for(lambda e: e.tag == q(NS_CLIENT, 'iq') and e.get('id') == rid
                             and e.get('type') in ('result', 'error'), timeout,
                             what='iq reply id=%s' % rid)

    def ping(self, id_=None):
        """Sends a ping iq to the server without waiting. Returns its id."""
        rid = id_ or xr.new_id('ping')
        self.send_stanza("<iq type='get' id='%s' to=%s><ping xmlns='%s'/></iq>"
                         % (rid, xr.quoteattr(self.domain), xr.NS_PING))
        return rid

    # ---------------------------------------------------------------- SM
    def enable(self, resume=True, max_=None, resume_attr=None, timeout=None):
        """Sends <enable/> (counting starts) and returns the reply (<enabled/> or <failed/>)."""
        attrs = ''
        if resume_attr is not None:
            attrs += " resume='%s'" % resume_attr
        elif resume:
            attrs += " resume='true'"
        if max_ is not None:
            attrs += " max='%s'" % max_
        self.counting = True
        self.h = 0
        self.send("<enable xmlns='%s'%s/>" % (NS_SM, attrs))
        el = self.wait_sm(('enabled', 'failed'), timeout)
        if xr.local(el.tag) == 'enabled':
            self.out = 0
            self.enabled_el = el
            self.sm_id = el.get('id')
        return el

    def wait_sm(self, names, timeout=None):
        if isinstance(names, str):
            names = (names,)
        return self.wait_for(lambda e: is_sm(e) and xr.local(e.tag) in names, timeout,
                             what='sm %s' % '/'.join(names))

    def wait_a(self, timeout=None):
        el = self.wait_sm('a', timeout)
        return int(el.get('h'))

    def resume(self, previd, h, timeout=None):
        """Sends <resume/>; returns <resumed/> or <failed/>. On success counting
        continues from <h> (the client's count) and out from the server's h."""
        self.counting = True
        self.h = h
        self.send("<resume xmlns='%s' previd=%s h='%d'/>" % (NS_SM, xr.quoteattr(previd), h))
        el = self.wait_sm(('resumed', 'failed'), timeout)
        if xr.local(el.tag) == 'resumed':
            self.sm_id = previd
            self.out = int(el.get('h'))
        else:
            self.counting = False
            self.h = 0
        return el

    def messages(self, prefix=None):
        """Bodies of the non-error messages received so far (in order), optionally
        only those starting with <prefix>."""
        out = []
        for _, el in self.received:
            if el.tag == q(NS_CLIENT, 'message') and el.get('type') != 'error':
                b = body_of(el)
                if b is not None and (prefix is None or b.startswith(prefix)):
                    out.append(b)
        return out

    def message_els(self, prefix):
        return [el for _, el in self.received
                if el.tag == q(NS_CLIENT, 'message') and el.get('type') != 'error'
                and (body_of(el) or '').startswith(prefix)]

    def h_at_body(self, body):
        """Our h right after the message with this body was received."""
        for h, el in self.received:
            if el.tag == q(NS_CLIENT, 'message') and body_of(el) == body:
                return h
        raise AssertionError('message %r not received' % body)

    def pump_until(self, pred, timeout, what='condition'):
        """Reads until pred() is true (elements stay in the inbox / received)."""
        deadline = time.monotonic() + timeout
        while not pred():
            if self.eof or self.stream_ended:
                raise xr.StreamClosed('stream closed while waiting for %s; tail %r'
                                      % (what, self.raw[-600:]))
            if time.monotonic() > deadline:
                raise xr.XMPPTimeout('timeout (%.1fs) waiting for %s' % (timeout, what))
            self.pump(min(0.2, max(0.01, deadline - time.monotonic())))

    def wait_bodies(self, prefix, n, timeout=10.0):
        self.pump_until(lambda: len(self.messages(prefix)) >= n, timeout,
                        '%d messages %s*' % (n, prefix))
        return self.messages(prefix)

    def stream_errors(self):
        return [el for _, el in self.received if el.tag == q(NS_STREAM, 'error')]


def kill(conn):
    """Drops the TCP connection abruptly: no </stream:stream>, no TLS close_notify,
    SO_LINGER 0 so close() sends RST."""
    sock = conn.sock
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    raw = sock
    if hasattr(sock, 'detach') and hasattr(sock, 'unwrap'):
        # SSLSocket: close the file descriptor underneath, no TLS alert
        with contextlib.suppress(OSError, ValueError):
            fd = sock.detach()
            raw = socket.socket(fileno=fd)
    with contextlib.suppress(OSError):
        raw.close()
    conn.sock = None
    conn.eof = True


def sm_authed(server, user, password, *, direct_tls=False, timeout=xr.DEFAULT_TIMEOUT):
    """TLS + SASL (SCRAM-SHA-256) + stream restart; not bound. Returns SMConn
    (conn.features = post-SASL features)."""
    base = xr.connect_tls(server, direct_tls=direct_tls, timeout=timeout)
    conn = SMConn.from_conn(base)
    try:
        ok, cond = conn.authenticate(user, password, 'SCRAM-SHA-256')
        assert ok, 'login %s failed: %s' % (user, cond)
        conn.open_stream()
    except BaseException:
        conn.abort()
        raise
    return conn


def sm_features(conn):
    """(bind offered, sm offered) in the current features."""
    f = conn.features
    return (f.find(q(xr.NS_BIND, 'bind')) is not None, f.find(q(NS_SM, 'sm')) is not None)


def sm_login(server, user, password, resource=None, *, enable=True, resume=True, max_=None,
             presence=False, auto_ack=False, direct_tls=False, timeout=xr.DEFAULT_TIMEOUT):
    """Logs in, binds, enables SM (resume by default). presence=True sends initial
    presence after <enable/> and waits for its echo (counted). Returns SMConn."""
    conn = sm_authed(server, user, password, direct_tls=direct_tls, timeout=timeout)
    try:
        bind_ok, sm_ok = sm_features(conn)
        assert bind_ok and sm_ok, 'post-SASL features lack bind/sm: %s' % tostr(conn.features)
        reply = conn.bind(resource)
        assert reply.get('type') == 'result', 'bind failed: %s' % tostr(reply)
        conn.auto_ack = auto_ack
        if enable:
            el = conn.enable(resume=resume, max_=max_)
            assert xr.local(el.tag) == 'enabled', 'enable failed: %s' % tostr(el)
        if presence:
            conn.presence()
            conn.wait_for(lambda e: e.tag == q(NS_CLIENT, 'presence') and e.get('from') == conn.jid,
                          what='own presence echo')
    except BaseException:
        conn.abort()
        raise
    return conn


def sm_resume(server, user, password, previd, h, *, auto_ack=False, timeout=xr.DEFAULT_TIMEOUT):
    """New connection as <user>, SASL, restart, <resume previd h/>.
    Returns (SMConn, <resumed/> or <failed/>)."""
    conn = sm_authed(server, user, password, timeout=timeout)
    conn.auto_ack = auto_ack
    try:
        el = conn.resume(previd, h)
    except BaseException:
        conn.abort()
        raise
    return conn, el


def numbered(prefix, i):
    return '%s%04d' % (prefix, i)


def delay_of(el):
    return el.find(q(NS_DELAY, 'delay'))
