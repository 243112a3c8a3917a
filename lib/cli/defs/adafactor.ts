// Adafactor over the workload (f32 and bf16 W/G, factored f32 states, no beta1). The floor counts
// what a step must move: read W and G, write W (12 B/param in f32, 6 in bf16); the kernels read G
// four times and W twice (two reductions before the update), so the row shows how far that is.
import { Adafactor, AdafactorOptions } from "../../optim/adafactor";
import { Optimizer, GroupOptions } from "../../optim/optimizer";
import { BenchDefinition } from "../registry";
import { optimizerCase } from "./optimizer_case";

const HYPER: AdafactorOptions = { lr: 1e-3, clipThreshold: 1, decayRate: -0.8, weightDecay: 0 };

function adafactorCase(dtype: "f32" | "bf16") {
  const p = dtype === "f32" ? 4 : 2;
  return optimizerCase({
    name: "adafactor",
    dtype,
    bytesPerParam: 3 * p,
    expectedStateBytesPerParam: 0.01,
    peakExtraBytesPerParam: 0,
    options: { ...HYPER },
    make: (params) => new Adafactor(params, { ...HYPER }) as unknown as Optimizer<GroupOptions>,
  });
}

export const adafactor: BenchDefinition = {
  name: "adafactor",
  description: "Adafactor step (factored second moments, update clipping) over the workload",
  cases: () => [adafactorCase("f32"), adafactorCase("bf16")],
};
