import { AdamW, Parameter, tensor, zeros, DType, SlimoptError } from "../lib";
import { adamwRefStep, AdamRef, relErr, Rng, roundTo } from "./reference";
import { expectCode } from "./helpers";

const SIZES = [1, 7, 4097, 65537];
const DTYPES: DType[] = ["f32", "bf16", "f16"];
const TOL: Record<string, number> = { f32: 1e-5, bf16: 1e-2, f16: 1e-2 };

async function raw(t: { toTypedArray(): Promise<ArrayLike<number>> }): Promise<number[]> {
  return Array.from(await t.toTypedArray());
}

describe("AdamW on the CPU against a float64 reference", () => {
  for (const dtype of DTYPES) {
    for (const wd of [0, 0.1]) {
      test(`${dtype}, weight decay ${wd}, two groups with different lr, 20 steps`, async () => {
        const rng = new Rng(dtype.length * 100 + wd * 10 + 1);
        const lrs = [0.05, 0.01];
        const b1 = 0.9, b2 = 0.99, eps = 1e-8;
        const params: Parameter[][] = [[], []];
        const refs: AdamRef[][] = [[], []];
        SIZES.forEach((n, i) => {
          const group = i % 2;
          const w0 = rng.normals(n, 0.1);
          const p = new Parameter(tensor(w0, [n], { dtype, device: "cpu" }), { name: `w${i}` });
          params[group].push(p);
          const stored = Float64Array.from(w0, (x) => roundTo(dtype, x));
          refs[group].push({ w: stored, m: new Float64Array(n), v: new Float64Array(n), t: 0 });
        });
        const opt = new AdamW(
          [{ params: params[0], lr: lrs[0] }, { params: params[1], lr: lrs[1] }],
          { betas: [b1, b2], eps, weightDecay: wd });
        const w0s = await Promise.all(params.flat().map((p) => p.data.toFloat32Array()));
        for (let step = 0; step < 20; step++) {
          for (let gi = 0; gi < 2; gi++) {
            for (let k = 0; k < params[gi].length; k++) {
              const p = params[gi][k];
              p.grad.copyFrom(rng.normals(p.numel, 0.5 + step * 0.05));
              const g = await p.grad.toFloat32Array();  // as stored (rounded for bf16/f16)
              adamwRefStep(refs[gi][k], g, lrs[gi], b1, b2, eps, wd, (x) => roundTo(dtype, x));
            }
          }
          opt.step();
        }
        let idx = 0;
        for (let gi = 0; gi < 2; gi++) {
          for (let k = 0; k < params[gi].length; k++) {
            const p = params[gi][k];
            const w = await p.data.toFloat32Array();
            const w0 = w0s[idx++];
            const ref = refs[gi][k];
            // Compare the accumulated update, which the error would hide in inside ‖W‖.
            const dOut = Float64Array.from(w, (x, i) => x - w0[i]);
            const dRef = Float64Array.from(ref.w, (x, i) => x - w0[i]);
            expect(relErr(dOut, dRef)).toBeLessThan(TOL[dtype]);
            const st = opt.stateOf(p)!;
            expect(relErr(await st.expAvg.toFloat32Array(), ref.m)).toBeLessThan(1e-5);
            expect(relErr(await st.expAvgSq.toFloat32Array(), ref.v)).toBeLessThan(1e-5);
          }
        }
        expect(await opt.completedStepsPerGroup()).toEqual([20, 20]);
        expect(await opt.skippedSteps()).toBe(0);
        expect(opt.stateBytes()).toBe(SIZES.reduce((a, n) => a + 8 * n, 0) + 2 * 8);
        opt.dispose();
      });
    }
  }

  test("bf16 moments (stateDtype) stay within bf16 accuracy of the reference", async () => {
    const rng = new Rng(77);
    const n = 4097;
    const w0 = rng.normals(n, 0.1);
    const p = new Parameter(tensor(w0, [n], { device: "cpu" }));
    const ref: AdamRef = { w: Float64Array.from(w0), m: new Float64Array(n), v: new Float64Array(n), t: 0 };
    const opt = new AdamW([p], { lr: 0.01, stateDtype: "bf16", weightDecay: 0 });
    for (let s = 0; s < 10; s++) {
      const g = rng.normals(n);
      p.grad.copyFrom(g);
      adamwRefStep(ref, g, 0.01, 0.9, 0.999, 1e-8, 0);
      opt.step();
    }
    const w = await p.data.toFloat32Array();
    const dOut = Float64Array.from(w, (x, i) => x - w0[i]);
    const dRef = Float64Array.from(ref.w, (x, i) => x - w0[i]);
    expect(relErr(dOut, dRef)).toBeLessThan(1e-2);
    expect(opt.stateBytes()).toBe(4 * n + 8);
  });

  test("stochastic rounding of bf16 parameters is unbiased where nearest rounding stalls", async () => {
    // An update far below half a bf16 step: nearest rounding never moves the weight, stochastic
    // rounding moves it by the right amount on average.
    const n = 65536;
    const mk = () => new Parameter(tensor(new Float32Array(n).fill(1), [n], { dtype: "bf16", device: "cpu" }));
    const pNear = mk(), pSr = mk();
    const lr = 1e-4;
    const optN = new AdamW([pNear], { lr, weightDecay: 0 });
    const optS = new AdamW([pSr], { lr, weightDecay: 0, stochasticRounding: true, seed: 3 });
    const steps = 20;
    for (let s = 0; s < steps; s++) {
      pNear.grad.copyFrom(new Float32Array(n).fill(1));
      pSr.grad.copyFrom(new Float32Array(n).fill(1));
      optN.step();
      optS.step();
    }
    const wn = await pNear.data.toFloat32Array();
    const ws = await pSr.data.toFloat32Array();
    expect(wn.every((x) => x === 1)).toBe(true);
    // With a constant gradient every Adam step is exactly lr: expected weight 1 - steps*lr.
    const mean = ws.reduce((a, x) => a + x, 0) / n;
    expect(Math.abs(mean - (1 - steps * lr))).toBeLessThan(2e-4);
    expect(new Set(ws).size).toBeGreaterThan(1);
  });

  test("lr changed between steps takes effect at the next step", async () => {
    const rng = new Rng(5);
    const n = 7;
    const w0 = rng.normals(n, 0.1);
    const p = new Parameter(tensor(w0, [n], { device: "cpu" }));
    const ref: AdamRef = { w: Float64Array.from(w0), m: new Float64Array(n), v: new Float64Array(n), t: 0 };
    const opt = new AdamW([p], { weightDecay: 0.01 });
    for (const lr of [0.1, 0.02, 0.3]) {
      opt.paramGroups[0].lr = lr;
      const g = rng.normals(n);
      p.grad.copyFrom(g);
      adamwRefStep(ref, g, lr, 0.9, 0.999, 1e-8, 0.01);
      opt.step();
    }
    expect(relErr(await p.data.toFloat32Array(), ref.w)).toBeLessThan(1e-6);
  });
});

