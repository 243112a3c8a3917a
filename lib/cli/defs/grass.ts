// Grass rows: gather-rows and scatter-rows (512 and 2048 rows of the 11008 × 4096 f32 up
// projection; floor = bytes read + written / copy bandwidth), the grass step over the §6 workload
// (r = 1/8 of each matrix's selected side, steady state: no refresh in the timed steps) and
// grass-refresh (every step reselects: norms over the full gradient, selection, moment reset).
//
// Timing of the row ops. One gather of 512 rows moves 16 MB (4 µs on an H200), less than the host
// takes to enqueue a call, so a timed call is a batch of back-to-back launches, and before each
// batch the device is given a head start of a few ms of copies (outside the timed span:
// timeQueuedCalls) so the whole batch is queued before it runs. The
// index sets rotate (16 sets of distinct random rows, sorted as Grass keeps them) so a call does
// not find the previous call's rows in L2.
import { native, NativeBufferHandle } from "../../native";
import { GrassAdamW, gatherRows, scatterRows } from "../../optim/grass";
import { Optimizer, GroupOptions } from "../../optim/optimizer";
import { Parameter } from "../../parameter";
import { randn, tensor, Tensor } from "../../tensor";
import { BenchCase, BenchContext, BenchDefinition, BenchRow } from "../registry";
import { stats, timeQueuedCalls } from "../timing";
import { LLAMA7B_FFN, LLAMA7B_HIDDEN, scaleDim } from "../workload";
import { optimizerCase } from "./optimizer_case";

const SETS = 16;
const BATCH = 16;

/** Distinct random rows of [0, m), sorted (xorshift; deterministic). */
function rowSet(m: number, r: number, seed: number): Int32Array {
  let s = (seed * 0x9e3779b1 + 1) >>> 0;
  const next = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
  const perm = Int32Array.from({ length: m }, (_, i) => i);
  for (let i = 0; i < r; i++) {
    const j = i + (next() % (m - i));
    const t = perm[i]; perm[i] = perm[j]; perm[j] = t;
  }
  return perm.slice(0, r).sort();
}

/** Enqueues a few ms of copies so that the host can queue a whole batch before the device gets to it. */
function headStart(ctx: BenchContext, bufs: NativeBufferHandle[] | undefined): void {
  if (ctx.dev.kind !== "cuda" || !bufs) return;
  for (let k = 0; k < 16; k++) native().copyKernel(bufs[k & 1], bufs[(k + 1) & 1], bufs[0].bytes);
}

function rowOpCase(op: "gather-rows" | "scatter-rows", fullRows: number): BenchCase {
  return {
    name: op,
    dtype: "f32",
    variant: `${fullRows} rows`,
    run: async (ctx: BenchContext): Promise<BenchRow> => {
      const { dev } = ctx;
      const scale = ctx.workload.scale;
      const m = scaleDim(LLAMA7B_FFN, scale), n = scaleDim(LLAMA7B_HIDDEN, scale);
      const r = Math.max(1, Math.min(m, Math.floor(fullRows / scale)));
      const owned: Tensor[] = [];
      const keep = <T extends Tensor>(t: T) => { owned.push(t); return t; };
      let scratch: NativeBufferHandle[] | undefined;
      try {
        const big = keep(randn([m, n], { device: dev, seed: 7, std: 0.02 }));
        const sets = Array.from({ length: SETS }, (_, k) => keep(tensor(rowSet(m, r, 11 + k), [r], { dtype: "i32", device: dev })));
        const rho = keep(tensor(Float32Array.from({ length: r }, (_, j) => 0.5 + (j % 7) / 7), [r], { device: dev }));
        const compact = keep(randn([r, n], { device: dev, seed: 9, std: 1e-3 }));
        if (dev.kind === "cuda") {
          const bytes = 1 << 30;
          scratch = [new (native().NativeBuffer)(dev.index, bytes), new (native().NativeBuffer)(dev.index, bytes)];
          for (const b of scratch) native().fillZero(b, bytes);
        }
        const call = op === "gather-rows"
          ? (k: number) => { gatherRows(big, sets[k % SETS], { scale: rho, out: compact }); }
          : (k: number) => { scatterRows(big, sets[k % SETS], compact, { alpha: -1e-3, scale: rho }); };
        const batch = dev.kind === "cuda" ? BATCH : 1;
        // The head start leaves L2 full of the copies' dirty lines, which must not be written back
        // on the timed batch's time: untimed calls over every index set first, in the timed order
        // (each set is then SETS calls from its last use, as in the batch). Two calls were not
        // enough, likely because the row kernels' loads and stores are evict-first: gather-rows of
        // 2048 rows measured 0.79 of its floor after 2, 0.88 after 16 (H200, bench/results/
        // NVIDIA-H200-2026-11-24-16/rows-harness/).
        const prime = () => { headStart(ctx, scratch); for (let k = 0; k < SETS; k++) call(k); };
        const times = await timeQueuedCalls(dev, prime, (i) => {
          for (let b = 0; b < batch; b++) call(i * batch + b);
        }, ctx.steps, ctx.warmup, (done) => ctx.progress(done / ctx.steps, `call ${done}/${ctx.steps}`));
        const st = stats(times.map((t) => t / batch));
        // gather: read r rows, write r rows; scatter: read the r update rows, read + write r rows of W.
        const bytes = (op === "gather-rows" ? 2 : 3) * r * n * 4;
        const floorMs = bytes / (ctx.copyGBps * 1e6);
        return {
          name: op, dtype: "f32", params: r * n, rows: r, matrix: [m, n], indexSets: SETS, launchesPerTimedCall: batch,
          withRho: true, medianMs: st.median, minMs: st.min, maxMs: st.max, bytesMoved: bytes, floorMs,
          fracOfFloor: floorMs / st.median, GBps: bytes / (st.median * 1e6),
        };
      } finally {
        for (const t of owned) t.dispose();
        for (const b of scratch ?? []) b.dispose();
        await dev.synchronize();
      }
    },
  };
}

