// The small network kernels (lib/nn.ts) on the CPU backend against float64 references written
// here, their refusals, the character-level LM example's gradients against central finite
// differences, and the demo's pieces (corpus split, sampling, schedule, plot, an end-to-end run).
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { nn, Tensor, tensor, zeros, SlimoptError } from "../lib";
import { CharMLP } from "../lib/demo/charlm/model";
import { BatchSampler, evenPositions, loadCorpus, splitCorpus } from "../lib/demo/charlm/data";
import { lrFactor, runDemo, demoDefaults, buildOptimizer, OPTIMIZERS, optimizerClass } from "../lib/demo/charlm/train";
import { lossPlotSvg, niceTicks } from "../lib/demo/charlm/svg";
import { device } from "../lib";
import { relErr, Rng } from "./reference";
import { expectCode } from "./helpers";

const cpu = { device: "cpu" };

function ints(rng: Rng, n: number, lo: number, hi: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (rng.u32() % (hi - lo));
  return a;
}

/** A tensor filled with NaN (so a kernel that leaves something unwritten shows). */
function poisoned(shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tensor(new Float32Array(n).fill(NaN), shape, cpu);
}

const tanh = Math.tanh, exp = Math.exp, log = Math.log;
const K = Math.sqrt(2 / Math.PI);

function actRef(kind: string, z: number): number {
  if (kind === "tanh") return tanh(z);
  if (kind === "relu") return z > 0 ? z : 0;
  return 0.5 * z * (1 + tanh(K * (z + 0.044715 * z * z * z)));
}
function actGradRef(kind: string, z: number): number {
  if (kind === "tanh") { const t = tanh(z); return 1 - t * t; }
  if (kind === "relu") return z > 0 ? 1 : 0;
  const u = K * (z + 0.044715 * z * z * z), t = tanh(u);
  return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * K * (1 + 3 * 0.044715 * z * z);
}

