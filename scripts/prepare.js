#!/usr/bin/env node
// npm's "prepare" script. In a clone (`npm install`, `npm ci`) it builds everything (`npm run
// build`). For `npm pack` / `npm publish` it compiles the TypeScript afresh and checks that a
// prebuilt addon is there to ship: the package carries prebuilds/ (made by `npm run prebuilds`),
// never the local build/, so packing does not compile native code.
"use strict";
const { spawnSync } = require("child_process");
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const npm = process.env.npm_execpath;  // npm's own CLI script, set in every lifecycle script
const run = (script) => {
  const r = npm ? spawnSync(process.execPath, [npm, "run", script], { cwd: root, stdio: "inherit" })
                : spawnSync("npm", ["run", script], { cwd: root, stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status || 1);
};

const packing = ["pack", "publish"].includes(process.env.npm_command);
if (!packing) {
  run("build");
  process.exit(0);
}
fs.rmSync(path.join(root, "dist"), { recursive: true, force: true });  // no stale files in the tarball
run("build:ts");
const dir = path.join(root, "prebuilds", "linux-x64");
const addons = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith(".node")) : [];
if (addons.length === 0) {
  process.stderr.write(`prepare: no prebuilt addon in ${path.relative(root, dir)}/ to ship: run \`npm run prebuilds\` ` +
                       "first (SLIMOPT_PREBUILD_ARCHS=cpu or =90 for a quick one)\n");
  process.exit(1);
}
// A publish ships the release build only, never a quick variant (CPU-only, one architecture).
const info = spawnSync(process.execPath, ["-e", `
  const m = { exports: {} }; process.dlopen(m, ${JSON.stringify(path.join(dir, addons[0]))});
  process.stdout.write(JSON.stringify(m.exports.buildInfo()));`], { encoding: "utf8" });
const build = info.status === 0 ? JSON.parse(info.stdout) : null;
const release = build && build.cudaCompiled && /(^|,)75-real,.*120-virtual$/.test(build.cudaArchs);
process.stderr.write(`prepare: packing prebuilds/linux-x64/${addons.join(", ")} ` +
                     `(${build ? (build.cudaCompiled ? `CUDA archs ${build.cudaArchs}` : "CPU only") : "does not load here"})\n`);
if (process.env.npm_command === "publish" && !release) {
  process.stderr.write("prepare: refusing to publish without the release addon: run `npm run prebuilds` (no SLIMOPT_PREBUILD_ARCHS)\n");
  process.exit(1);
}
