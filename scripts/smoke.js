// Smoke test of an installed slimopt (scripts/pack_smoke.sh copies it next to the install): loads
// the package as a user would, makes AdamW steps on the default device (the GPU where one is
// usable, else the CPU) and checks them against the update computed here in float64. Prints one
// JSON line; exits 1 when anything is off.
"use strict";
const slimopt = require("slimopt");

const fail = (msg) => { process.stderr.write(`smoke: FAILED: ${msg}\n`); process.exit(1); };

async function main() {
  const info = slimopt.info();
  const dev = slimopt.defaultDevice();
  if (info.cuda.usable && dev.kind !== "cuda") fail(`a GPU is usable but the default device is ${dev}`);
  if (process.env.SLIMOPT_SMOKE_EXPECT_DEVICE && process.env.SLIMOPT_SMOKE_EXPECT_DEVICE !== dev.kind)
    fail(`expected a ${process.env.SLIMOPT_SMOKE_EXPECT_DEVICE} device, got ${dev} (${info.cuda.why})`);

  const rows = 3, cols = 37, n = rows * cols;
  const w0 = new Float32Array(n), g = new Float32Array(n);
  for (let i = 0; i < n; i++) { w0[i] = Math.sin(i + 1); g[i] = Math.cos(3 * i + 0.5) * 0.1; }
  const lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 1e-2, steps = 3;
  const w = new slimopt.Parameter(slimopt.tensor(w0, [rows, cols], { device: dev }), { name: "smoke.w" });
  const opt = new slimopt.AdamW([w], { lr, betas: [b1, b2], eps, weightDecay: wd });
  for (let s = 0; s < steps; s++) { w.grad.copyFrom(g); opt.step(); }
  await dev.synchronize();
  const got = await w.data.toFloat32Array();

  // torch.optim.AdamW on float64, the same constant gradient every step.
  let maxErr = 0, maxMove = 0;
  for (let i = 0; i < n; i++) {
    let x = w0[i], m = 0, v = 0;
    for (let t = 1; t <= steps; t++) {
      x *= 1 - lr * wd;
      m = b1 * m + (1 - b1) * g[i];
      v = b2 * v + (1 - b2) * g[i] * g[i];
      x -= (lr / (1 - b1 ** t)) * m / (Math.sqrt(v) / Math.sqrt(1 - b2 ** t) + eps);
    }
    maxErr = Math.max(maxErr, Math.abs(got[i] - x));
    maxMove = Math.max(maxMove, Math.abs(got[i] - w0[i]));
  }
  if (!(maxMove > 1e-3)) fail(`the parameter did not move (max change ${maxMove})`);
  if (!(maxErr < 1e-5)) fail(`AdamW result off by ${maxErr} from the float64 reference`);
  const prebuilt = /[\\/]prebuilds[\\/]/.test(info.addon);
  if (!prebuilt && process.env.SLIMOPT_SMOKE_ALLOW_LOCAL !== "1") fail(`loaded ${info.addon}, not the prebuilt addon`);

  const out = {
    ok: true, version: info.version, addon: info.addon, prebuilt, cudaCompiled: info.cudaCompiled,
    cudaArchs: info.cudaArchs, device: dev.toString(), deviceName: dev.name, computeCapability: dev.computeCapability,
    whyNoCuda: info.cuda.usable ? "" : info.cuda.why, cublas: info.cublas, cusolver: info.cusolver,
    linearAlgebra: info.linearAlgebra, adamwMaxErr: maxErr, node: process.version,
  };
  process.stdout.write(JSON.stringify(out) + "\n");
  process.stderr.write(`smoke: ok: slimopt ${info.version} from ${info.addon}, AdamW x${steps} on ${dev}` +
                       `${dev.kind === "cuda" ? ` (${dev.name}, sm_${dev.computeCapability.replace(".", "")})` : ` (no GPU: ${info.cuda.why})`}` +
                       `, max error ${maxErr.toExponential(2)}\n`);
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
