// The CUDA GEMM layer against the CPU backend (f32 accumulation) on the same inputs: the built-in
// kernels forced (tensor cores for tf32/bf16 on sm_80+, the SIMT kernel for strict f32), and
// whatever serves by default (cuBLAS where it loads). Odd sizes, every transpose, long K (split-K),
// skinny N, C in f32/bf16/f16, alpha/beta. Skipped where no CUDA device exists.
import { devices, DType, gemm, GemmPrecision, linalgPaths, setBuiltinLinalg, tensor, Tensor } from "../../lib";
import { gemmMany, setStreamGemm, streamGemmKernel } from "../../lib/linalg";
import { expectCode } from "../helpers";
import { relErr, Rng } from "../reference";

const hasCuda = devices().length > 1;
const suite = hasCuda ? describe : describe.skip;

// DESIGN §7: f32 1e-5, TF32 3e-3, bf16 1e-2; a bf16/f16 C adds its own rounding of the output.
const MODE_TOL: Record<GemmPrecision, number> = { f32: 1e-5, tf32: 3e-3, bf16: 1e-2 };
const C_TOL: Record<string, number> = { f32: 0, bf16: 1e-2, f16: 2e-3 };
const PRECISIONS: GemmPrecision[] = ["f32", "tf32", "bf16"];
const C_TYPES: DType[] = ["f32", "bf16", "f16"];

// [M, N, K]: tiny, odd, one tile, edge tiles on every side, K = 1, long K with few output tiles
// (split along K), skinny N, short K with many tiles (the project-back shape).
const SHAPES: [number, number, number][] = [
  [1, 1, 1], [7, 5, 33], [33, 129, 7], [129, 257, 65], [128, 128, 128], [64, 300, 1],
  [257, 33, 4097], [300, 5, 4097], [130, 1030, 64], [1000, 128, 2048],
];

async function f32(t: Tensor): Promise<Float32Array> { return t.toFloat32Array(); }

