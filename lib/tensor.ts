import { Device, device as resolveDevice } from "./device";
import { DType, DTYPES, DTYPE_CODE, DTYPE_SIZE, isFloatType } from "./dtype";
import { fail, SlimoptError } from "./errors";
import { native, NativeBufferHandle } from "./native";

export interface TensorOptions {
  dtype?: DType;
  device?: string | Device;
}

export interface RandnOptions extends TensorOptions {
  /** Key of the counter-based generator: the same seed gives the same values on CPU and CUDA. */
  seed?: number | bigint;
  std?: number;
  mean?: number;
}

// Frees what was forgotten; a safety net, not the plan: call dispose().
const registry = new FinalizationRegistry<NativeBufferHandle>((h) => {
  try { h.dispose(); } catch { /* the process may be shutting down */ }
});

const disposeSymbol: symbol = (Symbol as unknown as { dispose?: symbol }).dispose ?? Symbol.for("nodejs.dispose");

export function checkShape(shape: readonly number[]): number {
  if (!Array.isArray(shape)) fail("E_SHAPE", "shape must be an array of sizes");
  let n = 1;
  for (const s of shape) {
    if (!Number.isSafeInteger(s) || s < 0) fail("E_SHAPE", `bad dimension ${String(s)} in shape [${shape.join(", ")}]`);
    n *= s;
  }
  if (!Number.isSafeInteger(n)) fail("E_SHAPE", `shape [${shape.join(", ")}] is too large`);
  return n;
}

function checkDtype(d: unknown): DType {
  if (typeof d !== "string" || !DTYPES.includes(d as DType)) fail("E_DTYPE", `unknown dtype ${String(d)} (use ${DTYPES.join(", ")})`);
  return d as DType;
}

/** The kind of a typed array, by its tag rather than instanceof: arrays made in another realm (a
 *  vm context, a test sandbox, the addon) are the same kinds. */
function arrayKind(x: unknown): string {
  return Object.prototype.toString.call(x).slice(8, -1);
}

type Source = Tensor | Float32Array | Float64Array | Uint16Array | Uint8Array | Int32Array | number[];

