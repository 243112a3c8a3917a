// Microbenchmark of GaLore's GEMMs (issue #4) on cuBLAS (cublasSgemm, TF32 math mode: what
// cuda/galore.cu calls) against every algorithm cuBLASLt's heuristic offers for the same product,
// each timed on the device. Question: is there a faster cuBLAS kernel than the one cublasSgemm
// picks for the skinny shapes of the steady step (project: K = 4096 or 11008, N = r; project back:
// K = r with C = W read and written)? Self-contained (no project headers; both libraries loaded
// with dlopen, prototypes declared here as in cuda/galore.cu; values from cublasLt.h).
//
//   nvcc -O3 -arch=sm_90 -cudart static -o build/micro/lt_gemm bench/micro/lt_gemm.cu -ldl
//   LD_LIBRARY_PATH=<dir of libcublas.so.13 and libcublasLt.so.13> build/micro/lt_gemm
//
// Shapes are row-major as GemmArgs (C[M×N] = α op(A) op(B) + β C) and go to cuBLAS swapped
// (column-major Cᵀ = op(B)ᵀ op(A)ᵀ), as runGemm does. Times: median of 15 launches, each between
// CUDA events, after 3 warm-up launches; the floor is the bytes a product must move (A, B, C read
// when β ≠ 0, C written) at the copy bandwidth of a 1 GiB device-to-device copy measured in the
// same run. Every Lt algorithm's result is compared with cublasSgemm's (same TF32 rounding of the
// inputs, so the difference is accumulation order only).
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "lt.cuh"

namespace {

using namespace lt;

using micro::fillKernel;

typedef int (*SetStreamFn)(void*, cudaStream_t);
// cublasGemmBatchedEx(handle, transa, transb, m, n, k, alpha, Aarray, Atype, lda, Barray, Btype, ldb, beta,
// Carray, Ctype, ldc, batchCount, computeType, algo)
typedef int (*GemmBatchedExFn)(void*, int, int, int, int, int, const void*, const void* const*, int, int,
                               const void* const*, int, int, const void*, void* const*, int, int, int, int, int);
// Base's entry points and the batched GEMM.
struct Libs : Base {
  SetStreamFn setStream;
  GemmBatchedExFn gemmBatchedEx;
};

Libs load() {
  Libs L;
  loadBase(L);
  L.setStream = reinterpret_cast<SetStreamFn>(requiredSymbol(L.blasLib, "cublasSetStream_v2"));
  L.gemmBatchedEx = reinterpret_cast<GemmBatchedExFn>(requiredSymbol(L.blasLib, "cublasGemmBatchedEx"));
  return L;
}


template <typename F>
double medianUs(cudaStream_t st, F launch, int reps = 15) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) launch();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a, st));
    launch();
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1000.0);
  }
  std::sort(t.begin(), t.end());
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return t[t.size() / 2];
}

}  // namespace

int runBatched(const Libs& L, void* h, cudaStream_t st, double copyGBps, bool leftOnly);

