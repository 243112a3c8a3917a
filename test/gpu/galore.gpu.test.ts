// GaLore on CUDA against the CPU backend on the same inputs, with cuBLAS and with the built-in
// kernels forced. Skipped where no CUDA device exists.
import { devices, GaLoreAdamW, gemm, Parameter, ProjType, setBuiltinLinalg, linalgPaths, tensor, Tensor, DType } from "../../lib";
import { relErr, Rng } from "../reference";
import { geometricGradient, separatedGradient } from "../galore_reference";
import { checkLabel, expectNonFiniteSkip, NONFINITE_CASES, NONFINITE_VALUES } from "../galore_nonfinite";
import { native } from "../../lib/native";

const hasCuda = devices().length > 1;
const suite = hasCuda ? describe : describe.skip;

async function f32(t: Tensor): Promise<Float32Array> { return t.toFloat32Array(); }

/** Each tensor's update on the device (pg) against the CPU's (pc), within the nominal tolerance of
 *  the precision or 6x the CPU's own sensitivity to the device's rounding (pp: the CPU on gradients
 *  perturbed at that level), whichever is larger. */
async function expectUpdatesMatch(label: string, precision: "f32" | "tf32", w0: Float32Array[], pc: Parameter[],
                                  pg: Parameter[], pp: Parameter[]): Promise<void> {
  const nominal = precision === "f32" ? 1e-5 : 3e-3;
  for (let k = 0; k < w0.length; k++) {
    const uc = (await f32(pc[k].data)).map((x, i) => x - w0[k][i]);
    const ug = (await f32(pg[k].data)).map((x, i) => x - w0[k][i]);
    const up = (await f32(pp[k].data)).map((x, i) => x - w0[k][i]);
    const tol = Math.max(nominal, 6 * relErr(up, uc));
    if (relErr(ug, uc) >= tol) console.log(`${label} w${k}: device ${relErr(ug, uc)}, sensitivity ${relErr(up, uc)}`);
    expect(relErr(ug, uc)).toBeLessThan(tol);
  }
}

/** ||P1 P1^T - P2 P2^T||_F / ||P2 P2^T||_F for projectors with r orthonormal vectors (len each). */
function subspaceErr(p1: Float32Array, p2: Float32Array, len: number, r: number, left: boolean): number {
  const at = (p: Float32Array, i: number, j: number) => (left ? p[i * r + j] : p[j * len + i]);
  // ||A||^2 of P P^T = r; ||P1P1^T - P2P2^T||^2 = 2r - 2||P1^T P2||^2.
  let cross = 0;
  for (let a = 0; a < r; a++) for (let b = 0; b < r; b++) {
    let d = 0;
    for (let i = 0; i < len; i++) d += at(p1, i, a) * at(p2, i, b);
    cross += d * d;
  }
  return Math.sqrt(Math.max(0, 2 * r - 2 * cross) / r);
}

