// Adafactor (Shazeer & Stern 2018) with transformers.optimization.Adafactor's conventions (the math
// is in cuda/adafactor.cuh). Differences from HF, all deliberate:
//  - relativeStep defaults to false (then lr is required) and scaleParameter to false: HF defaults
//    both to true, and recommends false/false with an external lr and schedule, which is how
//    slimopt's schedules drive every optimizer. relativeStep: true gives HF's time-dependent step
//    (lr is then ignored and may be omitted).
//  - The step t of the bias/decay schedule (beta2t = 1 - t^decayRate, relative step) is the
//    group's count of completed steps + 1, kept on the device: a step skipped for non-finite
//    gradients (DESIGN §2) does not advance it. HF has no skip.
//  - Parameters and gradients of bf16/f16 are updated in f32 and rounded once, as HF does; states
//    are f32 always.
// State: per matrix (m x n, or batch x m x n for more dims) (m + n) * batch * 4 bytes, plus m*n*4
// with beta1; a 1-D tensor keeps a full f32 second moment (4 bytes per element).
import { Device } from "../device";
import { DTYPE_CODE } from "../dtype";
import { fail } from "../errors";
import { native, AdafactorStepArgs } from "../native";
import { Parameter } from "../parameter";
import { Tensor, zeros } from "../tensor";
import { checkNumber, GroupOptions, Optimizer, ParamGroup, ParamGroupSpec, StateDict } from "./optimizer";

export interface AdafactorOptions extends GroupOptions {
  /** External learning rate; required unless relativeStep. */
  lr?: number;
  /** [eps1 (added to g^2), eps2 (floor of the parameter RMS with scaleParameter)]. */
  eps?: [number, number];
  /** Update clipping: the update is divided by max(1, RMS(update) / clipThreshold). */
  clipThreshold?: number;
  /** beta2 at step t is 1 - t^decayRate. */
  decayRate?: number;
  /** First moment with this beta1 (null: none, the default). */
  beta1?: number | null;
  weightDecay?: number;
  /** Multiply the step by max(eps2, RMS(W)). */
  scaleParameter?: boolean;
  /** Time-dependent step min(1e-2, 1/sqrt(t)) instead of lr. */
  relativeStep?: boolean;
  /** With relativeStep: min(1e-6 t, 1/sqrt(t)). */
  warmupInit?: boolean;
  /** Skip the group's step when a gradient holds NaN/Inf (default true). */
  skipNonFinite?: boolean;
}

const DEFAULTS: AdafactorOptions = {
  eps: [1e-30, 1e-3], clipThreshold: 1.0, decayRate: -0.8, beta1: null, weightDecay: 0,
  scaleParameter: false, relativeStep: false, warmupInit: false, skipNonFinite: true,
};

/** How Adafactor views a tensor: factored over its last two dims (batch = the others), or 1-D. */
export interface AdafactorView { factored: boolean; batch: number; rows: number; cols: number }

export function adafactorView(shape: readonly number[]): AdafactorView {
  const numel = shape.reduce((a, b) => a * b, 1);
  if (shape.length < 2) return { factored: false, batch: 1, rows: 1, cols: numel };
  const rows = shape[shape.length - 2], cols = shape[shape.length - 1];
  return { factored: true, batch: rows * cols === 0 ? 0 : numel / (rows * cols), rows, cols };
}

/** One tensor's Adafactor state. */
export interface AdafactorState { view: AdafactorView; row?: Tensor; col?: Tensor; full?: Tensor; expAvg?: Tensor }

