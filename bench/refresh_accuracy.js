#!/usr/bin/env node
// How close two builds or settings of GaLore's svd refresh come on §6-sized matrices (Gaussian
// gradients, as in the galore-refresh bench), and how long one refresh takes in each.
//   refresh_accuracy.js dump FILE [ranks]   one refresh per shape and rank; P's to FILE (f32,
//                                           concatenated), times and sizes to FILE.json
//   refresh_accuracy.js compare A B         per shape and rank: relative Frobenius error of A's P
//                                           against B's and the worst vector's error
// The solver settings come from the environment (SLIMOPT_GRAM_SOLVER, SLIMOPT_FILTER_RR, ...),
// which the library reads once per process: one dump per setting.
const fs = require("fs");

// REFRESH_SHAPES=RxC,RxC overrides (e.g. small shapes to try the script on the CPU).
const SHAPES = (process.env.REFRESH_SHAPES || "4096x4096,11008x4096,4096x11008").split(",").map((t) => t.split("x").map(Number));

async function dump(file, ranks) {
  const s = require("../dist");
  const dev = s.defaultDevice();
  const out = fs.openSync(file, "w");
  const meta = { solver: s.linalgPaths().solver, device: dev.name, entries: [] };
  for (const [rows, cols] of SHAPES) {
    for (const rank of ranks) {
      const p = new s.Parameter(s.randn([rows, cols], { device: dev, seed: 1, std: 0.02 }), { name: "w" });
      const g = s.randn([rows, cols], { device: dev, seed: 2 + rows + cols, std: 1 });
      p.grad.copyFrom(g);
      g.dispose();
      const opt = new s.GaLoreAdamW([{ params: [p], rank, updateProjGap: 1, projType: "std", projector: "svd" }], { lr: 0 });
      // Two refreshes of the same gradient: the second is timed (the first creates the handles)
      // and gives the same P up to the sign rule, which then follows the first.
      let ms = 0;
      for (let i = 0; i < 2; i++) {
        await dev.synchronize();
        const t0 = process.hrtime.bigint();
        opt.step();
        await dev.synchronize();
        ms = Number(process.hrtime.bigint() - t0) / 1e6;
      }
      const st = opt.stateOf(p);
      const P = await st.proj.toFloat32Array();
      fs.writeSync(out, Buffer.from(P.buffer, P.byteOffset, P.byteLength));
      meta.entries.push({ rows, cols, rank, side: st.side, length: P.length, ms });
      console.error(`refresh_accuracy: ${rows}x${cols} r=${rank} ${st.side}: ${ms.toFixed(1)} ms`);
      opt.dispose();
      p.data.dispose();
      p.grad.dispose();
    }
  }
  fs.closeSync(out);
  fs.writeFileSync(file + ".json", JSON.stringify(meta, null, 1));
}

function compare(a, b) {
  const ma = JSON.parse(fs.readFileSync(a + ".json")), mb = JSON.parse(fs.readFileSync(b + ".json"));
  const pa = new Float32Array(fs.readFileSync(a).buffer.slice(0)), pb = new Float32Array(fs.readFileSync(b).buffer.slice(0));
  console.log(`A: ${a} (${ma.solver})\nB: ${b} (${mb.solver})`);
  let off = 0;
  for (let e = 0; e < ma.entries.length; e++) {
    const x = ma.entries[e], y = mb.entries[e];
    if (x.rows !== y.rows || x.cols !== y.cols || x.rank !== y.rank || x.length !== y.length) throw new Error("dumps differ in layout");
    const r = x.rank, len = x.length / r, left = x.side === "left";
    const at = (P, v, i) => P[off + (left ? i * r + v : v * len + i)];
    let num = 0, den = 0, worst = 0, worstAt = -1;
    for (let v = 0; v < r; v++) {
      let ev = 0;
      for (let i = 0; i < len; i++) {
        const d = at(pa, v, i) - at(pb, v, i);
        ev += d * d;
        den += at(pb, v, i) ** 2;
      }
      num += ev;
      if (Math.sqrt(ev) > worst) { worst = Math.sqrt(ev); worstAt = v; }
    }
    off += x.length;
    console.log(`${x.rows}x${x.cols} r=${r} (${x.side}): relErr ${Math.sqrt(num / den).toExponential(2)}, worst vector ${worstAt} ` +
                `${worst.toExponential(2)}; refresh ${x.ms.toFixed(1)} ms (A) / ${y.ms.toFixed(1)} ms (B)`);
  }
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === "dump") dump(args[0], (args[1] || "128,512").split(",").map(Number)).catch((e) => { console.error(e); process.exit(1); });
else if (cmd === "compare") compare(args[0], args[1]);
else { console.error("usage: refresh_accuracy.js dump FILE [ranks] | compare A B"); process.exit(2); }
