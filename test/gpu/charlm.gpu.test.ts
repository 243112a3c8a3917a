// The small network kernels on CUDA against the CPU backend on the same inputs, and a few training
// steps of the character-level LM example on both (strict f32 GEMMs): the same losses. Skipped
// where no CUDA device exists.
import { nn, devices, tensor, Tensor, zeros, device, AdamW } from "../../lib";
import { CharMLP } from "../../lib/demo/charlm/model";
import { demoDefaults, OPTIMIZERS, optimizerClass, runDemo } from "../../lib/demo/charlm/train";
import { relErr, Rng } from "../reference";
import { expectCode } from "../helpers";

const hasCuda = devices().length > 1;
const suite = hasCuda ? describe : describe.skip;

function ints(rng: Rng, n: number, lo: number, hi: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (rng.u32() % (hi - lo));
  return a;
}
const on = (dev: string, data: Float32Array | Int32Array, shape: number[]) => tensor(data, shape, { device: dev });
const nanOn = (dev: string, shape: number[]) => on(dev, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(NaN), shape);
const read = (t: Tensor) => t.toFloat32Array();

suite("nn kernels: CUDA against the CPU backend", () => {
  test("embedding forward (exact) and backward (bit-identical: same summation order)", async () => {
    const rng = new Rng(11);
    for (const [V, d, n] of [[1, 1, 1], [72, 32, 8192], [300, 520, 4097], [13, 7, 1025], [5, 257, 3000]]) {
      const table = rng.normals(V * d), dOut = rng.normals(n * d), prior = rng.normals(V * d);
      const idx = ints(rng, n, 0, V);
      if (n > 3) { idx[2] = -1; idx[n - 2] = V + 4; }
      const outs: Float32Array[] = [], grads: Float32Array[] = [], accs: Float32Array[] = [];
      for (const dev of ["cpu", "cuda"]) {
        const out = nanOn(dev, [n, d]);
        const it = on(dev, idx, [n]);
        nn.embedding(on(dev, table, [V, d]), it, out);
        outs.push(await read(out));
        const dt = nanOn(dev, [V, d]);
        nn.embeddingBackward(on(dev, dOut, [n, d]), it, dt);
        grads.push(await read(dt));
        const da = on(dev, prior, [V, d]);
        nn.embeddingBackward(on(dev, dOut, [n, d]), it, da, { accumulate: true });
        accs.push(await read(da));
      }
      expect(Array.from(outs[1])).toEqual(Array.from(outs[0]));
      expect(Array.from(grads[1])).toEqual(Array.from(grads[0]));
      expect(Array.from(accs[1])).toEqual(Array.from(accs[0]));
    }
  });

  test("addBias (exact), biasGrad (bit-identical), activations", async () => {
    const rng = new Rng(12);
    for (const [rows, cols] of [[1, 1], [512, 1024], [33, 257], [4097, 7]]) {
      const x = rng.normals(rows * cols, 2), b = rng.normals(cols), dy = rng.normals(rows * cols), prior = rng.normals(cols);
      const res: Record<string, Float32Array[]> = {};
      const put = (k: string, v: Float32Array) => { (res[k] ??= []).push(v); };
      for (const dev of ["cpu", "cuda"]) {
        const xt = on(dev, x, [rows, cols]);
        nn.addBias(xt, on(dev, b, [cols]));
        put("bias", await read(xt));
        const db = nanOn(dev, [cols]);
        nn.biasGrad(on(dev, dy, [rows, cols]), db);
        put("biasGrad", await read(db));
        const da = on(dev, prior, [cols]);
        nn.biasGrad(on(dev, dy, [rows, cols]), da, { accumulate: true });
        put("biasGradAcc", await read(da));
        for (const kind of ["gelu", "tanh", "relu"] as nn.ActivationKind[]) {
          const y = nanOn(dev, [rows, cols]);
          nn.activation(kind, on(dev, x, [rows, cols]), y);
          put(`act-${kind}`, await read(y));
          const dx = on(dev, dy, [rows, cols]);
          nn.activationBackward(kind, on(dev, x, [rows, cols]), dx, dx);
          put(`dact-${kind}`, await read(dx));
        }
      }
      for (const k of ["bias", "biasGrad", "biasGradAcc", "act-relu", "dact-relu"])
        expect({ k, same: Array.from(res[k][1]).every((v, i) => Object.is(v, res[k][0][i])) }).toEqual({ k, same: true });
      for (const k of ["act-gelu", "dact-gelu", "act-tanh", "dact-tanh"])
        expect({ k, err: relErr(res[k][1], res[k][0]) < 1e-6 }).toEqual({ k, err: true });
    }
  });

  test("softmax cross-entropy: loss, row losses, dLogits (also in place)", async () => {
    const rng = new Rng(13);
    for (const [rows, V] of [[1, 1], [512, 72], [4097, 1000], [3, 257]]) {
      const z = rng.normals(rows * V, 3);
      const t = ints(rng, rows, 0, V);
      for (const reduction of ["mean", "sum"] as const) {
        const got: Float32Array[][] = [];
        for (const dev of ["cpu", "cuda"]) {
          const loss = nanOn(dev, [1]), rl = nanOn(dev, [rows]), dl = nanOn(dev, [rows, V]);
          const logits = on(dev, z, [rows, V]);
          nn.crossEntropy(logits, on(dev, t, [rows]), loss, { reduction, rowLosses: rl, dLogits: dl });
          const loss2 = nanOn(dev, [1]);
          nn.crossEntropy(logits, on(dev, t, [rows]), loss2, { reduction, dLogits: logits });
          got.push([await read(loss), await read(rl), await read(dl), await read(logits), await read(loss2)]);
        }
        for (let k = 0; k < 5; k++) expect(relErr(got[1][k], got[0][k])).toBeLessThan(1e-5);
      }
    }
    // A bad target: NaN row loss, zero gradient row, on the device too.
    const rl = zeros([2], { device: "cuda" }), dl = nanOn("cuda", [2, 4]);
    nn.crossEntropy(on("cuda", rng.normals(8), [2, 4]), on("cuda", Int32Array.from([9, 1]), [2]), zeros([1], { device: "cuda" }),
                    { rowLosses: rl, dLogits: dl });
    const r = await read(rl);
    expect(Number.isNaN(r[0]) && Number.isFinite(r[1])).toBe(true);
    expect(Array.from((await read(dl)).subarray(0, 4))).toEqual([0, 0, 0, 0]);
  });

  test("operands on different devices are refused", async () => {
    const table = on("cuda", new Float32Array(12).fill(1), [4, 3]);
    const out = on("cuda", new Float32Array(6).fill(5), [2, 3]);
    expectCode(() => nn.embedding(table, on("cpu", Int32Array.from([0, 1]), [2]), out), "E_DEVICE");
    expect(Array.from(await read(out))).toEqual([5, 5, 5, 5, 5, 5]);
  });
});

