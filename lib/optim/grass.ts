// GrassAdamW (DESIGN §4, docs/grass.md): Adam on a structured sparse projection of each matrix.
// Every `updateProjGap` steps r lines (rows, or columns when the matrix is wider than tall) are
// selected from the current gradient; the step gathers those lines (scaled by rho), runs Adam on
// the r-line compact gradient and scatters the update back, all on the device in four launches
// per group (cuda/grass.cu; CPU backend csrc/cpu/grass.cc). This file holds no per-element work:
// it validates, allocates, keeps the schedule, and calls the native group.
import { Device } from "../device";
import { DTYPE_CODE } from "../dtype";
import { fail } from "../errors";
import { native, GrassGroupHandle, NativeBufferHandle } from "../native";
import { Parameter } from "../parameter";
import { Tensor, tensor, zeros } from "../tensor";
import { AdamConvention, AdamGroupEngine, engineMoments } from "./adam_core";
import { OneTensorPlans } from "./layerwise";
import { checkNumber, GroupOptions, Optimizer, ParamGroup, ParamGroupSpec, sameShape, StateDict } from "./optimizer";
import { allocQ8Moments, q8Blocks, q8MapHandles } from "./q8_states";

export type GrassSelectMode = "topk" | "multinomial" | "uniform";
const SELECT_CODE: Record<GrassSelectMode, number> = { topk: 0, multinomial: 1, uniform: 2 };

export interface GrassOptions extends GroupOptions {
  lr?: number;
  betas?: [number, number];
  /** Inside the square root's denominator, before bias correction (GaLore convention). */
  eps?: number;
  /** Decoupled decay of the lines a step updates: W[sigma] <- W[sigma](1 - lr·wd) after the update. */
  weightDecay?: number;
  /** Lines selected per matrix. A group without rank is plain Adam (GaLore convention). */
  rank?: number;
  /** Steps between selections (the first step selects). */
  updateProjGap?: number;
  select?: GrassSelectMode;
  /** alpha: the update of a projected matrix is multiplied by it. */
  scale?: number;
  /** On reselection, carry the moments of lines selected again (rescaled to the new rho). */
  keepState?: boolean;
  /** 32: f32 moments. 8: the moments of projected tensors are 8-bit codes as AdamW8bit's (blocks of
   *  256 in flattened compact order, signed dynamic map for m, unsigned for v, one f32 absmax per
   *  block and state): ~2.03 bytes per compact element instead of 8. Dense tensors (fewer than 2
   *  dims) and groups without rank keep f32 moments, as AdamW8bit keeps small tensors. Fixed
   *  after the first step. */
  stateBits?: number;
  /** Skip the whole group's step when what it reads holds NaN/Inf (default true). */
  skipNonFinite?: boolean;
  /** Key of the selection draws of parameters that have no seed of their own. */
  seed?: number;
}

const DEFAULTS: GrassOptions = {
  lr: 1e-3, betas: [0.9, 0.999], eps: 1e-6, weightDecay: 0, updateProjGap: 200, select: "topk", scale: 1,
  keepState: false, stateBits: 32, skipNonFinite: true, seed: 0,
};

/** How Grass sees a parameter: a matrix rows × cols (dim0 × rest) selected along `side`, or a
 *  dense tensor (fewer than 2 dims, or empty) that gets plain Adam. */
export interface GrassView {
  kind: "rows" | "cols" | "dense";
  rows: number;
  cols: number;
  rank: number;
  /** Lines along the selected side (rows for "rows", cols for "cols"). */
  lines: number;
  /** Elements per line. */
  lineLen: number;
}

const MODE_CODE = { rows: 0, cols: 1, dense: 2 } as const;

export function grassView(shape: readonly number[], rank: number): GrassView {
  const numel = shape.reduce((a, b) => a * b, 1);
  if (shape.length < 2 || numel === 0) return { kind: "dense", rows: 1, cols: numel, rank: 1, lines: 1, lineLen: numel };
  const m = shape[0], n = numel / m;
  return m >= n
    ? { kind: "rows", rows: m, cols: n, rank, lines: m, lineLen: n }
    : { kind: "cols", rows: m, cols: n, rank, lines: n, lineLen: m };
}

/** Shape of the compact gradient (and of the moments): r × n for rows, m × r for columns. */
function compactShapeOf(v: GrassView): number[] {
  if (v.kind === "rows") return [v.rank, v.cols];
  if (v.kind === "cols") return [v.rows, v.rank];
  return [v.cols];
}

interface ParamState {
  view: GrassView;
  /** f32 moments, or (quantized) u8 codes of the signed / unsigned map, compact-shaped. */
  expAvg: Tensor;
  expAvgSq: Tensor;
  /** 8-bit states: one f32 absmax per 256-block of m and of v. */
  absmaxM?: Tensor;
  absmaxV?: Tensor;
  indices?: Tensor;
  rho?: Tensor;
  ages: Tensor;
}

class GroupState {
  readonly counters: Tensor;
  readonly states = new Map<Parameter, ParamState>();
  handle?: GrassGroupHandle;
  handleKey: NativeBufferHandle[] = [];
  /** The seeds the native group was built with (group seed and parameter seeds). */
  seedKey = "";
  constructor(readonly device: Device) {
    this.counters = zeros([2], { dtype: "i32", device });
  }
  tensors(): Tensor[] {
    const out = [this.counters];
    for (const s of this.states.values()) {
      out.push(s.expAvg, s.expAvgSq, s.ages);
      if (s.absmaxM) out.push(s.absmaxM, s.absmaxV!);
      if (s.indices) out.push(s.indices);
      if (s.rho) out.push(s.rho);
    }
    return out;
  }
  dispose(): void {
    this.handle?.dispose();
    this.handle = undefined;
    for (const t of this.tensors()) t.dispose();
  }
}

