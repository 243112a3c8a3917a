// Microbenchmark: GaLore's project-back C <- beta C + alpha A B at long K (r = 256 .. 1024; A: M x K,
// B: K x N, row-major f32, TF32) against cublasSgemm (TF32 math) on the same data. At r = 512 cuBLAS
// runs these at ~250 TFLOP/s (bench/NOTES.md): its 128 x 128 tiles read and write C after their
// products, with the tensor cores idle. The kernel here prefetches its tile of C into L2 when it
// starts, so that the epilogue reads C from L2 and only its stores trail the products:
//   - B is first transposed (and rounded to TF32) into Bt (N x K): the TF32 warpgroup MMAs read
//     both operands K-major from shared memory;
//   - a block of two warpgroups computes a 128 (rows of C) x 256 (columns) tile, each warpgroup 64
//     rows with wgmma m64n256k8, both operands by descriptor (K-major, 128-byte swizzle);
//   - K in slices of 32 through a ring of STAGES cp.async stages, STAGES - 2 slices ahead, one wgmma
//     group in flight across the block's barrier.
// Self-contained (cuBLAS by dlopen):
//
//   nvcc -O3 -gencode arch=compute_90a,code=sm_90a -cudart static -o /tmp/lk bench/micro/back_longk.cu -ldl && /tmp/lk
//
// Each result is checked against a plain f32 kernel (relErr: max |diff| / max |ref|). Times: median
// of 20 launches over 4 rotating C buffers (beyond L2), CUDA events; TFLOP/s = 2 M N K / time;
// fracOfCopy = (C read + written) / time over a copy kernel's bandwidth in the same run.
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

constexpr int LK_BI = 128, LK_BJ = 256, LK_BK = 32, LK_THREADS = 256;
constexpr int LK_A_BYTES = LK_BI * LK_BK * 4;   // A's slice: 128 rows x 128 bytes, swizzled
constexpr int LK_B_BYTES = LK_BJ * LK_BK * 4;   // Bt's slice: 256 rows x 128 bytes, swizzled
constexpr int LK_STAGE_BYTES = LK_A_BYTES + LK_B_BYTES;
static_assert(LK_A_BYTES % 1024 == 0 && LK_STAGE_BYTES % 1024 == 0, "slices start 1024-aligned (the swizzle atom)");
constexpr size_t lkSmem(int stages) { return size_t(stages) * LK_STAGE_BYTES + 1024; }

struct Args {
  int64_t M, N, K;
  const float* A; int64_t lda;
  const float* Bt; int64_t ldbt;  // B transposed: N x K
  float* C; int64_t ldc;
  const float* alphaBeta;
  int tilesJ;
};

