// The f64-accumulating GEMM of gemm_f64.cuh. One template per operand type triple. K advances in
// slices through shared memory, where the operands are widened to f64 as they are stored
// (As[k][m], Bs[k][n]: the same layout whatever the transposes, each global read coalesced along
// the contiguous index).
//  * sm_80+: the FP64 tensor cores (mma.sync m8n8k4 f64, exact f64 products and sums; twice the
//    SIMT FP64 rate on an H100/H200). A 256-thread block computes a 128 x 64 tile of C in K slices
//    of 8; its 8 warps form a 4 x 2 grid of 32 x 32 warp tiles (4 x 4 mma tiles, 32 f64
//    accumulators per thread). Two shared buffers: the next slice is read into registers while the
//    current one is multiplied. Fragments (PTX ISA, m8n8k4 .f64; lane = 4g + t): A (row) holds
//    A[g][t], B (col) B[t][g], C the pair C[g][2t], C[g][2t+1]. With rows of 128 + 8 (A) and
//    64 + 8 (B) doubles a warp's fragment read (k = t, m or n = g) touches every bank pair exactly
//    twice: the minimum for 32 doubles.
//  * Older GPUs: SIMT FMAs, a 64 x 64 tile of C per 256-thread block in K slices of 16, each
//    thread owning a 4 x 4 block of C at stride 16 (rows ty + 16u,
//    columns tx + 16w), so that a warp's shared memory reads are broadcasts (A) or consecutive
//    doubles (B).
// Split-K. The refresh's k x k products over the gradient's side (k = 256, K = 4096 or more) have
// 16 output tiles for 132 SMs: one took 480 us on the H200 (bench/results/NVIDIA-H200-2026-11-25-3/
// ncu-refresh-*.txt). With fewer tiles than SMs and a long K, blockIdx.z takes one of s contiguous K
// ranges (multiples of BK) and writes its f64 partial tile to a stream-ordered workspace, and
// splitSumKernel adds the s partials in index order (the same bits on every run) into C.
#include "gemm_f64.cuh"
#include <algorithm>
#include <cstdlib>
#include <string>

// An sm_75 pass of the release build compiles the tensor-core kernel empty (never launched there).
#pragma nv_diag_suppress 177

namespace slimopt {
namespace gpu {

namespace {

constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4, kThreads = 256;  // the SIMT kernel's tile

template <typename T>
__device__ __forceinline__ double ld(const void* p, int64_t i) {
  return double(static_cast<const T*>(p)[i]);
}

// The K slice [p0, p0 + BK) of op(A) rows [i0, i0 + BM) and op(B) columns [j0, j0 + BN) into
// As[k][m], Bs[k][n] (row stride S doubles), widened to f64, zeros past the edges.
template <typename TA, typename TB, int S>
__device__ __forceinline__ void loadSlice(const Gemm64Args& g, int64_t i0, int64_t j0, int64_t p0, double (*As)[S],
                                          double (*Bs)[S]) {
  const int tid = threadIdx.x;
  for (int e = tid; e < BM * BK; e += kThreads) {
    int ii, pp;
    if (g.transA) { ii = e % BM; pp = e / BM; } else { pp = e % BK; ii = e / BK; }  // coalesced either way
    const int64_t i = i0 + ii, p = p0 + pp;
    As[pp][ii] = (i < g.M && p < g.K) ? ld<TA>(g.A, g.transA ? p * g.lda + i : i * g.lda + p) : 0.0;
  }
  for (int e = tid; e < BK * BN; e += kThreads) {
    int jj, pp;
    if (g.transB) { pp = e % BK; jj = e / BK; } else { jj = e % BN; pp = e / BN; }
    const int64_t j = j0 + jj, p = p0 + pp;
    Bs[pp][jj] = (j < g.N && p < g.K) ? ld<TB>(g.B, g.transB ? j * g.ldb + p : p * g.ldb + j) : 0.0;
  }
}

// d += a b for one m8n8k4 f64 tile (a, b: this lane's fragment elements; d: its accumulator pair).
__device__ __forceinline__ void mmaF64(double& d0, double& d1, double a, double b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0,%1}, {%2}, {%3}, {%0,%1};\n"
               : "+d"(d0), "+d"(d1)
               : "d"(a), "d"(b));
#endif
}

// The kernels' arguments: the product, the K range of one blockIdx.z (a multiple of BK; K when not
// split), and the split's partial tiles ([s][M][N] f64) or null (then C is written).
struct K64 {
  Gemm64Args g;
  int64_t kPer;
  double* partials;
};

// Writes one element of the block's result: to its split's partial tile, or to C in C's type.
template <typename TC>
__device__ __forceinline__ void put(const K64& k, int64_t i, int64_t j, double v) {
  if (k.partials != nullptr) k.partials[(int64_t(blockIdx.z) * k.g.M + i) * k.g.N + j] = v;
  else static_cast<TC*>(k.g.C)[i * k.g.ldc + j] = TC(v);
}

template <typename TC>
__global__ void splitSumKernel(const double* __restrict__ parts, int s, int64_t M, int64_t N, TC* __restrict__ C,
                               int64_t ldc) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < M * N; e += int64_t(gridDim.x) * blockDim.x) {
    double v = 0.0;
    for (int z = 0; z < s; ++z) v += parts[int64_t(z) * M * N + e];
    C[(e / N) * ldc + e % N] = TC(v);
  }
}

