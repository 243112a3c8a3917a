#!/usr/bin/env bash
# One full call on the GPU machine: environment, GPU suite, benchmark. Writes logs and the JSON
# document under $OUT (default ./gpu-out). Usage: bench/gpu_run.sh [jest test path filter] [bench flags...]
set -uo pipefail
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
source .device/gpu-env.sh
export SLIMOPT_COMMIT="${SLIMOPT_COMMIT:-$(cat .device/commit 2>/dev/null || echo unknown)}"
source bench/cuda_libs.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/nvidia-smi.txt" 2>&1
node dist/cli/main.js info --json > "$OUT/info.json" 2>&1
filter="${1:-test/gpu}"; shift || true
npx jest "$filter" --runInBand 2>&1 | tee "$OUT/test-gpu.log" | tail -40
echo "jest exit: ${PIPESTATUS[0]}" | tee -a "$OUT/test-gpu.log"
node dist/cli/main.js bench --json "$@" > "$OUT/bench.json" 2> "$OUT/bench.err"
echo "bench exit: $?"; tail -5 "$OUT/bench.err"
node -e 'const d=JSON.parse(require("fs").readFileSync(process.argv[1]));console.log("copy GB/s", d.copyGBps);for(const r of d.results)console.log([r.name,r.dtype,r.medianMs??r.medianUs,r.fracOfFloor,r.torchMs,r.speedupVsTorch,r.stateBytesPerParam].join("  "))' "$OUT/bench.json" || true
