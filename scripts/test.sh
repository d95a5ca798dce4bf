#!/usr/bin/env bash
# Builds and runs every test: first a Release build, then the same suite under
# AddressSanitizer + UBSan, then each libFuzzer harness for a minute (scripts/fuzz.sh). Reference data is read from $CHROMA_TESTDATA (default ../shared/testdata).
#   scripts/test.sh              both builds
#   scripts/test.sh --fast       Release build only
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --deps
jobs=$(nproc)

run_suite() {  # build dir, extra cmake flags...
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest --output-on-failure -j "$jobs")
}

run_suite build -DCMAKE_BUILD_TYPE=Release
if [ "${1:-}" != "--fast" ]; then
  # halt_on_error: any sanitizer report fails the test that caused it.
  export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  run_suite build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHROMA_SANITIZE=ON
  # Every fuzz harness (fuzz/) for FUZZ_SECONDS (default 60); a finding fails the run.
  for harness in $(bash scripts/fuzz.sh --list); do
    bash scripts/fuzz.sh "$harness" "${FUZZ_SECONDS:-60}"
  done
fi
echo "test: all suites passed"
