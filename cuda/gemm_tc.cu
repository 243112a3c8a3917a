// The built-in tensor-core GEMM: mma.sync on sm_80+ (TF32 m16n8k8, or bf16 m16n8k16), f32
// operands streamed into shared memory by cp.async; the tile kernel rounds them to bf16 as fragments
// are built and gives TF32 mma their bits as they are (the tensor cores truncate), k-contiguous
// tiles by ldmatrix.
//
// Tiling. A 256-thread block computes a 128x128 tile of C; its 8 warps form a 2x4 grid of 64x32
// warp tiles (4x4 mma tiles each, 64 f32 accumulators per thread). K advances in slices of 32
// through a 3-stage cp.async ring (2 stages where a block may not have the ~108 KB: sm_86/89/120).
// Each operand tile is copied in its global layout, so every transpose is a plain 16-byte copy:
// "k-contiguous" (A as M x K, B as N x K) rows of 32 + 4 floats, "mn-contiguous" (A as K x M, B as
// K x N) rows of 128 + 8 floats. Those pads make each fragment read conflict-free: lane (g, t) of a
// warp (g = lane / 4, t = lane % 4) reads element (row g, k t) of a k-contiguous tile, bank 4g + t,
// or (k t, column g) of an mn-contiguous one, bank 8t + g. The bf16 mma wants each thread's k pair
// (2t, 2t+1) and (2t+8, 2t+9); we feed it physical k (t, t+4) and (t+8, t+12) instead, the same
// permutation for A and B, which leaves the sum unchanged and keeps the TF32 read pattern.
// With ~108 KB of shared memory and <= 128 registers per thread, two blocks share an H100/H200 SM.
//
// Edges. Any M, N, K: partial 16-byte copies zero-fill (cp.async src-size), rows or columns past
// the end are zeros, the epilogue is predicated. Where a base is not 16-byte aligned or lda/ldb is
// not a multiple of 4, that operand is copied 4 bytes at a time.
//
// Epilogue. C = alpha acc + beta C in C's dtype (f32, bf16, f16), element pairs as one vector
// access where aligned; alpha, beta from device memory when given; nothing happens when the
// device-side skip flag is set. When beta may be non-zero the block first asks L2 for its tile of C
// (prefetch.global.L2), so the read-modify-write of GaLore's W <- beta W + alpha N P does not wait
// on DRAM after the products.
//
// Split-K. A projection R = G P^T has N = r (128) columns and K up to 11008: too few output tiles
// to fill 132 SMs. Then blockIdx.z takes one of s contiguous K ranges and writes its partial tile
// to a workspace (s x M x N f32, stream-ordered allocation), and a second kernel sums the s
// partials in index order and applies the epilogue: the same bits on every run.
#include <cuda_runtime.h>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include "gemm_tc.cuh"
#include "launchers.h"

// An sm_75 pass of the release build compiles the kernels empty: their device helpers are then
// unreferenced, which is expected there.
#pragma nv_diag_suppress 177

namespace slimopt {
namespace gpu {

namespace {

constexpr int TC_BM = 128, TC_BN = 128, TC_BK = 32, TC_THREADS = 256;
constexpr int TC_WM = 64, TC_WN = 32;                 // warp tile: 2 x 4 warps cover 128 x 128
constexpr int TC_MT = TC_WM / 16, TC_NT = TC_WN / 8;  // mma tiles per warp tile
constexpr int K_STRIDE = TC_BK + 4;                   // floats per row of a k-contiguous tile
constexpr int MN_STRIDE = TC_BM + 8;                  // floats per row of an mn-contiguous tile
static_assert(TC_BM == TC_BN, "one mn-contiguous stride serves A and B");
static_assert((TC_BM / TC_WM) * (TC_BN / TC_WN) * 32 == TC_THREADS, "one warp per warp tile");
static_assert(TC_NT % 2 == 0 && (K_STRIDE * 4) % 16 == 0, "B fragments in pairs; ldmatrix rows 16-byte aligned");

// Floats of one operand tile in shared memory.
constexpr int tileFloats(bool kContiguous) { return kContiguous ? TC_BM * K_STRIDE : TC_BK * MN_STRIDE; }
// A is k-contiguous unless transposed, B only when transposed.
constexpr int stageFloats(bool ta, bool tb) { return tileFloats(!ta) + tileFloats(tb); }
constexpr size_t smemBytes(bool ta, bool tb, int stages) { return size_t(stages) * stageFloats(ta, tb) * sizeof(float); }
constexpr size_t maxSmemBytes(int stages) {
  return smemBytes(false, true, stages) > smemBytes(true, false, stages) ? smemBytes(false, true, stages)
                                                                        : smemBytes(true, false, stages);
}

struct TcArgs {
  GemmArgs g;
  const float* alphaBeta;  // device [alpha, beta] or null (then g.alpha, g.beta)
  const int32_t* flag;     // skip everything when *flag != 0 (null: never)
  int64_t kPerSplit;       // K range of one blockIdx.z: a multiple of TC_BK, or K when not split
  float* partials;         // split-K: [splits][M][N] sums; the reduction kernel applies the epilogue
  bool vecA, vecB;         // 16-byte copies possible (aligned base, leading dimension % 4 == 0)
  bool pairC;              // C elements (i, 2j), (i, 2j+1) are one aligned vector
};

__device__ __forceinline__ uint32_t sharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Copies `valid` (0..4) floats from src to dst and zero-fills the rest of dst's 4.
__device__ __forceinline__ void copyAsync4(float* dst, const float* src, int valid, bool vec) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t d = sharedAddress(dst);
  if (vec) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid * 4));
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e)
      asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d + 4 * e), "l"(src + (e < valid ? e : 0)),
                   "r"(e < valid ? 4 : 0));
  }
#endif
}
__device__ __forceinline__ void commitAsync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void waitAsync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// One operand tile of one K slice into shared memory. The operand X (leading dimension ld) holds
// element (o, p) - o the output row (A) or column (B), p the K index - at X[o*ld + p] when
// K_CONTIG, else at X[p*ld + o]; the tile covers o in [o0, o0 + 128), p in [p0, p0 + 32).
template <bool K_CONTIG>
__device__ __forceinline__ void loadTile(float* S, const float* X, int64_t ld, int64_t o0, int64_t oEnd, int64_t p0,
                                         int64_t kEnd, bool vec) {
#pragma unroll
  for (int it = 0; it < TC_BM * TC_BK / 4 / TC_THREADS; ++it) {
    const int c = threadIdx.x + it * TC_THREADS;
    int64_t off, left;
    float* dst;
    bool rowOk;
    if (K_CONTIG) {  // 128 rows of o, 8 chunks of 4 k each
      const int r = c / (TC_BK / 4), col = (c % (TC_BK / 4)) * 4;
      const int64_t o = o0 + r, p = p0 + col;
      rowOk = o < oEnd; left = kEnd - p; off = o * ld + p;
      dst = S + r * K_STRIDE + col;
    } else {         // 32 rows of k, 32 chunks of 4 o each
      const int r = c / (TC_BM / 4), col = (c % (TC_BM / 4)) * 4;
      const int64_t p = p0 + r, o = o0 + col;
      rowOk = p < kEnd; left = oEnd - o; off = p * ld + o;
      dst = S + r * MN_STRIDE + col;
    }
    const int valid = rowOk ? int(left < 0 ? 0 : (left > 4 ? 4 : left)) : 0;
    copyAsync4(dst, valid > 0 ? X + off : X, valid, vec);
  }
}

// Element (o, p) of a tile stored as loadTile wrote it.
template <bool K_CONTIG> __device__ __forceinline__ float tileAt(const float* S, int o, int p) {
  return K_CONTIG ? S[o * K_STRIDE + p] : S[p * MN_STRIDE + o];
}

// TF32 operand, rounded to nearest (ties away). (Adding 0x1000 to the bits instead, one integer
// add, pushed three of the 16 kernels over the 128-register cap into small spills in ptxas 13.0.)
__device__ __forceinline__ uint32_t toTf32(float x) {
  uint32_t r = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
#endif
  return r;
}
// An f32 as the tile kernel's TF32 mma operand: its bits as they are. The tensor cores read the top
// 19 bits of a .tf32 register (the low 13 are ignored: the operand is truncated toward zero, at most
// 2^-10 relative, against 2^-11 for round to nearest), which saves a cvt per fragment element, a
// third of the tile loop's instructions.
__device__ __forceinline__ uint32_t tf32Operand(float x) { return __float_as_uint(x); }
// bf16 pair: lo in the low half (the lower k index of the mma fragment).
__device__ __forceinline__ uint32_t toBf16x2(float lo, float hi) {
  uint32_t r = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
#endif
  return r;
}
__device__ __forceinline__ void mmaTf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
__device__ __forceinline__ void mmaBf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// The four 8 x 4 f32 sub-matrices whose row addresses lanes 0-7, 8-15, 16-23, 24-31 give: lane
// (g, t) receives element (g, t) of each, which is the m16n8k8 TF32 A fragment when the four are
// rows 0-7 / 8-15 at k 0-3, then rows 0-7 / 8-15 at k 4-7.
__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], uint32_t address) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
#endif
}

