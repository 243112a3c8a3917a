// Grass on CUDA against the CPU backend on the same inputs, with f32 and with 8-bit moments.
// Selections must be identical (same lines, bit-identical rho: both backends use the same exactly
// rounded orders); parameters and f32 moments agree to f32 accuracy, 8-bit codes except at ties
// (>= 99.99%). Skipped where no CUDA device exists.
import { GrassAdamW, GrassSelectMode, grassSelect, gatherRows, scatterRows, devices, Parameter, tensor, zeros, DType, SlimoptError, Tensor } from "../../lib";
import { relErr, Rng } from "../reference";
import { expectCode } from "../helpers";

const hasCuda = devices().length > 1;
const suite = hasCuda ? describe : describe.skip;

async function bits(t: Tensor): Promise<number[]> {
  const a = await t.toTypedArray();
  if (Object.prototype.toString.call(a) === "[object Float32Array]") return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
  return Array.from(a);
}
function sameFraction(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return a.length ? same / a.length : 1;
}
const f32bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
const tol = (d: DType) => (d === "f32" ? 1e-5 : 1e-2);

suite("Grass selection: CUDA picks the same lines as the CPU", () => {
  const shapes = [[7, 3], [3, 7], [4097, 65], [65, 4097], [300, 300], [70001, 3], [600, 5000], [33, 4, 9]];
  for (const select of ["topk", "multinomial", "uniform"] as GrassSelectMode[]) {
    for (const dtype of ["f32", "bf16"] as DType[]) {
      test(`${select}, ${dtype}: shapes ${shapes.map((s) => s.join("×")).join(", ")}`, async () => {
        const rng = new Rng(select.length * 7 + dtype.length);
        for (const shape of shapes) {
          const numel = shape.reduce((a, b) => a * b, 1);
          const g = rng.normals(numel);
          const gc = tensor(g, shape, { dtype, device: "cpu" });
          const gg = tensor(g, shape, { dtype, device: "cuda" });
          const lines = shape[0] >= numel / shape[0] ? shape[0] : numel / shape[0];
          for (const rank of [1, Math.max(1, Math.floor(lines / 8)), lines]) {
            for (const refreshIndex of [0, 5]) {
              const a = await grassSelect(gc, { rank, select, seed: 17, refreshIndex });
              const b = await grassSelect(gg, { rank, select, seed: 17, refreshIndex });
              expect(b.side).toBe(a.side);
              expect(Array.from(b.indices)).toEqual(Array.from(a.indices));
              expect(f32bits(b.rho)).toEqual(f32bits(a.rho));
            }
          }
          gc.dispose();
          gg.dispose();
        }
      });
    }
  }
});

interface RunOpts { select: GrassSelectMode; keepState: boolean; dtype: DType; steps: number; K: number; seed: number;
                    stateBits: 32 | 8; grad?: (name: string, n: number, step: number, rng: Rng) => Float32Array;
                    poison?: { step: number; name: string }; compactFrom?: number }

/** Rows with n % 4 == 0 (quad path) and odd (scalar path), columns, a 3-D tensor, a larger matrix
 *  (26 blocks of 8-bit moments), dense tensors in the rank group (f32 moments), and a plain group;
 *  identical gradients on both backends. At every refresh the selections (lines and rho) are the
 *  same bits. compactFrom: from that step on, non-refresh steps get compact gradients (the
 *  selected lines, gathered on the host from the CPU's selection) instead. */
