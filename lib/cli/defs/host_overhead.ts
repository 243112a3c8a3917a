// Host cost of one AdamW step over a model's worth of tensors (LLaMA-7B has 291), each so small
// that the device work is negligible: what a training loop pays per step in JS and N-API before
// the device sees anything. Target: ≤ 100 µs.
import { AdamW } from "../../optim/adamw";
import { Parameter } from "../../parameter";
import { randn } from "../../tensor";
import { stats } from "../timing";
import { BenchDefinition, BenchRow, BenchContext } from "../registry";
import { LLAMA7B_TENSORS } from "../workload";

const ELEMENTS = 256;
const TARGET_US = 100;

async function run(ctx: BenchContext): Promise<BenchRow> {
  const { dev } = ctx;
  const calls = ctx.quick ? 100 : 200;
  const warmup = 20;
  const syncEvery = 20;
  const params: Parameter[] = [];
  let opt: AdamW | undefined;
  try {
    for (let i = 0; i < LLAMA7B_TENSORS; i++) {
      const p = new Parameter(randn([ELEMENTS], { device: dev, seed: 3_000 + i, std: 0.02 }), { name: `t${i}` });
      params.push(p);
      p.grad.dispose();
      p.grad = randn([ELEMENTS], { device: dev, seed: 4_000 + i });
    }
    const o = new AdamW(params, { lr: 1e-3 });
    opt = o;
    for (let i = 0; i < warmup; i++) o.step();
    await dev.synchronize();
    const us: number[] = [];
    for (let i = 0; i < calls; i++) {
      const t0 = process.hrtime.bigint();
      o.step();
      us.push(Number(process.hrtime.bigint() - t0) / 1e3);
      if ((i + 1) % syncEvery === 0) {
        await dev.synchronize();
        ctx.progress((i + 1) / calls, `call ${i + 1}/${calls}`);
      }
    }
    const st = stats(us);
    const n = LLAMA7B_TENSORS * ELEMENTS;
    if (dev.kind === "cpu")
      ctx.note("adamw-host-overhead on the CPU includes the step's arithmetic (the CPU backend runs it inside the call)");
    return {
      name: "adamw-host-overhead",
      dtype: "f32",
      params: n,
      tensors: LLAMA7B_TENSORS,
      elementsPerTensor: ELEMENTS,
      calls,
      medianUs: st.median,
      minUs: st.min,
      maxUs: st.max,
      targetUs: TARGET_US,
      medianMs: st.median / 1e3,
      minMs: st.min / 1e3,
      maxMs: st.max / 1e3,
      stateBytesPerParam: o.stateBytes() / n,
      peakExtraBytesPerParam: 0,
    };
  } finally {
    opt?.dispose();
    for (const p of params) p.dispose();
    await dev.synchronize();
  }
}

export const adamwHostOverhead: BenchDefinition = {
  name: "adamw-host-overhead",
  description: `host time of one AdamW step() call over ${LLAMA7B_TENSORS} tensors of ${ELEMENTS} elements`,
  cases: () => [{ name: "adamw-host-overhead", dtype: "f32", run }],
};
