"""tetherd -c FILE --check: exit 0 for a valid file, else non-zero with
"FILE:LINE: [section] key: why" on stderr."""

import subprocess

import pytest

import conftest as cf


@pytest.fixture
def write_config(tmp_path, tls_cert):
    cf.require_binaries()

    def write(extra_limits='', extra_sections='', name='tether.ini', limits_first=''):
        cert, key = tls_cert
        text = (
            '; tether test config\n'                      # 1
            '[server]\n'                                  # 2
            'domain = localhost\n'                        # 3
            'workers = 2\n'                               # 4
            'log_level = info\n'                          # 5
            '[c2s]\n'                                     # 6
            'listen = 127.0.0.1:%d\n'                     # 7
            'tls_listen = 127.0.0.1:%d\n'                 # 8
            '[tls]\n'                                     # 9
            'cert = %s\n'                                 # 10
            'key = %s\n'                                  # 11
            '[store]\n'                                   # 12
            'backend = memory\n'                          # 13
            'path = %s\n'                                 # 14
            '[limits]\n'                                  # 15
            'max_stanza_size = 65536\n'                   # 16
            'preauth_timeout = 3\n'                       # 17
            'max_auth_failures = 3\n'                     # 18
            '%s'                                          # 19...
            '%s'
        ) % (cf.free_port(), cf.free_port(), cert, key, tmp_path / 'var', extra_limits, extra_sections)
        p = tmp_path / name
        p.write_text(text)
        return str(p)
    return write


def check(path, *extra, timeout=15):
    return subprocess.run([str(cf.tetherd_path()), '-c', path, '--check', *extra],
                          capture_output=True, text=True, timeout=timeout)


def test_valid_config(write_config):
    p = write_config()
    r = check(p)
    assert r.returncode == 0, 'valid config rejected: %s%s' % (r.stdout, r.stderr)


def test_valid_config_with_size_suffix(write_config):
    p = write_config(extra_limits='max_send_queue = 8m\n')
    r = check(p)
    assert r.returncode == 0, r.stderr


def test_bad_value_names_file_line_and_key(write_config):
    p = write_config(extra_limits='max_stanza_size = lots\n')   # line 19
    r = check(p)
    assert r.returncode != 0, 'bad value accepted'
    assert '%s:19: [limits] max_stanza_size:' % p in r.stderr, r.stderr


def test_bad_value_on_earlier_line(write_config, tmp_path):
    p = write_config()
    lines = open(p).read().splitlines(True)
    lines[3] = 'workers = many\n'                                 # line 4
    open(p, 'w').write(''.join(lines))
    r = check(p)
    assert r.returncode != 0
    assert '%s:4: [server] workers:' % p in r.stderr, r.stderr


def test_unknown_key_is_an_error(write_config):
    p = write_config(extra_limits='max_stanza_sise = 4096\n')   # typo, line 19
    r = check(p)
    assert r.returncode != 0, 'unknown key accepted'
    assert '%s:19:' % p in r.stderr and 'max_stanza_sise' in r.stderr, r.stderr


def test_unknown_section_is_an_error(write_config):
    p = write_config(extra_sections='[bogus]\nthing = 1\n')      # lines 19-20
    r = check(p)
    assert r.returncode != 0, 'unknown section accepted'
    assert p in r.stderr and ('bogus' in r.stderr or 'thing' in r.stderr), r.stderr


@pytest.mark.parametrize('line', ['workers = 100000', 'preauth_timeout = -1', 'max_stanza_size = 10',
                                  'max_auth_failures = 0'])
def test_out_of_range_values(write_config, line):
    section = 'server' if line.startswith('workers') else 'limits'
    key = line.split()[0]
    extra = '[%s]\n%s\n' % (section, line)                       # key on line 20
    p = write_config(extra_sections=extra)
    r = check(p)
    assert r.returncode != 0, '%r accepted' % line
    assert '%s:20: [%s] %s:' % (p, section, key) in r.stderr, r.stderr


def test_bad_bool(write_config):
    p = write_config(extra_sections='[tls]\ndev_cert = perhaps\n')
    r = check(p)
    assert r.returncode != 0
    assert '%s:20: [tls] dev_cert:' % p in r.stderr, r.stderr


def test_missing_file(tmp_path):
    cf.require_binaries()
    p = str(tmp_path / 'does-not-exist.ini')
    r = check(p)
    assert r.returncode != 0
    assert p in r.stderr, r.stderr


def test_syntax_error(write_config):
    p = write_config(extra_sections='[limits\n')
    r = check(p)
    assert r.returncode != 0
    assert p in r.stderr, r.stderr


def test_tetherd_refuses_to_start_with_bad_config(write_config):
    p = write_config(extra_limits='preauth_timeout = soon\n')
    r = subprocess.run([str(cf.tetherd_path()), '-c', p], capture_output=True, text=True, timeout=15)
    assert r.returncode != 0
    assert '%s:19: [limits] preauth_timeout:' % p in r.stderr, r.stderr


def test_check_does_not_start_listening(write_config):
    """--check must return promptly (it validates, it does not serve)."""
    p = write_config()
    r = check(p, timeout=10)
    assert r.returncode == 0, r.stderr