describe("nn kernels (CPU) against float64 references", () => {
  test("embedding gathers rows; out-of-range indices give zeros", async () => {
    const rng = new Rng(1);
    for (const [V, d, n] of [[13, 7, 37], [1, 1, 1], [72, 33, 129]]) {
      const table = rng.normals(V * d);
      const idx = ints(rng, n, 0, V);
      if (n > 2) { idx[1] = -1; idx[n - 1] = V; }
      const out = poisoned([n, d]);
      nn.embedding(tensor(table, [V, d], cpu), tensor(idx, [n], cpu), out);
      const got = await out.toFloat32Array();
      const ref = new Float64Array(n * d);
      for (let i = 0; i < n; i++) for (let c = 0; c < d; c++) ref[i * d + c] = idx[i] >= 0 && idx[i] < V ? table[idx[i] * d + c] : 0;
      expect(Array.from(got)).toEqual(Array.from(ref));
    }
  });

  test("embeddingBackward sums duplicates (overwrite and accumulate); unused rows get 0", async () => {
    const rng = new Rng(2);
    for (const [V, d, n] of [[11, 5, 57], [3, 9, 1], [72, 32, 2049]]) {
      const dOut = rng.normals(n * d);
      const idx = ints(rng, n, 0, V);
      idx[0] = -3;
      const prior = rng.normals(V * d);
      for (const accumulate of [false, true]) {
        const dTable = tensor(accumulate ? prior : new Float32Array(V * d).fill(NaN), [V, d], cpu);
        nn.embeddingBackward(tensor(dOut, [n, d], cpu), tensor(idx, [n], cpu), dTable, { accumulate });
        const ref = new Float64Array(V * d);
        if (accumulate) for (let e = 0; e < V * d; e++) ref[e] = prior[e];
        for (let i = 0; i < n; i++) {
          if (idx[i] < 0) continue;
          for (let c = 0; c < d; c++) ref[idx[i] * d + c] += dOut[i * d + c];
        }
        expect(relErr(await dTable.toFloat32Array(), ref)).toBeLessThan(1e-6);
      }
    }
  });

  test("addBias and biasGrad", async () => {
    const rng = new Rng(3);
    for (const [rows, cols] of [[5, 9], [1, 1], [33, 257]]) {
      const x = rng.normals(rows * cols), b = rng.normals(cols);
      const xt = tensor(x, [rows, cols], cpu);
      nn.addBias(xt, tensor(b, [cols], cpu));
      const ref = Float64Array.from(x, (v, e) => v + b[e % cols]);
      expect(relErr(await xt.toFloat32Array(), ref)).toBeLessThan(1e-7);

      const prior = rng.normals(cols);
      for (const accumulate of [false, true]) {
        const db = tensor(accumulate ? prior : new Float32Array(cols).fill(NaN), [cols], cpu);
        nn.biasGrad(tensor(x, [rows, cols], cpu), db, { accumulate });
        const refG = new Float64Array(cols);
        for (let c = 0; c < cols; c++) refG[c] = accumulate ? prior[c] : 0;
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) refG[c] += x[r * cols + c];
        expect(relErr(await db.toFloat32Array(), refG)).toBeLessThan(1e-6);
      }
    }
  });

  test("activations forward and backward (gelu, tanh, relu), also in place", async () => {
    const rng = new Rng(4);
    const n = 4097;
    const x = rng.normals(n, 2);
    const dy = rng.normals(n);
    for (const kind of ["gelu", "tanh", "relu"] as nn.ActivationKind[]) {
      const y = poisoned([n]);
      nn.activation(kind, tensor(x, [n], cpu), y);
      expect(relErr(await y.toFloat32Array(), Float64Array.from(x, (z) => actRef(kind, z)))).toBeLessThan(1e-6);
      const dyt = tensor(dy, [n], cpu);
      nn.activationBackward(kind, tensor(x, [n], cpu), dyt, dyt);  // in place
      expect(relErr(await dyt.toFloat32Array(), Float64Array.from(x, (z, i) => dy[i] * actGradRef(kind, z)))).toBeLessThan(1e-6);
    }
  });

  test("crossEntropy: loss (mean, sum), row losses, dLogits (also in place); a bad target gives NaN", async () => {
    const rng = new Rng(5);
    for (const [rows, V] of [[11, 17], [1, 1], [64, 72]]) {
      const z = rng.normals(rows * V, 3);
      const t = ints(rng, rows, 0, V);
      const refRow = new Float64Array(rows), refG = new Float64Array(rows * V);
      for (let r = 0; r < rows; r++) {
        let mx = -Infinity;
        for (let j = 0; j < V; j++) mx = Math.max(mx, z[r * V + j]);
        let s = 0;
        for (let j = 0; j < V; j++) s += exp(z[r * V + j] - mx);
        const lse = mx + log(s);
        refRow[r] = lse - z[r * V + t[r]];
        for (let j = 0; j < V; j++) refG[r * V + j] = exp(z[r * V + j] - lse) - (j === t[r] ? 1 : 0);
      }
      const total = refRow.reduce((a, b) => a + b, 0);
      for (const reduction of ["mean", "sum"] as const) {
        const scale = reduction === "mean" ? 1 / rows : 1;
        const logits = tensor(z, [rows, V], cpu);
        const loss = poisoned([1]), rowLosses = poisoned([rows]), dLogits = poisoned([rows, V]);
        nn.crossEntropy(logits, tensor(t, [rows], cpu), loss, { reduction, rowLosses, dLogits });
        const [l] = await loss.toFloat32Array();
        expect(Math.abs(l - total * scale)).toBeLessThan(1e-5 * Math.max(1, Math.abs(total * scale)));
        expect(relErr(await rowLosses.toFloat32Array(), refRow)).toBeLessThan(1e-5);
        expect(relErr(await dLogits.toFloat32Array(), refG.map((g) => g * scale))).toBeLessThan(1e-5);
        // dLogits may overwrite the logits.
        nn.crossEntropy(logits, tensor(t, [rows], cpu), loss, { reduction, dLogits: logits });
        expect(relErr(await logits.toFloat32Array(), refG.map((g) => g * scale))).toBeLessThan(1e-5);
      }
    }
    const bad = Int32Array.from([0, 5, 1]);
    const rowLosses = zeros([3], cpu), dLogits = poisoned([3, 5]), loss = zeros([1], cpu);
    nn.crossEntropy(tensor(new Rng(6).normals(15), [3, 5], cpu), tensor(bad, [3], cpu), loss, { rowLosses, dLogits });
    const rl = await rowLosses.toFloat32Array();
    expect(Number.isFinite(rl[0]) && Number.isNaN(rl[1]) && Number.isFinite(rl[2])).toBe(true);
    expect(Array.from((await dLogits.toFloat32Array()).subarray(5, 10))).toEqual([0, 0, 0, 0, 0]);
    expect(Number.isNaN((await loss.toFloat32Array())[0])).toBe(true);
  });
});

