import { loadTensorsChecked, saveTensors } from "../checkpoint";
import { Device, device as resolveDevice } from "../device";
import { fail, SlimoptError } from "../errors";
import { Parameter } from "../parameter";
import { DTYPE_CODE } from "../dtype";
import { native } from "../native";
import { Tensor, zeros } from "../tensor";
import { GradClipping, GradNormWorkspace } from "../clip";
import { Schedule } from "../schedule";
import { checkTensorNames, optimizerMetadata, parseOptimizerMetadata, planGroupOptions } from "./checkpoint_meta";

/** Options every group may carry; each optimizer adds its own. */
export interface GroupOptions {
  lr?: number;
  weightDecay?: number;
  [key: string]: unknown;
}

export type ParamGroupSpec<O extends GroupOptions> = Partial<O> & { params: Parameter[] };

/** A group as the optimizer holds it: its parameters and resolved options. `lr` (and the other
 *  options) may be changed between steps, by a schedule for instance. */
export type ParamGroup<O extends GroupOptions> = { params: Parameter[] } & Required<Pick<O, "lr">> & O;

export function checkNumber(name: string, x: unknown, lo: number, hi: number, hiOpen = false): number {
  if (typeof x !== "number" || !Number.isFinite(x) || x < lo || (hiOpen ? x >= hi : x > hi))
    fail("E_ARG", `${name} must be a number in [${lo}, ${hi}${hiOpen ? ")" : "]"}, got ${String(x)}`);
  return x;
}

/** An optimizer's whole state: named tensors (live references, not copies) plus JSON metadata.
 *  Tensor names are stable: `group.<g>.<what>` and `param.<i>.<what>` (i: flat parameter order). */
export interface StateDict {
  optimizer: string;
  /** Each group's options (without params), JSON-able. */
  groups: Record<string, unknown>[];
  /** Every parameter in flat order: name, shape, dtype, group index. */
  params: { name: string; shape: number[]; dtype: string; group: number }[];
  tensors: Record<string, Tensor>;
  /** Per-group state that is not a tensor (a schedule position, projector sides), JSON-able. */
  groupState?: Record<string, unknown>[];
}

export interface SaveOptions {
  /** Extra "__metadata__" entries (string values), stored beside slimopt's own. */
  metadata?: Record<string, string>;
}

export interface LoadOptions {
  /** Take each group's numeric and boolean options (lr, betas, eps, weightDecay, seed, ...) from
   *  the checkpoint, as torch's load_state_dict does (default true). With false the optimizer
   *  keeps its current values; the layout (same options, equal strings) is checked either way. */
  restoreOptions?: boolean;
}

/** Rewrites an E_CHECKPOINT refusal so that its message names the file. */
function inFile(e: unknown, file: string): unknown {
  if (!(e instanceof SlimoptError) || e.code !== "E_CHECKPOINT") return e;
  const msg = e.message.replace(/^E_CHECKPOINT: /, "");
  if (msg.startsWith(`${file}: `)) return e;
  return new SlimoptError("E_CHECKPOINT", `${file}: ${msg}`);
}

/** Group options as JSON (params left out), for state dicts and checkpoint metadata. */
export function groupOptionsJson(g: { params: Parameter[] }): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(g)) if (k !== "params") out[k] = v;
  return out;
}

/** Equal lists of dimensions (or of any integers). */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Norm workspaces of one device for setGradClipping: the update being summed, the previous
 *  update's (norm and factor), and one for perParameter clipping. */
interface ClipState {
  current: GradNormWorkspace; previous: GradNormWorkspace; scratch: GradNormWorkspace;
  /** The next sum of squares starts a new update. */
  fresh: boolean;
  hasPrevious: boolean;
}

const STEP_COUNT_KEY = "slimopt.step_count";

/** The update count a checkpoint carries (undefined for files written before it did). */
function stepCountOf(meta: Record<string, string>, file: string): number | undefined {
  const v = meta[STEP_COUNT_KEY];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) fail("E_CHECKPOINT", `${file}: bad ${STEP_COUNT_KEY} ${JSON.stringify(v)}`);
  return n;
}

