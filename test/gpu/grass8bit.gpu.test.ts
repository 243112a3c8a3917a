// GrassAdamW with 8-bit moments (stateBits 8) on CUDA against the CPU backend on the same inputs:
// the same selections; codes equal except at ties (>= 99.99%; the moments are computed with every
// op rounded on both backends, so in practice all of them); absmax and parameters close. Skipped
// where no CUDA device exists.
import { GrassAdamW, GrassSelectMode, devices, Parameter, tensor, DType, Tensor } from "../../lib";
import { relErr, Rng } from "../reference";

const hasCuda = devices().length > 1;
const suite = hasCuda ? describe : describe.skip;

async function raw(t: Tensor): Promise<number[]> { return Array.from(await t.toTypedArray()); }
const tol = (d: DType) => (d === "f32" ? 1e-5 : 1e-2);

function sameFraction(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return a.length ? same / a.length : 1;
}

interface RunOpts { select: GrassSelectMode; keepState: boolean; dtype: DType; steps: number; K: number; seed: number;
                    grad?: (name: string, n: number, step: number, rng: Rng) => Float32Array;
                    poison?: { step: number; name: string }; compactFrom?: number }

/** Rows (quad-friendly and odd), columns, a 3-D tensor, a larger matrix (26 blocks), a dense
 *  tensor (f32 moments) in the 8-bit group; identical gradients on both backends. compactFrom:
 *  from that step on, non-refresh steps get compact gradients (the selected lines) instead. */