for (const builtin of [false, true]) {
  suite(`GaLore CUDA vs CPU (${builtin ? "built-in kernels forced" : "cuBLAS when present"})`, () => {
    beforeAll(() => setBuiltinLinalg(builtin));
    afterAll(() => setBuiltinLinalg(false));

    test("the path in use is reported", () => {
      const l = linalgPaths();
      expect(l.forceBuiltin).toBe(builtin);
      if (builtin) expect(l.blas).toMatch(/built-in/);
    });

    test.each([[1, 1, 1], [67, 130, 33], [300, 129, 517], [1024, 128, 4096]])("gemm %ix%ix%i, transposes, tf32 and f32", async (M, N, K) => {
      const rng = new Rng(M + N + K);
      for (const precision of ["f32", "tf32"] as const) for (const transA of [false, true]) for (const transB of [false, true]) {
        const a = rng.normals(M * K), b = rng.normals(K * N), c = rng.normals(M * N);
        const mk = (dev: string) => [tensor(a, transA ? [K, M] : [M, K], { device: dev }), tensor(b, transB ? [N, K] : [K, N], { device: dev }),
                                     tensor(c, [M, N], { device: dev })];
        const [ac, bc, cc] = mk("cpu"), [ag, bg, cg] = mk("cuda");
        gemm(ac, bc, cc, { transA, transB, alpha: 0.5, beta: -1, precision });
        gemm(ag, bg, cg, { transA, transB, alpha: 0.5, beta: -1, precision });
        const tol = precision === "f32" ? 1e-5 : 3e-3;
        expect(relErr(await f32(cg), await f32(cc))).toBeLessThan(tol);
        for (const t of [ac, bc, cc, ag, bg, cg]) t.dispose();
      }
    });

    for (const projType of ["std", "reverse_std", "left", "right", "full"] as ProjType[]) {
      for (const precision of ["f32", "tf32", "bf16"] as const) {
        for (const dtype of ["f32", "bf16"] as DType[]) {
          test(`${projType}, ${precision}, ${dtype} params: 12 steps, refresh every 4, a NaN at a refresh`, async () => {
            const rng = new Rng(projType.length * 13 + (precision === "f32" ? 1 : precision === "tf32" ? 2 : 3) + dtype.length);
            const shapes = [[96, 64], [70, 130], [8, 5, 13]];
            const mk = (dev: string) => shapes.map((s, i) => new Parameter(tensor(w0[i], s, { device: dev, dtype }), { name: `w${i}` }));
            const w0 = shapes.map((s) => rng.normals(s.reduce((a, b) => a * b), 0.02));
            const pc = mk("cpu"), pg = mk("cuda");
            const bc = new Parameter(tensor(rng.normals(33), [33], { device: "cpu", dtype }));
            const bg = new Parameter(tensor(await bc.data.toFloat32Array(), [33], { device: "cuda", dtype }));
            // full: at a refresh R = A^T G B^T is diagonal in exact arithmetic; its off-diagonal
            // elements are rounding noise that N = m/(sqrt(v)+eps) blows up to O(1) with eps 1e-6
            // (the CPU's own update moves by ~1e-3 when G moves by one ulp). eps 1e-2 bounds that, as
            // in test/galore.test.ts.
            const opts = { lr: 0.01, weightDecay: 0.01, precision, eps: projType === "full" ? 1e-2 : 1e-6 };
            const spec = (ps: Parameter[], b: Parameter) => [{ params: ps, rank: 5, updateProjGap: 4, projType }, { params: [b] }];
            const oc = new GaLoreAdamW(spec(pc, bc), opts), og = new GaLoreAdamW(spec(pg, bg), opts);
            // A second CPU run on gradients perturbed at the device's rounding level (one f32 ulp;
            // TF32's 2^-11 relative): how far rounding alone moves these 12 Adam steps.
            const pp = mk("cpu"), bp = new Parameter(tensor(await bc.data.toFloat32Array(), [33], { device: "cpu", dtype }));
            const op = new GaLoreAdamW(spec(pp, bp), opts);
            const rel = precision === "f32" ? 2 ** -23 : 2 ** -11, prng = new Rng(4242);
            for (let s = 0; s < 12; s++) {
              for (let k = 0; k < shapes.length; k++) {
                const g = geometricGradient(rng, shapes[k][0], pc[k].numel / shapes[k][0], 5);
                if (s === 8 && k === 1) g[7] = NaN;  // the group skips this refresh step whole
                pc[k].grad.copyFrom(g); pg[k].grad.copyFrom(g);
                const u = prng.normals(g.length);
                pp[k].grad.copyFrom(g.map((x, i) => x * (1 + rel * u[i])));
              }
              const gb = rng.normals(33);
              bc.grad.copyFrom(gb); bg.grad.copyFrom(gb); bp.grad.copyFrom(gb);
              oc.step(); og.step(); op.step();
            }
            // bf16 projections: the GEMMs are checked to 1e-2 in gemm.gpu.test.ts; here an element of R
            // within bf16 rounding of 0 may take the other sign (Adam's first step maps R to
            // +-3.16 whatever its size), so the bound only catches gross errors (a wrong layout: ~1).
            // The built-in path runs TF32 on tensor cores like cuBLAS.
            const nominal = precision === "bf16" ? 0.1 : dtype === "bf16" ? 1e-2 : precision === "f32" ? 1e-5 : 3e-3;
            for (let k = 0; k < shapes.length; k++) {
              const base = Float32Array.from(await f32(tensor(w0[k], [w0[k].length], { device: "cpu", dtype })));
              const uc = (await f32(pc[k].data)).map((x, i) => x - base[i]);
              const ug = (await f32(pg[k].data)).map((x, i) => x - base[i]);
              const up = (await f32(pp[k].data)).map((x, i) => x - base[i]);
              // The device rounds in several places (G, P, N, the GEMM sums) where the perturbed run
              // rounds once: a few times the measured sensitivity, never less than the nominal bound.
              // (full, f32: 5.99x to 6.01x here with refresh variants whose projectors all lie within
              // 4e-8 of the CPU's, bench/results/NVIDIA-H200-2026-11-25-13/: 8x leaves that margin.)
              const tol = Math.max(nominal, 8 * relErr(up, uc));
              const sc = oc.stateOf(pc[k])!, sg = og.stateOf(pg[k])!;
              const pe = relErr(await f32(sg.proj!), await f32(sc.proj!));
              if (relErr(ug, uc) >= tol || pe >= 1e-5)
                console.log(`${projType} ${precision} ${dtype} w${k}: device ${relErr(ug, uc)}, sensitivity ${relErr(up, uc)}, projector ${pe}`);
              expect(relErr(ug, uc)).toBeLessThan(tol);
              expect(pe).toBeLessThan(1e-5);
            }
            expect(await og.skippedStepsPerGroup()).toEqual(await oc.skippedStepsPerGroup());
            expect(await og.completedStepsPerGroup()).toEqual([11, 12]);
            expect(og.stateBytes()).toBe(oc.stateBytes());
            oc.dispose(); og.dispose(); op.dispose();
          });
        }
      }
    }

    // Same-shaped tensors: with cuBLAS their projections run as one batched product, either all at
    // once (rank 2: every R fits in one gradient, projected before the group's check) or partly
    // (rank 8: 13 R of 512 floats against a largest gradient of 2560 less the R scratch and sT,
    // which takes the project-back's B transposed, 512 each: w0 - w2's R held for the check, the
    // others' G scanned, then projected in chunks after w0 - w2 step).
    for (const rank of [2, 8]) {
      for (const precision of ["f32", "tf32"] as const) {
        test(`same-shaped tensors, rank ${rank}, ${precision}: 10 steps, refresh every 4, a NaN off a refresh`, async () => {
          const rng = new Rng(rank * 10 + precision.length);
          const shapes = [...Array(7).fill([64, 40]), ...Array(5).fill([40, 64]), [10, 4, 16]] as number[][];
          const w0 = shapes.map((sh) => rng.normals(sh.reduce((a, b) => a * b), 0.02));
          const mk = (dev: string) => shapes.map((sh, i) => new Parameter(tensor(w0[i], sh, { device: dev }), { name: `w${i}` }));
          const pc = mk("cpu"), pg = mk("cuda"), pp = mk("cpu");
          const opts = { lr: 0.01, weightDecay: 0.01, precision };
          const spec = (ps: Parameter[]) => [{ params: ps, rank, updateProjGap: 4 }];
          const oc = new GaLoreAdamW(spec(pc), opts), og = new GaLoreAdamW(spec(pg), opts), op = new GaLoreAdamW(spec(pp), opts);
          // pp: the CPU on gradients perturbed at the device's rounding level (see above).
          const rel = precision === "f32" ? 2 ** -23 : 2 ** -11, prng = new Rng(77);
          const adamMany = jest.spyOn(native(), "galoreAdamMany");
          try {
            for (let s = 0; s < 10; s++) {
              for (let k = 0; k < shapes.length; k++) {
                const g = geometricGradient(rng, shapes[k][0], pc[k].numel / shapes[k][0], rank);
                if (s === 6 && k === 9) g[3] = NaN;  // the group skips this (non-refresh) step whole
                pc[k].grad.copyFrom(g); pg[k].grad.copyFrom(g);
                const u = prng.normals(g.length);
                pp[k].grad.copyFrom(g.map((x, i) => x * (1 + rel * u[i])));
              }
              oc.step(); og.step(); op.step();
            }
            // On the 7 steps off a refresh, Adam on R in one launch per call: rank 2, all 13 held;
            // rank 8, w0 - w2 held, then the chunks [w3 - w5], [w6], [w7 - w9], [w10, w11], [w12].
            const calls = adamMany.mock.calls.map((c) => c[0].length);
            expect(calls).toEqual(Array(7).fill(rank === 2 ? [13] : [3, 3, 1, 3, 2, 1]).flat());
          } finally {
            adamMany.mockRestore();
          }
          await expectUpdatesMatch(`same shapes r${rank} ${precision}`, precision, w0, pc, pg, pp);
          expect(await og.skippedStepsPerGroup()).toEqual([1]);
          expect(await og.completedStepsPerGroup()).toEqual([9]);
          oc.dispose(); og.dispose(); op.dispose();
        });
      }
    }

    // More tensors than one launch of the batched non-finite scan, of Adam on R and of the grouped
    // project-back takes (32 each): 40 small tensors and one large one, whose gradient holds every
    // R, so that each step projects first (asserted through the calls the optimizer makes). Right
    // and left sides; 50 x 30 (30 columns: not the streaming kernel's) between them, so grouped
    // launches are cut around it. A NaN in the 38th off a refresh. Against the CPU, the tolerance
    // as in the tests above (TF32: 6x the CPU's own sensitivity to the device's rounding).
    for (const precision of ["f32", "tf32"] as const) {
      test(`41 tensors, rank 8, ${precision}: batched scan, Adam on R and grouped project-back across launches, a NaN in the 38th`, async () => {
        const rng = new Rng(4040 + precision.length);
        const shapes = [...Array.from({ length: 40 }, (_, i) => [[72, 40], [40, 100], [50, 30]][i % 3]), [1024, 512]];
        const w0 = shapes.map((sh) => rng.normals(sh[0] * sh[1], 0.02));
        const mk = (dev: string) => shapes.map((sh, i) => new Parameter(tensor(w0[i], sh, { device: dev }), { name: `w${i}` }));
        const pc = mk("cpu"), pg = mk("cuda"), pp = mk("cpu");
        const spec = (ps: Parameter[]) => [{ params: ps, rank: 8, updateProjGap: 100 }];
        const opts = { lr: 0.01, weightDecay: 0.01, precision };
        const oc = new GaLoreAdamW(spec(pc), opts), og = new GaLoreAdamW(spec(pg), opts), op = new GaLoreAdamW(spec(pp), opts);
        const nat = native();
        const adamMany = jest.spyOn(nat, "galoreAdamMany"), backMany = jest.spyOn(nat, "galoreBackMany");
        const rel = precision === "f32" ? 2 ** -23 : 2 ** -11, prng = new Rng(78);
        try {
          for (let s = 0; s < 5; s++) {
            for (let k = 0; k < shapes.length; k++) {
              const g = geometricGradient(rng, shapes[k][0], shapes[k][1], 8);
              if (s === 3 && k === 37) g[5] = NaN;  // the group skips this step whole
              pc[k].grad.copyFrom(g); pg[k].grad.copyFrom(g);
              const u = prng.normals(g.length);
              pp[k].grad.copyFrom(g.map((x, i) => x * (1 + rel * u[i])));
            }
            oc.step(); og.step(); op.step();
          }
          // Steps 1 - 4 (step 0 refreshes): every tensor through Adam on R, every one-sided f32 one
          // through the project-back call.
          expect(adamMany.mock.calls.map((c) => c[0].length)).toEqual([41, 41, 41, 41]);
          expect(backMany.mock.calls.map((c) => c[0].length)).toEqual([41, 41, 41, 41]);
        } finally {
          adamMany.mockRestore(); backMany.mockRestore();
        }
        await expectUpdatesMatch(`41 tensors ${precision}`, precision, w0, pc, pg, pp);
        expect(await og.skippedStepsPerGroup()).toEqual([1]);
        expect(await og.completedStepsPerGroup()).toEqual([4]);
        oc.dispose(); og.dispose(); op.dispose();
      });
    }

    test("galoreBackMany refuses a bad entry (E_ARG / E_SHAPE) and a CPU flag (E_DEVICE), W unchanged", async () => {
      const nat = native();
      const rng = new Rng(5);
      const W = tensor(rng.normals(72 * 40), [72, 40], { device: "cuda" }), P = tensor(rng.normals(8 * 40), [8, 40], { device: "cuda" });
      const N = tensor(rng.normals(72 * 8), [72, 8], { device: "cuda" }), shortN = tensor(rng.normals(70 * 8), [70, 8], { device: "cuda" });
      const flag = tensor(new Int32Array(1), [1], { device: "cuda", dtype: "i32" });
      const scalars = tensor(new Float32Array([-0.5, 1]), [2], { device: "cuda" });
      const cpuFlag = tensor(new Int32Array(1), [1], { device: "cpu", dtype: "i32" });
      const w = await f32(W);
      const ok = [W.handle, P.handle, N.handle, 0, 72, 40, 8] as Parameters<typeof nat.galoreBackMany>[0][number];
      try {
        for (const [entries, f, code] of [
          [[ok, [W.handle, P.handle, shortN.handle, 0, 72, 40, 8]], flag, "E_SHAPE"],
          [[ok, [W.handle, P.handle, N.handle, 0, 72, 40, 41]], flag, "E_ARG"],
          [[ok, [W.handle, P.handle, N.handle, 2, 72, 40, 8]], flag, "E_ARG"],
          [[ok, [W.handle, P.handle, N.handle, 0, 72, 40]], flag, "E_ARG"],
          [[ok], cpuFlag, "E_DEVICE"],
        ] as const) {
          let caught: unknown;
          try {
            nat.galoreBackMany(entries as never, f.handle, scalars.handle, 0);
          } catch (e) {
            caught = e;
          }
          expect((caught as { code?: string })?.code).toBe(code);
          expect(Array.from(await f32(W))).toEqual(Array.from(w));
        }
        nat.galoreBackMany([ok], flag.handle, scalars.handle, 0);
        expect(relErr(await f32(W), w)).toBeGreaterThan(0.1);  // the valid call does write W
      } finally {
        for (const t of [W, P, N, shortN, flag, scalars, cpuFlag]) t.dispose();
      }
    });

    // With sT, a project-back of rank <= 128 takes B transposed through it (cuBLAS's K-major
    // kernels), as many Bs per launch as sT holds: 1600 floats, so the first three (320 + 800 + 350)
    // in one launch and the fourth (496) in a second. Without, B as given (the streaming kernel or
    // cuBLAS). Both against float64, right and left, odd sizes and ranks, strict f32 and TF32; a
    // too small sT is E_SHAPE, W unchanged.
    test("galoreBackMany with and without sT (B transposed) against float64; a short sT refused", async () => {
      const nat = native();
      const rng = new Rng(77);
      const cases: [number, number, number, number][] = [[72, 40, 8, 0], [40, 100, 8, 1], [33, 70, 5, 1], [129, 31, 16, 0]];
      const alpha = -0.5, beta = 0.999;
      const scalars = tensor(new Float32Array([alpha, beta]), [2], { device: "cuda" });
      const flag = tensor(new Int32Array(1), [1], { device: "cuda", dtype: "i32" });
      const sT = tensor(new Float32Array(16 * 100), [16 * 100], { device: "cuda" });
      const shortT = tensor(new Float32Array(8 * 100 - 1), [8 * 100 - 1], { device: "cuda" });
      const made: Tensor[] = [scalars, flag, sT, shortT];
      try {
        for (const [mode, tol] of [[1, 1e-5], [0, 3e-3]] as const) {
          for (const withT of [false, true]) {
            const entries: Parameters<typeof nat.galoreBackMany>[0] = [];
            const expected: { W: Tensor; ref: Float64Array; w0: Float32Array }[] = [];
            for (const [m, n, r, side] of cases) {
              // Right: W m x n <- beta W + alpha N (m x r) P (r x n); left: P (m x r) N (r x n).
              const a = rng.normals(m * r), b = rng.normals(r * n), w0 = rng.normals(m * n);
              const ref = new Float64Array(m * n);
              for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
                let acc = 0;
                for (let k = 0; k < r; k++) acc += a[i * r + k] * b[k * n + j];
                ref[i * n + j] = beta * w0[i * n + j] + alpha * acc;
              }
              const W = tensor(w0, [m, n], { device: "cuda" });
              const A = tensor(a, [m, r], { device: "cuda" }), B = tensor(b, [r, n], { device: "cuda" });
              made.push(W, A, B);
              entries.push(side === 0 ? [W.handle, B.handle, A.handle, 0, m, n, r] : [W.handle, A.handle, B.handle, 1, m, n, r]);
              expected.push({ W, ref, w0 });
            }
            nat.galoreBackMany(entries, flag.handle, scalars.handle, mode, withT ? sT.handle : null);
            for (const { W, ref, w0 } of expected) {
              const got = await f32(W);
              const du = Float64Array.from(got, (x, i) => x - w0[i]), dr = Float64Array.from(ref, (x, i) => x - w0[i]);
              expect(relErr(du, dr)).toBeLessThan(tol);
            }
          }
        }
        const [m, n, r] = [40, 100, 8];
        const W = tensor(rng.normals(m * n), [m, n], { device: "cuda" }), P = tensor(rng.normals(m * r), [m, r], { device: "cuda" });
        const N = tensor(rng.normals(r * n), [r, n], { device: "cuda" });
        made.push(W, P, N);
        const w = await f32(W);
        let caught: unknown;
        try {
          nat.galoreBackMany([[W.handle, P.handle, N.handle, 1, m, n, r]], flag.handle, scalars.handle, 0, shortT.handle);
        } catch (e) {
          caught = e;
        }
        expect((caught as { code?: string })?.code).toBe("E_SHAPE");
        expect(Array.from(await f32(W))).toEqual(Array.from(w));
      } finally {
        for (const t of made) t.dispose();
      }
    });

    test("galoreProjectMany of left-side tensors with sP (P transposed) in batches, short or overlapping sP, against float64", async () => {
      const nat = native();
      const rng = new Rng(78);
      // Left: R (r x n) = P^T G, P m x r, G m x n. Three of one shape (batches of two in the
      // two-P sP), two of another, and one right-side tensor between them.
      const shapes: [number, number, number, number][] = [[40, 100, 8, 1], [33, 70, 5, 1], [40, 100, 8, 1], [72, 40, 8, 0],
                                                          [40, 100, 8, 1], [33, 70, 5, 1]];
      const made: Tensor[] = [];
      try {
        const inputs = shapes.map(([m, n, r, side]) => {
          const g = rng.normals(m * n), p = rng.normals(side === 1 ? m * r : r * n);
          const ref = new Float64Array(side === 1 ? r * n : m * r);
          if (side === 1) {
            for (let a = 0; a < r; a++) for (let j = 0; j < n; j++) {
              let acc = 0;
              for (let i = 0; i < m; i++) acc += p[i * r + a] * g[i * n + j];
              ref[a * n + j] = acc;
            }
          } else {
            for (let i = 0; i < m; i++) for (let a = 0; a < r; a++) {
              let acc = 0;
              for (let j = 0; j < n; j++) acc += g[i * n + j] * p[a * n + j];
              ref[i * r + a] = acc;
            }
          }
          const G = tensor(g, [m, n], { device: "cuda" }), P = tensor(p, [p.length], { device: "cuda" });
          made.push(G, P);
          return { G, P, ref, m, n, r, side };
        });
        const twoP = tensor(new Float32Array(2 * 8 * 40), [2 * 8 * 40], { device: "cuda" });
        const shortP = tensor(new Float32Array(5 * 33 - 1), [5 * 33 - 1], { device: "cuda" });
        made.push(twoP, shortP);
        for (const [mode, tol] of [[0, 3e-3], [1, 1e-5]] as const) {
          for (const sP of ["none", "two", "short", "overlapping"] as const) {
            const outs = inputs.map(({ ref }) => tensor(new Float32Array(ref.length).fill(Number.NaN), [ref.length], { device: "cuda" }));
            made.push(...outs);
            const scratch = sP === "two" ? twoP.handle : sP === "short" ? shortP.handle : sP === "overlapping" ? outs[2].handle : null;
            nat.galoreProjectMany(inputs.map(({ G, P, m, n, r, side }, k) => [G.handle, 0, P.handle, null, side, m, n, r, outs[k].handle]),
                                  null, null, mode, scratch);
            for (let k = 0; k < inputs.length; k++) {
              const got = Float64Array.from(await f32(outs[k]));
              const err = relErr(got, inputs[k].ref);
              if (!(err < tol)) console.log(`mode ${mode} sP ${sP} tensor ${k}: ${err}`);
              expect(err).toBeLessThan(tol);
            }
          }
        }
      } finally {
        for (const t of made) t.dispose();
      }
    });

    // The refresh alone: one step with gap 1 refreshes every step; P after the first step and after
    // a later one (the sign rule against the previous P) against the CPU's exact solver.
    for (const projector of ["svd", "warm"] as const) {
      test.each([[600, 300, 32], [300, 600, 32], [257, 257, 7], [129, 64, 64]])(`refresh ${projector} %ix%i r=%i, separated spectrum: projector within 1e-5 of the exact one`, async (rows, cols, r) => {
        const rng = new Rng(rows * 7 + cols + r);
        for (const projType of ["std", "reverse_std"] as ProjType[]) {
          const w = tensor(rng.normals(rows * cols, 0.02), [rows, cols], { device: "cpu" });
          const pc = new Parameter(w), pg = new Parameter(tensor(await w.toFloat32Array(), [rows, cols], { device: "cuda" }));
          const spec = (p: Parameter) => [{ params: [p], rank: r, updateProjGap: 1, projType, projector }];
          const oc = new GaLoreAdamW(spec(pc), { lr: 1e-3, precision: "f32" }), og = new GaLoreAdamW(spec(pg), { lr: 1e-3, precision: "f32" });
          const g0 = separatedGradient(rng, rows, cols, r + 2, Math.sqrt(cols));
          for (let s = 0; s < 3; s++) {
            // Slowly moving gradients: what the warm projector is for.
            const g = g0.map((x, i) => x + (s === 0 ? 0 : 3e-4 * Math.sin(i * 0.37 + s)));
            pc.grad.copyFrom(g); pg.grad.copyFrom(g);
            oc.step(); og.step();
            const sc = oc.stateOf(pc)!, sg = og.stateOf(pg)!;
            const tol = projector === "svd" ? 1e-5 : 1e-4;
            expect(relErr(await f32(sg.proj!), await f32(sc.proj!))).toBeLessThan(tol);
          }
          oc.dispose(); og.dispose(); pc.data.dispose(); pg.data.dispose();
        }
      });
    }

    test("refresh of a random (unseparated) gradient: the same subspace, and the update within 1e-3", async () => {
      const rng = new Rng(99);
      const [rows, cols, r] = [400, 160, 8];
      for (const projType of ["std", "left"] as ProjType[]) {
        const w = rng.normals(rows * cols, 0.02);
        const pc = new Parameter(tensor(w, [rows, cols], { device: "cpu" })), pg = new Parameter(tensor(w, [rows, cols], { device: "cuda" }));
        const spec = (p: Parameter) => [{ params: [p], rank: r, updateProjGap: 2, projType }];
        const oc = new GaLoreAdamW(spec(pc), { lr: 1e-3, precision: "f32" }), og = new GaLoreAdamW(spec(pg), { lr: 1e-3, precision: "f32" });
        for (let s = 0; s < 4; s++) {
          const g = rng.normals(rows * cols);
          pc.grad.copyFrom(g); pg.grad.copyFrom(g);
          oc.step(); og.step();
        }
        const left = oc.stateOf(pc)!.side === "left";
        const sub = subspaceErr(await f32(og.stateOf(pg)!.proj!), await f32(oc.stateOf(pc)!.proj!), left ? rows : cols, r, left);
        expect(sub).toBeLessThan(1e-3);
        const uc = (await f32(pc.data)).map((x, i) => x - w[i]), ug = (await f32(pg.data)).map((x, i) => x - w[i]);
        expect(relErr(ug, uc)).toBeLessThan(1e-3);
        oc.dispose(); og.dispose();
      }
    });

    test("a zero or non-finite gradient at a refresh keeps the projector (bf16 gradient through the f32 scratch)", async () => {
      const rng = new Rng(5);
      const [rows, cols, r] = [96, 200, 6];
      const pg = new Parameter(tensor(rng.normals(rows * cols, 0.02), [rows, cols], { device: "cuda", dtype: "bf16" }));
      const og = new GaLoreAdamW([{ params: [pg], rank: r, updateProjGap: 1 }], { lr: 1e-3 });
      pg.grad.copyFrom(separatedGradient(rng, rows, cols, r + 2));
      og.step();
      const p0 = await f32(og.stateOf(pg)!.proj!);
      expect(p0.some((x) => x !== 0)).toBe(true);
      pg.grad.copyFrom(new Float32Array(rows * cols));
      og.step();
      expect(await f32(og.stateOf(pg)!.proj!)).toEqual(p0);
      const bad = separatedGradient(rng, rows, cols, r + 2); bad[17] = Infinity;
      pg.grad.copyFrom(bad);
      og.step();
      expect(await f32(og.stateOf(pg)!.proj!)).toEqual(p0);
      og.dispose();
    });

    // The check on R must see what IEEE says the projection carries: tensor cores included.
    for (const projType of ["std", "full"] as const) for (const c of NONFINITE_CASES) {
      const scanned = projType === "std" ? c.stdCuda : c.full;
      test(`non-finite skip on a kept projector: ${projType}, rank ${c.rank} (checks ${checkLabel(scanned)}), tf32 / bf16 / f32`, async () => {
        for (const precision of ["tf32", "bf16", "f32"] as const) {
          for (const badIndex of [0, 1]) {
            for (const bad of NONFINITE_VALUES) for (const zeroed of [false, true]) await expectNonFiniteSkip("cuda", projType, c.rank, bad, { zeroed, precision, badIndex, scanned });
          }
          await expectNonFiniteSkip("cuda", projType, c.rank, NaN, { zeroed: true, perParam: true, precision });
        }
      });
    }
  });
}
