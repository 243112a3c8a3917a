// Blockwise quantization (DESIGN §3, §4): bitsandbytes' dynamic maps, and quantize / dequantize
// of f32, bf16 and f16 tensors in blocks with one f32 absmax each. The code of a value is the
// index of the nearest map entry (at an exact tie, the one of smaller magnitude); the kernels
// find it from the float's bits (cuda/quant.cuh), on the CPU and CUDA alike.
import { DType, DTYPE_CODE, isFloatType } from "./dtype";
import { fail } from "./errors";
import { native, QuantMapHandle } from "./native";
import { Tensor } from "./tensor";

const f32 = Math.fround;

/** torch.linspace(start, end, steps) in float32: step = (end - start) / (steps - 1) rounded to
 *  f32; the first half counts up from start, the rest down from end, each point rounded once
 *  (as a fused multiply-add computes it). This rounding is what makes the maps below equal
 *  bitsandbytes' tables bit for bit. */
function linspaceF32(start: number, end: number, steps: number): number[] {
  const s = f32(start), e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const out: number[] = [];
  // step * i and the sum are exact in float64 (24-bit step, i < 2^10): one rounding, to f32.
  for (let i = 0; i < steps; i++) out.push(i < half ? f32(s + step * i) : f32(e - step * (steps - 1 - i)));
  return out;
}

/** bitsandbytes' `create_dynamic_map(signed, max_exponent_bits, total_bits)`: for each decade i
 *  below max_exponent_bits, the means of neighbouring points of linspace(0.1, 1, k + 1) scaled by
 *  10^(i - max_exponent_bits + 1), with k = 2^i values per sign (signed) or 2^(i+1) (unsigned)
 *  when total_bits = 8; then 0 and 1, sorted. The result has 2^totalBits entries (bitsandbytes
 *  pads shorter maps with zeros to 256; this returns them unpadded: the 4-bit map has 16). */
export function dynamicMap(signed = true, opts: { maxExponentBits?: number; totalBits?: number } = {}): Float32Array {
  const maxExp = opts.maxExponentBits ?? 7;
  const totalBits = opts.totalBits ?? 8;
  if (!Number.isInteger(totalBits) || totalBits < 2 || totalBits > 8) fail("E_ARG", `totalBits must be an integer in [2, 8], got ${totalBits}`);
  if (!Number.isInteger(maxExp) || maxExp < 1 || maxExp > totalBits - 1)
    fail("E_ARG", `maxExponentBits must be an integer in [1, ${totalBits - 1}], got ${maxExp}`);
  const data: number[] = [];
  const nonSignBits = totalBits - 1;  // bitsandbytes keeps a bit for the sign even when unsigned
  const additional = 2 ** (nonSignBits - maxExp) - 1;
  const push = (scale: number, means: number[]) => {
    const sc = f32(scale);
    for (const m of means) data.push(f32(sc * m));
    if (signed) for (const m of means) data.push(-f32(sc * m));
  };
  const meansOf = (b: number[]) => b.slice(1).map((x, k) => f32(f32(b[k] + x) / 2));
  // 10^k parsed from its decimal form: the correctly rounded double, as Python's 10 ** k is.
  const tenTo = (k: number) => Number(`1e${k}`);
  let i = 0;
  for (; i < maxExp; i++) {
    const items = signed ? 2 ** (i + nonSignBits - maxExp) + 1 : 2 ** (i + nonSignBits - maxExp + 1) + 1;
    push(tenTo(-(maxExp - 1) + i), meansOf(linspaceF32(0.1, 1, items)));
  }
  if (additional > 0) push(tenTo(-(maxExp - 1) + i - 1), meansOf(linspaceF32(0.1, 1, additional + 1)));
  data.push(0, 1);
  if (data.length !== 2 ** totalBits) fail("E_ARG", `this configuration gives ${data.length} values, not ${2 ** totalBits}`);
  data.sort((a, b) => a - b);
  return Float32Array.from(data);
}

/** The linear map k / 2^bits for k = 1 .. 2^bits (no zero): AdamW4bit's second-moment map, with
 *  which v never dequantizes to 0 where the block is not all zero. */
