#!/usr/bin/env bash
# scripts/bench-gss.sh: SOCKS5 with GSS-API (RFC 1961, Kerberos) per-message protection —
# integrity and confidentiality — next to socksgate's own TLS listener, ONE gateway measured in
# one run on loopback. Prints a Markdown table (medians of BENCH_REPS runs) with the ratios
# confidentiality/TLS and integrity/TLS, plus `openssl speed` figures for orientation.
#
# Runs as root on Debian 12 (socksgate drops to nobody). Needs: cmake, g++, MIT krb5
# (krb5-kdc, krb5-admin-server, krb5-user: kdb5_util, kadmin.local, krb5kdc, kinit, kvno,
# klist), openssl, python3. It creates a throwaway realm KRBTEST.COM in its temp dir (KDC on a
# free 127.0.0.1 port, as tests/integration/krb5test.py does), kinits alice into a temp ccache,
# and starts one socksgate with a plain GSS listener ("protection": "integrity": a client asking
# for level 1 gets integrity, one asking for 2 gets confidentiality) and a TLS listener (method
# none, TLS_AES_128_GCM_SHA256 chosen by tlsbench). Targets come from `socksbench serve`.
# Throughput = download (target -> client) unless "upload".
#
# Client crypto: gssbench computes its Wrap tokens with socksgate's own RFC 4121 code
# (crypto/gss_cfx.cc, what the `socksgate agent` runs) for the main columns; one extra row per
# level repeats the 1-stream download with the client on MIT's gss_wrap/gss_unwrap (a Linux
# client with stock libgssapi_krb5), whose built-in crypto is then the bottleneck.
#
# Knobs: BENCH_REPS=3, BENCH_TP_SECONDS=3, BENCH_SETUP_SECONDS=2, BENCH_SETUP_CONCURRENCY=8,
#        BENCH_BUILD_DIR=build-bench, BENCH_KEEP=1 (keep the temp dir), BENCH_SKIP_BUILD=1,
#        BENCH_PERF=1 (perf profile of the gateway in a 1-stream download per GSS level and TLS),
#        BENCH_KRB_ENCTYPES="aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96" (the client's
#        ticket/session-key enctypes, first preferred: aes128-cts-hmac-sha1-96 alone gives the
#        AES-128 key size the TLS path's TLS_AES_128_GCM_SHA256 uses).
set -euo pipefail
{
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build-bench}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
REPS=${BENCH_REPS:-3}
TP_SECONDS=${BENCH_TP_SECONDS:-3}
SETUP_SECONDS=${BENCH_SETUP_SECONDS:-2}
SETUP_C=${BENCH_SETUP_CONCURRENCY:-8}
KRB_ENCTYPES=${BENCH_KRB_ENCTYPES:-aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96}

