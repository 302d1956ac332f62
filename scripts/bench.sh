#!/usr/bin/env bash
# scripts/bench.sh: build socksbench (and socksgate), then measure direct loopback, Dante and
# socksgate in ONE run and print a Markdown comparison table (medians of BENCH_REPS runs).
#
# Runs as root on Debian 12 (danted needs root to check system passwords; a throwaway system
# user is created for Dante's username method and deleted on exit). Needs: cmake, g++,
# dante-server (danted), whois (mkpasswd), python3.
#
# Knobs (environment):
#   BENCH_REPS=3            repetitions of every figure (the table shows the median)
#   BENCH_TP_SECONDS=3      duration of each throughput run
#   BENCH_SETUP_SECONDS=2   duration of each session-setup run
#   BENCH_RTT_ROUNDS=20000  round trips per latency run
#   BENCH_IDLE="1000 9000"  idle-session counts (10,000 does not fit the 20,000 fd hard limit)
#   BENCH_IDLE_WAIT=2       seconds to wait with the sessions open before reading RSS
#   BENCH_BUILD_DIR=build-bench
#   BENCH_OUT=<build dir>/bench-results   results.tsv, table.md and logs end up here
#   SOCKSGATE_BIN=...       use this socksgate binary instead of building one
#   BENCH_SKIP_BUILD=1      do not run cmake (binaries must already be in the build dir)
#   BENCH_KEEP=1            keep the temp dir (configs, proxy logs)
#   BENCH_SOURCE=127.0.0.2  client source address
#   BENCH_QUIET_BUDGET=60   seconds in total the script may wait for other CPU load to pass
#   BENCH_RETRY_BUDGET=150  a measurement during which other processes took >15% of the CPUs is
#                           repeated (up to 3 attempts) while the re-runs so far took less than
#                           this many seconds in total
#   BENCH_NICE=-10          nice value of the measuring phase (0: leave alone)
#   BENCH_SG_CC=cubic       socksgate's TCP congestion control on both legs (listener
#                           "congestion_control" and "upstream"); empty = the kernel's default.
#                           With a value, throughput is also measured with the kernel's default
#                           (target sg-kdefault), so the table shows what the setting is worth
#   BENCH_SYSTEM_CC=        run everything (direct, Dante, socksgate) with this system-wide
#                           net.ipv4.tcp_congestion_control, restored on exit; empty = leave it
set -euo pipefail
# The whole script is one compound command: bash parses it completely before running it, so
# editing this file while a run is in progress cannot derail that run.
{

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build-bench}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
OUT=${BENCH_OUT:-$BUILD/bench-results}
REPS=${BENCH_REPS:-3}
TP_SECONDS=${BENCH_TP_SECONDS:-3}
SETUP_SECONDS=${BENCH_SETUP_SECONDS:-2}
RTT_ROUNDS=${BENCH_RTT_ROUNDS:-20000}
IDLE_COUNTS=${BENCH_IDLE:-"1000 9000"}
IDLE_WAIT=${BENCH_IDLE_WAIT:-2}
QUIET_BUDGET=${BENCH_QUIET_BUDGET:-60}  # total seconds we may wait for other CPU load to go
RETRY_BUDGET=${BENCH_RETRY_BUDGET:-150}  # total seconds we may spend re-running disturbed runs
# Priority of the measuring phase (proxies and socksbench inherit it): on a shared machine it
# keeps other people's builds from taking the CPUs mid-run. 0 leaves it alone.
NICE=${BENCH_NICE:--10}
# Client source address: keeps the client's ephemeral ports apart from the ones a proxy binds
# for its outgoing connections (Dante binds 127.0.0.1:0 before connecting).
SOURCE_ADDR=${BENCH_SOURCE:-127.0.0.2}
SG_CC=${BENCH_SG_CC-cubic}
SYSTEM_CC=${BENCH_SYSTEM_CC:-}
SYSTEM_CC_WAS=$(cat /proc/sys/net/ipv4/tcp_congestion_control)

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (danted's username method reads /etc/shadow; useradd)"
for tool in cmake python3 danted mkpasswd useradd; do
  command -v "$tool" >/dev/null || die "missing $tool (apt-get install -y cmake g++ python3 dante-server whois)"
done

ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"
START_TS=$(date +%s)

# ------------------------------------------------------------------------------------------------
# Build.
SB="" SG="" SG_NOTE="" SG_BUILD_NOTE=""
BUILD_LOG=$OUT/build.log
: >"$BUILD_LOG"
configure() {  # configure BUILD_DIR WERROR(ON|OFF)
  cmake -S "$ROOT" -B "$1" -DCMAKE_BUILD_TYPE=Release -DSOCKSGATE_BUILD_TESTS=OFF \
    -DSOCKSGATE_BUILD_BENCH=ON -DSOCKSGATE_WERROR="$2" >>"$BUILD_LOG" 2>&1
}
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "configuring $BUILD (Release; log: $BUILD_LOG)"
  if configure "$BUILD" ON; then
    if cmake --build "$BUILD" -j2 --target socksbench nullproxy >>"$BUILD_LOG" 2>&1; then
      SB=$BUILD/bench/socksbench
    fi
    if [[ -z ${SOCKSGATE_BIN:-} ]]; then
      log "building socksgate"
      if cmake --build "$BUILD" -j2 --target socksgate >>"$BUILD_LOG" 2>&1 &&
          [[ -x $BUILD/gateway/socksgate ]]; then
        SG=$BUILD/gateway/socksgate
      elif grep -q 'Werror' "$BUILD_LOG" && configure "$BUILD/werror-off" OFF &&
          cmake --build "$BUILD/werror-off" -j2 --target socksgate >>"$BUILD_LOG" 2>&1 &&
          [[ -x $BUILD/werror-off/gateway/socksgate ]]; then
        # A warning that only -O3 (Release) produces must not stop the benchmark; say so. (A
        # separate build dir, so that neither flag set forces a full rebuild of the other.)
        SG=$BUILD/werror-off/gateway/socksgate
        SG_BUILD_NOTE="socksgate's Release build fails with -Werror (see $BUILD_LOG: $(grep -m1 -o 'error: .*\[-Werror=[a-z-]*\]' "$BUILD_LOG" | cut -c1-60)…); benchmarked a build with SOCKSGATE_WERROR=OFF"
        log "$SG_BUILD_NOTE"
      else
        SG_NOTE="socksgate not built (target missing or build failed, see $BUILD_LOG)"
      fi
    fi
  else
    SG_NOTE="socksgate not built (the project does not configure, see $BUILD_LOG)"
  fi
  if [[ -z $SB ]]; then
    # socksbench depends on nothing else in the tree: build it on its own.
    log "project build of socksbench failed; building bench/ standalone"
    if ! cmake -S "$ROOT/bench" -B "$BUILD/socksbench-standalone" -DCMAKE_BUILD_TYPE=Release \
        >>"$BUILD_LOG" 2>&1 || ! cmake --build "$BUILD/socksbench-standalone" -j2 >>"$BUILD_LOG" 2>&1; then
      die "cannot build socksbench, see $BUILD_LOG"
    fi
    SB=$BUILD/socksbench-standalone/socksbench
  fi
else
  for c in "$BUILD/bench/socksbench" "$BUILD/socksbench-standalone/socksbench"; do
    [[ -x $c ]] && SB=$c && break
  done
  [[ -n $SB ]] || die "BENCH_SKIP_BUILD=1 but no socksbench in $BUILD"
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
log "socksbench: $SB"
if [[ -n $SG ]]; then log "socksgate: $SG"; else log "$SG_NOTE"; fi

if [[ $NICE != 0 ]]; then
  renice -n "$NICE" -p $$ >/dev/null || log "renice failed; running at normal priority"
fi

# ------------------------------------------------------------------------------------------------
# Temp dir, throwaway user, cleanup.
WORK=$(mktemp -d /tmp/socksbench.XXXXXX)
chmod 755 "$WORK"
BENCH_USER="sbench$$"
BENCH_PASS="pw-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
USER_CREATED=0
declare -A PROXY_PID=() PROXY_PORT=()

descendants() {  # all descendants of a pid, children first listed after their parent
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
  if [[ -n $SYSTEM_CC ]]; then sysctl -q -w net.ipv4.tcp_congestion_control="$SYSTEM_CC_WAS"; fi
  if [[ $USER_CREATED == 1 ]]; then userdel "$BENCH_USER" >/dev/null 2>&1; fi
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n $SYSTEM_CC ]]; then
  sysctl -q -w net.ipv4.tcp_congestion_control="$SYSTEM_CC" ||
    die "cannot set net.ipv4.tcp_congestion_control=$SYSTEM_CC"
  log "system-wide TCP congestion control for this run: $SYSTEM_CC (was $SYSTEM_CC_WAS)"