// The tensor-core kernel's tile: 128 x 64 of C per 256-thread block, K slices of 8; its 8 warps
// form a 4 x 2 grid of 32 x 32 warp tiles (4 x 4 mma tiles, 32 f64 accumulators per thread): 8
// fragment reads from shared memory per 16 mma, where 32 x 16 warp tiles took 6 per 8.
constexpr int TBM = 128, TBN = 64, TBK = 8;
constexpr int kStrideA = TBM + 8, kStrideB = TBN + 8;  // doubles per shared row (see the header)
constexpr int kPerA = TBM * TBK / kThreads, kPerB = TBN * TBK / kThreads;
static_assert(TBM * TBK % kThreads == 0 && TBN * TBK % kThreads == 0, "whole elements per thread");
static_assert(BK % TBK == 0, "split-K ranges are whole slices of either kernel");

// One thread's share of a K slice of one operand (the element at slice p0 is base + p0 * step,
// present when `in` and pp + p0 < kEnd), the offsets that do not change from slice to slice
// worked out once.
template <int N>
struct Stage {
  int64_t base[N];
  int pp[N], mn[N];
  bool in[N];
};

// Operand A (rows i0.. of op(A), TBM of them) or B (columns j0.. of op(B), TBN): element e of the
// slice is (mn, pp) with the contiguous index fastest, so that a warp's reads coalesce.
template <int N, int EXT>
__device__ __forceinline__ void stage(int64_t o0, int64_t limit, bool kContiguous, int64_t ld, Stage<N>& s) {
#pragma unroll
  for (int q = 0; q < N; ++q) {
    const int e = threadIdx.x + q * kThreads;
    int mn, pp;
    if (kContiguous) { pp = e % TBK; mn = e / TBK; } else { mn = e % EXT; pp = e / EXT; }
    const int64_t o = o0 + mn;
    s.pp[q] = pp; s.mn[q] = mn; s.in[q] = o < limit;
    s.base[q] = kContiguous ? o * ld + pp : int64_t(pp) * ld + o;
  }
}

// The slice at p0 of one operand into registers (zeros past the edges), widened to f64.
template <typename T, int N>
__device__ __forceinline__ void fetch(const void* src, const Stage<N>& s, int64_t p0, int64_t step, int64_t kEnd,
                                      double (&v)[N]) {
#pragma unroll
  for (int q = 0; q < N; ++q)
    v[q] = (s.in[q] && p0 + s.pp[q] < kEnd) ? ld<T>(src, s.base[q] + p0 * step) : 0.0;
}

