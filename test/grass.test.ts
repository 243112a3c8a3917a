// GrassAdamW on the CPU backend against a float64 reference written here, plus the selection's
// statistics, the compact-gradient path, skips, state dicts and refusals.
import { GrassAdamW, GrassSelectMode, grassSelect, gatherRows, scatterRows, Parameter, tensor, zeros, DType, SlimoptError, Tensor } from "../lib";
import { relErr, Rng, roundTo } from "./reference";
import { expectCode } from "./helpers";

// ---- float64 reference ------------------------------------------------------------------------------

type Kind = "rows" | "cols" | "dense";
interface Ref {
  kind: Kind; m: number; n: number; r: number;
  W: Float64Array; M: Float64Array; V: Float64Array;
  idx: Int32Array; rho: Float64Array; ages: Int32Array;
}
interface Hyper { lr: number; b1: number; b2: number; eps: number; wd: number; alpha: number }

function kindOf(shape: number[]): Kind {
  if (shape.length < 2) return "dense";
  const m = shape[0], n = shape.reduce((a, b) => a * b, 1) / m;
  return m >= n ? "rows" : "cols";
}

function newRef(shape: number[], r: number, w0: ArrayLike<number>, plain = false): Ref {
  const numel = shape.reduce((a, b) => a * b, 1);
  const kind: Kind = plain ? "dense" : kindOf(shape);
  const m = kind === "dense" ? 1 : shape[0], n = numel / m;
  const rr = kind === "dense" ? 1 : r;
  const c = kind === "dense" ? numel : kind === "rows" ? rr * n : m * rr;
  return {
    kind, m, n, r: rr, W: Float64Array.from(w0), M: new Float64Array(c), V: new Float64Array(c),
    idx: Int32Array.from({ length: rr }, (_, i) => i), rho: new Float64Array(rr).fill(1), ages: new Int32Array(rr),
  };
}
const lineLen = (s: Ref) => (s.kind === "rows" ? s.n : s.m);
const wAt = (s: Ref, line: number, k: number) => (s.kind === "rows" ? line * s.n + k : k * s.n + line);
const cAt = (s: Ref, j: number, k: number) => (s.kind === "rows" ? j * s.n + k : k * s.r + j);

/** The new selection takes effect: moments of lines selected again carried (rescaled to the new
 *  rho) with their ages when keep, everything reset otherwise. */
function refReselect(s: Ref, idx: Int32Array, rho: Float32Array, keep: boolean): void {
  const L = lineLen(s);
  const M = new Float64Array(s.M.length), V = new Float64Array(s.V.length), ages = new Int32Array(s.r);
  for (let j = 0; j < s.r; j++) {
    const src = keep ? Array.prototype.indexOf.call(s.idx, idx[j]) as number : -1;
    if (src < 0) continue;
    const sc = rho[j] / s.rho[src];
    for (let k = 0; k < L; k++) {
      M[cAt(s, j, k)] = s.M[cAt(s, src, k)] * sc;
      V[cAt(s, j, k)] = s.V[cAt(s, src, k)] * sc * sc;
    }
    ages[j] = s.ages[src];
  }
  s.M = M; s.V = V; s.ages = ages;
  s.idx = Int32Array.from(idx);
  s.rho = Float64Array.from(rho);
}

/** One step: Adam (GaLore convention, per-slot bias correction) on C = rho·G[sigma], the update
 *  summed per line, then W[line] = (W[line] - update)(1 - lr·wd) on the lines written. */
function refStep(s: Ref, g: ArrayLike<number>, h: Hyper, storage: (x: number) => number): void {
  const decay = 1 - h.lr * h.wd;
  const adam = (c: number, i: number) => {
    s.M[i] = h.b1 * s.M[i] + (1 - h.b1) * c;
    s.V[i] = h.b2 * s.V[i] + (1 - h.b2) * c * c;
    return s.M[i] / (Math.sqrt(s.V[i]) + h.eps);
  };
  const coefOf = (t: number, alpha: number, rho: number) => h.lr * alpha * rho * Math.sqrt(1 - h.b2 ** t) / (1 - h.b1 ** t);
  if (s.kind === "dense") {
    const t = ++s.ages[0];
    const cf = coefOf(t, 1, 1);
    for (let i = 0; i < s.W.length; i++) s.W[i] = storage((s.W[i] - cf * adam(g[i], i)) * decay);
    return;
  }
  const L = lineLen(s);
  const upd = new Map<number, Float64Array>();
  for (let j = 0; j < s.r; j++) {
    const t = ++s.ages[j];
    const cf = coefOf(t, h.alpha, s.rho[j]);
    const line = s.idx[j];
    let u = upd.get(line);
    if (!u) upd.set(line, (u = new Float64Array(L)));
    for (let k = 0; k < L; k++) u[k] += cf * adam(s.rho[j] * g[wAt(s, line, k)], cAt(s, j, k));
  }
  for (const [line, u] of upd)
    for (let k = 0; k < L; k++) s.W[wAt(s, line, k)] = storage((s.W[wAt(s, line, k)] - u[k]) * decay);
}

