// Every optimizer, for the suites that must hold for all of them (checkpoints first). When you add
// an optimizer, append its cases here: the checkpoint round trips (CPU and CUDA), the fuzzing of
// the loader and the refusal tests then cover it without further work.
import { Adafactor, AdamW, Apollo, ApolloMini, DType, GaLoreAdafactor, GaLoreAdamW, GrassAdamW, Optimizer, Parameter } from "../lib";

export interface OptimizerCase {
  /** Unique label, used in test names. */
  name: string;
  /** The optimizer over `params` (parameters of TEST_SHAPES, in that order, one dtype, one
   *  device). Called several times per test; must give the same optimizer each time. Use
   *  lr ~1e-2 and non-zero weight decay so that steps move the parameters visibly. */
  make(params: Parameter[]): Optimizer<any>;  // eslint-disable-line @typescript-eslint/no-explicit-any
  /** Parameter dtypes the case is tested with. */
  dtypes: DType[];
}

/** Parameter shapes the shared suites use: a single element, odd vectors, matrices large enough
 *  for rank-r projections (rank ≤ 16) and 8-bit states (one tensor above minSize8bit = 4096),
 *  and a 3-D tensor (viewed as dim0 × rest by the projected methods). */
export const TEST_SHAPES: number[][] = [[1], [7], [80, 72], [3, 5, 11], [4097], [33, 17]];

export const OPTIMIZERS: OptimizerCase[] = [
  {
    name: "AdamW",
    make: (p) => new AdamW(p, { lr: 1e-2, weightDecay: 0.05 }),
    dtypes: ["f32", "bf16", "f16"],
  },
  {
    name: "AdamW stateDtype bf16",
    make: (p) => new AdamW(p, { lr: 1e-2, weightDecay: 0.05, stateDtype: "bf16" }),
    dtypes: ["f32", "bf16"],
  },
  {
    name: "AdamW bf16 stochastic rounding",
    make: (p) => new AdamW(p, { lr: 1e-2, weightDecay: 0.05, stochasticRounding: true, seed: 11 }),
    dtypes: ["bf16"],
  },
  {
    name: "AdamW two groups",
    make: (p) => new AdamW([{ params: p.slice(0, 3), lr: 2e-2 }, { params: p.slice(3), weightDecay: 0, betas: [0.8, 0.99] }],
                           { lr: 1e-2, weightDecay: 0.05 }),
    dtypes: ["f32"],
  },
  {
    name: "GaLoreAdamW std rank 3, gap 3",
    // Rank groups need 2-D (or more) parameters; the rest run plain Adam in a second group.
    make: (p) => new GaLoreAdamW([
      { params: p.filter((x) => x.shape.length >= 2), rank: 3, updateProjGap: 3, scale: 0.25 },
      { params: p.filter((x) => x.shape.length < 2) }], { lr: 1e-2, weightDecay: 0.05 }),
    dtypes: ["f32", "bf16"],
  },
  {
    name: "GrassAdamW topk rank 3, gap 3",
    // A rank group takes every tensor: matrices select rows/columns, 1-D tensors get plain Adam.
    make: (p) => new GrassAdamW([{ params: p, rank: 3, updateProjGap: 3, scale: 0.5 }], { lr: 1e-2, weightDecay: 0.05, seed: 5 }),
    dtypes: ["f32", "bf16"],
  },
  {
    name: "GrassAdamW multinomial keepState, plain group",
    make: (p) => new GrassAdamW([
      { params: p.filter((x) => x.shape.length >= 2), rank: 4, updateProjGap: 2, select: "multinomial", keepState: true },
      { params: p.filter((x) => x.shape.length < 2) }], { lr: 1e-2, weightDecay: 0.05, seed: 9 }),
    dtypes: ["f32"],
  },
  {
    name: "Apollo channel rank 3, gap 3",
    make: (p) => new Apollo([
      { params: p.filter((x) => x.shape.length >= 2), rank: 3, updateProjGap: 3, scale: 2 },
      { params: p.filter((x) => x.shape.length < 2) }], { lr: 1e-2, weightDecay: 0.05 }),
    dtypes: ["f32", "bf16"],
  },
  {
    name: "ApolloMini",
    make: (p) => new ApolloMini([
      { params: p.filter((x) => x.shape.length >= 2), updateProjGap: 2 },
      { params: p.filter((x) => x.shape.length < 2), rank: null }], { lr: 1e-2, weightDecay: 0.05 }),
    dtypes: ["f32"],
  },
  {
    name: "Adafactor",
    make: (p) => new Adafactor(p, { lr: 1e-2, weightDecay: 0.05 }),
    dtypes: ["f32", "bf16", "f16"],
  },
  {
    name: "Adafactor beta1, scaleParameter, two groups",
    make: (p) => new Adafactor([{ params: p.slice(0, 3), beta1: 0.9, scaleParameter: true },
                                { params: p.slice(3), relativeStep: true, warmupInit: true, clipThreshold: 0.5 }],
                               { lr: 1e-2, weightDecay: 0.05 }),
    dtypes: ["f32", "bf16"],
  },
  {
    name: "GaLoreAdafactor std rank 3, gap 3, beta1",
    make: (p) => new GaLoreAdafactor([
      { params: p.filter((x) => x.shape.length >= 2), rank: 3, updateProjGap: 3, scale: 0.25, beta1: 0.9, scaleParameter: true },
      { params: p.filter((x) => x.shape.length < 2) }], { lr: 1e-2, weightDecay: 0.05 }),
    dtypes: ["f32", "bf16"],
  },
  {
    name: "GrassAdamW 8-bit states, multinomial keepState",
    make: (p) => new GrassAdamW([{ params: p, rank: 4, updateProjGap: 2, select: "multinomial", keepState: true, stateBits: 8 }],
                                { lr: 1e-2, weightDecay: 0.05, seed: 11 }),
    dtypes: ["f32", "bf16"],
  },
  {
    name: "GaLoreAdamW 8-bit states, rank 3, gap 3",
    make: (p) => new GaLoreAdamW([
      { params: p.filter((x) => x.shape.length >= 2), rank: 3, updateProjGap: 3, scale: 0.25, stateBits: 8 },
      { params: p.filter((x) => x.shape.length < 2) }], { lr: 1e-2, weightDecay: 0.05 }),
    dtypes: ["f32"],
  },
];
