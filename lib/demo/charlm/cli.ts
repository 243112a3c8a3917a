// Flags of `slimopt demo` (and examples/charlm/train.js): which optimizers, how long, where.
import * as path from "path";
import { device as resolveDevice } from "../../device";
import { intFlag, parseArgs, UsageError } from "../../cli/args";
import { ActivationKind } from "../../nn";
import { demoDefaults, DemoOptions, optimizerClass, OPTIMIZERS, runDemo } from "./train";

export const DEMO_HELP = `usage: slimopt demo [options]

Trains a character-level MLP language model on the King James Genesis–Judges text shipped with
the package, with one or all of slimopt's optimizers (same initialisation, same data order),
printing train/validation loss and optimizer state bytes; with --out, writes results.json and
loss.svg (the loss curves of every optimizer run).

  --optimizer <name>   ${OPTIMIZERS.map((o) => o.key).join(" | ")} | all (default adamw);
                       a comma-separated list works too
  --steps <N>          optimizer steps per method (default 3000 on CUDA, 300 on the CPU)
  --device <d>         cpu, cuda or cuda:N (default: cuda:0 when usable, else cpu)
  --seed <N>           initialisation and data-order key (default 1)
  --out <dir>          write results.json and loss.svg there
  --batch <N>          characters predicted per step (default 512 on CUDA, 128 on the CPU)
  --context <N>        characters of context (default 16)
  --embed <N>          embedding width per character (default 32 on CUDA, 16 on the CPU)
  --hidden <a,b,..>    hidden layer widths (default 1024,1024 on CUDA, 256,256 on the CPU)
  --activation <a>     gelu | tanh | relu (default gelu)
  --lr <x>             AdamW's peak learning rate (default 3e-3 on CUDA, 4e-3 on the CPU;
                       the other methods' rates scale from it)
  --lr-grid <a,b,..>   train each method at these multiples of its rates and keep the best
                       final validation loss (e.g. 0.5,1,2; default 1)
  --rank-lr <x>        learning rate of the rank groups as a multiple of --lr (default: per
                       method, see examples/charlm/README.md)
  --rank-options <k=v,..>  override options of the rank groups, e.g. updateProjGap=50,scale=0.5
  --eval-every <N>     steps between validation evaluations (default 250 on CUDA, 50 on the CPU)
  --eval-tokens <N>    validation positions per intermediate evaluation
  --precision <p>      tf32 | f32: GPU GEMM precision of the model (default tf32)
  --corpus <file>      train on another UTF-8 text file
  --quiet              print only the summary
`;

