// The CLI as a user runs it: `node dist/cli/main.js ...` (built by `npm test`'s build step).
// Asserts shapes and sanity only; timings belong in the benchmark, not in tests.
import { spawnSync } from "child_process";
import * as path from "path";

const MAIN = path.resolve(__dirname, "..", "dist", "cli", "main.js");

function cli(args: string[], timeout = 240_000) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8", timeout });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const finitePositive = (x: unknown) => typeof x === "number" && Number.isFinite(x) && x > 0;

describe("slimopt CLI", () => {
  test("bench --quick --json --device cpu --only adamw prints one JSON document", () => {
    const r = cli(["bench", "--quick", "--json", "--device", "cpu", "--only", "adamw"]);
    expect(r.stderr).not.toMatch(/Error|failed/);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);  // the whole of stdout is one document
    expect(doc.device).toMatch(/^cpu/);
    expect(doc.deviceId).toBe("cpu");
    expect(doc.date).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(typeof doc.commit).toBe("string");
    expect(doc.commit.length).toBeGreaterThan(0);
    expect(finitePositive(doc.copyGBps)).toBe(true);
    expect(doc).toHaveProperty("tf32");
    expect(typeof doc.slimoptVersion).toBe("string");
    expect(doc.node).toBe(process.version);
    expect(doc.scaled).toBe(true);
    expect(doc.workload.fullParams).toBe(809_500_672);
    expect(doc.workload.tensors).toBe(28);
    expect(Array.isArray(doc.notes)).toBe(true);
    expect(doc.notes.join(" ")).toMatch(/torch/);  // no torch on the CPU: said, never faked

    expect(Array.isArray(doc.results)).toBe(true);
    expect(doc.results.length).toBeGreaterThanOrEqual(2);
    const dtypes = new Set<string>();
    for (const row of doc.results) {
      expect(row.name).toBe("adamw");
      dtypes.add(row.dtype);
      expect(row.params).toBe(doc.workload.params);
      for (const k of ["medianMs", "minMs", "maxMs", "floorMs", "fracOfFloor", "GBps", "stateBytesPerParam"])
        expect([k, finitePositive(row[k])]).toEqual([k, true]);
      expect(row.minMs).toBeLessThanOrEqual(row.medianMs);
      expect(row.medianMs).toBeLessThanOrEqual(row.maxMs);
      expect(row.peakExtraBytesPerParam).toBe(0);
      expect(row).not.toHaveProperty("torchMs");
      expect(row).not.toHaveProperty("speedupVsTorch");
    }
    expect([...dtypes].sort()).toEqual(["bf16", "f32"]);
    const f32 = doc.results.find((r: { dtype: string }) => r.dtype === "f32");
    expect(f32.bytesPerParam).toBe(28);
    expect(f32.stateBytesPerParam).toBeCloseTo(8, 2);
    const bf16f32 = doc.results.find((r: { dtype: string; stateDtype: string }) => r.dtype === "bf16" && r.stateDtype === "f32");
    expect(bf16f32.bytesPerParam).toBe(22);
  });

  test("info and info --json", () => {
    const h = cli(["info"]);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/slimopt \d+\.\d+\.\d+/);
    expect(h.stdout).toMatch(/cpu/);
    const j = cli(["info", "--json"]);
    expect(j.code).toBe(0);
    const doc = JSON.parse(j.stdout);
    expect(doc.devices[0].id).toBe("cpu");
    expect(typeof doc.cudaCompiled).toBe("boolean");
  });

  test("usage errors exit with code 2", () => {
    for (const args of [["frobnicate"], ["bench", "--frobnicate"], ["bench", "--steps", "zero"],
                        ["bench", "--only", "nosuchbench", "--device", "cpu"], ["bench", "--device", "tpu"], ["info", "extra"]]) {
      const r = cli(args, 60_000);
      expect([args.join(" "), r.code]).toEqual([args.join(" "), 2]);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/slimopt: /);
    }
    const help = cli(["help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/usage: slimopt/);
  });
});
