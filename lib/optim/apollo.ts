// APOLLO and APOLLO-Mini (DESIGN §4): Adam moments on a random projection R = project(G) give each
// channel (or the whole tensor) a scale s; the raw gradient scaled by it, limited in norm growth,
// is the update. P is never stored: it is regenerated from (parameter seed, refresh index) by the
// counter-based generator wherever it is used, so the state of a tensor is m and v (shaped like R)
// and the limiter's last norm. Groups without `rank` run plain Adam in the same convention.
//
// Data parallelism (DistributedOptimizer) averages APOLLO's full gradient, not its projection R:
// the update is the raw averaged gradient scaled per channel (G ⊙ s) and norm-limited on
// ‖G ⊙ s‖, so the owner needs the full mean G anyway; averaging R as well would add bytes, not
// save them.
import { Device, device as resolveDevice } from "../device";
import { DType, DTYPE_CODE } from "../dtype";
import { fail } from "../errors";
import { noticeBuiltinLinalg } from "../linalg";
import { native } from "../native";
import { Parameter } from "../parameter";
import { Tensor, zeros } from "../tensor";
import { AdamConvention, AdamGroupEngine, engineMoments } from "./adam_core";
import { adamHyper, AdamWOptions, validateAdamOptions } from "./adamw";
import { checkNumber, Optimizer, ParamGroup, ParamGroupSpec, StateDict } from "./optimizer";

export type ApolloScaleType = "channel" | "tensor";

export interface ApolloOptions extends AdamWOptions {
  /** Rank of the random projection; a group without it (undefined or null) is plain Adam. */
  rank?: number | null;
  /** Regenerate P every this many completed steps (at steps 0, T, 2T, ...). */
  updateProjGap?: number;
  /** "channel": one scale per channel of the larger (unprojected) side; "tensor": one scale. */
  scaleType?: ApolloScaleType;
  /** The update is multiplied by sqrt(scale). */
  scale?: number;
  /** Multiply by sqrt(scale) before the norm-growth limiter (true) or after it (false). */
  scaleFront?: boolean;
  /** Norm-growth limiter (Fira): |update| may grow by at most normGrowthRate per step. */
  normGrowthLimiter?: boolean;
  normGrowthRate?: number;
  /** Seed of each parameter's projection, in the group's order; default: the parameter's position
   *  in the optimizer (1-based, over all groups), which is stable across restarts. */
  paramSeeds?: number[];
  /** GPU GEMM precision of the projection: "tf32" (default) or "f32". */
  precision?: "tf32" | "f32";
}

const DEFAULTS: ApolloOptions = {
  lr: 1e-3, betas: [0.9, 0.999], eps: 1e-6, weightDecay: 0, stateDtype: "f32", stochasticRounding: false,
  skipNonFinite: true, seed: 0, updateProjGap: 200, scaleType: "channel", scale: 1, scaleFront: false,
  normGrowthLimiter: true, normGrowthRate: 1.01, precision: "tf32",
};

/** APOLLO-Mini's presets (DESIGN §4): rank 1, tensor scaling, scale 128. */
const MINI_DEFAULTS: ApolloOptions = { ...DEFAULTS, rank: 1, scaleType: "tensor", scale: 128 };

const SCALE_TYPES: ApolloScaleType[] = ["channel", "tensor"];

/** (dim0, rest): how a parameter of more than 2 dims is viewed. */
function view2d(shape: readonly number[]): [number, number] {
  const rows = shape[0];
  return [rows, shape.reduce((a, b) => a * b, 1) / rows];
}

interface Scratch { p: number; r: number; chan: number; norms: number; left: boolean }

interface LowRank {
  rows: number; cols: number; rank: number; seed: number; layout: Scratch;
  m: Tensor; v: Tensor;
  /** f32 [1]: the limiter's last norm (-1: none yet). */
  prev: Tensor;
  /** The channel norms of the gradient, written by the scan, read by the step (workspace). */
  norms: Tensor;
  /** CUDA, rank 1: p and R's partial sums, made by the scan's one read of G (workspace). */
  fused?: { p: Tensor; r: Tensor };
}

interface RankGroupState {
  device: Device;
  /** int32 [completed steps, skipped steps] on the device. */
  counters: Tensor;
  /** int32 [1]: the current step's gradients hold a NaN/Inf (decided on the device). */
  flag: Tensor;
  params: Map<Parameter, LowRank>;
}