describe("nn kernels refuse bad input before running", () => {
  async function unchanged(t: Tensor, fn: () => unknown, code: string): Promise<void> {
    const before = await t.toFloat32Array();
    expectCode(fn, code);
    expect(Array.from(await t.toFloat32Array())).toEqual(Array.from(before));
  }

  test("dtypes, shapes, disposed tensors, options", async () => {
    const rng = new Rng(7);
    const table = tensor(rng.normals(12), [4, 3], cpu);
    const idx = tensor(Int32Array.from([0, 1, 2, 3, 1]), [5], cpu);
    const out = tensor(rng.normals(15), [5, 3], cpu);
    await unchanged(out, () => nn.embedding(table, tensor([0, 1, 2, 3, 1], [5], cpu), out), "E_DTYPE");
    await unchanged(out, () => nn.embedding(tensor(rng.normals(12), [12], cpu), idx, out), "E_SHAPE");
    await unchanged(out, () => nn.embedding(table, tensor(Int32Array.from([0, 1]), [2], cpu), out), "E_SHAPE");
    await unchanged(out, () => nn.embedding(table, idx, zeros([5, 3], { dtype: "bf16", device: "cpu" })), "E_DTYPE");
    await unchanged(out, () => nn.embedding(table, idx, 5 as unknown as Tensor), "E_ARG");
    const gone = tensor(rng.normals(12), [4, 3], cpu);
    gone.dispose();
    await unchanged(out, () => nn.embedding(gone, idx, out), "E_DISPOSED");

    const dTable = tensor(rng.normals(12), [4, 3], cpu);
    await unchanged(dTable, () => nn.embeddingBackward(out, idx, dTable, { accumulate: 1 as unknown as boolean }), "E_ARG");
    await unchanged(dTable, () => nn.embeddingBackward(tensor(rng.normals(14), [14], cpu), idx, dTable), "E_SHAPE");
    await unchanged(dTable, () => nn.embeddingBackward(out, idx, zeros([5, 9000], cpu)), "E_SHAPE");

    const x = tensor(rng.normals(15), [5, 3], cpu);
    await unchanged(x, () => nn.addBias(x, tensor(rng.normals(4), [4], cpu)), "E_SHAPE");
    await unchanged(x, () => nn.addBias(x, tensor(rng.normals(3), [1, 3], cpu)), "E_SHAPE");
    const db = tensor(rng.normals(3), [3], cpu);
    await unchanged(db, () => nn.biasGrad(tensor(rng.normals(8), [2, 4], cpu), db), "E_SHAPE");

    const y = tensor(rng.normals(15), [5, 3], cpu);
    await unchanged(y, () => nn.activation("swish" as nn.ActivationKind, x, y), "E_ARG");
    await unchanged(y, () => nn.activation("gelu", x, tensor(rng.normals(15), [15], cpu)), "E_SHAPE");
    await unchanged(y, () => nn.activationBackward("tanh", x, tensor(rng.normals(15), [3, 5], cpu), y), "E_SHAPE");

    const logits = tensor(rng.normals(15), [5, 3], cpu);
    const loss = tensor([7], [1], cpu);
    await unchanged(loss, () => nn.crossEntropy(logits, tensor(Int32Array.from([0, 1, 2, 0]), [4], cpu), loss), "E_SHAPE");
    await unchanged(loss, () => nn.crossEntropy(logits, idx, zeros([2], cpu)), "E_SHAPE");
    await unchanged(loss, () => nn.crossEntropy(logits, idx, loss, { reduction: "max" as "sum" }), "E_ARG");
    await unchanged(loss, () => nn.crossEntropy(logits, idx, loss, { dLogits: zeros([3, 5], cpu) }), "E_SHAPE");
    await unchanged(loss, () => nn.crossEntropy(logits, idx, loss, { rowLosses: zeros([4], cpu) }), "E_SHAPE");
    await unchanged(loss, () => nn.crossEntropy(zeros([5, 0], cpu), idx, loss), "E_SHAPE");
    await unchanged(loss, () => nn.crossEntropy(logits, tensor(rng.normals(5), [5], cpu), loss), "E_DTYPE");
  });
});

