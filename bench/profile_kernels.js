#!/usr/bin/env node
// Launches each memory-bound kernel of the 8-bit and Grass families once, on realistic sizes, so
// that `ncu` (bench/profile.sh) can read its counters: AdamW8bit f32 and bf16 (NaN guard off and
// on), quantize/dequantize f32 and bf16, gather/scatter 512 and 2048 rows of 11008 x 4096.
// Not a benchmark: no timings are taken here.
const s = require("../dist");
const dev = s.defaultDevice();
const ROWS = 11008, COLS = 4096;

function param(dtype, seed) {
  const p = new s.Parameter(s.randn([ROWS, COLS], { dtype, device: dev, seed, std: 0.02 }), { name: `p${seed}` });
  const g = s.randn([ROWS, COLS], { dtype, device: dev, seed: seed + 100, std: 1e-2 });
  p.grad.copyFrom(g);
  g.dispose();
  return p;
}

async function main() {
  const only = process.argv[2] ? new RegExp(process.argv[2]) : /./;
  for (const dtype of ["f32", "bf16"]) {
    for (const skipNonFinite of [false, true]) {
      if (!only.test(`adamw8bit-${dtype}-${skipNonFinite ? "guard" : "noguard"}`)) continue;
      const ps = [param(dtype, 1), param(dtype, 2)];
      const opt = new s.AdamW8bit(ps, { skipNonFinite });
      opt.step();
      await dev.synchronize();
      opt.dispose?.();
      for (const p of ps) { p.data.dispose(); p.grad.dispose(); }
    }
    if (only.test(`quant-${dtype}`)) {
      const x = s.randn([ROWS, COLS], { dtype, device: dev, seed: 5, std: 1 });
      const q = s.quant.quantizeBlockwise(x, { signed: true, blockSize: 256 });
      const y = s.quant.dequantizeBlockwise(q.codes, q.absmax, { signed: true, blockSize: 256, dtype });
      await dev.synchronize();
      for (const t of [x, q.codes, q.absmax, y]) t.dispose();
    }
  }
  for (const r of [512, 2048]) {
    if (!only.test(`rows-${r}`)) continue;
    const big = s.randn([ROWS, COLS], { device: dev, seed: 7, std: 0.02 });
    const idx = new Int32Array(r);
    for (let j = 0; j < r; j++) idx[j] = Math.floor((j * ROWS) / r) + (j % 3);
    const compact = s.randn([r, COLS], { device: dev, seed: 9, std: 1e-3 });
    const rho = Float32Array.from({ length: r }, (_, j) => 0.5 + (j % 7) / 7);
    s.gatherRows(big, idx, { scale: rho, out: compact });
    s.scatterRows(big, idx, compact, { alpha: -1e-3, scale: rho });
    await dev.synchronize();
    big.dispose(); compact.dispose();
  }
  console.error("profile_kernels: done on", dev.name);
}
main().catch((e) => { console.error(e); process.exit(1); });