function norm(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

/** ||got - ref|| / max(||ref||, ||alpha A B||): the operands' rounding errs in proportion to the
 *  product, which on a tiny C may nearly cancel against beta C (a 1x1 result could be ~0). */
function gemmErr(got: ArrayLike<number>, ref: ArrayLike<number>, alphaProductNorm: number): number {
  return relErr(got, ref) * norm(ref) / Math.max(norm(ref), alphaProductNorm, 1e-30);
}

interface Operands { a: Float32Array; b: Float32Array; c: Float32Array }

function operands(rng: Rng, M: number, N: number, K: number): Operands {
  return { a: rng.normals(M * K), b: rng.normals(K * N), c: rng.normals(M * N) };
}

/** C (M x N, dtype ct) after gemm on `device`; C starts as o.c, or NaN when beta is 0 (never read). */
async function run(device: string, o: Operands, M: number, N: number, K: number, transA: boolean, transB: boolean,
                   ct: DType, alpha: number, beta: number, precision: GemmPrecision): Promise<Float32Array> {
  const A = tensor(o.a, transA ? [K, M] : [M, K], { device });
  const B = tensor(o.b, transB ? [N, K] : [K, N], { device });
  const C = tensor(beta === 0 ? new Float32Array(M * N).fill(NaN) : o.c, [M, N], { device, dtype: ct });
  try {
    gemm(A, B, C, { transA, transB, alpha, beta, precision });
    return await f32(C);
  } finally {
    A.dispose(); B.dispose(); C.dispose();
  }
}

suite("CUDA GEMM against the CPU", () => {
  afterEach(() => setBuiltinLinalg(false));

  test("the built-in path names its tensor-core kernel", () => {
    setBuiltinLinalg(true);
    const l = linalgPaths();
    expect(l.forceBuiltin).toBe(true);
    expect(l.blas).toMatch(/^built-in GEMM \(tensor cores/);
  });

  test.each(SHAPES)("%ix%ix%i: built-in and default path, every transpose, precision and C dtype", async (M, N, K) => {
    const rng = new Rng(M * 7919 + N * 31 + K);
    for (const transA of [false, true]) for (const transB of [false, true]) {
      const o = operands(rng, M, N, K);
      for (const ct of C_TYPES) {
        const [alpha, beta] = ct === "f32" ? [0.75, -0.5] : [1.25, 0.5];
        const ref = await run("cpu", o, M, N, K, transA, transB, ct, alpha, beta, "f32");
        const ref0 = await run("cpu", o, M, N, K, transA, transB, ct, -1, 0, "f32");
        for (const precision of PRECISIONS) {
          const tol = Math.max(MODE_TOL[precision], C_TOL[ct]);
          const what = `${M}x${N}x${K} transA=${transA} transB=${transB} C ${ct} ${precision}`;
          for (const builtin of [true, false]) {
            setBuiltinLinalg(builtin);
            const got = await run("cuda", o, M, N, K, transA, transB, ct, alpha, beta, precision);
            const err = gemmErr(got, ref, Math.abs(alpha) * norm(ref0));
            if (!(err < tol)) throw new Error(`${what} ${builtin ? "built-in" : "default"}: rel err ${err} >= ${tol}`);
            // beta 0: C (NaN here) is never read.
            const got0 = await run("cuda", o, M, N, K, transA, transB, ct, -1, 0, precision);
            const err0 = relErr(got0, ref0);
            if (!(err0 < tol)) throw new Error(`${what} ${builtin ? "built-in" : "default"} beta 0: rel err ${err0} >= ${tol}`);
          }
        }
      }
    }
  });

  test("built-in against cuBLAS (where it loads) on odd shapes, f32 C", async () => {
    setBuiltinLinalg(false);
    if (!/^cuBLAS/.test(linalgPaths().blas)) return;  // nothing to compare with
    const rng = new Rng(4242);
    for (const [M, N, K] of [[257, 33, 4097], [129, 257, 65], [1000, 128, 2048]]) {
      for (const transA of [false, true]) for (const transB of [false, true]) {
        const o = operands(rng, M, N, K);
        for (const precision of PRECISIONS) {
          setBuiltinLinalg(false);
          const blas = await run("cuda", o, M, N, K, transA, transB, "f32", 0.5, 2, precision);
          setBuiltinLinalg(true);
          const mine = await run("cuda", o, M, N, K, transA, transB, "f32", 0.5, 2, precision);
          expect(relErr(mine, blas)).toBeLessThan(2 * MODE_TOL[precision]);
        }
      }
    }
  });

  // The streaming kernel serves untransposed TF32 products with K a multiple of 8 up to 128 and C
  // read back (GaLore's project-back): on the built-in path, and where its wgmma version runs
  // (sm_90) on the default path too. Odd M and N (partial row tiles and column strips), K not a
  // multiple of 32 (zeros past K in the last chunk), beta 0 (C, NaN, not read); against the CPU,
  // against the tile kernel and cuBLAS (streaming switched off on either path). The last shapes
  // give each block of an H200 several tiles, across strip boundaries; the very last has more
  // strips (71) than half the SMs, where the wgmma kernel's blocks take contiguous tile ranges and
  // reload the strip where a range crosses into the next.
  test("the wgmma streaming kernel serves sm_90 devices", () => {
    const cuda = devices().find((d) => d.kind === "cuda")!;
    expect(streamGemmKernel(cuda.index)).toBe(cuda.computeCapability === "9.0" ? "wgmma" : "mma.sync");
    setStreamGemm(false);
    try {
      expect(streamGemmKernel(cuda.index)).toBe("off");
    } finally {
      setStreamGemm(true);
    }
  });

  test.each([[1, 4, 8], [67, 132, 16], [63, 4, 40], [64, 128, 8], [300, 260, 64], [65, 8, 128], [129, 388, 72],
             [1000, 516, 128], [2000, 1036, 104], [4100, 1000, 120], [11000, 520, 128], [300, 9000, 64]])(
    "streaming kernel %ix%ix%i: against the CPU, the tile kernel and cuBLAS", async (M, N, K) => {
      expect(linalgPaths().streamGemm).toBe(true);
      const rng = new Rng(M * 13 + N * 7 + K);
      const o = operands(rng, M, N, K);
      const haveBlas = /^cuBLAS/.test(linalgPaths().blas);
      for (const [alpha, beta] of [[0.75, -0.5], [-1, 0], [-0.01, 0.99]]) {
        const ref = await run("cpu", o, M, N, K, false, false, "f32", alpha, beta, "f32");
        const ref0 = await run("cpu", o, M, N, K, false, false, "f32", alpha, 0, "f32");
        for (const builtin of [true, false]) {
          setBuiltinLinalg(builtin);
          const got = await run("cuda", o, M, N, K, false, false, "f32", alpha, beta, "tf32");
          expect(gemmErr(got, ref, norm(ref0))).toBeLessThan(MODE_TOL.tf32);
          if (!builtin && !haveBlas) continue;  // the default path is the built-in one
          setStreamGemm(false);  // built-in: the tile kernel; default: cuBLAS
          try {
            const other = await run("cuda", o, M, N, K, false, false, "f32", alpha, beta, "tf32");
            expect(gemmErr(got, other, norm(ref0))).toBeLessThan(2 * MODE_TOL.tf32);
          } finally {
            setStreamGemm(true);
          }
        }
      }
    });

  // gemmMany: the streaming kernel's grouped launches (up to 32 products each) against one call per
  // product, bit for bit, on both paths: 41 products (two launches, the second of 9) of odd shapes
  // in both tile orders (phase: few strips; ranges: 9000 columns, 71 strips), K from 8 to 128, each
  // its own alpha/beta (beta 0: C, NaN, not read); products the kernel does not serve (transposed
  // B, K = 136, strict f32) between them; one reading an earlier one's C (which must go to a later
  // launch). Then against the CPU within TF32's tolerance.
  test("gemmMany: grouped streaming launches equal one call each, bit for bit", async () => {
    const rng = new Rng(2027);
    type Spec = { M: number; N: number; K: number; alpha: number; beta: number; transB?: boolean; precision?: GemmPrecision; readsC?: number };
    const specs: Spec[] = [];
    const dims = [[1, 4, 8], [67, 132, 16], [63, 4, 40], [300, 260, 64], [65, 8, 128], [129, 388, 72], [1000, 516, 128],
                  [300, 9000, 64], [2000, 1036, 104], [517, 2051, 120], [64, 128, 8]];
    for (let i = 0; i < 38; i++) {
      const [M, N, K] = dims[i % dims.length];
      specs.push({ M, N, K, alpha: rng.normal(), beta: i % 5 === 4 ? 0 : rng.normal() });
      if (i === 6) specs.push({ M: 129, N: 65, K: 72, alpha: 1, beta: 1, transB: true });
      if (i === 20) specs.push({ M: 257, N: 300, K: 136, alpha: -0.5, beta: 1 });
    }
    specs.push({ M: 300, N: 260, K: 64, alpha: 0.25, beta: 1, precision: "f32" });
    // A = product 4's C (65 x 8), which that product writes first.
    specs.push({ M: 65, N: 200, K: 8, alpha: 1, beta: 0.5, readsC: 4 });
    expect(specs.length).toBe(42);
    expect([specs[4].M, specs[4].N]).toEqual([65, 8]);
    const ops = specs.map((x) => ({
      a: rng.normals(x.M * x.K), b: rng.normals(x.K * x.N), c: x.beta === 0 ? new Float32Array(x.M * x.N).fill(NaN) : rng.normals(x.M * x.N),
    }));
    const haveBlas = /^cuBLAS/.test(linalgPaths().blas);
    let many: Float32Array[] = [];
    for (const builtin of [true, false]) {
      if (!builtin && !haveBlas) continue;
      setBuiltinLinalg(builtin);
      const out: Float32Array[][] = [];
      for (const grouped of [true, false]) {
        const Cs = specs.map((x, i) => tensor(ops[i].c, [x.M, x.N], { device: "cuda" }));
        const own = specs.map((x, i) => (x.readsC !== undefined ? null : tensor(ops[i].a, [x.M, x.K], { device: "cuda" })));
        const Bs = specs.map((x, i) => tensor(ops[i].b, x.transB ? [x.N, x.K] : [x.K, x.N], { device: "cuda" }));
        try {
          const calls = specs.map((x, i) => ({
            a: own[i] ?? Cs[x.readsC!], b: Bs[i], c: Cs[i],
            options: { alpha: x.alpha, beta: x.beta, transB: !!x.transB, precision: x.precision ?? "tf32" as GemmPrecision },
          }));
          if (grouped) gemmMany(calls);
          else for (const x of calls) gemm(x.a, x.b, x.c, x.options);
          out.push(await Promise.all(Cs.map((t) => t.toFloat32Array())));
        } finally {
          for (const t of [...Cs, ...Bs]) t.dispose();
          for (const t of own) t?.dispose();
        }
      }
      specs.forEach((x, i) => {
        if (!Buffer.from(out[0][i].buffer).equals(Buffer.from(out[1][i].buffer)))
          throw new Error(`product ${i} (${x.M}x${x.N}x${x.K}) ${builtin ? "built-in" : "default"} path: grouped differs from one call each`);
      });
      many = out[0];
    }
    // Against the CPU in f32, in order (the dependent product on product 4's CPU result).
    const cpu: Float32Array[] = [];
    for (const [i, x] of specs.entries()) {
      const A = tensor(x.readsC !== undefined ? cpu[x.readsC] : ops[i].a, [x.M, x.K], { device: "cpu" });
      const B = tensor(ops[i].b, x.transB ? [x.N, x.K] : [x.K, x.N], { device: "cpu" });
      const C = tensor(ops[i].c, [x.M, x.N], { device: "cpu" });
      const C0 = tensor(new Float32Array(x.M * x.N), [x.M, x.N], { device: "cpu" });
      gemm(A, B, C, { alpha: x.alpha, beta: x.beta, transB: !!x.transB });
      gemm(A, B, C0, { alpha: x.alpha, transB: !!x.transB });
      cpu.push(await C.toFloat32Array());
      // The dependent product's A carries product 4's TF32 rounding.
      const tol = x.readsC !== undefined ? 2 * MODE_TOL.tf32 : MODE_TOL[x.precision ?? "tf32"];
      const err = gemmErr(many[i], cpu[i], norm(await C0.toFloat32Array()));
      if (!(err < tol)) throw new Error(`product ${i} (${x.M}x${x.N}x${x.K}): rel err ${err} >= ${tol}`);
    }
  });

  // The projection shapes of a GaLore step (scaled down 2x): R = G P^T, R = P^T G (long K, N or
  // M = r: split along K) and W <- W - c N P (K = r, bf16 W in the epilogue).
  test.each([
    [2048, 128, 4096, false, true],
    [128, 2048, 4096, true, false],
    [2048, 2048, 128, false, false],
  ])("projection shape %ix%ix%i (transA=%s transB=%s): tf32/bf16 within tolerance, and bit-identical on a rerun", async (M, N, K, transA, transB) => {
    const rng = new Rng(M + 3 * N + 7 * K);
    const o = operands(rng, M, N, K);
    setBuiltinLinalg(true);
    for (const ct of ["f32", "bf16"] as DType[]) {
      const ref = await run("cpu", o, M, N, K, transA, transB, ct, -0.01, 0.99, "f32");
      for (const precision of ["tf32", "bf16"] as GemmPrecision[]) {
        const a = await run("cuda", o, M, N, K, transA, transB, ct, -0.01, 0.99, precision);
        const b = await run("cuda", o, M, N, K, transA, transB, ct, -0.01, 0.99, precision);
        expect(relErr(a, ref)).toBeLessThan(Math.max(MODE_TOL[precision], C_TOL[ct]));
        expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
      }
    }
  });

  test("the CPU ignores precision (always f32), and bad precision is refused", async () => {
    const rng = new Rng(1);
    const o = operands(rng, 9, 11, 13);
    const f = await run("cpu", o, 9, 11, 13, false, true, "f32", 1, 0, "f32");
    expect(await run("cpu", o, 9, 11, 13, false, true, "f32", 1, 0, "bf16")).toEqual(f);
    const A = tensor(o.a, [9, 13], { device: "cuda" }), B = tensor(o.b, [13, 11], { device: "cuda" });
    const C = tensor(o.c, [9, 11], { device: "cuda" });
    expectCode(() => gemm(A, B, C, { precision: "fp8" as GemmPrecision }), "E_ARG");
    expect(Array.from(await f32(C))).toEqual(Array.from(o.c));  // arrays: the addon's typed arrays are of another realm
    A.dispose(); B.dispose(); C.dispose();
  });
});
