// Native check of the CUDA GaLore layer against the CPU backend, for machines with a GPU but no
// Node (build: see test/native/run.sh). Exits non-zero on any mismatch.
#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
#include "../../csrc/cpu/cpu_backend.h"
#include "../../cuda/launchers.h"
#include "check_common.h"

using namespace slimopt;
using namespace nativecheck;

// A gradient whose top singular values are well separated (ratio 1.5 between neighbours, r + 2
// of them) over a small noise floor: the exact singular vectors are then stable to f32 rounding.
static std::vector<float> separated(int64_t rows, int64_t cols, int64_t r) {
  const int64_t q = std::min<int64_t>(std::min(rows, cols), r + 2);
  auto L = normals(rows * q), R = normals(q * cols), g = normals(rows * cols, 1e-3f);
  for (int64_t j = 0; j < q; ++j) {
    const float s = std::pow(1.5f, -float(j));
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t c = 0; c < cols; ++c) g[i * cols + c] += s * L[i * q + j] * R[j * cols + c];
  }
  return g;
}

static void gemmCase(int64_t M, int64_t N, int64_t K, bool ta, bool tb, GemmMode mode, double tol) {
  auto a = normals(M * K), b = normals(K * N), c = normals(M * N);
  GemmArgs g; g.M = M; g.N = N; g.K = K; g.transA = ta; g.transB = tb;
  g.lda = ta ? M : K; g.ldb = tb ? K : N; g.ldc = N; g.alpha = 0.5f; g.beta = -1.5f;
  std::vector<float> cc = c;
  g.A = a.data(); g.B = b.data(); g.C = cc.data();
  cpu::gemm(g);
  float *da = dev(a), *db = dev(b), *dc = dev(c);
  g.A = da; g.B = db; g.C = dc;
  must(gpu::gemm(0, g, mode), "gemm");
  char what[160];
  std::snprintf(what, sizeof what, "gemm %s %lldx%lldx%lld tA=%d tB=%d %s", gpu::forceBuiltin() ? "builtin" : "cuBLAS",
                (long long)M, (long long)N, (long long)K, ta, tb, mode == GemmMode::Tf32 ? "tf32" : "f32");
  check(what, relErr(host(dc, M * N), cc), tol);
  gpu::release(0, da); gpu::release(0, db); gpu::release(0, dc);
}

// 12 steps of one tensor, refresh every 4, on both backends; bf16 param optional; step 6 has a NaN.
static void stepCase(int64_t rows, int64_t cols, int64_t r, GaloreSide side, DType pt, GemmMode mode, double tol) {
  const int64_t mn = rows * cols;
  GaloreTensor t{};
  t.rows = rows; t.cols = cols; t.rank = r; t.side = side; t.paramDtype = pt; t.gradDtype = pt;
  const int64_t rn = galoreRNumel(t);
  const int64_t pa = side == GaloreSide::Right ? r * cols : rows * r;
  auto w0 = normals(mn, 0.02f);
  std::vector<uint16_t> wb(mn);
  std::vector<uint8_t> wh(mn * dtypeSize(pt));
  for (int64_t i = 0; i < mn; ++i) storeFromFloat(wh.data(), pt, i, w0[i]);
  std::vector<uint8_t> gh(mn * dtypeSize(pt));
  std::vector<float> m(rn, 0), v(rn, 0), A(pa, 0), B(r * cols, 0), sR(rn), sT(r * cols);
  AdamwCounters cc{0, 0}; int32_t flag = 0;
  uint8_t* dw = dev(wh); uint8_t* dg = dev(gh);
  float *dm = dev(m), *dv = dev(v), *dA = dev(A), *dB = dev(B), *dR = dev(sR), *dT = dev(sT);
  float* dBig = dev(std::vector<float>(mn)); float* dS = dev(std::vector<float>(2));
  AdamwCounters* dc = dev(std::vector<AdamwCounters>{cc}); int32_t* df = dev(std::vector<int32_t>{0});
  GaloreHyper h{0.01f, 0.9f, 0.999f, 1e-6f, 0.01f, 0.25f, mode};
  for (int s = 0; s < 12; ++s) {
    auto g = separated(rows, cols, r);
    if (s == 6) g[mn / 2] = NAN;
    for (int64_t i = 0; i < mn; ++i) storeFromFloat(gh.data(), pt, i, g[i]);
    must(gpu::copyHtoD(0, dg, gh.data(), gh.size()), "grad");
    flag = cpu::anyNonFinite(gh.data(), pt, mn) ? 1 : 0;
    must(gpu::memsetZero(0, df, 4), "flag"); must(gpu::scanNonFinite(0, dg, pt, mn, df), "scan");
    if (s % 4 == 0) {
      for (int k = 0; k < (side == GaloreSide::Full ? 2 : 1); ++k) {
        bool left = side == GaloreSide::Left || (side == GaloreSide::Full && k == 0);
        float* P = side == GaloreSide::Full && k == 1 ? B.data() : A.data();
        float* dP = side == GaloreSide::Full && k == 1 ? dB : dA;
        if (!flag) cpu::topSingular(gh.data(), pt, rows, cols, r, left, P, true);
        int64_t wsn = 0;
        must(gpu::galoreRefreshWorkspace(0, rows, cols, r, left, RefreshMethod::Svd, &wsn), "workspace");
        void* ws = nullptr;
        if (wsn > 0) must(gpu::alloc(0, size_t(wsn) * 4, &ws), "workspace alloc");
        must(gpu::galoreRefresh(0, dg, pt, rows, cols, r, left, dP, true, df, RefreshMethod::Svd, mode,
                                static_cast<float*>(ws), wsn, dBig), "refresh");
        if (ws) gpu::release(0, ws);
      }
    }
    t.param = wh.data(); t.grad = gh.data(); t.expAvg = m.data(); t.expAvgSq = v.data(); t.projA = A.data(); t.projB = B.data();
    cpu::galoreStep(t, h, &cc, &flag, sR.data(), sT.data());
    if (flag) cc.skipped++; else cc.step++;
    GaloreTensor d = t;
    d.param = dw; d.grad = dg; d.expAvg = dm; d.expAvgSq = dv; d.projA = dA; d.projB = dB;
    must(gpu::galoreStep(0, d, h, dc, df, dR, dT, dBig, dS), "step");
    must(gpu::galoreFinish(0, dc, df), "finish");
  }
  auto wd = host(dw, wh.size());
  std::vector<float> uc(mn), ug(mn);
  for (int64_t i = 0; i < mn; ++i) {
    float ref0 = loadAsFloat(w0.data(), DType::F32, i);
    uc[i] = loadAsFloat(wh.data(), pt, i) - ref0;
    ug[i] = loadAsFloat(wd.data(), pt, i) - ref0;
  }
  char what[160];
  std::snprintf(what, sizeof what, "step %s %lldx%lld r%lld side %d %s %s", gpu::forceBuiltin() ? "builtin" : "cuBLAS",
                (long long)rows, (long long)cols, (long long)r, int(side), pt == DType::F32 ? "f32" : "bf16",
                mode == GemmMode::Tf32 ? "tf32" : "f32");
  check(what, relErr(ug, uc), tol);
  auto cg = host(dc, 1);
  if (cg[0].step != cc.step || cg[0].skipped != cc.skipped) { std::printf("  counters differ\n"); ++failures; }
  auto pg = host(dA, pa);
  char w2[180]; std::snprintf(w2, sizeof w2, "  projector of %s", what);
  check(w2, relErr(pg, A), 1e-5);
  for (void* p : std::initializer_list<void*>{dw, dg, dm, dv, dA, dB, dR, dT, dBig, dS, dc, df}) gpu::release(0, p);
}