export function validateAdafactorOptions(g: AdafactorOptions, gi: number): void {
  if (!g.relativeStep) {
    if (g.lr === undefined || g.lr === null) fail("E_ARG", `group ${gi}: Adafactor needs lr unless relativeStep is true`);
    checkNumber(`group ${gi} lr`, g.lr, 0, Number.MAX_VALUE);
  } else if (g.lr !== undefined && g.lr !== null) {
    checkNumber(`group ${gi} lr`, g.lr, 0, Number.MAX_VALUE);
  }
  if (!Array.isArray(g.eps) || g.eps.length !== 2) fail("E_ARG", `group ${gi} eps must be [eps1, eps2]`);
  checkNumber(`group ${gi} eps1`, g.eps[0], 0, Number.MAX_VALUE);
  checkNumber(`group ${gi} eps2`, g.eps[1], 0, Number.MAX_VALUE);
  checkNumber(`group ${gi} clipThreshold`, g.clipThreshold, Number.MIN_VALUE, Number.MAX_VALUE);
  checkNumber(`group ${gi} decayRate`, g.decayRate, -Number.MAX_VALUE, 0, true);
  if (g.beta1 !== null && g.beta1 !== undefined) checkNumber(`group ${gi} beta1`, g.beta1, 0, 1, true);
  checkNumber(`group ${gi} weightDecay`, g.weightDecay, 0, Number.MAX_VALUE);
  if (g.warmupInit && !g.relativeStep) fail("E_ARG", `group ${gi}: warmupInit needs relativeStep`);
}

export function adafactorHyper(g: AdafactorOptions): AdafactorStepArgs {
  return {
    lr: g.lr ?? 0, eps1: g.eps![0], eps2: g.eps![1], clipThreshold: g.clipThreshold!, decayRate: g.decayRate!,
    beta1: g.beta1 ?? 0, weightDecay: g.weightDecay!, relativeStep: !!g.relativeStep, warmupInit: !!g.warmupInit,
    scaleParameter: !!g.scaleParameter,
  };
}

/** Allocates a tensor's state (zeros) for `view`; frees what it made on failure. */
export function allocAdafactorState(view: AdafactorView, numel: number, firstMoment: boolean, dev: Device): AdafactorState {
  const made: Tensor[] = [];
  const z = (n: number) => { const t = zeros([n], { device: dev }); made.push(t); return t; };
  try {
    const s: AdafactorState = { view };
    if (view.factored) { s.row = z(view.batch * view.rows); s.col = z(view.batch * view.cols); } else s.full = z(numel);
    if (firstMoment) s.expAvg = z(numel);
    return s;
  } catch (e) {
    for (const t of made) t.dispose();
    throw e;
  }
}

export function adafactorStateTensors(s: AdafactorState): Tensor[] {
  return [s.row, s.col, s.full, s.expAvg].filter((t): t is Tensor => t !== undefined);
}

/** Enqueues one Adafactor step of (W, G) viewed by s.view, on counters/flag. */
export function runAdafactor(w: Tensor, gr: Tensor, s: AdafactorState, h: AdafactorStepArgs, counters: Tensor, flag: Tensor,
                             scratch: Tensor | undefined): void {
  const v = s.view;
  native().adafactorStep(w.handle, gr.handle, DTYPE_CODE[w.dtype], v.factored, v.batch, v.rows, v.cols,
                         s.row?.handle ?? null, s.col?.handle ?? null, s.full?.handle ?? null, s.expAvg?.handle ?? null,
                         counters.handle, flag.handle, scratch?.handle ?? null, h);
}

/** flag = any NaN/Inf among the gradients of params (0 when the skip is off). */
export function scanInto(flag: Tensor, params: Parameter[], skip: boolean): void {
  const nat = native();
  if (skip) nat.galoreScan(flag.handle, params.map((p) => [p.grad.handle, DTYPE_CODE[p.grad.dtype], p.numel]));
  else nat.fillZero(flag.handle, 4);
}

export interface GroupState {
  device: Device;
  /** int32 [completed steps, skipped steps]. */
  counters: Tensor;
  /** int32 [1]: this step's gradients hold a NaN/Inf. */
  flag: Tensor;
  params: Map<Parameter, AdafactorState>;
}

const NAMES = { row: "exp_avg_sq_row", col: "exp_avg_sq_col", full: "exp_avg_sq", expAvg: "exp_avg" } as const;

export class Adafactor extends Optimizer<AdafactorOptions> {
  protected groups = new Map<ParamGroup<AdafactorOptions>, GroupState>();
  /** CUDA scratch of each device, sized for the largest tensor. */
  protected scratch = new Map<Device, Tensor>();
  /** Layer-wise steps: each parameter's own non-finite flag. */
  protected paramFlags = new Map<Parameter, Tensor>();

