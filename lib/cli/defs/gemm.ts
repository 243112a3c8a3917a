// gemm rows: the GEMMs of a GaLore step on the §6 matrix shapes (f32), the built-in kernel against
// cuBLAS in the same row, so that "the built-in tensor-core GEMM within 2x of cuBLAS on the
// projection shapes" (issue #4) reads off `ratioToCublas` (built-in time / cuBLAS time).
//   project  R = G P^T (rows >= cols: m x r, K = cols) or R = P^T G (rows < cols: r x n, K = rows)
//   back     W <- W + alpha back(N): N P or P N, K = r, the read-modify-write of W in the epilogue
// for q/k/v/o 4096 x 4096, gate/up 11008 x 4096 and down 4096 x 11008, at r = 128 and 512, in
// TF32 and bf16 modes. floorMs counts the bytes (G or W, plus the small operands) over the copy
// bandwidth; TFLOP/s is 2 m n r / time. A timed call is a batch of back-to-back GEMMs (one takes
// ~10-100 µs, about what the host takes to enqueue a call), after a few ms of copies queued so the
// device does not wait on the host.
import { GemmPrecision, gemm, gemmMany, linalgPaths, setBuiltinLinalg, setStreamGemm, streamGemmKernel } from "../../linalg";
import { native, NativeBufferHandle } from "../../native";
import { randn, zeros, Tensor } from "../../tensor";
import { BenchCase, BenchContext, BenchDefinition, BenchRow } from "../registry";
import { stats, Stats, timeCalls } from "../timing";
import { LLAMA7B_FFN, LLAMA7B_HIDDEN, scaleDim } from "../workload";

const BATCH = 8;
type Op = "project" | "back";

interface Shape { name: string; rows: number; cols: number }

const SHAPES: Shape[] = [
  { name: "qkvo", rows: LLAMA7B_HIDDEN, cols: LLAMA7B_HIDDEN },
  { name: "gate/up", rows: LLAMA7B_FFN, cols: LLAMA7B_HIDDEN },
  { name: "down", rows: LLAMA7B_HIDDEN, cols: LLAMA7B_FFN },
];

function gemmCase(shape: Shape, op: Op, rank: number, precision: GemmPrecision): BenchCase {
  return {
    name: "gemm",
    dtype: "f32",
    variant: `${op} ${shape.name} r=${rank} ${precision}`,
    usesGemm: true,
    run: async (ctx: BenchContext): Promise<BenchRow> => {
      const { dev } = ctx;
      const m = scaleDim(shape.rows, ctx.workload.scale), n = scaleDim(shape.cols, ctx.workload.scale);
      const r = Math.min(rank, m, n);
      const right = m >= n;  // projType "std": the side of the larger dimension is kept
      const owned: Tensor[] = [];
      const keep = (t: Tensor) => { owned.push(t); return t; };
      let scratch: NativeBufferHandle[] | undefined;
      try {
        const big = keep(randn([m, n], { device: dev, seed: 3, std: op === "project" ? 1 : 0.02 }));
        const P = keep(randn(right ? [r, n] : [m, r], { device: dev, seed: 4, std: 1 / Math.sqrt(right ? n : m) }));
        const R = keep(op === "project" ? zeros(right ? [m, r] : [r, n], { device: dev })
                                        : randn(right ? [m, r] : [r, n], { device: dev, seed: 5, std: 1 }));
        const call = op === "project"
          ? () => (right ? gemm(big, P, R, { transB: true, precision }) : gemm(P, big, R, { transA: true, precision }))
          : () => (right ? gemm(R, P, big, { alpha: -1e-3, beta: 1, precision }) : gemm(P, R, big, { alpha: -1e-3, beta: 1, precision }));
        if (dev.kind === "cuda") {
          const bytes = 1 << 28;
          scratch = [new (native().NativeBuffer)(dev.index, bytes), new (native().NativeBuffer)(dev.index, bytes)];
          for (const b of scratch) native().fillZero(b, bytes);
        }
        const batch = dev.kind === "cuda" ? BATCH : 1;
        const timeOne = async (label: string, from: number): Promise<Stats> => {
          const times = await timeCalls(dev, (i) => {
            if (i === 0 && scratch) for (let k = 0; k < 16; k++) native().copyKernel(scratch[k & 1], scratch[(k + 1) & 1], scratch[0].bytes);
            for (let b = 0; b < batch; b++) call();
          }, ctx.steps, ctx.warmup, (d) => ctx.progress(from + 0.5 * d / ctx.steps, `${label} ${d}/${ctx.steps}`));
          return stats(times.map((t) => t / batch));
        };
        const flops = 2 * m * n * r;
        // project: read G, write R; back: read + write W, read N (R); P read by both.
        const bytes = 4 * (op === "project" ? m * n : 2 * m * n + R.numel) + 4 * (R.numel + P.numel);
        const floorMs = bytes / (ctx.copyGBps * 1e6);
        const row = (s: Stats) => ({ medianMs: s.median, minMs: s.min, maxMs: s.max, TFLOPs: flops / (s.median * 1e9) });
        const base = {
          name: "gemm", dtype: "f32", params: m * n, op, matrix: [m, n], rank: r, precision,
          gemmShape: op === "project" ? (right ? [m, r, n] : [r, n, m]) : [m, n, r],
          transposes: op === "project" ? (right ? "B" : "A") : "none", launchesPerTimedCall: batch, floorMs,
        };
        if (dev.kind !== "cuda") {
          const s = await timeOne("cpu", 0);
          return { ...base, ...row(s), fracOfFloor: floorMs / s.median, linalg: "cpu" };
        }
        let builtin: Stats;
        setBuiltinLinalg(true);
        try {
          builtin = await timeOne("built-in", 0);
        } finally {
          setBuiltinLinalg(false);
        }
        const blasPath = linalgPaths().blas;
        const haveBlas = /^cuBLAS/.test(blasPath);
        if (!haveBlas) ctx.note(`gemm rows: no cuBLAS here (${blasPath}); cublas* fields are absent`);
        // The built-in time is the streaming kernel's where it fits (cuda/gemm_tc.cuh streamGemmFits:
        // untransposed TF32 with K a multiple of 8 up to 128), else the tile kernel's. Its wgmma
        // version (sm_90) serves the default path too: cuBLAS is timed with it switched off.
        const streams = op === "back" && precision === "tf32" && r <= 128 && r % 8 === 0;
        const kernel = streams ? `stream (${streamGemmKernel(dev.index)})` : "tile";
        let blas = builtin;
        if (haveBlas) {
          setStreamGemm(false);
          try {
            blas = await timeOne("cuBLAS", 0.5);
          } finally {
            setStreamGemm(true);
          }
        }
        const defaultPath = streams && streamGemmKernel(dev.index) === "wgmma" ? kernel : haveBlas ? "cuBLAS" : kernel;
        return {
          ...base, ...row(builtin), fracOfFloor: floorMs / builtin.median, linalg: "builtin", kernel, defaultPath,
          ...(haveBlas ? { cublasMs: blas.median, cublasTFLOPs: flops / (blas.median * 1e9), ratioToCublas: builtin.median / blas.median, blas: blasPath } : {}),
        };
      } finally {
        for (const t of owned) t.dispose();
        for (const b of scratch ?? []) b.dispose();
        await dev.synchronize();
      }
    },
  };
}

