// The training-loop pieces of issue 9: layer-wise stepParam (bit-identical to step() for every
// optimizer of the registry), gradient accumulation, clipGradNorm against a float64 reference,
// optimizer-side clipping, and the LR schedules against their closed forms. CPU backend; the CUDA
// checks are in test/gpu/trainloop.gpu.test.ts.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import {
  AdamW, AdamW4bit, AdamW8bit, addGrad, applySchedule, clipGradNorm, constantLR, cosineWithWarmup, DType, linearWarmup, Parameter, tensor, Tensor,
  warmupStableDecay,
} from "../lib";
import { makeParams, setGrads, snapshot, snapshotDiff } from "./checkpoint_helpers";
import { expectCode } from "./helpers";
import { OPTIMIZERS } from "./optimizers";
import { Rng, roundTo } from "./reference";

const DEV = "cpu";
// Steps of setGrads without its NaNs (steps 4 and 8 poison one parameter).
const FINITE_STEPS = [1, 2, 3, 5, 6, 7];

/** Backprop order: the last layer's gradient is complete first. */
function stepRound(opt: { stepParam(p: Parameter): boolean }, params: Parameter[]): boolean[] {
  return [...params].reverse().map((p) => opt.stepParam(p));
}

describe("stepParam over every parameter equals one step(), bit for bit", () => {
  for (const c of OPTIMIZERS) {
    for (const dtype of c.dtypes) {
      test(`${c.name} ${dtype}`, async () => {
        const pa = makeParams(dtype, DEV), pb = makeParams(dtype, DEV);
        const A = c.make(pa), B = c.make(pb);
        for (const s of FINITE_STEPS) {
          setGrads(pa, s);
          setGrads(pb, s);
          A.step();
          const applied = stepRound(B, pb);
          expect(applied.every((x) => x)).toBe(true);
          const d = snapshotDiff(await snapshot(A, pa), await snapshot(B, pb));
          expect(`step ${s}: ${d}`).toBe(`step ${s}: `);
        }
        expect(B.stepCount).toBe(FINITE_STEPS.length);
        expect(await B.completedStepsPerGroup()).toEqual(await A.completedStepsPerGroup());
      });
    }
  }
});

// AdamW8bit/4bit are not in the shared registry (their own suites cover checkpoints); the
// layer-wise path runs through their native group engine too.
describe("stepParam equals step() for the quantized AdamWs", () => {
  for (const [name, make] of [
    ["AdamW8bit", (p: Parameter[]) => new AdamW8bit(p, { lr: 1e-2, weightDecay: 0.05 })],
    ["AdamW4bit stochastic rounding", (p: Parameter[]) => new AdamW4bit(p, { lr: 1e-2, weightDecay: 0.05, stochasticRounding: true, seed: 3 })],
  ] as const) {
    for (const dtype of ["f32", "bf16"] as DType[]) {
      test(`${name} ${dtype}`, async () => {
        const pa = makeParams(dtype, DEV), pb = makeParams(dtype, DEV);
        const A = make(pa), B = make(pb);
        for (const s of FINITE_STEPS.slice(0, 4)) {
          setGrads(pa, s);
          setGrads(pb, s);
          A.step();
          stepRound(B, pb);
          expect(`step ${s}: ${snapshotDiff(await snapshot(A, pa), await snapshot(B, pb))}`).toBe(`step ${s}: `);
        }
      });
    }
  }
});

/** Writes, into each gradient, the running sum of the first k micro-batch gradients (computed in
 *  float64 and rounded once to the dtype, as an accumulating backward in that dtype would not be:
 *  the test needs the same gradient on both sides, not a particular rounding). */
function microBatchGrads(params: Parameter[], step: number, micro: number): Float64Array[] {
  return params.map((p, i) => {
    const sum = new Float64Array(p.numel);
    for (let k = 0; k <= micro; k++) {
      const g = new Rng(step * 100003 + k * 101 + i).normals(p.numel, 0.3 + 0.1 * k);
      for (let j = 0; j < g.length; j++) sum[j] += g[j];
    }
    return sum;
  });
}

function writeGrads(params: Parameter[], values: Float64Array[], scale = 1): void {
  params.forEach((p, i) => p.grad.copyFrom(Float32Array.from(values[i], (x) => roundTo(p.dtype, x) * scale)));
}

