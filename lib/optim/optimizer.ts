import { loadTensorsChecked, saveTensors } from "../checkpoint";
import { Device, device as resolveDevice } from "../device";
import { fail, SlimoptError } from "../errors";
import { Parameter } from "../parameter";
import { Tensor } from "../tensor";
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

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Shared machinery: groups, validation before anything runs, zeroGrad, state accounting. */
export abstract class Optimizer<O extends GroupOptions> {
  readonly paramGroups: ParamGroup<O>[];
  readonly defaults: O;

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
      for (let k = 0; k < params.length; k++) {
        const p = params[k];
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
    }
  }

  abstract step(): void;

  /** Every state tensor the optimizer holds now (for stateBytes and disposal). */
  protected abstract stateTensors(): Tensor[];

  /** Zeroes every gradient (enqueued on each device). */
  zeroGrad(): void {
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
    const sd = this.stateDict();
    const { tensors, ...rest } = sd;
    return saveTensors(file, tensors, optimizerMetadata(rest, opts?.metadata));
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
