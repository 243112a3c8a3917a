// Microbenchmark: GaLore's project-back C <- beta C + alpha A B (A: M x K, B: K x N, row-major, f32,
// K = r <= 128, TF32) against cublasSgemm (TF32 math) on the same data: which kernel structure
// streams W nearer the copy rate than cuBLAS (0.55-0.65 of it)? Self-contained but for harness.cuh
// (cuBLAS by dlopen):
//
//   nvcc -O3 -gencode arch=compute_90a,code=sm_90a -cudart static -o /tmp/back bench/micro/back_bulk.cu -ldl && /tmp/back
//
// Kernels, in the order they were tried (bench/results/NVIDIA-H200-2026-11-25-18/README.md has
// each one's runs):
//   backBulkKernel   mma.sync, the strip of B in registers (as cuda/gemm_tc.cu tcStreamKernel), C
//                    moved by the bulk-copy engine; tile order "phase" (block b keeps strip
//                    b % strips, row tiles b / strips + phases i) or "strip" (contiguous ranges)
//   backWgKernel     wgmma (A from registers, the strip swizzled in shared memory), a producer warp
//                    moving C by bulk copies
//   backRegKernel    wgmma, C loaded and stored in the accumulator layout
//   backStageKernel  wgmma, C in whole rows, the result staged in shared memory
//   backSplitKernel  two multiplying warpgroups, two memory warpgroups (setmaxnreg); APREF: A for
//                    the next tile in a second register set
//   backRingKernel   A through shared buffers by bulk copies issued by the memory side
//   backPrefKernel   A through shared buffers by cp.async issued by the multiplying warpgroup two
//                    tiles ahead: the form cuda/gemm_tc.cu tcStreamWgmmaKernel took
// "products only" / "stores only" rows leave out C's read (and write): what bounds each side.
// Each result is checked against a plain f32 kernel (relErr: max |diff| / max |ref|). Times:
// median of 20 launches over 4 rotating C buffers (beyond L2), CUDA events; fraction = (C read +
// written) / time over the bandwidth of a copy kernel in the same run.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "harness.cuh"

using micro::copyKernel;
using micro::fillKernel;
using micro::refKernel;
using micro::SgemmFn;
using micro::timeUs;

namespace {

constexpr int BM = 32, BN = 128, KMAX = 128, THREADS = 128, KSTEPS = KMAX / 8;
constexpr int A_STRIDE = KMAX + 4, C_STRIDE = BN + 8;  // floats; ldmatrix / float2 reads conflict-free
constexpr int A_FLOATS = BM * A_STRIDE, C_FLOATS = BM * C_STRIDE, STAGE_FLOATS = A_FLOATS + C_FLOATS;
constexpr int STAGES = 3;
constexpr size_t SMEM = size_t(STAGES) * STAGE_FLOATS * 4;

struct Args {
  int64_t M, N, K;
  const float* A; int64_t lda;
  const float* B; int64_t ldb;
  float* C; int64_t ldc;
  const float* alphaBeta;
  int strips, tilesM, phases;  // phase order: grid = strips * phases
};

__device__ __forceinline__ uint32_t smemAddr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ uint32_t toTf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ void mmaTf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}
__device__ __forceinline__ void mbarWait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra WAIT_%=;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}

// ORDER 0: phase order; 1: strip-major contiguous ranges. MOVE_C false: the products only.
template <int ORDER, bool MOVE_C>
__global__ void __launch_bounds__(THREADS, 2) backBulkKernel(const Args k) {
  extern __shared__ float4 smemRaw[];
  float* const ring = reinterpret_cast<float*>(smemRaw);
  __shared__ __align__(8) uint64_t full[STAGES];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  const int wn = warp * 32;
  const int K = int(k.K);
  const float alpha = k.alphaBeta[0], beta = k.alphaBeta[1];

  // This block's tiles: (row block, strip) for q = 0, 1, ...
  int strip, rb0, rbStep, count;
  if (ORDER == 0) {
    strip = blockIdx.x % k.strips;
    rb0 = blockIdx.x / k.strips;
    rbStep = k.phases;
    count = rb0 < k.tilesM ? (k.tilesM - rb0 + rbStep - 1) / rbStep : 0;
  } else {
    const int64_t tiles = int64_t(k.tilesM) * k.strips;
    const int t0 = int(tiles * blockIdx.x / gridDim.x), t1 = int(tiles * (blockIdx.x + 1) / gridDim.x);
    strip = t0 / k.tilesM;  // a block's range may cross into the next strip: handled per tile below
    rb0 = t0;               // tile index
    rbStep = 1;
    count = t1 - t0;
  }
  auto tileOf = [&](int q, int& rb, int& sj) {
    if (ORDER == 0) { rb = rb0 + q * rbStep; sj = strip; }
    else { const int t = rb0 + q; rb = t % k.tilesM; sj = t / k.tilesM; }
  };
  if (count == 0) return;

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smemAddr(&full[s])));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  // Warp 0 issues tile q's copies into stage s: lane r copies row r of A and of C.
  auto issueLoad = [&](int q, int s) {
    int rb, sj;
    tileOf(q, rb, sj);
    const int64_t i0 = int64_t(rb) * BM, j0 = int64_t(sj) * BN;
    const int rows = int(k.M - i0 < BM ? k.M - i0 : BM);
    const int width = int(k.N - j0 < BN ? k.N - j0 : BN);
    const uint32_t aBytes = uint32_t(K) * 4, cBytes = MOVE_C ? uint32_t(width) * 4 : 0;
    const uint32_t bar = smemAddr(&full[s]);
    if (lane == 0)
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(uint32_t(rows) * (aBytes + cBytes))
                   : "memory");
    __syncwarp();
    float* stage = ring + s * STAGE_FLOATS;
    if (lane < rows) {
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                   ::"r"(smemAddr(stage + lane * A_STRIDE)), "l"(k.A + (i0 + lane) * k.lda), "r"(aBytes), "r"(bar) : "memory");
      if (MOVE_C)
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                     ::"r"(smemAddr(stage + A_FLOATS + lane * C_STRIDE)), "l"(k.C + (i0 + lane) * k.ldc + j0), "r"(cBytes), "r"(bar)
                     : "memory");
    }
  };
  if (warp == 0)
    for (int q = 0; q < STAGES - 1 && q < count; ++q) issueLoad(q, q);

  uint32_t b[KSTEPS][4][2];
  int loadedStrip = -1;
  auto loadStrip = [&](int64_t j0) {
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      const int64_t col = j0 + wn + ni * 8 + gq;
      const float* bp = k.B + (col < k.N ? col : k.N - 1);
#pragma unroll
      for (int ks = 0; ks < KSTEPS; ++ks) {
        const int k0 = ks * 8 + tq < K ? ks * 8 + tq : K - 1, k1 = ks * 8 + tq + 4 < K ? ks * 8 + tq + 4 : K - 1;
        b[ks][ni][0] = __float_as_uint(__ldg(bp + int64_t(k0) * k.ldb));
        b[ks][ni][1] = __float_as_uint(__ldg(bp + int64_t(k1) * k.ldb));
      }
    }
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      const bool inside = j0 + wn + ni * 8 + gq < k.N;
#pragma unroll
      for (int ks = 0; ks < KSTEPS; ++ks) {
        const bool on = inside && ks * 8 < K;
        b[ks][ni][0] = on ? toTf32(__uint_as_float(b[ks][ni][0])) : 0u;
        b[ks][ni][1] = on ? toTf32(__uint_as_float(b[ks][ni][1])) : 0u;
      }
    }
  };
  const uint32_t aLane = smemAddr(ring + ((lane & 7) + ((lane >> 3) & 1) * 8) * A_STRIDE + (lane >> 4) * 4);

  if (ORDER == 0) loadStrip(int64_t(strip) * BN);
  for (int q = 0; q < count; ++q) {
    const int s = q % STAGES;
    int rb, sj;
    tileOf(q, rb, sj);
    if (ORDER == 1 && sj != loadedStrip) { loadStrip(int64_t(sj) * BN); loadedStrip = sj; }
    mbarWait(smemAddr(&full[s]), uint32_t((q / STAGES) & 1));
    const int64_t i0 = int64_t(rb) * BM, j0 = int64_t(sj) * BN;
    const int rows = int(k.M - i0 < BM ? k.M - i0 : BM);
    const int width = int(k.N - j0 < BN ? k.N - j0 : BN);
    float* const stage = ring + s * STAGE_FLOATS;
    const uint32_t aStage = aLane + uint32_t(s * STAGE_FLOATS * 4);
    float* cs = stage + A_FLOATS + gq * C_STRIDE + wn + 2 * tq;
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
      float acc[4][4] = {};
#pragma unroll
      for (int ks = 0; ks < KSTEPS; ++ks) {
        if (ks * 8 >= K) break;
        uint32_t a[4];
        ldmatrixX4(a, aStage + uint32_t((mi * 16 * A_STRIDE + ks * 8) * 4));
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mmaTf32(acc[ni], a, b[ks][ni]);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
          float2* p = reinterpret_cast<float2*>(cs + (mi * 16 + h * 8) * C_STRIDE + ni * 8);
          const float o0 = alpha * acc[ni][2 * h], o1 = alpha * acc[ni][2 * h + 1];
          if (MOVE_C) {
            const float2 c = *p;
            *p = make_float2(o0 + beta * c.x, o1 + beta * c.y);
          } else {
            *p = make_float2(o0, o1);
          }
        }
    }
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
    if (warp == 0) {
      if (MOVE_C && lane < rows)
        asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;"
                     ::"l"(k.C + (i0 + lane) * k.ldc + j0), "r"(smemAddr(stage + A_FLOATS + lane * C_STRIDE)),
                     "r"(uint32_t(width) * 4) : "memory");
      asm volatile("cp.async.bulk.commit_group;" ::: "memory");
      // Stage (q - 1) % S is refilled next: its stores must have read shared memory.
      asm volatile("cp.async.bulk.wait_group.read 1;" ::: "memory");
      __syncwarp();
      if (q + STAGES - 1 < count) issueLoad(q + STAGES - 1, (q + STAGES - 1) % STAGES);
    }
  }
  if (warp == 0) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}