describe("accumulate(4): four micro-batches equal one step on the summed gradient", () => {
  for (const c of OPTIMIZERS) {
    const dtype = c.dtypes[0];
    test(`${c.name} ${dtype}, step() and stepParam()`, async () => {
      const pa = makeParams(dtype, DEV), pb = makeParams(dtype, DEV), pc = makeParams(dtype, DEV);
      const A = c.make(pa), B = c.make(pb), C = c.make(pc);
      A.accumulate(4);
      C.accumulate(4);
      for (let s = 1; s <= 3; s++) {
        for (let k = 0; k < 4; k++) {
          const sums = microBatchGrads(pa, s, k);
          writeGrads(pa, sums);
          writeGrads(pc, sums);
          expect(A.updatesNow).toBe(k === 3);
          A.step();
          A.zeroGrad();  // the usual loop: inside the window it must not wipe the running sum
          const applied = stepRound(C, pc);
          expect(applied.every((x) => x === (k === 3))).toBe(true);
          if (k < 3) expect((await pa[2].grad.toFloat32Array())[0]).not.toBe(0);
        }
        // After the window's update zeroGrad() did zero.
        expect((await pa[2].grad.toFloat32Array()).every((x) => x === 0)).toBe(true);
        writeGrads(pb, microBatchGrads(pb, s, 3));
        B.step();
        const sb = await snapshot(B, pb);
        expect(snapshotDiff(await snapshot(A, pa), sb)).toBe("");
        expect(snapshotDiff(await snapshot(C, pc), sb)).toBe("");
      }
      expect(A.stepCount).toBe(3);
      expect(C.stepCount).toBe(3);
    });
  }

  test("average: true steps on the mean (AdamW f32 and bf16)", async () => {
    for (const dtype of ["f32", "bf16"] as DType[]) {
      const pa = makeParams(dtype, DEV), pb = makeParams(dtype, DEV);
      const A = new AdamW(pa, { lr: 1e-2, weightDecay: 0.05, eps: 1e-3 }), B = new AdamW(pb, { lr: 1e-2, weightDecay: 0.05, eps: 1e-3 });
      A.accumulate(4, { average: true });
      for (let s = 1; s <= 2; s++) {
        for (let k = 0; k < 4; k++) {
          writeGrads(pa, microBatchGrads(pa, s, k));
          stepRound(A, pa);
        }
        // A power-of-two scale is exact: B's gradients are the rounded sums times 1/4.
        writeGrads(pb, microBatchGrads(pb, s, 3), 0.25);
        B.step();
        expect(snapshotDiff(await snapshot(A, pa), await snapshot(B, pb))).toBe("");
      }
    }
  });
});

