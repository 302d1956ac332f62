#!/usr/bin/env bash
# scripts/bench-udp.sh: build udpbench (and socksgate), then measure the UDP ASSOCIATE relay of
# Dante and of socksgate against a direct loopback path in ONE run, interleaved, and print a
# Markdown table (medians of BENCH_REPS runs, ratios to direct and to Dante).
#
# Figures (udpbench, see the comment at the top of bench/udpbench.cc):
#   throughput  64-byte datagrams, a window of 16 in flight, one association, 3 s: round trips/s
#               (every round trip is 2 datagrams relayed by the proxy), proxy CPU-s per million
#               relayed datagrams (/proc/PID/stat summed over the proxy's process tree)
#   latency     one datagram in flight, 64 bytes, p50/p99 of 20,000 round trips after 1,000
#               warm-up rounds; unpinned, and with everything pinned to vCPU 1 (as scripts/bench.sh)
#
# Runs as root on Debian 12 (danted starts as root and drops to nobody). Needs: cmake, g++,
# dante-server (danted), python3. About 1.5-2 minutes on an idle machine with up-to-date
# binaries (plus ~2 minutes when socksgate has to be compiled), at most ~4 with other load.
#
# Knobs (environment):
#   BENCH_REPS=3              repetitions of every figure (the table shows the median)
#   BENCH_UDP_SECONDS=3       counted duration of each throughput run (after a 0.3 s warm-up)
#   BENCH_UDP_WINDOW=16       datagrams in flight in the throughput runs
#   BENCH_UDP_SIZE=64         payload bytes per datagram (the SOCKS header comes on top)
#   BENCH_RTT_ROUNDS=20000    round trips per latency run
#   BENCH_UDP_PIN=1           also measure the round trip with everything pinned to vCPU 1 (0: off)
#   BENCH_BUILD_DIR=build-bench
#   BENCH_OUT=<build dir>/bench-udp-results   results.tsv, table.md and build.log end up here
#   SOCKSGATE_BIN=...         use this socksgate binary instead of building one
#   BENCH_SKIP_BUILD=1        do not run cmake (binaries must already be in the build dir)
#   BENCH_KEEP=1              keep the temp dir (configs, proxy logs, socksgate's audit log)
#   BENCH_SOURCE=127.0.0.2    client source address (control connection and UDP socket)
#   BENCH_QUIET_BUDGET=30     seconds in total the script may wait for other CPU load to pass
#   BENCH_RETRY_BUDGET=40     a measurement during which other processes took >15% of the CPUs
#                             is repeated (up to 3 attempts) while the re-runs so far took less
#                             than this many seconds in total
#   BENCH_NICE=-10            nice value of the measuring phase (0: leave alone)
set -euo pipefail
# The whole script is one compound command: bash parses it completely before running it, so
# editing this file while a run is in progress cannot derail that run.
{

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build-bench}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
OUT=${BENCH_OUT:-$BUILD/bench-udp-results}
REPS=${BENCH_REPS:-3}
TP_SECONDS=${BENCH_UDP_SECONDS:-3}
WINDOW=${BENCH_UDP_WINDOW:-16}
SIZE=${BENCH_UDP_SIZE:-64}
RTT_ROUNDS=${BENCH_RTT_ROUNDS:-20000}
PIN=${BENCH_UDP_PIN:-1}
QUIET_BUDGET=${BENCH_QUIET_BUDGET:-30}
RETRY_BUDGET=${BENCH_RETRY_BUDGET:-40}
NICE=${BENCH_NICE:--10}
SOURCE_ADDR=${BENCH_SOURCE:-127.0.0.2}