/** Norms of the lines of g (float64). */
function lineNorms(kind: Kind, m: number, n: number, g: ArrayLike<number>): Float64Array {
  const L = kind === "rows" ? m : n, len = kind === "rows" ? n : m;
  const out = new Float64Array(L);
  for (let i = 0; i < L; i++) {
    let s = 0;
    for (let k = 0; k < len; k++) {
      const x = kind === "rows" ? g[i * n + k] : g[k * n + i];
      s += x * x;
    }
    out[i] = Math.sqrt(s);
  }
  return out;
}

/** Checks a reported selection against its definition (float64 norms). */
function checkSelection(select: GrassSelectMode, kind: Kind, m: number, n: number, r: number, g: ArrayLike<number>,
                        idx: Int32Array, rho: Float32Array): void {
  const L = kind === "rows" ? m : n;
  for (let j = 1; j < r; j++) expect(idx[j]).toBeGreaterThanOrEqual(idx[j - 1]);
  for (const i of idx) { expect(i).toBeGreaterThanOrEqual(0); expect(i).toBeLessThan(L); }
  const norms = lineNorms(kind, m, n, g);
  if (select === "topk") {
    const order = Array.from({ length: L }, (_, i) => i).sort((a, b) => norms[b] - norms[a] || a - b);
    expect(Array.from(idx)).toEqual(order.slice(0, r).sort((a, b) => a - b));
    expect(Array.from(rho)).toEqual(new Array(r).fill(1));
  } else if (select === "uniform") {
    for (let j = 1; j < r; j++) expect(idx[j]).toBeGreaterThan(idx[j - 1]);
    for (const x of rho) expect(x).toBe(Math.fround(Math.sqrt(L / r)));
  } else {
    const total = norms.reduce((a, b) => a + b, 0);
    for (let j = 0; j < r; j++) {
      const want = 1 / Math.sqrt(r * norms[idx[j]] / total);
      expect(Math.abs(rho[j] - want) / want).toBeLessThan(1e-6);
    }
  }
}

async function f32(t: Tensor): Promise<Float32Array> { return t.toFloat32Array(); }
async function i32(t: Tensor): Promise<Int32Array> { return (await t.toTypedArray()) as Int32Array; }
async function raw(t: { toTypedArray(): Promise<ArrayLike<number>> }): Promise<number[]> { return Array.from(await t.toTypedArray()); }

const H: Hyper = { lr: 0.02, b1: 0.9, b2: 0.99, eps: 1e-6, wd: 0.1, alpha: 0.5 };

// ---- against the reference ---------------------------------------------------------------------------

interface CaseOpts {
  select: GrassSelectMode; keepState: boolean; dtype: DType; steps: number; K: number; rank: number;
  seed: number; grad?: (name: string, shape: number[], step: number, rng: Rng) => Float32Array;
}

/** Projected rows [37, 19], projected columns [13, 41] and [6, 4, 5] (as 6 × 20), a 1-D tensor in
 *  the same group (dense Adam) and a plain group; the optimizer's reported selection is checked
 *  against its definition and then fed to the reference. */
async function runCase(o: CaseOpts) {
  const rng = new Rng(o.seed);
  const shapes: Record<string, number[]> = { rows: [37, 19], cols: [13, 41], cube: [6, 4, 5], bias: [11], plain: [9] };
  const params: Record<string, Parameter> = {};
  const refs: Record<string, Ref> = {};
  const w0: Record<string, Float32Array> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const p = new Parameter(tensor(rng.normals(n, 0.3), shape, { dtype: o.dtype, device: "cpu" }), { name });
    params[name] = p;
    w0[name] = await p.data.toFloat32Array();
    refs[name] = newRef(shape, o.rank, w0[name], name === "plain");
  }
  const opt = new GrassAdamW(
    [{ params: [params.rows, params.cols, params.cube, params.bias], rank: o.rank, updateProjGap: o.K, select: o.select,
       keepState: o.keepState, scale: H.alpha },
     { params: [params.plain] }],
    { lr: H.lr, betas: [H.b1, H.b2], eps: H.eps, weightDecay: H.wd, seed: o.seed });
  const storage = (x: number) => roundTo(o.dtype, x);
  for (let step = 0; step < o.steps; step++) {
    const grads: Record<string, Float32Array> = {};
    for (const [name, p] of Object.entries(params)) {
      p.grad.copyFrom(o.grad ? o.grad(name, [...p.shape], step, rng) : rng.normals(p.numel, 1 + 0.1 * step));
      grads[name] = await p.grad.toFloat32Array();  // as stored
    }
    const refreshing = opt.needsFullGrad(params.rows);
    expect(refreshing).toBe(step % o.K === 0);
    opt.step();
    for (const [name, p] of Object.entries(params)) {
      const ref = refs[name];
      if (refreshing && ref.kind !== "dense") {
        const st = opt.stateOf(p)!;
        const idx = await i32(st.indices!), rho = await f32(st.rho!);
        checkSelection(o.select, ref.kind, ref.m, ref.n, ref.r, grads[name], idx, rho);
        refReselect(ref, idx, rho, o.keepState);
      }
      refStep(ref, grads[name], name === "plain" ? { ...H, alpha: 1 } : H, storage);
    }
  }
  for (const [name, p] of Object.entries(params)) {
    const ref = refs[name];
    const w = await p.data.toFloat32Array();
    const dOut = Float64Array.from(w, (x, i) => x - w0[name][i]);
    const dRef = Float64Array.from(ref.W, (x, i) => x - w0[name][i]);
    expect(relErr(dOut, dRef)).toBeLessThan(o.dtype === "f32" ? 1e-5 : 1e-2);
    const st = opt.stateOf(p)!;
    expect(relErr(await f32(st.expAvg), ref.M)).toBeLessThan(o.dtype === "f32" ? 1e-5 : 1e-2);
    expect(relErr(await f32(st.expAvgSq), ref.V)).toBeLessThan(o.dtype === "f32" ? 1e-5 : 1e-2);
    if (st.ages) expect(Array.from(await i32(st.ages))).toEqual(Array.from(ref.ages));
  }
  expect(await opt.skippedSteps()).toBe(0);
  expect(await opt.completedStepsPerGroup()).toEqual([o.steps, o.steps]);
  return { opt, params, refs };
}