function isGrassGroup(g: GrassOptions): boolean {
  return g.rank !== undefined && g.rank !== null;
}

/** Whether p's moments are 8-bit codes: projected tensors of a stateBits 8 group. */
function quantizedState(g: GrassOptions, v: GrassView): boolean {
  return g.stateBits === 8 && v.kind !== "dense";
}

function paramSeed(p: Parameter, groupSeed: number, flatIndex: number): bigint {
  if (p.seed !== undefined) return BigInt.asUintN(64, BigInt(p.seed));
  return BigInt.asUintN(64, BigInt(groupSeed) * 0x9e3779b97f4a7c15n + BigInt(flatIndex) + 1n);
}

/**
 * GrassAdamW: structured sparse projection (Muhamed et al., 2024). See docs/grass.md for the
 * choices this implementation makes and a training loop that computes only the selected rows of
 * each weight gradient.
 */
export class GrassAdamW extends Optimizer<GrassOptions> {
  private grass = new Map<ParamGroup<GrassOptions>, GroupState>();
  private engines = new Map<ParamGroup<GrassOptions>, AdamGroupEngine>();
  private compact = new Map<Parameter, Tensor>();
  /** Calls of step() so far (the refresh schedule counts these, skipped steps included). */
  private calls = 0;
  /** Refreshes made by each group so far (the key of the next refresh's draws). */
  private refreshes = new Map<ParamGroup<GrassOptions>, number>();
  /** Layer-wise steps: a one-tensor native group per parameter. */
  private singles = new OneTensorPlans<GrassGroupHandle>();

  constructor(params: Parameter[] | ParamGroupSpec<GrassOptions>[], defaults: GrassOptions = {}) {
    super(params, { ...DEFAULTS, ...defaults });
  }

  protected validateGroup(g: ParamGroup<GrassOptions>, gi: number): void {
    checkNumber(`group ${gi} lr`, g.lr, 0, Number.MAX_VALUE);
    if (!Array.isArray(g.betas) || g.betas.length !== 2) fail("E_ARG", `group ${gi} betas must be [beta1, beta2]`);
    checkNumber(`group ${gi} beta1`, g.betas[0], 0, 1, true);
    checkNumber(`group ${gi} beta2`, g.betas[1], 0, 1, true);
    checkNumber(`group ${gi} eps`, g.eps, 0, Number.MAX_VALUE);
    checkNumber(`group ${gi} weightDecay`, g.weightDecay, 0, Number.MAX_VALUE);
    if (!Number.isSafeInteger(g.seed) || (g.seed as number) < 0) fail("E_ARG", `group ${gi} seed must be a non-negative integer`);
    if (g.stateBits !== 32 && g.stateBits !== 8) fail("E_ARG", `group ${gi} stateBits must be 32 or 8, got ${String(g.stateBits)}`);
    if (!isGrassGroup(g)) return;
    if (!Number.isSafeInteger(g.rank) || (g.rank as number) < 1) fail("E_ARG", `group ${gi} rank must be a positive integer, got ${String(g.rank)}`);
    if (!Number.isSafeInteger(g.updateProjGap) || (g.updateProjGap as number) < 1)
      fail("E_ARG", `group ${gi} updateProjGap must be a positive integer, got ${String(g.updateProjGap)}`);
    if (typeof g.select !== "string" || !(g.select in SELECT_CODE))
      fail("E_ARG", `group ${gi} select must be "topk", "multinomial" or "uniform", got ${String(g.select)}`);
    checkNumber(`group ${gi} scale`, g.scale, 0, Number.MAX_VALUE);
    for (const p of g.params) {
      const v = grassView(p.shape, g.rank as number);
      if (v.kind === "dense") continue;
      if (v.lines > 2 ** 31 - 1) fail("E_SHAPE", `${p.name}: more than 2^31 - 1 ${v.kind} to select from`);
      if (v.rank > v.lines)
        fail("E_ARG", `group ${gi} rank ${v.rank} is larger than the selected side of ${p.name} ` +
          `([${p.shape.join(", ")}] selects ${v.kind}: ${v.lines})`);
      const st = this.grass?.get(g)?.states.get(p);
      if (st && st.view.rank !== v.rank) fail("E_ARG", `group ${gi} rank cannot change after the first step (${st.view.rank} -> ${v.rank})`);
      if (st && !!st.absmaxM !== quantizedState(g, v))
        fail("E_ARG", `group ${gi} stateBits cannot change after the first step (the states of ${p.name} are ${st.absmaxM ? 8 : 32}-bit)`);
    }
  }

  // ---- the compact-gradient path ----------------------------------------------------------------

  private locate(p: Parameter): { g: ParamGroup<GrassOptions>; gi: number; view: GrassView } {
    const gi = this.paramGroups.findIndex((g) => g.params.includes(p));
    if (gi < 0) fail("E_ARG", `${p instanceof Parameter ? p.name : String(p)} is not a parameter of this optimizer`);
    const g = this.paramGroups[gi];
    const view = isGrassGroup(g) ? grassView(p.shape, g.rank as number) : grassView([p.numel], 1);
    return { g, gi, view };
  }

  private projected(p: Parameter, what: string): { g: ParamGroup<GrassOptions>; view: GrassView } {
    const { g, view } = this.locate(p);
    if (!isGrassGroup(g) || view.kind === "dense")
      fail("E_ARG", `${what}: ${p.name} is not projected (it is in a group without rank, or has fewer than 2 dims)`);
    return { g, view };
  }

  /** Whether the next step() needs p's full gradient in p.grad: true at each refresh (the first
   *  step, then every updateProjGap steps) and always for parameters that are not projected. */
  needsFullGrad(p: Parameter): boolean {
    const { g, view } = this.locate(p);
    if (!isGrassGroup(g) || view.kind === "dense") return true;
    return this.calls % (g.updateProjGap as number) === 0;
  }