suite("CharMLP trains the same on CUDA and on the CPU", () => {
  test("gradients and 8 AdamW steps agree (strict f32 GEMMs)", async () => {
    const rng = new Rng(14);
    const V = 72, context = 16, batch = 256;
    // Learnable data: the target is the last character of the context.
    const batches = Array.from({ length: 8 }, () => {
      const x = ints(rng, batch * context, 0, V);
      return [x, Int32Array.from({ length: batch }, (_, b) => x[b * context + context - 1])] as const;
    });
    const losses: number[][] = [], grads: Float32Array[][] = [];
    for (const dev of ["cpu", "cuda"]) {
      const model = new CharMLP({ vocab: V, context, embed: 8, hidden: [96, 80], activation: "gelu" }, { device: dev, seed: 5, precision: "f32" });
      const opt = new AdamW(model.parameters(), { lr: 3e-3, weightDecay: 0 });
      const ls: number[] = [];
      for (const [i, [xi, yi]] of batches.entries()) {
        const loss = model.forward(on(dev, xi, [batch, context]), on(dev, yi, [batch]), { backward: true });
        ls.push((await loss.toFloat32Array())[0]);
        if (i === 0) grads.push(await Promise.all(model.parameters().map((p) => p.grad.toFloat32Array())));
        opt.step();
      }
      await device(dev).synchronize();
      losses.push(ls);
      opt.dispose();
      model.dispose();
    }
    grads[0].forEach((g, k) => expect(relErr(grads[1][k], g)).toBeLessThan(1e-4));
    // Step 0 is the same computation; later steps go through Adam, whose m/sqrt(v) turns rounding
    // differences of near-zero gradients into full-size steps, so they agree less tightly.
    losses[0].forEach((l, i) => expect(Math.abs(losses[1][i] - l) / l).toBeLessThan(i === 0 ? 1e-5 : 1e-3));
    expect(losses[0][7]).toBeLessThan(losses[0][0]);
  });
});

suite("the demo on CUDA", () => {
  test("every optimizer of this build runs a short `all` on the GPU: finite, falling losses", async () => {
    const dev = device("cuda");
    const keys = OPTIMIZERS.map((o) => o.key).filter((k) => optimizerClass(k));
    const r = await runDemo({
      ...demoDefaults(dev), optimizers: keys, device: dev, steps: 60, batch: 128, hidden: [128, 96], embed: 8,
      evalEvery: 30, logEvery: 30, evalTokens: 1024, finalEvalTokens: 2048, log: () => undefined,
    });
    for (const run of r.runs) {
      expect({ k: run.optimizer, ok: Number.isFinite(run.finalValLoss) && run.finalValLoss < run.curve[0].val! })
        .toEqual({ k: run.optimizer, ok: true });
      expect(run.curve[0].val).toBe(r.runs[0].curve[0].val);  // same initialisation
    }
  });
});
