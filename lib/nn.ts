// Small network operations for models written with slimopt's tensors (the character-level LM
// example uses them): embedding gather and its deterministic scatter-add, bias add and its
// gradient, activations, softmax cross-entropy. Matmuls go through gemm (lib/linalg.ts). f32
// tensors (indices and targets int32), row-major, all operands on one device; every call checks
// shapes, dtypes and devices first and enqueues on the device's stream.
import { fail } from "./errors";
import { native } from "./native";
import { Tensor } from "./tensor";

export type ActivationKind = "gelu" | "tanh" | "relu";

/** Codes shared with the native side (Activation in cuda/charlm.cuh). */
const ACTIVATION_CODE: Record<ActivationKind, number> = { gelu: 0, tanh: 1, relu: 2 };

function operand(op: string, name: string, t: unknown, dtype: "f32" | "i32"): Tensor {
  if (!(t instanceof Tensor)) fail("E_ARG", `${op}: ${name} is not a Tensor`);
  t.assertLive(`${op} operand ${name}`);
  if (t.dtype !== dtype) fail("E_DTYPE", `${op}: ${name} must be ${dtype}, got ${t.dtype}`);
  return t;
}

function sameDevice(op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.device !== ts[0].device) fail("E_DEVICE", `${op}: operands on different devices (${ts[0].device}, ${t.device})`);
}

function shapeText(t: Tensor): string {
  return `[${t.shape.join(", ")}]`;
}

function activationCode(op: string, kind: unknown): number {
  const code = ACTIVATION_CODE[kind as ActivationKind];
  if (typeof kind !== "string" || code === undefined) fail("E_ARG", `${op}: activation is gelu, tanh or relu, not ${String(kind)}`);
  return code;
}

function flagOption(op: string, name: string, v: unknown): boolean {
  if (v === undefined) return false;
  if (typeof v !== "boolean") fail("E_ARG", `${op}: ${name} must be a boolean`);
  return v;
}

export interface AccumulateOptions {
  /** Add to the gradient instead of overwriting it (default false). */
  accumulate?: boolean;
}

/** out[i, :] = table[indices[i], :]: table [vocab, d]; indices int32 of any shape (n elements);
 *  out holds n rows of d (n·d elements, e.g. [batch, context·d]). An index outside [0, vocab)
 *  reads as a row of zeros (indices may live on the device, so they are not checked here). */
export function embedding(table: Tensor, indices: Tensor, out: Tensor): void {
  const op = "embedding";
  operand(op, "table", table, "f32");
  operand(op, "indices", indices, "i32");
  operand(op, "out", out, "f32");
  sameDevice(op, table, indices, out);
  if (table.shape.length !== 2) fail("E_SHAPE", `${op}: table must be 2-D [vocab, d], got ${shapeText(table)}`);
  const [vocab, d] = table.shape;
  if (out.numel !== indices.numel * d)
    fail("E_SHAPE", `${op}: ${indices.numel} indices of rows of ${d} need ${indices.numel * d} outputs, out is ${shapeText(out)}`);
  native().charlmEmbedding(table.handle, vocab, d, indices.handle, indices.numel, out.handle);
}

/** dTable[v, :] = Σ dOut[i, :] over the i with indices[i] == v (summed in index order, so the
 *  result is deterministic); rows no index names get 0 (or keep their value with accumulate). */
export function embeddingBackward(dOut: Tensor, indices: Tensor, dTable: Tensor, o: AccumulateOptions = {}): void {
  const op = "embeddingBackward";
  operand(op, "dOut", dOut, "f32");
  operand(op, "indices", indices, "i32");
  operand(op, "dTable", dTable, "f32");
  sameDevice(op, dOut, indices, dTable);
  const accumulate = flagOption(op, "accumulate", o.accumulate);
  if (dTable.shape.length !== 2) fail("E_SHAPE", `${op}: dTable must be 2-D [vocab, d], got ${shapeText(dTable)}`);
  const [vocab, d] = dTable.shape;
  if (dOut.numel !== indices.numel * d)
    fail("E_SHAPE", `${op}: ${indices.numel} indices of rows of ${d} need ${indices.numel * d} gradients, dOut is ${shapeText(dOut)}`);
  if (d > 8192) fail("E_SHAPE", `${op}: rows wider than 8192 are not supported (d = ${d})`);
  native().charlmEmbeddingBackward(dOut.handle, indices.handle, indices.numel, dTable.handle, vocab, d, accumulate);
}

function biasShape(op: string, x: Tensor, bias: Tensor, xName: string, biasName: string): [number, number] {
  if (bias.shape.length !== 1) fail("E_SHAPE", `${op}: ${biasName} must be 1-D, got ${shapeText(bias)}`);
  const cols = bias.shape[0];
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== cols)
    fail("E_SHAPE", `${op}: the last dimension of ${xName} ${shapeText(x)} must be ${cols}, the size of ${biasName}`);
  return [cols === 0 ? 0 : x.numel / cols, cols];
}

/** x[..., c] += bias[c], in place. */
export function addBias(x: Tensor, bias: Tensor): void {
  const op = "addBias";
  operand(op, "x", x, "f32");
  operand(op, "bias", bias, "f32");
  sameDevice(op, x, bias);
  const [rows, cols] = biasShape(op, x, bias, "x", "bias");
  native().charlmBiasAdd(x.handle, bias.handle, rows, cols);
}