export function linearMap(bits = 4): Float32Array {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) fail("E_ARG", `bits must be an integer in [1, 8], got ${bits}`);
  const n = 2 ** bits;
  return Float32Array.from({ length: n }, (_, k) => (k + 1) / n);
}

// ---- native maps ------------------------------------------------------------------------------

export type BuiltinMap = "signed8" | "unsigned8" | "signed4" | "linear4";

const builtin = new Map<BuiltinMap, { values: Float32Array; handle: QuantMapHandle }>();
const custom = new WeakMap<Float32Array, { copy: Float32Array; handle: QuantMapHandle }>();

function builtinValues(kind: BuiltinMap): Float32Array {
  switch (kind) {
    case "signed8": return dynamicMap(true);
    case "unsigned8": return dynamicMap(false);
    case "signed4": return dynamicMap(true, { maxExponentBits: 3, totalBits: 4 });
    default: return linearMap(4);
  }
}

/** @internal a map's native handle (finder table built once; built-in maps are cached). */
export function mapHandle(map: BuiltinMap | Float32Array): QuantMapHandle {
  if (typeof map === "string") {
    let b = builtin.get(map);
    if (!b) {
      const values = builtinValues(map);
      b = { values, handle: new (native().QuantMap)(values) };
      builtin.set(map, b);
    }
    return b.handle;
  }
  if (!(map instanceof Float32Array)) fail("E_ARG", "code must be a Float32Array of 256 sorted values");
  const hit = custom.get(map);
  if (hit && hit.copy.length === map.length && hit.copy.every((x, i) => Object.is(x, map[i]))) return hit.handle;
  const handle = new (native().QuantMap)(map);  // E_SHAPE unless 16 or 256 long, E_ARG unless sorted in [-1, 1]
  custom.set(map, { copy: Float32Array.from(map), handle });
  return handle;
}

/** @internal the values of a built-in map (a copy) */
export function builtinMap(kind: BuiltinMap): Float32Array {
  mapHandle(kind);
  return Float32Array.from(builtin.get(kind)!.values);
}

/** @internal index of the entry nearest 0 (the code of a zero state; 0 for a map without 0) */
export function zeroCode(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (Math.abs(values[i]) < Math.abs(values[best])) best = i;
  return best;
}

// ---- quantize / dequantize ----------------------------------------------------------------------

export interface QuantizeOptions {
  /** Signed dynamic map (default) or the unsigned one (for non-negative data). */
  signed?: boolean;
  /** Elements per absmax block: a power of two in [64, 4096] (default 256). */
  blockSize?: number;
  /** A map of your own: 256 (or 16) strictly increasing values in [-1, 1]; replaces `signed`. */
  code?: Float32Array;
  /** Write into these instead of allocating: codes u8 of x's size, absmax f32 of ceil(n / blockSize). */
  out?: { codes: Tensor; absmax: Tensor };
}

export interface DequantizeOptions {
  signed?: boolean;
  blockSize?: number;
  code?: Float32Array;
  /** Output dtype (default f32). */
  dtype?: DType;
  /** Write into this tensor (f32, bf16 or f16, codes' size) instead of allocating. */
  out?: Tensor;
}

function blockSizeOf(b: unknown): number {
  const bs = b ?? 256;
  if (typeof bs !== "number" || !Number.isInteger(bs) || bs < 64 || bs > 4096 || (bs & (bs - 1)) !== 0)
    fail("E_ARG", `blockSize must be a power of two in [64, 4096], got ${String(bs)}`);
  return bs;
}

function mapOf(o: { signed?: boolean; code?: Float32Array }): QuantMapHandle {
  if (o.code !== undefined) return mapHandle(o.code);
  if (o.signed !== undefined && typeof o.signed !== "boolean") fail("E_ARG", "signed must be a boolean");
  return mapHandle(o.signed === false ? "unsigned8" : "signed8");
}

function checkTensor(t: unknown, what: string): Tensor {
  if (!(t instanceof Tensor)) fail("E_ARG", `${what} must be a Tensor`);
  t.assertLive(what);
  return t;
}