fi

useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_USER"
USER_CREATED=1
PASS_HASH=$(mkpasswd -m yescrypt "$BENCH_PASS")
usermod -p "$PASS_HASH" "$BENCH_USER"

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

start_dante() {  # start_dante NAME none|username
  local name=$1 method=$2 dir=$WORK/$1 port
  mkdir -p "$dir"
  port=$(free_port)
  cat >"$dir/danted.conf" <<EOF
logoutput: $dir/danted.log
internal: 127.0.0.1 port = $port
external: 127.0.0.1
clientmethod: none
socksmethod: $method
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 127.0.0.0/8 }
socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 }
EOF
  danted -f "$dir/danted.conf" -N 2 -p "$dir/danted.pid" >"$dir/stdout" 2>&1 &
  local pid=$!
  wait_port "$port" "$pid" || { cat "$dir/stdout" "$dir/danted.log" >&2 || true; die "danted ($name) did not start"; }
  PROXY_PID[$name]=$pid
  PROXY_PORT[$name]=$port
  sleep 0.5  # let it fork its negotiate/request/io children
}

start_socksgate() {  # start_socksgate NAME none|userpass [CACHE_TTL_S] [CONGESTION_CONTROL]
  local name=$1 method=$2 dir=$WORK/$1 cache="" lcc="" ucc="" cc=${4-$SG_CC}
  [[ -n ${3:-} ]] && cache=", \"cache_ttl_s\": $3"
  if [[ -n $cc ]]; then
    lcc=", \"congestion_control\": \"$cc\""
    ucc="  \"upstream\": { \"congestion_control\": \"$cc\" },"
  fi
  mkdir -p "$dir"
  printf '%s:%s\n' "$BENCH_USER" "$PASS_HASH" >"$dir/users.passwd"
  cat >"$dir/config.json" <<EOF
{
  "listeners": [ { "name": "main", "address": "127.0.0.1", "port": 0, "methods": ["$method"]$lcc } ],
$ucc
  "auth": { "userpass": { "file": "users.passwd"$cache } },
  "policy": { "inline": { "rules": [ { "id": "bench", "action": "pass", "to": ["127.0.0.0/8"] } ] } },
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
    log "socksgate ($name) did not become ready; its output:"
    tail -20 "$dir/stdout" >&2 || true
    kill -KILL "$pid" 2>/dev/null || true
    return 1
  fi
  local rpid rport
  read -r rpid rport <<<"$info"
  [[ $rpid == "$pid" ]] || log "note: ready-file pid $rpid differs from started pid $pid"
  PROXY_PID[$name]=$pid
  PROXY_PORT[$name]=$rport
  SG_READY_PID[$name]=$rpid
}
declare -A SG_READY_PID=()

start_nullproxy() {  # the floor: bench/nullproxy, 2 threads as socksgate's I/O threads here
  local dir=$WORK/floor info="" _i
  mkdir -p "$dir"
  "$NP" --threads "$(nproc)" >"$dir/stdout" 2>&1 &
  local pid=$!
  for _i in $(seq 50); do
    info=$(python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline()); print(d["port"])' \
      "$dir/stdout" 2>/dev/null) && break
    sleep 0.1
  done
  [[ -n $info ]] || { kill -KILL "$pid" 2>/dev/null; log "nullproxy did not start"; return 1; }
  PROXY_PID[floor]=$pid
  PROXY_PORT[floor]=$info
}

start_target() {  # start_target NAME  (dante|dante-user|sg|sg-user|sg-user-nocache|sg-kdefault)
  case $1 in
    dante) start_dante dante none ;;
    dante-user) start_dante dante-user username ;;
    sg) start_socksgate sg none ;;
    sg-user) start_socksgate sg-user userpass ;;
    sg-user-nocache) start_socksgate sg-user-nocache userpass 0 ;;
    sg-kdefault) start_socksgate sg-kdefault none "" "" ;;
    floor) start_nullproxy ;;
  esac
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

