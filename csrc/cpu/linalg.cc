// CPU linear algebra for the projected optimizers: a blocked f32 GEMM (the reference for the CUDA
// GEMMs, and the CPU path) and the exact top-r singular vectors of a matrix with the sign rule of
// DESIGN §4.
//
// GEMM: C is cut into MC x NC tiles, one task each (cpu::parallelFor). A task walks K in KC
// slices: it packs op(A)'s slice into an MC x KC f32 panel and op(B)'s into KC x NC (converting
// bf16/f16 there, so any transpose and dtype become the same contiguous inner loop), and
// accumulates into an MC x NC f32 tile whose rows stay in L1 while the j loop vectorizes. The
// epilogue C = alpha*acc + beta*C is applied once per element, in C's dtype. The sum order of
// every element is fixed (p ascending), whatever the thread count: results are deterministic.
//
// SVD: the Gram matrix of the smaller side, formed in double, and its full symmetric eigen-
// decomposition by Householder tridiagonalisation and implicit QL (tred2/tql2 of EISPACK as
// JAMA writes them), in double. Top-r eigenvectors are singular vectors of that side; the other
// side's are X v / sigma (renormalised), in double. Exact to the f32 rounding of the output for
// any separated singular values, and deterministic.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
#include "cpu_backend.h"

