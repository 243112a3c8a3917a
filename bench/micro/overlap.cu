// Microbenchmark: does a memory-bound kernel on a second stream run beside cuBLAS's TF32 GEMMs of a
// GaLore step (rank 512, DESIGN §6 shapes), or only after them? The step's NaN/Inf scan of the
// gradients it does not hold (0.46 ms at r = 512) and its Adam on R (0.75 ms) leave the tensor cores
// idle, the products (5.8 ms) leave DRAM half idle. Rows: each kernel alone, then both launched
// together (the memory kernel first, on its own stream), for a persistent memory kernel of 1 or 2
// blocks per SM and for one block per 64 KB chunk (as cuda/galore.cu's scan launches). Self-contained
// (cuBLAS by dlopen):
//
//   nvcc -O3 -gencode arch=compute_90a,code=sm_90a -cudart static -o /tmp/ov bench/micro/overlap.cu -ldl && /tmp/ov
//
// Times: median of 15 rounds, CUDA events on the first stream after it waited for the second.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "harness.cuh"

using micro::CreateFn;
using micro::median;
using micro::SetIntFn;
using micro::SgemmFn;

namespace {

// Sets *flag when any of n floats is not finite: 16-byte loads, 8 in flight per thread, grid-stride.
// Threads = 1024 (one block per SM: its registers fill the SM, so no two share one) for the scan on
// a few SMs beside a GEMM held to the others (cublasSetSmCountTarget).
template <int Threads>
__global__ void __launch_bounds__(Threads, Threads == 1024 ? 1 : 0) scanKernel(const float4* p, int64_t n4, int* flag) {
  bool bad = false;
  const int64_t stride = int64_t(gridDim.x) * Threads * 8;
  for (int64_t i = blockIdx.x * int64_t(Threads * 8) + threadIdx.x; i < n4; i += stride) {
    float4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) v[u] = i + Threads * u < n4 ? p[i + Threads * u] : make_float4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < 8; ++u) bad |= !isfinite(v[u].x + v[u].y + v[u].z + v[u].w);
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}
// Adam-shaped traffic: reads r, m, v, writes m, v, r (in place).
__global__ void __launch_bounds__(256) adamKernel(float4* r, float4* m, float4* v, int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t(256) + threadIdx.x; i < n4; i += int64_t(gridDim.x) * 256) {
    float4 a = r[i], b = m[i], c = v[i];
    b.x = 0.9f * b.x + 0.1f * a.x; b.y = 0.9f * b.y + 0.1f * a.y; b.z = 0.9f * b.z + 0.1f * a.z; b.w = 0.9f * b.w + 0.1f * a.w;
    c.x = 0.999f * c.x + 0.001f * a.x * a.x; c.y = 0.999f * c.y + 0.001f * a.y * a.y;
    c.z = 0.999f * c.z + 0.001f * a.z * a.z; c.w = 0.999f * c.w + 0.001f * a.w * a.w;
    m[i] = b; v[i] = c;
    r[i] = make_float4(b.x * rsqrtf(c.x + 1e-12f), b.y * rsqrtf(c.y + 1e-12f), b.z * rsqrtf(c.z + 1e-12f), b.w * rsqrtf(c.w + 1e-12f));
  }
}
// Positive values (Adam's v under the square root).
__global__ void fillKernel(float* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed;
    x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16;
    p[i] = scale * (float(x) * (1.0f / 4294967296.0f) + 0.5f);
  }
}