// ---- warp-specialised wgmma version ---------------------------------------------------------
// Two consumer warpgroups take alternate 64 x 128 tiles of the block's strip (phase order); one
// producer warp moves C by the bulk-copy engine: S stages, each refilled once its tile's result
// has been stored. The strip of B (K <= 128 x 128 columns) is transposed into shared memory once,
// K-major in the 128-byte swizzle, k permuted within each 16 (mmaK) to match A's fragments, which
// each consumer thread loads straight from global memory (L2) as 16-byte groups.
constexpr int WG_BM = 64, WG_THREADS = 288, WG_STAGES = 4;
constexpr int WG_B_CHUNK = BN * 128;                  // bytes of 32 K-values of every strip column
constexpr int WG_STRIP_BYTES = (KMAX / 32) * WG_B_CHUNK;
constexpr int WG_STAGE_FLOATS = WG_BM * C_STRIDE;
constexpr size_t WG_SMEM = size_t(WG_STRIP_BYTES) + size_t(WG_STAGES) * WG_STAGE_FLOATS * 4 + 1024;

__device__ __forceinline__ uint32_t swizzled(int row, int kk) {
  return uint32_t(row * 128 + ((((kk >> 2) ^ row) & 7) << 4) + ((kk & 3) << 2));
}
__device__ __forceinline__ int mmaK(int kk) {
  const int j = kk >> 4, t = (kk >> 2) & 3, q = (kk >> 1) & 1, lo = kk & 1;
  return 8 * (2 * j + q) + t + 4 * lo;
}
__device__ __forceinline__ uint64_t wgmmaDescriptor(uint32_t address) {
  return uint64_t((address & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
__device__ __forceinline__ void wgmmaTf32(float (&d)[64], float a0, float a1, float a2, float a3, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(__float_as_uint(a0)), "r"(__float_as_uint(a1)), "r"(__float_as_uint(a2)), "r"(__float_as_uint(a3)),
        "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void fenceAccumulators(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The strip of B (K x 128 columns from j0, zeros past K and N) into shared memory by 8 warps:
// transposed to K-major, rows in the mma's k order (mmaK), rounded, in the 128-byte swizzle; a
// warp takes 8 rows x 16 columns per step, its 8 loads issued first.
__device__ void loadStripSwizzled(uint8_t* strip, const Args& k, int64_t j0, int warp, int lane) {
  const int K = int(k.K);
  for (int u0 = warp; u0 < KMAX; u0 += 8 * 8) {
    float4 v[8];
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      const int u = u0 + 8 * s;
      v[s] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      const int kk = (u >> 3) * 8 + (lane & 7);
      if (u >= KMAX || kk >= K) continue;
      const int64_t col = j0 + 4 * ((u & 7) * 4 + (lane >> 3));
      const float* src = k.B + int64_t(kk) * k.ldb + col;
      if (col + 3 < k.N) {
        v[s] = __ldg(reinterpret_cast<const float4*>(src));
      } else {
        if (col < k.N) v[s].x = __ldg(src);
        if (col + 1 < k.N) v[s].y = __ldg(src + 1);
        if (col + 2 < k.N) v[s].z = __ldg(src + 2);
      }
    }
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      const int u = u0 + 8 * s;
      if (u >= KMAX) continue;
      const int kk = mmaK((u >> 3) * 8 + (lane & 7)), n = 4 * ((u & 7) * 4 + (lane >> 3));
      uint8_t* const chunk = strip + (kk >> 5) * WG_B_CHUNK;
      const float x[4] = {v[s].x, v[s].y, v[s].z, v[s].w};
#pragma unroll
      for (int e = 0; e < 4; ++e) *reinterpret_cast<uint32_t*>(chunk + swizzled(n + e, kk & 31)) = toTf32(x[e]);
    }
  }
}

template <bool MOVE_C>
__global__ void __launch_bounds__(WG_THREADS, 1) backWgKernel(const Args k) {
  extern __shared__ float4 wgSmem[];
  uint8_t* const strip = reinterpret_cast<uint8_t*>(wgSmem) + ((1024u - (smemAddr(wgSmem) & 1023u)) & 1023u);
  float* const ring = reinterpret_cast<float*>(strip + WG_STRIP_BYTES);
  __shared__ __align__(8) uint64_t full[WG_STAGES], done[WG_STAGES];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int K = int(k.K);
  const int sj = blockIdx.x % k.strips, rb0 = blockIdx.x / k.strips, rbStep = k.phases;
  const int tilesM = int((k.M + WG_BM - 1) / WG_BM);
  const int count = rb0 < tilesM ? (tilesM - rb0 + rbStep - 1) / rbStep : 0;
  if (count == 0) return;
  const int64_t j0 = int64_t(sj) * BN;
  const int width = int(k.N - j0 < BN ? k.N - j0 : BN);

  if (threadIdx.x == 0) {
    for (int s = 0; s < WG_STAGES; ++s) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smemAddr(&full[s])));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 128;" ::"r"(smemAddr(&done[s])));
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();  // barriers initialised

  if (warp == 8) {  // producer
    auto load = [&](int q, int s) {
      const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
      const int rows = int(k.M - i0 < WG_BM ? k.M - i0 : WG_BM);
      const uint32_t bar = smemAddr(&full[s]);
      if (lane == 0)
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar),
                     "r"(MOVE_C ? uint32_t(rows) * uint32_t(width) * 4 : 0u) : "memory");
      __syncwarp();
      if (MOVE_C)
        for (int r = lane; r < rows; r += 32)
          asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                       ::"r"(smemAddr(ring + s * WG_STAGE_FLOATS + r * C_STRIDE)), "l"(k.C + (i0 + r) * k.ldc + j0),
                       "r"(uint32_t(width) * 4), "r"(bar) : "memory");
    };
    for (int q = 0; q < WG_STAGES && q < count; ++q) load(q, q);
    for (int q = 0; q < count; ++q) {
      const int s = q % WG_STAGES;
      mbarWait(smemAddr(&done[s]), uint32_t((q / WG_STAGES) & 1));
      const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
      const int rows = int(k.M - i0 < WG_BM ? k.M - i0 : WG_BM);
      if (MOVE_C)
        for (int r = lane; r < rows; r += 32)
          asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;"
                       ::"l"(k.C + (i0 + r) * k.ldc + j0), "r"(smemAddr(ring + s * WG_STAGE_FLOATS + r * C_STRIDE)),
                       "r"(uint32_t(width) * 4) : "memory");
      asm volatile("cp.async.bulk.commit_group;" ::: "memory");
      asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
      __syncwarp();
      if (q + WG_STAGES < count) load(q + WG_STAGES, s);
    }
    asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
    return;
  }

  // Consumers: warpgroup wg (0, 1), warp w within it.
  const int wg = warp >> 2, w = warp & 3, gq = lane >> 2, tq = lane & 3;
  // The strip, transposed and swizzled: 256 threads, 8 rows (k) x 16 columns per warp step.
  loadStripSwizzled(strip, k, j0, warp, lane);
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  asm volatile("bar.sync 1, 256;" ::: "memory");  // the consumers' strip stores landed

  const float alpha = k.alphaBeta[0], beta = k.alphaBeta[1];
  const uint32_t stripAddress = smemAddr(strip);
  float acc[64];
  for (int q = wg; q < count; q += 2) {
    const int s = q % WG_STAGES;
    const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
    // A fragments: rows 16 w + gq (+ 8), floats 16 j + 4 tq .. + 3 (zeros past M, K).
    float4 a[2][8];
    const int64_t row = i0 + 16 * w + gq;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const bool ok = row + 8 * h < k.M;
      const float* const p = k.A + (ok ? row + 8 * h : 0) * k.lda + 4 * tq;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        a[h][j] = ok && 16 * j + 4 * tq < K ? __ldg(reinterpret_cast<const float4*>(p + 16 * j)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    fenceAccumulators(acc);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int ks = 0; ks < KMAX / 8; ++ks) {
      const float4 lo = a[0][ks >> 1], hi = a[1][ks >> 1];
      const uint64_t b = wgmmaDescriptor(stripAddress + uint32_t((ks >> 2) * WG_B_CHUNK + (ks & 3) * 32));
      if ((ks & 1) == 0) wgmmaTf32(acc, lo.x, hi.x, lo.y, hi.y, b, ks > 0 ? 1 : 0);
      else wgmmaTf32(acc, lo.z, hi.z, lo.w, hi.w, b, 1);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    mbarWait(smemAddr(&full[s]), uint32_t((q / WG_STAGES) & 1));  // C landed (while the MMAs run)
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    fenceAccumulators(acc);
    // acc[4 i + 2 h + e]: row 16 w + gq + 8 h, column 8 i + 2 tq + e; C updated in place.
    float* const cs = ring + s * WG_STAGE_FLOATS + (16 * w + gq) * C_STRIDE + 2 * tq;
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) {
        float2* p = reinterpret_cast<float2*>(cs + 8 * h * C_STRIDE + 8 * i);
        const float o0 = alpha * acc[4 * i + 2 * h], o1 = alpha * acc[4 * i + 2 * h + 1];
        if (MOVE_C) {
          const float2 c = *p;
          *p = make_float2(o0 + beta * c.x, o1 + beta * c.y);
        } else {
          *p = make_float2(o0, o1);
        }
      }
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smemAddr(&done[s])) : "memory");
  }
}


