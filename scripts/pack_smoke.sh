#!/usr/bin/env bash
# Installs a slimopt tarball (npm pack) into an empty folder the way a user's project gets it, with
# install scripts disabled and no network, and checks it there: scripts/smoke.js (load, AdamW on the
# default device; on a GPU also Apollo/ApolloMini/GaLore against the CPU), on a GPU once more with
# cuBLAS/cuSOLVER hidden (scripts/without_cuda_math_libs.sh), then `slimopt bench --quick --json`
# when the device is a GPU (SLIMOPT_SMOKE_BENCH=0 leaves it out, =1 runs it on the CPU too).
# Nothing from the source tree is used but the tarball and these scripts.
#   scripts/pack_smoke.sh <slimopt-x.y.z.tgz> <output dir>
# Checks the tarball's file list first (nothing but what users need; under 100 MB).
# Writes <output dir>/contents.txt, install.log, smoke.json, smoke-builtin.json (GPU), and
# bench.json (+ bench.log) when the bench ran.
set -euo pipefail
if [ $# -ne 2 ]; then echo "usage: $0 <tarball> <output dir>" >&2; exit 2; fi
tarball="$(realpath "$1")"
mkdir -p "$2"
out="$(realpath "$2")"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/slimopt-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "pack_smoke: $(basename "$tarball") ($(du -h "$tarball" | cut -f1)) into $work (node $(node --version), npm $(npm --version))" >&2

# What the tarball holds: what users need and nothing else; under npm's 100 MB.
tar tzf "$tarball" | sort > "$out/contents.txt"
extra="$(grep -Ev '^package/(package\.json|README\.md|LICENSE[^/]*|CMakeLists\.txt|bench/torch_baseline\.py|(dist|prebuilds|csrc|cuda|examples)/.+)$' "$out/contents.txt" || true)"
if [ -n "$extra" ]; then echo "pack_smoke: unexpected files in the tarball:" >&2; echo "$extra" >&2; exit 1; fi
for need in package/dist/index.js package/dist/index.d.ts package/dist/cli/main.js package/CMakeLists.txt; do
  grep -qx "$need" "$out/contents.txt" || { echo "pack_smoke: the tarball lacks $need" >&2; exit 1; }
done
grep -q '^package/prebuilds/linux-x64/.*\.node$' "$out/contents.txt" || { echo "pack_smoke: no prebuilt addon in the tarball" >&2; exit 1; }
if grep -q '\.map$' "$out/contents.txt"; then echo "pack_smoke: source maps in the tarball" >&2; exit 1; fi
# npm runs `node-gyp rebuild` at install for a package with a binding.gyp and no install script:
# the tarball holds no binding.gyp and no install script, so installing never compiles (slimopt
# build drives cmake-js itself).
if grep -qx 'package/binding.gyp' "$out/contents.txt"; then echo "pack_smoke: binding.gyp in the tarball" >&2; exit 1; fi
tar xzf "$tarball" -O package/package.json | node -e '
  const s = JSON.parse(require("fs").readFileSync(0, "utf8")).scripts || {};
  const bad = ["preinstall", "install", "postinstall"].filter((k) => k in s);
  if (bad.length) { console.error("pack_smoke: install scripts in package.json: " + bad.join(", ")); process.exit(1); }' || exit 1
bytes="$(stat -c %s "$tarball")"
if [ "$bytes" -ge 100000000 ]; then echo "pack_smoke: the tarball is $bytes bytes (limit 100 MB)" >&2; exit 1; fi

cd "$work"
echo '{ "name": "slimopt-smoke", "version": "1.0.0", "private": true }' > package.json
# A separate cache: --offline must not lean on what this machine's cache holds.
npm install --offline --ignore-scripts --no-audit --no-fund --cache "$work/.npm-cache" "$tarball" > "$out/install.log" 2>&1 \
  || { cat "$out/install.log" >&2; echo "pack_smoke: install failed" >&2; exit 1; }
pkg="$work/node_modules/slimopt"
if [ -e "$pkg/build" ]; then echo "pack_smoke: the tarball holds a build/ folder" >&2; exit 1; fi
ls "$pkg/prebuilds/"*/ >&2
cp "$here/smoke.js" "$work/smoke.js"
node smoke.js | tee "$out/smoke.json"

on_gpu=0; grep -q '"device":"cuda' "$out/smoke.json" && on_gpu=1
if [ $on_gpu = 1 ]; then
  # Again as on a machine with only the driver: cuBLAS and cuSOLVER hidden, the built-in kernels
  # must serve (with one notice) and agree with the CPU.
  echo "pack_smoke: again without cuBLAS/cuSOLVER" >&2
  SLIMOPT_SMOKE_EXPECT_BUILTIN=1 "$here/without_cuda_math_libs.sh" node smoke.js | tee "$out/smoke-builtin.json"
fi
if [ "${SLIMOPT_SMOKE_BENCH:-$on_gpu}" = 1 ]; then
  echo "pack_smoke: slimopt bench --quick --json (the installed package's bin)" >&2
  ./node_modules/.bin/slimopt bench --quick --json > "$out/bench.json" 2> "$out/bench.log" \
    || { tail -40 "$out/bench.log" >&2; echo "pack_smoke: bench failed" >&2; exit 1; }
  tail -5 "$out/bench.log" >&2
fi
echo "pack_smoke: ok" >&2
