"""SIGHUP reloads the certificate and key: new connections get the new one,
open ones keep theirs and stay up, a bad file keeps the old pair, and
tls-server-end-point follows the certificate each connection got."""

import hashlib
import shutil
import signal
import subprocess

import xmpp_raw as xr
from conftest import USERS, make_cert


def served_cert(server):
    c = xr.connect_tls(server, direct_tls=True)
    try:
        return c.sock.getpeercert(binary_form=True)
    finally:
        c.abort()


def fresh_cert(directory, curve):
    """An EC certificate (a different key type than the suite's RSA one)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / 'cert.pem', directory / 'key.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:%s' % curve, '-nodes', '-keyout', str(key), '-out',
                    str(cert), '-days', '30', '-subj', '/CN=localhost', '-addext',
                    'subjectAltName=DNS:localhost'], check=True, capture_output=True, timeout=60)
    return cert, key


def test_sighup_reloads_certificate(server_factory, tmp_path, conns):
    live = tmp_path / 'live'
    a_cert, a_key = make_cert(tmp_path / 'a')
    live.mkdir()
    shutil.copy(a_cert, live / 'cert.pem')
    shutil.copy(a_key, live / 'key.pem')
    srv = server_factory(cert=str(live / 'cert.pem'), key=str(live / 'key.pem'))
    for local, pw in USERS.items():
        srv.add_user(local, pw)
    srv.settle_users()
    before = served_cert(srv)
    old = xr.login(srv, 'alice', USERS['alice'], 'old')     # a session made with cert A
    conns.append(old)
    pending = xr.connect_tls(srv, direct_tls=True)          # TLS with cert A, SASL later
    conns.append(pending)

    b_cert, b_key = fresh_cert(tmp_path / 'b', 'prime256v1')
    shutil.copy(b_cert, live / 'cert.pem')
    shutil.copy(b_key, live / 'key.pem')
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log('SIGHUP: certificate reloaded')
    after = served_cert(srv)
    assert after != before
    assert after == subprocess.run(['openssl', 'x509', '-outform', 'DER', '-in', str(b_cert)],
                                   capture_output=True, check=True).stdout
    # the open connection was not dropped
    assert old.iq('get', "<ping xmlns='urn:xmpp:ping'/>", to=srv.domain).get('type') == 'result'

    # SCRAM-PLUS with tls-server-end-point binds to the certificate this
    # connection got (the new one): the hash must match it
    c = xr.connect_tls(srv, direct_tls=True)
    conns.append(c)
    ok, cond = c.auth_scram('bob', USERS['bob'], cb_type='tls-server-end-point')
    assert ok, cond
    # ...and a connection that did TLS before the reload binds to cert A's
    ok, cond = pending.auth_scram('carol', USERS['carol'], cb_type='tls-server-end-point')
    assert ok, cond

    # a broken file keeps the current pair, and says why
    (live / 'cert.pem').write_text('not a certificate\n')
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log('keeping the current certificate')
    assert served_cert(srv) == after
