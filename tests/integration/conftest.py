"""conftest.py - start tetherd for integration tests.

Fixture API (shared by every integration test file; keep it stable):
  tls_cert            session: (cert_path, key_path), self-signed RSA-2048, CN/SAN localhost
  start_server(tmp_path, **overrides) -> TetherServer   (caller stops it, or use server_factory)
  server              function: a running TetherServer with the default config
  server_factory      function: call(**overrides) -> TetherServer, all torn down at the end
  users(server)       function: creates alice/bob/carol, returns {local: password}

TetherServer: .host .port (STARTTLS) .tls_port .domain .proc .pid .config_path
  .add_user(local, pw) .passwd(local, pw) .deluser(local) .ctl(*args)
  .log() .wait_log(substring, timeout) .stop(sig=SIGTERM, timeout=10) -> exit code

Binaries: $TETHER_BUILD/tetherd and tetherctl, TETHER_BUILD defaults to "build",
relative paths resolve against the repo root. Tests are skipped when tetherd
is not built. Teardown fails the test if tetherd crashed (died of a signal),
hung on SIGTERM, exited non-zero, or logged a sanitizer report.
"""

import itertools
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOMAIN = 'localhost'
HOST = '127.0.0.1'

USERS = {'alice': 'alice-secret-1', 'bob': 'bob-secret-2', 'carol': 'carol-secret-3'}

SANITIZER_MARKERS = ('AddressSanitizer', 'runtime error:', 'LeakSanitizer', 'ThreadSanitizer')

# override name -> (section, key)
CONFIG_KEYS = {
    'domain': ('server', 'domain'),
    'workers': ('server', 'workers'),
    'log_level': ('server', 'log_level'),
    'listen': ('c2s', 'listen'),
    'tls_listen': ('c2s', 'tls_listen'),
    'cert': ('tls', 'cert'),
    'key': ('tls', 'key'),
    'dev_cert': ('tls', 'dev_cert'),
    'backend': ('store', 'backend'),
    'store_backend': ('store', 'backend'),
    'path': ('store', 'path'),
    'store_path': ('store', 'path'),
    'max_stanza_size': ('limits', 'max_stanza_size'),
    'max_depth': ('limits', 'max_depth'),
    'preauth_timeout': ('limits', 'preauth_timeout'),
    'max_auth_failures': ('limits', 'max_auth_failures'),
    'max_send_queue': ('limits', 'max_send_queue'),
    'idle_timeout': ('limits', 'idle_timeout'),
}
SECTION_ORDER = ('server', 'c2s', 'tls', 'store', 'limits')


def build_dir():
    b = Path(os.environ.get('TETHER_BUILD', 'build'))
    return b if b.is_absolute() else REPO / b


def tetherd_path():
    return build_dir() / 'tetherd'


def tetherctl_path():
    return build_dir() / 'tetherctl'


def require_binaries():
    for p in (tetherd_path(), tetherctl_path()):
        if not os.access(p, os.X_OK):
            pytest.skip('%s not built (set TETHER_BUILD or run make)' % p)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_cert(directory):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / 'cert.pem', directory / 'key.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256',
                    '-keyout', str(key), '-out', str(cert), '-days', '30',
                    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


@pytest.fixture(scope='session')
def tls_cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp('tls'))


def render_config(values):
    """values: {(section, key): value}; value None = leave the key out."""
    lines = []
    sections = list(SECTION_ORDER) + sorted({s for s, _ in values} - set(SECTION_ORDER))
    for sec in sections:
        items = [(k, v) for (s, k), v in values.items() if s == sec and v is not None]
        if not items:
            continue
        lines.append('[%s]' % sec)
        lines.extend('%s = %s' % (k, v) for k, v in items)
        lines.append('')
    return '\n'.join(lines)


