#!/usr/bin/env bash
# Per-kernel durations and DRAM bytes of one step of APOLLO-Mini, APOLLO r256 and GaLore r128
# (bench/profile_steps.js) on the GPU machine: ncu, clocks left alone, every kernel of both steps
# (the first, untimed step of each is profiled too: it is labelled in ncu-steps.err). Writes
# $OUT/ncu-steps.csv. Usage: bench/profile_steps.sh [filter]
set -uo pipefail
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
source .device/gpu-env.sh
for lib in cublas cusolver; do
  so=$(python3 -c "import glob,site,sys
for d in site.getsitepackages():
  f=sorted(glob.glob(d+'/nvidia/**/lib/lib$lib.so.*',recursive=True))
  if f: print(f[0]); sys.exit(0)" 2>/dev/null)
  if [ -n "$so" ]; then export LD_LIBRARY_PATH="$(dirname "$so"):${LD_LIBRARY_PATH:-}"; fi
done
ncu --clock-control none --csv --page raw --print-units base \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__registers_per_thread \
  node bench/profile_steps.js "${1:-.}" > "$OUT/ncu-steps.csv" 2> "$OUT/ncu-steps.err"
echo "ncu exit: $?"
python3 - "$OUT/ncu-steps.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))]
for r in rows:
    try:
        t = float(r["gpu__time_duration.sum"]); rd = float(r["dram__bytes_read.sum"]); wr = float(r["dram__bytes_write.sum"])
    except (KeyError, ValueError):
        continue
    print("%-60s %10.1f us  read %8.1f MB  write %8.1f MB  %6.0f GB/s" % (r["Kernel Name"][:60], t / 1e3, rd / 1e6, wr / 1e6, (rd + wr) / t))
PY
