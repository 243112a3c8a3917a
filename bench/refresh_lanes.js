#!/usr/bin/env node
// GaLore's svd refresh of the 28 DESIGN §6 matrices (Gaussian gradients as in the galore-refresh
// bench) through galoreRefreshMany with 1, 2, 3 and 4 lanes (refreshes at once, each on its own
// stream, host thread and workspace), to see what running refreshes side by side gains. The
// optimizer gives a second lane only where it fits beside the first within one f32 gradient; this
// script gives each lane a full workspace whatever that costs. Usage: refresh_lanes.js [rank]
// [repeats]. Prints JSON: per lane count, the wall time of each call (enqueue + sync), and
// whether every projector equals the one-lane result bit for bit.
const s = require("../dist");
const { native } = require("../dist/native");
const { llamaLayers } = require("../dist/cli/workload");

async function main() {
  const rank = Number(process.argv[2] || 128);
  const repeats = Number(process.argv[3] || 2);
  const dev = s.defaultDevice();
  const nat = native();
  const mats = llamaLayers().matrices;
  const grads = mats.map((m, i) => s.randn(m.shape, { dtype: "f32", device: dev, seed: 2_000 + i, std: 1 }));
  const flag = s.zeros([1], { dtype: "i32", device: dev });
  const specs = mats.map((m) => ({ rows: m.shape[0], cols: m.shape[1], left: m.shape[0] < m.shape[1] }));
  const ps = specs.map((q) => s.zeros([(q.left ? q.rows : q.cols) * rank], { dtype: "f32", device: dev }));
  const need = Math.max(...specs.map((q) => nat.galoreRefreshWorkspace(flag.handle, q.rows, q.cols, rank, q.left, 0)));
  const ws = [0, 1, 2, 3].map(() => s.zeros([need], { dtype: "f32", device: dev }));
  const entries = specs.map((q, i) => [grads[i].handle, 0, q.rows, q.cols, rank, q.left, ps[i].handle, flag.handle, 0, 1]);
  const out = { device: dev.name, rank, matrices: mats.length, workspaceMiB: need * 4 / 2 ** 20, solver: s.linalgPaths().solver, lanes: {} };
  let ref;
  for (const lanes of [1, 2, 3, 4]) {
    const times = [];
    for (let rep = 0; rep < repeats + 1; rep++) {
      for (const p of ps) p.copyFrom(new Float32Array(p.numel));  // every call refreshes from zero P
      await dev.synchronize();
      const t0 = process.hrtime.bigint();
      nat.galoreRefreshMany(entries, ws.slice(0, lanes).map((t) => t.handle));
      await dev.synchronize();
      if (rep > 0) times.push(Number(process.hrtime.bigint() - t0) / 1e6);  // the first warms up
    }
    const got = await Promise.all(ps.map((p) => p.toFloat32Array()));
    if (!ref) ref = got;
    const same = got.every((a, i) => Buffer.compare(Buffer.from(a.buffer), Buffer.from(ref[i].buffer)) === 0);
    out.lanes[lanes] = { ms: times, bitEqualToOneLane: same };
    console.error(`refresh_lanes: r=${rank} lanes=${lanes}: ${times.map((t) => t.toFixed(1)).join(", ")} ms; same as one lane: ${same}`);
  }
  console.log(JSON.stringify(out, null, 1));
  for (const t of [...grads, ...ps, ...ws, flag]) t.dispose();
}
main().catch((e) => { console.error(e); process.exit(1); });
