// AdamW8bit and AdamW4bit (DESIGN §4): torch AdamW semantics with m and v stored as blockwise
// codes (8 bits: blocks of 256, bitsandbytes' signed / unsigned dynamic maps; 4 bits: two codes
// per byte, blocks of 128, the 4-bit signed dynamic map for m and the linear map 1/16 .. 1 for v),
// one f32 absmax per block and state. Tensors under minSize8bit elements keep f32 states and run
// through the same fused kernel, so a group is one launch and one non-finite decision per step.
import { Device } from "../device";
import { fail } from "../errors";
import { native, NativeBufferHandle, QAdamGroupHandle } from "../native";
import { OneTensorPlans } from "./layerwise";
import { DTYPE_CODE } from "../dtype";
import { Parameter } from "../parameter";
import { builtinMap, BuiltinMap, mapHandle, zeroCode } from "../quant";
import { Tensor, zeros } from "../tensor";
import { checkNumber, GroupOptions, Optimizer, ParamGroup, ParamGroupSpec, StateDict } from "./optimizer";

export interface AdamW8bitOptions extends GroupOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /** Tensors with fewer elements keep f32 states (default 4096). Read when a parameter's state is
   *  first allocated. */
  minSize8bit?: number;
  /** bf16 parameters: round the updated value stochastically instead of to nearest. */
  stochasticRounding?: boolean;
  /** Skip the whole group's step when a gradient holds NaN/Inf (default true). */
  skipNonFinite?: boolean;
  /** Key of the stochastic-rounding stream. */
  seed?: number;
}
export type AdamW4bitOptions = AdamW8bitOptions;

const DEFAULTS: Required<AdamW8bitOptions> = {
  lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, minSize8bit: 4096,
  stochasticRounding: false, skipNonFinite: true, seed: 0,
};

function validate(g: AdamW8bitOptions, gi: number): void {
  checkNumber(`group ${gi} lr`, g.lr, 0, Number.MAX_VALUE);
  if (!Array.isArray(g.betas) || g.betas.length !== 2) fail("E_ARG", `group ${gi} betas must be [beta1, beta2]`);
  checkNumber(`group ${gi} beta1`, g.betas[0], 0, 1, true);
  checkNumber(`group ${gi} beta2`, g.betas[1], 0, 1, true);
  checkNumber(`group ${gi} eps`, g.eps, 0, Number.MAX_VALUE);
  checkNumber(`group ${gi} weightDecay`, g.weightDecay, 0, Number.MAX_VALUE);
  if (!Number.isSafeInteger(g.minSize8bit) || (g.minSize8bit as number) < 0)
    fail("E_ARG", `group ${gi} minSize8bit must be a non-negative integer`);
  if (!Number.isSafeInteger(g.seed) || (g.seed as number) < 0) fail("E_ARG", `group ${gi} seed must be a non-negative integer`);
}

/** The states of one parameter: codes + absmax (quantized), or f32 m and v. */
interface QState {
  quantized: boolean;
  m: Tensor;
  v: Tensor;
  absmaxM?: Tensor;
  absmaxV?: Tensor;
}

interface Layout {
  bits: 8 | 4;
  block: number;
  mapA: BuiltinMap;
  mapB: BuiltinMap;
}

const LAYOUTS: Record<8 | 4, Layout> = {
  8: { bits: 8, block: 256, mapA: "signed8", mapB: "unsigned8" },
  4: { bits: 4, block: 128, mapA: "signed4", mapB: "linear4" },
};

function qadamHyper(g: ParamGroup<AdamW8bitOptions>) {
  return {
    lr: g.lr, beta1: g.betas![0], beta2: g.betas![1], eps: g.eps!, weightDecay: g.weightDecay!,
    stochasticRounding: !!g.stochasticRounding, skipNonFinite: g.skipNonFinite !== false, seed: BigInt(g.seed ?? 0),
  };
}

/** One group's states, on-device counters and native tensor list (rebuilt only when a tensor of
 *  the group changes). */
