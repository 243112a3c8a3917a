// Quantized-state rows: adamw8bit and adamw4bit over the §6 workload (f32 and bf16 parameters,
// with and without the non-finite guard), and quantize-blockwise / dequantize-blockwise of the
// whole workload's element count as one tensor (block 256, the signed dynamic map).
//
// Floors (DESIGN §5), per parameter: read W G, write W (3 x param size); read and write both
// states' codes (2 x 2 x bits/8); read and write both absmax (2 x 2 x 4 / block). 8 bits:
// 16.0625 (f32), 10.0625 (bf16); 4 bits (blocks of 128): 14.125 (f32), 8.125 (bf16). The guard's
// extra read of G (4 or 2 bytes) is not in the floor: with it a step can reach 16/20 (f32) or
// 10/12 (bf16) of the floor at most, hence the rows without it.
import { DType, DTYPE_SIZE } from "../../dtype";
import { AdamW4bit, AdamW8bit, AdamW8bitOptions } from "../../optim/adamw8bit";
import { Optimizer, GroupOptions } from "../../optim/optimizer";
import { dequantizeBlockwise, quantizeBlockwise } from "../../quant";
import { randn, Tensor, zeros } from "../../tensor";
import { BenchCase, BenchContext, BenchDefinition, BenchRow } from "../registry";
import { stats, timeCalls } from "../timing";
import { optimizerCase } from "./optimizer_case";

const HYPER = { lr: 1e-3, betas: [0.9, 0.999] as [number, number], eps: 1e-8, weightDecay: 1e-2 };

function quantAdamCase(bits: 8 | 4, dtype: "f32" | "bf16", skipNonFinite: boolean) {
  const block = bits === 8 ? 256 : 128;
  const p = DTYPE_SIZE[dtype];
  const Opt = bits === 8 ? AdamW8bit : AdamW4bit;
  return optimizerCase({
    name: `adamw${bits}bit`,
    dtype,
    variant: skipNonFinite ? undefined : "no NaN guard",
    bytesPerParam: 3 * p + 2 * 2 * (bits / 8) + 2 * 2 * (4 / block),
    expectedStateBytesPerParam: 2 * (bits / 8) + 2 * (4 / block),
    peakExtraBytesPerParam: 0,
    options: { stateDtype: `${bits}-bit`, blockSize: block, skipNonFinite, ...HYPER },
    make: (params) => new Opt(params, { ...HYPER, skipNonFinite } as AdamW8bitOptions) as unknown as Optimizer<GroupOptions>,
  });
}

export const adamw8bit: BenchDefinition = {
  name: "adamw8bit",
  description: "fused AdamW8bit step (blockwise 8-bit states) over the workload",
  cases: () => [quantAdamCase(8, "f32", true), quantAdamCase(8, "bf16", true),
                quantAdamCase(8, "f32", false), quantAdamCase(8, "bf16", false)],
};

export const adamw4bit: BenchDefinition = {
  name: "adamw4bit",
  description: "fused AdamW4bit step (4-bit states, two per byte, blocks of 128) over the workload",
  cases: () => [quantAdamCase(4, "f32", true), quantAdamCase(4, "bf16", true),
                quantAdamCase(4, "f32", false), quantAdamCase(4, "bf16", false)],
};

const BLOCK = 256;

function quantCase(op: "quantize-blockwise" | "dequantize-blockwise", dtype: DType): BenchCase {
  return {
    name: op,
    dtype,
    run: async (ctx: BenchContext): Promise<BenchRow> => {
      const { dev } = ctx;
      const n = ctx.workload.params;
      const blocks = Math.ceil(n / BLOCK);
      const es = DTYPE_SIZE[dtype];
      const need = n * (es + 1) + blocks * 4;
      const free = dev.memory().free;
      if (need > free * 0.95)
        throw new Error(`needs ~${(need / 2 ** 30).toFixed(1)} GiB on ${dev}, ${(free / 2 ** 30).toFixed(1)} GiB free`);
      const owned: Tensor[] = [];
      const keep = <T extends Tensor>(t: T) => { owned.push(t); return t; };
      try {
        const x = keep(randn([n], { dtype, device: dev, seed: 17, std: 0.02 }));
        const codes = keep(zeros([n], { dtype: "u8", device: dev }));
        const absmax = keep(zeros([blocks], { device: dev }));
        quantizeBlockwise(x, { blockSize: BLOCK, out: { codes, absmax } });
        const call = op === "quantize-blockwise"
          ? () => { quantizeBlockwise(x, { blockSize: BLOCK, out: { codes, absmax } }); }
          : () => { dequantizeBlockwise(codes, absmax, { blockSize: BLOCK, out: x }); };
        const times = await timeCalls(dev, call, ctx.steps, ctx.warmup,
          (done) => ctx.progress(done / ctx.steps, `call ${done}/${ctx.steps}`));
        const st = stats(times);
        // Read the input once, write the output once: es + 1 bytes per element, plus the absmax.
        const bytes = n * (es + 1) + blocks * 4;
        const floorMs = bytes / (ctx.copyGBps * 1e6);
        return {
          name: op, dtype, params: n, blockSize: BLOCK, map: "signed dynamic", steps: ctx.steps,
          medianMs: st.median, minMs: st.min, maxMs: st.max, bytesPerElement: bytes / n, floorMs,
          fracOfFloor: floorMs / st.median, GBps: bytes / (st.median * 1e6),
        };
      } finally {
        for (const t of owned) t.dispose();
        await dev.synchronize();
      }
    },
  };
}

export const quantizeBlockwiseBench: BenchDefinition = {
  name: "quantize-blockwise",
  description: "blockwise 8-bit quantization (block 256) of the workload's element count",
  cases: () => [quantCase("quantize-blockwise", "f32"), quantCase("quantize-blockwise", "bf16")],
};

export const dequantizeBlockwiseBench: BenchDefinition = {
  name: "dequantize-blockwise",
  description: "blockwise 8-bit dequantization (block 256) of the workload's element count",
  cases: () => [quantCase("dequantize-blockwise", "f32"), quantCase("dequantize-blockwise", "bf16")],
};