/** A row-major, contiguous array on one device. Owns its memory unless it wraps a foreign pointer. */
export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: Device;
  readonly numel: number;
  /** @internal */
  readonly handle: NativeBufferHandle;
  // Mirrors the handle's state in JS so hot-path checks make no native call.
  private freed = false;

  /** @internal use tensor(), zeros(), randn() or fromDevicePointer() */
  constructor(handle: NativeBufferHandle, shape: readonly number[], dtype: DType, dev: Device) {
    this.handle = handle;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.device = dev;
    this.numel = checkShape(shape);
    registry.register(this, handle, this);
  }

  /** @internal allocate uninitialised memory */
  static empty(shape: readonly number[], dtype: DType, dev: Device): Tensor {
    const n = checkShape(shape);
    const h = new (native().NativeBuffer)(dev.index, n * DTYPE_SIZE[dtype]);
    return new Tensor(h, shape, dtype, dev);
  }

  get nbytes(): number {
    return this.numel * DTYPE_SIZE[this.dtype];
  }

  get disposed(): boolean {
    return this.freed;
  }

  /** The address of the data (device memory for CUDA), for other native code. */
  get devicePointer(): bigint {
    this.assertLive();
    return this.handle.ptr;
  }

  /** @internal */
  assertLive(what = "tensor"): void {
    if (this.freed) fail("E_DISPOSED", `${what} was disposed`);
  }

  /** Copies values in: a Tensor of the same numel (any device; converted if the dtype differs), or
   *  a typed array: Float32Array/Float64Array/number[] for float dtypes (converted), Uint16Array of
   *  raw bits for bf16/f16, Uint8Array for u8, Int32Array for i32. */
  copyFrom(src: Source): this {
    this.assertLive();
    const nat = native();
    if (src instanceof Tensor) {
      src.assertLive("source tensor");
      if (src.numel !== this.numel) fail("E_SHAPE", `copyFrom: ${src.numel} elements into ${this.numel}`);
      if (src.dtype === this.dtype) {
        nat.copyBuffer(this.handle, src.handle, this.nbytes);
      } else {
        if (!isFloatType(src.dtype) || !isFloatType(this.dtype)) fail("E_DTYPE", `copyFrom: cannot convert ${src.dtype} to ${this.dtype}`);
        if (src.device === this.device) {
          nat.convertBuffer(this.handle, DTYPE_CODE[this.dtype], src.handle, DTYPE_CODE[src.dtype], this.numel);
        } else {
          const tmp = Tensor.empty(this.shape, src.dtype, this.device);
          try {
            tmp.copyFrom(src);
            nat.convertBuffer(this.handle, DTYPE_CODE[this.dtype], tmp.handle, DTYPE_CODE[src.dtype], this.numel);
          } finally {
            tmp.dispose();
          }
        }
      }
      return this;
    }
    if (!ArrayBuffer.isView(src) && !Array.isArray(src)) fail("E_ARG", "copyFrom needs a Tensor, a typed array or an array of numbers");
    const length = (src as ArrayLike<number>).length;
    if (length !== this.numel) fail("E_SHAPE", `copyFrom: ${length} values into a tensor of ${this.numel}`);
    if (isFloatType(this.dtype)) {
      if (arrayKind(src) === "Uint16Array") {
        if (this.dtype === "f32") fail("E_DTYPE", "copyFrom: a Uint16Array holds bf16/f16 bits, not f32 values");
        nat.writeRaw(this.handle, 0, src as Uint16Array);
        return this;
      }
      let f: Float32Array;
      const kind = arrayKind(src);
      if (kind === "Float32Array") f = src as Float32Array;
      else if (kind === "Float64Array" || Array.isArray(src)) f = Float32Array.from(src as ArrayLike<number>);
      else fail("E_DTYPE", `copyFrom: a ${src.constructor.name} cannot fill a ${this.dtype} tensor`);
      nat.writeFloat(this.handle, DTYPE_CODE[this.dtype], f);
      return this;
    }
    if (this.dtype === "u8" && arrayKind(src) === "Uint8Array") { nat.writeRaw(this.handle, 0, src as Uint8Array); return this; }
    if (this.dtype === "i32" && arrayKind(src) === "Int32Array") { nat.writeRaw(this.handle, 0, src as Int32Array); return this; }
    if (Array.isArray(src)) {
      const arr = this.dtype === "u8" ? Uint8Array.from(src) : Int32Array.from(src);
      nat.writeRaw(this.handle, 0, arr);
      return this;
    }
    fail("E_DTYPE", `copyFrom: a ${(src as object).constructor.name} cannot fill a ${this.dtype} tensor`);
  }

  /** The values as f32 (exact for every dtype but i32 beyond 2^24), after the work enqueued before. */
  toFloat32Array(): Promise<Float32Array> {
    try {
      this.assertLive();
      if (!isFloatType(this.dtype)) {
        return this.toTypedArray().then((a) => Float32Array.from(a as ArrayLike<number>));
      }
      return native().readFloat(this.handle, DTYPE_CODE[this.dtype], this.numel);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The raw contents: Float32Array, Uint16Array (bf16/f16 bits), Uint8Array or Int32Array. */
  async toTypedArray(): Promise<Float32Array | Uint16Array | Uint8Array | Int32Array> {
    this.assertLive();
    const ab = await native().readRaw(this.handle, DTYPE_CODE[this.dtype], this.numel);
    switch (this.dtype) {
      case "f32": return new Float32Array(ab);
      case "bf16": case "f16": return new Uint16Array(ab);
      case "u8": return new Uint8Array(ab);
      default: return new Int32Array(ab);
    }
  }

  /** A copy on `dev` (default: this tensor's device), same dtype. */
  clone(dev?: string | Device): Tensor {
    this.assertLive();
    const t = Tensor.empty(this.shape, this.dtype, dev === undefined ? this.device : resolveDevice(dev));
    try {
      return t.copyFrom(this);
    } catch (e) {
      t.dispose();
      throw e;
    }
  }

  /** Sets every element to 0. */
  zero(): this {
    this.assertLive();
    native().fillZero(this.handle, this.nbytes);
    return this;
  }

  /** Frees the memory now (after the work already enqueued). Idempotent. */
  dispose(): void {
    if (this.freed) return;
    this.freed = true;
    registry.unregister(this);
    this.handle.dispose();
  }

  [disposeSymbol](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor([${this.shape.join(", ")}], ${this.dtype}, ${this.device})`;
  }
}

/** A tensor holding `data` (converted to dtype, default f32), on `device` (default: defaultDevice()). */
export function tensor(data: Float32Array | Float64Array | Uint16Array | Uint8Array | Int32Array | number[],
                       shape?: readonly number[], opts: TensorOptions = {}): Tensor {
  const len = (data as { length?: unknown })?.length;
  if (typeof len !== "number") fail("E_ARG", "tensor() needs a typed array or an array of numbers");
  const sh = shape ?? [len];
  const dtype = checkDtype(opts.dtype ?? (arrayKind(data) === "Int32Array" ? "i32" : arrayKind(data) === "Uint8Array" ? "u8" : "f32"));
  const n = checkShape(sh);
  if (n !== len) fail("E_SHAPE", `${len} values do not fill shape [${sh.join(", ")}]`);
  const t = Tensor.empty(sh, dtype, resolveDevice(opts.device));
  try {
    return t.copyFrom(data);
  } catch (e) {
    t.dispose();
    throw e;
  }
}

/** f32 elements a part of k takes in a sliceBlock() block: rounded up so that the next part starts
 *  256 bytes aligned, as the GEMM libraries like. */
function partFloats(k: number): number {
  return Math.ceil(k / 64) * 64;
}

/** @internal f32 elements of a block that sliceBlock() cuts into parts of these sizes. */
export function blockFloats(sizes: readonly number[]): number {
  return sizes.reduce((n, k) => n + partFloats(k), 0);
}

/** @internal f32 tensors over consecutive parts of `block` (blockFloats(sizes) elements or more):
 *  views that own no memory, so one allocation serves them all (each allocation costs the host
 *  time of the allocator and of V8's external-memory accounting). `block` must outlive them. */
export function sliceBlock(block: Tensor, sizes: readonly number[]): Tensor[] {
  block.assertLive("block");
  if (block.device.kind !== "cuda") fail("E_DEVICE", "sliceBlock: CUDA blocks only");
  if (block.dtype !== "f32" || block.numel < blockFloats(sizes)) fail("E_SHAPE", "sliceBlock: the block is too small");
  const base = block.devicePointer;
  const out: Tensor[] = [];
  let at = 0;
  for (const k of sizes) {
    out.push(new Tensor(new (native().NativeBuffer)(block.device.index, k * 4, base + BigInt(at * 4)), [k], "f32", block.device));
    at += partFloats(k);
  }
  return out;
}

export function zeros(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  const t = Tensor.empty(shape, checkDtype(opts.dtype ?? "f32"), resolveDevice(opts.device));
  return t.zero();
}

let globalSeed = 0x5eed0000n;

/** Seeds the generator randn() uses when no seed is given. */
export function manualSeed(seed: number | bigint): void {
  globalSeed = BigInt.asUintN(64, BigInt(seed));
}

function seedOf(seed: number | bigint | undefined): bigint {
  if (seed === undefined) {
    const s = globalSeed;
    globalSeed = BigInt.asUintN(64, globalSeed + 1n);
    return s;
  }
  if (typeof seed === "number" && (!Number.isSafeInteger(seed) || seed < 0)) fail("E_ARG", `seed must be a non-negative integer, got ${seed}`);
  if (typeof seed !== "number" && typeof seed !== "bigint") fail("E_ARG", "seed must be a number or a BigInt");
  return BigInt.asUintN(64, BigInt(seed));
}

/** mean + std * N(0, 1), from a counter-based generator (Philox4x32-10 + Box-Muller): the same
 *  seed gives the same values on every backend. */
export function randn(shape: readonly number[], opts: RandnOptions = {}): Tensor {
  const dtype = checkDtype(opts.dtype ?? "f32");
  if (!isFloatType(dtype)) fail("E_DTYPE", `randn makes f32, bf16 or f16, not ${dtype}`);
  const std = opts.std ?? 1;
  const mean = opts.mean ?? 0;
  if (!Number.isFinite(std) || !Number.isFinite(mean)) fail("E_ARG", "randn: mean and std must be finite");
  const seed = seedOf(opts.seed);
  const t = Tensor.empty(shape, dtype, resolveDevice(opts.device));
  try {
    native().fillRandn(t.handle, DTYPE_CODE[dtype], t.numel, seed, mean, std);
  } catch (e) {
    t.dispose();
    throw e;
  }
  return t;
}

/** Wraps device memory someone else owns (never freed by slimopt). */
export function fromDevicePointer(ptr: bigint, shape: readonly number[], opts: TensorOptions = {}): Tensor {
  if (typeof ptr !== "bigint") fail("E_ARG", "fromDevicePointer needs the address as a BigInt");
  if (ptr === 0n) fail("E_ARG", "fromDevicePointer: null pointer");
  const dtype = checkDtype(opts.dtype ?? "f32");
  const n = checkShape(shape);
  const dev = resolveDevice(opts.device ?? "cuda");
  if (dev.kind !== "cuda") throw new SlimoptError("E_DEVICE", "fromDevicePointer wraps CUDA memory; the device given is cpu");
  const h = new (native().NativeBuffer)(dev.index, n * DTYPE_SIZE[dtype], ptr);
  return new Tensor(h, shape, dtype, dev);
}
