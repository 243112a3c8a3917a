// The benchmark workload of DESIGN §6: the weight matrices of 4 LLaMA-7B decoder layers.
// bench/torch_baseline.py builds the same list (keep the two in step).

export interface MatrixSpec {
  name: string;
  shape: [number, number];
}

export interface Workload {
  /** Human description, e.g. "4 LLaMA-7B decoder layers". */
  description: string;
  /** Every dimension divided by this (floored, at least 1); 1 = the real shapes. */
  scale: number;
  matrices: MatrixSpec[];
  params: number;
}

export const LLAMA7B_HIDDEN = 4096;
export const LLAMA7B_FFN = 11008;
/** Tensors of the whole LLaMA-7B model: 32 layers × (7 matrices + 2 norms) + embed, final norm, head. */
export const LLAMA7B_TENSORS = 291;
/** Parameters of the unscaled §6 workload. */
export const FULL_WORKLOAD_PARAMS = 809_500_672;

/** d / scale, floored, at least 1 (the same rule in torch_baseline.py). */
export function scaleDim(d: number, scale: number): number {
  return Math.max(1, Math.floor(d / scale));
}

export function llamaLayers(layers = 4, scale = 1): Workload {
  const h = scaleDim(LLAMA7B_HIDDEN, scale);
  const f = scaleDim(LLAMA7B_FFN, scale);
  const matrices: MatrixSpec[] = [];
  for (let l = 0; l < layers; l++) {
    for (const n of ["q", "k", "v", "o"]) matrices.push({ name: `l${l}.${n}`, shape: [h, h] });
    matrices.push({ name: `l${l}.gate`, shape: [f, h] });
    matrices.push({ name: `l${l}.up`, shape: [f, h] });
    matrices.push({ name: `l${l}.down`, shape: [h, f] });
  }
  const params = matrices.reduce((s, m) => s + m.shape[0] * m.shape[1], 0);
  const description = `${layers} LLaMA-7B decoder layers (${matrices.length} matrices` +
    (scale === 1 ? ")" : `, every dimension / ${scale}: ${h}x${h}, ${f}x${h}, ${h}x${f})`);
  return { description, scale, matrices, params };
}

// The number DESIGN §6 quotes; a mismatch here is a bug in the shapes above.
{
  const n = llamaLayers(4, 1).params;
  if (n !== FULL_WORKLOAD_PARAMS) throw new Error(`workload has ${n} params, DESIGN §6 says ${FULL_WORKLOAD_PARAMS}`);
}
