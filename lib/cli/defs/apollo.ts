// APOLLO over the §6 workload (f32 W/G, the projection GEMM in TF32, limiter on):
//  apollo       rank 256, channel scaling, scale 1 (apollo_torch r=256 with TF32: 14.2 ms, 0.65 B/param);
//  apollo-mini  rank 1, tensor scaling, scale 128 (apollo_torch APOLLO-Mini: 12.5 ms, 0.003 B/param).
// The step regenerates P at every step (it is never stored), so a steady step is every step. The
// apollo row runs with cuBLAS (where it loads) and with the built-in kernels forced, labelled
// "linalg"; apollo-mini multiplies no matrices on CUDA (rank 1 is fused into the gradient scan),
// so it has one row.
import { Apollo, ApolloMini } from "../../optim/apollo";
import { Optimizer, GroupOptions } from "../../optim/optimizer";
import { BenchCase, BenchContext, BenchDefinition } from "../registry";
import { Linalg, linalgs, withLinalg } from "./galore";
import { optimizerCase } from "./optimizer_case";

const HYPER = { lr: 1e-3, betas: [0.9, 0.999] as [number, number], eps: 1e-6, weightDecay: 0, precision: "tf32" as const };

function apolloCase(ctx: BenchContext, mini: boolean, linalg: Linalg | "none"): BenchCase {
  // A scaled (CPU) workload may have matrices smaller than the rank: clamp to what they allow.
  const rank = mini ? 1 : Math.min(256, ...ctx.workload.matrices.map((m) => Math.min(...m.shape)));
  const scaleType = mini ? "tensor" : "channel";
  const scale = mini ? 128 : 1;
  const inner = optimizerCase({
    name: mini ? "apollo-mini" : "apollo",
    dtype: "f32",
    variant: mini ? `rank ${rank}` : `rank ${rank}, ${linalg}`,
    torchRow: undefined,  // bench/torch_baseline.py has no apollo rows (DESIGN §6 quotes apollo_torch)
    usesGemm: !mini,
    // DESIGN §5: read G, read + write W (the states are r/n of the size). The CUDA step reads G
    // three times at rank 256 (channel norms + NaN scan, GEMM, update) and twice at rank 1 (the scan
    // projects too): 8 or 4 B/param beyond this floor (gradReads in the row).
    bytesPerParam: 12,
    expectedStateBytesPerParam: 8 * rank / 4096,
    peakExtraBytesPerParam: 0,
    options: { rank, scaleType, scale, updateProjGap: 200, normGrowthLimiter: true,
               precision: mini && ctx.dev.kind === "cuda" ? "fused rank-1 projection (f32 loads, double sums; no GEMM)" : "tf32",
               gradReads: mini ? 2 : 3, apolloTorchMs: mini ? 12.5 : 14.2 },
    make: (params) => {
      const group = { params, rank, updateProjGap: 200, scaleType, scale } as const;
      const o = mini ? new ApolloMini([group], HYPER) : new Apollo([group], HYPER);
      return o as unknown as Optimizer<GroupOptions>;
    },
  });
  if (linalg === "none") return { ...inner, run: async (ctx) => ({ ...(await inner.run(ctx)), linalg: ctx.dev.kind === "cuda" ? "none" : "cpu" }) };
  return { ...inner, run: (ctx) => withLinalg(ctx.dev, linalg, ctx, () => inner.run(ctx)) };
}

export const apollo: BenchDefinition = {
  name: "apollo",
  description: "APOLLO step (rank 256, channel scaling, limiter on), f32 params, TF32 projection; cuBLAS and built-in",
  cases: (ctx) => linalgs(ctx).map((l) => apolloCase(ctx, false, l)),
};

export const apolloMini: BenchDefinition = {
  name: "apollo-mini",
  description: "APOLLO-Mini step (rank 1, tensor scaling, scale 128), f32 params; cuBLAS and built-in",
  cases: (ctx) => [apolloCase(ctx, true, "none")],
};
