// GaLoreAdamW over the §6 workload (f32 W/G, the GEMMs in TF32):
//  galore         the steady step (no refresh) at rank 128 / 512 / 1024;
//  galore-refresh one refresh of all 28 matrices (exact projector) at rank 128 / 512, reported as
//                 the step with the refresh minus the steady step, measured in the same run.
// Each row runs twice: with cuBLAS/cuSOLVER (where they load) and with the built-in kernels forced,
// labelled "linalg": "cublas" | "builtin" (the solver in use is named in "solver").
import { Device } from "../../device";
import { linalgPaths, setBuiltinLinalg, streamGemmKernel } from "../../linalg";
import { GaLoreAdamW } from "../../optim/galore";
import { Optimizer, GroupOptions } from "../../optim/optimizer";
import { Parameter } from "../../parameter";
import { randn } from "../../tensor";
import { BenchCase, BenchContext, BenchDefinition, BenchRow } from "../registry";
import { stats, timeCalls } from "../timing";
import { optimizerCase } from "./optimizer_case";

const HYPER = { lr: 1e-3, betas: [0.9, 0.999] as [number, number], eps: 1e-6, weightDecay: 0, precision: "tf32" as const };

export type Linalg = "cublas" | "builtin";

/** Elements of the workload's largest matrix: GaLore's peak-memory rule is one f32 copy of it. */
function largestNumel(ctx: BenchContext): number {
  return Math.max(...ctx.workload.matrices.map(({ shape: [m, n] }) => m * n));
}

/** Runs `run` with the linear-algebra path forced as asked, and labels the row with what served. */
export async function withLinalg(dev: Device, linalg: Linalg, ctx: BenchContext, run: () => Promise<BenchRow>): Promise<BenchRow> {
  if (dev.kind !== "cuda") return { ...(await run()), linalg: "cpu" };
  setBuiltinLinalg(linalg === "builtin");
  try {
    const paths = linalgPaths();
    if (linalg === "cublas" && !/^cuBLAS/.test(paths.blas))
      ctx.note(`galore rows labelled "cublas" ran the built-in GEMM: ${paths.blas}`);
    const row = await run();
    // streamGemm: on the built-in path the project-back at rank <= 128 ran the streaming kernel
    // (streamKernel: which one); with cuBLAS it runs on cuBLAS, B transposed (cuda/galore.cu).
    return { ...row, linalg, blas: paths.blas, solver: paths.solver, streamGemm: paths.streamGemm, streamKernel: streamGemmKernel(dev.index) };
  } finally {
    setBuiltinLinalg(false);
  }
}

function stepCase(ctx: BenchContext, want: number, linalg: Linalg, stateBits = 32): BenchCase {
  // A scaled (CPU) workload may have matrices smaller than the rank: clamp to what they allow.
  const rank = Math.min(want, ...ctx.workload.matrices.map((m) => Math.min(...m.shape)));
  // m, v and P: about (2 m r + n r) * 4 / (m n); 8-bit m, v: (2 m r * 1.016 + 4 n r) / (m n)
  const stateBytes = (stateBits === 8 ? 0.2 : 0.4) * rank / 128;
  // Peak extra memory of a step: the Rs it holds at once (all of them, projected before the non-finite
  // check, or a chunk of them projected together after the G scan) and the scratch kept between steps
  // stay within one f32 copy of the largest gradient together (lib/optim/galore.ts, heldRBudget).
  const peakExtra = 4 * largestNumel(ctx) / ctx.workload.params;
  const inner = optimizerCase({
    name: "galore",
    dtype: "f32",
    variant: `rank ${rank}, ${linalg}${stateBits === 8 ? ", 8-bit states" : ""}`,
    torchRow: undefined,  // bench/torch_baseline.py has no galore rows yet (DESIGN §6 quotes galore_torch)
    usesGemm: true,
    // read G, read + write W (the states are r/n of the size and stay in cache)
    bytesPerParam: 12,
    expectedStateBytesPerParam: stateBytes,
    peakExtraBytesPerParam: peakExtra,
    options: { rank, updateProjGap: 200, scale: 0.25, projType: "std", precision: "tf32", refresh: "none (steady step)", stateBits },
    make: (params) => {
      const o = new GaLoreAdamW([{ params, rank, updateProjGap: 1_000_000_000, scale: 0.25, projType: "std", stateBits }], HYPER);
      o.benchSkipFirstRefresh();
      return o as unknown as Optimizer<GroupOptions>;
    },
  });
  return { ...inner, run: (ctx) => withLinalg(ctx.dev, linalg, ctx, () => inner.run(ctx)) };
}

