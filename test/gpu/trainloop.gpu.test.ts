// The training-loop pieces on CUDA: clipGradNorm against the CPU backend (more than one 128-tensor
// launch batch, every dtype), stepParam bit-identical to step() for every optimizer of the
// registry, accumulation, and the per-parameter skip's counters merge. Skipped without a device.
import { AdamW, AdamW4bit, AdamW8bit, addGrad, clipGradNorm, devices, DType, Parameter, tensor } from "../../lib";
import { makeParams, setGrads, snapshot, snapshotDiff } from "../checkpoint_helpers";
import { OPTIMIZERS } from "../optimizers";
import { relErr, Rng } from "../reference";

// GaLore's rank groups are refused on CUDA until its refresh is validated; stepParam = step() holds
// whatever the refresh computes (both run the same kernels), so the check runs them anyway.

const hasCuda = devices().length > 1;
const suite = hasCuda ? describe : describe.skip;
const DEV = "cuda";

suite("clipGradNorm: CUDA against the CPU", () => {
  for (const dtype of ["f32", "bf16", "f16"] as DType[]) {
    test(`${dtype}: 300 tensors of odd sizes, clipped and not`, async () => {
      const rng = new Rng(dtype.length + 5);
      const sizes = Array.from({ length: 300 }, (_, i) => [1, 7, 4097, 65537, 33][i % 5] + (i % 3));
      for (const scale of [1 / 3, 10]) {
        const values = sizes.map((n) => rng.normals(n, 0.4));
        const cpu = values.map((v) => tensor(v, [v.length], { dtype, device: "cpu" }));
        const gpu = values.map((v) => tensor(v, [v.length], { dtype, device: DEV }));
        let ref = 0;
        for (const t of cpu) for (const x of await t.toFloat32Array()) ref += x * x;
        const maxNorm = Math.sqrt(ref) * scale;
        const a = clipGradNorm(cpu, maxNorm), b = clipGradNorm(gpu, maxNorm);
        const na = await a.norm(), nb = await b.norm();
        expect(Math.abs(nb - na) / na).toBeLessThan(1e-5);
        expect(Math.abs((await b.factor()) - (await a.factor()))).toBeLessThan(1e-5);
        for (let i = 0; i < cpu.length; i++) {
          const x = await cpu[i].toFloat32Array(), y = await gpu[i].toFloat32Array();
          expect(relErr(y, x)).toBeLessThan(dtype === "f32" ? 1e-5 : 1e-2);
        }
        for (const t of [...cpu, ...gpu]) t.dispose();
      }
    });
  }

  test("deterministic: the same gradients give the same norm bits", async () => {
    const v = new Rng(3).normals(1 << 20);
    const norms: number[] = [];
    for (let k = 0; k < 3; k++) {
      const g = tensor(v, [v.length], { device: DEV });
      norms.push(await clipGradNorm([g], Infinity).norm());
      g.dispose();
    }
    expect(new Set(norms).size).toBe(1);
  });
});

suite("addGrad: CUDA against the CPU, bit for bit", () => {
  test("every dtype pair, 65537 elements", async () => {
    const rng = new Rng(4);
    for (const dt of ["f32", "bf16", "f16"] as DType[]) for (const st of ["f32", "bf16", "f16"] as DType[]) {
      const d0 = rng.normals(65537), s0 = rng.normals(65537);
      const dc = tensor(d0, [65537], { dtype: dt, device: "cpu" }), sc = tensor(s0, [65537], { dtype: st, device: "cpu" });
      const dg = tensor(d0, [65537], { dtype: dt, device: DEV }), sg = tensor(s0, [65537], { dtype: st, device: DEV });
      addGrad(dc, sc, 0.3);
      addGrad(dg, sg, 0.3);
      const a = await dc.toTypedArray(), b = await dg.toTypedArray();
      expect(Buffer.from(b.buffer).equals(Buffer.from(a.buffer))).toBe(true);
    }
  });
});

