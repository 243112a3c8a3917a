// Microbenchmark: how close to the copy bandwidth can a streaming kernel get when it reads and
// writes unequal amounts (issue #3's quantize / dequantize: f32 -> u8 reads 4 B and writes 1,
// u8 -> f32 reads 1 and writes 4), and do cache hints on the loads or the stores change that?
// Self-contained (no project headers):
//
//   nvcc -O3 -arch=sm_90 -o /tmp/mix bench/micro/stream_mix.cu && /tmp/mix
//
// Each kernel is the shape of cuda/quant.cu's dequantize: a persistent grid (occupancy x SMs) of
// 256 threads, each thread turning 4 groups per round (loads of all 4 first, then the stores);
// a group is one 16-byte access on the wide side. The element conversion is trivial (a scale),
// so the kernels are bound by memory only. 256M elements, far beyond L2 (60 MB); two buffer sets
// alternate. Median of 20 launches, CUDA events; fraction = (bytes read + written) / time over
// the 1 GiB copy kernel's bandwidth of the same run.
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "check.cuh"

namespace {

enum { LD_DEF = 0, LD_CS = 1, LD_NC = 2 };
enum { ST_DEF = 0, ST_CS = 1, ST_NA = 2 };
constexpr int kThreads = 256, kUnroll = 4;

template <int H>
__device__ __forceinline__ uint32_t ld32(const uint32_t* p) {
  uint32_t v;
  if (H == LD_CS) asm volatile("ld.global.cs.u32 %0, [%1];" : "=r"(v) : "l"(p));
  else if (H == LD_NC) v = __ldg(p);
  else v = *p;
  return v;
}
template <int H>
__device__ __forceinline__ uint4 ld128(const uint4* p) {
  uint4 v;
  if (H == LD_CS) asm volatile("ld.global.cs.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  else if (H == LD_NC) v = __ldg(p);
  else v = *p;
  return v;
}
template <int H>
__device__ __forceinline__ void st128(uint4* p, uint4 v) {
  if (H == ST_CS) asm volatile("st.global.cs.v4.u32 [%0], {%1,%2,%3,%4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
  else if (H == ST_NA) asm volatile("st.global.L1::no_allocate.v4.u32 [%0], {%1,%2,%3,%4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
  else *p = v;
}
template <int H>
__device__ __forceinline__ void st32(uint32_t* p, uint32_t v) {
  if (H == ST_CS) asm volatile("st.global.cs.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
  else if (H == ST_NA) asm volatile("st.global.L1::no_allocate.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
  else *p = v;
}

__device__ __forceinline__ uint32_t f2(uint32_t b, float s) { return __float_as_uint(float(b) * s); }

// "expand": 4 bytes in -> 16 bytes out per group (dequantize u8 -> f32).
template <int LDH, int STH>
__global__ void __launch_bounds__(kThreads) expandKernel(const uint32_t* __restrict__ in, uint4* __restrict__ out,
                                                         int64_t groups, float s) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < groups; i += kUnroll * stride) {
    uint32_t w[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) w[j] = ld32<LDH>(in + i + j * stride);
#pragma unroll
    for (int j = 0; j < kUnroll; ++j)
      st128<STH>(out + i + j * stride, make_uint4(f2(w[j] & 255, s), f2((w[j] >> 8) & 255, s), f2((w[j] >> 16) & 255, s),
                                                  f2(w[j] >> 24, s)));
  }
  for (; i < groups; i += stride) {
    const uint32_t w = in[i];
    out[i] = make_uint4(f2(w & 255, s), f2((w >> 8) & 255, s), f2((w >> 16) & 255, s), f2(w >> 24, s));
  }
}

// "expand2": 8 bytes in -> 16 bytes out per group (dequantize u8 -> bf16).
template <int LDH, int STH>
__global__ void __launch_bounds__(kThreads) expand2Kernel(const uint2* __restrict__ in, uint4* __restrict__ out,
                                                          int64_t groups, uint32_t s) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < groups; i += kUnroll * stride) {
    uint2 w[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) w[j] = LDH == LD_NC ? __ldg(in + i + j * stride) : in[i + j * stride];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j)
      st128<STH>(out + i + j * stride, make_uint4(w[j].x ^ s, w[j].y ^ s, (w[j].x >> 1) ^ s, (w[j].y >> 1) ^ s));
  }
  for (; i < groups; i += stride) out[i] = make_uint4(in[i].x ^ s, in[i].y ^ s, (in[i].x >> 1) ^ s, (in[i].y >> 1) ^ s);
}

// "shrink": 16 bytes in -> 4 bytes out per group (quantize f32 -> u8).
template <int LDH, int STH>
__global__ void __launch_bounds__(kThreads) shrinkKernel(const uint4* __restrict__ in, uint32_t* __restrict__ out,
                                                         int64_t groups) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < groups; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) v[j] = ld128<LDH>(in + i + j * stride);
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) st32<STH>(out + i + j * stride, __byte_perm(__byte_perm(v[j].x, v[j].y, 0x0073), __byte_perm(v[j].z, v[j].w, 0x0073), 0x5410));
  }
  for (; i < groups; i += stride) out[i] = in[i].x ^ in[i].w;
}

