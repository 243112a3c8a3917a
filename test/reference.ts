// Float64 references and helpers shared by the suites. Nothing here calls slimopt's math.

/** Deterministic test data (xorshift + Box-Muller in float64), independent of slimopt's RNG. */
export class Rng {
  private a: number; private b: number; private c: number; private d: number;
  constructor(seed: number) {
    // sfc32 seeded through splitmix-like scrambles; plain 32-bit integer ops (fast, no BigInt).
    let s = (seed * 0x9e3779b1 + 0x7f4a7c15) >>> 0;
    const next = () => { s = (s + 0x6d2b79f5) >>> 0; let z = s; z = Math.imul(z ^ (z >>> 15), z | 1); z ^= z + Math.imul(z ^ (z >>> 7), z | 61); return (z ^ (z >>> 14)) >>> 0; };
    this.a = next(); this.b = next(); this.c = next(); this.d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }
  uniform(): number { return (this.u32() + 0.5) / 4294967296; }
  normal(): number {
    return Math.sqrt(-2 * Math.log(this.uniform())) * Math.cos(2 * Math.PI * this.uniform());
  }
  normals(n: number, std = 1): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = std * this.normal();
    return a;
  }
}

/** Round a float64 to a float format with `mant` explicit mantissa bits and minimum normal
 *  exponent `emin` (nearest even). bf16: (7, -126); f16: (10, -14), max 65504. */
function roundFloat(x: number, mant: number, emin: number, max: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const q = 2 ** (Math.max(e, emin) - mant);
  const r = a / q;
  let n = Math.floor(r);
  const frac = r - n;
  if (frac > 0.5 || (frac === 0.5 && n % 2 === 1)) n++;
  const out = n * q;
  if (out > max) return x > 0 ? Infinity : -Infinity;
  return x < 0 ? -out : out;
}

export const roundBf16 = (x: number) => roundFloat(Math.fround(x), 7, -126, 3.3895313892515355e38);
export const roundF16 = (x: number) => roundFloat(Math.fround(x), 10, -14, 65504);
export function roundTo(dtype: string, x: number): number {
  return dtype === "bf16" ? roundBf16(x) : dtype === "f16" ? roundF16(x) : Math.fround(x);
}

/** ‖a − b‖ / ‖b‖ in float64. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return Math.sqrt(num / (den || 1));
}

export interface AdamRef { w: Float64Array; m: Float64Array; v: Float64Array; t: number }

/** One torch.optim.AdamW step in float64; `storage` rounds the parameter as its dtype stores it. */
export function adamwRefStep(s: AdamRef, g: ArrayLike<number>, lr: number, b1: number, b2: number, eps: number,
                             wd: number, storage: (x: number) => number = (x) => x): void {
  s.t += 1;
  const bc1 = 1 - b1 ** s.t, bc2 = 1 - b2 ** s.t;
  for (let i = 0; i < s.w.length; i++) {
    let w = s.w[i] * (1 - lr * wd);
    s.m[i] = b1 * s.m[i] + (1 - b1) * g[i];
    s.v[i] = b2 * s.v[i] + (1 - b2) * g[i] * g[i];
    const denom = Math.sqrt(s.v[i]) / Math.sqrt(bc2) + eps;
    w -= (lr / bc1) * (s.m[i] / denom);
    s.w[i] = storage(w);
  }
}

export function bitsEqual(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  const fa = Float32Array.from(a), fb = Float32Array.from(b);
  const ua = new Uint32Array(fa.buffer), ub = new Uint32Array(fb.buffer);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return false;
  return true;
}
