// Micro bench kernel (bench/micro/back_tma.cu; not used by the library): GaLore's long-K
// project-back on Hopper, C <- alpha A B + beta C (A M x K, B K x N, C M x N, row-major f32, TF32
// products) for K = r of 256 and more, where cuBLAS's kernels run at ~230-280 TFLOP/s: they read
// and write C after their products, with the tensor cores idle. One persistent block per SM,
// warp-specialised:
// - a producer warp brings each K slice of A (BM rows x BK) and B (BK x 128 columns) into a ring
//   of STAGES shared stages by TMA, and asks L2 for the tile's C (bulk prefetch) as it starts it;
// - two multiplying warpgroups compute a BM x 128 tile of C, warpgroup w its 64 columns: wgmma
//   m64nBMk8 with the tile's columns as the MMA's rows, so that B (K x N, N-contiguous) is the
//   register operand (TF32 wgmma reads shared operands K-major only; A is K-major as given) and
//   neither operand is transposed in memory (RS). SS instead has three warps transpose each slice
//   of B into a K-major copy, and both operands go by descriptor;
// - the epilogue: MEMORY puts the product in one shared buffer that memory warps stream C through
//   (out = alpha product + beta C, whole rows) while the next tile is multiplied; otherwise the
//   multiplying warps read and write C themselves (from L2) and the ring gets all shared memory.
// - CL 2: clusters of two blocks on neighbouring tiles of a row, each loading half of A's slice
//   and multicasting it to both. RASTER: tiles in panels of PANEL row tiles.
// Layouts, chosen so that shared accesses are conflict-free (or 2-way where said):
// - A's slice: TMA box {BK, BM / CL}, the wgmma K-major layout with the 128-byte (BK 32) or 64-byte
//   (BK 16) swizzle;
// - B's slice: four TMA boxes {32 columns, BK rows} with the 128-byte swizzle (16-byte group c of
//   row k at c ^ (k % 8)). RS with MEMORY: MMA row 16 w + g + 8 h of lane (g, t) is column
//   32 (w / 2) + 8 (w % 2) + 4 h + 16 (g / 4) + g % 4 of its warpgroup's 64, so a warp's fragment
//   loads meet 32 distinct banks; RS direct: 8 consecutive columns per row of lanes (2-way);
// - the product: row r of the tile (128 floats) with its 16-byte group c at c ^ ((r / 2) % 4).
// Edges: TMA fills rows and columns past M, N, K with zeros; only C's inside is written. Needs
// sm_90a, N % 4 == 0, lda, ldb, ldc % 4 == 0 and 16-byte aligned bases (fits).
// Measured (bench/results/NVIDIA-H200-2026-11-25-26/): every variant is correct and slower than
// cuBLAS; bench/NOTES.md says what each variant showed.
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace slimopt {
namespace gpu {
namespace backtma {

constexpr int BN = 128, GROUP = 16, PANEL = 8;

template <int BM, int BK, int STAGES, int CL, bool MEMORY, bool SS = false>
struct Config {
  static_assert(!SS || (BK == 32 && !MEMORY), "B transposed in shared memory: 128-byte rows, warps 9-11 free");
  static_assert(BM == 192 || BM == 256, "wgmma n");
  static_assert(BK == 16 || BK == 32, "64- or 128-byte rows of A");
  static_assert(CL == 1 || CL == 2, "clusters of 1 or 2 along a row of tiles");
  static constexpr int A_BYTES = BM * BK * 4;
  static constexpr int B_SUB = BK * 128;  // one 32-column box of B
  static constexpr int B_BYTES = 4 * B_SUB;
  static constexpr int BT_BYTES = SS ? BN * BK * 4 : 0;  // B transposed: 128 rows (columns of C) x BK
  static constexpr int STAGE = A_BYTES + B_BYTES + BT_BYTES;
  static constexpr int PRODUCT = MEMORY ? BM * BN * 4 : 0;
  static constexpr size_t SMEM = size_t(STAGES) * STAGE + PRODUCT + 1024;  // + alignment
  static_assert((A_BYTES / CL) % 1024 == 0 && B_SUB % 1024 == 0, "boxes 1024-aligned (the swizzle atom)");
  // Warps 0-7 multiply, 8 produces; with the product buffer the rest stream C. ptxas compiles a
  // kernel within 64 K registers over its block size rounded to warpgroups, and an n256 MMA with
  // its 128 accumulators needs more than the 128 a 512-thread block leaves: BM 256 takes 384
  // threads (3 memory warps), BM 192 512 (7).
  static constexpr int THREADS = MEMORY && BM == 192 ? 512 : 384;
  static constexpr int MEMORY_WARPS = MEMORY ? THREADS / 32 - 9 : 1;
  static constexpr int UNROLL = THREADS == 384 ? 16 : 8;  // rows of C in flight per memory thread
};

// One product of a launch: the TMA maps of A (dims {K, M}, box {BK, BM}) and B (dims {N, K}, box
// {32, BK}), C, and where its tiles start in the launch's sequence.
struct Entry {
  CUtensorMap mapA;
  CUtensorMap mapB;
  float* C;
  int64_t ldc;
  int32_t M, N, K, tilesN, tileStart;
  float alpha, beta;
};
struct Args {
  Entry e[GROUP];
  const float* alphaBeta;  // device [alpha, beta] for every entry, or null (then each entry's own)
  const int32_t* flag;     // skip everything when *flag != 0 (null: never)
  int32_t count, tiles;
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ uint32_t smemAddress(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbarInit(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smemAddress(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smemAddress(bar)) : "memory");
}
__device__ __forceinline__ void mbarExpectTx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smemAddress(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbarWait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra WAIT_%=;\n}\n" ::"r"(smemAddress(bar)), "r"(parity) : "memory");
}
__device__ __forceinline__ void tmaLoad2d(void* dst, const CUtensorMap* map, int x, int y, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smemAddress(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(smemAddress(bar))
      : "memory");
}
// The same box into the shared memory of every block in mask (same offsets), each block's barrier
// at bar's offset told of the bytes that land there.
__device__ __forceinline__ void tmaLoad2dMulticast(void* dst, const CUtensorMap* map, int x, int y, uint64_t* bar,
                                                   uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%2, "
      "%3}], [%4], %5;\n" ::"r"(smemAddress(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(smemAddress(bar)), "h"(mask)
      : "memory");
}
// A stage is free again: arrive on its barrier in every block of the cluster (each one's producer
// multicasts into all of them).
template <int CL>
__device__ __forceinline__ void release(uint64_t* bar) {
  if constexpr (CL == 1) {
    mbarArrive(bar);
  } else {
#pragma unroll
    for (uint32_t r = 0; r < CL; ++r) {
      uint32_t remote;
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(smemAddress(bar)), "r"(r));
      asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
    }
  }
}
// Every thread of the cluster (of the block when CL is 1) gets here before any goes on.
template <int CL>
__device__ __forceinline__ void clusterSync() {
  if constexpr (CL == 1) {
    __syncthreads();
  } else {
    asm volatile("barrier.cluster.arrive.release;\n" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory");
  }
}
__device__ __forceinline__ void prefetchL2(const void* p, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
}
// Shared-memory matrix descriptor, K-major, rows of 128 bytes (128-byte swizzle, 8-row groups
// 1024 bytes apart) or 64 bytes (64-byte swizzle, 512 apart).
template <int BK>
__device__ __forceinline__ uint64_t descriptor(uint32_t address) {
  constexpr uint64_t stride = BK == 32 ? 1024 : 512, layout = BK == 32 ? 1 : 2;
  return uint64_t((address & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | ((stride >> 4) << 32) | (layout << 62);
}
// TF32 bits of x, rounded to nearest (the tensor cores would truncate).
__device__ __forceinline__ uint32_t roundTf32(uint32_t x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(x)));
  return r;
}
template <int N>
__device__ __forceinline__ void fenceAccumulators(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d (+)= A B for a 64 x 256 x 8 step: A from registers (a[0..3]: lane (g, t) of warp w holds rows
// 16 w + g, + 8 at k slots t, then both at slot t + 4), B (K-major) by descriptor; accumulate 0
// overwrites d.
__device__ __forceinline__ void wgmmaN256(float (&d)[128], const uint32_t (&a)[4], uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k8.f32.tf32.tf32 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, {%128, %129, %130, %131}, %132, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
}

// d (+)= A B for a 64 x 192 x 8 step: A from registers (a[0..3]: lane (g, t) of warp w holds rows
// 16 w + g, + 8 at k slots t, then both at slot t + 4), B (K-major) by descriptor; accumulate 0
// overwrites d.
__device__ __forceinline__ void wgmmaN192(float (&d)[96], const uint32_t (&a)[4], uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %101, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n192k8.f32.tf32.tf32 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, {%96, %97, %98, %99}, %100, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
}

// d (+)= A B for a 64 x 256 x 8 step, both operands K-major by descriptor; accumulate 0 overwrites d.
__device__ __forceinline__ void wgmmaSsN256(float (&d)[128], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k8.f32.tf32.tf32 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(a), "l"(b), "r"(accumulate));
}
// d (+)= A B for a 64 x 192 x 8 step, both operands K-major by descriptor; accumulate 0 overwrites d.
__device__ __forceinline__ void wgmmaSsN192(float (&d)[96], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n192k8.f32.tf32.tf32 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, %96, %97, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
      : "l"(a), "l"(b), "r"(accumulate));
}


// Entry and tile (row tile, column tile) of the launch's tile t. Tiles go in panels of PANEL row
// tiles, column by column (a cluster's CL neighbours in a row stay together), so that the tiles in
// flight at once read a few rows of A and a few columns of B rather than all of B.
template <int CL>
__device__ __forceinline__ const Entry& place(const Args& k, int t, int ti0, int& ti, int& tj) {
  int e = 0;
  while (e + 1 < k.count && t >= k.e[e + 1].tileStart) ++e;
  const Entry& x = k.e[e];
  const int local = t - x.tileStart;
  if (ti0 <= 0) {
    ti = local / x.tilesN;
    tj = local % x.tilesN;
    return x;
  }
  const int tilesM = (x.M + ti0 - 1) / ti0;  // ti0: BM here
  const int panelTiles = PANEL * x.tilesN, panel = local / panelTiles, r = local % panelTiles;
  const int rows = min(PANEL, tilesM - panel * PANEL);
  const int q = r / CL;  // cluster slot within the panel
  ti = panel * PANEL + q % rows;
  tj = (q / rows) * CL + r % CL;
  return x;
}
#endif

template <int BM, int BK, int STAGES, int CL, bool MEMORY, bool RASTER, bool SS = false, bool FAKE = false>
__global__ void __launch_bounds__(Config<BM, BK, STAGES, CL, MEMORY, SS>::THREADS, 1) backTmaKernel(const __grid_constant__ Args k) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = Config<BM, BK, STAGES, CL, MEMORY, SS>;
  constexpr int NACC = BM / 2, KSTEPS = BK / 8;
  if (k.flag != nullptr && *k.flag != 0) return;
  extern __shared__ float4 btSmem[];
  uint8_t* const base = reinterpret_cast<uint8_t*>(btSmem) + ((1024u - (smemAddress(btSmem) & 1023u)) & 1023u);
  float* const product = reinterpret_cast<float*>(base + STAGES * Cfg::STAGE);
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES], ready[STAGES], prodFull, prodEmpty;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  uint32_t rank = 0;
  if constexpr (CL > 1) asm("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbarInit(&full[s], 1);        // the producer's expect_tx
      mbarInit(&empty[s], 8 * CL);  // each multiplying warp of the cluster (A is multicast)
      mbarInit(&ready[s], 3);       // SS: each transposing warp
    }
    mbarInit(&prodFull, 256);
    mbarInit(&prodEmpty, Cfg::MEMORY_WARPS);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  clusterSync<CL>();
  // Tiles: the cluster takes CL neighbours in a row (one each), which share A's slices.
  const int cid = int(blockIdx.x) / CL, GC = int(gridDim.x) / CL, pairs = k.tiles / CL;
  const float alphaAll = k.alphaBeta ? k.alphaBeta[0] : 0.0f, betaAll = k.alphaBeta ? k.alphaBeta[1] : 0.0f;

  if (warp >= 8) {
    if constexpr (Cfg::THREADS == 512) asm volatile("setmaxnreg.dec.sync.aligned.u32 88;\n" ::: "memory");
    else if constexpr (MEMORY) asm volatile("setmaxnreg.dec.sync.aligned.u32 104;\n" ::: "memory");
    else asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (warp == 8) {  // producer
      int it = 0;
      for (int p = cid; p < pairs; p += GC) {
        int ti, tj;
        const Entry& x = place<CL>(k, p * CL + int(rank), RASTER ? BM : 0, ti, tj);
        const int i0 = ti * BM, j0 = tj * BN;
        if (j0 < x.N) {
          const uint32_t rowBytes = uint32_t(min(BN, x.N - j0)) * 4u;
          for (int r = lane; r < BM && i0 + r < x.M; r += 32) prefetchL2(x.C + int64_t(i0 + r) * x.ldc + j0, rowBytes);
        }
        const int nk = (x.K + BK - 1) / BK;
        for (int kb = 0; kb < nk; ++kb, ++it) {
          const int s = it % STAGES;
          if (lane == 0) {
            if (it >= STAGES) mbarWait(&empty[s], uint32_t((it / STAGES - 1) & 1));
            mbarExpectTx(&full[s], uint32_t(Cfg::A_BYTES + Cfg::B_BYTES));  // what TMA writes (not Bt)
            uint8_t* const st = base + s * Cfg::STAGE;
            if constexpr (CL > 1)
              tmaLoad2dMulticast(st + rank * (Cfg::A_BYTES / CL), &x.mapA, kb * BK, i0 + int(rank) * (BM / CL), &full[s],
                                 uint16_t((1u << CL) - 1));
            else tmaLoad2d(st, &x.mapA, kb * BK, i0, &full[s]);
#pragma unroll
            for (int jo = 0; jo < 4; ++jo) tmaLoad2d(st + Cfg::A_BYTES + jo * Cfg::B_SUB, &x.mapB, j0 + 32 * jo, kb * BK, &full[s]);
          }
          __syncwarp();
        }
      }
    } else if (SS) {
      // Warps 9-11 transpose each slice of B (4 boxes of BK x 32, 128-byte swizzle) into Bt
      // (128 rows of BK, K-major, 128-byte swizzle: row j's 16-byte group c at c ^ (j % 8)), rounded
      // to TF32. A warp's lanes take 32 consecutive columns j of one group of 4 k: their reads of a
      // row of a box are a permutation of its 32 banks, their 16-byte writes 4 wavefronts.
      const int tw = warp - 9;
      int it = 0;
      for (int p = cid; p < pairs; p += GC) {
        int ti, tj;
        const Entry& x = place<CL>(k, p * CL + int(rank), RASTER ? BM : 0, ti, tj);
        const int nk = (x.K + BK - 1) / BK;
        for (int kb = 0; kb < nk; ++kb, ++it) {
          const int s = it % STAGES;
          mbarWait(&full[s], uint32_t((it / STAGES) & 1));
          const uint8_t* const raw = base + s * Cfg::STAGE + Cfg::A_BYTES;
          uint8_t* const bt = base + s * Cfg::STAGE + Cfg::A_BYTES + Cfg::B_BYTES;
          for (int item = 32 * tw + lane; !FAKE && item < BN * BK / 4; item += 96) {
            const int j = item & (BN - 1), kc = item / BN, jj = j & 31;
            const uint8_t* const box = raw + (j >> 5) * Cfg::B_SUB + (jj & 3) * 4;
            uint32_t v[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int kq = 4 * kc + e;
              v[e] = roundTf32(*reinterpret_cast<const uint32_t*>(box + kq * 128 + ((((jj >> 2) ^ kq) & 7) << 4)));
            }
            *reinterpret_cast<uint4*>(bt + j * 128 + (((kc ^ j) & 7) << 4)) = make_uint4(v[0], v[1], v[2], v[3]);
          }
          // The generic-proxy stores are read next by the tensor cores (async proxy).
          asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
          __syncwarp();
          if (lane == 0) mbarArrive(&ready[s]);
        }
      }
    } else if (MEMORY) {
      // Memory warps: warp m takes rows m + MEMORY_WARPS i of each tile, a lane 4 columns.
      const int m = warp - 9;
      int tc = 0;
      for (int p = cid; p < pairs; p += GC, ++tc) {
        int ti, tj;
        const Entry& x = place<CL>(k, p * CL + int(rank), RASTER ? BM : 0, ti, tj);
        const float alpha = k.alphaBeta ? alphaAll : x.alpha, beta = k.alphaBeta ? betaAll : x.beta;
        const int i0 = ti * BM, j0 = tj * BN;
        const int rows = min(BM, x.M - i0);
        const bool colOk = j0 + 4 * lane < x.N;
        float* const c0 = x.C + int64_t(i0) * x.ldc + j0 + 4 * lane;
        mbarWait(&prodFull, uint32_t(tc & 1));
        constexpr int U = Cfg::UNROLL, MW = Cfg::MEMORY_WARPS;
        for (int r0 = m; r0 < BM; r0 += MW * U) {
          float4 c[U];
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const int r = r0 + MW * u;
            c[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (r < rows && colOk && beta != 0.0f) c[u] = *reinterpret_cast<const float4*>(c0 + int64_t(r) * x.ldc);
          }
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const int r = r0 + MW * u;
            if (r >= rows || !colOk) continue;
            const float4 v = *reinterpret_cast<const float4*>(product + r * BN + ((lane ^ ((r >> 1) & 3)) << 2));
            *reinterpret_cast<float4*>(c0 + int64_t(r) * x.ldc) =
                make_float4(alpha * v.x + beta * c[u].x, alpha * v.y + beta * c[u].y, alpha * v.z + beta * c[u].z,
                            alpha * v.w + beta * c[u].w);
          }
        }
        __syncwarp();
        if (lane == 0) mbarArrive(&prodEmpty);
      }
    }
  } else {
    if constexpr (Cfg::THREADS == 512) asm volatile("setmaxnreg.inc.sync.aligned.u32 168;\n" ::: "memory");
    else if constexpr (MEMORY) asm volatile("setmaxnreg.inc.sync.aligned.u32 200;\n" ::: "memory");
    else asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
    const int wg = warp >> 2, w = warp & 3, g = lane >> 2, tq = lane & 3;
    const uint32_t subOffset = uint32_t(Cfg::A_BYTES + (2 * wg + (w >> 1)) * Cfg::B_SUB);
    // Column (within the warp's 32-column box) of MMA row 16 w + g + 8 h: with the product buffer,
    // the conflict-free order; else 8 consecutive columns for a warp's lanes g (whole 32-byte
    // sectors in the epilogue, 2-way conflicts on the fragment loads).
    auto boxCol = [&](int h) { return MEMORY ? 8 * (w & 1) + 4 * h + 16 * (g >> 2) + (g & 3) : 16 * (w & 1) + 8 * h + g; };
    auto bOffset = [&](int kk, int h) {
      const int c = boxCol(h);
      return uint32_t(kk * 128 + ((((c >> 2) ^ kk) & 7) << 4) + (c & 3) * 4);
    };
    const uint32_t o00 = bOffset(tq, 0), o01 = bOffset(tq, 1), o10 = bOffset(tq + 4, 0), o11 = bOffset(tq + 4, 1);
    const uint32_t smemBase = smemAddress(base);
    float acc[NACC];
    uint32_t f[KSTEPS][4];
    int it = 0, tc = 0;
    for (int p = cid; p < pairs; p += GC, ++tc) {
      int ti, tj;
      const Entry& x = place<CL>(k, p * CL + int(rank), RASTER ? BM : 0, ti, tj);
      const int nk = (x.K + BK - 1) / BK;
      // Each K slice: its fragments loaded once the slice before has retired (ptxas serialises
      // every MMA where registers of MMAs in flight are written), then its MMAs as one group.
      if constexpr (SS) {
        // Both operands by descriptor: the next slice's MMAs are issued while this one's run.
        for (int kb = 0; kb < nk; ++kb, ++it) {
          const int s = it % STAGES;
          mbarWait(&full[s], uint32_t((it / STAGES) & 1));
          mbarWait(&ready[s], uint32_t((it / STAGES) & 1));
          asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
          const uint32_t aAddress = smemBase + uint32_t(s * Cfg::STAGE);
          const uint32_t btAddress = aAddress + uint32_t(Cfg::A_BYTES + Cfg::B_BYTES + wg * 64 * 128);
#pragma unroll
          for (int ks = 0; ks < KSTEPS; ++ks) {
            const uint64_t da = descriptor<BK>(btAddress + uint32_t(ks * 32)), db = descriptor<BK>(aAddress + uint32_t(ks * 32));
            const int accumulate = (kb > 0 || ks > 0) ? 1 : 0;
            if constexpr (BM == 256) wgmmaSsN256(acc, da, db, accumulate);
            else wgmmaSsN192(acc, da, db, accumulate);
          }
          asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
          asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
          if (kb > 0 && lane == 0) release<CL>(&empty[(it - 1) % STAGES]);
        }
      } else {
        for (int kb = 0; kb < nk; ++kb, ++it) {
          const int s = it % STAGES;
          mbarWait(&full[s], uint32_t((it / STAGES) & 1));
          asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
          fenceAccumulators(acc);
          if (kb > 0 && lane == 0) release<CL>(&empty[(it - 1) % STAGES]);
          const uint8_t* const sub = base + s * Cfg::STAGE + subOffset;
  #pragma unroll
          for (int ks = 0; ks < KSTEPS; ++ks) {
            const uint8_t* const row = sub + ks * 8 * 128;
            f[ks][0] = roundTf32(*reinterpret_cast<const uint32_t*>(row + o00));
            f[ks][1] = roundTf32(*reinterpret_cast<const uint32_t*>(row + o01));
            f[ks][2] = roundTf32(*reinterpret_cast<const uint32_t*>(row + o10));
            f[ks][3] = roundTf32(*reinterpret_cast<const uint32_t*>(row + o11));
          }
          asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
          const uint32_t aAddress = smemBase + uint32_t(s * Cfg::STAGE);
  #pragma unroll
          for (int ks = 0; ks < KSTEPS; ++ks) {
            const uint64_t d = descriptor<BK>(aAddress + uint32_t(ks * 32));
            const int accumulate = (kb > 0 || ks > 0) ? 1 : 0;
            if constexpr (BM == 256) wgmmaN256(acc, f[ks], d, accumulate);
            else wgmmaN192(acc, f[ks], d, accumulate);
          }
          asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        }
      }
      asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
      fenceAccumulators(acc);
      if (lane == 0) release<CL>(&empty[(it - 1) % STAGES]);
      const int i0 = ti * BM, jw = tj * BN + 64 * wg + 32 * (w >> 1);
      if constexpr (MEMORY) {
        // The product: acc[4 i + 2 h + e] is tile row 8 i + 2 tq + e, column col(h).
        if (tc > 0) mbarWait(&prodEmpty, uint32_t((tc - 1) & 1));
        const int col0 = 64 * wg + 32 * (w >> 1) + boxCol(0);
#pragma unroll
        for (int i = 0; i < NACC / 4; ++i)
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int r = 8 * i + 2 * tq + e, col = col0 + 4 * h;
              product[r * BN + ((((col >> 2) ^ ((r >> 1) & 3))) << 2) + (col & 3)] = acc[4 * i + 2 * h + e];
            }
        mbarArrive(&prodFull);
      } else {
        // acc[4 i + 2 h + e] is C row i0 + 8 i + 2 tq + e, column jw + boxCol(h); C (in L2 since the
        // tile's loads began) read in four parts of the rows (registers).
        const float alpha = k.alphaBeta ? alphaAll : x.alpha, beta = k.alphaBeta ? betaAll : x.beta;
        // SS: MMA row 16 w + g + 8 h is Bt's row, the tile's column 64 wg + 16 w + g + 8 h.
        const int cl[2] = {SS ? tj * BN + 64 * wg + 16 * w + g : jw + boxCol(0), SS ? tj * BN + 64 * wg + 16 * w + g + 8 : jw + boxCol(1)};
        constexpr int ROUNDS = 4, PART = NACC / 4 / ROUNDS;
#pragma unroll
        for (int q = 0; q < ROUNDS; ++q) {
          float cv[PART][2][2];
#pragma unroll
          for (int i = 0; i < PART; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int r = i0 + 8 * (i + q * PART) + 2 * tq + e;
                cv[i][h][e] = (beta != 0.0f && r < x.M && cl[h] < x.N) ? x.C[int64_t(r) * x.ldc + cl[h]] : 0.0f;
              }
#pragma unroll
          for (int i = 0; i < PART; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int r = i0 + 8 * (i + q * PART) + 2 * tq + e;
                if (r < x.M && cl[h] < x.N)
                  x.C[int64_t(r) * x.ldc + cl[h]] = alpha * acc[4 * (i + q * PART) + 2 * h + e] + beta * cv[i][h][e];
              }
        }
      }
    }
  }
  // A peer may still arrive on this block's barriers (or multicast into it) until it is done too.
  clusterSync<CL>();
#endif
}