  /** Which selection is in effect for the next step: the number of refreshes p's group has made
   *  (0 before the first step). A compact gradient may name it to be refused if stale. */
  selectionEpoch(p: Parameter): number {
    const { g } = this.projected(p, "selectionEpoch");
    return this.refreshes.get(g) ?? 0;
  }

  /** Shape the compact gradient of p must have: [r, ...p.shape.slice(1)] when rows are selected
   *  (m >= n), [m, r] (m = p.shape[0]) when columns are. */
  compactShape(p: Parameter): number[] {
    const { view } = this.projected(p, "compactShape");
    return view.kind === "rows" ? [view.rank, ...p.shape.slice(1)] : [view.rows, view.rank];
  }

  /** The lines selected for the next step (sorted; a line drawn k times by multinomial selection
   *  appears k times), after the work enqueued so far. Rejects with E_ARG when the next step
   *  reselects (needsFullGrad) or before the first step. */
  selectedRows(p: Parameter): Promise<Int32Array> {
    try {
      const { g } = this.projected(p, "selectedRows");
      if (this.needsFullGrad(p))
        fail("E_ARG", `selectedRows: the next step of ${p.name} selects anew from its full gradient; ask after that step`);
      const st = this.grass.get(g)?.states.get(p);
      if (!st) fail("E_ARG", `selectedRows: ${p.name} has no selection yet`);
      return st.indices!.toTypedArray() as Promise<Int32Array>;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The selection of p as live tensors on p's device (indices i32 [r], rho f32 [r]), for a
   *  training loop whose own kernels read the indices without a host round trip. */
  selection(p: Parameter): { side: "rows" | "cols"; rank: number; lines: number; epoch: number; indices: Tensor; rho: Tensor } {
    const { g, view } = this.projected(p, "selection");
    const st = this.grass.get(g)?.states.get(p);
    if (!st) fail("E_ARG", `selection: ${p.name} has no selection before the first step`);
    return { side: view.kind as "rows" | "cols", rank: view.rank, lines: view.lines, epoch: this.refreshes.get(g) ?? 0,
             indices: st.indices!, rho: st.rho! };
  }

  /** Gives the next step() p's compact gradient (the unscaled lines G[sigma_j] in slot order, shape
   *  compactShape(p), p's dtype and device) in place of p.grad. Refused when the next step needs
   *  the full gradient, or when `epoch` is given and is not selectionEpoch(p) (a gradient computed
   *  for another selection). Used by the next step only. */
  setCompactGrad(p: Parameter, grad: Tensor, epoch?: number): void {
    const { g, view } = this.projected(p, "setCompactGrad");
    if (!(grad instanceof Tensor)) fail("E_ARG", `setCompactGrad: the compact gradient of ${p.name} is not a Tensor`);
    grad.assertLive(`compact gradient of ${p.name}`);
    this.checkCompact(p, view, grad);
    if (this.needsFullGrad(p))
      fail("E_ARG", `setCompactGrad: the next step of ${p.name} reselects its lines and needs the full gradient in p.grad`);
    const now = this.refreshes.get(g) ?? 0;
    if (epoch !== undefined && epoch !== now)
      fail("E_ARG", `setCompactGrad: the compact gradient of ${p.name} is for selection ${epoch}, the selection in effect is ${now}`);
    this.compact.set(p, grad);
  }

  private checkCompact(p: Parameter, view: GrassView, c: Tensor): void {
    if (c.device !== p.device) fail("E_DEVICE", `compact gradient of ${p.name} is on ${c.device}, the parameter on ${p.device}`);
    if (c.dtype !== p.dtype) fail("E_DTYPE", `compact gradient of ${p.name} is ${c.dtype}, the parameter ${p.dtype}`);
    const want = view.kind === "rows" ? [view.rank, ...p.shape.slice(1)] : [view.rows, view.rank];
    const flat = compactShapeOf(view);
    if (!sameShape(c.shape, want) && !sameShape(c.shape, flat))
      fail("E_SHAPE", `compact gradient of ${p.name} is [${c.shape.join(", ")}], expected [${want.join(", ")}]`);
  }

  // ---- step ---------------------------------------------------------------------------------------

  private validateStep(): void {
    this.paramGroups.forEach((g, gi) => {
      if (!Array.isArray(g.params) || g.params.length === 0) fail("E_ARG", `group ${gi} has no parameters`);
      this.validateGroup(g, gi);
      const dev = this.groupDevice(g);
      const refreshing = isGrassGroup(g) && this.calls % (g.updateProjGap as number) === 0;
      for (const p of g.params) {
        p.data.assertLive(`parameter ${p.name}`);
        if (p.device !== dev) fail("E_DEVICE", `${p.name}: parameter on ${p.device}, group on ${dev}`);
        const c = this.compact.get(p);
        if (c) {
          if (refreshing) fail("E_ARG", `${p.name} has a compact gradient but this step reselects (it needs the full gradient)`);
          c.assertLive(`compact gradient of ${p.name}`);
          this.checkCompact(p, grassView(p.shape, g.rank as number), c);
          continue;
        }
        const gr = p.grad;
        if (!(gr instanceof Tensor)) fail("E_ARG", `gradient of ${p.name} is not a Tensor`);
        gr.assertLive(`gradient of ${p.name}`);
        if (gr.device !== dev) fail("E_DEVICE", `${p.name}: gradient on ${gr.device}, group on ${dev}`);
        if (gr.dtype !== p.dtype) fail("E_DTYPE", `gradient of ${p.name} is ${gr.dtype}, the parameter ${p.dtype}`);
        if (gr.numel !== p.numel || gr.shape.length !== p.shape.length || gr.shape.some((s, i) => s !== p.shape[i]))
          fail("E_SHAPE", `gradient of ${p.name} is [${gr.shape.join(", ")}], the parameter [${p.shape.join(", ")}]`);
      }
    });
  }

  /** Allocates the state of parameters seen for the first time (moments 0, a placeholder
   *  selection of lines 0..r-1 with rho 1 that the first step replaces) and the native group.
   *  Throws before anything is enqueued; what it allocated is freed again on failure. */
  private prepareGrass(g: ParamGroup<GrassOptions>): GroupState {
    let st = this.grass.get(g);
    const createdGroup = !st;
    if (!st) st = new GroupState(this.groupDevice(g));
    const created: Parameter[] = [];
    try {
      for (const p of g.params) {
        if (st.states.has(p)) continue;
        const view = grassView(p.shape, g.rank as number);
        const dev = st.device;
        const s: Partial<ParamState> = { view };
        const made: Tensor[] = [];
        try {
          const shape = compactShapeOf(view);
          if (quantizedState(g, view)) {
            const q = allocQ8Moments(shape, dev, (t) => { made.push(t); return t; });
            Object.assign(s, { expAvg: q.m, expAvgSq: q.v, absmaxM: q.absmaxM, absmaxV: q.absmaxV });
          } else {
            made.push(s.expAvg = zeros(shape, { device: dev }));
            made.push(s.expAvgSq = zeros(shape, { device: dev }));
          }
          made.push(s.ages = zeros([view.rank], { dtype: "i32", device: dev }));
          if (view.kind !== "dense") {
            made.push(s.indices = tensor(Int32Array.from({ length: view.rank }, (_, i) => i), [view.rank], { device: dev }));
            made.push(s.rho = tensor(new Float32Array(view.rank).fill(1), [view.rank], { device: dev }));
          }
        } catch (e) {
          for (const t of made) t.dispose();
          throw e;
        }
        st.states.set(p, s as ParamState);
        created.push(p);
      }
      const key: NativeBufferHandle[] = [st.counters.handle];
      for (const p of g.params) {
        const s = st.states.get(p)!;
        key.push(p.data.handle, s.expAvg.handle, s.expAvgSq.handle, s.ages.handle);
        if (s.indices) key.push(s.indices.handle, s.rho!.handle);
        if (s.absmaxM) key.push(s.absmaxM.handle, s.absmaxV!.handle);
      }
      // Seeds follow the current options (a checkpoint load may restore the group's seed).
      let seedKey = String(g.seed);
      for (const p of g.params) seedKey += `,${p.seed ?? ""}`;
      if (!st.handle || seedKey !== st.seedKey || key.length !== st.handleKey.length || key.some((h, i) => h !== st!.handleKey[i])) {
        const entries = g.params.map((p) => this.grassEntry(g, st!, p));
        const h = new (native().GrassGroup)(st.device.index, entries, st.counters.handle, ...this.mapsOf(g));
        st.handle?.dispose();
        st.handle = h;
        st.handleKey = key;
        st.seedKey = seedKey;
      }
    } catch (e) {
      for (const p of created) {
        const s = st.states.get(p)!;
        for (const t of [s.expAvg, s.expAvgSq, s.ages, s.indices, s.rho, s.absmaxM, s.absmaxV]) t?.dispose();
        st.states.delete(p);
      }
      if (createdGroup) st.dispose();
      throw e;
    }
    this.grass.set(g, st);
    return st;
  }

  /** The native tensor entry of p (GrassGroup's constructor). */
  private grassEntry(g: ParamGroup<GrassOptions>, st: GroupState, p: Parameter): unknown[] {
    const s = st.states.get(p)!;
    const v = s.view;
    return [p.data.handle, s.expAvg.handle, s.expAvgSq.handle, s.indices?.handle ?? null, s.rho?.handle ?? null,
            s.ages.handle, v.rows, v.cols, v.rank, MODE_CODE[v.kind], DTYPE_CODE[p.dtype],
            paramSeed(p, g.seed as number, this.paramPosition(p)), s.absmaxM?.handle ?? null, s.absmaxV?.handle ?? null];
  }

  /** The maps of 8-bit states for the native group (none for a 32-bit group). */
  private mapsOf(g: ParamGroup<GrassOptions>): unknown[] {
    return g.stateBits === 8 ? q8MapHandles() : [];
  }

  private grassHyper(g: ParamGroup<GrassOptions>) {
    return {
      lr: g.lr, beta1: g.betas![0], beta2: g.betas![1], eps: g.eps!, weightDecay: g.weightDecay!, scale: g.scale!,
      skipNonFinite: g.skipNonFinite !== false, refreshing: this.calls % (g.updateProjGap as number) === 0,
      select: SELECT_CODE[g.select as GrassSelectMode], keepState: !!g.keepState, refreshIndex: this.refreshes.get(g) ?? 0,
    };
  }

  private plainHyper(g: ParamGroup<GrassOptions>) {
    return {
      lr: g.lr, beta1: g.betas![0], beta2: g.betas![1], eps: g.eps!, weightDecay: g.weightDecay!,
      convention: AdamConvention.Galore, stochasticRounding: false, skipNonFinite: g.skipNonFinite !== false, seed: 0n,
    };
  }

  protected validateStepInputs(): void {
    this.validateStep();
  }

  /** stepParam(p) reads p's compact gradient when one was given, else p.grad. */
  protected validateParamStep(g: ParamGroup<GrassOptions>, gi: number, p: Parameter): void {
    this.validateGroup(g, gi);
    const dev = this.groupDevice(g);
    p.data.assertLive(`parameter ${p.name}`);
    const c = this.compact.get(p);
    if (c) {
      if (isGrassGroup(g) && this.calls % (g.updateProjGap as number) === 0)
        fail("E_ARG", `${p.name} has a compact gradient but this step reselects (it needs the full gradient)`);
      c.assertLive(`compact gradient of ${p.name}`);
      this.checkCompact(p, grassView(p.shape, g.rank as number), c);
      return;
    }
    super.validateParamStep(g, gi, p);
    void dev;
  }

  /** Layer-wise step of p: a Grass group handle over p alone (its own refresh workspace, sized for
   *  p) on the round's copy of the counters; the selection's draws are keyed as in step() (the
   *  parameter's seed and the group's refresh index), so the result is the same. */
  protected stepParamImpl(g: ParamGroup<GrassOptions>, gi: number, p: Parameter, k: number): void {
    if (!isGrassGroup(g)) {
      const e = this.engine(g);
      e.ensureMoments([p]);
      e.runOne(p, k, this.plainHyper(g), this.roundCounters(gi, p, e.counters));
      return;
    }
    const st = this.prepareGrass(g);
    const s = st.states.get(p)!;
    const sub = this.roundCounters(gi, p, st.counters);
    const entry = this.grassEntry(g, st, p);
    const key = [...entry.slice(0, 6), String(entry[11]), entry[12], entry[13], sub.handle];
    const h = this.singles.get(p, key, () => new (native().GrassGroup)(st.device.index, [entry], sub.handle, ...this.mapsOf(g)));
    const c = this.compact.get(p);
    h.step(this.grassHyper(g), [c ? p.data.handle : p.grad.handle], [c?.handle ?? null]);
    this.compact.delete(p);
    void s;
  }

  protected finishRoundImpl(groups: ParamGroup<GrassOptions>[]): void {
    for (const g of groups)
      if (isGrassGroup(g) && this.calls % (g.updateProjGap as number) === 0) this.refreshes.set(g, (this.refreshes.get(g) ?? 0) + 1);
    this.calls++;
  }

  private engine(g: ParamGroup<GrassOptions>): AdamGroupEngine {
    let e = this.engines.get(g);
    if (!e) {
      e = new AdamGroupEngine(this.groupDevice(g), "f32");
      this.engines.set(g, e);
    }
    return e;
  }

  protected stepGroups(): void {
    this.validateStep();
    const ready = this.paramGroups.map((g) => {
      if (isGrassGroup(g)) return this.prepareGrass(g);
      const e = this.engine(g);
      e.prepare(g.params);
      return e;
    });
    const refreshed: ParamGroup<GrassOptions>[] = [];
    this.paramGroups.forEach((g, i) => {
      const r = ready[i];
      if (r instanceof AdamGroupEngine) {
        r.run(this.plainHyper(g));
        return;
      }
      const hyper = this.grassHyper(g);
      const grads = g.params.map((p) => (this.compact.has(p) ? p.data.handle : p.grad.handle));
      const compacts = g.params.map((p) => this.compact.get(p)?.handle ?? null);
      r.handle!.step(hyper, grads, compacts);
      if (hyper.refreshing) refreshed.push(g);
    });
    for (const g of refreshed) this.refreshes.set(g, (this.refreshes.get(g) ?? 0) + 1);
    this.compact.clear();
    this.calls++;
  }

  /** Calls of step() so far. */
  get stepCalls(): number {
    return this.calls;
  }

  // ---- counters --------------------------------------------------------------------------------------

  protected countersOf(g: ParamGroup<GrassOptions>): Tensor | undefined {
    return this.grass.get(g)?.counters ?? this.engines.get(g)?.counters;
  }


  /** @internal the state tensors of p (undefined before its first step) */
  stateOf(p: Parameter): { expAvg: Tensor; expAvgSq: Tensor; indices?: Tensor; rho?: Tensor; ages?: Tensor;
                           absmaxM?: Tensor; absmaxV?: Tensor } | undefined {
    for (const st of this.grass.values()) {
      const s = st.states.get(p);
      if (s) return { expAvg: s.expAvg, expAvgSq: s.expAvgSq, indices: s.indices, rho: s.rho, ages: s.ages,
                      absmaxM: s.absmaxM, absmaxV: s.absmaxV };
    }
    return engineMoments(this.engines.values(), p);
  }

  // ---- state dict ------------------------------------------------------------------------------------

  /** Tensors: group.<g>.counters (i32 [completed, skipped]); per projected parameter
   *  param.<i>.exp_avg / exp_avg_sq (compact shape, f32; with stateBits 8 u8 codes of
   *  quant.dynamicMap(true) / (false), with exp_avg_absmax / exp_avg_sq_absmax, f32, one per
   *  256-block, as AdamW8bit's), indices (i32 [r]), rho (f32 [r]), ages (i32 [r]); per dense parameter of a rank group exp_avg, exp_avg_sq, ages [1]; per parameter
   *  of a plain group exp_avg, exp_avg_sq. `groupState[g]` is { calls, refreshes }: the refresh
   *  schedule and the key of the next refresh's draws. */
  stateDict(): StateDict {
    const tensors: Record<string, Tensor> = {};
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const st = this.grass.get(g);
      const e = this.engines.get(g);
      if (st) tensors[`group.${gi}.counters`] = st.counters;
      if (e) tensors[`group.${gi}.counters`] = e.counters;
      for (const p of g.params) {
        const s = st?.states.get(p);
        if (s) {
          tensors[`param.${i}.exp_avg`] = s.expAvg;
          tensors[`param.${i}.exp_avg_sq`] = s.expAvgSq;
          tensors[`param.${i}.ages`] = s.ages;
          if (s.absmaxM) {
            tensors[`param.${i}.exp_avg_absmax`] = s.absmaxM;
            tensors[`param.${i}.exp_avg_sq_absmax`] = s.absmaxV!;
          }
          if (s.indices) tensors[`param.${i}.indices`] = s.indices;
          if (s.rho) tensors[`param.${i}.rho`] = s.rho;
        }
        const m = e?.expAvg.get(p);
        if (m) {
          tensors[`param.${i}.exp_avg`] = m;
          tensors[`param.${i}.exp_avg_sq`] = e!.expAvgSq.get(p)!;
        }
        i++;
      }
    });
    // The schedule position of each group travels as per-group state (not a tensor).
    const groupState = this.paramGroups.map((g) => ({ calls: this.calls, refreshes: this.refreshes.get(g) ?? 0 }));
    return { ...this.stateDictBase("GrassAdamW"), tensors, groupState };
  }

