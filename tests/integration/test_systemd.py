"""systemd: the unit file verifies, and tetherd says READY=1 / STOPPING=1
on $NOTIFY_SOCKET (Type=notify) when built with libsystemd."""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import tetherd_path

ROOT = Path(__file__).resolve().parents[2]


def test_unit_file_verifies(tmp_path):
    analyze = shutil.which('systemd-analyze')
    if not analyze:
        pytest.skip('systemd-analyze is not installed')
    unit = (ROOT / 'deploy' / 'tetherd.service').read_text()
    assert 'Type=notify' in unit and 'ExecReload=' in unit and 'LimitNOFILE=' in unit
    for key in ('ProtectSystem=strict', 'NoNewPrivileges=yes', 'PrivateTmp=yes', 'User=tether'):
        assert key in unit, key
    # verify checks that ExecStart= is executable: point it at this build
    local = tmp_path / 'tetherd.service'
    local.write_text(unit.replace('/usr/local/bin/tetherd', str(tetherd_path().resolve())))
    p = subprocess.run([analyze, 'verify', str(local)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), \
        p.stdout + p.stderr


def test_example_config_checks(tmp_path):
    ini = (ROOT / 'deploy' / 'tether.ini').read_text()
    for name in ('fullchain.pem', 'privkey.pem'):
        (tmp_path / name).write_text('')
    ini = ini.replace('/etc/tether/', str(tmp_path) + '/').replace('/var/lib/tether', str(tmp_path))
    cfg = tmp_path / 'tether.ini'
    cfg.write_text(ini)
    p = subprocess.run([str(tetherd_path()), '-c', str(cfg), '--check'], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr


def test_notify_ready_and_stopping(server_factory, tmp_path, monkeypatch):
    if 'sd_notify' not in subprocess.run(['nm', '-D', str(tetherd_path())], capture_output=True,
                                         text=True).stdout:
        pytest.skip('tetherd was built without libsystemd')
    path = str(tmp_path / 'notify.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    monkeypatch.setenv('NOTIFY_SOCKET', path)
    srv = server_factory()
    msg = sock.recv(4096).decode()
    assert 'READY=1' in msg and 'STATUS=domain localhost' in msg, msg
    srv.stop()
    assert 'STOPPING=1' in sock.recv(4096).decode()
    sock.close()