  constructor(params: Parameter[] | ParamGroupSpec<AdafactorOptions>[], defaults: AdafactorOptions = {}) {
    super(params, { ...DEFAULTS, ...defaults });
    for (const g of this.paramGroups) if (g.lr === undefined) (g as { lr: number }).lr = 0;
  }

  protected validateGroup(g: ParamGroup<AdafactorOptions>, gi: number): void {
    validateAdafactorOptions(g, gi);
    const st = this.groups?.get(g);
    if (st) for (const s of st.params.values()) if (!!s.expAvg !== (g.beta1 !== null && g.beta1 !== undefined))
      fail("E_ARG", `group ${gi}: beta1 cannot be turned on or off once the group has state`);
  }

  /** Allocates what the group lacks; throws before anything is enqueued. */
  protected prepare(g: ParamGroup<AdafactorOptions>, only?: Parameter): GroupState {
    const dev = this.groupDevice(g);
    let st = this.groups.get(g);
    const made: Tensor[] = [];
    const added: Parameter[] = [];
    try {
      if (!st) {
        const counters = zeros([2], { dtype: "i32", device: dev });
        made.push(counters);
        const flag = zeros([1], { dtype: "i32", device: dev });
        made.push(flag);
        st = { device: dev, counters, flag, params: new Map() };
      }
      const first = g.beta1 !== null && g.beta1 !== undefined;
      for (const p of only ? [only] : g.params) {
        if (st.params.has(p)) continue;
        const s = allocAdafactorState(adafactorView(p.shape), p.numel, first, dev);
        made.push(...adafactorStateTensors(s));
        st.params.set(p, s);
        added.push(p);
      }
      if (dev.kind === "cuda") {
        let need = 0;
        for (const s of st.params.values()) {
          const v = s.view;
          need = Math.max(need, native().adafactorScratchFloats(v.factored, v.batch, v.rows, v.cols));
        }
        const have = this.scratch.get(dev);
        if (!have || have.numel < need) {
          const t = zeros([need], { device: dev });
          made.push(t);
          have?.dispose();
          this.scratch.set(dev, t);
        }
      }
    } catch (e) {
      for (const t of made) t.dispose();
      for (const p of added) st!.params.delete(p);
      throw e;
    }
    this.groups.set(g, st);
    return st;
  }

  protected stepGroups(): void {
    this.validateAll();
    const ready = this.paramGroups.map((g) => this.prepare(g));
    this.paramGroups.forEach((g, i) => this.runGroup(g, ready[i]));
  }

  /** One step of a group: the non-finite scan, each tensor, the counters. */
  protected runGroup(g: ParamGroup<AdafactorOptions>, st: GroupState): void {
    const nat = native();
    scanInto(st.flag, g.params, g.skipNonFinite !== false);
    const h = adafactorHyper(g);
    for (const p of g.params) runAdafactor(p.data, p.grad, st.params.get(p)!, h, st.counters, st.flag, this.scratch.get(st.device));
    nat.galoreFinish(st.counters.handle, st.flag.handle);
  }

  /** p's own non-finite flag for a layer-wise step. */
  protected paramFlag(p: Parameter, dev: Device): Tensor {
    let flag = this.paramFlags.get(p);
    if (!flag || flag.disposed) {
      flag = zeros([1], { dtype: "i32", device: dev });
      this.paramFlags.set(p, flag);
    }
    return flag;
  }

  /** Layer-wise: p's gradient alone decides its skip (its own flag), on the round's counters. */
  protected stepParamImpl(g: ParamGroup<AdafactorOptions>, gi: number, p: Parameter): void {
    const st = this.prepare(g, p);
    const nat = native();
    const flag = this.paramFlag(p, st.device);
    const sub = this.roundCounters(gi, p, st.counters);
    scanInto(flag, [p], g.skipNonFinite !== false);
    runAdafactor(p.data, p.grad, st.params.get(p)!, adafactorHyper(g), sub, flag, this.scratch.get(st.device));
    nat.galoreFinish(sub.handle, flag.handle);
  }

  protected countersOf(g: ParamGroup<AdafactorOptions>): Tensor | undefined {
    return this.groups.get(g)?.counters;
  }

