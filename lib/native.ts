// Loads the addon: a local build wins over the prebuilt binary shipped in the package.
import * as fs from "fs";
import * as path from "path";
import { SlimoptError } from "./errors";

/* eslint-disable @typescript-eslint/no-explicit-any */
export interface NativeBufferHandle {
  readonly ptr: bigint;
  readonly bytes: number;
  readonly device: number;
  readonly disposed: boolean;
  readonly owned: boolean;
  dispose(): void;
}

export interface AdamwStepArgs {
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number;
  convention: number; stochasticRounding: boolean; skipNonFinite: boolean; seed: bigint;
}

export interface AdamwGroupHandle {
  step(h: AdamwStepArgs): void;
  dispose(): void;
}

export interface GrassStepArgs {
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; scale: number;
  skipNonFinite: boolean; refreshing: boolean; select: number; keepState: boolean; refreshIndex: number;
}

export interface GrassGroupHandle {
  step(h: GrassStepArgs, grads: NativeBufferHandle[], compacts: (NativeBufferHandle | null)[]): void;
  /** Bytes of the native workspace (refresh scratch, per-slot step sizes, device tensor lists). */
  workspaceBytes(): number;
  dispose(): void;
}

/** A validated code map with its finder table (csrc/quant_map.cc). */
export interface QuantMapHandle {
  readonly size: number;
  readonly tableBytes: number;
}

export interface QAdamStepArgs {
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number;
  stochasticRounding: boolean; skipNonFinite: boolean; seed: bigint;
}

export interface QAdamGroupHandle {
  step(h: QAdamStepArgs): void;
  dispose(): void;
}