// ---- wgmma, C through registers ---------------------------------------------------------------
// Two warpgroups per block (one block per SM), alternate 64 x 128 tiles of the block's strip, no
// producer: each thread loads its A fragments (16-byte groups, L2) and its C values in the
// accumulator layout (8-byte groups) at the start of a tile, so one warpgroup's loads are in
// flight while the other multiplies; the result goes straight back to global memory.
template <bool MOVE_C>
__global__ void __launch_bounds__(256, 1) backRegKernel(const Args k) {
  extern __shared__ float4 wgSmem[];
  uint8_t* const strip = reinterpret_cast<uint8_t*>(wgSmem) + ((1024u - (smemAddr(wgSmem) & 1023u)) & 1023u);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int K = int(k.K);
  const int sj = blockIdx.x % k.strips, rb0 = blockIdx.x / k.strips, rbStep = k.phases;
  const int tilesM = int((k.M + WG_BM - 1) / WG_BM);
  const int count = rb0 < tilesM ? (tilesM - rb0 + rbStep - 1) / rbStep : 0;
  if (count == 0) return;
  const int64_t j0 = int64_t(sj) * BN;
  const int wg = warp >> 2, w = warp & 3, gq = lane >> 2, tq = lane & 3;
  loadStripSwizzled(strip, k, j0, warp, lane);
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();

  const float alpha = k.alphaBeta[0], beta = k.alphaBeta[1];
  const uint32_t stripAddress = smemAddr(strip);
  const int width = int(k.N - j0 < BN ? k.N - j0 : BN);
  const bool fullWidth = width == BN;
  float acc[64];
  for (int q = wg; q < count; q += 2) {
    const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
    const int64_t row = i0 + 16 * w + gq;
    float4 a[2][8];
    float2 c[2][16];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const bool ok = row + 8 * h < k.M;
      const float* const p = k.A + (ok ? row + 8 * h : 0) * k.lda + 4 * tq;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        a[h][j] = ok && 16 * j + 4 * tq < K ? __ldg(reinterpret_cast<const float4*>(p + 16 * j)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (MOVE_C) {
        const float* const cp = k.C + (ok ? row + 8 * h : 0) * k.ldc + j0 + 2 * tq;
#pragma unroll
        for (int i = 0; i < 16; ++i)
          c[h][i] = ok && (fullWidth || 8 * i + 2 * tq < width) ? *reinterpret_cast<const float2*>(cp + 8 * i) : make_float2(0.0f, 0.0f);
      }
    }
    fenceAccumulators(acc);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int ks = 0; ks < KMAX / 8; ++ks) {
      const float4 lo = a[0][ks >> 1], hi = a[1][ks >> 1];
      const uint64_t b = wgmmaDescriptor(stripAddress + uint32_t((ks >> 2) * WG_B_CHUNK + (ks & 3) * 32));
      if ((ks & 1) == 0) wgmmaTf32(acc, lo.x, hi.x, lo.y, hi.y, b, ks > 0 ? 1 : 0);
      else wgmmaTf32(acc, lo.z, hi.z, lo.w, hi.w, b, 1);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    fenceAccumulators(acc);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (row + 8 * h >= k.M) continue;
      float* const out = k.C + (row + 8 * h) * k.ldc + j0 + 2 * tq;
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        if (!fullWidth && 8 * i + 2 * tq >= width) continue;
        float o0 = alpha * acc[4 * i + 2 * h], o1 = alpha * acc[4 * i + 2 * h + 1];
        if (MOVE_C) { o0 += beta * c[h][i].x; o1 += beta * c[h][i].y; }
        *reinterpret_cast<float2*>(out + 8 * i) = make_float2(o0, o1);
      }
    }
  }
}