/** The projection P of a rows x cols parameter (its 2-D view) at refresh `refreshIndex`, as the
 *  optimizer regenerates it: [rank, cols] when rows >= cols (R = G P^T), else [rows, rank]
 *  (R = P^T G), entries N(0, 1/rank), the same bits on every device. */
export function apolloProjection(rows: number, cols: number, rank: number,
                                 o: { seed: number | bigint; refreshIndex: number; device?: string | Device }): Tensor {
  for (const [k, x] of [["rows", rows], ["cols", cols], ["rank", rank], ["refreshIndex", o?.refreshIndex]] as [string, unknown][])
    if (!Number.isSafeInteger(x) || (x as number) < (k === "refreshIndex" ? 0 : 1)) fail("E_ARG", `apolloProjection: ${k} must be a ${k === "refreshIndex" ? "non-negative" : "positive"} integer`);
  if (rank > Math.min(rows, cols)) fail("E_ARG", `apolloProjection: rank ${rank} exceeds min(${rows}, ${cols})`);
  const seed = seedBig(o.seed, "apolloProjection: seed");
  const dev = o.device instanceof Device ? o.device : resolveDevice(o.device ?? "cpu");
  const layout = native().apolloScratch(rows, cols, rank) as Scratch;
  const out = zeros(layout.left ? [rows, rank] : [rank, cols], { dtype: "f32", device: dev });
  native().apolloProjection(out.handle, seed, o.refreshIndex, rows, cols, rank);
  return out;
}

function seedBig(s: unknown, what: string): bigint {
  if (typeof s === "bigint" && s >= 0n && s < 1n << 64n) return s;
  if (typeof s === "number" && Number.isSafeInteger(s) && s >= 0) return BigInt(s);
  return fail("E_ARG", `${what} must be a non-negative integer`);
}

export class Apollo extends Optimizer<ApolloOptions> {
  private engines = new Map<ParamGroup<ApolloOptions>, AdamGroupEngine>();
  private ranked = new Map<ParamGroup<ApolloOptions>, RankGroupState>();
  /** Per device: P, R, the channel scratch, and one f32 gradient on CUDA for non-f32 gradients. */
  private scratch = new Map<Device, { sP?: Tensor; sR?: Tensor; sChan?: Tensor; sBig?: Tensor }>();
  /** Each parameter's default seed: its position in the optimizer, 1-based. */
  private defaultSeeds = new Map<Parameter, number>();
  private paramFlags = new Map<Parameter, Tensor>();

  constructor(params: Parameter[] | ParamGroupSpec<ApolloOptions>[], defaults: ApolloOptions = {}, presets: ApolloOptions = DEFAULTS) {
    super(params, { ...presets, ...defaults });
    for (const g of this.paramGroups) for (const p of g.params) this.defaultSeeds.set(p, this.paramPosition(p) + 1);
    // Rank-1 groups run the fused scan on CUDA; larger ranks project with GEMMs (cuBLAS or built-in).
    for (const g of this.paramGroups) if (typeof g.rank === "number" && g.rank > 1) noticeBuiltinLinalg(this.groupDevice(g));
  }

  /** The optimizer's name in state dicts and checkpoints. */
  protected get kind(): string {
    return "Apollo";
  }