// "copy": 16 bytes in -> 16 out (the reference shape, same loop).
template <int LDH, int STH>
__global__ void __launch_bounds__(kThreads) copyKernel(const uint4* __restrict__ in, uint4* __restrict__ out, int64_t groups) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < groups; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) v[j] = ld128<LDH>(in + i + j * stride);
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) st128<STH>(out + i + j * stride, v[j]);
  }
  for (; i < groups; i += stride) out[i] = in[i];
}

// One-shot grids (not persistent): block b owns groups [b*256*U, (b+1)*256*U), U per thread at
// stride 256 (all loads first): the shape of the copy probe, with U accesses per thread.
template <int U, int STH>
__global__ void __launch_bounds__(kThreads) expandShot(const uint32_t* __restrict__ in, uint4* __restrict__ out,
                                                       int64_t groups, float s) {
  const int64_t i0 = int64_t(blockIdx.x) * kThreads * U + threadIdx.x;
  uint32_t w[U];
#pragma unroll
  for (int j = 0; j < U; ++j) w[j] = i0 + j * kThreads < groups ? __ldg(in + i0 + j * kThreads) : 0u;
#pragma unroll
  for (int j = 0; j < U; ++j)
    if (i0 + j * kThreads < groups)
      st128<STH>(out + i0 + j * kThreads, make_uint4(f2(w[j] & 255, s), f2((w[j] >> 8) & 255, s),
                                                     f2((w[j] >> 16) & 255, s), f2(w[j] >> 24, s)));
}
template <int U, int STH>
__global__ void __launch_bounds__(kThreads) expand2Shot(const uint2* __restrict__ in, uint4* __restrict__ out,
                                                        int64_t groups, uint32_t s) {
  const int64_t i0 = int64_t(blockIdx.x) * kThreads * U + threadIdx.x;
  uint2 w[U];
#pragma unroll
  for (int j = 0; j < U; ++j) w[j] = i0 + j * kThreads < groups ? __ldg(in + i0 + j * kThreads) : make_uint2(0, 0);
#pragma unroll
  for (int j = 0; j < U; ++j)
    if (i0 + j * kThreads < groups)
      st128<STH>(out + i0 + j * kThreads, make_uint4(w[j].x ^ s, w[j].y ^ s, (w[j].x >> 1) ^ s, (w[j].y >> 1) ^ s));
}
template <int U>
__global__ void __launch_bounds__(kThreads) shrinkShot(const uint4* __restrict__ in, uint32_t* __restrict__ out,
                                                       int64_t groups) {
  const int64_t i0 = int64_t(blockIdx.x) * kThreads * U + threadIdx.x;
  uint4 v[U];
#pragma unroll
  for (int j = 0; j < U; ++j) v[j] = i0 + j * kThreads < groups ? __ldg(in + i0 + j * kThreads) : make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int j = 0; j < U; ++j)
    if (i0 + j * kThreads < groups)
      out[i0 + j * kThreads] = __byte_perm(__byte_perm(v[j].x, v[j].y, 0x0073), __byte_perm(v[j].z, v[j].w, 0x0073), 0x5410);
}

