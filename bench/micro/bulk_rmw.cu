// Microbenchmark: how fast can a kernel read-modify-write a large f32 matrix W (GaLore's
// project-back, W <- beta W + x with x computed in the kernel) when the bytes move by the Hopper
// bulk-copy engine instead of per-thread loads and stores? Self-contained:
//
//   nvcc -O3 -arch=sm_90a -o /tmp/bulk bench/micro/bulk_rmw.cu && /tmp/bulk
//
// W is 11008 x 4096 f32 (the §6 workload's largest matrix, 180 MB, beyond L2); four such buffers
// rotate so no launch finds its W in L2. Every kernel adds a value it makes itself (no second
// input), so the traffic is W read once and written once. Median of 20 launches (CUDA events);
// fraction = 2 x bytes(W) / time over the bandwidth of a plain copy of the same buffers.
//   copy     float4 copy W -> W' (the reference)
//   rmw      float4 loads, four per thread in flight, then four stores
//   red      red.global.add.v4.f32 from registers (W += x; the L2 does the add)
//   bulkred  tiles of TR x 128 filled in shared memory, added to W by
//            cp.reduce.async.bulk.global.shared::cta.add.f32 (one 512-byte row segment per op)
//   bulkrmw  tiles loaded by cp.async.bulk (mbarrier, S stages), W' = beta W + x in shared memory,
//            stored by cp.async.bulk (the store's shared reads are waited for before a stage is
//            refilled)
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "check.cuh"

namespace {

constexpr int64_t kRows = 11008, kCols = 4096, kN = kRows * kCols;
constexpr int kBufs = 4, kReps = 20;

__device__ __forceinline__ float valueAt(int64_t i) { return 1e-7f * float(i & 1023); }

__global__ void copyKernel(const float4* __restrict__ s, float4* __restrict__ d, int64_t nv) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nv; i += int64_t(gridDim.x) * blockDim.x)
    d[i] = s[i];
}

__global__ void __launch_bounds__(256) rmwKernel(float4* __restrict__ w, int64_t nv, float beta) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t base = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; base < nv; base += 4 * stride) {
    float4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) if (base + u * stride < nv) v[u] = w[base + u * stride];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int64_t i = base + u * stride;
      if (i < nv) {
        const float x = valueAt(i);
        w[i] = make_float4(beta * v[u].x + x, beta * v[u].y + x, beta * v[u].z + x, beta * v[u].w + x);
      }
    }
  }
}

__global__ void redKernel(float4* __restrict__ w, int64_t nv) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nv; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = valueAt(i);
    asm volatile("red.global.add.v4.f32 [%0], {%1,%2,%3,%4};" ::"l"(w + i), "f"(x), "f"(x), "f"(x), "f"(x) : "memory");
  }
}

constexpr int kTileCols = 128;

__device__ __forceinline__ uint32_t smemAddr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

// Tiles of TR x 128 in row-major order of tiles: tile t covers rows (t / tilesPerRow) * TR.., cols
// (t % tilesPerRow) * 128.. . Two shared buffers; warp 0's lanes issue one row each.
template <int TR>
__global__ void __launch_bounds__(256) bulkRedKernel(float* __restrict__ w, int64_t numTiles) {
  extern __shared__ __align__(128) float sm[];
  const int tilesPerRow = int(kCols / kTileCols);
  int iter = 0;
  for (int64_t t = blockIdx.x; t < numTiles; t += gridDim.x, ++iter) {
    float* buf = sm + (iter & 1) * TR * kTileCols;
    if (threadIdx.x < 32) asm volatile("cp.async.bulk.wait_group.read 1;" ::: "memory");
    __syncthreads();
    const int64_t r0 = (t / tilesPerRow) * TR, c0 = (t % tilesPerRow) * kTileCols;
    for (int e = threadIdx.x; e < TR * kTileCols; e += blockDim.x)
      buf[e] = valueAt((r0 + e / kTileCols) * kCols + c0 + e % kTileCols);
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
    if (threadIdx.x < 32) {
      for (int r = threadIdx.x; r < TR; r += 32)
        asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;"
                     ::"l"(w + (r0 + r) * kCols + c0), "r"(smemAddr(buf + r * kTileCols)), "n"(kTileCols * 4) : "memory");
      asm volatile("cp.async.bulk.commit_group;" ::: "memory");
    }
  }
  if (threadIdx.x < 32) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}

__device__ __forceinline__ void mbarWait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra WAIT_%=;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}

