#!/usr/bin/env bash
# scripts/bench-tls.sh: SOCKS5 inside TLS, socksgate's TLS listener vs stunnel in front of Dante,
# measured in ONE run on loopback, plus `openssl speed -evp aes-128-gcm` (one core) as the
# crypto ceiling. Prints a Markdown table (medians of BENCH_REPS runs) with ratios.
#
# Runs as root on Debian 12 (Dante drops to nobody). Needs: cmake, g++, dante-server, stunnel4,
# openssl, python3. Every client uses TLS_AES_128_GCM_SHA256 (TLS 1.3) and SOCKS5 method
# "none"; targets come from `socksbench serve`. Throughput = download (target -> client).
#
# Knobs: BENCH_REPS=3, BENCH_TP_SECONDS=3, BENCH_SETUP_SECONDS=2, BENCH_SETUP_CONCURRENCY=8,
#        BENCH_BUILD_DIR=build-bench, BENCH_KEEP=1 (keep the temp dir), BENCH_SKIP_BUILD=1,
#        BENCH_SG_CC=cubic (socksgate's TCP congestion control on both legs; empty = kernel's).
set -euo pipefail
{
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build-bench}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
REPS=${BENCH_REPS:-3}
TP_SECONDS=${BENCH_TP_SECONDS:-3}
SETUP_SECONDS=${BENCH_SETUP_SECONDS:-2}
SETUP_C=${BENCH_SETUP_CONCURRENCY:-8}

log() { printf '[bench-tls %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root"
for t in cmake danted stunnel openssl python3; do command -v "$t" >/dev/null || die "missing $t"; done
ulimit -n "$(ulimit -Hn)"

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "building (Release) in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSOCKSGATE_BUILD_TESTS=OFF >/dev/null
  cmake --build "$BUILD" -j "$(nproc)" --target socksgate socksbench tlsbench >/dev/null
fi
SG=$BUILD/gateway/socksgate
SB=$BUILD/bench/socksbench
TB=$BUILD/bench/tlsbench

WORK=$(mktemp -d /tmp/socksgate-bench-tls.XXXXXX)
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

"$ROOT/certs/make-certs.sh" init "$WORK/pki" >/dev/null
CA=$WORK/pki/ca.pem

# Targets.
"$SB" serve --bind 127.0.0.1 >"$WORK/serve.json" 2>"$WORK/serve.err" &
PIDS+=($!)
for _ in $(seq 50); do [[ -s $WORK/serve.json ]] && break; sleep 0.1; done
read -r SINK SOURCE ECHO < <(python3 -c '
import json,sys; d=json.loads(open(sys.argv[1]).readline()); print(d["sink"], d["source"], d["echo"])' "$WORK/serve.json")

# Dante (method none) behind stunnel (server mode).
DANTE_PORT=$(free_port)
cat >"$WORK/danted.conf" <<EOF
logoutput: $WORK/danted.log
internal: 127.0.0.1 port = $DANTE_PORT
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 127.0.0.0/8 }
socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 }
EOF
danted -f "$WORK/danted.conf" -N 2 -p "$WORK/danted.pid" >"$WORK/danted.out" 2>&1 &
DANTE_PID=$!
PIDS+=("$DANTE_PID")
wait_port "$DANTE_PORT" "$DANTE_PID" || die "danted did not start"
STUNNEL_PORT=$(free_port)
cat >"$WORK/stunnel.conf" <<EOF
foreground = yes
pid =
[socks]
accept = 127.0.0.1:$STUNNEL_PORT
connect = 127.0.0.1:$DANTE_PORT
cert = $WORK/pki/server.pem
key = $WORK/pki/server.key
EOF
stunnel "$WORK/stunnel.conf" >"$WORK/stunnel.log" 2>&1 &
STUNNEL_PID=$!
PIDS+=("$STUNNEL_PID")
wait_port "$STUNNEL_PORT" "$STUNNEL_PID" || die "stunnel did not start"

# socksgate with a TLS listener; its sockets on BENCH_SG_CC (as in bench.sh).
SG_CC=${BENCH_SG_CC-cubic}
LCC="" UCC=""
if [[ -n $SG_CC ]]; then
  LCC=", \"congestion_control\": \"$SG_CC\""
  UCC="\"upstream\": { \"congestion_control\": \"$SG_CC\" },"
fi
cat >"$WORK/sg.json" <<EOF
{
  "listeners": [ { "name": "tls", "address": "127.0.0.1", "port": 0, "methods": ["none"]$LCC,
                   "tls": { "cert": "$WORK/pki/server.pem", "key": "$WORK/pki/server.key" } } ],
  $UCC
  "policy": { "inline": { "rules": [ { "id": "bench", "action": "pass", "to": ["127.0.0.0/8"] } ] } },
  "audit": { "file": "$WORK/audit.jsonl" }
}
EOF
"$SG" run --config "$WORK/sg.json" --ready-file "$WORK/sg.ready" >"$WORK/sg.log" 2>&1 &
SG_PID=$!
PIDS+=("$SG_PID")
for _ in $(seq 100); do [[ -s $WORK/sg.ready ]] && break; sleep 0.1; done
SG_PORT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listeners"][0]["port"])' "$WORK/sg.ready")
sleep 0.5  # let Dante fork its workers