async function run(o: RunOpts) {
  const rng = new Rng(o.seed);
  const shapes: Record<string, number[]> = { quad: [257, 64], odd: [33, 19], cols: [48, 300], cube: [5, 6, 7], big: [4097, 65], dense: [1000] };
  const names = Object.keys(shapes);
  const mk = (device: string) => Object.fromEntries(names.map((nm, i) => {
    const n = shapes[nm].reduce((a, b) => a * b, 1);
    return [nm, new Parameter(tensor(new Rng(200 + i).normals(n, 0.2), shapes[nm], { dtype: o.dtype, device }), { name: nm })];
  })) as Record<string, Parameter>;
  const pc = mk("cpu"), pg = mk("cuda");
  const spec = (p: Record<string, Parameter>) => [
    { params: names.map((nm) => p[nm]), rank: 13, updateProjGap: o.K, select: o.select, keepState: o.keepState, scale: 0.5, stateBits: 8 }];
  const oc = new GrassAdamW(spec(pc), { lr: 0.02, weightDecay: 0.05, seed: o.seed });
  const og = new GrassAdamW(spec(pg), { lr: 0.02, weightDecay: 0.05, seed: o.seed });
  const w0 = Object.fromEntries(await Promise.all(names.map(async (nm) => [nm, await pc[nm].data.toFloat32Array()] as const)));
  for (let s = 0; s < o.steps; s++) {
    const compact = o.compactFrom !== undefined && s >= o.compactFrom && !oc.needsFullGrad(pc.quad);
    for (const nm of names) {
      const n = pc[nm].numel;
      const g = o.grad ? o.grad(nm, n, s, rng) : rng.normals(n, 1 + 0.1 * s);
      if (o.poison && o.poison.step === s && o.poison.name === nm) g[n >> 1] = NaN;
      pc[nm].grad.copyFrom(g);
      pg[nm].grad.copyFrom(g);
      if (compact && nm !== "dense" && nm !== "cube") {
        // The compact gradient: G's selected rows / columns (gathered on the host from the CPU's selection).
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
  }
  for (const nm of names) {
    const wc = await pc[nm].data.toFloat32Array(), wg = await pg[nm].data.toFloat32Array();
    const dc = Float64Array.from(wc, (x, i) => x - w0[nm][i]);
    const dg = Float64Array.from(wg, (x, i) => x - w0[nm][i]);
    expect(relErr(dg, dc)).toBeLessThan(tol(o.dtype));
    const a = oc.stateOf(pc[nm])!, b = og.stateOf(pg[nm])!;
    if (a.indices) expect(await raw(b.indices!)).toEqual(await raw(a.indices));
    if (a.ages) expect(await raw(b.ages!)).toEqual(await raw(a.ages));
    if (!a.absmaxM) {
      expect(relErr(await b.expAvg.toFloat32Array(), await a.expAvg.toFloat32Array())).toBeLessThan(tol(o.dtype));
      continue;
    }
    expect(b.expAvg.dtype).toBe("u8");
    expect(sameFraction(await raw(b.expAvg), await raw(a.expAvg))).toBeGreaterThanOrEqual(0.9999);
    expect(sameFraction(await raw(b.expAvgSq), await raw(a.expAvgSq))).toBeGreaterThanOrEqual(0.9999);
    expect(relErr(await b.absmaxM!.toFloat32Array(), await a.absmaxM.toFloat32Array())).toBeLessThan(1e-5);
    expect(relErr(await b.absmaxV!.toFloat32Array(), await a.absmaxV!.toFloat32Array())).toBeLessThan(1e-5);
  }
  expect(await og.skippedStepsPerGroup()).toEqual(await oc.skippedStepsPerGroup());
  expect(await og.completedStepsPerGroup()).toEqual(await oc.completedStepsPerGroup());
  expect(og.stateBytes() - og.workspaceBytes()).toBe(oc.stateBytes() - oc.workspaceBytes());
  oc.dispose();
  og.dispose();
  for (const p of [...Object.values(pc), ...Object.values(pg)]) p.dispose();
}

suite("GrassAdamW stateBits 8 on CUDA against the CPU backend", () => {
  for (const select of ["topk", "multinomial", "uniform"] as GrassSelectMode[]) {
    for (const keepState of [false, true]) {
      test(`${select}, keepState ${keepState}, f32: 8 steps, refresh every 3`, async () => {
        await run({ select, keepState, dtype: "f32", steps: 8, K: 3, seed: select.length + (keepState ? 50 : 0) });
      });
    }
  }

  test("bf16 parameters (multinomial, keepState) and f16 parameters (topk)", async () => {
    await run({ select: "multinomial", keepState: true, dtype: "bf16", steps: 7, K: 3, seed: 71 });
    await run({ select: "topk", keepState: false, dtype: "f16", steps: 7, K: 3, seed: 72 });
  });

  test("duplicate lines: a dominant row and column drawn many times", async () => {
    await run({
      select: "multinomial", keepState: true, dtype: "f32", steps: 6, K: 2, seed: 73,
      grad: (name, n, step, rng) => {
        const g = rng.normals(n, 0.001);
        if (name === "quad") for (let k = 0; k < 64; k++) g[5 * 64 + k] = 2 + step;
        if (name === "cols") for (let k = 0; k < 48; k++) g[k * 300 + 7] = -3;
        return g;
      },
    });
  });

  test("a NaN skips the group on the device exactly as on the CPU (at a refresh and between)", async () => {
    await run({ select: "topk", keepState: true, dtype: "f32", steps: 8, K: 3, seed: 74, poison: { step: 3, name: "quad" } });
    await run({ select: "multinomial", keepState: true, dtype: "f32", steps: 8, K: 3, seed: 75, poison: { step: 4, name: "big" } });
  });

  test("compact gradients between refreshes", async () => {
    await run({ select: "uniform", keepState: true, dtype: "f32", steps: 8, K: 4, seed: 76, compactFrom: 1 });
  });

  test("a larger matrix: 4096 × 1024, r = 512, 8-bit, 4 steps with a keepState refresh", async () => {
    const rng = new Rng(77);
    const shape = [4096, 1024];
    const w = rng.normals(4096 * 1024, 0.02);
    const ps = ["cpu", "cuda"].map((d) => new Parameter(tensor(w, shape, { device: d })));
    const opts = ps.map((p) => new GrassAdamW([{ params: [p], rank: 512, updateProjGap: 2, keepState: true, stateBits: 8 }], { lr: 1e-3 }));
    for (let s = 0; s < 4; s++) {
      const g = rng.normals(4096 * 1024, 0.01);
      for (const p of ps) p.grad.copyFrom(g);
      for (const o of opts) o.step();
    }
    const [a, b] = opts.map((o, i) => o.stateOf(ps[i])!);
    expect(sameFraction(await raw(b.expAvg), await raw(a.expAvg))).toBeGreaterThanOrEqual(0.9999);
    expect(sameFraction(await raw(b.expAvgSq), await raw(a.expAvgSq))).toBeGreaterThanOrEqual(0.9999);
    const [wc, wg] = await Promise.all(ps.map((p) => p.data.toFloat32Array()));
    expect(relErr(Float64Array.from(wg, (x, i) => x - w[i]), Float64Array.from(wc, (x, i) => x - w[i]))).toBeLessThan(1e-5);
    for (const o of opts) o.dispose();
    for (const p of ps) p.dispose();
  });
});