describe("GrassAdamW on the CPU against a float64 reference", () => {
  for (const select of ["topk", "multinomial", "uniform"] as GrassSelectMode[]) {
    for (const keepState of [false, true]) {
      test(`${select}, keepState ${keepState}: rows, columns, 3-D, dense and plain tensors, 8 steps, refresh every 3`, async () => {
        const { opt } = await runCase({ select, keepState, dtype: "f32", steps: 8, K: 3, rank: 5, seed: select.length * 10 + (keepState ? 1 : 0) });
        opt.dispose();
      });
    }
  }

  test("bf16 parameters, multinomial, keepState", async () => {
    const { opt } = await runCase({ select: "multinomial", keepState: true, dtype: "bf16", steps: 6, K: 2, rank: 4, seed: 77 });
    opt.dispose();
  });

  test("duplicate lines (multinomial draws of a dominant row and column) accumulate their updates", async () => {
    // Line 3 carries almost all of the norm: most of the r draws land on it.
    const grad = (name: string, shape: number[], step: number, rng: Rng) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const g = rng.normals(n, 0.01);
      if (name === "rows") for (let k = 0; k < shape[1]; k++) g[3 * shape[1] + k] = 3 + step + k * 0.1;
      if (name === "cols") for (let k = 0; k < shape[0]; k++) g[k * shape[1] + 3] = -2 - k * 0.1;
      return g;
    };
    const { opt, params } = await runCase({ select: "multinomial", keepState: true, dtype: "f32", steps: 5, K: 2, rank: 6, seed: 5, grad });
    for (const name of ["rows", "cols"]) {
      const idx = Array.from(await i32(opt.stateOf(params[name])!.indices!));
      expect(idx.filter((x) => x === 3).length).toBeGreaterThan(2);
    }
    opt.dispose();
  });

  test("keepState carries the moments (and ages) of lines selected again; off resets them", async () => {
    // The same gradient every step: top-k selects the same rows at every refresh.
    const rng = new Rng(3);
    const g = rng.normals(30 * 4, 1);
    const w = rng.normals(30 * 4, 0.1);
    const ages: number[][] = [];
    const moments: Float32Array[] = [];
    for (const keepState of [false, true]) {
      const p = new Parameter(tensor(w, [30, 4], { device: "cpu" }));
      const opt = new GrassAdamW([{ params: [p], rank: 5, updateProjGap: 3, keepState }], { lr: 0.01 });
      for (let s = 0; s < 7; s++) { p.grad.copyFrom(g); opt.step(); }
      ages.push(Array.from(await i32(opt.stateOf(p)!.ages!)));
      moments.push(await f32(opt.stateOf(p)!.expAvg));
      opt.dispose();
    }
    expect(ages[0]).toEqual([1, 1, 1, 1, 1]);  // reset at the refresh of step 7
    expect(ages[1]).toEqual([7, 7, 7, 7, 7]);  // carried through both refreshes
    // m after 1 step is (1 - b1) c; after 7 steps with a constant c it is (1 - b1^7) c.
    for (let i = 0; i < moments[0].length; i++) {
      expect(moments[1][i] / moments[0][i]).toBeCloseTo((1 - 0.9 ** 7) / 0.1, 4);
    }
  });
});

// ---- the selection's statistics --------------------------------------------------------------------------