log() { printf '[bench-udp %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (danted starts as root, user.privileged: root)"
for tool in cmake python3 danted; do
  command -v "$tool" >/dev/null || die "missing $tool (apt-get install -y cmake g++ python3 dante-server)"
done

mkdir -p "$OUT"
START_TS=$(date +%s)

# ------------------------------------------------------------------------------------------------
# Build (as scripts/bench.sh: Release, in build-bench/).
UB="" SG="" SG_NOTE="" SG_BUILD_NOTE=""
BUILD_LOG=$OUT/build.log
: >"$BUILD_LOG"
configure() {  # configure BUILD_DIR WERROR(ON|OFF)
  cmake -S "$ROOT" -B "$1" -DCMAKE_BUILD_TYPE=Release -DSOCKSGATE_BUILD_TESTS=OFF \
    -DSOCKSGATE_BUILD_BENCH=ON -DSOCKSGATE_WERROR="$2" >>"$BUILD_LOG" 2>&1
}
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "configuring $BUILD (Release; log: $BUILD_LOG)"
  if configure "$BUILD" ON; then
    if cmake --build "$BUILD" -j2 --target udpbench >>"$BUILD_LOG" 2>&1; then
      UB=$BUILD/bench/udpbench
    fi
    if [[ -z ${SOCKSGATE_BIN:-} ]]; then
      log "building socksgate"
      if cmake --build "$BUILD" -j2 --target socksgate >>"$BUILD_LOG" 2>&1 &&
          [[ -x $BUILD/gateway/socksgate ]]; then
        SG=$BUILD/gateway/socksgate
      elif grep -q 'Werror' "$BUILD_LOG" && configure "$BUILD/werror-off" OFF &&
          cmake --build "$BUILD/werror-off" -j2 --target socksgate >>"$BUILD_LOG" 2>&1 &&
          [[ -x $BUILD/werror-off/gateway/socksgate ]]; then
        SG=$BUILD/werror-off/gateway/socksgate
        SG_BUILD_NOTE="socksgate's Release build fails with -Werror (see $BUILD_LOG); benchmarked a build with SOCKSGATE_WERROR=OFF"
        log "$SG_BUILD_NOTE"
      else
        SG_NOTE="socksgate not built (target missing or build failed, see $BUILD_LOG)"
      fi
    fi
  else
    SG_NOTE="socksgate not built (the project does not configure, see $BUILD_LOG)"
  fi
  if [[ -z $UB ]]; then
    # udpbench depends on nothing else in the tree: build it on its own.
    log "project build of udpbench failed; building bench/ standalone"
    if ! cmake -S "$ROOT/bench" -B "$BUILD/socksbench-standalone" -DCMAKE_BUILD_TYPE=Release \
        >>"$BUILD_LOG" 2>&1 ||
        ! cmake --build "$BUILD/socksbench-standalone" -j2 --target udpbench >>"$BUILD_LOG" 2>&1; then
      die "cannot build udpbench, see $BUILD_LOG"
    fi
    UB=$BUILD/socksbench-standalone/udpbench
  fi
else
  for c in "$BUILD/bench/udpbench" "$BUILD/socksbench-standalone/udpbench"; do
    [[ -x $c ]] && UB=$c && break
  done
  [[ -n $UB ]] || die "BENCH_SKIP_BUILD=1 but no udpbench in $BUILD"
  if [[ -z ${SOCKSGATE_BIN:-} ]]; then
    if [[ -x $BUILD/gateway/socksgate ]]; then SG=$BUILD/gateway/socksgate
    elif [[ -x $BUILD/werror-off/gateway/socksgate ]]; then SG=$BUILD/werror-off/gateway/socksgate
    else SG_NOTE="socksgate not built ($BUILD/gateway/socksgate missing)"; fi
  fi
fi
if [[ -n ${SOCKSGATE_BIN:-} ]]; then
  if [[ -x $SOCKSGATE_BIN ]]; then SG=$SOCKSGATE_BIN; SG_NOTE=""
  else SG=""; SG_NOTE="socksgate not built (SOCKSGATE_BIN=$SOCKSGATE_BIN is not executable)"; fi
fi
log "udpbench: $UB"
if [[ -n $SG ]]; then log "socksgate: $SG"; else log "$SG_NOTE"; fi

if [[ $NICE != 0 ]]; then
  renice -n "$NICE" -p $$ >/dev/null || log "renice failed; running at normal priority"
fi

# ------------------------------------------------------------------------------------------------
# Temp dir, proxies, cleanup. Only processes this script started are ever signalled (by PID).
WORK=$(mktemp -d /tmp/udpbench.XXXXXX)
chmod 755 "$WORK"
declare -A PROXY_PID=() PROXY_PORT=() SG_READY_PID=()

descendants() {  # all descendants of a pid
  local p c
  for c in $(pgrep -P "$1" 2>/dev/null || true); do
    echo "$c"
    descendants "$c"
  done
}

stop_proxy() {
  local name=$1 pid=${PROXY_PID[$1]:-}
  [[ -n $pid ]] || return 0
  local tree
  tree=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 0.2
  local p
  for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
  unset "PROXY_PID[$name]" "PROXY_PORT[$name]"
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  local n
  for n in "${!PROXY_PID[@]}"; do stop_proxy "$n"; done
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

start_dante() {
  local name=dante dir=$WORK/dante port
  mkdir -p "$dir"
  port=$(free_port)
  # UDP needs two socks rules (danted.conf(5), "command"): udpassociate for the request and the
  # client's datagrams (from the client, to the destination), udpreply for what comes back (from
  # the destination, to the client). udp.connectdst is left at its default (yes): Dante connects
  # its outgoing UDP socket while the client talks to a single destination, as here.
  cat >"$dir/danted.conf" <<EOF
logoutput: $dir/danted.log
internal: 127.0.0.1 port = $port
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 127.0.0.0/8 }
socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 command: udpassociate }
socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 command: udpreply }
EOF
  danted -f "$dir/danted.conf" -N 2 -p "$dir/danted.pid" >"$dir/stdout" 2>&1 &
  local pid=$!
  wait_port "$port" "$pid" || { cat "$dir/stdout" "$dir/danted.log" >&2 || true; die "danted did not start"; }
  PROXY_PID[$name]=$pid
  PROXY_PORT[$name]=$port
  sleep 0.5  # let it fork its negotiate/request/io children
}

