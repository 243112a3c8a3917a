// The N-rank check shared by bench/dist_check.js (GPUs, NCCL) and test/dist.test.ts (CPU, the
// shm backend, through test/fixtures/dist_rank.js): every rank starts from the same parameters
// and feeds its own gradients (rank-dependent seeds); after `steps` steps through
// DistributedOptimizer the parameters must equal, to f32 rounding, one process that steps on the
// mean of all ranks' gradients (computed here in f32, rank 0 + rank 1 + ..., then divided: the
// shm backend's own order, so on the CPU the two agree bit for bit; with compression GaLore
// averages projected gradients, whose f32 rounding differs from projecting the mean: not bitwise).
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
  const { shapes, steps = 6, shardStates = true, bucketBytes = 64 * 1024, rank = 16, gap = 3, only, compress } = o;
  const dev = pg.device;
  const results = [];
  for (const c of cases(s, rank, gap)) {
    if (only && !only.includes(c.name)) continue;
    const mk = () => shapes.map((sh, i) => new s.Parameter(s.randn(sh, { device: dev, seed: 10 + i, std: 0.5 }), { name: `p${i}` }));
    const mine = mk(), ref = mk();
    const opt = new s.DistributedOptimizer(pg, mine, c.make, { shardStates, bucketBytes, compress });
    const bytesPerStep = [];
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
      bytesPerStep.push(opt.bytesCommunicatedLastStep());
    }
    let worst = 0, exact = true;
    for (let i = 0; i < shapes.length; i++) {
      const [a, b] = [await mine[i].data.toFloat32Array(), await ref[i].data.toFloat32Array()];
      worst = Math.max(worst, relDiff(a, b));
      if (exact) for (let k = 0; k < a.length; k++) if (!Object.is(a[k], b[k])) { exact = false; break; }
    }
    results.push({ optimizer: c.name, ranks: pg.worldSize, shardStates, compress: opt.compress, bytesPerStep,
                   relErr: worst, exact, tol: c.tol, pass: worst <= c.tol,
                   stateBytesThisRank: opt.stateBytes(), paramsHash: await paramsHash(mine) });
    opt.dispose(); plain.dispose();
    for (const p of [...mine, ...ref]) { p.data.dispose(); p.grad.dispose(); }
  }
  return results;
}

/** Rank r's gradient of parameter i at step `step` (the same draw on every machine). */
function rankGrad(s, shape, step, i, r, dev) {
  return s.randn(shape, { device: dev, seed: step * 100_000 + i * 100 + r, std: 0.3 });
}

/** The mean over `world` ranks of parameter i's gradient at `step`, in f32 rank order (the shm order). */
async function meanGrad(s, shape, step, i, world) {
  let acc;
  for (let r = 0; r < world; r++) {
    const t = rankGrad(s, shape, step, i, r, "cpu");
    const g = await t.toFloat32Array();
    t.dispose();
    if (!acc) acc = new Float32Array(g.length);
    for (let k = 0; k < acc.length; k++) acc[k] += g[k];
  }
  for (let k = 0; k < acc.length; k++) acc[k] /= world;
  return acc;
}

/**
 * DistributedOptimizer checkpoints across world sizes. phase "save" (on the first world): steps
 * 1..half, then every rank saves its shard into `dir` (rank 0 also the parameters, model.safetensors).
 * phase "load" (on any world): the parameters and a fresh DistributedOptimizer are loaded from
 * `dir`, steps half+1..steps run; each row compares the parameters with one process that stepped
 * on the mean gradient of `saveWorld` ranks, then of this world's.
 */
async function checkpointAcrossWorlds(s, pg, o) {
  const { phase, dir, saveWorld, shapes, steps = 8, half = 4, rank = 4, gap = 2, compress, only } = o;
  const dev = pg.device;
  const results = [];
  for (const c of cases(s, rank, gap)) {
    if (only && !only.includes(c.name)) continue;
    const sub = require("path").join(dir, c.name.replace(/\W+/g, "_"));
    const mk = () => shapes.map((sh, i) => new s.Parameter(s.randn(sh, { device: dev, seed: 10 + i, std: 0.5 }), { name: `p${i}` }));
    const mine = mk();
    if (phase === "load") {
      const { tensors } = await s.loadTensors(require("path").join(sub, "model.safetensors"), { device: dev });
      mine.forEach((p, i) => { p.data.copyFrom(tensors[p.name]); tensors[p.name].dispose(); });
    }
    const opt = new s.DistributedOptimizer(pg, mine, c.make, { compress });
    if (phase === "load") await opt.load(sub);
    const [from, to] = phase === "save" ? [1, half] : [half + 1, steps];
    for (let step = from; step <= to; step++) {
      mine.forEach((p, i) => { const g = rankGrad(s, shapes[i], step, i, pg.rank, dev); p.grad.copyFrom(g); g.dispose(); });
      opt.step();
    }
    if (phase === "save") {
      await opt.save(sub);
      if (pg.rank === 0) await s.saveTensors(require("path").join(sub, "model.safetensors"), Object.fromEntries(mine.map((p) => [p.name, p.data])));
      results.push({ optimizer: c.name, saved: true });
    } else {
      const ref = mk();
      const plain = c.make([{ params: ref }]);
      for (let step = 1; step <= steps; step++) {
        const world = step <= half ? saveWorld : pg.worldSize;
        for (let i = 0; i < shapes.length; i++) ref[i].grad.copyFrom(await meanGrad(s, shapes[i], step, i, world));
        plain.step();
      }
      let worst = 0, exact = true;
      for (let i = 0; i < shapes.length; i++) {
        const [a, b] = [await mine[i].data.toFloat32Array(), await ref[i].data.toFloat32Array()];
        worst = Math.max(worst, relDiff(a, b));
        if (exact) for (let k = 0; k < a.length; k++) if (!Object.is(a[k], b[k])) { exact = false; break; }
      }
      results.push({ optimizer: c.name, ranks: pg.worldSize, saveWorld, compress: opt.compress, relErr: worst, exact, tol: c.tol,
                     pass: worst <= c.tol, paramsHash: await paramsHash(mine) });
      plain.dispose();
      for (const p of ref) p.dispose();
    }
    opt.dispose();
    for (const p of mine) p.dispose();
  }
  return results;
}

module.exports = { cases, checkAgainstSingleProcess, checkpointAcrossWorlds, relDiff };
