// `slimopt launch -n N script.js [args]`: one process per GPU of this host, with what
// initProcessGroup() reads: SLIMOPT_RANK, SLIMOPT_WORLD_SIZE, SLIMOPT_LOCAL_RANK and a fresh
// rendezvous file in SLIMOPT_RENDEZVOUS. Each line a rank prints is prefixed with its rank. When
// one rank fails, the others are stopped; the exit code is the first failure's.
import { spawn, ChildProcess } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { UsageError } from "./args";

function prefixLines(rank: number, src: NodeJS.ReadableStream, dst: NodeJS.WritableStream): void {
  let pending = "";
  src.setEncoding("utf8");
  src.on("data", (chunk: string) => {
    pending += chunk;
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const l of lines) dst.write(`[rank ${rank}] ${l}\n`);
  });
  src.on("end", () => { if (pending) dst.write(`[rank ${rank}] ${pending}\n`); });
}

export async function runLaunch(n: number, script: string, args: string[]): Promise<number> {
  if (!fs.existsSync(script)) throw new UsageError(`launch: no such script "${script}"`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slimopt-launch-"));
  const children: ChildProcess[] = [];
  let firstFailure = 0;
  const exits = Array.from({ length: n }, (_, rank) => new Promise<void>((resolve) => {
    const env = {
      ...process.env,
      SLIMOPT_RANK: String(rank), SLIMOPT_WORLD_SIZE: String(n), SLIMOPT_LOCAL_RANK: String(rank),
      SLIMOPT_RENDEZVOUS: path.join(dir, "nccl-id"),
      NCCL_NVLS_ENABLE: process.env.NCCL_NVLS_ENABLE ?? "0",
    };
    const child = spawn(process.execPath, [script, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    prefixLines(rank, child.stdout!, process.stdout);
    prefixLines(rank, child.stderr!, process.stderr);
    child.on("exit", (code, signal) => {
      const c = code ?? (signal ? 1 : 0);
      if (c !== 0 && firstFailure === 0) {
        firstFailure = c;
        process.stderr.write(`[launch] rank ${rank} exited with ${signal ?? c}; stopping the others\n`);
        for (const o of children) if (o !== child && o.exitCode === null) o.kill("SIGTERM");
      }
      resolve();
    });
  }));
  await Promise.all(exits);
  fs.rmSync(dir, { recursive: true, force: true });
  return firstFailure;
}