template <int TR, int S>
__global__ void __launch_bounds__(256) bulkRmwKernel(float* __restrict__ w, int64_t numTiles, float beta) {
  extern __shared__ __align__(128) float sm[];
  __shared__ __align__(8) uint64_t bars[S];
  const int tilesPerRow = int(kCols / kTileCols);
  constexpr uint32_t kTileBytes = TR * kTileCols * 4;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smemAddr(&bars[s])));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  // Lane l of warp 0 moves rows l, l + 32, ...; lane 0 also arms the barrier.
  auto issueLoad = [&](int64_t t, int s) {
    const int64_t r0 = (t / tilesPerRow) * TR, c0 = (t % tilesPerRow) * kTileCols;
    const uint32_t bar = smemAddr(&bars[s]);
    if (threadIdx.x == 0) asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(kTileBytes) : "memory");
    __syncwarp();
    for (int r = threadIdx.x; r < TR; r += 32)
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                   ::"r"(smemAddr(sm + (s * TR + r) * kTileCols)), "l"(w + (r0 + r) * kCols + c0), "n"(kTileCols * 4), "r"(bar)
                   : "memory");
  };
  if (threadIdx.x < 32)
    for (int j = 0; j < S - 1; ++j)
      if (blockIdx.x + j * int64_t(gridDim.x) < numTiles) issueLoad(blockIdx.x + j * int64_t(gridDim.x), j);
  int iter = 0;
  for (int64_t t = blockIdx.x; t < numTiles; t += gridDim.x, ++iter) {
    const int s = iter % S;
    mbarWait(smemAddr(&bars[s]), uint32_t((iter / S) & 1));
    float* buf = sm + s * TR * kTileCols;
    const int64_t r0 = (t / tilesPerRow) * TR, c0 = (t % tilesPerRow) * kTileCols;
    for (int e = threadIdx.x; e < TR * kTileCols; e += blockDim.x)
      buf[e] = beta * buf[e] + valueAt((r0 + e / kTileCols) * kCols + c0 + e % kTileCols);
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
    if (threadIdx.x < 32) {
      for (int r = threadIdx.x; r < TR; r += 32)
        asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;"
                     ::"l"(w + (r0 + r) * kCols + c0), "r"(smemAddr(buf + r * kTileCols)), "n"(kTileCols * 4) : "memory");
      asm volatile("cp.async.bulk.commit_group;" ::: "memory");
      // The stage refilled next was stored one iteration ago: its shared reads must be done.
      asm volatile("cp.async.bulk.wait_group.read 1;" ::: "memory");
      __syncwarp();
      const int64_t next = t + int64_t(S - 1) * gridDim.x;
      if (next < numTiles) issueLoad(next, (iter + S - 1) % S);
    }
  }
  if (threadIdx.x < 32) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}

double median(std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }

template <class F>
double timeIt(F launch) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  std::vector<double> ms;
  for (int i = 0; i < kReps + 2; ++i) {
    CK(cudaEventRecord(a));
    launch(i % kBufs);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    CK(cudaGetLastError());
    float t; CK(cudaEventElapsedTime(&t, a, b));
    if (i >= 2) ms.push_back(t);
  }
  return median(ms);
}

}  // namespace

int main() {
  int dev = 0, sms = 0;
  CK(cudaSetDevice(dev));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, dev));
  std::vector<float*> w(kBufs), w2(kBufs);
  for (int i = 0; i < kBufs; ++i) {
    CK(cudaMalloc(&w[i], kN * 4)); CK(cudaMalloc(&w2[i], kN * 4));
    CK(cudaMemset(w[i], 0, kN * 4));
  }
  const double bytes = 2.0 * kN * 4;
  const int64_t nv = kN / 4;
  const double copyMs = timeIt([&](int b) { copyKernel<<<sms * 8, 256>>>((const float4*)w[b], (float4*)w2[b], nv); });
  const double copyGBps = bytes / copyMs * 1e-6;
  std::printf("{\"device\": \"%s\", \"matrix\": [%lld, %lld], \"copyGBps\": %.0f, \"rows\": [\n", prop.name,
              (long long)kRows, (long long)kCols, copyGBps);
  auto row = [&](const char* name, double ms, bool last = false) {
    std::printf("  {\"kernel\": \"%s\", \"us\": %.1f, \"fracOfCopy\": %.3f}%s\n", name, ms * 1e3, copyMs / ms, last ? "" : ",");
  };
  row("copy", copyMs);
  for (int occ : {4, 8})
    row(occ == 4 ? "rmw occ4" : "rmw occ8", timeIt([&](int b) { rmwKernel<<<sms * occ, 256>>>((float4*)w[b], nv, 0.999f); }));
  row("red.v4", timeIt([&](int b) { redKernel<<<sms * 8, 256>>>((float4*)w[b], nv); }));
  {
    auto run = [&](auto kernel, int tr, int perSm, const char* name) {
      const int64_t tiles = (kRows / tr) * (kCols / kTileCols);
      const size_t smem = size_t(2) * tr * kTileCols * 4;
      CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      row(name, timeIt([&](int b) { kernel<<<sms * perSm, 256, smem>>>(w[b], tiles); }));
    };
    run(bulkRedKernel<32>, 32, 2, "bulkred TR32 2/SM");
    run(bulkRedKernel<64>, 64, 1, "bulkred TR64 1/SM");
    run(bulkRedKernel<64>, 64, 2, "bulkred TR64 2/SM");
  }
  {
    auto run = [&](auto kernel, int tr, int s, int perSm, const char* name, bool last = false) {
      const int64_t tiles = (kRows / tr) * (kCols / kTileCols);
      const size_t smem = size_t(s) * tr * kTileCols * 4;
      CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      row(name, timeIt([&](int b) { kernel<<<sms * perSm, 256, smem>>>(w[b], tiles, 0.999f); }), last);
    };
    run(bulkRmwKernel<32, 4>, 32, 4, 1, "bulkrmw TR32 S4 1/SM");
    run(bulkRmwKernel<32, 4>, 32, 4, 2, "bulkrmw TR32 S4 2/SM");
    run(bulkRmwKernel<64, 3>, 64, 3, 1, "bulkrmw TR64 S3 1/SM");
    run(bulkRmwKernel<32, 6>, 32, 6, 1, "bulkrmw TR32 S6 1/SM", true);
  }
  std::printf("]}\n");
  return 0;
}
