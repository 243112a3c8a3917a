// Float64 GaLore reference with its own exact SVD (cyclic Jacobi on the Gram matrix of the side
// asked for). Nothing here calls slimopt's math.

/** Eigen-decomposition of a symmetric n x n matrix (row-major, copied): values descending, vectors
 *  as rows of `vecs` in the same order. */
export function jacobiEigen(a0: Float64Array, n: number): { vals: Float64Array; vecs: Float64Array } {
  const A = Float64Array.from(a0);
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0, tot = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { const x = A[i * n + j] ** 2; tot += x; if (i !== j) off += x; }
    if (off <= 1e-32 * tot) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = A[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (A[q * n + q] - A[p * n + p]) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1), s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = A[k * n + p], akq = A[k * n + q];
          A[k * n + p] = c * akp - s * akq; A[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = A[p * n + k], aqk = A[q * n + k];
          A[p * n + k] = c * apk - s * aqk; A[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = V[k * n + p], vkq = V[k * n + q];
          V[k * n + p] = c * vkp - s * vkq; V[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => A[y * n + y] - A[x * n + x]);
  const vals = new Float64Array(n), vecs = new Float64Array(n * n);
  order.forEach((j, r) => { vals[r] = A[j * n + j]; for (let k = 0; k < n; k++) vecs[r * n + k] = V[k * n + j]; });
  return { vals, vecs };
}

/** Top-r singular vectors of X (rows x cols) of one side, as r arrays, with DESIGN §4's sign rule
 *  against `prev` (r arrays, or zeros/undefined at the first refresh). */
export function topVectors(X: ArrayLike<number>, rows: number, cols: number, r: number, left: boolean,
                           prev?: Float64Array[]): Float64Array[] {
  const n = left ? rows : cols;
  const G = new Float64Array(n * n);
  for (let a = 0; a < n; a++) for (let b = 0; b < n; b++) {
    let s = 0;
    if (left) for (let j = 0; j < cols; j++) s += X[a * cols + j] * X[b * cols + j];
    else for (let i = 0; i < rows; i++) s += X[i * cols + a] * X[i * cols + b];
    G[a * n + b] = s;
  }
  const { vecs } = jacobiEigen(G, n);
  const out: Float64Array[] = [];
  for (let j = 0; j < r; j++) {
    const v = vecs.slice(j * n, (j + 1) * n);
    let dot = 0;
    if (prev) for (let i = 0; i < n; i++) dot += prev[j][i] * v[i];
    let flip: boolean;
    if (dot !== 0) flip = dot < 0;
    else { let best = 0; for (let i = 1; i < n; i++) if (Math.abs(v[i]) > Math.abs(v[best])) best = i; flip = v[best] < 0; }
    if (flip) for (let i = 0; i < n; i++) v[i] = -v[i];
    out.push(v);
  }
  return out;
}

export type RefSide = "right" | "left" | "full";

export interface GaloreRef {
  rows: number; cols: number; r: number; side: RefSide;
  w: Float64Array; m: Float64Array; v: Float64Array;
  A?: Float64Array[]; B?: Float64Array[];  // left vectors (length rows), right vectors (length cols)
}

export function newGaloreRef(w: ArrayLike<number>, rows: number, cols: number, r: number, side: RefSide): GaloreRef {
  const rn = side === "right" ? rows * r : side === "left" ? r * cols : r * r;
  return { rows, cols, r, side, w: Float64Array.from(w), m: new Float64Array(rn), v: new Float64Array(rn) };
}

/** Refreshes the reference projector(s) from g (kept when g is all zero) when `refresh`, then
 *  returns R = project(g) (float64). */
export function projectRef(s: { rows: number; cols: number; r: number; side: RefSide; A?: Float64Array[]; B?: Float64Array[] },
                           g: ArrayLike<number>, refresh: boolean): Float64Array {
  const { rows, cols, r } = s;
  let zero = true;
  for (let i = 0; i < g.length; i++) if (g[i] !== 0) { zero = false; break; }
  if (refresh && !zero) {
    if (s.side !== "right") s.A = topVectors(g, rows, cols, r, true, s.A);
    if (s.side !== "left") s.B = topVectors(g, rows, cols, r, false, s.B);
  }
  const A = s.A ?? Array.from({ length: r }, () => new Float64Array(rows));
  const B = s.B ?? Array.from({ length: r }, () => new Float64Array(cols));
  let R: Float64Array;
  if (s.side === "right") {         // G B^T: rows x r
    R = new Float64Array(rows * r);
    for (let i = 0; i < rows; i++) for (let k = 0; k < r; k++) { let x = 0; for (let j = 0; j < cols; j++) x += g[i * cols + j] * B[k][j]; R[i * r + k] = x; }
  } else if (s.side === "left") {   // A^T G: r x cols
    R = new Float64Array(r * cols);
    for (let k = 0; k < r; k++) for (let j = 0; j < cols; j++) { let x = 0; for (let i = 0; i < rows; i++) x += A[k][i] * g[i * cols + j]; R[k * cols + j] = x; }
  } else {                          // A^T G B^T: r x r
    R = new Float64Array(r * r);
    for (let a = 0; a < r; a++) for (let b = 0; b < r; b++) {
      let x = 0;
      for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) x += A[a][i] * g[i * cols + j] * B[b][j];
      R[a * r + b] = x;
    }
  }
  return R;
}

/** back(N) at element (i, j), float64. */
export function backRefAt(s: { cols: number; r: number; side: RefSide; A?: Float64Array[]; B?: Float64Array[] }, N: Float64Array,
                          i: number, j: number): number {
  const { cols, r } = s;
  let u = 0;
  if (s.side === "right") for (let k = 0; k < r; k++) u += N[i * r + k] * s.B![k][j];
  else if (s.side === "left") for (let k = 0; k < r; k++) u += s.A![k][i] * N[k * cols + j];
  else for (let a = 0; a < r; a++) for (let b = 0; b < r; b++) u += s.A![a][i] * N[a * r + b] * s.B![b][j];
  return u;
}

/** One GaLoreAdamW step in float64. refresh: recompute the projector(s) from g first; t: the Adam
 *  step (1-based). Skip refresh when g is all zero (the previous projector stays). */
export function galoreRefStep(s: GaloreRef, g: ArrayLike<number>, refresh: boolean, t: number, lr: number,
                              b1: number, b2: number, eps: number, wd: number, scale: number): void {
  const { rows, cols } = s;
  const R = projectRef(s, g, refresh);
  if (!s.A) s.A = Array.from({ length: s.r }, () => new Float64Array(rows));
  if (!s.B) s.B = Array.from({ length: s.r }, () => new Float64Array(cols));
  const N = new Float64Array(R.length);
  for (let i = 0; i < R.length; i++) {
    s.m[i] = b1 * s.m[i] + (1 - b1) * R[i];
    s.v[i] = b2 * s.v[i] + (1 - b2) * R[i] * R[i];
    N[i] = s.m[i] / (Math.sqrt(s.v[i]) + eps);
  }
  const c = lr * Math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * scale;
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
    const idx = i * cols + j;
    s.w[idx] = (s.w[idx] - c * backRefAt(s, N, i, j)) * (1 - lr * wd);
  }
}

