#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/; clang, ASan + UBSan, in build-fuzz) and runs one of them:
#   scripts/fuzz.sh NAME SECONDS     e.g. scripts/fuzz.sh gguf 60
#   scripts/fuzz.sh --list           the harness names (from fuzz/CMakeLists.txt)
# The seed corpus is made afresh from the reference files ($CHROMA_TESTDATA, default
# ../shared/testdata) in build-fuzz/seeds/NAME; what the fuzzer finds interesting accumulates in
# build-fuzz/corpus/NAME. A crash, sanitizer report, leak or timeout (an input running over 10 s) is
# written to build-fuzz/findings/NAME/ and the script exits non-zero; libFuzzer also saves the slowest
# input there as slow-unit-* once one takes 10 s (reported, not a failure: replay it to time it alone).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--list" ]; then
  sed -n 's/^chroma_fuzzer(\([a-z0-9_]*\) .*/\1/p' fuzz/CMakeLists.txt
  exit 0
fi
name=${1:?usage: scripts/fuzz.sh NAME SECONDS (names: scripts/fuzz.sh --list)}
seconds=${2:?usage: scripts/fuzz.sh NAME SECONDS}
dir=build-fuzz

cmake -S . -B "$dir" -G Ninja -DCHROMA_FUZZ=ON -DCHROMA_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$dir" --target "fuzz_$name" -j "${JOBS:-$(nproc)}"

seeds=$dir/seeds/$name corpus=$dir/corpus/$name findings=$dir/findings/$name
rm -rf "$seeds"
mkdir -p "$seeds" "$corpus" "$findings"
CHROMA_FUZZ_SEEDS="$seeds" "$dir/fuzz/fuzz_$name"

export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
"$dir/fuzz/fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
  -artifact_prefix="$findings/" "$corpus" "$seeds"
