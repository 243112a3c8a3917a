// GaLoreAdamW (DESIGN §4): Adam on a rank-r projection of each 2-D gradient, the projector the
// top-r singular vectors of the gradient, refreshed every updateProjGap step() calls. Groups
// without `rank` run plain Adam in the same (GaLore) convention through the multi-tensor engine.
import { Device } from "../device";
import { DType, DTYPE_CODE } from "../dtype";
import { fail, SlimoptError } from "../errors";
import { noticeBuiltinLinalg } from "../linalg";
import { native, NativeBufferHandle } from "../native";
import { GEMM_MODE, GemmPrecision, isGemmPrecision } from "../linalg";
import { Parameter } from "../parameter";
import { blockFloats, sliceBlock, Tensor, zeros } from "../tensor";
import { AdamConvention, AdamGroupEngine, engineMoments } from "./adam_core";
import { adamHyper, AdamWOptions, validateAdamOptions } from "./adamw";
import { checkNumber, ParamGroup, ParamGroupSpec, sameShape, StateDict } from "./optimizer";
import { allocQ8Moments, q8Blocks, q8MapHandles } from "./q8_states";
import { Optimizer } from "./optimizer";

export type ProjType = "std" | "reverse_std" | "left" | "right" | "full";
export const PROJ_TYPES: ProjType[] = ["std", "reverse_std", "left", "right", "full"];

export interface GaLoreOptions extends AdamWOptions {
  /** Rank of the projection; a group without it is plain Adam (GaLore convention). */
  rank?: number;
  /** Refresh the projector every this many step() calls (at calls 0, T, 2T, ...). */
  updateProjGap?: number;
  /** α: the projected-back update is scaled by it. */
  scale?: number;
  projType?: ProjType;
  /** "svd" (default): the exact top-r singular vectors. "warm": on CUDA, subspace iteration started
   *  from the previous projector (2 passes over the gradient, no Gram matrix, the GEMMs in
   *  `precision`); exact only to the extent the top subspace moved little since the last refresh
   *  (each vector's error shrinks like (lambda_{k+1}/lambda_i)^2 per refresh). The first refresh of
   *  a tensor is always exact; the CPU always computes the exact vectors. */
  projector?: "svd" | "warm";
  /** GPU GEMM precision of the projections: "tf32" (default), "f32" or "bf16" (operands rounded to
   *  bf16, f32 accumulation). The warm projector's GEMMs use tf32 when this is bf16. */
  precision?: GemmPrecision;
  /** 32 (default): f32 moments. 8: the moments of a rank group's tensors (shaped like R) are 8-bit
   *  codes as AdamW8bit's (blocks of 256 in flattened order, signed dynamic map for m, unsigned for
   *  v, one f32 absmax per block and state): ~2.03 bytes per element of R instead of 8. Groups
   *  without rank keep their stateDtype moments. Fixed once a tensor has state. */
  stateBits?: number;
}

const DEFAULTS: GaLoreOptions = {
  lr: 1e-3, betas: [0.9, 0.999], eps: 1e-6, weightDecay: 0, stateDtype: "f32", stochasticRounding: false,
  skipNonFinite: true, seed: 0, updateProjGap: 200, scale: 0.25, projType: "std", projector: "svd", precision: "tf32",
};

/** Side codes shared with the native side (GaloreSide). */
export const enum Side { Right = 0, Left = 1, Full = 2 }

interface LowRank {
  rows: number; cols: number; rank: number; side: Side;
  /** f32 moments, or (8-bit states) u8 codes with one f32 absmax per 256-block each. */
  m: Tensor; v: Tensor; pA: Tensor; pB?: Tensor;
  absmaxM?: Tensor; absmaxV?: Tensor;
  /** A refresh has been enqueued (the warm projector then starts from P). */
  refreshed: boolean;
}

interface RankGroupState {
  device: Device;
  /** int32 [completed steps, skipped steps] on the device. */
  counters: Tensor;
  /** int32 [1]: the current step's gradients hold a NaN/Inf (decided on the device). */
  flag: Tensor;
  /** step() calls so far (the refresh schedule). */
  calls: number;
  params: Map<Parameter, LowRank>;
}

/** (dim0, rest): how a parameter of more than 2 dims is viewed. */
export function view2d(p: Parameter): [number, number] {
  return [p.shape[0], p.numel / p.shape[0]];
}

export function sideOf(type: ProjType, rows: number, cols: number): Side {
  switch (type) {
    case "std": return rows >= cols ? Side.Right : Side.Left;
    case "reverse_std": return rows >= cols ? Side.Left : Side.Right;
    case "left": return Side.Left;
    case "right": return Side.Right;
    default: return Side.Full;
  }
}

export function rShape(s: Side, rows: number, cols: number, r: number): number[] {
  return s === Side.Right ? [rows, r] : s === Side.Left ? [r, cols] : [r, r];
}

/** R buffers of some tensors of a group for one step (GaLoreAdamW.allocHeld): on CUDA views over
 *  one block, with the project-backs' transpose area cut from it. */
interface HeldRs { slots: Map<Parameter, Tensor>; area?: Tensor; block?: Tensor }
/** Tensors that step one after another (GaLoreAdamW.projectionChunks); `together`: projected first,
 *  in one call, into R buffers of their own. */
interface ProjectionChunk { params: Parameter[]; together: boolean }

function disposeHeld(h: HeldRs): void {
  for (const t of h.slots.values()) t.dispose();
  h.area?.dispose();
  h.block?.dispose();
}

function rNumelOf(q: LowRank): number {
  return rShape(q.side, q.rows, q.cols, q.rank).reduce((a, b) => a * b, 1);
}

/** The refresh workspace: n f32 elements on dev, for one step (the kernels initialise what they read). */
export function workspace(n: number, dev: Device): Tensor {
  return zeros([n], { dtype: "f32", device: dev });
}

/** Whether the group's step() call number `calls` (0, 1, ...) refreshes its projectors: 0, T, 2T, ... */
export function refreshCall(g: { updateProjGap?: number }, calls: number): boolean {
  return calls % (g.updateProjGap as number) === 0;
}

/** The checks of a rank group's projection options and parameters, shared by GaLoreAdamW and
 *  GaLoreAdafactor (E_ARG). */
export function validateProjection(g: { params: Parameter[]; rank?: number; updateProjGap?: number; scale?: number;
                                        projType?: ProjType; projector?: string; precision?: string }, gi: number): void {
  const r = g.rank as number;
  if (!Number.isSafeInteger(r) || r <= 0) fail("E_ARG", `group ${gi} rank must be a positive integer, got ${String(r)}`);
  const gap = g.updateProjGap;
  if (!Number.isSafeInteger(gap) || (gap as number) <= 0)
    fail("E_ARG", `group ${gi} updateProjGap must be a positive integer, got ${String(gap)}`);
  checkNumber(`group ${gi} scale`, g.scale, 0, Number.MAX_VALUE);
  if (!PROJ_TYPES.includes(g.projType as ProjType))
    fail("E_ARG", `group ${gi} projType must be one of ${PROJ_TYPES.join(", ")}, got ${String(g.projType)}`);
  if (g.projector !== "svd" && g.projector !== "warm") fail("E_ARG", `group ${gi} projector must be "svd" or "warm"`);
  if (!isGemmPrecision(g.precision)) fail("E_ARG", `group ${gi} precision must be "tf32", "f32" or "bf16"`);
  for (const p of g.params) {
    if (p.shape.length < 2) fail("E_ARG", `group ${gi}: ${p.name} is ${p.shape.length}-D; a rank group takes 2-D or larger parameters`);
    const [rows, cols] = view2d(p);
    if (r > Math.min(rows, cols)) fail("E_ARG", `group ${gi}: rank ${r} exceeds min(${rows}, ${cols}) of ${p.name}`);
  }
}

