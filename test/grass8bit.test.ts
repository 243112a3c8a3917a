// GrassAdamW with 8-bit moments (stateBits 8) on the CPU, against a reference written here that
// models the quantization: the moments of each compact element dequantized with the old absmax,
// updated in float32 (every op rounded, as the kernels do), re-encoded per 256-block to the nearest
// code with the block's new absmax; the parameters in float64 from the float32 moments. Codes and
// absmax must equal the reference's exactly (they depend only on the gradients, the selection and
// the previous codes); parameters within f32 rounding of the float64 update.
import { GrassAdamW, GrassSelectMode, Parameter, tensor, DType, Tensor } from "../lib";
import { relErr, Rng, roundTo } from "./reference";
import { refDequantize, refQuantize, toF32 } from "./quant_reference";
import { expectStateBits8CloseToF32, MAP_M, MAP_V, Q8_BLOCK, zeroCodeOf } from "./q8_reference";
import { expectCode } from "./helpers";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

const { abs, sqrt, ceil } = Math;
const fr = Math.fround;
const BLOCK = Q8_BLOCK;

type Kind = "rows" | "cols" | "dense";
interface Hyper { lr: number; b1: number; b2: number; eps: number; wd: number; alpha: number }
const H: Hyper = { lr: 0.02, b1: 0.9, b2: 0.99, eps: 1e-6, wd: 0.1, alpha: 0.5 };

/** One projected tensor's reference: W in float64, the moments as codes + absmax. */
interface QRef {
  kind: Kind; m: number; n: number; r: number;
  W: Float64Array; cm: Uint8Array; cv: Uint8Array; am: Float32Array; av: Float32Array;
  idx: Int32Array; rho: Float32Array; ages: Int32Array;
}

function newQRef(shape: number[], r: number, w0: ArrayLike<number>): QRef {
  const m = shape[0], n = shape.reduce((a, b) => a * b, 1) / m;
  const kind: Kind = m >= n ? "rows" : "cols";
  const count = kind === "rows" ? r * n : m * r;
  const blocks = ceil(count / BLOCK);
  return {
    kind, m, n, r, W: Float64Array.from(w0),
    cm: new Uint8Array(count).fill(zeroCodeOf(MAP_M)), cv: new Uint8Array(count).fill(zeroCodeOf(MAP_V)),
    am: new Float32Array(blocks), av: new Float32Array(blocks),
    idx: Int32Array.from({ length: r }, (_, i) => i), rho: new Float32Array(r).fill(1), ages: new Int32Array(r),
  };
}
const lineLen = (s: QRef) => (s.kind === "rows" ? s.n : s.m);
const wAt = (s: QRef, line: number, k: number) => (s.kind === "rows" ? line * s.n + k : k * s.n + line);
const cAt = (s: QRef, j: number, k: number) => (s.kind === "rows" ? j * s.n + k : k * s.r + j);

/** A refresh: keepState dequantizes, carries the lines selected again (rescaled to the new rho,
 *  v by its square, float32) and quantizes again; otherwise everything restarts at the code of 0. */
