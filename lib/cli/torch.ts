// The PyTorch reference: bench/torch_baseline.py runs the same workload through
// torch.optim.AdamW(fused=True) in a child process. Only on CUDA, only where torch sees a GPU.
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";

export interface TorchRow {
  name: string;
  dtype: string;
  stateDtype?: string;
  medianMs: number;
  minMs: number;
  maxMs: number;
  [k: string]: unknown;
}

export interface TorchResult {
  torch: string;
  cuda?: string | null;
  /** torch's dst.copy_(src) bandwidth, (read + write) GB/s: a cross-check of slimopt's copy kernel. */
  copyGBps?: number | null;
  device: string;
  results: TorchRow[];
}

export const TORCH_SCRIPT = path.resolve(__dirname, "..", "..", "bench", "torch_baseline.py");

function python(): string {
  return process.env.SLIMOPT_PYTHON || "python3";
}

/** null when torch can run here, else why not. */
export function torchUnavailable(): string | null {
  if (!fs.existsSync(TORCH_SCRIPT)) return `${TORCH_SCRIPT} is missing`;
  const r = spawnSync(python(), ["-c", "import torch; assert torch.cuda.is_available()"], {
    encoding: "utf8", timeout: 120_000, stdio: ["ignore", "ignore", "pipe"],
  });
  if (r.error) return `${python()} could not be run (${r.error.message})`;
  if (r.status !== 0) {
    const last = (r.stderr || "").trim().split("\n").pop() || `exit code ${r.status}`;
    return `torch with CUDA is not usable from ${python()} (${last})`;
  }
  return null;
}

/** Runs the baseline; throws with torch's last stderr line when it fails. */
export function runTorchBaseline(args: { rows: string[]; steps: number; warmup: number; scale: number; deviceIndex: number }): TorchResult {
  const argv = [TORCH_SCRIPT, "--steps", String(args.steps), "--warmup", String(args.warmup),
    "--scale", String(args.scale), "--rows", args.rows.join(","), "--device", `cuda:${args.deviceIndex}`];
  const r = spawnSync(python(), argv, {
    encoding: "utf8", timeout: 900_000, maxBuffer: 16 << 20, stdio: ["ignore", "pipe", "pipe"],
  });
  if (r.error) throw new Error(`torch baseline could not run: ${r.error.message}`);
  if (r.status !== 0) {
    const last = (r.stderr || "").trim().split("\n").slice(-3).join(" | ") || `exit code ${r.status}`;
    throw new Error(`torch baseline failed: ${last}`);
  }
  let doc: TorchResult;
  try {
    doc = JSON.parse(r.stdout) as TorchResult;
  } catch {
    throw new Error(`torch baseline printed no JSON document: ${r.stdout.slice(0, 200)}`);
  }
  if (!doc || !Array.isArray(doc.results)) throw new Error("torch baseline's JSON has no results array");
  return doc;
}
