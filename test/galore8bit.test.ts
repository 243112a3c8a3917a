// GaLoreAdamW with 8-bit moments (stateBits 8) on the CPU, against a reference written here that
// models the quantization: R = project(G) in float64 from the optimizer's own projector (the exact
// SVD is test/galore.test.ts's subject), the moments of each element of R dequantized with the old
// absmax, updated in float32 (every op rounded), re-encoded per 256-block to the nearest code with
// the block's new absmax; N and W in float64. R differs from the CPU's f32 GEMM in the last bits,
// so a code may land on the neighbouring one at a boundary: codes are compared by the fraction
// equal (>= 99%) and by distance (<= 1 code), absmax and W to f32-level tolerances.
import { GaLoreAdamW, Parameter, tensor, ProjType, Tensor } from "../lib";
import { relErr, Rng } from "./reference";
import { refDequantize, refQuantize } from "./quant_reference";
import { expectCodesClose, expectStateBits8CloseToF32, MAP_M, MAP_V, Q8_BLOCK, zeroCodeOf } from "./q8_reference";
import { expectCode } from "./helpers";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

const { sqrt, ceil } = Math;
const fr = Math.fround;
const BLOCK = Q8_BLOCK;

type Side = "right" | "left" | "full";
interface QRef { rows: number; cols: number; r: number; side: Side; W: Float64Array; cm: Uint8Array; cv: Uint8Array; am: Float32Array; av: Float32Array }

function rShape(side: Side, rows: number, cols: number, r: number): [number, number] {
  return side === "right" ? [rows, r] : side === "left" ? [r, cols] : [r, r];
}

function newQRef(w0: ArrayLike<number>, rows: number, cols: number, r: number, side: Side): QRef {
  const [a, b] = rShape(side, rows, cols, r);
  const n = a * b;
  return { rows, cols, r, side, W: Float64Array.from(w0), cm: new Uint8Array(n).fill(zeroCodeOf(MAP_M)),
           cv: new Uint8Array(n).fill(zeroCodeOf(MAP_V)), am: new Float32Array(ceil(n / BLOCK)), av: new Float32Array(ceil(n / BLOCK)) };
}

/** C (M x N) = A (M x K) B (K x N), float64; element accessors pick the layout. */
function mm(M: number, N: number, K: number, a: (i: number, p: number) => number, b: (p: number, j: number) => number): Float64Array {
  const c = new Float64Array(M * N);
  for (let i = 0; i < M; i++) for (let p = 0; p < K; p++) {
    const x = a(i, p);
    for (let j = 0; j < N; j++) c[i * N + j] += x * b(p, j);
  }
  return c;
}