function qrefReselect(s: QRef, idx: Int32Array, rho: Float32Array, keep: boolean): void {
  const L = lineLen(s), count = s.cm.length;
  const ages = new Int32Array(s.r);
  if (keep) {
    const oldM = refDequantize(s.cm, s.am, MAP_M, BLOCK), oldV = refDequantize(s.cv, s.av, MAP_V, BLOCK);
    const M = new Float32Array(count), V = new Float32Array(count);
    for (let j = 0; j < s.r; j++) {
      const src = Array.prototype.indexOf.call(s.idx, idx[j]) as number;
      if (src < 0) continue;
      let sc = fr(rho[j] / s.rho[src]);
      if (!(s.rho[src] > 0) || !Number.isFinite(sc)) sc = 1;
      const sc2 = fr(sc * sc);
      for (let k = 0; k < L; k++) {
        M[cAt(s, j, k)] = fr(oldM[cAt(s, src, k)] * sc);
        V[cAt(s, j, k)] = fr(oldV[cAt(s, src, k)] * sc2);
      }
      ages[j] = s.ages[src];
    }
    const qm = refQuantize(M, MAP_M, BLOCK), qv = refQuantize(V, MAP_V, BLOCK);
    s.cm = qm.codes; s.am = qm.absmax; s.cv = qv.codes; s.av = qv.absmax;
  } else {
    s.cm.fill(zeroCodeOf(MAP_M)); s.cv.fill(zeroCodeOf(MAP_V)); s.am.fill(0); s.av.fill(0);
  }
  s.ages = ages;
  s.idx = Int32Array.from(idx);
  s.rho = Float32Array.from(rho);
}

/** One step: per compact element m, v in float32 from the dequantized states, N = m/(sqrt(v)+eps)
 *  and the per-slot step size in float64, updates of duplicated lines summed, decay after; then
 *  the new m, v re-encoded per block. */
function qrefStep(s: QRef, g: ArrayLike<number>, h: Hyper, storage: (x: number) => number): void {
  const b1 = fr(h.b1), b2 = fr(h.b2), c1 = fr(1 - b1), c2 = fr(1 - b2);
  const L = lineLen(s), count = s.cm.length;
  const M = refDequantize(s.cm, s.am, MAP_M, BLOCK), V = refDequantize(s.cv, s.av, MAP_V, BLOCK);
  const decay = 1 - h.lr * h.wd;
  const upd = new Map<number, Float64Array>();
  for (let j = 0; j < s.r; j++) {
    const t = ++s.ages[j];
    const cf = h.lr * h.alpha * s.rho[j] * sqrt(1 - h.b2 ** t) / (1 - h.b1 ** t);
    const line = s.idx[j];
    let u = upd.get(line);
    if (!u) upd.set(line, (u = new Float64Array(L)));
    for (let k = 0; k < L; k++) {
      const e = cAt(s, j, k);
      const c = fr(s.rho[j] * g[wAt(s, line, k)]);
      M[e] = fr(fr(b1 * M[e]) + fr(c1 * c));
      V[e] = fr(fr(b2 * V[e]) + fr(fr(c2 * c) * c));
      u[k] += cf * (M[e] / (sqrt(V[e]) + h.eps));
    }
  }
  for (const [line, u] of upd)
    for (let k = 0; k < L; k++) s.W[wAt(s, line, k)] = storage((s.W[wAt(s, line, k)] - u[k]) * decay);
  const qm = refQuantize(M, MAP_M, BLOCK), qv = refQuantize(V, MAP_V, BLOCK);
  s.cm = qm.codes; s.am = qm.absmax; s.cv = qv.codes; s.av = qv.absmax;
  void count;
}

async function u8(t: Tensor): Promise<Uint8Array> { return (await t.toTypedArray()) as Uint8Array; }
async function i32(t: Tensor): Promise<Int32Array> { return (await t.toTypedArray()) as Int32Array; }
const bits = (a: ArrayLike<number>) => Array.from(Float32Array.from(a));

interface CaseOpts {
  select: GrassSelectMode; keepState: boolean; dtype: DType; steps: number; K: number; rank: number; seed: number;
  grad?: (name: string, shape: number[], step: number, rng: Rng) => Float32Array;
  /** Calls before step `step` (returns the optimizer to continue with). */
  hook?: (step: number, opt: GrassAdamW, params: Parameter[]) => Promise<GrassAdamW>;
}

/** Rows [301, 29] (319 compact elements: a full and a partial block), columns [17, 263] and
 *  [6, 4, 45] (as 6 × 180), a 1-D tensor (f32 moments) in the same group. */
