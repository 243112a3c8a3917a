// A Bengio-style MLP language model over characters, written with slimopt's tensors: the last
// `context` characters -> embedding rows (vocab x embed), concatenated -> hidden layers
// (Linear + activation) -> logits (vocab) -> softmax cross-entropy. Forward and backward are
// gemm calls plus the small kernels of lib/nn.ts; every buffer is allocated once per batch size.
// Weights follow torch's Linear layout, [out, in], so the hidden weights are the 2-D matrices the
// projection optimizers (GaLore, APOLLO, Grass) work on.
import { Device, device as resolveDevice } from "../../device";
import { fail } from "../../errors";
import { gemm } from "../../linalg";
import * as nn from "../../nn";
import { Parameter } from "../../parameter";
import { randn, Tensor, zeros } from "../../tensor";

export interface CharModelConfig {
  vocab: number;
  /** Characters of context per prediction. */
  context: number;
  /** Embedding width per character. */
  embed: number;
  /** Width of each hidden layer. */
  hidden: number[];
  activation: nn.ActivationKind;
}

export interface CharModelOptions {
  device?: string | Device;
  /** Initialisation key: the same seed gives the same weights on every device. */
  seed?: number;
  /** GPU GEMM precision (the CPU is always f32). */
  precision?: "tf32" | "f32";
}

interface Buffers {
  batch: number;
  x0: Tensor;          // [B, context*embed] concatenated embeddings
  z: Tensor[];         // [B, H_i] pre-activations
  h: Tensor[];         // [B, H_i] activations
  logits: Tensor;      // [B, V]; overwritten by dLogits in a backward pass
  rowLosses: Tensor;   // [B]
  loss: Tensor;        // [1]
  dx0?: Tensor;        // [B, context*embed]
  dh?: Tensor[];       // [B, H_i], turned into dz in place
}

export class CharMLP {
  readonly config: CharModelConfig;
  readonly device: Device;
  readonly precision: "tf32" | "f32";
  readonly embedding: Parameter;
  readonly weights: Parameter[];
  readonly biases: Parameter[];
  readonly outWeight: Parameter;
  readonly outBias: Parameter;
  private buffers?: Buffers;

  constructor(config: CharModelConfig, o: CharModelOptions = {}) {
    const { vocab, context, embed, hidden } = config;
    for (const [name, v] of [["vocab", vocab], ["context", context], ["embed", embed]] as [string, number][])
      if (!Number.isSafeInteger(v) || v < 1) fail("E_ARG", `CharMLP: ${name} must be a positive integer, got ${v}`);
    if (!Array.isArray(hidden) || hidden.length === 0 || hidden.some((h) => !Number.isSafeInteger(h) || h < 1))
      fail("E_ARG", `CharMLP: hidden must list positive layer widths, got ${String(hidden)}`);
    this.config = { ...config, hidden: [...hidden] };
    this.device = resolveDevice(o.device);
    this.precision = o.precision ?? "tf32";
    const seed = o.seed ?? 0;
    let k = 0;
    // Each tensor gets its own generator key (and parameter seed, for methods that draw per parameter).
    const make = (shape: number[], std: number, name: string): Parameter => {
      const key = seed * 64 + k++;
      const data = std === 0 ? zeros(shape, { device: this.device }) : randn(shape, { device: this.device, seed: key, std });
      return new Parameter(data, { name, seed: key });
    };
    this.embedding = make([vocab, embed], 1, "embedding");
    this.weights = [];
    this.biases = [];
    let fanIn = context * embed;
    hidden.forEach((width, i) => {
      this.weights.push(make([width, fanIn], 1 / Math.sqrt(fanIn), `hidden${i}.weight`));
      this.biases.push(make([width], 0, `hidden${i}.bias`));
      fanIn = width;
    });
    this.outWeight = make([vocab, fanIn], 1 / Math.sqrt(fanIn), "out.weight");
    this.outBias = make([vocab], 0, "out.bias");
  }

  /** Every parameter: embedding, hidden weights and biases, output weight and bias. */
  parameters(): Parameter[] {
    return [this.embedding, ...this.weights, ...this.biases, this.outWeight, this.outBias];
  }

  /** The 2-D hidden weights (what the projection methods project). */
  hiddenWeights(): Parameter[] {
    return [...this.weights];
  }

