// cpu::apollo*: the reference of the CUDA APOLLO path (cuda/apollo.cuh has the layout and the
// scalar math). Per tensor: P regenerated into scratch, R = project(G) by the GEMM, Adam on R with
// the per-channel sums of R^2 and N^2, the decision (scales, limiter) from those sums and the
// channel norms of G the scan left, then one pass W <- (W + c_j G) * decay.
#include <algorithm>
#include <vector>
#include "cpu_backend.h"

namespace slimopt {
namespace cpu {

namespace {

struct ProjCtx { float* P; int64_t n; uint64_t seed; uint64_t stream; float scale; };

void projRange(void* c, int64_t b0, int64_t b1) {
  const ProjCtx& k = *static_cast<const ProjCtx*>(c);
  for (int64_t b = b0; b < b1; ++b) {
    float z[4];
    normal4(k.seed, uint64_t(b), k.stream, z);
    for (int j = 0; j < 4; ++j)
      if (b * 4 + j < k.n) k.P[b * 4 + j] = z[j] * k.scale;
  }
}

struct NormCtx { const void* G; DType t; int64_t rows, cols, slabs; float* out; bool bad; };

// Right side: one channel per row, one sum.
void rowNorms(void* c, int64_t i0, int64_t i1) {
  NormCtx& k = *static_cast<NormCtx*>(c);
  bool bad = false;
  for (int64_t i = i0; i < i1; ++i) {
    double s = 0.0;
    for (int64_t j = 0; j < k.cols; ++j) {
      float g = loadAsFloat(k.G, k.t, i * k.cols + j);
      bad |= !isFiniteFloat(g);
      s += double(g) * double(g);
    }
    k.out[i] = float(s);
  }
  if (bad) k.bad = true;  // benign race: only ever set to true
}

// Left side: a column's partial sum over each row slab (slab-major output).
void colNorms(void* c, int64_t s0, int64_t s1) {
  NormCtx& k = *static_cast<NormCtx*>(c);
  const int64_t per = (k.rows + k.slabs - 1) / k.slabs;
  std::vector<double> acc(size_t(k.cols));
  bool bad = false;
  for (int64_t s = s0; s < s1; ++s) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const int64_t r1 = std::min(k.rows, (s + 1) * per);
    for (int64_t i = s * per; i < r1; ++i)
      for (int64_t j = 0; j < k.cols; ++j) {
        float g = loadAsFloat(k.G, k.t, i * k.cols + j);
        bad |= !isFiniteFloat(g);
        acc[j] += double(g) * double(g);
      }
    for (int64_t j = 0; j < k.cols; ++j) k.out[s * k.cols + j] = float(acc[j]);
  }
  if (bad) k.bad = true;
}

struct AdamCtx { const ApolloTensor* T; const ApolloHyper* h; const float* R; float* chan; int64_t ch; };

// Adam on the channels [c0, c1) of R; the channel's sums of R^2 and N^2 (in double) into chan.
void adamChannels(void* c, int64_t c0, int64_t c1) {
  const AdamCtx& k = *static_cast<const AdamCtx*>(c);
  const ApolloTensor& T = *k.T;
  const bool left = apolloLeft(T.rows, T.cols);
  for (int64_t j = c0; j < c1; ++j) {
    double r2 = 0.0, n2 = 0.0;
    for (int64_t q = 0; q < T.rank; ++q) {
      const int64_t idx = left ? q * T.cols + j : j * T.rank + q;
      const float g = k.R[idx];
      float m = T.expAvg[idx], v = T.expAvgSq[idx];
      const float n = galoreAdamElement(g, m, v, k.h->beta1, k.h->beta2, k.h->eps);
      T.expAvg[idx] = m;
      T.expAvgSq[idx] = v;
      r2 += double(g) * double(g);
      n2 += double(n) * double(n);
    }
    k.chan[j] = float(r2);
    k.chan[k.ch + j] = float(n2);
  }
}

struct UpdateCtx { const ApolloTensor* T; const float* coef; float decay; };

void updateRows(void* c, int64_t i0, int64_t i1) {
  const UpdateCtx& k = *static_cast<const UpdateCtx*>(c);
  const ApolloTensor& T = *k.T;
  const bool left = apolloLeft(T.rows, T.cols);
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t j = 0; j < T.cols; ++j) {
      const int64_t idx = i * T.cols + j;
      const float cj = k.coef[left ? j : i];
      float w = loadAsFloat(T.param, T.paramDtype, idx);
      w = w + cj * loadAsFloat(T.grad, T.gradDtype, idx);
      storeFromFloat(T.param, T.paramDtype, idx, w * k.decay);
    }
}

}  // namespace

