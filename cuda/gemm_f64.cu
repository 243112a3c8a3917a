// The f64-accumulating GEMM of gemm_f64.cuh. One template per operand type triple. K advances in
// slices through shared memory, where the operands are widened to f64 as they are stored
// (As[k][m], Bs[k][n]: the same layout whatever the transposes, each global read coalesced along
// the contiguous index).
//  * sm_80+: the FP64 tensor cores (mma.sync f64: each output a chain of exact f64 FMAs in k order;
//    twice the SIMT FP64 rate on an H100/H200). A 256-thread block computes a 128 x 64 tile of C;
//    its 8 warps form a 4 x 2 grid of 32 x 32 warp tiles (32 f64 accumulators per thread). Two
//    shared f64 slices: the next K slice is loaded into registers (as stored, f32 or f64) while the
//    current one is multiplied, then widened into the other; one barrier per slice.
//    gemm64TensorKernel: slices of 16 and m16n8k4 mma (2 x 4 tiles per warp). The previous kernel
//    (slices of 8, m8n8k4) ran the refresh's products at 15-18 TFLOP/s on the H200: m8n8k4 issues
//    at half the FP64 tensor rate there (33 of 66 TFLOP/s measured, m16n8k4 63), and each slice of
//    8 gave a load one slice's few mma to land in and paid a barrier. Now 31-41 TFLOP/s on the same
//    shapes, where shared memory bandwidth (fragment reads and widened stores) and the mma share the
//    load. Fragments (PTX ISA, m16n8k4 .f64; lane = 4g + t): A (row) holds A[g][t], A[g + 8][t],
//    B (col) B[t][g], C C[g][2t], C[g][2t + 1], C[g + 8][2t], C[g + 8][2t + 1]. With rows of
//    128 + 4 (A) and 64 + 4 (B) doubles a half-warp's fragment read (k = t, m or n = g) touches 16
//    distinct bank pairs, as does its store of a widened slice.
//    (Both sum each output in the same k order; with the previous kernel the refresh's projectors
//    were bit-identical in bc59ac7's run, bench/results/NVIDIA-H200-2026-11-25-25/.)
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
#include <atomic>
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

// d += a b for one 16 x 8 x 4 f64 tile (fragments as PTX's m16n8k4 .f64: a = A[g][t], A[g + 8][t];
// b = B[t][g]; d = D[g][2t], D[g][2t + 1], D[g + 8][2t], D[g + 8][2t + 1]). sm_90+ runs it as one
// instruction: there the m8n8k4 shape issues at half the FP64 tensor rate (~33 of ~66 TFLOP/s in
// a standalone H200 run, m16n8k4 ~63; bench/results/NVIDIA-H200-2026-11-25-25/README.md). Older
// GPUs run it as two m8n8k4. Each output is a chain of f64 FMAs in k order with either shape: the
// kernel on it gave the m8n8k4 kernel's bits on the 303 cases of that run and in the refresh.
__device__ __forceinline__ void mma16x8x4(double (&d)[4], const double (&a)[2], double b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mma.sync.aligned.m16n8k4.row.col.f64.f64.f64.f64 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
               : "+d"(d[0]), "+d"(d[1]), "+d"(d[2]), "+d"(d[3]) : "d"(a[0]), "d"(a[1]), "d"(b));
#else
  mmaF64(d[0], d[1], a[0], b);
  mmaF64(d[2], d[3], a[1], b);
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

// The tensor-core kernel's tile: 128 x 64 of C per 256-thread block; its 8 warps form a 4 x 2 grid
// of 32 x 32 warp tiles (32 f64 accumulators per thread): per k step of 4, 8 fragment reads from
// shared memory per 8 m16n8k4, where 32 x 16 warp tiles took 6 per 8.
constexpr int TBM = 128, TBN = 64;

