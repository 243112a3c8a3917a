// Process groups and DistributedOptimizer on the CPU: a world of one rank (the local backend),
// the refusals, and `slimopt launch` end to end. Several ranks need CUDA and NCCL: the GPU suite
// (test/gpu/dist.gpu.test.ts) and bench/dist_check.js on a multi-GPU machine cover them.
import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { initProcessGroup, ProcessGroup } from "../lib";
import { collectivesOfOne, worldOfOneMatchesPlain, wrapperRefusals } from "./dist_helpers";
import { expectCode } from "./helpers";

const CLI = path.resolve(__dirname, "../dist/cli/main.js");

describe("process group of one rank on the CPU", () => {
  let pg: ProcessGroup;
  beforeAll(async () => { pg = await initProcessGroup({ device: "cpu", rank: 0, worldSize: 1 }); });
  afterAll(() => pg.dispose());

  test("rank 0 of 1, local backend", () => {
    expect(pg.rank).toBe(0);
    expect(pg.worldSize).toBe(1);
    expect(pg.backend).toBe("local");
  });
  test("collectives of one rank, and refusals that change nothing", () => collectivesOfOne(pg, "cpu"));
  test("DistributedOptimizer over one rank gives every optimizer's own bits", () => worldOfOneMatchesPlain(pg, "cpu"));
  test("DistributedOptimizer refuses bad input", () => wrapperRefusals(pg, "cpu"));
  test("a disposed group refuses collectives", async () => {
    const g = await initProcessGroup({ device: "cpu" });
    g.dispose();
    g.dispose();
    const { randn } = await import("../lib");
    const x = randn([3], { device: "cpu", seed: 1 });
    expectCode(() => g.allReduce(x), "E_DISPOSED");
    x.dispose();
  });
});

describe("initProcessGroup refusals", () => {
  test("several ranks need CUDA devices", async () => {
    await expect(initProcessGroup({ device: "cpu", rank: 0, worldSize: 2, rendezvous: "/tmp/x" })).rejects.toMatchObject({ code: "E_DEVICE" });
  });
  test("rank and world size are checked", async () => {
    await expect(initProcessGroup({ device: "cpu", rank: 1, worldSize: 1 })).rejects.toMatchObject({ code: "E_ARG" });
    await expect(initProcessGroup({ device: "cpu", worldSize: 0 })).rejects.toMatchObject({ code: "E_ARG" });
    await expect(initProcessGroup({ device: "cpu", rank: -1 })).rejects.toMatchObject({ code: "E_ARG" });
  });
});

describe("slimopt launch", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slimopt-launch-test-"));
  const lib = JSON.stringify(path.resolve(__dirname, "../dist"));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test("runs the script once per rank with the rank's environment", () => {
    const script = path.join(dir, "env.js");
    fs.writeFileSync(script, `const e = process.env;
console.log("rank", e.SLIMOPT_RANK, "of", e.SLIMOPT_WORLD_SIZE, "local", e.SLIMOPT_LOCAL_RANK, "rdv", !!e.SLIMOPT_RENDEZVOUS, "args", process.argv.slice(2).join(" "));`);
    const out = execFileSync(process.execPath, [CLI, "launch", "-n", "3", script, "--steps", "5"], { encoding: "utf8" });
    for (let r = 0; r < 3; r++) expect(out).toContain(`[rank ${r}] rank ${r} of 3 local ${r} rdv true args --steps 5`);
  });

  test("a world of one trains through the process group on the CPU", () => {
    const script = path.join(dir, "one.js");
    fs.writeFileSync(script, `const s = require(${lib});
(async () => {
  const pg = await s.initProcessGroup({ device: "cpu" });
  const p = new s.Parameter(s.randn([4, 3], { device: "cpu", seed: 1 }), { name: "w" });
  p.grad.copyFrom(s.randn([4, 3], { device: "cpu", seed: 2 }));
  const opt = new s.DistributedOptimizer(pg, [p], (g) => new s.AdamW(g, { lr: 0.1 }));
  const before = await p.data.toFloat32Array();
  opt.step();
  const after = await p.data.toFloat32Array();
  console.log("moved", after.some((x, i) => x !== before[i]), "world", pg.worldSize);
})().catch((e) => { console.error(e.code, e.message); process.exit(3); });`);
    const out = execFileSync(process.execPath, [CLI, "launch", "-n", "1", script], { encoding: "utf8" });
    expect(out).toContain("[rank 0] moved true world 1");
  });

  test("a failing rank stops the others and sets the exit code", () => {
    const script = path.join(dir, "fail.js");
    fs.writeFileSync(script, `if (process.env.SLIMOPT_RANK === "1") process.exit(7); setTimeout(() => {}, 60000);`);
    const r = spawnSync(process.execPath, [CLI, "launch", "-n", "2", script], { encoding: "utf8", timeout: 30000 });
    expect(r.status).toBe(7);
    expect(r.stderr).toContain("rank 1 exited with 7");
  });

  test("usage errors exit 2", () => {
    const r = spawnSync(process.execPath, [CLI, "launch", "-n", "2"], { encoding: "utf8" });
    expect(r.status).toBe(2);
    const r2 = spawnSync(process.execPath, [CLI, "launch", "-n", "0", path.join(dir, "env.js")], { encoding: "utf8" });
    expect(r2.status).toBe(2);
  });
});