// Persistent grid, but each round a block takes the next contiguous chunk of 256*U groups (chunk
// = blockIdx + k*grid): the blocks in flight cover one contiguous window, as a one-shot grid's do.
template <int U, int STH>
__global__ void __launch_bounds__(kThreads) expandChunk(const uint32_t* __restrict__ in, uint4* __restrict__ out,
                                                        int64_t groups, float s) {
  for (int64_t ch = blockIdx.x;; ch += gridDim.x) {
    const int64_t i0 = ch * kThreads * U + threadIdx.x;
    if (i0 - threadIdx.x >= groups) break;
    uint32_t w[U];
#pragma unroll
    for (int j = 0; j < U; ++j) w[j] = i0 + j * kThreads < groups ? __ldg(in + i0 + j * kThreads) : 0u;
#pragma unroll
    for (int j = 0; j < U; ++j)
      if (i0 + j * kThreads < groups)
        st128<STH>(out + i0 + j * kThreads, make_uint4(f2(w[j] & 255, s), f2((w[j] >> 8) & 255, s),
                                                       f2((w[j] >> 16) & 255, s), f2(w[j] >> 24, s)));
  }
}

// Plain one-access-per-thread copy over the whole buffer (the project's copy probe): the floor.
__global__ void copyVec(float4* __restrict__ d, const float4* __restrict__ s, int64_t nv) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < nv) d[i] = s[i];
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double timeMs(F launch) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < 24; ++i) {
    CK(cudaEventRecord(a));
    launch(i & 1);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    if (i >= 4) t.push_back(ms);
  }
  CK(cudaGetLastError());
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return median(t);
}

template <typename K>
int persistentGrid(K k, int sms) {
  int occ = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k, kThreads, 0));
  return occ * sms;
}

}  // namespace