proxy_args() {  # proxy_args TARGET -> extra socksbench args
  local t=$1
  case $t in
    direct) ;;
    *)
      local pids=${PROXY_PID[$t]}
      [[ -n ${SG_READY_PID[$t]:-} && ${SG_READY_PID[$t]} != "$pids" ]] && pids+=",${SG_READY_PID[$t]}"
      printf -- '--proxy 127.0.0.1:%s --pids %s' "${PROXY_PORT[$t]}" "$pids"
      [[ $t == *-user* ]] && printf -- ' --user %s --pass %s' "$BENCH_USER" "$BENCH_PASS"
      ;;
  esac
}

measure() {  # measure KEY TARGET REP socksbench-args...
  local key=$1 target=$2 rep=$3
  shift 3
  local attempt share line rc short t_start
  for attempt in 1 2 3; do
    t_start=$SECONDS
    wait_quiet
    rc=0
    # shellcheck disable=SC2046
    line=$(timeout 600 "$SB" "$@" --source "$SOURCE_ADDR" $(proxy_args "$target") \
      --label "$key/$target" 2>>"$OUT/socksbench.stderr" | tail -1) || rc=$?
    [[ -n $line ]] || line="{\"error\": \"socksbench exited $rc without output\"}"
    printf '%s\t%s\t%s\t%s\t%s\n' "$key" "$target" "$rep" "$LAST_BUSY" "$line" >>"$RESULTS"
    read -r share short < <(python3 -c 'import json, sys
d = json.loads(sys.argv[1])
ks = ["gib_per_s", "cpu_s_per_gib", "sessions_per_s", "p50_us", "p99_us", "kib_per_session",
      "alive", "errors", "error", "first_error", "foreign_share"]
print(int(100 * (d.get("foreign_share") or 0)),
      " ".join(f"{k}={d[k]}" for k in ks if d.get(k) is not None))' "$line" 2>/dev/null ||
      echo "0 $line")
    log "rep $rep  $key  $target  (busy before: ${LAST_BUSY}%, others during: ${share}%)  $short"
    ((attempt > 1)) && RETRY_USED=$((RETRY_USED + SECONDS - t_start))
    # Other people's load took a real share of the CPUs during the run: try again, within the
    # retry budget (the report takes the cleanest attempt).
    ((share > 15 && RETRY_USED < RETRY_BUDGET)) || break
  done
}