  protected validateGroup(g: ParamGroup<ApolloOptions>, gi: number): void {
    validateAdamOptions(g, gi);
    if (g.rank === undefined || g.rank === null) return;
    const r = g.rank;
    if (!Number.isSafeInteger(r) || r <= 0) fail("E_ARG", `group ${gi} rank must be a positive integer, got ${String(r)}`);
    const gap = g.updateProjGap;
    if (!Number.isSafeInteger(gap) || (gap as number) <= 0 || (gap as number) > 2 ** 31 - 1)
      fail("E_ARG", `group ${gi} updateProjGap must be a positive integer, got ${String(gap)}`);
    if (!SCALE_TYPES.includes(g.scaleType as ApolloScaleType))
      fail("E_ARG", `group ${gi} scaleType must be one of ${SCALE_TYPES.join(", ")}, got ${String(g.scaleType)}`);
    checkNumber(`group ${gi} scale`, g.scale, 0, Number.MAX_VALUE);
    checkNumber(`group ${gi} normGrowthRate`, g.normGrowthRate, 1, Number.MAX_VALUE);
    if (typeof g.scaleFront !== "boolean") fail("E_ARG", `group ${gi} scaleFront must be a boolean`);
    if (typeof g.normGrowthLimiter !== "boolean") fail("E_ARG", `group ${gi} normGrowthLimiter must be a boolean`);
    if (g.precision !== "tf32" && g.precision !== "f32") fail("E_ARG", `group ${gi} precision must be "tf32" or "f32"`);
    if (g.stateDtype !== "f32") fail("E_ARG", `group ${gi}: a rank group keeps f32 states`);
    if (g.stochasticRounding) fail("E_ARG", `group ${gi}: stochastic rounding is not available in a rank group`);
    if (g.paramSeeds !== undefined) {
      if (!Array.isArray(g.paramSeeds) || g.paramSeeds.length !== g.params.length ||
          g.paramSeeds.some((s) => !Number.isSafeInteger(s) || s < 0))
        fail("E_ARG", `group ${gi} paramSeeds must be one non-negative integer per parameter (${g.params.length})`);
    }
    g.params.forEach((p, k) => {
      if (p.shape.length < 2) fail("E_ARG", `group ${gi}: ${p.name} is ${p.shape.length}-D; a rank group takes 2-D or larger parameters (give 1-D ones a group with rank: null)`);
      const [rows, cols] = view2d(p.shape);
      if (r > Math.min(rows, cols)) fail("E_ARG", `group ${gi}: rank ${r} exceeds the projected side min(${rows}, ${cols}) of ${p.name}`);
      const st = this.ranked?.get(g)?.params.get(p);
      if (st && st.rank !== r) fail("E_ARG", `group ${gi}: rank cannot change once ${p.name} has state`);
      if (st && g.paramSeeds !== undefined && g.paramSeeds[k] !== st.seed)
        fail("E_ARG", `group ${gi}: the seed of ${p.name} cannot change once it has state`);
    });
  }

  private isRanked(g: ParamGroup<ApolloOptions>): boolean {
    return g.rank !== undefined && g.rank !== null;
  }

  private seedOf(g: ParamGroup<ApolloOptions>, k: number): number {
    return g.paramSeeds !== undefined ? g.paramSeeds[k] : this.defaultSeeds.get(g.params[k])!;
  }

  /** Allocates what the group lacks (zeros; the limiter norms -1); on failure frees what it made
   *  and rethrows, leaving the optimizer as it was. */
  private prepareRanked(g: ParamGroup<ApolloOptions>): RankGroupState {
    const old = this.ranked.get(g);
    const made: Tensor[] = [];
    const alloc = (shape: number[], dtype: DType, dev: Device) => { const t = zeros(shape, { dtype, device: dev }); made.push(t); return t; };
    try {
      const dev = this.groupDevice(g);
      const nat = native();
      const params = new Map(old?.params ?? []);
      g.params.forEach((p, k) => {
        if (params.has(p)) return;
        const [rows, cols] = view2d(p.shape);
        const r = g.rank as number;
        const layout = nat.apolloScratch(rows, cols, r) as Scratch;
        const rShape = layout.left ? [r, cols] : [rows, r];
        const prev = alloc([1], "f32", dev);
        prev.copyFrom(Float32Array.of(-1));
        // Rank 1 on CUDA: the scan projects too (G read twice per step instead of three times).
        const fused = dev.kind === "cuda" && r === 1 ? { p: alloc([layout.p], "f32", dev), r: alloc([layout.norms], "f32", dev) } : undefined;
        params.set(p, { rows, cols, rank: r, seed: this.seedOf(g, k), layout, m: alloc(rShape, "f32", dev), v: alloc(rShape, "f32", dev),
                        prev, norms: alloc([layout.norms], "f32", dev), fused });
      });
      // Scratch of the device: sized for the largest tensor seen.
      const sc = this.scratch.get(dev) ?? {};
      let needP = 0, needR = 0, needChan = 0, needBig = 0;
      for (const q of params.values()) {
        needP = Math.max(needP, q.layout.p); needR = Math.max(needR, q.layout.r); needChan = Math.max(needChan, q.layout.chan);
      }
      if (dev.kind === "cuda" && g.rank !== 1) for (const p of g.params) if (p.grad.dtype !== "f32") needBig = Math.max(needBig, p.numel);
      const grow = (t: Tensor | undefined, n: number): Tensor | undefined =>
        n === 0 ? t : t && t.numel >= n ? t : alloc([n], "f32", dev);
      const next = { sP: grow(sc.sP, needP), sR: grow(sc.sR, needR), sChan: grow(sc.sChan, needChan), sBig: grow(sc.sBig, needBig) };
      // Everything allocated: commit.
      for (const k of ["sP", "sR", "sChan", "sBig"] as const) if (sc[k] && sc[k] !== next[k]) sc[k]!.dispose();
      this.scratch.set(dev, next);
      const st: RankGroupState = old ?? { device: dev, counters: alloc([2], "i32", dev), flag: alloc([1], "i32", dev), params };
      st.params = params;
      this.ranked.set(g, st);
      return st;
    } catch (e) {
      for (const t of made) t.dispose();
      throw e;
    }
  }