typedef int (*SetStreamFn)(void*, cudaStream_t);

}  // namespace

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  void* lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_LOCAL);
  if (!lib) { std::printf("no cuBLAS\n"); return 1; }
  void* h = nullptr;
  auto create = reinterpret_cast<CreateFn>(dlsym(lib, "cublasCreate_v2"));
  auto setMath = reinterpret_cast<SetIntFn>(dlsym(lib, "cublasSetMathMode"));
  auto setStream = reinterpret_cast<SetStreamFn>(dlsym(lib, "cublasSetStream_v2"));
  auto sgemm = reinterpret_cast<SgemmFn>(dlsym(lib, "cublasSgemm_v2"));
  create(&h); setMath(h, 3);
  cudaStream_t s1, s2;
  CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  setStream(h, s1);
  const int64_t M = 11008, N = 4096, r = 512;
  float *W, *G, *P, *R, *big, *m, *v;
  CK(cudaMalloc(&W, M * N * 4)); CK(cudaMalloc(&G, M * N * 4)); CK(cudaMalloc(&P, r * N * 4)); CK(cudaMalloc(&R, M * r * 4));
  const int64_t nBig = 512LL << 20;  // 2 GiB of floats to scan
  CK(cudaMalloc(&big, nBig * 4));
  const int64_t nAdam = 64LL << 20;
  CK(cudaMalloc(&m, nAdam * 4)); CK(cudaMalloc(&v, nAdam * 4));
  float* rr; CK(cudaMalloc(&rr, nAdam * 4));
  fillKernel<<<1024, 256>>>(W, M * N, 1, 1.0f); fillKernel<<<1024, 256>>>(G, M * N, 2, 1.0f);
  fillKernel<<<1024, 256>>>(P, r * N, 3, 0.01f); fillKernel<<<1024, 256>>>(R, M * r, 4, 0.01f);
  fillKernel<<<1024, 256>>>(big, nBig, 5, 1.0f); fillKernel<<<1024, 256>>>(m, nAdam, 6, 1.0f);
  fillKernel<<<1024, 256>>>(v, nAdam, 7, 1.0f); fillKernel<<<1024, 256>>>(rr, nAdam, 8, 1.0f);
  int* flag; CK(cudaMalloc(&flag, 4));
  CK(cudaDeviceSynchronize());
  const float one = 1.0f, zero = 0.0f, minus = -1e-3f;
  // The step's two GEMM kinds, 4 of each (a few ms of products).
  auto project = [&]() {  // R (M x r) = G P^T: "tn"
    for (int i = 0; i < 4; ++i) sgemm(h, 1, 0, int(r), int(M), int(N), &one, P, int(N), G, int(N), &zero, R, int(r));
  };
  auto back = [&]() {  // W += c R P: "nn"
    for (int i = 0; i < 4; ++i) sgemm(h, 0, 0, int(N), int(M), int(r), &minus, P, int(N), R, int(r), &one, W, int(N));
  };
  auto scan = [&](int grid, int64_t n) { scanKernel<256><<<grid, 256, 0, s2>>>((const float4*)big, n / 4, flag); };
  auto adam = [&](int grid) { adamKernel<<<grid, 256, 0, s2>>>((float4*)rr, (float4*)m, (float4*)v, nAdam / 4); };
  cudaEvent_t a, b, fork, join;
  CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b)); CK(cudaEventCreate(&fork)); CK(cudaEventCreate(&join));
  auto time = [&](auto work) {
    std::vector<double> us;
    for (int i = 0; i < 17; ++i) {
      CK(cudaEventRecord(a, s1));
      CK(cudaEventRecord(fork, s1));
      CK(cudaStreamWaitEvent(s2, fork, 0));
      work();
      CK(cudaEventRecord(join, s2));
      CK(cudaStreamWaitEvent(s1, join, 0));
      CK(cudaEventRecord(b, s1));
      CK(cudaEventSynchronize(b));
      CK(cudaGetLastError());
      float t; CK(cudaEventElapsedTime(&t, a, b));
      if (i >= 2) us.push_back(t * 1e3);
    }
    return median(us);
  };
  const int64_t nScan = 480LL << 20;  // ~1.9 GB: the step's scan at r = 512
  std::printf("{\"rows\": [\n");
  bool first = true;  // rows are separated by a comma before each but the first
  auto row = [&](const char* name, double us) {
    std::printf("%s  {\"case\": \"%s\", \"us\": %.1f}", first ? "" : ",\n", name, us);
    first = false;
    std::fflush(stdout);
  };
  row("4 projections 11008x4096 -> r512 (tn)", time([&] { project(); }));
  row("4 project-backs 11008x4096 r512 (nn)", time([&] { back(); }));
  const int chunkGrid = int(nScan / 16384);
  for (int grid : {sms, 2 * sms, 4 * sms, chunkGrid}) {
    char name[160];
    std::snprintf(name, sizeof name, "scan 1.9 GB, grid %d, alone", grid);
    row(name, time([&] { scan(grid, nScan); }));
    std::snprintf(name, sizeof name, "scan 1.9 GB, grid %d, beside 4 projections", grid);
    row(name, time([&] { scan(grid, nScan); project(); }));
    std::snprintf(name, sizeof name, "scan 1.9 GB, grid %d, beside 4 project-backs", grid);
    row(name, time([&] { scan(grid, nScan); back(); }));
  }
  for (int grid : {sms, 2 * sms, 8 * sms}) {
    char name[160];
    std::snprintf(name, sizeof name, "adam 64M floats (1.6 GB), grid %d, alone", grid);
    row(name, time([&] { adam(grid); }));
    std::snprintf(name, sizeof name, "adam 64M floats, grid %d, beside 4 project-backs", grid);
    row(name, time([&] { adam(grid); back(); }));
    std::snprintf(name, sizeof name, "adam 64M floats, grid %d, beside 4 projections", grid);
    row(name, time([&] { adam(grid); project(); }));
  }
  // SMs split: the products held to sms - k SMs, the scan on k others, launched first.
  auto setSms = reinterpret_cast<SetIntFn>(dlsym(lib, "cublasSetSmCountTarget"));
  if (setSms) {
    for (int k : {16, 24, 32, 44}) {
      char name[160];
      std::snprintf(name, sizeof name, "scan 1.9 GB on %d SMs (1024-thread blocks), alone", k);
      row(name, time([&] { scanKernel<1024><<<k, 1024, 0, s2>>>((const float4*)big, nScan / 4, flag); }));
      if (setSms(h, sms - k) != 0) { std::printf(",\n  {\"case\": \"cublasSetSmCountTarget failed\"}"); break; }
      std::snprintf(name, sizeof name, "4 projections on %d SMs, alone", sms - k);
      row(name, time([&] { project(); }));
      std::snprintf(name, sizeof name, "scan 1.9 GB on %d SMs beside 4 projections on %d", k, sms - k);
      row(name, time([&] { scanKernel<1024><<<k, 1024, 0, s2>>>((const float4*)big, nScan / 4, flag); project(); }));
      std::snprintf(name, sizeof name, "4 project-backs on %d SMs, alone", sms - k);
      row(name, time([&] { back(); }));
      std::snprintf(name, sizeof name, "scan 1.9 GB on %d SMs beside 4 project-backs on %d", k, sms - k);
      row(name, time([&] { scanKernel<1024><<<k, 1024, 0, s2>>>((const float4*)big, nScan / 4, flag); back(); }));
      setSms(h, 0);
    }
  }
  std::printf("\n]}\n");
  return 0;
}