  /** Restores a state dict of a GrassAdamW with the same groups, shapes and ranks; validated whole
   *  before anything changes (E_CHECKPOINT). Selection indices are trusted to come from a
   *  GrassAdamW state dict (the kernels skip indices out of range, they never read past W). */
  loadStateDict(sd: StateDict): void {
    this.checkStateDictBase(sd, "GrassAdamW");
    const bad = (m: string): never => fail("E_CHECKPOINT", m);
    const known = new Set<string>();
    const want = (name: string, numel: number, dtype: string): Tensor | undefined => {
      known.add(name);
      const t = sd.tensors[name];
      if (t === undefined) return undefined;
      if (!(t instanceof Tensor) || t.disposed || t.dtype !== dtype || t.numel !== numel)
        bad(`state tensor ${name} must be ${dtype} with ${numel} elements`);
      return t;
    };
    type Item = { p: Parameter; src: Record<string, Tensor> };
    const plan: { g: ParamGroup<GrassOptions>; counters?: Tensor; items: Item[]; schedule: { calls: number; refreshes: number } }[] = [];
    let calls: number | undefined;
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const gs = sd.groupState;
      const sc = (Array.isArray(gs) ? gs[gi] : undefined) as { calls?: unknown; refreshes?: unknown } | undefined;
      if (!sc || !Number.isSafeInteger(sc.calls) || !Number.isSafeInteger(sc.refreshes) || (sc.calls as number) < 0 || (sc.refreshes as number) < 0)
        bad(`group ${gi} has no valid schedule { calls, refreshes }`);
      if (calls === undefined) calls = sc!.calls as number;
      else if (calls !== sc!.calls) bad(`groups disagree on the number of step calls`);
      const counters = want(`group.${gi}.counters`, 2, "i32");
      const items: Item[] = [];
      for (const p of g.params) {
        const src: Record<string, Tensor> = {};
        const grassGroup = isGrassGroup(g);
        const v = grassView(p.shape, grassGroup ? g.rank as number : 1);
        const moments = grassGroup ? compactShapeOf(v).reduce((a, b) => a * b, 1) : p.numel;
        const q = grassGroup && quantizedState(g, v);
        const names: [string, number, string][] = [["exp_avg", moments, q ? "u8" : "f32"], ["exp_avg_sq", moments, q ? "u8" : "f32"]];
        if (q) names.push(["exp_avg_absmax", q8Blocks(moments), "f32"], ["exp_avg_sq_absmax", q8Blocks(moments), "f32"]);
        if (grassGroup) names.push(["ages", v.rank, "i32"]);
        if (grassGroup && v.kind !== "dense") names.push(["indices", v.rank, "i32"], ["rho", v.rank, "f32"]);
        for (const [what, n, dt] of names) {
          const t = want(`param.${i}.${what}`, n, dt);
          if (t) src[what] = t;
        }
        const have = Object.keys(src).length;
        if (have !== 0 && have !== names.length) bad(`parameter ${i} has only some of its state tensors`);
        if (have && !counters) bad(`group ${gi} has state but no step counters`);
        if (have) items.push({ p, src });
        i++;
      }
      if (counters && items.length !== g.params.length) bad(`group ${gi} lacks state for some parameters`);
      plan.push({ g, counters, items, schedule: { calls: sc!.calls as number, refreshes: sc!.refreshes as number } });
    });
    for (const name of Object.keys(sd.tensors)) if (!known.has(name)) bad(`unexpected state tensor ${name}`);
    // Allocate first (a failure leaves everything as it was), then copy.
    const targets = plan.map(({ g, counters }) => {
      if (!counters) return undefined;
      if (isGrassGroup(g)) return this.prepareGrass(g);
      const e = this.engine(g);
      e.prepare(g.params);
      return e;
    });
    plan.forEach(({ g, counters, items, schedule }, k) => {
      this.refreshes.set(g, schedule.refreshes);
      const tgt = targets[k];
      if (!counters || !tgt) {
        this.grass.get(g)?.dispose();
        this.grass.delete(g);
        this.engines.get(g)?.dispose();
        this.engines.delete(g);
        return;
      }
      tgt.counters.copyFrom(counters);
      for (const { p, src } of items) {
        if (tgt instanceof AdamGroupEngine) {
          tgt.expAvg.get(p)!.copyFrom(src.exp_avg);
          tgt.expAvgSq.get(p)!.copyFrom(src.exp_avg_sq);
          continue;
        }
        const s = tgt.states.get(p)!;
        s.expAvg.copyFrom(src.exp_avg);
        s.expAvgSq.copyFrom(src.exp_avg_sq);
        s.ages.copyFrom(src.ages);
        if (s.absmaxM) {
          s.absmaxM.copyFrom(src.exp_avg_absmax);
          s.absmaxV!.copyFrom(src.exp_avg_sq_absmax);
        }
        if (s.indices) s.indices.copyFrom(src.indices);
        if (s.rho) s.rho.copyFrom(src.rho);
      }
    });
    this.calls = calls ?? 0;
    this.compact.clear();
  }

  /** Options a checkpoint must agree on: they fix the state's layout. */
  protected checkpointFixedOptions(): readonly string[] {
    return ["rank", "stateBits"];
  }

  protected stateTensors(): Tensor[] {
    const out: Tensor[] = [];
    for (const st of this.grass.values()) out.push(...st.tensors());
    for (const e of this.engines.values()) out.push(...e.tensors());
    return out;
  }

  /** Bytes of the native workspaces (refresh scratch sized for each group's largest matrix,
   *  per-slot step sizes, device tensor lists; the keepState staging once a group needs it). */
  workspaceBytes(): number {
    let n = 0;
    for (const st of this.grass.values()) n += st.handle?.workspaceBytes() ?? 0;
    return n;
  }

  /** Bytes held now: every state tensor plus workspaceBytes(). */
  stateBytes(): number {
    return super.stateBytes() + this.workspaceBytes();
  }

  dispose(): void {
    for (const st of this.grass.values()) st.dispose();
    this.grass.clear();
    for (const e of this.engines.values()) e.dispose();
    this.engines.clear();
    this.singles.dispose();
    this.compact.clear();
  }
}