export interface NativeAddon {
  setErrorClass(c: unknown): void;
  buildInfo(): { cudaCompiled: boolean; cudaArchs: string; buildFlags: string; napiVersion: number };
  deviceCount(): { count: number; why: string };
  deviceProps(dev: number): {
    name: string; major: number; minor: number; totalMemory: number; multiprocessors: number;
    l2Bytes: number; driverVersion: number; runtimeVersion: number;
  };
  memInfo(dev: number): { free: number; total: number };
  stream(dev: number): bigint;
  lostReason(dev: number): string | null;
  synchronize(dev: number): Promise<void>;
  NativeBuffer: new (device: number, bytes: number, ptr?: bigint) => NativeBufferHandle;
  writeRaw(buf: NativeBufferHandle, byteOffset: number, src: ArrayBufferView): void;
  writeFloat(buf: NativeBufferHandle, dtype: number, src: Float32Array): void;
  readFloat(buf: NativeBufferHandle, dtype: number, n: number): Promise<Float32Array>;
  readRaw(buf: NativeBufferHandle, dtype: number, n: number): Promise<ArrayBuffer>;
  copyBuffer(dst: NativeBufferHandle, src: NativeBufferHandle, bytes: number): void;
  convertBuffer(dst: NativeBufferHandle, dstType: number, src: NativeBufferHandle, srcType: number, n: number): void;
  fillRandn(buf: NativeBufferHandle, dtype: number, n: number, seed: bigint, mean: number, std: number): void;
  fillZero(buf: NativeBufferHandle, bytes: number): void;
  AdamwGroup: new (device: number, tensors: unknown[][], counters: NativeBufferHandle, stateDtype: number,
                   chunkSize: number) => AdamwGroupHandle;
  gemm(a: NativeBufferHandle, aType: number, b: NativeBufferHandle, bType: number, c: NativeBufferHandle, cType: number,
       o: { m: number; n: number; k: number; transA: boolean; transB: boolean; alpha: number; beta: number; mode: number }): void;
  gemmMany(calls: [NativeBufferHandle, number, NativeBufferHandle, number, NativeBufferHandle, number,
                   { m: number; n: number; k: number; transA: boolean; transB: boolean; alpha: number; beta: number; mode: number }][]): void;
  galoreScan(flag: NativeBufferHandle, grads: [NativeBufferHandle, number, number][]): void;
  /** CUDA: Adam on each entry's R in place ([R, m, v, numel], f32 states) in one launch, and the
   *  epilogue scalars; galoreStep with adamDone then projects back only. */
  galoreAdamMany(entries: [NativeBufferHandle, NativeBufferHandle, NativeBufferHandle, number][], counters: NativeBufferHandle,
                 flag: NativeBufferHandle, scalars: NativeBufferHandle,
                 h: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; scale: number; mode: number }): void;
  /** CUDA: the project-back of one-sided f32 parameters ([W, P, N, side, rows, cols, rank]) whose
   *  N galoreAdamMany wrote, with its scalars; nothing when the flag is set. sT (f32, rank x cols of
   *  each entry of rank <= galoreBackTransposeMaxRank, or null): B transposed there for cuBLAS. */
  galoreBackMany(entries: [NativeBufferHandle, NativeBufferHandle, NativeBufferHandle, number, number, number, number][],
                 flag: NativeBufferHandle, scalars: NativeBufferHandle, mode: number, sT?: NativeBufferHandle | null): void;
  galoreRefresh(g: NativeBufferHandle, gType: number, rows: number, cols: number, rank: number, left: boolean,
                p: NativeBufferHandle, hasPrev: boolean, flag: NativeBufferHandle, method?: number, mode?: number,
                ws?: NativeBufferHandle | null, xScratch?: NativeBufferHandle | null): void;
  /** galoreRefresh (hasPrev) of every entry [G (f32), gType, rows, cols, rank, left, P, flag, method,
   *  mode] (CUDA), as many at once as workspaces are given (1-4, the first the largest). */
  galoreRefreshMany(entries: [NativeBufferHandle, number, number, number, number, boolean, NativeBufferHandle, NativeBufferHandle, number, number][],
                    ws: NativeBufferHandle[]): void;
  /** The largest rank whose one-sided project-back takes B transposed through sT on CUDA (with
   *  cuBLAS; cuda/launchers.h kBackTransposeMaxRank). */
  readonly galoreBackTransposeMaxRank: number;
  galoreRefreshWorkspace(onDevice: NativeBufferHandle, rows: number, cols: number, rank: number, left: boolean,
                         method: number): number;
  galoreStep(w: NativeBufferHandle, wType: number, g: NativeBufferHandle, gType: number, m: NativeBufferHandle,
             v: NativeBufferHandle, pa: NativeBufferHandle, pb: NativeBufferHandle | null, side: number, rows: number,
             cols: number, rank: number, counters: NativeBufferHandle, flag: NativeBufferHandle, sR: NativeBufferHandle,
             sT: NativeBufferHandle | null, sBig: NativeBufferHandle | null, scalars: NativeBufferHandle | null,
             h: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; scale: number; mode: number },
             projected: NativeBufferHandle | null, ...q8: unknown[]): void;
  galoreProject(g: NativeBufferHandle, gType: number, pa: NativeBufferHandle, pb: NativeBufferHandle | null, side: number,
                rows: number, cols: number, rank: number, out: NativeBufferHandle, sT: NativeBufferHandle | null,
                sBig: NativeBufferHandle | null, mode: number): void;
  /** galoreProject of each entry [g, gType, pa, pb, side, rows, cols, rank, out], all checked first;
   *  on CUDA same-shaped f32 projections run as one batched product. sP (CUDA, any size, not
   *  overlapping the outputs): scratch for left-side projectors transposed. */
  galoreProjectMany(entries: [NativeBufferHandle, number, NativeBufferHandle, NativeBufferHandle | null, number, number,
                              number, number, NativeBufferHandle][],
                    sT: NativeBufferHandle | null, sBig: NativeBufferHandle | null, mode: number,
                    sP?: NativeBufferHandle | null): void;
  galoreFinish(counters: NativeBufferHandle, flag: NativeBufferHandle): void;
  apolloScratch(rows: number, cols: number, rank: number): { p: number; r: number; chan: number; norms: number; left: boolean };
  apolloProjection(p: NativeBufferHandle, seed: bigint, refreshIndex: number, rows: number, cols: number, rank: number): void;
  apolloScan(flag: NativeBufferHandle, grads: [NativeBufferHandle, number, number, number, NativeBufferHandle,
                                               NativeBufferHandle | null, NativeBufferHandle | null, bigint][],
             counters: NativeBufferHandle, updateProjGap: number): void;
  apolloStep(w: NativeBufferHandle, wType: number, g: NativeBufferHandle, gType: number, m: NativeBufferHandle,
             v: NativeBufferHandle, prevNorm: NativeBufferHandle, norms: NativeBufferHandle, rows: number, cols: number,
             rank: number, seed: bigint, counters: NativeBufferHandle, flag: NativeBufferHandle, sP: NativeBufferHandle,
             sR: NativeBufferHandle, sChan: NativeBufferHandle, sBig: NativeBufferHandle | null,
             h: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; scale: number; growthRate: number;
                  updateProjGap: number; channel: boolean; scaleFront: boolean; limiter: boolean; mode: number },
             fusedR?: NativeBufferHandle | null): void;
  linalgInfo(): { blas: string; solver: string; forceBuiltin: boolean; streamGemm: boolean };
  setForceBuiltin(force: boolean): void;
  setStreamGemm(on: boolean): void;
  streamGemmKernel(device: number): string;
  GrassGroup: new (device: number, tensors: unknown[][], counters: NativeBufferHandle, mapA?: unknown, mapB?: unknown) => GrassGroupHandle;
  grassSelect(grad: NativeBufferHandle, rows: number, cols: number, dtype: number, mode: number, rank: number,
              select: number, seed: bigint, refreshIndex: number, idx: NativeBufferHandle, rho: NativeBufferHandle): void;
  grassGatherRows(out: NativeBufferHandle, src: NativeBufferHandle, rows: number, cols: number, dtype: number,
                  idx: NativeBufferHandle, count: number, scale: NativeBufferHandle | null): void;
  grassGatherCols(out: NativeBufferHandle, src: NativeBufferHandle, rows: number, cols: number, dtype: number,
                  idx: NativeBufferHandle, count: number): void;
  grassScatterRows(dst: NativeBufferHandle, rows: number, cols: number, dtype: number, idx: NativeBufferHandle,
                   count: number, src: NativeBufferHandle, alpha: number, scale: NativeBufferHandle | null): void;
  QuantMap: new (values: Float32Array) => QuantMapHandle;
  quantizeBlockwise(x: NativeBufferHandle, dtype: number, n: number, codes: NativeBufferHandle, absmax: NativeBufferHandle,
                    blockSize: number, map: QuantMapHandle): void;
  dequantizeBlockwise(codes: NativeBufferHandle, absmax: NativeBufferHandle, n: number, out: NativeBufferHandle, dtype: number,
                      blockSize: number, map: QuantMapHandle): void;
  fillBytes(buf: NativeBufferHandle, value: number, bytes: number): void;
  QAdamGroup: new (device: number, bits: number, tensors: unknown[][], counters: NativeBufferHandle, mapA: QuantMapHandle,
                   mapB: QuantMapHandle) => QAdamGroupHandle;
  probeLibrary(envVar: string, names: string[]): string | null;
  copyKernel(dst: NativeBufferHandle, src: NativeBufferHandle, bytes: number): void;
  newEvent(): unknown;
  recordEvent(dev: number, ev: unknown): void;
  elapsedMs(start: unknown, stop: unknown): number;
  NcclComm: new (device: number, uniqueId: Uint8Array, worldSize: number, rank: number) => NcclCommHandle;
  ncclInfo(): { path: string | null; version: number; why: string };
  ncclUniqueId(): Uint8Array;
  ncclGroupStart(): void;
  ncclGroupEnd(): void;
  ShmComm: new (segment: string, worldSize: number, rank: number, chunkBytes: number, timeoutMs: number) => ShmCommHandle;
  charlmEmbedding(table: NativeBufferHandle, vocab: number, d: number, idx: NativeBufferHandle, n: number,
                  out: NativeBufferHandle): void;
  charlmEmbeddingBackward(dOut: NativeBufferHandle, idx: NativeBufferHandle, n: number, dTable: NativeBufferHandle,
                          vocab: number, d: number, accumulate: boolean): void;
  charlmBiasAdd(x: NativeBufferHandle, bias: NativeBufferHandle, rows: number, cols: number): void;
  charlmBiasGrad(dy: NativeBufferHandle, rows: number, cols: number, dBias: NativeBufferHandle, accumulate: boolean): void;
  charlmActivation(kind: number, x: NativeBufferHandle, y: NativeBufferHandle, n: number): void;
  charlmActivationBackward(kind: number, x: NativeBufferHandle, dy: NativeBufferHandle, dx: NativeBufferHandle, n: number): void;
  charlmCrossEntropy(logits: NativeBufferHandle, targets: NativeBufferHandle, rows: number, vocab: number,
                     rowLoss: NativeBufferHandle, loss: NativeBufferHandle, lossScale: number,
                     dLogits: NativeBufferHandle | null, gradScale: number): void;
}

