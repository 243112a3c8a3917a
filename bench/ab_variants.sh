#!/usr/bin/env bash
# Same-run A/B of addon builds on the GPU machine: benches each build in turn, `reps` rounds, with
# SLIMOPT_ADDON pointing at build/variants/<name>.node, and prints each row's median and fraction
# of the floor. The GPU's clock differs from machine to machine while the floor (copy bandwidth)
# hardly does, so compute-bound kernels are only compared within one run.
# Usage: bench/ab_variants.sh "<name> <name> ..." <reps> <bench --only list>; writes $OUT/bench-<name>-<rep>.json
set -u
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
names="$1"; reps="$2"; only="$3"
for r in $(seq 1 "$reps"); do
  for v in $names; do
    SLIMOPT_ADDON="build/variants/$v.node" node dist/cli/main.js bench --json --only "$only" > "$OUT/bench-$v-$r.json" 2>/dev/null
    node -e 'const d=JSON.parse(require("fs").readFileSync(process.argv[1]));console.log(process.argv[2], d.copyGBps.toFixed(0), d.results.map(r=>(r.variant||r.dtype)+"="+r.medianMs.toFixed(3)+"/"+r.fracOfFloor.toFixed(3)).join(" "))' "$OUT/bench-$v-$r.json" "$v"
  done
done
