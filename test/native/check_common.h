// What the native checks (test/native/*_check.cu) share: the pass/fail tally, relative error,
// CUDA status checks, host <-> device copies, random data and dtype conversions on the host.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
#include "../../cuda/launchers.h"

namespace nativecheck {

using namespace slimopt;

inline int failures = 0;
inline bool quietPasses = false;  // print failures only (large sweeps)
inline std::mt19937 rng(7);       // a check may reseed it first thing in main()

inline double relErr(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) { double d = double(a[i]) - b[i]; num += d * d; den += double(b[i]) * b[i]; }
  return std::sqrt(num / (den > 0 ? den : 1));
}
inline void check(const char* what, double err, double tol) {
  bool ok = err <= tol && std::isfinite(err);
  if (!ok || !quietPasses) std::printf("%-80s rel %.3g (tol %.0e) %s\n", what, err, tol, ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}
inline void checkEq(const char* what, bool eq) {
  if (!eq || !quietPasses) std::printf("%-80s %s\n", what, eq ? "identical" : "DIFFERENT: FAIL");
  if (!eq) ++failures;
}
inline void must(const gpu::Status& s, const char* what) {
  if (!s.ok()) { std::printf("CUDA failure in %s: %s %s\n", what, s.name.c_str(), s.message.c_str()); std::exit(2); }
}
inline void* devAlloc(size_t bytes) { void* p; must(gpu::alloc(0, bytes + 16, &p), "alloc"); return p; }
template <class T> T* dev(const std::vector<T>& h) {
  T* p = static_cast<T*>(devAlloc(h.size() * sizeof(T)));
  if (!h.empty()) must(gpu::copyHtoD(0, p, h.data(), h.size() * sizeof(T)), "HtoD");
  return p;
}
template <class T> std::vector<T> host(const T* p, size_t n) {
  std::vector<T> h(n); if (n) must(gpu::copyDtoH(0, h.data(), p, n * sizeof(T)), "DtoH"); return h;
}
inline std::vector<float> normals(size_t n, float s = 1) {
  std::normal_distribution<float> d(0, s); std::vector<float> v(n); for (auto& x : v) x = d(rng); return v;
}
// Values stored as dtype d (raw bytes), from f32; and back.
inline std::vector<uint8_t> asDtype(const std::vector<float>& x, DType d) {
  std::vector<uint8_t> out(x.size() * dtypeSize(d));
  for (size_t i = 0; i < x.size(); ++i) storeFromFloat(out.data(), d, int64_t(i), x[i]);
  return out;
}
inline std::vector<float> toF32(const std::vector<uint8_t>& raw, DType d) {
  std::vector<float> out(raw.size() / dtypeSize(d));
  for (size_t i = 0; i < out.size(); ++i) out[i] = loadAsFloat(raw.data(), d, int64_t(i));
  return out;
}

}  // namespace nativecheck
