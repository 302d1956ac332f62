#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root):
#   1. install every dependency (apt)
#   2. release build (-Werror) + all tests (unit, fuzz-corpus replay, integration with real
#      curl / PySocks / ncat)
#   3. ASan+UBSan build + all tests
#   4. TSan build + all tests
#   5. libFuzzer build (clang-14) + a short fuzzing run of every target
# Exits non-zero on the first failure. Prints ctest's summary lines.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

scripts/install-deps.sh
ulimit -n "$(ulimit -Hn)" || true

step() { echo; echo "=== $* ==="; }
TOTAL=0
# run_ctest DIR [env...]: runs the whole ctest suite in DIR and adds its count to TOTAL.
run_ctest() {
  local dir=$1
  shift
  (cd "$dir" && env "$@" ctest --output-on-failure -j "$JOBS" --timeout 900) 2>&1 | tee "$dir/ctest.log"
  local n
  n=$(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' "$dir/ctest.log" | tail -n 1)
  TOTAL=$((TOTAL + ${n:-0}))
}

step "release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSOCKSGATE_WERROR=ON >/dev/null
cmake --build build -j "$JOBS"
step "release tests"
run_ctest build

step "ASan+UBSan build"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSOCKSGATE_SANITIZE=address,undefined \
      -DSOCKSGATE_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$JOBS"
step "ASan+UBSan tests"
run_ctest build-asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

step "TSan build"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSOCKSGATE_SANITIZE=thread \
      -DSOCKSGATE_BUILD_BENCH=OFF >/dev/null
cmake --build build-tsan -j "$JOBS"
step "TSan tests"
run_ctest build-tsan TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

step "libFuzzer build (clang-14)"
CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSOCKSGATE_FUZZ=ON \
    -DSOCKSGATE_BUILD_BENCH=OFF -DSOCKSGATE_BUILD_TESTS=ON >/dev/null
cmake --build build-fuzz -j "$JOBS" --target fuzz_all
step "fuzzing each target for ${FUZZ_SECONDS}s"
for f in build-fuzz/tests/fuzz/*_fuzz; do
  name=$(basename "$f")
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$name/." "$work/"
  "$f" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 \
       "$work" 2>&1 | tail -n 2
  rm -rf "$work"
done
echo
echo "all test stages passed (release, ASan+UBSan, TSan, fuzzing)"
echo "$TOTAL passed, 0 failed"