// ---- wgmma, C through registers in row-coalesced order, the result staged in shared memory -----
// As backRegKernel, but each warp loads and stores whole 512-byte rows of C (16-byte accesses,
// lane l: columns 4 l..4 l+3 of rows warp + 4 it): the accumulators go through a shared staging
// tile per warpgroup (rows padded by 8 floats: the fragment-order 8-byte stores conflict-free).
template <bool MOVE_C>
__global__ void __launch_bounds__(256, 1) backStageKernel(const Args k) {
  extern __shared__ float4 wgSmem[];
  uint8_t* const strip = reinterpret_cast<uint8_t*>(wgSmem) + ((1024u - (smemAddr(wgSmem) & 1023u)) & 1023u);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wg = warp >> 2, w = warp & 3, gq = lane >> 2, tq = lane & 3;
  float* const stage = reinterpret_cast<float*>(strip + WG_STRIP_BYTES) + wg * WG_STAGE_FLOATS;
  const int K = int(k.K);
  const int sj = blockIdx.x % k.strips, rb0 = blockIdx.x / k.strips, rbStep = k.phases;
  const int tilesM = int((k.M + WG_BM - 1) / WG_BM);
  const int count = rb0 < tilesM ? (tilesM - rb0 + rbStep - 1) / rbStep : 0;
  if (count == 0) return;
  const int64_t j0 = int64_t(sj) * BN;
  loadStripSwizzled(strip, k, j0, warp, lane);
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();

  const float alpha = k.alphaBeta[0], beta = k.alphaBeta[1];
  const uint32_t stripAddress = smemAddr(strip);
  const int width = int(k.N - j0 < BN ? k.N - j0 : BN);
  const bool colOk = 4 * lane < width;
  float acc[64];
  // A fragments of tile q: rows 16 w + gq (+ 8), floats 16 j + 4 tq .. + 3 (zeros past M, K).
  float4 a[2][8], an[2][8];
  auto loadA = [&](int q, float4 (&a)[2][8]) {
    const int64_t row = int64_t(rb0 + q * rbStep) * WG_BM + 16 * w + gq;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const bool ok = row + 8 * h < k.M;
      const float* const p = k.A + (ok ? row + 8 * h : 0) * k.lda + 4 * tq;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        a[h][j] = ok && 16 * j + 4 * tq < K ? __ldg(reinterpret_cast<const float4*>(p + 16 * j)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  };
  if (wg < count) loadA(wg, a);
  for (int q = wg; q < count; q += 2) {
    const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
    const int rows = int(k.M - i0 < WG_BM ? k.M - i0 : WG_BM);
    fenceAccumulators(acc);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int ks = 0; ks < KMAX / 8; ++ks) {
      const float4 lo = a[0][ks >> 1], hi = a[1][ks >> 1];
      const uint64_t b = wgmmaDescriptor(stripAddress + uint32_t((ks >> 2) * WG_B_CHUNK + (ks & 3) * 32));
      if ((ks & 1) == 0) wgmmaTf32(acc, lo.x, hi.x, lo.y, hi.y, b, ks > 0 ? 1 : 0);
      else wgmmaTf32(acc, lo.z, hi.z, lo.w, hi.w, b, 1);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    // C's loads go out while the MMAs run; A's for this warpgroup's next tile once they are done
    // (the MMAs read a[] until then), in flight through the epilogue.
    float4 c[16];
    if (MOVE_C) {
      const float* const cp = k.C + (i0 + w) * k.ldc + j0 + 4 * lane;
#pragma unroll
      for (int it = 0; it < 16; ++it)
        c[it] = colOk && w + 4 * it < rows ? *reinterpret_cast<const float4*>(cp + int64_t(4 * it) * k.ldc) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    fenceAccumulators(acc);
    if (q + 2 < count) loadA(q + 2, a);
    asm volatile("bar.sync %0, 128;" ::"r"(1 + wg) : "memory");  // the previous tile's staging reads are done
    {
      float* const st = stage + (16 * w + gq) * C_STRIDE + 2 * tq;
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int i = 0; i < 16; ++i)
          *reinterpret_cast<float2*>(st + 8 * h * C_STRIDE + 8 * i) = make_float2(acc[4 * i + 2 * h], acc[4 * i + 2 * h + 1]);
    }
    asm volatile("bar.sync %0, 128;" ::"r"(1 + wg) : "memory");
    {
      const float* const st = stage + w * C_STRIDE + 4 * lane;
      float* const out = k.C + (i0 + w) * k.ldc + j0 + 4 * lane;
#pragma unroll
      for (int it = 0; it < 16; ++it) {
        if (!colOk || w + 4 * it >= rows) continue;
        const float4 x = *reinterpret_cast<const float4*>(st + 4 * it * C_STRIDE);
        float4 o = make_float4(alpha * x.x, alpha * x.y, alpha * x.z, alpha * x.w);
        if (MOVE_C) { o.x += beta * c[it].x; o.y += beta * c[it].y; o.z += beta * c[it].z; o.w += beta * c[it].w; }
        *reinterpret_cast<float4*>(out + int64_t(4 * it) * k.ldc) = o;
      }
    }
  }
}


// ---- wgmma products, C moved by separate memory warpgroups -------------------------------------
// 512 threads, one block per SM: warpgroups 0 and 1 multiply (alternate 64 x 128 tiles; A from
// L2 into registers, loaded for the next tile as soon as the MMAs of this one are done) and put the
// products into shared stages; warpgroups 2 and 3 stream C with plain 16-byte loads and stores,
// one tile ahead in registers: out = alpha * product + beta * C. setmaxnreg moves registers from
// the memory warpgroups (80) to the multiplying ones (176).
constexpr int SP_STAGES = 4;
// APREF: A for this warpgroup's next tile loaded into a second register set while the MMAs run
// (the memory warpgroups then keep no C tile ahead: registers 216 / 40).
template <bool MOVE_C, bool APREF>
__global__ void __launch_bounds__(512, 1) backSplitKernel(const Args k) {
  extern __shared__ float4 wgSmem[];
  uint8_t* const strip = reinterpret_cast<uint8_t*>(wgSmem) + ((1024u - (smemAddr(wgSmem) & 1023u)) & 1023u);
  float* const stages = reinterpret_cast<float*>(strip + WG_STRIP_BYTES);
  __shared__ __align__(8) uint64_t ready[SP_STAGES], freed[SP_STAGES];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int K = int(k.K);
  const int sj = blockIdx.x % k.strips, rb0 = blockIdx.x / k.strips, rbStep = k.phases;
  const int tilesM = int((k.M + WG_BM - 1) / WG_BM);
  const int count = rb0 < tilesM ? (tilesM - rb0 + rbStep - 1) / rbStep : 0;
  if (count == 0) return;
  const int64_t j0 = int64_t(sj) * BN;
  const int width = int(k.N - j0 < BN ? k.N - j0 : BN);
  if (threadIdx.x == 0) {
    for (int s = 0; s < SP_STAGES; ++s) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 128;" ::"r"(smemAddr(&ready[s])));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 256;" ::"r"(smemAddr(&freed[s])));
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const float alpha = k.alphaBeta[0], beta = k.alphaBeta[1];

  if (warp >= 8) {  // memory warpgroups: thread m covers rows m / 32 + 8 it, columns 4 (m % 32) ..
    if (APREF) asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    else asm volatile("setmaxnreg.dec.sync.aligned.u32 80;\n" ::: "memory");
    const int m = threadIdx.x - 256, r0 = m >> 5, c4 = 4 * (m & 31);
    const bool colOk = c4 < width;
    float4 cur[8], nxt[8];
    auto loadC = [&](int q, float4 (&c)[8]) {
      const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
      const int rows = int(k.M - i0 < WG_BM ? k.M - i0 : WG_BM);
      const float* const p = k.C + (i0 + r0) * k.ldc + j0 + c4;
#pragma unroll
      for (int it = 0; it < 8; ++it)
        c[it] = MOVE_C && colOk && r0 + 8 * it < rows ? *reinterpret_cast<const float4*>(p + int64_t(8 * it) * k.ldc)
                                                       : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    };
    if (!APREF) loadC(0, cur);
    for (int q = 0; q < count; ++q) {
      const int s = q % SP_STAGES;
      if (APREF) loadC(q, cur);
      else if (q + 1 < count) loadC(q + 1, nxt);
      mbarWait(smemAddr(&ready[s]), uint32_t((q / SP_STAGES) & 1));
      const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
      const int rows = int(k.M - i0 < WG_BM ? k.M - i0 : WG_BM);
      const float* const st = stages + s * WG_STAGE_FLOATS + r0 * C_STRIDE + c4;
      float* const out = k.C + (i0 + r0) * k.ldc + j0 + c4;
#pragma unroll
      for (int it = 0; it < 8; ++it) {
        const float4 x = *reinterpret_cast<const float4*>(st + 8 * it * C_STRIDE);
        if (!colOk || r0 + 8 * it >= rows) continue;
        float4 o = make_float4(alpha * x.x, alpha * x.y, alpha * x.z, alpha * x.w);
        if (MOVE_C) { o.x += beta * cur[it].x; o.y += beta * cur[it].y; o.z += beta * cur[it].z; o.w += beta * cur[it].w; }
        *reinterpret_cast<float4*>(out + int64_t(8 * it) * k.ldc) = o;
      }
      asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smemAddr(&freed[s])) : "memory");
      if (!APREF)
#pragma unroll
        for (int it = 0; it < 8; ++it) cur[it] = nxt[it];
    }
    return;
  }

  if (APREF) asm volatile("setmaxnreg.inc.sync.aligned.u32 216;\n" ::: "memory");
  else asm volatile("setmaxnreg.inc.sync.aligned.u32 176;\n" ::: "memory");
  const int wg = warp >> 2, w = warp & 3, gq = lane >> 2, tq = lane & 3;
  loadStripSwizzled(strip, k, j0, warp, lane);
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  asm volatile("bar.sync 1, 256;" ::: "memory");
  const uint32_t stripAddress = smemAddr(strip);
  float acc[64];
  float4 a[2][8], an[2][8];
  auto loadA = [&](int q, float4 (&a)[2][8]) {
    const int64_t row = int64_t(rb0 + q * rbStep) * WG_BM + 16 * w + gq;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const bool ok = row + 8 * h < k.M;
      const float* const p = k.A + (ok ? row + 8 * h : 0) * k.lda + 4 * tq;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        a[h][j] = ok && 16 * j + 4 * tq < K ? __ldg(reinterpret_cast<const float4*>(p + 16 * j)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  };
  if (wg < count) loadA(wg, a);
  for (int q = wg; q < count; q += 2) {
    const int s = q % SP_STAGES;
    if (APREF && q + 2 < count) loadA(q + 2, an);
    fenceAccumulators(acc);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int ks = 0; ks < KMAX / 8; ++ks) {
      const float4 lo = a[0][ks >> 1], hi = a[1][ks >> 1];
      const uint64_t b = wgmmaDescriptor(stripAddress + uint32_t((ks >> 2) * WG_B_CHUNK + (ks & 3) * 32));
      if ((ks & 1) == 0) wgmmaTf32(acc, lo.x, hi.x, lo.y, hi.y, b, ks > 0 ? 1 : 0);
      else wgmmaTf32(acc, lo.z, hi.z, lo.w, hi.w, b, 1);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    fenceAccumulators(acc);
    if (!APREF && q + 2 < count) loadA(q + 2, a);
    if (APREF)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int j = 0; j < 8; ++j) a[h][j] = an[h][j];
    if (q >= SP_STAGES) mbarWait(smemAddr(&freed[s]), uint32_t(((q / SP_STAGES) - 1) & 1));
    float* const st = stages + s * WG_STAGE_FLOATS + (16 * w + gq) * C_STRIDE + 2 * tq;
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int i = 0; i < 16; ++i)
        *reinterpret_cast<float2*>(st + 8 * h * C_STRIDE + 8 * i) = make_float2(acc[4 * i + 2 * h], acc[4 * i + 2 * h + 1]);
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smemAddr(&ready[s])) : "memory");
  }
}


