import { Device } from "../device";
import { DType } from "../dtype";
import { fail } from "../errors";
import { Parameter } from "../parameter";
import { Tensor } from "../tensor";
import { AdamConvention, AdamGroupEngine, AdamHyper, engineMoments } from "./adam_core";
import { checkNumber, GroupOptions, Optimizer, ParamGroup, ParamGroupSpec, StateDict } from "./optimizer";

export interface AdamWOptions extends GroupOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /** Storage of m and v: f32 (default) or bf16. The math is f32 either way. */
  stateDtype?: "f32" | "bf16";
  /** bf16 parameters: round the updated value stochastically instead of to nearest. */
  stochasticRounding?: boolean;
  /** Skip the whole group's step when a gradient holds NaN/Inf (default true). */
  skipNonFinite?: boolean;
  /** Key of the stochastic-rounding stream. */
  seed?: number;
}

const DEFAULTS: Required<AdamWOptions> = {
  lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, stateDtype: "f32",
  stochasticRounding: false, skipNonFinite: true, seed: 0,
};

export function validateAdamOptions(g: AdamWOptions, gi: number): void {
  checkNumber(`group ${gi} lr`, g.lr, 0, Number.MAX_VALUE);
  if (!Array.isArray(g.betas) || g.betas.length !== 2) fail("E_ARG", `group ${gi} betas must be [beta1, beta2]`);
  checkNumber(`group ${gi} beta1`, g.betas[0], 0, 1, true);
  checkNumber(`group ${gi} beta2`, g.betas[1], 0, 1, true);
  checkNumber(`group ${gi} eps`, g.eps, 0, Number.MAX_VALUE);
  checkNumber(`group ${gi} weightDecay`, g.weightDecay, 0, Number.MAX_VALUE);
  if (g.stateDtype !== "f32" && g.stateDtype !== "bf16") fail("E_ARG", `group ${gi} stateDtype must be "f32" or "bf16"`);
  if (!Number.isSafeInteger(g.seed) || (g.seed as number) < 0) fail("E_ARG", `group ${gi} seed must be a non-negative integer`);
}

/** The engine's hyperparameters from a group's options. */
export function adamHyper(g: AdamWOptions & { lr: number }, convention: AdamConvention, stochastic = !!g.stochasticRounding): AdamHyper {
  return {
    lr: g.lr, beta1: g.betas![0], beta2: g.betas![1], eps: g.eps!, weightDecay: g.weightDecay!,
    convention, stochasticRounding: stochastic, skipNonFinite: g.skipNonFinite !== false, seed: BigInt(g.seed ?? 0),
  };
}

/** AdamW with torch.optim.AdamW semantics; one fused multi-tensor launch per group per step. */
export class AdamW extends Optimizer<AdamWOptions> {
  private engines = new Map<ParamGroup<AdamWOptions>, AdamGroupEngine>();

  constructor(params: Parameter[] | ParamGroupSpec<AdamWOptions>[], defaults: AdamWOptions = {}) {
    super(params, { ...DEFAULTS, ...defaults });
  }

  protected validateGroup(g: ParamGroup<AdamWOptions>, gi: number): void {
    validateAdamOptions(g, gi);
  }

  private engine(g: ParamGroup<AdamWOptions>, dev: Device): AdamGroupEngine {
    let e = this.engines.get(g);
    if (!e) {
      e = new AdamGroupEngine(dev, g.stateDtype as DType);
      this.engines.set(g, e);
    }
    return e;
  }

  protected stepGroups(): void {
    this.validateAll();
    // Allocate everything first so that an E_OOM leaves every group untouched.
    const ready = this.paramGroups.map((g) => {
      const e = this.engine(g, this.groupDevice(g));
      e.prepare(g.params);
      return e;
    });
    this.paramGroups.forEach((g, i) => ready[i].run(adamHyper(g, AdamConvention.Torch)));
  }

  protected stepParamImpl(g: ParamGroup<AdamWOptions>, gi: number, p: Parameter, k: number): void {
    const e = this.engine(g, this.groupDevice(g));
    e.ensureMoments([p]);
    e.runOne(p, k, adamHyper(g, AdamConvention.Torch), this.roundCounters(gi, p, e.counters));
  }

  protected countersOf(g: ParamGroup<AdamWOptions>): Tensor | undefined {
    return this.engines.get(g)?.counters;
  }

  /** Updates so far (step() or stepParam() rounds; stepCount). */
  get stepCalls(): number {
    return this.stepCount;
  }

  /** @internal moments of a parameter (undefined before its first step) */
  stateOf(p: Parameter): { expAvg: Tensor; expAvgSq: Tensor } | undefined {
    return engineMoments(this.engines.values(), p);
  }

  stateDict(): StateDict {
    const tensors: Record<string, Tensor> = {};
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const e = this.engines.get(g);
      if (e) tensors[`group.${gi}.counters`] = e.counters;
      for (const p of g.params) {
        const m = e?.expAvg.get(p);
        if (m) {
          tensors[`param.${i}.exp_avg`] = m;
          tensors[`param.${i}.exp_avg_sq`] = e!.expAvgSq.get(p)!;
        }
        i++;
      }
    });
    return { ...this.stateDictBase("AdamW"), tensors };
  }

  loadStateDict(sd: StateDict): void {
    this.checkStateDictBase(sd, "AdamW");
    const known = new Set<string>();
    const want = (name: string, shape: readonly number[], dtype: string): Tensor | undefined => {
      known.add(name);
      if (!Object.prototype.hasOwnProperty.call(sd.tensors, name)) return undefined;
      const t = sd.tensors[name];
      if (!(t instanceof Tensor) || t.disposed || t.dtype !== dtype || t.shape.length !== shape.length ||
          t.shape.some((s, k) => s !== shape[k]))
        fail("E_CHECKPOINT", `state tensor ${name} must be ${dtype} [${shape}], got ${t instanceof Tensor ? `${t.dtype} [${t.shape}]` : typeof t}`);
      return t;
    };
    // Validate everything before touching any state.
    const plan: { g: ParamGroup<AdamWOptions>; counters?: Tensor; moments: [Parameter, Tensor, Tensor][] }[] = [];
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const counters = want(`group.${gi}.counters`, [2], "i32");
      const moments: [Parameter, Tensor, Tensor][] = [];
      for (const p of g.params) {
        const m = want(`param.${i}.exp_avg`, p.shape, g.stateDtype!);
        const v = want(`param.${i}.exp_avg_sq`, p.shape, g.stateDtype!);
        if (!m !== !v) fail("E_CHECKPOINT", `parameter ${i} has only one of its two moments`);
        if (m && !counters) fail("E_CHECKPOINT", `group ${gi} has moments but no step counters`);
        if (m) moments.push([p, m, v!]);
        i++;
      }
      if (counters && moments.length !== g.params.length) fail("E_CHECKPOINT", `group ${gi} lacks moments for some parameters`);
      plan.push({ g, counters, moments });
    });
    for (const name of Object.keys(sd.tensors))
      if (!known.has(name)) fail("E_CHECKPOINT", `unexpected state tensor ${name}`);
    for (const { g, counters, moments } of plan) {
      const old = this.engines.get(g);
      if (!counters) {
        old?.dispose();
        this.engines.delete(g);
        continue;
      }
      const e = old ?? this.engine(g, this.groupDevice(g));
      e.prepare(g.params);
      e.counters.copyFrom(counters);
      for (const [p, m, v] of moments) {
        e.expAvg.get(p)!.copyFrom(m);
        e.expAvgSq.get(p)!.copyFrom(v);
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
