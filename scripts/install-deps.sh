#!/usr/bin/env bash
# Installs every Debian 12 package socksgate needs to build, test and benchmark.
# Idempotent; runs as root; never prompts (krb5 packages otherwise ask for a realm).
set -euo pipefail

BUILD=(cmake g++ make pkg-config libasio-dev libssl-dev libkrb5-dev libpam0g-dev libcrypt-dev
       nlohmann-json3-dev libhowardhinnant-date-dev libgtest-dev libgmock-dev libbenchmark-dev)
FUZZ=(clang-14 libclang-rt-14-dev)
TEST=(python3 python3-pytest python3-socks python3-jsonschema curl ncat openssl whois apache2-utils
      procps iproute2 stunnel4 libpam-wrapper libpamtest0-dev libpam-modules
      krb5-kdc krb5-admin-server krb5-user python3-gssapi)
PEERS=(dante-server dante-client)

want=("${BUILD[@]}" "${FUZZ[@]}" "${TEST[@]}" "${PEERS[@]}")
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's danted package tries to start a system service; we only use its binary.
if command -v service >/dev/null && pgrep -x danted >/dev/null 2>&1; then :; fi
echo "install-deps: all packages present"
