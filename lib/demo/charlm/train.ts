// The character-level LM demo (`npx slimopt demo`, examples/charlm/train.js): trains CharMLP on
// the shipped corpus with one or all of slimopt's optimizers, from the same initialisation and
// the same data order, and writes results.json and loss.svg. Optimizer classes are looked up by
// name in the package's exports, so the table lists methods a build may not have yet.
import * as fs from "fs";
import * as path from "path";
import { Device } from "../../device";
import { fail } from "../../errors";
import * as lib from "../../index";
import { gemm } from "../../linalg";
import { ActivationKind } from "../../nn";
import { GroupOptions, Optimizer } from "../../optim/optimizer";
import { Parameter } from "../../parameter";
import { tensor, Tensor, zeros } from "../../tensor";
import { BatchSampler, Corpus, defaultCorpusPath, evenPositions, fillExamples, loadCorpus } from "./data";
import { CharMLP } from "./model";
import { lossPlotSvg } from "./svg";

export interface DemoOptions {
  /** Keys of OPTIMIZERS, in order. */
  optimizers: string[];
  steps: number;
  device: Device;
  seed: number;
  batch: number;
  context: number;
  embed: number;
  hidden: number[];
  activation: ActivationKind;
  /** Peak learning rate of AdamW; the other methods' rates are set relative to it (see OPTIMIZERS). */
  lr: number;
  /** Overrides the table's rate of the rank groups: this multiple of lr. */
  rankLrMultiple?: number;
  /** Multiples of every rate to try per method (the run with the best final validation loss is
   *  the method's result; all are kept in results.json). Default [1]. */
  lrGrid?: number[];
  /** Overrides options of the rank groups (e.g. { updateProjGap: 50 }). */
  rankOptions?: Record<string, unknown>;
  /** Fraction of the steps with a linear warm-up; then cosine decay to 10% of the peak. */
  warmup: number;
  evalEvery: number;
  /** Validation positions per intermediate evaluation (rounded down to whole batches). */
  evalTokens: number;
  /** Validation positions of the final evaluation (all of the split when larger). */
  finalEvalTokens: number;
  logEvery: number;
  corpus: string;
  precision: "tf32" | "f32";
  out?: string;
  log: (line: string) => void;
}

/** How a method is built for the model: which classes, which groups, which options. Rank groups
 *  hold only the 2-D hidden weights (as the papers do); embedding, biases and output layer are
 *  plain Adam groups at AdamW's rate. Ranks are a quarter of each matrix's smaller side. */
interface OptimizerEntry {
  key: string;
  className: string;
  /** Options of the rank group(s), given the matrix [rows, cols], AdamW's lr and the run's steps. */
  rankOptions?: (rows: number, cols: number, lr: number, steps: number) => Record<string, unknown>;
  /** Options of the plain group (ApolloMini's presets give every group rank 1 unless told). */
  plainOptions?: Record<string, unknown>;
}

const quarterRank = (rows: number, cols: number) => Math.max(1, Math.floor(Math.min(rows, cols) / 4));
/** Steps between projector refreshes: the papers' 200 for runs of 3000 steps or more (15
 *  subspaces per run), proportionally fewer for shorter runs (at least 10). */
export const refreshGap = (steps: number) => Math.min(200, Math.max(10, Math.round(steps / 15)));

export const OPTIMIZERS: OptimizerEntry[] = [
  { key: "adamw", className: "AdamW" },
  { key: "adamw8bit", className: "AdamW8bit" },
  {
    key: "galore", className: "GaLoreAdamW",
    rankOptions: (r, c, lr, steps) => ({ rank: quarterRank(r, c), updateProjGap: refreshGap(steps), scale: 0.25, projType: "std", lr: 10 * lr }),
  },
  {
    key: "apollo", className: "Apollo",
    rankOptions: (r, c, lr, steps) => ({ rank: quarterRank(r, c), updateProjGap: refreshGap(steps), scale: 1, scaleType: "channel", lr: 4 * lr }),
    plainOptions: { rank: null },
  },
  {
    key: "apollo-mini", className: "ApolloMini",
    rankOptions: (_r, _c, lr, steps) => ({ rank: 1, updateProjGap: refreshGap(steps), scale: 128, scaleType: "tensor", lr: 4 * lr }),
    plainOptions: { rank: null },
  },
  {
    key: "grass", className: "GrassAdamW",
    rankOptions: (r, c, lr, steps) => ({ rank: quarterRank(r, c), updateProjGap: Math.max(5, Math.round(refreshGap(steps) / 4)), select: "topk", scale: 1, lr: 4 * lr }),
  },
];

type OptimizerClass = new (groups: unknown, defaults: Record<string, unknown>) => Optimizer<GroupOptions>;