// ---- gemm64TensorKernel: K slices of 16 (see the header).
constexpr int TBK = 16;
// Doubles per shared row: 4 mod 16, so that both a fragment read (k = t, m or n = g) and a
// widened slice's store (4 k x 4 rows, or 16 consecutive rows, per half-warp) touch 16 distinct
// bank pairs per half-warp (+8, the old pad, puts k = t and k = t + 2 on the same banks: 9% slower).
constexpr int kStrideA = TBM + 4, kStrideB = TBN + 4;
constexpr int kPerA = TBM * TBK / kThreads, kPerB = TBN * TBK / kThreads;  // elements per thread
static_assert(kPerA == 8 && kPerB == 4, "the element maps below assume 8 warps over 16 x 128 and 16 x 64");
static_assert(BK % TBK == 0, "split-K ranges are whole slices");
// Two f64 slices of A and B: 51,200 bytes, over the 48 KB of static shared memory.
constexpr size_t kTensorSmemBytes = size_t(2) * TBK * (kStrideA + kStrideB) * sizeof(double);

// v clamped to [-1, hi]: a count of rows or k left, small enough for int compares.
__device__ __forceinline__ int clampLeft(int64_t v, int hi) { return int(v < -1 ? -1 : v > hi ? hi : v); }

// One thread's share of every K slice of one operand: N elements, element q at k offset
// pp0 + q * kPpStep and row (A) or column (B) mn0 of the block's tile (not k-contiguous), or at k
// offset pp0 and row mn0 + q * kMnStep (k-contiguous). A warp reads 8 k x 4 rows of a k-contiguous
// operand (whole 32-byte sectors; per half-warp 4 k x 4 rows) or 32 consecutive rows or columns of
// the other layout (128 bytes): coalesced reads, and stores of the widened slice without bank
// conflicts (kStrideA/B).
template <typename T, int N, int EXT, int STRIDE>
struct Feed {
  static constexpr int kGroups = EXT / 32;     // warps side by side along a k row (not k-contiguous)
  static constexpr int kPpStep = 8 / kGroups;  // k between elements q and q + 1 (not k-contiguous)
  static constexpr int kMnStep = 16;           // rows between elements q and q + 1 (k-contiguous)
  // Per thread only what differs between threads: the layout's strides are recomputed from the
  // kernel's parameters (uniform), which leaves the registers to the mma fragments.
  const T* src;  // element 0 of the next slice to load
  int pp0;       // element 0's k in the slice
  int mnLeft;    // rows (A) or columns (B) of the operand from element 0's on, clamped to [-1, EXT]
  int wide0;     // element 0's index in a widened slice ([TBK][STRIDE] f64)

  __device__ __forceinline__ Feed(const T* base, int64_t o0, int64_t limit, bool kContiguous, int64_t ld,
                                  int64_t kBegin) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int mn0;
    if (kContiguous) {
      pp0 = (lane & 3) + 4 * (lane >> 4) + 8 * (warp & 1);
      mn0 = 4 * (warp >> 1) + ((lane >> 2) & 3);
    } else {
      pp0 = warp / kGroups;
      mn0 = 32 * (warp % kGroups) + lane;
    }
    const int64_t o = o0 + mn0;
    mnLeft = clampLeft(limit - o, EXT);
    const int64_t first = kContiguous ? o * ld + kBegin + pp0 : (kBegin + pp0) * ld + o;
    src = base + (mnLeft > 0 ? first : 0);  // no pointer formed past the operand's rows or columns
    wide0 = pp0 * STRIDE + mn0;
  }

  // The slice whose first k is p0 into v (zeros past kEnd and past the operand's edge; past kEnd
  // every load is predicated off).
  __device__ __forceinline__ void load(T (&v)[N], int64_t p0, int64_t kEnd, bool kContiguous, int64_t ld) {
    const int kLeft = clampLeft(kEnd - p0 - pp0, TBK);
    const int64_t qStride = kContiguous ? kMnStep * ld : kPpStep * ld;
#pragma unroll
    for (int q = 0; q < N; ++q) {
      const bool present = kContiguous ? q * kMnStep < mnLeft && 0 < kLeft : 0 < mnLeft && q * kPpStep < kLeft;
      v[q] = present ? src[q * qStride] : T(0);
    }
    src += kContiguous ? int64_t(TBK) : TBK * ld;
  }

  // v widened to f64 into wide (a [TBK][STRIDE] f64 slice).
  __device__ __forceinline__ void store(const T (&v)[N], double* wide, bool kContiguous) const {
    const int wideStep = kContiguous ? kMnStep : kPpStep * STRIDE;
#pragma unroll
    for (int q = 0; q < N; ++q) wide[wide0 + q * wideStep] = double(v[q]);
  }
};