# The floor (bench/nullproxy): the least a SOCKS5 CONNECT proxy can do, measured for session
# setup only; next to socksbench, whichever way that was built.
NP=$(dirname "$SB")/nullproxy
[[ -x $NP ]] || NP=""
TARGETS_NONE=(direct dante)
TARGETS_AUTH=(dante-user)
[[ -n $SG ]] && TARGETS_NONE+=(sg) && TARGETS_AUTH+=(sg-user sg-user-nocache)
PROXIES=(dante dante-user)
[[ -n $SG ]] && PROXIES+=(sg sg-user sg-user-nocache)
TARGETS_TP=("${TARGETS_NONE[@]}")
TARGETS_FLOOR=()
[[ -n $NP ]] && TARGETS_FLOOR=(floor floor-user)
if [[ -n $SG && -n $SG_CC ]]; then PROXIES+=(sg-kdefault) && TARGETS_TP+=(sg-kdefault); fi

for p in "${PROXIES[@]}"; do
  if ! start_target "$p"; then
    SG_NOTE="socksgate did not start (see the log above)"
    TARGETS_NONE=(direct dante) TARGETS_AUTH=(dante-user) TARGETS_TP=(direct dante) SG=""
    stop_proxy sg; stop_proxy sg-user; stop_proxy sg-user-nocache; stop_proxy sg-kdefault
    break
  fi
