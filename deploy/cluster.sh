#!/bin/bash
# deploy/cluster.sh - a tether cluster on loopback: redis-server (AOF), three
# tetherd nodes sharing it, and HAProxy (TCP) in front of their STARTTLS and
# direct-TLS ports with health checks on /readyz.
#
#   deploy/cluster.sh up      start everything (build first: make), print the ports
#   deploy/cluster.sh down    stop what `up` started (by the pid files it wrote)
#   deploy/cluster.sh status  which of those processes still run
#
# Everything lives under $TETHER_CLUSTER_DIR (default build/cluster): configs,
# logs, pid files, Redis's AOF, the shared token key. Only processes whose pid
# files are there are ever stopped. Ports: $TETHER_CLUSTER_BASE (default
# 25200) + offsets, printed by `up`.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
dir=${TETHER_CLUSTER_DIR:-$here/build/cluster}
base=${TETHER_CLUSTER_BASE:-25200}
bin=${TETHER_BUILD:-$here/build}
nodes="a b c"

redis_port=$((base + 79))
lb_starttls=$((base + 22))
lb_tls=$((base + 23))

# node index (0, 1, 2) -> its ports: STARTTLS, direct TLS, admin
node_port() { echo $((base + 100 + 10 * $1 + $2)); }

die() { echo "cluster: $*" >&2; exit 1; }

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() { # host port seconds [pidfile: give up as soon as it is not running]
	local tries=0
	while ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
		[ -z "${4:-}" ] || pid_alive "$4" || return 1
		tries=$((tries + 1))
		[ "$tries" -gt $(($3 * 10)) ] && return 1
		sleep 0.1
	done
}

start_redis() {
	command -v redis-server >/dev/null || die "redis-server not found (scripts/deps.sh installs it)"
	mkdir -p "$dir/redis"
	cat > "$dir/redis/redis.conf" <<EOF
port $redis_port
bind 127.0.0.1
dir $dir/redis
appendonly yes
appendfsync everysec
save ""
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
EOF
	redis-server "$dir/redis/redis.conf"
	wait_port 127.0.0.1 "$redis_port" 10 || die "redis-server did not come up (see $dir/redis.log)"
}

write_node_config() { # name index
	local n=$1 i=$2
	cat > "$dir/$n.ini" <<EOF
; $dir/$n.ini - node $n, written by deploy/cluster.sh
[server]
domain = localhost
workers = 1
log_level = info

[c2s]
listen = 127.0.0.1:$(node_port "$i" 0)
tls_listen = 127.0.0.1:$(node_port "$i" 1)

[tls]
cert = $dir/cert.pem
key = $dir/key.pem
dev_cert = true

[store]
backend = redis
redis = 127.0.0.1:$redis_port
path = $dir/$n

[tokens]
key_file = $dir/token.key

[cluster]
node = $n

[admin]
listen = 127.0.0.1:$(node_port "$i" 2)
EOF
}

start_nodes() {
	[ -x "$bin/tetherd" ] || die "$bin/tetherd not built (run make)"
	"$here/scripts/devcert.sh" "$dir" 2>/dev/null
	[ -s "$dir/cert.pem" ] || { mv "$dir/dev-cert.pem" "$dir/cert.pem"; mv "$dir/dev-key.pem" "$dir/key.pem"; }
	# One after the other: the first node creates the shared token key
	# (token.key) and records its check value in Redis; the others read it.
	i=0
	for n in $nodes; do
		mkdir -p "$dir/$n"
		write_node_config "$n" "$i"
		"$bin/tetherd" -c "$dir/$n.ini" > "$dir/$n.log" 2>&1 &
		echo $! > "$dir/$n.pid"
		wait_port 127.0.0.1 "$(node_port "$i" 0)" 30 "$dir/$n.pid" || die "node $n did not come up (see $dir/$n.log)"
		i=$((i + 1))
	done
}

start_haproxy() {
	command -v haproxy >/dev/null || die "haproxy not found (scripts/deps.sh installs it)"
	{
		cat <<EOF
global
    maxconn 4000
defaults
    mode tcp
    option redispatch 1
    retries 2
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend starttls
    bind 127.0.0.1:$lb_starttls
    default_backend nodes_starttls
frontend direct_tls
    bind 127.0.0.1:$lb_tls
    default_backend nodes_tls
EOF
		for kind in starttls tls; do
			echo "backend nodes_$kind"
			echo "    balance leastconn"
			echo "    option httpchk GET /readyz"
			i=0
			for n in $nodes; do
				off=0; [ "$kind" = tls ] && off=1
				echo "    server $n 127.0.0.1:$(node_port "$i" $off) check port $(node_port "$i" 2) inter 500 fall 2 rise 1"
				i=$((i + 1))
			done
		done
	} > "$dir/haproxy.cfg"
	haproxy -q -D -f "$dir/haproxy.cfg" -p "$dir/haproxy.pid"
	wait_port 127.0.0.1 "$lb_starttls" 10 || die "haproxy did not come up"
}

up() {
	mkdir -p "$dir"
	for p in redis a b c haproxy; do
		pid_alive "$dir/$p.pid" && die "already up ($p runs): deploy/cluster.sh down first"
	done
	# A step that fails (die) leaves nothing running: what started goes.
	trap 'echo "cluster: stopping what started" >&2; down >/dev/null' EXIT
	start_redis
	start_nodes
	start_haproxy
	trap - EXIT
	echo "tether cluster up (files in $dir):"
	echo "  clients (HAProxy): STARTTLS 127.0.0.1:$lb_starttls, direct TLS 127.0.0.1:$lb_tls"
	i=0
	for n in $nodes; do
		echo "  node $n: STARTTLS $(node_port "$i" 0), direct TLS $(node_port "$i" 1), admin http://127.0.0.1:$(node_port "$i" 2)/metrics"
		i=$((i + 1))
	done
	echo "  redis: 127.0.0.1:$redis_port (AOF in $dir/redis)"
	echo "  add a user: $bin/tetherctl -c $dir/a.ini adduser alice@localhost"
}

stop_pid() { # pidfile
	pid_alive "$1" || { rm -f "$1"; return 0; }
	local pid tries=0
	pid=$(cat "$1")
	kill "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$1"
}

down() {
	for p in haproxy a b c redis; do
		stop_pid "$dir/$p.pid"
	done
	echo "tether cluster down"
}

status() {
	for p in redis a b c haproxy; do
		if pid_alive "$dir/$p.pid"; then echo "$p: running ($(cat "$dir/$p.pid"))"; else echo "$p: stopped"; fi
	done
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) echo "usage: deploy/cluster.sh up|down|status" >&2; exit 2 ;;
esac
