#!/usr/bin/env node
// Multi-GPU check and benchmark, run as `slimopt launch -n N bench/dist_check.js [outDir]` on a
// machine with N GPUs (N = 1 works too).
//
// Check (bench/dist_cases.js, which the CPU tests run over the shm backend too): for each
// optimizer, every rank starts from the same parameters and feeds its own gradients
// (rank-dependent seeds); after 6 steps through DistributedOptimizer (sharded states) the
// parameters must equal, to f32 rounding, one process that steps on the mean of all ranks'
// gradients (computed in f32 on each rank, the single-process reference).
// Bench: all-reduce bus bandwidth (NCCL's definition: bytes × 2(N−1)/N over the time), the step
// time of DistributedOptimizer over a slice of the DESIGN §6 workload, and the bytes each rank
// hands NCCL per step. Rank 0 writes <outDir>/dist-<N>.json.
const fs = require("fs");
const path = require("path");
const s = require("../dist");
const { checkAgainstSingleProcess } = require("./dist_cases");

const outDir = process.argv[2] || process.env.OUT || ".";

const SHAPES = [[256, 192], [192, 256], [4097], [64, 64], [33]];

function check(pg, compress = true) {
  return checkAgainstSingleProcess(s, pg, { shapes: SHAPES, steps: 6, shardStates: true, bucketBytes: 64 * 1024, rank: 16, gap: 3, compress });
}

async function timeIt(dev, fn, reps) {
  for (let i = 0; i < 3; i++) fn();
  await dev.synchronize();
  const times = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    await dev.synchronize();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}

async function bench(pg) {
  const dev = pg.device, N = pg.worldSize;
  const rows = [];
  for (const mb of [64, 256, 1024]) {
    const t = s.zeros([mb * 1024 * 256], { device: dev });
    const ms = await timeIt(dev, () => pg.allReduce(t), 10);
    const bytes = t.nbytes;
    rows.push({ name: "all-reduce", dtype: "f32", bytes, medianMs: ms, algGBps: bytes / (ms * 1e6), busGBps: (bytes / (ms * 1e6)) * (2 * (N - 1)) / N, ranks: N });
    t.dispose();
  }
  // Step time over one LLaMA-7B decoder layer's matrices (202M parameters), f32.
  const layer = [[4096, 4096], [4096, 4096], [4096, 4096], [4096, 4096], [11008, 4096], [11008, 4096], [4096, 11008]];
  const opts = [
    { name: "adamw", make: (g) => new s.AdamW(g, { lr: 1e-3 }) },
    { name: "galore", rank: 128, make: (g) => new s.GaLoreAdamW(g.map((x) => ({ ...x, rank: 128, updateProjGap: 200 })), { lr: 1e-3 }) },
    { name: "grass", make: (g) => new s.GrassAdamW(g.map((x) => ({ ...x, rank: 512, updateProjGap: 200 })), { lr: 1e-3 }) },
  ];
  // GaLore and Grass with compression (the default: R or the selected lines are averaged between
  // refreshes) and without (full gradients). The first step refreshes; the timed steps and the
  // bytes reported are steady steps (updateProjGap 200).
  for (const o of opts) {
    for (const compress of o.name === "adamw" ? [true] : [false, true]) {
      const ps = layer.map((sh, i) => new s.Parameter(s.randn(sh, { device: dev, seed: i, std: 0.02 }), { name: `w${i}` }));
      for (const p of ps) { const g = s.randn(p.shape, { device: dev, seed: 99 + pg.rank, std: 1e-3 }); p.grad.copyFrom(g); g.dispose(); }
      const opt = new s.DistributedOptimizer(pg, ps, o.make, { shardStates: true, compress });
      const ms = await timeIt(dev, () => opt.step(), 5);
      const params = ps.reduce((n, p) => n + p.numel, 0);
      rows.push({ name: `dist-step-${o.name}`, dtype: "f32", params, ranks: N, medianMs: ms, bytesSentPerStep: opt.bytesCommunicatedLastStep(),
                  bytesSentPerParam: opt.bytesCommunicatedLastStep() / params, stateBytesThisRank: opt.stateBytes(), rank: o.rank,
                  compressed: o.name !== "adamw" && compress });
      opt.dispose();
      for (const p of ps) { p.data.dispose(); p.grad.dispose(); }
    }
  }
  return rows;
}

(async () => {
  const pg = await s.initProcessGroup();
  const checks = [...await check(pg), ...await check(pg, false)];
  const rows = await bench(pg);
  if (pg.rank === 0) {
    const doc = { device: pg.device.name, ranks: pg.worldSize, date: new Date().toISOString().slice(0, 10), commit: process.env.SLIMOPT_COMMIT || "unknown",
                  nccl: s.ncclInfo(), checks, results: rows };
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(path.join(outDir, `dist-${pg.worldSize}.json`), JSON.stringify(doc, null, 2));
    for (const c of checks) console.log(`check ${c.optimizer}${c.compress ? " (compressed)" : ""}: rel err ${c.relErr.toExponential(2)} (tol ${c.tol}) ${c.pass ? "PASS" : "FAIL"}`);
    for (const r of rows) console.log(`${r.name}${r.compressed ? " (compressed)" : ""}: ${r.medianMs.toFixed(3)} ms${r.busGBps ? `, bus ${r.busGBps.toFixed(1)} GB/s` : ""}${r.bytesSentPerStep ? `, ${(r.bytesSentPerStep / 1e6).toFixed(1)} MB sent/step` : ""}`);
  }
  pg.dispose();
  process.exit(checks.every((c) => c.pass) ? 0 : 1);
})().catch((e) => { console.error(e.code || "", e.message); process.exit(1); });