class QAdamEngine {
  readonly device: Device;
  readonly layout: Layout;
  /** int32 [completed steps, skipped steps], kept on the device. */
  readonly counters: Tensor;
  readonly states = new Map<Parameter, QState>();
  private plan?: QAdamGroupHandle;
  private planKey: NativeBufferHandle[] = [];
  private single = new OneTensorPlans<QAdamGroupHandle>();

  constructor(dev: Device, layout: Layout) {
    this.device = dev;
    this.layout = layout;
    this.counters = zeros([2], { dtype: "i32", device: dev });
  }

  /** The byte every code tensor starts as: the code of 0 (two of them per byte for 4 bits). */
  private fillByte(map: BuiltinMap): number {
    const c = zeroCode(builtinMap(map));
    return this.layout.bits === 8 ? c : c | (c << 4);
  }

  private allocate(p: Parameter, quantized: boolean, made: Tensor[]): QState {
    const dev = this.device;
    const keep = (t: Tensor) => { made.push(t); return t; };
    if (!quantized) {
      return { quantized, m: keep(zeros(p.shape, { device: dev })), v: keep(zeros(p.shape, { device: dev })) };
    }
    const { bits, block, mapA, mapB } = this.layout;
    const codeShape = bits === 8 ? p.shape : [Math.ceil(p.numel / 2)];
    const blocks = Math.ceil(p.numel / block);
    const m = keep(Tensor.empty(codeShape, "u8", dev));
    const v = keep(Tensor.empty(codeShape, "u8", dev));
    native().fillBytes(m.handle, this.fillByte(mapA), m.nbytes);
    native().fillBytes(v.handle, this.fillByte(mapB), v.nbytes);
    return { quantized, m, v, absmaxM: keep(zeros([blocks], { device: dev })), absmaxV: keep(zeros([blocks], { device: dev })) };
  }

  /** Allocates states for new parameters and rebuilds the tensor list if a tensor of the group
   *  changed. Allocation failures throw before anything is enqueued, leaving no half state. */
  prepare(params: Parameter[], minSize: number): void {
    this.ensureStates(params, minSize);
    const key: NativeBufferHandle[] = [];
    for (const p of params) {
      const s = this.states.get(p)!;
      key.push(p.data.handle, p.grad.handle, s.m.handle, s.v.handle);
    }
    if (this.plan && key.length === this.planKey.length && key.every((h, i) => h === this.planKey[i])) return;
    const entries = params.map((p) => this.entry(p));
    const plan = new (native().QAdamGroup)(this.device.index, this.layout.bits, entries, this.counters.handle,
                                           mapHandle(this.layout.mapA), mapHandle(this.layout.mapB));
    this.plan?.dispose();
    this.plan = plan;
    this.planKey = key;
  }

  private entry(p: Parameter): unknown[] {
    const s = this.states.get(p)!;
    return [p.data.handle, p.grad.handle, s.m.handle, s.v.handle, s.absmaxM?.handle ?? null, s.absmaxV?.handle ?? null,
            p.numel, DTYPE_CODE[p.dtype], s.quantized];
  }

  /** Layer-wise: the update of p alone (k: its index in the group) on `counters`; one launch. */
  runOne(p: Parameter, k: number, minSize: number, g: ParamGroup<AdamW8bitOptions>, counters: Tensor): void {
    this.ensureStates([p], minSize);
    const plan = this.single.get(p, [p.data.handle, p.grad.handle, counters.handle], () =>
      new (native().QAdamGroup)(this.device.index, this.layout.bits, [[...this.entry(p), k]], counters.handle,
                                mapHandle(this.layout.mapA), mapHandle(this.layout.mapB)));
    plan.step(qadamHyper(g));
  }

  /** Allocates states for parameters that have none; on failure frees what it made. */
  ensureStates(params: Parameter[], minSize: number): void {
    const made: Tensor[] = [];
    const added: Parameter[] = [];
    try {
      for (const p of params) {
        if (!this.states.has(p)) {
          this.states.set(p, this.allocate(p, p.numel >= minSize, made));
          added.push(p);
        }
      }
    } catch (e) {
      for (const t of made) t.dispose();
      for (const p of added) this.states.delete(p);
      throw e;
    }
  }

