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
    def __init__(self, directory, aof=False):
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
             '--dir', str(self.dir), '--save', '', '--appendonly', 'yes' if aof else 'no',
             '--appendfsync', 'always', '--daemonize', 'no', '--logfile', self.logfile,
             '--enable-debug-command', 'local'],   # DEBUG SLEEP: a Redis that stalls
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

    def command(self, *args):
        """One command over the socket, binary-safe (redis-cli's output is
        not): returns bytes, int, None, a list, or raises RedisError."""
        import socket
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.sock)
            out = b'*%d\r\n' % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b'$%d\r\n%s\r\n' % (len(a), a)
            s.sendall(out)
            f = s.makefile('rb')
            return _read_reply(f)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RedisError(Exception):
    pass


def _read_reply(f):
    line = f.readline()
    if not line.endswith(b'\r\n'):
        raise RedisError('connection closed')
    kind, rest = line[:1], line[1:-2]
    if kind == b'+':
        return rest
    if kind == b'-':
        raise RedisError(rest.decode(errors='replace'))
    if kind == b':':
        return int(rest)
    if kind == b'$':
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b'*':
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RedisError('bad reply %r' % line)


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