describe("selection", () => {
  // E[PᵀP] = I for multinomial and uniform selection: row i of PᵀP·G is w_i·G_i with
  // w_i = sum of rho_j² over the slots holding i. Over D independent refreshes the mean of w_i has
  // standard deviation sd_i = sqrt(Var(w_i)/D): uniform (r of L without replacement, rho² = L/r)
  // Var = L/r - 1; multinomial (r draws, rho² = 1/(r q_i)) Var = (1 - q_i)/(r q_i). Each row's mean
  // must be within 5 sd_i of 1 (a false alarm has probability < 6e-7 per row), and ‖mean(PᵀPG) − G‖²
  // within 3× its expectation sum_i ‖G_i‖² sd_i².
  for (const select of ["multinomial", "uniform"] as GrassSelectMode[]) {
    for (const shape of [[40, 5], [5, 40]]) {
      test(`${select} selection of ${shape.join("×")} is unbiased: mean of PᵀP·G over 1500 refreshes approaches G`, async () => {
        const rng = new Rng(11 + shape[0]);
        const [m, n] = shape;
        const kind = kindOf(shape);
        const L = kind === "rows" ? m : n;
        const r = 5, D = 1500;
        const g = rng.normals(m * n, 1);
        // Uneven line norms (a factor ~6 between the smallest and largest).
        for (let i = 0; i < L; i++) {
          const f = 0.4 + 2 * (i % 7) / 6;
          for (let k = 0; k < (kind === "rows" ? n : m); k++) g[kind === "rows" ? i * n + k : k * n + i] *= f;
        }
        const G = tensor(g, shape, { device: "cpu" });
        const gStored = await G.toFloat32Array();
        const norms = lineNorms(kind, m, n, gStored);
        const total = norms.reduce((a, b) => a + b, 0);
        const wSum = new Float64Array(L);
        for (let d = 0; d < D; d++) {
          const sel = await grassSelect(G, { rank: r, select, seed: 99, refreshIndex: d });
          expect(sel.side).toBe(kind);
          for (let j = 0; j < r; j++) wSum[sel.indices[j]] += sel.rho[j] * sel.rho[j];
        }
        let err2 = 0, exp2 = 0, gg = 0;
        for (let i = 0; i < L; i++) {
          const q = norms[i] / total;
          const variance = select === "uniform" ? L / r - 1 : (1 - q) / (r * q);
          const sd = Math.sqrt(variance / D);
          const mean = wSum[i] / D;
          expect(Math.abs(mean - 1)).toBeLessThan(5 * sd);
          err2 += (mean - 1) ** 2 * norms[i] ** 2;
          exp2 += sd * sd * norms[i] ** 2;
          gg += norms[i] ** 2;
        }
        expect(err2).toBeLessThan(3 * exp2);
        expect(Math.sqrt(err2 / gg)).toBeLessThan(0.1);
        G.dispose();
      });
    }
  }

  test("the same key gives the same selection; another refresh index another one", async () => {
    const G = tensor(new Rng(4).normals(64 * 8, 1), [64, 8], { device: "cpu" });
    for (const select of ["multinomial", "uniform"] as GrassSelectMode[]) {
      const a = await grassSelect(G, { rank: 9, select, seed: 5, refreshIndex: 2 });
      const b = await grassSelect(G, { rank: 9, select, seed: 5, refreshIndex: 2 });
      const c = await grassSelect(G, { rank: 9, select, seed: 5, refreshIndex: 3 });
      expect(Array.from(b.indices)).toEqual(Array.from(a.indices));
      expect(Array.from(b.rho)).toEqual(Array.from(a.rho));
      expect(Array.from(c.indices)).not.toEqual(Array.from(a.indices));
    }
    // An all-zero gradient: top-k takes the first r lines, multinomial falls back to uniform draws.
    const Z = zeros([20, 3], { device: "cpu" });
    expect(Array.from((await grassSelect(Z, { rank: 4 })).indices)).toEqual([0, 1, 2, 3]);
    const z = await grassSelect(Z, { rank: 4, select: "multinomial" });
    for (const x of z.rho) expect(x).toBe(Math.fround(Math.sqrt(20 / 4)));
  });
});

// ---- compact gradients -----------------------------------------------------------------------------------