/** Codes (u8, x's shape) and one f32 absmax per block of x (flattened). */
export function quantizeBlockwise(x: Tensor, opts: QuantizeOptions = {}): { codes: Tensor; absmax: Tensor } {
  checkTensor(x, "input");
  if (!isFloatType(x.dtype)) fail("E_DTYPE", `quantizeBlockwise takes f32, bf16 or f16, not ${x.dtype}`);
  const bs = blockSizeOf(opts.blockSize);
  const map = mapOf(opts);
  const blocks = Math.ceil(x.numel / bs);
  let codes: Tensor, absmax: Tensor;
  const made: Tensor[] = [];
  if (opts.out !== undefined) {
    codes = checkTensor(opts.out?.codes, "out.codes");
    absmax = checkTensor(opts.out?.absmax, "out.absmax");
    if (codes.dtype !== "u8" || absmax.dtype !== "f32") fail("E_DTYPE", "out.codes must be u8 and out.absmax f32");
    if (codes.numel !== x.numel) fail("E_SHAPE", `out.codes has ${codes.numel} elements, the input ${x.numel}`);
    if (absmax.numel !== blocks) fail("E_SHAPE", `out.absmax has ${absmax.numel} elements, ${blocks} blocks of ${bs} need ${blocks}`);
    if (codes.device !== x.device || absmax.device !== x.device) fail("E_DEVICE", "out tensors must be on the input's device");
  } else {
    codes = Tensor.empty(x.shape, "u8", x.device);
    made.push(codes);
    try {
      absmax = Tensor.empty([blocks], "f32", x.device);
    } catch (e) {
      codes.dispose();
      throw e;
    }
    made.push(absmax);
  }
  try {
    native().quantizeBlockwise(x.handle, DTYPE_CODE[x.dtype], x.numel, codes.handle, absmax.handle, bs, map);
  } catch (e) {
    for (const t of made) t.dispose();
    throw e;
  }
  return { codes, absmax };
}

/** values[code] * absmax of its block, as `dtype` (default f32), in the codes' shape. */
export function dequantizeBlockwise(codes: Tensor, absmax: Tensor, opts: DequantizeOptions = {}): Tensor {
  checkTensor(codes, "codes");
  checkTensor(absmax, "absmax");
  if (codes.dtype !== "u8") fail("E_DTYPE", `codes must be u8, not ${codes.dtype}`);
  if (absmax.dtype !== "f32") fail("E_DTYPE", `absmax must be f32, not ${absmax.dtype}`);
  if (codes.device !== absmax.device) fail("E_DEVICE", `codes are on ${codes.device}, absmax on ${absmax.device}`);
  const bs = blockSizeOf(opts.blockSize);
  const blocks = Math.ceil(codes.numel / bs);
  if (absmax.numel !== blocks)
    fail("E_SHAPE", `${codes.numel} codes in blocks of ${bs} need ${blocks} absmax values, got ${absmax.numel}`);
  const map = mapOf(opts);
  let out: Tensor;
  let made = false;
  if (opts.out !== undefined) {
    out = checkTensor(opts.out, "out");
    if (!isFloatType(out.dtype)) fail("E_DTYPE", `out must be f32, bf16 or f16, not ${out.dtype}`);
    if (opts.dtype !== undefined && opts.dtype !== out.dtype) fail("E_DTYPE", `out is ${out.dtype}, dtype asks ${opts.dtype}`);
    if (out.numel !== codes.numel) fail("E_SHAPE", `out has ${out.numel} elements, the codes ${codes.numel}`);
    if (out.device !== codes.device) fail("E_DEVICE", "out must be on the codes' device");
  } else {
    const dtype = opts.dtype ?? "f32";
    if (!isFloatType(dtype)) fail("E_DTYPE", `dequantizeBlockwise writes f32, bf16 or f16, not ${String(dtype)}`);
    out = Tensor.empty(codes.shape, dtype, codes.device);
    made = true;
  }
  try {
    native().dequantizeBlockwise(codes.handle, absmax.handle, codes.numel, out.handle, DTYPE_CODE[out.dtype], bs, map);
  } catch (e) {
    if (made) out.dispose();
    throw e;
  }
  return out;
}
