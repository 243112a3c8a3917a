// GaLoreAdafactor: GaLore's projection (DESIGN §4: refresh every updateProjGap updates, sides,
// scale, projType, the exact sign-fixed projectors of lib/optim/galore.ts) in front of Adafactor,
// as galore_torch's GaLoreAdafactor composes them: R = project(G); Adafactor's update N of R
// (factored second moment of R, update clipping by RMS(N), lr_t from RMS(W) of the full W with
// scaleParameter, beta1 moment on R); W = W - weightDecay lr_t W - scale back(N). Groups without
// `rank` are plain Adafactor. State per rank tensor: the projector(s) and (rows_R + cols_R) * 4
// bytes (+ R's size * 4 with beta1).
import { Device } from "../device";
import { DTYPE_CODE } from "../dtype";
import { fail } from "../errors";
import { GradNormWorkspace } from "../clip";
import { native } from "../native";
import { Parameter } from "../parameter";
import { Tensor, zeros } from "../tensor";
import { Adafactor, adafactorHyper, AdafactorOptions, GroupState, scanInto } from "./adafactor";
import {
  ProjType, refreshCall, refreshProjectors, refreshWorkspaceFloats, rShape, Side, sideOf, validateProjection, view2d, workspace,
} from "./galore";
import { ParamGroup, ParamGroupSpec, StateDict } from "./optimizer";

export interface GaLoreAdafactorOptions extends AdafactorOptions {
  /** Rank of the projection; a group without it is plain Adafactor. */
  rank?: number;
  updateProjGap?: number;
  scale?: number;
  projType?: ProjType;
  /** As GaLoreAdamW's (the CPU always computes the exact vectors). */
  projector?: "svd" | "warm";
  precision?: "tf32" | "f32";
}

const DEFAULTS: GaLoreAdafactorOptions = { updateProjGap: 200, scale: 0.25, projType: "std", projector: "svd", precision: "tf32" };

interface RankTensor {
  rows: number; cols: number; rank: number; side: Side;
  pA: Tensor; pB?: Tensor;
  /** Adafactor's factored state of R (rR, cR) and its first moment (R-shaped) with beta1. */
  row: Tensor; col: Tensor; expAvg?: Tensor;
  refreshed: boolean;
}

interface RankGroup {
  device: Device;
  counters: Tensor;
  flag: Tensor;
  /** Updates so far (the refresh schedule). */
  calls: number;
  params: Map<Parameter, RankTensor>;
}

interface DeviceScratch { sR?: Tensor; sT?: Tensor; sBig?: Tensor; af?: Tensor; norm?: GradNormWorkspace }

const SIDES = ["right", "left", "full"] as const;

function isRanked(g: GaLoreAdafactorOptions): boolean {
  return g.rank !== undefined && g.rank !== null;
}

function rDims(q: { rows: number; cols: number; rank: number; side: Side }): [number, number] {
  const s = rShape(q.side, q.rows, q.cols, q.rank);
  return [s[0], s[1]];
}

export class GaLoreAdafactor extends Adafactor {
  private ranked = new Map<ParamGroup<GaLoreAdafactorOptions>, RankGroup>();
  private rscratch = new Map<Device, DeviceScratch>();

  constructor(params: Parameter[] | ParamGroupSpec<GaLoreAdafactorOptions>[], defaults: GaLoreAdafactorOptions = {}) {
    super(params, { ...DEFAULTS, ...defaults });
  }

  protected validateGroup(g: ParamGroup<GaLoreAdafactorOptions>, gi: number): void {
    super.validateGroup(g, gi);
    if (!isRanked(g)) return;
    validateProjection(g, gi);
    for (const p of g.params) {
      const q = this.ranked?.get(g)?.params.get(p);
      const [rows, cols] = view2d(p);
      if (q && (q.rank !== g.rank || q.side !== sideOf(g.projType as ProjType, rows, cols) || !!q.expAvg !== (g.beta1 !== null && g.beta1 !== undefined)))
        fail("E_ARG", `group ${gi}: rank, projType and beta1 cannot change once ${p.name} has state`);
    }
  }

  protected checkpointFixedOptions(): readonly string[] {
    return ["rank"];
  }

