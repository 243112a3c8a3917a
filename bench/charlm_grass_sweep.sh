#!/usr/bin/env bash
# GrassAdamW's settings on the charlm example (issue #9): the default run and variations of the
# reselection gap, the selection mode, keepState and the rank groups' rate, each 3000 steps on the
# GPU with the same initialisation and data as examples/charlm/results/h200. Writes one folder per
# setting under $1 (results.json, loss.svg, train.log) and a summary line each to $1/summary.txt.
set -uo pipefail
out="${1:?usage: $0 <output dir>}"; mkdir -p "$out"
run() {
  local name="$1"; shift
  node dist/cli/main.js demo --quiet --out "$out/$name" "$@" > "$out/$name.log" 2>&1
  node -e '
    const r = require(process.argv[1]).runs[0];
    console.log(`${process.argv[2].padEnd(28)} ${r.optimizer.padEnd(8)} val ${r.finalValLoss.toFixed(4)} train ${r.finalTrainLoss.toFixed(4)} state ${(r.stateBytes / r.params).toFixed(3)} B/param tokens ${r.tokens}`);
  ' "$out/$name/results.json" "$name" | tee -a "$out/summary.txt"
}
run adamw --optimizer adamw
run grass-default --optimizer grass
run grass-keepState --optimizer grass --rank-options keepState=true
run grass-gap10 --optimizer grass --rank-options updateProjGap=10
run grass-gap10-keepState --optimizer grass --rank-options updateProjGap=10,keepState=true
run grass-gap200 --optimizer grass --rank-options updateProjGap=200
run grass-multinomial --optimizer grass --rank-options select=multinomial
run grass-multinomial-gap10 --optimizer grass --rank-options select=multinomial,updateProjGap=10
run grass-uniform-gap10 --optimizer grass --rank-options select=uniform,updateProjGap=10
run grass-ranklr8 --optimizer grass --rank-lr 8
run grass-ranklr8-keepState --optimizer grass --rank-lr 8 --rank-options keepState=true
run grass-ranklr2-gap10 --optimizer grass --rank-lr 2 --rank-options updateProjGap=10
