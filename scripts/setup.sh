#!/usr/bin/env bash
# Installs the Debian packages chroma.cpp needs and builds it (Release, ./build).
#   scripts/setup.sh            install + build
#   scripts/setup.sh --deps     install only
set -euo pipefail
cd "$(dirname "$0")/.."

# ocl-icd-opencl-dev: Debian's dnnl-config.cmake requires OpenCL (a recommends of libdnnl-dev, which --no-install-recommends skips).
PACKAGES=(build-essential cmake ninja-build pkg-config
          libopenblas-dev libdnnl-dev ocl-icd-opencl-dev libboost-dev libsentencepiece-dev libpng-dev libjpeg-dev libwebp-dev nlohmann-json3-dev libcli11-dev
          libcurl4-openssl-dev libssl-dev libcpp-httplib-dev
          libgtest-dev libgmock-dev libbenchmark-dev
          libhiredis-dev redis-server   # serve --queue redis:// and its test
          chromium chromium-driver)     # the web page's browser test (tests/web)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# playwright-core for the browser test, pinned by tests/web/package-lock.json (re-installed when that changes).
if command -v npm >/dev/null && { [ ! -d tests/web/node_modules ] || [ tests/web/package-lock.json -nt tests/web/node_modules ]; }; then
  echo "setup: npm ci in tests/web"
  npm ci --prefix tests/web --no-audit --no-fund --loglevel=error >/dev/null
fi
[ "${1:-}" = "--deps" ] && exit 0

# A portable build: the hot kernels pick AVX-512 / AVX2 / baseline code at run time. -march=native
# (CHROMA_NATIVE) measured slower on this Zen 4 VM (gelu 5.5×, attention 1.6×; docs/PERFORMANCE.md).
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCHROMA_NATIVE=OFF >/dev/null
cmake --build build --target chromacpp
echo "setup: built ./build/chromacpp"