int main(int argc, char** argv) {
  const bool batchedOnly = argc > 1 && (std::string(argv[1]) == "batched" || std::string(argv[1]) == "batched-left");
  Libs L = load();
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));

  // Copy bandwidth: 1 GiB device-to-device, read + written.
  const size_t copyBytes = size_t(1) << 30;
  void *c0, *c1;
  CK(cudaMalloc(&c0, copyBytes));
  CK(cudaMalloc(&c1, copyBytes));
  const double copyUs = medianUs(st, [&] { CK(cudaMemcpyAsync(c1, c0, copyBytes, cudaMemcpyDeviceToDevice, st)); }, 9);
  const double copyGBps = 2.0 * copyBytes / (copyUs * 1e3);
  CK(cudaFree(c0));
  CK(cudaFree(c1));
  std::printf("device %s, %d SMs; copy %.0f GB/s\n", prop.name, prop.multiProcessorCount, copyGBps);

  void* h = nullptr;
  void* lt = nullptr;
  if (L.create(&h) != 0 || L.setStream(h, st) != 0 || L.setMath(h, 3) != 0 || L.ltCreate(&lt) != 0) {
    std::fprintf(stderr, "cuBLAS handle creation failed\n");
    return 1;
  }
  const size_t wsBytes = size_t(64) << 20;
  void* ws;
  CK(cudaMalloc(&ws, wsBytes));

  if (batchedOnly) return runBatched(L, h, st, copyGBps, std::string(argv[1]) == "batched-left");
  std::vector<Case> cases;
  // "left": the left-side projection R = P^T G (G 4096 x 11008, reduced over its rows) with P as
  // the optimizer stores it (rows x r, so op(A) is M-major) and with P transposed (r x rows,
  // K-major).
  const bool leftOnly = argc > 1 && std::string(argv[1]) == "left";
  for (int r : {128, 512, 1024}) {
    if (!leftOnly) break;
    const std::string R = std::to_string(r);
    cases.push_back({"project left 4096x11008 r" + R, r, 11008, 4096, true, false, 0.0f});
    cases.push_back({"project left 4096x11008 Pt r" + R, r, 11008, 4096, false, false, 0.0f});
  }
  for (int r : {128, 512, 1024}) {
    if (leftOnly) break;
    const std::string R = std::to_string(r);
    cases.push_back({"back right 11008x4096 r" + R, 11008, 4096, r, false, false, 1.0f});
    cases.push_back({"back left 4096x11008 r" + R, 4096, 11008, r, false, false, 1.0f});
    cases.push_back({"back 4096x4096 r" + R, 4096, 4096, r, false, false, 1.0f});
    // The same project-backs with B stored N x K (K-major, as TF32 wgmma reads both operands).
    cases.push_back({"back right 11008x4096 Bt r" + R, 11008, 4096, r, false, true, 1.0f});
    cases.push_back({"back left 4096x11008 Bt r" + R, 4096, 11008, r, false, true, 1.0f});
    cases.push_back({"back 4096x4096 Bt r" + R, 4096, 4096, r, false, true, 1.0f});
    cases.push_back({"project right 11008x4096 r" + R, 11008, r, 4096, false, true, 0.0f});
    cases.push_back({"project left 4096x11008 r" + R, r, 11008, 4096, true, false, 0.0f});
    cases.push_back({"project 4096x4096 r" + R, 4096, r, 4096, false, true, 0.0f});
  }

  // Device-side alpha/beta, as the project-back runs (pointer mode device).
  float* ab;
  CK(cudaMalloc(&ab, 8));
  double* sums;
  CK(cudaMalloc(&sums, 16));

  for (const Case& c : cases) {
    const Operands o(c, st);
    const int64_t lda = o.lda, ldb = o.ldb, ldc = o.ldc, nA = o.nA, nB = o.nB, nC = o.nC;
    float *A = o.A, *B = o.B, *C0 = o.C0, *C = o.C, *Cref = o.Cref;
    const float hab[2] = {c.beta != 0 ? -1e-3f : 1.0f, c.beta};
    CK(cudaMemcpyAsync(ab, hab, 8, cudaMemcpyHostToDevice, st));
    const double bytes = 4.0 * (nA + nB + nC * (c.beta != 0 ? 2 : 1));
    const double floorUs = bytes / (copyGBps * 1e3);

    // cublasSgemm, as runGemm: swapped operands, device pointer mode for the project back.
    L.setPointer(h, 1);
    auto sgemm = [&](float* out) {
      int rc = L.sgemm(h, c.transB ? 1 : 0, c.transA ? 1 : 0, int(c.N), int(c.M), int(c.K), ab, B, int(ldb), A,
                       int(lda), ab + 1, out, int(ldc));
      if (rc != 0) {
        std::fprintf(stderr, "sgemm status %d\n", rc);
        std::exit(1);
      }
    };
    CK(cudaMemcpyAsync(Cref, C0, nC * 4, cudaMemcpyDeviceToDevice, st));
    sgemm(Cref);  // one application from C0: the reference result
    const double sgemmUs = medianUs(st, [&] { sgemm(C); });
    std::printf("\n== %s: M %lld N %lld K %lld, %.1f MB, floor %.1f us ==\n", c.name.c_str(), (long long)c.M,
                (long long)c.N, (long long)c.K, bytes / 1e6, floorUs);
    std::printf("  cublasSgemm TF32            %8.1f us  %.2f of floor\n", sgemmUs, floorUs / sgemmUs);

    // cuBLASLt: the same product in column-major form (makeDesc).
    const Desc dsc = makeDesc(L, c, o);
    void *desc = dsc.desc, *la = dsc.la, *lb = dsc.lb, *lc = dsc.lc, *pref;
    L.prefCreate(&pref);
    const uint64_t wsMax = wsBytes;
    L.prefSet(pref, kPrefMaxWorkspace, &wsMax, 8);
    LtHeuristic hr[64];
    int found = 0;
    int rc = L.heuristic(lt, desc, la, lb, lc, lc, pref, 64, hr, &found);
    if (rc != 0) {
      std::printf("  Lt heuristic status %d\n", rc);
      found = 0;
    }
    double best = 1e30;
    int bestI = -1;
    for (int i = 0; i < found; ++i) {
      if (hr[i].state != 0) continue;
      auto run = [&](float* out) {
        int e = L.matmul(lt, desc, ab, B, la, A, lb, ab + 1, out, lc, out, lc, &hr[i].algo, ws, wsBytes, st);
        if (e != 0) {
          std::fprintf(stderr, "Lt matmul status %d\n", e);
          std::exit(1);
        }
      };
      CK(cudaMemcpyAsync(C, C0, nC * 4, cudaMemcpyDeviceToDevice, st));
      run(C);
      CK(cudaStreamSynchronize(st));
      const double diff = relDiff(C, Cref, nC, sums, st);
      const double us = medianUs(st, [&] { run(C); });
      uint32_t id = 0, tile = 0, splitk = 0, red = 0, swz = 0, custom = 0, stages = 0;
      size_t w;
      L.cfgGet(&hr[i].algo, 0, &id, 4, &w);
      L.cfgGet(&hr[i].algo, 1, &tile, 4, &w);
      L.cfgGet(&hr[i].algo, 2, &splitk, 4, &w);
      L.cfgGet(&hr[i].algo, 3, &red, 4, &w);
      L.cfgGet(&hr[i].algo, 4, &swz, 4, &w);
      L.cfgGet(&hr[i].algo, 5, &custom, 4, &w);
      L.cfgGet(&hr[i].algo, 6, &stages, 4, &w);
      std::printf("  Lt #%-2d id %3u tile %2u stages %2u splitK %2u red %u swz %u opt %2u ws %6zu KB  %8.1f us  %.2f of floor  "
                  "rel diff %.1e\n",
                  i, id, tile, stages, splitk, red, swz, custom, hr[i].workspaceSize >> 10, us, floorUs / us, diff);
      if (us < best) {
        best = us;
        bestI = i;
      }
    }
    if (bestI >= 0)
      std::printf("  best Lt #%d %.1f us (%.2f of floor) vs cublasSgemm %.1f us: %.2fx\n", bestI, best, floorUs / best,
                  sgemmUs, sgemmUs / best);
  }
  return 0;
}

