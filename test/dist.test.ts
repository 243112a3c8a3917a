// Process groups and DistributedOptimizer on the CPU: a world of one rank (the local backend, and
// the shm backend in-process), the refusals, and `slimopt launch` end to end. N ranks run here
// too: `slimopt launch -n 2|3 test/fixtures/dist_rank.js` over the shm backend (one mmapped
// segment; rank-ordered f32 sums, so every rank and the single-process reference agree bit for
// bit): every collective against values computed in the script, DistributedOptimizer (sharded and
// not) against one process on the mean gradient, and ranks that disagree, die, come late or never.
// Over NCCL: the GPU suite (test/gpu/dist.gpu.test.ts, one rank) and bench/dist_check.js on a
// multi-GPU machine.
import { execFileSync, spawnSync, SpawnSyncReturns } from "child_process";
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

describe("process group of one rank over shm, in this process", () => {
  let pg: ProcessGroup;
  beforeAll(async () => { pg = await initProcessGroup({ device: "cpu", rank: 0, worldSize: 1, backend: "shm", chunkBytes: 1024 }); });
  afterAll(() => pg.dispose());

  test("backend shm; its segment file is gone once the group is open", () => {
    expect(pg.backend).toBe("shm");
    expect(pg.worldSize).toBe(1);
    expect(fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith(`slimopt-${process.pid}-`))).toEqual([]);
  });
  test("collectives of one rank (in chunks), and refusals that change nothing", () => collectivesOfOne(pg, "cpu"));
  test("DistributedOptimizer refuses bad input", () => wrapperRefusals(pg, "cpu"));
});