/** The class a key names, from the package's exports; undefined when this build lacks it. */
export function optimizerClass(key: string): OptimizerClass | undefined {
  const e = OPTIMIZERS.find((o) => o.key === key);
  if (!e) return undefined;
  const c = (lib as unknown as Record<string, unknown>)[e.className];
  return typeof c === "function" ? (c as OptimizerClass) : undefined;
}

/** The optimizer of `key` for the model, with the groups the table describes. */
export function buildOptimizer(key: string, model: CharMLP, lr: number, steps: number, rankLrMultiple?: number,
                               rankOverrides: Record<string, unknown> = {}): Optimizer<GroupOptions> {
  const e = OPTIMIZERS.find((o) => o.key === key);
  if (!e) fail("E_ARG", `unknown optimizer ${key} (one of ${OPTIMIZERS.map((o) => o.key).join(", ")})`);
  const Cls = optimizerClass(key);
  if (!Cls) fail("E_ARG", `this build of slimopt has no ${e.className}`);
  const defaults = { lr, weightDecay: 0 };
  if (!e.rankOptions) return new Cls([{ params: model.parameters() }], defaults);
  // One group per hidden matrix (each gets its own rank), then the plain group.
  const groups: Record<string, unknown>[] = model.hiddenWeights().map((p: Parameter) => ({
    params: [p], ...e.rankOptions!(p.shape[0], p.shape[1], lr, steps), ...(rankLrMultiple !== undefined ? { lr: rankLrMultiple * lr } : {}),
    ...rankOverrides,
  }));
  groups.push({ params: model.otherParameters(), ...(e.plainOptions ?? {}) });
  return new Cls(groups, defaults);
}

/** Learning-rate factor of step s (0-based) of n: linear warm-up, then cosine to 0.1. */
export function lrFactor(s: number, n: number, warmup: number): number {
  const w = Math.max(1, Math.round(warmup * n));
  if (s < w) return (s + 1) / w;
  const t = Math.min(1, (s - w) / Math.max(1, n - w));
  return 0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * t));
}

export interface CurvePoint { step: number; tokens: number; train?: number; val?: number }

export interface RunResult {
  optimizer: string;
  /** The multiple of the table's rates this run used (see DemoOptions.lrGrid). */
  lrMultiple: number;
  className: string;
  steps: number;
  tokens: number;
  finalValLoss: number;
  finalTrainLoss: number;
  stateBytes: number;
  params: number;
  seconds: number;
  groups: Record<string, unknown>[];
  curve: CurvePoint[];
}

/** Sums a [1, 1] loss into an accumulator on the device (a 1x1 GEMM: acc = loss * 1 + acc), so
 *  losses are read once per log interval instead of once per step. */
class LossAccumulator {
  private readonly acc: Tensor;
  private readonly one: Tensor;
  count = 0;
  constructor(dev: Device) {
    this.acc = zeros([1, 1], { device: dev });
    this.one = tensor([1], [1, 1], { device: dev });
  }
  add(loss: Tensor): void {
    gemm(loss, this.one, this.acc, { beta: 1, precision: "f32" });
    this.count++;
  }
  /** The sum so far (then reset). */
  async take(): Promise<number> {
    const [v] = await this.acc.toFloat32Array();
    this.acc.zero();
    this.count = 0;
    return v;
  }
  dispose(): void {
    this.acc.dispose();
    this.one.dispose();
  }
}

interface Batch { indices: Tensor; targets: Tensor; hostIndices: Int32Array; hostTargets: Int32Array }

function makeBatch(batch: number, context: number, dev: Device): Batch {
  return {
    indices: zeros([batch, context], { dtype: "i32", device: dev }), targets: zeros([batch, 1], { dtype: "i32", device: dev }),
    hostIndices: new Int32Array(batch * context), hostTargets: new Int32Array(batch),
  };
}

function upload(b: Batch): void {
  b.indices.copyFrom(b.hostIndices);
  b.targets.copyFrom(b.hostTargets);
}

/** Mean loss over the given validation positions, in whole batches. */
async function evaluate(model: CharMLP, data: Int32Array, positions: Int32Array, b: Batch, acc: LossAccumulator): Promise<number> {
  const batch = b.hostTargets.length, context = model.config.context;
  const whole = Math.floor(positions.length / batch) * batch;
  if (whole === 0) fail("E_ARG", `validation needs at least one batch of ${batch} positions`);
  for (let i = 0; i < whole; i += batch) {
    fillExamples(data, context, positions.subarray(i, i + batch), b.hostIndices, b.hostTargets);
    upload(b);
    acc.add(model.forward(b.indices, b.targets, { reduction: "sum" }));
  }
  return (await acc.take()) / whole;
}

