// GaLore glue: argument checks and dispatch to cpu:: or gpu:: (no math here). Every buffer is
// checked for device and size before anything runs, so a bad call is refused, never a crash.
#include <algorithm>
#include <cmath>
#include <vector>
#include <string>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "quant_map.h"
#include "cpu/cpu_backend.h"
#include "../cuda/launchers.h"

namespace slimopt {

namespace {

int64_t intField(Napi::Env env, Napi::Object o, const char* key, int64_t lo) {
  double d = numField(env, o, key);
  if (d != std::floor(d) || d < double(lo) || d > 9.0e15) throwError(env, "E_ARG", std::string(key) + " is out of range");
  return int64_t(d);
}
GemmMode checkedMode(Napi::Env env, int64_t m) {
  if (m > 2) throwError(env, "E_ARG", "mode must be 0 (tf32), 1 (strict f32) or 2 (bf16)");
  return GemmMode(m);
}
GemmMode modeOf(Napi::Env env, Napi::Object o) { return checkedMode(env, intField(env, o, "mode", 0)); }

// The step's hyper-parameters { lr, beta1, beta2, eps, weightDecay, scale, mode } (no 8-bit maps).
GaloreHyper hyperArg(Napi::Env env, Napi::Object o) {
  GaloreHyper h{};
  h.lr = float(numField(env, o, "lr")); h.beta1 = float(numField(env, o, "beta1")); h.beta2 = float(numField(env, o, "beta2"));
  h.eps = float(numField(env, o, "eps")); h.weightDecay = float(numField(env, o, "weightDecay"));
  h.scale = float(numField(env, o, "scale")); h.mode = modeOf(env, o);
  return h;
}
GemmMode modeArg(Napi::Env env, Napi::Value v) { return checkedMode(env, countArg(env, v, "mode")); }

// side, rows, cols, rank of a GaLore tensor, checked (E_ARG).
void readShape(Napi::Env env, Napi::Value side, Napi::Value rows, Napi::Value cols, Napi::Value rank, GaloreTensor& T) {
  int64_t s = countArg(env, side, "side");
  if (s > 2) throwError(env, "E_ARG", "side must be 0, 1 or 2");
  T.side = GaloreSide(s);
  T.rows = countArg(env, rows, "rows"); T.cols = countArg(env, cols, "cols"); T.rank = countArg(env, rank, "rank");
  if (T.rank < 1 || T.rank > std::min(T.rows, T.cols)) throwError(env, "E_ARG", "rank must be in [1, min(rows, cols)]");
}
void readShape(Napi::Env env, const Napi::CallbackInfo& info, int at, GaloreTensor& T) {
  readShape(env, info[at], info[at + 1], info[at + 2], info[at + 3], T);
}

// The projector(s) of T on dev: P (r x cols Right, rows x r otherwise) and, for Full, B (r x cols).
void readProjectors(Napi::Env env, int dev, Napi::Value a, Napi::Value b, GaloreTensor& T) {
  const size_t pa = size_t(T.side == GaloreSide::Right ? T.rank * T.cols : T.rows * T.rank);
  T.projA = static_cast<float*>(bufArg(env, a, dev, pa * 4, "projector"));
  T.projB = T.side == GaloreSide::Full ? static_cast<float*>(bufArg(env, b, dev, size_t(T.rank * T.cols) * 4, "projector B")) : nullptr;
}

// One product's operands from (A, aType, B, bType, C, cType, { m, n, k, transA, transB, alpha,
// beta, mode }), all checked on *dev: set from C when *dev < kCpu (the first), else C must be on it.
struct GemmCall {
  GemmArgs g;
  GemmMode mode;
};
GemmCall readGemm(Napi::Env env, const Napi::Value* v, int* dev) {
  if (!v[6].IsObject()) throwError(env, "E_ARG", "gemm(A, aType, B, bType, C, cType, opts)");
  if (*dev < kCpu) *dev = deviceOf(env, v[4]);
  else if (deviceOf(env, v[4]) != *dev) throwError(env, "E_DEVICE", "gemmMany: products on different devices");
  Napi::Object o = v[6].As<Napi::Object>();
  GemmCall c{};
  GemmArgs& g = c.g;
  g.M = intField(env, o, "m", 0); g.N = intField(env, o, "n", 0); g.K = intField(env, o, "k", 0);
  g.transA = o.Get("transA").ToBoolean(); g.transB = o.Get("transB").ToBoolean();
  g.alpha = float(numField(env, o, "alpha")); g.beta = float(numField(env, o, "beta"));
  g.aType = floatDtype(env, v[1]); g.bType = floatDtype(env, v[3]); g.cType = floatDtype(env, v[5]);
  c.mode = modeOf(env, o);
  if (*dev != kCpu && (g.aType != DType::F32 || g.bType != DType::F32))
    throwError(env, "E_DTYPE", "gemm on CUDA takes f32 A and B (C may be f32, bf16 or f16)");
  g.lda = g.transA ? g.M : g.K;
  g.ldb = g.transB ? g.K : g.N;
  g.ldc = g.N;
  g.A = bufArg(env, v[0], *dev, size_t(g.M * g.K) * dtypeSize(g.aType), "A");
  g.B = bufArg(env, v[2], *dev, size_t(g.K * g.N) * dtypeSize(g.bType), "B");
  g.C = bufArg(env, v[4], *dev, size_t(g.M * g.N) * dtypeSize(g.cType), "C");
  return c;
}

// gemm(A, aType, B, bType, C, cType, { m, n, k, transA, transB, alpha, beta, mode })
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Value v[7] = {info[0], info[1], info[2], info[3], info[4], info[5], info[6]};
  int dev = kCpu - 1;
  const GemmCall c = readGemm(env, v, &dev);
  if (dev == kCpu) {
    cpu::gemm(c.g);
    return env.Undefined();
  }
  gpu::Status st = gpu::gemm(dev, c.g, c.mode);
  if (!st.ok()) throwCuda(env, dev, st, "gemm");
  return env.Undefined();
}

// gemmMany([[A, aType, B, bType, C, cType, opts], ...]): gemm of each in order, one device, every
// product checked before any runs.
Napi::Value GemmMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throwError(env, "E_ARG", "gemmMany([[A, aType, B, bType, C, cType, opts], ...])");
  Napi::Array a = info[0].As<Napi::Array>();
  int dev = kCpu - 1;
  std::vector<GemmArgs> gs;
  std::vector<GemmMode> modes;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 7) throwError(env, "E_ARG", "gemmMany: malformed product");
    Napi::Array x = e.As<Napi::Array>();
    Napi::Value v[7];
    for (uint32_t j = 0; j < 7; ++j) v[j] = x.Get(j);
    const GemmCall c = readGemm(env, v, &dev);
    gs.push_back(c.g);
    modes.push_back(c.mode);
  }
  if (gs.empty()) return env.Undefined();
  if (dev == kCpu) {
    for (const GemmArgs& g : gs) cpu::gemm(g);
    return env.Undefined();
  }
  gpu::Status st = gpu::gemmMany(dev, gs.data(), modes.data(), int64_t(gs.size()));
  if (!st.ok()) throwCuda(env, dev, st, "gemmMany");
  return env.Undefined();
}

