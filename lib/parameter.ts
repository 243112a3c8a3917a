import { Device } from "./device";
import { DType } from "./dtype";
import { fail } from "./errors";
import { Tensor, zeros } from "./tensor";

export interface ParameterOptions {
  name?: string;
  /** Key for methods that draw per-parameter randomness (APOLLO projections, stochastic rounding). */
  seed?: number;
}

let unnamed = 0;

/** A trainable tensor and its gradient (same shape, dtype and device, zero-initialised). */
export class Parameter {
  readonly data: Tensor;
  /** Write gradients here (copyFrom, or a kernel of yours at grad.devicePointer). May be replaced
   *  by a tensor of the same shape, dtype and device; checked at each step. */
  grad: Tensor;
  name: string;
  seed?: number;

  constructor(data: Tensor, opts: ParameterOptions = {}) {
    if (!(data instanceof Tensor)) fail("E_ARG", "Parameter needs a Tensor");
    data.assertLive("parameter data");
    if (data.dtype !== "f32" && data.dtype !== "bf16" && data.dtype !== "f16")
      fail("E_DTYPE", `parameters are f32, bf16 or f16, not ${data.dtype}`);
    this.data = data;
    this.grad = zeros(data.shape, { dtype: data.dtype, device: data.device });
    this.name = opts.name ?? `param${unnamed++}`;
    this.seed = opts.seed;
  }

  get shape(): readonly number[] { return this.data.shape; }
  get dtype(): DType { return this.data.dtype; }
  get device(): Device { return this.data.device; }
  get numel(): number { return this.data.numel; }

  /** Frees data and gradient. */
  dispose(): void {
    this.data.dispose();
    this.grad.dispose();
  }
}