// ---- helpers over the same kernels -------------------------------------------------------------------

export interface GrassSelectOptions {
  rank: number;
  select?: GrassSelectMode;
  seed?: number | bigint;
  /** Which refresh's draws (the second half of the generator's key). */
  refreshIndex?: number;
}

/** The selection a refresh would make from gradient `g` (viewed as dim0 × rest, lines along the
 *  larger side), computed by the optimizer's own kernels on g's device: sorted line indices and
 *  their rho. For tests and tools; a finite gradient is assumed. */
export async function grassSelect(g: Tensor, o: GrassSelectOptions): Promise<{ side: "rows" | "cols"; indices: Int32Array; rho: Float32Array }> {
  g.assertLive("gradient");
  if (g.dtype !== "f32" && g.dtype !== "bf16" && g.dtype !== "f16") fail("E_DTYPE", `grassSelect needs f32, bf16 or f16, not ${g.dtype}`);
  if (g.shape.length < 2 || g.numel === 0) fail("E_SHAPE", `grassSelect needs a non-empty tensor of 2 or more dims, got [${g.shape.join(", ")}]`);
  const select = o.select ?? "topk";
  if (!(select in SELECT_CODE)) fail("E_ARG", `select must be "topk", "multinomial" or "uniform", got ${String(select)}`);
  const v = grassView(g.shape, o.rank);
  if (!Number.isSafeInteger(o.rank) || o.rank < 1 || o.rank > v.lines)
    fail("E_ARG", `rank must be an integer in [1, ${v.lines}], got ${String(o.rank)}`);
  const refresh = o.refreshIndex ?? 0;
  if (!Number.isSafeInteger(refresh) || refresh < 0) fail("E_ARG", `refreshIndex must be a non-negative integer`);
  const seed = BigInt.asUintN(64, BigInt(o.seed ?? 0));
  const idx = zeros([o.rank], { dtype: "i32", device: g.device });
  const rho = zeros([o.rank], { device: g.device });
  try {
    native().grassSelect(g.handle, v.rows, v.cols, DTYPE_CODE[g.dtype], MODE_CODE[v.kind as "rows" | "cols"], o.rank,
                         SELECT_CODE[select], seed, refresh, idx.handle, rho.handle);
    const [a, b] = await Promise.all([idx.toTypedArray(), rho.toFloat32Array()]);
    return { side: v.kind as "rows" | "cols", indices: a as Int32Array, rho: b };
  } finally {
    idx.dispose();
    rho.dispose();
  }
}