async function runCase(o: CaseOpts) {
  const rng = new Rng(o.seed);
  const shapes: Record<string, number[]> = { rows: [301, 29], cols: [17, 263], cube: [6, 4, 45], bias: [11] };
  const params: Record<string, Parameter> = {};
  const refs: Record<string, QRef> = {};
  const w0: Record<string, Float32Array> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const p = new Parameter(tensor(rng.normals(n, 0.3), shape, { dtype: o.dtype, device: "cpu" }), { name });
    params[name] = p;
    w0[name] = await p.data.toFloat32Array();
    if (name !== "bias") refs[name] = newQRef(shape, o.rank, w0[name]);
  }
  const list = Object.values(params);
  const make = () => new GrassAdamW(
    [{ params: list, rank: o.rank, updateProjGap: o.K, select: o.select, keepState: o.keepState, scale: H.alpha, stateBits: 8 }],
    { lr: H.lr, betas: [H.b1, H.b2], eps: H.eps, weightDecay: H.wd, seed: o.seed });
  let opt = make();
  const storage = (x: number) => roundTo(o.dtype, x);
  for (let step = 0; step < o.steps; step++) {
    if (o.hook) opt = await o.hook(step, opt, list);
    const grads: Record<string, Float32Array> = {};
    for (const [name, p] of Object.entries(params)) {
      p.grad.copyFrom(o.grad ? o.grad(name, [...p.shape], step, rng) : rng.normals(p.numel, 1 + 0.1 * step));
      grads[name] = await p.grad.toFloat32Array();
    }
    const refreshing = opt.needsFullGrad(params.rows);
    opt.step();
    for (const [name, p] of Object.entries(params)) {
      const ref = refs[name];
      if (!ref) continue;
      if (refreshing) {
        const st = opt.stateOf(p)!;
        qrefReselect(ref, await i32(st.indices!), await st.rho!.toFloat32Array(), o.keepState);
      }
      qrefStep(ref, grads[name], H, storage);
    }
  }
  for (const [name, p] of Object.entries(params)) {
    const st = opt.stateOf(p)!;
    const ref = refs[name];
    if (!ref) {  // the 1-D tensor keeps f32 moments
      expect(st.expAvg.dtype).toBe("f32");
      expect(st.absmaxM).toBeUndefined();
      continue;
    }
    expect(st.expAvg.dtype).toBe("u8");
    expect(Array.from(await u8(st.expAvg))).toEqual(Array.from(ref.cm));
    expect(Array.from(await u8(st.expAvgSq))).toEqual(Array.from(ref.cv));
    expect(bits(await st.absmaxM!.toFloat32Array())).toEqual(bits(ref.am));
    expect(bits(await st.absmaxV!.toFloat32Array())).toEqual(bits(ref.av));
    expect(Array.from(await i32(st.ages!))).toEqual(Array.from(ref.ages));
    const w = await p.data.toFloat32Array();
    const dOut = Float64Array.from(w, (x, i) => x - w0[name][i]);
    const dRef = Float64Array.from(ref.W, (x, i) => x - w0[name][i]);
    expect(relErr(dOut, dRef)).toBeLessThan(o.dtype === "f32" ? 1e-5 : 1e-2);
  }
  return { opt, params, refs };
}

