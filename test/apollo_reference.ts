// Float64 APOLLO reference (apollo_torch's step, DESIGN §4), given the projection P. Nothing here
// calls slimopt's math; P comes from the caller (rebuilt through the exported generator).

export interface ApolloHyperRef {
  lr: number; b1: number; b2: number; eps: number; wd: number;
  scale: number; scaleFront: boolean; limiter: boolean; gamma: number; channel: boolean;
}

export interface ApolloRef {
  rows: number; cols: number; r: number; left: boolean;
  w: Float64Array; m: Float64Array; v: Float64Array;
  /** The limiter's last norm; undefined before the first step. */
  prev?: number;
  /** Steps at which the limiter shrank the update. */
  limited: number;
}

export function newApolloRef(w: ArrayLike<number>, rows: number, cols: number, r: number): ApolloRef {
  const left = rows < cols;
  const rn = left ? r * cols : rows * r;
  return { rows, cols, r, left, w: Float64Array.from(w), m: new Float64Array(rn), v: new Float64Array(rn), limited: 0 };
}

/** One step t (1-based) with gradient g (rows x cols) and P ([r, cols] right, [rows, r] left).
 *  `storage` rounds W as its dtype stores it. */
export function apolloRefStep(s: ApolloRef, g: ArrayLike<number>, P: ArrayLike<number>, t: number, h: ApolloHyperRef,
                              storage: (x: number) => number = (x) => x): void {
  const { rows, cols, r, left } = s;
  const ch = left ? cols : rows;
  // R and Adam on it; per channel the sums of squares of R and N.
  const r2 = new Float64Array(ch), n2 = new Float64Array(ch);
  if (left) {        // R = P^T G: r x cols
    for (let k = 0; k < r; k++) for (let j = 0; j < cols; j++) {
      let x = 0;
      for (let i = 0; i < rows; i++) x += P[i * r + k] * g[i * cols + j];
      const idx = k * cols + j;
      s.m[idx] = h.b1 * s.m[idx] + (1 - h.b1) * x;
      s.v[idx] = h.b2 * s.v[idx] + (1 - h.b2) * x * x;
      const n = s.m[idx] / (Math.sqrt(s.v[idx]) + h.eps);
      r2[j] += x * x; n2[j] += n * n;
    }
  } else {           // R = G P^T: rows x r
    for (let i = 0; i < rows; i++) for (let k = 0; k < r; k++) {
      let x = 0;
      for (let j = 0; j < cols; j++) x += g[i * cols + j] * P[k * cols + j];
      const idx = i * r + k;
      s.m[idx] = h.b1 * s.m[idx] + (1 - h.b1) * x;
      s.v[idx] = h.b2 * s.v[idx] + (1 - h.b2) * x * x;
      const n = s.m[idx] / (Math.sqrt(s.v[idx]) + h.eps);
      r2[i] += x * x; n2[i] += n * n;
    }
  }
  // Scales: per channel, or one for the tensor.
  const sc = new Float64Array(ch);
  if (h.channel) {
    for (let j = 0; j < ch; j++) sc[j] = Math.sqrt(n2[j]) / (Math.sqrt(r2[j]) + 1e-8);
  } else {
    let a = 0, b = 0;
    for (let j = 0; j < ch; j++) { a += r2[j]; b += n2[j]; }
    sc.fill(Math.sqrt(b) / (Math.sqrt(a) + 1e-8));
  }
  // |G~| computed directly on the scaled gradient (the reference computes it that way).
  let norm2 = 0;
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
    const x = g[i * cols + j] * sc[left ? j : i];
    norm2 += x * x;
  }
  let norm = Math.sqrt(norm2);
  if (h.scaleFront) norm *= Math.sqrt(h.scale);
  let f = 1;
  if (h.limiter) {
    if (s.prev === undefined) {
      s.prev = norm;
    } else {
      const lim = Math.max(norm / (s.prev + 1e-8), h.gamma) / h.gamma;
      if (lim > 1) s.limited++;
      f = 1 / lim;
      s.prev = norm / lim;
    }
  }
  const stepSize = h.lr * Math.sqrt(1 - h.b2 ** t) / (1 - h.b1 ** t);
  const c = stepSize * Math.sqrt(h.scale) * f;
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
    const idx = i * cols + j;
    s.w[idx] = storage((s.w[idx] - c * sc[left ? j : i] * g[idx]) * (1 - h.lr * h.wd));
  }
}