  private engine(g: ParamGroup<ApolloOptions>): AdamGroupEngine {
    let e = this.engines.get(g);
    if (!e) {
      e = new AdamGroupEngine(this.groupDevice(g), g.stateDtype as DType);
      this.engines.set(g, e);
    }
    return e;
  }

  protected stepGroups(): void {
    this.validateAll();
    // Allocate everything first so that an E_OOM leaves every group untouched.
    const plans = this.paramGroups.map((g) => {
      if (this.isRanked(g)) return { g, ranked: this.prepareRanked(g) };
      const e = this.engine(g);
      e.prepare(g.params);
      return { g, engine: e };
    });
    for (const { g, ranked, engine } of plans) {
      if (engine) {
        engine.run(adamHyper(g, AdamConvention.Galore));
        continue;
      }
      const s = ranked!;
      this.stepRanked(g, s, g.params, s.counters, s.flag);
    }
  }

  /** The scan (channel norms, the non-finite flag) and the step of `params` of a rank group on
   *  `counters`: the whole group for step(), one parameter (its own flag) for stepParam(). */
  private stepRanked(g: ParamGroup<ApolloOptions>, s: RankGroupState, params: Parameter[], counters: Tensor, flag: Tensor): void {
    const nat = native();
    const sc = this.scratch.get(s.device)!;
    // The scan writes the channel norms the limiter needs; with skipNonFinite off its flag is
    // ignored (cleared again right after).
    nat.apolloScan(flag.handle, params.map((p) => {
      const q = s.params.get(p)!;
      return [p.grad.handle, DTYPE_CODE[p.grad.dtype], q.rows, q.cols, q.norms.handle, q.fused?.p.handle ?? null,
              q.fused?.r.handle ?? null, BigInt(q.seed)];
    }), counters.handle, g.updateProjGap as number);
    if (g.skipNonFinite === false) flag.zero();
    const h = {
      lr: g.lr, beta1: g.betas![0], beta2: g.betas![1], eps: g.eps!, weightDecay: g.weightDecay!,
      scale: g.scale as number, growthRate: g.normGrowthRate as number, updateProjGap: g.updateProjGap as number,
      channel: g.scaleType === "channel", scaleFront: !!g.scaleFront, limiter: !!g.normGrowthLimiter,
      mode: g.precision === "f32" ? 1 : 0,
    };
    for (const p of params) {
      const q = s.params.get(p)!;
      nat.apolloStep(p.data.handle, DTYPE_CODE[p.dtype], p.grad.handle, DTYPE_CODE[p.grad.dtype], q.m.handle, q.v.handle,
                     q.prev.handle, q.norms.handle, q.rows, q.cols, q.rank,
                     BigInt(q.seed), counters.handle, flag.handle, sc.sP!.handle, sc.sR!.handle, sc.sChan!.handle,
                     sc.sBig?.handle ?? null, h, q.fused?.r.handle ?? null);
    }
    nat.galoreFinish(counters.handle, flag.handle);
  }

