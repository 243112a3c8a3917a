// The multi-tensor Adam engine a group runs on: moment tensors, on-device step/skip counters and
// the native tensor list, rebuilt only when the group's tensors change.
import { Device } from "../device";
import { DType, DTYPE_CODE } from "../dtype";
import { native, AdamwGroupHandle, NativeBufferHandle } from "../native";
import { Parameter } from "../parameter";
import { Tensor, zeros } from "../tensor";
import { OneTensorPlans } from "./layerwise";

export const enum AdamConvention {
  /** torch.optim.AdamW: decay first, eps after the bias-corrected sqrt(v). */
  Torch = 0,
  /** GaLore/APOLLO reference code: eps inside before bias correction, decay after. */
  Galore = 1,
}

export interface AdamHyper {
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number;
  convention: AdamConvention; stochasticRounding: boolean; skipNonFinite: boolean; seed: bigint;
}

/** Elements per chunk of the multi-tensor chunk list (a multiple of every vector width). */
const CHUNK = 65536;

export class AdamGroupEngine {
  readonly device: Device;
  readonly stateDtype: DType;
  /** int32 [completed steps, skipped steps], kept on the device. */
  readonly counters: Tensor;
  readonly expAvg = new Map<Parameter, Tensor>();
  readonly expAvgSq = new Map<Parameter, Tensor>();
  private plan?: AdamwGroupHandle;
  private planKey: NativeBufferHandle[] = [];
  private planParams: Parameter[] = [];
  private single = new OneTensorPlans<AdamwGroupHandle>();

  constructor(dev: Device, stateDtype: DType) {
    this.device = dev;
    this.stateDtype = stateDtype;
    this.counters = zeros([2], { dtype: "i32", device: dev });
  }

  /** Allocates moments for new parameters (zeros) and rebuilds the tensor list if any tensor of
   *  the group changed. Allocation failures throw before anything is enqueued. */
  prepare(params: Parameter[]): void {
    if (this.plan && this.sameTensors(params)) return;
    this.ensureMoments(params);
    const entries = params.map((p) => [
      p.data.handle, p.grad.handle, this.expAvg.get(p)!.handle, this.expAvgSq.get(p)!.handle,
      p.numel, DTYPE_CODE[p.dtype], DTYPE_CODE[p.grad.dtype],
    ]);
    const plan = new (native().AdamwGroup)(this.device.index, entries, this.counters.handle, DTYPE_CODE[this.stateDtype], CHUNK);
    this.plan?.dispose();
    this.plan = plan;
    this.planParams = params.slice();
    this.planKey = params.flatMap((p) => [p.data.handle, p.grad.handle]);
  }

  /** Allocates zero moments for parameters that have none; on failure frees what it made. */
  ensureMoments(params: Parameter[]): void {
    const created: Tensor[] = [];
    try {
      for (const p of params) {
        if (!this.expAvg.has(p)) {
          const m = zeros(p.shape, { dtype: this.stateDtype, device: this.device });
          created.push(m);
          const v = zeros(p.shape, { dtype: this.stateDtype, device: this.device });
          created.push(v);
          this.expAvg.set(p, m);
          this.expAvgSq.set(p, v);
        }
      }
    } catch (e) {
      for (const t of created) t.dispose();
      for (const p of params) if (created.includes(this.expAvg.get(p)!)) { this.expAvg.delete(p); this.expAvgSq.delete(p); }
      throw e;
    }
  }

  /** Enqueues the update of p alone (k: its index in the group), on `counters` (the round's copy
   *  of the group's counters, see Optimizer.stepParam): one launch. */
  runOne(p: Parameter, k: number, h: AdamHyper, counters: Tensor): void {
    this.ensureMoments([p]);
    const m = this.expAvg.get(p)!, v = this.expAvgSq.get(p)!;
    const plan = this.single.get(p, [p.data.handle, p.grad.handle, counters.handle], () =>
      new (native().AdamwGroup)(this.device.index,
        [[p.data.handle, p.grad.handle, m.handle, v.handle, p.numel, DTYPE_CODE[p.dtype], DTYPE_CODE[p.grad.dtype], k]],
        counters.handle, DTYPE_CODE[this.stateDtype], CHUNK));
    plan.step(h);
  }

  // The moments belong to the engine and never change under it; parameters and gradients may.
  private sameTensors(params: Parameter[]): boolean {
    const pp = this.planParams, key = this.planKey;
    if (params.length !== pp.length) return false;
    for (let i = 0; i < params.length; i++) {
      const p = params[i];
      if (p !== pp[i] || p.data.handle !== key[2 * i] || p.grad.handle !== key[2 * i + 1]) return false;
    }
    return true;
  }

  /** Enqueues one step of every tensor of the group: one launch on CUDA. */
  run(h: AdamHyper): void {
    this.plan!.step(h);
  }

  tensors(): Tensor[] {
    return [this.counters, ...this.expAvg.values(), ...this.expAvgSq.values()];
  }

  dispose(): void {
    this.plan?.dispose();
    this.plan = undefined;
    this.single.dispose();
    for (const t of this.tensors()) t.dispose();
  }
}

/** The moments of p in whichever engine holds it (undefined before its first step). */
export function engineMoments(engines: Iterable<AdamGroupEngine>, p: Parameter): { expAvg: Tensor; expAvgSq: Tensor } | undefined {
  for (const e of engines) {
    const m = e.expAvg.get(p);
    if (m) return { expAvg: m, expAvgSq: e.expAvgSq.get(p)! };
  }
  return undefined;
}