// galoreScan(flag, [[grad, dtype, numel], ...]): flag = any NaN/Inf in the gradients.
Napi::Value Scan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsArray()) throwError(env, "E_ARG", "galoreScan(flag, grads)");
  int dev = deviceOf(env, info[0]);
  auto* flag = static_cast<int32_t*>(bufArg(env, info[0], dev, 4, "flag"));
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<gpu::ScanEntry> gs;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 3) throwError(env, "E_ARG", "malformed gradient entry");
    Napi::Array x = e.As<Napi::Array>();
    DType t = floatDtype(env, x.Get(1u));
    int64_t n = countArg(env, x.Get(2u), "numel");
    gs.push_back({bufArg(env, x.Get(0u), dev, size_t(n) * dtypeSize(t), "gradient"), t, n});
  }
  if (dev == kCpu) {
    bool bad = false;
    for (const gpu::ScanEntry& g : gs) if (!bad) bad = cpu::anyNonFinite(g.p, g.t, g.n);
    *flag = bad ? 1 : 0;
    return env.Undefined();
  }
  gpu::Status st = gpu::memsetZero(dev, flag, 4);
  if (st.ok()) st = gpu::scanNonFinite(dev, gs.data(), int64_t(gs.size()), flag);
  if (!st.ok()) throwCuda(env, dev, st, "galoreScan");
  return env.Undefined();
}

