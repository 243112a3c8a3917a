#!/usr/bin/env node
// One step of each projected optimizer on two §6 matrices (11008 x 4096 and 4096 x 11008, so both
// sides of the projection run), for `ncu` (bench/profile_steps.sh) to time every kernel the step
// launches: APOLLO-Mini, APOLLO rank 256, GaLore rank 128 / 512 / 1024 (steady step: the refresh runs in an
// untimed first step). Not a benchmark: no timings are taken here.
const s = require("../dist");
const dev = s.defaultDevice();

function params(seed) {
  return [[11008, 4096], [4096, 11008]].map((shape, i) => {
    const p = new s.Parameter(s.randn(shape, { device: dev, seed: seed + i, std: 0.02 }), { name: `p${i}` });
    const g = s.randn(shape, { device: dev, seed: seed + 10 + i, std: 1e-2 });
    p.grad.copyFrom(g);
    g.dispose();
    return p;
  });
}

async function run(label, make) {
  const ps = params(label.length);
  const opt = make(ps);
  opt.step();  // GaLore: the refresh; all: state allocation
  await dev.synchronize();
  console.error(`profile_steps: ${label}: timed step`);
  opt.step();
  await dev.synchronize();
  opt.dispose?.();
  for (const p of ps) { p.data.dispose(); p.grad.dispose(); }
}

async function main() {
  const only = process.argv[2] ? new RegExp(process.argv[2]) : /./;
  if (only.test("apollo-mini")) await run("apollo-mini", (ps) => new s.ApolloMini(ps));
  if (only.test("apollo-256")) await run("apollo-256", (ps) => new s.Apollo([{ params: ps, rank: 256, scaleType: "channel" }]));
  for (const rank of [128, 512, 1024])
    if (only.test(`galore-${rank}`)) await run(`galore-${rank}`, (ps) => new s.GaLoreAdamW([{ params: ps, rank, updateProjGap: 200, scale: 0.25 }]));
  console.error("profile_steps: done on", dev.name);
}
main().catch((e) => { console.error(e); process.exit(1); });
