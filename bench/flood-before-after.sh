#!/bin/bash
# bench/flood-before-after.sh BUILD PORT - one tetherd from BUILD (its tetherd,
# tetherctl and tether-bench) on the memory backend, 2 workers, 40 bench users;
# prints the msgs/s of a windowed (W=32) and an open-loop flood, 20 pairs x
# 5000. Run it alternately on two builds to compare them (bench/RESULTS.md).
set -eu
B=$1
P=$2
here=$(cd "$(dirname "$0")/.." && pwd)
D=$(mktemp -d /tmp/tether-flood.XXXXXX)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$D"' EXIT
"$here/scripts/devcert.sh" "$D" 2>/dev/null
cat > "$D/t.ini" <<EOT
[server]
domain = localhost
workers = 2
log_level = warn
[c2s]
listen = 127.0.0.1:$P
tls_listen = 127.0.0.1:$((P + 1))
[tls]
cert = $D/dev-cert.pem
key = $D/dev-key.pem
dev_cert = true
[store]
backend = memory
path = $D/var
EOT
for i in $(seq 0 39); do echo "user$i@localhost pass$i"; done | "$B/tetherctl" -c "$D/t.ini" import >/dev/null 2>&1
"$B/tetherd" -c "$D/t.ini" > "$D/log" 2>&1 &
PID=$!
sleep 0.5
rate() { "$B/tether-bench" --port "$P" --quiet flood 20 5000 --window "$1" 2>/dev/null |
	 grep -o '"msgs_per_s":[0-9.]*' | cut -d: -f2; }
W=$(rate 32)
O=$(rate 0)
echo "$B windowed $W open $O"
