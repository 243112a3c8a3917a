// Shared by test/dist_compress.test.ts (CPU) and test/gpu/dist.gpu.test.ts (CUDA): the pieces of
// compressed data-parallel steps (GaLore's projected gradient, Grass's compact lines) against
// references, the average of compact gradients against a step on the averaged gradient, and
// DistributedOptimizer checkpoints resumed on the same and on other numbers of ranks.
//
// Several ranks in one process: ProcessGroup objects of the local backend with a world size above
// one (their collectives move nothing) and the same gradients on every rank, so that each owner's
// own gradient is the average; the owners' parameters are then copied to the other ranks by hand
// (the broadcast). That runs the sharding, the re-deal of a checkpoint and the owners' compressed
// steps exactly as N processes would, without a communicator.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import {
  AdamW, device as resolveDevice, DistributedOptimizer, DType, GaLoreAdamW, gatherCompact, GrassAdamW, GroupOptions, Optimizer,
  ParamGroupSpec, Parameter, ProcessGroup, projectGradient, randn, tensor, Tensor, zeros,
} from "../lib";
import { makeParams, rawBytes } from "./checkpoint_helpers";
import { expectCode } from "./helpers";
import { relErr, Rng, roundTo } from "./reference";

type AnyOptimizer = Optimizer<any>;  // eslint-disable-line @typescript-eslint/no-explicit-any

async function f64(t: Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.toFloat32Array());
}

/** C = op(A) op(B) in float64, row-major (A: m x k after op, B: k x n after op). */
function matmul(a: Float64Array, ar: number, ac: number, ta: boolean, b: Float64Array, br: number, bc: number, tb: boolean): Float64Array {
  const m = ta ? ac : ar, k = ta ? ar : ac, n = tb ? br : bc;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let q = 0; q < k; q++) s += (ta ? a[q * ac + i] : a[i * ac + q]) * (tb ? b[j * bc + q] : b[q * bc + j]);
      out[i * n + j] = s;
    }
  return out;
}

/** projectGradient against R computed in float64 from the same G and P, every side and dtype. */
export async function projectGradientMatchesReference(dev: string): Promise<void> {
  const cases: { side: "right" | "left" | "full"; rows: number; cols: number; rank: number }[] = [
    { side: "right", rows: 23, cols: 9, rank: 4 }, { side: "left", rows: 7, cols: 19, rank: 3 }, { side: "full", rows: 11, cols: 13, rank: 5 },
  ];
  let seed = 1;
  for (const c of cases) {
    for (const dtype of ["f32", "bf16"] as DType[]) {
      const g = randn([c.rows, c.cols], { dtype, device: dev, seed: seed++ });
      const pShape = c.side === "right" ? [c.rank, c.cols] : [c.rows, c.rank];
      const proj = randn(pShape, { device: dev, seed: seed++ });
      const projB = c.side === "full" ? randn([c.rank, c.cols], { device: dev, seed: seed++ }) : undefined;
      const rShape = c.side === "right" ? [c.rows, c.rank] : c.side === "left" ? [c.rank, c.cols] : [c.rank, c.rank];
      const out = tensor(new Float32Array(rShape[0] * rShape[1]).fill(NaN), rShape, { device: dev });
      projectGradient(g, { ...c, proj, projB }, out, { precision: "f32" });
      const G = await f64(g), P = await f64(proj);
      const ref = c.side === "right" ? matmul(G, c.rows, c.cols, false, P, c.rank, c.cols, true)
        : c.side === "left" ? matmul(P, c.rows, c.rank, true, G, c.rows, c.cols, false)
        : matmul(matmul(P, c.rows, c.rank, true, G, c.rows, c.cols, false), c.rank, c.cols, false, await f64(projB!), c.rank, c.cols, true);
      const got = await out.toFloat32Array();
      expect(relErr(got, ref)).toBeLessThan(1e-5);
      // Refusals leave the output as it was.
      const keep = await rawBytes(out);
      const bad = zeros([rShape[0] + 1, rShape[1]], { device: dev });
      expectCode(() => projectGradient(g, { ...c, proj, projB }, bad), "E_SHAPE");
      const b16 = zeros(rShape, { dtype: "bf16", device: dev });
      expectCode(() => projectGradient(g, { ...c, proj, projB }, b16), "E_DTYPE");
      expectCode(() => projectGradient(g, { ...c, side: "up" as never, proj, projB }, out), "E_ARG");
      expectCode(() => projectGradient(g, { ...c, rank: c.rank + 1, proj, projB }, out), "E_SHAPE");
      expectCode(() => projectGradient(g, { ...c, rows: c.rows + 1, proj, projB }, out), "E_SHAPE");
      expectCode(() => projectGradient(g, { ...c, proj, projB }, out, { precision: "f64" as never }), "E_ARG");
      if (c.side === "full") expectCode(() => projectGradient(g, { ...c, proj, projB: undefined }, out), "E_ARG");
      expect((await rawBytes(out)).equals(keep)).toBe(true);
      for (const t of [g, proj, projB, out, bad, b16]) t?.dispose();
    }
  }
}