describe("GrassAdamW stateBits 8 on the CPU against a reference of the quantized update", () => {
  for (const select of ["topk", "multinomial", "uniform"] as GrassSelectMode[]) {
    for (const keepState of [false, true]) {
      test(`${select}, keepState ${keepState}: rows, columns, 3-D, 7 steps, refresh every 3`, async () => {
        const { opt } = await runCase({ select, keepState, dtype: "f32", steps: 7, K: 3, rank: 11, seed: select.length * 10 + (keepState ? 1 : 0) });
        expect(await opt.skippedSteps()).toBe(0);
        opt.dispose();
      });
    }
  }

  test("bf16 parameters, multinomial, keepState", async () => {
    const { opt } = await runCase({ select: "multinomial", keepState: true, dtype: "bf16", steps: 5, K: 2, rank: 9, seed: 77 });
    opt.dispose();
  });

  test("duplicate lines (multinomial draws of a dominant row and column) accumulate, keepState carries them", async () => {
    const grad = (name: string, shape: number[], step: number, rng: Rng) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const g = rng.normals(n, 0.001);
      const cols = n / shape[0];
      if (name === "rows") for (let k = 0; k < cols; k++) g[3 * cols + k] = 3 + step + k * 0.1;
      if (name === "cols") for (let k = 0; k < shape[0]; k++) g[k * cols + 3] = -2 - k * 0.1;
      return g;
    };
    const { opt, params } = await runCase({ select: "multinomial", keepState: true, dtype: "f32", steps: 5, K: 2, rank: 8, seed: 5, grad });
    for (const name of ["rows", "cols"]) {
      const idx = Array.from(await i32(opt.stateOf(params[name])!.indices!));
      expect(idx.filter((x) => x === 3).length).toBeGreaterThan(2);
    }
    opt.dispose();
  });

  test("a stateDict round trip (and save/load) mid-run continues exactly as the reference", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "grass8-"));
    const hook = async (step: number, opt: GrassAdamW, params: Parameter[]) => {
      if (step !== 4 && step !== 5) return opt;
      const fresh = new GrassAdamW(
        [{ params, rank: 10, updateProjGap: 3, select: "multinomial", keepState: true, scale: H.alpha, stateBits: 8 }],
        { lr: H.lr, betas: [H.b1, H.b2], eps: H.eps, weightDecay: H.wd, seed: 3 });
      if (step === 4) {
        fresh.loadStateDict(opt.stateDict());
      } else {
        const file = path.join(dir, "grass8.safetensors");
        await opt.save(file);
        await fresh.load(file);
      }
      opt.dispose();
      return fresh;
    };
    const { opt } = await runCase({ select: "multinomial", keepState: true, dtype: "f32", steps: 8, K: 3, rank: 10, seed: 3, hook });
    opt.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("the stateDict holds u8 codes and f32 absmax per 256-block, as AdamW8bit's", async () => {
    const rng = new Rng(8);
    const p = new Parameter(tensor(rng.normals(300 * 7, 1), [300, 7], { device: "cpu" }));
    const b = new Parameter(tensor(rng.normals(5, 1), [5], { device: "cpu" }));
    const opt = new GrassAdamW([{ params: [p, b], rank: 50, stateBits: 8 }]);
    p.grad.copyFrom(rng.normals(p.numel, 1));
    b.grad.copyFrom(rng.normals(b.numel, 1));
    opt.step();
    const sd = opt.stateDict();
    const t = sd.tensors;
    expect(t["param.0.exp_avg"].dtype).toBe("u8");
    expect(t["param.0.exp_avg"].numel).toBe(350);
    expect(t["param.0.exp_avg_sq"].dtype).toBe("u8");
    expect(t["param.0.exp_avg_absmax"].numel).toBe(2);
    expect(t["param.0.exp_avg_sq_absmax"].numel).toBe(2);
    expect(t["param.1.exp_avg"].dtype).toBe("f32");
    expect(t["param.1.exp_avg_absmax"]).toBeUndefined();
    // The absmax is the block's max |m|: its element takes the map's extreme code (1.0, or the
    // most negative entry, -0.99..., for a negative m).
    const codes = await u8(t["param.0.exp_avg"]), am = await t["param.0.exp_avg_absmax"].toFloat32Array();
    const deq = refDequantize(codes, am, MAP_M, BLOCK);
    for (let blk = 0; blk < 2; blk++) {
      let mx = 0;
      for (let i = blk * BLOCK; i < Math.min(350, (blk + 1) * BLOCK); i++) mx = Math.max(mx, abs(deq[i]));
      expect(am[blk]).toBeGreaterThan(0);
      expect(mx).toBeLessThanOrEqual(am[blk]);
      expect(mx).toBeGreaterThanOrEqual(toF32(abs(MAP_M[0]) * am[blk]));
    }
    opt.dispose();
  });
});