log() { printf '[bench-gss %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root"
for t in cmake openssl python3 kinit kvno klist; do command -v "$t" >/dev/null || die "missing $t"; done
for t in /usr/sbin/kdb5_util /usr/sbin/kadmin.local /usr/sbin/krb5kdc; do
  [[ -x $t ]] || die "missing $t (krb5-kdc, krb5-admin-server)"
done
ulimit -n "$(ulimit -Hn)"

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "building (Release) in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSOCKSGATE_BUILD_TESTS=OFF >/dev/null
  cmake --build "$BUILD" -j "$(nproc)" --target socksgate socksbench tlsbench gssbench >/dev/null
fi
SG=$BUILD/gateway/socksgate
SB=$BUILD/bench/socksbench
TB=$BUILD/bench/tlsbench
GB=$BUILD/bench/gssbench

WORK=$(mktemp -d /tmp/socksgate-bench-gss.XXXXXX)
# The gateway drops to nobody: it must still read krb5.conf and write its replay cache here.
chmod 755 "$WORK"
declare -a PIDS=()
cleanup() {
  local rc=$? p
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {  # wait_port PORT PID
  local _i
  for _i in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
random_pw() { python3 -c 'import secrets; print(secrets.token_urlsafe(18))'; }

log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- A throwaway MIT realm on loopback (mirrors tests/integration/krb5test.py) -------------
REALM=KRBTEST.COM
KRB=$WORK/krb
mkdir -p "$KRB/rcache"
chmod 755 "$KRB"
chown nobody:nogroup "$KRB/rcache"
for k in $(env | sed -n 's/^\(KRB5[A-Z_]*\)=.*/\1/p'); do unset "$k"; done
export KRB5_CONFIG=$KRB/krb5.conf KRB5_KDC_PROFILE=$KRB/kdc.conf KRB5RCACHEDIR=$KRB/rcache
export KRB5CCNAME=FILE:$KRB/ccache.alice KRB5_KTNAME=FILE:$KRB/service.keytab
ALICE_PW=$(random_pw)
MASTER_PW=$(random_pw)
write_krb_conf() {  # write_krb_conf KDC_PORT
  cat >"$KRB/krb5.conf" <<EOF
[libdefaults]
  default_realm = $REALM
  dns_lookup_kdc = false
  dns_lookup_realm = false
  dns_canonicalize_hostname = false
  rdns = false
  ignore_acceptor_hostname = false
  udp_preference_limit = 1
  default_tkt_enctypes = $KRB_ENCTYPES
  default_tgs_enctypes = $KRB_ENCTYPES
  permitted_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96
[realms]
  $REALM = {
    kdc = 127.0.0.1:$1
  }
[domain_realm]
  localhost = $REALM
EOF
  cat >"$KRB/kdc.conf" <<EOF
[kdcdefaults]
  kdc_listen = 127.0.0.1:$1
  kdc_tcp_listen = 127.0.0.1:$1
[realms]
  $REALM = {
    database_name = $KRB/principal
    key_stash_file = $KRB/stash
    acl_file = $KRB/kadm5.acl
    kdc_listen = 127.0.0.1:$1
    kdc_tcp_listen = 127.0.0.1:$1
    max_life = 1d
    max_renewable_life = 0
    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
  }
[logging]
  kdc = FILE:$KRB/kdc.log
  admin_server = FILE:$KRB/kadmin.log
  default = FILE:$KRB/krb5lib.log
EOF
  : >"$KRB/kadm5.acl"
  chmod 644 "$KRB/krb5.conf"
}
KDC_PID=
for attempt in $(seq 10); do
  KDC_PORT=$(free_port)
  write_krb_conf "$KDC_PORT"
  if [[ ! -e $KRB/principal ]]; then
    (cd "$KRB" &&
      /usr/sbin/kdb5_util -r "$REALM" create -s -P "$MASTER_PW" >"$KRB/setup.log" 2>&1 &&
      /usr/sbin/kadmin.local -r "$REALM" -q "addprinc -pw $ALICE_PW alice" >>"$KRB/setup.log" 2>&1 &&
      /usr/sbin/kadmin.local -r "$REALM" -q "addprinc -randkey rcmd/localhost" >>"$KRB/setup.log" 2>&1 &&
      /usr/sbin/kadmin.local -r "$REALM" -q "ktadd -k $KRB/service.keytab rcmd/localhost" \
        >>"$KRB/setup.log" 2>&1) || die "realm setup failed: $(cat "$KRB/setup.log")"
  fi
  (cd "$KRB" && exec /usr/sbin/krb5kdc -n -r "$REALM") </dev/null >"$KRB/krb5kdc.stderr" 2>&1 &
  KDC_PID=$!
  PIDS+=("$KDC_PID")
  started=0
  for _ in $(seq 300); do
    kill -0 "$KDC_PID" 2>/dev/null || break
    if grep -q "commencing operation" "$KRB/kdc.log" 2>/dev/null &&
      (exec 3<>"/dev/tcp/127.0.0.1/$KDC_PORT") 2>/dev/null; then
      started=1
      break
    fi
    sleep 0.1
  done
  [[ $started == 1 ]] && break
  log "krb5kdc did not start on port $KDC_PORT (attempt $attempt), retrying"
  kill -KILL "$KDC_PID" 2>/dev/null || true
  wait "$KDC_PID" 2>/dev/null || true
  KDC_PID=
done
[[ -n $KDC_PID ]] || die "krb5kdc did not start"
echo "$ALICE_PW" | kinit "alice@$REALM" >"$KRB/kinit.log" 2>&1 || die "kinit: $(cat "$KRB/kinit.log")"
# The service ticket now, so that gssbench's copy of the cache already holds it.
kvno "rcmd/localhost@$REALM" >/dev/null || die "kvno rcmd/localhost failed"
ENCTYPES=$(klist -e | awk '/rcmd\/localhost/ {getline; sub(/^[ \t]*/, ""); print; exit}')
log "service ticket: $ENCTYPES"

"$ROOT/certs/make-certs.sh" init "$WORK/pki" >/dev/null
CA=$WORK/pki/ca.pem

# ---- Targets ------------------------------------------------------------------------------
"$SB" serve --bind 127.0.0.1 >"$WORK/serve.json" 2>"$WORK/serve.err" &
PIDS+=($!)
for _ in $(seq 50); do [[ -s $WORK/serve.json ]] && break; sleep 0.1; done
read -r SINK SOURCE ECHO < <(python3 -c '
import json,sys; d=json.loads(open(sys.argv[1]).readline()); print(d["sink"], d["source"], d["echo"])' "$WORK/serve.json")

# ---- One socksgate: a plain GSS listener and a TLS listener ---------------------------------
cat >"$WORK/sg.json" <<EOF
{
  "listeners": [
    { "name": "gss", "address": "127.0.0.1", "port": 0, "methods": ["gssapi"] },
    { "name": "tls", "address": "127.0.0.1", "port": 0, "methods": ["none"],
      "tls": { "cert": "$WORK/pki/server.pem", "key": "$WORK/pki/server.key" } }
  ],
  "auth": { "gssapi": { "keytab": "FILE:$KRB/service.keytab", "principal": "rcmd/localhost",
                        "realms": ["$REALM"], "protection": "integrity" } },
  "policy": { "inline": { "rules": [ { "id": "bench", "action": "pass", "to": ["127.0.0.0/8"] } ] } },
  "audit": { "file": "$WORK/audit.jsonl" }
}
EOF
"$SG" run --config "$WORK/sg.json" --ready-file "$WORK/sg.ready" >"$WORK/sg.log" 2>&1 &
SG_PID=$!
PIDS+=("$SG_PID")
for _ in $(seq 100); do [[ -s $WORK/sg.ready ]] && break; sleep 0.1; done
[[ -s $WORK/sg.ready ]] || die "socksgate did not start: $(cat "$WORK/sg.log")"
read -r GSS_PORT TLS_PORT < <(python3 -c '
import json,sys; l={x["name"]: x["port"] for x in json.load(open(sys.argv[1]))["listeners"]}
print(l["gss"], l["tls"])' "$WORK/sg.ready")

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
run_gss() {  # run_gss LEVEL LABEL gssbench-args...   (GSS_CRYPTO=mit|openssl, default openssl)
  local level=$1 label=$2
  shift 2
  "$GB" "$@" --proxy "127.0.0.1:$GSS_PORT" --level "$level" --pids "$SG_PID" \
    --crypto "${GSS_CRYPTO:-openssl}" --label "$level|$label" >>"$RESULTS" ||
    log "run failed: $level $label"
}
run_tls() {  # run_tls LABEL tlsbench-args...
  local label=$1
  shift
  "$TB" "$@" --proxy "127.0.0.1:$TLS_PORT" --ca "$CA" --pids "$SG_PID" \
    --label "tls|$label" >>"$RESULTS" || log "run failed: tls $label"
}

speed() {  # speed ALGO-ARGS... -> GiB/s, one core, 16 KiB blocks
  openssl speed "$@" -seconds 2 -bytes 16384 2>/dev/null |
    awk 'END {v=$NF; sub(/k$/, "", v); printf "%.3f", v * 1000 / 1073741824}'
}
log "openssl speed (one core, 16 KiB blocks)"
GCM=$(speed -evp aes-128-gcm)
CBC=$(speed -evp aes-256-cbc)
SHA1=$(speed -evp sha1)
# The GSS path's own ceiling: Wrap tokens between two in-process contexts, made and verified by
# MIT's gss_wrap/gss_unwrap and by socksgate's RFC 4121 code on OpenSSL.
log "gssbench speed (per-message crypto, one core, no network)"
: >"$WORK/speed.jsonl"
for crypto in mit openssl; do
  for lvl in integrity confidentiality; do
    "$GB" speed --level "$lvl" --crypto "$crypto" --duration 2 --label "speed|$lvl" \
      >>"$WORK/speed.jsonl" || log "gssbench speed failed: $lvl $crypto"
  done
done

for rep in $(seq "$REPS"); do
  for t in integrity confidentiality tls; do
    log "rep $rep: $t"
    if [[ $t == tls ]]; then
      run_tls tp1 throughput --port "$SOURCE" --streams 1 --duration "$TP_SECONDS"
      run_tls tp4 throughput --port "$SOURCE" --streams 4 --duration "$TP_SECONDS"
      run_tls up1 throughput --port "$SINK" --streams 1 --duration "$TP_SECONDS" --direction upload
      run_tls setup setup --port "$ECHO" --concurrency "$SETUP_C" --duration "$SETUP_SECONDS"
    else
      run_gss "$t" tp1 throughput --port "$SOURCE" --streams 1 --duration "$TP_SECONDS"
      run_gss "$t" tp4 throughput --port "$SOURCE" --streams 4 --duration "$TP_SECONDS"
      run_gss "$t" up1 throughput --port "$SINK" --streams 1 --duration "$TP_SECONDS" --direction upload
      run_gss "$t" setup setup --port "$ECHO" --concurrency "$SETUP_C" --duration "$SETUP_SECONDS"
      GSS_CRYPTO=mit run_gss "$t" mit-tp1 throughput --port "$SOURCE" --streams 1 \
        --duration "$TP_SECONDS"
    fi
  done
done
# BENCH_PERF=1: where the gateway spends its CPU in a 1-stream download at each GSS level
# (perf record of the gateway's threads; report in the temp dir, top lines on stderr).
if [[ ${BENCH_PERF:-0} == 1 ]] && command -v perf >/dev/null; then
  for lvl in integrity confidentiality tls; do
    log "perf: gateway, $lvl download, 1 stream"
    perf record -q -g -o "$WORK/perf.$lvl.data" -p "$SG_PID" -- sleep "$TP_SECONDS" \
      >/dev/null 2>&1 &
    PERF_PID=$!
    if [[ $lvl == tls ]]; then
      "$TB" throughput --proxy "127.0.0.1:$TLS_PORT" --ca "$CA" --port "$SOURCE" \
        --duration "$TP_SECONDS" --label "perf" >/dev/null || true
    else
      "$GB" throughput --proxy "127.0.0.1:$GSS_PORT" --level "$lvl" --port "$SOURCE" \
        --duration "$TP_SECONDS" --label "perf" >/dev/null || true
    fi
    wait "$PERF_PID" || true
    perf report -q -i "$WORK/perf.$lvl.data" --no-children --sort dso --stdio -g none \
      2>/dev/null | grep -v '^$' >"$WORK/perf.$lvl.txt" || true
    head -6 "$WORK/perf.$lvl.txt" | cut -c1-60 >&2
    # And the top symbols (kernel ones included), for the record in the temp dir.
    perf report -q -i "$WORK/perf.$lvl.data" --no-children --sort dso,symbol --stdio -g none \
      2>/dev/null | grep -v '^$' | head -40 >"$WORK/perf.$lvl.symbols.txt" || true
  done
fi
log "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
# The gateway's own word on what each session got (integrity runs must not be raised).
log "sessions per method/protection (audit): $(python3 -c '
import collections, json, sys
c = collections.Counter()
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r.get("event") == "session_end":
        c[r.get("method", "?") + "/" + str(r.get("protection", "-"))] += 1
print(dict(c))' "$WORK/audit.jsonl")"

python3 - "$RESULTS" "$REPS" "$(nproc)" "$SETUP_C" "$GCM" "$CBC" "$SHA1" "$ENCTYPES" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$WORK/speed.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
reps, ncpu, setup_c = sys.argv[2], sys.argv[3], sys.argv[4]
gcm, cbc, sha1 = (float(x or "nan") for x in sys.argv[5:8])
enctypes, load = sys.argv[8], sys.argv[9]
by = {}
for r in rows:
    if "error" in r:
        print("error:", r["label"], r["error"], file=sys.stderr)
        continue
    by.setdefault(r["label"], []).append(r)
def med(label, key):
    v = [r[key] for r in by.get(label, []) if r.get(key) is not None]
    return statistics.median(v) if v else float("nan")
def ratio(a, b):
    return a / b if b and b == b else float("nan")
print(f"GSS-API benchmark: one socksgate, plain GSS listener (RFC 1961, MIT krb5 contexts, "
      f"RFC 4121 Wrap tokens on OpenSSL) vs its TLS listener, loopback, {ncpu} vCPUs, median of "
      f"{reps} runs; Kerberos {enctypes}; TLS 1.3 TLS_AES_128_GCM_SHA256, SOCKS5 method none; "
      f"client Wrap tokens from socksgate's RFC 4121 code unless the row says MIT; "
      f"load average at the end {load}")
print()
print("| figure | GSS integrity | GSS confidentiality | TLS | conf/TLS | integ/TLS |")
print("|---|---|---|---|---|---|")
for lab, key, name, fmt in [
        ("tp1", "gib_per_s", "download, 1 stream (GiB/s)", "{:.3f}"),
        ("tp4", "gib_per_s", "download, 4 streams (GiB/s)", "{:.3f}"),
        ("up1", "gib_per_s", "upload, 1 stream (GiB/s)", "{:.3f}"),
        ("tp1", "cpu_s_per_gib", "gateway CPU s per GiB, 1 stream", "{:.2f}"),
        ("tp4", "cpu_s_per_gib", "gateway CPU s per GiB, 4 streams", "{:.2f}"),
        ("tp1", "client_cpu_s", "client CPU s, 1-stream run", "{:.2f}"),
        ("mit-tp1", "gib_per_s", "download, 1 stream, client on MIT gss_wrap (GiB/s)", "{:.3f}"),
        ("setup", "sessions_per_s", f"sessions/s, full sign-on, {setup_c} clients", "{:.0f}"),
        ("setup", "proxy_cpu_us_per_session", "gateway CPU µs per session", "{:.0f}"),
        ("setup", "p50_us", "session p50 latency µs", "{:.0f}")]:
    i, c, t = med("integrity|" + lab, key), med("confidentiality|" + lab, key), med("tls|" + lab, key)
    print(f"| {name} | {fmt.format(i)} | {fmt.format(c)} | {fmt.format(t)} | "
          f"{ratio(c, t):.2f}× | {ratio(i, t):.2f}× |")
print()
c1, t1 = med("confidentiality|tp1", "gib_per_s"), med("tls|tp1", "gib_per_s")
c4, t4 = med("confidentiality|tp4", "gib_per_s"), med("tls|tp4", "gib_per_s")
print(f"Target (issue 5): confidentiality throughput >= 40% of the TLS path: 1 stream "
      f"{ratio(c1, t1) * 100:.0f}%, 4 streams {ratio(c4, t4) * 100:.0f}% -> "
      f"{'met' if min(ratio(c1, t1), ratio(c4, t4)) >= 0.4 else 'NOT met'}.")
print(f"`openssl speed`, one core, 16 KiB blocks (GiB/s): aes-128-gcm {gcm:.2f}, "
      f"aes-256-cbc (encrypt) {cbc:.2f}, sha1 {sha1:.2f} — OpenSSL's code, for orientation "
      f"(MIT's libk5crypto uses its own).")
for lab in sorted(by):
    errs = sum(r.get("errors", 0) for r in by[lab])
    if errs:
        first = next((r["first_error"] for r in by[lab] if "first_error" in r), "")
        print(f"{lab}: {errs} failed sessions (first: {first})")
for l in open(sys.argv[10]):
    r = json.loads(l)
    if "error" in r:
        print(f"gssbench speed {r['level']}: {r['error']}")
        continue
    who = ("MIT gss_wrap/gss_unwrap (libk5crypto)" if r.get("crypto") == "mit"
           else "socksgate RFC 4121 on OpenSSL")
    print(f"GSS per-message crypto on its own (`gssbench speed`, {who}, one core, "
          f"{r['chunk']}-byte messages), {r['level']}: wrap {r['wrap_mib_per_cpu_s']:.0f} MiB/s "
          f"({r['wrap_cpu_s_per_gib']:.2f} CPU s/GiB), unwrap {r['unwrap_mib_per_cpu_s']:.0f} "
          f"MiB/s ({r['unwrap_cpu_s_per_gib']:.2f} CPU s/GiB).")
for lvl in ("integrity", "confidentiality"):
    mc = sorted({r.get("max_chunk") for r in by.get(f"{lvl}|tp1", [])})
    print(f"{lvl}: largest user bytes per token {mc} (the relay cuts each read into equal tokens up to this size; with confidentiality at least four, of 16 KiB or more, when the read allows).")
EOF
}