// Two shared buffers and the next slice fetched into registers while the current one is
// multiplied: one barrier per slice, and the global loads' latency hidden behind the mma work (the
// single-buffer version ran the refresh's f64-summed products at ~7-12 TFLOP/s on the H200,
// bench/results/NVIDIA-H200-2026-11-25-10/ncu-refresh-r512-*.txt). Within a split-K range each
// output's sum runs over K in index order; the ranges follow the tile count, so the bits differ
// from the SIMT kernel's where it splits differently.
template <typename TA, typename TB, typename TC>
__global__ void __launch_bounds__(kThreads, 2) gemm64TensorKernel(const K64 k) {
  const Gemm64Args& g = k.g;
  __shared__ double As[2][TBK][kStrideA];
  __shared__ double Bs[2][TBK][kStrideB];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int gq = lane / 4, tq = lane % 4;
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;  // the warp tile's origin in the block tile
  const int64_t i0 = int64_t(blockIdx.y) * TBM, j0 = int64_t(blockIdx.x) * TBN;
  double acc[4][4][2];
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = 0.0;
  const int64_t kBegin = int64_t(blockIdx.z) * k.kPer, kEnd = min(g.K, kBegin + k.kPer);
  // A is k-contiguous unless transposed (M x K rows), B only when transposed (N x K rows).
  const int64_t stepA = g.transA ? g.lda : 1, stepB = g.transB ? 1 : g.ldb;
  Stage<kPerA> sa;
  Stage<kPerB> sb;
  stage<kPerA, TBM>(i0, g.M, !g.transA, g.lda, sa);
  stage<kPerB, TBN>(j0, g.N, g.transB, g.ldb, sb);
  double ra[kPerA], rb[kPerB];
  fetch<TA>(g.A, sa, kBegin, stepA, kEnd, ra);
  fetch<TB>(g.B, sb, kBegin, stepB, kEnd, rb);
  int buf = 0;
  for (int64_t p0 = kBegin; p0 < kEnd; p0 += TBK) {
#pragma unroll
    for (int q = 0; q < kPerA; ++q) As[buf][sa.pp[q]][sa.mn[q]] = ra[q];
#pragma unroll
    for (int q = 0; q < kPerB; ++q) Bs[buf][sb.pp[q]][sb.mn[q]] = rb[q];
    __syncthreads();
    if (p0 + TBK < kEnd) {
      fetch<TA>(g.A, sa, p0 + TBK, stepA, kEnd, ra);
      fetch<TB>(g.B, sb, p0 + TBK, stepB, kEnd, rb);
    }
#pragma unroll
    for (int kk = 0; kk < TBK; kk += 4) {
      double a[4], b[4];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) a[mt] = As[buf][kk + tq][wm + mt * 8 + gq];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) b[nt] = Bs[buf][kk + tq][wn + nt * 8 + gq];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mmaF64(acc[mt][nt][0], acc[mt][nt][1], a[mt], b[nt]);
    }
    // The other buffer was last read before this slice's barrier: free to fill next.
    buf ^= 1;
  }
#pragma unroll
  for (int mt = 0; mt < 4; ++mt) {
    const int64_t i = i0 + wm + mt * 8 + gq;
    if (i >= g.M) continue;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t j = j0 + wn + nt * 8 + 2 * tq + h;
        if (j < g.N) put<TC>(k, i, j, acc[mt][nt][h]);
      }
  }
}