/** Enqueues a refresh of the projector(s) of one tensor from its gradient (kept when *flag != 0).
 *  hasPrev is always true: a never-refreshed P is zeros, whose dot products are 0, and then the
 *  first-refresh rule (largest-magnitude entry positive) applies. */
export function refreshProjectors(grad: Tensor, q: { rows: number; cols: number; rank: number; side: Side; pA: Tensor; pB?: Tensor },
                                  flag: Tensor, method: number, mode: number, ws: Tensor | undefined, big: Tensor | undefined): void {
  const nat = native();
  const gt = DTYPE_CODE[grad.dtype];
  const wsH = ws?.handle ?? null, bigH = big?.handle ?? null;
  if (q.side === Side.Full) {
    nat.galoreRefresh(grad.handle, gt, q.rows, q.cols, q.rank, true, q.pA.handle, true, flag.handle, method, mode, wsH, bigH);
    nat.galoreRefresh(grad.handle, gt, q.rows, q.cols, q.rank, false, q.pB!.handle, true, flag.handle, method, mode, wsH, bigH);
  } else {
    nat.galoreRefresh(grad.handle, gt, q.rows, q.cols, q.rank, q.side === Side.Left, q.pA.handle, true, flag.handle, method, mode, wsH, bigH);
  }
}

/** f32 elements of device workspace a refresh of this tensor needs (0 on the CPU). */
export function refreshWorkspaceFloats(onDevice: Tensor, q: { rows: number; cols: number; rank: number; side: Side }, method: number): number {
  const nat = native();
  let n = 0;
  const sides = q.side === Side.Full ? [true, false] : [q.side === Side.Left];
  for (const left of sides) n = Math.max(n, nat.galoreRefreshWorkspace(onDevice.handle, q.rows, q.cols, q.rank, left, method));
  return n;
}

/** A tensor's projector as GaLoreAdamW holds it (live tensors): the side, the 2-D view, P (r x cols
 *  for "right", rows x r for "left" and "full") and, for "full", B (r x cols). */
export interface GaLoreProjector {
  side: "right" | "left" | "full";
  rows: number;
  cols: number;
  rank: number;
  proj: Tensor;
  projB?: Tensor;
}

const SIDE_NAMES = ["right", "left", "full"] as const;

/** Shapes of a tensor's projector(s): [P] or, for "full", [A, B]. */
function projectorShapes(side: Side, rows: number, cols: number, r: number): number[][] {
  if (side === Side.Right) return [[r, cols]];
  if (side === Side.Left) return [[rows, r]];
  return [[rows, r], [r, cols]];
}


/** R = project(grad) into `out` (f32, shaped like R: rows x r, r x cols or r x r) with the given
 *  projector, through the same GEMM layer and the same precision as a GaLoreAdamW step, so that the
 *  R it computes is the R the step would compute. Scratch: r x cols f32 for "full", rows x cols f32
 *  for a non-f32 gradient on CUDA (allocated for the call when not given). Validated before
 *  anything runs (E_ARG, E_SHAPE, E_DTYPE, E_DEVICE, E_DISPOSED). */
export function projectGradient(grad: Tensor, q: GaLoreProjector, out: Tensor,
                                opts: { precision?: GemmPrecision; scratchT?: Tensor; scratchBig?: Tensor } = {}): void {
  if (!(grad instanceof Tensor) || !(out instanceof Tensor)) fail("E_ARG", "projectGradient(grad, projector, out)");
  grad.assertLive("gradient");
  out.assertLive("output");
  const side = SIDE_NAMES.indexOf(q?.side as "right") as Side;
  if (side < 0) fail("E_ARG", `projector side must be "right", "left" or "full", got ${String(q?.side)}`);
  const { rows, cols, rank } = q;
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || !Number.isSafeInteger(rank) || rank < 1 || rank > Math.min(rows, cols))
    fail("E_ARG", `projector view ${rows} x ${cols} with rank ${rank} is not valid`);
  if (grad.numel !== rows * cols) fail("E_SHAPE", `gradient of ${grad.numel} elements for a ${rows} x ${cols} projector`);
  if (grad.dtype !== "f32" && grad.dtype !== "bf16" && grad.dtype !== "f16") fail("E_DTYPE", `gradient is ${grad.dtype}`);
  const precision = opts.precision ?? "tf32";
  if (!isGemmPrecision(precision)) fail("E_ARG", `precision must be "tf32", "f32" or "bf16"`);
  const dev = grad.device;
  const shapes = projectorShapes(side, rows, cols, rank);
  const ps = side === Side.Full ? [q.proj, q.projB] : [q.proj];
  ps.forEach((t, i) => {
    if (!(t instanceof Tensor)) fail("E_ARG", `projector ${i} is not a Tensor`);
    t.assertLive("projector");
    if (t.dtype !== "f32") fail("E_DTYPE", `projector is ${t.dtype}, not f32`);
    if (t.device !== dev) fail("E_DEVICE", `projector on ${t.device}, gradient on ${dev}`);
    if (t.numel !== shapes[i][0] * shapes[i][1]) fail("E_SHAPE", `projector ${i} must be [${shapes[i]}]`);
  });
  if (out.dtype !== "f32") fail("E_DTYPE", `output is ${out.dtype}, not f32`);
  if (out.device !== dev) fail("E_DEVICE", `output on ${out.device}, gradient on ${dev}`);
  if (out.numel !== rShape(side, rows, cols, rank).reduce((a, b) => a * b, 1))
    fail("E_SHAPE", `output must be [${rShape(side, rows, cols, rank)}]`);
  const need = (t: Tensor | undefined, n: number, what: string): { t: Tensor; own: boolean } => {
    if (t === undefined) return { t: zeros([n], { device: dev }), own: true };
    t.assertLive(what);
    if (t.dtype !== "f32" || t.device !== dev || t.numel < n) fail("E_SHAPE", `${what} must be f32 on ${dev} with ${n} elements or more`);
    return { t, own: false };
  };
  const made: Tensor[] = [];
  try {
    const sT = side === Side.Full ? need(opts.scratchT, rank * cols, "scratch T") : undefined;
    if (sT?.own) made.push(sT.t);
    const sBig = dev.kind === "cuda" && grad.dtype !== "f32" ? need(opts.scratchBig, rows * cols, "scratch") : undefined;
    if (sBig?.own) made.push(sBig.t);
    native().galoreProject(grad.handle, DTYPE_CODE[grad.dtype], q.proj.handle, q.projB?.handle ?? null, side, rows, cols, rank,
                           out.handle, sT?.t.handle ?? null, sBig?.t.handle ?? null, GEMM_MODE[precision]);
  } finally {
    for (const t of made) t.dispose();
  }
}

export class GaLoreAdamW extends Optimizer<GaLoreOptions> {
  private engines = new Map<ParamGroup<GaLoreOptions>, AdamGroupEngine>();
  private ranked = new Map<ParamGroup<GaLoreOptions>, RankGroupState>();
  /** Per device: sR (largest R), sT (largest r x cols of a Full tensor), sBig (GPU, non-f32), scalars. */
  private scratch = new Map<Device, { sR?: Tensor; sT?: Tensor; sBig?: Tensor; scalars?: Tensor }>();
  /** Layer-wise steps: each rank tensor's own non-finite flag. */
  private paramFlags = new Map<Parameter, Tensor>();
  /** Projected gradients given for the next step (setProjectedGrad). */
  private projectedGrads = new Map<Parameter, Tensor>();

  /** step() calls a new rank group starts from (see benchSkipFirstRefresh). */
  private initialCalls = 0;

  constructor(params: Parameter[] | ParamGroupSpec<GaLoreOptions>[], defaults: GaLoreOptions = {}) {
    super(params, { ...DEFAULTS, ...defaults });
    for (const g of this.paramGroups) if (this.isRanked(g)) noticeBuiltinLinalg(this.groupDevice(g));
  }