describe("compact gradients", () => {
  for (const dtype of ["f32", "bf16"] as DType[]) {
    test(`the compact path gives bit-identical results to the full-gradient path (${dtype}, multinomial, rows and columns)`, async () => {
      const rng = new Rng(dtype === "f32" ? 21 : 22);
      const shapes = [[23, 7], [6, 4, 5], [5, 17]];
      const mk = () => shapes.map((s, i) => new Parameter(tensor(new Rng(i).normals(s.reduce((a, b) => a * b, 1), 0.2), s, { dtype, device: "cpu" }), { name: `p${i}` }));
      const full = mk(), comp = mk();
      const opts = { rank: 4, updateProjGap: 3, select: "multinomial" as const, keepState: true, scale: 0.7 };
      const A = new GrassAdamW([{ params: full, ...opts }], { lr: 0.03, weightDecay: 0.05, seed: 8 });
      const B = new GrassAdamW([{ params: comp, ...opts }], { lr: 0.03, weightDecay: 0.05, seed: 8 });
      let compactSteps = 0;
      for (let s = 0; s < 8; s++) {
        for (let i = 0; i < shapes.length; i++) {
          const g = rng.normals(full[i].numel);
          full[i].grad.copyFrom(g);
          if (B.needsFullGrad(comp[i])) {
            comp[i].grad.copyFrom(g);
            continue;
          }
          // What a training loop does: compute only the selected lines of the gradient.
          const rows = await B.selectedRows(comp[i]);
          const shape = B.compactShape(comp[i]);
          const m = comp[i].shape[0], n = comp[i].numel / m, r = rows.length;
          const c = new Float32Array(r * (m >= n ? n : m));
          if (m >= n) for (let j = 0; j < r; j++) for (let k = 0; k < n; k++) c[j * n + k] = g[rows[j] * n + k];
          else for (let k = 0; k < m; k++) for (let j = 0; j < r; j++) c[k * r + j] = g[k * n + rows[j]];
          comp[i].grad.copyFrom(new Float32Array(comp[i].numel).fill(NaN));  // must not be read
          B.setCompactGrad(comp[i], tensor(c, shape, { dtype, device: "cpu" }), B.selectionEpoch(comp[i]));
          compactSteps++;
        }
        A.step();
        B.step();
      }
      expect(compactSteps).toBe(3 * 5);
      for (let i = 0; i < shapes.length; i++) {
        expect(await raw(comp[i].data)).toEqual(await raw(full[i].data));
        expect(await raw(B.stateOf(comp[i])!.expAvg)).toEqual(await raw(A.stateOf(full[i])!.expAvg));
        expect(await raw(B.stateOf(comp[i])!.expAvgSq)).toEqual(await raw(A.stateOf(full[i])!.expAvgSq));
      }
      expect(await B.skippedSteps()).toBe(0);
    });
  }
});

// ---- non-finite gradients ---------------------------------------------------------------------------------

describe("non-finite gradients", () => {
  test("a NaN in what the step reads skips the whole group; a skipped refresh keeps the previous selection", async () => {
    const rng = new Rng(31);
    const p = new Parameter(tensor(rng.normals(20 * 6, 0.1), [20, 6], { device: "cpu" }));
    const b = new Parameter(tensor(rng.normals(5, 0.1), [5], { device: "cpu" }));
    const q = new Parameter(tensor(rng.normals(7, 0.1), [7], { device: "cpu" }));
    const opt = new GrassAdamW([{ params: [p, b], rank: 4, updateProjGap: 4 }, { params: [q] }], { lr: 0.01 });
    const fill = () => { for (const x of [p, b, q]) x.grad.copyFrom(rng.normals(x.numel)); };
    const snap = async () => Promise.all([raw(p.data), raw(b.data), raw(opt.stateOf(p)!.expAvg), raw(opt.stateOf(p)!.expAvgSq),
                                          raw(opt.stateOf(p)!.indices!), raw(opt.stateOf(p)!.ages!), raw(opt.stateOf(b)!.expAvg)]);
    fill(); opt.step();  // call 0: selects
    const sel = await opt.selectedRows(p);
    const unselected = Array.from({ length: 20 }, (_, i) => i).find((i) => !sel.includes(i))!;
    // call 1: NaN in a selected row -> skipped
    fill();
    const g = rng.normals(120); g[sel[1] * 6 + 2] = NaN; p.grad.copyFrom(g);
    let before = await snap();
    opt.step();
    expect(await snap()).toEqual(before);
    expect(await opt.skippedStepsPerGroup()).toEqual([1, 0]);
    // call 2: Inf in the 1-D tensor of the group -> skipped too
    fill();
    b.grad.copyFrom([1, 2, Infinity, 4, 5]);
    opt.step();
    expect(await snap()).toEqual(before);
    expect(await opt.skippedStepsPerGroup()).toEqual([2, 0]);
    // call 3: NaN in a row the step does not read -> the step runs
    fill();
    const g2 = rng.normals(120); g2[unselected * 6] = NaN; p.grad.copyFrom(g2);
    opt.step();
    expect(await raw(p.data)).not.toEqual(before[0]);
    expect(await opt.completedStepsPerGroup()).toEqual([2, 4]);
    // call 4 reselects; a NaN anywhere skips it and the selection stays
    expect(opt.needsFullGrad(p)).toBe(true);
    fill();
    const g3 = rng.normals(120); g3[unselected * 6 + 5] = NaN; p.grad.copyFrom(g3);
    before = await snap();
    opt.step();
    expect(await snap()).toEqual(before);
    expect(await opt.selectedRows(p)).toEqual(sel);
    expect(await opt.skippedStepsPerGroup()).toEqual([3, 0]);
    // call 5 runs on the kept selection
    fill(); opt.step();
    expect(await opt.selectedRows(p)).toEqual(sel);
    expect(await opt.completedStepsPerGroup()).toEqual([3, 6]);
    opt.dispose();
  });
});