  run(g: ParamGroup<AdamW8bitOptions>): void {
    this.plan!.step(qadamHyper(g));
  }

  tensors(): Tensor[] {
    const out = [this.counters];
    for (const s of this.states.values()) {
      out.push(s.m, s.v);
      if (s.absmaxM) out.push(s.absmaxM, s.absmaxV!);
    }
    return out;
  }

  dispose(): void {
    this.plan?.dispose();
    this.plan = undefined;
    this.single.dispose();
    for (const t of this.tensors()) t.dispose();
  }
}

/** The shared implementation of AdamW8bit and AdamW4bit. */
abstract class QuantizedAdamW extends Optimizer<AdamW8bitOptions> {
  protected abstract readonly name: string;
  protected abstract readonly layout: Layout;
  private engines = new Map<ParamGroup<AdamW8bitOptions>, QAdamEngine>();

  constructor(params: Parameter[] | ParamGroupSpec<AdamW8bitOptions>[], defaults: AdamW8bitOptions = {}) {
    super(params, { ...DEFAULTS, ...defaults });
  }

  protected validateGroup(g: ParamGroup<AdamW8bitOptions>, gi: number): void {
    validate(g, gi);
  }

  /** minSize8bit decides which tensors hold codes: a checkpoint must agree on it. */
  protected checkpointFixedOptions(): readonly string[] {
    return ["minSize8bit"];
  }

  private engine(g: ParamGroup<AdamW8bitOptions>): QAdamEngine {
    let e = this.engines.get(g);
    if (!e) {
      e = new QAdamEngine(this.groupDevice(g), this.layout);
      this.engines.set(g, e);
    }
    return e;
  }

  protected stepGroups(): void {
    this.validateAll();
    // Allocate everything first so that an E_OOM leaves every group untouched.
    const ready = this.paramGroups.map((g) => {
      const e = this.engine(g);
      e.prepare(g.params, g.minSize8bit!);
      return e;
    });
    this.paramGroups.forEach((g, i) => ready[i].run(g));
  }

  protected stepParamImpl(g: ParamGroup<AdamW8bitOptions>, gi: number, p: Parameter, k: number): void {
    const e = this.engine(g);
    e.ensureStates([p], g.minSize8bit!);
    e.runOne(p, k, g.minSize8bit!, g, this.roundCounters(gi, p, e.counters));
  }

  protected countersOf(g: ParamGroup<AdamW8bitOptions>): Tensor | undefined {
    return this.engines.get(g)?.counters;
  }

  /** @internal the states of a parameter (undefined before its first step): codes and absmax, or
   *  f32 m and v for a tensor under minSize8bit. */
  stateOf(p: Parameter): QState | undefined {
    for (const e of this.engines.values()) {
      const s = e.states.get(p);
      if (s) return s;
    }
    return undefined;
  }

