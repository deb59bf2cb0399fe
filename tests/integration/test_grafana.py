"""deploy/grafana/tether.json against what tetherd exports.

The metric names come from the X-macro lists in include/tether/metrics.h
(METRIC_FAMILIES, METRIC_SERIES, METRIC_HISTOGRAMS, METRIC_GAUGES); a
panel may use nothing else, so a
dashboard cannot show a metric that does not exist (or one that was
renamed). No Grafana and no tetherd needed; promtool, when installed,
parses every expression as well."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / 'deploy' / 'grafana' / 'tether.json'
METRICS_H = ROOT / 'include' / 'tether' / 'metrics.h'

# PromQL words that look like identifiers but are not metric names.
KEYWORDS = {'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool',
            'offset', 'inf', 'nan'}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {'instance', 'job'}


def exported():
    """Returns {metric name: set of label names} for every series tetherd
    exports: counter families with their series' labels, histograms as
    _bucket (with le), _sum and _count, and metrics.c's own gauges."""
    h = METRICS_H.read_text()
    fam_name = dict(re.findall(r'F\(\s*(F_\w+),\s*"(tether_\w+)"', h))
    assert fam_name, 'no METRIC_FAMILIES entries parsed from metrics.h'
    names = {n: set() for n in fam_name.values()}
    # A series' labels may be pasted together in a helper macro
    # (S(M_RESUME_##K##_OK_SAME, F_RESUMPTIONS, "kind=\"" k "\",...")).
    for fam, labels in re.findall(r'S\(\s*M_[\w#]+,\s*(F_\w+),\s*(.*)\)', h):
        assert fam in fam_name, fam
        names[fam_name[fam]] |= set(re.findall(r'(\w+)=', labels))
    hists = re.findall(r'H\(\s*H_\w+,\s*"(tether_\w+)"', h)
    assert hists, 'no METRIC_HISTOGRAMS entries parsed from metrics.h'
    for n in hists:
        names[n + '_bucket'] = {'le'}
        names[n + '_sum'] = set()
        names[n + '_count'] = set()
    # Gauges read at scrape time (METRIC_GAUGES).
    gauges = re.findall(r'G\(\s*G_\w+,\s*"(tether_\w+)"', h)
    assert gauges, 'no METRIC_GAUGES entries parsed from metrics.h'
    for n in gauges:
        names[n] = set()
    return names


def dashboard():
    return json.loads(DASHBOARD.read_text())


def panels(d):
    for p in d['panels']:
        yield p
        yield from p.get('panels', [])


def exprs(d):
    for p in panels(d):
        for t in p.get('targets', []):
            yield p['title'], t['expr']


def metric_refs(expr):
    """Returns (metric names, labels in by/without/on/ignoring/group_*
    clauses) of <expr>."""
    e = re.sub(r'\{[^}]*\}', '', expr)          # label matchers
    e = re.sub(r'\[[^\]]*\]', '', e)            # range selectors
    grouping = set()
    clause = r'\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)'
    for labels in re.findall(clause, e):
        grouping |= {l.strip() for l in labels.split(',') if l.strip()}
    e = re.sub(clause, '', e)
    e = re.sub(r'"[^"]*"', '', e)
    names = set()
    for m in re.finditer(r'(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?', e):
        if m.group(2) or m.group(1).lower() in KEYWORDS:
            continue                             # a function call or a keyword
        names.add(m.group(1))
    return names, grouping


def test_json_is_a_dashboard_with_the_prometheus_input():
    d = dashboard()
    assert [i['name'] for i in d['__inputs']] == ['DS_PROMETHEUS']
    assert d['__inputs'][0]['pluginId'] == 'prometheus'
    ids = [p['id'] for p in panels(d)]
    assert len(ids) == len(set(ids)), 'panel ids must be unique'
    for p in panels(d):
        if p['type'] == 'row':
            continue
        assert p['datasource']['uid'] == '${DS_PROMETHEUS}', p['title']
        assert p['targets'], p['title']
        for t in p['targets']:
            assert t['datasource']['uid'] == '${DS_PROMETHEUS}', p['title']
        assert p['fieldConfig']['defaults'].get('unit'), '%s: no unit' % p['title']


def test_every_expr_uses_exported_metrics():
    known = exported()
    seen = set()
    for title, expr in exprs(dashboard()):
        names, grouping = metric_refs(expr)
        assert names, '%s: no metric in %r' % (title, expr)
        for n in names:
            assert n in known, '%s: %s is not exported by tetherd (metrics.h / metrics.c)' % (title, n)
        allowed = TARGET_LABELS.union(*(known[n] for n in names))
        assert grouping <= allowed, '%s: grouping by %s, which %s lacks' % (title, grouping - allowed, names)
        seen |= names
    # The panels the dashboard promises.
    for n in ('tether_stanzas_in_total', 'tether_authentications_total', 'tether_stream_errors_total',
              'tether_sessions_bound_total', 'tether_limit_hits_total', 'tether_resume_duration_seconds_bucket',
              'tether_process_resident_memory_bytes', 'tether_process_open_fds',
              'tether_connections', 'tether_connection_states', 'tether_sessions',
              'tether_client_bytes_total', 'tether_session_takeovers_total', 'tether_sm_queue_depth_bucket',
              'tether_worker_loop_lag_seconds_bucket', 'tether_backpressure_pauses_total',
              'tether_store_operation_duration_seconds_bucket', 'tether_store_errors_total',
              'tether_tls_handshakes_total', 'tether_redis_link_up'):
        assert n in seen, n


def test_variable_queries_use_exported_metrics():
    known = exported()
    for v in dashboard()['templating']['list']:
        q = v['query']['query'] if isinstance(v['query'], dict) else v['query']
        for n in re.findall(r'label_values\(\s*([A-Za-z_:][\w:]*)\s*,', q):
            assert n in known, '%s: %s is not exported' % (v['name'], n)


def test_metric_refs_parser():
    names, grouping = metric_refs('histogram_quantile(0.99, sum by (le) (rate(x_bucket{a="b(c)"}[5m])))')
    assert names == {'x_bucket'} and grouping == {'le'}
    assert metric_refs('a_total / on (instance) b')[0] == {'a_total', 'b'}
    assert 'made_up_total' not in exported()


def test_promtool_parses_every_expr(tmp_path):
    promtool = shutil.which('promtool')
    if not promtool:
        pytest.skip('promtool is not installed (Debian package prometheus)')
    rules = ['groups:', '  - name: dashboard', '    rules:']
    for i, (title, expr) in enumerate(exprs(dashboard())):
        e = expr.replace('$__rate_interval', '5m').replace('$instance', '.*')
        rules += ['      - record: dashboard:expr%d' % i, '        expr: %s' % json.dumps(e)]
    f = tmp_path / 'rules.yml'
    f.write_text('\n'.join(rules) + '\n')
    r = subprocess.run([promtool, 'check', 'rules', str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