async function run(o: RunOpts) {
  const rng = new Rng(o.seed);
  const shapes: Record<string, number[]> = {
    quad: [257, 64], odd: [33, 19], cols: [48, 300], cube: [5, 6, 7], big: [4097, 65], dense: [1000], tiny: [7], plain: [4097],
  };
  const names = Object.keys(shapes);
  const matrices = ["quad", "odd", "cols", "big"];  // projected and 2-D: compact gradients apply
  const mk = (device: string) => Object.fromEntries(names.map((nm, i) => {
    const n = shapes[nm].reduce((a, b) => a * b, 1);
    return [nm, new Parameter(tensor(new Rng(100 + i).normals(n, 0.2), shapes[nm], { dtype: o.dtype, device }), { name: nm })];
  })) as Record<string, Parameter>;
  const pc = mk("cpu"), pg = mk("cuda");
  const spec = (p: Record<string, Parameter>) => [
    { params: names.filter((nm) => nm !== "plain").map((nm) => p[nm]), rank: 13, updateProjGap: o.K, select: o.select,
      keepState: o.keepState, scale: 0.5, stateBits: o.stateBits },
    { params: [p.plain], lr: 0.005 }];
  const oc = new GrassAdamW(spec(pc), { lr: 0.02, weightDecay: 0.05, seed: o.seed });
  const og = new GrassAdamW(spec(pg), { lr: 0.02, weightDecay: 0.05, seed: o.seed });
  const w0 = Object.fromEntries(await Promise.all(names.map(async (nm) => [nm, await pc[nm].data.toFloat32Array()] as const)));
  for (let s = 0; s < o.steps; s++) {
    const refreshing = oc.needsFullGrad(pc.quad);
    const compact = o.compactFrom !== undefined && s >= o.compactFrom && !refreshing;
    for (const nm of names) {
      const n = pc[nm].numel;
      const g = o.grad ? o.grad(nm, n, s, rng) : rng.normals(n, 1 + 0.1 * s);
      if (o.poison && o.poison.step === s && o.poison.name === nm) g[n >> 1] = NaN;
      pc[nm].grad.copyFrom(g);
      pg[nm].grad.copyFrom(g);
      if (compact && matrices.includes(nm)) {
        const idx = await oc.selectedRows(pc[nm]);
        const [m, cols] = [shapes[nm][0], n / shapes[nm][0]];
        const rows = m >= cols;
        const c = new Float32Array(idx.length * (rows ? cols : m));
        for (let j = 0; j < idx.length; j++)
          for (let k = 0; k < (rows ? cols : m); k++) c[rows ? j * cols + k : k * idx.length + j] = rows ? g[idx[j] * cols + k] : g[k * cols + idx[j]];
        oc.setCompactGrad(pc[nm], tensor(c, oc.compactShape(pc[nm]), { dtype: o.dtype, device: "cpu" }));
        og.setCompactGrad(pg[nm], tensor(c, og.compactShape(pg[nm]), { dtype: o.dtype, device: "cuda" }));
      }
    }
    oc.step();
    og.step();
    if (refreshing) {
      for (const nm of [...matrices, "cube"]) {
        const a = oc.stateOf(pc[nm])!, b = og.stateOf(pg[nm])!;
        expect(await bits(b.indices!)).toEqual(await bits(a.indices!));
        expect(await bits(b.rho!)).toEqual(await bits(a.rho!));
      }
    }
  }
  for (const nm of names) {
    const wc = await pc[nm].data.toFloat32Array(), wg = await pg[nm].data.toFloat32Array();
    const dc = Float64Array.from(wc, (x, i) => x - w0[nm][i]);
    const dg = Float64Array.from(wg, (x, i) => x - w0[nm][i]);
    expect(relErr(dg, dc)).toBeLessThan(tol(o.dtype));
    const a = oc.stateOf(pc[nm])!, b = og.stateOf(pg[nm])!;
    if (a.absmaxM) {  // 8-bit moments: codes equal except at ties, absmax close
      expect(b.expAvg.dtype).toBe("u8");
      expect(sameFraction(await bits(b.expAvg), await bits(a.expAvg))).toBeGreaterThanOrEqual(0.9999);
      expect(sameFraction(await bits(b.expAvgSq), await bits(a.expAvgSq))).toBeGreaterThanOrEqual(0.9999);
      expect(relErr(await b.absmaxM!.toFloat32Array(), await a.absmaxM.toFloat32Array())).toBeLessThan(1e-5);
      expect(relErr(await b.absmaxV!.toFloat32Array(), await a.absmaxV!.toFloat32Array())).toBeLessThan(1e-5);
    } else {
      expect(relErr(await b.expAvg.toFloat32Array(), await a.expAvg.toFloat32Array())).toBeLessThan(tol(o.dtype));
      expect(relErr(await b.expAvgSq.toFloat32Array(), await a.expAvgSq.toFloat32Array())).toBeLessThan(tol(o.dtype));
    }
    if (a.ages) expect(await bits(b.ages!)).toEqual(await bits(a.ages));
    if (a.indices) expect(await bits(b.indices!)).toEqual(await bits(a.indices));
  }
  expect(await og.skippedStepsPerGroup()).toEqual(await oc.skippedStepsPerGroup());
  expect(await og.completedStepsPerGroup()).toEqual(await oc.completedStepsPerGroup());
  expect(og.stateBytes() - og.workspaceBytes()).toBe(oc.stateBytes() - oc.workspaceBytes());
  oc.dispose();
  og.dispose();
  for (const p of [...Object.values(pc), ...Object.values(pg)]) p.dispose();
}

