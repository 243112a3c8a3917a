// GaLoreAdamW's non-finite skip on steps that keep the projector, shared by the CPU and CUDA
// suites. Such a step checks every tensor's R (projected before anything is written) when all R
// fit in one f32 gradient of the group, else it scans G first; both must skip the whole group.
// The bad value sits where the projector is zero on one case, so only IEEE's ±Inf·0 = NaN carries
// it into R.
import { GaLoreAdamW, GemmPrecision, Parameter, ProjType, tensor, Tensor } from "../lib";
import { Rng } from "./reference";

async function raw(t: Tensor): Promise<number[]> { return Array.from(await t.toFloat32Array()); }

/** The shapes of a group: one tensor projected on the right (rows >= cols), one on the left. */
const SHAPES: [number, number][] = [[40, 24], [24, 40]];
/** A rank whose R all fit in one gradient with the optimizer's scratch (960 floats; R is checked:
 *  320 + 320 and the 320 of the R scratch, or 64 + 64 and 64 + 320 for "full") and one whose do not
 *  (G is scanned first: 960 + 960, or 576 + 576). Multiples of 8, so
 *  that on CUDA's built-in path the project-back runs the streaming kernel (its skip flag
 *  included). */
export const NONFINITE_RANKS = [8, 24];
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

/** A group of SHAPES at `rank`: a refresh, a finite step, then a step whose gradient of tensor 1
 *  holds `bad` at (1, 2) (the projector zero there when `zeroed`): every W, m, v and P unchanged,
 *  the step counted skipped; the next finite step runs. With `perParam`, stepParam() rounds: only
 *  tensor 1 is skipped. */
export async function expectNonFiniteSkip(device: string, projType: ProjType, rank: number, bad: number, zeroed: boolean,
                                          perParam = false, precision: GemmPrecision = "tf32"): Promise<void> {
  const rng = new Rng(rank * 31 + (zeroed ? 7 : 0) + (perParam ? 3 : 0));
  const ps = SHAPES.map(([r, c]) => new Parameter(tensor(rng.normals(r * c), [r, c], { device })));
  const opt = new GaLoreAdamW([{ params: ps, rank, updateProjGap: 4, projType, precision }], { lr: 1e-2, weightDecay: 0.1 });
  const round = () => { if (perParam) for (const p of ps) opt.stepParam(p); else opt.step(); };
  const fill = () => ps.forEach((p) => p.grad.copyFrom(rng.normals(p.numel)));
  fill(); round();  // call 0: refresh
  fill(); round();  // call 1
  if (zeroed) await zeroProjectorAt(opt, ps[1], 1, 2);
  const snap = async (p: Parameter) => {
    const s = opt.stateOf(p)!;
    return [await raw(p.data), await raw(s.expAvg), await raw(s.expAvgSq), await raw(s.proj!), s.projB ? await raw(s.projB) : []];
  };
  const before = await Promise.all(ps.map(snap));
  fill();
  const g = await raw(ps[1].grad);
  g[1 * SHAPES[1][1] + 2] = bad;
  ps[1].grad.copyFrom(Float32Array.from(g));
  round();  // call 2: keeps the projector
  const after = await Promise.all(ps.map(snap));
  expect(after[1]).toEqual(before[1]);
  if (perParam) expect(after[0][0]).not.toEqual(before[0][0]);
  else expect(after[0]).toEqual(before[0]);
  expect(await opt.skippedSteps()).toBe(1);
  fill(); round();  // call 3: finite
  expect((await raw(ps[1].data)).every(Number.isFinite)).toBe(true);
  expect(await raw(ps[1].data)).not.toEqual(after[1][0]);
  // A stepParam round with one tensor skipped counts as completed and as skipped.
  expect(await opt.completedStepsPerGroup()).toEqual([perParam ? 4 : 3]);
  opt.dispose();
}
