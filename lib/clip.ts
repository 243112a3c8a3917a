// Global gradient-norm clipping (torch.nn.utils.clip_grad_norm_ semantics) on the device: one
// multi-tensor sum-of-squares launch (f32 math, per-block partials summed in a fixed order, so the
// result is deterministic), one tiny launch for the norm and the factor, one multi-tensor scale
// launch that reads the factor on the device. Nothing waits for the GPU unless the norm is read.
import { Device } from "./device";
import { DTYPE_CODE, isFloatType } from "./dtype";
import { fail } from "./errors";
import { native, NativeBufferHandle } from "./native";
import { Parameter } from "./parameter";
import { Tensor, zeros } from "./tensor";

/** f32 elements of a norm workspace (cuda/train.cuh kGradWsFloats): [norm, factor, ...partials]. */
const WS_FLOATS = 8 + 512;

/** Clipping an optimizer applies itself (Optimizer.setGradClipping). */
export interface GradClipping {
  maxNorm: number;
  /** "perParameter": each gradient by its own norm. "previousGlobal": every gradient by the global
   *  norm of the previous update (usable with stepParam, where the current norm is not known yet). */
  mode: "perParameter" | "previousGlobal";
}

/** @internal a norm workspace on one device: [0] norm, [1] clip factor, then partial sums. */
export class GradNormWorkspace {
  readonly tensor: Tensor;
  constructor(dev: Device) {
    this.tensor = zeros([WS_FLOATS], { device: dev });
    // Factor 1 until a norm is computed.
    this.tensor.copyFrom(Float32Array.from({ length: WS_FLOATS }, (_, i) => (i === 1 ? 1 : 0)));
  }
  get handle(): NativeBufferHandle {
    return this.tensor.handle;
  }
  async norm(): Promise<number> {
    return (await this.tensor.toFloat32Array())[0];
  }
  async factor(): Promise<number> {
    return (await this.tensor.toFloat32Array())[1];
  }
  dispose(): void {
    this.tensor.dispose();
  }
}

/** What clipGradNorm() computed, held on the device until read. */
export interface ClipResult {
  /** The global L2 norm of the gradients before clipping (reads the device: waits for the work
   *  enqueued before). */
  norm(): Promise<number>;
  /** The factor the gradients were multiplied by: min(1, maxNorm / (norm + 1e-6)). */
  factor(): Promise<number>;
  /** Frees the small device buffer now (it is otherwise freed with the object). */
  dispose(): void;
}

function gradOf(x: Parameter | Tensor, i: number): Tensor {
  const t = x instanceof Parameter ? x.grad : x;
  if (!(t instanceof Tensor)) fail("E_ARG", `clipGradNorm: entry ${i} is neither a Parameter nor a Tensor`);
  t.assertLive(`gradient ${i}`);
  if (!isFloatType(t.dtype)) fail("E_DTYPE", `clipGradNorm: gradient ${i} is ${t.dtype}; gradients are f32, bf16 or f16`);
  return t;
}

/** Scales the gradients (of Parameters, or Tensors themselves) in place so that their global L2
 *  norm is at most maxNorm: g *= min(1, maxNorm / (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_
 *  does. maxNorm = Infinity only computes the norm. Every gradient must be on one device
 *  (E_DEVICE). Non-finite gradients give a non-finite norm and stay non-finite (the optimizer's
 *  non-finite skip then drops the step). Returns at once; `await r.norm()` reads the norm. */
export function clipGradNorm(params: (Parameter | Tensor)[], maxNorm: number): ClipResult {
  if (!Array.isArray(params)) fail("E_ARG", "clipGradNorm needs a list of parameters or gradient tensors");
  if (typeof maxNorm !== "number" || !(maxNorm > 0) || Number.isNaN(maxNorm))
    fail("E_ARG", `clipGradNorm: maxNorm must be a positive number, got ${String(maxNorm)}`);
  const grads = params.map(gradOf);
  if (grads.length === 0) {
    return { norm: async () => 0, factor: async () => 1, dispose: () => undefined };
  }
  const dev = grads[0].device;
  grads.forEach((g, i) => {
    if (g.device !== dev) fail("E_DEVICE", `clipGradNorm: gradient ${i} is on ${g.device}, gradient 0 on ${dev}`);
  });
  const list: [NativeBufferHandle, number, number][] = grads.map((g) => [g.handle, DTYPE_CODE[g.dtype], g.numel]);
  const ws = new GradNormWorkspace(dev);
  const nat = native();
  try {
    nat.gradSumSquares(ws.handle, list, true);
    // f32 cannot hold Infinity as a finite bound: 3e38 leaves every factor at 1.
    nat.gradNormFinish(ws.handle, Number.isFinite(maxNorm) ? maxNorm : 3e38);
    if (Number.isFinite(maxNorm)) nat.gradScale(list, ws.handle, 1);
  } catch (e) {
    ws.dispose();
    throw e;
  }
  return { norm: () => ws.norm(), factor: () => ws.factor(), dispose: () => ws.dispose() };
}

/** Gradient accumulation: dst += alpha * src on the device (f32 math, rounded once to dst's
 *  dtype). dst is a Parameter (its grad) or a Tensor; src a Tensor of the same element count on
 *  the same device, any of f32/bf16/f16. For a loop whose backward hands out fresh gradients:
 *  addGrad(p, g) per micro-batch with opt.accumulate(n). */
export function addGrad(dst: Parameter | Tensor, src: Tensor, alpha = 1): void {
  const d = dst instanceof Parameter ? dst.grad : dst;
  if (!(d instanceof Tensor)) fail("E_ARG", "addGrad: the destination is neither a Parameter nor a Tensor");
  if (!(src instanceof Tensor)) fail("E_ARG", "addGrad: the source is not a Tensor");
  d.assertLive("addGrad destination");
  src.assertLive("addGrad source");
  if (!isFloatType(d.dtype) || !isFloatType(src.dtype)) fail("E_DTYPE", `addGrad: ${src.dtype} into ${d.dtype}; gradients are f32, bf16 or f16`);
  if (d.numel !== src.numel) fail("E_SHAPE", `addGrad: ${src.numel} elements into ${d.numel}`);
  if (d.device !== src.device) fail("E_DEVICE", `addGrad: source on ${src.device}, destination on ${d.device}`);
  if (typeof alpha !== "number" || !Number.isFinite(alpha)) fail("E_ARG", `addGrad: alpha must be a finite number, got ${String(alpha)}`);
  native().gradAdd(d.handle, DTYPE_CODE[d.dtype], src.handle, DTYPE_CODE[src.dtype], d.numel, alpha);
}
