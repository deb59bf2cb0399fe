#!/bin/sh
# scripts/deps.sh - install the Debian packages tether needs to build, run and test.
#
# Each entry is "package" or "package>=floor". A package that is missing, or
# installed at a version below its floor, goes on one apt-get line: as root it
# is installed (apt-get install also upgrades an installed package to the
# candidate); otherwise the exact command is printed and the script fails.
#
# Floors are set where the code needs more than ../shared/fresh-image.txt (the
# packages of a fresh machine) has; every other package is absent from a fresh
# machine and gets Debian 12's candidate:
#   libexpat1-dev  2.5.0-1+deb12u2  XML_SetReparseDeferralEnabled (the fresh
#                                   image has +deb12u1, which lacks it)
#   redis-server   5:7.0            FUNCTION LOAD (Redis 7); Debian 12 has 7.0.15
#   libhiredis-dev (no floor)       0.14.1 is what Debian 12 has, and all the
#                                   code uses (redisFormatCommandArgv, redisReader)
# libmicrohttpd-dev (0.9.75), libsystemd-dev (sd_notify; the fresh image
# has only the runtime libsystemd0) and prometheus (promtool, for the
# /metrics test) are absent from the fresh image and get Debian 12's
# candidate, as does haproxy (2.6; the PROXY-protocol test puts a real one
# in front of tetherd, and the cluster tests will), and libstrophe-dev
# (0.12.2, profanity's XMPP library, a test client: test_libstrophe.py).
set -e
PKGS="build-essential clang pkg-config liburing-dev android-libboringssl-dev
libexpat1-dev>=2.5.0-1+deb12u2 libsodium-dev libidn-dev libinih-dev libmicrohttpd-dev libsystemd-dev
libhiredis-dev redis-server>=5:7.0
libcmocka-dev python3-pytest python3-slixmpp python3-aioxmpp libstrophe-dev openssl nodejs npm prometheus
haproxy"

# Prints "ok" when <pkg> is installed at <floor> or later (any version when
# <floor> is empty).
installed_ok() {
	st=$(dpkg-query -W -f='${Status}|${Version}' "$1" 2>/dev/null) || return 1
	case "$st" in *"ok installed|"*) ;; *) return 1 ;; esac
	[ -z "$2" ] && return 0
	dpkg --compare-versions "${st#*|}" ge "$2"
}

need=""
for e in $PKGS; do
	p=${e%%>=*}
	floor=""
	[ "$p" != "$e" ] && floor=${e#*>=}
	installed_ok "$p" "$floor" || need="$need $p"
done
# nodejs/npm may come from elsewhere (a toolchain image): a working node is enough.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
	need=$(echo "$need" | sed -e 's/ nodejs\b//' -e 's/ npm\b//')
fi
[ -z "$need" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "tether: packages missing or too old. Run as root:" >&2
	echo "  apt-get update && apt-get install -y$need" >&2
	exit 1
fi
echo "tether: installing or upgrading$need" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q $need
