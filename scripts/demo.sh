#!/usr/bin/env bash
# Builds socksgate and runs it on the embedded demo configuration (fresh Debian 12, as root):
# SOCKS5 with username/password on 127.0.0.1:1080 and [::1]:1080, and TLS (then SOCKS5 inside)
# on 127.0.0.1:1443 with a throwaway CA made now by certs/make-certs.sh (kept outside the
# repository, in $SOCKSGATE_DEMO_PKI). The demo user's password is printed at start.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target socksgate
pki=${SOCKSGATE_DEMO_PKI:-/var/tmp/socksgate-demo-pki}
if [[ ! -f $pki/server.pem ]]; then
  certs/make-certs.sh init "$pki"
fi
exec build/gateway/socksgate run --demo-pki "$pki" "$@"
