// GaLoreAdafactor on the CPU backend against float64: GaLore's exact projectors (the reference of
// test/galore_reference.ts) in front of HF's Adafactor update on R, projected back and scaled.
import { GaLoreAdafactor, GaLoreAdafactorOptions, Parameter, ProjType, randn, tensor } from "../lib";
import { expectCode } from "./helpers";
import { backRefAt, projectRef, RefSide } from "./galore_reference";
import { relErr, Rng } from "./reference";

const DEV = "cpu";
const sqrt = Math.sqrt, max = Math.max, min = Math.min;

interface Ref {
  rows: number; cols: number; r: number; side: RefSide; A?: Float64Array[]; B?: Float64Array[];
  w: Float64Array; row: Float64Array; col: Float64Array; m?: Float64Array; t: number; calls: number;
}

function sideFor(type: ProjType, rows: number, cols: number): RefSide {
  if (type === "full") return "full";
  if (type === "left") return "left";
  if (type === "right") return "right";
  const right = rows >= cols;
  return (type === "std" ? right : !right) ? "right" : "left";
}

function rDims(s: Ref): [number, number] {
  return s.side === "right" ? [s.rows, s.r] : s.side === "left" ? [s.r, s.cols] : [s.r, s.r];
}

type O = Required<Pick<GaLoreAdafactorOptions, "lr" | "clipThreshold" | "decayRate" | "weightDecay" | "scaleParameter" | "relativeStep" | "warmupInit" | "rank" | "updateProjGap" | "scale" | "projType">> & { eps: [number, number]; beta1: number | null };

function refStep(s: Ref, g: Float32Array, o: O): void {
  const R = projectRef(s, g, s.calls % o.updateProjGap === 0);
  s.calls++;
  s.t++;
  const t = s.t, [rr, rc] = rDims(s), n = s.w.length;
  let w2 = 0;
  for (let i = 0; i < n; i++) w2 += s.w[i] * s.w[i];
  const rel = o.relativeStep ? min(o.warmupInit ? 1e-6 * t : 1e-2, 1 / sqrt(t)) : o.lr;
  const lrT = (o.scaleParameter ? max(o.eps[1], sqrt(w2 / n)) : 1) * rel;
  const b2 = 1 - Math.pow(t, o.decayRate);
  for (let i = 0; i < rr; i++) { let x = 0; for (let j = 0; j < rc; j++) x += R[i * rc + j] ** 2 + o.eps[0]; s.row[i] = b2 * s.row[i] + (1 - b2) * x / rc; }
  for (let j = 0; j < rc; j++) { let x = 0; for (let i = 0; i < rr; i++) x += R[i * rc + j] ** 2 + o.eps[0]; s.col[j] = b2 * s.col[j] + (1 - b2) * x / rr; }
  let mean = 0;
  for (let i = 0; i < rr; i++) mean += s.row[i];
  mean /= rr;
  const N = new Float64Array(rr * rc);
  let u2 = 0;
  for (let i = 0; i < rr; i++) for (let j = 0; j < rc; j++) {
    N[i * rc + j] = (1 / sqrt(s.row[i] / mean)) * (1 / sqrt(s.col[j])) * R[i * rc + j];
    u2 += N[i * rc + j] ** 2;
  }
  const denom = max(1, sqrt(u2 / N.length) / o.clipThreshold);
  for (let k = 0; k < N.length; k++) {
    N[k] = (N[k] / denom) * lrT;
    if (s.m) { s.m[k] = o.beta1! * s.m[k] + (1 - o.beta1!) * N[k]; N[k] = s.m[k]; }
  }
  for (let i = 0; i < s.rows; i++) for (let j = 0; j < s.cols; j++) {
    const k = i * s.cols + j;
    s.w[k] = s.w[k] - o.weightDecay * lrT * s.w[k] - o.scale * backRefAt(s, N, i, j);
  }
}

const BASE: O = {
  lr: 1e-2, eps: [1e-30, 1e-3], clipThreshold: 1, decayRate: -0.8, beta1: null, weightDecay: 0, scaleParameter: false,
  relativeStep: false, warmupInit: false, rank: 4, updateProjGap: 2, scale: 0.25, projType: "std",
};