export async function runDemoCli(argv: string[]): Promise<number> {
  const p = parseArgs(argv, {
    optimizer: { value: true }, steps: { value: true }, device: { value: true }, seed: { value: true }, out: { value: true },
    batch: { value: true }, context: { value: true }, embed: { value: true }, hidden: { value: true },
    activation: { value: true }, lr: { value: true }, "rank-lr": { value: true }, "lr-grid": { value: true }, "rank-options": { value: true }, "eval-every": { value: true }, "eval-tokens": { value: true },
    precision: { value: true }, corpus: { value: true }, quiet: { value: false }, help: { value: false },
  }, "demo");
  if (p.flags.has("help")) {
    process.stdout.write(DEMO_HELP);
    return 0;
  }
  if (p.positional.length || p.rest.length) throw new UsageError(`unexpected argument "${[...p.positional, ...p.rest][0]}"`);
  const dev = resolveDevice(p.flags.get("device") as string | undefined);
  const d = demoDefaults(dev);
  const which = String(p.flags.get("optimizer") ?? "adamw");
  const keys = which === "all" ? OPTIMIZERS.map((o) => o.key) : which.split(",").map((s) => s.trim()).filter(Boolean);
  for (const k of keys)
    if (!OPTIMIZERS.some((o) => o.key === k)) throw new UsageError(`--optimizer: unknown "${k}" (${OPTIMIZERS.map((o) => o.key).join(", ")}, all)`);
  const available = keys.filter((k) => optimizerClass(k) !== undefined);
  const missing = keys.filter((k) => optimizerClass(k) === undefined);
  if (missing.length) {
    const names = missing.map((k) => OPTIMIZERS.find((o) => o.key === k)!.className).join(", ");
    if (which !== "all" || available.length === 0) throw new UsageError(`this build of slimopt has no ${names}`);
    process.stderr.write(`slimopt demo: this build has no ${names}; skipping ${missing.join(", ")}\n`);
  }
  let hidden = d.hidden;
  const hv = p.flags.get("hidden");
  if (typeof hv === "string") {
    hidden = hv.split(",").map((s) => Number(s.trim()));
    if (hidden.length === 0 || hidden.some((h) => !Number.isSafeInteger(h) || h < 1 || h > 65536))
      throw new UsageError(`--hidden must list layer widths such as 1024,1024, got "${hv}"`);
  }
  const act = String(p.flags.get("activation") ?? d.activation);
  if (!["gelu", "tanh", "relu"].includes(act)) throw new UsageError(`--activation is gelu, tanh or relu, got "${act}"`);
  const precision = String(p.flags.get("precision") ?? d.precision);
  if (precision !== "tf32" && precision !== "f32") throw new UsageError(`--precision is tf32 or f32, got "${precision}"`);
  let lr = d.lr;
  const lv = p.flags.get("lr");
  if (lv !== undefined) {
    lr = Number(lv);
    if (typeof lv !== "string" || !(lr > 0 && lr < 1)) throw new UsageError(`--lr must be a number in (0, 1), got "${String(lv)}"`);
  }
  let rankLrMultiple: number | undefined;
  const rv = p.flags.get("rank-lr");
  if (rv !== undefined) {
    rankLrMultiple = Number(rv);
    if (typeof rv !== "string" || !(rankLrMultiple > 0 && rankLrMultiple <= 1000)) throw new UsageError(`--rank-lr must be a number in (0, 1000], got "${String(rv)}"`);
  }
  const rankOptions: Record<string, unknown> = {};
  const ro = p.flags.get("rank-options");
  if (typeof ro === "string") {
    for (const kv of ro.split(",").map((x) => x.trim()).filter(Boolean)) {
      const m = /^([A-Za-z][A-Za-z0-9]*)=(.+)$/.exec(kv);
      if (!m) throw new UsageError(`--rank-options takes key=value pairs, got "${kv}"`);
      const v = m[2];
      rankOptions[m[1]] = /^-?[0-9.]+(e-?[0-9]+)?$/i.test(v) ? Number(v) : v === "true" ? true : v === "false" ? false : v;
    }
  }
  let lrGrid: number[] | undefined;
  const gv = p.flags.get("lr-grid");
  if (typeof gv === "string") {
    lrGrid = gv.split(",").map((x) => Number(x.trim()));
    if (!lrGrid.length || lrGrid.some((x) => !(x > 0 && x <= 100))) throw new UsageError(`--lr-grid takes positive multiples such as 0.5,1,2, got "${gv}"`);
  }
  const steps = intFlag(p, "steps", d.steps, 1, 1e7);
  const quiet = p.flags.has("quiet");
  const o: DemoOptions = {
    ...d, optimizers: available, device: dev, steps, lr, lrGrid, rankLrMultiple, rankOptions, hidden, activation: act as ActivationKind,
    precision: precision as "tf32" | "f32",
    seed: intFlag(p, "seed", d.seed, 0, 2 ** 31 - 1),
    batch: intFlag(p, "batch", d.batch, 1, 1 << 20),
    context: intFlag(p, "context", d.context, 1, 4096),
    embed: intFlag(p, "embed", d.embed, 1, 8192),
    evalEvery: intFlag(p, "eval-every", Math.min(d.evalEvery, steps), 1, 1e7),
    logEvery: intFlag(p, "eval-every", Math.min(d.logEvery, steps), 1, 1e7),
    evalTokens: intFlag(p, "eval-tokens", d.evalTokens, 1, 1 << 24),
    corpus: p.flags.has("corpus") ? path.resolve(String(p.flags.get("corpus"))) : d.corpus,
    out: p.flags.has("out") ? path.resolve(String(p.flags.get("out"))) : undefined,
    log: quiet ? () => undefined : (line: string) => process.stdout.write(line + "\n"),
  };
  if (o.evalTokens < o.batch) o.evalTokens = o.batch;
  const r = await runDemo(o);
  if (quiet) for (const run of r.runs) process.stdout.write(`${run.optimizer} ${run.finalValLoss.toFixed(4)} ${run.stateBytes}\n`);
  return 0;
}
