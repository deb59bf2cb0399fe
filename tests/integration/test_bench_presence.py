"""test_bench_presence.py - tether-bench's presence mode against a tetherd started here.

Users bench0..bench{N-1} get ring rosters (each the K users around it,
subscription both) written as the memory store's roster files, as
bench/compare provisions tetherd. A short bounded run must log every user
in, show each one all its contacts available, deliver every presence
update to every active contact once, and, with --csi, let the inactive
observers receive far fewer bytes during the broadcast storm.
"""

import base64
import hashlib

from conftest import start_server
from test_bench import PASSWORD, run_bench

N = 30          # users
K = 10          # contacts each
UPDATES = 2
OBSERVERS = 4


def write_rosters(store_dir, n, k):
    """store/memory_im.c's format: <store>/im/<BLAKE2b-128 of the bare JID>.roster,
    items 'item <state> <visible> <jid> <name> <pending> <ngroups>', state 8 = both."""
    d = store_dir / 'im'
    d.mkdir(parents=True, exist_ok=True)
    b = lambda t: 'b' + base64.b64encode(t.encode()).decode()
    for i in range(n):
        bare = 'bench%d@localhost' % i
        lines = ['tether-im-roster 1 %s' % b(bare), 'ver 1']
        lines += ['item 8 1 %s - - 0' % b('bench%d@localhost' % ((i + dd) % n))
                  for dd in range(-(k // 2), k // 2 + 1) if dd]
        name = hashlib.blake2b(bare.encode(), digest_size=16).hexdigest()
        (d / (name + '.roster')).write_text('\n'.join(lines) + '\n')


def presence_server(tmp_path, tls_cert):
    first = start_server(tmp_path, cert=tls_cert[0], key=tls_cert[1], store_backend='memory')
    try:
        for i in range(N):
            first.add_user('bench%d' % i, PASSWORD)
    finally:
        first.finish()
    write_rosters(tmp_path / 'var', N, K)
    return start_server(tmp_path, cert=tls_cert[0], key=tls_cert[1], store_backend='memory')


def run_presence(srv, *extra):
    (o,), r = run_bench(srv, '--contacts', str(K), '--updates', str(UPDATES), '--observers', str(OBSERVERS),
                        '--rate', '1000', '--concurrency', '10', '--prewarm', *extra, 'presence', str(N),
                        tls='direct', timeout=120)
    assert o['mode'] == 'presence', o
    assert o['ok'], r.stdout
    assert o['online'] == N and o['logins_failed'] == 0 and o['ended_sessions'] == 0
    assert o['rosters_wrong_size'] == 0
    assert o['contacts_seen_min'] == K       # every active user saw all its contacts available
    assert o['login_presence'] >= (N - o['inactive']) * K
    assert o['lost'] == 0 and o['duplicated'] == 0
    assert o['self_presence'] >= N
    assert o['logins_per_s'] > 0 and o['presence_per_s'] > 0
    return o


def test_presence_storm(tmp_path, tls_cert):
    srv = presence_server(tmp_path, tls_cert)
    try:
        o = run_presence(srv)
        assert o['inactive'] == 0
        assert o['updates_expected_active'] == N * K * UPDATES
        assert o['updates_delivered_active'] == N * K * UPDATES
        # an active observer gets what any client gets: its contacts' updates
        assert o['observer_bytes_storm'] > K * UPDATES * 50

        c = run_presence(srv, '--csi')
        assert c['csi_offered'] == N, 'tetherd advertises urn:xmpp:csi:0'
        assert c['inactive'] == OBSERVERS
        assert c['updates_expected_active'] == (N - OBSERVERS) * K * UPDATES
        assert c['updates_delivered_active'] == (N - OBSERVERS) * K * UPDATES
        # presence to an inactive client is held: far fewer bytes in the storm
        assert c['observer_wire_bytes_storm'] * 3 < c['client_wire_bytes_storm'], c
    finally:
        srv.finish()
