// Adafactor on the CPU backend against a float64 reference written here from
// transformers.optimization.Adafactor's step (factored second moment over the last two dims,
// relative step, parameter scaling, update clipping, optional beta1, weight decay). The CUDA
// backend is checked against this one in test/gpu/adafactor.gpu.test.ts.
import { Adafactor, AdafactorOptions, DType, Parameter, randn, tensor } from "../lib";
import { expectCode } from "./helpers";
import { relErr, Rng, roundTo } from "./reference";

const DEV = "cpu";
const sqrt = Math.sqrt, pow = Math.pow, max = Math.max, min = Math.min;

interface RefState { w: Float64Array; row?: Float64Array; col?: Float64Array; v?: Float64Array; m?: Float64Array; t: number }

function viewOf(shape: number[]): { factored: boolean; batch: number; rows: number; cols: number } {
  const n = shape.reduce((a, b) => a * b, 1);
  if (shape.length < 2) return { factored: false, batch: 1, rows: 1, cols: n };
  const rows = shape[shape.length - 2], cols = shape[shape.length - 1];
  return { factored: true, batch: n / (rows * cols), rows, cols };
}

interface Opts {
  lr: number; eps: [number, number]; clipThreshold: number; decayRate: number; beta1: number | null; weightDecay: number;
  scaleParameter: boolean; relativeStep: boolean; warmupInit: boolean; skipNonFinite: boolean;
}

function refInit(w: Float32Array, shape: number[], o: Opts): RefState {
  const v = viewOf(shape);
  const s: RefState = { w: Float64Array.from(w), t: 0 };
  if (v.factored) { s.row = new Float64Array(v.batch * v.rows); s.col = new Float64Array(v.batch * v.cols); } else s.v = new Float64Array(w.length);
  if (o.beta1 !== null) s.m = new Float64Array(w.length);
  return s;
}

/** One step of HF's Adafactor in float64; `store` rounds the parameter as its dtype stores it. */
function refStep(s: RefState, g: Float32Array, shape: number[], o: Opts, store: (x: number) => number): void {
  s.t += 1;
  const t = s.t, n = g.length, vw = viewOf(shape);
  let w2 = 0;
  for (let i = 0; i < n; i++) w2 += s.w[i] * s.w[i];
  let rel = o.lr;
  if (o.relativeStep) rel = min(o.warmupInit ? 1e-6 * t : 1e-2, 1 / sqrt(t));
  const lrT = (o.scaleParameter ? max(o.eps[1], sqrt(w2 / n)) : 1) * rel;
  const b2 = 1 - pow(t, o.decayRate);
  const u = new Float64Array(n);
  if (vw.factored) {
    const { batch, rows, cols } = vw;
    for (let b = 0; b < batch; b++) {
      for (let i = 0; i < rows; i++) {
        let sum = 0;
        for (let j = 0; j < cols; j++) { const x = g[(b * rows + i) * cols + j]; sum += x * x + o.eps[0]; }
        const r = b * rows + i;
        s.row![r] = b2 * s.row![r] + (1 - b2) * (sum / cols);
      }
      for (let j = 0; j < cols; j++) {
        let sum = 0;
        for (let i = 0; i < rows; i++) { const x = g[(b * rows + i) * cols + j]; sum += x * x + o.eps[0]; }
        const c = b * cols + j;
        s.col![c] = b2 * s.col![c] + (1 - b2) * (sum / rows);
      }
      let mean = 0;
      for (let i = 0; i < rows; i++) mean += s.row![b * rows + i];
      mean /= rows;
      for (let i = 0; i < rows; i++) {
        const rf = 1 / sqrt(s.row![b * rows + i] / mean);
        for (let j = 0; j < cols; j++) {
          const k = (b * rows + i) * cols + j;
          u[k] = rf * (1 / sqrt(s.col![b * cols + j])) * g[k];
        }
      }
    }
  } else {
    for (let i = 0; i < n; i++) {
      s.v![i] = b2 * s.v![i] + (1 - b2) * (g[i] * g[i] + o.eps[0]);
      u[i] = g[i] / sqrt(s.v![i]);
    }
  }
  let u2 = 0;
  for (let i = 0; i < n; i++) u2 += u[i] * u[i];
  const denom = max(1, sqrt(u2 / n) / o.clipThreshold);
  for (let i = 0; i < n; i++) {
    let x = (u[i] / denom) * lrT;
    if (s.m) { s.m[i] = o.beta1! * s.m[i] + (1 - o.beta1!) * x; x = s.m[i]; }
    s.w[i] = store(s.w[i] - o.weightDecay * lrT * s.w[i] - x);
  }
}