/** dBias[c] = Σ over rows of dy[..., c] (summed in row order). */
export function biasGrad(dy: Tensor, dBias: Tensor, o: AccumulateOptions = {}): void {
  const op = "biasGrad";
  operand(op, "dy", dy, "f32");
  operand(op, "dBias", dBias, "f32");
  sameDevice(op, dy, dBias);
  const accumulate = flagOption(op, "accumulate", o.accumulate);
  const [rows, cols] = biasShape(op, dy, dBias, "dy", "dBias");
  native().charlmBiasGrad(dy.handle, rows, cols, dBias.handle, accumulate);
}

function sameShape(op: string, a: Tensor, b: Tensor, an: string, bn: string): void {
  if (a.shape.length !== b.shape.length || a.shape.some((s, i) => s !== b.shape[i]))
    fail("E_SHAPE", `${op}: ${bn} ${shapeText(b)} must have the shape of ${an} ${shapeText(a)}`);
}

/** y = act(x) element-wise (y may be x). gelu is the tanh approximation. */
export function activation(kind: ActivationKind, x: Tensor, y: Tensor): void {
  const op = "activation";
  const code = activationCode(op, kind);
  operand(op, "x", x, "f32");
  operand(op, "y", y, "f32");
  sameDevice(op, x, y);
  sameShape(op, x, y, "x", "y");
  native().charlmActivation(code, x.handle, y.handle, x.numel);
}

/** dx = dy · act'(x) element-wise, x being the activation's input (dx may be dy). */
export function activationBackward(kind: ActivationKind, x: Tensor, dy: Tensor, dx: Tensor): void {
  const op = "activationBackward";
  const code = activationCode(op, kind);
  operand(op, "x", x, "f32");
  operand(op, "dy", dy, "f32");
  operand(op, "dx", dx, "f32");
  sameDevice(op, x, dy, dx);
  sameShape(op, x, dy, "x", "dy");
  sameShape(op, x, dx, "x", "dx");
  native().charlmActivationBackward(code, x.handle, dy.handle, dx.handle, x.numel);
}

export interface CrossEntropyOptions {
  /** "mean" (default) or "sum" over the rows: what `loss` holds, and the scale of dLogits. */
  reduction?: "mean" | "sum";
  /** Also write the gradient of the loss with respect to the logits here (may be `logits`). */
  dLogits?: Tensor;
  /** Per-row losses [rows] (scratch the call needs; allocated for the call when not given). */
  rowLosses?: Tensor;
}

/** Softmax cross-entropy of logits [rows, vocab] against int32 targets (rows of them): loss (one
 *  element) = mean (or sum) over rows of logsumexp(logits[r]) − logits[r, target[r]]. A target
 *  outside [0, vocab) makes its row's loss NaN (and its gradient row 0). */
export function crossEntropy(logits: Tensor, targets: Tensor, loss: Tensor, o: CrossEntropyOptions = {}): void {
  const op = "crossEntropy";
  operand(op, "logits", logits, "f32");
  operand(op, "targets", targets, "i32");
  operand(op, "loss", loss, "f32");
  const all = [logits, targets, loss];
  if (o.dLogits !== undefined) all.push(operand(op, "dLogits", o.dLogits, "f32"));
  if (o.rowLosses !== undefined) all.push(operand(op, "rowLosses", o.rowLosses, "f32"));
  sameDevice(op, ...all);
  const reduction = o.reduction ?? "mean";
  if (reduction !== "mean" && reduction !== "sum") fail("E_ARG", `${op}: reduction is mean or sum, not ${String(reduction)}`);
  if (logits.shape.length !== 2) fail("E_SHAPE", `${op}: logits must be 2-D [rows, vocab], got ${shapeText(logits)}`);
  const [rows, vocab] = logits.shape;
  if (vocab === 0) fail("E_SHAPE", `${op}: logits have no classes ${shapeText(logits)}`);
  if (targets.numel !== rows) fail("E_SHAPE", `${op}: ${rows} rows of logits need ${rows} targets, got ${shapeText(targets)}`);
  if (loss.numel !== 1) fail("E_SHAPE", `${op}: loss must hold one element, got ${shapeText(loss)}`);
  if (o.dLogits !== undefined) sameShape(op, logits, o.dLogits, "logits", "dLogits");
  if (o.rowLosses !== undefined && o.rowLosses.numel !== rows)
    fail("E_SHAPE", `${op}: rowLosses must hold ${rows} elements, got ${shapeText(o.rowLosses)}`);
  if (o.rowLosses !== undefined && o.rowLosses.handle === loss.handle) fail("E_ARG", `${op}: rowLosses and loss must differ`);
  const scale = reduction === "mean" && rows > 0 ? 1 / rows : 1;
  const scratch = o.rowLosses ?? Tensor.empty([Math.max(rows, 1)], "f32", logits.device);
  try {
    native().charlmCrossEntropy(logits.handle, targets.handle, rows, vocab, scratch.handle, loss.handle, scale,
                                o.dLogits ? o.dLogits.handle : null, scale);
  } finally {
    if (scratch !== o.rowLosses) scratch.dispose();
  }
}