// The warp's products over one K slice held in shared memory. Fragment layouts (PTX ISA, mma
// m16n8k8 .tf32 and m16n8k16 .bf16): lane (g, t) holds A rows g and g+8, B column g, C rows g and
// g+8 x columns 2t, 2t+1.
template <bool KA, bool KB, bool BF16>
__device__ __forceinline__ void sliceProducts(const float* As, const float* Bs, float (&acc)[TC_MT][TC_NT][4], int mBase,
                                              int nBase, int g, int t) {
  if (!BF16) {
#pragma unroll
    for (int kk = 0; kk < TC_BK; kk += 8) {
      uint32_t a[TC_MT][4], b[TC_NT][2];
      // k-contiguous tiles: one ldmatrix.x4 per A fragment and per two B fragments (lane l names
      // row l % 8 of sub-matrix l / 8; rows 144 bytes apart, so each phase of 8 rows is
      // conflict-free); mn-contiguous tiles: 4-byte reads.
      const int q = (g * 4 + t) >> 3, r8 = (g * 4 + t) & 7;
#pragma unroll
      for (int mt = 0; mt < TC_MT; ++mt) {
        const int o = mBase + mt * 16 + g;
        if (KA) {
          ldmatrixX4(a[mt], sharedAddress(As + (mBase + mt * 16 + r8 + (q & 1) * 8) * K_STRIDE + kk + (q >> 1) * 4));
        } else {
          a[mt][0] = tf32Operand(tileAt<KA>(As, o, kk + t));
          a[mt][1] = tf32Operand(tileAt<KA>(As, o + 8, kk + t));
          a[mt][2] = tf32Operand(tileAt<KA>(As, o, kk + t + 4));
          a[mt][3] = tf32Operand(tileAt<KA>(As, o + 8, kk + t + 4));
        }
      }
#pragma unroll
      for (int nt = 0; nt < TC_NT; nt += 2) {
        if (KB) {
          uint32_t r[4];
          ldmatrixX4(r, sharedAddress(Bs + (nBase + nt * 8 + (q >> 1) * 8 + r8) * K_STRIDE + kk + (q & 1) * 4));
          b[nt][0] = r[0]; b[nt][1] = r[1]; b[nt + 1][0] = r[2]; b[nt + 1][1] = r[3];
        } else {
#pragma unroll
          for (int u = 0; u < 2; ++u) {
            const int o = nBase + (nt + u) * 8 + g;
            b[nt + u][0] = tf32Operand(tileAt<KB>(Bs, o, kk + t));
            b[nt + u][1] = tf32Operand(tileAt<KB>(Bs, o, kk + t + 4));
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < TC_MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < TC_NT; ++nt) mmaTf32(acc[mt][nt], a[mt], b[nt]);
    }
  } else {
#pragma unroll
    for (int kk = 0; kk < TC_BK; kk += 16) {
      uint32_t a[TC_MT][4], b[TC_NT][2];
#pragma unroll
      for (int mt = 0; mt < TC_MT; ++mt) {
        const int o = mBase + mt * 16 + g;
        a[mt][0] = toBf16x2(tileAt<KA>(As, o, kk + t), tileAt<KA>(As, o, kk + t + 4));
        a[mt][1] = toBf16x2(tileAt<KA>(As, o + 8, kk + t), tileAt<KA>(As, o + 8, kk + t + 4));
        a[mt][2] = toBf16x2(tileAt<KA>(As, o, kk + t + 8), tileAt<KA>(As, o, kk + t + 12));
        a[mt][3] = toBf16x2(tileAt<KA>(As, o + 8, kk + t + 8), tileAt<KA>(As, o + 8, kk + t + 12));
      }
#pragma unroll
      for (int nt = 0; nt < TC_NT; ++nt) {
        const int o = nBase + nt * 8 + g;
        b[nt][0] = toBf16x2(tileAt<KB>(Bs, o, kk + t), tileAt<KB>(Bs, o, kk + t + 4));
        b[nt][1] = toBf16x2(tileAt<KB>(Bs, o, kk + t + 8), tileAt<KB>(Bs, o, kk + t + 12));
      }
#pragma unroll
      for (int mt = 0; mt < TC_MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < TC_NT; ++nt) mmaBf16(acc[mt][nt], a[mt], b[nt]);
    }
  }
}

// Asks L2 for the block's tile of C (two threads per row, one 128-byte line each step).
__device__ __forceinline__ void prefetchTileC(const GemmArgs& g, int64_t i0, int64_t j0) {
  const int64_t i = i0 + (threadIdx.x >> 1);
  if (i >= g.M) return;
  const int es = dtypeSize(g.cType);
  const char* row = static_cast<const char*>(g.C) + (i * g.ldc + j0) * es;
  const int64_t rowBytes = (g.N - j0 < TC_BN ? g.N - j0 : TC_BN) * es;
  for (int64_t b = (threadIdx.x & 1) * 128; b < rowBytes; b += 256)
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(row + b));
}

// C[idx] (and C[idx+1] when `two`) = alpha v + beta C in C's dtype.
__device__ __forceinline__ void storeOut(const GemmArgs& g, int64_t idx, bool two, bool pair, float v0, float v1,
                                         float alpha, float beta) {
  float o0 = alpha * v0, o1 = alpha * v1;
  if (two && pair) {
    if (g.cType == DType::F32) {
      float2* p = reinterpret_cast<float2*>(static_cast<float*>(g.C) + idx);
      if (beta != 0.0f) { const float2 c = *p; o0 += beta * c.x; o1 += beta * c.y; }
      *p = make_float2(o0, o1);
    } else {
      uint32_t* p = reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(g.C) + idx);
      const bool bf = g.cType == DType::BF16;
      if (beta != 0.0f) {
        const uint32_t c = *p;
        const uint16_t lo = uint16_t(c & 0xffffu), hi = uint16_t(c >> 16);
        o0 += beta * (bf ? bf16ToFloat(lo) : f16ToFloat(lo));
        o1 += beta * (bf ? bf16ToFloat(hi) : f16ToFloat(hi));
      }
      const uint32_t lo = bf ? floatToBf16(o0) : floatToF16(o0), hi = bf ? floatToBf16(o1) : floatToF16(o1);
      *p = lo | (hi << 16);
    }
    return;
  }
  if (beta != 0.0f) o0 += beta * loadAsFloat(g.C, g.cType, idx);
  storeFromFloat(g.C, g.cType, idx, o0);
  if (two) {
    if (beta != 0.0f) o1 += beta * loadAsFloat(g.C, g.cType, idx + 1);
    storeFromFloat(g.C, g.cType, idx + 1, o1);
  }
}

template <bool TA, bool TB, bool BF16, int STAGES>
__global__ void __launch_bounds__(TC_THREADS, 2) tcGemmKernel(const TcArgs k) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if (k.flag != nullptr && *k.flag != 0) return;
  constexpr bool KA = !TA, KB = TB;
  constexpr int A_FLOATS = tileFloats(KA), STAGE = stageFloats(TA, TB);
  extern __shared__ __align__(16) float smem[];
  const GemmArgs& g = k.g;
  const float* A = static_cast<const float*>(g.A);
  const float* B = static_cast<const float*>(g.B);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, t = lane & 3;
  const int mBase = (warp / (TC_BN / TC_WN)) * TC_WM, nBase = (warp % (TC_BN / TC_WN)) * TC_WN;
  const int64_t i0 = int64_t(blockIdx.y) * TC_BM, j0 = int64_t(blockIdx.x) * TC_BN;
  const int64_t kBegin = int64_t(blockIdx.z) * k.kPerSplit;
  const int64_t kEnd = g.K < kBegin + k.kPerSplit ? g.K : kBegin + k.kPerSplit;
  const int nk = kEnd > kBegin ? int((kEnd - kBegin + TC_BK - 1) / TC_BK) : 0;
  const bool split = k.partials != nullptr;
  const float beta = split ? 0.0f : (k.alphaBeta ? k.alphaBeta[1] : g.beta);
  if (beta != 0.0f) prefetchTileC(g, i0, j0);

  float acc[TC_MT][TC_NT][4];
