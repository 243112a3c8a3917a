// APOLLO on CUDA (math and layout in apollo.cuh; cpu::apolloStep is the reference).
//
// A group's step, all enqueued on the device's stream with no host sync:
//   scan    per tensor, one pass over G: the channel norms of G (partial sums per row slab for
//           column channels) and the group's non-finite flag (rank 1: and R). It runs for every
//           tensor before any tensor updates, because a NaN anywhere skips the whole group.
//   per tensor:
//     P       generated into scratch from (seed, completed steps / gap) read on the device;
//     R       = project(G) by the GEMM layer (TF32 by default; a bf16/f16 G is converted first);
//     adam    Adam on R (m, v like R), each channel's sums of R^2 and N^2, and each block's share
//             of the decision's sums over the channels (R^2, N^2, |G_j|^2, s_j^2 |G_j|^2);
//     decide  one warp: the scales, |G~| from the channel norms of G and the scales (no pass over
//             G~), the limiter against the stored norm;
//     update  one pass: W <- (W + c_j G) * decay, in W's dtype, c_j formed from the decision.
// Rank 1 (APOLLO-Mini) is fused: the scan generates p first and its one read of G also computes
// R = G p (or p^T G, partial sums per row slab), so the step skips P and the GEMM.
// Reads of G per step: 2 at rank 1 (scan + projection, update), 3 above (scan, GEMM, update). Two
// is the least for an exact step: the limiter needs |G~| (all of G) before any W is written, and a
// tensor's G (64-180 MB on the §6 workload) does not stay in a 50 MB L2. The third read above rank
// 1 is the scan's norms, which a hand-written projection GEMM could fold in (cuBLAS cannot): not
// done yet. Every kernel but the scan and P returns at once when the group's flag is set; cuBLAS
// cannot skip, but it only writes R.
#include <cuda_runtime.h>
#include <algorithm>
#include "../csrc/cpu/cpu_backend.h"
#include "apollo.cuh"
#include "internal.cuh"
#include "launchers.h"

namespace slimopt {
namespace gpu {

namespace {

constexpr int kThreads = 256;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

unsigned gridFor(int dev, int64_t work) {
  int64_t b = (work + kThreads - 1) / kThreads;
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(b, int64_t(smCount(dev)) * 16)));
}

// One thread per Philox block of 4 elements. counters null: the refresh index given; else the
// completed steps / gap read here (the step count lives on the device).
__global__ void projKernel(float* P, int64_t n, uint64_t seed, uint32_t refreshIndex, const AdamwCounters* counters,
                           int32_t gap, float scale) {
  const uint32_t k = counters ? uint32_t(counters->step / gap) : refreshIndex;
  const uint64_t stream = apolloStream(k);
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks; b += int64_t(gridDim.x) * blockDim.x) {
    float z[4];
    normal4(seed, uint64_t(b), stream, z);
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (b * 4 + j < n) P[b * 4 + j] = __fmul_rn(z[j], scale);
  }
}

// The end of a row's warp: the lanes' sums (of squares, and of the rank-1 dot) reduced in a fixed
// order; lane 0 stores them.
__device__ __forceinline__ void finishRow(int lane, int64_t i, double s, double d, float* out, bool dot, float* rOut) {
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_xor_sync(0xffffffffu, s, o);
    d += __shfl_xor_sync(0xffffffffu, d, o);
  }
  if (lane == 0) {
    out[i] = float(s);
    if (dot) rOut[i] = float(d);
  }
}

// Right side: one warp per row, the row's sum of squares in double. Fused rank 1 (p non-null):
// also R_i = G_i . p (double) into rOut[i], from the same read of G.
__global__ void rowNormsKernel(const void* G, DType t, int64_t rows, int64_t cols, float* out, int32_t* flag,
                               const float* p, float* rOut) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32; i < rows; i += warps) {
    double s = 0.0, d = 0.0;
    for (int64_t j = lane; j < cols; j += 32) {
      const float g = loadAsFloat(G, t, i * cols + j);
      bad |= !isFiniteFloat(g);
      s += double(g) * double(g);
      if (p) d += double(g) * double(p[j]);
    }
    finishRow(lane, i, s, d, out, p != nullptr, rOut);
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}

