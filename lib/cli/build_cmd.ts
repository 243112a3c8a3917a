// `slimopt build`: rebuilds the addon from source in the package root (cmake-js, CMakeLists.txt).
import { spawn, spawnSync } from "child_process";
import * as path from "path";

const PKG_ROOT = path.resolve(__dirname, "..", "..");

function found(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: "ignore", timeout: 30_000 });
  return !r.error && r.status === 0;
}

function compilerFound(): string | null {
  const cands = [process.env.CXX, "c++", "g++", "clang++"].filter((c): c is string => !!c);
  for (const c of cands) if (found(c, ["--version"])) return c;
  return null;
}

export function runBuild(extra: string[]): Promise<number> {
  const missing: string[] = [];
  if (!found("cmake", ["--version"])) missing.push("CMake (3.18 or newer)");
  if (!compilerFound()) missing.push("a C++17 compiler (g++ or clang++; or set CXX)");
  if (missing.length) {
    process.stderr.write(
      `slimopt build: ${missing.join(" and ")} not found on PATH.\n` +
      "  Install them (Debian/Ubuntu: apt-get install cmake g++; Fedora: dnf install cmake gcc-c++;\n" +
      "  macOS: xcode-select --install && brew install cmake) and run `slimopt build` again.\n" +
      "  The CUDA kernels are compiled too when nvcc is on PATH (CUDA toolkit 12 or newer);\n" +
      "  without it the addon has the CPU backend only.\n");
    return Promise.resolve(1);
  }
  if (!found("nvcc", ["--version"]))
    process.stderr.write("slimopt build: nvcc not found: building the CPU backend only\n");
  const args = ["cmake-js", "compile", "--out", "build", ...extra];
  process.stderr.write(`slimopt build: npx ${args.join(" ")}  (in ${PKG_ROOT})\n`);
  return new Promise((resolve) => {
    const child = spawn(process.platform === "win32" ? "npx.cmd" : "npx", args, { cwd: PKG_ROOT, stdio: "inherit" });
    child.on("error", (e) => {
      process.stderr.write(`slimopt build: could not run npx: ${e.message}\n`);
      resolve(1);
    });
    child.on("exit", (code, signal) => {
      if (code === 0) process.stderr.write(`slimopt build: done (${path.join(PKG_ROOT, "build", "Release", "slimopt.node")})\n`);
      else process.stderr.write(`slimopt build: failed (${signal ? `signal ${signal}` : `exit code ${code}`})\n`);
      resolve(code ?? 1);
    });
  });
}
