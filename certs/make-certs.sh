#!/usr/bin/env bash
# A throwaway certificate authority for socksgate's TLS listeners, with `openssl` only.
# For demos and tests: nothing it creates belongs in the repository (keys are private).
#
#   certs/make-certs.sh init DIR [--name HOST]...
#       a CA (DIR/ca.pem, DIR/ca.key), a server certificate (DIR/server.pem, DIR/server.key)
#       for localhost, 127.0.0.1, ::1, this host's name and every --name, and an empty CRL
#       (DIR/crl.pem). Prints the server key's SHA-256 pin (what `socksgate agent` can pin).
#   certs/make-certs.sh user DIR NAME [--email ADDR] [--expired] [--server-eku] [--days N]
#       a client certificate DIR/users/NAME.pem + NAME.key: CN=NAME, email SAN ADDR (default
#       NAME@example.test), EKU clientAuth (--server-eku: serverAuth only, which servers must
#       refuse for clients), valid N days (default 30) or already expired (--expired).
#   certs/make-certs.sh revoke DIR NAME
#       revokes NAME's certificate and rewrites DIR/crl.pem.
#   certs/make-certs.sh intermediate DIR NAME
#       an intermediate CA DIR/NAME (CN=NAME, signed by DIR's CA, pathlen 0) that `user` and
#       `revoke` accept as a DIR of their own; its users' NAME.pem carry the intermediate after
#       the leaf (the chain a client sends), and DIR/NAME/crl-bundle.pem holds both CAs' CRLs
#       (what a listener that checks revocation at every level needs).
#
# Keys are EC P-256 (fast handshakes); files are created 0600 where they are private.
set -euo pipefail
umask 077

die() { echo "make-certs: $*" >&2; exit 2; }
[[ $# -ge 2 ]] || die "usage: make-certs.sh init|user|revoke DIR ..."
cmd=$1
dir=$2
shift 2

ca_conf() {
  cat >"$dir/ca.cnf" <<EOF
[ ca ]
default_ca = local_ca
[ local_ca ]
dir = $dir
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
crlnumber = $dir/crlnumber
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_days = 30
default_md = sha256
default_crl_days = 30
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
[ client_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = \${ENV::SAN}
[ server_only_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = \${ENV::SAN}
[ sub_ca_ext ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = \${ENV::SAN}
EOF
}

# sign NAME EXT SAN [openssl ca date options...]: key + CSR + certificate under $out.
sign() {
  local name=$1 ext=$2 san=$3 out=$4
  shift 4
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out.key" 2>/dev/null
  openssl req -new -key "$out.key" -subj "/CN=$name" -out "$out.csr" 2>/dev/null
  SAN=$san openssl ca -batch -notext -config "$dir/ca.cnf" -extensions "$ext" \
    -in "$out.csr" -out "$out.pem" "$@" 2>/dev/null || die "cannot sign $name"
  rm -f "$out.csr"
  chmod 644 "$out.pem"
}

gencrl() {
  SAN=DNS:unused openssl ca -batch -config "$dir/ca.cnf" -gencrl -out "$dir/crl.pem" 2>/dev/null ||
    die "cannot write the CRL"
  chmod 644 "$dir/crl.pem"
}

case "$cmd" in
  init)
    names=(localhost "$(hostname)")
    while [[ $# -gt 0 ]]; do
      case $1 in
        --name) names+=("$2"); shift 2 ;;
        *) die "init: unknown option $1" ;;
      esac
    done
    mkdir -p "$dir/issued" "$dir/users"
    dir=$(cd "$dir" && pwd)
    : >"$dir/index.txt"
    echo 1000 >"$dir/serial"
    echo 1000 >"$dir/crlnumber"
    ca_conf
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=socksgate throwaway CA $(date +%s)" \
      -days 365 -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.pem" 2>/dev/null
    chmod 644 "$dir/ca.pem"
    san="IP:127.0.0.1,IP:::1"
    for n in "${names[@]}"; do
      if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+=",IP:$n"; else san+=",DNS:$n"; fi
    done
    sign localhost server_ext "$san" "$dir/server" -days 365
    gencrl
    pin=$(openssl x509 -in "$dir/server.pem" -pubkey -noout |
      openssl pkey -pubin -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)
    echo "$pin" >"$dir/server.pin"
    chmod 644 "$dir/server.pin"
    echo "make-certs: CA, server certificate and CRL in $dir (server key pin sha256:$pin)"
    ;;
  user)
    [[ $# -ge 1 ]] || die "user: missing NAME"
    [[ -f $dir/ca.cnf ]] || die "user: run 'init $dir' first"
    dir=$(cd "$dir" && pwd)
    name=$1
    shift
    email="$name@example.test" ext=client_ext dates=(-days 30)
    while [[ $# -gt 0 ]]; do
      case $1 in
        --email) email=$2; shift 2 ;;
        --expired) dates=(-startdate 20200101000000Z -enddate 20200102000000Z); shift ;;
        --server-eku) ext=server_only_ext; shift ;;
        --days) dates=(-days "$2"); shift 2 ;;
        *) die "user: unknown option $1" ;;
      esac
    done
    sign "$name" "$ext" "email:$email" "$dir/users/$name" "${dates[@]}"
    # Issued by an intermediate: the client sends the intermediate along.
    if [[ -f $dir/chain.pem ]]; then cat "$dir/chain.pem" >>"$dir/users/$name.pem"; fi
    echo "make-certs: $dir/users/$name.pem"
    ;;
  intermediate)
    [[ $# -ge 1 ]] || die "intermediate: missing NAME"
    [[ -f $dir/ca.cnf ]] || die "intermediate: run 'init $dir' first"
    dir=$(cd "$dir" && pwd)
    name=$1
    [[ $name =~ ^[A-Za-z0-9_-]+$ ]] || die "intermediate: NAME must be letters, digits, - or _"
    parent=$dir
    sub=$dir/$name
    mkdir -p "$sub/issued" "$sub/users"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$sub/ca.key" 2>/dev/null
    openssl req -new -key "$sub/ca.key" -subj "/CN=$name" -out "$sub/ca.csr" 2>/dev/null
    SAN=DNS:unused openssl ca -batch -notext -config "$parent/ca.cnf" -extensions sub_ca_ext \
      -in "$sub/ca.csr" -out "$sub/ca.pem" -days 365 2>/dev/null || die "cannot sign $name"
    rm -f "$sub/ca.csr"
    chmod 644 "$sub/ca.pem"
    cp "$sub/ca.pem" "$sub/chain.pem"
    : >"$sub/index.txt"
    echo 2000 >"$sub/serial"
    echo 2000 >"$sub/crlnumber"
    dir=$sub
    ca_conf
    gencrl
    cat "$parent/crl.pem" "$sub/crl.pem" >"$sub/crl-bundle.pem"
    chmod 644 "$sub/crl-bundle.pem"
    echo "make-certs: intermediate CA $sub (users: make-certs.sh user $sub NAME)"
    ;;
  revoke)
    [[ $# -ge 1 ]] || die "revoke: missing NAME"
    dir=$(cd "$dir" && pwd)
    SAN=DNS:unused openssl ca -batch -config "$dir/ca.cnf" -revoke "$dir/users/$1.pem" 2>/dev/null ||
      die "cannot revoke $1"
    gencrl
    echo "make-certs: revoked $1; CRL rewritten"
    ;;
  *) die "unknown command $cmd (init, user, revoke, intermediate)" ;;
esac