/** Checks a parameter and its gradient (live, same device as the group, dtype, shape). */
function validateParamAndGrad(p: Parameter, dev: Device): void {
  const data = p.data, gr = p.grad;
  if (data.disposed) fail("E_DISPOSED", `parameter ${p.name} was disposed`);
  if (!(gr instanceof Tensor)) fail("E_ARG", `gradient of ${p.name} is not a Tensor`);
  if (gr.disposed) fail("E_DISPOSED", `gradient of ${p.name} was disposed`);
  if (data.device !== dev || gr.device !== dev)
    fail("E_DEVICE", `${p.name}: parameter on ${data.device}, gradient on ${gr.device}, group on ${dev}`);
  if (gr.dtype !== data.dtype) fail("E_DTYPE", `gradient of ${p.name} is ${gr.dtype}, the parameter ${data.dtype}`);
  if (gr.shape !== data.shape && !sameShape(gr.shape, data.shape))
    fail("E_SHAPE", `gradient of ${p.name} is [${gr.shape.join(", ")}], the parameter [${data.shape.join(", ")}]`);
}

/** Positions the optimizers built inside withParamPositions() take their parameters' positions from. */
let imposedPositions: ReadonlyMap<Parameter, number> | null = null;

/**
 * Builds optimizers whose parameters keep the flat positions they have in a larger optimizer
 * (DistributedOptimizer: a rank's shard of the whole model's optimizer). Whatever defaults to a
 * parameter's position (APOLLO's projection seed, Grass's selection seed) then comes out as in
 * the whole optimizer, so a sharded run steps exactly like one process.
 */
export function withParamPositions<T>(positions: ReadonlyMap<Parameter, number>, build: () => T): T {
  const outer = imposedPositions;
  imposedPositions = positions;
  try {
    return build();
  } finally {
    imposedPositions = outer;
  }
}

/** Shared machinery: groups, validation before anything runs, zeroGrad, state accounting. */
export abstract class Optimizer<O extends GroupOptions> {
  readonly paramGroups: ParamGroup<O>[];
  readonly defaults: O;
  /** Set when this optimizer was built inside withParamPositions() over all of its parameters. */
  private readonly imposedPositions: ReadonlyMap<Parameter, number> | null;

  constructor(paramsOrGroups: Parameter[] | ParamGroupSpec<O>[], defaults: O) {
    if (!Array.isArray(paramsOrGroups) || paramsOrGroups.length === 0)
      fail("E_ARG", "an optimizer needs a non-empty list of parameters or groups");
    const specs: ParamGroupSpec<O>[] = paramsOrGroups[0] instanceof Parameter
      ? [{ params: paramsOrGroups as Parameter[] } as ParamGroupSpec<O>]
      : (paramsOrGroups as ParamGroupSpec<O>[]);
    this.defaults = { ...defaults };
    const seen = new Set<Parameter>();
    this.paramGroups = specs.map((spec, gi) => {
      if (spec === null || typeof spec !== "object" || !Array.isArray(spec.params))
        fail("E_ARG", `group ${gi} must be { params: Parameter[], ...options }`);
      if (spec.params.length === 0) fail("E_ARG", `group ${gi} has no parameters`);
      for (const p of spec.params) {
        if (!(p instanceof Parameter)) fail("E_ARG", `group ${gi} holds something that is not a Parameter`);
        if (seen.has(p)) fail("E_ARG", `parameter ${p.name} appears twice`);
        seen.add(p);
        p.data.assertLive(`parameter ${p.name}`);
      }
      const dev = spec.params[0].device;
      for (const p of spec.params)
        if (p.device !== dev) fail("E_DEVICE", `group ${gi} mixes devices: ${p.name} is on ${p.device}, ${spec.params[0].name} on ${dev}`);
      const g = { ...this.defaults, ...spec, params: [...spec.params] } as ParamGroup<O>;
      this.validateGroup(g, gi);
      return g;
    });
    const imposed = imposedPositions;
    this.imposedPositions = imposed && this.paramGroups.every((g) => g.params.every((p) => imposed.has(p))) ? imposed : null;
  }