  /** @internal the state of p (undefined before its first step) */
  stateOf(p: Parameter): AdafactorState | undefined {
    for (const st of this.groups.values()) {
      const s = st.params.get(p);
      if (s) return s;
    }
    return undefined;
  }

  stateDict(): StateDict {
    const tensors: Record<string, Tensor> = {};
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const st = this.groups.get(g);
      if (st) tensors[`group.${gi}.counters`] = st.counters;
      for (const p of g.params) {
        const s = st?.params.get(p);
        if (s) for (const k of ["row", "col", "full", "expAvg"] as const) if (s[k]) tensors[`param.${i}.${NAMES[k]}`] = s[k]!;
        i++;
      }
    });
    return { ...this.stateDictBase("Adafactor"), tensors };
  }

  loadStateDict(sd: StateDict): void {
    this.checkStateDictBase(sd, "Adafactor");
    const known = new Set<string>();
    const want = (name: string, n: number, dtype: string): Tensor | undefined => {
      known.add(name);
      if (!Object.prototype.hasOwnProperty.call(sd.tensors, name)) return undefined;
      const t = sd.tensors[name];
      if (!(t instanceof Tensor) || t.disposed || t.dtype !== dtype || t.numel !== n)
        fail("E_CHECKPOINT", `state tensor ${name} must be ${dtype} of ${n} elements`);
      return t;
    };
    type Item = { p: Parameter; src: Partial<Record<"row" | "col" | "full" | "expAvg", Tensor>> };
    const plan: { g: ParamGroup<AdafactorOptions>; counters?: Tensor; items: Item[] }[] = [];
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const counters = want(`group.${gi}.counters`, 2, "i32");
      const first = g.beta1 !== null && g.beta1 !== undefined;
      const items: Item[] = [];
      for (const p of g.params) {
        const v = adafactorView(p.shape);
        const sizes = { row: v.factored ? v.batch * v.rows : 0, col: v.factored ? v.batch * v.cols : 0, full: v.factored ? 0 : p.numel, expAvg: first ? p.numel : 0 };
        const src: Item["src"] = {};
        let any = false, all = true;
        for (const k of ["row", "col", "full", "expAvg"] as const) {
          const name = `param.${i}.${NAMES[k]}`;
          if (sizes[k] === 0) continue;
          const t = want(name, sizes[k], "f32");
          if (t) { src[k] = t; any = true; } else all = false;
        }
        if (any && !all) fail("E_CHECKPOINT", `parameter ${i} has only part of its state`);
        if (any && !counters) fail("E_CHECKPOINT", `group ${gi} has state but no step counters`);
        if (any) items.push({ p, src });
        i++;
      }
      if (counters && items.length !== g.params.length) fail("E_CHECKPOINT", `group ${gi} lacks state for some parameters`);
      plan.push({ g, counters, items });
    });
    for (const name of Object.keys(sd.tensors)) if (!known.has(name)) fail("E_CHECKPOINT", `unexpected state tensor ${name}`);
    for (const { g, counters, items } of plan) {
      if (!counters) {
        const old = this.groups.get(g);
        if (old) { for (const s of old.params.values()) for (const t of adafactorStateTensors(s)) t.dispose(); old.counters.dispose(); old.flag.dispose(); }
        this.groups.delete(g);
        continue;
      }
      const st = this.prepare(g);
      st.counters.copyFrom(counters);
      for (const { p, src } of items) {
        const s = st.params.get(p)!;
        for (const k of ["row", "col", "full", "expAvg"] as const) if (src[k]) s[k]!.copyFrom(src[k]!);
      }
    }
  }

  protected stateTensors(): Tensor[] {
    const out: Tensor[] = [];
    for (const st of this.groups.values()) {
      out.push(st.counters, st.flag);
      for (const s of st.params.values()) out.push(...adafactorStateTensors(s));
    }
    return out;
  }

  dispose(): void {
    for (const t of this.stateTensors()) t.dispose();
    for (const t of this.scratch.values()) t.dispose();
    for (const t of this.paramFlags.values()) t.dispose();
    this.groups.clear();
    this.scratch.clear();
    this.paramFlags.clear();
  }
}