void apolloProjection(float* P, int64_t n, uint64_t seed, uint32_t refreshIndex, int64_t rank) {
  ProjCtx k{P, n, seed, apolloStream(refreshIndex), apolloProjScale(rank)};
  parallelFor((n + 3) / 4, 4096, projRange, &k);
}

bool apolloGradNorms(const void* G, DType t, int64_t rows, int64_t cols, float* out) {
  NormCtx k{G, t, rows, cols, apolloNormSlabs(rows, cols), out, false};
  if (apolloLeft(rows, cols)) parallelFor(k.slabs, 1, colNorms, &k);
  else parallelFor(rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, cols)), rowNorms, &k);
  return k.bad;
}

void apolloStep(const ApolloTensor& T, const ApolloHyper& h, const AdamwCounters* counters, const int32_t* flag,
                float* sP, float* sR, float* sChan) {
  if (*flag != 0) return;
  const int64_t m = T.rows, n = T.cols, r = T.rank;
  const bool left = apolloLeft(m, n);
  const int64_t ch = apolloChannels(m, n), slabs = apolloNormSlabs(m, n);
  apolloProjection(sP, apolloPNumel(m, n, r), T.seed, uint32_t(counters->step / h.updateProjGap), r);
  GemmArgs g;
  if (left) {  // R = P^T G (r x n)
    g.M = r; g.N = n; g.K = m;
    g.A = sP; g.lda = r; g.transA = true;
    g.B = T.grad; g.bType = T.gradDtype; g.ldb = n; g.transB = false;
  } else {     // R = G P^T (m x r)
    g.M = m; g.N = r; g.K = n;
    g.A = T.grad; g.aType = T.gradDtype; g.lda = n; g.transA = false;
    g.B = sP; g.ldb = n; g.transB = true;
  }
  g.C = sR; g.ldc = g.N;
  gemm(g);
  AdamCtx a{&T, &h, sR, sChan, ch};
  parallelFor(ch, std::max<int64_t>(1, 16384 / r), adamChannels, &a);
  // The reductions over the channels, in channel order.
  ApolloSums sums{0.0, 0.0, 0.0, 0.0};
  for (int64_t j = 0; j < ch; ++j) {
    double g2 = 0.0;
    for (int64_t s = 0; s < slabs; ++s) g2 += double(T.gradNorms[s * ch + j]);
    const float r2 = sChan[j], n2 = sChan[ch + j];
    sums.r2 += double(r2);
    sums.n2 += double(n2);
    sums.g2 += g2;
    const double sj = double(apolloChannelScale(r2, n2));
    sums.scaledG2 += sj * sj * g2;
  }
  const ApolloDecision d = apolloDecide(h, sums, *T.prevNorm, counters->step + 1);
  *T.prevNorm = d.prevNorm;
  float* coef = sChan + 2 * ch;
  for (int64_t j = 0; j < ch; ++j)
    coef[j] = float(d.coef * (h.channel ? double(apolloChannelScale(sChan[j], sChan[ch + j])) : d.s));
  UpdateCtx u{&T, coef, apolloDecay(h)};
  parallelFor(m, std::max<int64_t>(1, 65536 / n), updateRows, &u);
}

}  // namespace cpu
}  // namespace slimopt