  /** p's position in flat parameter order (-1 if not here); inside withParamPositions(), its
   *  position in the larger optimizer. Seeds that default to a position derive from this. */
  protected paramPosition(p: Parameter): number {
    const imposed = this.imposedPositions?.get(p);
    if (imposed !== undefined) return imposed;
    let i = 0;
    for (const g of this.paramGroups) for (const q of g.params) { if (q === p) return i; i++; }
    return -1;
  }

  /** Throws E_ARG for options out of range. Called at construction and before every step. */
  protected abstract validateGroup(g: ParamGroup<O>, index: number): void;

  /** The group's device (all its parameters share it). */
  protected groupDevice(g: ParamGroup<O>): Device {
    return g.params[0].device;
  }

  /** Checks every parameter and gradient of every group; throws before anything is enqueued. */
  protected validateAll(): void {
    const groups = this.paramGroups;
    for (let gi = 0; gi < groups.length; gi++) {
      const g = groups[gi];
      const params = g.params;
      if (!Array.isArray(params) || params.length === 0) fail("E_ARG", `group ${gi} has no parameters`);
      this.validateGroup(g, gi);
      const dev = params[0].device;
      for (let k = 0; k < params.length; k++) validateParamAndGrad(params[k], dev);
    }
  }

  /** Validates what a step of the whole optimizer reads (default validateAll()); called before
   *  a step's gradient clipping so that a refused step changes nothing. */
  protected validateStepInputs(): void {
    this.validateAll();
  }

  /** Validates what stepParam(p) reads: the group's options, p and its gradient. */
  protected validateParamStep(g: ParamGroup<O>, gi: number, p: Parameter): void {
    this.validateGroup(g, gi);
    validateParamAndGrad(p, this.groupDevice(g));
  }

  /** One update of every group (the body of step()): one launch per group. */
  protected abstract stepGroups(): void;

  /** One update of parameter p alone (k: its index in group g), the same math as its share of
   *  stepGroups(), on the device counters that roundCounters() hands out. Optimizers that cannot
   *  step one parameter keep this default. */
  protected stepParamImpl(_g: ParamGroup<O>, _gi: number, _p: Parameter, _k: number): void {
    fail("E_ARG", `${this.constructor.name} does not support stepParam()`);
  }

  /** Closes a layer-wise round: host-side schedules (refresh counts) of the groups that stepped.
   *  The counters merge is done by the base class. */
  protected finishRoundImpl(_groups: ParamGroup<O>[]): void {
    /* nothing by default */
  }

  // ---- the training loop: step(), stepParam(), accumulation, schedules, clipping ---------------
  //
  // The step clock. Each group keeps int32 [completed, skipped] on its device (countersOf); the
  // bias-correction step t of an update is completed + 1. A "round" is one update of the
  // optimizer: step(), or stepParam() of every parameter (closed automatically when the last one
  // is stepped, or by endStep() when some parameters have no gradient this round). Within a round
  // every stepParam(p) reads the group's counters as they were when the round began: p's update
  // runs on a private copy of the counters, which the native step advances as usual, and the
  // round's close merges the copies into the group's counters by elementwise max. So an all-finite
  // round gives exactly step()'s result, bit for bit, and an all-non-finite round is skipped and
  // counted as step() does.
  //
  // The non-finite skip under stepParam is per parameter: the other gradients of the group may not
  // exist yet, so p is left untouched (parameter and states) when its own gradient holds NaN/Inf.
  // A round in which some parameters were skipped and others updated counts as both completed and
  // skipped (completedStepsPerGroup and skippedStepsPerGroup each +1): the clock advances for the
  // updated ones, and a skipped parameter's next update then uses a bias correction one step
  // ahead (slightly smaller steps, never larger).
  //
  // The host clock stepCount counts rounds that updated (skipped ones included: it is decided on
  // the host with no sync), and drives setSchedule() and the refresh cadence of projected methods.

  private paramIndex?: Map<Parameter, [number, number]>;
  private round?: { stepped: Set<Parameter>; updating: boolean; groups: Set<number>; lrs?: number[] };
  private accumulation = 1;
  private accumulateAverage = false;
  private microBatchIndex = 0;
  private updates = 0;
  private schedule?: { fn: Schedule; base: number[] };
  private clipping?: GradClipping;
  private clipWs = new Map<Device, ClipState>();
  private subCounters = new Map<Parameter, Tensor>();
  private roundSubs = new Map<number, Tensor[]>();