declare -A PROXY=([sg]=127.0.0.1:$SG_PORT [stunnel-dante]=127.0.0.1:$STUNNEL_PORT)
declare -A PIDLIST=([sg]=$SG_PID [stunnel-dante]=$STUNNEL_PID,$DANTE_PID)
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

run() {  # run TARGET LABEL tlsbench-args...
  local target=$1 label=$2
  shift 2
  "$TB" "$@" --proxy "${PROXY[$target]}" --ca "$CA" --pids "${PIDLIST[$target]}" \
    --label "$target|$label" >>"$RESULTS" || log "run failed: $target $label"
}

log "openssl speed -evp aes-128-gcm (one core, 16 KiB blocks)"
CEILING=$(openssl speed -evp aes-128-gcm -seconds 2 -bytes 16384 2>/dev/null |
  awk '/^AES-128-GCM/ {v=$NF; sub(/k$/, "", v); printf "%.3f", v * 1000 / 1073741824}')

for rep in $(seq "$REPS"); do
  for t in sg stunnel-dante; do
    log "rep $rep: $t"
    run "$t" tp1 throughput --port "$SOURCE" --streams 1 --duration "$TP_SECONDS"
    run "$t" tp4 throughput --port "$SOURCE" --streams 4 --duration "$TP_SECONDS"
    run "$t" up1 throughput --port "$SINK" --streams 1 --duration "$TP_SECONDS" --direction upload
    run "$t" setup-full setup --port "$ECHO" --concurrency "$SETUP_C" --duration "$SETUP_SECONDS"
    run "$t" setup-resumed setup --port "$ECHO" --concurrency "$SETUP_C" --duration "$SETUP_SECONDS" --resume
  done
done

python3 - "$RESULTS" "$CEILING" "$REPS" "$(nproc)" "$SG_CC" "$(cat /proc/sys/net/ipv4/tcp_congestion_control)" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ceiling = float(sys.argv[2] or "nan")
by = {}
for r in rows:
    if "error" in r:
        print("error:", r["label"], r["error"], file=sys.stderr)
        continue
    by.setdefault(r["label"], []).append(r)
def med(label, key):
    v = [r[key] for r in by.get(label, []) if r.get(key) is not None]
    return statistics.median(v) if v else float("nan")
print(f"TLS benchmark: socksgate TLS listener vs stunnel + Dante, loopback, {sys.argv[4]} vCPUs, "
      f"median of {sys.argv[3]} runs; TLS 1.3 TLS_AES_128_GCM_SHA256, X25519, SOCKS5 method none")
print(f"TCP congestion control: system `{sys.argv[6]}` (stunnel, Dante, endpoints); socksgate's "
      f"sockets: " + (f"`{sys.argv[5]}`" if sys.argv[5] else "the system's"))
print()
print("| figure | socksgate | stunnel + Dante | ratio |")
print("|---|---|---|---|")
for lab, key, name, fmt in [
        ("tp1", "gib_per_s", "download, 1 stream (GiB/s)", "{:.2f}"),
        ("tp4", "gib_per_s", "download, 4 streams (GiB/s)", "{:.2f}"),
        ("up1", "gib_per_s", "upload, 1 stream (GiB/s)", "{:.2f}"),
        ("tp1", "cpu_s_per_gib", "proxy CPU s per GiB, 1 stream", "{:.2f}"),
        ("setup-full", "sessions_per_s", f"sessions/s, full handshakes, {8} clients", "{:.0f}"),
        ("setup-resumed", "sessions_per_s", "sessions/s, resumed (tickets)", "{:.0f}"),
        ("setup-full", "proxy_cpu_us_per_session", "proxy CPU µs per full session", "{:.0f}"),
        ("setup-resumed", "proxy_cpu_us_per_session", "proxy CPU µs per resumed session", "{:.0f}"),
        ("setup-full", "p50_us", "session p50 latency µs, full", "{:.0f}")]:
    a, b = med("sg|" + lab, key), med("stunnel-dante|" + lab, key)
    ratio = a / b if b else float("nan")
    print(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {ratio:.2f}× |")
tp1 = med("sg|tp1", "gib_per_s")
print()
print(f"Crypto ceiling: `openssl speed -evp aes-128-gcm`, one core, 16 KiB blocks = {ceiling:.2f} GiB/s; "
      f"socksgate 1-stream download = {tp1 / ceiling * 100:.0f}% of it.")
resumed = sum(r.get("resumed", 0) for r in by.get("sg|setup-resumed", []))
total = sum(r.get("sessions", 0) for r in by.get("sg|setup-resumed", []))
print(f"socksgate resumed {resumed} of {total} sessions in the resumed runs.")
EOF
}
