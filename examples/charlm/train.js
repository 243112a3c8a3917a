#!/usr/bin/env node
// Runs the character-level LM demo from a checkout or an installed package: the same as
// `npx slimopt demo [options]` (the code is lib/demo/charlm, compiled into dist/).
//   node examples/charlm/train.js --optimizer all --out charlm-results
const { runDemoCli } = require("../../dist/demo/charlm/cli.js");

runDemoCli(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e) => {
    process.stderr.write(`${e && e.message ? e.message : String(e)}\n`);
    process.exitCode = e && e.name === "UsageError" ? 2 : 1;
  },
);