#pragma unroll
  for (int mt = 0; mt < TC_MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < TC_NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;

  auto load = [&](int slot, int kt) {
    float* S = smem + slot * STAGE;
    const int64_t p0 = kBegin + int64_t(kt) * TC_BK;
    loadTile<KA>(S, A, g.lda, i0, g.M, p0, kEnd, k.vecA);
    loadTile<KB>(S + A_FLOATS, B, g.ldb, j0, g.N, p0, kEnd, k.vecB);
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nk) load(s, s);
    commitAsync();  // empty groups keep the count uniform
  }
  for (int kt = 0; kt < nk; ++kt) {
    waitAsync<STAGES - 2>();  // slice kt has landed (for this thread) ...
    __syncthreads();          // ... for every thread, and every warp is done with slice kt - 1
    const int next = kt + STAGES - 1;
    if (next < nk) load(next % STAGES, next);  // into the slot slice kt - 1 used
    commitAsync();
    const float* S = smem + (kt % STAGES) * STAGE;
    sliceProducts<KA, KB, BF16>(S, S + A_FLOATS, acc, mBase, nBase, gq, t);
  }
  waitAsync<0>();

  // Each accumulator pair (rows g and g+8 of an mma tile, columns 2t and 2t+1) inside M x N.
  auto forEachPair = [&](auto&& out) {
#pragma unroll
    for (int mt = 0; mt < TC_MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t i = i0 + mBase + mt * 16 + gq + h * 8;
        if (i >= g.M) continue;
#pragma unroll
        for (int nt = 0; nt < TC_NT; ++nt) {
          const int64_t j = j0 + nBase + nt * 8 + 2 * t;
          if (j < g.N) out(i, j, acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
        }
      }
  };
  if (split) {  // the raw partial sums into this split's slice of the workspace (dense, ld N)
    float* P = k.partials + int64_t(blockIdx.z) * g.M * g.N;
    const bool pair = (g.N & 1) == 0;
    forEachPair([&](int64_t i, int64_t j, float v0, float v1) {
      if (pair) *reinterpret_cast<float2*>(P + i * g.N + j) = make_float2(v0, v1);
      else { P[i * g.N + j] = v0; if (j + 1 < g.N) P[i * g.N + j + 1] = v1; }
    });
    return;
  }
  const float alpha = k.alphaBeta ? k.alphaBeta[0] : g.alpha;
  forEachPair([&](int64_t i, int64_t j, float v0, float v1) {
    storeOut(g, i * g.ldc + j, j + 1 < g.N, k.pairC, v0, v1, alpha, beta);
  });
#endif
}

// C = alpha (sum of the split partials, in split order) + beta C. Four consecutive elements per
// thread (one row when N % 4 == 0, then the partials are read as float4).
__global__ void splitReduceKernel(const TcArgs k, int splits) {
  if (k.flag != nullptr && *k.flag != 0) return;
  const GemmArgs& g = k.g;
  const float alpha = k.alphaBeta ? k.alphaBeta[0] : g.alpha;
  const float beta = k.alphaBeta ? k.alphaBeta[1] : g.beta;
  const int64_t MN = g.M * g.N, quads = (MN + 3) / 4;
  const bool vec = (g.N & 3) == 0;
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < quads; q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e0 = q * 4;
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int z = 0; z < splits; ++z) {
      const float* P = k.partials + z * MN + e0;
      if (vec) {
        const float4 v = *reinterpret_cast<const float4*>(P);
        s[0] += v.x; s[1] += v.y; s[2] += v.z; s[3] += v.w;
      } else {
#pragma unroll
        for (int u = 0; u < 4; ++u) if (e0 + u < MN) s[u] += P[u];
      }
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int64_t e = e0 + u;
      if (e >= MN) break;
      const int64_t i = e / g.N, idx = i * g.ldc + (e - i * g.N);
      float out = alpha * s[u];
      if (beta != 0.0f) out += beta * loadAsFloat(g.C, g.cType, idx);
      storeFromFloat(g.C, g.cType, idx, out);
    }
  }
}

// ---- the streaming kernel: C <- alpha A B + beta C with short K -------------------------------
//
// GaLore's project-back W <- beta W + alpha N P (or P N) has K = r: at r = 128 its 2 m n r flops
// are few next to the read and write of W (m n f32 each way), and the tile kernel above, which
// reads its C only after the products, takes 2x cuBLAS's time there. Here persistent blocks (two
// per SM, 4 warps each, one warp per 32 columns) walk 32 x 128 tiles of C down a 128-column strip
// of B:
// - the strip lives in registers, each warp holding the TF32 B fragments of its 32 columns for all
//   of K (128 registers at K = 128), loaded from global memory when the block changes strip (a
//   few times per launch: blocks take contiguous ranges of the strip-major tile order);
// - a 3-stage cp.async ring brings tile i+2's rows of A and its block of C in while tile i is
//   multiplied, so two tiles of C are in flight and the epilogue reads C from shared memory;
// - A's fragments come from ldmatrix (four 8 x 4 TF32 sub-tiles per x4 load), a quarter of an
//   ldmatrix per mma where 4-byte fragment reads took six loads, and go to the mma unrounded: the
//   tensor core reads the top 19 bits of each f32, TF32 by truncation (within 2^-10 relative,
//   2^-11 on average toward zero, where rounding to nearest gives 2^-11; B is rounded to nearest).
//   Rounding A in shared memory once per tile cost 7% (156 -> 167 us).
// Pads: A rows K_MAX + 4 floats (ldmatrix rows at banks 4r, conflict-free), C rows 128 + 8 (the
// epilogue's 8-byte reads conflict-free per half-warp). Measured on the H200 (11008 x 4096,
// r = 128): 156-158 us under ncu, where the tile kernel takes 281 and cuBLAS 136-141; ncu puts
// most stalls on the mma chains and their ldmatrix results (2 warps per scheduler: the strip's
// registers allow no more), so it serves the built-in path only (builtinGemm). Takes f32 A
// (M x K), B (K x N) untransposed, f32 C, K a multiple of 8 up to 128, 16-byte aligned bases and
// leading dimensions a multiple of 4 (streamGemmFits).
constexpr int ST_BM = 32, ST_BN = 128, ST_KMAX = 128, ST_THREADS = 128, ST_STAGES = 3, ST_KSTEPS = ST_KMAX / 8;
constexpr int ST_WARPS = ST_THREADS / 32, ST_BLOCKS_PER_SM = 2;
static_assert(ST_WARPS * 32 == ST_BN, "one warp per 32 columns of the strip");
constexpr int ST_A_STRIDE = ST_KMAX + 4, ST_C_STRIDE = ST_BN + 8;
constexpr int ST_A_FLOATS = ST_BM * ST_A_STRIDE, ST_C_FLOATS = ST_BM * ST_C_STRIDE;
constexpr int ST_STAGE_FLOATS = ST_A_FLOATS + ST_C_FLOATS;
constexpr size_t ST_SMEM = size_t(ST_STAGES) * ST_STAGE_FLOATS * sizeof(float);

struct StreamArgs {
  GemmArgs g;
  const float* alphaBeta;  // device [alpha, beta] or null (then g.alpha, g.beta)
  const int32_t* flag;     // skip everything when *flag != 0 (null: never)
  int64_t tilesM, tiles;   // row tiles per strip; tiles in all (strip-major)
};

// Columns [j, j + 4) of a row that ends at column n: how many exist (0..4).
__device__ __forceinline__ int validOf(int64_t j, int64_t n) {
  const int64_t left = n - j;
  return int(left <= 0 ? 0 : left >= 4 ? 4 : left);
}