// ---- state ------------------------------------------------------------------------------------------------

describe("state", () => {
  test("stateDict / loadStateDict round trip continues bit-identically", async () => {
    const rng = new Rng(41);
    const shapes = [[17, 5], [4, 9], [3]];
    const mk = () => shapes.map((s, i) => new Parameter(tensor(new Rng(50 + i).normals(s.reduce((a, b) => a * b, 1), 0.2), s, { device: "cpu" })));
    const a = mk(), b = mk();
    const spec = (ps: Parameter[]) => [{ params: ps.slice(0, 2), rank: 3, updateProjGap: 4, select: "multinomial" as const, keepState: true }, { params: ps.slice(2) }];
    const A = new GrassAdamW(spec(a), { lr: 0.02, weightDecay: 0.01, seed: 3 });
    const grads = Array.from({ length: 10 }, () => shapes.map((s) => rng.normals(s.reduce((x, y) => x * y, 1))));
    for (let s = 0; s < 5; s++) { a.forEach((p, i) => p.grad.copyFrom(grads[s][i])); A.step(); }
    const sd = A.stateDict();
    expect(Object.keys(sd.tensors).sort()).toEqual([
      "group.0.counters", "group.1.counters",
      "param.0.ages", "param.0.exp_avg", "param.0.exp_avg_sq", "param.0.indices", "param.0.rho",
      "param.1.ages", "param.1.exp_avg", "param.1.exp_avg_sq", "param.1.indices", "param.1.rho",
      "param.2.exp_avg", "param.2.exp_avg_sq"]);
    expect((sd as unknown as { groupState: unknown[] }).groupState).toEqual([{ calls: 5, refreshes: 2 }, { calls: 5, refreshes: 0 }]);
    // b holds a's weights; B loads A's state (copies of it, so A's own can move on).
    for (let i = 0; i < 3; i++) b[i].data.copyFrom(a[i].data);
    const copy = { ...sd, tensors: Object.fromEntries(Object.entries(sd.tensors).map(([k, t]) => [k, t.clone()])) };
    const B = new GrassAdamW(spec(b), { lr: 0.02, weightDecay: 0.01, seed: 3 });
    B.loadStateDict(copy);
    expect(B.stepCalls).toBe(5);
    expect(B.needsFullGrad(b[0])).toBe(false);
    for (let s = 5; s < 10; s++) {
      a.forEach((p, i) => p.grad.copyFrom(grads[s][i])); A.step();
      b.forEach((p, i) => p.grad.copyFrom(grads[s][i])); B.step();
    }
    for (let i = 0; i < 3; i++) expect(await raw(b[i].data)).toEqual(await raw(a[i].data));
    expect(await B.selectedRows(b[0])).toEqual(await A.selectedRows(a[0]));
    // A state dict of another shape or optimizer is refused, nothing changed.
    const before = await raw(B.stateOf(b[0])!.expAvg);
    const wrong = { ...copy, tensors: { ...copy.tensors, "param.0.indices": zeros([4], { dtype: "i32", device: "cpu" }) } };
    expectCode(() => B.loadStateDict(wrong), "E_CHECKPOINT");
    expectCode(() => B.loadStateDict({ ...copy, optimizer: "AdamW" }), "E_CHECKPOINT");
    expect(await raw(B.stateOf(b[0])!.expAvg)).toEqual(before);
  });

  test("stateBytes is what is allocated: moments r·n·8, indices/rho/ages 12·r, counters, workspace", () => {
    const p = new Parameter(zeros([64, 16], { device: "cpu" }));   // rows: r × 16
    const q = new Parameter(zeros([8, 100], { device: "cpu" }));   // columns: 8 × r
    const b = new Parameter(zeros([10], { device: "cpu" }));       // dense in the rank group
    const c = new Parameter(zeros([6], { device: "cpu" }));        // plain group
    const opt = new GrassAdamW([{ params: [p, q, b], rank: 8 }, { params: [c] }]);
    expect(opt.stateBytes()).toBe(0);
    for (const x of [p, q, b, c]) x.grad.copyFrom(new Float32Array(x.numel).fill(0.5));
    opt.step();
    const tensors = 8 + (8 * 16 * 8 + 12 * 8) + (8 * 8 * 8 + 12 * 8) + (10 * 8 + 4) + (8 + 6 * 8);
    expect(opt.workspaceBytes()).toBeGreaterThan(0);
    expect(opt.workspaceBytes()).toBeLessThan(64 * 1024);
    expect(opt.stateBytes()).toBe(tensors + opt.workspaceBytes());
    opt.dispose();
    expect(opt.stateBytes()).toBe(0);
  });
});