def config_values(tmp_path, cert, key, port, tls_port, **overrides):
    values = {
        ('server', 'domain'): DOMAIN,
        ('server', 'workers'): 2,
        ('server', 'log_level'): 'info',
        ('c2s', 'listen'): '%s:%d' % (HOST, port),
        ('c2s', 'tls_listen'): '%s:%d' % (HOST, tls_port),
        ('tls', 'cert'): cert,
        ('tls', 'key'): key,
        ('store', 'backend'): 'memory',
        ('store', 'path'): str(Path(tmp_path) / 'var'),
        ('limits', 'max_stanza_size'): 65536,
        ('limits', 'preauth_timeout'): 10,
        ('limits', 'max_auth_failures'): 3,
    }
    # TETHER_STORE_DELAY=N runs every server with the store's test mode:
    # each completion waits 0..N extra loop turns (store.h).
    if os.environ.get('TETHER_STORE_DELAY'):
        values[('store', 'test_delay')] = int(os.environ['TETHER_STORE_DELAY'])
    # TETHER_STORE=redis runs every server on one shared redis-server
    # (started once, emptied before each test; see redis_backend()).
    default_store = 'backend' not in overrides and 'store_backend' not in overrides \
        and 'store.backend' not in overrides
    if default_store and _RUNNING_FIXED_STORE[0]:
        raise AssertionError('a test marked fixed_store started a server on the default store: '
                             'TETHER_STORE=redis would change it, so the mark is wrong')
    if os.environ.get('TETHER_STORE') == 'redis' and default_store:
        values[('store', 'backend')] = 'redis'
        values[('store', 'redis')] = shared_redis().addr
        values[('cluster', 'node')] = 'n%d' % next(_NODE_NUMBERS)
    for name, value in overrides.items():
        if '.' in name:                      # 'section.key' for keys not in the table
            sk = tuple(name.split('.', 1))
        elif name in CONFIG_KEYS:
            sk = CONFIG_KEYS[name]
        else:
            raise TypeError('start_server: unknown override %r' % name)
        values[sk] = value
    return values


_SHARED_REDIS = []
_NODE_NUMBERS = itertools.count(1)
_RUNNING_FIXED_STORE = [False]  # the running test is marked fixed_store


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'fixed_store: every server of the test names its store (a real Redis, or memory '
        'on purpose), so the TETHER_STORE=redis run would repeat it unchanged and leaves it out; '
        'a marked test that starts a server on the default store fails')


def pytest_collection_modifyitems(config, items):
    if os.environ.get('TETHER_STORE') != 'redis':
        return
    fixed = [i for i in items if i.get_closest_marker('fixed_store')]
    if fixed:
        config.hook.pytest_deselected(items=fixed)
        items[:] = [i for i in items if not i.get_closest_marker('fixed_store')]


def shared_redis():
    """The redis-server of a TETHER_STORE=redis run (one for the session)."""
    if not _SHARED_REDIS:
        import tempfile
        from redis_server import RedisServer
        d = tempfile.mkdtemp(prefix='tether-redis-all-')
        _SHARED_REDIS.append(RedisServer(d))
    return _SHARED_REDIS[0]


@pytest.fixture(autouse=True)
def redis_backend(request):
    """With TETHER_STORE=redis: every test starts from an empty Redis (the
    FUNCTION library stays; nodes load it anyway)."""
    _RUNNING_FIXED_STORE[0] = request.node.get_closest_marker('fixed_store') is not None
    if os.environ.get('TETHER_STORE') == 'redis':
        shared_redis().cli('FLUSHALL')
    yield
    _RUNNING_FIXED_STORE[0] = False


def pytest_sessionfinish(session, exitstatus):
    for r in _SHARED_REDIS:
        r.stop()