  /** @internal For benchmarks of the steady step: rank groups created after this call do not
   *  refresh at their first step (their projectors stay zeros until the next scheduled refresh).
   *  GEMM timings do not depend on the values, so the step costs what a steady step costs. */
  benchSkipFirstRefresh(): void {
    this.initialCalls = 1;
  }

  protected validateGroup(g: ParamGroup<GaLoreOptions>, gi: number): void {
    validateAdamOptions(g, gi);
    if (g.stateBits !== undefined && g.stateBits !== 32 && g.stateBits !== 8)
      fail("E_ARG", `group ${gi} stateBits must be 32 or 8, got ${String(g.stateBits)}`);
    if (g.rank === undefined || g.rank === null) return;
    validateProjection(g, gi);
    if (g.stateDtype !== "f32") fail("E_ARG", `group ${gi}: a rank group keeps f32 states (stateBits 8 for 8-bit ones)`);
    if (g.stochasticRounding) fail("E_ARG", `group ${gi}: stochastic rounding is not available in a rank group`);
    for (const p of g.params) {
      const [rows, cols] = view2d(p);
      const st = this.ranked?.get(g)?.params.get(p);
      if (st && (st.rank !== g.rank || st.side !== sideOf(g.projType as ProjType, rows, cols)))
        fail("E_ARG", `group ${gi}: rank and projType cannot change once ${p.name} has state`);
      if (st && !!st.absmaxM !== (g.stateBits === 8))
        fail("E_ARG", `group ${gi}: stateBits cannot change once ${p.name} has state (it has ${st.absmaxM ? 8 : 32}-bit states)`);
    }
  }

  private isRanked(g: ParamGroup<GaLoreOptions>): boolean {
    return g.rank !== undefined && g.rank !== null;
  }

  /** Allocates what the group lacks (zeros); on failure frees what it made and rethrows. */
  private prepareRanked(g: ParamGroup<GaLoreOptions>): RankGroupState {
    let st = this.ranked.get(g);
    const made: Tensor[] = [];
    const alloc = (shape: number[], dtype: DType, dev: Device) => { const t = zeros(shape, { dtype, device: dev }); made.push(t); return t; };
    try {
      const dev = this.groupDevice(g);
      const fresh = !st;
      const s: RankGroupState = st ?? { device: dev, counters: alloc([2], "i32", dev), flag: alloc([1], "i32", dev), calls: this.initialCalls, params: new Map() };
      const added: Parameter[] = [];
      for (const p of g.params) {
        if (s.params.has(p)) continue;
        const [rows, cols] = view2d(p);
        const r = g.rank as number;
        const side = sideOf(g.projType as ProjType, rows, cols);
        const shapeR = rShape(side, rows, cols, r);
        const moments = g.stateBits === 8
          ? allocQ8Moments(shapeR, dev, (t) => { made.push(t); return t; })
          : { m: alloc(shapeR, "f32", dev), v: alloc(shapeR, "f32", dev) };
        const lr: LowRank = {
          rows, cols, rank: r, side, ...moments,
          pA: alloc(side === Side.Right ? [r, cols] : [rows, r], "f32", dev),
          pB: side === Side.Full ? alloc([r, cols], "f32", dev) : undefined,
          refreshed: false,
        };
        s.params.set(p, lr);
        added.push(p);
      }
      // Scratch of the device: sized for the largest tensor seen.
      const sc = this.scratch.get(dev) ?? {};
      let needR = 0, needT = 0, needBig = 0;
      for (const q of s.params.values()) {
        needR = Math.max(needR, rNumelOf(q));
        // sT: Full's r x cols product; on CUDA also the project-back's B transposed at rank <= 128
        // (cuda/launchers.h kBackTransposeMaxRank: cuBLAS's K-major kernels there).
        if (q.side === Side.Full || (dev.kind === "cuda" && q.rank <= native().galoreBackTransposeMaxRank)) needT = Math.max(needT, q.rank * q.cols);
      }
      if (dev.kind === "cuda") for (const p of g.params) if (p.dtype !== "f32") needBig = Math.max(needBig, p.numel);
      const grow = (t: Tensor | undefined, n: number): Tensor | undefined =>
        n === 0 ? t : t && t.numel >= n ? t : alloc([n], "f32", dev);
      const next = { sR: grow(sc.sR, needR), sT: grow(sc.sT, needT), sBig: grow(sc.sBig, needBig),
                     scalars: dev.kind === "cuda" ? grow(sc.scalars, 2) : undefined };
      // Everything allocated: commit.
      for (const k of ["sR", "sT", "sBig", "scalars"] as const) if (sc[k] && sc[k] !== next[k]) sc[k]!.dispose();
      this.scratch.set(dev, next);
      if (fresh) this.ranked.set(g, s);
      st = s;
      void added;
      return st;
    } catch (e) {
      for (const t of made) t.dispose();
      if (st) for (const [p, q] of [...st.params]) if (made.includes(q.m)) st.params.delete(p);
      throw e;
    }
  }

  private engine(g: ParamGroup<GaLoreOptions>): AdamGroupEngine {
    let e = this.engines.get(g);
    if (!e) {
      e = new AdamGroupEngine(this.groupDevice(g), g.stateDtype as DType);
      this.engines.set(g, e);
    }
    return e;
  }

  /** The refresh method of a tensor now: 0 exact, 1 warm (only after a first refresh). */
  private methodOf(g: ParamGroup<GaLoreOptions>, q: LowRank): number {
    return g.projector === "warm" && q.refreshed ? 1 : 0;
  }

  /** The refresh workspaces of this step per device, in f32 elements (none on the CPU or when no
   *  group refreshes now; `anyStep`: of any refresh step, due or not). Lane 0 fits every refresh.
   *  Lane 1, where a rank group has two f32-gradient refreshes and room for it, is as large as the
   *  largest of them that fits beside lane 0 within the group's budget (one f32 gradient less the
   *  scratch, as for the held Rs): galoreRefreshMany then runs two refreshes at once, whose solver
   *  work is mostly small latency-bound kernels that the other's products fill around. The
   *  workspaces live for the step only (stream-ordered free). */
  private refreshWorkspace(anyStep = false): Map<Device, number[]> {
    const lane0 = new Map<Device, number>(), lane1 = new Map<Device, number>();
    const groups: [ParamGroup<GaLoreOptions>, RankGroupState, number[]][] = [];
    for (const g of this.paramGroups) {
      const s = this.ranked.get(g);
      if (!s || s.device.kind !== "cuda" || !(anyStep || refreshCall(g, s.calls))) continue;
      const needs: number[] = [];
      for (const [p, q] of s.params) {
        const n = refreshWorkspaceFloats(s.flag, q, this.methodOf(g, q));
        lane0.set(s.device, Math.max(lane0.get(s.device) ?? 0, n));
        if (p.grad.dtype === "f32") needs.push(...(q.side === Side.Full ? [n, n] : [n]));
      }
      groups.push([g, s, needs]);
    }
    if (process.env.SLIMOPT_REFRESH_LANES !== "1") {
      for (const [g, s, needs] of groups) {
        const room = this.heldRBudget(g, s) - lane0.get(s.device)!;
        const fit = needs.filter((n) => n > 0 && n <= room);
        if (needs.length >= 2 && fit.length > 0) lane1.set(s.device, Math.max(lane1.get(s.device) ?? 0, ...fit));
      }
    }
    const out = new Map<Device, number[]>();
    for (const [dev, n] of lane0) if (n > 0) out.set(dev, lane1.has(dev) ? [n, lane1.get(dev)!] : [n]);
    return out;
  }