// ---- wgmma products, a ring of shared buffers that hold A, then the product --------------------
// As backSplitKernel, but A comes through shared memory: a ring of RING buffers, each holding a
// tile's rows of A (bulk copies from L2, issued by warp 8 when the memory warpgroups have read the
// buffer's previous product), then that tile's product (the multiplying warpgroup loads its A
// fragments into registers, multiplies, and writes the product over them). A is so in place
// RING - 2 tiles ahead of the warpgroup that needs it, and the registers go to C: the memory
// warpgroups keep one tile of C ahead (88 registers; the multiplying ones 168).
constexpr int RG_RING = 4, RG_STRIDE = KMAX + 16;  // floats per row: A's 16-byte fragment reads conflict-free
constexpr int RG_BUF_FLOATS = WG_BM * RG_STRIDE;
template <bool MOVE_C>
__global__ void __launch_bounds__(512, 1) backRingKernel(const Args k) {
  extern __shared__ float4 wgSmem[];
  uint8_t* const strip = reinterpret_cast<uint8_t*>(wgSmem) + ((1024u - (smemAddr(wgSmem) & 1023u)) & 1023u);
  float* const bufs = reinterpret_cast<float*>(strip + WG_STRIP_BYTES);
  __shared__ __align__(8) uint64_t aFull[RG_RING], pFull[RG_RING];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int K = int(k.K);
  const int sj = blockIdx.x % k.strips, rb0 = blockIdx.x / k.strips, rbStep = k.phases;
  const int tilesM = int((k.M + WG_BM - 1) / WG_BM);
  const int count = rb0 < tilesM ? (tilesM - rb0 + rbStep - 1) / rbStep : 0;
  if (count == 0) return;
  const int64_t j0 = int64_t(sj) * BN;
  const int width = int(k.N - j0 < BN ? k.N - j0 : BN);
  if (threadIdx.x == 0) {
    for (int s = 0; s < RG_RING; ++s) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smemAddr(&aFull[s])));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 128;" ::"r"(smemAddr(&pFull[s])));
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const float alpha = k.alphaBeta[0], beta = k.alphaBeta[1];

  if (warp >= 8) {  // memory warpgroups
    asm volatile("setmaxnreg.dec.sync.aligned.u32 88;\n" ::: "memory");
    // Warp 8: tile q's rows of A into buffer q % RING (rows past M are not copied: never stored).
    auto loadA = [&](int q) {
      const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
      const int rows = int(k.M - i0 < WG_BM ? k.M - i0 : WG_BM);
      const uint32_t bar = smemAddr(&aFull[q % RG_RING]);
      if (lane == 0)
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(uint32_t(rows) * uint32_t(K) * 4)
                     : "memory");
      __syncwarp();
      float* const buf = bufs + (q % RG_RING) * RG_BUF_FLOATS;
      for (int r = lane; r < rows; r += 32)
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                     ::"r"(smemAddr(buf + r * RG_STRIDE)), "l"(k.A + (i0 + r) * k.lda), "r"(uint32_t(K) * 4), "r"(bar)
                     : "memory");
    };
    if (warp == 8)
      for (int q = 0; q < RG_RING && q < count; ++q) loadA(q);
    const int m = threadIdx.x - 256, r0 = m >> 5, c4 = 4 * (m & 31);
    const bool colOk = c4 < width;
    float4 cur[8], nxt[8];
    auto loadC = [&](int q, float4 (&c)[8]) {
      const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
      const int rows = int(k.M - i0 < WG_BM ? k.M - i0 : WG_BM);
      const float* const p = k.C + (i0 + r0) * k.ldc + j0 + c4;
#pragma unroll
      for (int it = 0; it < 8; ++it)
        c[it] = MOVE_C && colOk && r0 + 8 * it < rows ? *reinterpret_cast<const float4*>(p + int64_t(8 * it) * k.ldc)
                                                       : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    };
    loadC(0, cur);
    for (int q = 0; q < count; ++q) {
      const int s = q % RG_RING;
      if (q + 1 < count) loadC(q + 1, nxt);
      mbarWait(smemAddr(&pFull[s]), uint32_t((q / RG_RING) & 1));
      const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
      const int rows = int(k.M - i0 < WG_BM ? k.M - i0 : WG_BM);
      const float* const st = bufs + s * RG_BUF_FLOATS + r0 * RG_STRIDE + c4;
      float* const out = k.C + (i0 + r0) * k.ldc + j0 + c4;
#pragma unroll
      for (int it = 0; it < 8; ++it) {
        const float4 x = *reinterpret_cast<const float4*>(st + 8 * it * RG_STRIDE);
        if (!colOk || r0 + 8 * it >= rows) continue;
        float4 o = make_float4(alpha * x.x, alpha * x.y, alpha * x.z, alpha * x.w);
        if (MOVE_C) { o.x += beta * cur[it].x; o.y += beta * cur[it].y; o.z += beta * cur[it].z; o.w += beta * cur[it].w; }
        *reinterpret_cast<float4*>(out + int64_t(8 * it) * k.ldc) = o;
      }
      asm volatile("bar.sync 3, 256;" ::: "memory");  // every memory thread has read buffer s
      if (warp == 8 && q + RG_RING < count) loadA(q + RG_RING);
#pragma unroll
      for (int it = 0; it < 8; ++it) cur[it] = nxt[it];
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 168;\n" ::: "memory");
  const int wg = warp >> 2, w = warp & 3, gq = lane >> 2, tq = lane & 3;
  loadStripSwizzled(strip, k, j0, warp, lane);
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  asm volatile("bar.sync 1, 256;" ::: "memory");
  const uint32_t stripAddress = smemAddr(strip);
  float acc[64];
  for (int q = wg; q < count; q += 2) {
    const int s = q % RG_RING;
    float* const buf = bufs + s * RG_BUF_FLOATS;
    mbarWait(smemAddr(&aFull[s]), uint32_t((q / RG_RING) & 1));
    // A fragments: rows 16 w + gq (+ 8), floats 16 j + 4 tq .. + 3; zeros past K (rows past M
    // hold stale values whose products are never stored).
    float4 a[2][8];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float* const p = buf + (16 * w + gq + 8 * h) * RG_STRIDE + 4 * tq;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        a[h][j] = 16 * j + 4 * tq < K ? *reinterpret_cast<const float4*>(p + 16 * j) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    fenceAccumulators(acc);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int ks = 0; ks < KMAX / 8; ++ks) {
      const float4 lo = a[0][ks >> 1], hi = a[1][ks >> 1];
      const uint64_t b = wgmmaDescriptor(stripAddress + uint32_t((ks >> 2) * WG_B_CHUNK + (ks & 3) * 32));
      if ((ks & 1) == 0) wgmmaTf32(acc, lo.x, hi.x, lo.y, hi.y, b, ks > 0 ? 1 : 0);
      else wgmmaTf32(acc, lo.z, hi.z, lo.w, hi.w, b, 1);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("bar.sync %0, 128;" ::"r"(1 + wg) : "memory");  // the warpgroup's A reads are done
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    fenceAccumulators(acc);
    float* const st = buf + (16 * w + gq) * RG_STRIDE + 2 * tq;
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int i = 0; i < 16; ++i)
        *reinterpret_cast<float2*>(st + 8 * h * RG_STRIDE + 8 * i) = make_float2(acc[4 * i + 2 * h], acc[4 * i + 2 * h + 1]);
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smemAddr(&pFull[s])) : "memory");
  }
}