int main() {
  std::string why;
  if (gpu::deviceCount(&why) == 0) { std::printf("no CUDA device: %s\n", why.c_str()); return 0; }
  for (int forced = 0; forced < 2; ++forced) {
    gpu::setForceBuiltin(forced == 1);
    std::printf("== %s\n", gpu::blasPath().c_str());
    for (auto mode : {GemmMode::Strict, GemmMode::Tf32}) {
      double tol = mode == GemmMode::Strict ? 1e-5 : 3e-3;  // the built-in kernel has tensor cores too
      for (int ta = 0; ta < 2; ++ta) for (int tb = 0; tb < 2; ++tb) {
        gemmCase(1, 1, 1, ta, tb, mode, tol);
        gemmCase(67, 130, 33, ta, tb, mode, tol);
        gemmCase(300, 129, 517, ta, tb, mode, tol);
      }
      for (auto side : {GaloreSide::Right, GaloreSide::Left, GaloreSide::Full}) {
        stepCase(96, 64, 8, side, DType::F32, mode, mode == GemmMode::Strict ? 1e-5 : 3e-3);
        stepCase(70, 130, 16, side, DType::F32, mode, mode == GemmMode::Strict ? 1e-5 : 3e-3);
        stepCase(96, 64, 8, side, DType::BF16, mode, 1e-2);
      }
    }
  }
  // Timing of the projection shapes (rank 128/512/1024 on 4096 x 11008), both paths.
  for (int forced = 0; forced < 2; ++forced) {
    gpu::setForceBuiltin(forced == 1);
    for (int64_t r : {128, 512, 1024}) {
      int64_t M = 11008, K = 4096;
      std::vector<float> z(1);
      float *a, *b, *c;
      must(gpu::alloc(0, M * K * 4, (void**)&a), "a"); must(gpu::alloc(0, K * r * 4, (void**)&b), "b"); must(gpu::alloc(0, M * r * 4, (void**)&c), "c");
      must(gpu::memsetZero(0, a, M * K * 4), "z"); must(gpu::memsetZero(0, b, K * r * 4), "z");
      GemmArgs g; g.M = M; g.N = r; g.K = K; g.A = a; g.lda = K; g.B = b; g.ldb = K; g.transB = true; g.C = c; g.ldc = r;
      void *e0, *e1; gpu::eventCreate(&e0); gpu::eventCreate(&e1);
      for (int i = 0; i < 3; ++i) must(gpu::gemm(0, g, GemmMode::Tf32), "warm");
      gpu::eventRecord(0, e0);
      for (int i = 0; i < 10; ++i) must(gpu::gemm(0, g, GemmMode::Tf32), "time");
      gpu::eventRecord(0, e1);
      float ms = 0; gpu::eventElapsedMs(e0, e1, &ms);
      std::printf("timing %s project 11008x4096 -> r=%lld: %.3f ms (%.1f TFLOP/s)\n", forced ? "builtin" : "cuBLAS tf32",
                  (long long)r, ms / 10, 2.0 * M * K * r / (ms / 10 * 1e-3) / 1e12);
      gpu::release(0, a); gpu::release(0, b); gpu::release(0, c);
    }
  }
  gpu::synchronize(0);
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