/** Central differences of the model's summed loss for a few entries of every parameter tensor,
 *  against the gradients its backward pass writes. */
describe("CharMLP gradients against finite differences", () => {
  for (const activation of ["gelu", "tanh"] as nn.ActivationKind[]) {
    test(`${activation}: every parameter tensor`, async () => {
      const rng = new Rng(activation.length);
      const V = 7, context = 3, batch = 5;
      const model = new CharMLP({ vocab: V, context, embed: 4, hidden: [6, 5], activation }, { device: "cpu", seed: 3 });
      const idx = tensor(ints(rng, batch * context, 0, V), [batch, context], cpu);
      const tgt = tensor(ints(rng, batch, 0, V), [batch], cpu);
      const lossAt = async () => (await model.forward(idx, tgt, { reduction: "sum" }).toFloat32Array())[0];
      model.forward(idx, tgt, { reduction: "sum", backward: true });
      const eps = 1e-2;
      let checked = 0;
      for (const p of model.parameters()) {
        const g = await p.grad.toFloat32Array();
        const w = await p.data.toFloat32Array();
        // The largest-gradient entry and three others.
        let big = 0;
        for (let i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[big])) big = i;
        const picks = [big, ...ints(rng, 3, 0, g.length)];
        for (const i of picks) {
          const w0 = w[i];
          w[i] = w0 + eps; p.data.copyFrom(w); const up = await lossAt();
          w[i] = w0 - eps; p.data.copyFrom(w); const down = await lossAt();
          w[i] = w0; p.data.copyFrom(w);
          const fd = (up - down) / (2 * eps);
          expect({ name: p.name, i, err: Math.abs(fd - g[i]) <= 1e-2 * Math.abs(g[i]) + 2e-3 }).toEqual({ name: p.name, i, err: true });
          checked++;
        }
        expect(Math.abs(g[big])).toBeGreaterThan(1e-3);  // something real was compared
      }
      expect(checked).toBe(4 * model.parameters().length);
      // The mean reduction's gradients are the sum's divided by the batch.
      const sumGrads = await Promise.all(model.parameters().map((p) => p.grad.toFloat32Array()));
      model.forward(idx, tgt, { backward: true });
      const meanGrads = await Promise.all(model.parameters().map((p) => p.grad.toFloat32Array()));
      sumGrads.forEach((s, k) => expect(relErr(meanGrads[k], Float64Array.from(s, (v) => v / batch))).toBeLessThan(1e-6));
      model.dispose();
    });
  }

  test("the model refuses indices of the wrong shape", () => {
    const model = new CharMLP({ vocab: 5, context: 3, embed: 2, hidden: [4], activation: "gelu" }, { device: "cpu" });
    expectCode(() => model.forward(zeros([2, 4], { dtype: "i32", device: "cpu" }), zeros([2], { dtype: "i32", device: "cpu" })), "E_SHAPE");
    expectCode(() => model.forward(zeros([2, 3], { dtype: "i32", device: "cpu" }), zeros([3], { dtype: "i32", device: "cpu" })), "E_SHAPE");
    expectCode(() => new CharMLP({ vocab: 5, context: 3, embed: 2, hidden: [], activation: "gelu" }), "E_ARG");
    model.dispose();
  });
});