// galoreRefresh(G, gType, rows, cols, rank, left, P, hasPrev, flag, method, mode, ws, xScratch)
// method 0 svd (exact), 1 warm; mode 0 tf32, 1 strict (the warm path's GEMMs with G). ws: the
// workspace galoreRefreshWorkspace() asked for (null on the CPU); xScratch: rows x cols f32 when G
// is not f32 on CUDA. The CPU computes the exact vectors whatever the method.
Napi::Value Refresh(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceOf(env, info[0]);
  DType gt = floatDtype(env, info[1]);
  int64_t rows = countArg(env, info[2], "rows"), cols = countArg(env, info[3], "cols"), r = countArg(env, info[4], "rank");
  if (r < 1 || r > std::min(rows, cols)) throwError(env, "E_ARG", "rank must be in [1, min(rows, cols)]");
  bool left = info[5].ToBoolean();
  const void* G = bufArg(env, info[0], dev, size_t(rows * cols) * dtypeSize(gt), "gradient");
  auto* P = static_cast<float*>(bufArg(env, info[6], dev, size_t((left ? rows : cols) * r) * 4, "projector"));
  bool hasPrev = info[7].ToBoolean();
  auto* flag = static_cast<const int32_t*>(bufArg(env, info[8], dev, 4, "flag"));
  int64_t method = info.Length() > 9 && !info[9].IsUndefined() ? countArg(env, info[9], "method") : 0;
  if (method > 1) throwError(env, "E_ARG", "method must be 0 (svd) or 1 (warm)");
  int64_t mode = info.Length() > 10 && !info[10].IsUndefined() ? countArg(env, info[10], "mode") : 1;
  if (mode > 1) throwError(env, "E_ARG", "mode must be 0 (tf32) or 1 (strict f32)");
  if (dev == kCpu) {
    if (*flag == 0) cpu::topSingular(G, gt, rows, cols, r, left, P, hasPrev);
    return env.Undefined();
  }
  int64_t need = 0;
  gpu::Status st = gpu::galoreRefreshWorkspace(dev, rows, cols, r, left, RefreshMethod(method), &need);
  if (!st.ok()) throwCuda(env, dev, st, "galoreRefresh");
  auto* ws = static_cast<float*>(need > 0 ? bufArg(env, info[11], dev, size_t(need) * 4, "refresh workspace") : nullptr);
  auto* xs = static_cast<float*>(gt != DType::F32 ? bufArg(env, info[12], dev, size_t(rows * cols) * 4, "scratch") : nullptr);
  st = gpu::galoreRefresh(dev, G, gt, rows, cols, r, left, P, hasPrev, flag, RefreshMethod(method), GemmMode(mode),
                          ws, need, xs);
  if (!st.ok()) throwCuda(env, dev, st, "galoreRefresh");
  return env.Undefined();
}

