#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root):
#   1. install every dependency (apt)
#   2. release build (-Werror) + all tests (unit, fuzz-corpus replay, integration with real
#      curl / PySocks / ncat)
#   3. ASan+UBSan build + all tests
#   4. libFuzzer build (clang-14) + a short fuzzing run of every target
# Exits non-zero on the first failure. Prints ctest's summary lines.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

scripts/install-deps.sh
ulimit -n "$(ulimit -Hn)" || true

step() { echo; echo "=== $* ==="; }

step "release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSOCKSGATE_WERROR=ON >/dev/null
cmake --build build -j "$JOBS"
step "release tests"
(cd build && ctest --output-on-failure -j "$JOBS" --timeout 900)

step "ASan+UBSan build"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSOCKSGATE_SANITIZE=address,undefined \
      -DSOCKSGATE_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$JOBS"
step "ASan+UBSan tests"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   ctest --output-on-failure -j "$JOBS" --timeout 900)

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
echo "all test stages passed"