/** A rows x cols gradient L diag(s) R + noise whose top q singular values are well separated:
 *  orthonormal factors, s_j linear from 1 down to 0.1 (q > 1), and a noise floor (singular values
 *  about 0.002) far below them. Its top q singular vectors are stable to f32 rounding: an f32
 *  solver can match an exact double one to ~1e-6 (gap 0.9/(q-1) against eps ||G|| = 6e-8). (A
 *  geometric spectrum sinks into the noise after a few dozen vectors: those vectors are then
 *  determined only to ~eps ||G||^2 / gap, which no f32 solver meets; see issue #4.) */
export function separatedGradient(rng: { normals(n: number, std?: number): Float32Array }, rows: number, cols: number,
                                  q: number, scale = 1): Float32Array {
  q = Math.min(q, rows, cols);
  const orthonormal = (count: number, len: number): Float64Array[] => {
    const vs: Float64Array[] = [];
    for (let j = 0; j < count; j++) {
      const v = Float64Array.from(rng.normals(len));
      for (let pass = 0; pass < 2; pass++) {
        for (const u of vs) { let d = 0; for (let i = 0; i < len; i++) d += u[i] * v[i]; for (let i = 0; i < len; i++) v[i] -= d * u[i]; }
        let nn = 0; for (let i = 0; i < len; i++) nn += v[i] * v[i];
        nn = Math.sqrt(nn); for (let i = 0; i < len; i++) v[i] /= nn;
      }
      vs.push(v);
    }
    return vs;
  };
  const L = orthonormal(q, rows), R = orthonormal(q, cols);
  const noise = (0.002 / (Math.sqrt(rows) + Math.sqrt(cols))) * scale;
  const g = Float64Array.from(rng.normals(rows * cols, noise));
  for (let j = 0; j < q; j++) {
    const s = (q > 1 ? 1 - (0.9 * j) / (q - 1) : 1) * scale;
    const l = L[j], rr = R[j];
    for (let i = 0; i < rows; i++) {
      const a = s * l[i];
      for (let c = 0; c < cols; c++) g[i * cols + c] += a * rr[c];
    }
  }
  return Float32Array.from(g);
}

/** A gradient whose top q = r + 2 singular values fall by 1.5 between neighbours over a 1e-3 noise
 *  floor (random, not orthonormal, factors): for r = 5 (the GPU suite's 12-step tests) all of them
 *  stand well above the noise. Not for large r: from about the 15th the values sink into the
 *  noise, whose vectors no f32 solver determines (use separatedGradient there). */
export function geometricGradient(rng: { normals(n: number, std?: number): Float32Array }, rows: number, cols: number,
                                  r: number): Float32Array {
  const q = Math.min(rows, cols, r + 2);
  const L = rng.normals(rows * q), R = rng.normals(q * cols), g = rng.normals(rows * cols, 1e-3);
  for (let j = 0; j < q; j++) {
    const s = 1.5 ** -j / Math.sqrt(rows);
    for (let i = 0; i < rows; i++) {
      const a = s * L[i * q + j];
      for (let c = 0; c < cols; c++) g[i * cols + c] += a * R[j * cols + c];
    }
  }
  return g;
}