// The same for f32 G with 16-byte aligned rows: float4 loads (4 loads in flight per lane).
__global__ void rowNormsF32x4Kernel(const float* __restrict__ G, int64_t rows, int64_t cols4, float* out, int32_t* flag,
                                    const float* __restrict__ p, float* rOut) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32; i < rows; i += warps) {
    const float4* g4 = reinterpret_cast<const float4*>(G) + i * cols4;
    double s = 0.0, d = 0.0;
#pragma unroll 4
    for (int64_t q = lane; q < cols4; q += 32) {
      const float4 g = g4[q];
      bad |= !(isFiniteFloat(g.x) && isFiniteFloat(g.y) && isFiniteFloat(g.z) && isFiniteFloat(g.w));
      s += double(g.x) * double(g.x) + double(g.y) * double(g.y) + double(g.z) * double(g.z) + double(g.w) * double(g.w);
      if (p) {
        const float4 c = reinterpret_cast<const float4*>(p)[q];
        d += double(g.x) * double(c.x) + double(g.y) * double(c.y) + double(g.z) * double(c.z) + double(g.w) * double(c.w);
      }
    }
    finishRow(lane, i, s, d, out, p != nullptr, rOut);
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}

// Left side: thread per (column, row slab), rows of the slab in order (the CPU's order). Fused
// rank 1 (p non-null): also the slab's partial of R_j = p . G_j into rOut (slab-major).
__global__ void colNormsKernel(const void* G, DType t, int64_t rows, int64_t cols, int64_t slabs, float* out,
                               int32_t* flag, const float* p, float* rOut) {
  const int64_t per = (rows + slabs - 1) / slabs;
  bool bad = false;
  for (int64_t s = blockIdx.y; s < slabs; s += gridDim.y) {
    const int64_t r1 = min(rows, (s + 1) * per);
    for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < cols; j += int64_t(gridDim.x) * blockDim.x) {
      double acc = 0.0, d = 0.0;
      for (int64_t i = s * per; i < r1; ++i) {
        const float g = loadAsFloat(G, t, i * cols + j);
        bad |= !isFiniteFloat(g);
        acc += double(g) * double(g);
        if (p) d += double(g) * double(p[i]);
      }
      out[s * cols + j] = float(acc);
      if (p) rOut[s * cols + j] = float(d);
    }
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}

// The same for f32 G with 16-byte aligned rows: a thread per (4 columns, row slab), float4 loads;
// each column's sums in the same (row) order.
__global__ void colNormsF32x4Kernel(const float* __restrict__ G, int64_t rows, int64_t cols4, int64_t slabs, float* out,
                                    int32_t* flag, const float* __restrict__ p, float* rOut) {
  const int64_t per = (rows + slabs - 1) / slabs;
  const int64_t cols = cols4 * 4;
  bool bad = false;
  for (int64_t s = blockIdx.y; s < slabs; s += gridDim.y) {
    const int64_t r1 = min(rows, (s + 1) * per);
    for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < cols4; q += int64_t(gridDim.x) * blockDim.x) {
      double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0, d0 = 0.0, d1 = 0.0, d2 = 0.0, d3 = 0.0;
      for (int64_t i = s * per; i < r1; ++i) {
        const float4 g = reinterpret_cast<const float4*>(G)[i * cols4 + q];
        bad |= !(isFiniteFloat(g.x) && isFiniteFloat(g.y) && isFiniteFloat(g.z) && isFiniteFloat(g.w));
        a0 += double(g.x) * double(g.x); a1 += double(g.y) * double(g.y);
        a2 += double(g.z) * double(g.z); a3 += double(g.w) * double(g.w);
        if (p) {
          const double c = double(p[i]);
          d0 += double(g.x) * c; d1 += double(g.y) * c; d2 += double(g.z) * c; d3 += double(g.w) * c;
        }
      }
      float* o = out + s * cols + 4 * q;
      o[0] = float(a0); o[1] = float(a1); o[2] = float(a2); o[3] = float(a3);
      if (p) {
        float* r = rOut + s * cols + 4 * q;
        r[0] = float(d0); r[1] = float(d1); r[2] = float(d2); r[3] = float(d3);
      }
    }
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}