/** One step of the reference with projectors pa (and pb for full) as the optimizer holds them. */
function qrefStep(s: QRef, g: ArrayLike<number>, pa: Float32Array, pb: Float32Array | undefined, t: number,
                  h: { lr: number; b1: number; b2: number; eps: number; wd: number; scale: number }): void {
  const { rows: m, cols: n, r } = s;
  let R: Float64Array;
  if (s.side === "right") R = mm(m, r, n, (i, p) => g[i * n + p], (p, j) => pa[j * n + p]);          // G P^T
  else if (s.side === "left") R = mm(r, n, m, (i, p) => pa[p * r + i], (p, j) => g[p * n + j]);      // P^T G
  else {
    const T1 = mm(r, n, m, (i, p) => pa[p * r + i], (p, j) => g[p * n + j]);                          // A^T G
    R = mm(r, r, n, (i, p) => T1[i * n + p], (p, j) => pb![j * n + p]);                               // (A^T G) B^T
  }
  const b1 = fr(h.b1), b2 = fr(h.b2), c1 = fr(1 - b1), c2 = fr(1 - b2);
  const M = refDequantize(s.cm, s.am, MAP_M, BLOCK), V = refDequantize(s.cv, s.av, MAP_V, BLOCK);
  const N = new Float64Array(R.length);
  for (let i = 0; i < R.length; i++) {
    const x = fr(R[i]);
    M[i] = fr(fr(b1 * M[i]) + fr(c1 * x));
    V[i] = fr(fr(b2 * V[i]) + fr(fr(c2 * x) * x));
    N[i] = M[i] / (sqrt(V[i]) + h.eps);
  }
  let back: Float64Array;
  if (s.side === "right") back = mm(m, n, r, (i, p) => N[i * r + p], (p, j) => pa[p * n + j]);        // N P
  else if (s.side === "left") back = mm(m, n, r, (i, p) => pa[i * r + p], (p, j) => N[p * n + j]);    // P N
  else {
    const T2 = mm(r, n, r, (i, p) => N[i * r + p], (p, j) => pb![p * n + j]);                         // N B
    back = mm(m, n, r, (i, p) => pa[i * r + p], (p, j) => T2[p * n + j]);                             // A (N B)
  }
  const c = h.lr * sqrt(1 - h.b2 ** t) / (1 - h.b1 ** t) * h.scale, decay = 1 - h.lr * h.wd;
  for (let i = 0; i < s.W.length; i++) s.W[i] = (s.W[i] - c * back[i]) * decay;
  const qm = refQuantize(M, MAP_M, BLOCK), qv = refQuantize(V, MAP_V, BLOCK);
  s.cm = qm.codes; s.am = qm.absmax; s.cv = qv.codes; s.av = qv.absmax;
}

async function u8(t: Tensor): Promise<Uint8Array> { return (await t.toTypedArray()) as Uint8Array; }
const bitsOf = async (t: Tensor) => Array.from(await t.toFloat32Array());

const H = { lr: 0.02, b1: 0.9, b2: 0.99, eps: 1e-6, wd: 0.05, scale: 0.25 };
const SIDE: Record<string, (rows: number, cols: number) => Side> = {
  std: (r, c) => (r >= c ? "right" : "left"), reverse_std: (r, c) => (r >= c ? "left" : "right"),
  left: () => "left", right: () => "right", full: () => "full",
};