/** One rank's NCCL communicator (csrc/nccl_comm.cc); counts are elements, op is 0 sum .. 4 avg. */
export interface NcclCommHandle {
  allReduce(send: NativeBufferHandle, recv: NativeBufferHandle, count: number, dtype: number, op: number): void;
  reduce(send: NativeBufferHandle, recv: NativeBufferHandle, count: number, dtype: number, op: number, root: number): void;
  reduceScatter(send: NativeBufferHandle, recv: NativeBufferHandle, recvCount: number, dtype: number, op: number): void;
  allGather(send: NativeBufferHandle, recv: NativeBufferHandle, sendCount: number, dtype: number): void;
  broadcast(send: NativeBufferHandle, recv: NativeBufferHandle, count: number, dtype: number, root: number): void;
  dispose(): void;
}

/** One rank's shm communicator (csrc/shm_comm.cc): NcclComm's collectives on host buffers, each
 *  done when it returns; waitAll() returns once every rank has joined. */
export interface ShmCommHandle extends NcclCommHandle {
  waitAll(): void;
}

/** The package root: lib/ under ts-jest, dist/ once compiled. */
export const packageRoot = path.resolve(__dirname, "..");

/** The C library prebuilt addons are tagged with (the test node-gyp-build uses). */
function libc(): "glibc" | "musl" {
  return fs.existsSync("/etc/alpine-release") ? "musl" : "glibc";
}