__global__ void __launch_bounds__(ST_THREADS, ST_BLOCKS_PER_SM) tcStreamKernel(const StreamArgs k) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if (k.flag != nullptr && *k.flag != 0) return;
  const int t0 = int(k.tiles * blockIdx.x / gridDim.x), t1 = int(k.tiles * (blockIdx.x + 1) / gridDim.x);
  if (t0 >= t1) return;
  extern __shared__ float4 stSmem[];
  float* const ring = reinterpret_cast<float*>(stSmem);
  const GemmArgs& g = k.g;
  const float* A = static_cast<const float*>(g.A);
  const float* B = static_cast<const float*>(g.B);
  float* C = static_cast<float*>(g.C);
  const int K = int(g.K);
  const float alpha = k.alphaBeta ? k.alphaBeta[0] : g.alpha;
  const float beta = k.alphaBeta ? k.alphaBeta[1] : g.beta;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  const int wn = warp * 32;  // this warp's 32 x 32 outputs of the tile: all rows, 32 columns

  // Tile (im, j) - rows 32 im.., strip j - of A and (when beta != 0) of C into stage s: 32 rows of
  // 32 chunks of 4 floats; this thread copies chunk lane (floats c4..c4+3) of rows warp + 4 it
  // (A's chunks past K are not copied: they are never read).
  const int c4 = lane << 2;
  auto loadTile = [&](int im, int j, int s) {
    const int64_t i0 = int64_t(im) * ST_BM, j0 = int64_t(j) * ST_BN;
    const int rows = int(g.M - i0 < ST_BM ? g.M - i0 : ST_BM);
    float* const stage = ring + s * ST_STAGE_FLOATS;
    if (c4 < K) {
      const float* a = A + (i0 + warp) * g.lda + c4;
      float* as = stage + warp * ST_A_STRIDE + c4;
#pragma unroll
      for (int it = 0; it < ST_BM / ST_WARPS; ++it) {
        const bool ok = warp + ST_WARPS * it < rows;
        copyAsync4(as + it * ST_WARPS * ST_A_STRIDE, ok ? a + int64_t(it * ST_WARPS) * g.lda : A, ok ? 4 : 0, true);
      }
    }
    if (beta == 0.0f) return;  // C is not read
    const int valid = validOf(j0 + c4, g.N);
    const float* c = C + (i0 + warp) * g.ldc + j0 + c4;
    float* cs = stage + ST_A_FLOATS + warp * ST_C_STRIDE + c4;
#pragma unroll
    for (int it = 0; it < ST_BM / ST_WARPS; ++it) {
      const bool ok = valid > 0 && warp + ST_WARPS * it < rows;
      copyAsync4(cs + it * ST_WARPS * ST_C_STRIDE, ok ? c + int64_t(it * ST_WARPS) * g.ldc : C, ok ? valid : 0, true);
    }
  };

  // This warp's B fragments of the strip at column j0: b[ks][ni] = rows ks*8 + tq (+4), column
  // j0 + wn + 8 ni + gq, rounded to TF32; zeros past K or N.
  uint32_t b[ST_KSTEPS][4][2];
  auto loadStrip = [&](int64_t j0) {
    // All 128 loads into b first (addresses clamped inside B), then the rounding in place: rounding
    // each value as it arrived serialised the loads' latencies (a fifth of the kernel's time in ncu).
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      const int64_t col = j0 + wn + ni * 8 + gq;
      const float* bp = B + (col < g.N ? col : g.N - 1);
#pragma unroll
      for (int ks = 0; ks < ST_KSTEPS; ++ks) {
        const int k0 = ks * 8 + tq < K ? ks * 8 + tq : K - 1, k1 = ks * 8 + tq + 4 < K ? ks * 8 + tq + 4 : K - 1;
        b[ks][ni][0] = __float_as_uint(__ldg(bp + int64_t(k0) * g.ldb));
        b[ks][ni][1] = __float_as_uint(__ldg(bp + int64_t(k1) * g.ldb));
      }
    }
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      const bool inside = j0 + wn + ni * 8 + gq < g.N;
#pragma unroll
      for (int ks = 0; ks < ST_KSTEPS; ++ks) {
        const bool on = inside && ks * 8 < K;  // K is a multiple of 8: rows ks*8 .. ks*8+7 all exist
        b[ks][ni][0] = on ? toTf32(__uint_as_float(b[ks][ni][0])) : 0u;
        b[ks][ni][1] = on ? toTf32(__uint_as_float(b[ks][ni][1])) : 0u;
      }
    }
  };

  // ldmatrix row address of this lane within a stage: sub-matrix lane / 8 (rows +8 for odd ones,
  // k +4 for the upper two), row lane % 8.
  const uint32_t aLane = sharedAddress(ring + ((lane & 7) + ((lane >> 3) & 1) * 8) * ST_A_STRIDE + (lane >> 4) * 4);

  // Tile t is (row tile t % tilesM, strip t / tilesM); positions advance one tile at a time (no
  // 64-bit division per tile). `at` is the tile multiplied, `ahead` the next one to copy.
  const int tilesM = int(k.tilesM);
  struct Pos { int im, j; };
  auto next = [&](Pos p) { return ++p.im == tilesM ? Pos{0, p.j + 1} : p; };
  Pos at{int(t0 % tilesM), int(t0 / tilesM)};
  Pos ahead = at;
  int strip = -1;
  loadTile(ahead.im, ahead.j, 0);
  commitAsync();
  ahead = next(ahead);
  if (t0 + 1 < t1) loadTile(ahead.im, ahead.j, 1);
  commitAsync();
  ahead = next(ahead);
  int s = 0;
  for (int t = t0; t < t1; ++t, at = next(at)) {
    const int64_t i0 = int64_t(at.im) * ST_BM, j0 = int64_t(at.j) * ST_BN;
    if (at.j != strip) {  // registers only: no barrier
      loadStrip(j0);
      strip = at.j;
    }
    waitAsync<1>();   // this thread's copies of tile t landed (tile t+1's may still be in flight)
    __syncthreads();  // everyone's copies of tile t landed, and everyone is done with tile t-1's stage
    if (t + 2 < t1) {
      loadTile(ahead.im, ahead.j, s == 0 ? 2 : s - 1);  // (s + 2) % 3: tile t-1's stage
      ahead = next(ahead);
    }
    commitAsync();

    // The warp's 32 rows in two halves of 16 (one m16 row of mma tiles each), so that only 16
    // accumulators are live beside the 128 registers of the strip (with all 32 live, ptxas spilled
    // twice as much at the 255-register cap, and the reloads stalled the loop).
    const uint32_t aStage = aLane + uint32_t(s * ST_STAGE_FLOATS * sizeof(float));
    const float* cs = ring + s * ST_STAGE_FLOATS + ST_A_FLOATS + gq * ST_C_STRIDE + wn + 2 * tq;
    float* out = C + (i0 + gq) * g.ldc + j0 + wn + 2 * tq;
    const int tileRows = int(g.M - i0 < ST_BM ? g.M - i0 : ST_BM), tileCols = int(g.N - j0 < ST_BN ? g.N - j0 : ST_BN);
    const bool full = tileRows == ST_BM && tileCols == ST_BN;
    const int rowsLeft = tileRows - gq, colsLeft = tileCols - (wn + 2 * tq);
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
      float acc[4][4] = {};
#pragma unroll
      for (int ks = 0; ks < ST_KSTEPS; ++ks) {
        if (ks * 8 >= K) break;
        uint32_t a[4];
        ldmatrixX4(a, aStage + uint32_t((mi * 16 * ST_A_STRIDE + ks * 8) * sizeof(float)));
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mmaTf32(acc[ni], a, b[ks][ni]);
      }
      // Epilogue: this lane's outputs are rows 16 mi + gq (+8), columns wn + 2 tq + 8 ni (+1).
      auto emit = [&](int h, int ni, bool two) {
        const int dr = mi * 16 + h * 8;
        float o0 = alpha * acc[ni][2 * h], o1 = alpha * acc[ni][2 * h + 1];
        if (beta != 0.0f) {
          const float2 cv = *reinterpret_cast<const float2*>(cs + dr * ST_C_STRIDE + ni * 8);
          o0 += beta * cv.x;
          o1 += beta * cv.y;
        }
        float* o = out + dr * g.ldc + ni * 8;
        if (two) __stcs(reinterpret_cast<float2*>(o), make_float2(o0, o1));
        else *o = o0;
      };
      if (full) {  // the common case: no predicates
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) emit(h, ni, true);
      } else {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if (mi * 16 + h * 8 >= rowsLeft) continue;
#pragma unroll
          for (int ni = 0; ni < 4; ++ni)
            if (ni * 8 < colsLeft) emit(h, ni, ni * 8 + 1 < colsLeft);
        }
      }
    }
    s = s == 2 ? 0 : s + 1;
  }
#endif
}