describe("GaLoreAdamW stateBits 8 on the CPU against a reference of the quantized update", () => {
  for (const projType of ["std", "reverse_std", "full"] as ProjType[]) {
    test(`${projType}: [300, 40], [17, 400], [6, 5, 9] rank 5, gap 3, 8 steps, plus a rank-less group (f32 states)`, async () => {
      const rng = new Rng(projType.length * 13 + 1);
      const shapes = [[300, 40], [17, 400], [6, 5, 9]];
      const r = 5, T = 3;
      const ps = shapes.map((s, i) => new Parameter(tensor(rng.normals(s.reduce((a, b) => a * b), 0.05), s, { device: "cpu" }), { name: `w${i}` }));
      const bias = new Parameter(tensor(rng.normals(7), [7], { device: "cpu" }), { name: "b" });
      const refs: QRef[] = [];
      const w0: Float32Array[] = [];
      for (const p of ps) {
        const rows = p.shape[0], cols = p.numel / rows;
        w0.push(await p.data.toFloat32Array());
        refs.push(newQRef(w0[w0.length - 1], rows, cols, r, SIDE[projType](rows, cols)));
      }
      // full's R has r*r = 25 elements: N = m/(sqrt(v)+eps) turns the f32 rounding of an element of R
      // near 0 into a large relative error of N, which so few elements do not average out (see
      // test/galore.test.ts); eps 1e-2 bounds that conditioning there.
      const h = { ...H, eps: projType === "full" ? 1e-2 : H.eps };
      const opt = new GaLoreAdamW([{ params: ps, rank: r, updateProjGap: T, scale: h.scale, projType, stateBits: 8 }, { params: [bias], stateBits: 8 }],
                                  { lr: h.lr, betas: [h.b1, h.b2], eps: h.eps, weightDecay: h.wd });
      for (let step = 0; step < 8; step++) {
        const gs = ps.map((p) => rng.normals(p.numel, 1));
        ps.forEach((p, k) => p.grad.copyFrom(gs[k]));
        bias.grad.copyFrom(rng.normals(7));
        opt.step();
        for (let k = 0; k < ps.length; k++) {
          const st = opt.stateOf(ps[k])!;
          expect(st.side).toBe(refs[k].side);
          qrefStep(refs[k], gs[k], await st.proj!.toFloat32Array(), st.projB ? await st.projB.toFloat32Array() : undefined, step + 1, h);
        }
      }
      for (let k = 0; k < ps.length; k++) {
        const st = opt.stateOf(ps[k])!;
        expect(st.expAvg.dtype).toBe("u8");
        expectCodesClose(await u8(st.expAvg), refs[k].cm, 0.99);
        expectCodesClose(await u8(st.expAvgSq), refs[k].cv, 0.99);
        expect(relErr(await st.absmaxM!.toFloat32Array(), refs[k].am)).toBeLessThan(1e-5);
        expect(relErr(await st.absmaxV!.toFloat32Array(), refs[k].av)).toBeLessThan(1e-5);
        const w = await ps[k].data.toFloat32Array();
        expect(relErr(Float64Array.from(w, (x, i) => x - w0[k][i]), Float64Array.from(refs[k].W, (x, i) => x - w0[k][i]))).toBeLessThan(1e-4);
      }
      const sb = opt.stateOf(bias)!;
      expect(sb.expAvg.dtype).toBe("f32");
      expect(sb.absmaxM).toBeUndefined();
      // State: codes (1 byte) + absmax (4 per block) per moment, P (and B), counters and flag; bias f32.
      let want = 7 * 8 + 8 + 8 + 4;
      for (const ref of refs) {
        const [a, b] = rShape(ref.side, ref.rows, ref.cols, r);
        want += 2 * a * b + 8 * ceil(a * b / BLOCK) + 4 * (ref.side === "right" ? r * ref.cols : ref.rows * r) + (ref.side === "full" ? 4 * r * ref.cols : 0);
      }
      expect(opt.stateBytes()).toBe(want);
      expect(await opt.completedStepsPerGroup()).toEqual([8, 8]);
      opt.dispose();
    });
  }
});