// The k step of a slice after whose mma the next slice, loaded into registers at the slice's start,
// is widened into the other f64 buffer: late enough for the loads to have landed, early enough for
// the stores to overlap the last step's mma. Measured on the H200 (steps 4 / 8 / 12 / after the
// last): 32 / 32 / 36 / 35 TFLOP/s on shape 256 x 4096 x 4096, f32 operands.
constexpr int kStoreStep = 12;

// Two f64 shared slices, the next slice loaded into registers while the current one is multiplied,
// one barrier per slice; slices of 16 and m16n8k4: against the previous kernel (slices of 8,
// m8n8k4; removed after bc59ac7's run) half the barriers and twice the time for each load to land,
// and the full FP64 tensor rate on sm_90+ (see mma16x8x4). Per output the sum is that kernel's: f64
// FMAs over k in increasing order within each split-K range (multiples of BK). The ranges follow
// the tile count, so the bits differ from the SIMT kernel's where it splits differently.
// Where a range's length is not a multiple of 16, the last slice adds up to one more step of exact
// zeros (0 x 0), which leaves an f64 sum unchanged (but for a sum of -0, which becomes +0).
template <typename TA, typename TB, typename TC>
__global__ void __launch_bounds__(kThreads, 2) gemm64TensorKernel(const K64 k) {
  extern __shared__ __align__(16) double smem[];
  double* const As = smem;                     // [2][TBK][kStrideA]
  double* const Bs = As + 2 * TBK * kStrideA;  // [2][TBK][kStrideB]
  const Gemm64Args& g = k.g;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int gq = lane / 4, tq = lane % 4;
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;  // the warp tile's origin in the block tile
  const int64_t i0 = int64_t(blockIdx.y) * TBM, j0 = int64_t(blockIdx.x) * TBN;
  const int64_t kBegin = int64_t(blockIdx.z) * k.kPer, kEnd = min(g.K, kBegin + k.kPer);
  const int slices = int((max(kEnd - kBegin, int64_t(0)) + TBK - 1) / TBK);
  // A is k-contiguous unless transposed (M x K rows), B only when transposed (N x K rows).
  Feed<TA, kPerA, TBM, kStrideA> fa(static_cast<const TA*>(g.A), i0, g.M, !g.transA, g.lda, kBegin);
  Feed<TB, kPerB, TBN, kStrideB> fb(static_cast<const TB*>(g.B), j0, g.N, g.transB, g.ldb, kBegin);
  TA ra[kPerA];
  TB rb[kPerB];
  fa.load(ra, kBegin, kEnd, !g.transA, g.lda);
  fb.load(rb, kBegin, kEnd, g.transB, g.ldb);
  fa.store(ra, As, !g.transA);
  fb.store(rb, Bs, g.transB);
  double acc[2][4][4];  // [16-row tile][8-column tile]: (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1)
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int h = 0; h < 4; ++h) acc[mt][nt][h] = 0.0;
  for (int s = 0; s < slices; ++s) {
    const int cur = s & 1;
    // Slice s is complete in buffer cur; the other buffer was last read before this barrier.
    __syncthreads();
    fa.load(ra, kBegin + int64_t(s + 1) * TBK, kEnd, !g.transA, g.lda);
    fb.load(rb, kBegin + int64_t(s + 1) * TBK, kEnd, g.transB, g.ldb);
    const double* const a0 = As + cur * TBK * kStrideA + tq * kStrideA + wm + gq;
    const double* const b0 = Bs + cur * TBK * kStrideB + tq * kStrideB + wn + gq;
#pragma unroll
    for (int kk = 0; kk < TBK; kk += 4) {
      double a[2][2], b[4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) a[mt][h] = a0[kk * kStrideA + mt * 16 + 8 * h];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) b[nt] = b0[kk * kStrideB + nt * 8];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma16x8x4(acc[mt][nt], a[mt], b[nt]);
      if (kk == kStoreStep) {
        fa.store(ra, As + (cur ^ 1) * TBK * kStrideA, !g.transA);
        fb.store(rb, Bs + (cur ^ 1) * TBK * kStrideB, g.transB);
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int64_t i = i0 + wm + mt * 16 + 8 * hi + gq;
      if (i >= g.M) continue;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t j = j0 + wn + nt * 8 + 2 * tq + h;
          if (j < g.N) put<TC>(k, i, j, acc[mt][nt][2 * hi + h]);
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

enum class Kernel { Simt, Tensor };

// Lets gemm64TensorKernel<TA, TB, TC> have its dynamic shared memory (over the 48 KB default) on
// dev, the current device, once per device; an error comes back as is.
template <typename TA, typename TB, typename TC>
cudaError_t allowSmem(int dev) {
  static std::atomic<uint64_t> done{0};  // bit d: set on device d
  const uint64_t bit = dev >= 0 && dev < 64 ? uint64_t(1) << dev : 0;
  if (bit != 0 && (done.load() & bit) != 0) return cudaSuccess;
  const auto kernel = gemm64TensorKernel<TA, TB, TC>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(kTensorSmemBytes));
  // The whole carveout to shared memory, so that two blocks (2 x 51 KB) fit per SM where they can
  // (as measured; the default carveout is only a preference for the driver to weigh).
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, int(cudaSharedmemCarveoutMaxShared));
  if (e == cudaSuccess) done.fetch_or(bit);
  return e;
}

