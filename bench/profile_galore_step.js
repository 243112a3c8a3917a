#!/usr/bin/env node
// GaLore's steady step (no refresh) on the whole DESIGN §6 workload (28 matrices, f32 W and G,
// TF32 GEMMs), for `ncu` (bench/profile_galore_step.sh) to time every kernel one step launches:
// where the step's time goes at rank 128 / 512 / 1024. Two untimed steps first (state allocation,
// cuBLAS warm-up); the profiled step is the third of each rank, labelled on stderr. Not a
// benchmark: no timings are taken here.
const s = require("../dist");
const { workloadParams } = require("./workload_params");
const dev = s.defaultDevice();

async function main() {
  const ranks = (process.argv[2] || "128,512,1024").split(",").map(Number);
  const params = workloadParams(dev);
  for (const rank of ranks) {
    const opt = new s.GaLoreAdamW([{ params, rank, updateProjGap: 1e9, scale: 0.25 }], { lr: 1e-3, weightDecay: 0 });
    opt.benchSkipFirstRefresh();
    opt.step();
    opt.step();
    await dev.synchronize();
    console.error(`profile_galore_step: rank ${rank}: profiled step`);
    opt.step();
    await dev.synchronize();
    opt.dispose?.();
  }
  console.error("profile_galore_step: done on", dev.name);
}
main().catch((e) => { console.error(e); process.exit(1); });