suite("stepParam over every parameter equals one step() on CUDA, bit for bit", () => {
  for (const c of OPTIMIZERS) {
    for (const dtype of c.dtypes) {
      test(`${c.name} ${dtype}`, async () => {
        const pa = makeParams(dtype, DEV), pb = makeParams(dtype, DEV);
        const A = c.make(pa), B = c.make(pb);
        for (const s of [1, 2, 3, 5, 6, 7]) {
          setGrads(pa, s);
          setGrads(pb, s);
          A.step();
          for (const p of [...pb].reverse()) B.stepParam(p);
          expect(`step ${s}: ${snapshotDiff(await snapshot(A, pa), await snapshot(B, pb))}`).toBe(`step ${s}: `);
        }
      });
    }
  }
});

suite("stepParam equals step() on CUDA for the quantized AdamWs", () => {
  for (const [name, make] of [
    ["AdamW8bit", (p: Parameter[]) => new AdamW8bit(p, { lr: 1e-2, weightDecay: 0.05 })],
    ["AdamW4bit stochastic rounding", (p: Parameter[]) => new AdamW4bit(p, { lr: 1e-2, weightDecay: 0.05, stochasticRounding: true, seed: 3 })],
  ] as const) {
    for (const dtype of ["f32", "bf16"] as DType[]) {
      test(`${name} ${dtype}`, async () => {
        const pa = makeParams(dtype, DEV), pb = makeParams(dtype, DEV);
        const A = make(pa), B = make(pb);
        for (const s of [1, 2, 3]) {
          setGrads(pa, s);
          setGrads(pb, s);
          A.step();
          for (const p of [...pb].reverse()) B.stepParam(p);
          expect(`step ${s}: ${snapshotDiff(await snapshot(A, pa), await snapshot(B, pb))}`).toBe(`step ${s}: `);
        }
      });
    }
  }
});

suite("accumulation and the per-parameter skip on CUDA", () => {
  test("accumulate(4) with stepParam equals one step on the sum (AdamW bf16)", async () => {
    const pa = makeParams("bf16", DEV), pb = makeParams("bf16", DEV);
    const A = new AdamW(pa, { lr: 1e-2, weightDecay: 0.05 }), B = new AdamW(pb, { lr: 1e-2, weightDecay: 0.05 });
    A.accumulate(4);
    const rng = new Rng(8);
    const sums = pa.map((p) => new Float32Array(p.numel));
    for (let k = 0; k < 4; k++) {
      pa.forEach((p, i) => {
        const g = rng.normals(p.numel, 0.3);
        for (let j = 0; j < g.length; j++) sums[i][j] += g[j];
        p.grad.copyFrom(sums[i]);
      });
      for (const p of [...pa].reverse()) expect(A.stepParam(p)).toBe(k === 3);
    }
    pb.forEach((p, i) => p.grad.copyFrom(sums[i]));
    B.step();
    expect(snapshotDiff(await snapshot(A, pa), await snapshot(B, pb))).toBe("");
  });

  test("a NaN in one gradient: that parameter skipped, the round completed and skipped", async () => {
    const pa = makeParams("f32", DEV);
    const A = new AdamW(pa, { lr: 1e-2 });
    setGrads(pa, 1);
    for (const p of pa) A.stepParam(p);
    const before = await Promise.all(pa.map((p) => p.data.toFloat32Array()));
    setGrads(pa, 4);  // NaN in parameter 1
    for (const p of pa) A.stepParam(p);
    const after = await Promise.all(pa.map((p) => p.data.toFloat32Array()));
    pa.forEach((_, i) => expect(Buffer.from(after[i].buffer).equals(Buffer.from(before[i].buffer))).toBe(i === 1));
    expect(await A.completedStepsPerGroup()).toEqual([2]);
    expect(await A.skippedStepsPerGroup()).toEqual([1]);
  });

  test("clipping under stepParam matches step() (perParameter)", async () => {
    const pa = makeParams("f32", DEV), pb = makeParams("f32", DEV);
    const A = new AdamW(pa, { lr: 1e-2 }), B = new AdamW(pb, { lr: 1e-2 });
    for (const o of [A, B]) o.setGradClipping({ maxNorm: 0.5, mode: "perParameter" });
    for (const s of [1, 2]) {
      setGrads(pa, s); setGrads(pb, s);
      A.step();
      for (const p of [...pb].reverse()) B.stepParam(p);
      expect(snapshotDiff(await snapshot(A, pa), await snapshot(B, pb))).toBe("");
    }
  });
});