describe("stateBits 8 with compact gradients", () => {
  test("compact gradients between refreshes give the same codes, absmax and W as full ones (rows and columns)", async () => {
    const rng = new Rng(12);
    const shapes = [[301, 29], [17, 263]];
    const w0 = shapes.map((s) => rng.normals(s[0] * s[1], 0.2));
    const mk = () => shapes.map((s, i) => new Parameter(tensor(w0[i], s, { device: "cpu" })));
    const [pf, pc] = [mk(), mk()];
    const spec = (ps: Parameter[]) => [{ params: ps, rank: 9, updateProjGap: 3, select: "multinomial" as const, keepState: true, stateBits: 8 }];
    const [of, oc] = [new GrassAdamW(spec(pf), { seed: 4 }), new GrassAdamW(spec(pc), { seed: 4 })];
    for (let step = 0; step < 7; step++) {
      for (let k = 0; k < shapes.length; k++) {
        const [m, n] = shapes[k];
        const g = rng.normals(m * n, 1);
        pf[k].grad.copyFrom(g);
        if (oc.needsFullGrad(pc[k])) { pc[k].grad.copyFrom(g); continue; }
        const idx = await oc.selectedRows(pc[k]);
        const rows = m >= n, r = idx.length;
        const c = new Float32Array(r * (rows ? n : m));
        for (let j = 0; j < r; j++)
          for (let q = 0; q < (rows ? n : m); q++) c[rows ? j * n + q : q * r + j] = rows ? g[idx[j] * n + q] : g[q * n + idx[j]];
        pc[k].grad.copyFrom(new Float32Array(m * n).fill(NaN));  // never read on a compact step
        oc.setCompactGrad(pc[k], tensor(c, oc.compactShape(pc[k]), { device: "cpu" }), oc.selectionEpoch(pc[k]));
      }
      of.step();
      oc.step();
    }
    for (let k = 0; k < shapes.length; k++) {
      const a = of.stateOf(pf[k])!, b = oc.stateOf(pc[k])!;
      expect(Array.from(await u8(b.expAvg))).toEqual(Array.from(await u8(a.expAvg)));
      expect(Array.from(await u8(b.expAvgSq))).toEqual(Array.from(await u8(a.expAvgSq)));
      expect(bits(await b.absmaxM!.toFloat32Array())).toEqual(bits(await a.absmaxM!.toFloat32Array()));
      expect(bits(await pc[k].data.toFloat32Array())).toEqual(bits(await pf[k].data.toFloat32Array()));
    }
    expect(await oc.skippedSteps()).toBe(0);
    of.dispose();
    oc.dispose();
  });
});

describe("8-bit states against the f32 path", () => {
  test("50 steps of N(0, 0.01²) gradients: dequantized moments and parameters close to stateBits 32", async () => {
    // Bounds derived in expectCloseToF32. Same selection (top-k of the same gradients), so the
    // moments compare slot for slot.
    const rng = new Rng(21);
    const shape = [257, 33];
    const w0 = rng.normals(257 * 33, 0.1);
    const grads = Array.from({ length: 50 }, () => rng.normals(257 * 33, 0.01));
    await expectStateBits8CloseToF32(
      (p, stateBits) => new GrassAdamW([{ params: [p], rank: 16, updateProjGap: 20, stateBits }], { lr: 1e-3, eps: 1e-8 }),
      shape, w0, grads);
  });
});