  /** The refreshes of a group step, before any of its tensors steps (a refresh reads only its own
   *  gradient and the group's flag): on CUDA every f32-gradient tensor's (both projectors of a
   *  "full" one) by galoreRefreshMany, as many at once as there are workspaces in `ws`; the others
   *  one by one (refreshTensor, on ws[0]). */
  private refreshGroup(g: ParamGroup<GaLoreOptions>, s: RankGroupState, ws: Tensor[]): void {
    const many = s.device.kind === "cuda" && ws.length > 0 ? g.params.filter((p) => p.grad.dtype === "f32") : [];
    const mode = this.refreshModeOf(g);
    const entries: [NativeBufferHandle, number, number, number, number, boolean, NativeBufferHandle, NativeBufferHandle, number, number][] = [];
    for (const p of many) {
      const q = s.params.get(p)!;
      const method = this.methodOf(g, q);
      const entry = (left: boolean, proj: Tensor) =>
        entries.push([p.grad.handle, DTYPE_CODE.f32, q.rows, q.cols, q.rank, left, proj.handle, s.flag.handle, method, mode]);
      if (q.side === Side.Full) {
        entry(true, q.pA);
        entry(false, q.pB!);
      } else {
        entry(q.side === Side.Left, q.pA);
      }
    }
    if (entries.length > 0) native().galoreRefreshMany(entries, ws.map((t) => t.handle));
    for (const p of many) s.params.get(p)!.refreshed = true;
    for (const p of g.params) if (!many.includes(p)) this.refreshTensor(g, s, p, s.flag, ws[0]);
  }

  /** The refresh of one tensor's projector(s) from its gradient (kept when *flag != 0). */
  private refreshTensor(g: ParamGroup<GaLoreOptions>, s: RankGroupState, p: Parameter, flag: Tensor, ws: Tensor | undefined): void {
    const q = s.params.get(p)!;
    refreshProjectors(p.grad, q, flag, this.methodOf(g, q), this.refreshModeOf(g), ws, this.scratch.get(s.device)!.sBig);
    q.refreshed = true;
  }

  /** The refresh's GEMM mode: the group's, but tf32 for bf16 (the warm refresh's subspace iteration
   *  needs more than bf16's 8 bits). */
  private refreshModeOf(g: ParamGroup<GaLoreOptions>): number {
    const mode = GEMM_MODE[g.precision as GemmPrecision];
    return mode === GEMM_MODE.bf16 ? GEMM_MODE.tf32 : mode;
  }

  // ---- projected gradients and projectors (data-parallel steps, tools) -----------------------------
  //
  // Projection is linear: the average over ranks of project(G_k) is project(average of G_k). So on a
  // step that keeps the projector, a data-parallel run may average only R (rank x the smaller side)
  // and give it to the owner of the tensor through setProjectedGrad(); at a refresh the SVD needs
  // the averaged full gradient, and the new projector is then copied to the other ranks
  // (projector() / projectGradient()).

  private rankGroupOf(p: Parameter, what: string): { g: ParamGroup<GaLoreOptions>; gi: number; rows: number; cols: number; side: Side } {
    const gi = this.paramGroups.findIndex((g) => g.params.includes(p));
    if (gi < 0) fail("E_ARG", `${what}: ${p instanceof Parameter ? p.name : String(p)} is not a parameter of this optimizer`);
    const g = this.paramGroups[gi];
    if (!this.isRanked(g)) fail("E_ARG", `${what}: ${p.name} is in a group without rank (it is not projected)`);
    const [rows, cols] = view2d(p);
    return { g, gi, rows, cols, side: sideOf(g.projType as ProjType, rows, cols) };
  }

  /** Whether the next step() reads p's full gradient: at a refresh of its projector (the first
   *  step, then every updateProjGap steps), and always for a parameter of a group without rank. */
  needsFullGrad(p: Parameter): boolean {
    const gi = this.paramGroups.findIndex((g) => g.params.includes(p));
    if (gi < 0) fail("E_ARG", `needsFullGrad: ${p instanceof Parameter ? p.name : String(p)} is not a parameter of this optimizer`);
    const g = this.paramGroups[gi];
    if (!this.isRanked(g)) return true;
    const calls = this.ranked.get(g)?.calls ?? this.initialCalls;
    return refreshCall(g, calls);
  }

  /** Shape of p's projected gradient R: [rows, r] ("right"), [r, cols] ("left"), [r, r] ("full"). */
  projectedShape(p: Parameter): number[] {
    const { g, rows, cols, side } = this.rankGroupOf(p, "projectedShape");
    return rShape(side, rows, cols, g.rank as number);
  }

  /** p's projector as live tensors (see GaLoreProjector); E_ARG before p's first step. */
  projector(p: Parameter): GaLoreProjector {
    const { g, rows, cols, side } = this.rankGroupOf(p, "projector");
    const q = this.ranked.get(g)?.params.get(p);
    if (!q) fail("E_ARG", `projector: ${p.name} has no projector before its first step`);
    return { side: SIDE_NAMES[side], rows, cols, rank: q.rank, proj: q.pA, projB: q.pB };
  }

  /** Replaces p's projector by a copy of `proj` (and `projB` for "full"): f32 on p's device, shaped
   *  as projector() gives them. The state is allocated (moments zero) when p has none yet. Refused
   *  whole (E_ARG, E_SHAPE, E_DTYPE, E_DEVICE) before anything changes. */
  setProjector(p: Parameter, proj: Tensor, projB?: Tensor): void {
    const { g, gi, rows, cols, side } = this.rankGroupOf(p, "setProjector");
    const shapes = projectorShapes(side, rows, cols, g.rank as number);
    const given = side === Side.Full ? [proj, projB] : [proj];
    if (side !== Side.Full && projB !== undefined) fail("E_ARG", `setProjector: ${p.name} projects on one side; no second projector`);
    given.forEach((t, i) => {
      if (!(t instanceof Tensor)) fail("E_ARG", `setProjector: projector ${i} of ${p.name} is not a Tensor`);
      t.assertLive(`projector of ${p.name}`);
      if (t.dtype !== "f32") fail("E_DTYPE", `setProjector: projector of ${p.name} is ${t.dtype}, not f32`);
      if (t.device !== p.device) fail("E_DEVICE", `setProjector: projector on ${t.device}, ${p.name} on ${p.device}`);
      if (!sameShape(t.shape, shapes[i])) fail("E_SHAPE", `setProjector: projector ${i} of ${p.name} is [${t.shape}], expected [${shapes[i]}]`);
    });
    this.validateGroup(g, gi);
    const q = this.prepareRanked(g).params.get(p)!;
    q.pA.copyFrom(given[0]!);
    if (q.pB) q.pB.copyFrom(given[1]!);
    q.refreshed = true;
  }

  /** Gives the next step() p's projected gradient R (f32, projectedShape(p), p's device) in place of
   *  p.grad: the step skips the projection and runs Adam on R (its non-finite check reads R).
   *  Refused when the next step refreshes p's projector (needsFullGrad: the refresh needs the full
   *  gradient). Used by the next step only. Accumulation averaging and clipping act on p.grad, not
   *  on R. */
  setProjectedGrad(p: Parameter, grad: Tensor): void {
    const { g, rows, cols, side } = this.rankGroupOf(p, "setProjectedGrad");
    if (!(grad instanceof Tensor)) fail("E_ARG", `setProjectedGrad: the projected gradient of ${p.name} is not a Tensor`);
    grad.assertLive(`projected gradient of ${p.name}`);
    if (grad.dtype !== "f32") fail("E_DTYPE", `setProjectedGrad: the projected gradient of ${p.name} is ${grad.dtype}, not f32`);
    if (grad.device !== p.device) fail("E_DEVICE", `setProjectedGrad: the projected gradient is on ${grad.device}, ${p.name} on ${p.device}`);
    const want = rShape(side, rows, cols, g.rank as number);
    if (!sameShape(grad.shape, want)) fail("E_SHAPE", `setProjectedGrad: the projected gradient of ${p.name} is [${grad.shape}], expected [${want}]`);
    if (this.needsFullGrad(p)) fail("E_ARG", `setProjectedGrad: the next step of ${p.name} refreshes its projector and needs the full gradient`);
    this.projectedGrads.set(p, grad);
  }