/** gatherCompact against a reference gather (exact bits): rows and columns, duplicates, f32 and bf16. */
export async function gatherCompactMatchesReference(dev: string): Promise<void> {
  for (const dtype of ["f32", "bf16"] as DType[]) {
    for (const [shape, side, idx] of [
      [[13, 5], "rows", [0, 3, 3, 12]], [[4, 3, 7], "cols", [1, 1, 20, 5, 0]], [[9, 17], "cols", [16]],
    ] as [number[], "rows" | "cols", number[]][]) {
      const g = randn(shape, { dtype, device: dev, seed: shape[0] * 7 + idx.length });
      const m = shape[0], n = g.numel / m, r = idx.length;
      const indices = tensor(Int32Array.from(idx), [r], { dtype: "i32", device: dev });
      const out = zeros(side === "rows" ? [r, n] : [m, r], { dtype, device: dev });
      gatherCompact(g, { side, indices }, out);
      const src = await g.toFloat32Array(), got = await out.toFloat32Array();
      const want = new Float32Array(got.length);
      for (let k = 0; k < (side === "rows" ? r : m); k++)
        for (let j = 0; j < (side === "rows" ? n : r); j++)
          want[k * (side === "rows" ? n : r) + j] = side === "rows" ? src[idx[k] * n + j] : src[k * n + idx[j]];
      expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer))).toBe(true);
      const keep = await rawBytes(out);
      expectCode(() => gatherCompact(g, { side, indices }, zeros([1], { dtype, device: dev })), "E_SHAPE");
      expectCode(() => gatherCompact(g, { side: "diag" as never, indices }, out), "E_ARG");
      expectCode(() => gatherCompact(g, { side, indices: zeros([r], { device: dev }) }, out), "E_DTYPE");
      expectCode(() => gatherCompact(zeros([n * m], { dtype, device: dev }), { side, indices }, out), "E_SHAPE");
      expect((await rawBytes(out)).equals(keep)).toBe(true);
      for (const t of [g, indices, out]) t.dispose();
    }
  }
}

/** Gradients of `k` ranks for one step and their average (float64 sum, rounded to f32 once). */
function rankGrads(shapes: number[][], k: number, step: number): { each: Float32Array[][]; mean: Float32Array[] } {
  const each = Array.from({ length: k }, (_, r) => shapes.map((s, i) => new Rng(step * 7919 + r * 131 + i).normals(s.reduce((a, b) => a * b, 1), 0.5)));
  const mean = shapes.map((_, i) => {
    const out = new Float32Array(each[0][i].length);
    for (let e = 0; e < out.length; e++) {
      let s = 0;
      for (let r = 0; r < k; r++) s += each[r][i][e];
      out[e] = s / k;
    }
    return out;
  });
  return { each, mean };
}

/** Mean over ranks of compact gradients given as f32 arrays (float64 sum, rounded once). */
function meanOf(xs: Float32Array[]): Float32Array {
  const out = new Float32Array(xs[0].length);
  for (let e = 0; e < out.length; e++) {
    let s = 0;
    for (const x of xs) s += x[e];
    out[e] = s / xs.length;
  }
  return out;
}

const GALORE_SHAPES = [[20, 12], [10, 16], [11, 13], [5]];
function makeGalore(ps: Parameter[]): GaLoreAdamW {
  return new GaLoreAdamW([
    { params: [ps[0], ps[1]], rank: 3, updateProjGap: 3, scale: 0.25 },
    { params: [ps[2]], rank: 2, updateProjGap: 3, projType: "full" },
    { params: [ps[3]] }], { lr: 1e-2, weightDecay: 0.05, precision: "f32" });
}

/** GaLoreAdamW stepping on the average of 3 ranks' projected gradients (R of each rank with the
 *  projector in effect, averaged) equals GaLoreAdamW stepping on the averaged full gradient, to f32
 *  rounding; p.grad is not read when R is given (it holds one rank's gradient only). */