/** A typed array's kind by its tag (arrays from another realm, such as the addon's, included). */
function arrayKind(x: unknown): string {
  return Object.prototype.toString.call(x).slice(8, -1);
}

function rowsOf(m: Tensor): [number, number] {
  if (m.shape.length < 1) fail("E_SHAPE", "a row operation needs a tensor of 1 or more dims");
  const rows = m.shape[0];
  return [rows, rows === 0 ? 0 : m.numel / rows];
}

/** Row indices for gatherRows/scatterRows: an Int32Array (checked, then copied to the device) or
 *  an i32 tensor on the device (trusted: entries out of range are skipped by the kernels). */
function indexTensor(rows: Int32Array | Tensor, limit: number, dev: Device, sorted: boolean): { t: Tensor; owned: boolean } {
  if (rows instanceof Tensor) {
    rows.assertLive("row indices");
    if (rows.dtype !== "i32" || rows.shape.length !== 1) fail("E_DTYPE", "row indices must be a 1-D i32 tensor");
    if (rows.device !== dev) fail("E_DEVICE", `row indices are on ${rows.device}, the matrix on ${dev}`);
    return { t: rows, owned: false };
  }
  if (arrayKind(rows) !== "Int32Array") fail("E_ARG", "row indices must be an Int32Array or an i32 tensor");
  for (let j = 0; j < rows.length; j++) {
    if (rows[j] < 0 || rows[j] >= limit) fail("E_ARG", `row index ${rows[j]} at ${j} is outside [0, ${limit})`);
    if (sorted && j > 0 && rows[j] < rows[j - 1]) fail("E_ARG", "scatterRows needs sorted row indices (duplicates adjacent)");
  }
  return { t: tensor(rows, [rows.length], { dtype: "i32", device: dev }), owned: true };
}

