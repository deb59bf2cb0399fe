"""bench/charts on a fixture: a RESULTS.md-shaped file with a few tether-bench
JSON lines (one of them failed, one server without ISR/FAST runs) and a bare
JSON-lines file. It must write its three PNGs and nothing else. No server is
started; matplotlib is a bench requirement, not a `make test` one, so the
test is skipped without it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('matplotlib', reason='python3-matplotlib is not installed (bench/compare installs it; '
                                         'make test does not need it)')

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / 'bench' / 'charts'
PNGS = {'results-idle-memory.png', 'results-flood.png', 'results-resume.png'}


def result(server, mode, **kw):
    r = {'mode': mode, 'server': server, 'ok': True, 'lost': 0, 'duplicated': 0}
    r.update(kw)
    return r


FIXTURE = [
    result('tether', 'idle', sessions=100, kib_per_session=5.0),
    result('tether', 'flood-windowed', pairs=2, messages_per_pair=10, window=32, msgs_per_s=300000),
    result('tether', 'flood-open', pairs=2, messages_per_pair=10, window=0, msgs_per_s=280000),
    result('tether', 'resume', resume_kind='classic', concurrency=20, resume_p50_ms=4.6, resume_p99_ms=8.8),
    result('tether', 'resume', resume_kind='isr', concurrency=20, resume_p50_ms=3.7, resume_p99_ms=5.7,
           run='resume-isr'),
    result('tether', 'resume', resume_kind='fast', concurrency=1, resume_p50_ms=0.6, resume_p99_ms=1.4,
           run='resume-fast-c1'),
    result('prosody', 'idle', sessions=100, kib_per_session=55.6),
    result('prosody', 'flood-windowed', pairs=2, messages_per_pair=10, window=32, msgs_per_s=2700),
    # A failed run: drawn as FAIL, no rate.
    result('prosody', 'flood-open', pairs=2, messages_per_pair=10, window=0, ok=False, lost=3),
    result('prosody', 'resume', resume_kind='classic', concurrency=20, resume_p50_ms=44.3, resume_p99_ms=263.2),
]


def run_charts(*args):
    return subprocess.run([sys.executable, str(CHARTS), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def check_pngs(d):
    assert {p.name for p in d.iterdir() if p.suffix == '.png'} == PNGS
    for name in PNGS:
        data = (d / name).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n', name
        assert len(data) > 5000, name  # something was drawn


def test_charts_from_results_md(tmp_path):
    lines = '\n'.join(json.dumps(r) for r in FIXTURE)
    # A JSON line outside the raw block must not be read.
    decoy = json.dumps(result('decoy', 'idle', sessions=1, kib_per_session=1.0))
    md = tmp_path / 'RESULTS.md'
    md.write_text('# results\n\n```\n%s\n```\n\n## Raw results (JSON lines from tether-bench)\n\n```\n%s\n```\n'
                  % (decoy, lines))
    r = run_charts(md)
    assert r.returncode == 0, r.stderr
    check_pngs(tmp_path)
    assert 'decoy' not in r.stdout + r.stderr


def test_charts_from_json_lines(tmp_path):
    src = tmp_path / 'bench.out'
    src.write_text('progress line\n' + '\n'.join(json.dumps(r) for r in FIXTURE) + '\n')
    out = tmp_path / 'png'
    r = run_charts(src, '--out-dir', out)
    assert r.returncode == 0, r.stderr
    check_pngs(out)


def test_same_data_same_bytes(tmp_path):
    src = tmp_path / 'bench.out'
    src.write_text('\n'.join(json.dumps(r) for r in FIXTURE) + '\n')
    a, b = tmp_path / 'a', tmp_path / 'b'
    assert run_charts(src, '--out-dir', a).returncode == 0
    assert run_charts(src, '--out-dir', b).returncode == 0
    for name in PNGS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_no_results_is_an_error(tmp_path):
    src = tmp_path / 'empty.md'
    src.write_text('## Raw results (JSON lines from tether-bench)\n\n```\n```\n')
    r = run_charts(src, '--out-dir', tmp_path / 'png')
    assert r.returncode == 1
    assert 'no tether-bench JSON lines' in r.stderr