/** The project-backs of a whole §6 step at `rank` (TF32): every matrix's W <- W - c back(N), by
 *  gemmMany (on Hopper the streaming kernel's grouped launches) against one gemm call each, in the
 *  same row. A timed call is the whole set once. */
function backAllCase(rank: number): BenchCase {
  return {
    name: "gemm",
    dtype: "f32",
    variant: `back all §6 r=${rank} tf32`,
    usesGemm: true,
    run: async (ctx: BenchContext): Promise<BenchRow> => {
      const { dev } = ctx;
      const owned: Tensor[] = [];
      const keep = (t: Tensor) => { owned.push(t); return t; };
      try {
        const calls = ctx.workload.matrices.map(({ shape: [m, n] }, i) => {
          const r = Math.min(rank, m, n), right = m >= n;
          const W = keep(randn([m, n], { device: dev, seed: 10 + i, std: 0.02 }));
          const P = keep(randn(right ? [r, n] : [m, r], { device: dev, seed: 100 + i, std: 1 / Math.sqrt(right ? n : m) }));
          const N = keep(randn(right ? [m, r] : [r, n], { device: dev, seed: 200 + i, std: 1 }));
          return right ? { a: N, b: P, c: W, options: { alpha: -1e-3, beta: 1, precision: "tf32" as GemmPrecision } }
                       : { a: P, b: N, c: W, options: { alpha: -1e-3, beta: 1, precision: "tf32" as GemmPrecision } };
        });
        const params = ctx.workload.params;
        const bytes = calls.reduce((s, x) => s + 4 * (2 * x.c.numel + x.a.numel + x.b.numel), 0);
        const floorMs = bytes / (ctx.copyGBps * 1e6);
        const time = async (label: string, from: number, fn: () => void) => stats(await timeCalls(dev, () => fn(), ctx.steps, ctx.warmup,
          (d) => ctx.progress(from + 0.5 * d / ctx.steps, `${label} ${d}/${ctx.steps}`)));
        const many = await time("gemmMany", 0, () => gemmMany(calls));
        const each = await time("one call each", 0.5, () => { for (const x of calls) gemm(x.a, x.b, x.c, x.options); });
        return {
          name: "gemm", dtype: "f32", params, op: "back-all", rank, precision: "tf32", matrices: calls.length, floorMs,
          medianMs: many.median, minMs: many.min, maxMs: many.max, fracOfFloor: floorMs / many.median,
          oneCallEachMs: each.median, linalg: linalgPaths().blas,
          kernel: dev.kind === "cuda" ? `stream (${streamGemmKernel(dev.index)})` : "cpu",
        };
      } finally {
        for (const t of owned) t.dispose();
        await dev.synchronize();
      }
    },
  };
}

export const gemmBench: BenchDefinition = {
  name: "gemm",
  description: "GaLore's projection GEMMs on the §6 shapes (f32, r = 128 / 512, TF32 and bf16): built-in tensor-core kernel vs cuBLAS",
  // The CPU computes f32 whatever the precision: one set of rows there.
  cases: (ctx) => (ctx.dev.kind === "cuda" ? ["tf32", "bf16"] as GemmPrecision[] : ["tf32"] as GemmPrecision[]).flatMap((precision) => [128, 512].flatMap((rank) =>
    SHAPES.flatMap((shape) => (["project", "back"] as Op[]).map((op) => gemmCase(shape, op, rank, precision))))),
};

export const gemmBackAllBench: BenchDefinition = {
  name: "gemm-back-all",
  description: "the project-backs of a whole §6 GaLore step at r = 128 (TF32): grouped launches (gemmMany) against one call each",
  cases: (ctx) => (ctx.dev.kind === "cuda" ? [backAllCase(128)] : []),
};
