#!/bin/bash
# bench/flood-before-after.sh BUILD PORT - one tetherd from BUILD (its tetherd,
# tetherctl and tether-bench) on the memory backend, 2 workers, 40 bench users;
# prints the msgs/s of a windowed (W=32) and an open-loop flood, 20 pairs x
# 5000. Run it alternately on two builds to compare them (bench/RESULTS.md).
set -eu
B=$1
P=$2
D=$(mktemp -d /tmp/tether-flood.XXXXXX)
PID=
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$D"' EXIT
. "$(dirname "$0")/flood-server.sh"
flood_setup "$D" "$B" "$P" 2
"$B/tetherd" -c "$D/t.ini" > "$D/log" 2>&1 &
PID=$!
sleep 0.5
rate() { "$B/tether-bench" --port "$P" --quiet flood 20 5000 --window "$1" 2>/dev/null |
	 grep -o '"msgs_per_s":[0-9.]*' | cut -d: -f2; }
W=$(rate 32)
O=$(rate 0)
echo "$B windowed $W open $O"