done
if ((${#TARGETS_FLOOR[@]})); then
  if start_target floor; then
    # The same process answers RFC 1929 when a client offers only that method.
    PROXY_PID[floor-user]=${PROXY_PID[floor]} PROXY_PORT[floor-user]=${PROXY_PORT[floor]}
  else
    TARGETS_FLOOR=()
  fi
fi
log "proxies up: $(for p in "${!PROXY_PID[@]}"; do printf '%s(pid %s, port %s) ' "$p" "${PROXY_PID[$p]}" "${PROXY_PORT[$p]}"; done)"

for rep in $(seq "$REPS"); do
  for t in "${TARGETS_TP[@]}"; do
    for s in 1 4; do
      for d in upload download; do
        measure "tp-$s-$d" "$t" "$rep" throughput --streams "$s" --direction "$d" --duration "$TP_SECONDS"
      done
    done
  done
  for t in "${TARGETS_NONE[@]}"; do
    measure rtt-pin "$t" "$rep" latency --rounds "$RTT_ROUNDS" --size 64 --pin-cpu 1
    measure rtt "$t" "$rep" latency --rounds "$RTT_ROUNDS" --size 64
  done
  for t in "${TARGETS_NONE[@]}" "${TARGETS_AUTH[@]}" "${TARGETS_FLOOR[@]}"; do
    for c in 1 32; do
      measure "setup-c$c" "$t" "$rep" setup --concurrency "$c" --duration "$SETUP_SECONDS"
    done
  done
done

# Idle sessions: a freshly started proxy for every measurement, so that each one starts from the
# same state (Dante keeps forked io-children around after a run).
IDLE_TARGETS=(dante)
[[ -n $SG ]] && IDLE_TARGETS+=(sg)
for rep in $(seq "$REPS"); do
  for t in "${IDLE_TARGETS[@]}"; do
    for k in $IDLE_COUNTS; do
      stop_proxy "$t"
      start_target "$t" || die "$t did not restart"
      measure "idle-$k" "$t" "$rep" idle --sessions "$k" --wait "$IDLE_WAIT"
    done
  done
done
for p in "${!PROXY_PID[@]}"; do stop_proxy "$p"; done

# ------------------------------------------------------------------------------------------------
# Report.
MACHINE="$(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
DANTE_VER=$(danted -v 2>&1 | head -1 || true)
SG_VER=""
[[ -n $SG ]] && SG_VER=$("$SG" --version 2>/dev/null | head -1 || true)
ELAPSED=$(($(date +%s) - START_TS))

python3 - "$RESULTS" "$REPS" "$MACHINE" "$DANTE_VER" "${SG_NOTE:-}" "$ELAPSED" "$QUIET_USED" \
  "$IDLE_COUNTS" "$TP_SECONDS" "$SETUP_SECONDS" "$RTT_ROUNDS" "${SG_VER:-}" "${SG_BUILD_NOTE:-}" "$RETRY_USED" \
  "$SG_CC" "$(cat /proc/sys/net/ipv4/tcp_congestion_control)" \
  <<'EOF' | tee "$OUT/table.md"
import json, statistics, sys
from collections import defaultdict

(path, reps, machine, dante_ver, sg_note, elapsed, quiet_used, idle_counts,
 tp_s, setup_s, rtt_rounds, sg_ver, sg_build_note, retry_used, sg_cc, system_cc) = sys.argv[1:17]
attempts = defaultdict(list)   # (key, target, rep) -> [json, ...] (re-runs when disturbed)
for line in open(path):
    key, target, rep, b, js = line.rstrip("\n").split("\t", 4)
    try:
        d = json.loads(js)
    except ValueError:
        d = {"error": js}
    d["_busy_before"] = int(b or 0)
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
    if unit in ("GiB/s",):
        return f"{v:.2f}"
    if unit == "CPU-s/GiB":
        return f"{v:.3f}"
    if unit == "sessions/s":
        return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
    if unit == "µs":
        return f"{v:.1f}"
    if unit == "KiB/session":
        return f"{v:.1f}"
    return f"{v}"

def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"

have_sg = any(t.startswith("sg") for (_, t) in runs)
sg_col = "socksgate" if have_sg else "socksgate (not built)"
rows = []
for s in (1, 4):
    for d in ("upload", "download"):
        rows.append((f"Throughput, {s} stream{'s' if s > 1 else ''}, {d}", "GiB/s", "↑",
                     f"tp-{s}-{d}", "gib_per_s", "direct", "dante", "sg"))
if sg_cc and any(t == "sg-kdefault" for (_, t) in runs):
    for s in (1, 4):
        for d in ("upload", "download"):
            rows.append((f"Throughput, {s} stream{'s' if s > 1 else ''}, {d}, socksgate on the "
                         f"kernel's congestion control ({system_cc})", "GiB/s", "↑",
                         f"tp-{s}-{d}", "gib_per_s", "direct", "dante", "sg-kdefault"))
for s in (1, 4):
    for d in ("upload", "download"):
        rows.append((f"Proxy CPU per GiB relayed, {s} stream{'s' if s > 1 else ''}, {d}",
                     "CPU-s/GiB", "↓", f"tp-{s}-{d}", "cpu_s_per_gib", None, "dante", "sg"))
for c in (1, 32):
    rows.append((f"Session setup, no auth, concurrency {c}", "sessions/s", "↑",
                 f"setup-c{c}", "sessions_per_s", "direct", "dante", "sg"))
for c in (1, 32):
    rows.append((f"Session setup, username/password, concurrency {c}", "sessions/s", "↑",
                 f"setup-c{c}", "sessions_per_s", None, "dante-user", "sg-user"))
for c in (1, 32):
    rows.append((f"Session setup, username/password, socksgate credential cache off, concurrency {c}",
                 "sessions/s", "↑", f"setup-c{c}", "sessions_per_s", None, "dante-user",
                 "sg-user-nocache"))
rows.append(("Round trip 64 B, p50, all on one vCPU", "µs", "↓", "rtt-pin", "p50_us", "direct", "dante", "sg"))
rows.append(("Round trip 64 B, p99, all on one vCPU", "µs", "↓", "rtt-pin", "p99_us", "direct", "dante", "sg"))
rows.append(("Round trip 64 B, p50, unpinned", "µs", "↓", "rtt", "p50_us", "direct", "dante", "sg"))
rows.append(("Round trip 64 B, p99, unpinned", "µs", "↓", "rtt", "p99_us", "direct", "dante", "sg"))
for k in idle_counts.split():
    rows.append((f"Idle session memory, {int(k):,} sessions (RSS)", "KiB/session", "↓",
                 f"idle-{k}", "kib_per_session", None, "dante", "sg"))

print(f"## socksgate benchmark — medians of {reps} runs\n")
print(f"Machine: {machine}. {dante_ver}." + (f" socksgate: {sg_ver}." if sg_ver else ""))
print(f"Throughput runs {tp_s} s (endpoints: send() 256 KiB, recv() 1 MiB with SO_RCVLOWAT 256 KiB), "
      f"setup runs {setup_s} s, {rtt_rounds} round trips per latency run.")
print(f"TCP congestion control: system-wide `{system_cc}` (direct, Dante, the benchmark's "
      f"endpoints); socksgate's own sockets: "
      + (f"`{sg_cc}` (`congestion_control` on its listener and `upstream`)" if sg_cc
         else "the system's") + ".\n")
print(f"| Figure | Unit | Better | direct | Dante | {sg_col} | Dante ÷ direct | socksgate ÷ direct | socksgate ÷ Dante | Disturbed runs |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
raw = []
for (name, unit, better, key, field, td, tdante, tsg) in rows:
    vd = med(key, td, field) if td else None
    va = med(key, tdante, field)
    vs = med(key, tsg, field)
    kept = [d for t in (td, tdante, tsg) if t for d in runs.get((key, t), [])]
    dist = sum(1 for d in kept if (d.get("foreign_share") or 0) > 0.15)
    print(f"| {name} | {unit} | {better} | {fmt(vd, unit)} | {fmt(va, unit)} | "
          f"{fmt(vs, unit) if have_sg else 'n/a'} | {ratio(va, vd)} | {ratio(vs, vd)} | {ratio(vs, va)} | "
          f"{dist}/{len(kept)} |")
    for t in (td, tdante, tsg):
        if t and runs.get((key, t)):
            raw.append((name, t, [round(x, 3) for x in values(key, t, field)]))

if any(t == "floor" for (_, t) in runs):
    print("\nThe floor: `bench/nullproxy`, the least a SOCKS5 CONNECT proxy can do (method none, "
          "or RFC 1929 accepting any password; IPv4 only, no policy, no audit, no logging, no "
          "timers; one epoll loop per vCPU), "
          "measured in the same run. What it reaches is what the kernel's TCP work and the "
          "scheduler leave any SOCKS5 server on this machine.\n")
    print("| Figure | floor | Dante | socksgate | floor ÷ Dante | socksgate ÷ Dante | "
          "socksgate ÷ floor | floor's CPU µs per session |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for what, tf, ta, ts in (("no auth", "floor", "dante", "sg"),
                             ("username/password", "floor-user", "dante-user", "sg-user")):
        for c in (1, 32):
            k = f"setup-c{c}"
            vf, va, vs = (med(k, t, "sessions_per_s") for t in (tf, ta, ts))
            cpu = med(k, tf, "proxy_cpu_us_per_session")
            print(f"| Session setup, {what}, concurrency {c} | {fmt(vf, 'sessions/s')} | "
                  f"{fmt(va, 'sessions/s')} | {fmt(vs, 'sessions/s')} | {ratio(vf, va)} | "
                  f"{ratio(vs, va)} | {ratio(vs, vf)} | {fmt(cpu, 'µs')} |")
            raw.append((f"Session setup, {what}, concurrency {c}", tf,
                        [round(x, 3) for x in values(k, tf, "sessions_per_s")]))

print()
notes = []
if sg_note:
    notes.append(f"**{sg_note}** — socksgate columns are empty.")
if sg_build_note:
    notes.append(sg_build_note)
notes.append("Session setup = connect → greeting → (RFC 1929) → CONNECT → reply → 1-byte echo → "
             "the target closes → close; direct = the same without SOCKS. Username/password rows: "
             "Dante `socksmethod: username` (system account, yescrypt, checked on every login) vs "
             "socksgate `methods: [\"userpass\"]` with the same yescrypt hash — by default "
             "socksgate caches a successful check for 60 s (`cache_ttl_s`), so its default row "
             "mostly measures cache hits; the `cache off` rows (`cache_ttl_s: 0`) hash every login "
             "like Dante.")
notes.append("Round trips: 'all on one vCPU' pins the client, the echo target and every thread of "
             "the proxy to vCPU 1 for the run (affinities restored after), so the figure is the "
             "software path alone; 'unpinned' is left to the scheduler and includes cross-vCPU "
             "wakeups, which cost ~35 µs each in this VM and make the p50 jump between runs.")
notes.append("Idle sessions: 9,000 instead of 10,000 — every proxied session holds 2 fds in the "
             "proxy and the open-files hard limit is 20,000 per process. Each idle run uses a "
             "freshly started proxy; KiB/session = (RSS of the proxy's whole process tree with K "
             "sessions open for 2 s − RSS before) / K.")
bad = [(k, t, d.get("error") or d.get("first_error")) for (k, t), ds in runs.items() for d in ds
       if d.get("error") or d.get("first_error") or d.get("eof_timeout")
       or (d.get("scenario") == "idle" and d.get("alive") != d.get("sessions"))]
if bad:
    notes.append("Runs with errors: " + "; ".join(f"{k}/{t}: {e}" for k, t, e in bad[:12]))
notes.append("Disturbed runs: kept runs of that row during which other processes took more "
             "than 15% of the machine's CPU time (`foreign_share`); treat those rows with care.")
notes.append(f"Whole run: {elapsed} s. Other processes on the machine: {disturbed} of the "
             f"{len(chosen)} figures kept took more than 15% of the CPUs while they ran "
             f"(`foreign_share`; {n_attempts - len(chosen)} disturbed runs were repeated and the "
             f"cleanest attempt kept, {retry_used} s spent re-running; waited {quiet_used} s "
             f"for quiet).")
for n in notes:
    print(f"- {n}")

# secondary figures
print("\n<details><summary>More figures (medians)</summary>\n")
print("| Figure | direct | Dante | Dante (username) | socksgate | socksgate (userpass) | socksgate (userpass, no cache) | floor (nullproxy) | floor (RFC 1929) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
def cell(key, t, field, f="{:.1f}"):
    v = med(key, t, field)
    return "—" if v is None else f.format(v)
tgts = ["direct", "dante", "dante-user", "sg", "sg-user", "sg-user-nocache", "floor", "floor-user"]
for c in (1, 32):
    print(f"| Proxy CPU µs per session, concurrency {c} | " + " | ".join(cell(f"setup-c{c}", t, "proxy_cpu_us_per_session") for t in tgts) + " |")
    print(f"| Session time p50 µs, concurrency {c} | " + " | ".join(cell(f"setup-c{c}", t, "session_p50_us") for t in tgts) + " |")
    print(f"| Session time p99 µs, concurrency {c} | " + " | ".join(cell(f"setup-c{c}", t, "session_p99_us") for t in tgts) + " |")
for k in idle_counts.split():
    print(f"| Idle {k}: PSS KiB/session | " + " | ".join(cell(f"idle-{k}", t, "pss_kib_per_session") for t in tgts) + " |")
    print(f"| Idle {k}: proxy processes after | " + " | ".join(cell(f"idle-{k}", t, "processes_after", "{:.0f}") for t in tgts) + " |")
    print(f"| Idle {k}: proxy RSS after, MiB | " + " | ".join("—" if med(f"idle-{k}", t, "rss_after_kib") is None else f"{med(f'idle-{k}', t, 'rss_after_kib')/1024:.0f}" for t in tgts) + " |")
print(f"| RTT p99.9 µs, all on one vCPU | " + " | ".join(cell("rtt-pin", t, "p999_us") for t in tgts) + " |")
print(f"| RTT p99.9 µs, unpinned | " + " | ".join(cell("rtt", t, "p999_us") for t in tgts) + " |")
def tool_cpu(key, t):
    v = [(d.get("client_cpu_s", 0) + d.get("target_cpu_s", 0)) / (d["bytes"] / 2**30)
         for d in runs.get((key, t), []) if d.get("bytes") and "error" not in d]
    return "—" if not v else f"{statistics.median(v):.3f}"
for s in (1, 4):
    for d in ("upload", "download"):
        print(f"| socksbench's own CPU-s per GiB (client + targets), {s} stream(s) {d} | "
              + " | ".join(tool_cpu(f"tp-{s}-{d}", t) for t in tgts) + " |")
print("\n</details>\n")
print("<details><summary>Raw values (every run)</summary>\n")
for name, t, v in raw:
    print(f"- {name} — {t}: {v}")
print("\n</details>")
EOF
log "results: $RESULTS, table: $OUT/table.md"
exit 0
}
