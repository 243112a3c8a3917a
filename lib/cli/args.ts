// A small argument parser for the CLI: `--flag`, `--key value`, `--key=value`. Anything it does
// not know is a UsageError, which main turns into a message and exit code 2.

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export interface FlagSpec {
  /** true: takes a value (`--steps 5` or `--steps=5`); false: a boolean switch. */
  value: boolean;
}

export interface Parsed {
  flags: Map<string, string | true>;
  positional: string[];
  /** Everything after a bare `--`, untouched. */
  rest: string[];
}

export function parseArgs(argv: string[], spec: Record<string, FlagSpec>, command: string): Parsed {
  const flags = new Map<string, string | true>();
  const positional: string[] = [];
  let rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      rest = argv.slice(i + 1);
      break;
    }
    if (!a.startsWith("-") || a === "-") {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = (eq >= 0 ? a.slice(0, eq) : a).replace(/^--?/, "");
    const s = spec[name];
    if (!s) throw new UsageError(`unknown option "${a}" for "slimopt ${command}"`);
    if (!s.value) {
      if (eq >= 0) throw new UsageError(`option --${name} takes no value`);
      flags.set(name, true);
      continue;
    }
    let v: string | undefined;
    if (eq >= 0) v = a.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) v = argv[++i];
    if (v === undefined || v === "") throw new UsageError(`option --${name} needs a value`);
    flags.set(name, v);
  }
  return { flags, positional, rest };
}

/** A positive integer flag, or the default. */
export function intFlag(p: Parsed, name: string, dflt: number, min = 1, max = 1e9): number {
  const v = p.flags.get(name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (typeof v !== "string" || !/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(`--${name} must be an integer in [${min}, ${max}], got "${String(v)}"`);
  return n;
}
