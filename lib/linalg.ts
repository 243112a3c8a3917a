// The GEMM layer as tensors see it (tests, benchmarks), and the choice of linear-algebra path.
import { DTYPE_CODE } from "./dtype";
import { fail } from "./errors";
import { native } from "./native";
import { Tensor } from "./tensor";

export interface GemmOptions {
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
  /** GPU precision: "tf32" (tensor cores, default), "f32" (strict) or "bf16" (operands rounded to
   *  bf16 on the tensor cores, f32 accumulation). The CPU is always f32. */
  precision?: GemmPrecision;
}

export type GemmPrecision = "tf32" | "f32" | "bf16";
/** The native GemmMode of each precision (cuda/galore.cuh). */
export const GEMM_MODE: Record<GemmPrecision, number> = { tf32: 0, f32: 1, bf16: 2 };
export function isGemmPrecision(p: unknown): p is GemmPrecision {
  return typeof p === "string" && Object.prototype.hasOwnProperty.call(GEMM_MODE, p);
}

/** c = alpha * op(a) op(b) + beta * c, row-major 2-D tensors on one device. */
export function gemm(a: Tensor, b: Tensor, c: Tensor, o: GemmOptions = {}): void {
  const call = gemmCall(a, b, c, o);
  native().gemm(...call);
}

/** @internal gemm(a, b, c, options) of each product in order, on one device, every one checked
 *  before any runs. On Hopper the project-back products the streaming kernel serves go out up to
 *  32 to a launch (one pipeline fill and drain for all; products that share memory with a later
 *  one's output are kept apart), with the same results as one call each. */
export function gemmMany(calls: { a: Tensor; b: Tensor; c: Tensor; options?: GemmOptions }[]): void {
  if (!Array.isArray(calls)) fail("E_ARG", "gemmMany: calls must be an array");
  // Products on different devices: E_DEVICE from the native call, which checks every operand.
  native().gemmMany(calls.map((x) => gemmCall(x?.a, x?.b, x?.c, x?.options ?? {})));
}

type GemmCallArgs = Parameters<ReturnType<typeof native>["gemm"]>;

function gemmCall(a: Tensor, b: Tensor, c: Tensor, o: GemmOptions): GemmCallArgs {
  for (const [t, n] of [[a, "a"], [b, "b"], [c, "c"]] as [Tensor, string][]) {
    if (!(t instanceof Tensor)) fail("E_ARG", `gemm: ${n} is not a Tensor`);
    t.assertLive(`gemm operand ${n}`);
    if (t.shape.length !== 2) fail("E_SHAPE", `gemm: ${n} must be 2-D, got [${t.shape}]`);
  }
  if (a.device !== b.device || a.device !== c.device) fail("E_DEVICE", "gemm: operands on different devices");
  const [m, k] = o.transA ? [a.shape[1], a.shape[0]] : [a.shape[0], a.shape[1]];
  const [k2, n] = o.transB ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
  if (k !== k2 || c.shape[0] !== m || c.shape[1] !== n)
    fail("E_SHAPE", `gemm: [${m}x${k}] times [${k2}x${n}] into [${c.shape}]`);
  const alpha = o.alpha ?? 1, beta = o.beta ?? 0;
  if (!Number.isFinite(alpha) || !Number.isFinite(beta)) fail("E_ARG", "gemm: alpha and beta must be finite");
  if (o.precision !== undefined && !isGemmPrecision(o.precision)) fail("E_ARG", "gemm: precision is tf32, f32 or bf16");
  return [a.handle, DTYPE_CODE[a.dtype], b.handle, DTYPE_CODE[b.dtype], c.handle, DTYPE_CODE[c.dtype], {
    m, n, k, transA: !!o.transA, transB: !!o.transB, alpha, beta, mode: GEMM_MODE[o.precision ?? "tf32"],
  }];
}

/** Forces the built-in CUDA kernels even where cuBLAS/cuSOLVER load (as SLIMOPT_LINALG=builtin). */
export function setBuiltinLinalg(force: boolean): void {
  native().setForceBuiltin(!!force);
}

/** @internal For comparisons: off, the short-K products with C read back that the streaming
 *  tensor-core kernel serves by default (GaLore's project-back at rank <= 128 on the built-in
 *  path) go to the tile kernel (built-in path) or cuBLAS instead. */
export function setStreamGemm(on: boolean): void {
  native().setStreamGemm(!!on);
}

/** @internal Which streaming kernel serves CUDA device `index`: "wgmma" (sm_90a, on both paths),
 *  "mma.sync" (built-in path only), "off" (setStreamGemm(false)) or "none". */
export function streamGemmKernel(index: number): string {
  return native().streamGemmKernel(index);
}

/** Which GEMM and eigen-solver paths serve CUDA devices now (streamGemm: on the built-in path the
 *  streaming kernel serves the products it fits). */
export function linalgPaths(): { blas: string; solver: string; forceBuiltin: boolean; streamGemm: boolean } {
  return native().linalgInfo();
}

let builtinNoticeShown = false;

/** Tells once per process, as a process warning, that cuBLAS or cuSOLVER did not load and the
 *  built-in CUDA kernels serve instead (correct, slower). Optimizers that run GEMMs or the SVD
 *  refresh on a CUDA device call it when they are created; nothing is said for the CPU or when
 *  the built-in path was asked for (SLIMOPT_LINALG=builtin, setBuiltinLinalg). */
export function noticeBuiltinLinalg(dev: { kind: string }): void {
  if (builtinNoticeShown || dev.kind !== "cuda") return;
  const l = native().linalgInfo();
  if (l.forceBuiltin) return;
  // The path texts come from cuda/galore.cu blasPath() and cuda/galore_refresh.cu solverPath().
  const missing = [l.blas.startsWith("cuBLAS") ? "" : "cuBLAS (libcublas.so.13 or .12)",
                   l.solver.startsWith("cuSOLVER") ? "" : "cuSOLVER (libcusolver.so.12 or .11)"].filter((s) => s);
  if (missing.length === 0) return;
  builtinNoticeShown = true;
  process.emitWarning(
    `${missing.join(" and ")} not found: slimopt's built-in CUDA kernels serve instead (same results, slower ` +
    "GEMMs and projector refreshes). For the fast path install the CUDA math libraries where the dynamic loader " +
    "finds them, or point SLIMOPT_CUBLAS / SLIMOPT_CUSOLVER at the .so files; `npx slimopt info` shows the path in use.",
    { code: "SLIMOPT_BUILTIN_LINALG" });
}