// ---- the streaming kernel on Hopper (sm_90a): warpgroup MMAs, warp-specialised ----------------
//
// The same product as tcStreamKernel, where wgmma exists (H100/H200, an sm_90a image). One block
// of four warpgroups per SM walks 64 x 128 tiles of C down 128-column strips of B:
// - Warpgroups 0 and 1 multiply, taking alternate tiles: 16 wgmma m64n128k8 per tile (f32 +=
//   tf32 x tf32; zeros past K), A from registers, B from the strip in shared memory.
// - Warpgroups 2 and 3 stream C with plain 16-byte loads and stores (a warp one 512-byte row of a
//   tile), keeping the next tile's C in registers: out = alpha * product + beta * C. setmaxnreg
//   gives the multiplying warpgroups 168 registers and these 88.
// - Tile q uses shared buffer q % 4 twice: first for its rows of A, copied by its multiplying
//   warpgroup with cp.async two tiles ahead (when it starts tile q - 2, once the memory side has
//   read the buffer's previous product), then for its product, written over A once the
//   warpgroup's fragments are in registers. mbarriers pass each buffer between the two sides.
//   A thread-copy needs no registers, and A then lands while the tile before is multiplied: with
//   A loaded into registers at the start of each tile, its latency from L2 bounded the kernel.
// - The strip, all of K (up to 128), sits in shared memory as wgmma reads B: K-major, rounded to
//   TF32 (nearest), in the 128-byte swizzle; B is K x N row-major, so it is transposed on the way
//   in, once per strip. The mma's k order within each 16 is permuted (mmaK) so that a thread's
//   four consecutive floats of A are its fragments of two k-steps; the strip is stored with the
//   same permutation, so the sums are unchanged. A reaches the tensor cores truncated to TF32, as
//   in tcStreamKernel.
// - Tile order: where the strips are at most half the SMs, block b keeps strip b % strips and
//   takes row tiles b / strips + phases * i (the blocks resident at once cover a band of whole
//   rows, as a copy would); otherwise blocks take contiguous ranges of the strip-major order and
//   reload the strip where their range crosses into the next.
// - One launch takes up to 32 products (streamGemmMany), each block doing its share of each in
//   turn, in that order, with one ring and one mbarrier sequence over all of them: the pipeline
//   fills and drains once per launch. GaLore's 28 project-backs of a §6 step at r = 128 take
//   2.60 ms grouped against 2.75 one launch each (bench gemm-back-all; less than a fixed per-launch
//   cost would have saved: the shapes differ in rate, bench/NOTES.md).
// Measured on the H200 (bench/micro/back_bulk.cu "wgmma pref", 11008 x 4096 x 128): 138 µs against
// cuBLAS's 158 in the same run, 0.73 of the copy rate; 4096 x 4096: 63 against 74.
constexpr int WG_BM = 64, WG_BN = 128, WG_KMAX = 128, WG_THREADS = 512, WG_RING = 4;
constexpr int WG_B_CHUNK = WG_BN * 128;  // bytes of 32 K-values of every column of the strip
constexpr int WG_STRIP_BYTES = (WG_KMAX / 32) * WG_B_CHUNK;
constexpr int WG_STRIDE = WG_KMAX + 16;  // floats per buffer row: A's 16-byte fragment reads conflict-free
constexpr int WG_BUF_FLOATS = WG_BM * WG_STRIDE;
// Columns by which row r of a product is rotated within its 128 (8 when bit 1 of r is set): the
// multiplying side's stores then meet no bank conflicts; the memory side reads whole rows, which
// any rotation leaves conflict-free. Rows 8 apart share a rotation.
__host__ __device__ constexpr int productRotation(int r) { return 8 * ((r >> 1) & 1); }
constexpr size_t WG_SMEM = size_t(WG_STRIP_BYTES) + size_t(WG_RING) * WG_BUF_FLOATS * sizeof(float) + 1024;  // + alignment
static_assert(WG_BN == 4 * 32, "a memory warp covers a tile row with 16-byte accesses");

// 1 in the image that carries the wgmma kernel: the host reads it to learn which image it loaded.
__device__ int gStreamWgmmaImage =
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    1;
#else
    0;
