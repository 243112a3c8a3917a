// The f64-accumulating GEMM of gemm_f64.cuh. One template per operand type triple; each thread
// owns a 4 x 4 block of C at stride 16 (rows ty + 16u, columns tx + 16w), so that a warp's shared
// memory reads are broadcasts (A) or consecutive doubles (B). K slices of 16 through shared memory.
#include "gemm_f64.cuh"

namespace slimopt {
namespace gpu {

namespace {

constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4, kThreads = 256;

template <typename T>
__device__ __forceinline__ double ld(const void* p, int64_t i) {
  return double(static_cast<const T*>(p)[i]);
}

template <typename TA, typename TB, typename TC>
__global__ void __launch_bounds__(kThreads) gemm64Kernel(const Gemm64Args g) {
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
  for (int64_t p0 = 0; p0 < g.K; p0 += BK) {
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
  TC* C = static_cast<TC*>(g.C);
#pragma unroll
  for (int u = 0; u < TM; ++u) {
    const int64_t i = i0 + ty + 16 * u;
    if (i >= g.M) continue;
#pragma unroll
    for (int w = 0; w < TN; ++w) {
      const int64_t j = j0 + tx + 16 * w;
      if (j < g.N) C[i * g.ldc + j] = TC(acc[u][w]);
    }
  }
}

template <typename TA, typename TB>
Status launchC(cudaStream_t st, const Gemm64Args& g, dim3 grid) {
  if (g.cType == Real::F32) gemm64Kernel<TA, TB, float><<<grid, kThreads, 0, st>>>(g);
  else gemm64Kernel<TA, TB, double><<<grid, kThreads, 0, st>>>(g);
  return statusOf(cudaGetLastError(), "gemm64");
}

template <typename TA>
Status launchB(cudaStream_t st, const Gemm64Args& g, dim3 grid) {
  return g.bType == Real::F32 ? launchC<TA, float>(st, g, grid) : launchC<TA, double>(st, g, grid);
}

}  // namespace

Status gemm64(cudaStream_t st, const Gemm64Args& g) {
  if (g.M <= 0 || g.N <= 0) return Status();
  if ((g.N + BN - 1) / BN > INT32_MAX || (g.M + BM - 1) / BM > 65535) return invalidArg("gemm64: too large");
  const dim3 grid(unsigned((g.N + BN - 1) / BN), unsigned((g.M + BM - 1) / BM));
  return g.aType == Real::F32 ? launchB<float>(st, g, grid) : launchB<double>(st, g, grid);
}

}  // namespace gpu
}  // namespace slimopt