export async function galoreProjectedAverage(dev: string): Promise<void> {
  const K = 3;
  const a = GALORE_SHAPES.map((s, i) => new Parameter(randn(s, { device: dev, seed: 40 + i }), { name: `w${i}` }));
  const b = GALORE_SHAPES.map((s, i) => new Parameter(randn(s, { device: dev, seed: 40 + i }), { name: `w${i}` }));
  const A = makeGalore(a), B = makeGalore(b);
  let compactSteps = 0;
  for (let s = 1; s <= 7; s++) {
    const { each, mean } = rankGrads(GALORE_SHAPES, K, s);
    a.forEach((p, i) => p.grad.copyFrom(mean[i]));
    for (let i = 0; i < b.length; i++) {
      const p = b[i];
      if (B.needsFullGrad(p)) { p.grad.copyFrom(mean[i]); continue; }
      const q = B.projector(p);
      const rs: Float32Array[] = [];
      for (let r = 0; r < K; r++) {
        const gr = tensor(each[r][i], p.shape, { device: dev });
        const out = zeros(B.projectedShape(p), { device: dev });
        projectGradient(gr, q, out, { precision: "f32" });
        rs.push(await out.toFloat32Array());
        gr.dispose();
        out.dispose();
      }
      const R = tensor(meanOf(rs), B.projectedShape(p), { device: dev });
      p.grad.copyFrom(each[0][i]);  // not the average: must not be read
      B.setProjectedGrad(p, R);
      compactSteps++;
    }
    A.step();
    B.step();
  }
  expect(compactSteps).toBe(4 * 3);  // steps 2, 3, 5, 6 of the three rank tensors
  for (let i = 0; i < a.length; i++) {
    const x = await a[i].data.toFloat32Array(), y = await b[i].data.toFloat32Array();
    const x0 = await randn(GALORE_SHAPES[i], { device: dev, seed: 40 + i }).toFloat32Array();
    expect(relErr(y, x)).toBeLessThan(1e-5);
    expect(relErr(x, x0)).toBeGreaterThan(1e-3);  // the steps moved the parameters
  }
  for (let i = 0; i < 3; i++) {
    const sa = A.stateOf(a[i])!, sb = B.stateOf(b[i])!;
    expect(relErr(await sb.expAvg.toFloat32Array(), await sa.expAvg.toFloat32Array())).toBeLessThan(1e-5);
  }
  A.dispose();
  B.dispose();
  for (const p of [...a, ...b]) p.dispose();
}

/** The refusals of the projected-gradient and projector entry points: each leaves the optimizer
 *  exactly as it was (the next step gives the bits of an optimizer that saw no refusal). */