  /** The projected gradients given for the next step are still usable (live, not a refresh). */
  private validateProjected(only?: Parameter): void {
    for (const [p, r] of this.projectedGrads) {
      if (only && p !== only) continue;
      r.assertLive(`projected gradient of ${p.name}`);
      if (this.needsFullGrad(p)) fail("E_ARG", `${p.name} has a projected gradient but its next step refreshes the projector`);
    }
  }

  protected validateStepInputs(): void {
    super.validateStepInputs();
    this.validateProjected();
  }

  protected validateParamStep(g: ParamGroup<GaLoreOptions>, gi: number, p: Parameter): void {
    super.validateParamStep(g, gi, p);
    this.validateProjected(p);
  }

  /** The gradient buffer a tensor's non-finite scan reads: R when given, else p.grad. */
  private scanEntry(p: Parameter): [NativeBufferHandle, number, number] {
    const r = this.projectedGrads.get(p);
    return r ? [r.handle, DTYPE_CODE.f32, r.numel] : [p.grad.handle, DTYPE_CODE[p.grad.dtype], p.numel];
  }

  protected stepGroups(): void {
    this.validateAll();
    this.validateProjected();
    // Allocate everything first so that an E_OOM leaves every group untouched.
    const plans = this.paramGroups.map((g) => {
      if (this.isRanked(g)) return { g, ranked: this.prepareRanked(g) };
      const e = this.engine(g);
      e.prepare(g.params);
      return { g, engine: e };
    });
    const ws = new Map<Device, Tensor[]>();
    const early = new Map<ParamGroup<GaLoreOptions>, HeldRs>();
    try {
      for (const [dev, lanes] of this.refreshWorkspace()) {
        ws.set(dev, []);
        for (const n of lanes) ws.get(dev)!.push(workspace(n, dev));
      }
      for (const { g, ranked } of plans) {
        const held = ranked && this.projectFirstSlots(g, ranked);
        if (held) early.set(g, held);
      }
      this.runPlans(plans, ws, early);
    } finally {
      for (const lanes of ws.values()) for (const t of lanes) t.dispose();
      for (const held of early.values()) disposeHeld(held);
    }
  }

  // ---- projecting first: the non-finite check on R ------------------------------------------------
  //
  // Projection is linear and IEEE arithmetic keeps a NaN or an infinity: a NaN/Inf anywhere in G
  // makes R non-finite (x·NaN = NaN, ±Inf·0 = NaN, Inf + -Inf = NaN, on tensor cores as on the CPU).
  // So on a step that keeps the projector the group's check may read a tensor's R, 1/32 of G at
  // rank 128 of 4096, instead of a full read of its G before anything is written: that G is then
  // read once per step (by its projection) instead of twice. Each R so checked is held until the
  // decision, and the Rs held together stay within one f32 gradient of the group (the peak extra
  // memory GaLore allows itself). Where not all fit (rank 512 of the §6 workload: 101 M floats of R
  // against 40 M), as many as fit are held and the check scans the others' G; those are projected
  // after the held ones have stepped and been freed. The difference: a finite G whose projection
  // overflows f32 also skips the step (with the G scan it would put NaN into W).

  /** Floats of R a step may hold at once: one f32 gradient of the group's largest tensor (the peak
   *  extra memory GaLore allows itself) less the device's scratch (sR, sT, sBig), which is kept
   *  between steps: so the two together stay within that one gradient. */
  private heldRBudget(g: ParamGroup<GaLoreOptions>, s: RankGroupState): number {
    const sc = this.scratch.get(s.device) ?? {};
    const scratch = (sc.sR?.numel ?? 0) + (sc.sT?.numel ?? 0) + (sc.sBig?.numel ?? 0);
    return Math.max(...g.params.map((p) => p.numel)) - scratch;
  }

  /** The tensors whose R this step of the group holds for the check (projectFirstSlots), in group
   *  order: greedily the most gradient read saved per float of R held (numel / R's numel, ties in
   *  group order), each taken while the total stays within heldRBudget. */
  private heldForCheck(g: ParamGroup<GaLoreOptions>, s: RankGroupState): Parameter[] {
    const rNumel = (p: Parameter) => rNumelOf(s.params.get(p)!);
    const own = g.params.map((p, i) => ({ p, i })).filter(({ p }) => !this.projectedGrads.has(p));
    own.sort((a, b) => b.p.numel / rNumel(b.p) - a.p.numel / rNumel(a.p) || a.i - b.i);
    let room = this.heldRBudget(g, s);
    const held: { p: Parameter; i: number }[] = [];
    for (const x of own) {
      if (rNumel(x.p) > room) continue;
      room -= rNumel(x.p);
      held.push(x);
    }
    return held.sort((a, b) => a.i - b.i).map((x) => x.p);
  }

  /** The held tensors' R buffers (heldForCheck), uninitialised, when this step of the group projects
   *  first (checks enabled, no refresh); else undefined. Tensors given their R (setProjectedGrad)
   *  need none. An E_OOM here falls back to the G scan. */
  private projectFirstSlots(g: ParamGroup<GaLoreOptions>, s: RankGroupState): HeldRs | undefined {
    if (g.skipNonFinite === false || refreshCall(g, s.calls)) return undefined;
    const held = this.heldForCheck(g, s);
    return held.length > 0 ? this.allocHeld(g, s, held) : undefined;
  }

  /** R buffers for `params` (of g), and on CUDA the project-backs' transpose area beside them within
   *  the budget (transposeAreaFloats), as one allocation: an allocation per tensor costs the host
   *  the allocator's and V8's external-memory accounting each time, and at rank 128 on §6 the
   *  host's time per step is close to the device's (~3.5 ms). Undefined on E_OOM. */
  private allocHeld(g: ParamGroup<GaLoreOptions>, s: RankGroupState, params: Parameter[]): HeldRs | undefined {
    const sizes = params.map((p) => rNumelOf(s.params.get(p)!));
    try {
      if (s.device.kind !== "cuda") {
        const slots = new Map<Parameter, Tensor>();
        try {
          params.forEach((p, i) => slots.set(p, Tensor.empty([sizes[i]], "f32", s.device)));
        } catch (e) {
          for (const t of slots.values()) t.dispose();
          throw e;
        }
        return { slots };
      }
      const area = this.transposeAreaFloats(g, s, params, blockFloats(sizes) + 64);
      const block = Tensor.empty([blockFloats([...sizes, area])], "f32", s.device);
      const parts = sliceBlock(block, area > 0 ? [...sizes, area] : sizes);
      return { slots: new Map(params.map((p, i) => [p, parts[i]])), area: parts[params.length], block };
    } catch (e) {
      if (e instanceof SlimoptError && e.code === "E_OOM") return undefined;
      throw e;
    }
  }

  /** Projects each of `params` that has a slot into it, as its step would project it, then sets
   *  `flag` when any of them holds a NaN/Inf: its R where projected, else what scanEntry reads. */
  private projectAndCheck(g: ParamGroup<GaLoreOptions>, s: RankGroupState, flag: Tensor, params: Parameter[],
                          slots: Map<Parameter, Tensor>): void {
    const nat = native();
    this.projectMany(g, s, [...slots]);
    nat.galoreScan(flag.handle, params.map((p) => {
      const r = slots.get(p);
      return r ? [r.handle, DTYPE_CODE.f32, rNumelOf(s.params.get(p)!)] as [NativeBufferHandle, number, number] : this.scanEntry(p);
    }));
  }