  /** Updates so far (rounds that applied an update, skipped ones included): the step a schedule
   *  sees is this count before the update (0 for the first). Saved in checkpoints. */
  get stepCount(): number {
    return this.updates;
  }

  /** Micro-batches seen in the current accumulation window (0 right after an update). */
  get microBatch(): number {
    return this.microBatchIndex;
  }

  /** True when the next step() / stepParam() round applies an update (the last micro-batch of an
   *  accumulation window; always true without accumulation). */
  get updatesNow(): boolean {
    return this.microBatchIndex === this.accumulation - 1;
  }

  /** Gradient accumulation over n micro-batches: the training loop adds each micro-batch's
   *  gradient into p.grad (its own kernel writing +=, or copyFrom of the running sum); step() and
   *  stepParam() of the first n-1 micro-batches only count, and the n-th applies the update to
   *  what p.grad holds: the SUM of the micro-batch gradients (divide the loss by n for the mean,
   *  as with torch), or the mean when `average` is true (the gradients are scaled by 1/n on the
   *  device first). zeroGrad() zeroes only at a window boundary (right after an update, or before
   *  the first micro-batch), so the usual step(); zeroGrad() loop keeps working. n = 1 turns it
   *  off. Refused (E_ARG) inside a window or a round. */
  accumulate(n: number, opts: { average?: boolean } = {}): void {
    if (!Number.isSafeInteger(n) || n < 1) fail("E_ARG", `accumulate(n): n must be a positive integer, got ${String(n)}`);
    if (this.round || this.microBatchIndex !== 0) fail("E_ARG", "accumulate() inside an accumulation window or a stepParam round");
    this.accumulation = n;
    this.accumulateAverage = !!opts?.average;
  }

  /** Sets each group's lr to (its lr now) x fn(stepCount) before every update; null removes the
   *  schedule (the groups keep their last lr). fn must return a finite number >= 0. */
  setSchedule(fn: Schedule | null): void {
    if (fn !== null && typeof fn !== "function") fail("E_ARG", "setSchedule needs a function of the step (or null)");
    if (this.round) fail("E_ARG", "setSchedule() inside a stepParam round");
    this.schedule = fn ? { fn, base: this.paramGroups.map((g) => g.lr as number) } : undefined;
  }

  /** Gradient clipping applied by step() and stepParam() to the gradient they update with (after
   *  accumulation). "perParameter": each gradient is scaled by min(1, maxNorm / (‖g_p‖ + 1e-6))
   *  from its own norm. "previousGlobal": every gradient is scaled by min(1, maxNorm / (N + 1e-6))
   *  where N is the global L2 norm of the previous update's (unclipped) gradients (the current
   *  one is unknown until the last layer's gradient exists); the first update is not clipped.
   *  The norm is a float sum in the order the parameters were stepped: stepParam in step()'s
   *  order (group by group, parameters in order) gives step()'s bits; another order agrees to
   *  f32 rounding. An optimizer whose groups span several devices clips each device's gradients
   *  by that device's norm (no cross-device reduction, no host sync).
   *  Both work the same under step() and stepParam(). For exact global clipping with step(), call
   *  clipGradNorm() before it instead. null turns clipping off. All on the device, no host sync. */
  setGradClipping(c: GradClipping | null): void {
    if (c === null) { this.clipping = undefined; return; }
    if (c === undefined || typeof c !== "object") fail("E_ARG", "setGradClipping({ maxNorm, mode }) or null");
    if (typeof c.maxNorm !== "number" || !(c.maxNorm > 0) || !Number.isFinite(c.maxNorm))
      fail("E_ARG", `maxNorm must be a positive finite number, got ${String(c.maxNorm)}`);
    if (c.mode !== "perParameter" && c.mode !== "previousGlobal")
      fail("E_ARG", `clipping mode must be "perParameter" or "previousGlobal", got ${String(c.mode)}`);
    if (this.round) fail("E_ARG", "setGradClipping() inside a stepParam round");
    this.clipping = { maxNorm: c.maxNorm, mode: c.mode };
  }

