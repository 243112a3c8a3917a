// The generic "one optimizer step over the workload" case: builds the workload's parameters
// (randn std 0.02) and gradients (randn, never zeros), times opt.step(), reports the step
// against the floor (bytes the step must move / copy bandwidth) and frees everything.
import { DType, DTYPE_SIZE } from "../../dtype";
import { Optimizer, GroupOptions } from "../../optim/optimizer";
import { Parameter } from "../../parameter";
import { randn } from "../../tensor";
import { timeCalls, stats } from "../timing";
import { BenchCase, BenchContext, BenchRow } from "../registry";

export interface OptimizerCaseSpec {
  name: string;
  dtype: "f32" | "bf16" | "f16";
  variant?: string;
  torchRow?: string;
  usesGemm?: boolean;
  /** Bytes per parameter one step must move (DESIGN §5 table). */
  bytesPerParam: number;
  /** Bytes per parameter of optimizer state expected, for the free-memory check before allocating. */
  expectedStateBytesPerParam: number;
  /** Transient device memory a step needs beyond params, grads and state (0 for a fused step). */
  peakExtraBytesPerParam: number;
  /** Options reported in the row (and usually passed to the optimizer). */
  options: Record<string, unknown>;
  make(params: Parameter[]): Optimizer<GroupOptions>;
}

export function optimizerCase(spec: OptimizerCaseSpec): BenchCase {
  return {
    name: spec.name,
    dtype: spec.dtype,
    variant: spec.variant,
    torchRow: spec.torchRow,
    usesGemm: spec.usesGemm,
    run: (ctx) => runOptimizerCase(spec, ctx),
  };
}

async function runOptimizerCase(spec: OptimizerCaseSpec, ctx: BenchContext): Promise<BenchRow> {
  const { dev, workload } = ctx;
  const n = workload.params;
  const need = n * (2 * DTYPE_SIZE[spec.dtype as DType] + spec.expectedStateBytesPerParam + spec.peakExtraBytesPerParam);
  const free = dev.memory().free;
  if (need > free * 0.95)
    throw new Error(`needs ~${(need / 2 ** 30).toFixed(1)} GiB on ${dev}, ${(free / 2 ** 30).toFixed(1)} GiB free`);

  const params: Parameter[] = [];
  let opt: Optimizer<GroupOptions> | undefined;
  try {
    workload.matrices.forEach((m, i) => {
      const p = new Parameter(randn(m.shape, { dtype: spec.dtype, device: dev, seed: 1_000 + i, std: 0.02 }), { name: m.name });
      params.push(p);
      p.grad.dispose();
      p.grad = randn(m.shape, { dtype: spec.dtype, device: dev, seed: 2_000 + i, std: 1 });
      ctx.progress(0.1 * (i + 1) / workload.matrices.length, "allocating");
    });
    const o = spec.make(params);
    opt = o;
    const times = await timeCalls(dev, () => o.step(), ctx.steps, ctx.warmup,
      (done) => ctx.progress(0.1 + 0.9 * done / ctx.steps, `step ${done}/${ctx.steps}`));
    const st = stats(times);
    const bytes = spec.bytesPerParam * n;
    const floorMs = bytes / (ctx.copyGBps * 1e6);
    const skipped = await skippedSteps(o);
    if (skipped > 0) ctx.note(`${spec.name} ${spec.dtype}: ${skipped} step(s) were skipped as non-finite; its timing is not a real step's`);
    return {
      name: spec.name,
      dtype: spec.dtype,
      ...spec.options,
      params: n,
      tensors: params.length,
      steps: ctx.steps,
      medianMs: st.median,
      minMs: st.min,
      maxMs: st.max,
      bytesPerParam: spec.bytesPerParam,
      floorMs,
      fracOfFloor: floorMs / st.median,
      GBps: bytes / (st.median * 1e6),
      stateBytesPerParam: o.stateBytes() / n,
      peakExtraBytesPerParam: spec.peakExtraBytesPerParam,
    };
  } finally {
    opt?.dispose();
    for (const p of params) p.dispose();
    await dev.synchronize();
  }
}

async function skippedSteps(o: Optimizer<GroupOptions>): Promise<number> {
  const f = (o as unknown as { skippedSteps?: () => Promise<number> }).skippedSteps;
  return typeof f === "function" ? f.call(o) : 0;
}
