#!/bin/bash
# bench/callgrind-flood.sh BUILD PORT - instructions per message of tetherd
# from BUILD under callgrind: one worker, memory backend, 40 bench users, an
# open-loop flood of 20 pairs x 200 and then a fresh server with 20 x 2000
# messages, so that the logins cancel out:
#   Ir/msg = (Ir(20 x 2000) - Ir(20 x 200)) / 36000.
# Instruction counts hold on a noisy machine where wall time does not
# (bench/RESULTS.md). One worker: under valgrind a wake-up between two
# workers' rings can be lost and the flood stall.
set -eu
B=$1
P=$2
D=$(mktemp -d /tmp/tether-cg.XXXXXX)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$D"' EXIT
. "$(dirname "$0")/flood-server.sh"
flood_setup "$D" "$B" "$P" 1

# Total Ir of one server life that carried a flood of 20 x <messages>.
ir_of_flood() {
	valgrind --tool=callgrind --callgrind-out-file="$D/cg.$1" "$B/tetherd" -c "$D/t.ini" > "$D/log.$1" 2>&1 &
	PID=$!
	for _ in $(seq 1 100); do
		grep -q ': domain ' "$D/log.$1" && break
		sleep 0.2
	done
	"$B/tether-bench" --port "$P" --quiet --timeout 120 flood 20 "$1" --window 0 > "$D/bench.$1" 2>&1
	grep -o '"lost":[0-9]*' "$D/bench.$1" | grep -qx '"lost":0' || { echo "flood of $1 lost messages" >&2; exit 1; }
	kill -TERM "$PID"
	wait "$PID" || true
	PID=
	grep -m1 '^summary:' "$D/cg.$1" | awk '{print $2}'
}
small=$(ir_of_flood 200)
large=$(ir_of_flood 2000)
echo "$B Ir(20x200) $small Ir(20x2000) $large Ir/msg $(( (large - small) / 36000 ))"
