// The N-rank check shared by bench/dist_check.js (GPUs, NCCL) and test/dist.test.ts (CPU, the
// shm backend, through test/fixtures/dist_rank.js): every rank starts from the same parameters
// and feeds its own gradients (rank-dependent seeds); after `steps` steps through
// DistributedOptimizer the parameters must equal, to f32 rounding, one process that steps on the
// mean of all ranks' gradients (computed here in f32, rank 0 + rank 1 + ..., then divided: the
// shm backend's own order, so on the CPU the two agree bit for bit).
const crypto = require("crypto");

function relDiff(a, b) {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { const d = a[i] - b[i]; num += d * d; den += b[i] * b[i]; }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** Rank groups take the 2-D parameters of each group; the rest step as plain Adam in a group of their own. */
function splitRanked(groups, opts) {
  return groups.map((x) => ({ ...x, params: x.params.filter((p) => p.shape.length >= 2), ...opts }))
    .concat(groups.map((x) => ({ ...x, params: x.params.filter((p) => p.shape.length < 2) })))
    .filter((x) => x.params.length > 0);
}

/** The optimizers checked, each built from the groups DistributedOptimizer hands it. */
function cases(s, rank, gap) {
  const out = [
    { name: "AdamW", make: (g) => new s.AdamW(g, { lr: 1e-2, weightDecay: 0.05 }), tol: 1e-5 },
    { name: "AdamW8bit", make: (g) => new s.AdamW8bit(g, { lr: 1e-2, weightDecay: 0.05 }), tol: 1e-4 },
    { name: "GaLoreAdamW", make: (g) => new s.GaLoreAdamW(splitRanked(g, { rank, updateProjGap: gap }), { lr: 1e-2 }), tol: 1e-4 },
    { name: "GrassAdamW", make: (g) => new s.GrassAdamW(g.map((x) => ({ ...x, rank, updateProjGap: gap })), { lr: 1e-2, seed: 3 }), tol: 1e-4 },
    { name: "GrassAdamW multinomial", make: (g) => new s.GrassAdamW(splitRanked(g, { rank, updateProjGap: gap, select: "multinomial" }), { lr: 1e-2, seed: 7 }), tol: 1e-4 },
  ];
  if (s.Apollo) out.push({ name: "Apollo", make: (g) => new s.Apollo(splitRanked(g, { rank, updateProjGap: gap }), { lr: 1e-2 }), tol: 1e-4 });
  return out;
}

/** sha256 of the parameters' bytes, to compare the ranks' copies. */
async function paramsHash(params) {
  const h = crypto.createHash("sha256");
  for (const p of params) {
    const a = await p.data.toTypedArray();
    h.update(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  }
  return h.digest("hex");
}

/**
 * Runs every case (or those named in `only`) and returns one row per case: the worst relative
 * difference of a parameter against the single-process reference, whether all were bit-equal,
 * and a hash of this rank's parameters.
 */
async function checkAgainstSingleProcess(s, pg, o) {
  const { shapes, steps = 6, shardStates = true, bucketBytes = 64 * 1024, rank = 16, gap = 3, only } = o;
  const dev = pg.device;
  const results = [];
  for (const c of cases(s, rank, gap)) {
    if (only && !only.includes(c.name)) continue;
    const mk = () => shapes.map((sh, i) => new s.Parameter(s.randn(sh, { device: dev, seed: 10 + i, std: 0.5 }), { name: `p${i}` }));
    const mine = mk(), ref = mk();
    const opt = new s.DistributedOptimizer(pg, mine, c.make, { shardStates, bucketBytes });
    const plain = c.make([{ params: ref }]);
    for (let step = 1; step <= steps; step++) {
      for (let i = 0; i < shapes.length; i++) {
        const g = s.randn(shapes[i], { device: dev, seed: step * 100_000 + i * 100 + pg.rank, std: 0.3 });
        mine[i].grad.copyFrom(g);
        g.dispose();
        // The single-process reference: the mean of every rank's gradient, in f32.
        const acc = new Float32Array(mine[i].numel);
        for (let r = 0; r < pg.worldSize; r++) {
          const t = s.randn(shapes[i], { device: "cpu", seed: step * 100_000 + i * 100 + r, std: 0.3 });
          const gr = await t.toFloat32Array();
          t.dispose();
          for (let k = 0; k < acc.length; k++) acc[k] += gr[k];
        }
        for (let k = 0; k < acc.length; k++) acc[k] /= pg.worldSize;
        ref[i].grad.copyFrom(acc);
      }
      opt.step();
      plain.step();
    }
    let worst = 0, exact = true;
    for (let i = 0; i < shapes.length; i++) {
      const [a, b] = [await mine[i].data.toFloat32Array(), await ref[i].data.toFloat32Array()];
      worst = Math.max(worst, relDiff(a, b));
      if (exact) for (let k = 0; k < a.length; k++) if (!Object.is(a[k], b[k])) { exact = false; break; }
    }
    results.push({ optimizer: c.name, ranks: pg.worldSize, shardStates, relErr: worst, exact, tol: c.tol, pass: worst <= c.tol,
                   stateBytesThisRank: opt.stateBytes(), paramsHash: await paramsHash(mine) });
    opt.dispose(); plain.dispose();
    for (const p of [...mine, ...ref]) { p.data.dispose(); p.grad.dispose(); }
  }
  return results;
}

module.exports = { cases, checkAgainstSingleProcess, relDiff };