describe("stateBits 8: skips, stateBytes, refusals", () => {
  test("a NaN in what the step reads skips the group: codes, absmax, W bit-identical (plain and refresh steps)", async () => {
    const rng = new Rng(4);
    const p = new Parameter(tensor(rng.normals(260 * 3, 1), [260, 3], { device: "cpu" }));
    const opt = new GrassAdamW([{ params: [p], rank: 90, updateProjGap: 2, keepState: true, stateBits: 8 }]);
    const snap = async () => {
      const st = opt.stateOf(p)!;
      return [Array.from(await u8(st.expAvg)), Array.from(await u8(st.expAvgSq)), bits(await st.absmaxM!.toFloat32Array()),
              bits(await st.absmaxV!.toFloat32Array()), bits(await p.data.toFloat32Array()), Array.from(await i32(st.indices!))];
    };
    for (let s = 0; s < 3; s++) { p.grad.copyFrom(rng.normals(p.numel, 1)); opt.step(); }
    for (const refresh of [false, true]) {
      expect(opt.needsFullGrad(p)).toBe(refresh);
      const before = await snap();
      const g = rng.normals(p.numel, 1);
      const sel = await i32(opt.stateOf(p)!.indices!);
      g[sel[5] * 3 + 1] = NaN;  // a selected row: read on plain steps too
      p.grad.copyFrom(g);
      opt.step();
      expect(await snap()).toEqual(before);
    }
    expect(await opt.skippedSteps()).toBe(2);
    opt.dispose();
  });

  test("stateBytes is what is allocated: codes r·n·2, absmax 8 per block, the rest as 32-bit", () => {
    const rng = new Rng(6);
    const bytes: number[] = [];
    const ws: number[] = [];
    for (const stateBits of [32, 8]) {
      const p = new Parameter(tensor(rng.normals(600 * 5, 1), [600, 5], { device: "cpu" }));
      const opt = new GrassAdamW([{ params: [p], rank: 100, stateBits }]);
      p.grad.copyFrom(rng.normals(p.numel, 1));
      opt.step();
      let held = 0;
      for (const t of Object.values(opt.stateDict().tensors)) held += t.nbytes;
      expect(opt.stateBytes()).toBe(held + opt.workspaceBytes());
      bytes.push(held);
      ws.push(opt.workspaceBytes());
      opt.dispose();
    }
    const compact = 100 * 5, blocks = 2;
    expect(bytes[0] - bytes[1]).toBe(compact * 8 - (compact * 2 + blocks * 8));
    // The 8-bit workspace adds the new absmax of each block (8 bytes, 256-aligned).
    expect(ws[1] - ws[0]).toBe(256);
  });

  test("bad stateBits -> E_ARG; stateBits changed after the first step -> E_ARG, nothing changed; 8-bit state into a 32-bit optimizer -> E_CHECKPOINT", async () => {
    const rng = new Rng(9);
    const p = new Parameter(tensor(rng.normals(40 * 3, 1), [40, 3], { device: "cpu" }));
    for (const bad of [16, 4, 0, "8", undefined as unknown as number, null as unknown as number])
      expectCode(() => new GrassAdamW([{ params: [p], rank: 2, stateBits: bad as number }]), "E_ARG");
    const opt = new GrassAdamW([{ params: [p], rank: 4, stateBits: 8 }]);
    p.grad.copyFrom(rng.normals(p.numel, 1));
    opt.step();
    const st = opt.stateOf(p)!;
    const before = [Array.from(await u8(st.expAvg)), bits(await p.data.toFloat32Array())];
    opt.paramGroups[0].stateBits = 32;
    p.grad.copyFrom(rng.normals(p.numel, 1));
    expectCode(() => opt.step(), "E_ARG");
    expect([Array.from(await u8(st.expAvg)), bits(await p.data.toFloat32Array())]).toEqual(before);
    opt.paramGroups[0].stateBits = 8;
    const other = new GrassAdamW([{ params: [p], rank: 4 }]);
    expectCode(() => other.loadStateDict(opt.stateDict()), "E_CHECKPOINT");
    opt.dispose();
    other.dispose();
  });
});

