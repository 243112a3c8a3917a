#!/usr/bin/env node
// Multi-GPU check and benchmark, run as `slimopt launch -n N bench/dist_check.js [outDir]` on a
// machine with N GPUs (N = 1 works too).
//
// Check: for each optimizer, every rank starts from the same parameters and feeds its own
// gradients (rank-dependent seeds); after 6 steps through DistributedOptimizer (sharded states)
// the parameters must equal, to f32 rounding, one process that steps on the mean of all ranks'
// gradients (computed here in f32 on each rank, the single-process reference).
// Bench: all-reduce bus bandwidth (NCCL's definition: bytes × 2(N−1)/N over the time), the step
// time of DistributedOptimizer over a slice of the DESIGN §6 workload, and the bytes each rank
// hands NCCL per step. Rank 0 writes <outDir>/dist-<N>.json.
const fs = require("fs");
const path = require("path");
const s = require("../dist");

const outDir = process.argv[2] || process.env.OUT || ".";

function relDiff(a, b) {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { const d = a[i] - b[i]; num += d * d; den += b[i] * b[i]; }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

function cases() {
  const out = [
    { name: "AdamW", make: (g) => new s.AdamW(g, { lr: 1e-2, weightDecay: 0.05 }), tol: 1e-5 },
    { name: "AdamW8bit", make: (g) => new s.AdamW8bit(g, { lr: 1e-2, weightDecay: 0.05 }), tol: 1e-4 },
    { name: "GaLoreAdamW", make: (g) => new s.GaLoreAdamW(g.map((x) => ({ ...x, params: x.params.filter((p) => p.shape.length >= 2), rank: 16, updateProjGap: 3 }))
        .concat(g.map((x) => ({ ...x, params: x.params.filter((p) => p.shape.length < 2) }))).filter((x) => x.params.length > 0), { lr: 1e-2 }), tol: 1e-4 },
    { name: "GrassAdamW", make: (g) => new s.GrassAdamW(g.map((x) => ({ ...x, rank: 16, updateProjGap: 3 })), { lr: 1e-2, seed: 3 }), tol: 1e-4 },
  ];
  if (s.Apollo) out.push({ name: "Apollo", make: (g) => new s.Apollo(g.map((x) => ({ ...x, params: x.params.filter((p) => p.shape.length >= 2), rank: 16, updateProjGap: 3 }))
    .concat(g.map((x) => ({ ...x, params: x.params.filter((p) => p.shape.length < 2) }))).filter((x) => x.params.length > 0), { lr: 1e-2 }), tol: 1e-4 });
  return out;
}

const SHAPES = [[256, 192], [192, 256], [4097], [64, 64], [33]];

async function check(pg) {
  const dev = pg.device;
  const results = [];
  for (const c of cases()) {
    const mk = () => SHAPES.map((sh, i) => new s.Parameter(s.randn(sh, { device: dev, seed: 10 + i, std: 0.5 }), { name: `p${i}` }));
    const mine = mk(), ref = mk();
    const opt = new s.DistributedOptimizer(pg, mine, c.make, { shardStates: true, bucketBytes: 64 * 1024 });
    const plain = c.make([{ params: ref }]);
    for (let step = 1; step <= 6; step++) {
      for (let i = 0; i < SHAPES.length; i++) {
        const g = s.randn(SHAPES[i], { device: dev, seed: step * 100_000 + i * 100 + pg.rank, std: 0.3 });
        mine[i].grad.copyFrom(g);
        g.dispose();
        // The single-process reference: the mean of every rank's gradient, in f32.
        const acc = new Float32Array(mine[i].numel);
        for (let r = 0; r < pg.worldSize; r++) {
          const gr = await s.randn(SHAPES[i], { device: "cpu", seed: step * 100_000 + i * 100 + r, std: 0.3 }).toFloat32Array();
          for (let k = 0; k < acc.length; k++) acc[k] += gr[k];
        }
        for (let k = 0; k < acc.length; k++) acc[k] /= pg.worldSize;
        ref[i].grad.copyFrom(acc);
      }
      opt.step();
      plain.step();
    }
    let worst = 0;
    for (let i = 0; i < SHAPES.length; i++) worst = Math.max(worst, relDiff(await mine[i].data.toFloat32Array(), await ref[i].data.toFloat32Array()));
    results.push({ optimizer: c.name, ranks: pg.worldSize, relErr: worst, tol: c.tol, pass: worst <= c.tol, stateBytesThisRank: opt.stateBytes() });
    opt.dispose(); plain.dispose();
    for (const p of [...mine, ...ref]) { p.data.dispose(); p.grad.dispose(); }
  }
  return results;
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
  for (const o of opts) {
    const ps = layer.map((sh, i) => new s.Parameter(s.randn(sh, { device: dev, seed: i, std: 0.02 }), { name: `w${i}` }));
    for (const p of ps) { const g = s.randn(p.shape, { device: dev, seed: 99 + pg.rank, std: 1e-3 }); p.grad.copyFrom(g); g.dispose(); }
    const opt = new s.DistributedOptimizer(pg, ps, o.make, { shardStates: true });
    const ms = await timeIt(dev, () => opt.step(), 5);
    const params = ps.reduce((n, p) => n + p.numel, 0);
    rows.push({ name: `dist-step-${o.name}`, dtype: "f32", params, ranks: N, medianMs: ms, bytesSentPerStep: opt.bytesCommunicatedLastStep(),
                bytesSentPerParam: opt.bytesCommunicatedLastStep() / params, stateBytesThisRank: opt.stateBytes(), rank: o.rank,
                compressed: false });
    opt.dispose();
    for (const p of ps) { p.data.dispose(); p.grad.dispose(); }
  }
  return rows;
}

(async () => {
  const pg = await s.initProcessGroup();
  const checks = await check(pg);
  const rows = await bench(pg);
  if (pg.rank === 0) {
    const doc = { device: pg.device.name, ranks: pg.worldSize, date: new Date().toISOString().slice(0, 10), commit: process.env.SLIMOPT_COMMIT || "unknown",
                  nccl: s.ncclInfo(), checks, results: rows };
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(path.join(outDir, `dist-${pg.worldSize}.json`), JSON.stringify(doc, null, 2));
    for (const c of checks) console.log(`check ${c.optimizer}: rel err ${c.relErr.toExponential(2)} (tol ${c.tol}) ${c.pass ? "PASS" : "FAIL"}`);
    for (const r of rows) console.log(`${r.name}: ${r.medianMs.toFixed(3)} ms${r.busGBps ? `, bus ${r.busGBps.toFixed(1)} GB/s` : ""}${r.bytesSentPerStep ? `, ${(r.bytesSentPerStep / 1e6).toFixed(1)} MB sent/step` : ""}`);
  }
  pg.dispose();
  process.exit(checks.every((c) => c.pass) ? 0 : 1);
})().catch((e) => { console.error(e.code || "", e.message); process.exit(1); });