start_socksgate() {
  local name=sg dir=$WORK/sg
  mkdir -p "$dir"
  # The per-association caps (default 20,000 datagrams/s each way) would cap the benchmark:
  # raised to their maxima. Every datagram still goes through the whole relay path (header
  # parse, client check, token buckets, destination decision cache, flow accounting).
  cat >"$dir/config.json" <<'EOF'
{
  "listeners": [ { "name": "main", "address": "127.0.0.1", "port": 0, "methods": ["none"] } ],
  "policy": { "inline": { "rules": [
    { "id": "bench-udp", "action": "pass", "commands": ["udp"], "to": ["127.0.0.0/8"] } ] } },
  "udp": { "max_datagrams_per_s": 10000000, "max_bytes_per_s": 1099511627776 },
  "audit": { "file": "audit.jsonl" }
}
EOF
  rm -f "$dir/ready.json"
  "$SG" run --config "$dir/config.json" --ready-file "$dir/ready.json" >"$dir/stdout" 2>&1 &
  local pid=$! info="" _i
  for _i in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    info=$(python3 - "$dir/ready.json" 2>/dev/null <<'EOF' || true
import json, sys
d = json.load(open(sys.argv[1]))
ls = [l for l in d["listeners"] if l.get("name") == "main"] or d["listeners"]
print(d["pid"], ls[0]["port"])
EOF
)
    [[ -n $info ]] && break
    sleep 0.1
  done
  if [[ -z $info ]]; then
    log "socksgate did not become ready; its output:"
    tail -20 "$dir/stdout" >&2 || true
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 1
  fi
  local rpid rport
  read -r rpid rport <<<"$info"
  [[ $rpid == "$pid" ]] || log "note: ready-file pid $rpid differs from started pid $pid"
  PROXY_PID[$name]=$pid
  PROXY_PORT[$name]=$rport
  SG_READY_PID[$name]=$rpid
}

# ------------------------------------------------------------------------------------------------
# Measurements.
RESULTS=$OUT/results.tsv
: >"$RESULTS"
QUIET_USED=0
RETRY_USED=0

cpu_busy_pct() {  # whole-machine busy % over 0.3 s
  local a b
  read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ </proc/stat
  sleep 0.3
  read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ </proc/stat
  a=$(((b1 - a1) + (b2 - a2) + (b3 - a3) + (b6 - a6) + (b7 - a7) + (b8 - a8)))
  b=$((a + (b4 - a4) + (b5 - a5)))
  echo $((b > 0 ? 100 * a / b : 0))
}