namespace slimopt {
namespace cpu {

namespace {

constexpr int64_t MC = 64, NC = 256, KC = 256;

struct GemmCtx {
  const GemmArgs* a;
  int64_t tilesN;
};

inline float ldA(const GemmArgs& g, int64_t i, int64_t p) {
  int64_t idx = g.transA ? p * g.lda + i : i * g.lda + p;
  return loadAsFloat(g.A, g.aType, idx);
}
inline float ldB(const GemmArgs& g, int64_t p, int64_t j) {
  int64_t idx = g.transB ? j * g.ldb + p : p * g.ldb + j;
  return loadAsFloat(g.B, g.bType, idx);
}

void gemmTiles(void* c, int64_t t0, int64_t t1) {
  const GemmCtx& k = *static_cast<const GemmCtx*>(c);
  const GemmArgs& g = *k.a;
  std::vector<float> ap(MC * KC), bp(KC * NC), acc(MC * NC);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t i0 = (t / k.tilesN) * MC, j0 = (t % k.tilesN) * NC;
    const int64_t mi = std::min(MC, g.M - i0), nj = std::min(NC, g.N - j0);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t p0 = 0; p0 < g.K; p0 += KC) {
      const int64_t kp = std::min(KC, g.K - p0);
      for (int64_t i = 0; i < mi; ++i)
        for (int64_t p = 0; p < kp; ++p) ap[i * KC + p] = ldA(g, i0 + i, p0 + p);
      if (!g.transB && g.bType == DType::F32) {
        const float* B = static_cast<const float*>(g.B);
        for (int64_t p = 0; p < kp; ++p)
          std::memcpy(&bp[p * NC], B + (p0 + p) * g.ldb + j0, size_t(nj) * 4);
      } else {
        for (int64_t p = 0; p < kp; ++p)
          for (int64_t j = 0; j < nj; ++j) bp[p * NC + j] = ldB(g, p0 + p, j0 + j);
      }
      for (int64_t i = 0; i < mi; ++i) {
        float* __restrict__ row = &acc[i * NC];
        const float* __restrict__ arow = &ap[i * KC];
        for (int64_t p = 0; p < kp; ++p) {
          const float av = arow[p];
          const float* __restrict__ brow = &bp[p * NC];
          for (int64_t j = 0; j < nj; ++j) row[j] += av * brow[j];
        }
      }
    }
    for (int64_t i = 0; i < mi; ++i) {
      for (int64_t j = 0; j < nj; ++j) {
        const int64_t idx = (i0 + i) * g.ldc + j0 + j;
        float out = g.alpha * acc[i * NC + j];
        if (g.beta != 0.0f) out += g.beta * loadAsFloat(g.C, g.cType, idx);
        storeFromFloat(g.C, g.cType, idx, out);
      }
    }
  }
}

// Symmetric eigen-decomposition of the n x n matrix held in V (column-major, overwritten by the
// eigenvectors as columns); d gets the eigenvalues in ascending order.
void symmetricEigen(int64_t n, std::vector<double>& Vs, std::vector<double>& d) {
  auto V = [&](int64_t r, int64_t c) -> double& { return Vs[c * n + r]; };
  d.assign(n, 0.0);
  std::vector<double> e(n, 0.0);
  // tred2
  for (int64_t j = 0; j < n; ++j) d[j] = V(n - 1, j);
  for (int64_t i = n - 1; i > 0; --i) {
    double scale = 0.0, h = 0.0;
    for (int64_t k = 0; k < i; ++k) scale += std::fabs(d[k]);
    if (scale == 0.0) {
      e[i] = d[i - 1];
      for (int64_t j = 0; j < i; ++j) { d[j] = V(i - 1, j); V(i, j) = 0.0; V(j, i) = 0.0; }
    } else {
      for (int64_t k = 0; k < i; ++k) { d[k] /= scale; h += d[k] * d[k]; }
      double f = d[i - 1], g = std::sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h = h - f * g;
      d[i - 1] = f - g;
      for (int64_t j = 0; j < i; ++j) e[j] = 0.0;
      for (int64_t j = 0; j < i; ++j) {
        f = d[j];
        V(j, i) = f;
        g = e[j] + V(j, j) * f;
        for (int64_t k = j + 1; k <= i - 1; ++k) { g += V(k, j) * d[k]; e[k] += V(k, j) * f; }
        e[j] = g;
      }
      f = 0.0;
      for (int64_t j = 0; j < i; ++j) { e[j] /= h; f += e[j] * d[j]; }
      double hh = f / (h + h);
      for (int64_t j = 0; j < i; ++j) e[j] -= hh * d[j];
      for (int64_t j = 0; j < i; ++j) {
        f = d[j]; g = e[j];
        for (int64_t k = j; k <= i - 1; ++k) V(k, j) -= (f * e[k] + g * d[k]);
        d[j] = V(i - 1, j);
        V(i, j) = 0.0;
      }
    }
    d[i] = h;
  }
  for (int64_t i = 0; i < n - 1; ++i) {
    V(n - 1, i) = V(i, i);
    V(i, i) = 1.0;
    double h = d[i + 1];
    if (h != 0.0) {
      for (int64_t k = 0; k <= i; ++k) d[k] = V(k, i + 1) / h;
      for (int64_t j = 0; j <= i; ++j) {
        double g = 0.0;
        for (int64_t k = 0; k <= i; ++k) g += V(k, i + 1) * V(k, j);
        for (int64_t k = 0; k <= i; ++k) V(k, j) -= g * d[k];
      }
    }
    for (int64_t k = 0; k <= i; ++k) V(k, i + 1) = 0.0;
  }
  for (int64_t j = 0; j < n; ++j) { d[j] = V(n - 1, j); V(n - 1, j) = 0.0; }
  V(n - 1, n - 1) = 1.0;
  e[0] = 0.0;
  // tql2
  for (int64_t i = 1; i < n; ++i) e[i - 1] = e[i];
  e[n - 1] = 0.0;
  double f = 0.0, tst1 = 0.0;
  const double eps = std::ldexp(1.0, -52);
  for (int64_t l = 0; l < n; ++l) {
    tst1 = std::max(tst1, std::fabs(d[l]) + std::fabs(e[l]));
    int64_t m = l;
    while (m < n) {
      if (std::fabs(e[m]) <= eps * tst1) break;
      ++m;
    }
    if (m == n) m = n - 1;  // e[n-1] is 0: never taken for finite input
    if (m > l) {
      int iter = 0;
      do {
        if (++iter > 100) break;  // cannot happen for finite input; no endless loop regardless
        double g = d[l];
        double p = (d[l + 1] - g) / (2.0 * e[l]);
        double r = std::hypot(p, 1.0);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        double dl1 = d[l + 1];
        double h = g - d[l];
        for (int64_t i = l + 2; i < n; ++i) d[i] -= h;
        f += h;
        p = d[m];
        double c = 1.0, c2 = c, c3 = c, el1 = e[l + 1], s = 0.0, s2 = 0.0;
        for (int64_t i = m - 1; i >= l; --i) {
          c3 = c2; c2 = c; s2 = s;
          g = c * e[i];
          h = c * p;
          r = std::hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          double* vi = &Vs[i * n];
          double* vi1 = &Vs[(i + 1) * n];
          for (int64_t k = 0; k < n; ++k) {
            h = vi1[k];
            vi1[k] = s * vi[k] + c * h;
            vi[k] = c * vi[k] - s * h;
          }
        }
        p = -s * s2 * c3 * el1 * e[l] / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (std::fabs(e[l]) > eps * tst1);
    }
    d[l] = d[l] + f;
    e[l] = 0.0;
  }
  // Sort ascending, stable on ties (selection by index keeps the order deterministic).
  for (int64_t i = 0; i < n - 1; ++i) {
    int64_t k = i;
    double p = d[i];
    for (int64_t j = i + 1; j < n; ++j)
      if (d[j] < p) { k = j; p = d[j]; }
    if (k != i) {
      d[k] = d[i];
      d[i] = p;
      for (int64_t j = 0; j < n; ++j) std::swap(Vs[i * n + j], Vs[k * n + j]);
    }
  }
}

struct GramCtx {
  const void* X; DType xt; int64_t rows, cols; bool colsSide; int64_t k; double* G;
};

// G[a][b] for a in [a0, a1), b >= a (upper triangle; mirrored after).
void gramRows(void* c, int64_t a0, int64_t a1) {
  const GramCtx& g = *static_cast<const GramCtx*>(c);
  const int64_t L = g.colsSide ? g.rows : g.cols;  // summed dimension
  std::vector<double> xa(L), xb(L);
  auto load = [&](int64_t a, std::vector<double>& out) {
    for (int64_t i = 0; i < L; ++i)
      out[i] = g.colsSide ? loadAsFloat(g.X, g.xt, i * g.cols + a) : loadAsFloat(g.X, g.xt, a * g.cols + i);
  };
  for (int64_t a = a0; a < a1; ++a) {
    load(a, xa);
    for (int64_t b = a; b < g.k; ++b) {
      load(b, xb);
      double s = 0.0;
      for (int64_t i = 0; i < L; ++i) s += xa[i] * xb[i];
      g.G[a * g.k + b] = s;
    }
  }
}

}  // namespace

void gemm(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  GemmCtx k{&g, (g.N + NC - 1) / NC};
  const int64_t tiles = ((g.M + MC - 1) / MC) * k.tilesN;
  // One tile is MC*NC*K multiply-adds: parallel only when there is enough work to share.
  const int64_t grain = g.K * MC * NC >= (1 << 20) ? 1 : std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(1, g.K * MC * NC));
  parallelFor(tiles, grain, gemmTiles, &k);
}

