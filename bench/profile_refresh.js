#!/usr/bin/env node
// GaLore's svd refresh of one §6 matrix (rank 128 unless given, Gaussian gradient as in the galore-refresh
// bench), for a wall-clock split and for `ncu` (bench/profile_refresh.sh) to time every kernel it
// launches. Usage: profile_refresh.js ROWSxCOLS [steps] [rank]. Each step refreshes (updateProjGap 1); the
// first also creates the library handles. Prints the wall time of each step (enqueue + sync).
const s = require("../dist");
const dev = s.defaultDevice();

async function main() {
  const [rows, cols] = (process.argv[2] || "4096x4096").split("x").map(Number);
  const steps = Number(process.argv[3] || 2);
  const rank = Number(process.argv[4] || 128);
  const p = new s.Parameter(s.randn([rows, cols], { device: dev, seed: 1, std: 0.02 }), { name: "w" });
  const g = s.randn([rows, cols], { device: dev, seed: 2, std: 1e-2 });
  p.grad.copyFrom(g);
  g.dispose();
  const opt = new s.GaLoreAdamW([{ params: [p], rank, updateProjGap: 1, scale: 0.25 }]);
  for (let i = 0; i < steps; i++) {
    const t0 = process.hrtime.bigint();
    opt.step();
    await dev.synchronize();
    console.error(`profile_refresh: ${rows}x${cols} r=${rank} step ${i} (refresh): ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(2)} ms`);
  }
  opt.dispose?.();
  p.data.dispose();
  p.grad.dispose();
  console.error("profile_refresh: done on", dev.name, "|", s.linalgPaths().solver);
}
main().catch((e) => { console.error(e); process.exit(1); });