describe("initProcessGroup refusals", () => {
  test("several CPU ranks: shm only, a rendezvous file, sane chunk and timeout", async () => {
    const two = { device: "cpu", rank: 0, worldSize: 2, rendezvous: path.join(os.tmpdir(), "slimopt-never", "r") } as const;
    await expect(initProcessGroup({ ...two, backend: "nccl" })).rejects.toMatchObject({ code: "E_ARG" });
    await expect(initProcessGroup({ ...two, backend: "bogus" as never })).rejects.toMatchObject({ code: "E_ARG" });
    await expect(initProcessGroup({ ...two, rendezvous: undefined })).rejects.toMatchObject({ code: "E_ARG" });
    await expect(initProcessGroup({ ...two, chunkBytes: 1000 })).rejects.toMatchObject({ code: "E_ARG" });
    await expect(initProcessGroup({ ...two, chunkBytes: 512 })).rejects.toMatchObject({ code: "E_ARG" });
    await expect(initProcessGroup({ ...two, timeoutMs: 0 })).rejects.toMatchObject({ code: "E_ARG" });
  });
  test("a joining rank: no rank 0, a segment that is gone, an NCCL id", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slimopt-join-"));
    const file = path.join(dir, "rendezvous");
    const one = { device: "cpu", rank: 1, worldSize: 2, rendezvous: file, timeoutMs: 200 } as const;
    await expect(initProcessGroup(one)).rejects.toMatchObject({ code: "E_DEVICE" });
    fs.writeFileSync(file, "slimopt-shm:" + path.join(dir, "gone.shm"));
    await expect(initProcessGroup(one)).rejects.toMatchObject({ code: "E_DEVICE" });
    fs.writeFileSync(file, Buffer.alloc(128, 7));
    await expect(initProcessGroup({ ...one, timeoutMs: 100000 })).rejects.toMatchObject({ code: "E_DEVICE", message: expect.stringContaining("NCCL group") });
    fs.writeFileSync(path.join(dir, "junk.shm"), Buffer.alloc(4096, 1));
    fs.writeFileSync(file, "slimopt-shm:" + path.join(dir, "junk.shm"));
    await expect(initProcessGroup(one)).rejects.toMatchObject({ code: "E_DEVICE" });
    fs.rmSync(dir, { recursive: true, force: true });
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

describe("process groups of N ranks on the CPU (shm backend, slimopt launch)", () => {
  const FIXTURE = path.resolve(__dirname, "fixtures/dist_rank.js");
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "slimopt-ranks-test-"));
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  type RankFile = Record<string, any>;

  /** Runs the fixture over n ranks; returns launch's result and each rank's file, by rank. */
  function launch(n: number, mode: string, args: string[] = [], env: Record<string, string> = {}): { r: SpawnSyncReturns<string>; ranks: RankFile[] } {
    const out = fs.mkdtempSync(path.join(root, `${mode}-`));
    const r = spawnSync(process.execPath, [CLI, "launch", "-n", String(n), FIXTURE, mode, out, ...args],
                        { encoding: "utf8", timeout: 60000, env: { ...process.env, ...env } });
    const ranks = Array.from({ length: n }, (_, k) => {
      const f = path.join(out, `rank-${k}.json`);
      return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, "utf8")) : undefined;
    });
    return { r, ranks };
  }
  function ok(run: { r: SpawnSyncReturns<string> }): void {
    if (run.r.status !== 0) throw new Error(`launch exited with ${run.r.status} (${run.r.signal ?? ""}): ${run.r.stderr}`);
  }

  for (const n of [2, 3]) {
    test(`${n} ranks: every collective, op and dtype, in chunks, against values computed from every rank's inputs`, () => {
      const run = launch(n, "collectives", [], { SLIMOPT_SHM_CHUNK_BYTES: "1536" });
      ok(run);
      for (const rank of run.ranks) {
        expect(rank).toMatchObject({ backend: "shm", world: n, failures: [], leftovers: [] });
        expect(rank.checked).toBe(196);
        // Calls that differ across ranks are refused alike everywhere; the group works on.
        expect(rank.refusals).toEqual({ count: "E_SHAPE", dtype: "E_DTYPE", kind: "E_ARG", root: "E_ARG", op: "E_ARG" });
      }
    });

    test(`${n} ranks: DistributedOptimizer, sharded or not, compressed or not, steps like one process on the mean gradient`, () => {
      // Runs: sharded/compressed, unsharded/compressed, sharded/full gradients.
      const modes = [["true", "true"], ["false", "true"], ["true", "false"]];
      const byMode: Record<string, RankFile[]> = {};
      for (const [shard, compress] of modes) {
        const run = launch(n, "optim", [shard, compress]);
        ok(run);
        byMode[`${shard}/${compress}`] = run.ranks;
      }
      const names = ["AdamW", "AdamW8bit", "GaLoreAdamW", "GrassAdamW", "GrassAdamW multinomial", "Apollo"];
      for (const [key, ranks] of Object.entries(byMode)) {
        for (const rank of ranks) {
          expect(rank.backend).toBe("shm");
          expect(rank.results.map((x: RankFile) => x.optimizer)).toEqual(names);
          for (const c of rank.results) {
            // The reference mean is taken in the backend's order (f32, rank order, then divided):
            // the parameters agree bit for bit, not only to the tolerance. Compressed GaLore
            // averages R = project(G) of each rank: f32 rounding of a different sum.
            if (c.optimizer === "GaLoreAdamW" && c.compress) {
              expect({ name: c.optimizer, key, small: c.relErr < 1e-6 }).toEqual({ name: c.optimizer, key, small: true });
            } else {
              expect({ name: c.optimizer, key, relErr: c.relErr, exact: c.exact }).toEqual({ name: c.optimizer, key, relErr: 0, exact: true });
            }
          }
        }
      }
      names.forEach((name, k) => {
        // Every rank holds the same parameters, sharded or not; sharding splits the state.
        const compressed = [...byMode["true/true"], ...byMode["false/true"]].map((rank) => rank.results[k].paramsHash);
        expect(new Set(compressed).size).toBe(1);
        const full = byMode["true/false"].map((rank) => rank.results[k].paramsHash);
        expect(new Set(full).size).toBe(1);
        if (name !== "GaLoreAdamW") expect(full[0]).toBe(compressed[0]);
        const whole = byMode["false/true"][0].results[k].stateBytesThisRank;
        for (const rank of byMode["true/true"]) expect(rank.results[k].stateBytesThisRank).toBeLessThan(whole);
        // Compression sends fewer bytes where it applies (GaLore, Grass), the same elsewhere.
        const sum = (r: RankFile) => (r.bytesPerStep as number[]).reduce((a, b) => a + b, 0);
        for (let rk = 0; rk < n; rk++) {
          const [c, f] = [sum(byMode["true/true"][rk].results[k]), sum(byMode["true/false"][rk].results[k])];
          if (/GaLore|Grass/.test(name)) expect({ name, less: c < f }).toEqual({ name, less: true });
          else expect({ name, c }).toEqual({ name, c: f });
        }
      });
    });
  }

  test("DistributedOptimizer checkpoints: saved on 2 ranks, loaded on 1 and 3, continue like one process", () => {
    const dir = fs.mkdtempSync(path.join(root, "ckpt-"));
    ok(launch(2, "ckpt", ["save", dir, "2"]));
    for (const to of [1, 3]) {
      const run = launch(to, "ckpt", ["load", dir, "2"]);
      ok(run);
      for (const rank of run.ranks) {
        expect(rank.results.map((x: RankFile) => x.optimizer)).toEqual(["AdamW", "GaLoreAdamW", "GrassAdamW", "Apollo"]);
        for (const c of rank.results) {
          // Bit for bit but for compressed GaLore (its R averages round differently).
          if (c.optimizer === "GaLoreAdamW") expect({ to, name: c.optimizer, small: c.relErr < 1e-6 }).toEqual({ to, name: c.optimizer, small: true });
          else expect({ to, name: c.optimizer, relErr: c.relErr, exact: c.exact }).toEqual({ to, name: c.optimizer, relErr: 0, exact: true });
        }
      }
      for (let k = 0; k < 4; k++) expect(new Set(run.ranks.map((r) => r.results[k].paramsHash)).size).toBe(1);
    }
  });

  test("a rank that exits breaks the group: the other gets E_DEVICE, now and later", () => {
    const run = launch(2, "dead");
    ok(run);
    expect(run.ranks[0]).toMatchObject({ first: "E_DEVICE", again: "E_DEVICE" });
    expect(run.ranks[0].message).toMatch(/rank 1 \(pid \d+\) has exited/);
  });

  test("a rank that comes later than the timeout: E_DEVICE on both", () => {
    const run = launch(2, "late", ["1500"], { SLIMOPT_DIST_TIMEOUT_MS: "300" });
    ok(run);
    expect(run.ranks[0]).toMatchObject({ first: "E_DEVICE", again: "E_DEVICE" });
    expect(run.ranks[0].message).toMatch(/waited \d+ ms/);
    expect(run.ranks[1]).toMatchObject({ first: "E_DEVICE", again: "E_DEVICE" });
  });

  test("a rank that never joins: rank 0 gets E_DEVICE after the timeout", () => {
    const run = launch(2, "absent", [], { SLIMOPT_DIST_TIMEOUT_MS: "300" });
    ok(run);
    expect(run.ranks[0]).toMatchObject({ first: "E_DEVICE" });
  });

  test("a rank started for another world size: E_ARG there, E_DEVICE on rank 0, without waiting for the timeout", () => {
    const run = launch(2, "world", [], { SLIMOPT_DIST_TIMEOUT_MS: "100000" });
    ok(run);
    expect(run.ranks[1]).toMatchObject({ first: "E_ARG" });
    expect(run.ranks[0]).toMatchObject({ first: "E_DEVICE" });
    expect(run.ranks[0].message).toContain("world of 3");
  });
});
