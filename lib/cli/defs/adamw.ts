// AdamW over the §6 workload: f32 W/G/m/v (28 B/param), bf16 W/G with f32 m/v (22 B/param), and
// bf16 W/G with bf16 m/v (14 B/param), the last being what torch's fused AdamW does for bf16
// parameters (its states take the parameter dtype), so that row is the one compared with torch.
import { AdamW, AdamWOptions } from "../../optim/adamw";
import { Optimizer, GroupOptions } from "../../optim/optimizer";
import { BenchDefinition } from "../registry";
import { optimizerCase } from "./optimizer_case";

const HYPER = { lr: 1e-3, betas: [0.9, 0.999] as [number, number], eps: 1e-8, weightDecay: 1e-2 };

// skipNonFinite (default on) scans every gradient before any write: 4 (f32) or 2 (bf16) bytes per
// parameter beyond the floor's count. The rows with the guard off show the update kernel alone.
function adamwCase(dtype: "f32" | "bf16", stateDtype: "f32" | "bf16", skipNonFinite = true) {
  const stateSize = stateDtype === "f32" ? 4 : 2;
  const pSize = dtype === "f32" ? 4 : 2;
  return optimizerCase({
    name: "adamw",
    dtype,
    variant: `states ${stateDtype}${skipNonFinite ? "" : ", no NaN guard"}`,
    torchRow: stateDtype === dtype ? `adamw:${dtype}` : undefined,
    // read W G m v, write W m v
    bytesPerParam: 3 * pSize + 4 * stateSize,
    expectedStateBytesPerParam: 2 * stateSize,
    peakExtraBytesPerParam: 0,
    options: { stateDtype, skipNonFinite, ...HYPER },
    make: (params) => new AdamW(params, { ...HYPER, stateDtype, skipNonFinite } as AdamWOptions) as unknown as Optimizer<GroupOptions>,
  });
}

export const adamw: BenchDefinition = {
  name: "adamw",
  description: "fused multi-tensor AdamW step over the workload",
  cases: () => [adamwCase("f32", "f32"), adamwCase("bf16", "f32"), adamwCase("bf16", "bf16"),
                adamwCase("f32", "f32", false), adamwCase("bf16", "f32", false)],
};