  /** "previousGlobal" clipping: the global gradient norm of the last update (0 before one). */
  async lastGradNorm(): Promise<number> {
    let sq = 0;
    for (const w of this.clipWs.values()) {
      if (!w.hasPrevious) continue;
      const n = await w.previous.norm();
      sq += n * n;
    }
    return Math.sqrt(sq);
  }

  /** One update (or, inside an accumulation window, one counted micro-batch). */
  step(): void {
    if (this.round) fail("E_ARG", "a stepParam() round is open: step its remaining parameters or call endStep() first");
    if (!this.updatesNow) {
      this.microBatchIndex++;
      return;
    }
    this.validateStepInputs();
    const lrs = this.scheduledLrs();
    const old = this.paramGroups.map((g) => g.lr);
    const all: Parameter[] = [];
    for (const g of this.paramGroups) for (const p of g.params) all.push(p);
    this.prepareGradients(all, true);
    if (lrs) this.paramGroups.forEach((g, gi) => { g.lr = lrs[gi]; });
    try {
      this.stepGroups();
    } catch (e) {
      this.paramGroups.forEach((g, gi) => { g.lr = old[gi]; });
      throw e;
    }
    this.finishClipping();
    this.updates++;
    this.microBatchIndex = 0;
  }

  /** Layer-wise update: updates parameter p alone as soon as its gradient is complete, so the
   *  training loop may free or reuse that gradient at once. Same math, step clock and schedule as
   *  step(): a round of stepParam over every parameter gives step()'s result bit for bit (see the
   *  step-clock notes above for the non-finite skip). Returns true when it applied an update
   *  (false inside an accumulation window). With zeroGrad: true, p.grad is zeroed after an update.
   *  Stepping a parameter twice in one round is refused (E_ARG); endStep() closes a round that
   *  leaves parameters out. Accumulation averaging and setGradClipping act on p.grad (a Grass
   *  compact gradient is used as given). */
  stepParam(p: Parameter, opts: { zeroGrad?: boolean } = {}): boolean {
    const where = this.indexOf(p);
    if (!where) fail("E_ARG", `stepParam: ${p instanceof Parameter ? p.name : String(p)} is not a parameter of this optimizer`);
    const [gi, k] = where;
    const g = this.paramGroups[gi];
    if (this.round?.stepped.has(p))
      fail("E_ARG", `stepParam: ${p.name} was already stepped in this round (call endStep() to close a round that leaves parameters out)`);
    const updating = this.round ? this.round.updating : this.updatesNow;
    let lrs: number[] | undefined;
    if (updating) {
      this.validateParamStep(g, gi, p);
      if (!this.round) lrs = this.scheduledLrs();
    }
    if (!this.round) {
      this.round = { stepped: new Set(), updating, groups: new Set() };
      if (lrs) this.paramGroups.forEach((q, i) => { q.lr = lrs![i]; });
    }
    const round = this.round;
    if (updating) {
      this.prepareGradients([p], round.stepped.size === 0);
      this.stepParamImpl(g, gi, p, k);
      round.groups.add(gi);
      if (opts?.zeroGrad) p.grad.zero();
    }
    round.stepped.add(p);
    if (round.stepped.size === this.indexOf(p, true)) this.endStep();
    return updating;
  }

  /** Closes the open stepParam() round (parameters not stepped in it are left as they are);
   *  nothing when no round is open. */
  endStep(): void {
    const round = this.round;
    if (!round) return;
    this.round = undefined;
    if (!round.updating) {
      this.microBatchIndex++;
      return;
    }
    const nat = native();
    for (const gi of round.groups) {
      const subs = this.roundSubs.get(gi);
      const c = this.countersOf(this.paramGroups[gi]);
      if (subs && subs.length && c) nat.countersMax(c.handle, subs.map((t) => t.handle));
    }
    this.roundSubs.clear();
    this.finishRoundImpl([...round.groups].sort((a, b) => a - b).map((gi) => this.paramGroups[gi]));
    this.finishClipping();
    this.updates++;
    this.microBatchIndex = 0;
  }

