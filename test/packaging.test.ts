// How the package finds its addon (lib/native.ts) and the one notice when cuBLAS/cuSOLVER are
// missing (lib/linalg.ts). The tarball itself is checked by scripts/pack_smoke.sh (CI runs it).
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { addonCandidates, addonPath, native } from "../lib/native";

const ROOT = path.resolve(__dirname, "..");
const PLATFORM_DIR = `${process.platform}-${process.arch}`;

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "slimopt-pkg-"));
}

function touch(file: string, from?: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  if (from) fs.copyFileSync(from, file);
  else fs.writeFileSync(file, "");
}

describe("addon resolution order", () => {
  let root: string;
  beforeEach(() => { root = tempDir(); });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  test("a local build wins; then prebuilt Node-API addons for this libc, tagged before untagged", () => {
    const pre = path.join(root, "prebuilds", PLATFORM_DIR);
    for (const f of ["node.napi.node", "node.napi.glibc.node", "node.napi.musl.node", "node.abi115.node", "README.txt"])
      touch(path.join(pre, f));
    const build = path.join(root, "build", "Release", "slimopt.node");
    const musl = fs.existsSync("/etc/alpine-release");
    const mine = path.join(pre, musl ? "node.napi.musl.node" : "node.napi.glibc.node");
    const expected = [build, mine, path.join(pre, "node.napi.node")];
    expect(addonCandidates(root, {})).toEqual(expected);
    // Without a local build the first existing candidate is the prebuilt one.
    expect(addonCandidates(root, {}).find((c) => fs.existsSync(c))).toBe(mine);
    touch(build);
    expect(addonCandidates(root, {}).find((c) => fs.existsSync(c))).toBe(build);
  });

  test("SLIMOPT_ADDON alone, when set", () => {
    touch(path.join(root, "build", "Release", "slimopt.node"));
    expect(addonCandidates(root, { SLIMOPT_ADDON: "/x/y.node" })).toEqual(["/x/y.node"]);
    expect(addonCandidates(root, { SLIMOPT_ADDON: "rel.node" })).toEqual([path.resolve("rel.node")]);
  });

  test("no prebuilds folder: only the local build", () => {
    expect(addonCandidates(root, {})).toEqual([path.join(root, "build", "Release", "slimopt.node")]);
  });
});

// The compiled package (dist/, made by `npm test`'s build step) copied into a folder that looks
// like an installed one, loaded in a fresh process.
describe("an installed-looking package", () => {
  const dist = path.join(ROOT, "dist", "index.js");
  let pkg: string;
  let addon: string;
  beforeAll(() => {
    native();
    addon = addonPath;  // whichever addon this run uses: the file's place is what is under test
    pkg = tempDir();
    fs.cpSync(path.join(ROOT, "dist"), path.join(pkg, "dist"), { recursive: true });
    fs.copyFileSync(path.join(ROOT, "package.json"), path.join(pkg, "package.json"));
  });
  afterAll(() => fs.rmSync(pkg, { recursive: true, force: true }));

  function load(): { code: number | null; stdout: string; stderr: string } {
    const env = { ...process.env };
    delete env.SLIMOPT_ADDON;
    const r = spawnSync(process.execPath, ["-e", `
      const s = require(${JSON.stringify(path.join(pkg, "dist", "index.js"))});
      const i = s.info();
      process.stdout.write(JSON.stringify({ addon: i.addon, version: i.version }));`], { encoding: "utf8", env, timeout: 60_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  test("loads the prebuilt addon, and a local build once there is one", () => {
    expect(fs.existsSync(dist)).toBe(true);
    const prebuilt = path.join(pkg, "prebuilds", PLATFORM_DIR, "node.napi.glibc.node");
    touch(prebuilt, addon);
    let r = load();
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ addon: prebuilt, version: require("../package.json").version });

    const local = path.join(pkg, "build", "Release", "slimopt.node");
    touch(local, addon);
    r = load();
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).addon).toBe(local);
    fs.rmSync(path.join(pkg, "build"), { recursive: true });
  });

  test("an addon that does not load is named, with what to do", () => {
    const prebuilt = path.join(pkg, "prebuilds", PLATFORM_DIR, "node.napi.glibc.node");
    fs.mkdirSync(path.dirname(prebuilt), { recursive: true });
    fs.writeFileSync(prebuilt, "not an ELF file");
    const r = load();
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`the native addon ${prebuilt} does not load on this system`);
    expect(r.stderr).toContain("npx slimopt build");
    fs.rmSync(path.join(pkg, "prebuilds"), { recursive: true });
    const none = load();
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain("no native addon found");
  });
});

