// The registry of benchmark definitions. A definition expands into cases (rows of the result);
// `slimopt bench --only name` selects definitions (or `name:dtype` single cases). New kernels add
// a definition in lib/cli/defs/ and register it in lib/cli/defs/index.ts.
import { Device } from "../device";
import { Workload } from "./workload";

export interface BenchContext {
  dev: Device;
  /** The main workload (DESIGN §6), possibly scaled down (on the CPU). */
  workload: Workload;
  /** Timed steps per row, and untimed warmup steps before them. */
  steps: number;
  warmup: number;
  quick: boolean;
  /** Copy bandwidth measured in this run, GB/s. */
  copyGBps: number;
  /** Reports progress inside a case: `frac` in [0, 1]. */
  progress(frac: number, what?: string): void;
  /** Remarks that belong in the output's `notes`. */
  note(text: string): void;
}

/** One row of the result. The fields named here are shared by every row; a definition adds its
 *  method's options (rank, blockSize, ...) and its own measurements. */
export interface BenchRow {
  name: string;
  dtype: string;
  params: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  /** Bytes the step must move / copy bandwidth; absent where no floor applies. */
  floorMs?: number;
  fracOfFloor?: number;
  GBps?: number;
  stateBytesPerParam?: number;
  peakExtraBytesPerParam?: number;
  torchMs?: number;
  speedupVsTorch?: number;
  [option: string]: unknown;
}

export interface BenchCase {
  /** Row name (DESIGN §7: adamw, adamw8bit, galore, ...). */
  name: string;
  dtype: string;
  /** A short label for progress and for the table beyond name and dtype, e.g. "states bf16". */
  variant?: string;
  /** Key of the bench/torch_baseline.py row this case is compared with ("adamw:f32"), if any. */
  torchRow?: string;
  /** Whether the case multiplies matrices (its TF32/strict-f32 setting is then reported). */
  usesGemm?: boolean;
  run(ctx: BenchContext): Promise<BenchRow>;
}

export interface BenchDefinition {
  name: string;
  description: string;
  cases(ctx: BenchContext): BenchCase[];
}

export function caseId(c: BenchCase): string {
  return `${c.name}:${c.dtype}${c.variant ? ` (${c.variant})` : ""}`;
}

/** Applies `--only a,b:bf16` to the registry; throws with the known names on a bad entry. */
export function selectCases(defs: BenchDefinition[], ctx: BenchContext, only: string[] | undefined): BenchCase[] {
  const all = defs.flatMap((d) => d.cases(ctx).map((c) => ({ def: d.name, c })));
  if (!only) return all.map((x) => x.c);
  const picked = new Set<BenchCase>();
  for (const sel of only) {
    const [name, dtype] = sel.split(":");
    const hit = all.filter((x) => (x.def === name || x.c.name === name) && (dtype === undefined || x.c.dtype === dtype));
    if (hit.length === 0) {
      const known = [...new Set(all.flatMap((x) => [x.def, x.c.name]))].join(", ");
      throw new SelectionError(`no benchmark matches "${sel}" (known: ${known}; add ":f32" or ":bf16" to pick a dtype)`);
    }
    for (const x of hit) picked.add(x.c);
  }
  return all.map((x) => x.c).filter((c) => picked.has(c));
}

export class SelectionError extends Error {}