// The same products for a batch of B same-shaped matrices (separate allocations, as a GaLore group's
// tensors are): B cublasSgemm calls back to back against one cublasGemmBatchedEx (TF32 compute
// type), both timed as a whole (median of 15), reported per matrix; results compared.
int runBatched(const Libs& L, void* h, cudaStream_t st, double copyGBps, bool leftOnly) {
  struct BCase { Case c; int batch; };
  std::vector<BCase> cases;
  for (int r : {128, 512, 1024}) {
    const std::string R = std::to_string(r);
    if (leftOnly) {  // the left-side projections with P as stored (rows x r) and transposed (r x rows)
      cases.push_back({{"project left 4096x11008 r" + R, r, 11008, 4096, true, false, 0.0f}, 4});
      cases.push_back({{"project left 4096x11008 Pt r" + R, r, 11008, 4096, false, false, 0.0f}, 4});
      // Batches of two: what the step runs where sR holds two transposed Ps.
      cases.push_back({{"project left 4096x11008 Pt r" + R, r, 11008, 4096, false, false, 0.0f}, 2});
      continue;
    }
    cases.push_back({{"back 4096x4096 r" + R, 4096, 4096, r, false, false, 1.0f}, 16});
    cases.push_back({{"project 4096x4096 r" + R, 4096, r, 4096, false, true, 0.0f}, 16});
    cases.push_back({{"back right 11008x4096 r" + R, 11008, 4096, r, false, false, 1.0f}, 8});
    cases.push_back({{"project right 11008x4096 r" + R, 11008, r, 4096, false, true, 0.0f}, 8});
    cases.push_back({{"back left 4096x11008 r" + R, 4096, 11008, r, false, false, 1.0f}, 4});
    cases.push_back({{"project left 4096x11008 r" + R, r, 11008, 4096, true, false, 0.0f}, 4});
  }
  float* ab;
  CK(cudaMalloc(&ab, 8));
  double* sums;
  CK(cudaMalloc(&sums, 16));
  L.setPointer(h, 1);
  for (const BCase& bc : cases) {
    const Case& c = bc.c;
    const int B = bc.batch;
    const int64_t lda = c.transA ? c.M : c.K, ldb = c.transB ? c.K : c.N, ldc = c.N;
    const int64_t nA = c.M * c.K, nB = c.K * c.N, nC = c.M * c.N;
    std::vector<float*> A(B), Bm(B), C(B), C0(B);
    for (int i = 0; i < B; ++i) {
      CK(cudaMalloc(&A[i], nA * 4));
      CK(cudaMalloc(&Bm[i], nB * 4));
      CK(cudaMalloc(&C[i], nC * 4));
      CK(cudaMalloc(&C0[i], nC * 4));
      fillKernel<<<1024, 256, 0, st>>>(A[i], nA, 10 + i, 1.0f);
      fillKernel<<<1024, 256, 0, st>>>(Bm[i], nB, 100 + i, 1.0f);
      fillKernel<<<1024, 256, 0, st>>>(C0[i], nC, 1000 + i, 1.0f);
    }
    float* Cref;
    CK(cudaMalloc(&Cref, nC * 4));
    const float hab[2] = {c.beta != 0 ? -1e-3f : 1.0f, c.beta};
    CK(cudaMemcpyAsync(ab, hab, 8, cudaMemcpyHostToDevice, st));
    // Device pointer arrays (cuBLAS's column-major A' = our B, B' = our A).
    const void** dA;
    const void** dB;
    void** dC;
    CK(cudaMalloc(&dA, B * sizeof(void*)));
    CK(cudaMalloc(&dB, B * sizeof(void*)));
    CK(cudaMalloc(&dC, B * sizeof(void*)));
    CK(cudaMemcpy(dA, Bm.data(), B * sizeof(void*), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dB, A.data(), B * sizeof(void*), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dC, C.data(), B * sizeof(void*), cudaMemcpyHostToDevice));
    auto one = [&](int i, float* out) {
      int rc = L.sgemm(h, c.transB ? 1 : 0, c.transA ? 1 : 0, int(c.N), int(c.M), int(c.K), ab, Bm[i], int(ldb), A[i],
                       int(lda), ab + 1, out, int(ldc));
      if (rc != 0) { std::fprintf(stderr, "sgemm status %d\n", rc); std::exit(1); }
    };
    auto batched = [&] {
      int rc = L.gemmBatchedEx(h, c.transB ? 1 : 0, c.transA ? 1 : 0, int(c.N), int(c.M), int(c.K), ab, dA, kR32F,
                               int(ldb), dB, kR32F, int(lda), ab + 1, dC, kR32F, int(ldc), B, kComputeTf32, -1);
      if (rc != 0) { std::fprintf(stderr, "gemmBatchedEx status %d\n", rc); std::exit(1); }
    };
    // Check: matrix B-1 from C0 by one sgemm against the batched result.
    for (int i = 0; i < B; ++i) CK(cudaMemcpyAsync(C[i], C0[i], nC * 4, cudaMemcpyDeviceToDevice, st));
    CK(cudaMemcpyAsync(Cref, C0[B - 1], nC * 4, cudaMemcpyDeviceToDevice, st));
    one(B - 1, Cref);
    batched();
    const double diff = relDiff(C[B - 1], Cref, nC, sums, st);
    const double seqUs = medianUs(st, [&] { for (int i = 0; i < B; ++i) one(i, C[i]); });
    const double batUs = medianUs(st, batched);
    const double bytes = 4.0 * (nA + nB + nC * (c.beta != 0 ? 2 : 1));
    const double floorUs = bytes / (copyGBps * 1e3);
    std::printf("%-28s x%2d  floor %6.1f us/matrix  sgemm x%d %7.1f us/matrix (%.2f)  batched %7.1f us/matrix (%.2f)  "
                "%.2fx  rel diff %.1e\n",
                c.name.c_str(), B, floorUs, B, seqUs / B, floorUs * B / seqUs, batUs / B, floorUs * B / batUs,
                seqUs / batUs, diff);
    std::fflush(stdout);
    for (int i = 0; i < B; ++i) {
      CK(cudaFree(A[i]));
      CK(cudaFree(Bm[i]));
      CK(cudaFree(C[i]));
      CK(cudaFree(C0[i]));
    }
    CK(cudaFree(Cref));
    CK(cudaFree(dA));
    CK(cudaFree(dB));
    CK(cudaFree(dC));
  }
  return 0;
}