  /** @internal for stepParamImpl: p's private copy of the group's counters for this round (the
   *  group's counters copied in now; merged back when the round closes). */
  protected roundCounters(gi: number, p: Parameter, groupCounters: Tensor): Tensor {
    let sub = this.subCounters.get(p);
    if (!sub || sub.disposed || sub.device !== groupCounters.device) {
      sub = zeros([2], { dtype: "i32", device: groupCounters.device });
      this.subCounters.set(p, sub);
    }
    sub.copyFrom(groupCounters);
    const list = this.roundSubs.get(gi) ?? [];
    list.push(sub);
    this.roundSubs.set(gi, list);
    return sub;
  }

  private indexOf(p: Parameter): [number, number] | undefined;
  private indexOf(p: Parameter, count: true): number;
  private indexOf(p: Parameter, count?: true): [number, number] | undefined | number {
    // Rebuilt when a round opens (the groups' lists may have been edited since), cached within it.
    if (!this.paramIndex || !this.round || this.paramIndex.size !== this.countParams()) {
      const m = new Map<Parameter, [number, number]>();
      this.paramGroups.forEach((g, gi) => g.params.forEach((q, k) => m.set(q, [gi, k])));
      this.paramIndex = m;
    }
    if (count) return this.paramIndex.size;
    return this.paramIndex.get(p);
  }

  private countParams(): number {
    let n = 0;
    for (const g of this.paramGroups) n += g.params.length;
    return n;
  }

  /** The schedule's lr of each group for the next update (validated), or undefined. */
  private scheduledLrs(): number[] | undefined {
    const s = this.schedule;
    if (!s) return undefined;
    const f = s.fn(this.updates);
    if (typeof f !== "number" || !Number.isFinite(f) || f < 0)
      fail("E_ARG", `the schedule gave ${String(f)} at step ${this.updates}; it must be a finite number >= 0`);
    if (s.base.length !== this.paramGroups.length) fail("E_ARG", "the groups changed since setSchedule(); call it again");
    return s.base.map((b) => b * f);
  }

  /** Accumulation average and clipping of the gradients about to be used (first: the first
   *  parameters of an update). Enqueued on the device; nothing read back. */
  private prepareGradients(params: Parameter[], first: boolean): void {
    const nat = native();
    if (this.accumulateAverage && this.accumulation > 1)
      for (const p of params) nat.gradScale([[p.grad.handle, DTYPE_CODE[p.grad.dtype], p.numel]], null, 1 / this.accumulation);
    const c = this.clipping;
    if (!c) return;
    if (first) for (const w of this.clipWs.values()) w.fresh = true;
    for (const p of params) {
      const entry: [typeof p.grad.handle, number, number][] = [[p.grad.handle, DTYPE_CODE[p.grad.dtype], p.numel]];
      const w = this.clipWorkspace(p.device);
      if (c.mode === "perParameter") {
        nat.gradSumSquares(w.scratch.handle, entry, true);
        nat.gradNormFinish(w.scratch.handle, c.maxNorm);
        nat.gradScale(entry, w.scratch.handle, 1);
      } else {
        nat.gradSumSquares(w.current.handle, entry, w.fresh);
        w.fresh = false;
        if (w.hasPrevious) nat.gradScale(entry, w.previous.handle, 1);
      }
    }
  }

  private clipWorkspace(dev: Device): ClipState {
    let w = this.clipWs.get(dev);
    if (!w) {
      w = { current: new GradNormWorkspace(dev), previous: new GradNormWorkspace(dev), scratch: new GradNormWorkspace(dev), fresh: true, hasPrevious: false };
      this.clipWs.set(dev, w);
    }
    return w;
  }

  /** previousGlobal clipping: the finished update's norm becomes the next update's factor. */
  private finishClipping(): void {
    const c = this.clipping;
    if (!c || c.mode !== "previousGlobal") return;
    for (const w of this.clipWs.values()) {
      if (w.fresh) continue;  // no parameter of this device was stepped
      native().gradNormFinish(w.current.handle, c.maxNorm);
      const t = w.previous;
      w.previous = w.current;
      w.current = t;
      w.hasPrevious = true;
      w.fresh = true;
    }
  }