function scaleTensor(scale: Float32Array | Tensor | undefined, count: number, dev: Device): { t: Tensor | null; owned: boolean } {
  if (scale === undefined) return { t: null, owned: false };
  if (scale instanceof Tensor) {
    scale.assertLive("scale");
    if (scale.dtype !== "f32" || scale.numel !== count) fail("E_SHAPE", `scale must be f32 with ${count} elements`);
    if (scale.device !== dev) fail("E_DEVICE", `scale is on ${scale.device}, the matrix on ${dev}`);
    return { t: scale, owned: false };
  }
  if (arrayKind(scale) !== "Float32Array" || scale.length !== count) fail("E_SHAPE", `scale must be a Float32Array of ${count}`);
  return { t: tensor(scale, [count], { device: dev }), owned: true };
}

/** out[j] = scale[j] · src[rows[j]] (a plain copy without scale): the gather of a Grass step. */
export function gatherRows(src: Tensor, rows: Int32Array | Tensor, opts: { scale?: Float32Array | Tensor; out?: Tensor } = {}): Tensor {
  src.assertLive("source");
  const [m, n] = rowsOf(src);
  const idx = indexTensor(rows, m, src.device, false);
  const count = idx.t.numel;
  let sc: { t: Tensor | null; owned: boolean } = { t: null, owned: false };
  let out = opts.out;
  let outOwned = false;
  try {
    sc = scaleTensor(opts.scale, count, src.device);
    const shape = [count, ...src.shape.slice(1)];
    if (out) {
      out.assertLive("output");
      if (out.dtype !== src.dtype) fail("E_DTYPE", `output is ${out.dtype}, the source ${src.dtype}`);
      if (out.device !== src.device) fail("E_DEVICE", `output is on ${out.device}, the source on ${src.device}`);
      if (out.numel !== count * n) fail("E_SHAPE", `output must hold [${shape.join(", ")}]`);
    } else {
      out = zeros(shape, { dtype: src.dtype, device: src.device });
      outOwned = true;
    }
    native().grassGatherRows(out.handle, src.handle, m, n, DTYPE_CODE[src.dtype], idx.t.handle, count, sc.t?.handle ?? null);
    return out;
  } catch (e) {
    if (outOwned) out?.dispose();
    throw e;
  } finally {
    if (idx.owned) idx.t.dispose();
    if (sc.owned) sc.t?.dispose();
  }
}