// galoreRefreshMany([[G, gType, rows, cols, rank, left, P, flag, method, mode], ...], [ws0, ws1, ...])
// (CUDA): galoreRefresh (hasPrev) of every entry, f32 gradients only, as many at a time as
// workspaces are given (at most 4; ws0 the largest, and it fits every entry).
Napi::Value RefreshMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsArray()) throwError(env, "E_ARG", "galoreRefreshMany: bad arguments");
  Napi::Array a = info[0].As<Napi::Array>(), w = info[1].As<Napi::Array>();
  if (w.Length() < 1 || w.Length() > uint32_t(gpu::kMaxRefreshLanes)) throwError(env, "E_ARG", "galoreRefreshMany: 1 to 4 workspaces");
  int dev = deviceOf(env, w.Get(0u));
  if (dev == kCpu) throwError(env, "E_DEVICE", "galoreRefreshMany: CUDA only");
  std::vector<float*> ws;
  std::vector<int64_t> wsFloats;
  for (uint32_t l = 0; l < w.Length(); ++l) {
    ws.push_back(static_cast<float*>(bufArg(env, w.Get(l), dev, 4, "refresh workspace")));
    wsFloats.push_back(int64_t(NativeBuffer::From(env, w.Get(l), "refresh workspace")->bytes() / 4));
  }
  std::vector<gpu::GaloreRefreshEntry> es;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value v = a.Get(i);
    if (!v.IsArray() || v.As<Napi::Array>().Length() != 10) throwError(env, "E_ARG", "galoreRefreshMany: malformed entry");
    Napi::Array x = v.As<Napi::Array>();
    if (floatDtype(env, x.Get(1u)) != DType::F32) throwError(env, "E_ARG", "galoreRefreshMany: f32 gradients only");
    gpu::GaloreRefreshEntry e{};
    e.rows = countArg(env, x.Get(2u), "rows");
    e.cols = countArg(env, x.Get(3u), "cols");
    e.rank = countArg(env, x.Get(4u), "rank");
    if (e.rank < 1 || e.rank > std::min(e.rows, e.cols)) throwError(env, "E_ARG", "rank must be in [1, min(rows, cols)]");
    e.left = x.Get(5u).ToBoolean();
    e.X = bufArg(env, x.Get(0u), dev, size_t(e.rows * e.cols) * 4, "gradient");
    e.P = static_cast<float*>(bufArg(env, x.Get(6u), dev, size_t((e.left ? e.rows : e.cols) * e.rank) * 4, "projector"));
    e.flag = static_cast<const int32_t*>(bufArg(env, x.Get(7u), dev, 4, "flag"));
    const int64_t method = countArg(env, x.Get(8u), "method"), mode = countArg(env, x.Get(9u), "mode");
    if (method > 1) throwError(env, "E_ARG", "method must be 0 (svd) or 1 (warm)");
    if (mode > 1) throwError(env, "E_ARG", "mode must be 0 (tf32) or 1 (strict f32)");
    e.method = RefreshMethod(method);
    e.mode = GemmMode(mode);
    es.push_back(e);
  }
  for (int64_t f : wsFloats)
    if (f > wsFloats[0]) throwError(env, "E_ARG", "galoreRefreshMany: the first workspace must be the largest");
  for (gpu::GaloreRefreshEntry& e : es) {
    gpu::Status st = gpu::galoreRefreshWorkspace(dev, e.rows, e.cols, e.rank, e.left, e.method, &e.floats);
    if (!st.ok()) throwCuda(env, dev, st, "galoreRefreshMany");
    if (e.floats > wsFloats[0]) throwError(env, "E_SHAPE", "galoreRefreshMany: a refresh needs " + std::to_string(e.floats) +
                                                            " floats of workspace, more than the first holds");
  }
  gpu::Status st = gpu::galoreRefreshMany(dev, es.data(), int64_t(es.size()), ws.data(), wsFloats.data(), int(ws.size()));
  if (!st.ok()) throwCuda(env, dev, st, "galoreRefreshMany");
  return env.Undefined();
}

// galoreRefreshWorkspace(anyBufferOnTheDevice, rows, cols, rank, left, method): f32 elements of
// device workspace a refresh needs (0 on the CPU).
Napi::Value RefreshWorkspace(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceOf(env, info[0]);
  int64_t rows = countArg(env, info[1], "rows"), cols = countArg(env, info[2], "cols"), r = countArg(env, info[3], "rank");
  if (r < 1 || r > std::min(rows, cols)) throwError(env, "E_ARG", "rank must be in [1, min(rows, cols)]");
  bool left = info[4].ToBoolean();
  int64_t method = countArg(env, info[5], "method");
  if (method > 1) throwError(env, "E_ARG", "method must be 0 (svd) or 1 (warm)");
  if (dev == kCpu) return Napi::Number::New(env, 0);
  int64_t need = 0;
  gpu::Status st = gpu::galoreRefreshWorkspace(dev, rows, cols, r, left, RefreshMethod(method), &need);
  if (!st.ok()) throwCuda(env, dev, st, "galoreRefreshWorkspace");
  return Napi::Number::New(env, double(need));
}