#endif

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Byte offset of K-value k (0..31) of row `row` in a K-major chunk with the 128-byte swizzle: the
// row's 16-byte group k/4 sits at group (k/4) ^ (row % 8).
__device__ __forceinline__ uint32_t swizzled(int row, int k) {
  return uint32_t(row * 128 + ((((k >> 2) ^ row) & 7) << 4) + ((k & 3) << 2));
}
// The mma's k index (8 ks + slot) of B's row k: within each 16 rows, k = 16 j + 4 t + 2 q + lo is
// slot t + 4 lo of k-step 2 j + q, matching the A fragments of lane t.
__device__ __forceinline__ int mmaK(int k) {
  const int j = k >> 4, t = (k >> 2) & 3, q = (k >> 1) & 1, lo = k & 1;
  return 8 * (2 * j + q) + t + 4 * lo;
}
// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart (the
// leading byte offset is unused by this layout). The chunk holding `address` starts 1024-aligned.
__device__ __forceinline__ uint64_t wgmmaDescriptor(uint32_t address) {
  return uint64_t((address & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
// d (+)= A B for a 64 x 128 x 8 step, A from registers (lane (g, t) of warp w: rows 16 w + g and
// + 8 at k slots t and t + 4), B from shared memory; accumulate 0 overwrites d.
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
// Keeps the compiler from moving accesses to d across the asynchronous MMAs' issue and wait.
__device__ __forceinline__ void fenceAccumulators(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
__device__ __forceinline__ void mbarInit(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(sharedAddress(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(sharedAddress(bar)) : "memory");
}
// Waits for the phase with the given parity of bar to complete.
__device__ __forceinline__ void mbarWait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra WAIT_%=;\n}\n" ::"r"(sharedAddress(bar)), "r"(parity) : "memory");
}
#endif

// One product of a grouped launch: C <- alpha A B + beta C (A M x K, B K x N, row-major f32), its
// tile order fixed on the host (phases > 0: blocks per strip, block b keeping strip b % strips;
// 0: contiguous ranges of the strip-major order over the grid).
struct WgEntry {
  const float* A;
  const float* B;
  float* C;
  int64_t M, N, lda, ldb, ldc;
  int32_t K, tilesM, strips, phases;
  float alpha, beta;
};
// Up to WG_GROUP products in one launch (GaLore's 28 project-backs of the §6 workload in two):
// each block takes its share of every product in turn, so the pipeline fills and drains once per
// launch instead of once per product. 32 entries keep the parameters under 4 KB.
constexpr int WG_GROUP = 32;
struct WgGroupArgs {
  WgEntry e[WG_GROUP];
  const float* alphaBeta;  // device [alpha, beta] for every entry, or null (then each entry's own)
  const int32_t* flag;     // skip everything when *flag != 0 (null: never)
  int32_t count;
};

// Where a block's tiles of each entry start in its sequence of tiles (start[e] .. start[e + 1]),
// and the entry's first tile (phase order: the block's strip; ranges: the range's first tile).
struct WgBlockPlan {
  int start[WG_GROUP + 1];
  int first[WG_GROUP];
};
// Tile q of the block: entry e (hint, advanced in place: each caller asks for q in increasing
// order), row tile rb and strip sj.
__device__ __forceinline__ const WgEntry& wgPlace(const WgGroupArgs& k, const WgBlockPlan& plan, int q, int& e, int& rb,
                                                  int& sj) {
  while (q >= plan.start[e + 1]) ++e;
  const WgEntry& x = k.e[e];
  const int local = q - plan.start[e];
  if (x.phases > 0) {
    rb = int(blockIdx.x) / x.strips + local * x.phases;
    sj = plan.first[e];
  } else {
    const int t = plan.first[e] + local;
    rb = t % x.tilesM;
    sj = t / x.tilesM;
  }
  return x;
}

__global__ void __launch_bounds__(WG_THREADS, 1) tcStreamWgmmaKernel(const __grid_constant__ WgGroupArgs k) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if (k.flag != nullptr && *k.flag != 0) return;
  __shared__ WgBlockPlan plan;
  if (threadIdx.x == 0) {
    const int b = int(blockIdx.x), G = int(gridDim.x);
    int total = 0;
    for (int e = 0; e < k.count; ++e) {
      const WgEntry& x = k.e[e];
      int count = 0, first = 0;
      if (x.phases > 0) {
        const int rb0 = b / x.strips;
        if (b < x.strips * x.phases && rb0 < x.tilesM) {
          first = b % x.strips;
          count = (x.tilesM - rb0 + x.phases - 1) / x.phases;
        }
      } else {
        const int64_t tiles = int64_t(x.tilesM) * x.strips;
        const int t0 = int(tiles * b / G), t1 = int(tiles * (b + 1) / G);
        first = t0;
        count = t1 - t0;
      }
      plan.start[e] = total;
      plan.first[e] = first;
      total += count;
    }
    plan.start[k.count] = total;
    // Past the last entry, a sentinel start so that wgPlace's scan stops at the last entry.
    for (int e = k.count + 1; e <= WG_GROUP; ++e) plan.start[e] = INT_MAX;
  }
  __syncthreads();
  const int total = plan.start[k.count];
  if (total <= 0) return;
  extern __shared__ float4 wgSmem[];
  // Aligned to 1024 bytes by an offset from the shared array itself, so that the compiler still
  // knows every access below is to shared memory (a pointer cast from an integer would be generic).
  uint8_t* const strip = reinterpret_cast<uint8_t*>(wgSmem) + ((1024u - (sharedAddress(wgSmem) & 1023u)) & 1023u);
  float* const bufs = reinterpret_cast<float*>(strip + WG_STRIP_BYTES);
  __shared__ __align__(8) uint64_t pFull[WG_RING], pFree[WG_RING];  // product written / read
  const float alphaAll = k.alphaBeta ? k.alphaBeta[0] : 0.0f, betaAll = k.alphaBeta ? k.alphaBeta[1] : 0.0f;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (threadIdx.x == 0) {
    for (int s = 0; s < WG_RING; ++s) {
      mbarInit(&pFull[s], 128);  // the tile's multiplying warpgroup
      mbarInit(&pFree[s], 256);  // the memory warpgroups
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (warp >= 8) {  // memory warpgroups: thread m covers rows m / 32 + 8 it, columns 4 (m % 32) ..
    asm volatile("setmaxnreg.dec.sync.aligned.u32 88;\n" ::: "memory");
    const int m = threadIdx.x - 256, r0 = m >> 5, c4 = 4 * (m & 31);
    float4 cur[8], nxt[8];
    int eLoad = 0, eStore = 0;
    // Tile q's C of this thread (zeros where outside C or not read).
    auto loadC = [&](int q, float4 (&c)[8]) {
      int rb, sj;
      const WgEntry& x = wgPlace(k, plan, q, eLoad, rb, sj);
      const bool readC = (k.alphaBeta ? betaAll : x.beta) != 0.0f;
      const int64_t i0 = int64_t(rb) * WG_BM, j0 = int64_t(sj) * WG_BN;
      const int rows = int(x.M - i0 < WG_BM ? x.M - i0 : WG_BM);
      const int valid = validOf(j0 + c4, x.N);
      const float* const p = x.C + (i0 + r0) * x.ldc + j0 + c4;
#pragma unroll
      for (int it = 0; it < 8; ++it) {
        c[it] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (!readC || r0 + 8 * it >= rows || valid == 0) continue;
        const float* const pi = p + int64_t(8 * it) * x.ldc;
        if (valid == 4) {
          c[it] = *reinterpret_cast<const float4*>(pi);
        } else {
          c[it].x = pi[0];
          if (valid > 1) c[it].y = pi[1];
          if (valid > 2) c[it].z = pi[2];
        }
      }
    };
    loadC(0, cur);
    for (int q = 0; q < total; ++q) {
      const int s = q % WG_RING;
      if (q + 1 < total) loadC(q + 1, nxt);
      mbarWait(&pFull[s], uint32_t((q / WG_RING) & 1));
      int rb, sj;
      const WgEntry& x = wgPlace(k, plan, q, eStore, rb, sj);
      const float alpha = k.alphaBeta ? alphaAll : x.alpha, beta = k.alphaBeta ? betaAll : x.beta;
      const int64_t i0 = int64_t(rb) * WG_BM, j0 = int64_t(sj) * WG_BN;
      const int rows = int(x.M - i0 < WG_BM ? x.M - i0 : WG_BM);
      const int valid = validOf(j0 + c4, x.N);
      // Row r of a product sits rotated by productRotation(r) (see the multiplying side).
      const float* const pr = bufs + s * WG_BUF_FLOATS + r0 * WG_STRIDE + ((c4 + productRotation(r0)) & (WG_BN - 1));
      float* const out = x.C + (i0 + r0) * x.ldc + j0 + c4;
#pragma unroll
      for (int it = 0; it < 8; ++it) {
        const float4 v = *reinterpret_cast<const float4*>(pr + 8 * it * WG_STRIDE);
        if (r0 + 8 * it >= rows || valid == 0) continue;
        const float4 o = make_float4(alpha * v.x + beta * cur[it].x, alpha * v.y + beta * cur[it].y,
                                     alpha * v.z + beta * cur[it].z, alpha * v.w + beta * cur[it].w);
        float* const oi = out + int64_t(8 * it) * x.ldc;
        if (valid == 4) {
          *reinterpret_cast<float4*>(oi) = o;
        } else {
          oi[0] = o.x;
          if (valid > 1) oi[1] = o.y;
          if (valid > 2) oi[2] = o.z;
        }
      }
      mbarArrive(&pFree[s]);
#pragma unroll
      for (int it = 0; it < 8; ++it) cur[it] = nxt[it];
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 168;\n" ::: "memory");
  const int wg = warp >> 2, w = warp & 3, gq = lane >> 2, tq = lane & 3, t = threadIdx.x & 127;
  // Strip sj of entry x's B (K x 128, zeros past K and N) into shared memory, transposed to
  // K-major, rows in the mma's k order (mmaK), rounded: the 8 multiplying warps, 8 rows x 16
  // columns per warp step (lane: row lane % 8, 4 columns lane / 8), each thread's 8 loads first.
  auto loadStrip = [&](const WgEntry& x, int sj) {
    const int64_t j0 = int64_t(sj) * WG_BN;
    for (int u0 = warp; u0 < WG_KMAX; u0 += 8 * 8) {
      float4 v[8];
#pragma unroll
      for (int s = 0; s < 8; ++s) {
        const int u = u0 + 8 * s;
        v[s] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        const int kk = (u >> 3) * 8 + (lane & 7);
        if (kk >= x.K) continue;
        const int64_t col = j0 + 4 * ((u & 7) * 4 + (lane >> 3));
        const float* src = x.B + int64_t(kk) * x.ldb + col;
        if (col + 3 < x.N) {
          v[s] = __ldg(reinterpret_cast<const float4*>(src));
        } else {
          if (col < x.N) v[s].x = __ldg(src);
          if (col + 1 < x.N) v[s].y = __ldg(src + 1);
          if (col + 2 < x.N) v[s].z = __ldg(src + 2);
        }
      }
#pragma unroll
      for (int s = 0; s < 8; ++s) {
        const int u = u0 + 8 * s;
        const int kk = mmaK((u >> 3) * 8 + (lane & 7)), n = 4 * ((u & 7) * 4 + (lane >> 3));
        uint8_t* const chunk = strip + (kk >> 5) * WG_B_CHUNK;
        const float f[4] = {v[s].x, v[s].y, v[s].z, v[s].w};
#pragma unroll
        for (int e = 0; e < 4; ++e) *reinterpret_cast<uint32_t*>(chunk + swizzled(n + e, kk & 31)) = toTf32(f[e]);
      }
    }
    // The strip's stores (generic proxy) are read next by the tensor cores (async proxy).
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  };
  // Tile q's rows of A into buffer q % RING: thread t copies 16-byte chunks t + 128 i (a warp one
  // row); chunks past K, rows past M are not copied (their products are never stored).
  int eCopy = 0;
  auto copyA = [&](int q) {
    int rb, sj;
    const WgEntry& x = wgPlace(k, plan, q, eCopy, rb, sj);
    const int64_t i0 = int64_t(rb) * WG_BM;
    const int rows = int(x.M - i0 < WG_BM ? x.M - i0 : WG_BM);
    float* const buf = bufs + (q % WG_RING) * WG_BUF_FLOATS;
#pragma unroll
    for (int i = 0; i < WG_BM * WG_KMAX / 4 / 128; ++i) {
      const int e = t + 128 * i, r = e >> 5, c = (e & 31) * 4;
      if (r < rows && c < x.K) copyAsync4(buf + r * WG_STRIDE + c, x.A + (i0 + r) * x.lda + c, 4, true);
    }
    commitAsync();
  };
  const uint32_t stripAddress = sharedAddress(strip);
  float acc[64];
  int loadedEntry = -1, loadedStrip = -1, eRun = 0;
  if (wg < total) copyA(wg);
  for (int q0 = 0; q0 < total;) {
    // The tiles of one strip of one entry: [q0, q1).
    int rb, sj;
    const WgEntry& x = wgPlace(k, plan, q0, eRun, rb, sj);
    const int entryEnd = plan.start[eRun + 1];
    int q1 = entryEnd;
    if (x.phases == 0) {
      const int runEnd = plan.start[eRun] + (sj + 1) * x.tilesM - plan.first[eRun];
      q1 = runEnd < entryEnd ? runEnd : entryEnd;
    }
    if (eRun != loadedEntry || sj != loadedStrip) {
      if (loadedEntry >= 0) asm volatile("bar.sync 1, 256;\n" ::: "memory");  // both warpgroups are done with the old strip
      loadStrip(x, sj);
      loadedEntry = eRun;
      loadedStrip = sj;
      asm volatile("bar.sync 1, 256;\n" ::: "memory");
    }
    const int K = x.K;
    for (int q = q0 + ((q0 & 1) != wg ? 1 : 0); q < q1; q += 2) {
      const int s = q % WG_RING;
      float* const buf = bufs + s * WG_BUF_FLOATS;
      if (q + 2 < total) {
        // Buffer (q + 2) % RING last held tile q - 2's product: wait until the memory side read it.
        if (q >= 2) mbarWait(&pFree[(q + 2) % WG_RING], uint32_t(((q - 2) / WG_RING) & 1));
        copyA(q + 2);
        waitAsync<1>();
      } else {
        waitAsync<0>();
      }
      asm volatile("bar.sync %0, 128;\n" ::"r"(2 + wg) : "memory");  // every thread's copies of tile q landed
      // A fragments: rows 16 w + gq (+ 8), floats 16 j + 4 tq .. + 3; zeros past K.
      float4 a[2][8];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float* const p = buf + (16 * w + gq + 8 * h) * WG_STRIDE + 4 * tq;
#pragma unroll
        for (int j = 0; j < 8; ++j)
          a[h][j] = 16 * j + 4 * tq < K ? *reinterpret_cast<const float4*>(p + 16 * j) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
      fenceAccumulators(acc);
      asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
      for (int ks = 0; ks < WG_KMAX / 8; ++ks) {
        // k-step 2 j + q takes floats 2 q, 2 q + 1 of each row's four (slots tq, tq + 4).
        const float4 lo = a[0][ks >> 1], hi = a[1][ks >> 1];
        const uint64_t b = wgmmaDescriptor(stripAddress + uint32_t((ks >> 2) * WG_B_CHUNK + (ks & 3) * 32));
        if ((ks & 1) == 0) wgmmaTf32(acc, lo.x, hi.x, lo.y, hi.y, b, ks > 0 ? 1 : 0);
        else wgmmaTf32(acc, lo.z, hi.z, lo.w, hi.w, b, 1);
      }
      asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
      asm volatile("bar.sync %0, 128;\n" ::"r"(2 + wg) : "memory");  // the warpgroup's reads of A are done
      asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
      fenceAccumulators(acc);
      // The product over A: acc[4 i + 2 h + e] is row 16 w + gq + 8 h, column 8 i + 2 tq + e, stored
      // at column (8 i + 2 tq + e + productRotation(row)) % 128: with rows 144 floats apart, rows
      // gq and gq + 2 would otherwise put a half-warp's 8-byte stores in the same banks.
      float* const pr = buf + (16 * w + gq) * WG_STRIDE + 2 * tq;
      const int rot = productRotation(gq) / 8;  // rows 16 w + gq + 8 h share gq's rotation
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int i = 0; i < WG_BN / 8; ++i)
          *reinterpret_cast<float2*>(pr + 8 * h * WG_STRIDE + 8 * ((i + rot) & (WG_BN / 8 - 1))) =
              make_float2(acc[4 * i + 2 * h], acc[4 * i + 2 * h + 1]);
      mbarArrive(&pFull[s]);
    }
    q0 = q1;
  }
#endif
}

typedef void (*TcKernel)(const TcArgs);

// The kernel for (transA, transB, bf16) with the given pipeline depth.
template <int STAGES> TcKernel kernelFor(int index) {
  static const TcKernel table[8] = {
      tcGemmKernel<false, false, false, STAGES>, tcGemmKernel<false, false, true, STAGES>,
      tcGemmKernel<false, true, false, STAGES>,  tcGemmKernel<false, true, true, STAGES>,
      tcGemmKernel<true, false, false, STAGES>,  tcGemmKernel<true, false, true, STAGES>,
      tcGemmKernel<true, true, false, STAGES>,   tcGemmKernel<true, true, true, STAGES>};
  return table[index];
}
int kernelIndex(bool ta, bool tb, bool bf16) { return (ta ? 4 : 0) | (tb ? 2 : 0) | (bf16 ? 1 : 0); }
TcKernel kernelFor(int stages, int index) { return stages == 3 ? kernelFor<3>(index) : kernelFor<2>(index); }

// What one device allows, probed once.
struct TcDevice {
  bool probed = false, ok = false;
  int stages = 0, blocksPerSm = 1, sms = 1;
};
std::mutex gTcMutex;
TcDevice gTc[64];

const TcDevice& probe(int dev) {
  static const TcDevice none;
  if (dev < 0 || dev >= 64) return none;
  std::lock_guard<std::mutex> lock(gTcMutex);
  TcDevice& d = gTc[dev];
  if (d.probed) return d;
  d.probed = true;
  int major = 0, optin = 0, perSm = 0;
  cudaFuncAttributes fa{};
  const bool queried = cudaSetDevice(dev) == cudaSuccess &&
                       cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
                       cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
                       cudaDeviceGetAttribute(&perSm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev) == cudaSuccess;
  // binaryVersion: the architecture of the code this device would run; below 80 the kernels are
  // empty (a build without sm_80+ code for this device).
  if (!queried || major < 8 || cudaFuncGetAttributes(&fa, kernelFor(2, 0)) != cudaSuccess || fa.binaryVersion < 80) {
    cudaGetLastError();
    return d;
  }
  d.stages = size_t(optin) >= maxSmemBytes(3) ? 3 : size_t(optin) >= maxSmemBytes(2) ? 2 : 0;
  if (d.stages == 0) return d;
  for (int i = 0; i < 8; ++i) {
    const size_t bytes = smemBytes((i & 4) != 0, (i & 2) != 0, d.stages);
    if (cudaFuncSetAttribute(kernelFor(d.stages, i), cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)) != cudaSuccess ||
        cudaFuncSetAttribute(kernelFor(d.stages, i), cudaFuncAttributePreferredSharedMemoryCarveout, 100) != cudaSuccess) {
      cudaGetLastError();
      return d;
    }
  }
  // The runtime reserves 1 KB of shared memory per block.
  d.blocksPerSm = int(std::max<int64_t>(1, std::min<int64_t>(2, int64_t(perSm) / int64_t(maxSmemBytes(d.stages) + 1024))));
  d.sms = std::max(1, smCount(dev));
  d.ok = true;
  return d;
}

// SLIMOPT_GEMM_SPLITK=s forces s K-splits (tuning and tests); unset or 0: chosen below.
int forcedSplits() {
  static const int s = [] {
    const char* e = std::getenv("SLIMOPT_GEMM_SPLITK");
    return e != nullptr ? std::max(0, std::atoi(e)) : 0;
  }();
  return s;
}

// K-splits for a product of `tiles` output tiles: enough blocks for about one full wave of the
// device (rounded to the nearest whole number of splits), each split keeping >= 4 K slices.
int64_t chooseSplits(const TcDevice& d, int64_t tiles, int64_t K) {
  const int64_t kSlices = (K + TC_BK - 1) / TC_BK;
  if (kSlices < 2) return 1;
  if (forcedSplits() > 0) return std::min<int64_t>(forcedSplits(), kSlices);
  const int64_t slots = int64_t(d.sms) * d.blocksPerSm;
  int64_t s = (slots + tiles / 2) / tiles;
  s = std::min<int64_t>(s, kSlices / 4);
  return std::max<int64_t>(1, std::min<int64_t>(s, 16));
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

bool tensorCoreGemmAvailable(int dev) { return probe(dev).ok; }

namespace {
bool gStreamOn = true;
std::mutex gStreamMutex;
// Per device: 0 not probed, -1 the kernel does not run (shared memory, architecture), else the
// blocks per SM that are resident at once (the occupancy query, at most ST_BLOCKS_PER_SM). Read
// without the lock once probed: every GEMM asks twice (streamGemmFits, streamGemm).
std::atomic<int> gStreamBlocksPerSm[64] = {};

int streamBlocksPerSm(int dev) {
  if (dev < 0 || dev >= 64) return 0;
  const int known = gStreamBlocksPerSm[dev].load(std::memory_order_acquire);
  if (known != 0) return std::max(0, known);
  if (!probe(dev).ok) return 0;
  std::lock_guard<std::mutex> lock(gStreamMutex);
  if (gStreamBlocksPerSm[dev].load(std::memory_order_relaxed) == 0) {
    int optin = 0, occ = 0;
    const bool ok = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
                    size_t(optin) >= ST_SMEM &&
                    cudaFuncSetAttribute(tcStreamKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(ST_SMEM)) == cudaSuccess &&
                    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, tcStreamKernel, ST_THREADS, ST_SMEM) == cudaSuccess &&
                    occ > 0;
    if (!ok) cudaGetLastError();
    gStreamBlocksPerSm[dev].store(ok ? std::min(occ, ST_BLOCKS_PER_SM) : -1, std::memory_order_release);
  }
  return std::max(0, gStreamBlocksPerSm[dev].load(std::memory_order_relaxed));
}

// Per device: 0 not probed, -1 no, 1 the wgmma kernel runs there (the loaded image has it, and a
// block gets its shared memory). Read without the lock once probed.
std::atomic<int> gStreamWgmma[64] = {};

bool streamWgmmaRuns(int dev) {
  if (dev < 0 || dev >= 64) return false;
  const int known = gStreamWgmma[dev].load(std::memory_order_acquire);
  if (known != 0) return known > 0;
  std::lock_guard<std::mutex> lock(gStreamMutex);
  if (gStreamWgmma[dev].load(std::memory_order_relaxed) == 0) {
    int major = 0, optin = 0, image = 0;
    const bool ok = cudaSetDevice(dev) == cudaSuccess &&
                    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major == 9 &&
                    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
                    size_t(optin) >= WG_SMEM &&
                    cudaMemcpyFromSymbol(&image, gStreamWgmmaImage, sizeof(image)) == cudaSuccess && image == 1 &&
                    cudaFuncSetAttribute(tcStreamWgmmaKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(WG_SMEM)) == cudaSuccess;
    if (!ok) cudaGetLastError();
    gStreamWgmma[dev].store(ok ? 1 : -1, std::memory_order_release);
  }
  return gStreamWgmma[dev].load(std::memory_order_relaxed) > 0;
}
}  // namespace

bool streamGemmWgmma(int dev) { return gStreamOn && streamWgmmaRuns(dev); }

void setStreamGemm(bool on) { gStreamOn = on; }
bool streamGemmEnabled() { return gStreamOn; }
std::string streamGemmKernel(int dev) {
  if (!gStreamOn) return "off";
  if (streamWgmmaRuns(dev)) return "wgmma";
  return streamBlocksPerSm(dev) > 0 ? "mma.sync" : "none";
}

bool streamGemmFits(int dev, const GemmArgs& g, GemmMode mode) {
  return gStreamOn && mode == GemmMode::Tf32 && !g.transA && !g.transB && g.aType == DType::F32 &&
         g.bType == DType::F32 && g.cType == DType::F32 && g.K >= 8 && g.K <= ST_KMAX && g.K % 8 == 0 && g.M > 0 &&
         g.N > 0 && aligned(g.A, 16) && aligned(g.B, 16) && aligned(g.C, 16) && g.lda % 4 == 0 && g.ldb % 4 == 0 &&
         g.ldc % 4 == 0 && ((g.M + ST_BM - 1) / ST_BM) * ((g.N + ST_BN - 1) / ST_BN) <= INT32_MAX &&
         (streamWgmmaRuns(dev) || streamBlocksPerSm(dev) > 0);
}

namespace {
// The wgmma kernel's entry for g: one block per SM, persistent; phase order where the strips are at
// most half the SMs, else contiguous ranges (see the tile order above).
WgEntry wgEntryOf(const GemmArgs& g, int64_t sms, int64_t* blocks) {
  WgEntry x{};
  x.A = static_cast<const float*>(g.A);
  x.B = static_cast<const float*>(g.B);
  x.C = static_cast<float*>(g.C);
  x.M = g.M; x.N = g.N; x.lda = g.lda; x.ldb = g.ldb; x.ldc = g.ldc;
  x.K = int32_t(g.K);
  x.alpha = g.alpha;
  x.beta = g.beta;
  const int64_t strips = (g.N + WG_BN - 1) / WG_BN, tilesM = (g.M + WG_BM - 1) / WG_BM;
  x.tilesM = int32_t(tilesM);
  x.strips = int32_t(strips);
  x.phases = 2 * strips <= sms ? int32_t(std::min<int64_t>(sms / strips, tilesM)) : 0;
  *blocks = x.phases > 0 ? strips * x.phases : std::min<int64_t>(tilesM * strips, sms);
  return x;
}
}  // namespace

Status streamGemmMany(int dev, cudaStream_t st, const GemmArgs* gs, int64_t count, const float* alphaBeta,
                      const int32_t* flag) {
  if (!streamWgmmaRuns(dev)) {
    for (int64_t i = 0; i < count; ++i) {
      const Status ok = streamGemm(dev, st, gs[i], alphaBeta, flag);
      if (!ok.ok()) return ok;
    }
    return Status();
  }
  const int64_t sms = std::max(1, smCount(dev));
  WgGroupArgs k{};
  k.alphaBeta = alphaBeta;
  k.flag = flag;
  int64_t blocks = 0, tiles = 0;
  auto launch = [&]() {
    if (k.count == 0) return Status();
    tcStreamWgmmaKernel<<<unsigned(blocks), WG_THREADS, WG_SMEM, st>>>(k);
    k.count = 0;
    blocks = tiles = 0;
    return lastError("gemm (streaming wgmma kernel)");
  };
  for (int64_t i = 0; i < count; ++i) {
    const GemmArgs& g = gs[i];
    if (g.M <= 0 || g.N <= 0) continue;
    int64_t b = 0;
    const WgEntry x = wgEntryOf(g, sms, &b);
    // A block's tile count over a launch stays an int (streamGemmFits bounds each product's).
    const int64_t t = int64_t(x.tilesM) * x.strips;
    if (k.count == WG_GROUP || tiles + t > (int64_t(1) << 30)) {
      const Status ok = launch();
      if (!ok.ok()) return ok;
    }
    k.e[k.count++] = x;
    blocks = std::max(blocks, b);
    tiles += t;
  }
  return launch();
}

Status streamGemm(int dev, cudaStream_t st, const GemmArgs& g, const float* alphaBeta, const int32_t* flag) {
  if (streamWgmmaRuns(dev)) return streamGemmMany(dev, st, &g, 1, alphaBeta, flag);
  StreamArgs k{};
  k.g = g;
  k.alphaBeta = alphaBeta;
  k.flag = flag;
  k.tilesM = (g.M + ST_BM - 1) / ST_BM;
  k.tiles = k.tilesM * ((g.N + ST_BN - 1) / ST_BN);
  // As many blocks as are resident at once: the blocks are persistent over tile ranges, so a second
  // wave (where two blocks of ST_SMEM do not fit, as on sm_80) would only repeat each block's setup,
  // its strip of B loaded and its copy pipeline filled, for half the tiles.
  const int64_t resident = int64_t(std::max(1, streamBlocksPerSm(dev))) * std::max(1, smCount(dev));
  const int64_t blocks = std::min<int64_t>(k.tiles, resident);
  tcStreamKernel<<<unsigned(blocks), ST_THREADS, ST_SMEM, st>>>(k);
  return lastError("gemm (streaming tensor-core kernel)");
}

Status tensorCoreGemm(int dev, cudaStream_t st, const GemmArgs& g, GemmMode mode, const float* alphaBeta,
                      const int32_t* flag) {
  if (g.M <= 0 || g.N <= 0) return Status();
  const TcDevice& d = probe(dev);
  if (!d.ok) return invalidArg("gemm: the tensor-core kernel does not run on this device");
  if (g.aType != DType::F32 || g.bType != DType::F32 || g.cType == DType::U8 || g.cType == DType::I32)
    return invalidArg("gemm: the tensor-core kernel takes f32 A, B and f32/bf16/f16 C");
  const int64_t tilesM = (g.M + TC_BM - 1) / TC_BM, tilesN = (g.N + TC_BN - 1) / TC_BN;
  if (tilesM > 65535 || tilesN > INT32_MAX) return invalidArg("gemm: too large");
  TcArgs k{};
  k.g = g;
  k.alphaBeta = alphaBeta;
  k.flag = flag;
  k.vecA = aligned(g.A, 16) && g.lda % 4 == 0;
  k.vecB = aligned(g.B, 16) && g.ldb % 4 == 0;
  k.pairC = aligned(g.C, 2 * size_t(dtypeSize(g.cType))) && g.ldc % 2 == 0;
  int64_t splits = chooseSplits(d, tilesM * tilesN, g.K);
  if (splits > 1) {
    const int64_t slices = (g.K + TC_BK - 1) / TC_BK;
    k.kPerSplit = (slices + splits - 1) / splits * TC_BK;
    splits = (g.K + k.kPerSplit - 1) / k.kPerSplit;  // no empty split
  }
  void* ws = nullptr;
  if (splits > 1 && !alloc(dev, size_t(splits * g.M * g.N) * sizeof(float), &ws).ok()) {
    cudaGetLastError();  // no room for the partials: one pass instead
    ws = nullptr;
    splits = 1;
  }
  if (splits <= 1) k.kPerSplit = g.K;
  k.partials = static_cast<float*>(ws);
  const int index = kernelIndex(g.transA, g.transB, mode == GemmMode::Bf16);
  const dim3 grid(static_cast<unsigned>(tilesN), static_cast<unsigned>(tilesM), static_cast<unsigned>(splits));
  kernelFor(d.stages, index)<<<grid, TC_THREADS, smemBytes(g.transA, g.transB, d.stages), st>>>(k);
  Status s = lastError("gemm (tensor cores)");
  if (ws != nullptr) {
    if (s.ok()) {
      const int64_t quads = (g.M * g.N + 3) / 4;
      const unsigned blocks = unsigned(std::max<int64_t>(1, std::min<int64_t>((quads + 255) / 256, int64_t(d.sms) * 8)));
      splitReduceKernel<<<blocks, 256, 0, st>>>(k, int(splits));
      s = lastError("gemm (split-K reduction)");
    }
    Status r = release(dev, ws);
    if (s.ok()) s = r;
  }
  return s;
}

}  // namespace gpu
}  // namespace slimopt
