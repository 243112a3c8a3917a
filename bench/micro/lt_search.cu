// Exhaustive cuBLASLt search for GaLore's rank-512 / 1024 products (issue #4). Question: is there
// a cuBLASLt configuration (algorithm id x tile x stages x cluster shape x swizzle x custom option)
// faster than the heuristic's answers and cublasSgemm for the project-backs (C = W read and
// written, K = r) and the left-side projection, which take ~3.35 + 0.76 ms of the r=512 step?
// lt_gemm.cu timed the heuristic's first eight answers only (1.01-1.06x).
//
//   nvcc -O3 -arch=sm_90 -cudart static -o .device/lts bench/micro/lt_search.cu -ldl
//   LD_LIBRARY_PATH=<dir of libcublas.so.13 and libcublasLt.so.13> .device/lts
//
// Shapes are row-major as lt_gemm.cu's (C[M×N] = α op(A) op(B) + β C), sent to cuBLAS swapped.
// Every configuration cublasLtMatmulAlgoCheck accepts (splitK 1, no workspace) is screened by the
// mean of 3 launches; the best 8 are timed again (median of 15) and checked against cublasSgemm.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "harness.cuh"
#include "lt.cuh"

namespace {

using namespace lt;

typedef int (*LtAlgoGetIdsFn)(void*, int, int, int, int, int, int, int, int*, int*);
typedef int (*LtAlgoInitFn)(void*, int, int, int, int, int, int, int, LtAlgo*);
typedef int (*LtAlgoCheckFn)(void*, void*, void*, void*, void*, void*, const LtAlgo*, LtHeuristic*);
typedef int (*LtCapGetFn)(const LtAlgo*, int, void*, size_t, size_t*);
typedef int (*LtConfigSetFn)(LtAlgo*, int, const void*, size_t);

// cublasLt.h values (the others in lt.cuh). Caps: SPLITK_SUPPORT 0, CTA_SWIZZLING_SUPPORT 2, TILE_IDS 6,
// CUSTOM_OPTION_MAX 7, STAGES_IDS 13. Cluster shapes: 0 auto, 2 1x1x1, 3 2x1x1, 4 4x1x1, 5 1x2x1,
// 6 2x2x1, 8 1x4x1.
constexpr int kCapSwizzle = 2, kCapTiles = 6, kCapCustomMax = 7, kCapStages = 13;
constexpr int kCfgId = 0, kCfgTile = 1, kCfgSplitK = 2, kCfgSwizzle = 4, kCfgCustom = 5, kCfgStages = 6,
              kCfgInner = 7, kCfgCluster = 8;

// Base's entry points and the ones that enumerate and check configurations.
struct Lt : Base {
  LtAlgoGetIdsFn getIds;
  LtAlgoInitFn init;
  LtAlgoCheckFn check;
  LtCapGetFn capGet;
  LtConfigSetFn cfgSet;
};

Lt load() {
  Lt L;
  loadBase(L);
  void* l = L.ltLib;
  L.getIds = reinterpret_cast<LtAlgoGetIdsFn>(requiredSymbol(l, "cublasLtMatmulAlgoGetIds"));
  L.init = reinterpret_cast<LtAlgoInitFn>(requiredSymbol(l, "cublasLtMatmulAlgoInit"));
  L.check = reinterpret_cast<LtAlgoCheckFn>(requiredSymbol(l, "cublasLtMatmulAlgoCheck"));
  L.capGet = reinterpret_cast<LtCapGetFn>(requiredSymbol(l, "cublasLtMatmulAlgoCapGetAttribute"));
  L.cfgSet = reinterpret_cast<LtConfigSetFn>(requiredSymbol(l, "cublasLtMatmulAlgoConfigSetAttribute"));
  return L;
}

std::vector<int> capList(const Lt& L, const LtAlgo& a, int cap) {
  size_t w = 0;
  L.capGet(&a, cap, nullptr, 0, &w);
  std::vector<int> v(w / sizeof(int));
  if (!v.empty()) L.capGet(&a, cap, v.data(), w, &w);
  if (v.empty()) v.push_back(0);
  return v;
}

int cfg(const Lt& L, const LtAlgo& a, int attr) {
  int v = 0;
  size_t w;
  L.cfgGet(&a, attr, &v, 4, &w);
  return v;
}

std::string describe(const Lt& L, const LtAlgo& a) {
  char s[160];
  std::snprintf(s, sizeof s, "id %3d tile %3d stages %3d cluster %2d inner %2d swz %d opt %2d splitK %d", cfg(L, a, kCfgId),
                cfg(L, a, kCfgTile), cfg(L, a, kCfgStages), cfg(L, a, kCfgCluster), cfg(L, a, kCfgInner),
                cfg(L, a, kCfgSwizzle), cfg(L, a, kCfgCustom), cfg(L, a, kCfgSplitK));
  return s;
}

// Mean of `reps` back-to-back launches between two events, after one untimed.
template <class F>
double screenUs(F launch, int reps = 3) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  launch();
  CK(cudaEventRecord(a));
  for (int i = 0; i < reps; ++i) launch();
  CK(cudaEventRecord(b));
  CK(cudaEventSynchronize(b));
  float ms;
  CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return ms * 1e3 / reps;
}

}  // namespace