const BASE: Opts = {
  lr: 1e-2, eps: [1e-30, 1e-3], clipThreshold: 1, decayRate: -0.8, beta1: null, weightDecay: 0,
  scaleParameter: false, relativeStep: false, warmupInit: false, skipNonFinite: true,
};

const SHAPES = [[1], [7], [4097], [33, 17], [3, 5, 11], [1, 9]];

const VARIANTS: [string, Partial<Opts>][] = [
  ["defaults (lr 1e-2)", {}],
  ["clipping active, weight decay", { clipThreshold: 0.05, weightDecay: 0.1 }],
  ["beta1 0.9, scaleParameter", { beta1: 0.9, scaleParameter: true }],
  ["relativeStep, warmupInit, scaleParameter", { relativeStep: true, warmupInit: true, scaleParameter: true }],
  ["relativeStep, decayRate -0.5", { relativeStep: true, decayRate: -0.5, weightDecay: 0.01 }],
];

describe("Adafactor (CPU) against float64", () => {
  for (const [label, extra] of VARIANTS) {
    for (const dtype of ["f32", "bf16", "f16"] as DType[]) {
      test(`${label}, ${dtype}`, async () => {
        const o: Opts = { ...BASE, ...extra };
        const rng = new Rng(SHAPES.length * 31 + label.length);
        const params = SHAPES.map((s, i) => new Parameter(randn(s, { dtype, device: DEV, seed: 40 + i, std: 0.5 }), { name: `p${i}` }));
        const init = await Promise.all(params.map((p) => p.data.toFloat32Array()));
        const refs = params.map((p, i) => refInit(init[i], SHAPES[i], o));
        const opt = new Adafactor(params, { ...o } as AdafactorOptions);
        const steps = 5;
        for (let s = 0; s < steps; s++) {
          params.forEach((p, i) => {
            const g = Float32Array.from(rng.normals(p.numel, 0.1 + 0.3 * s), (x) => roundTo(dtype, x));
            p.grad.copyFrom(g);
            refStep(refs[i], g, SHAPES[i], o, (x) => roundTo(dtype, x));
          });
          opt.step();
        }
        const tolW = dtype === "f32" ? 1e-5 : 1e-2;
        for (let i = 0; i < params.length; i++) {
          const w = await params[i].data.toFloat32Array();
          expect(relErr(w, refs[i].w)).toBeLessThan(tolW);
          if (dtype === "f32") {
            // The change itself, not only W (W is much larger than a few updates).
            const dw = w.map((x, k) => x - init[i][k]), dref = refs[i].w.map((x, k) => x - init[i][k]);
            expect(relErr(dw, dref)).toBeLessThan(2e-4);
          }
          const st = opt.stateOf(params[i])!;
          const check = async (t: { toFloat32Array(): Promise<Float32Array> } | undefined, ref: Float64Array | undefined) => {
            expect(!t).toBe(!ref);
            if (t && ref) expect(relErr(await t.toFloat32Array(), ref)).toBeLessThan(dtype === "f32" ? 1e-5 : 2e-2);
          };
          await check(st.row, refs[i].row);
          await check(st.col, refs[i].col);
          await check(st.full, refs[i].v);
          await check(st.expAvg, refs[i].m);
        }
        expect(await opt.completedStepsPerGroup()).toEqual([steps]);
      });
    }
  }
});

