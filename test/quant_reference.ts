// References for the quantization suites, written from the definitions and nothing of slimopt's:
// bitsandbytes' map construction (torch float32 semantics), the nearest-code rule, dequantization.

const F = new Float32Array(1);
/** Rounds a double to float32 through a typed-array store (round to nearest even). */
export function toF32(x: number): number {
  F[0] = x;
  return F[0];
}

/** torch.linspace(start, end, steps, dtype=float32) as torch computes it: start and end rounded
 *  to float32, step = (end - start) / (steps - 1) in float32, then start + step*i for the first
 *  half and end - step*(steps-1-i) for the rest, each evaluated exactly and rounded once (in
 *  double the product and the sum are exact for these operands). */
export function torchLinspace(start: number, end: number, steps: number): number[] {
  const s = toF32(start), e = toF32(end);
  const step = toF32(toF32(e - s) / (steps - 1));
  const out: number[] = [];
  for (let i = 0; i < steps; i++) out.push(i < Math.floor(steps / 2) ? toF32(s + step * i) : toF32(e - step * (steps - i - 1)));
  return out;
}

/** bitsandbytes.functional.create_dynamic_map(signed, max_exponent_bits, total_bits), line by
 *  line, without the zero padding to 256 entries. */
export function bnbDynamicMap(signed: boolean, maxExponentBits = 7, totalBits = 8): number[] {
  const data: number[] = [];
  const nonSignBits = totalBits - 1;
  const additionalItems = 2 ** (nonSignBits - maxExponentBits) - 1;
  let i = 0;
  for (i = 0; i < maxExponentBits; i++) {
    const fractionItems = signed
      ? 2 ** (i + nonSignBits - maxExponentBits) + 1
      : 2 ** (i + nonSignBits - maxExponentBits + 1) + 1;
    const boundaries = torchLinspace(0.1, 1, fractionItems);
    const means: number[] = [];
    for (let k = 0; k + 1 < boundaries.length; k++) means.push(toF32(toF32(boundaries[k] + boundaries[k + 1]) / 2));
    // (10 ** e) * means: a Python float times a float32 tensor multiplies in float32.
    const scale = toF32(parseFloat(`1e${-(maxExponentBits - 1) + i}`));
    for (const m of means) data.push(toF32(scale * m));
    if (signed) for (const m of means) data.push(toF32(-scale * m));
  }
  if (additionalItems > 0) {
    const boundaries = torchLinspace(0.1, 1, additionalItems + 1);
    const scale = toF32(parseFloat(`1e${-(maxExponentBits - 1) + i - 1}`));
    for (let k = 0; k + 1 < boundaries.length; k++) {
      const m = toF32(toF32(boundaries[k] + boundaries[k + 1]) / 2);
      data.push(toF32(scale * m));
      if (signed) data.push(toF32(-scale * m));
    }
  }
  data.push(0, 1);
  return data.sort((a, b) => a - b);
}

/** The nearest entry of a sorted map; at an exact tie the one of smaller magnitude, then the
 *  lower index. Distances compared exactly (float32 operands, double arithmetic). */
export function nearestCode(map: ArrayLike<number>, x: number): number {
  let lo = 0, hi = map.length - 1;
  if (!(x > map[0])) return 0;
  if (!(x < map[hi])) return hi;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (map[mid] <= x) lo = mid;
    else hi = mid;
  }
  const dl = x - map[lo], dh = map[hi] - x;
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return Math.abs(map[hi]) < Math.abs(map[lo]) ? hi : lo;
}

/** Half the distance from map[c] to its farther neighbour: the most a value coded as c can be
 *  off (in units of absmax), for values inside the map's range. */
export function halfStep(map: ArrayLike<number>, c: number): number {
  const below = c > 0 ? map[c] - map[c - 1] : 0;
  const above = c + 1 < map.length ? map[c + 1] - map[c] : 0;
  return Math.max(below, above) / 2;
}

/** Reference blockwise quantization of float32 values (as the kernels normalise: x * (1/absmax),
 *  each rounded to float32; an all-zero block normalises to 0). */
export function refQuantize(x: ArrayLike<number>, map: ArrayLike<number>, block: number): { codes: Uint8Array; absmax: Float32Array } {
  const n = x.length;
  const blocks = Math.ceil(n / block);
  const codes = new Uint8Array(n);
  const absmax = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    let mx = 0;
    for (let i = b * block; i < Math.min(n, (b + 1) * block); i++) mx = Math.max(mx, Math.abs(x[i]));
    absmax[b] = mx;
    const inv = mx > 0 ? toF32(1 / mx) : 0;
    for (let i = b * block; i < Math.min(n, (b + 1) * block); i++) codes[i] = nearestCode(map, toF32(x[i] * inv));
  }
  return { codes, absmax };
}

/** values[code] * absmax, rounded to float32. */
export function refDequantize(codes: ArrayLike<number>, absmax: ArrayLike<number>, map: ArrayLike<number>, block: number): Float32Array {
  return Float32Array.from(codes, (c, i) => toF32(map[c] * absmax[Math.floor(i / block)]));
}

/** 4-bit codes unpacked (element 2j in the low nibble of byte j). */
export function unpack4(bytes: ArrayLike<number>, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (bytes[i >> 1] >> ((i & 1) * 4)) & 15;
  return out;
}