// galoreStep(W, wType, G, gType, m, v, Pa, Pb, side, rows, cols, rank, counters, flag, sR, sT,
//            sBig, scalars, hyper{lr, beta1, beta2, eps, weightDecay, scale, mode}
//            [, R[, absmaxM, absmaxV, mapA, mapB]]
// R (f32, R-sized, or null): used in place of projecting the gradient (R may be sR itself: Adam
// then runs on it in place). With absmaxM/absmaxV the
// states are 8-bit: m, v hold u8 codes of mapA (signed) / mapB (unsigned), 256-entry maps, one
// f32 absmax per 256-block.
Napi::Value Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 19 || !info[18].IsObject()) throwError(env, "E_ARG", "galoreStep: bad arguments");
  int dev = deviceOf(env, info[0]);
  GaloreTensor T{};
  T.paramDtype = floatDtype(env, info[1]);
  T.gradDtype = floatDtype(env, info[3]);
  readShape(env, info, 8, T);
  const size_t mn = size_t(T.rows * T.cols), rn = size_t(galoreRNumel(T));
  T.param = bufArg(env, info[0], dev, mn * dtypeSize(T.paramDtype), "parameter");
  // info[19]: R given (f32, R-sized), used in place of projecting the gradient (null: project).
  const bool given = info.Length() > 19 && !info[19].IsNull() && !info[19].IsUndefined();
  T.projected = given ? static_cast<const float*>(bufArg(env, info[19], dev, rn * 4, "projected gradient")) : nullptr;
  T.grad = given ? nullptr : bufArg(env, info[2], dev, mn * dtypeSize(T.gradDtype), "gradient");
  const bool quantized = info.Length() > 20 && !info[20].IsNull() && !info[20].IsUndefined();
  Q8MapArgs maps{};
  if (quantized) {
    const size_t blocks = (rn + size_t(kQ8Block) - 1) / size_t(kQ8Block);
    T.quantized = 1;
    T.codeM = static_cast<uint8_t*>(bufArg(env, info[4], dev, rn, "exp_avg codes"));
    T.codeV = static_cast<uint8_t*>(bufArg(env, info[5], dev, rn, "exp_avg_sq codes"));
    T.absmaxM = static_cast<float*>(bufArg(env, info[20], dev, blocks * 4, "exp_avg absmax"));
    T.absmaxV = static_cast<float*>(bufArg(env, info[21], dev, blocks * 4, "exp_avg_sq absmax"));
    maps = q8MapArgs(env, info[22], info[23]);
  } else {
    T.expAvg = static_cast<float*>(bufArg(env, info[4], dev, rn * 4, "exp_avg"));
    T.expAvgSq = static_cast<float*>(bufArg(env, info[5], dev, rn * 4, "exp_avg_sq"));
  }
  readProjectors(env, dev, info[6], info[7], T);
  // info[24]: true when galoreAdamMany has run Adam on the R given (CUDA only).
  T.adamDone = info.Length() > 24 && info[24].ToBoolean() ? 1 : 0;
  if (T.adamDone && (dev == kCpu || !given || quantized)) throwError(env, "E_ARG", "galoreStep: Adam done needs CUDA, the R given and f32 states");
  auto* counters = static_cast<AdamwCounters*>(bufArg(env, info[12], dev, sizeof(AdamwCounters), "counters"));
  auto* flag = static_cast<int32_t*>(bufArg(env, info[13], dev, 4, "flag"));
  auto* sR = static_cast<float*>(bufArg(env, info[14], dev, rn * 4, "scratch R"));
  // sT: Full's r x cols product; on CUDA also a one-sided project-back's B transposed at rank <=
  // kBackTransposeMaxRank (optional there: without it B is used as given).
  auto* sT = T.side == GaloreSide::Full ? static_cast<float*>(bufArg(env, info[15], dev, size_t(T.rank * T.cols) * 4, "scratch T"))
             : dev != kCpu && T.rank <= gpu::kBackTransposeMaxRank
                 ? static_cast<float*>(optBufArg(env, info[15], dev, size_t(T.rank * T.cols) * 4, "scratch T"))
                 : nullptr;
  const bool needBig = dev != kCpu && (T.paramDtype != DType::F32 || (!given && T.gradDtype != DType::F32));
  auto* sBig = static_cast<float*>(needBig ? bufArg(env, info[16], dev, mn * 4, "scratch") : optBufArg(env, info[16], dev, 0, "scratch"));
  auto* scalars = static_cast<float*>(dev != kCpu ? bufArg(env, info[17], dev, 8, "scalars") : nullptr);
  GaloreHyper h = hyperArg(env, info[18].As<Napi::Object>());
  if (quantized) h.q8 = q8MapsOn(env, maps, dev);
  if (dev == kCpu) {
    cpu::galoreStep(T, h, counters, flag, sR, sT);
    return env.Undefined();
  }
  gpu::Status st = gpu::galoreStep(dev, T, h, counters, flag, sR, sT, sBig, scalars);
  if (!st.ok()) throwCuda(env, dev, st, "galoreStep");
  return env.Undefined();
}