describe("charlm demo pieces", () => {
  test("the shipped corpus splits deterministically; sampling is seeded", () => {
    const c = loadCorpus();
    expect(c.chars.length).toBe(72);
    expect(c.train.length + c.val.length).toBe(1016742);
    expect(c.val.length).toBe(1016742 - Math.floor(1016742 * 0.9));
    const s = splitCorpus("abcabcabcd", 0.2);
    expect(s.chars).toEqual(["a", "b", "c", "d"]);
    expect(Array.from(s.train)).toEqual([0, 1, 2, 0, 1, 2, 0, 1]);
    expect(Array.from(s.val)).toEqual([2, 3]);
    const draw = (seed: number) => {
      const sm = new BatchSampler(c.train, 8, 16, seed);
      const i = new Int32Array(128), t = new Int32Array(16);
      sm.next(i, t); sm.next(i, t);
      return [Array.from(i), Array.from(t)];
    };
    expect(draw(5)).toEqual(draw(5));
    expect(draw(5)).not.toEqual(draw(6));
    const pos = evenPositions(c.val, 16, 1000);
    expect(pos.length).toBe(1000);
    expect(pos[0]).toBe(16);
    expect(pos[999]).toBeLessThan(c.val.length);
  });

  test("learning-rate schedule and plot", () => {
    expect(lrFactor(0, 100, 0.1)).toBeCloseTo(0.1);
    expect(lrFactor(9, 100, 0.1)).toBeCloseTo(1);
    expect(lrFactor(99, 100, 0.1)).toBeGreaterThan(0.1);
    expect(lrFactor(99, 100, 0.1)).toBeLessThan(0.11);
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    const svg = lossPlotSvg([{ label: "a<b", val: [[0, 4], [10, 2], [20, 1.5]], train: [[10, 2.2], [20, 1.6]] },
                             { label: "c", val: [[0, 4], [10, 2.5], [20, 1.7]] }], { title: "t", xLabel: "x", yLabel: "y" });
    expect(svg.startsWith("<svg")).toBe(true);
    expect((svg.match(/<polyline/g) ?? []).length).toBe(3);
    expect(svg).toContain("a&lt;b");
  });

  test("every optimizer of the table builds with rank groups for the hidden weights only", () => {
    const model = new CharMLP({ vocab: 9, context: 4, embed: 4, hidden: [32, 24], activation: "gelu" }, { device: "cpu" });
    for (const e of OPTIMIZERS) {
      if (!optimizerClass(e.key)) continue;  // Apollo/ApolloMini where this build lacks them
      const opt = buildOptimizer(e.key, model, 1e-3, 3000);
      if (e.rankOptions) {
        expect(opt.paramGroups.length).toBe(3);
        expect(opt.paramGroups[0].params).toEqual([model.weights[0]]);
        expect(opt.paramGroups[2].params).not.toContain(model.weights[1]);
        expect(opt.paramGroups[1].rank).toBe(e.key === "apollo-mini" ? 1 : 6);  // a quarter of 24
        expect(opt.paramGroups[0].updateProjGap).toBe(e.key === "grass" ? 50 : 200);
        expect(opt.paramGroups[0].lr).toBeGreaterThan(1e-3);
      } else {
        expect(opt.paramGroups.length).toBe(1);
      }
      opt.dispose();
    }
    model.dispose();
  });

  test("`all` end to end on the CPU: same tokens, finite losses that fall, results.json and loss.svg", async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "charlm-"));
    const dev = device("cpu");
    const keys = OPTIMIZERS.map((o) => o.key).filter((k) => optimizerClass(k));
    const r = await runDemo({
      ...demoDefaults(dev), optimizers: keys, device: dev, steps: 30, batch: 32, hidden: [32, 32], embed: 8,
      evalEvery: 15, logEvery: 15, evalTokens: 256, finalEvalTokens: 512, out, log: () => undefined,
    });
    expect(r.runs.map((x) => x.optimizer)).toEqual(keys);
    for (const run of r.runs) {
      expect(run.tokens).toBe(30 * 32);
      expect(Number.isFinite(run.finalValLoss)).toBe(true);
      expect(run.finalValLoss).toBeLessThan(run.curve[0].val!);
      expect(run.stateBytes).toBeGreaterThan(0);
    }
    // The same initialisation: every run starts from the same validation loss.
    for (const run of r.runs) expect(run.curve[0].val).toBe(r.runs[0].curve[0].val);
    const saved = JSON.parse(fs.readFileSync(path.join(out, "results.json"), "utf8"));
    expect(saved.runs.length).toBe(keys.length);
    const svg = fs.readFileSync(path.join(out, "loss.svg"), "utf8");
    expect((svg.match(/<polyline/g) ?? []).length).toBe(2 * keys.length);
    fs.rmSync(out, { recursive: true, force: true });
  });

  test("an lr grid keeps every run and reports the best of each method", async () => {
    const dev = device("cpu");
    const r = await runDemo({
      ...demoDefaults(dev), optimizers: ["adamw"], lrGrid: [0.25, 4], device: dev, steps: 12, batch: 16, hidden: [16],
      embed: 4, evalEvery: 12, logEvery: 12, evalTokens: 64, finalEvalTokens: 64, log: () => undefined,
    });
    expect(r.sweep!.map((x) => x.lrMultiple)).toEqual([0.25, 4]);
    expect(r.runs.length).toBe(1);
    expect(r.runs[0].finalValLoss).toBe(Math.min(...r.sweep!.map((x) => x.finalValLoss)));
    expect(r.sweep![1].groups[0].lr).toBeCloseTo(4 * r.lr);
  });
});