bool finiteNonZero(const void* X, DType xt, int64_t n, bool* nonFinite) {
  bool nz = false;
  for (int64_t i = 0; i < n; ++i) {
    float x = loadAsFloat(X, xt, i);
    if (!isFiniteFloat(x)) { if (nonFinite) *nonFinite = true; return false; }
    if (x != 0.0f) nz = true;
  }
  if (nonFinite) *nonFinite = false;
  return nz;
}

bool topSingular(const void* X, DType xt, int64_t rows, int64_t cols, int64_t r, bool left, float* P,
                 bool hasPrev) {
  if (!finiteNonZero(X, xt, rows * cols, nullptr)) return false;
  const bool colsSide = cols <= rows;  // Gram of the smaller side: X^T X (cols) or X X^T (rows)
  const int64_t k = colsSide ? cols : rows;
  std::vector<double> G(size_t(k * k), 0.0);
  GramCtx gc{X, xt, rows, cols, colsSide, k, G.data()};
  parallelFor(k, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, k)), gramRows, &gc);
  for (int64_t a = 0; a < k; ++a)
    for (int64_t b = 0; b < a; ++b) G[a * k + b] = G[b * k + a];
  std::vector<double> d;
  symmetricEigen(k, G, d);  // G now holds eigenvectors as columns (column-major), ascending
  const bool wantCols = !left;  // right singular vectors live in the cols space
  const int64_t len = wantCols ? cols : rows;
  std::vector<double> vec(len);
  for (int64_t j = 0; j < r; ++j) {
    const double* ev = &G[(k - 1 - j) * k];  // j-th largest
    if (wantCols == colsSide) {
      for (int64_t i = 0; i < len; ++i) vec[i] = ev[i];
    } else {
      // Other side: u = X v (colsSide) or v = X^T u, then normalised.
      for (int64_t i = 0; i < len; ++i) {
        double s = 0.0;
        if (colsSide) for (int64_t b = 0; b < cols; ++b) s += double(loadAsFloat(X, xt, i * cols + b)) * ev[b];
        else for (int64_t a = 0; a < rows; ++a) s += double(loadAsFloat(X, xt, a * cols + i)) * ev[a];
        vec[i] = s;
      }
      double nrm = 0.0;
      for (double x : vec) nrm += x * x;
      nrm = std::sqrt(nrm);
      for (double& x : vec) x = nrm > 0 ? x / nrm : 0.0;
    }
    // The sign rule (DESIGN §4).
    auto at = [&](int64_t i) -> float& { return left ? P[i * r + j] : P[j * cols + i]; };
    double dot = 0.0;
    if (hasPrev) for (int64_t i = 0; i < len; ++i) dot += double(at(i)) * vec[i];
    bool flip;
    if (dot != 0.0) {
      flip = dot < 0.0;
    } else {
      int64_t best = 0;
      for (int64_t i = 1; i < len; ++i) if (std::fabs(vec[i]) > std::fabs(vec[best])) best = i;
      flip = vec[best] < 0.0;
    }
    for (int64_t i = 0; i < len; ++i) at(i) = float(flip ? -vec[i] : vec[i]);
  }
  return true;
}

}  // namespace cpu
}  // namespace slimopt
