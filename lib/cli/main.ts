#!/usr/bin/env node
// The `slimopt` command: info, bench, build, help. Usage errors exit with code 2, failures with 1.
import { SlimoptError } from "../errors";
import { intFlag, parseArgs, UsageError } from "./args";

const HELP = `usage: slimopt <command> [options]

commands:
  info [--json]            the build, the devices, and which linear-algebra path is in use
  bench [options]          benchmark the optimizer steps against the copy-bandwidth floor
      --json               print one JSON document on stdout (progress goes to stderr)
      --quick              fewer steps (3); on the CPU a smaller workload, on a GPU no
                           built-in-solver GaLore refresh rows (minutes each)
      --device <d>         cpu, cuda or cuda:N (default: cuda:0 when a GPU is usable, else cpu)
      --only <a,b:dtype>   run only these benchmarks (names, or name:dtype)
      --steps <N>          timed steps per row (default 10; 3 with --quick)
      --scale <S>          divide every workload dimension by S (default 1 on CUDA,
                           4 on the CPU, 8 on the CPU with --quick)
      --no-torch           do not run the PyTorch reference (bench/torch_baseline.py)
      --list               list the benchmarks and exit
  launch -n <N> <script.js> [args]   run N processes, one per GPU, as ranks of a process group
  demo [options]           train a small character-level language model with each optimizer
                           (slimopt demo --help for its options)
  build [-- <cmake-js args>]   rebuild the native addon from source (needs CMake and a C++ compiler)
  help                     this text
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
    case "help":
    case "--help":
    case "-h": {
      if (cmd === undefined) {
        process.stderr.write(HELP);
        return 2;
      }
      process.stdout.write(HELP);
      return 0;
    }
    case "info": {
      const p = parseArgs(rest, { json: { value: false } }, "info");
      if (p.positional.length || p.rest.length) throw new UsageError(`unexpected argument "${[...p.positional, ...p.rest][0]}"`);
      const { runInfo } = await import("./info_cmd");
      return runInfo(p.flags.has("json"));
    }
    case "bench": {
      const p = parseArgs(rest, {
        json: { value: false }, quick: { value: false }, device: { value: true }, only: { value: true },
        steps: { value: true }, scale: { value: true }, "no-torch": { value: false }, list: { value: false },
      }, "bench");
      if (p.positional.length || p.rest.length) throw new UsageError(`unexpected argument "${[...p.positional, ...p.rest][0]}"`);
      if (p.flags.has("list")) {
        const { BENCHMARKS } = await import("./defs");
        for (const d of BENCHMARKS) process.stdout.write(`${d.name.padEnd(22)} ${d.description}\n`);
        return 0;
      }
      const only = p.flags.get("only");
      const { runBench } = await import("./bench");
      return runBench({
        json: p.flags.has("json"),
        quick: p.flags.has("quick"),
        device: p.flags.get("device") as string | undefined,
        only: typeof only === "string" ? only.split(",").map((s) => s.trim()).filter(Boolean) : undefined,
        steps: p.flags.has("steps") ? intFlag(p, "steps", 10, 1, 100000) : undefined,
        scale: p.flags.has("scale") ? intFlag(p, "scale", 1, 1, 4096) : undefined,
        torch: !p.flags.has("no-torch"),
      });
    }
    case "launch": {
      // Options before the script are launch's; everything after it is the script's.
      const at = rest.findIndex((a, i) => !a.startsWith("-") && !(i > 0 && /^--?n$/.test(rest[i - 1])));
      if (at < 0) throw new UsageError("launch: which script? (slimopt launch -n N script.js [args])");
      const p = parseArgs(rest.slice(0, at), { n: { value: true } }, "launch");
      const n = intFlag(p, "n", 1, 1, 64);
      const { runLaunch } = await import("./launch_cmd");
      return runLaunch(n, rest[at], rest.slice(at + 1));
    }
    case "demo": {
      const { runDemoCli } = await import("../demo/charlm/cli");
      return runDemoCli(rest);
    }
    case "build": {
      const p = parseArgs(rest, {}, "build");
      if (p.positional.length) throw new UsageError(`unexpected argument "${p.positional[0]}" (pass cmake-js arguments after --)`);
      const { runBuild } = await import("./build_cmd");
      return runBuild(p.rest);
    }
    default:
      throw new UsageError(`unknown command "${cmd}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    if (e instanceof UsageError) {
      process.stderr.write(`slimopt: ${e.message}\n(run \`slimopt help\` for usage)\n`);
      process.exitCode = 2;
    } else if (e instanceof SlimoptError) {
      process.stderr.write(`slimopt: ${e.message}\n`);
      process.exitCode = 1;
    } else {
      // The message says what to do (e.g. "no native addon found ... run `npx slimopt build`");
      // the stack is for slimopt's developers.
      const msg = e instanceof Error ? (process.env.SLIMOPT_DEBUG ? e.stack ?? e.message : e.message) : String(e);
      process.stderr.write(`${msg.startsWith("slimopt") ? "" : "slimopt: "}${msg}\n`);
      process.exitCode = 1;
    }
  },
);