// Adam on element idx of R; its squares (and N's) added to the channel's sums.
// rSlabs > 0 (fused rank 1): R's element is the sum of rSlabs partials, ch apart.
__device__ __forceinline__ void adamElement(const float* R, int64_t rSlabs, int64_t ch, float* m, float* v, int64_t idx,
                                            float beta1, float beta2, float eps, double& r2, double& n2) {
  float g;
  if (rSlabs == 0) {
    g = R[idx];
  } else {
    double x = 0.0;
    for (int64_t s = 0; s < rSlabs; ++s) x += double(R[s * ch + idx]);
    g = float(x);
  }
  float mi = m[idx], vi = v[idx];
  const float n = galoreAdamElement(g, mi, vi, beta1, beta2, eps);
  m[idx] = mi; v[idx] = vi;
  r2 += double(g) * double(g);
  n2 += double(n) * double(n);
}

// The channel's part of the decision's sums, from its sums of squares of R and N as stored (f32):
// acc += {|R_j|^2, |N_j|^2, |G_j|^2 (its slabs in order), s_j^2 |G_j|^2}.
__device__ __forceinline__ void addChannelSums(float r2, float n2, const float* gradNorms, int64_t slabs, int64_t ch,
                                               int64_t j, double (&acc)[4]) {
  double g2 = 0.0;
  for (int64_t s = 0; s < slabs; ++s) g2 += double(gradNorms[s * ch + j]);
  const double sj = double(apolloChannelScale(r2, n2));
  acc[0] += double(r2);
  acc[1] += double(n2);
  acc[2] += g2;
  acc[3] += sj * sj * g2;
}

// Adam on R; per channel the sums of R^2 and N^2 (double, stored f32) into chan[j], chan[ch + j];
// and the block's share of the decision's four sums over the channels into part[4 * block ..]
// (channels in a fixed order per block, so the result does not depend on scheduling).
// Left side (channels are R's columns): a block per 32 columns, its 8 warps take every 8th row of
// R (128-byte coalesced rows), the 8 partial sums added in order through shared memory.
__global__ void __launch_bounds__(kThreads) adamColumnsKernel(const float* R, int64_t rSlabs, float* m, float* v,
                                                              int64_t ch, int64_t rank, float beta1, float beta2,
                                                              float eps, float* chan, const float* gradNorms,
                                                              int64_t slabs, double* part, const int32_t* flag) {
  static_assert(kThreads / 32 * 32 == kThreads && kApolloAdamColsPerBlock == 32, "a block takes 32 columns");
  if (*flag != 0) return;
  __shared__ double sq[2][kThreads / 32][32];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  double acc[4] = {0.0, 0.0, 0.0, 0.0};  // warp 0's lanes: their columns' sums
  for (int64_t j0 = int64_t(blockIdx.x) * 32; j0 < ch; j0 += int64_t(gridDim.x) * 32) {
    const int64_t j = j0 + tx;
    double r2 = 0.0, n2 = 0.0;
    if (j < ch)
      for (int64_t q = ty; q < rank; q += kThreads / 32) adamElement(R, rSlabs, ch, m, v, q * ch + j, beta1, beta2, eps, r2, n2);
    sq[0][ty][tx] = r2;
    sq[1][ty][tx] = n2;
    __syncthreads();
    if (ty == 0 && j < ch) {
      double a = 0.0, b = 0.0;
      for (int k = 0; k < kThreads / 32; ++k) { a += sq[0][k][tx]; b += sq[1][k][tx]; }
      chan[j] = float(a);
      chan[ch + j] = float(b);
      addChannelSums(float(a), float(b), gradNorms, slabs, ch, j, acc);
    }
    __syncthreads();
  }
  if (ty == 0) {
    for (int o = 16; o > 0; o >>= 1)
      for (int k = 0; k < 4; ++k) acc[k] += __shfl_xor_sync(0xffffffffu, acc[k], o);
    if (tx < 4) part[4 * blockIdx.x + tx] = acc[tx];
  }
}