/** The compact gradient of a selection: out = grad[sigma, :] (r × n) when rows are selected,
 *  grad[:, sigma] (m × r) when columns are (grad viewed as dim0 × rest), unscaled lines in slot
 *  order: what GrassAdamW.setCompactGrad takes. Exact copies; `indices` is an i32 tensor of r
 *  entries on grad's device (trusted: entries out of range leave their slot as it was). */
export function gatherCompact(grad: Tensor, sel: { side: "rows" | "cols"; indices: Tensor }, out: Tensor): void {
  if (!(grad instanceof Tensor) || !(out instanceof Tensor) || !(sel?.indices instanceof Tensor))
    fail("E_ARG", "gatherCompact(grad, { side, indices }, out)");
  grad.assertLive("gradient");
  out.assertLive("output");
  sel.indices.assertLive("indices");
  if (sel.side !== "rows" && sel.side !== "cols") fail("E_ARG", `side must be "rows" or "cols", got ${String(sel.side)}`);
  if (grad.shape.length < 2 || grad.numel === 0) fail("E_SHAPE", `gatherCompact needs a non-empty tensor of 2 or more dims`);
  if (sel.indices.dtype !== "i32" || sel.indices.shape.length !== 1) fail("E_DTYPE", "indices must be a 1-D i32 tensor");
  if (out.dtype !== grad.dtype) fail("E_DTYPE", `output is ${out.dtype}, the gradient ${grad.dtype}`);
  if (out.device !== grad.device || sel.indices.device !== grad.device) fail("E_DEVICE", "gatherCompact needs every tensor on one device");
  const m = grad.shape[0], n = grad.numel / m, r = sel.indices.numel;
  if (out.numel !== (sel.side === "rows" ? r * n : m * r)) fail("E_SHAPE", `output must hold ${sel.side === "rows" ? `${r} x ${n}` : `${m} x ${r}`}`);
  if (sel.side === "rows") native().grassGatherRows(out.handle, grad.handle, m, n, DTYPE_CODE[grad.dtype], sel.indices.handle, r, null);
  else native().grassGatherCols(out.handle, grad.handle, m, n, DTYPE_CODE[grad.dtype], sel.indices.handle, r);
}

/** dst[rows[j]] += alpha · scale[j] · src[j], rows sorted; the updates of a row drawn several times
 *  are summed in order (deterministic): the scatter of a Grass step. */
export function scatterRows(dst: Tensor, rows: Int32Array | Tensor, src: Tensor,
                            opts: { alpha?: number; scale?: Float32Array | Tensor } = {}): void {
  dst.assertLive("destination");
  src.assertLive("source");
  const [m, n] = rowsOf(dst);
  const alpha = opts.alpha ?? 1;
  if (typeof alpha !== "number" || !Number.isFinite(alpha)) fail("E_ARG", "alpha must be a finite number");
  if (src.dtype !== dst.dtype) fail("E_DTYPE", `source is ${src.dtype}, the destination ${dst.dtype}`);
  if (src.device !== dst.device) fail("E_DEVICE", `source is on ${src.device}, the destination on ${dst.device}`);
  const idx = indexTensor(rows, m, dst.device, true);
  let sc: { t: Tensor | null; owned: boolean } = { t: null, owned: false };
  try {
    const count = idx.t.numel;
    if (src.numel !== count * n) fail("E_SHAPE", `source must hold ${count} rows of ${n}`);
    sc = scaleTensor(opts.scale, count, dst.device);
    native().grassScatterRows(dst.handle, m, n, DTYPE_CODE[dst.dtype], idx.t.handle, count, src.handle, alpha, sc.t?.handle ?? null);
  } finally {
    if (idx.owned) idx.t.dispose();
    if (sc.owned) sc.t?.dispose();
  }
}