export async function galoreProjectedRefusals(dev: string): Promise<void> {
  const a = GALORE_SHAPES.map((s, i) => new Parameter(randn(s, { device: dev, seed: 60 + i }), { name: `w${i}` }));
  const b = GALORE_SHAPES.map((s, i) => new Parameter(randn(s, { device: dev, seed: 60 + i }), { name: `w${i}` }));
  const A = makeGalore(a), B = makeGalore(b);
  const grads = (ps: Parameter[], s: number) => ps.forEach((p, i) => p.grad.copyFrom(new Rng(s * 31 + i).normals(p.numel, 0.5)));
  const R0 = zeros([20, 3], { device: dev });
  // Before the first step: no projector; the first step refreshes, so no projected gradient.
  expectCode(() => B.projector(b[0]), "E_ARG");
  expectCode(() => B.setProjectedGrad(b[0], R0), "E_ARG");
  expect(B.needsFullGrad(b[0])).toBe(true);
  expect(B.needsFullGrad(b[3])).toBe(true);
  expect(B.projectedShape(b[0])).toEqual([20, 3]);
  expect(B.projectedShape(b[1])).toEqual([3, 16]);
  expect(B.projectedShape(b[2])).toEqual([2, 2]);
  grads(a, 1); grads(b, 1);
  A.step(); B.step();
  expect(B.needsFullGrad(b[0])).toBe(false);
  expect(B.needsFullGrad(b[3])).toBe(true);
  const stranger = new Parameter(randn([20, 12], { device: dev, seed: 9 }), { name: "x" });
  expectCode(() => B.setProjectedGrad(b[3], zeros([5], { device: dev })), "E_ARG");            // not projected
  expectCode(() => B.setProjectedGrad(stranger, R0), "E_ARG");                                   // not a parameter
  expectCode(() => B.setProjectedGrad(b[0], zeros([3, 20], { device: dev })), "E_SHAPE");
  expectCode(() => B.setProjectedGrad(b[0], zeros([20, 3], { dtype: "bf16", device: dev })), "E_DTYPE");
  expectCode(() => B.setProjectedGrad(b[0], {} as Tensor), "E_ARG");
  const gone = zeros([20, 3], { device: dev });
  gone.dispose();
  expectCode(() => B.setProjectedGrad(b[0], gone), "E_DISPOSED");
  const q = B.projector(b[0]);
  expect(q.side).toBe("right");
  expect(q.proj.shape).toEqual([3, 12]);
  expect(B.projector(b[1]).side).toBe("left");
  expect(B.projector(b[2]).projB!.shape).toEqual([2, 13]);
  expectCode(() => B.setProjector(b[0], zeros([12, 3], { device: dev })), "E_SHAPE");
  expectCode(() => B.setProjector(b[0], zeros([3, 12], { dtype: "bf16", device: dev })), "E_DTYPE");
  expectCode(() => B.setProjector(b[0], zeros([3, 12], { device: dev }), zeros([3, 12], { device: dev })), "E_ARG");
  expectCode(() => B.setProjector(b[2], zeros([11, 2], { device: dev })), "E_ARG");  // full needs both
  expectCode(() => B.setProjector(b[3], zeros([5], { device: dev })), "E_ARG");
  // A projected gradient given, then made stale by disposing it: the step refuses and changes nothing.
  const stale = zeros([20, 3], { device: dev });
  B.setProjectedGrad(b[0], stale);
  stale.dispose();
  grads(a, 2); grads(b, 2);
  expectCode(() => B.step(), "E_DISPOSED");
  // The same step with b[0]'s own projection given: A's bits (the refusals changed nothing, and
  // on one process the given R is the R the step computes).
  const real = zeros([20, 3], { device: dev });
  projectGradient(b[0].grad, B.projector(b[0]), real, { precision: "f32" });
  B.setProjectedGrad(b[0], real);
  A.step(); B.step();
  for (let i = 0; i < a.length; i++) expect((await rawBytes(b[i].data)).equals(await rawBytes(a[i].data))).toBe(true);
  // setProjector copies in (a fresh optimizer takes A's projectors and its R gives A's next R).
  const c = GALORE_SHAPES.map((s, i) => new Parameter(randn(s, { device: dev, seed: 60 + i }), { name: `w${i}` }));
  const C = makeGalore(c);
  C.setProjector(c[0], A.projector(a[0]).proj);
  C.setProjector(c[2], A.projector(a[2]).proj, A.projector(a[2]).projB);
  expect((await rawBytes(C.projector(c[0]).proj)).equals(await rawBytes(A.projector(a[0]).proj))).toBe(true);
  expect((await rawBytes(C.projector(c[2]).projB!)).equals(await rawBytes(A.projector(a[2]).projB!))).toBe(true);
  // A projected gradient holding a NaN skips the group's step (the scan reads R).
  grads(b, 3);
  const nan = tensor(new Float32Array(60).fill(0.5).map((x, i) => (i === 7 ? NaN : x)), [20, 3], { device: dev });
  const before = await Promise.all(b.map((p) => rawBytes(p.data)));
  const skippedBefore = (await B.skippedStepsPerGroup())[0];
  B.setProjectedGrad(b[0], nan);
  B.step();
  expect((await B.skippedStepsPerGroup())[0]).toBe(skippedBefore + 1);
  expect((await rawBytes(b[0].data)).equals(before[0])).toBe(true);
  expect((await rawBytes(b[1].data)).equals(before[1])).toBe(true);
  expect((await rawBytes(b[3].data)).equals(before[3])).toBe(false);  // the plain group stepped
  for (const o of [A, B, C]) o.dispose();
  for (const p of [...a, ...b, ...c, stranger]) p.dispose();
  for (const t of [R0, real, nan]) t.dispose();
}

/** GrassAdamW stepping on the average of 3 ranks' compact gradients (each rank's lines gathered
 *  with the selection in effect) gives the bits of GrassAdamW stepping on the averaged gradient:
 *  the gather is exact and the average is the same arithmetic. Rows and columns. */
export async function grassCompactAverage(dev: string): Promise<void> {
  const K = 3;
  const shapes = [[19, 6], [5, 14], [4, 3, 5], [6]];
  const make = (ps: Parameter[]) => new GrassAdamW([{ params: ps, rank: 3, updateProjGap: 3, scale: 0.5 }], { lr: 1e-2, weightDecay: 0.05 });
  const a = shapes.map((s, i) => new Parameter(randn(s, { device: dev, seed: 80 + i }), { name: `w${i}` }));
  const b = shapes.map((s, i) => new Parameter(randn(s, { device: dev, seed: 80 + i }), { name: `w${i}` }));
  const A = make(a), B = make(b);
  let compactSteps = 0;
  for (let s = 1; s <= 7; s++) {
    const { each, mean } = rankGrads(shapes, K, s);
    a.forEach((p, i) => p.grad.copyFrom(mean[i]));
    for (let i = 0; i < b.length; i++) {
      const p = b[i];
      if (B.needsFullGrad(p)) { p.grad.copyFrom(mean[i]); continue; }
      const sel = B.selection(p);
      const lines: Float32Array[] = [];
      for (let r = 0; r < K; r++) {
        const gr = tensor(each[r][i], p.shape, { device: dev });
        const out = zeros(B.compactShape(p), { device: dev });
        gatherCompact(gr, sel, out);
        lines.push(await out.toFloat32Array());
        gr.dispose();
        out.dispose();
      }
      p.grad.copyFrom(each[1][i]);  // must not be read
      B.setCompactGrad(p, tensor(meanOf(lines), B.compactShape(p), { device: dev }));
      compactSteps++;
    }
    A.step();
    B.step();
  }
  expect(compactSteps).toBe(4 * 3);
  for (let i = 0; i < a.length; i++) expect((await rawBytes(b[i].data)).equals(await rawBytes(a[i].data))).toBe(true);
  A.dispose();
  B.dispose();
  for (const p of [...a, ...b]) p.dispose();
}

