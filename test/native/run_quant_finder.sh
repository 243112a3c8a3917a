#!/bin/sh
# Builds and runs the exhaustive CPU check of the code finder (test/native/quant_finder_check.cc)
# over the built-in maps and a few random ones (about a minute per map on two cores). Needs dist/
# (npm run build) for the maps.
set -e
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp}
g++ -std=c++17 -O2 -ffp-contract=off -pthread -I. test/native/quant_finder_check.cc csrc/cpu/quant.cc csrc/cpu/parallel.cc \
  -o "$OUT/quant_finder_check"
node -e '
const quant = require("./dist/quant");
const hex = (a) => Array.from(new Uint32Array(Float32Array.from(a).buffer), (b) => b.toString(16)).join(" ");
const maps = [quant.dynamicMap(true), quant.dynamicMap(false), quant.dynamicMap(true, { maxExponentBits: 3, totalBits: 4 }),
              quant.linearMap(4)];
let s = 12345;
const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
for (const n of [16, 256]) {  // random maps like the dynamic ones: jittered log spacing, both signs
  const per = n / 2 - 1, decades = n === 16 ? 3 : 7, a = [0, 1];
  for (let i = 0; i < per; i++) {
    const mag = Math.fround(10 ** (-decades * (1 - i / per) + 0.3 * (rnd() - 0.5) / per));
    a.push(mag, -Math.fround(mag * (1 + 0.01 * rnd())));
  }
  maps.push(a.sort((p, q) => p - q));
}
for (const m of maps) console.log(m.length, hex(m));
' | "$OUT/quant_finder_check"
