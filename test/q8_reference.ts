// Shared pieces of the 8-bit state suites (Grass, GaLore stateBits 8): the maps as slimopt builds
// them (checked against bitsandbytes' construction in test/quant.test.ts), the code of 0, the
// widest rounding step, code comparisons and the comparison against an f32-state run.
import { quant, Parameter, tensor, Tensor } from "../lib";
import { refDequantize } from "./quant_reference";

const { abs, max } = Math;

export const MAP_M = quant.dynamicMap(true);
export const MAP_V = quant.dynamicMap(false);
export const Q8_BLOCK = 256;

/** Index of the entry nearest 0 (the code every state starts at). */
export function zeroCodeOf(map: Float32Array): number {
  let best = 0;
  for (let i = 1; i < map.length; i++) if (abs(map[i]) < abs(map[best])) best = i;
  return best;
}

/** Half the widest gap between neighbouring codes of a map (the most one rounding moves a value,
 *  in units of its block's absmax). */
export function maxHalfGap(map: Float32Array): number {
  let g = 0;
  for (let i = 1; i < map.length; i++) g = max(g, map[i] - map[i - 1]);
  return g / 2;
}

/** Codes computed from inputs that differ in the last bits: mostly equal, never more than one
 *  code apart. */
export function expectCodesClose(got: ArrayLike<number>, want: ArrayLike<number>, minSame: number): void {
  let same = 0, far = 0;
  for (let i = 0; i < got.length; i++) {
    if (got[i] === want[i]) same++;
    else if (abs(got[i] - want[i]) > 1) far++;
  }
  expect(same / got.length).toBeGreaterThanOrEqual(minSame);
  expect(far).toBe(0);
}

/** An 8-bit run against an f32-state run of the same problem (50 steps, b1 0.9, b2 0.999): the
 *  dequantized moments and the parameters. Each step requantizes once: an error of at most half
 *  the map's widest gap in units of the block's absmax (<= the largest |m| / v), decayed by beta
 *  per step since: |m_q - m| <= gap/2 / (1 - b1) = 10 gap/2; for v the 50 steps sum to <= 50 gap/2.
 *  The parameters as test/adamw8bit.test.ts's drift bound: each update lr·N is off by the
 *  states' relative quantization error (~0.5%), 50 steps of lr 1e-3: <= 2.5e-4 per element
 *  updated. */
export function expectCloseToF32(f: { w: Float32Array; m: Float32Array; v: Float32Array },
                                 q: { w: Float32Array; m: Float32Array; v: Float32Array }, w0: Float32Array): void {
  let maxM = 0, maxV = 0, errM = 0, errV = 0, errW = 0, moved = 0;
  for (let i = 0; i < f.m.length; i++) {
    maxM = max(maxM, abs(f.m[i])); maxV = max(maxV, f.v[i]);
    errM = max(errM, abs(f.m[i] - q.m[i])); errV = max(errV, abs(f.v[i] - q.v[i]));
  }
  // Per element the f32 run updated (Grass leaves the unselected lines alone).
  let updated = 0;
  for (let i = 0; i < f.w.length; i++) {
    if (f.w[i] === w0[i]) continue;
    updated++;
    errW += abs(f.w[i] - q.w[i]);
    moved += abs(f.w[i] - w0[i]);
  }
  expect(errM / maxM).toBeLessThan(10 * maxHalfGap(MAP_M));
  expect(errV / maxV).toBeLessThan(50 * maxHalfGap(MAP_V));
  expect(moved / updated).toBeGreaterThan(2e-3);  // the problem is not trivial
  expect(errW / updated).toBeLessThan(2.5e-4);
  expect(errW).toBeGreaterThan(0);  // the two runs are not the same code
}

/** What expectStateBits8CloseToF32 needs of an optimizer with stateBits 8 (GaLore, Grass). */
interface Q8Optimizer {
  step(): void;
  dispose(): void;
  stateOf(p: Parameter): { expAvg: Tensor; expAvgSq: Tensor; absmaxM?: Tensor; absmaxV?: Tensor } | undefined;
}

/** One CPU parameter of `shape` starting at w0, through `grads`, once with stateBits 32 and once
 *  with 8 (`make` builds the optimizer around it); the 8-bit run's dequantized moments and its
 *  parameters against the f32 run's (expectCloseToF32). */
export async function expectStateBits8CloseToF32(make: (p: Parameter, stateBits: 32 | 8) => Q8Optimizer, shape: number[],
                                                 w0: Float32Array, grads: Float32Array[]): Promise<void> {
  const runs: { w: Float32Array; m: Float32Array; v: Float32Array }[] = [];
  for (const stateBits of [32, 8] as const) {
    const p = new Parameter(tensor(w0, shape, { device: "cpu" }));
    const opt = make(p, stateBits);
    for (const g of grads) { p.grad.copyFrom(g); opt.step(); }
    const st = opt.stateOf(p)!;
    const dequantized = async (codes: Tensor, absmax: Tensor, map: Float32Array) =>
      refDequantize((await codes.toTypedArray()) as Uint8Array, await absmax.toFloat32Array(), map, Q8_BLOCK);
    const m = stateBits === 8 ? await dequantized(st.expAvg, st.absmaxM!, MAP_M) : await st.expAvg.toFloat32Array();
    const v = stateBits === 8 ? await dequantized(st.expAvgSq, st.absmaxV!, MAP_V) : await st.expAvgSq.toFloat32Array();
    runs.push({ w: await p.data.toFloat32Array(), m, v });
    opt.dispose();
  }
  expectCloseToF32(runs[0], runs[1], w0);
}
