"""test_bench_cluster.py - tether-bench's cluster options against real nodes on one real redis-server.

Small, bounded runs (loopback only) of what bench/RESULTS.md's Cluster
section measures at size: a resume on the other node than the login
(--resume-on 2: classic, ISR, FAST), a flood whose receivers are on another
node (--recv-port), and a flood during which the receivers' node is killed
with SIGKILL (--kill-cmd) and its sessions resume on a third node. Checks the
JSON the bench prints: everything resumed, nothing lost, nothing twice.

And the kill of the node that holds both ends of every conversation: the
sender's <a h/> counts only what is in the receiver's queue in Redis, so
nothing acknowledged is lost when that node dies (it lost messages four runs
in five before deliveries went through the store on a cluster).
"""

import signal

import pytest

from test_bench import PASSWORD, run_bench
from test_cluster import Cluster

# Every server here names its store: the TETHER_STORE=redis run skips this file.
pytestmark = pytest.mark.fixed_store

NUSERS = 12


@pytest.fixture
def bench_cluster(server_factory, tmp_path):
    c = Cluster(server_factory, tmp_path, n=3)
    for i in range(NUSERS):
        c.nodes['a'].add_user('bench%d' % i, PASSWORD)
    yield c
    c.close()


@pytest.mark.parametrize('kind,flights', [('classic', 7), ('isr', 3), ('fast', 3)])
def test_resume_on_other_node(bench_cluster, kind, flights):
    a, b = bench_cluster.nodes['a'], bench_cluster.nodes['b']
    (o,), r = run_bench(a, '--port2', str(b.tls_port), '--concurrency', '1', 'resume', '6', '--count', '2',
                        '--resume-kind', kind, '--resume-on', '2', tls='direct', timeout=30)
    assert o['ok'], r.stdout
    assert o['cross_node'] is True and o['port2'] == b.tls_port
    assert o['resumes_ok'] == 12 and o['resumes_failed'] == 0
    assert o['redelivered'] == o['redeliver_expected'] == 12 and o['duplicated'] == 0
    assert o['round_trips'] == flights
    # each node has its own TLS ticket key: a ticket from one is refused by the other
    assert o['tls_resumed'] == 0


def test_cross_node_resume_kind(bench_cluster):
    a, b = bench_cluster.nodes['a'], bench_cluster.nodes['b']
    (o,), r = run_bench(a, '--port2', str(b.tls_port), '--concurrency', '1', 'resume', '4',
                        '--resume-kind', 'cross-node', tls='direct', timeout=30)
    assert o['ok'] and o['resume_kind'] == 'classic' and o['cross_node'] is True, r.stdout


def test_cross_node_needs_port2(bench_cluster):
    a = bench_cluster.nodes['a']
    with pytest.raises(AssertionError, match='bad usage|crashed'):
        run_bench(a, 'resume', '2', '--resume-kind', 'cross-node', tls='direct', timeout=30)


def test_flood_across_nodes(bench_cluster):
    a, b = bench_cluster.nodes['a'], bench_cluster.nodes['b']
    (o,), r = run_bench(a, '--recv-port', str(b.tls_port), 'flood', '4', '300', tls='direct', timeout=30)
    assert o['ok'], r.stdout
    assert o['recv_port'] == b.tls_port
    assert o['delivered'] == 1200 and o['lost'] == 0 and o['duplicated'] == 0 and o['reordered'] == 0
    assert o['bounced'] == 0 and o['unacked_by_server'] == 0


def test_flood_receivers_node_killed(bench_cluster):
    """Senders on a, receivers on b; b is killed 200 ms into the flood (window
    1, so the flood lasts longer than that) and its sessions resume on c."""
    a, b, c = (bench_cluster.nodes[n] for n in 'abc')
    (o,), r = run_bench(a, '--recv-port', str(b.tls_port), '--window', '1', '--timeout', '8',
                        'flood', '4', '1000', '--kill-cmd', 'kill -9 %d' % b.pid, '--kill-after-ms', '200',
                        '--resume-port', str(c.tls_port), tls='direct', timeout=60)
    b.stop(signal.SIGKILL)          # already dead: tells the fixture it was on purpose
    assert o['kill_at_ms'] >= 200 and o['kill_exit'] == 0, r.stdout
    assert o['dropped'] == 4 and o['resumed'] == 4 and o['resume_failed'] == 0, r.stdout
    assert o['lost'] == 0 and o['duplicated'] == 0 and o['reordered'] == 0, r.stdout
    assert o['ok'], r.stdout


@pytest.mark.parametrize('rnd', range(3))
def test_flood_node_with_both_ends_killed(bench_cluster, rnd):
    """Senders and receivers on a; a is killed mid-flood and every session
    resumes on b: nothing the server acknowledged is lost, nothing twice."""
    a, b = bench_cluster.nodes['a'], bench_cluster.nodes['b']
    (o,), r = run_bench(a, '--window', '16', '--timeout', '8', 'flood', '6', '3000',
                        '--kill-cmd', 'kill -9 %d' % a.pid, '--kill-after-ms', '150',
                        '--resume-port', str(b.tls_port), tls='direct', timeout=60)
    a.stop(signal.SIGKILL)
    assert o['kill_exit'] == 0 and o['resume_failed'] == 0, r.stdout
    assert o['lost'] == 0 and o['duplicated'] == 0 and o['reordered'] == 0, r.stdout
    assert o['ok'], r.stdout
