#!/bin/sh
# scripts/devcert.sh - make a self-signed development certificate for localhost
# in var/dev-cert.pem / var/dev-key.pem, unless one is already there.
set -e
dir="${1:-var}"
mkdir -p "$dir"
[ -s "$dir/dev-cert.pem" ] && [ -s "$dir/dev-key.pem" ] && exit 0
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout "$dir/dev-key.pem" -out "$dir/dev-cert.pem" -days 365 \
	-subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" 2>/dev/null
chmod 600 "$dir/dev-key.pem"
echo "tether: created a self-signed development certificate in $dir/" >&2
