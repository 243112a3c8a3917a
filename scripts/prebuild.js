#!/usr/bin/env node
// `npm run prebuilds`: the release build of the addon, shipped in the package as
// prebuilds/<platform>-<arch>/node.napi.glibc.node (the name `prebuildify --napi --tag-libc` gives).
// It builds in build-release/ (build-release-<variant>/ for the others), so the dev build in build/
// is left alone (and build/ still wins at load time where it exists, see lib/native.ts).
//
//   SLIMOPT_PREBUILD_ARCHS  "release" (default): SASS for sm_75 ... sm_120 plus PTX of sm_120;
//                           "cpu": the CPU backend only (quick; CI checks packaging with it);
//                           or a CMake list such as "90" or "80;90".
//   SLIMOPT_BUILD_JOBS      parallel compile jobs (default: the number of CPUs).
// (The npm script is "prebuilds", not "prebuild": npm runs a "prebuild" script before every
// `npm run build`.)
"use strict";
const { spawnSync } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const root = path.resolve(__dirname, "..");
const archs = (process.env.SLIMOPT_PREBUILD_ARCHS || "release").trim();
// One build folder per variant, so a quick variant does not recompile the full one's objects.
const buildName = archs === "release" ? "build-release" : `build-release-${archs.replace(/[^A-Za-z0-9]+/g, "_")}`;
const outDir = path.join(root, buildName);
const withCuda = archs !== "cpu";
const jobs = String(Number(process.env.SLIMOPT_BUILD_JOBS) || os.cpus().length);
const target = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
const fileName = "node.napi.glibc.node";

function run(args, env) {
  process.stderr.write(`prebuild: ${args.join(" ")}\n`);
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit", env });
  if (r.status !== 0) {
    process.stderr.write(`prebuild: failed (${r.signal ? `signal ${r.signal}` : `exit code ${r.status}`})\n`);
    process.exit(1);
  }
}

if (process.platform !== "linux") {
  process.stderr.write("prebuild: release binaries are built on Linux only\n");
  process.exit(1);
}

const started = Date.now();
const cmakeJs = require.resolve("cmake-js/bin/cmake-js", { paths: [root] });
// The env var wins over any -D in CMakeLists.txt; "cpu" builds with nvcc ignored.
const env = { ...process.env, SLIMOPT_CUDA_ARCHS: withCuda ? archs : "90" };
const common = ["--out", buildName, "--config", "Release", `--CDSLIMOPT_WITH_CUDA=${withCuda ? "ON" : "OFF"}`];
// configure always re-runs CMake, so a changed arch list or CUDA switch takes effect.
run([cmakeJs, "configure", ...common], env);
run([cmakeJs, "build", ...common, "--parallel", jobs], env);

const built = path.join(outDir, "Release", "slimopt.node");
// Load it in a fresh process before shipping it: -z now makes a missing symbol fail here.
const check = spawnSync(process.execPath, ["-e", `
  const m = { exports: {} }; process.dlopen(m, ${JSON.stringify(built)});
  process.stdout.write(JSON.stringify(m.exports.buildInfo()));`], { encoding: "utf8" });
if (check.status !== 0) {
  process.stderr.write(`prebuild: the built addon does not load:\n${check.stderr}\n`);
  process.exit(1);
}
const info = JSON.parse(check.stdout);
if (info.cudaCompiled !== withCuda) {
  process.stderr.write(`prebuild: asked for ${withCuda ? "CUDA" : "CPU only"}, built cudaCompiled=${info.cudaCompiled}` +
                       (withCuda ? " (is nvcc on PATH?)" : "") + "\n");
  process.exit(1);
}

// The oldest glibc it loads on (README: 2.34; csrc/glibc_compat.cc keeps it there).
const GLIBC_FLOOR = "2.34";
const dyn = spawnSync("objdump", ["-T", built], { encoding: "utf8", maxBuffer: 64 << 20 });
const needs = dyn.status === 0 ? [...new Set(dyn.stdout.match(/GLIBC_[0-9.]+/g) || [])].map((v) => v.slice(6)) : [];
const newer = (a, b) => { const x = a.split(".").map(Number), y = b.split(".").map(Number);
                          for (let i = 0; i < 3; i++) if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) > (y[i] || 0);
                          return false; };
const glibc = needs.reduce((m, v) => (newer(v, m) ? v : m), "0");
if (dyn.status !== 0) process.stderr.write("prebuild: objdump not found: the glibc floor was not checked\n");
else if (newer(glibc, GLIBC_FLOOR)) {
  const late = dyn.stdout.split("\n").filter((l) => needs.some((v) => newer(v, GLIBC_FLOOR) && l.includes(`GLIBC_${v}`)));
  process.stderr.write(`prebuild: the addon needs glibc ${glibc}, newer than ${GLIBC_FLOOR}:\n${late.join("\n")}\n`);
  process.exit(1);
}

fs.mkdirSync(target, { recursive: true });
for (const f of fs.readdirSync(target)) if (f.endsWith(".node")) fs.rmSync(path.join(target, f));
const dest = path.join(target, fileName);
fs.copyFileSync(built, dest);
const mb = (fs.statSync(dest).size / 1e6).toFixed(1);
const secs = ((Date.now() - started) / 1000).toFixed(0);
process.stderr.write(`prebuild: ${path.relative(root, dest)} (${mb} MB; glibc >= ${glibc}; cuda=${info.cudaCompiled}` +
                     `${withCuda ? ` archs ${info.cudaArchs}` : ""}) in ${secs} s\n`);
