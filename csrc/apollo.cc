// APOLLO glue: argument checks and dispatch to cpu:: or gpu:: (no math here; the layout and the
// scratch sizes come from cuda/apollo.cuh). Every buffer is checked for device and size before
// anything runs, so a bad call is refused, never a crash.
#include <algorithm>
#include <string>
#include <vector>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "cpu/cpu_backend.h"
#include "../cuda/launchers.h"

namespace slimopt {

namespace {

struct Dims { int64_t rows, cols, rank; };

Dims dimsArg(Napi::Env env, const Napi::CallbackInfo& info, int at) {
  Dims d{countArg(env, info[at], "rows"), countArg(env, info[at + 1], "cols"), countArg(env, info[at + 2], "rank")};
  if (d.rows < 1 || d.cols < 1) throwError(env, "E_SHAPE", "rows and cols must be positive");
  if (d.rank < 1 || d.rank > std::min(d.rows, d.cols)) throwError(env, "E_ARG", "rank must be in [1, min(rows, cols)]");
  return d;
}

uint64_t seedArg(Napi::Env env, Napi::Value v) {
  if (!v.IsBigInt()) throwError(env, "E_ARG", "seed must be a BigInt");
  bool lossless = true;
  uint64_t s = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throwError(env, "E_ARG", "seed must fit in 64 bits, unsigned");
  return s;
}

// apolloScratch(rows, cols, rank) -> { p, r, chan, norms }: f32 elements of each scratch.
Napi::Value Scratch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Dims d = dimsArg(env, info, 0);
  Napi::Object o = Napi::Object::New(env);
  o.Set("p", double(apolloPNumel(d.rows, d.cols, d.rank)));
  o.Set("r", double(apolloRNumel(d.rows, d.cols, d.rank)));
  o.Set("chan", double(apolloChanFloats(d.rows, d.cols)));
  o.Set("norms", double(apolloNormFloats(d.rows, d.cols)));
  o.Set("left", apolloLeft(d.rows, d.cols));
  return o;
}

// apolloProjection(P, seed, refreshIndex, rows, cols, rank): P of a rows x cols parameter.
Napi::Value Projection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceOf(env, info[0]);
  uint64_t seed = seedArg(env, info[1]);
  int64_t k = countArg(env, info[2], "refreshIndex");
  if (k > int64_t(UINT32_MAX)) throwError(env, "E_ARG", "refreshIndex must be below 2^32");
  Dims d = dimsArg(env, info, 3);
  const int64_t n = apolloPNumel(d.rows, d.cols, d.rank);
  auto* P = static_cast<float*>(bufArg(env, info[0], dev, size_t(n) * 4, "projection"));
  if (dev == kCpu) {
    cpu::apolloProjection(P, n, seed, uint32_t(k), d.rank);
    return env.Undefined();
  }
  gpu::Status st = gpu::apolloProjection(dev, P, n, seed, uint32_t(k), d.rank);
  if (!st.ok()) throwCuda(env, dev, st, "apolloProjection");
  return env.Undefined();
}