// ---- wgmma products; A copied ahead by the multiplying warpgroups themselves ---------------------
// As backRingKernel (four shared buffers, each a tile's A and then its product, q % 4), but each
// multiplying warpgroup copies its next tile's A (cp.async, 16 bytes per thread-copy, no
// registers) into its other buffer at the start of a tile, once the memory warpgroups have read
// that buffer's previous product: A lands while this tile is multiplied and stored.
template <bool MOVE_C>
__global__ void __launch_bounds__(512, 1) backPrefKernel(const Args k) {
  extern __shared__ float4 wgSmem[];
  uint8_t* const strip = reinterpret_cast<uint8_t*>(wgSmem) + ((1024u - (smemAddr(wgSmem) & 1023u)) & 1023u);
  float* const bufs = reinterpret_cast<float*>(strip + WG_STRIP_BYTES);
  __shared__ __align__(8) uint64_t pFree[RG_RING], pFull[RG_RING];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int K = int(k.K);
  const int sj = blockIdx.x % k.strips, rb0 = blockIdx.x / k.strips, rbStep = k.phases;
  const int tilesM = int((k.M + WG_BM - 1) / WG_BM);
  const int count = rb0 < tilesM ? (tilesM - rb0 + rbStep - 1) / rbStep : 0;
  if (count == 0) return;
  const int64_t j0 = int64_t(sj) * BN;
  const int width = int(k.N - j0 < BN ? k.N - j0 : BN);
  if (threadIdx.x == 0) {
    for (int s = 0; s < RG_RING; ++s) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 256;" ::"r"(smemAddr(&pFree[s])));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 128;" ::"r"(smemAddr(&pFull[s])));
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const float alpha = k.alphaBeta[0], beta = k.alphaBeta[1];

  if (warp >= 8) {  // memory warpgroups
    asm volatile("setmaxnreg.dec.sync.aligned.u32 88;\n" ::: "memory");
    const int m = threadIdx.x - 256, r0 = m >> 5, c4 = 4 * (m & 31);
    const bool colOk = c4 < width;
    float4 cur[8], nxt[8];
    auto loadC = [&](int q, float4 (&c)[8]) {
      const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
      const int rows = int(k.M - i0 < WG_BM ? k.M - i0 : WG_BM);
      const float* const p = k.C + (i0 + r0) * k.ldc + j0 + c4;
#pragma unroll
      for (int it = 0; it < 8; ++it)
        c[it] = MOVE_C && colOk && r0 + 8 * it < rows ? *reinterpret_cast<const float4*>(p + int64_t(8 * it) * k.ldc)
                                                       : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    };
    loadC(0, cur);
    for (int q = 0; q < count; ++q) {
      const int s = q % RG_RING;
      if (q + 1 < count) loadC(q + 1, nxt);
      mbarWait(smemAddr(&pFull[s]), uint32_t((q / RG_RING) & 1));
      const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
      const int rows = int(k.M - i0 < WG_BM ? k.M - i0 : WG_BM);
      const float* const st = bufs + s * RG_BUF_FLOATS + r0 * RG_STRIDE + c4;
      float* const out = k.C + (i0 + r0) * k.ldc + j0 + c4;
#pragma unroll
      for (int it = 0; it < 8; ++it) {
        const float4 x = *reinterpret_cast<const float4*>(st + 8 * it * RG_STRIDE);
        if (!colOk || r0 + 8 * it >= rows) continue;
        float4 o = make_float4(alpha * x.x, alpha * x.y, alpha * x.z, alpha * x.w);
        if (MOVE_C) { o.x += beta * cur[it].x; o.y += beta * cur[it].y; o.z += beta * cur[it].z; o.w += beta * cur[it].w; }
        *reinterpret_cast<float4*>(out + int64_t(8 * it) * k.ldc) = o;
      }
      asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smemAddr(&pFree[s])) : "memory");
#pragma unroll
      for (int it = 0; it < 8; ++it) cur[it] = nxt[it];
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 168;\n" ::: "memory");
  const int wg = warp >> 2, w = warp & 3, gq = lane >> 2, tq = lane & 3;
  loadStripSwizzled(strip, k, j0, warp, lane);
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  asm volatile("bar.sync 1, 256;" ::: "memory");
  const uint32_t stripAddress = smemAddr(strip);
  float acc[64];
  const int t = threadIdx.x & 127;
  // Tile q's rows of A into buffer q % RING: thread t copies 16-byte chunks t + 128 i (row
  // (t + 128 i) / 32, a warp one row); chunks past K or rows past M are not copied.
  auto copyA = [&](int q) {
    const int64_t i0 = int64_t(rb0 + q * rbStep) * WG_BM;
    const int rows = int(k.M - i0 < WG_BM ? k.M - i0 : WG_BM);
    float* const buf = bufs + (q % RG_RING) * RG_BUF_FLOATS;
#pragma unroll
    for (int i = 0; i < WG_BM * KMAX / 4 / 128; ++i) {
      const int e = t + 128 * i, r = e >> 5, c = (e & 31) * 4;
      if (r < rows && c < K)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smemAddr(buf + r * RG_STRIDE + c)),
                     "l"(k.A + (i0 + r) * k.lda + c) : "memory");
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };
  if (wg < count) copyA(wg);
  for (int q = wg; q < count; q += 2) {
    const int s = q % RG_RING;
    float* const buf = bufs + s * RG_BUF_FLOATS;
    if (q + 2 < count) {
      // Buffer (q + 2) % RING last held tile q - 2's product: wait until the memory side read it.
      if (q >= 2) mbarWait(smemAddr(&pFree[(q + 2) % RG_RING]), uint32_t(((q - 2) / RG_RING) & 1));
      copyA(q + 2);
      asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    }
    asm volatile("bar.sync %0, 128;" ::"r"(1 + wg) : "memory");  // every thread's copies of tile q landed
    // A fragments: rows 16 w + gq (+ 8), floats 16 j + 4 tq .. + 3; zeros past K (rows past M
    // hold stale values whose products are never stored).
    float4 a[2][8];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float* const p = buf + (16 * w + gq + 8 * h) * RG_STRIDE + 4 * tq;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        a[h][j] = 16 * j + 4 * tq < K ? *reinterpret_cast<const float4*>(p + 16 * j) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    fenceAccumulators(acc);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int ks = 0; ks < KMAX / 8; ++ks) {
      const float4 lo = a[0][ks >> 1], hi = a[1][ks >> 1];
      const uint64_t b = wgmmaDescriptor(stripAddress + uint32_t((ks >> 2) * WG_B_CHUNK + (ks & 3) * 32));
      if ((ks & 1) == 0) wgmmaTf32(acc, lo.x, hi.x, lo.y, hi.y, b, ks > 0 ? 1 : 0);
      else wgmmaTf32(acc, lo.z, hi.z, lo.w, hi.w, b, 1);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("bar.sync %0, 128;" ::"r"(1 + wg) : "memory");  // the warpgroup's A reads are done
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    fenceAccumulators(acc);
    float* const st = buf + (16 * w + gq) * RG_STRIDE + 2 * tq;
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int i = 0; i < 16; ++i)
        *reinterpret_cast<float2*>(st + 8 * h * RG_STRIDE + 8 * i) = make_float2(acc[4 * i + 2 * h], acc[4 * i + 2 * h + 1]);
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smemAddr(&pFull[s])) : "memory");
  }
}



}  // namespace

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const micro::Tf32Sgemm cublas = micro::openTf32Sgemm();
  void* h = cublas.handle;
  const SgemmFn sgemm = cublas.fn;
  // Copy bandwidth on the largest C.
  const int64_t maxC = 11008LL * 4096;
  const micro::BackBuffers bb = micro::backBuffers(sms, maxC, 11008LL * 128, 128LL * 11008);
  const std::vector<float*>& Cs = bb.Cs;
  float *const C0 = bb.C0, *const Ref = bb.Ref, *const A = bb.A, *const B = bb.B, *const ab = bb.ab, *const dd = bb.dd,
        *const tmp = bb.tmp;
  const double copyGBps = bb.copyGBps;
  std::printf("{\"copyGBps\": %.0f, \"rows\": [\n", copyGBps);
  CK(cudaFuncSetAttribute(backBulkKernel<0, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(SMEM)));
  CK(cudaFuncSetAttribute(backBulkKernel<1, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(SMEM)));
  CK(cudaFuncSetAttribute(backBulkKernel<0, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(SMEM)));
  int occ = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, backBulkKernel<0, true>, THREADS, SMEM));
  struct Shape { int64_t M, N, K; };
  const Shape shapes[] = {{11008, 4096, 128}, {4096, 4096, 128}, {4096, 11008, 128}, {4097, 4100, 64}, {11008, 4096, 64}};
  bool first = true;
  for (const Shape& sh : shapes) {
    const int64_t nC = sh.M * sh.N;
    micro::backProblem(bb, sh.M, sh.N, sh.K);
    const double floorUs = 2.0 * nC * 4 / (copyGBps * 1e3);
    Args k{sh.M, sh.N, sh.K, A, sh.K, B, sh.N, nullptr, sh.N, ab, 0, 0, 0};
    k.strips = int((sh.N + BN - 1) / BN);
    k.tilesM = int((sh.M + BM - 1) / BM);
    k.phases = std::max(1, occ * sms / k.strips);
    auto relErr = [&](float* out) { return micro::maxRelDiff(out, Ref, nC, dd); };
    auto row = [&](const char* name, double us, float err) {
      std::printf("%s  {\"M\": %lld, \"N\": %lld, \"K\": %lld, \"kernel\": \"%s\", \"us\": %.1f, \"fracOfCopy\": %.3f, \"relErr\": %.2e}",
                  first ? "" : ",\n", (long long)sh.M, (long long)sh.N, (long long)sh.K, name, us, floorUs / us, err);
      first = false;
    };
    auto runBulk = [&](auto kernel, int grid, const char* name, bool moves) {
      CK(cudaMemcpy(tmp, C0, nC * 4, cudaMemcpyDeviceToDevice));
      k.C = tmp;
      kernel<<<grid, THREADS, SMEM>>>(k);
      CK(cudaGetLastError());
      const float err = moves ? relErr(tmp) : 0.0f;
      const double us = timeUs([&](int i) { Args kk = k; kk.C = Cs[i]; kernel<<<grid, THREADS, SMEM>>>(kk); });
      row(name, us, err);
    };
    runBulk(backBulkKernel<0, true>, k.strips * k.phases, "bulk phase", true);
    runBulk(backBulkKernel<0, false>, k.strips * k.phases, "products only", false);
    {
      Args kw = k;
      kw.phases = std::max(1, sms / kw.strips);
      // One block per SM over strips x phases, `threads` threads and `smem` bytes of shared memory.
      auto runWide = [&](auto kernel, int threads, int smem, const char* name, bool moves) {
        const int grid = kw.strips * kw.phases;
        CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        CK(cudaMemcpy(tmp, C0, nC * 4, cudaMemcpyDeviceToDevice));
        kw.C = tmp;
        kernel<<<grid, threads, smem>>>(kw);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        const float err = moves ? relErr(tmp) : 0.0f;
        const double us = timeUs([&](int i) { Args kk = kw; kk.C = Cs[i]; kernel<<<grid, threads, smem>>>(kk); });
        row(name, us, err);
      };
      const int stripSmem = WG_STRIP_BYTES + 1024;
      runWide(backWgKernel<true>, WG_THREADS, int(WG_SMEM), "wgmma ws", true);
      runWide(backWgKernel<false>, WG_THREADS, int(WG_SMEM), "wgmma products only", false);
      runWide(backRegKernel<true>, 256, stripSmem, "wgmma regs", true);
      runWide(backRegKernel<false>, 256, stripSmem, "wgmma regs products only (stores)", false);
      const int stageSmem = stripSmem + 2 * WG_STAGE_FLOATS * 4;
      runWide(backStageKernel<true>, 256, stageSmem, "wgmma staged", true);
      runWide(backStageKernel<false>, 256, stageSmem, "wgmma staged, stores only", false);
      const int splitSmem = stripSmem + SP_STAGES * WG_STAGE_FLOATS * 4, ringSmem = stripSmem + RG_RING * RG_BUF_FLOATS * 4;
      runWide(backSplitKernel<true, false>, 512, splitSmem, "wgmma split", true);
      runWide(backSplitKernel<false, false>, 512, splitSmem, "wgmma split, stores only", false);
      runWide(backPrefKernel<true>, 512, ringSmem, "wgmma pref", true);
      runWide(backPrefKernel<false>, 512, ringSmem, "wgmma pref, stores only", false);
      runWide(backRingKernel<true>, 512, ringSmem, "wgmma ring", true);
      runWide(backRingKernel<false>, 512, ringSmem, "wgmma ring, stores only", false);
      runWide(backSplitKernel<true, true>, 512, splitSmem, "wgmma split A ahead", true);
      runWide(backSplitKernel<false, true>, 512, splitSmem, "wgmma split A ahead, stores only", false);
    }
    if (sgemm) {
      auto call = [&](float* out) {
        int rc = sgemm(h, 0, 0, int(sh.N), int(sh.M), int(sh.K), ab, B, int(sh.N), A, int(sh.K), ab + 1, out, int(sh.N));
        if (rc != 0) { std::fprintf(stderr, "sgemm %d\n", rc); std::exit(1); }
      };
      CK(cudaMemcpy(tmp, C0, nC * 4, cudaMemcpyDeviceToDevice));
      call(tmp);
      const float err = relErr(tmp);
      row("cublasSgemm tf32", timeUs([&](int i) { call(Cs[i]); }), err);
    }
  }
  std::printf("\n], \"blocksPerSm\": %d}\n", occ);
  return 0;
}
