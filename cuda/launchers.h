// Host launchers of the CUDA kernels: plain C++, callable from the glue. Each enqueues on the
// device's stream (gpu::stream) and returns the launch status; nothing here blocks.
#pragma once
#include <cstdint>
#include "adamw.cuh"
#include "apollo.cuh"
#include "galore.cuh"
#include "grass.cuh"
#include "runtime.h"

namespace slimopt {
namespace gpu {

// out[i] = mean + std * N(0,1)_i of the (seed) stream, stored as dtype.
Status fillRandn(int dev, void* out, DType dtype, int64_t n, uint64_t seed, float mean, float std);
// Element-wise conversion between f32/bf16/f16 (same n).
Status convert(int dev, const void* src, DType srcType, void* dst, DType dstType, int64_t n);

// One multi-tensor AdamW step over a group, in one launch. `tensors` is a device array of
// nTensors descriptors with chunkBegin set (chunk = hyper.chunkSize elements); totalChunks is the
// group's chunk count. `counters` is device memory: the step is skipped (and counted) when
// skipNonFinite is set and any gradient element is NaN/Inf. `scratch` holds gridFlagsNeeded()
// ints.
Status adamwStep(int dev, const AdamwTensor* tensors, int32_t nTensors, int64_t totalChunks,
                 const AdamwHyper& hyper, AdamwCounters* counters, int32_t* scratch);
int32_t adamwScratchInts(int dev);

// ---- linear algebra and GaLore (cuda/linalg.cu, cuda/galore.cu) ----------------------------
// Which GEMM / eigen-solver path serves dev: "cuBLAS (<path>)" or "built-in ..." (text for info).
std::string blasPath();
std::string solverPath();
// Forces the built-in kernels even when cuBLAS/cuSOLVER load (also SLIMOPT_LINALG=builtin).
void setForceBuiltin(bool force);
bool forceBuiltin();
// The streaming kernel for short-K products with C read back and B as given (cuda/gemm_tc.cu;
// GaLore's project-back at rank <= 128 on the built-in path; with cuBLAS that one passes B
// transposed to cuBLAS instead): on by default; off, the tile kernel (or cuBLAS) serves them. Its
// wgmma version serves gemm() on the cuBLAS path too. streamGemmKernel: which version serves dev ("wgmma",
// "mma.sync", "off" when switched off, "none" where neither runs).
void setStreamGemm(bool on);
bool streamGemmEnabled();
std::string streamGemmKernel(int dev);
// Row-major GEMM on dev (GemmArgs in galore.cuh; A, B f32; C f32 or bf16 for the built-in path).
Status gemm(int dev, const GemmArgs& a, GemmMode mode);
// gemm() of each of gs[0 .. count) in order (modes[i] for gs[i]); on Hopper, runs of products the
// streaming kernel serves go out together in grouped launches, bit for bit the same results.
Status gemmMany(int dev, const GemmArgs* gs, const GemmMode* modes, int64_t count);
// flag |= any NaN/Inf in g[0..n) (flag is device memory, zeroed by the caller first).
// One array of a batched NaN/Inf scan.
struct ScanEntry {
  const void* p;
  DType t;
  int64_t n;
};
Status scanNonFinite(int dev, const ScanEntry* entries, int64_t count, int32_t* flag);
// Top-r singular vectors of X into P with the sign rule (layout as cpu::topSingular), on the
// device (cuda/galore_refresh.cu): Svd exact (cuSOLVER syevdx or the built-in subspace iteration on
// the f32 Gram matrix), Warm started from P. P is kept when *flag != 0 (the group's step is
// skipped) or X is all zero or not finite; decided on the device. ws: galoreRefreshWorkspace()
// floats of device memory; xScratch: rows x cols f32 when X is not f32. `mode` is the precision of
// the warm path's GEMMs with X (the exact path is strict f32 throughout).
Status galoreRefreshWorkspace(int dev, int64_t rows, int64_t cols, int64_t r, bool left, RefreshMethod method,
                              int64_t* floats);
Status galoreRefresh(int dev, const void* X, DType xt, int64_t rows, int64_t cols, int64_t r, bool left,
                     float* P, bool hasPrev, const int32_t* flag, RefreshMethod method, GemmMode mode, float* ws,
                     int64_t wsFloats, float* xScratch);
// Refreshes of several tensors (as galoreRefresh with hasPrev, f32 gradients), up to `lanes` at a
// time: lane l runs on its own stream and host thread with the workspace ws[l] (wsFloats[l]
// floats), taking the first entry left whose workspace fits. Each refresh is computed exactly as
// alone; the lanes start after the work enqueued on the device's stream and that stream waits for
// them. Most of a refresh is small, latency-bound solver work, which the other lanes' products
// fill around. The caller checks the entries (galoreRefreshWorkspace gives `floats`), and that
// ws[0] is the largest and fits every entry: lane 0 takes any entry, the others those that fit.
struct GaloreRefreshEntry {
  const void* X;  // f32, rows x cols
  int64_t rows, cols, rank;
  int64_t floats;  // the workspace its refresh needs
  bool left;
  float* P;
  const int32_t* flag;
  RefreshMethod method;
  GemmMode mode;
};
constexpr int kMaxRefreshLanes = 4;
Status galoreRefreshMany(int dev, const GaloreRefreshEntry* entries, int64_t count, float* const* ws,
                         const int64_t* wsFloats, int lanes);
// One GaLore step of one tensor; nothing changes when *flag != 0. sR: R-sized, sT: r x cols for
// Full, sBig: rows x cols f32 when the parameter or gradient is not f32 (else may be null),
// scalars: 2 floats of device memory (the epilogue's alpha, beta, written on the device).
Status galoreStep(int dev, const GaloreTensor& T, const GaloreHyper& h, const AdamwCounters* counters,
                  const int32_t* flag, float* sR, float* sT, float* sBig, float* scalars);
// R = project(G) into sR (sBig: G's f32 copy when G is not f32), and out = back(N) in f32, as
// galoreStep computes them (used by GaLoreAdafactor).
Status galoreProject(int dev, const GaloreTensor& T, float* sR, float* sT, float* sBig, GemmMode mode);
// galoreProject of n tensors into outs[i]; f32 gradients of one shape and side go to cuBLAS as one
// batched call (sT, sBig as galoreProject: shared scratch for the tensors that need it). sP
// (sPFloats, may be null): scratch for left-side projectors transposed (TF32 with cuBLAS); it must
// not overlap the outputs (where it does, the Ps are used as stored).
Status galoreProjectMany(int dev, const GaloreTensor* ts, float* const* outs, int64_t n, float* sT, float* sBig,
                         GemmMode mode, float* sP, int64_t sPFloats);
Status galoreBackF32(int dev, const GaloreTensor& T, const float* N, float* out, float* sT, GemmMode mode);
// Adam on many f32-state Rs of one group in one launch (R becomes N in place) and the epilogue
// scalars, as galoreStep's Adam kernel does for one; galoreStep with adamDone then projects back.
struct GaloreAdamEntry {
  float* r;
  float* m;
  float* v;
  int64_t n;
};
Status galoreAdamMany(int dev, const GaloreAdamEntry* entries, int64_t count, const GaloreHyper& h,
                      const AdamwCounters* counters, const int32_t* flag, float* scalars);
// The project-back W <- beta W + alpha back(N) of one-sided f32 parameters whose R buffer holds N
// (galoreAdamMany ran), alpha and beta from the scalars it wrote, nothing when *flag != 0: as
// galoreStep with adamDone does for each, with the streaming kernel's grouped launches on Hopper.
struct GaloreBackEntry {
  float* param;        // f32, rows x cols
  const float* proj;   // P: rank x cols (Right) or rows x rank (Left)
  const float* n;      // N: rows x rank (Right) or rank x cols (Left)
  GaloreSide side;     // Right or Left
  int64_t rows, cols, rank;
};
// With cuBLAS and every rank <= kBackTransposeMaxRank, sT (sTFloats floats, at least rank x cols
// for each entry; null: not used) takes the Bs transposed, as many at once as fit, so that
// cuBLAS's K-major TF32 kernels run the products (faster there than the streaming kernel;
// cuda/galore.cu runBacksTransposed).
constexpr int64_t kBackTransposeMaxRank = 128;
Status galoreBackMany(int dev, const GaloreBackEntry* entries, int64_t count, GemmMode mode, const int32_t* flag,
                      const float* scalars, float* sT, int64_t sTFloats);
// counters->step += 1 or counters->skipped += 1 by *flag.
Status galoreFinish(int dev, AdamwCounters* counters, const int32_t* flag);
// Grass (cuda/grass.cuh). grassCubBytes: the radix-sort scratch for selections over up to
// maxLines lines (part of the group's workspace). grassStep: one step of a group, all launches
// enqueued (see grass.cu); deviceList is the device copy of hostList (whose pointers are device
// pointers), units the totals of its *Begin prefixes; ws is laid out by L. grassSelectOnly: the
// selection a refresh of T would make, into idxOut/rhoOut (device, T.rank each); changes nothing.
size_t grassCubBytes(int dev, int64_t maxLines, Status* status);
Status grassStep(int dev, const GrassTensor* deviceList, const GrassTensor* hostList, int32_t n,
                 const GrassUnits& units, const GrassHyper& h, AdamwCounters* counters, void* ws,
                 const GrassWorkspace& L);
Status grassSelectOnly(int dev, const GrassTensor& T, const GrassHyper& h, void* ws, const GrassWorkspace& L,
                       int32_t* idxOut, float* rhoOut);
// out[j, :] = scale_j * src[idx_j, :] for j < count (src rows × cols; no scale: a copy).
Status grassGatherRows(int dev, void* out, const void* src, DType d, int64_t rows, int64_t cols,
                       const int32_t* idx, int64_t count, const float* scale);
// out[k, j] = src[k, idx_j] for k < rows, j < count (out rows × count): the compact gradient of a
// column selection, exact copies.
Status grassGatherCols(int dev, void* out, const void* src, DType d, int64_t rows, int64_t cols,
                       const int32_t* idx, int64_t count);
// dst[idx_j, :] += alpha * scale_j * src[j, :]; idx sorted, duplicates summed in order.
Status grassScatterRows(int dev, void* dst, DType d, int64_t rows, int64_t cols, const int32_t* idx,
                        int64_t count, const void* src, float alpha, const float* scale);

// APOLLO (cuda/apollo.cu, layout in apollo.cuh). apolloProjection: P of refresh refreshIndex (n
// elements). apolloGradNorms: G's channel norms into out (apolloNormFloats), flag |= any NaN/Inf in
// G. apolloStep: one step of one tensor (nothing changes when *flag != 0; the refresh index is
// read from counters); sP, sR, sChan: apolloPNumel, apolloRNumel, apolloChanFloats floats; sBig:
// rows x cols f32 when G is not f32 (else may be null).
Status apolloProjection(int dev, float* P, int64_t n, uint64_t seed, uint32_t refreshIndex, int64_t rank);
// fused (rank 1, may be null): the same pass also projects (ApolloFused); the step then takes its
// rPart as fusedR and skips P and the GEMM.
Status apolloGradNorms(int dev, const void* G, DType t, int64_t rows, int64_t cols, float* out, int32_t* flag,
                       const ApolloFused* fused);
Status apolloStep(int dev, const ApolloTensor& T, const ApolloHyper& h, const AdamwCounters* counters,
                  const int32_t* flag, float* sP, float* sR, float* sChan, float* sBig, const float* fusedR);

// Bandwidth probe: dst = src over n bytes with 16-byte accesses (the copy the floor is set by).
Status copyKernel(int dev, void* dst, const void* src, size_t bytes);

// Event timing on the device's stream: record, then elapsed milliseconds between two.
Status eventCreate(void** ev);
Status eventRecord(int dev, void* ev);
Status eventElapsedMs(void* start, void* stop, float* ms);  // synchronizes on stop
void eventDestroy(void* ev);

}  // namespace gpu
}  // namespace slimopt