  /** Everything else: embedding, biases, output layer (plain Adam in the projection methods). */
  otherParameters(): Parameter[] {
    return [this.embedding, ...this.biases, this.outWeight, this.outBias];
  }

  numel(): number {
    return this.parameters().reduce((s, p) => s + p.numel, 0);
  }

  private buffersFor(batch: number, backward: boolean): Buffers {
    if (this.buffers && this.buffers.batch !== batch) this.disposeBuffers();
    const dev = this.device;
    const { context, embed, hidden, vocab } = this.config;
    const mk = (shape: number[]) => zeros(shape, { device: dev });
    if (!this.buffers) {
      this.buffers = {
        batch, x0: mk([batch, context * embed]), z: hidden.map((h) => mk([batch, h])), h: hidden.map((h) => mk([batch, h])),
        logits: mk([batch, vocab]), rowLosses: mk([Math.max(batch, 1)]), loss: mk([1, 1]),
      };
    }
    if (backward && !this.buffers.dx0) {
      this.buffers.dx0 = mk([batch, context * embed]);
      this.buffers.dh = hidden.map((h) => mk([batch, h]));
    }
    return this.buffers;
  }

  /** The loss (mean over the batch, or sum) of predicting targets [B] from indices [B, context]
   *  (int32 tensors on the model's device). With backward, every parameter's grad is overwritten
   *  with the loss's gradient. Returns the model's loss tensor [1] (valid until the next call). */
  forward(indices: Tensor, targets: Tensor, o: { backward?: boolean; reduction?: "mean" | "sum" } = {}): Tensor {
    const { context, activation } = this.config;
    if (indices.shape.length !== 2 || indices.shape[1] !== context)
      fail("E_SHAPE", `CharMLP: indices must be [batch, ${context}], got [${indices.shape.join(", ")}]`);
    const batch = indices.shape[0];
    if (targets.numel !== batch) fail("E_SHAPE", `CharMLP: ${batch} rows need ${batch} targets, got ${targets.numel}`);
    const backward = o.backward ?? false;
    const b = this.buffersFor(batch, backward);
    const precision = this.precision;

    nn.embedding(this.embedding.data, indices, b.x0);
    let input = b.x0;
    this.weights.forEach((w, i) => {
      gemm(input, w.data, b.z[i], { transB: true, precision });
      nn.addBias(b.z[i], this.biases[i].data);
      nn.activation(activation, b.z[i], b.h[i]);
      input = b.h[i];
    });
    gemm(input, this.outWeight.data, b.logits, { transB: true, precision });
    nn.addBias(b.logits, this.outBias.data);
    nn.crossEntropy(b.logits, targets, b.loss, {
      reduction: o.reduction ?? "mean", rowLosses: b.rowLosses, dLogits: backward ? b.logits : undefined,
    });
    if (!backward) return b.loss;

    const dLogits = b.logits;
    const dh = b.dh!;
    const last = this.weights.length - 1;
    gemm(dLogits, b.h[last], this.outWeight.grad, { transA: true, precision });
    nn.biasGrad(dLogits, this.outBias.grad);
    gemm(dLogits, this.outWeight.data, dh[last], { precision });
    for (let i = last; i >= 0; i--) {
      nn.activationBackward(activation, b.z[i], dh[i], dh[i]);  // dh[i] now holds dz
      const layerInput = i === 0 ? b.x0 : b.h[i - 1];
      gemm(dh[i], layerInput, this.weights[i].grad, { transA: true, precision });
      nn.biasGrad(dh[i], this.biases[i].grad);
      gemm(dh[i], this.weights[i].data, i === 0 ? b.dx0! : dh[i - 1], { precision });
    }
    nn.embeddingBackward(b.dx0!, indices, this.embedding.grad);
    return b.loss;
  }

  private disposeBuffers(): void {
    const b = this.buffers;
    if (!b) return;
    for (const t of [b.x0, ...b.z, ...b.h, b.logits, b.rowLosses, b.loss, b.dx0, ...(b.dh ?? [])]) t?.dispose();
    this.buffers = undefined;
  }

  dispose(): void {
    this.disposeBuffers();
    for (const p of this.parameters()) p.dispose();
  }
}
