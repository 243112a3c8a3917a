// `slimopt bench`: the benchmark of DESIGN §5-7. Measures the copy bandwidth (the floor of every
// memory-bound step) in the same run, runs each registered case over the §6 workload, compares
// with the PyTorch reference where one exists, and prints a table or one JSON document.
import { execFileSync } from "child_process";
import * as os from "os";
import * as path from "path";
import { Device, defaultDevice, device as resolveDevice } from "../device";
import { SlimoptError } from "../errors";
import { UsageError } from "./args";
import { BENCHMARKS } from "./defs";
import { fmtBytes, fmtParams, Progress, table } from "./format";
import { BenchCase, BenchContext, BenchRow, caseId, selectCases, SelectionError } from "./registry";
import { measureCopyBandwidth, CopyBandwidth } from "./timing";
import { runTorchBaseline, TorchResult, torchUnavailable } from "./torch";
import { FULL_WORKLOAD_PARAMS, llamaLayers } from "./workload";

export interface BenchOptions {
  json: boolean;
  quick: boolean;
  device?: string;
  only?: string[];
  steps?: number;
  /** Divide every workload dimension by this; default 1 on CUDA, 4 on the CPU (8 with quick). */
  scale?: number;
  torch: boolean;
}

const WARMUP = 2;
const PKG_ROOT = path.resolve(__dirname, "..", "..");

export interface BenchDocument {
  device: string;
  deviceId: string;
  date: string;
  commit: string;
  /** In a git checkout: whether tracked files differ from the commit. */
  dirty?: boolean;
  copyGBps: number;
  copy: Omit<CopyBandwidth, "GBps">;
  /** Whether matrix products ran on TF32 tensor cores; null where no row multiplies matrices. */
  tf32: boolean | null;
  slimoptVersion: string;
  node: string;
  scaled: boolean;
  workload: { description: string; params: number; fullParams: number; scale: number; tensors: number };
  steps: number;
  warmup: number;
  torch: { version: string; device: string; cuda?: string; copyGBps?: number } | null;
  notes: string[];
  results: BenchRow[];
}

function gitCommit(): { commit: string; dirty?: boolean } {
  // Set by whoever knows what ran (bench/gpu_run.sh on a GPU machine, where the copy's .git may be stale).
  if (process.env.SLIMOPT_COMMIT) return { commit: process.env.SLIMOPT_COMMIT };
  try {
    const opts = { cwd: PKG_ROOT, encoding: "utf8" as const, stdio: ["ignore", "pipe", "ignore"] as ["ignore", "pipe", "ignore"], timeout: 10_000 };
    const top = execFileSync("git", ["rev-parse", "--show-toplevel"], opts).trim();
    // Only this package's own checkout counts, not a project that has it under node_modules.
    if (path.resolve(top) === PKG_ROOT) {
      const commit = execFileSync("git", ["rev-parse", "HEAD"], opts).trim();
      const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], opts).trim() !== "";
      if (/^[0-9a-f]{40}$/.test(commit)) return { commit, dirty };
    }
  } catch {
    /* not a checkout, no git, or no commit yet */
  }
  return { commit: process.env.SLIMOPT_COMMIT || "unknown" };
}

function deviceLabel(dev: Device): string {
  if (dev.kind === "cuda") return dev.name;
  const cpus = os.cpus();
  return `cpu (${(cpus[0]?.model ?? "unknown").trim()}, ${cpus.length} cores)`;
}

/** Rounds floats to 6 significant digits so a committed document stays readable. */
function roundNumbers(_key: string, v: unknown): unknown {
  return typeof v === "number" && Number.isFinite(v) && !Number.isInteger(v) ? Number(v.toPrecision(6)) : v;
}