// One projection's operands from (G, gType, Pa, Pb, side, rows, cols, rank, out), all checked on
// *dev: set from this G when *dev < kCpu (the first entry), else every G must be on it.
struct Projection {
  GaloreTensor T{};
  float* out = nullptr;
};
Projection readProjection(Napi::Env env, const Napi::Value* v, int* dev) {
  if (*dev < kCpu) *dev = deviceOf(env, v[0]);
  else if (deviceOf(env, v[0]) != *dev) throwError(env, "E_DEVICE", "galoreProjectMany: gradients on different devices");
  Projection p;
  GaloreTensor& T = p.T;
  T.gradDtype = floatDtype(env, v[1]);
  readShape(env, v[4], v[5], v[6], v[7], T);
  const size_t mn = size_t(T.rows * T.cols), rn = size_t(galoreRNumel(T));
  T.grad = bufArg(env, v[0], *dev, mn * dtypeSize(T.gradDtype), "gradient");
  readProjectors(env, *dev, v[2], v[3], T);
  p.out = static_cast<float*>(bufArg(env, v[8], *dev, rn * 4, "output"));
  return p;
}

// The scratch of a projection batch: sT (r x cols f32) when one is Full, sBig (rows x cols f32)
// when one has a non-f32 G on CUDA; sized for the largest that needs it.
void readProjectScratch(Napi::Env env, int dev, const std::vector<Projection>& ps, Napi::Value vT, Napi::Value vBig,
                        float** sT, float** sBig) {
  size_t t = 0, big = 0;
  for (const Projection& p : ps) {
    if (p.T.side == GaloreSide::Full) t = std::max(t, size_t(p.T.rank * p.T.cols));
    if (dev != kCpu && p.T.gradDtype != DType::F32) big = std::max(big, size_t(p.T.rows * p.T.cols));
  }
  *sT = t > 0 ? static_cast<float*>(bufArg(env, vT, dev, t * 4, "scratch T")) : nullptr;
  *sBig = big > 0 ? static_cast<float*>(bufArg(env, vBig, dev, big * 4, "scratch")) : nullptr;
}

// galoreProject(G, gType, Pa, Pb, side, rows, cols, rank, out, sT, sBig, mode): out = project(G)
// (f32, R-sized), the projection galoreStep makes, on the same GEMM layer. sT: r x cols f32 for
// Full; sBig: rows x cols f32 when G is not f32 on CUDA.
Napi::Value Project(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 12) throwError(env, "E_ARG", "galoreProject: bad arguments");
  int dev = kCpu - 1;
  Napi::Value v[9];
  for (int i = 0; i < 9; ++i) v[i] = info[i];
  std::vector<Projection> ps{readProjection(env, v, &dev)};
  const GemmMode mode = modeArg(env, info[11]);
  float *sT, *sBig;
  readProjectScratch(env, dev, ps, info[9], info[10], &sT, &sBig);
  if (dev == kCpu) {
    cpu::galoreProject(ps[0].T, ps[0].out, sT);
    return env.Undefined();
  }
  gpu::Status st = gpu::galoreProject(dev, ps[0].T, ps[0].out, sT, sBig, mode);
  if (!st.ok()) throwCuda(env, dev, st, "galoreProject");
  return env.Undefined();
}

// galoreProjectMany(entries, sT, sBig, mode[, sP]), entries: [G, gType, Pa, Pb, side, rows, cols,
// rank, out] each, on one device: every galoreProject of the list, all checked before any runs
// (CUDA: same-shaped f32 ones as one batched product). Outputs must not overlap each other or any
// input. sP (CUDA, optional): scratch for left-side projectors transposed, any size.
Napi::Value ProjectMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsArray()) throwError(env, "E_ARG", "galoreProjectMany(entries, sT, sBig, mode)");
  Napi::Array list = info[0].As<Napi::Array>();
  if (list.Length() == 0) return env.Undefined();
  int dev = kCpu - 1;
  std::vector<Projection> ps;
  for (uint32_t i = 0; i < list.Length(); ++i) {
    Napi::Value e = list.Get(i);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 9) throwError(env, "E_ARG", "galoreProjectMany: an entry is not a 9-array");
    Napi::Array a = e.As<Napi::Array>();
    Napi::Value v[9];
    for (uint32_t k = 0; k < 9; ++k) v[k] = a.Get(k);
    ps.push_back(readProjection(env, v, &dev));
  }
  const GemmMode mode = modeArg(env, info[3]);
  float *sT, *sBig;
  readProjectScratch(env, dev, ps, info[1], info[2], &sT, &sBig);
  if (dev == kCpu) {
    for (const Projection& p : ps) cpu::galoreProject(p.T, p.out, sT);
    return env.Undefined();
  }
  std::vector<GaloreTensor> ts;
  std::vector<float*> outs;
  for (const Projection& p : ps) {
    ts.push_back(p.T);
    outs.push_back(p.out);
  }
  auto* sP = info.Length() > 4 ? static_cast<float*>(optBufArg(env, info[4], dev, 4, "scratch P")) : nullptr;
  const int64_t sPFloats = sP ? int64_t(NativeBuffer::From(env, info[4], "scratch P")->bytes() / 4) : 0;
  gpu::Status st = gpu::galoreProjectMany(dev, ts.data(), outs.data(), int64_t(ts.size()), sT, sBig, mode, sP, sPFloats);
  if (!st.ok()) throwCuda(env, dev, st, "galoreProjectMany");
  return env.Undefined();
}

