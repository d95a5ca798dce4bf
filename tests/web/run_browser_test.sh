#!/usr/bin/env bash
# The web page in a real browser (ctest: web_page_in_chromium). Makes a reference image with
# `chromacpp generate` and the mini models, serves the same models, has chromium (driven by
# playwright-core from tests/web/node_modules) submit the same settings through the page, and requires
# the page's image to decode to the CLI's pixels. Leaves web-page.png (a screenshot), web-result.png,
# web-cli-reference.png and web-server.log in OUTDIR.
#
#   tests/web/run_browser_test.sh BINARY OUTDIR
#
# Exit 0 pass, 1 fail, 77 skipped (no chromium, node, node_modules or mini models; under CI=true missing
# models fail instead, as in tests/testdata.h). Test data: $CHROMA_TESTDATA, else $CHROMA_DEFAULT_TESTDATA
# (set by ctest), else ../shared/testdata beside the repository. Browser: $CHROMIUM (default /usr/bin/chromium).
set -uo pipefail

BINARY=${1:?usage: run_browser_test.sh BINARY OUTDIR}
OUTDIR=${2:?usage: run_browser_test.sh BINARY OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=${CHROMA_TESTDATA:-${CHROMA_DEFAULT_TESTDATA:-$HERE/../../../shared/testdata}}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export CHROMIUM

skip() { echo "web test: SKIPPED: $*"; exit 77; }
fail() { echo "web test: FAIL: $*"; exit 1; }

[ -x "$BINARY" ] || fail "no binary at $BINARY"
BINARY=$(cd "$(dirname "$BINARY")" && pwd)/$(basename "$BINARY")  # it runs in a temporary folder
[ -x "$CHROMIUM" ] || skip "no chromium at $CHROMIUM (apt-get install chromium chromium-driver)"
command -v node >/dev/null || skip "no node (apt-get install nodejs npm)"
command -v curl >/dev/null || skip "no curl (apt-get install curl)"
[ -d "$HERE/node_modules/playwright-core" ] ||
  skip "no $HERE/node_modules (scripts/setup.sh --deps, or npm ci --prefix tests/web)"
MODELS=(--dit "$DATA/reference/chroma-mini.safetensors" --t5 "$DATA/reference/t5-mini.safetensors"
        --vae "$DATA/reference/ae-mini.safetensors" --tokenizer "$DATA/tokenizer/spiece.model")
for f in "${MODELS[@]}"; do
  case $f in --*) continue ;; esac
  if [ ! -f "$f" ]; then
    [ "${CI:-}" = "true" ] && fail "mini model not found: $f (CI=true requires it; set CHROMA_TESTDATA)"
    skip "mini model not found: $f (set CHROMA_TESTDATA to the folder holding reference/ and tokenizer/)"
  fi
done

# One set of settings for both the CLI and the page (the page's form ids, the CLI's flags).
export WEB_PROMPT="a lighthouse on a cliff at dusk" WEB_NEGATIVE="blurry, low quality"
export WEB_SIZE=64 WEB_STEPS=2 WEB_CFG=4 WEB_SEED=1234 WEB_SAMPLER=euler WEB_SCHEDULER=author

mkdir -p "$OUTDIR" || fail "cannot create $OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chromacpp-web-XXXXXX")
SERVER=""
cleanup() {
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null
    # SIGTERM cancels and exits promptly; SIGKILL if it has not within 10 s.
    for _ in $(seq 100); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER" 2>/dev/null
    wait "$SERVER" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

REF="$OUTDIR/web-cli-reference.png"
rm -f "$REF" "$OUTDIR"/web-page.png "$OUTDIR"/web-page-failure.png "$OUTDIR"/web-result.png
echo "web test: reference image with $BINARY generate"
(cd "$WORK" && timeout 60 "$BINARY" generate "${MODELS[@]}" -p "$WEB_PROMPT" -n "$WEB_NEGATIVE" \
   -W "$WEB_SIZE" -H "$WEB_SIZE" --steps "$WEB_STEPS" --cfg "$WEB_CFG" --seed "$WEB_SEED" \
   --sampler "$WEB_SAMPLER" --scheduler "$WEB_SCHEDULER" -o "$REF") || fail "chromacpp generate failed"
[ -s "$REF" ] || fail "chromacpp generate wrote no $REF"

# --port 0: the kernel picks a free port (no clash with parallel tests); the server prints it.
LOG="$OUTDIR/web-server.log"
(cd "$WORK" && exec "$BINARY" serve "${MODELS[@]}" --host 127.0.0.1 --port 0) >"$LOG" 2>&1 &
SERVER=$!
URL=""
for _ in $(seq 300); do  # 30 s
  kill -0 "$SERVER" 2>/dev/null || { cat "$LOG"; fail "the server exited"; }
  URL=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$LOG" | head -1)
  if [ -n "$URL" ] && [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$URL/health")" = 200 ]; then break; fi
  URL=""
  sleep 0.1
done
[ -n "$URL" ] || { cat "$LOG"; fail "the server did not answer /health with 200 within 30 s"; }
echo "web test: server at $URL"

timeout 200 node "$HERE/page_test.mjs" "$URL/" "$REF" "$OUTDIR"
rc=$?
[ "$rc" -eq 0 ] || { echo "--- server log ---"; cat "$LOG"; fail "the browser check failed (rc $rc)"; }
echo "web test: passed (screenshot $OUTDIR/web-page.png)"