  /** Layer-wise step of p: a rank tensor scans only its own gradient into its own flag (the skip
   *  is per parameter) and steps on the round's copy of the counters, from which the device also
   *  reads the refresh index, so a round equals step() bit for bit. */
  protected stepParamImpl(g: ParamGroup<ApolloOptions>, gi: number, p: Parameter, k: number): void {
    if (!this.isRanked(g)) {
      const e = this.engine(g);
      e.ensureMoments([p]);
      e.runOne(p, k, adamHyper(g, AdamConvention.Galore), this.roundCounters(gi, p, e.counters));
      return;
    }
    const s = this.prepareRanked(g);
    let flag = this.paramFlags.get(p);
    if (!flag || flag.disposed) {
      flag = zeros([1], { dtype: "i32", device: s.device });
      this.paramFlags.set(p, flag);
    }
    this.stepRanked(g, s, [p], this.roundCounters(gi, p, s.counters), flag);
  }

  protected countersOf(g: ParamGroup<ApolloOptions>): Tensor | undefined {
    return this.isRanked(g) ? this.ranked.get(g)?.counters : this.engines.get(g)?.counters;
  }

  /** @internal state of a parameter (undefined before its first step). */
  stateOf(p: Parameter): { expAvg: Tensor; expAvgSq: Tensor; prevNorm?: Tensor; seed?: number; side?: "right" | "left" } | undefined {
    for (const s of this.ranked.values()) {
      const q = s.params.get(p);
      if (q) return { expAvg: q.m, expAvgSq: q.v, prevNorm: q.prev, seed: q.seed, side: q.layout.left ? "left" : "right" };
    }
    return engineMoments(this.engines.values(), p);
  }

