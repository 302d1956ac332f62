#!/usr/bin/env bash
# Builds socksgate and runs it on the embedded demo configuration (fresh Debian 12, as root):
# SOCKS5 with username/password on 127.0.0.1:1080 and [::1]:1080; the demo user's password
# is printed at start.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target socksgate
exec build/gateway/socksgate run "$@"