describe("notice when cuBLAS/cuSOLVER are missing", () => {
  const LIB = { blas: "cuBLAS (libcublas.so.13)", solver: "cuSOLVER syevdx (libcusolver.so.12) on the f32 Gram matrix, on the device" };
  const BUILTIN = { blas: "built-in SIMT f32 GEMM (cuBLAS not found; no tensor cores)",
                    solver: "built-in: f32 Gram matrix + block subspace iteration (cuSOLVER not found)" };

  /** A fresh copy of lib/linalg.ts whose addon reports `paths`; the warnings it emits. */
  function withPaths(paths: { blas: string; solver: string; forceBuiltin: boolean },
                     body: (notice: (dev: { kind: string }) => void) => void): string[] {
    const warnings: string[] = [];
    const spy = jest.spyOn(process, "emitWarning").mockImplementation(((w: string | Error, o?: { code?: string }) => {
      expect(o?.code).toBe("SLIMOPT_BUILTIN_LINALG");
      warnings.push(String(w));
    }) as typeof process.emitWarning);
    try {
      jest.isolateModules(() => {
        const nat = require("../lib/native");
        jest.spyOn(nat, "native").mockReturnValue({ linalgInfo: () => paths });
        body(require("../lib/linalg").noticeBuiltinLinalg);
      });
    } finally {
      spy.mockRestore();
    }
    return warnings;
  }

  test("once per process, naming what is missing", () => {
    const w = withPaths({ ...BUILTIN, forceBuiltin: false }, (notice) => {
      notice({ kind: "cuda" });
      notice({ kind: "cuda" });
      notice({ kind: "cuda" });
    });
    expect(w).toHaveLength(1);
    expect(w[0]).toMatch(/^cuBLAS \(libcublas\.so\.13 or \.12\) and cuSOLVER \(libcusolver\.so\.12 or \.11\) not found/);
    expect(w[0]).toContain("SLIMOPT_CUBLAS / SLIMOPT_CUSOLVER");
  });

  test("only the missing library is named", () => {
    const w = withPaths({ blas: LIB.blas, solver: BUILTIN.solver, forceBuiltin: false }, (notice) => notice({ kind: "cuda" }));
    expect(w).toHaveLength(1);
    expect(w[0]).toMatch(/^cuSOLVER .* not found/);
    expect(w[0]).not.toContain("libcublas");
  });

  test("silent on the CPU, with both libraries, and when the built-in path was asked for", () => {
    expect(withPaths({ ...BUILTIN, forceBuiltin: false }, (notice) => notice({ kind: "cpu" }))).toEqual([]);
    expect(withPaths({ ...LIB, forceBuiltin: false }, (notice) => notice({ kind: "cuda" }))).toEqual([]);
    expect(withPaths({ ...BUILTIN, forceBuiltin: true }, (notice) => notice({ kind: "cuda" }))).toEqual([]);
  });

  test("the CPU path asks nothing of the addon", () => {
    // On the CPU the notice must not even query the addon (the CPU-only build has no linalg paths).
    const w = withPaths({ get blas(): string { throw new Error("queried"); }, solver: "", forceBuiltin: false },
                        (notice) => notice({ kind: "cpu" }));
    expect(w).toEqual([]);
  });
});
