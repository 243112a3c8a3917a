// Native check of the CUDA Grass layer against the CPU backend, for machines with a GPU but no
// Node (build and run: test/native/run_grass.sh). Selections must be identical (indices, bit-
// identical rho); steps agree to f32 accuracy; also times gather-rows / scatter-rows of 512 and
// 2048 rows of 11008 x 4096 f32 against the copy bandwidth. Exits non-zero on any mismatch.
#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
#include "../../csrc/cpu/cpu_backend.h"
#include "../../cuda/launchers.h"
#include "check_common.h"

using namespace slimopt;
using namespace nativecheck;

static bool sameBits(const void* a, const void* b, size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

static GrassWorkspace layoutFor(const std::vector<GrassTensor>& ts, bool staging, bool cuda) {
  int64_t maxLines = 0, maxRank = 1, maxCompact = 0, maxPartials = 0, coef = 0;
  for (const GrassTensor& t : ts) {
    coef += t.rank;
    maxRank = std::max(maxRank, t.rank);
    if (t.mode == GrassMode::Dense) continue;
    maxLines = std::max(maxLines, grassLines(t));
    maxCompact = std::max(maxCompact, grassCompactNumel(t));
    if (t.mode == GrassMode::Cols) maxPartials = std::max(maxPartials, grassCeilDiv(t.rows, kGrassColSegment) * t.cols);
  }
  size_t cub = 0;
  if (cuda && maxLines > 0) {
    gpu::Status s;
    cub = gpu::grassCubBytes(0, maxLines, &s);
    must(s, "grassCubBytes");
  }
  return grassWorkspaceLayout(maxLines, maxRank, maxCompact, maxPartials, coef, staging, cub);
}

// ---- selections -----------------------------------------------------------------------------------

static void selectCase(int64_t rows, int64_t cols, GrassMode mode, int64_t r, GrassSelect sel, DType dt) {
  auto g = asDtype(normals(size_t(rows * cols)), dt);
  GrassTensor t{};
  t.rows = rows; t.cols = cols; t.rank = r; t.mode = mode; t.paramDtype = dt; t.seed = 1234;
  GrassHyper h{};
  h.select = sel; h.refreshIndex = 3;
  std::vector<GrassTensor> one{t};
  GrassWorkspace Lc = layoutFor(one, false, false), Lg = layoutFor(one, false, true);
  std::vector<uint8_t> wsc(Lc.total + 256);
  std::vector<int32_t> ic(r);
  std::vector<float> rc(r);
  t.grad = g.data();
  cpu::grassSelect(t, h, wsc.data(), Lc, ic.data(), rc.data());
  void* gd = dev(g);
  void* wsg = devAlloc(Lg.total);
  int32_t* ig = static_cast<int32_t*>(devAlloc(size_t(r) * 4));
  float* rg = static_cast<float*>(devAlloc(size_t(r) * 4));
  t.grad = gd;
  must(gpu::grassSelectOnly(0, t, h, wsg, Lg, ig, rg), "grassSelectOnly");
  auto ih = host(ig, size_t(r));
  auto rh = host(rg, size_t(r));
  char what[200];
  std::snprintf(what, sizeof what, "select %s %lldx%lld %s r=%lld %s", sel == GrassSelect::TopK ? "topk" : sel == GrassSelect::Uniform ? "uniform" : "multinomial",
                (long long)rows, (long long)cols, mode == GrassMode::Rows ? "rows" : "cols", (long long)r, dt == DType::F32 ? "f32" : "bf16");
  checkEq(what, ih == ic && sameBits(rh.data(), rc.data(), size_t(r) * 4));
  gpu::release(0, gd); gpu::release(0, wsg); gpu::release(0, ig); gpu::release(0, rg);
}

// ---- steps -----------------------------------------------------------------------------------------

struct Spec { int64_t rows, cols, rank; GrassMode mode; };

// Both backends step the same tensors `steps` times (refresh every K); NaN in tensor 0 at nanStep;
// compact gradients (from the host copy of the indices) on non-refresh steps when `compact`.
static void stepCase(const std::vector<Spec>& specs, GrassSelect sel, bool keep, DType dt, int steps, int K,
                     int nanStep, bool compact) {
  const size_t n = specs.size();
  std::vector<GrassTensor> hc(n), hg(n);
  std::vector<std::vector<uint8_t>> W(n), G(n);
  std::vector<std::vector<float>> M(n), V(n), Rho(n);
  std::vector<std::vector<int32_t>> Idx(n), Ages(n);
  std::vector<void*> dW(n), dG(n), dC(n, nullptr);
  for (size_t k = 0; k < n; ++k) {
    const Spec& s = specs[k];
    GrassTensor t{};
    t.rows = s.rows; t.cols = s.cols; t.rank = s.mode == GrassMode::Dense ? 1 : s.rank; t.mode = s.mode;
    t.paramDtype = dt; t.seed = 100 + k;
    const int64_t numel = s.rows * s.cols, comp = grassCompactNumel(t);
    W[k] = asDtype(normals(size_t(numel), 0.2f), dt);
    M[k].assign(size_t(comp), 0.0f); V[k].assign(size_t(comp), 0.0f);
    Idx[k].resize(size_t(t.rank)); for (int64_t j = 0; j < t.rank; ++j) Idx[k][j] = int32_t(j);
    Rho[k].assign(size_t(t.rank), 1.0f); Ages[k].assign(size_t(t.rank), 0);
    hc[k] = t; hg[k] = t;
    hc[k].param = W[k].data(); hc[k].expAvg = M[k].data(); hc[k].expAvgSq = V[k].data();
    hc[k].indices = Idx[k].data(); hc[k].rho = Rho[k].data(); hc[k].ages = Ages[k].data();
    dW[k] = dev(W[k]);
    hg[k].param = dW[k]; hg[k].expAvg = dev(M[k]); hg[k].expAvgSq = dev(V[k]);
    hg[k].indices = dev(Idx[k]); hg[k].rho = dev(Rho[k]); hg[k].ages = dev(Ages[k]);
    dG[k] = devAlloc(size_t(numel) * dtypeSize(dt));
    dC[k] = devAlloc(size_t(comp) * dtypeSize(dt));
  }
  GrassWorkspace Lc = layoutFor(hc, keep, false), Lg = layoutFor(hg, keep, true);
  std::vector<uint8_t> wsc(Lc.total + 256);
  void* wsg = devAlloc(Lg.total);
  size_t off = 0;
  for (size_t k = 0; k < n; ++k) {
    hc[k].coef = reinterpret_cast<float*>(wsc.data() + Lc.coef + off);
    hg[k].coef = reinterpret_cast<float*>(static_cast<uint8_t*>(wsg) + Lg.coef + off);
    off += size_t(hc[k].rank) * 4;
  }
  AdamwCounters cc{0, 0};
  AdamwCounters* cg = static_cast<AdamwCounters*>(devAlloc(sizeof(AdamwCounters)));
  must(gpu::memsetZero(0, cg, sizeof(AdamwCounters)), "memset");
  GrassTensor* list = static_cast<GrassTensor*>(devAlloc(n * sizeof(GrassTensor)));
  for (int s = 0; s < steps; ++s) {
    const bool refreshing = s % K == 0;
    std::vector<std::vector<uint8_t>> gh(n), ch(n);
    for (size_t k = 0; k < n; ++k) {
      const int64_t numel = specs[k].rows * specs[k].cols;
      auto g = normals(size_t(numel), 1.0f + 0.1f * s);
      if (s == nanStep && k == 0) for (int64_t i = 0; i < numel; i += 7) g[size_t(i)] = NAN;  // hits selected lines too
      gh[k] = asDtype(g, dt);
      must(gpu::copyHtoD(0, dG[k], gh[k].data(), gh[k].size()), "HtoD grad");
      hc[k].grad = gh[k].data(); hg[k].grad = dG[k];
      hc[k].compact = nullptr; hg[k].compact = nullptr;
      if (compact && !refreshing && hc[k].mode != GrassMode::Dense) {
        const GrassTensor& t = hc[k];
        const int64_t r = t.rank, es = dtypeSize(dt);
        ch[k].resize(size_t(grassCompactNumel(t) * es));
        for (int64_t j = 0; j < r; ++j) {
          const int64_t line = Idx[k][size_t(j)];
          for (int64_t i = 0; i < grassLineLen(t); ++i) {
            const int64_t src = t.mode == GrassMode::Rows ? line * t.cols + i : i * t.cols + line;
            const int64_t dst = t.mode == GrassMode::Rows ? j * t.cols + i : i * r + j;
            std::memcpy(ch[k].data() + dst * es, gh[k].data() + src * es, size_t(es));
          }
        }
        must(gpu::copyHtoD(0, dC[k], ch[k].data(), ch[k].size()), "HtoD compact");
        hc[k].compact = ch[k].data(); hg[k].compact = dC[k];
      }
    }
    GrassUnits u;
    for (GrassTensor& t : hg) {
      t.scanBeginRefresh = u.scanRefresh; t.scanBeginStep = u.scanStep; t.updateBegin = u.update; t.slotBegin = u.slot;
      u.scanRefresh += grassScanUnits(t, true); u.scanStep += grassScanUnits(t, false);
      u.update += grassUpdateUnits(t); u.slot += grassSlotUnits(t);
    }
    must(gpu::copyHtoD(0, list, hg.data(), n * sizeof(GrassTensor)), "HtoD list");
    GrassHyper h{};
    h.lr = 0.02f; h.beta1 = 0.9f; h.beta2 = 0.99f; h.eps = 1e-6f; h.weightDecay = 0.05f; h.scale = 0.5f;
    h.skipNonFinite = 1; h.refreshing = refreshing ? 1 : 0; h.select = sel; h.keepState = keep ? 1 : 0;
    h.refreshIndex = uint64_t(s / K);
    cpu::grassStep(hc.data(), int32_t(n), h, &cc, wsc.data(), Lc);
    must(gpu::grassStep(0, list, hg.data(), int32_t(n), u, h, cg, wsg, Lg), "grassStep");
    must(gpu::synchronize(0), "sync");
    if (refreshing)
      for (size_t k = 0; k < n; ++k)
        if (hc[k].mode != GrassMode::Dense && host(hg[k].indices, size_t(hc[k].rank)) != Idx[k]) {
          std::printf("step %d tensor %zu: CUDA selected other lines than the CPU: FAIL\n", s, k);
          ++failures;
        }
  }
  auto cgh = host(cg, 1)[0];
  char what[200];
  std::snprintf(what, sizeof what, "step %s keep=%d %s compact=%d: counters (%d, %d) vs CPU (%d, %d)",
                sel == GrassSelect::TopK ? "topk" : sel == GrassSelect::Uniform ? "uniform" : "multinomial", keep,
                dt == DType::F32 ? "f32" : "bf16", compact, cgh.step, cgh.skipped, cc.step, cc.skipped);
  checkEq(what, cgh.step == cc.step && cgh.skipped == cc.skipped);
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
  for (size_t k = 0; k < n; ++k) {
    const Spec& s = specs[k];
    const int64_t numel = s.rows * s.cols, comp = grassCompactNumel(hc[k]);
    auto wc = toF32(W[k], dt);
    auto wg = toF32(host(static_cast<uint8_t*>(dW[k]), size_t(numel) * dtypeSize(dt)), dt);
    std::snprintf(what, sizeof what, "  tensor %zu (%lldx%lld %s r=%lld): W", k, (long long)s.rows, (long long)s.cols,
                  s.mode == GrassMode::Rows ? "rows" : s.mode == GrassMode::Cols ? "cols" : "dense", (long long)hc[k].rank);
    check(what, relErr(wg, wc), tol);
    std::snprintf(what, sizeof what, "  tensor %zu: m, v", k);
    check(what, std::max(relErr(host(hg[k].expAvg, size_t(comp)), M[k]), relErr(host(hg[k].expAvgSq, size_t(comp)), V[k])), tol);
    std::snprintf(what, sizeof what, "  tensor %zu: indices, rho, ages", k);
    auto rg = host(hg[k].rho, size_t(hc[k].rank));
    checkEq(what, host(hg[k].indices, size_t(hc[k].rank)) == Idx[k] && host(hg[k].ages, size_t(hc[k].rank)) == Ages[k] &&
                  (s.mode == GrassMode::Dense || sameBits(rg.data(), Rho[k].data(), rg.size() * 4)));
    for (void* p : {static_cast<void*>(hg[k].expAvg), static_cast<void*>(hg[k].expAvgSq), static_cast<void*>(hg[k].indices),
                    static_cast<void*>(hg[k].rho), static_cast<void*>(hg[k].ages), dW[k], dG[k], dC[k]})
      gpu::release(0, p);
  }
  gpu::release(0, wsg); gpu::release(0, cg); gpu::release(0, list);
}

// ---- gather / scatter: correctness and bandwidth ---------------------------------------------------

static float timeMs(void (*fn)(void*), void* ctx, int reps) {
  void *a, *b;
  must(gpu::eventCreate(&a), "event"); must(gpu::eventCreate(&b), "event");
  must(gpu::eventRecord(0, a), "record");
  for (int i = 0; i < reps; ++i) fn(ctx);
  must(gpu::eventRecord(0, b), "record");
  float ms = 0;
  must(gpu::eventElapsedMs(a, b, &ms), "elapsed");
  gpu::eventDestroy(a); gpu::eventDestroy(b);
  return ms / reps;
}

struct RowOp {
  float* big; float* out; int32_t* sets[16]; float* rho; int64_t m, n, r; int k; bool scatter;
  void* s0; void* s1;
};
static void rowOpCall(void* c) {
  RowOp& o = *static_cast<RowOp*>(c);
  const int32_t* idx = o.sets[o.k++ % 16];
  if (o.scatter) must(gpu::grassScatterRows(0, o.big, DType::F32, o.m, o.n, idx, o.r, o.out, -1e-3f, o.rho), "scatter");
  else must(gpu::grassGatherRows(0, o.out, o.big, DType::F32, o.m, o.n, idx, o.r, o.rho), "gather");
}
static void copyCall(void* c) {
  RowOp& o = *static_cast<RowOp*>(c);
  must(gpu::copyKernel(0, o.s1, o.s0, size_t(1) << 30), "copy");
}

static void rowOps() {
  const int64_t m = 11008, n = 4096;
  std::vector<float> big = normals(size_t(m * n), 0.02f);
  RowOp o{};
  o.m = m; o.n = n;
  o.big = dev(big);
  o.s0 = devAlloc(size_t(1) << 30); o.s1 = devAlloc(size_t(1) << 30);
  must(gpu::memsetZero(0, o.s0, size_t(1) << 30), "memset");
  must(gpu::memsetZero(0, o.s1, size_t(1) << 30), "memset");
  timeMs(copyCall, &o, 3);
  const float copyMs = timeMs(copyCall, &o, 20);
  const double copyGBps = 2.0 * double(size_t(1) << 30) / (copyMs * 1e6);
  std::printf("copy bandwidth (copyKernel, 1 GiB): %.1f GB/s\n", copyGBps);
  for (int64_t r : {512, 2048}) {
    o.r = r;
    std::vector<std::vector<int32_t>> sets(16);
    for (int k = 0; k < 16; ++k) {
      std::vector<int32_t> perm(static_cast<size_t>(m));
      for (int64_t i = 0; i < m; ++i) perm[size_t(i)] = int32_t(i);
      std::shuffle(perm.begin(), perm.end(), rng);
      sets[k].assign(perm.begin(), perm.begin() + r);
      std::sort(sets[k].begin(), sets[k].end());
      o.sets[k] = dev(sets[k]);
    }
    std::vector<float> rho(static_cast<size_t>(r));
    for (int64_t j = 0; j < r; ++j) rho[size_t(j)] = 0.5f + float(j % 7) / 7.0f;
    o.rho = dev(rho);
    o.out = static_cast<float*>(devAlloc(size_t(r * n) * 4));
    // Correctness of set 0 against the CPU.
    o.k = 0; o.scatter = false; rowOpCall(&o);
    std::vector<float> want(size_t(r * n));
    cpu::grassGatherRows(want.data(), big.data(), DType::F32, m, n, sets[0].data(), r, rho.data());
    char what[160];
    std::snprintf(what, sizeof what, "gather-rows %lld rows: CUDA vs CPU", (long long)r);
    checkEq(what, sameBits(host(o.out, want.size()).data(), want.data(), want.size() * 4));
    o.k = 0; o.scatter = true; rowOpCall(&o);
    cpu::grassScatterRows(big.data(), DType::F32, m, n, sets[0].data(), r, want.data(), -1e-3f, rho.data());
    std::snprintf(what, sizeof what, "scatter-rows %lld rows: CUDA vs CPU", (long long)r);
    check(what, relErr(host(o.big, big.size()), big), 1e-7);
    for (bool scatter : {false, true}) {
      o.scatter = scatter;
      o.k = 0;
      for (int i = 0; i < 32; ++i) rowOpCall(&o);  // warm up
      // A head start of copies so all 160 timed launches are queued before the device reaches them.
      for (int i = 0; i < 8; ++i) copyCall(&o);
      void *a, *b;
      must(gpu::eventCreate(&a), "event"); must(gpu::eventCreate(&b), "event");
      must(gpu::eventRecord(0, a), "record");
      for (int i = 0; i < 160; ++i) rowOpCall(&o);
      must(gpu::eventRecord(0, b), "record");
      float ms = 0;
      must(gpu::eventElapsedMs(a, b, &ms), "elapsed");
      gpu::eventDestroy(a); gpu::eventDestroy(b);
      ms /= 160;
      const double bytes = double(scatter ? 12 : 8) * double(r) * double(n);
      const double floorMs = bytes / (copyGBps * 1e6);
      std::printf("%-13s %5lld rows of %lldx%lld f32: %.4f ms, %.0f GB/s, %.0f%% of floor%s\n", scatter ? "scatter-rows" : "gather-rows",
                  (long long)r, (long long)m, (long long)n, ms, bytes / (ms * 1e6), 100 * floorMs / ms,
                  floorMs / ms >= 0.85 ? "" : "  (below the 0.85 target)");
    }
    for (auto* p : o.sets) gpu::release(0, p);
    gpu::release(0, o.rho); gpu::release(0, o.out);
  }
  gpu::release(0, o.big); gpu::release(0, o.s0); gpu::release(0, o.s1);
}

int main() {
  std::string why;
  if (gpu::deviceCount(&why) == 0) { std::printf("no CUDA device: %s\n", why.c_str()); return 2; }
  rng.seed(11);
  for (GrassSelect sel : {GrassSelect::TopK, GrassSelect::Multinomial, GrassSelect::Uniform})
    for (DType dt : {DType::F32, DType::BF16}) {
      selectCase(7, 3, GrassMode::Rows, 2, sel, dt);
      selectCase(4097, 65, GrassMode::Rows, 512, sel, dt);
      selectCase(65, 4097, GrassMode::Cols, 512, sel, dt);
      selectCase(600, 5000, GrassMode::Cols, 625, sel, dt);
      selectCase(70001, 3, GrassMode::Rows, 8750, sel, dt);
    }
  const std::vector<Spec> specs = {{257, 64, 13, GrassMode::Rows}, {33, 19, 13, GrassMode::Rows}, {48, 300, 13, GrassMode::Cols},
                                   {5, 42, 13, GrassMode::Cols}, {1, 1000, 1, GrassMode::Dense}, {1, 7, 1, GrassMode::Dense}};
  for (GrassSelect sel : {GrassSelect::TopK, GrassSelect::Multinomial, GrassSelect::Uniform})
    for (bool keep : {false, true}) stepCase(specs, sel, keep, DType::F32, 10, 3, 4, false);
  stepCase(specs, GrassSelect::Multinomial, true, DType::BF16, 8, 3, 3, false);
  stepCase(specs, GrassSelect::Multinomial, true, DType::F32, 8, 3, -1, true);
  stepCase({{4096, 1024, 512, GrassMode::Rows}, {1024, 4096, 512, GrassMode::Cols}}, GrassSelect::TopK, true, DType::F32, 4, 2, -1, false);
  rowOps();
  std::printf(failures ? "%d FAILURE(S)\n" : "all checks passed\n", failures);
  return failures ? 1 : 0;
}
