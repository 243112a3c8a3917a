// Learning-rate schedules as pure functions of the step: each returns the factor the groups' base
// lr is multiplied by. `step` counts updates made before this one (0 for the first), as the
// HuggingFace schedulers (transformers.optimization.get_*_schedule_with_warmup) count it, so the
// same arguments give the same curve. Apply with opt.setSchedule(fn) (the optimizer's own update
// count drives it) or applySchedule(opt, fn, step) (your loop's step).
import { fail } from "./errors";
import type { Optimizer } from "./optim/optimizer";

/** A learning-rate factor as a function of the step (updates made before this one). */
export type Schedule = (step: number) => number;

function count(name: string, x: unknown, min: number): number {
  if (typeof x !== "number" || !Number.isSafeInteger(x) || x < min) fail("E_ARG", `${name} must be an integer >= ${min}, got ${String(x)}`);
  return x;
}

function fraction(name: string, x: unknown): number {
  if (typeof x !== "number" || !(x >= 0 && x <= 1)) fail("E_ARG", `${name} must be in [0, 1], got ${String(x)}`);
  return x;
}

function checkStep(step: number): void {
  if (typeof step !== "number" || !(step >= 0) || !Number.isFinite(step)) fail("E_ARG", `a schedule's step must be a number >= 0, got ${String(step)}`);
}

/** The warmup ramp: step / warmup for step < warmup (0 at the first step, as HF), else 1. */
function ramp(step: number, warmup: number): number {
  return step < warmup ? step / Math.max(1, warmup) : 1;
}

/** Factor 1 at every step. */
export function constantLR(): Schedule {
  return (step) => { checkStep(step); return 1; };
}

/** Linear warmup from 0 to 1 over `warmup` steps, then 1 (HF get_constant_schedule_with_warmup). */
export function linearWarmup(opts: { warmup: number }): Schedule {
  const warmup = count("warmup", opts?.warmup, 0);
  return (step) => { checkStep(step); return ramp(step, warmup); };
}

/** Linear warmup, then a half cosine from 1 down to `floor` (default 0) at step `total`, and
 *  `floor` after it: floor + (1 - floor) * 0.5 * (1 + cos(pi * progress)), progress = (step -
 *  warmup) / (total - warmup) clamped to [0, 1]. floor = min_lr_rate of HF's
 *  get_cosine_with_min_lr_schedule_with_warmup (whose progress is not clamped: it rises again past
 *  total; here it stays at the floor). */
export function cosineWithWarmup(opts: { warmup: number; total: number; floor?: number }): Schedule {
  const warmup = count("warmup", opts?.warmup, 0);
  const total = count("total", opts?.total, 1);
  if (total < warmup) fail("E_ARG", `total (${total}) must be >= warmup (${warmup})`);
  const floor = fraction("floor", opts.floor ?? 0);
  return (step) => {
    checkStep(step);
    if (step < warmup) return ramp(step, warmup);
    const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
    return floor + (1 - floor) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}

/** Warmup-stable-decay (HF get_wsd_schedule): linear warmup over `warmup` steps, 1 for `stable`
 *  steps, then a decay over `decay` steps from 1 to `floor` (default 0), `floor` afterwards. The
 *  decay shape: "cosine" (HF's default) 0.5 (1 + cos(pi p)), "linear" 1 - p, "1-sqrt" 1 - sqrt(p),
 *  mapped to floor + (1 - floor) * shape, with p = (step - warmup - stable) / decay. */
export function warmupStableDecay(opts: { warmup: number; stable: number; decay: number; floor?: number;
                                          shape?: "cosine" | "linear" | "1-sqrt" }): Schedule {
  const warmup = count("warmup", opts?.warmup, 0);
  const stable = count("stable", opts.stable, 0);
  const decay = count("decay", opts.decay, 0);
  const floor = fraction("floor", opts.floor ?? 0);
  const shape = opts.shape ?? "cosine";
  if (shape !== "cosine" && shape !== "linear" && shape !== "1-sqrt") fail("E_ARG", `shape must be "cosine", "linear" or "1-sqrt", got ${String(shape)}`);
  return (step) => {
    checkStep(step);
    if (step < warmup) return ramp(step, warmup);
    if (step < warmup + stable) return 1;
    if (step >= warmup + stable + decay) return floor;
    const p = (step - warmup - stable) / decay;
    const f = shape === "cosine" ? 0.5 * (1 + Math.cos(Math.PI * p)) : shape === "linear" ? 1 - p : 1 - Math.sqrt(p);
    return floor + (1 - floor) * f;
  };
}

const baseLrs = new WeakMap<object, number[]>();

/** Sets every group's lr to base x fn(step), where base is each group's lr at the first call for
 *  this optimizer (remembered, as torch's schedulers keep initial_lr). For a loop that keeps its
 *  own step count; opt.setSchedule(fn) lets the optimizer count instead. */
export function applySchedule(opt: Optimizer<any>, fn: Schedule, step: number): void {  // eslint-disable-line @typescript-eslint/no-explicit-any
  if (typeof fn !== "function") fail("E_ARG", "applySchedule needs a schedule function");
  const f = fn(step);
  if (typeof f !== "number" || !Number.isFinite(f) || f < 0) fail("E_ARG", `the schedule gave ${String(f)} at step ${step}`);
  let base = baseLrs.get(opt);
  if (!base || base.length !== opt.paramGroups.length) {
    base = opt.paramGroups.map((g) => g.lr);
    baseLrs.set(opt, base);
  }
  opt.paramGroups.forEach((g, i) => { g.lr = base![i] * f; });
}