  stateDict(): StateDict {
    const tensors: Record<string, Tensor> = {};
    const groupState: Record<string, unknown>[] = [];
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const c = this.countersOf(g);
      if (c) tensors[`group.${gi}.counters`] = c;
      const s = this.ranked.get(g);
      for (const p of g.params) {
        const st = this.stateOf(p);
        if (st) {
          tensors[`param.${i}.exp_avg`] = st.expAvg;
          tensors[`param.${i}.exp_avg_sq`] = st.expAvgSq;
          if (st.prevNorm) tensors[`param.${i}.prev_norm`] = st.prevNorm;
        }
        i++;
      }
      // The seeds fix the projections the moments live in.
      groupState.push(s ? { seeds: g.params.map((p) => s.params.get(p)!.seed) } : {});
    });
    return { ...this.stateDictBase(this.kind), tensors, groupState };
  }

  loadStateDict(sd: StateDict): void {
    this.checkStateDictBase(sd, this.kind);
    const known = new Set<string>();
    const want = (name: string, shape: readonly number[], dtype: string): Tensor | undefined => {
      known.add(name);
      const t = sd.tensors[name];
      if (t === undefined) return undefined;
      if (!(t instanceof Tensor) || t.disposed || t.dtype !== dtype || t.numel !== shape.reduce((a, b) => a * b, 1))
        fail("E_CHECKPOINT", `state tensor ${name} must be ${dtype} [${shape}]`);
      return t;
    };
    type Item = { p: Parameter; m: Tensor; v: Tensor; prev?: Tensor; seed?: number };
    const plan: { g: ParamGroup<ApolloOptions>; counters?: Tensor; items: Item[] }[] = [];
    let i = 0;
    const nat = native();
    this.paramGroups.forEach((g, gi) => {
      const counters = want(`group.${gi}.counters`, [2], "i32");
      const ranked = this.isRanked(g);
      const seeds = (sd.groupState?.[gi] as { seeds?: unknown } | undefined)?.seeds;
      const items: Item[] = [];
      g.params.forEach((p, k) => {
        let shapeR: number[] = [...p.shape];
        if (ranked) {
          const [rows, cols] = view2d(p.shape);
          const layout = nat.apolloScratch(rows, cols, g.rank as number) as Scratch;
          shapeR = layout.left ? [g.rank as number, cols] : [rows, g.rank as number];
        }
        const dt = ranked ? "f32" : (g.stateDtype as string);
        const m = want(`param.${i}.exp_avg`, shapeR, dt);
        const v = want(`param.${i}.exp_avg_sq`, shapeR, dt);
        const prev = ranked ? want(`param.${i}.prev_norm`, [1], "f32") : undefined;
        if (!m !== !v) fail("E_CHECKPOINT", `parameter ${i} has only one of its two moments`);
        if (m && !counters) fail("E_CHECKPOINT", `group ${gi} has moments but no step counters`);
        let seed: number | undefined;
        if (m && ranked) {
          if (!prev) fail("E_CHECKPOINT", `parameter ${i} lacks its limiter norm (prev_norm)`);
          seed = Array.isArray(seeds) ? (seeds[k] as number) : undefined;
          if (!Number.isSafeInteger(seed) || (seed as number) < 0) fail("E_CHECKPOINT", `parameter ${i} lacks its projection seed`);
        }
        if (m) items.push({ p, m, v: v!, prev, seed });
        i++;
      });
      if (counters && items.length !== g.params.length) fail("E_CHECKPOINT", `group ${gi} lacks state for some parameters`);
      plan.push({ g, counters, items });
    });
    for (const name of Object.keys(sd.tensors)) if (!known.has(name)) fail("E_CHECKPOINT", `unexpected state tensor ${name}`);
    for (const { g, counters, items } of plan) {
      if (this.isRanked(g)) {
        this.dropRanked(g);
        if (!counters) continue;
        // Seeds from the checkpoint: the moments live in their projections.
        const saved = g.paramSeeds;
        g.paramSeeds = items.map((it) => it.seed!);
        let s: RankGroupState;
        try {
          s = this.prepareRanked(g);
        } finally {
          g.paramSeeds = saved;
        }
        s.counters.copyFrom(counters);
        for (const it of items) {
          const q = s.params.get(it.p)!;
          q.m.copyFrom(it.m); q.v.copyFrom(it.v); q.prev.copyFrom(it.prev!);
        }
        if (saved !== undefined) g.paramSeeds = items.map((it) => it.seed!);
      } else {
        const old = this.engines.get(g);
        if (!counters) { old?.dispose(); this.engines.delete(g); continue; }
        const e = this.engine(g);
        e.prepare(g.params);
        e.counters.copyFrom(counters);
        for (const it of items) { e.expAvg.get(it.p)!.copyFrom(it.m); e.expAvgSq.get(it.p)!.copyFrom(it.v); }
      }
    }
  }

  private dropRanked(g: ParamGroup<ApolloOptions>): void {
    const old = this.ranked.get(g);
    if (!old) return;
    for (const q of old.params.values()) for (const t of [q.m, q.v, q.prev, q.norms, q.fused?.p, q.fused?.r]) t?.dispose();
    for (const t of [old.counters, old.flag]) t.dispose();
    this.ranked.delete(g);
  }

  protected stateTensors(): Tensor[] {
    const out: Tensor[] = [];
    for (const e of this.engines.values()) out.push(...e.tensors());
    for (const s of this.ranked.values()) {
      out.push(s.counters, s.flag);
      for (const q of s.params.values()) out.push(q.m, q.v, q.prev);
    }
    return out;
  }

  /** Bytes of workspace held between steps (not state): the largest P, R and channel scratch,
   *  each group's channel norms of G, plus one f32 gradient on CUDA when gradients are not f32. */
  scratchBytes(): number {
    let n = 0;
    for (const sc of this.scratch.values()) for (const t of [sc.sP, sc.sR, sc.sChan, sc.sBig]) if (t && !t.disposed) n += t.nbytes;
    for (const s of this.ranked.values())
      for (const q of s.params.values()) for (const t of [q.norms, q.fused?.p, q.fused?.r]) if (t && !t.disposed) n += t.nbytes;
    return n;
  }

  dispose(): void {
    for (const g of [...this.ranked.keys()]) this.dropRanked(g);
    for (const e of this.engines.values()) e.dispose();
    for (const sc of this.scratch.values()) for (const t of [sc.sP, sc.sR, sc.sChan, sc.sBig]) t?.dispose();
    for (const t of this.paramFlags.values()) t.dispose();
    this.engines.clear();
    this.scratch.clear();
    this.paramFlags.clear();
    super.dispose();
  }
}

/** APOLLO-Mini: APOLLO with rank 1, tensor scaling and scale 128 as defaults (state ~0 B/param).
 *  Every group is a rank group unless it says `rank: null` (plain Adam, for 1-D parameters). */
export class ApolloMini extends Apollo {
  constructor(params: Parameter[] | ParamGroupSpec<ApolloOptions>[], defaults: ApolloOptions = {}) {
    super(params, defaults, MINI_DEFAULTS);
  }

  protected get kind(): string {
    return "ApolloMini";
  }
}