  /** Tensors: `group.<g>.counters`; per parameter `param.<i>.exp_avg` and `.exp_avg_sq` (u8 codes,
   *  the parameter's shape for 8 bits, ceil(n/2) bytes for 4), with `.exp_avg_absmax` and
   *  `.exp_avg_sq_absmax` (f32, one per block); or f32 `exp_avg` / `exp_avg_sq` for tensors under
   *  minSize8bit. The codes index the built-in maps (quant.dynamicMap / quant.linearMap). */
  stateDict(): StateDict {
    const tensors: Record<string, Tensor> = {};
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const e = this.engines.get(g);
      if (e) tensors[`group.${gi}.counters`] = e.counters;
      for (const p of g.params) {
        const s = e?.states.get(p);
        if (s) {
          tensors[`param.${i}.exp_avg`] = s.m;
          tensors[`param.${i}.exp_avg_sq`] = s.v;
          if (s.quantized) {
            tensors[`param.${i}.exp_avg_absmax`] = s.absmaxM!;
            tensors[`param.${i}.exp_avg_sq_absmax`] = s.absmaxV!;
          }
        }
        i++;
      }
    });
    return { ...this.stateDictBase(this.name), tensors };
  }

  loadStateDict(sd: StateDict): void {
    this.checkStateDictBase(sd, this.name);
    const { bits, block } = this.layout;
    const want = (name: string, numel: number, dtype: string): Tensor | undefined => {
      const t = sd.tensors[name];
      if (t === undefined) return undefined;
      if (!(t instanceof Tensor) || t.disposed || t.dtype !== dtype || t.numel !== numel)
        fail("E_CHECKPOINT", `state tensor ${name} must be ${dtype} with ${numel} elements`);
      return t;
    };
    // Validate everything before touching any state.
    type Item = { p: Parameter; m: Tensor; v: Tensor; am?: Tensor; av?: Tensor };
    const plan: { g: ParamGroup<AdamW8bitOptions>; counters?: Tensor; items: Item[] }[] = [];
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const counters = want(`group.${gi}.counters`, 2, "i32");
      const items: Item[] = [];
      for (const p of g.params) {
        // The kind this optimizer gives the parameter (already allocated, or by minSize8bit).
        const existing = this.engines.get(g)?.states.get(p);
        const quantized = existing ? existing.quantized : p.numel >= g.minSize8bit!;
        const codeBytes = bits === 8 ? p.numel : Math.ceil(p.numel / 2);
        const m = want(`param.${i}.exp_avg`, quantized ? codeBytes : p.numel, quantized ? "u8" : "f32");
        const v = want(`param.${i}.exp_avg_sq`, quantized ? codeBytes : p.numel, quantized ? "u8" : "f32");
        const blocks = Math.ceil(p.numel / block);
        const am = quantized ? want(`param.${i}.exp_avg_absmax`, blocks, "f32") : undefined;
        const av = quantized ? want(`param.${i}.exp_avg_sq_absmax`, blocks, "f32") : undefined;
        const present = [m, v, ...(quantized ? [am, av] : [])].filter((t) => t !== undefined).length;
        if (present !== 0 && present !== (quantized ? 4 : 2))
          fail("E_CHECKPOINT", `parameter ${i} (${p.name}) has only some of its ${quantized ? "quantized" : "f32"} states`);
        if (present && !counters) fail("E_CHECKPOINT", `group ${gi} has states but no step counters`);
        if (present) items.push({ p, m: m!, v: v!, am, av });
        i++;
      }
      if (counters && items.length !== g.params.length) fail("E_CHECKPOINT", `group ${gi} lacks states for some parameters`);
      plan.push({ g, counters, items });
    });
    for (const { g, counters, items } of plan) {
      const old = this.engines.get(g);
      if (!counters) {
        old?.dispose();
        this.engines.delete(g);
        continue;
      }
      const e = old ?? this.engine(g);
      e.prepare(g.params, g.minSize8bit!);
      e.counters.copyFrom(counters);
      for (const it of items) {
        const s = e.states.get(it.p)!;
        s.m.copyFrom(it.m);
        s.v.copyFrom(it.v);
        if (s.quantized) {
          s.absmaxM!.copyFrom(it.am!);
          s.absmaxV!.copyFrom(it.av!);
        }
      }
    }
  }

  protected stateTensors(): Tensor[] {
    const out: Tensor[] = [];
    for (const e of this.engines.values()) out.push(...e.tensors());
    return out;
  }

  dispose(): void {
    for (const e of this.engines.values()) e.dispose();
    this.engines.clear();
  }
}

/** AdamW with 8-bit blockwise states (bitsandbytes' dynamic maps, blocks of 256): ~2.03 B/param. */
export class AdamW8bit extends QuantizedAdamW {
  protected readonly name = "AdamW8bit";
  protected readonly layout = LAYOUTS[8];
}

/** AdamW with 4-bit states, two codes per byte, blocks of 128: m on the 4-bit signed dynamic map
 *  (3 exponent bits), v on the linear map 1/16 .. 1 (no zero, so v never dequantizes to 0 in a
 *  block that is not all zero): ~1.06 B/param. */
export class AdamW4bit extends QuantizedAdamW {
  protected readonly name = "AdamW4bit";
  protected readonly layout = LAYOUTS[4];
}