describe("non-finite gradients", () => {
  for (const bad of [NaN, Infinity, -Infinity]) {
    test(`a ${bad} in one gradient skips that group's step whole; the other group steps`, async () => {
      const rng = new Rng(9);
      const a = new Parameter(tensor(rng.normals(4097), [4097], { device: "cpu" }));
      const b = new Parameter(tensor(rng.normals(65537), [65537], { device: "cpu" }));
      const c = new Parameter(tensor(rng.normals(33), [33], { device: "cpu" }));
      const opt = new AdamW([{ params: [a, b] }, { params: [c] }], { lr: 0.01 });
      for (const p of [a, b, c]) p.grad.copyFrom(rng.normals(p.numel));
      opt.step();
      const before = await Promise.all([a, b].map((p) => raw(p.data)));
      const mBefore = await Promise.all([a, b].map((p) => raw(opt.stateOf(p)!.expAvg)));
      const vBefore = await Promise.all([a, b].map((p) => raw(opt.stateOf(p)!.expAvgSq)));
      const cBefore = await raw(c.data);
      const g = rng.normals(65537);
      g[65536] = bad;  // the very last element of the second tensor
      b.grad.copyFrom(g);
      a.grad.copyFrom(rng.normals(4097));
      c.grad.copyFrom(rng.normals(33));
      opt.step();
      expect(await Promise.all([a, b].map((p) => raw(p.data)))).toEqual(before);
      expect(await Promise.all([a, b].map((p) => raw(opt.stateOf(p)!.expAvg)))).toEqual(mBefore);
      expect(await Promise.all([a, b].map((p) => raw(opt.stateOf(p)!.expAvgSq)))).toEqual(vBefore);
      expect(await raw(c.data)).not.toEqual(cBefore);
      expect(await opt.skippedStepsPerGroup()).toEqual([1, 0]);
      expect(await opt.skippedSteps()).toBe(1);
      expect(await opt.completedStepsPerGroup()).toEqual([1, 2]);
      // The next finite step is step 2 for the skipped group (bias correction continues).
      b.grad.copyFrom(rng.normals(65537));
      opt.step();
      expect(await opt.completedStepsPerGroup()).toEqual([2, 3]);
    });
  }
});