// The same cases with f32 moments and with 8-bit moments (stateBits 8: the codes are computed with
// every op rounded on both backends, so they agree except at ties).
for (const stateBits of [32, 8] as const) {
  const seed0 = stateBits === 8 ? 10 : 0;
  suite(`GrassAdamW, stateBits ${stateBits}, on CUDA against the CPU backend`, () => {
    for (const select of ["topk", "multinomial", "uniform"] as GrassSelectMode[]) {
      for (const keepState of [false, true]) {
        test(`${select}, keepState ${keepState}, f32: 9 steps, refresh every 3`, async () => {
          await run({ select, keepState, dtype: "f32", steps: 9, K: 3, seed: seed0 + select.length + (keepState ? 50 : 0), stateBits });
        });
      }
    }

    test("bf16 parameters (multinomial, keepState) and f16 parameters (topk)", async () => {
      await run({ select: "multinomial", keepState: true, dtype: "bf16", steps: 8, K: 3, seed: seed0 + 61, stateBits });
      await run({ select: "topk", keepState: false, dtype: "f16", steps: 8, K: 3, seed: seed0 + 62, stateBits });
    });

    test("duplicate lines: a dominant row and column drawn many times", async () => {
      await run({
        select: "multinomial", keepState: true, dtype: "f32", steps: 6, K: 2, seed: seed0 + 63, stateBits,
        grad: (name, n, step, rng) => {
          const g = rng.normals(n, 0.01);
          if (name === "quad") for (let k = 0; k < 64; k++) g[5 * 64 + k] = 2 + step;
          if (name === "cols") for (let k = 0; k < 48; k++) g[k * 300 + 7] = -3;
          return g;
        },
      });
    });

    test("a NaN skips the group on the device exactly as on the CPU (at a refresh and between)", async () => {
      await run({ select: "topk", keepState: true, dtype: "f32", steps: 8, K: 3, seed: seed0 + 64, stateBits, poison: { step: 3, name: "quad" } });
      await run({ select: "multinomial", keepState: false, dtype: "f32", steps: 8, K: 3, seed: seed0 + 65, stateBits, poison: { step: 4, name: "big" } });
    });

    test("compact gradients between refreshes", async () => {
      await run({ select: "uniform", keepState: true, dtype: "f32", steps: 8, K: 4, seed: seed0 + 76, stateBits, compactFrom: 1 });
    });

    test("a larger matrix: 4096 × 1024, r = 512, and its transpose, 4 steps with a keepState refresh", async () => {
      for (const shape of [[4096, 1024], [1024, 4096]]) {
        const n = shape[0] * shape[1];
        const rng = new Rng(shape[0] + stateBits);
        const w = rng.normals(n, 0.02);
        const pc = new Parameter(tensor(w, shape, { device: "cpu" })), pg = new Parameter(tensor(w, shape, { device: "cuda" }));
        const mk = (p: Parameter) =>
          new GrassAdamW([{ params: [p], rank: 512, updateProjGap: 2, select: "multinomial", keepState: true, stateBits }], { lr: 1e-3 });
        const oc = mk(pc), og = mk(pg);
        for (let s = 0; s < 4; s++) {
          const g = rng.normals(n);
          pc.grad.copyFrom(g); pg.grad.copyFrom(g);
          oc.step(); og.step();
        }
        const a = oc.stateOf(pc)!, b = og.stateOf(pg)!;
        expect(await bits(b.indices!)).toEqual(await bits(a.indices!));
        if (stateBits === 8) {
          expect(sameFraction(await bits(b.expAvg), await bits(a.expAvg))).toBeGreaterThanOrEqual(0.9999);
          expect(sameFraction(await bits(b.expAvgSq), await bits(a.expAvgSq))).toBeGreaterThanOrEqual(0.9999);
        }
        const dc = Float64Array.from(await pc.data.toFloat32Array(), (x, i) => x - w[i]);
        const dg = Float64Array.from(await pg.data.toFloat32Array(), (x, i) => x - w[i]);
        expect(relErr(dg, dc)).toBeLessThan(1e-5);
        oc.dispose(); og.dispose(); pc.dispose(); pg.dispose();
      }
    });
  });
}