  /** Each p's R into its buffer, as its step would project it, in one call: on CUDA same-shaped
   *  one-sided tensors with f32 gradients as one batched product. The outputs are never sR, which
   *  is then free: it takes left-side projectors transposed (rank x rows, no larger than the R of
   *  that tensor), for which cuBLAS's TF32 kernels run faster. */
  private projectMany(g: ParamGroup<GaLoreOptions>, s: RankGroupState, outs: [Parameter, Tensor][]): void {
    const sc = this.scratch.get(s.device)!;
    native().galoreProjectMany(outs.map(([p, out]) => {
      const q = s.params.get(p)!;
      return [p.grad.handle, DTYPE_CODE[p.grad.dtype], q.pA.handle, q.pB?.handle ?? null, q.side, q.rows, q.cols, q.rank,
              out.handle];
    }), sc.sT?.handle ?? null, sc.sBig?.handle ?? null, GEMM_MODE[g.precision as GemmPrecision],
    s.device.kind === "cuda" ? sc.sR?.handle ?? null : null);
  }

  private runPlans(plans: { g: ParamGroup<GaLoreOptions>; ranked?: RankGroupState; engine?: AdamGroupEngine }[], wsLanes: Map<Device, Tensor[]>,
                   early: Map<ParamGroup<GaLoreOptions>, HeldRs>): void {
    const nat = native();
    for (const { g, ranked, engine } of plans) {
      if (engine) {
        engine.run(adamHyper(g, AdamConvention.Galore));
        continue;
      }
      const s = ranked!;
      const held = early.get(g);
      if (held) {
        this.projectAndCheck(g, s, s.flag, g.params, held.slots);
      } else if (g.skipNonFinite !== false) {
        nat.galoreScan(s.flag.handle, g.params.map((p) => this.scanEntry(p)));
      } else {
        nat.fillZero(s.flag.handle, 4);
      }
      if (refreshCall(g, s.calls)) this.refreshGroup(g, s, wsLanes.get(s.device) ?? []);
      let rest = g.params;
      if (held) {
        this.stepProjected(g, s, held);
        // Freed before the others' projections, so that their chunks have the whole budget.
        disposeHeld(held);
        rest = g.params.filter((p) => !held.slots.has(p));
      }
      for (const chunk of this.projectionChunks(g, s, rest)) this.stepChunk(g, s, chunk);
      nat.galoreFinish(s.counters.handle, s.flag.handle);
      s.calls++;
    }
    this.projectedGrads.clear();
  }

  // ---- batched projections on the other steps ---------------------------------------------------
  //
  // Where R is not projected first (not held for the check, or no check), each step would project
  // its own tensor. On CUDA, same-shaped one-sided tensors with f32 gradients are instead projected
  // a chunk at a time by one batched product (many small products fill the GPU together;
  // bench/NOTES.md), each chunk's R buffers together within one f32 gradient of the group, as
  // projecting first allows itself; the chunk then steps as the held Rs do (stepProjected).

  /** `params` (of g) in the order they step, as chunks for stepChunk. On CUDA off a refresh,
   *  same-shaped tensors that projectsInChunks go together, projected first into their own R
   *  buffers (`together`); so does one such tensor alone when its states are f32, for projectMany's
   *  paths (a left-side projector transposed: ncu on §6 at rank 1024, 270 against 416 us) and
   *  adamMany's kernel (with 8-bit states it would only add a copy of R). Each other tensor steps
   *  alone on its own path. */
  private projectionChunks(g: ParamGroup<GaLoreOptions>, s: RankGroupState, params: Parameter[]): ProjectionChunk[] {
    const refresh = refreshCall(g, s.calls);
    if (s.device.kind !== "cuda" || refresh) return params.map((p) => ({ params: [p], together: false }));
    const budget = this.heldRBudget(g, s);
    const byShape = new Map<string, Parameter[][]>();
    const chunks: { params: Parameter[]; batched: boolean }[] = [];
    for (const p of params) {
      const q = s.params.get(p)!;
      if (!this.projectsInChunks(s, p)) {
        chunks.push({ params: [p], batched: false });
        continue;
      }
      const key = `${q.side} ${q.rows} ${q.cols} ${q.rank}`;
      const open = byShape.get(key);
      const last = open?.[open.length - 1];
      if (last && (last.length + 1) * rNumelOf(q) <= budget) {
        last.push(p);
      } else {
        const c = [p];
        chunks.push({ params: c, batched: true });
        if (open) open.push(c);
        else byShape.set(key, [c]);
      }
    }
    return chunks.map(({ params: c, batched }) => ({
      params: c, together: batched && (c.length > 1 || !s.params.get(c[0])!.absmaxM),
    }));
  }

  /** Whether p (of a CUDA group, off a refresh) is projected by projectMany in a chunk: a one-sided
   *  tensor with an f32 gradient not given its R. */
  private projectsInChunks(s: RankGroupState, p: Parameter): boolean {
    return p.grad.dtype === "f32" && s.params.get(p)!.side !== Side.Full && !this.projectedGrads.has(p);
  }

  /** Steps a chunk of projectionChunks(): one projected together first into its own R buffers (one
   *  per tensor, freed after), stepped as the held Rs are; the others, and where those buffers
   *  cannot be allocated (E_OOM), each project themselves. */
  private stepChunk(g: ParamGroup<GaLoreOptions>, s: RankGroupState, chunk: ProjectionChunk): void {
    const held = chunk.together ? this.allocHeld(g, s, chunk.params) : undefined;
    if (!held) {
      for (const p of chunk.params) this.stepRankedTensor(g, s, p, s.counters, s.flag);
      return;
    }
    try {
      this.projectMany(g, s, [...held.slots]);
      this.stepProjected(g, s, held);
    } finally {
      disposeHeld(held);
    }
  }

  /** Steps the tensors whose R `held` holds (projected already): on CUDA Adam on every f32-state
   *  one in one launch (adamMany: 3.6 TB/s at rank 512 on the §6 workload, where one launch per
   *  tensor ran at ~3.0) and their project-backs in one call (backMany); the others one by one. */
  private stepProjected(g: ParamGroup<GaLoreOptions>, s: RankGroupState, held: HeldRs): void {
    const adamDone = this.adamMany(g, s, held.slots);
    const backDone = this.backMany(g, s, held, adamDone);
    for (const [p, r] of held.slots) {
      if (!backDone.has(p)) this.stepRankedTensor(g, s, p, s.counters, s.flag, r, adamDone.has(p));
    }
  }

  /** On CUDA, Adam on the R of every f32-state tensor in `slots`, in one launch (28 launches of a
   *  few MB each took ~0.25 ms at rank 128 on the §6 workload); returns the tensors it served. */
  private adamMany(g: ParamGroup<GaLoreOptions>, s: RankGroupState, slots: Map<Parameter, Tensor>): Set<Parameter> {
    const done = new Set<Parameter>();
    if (s.device.kind !== "cuda") return done;
    const entries: [NativeBufferHandle, NativeBufferHandle, NativeBufferHandle, number][] = [];
    for (const p of g.params) {
      const q = s.params.get(p)!;
      const r = slots.get(p);
      if (!r || q.absmaxM) continue;
      entries.push([r.handle, q.m.handle, q.v.handle, rNumelOf(q)]);
      done.add(p);
    }
    if (entries.length > 0) native().galoreAdamMany(entries, s.counters.handle, s.flag.handle, this.scratch.get(s.device)!.scalars!.handle, this.hyperOf(g));
    return done;
  }

