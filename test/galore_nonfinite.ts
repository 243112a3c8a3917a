// GaLoreAdamW's non-finite skip on steps that keep the projector, shared by the CPU and CUDA
// suites. Such a step checks the R of as many tensors as fit together in one f32 gradient of the
// group (projected before anything is written) and scans the others' G first; either way it must
// skip the whole group. The bad value sits where the projector is zero on one case, so only IEEE's
// ±Inf·0 = NaN carries it into R.
import { GaLoreAdamW, GemmPrecision, Parameter, ProjType, tensor, Tensor } from "../lib";
import { Rng } from "./reference";
import { native } from "../lib/native";

async function raw(t: Tensor): Promise<number[]> { return Array.from(await t.toFloat32Array()); }

/** The shapes of a group: one tensor projected on the right (rows >= cols), one on the left. */
const SHAPES: [number, number][] = [[40, 24], [24, 40]];
/** Ranks of SHAPES and what the group's check reads at each, for projType std and full, on the CPU
 *  and on CUDA (the numel of each tensor's entry in the scan: R where held, else G's 960). The
 *  largest gradient holds 960 floats, less the R scratch (one R) and the scratch sT, which on
 *  CUDA also takes the project-back's B transposed (rank x cols of the widest tensor; on the CPU
 *  only Full tensors need it). CPU: rank 8, 320 + 320
 *  within 640 (full: 64 + 64 within 576); rank 12, 480 within 480, so tensor 0's R and tensor 1's
 *  G (full: 144 + 144 within 336); rank 24, none (full: 576 each against none). CUDA, std: rank 8,
 *  320 within 320; rank 12 and 24, none. Ranks 8 and 24 are multiples of 8, so that on CUDA's
 *  built-in path the project-back runs the streaming kernel (its skip flag included); rank 12
 *  runs the tensor-core GEMM there. */
export const NONFINITE_CASES: { rank: number; std: number[]; full: number[]; stdCuda: number[] }[] = [
  { rank: 8, std: [320, 320], full: [64, 64], stdCuda: [320, 960] },
  { rank: 12, std: [480, 960], full: [144, 144], stdCuda: [960, 960] },
  { rank: 24, std: [960, 960], full: [960, 960], stdCuda: [960, 960] },
];
/** "R R", "R G", ...: what each tensor's check reads, for test names. */
export function checkLabel(scanned: number[]): string { return scanned.map((n) => (n === 960 ? "G" : "R")).join(" "); }
export const NONFINITE_VALUES = [NaN, Infinity, -Infinity];

/** Zeroes the projector entries that multiply gradient element (i, j) of p (rows x cols). */
async function zeroProjectorAt(opt: GaLoreAdamW, p: Parameter, i: number, j: number): Promise<void> {
  const q = opt.projector(p);
  const zeroCol = async (t: Tensor) => {  // r x cols: column j
    const a = await t.toFloat32Array();
    for (let k = 0; k < q.rank; k++) a[k * q.cols + j] = 0;
    return tensor(a, t.shape, { device: p.device });
  };
  const zeroRow = async (t: Tensor) => {  // rows x r: row i
    const a = await t.toFloat32Array();
    for (let k = 0; k < q.rank; k++) a[i * q.rank + k] = 0;
    return tensor(a, t.shape, { device: p.device });
  };
  const given = q.side === "right" ? [await zeroCol(q.proj)]
    : q.side === "left" ? [await zeroRow(q.proj)] : [await zeroRow(q.proj), await zeroCol(q.projB!)];
  opt.setProjector(p, given[0], given[1]);
  for (const t of given) t.dispose();
}

export interface NonFiniteCase {
  /** The projector is zero where the bad value sits. */
  zeroed?: boolean;
  /** stepParam() rounds (per-parameter skip) instead of step(). */
  perParam?: boolean;
  precision?: GemmPrecision;
  /** The tensor whose gradient holds the bad value (default 1). */
  badIndex?: number;
  /** With step(): the numel of each entry of the group's check (NONFINITE_CASES), asserted. */
  scanned?: number[];
}

/** A group of SHAPES at `rank`: a refresh, a finite step, then a step whose gradient of tensor
 *  `badIndex` holds `bad` at (1, 2): every W, m, v and P unchanged, the step counted skipped; the
 *  next finite step runs. With `perParam`, stepParam() rounds: only that tensor is skipped. */
export async function expectNonFiniteSkip(device: string, projType: ProjType, rank: number, bad: number,
                                          { zeroed = false, perParam = false, precision = "tf32", badIndex = 1, scanned }: NonFiniteCase = {}): Promise<void> {
  const rng = new Rng(rank * 31 + (zeroed ? 7 : 0) + (perParam ? 3 : 0) + badIndex);
  const ps = SHAPES.map(([r, c]) => new Parameter(tensor(rng.normals(r * c), [r, c], { device })));
  const opt = new GaLoreAdamW([{ params: ps, rank, updateProjGap: 4, projType, precision }], { lr: 1e-2, weightDecay: 0.1 });
  const round = () => { if (perParam) for (const p of ps) opt.stepParam(p); else opt.step(); };
  const fill = () => ps.forEach((p) => p.grad.copyFrom(rng.normals(p.numel)));
  fill(); round();  // call 0: refresh
  fill(); round();  // call 1
  if (zeroed) await zeroProjectorAt(opt, ps[badIndex], 1, 2);
  const snap = async (p: Parameter) => {
    const s = opt.stateOf(p)!;
    return [await raw(p.data), await raw(s.expAvg), await raw(s.expAvgSq), await raw(s.proj!), s.projB ? await raw(s.projB) : []];
  };
  const before = await Promise.all(ps.map(snap));
  fill();
  const g = await raw(ps[badIndex].grad);
  g[1 * SHAPES[badIndex][1] + 2] = bad;
  ps[badIndex].grad.copyFrom(Float32Array.from(g));
  const scan = jest.spyOn(native(), "galoreScan");
  try {
    round();  // call 2: keeps the projector
    if (scanned) expect(scan.mock.calls.map((c) => c[1].map((e) => e[2]))).toEqual([scanned]);
  } finally {
    scan.mockRestore();
  }
  const after = await Promise.all(ps.map(snap));
  const other = 1 - badIndex;
  expect(after[badIndex]).toEqual(before[badIndex]);
  if (perParam) expect(after[other][0]).not.toEqual(before[other][0]);
  else expect(after[other]).toEqual(before[other]);
  expect(await opt.skippedSteps()).toBe(1);
  fill(); round();  // call 3: finite
  expect((await raw(ps[badIndex].data)).every(Number.isFinite)).toBe(true);
  expect(await raw(ps[badIndex].data)).not.toEqual(after[badIndex][0]);
  // A stepParam round with one tensor skipped counts as completed and as skipped.
  expect(await opt.completedStepsPerGroup()).toEqual([perParam ? 4 : 3]);
  opt.dispose();
}