/** Prebuilt Node-API addons in prebuilds/<platform>-<arch>/ that fit this system, best first:
 *  names as prebuildify writes them (node.napi.glibc.node; tags split by "."). */
function prebuiltAddons(root: string): string[] {
  const dir = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
  if (!fs.existsSync(dir)) return [];
  const mine = libc(), other = mine === "glibc" ? "musl" : "glibc";
  const fits = fs.readdirSync(dir).filter((f) => {
    const tags = f.split(".");
    return f.endsWith(".node") && tags.includes("napi") && !tags.includes(other);
  });
  const rank = (f: string) => (f.split(".").includes(mine) ? 0 : 1);
  return fits.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).map((f) => path.join(dir, f));
}

/** Where the addon may be, in order of preference: SLIMOPT_ADDON alone when set (an explicit
 *  choice is never silently replaced), else a local build (`npm run build`, `slimopt build`),
 *  else the prebuilt binary shipped in the package. */
export function addonCandidates(root: string = packageRoot, env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.SLIMOPT_ADDON) return [path.resolve(env.SLIMOPT_ADDON)];
  return [path.join(root, "build", "Release", "slimopt.node"), ...prebuiltAddons(root)];
}

let loaded: (NativeAddon & TrainAddon & AdafactorAddon & GaloreAdafactorAddon) | undefined;
export let addonPath = "";