// apolloScan(flag, [[G, gType, rows, cols, norms, p, rPart, seed], ...], counters, gap): flag =
// any NaN/Inf in the gradients; each tensor's channel norms into its norms buffer. p and rPart
// (CUDA, rank 1; else null): the same pass projects (ApolloFused), from (seed, counters step / gap).
Napi::Value Scan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsArray()) throwError(env, "E_ARG", "apolloScan(flag, grads)");
  int dev = deviceOf(env, info[0]);
  auto* flag = static_cast<int32_t*>(bufArg(env, info[0], dev, 4, "flag"));
  Napi::Array a = info[1].As<Napi::Array>();
  struct G { const void* p; DType t; int64_t rows, cols; float* norms; ApolloFused fused; bool hasFused; };
  std::vector<G> gs;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 8) throwError(env, "E_ARG", "malformed gradient entry");
    Napi::Array x = e.As<Napi::Array>();
    G g{};
    g.t = floatDtype(env, x.Get(1u));
    g.rows = countArg(env, x.Get(2u), "rows");
    g.cols = countArg(env, x.Get(3u), "cols");
    if (g.rows < 1 || g.cols < 1) throwError(env, "E_SHAPE", "rows and cols must be positive");
    g.p = bufArg(env, x.Get(0u), dev, size_t(g.rows * g.cols) * dtypeSize(g.t), "gradient");
    g.norms = static_cast<float*>(bufArg(env, x.Get(4u), dev, size_t(apolloNormFloats(g.rows, g.cols)) * 4, "norms"));
    g.hasFused = !x.Get(5u).IsNull() && !x.Get(5u).IsUndefined();
    if (g.hasFused) {
      if (dev == kCpu) throwError(env, "E_ARG", "the fused rank-1 projection is CUDA-only");
      g.fused.p = static_cast<float*>(bufArg(env, x.Get(5u), dev, size_t(apolloPNumel(g.rows, g.cols, 1)) * 4, "projection"));
      g.fused.rPart = static_cast<float*>(bufArg(env, x.Get(6u), dev, size_t(apolloNormFloats(g.rows, g.cols)) * 4, "R partials"));
      g.fused.seed = seedArg(env, x.Get(7u));
      g.fused.counters = static_cast<const AdamwCounters*>(bufArg(env, info[2], dev, sizeof(AdamwCounters), "counters"));
      int64_t gap = countArg(env, info[3], "updateProjGap");
      if (gap < 1 || gap > INT32_MAX) throwError(env, "E_ARG", "updateProjGap must be a positive 32-bit integer");
      g.fused.gap = int32_t(gap);
    }
    gs.push_back(g);
  }
  if (dev == kCpu) {
    bool bad = false;
    for (const G& g : gs) bad |= cpu::apolloGradNorms(g.p, g.t, g.rows, g.cols, g.norms);
    *flag = bad ? 1 : 0;
    return env.Undefined();
  }
  gpu::Status st = gpu::memsetZero(dev, flag, 4);
  for (const G& g : gs)
    if (st.ok()) st = gpu::apolloGradNorms(dev, g.p, g.t, g.rows, g.cols, g.norms, flag, g.hasFused ? &g.fused : nullptr);
  if (!st.ok()) throwCuda(env, dev, st, "apolloScan");
  return env.Undefined();
}

