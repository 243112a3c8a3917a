// The 8-bit moments of GaLoreAdamW and GrassAdamW (stateBits 8), laid out as AdamW8bit's 8-bit
// states: blocks of Q8_BLOCK elements in flattened order, codes of bitsandbytes' signed dynamic map
// for m and of the unsigned one for v, one f32 absmax per block and moment. New moments are the
// code of 0 with absmax 0.
import { Device } from "../device";
import { native, QuantMapHandle } from "../native";
import { builtinMap, mapHandle, zeroCode } from "../quant";
import { Tensor, zeros } from "../tensor";

export const Q8_BLOCK = 256;

/** Absmax entries of an 8-bit moment of `elements` elements. */
export function q8Blocks(elements: number): number {
  return Math.ceil(elements / Q8_BLOCK);
}

export interface Q8Moments { m: Tensor; v: Tensor; absmaxM: Tensor; absmaxV: Tensor }

/** New 8-bit moments shaped `shape` on dev. Every tensor made goes through `keep` as soon as it
 *  exists, so the caller can free them if a later allocation fails. */
export function allocQ8Moments(shape: readonly number[], dev: Device, keep: (t: Tensor) => Tensor): Q8Moments {
  const blocks = [q8Blocks(shape.reduce((a, b) => a * b, 1))];
  const m = keep(Tensor.empty(shape, "u8", dev)), v = keep(Tensor.empty(shape, "u8", dev));
  native().fillBytes(m.handle, zeroCode(builtinMap("signed8")), m.nbytes);
  native().fillBytes(v.handle, zeroCode(builtinMap("unsigned8")), v.nbytes);
  return { m, v, absmaxM: keep(zeros(blocks, { device: dev })), absmaxV: keep(zeros(blocks, { device: dev })) };
}

/** The maps' native handles in the order the native steps take them: m's (signed), v's (unsigned). */
export function q8MapHandles(): [QuantMapHandle, QuantMapHandle] {
  return [mapHandle("signed8"), mapHandle("unsigned8")];
}