  /** On CUDA, the project-back of every one-sided f32 parameter that adamMany served, in one call
   *  (with cuBLAS at rank <= 128 on B transposed into sT; on the built-in path on Hopper grouped
   *  launches of the streaming kernel); returns the tensors it served, whose step is then done. */
  private backMany(g: ParamGroup<GaLoreOptions>, s: RankGroupState, held: HeldRs, adamDone: Set<Parameter>): Set<Parameter> {
    const done = new Set<Parameter>();
    const entries: [NativeBufferHandle, NativeBufferHandle, NativeBufferHandle, number, number, number, number][] = [];
    for (const p of g.params) {
      const q = s.params.get(p)!;
      if (!adamDone.has(p) || p.dtype !== "f32" || q.side === Side.Full) continue;
      entries.push([p.data.handle, q.pA.handle, held.slots.get(p)!.handle, q.side, q.rows, q.cols, q.rank]);
      done.add(p);
    }
    if (entries.length > 0) {
      const sc = this.scratch.get(s.device)!;
      native().galoreBackMany(entries, s.flag.handle, sc.scalars!.handle, GEMM_MODE[g.precision as GemmPrecision],
                              (held.area ?? sc.sT)?.handle ?? null);
    }
    return done;
  }

  /** On CUDA, floats for the project-backs' Bs transposed (rank <= 128, rank x cols each) of those
   *  of `params` backMany will serve, several at once (one launch transposes as many as it holds:
   *  28 launches of 2-6 MB took 146 us of a rank-128 step, ncu): as many as they need and as the
   *  group's budget leaves beside `heldFloats` of Rs (one f32 gradient less the scratch and those
   *  Rs). 0 where that is no more than sT, which then serves them one at a time. */
  private transposeAreaFloats(g: ParamGroup<GaLoreOptions>, s: RankGroupState, params: Parameter[], heldFloats: number): number {
    if (s.device.kind !== "cuda") return 0;
    let need = 0;
    for (const p of params) {
      const q = s.params.get(p)!;
      if (p.dtype === "f32" && q.side !== Side.Full && !q.absmaxM && q.rank <= native().galoreBackTransposeMaxRank) need += q.rank * q.cols;
    }
    const size = Math.min(need, this.heldRBudget(g, s) - heldFloats);
    return size > (this.scratch.get(s.device)?.sT?.numel ?? 0) ? size : 0;
  }

  private hyperOf(g: ParamGroup<GaLoreOptions>) {
    return {
      lr: g.lr, beta1: g.betas![0], beta2: g.betas![1], eps: g.eps!, weightDecay: g.weightDecay!,
      scale: g.scale as number, mode: GEMM_MODE[g.precision as GemmPrecision],
    };
  }

  /** The step of one tensor of a rank group (its refresh, when due, done before), on the given
   *  counters and flag. `early`: p's R, projected already (the step runs Adam on it in place, no
   *  projection); `adamDone`: and Adam has run on it (adamMany), so the step only projects back. */
  private stepRankedTensor(g: ParamGroup<GaLoreOptions>, s: RankGroupState, p: Parameter, counters: Tensor, flag: Tensor,
                           early?: Tensor, adamDone = false): void {
    const nat = native();
    const sc = this.scratch.get(s.device)!;
    const refresh = refreshCall(g, s.calls);
    const h = this.hyperOf(g);
    const q = s.params.get(p)!;
    const gt = DTYPE_CODE[p.grad.dtype];
    const given = early ?? this.projectedGrads.get(p);
    nat.galoreStep(p.data.handle, DTYPE_CODE[p.dtype], p.grad.handle, gt, q.m.handle, q.v.handle, q.pA.handle,
                   q.pB?.handle ?? null, q.side, q.rows, q.cols, q.rank, counters.handle, flag.handle,
                   (early ?? sc.sR!).handle, sc.sT?.handle ?? null, sc.sBig?.handle ?? null, sc.scalars?.handle ?? null, h,
                   refresh ? null : (given?.handle ?? null),
                   ...(q.absmaxM ? [q.absmaxM.handle, q.absmaxV!.handle, ...q8MapHandles()] : [null, null, null, null]), adamDone);
  }

  /** Layer-wise step of p. A rank tensor scans only its own gradient (per-parameter skip) into its
   *  own flag, refreshes on the group's schedule (the round's calls count) and steps on the
   *  round's copy of the counters. */
  protected stepParamImpl(g: ParamGroup<GaLoreOptions>, gi: number, p: Parameter, k: number): void {
    if (!this.isRanked(g)) {
      const e = this.engine(g);
      e.ensureMoments([p]);
      e.runOne(p, k, adamHyper(g, AdamConvention.Galore), this.roundCounters(gi, p, e.counters));
      return;
    }
    const s = this.prepareRanked(g);
    const nat = native();
    let flag = this.paramFlags.get(p);
    if (!flag || flag.disposed) {
      flag = zeros([1], { dtype: "i32", device: s.device });
      this.paramFlags.set(p, flag);
    }
    let ws: Tensor | undefined;
    try {
      if (s.device.kind === "cuda" && refreshCall(g, s.calls)) {
        const q = s.params.get(p)!;
        const n = refreshWorkspaceFloats(s.flag, q, this.methodOf(g, q));
        if (n > 0) ws = workspace(n, s.device);
      }
      const sub = this.roundCounters(gi, p, s.counters);
      // Projecting first needs no more memory here: the step's own R scratch holds R.
      const early = g.skipNonFinite !== false && !refreshCall(g, s.calls) && !this.projectedGrads.has(p)
        ? new Map([[p, this.scratch.get(s.device)!.sR!]]) : undefined;
      if (early) {
        this.projectAndCheck(g, s, flag, [p], early);
      } else if (g.skipNonFinite !== false) {
        nat.galoreScan(flag.handle, [this.scanEntry(p)]);
      } else {
        nat.fillZero(flag.handle, 4);
      }
      if (refreshCall(g, s.calls)) this.refreshTensor(g, s, p, flag, ws);
      this.stepRankedTensor(g, s, p, sub, flag, early?.get(p));
      nat.galoreFinish(sub.handle, flag.handle);
    } finally {
      ws?.dispose();
      this.projectedGrads.delete(p);
    }
  }

  protected finishRoundImpl(groups: ParamGroup<GaLoreOptions>[]): void {
    for (const g of groups) {
      const s = this.ranked.get(g);
      if (s) s.calls++;
    }
  }

  protected countersOf(g: ParamGroup<GaLoreOptions>): Tensor | undefined {
    return this.isRanked(g) ? this.ranked.get(g)?.counters : this.engines.get(g)?.counters;
  }


  /** @internal state of a parameter (undefined before its first step). */
  stateOf(p: Parameter): { expAvg: Tensor; expAvgSq: Tensor; proj?: Tensor; projB?: Tensor; side?: "right" | "left" | "full";
                           absmaxM?: Tensor; absmaxV?: Tensor } | undefined {
    for (const s of this.ranked.values()) {
      const q = s.params.get(p);
      if (q) return { expAvg: q.m, expAvgSq: q.v, proj: q.pA, projB: q.pB, side: (["right", "left", "full"] as const)[q.side],
                      absmaxM: q.absmaxM, absmaxV: q.absmaxV };
    }
    return engineMoments(this.engines.values(), p);
  }

