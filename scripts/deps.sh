#!/bin/sh
# scripts/deps.sh - install the Debian packages tether needs to build, run and test.
# As root: apt-get installs what is missing. Otherwise: prints the apt-get line and fails.
set -e
PKGS="build-essential clang pkg-config liburing-dev android-libboringssl-dev libexpat1-dev
libsodium-dev libidn-dev libinih-dev libcmocka-dev python3-pytest python3-slixmpp
openssl nodejs npm"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
# nodejs/npm may come from elsewhere (a toolchain image): a working node is enough.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
	missing=$(echo "$missing" | sed -e 's/ nodejs//' -e 's/ npm//')
fi
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "tether: missing packages. Run as root:" >&2
	echo "  apt-get update && apt-get install -y$missing" >&2
	exit 1
fi
echo "tether: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q $missing