export async function runBench(o: BenchOptions): Promise<number> {
  let dev: Device;
  if (o.device !== undefined) {
    if (!/^(cpu|cuda(:\d+)?)$/i.test(o.device.trim())) throw new UsageError(`--device must be cpu, cuda or cuda:N, not "${o.device}"`);
    dev = resolveDevice(o.device);
  } else {
    dev = defaultDevice();
  }
  const steps = o.steps ?? (o.quick ? 3 : 10);
  const scale = o.scale ?? (dev.kind === "cpu" ? (o.quick ? 8 : 4) : 1);
  const workload = llamaLayers(4, scale);
  const notes: string[] = [];
  const note = (s: string) => { if (!notes.includes(s)) notes.push(s); };

  let progress: Progress | undefined;
  const ctx: BenchContext = {
    dev, workload, steps, warmup: WARMUP, quick: o.quick, copyGBps: NaN,
    progress: (f, what) => progress?.update(f, what),
    note,
  };
  let cases: BenchCase[];
  try {
    cases = selectCases(BENCHMARKS, ctx, o.only);
  } catch (e) {
    if (e instanceof SelectionError) throw new UsageError(e.message);
    throw e;
  }

  // The torch rows the selected cases compare with.
  const torchRows = [...new Set(cases.map((c) => c.torchRow).filter((r): r is string => !!r))];
  let runTorch = false;
  if (torchRows.length > 0) {
    if (!o.torch) note("torch reference skipped (--no-torch)");
    else if (dev.kind !== "cuda") note("torch reference not run: it runs only on CUDA devices");
    else {
      const why = torchUnavailable();
      if (why) note(`torch reference not run: ${why}`);
      else runTorch = true;
    }
  }

  progress = new Progress(1 + (runTorch ? 1 : 0) + cases.length);

  // torch first, in its own process, before this process allocates anything large: slimopt's
  // CUDA memory pool keeps freed blocks, so running torch afterwards would find them still held.
  let torch: TorchResult | undefined;
  if (runTorch) {
    progress.phase(`torch reference (${torchRows.join(", ")})`);
    try {
      torch = runTorchBaseline({ rows: torchRows, steps, warmup: WARMUP, scale, deviceIndex: dev.index });
      progress.endPhase(torch.results.map((r) => `${r.name} ${r.dtype}: ${r.medianMs.toFixed(3)} ms`).join(", "));
    } catch (e) {
      progress.endPhase("failed");
      note(`torch reference failed: ${(e as Error).message}`);
    }
  }

  const copyBytes = dev.kind === "cuda" ? 2 * 2 ** 30 : (o.quick ? 128 : 256) * 2 ** 20;
  progress.phase(`copy bandwidth (${fmtBytes(copyBytes)})`);
  const copy = await measureCopyBandwidth(dev, copyBytes, o.quick ? 10 : 20);
  ctx.copyGBps = copy.GBps;
  progress.endPhase(`${copy.GBps.toFixed(1)} GB/s`);
  if (dev.kind === "cpu")
    note("CPU floor: copy bandwidth is one thread's memmove while the CPU backend's steps use every core, so fracOfFloor may exceed 1");

  const results: BenchRow[] = [];
  let failed = 0;
  for (const c of cases) {
    progress.phase(caseId(c));
    try {
      const row = await c.run(ctx);
      const t = c.torchRow && torch?.results.find((r) => `${r.name}:${r.dtype}` === c.torchRow);
      if (t) {
        row.torchMs = t.medianMs;
        row.speedupVsTorch = t.medianMs / row.medianMs;
      }
      results.push(row);
      progress.endPhase(`${row.medianMs.toFixed(3)} ms` + (row.fracOfFloor !== undefined ? `, ${(100 * row.fracOfFloor).toFixed(0)}% of floor` : ""));
    } catch (e) {
      failed++;
      progress.endPhase("failed");
      const msg = e instanceof SlimoptError || e instanceof Error ? e.message : String(e);
      note(`${caseId(c)} failed: ${msg}`);
    }
  }
  progress.clear();
  if (torchRows.some((r) => r.endsWith(":bf16")) && torch)
    note("torch's fused AdamW keeps bf16 parameters' m and v in bf16, so it is compared with slimopt's bf16-state row; the f32-state bf16 row has no torch counterpart");

  if (torch && typeof torch.copyGBps === "number" && copy.GBps < 0.95 * torch.copyGBps)
    note(`slimopt's copy kernel reached ${copy.GBps.toFixed(0)} GB/s, torch's copy_ ${torch.copyGBps.toFixed(0)} GB/s: ` +
      "the floors here are computed from the lower figure, so fracOfFloor is flattered by the difference");
  const anyGemm = cases.some((c) => c.usesGemm);
  const { commit, dirty } = gitCommit();
  const doc: BenchDocument = {
    device: deviceLabel(dev),
    deviceId: dev.toString(),
    date: new Date().toISOString().slice(0, 10),
    commit,
    ...(dirty !== undefined ? { dirty } : {}),
    copyGBps: copy.GBps,
    copy: { bytes: copy.bytes, medianMs: copy.medianMs, minMs: copy.minMs, maxMs: copy.maxMs, reps: copy.reps, method: copy.method },
    tf32: anyGemm ? true : null,
    slimoptVersion: require("../../package.json").version,
    node: process.version,
    scaled: scale !== 1,
    workload: { description: workload.description, params: workload.params, fullParams: FULL_WORKLOAD_PARAMS, scale, tensors: workload.matrices.length },
    steps,
    warmup: WARMUP,
    torch: torch ? {
      version: torch.torch, device: torch.device,
      ...(torch.cuda ? { cuda: String(torch.cuda) } : {}),
      ...(typeof torch.copyGBps === "number" ? { copyGBps: torch.copyGBps } : {}),
    } : null,
    notes,
    results,
  };

  if (o.json) {
    process.stdout.write(JSON.stringify(doc, roundNumbers, 2) + "\n");
  } else {
    process.stdout.write(human(doc));
  }
  return failed > 0 ? 1 : 0;
}

function human(d: BenchDocument): string {
  const out: string[] = [];
  out.push(`slimopt ${d.slimoptVersion} bench on ${d.device} [${d.deviceId}], ${d.date}, commit ${d.commit}${d.dirty ? " (dirty)" : ""}, node ${d.node}`);
  out.push(`copy bandwidth: ${d.copyGBps.toFixed(1)} GB/s (read + write; ${d.copy.method}, ${fmtBytes(d.copy.bytes)}, median of ${d.copy.reps})`);
  out.push(`workload: ${d.workload.description}: ${fmtParams(d.workload.params)} params` +
    (d.scaled ? ` (SCALED DOWN from ${fmtParams(d.workload.fullParams)})` : ""));
  out.push(`timing: median of ${d.steps} steps after ${d.warmup} warmup steps; floor = bytes moved / copy bandwidth`);
  if (d.torch) out.push(`torch: ${d.torch.version} on ${d.torch.device}, torch.optim.AdamW(fused=True)` +
    (d.torch.copyGBps ? `; torch's copy_: ${d.torch.copyGBps.toFixed(1)} GB/s` : ""));
  out.push("");
  out.push(d.results.length ? table(d.results) : "(no results)");
  if (d.notes.length) {
    out.push("");
    out.push("notes:");
    for (const n of d.notes) out.push(`  - ${n}`);
  }
  return out.join("\n") + "\n";
}