class TetherServer:
    def __init__(self, tmp_path, cert, key, **overrides):
        require_binaries()
        self.tmp_path = Path(tmp_path)
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        ports = overrides.pop('ports', None)    # (port, tls_port): those of an earlier server
        if ports:
            self.port, self.tls_port = ports
        else:
            self.port = free_port()
            self.tls_port = free_port()
            while self.tls_port == self.port:
                self.tls_port = free_port()
        values = config_values(self.tmp_path, cert, key, self.port, self.tls_port, **overrides)
        self.domain = values[('server', 'domain')]
        self.config_path = str(self._unique('tetherd', '.ini'))
        Path(self.config_path).write_text(render_config(values))
        self.log_path = self._unique('tetherd', '.log')
        self.stopped_with = None
        self.finished = False
        env = dict(os.environ)
        env.setdefault('UBSAN_OPTIONS', 'print_stacktrace=1')
        if values.get(('store', 'backend')) == 'redis' and _SHARED_REDIS and \
                values.get(('store', 'redis')) == _SHARED_REDIS[0].addr:
            # Servers of one test are separate clusters with their own keys.
            _SHARED_REDIS[0].cli('DEL', 't:{cluster}:keycheck')
        self._logf = open(self.log_path, 'ab')  # O_APPEND: every writer appends
        self.proc = subprocess.Popen([str(tetherd_path()), '-c', self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=self._logf, cwd=str(self.tmp_path), env=env,
                                     start_new_session=True)
        self.pid = self.proc.pid
        try:
            self._wait_ready(10.0)
        except BaseException:
            self._kill()
            raise

    def _unique(self, stem, suffix):
        p = self.tmp_path / (stem + suffix)
        n = 1
        while p.exists():
            n += 1
            p = self.tmp_path / ('%s-%d%s' % (stem, n, suffix))
        return p

    # ------------------------------------------------------------ lifecycle
    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        pending = [self.port, self.tls_port]
        while pending:
            if self.proc.poll() is not None:
                pytest.fail('tetherd exited during startup (code %s); log:\n%s'
                            % (self.proc.returncode, self.log()))
            try:
                with socket.create_connection((self.host, pending[0]), timeout=0.5):
                    pass
                pending.pop(0)
                continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._kill()
                pytest.fail('tetherd not listening on %s:%s within %.0fs; log:\n%s'
                            % (self.host, pending, timeout, self.log()))
            time.sleep(0.05)
        # Listening sockets accept into their backlog before the workers
        # run: started means the start-up line is in the log.
        while ': domain ' not in self.log():
            if self.proc.poll() is not None:
                pytest.fail('tetherd exited during startup (code %s); log:\n%s'
                            % (self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                self._kill()
                pytest.fail('tetherd did not finish starting within %.0fs; log:\n%s'
                            % (timeout, self.log()))
            time.sleep(0.02)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Sends <sig> and waits up to <timeout> s. Returns the exit code
        (negative = killed by that signal, Popen style). If the process does not
        exit in time it is SIGKILLed and AssertionError is raised."""
        self.stopped_with = sig
        if self.proc.poll() is None:
            with _suppress():
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise AssertionError('tetherd did not exit within %ss of signal %s; log tail:\n%s'
                                     % (timeout, sig, self.log()[-4000:]))
        self._logf.flush()
        return self.proc.returncode

    def _kill(self):
        if self.proc.poll() is None:
            with _suppress():
                self.proc.kill()
            with _suppress():
                self.proc.wait(5)

    def finish(self):
        """Teardown: stop (SIGTERM), then fail on crash, hang, bad exit or sanitizer output."""
        if self.finished:
            return
        self.finished = True
        problems = []
        if self.proc.poll() is not None and self.stopped_with is None:
            problems.append('tetherd exited on its own during the test (code %s)' % self.proc.returncode)
        elif self.proc.poll() is None:
            try:
                self.stop(signal.SIGTERM, 10)
            except AssertionError as e:
                problems.append(str(e).split(';')[0])
        rc = self.proc.returncode
        expected_sig = self.stopped_with if self.stopped_with not in (None, signal.SIGTERM) else None
        if rc is not None and rc < 0 and -rc != expected_sig:
            problems.append('tetherd died of signal %d (crash)' % -rc)
        elif rc not in (0, None) and expected_sig is None and rc > 0 and not problems:
            problems.append('tetherd exited with code %d after SIGTERM' % rc)
        self._logf.close()
        log = self.log()
        for marker in SANITIZER_MARKERS:
            if marker in log:
                problems.append('sanitizer report in the log (%r)' % marker)
                break
        if problems:
            pytest.fail('; '.join(problems) + '\n--- tetherd log (%s) ---\n%s'
                        % (self.log_path, log[-20000:]), pytrace=False)

    # ------------------------------------------------------------ log
    def log(self):
        try:
            return Path(self.log_path).read_bytes().decode('utf-8', errors='replace')
        except FileNotFoundError:
            return ''

    def wait_log(self, substring, timeout=5.0):
        """Waits until the log contains <substring>; returns the log text."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if substring in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError('%r not in the tetherd log within %ss; log tail:\n%s'
                                     % (substring, timeout, text[-4000:]))
            time.sleep(0.05)

    # ------------------------------------------------------------ accounts
    def ctl(self, *args, stdin=None, check=True, timeout=30):
        """Runs tetherctl -c CONFIG ARGS...; returns CompletedProcess (text)."""
        r = subprocess.run([str(tetherctl_path()), '-c', self.config_path, *args],
                           input=stdin, capture_output=True, text=True, timeout=timeout,
                           cwd=str(self.tmp_path))
        if check and r.returncode != 0:
            raise AssertionError('tetherctl %s failed (%d): %s%s'
                                 % (' '.join(args), r.returncode, r.stdout, r.stderr))
        return r

    def jid(self, local):
        return '%s@%s' % (local, self.domain)

    # The memory store re-reads users.db at most once a second
    # (store/memory.c CHECK_INTERVAL_MS), so a change made with tetherctl is
    # visible to the running server within ~1 s. Login helpers call
    # settle_users() first; it sleeps only if an account changed recently.
    STORE_RELOAD_S = 1.1

    def _changed(self):
        self._users_changed_at = time.monotonic()

    def settle_users(self):
        t = getattr(self, '_users_changed_at', None)
        if t is not None:
            left = t + self.STORE_RELOAD_S - time.monotonic()
            if left > 0:
                time.sleep(left)
            self._users_changed_at = None

    def add_user(self, local, password):
        r = self.ctl('adduser', self.jid(local), stdin=password + '\n')
        self._changed()
        return r

    def passwd(self, local, password):
        r = self.ctl('passwd', self.jid(local), stdin=password + '\n')
        self._changed()
        return r

    def deluser(self, local):
        r = self.ctl('deluser', self.jid(local))
        self._changed()
        return r

    def list_users(self):
        return self.ctl('list').stdout.split()


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        return typ is not None and issubclass(typ, (OSError, ProcessLookupError))


_CERT_CACHE = {}


def _default_cert(tmp_path):
    """Certificate for start_server() callers that have no tls_cert fixture at hand."""
    if 'cert' not in _CERT_CACHE:
        _CERT_CACHE['cert'] = make_cert(Path(tmp_path) / 'tls')
    return _CERT_CACHE['cert']


def start_server(tmp_path, **overrides):
    """Starts tetherd with the default test config plus overrides (config keys,
    e.g. workers=1, max_stanza_size=4096, preauth_timeout=2; 'section.key' for
    others; cert=/key= to use another certificate). The caller must call
    .finish() (or .stop()); the server_factory fixture does that for you."""
    cert = overrides.pop('cert', None)
    key = overrides.pop('key', None)
    if cert is None or key is None:
        cert, key = _default_cert(tmp_path)
    return TetherServer(tmp_path, cert, key, **overrides)


@pytest.fixture
def server_factory(tmp_path, tls_cert):
    started = []

    def factory(**overrides):
        overrides.setdefault('cert', tls_cert[0])
        overrides.setdefault('key', tls_cert[1])
        d = tmp_path / ('srv%d' % len(started))
        s = start_server(d, **overrides)
        started.append(s)
        return s
    yield factory
    errors = []
    for s in started:
        try:
            s.finish()
        except BaseException as e:  # pytest.fail raises Failed (a BaseException)
            errors.append(str(e))
    if errors:
        pytest.fail('\n\n'.join(errors), pytrace=False)


@pytest.fixture
def server(server_factory):
    return server_factory()


@pytest.fixture
def users(server):
    for local, pw in USERS.items():
        server.add_user(local, pw)
    server.settle_users()      # visible to the running server (store reload)
    return dict(USERS)


@pytest.fixture
def conns(server_factory):
    """A list to put raw connections in; they are closed before the server stops."""
    opened = []
    yield opened
    for c in opened:
        try:
            c.close()
        except Exception:
            pass