suite("GrassAdamW on CUDA: the compact-gradient path equals the full path", () => {
  test("two matrices, 7 steps, multinomial with keepState", async () => {
    const rng = new Rng(66);
    const shapes = [[129, 32], [40, 120]];
    const mk = () => shapes.map((s, i) => new Parameter(tensor(new Rng(i).normals(s[0] * s[1], 0.2), s, { device: "cuda" })));
    const full = mk(), comp = mk();
    const spec = { rank: 9, updateProjGap: 3, select: "multinomial" as const, keepState: true };
    const A = new GrassAdamW([{ params: full, ...spec }], { lr: 0.01, seed: 2 });
    const B = new GrassAdamW([{ params: comp, ...spec }], { lr: 0.01, seed: 2 });
    for (let s = 0; s < 7; s++) {
      for (let i = 0; i < shapes.length; i++) {
        const [m, n] = shapes[i];
        const g = rng.normals(m * n);
        full[i].grad.copyFrom(g);
        if (B.needsFullGrad(comp[i])) { comp[i].grad.copyFrom(g); continue; }
        const rows = await B.selectedRows(comp[i]);
        const r = rows.length;
        const c = new Float32Array(r * (m >= n ? n : m));
        if (m >= n) for (let j = 0; j < r; j++) for (let k = 0; k < n; k++) c[j * n + k] = g[rows[j] * n + k];
        else for (let k = 0; k < m; k++) for (let j = 0; j < r; j++) c[k * r + j] = g[k * n + rows[j]];
        comp[i].grad.copyFrom(new Float32Array(m * n).fill(NaN));
        B.setCompactGrad(comp[i], tensor(c, B.compactShape(comp[i]), { device: "cuda" }), B.selectionEpoch(comp[i]));
      }
      A.step();
      B.step();
    }
    for (let i = 0; i < shapes.length; i++) expect(await bits(comp[i].data)).toEqual(await bits(full[i].data));
    expect(await B.skippedSteps()).toBe(0);
    // Refusals on CUDA: a compact gradient on another device.
    if (!B.needsFullGrad(comp[0])) expectCode(() => B.setCompactGrad(comp[0], zeros(B.compactShape(comp[0]), { device: "cpu" })), "E_DEVICE");
  });
});