test("SlimoptError is what the kernels throw", () => {
  expect(() => nn.activation("gelu", zeros([2], cpu), zeros([3], cpu))).toThrow(SlimoptError);
});

test("`slimopt demo` from the command line (dist/, built by npm test): a tiny run, and usage errors", () => {
  const main = path.resolve(__dirname, "..", "dist", "cli", "main.js");
  const run = (args: string[]) => spawnSync(process.execPath, [main, "demo", ...args], { encoding: "utf8", timeout: 240_000 });
  const ok = run(["--device", "cpu", "--optimizer", "adamw,galore", "--steps", "4", "--batch", "8", "--hidden", "8",
                  "--embed", "4", "--eval-every", "2", "--eval-tokens", "16", "--quiet"]);
  expect(ok.status).toBe(0);
  const lines = ok.stdout.trim().split("\n");
  expect(lines.map((l) => l.split(" ")[0])).toEqual(["adamw", "galore"]);
  for (const l of lines) expect(Number.isFinite(Number(l.split(" ")[1]))).toBe(true);
  const bad = run(["--optimizer", "sgd"]);
  expect(bad.status).toBe(2);
  expect(bad.stderr).toMatch(/unknown "sgd"/);
  expect(run(["--hidden", "0"]).status).toBe(2);
  expect(run(["--help"]).stdout).toMatch(/--optimizer/);
});