// ---- checkpoints -----------------------------------------------------------------------------------

export interface CkptCase {
  name: string;
  /** Any subset of the parameters (a rank's share): groups without parameters are left out. */
  make(ps: Parameter[]): AnyOptimizer;
}

const nonEmpty = <T extends { params: Parameter[] }>(gs: T[]): T[] => gs.filter((g) => g.params.length > 0);

export const CKPT_CASES: CkptCase[] = [
  { name: "AdamW", make: (ps) => new AdamW(ps, { lr: 1e-2, weightDecay: 0.05 }) },
  {
    name: "GaLoreAdamW rank 3, gap 3",
    make: (ps) => new GaLoreAdamW(nonEmpty([
      { params: ps.filter((x) => x.shape.length >= 2), rank: 3, updateProjGap: 3, scale: 0.25 },
      { params: ps.filter((x) => x.shape.length < 2) }]), { lr: 1e-2, weightDecay: 0.05 }),
  },
  {
    name: "GrassAdamW topk rank 3, gap 3",
    make: (ps) => new GrassAdamW([{ params: ps, rank: 3, updateProjGap: 3, scale: 0.5 }], { lr: 1e-2, weightDecay: 0.05 }),
  },
];

/** Finite gradients of step `s` (the same on every simulated rank); with `nanOn`, parameter 1 of
 *  that rank's copy gets a NaN (a skip on one rank only). */
function setFiniteGrads(ps: Parameter[], s: number, nan = false): void {
  ps.forEach((p, i) => {
    const g = new Rng(s * 1000 + i).normals(p.numel, 0.5);
    if (nan && i === 1) g[0] = NaN;
    p.grad.copyFrom(g);
  });
}

interface Sim { params: Parameter[][]; opts: DistributedOptimizer[] }

function simulate(c: CkptCase, world: number, dev: string, compress: boolean): Sim {
  const d = resolveDevice(dev);
  const params = Array.from({ length: world }, () => makeParams("f32", dev, 500));
  const opts = params.map((ps, r) => new DistributedOptimizer(new ProcessGroup(r, world, d, null), ps,
    (g: ParamGroupSpec<GroupOptions>[]) => c.make(g.flatMap((x) => x.params)) as AnyOptimizer, { bucketBytes: 4096, compress }));
  return { params, opts };
}

/** One step on every simulated rank, then the owners' parameters copied to the others. */
function simStep(sim: Sim, s: number, nanOnRank = -1): void {
  sim.params.forEach((ps, r) => setFiniteGrads(ps, s, r === nanOnRank));
  for (const o of sim.opts) o.step();
  const ref = sim.params[0];
  ref.forEach((p, j) => {
    const owner = Math.max(0, sim.opts[0].owner(p));
    for (let r = 0; r < sim.params.length; r++) if (r !== owner) sim.params[r][j].data.copyFrom(sim.params[owner][j].data);
  });
}

function disposeSim(sim: Sim): void {
  for (const o of sim.opts) o.dispose();
  for (const ps of sim.params) for (const p of ps) p.dispose();
}

/** Parameters of every rank of `sim` set to the bytes of `from`. */
function copyParams(sim: Sim, from: Parameter[]): void {
  for (const ps of sim.params) ps.forEach((p, j) => p.data.copyFrom(from[j].data));
}

/** Save after 5 steps on `saveWorld` simulated ranks, load on `loadWorld`, 5 more steps: the
 *  parameters equal those of one plain optimizer stepping 10 times on the same (averaged)
 *  gradients, bit for bit (each rank's step is the single-process step of its share). */