describe("bad input is refused with its code and changes nothing", () => {
  async function setup() {
    const rng = new Rng(11);
    const p = new Parameter(tensor(rng.normals(4097), [4097], { device: "cpu" }), { name: "p" });
    const q = new Parameter(tensor(rng.normals(7), [7], { dtype: "bf16", device: "cpu" }), { name: "q" });
    const opt = new AdamW([p, q], { lr: 0.01 });
    p.grad.copyFrom(rng.normals(4097));
    q.grad.copyFrom(rng.normals(7));
    opt.step();
    p.grad.copyFrom(rng.normals(4097));
    const snap = async () => Promise.all([p, q].flatMap((x) => [raw(x.data), raw(opt.stateOf(x)!.expAvg), raw(opt.stateOf(x)!.expAvgSq)]));
    return { p, q, opt, snap, before: await snap() };
  }

  test("gradient of another shape -> E_SHAPE", async () => {
    const s = await setup();
    s.p.grad = zeros([4096], { device: "cpu" });
    expectCode(() => s.opt.step(), "E_SHAPE");
    expect(await s.snap()).toEqual(s.before);
  });

  test("gradient of another dtype -> E_DTYPE", async () => {
    const s = await setup();
    s.q.grad = zeros([7], { dtype: "f32", device: "cpu" });
    expectCode(() => s.opt.step(), "E_DTYPE");
    expect(await s.snap()).toEqual(s.before);
  });

  test("a disposed gradient -> E_DISPOSED, and the rest is untouched", async () => {
    const s = await setup();
    const qBefore = await raw(s.q.data);
    s.q.grad.dispose();
    expectCode(() => s.opt.step(), "E_DISPOSED");
    expect(await raw(s.p.data)).toEqual(s.before[0]);
    expect(await raw(s.q.data)).toEqual(qBefore);
  });

  test("negative or NaN lr, set between steps -> E_ARG", async () => {
    const s = await setup();
    for (const lr of [-1e-3, NaN, Infinity]) {
      s.opt.paramGroups[0].lr = lr;
      expectCode(() => s.opt.step(), "E_ARG");
    }
    expect(await s.snap()).toEqual(s.before);
  });

  test("constructor refusals", () => {
    const p = new Parameter(zeros([3], { device: "cpu" }));
    expectCode(() => new AdamW([]), "E_ARG");
    expectCode(() => new AdamW([{ params: [] }]), "E_ARG");
    expectCode(() => new AdamW([p], { lr: -1 }), "E_ARG");
    expectCode(() => new AdamW([p], { lr: NaN }), "E_ARG");
    for (const betas of [[1, 0.999], [0.9, 1], [-0.1, 0.9], [0.9, NaN]] as [number, number][])
      expectCode(() => new AdamW([p], { betas }), "E_ARG");
    expectCode(() => new AdamW([p], { eps: -1 }), "E_ARG");
    expectCode(() => new AdamW([p, p]), "E_ARG");
    expectCode(() => new AdamW([{ params: [p] }, { params: [p] }]), "E_ARG");
    expectCode(() => new AdamW([p], { stateDtype: "f16" as "f32" }), "E_ARG");
  });

  test("betas changed to 1 between steps -> E_ARG, nothing changed", async () => {
    const s = await setup();
    s.opt.paramGroups[0].betas = [0.9, 1];
    expectCode(() => s.opt.step(), "E_ARG");
    expect(await s.snap()).toEqual(s.before);
  });
});