__device__ __forceinline__ uint32_t smemAddr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ float roundTf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return __uint_as_float(r);
}
__device__ __forceinline__ void cpAsync16(uint32_t dst, const float* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t wgmmaDescriptor(uint32_t address) {
  return uint64_t((address & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
// d (+)= A B for a 64 x 256 x 8 step, A (64 x 8) and B (256 x 8) by descriptor; accumulate 0
// overwrites d.
__device__ __forceinline__ void wgmma256(float (&d)[128], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k8.f32.tf32.tf32 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void fenceAcc(float (&d)[128]) {
#pragma unroll
  for (int i = 0; i < 128; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Rows [r0, r0 + ROWS) of X (K-major, leading dimension ld, rows < rowEnd), K [k0, k0 + 32), into a
// 128-byte-swizzled slice at shared address s: 16-byte copies, zeros past the ends.
template <int ROWS>
__device__ __forceinline__ void loadSlice(uint32_t s, const float* X, int64_t ld, int64_t r0, int64_t rowEnd, int64_t k0,
                                          int64_t K) {
#pragma unroll
  for (int u = 0; u < ROWS * 8 / LK_THREADS; ++u) {
    const int e = int(threadIdx.x) + LK_THREADS * u, row = e >> 3, c = e & 7;
    const int64_t r = r0 + row, kk = k0 + 4 * c;
    int valid = 0;
    if (r < rowEnd) { const int64_t left = K - kk; valid = left <= 0 ? 0 : (left >= 4 ? 4 : int(left)); }
    cpAsync16(s + row * 128 + ((c ^ (row & 7)) << 4), valid > 0 ? X + r * ld + kk : X, 4 * valid);
  }
}

// MOVE_C false: C is written without being read (what the products and the stores cost alone).
template <int STAGES, bool MOVE_C>
__global__ void __launch_bounds__(LK_THREADS, 1) longKKernel(const Args k) {
  extern __shared__ float4 smemRaw[];
  uint8_t* const base = reinterpret_cast<uint8_t*>(smemRaw) + ((1024u - (smemAddr(smemRaw) & 1023u)) & 1023u);
  const uint32_t base32 = smemAddr(base);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = warp >> 2, w = warp & 3, g = lane >> 2, t = lane & 3;
  const int tileJ = int(blockIdx.x) % k.tilesJ, tileI = int(blockIdx.x) / k.tilesJ;
  const int64_t i0 = int64_t(tileI) * LK_BI, j0 = int64_t(tileJ) * LK_BJ;
  const int kTiles = int((k.K + LK_BK - 1) / LK_BK);
  auto load = [&](int kt) {
    const uint32_t st = base32 + (kt % STAGES) * LK_STAGE_BYTES;
    loadSlice<LK_BI>(st, k.A, k.lda, i0, k.M, int64_t(kt) * LK_BK, k.K);
    loadSlice<LK_BJ>(st + LK_A_BYTES, k.Bt, k.ldbt, j0, k.N, int64_t(kt) * LK_BK, k.K);
  };
  constexpr int AHEAD = STAGES - 2;  // slices loading beyond the one being multiplied
#pragma unroll
  for (int s = 0; s < AHEAD; ++s) {
    if (s < kTiles) load(s);
    asm volatile("cp.async.commit_group;\n" ::);
  }
  const float alpha = k.alphaBeta[0], beta = MOVE_C ? k.alphaBeta[1] : 0.0f;
  if (MOVE_C && beta != 0.0f) {  // the block's C into L2 while it multiplies: half a row, 4 lines, per thread
    const int64_t i = i0 + (tid >> 1);
    if (i < k.M)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t j = j0 + 128 * (tid & 1) + 32 * q;
        if (j < k.N) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(k.C + i * k.ldc + j));
      }
  }
  float acc[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) acc[i] = 0.0f;
  for (int kt = 0; kt < kTiles; ++kt) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(AHEAD - 1) : "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();  // slice kt is in; every warpgroup's group kt - 2 is done: stage (kt - 2) % STAGES is free
    if (kt + AHEAD < kTiles) load(kt + AHEAD);
    asm volatile("cp.async.commit_group;\n" ::);
    const uint32_t st = base32 + (kt % STAGES) * LK_STAGE_BYTES;
    fenceAcc(acc);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      wgmma256(acc, wgmmaDescriptor(st + wg * 64 * 128 + 32 * ks), wgmmaDescriptor(st + LK_A_BYTES + 32 * ks),
               (kt > 0 || ks > 0) ? 1 : 0);
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
    fenceAcc(acc);
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  fenceAcc(acc);
  // acc[4 nb + 2 h + e]: row 64 wg + 16 w + g + 8 h of the tile, column 8 nb + 2 t + e.
  const bool pairs = (k.ldc % 2 == 0) && (reinterpret_cast<uintptr_t>(k.C) % 8 == 0);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t i = i0 + 64 * wg + 16 * w + g + 8 * h;
    if (i >= k.M) continue;
    float* const row = k.C + i * k.ldc;
    if (MOVE_C && beta != 0.0f) {
#pragma unroll
      for (int nb = 0; nb < 32; ++nb) {
        const int64_t j = j0 + 8 * nb + 2 * t;
        float2 c = make_float2(0.0f, 0.0f);
        if (pairs && j + 1 < k.N) c = *reinterpret_cast<const float2*>(row + j);
        else { if (j < k.N) c.x = row[j]; if (j + 1 < k.N) c.y = row[j + 1]; }
        acc[4 * nb + 2 * h] = alpha * acc[4 * nb + 2 * h] + beta * c.x;
        acc[4 * nb + 2 * h + 1] = alpha * acc[4 * nb + 2 * h + 1] + beta * c.y;
      }
    } else {
#pragma unroll
      for (int nb = 0; nb < 32; ++nb) {
        acc[4 * nb + 2 * h] *= alpha;
        acc[4 * nb + 2 * h + 1] *= alpha;
      }
    }
#pragma unroll
    for (int nb = 0; nb < 32; ++nb) {
      const int64_t j = j0 + 8 * nb + 2 * t;
      const float2 v = make_float2(acc[4 * nb + 2 * h], acc[4 * nb + 2 * h + 1]);
      if (pairs && j + 1 < k.N) *reinterpret_cast<float2*>(row + j) = v;
      else { if (j < k.N) row[j] = v.x; if (j + 1 < k.N) row[j + 1] = v.y; }
    }
  }
}

// Bt (cols x rows) = B (rows x cols) transposed, rounded to TF32: 32 x 32 tiles through shared memory.
__global__ void transposeTf32Kernel(const float* B, float* Bt, int64_t rows, int64_t cols) {
  __shared__ float tile[32][33];
  const int64_t r0 = int64_t(blockIdx.y) * 32, c0 = int64_t(blockIdx.x) * 32;
  for (int y = threadIdx.y; y < 32; y += blockDim.y) {
    const int64_t r = r0 + y, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[y][threadIdx.x] = B[r * cols + c];
  }
  __syncthreads();
  for (int y = threadIdx.y; y < 32; y += blockDim.y) {
    const int64_t c = c0 + y, r = r0 + threadIdx.x;
    if (c < cols && r < rows) Bt[c * rows + r] = roundTf32(tile[threadIdx.x][y]);
  }
}



}  // namespace

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const micro::Tf32Sgemm cublas = micro::openTf32Sgemm();
  void* h = cublas.handle;
  const SgemmFn sgemm = cublas.fn;
  const int64_t maxC = 11008LL * 4096, maxAB = 11008LL * 1024;
  const micro::BackBuffers bb = micro::backBuffers(sms, maxC, maxAB, maxAB);
  const std::vector<float*>& Cs = bb.Cs;
  float *const C0 = bb.C0, *const Ref = bb.Ref, *const A = bb.A, *const B = bb.B, *const ab = bb.ab, *const dd = bb.dd,
        *const tmp = bb.tmp;
  const double copyGBps = bb.copyGBps;
  std::printf("{\"copyGBps\": %.0f, \"rows\": [\n", copyGBps);
  float* Bt;
  CK(cudaMalloc(&Bt, maxAB * 4));
  CK(cudaFuncSetAttribute(longKKernel<4, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(lkSmem(4))));
  CK(cudaFuncSetAttribute(longKKernel<4, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(lkSmem(4))));
  CK(cudaFuncSetAttribute(longKKernel<3, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(lkSmem(3))));
  struct Shape { int64_t M, N, K; };
  const Shape shapes[] = {{4097, 4100, 500}, {11008, 4096, 512}, {4096, 4096, 512}, {4096, 11008, 512},
                          {11008, 4096, 1024}, {4096, 4096, 1024}, {4096, 11008, 1024}, {11008, 4096, 256},
                          {301, 37, 36}};
  bool first = true;
  for (const Shape& sh : shapes) {
    const int64_t nC = sh.M * sh.N;
    micro::backProblem(bb, sh.M, sh.N, sh.K);
    const double floorUs = 2.0 * nC * 4 / (copyGBps * 1e3), flops = 2.0 * sh.M * sh.N * sh.K;
    Args k{sh.M, sh.N, sh.K, A, sh.K, Bt, sh.K, nullptr, sh.N, ab, 0};
    const dim3 tgrid(unsigned((sh.N + 31) / 32), unsigned((sh.K + 31) / 32)), tblock(32, 8);
    auto transpose = [&]() { transposeTf32Kernel<<<tgrid, tblock>>>(B, Bt, sh.K, sh.N); };
    transpose();
    k.tilesJ = int((sh.N + LK_BJ - 1) / LK_BJ);
    const int grid = k.tilesJ * int((sh.M + LK_BI - 1) / LK_BI);
    auto relErr = [&](float* out) { return micro::maxRelDiff(out, Ref, nC, dd); };
    auto row = [&](const char* name, double us, float err) {
      std::printf("%s  {\"M\": %lld, \"N\": %lld, \"K\": %lld, \"kernel\": \"%s\", \"us\": %.1f, \"tflops\": %.0f, \"fracOfCopy\": %.3f, \"relErr\": %.2e}",
                  first ? "" : ",\n", (long long)sh.M, (long long)sh.N, (long long)sh.K, name, us, flops / (us * 1e6),
                  floorUs / us, err);
      first = false;
      std::fflush(stdout);
    };
    auto run = [&](auto kernel, size_t smem, const char* name, bool moves) {
      CK(cudaMemcpy(tmp, C0, nC * 4, cudaMemcpyDeviceToDevice));
      Args kk = k; kk.C = tmp;
      kernel<<<grid, LK_THREADS, smem>>>(kk);
      CK(cudaGetLastError());
      CK(cudaDeviceSynchronize());
      const float err = moves ? relErr(tmp) : 0.0f;
      const double us = timeUs([&](int i) { Args kq = k; kq.C = Cs[i]; kernel<<<grid, LK_THREADS, smem>>>(kq); });
      row(name, us, err);
    };
    run(longKKernel<4, true>, lkSmem(4), "longK 4 stages", true);
    run(longKKernel<3, true>, lkSmem(3), "longK 3 stages", true);
    run(longKKernel<4, false>, lkSmem(4), "longK, C not read", false);
    {
      const double us = timeUs([&](int i) { transpose(); Args kq = k; kq.C = Cs[i]; longKKernel<4, true><<<grid, LK_THREADS, lkSmem(4)>>>(kq); });
      row("transpose + longK 4 stages", us, 0.0f);
      row("transpose alone", timeUs([&](int) { transpose(); }), 0.0f);
    }
    if (sgemm) {
      auto call = [&](float* out) {
        int rc = sgemm(h, 0, 0, int(sh.N), int(sh.M), int(sh.K), ab, B, int(sh.N), A, int(sh.K), ab + 1, out, int(sh.N));
        if (rc != 0) { std::fprintf(stderr, "sgemm %d\n", rc); std::exit(1); }
      };
      CK(cudaMemcpy(tmp, C0, nC * 4, cudaMemcpyDeviceToDevice));
      call(tmp);
      CK(cudaDeviceSynchronize());
      const float err = relErr(tmp);
      row("cublasSgemm tf32", timeUs([&](int i) { call(Cs[i]); }), err);
    }
  }
  std::printf("\n]}\n");
  return 0;
}
