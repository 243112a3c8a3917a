#!/usr/bin/env node
// GaLore's steady step on the DESIGN §6 workload, for a host profile: `node --cpu-prof
// bench/galore_host_steps.js [rank] [steps]` runs that many steps back to back (after 3 warm-up
// steps) and prints the host's time per step; bench/cpuprofile_top.py then says where it went.
const s = require("../dist");
const { workloadParams } = require("./workload_params");

async function main() {
  const rank = Number(process.argv[2] || 128), steps = Number(process.argv[3] || 200);
  const dev = s.defaultDevice();
  const params = workloadParams(dev);
  const opt = new s.GaLoreAdamW([{ params, rank, updateProjGap: 1e9, scale: 0.25 }], { lr: 1e-3, weightDecay: 0 });
  opt.benchSkipFirstRefresh();
  for (let i = 0; i < 3; i++) opt.step();
  await dev.synchronize();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < steps; i++) opt.step();
  const host = Number(process.hrtime.bigint() - t0) / 1e6 / steps;
  await dev.synchronize();
  const wall = Number(process.hrtime.bigint() - t0) / 1e6 / steps;
  console.log(JSON.stringify({ rank, steps, hostMsPerStep: host, wallMsPerStep: wall }));
  opt.dispose();
}
main().catch((e) => { console.error(e); process.exit(1); });