  /** Allocates what a rank group lacks (zeros) and the device scratch; frees what it made on failure. */
  private prepareRanked(g: ParamGroup<GaLoreAdafactorOptions>): RankGroup {
    const dev = this.groupDevice(g);
    const made: Tensor[] = [];
    const alloc = (shape: number[], dtype: "f32" | "i32" = "f32") => { const t = zeros(shape, { dtype, device: dev }); made.push(t); return t; };
    let s = this.ranked.get(g);
    const added: Parameter[] = [];
    try {
      if (!s) s = { device: dev, counters: alloc([2], "i32"), flag: alloc([1], "i32"), calls: 0, params: new Map() };
      const first = g.beta1 !== null && g.beta1 !== undefined;
      for (const p of g.params) {
        if (s.params.has(p)) continue;
        const [rows, cols] = view2d(p);
        const r = g.rank as number;
        const side = sideOf(g.projType as ProjType, rows, cols);
        const [rr, rc] = rDims({ rows, cols, rank: r, side });
        s.params.set(p, {
          rows, cols, rank: r, side,
          pA: alloc(side === Side.Right ? [r, cols] : [rows, r]), pB: side === Side.Full ? alloc([r, cols]) : undefined,
          row: alloc([rr]), col: alloc([rc]), expAvg: first ? alloc([rr * rc]) : undefined, refreshed: false,
        });
        added.push(p);
      }
      const sc = this.rscratch.get(dev) ?? {};
      let needR = 0, needT = 0, needBig = 0, needAf = 0;
      for (const q of s.params.values()) {
        const [rr, rc] = rDims(q);
        needR = Math.max(needR, rr * rc);
        if (q.side === Side.Full) needT = Math.max(needT, q.rank * q.cols);
        if (dev.kind === "cuda") {
          needBig = Math.max(needBig, q.rows * q.cols);
          needAf = Math.max(needAf, native().adafactorScratchFloats(true, 1, rr, rc));
        }
      }
      const grow = (t: Tensor | undefined, n: number) => (n === 0 || (t && t.numel >= n) ? t : alloc([n]));
      const next: DeviceScratch = { sR: grow(sc.sR, needR), sT: grow(sc.sT, needT), sBig: grow(sc.sBig, needBig), af: grow(sc.af, needAf), norm: sc.norm };
      if (!next.norm) { next.norm = new GradNormWorkspace(dev); made.push(next.norm.tensor); }
      for (const k of ["sR", "sT", "sBig", "af"] as const) if (sc[k] && sc[k] !== next[k]) sc[k]!.dispose();
      this.rscratch.set(dev, next);
    } catch (e) {
      for (const t of made) t.dispose();
      for (const p of added) s!.params.delete(p);
      throw e;
    }
    this.ranked.set(g, s);
    return s;
  }

  /** Refresh (when due) and one step of a rank tensor on the given counters and flag. */
  private stepRankTensor(g: ParamGroup<GaLoreAdafactorOptions>, s: RankGroup, p: Parameter, counters: Tensor, flag: Tensor,
                         ws: Tensor | undefined): void {
    const nat = native();
    const sc = this.rscratch.get(s.device)!;
    const q = s.params.get(p)!;
    const mode = g.precision === "f32" ? 1 : 0;
    if (refreshCall(g, s.calls)) {
      refreshProjectors(p.grad, q, flag, this.methodOf(g, q), mode, ws, sc.sBig);
      q.refreshed = true;
    }
    if (g.scaleParameter) {
      // RMS of the full W for lr_t: ||W|| into the norm workspace, read on the device.
      nat.gradSumSquares(sc.norm!.handle, [[p.data.handle, DTYPE_CODE[p.dtype], p.numel]], true);
      nat.gradNormFinish(sc.norm!.handle, 3e38);
    }
    nat.galoreAdafactorStep(p.data.handle, DTYPE_CODE[p.dtype], p.grad.handle, DTYPE_CODE[p.grad.dtype], q.side, q.rows, q.cols,
                            q.rank, q.pA.handle, q.pB?.handle ?? null, q.row.handle, q.col.handle, q.expAvg?.handle ?? null,
                            counters.handle, flag.handle, sc.sR!.handle, sc.sT?.handle ?? null, sc.sBig?.handle ?? null,
                            sc.af?.handle ?? null, g.scaleParameter ? sc.norm!.handle : null,
                            { ...adafactorHyper(g), scale: g.scale as number, mode });
  }

  private methodOf(g: ParamGroup<GaLoreAdafactorOptions>, q: RankTensor): number {
    return g.projector === "warm" && q.refreshed ? 1 : 0;
  }

  private refreshWs(g: ParamGroup<GaLoreAdafactorOptions>, s: RankGroup, only?: Parameter): Tensor | undefined {
    if (s.device.kind !== "cuda" || !refreshCall(g, s.calls)) return undefined;
    let n = 0;
    for (const [p, q] of s.params) if (!only || p === only) n = Math.max(n, refreshWorkspaceFloats(s.flag, q, this.methodOf(g, q)));
    return n > 0 ? workspace(n, s.device) : undefined;
  }