export function linalgs(ctx: BenchContext): Linalg[] {
  return ctx.dev.kind === "cuda" ? ["cublas", "builtin"] : ["builtin"];  // the CPU has one path (row says "cpu")
}

function refreshCase(rank: number, linalg: Linalg): BenchCase {
  return {
    name: "galore-refresh",
    dtype: "f32",
    variant: `rank ${rank}, ${linalg}`,
    usesGemm: true,
    run: (ctx) => withLinalg(ctx.dev, linalg, ctx, () => runRefresh(ctx, rank)),
  };
}

async function runRefresh(ctx: BenchContext, rank: number): Promise<BenchRow> {
  const { dev, workload } = ctx;
  const params: Parameter[] = [];
  const opts: GaLoreAdamW[] = [];
  try {
    workload.matrices.forEach((m, i) => {
      const p = new Parameter(randn(m.shape, { dtype: "f32", device: dev, seed: 1_000 + i, std: 0.02 }), { name: m.name });
      p.grad.dispose();
      p.grad = randn(m.shape, { dtype: "f32", device: dev, seed: 2_000 + i, std: 1 });
      params.push(p);
    });
    const r = Math.min(rank, ...workload.matrices.map((m) => Math.min(...m.shape)));
    // Gap 1: every step refreshes all 28 projectors (exact). The steady optimizer never refreshes.
    const withRefresh = new GaLoreAdamW([{ params, rank: r, updateProjGap: 1, projType: "std", projector: "svd" }], HYPER);
    const steady = new GaLoreAdamW([{ params, rank: r, updateProjGap: 1_000_000_000, projType: "std" }], HYPER);
    steady.benchSkipFirstRefresh();
    opts.push(withRefresh, steady);
    const steps = Math.min(ctx.steps, 3);
    const tr = await timeCalls(dev, () => withRefresh.step(), steps, 1,
      (d) => ctx.progress(0.8 * d / steps, `refresh ${d}/${steps}`));
    const ts = await timeCalls(dev, () => steady.step(), ctx.steps, ctx.warmup,
      (d) => ctx.progress(0.8 + 0.2 * d / ctx.steps, `steady ${d}/${ctx.steps}`));
    const a = stats(tr), b = stats(ts);
    // A refresh step holds the refresh's workspace (the largest tensor's) beside the scratch kept
    // between steps; the rule is one f32 copy of the largest gradient.
    const peakExtra = withRefresh.scratchBytes() + withRefresh.refreshWorkspaceBytes();
    return {
      name: "galore-refresh",
      dtype: "f32",
      rank: r,
      projector: "svd",
      gradient: "randn (flat spectrum: the iterative solver's hardest case)",
      params: workload.params,
      matrices: workload.matrices.length,
      steps,
      medianMs: a.median - b.median,
      minMs: a.min - b.median,
      maxMs: a.max - b.median,
      stepWithRefreshMs: a.median,
      steadyStepMs: b.median,
      perMatrixMs: (a.median - b.median) / workload.matrices.length,
      peakExtraBytesPerParam: peakExtra / workload.params,
      refreshPeakExtraMiB: peakExtra / 2 ** 20,
      largestGradientF32MiB: 4 * largestNumel(ctx) / 2 ** 20,
    };
  } finally {
    for (const o of opts) o.dispose();
    for (const p of params) p.dispose();
    await dev.synchronize();
  }
}

export const galore: BenchDefinition = {
  name: "galore",
  description: "GaLoreAdamW steady step (no refresh), f32 params, TF32 projections; cuBLAS and built-in; 8-bit states (first linalg path)",
  cases: (ctx) => [
    ...[128, 512, 1024].flatMap((r) => linalgs(ctx).map((l) => stepCase(ctx, r, l))),
    ...[128, 512, 1024].map((r) => stepCase(ctx, r, linalgs(ctx)[0], 8)),
  ],
};

export const galoreRefresh: BenchDefinition = {
  name: "galore-refresh",
  description: "GaLore exact projector refresh of every workload matrix once; cuBLAS/cuSOLVER and built-in",
  // --quick leaves out the built-in solver's refresh on a GPU: one row takes minutes there (66 s
  // for one refresh of the 28 matrices at rank 128 on an H200).
  cases: (ctx) => [128, 512].flatMap((r) => linalgs(ctx)
    .filter((l) => !(ctx.quick && ctx.dev.kind === "cuda" && l === "builtin"))
    .map((l) => refreshCase(r, l))),
};