int main() {
  Lt L = load();
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  void* h = nullptr;
  void* lt = nullptr;
  if (L.create(&h) != 0 || L.setMath(h, 3) != 0 || L.setPointer(h, 1) != 0 || L.ltCreate(&lt) != 0) {
    std::fprintf(stderr, "cuBLAS handle creation failed\n");
    return 1;
  }
  const size_t copyBytes = size_t(1) << 30;
  void *c0, *c1;
  CK(cudaMalloc(&c0, copyBytes));
  CK(cudaMalloc(&c1, copyBytes));
  const double copyUs =
      micro::timeUs([&](int) { CK(cudaMemcpyAsync(c1, c0, copyBytes, cudaMemcpyDeviceToDevice)); }, 9);
  const double copyGBps = 2.0 * copyBytes / (copyUs * 1e3);
  CK(cudaFree(c0));
  CK(cudaFree(c1));
  std::printf("device %s, %d SMs; copy %.0f GB/s\n", prop.name, prop.multiProcessorCount, copyGBps);

  std::vector<Case> cases;
  for (int r : {512, 1024}) {
    const std::string R = " r" + std::to_string(r);
    cases.push_back({"back right 11008x4096" + R, 11008, 4096, r, false, false, 1.0f});
    cases.push_back({"back right 11008x4096 Bt" + R, 11008, 4096, r, false, true, 1.0f});
    cases.push_back({"back left 4096x11008" + R, 4096, 11008, r, false, false, 1.0f});
    cases.push_back({"back 4096x4096" + R, 4096, 4096, r, false, false, 1.0f});
    cases.push_back({"back 4096x4096 Bt" + R, 4096, 4096, r, false, true, 1.0f});
    cases.push_back({"project left 4096x11008" + R, r, 11008, 4096, true, false, 0.0f});
  }
  float* ab;
  CK(cudaMalloc(&ab, 8));
  double* sums;
  CK(cudaMalloc(&sums, 16));
  const int clusters[] = {0, 2, 3, 4, 5, 6, 8};

  for (const Case& c : cases) {
    const Operands o(c);
    const int64_t lda = o.lda, ldb = o.ldb, ldc = o.ldc, nC = o.nC;
    float *A = o.A, *B = o.B, *C0 = o.C0, *C = o.C, *Cref = o.Cref;
    const float hab[2] = {c.beta != 0 ? -1e-3f : 1.0f, c.beta};
    CK(cudaMemcpy(ab, hab, 8, cudaMemcpyHostToDevice));
    const double flops = 2.0 * c.M * c.N * c.K;
    auto sgemm = [&](float* out) {
      if (L.sgemm(h, c.transB ? 1 : 0, c.transA ? 1 : 0, int(c.N), int(c.M), int(c.K), ab, B, int(ldb), A, int(lda),
                  ab + 1, out, int(ldc)) != 0) {
        std::fprintf(stderr, "sgemm failed\n");
        std::exit(1);
      }
    };
    CK(cudaMemcpy(Cref, C0, nC * 4, cudaMemcpyDeviceToDevice));
    sgemm(Cref);
    const double sgemmUs = micro::timeUs([&](int) { sgemm(C); }, 15);
    std::printf("\n== %s: M %lld N %lld K %lld ==\n  cublasSgemm %8.1f us  %5.0f TFLOP/s\n", c.name.c_str(),
                (long long)c.M, (long long)c.N, (long long)c.K, sgemmUs, flops / sgemmUs * 1e-6);

    const Desc dsc = makeDesc(L, c, o);
    void *desc = dsc.desc, *la = dsc.la, *lb = dsc.lb, *lc = dsc.lc, *pref;
    L.prefCreate(&pref);
    auto run = [&](const LtAlgo& a, float* out) {
      return L.matmul(lt, desc, ab, B, la, A, lb, ab + 1, out, lc, out, lc, &a, nullptr, 0, nullptr);
    };

    // The heuristic's answers (no workspace), as the library's ltPlan sees them.
    LtHeuristic hr[32];
    int found = 0;
    if (L.heuristic(lt, desc, la, lb, lc, lc, pref, 32, hr, &found) != 0) found = 0;
    double heurBest = 1e30;
    for (int i = 0; i < found && i < 8; ++i) {
      if (hr[i].state != 0 || hr[i].workspaceSize != 0) continue;
      const double us = micro::timeUs([&](int) { run(hr[i].algo, C); }, 15);
      heurBest = std::min(heurBest, us);
      std::printf("  heur #%d %s  %8.1f us  %5.0f TFLOP/s\n", i, describe(L, hr[i].algo).c_str(), us,
                  flops / us * 1e-6);
    }

    // Every configuration AlgoCheck accepts.
    int ids[256], nid = 0;
    L.getIds(lt, kComputeTf32, kR32F, kR32F, kR32F, kR32F, kR32F, 256, ids, &nid);
    struct Cand { LtAlgo a; double us; };
    std::vector<Cand> cands;
    int checked = 0, failed = 0;
    for (int k = 0; k < nid; ++k) {
      LtAlgo base;
      if (L.init(lt, kComputeTf32, kR32F, kR32F, kR32F, kR32F, kR32F, ids[k], &base) != 0) continue;
      const std::vector<int> tiles = capList(L, base, kCapTiles), stages = capList(L, base, kCapStages);
      int swz = 0, cmax = 0;
      size_t w;
      L.capGet(&base, kCapSwizzle, &swz, 4, &w);
      L.capGet(&base, kCapCustomMax, &cmax, 4, &w);
      for (int t : tiles)
        for (int s : stages)
          for (int cl : clusters)
            for (int sw = 0; sw <= (swz ? 1 : 0); ++sw)
              for (int co = 0; co <= std::min(cmax, 3); ++co) {
                if (cands.size() + failed > 6000) break;
                LtAlgo a = base;
                const int one = 1;
                L.cfgSet(&a, kCfgTile, &t, 4);
                L.cfgSet(&a, kCfgStages, &s, 4);
                L.cfgSet(&a, kCfgSplitK, &one, 4);
                L.cfgSet(&a, kCfgSwizzle, &sw, 4);
                L.cfgSet(&a, kCfgCustom, &co, 4);
                if (L.cfgSet(&a, kCfgCluster, &cl, 4) != 0 && cl != 0) continue;
                LtHeuristic res;
                ++checked;
                if (L.check(lt, desc, la, lb, lc, lc, &a, &res) != 0 || res.workspaceSize != 0) continue;
                if (run(a, C) != 0 || cudaDeviceSynchronize() != cudaSuccess) {
                  cudaGetLastError();
                  ++failed;
                  continue;
                }
                cands.push_back({a, screenUs([&] { run(a, C); })});
              }
    }
    std::sort(cands.begin(), cands.end(), [](const Cand& x, const Cand& y) { return x.us < y.us; });
    std::printf("  %d ids, %d configurations checked, %zu ran, %d failed\n", nid, checked, cands.size(), failed);
    double best = 1e30;
    for (size_t i = 0; i < cands.size() && i < 8; ++i) {
      CK(cudaMemcpy(C, C0, nC * 4, cudaMemcpyDeviceToDevice));
      run(cands[i].a, C);
      const double diff = relDiff(C, Cref, nC, sums);
      const double us = micro::timeUs([&](int) { run(cands[i].a, C); }, 15);
      best = std::min(best, us);
      std::printf("  search #%zu %s  screen %7.1f  timed %8.1f us  %5.0f TFLOP/s  rel diff %.1e\n", i,
                  describe(L, cands[i].a).c_str(), cands[i].us, us, flops / us * 1e-6, diff);
    }
    std::printf("  best: search %.1f us, heuristic %.1f us, cublasSgemm %.1f us: search/sgemm %.3fx\n", best,
                heurBest, sgemmUs, sgemmUs / best);
    std::fflush(stdout);
  }
  return 0;
}