  protected stepGroups(): void {
    this.validateAll();
    const plans = this.paramGroups.map((g) => (isRanked(g) ? this.prepareRanked(g) : this.prepare(g)));
    const nat = native();
    this.paramGroups.forEach((g, i) => {
      if (!isRanked(g)) { this.runGroup(g, plans[i] as GroupState); return; }
      const s = plans[i] as RankGroup;
      const ws = this.refreshWs(g, s);
      try {
        scanInto(s.flag, g.params, g.skipNonFinite !== false);
        for (const p of g.params) this.stepRankTensor(g, s, p, s.counters, s.flag, ws);
        nat.galoreFinish(s.counters.handle, s.flag.handle);
        s.calls++;
      } finally {
        ws?.dispose();
      }
    });
  }

  protected stepParamImpl(g: ParamGroup<GaLoreAdafactorOptions>, gi: number, p: Parameter): void {
    if (!isRanked(g)) { super.stepParamImpl(g, gi, p); return; }
    const s = this.prepareRanked(g);
    const nat = native();
    const flag = this.paramFlag(p, s.device);
    const ws = this.refreshWs(g, s, p);
    try {
      const sub = this.roundCounters(gi, p, s.counters);
      scanInto(flag, [p], g.skipNonFinite !== false);
      this.stepRankTensor(g, s, p, sub, flag, ws);
      nat.galoreFinish(sub.handle, flag.handle);
    } finally {
      ws?.dispose();
    }
  }

  protected finishRoundImpl(groups: ParamGroup<GaLoreAdafactorOptions>[]): void {
    for (const g of groups) { const s = this.ranked.get(g); if (s) s.calls++; }
  }

  protected countersOf(g: ParamGroup<GaLoreAdafactorOptions>): Tensor | undefined {
    return isRanked(g) ? this.ranked.get(g)?.counters : super.countersOf(g);
  }

  /** @internal the state of a rank tensor (undefined for plain ones or before the first step) */
  rankStateOf(p: Parameter): { row: Tensor; col: Tensor; expAvg?: Tensor; proj: Tensor; projB?: Tensor; side: string } | undefined {
    for (const s of this.ranked.values()) {
      const q = s.params.get(p);
      if (q) return { row: q.row, col: q.col, expAvg: q.expAvg, proj: q.pA, projB: q.pB, side: SIDES[q.side] };
    }
    return undefined;
  }