function fmtBytes(n: number): string {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(2)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

/** Trains one model with one optimizer; same seed => same initialisation and data order. */
export async function trainOne(key: string, corpus: Corpus, o: DemoOptions, lrMultiple = 1): Promise<RunResult> {
  const dev = o.device;
  const model = new CharMLP({ vocab: corpus.chars.length, context: o.context, embed: o.embed, hidden: o.hidden, activation: o.activation },
                            { device: dev, seed: o.seed, precision: o.precision });
  const opt = buildOptimizer(key, model, o.lr * lrMultiple, o.steps, o.rankLrMultiple, o.rankOptions);
  const tag = lrMultiple === 1 ? key : `${key}@${lrMultiple}`;
  const baseLrs = opt.paramGroups.map((g) => g.lr);
  const sampler = new BatchSampler(corpus.train, o.context, o.batch, o.seed);
  const b = makeBatch(o.batch, o.context, dev);
  const acc = new LossAccumulator(dev);
  const evalPositions = evenPositions(corpus.val, o.context, o.evalTokens);
  const curve: CurvePoint[] = [];
  const t0 = performance.now();
  let lastTrain = NaN;
  try {
    curve.push({ step: 0, tokens: 0, val: await evaluate(model, corpus.val, evalPositions, b, acc) });
    for (let s = 0; s < o.steps; s++) {
      const f = lrFactor(s, o.steps, o.warmup);
      opt.paramGroups.forEach((g, i) => { g.lr = baseLrs[i] * f; });
      sampler.next(b.hostIndices, b.hostTargets);
      upload(b);
      acc.add(model.forward(b.indices, b.targets, { backward: true }));
      opt.step();
      const done = s + 1;
      const logNow = done % o.logEvery === 0 || done === o.steps;
      const evalNow = done % o.evalEvery === 0 || done === o.steps;
      if (!logNow && !evalNow) continue;
      const n = acc.count;
      const point: CurvePoint = { step: done, tokens: done * o.batch };
      if (n > 0) point.train = lastTrain = (await acc.take()) / n;
      if (evalNow && done !== o.steps) point.val = await evaluate(model, corpus.val, evalPositions, b, acc);
      if (done === o.steps) {
        const finalPositions = evenPositions(corpus.val, o.context, o.finalEvalTokens);
        point.val = await evaluate(model, corpus.val, finalPositions, b, acc);
      }
      curve.push(point);
      const secs = (performance.now() - t0) / 1000;
      o.log(`${tag.padEnd(11)} step ${String(done).padStart(6)}/${o.steps}  train ${point.train?.toFixed(4) ?? "   -  "}` +
            `${point.val !== undefined ? `  val ${point.val.toFixed(4)}` : ""}  state ${fmtBytes(opt.stateBytes())}  ${secs.toFixed(1)} s`);
    }
    await dev.synchronize();
    const seconds = (performance.now() - t0) / 1000;
    const finalVal = curve[curve.length - 1].val ?? NaN;
    const skipped = await opt.skippedSteps();
    if (skipped > 0) o.log(`${tag}: ${skipped} steps skipped for non-finite gradients`);
    return {
      optimizer: key, lrMultiple, className: OPTIMIZERS.find((e) => e.key === key)!.className, steps: o.steps, tokens: o.steps * o.batch,
      finalValLoss: finalVal, finalTrainLoss: lastTrain, stateBytes: opt.stateBytes(), params: model.numel(), seconds,
      groups: opt.paramGroups.map((g, i) => {
        const { params, ...rest } = g as unknown as Record<string, unknown> & { params: Parameter[] };
        return { ...rest, lr: baseLrs[i], params: params.map((p) => p.name) };
      }),
      curve,
    };
  } finally {
    acc.dispose();
    b.indices.dispose();
    b.targets.dispose();
    opt.dispose();
    model.dispose();
  }
}

export interface DemoResult {
  device: string;
  date: string;
  corpus: string;
  vocab: number;
  trainChars: number;
  valChars: number;
  model: { context: number; embed: number; hidden: number[]; activation: string; params: number };
  batch: number;
  steps: number;
  lr: number;
  seed: number;
  precision: string;
  runs: RunResult[];
  /** Every run of an lr grid (runs holds each method's best). */
  sweep?: RunResult[];
}

/** Trains every optimizer asked for; writes results.json and loss.svg into o.out when given. */
export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const corpus = loadCorpus(o.corpus);
  o.log(`corpus ${path.basename(o.corpus)}: ${corpus.train.length} train / ${corpus.val.length} validation characters, ` +
        `vocabulary ${corpus.chars.length}; device ${o.device}`);
  const runs: RunResult[] = [], sweep: RunResult[] = [];
  const grid = o.lrGrid && o.lrGrid.length ? o.lrGrid : [1];
  for (const key of o.optimizers) {
    let best: RunResult | undefined;
    for (const mult of grid) {
      const r = await trainOne(key, corpus, o, mult);
      o.log(`${key}${mult === 1 ? "" : ` @${mult}× lr`}: final validation loss ${r.finalValLoss.toFixed(4)}, state ${fmtBytes(r.stateBytes)} ` +
            `(${(r.stateBytes / r.params).toFixed(3)} B/param), ${r.tokens} tokens in ${r.seconds.toFixed(1)} s`);
      sweep.push(r);
      // NaN (diverged) never wins.
      const finite = Number.isFinite(r.finalValLoss);
      if (!best || (finite && !(best.finalValLoss <= r.finalValLoss))) best = r;
    }
    runs.push(best!);
  }
  const result: DemoResult = {
    device: o.device.toString(), date: new Date().toISOString(), corpus: path.basename(o.corpus), vocab: corpus.chars.length,
    trainChars: corpus.train.length, valChars: corpus.val.length,
    model: { context: o.context, embed: o.embed, hidden: o.hidden, activation: o.activation, params: runs[0]?.params ?? 0 },
    batch: o.batch, steps: o.steps, lr: o.lr, seed: o.seed, precision: o.precision, runs,
    ...(grid.length > 1 ? { sweep } : {}),
  };
  const base = runs.find((r) => r.optimizer === "adamw");
  if (runs.length > 1) {
    o.log("");
    o.log(`${"optimizer".padEnd(12)} ${"val loss".padStart(9)} ${"vs AdamW".padStart(9)} ${"state".padStart(11)} ${"B/param".padStart(8)} ${"seconds".padStart(8)}${grid.length > 1 ? "  lr ×" : ""}`);
    for (const r of runs) {
      const rel = base ? `${(((r.finalValLoss - base.finalValLoss) / base.finalValLoss) * 100).toFixed(2)}%` : "-";
      o.log(`${r.optimizer.padEnd(12)} ${r.finalValLoss.toFixed(4).padStart(9)} ${rel.padStart(9)} ${fmtBytes(r.stateBytes).padStart(11)} ` +
            `${(r.stateBytes / r.params).toFixed(3).padStart(8)} ${r.seconds.toFixed(1).padStart(8)}${grid.length > 1 ? `  ${r.lrMultiple}` : ""}`);
    }
  }
  if (o.out) {
    fs.mkdirSync(o.out, { recursive: true });
    fs.writeFileSync(path.join(o.out, "results.json"), JSON.stringify(result, null, 2) + "\n");
    const svg = plotResults(result);
    fs.writeFileSync(path.join(o.out, "loss.svg"), svg);
    o.log(`wrote ${path.join(o.out, "results.json")} and ${path.join(o.out, "loss.svg")}`);
  }
  return result;
}

