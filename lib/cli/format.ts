// Human output: the result table (stdout) and the progress line (stderr, never stdout).
import { BenchRow } from "./registry";

export function fmtParams(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

export function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(0)} MiB`;
  return `${(n / 2 ** 10).toFixed(0)} KiB`;
}

function fmtMs(ms: number): string {
  if (ms >= 100) return ms.toFixed(1);
  if (ms >= 1) return ms.toFixed(2);
  return ms.toFixed(3);
}

function num(x: unknown): number | undefined {
  return typeof x === "number" && Number.isFinite(x) ? x : undefined;
}

/** The table: one line per row, columns aligned. */
export function table(rows: BenchRow[]): string {
  const head = ["name", "dtype", "states", "params", "median", "min", "max", "GB/s", "% floor", "state B/p", "torch", "vs torch"];
  const lines: string[][] = [head];
  for (const r of rows) {
    const us = num(r.medianUs) !== undefined;
    const t = (ms: number) => (us ? `${(ms * 1e3).toFixed(1)} us` : `${fmtMs(ms)} ms`);
    const gb = num(r.GBps);
    const frac = num(r.fracOfFloor);
    const sb = num(r.stateBytesPerParam);
    const tm = num(r.torchMs);
    const sp = num(r.speedupVsTorch);
    lines.push([
      r.name,
      r.dtype,
      typeof r.stateDtype === "string" ? r.stateDtype : "",
      us && typeof r.tensors === "number" ? `${r.tensors} x ${r.elementsPerTensor ?? "?"}` : fmtParams(r.params),
      t(r.medianMs),
      t(r.minMs),
      t(r.maxMs),
      gb === undefined ? "" : gb.toFixed(1),
      frac === undefined ? (us && num(r.targetUs) !== undefined ? `target ${r.targetUs} us` : "") : `${(100 * frac).toFixed(0)}%`,
      sb === undefined ? "" : sb.toFixed(2),
      tm === undefined ? "" : `${fmtMs(tm)} ms`,
      sp === undefined ? "" : `${sp.toFixed(2)}x`,
    ]);
  }
  const widths = head.map((_, c) => Math.max(...lines.map((l) => l[c].length)));
  const right = new Set([3, 4, 5, 6, 7, 8, 9, 10, 11]);
  return lines
    .map((l) => l.map((cell, c) => (right.has(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join("  ").trimEnd())
    .join("\n");
}

/** Progress on stderr: a redrawn bar on a terminal, otherwise one line per phase (never stdout). */
export class Progress {
  private readonly tty: boolean;
  private readonly total: number;
  private done = 0;
  private label = "";
  private lastDraw = 0;
  private readonly enabled: boolean;

  constructor(total: number, enabled = true) {
    this.total = Math.max(1, total);
    this.tty = !!process.stderr.isTTY;
    this.enabled = enabled;
  }

  /** A new phase (counts as one unit of the total). */
  phase(label: string): void {
    this.label = label;
    if (!this.enabled) return;
    if (this.tty) this.draw(0, "", true);
    else process.stderr.write(`slimopt bench [${this.done + 1}/${this.total}] ${label}\n`);
  }

  /** Progress inside the current phase. */
  update(frac: number, what = ""): void {
    if (this.enabled && this.tty) this.draw(frac, what, false);
  }

  endPhase(summary?: string): void {
    this.done++;
    if (!this.enabled) return;
    if (this.tty) {
      this.clear();
      if (summary) process.stderr.write(`  ${this.label}: ${summary}\n`);
    } else if (summary) {
      process.stderr.write(`  ${summary}\n`);
    }
  }

  clear(): void {
    if (this.enabled && this.tty) process.stderr.write("\r\x1b[2K");
  }

  private draw(frac: number, what: string, force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const f = Math.min(1, (this.done + Math.max(0, Math.min(1, frac))) / this.total);
    const width = 24;
    const filled = Math.round(f * width);
    const bar = "#".repeat(filled) + ".".repeat(width - filled);
    const cols = process.stderr.columns || 100;
    const line = `[${bar}] ${(100 * f).toFixed(0).padStart(3)}%  ${this.label}${what ? `: ${what}` : ""}`;
    process.stderr.write(`\r\x1b[2K${line.slice(0, cols - 1)}`);
  }
}