describe("stepParam: rounds, the step clock and the non-finite skip", () => {
  test("a NaN in one gradient skips that parameter only; the round counts as completed and skipped", async () => {
    const pa = makeParams("f32", DEV);
    const A = new AdamW(pa, { lr: 1e-2 });
    setGrads(pa, 1);
    stepRound(A, pa);
    const before = await Promise.all(pa.map((p) => p.data.toFloat32Array()));
    setGrads(pa, 4);  // NaN in parameter 1
    stepRound(A, pa);
    const after = await Promise.all(pa.map((p) => p.data.toFloat32Array()));
    pa.forEach((_, i) => {
      const same = Buffer.from(before[i].buffer).equals(Buffer.from(after[i].buffer));
      expect(`${i}:${same}`).toBe(`${i}:${i === 1}`);
    });
    expect(await A.completedStepsPerGroup()).toEqual([2]);
    expect(await A.skippedStepsPerGroup()).toEqual([1]);
    // All gradients non-finite: skipped as step() skips it.
    for (const p of pa) p.grad.copyFrom(new Float32Array(p.numel).fill(Infinity));
    stepRound(A, pa);
    expect(await A.completedStepsPerGroup()).toEqual([2]);
    expect(await A.skippedStepsPerGroup()).toEqual([2]);
    const last = await Promise.all(pa.map((p) => p.data.toFloat32Array()));
    pa.forEach((_, i) => expect(Buffer.from(last[i].buffer).equals(Buffer.from(after[i].buffer))).toBe(true));
  });

  test("endStep() closes a round that leaves parameters out; they stay untouched", async () => {
    const pa = makeParams("f32", DEV), pb = makeParams("f32", DEV);
    const A = new AdamW(pa, { lr: 1e-2 }), B = new AdamW(pb.slice(0, 3), { lr: 1e-2 });
    for (const s of [1, 2]) {
      setGrads(pa, s);
      setGrads(pb, s);
      for (const p of pa.slice(0, 3)) A.stepParam(p);
      A.endStep();
      B.step();
    }
    for (let i = 0; i < pa.length; i++) {
      const a = await pa[i].data.toFloat32Array(), b = await pb[i].data.toFloat32Array();
      expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);  // pb[3..] never stepped either
    }
    expect(A.stepCount).toBe(2);
    expect(await A.completedStepsPerGroup()).toEqual([2]);
  });

  test("refusals change nothing", async () => {
    const pa = makeParams("f32", DEV);
    const A = new AdamW(pa, { lr: 1e-2 });
    const other = makeParams("f32", DEV)[0];
    setGrads(pa, 1);
    const snap0 = await snapshot(A, pa);
    expectCode(() => A.stepParam(other), "E_ARG");
    expectCode(() => A.stepParam(undefined as unknown as Parameter), "E_ARG");
    A.stepParam(pa[0]);
    const snap1 = await snapshot(A, pa);
    expect(snapshotDiff(snap0, snap1)).not.toBe("");
    expectCode(() => A.stepParam(pa[0]), "E_ARG");        // twice in one round
    expectCode(() => A.step(), "E_ARG");                  // step() while a round is open
    expectCode(() => A.accumulate(2), "E_ARG");           // inside a round
    expectCode(() => A.setSchedule(constantLR()), "E_ARG");
    const g = pa[1].grad;
    pa[1].grad = tensor(new Float32Array(3), [3], { device: DEV });
    expectCode(() => A.stepParam(pa[1]), "E_SHAPE");
    pa[1].grad = g;
    expect(snapshotDiff(snap1, await snapshot(A, pa))).toBe("");
    for (const p of pa.slice(1)) A.stepParam(p);
    expect(A.stepCount).toBe(1);
    expectCode(() => A.accumulate(0), "E_ARG");
    expectCode(() => A.accumulate(1.5), "E_ARG");
    expectCode(() => A.setGradClipping({ maxNorm: -1, mode: "perParameter" }), "E_ARG");
    expectCode(() => A.setGradClipping({ maxNorm: 1, mode: "global" as "perParameter" }), "E_ARG");
    A.setSchedule(() => NaN);
    const snap2 = await snapshot(A, pa);
    expectCode(() => A.step(), "E_ARG");
    expectCode(() => A.stepParam(pa[0]), "E_ARG");
    expect(snapshotDiff(snap2, await snapshot(A, pa))).toBe("");
    expect(A.stepCount).toBe(1);
  });

  test("the update count travels with a checkpoint", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slimopt-trainloop-"));
    try {
      const pa = makeParams("f32", DEV);
      const A = new AdamW(pa, { lr: 1e-2 });
      for (const s of [1, 2, 3]) { setGrads(pa, s); stepRound(A, pa); }
      const file = path.join(dir, "a.safetensors");
      await A.save(file);
      const B = new AdamW(makeParams("f32", DEV), { lr: 1e-2 });
      expect(B.stepCount).toBe(0);
      await B.load(file);
      expect(B.stepCount).toBe(3);
      A.stepParam(pa[0]);
      await expect(A.save(file)).rejects.toMatchObject({ code: "E_ARG" });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---- clipping ----------------------------------------------------------------------------------

function norm64(values: Float32Array[]): number {
  let s = 0;
  for (const v of values) for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}

describe("clipGradNorm", () => {
  const shapes = [[1], [7], [4097], [33, 17], [3, 5, 11]];
  for (const dtype of ["f32", "bf16", "f16"] as DType[]) {
    test(`${dtype}: the norm and the scaled gradients against float64`, async () => {
      const rng = new Rng(77);
      const grads = shapes.map((s) => tensor(rng.normals(s.reduce((a, b) => a * b, 1), 0.7), s, { dtype, device: DEV }));
      const before = await Promise.all(grads.map((g) => g.toFloat32Array()));
      const ref = norm64(before);
      const maxNorm = ref / 3;
      const r = clipGradNorm(grads, maxNorm);
      const n = await r.norm();
      expect(Math.abs(n - ref) / ref).toBeLessThan(1e-5);
      const f = Math.min(1, maxNorm / (ref + 1e-6));
      expect(Math.abs((await r.factor()) - f) / f).toBeLessThan(1e-5);
      const after = await Promise.all(grads.map((g) => g.toFloat32Array()));
      let worst = 0;
      after.forEach((a, k) => {
        for (let i = 0; i < a.length; i++) {
          const want = roundTo(dtype, before[k][i] * f);
          const tol = dtype === "f32" ? 2e-6 : 1e-2;
          worst = Math.max(worst, Math.abs(a[i] - want) / (Math.abs(want) + 1e-30) > tol ? 1 : 0);
        }
      });
      expect(worst).toBe(0);
      expect(norm64(after)).toBeCloseTo(maxNorm, dtype === "f32" ? 4 : 1);
      // Under the bound: untouched, bit for bit.
      const again = await Promise.all(grads.map((g) => g.toTypedArray()));
      const r2 = clipGradNorm(grads, maxNorm * 10);
      expect(await r2.factor()).toBe(1);
      const same = await Promise.all(grads.map((g) => g.toTypedArray()));
      same.forEach((s, k) => expect(Buffer.from(s.buffer).equals(Buffer.from(again[k].buffer))).toBe(true));
    });
  }

  test("Parameters, Infinity (norm only), empty lists, non-finite gradients", async () => {
    const ps = makeParams("f32", DEV);
    const g0 = await Promise.all(ps.map((p) => p.grad.toFloat32Array()));
    setGrads(ps, 1);
    const g1 = await Promise.all(ps.map((p) => p.grad.toFloat32Array()));
    void g0;
    const r = clipGradNorm(ps, Infinity);
    expect(Math.abs((await r.norm()) - norm64(g1)) / norm64(g1)).toBeLessThan(1e-5);
    const g2 = await Promise.all(ps.map((p) => p.grad.toFloat32Array()));
    g2.forEach((g, k) => expect(Buffer.from(g.buffer).equals(Buffer.from(g1[k].buffer))).toBe(true));
    expect(await clipGradNorm([], 1).norm()).toBe(0);
    setGrads(ps, 4);  // a NaN
    expect(Number.isNaN(await clipGradNorm(ps, 1).norm())).toBe(true);
  });

  test("bad input is refused before anything runs", async () => {
    const g = tensor([3, 4], [2], { device: DEV });
    expectCode(() => clipGradNorm([g], 0), "E_ARG");
    expectCode(() => clipGradNorm([g], -1), "E_ARG");
    expectCode(() => clipGradNorm([g], NaN), "E_ARG");
    expectCode(() => clipGradNorm("x" as unknown as Tensor[], 1), "E_ARG");
    expectCode(() => clipGradNorm([g, 3 as unknown as Tensor], 1), "E_ARG");
    expectCode(() => clipGradNorm([g, tensor(Int32Array.from([1]), [1], { device: DEV })], 1), "E_DTYPE");
    const d = tensor([1], [1], { device: DEV });
    d.dispose();
    expectCode(() => clipGradNorm([g, d], 1), "E_DISPOSED");
    expect(Array.from(await g.toFloat32Array())).toEqual([3, 4]);
  });
});

describe("addGrad", () => {
  test("dst += alpha * src against float64, every dtype pair; a loop accumulating fresh gradients", async () => {
    const rng = new Rng(12);
    const n = 4097;
    for (const dt of ["f32", "bf16", "f16"] as DType[]) for (const st of ["f32", "bf16", "f16"] as DType[]) {
      const d0 = Float32Array.from(rng.normals(n), (x) => roundTo(dt, x));
      const s0 = Float32Array.from(rng.normals(n), (x) => roundTo(st, x));
      const d = tensor(d0, [n], { dtype: dt, device: DEV }), s = tensor(s0, [n], { dtype: st, device: DEV });
      addGrad(d, s, -0.75);
      const got = await d.toFloat32Array();
      let bad = 0;
      for (let i = 0; i < n; i++) {
        const want = roundTo(dt, Math.fround(d0[i] + Math.fround(-0.75 * s0[i])));
        if (got[i] !== want) bad++;
      }
      expect(`${dt}+=${st}: ${bad}`).toBe(`${dt}+=${st}: 0`);
    }
    // With accumulate(4): addGrad of each micro-batch's gradient equals one step on the sum.
    const pa = makeParams("f32", DEV), pb = makeParams("f32", DEV);
    const A = new AdamW(pa, { lr: 1e-2 }), B = new AdamW(pb, { lr: 1e-2 });
    A.accumulate(4);
    A.zeroGrad();
    const sums = pa.map((p) => new Float32Array(p.numel));
    for (let k = 0; k < 4; k++) {
      pa.forEach((p, i) => {
        const g = rng.normals(p.numel, 0.3);
        for (let j = 0; j < g.length; j++) sums[i][j] = Math.fround(sums[i][j] + g[j]);
        const t = tensor(g, [...p.shape], { device: DEV });
        addGrad(p, t);
        t.dispose();
      });
      A.step();
      A.zeroGrad();
    }
    pb.forEach((p, i) => p.grad.copyFrom(sums[i]));
    B.step();
    expect(snapshotDiff(await snapshot(A, pa), await snapshot(B, pb))).toBe("");
  });

  test("refusals change nothing", async () => {
    const d = tensor([1, 2, 3], [3], { device: DEV });
    expectCode(() => addGrad(d, tensor([1, 2], [2], { device: DEV })), "E_SHAPE");
    expectCode(() => addGrad(d, tensor(Int32Array.from([1, 2, 3]), [3], { device: DEV })), "E_DTYPE");
    expectCode(() => addGrad(d, tensor([1, 2, 3], [3], { device: DEV }), NaN), "E_ARG");
    expectCode(() => addGrad(d, [1, 2, 3] as unknown as Tensor), "E_ARG");
    const gone = tensor([1, 2, 3], [3], { device: DEV });
    gone.dispose();
    expectCode(() => addGrad(d, gone), "E_DISPOSED");
    expect(Array.from(await d.toFloat32Array())).toEqual([1, 2, 3]);
  });
});

describe("optimizer-side clipping (setGradClipping)", () => {
  test("perParameter: each gradient clipped by its own norm; stepParam equals step()", async () => {
    const pa = makeParams("f32", DEV), pb = makeParams("f32", DEV), pc = makeParams("f32", DEV);
    const mk = (p: Parameter[]) => new AdamW(p, { lr: 1e-2, weightDecay: 0.05 });
    const A = mk(pa), B = mk(pb), C = mk(pc);
    A.setGradClipping({ maxNorm: 0.5, mode: "perParameter" });
    B.setGradClipping({ maxNorm: 0.5, mode: "perParameter" });
    for (const s of [1, 2, 3]) {
      setGrads(pa, s); setGrads(pb, s); setGrads(pc, s);
      A.step();
      stepRound(B, pb);
      for (const p of pc) clipGradNorm([p], 0.5);
      C.step();
      const sc = await snapshot(C, pc);
      expect(snapshotDiff(await snapshot(A, pa), sc)).toBe("");
      expect(snapshotDiff(await snapshot(B, pb), sc)).toBe("");
    }
  });

  // The global norm is a float sum: the same parameter order gives the same bits (B steps in
  // step()'s order); another order (D, backprop order) agrees to f32 rounding.
  test("previousGlobal: the first update unclipped, each next one scaled by the previous global norm", async () => {
    const pa = makeParams("f32", DEV), pb = makeParams("f32", DEV), pc = makeParams("f32", DEV), pd = makeParams("f32", DEV);
    const mk = (p: Parameter[]) => new AdamW(p, { lr: 1e-2, weightDecay: 0.05 });
    const A = mk(pa), B = mk(pb), C = mk(pc), D = mk(pd);
    const maxNorm = 2;
    for (const o of [A, B, D]) o.setGradClipping({ maxNorm, mode: "previousGlobal" });
    let prev: number | undefined;
    for (const s of [1, 2, 3]) {
      setGrads(pa, s); setGrads(pb, s); setGrads(pc, s); setGrads(pd, s);
      const raw = await Promise.all(pc.map((p) => p.grad.toFloat32Array()));
      A.step();
      for (const p of pb) B.stepParam(p);
      stepRound(D, pd);
      if (prev !== undefined) {
        const f = Math.fround(Math.min(1, Math.fround(maxNorm / Math.fround(prev + Math.fround(1e-6)))));
        expect(f).toBeLessThan(1);
        pc.forEach((p, i) => p.grad.copyFrom(Float32Array.from(raw[i], (x) => Math.fround(x * f))));
      }
      C.step();
      const sc = await snapshot(C, pc);
      expect(snapshotDiff(await snapshot(A, pa), sc)).toBe("");
      expect(snapshotDiff(await snapshot(B, pb), sc)).toBe("");
      prev = await A.lastGradNorm();
      expect(Math.abs(prev - norm64(raw)) / norm64(raw)).toBeLessThan(1e-5);
      expect(await B.lastGradNorm()).toBe(prev);
      expect(Math.abs((await D.lastGradNorm()) - prev) / prev).toBeLessThan(1e-6);
    }
  });
});

// ---- schedules -----------------------------------------------------------------------------------

describe("LR schedules", () => {
  const close = (a: number, b: number) => expect(Math.abs(a - b)).toBeLessThan(1e-12);

  test("closed forms", () => {
    const c = constantLR();
    for (const s of [0, 1, 5, 1e6]) expect(c(s)).toBe(1);
    const w = linearWarmup({ warmup: 10 });
    for (let s = 0; s < 30; s++) close(w(s), s < 10 ? s / 10 : 1);
    expect(linearWarmup({ warmup: 0 })(0)).toBe(1);
    const cos = cosineWithWarmup({ warmup: 5, total: 25, floor: 0.1 });
    for (let s = 0; s < 40; s++) {
      const want = s < 5 ? s / 5 : 0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, (s - 5) / 20)));
      close(cos(s), want);
    }
    close(cos(5), 1);
    close(cos(15), 0.55);
    close(cos(25), 0.1);
    close(cos(100), 0.1);
    close(cosineWithWarmup({ warmup: 0, total: 10 })(10), 0);
    for (const shape of ["cosine", "linear", "1-sqrt"] as const) {
      const wsd = warmupStableDecay({ warmup: 4, stable: 6, decay: 8, floor: 0.2, shape });
      for (let s = 0; s < 30; s++) {
        let want: number;
        if (s < 4) want = s / 4;
        else if (s < 10) want = 1;
        else if (s >= 18) want = 0.2;
        else {
          const p = (s - 10) / 8;
          const f = shape === "cosine" ? 0.5 * (1 + Math.cos(Math.PI * p)) : shape === "linear" ? 1 - p : 1 - Math.sqrt(p);
          want = 0.2 + 0.8 * f;
        }
        close(wsd(s), want);
      }
    }
    close(warmupStableDecay({ warmup: 0, stable: 0, decay: 4, shape: "linear" })(1), 0.75);
  });

  test("bad arguments are refused", () => {
    expectCode(() => linearWarmup({ warmup: -1 }), "E_ARG");
    expectCode(() => linearWarmup({ warmup: 1.5 }), "E_ARG");
    expectCode(() => cosineWithWarmup({ warmup: 10, total: 5 }), "E_ARG");
    expectCode(() => cosineWithWarmup({ warmup: 1, total: 5, floor: 2 }), "E_ARG");
    expectCode(() => warmupStableDecay({ warmup: 1, stable: 1, decay: 1, shape: "exp" as "linear" }), "E_ARG");
    expectCode(() => linearWarmup({ warmup: 3 })(-1), "E_ARG");
    expectCode(() => linearWarmup({ warmup: 3 })(NaN), "E_ARG");
  });

  test("setSchedule drives every group's lr from the update count; applySchedule from the loop's", async () => {
    const pa = makeParams("f32", DEV), pb = makeParams("f32", DEV), pc = makeParams("f32", DEV);
    const groups = (p: Parameter[]) => [{ params: p.slice(0, 2), lr: 0.02 }, { params: p.slice(2), lr: 0.01 }];
    const A = new AdamW(groups(pa)), B = new AdamW(groups(pb)), C = new AdamW(groups(pc));
    const fn = cosineWithWarmup({ warmup: 2, total: 6, floor: 0.1 });
    A.setSchedule(fn);
    for (let s = 0; s < 7; s++) {
      setGrads(pa, 11 + s); setGrads(pb, 11 + s); setGrads(pc, 11 + s);  // finite gradients
      A.accumulate(1);
      if (s % 2 === 0) A.step(); else stepRound(A, pa);
      expect(A.paramGroups.map((g) => g.lr)).toEqual([0.02 * fn(s), 0.01 * fn(s)]);
      B.paramGroups[0].lr = 0.02 * fn(s);
      B.paramGroups[1].lr = 0.01 * fn(s);
      B.step();
      applySchedule(C, fn, s);
      C.step();
      const sb = await snapshot(B, pb);
      expect(snapshotDiff(await snapshot(A, pa), sb)).toBe("");
      expect(snapshotDiff(await snapshot(C, pc), sb)).toBe("");
    }
    A.setSchedule(null);
    const lrs = A.paramGroups.map((g) => g.lr);
    A.step();
    expect(A.paramGroups.map((g) => g.lr)).toEqual(lrs);
  });
});