// Right side (channels are R's rows): a warp per row of R (r elements); the block's 8 warps' sums
// added in warp order.
__global__ void __launch_bounds__(kThreads) adamRowsKernel(const float* R, int64_t rSlabs, float* m, float* v,
                                                           int64_t ch, int64_t rank, float beta1, float beta2, float eps,
                                                           float* chan, const float* gradNorms, int64_t slabs,
                                                           double* part, const int32_t* flag) {
  static_assert(kThreads / 32 == kApolloAdamRowsPerBlock, "a warp per row");
  if (*flag != 0) return;
  __shared__ double warpSums[kThreads / 32][4];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t warps = int64_t(gridDim.x) * (kThreads / 32);
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  for (int64_t i = blockIdx.x * int64_t(kThreads / 32) + warp; i < ch; i += warps) {
    double r2 = 0.0, n2 = 0.0;
    for (int64_t q = lane; q < rank; q += 32) adamElement(R, rSlabs, ch, m, v, i * rank + q, beta1, beta2, eps, r2, n2);
    for (int o = 16; o > 0; o >>= 1) {
      r2 += __shfl_xor_sync(0xffffffffu, r2, o);
      n2 += __shfl_xor_sync(0xffffffffu, n2, o);
    }
    if (lane == 0) {
      chan[i] = float(r2);
      chan[ch + i] = float(n2);
      addChannelSums(float(r2), float(n2), gradNorms, slabs, ch, i, acc);
    }
  }
  if (lane == 0)
    for (int k = 0; k < 4; ++k) warpSums[warp][k] = acc[k];
  __syncthreads();
  if (threadIdx.x < 4) {
    double t = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) t += warpSums[w][threadIdx.x];
    part[4 * blockIdx.x + threadIdx.x] = t;
  }
}

// The decision, one block: the Adam blocks' sums (each thread a strided share in order, then a
// tree), the scales, the limiter against the stored norm, the new norm and the decay; the
// coefficient base and the tensor scale into dec[0], dec[1], from which the update kernels form
// each channel's coefficient. (One block doing the sums over the channels, the decision and the
// coefficients took 34 us for 11008 channels and 98 us with 32 row slabs of column norms on the
// H200, of a ~600 us step on two 11008 x 4096 matrices: bench/results/NVIDIA-H200-2026-11-24-steps-ncu.txt.)
constexpr int kDecideThreads = 256;
__global__ void __launch_bounds__(kDecideThreads) decideKernel(ApolloHyper h, const double* part, int64_t blocks,
                                                               float* chan, int64_t ch, float* prevNorm,
                                                               const AdamwCounters* counters, const int32_t* flag,
                                                               double* dec) {
  if (*flag != 0) return;
  __shared__ double red[4][kDecideThreads];
  double a[4] = {0.0, 0.0, 0.0, 0.0};
  for (int64_t b = threadIdx.x; b < blocks; b += kDecideThreads)
    for (int k = 0; k < 4; ++k) a[k] += part[4 * b + k];
  for (int k = 0; k < 4; ++k) red[k][threadIdx.x] = a[k];
  __syncthreads();
  for (int w = kDecideThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w)
      for (int k = 0; k < 4; ++k) red[k][threadIdx.x] += red[k][threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const ApolloSums sums{red[0][0], red[1][0], red[2][0], red[3][0]};
    const ApolloDecision d = apolloDecide(h, sums, *prevNorm, counters->step + 1);
    *prevNorm = d.prevNorm;
    dec[0] = d.coef;
    dec[1] = d.s;
    chan[3 * ch] = apolloDecay(h);
  }
}