// ---- refusals ---------------------------------------------------------------------------------------------

describe("bad input is refused with its code and changes nothing", () => {
  async function setup() {
    const rng = new Rng(61);
    const p = new Parameter(tensor(rng.normals(30 * 6, 0.1), [30, 6], { device: "cpu" }), { name: "p" });
    const q = new Parameter(tensor(rng.normals(4 * 12, 0.1), [4, 12], { device: "cpu" }), { name: "q" });
    const b = new Parameter(tensor(rng.normals(5, 0.1), [5], { device: "cpu" }), { name: "b" });
    const opt = new GrassAdamW([{ params: [p, q, b], rank: 3, updateProjGap: 5 }], { lr: 0.01 });
    for (const x of [p, q, b]) x.grad.copyFrom(rng.normals(x.numel));
    opt.step();
    const snap = async () => Promise.all([p, q, b].flatMap((x) => [raw(x.data), raw(opt.stateOf(x)!.expAvg), raw(opt.stateOf(x)!.expAvgSq),
                                                                    raw(opt.stateOf(x)!.ages!)]).concat([raw(opt.stateOf(p)!.indices!)]));
    return { p, q, b, opt, snap, before: await snap() };
  }

  test("rank larger than the selected side -> E_ARG (rows and columns)", () => {
    const p = new Parameter(zeros([10, 4], { device: "cpu" }));
    const q = new Parameter(zeros([4, 10], { device: "cpu" }));
    expectCode(() => new GrassAdamW([{ params: [p], rank: 11 }]), "E_ARG");
    expectCode(() => new GrassAdamW([{ params: [q], rank: 11 }]), "E_ARG");
    expect(() => new GrassAdamW([{ params: [p, q], rank: 10 }])).not.toThrow();
    expectCode(() => new GrassAdamW([{ params: [p], rank: 0 }]), "E_ARG");
    expectCode(() => new GrassAdamW([{ params: [p], rank: 2.5 }]), "E_ARG");
  });

  test("option refusals: stateBits other than 32 / 8, select, updateProjGap, scale, eps", () => {
    const p = new Parameter(zeros([10, 4], { device: "cpu" }));
    expectCode(() => new GrassAdamW([{ params: [p], rank: 2, stateBits: 4 }]), "E_ARG");
    expectCode(() => new GrassAdamW([{ params: [p], rank: 2, stateBits: 16 }]), "E_ARG");
    expectCode(() => new GrassAdamW([{ params: [p], rank: 2, select: "random" as GrassSelectMode }]), "E_ARG");
    expectCode(() => new GrassAdamW([{ params: [p], rank: 2, updateProjGap: 0 }]), "E_ARG");
    expectCode(() => new GrassAdamW([{ params: [p], rank: 2, scale: NaN }]), "E_ARG");
    expectCode(() => new GrassAdamW([{ params: [p], rank: 2 }], { eps: -1 }), "E_ARG");
  });

  test("a compact gradient of the wrong shape -> E_SHAPE, wrong dtype -> E_DTYPE, wrong device or a 1-D parameter -> E_ARG", async () => {
    const s = await setup();
    expect(s.opt.compactShape(s.p)).toEqual([3, 6]);
    expect(s.opt.compactShape(s.q)).toEqual([4, 3]);
    expectCode(() => s.opt.setCompactGrad(s.p, zeros([3, 5], { device: "cpu" })), "E_SHAPE");
    expectCode(() => s.opt.setCompactGrad(s.p, zeros([6, 3], { device: "cpu" })), "E_SHAPE");
    expectCode(() => s.opt.setCompactGrad(s.q, zeros([3, 4], { device: "cpu" })), "E_SHAPE");
    expectCode(() => s.opt.setCompactGrad(s.p, zeros([3, 6], { dtype: "bf16", device: "cpu" })), "E_DTYPE");
    expectCode(() => s.opt.setCompactGrad(s.b, zeros([5], { device: "cpu" })), "E_ARG");
    s.opt.step();  // none of them was registered: a full step
    const after = await s.snap();
    expect(after).not.toEqual(s.before);
  });

  test("a compact gradient for a stale selection or on a refresh step -> E_ARG, nothing changed", async () => {
    const s = await setup();
    const epoch = s.opt.selectionEpoch(s.p);
    expect(epoch).toBe(1);
    expectCode(() => s.opt.setCompactGrad(s.p, zeros([3, 6], { device: "cpu" }), epoch - 1), "E_ARG");
    expect(await s.snap()).toEqual(s.before);
    // Steps 1..4 take compact gradients; step 5 reselects and refuses them.
    for (let k = 1; k < 5; k++) {
      s.opt.setCompactGrad(s.p, tensor(new Rng(k).normals(18), [3, 6], { device: "cpu" }), epoch);
      s.opt.step();
    }
    expect(s.opt.needsFullGrad(s.p)).toBe(true);
    await expect(s.opt.selectedRows(s.p)).rejects.toMatchObject({ code: "E_ARG" });
    expectCode(() => s.opt.setCompactGrad(s.p, zeros([3, 6], { device: "cpu" })), "E_ARG");
    s.opt.step();
    expect(s.opt.selectionEpoch(s.p)).toBe(2);
    const snap2 = await s.snap();
    expectCode(() => s.opt.setCompactGrad(s.p, zeros([3, 6], { device: "cpu" }), 1), "E_ARG");
    // A registered compact gradient disposed before the step -> E_DISPOSED, nothing changed.
    const c = zeros([3, 6], { device: "cpu" });
    s.opt.setCompactGrad(s.p, c);
    c.dispose();
    expectCode(() => s.opt.step(), "E_DISPOSED");
    expect(await s.snap()).toEqual(snap2);
  });

  test("selectedRows before the first step, rank changed between steps, bad gradients", async () => {
    const p = new Parameter(zeros([10, 4], { device: "cpu" }));
    const opt = new GrassAdamW([{ params: [p], rank: 2 }]);
    await expect(opt.selectedRows(p)).rejects.toMatchObject({ code: "E_ARG" });
    expectCode(() => opt.selection(p), "E_ARG");
    const s = await setup();
    s.opt.paramGroups[0].rank = 4;
    expectCode(() => s.opt.step(), "E_ARG");
    s.opt.paramGroups[0].rank = 3;
    s.opt.paramGroups[0].lr = -1;
    expectCode(() => s.opt.step(), "E_ARG");
    s.opt.paramGroups[0].lr = 0.01;
    s.p.grad = zeros([30, 5], { device: "cpu" });
    expectCode(() => s.opt.step(), "E_SHAPE");
    s.p.grad = zeros([30, 6], { dtype: "f16", device: "cpu" });
    expectCode(() => s.opt.step(), "E_DTYPE");
    expect(await s.snap()).toEqual(s.before);
  });

  test("gatherRows / scatterRows refusals", () => {
    const m = zeros([6, 4], { device: "cpu" });
    expectCode(() => gatherRows(m, Int32Array.from([0, 6])), "E_ARG");
    expectCode(() => gatherRows(m, Int32Array.from([-1])), "E_ARG");
    expectCode(() => scatterRows(m, Int32Array.from([2, 1]), zeros([2, 4], { device: "cpu" })), "E_ARG");
    expectCode(() => scatterRows(m, Int32Array.from([1, 2]), zeros([3, 4], { device: "cpu" })), "E_SHAPE");
    expectCode(() => gatherRows(m, Int32Array.from([1]), { scale: new Float32Array(2) }), "E_SHAPE");
  });
});