// galoreAdamMany([[R, m, v, numel], ...], counters, flag, scalars, hyper): Adam on every R in place
// (R becomes N) in one launch, and the epilogue scalars (CUDA; f32 states).
Napi::Value AdamMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsArray() || !info[4].IsObject()) throwError(env, "E_ARG", "galoreAdamMany: bad arguments");
  int dev = deviceOf(env, info[1]);
  if (dev == kCpu) throwError(env, "E_DEVICE", "galoreAdamMany: CUDA only");
  auto* counters = static_cast<AdamwCounters*>(bufArg(env, info[1], dev, sizeof(AdamwCounters), "counters"));
  auto* flag = static_cast<int32_t*>(bufArg(env, info[2], dev, 4, "flag"));
  auto* scalars = static_cast<float*>(bufArg(env, info[3], dev, 8, "scalars"));
  Napi::Array a = info[0].As<Napi::Array>();
  std::vector<gpu::GaloreAdamEntry> es;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 4) throwError(env, "E_ARG", "galoreAdamMany: malformed entry");
    Napi::Array x = e.As<Napi::Array>();
    const int64_t n = countArg(env, x.Get(3u), "numel");
    gpu::GaloreAdamEntry g{};
    g.r = static_cast<float*>(bufArg(env, x.Get(0u), dev, size_t(n) * 4, "R"));
    g.m = static_cast<float*>(bufArg(env, x.Get(1u), dev, size_t(n) * 4, "exp_avg"));
    g.v = static_cast<float*>(bufArg(env, x.Get(2u), dev, size_t(n) * 4, "exp_avg_sq"));
    g.n = n;
    es.push_back(g);
  }
  const GaloreHyper h = hyperArg(env, info[4].As<Napi::Object>());
  gpu::Status st = gpu::galoreAdamMany(dev, es.data(), int64_t(es.size()), h, counters, flag, scalars);
  if (!st.ok()) throwCuda(env, dev, st, "galoreAdamMany");
  return env.Undefined();
}

// galoreBackMany([[W, P, N, side, rows, cols, rank], ...], flag, scalars, mode[, sT]): the
// project-back of one-sided f32 parameters whose N (Adam on R done by galoreAdamMany) is given
// (CUDA). sT (f32, at least rank x cols of each entry of rank <= kBackTransposeMaxRank, or null):
// the buffer B goes through transposed where cuBLAS serves, as many Bs at once as it holds.
Napi::Value BackMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsArray()) throwError(env, "E_ARG", "galoreBackMany: bad arguments");
  int dev = deviceOf(env, info[1]);
  if (dev == kCpu) throwError(env, "E_DEVICE", "galoreBackMany: CUDA only");
  auto* flag = static_cast<int32_t*>(bufArg(env, info[1], dev, 4, "flag"));
  auto* scalars = static_cast<float*>(bufArg(env, info[2], dev, 8, "scalars"));
  const GemmMode mode = modeArg(env, info[3]);
  Napi::Array a = info[0].As<Napi::Array>();
  std::vector<gpu::GaloreBackEntry> es;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 7) throwError(env, "E_ARG", "galoreBackMany: malformed entry");
    Napi::Array x = e.As<Napi::Array>();
    GaloreTensor T{};
    readShape(env, x.Get(3u), x.Get(4u), x.Get(5u), x.Get(6u), T);
    if (T.side == GaloreSide::Full) throwError(env, "E_ARG", "galoreBackMany: one-sided parameters only");
    readProjectors(env, dev, x.Get(1u), env.Null(), T);
    gpu::GaloreBackEntry b{};
    b.param = static_cast<float*>(bufArg(env, x.Get(0u), dev, size_t(T.rows * T.cols) * 4, "parameter"));
    b.proj = T.projA;
    b.n = static_cast<const float*>(bufArg(env, x.Get(2u), dev, size_t(galoreRNumel(T)) * 4, "N"));
    b.side = T.side;
    b.rows = T.rows; b.cols = T.cols; b.rank = T.rank;
    es.push_back(b);
  }
  size_t needT = 0;
  for (const gpu::GaloreBackEntry& b : es)
    if (b.rank <= gpu::kBackTransposeMaxRank) needT = std::max(needT, size_t(b.rank * b.cols));
  auto* sT = info.Length() > 4 && needT > 0 ? static_cast<float*>(optBufArg(env, info[4], dev, needT * 4, "scratch T")) : nullptr;
  const int64_t sTFloats = sT ? int64_t(NativeBuffer::From(env, info[4], "scratch T")->bytes() / 4) : 0;
  gpu::Status st = gpu::galoreBackMany(dev, es.data(), int64_t(es.size()), mode, flag, scalars, sT, sTFloats);
  if (!st.ok()) throwCuda(env, dev, st, "galoreBackMany");
  return env.Undefined();
}