// ---- host side -------------------------------------------------------------------------------

typedef CUresult (*EncodeTiledFn)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                  const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                  CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// cuTensorMapEncodeTiled from the driver (the build links no libcuda), or null.
inline EncodeTiledFn encodeTiled() {
  static EncodeTiledFn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = nullptr;
    return reinterpret_cast<EncodeTiledFn>(p);
  }();
  return fn;
}

// The shapes and layouts the kernel takes (see the top of this file).
inline bool fits(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                 const float* C, int64_t ldc) {
  auto aligned = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
  return M > 0 && N > 0 && K > 0 && M < (1LL << 31) && N < (1LL << 31) && K < (1LL << 31) && N % 4 == 0 &&
         lda % 4 == 0 && ldb % 4 == 0 && ldc % 4 == 0 && lda >= K && ldb >= N && ldc >= N && aligned(A) &&
         aligned(B) && aligned(C);
}

// Fills x for C <- alpha A B + beta C (maps, sizes; tileStart left to the caller). False when the
// driver cannot encode the maps.
template <int BM, int BK, int CL>
bool makeEntry(Entry& x, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
               float* C, int64_t ldc, float alpha, float beta) {
  const EncodeTiledFn enc = encodeTiled();
  if (enc == nullptr) return false;
  const cuuint32_t ones[2] = {1, 1};
  const cuuint64_t dimA[2] = {cuuint64_t(K), cuuint64_t(M)}, strideA[1] = {cuuint64_t(lda) * 4};
  const cuuint32_t boxA[2] = {cuuint32_t(BK), cuuint32_t(BM / CL)};
  const cuuint64_t dimB[2] = {cuuint64_t(N), cuuint64_t(K)}, strideB[1] = {cuuint64_t(ldb) * 4};
  const cuuint32_t boxB[2] = {32, cuuint32_t(BK)};
  if (enc(&x.mapA, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, const_cast<float*>(A), dimA, strideA, boxA, ones,
          CU_TENSOR_MAP_INTERLEAVE_NONE, BK == 32 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
          CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
    return false;
  if (enc(&x.mapB, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, const_cast<float*>(B), dimB, strideB, boxB, ones,
          CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
    return false;
  x.C = C;
  x.ldc = ldc;
  x.M = int32_t(M);
  x.N = int32_t(N);
  x.K = int32_t(K);
  x.tilesN = int32_t((N + BN * CL - 1) / (BN * CL) * CL);  // a cluster's blocks share a row
  x.tileStart = 0;
  x.alpha = alpha;
  x.beta = beta;
  return true;
}

// Tiles of one entry.
template <int BM>
inline int64_t tilesOf(const Entry& x) {
  return int64_t((x.M + BM - 1) / BM) * x.tilesN;
}

}  // namespace backtma
}  // namespace gpu
}  // namespace slimopt
