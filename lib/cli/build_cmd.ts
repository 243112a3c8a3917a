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

/** The build tools slimopt's own package does not install (they are devDependencies): resolved
 *  from the package's folder upwards, so installing them in the user's project serves. */
function buildTools(): { cmakeJs: string | null; missing: string[] } {
  const dev = (require(path.join(PKG_ROOT, "package.json")).devDependencies ?? {}) as Record<string, string>;
  const where = (mod: string): string | null => {
    try { return require.resolve(mod, { paths: [PKG_ROOT] }); } catch { return null; }
  };
  const cmakeJs = where("cmake-js/bin/cmake-js");
  const missing: string[] = [];
  if (!cmakeJs) missing.push(`cmake-js@${dev["cmake-js"] ?? "7"}`);
  if (!where("node-addon-api")) missing.push(`node-addon-api@${dev["node-addon-api"] ?? "8"}`);
  return { cmakeJs, missing };
}

/** SLIMOPT_CUDA_ARCHS for this build: the user's, else the GPUs nvidia-smi reports (a fast build
 *  for this machine), else every architecture a release ships (slow). */
function cudaArchs(): string {
  const env = process.env.SLIMOPT_CUDA_ARCHS;
  if (env) return env;
  const r = spawnSync("nvidia-smi", ["--query-gpu=compute_cap", "--format=csv,noheader"], { encoding: "utf8", timeout: 30_000 });
  const caps = r.status === 0 ? [...new Set((r.stdout ?? "").split("\n").map((l) => l.trim().replace(".", "")).filter((c) => /^\d+$/.test(c)))] : [];
  if (caps.length) return caps.sort().join(";");
  process.stderr.write("slimopt build: no GPU seen by nvidia-smi: compiling for every architecture a release ships (slow; " +
                       "set SLIMOPT_CUDA_ARCHS, e.g. 89 or \"80;90\", to build fewer)\n");
  return "release";
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
  const tools = buildTools();
  if (!tools.cmakeJs || tools.missing.length) {
    process.stderr.write(
      `slimopt build: ${tools.missing.join(" and ")} not found (the build uses them; slimopt does not install them).\n` +
      `  Add them to your project: npm install --save-dev ${tools.missing.join(" ")}\n` +
      "  and run `npx slimopt build` again.\n");
    return Promise.resolve(1);
  }
  const cudaOff = extra.some((a) => /^--CDSLIMOPT_WITH_CUDA=(OFF|0|FALSE|NO)$/i.test(a));
  const withCuda = !cudaOff && found("nvcc", ["--version"]);
  if (!withCuda && !cudaOff) process.stderr.write("slimopt build: nvcc not found: building the CPU backend only\n");
  const env = withCuda ? { ...process.env, SLIMOPT_CUDA_ARCHS: cudaArchs() } : process.env;
  const args = [tools.cmakeJs, "compile", "--out", "build", ...extra];
  process.stderr.write(`slimopt build: cmake-js ${args.slice(1).join(" ")}` +
                       `${withCuda ? ` (SLIMOPT_CUDA_ARCHS=${env.SLIMOPT_CUDA_ARCHS})` : ""}  in ${PKG_ROOT}\n`);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: PKG_ROOT, stdio: "inherit", env });
    child.on("error", (e) => {
      process.stderr.write(`slimopt build: could not run cmake-js: ${e.message}\n`);
      resolve(1);
    });
    child.on("exit", (code, signal) => {
      if (code === 0) process.stderr.write(`slimopt build: done (${path.join(PKG_ROOT, "build", "Release", "slimopt.node")}; ` +
                                           "it is used in place of the prebuilt addon from now on)\n");
      else process.stderr.write(`slimopt build: failed (${signal ? `signal ${signal}` : `exit code ${code}`})\n`);
      resolve(code ?? 1);
    });
  });
}