// galoreFinish(counters, flag)
Napi::Value Finish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceOf(env, info[0]);
  auto* counters = static_cast<AdamwCounters*>(bufArg(env, info[0], dev, sizeof(AdamwCounters), "counters"));
  auto* flag = static_cast<int32_t*>(bufArg(env, info[1], dev, 4, "flag"));
  if (dev == kCpu) {
    if (*flag) counters->skipped += 1;
    else counters->step += 1;
    return env.Undefined();
  }
  gpu::Status st = gpu::galoreFinish(dev, counters, flag);
  if (!st.ok()) throwCuda(env, dev, st, "galoreFinish");
  return env.Undefined();
}

Napi::Value LinalgInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("blas", gpu::blasPath());
  o.Set("solver", gpu::solverPath());
  o.Set("forceBuiltin", gpu::forceBuiltin());
  o.Set("streamGemm", gpu::streamGemmEnabled());
  return o;
}

Napi::Value SetForceBuiltin(const Napi::CallbackInfo& info) {
  gpu::setForceBuiltin(info[0].ToBoolean());
  return info.Env().Undefined();
}

Napi::Value StreamGemmKernel(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), gpu::streamGemmKernel(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Value SetStreamGemm(const Napi::CallbackInfo& info) {
  gpu::setStreamGemm(info[0].ToBoolean());
  return info.Env().Undefined();
}

}  // namespace

void registerGalore(Napi::Env env, Napi::Object exports) {
  exports.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("gemmMany", Napi::Function::New(env, GemmMany));
  exports.Set("galoreScan", Napi::Function::New(env, Scan));
  exports.Set("galoreAdamMany", Napi::Function::New(env, AdamMany));
  exports.Set("galoreBackMany", Napi::Function::New(env, BackMany));
  exports.Set("galoreRefresh", Napi::Function::New(env, Refresh));
  exports.Set("galoreRefreshMany", Napi::Function::New(env, RefreshMany));
  // The largest rank whose one-sided project-back takes B transposed through sT on CUDA: the
  // optimizer sizes sT by it.
  exports.Set("galoreBackTransposeMaxRank", Napi::Number::New(env, double(gpu::kBackTransposeMaxRank)));
  exports.Set("galoreRefreshWorkspace", Napi::Function::New(env, RefreshWorkspace));
  exports.Set("galoreStep", Napi::Function::New(env, Step));
  exports.Set("galoreFinish", Napi::Function::New(env, Finish));
  exports.Set("galoreProject", Napi::Function::New(env, Project));
  exports.Set("galoreProjectMany", Napi::Function::New(env, ProjectMany));
  exports.Set("linalgInfo", Napi::Function::New(env, LinalgInfo));
  exports.Set("setForceBuiltin", Napi::Function::New(env, SetForceBuiltin));
  exports.Set("setStreamGemm", Napi::Function::New(env, SetStreamGemm));
  exports.Set("streamGemmKernel", Napi::Function::New(env, StreamGemmKernel));
}

}  // namespace slimopt