suite("gatherRows / scatterRows on CUDA against the CPU", () => {
  test("11008 × 4096 f32, 512 and 2048 rows with rho; scatter with duplicates", async () => {
    const [m, n] = [11008, 4096];
    const rng = new Rng(81);
    const src = new Float32Array(m * n);
    for (let i = 0; i < src.length; i += 4099) src[i] = rng.normal();  // sparse values, cheap to draw
    for (let i = 0; i < m; i++) src[i * n + (i % n)] = i;
    const sc = tensor(src, [m, n], { device: "cpu" }), sg = tensor(src, [m, n], { device: "cuda" });
    for (const count of [512, 2048]) {
      const idx = Int32Array.from({ length: count }, () => Math.floor(rng.uniform() * m)).sort();
      const rho = Float32Array.from({ length: count }, () => 0.5 + rng.uniform());
      const oc = gatherRows(sc, idx, { scale: rho }), og = gatherRows(sg, idx, { scale: rho });
      expect(await bits(og)).toEqual(await bits(oc));
      const pc = gatherRows(sc, idx), pg = gatherRows(sg, idx);
      expect(await bits(pg)).toEqual(await bits(pc));
      const upd = tensor(rng.normals(count * n), [count, n], { device: "cpu" });
      const updG = upd.clone("cuda");
      scatterRows(sc, idx, upd, { alpha: -0.1, scale: rho });
      scatterRows(sg, idx, updG, { alpha: -0.1, scale: rho });
      expect(relErr(await sg.toFloat32Array(), await sc.toFloat32Array())).toBeLessThan(1e-7);
      for (const t of [oc, og, pc, pg, upd, updG]) t.dispose();
    }
    sc.dispose(); sg.dispose();
  });

  // The row kernels split a row into chunks (cuda/grass.cu kRowChunk elements, one block each) and
  // may overlap with the previous launch (programmatic dependent launch + speculative L2 prefetch):
  // partial last chunks, widths of one chunk ± 1, index tensors with out-of-range entries
  // (skipped), duplicate runs, and launches back to back on overlapping rows, all bit-exact.
  test("chunk edges, invalid indices, duplicates, back-to-back launches: bit-exact", async () => {
    const rng = new Rng(83);
    const cases: [number, number, DType][] = [[37, 4100, "f32"], [29, 2047, "f32"], [23, 2049, "bf16"], [19, 2052, "f16"], [40, 4096, "f32"]];
    for (const [m, n, dtype] of cases) {
      const x = rng.normals(m * n);
      const sc = tensor(x, [m, n], { dtype, device: "cpu" }), sg = tensor(x, [m, n], { dtype, device: "cuda" });
      const sets = [
        Int32Array.from([-1, 0, 3, 3, 3, 10, m - 1, m]),
        Int32Array.from([1, 3, 4, 4, 10, 11, 12, m + 7]),
        Int32Array.from([-5, -1, 2, 3, 9, 10, 10, m - 1]),
        Int32Array.from([0, 1, 2, 3, 4, 5, 6, 7]),
      ];
      // Indices and scales already on the device, so consecutive calls are kernel after kernel
      // (no copy between them) and the overlap is exercised.
      const rho = Float32Array.from({ length: 8 }, () => 0.5 + rng.uniform());
      const rhoG = tensor(rho, [8], { device: "cuda" });
      const idxOn = (s: Int32Array, device: "cpu" | "cuda") => tensor(s, [8], { dtype: "i32", device });
      const idxC = sets.map((s) => idxOn(s, "cpu")), idxG = sets.map((s) => idxOn(s, "cuda"));
      // Gathers back to back into one output: the last one wins; skipped rows keep what was there.
      const outC = tensor(rng.normals(8 * n), [8, n], { dtype, device: "cpu" });
      const outG = outC.clone("cuda");
      for (let k = 0; k < sets.length; k++) {
        gatherRows(sc, idxC[k], { scale: rho, out: outC });
        gatherRows(sg, idxG[k], { scale: rhoG, out: outG });
      }
      expect(await bits(outG)).toEqual(await bits(outC));
      // Scatters back to back on overlapping rows, then a gather of the result.
      const upd = sets.map(() => rng.normals(8 * n));
      const uc = upd.map((u) => tensor(u, [8, n], { dtype, device: "cpu" }));
      const ug = upd.map((u) => tensor(u, [8, n], { dtype, device: "cuda" }));
      for (let k = 0; k < sets.length; k++) {
        scatterRows(sc, idxC[k], uc[k], { alpha: -0.25, scale: rho });
        scatterRows(sg, idxG[k], ug[k], { alpha: -0.25, scale: rhoG });
      }
      const gc = gatherRows(sc, idxC[3]), gg = gatherRows(sg, idxG[3]);
      expect(await bits(gg)).toEqual(await bits(gc));
      expect(await bits(sg)).toEqual(await bits(sc));
      for (const t of [sc, sg, outC, outG, gc, gg, rhoG, ...idxC, ...idxG, ...uc, ...ug]) t.dispose();
    }
  });

  test("bf16 and odd widths (scalar paths)", async () => {
    const rng = new Rng(82);
    for (const [m, n, dtype] of [[301, 37, "bf16"], [64, 36, "f16"], [50, 7, "f32"]] as [number, number, DType][]) {
      const x = rng.normals(m * n);
      const sc = tensor(x, [m, n], { dtype, device: "cpu" }), sg = tensor(x, [m, n], { dtype, device: "cuda" });
      const idx = Int32Array.from([0, 1, 1, 5, 9, 9, 9, m - 1]);
      const rho = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(await bits(gatherRows(sg, idx, { scale: rho }))).toEqual(await bits(gatherRows(sc, idx, { scale: rho })));
      const u = rng.normals(8 * n);
      scatterRows(sc, idx, tensor(u, [8, n], { dtype, device: "cpu" }), { scale: rho });
      scatterRows(sg, idx, tensor(u, [8, n], { dtype, device: "cuda" }), { scale: rho });
      expect(relErr(await sg.toFloat32Array(), await sc.toFloat32Array())).toBeLessThan(dtype === "f32" ? 1e-6 : 1e-2);
    }
  });
});