// apolloStep(W, wType, G, gType, m, v, prevNorm, norms, rows, cols, rank, seed, counters, flag,
//            sP, sR, sChan, sBig, hyper{lr, beta1, beta2, eps, weightDecay, scale, growthRate,
//            updateProjGap, channel, scaleFront, limiter, mode}, fusedR)
// fusedR (CUDA, rank 1; else null): the rPart the scan filled; P and the GEMM are then skipped.
Napi::Value Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 19 || !info[18].IsObject()) throwError(env, "E_ARG", "apolloStep: bad arguments");
  int dev = deviceOf(env, info[0]);
  ApolloTensor T{};
  T.paramDtype = floatDtype(env, info[1]);
  T.gradDtype = floatDtype(env, info[3]);
  Dims d = dimsArg(env, info, 8);
  T.rows = d.rows; T.cols = d.cols; T.rank = d.rank;
  T.seed = seedArg(env, info[11]);
  const size_t mn = size_t(T.rows * T.cols), rn = size_t(apolloRNumel(T.rows, T.cols, T.rank));
  T.param = bufArg(env, info[0], dev, mn * dtypeSize(T.paramDtype), "parameter");
  T.grad = bufArg(env, info[2], dev, mn * dtypeSize(T.gradDtype), "gradient");
  T.expAvg = static_cast<float*>(bufArg(env, info[4], dev, rn * 4, "exp_avg"));
  T.expAvgSq = static_cast<float*>(bufArg(env, info[5], dev, rn * 4, "exp_avg_sq"));
  T.prevNorm = static_cast<float*>(bufArg(env, info[6], dev, 4, "prev_norm"));
  T.gradNorms = static_cast<const float*>(bufArg(env, info[7], dev, size_t(apolloNormFloats(T.rows, T.cols)) * 4, "norms"));
  auto* counters = static_cast<AdamwCounters*>(bufArg(env, info[12], dev, sizeof(AdamwCounters), "counters"));
  auto* flag = static_cast<int32_t*>(bufArg(env, info[13], dev, 4, "flag"));
  auto* sP = static_cast<float*>(bufArg(env, info[14], dev, size_t(apolloPNumel(T.rows, T.cols, T.rank)) * 4, "scratch P"));
  auto* sR = static_cast<float*>(bufArg(env, info[15], dev, rn * 4, "scratch R"));
  auto* sChan = static_cast<float*>(bufArg(env, info[16], dev, size_t(apolloChanFloats(T.rows, T.cols)) * 4, "scratch channels"));

  Napi::Object o = info[18].As<Napi::Object>();
  ApolloHyper h{};
  h.lr = finiteFloatField(env, o, "lr"); h.beta1 = finiteFloatField(env, o, "beta1"); h.beta2 = finiteFloatField(env, o, "beta2");
  h.eps = finiteFloatField(env, o, "eps"); h.weightDecay = finiteFloatField(env, o, "weightDecay");
  h.scale = numField(env, o, "scale");
  h.growthRate = numField(env, o, "growthRate");
  if (h.scale < 0 || h.growthRate < 1) throwError(env, "E_ARG", "scale must be >= 0 and growthRate >= 1");
  int64_t gap = countArg(env, o.Get("updateProjGap"), "updateProjGap");
  if (gap < 1 || gap > INT32_MAX) throwError(env, "E_ARG", "updateProjGap must be a positive 32-bit integer");
  h.updateProjGap = int32_t(gap);
  h.channel = o.Get("channel").ToBoolean() ? 1 : 0;
  h.scaleFront = o.Get("scaleFront").ToBoolean() ? 1 : 0;
  h.limiter = o.Get("limiter").ToBoolean() ? 1 : 0;
  int64_t mode = countArg(env, o.Get("mode"), "mode");
  if (mode > 1) throwError(env, "E_ARG", "mode must be 0 (tf32) or 1 (strict f32)");
  h.mode = GemmMode(mode);
  const bool fused = info.Length() > 19 && !info[19].IsNull() && !info[19].IsUndefined();
  if (fused && (dev == kCpu || T.rank != 1)) throwError(env, "E_ARG", "the fused projection is CUDA-only and rank 1");
  auto* fusedR = static_cast<const float*>(fused ? bufArg(env, info[19], dev, size_t(apolloNormFloats(T.rows, T.cols)) * 4, "R partials") : nullptr);
  const bool needBig = dev != kCpu && T.gradDtype != DType::F32 && !fused;
  auto* sBig = static_cast<float*>(needBig ? bufArg(env, info[17], dev, mn * 4, "scratch") : optBufArg(env, info[17], dev, 0, "scratch"));
  if (dev == kCpu) {
    cpu::apolloStep(T, h, counters, flag, sP, sR, sChan);
    return env.Undefined();
  }
  gpu::Status st = gpu::apolloStep(dev, T, h, counters, flag, sP, sR, sChan, sBig, fusedR);
  if (!st.ok()) throwCuda(env, dev, st, "apolloStep");
  return env.Undefined();
}

}  // namespace

void registerApollo(Napi::Env env, Napi::Object exports) {
  exports.Set("apolloScratch", Napi::Function::New(env, Scratch));
  exports.Set("apolloProjection", Napi::Function::New(env, Projection));
  exports.Set("apolloScan", Napi::Function::New(env, Scan));
  exports.Set("apolloStep", Napi::Function::New(env, Step));
}

}  // namespace slimopt