  stateDict(): StateDict {
    const tensors: Record<string, Tensor> = {};
    const meta: Record<string, unknown>[] = [];
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const c = this.countersOf(g);
      if (c) tensors[`group.${gi}.counters`] = c;
      const s = this.ranked.get(g);
      meta.push({ calls: s?.calls ?? 0 });
      for (const p of g.params) {
        const st = this.stateOf(p);
        if (st) {
          tensors[`param.${i}.exp_avg`] = st.expAvg;
          tensors[`param.${i}.exp_avg_sq`] = st.expAvgSq;
          if (st.absmaxM) {  // 8-bit states: u8 codes above (as AdamW8bit's), absmax per 256-block
            tensors[`param.${i}.exp_avg_absmax`] = st.absmaxM;
            tensors[`param.${i}.exp_avg_sq_absmax`] = st.absmaxV!;
          }
          if (st.proj) tensors[`param.${i}.proj`] = st.proj;
          if (st.projB) tensors[`param.${i}.proj_b`] = st.projB;
        }
        i++;
      }
    });
    // The schedule position and each projector's side travel as per-group state.
    const groupState = meta.map((m, gi) => {
      const s = this.ranked.get(this.paramGroups[gi]);
      const sides = s ? this.paramGroups[gi].params.map((p) => (["right", "left", "full"] as const)[s.params.get(p)!.side]) : undefined;
      return { ...m, ...(sides ? { projSides: sides } : {}) };
    });
    return { ...this.stateDictBase("GaLoreAdamW"), tensors, groupState };
  }

  loadStateDict(sd: StateDict): void {
    this.checkStateDictBase(sd, "GaLoreAdamW");
    const known = new Set<string>();
    const want = (name: string, shape: readonly number[], dtype: string): Tensor | undefined => {
      known.add(name);
      const t = sd.tensors[name];
      if (t === undefined) return undefined;
      if (!(t instanceof Tensor) || t.disposed || t.dtype !== dtype || t.numel !== shape.reduce((a, b) => a * b, 1))
        fail("E_CHECKPOINT", `state tensor ${name} must be ${dtype} [${shape}]`);
      return t;
    };
    type Item = { p: Parameter; m: Tensor; v: Tensor; pa?: Tensor; pb?: Tensor; am?: Tensor; av?: Tensor };
    const plan: { g: ParamGroup<GaLoreOptions>; counters?: Tensor; items: Item[]; calls: number }[] = [];
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const counters = want(`group.${gi}.counters`, [2], "i32");
      const meta = (sd.groupState?.[gi] ?? {}) as { calls?: unknown; projSides?: unknown };
      const items: Item[] = [];
      const ranked = this.isRanked(g);
      const calls = ranked ? Number(meta.calls ?? 0) : 0;
      if (ranked && (!Number.isSafeInteger(calls) || calls < 0)) fail("E_CHECKPOINT", `group ${gi} has a bad calls count`);
      g.params.forEach((p, k) => {
        let shapeR: number[] = [...p.shape];
        let side = Side.Right, rows = 0, cols = 0;
        if (ranked) {
          [rows, cols] = view2d(p);
          side = sideOf(g.projType as ProjType, rows, cols);
          const sides = meta.projSides as unknown[] | undefined;
          if (sd.tensors[`param.${i}.exp_avg`] && (!Array.isArray(sides) || sides[k] !== ["right", "left", "full"][side]))
            fail("E_CHECKPOINT", `parameter ${i}: the state dict's projector side does not match projType ${g.projType}`);
          shapeR = rShape(side, rows, cols, g.rank as number);
        }
        const q8 = ranked && g.stateBits === 8;
        const dt = ranked ? (q8 ? "u8" : "f32") : (g.stateDtype as string);
        const m = want(`param.${i}.exp_avg`, shapeR, dt);
        const v = want(`param.${i}.exp_avg_sq`, shapeR, dt);
        if (!m !== !v) fail("E_CHECKPOINT", `parameter ${i} has only one of its two moments`);
        const blocks = [q8Blocks(shapeR.reduce((a, b) => a * b, 1))];
        const am = q8 ? want(`param.${i}.exp_avg_absmax`, blocks, "f32") : undefined;
        const av = q8 ? want(`param.${i}.exp_avg_sq_absmax`, blocks, "f32") : undefined;
        if (m && q8 && (!am || !av)) fail("E_CHECKPOINT", `parameter ${i} has 8-bit moments without their absmax`);
        if (m && !counters) fail("E_CHECKPOINT", `group ${gi} has moments but no step counters`);
        let pa: Tensor | undefined, pb: Tensor | undefined;
        if (m && ranked) {
          const r = g.rank as number;
          pa = want(`param.${i}.proj`, side === Side.Right ? [r, cols] : [rows, r], "f32");
          pb = side === Side.Full ? want(`param.${i}.proj_b`, [r, cols], "f32") : undefined;
          if (!pa || (side === Side.Full && !pb)) fail("E_CHECKPOINT", `parameter ${i} lacks its projector`);
        }
        if (m) items.push({ p, m, v: v!, pa, pb, am, av });
        i++;
      });
      if (counters && items.length !== g.params.length) fail("E_CHECKPOINT", `group ${gi} lacks state for some parameters`);
      plan.push({ g, counters, items, calls });
    });
    for (const name of Object.keys(sd.tensors)) if (!known.has(name)) fail("E_CHECKPOINT", `unexpected state tensor ${name}`);
    for (const { g, counters, items, calls } of plan) {
      if (this.isRanked(g)) {
        const old = this.ranked.get(g);
        if (!counters) {
          if (old) { for (const q of old.params.values()) for (const t of [q.m, q.v, q.pA, q.pB, q.absmaxM, q.absmaxV]) t?.dispose(); old.counters.dispose(); old.flag.dispose(); }
          this.ranked.delete(g);
          continue;
        }
        const s = this.prepareRanked(g);
        s.counters.copyFrom(counters);
        s.calls = calls;
        for (const it of items) {
          const q = s.params.get(it.p)!;
          q.m.copyFrom(it.m); q.v.copyFrom(it.v); q.pA.copyFrom(it.pa!);
          if (q.absmaxM) { q.absmaxM.copyFrom(it.am!); q.absmaxV!.copyFrom(it.av!); }
          q.refreshed = true;
          if (it.pb) q.pB!.copyFrom(it.pb);
        }
      } else {
        const old = this.engines.get(g);
        if (!counters) { old?.dispose(); this.engines.delete(g); continue; }
        const e = this.engine(g);
        e.prepare(g.params);
        e.counters.copyFrom(counters);
        for (const it of items) { e.expAvg.get(it.p)!.copyFrom(it.m); e.expAvgSq.get(it.p)!.copyFrom(it.v); }
      }
    }
    this.projectedGrads.clear();
  }

  protected stateTensors(): Tensor[] {
    const out: Tensor[] = [];
    for (const e of this.engines.values()) out.push(...e.tensors());
    for (const s of this.ranked.values()) {
      out.push(s.counters, s.flag);
      for (const q of s.params.values()) {
        out.push(q.m, q.v, q.pA);
        if (q.pB) out.push(q.pB);
        if (q.absmaxM) out.push(q.absmaxM, q.absmaxV!);
      }
    }
    return out;
  }

  /** Bytes of device workspace a refresh step of this optimizer holds on one device (both lanes'
   *  where two refreshes run at once; 0 on the CPU and before the first step): held during a
   *  refresh step only, beside scratchBytes(). */
  refreshWorkspaceBytes(): number {
    return 4 * Math.max(0, ...[...this.refreshWorkspace(true).values()].map((l) => l.reduce((a, b) => a + b, 0)));
  }

  /** Bytes of scratch held between steps (not state): R-sized buffers, plus one f32 gradient on
   *  CUDA when parameters are not f32. */
  scratchBytes(): number {
    let n = 0;
    for (const sc of this.scratch.values()) for (const t of [sc.sR, sc.sT, sc.sBig, sc.scalars]) if (t && !t.disposed) n += t.nbytes;
    return n;
  }

  dispose(): void {
    for (const t of this.stateTensors()) t.dispose();
    for (const e of this.engines.values()) e.dispose();
    for (const sc of this.scratch.values()) for (const t of [sc.sR, sc.sT, sc.sBig, sc.scalars]) t?.dispose();
    this.engines.clear();
    this.ranked.clear();
    this.scratch.clear();
    for (const t of this.paramFlags.values()) t.dispose();
    this.paramFlags.clear();
    this.projectedGrads.clear();
  }
}