describe("Adafactor state, skip and refusals", () => {
  test("state bytes: (rows + cols) * batch * 4 per factored tensor, numel * 4 for 1-D, + numel * 4 with beta1", () => {
    const shapes = [[80, 72], [3, 5, 11], [9]];
    const mk = (beta1: number | null) => {
      const ps = shapes.map((s) => new Parameter(randn(s, { device: DEV, seed: 1 })));
      const opt = new Adafactor(ps, { lr: 1e-3, beta1 });
      ps.forEach((p) => p.grad.copyFrom(new Float32Array(p.numel).fill(0.5)));
      opt.step();
      return opt.stateBytes();
    };
    const counters = 8 + 4;
    const second = (80 + 72) * 4 + 3 * (5 + 11) * 4 + 9 * 4;
    expect(mk(null)).toBe(counters + second);
    expect(mk(0.9)).toBe(counters + second + (80 * 72 + 3 * 5 * 11 + 9) * 4);
  });

  test("a NaN gradient skips the whole group (parameters and states untouched), the step clock does not advance", async () => {
    const ps = [[33, 17], [7]].map((s, i) => new Parameter(randn(s, { device: DEV, seed: 5 + i })));
    const ref = [[33, 17], [7]].map((s, i) => new Parameter(randn(s, { device: DEV, seed: 5 + i })));
    const a = new Adafactor(ps, { lr: 1e-2, beta1: 0.9 }), b = new Adafactor(ref, { lr: 1e-2, beta1: 0.9 });
    const rng = new Rng(9);
    const g1 = ps.map((p) => rng.normals(p.numel));
    ps.forEach((p, i) => p.grad.copyFrom(g1[i]));
    ref.forEach((p, i) => p.grad.copyFrom(g1[i]));
    a.step(); b.step();
    const snap = async (o: Adafactor, xs: Parameter[]) => {
      const out: number[] = [];
      for (const p of xs) out.push(...await p.data.toFloat32Array());
      for (const [k, t] of Object.entries(o.stateDict().tensors)) if (!k.endsWith("counters")) out.push(...await t.toFloat32Array());
      return out;
    };
    const before = await snap(a, ps);
    const bad = rng.normals(ps[1].numel);
    bad[3] = NaN;
    ps[1].grad.copyFrom(bad);
    a.step();
    const after = await snap(a, ps);
    expect(after).toEqual(before);
    expect(await a.skippedSteps()).toBe(1);
    // The next finite step equals the reference's second step (t = 2 on both).
    const g2 = ps.map((p) => rng.normals(p.numel));
    ps.forEach((p, i) => p.grad.copyFrom(g2[i]));
    ref.forEach((p, i) => p.grad.copyFrom(g2[i]));
    a.step(); b.step();
    for (let i = 0; i < ps.length; i++) expect(Array.from(await ps[i].data.toFloat32Array())).toEqual(Array.from(await ref[i].data.toFloat32Array()));
  });

  test("bad options and inputs are refused before anything changes", async () => {
    const p = new Parameter(randn([4, 6], { device: DEV, seed: 3 }));
    expectCode(() => new Adafactor([p]), "E_ARG");                                  // no lr
    expectCode(() => new Adafactor([p], { lr: 1e-3, decayRate: 0 }), "E_ARG");
    expectCode(() => new Adafactor([p], { lr: 1e-3, clipThreshold: 0 }), "E_ARG");
    expectCode(() => new Adafactor([p], { lr: 1e-3, warmupInit: true }), "E_ARG");
    expectCode(() => new Adafactor([p], { lr: 1e-3, beta1: 1 }), "E_ARG");
    expectCode(() => new Adafactor([p], { lr: 1e-3, eps: [1e-30] as unknown as [number, number] }), "E_ARG");
    expect(() => new Adafactor([p], { relativeStep: true })).not.toThrow();
    const opt = new Adafactor([p], { lr: 1e-3 });
    p.grad.copyFrom(new Float32Array(24).fill(0.25));
    opt.step();
    const w = await p.data.toFloat32Array();
    opt.paramGroups[0].beta1 = 0.9;
    expectCode(() => opt.step(), "E_ARG");
    opt.paramGroups[0].beta1 = null;
    const g = p.grad;
    p.grad = tensor(new Float32Array(5), [5], { device: DEV });
    expectCode(() => opt.step(), "E_SHAPE");
    p.grad = g;
    expect(Array.from(await p.data.toFloat32Array())).toEqual(Array.from(w));
  });
});