const SHAPES = [[40, 24], [24, 40], [5, 10, 6], [17, 9]];
const VARIANTS: [string, Partial<O>][] = [
  ["std, lr 1e-2", {}],
  ["reverse_std, beta1, scaleParameter, weight decay, clipping", { projType: "reverse_std", beta1: 0.9, scaleParameter: true, weightDecay: 0.1, clipThreshold: 0.3 }],
  ["full, relativeStep", { projType: "full", relativeStep: true, rank: 3 }],
];

describe("GaLoreAdafactor (CPU) against float64", () => {
  for (const [label, extra] of VARIANTS) {
    test(label, async () => {
      const o: O = { ...BASE, ...extra };
      const params = SHAPES.map((s, i) => new Parameter(randn(s, { device: DEV, seed: 70 + i, std: 0.5 })));
      const refs: Ref[] = await Promise.all(params.map(async (p) => {
        const rows = p.shape[0], cols = p.numel / rows;
        const s: Ref = { rows, cols, r: o.rank, side: sideFor(o.projType, rows, cols), w: Float64Array.from(await p.data.toFloat32Array()),
                         row: new Float64Array(0), col: new Float64Array(0), t: 0, calls: 0 };
        const [rr, rc] = rDims(s);
        s.row = new Float64Array(rr); s.col = new Float64Array(rc);
        if (o.beta1 !== null) s.m = new Float64Array(rr * rc);
        return s;
      }));
      const init = refs.map((s) => Float64Array.from(s.w));
      const opt = new GaLoreAdafactor(params, { ...o } as GaLoreAdafactorOptions);
      const rng = new Rng(label.length);
      for (let step = 0; step < 5; step++) {
        params.forEach((p, i) => {
          const g = rng.normals(p.numel, 0.5);
          p.grad.copyFrom(g);
          refStep(refs[i], g, o);
        });
        opt.step();
      }
      for (let i = 0; i < params.length; i++) {
        const w = await params[i].data.toFloat32Array();
        expect(relErr(w, refs[i].w)).toBeLessThan(1e-5);
        const dw = w.map((x, k) => x - init[i][k]), dref = refs[i].w.map((x, k) => x - init[i][k]);
        expect(relErr(dw, dref)).toBeLessThan(1e-3);
        const st = opt.rankStateOf(params[i])!;
        expect(st.side).toBe(refs[i].side);
        expect(relErr(await st.row.toFloat32Array(), refs[i].row)).toBeLessThan(1e-4);
        expect(relErr(await st.col.toFloat32Array(), refs[i].col)).toBeLessThan(1e-4);
        if (refs[i].m) expect(relErr(await st.expAvg!.toFloat32Array(), refs[i].m!)).toBeLessThan(1e-3);
      }
    });
  }

  test("plain groups are Adafactor; refusals", async () => {
    const w = new Parameter(randn([12, 8], { device: DEV, seed: 2 })), b = new Parameter(randn([8], { device: DEV, seed: 3 }));
    expectCode(() => new GaLoreAdafactor([{ params: [w, b], rank: 2 }], { lr: 1e-3 }), "E_ARG");  // 1-D in a rank group
    expectCode(() => new GaLoreAdafactor([{ params: [w], rank: 9 }], { lr: 1e-3 }), "E_ARG");     // rank > min dim
    expectCode(() => new GaLoreAdafactor([{ params: [w], rank: 2, projType: "diag" as ProjType }], { lr: 1e-3 }), "E_ARG");
    expectCode(() => new GaLoreAdafactor([{ params: [w], rank: 2 }]), "E_ARG");                    // no lr
    const opt = new GaLoreAdafactor([{ params: [w], rank: 2 }, { params: [b] }], { lr: 1e-3 });
    w.grad.copyFrom(new Rng(1).normals(96));
    b.grad.copyFrom(new Rng(2).normals(8));
    opt.step();
    expect(opt.rankStateOf(b)).toBeUndefined();
    expect(opt.stateOf(b)!.full!.numel).toBe(8);
    const before = await w.data.toFloat32Array();
    const g = w.grad;
    w.grad = tensor(new Float32Array(3), [3], { device: DEV });
    expectCode(() => opt.step(), "E_SHAPE");
    w.grad = g;
    expect(Array.from(await w.data.toFloat32Array())).toEqual(Array.from(before));
    expect(opt.stateBytes()).toBe(2 * (8 + 4) + (12 + 2) * 4 + 2 * 8 * 4 + 8 * 4);
  });
});
