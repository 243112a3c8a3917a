#!/usr/bin/env node
// Is GaLore's steady step on the DESIGN §6 workload bound by the host or by the device? Per rank:
// the host's time to enqueue one step (opt.step() returns before the device is done), the device's
// time per step over back-to-back steps (CUDA events, as the bench times it), and the device's
// time per step when each step is enqueued whole before the device starts it (the host's time
// taken out: steps queued behind a long copy). Prints one JSON document.
const s = require("../dist");
const { native } = require("../dist/native");
const { workloadParams } = require("./workload_params");
const dev = s.defaultDevice();

function hr() { return Number(process.hrtime.bigint()) / 1e6; }

async function main() {
  if (dev.kind !== "cuda") throw new Error("galore_host_time: CUDA only");
  const ranks = (process.argv[2] || "128,512,1024").split(",").map(Number);
  const params = workloadParams(dev);
  const nat = native();
  const bytes = 1 << 30;
  const scratch = [new nat.NativeBuffer(dev.index, bytes), new nat.NativeBuffer(dev.index, bytes)];
  const rows = [];
  for (const rank of ranks) {
    const opt = new s.GaLoreAdamW([{ params, rank, updateProjGap: 1e9, scale: 0.25 }], { lr: 1e-3, weightDecay: 0 });
    opt.benchSkipFirstRefresh();
    for (let i = 0; i < 3; i++) opt.step();
    await dev.synchronize();
    const n = 5;
    // Host: enqueue time of each step, the device kept busy far ahead (a queue of long copies).
    const host = [];
    for (let k = 0; k < 100; k++) nat.copyKernel(scratch[k & 1], scratch[(k + 1) & 1], bytes);
    for (let i = 0; i < n; i++) { const t0 = hr(); opt.step(); host.push(hr() - t0); }
    await dev.synchronize();
    // Device, back to back (the bench's way).
    const ev = Array.from({ length: n + 1 }, () => nat.newEvent());
    nat.recordEvent(dev.index, ev[0]);
    for (let i = 0; i < n; i++) { opt.step(); nat.recordEvent(dev.index, ev[i + 1]); }
    await dev.synchronize();
    const b2b = [];
    for (let i = 0; i < n; i++) b2b.push(nat.elapsedMs(ev[i], ev[i + 1]));
    // Device, every step queued whole first (behind copies) so the host never holds it back.
    const ev2 = Array.from({ length: n + 1 }, () => nat.newEvent());
    for (let k = 0; k < 100; k++) nat.copyKernel(scratch[k & 1], scratch[(k + 1) & 1], bytes);
    nat.recordEvent(dev.index, ev2[0]);
    for (let i = 0; i < n; i++) { opt.step(); nat.recordEvent(dev.index, ev2[i + 1]); }
    await dev.synchronize();
    const queued = [];
    for (let i = 0; i < n; i++) queued.push(nat.elapsedMs(ev2[i], ev2[i + 1]));
    const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
    rows.push({ rank, hostMs: med(host), deviceBackToBackMs: med(b2b), deviceQueuedMs: med(queued), host, b2b, queued });
    opt.dispose?.();
  }
  for (const b of scratch) b.dispose();
  console.log(JSON.stringify({ device: dev.name, commit: process.env.SLIMOPT_COMMIT || "unknown", rows }, null, 1));
}
main().catch((e) => { console.error(e); process.exit(1); });