// Channel j's coefficient c_j = coef * (s_j or the tensor scale), rounded to f32 as the CPU does.
__device__ __forceinline__ float channelCoef(const float* chan, int64_t ch, int64_t j, const double* dec, bool channel) {
  return float(dec[0] * (channel ? double(apolloChannelScale(chan[j], chan[ch + j])) : dec[1]));
}

// The coefficient of row blockIdx.y + t * gridDim.y, the t-th row of the block (right side): the
// warp forms 32 rows' coefficients at once, one per lane into `mine`, and hands each out by a
// shuffle. (A coefficient per thread and row, a square root and two divisions before every row's
// one 16-byte access, slowed the update from 4.1 to 3.5 TB/s.) Every lane of the warp calls it
// with the same t, in order from 0.
__device__ __forceinline__ float rowCoef(const float* chan, int64_t ch, int64_t rows, int64_t t, float& mine,
                                         const double* dec, bool channel) {
  const int lane = threadIdx.x & 31;
  if ((t & 31) == 0) {
    const int64_t i = blockIdx.y + (t + lane) * int64_t(gridDim.y);
    mine = i < rows ? channelCoef(chan, ch, i, dec, channel) : 0.0f;
  }
  return __shfl_sync(0xffffffffu, mine, int(t & 31));
}

// W <- (W + c_j G) * decay: blocks stride over rows (y), threads over columns; c_j by row (right,
// rowCoef) or column (left: each thread forms its columns' once, before its loop down them).
// Rounded as the CPU rounds (no contraction).
template <DType WT, DType GT>
__device__ __forceinline__ void updateElement(void* W, const void* G, int64_t idx, float c, float decay) {
  const float w = __fadd_rn(loadAsFloat(W, WT, idx), __fmul_rn(c, loadAsFloat(G, GT, idx)));
  storeFromFloat(W, WT, idx, __fmul_rn(w, decay));
}

template <DType WT, DType GT>
__global__ void updateKernel(void* W, const void* G, int64_t rows, int64_t cols, bool left, const float* chan,
                             int64_t ch, const double* dec, bool channel, const int32_t* flag) {
  if (*flag != 0) return;
  const float decay = chan[3 * ch];
  const int64_t j0 = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, js = int64_t(gridDim.x) * blockDim.x;
  if (left) {
    for (int64_t j = j0; j < cols; j += js) {
      const float c = channelCoef(chan, ch, j, dec, channel);
      for (int64_t i = blockIdx.y; i < rows; i += gridDim.y) updateElement<WT, GT>(W, G, i * cols + j, c, decay);
    }
  } else {
    float mine = 0.0f;
    for (int64_t t = 0, i = blockIdx.y; i < rows; ++t, i += gridDim.y) {
      const float c = rowCoef(chan, ch, rows, t, mine, dec, channel);
      for (int64_t j = j0; j < cols; j += js) updateElement<WT, GT>(W, G, i * cols + j, c, decay);
    }
  }
}

__device__ __forceinline__ float4 updateQuad(float4 w, float4 g, float4 c, float decay) {
  w.x = __fmul_rn(__fadd_rn(w.x, __fmul_rn(c.x, g.x)), decay);
  w.y = __fmul_rn(__fadd_rn(w.y, __fmul_rn(c.y, g.y)), decay);
  w.z = __fmul_rn(__fadd_rn(w.z, __fmul_rn(c.z, g.z)), decay);
  w.w = __fmul_rn(__fadd_rn(w.w, __fmul_rn(c.w, g.w)), decay);
  return w;
}