const HYPER = { lr: 1e-3, betas: [0.9, 0.999] as [number, number], eps: 1e-6, weightDecay: 0 };

/** Ranks r = 1/8 of each matrix's selected side (its larger one): one group per rank. */
function grassGroups(params: Parameter[], gap: number, stateBits = 32) {
  const byRank = new Map<number, Parameter[]>();
  for (const p of params) {
    const side = Math.max(p.shape[0], p.numel / p.shape[0]);
    const r = Math.max(1, Math.floor(side / 8));
    byRank.set(r, [...(byRank.get(r) ?? []), p]);
  }
  return [...byRank].map(([rank, ps]) => ({ params: ps, rank, updateProjGap: gap, select: "topk" as const, scale: 1, stateBits }));
}

// Bytes per parameter of a steady step (the selected elements are 1/8 of the parameters):
// - f32 states: read G, m, v, W and write m, v, W = 28 bytes per selected element;
// - stateBits 8: read G, W and the codes of m, v (1 byte each), write W and the codes = 16 bytes.
// Not in the floor: the non-finite scan's second read of the selected G rows, and with 8-bit
// states the absmax pre-pass's read of G and the codes (6 bytes), like the scan's read. A step
// that reselects (every step here) adds one read of the full gradient for the norms (4 bytes/param).
function grassCase(refresh: boolean, stateBits: 32 | 8) {
  const gap = refresh ? 1 : 200;
  const q8 = stateBits === 8;
  return optimizerCase({
    name: refresh ? "grass-refresh" : "grass",
    dtype: "f32",
    variant: `r = side/8, topk${refresh ? ", every step" : ""}${q8 ? ", 8-bit states" : ""}`,
    bytesPerParam: (refresh ? 4 : 0) + (q8 ? 16 : 28) / 8,
    expectedStateBytesPerParam: q8 ? 0.32 : 1.05,
    peakExtraBytesPerParam: 0.01,
    options: { rankFraction: 0.125, select: "topk", updateProjGap: gap, keepState: false, ...(q8 ? { stateBits: 8 } : {}), ...HYPER },
    make: (params) => new GrassAdamW(grassGroups(params, gap, stateBits), HYPER) as unknown as Optimizer<GroupOptions>,
  });
}

export const grassRowOps: BenchDefinition = {
  name: "grass-rows",
  description: "gather-rows / scatter-rows: 512 and 2048 rows of the 11008 × 4096 f32 matrix, with rho",
  cases: () => [rowOpCase("gather-rows", 512), rowOpCase("gather-rows", 2048), rowOpCase("scatter-rows", 512), rowOpCase("scatter-rows", 2048)],
};

export const grass: BenchDefinition = {
  name: "grass",
  description: "GrassAdamW step over the workload, r = 1/8 of each matrix's selected side (steady state and refresh; f32 and 8-bit states)",
  cases: () => [grassCase(false, 32), grassCase(true, 32), grassCase(false, 8), grassCase(true, 8)],
};