  /** Every state tensor the optimizer holds now (for stateBytes and disposal). */
  protected abstract stateTensors(): Tensor[];

  /** Zeroes every gradient (enqueued on each device). Under accumulate(n), only at a window
   *  boundary (inside a window it does nothing: the gradients are being summed). */
  zeroGrad(): void {
    if (this.microBatchIndex !== 0 || this.round) return;
    for (const g of this.paramGroups) for (const p of g.params) p.grad.zero();
  }

  /** The state as named tensors (live references) and metadata. */
  abstract stateDict(): StateDict;

  /** Restores a state dict: validated whole before anything changes (E_CHECKPOINT otherwise).
   *  It must copy the tensors it is given (load() frees them afterwards). */
  abstract loadStateDict(sd: StateDict): void;

  /** @internal metadata every state dict carries */
  protected stateDictBase(name: string): Omit<StateDict, "tensors"> {
    const params: StateDict["params"] = [];
    this.paramGroups.forEach((g, gi) => {
      for (const p of g.params) params.push({ name: p.name, shape: [...p.shape], dtype: p.dtype, group: gi });
    });
    return { optimizer: name, groups: this.paramGroups.map(groupOptionsJson), params };
  }

  /** @internal checks a state dict's metadata against this optimizer; throws E_CHECKPOINT */
  protected checkStateDictBase(sd: StateDict, name: string): void {
    const bad = (m: string): never => fail("E_CHECKPOINT", m);
    if (sd === null || typeof sd !== "object") bad("state dict is not an object");
    if (sd.optimizer !== name) bad(`state dict is for ${String(sd.optimizer)}, this optimizer is ${name}`);
    const mine = this.stateDictBase(name);
    if (!Array.isArray(sd.groups) || sd.groups.length !== mine.groups.length)
      bad(`state dict has ${sd.groups?.length} groups, this optimizer ${mine.groups.length}`);
    if (!Array.isArray(sd.params) || sd.params.length !== mine.params.length)
      bad(`state dict has ${sd.params?.length} parameters, this optimizer ${mine.params.length}`);
    mine.params.forEach((p, i) => {
      const q = sd.params[i];
      if (!q || q.group !== p.group || q.dtype !== p.dtype || !Array.isArray(q.shape) ||
          q.shape.length !== p.shape.length || q.shape.some((s, k) => s !== p.shape[k]))
        bad(`parameter ${i} (${p.name}): state dict has ${JSON.stringify(q)}, expected shape [${p.shape}] ${p.dtype} in group ${p.group}`);
    });
    if (sd.tensors === null || typeof sd.tensors !== "object") bad("state dict has no tensors");
  }

  /** Options, besides string-valued ones (which must always match), that fix the state's layout
   *  (a rank, say): a checkpoint must agree on them. Every other numeric or boolean group option
   *  is restored from the checkpoint by load(). Override to add yours. */
  protected checkpointFixedOptions(): readonly string[] {
    return [];
  }

  /** Writes the whole state (stateDict()) and its metadata to one safetensors file, atomically:
   *  a temporary file in the same directory, fsync, rename over `file`, fsync of the directory. A
   *  crash leaves the previous file whole. The state saved is the state at the call: the reads
   *  are enqueued before save() returns, so step() may be called at once. */
  async save(file: string, opts: SaveOptions = {}): Promise<void> {
    if (this.round) fail("E_ARG", "save() inside a stepParam() round: close it first (endStep())");
    const sd = this.stateDict();
    const { tensors, ...rest } = sd;
    return saveTensors(file, tensors, optimizerMetadata(rest, { [STEP_COUNT_KEY]: String(this.updates), ...opts?.metadata }));
  }