template <typename TA, typename TB, typename TC>
cudaError_t launch(int dev, cudaStream_t st, const K64& k, dim3 grid, Kernel kind) {
  if (kind == Kernel::Tensor) {
    const cudaError_t e = allowSmem<TA, TB, TC>(dev);
    if (e != cudaSuccess) return e;
    gemm64TensorKernel<TA, TB, TC><<<grid, kThreads, kTensorSmemBytes, st>>>(k);
  } else {
    gemm64Kernel<TA, TB, TC><<<grid, kThreads, 0, st>>>(k);
  }
  if (k.partials != nullptr) {
    const int64_t mn = k.g.M * k.g.N;
    const unsigned blocks = unsigned(std::min<int64_t>((mn + 255) / 256, 1024));
    splitSumKernel<TC><<<blocks, 256, 0, st>>>(k.partials, int(grid.z), k.g.M, k.g.N, static_cast<TC*>(k.g.C), k.g.ldc);
  }
  return cudaSuccess;
}

template <typename TA, typename TB>
cudaError_t launchC(int dev, cudaStream_t st, const K64& k, dim3 grid, Kernel kind) {
  if (k.g.cType == Real::F32) return launch<TA, TB, float>(dev, st, k, grid, kind);
  return launch<TA, TB, double>(dev, st, k, grid, kind);
}

template <typename TA>
cudaError_t launchB(int dev, cudaStream_t st, const K64& k, dim3 grid, Kernel kind) {
  if (k.g.bType == Real::F32) return launchC<TA, float>(dev, st, k, grid, kind);
  return launchC<TA, double>(dev, st, k, grid, kind);
}

}  // namespace

Status gemm64(int dev, cudaStream_t st, const Gemm64Args& g) {
  if (g.M <= 0 || g.N <= 0) return Status();
  if ((g.N + BN - 1) / BN > INT32_MAX || (g.M + BM - 1) / BM > 65535) return invalidArg("gemm64: too large");  // either tile
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return lastError("gemm64");
  static const bool simt = envIs("SLIMOPT_GEMM64", "simt");  // the SIMT kernel everywhere (diagnostics)
  const bool tensor = major >= 8 && !simt;
  const Kernel kind = tensor ? Kernel::Tensor : Kernel::Simt;
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
  const cudaError_t set = g.aType == Real::F32 ? launchB<float>(dev, st, k, grid, kind)
                                                : launchB<double>(dev, st, k, grid, kind);
  Status ok = set != cudaSuccess ? statusOf(set, "gemm64 (shared memory size)") : lastError("gemm64");
  if (k.partials != nullptr) {
    const Status freed = statusOf(cudaFreeAsync(k.partials, st), "gemm64 (split workspace)");
    if (ok.ok()) ok = freed;
  }
  return ok;
}

}  // namespace gpu
}  // namespace slimopt
