import { Device } from "../device";
import { fail } from "../errors";
import { Parameter } from "../parameter";
import { Tensor } from "../tensor";

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
    this.paramGroups.forEach((g, gi) => {
      if (!Array.isArray(g.params) || g.params.length === 0) fail("E_ARG", `group ${gi} has no parameters`);
      this.validateGroup(g, gi);
      const dev = this.groupDevice(g);
      for (const p of g.params) {
        p.data.assertLive(`parameter ${p.name}`);
        const gr = p.grad;
        if (!(gr instanceof Tensor)) fail("E_ARG", `gradient of ${p.name} is not a Tensor`);
        gr.assertLive(`gradient of ${p.name}`);
        if (p.device !== dev || gr.device !== dev)
          fail("E_DEVICE", `${p.name}: parameter on ${p.device}, gradient on ${gr.device}, group on ${dev}`);
        if (gr.dtype !== p.dtype) fail("E_DTYPE", `gradient of ${p.name} is ${gr.dtype}, the parameter ${p.dtype}`);
        if (gr.numel !== p.numel || gr.shape.length !== p.shape.length || gr.shape.some((s, i) => s !== p.shape[i]))
          fail("E_SHAPE", `gradient of ${p.name} is [${gr.shape.join(", ")}], the parameter [${p.shape.join(", ")}]`);
      }
    });
  }

  abstract step(): void;

  /** Every state tensor the optimizer holds now (for stateBytes and disposal). */
  protected abstract stateTensors(): Tensor[];

  /** Zeroes every gradient (enqueued on each device). */
  zeroGrad(): void {
    for (const g of this.paramGroups) for (const p of g.params) p.grad.zero();
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