export function native(): NativeAddon & TrainAddon & AdafactorAddon & GaloreAdafactorAddon {
  if (loaded) return loaded;
  const candidates = addonCandidates();
  const p = candidates.find((c) => fs.existsSync(c));
  if (p === undefined) {
    throw new Error(`slimopt: no native addon found (looked for ${candidates.join(", ")}); ` +
                    "reinstall the package, or build one from source with `npx slimopt build`");
  }
  const m = { exports: {} as any };
  try {
    process.dlopen(m, p);
  } catch (e) {
    const local = !p.includes(`${path.sep}prebuilds${path.sep}`);
    throw new Error(`slimopt: the native addon ${p} does not load on this system: ${(e as Error).message}\n` +
                    (local ? "  Rebuild it (`npx slimopt build`), or remove it to use the prebuilt one."
                           : "  Build one for this system from source with `npx slimopt build` (needs CMake and a C++17 compiler)."));
  }
  loaded = m.exports as NativeAddon & TrainAddon & AdafactorAddon & GaloreAdafactorAddon;
  addonPath = p;
  loaded.setErrorClass(SlimoptError);
  return loaded;
}

// Training-loop calls (csrc/train_ops.cc); declared apart so that merges stay additive.
export interface TrainAddon {
  gradSumSquares(ws: NativeBufferHandle, grads: [NativeBufferHandle, number, number][], reset: boolean): void;
  gradNormFinish(ws: NativeBufferHandle, maxNorm: number): void;
  gradScale(grads: [NativeBufferHandle, number, number][], ws: NativeBufferHandle | null, value: number): void;
  countersMax(dst: NativeBufferHandle, srcs: NativeBufferHandle[]): void;
  gradAdd(dst: NativeBufferHandle, dstType: number, src: NativeBufferHandle, srcType: number, n: number, alpha: number): void;
}

export interface AdafactorStepArgs {
  lr: number; eps1: number; eps2: number; clipThreshold: number; decayRate: number; beta1: number; weightDecay: number;
  relativeStep: boolean; warmupInit: boolean; scaleParameter: boolean;
}

// Adafactor calls (csrc/adafactor.cc).
export interface AdafactorAddon {
  adafactorStep(w: NativeBufferHandle, g: NativeBufferHandle, dtype: number, factored: boolean, batch: number, rows: number,
                cols: number, rowState: NativeBufferHandle | null, colState: NativeBufferHandle | null,
                fullState: NativeBufferHandle | null, expAvg: NativeBufferHandle | null, counters: NativeBufferHandle,
                flag: NativeBufferHandle, scratch: NativeBufferHandle | null, h: AdafactorStepArgs): void;
  adafactorScratchFloats(factored: boolean, batch: number, rows: number, cols: number): number;
}

export interface GaloreAdafactorAddon {
  galoreAdafactorStep(w: NativeBufferHandle, wType: number, g: NativeBufferHandle, gType: number, side: number, rows: number,
                      cols: number, rank: number, pa: NativeBufferHandle, pb: NativeBufferHandle | null,
                      rowState: NativeBufferHandle, colState: NativeBufferHandle, expAvg: NativeBufferHandle | null,
                      counters: NativeBufferHandle, flag: NativeBufferHandle, sR: NativeBufferHandle, sT: NativeBufferHandle | null,
                      sBig: NativeBufferHandle | null, scratch: NativeBufferHandle | null, normWs: NativeBufferHandle | null,
                      h: AdafactorStepArgs & { scale: number; mode: number }): void;
}