/** The loss plot of a demo's results (each method's chosen run). */
export function plotResults(result: DemoResult): string {
  return lossPlotSvg(result.runs.map((r) => ({
    label: `${r.optimizer}${r.lrMultiple === 1 ? "" : ` (${r.lrMultiple}× lr)`} ${r.finalValLoss.toFixed(3)}, ${fmtBytes(r.stateBytes)}`,
    val: r.curve.filter((p) => p.val !== undefined).map((p) => [p.tokens, p.val!] as [number, number]),
    train: r.curve.filter((p) => p.train !== undefined).map((p) => [p.tokens, p.train!] as [number, number]),
  })), {
    title: `char-level MLP LM on ${result.corpus} (${result.model.params} params, ${result.device})`,
    xLabel: "training tokens (characters)", yLabel: "cross-entropy (nats / char)",
  });
}

/** Defaults by device: the GPU size trains in seconds per method on an H200; the CPU size is a
 *  small model that still learns in a minute or two. */
export function demoDefaults(dev: Device): Omit<DemoOptions, "optimizers" | "log" | "device"> {
  const gpu = dev.kind === "cuda";
  return {
    steps: gpu ? 3000 : 300, seed: 1, batch: gpu ? 512 : 128, context: 16, embed: gpu ? 32 : 16,
    hidden: gpu ? [1024, 1024] : [256, 256], activation: "gelu", lr: gpu ? 3e-3 : 4e-3, warmup: 0.05,
    evalEvery: gpu ? 250 : 50, evalTokens: gpu ? 16384 : 2048, finalEvalTokens: gpu ? 1 << 20 : 16384,
    logEvery: gpu ? 250 : 50, corpus: defaultCorpusPath(), precision: "tf32",
  };
}
