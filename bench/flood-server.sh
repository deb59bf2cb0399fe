# bench/flood-server.sh - sourced by the flood scripts: flood_setup DIR BUILD
# PORT WORKERS writes a dev certificate and DIR/t.ini (tetherd on the memory
# backend, c2s on PORT, direct TLS on PORT + 1, WORKERS workers) and imports
# the 40 bench users user0..user39 (passwords pass0..pass39).
flood_setup() {
	local d=$1 b=$2 p=$3 workers=$4 here
	here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	"$here/scripts/devcert.sh" "$d" 2>/dev/null
	cat > "$d/t.ini" <<EOT
[server]
domain = localhost
workers = $workers
log_level = warn
[c2s]
listen = 127.0.0.1:$p
tls_listen = 127.0.0.1:$((p + 1))
[tls]
cert = $d/dev-cert.pem
key = $d/dev-key.pem
dev_cert = true
[store]
backend = memory
path = $d/var
EOT
	for i in $(seq 0 39); do echo "user$i@localhost pass$i"; done |
		"$b/tetherctl" -c "$d/t.ini" import >/dev/null 2>&1
}