// The same for f32 W and G with 16-byte aligned rows: float4 accesses.
template <bool LEFT>
__global__ void updateF32x4Kernel(float* __restrict__ W, const float* __restrict__ G, int64_t rows, int64_t cols4,
                                  const float* __restrict__ chan, int64_t ch, const double* __restrict__ dec,
                                  bool channel, const int32_t* flag) {
  if (*flag != 0) return;
  const float decay = chan[3 * ch];
  float4* W4 = reinterpret_cast<float4*>(W);
  const float4* G4 = reinterpret_cast<const float4*>(G);
  const int64_t q0 = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, qs = int64_t(gridDim.x) * blockDim.x;
  if (LEFT) {
    for (int64_t q = q0; q < cols4; q += qs) {
      const float4 c = make_float4(channelCoef(chan, ch, 4 * q, dec, channel), channelCoef(chan, ch, 4 * q + 1, dec, channel),
                                   channelCoef(chan, ch, 4 * q + 2, dec, channel), channelCoef(chan, ch, 4 * q + 3, dec, channel));
      for (int64_t i = blockIdx.y; i < rows; i += gridDim.y) W4[i * cols4 + q] = updateQuad(W4[i * cols4 + q], G4[i * cols4 + q], c, decay);
    }
  } else {
    float mine = 0.0f;
    for (int64_t t = 0, i = blockIdx.y; i < rows; ++t, i += gridDim.y) {
      const float ci = rowCoef(chan, ch, rows, t, mine, dec, channel);
      const float4 c = make_float4(ci, ci, ci, ci);
      for (int64_t q = q0; q < cols4; q += qs) W4[i * cols4 + q] = updateQuad(W4[i * cols4 + q], G4[i * cols4 + q], c, decay);
    }
  }
}

template <DType WT>
void launchUpdate(DType gt, dim3 grid, cudaStream_t st, void* W, const void* G, int64_t rows, int64_t cols, bool left,
                  const float* chan, int64_t ch, const double* dec, bool channel, const int32_t* flag) {
  switch (gt) {
    case DType::F32: updateKernel<WT, DType::F32><<<grid, kThreads, 0, st>>>(W, G, rows, cols, left, chan, ch, dec, channel, flag); break;
    case DType::BF16: updateKernel<WT, DType::BF16><<<grid, kThreads, 0, st>>>(W, G, rows, cols, left, chan, ch, dec, channel, flag); break;
    default: updateKernel<WT, DType::F16><<<grid, kThreads, 0, st>>>(W, G, rows, cols, left, chan, ch, dec, channel, flag); break;
  }
}

// P into sP (refresh index from the device's step count), then R = project(G) into sR by the GEMM
// layer; a bf16/f16 G is converted into sBig first.
Status projectByGemm(int dev, cudaStream_t st, const ApolloTensor& T, const ApolloHyper& h, const AdamwCounters* counters,
                     const int32_t* flag, float* sP, float* sR, float* sBig) {
  const int64_t m = T.rows, n = T.cols, r = T.rank;
  const int64_t pn = apolloPNumel(m, n, r);
  projKernel<<<gridFor(dev, (pn + 3) / 4), kThreads, 0, st>>>(sP, pn, T.seed, 0, counters, h.updateProjGap,
                                                               apolloProjScale(r));
  Status ok = lastError("apollo projection");
  if (!ok.ok()) return ok;
  const void* G = T.grad;
  if (T.gradDtype != DType::F32) {
    if (!sBig) return invalidArg("apolloStep: a non-f32 gradient needs the f32 scratch");
    ok = convert(dev, T.grad, T.gradDtype, sBig, DType::F32, m * n);
    if (!ok.ok()) return ok;
    G = sBig;
  }
  GemmArgs g;
  if (apolloLeft(m, n)) {  // R = P^T G (r x n)
    g.M = r; g.N = n; g.K = m;
    g.A = sP; g.lda = r; g.transA = true;
    g.B = G; g.ldb = n; g.transB = false;
  } else {                 // R = G P^T (m x r)
    g.M = m; g.N = r; g.K = n;
    g.A = G; g.lda = n; g.transA = false;
    g.B = sP; g.ldb = n; g.transB = true;
  }
  g.C = sR; g.ldc = g.N;
  return runGemm(dev, g, h.mode, nullptr, flag);
}

}  // namespace