template <typename TA, typename TB, typename TC>
__global__ void __launch_bounds__(kThreads) gemm64Kernel(const K64 k) {
  const Gemm64Args& g = k.g;
  __shared__ double As[BK][BM + 1];
  __shared__ double Bs[BK][BN + 1];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int64_t i0 = int64_t(blockIdx.y) * BM, j0 = int64_t(blockIdx.x) * BN;
  double acc[TM][TN];
#pragma unroll
  for (int u = 0; u < TM; ++u)
#pragma unroll
    for (int w = 0; w < TN; ++w) acc[u][w] = 0.0;
  const int64_t kBegin = int64_t(blockIdx.z) * k.kPer, kEnd = min(g.K, kBegin + k.kPer);
  for (int64_t p0 = kBegin; p0 < kEnd; p0 += BK) {
    loadSlice<TA, TB, BM + 1>(g, i0, j0, p0, As, Bs);
    __syncthreads();
#pragma unroll
    for (int pp = 0; pp < BK; ++pp) {
      double a[TM], b[TN];
#pragma unroll
      for (int u = 0; u < TM; ++u) a[u] = As[pp][ty + 16 * u];
#pragma unroll
      for (int w = 0; w < TN; ++w) b[w] = Bs[pp][tx + 16 * w];
#pragma unroll
      for (int u = 0; u < TM; ++u)
#pragma unroll
        for (int w = 0; w < TN; ++w) acc[u][w] = fma(a[u], b[w], acc[u][w]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int u = 0; u < TM; ++u) {
    const int64_t i = i0 + ty + 16 * u;
    if (i >= g.M) continue;
#pragma unroll
    for (int w = 0; w < TN; ++w) {
      const int64_t j = j0 + tx + 16 * w;
      if (j < g.N) put<TC>(k, i, j, acc[u][w]);
    }
  }
}

template <typename TA, typename TB, typename TC>
void launch(cudaStream_t st, const K64& k, dim3 grid, bool tensor) {
  if (tensor) gemm64TensorKernel<TA, TB, TC><<<grid, kThreads, 0, st>>>(k);
  else gemm64Kernel<TA, TB, TC><<<grid, kThreads, 0, st>>>(k);
  if (k.partials != nullptr) {
    const int64_t mn = k.g.M * k.g.N;
    const unsigned blocks = unsigned(std::min<int64_t>((mn + 255) / 256, 1024));
    splitSumKernel<TC><<<blocks, 256, 0, st>>>(k.partials, int(grid.z), k.g.M, k.g.N, static_cast<TC*>(k.g.C), k.g.ldc);
  }
}

template <typename TA, typename TB>
void launchC(cudaStream_t st, const K64& k, dim3 grid, bool tensor) {
  if (k.g.cType == Real::F32) launch<TA, TB, float>(st, k, grid, tensor);
  else launch<TA, TB, double>(st, k, grid, tensor);
}

template <typename TA>
void launchB(cudaStream_t st, const K64& k, dim3 grid, bool tensor) {
  if (k.g.bType == Real::F32) launchC<TA, float>(st, k, grid, tensor);
  else launchC<TA, double>(st, k, grid, tensor);
}

}  // namespace

Status gemm64(int dev, cudaStream_t st, const Gemm64Args& g) {
  if (g.M <= 0 || g.N <= 0) return Status();
  if ((g.N + BN - 1) / BN > INT32_MAX || (g.M + BM - 1) / BM > 65535) return invalidArg("gemm64: too large");  // either tile
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return lastError("gemm64");
  static const bool simt = envIs("SLIMOPT_GEMM64", "simt");  // the SIMT kernel everywhere (diagnostics)
  const bool tensor = major >= 8 && !simt;
  const int64_t tm = tensor ? TBM : BM, tn = tensor ? TBN : BN;
  const int64_t tiles = ((g.N + tn - 1) / tn) * ((g.M + tm - 1) / tm), sms = smCount(dev);
  // Splits: about two blocks per SM, each K range at least kMinSplitK long, at most kMaxSplits.
  constexpr int64_t kMinSplitK = 256, kMaxSplits = 32;
  int64_t splits = 1;
  if (tiles < sms && g.K >= 2 * kMinSplitK)
    splits = std::max<int64_t>(1, std::min({(2 * sms + tiles - 1) / tiles, g.K / kMinSplitK, kMaxSplits}));
  K64 k{g, g.K, nullptr};
  if (splits > 1) {
    const int64_t per = (g.K + splits - 1) / splits;
    k.kPer = (per + BK - 1) / BK * BK;
    splits = (g.K + k.kPer - 1) / k.kPer;
    // Without the workspace (out of memory) the product runs unsplit.
    if (cudaMallocAsync(reinterpret_cast<void**>(&k.partials), size_t(splits * g.M * g.N) * sizeof(double), st) != cudaSuccess) {
      cudaGetLastError();
      k.partials = nullptr;
      k.kPer = g.K;
      splits = 1;
    }
  }
  const dim3 grid(unsigned((g.N + tn - 1) / tn), unsigned((g.M + tm - 1) / tm), unsigned(splits));
  if (g.aType == Real::F32) launchB<float>(st, k, grid, tensor);
  else launchB<double>(st, k, grid, tensor);
  Status ok = lastError("gemm64");
  if (k.partials != nullptr) {
    const Status freed = statusOf(cudaFreeAsync(k.partials, st), "gemm64 (split workspace)");
    if (ok.ok()) ok = freed;
  }
  return ok;
}

}  // namespace gpu
}  // namespace slimopt