// ---- gather / scatter helpers ---------------------------------------------------------------------------------

describe("gatherRows / scatterRows", () => {
  for (const dtype of ["f32", "bf16"] as DType[]) {
    test(`${dtype}: gather with rho, scatter with duplicates summed in order`, async () => {
      const rng = new Rng(71);
      const [m, n] = [13, 10];
      const src = tensor(rng.normals(m * n), [m, n], { dtype, device: "cpu" });
      const s = await src.toFloat32Array();
      const idx = Int32Array.from([0, 3, 3, 3, 7, 12]);
      const scale = Float32Array.from([1, 0.5, 2, -1, 3, 0.25]);
      const out = gatherRows(src, idx, { scale });
      expect(out.shape).toEqual([6, n]);
      const o = await out.toFloat32Array();
      for (let j = 0; j < idx.length; j++)
        for (let k = 0; k < n; k++) expect(o[j * n + k]).toBe(roundTo(dtype, Math.fround(scale[j] * s[idx[j] * n + k])));
      // Arrays made by the addon (another realm under jest) are accepted too.
      const scaleFromAddon = await tensor(scale, [6], { device: "cpu" }).toFloat32Array();
      const idxFromAddon = (await tensor(idx, [6], { device: "cpu" }).toTypedArray()) as Int32Array;
      expect(await gatherRows(src, idxFromAddon, { scale: scaleFromAddon }).toFloat32Array()).toEqual(o);
      const dst = tensor(rng.normals(m * n), [m, n], { dtype, device: "cpu" });
      const d0 = await dst.toFloat32Array();
      const upd = tensor(rng.normals(6 * n), [6, n], { dtype, device: "cpu" });
      const u = await upd.toFloat32Array();
      scatterRows(dst, idx, upd, { alpha: -0.5, scale });
      const d = await dst.toFloat32Array();
      const want = Float64Array.from(d0);
      for (let j = 0; j < idx.length; j++) for (let k = 0; k < n; k++) want[idx[j] * n + k] += -0.5 * scale[j] * u[j * n + k];
      expect(relErr(d, want)).toBeLessThan(dtype === "f32" ? 1e-6 : 1e-2);
      for (const row of [1, 2, 4]) for (let k = 0; k < n; k++) expect(d[row * n + k]).toBe(d0[row * n + k]);
    });
  }
});