wait_quiet() {  # wait (within a total budget) until other load on the machine is gone
  local busy t0
  busy=$(cpu_busy_pct)
  t0=$SECONDS
  while ((busy > 20 && QUIET_USED + SECONDS - t0 < QUIET_BUDGET)); do
    sleep 1
    busy=$(cpu_busy_pct)
  done
  QUIET_USED=$((QUIET_USED + SECONDS - t0))
  LAST_BUSY=$busy
}

proxy_args() {  # proxy_args TARGET -> extra udpbench args
  local t=$1
  [[ $t == direct ]] && return 0
  local pids=${PROXY_PID[$t]}
  [[ -n ${SG_READY_PID[$t]:-} && ${SG_READY_PID[$t]} != "$pids" ]] && pids+=",${SG_READY_PID[$t]}"
  printf -- '--proxy 127.0.0.1:%s --pids %s' "${PROXY_PORT[$t]}" "$pids"
}

proxy_alive() {  # proxy_alive NAME: running, not a zombie
  local pid=${PROXY_PID[$1]:-} state
  [[ -n $pid ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  [[ -n $state && $state != Z && $state != X ]]
}

start_target() {  # start_target dante|sg
  case $1 in
    dante) start_dante ;;
    sg) start_socksgate ;;
  esac
}

# A proxy that died is reported (under the table) and started again, so that the other figures
# are still measured.
declare -A DIED=()
ensure_alive() {  # ensure_alive TARGET
  local t=$1
  [[ $t == direct ]] && return 0
  proxy_alive "$t" && return 0
  local pid=${PROXY_PID[$t]:-} dir=$WORK/$t
  DIED[$t]=$((${DIED[$t]:-0} + 1))
  log "$t (pid $pid) is not running any more; its last output:"
  tail -5 "$dir/stdout" >&2 2>/dev/null || true
  [[ -e $dir/stdout ]] && cp "$dir/stdout" "$OUT/$t-died-${DIED[$t]}.stdout"
  stop_proxy "$t"
  start_target "$t" || die "$t did not restart"
}

measure() {  # measure KEY TARGET REP udpbench-args...
  local key=$1 target=$2 rep=$3
  shift 3
  local attempt share line rc short t_start
  for attempt in 1 2 3; do
    t_start=$SECONDS
    ensure_alive "$target"
    wait_quiet
    rc=0
    # shellcheck disable=SC2046
    line=$(timeout 120 "$UB" "$@" --source "$SOURCE_ADDR" $(proxy_args "$target") \
      --label "$key/$target" 2>>"$OUT/udpbench.stderr" | tail -1) || rc=$?
    [[ -n $line ]] || line="{\"error\": \"udpbench exited $rc without output\"}"
    printf '%s\t%s\t%s\t%s\t%s\n' "$key" "$target" "$rep" "$LAST_BUSY" "$line" >>"$RESULTS"
    read -r share short < <(python3 -c 'import json, sys
d = json.loads(sys.argv[1])
ks = ["round_trips_per_s", "proxy_cpu_s_per_million_datagrams", "loss_share", "p50_us", "p99_us",
      "lost", "error", "foreign_share"]
print(int(100 * (d.get("foreign_share") or 0)),
      " ".join(f"{k}={d[k]}" for k in ks if d.get(k) is not None))' "$line" 2>/dev/null ||
      echo "0 $line")
    log "rep $rep  $key  $target  (busy before: ${LAST_BUSY}%, others during: ${share}%)  $short"
    ((attempt > 1)) && RETRY_USED=$((RETRY_USED + SECONDS - t_start))
    ((share > 15 && RETRY_USED < RETRY_BUDGET)) || break
  done
}

TARGETS=(direct dante)
start_dante
if [[ -n $SG ]]; then
  if start_socksgate; then
    TARGETS+=(sg)
  else
    SG_NOTE="socksgate did not start (see the log above)"
    SG=""
  fi
