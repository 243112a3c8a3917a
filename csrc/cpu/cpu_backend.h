// The C++ CPU backend: the reference for the CUDA kernels and the fallback without a GPU.
#pragma once
#include <cstdint>
#include "../../cuda/adamw.cuh"
#include "../../cuda/apollo.cuh"
#include "../../cuda/galore.cuh"
#include "../../cuda/grass.cuh"

namespace slimopt {
namespace cpu {

void fillRandn(void* out, DType dtype, int64_t n, uint64_t seed, float mean, float std);
void convert(const void* src, DType srcType, void* dst, DType dstType, int64_t n);
// Same contract as gpu::adamwStep, host pointers; tensors[i].chunkBegin is ignored.
void adamwStep(const AdamwTensor* tensors, int32_t nTensors, const AdamwHyper& hyper,
               AdamwCounters* counters);
// Row-major GEMM (GemmArgs in cuda/galore.cuh), multi-threaded, deterministic.
void gemm(const GemmArgs& g);
// True when x[0..n) is all finite and not all zero; *nonFinite tells which way it failed.
bool finiteNonZero(const void* x, DType t, int64_t n, bool* nonFinite);
bool anyNonFinite(const void* x, DType t, int64_t n);
// Top-r singular vectors of X (rows x cols, dtype xt), exact (double Gram + symmetric eigen):
// left: P is rows x r (vectors as columns); else P is r x cols (vectors as rows). Sign rule of
// DESIGN §4: against P's current vectors when hasPrev, else largest-magnitude entry positive.
// Returns false, P untouched, when X holds a NaN/Inf or is all zero.
bool topSingular(const void* X, DType xt, int64_t rows, int64_t cols, int64_t r, bool left, float* P,
                 bool hasPrev);
// One GaLore step of one tensor (nothing when *flag != 0). sR holds R (galoreRNumel), sT the
// r x cols intermediate of side Full. t = counters->step + 1.
void galoreStep(const GaloreTensor& T, const GaloreHyper& h, const AdamwCounters* counters,
                const int32_t* flag, float* sR, float* sT);
// R = project(G) into sR (sT: the r x cols intermediate of side Full), and out = back(N) (f32,
// rows x cols), as galoreStep computes them.
void galoreProject(const GaloreTensor& T, float* sR, float* sT);
void galoreBackF32(const GaloreTensor& T, const float* N, float* out, float* sT);
// Grass (cuda/grass.cuh): same contracts as the gpu:: launchers, host pointers (the *Begin fields
// and the units are ignored).
// mapA/mapB: the maps of hyper.q8 (blobs of these), needed when a tensor is quantized.
struct QuantMapHost;
void grassStep(GrassTensor* tensors, int32_t n, const GrassHyper& h, AdamwCounters* counters, void* ws,
               const GrassWorkspace& L, const QuantMapHost* mapA = nullptr, const QuantMapHost* mapB = nullptr);
void grassSelect(const GrassTensor& T, const GrassHyper& h, void* ws, const GrassWorkspace& L, int32_t* idxOut,
                 float* rhoOut);
void grassGatherRows(void* out, const void* src, DType d, int64_t rows, int64_t cols, const int32_t* idx,
                     int64_t count, const float* scale);
void grassGatherCols(void* out, const void* src, DType d, int64_t rows, int64_t cols, const int32_t* idx,
                     int64_t count);
void grassScatterRows(void* dst, DType d, int64_t rows, int64_t cols, const int32_t* idx, int64_t count,
                      const void* src, float alpha, const float* scale);
// APOLLO (cuda/apollo.cuh): P of refresh `refreshIndex` (n elements); the channel norms of G into
// out (apolloNormFloats), returning whether G holds a NaN/Inf; one step of one tensor (nothing when
// *flag != 0), sP/sR/sChan sized by apolloPNumel/apolloRNumel/apolloChanFloats.
void apolloProjection(float* P, int64_t n, uint64_t seed, uint32_t refreshIndex, int64_t rank);
bool apolloGradNorms(const void* G, DType t, int64_t rows, int64_t cols, float* out);
void apolloStep(const ApolloTensor& T, const ApolloHyper& h, const AdamwCounters* counters, const int32_t* flag,
                float* sP, float* sR, float* sChan);
// Runs fn(begin, end) over [0, n) split across the machine's cores (serial when n is small).
void parallelFor(int64_t n, int64_t grain, void (*fn)(void* ctx, int64_t begin, int64_t end), void* ctx);

}  // namespace cpu
}  // namespace slimopt