Status apolloProjection(int dev, float* P, int64_t n, uint64_t seed, uint32_t refreshIndex, int64_t rank) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "apolloProjection");
  if (!ok.ok() || n <= 0) return ok;
  projKernel<<<gridFor(dev, (n + 3) / 4), kThreads, 0, st>>>(P, n, seed, refreshIndex, nullptr, 1, apolloProjScale(rank));
  return lastError("apolloProjection");
}

Status apolloGradNorms(int dev, const void* G, DType t, int64_t rows, int64_t cols, float* out, int32_t* flag,
                       const ApolloFused* fused) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "apolloGradNorms");
  if (!ok.ok()) return ok;
  const float* p = nullptr;
  float* rOut = nullptr;
  if (fused) {  // rank 1: p (rows or cols elements) first, then the one read of G projects too
    if (fused->gap < 1) return invalidArg("apolloGradNorms: updateProjGap must be positive");
    const int64_t pn = apolloPNumel(rows, cols, 1);
    projKernel<<<gridFor(dev, (pn + 3) / 4), kThreads, 0, st>>>(fused->p, pn, fused->seed, 0, fused->counters, fused->gap,
                                                                 apolloProjScale(1));
    ok = lastError("apollo projection (rank 1)");
    if (!ok.ok()) return ok;
    p = fused->p;
    rOut = fused->rPart;
  }
  if (apolloLeft(rows, cols)) {
    const int64_t slabs = apolloNormSlabs(rows, cols);
    if (t == DType::F32 && cols % 4 == 0 && aligned16(G)) {
      dim3 grid(unsigned((cols / 4 + kThreads - 1) / kThreads), unsigned(slabs));
      colNormsF32x4Kernel<<<grid, kThreads, 0, st>>>(static_cast<const float*>(G), rows, cols / 4, slabs, out, flag, p, rOut);
    } else {
      dim3 grid(unsigned((cols + kThreads - 1) / kThreads), unsigned(slabs));
      colNormsKernel<<<grid, kThreads, 0, st>>>(G, t, rows, cols, slabs, out, flag, p, rOut);
    }
  } else {
    const int64_t blocks = std::min<int64_t>((rows + kThreads / 32 - 1) / (kThreads / 32), int64_t(smCount(dev)) * 16);
    const unsigned grid = unsigned(std::max<int64_t>(1, blocks));
    if (t == DType::F32 && cols % 4 == 0 && aligned16(G))
      rowNormsF32x4Kernel<<<grid, kThreads, 0, st>>>(static_cast<const float*>(G), rows, cols / 4, out, flag, p, rOut);
    else
      rowNormsKernel<<<grid, kThreads, 0, st>>>(G, t, rows, cols, out, flag, p, rOut);
  }
  return lastError("apolloGradNorms");
}

