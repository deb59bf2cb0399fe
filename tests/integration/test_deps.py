"""scripts/deps.sh on a simulated fresh machine: a dpkg-query stand-in answers
from data/fresh-image.txt (a copy of ../shared/fresh-image.txt, the packages
and versions of a fresh machine), an apt-get stand-in records its arguments,
and an id stand-in says whether we are root. No package is installed."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPS = ROOT / 'scripts' / 'deps.sh'
IMAGE = Path(__file__).resolve().parent / 'data' / 'fresh-image.txt'

DPKG_QUERY = r'''#!%(python)s
# dpkg-query -W -f=FORMAT PKG: answers from the image file named in $FAKE_IMAGE.
import os, sys
img = {}
for line in open(os.environ['FAKE_IMAGE']):
    if line.startswith('#') or '\t' not in line:
        continue
    name, version = line.rstrip('\n').split('\t', 1)
    img[name] = version
fmt, pkgs = '${Package}\t${Version}\n', []
for a in sys.argv[1:]:
    if a.startswith('-f=') or a.startswith('--showformat='):
        fmt = a.split('=', 1)[1]
    elif not a.startswith('-'):
        pkgs.append(a.split(':')[0])
rc = 0
for p in pkgs:
    if p not in img:
        sys.stderr.write('dpkg-query: no packages found matching %%s\n' %% p)
        rc = 1
        continue
    sys.stdout.write(fmt.replace('${Package}', p).replace('${Version}', img[p])
                     .replace('${Status}', 'install ok installed'))
sys.exit(rc)
'''

APT_GET = '''#!/bin/sh
echo "$*" >> "$FAKE_APT_LOG"
'''

ID = '''#!/bin/sh
[ "$1" = "-u" ] && { echo "$FAKE_UID"; exit 0; }
exec /usr/bin/id "$@"
'''


def read_image(path):
    img = {}
    for line in path.read_text().splitlines():
        if line.startswith('#') or '\t' not in line:
            continue
        name, version = line.split('\t', 1)
        img[name] = version
    return img


def deps_packages():
    """(package, floor or None) for every entry of deps.sh's PKGS list."""
    m = re.search(r'^PKGS="([^"]*)"', DEPS.read_text(), re.M)
    assert m, 'no PKGS="..." in scripts/deps.sh'
    out = []
    for entry in m.group(1).split():
        name, _, floor = entry.partition('>=')
        out.append((name, floor or None))
    return out


def run_deps(tmp_path, image, uid=0):
    shim = tmp_path / 'shim'
    shim.mkdir(exist_ok=True)
    for name, text in (('dpkg-query', DPKG_QUERY % {'python': sys.executable}),
                       ('apt-get', APT_GET), ('id', ID)):
        (shim / name).write_text(text)
        (shim / name).chmod(0o755)
    log = tmp_path / 'apt.log'
    if log.exists():
        log.unlink()
    env = dict(os.environ, PATH='%s:%s' % (shim, os.environ.get('PATH', '/usr/bin:/bin')),
               FAKE_IMAGE=str(image), FAKE_APT_LOG=str(log), FAKE_UID=str(uid))
    p = subprocess.run(['sh', str(DEPS)], env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return p, calls, env


def installs(calls):
    """Package names of the apt-get install calls."""
    pkgs = []
    for c in calls:
        words = c.split()
        if words and words[0] == 'install':
            pkgs += [w for w in words[1:] if not w.startswith('-')]
    return pkgs


def expected_requests(image, env):
    """What a correct deps.sh must ask for on this image."""
    want = set()
    for name, floor in deps_packages():
        have = image.get(name)
        if have is None:
            want.add(name)
        elif floor and subprocess.run(['dpkg', '--compare-versions', have, 'lt', floor]).returncode == 0:
            want.add(name)
    if shutil.which('node', path=env['PATH']) and shutil.which('npm', path=env['PATH']):
        want -= {'nodejs', 'npm'}     # a working node from elsewhere is enough
    return want


def test_fresh_image_as_root_installs_missing_and_upgrades_expat(tmp_path):
    image = read_image(IMAGE)
    assert image['libexpat1-dev'] == '2.5.0-1+deb12u1', 'the fresh image changed: review the floors'
    p, calls, env = run_deps(tmp_path, IMAGE)
    assert p.returncode == 0, p.stderr
    asked = installs(calls)
    assert 'libexpat1-dev' in asked, ('deps.sh does not upgrade libexpat1-dev %s, which lacks '
                                      'XML_SetReparseDeferralEnabled: %s' % (image['libexpat1-dev'], calls))
    missing = expected_requests(image, env)
    assert missing <= set(asked), 'not requested: %s' % (missing - set(asked))
    assert set(asked) <= missing, 'requested although present and recent: %s' % (set(asked) - missing)
    assert calls[0].startswith('update'), calls        # apt-get update before install


def test_fresh_image_without_root_prints_the_command(tmp_path):
    p, calls, _ = run_deps(tmp_path, IMAGE, uid=1000)
    assert p.returncode == 1
    assert calls == [], 'apt-get ran without root: %s' % calls
    line = [l for l in p.stderr.splitlines() if 'apt-get install' in l]
    assert line and 'libexpat1-dev' in line[0].split(), p.stderr


def test_up_to_date_machine_installs_nothing(tmp_path):
    image = read_image(IMAGE)
    for name, floor in deps_packages():
        image[name] = '99.0' if not floor else floor
    upgraded = tmp_path / 'image.txt'
    upgraded.write_text(''.join('%s\t%s\n' % kv for kv in image.items()))
    p, calls, _ = run_deps(tmp_path, upgraded)
    assert p.returncode == 0, p.stderr
    assert calls == []


def test_floor_is_a_version_comparison(tmp_path):
    """deb12u10 is newer than deb12u2 although it sorts before it as text."""
    image = read_image(IMAGE)
    for name, floor in deps_packages():
        image[name] = '99.0' if not floor else floor
    image['libexpat1-dev'] = '2.5.0-1+deb12u10'
    path = tmp_path / 'image.txt'
    path.write_text(''.join('%s\t%s\n' % kv for kv in image.items()))
    p, calls, _ = run_deps(tmp_path, path)
    assert p.returncode == 0 and calls == [], (p.stderr, calls)