fi
log "proxies up: $(for p in "${!PROXY_PID[@]}"; do printf '%s(pid %s, port %s) ' "$p" "${PROXY_PID[$p]}" "${PROXY_PORT[$p]}"; done)"

# Interleaved, and the order of the targets rotates from one repetition to the next, so that a
# slow phase of the machine does not always hit the same target.
n=${#TARGETS[@]}
for rep in $(seq "$REPS"); do
  order=()
  for i in $(seq 0 $((n - 1))); do order+=("${TARGETS[$(((i + rep - 1) % n))]}"); done
  for t in "${order[@]}"; do
    measure tp "$t" "$rep" throughput --window "$WINDOW" --size "$SIZE" --duration "$TP_SECONDS"
  done
  for t in "${order[@]}"; do
    if [[ $PIN == 1 ]]; then
      measure rtt-pin "$t" "$rep" latency --rounds "$RTT_ROUNDS" --size "$SIZE" --pin-cpu 1
    fi
    measure rtt "$t" "$rep" latency --rounds "$RTT_ROUNDS" --size "$SIZE"
  done
done

for t in "${TARGETS[@]}"; do ensure_alive "$t"; done
DIED_NOTE=""
for t in "${!DIED[@]}"; do
  DIED_NOTE+="$t died ${DIED[$t]} time(s) during the run and was restarted (its output: $OUT/$t-died-*.stdout; a crash shows in dmesg). "
done

# socksgate's own account of the associations (drops would mean the benchmark hit a cap).
SG_AUDIT=""
if [[ -n ${PROXY_PID[sg]:-} ]]; then
  stop_proxy sg  # flushes the session_end records
  SG_AUDIT=$(python3 - "$WORK/sg/audit.jsonl" <<'EOF' 2>/dev/null || true
import json, sys
n, up, down, dropped = 0, 0, 0, {}
for line in open(sys.argv[1]):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    u = d.get("udp")
    if d.get("event") != "session_end" or not u:
        continue
    n += 1
    up += u.get("datagrams_up", 0)
    down += u.get("datagrams_down", 0)
    for k, v in (u.get("dropped") or {}).items():
        dropped[k] = dropped.get(k, 0) + v
nz = {k: v for k, v in dropped.items() if v}
print(f"socksgate's audit log: {n} associations, {up:,} datagrams up, {down:,} down, "
      + (f"dropped {nz}" if nz else "nothing dropped") + ".")
EOF
)
fi
for p in "${!PROXY_PID[@]}"; do stop_proxy "$p"; done

# ------------------------------------------------------------------------------------------------
# Report.
MACHINE="$(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
DANTE_VER=$(danted -v 2>&1 | head -1 || true)
SG_VER=""
[[ -n $SG ]] && SG_VER=$("$SG" --version 2>/dev/null | head -1 || true)
ELAPSED=$(($(date +%s) - START_TS))

python3 - "$RESULTS" "$REPS" "$MACHINE" "$DANTE_VER" "${SG_NOTE:-}" "$ELAPSED" "$QUIET_USED" \
  "$TP_SECONDS" "$WINDOW" "$SIZE" "$RTT_ROUNDS" "${SG_VER:-}" "${SG_BUILD_NOTE:-}" "$RETRY_USED" \
  "${SG_AUDIT:-}" "${DIED_NOTE:-}" <<'EOF' | tee "$OUT/table.md"
import json, statistics, sys
from collections import defaultdict

(path, reps, machine, dante_ver, sg_note, elapsed, quiet_used, tp_s, window, size, rtt_rounds,
 sg_ver, sg_build_note, retry_used, sg_audit, died_note) = sys.argv[1:17]
attempts = defaultdict(list)   # (key, target, rep) -> [json, ...] (re-runs when disturbed)
for line in open(path):
    key, target, rep, b, js = line.rstrip("\n").split("\t", 4)
    try:
        d = json.loads(js)
    except ValueError:
        d = {"error": js}
    attempts[(key, target, rep)].append(d)
runs = defaultdict(list)   # (key, target) -> [the cleanest attempt of each rep]
for (key, target, rep), ds in attempts.items():
    ok = [d for d in ds if "error" not in d] or ds
    runs[(key, target)].append(min(ok, key=lambda d: d.get("foreign_share") or 0))
n_attempts = sum(len(ds) for ds in attempts.values())
chosen = [d for ds in runs.values() for d in ds]
disturbed = sum(1 for d in chosen if (d.get("foreign_share") or 0) > 0.15)

def values(key, target, field):
    return [d[field] for d in runs.get((key, target), [])
            if d.get(field) is not None and "error" not in d]

def med(key, target, field):
    v = values(key, target, field)
    return statistics.median(v) if v else None

def fmt(v, unit):
    if v is None:
        return "—"
    if unit.endswith("/s"):
        return f"{v:,.0f}"
    if unit == "CPU-s/M datagrams":
        return f"{v:.2f}"
    if unit == "µs":
        return f"{v:.1f}"
    if unit == "%":
        return f"{100 * v:.3f}"
    if unit == "cores":
        return f"{v:.2f}"
    return f"{v}"

def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"

have_sg = any(t == "sg" for (_, t) in runs)
sg_col = "socksgate" if have_sg else "socksgate (not built)"
rows = [
    (f"Round trips/s, {size} B, window {window}", "round trips/s", "↑", "tp", "round_trips_per_s", "direct"),
    (f"Datagrams/s relayed (2 per round trip), {size} B, window {window}", "datagrams/s", "↑", "tp",
     "relayed_datagrams_per_s", None),
    ("Proxy CPU per million relayed datagrams", "CPU-s/M datagrams", "↓", "tp",
     "proxy_cpu_s_per_million_datagrams", None),
    ("Proxy CPU during the throughput run", "cores", "", "tp", "proxy_cpu_share", None),
    (f"Mean round trip under load (window {window})", "µs", "↓", "tp", "mean_rtt_us", "direct"),
    ("Datagrams lost (no reply within 20 ms)", "%", "↓", "tp", "loss_share", "direct"),
]
rows += [
    (f"Round trip {size} B, p50, all on one vCPU", "µs", "↓", "rtt-pin", "p50_us", "direct"),
    (f"Round trip {size} B, p99, all on one vCPU", "µs", "↓", "rtt-pin", "p99_us", "direct"),
    (f"Round trip {size} B, p50, unpinned", "µs", "↓", "rtt", "p50_us", "direct"),
    (f"Round trip {size} B, p99, unpinned", "µs", "↓", "rtt", "p99_us", "direct"),
]

print(f"## socksgate UDP relay benchmark — medians of {reps} runs\n")
print(f"Machine: {machine}. {dante_ver}." + (f" socksgate: {sg_ver}." if sg_ver else ""))
print(f"One association per run, {size}-byte payloads to a UDP echo target on 127.0.0.1; "
      f"throughput: {window} datagrams in flight, counted for {tp_s} s; latency: 1 in flight, "
      f"{rtt_rounds} round trips after 1,000 warm-up rounds.\n")
print(f"| Figure | Unit | Better | direct | Dante | {sg_col} | Dante ÷ direct | socksgate ÷ direct | socksgate ÷ Dante | Disturbed runs |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
raw = []
for (name, unit, better, key, field, td) in rows:
    if key == "rtt-pin" and not runs.get((key, "dante")):
        continue
    vd = med(key, td, field) if td else None
    va = med(key, "dante", field)
    vs = med(key, "sg", field)
    kept = [d for t in (td, "dante", "sg") if t for d in runs.get((key, t), [])]
    dist = sum(1 for d in kept if (d.get("foreign_share") or 0) > 0.15)
    pct = unit == "%"
    print(f"| {name} | {unit} | {better} | {fmt(vd, unit)} | {fmt(va, unit)} | "
          f"{fmt(vs, unit) if have_sg else 'n/a'} | "
          f"{'' if pct else ratio(va, vd)} | {'' if pct else ratio(vs, vd)} | {'' if pct else ratio(vs, va)} | "
          f"{dist}/{len(kept)} |")
    for t in (td, "dante", "sg"):
        if t and runs.get((key, t)):
            raw.append((name, t, [round(x, 3) for x in values(key, t, field)]))

print()
notes = []
if sg_note:
    notes.append(f"**{sg_note}** — socksgate columns are empty.")
if sg_build_note:
    notes.append(sg_build_note)
if died_note:
    notes.append(f"**{died_note.strip()}**")
notes.append("Round trips/s is the headline figure: replies received per second with "
             f"{window} datagrams in flight (a datagram without a reply after 20 ms is counted "
             "lost and replaced). Each round trip is two datagrams through the proxy "
             "(client → target and target → client); the 'datagrams/s relayed' row is that ×2. "
             "Direct = the same client and echo target without a proxy.")
notes.append("Proxy CPU = utime+stime (children included) from /proc/PID/stat summed over the "
             "proxy's process tree (Dante: mother processes and their negotiate/request/io "
             "children; socksgate: one process), over the counted seconds, per million relayed "
             "datagrams (both directions).")
notes.append("Dante: `socksmethod: none`, `socks pass … command: udpassociate` + `command: "
             "udpreply` from/to 127.0.0.0/8, `udp.connectdst` at its default (yes), `-N 2`. "
             "socksgate: one listener with methods [\"none\"], one pass rule for command `udp` "
             "to 127.0.0.0/8, per-association caps raised to 10,000,000 datagrams/s and 1 TiB/s, "
             "audit log to a file. Both receive `UDP ASSOCIATE 0.0.0.0:0` and learn the client's "
             "port from its first datagram.")
notes.append("Round trips: 'all on one vCPU' pins the client, the echo target and every thread "
             "of the proxy to vCPU 1 for the run (the software path alone); 'unpinned' is left to "
             "the scheduler and includes cross-vCPU wakeups.")
if sg_audit:
    notes.append(sg_audit)
bad = [(k, t, d.get("error")) for (k, t), ds in runs.items() for d in ds if d.get("error")]
if bad:
    notes.append("Runs with errors: " + "; ".join(f"{k}/{t}: {e}" for k, t, e in bad[:12]))
notes.append(f"Whole run: {elapsed} s. Other processes on the machine: {disturbed} of the "
             f"{len(chosen)} figures kept took more than 15% of the CPUs while they ran "
             f"(`foreign_share`; {n_attempts - len(chosen)} disturbed runs were repeated and the "
             f"cleanest attempt kept, {retry_used} s spent re-running; waited {quiet_used} s "
             f"for quiet).")
for n in notes:
    print(f"- {n}")

print("\n<details><summary>More figures (medians)</summary>\n")
print("| Figure | direct | Dante | socksgate |")
print("|---|---:|---:|---:|")
def cell(key, t, field, f="{:.2f}"):
    v = med(key, t, field)
    return "—" if v is None else f.format(v)
tg = ["direct", "dante", "sg"]
for label, field, f in (("Proxy CPU-s per million round trips", "proxy_cpu_s_per_million_round_trips", "{:.2f}"),
                        ("udpbench client CPU-s (throughput run)", "client_cpu_s", "{:.2f}"),
                        ("echo target CPU-s (throughput run)", "target_cpu_s", "{:.2f}"),
                        ("Datagrams per sendmmsg() (client)", "datagrams_per_send_call", "{:.2f}"),
                        ("Datagrams lost per run", "lost", "{:.0f}"),
                        ("Late replies per run", "late", "{:.0f}")):
    print(f"| {label} | " + " | ".join(cell("tp", t, field, f) for t in tg) + " |")
for key, label in (("rtt-pin", "all on one vCPU"), ("rtt", "unpinned")):
    if runs.get((key, "direct")):
        print(f"| RTT p99.9 µs, {label} | " + " | ".join(cell(key, t, "p999_us", "{:.1f}") for t in tg) + " |")
        print(f"| RTT mean µs, {label} | " + " | ".join(cell(key, t, "mean_us", "{:.1f}") for t in tg) + " |")
print("\n</details>\n")
print("<details><summary>Raw values (every run)</summary>\n")
for name, t, v in raw:
    print(f"- {name} — {t}: {v}")
print("\n</details>")
EOF
log "results: $RESULTS, table: $OUT/table.md"
exit 0
}