export async function resumeOnOtherWorld(c: CkptCase, dev: string, saveWorld: number, loadWorld: number, compress: boolean): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slimopt-dist-ckpt-"));
  try {
    const plainParams = makeParams("f32", dev, 500);
    const plain = c.make(plainParams);
    for (let s = 1; s <= 10; s++) { setFiniteGrads(plainParams, s); plain.step(); }

    const first = simulate(c, saveWorld, dev, compress);
    for (let s = 1; s <= 5; s++) simStep(first, s);
    await Promise.all(first.opts.map((o) => o.save(dir)));
    const files = fs.readdirSync(dir).sort();
    expect(files).toEqual(Array.from({ length: saveWorld }, (_, k) => `shard-${k}-of-${saveWorld}.safetensors`));

    const second = simulate(c, loadWorld, dev, compress);
    copyParams(second, first.params[0]);
    for (const o of second.opts) await o.load(dir);
    for (let s = 6; s <= 10; s++) simStep(second, s);
    for (let r = 0; r < loadWorld; r++)
      for (let j = 0; j < plainParams.length; j++)
        if (!(await rawBytes(second.params[r][j].data)).equals(await rawBytes(plainParams[j].data)))
          throw new Error(`${c.name} ${saveWorld} -> ${loadWorld} ranks, compress ${compress}: rank ${r} parameter ${j} differs from the uninterrupted run`);
    // Every parameter has its state on exactly one rank.
    const owners = second.params[0].map((p) => second.opts[0].owner(p));
    expect(new Set(owners).size).toBe(Math.min(loadWorld, plainParams.length));
    disposeSim(first);
    disposeSim(second);
    plain.dispose();
    for (const p of plainParams) p.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A DistributedOptimizer over `pg` (a real world of one): 5 steps, save, fresh parameters and a
 *  fresh optimizer, load, 5 steps: bit for bit the uninterrupted 10 steps, state included. */
export async function resumeWorldOfOne(pg: ProcessGroup, c: CkptCase, dev: string, compress: boolean): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slimopt-dist-ckpt1-"));
  try {
    const make = (g: ParamGroupSpec<GroupOptions>[]) => c.make(g.flatMap((x) => x.params)) as AnyOptimizer;
    const pa = makeParams("f32", dev, 500);
    const A = new DistributedOptimizer(pg, pa, make, { compress });
    let at5: Buffer[] = [];
    for (let s = 1; s <= 10; s++) {
      setFiniteGrads(pa, s);
      A.step();
      if (s === 5) {
        await A.save(dir);
        at5 = await Promise.all(pa.map((p) => rawBytes(p.data)));
      }
    }
    const pb = makeParams("f32", dev, 999);
    pb.forEach((p, j) => p.data.copyFrom(tensor(new Float32Array(at5[j].buffer, at5[j].byteOffset, p.numel), p.shape, { device: dev })));
    const B = new DistributedOptimizer(pg, pb, make, { compress });
    await B.load(dir);
    for (let s = 6; s <= 10; s++) {
      setFiniteGrads(pb, s);
      B.step();
      expect(B.bytesCommunicatedLastStep()).toBeGreaterThan(0);
    }
    for (let j = 0; j < pa.length; j++) expect((await rawBytes(pb[j].data)).equals(await rawBytes(pa[j].data))).toBe(true);
    const sa = A.inner!.stateDict(), sb = B.inner!.stateDict();
    expect(Object.keys(sb.tensors).sort()).toEqual(Object.keys(sa.tensors).sort());
    for (const k of Object.keys(sa.tensors)) expect((await rawBytes(sb.tensors[k])).equals(await rawBytes(sa.tensors[k]))).toBe(true);
    expect(B.inner!.stepCount).toBe(A.inner!.stepCount);
    A.dispose();
    B.dispose();
    for (const p of [...pa, ...pb]) p.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function innerSnapshot(o: DistributedOptimizer): Promise<string> {
  if (!o.inner) return "";
  const sd = o.inner.stateDict();
  const parts: string[] = [JSON.stringify(o.inner.paramGroups.map((g) => g.lr)), String(o.inner.stepCount)];
  for (const k of Object.keys(sd.tensors).sort()) parts.push(k, (await rawBytes(sd.tensors[k])).toString("hex"));
  return parts.join("|");
}

/** Bad checkpoints: each load is refused with E_CHECKPOINT and changes nothing. */
export async function badCheckpoints(dev: string): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "slimopt-dist-bad-"));
  const c = CKPT_CASES[1];
  try {
    const good = path.join(root, "good");
    const two = simulate(c, 2, dev, true);
    for (let s = 1; s <= 4; s++) simStep(two, s);
    await Promise.all(two.opts.map((o) => o.save(good)));
    // The victim: one rank of a world of 2 with state of its own, and a world of one.
    const victim = simulate(c, 2, dev, true);
    for (let s = 1; s <= 2; s++) simStep(victim, s);
    const before = await Promise.all(victim.opts.map(innerSnapshot));
    const compactBefore = victim.params[0].map((p) => victim.opts[0].compactNext(p));
    const variant = (name: string, edit: (dir: string) => void): string => {
      const d = path.join(root, name);
      fs.cpSync(good, d, { recursive: true });
      edit(d);
      return d;
    };
    const f0 = "shard-0-of-2.safetensors", f1 = "shard-1-of-2.safetensors";
    const dirs: Record<string, string> = {
      missing: variant("missing", (d) => fs.rmSync(path.join(d, f1))),
      empty: variant("empty", (d) => { fs.rmSync(path.join(d, f0)); fs.rmSync(path.join(d, f1)); }),
      truncated: variant("truncated", (d) => { const f = path.join(d, f1); fs.truncateSync(f, fs.statSync(f).size - 3); }),
      garbage: variant("garbage", (d) => fs.writeFileSync(path.join(d, f0), Buffer.from("not a safetensors file at all"))),
      // Two sets, neither complete and consistent.
      twoSets: variant("twoSets", (d) => { fs.copyFileSync(path.join(d, f0), path.join(d, "shard-0-of-1.safetensors")); fs.rmSync(path.join(d, f1)); }),
      renamed: variant("renamed", (d) => { fs.renameSync(path.join(d, f1), path.join(d, "shard-1-of-3.safetensors")); fs.copyFileSync(path.join(d, f0), path.join(d, "shard-0-of-3.safetensors")); fs.copyFileSync(path.join(d, f0), path.join(d, "shard-2-of-3.safetensors")); fs.rmSync(path.join(d, f0)); }),
      plainFile: variant("plainFile", (d) => fs.copyFileSync(path.join(d, f0), path.join(d, f1))),
    };
    // Shards of two different saves (steps 4 and 5).
    const later = path.join(root, "later");
    simStep(two, 5);
    await Promise.all(two.opts.map((o) => o.save(later)));
    dirs.mixed = variant("mixed", (d) => fs.copyFileSync(path.join(later, f1), path.join(d, f1)));
    for (const [name, d] of Object.entries(dirs)) {
      for (const o of victim.opts) {
        let code = "none";
        try { await o.load(d); } catch (e) { code = (e as { code?: string }).code ?? String(e); }
        if (code !== "E_CHECKPOINT") throw new Error(`load of the "${name}" checkpoint: ${code}, expected E_CHECKPOINT`);
      }
    }
    // Sets of two world sizes: the newest complete one loads (a broken one beside it is passed
    // over); two complete sets of the same step are ambiguous.
    const oneRank = simulate(c, 1, dev, true);
    for (let s = 1; s <= 3; s++) simStep(oneRank, s);
    const both = variant("both", () => undefined);
    await oneRank.opts[0].save(both);                                     // step 3 beside the 2-set of step 4
    fs.copyFileSync(path.join(both, f0), path.join(both, "shard-0-of-3.safetensors"));  // an incomplete set of 3
    const loader = simulate(c, 1, dev, true);
    await loader.opts[0].load(both);
    expect(await innerSnapshot(loader.opts[0])).not.toEqual(await innerSnapshot(oneRank.opts[0]));
    expect(loader.opts[0].inner!.stepCount).toBe(4);
    const tie = variant("tie", () => undefined);
    simStep(oneRank, 4);
    await oneRank.opts[0].save(tie);
    await expect(loader.opts[0].load(tie)).rejects.toMatchObject({ code: "E_CHECKPOINT" });
    // Other parameters (another shape) and another optimizer are refused as well.
    const shapes = simulate({ name: "x", make: c.make }, 1, dev, true);
    shapes.params[0][2] = new Parameter(randn([80, 71], { device: dev, seed: 1 }), { name: "other" });
    const otherShape = new DistributedOptimizer(new ProcessGroup(0, 1, resolveDevice(dev), null), shapes.params[0], (g) => c.make(g.flatMap((x) => x.params)) as AnyOptimizer);
    await expect(otherShape.load(good)).rejects.toMatchObject({ code: "E_CHECKPOINT" });
    const adam = simulate(CKPT_CASES[0], 2, dev, true);
    await expect(adam.opts[0].load(good)).rejects.toMatchObject({ code: "E_CHECKPOINT" });
    // A skip on one rank only (a NaN in its parameter): the group counters differ between shards,
    // which a load on another world size cannot merge; the same world size loads.
    const skewed = simulate(CKPT_CASES[0], 2, dev, true);
    const nanRank = skewed.opts[0].owner(skewed.params[0][1]);
    for (let s = 1; s <= 3; s++) simStep(skewed, s, s === 2 ? nanRank : -1);
    expect(await skewed.opts[nanRank].skippedSteps()).toBe(1);
    expect(await skewed.opts[1 - nanRank].skippedSteps()).toBe(0);
    const skewDir = path.join(root, "skewed");
    await Promise.all(skewed.opts.map((o) => o.save(skewDir)));
    const one = simulate(CKPT_CASES[0], 1, dev, true);
    await expect(one.opts[0].load(skewDir)).rejects.toMatchObject({ code: "E_CHECKPOINT" });
    const same = simulate(CKPT_CASES[0], 2, dev, true);
    for (const o of same.opts) await o.load(skewDir);
    expect(await Promise.all(same.opts.map(innerSnapshot))).toEqual(await Promise.all(skewed.opts.map(innerSnapshot)));
    // Nothing changed by any refusal.
    expect(await Promise.all(victim.opts.map(innerSnapshot))).toEqual(before);
    expect(victim.params[0].map((p) => victim.opts[0].compactNext(p))).toEqual(compactBefore);
    await expect(victim.opts[0].load(path.join(root, "nowhere"))).rejects.toMatchObject({ code: "E_CHECKPOINT" });
    await expect(victim.opts[0].load("" as string)).rejects.toMatchObject({ code: "E_ARG" });
    for (const s of [two, victim, shapes, adam, skewed, one, same, oneRank, loader]) disposeSim(s);
    otherShape.dispose();
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

/** Every GaLore projection side through a compressing DistributedOptimizer of one rank (R of the
 *  "full" side goes through the wrapper's r x cols scratch; bf16 gradients through its f32 copy on
 *  CUDA): the wrapped optimizer's own bits, and R's bytes on the steps that keep the projector. */
export async function wrapperEverySide(pg: ProcessGroup, dev: string): Promise<void> {
  for (const dtype of ["f32", "bf16"] as DType[]) {
    const mk = () => GALORE_SHAPES.map((s, i) => new Parameter(randn(s, { dtype, device: dev, seed: 70 + i }), { name: `w${i}` }));
    const make = (ps: Parameter[]) => new GaLoreAdamW([
      { params: [ps[0]], rank: 3, updateProjGap: 2, projType: "reverse_std" },
      { params: [ps[1]], rank: 4, updateProjGap: 2 },
      { params: [ps[2]], rank: 2, updateProjGap: 2, projType: "full" },
      { params: [ps[3]] }], { lr: 1e-2, weightDecay: 0.05 });
    const a = mk(), b = mk();
    const plain = make(a);
    const wrapped = new DistributedOptimizer(pg, b, (g) => make(g.flatMap((x) => x.params)) as AnyOptimizer);
    // R: [20, 12] reverse_std -> left, 3 x 12; [10, 16] std -> left, 4 x 16; full 2 x 2; the bias whole.
    const rFloats = 3 * 12 + 4 * 16 + 2 * 2;
    const rBytes = rFloats * 4 + 5 * (dtype === "f32" ? 4 : 2);
    for (let s = 1; s <= 4; s++) {
      [a, b].forEach((ps) => ps.forEach((p, i) => p.grad.copyFrom(new Rng(s * 17 + i).normals(p.numel, 0.5))));
      plain.step();
      wrapped.step();
      const full = b.reduce((n, p) => n + p.grad.nbytes, 0);
      expect(wrapped.bytesCommunicatedLastStep()).toBe(s % 2 === 0 ? rBytes : full);
    }
    for (let i = 0; i < a.length; i++) expect((await rawBytes(b[i].data)).equals(await rawBytes(a[i].data))).toBe(true);
    // The averaging buffers, and the full side's r x cols scratch (on CUDA bf16 also the largest f32 gradient).
    expect(wrapped.scratchBytes()).toBe(rFloats * 4 + 2 * 13 * 4 + (dev !== "cpu" && dtype !== "f32" ? 20 * 12 * 4 : 0));
    plain.dispose();
    wrapped.dispose();
    for (const p of [...a, ...b]) p.dispose();
  }
}

/** A projected gradient is used by stepParam() as by step(): a round of stepParam over every
 *  parameter, R given for the rank tensors on the steps that keep the projector, gives step()'s bits. */
export async function galoreProjectedStepParam(dev: string): Promise<void> {
  const mk = () => GALORE_SHAPES.map((s, i) => new Parameter(randn(s, { device: dev, seed: 90 + i }), { name: `w${i}` }));
  const a = mk(), b = mk();
  const A = makeGalore(a), B = makeGalore(b);
  const made: Tensor[] = [];
  const give = (O: GaLoreAdamW, p: Parameter) => {
    if (p.shape.length < 2 || O.needsFullGrad(p)) return;
    const r = zeros(O.projectedShape(p), { device: dev });
    projectGradient(p.grad, O.projector(p), r, { precision: "f32" });
    p.grad.copyFrom(new Float32Array(p.numel).fill(3));  // not read once R is given
    O.setProjectedGrad(p, r);
    made.push(r);
  };
  let given = 0;
  for (let s = 1; s <= 5; s++) {
    [a, b].forEach((ps) => ps.forEach((p, i) => p.grad.copyFrom(new Rng(s * 13 + i).normals(p.numel, 0.5))));
    for (const p of a) give(A, p);
    A.step();
    for (const p of b) {
      const before = made.length;
      give(B, p);
      given += made.length - before;
      B.stepParam(p);
    }
  }
  expect(given).toBe(3 * 3);  // steps 2, 3 and 5 of the three rank tensors
  for (let i = 0; i < a.length; i++) expect((await rawBytes(b[i].data)).equals(await rawBytes(a[i].data))).toBe(true);
  A.dispose();
  B.dispose();
  for (const t of made) t.dispose();
  for (const p of [...a, ...b]) p.dispose();
}