  stateDict(): StateDict {
    const base = super.stateDict();
    const tensors = { ...base.tensors };
    const groupState: Record<string, unknown>[] = [];
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      const s = this.ranked.get(g);
      groupState.push(s ? { calls: s.calls, projSides: g.params.map((p) => SIDES[s.params.get(p)!.side]) } : { calls: 0 });
      if (s) tensors[`group.${gi}.counters`] = s.counters;
      for (const p of g.params) {
        const q = s?.params.get(p);
        if (q) {
          tensors[`param.${i}.exp_avg_sq_row`] = q.row;
          tensors[`param.${i}.exp_avg_sq_col`] = q.col;
          if (q.expAvg) tensors[`param.${i}.exp_avg`] = q.expAvg;
          tensors[`param.${i}.proj`] = q.pA;
          if (q.pB) tensors[`param.${i}.proj_b`] = q.pB;
        }
        i++;
      }
    });
    return { ...this.stateDictBase("GaLoreAdafactor"), tensors, groupState };
  }

  loadStateDict(sd: StateDict): void {
    this.checkStateDictBase(sd, "GaLoreAdafactor");
    // Plain groups: Adafactor's loader on the tensors of those groups (validated there).
    const plainNames: Record<string, Tensor> = {};
    const known = new Set<string>();
    type Item = { p: Parameter; row: Tensor; col: Tensor; m?: Tensor; pa: Tensor; pb?: Tensor };
    const plan: { g: ParamGroup<GaLoreAdafactorOptions>; counters?: Tensor; items: Item[]; calls: number }[] = [];
    const want = (name: string, n: number, dtype: string): Tensor | undefined => {
      known.add(name);
      if (!Object.prototype.hasOwnProperty.call(sd.tensors, name)) return undefined;
      const t = sd.tensors[name];
      if (!(t instanceof Tensor) || t.disposed || t.dtype !== dtype || t.numel !== n) fail("E_CHECKPOINT", `state tensor ${name} must be ${dtype} of ${n} elements`);
      return t;
    };
    let i = 0;
    this.paramGroups.forEach((g, gi) => {
      if (!isRanked(g)) {
        for (const [k, t] of Object.entries(sd.tensors)) {
          const own = k === `group.${gi}.counters` || g.params.some((_, j) => k.startsWith(`param.${i + j}.`));
          if (own) plainNames[k] = t;
        }
        i += g.params.length;
        return;
      }
      const counters = want(`group.${gi}.counters`, 2, "i32");
      const meta = (sd.groupState?.[gi] ?? {}) as { calls?: unknown; projSides?: unknown };
      const calls = Number(meta.calls ?? 0);
      if (!Number.isSafeInteger(calls) || calls < 0) fail("E_CHECKPOINT", `group ${gi} has a bad calls count`);
      const first = g.beta1 !== null && g.beta1 !== undefined;
      const items: Item[] = [];
      g.params.forEach((p, k) => {
        const [rows, cols] = view2d(p);
        const r = g.rank as number;
        const side = sideOf(g.projType as ProjType, rows, cols);
        const [rr, rc] = rDims({ rows, cols, rank: r, side });
        const row = want(`param.${i}.exp_avg_sq_row`, rr, "f32"), col = want(`param.${i}.exp_avg_sq_col`, rc, "f32");
        const m = first ? want(`param.${i}.exp_avg`, rr * rc, "f32") : undefined;
        const pa = want(`param.${i}.proj`, side === Side.Right ? r * cols : rows * r, "f32");
        const pb = side === Side.Full ? want(`param.${i}.proj_b`, r * cols, "f32") : undefined;
        const any = !!(row || col || m || pa || pb);
        if (any) {
          if (!row || !col || !pa || (first && !m) || (side === Side.Full && !pb)) fail("E_CHECKPOINT", `parameter ${i} has only part of its state`);
          const sides = meta.projSides as unknown[] | undefined;
          if (!Array.isArray(sides) || sides[k] !== SIDES[side]) fail("E_CHECKPOINT", `parameter ${i}: the projector side does not match projType ${g.projType}`);
          if (!counters) fail("E_CHECKPOINT", `group ${gi} has state but no step counters`);
          items.push({ p, row, col, m, pa, pb });
        }
        i++;
      });
      if (counters && items.length !== g.params.length) fail("E_CHECKPOINT", `group ${gi} lacks state for some parameters`);
      plan.push({ g, counters, items, calls });
    });
    for (const name of Object.keys(sd.tensors)) if (!known.has(name) && !(name in plainNames)) fail("E_CHECKPOINT", `unexpected state tensor ${name}`);
    // The plain groups through Adafactor's loader (it validates everything before it changes
    // anything); the rank groups' state was validated above and is copied after it succeeded.
    super.loadStateDict({ ...sd, optimizer: "Adafactor", tensors: plainNames });
    for (const { g, counters, items, calls } of plan) {
      const old = this.ranked.get(g);
      if (!counters) {
        if (old) { for (const q of old.params.values()) for (const t of [q.pA, q.pB, q.row, q.col, q.expAvg]) t?.dispose(); old.counters.dispose(); old.flag.dispose(); }
        this.ranked.delete(g);
        continue;
      }
      const s = this.prepareRanked(g);
      s.counters.copyFrom(counters);
      s.calls = calls;
      for (const it of items) {
        const q = s.params.get(it.p)!;
        q.row.copyFrom(it.row); q.col.copyFrom(it.col); q.pA.copyFrom(it.pa);
        if (it.m) q.expAvg!.copyFrom(it.m);
        if (it.pb) q.pB!.copyFrom(it.pb);
        q.refreshed = true;
      }
    }
  }

  protected stateTensors(): Tensor[] {
    const out = super.stateTensors();
    for (const s of this.ranked.values()) {
      out.push(s.counters, s.flag);
      for (const q of s.params.values()) for (const t of [q.pA, q.pB, q.row, q.col, q.expAvg]) if (t) out.push(t);
    }
    return out;
  }

  dispose(): void {
    for (const s of this.ranked.values()) {
      s.counters.dispose(); s.flag.dispose();
      for (const q of s.params.values()) for (const t of [q.pA, q.pB, q.row, q.col, q.expAvg]) t?.dispose();
    }
    for (const sc of this.rscratch.values()) { for (const t of [sc.sR, sc.sT, sc.sBig, sc.af]) t?.dispose(); sc.norm?.dispose(); }
    this.ranked.clear();
    this.rscratch.clear();
    super.dispose();
  }
}
