"""haproxy_server.py - a real HAProxy for integration tests, on loopback.

HAProxy(tmp_path, cfg_text, ports): writes cfg_text to tmp_path/haproxy.cfg,
runs `haproxy -db` in the foreground, and waits until every port in <ports>
accepts; .stop() ends it. The `haproxy_bin()` of None means the test is
skipped (apt-get install haproxy)."""

import os
import shutil
import socket
import subprocess
import time

import pytest


def haproxy_bin():
    return shutil.which('haproxy') or ('/usr/sbin/haproxy' if os.path.exists('/usr/sbin/haproxy')
                                       else None)


class HAProxy:
    def __init__(self, tmp_path, cfg_text, ports):
        exe = haproxy_bin()
        if not exe:
            pytest.skip('no haproxy (apt-get install haproxy)')
        cfg = tmp_path / 'haproxy.cfg'
        cfg.write_text(cfg_text)
        self.logpath = tmp_path / 'haproxy.log'
        self._log = open(self.logpath, 'wb')
        self.proc = subprocess.Popen([exe, '-f', str(cfg), '-db'], stdout=self._log,
                                     stderr=self._log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        for p in ports:
            while True:
                try:
                    socket.create_connection(('127.0.0.1', p), timeout=0.5).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        pytest.fail('haproxy did not start: %s' % self.logpath.read_text())
                    time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
