"""redis_server.py - a throw-away redis-server for integration tests.

RedisServer(directory): starts `redis-server` on a unix socket in <directory>
(port 0: no TCP), with no RDB saves and no AOF, and stops it (SIGTERM, then
SIGKILL) in .stop(). .sock is the socket path, .addr the [store] redis value
("unix:<sock>"), .cli(*args) runs redis-cli against it and returns stdout.
The `redis` fixture skips the test, saying why, when redis-server is missing.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest


def redis_server_bin():
    env = os.environ.get('REDIS_SERVER')
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which('redis-server') or (
        '/usr/bin/redis-server' if os.access('/usr/bin/redis-server', os.X_OK) else None)


class RedisServer:
    def __init__(self, directory):
        self.bin = redis_server_bin()
        if not self.bin:
            pytest.skip('redis-server not found (apt-get install redis-server, or set REDIS_SERVER)')
        self.cli_bin = shutil.which('redis-cli') or str(Path(self.bin).with_name('redis-cli'))
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock = str(self.dir / 'redis.sock')
        self.addr = 'unix:' + self.sock
        self.logfile = str(self.dir / 'redis.log')
        self.proc = subprocess.Popen(
            [self.bin, '--port', '0', '--unixsocket', self.sock, '--unixsocketperm', '700',
             '--dir', str(self.dir), '--save', '', '--appendonly', 'no', '--daemonize', 'no',
             '--logfile', self.logfile],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                pytest.fail('redis-server exited at start: %s' % Path(self.logfile).read_text())
            if os.path.exists(self.sock) and self._ping():
                break
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail('redis-server did not come up in 10 s')
            time.sleep(0.02)

    def _ping(self):
        try:
            return self.cli('PING').strip() == 'PONG'
        except subprocess.SubprocessError:
            return False

    def cli(self, *args):
        r = subprocess.run([self.cli_bin, '-s', self.sock, *args], capture_output=True,
                           text=True, timeout=10, check=True)
        return r.stdout

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def redis(tmp_path):
    # A short directory: a unix socket path is limited to 107 bytes, and
    # pytest's tmp_path can be longer than that.
    import tempfile
    d = tempfile.mkdtemp(prefix='tether-redis-')
    srv = RedisServer(d)
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)