int main() {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  std::printf("device %s, %d SMs, L2 %d MB\n", prop.name, sms, prop.l2CacheSize >> 20);
  const int64_t n = int64_t(256) << 20;  // elements
  uint8_t *a[2], *b[2];
  for (int k = 0; k < 2; ++k) {
    CK(cudaMalloc(&a[k], n * 4));
    CK(cudaMalloc(&b[k], n * 4));
    CK(cudaMemset(a[k], 0x11, n * 4));
    CK(cudaMemset(b[k], 0, n * 4));
  }
  const int64_t nv = n * 4 / 16;
  const double copyMs = timeMs([&](int k) { copyVec<<<unsigned((nv + 255) / 256), 256>>>((float4*)b[k], (const float4*)a[k], nv); });
  const double copyGBps = 2.0 * n * 4 / (copyMs * 1e6);
  std::printf("copy kernel (1 GiB read + 1 GiB written): %.0f GB/s\n\n", copyGBps);
  std::printf("%-10s %-14s %10s %10s %8s\n", "shape", "hints", "ms", "GB/s", "frac");
  auto row = [&](const char* shape, const char* hints, double bytes, double ms) {
    std::printf("%-10s %-14s %10.4f %10.0f %8.3f\n", shape, hints, ms, bytes / (ms * 1e6), bytes / (ms * 1e6) / copyGBps);
    std::fflush(stdout);
  };
#define EXPAND(L, S, name)                                                                                         \
  {                                                                                                                \
    auto k = expandKernel<L, S>;                                                                                   \
    const int g = persistentGrid(k, sms);                                                                          \
    row("u8->f32", name, double(n) * 5, timeMs([&](int j) { k<<<g, kThreads>>>((const uint32_t*)a[j], (uint4*)b[j], n / 4, 0.5f); })); \
  }
  EXPAND(LD_NC, ST_DEF, "ldg");
  EXPAND(LD_NC, ST_CS, "ldg+stcs");
  EXPAND(LD_NC, ST_NA, "ldg+stna");
  EXPAND(LD_CS, ST_CS, "ldcs+stcs");
  EXPAND(LD_DEF, ST_DEF, "plain");
#define EXPAND2(L, S, name)                                                                                        \
  {                                                                                                                \
    auto k = expand2Kernel<L, S>;                                                                                  \
    const int g = persistentGrid(k, sms);                                                                          \
    row("u8->16b", name, double(n) * 3, timeMs([&](int j) { k<<<g, kThreads>>>((const uint2*)a[j], (uint4*)b[j], n / 8, 7u); })); \
  }
  EXPAND2(LD_NC, ST_DEF, "ldg");
  EXPAND2(LD_NC, ST_CS, "ldg+stcs");
#define SHRINK(L, S, name)                                                                                         \
  {                                                                                                                \
    auto k = shrinkKernel<L, S>;                                                                                   \
    const int g = persistentGrid(k, sms);                                                                          \
    row("f32->u8", name, double(n) * 5, timeMs([&](int j) { k<<<g, kThreads>>>((const uint4*)a[j], (uint32_t*)b[j], n / 4); })); \
  }
  SHRINK(LD_NC, ST_DEF, "ldg");
  SHRINK(LD_CS, ST_DEF, "ldcs");
  SHRINK(LD_NC, ST_CS, "ldg+stcs");
#define COPY(L, S, name)                                                                                           \
  {                                                                                                                \
    auto k = copyKernel<L, S>;                                                                                     \
    const int g = persistentGrid(k, sms);                                                                          \
    row("f32->f32", name, double(n) * 8, timeMs([&](int j) { k<<<g, kThreads>>>((const uint4*)a[j], (uint4*)b[j], n / 4); })); \
  }
  {
    auto run = [&](auto k, int U, const char* shape, const char* name, double bytes, int64_t groups, auto... args) {
      const unsigned g = unsigned((groups + int64_t(kThreads) * U - 1) / (int64_t(kThreads) * U));
      (void)sizeof...(args);
      row(shape, name, bytes, timeMs([&](int j) { k<<<g, kThreads>>>(args(j)...); }));
    };
    auto inU32 = [&](int j) { return (const uint32_t*)a[j]; };
    auto inU2 = [&](int j) { return (const uint2*)a[j]; };
    auto inU4 = [&](int j) { return (const uint4*)a[j]; };
    auto outU4 = [&](int j) { return (uint4*)b[j]; };
    auto outU32 = [&](int j) { return (uint32_t*)b[j]; };
    auto g4 = [&](int) { return n / 4; };
    auto g8 = [&](int) { return n / 8; };
    auto half = [&](int) { return 0.5f; };
    auto seven = [&](int) { return 7u; };
    run(expandShot<1, ST_DEF>, 1, "u8->f32", "shot U1", double(n) * 5, n / 4, inU32, outU4, g4, half);
    run(expandShot<2, ST_DEF>, 2, "u8->f32", "shot U2", double(n) * 5, n / 4, inU32, outU4, g4, half);
    run(expandShot<4, ST_DEF>, 4, "u8->f32", "shot U4", double(n) * 5, n / 4, inU32, outU4, g4, half);
    run(expandShot<8, ST_DEF>, 8, "u8->f32", "shot U8", double(n) * 5, n / 4, inU32, outU4, g4, half);
    run(expandShot<2, ST_CS>, 2, "u8->f32", "shot U2 stcs", double(n) * 5, n / 4, inU32, outU4, g4, half);
    run(expandShot<4, ST_CS>, 4, "u8->f32", "shot U4 stcs", double(n) * 5, n / 4, inU32, outU4, g4, half);
    {
      auto pg = [&](auto k, int U, const char* name) {
        const int g = persistentGrid(k, sms);
        row("u8->f32", name, double(n) * 5, timeMs([&](int j) { k<<<g, kThreads>>>((const uint32_t*)a[j], (uint4*)b[j], n / 4, 0.5f); }));
        (void)U;
      };
      pg(expandChunk<1, ST_DEF>, 1, "chunk U1");
      pg(expandChunk<2, ST_DEF>, 2, "chunk U2");
      pg(expandChunk<4, ST_DEF>, 4, "chunk U4");
      pg(expandChunk<4, ST_CS>, 4, "chunk U4 stcs");
    }
    run(expand2Shot<1, ST_DEF>, 1, "u8->16b", "shot U1", double(n) * 3, n / 8, inU2, outU4, g8, seven);
    run(expand2Shot<2, ST_DEF>, 2, "u8->16b", "shot U2", double(n) * 3, n / 8, inU2, outU4, g8, seven);
    run(expand2Shot<4, ST_DEF>, 4, "u8->16b", "shot U4", double(n) * 3, n / 8, inU2, outU4, g8, seven);
    run(shrinkShot<1>, 1, "f32->u8", "shot U1", double(n) * 5, n / 4, inU4, outU32, g4);
    run(shrinkShot<4>, 4, "f32->u8", "shot U4", double(n) * 5, n / 4, inU4, outU32, g4);
  }
  COPY(LD_NC, ST_DEF, "ldg");
  COPY(LD_NC, ST_CS, "ldg+stcs");
  COPY(LD_CS, ST_CS, "ldcs+stcs");
  return 0;
}