Status apolloStep(int dev, const ApolloTensor& T, const ApolloHyper& h, const AdamwCounters* counters,
                  const int32_t* flag, float* sP, float* sR, float* sChan, float* sBig, const float* fusedR) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "apolloStep");
  if (!ok.ok()) return ok;
  const int64_t m = T.rows, n = T.cols, r = T.rank;
  const bool left = apolloLeft(m, n);
  const int64_t ch = apolloChannels(m, n);
  if (h.updateProjGap < 1) return invalidArg("apolloStep: updateProjGap must be positive");
  if (fusedR != nullptr && r != 1) return invalidArg("apolloStep: the fused projection is rank 1 only");
  // Fused rank 1: the scan left R's partial sums in fusedR; else P and the GEMM make R here.
  const float* R = fusedR ? fusedR : sR;
  const int64_t rSlabs = fusedR ? apolloNormSlabs(m, n) : 0;
  if (!fusedR) ok = projectByGemm(dev, st, T, h, counters, flag, sP, sR, sBig);
  if (!ok.ok()) return ok;
  // Adam on R with the channels' sums (a block's share of the decision's sums into part), then
  // the decision (one warp) into dec.
  const int64_t adamBlocks = std::min<int64_t>(apolloAdamBlocks(m, n), int64_t(smCount(dev)) * 16);
  double* part = reinterpret_cast<double*>(sChan + apolloChanDoublesAt(m, n));
  double* dec = part + 4 * apolloAdamBlocks(m, n);
  const int64_t slabs = apolloNormSlabs(m, n);
  if (left)
    adamColumnsKernel<<<unsigned(adamBlocks), kThreads, 0, st>>>(R, rSlabs, T.expAvg, T.expAvgSq, ch, r, h.beta1, h.beta2,
                                                                 h.eps, sChan, T.gradNorms, slabs, part, flag);
  else
    adamRowsKernel<<<unsigned(adamBlocks), kThreads, 0, st>>>(R, rSlabs, T.expAvg, T.expAvgSq, ch, r, h.beta1, h.beta2, h.eps,
                                                              sChan, T.gradNorms, slabs, part, flag);
  ok = lastError("apollo Adam on R");
  if (!ok.ok()) return ok;
  decideKernel<<<1, kDecideThreads, 0, st>>>(h, part, adamBlocks, sChan, ch, T.prevNorm, counters, flag, dec);
  ok = lastError("apollo decision");
  if (!ok.ok()) return ok;
  // Enough blocks to cover the columns once per row slab and fill the device.
  const bool vec = T.paramDtype == DType::F32 && T.gradDtype == DType::F32 && n % 4 == 0 && aligned16(T.param) &&
                   aligned16(T.grad) && aligned16(sChan);
  const int64_t lanes = vec ? n / 4 : n;
  const unsigned gx = unsigned(std::max<int64_t>(1, std::min<int64_t>((lanes + kThreads - 1) / kThreads, 64)));
  const int64_t want = std::max<int64_t>(1, int64_t(smCount(dev)) * 16 / int64_t(gx));
  dim3 grid(gx, unsigned(std::min<int64_t>(std::min<int64_t>(m, want), 65535)));
  if (vec) {
    auto* W = static_cast<float*>(T.param);
    auto* G = static_cast<const float*>(T.grad);
    const bool chn = h.channel != 0;
    if (left) updateF32x4Kernel<true><<<grid, kThreads, 0, st>>>(W, G, m, n / 4, sChan, ch, dec, chn, flag);
    else updateF32x4Kernel<false><<<grid, kThreads, 0, st>>>(W, G, m, n / 4, sChan, ch, dec, chn, flag);
    return lastError("apollo update");
  }
  switch (T.paramDtype) {
    case DType::F32: launchUpdate<DType::F32>(T.gradDtype, grid, st, T.param, T.grad, m, n, left, sChan, ch, dec, h.channel != 0, flag); break;
    case DType::BF16: launchUpdate<DType::BF16>(T.gradDtype, grid, st, T.param, T.grad, m, n, left, sChan, ch, dec, h.channel != 0, flag); break;
    default: launchUpdate<DType::F16>(T.gradDtype, grid, st, T.param, T.grad, m, n, left, sChan, ch, dec, h.channel != 0, flag); break;
  }
  return lastError("apollo update");
}

}  // namespace gpu
}  // namespace slimopt