  /** Restores a checkpoint written by save(). Everything is checked before any state changes: the
   *  file's format, the optimizer, the groups and their option layout, parameter count, shapes and
   *  dtypes, every state tensor. A refusal is E_CHECKPOINT naming the problem, and leaves the
   *  optimizer exactly as it was. Group options are restored too (see LoadOptions). Parameters are
   *  matched by position; their names are stored for information only. */
  async load(file: string, opts: LoadOptions = {}): Promise<void> {
    const restore = opts?.restoreOptions !== false;
    const name = this.stateDict().optimizer;
    await loadTensorsChecked(file, resolveDevice("cpu"), (header) => {
      // Checks that need only the header, before the data is read.
      const meta = parseOptimizerMetadata(header.metadata, file);
      if (meta.optimizer !== name) fail("E_CHECKPOINT", `${file}: the checkpoint is for ${meta.optimizer}, this optimizer is ${name}`);
      this.checkCheckpointLayout(meta.groups, meta.params, header.tensors.map((t) => t.name), file, name, restore);
      stepCountOf(header.metadata, file);
    }, (tensors, header) => {
      // The data is staged on the host; this runs synchronously, so nothing steps in between.
      const meta = parseOptimizerMetadata(header.metadata, file);
      const plan = this.checkCheckpointLayout(meta.groups, meta.params, Object.keys(tensors), file, name, restore);
      try {
        this.loadStateDict({ optimizer: meta.optimizer, groups: meta.groups, params: meta.params, tensors, groupState: meta.groupState });
      } catch (e) {
        throw inFile(e, file);
      }
      if (plan) this.paramGroups.forEach((g, gi) => Object.assign(g, plan[gi]));
      const n = stepCountOf(header.metadata, file);
      if (n !== undefined) this.updates = n;
      this.round = undefined;
      this.microBatchIndex = 0;
    });
  }

  /** @internal checks groups, options and parameters of a checkpoint against this optimizer;
   *  returns the option values to restore (undefined when not restoring). Throws E_CHECKPOINT. */
  private checkCheckpointLayout(groups: Record<string, unknown>[], params: StateDict["params"], names: string[],
                                file: string, name: string, restore: boolean): Record<string, unknown>[] | undefined {
    try {
      this.checkStateDictBase({ optimizer: name, groups, params, tensors: {} }, name);
    } catch (e) {
      throw inFile(e, file);
    }
    checkTensorNames(names, this.paramGroups.length, params.length, file);
    const plan = planGroupOptions(this.paramGroups.map(groupOptionsJson), groups, this.checkpointFixedOptions(), file);
    if (!restore) return undefined;
    // The restored options must be valid for this optimizer.
    plan.forEach((vals, gi) => {
      const candidate = { ...this.paramGroups[gi], ...vals } as ParamGroup<O>;
      try {
        this.validateGroup(candidate, gi);
      } catch (e) {
        if (e instanceof SlimoptError) fail("E_CHECKPOINT", `${file}: group ${gi}: the checkpoint's options are invalid: ${e.message}`);
        throw e;
      }
    });
    return plan;
  }

  /** A group's on-device counters (int32 [completed steps, skipped steps]), or undefined before
   *  its first step. */
  protected abstract countersOf(g: ParamGroup<O>): Tensor | undefined;

  /** Steps skipped because of non-finite gradients (the largest count over the groups). */
  async skippedSteps(): Promise<number> {
    const per = await this.skippedStepsPerGroup();
    return per.length ? Math.max(...per) : 0;
  }

  /** Skipped steps of each group. */
  skippedStepsPerGroup(): Promise<number[]> {
    return this.readCounters(1);
  }

  /** Completed (not skipped) steps of each group. */
  completedStepsPerGroup(): Promise<number[]> {
    return this.readCounters(0);
  }

  private readCounters(slot: number): Promise<number[]> {
    return Promise.all(this.paramGroups.map(async (g) => {
      const c = this.countersOf(g);
      return c ? ((await c.toTypedArray()) as Int32Array)[slot] : 0;
    }));
  }

  /** Bytes of optimizer state held now, all devices. */
  stateBytes(): number {
    let n = 0;
    for (const t of this.stateTensors()) if (!t.disposed) n += t.nbytes;
    return n;
  }

  /** Number of parameters under this optimizer. */
  numParams(): number {
    let n = 0;
    for (const g of this.paramGroups) for (const p of g.params) n += p.numel;
    return n;
  }

  /** Frees every state tensor; the optimizer cannot step afterwards. */
  dispose(): void {
    for (const t of this.stateTensors()) t.dispose();
  }
}
