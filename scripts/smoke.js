// Smoke test of an installed slimopt (scripts/pack_smoke.sh copies it next to the install): loads
// the package as a user would, makes AdamW steps on the default device (the GPU where one is
// usable, else the CPU) and checks them against the update computed here in float64. Prints one
// JSON line; exits 1 when anything is off.
// On a GPU it also runs the optimizers that need GEMMs (Apollo, ApolloMini, GaLoreAdamW) on the GPU
// and on the CPU with the same inputs and compares them, and
// counts the notice slimopt gives when cuBLAS/cuSOLVER are missing (scripts/pack_smoke.sh runs it a
// second time with those libraries hidden).
"use strict";
const slimopt = require("slimopt");

const notices = [];
process.on("warning", (w) => { if (w.code === "SLIMOPT_BUILTIN_LINALG") notices.push(w.message); });

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
  const linalg = dev.kind === "cuda" ? await linalgOptimizers(dev) : {};
  const paths = slimopt.linalgPaths();
  const missing = !paths.blas.startsWith("cuBLAS") || !paths.solver.startsWith("cuSOLVER");
  await new Promise((r) => setImmediate(r));  // warnings arrive on the next tick
  const prebuilt = /[\\/]prebuilds[\\/]/.test(info.addon);
  if (!prebuilt && process.env.SLIMOPT_SMOKE_ALLOW_LOCAL !== "1") fail(`loaded ${info.addon}, not the prebuilt addon`);

  const out = {
    ok: true, version: info.version, addon: info.addon, prebuilt, cudaCompiled: info.cudaCompiled,
    cudaArchs: info.cudaArchs, linalgPaths: dev.kind === "cuda" ? paths : undefined, device: dev.toString(), deviceName: dev.name, computeCapability: dev.computeCapability,
    whyNoCuda: info.cuda.usable ? "" : info.cuda.why, cublas: info.cublas, cusolver: info.cusolver,
    linearAlgebra: info.linearAlgebra, adamwMaxErr: maxErr, linalgOptimizers: linalg,
    builtinLinalgNotices: notices.length, node: process.version,
  };
  if (process.env.SLIMOPT_SMOKE_EXPECT_BUILTIN === "1" && !missing) fail(`cuBLAS/cuSOLVER were meant to be hidden, yet ${paths.blas}; ${paths.solver}`);
  if (dev.kind === "cuda" && notices.length !== (missing ? 1 : 0))
    fail(`${notices.length} built-in linear algebra notices with ${paths.blas}; ${paths.solver} (want ${missing ? 1 : 0})`);
  process.stdout.write(JSON.stringify(out) + "\n");
  process.stderr.write(`smoke: ok: slimopt ${info.version} from ${info.addon}, AdamW x${steps} on ${dev}` +
                       `${dev.kind === "cuda" ? ` (${dev.name}, sm_${dev.computeCapability.replace(".", "")})` : ` (no GPU: ${info.cuda.why})`}` +
                       `, max error ${maxErr.toExponential(2)}\n`);
}

/** Five steps of each GEMM-using optimizer on the GPU and on the CPU from the same weights and
 *  gradients; the GPU runs TF32 GEMMs by default, so the updates agree to TF32 rounding. */
async function linalgOptimizers(dev) {
  const rows = 96, cols = 80, n = rows * cols, steps = 5;
  const w0 = new Float32Array(n);
  for (let i = 0; i < n; i++) w0[i] = 0.02 * Math.sin(0.7 * i + 1);
  // Six separated components (amplitudes falling by 1.5) over a small ripple, moving every step:
  // the top 4 singular vectors are well determined, so TF32 rounding cannot swap them.
  const grads = Array.from({ length: steps }, (_, s) => {
    const g = new Float32Array(n);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
      let x = 1e-3 * Math.sin(13 * i + 7 * j + s);
      for (let k = 0; k < 6; k++)
        x += 1.5 ** -k * Math.sin((k + 1) * Math.PI * (i + 0.5) / rows + 0.1 * s) * Math.cos((k + 1) * Math.PI * (j + 0.5) / cols);
      g[i * cols + j] = x;
    }
    return g;
  });
  const kinds = {
    Apollo: (p) => new slimopt.Apollo([{ params: [p], rank: 4, updateProjGap: 2 }], { lr: 1e-2 }),
    ApolloMini: (p) => new slimopt.ApolloMini([{ params: [p], rank: 1, updateProjGap: 2 }], { lr: 1e-2 }),
    GaLoreAdamW: (p) => new slimopt.GaLoreAdamW([{ params: [p], rank: 4, updateProjGap: 2 }], { lr: 1e-2 }),
  };
  const out = {};
  for (const [name, make] of Object.entries(kinds)) {
    const run = async (device) => {
      const p = new slimopt.Parameter(slimopt.tensor(w0, [rows, cols], { device }), { name: `smoke.${name}` });
      const opt = make(p);
      for (let s = 0; s < steps; s++) { p.grad.copyFrom(grads[s]); opt.step(); }
      const w = await p.data.toFloat32Array();
      opt.dispose();
      return w;
    };
    const gpu = await run(dev);
    const cpu = await run(slimopt.device("cpu"));
    let num = 0, den = 0;
    for (let i = 0; i < n; i++) { const a = gpu[i] - w0[i], b = cpu[i] - w0[i]; num += (a - b) ** 2; den += b * b; }
    const rel = Math.sqrt(num / den);
    if (!(den > 0) || !(rel < 5e-3)) fail(`${name} on ${dev} differs from the CPU by ${rel} (relative, tolerance 5e-3)`);
    out[name] = { relErrVsCpu: rel };
  }
  return out;
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