describe("GaLoreAdamW stateBits 8: against f32 states, checkpoints, skips, refusals", () => {
  test("50 steps of N(0, 0.01²) gradients: dequantized moments and parameters close to stateBits 32", async () => {
    const rng = new Rng(31);
    const w0 = rng.normals(257 * 40, 0.1);
    const grads = Array.from({ length: 50 }, () => rng.normals(257 * 40, 0.01));
    await expectStateBits8CloseToF32(
      (p, stateBits) => new GaLoreAdamW([{ params: [p], rank: 16, updateProjGap: 20, scale: 1, stateBits }], { lr: 1e-3, eps: 1e-8 }),
      [257, 40], w0, grads);
  });

  test("stateDict / loadStateDict and save / load mid-run continue bit-identically", async () => {
    const rng = new Rng(41);
    const w0 = rng.normals(300 * 20, 0.1);
    const grads = Array.from({ length: 7 }, () => rng.normals(300 * 20, 1));
    const mk = (p: Parameter) => new GaLoreAdamW([{ params: [p], rank: 9, updateProjGap: 3, stateBits: 8 }], { lr: 0.01 });
    const straight = new Parameter(tensor(w0, [300, 20], { device: "cpu" }));
    const o1 = mk(straight);
    for (const g of grads) { straight.grad.copyFrom(g); o1.step(); }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "galore8-"));
    const resumed = new Parameter(tensor(w0, [300, 20], { device: "cpu" }));
    let o2 = mk(resumed);
    for (let s = 0; s < grads.length; s++) {
      if (s === 2 || s === 4) {
        const fresh = mk(resumed);
        if (s === 2) fresh.loadStateDict(o2.stateDict());
        else { await o2.save(path.join(dir, "g8.safetensors")); await fresh.load(path.join(dir, "g8.safetensors")); }
        o2.dispose();
        o2 = fresh;
      }
      resumed.grad.copyFrom(grads[s]);
      o2.step();
    }
    const a = o1.stateOf(straight)!, b = o2.stateOf(resumed)!;
    expect(Array.from(await u8(b.expAvg))).toEqual(Array.from(await u8(a.expAvg)));
    expect(Array.from(await u8(b.expAvgSq))).toEqual(Array.from(await u8(a.expAvgSq)));
    expect(await bitsOf(b.absmaxM!)).toEqual(await bitsOf(a.absmaxM!));
    expect(await bitsOf(resumed.data)).toEqual(await bitsOf(straight.data));
    const t = o2.stateDict().tensors;
    expect(t["param.0.exp_avg"].dtype).toBe("u8");
    expect(t["param.0.exp_avg_absmax"].numel).toBe(ceil(300 * 9 / BLOCK));
    o1.dispose();
    o2.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("a NaN skips the step: codes, absmax and W bit-identical", async () => {
    const rng = new Rng(51);
    const p = new Parameter(tensor(rng.normals(100 * 30, 0.1), [100, 30], { device: "cpu" }));
    const opt = new GaLoreAdamW([{ params: [p], rank: 6, updateProjGap: 2, stateBits: 8 }]);
    for (let s = 0; s < 3; s++) { p.grad.copyFrom(rng.normals(p.numel, 1)); opt.step(); }
    for (let k = 0; k < 2; k++) {  // a plain step, then a refresh step
      const st = opt.stateOf(p)!;
      const before = [Array.from(await u8(st.expAvg)), Array.from(await u8(st.expAvgSq)), await bitsOf(st.absmaxM!), await bitsOf(st.absmaxV!),
                      await bitsOf(p.data), await bitsOf(st.proj!)];
      const g = rng.normals(p.numel, 1);
      g[17] = NaN;
      p.grad.copyFrom(g);
      opt.step();
      expect([Array.from(await u8(st.expAvg)), Array.from(await u8(st.expAvgSq)), await bitsOf(st.absmaxM!), await bitsOf(st.absmaxV!),
              await bitsOf(p.data), await bitsOf(st.proj!)]).toEqual(before);
    }
    expect(await opt.skippedSteps()).toBe(2);
    opt.dispose();
  });

  test("bad stateBits -> E_ARG; changed once there is state -> E_ARG, nothing changed; 8-bit state into f32 -> E_CHECKPOINT", async () => {
    const rng = new Rng(61);
    const p = new Parameter(tensor(rng.normals(40 * 6, 1), [40, 6], { device: "cpu" }));
    for (const bad of [16, 4, 0, "8"]) expectCode(() => new GaLoreAdamW([{ params: [p], rank: 2, stateBits: bad as number }]), "E_ARG");
    expectCode(() => new GaLoreAdamW([{ params: [p], rank: 2 }], { stateBits: 7 }), "E_ARG");
    const opt = new GaLoreAdamW([{ params: [p], rank: 3, stateBits: 8 }]);
    p.grad.copyFrom(rng.normals(p.numel, 1));
    opt.step();
    const st = opt.stateOf(p)!;
    const before = [Array.from(await u8(st.expAvg)), await bitsOf(p.data)];
    opt.paramGroups[0].stateBits = 32;
    expectCode(() => opt.step(), "E_ARG");
    expect([Array.from(await u8(st.expAvg)), await bitsOf(p.data)]).toEqual(before);
    opt.paramGroups[0].stateBits = 8;
    const other = new GaLoreAdamW([{ params: [p], rank: 3 }]);
    expectCode(() => other.loadStateDict(opt.stateDict()), "E_CHECKPOINT");
    opt.dispose();
    other.dispose();
  });
});
