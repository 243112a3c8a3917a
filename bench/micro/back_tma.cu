// Microbenchmark: the warp-specialised TMA project-back of back_tma.cuh (its variants) against
// cublasSgemm (TF32 math) on GaLore's long-K shapes, one product at a time and as the 28
// project-backs of a DESIGN §6 step (grouped launches of up to 16 against 28 cuBLAS calls).
//
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -cudart static -o /tmp/bt bench/micro/back_tma.cu -ldl && /tmp/bt
//
// Each result is checked against a plain f32 kernel (relErr: max |diff| / max |ref|). Times: median
// of 20 launches over 4 rotating C buffers (beyond L2), CUDA events; TFLOP/s = 2 M N K / time;
// fracOfCopy = (C read + written) / time over a copy kernel's bandwidth in the same run.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "back_tma.cuh"
#include "harness.cuh"

using micro::copyKernel;
using micro::fillKernel;
using micro::refKernel;
using micro::timeUs;
namespace bt = slimopt::gpu::backtma;

namespace {

int gSms = 0;

struct Variant {
  const char* name;
  int bm, threads, cl, grid;
  void (*kernel)(const bt::Args);
  size_t smem;
  bool (*make)(bt::Entry&, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t,
               float, float);
};

template <int BM, int BK, int ST, int CL, bool MEM, bool RASTER = false, bool SS = false, bool FAKE = false>
Variant variant(const char* name) {
  using Cfg = bt::Config<BM, BK, ST, CL, MEM, SS>;
  auto kern = bt::backTmaKernel<BM, BK, ST, CL, MEM, RASTER, SS, FAKE>;
  CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Cfg::SMEM)));
  int grid = gSms;
  if (CL > 1) {
    CK(cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = CL; attr.val.clusterDim.y = 1; attr.val.clusterDim.z = 1;
    cfg.gridDim = dim3(gSms / CL * CL); cfg.blockDim = dim3(Cfg::THREADS); cfg.dynamicSmemBytes = Cfg::SMEM;
    cfg.attrs = &attr; cfg.numAttrs = 1;
    int clusters = 0;
    CK(cudaOccupancyMaxActiveClusters(&clusters, kern, &cfg));
    grid = clusters * CL;
    std::fprintf(stderr, "%s: %d clusters resident\n", name, clusters);
  }
  return Variant{name, BM, Cfg::THREADS, CL, grid, kern, Cfg::SMEM, bt::makeEntry<BM, BK, CL>};
}

struct Product {
  int64_t M, N, K;
  const float* A;
  const float* B;
  float* C;
};

// The launches of `ps` on v: up to GROUP a launch, grid = SMs.
void launchAll(const Variant& v, const std::vector<Product>& ps, const float* ab) {
  for (size_t p0 = 0; p0 < ps.size(); p0 += bt::GROUP) {
    bt::Args k{};
    int tiles = 0;
    k.count = 0;
    for (size_t p = p0; p < ps.size() && p < p0 + bt::GROUP; ++p) {
      bt::Entry& x = k.e[k.count++];
      const Product& q = ps[p];
      if (!v.make(x, q.M, q.N, q.K, q.A, q.K, q.B, q.N, q.C, q.N, 1.0f, 0.0f)) {
        std::fprintf(stderr, "tensor map encode failed\n");
        std::exit(1);
      }
      x.tileStart = tiles;
      tiles += int(v.bm == 256 ? bt::tilesOf<256>(x) : bt::tilesOf<192>(x));  // a multiple of cl (tilesN is)
    }
    k.tiles = tiles;
    k.alphaBeta = ab;
    k.flag = nullptr;
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = unsigned(v.cl); attr.val.clusterDim.y = 1; attr.val.clusterDim.z = 1;
    cfg.gridDim = dim3(unsigned(std::min(v.grid, tiles))); cfg.blockDim = dim3(unsigned(v.threads));
    cfg.dynamicSmemBytes = v.smem; cfg.attrs = &attr; cfg.numAttrs = 1;
    CK(cudaLaunchKernelEx(&cfg, v.kernel, k));
  }
}

}  // namespace

int main(int argc, char** argv) {
  CK(cudaDeviceGetAttribute(&gSms, cudaDevAttrMultiProcessorCount, 0));
  // "profile V M N K": three launches of variant V on one product, nothing timed (for ncu).
  const bool profile = argc == 6 && std::string(argv[1]) == "profile";
  const micro::Tf32Sgemm cublas = micro::openTf32Sgemm();
  const int64_t maxC = 11008LL * 4096, maxAB = 11008LL * 1024;
  const micro::BackBuffers bb = micro::backBuffers(gSms, maxC, maxAB, maxAB);
  const std::vector<float*>& Cs = bb.Cs;
  float *const C0 = bb.C0, *const Ref = bb.Ref, *const A = bb.A, *const B = bb.B, *const ab = bb.ab, *const dd = bb.dd,
        *const tmp = bb.tmp;
  const double copyGBps = bb.copyGBps;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const char* commit = std::getenv("SLIMOPT_COMMIT");
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::printf("{\"device\": \"%s\", \"date\": \"%s\", \"commit\": \"%s\", \"copyGBps\": %.0f, \"rows\": [\n", prop.name, date,
              commit ? commit : "unknown", copyGBps);
  const Variant vs[] = {
      variant<192, 32, 3, 1, true>("RS 192x128 bk32 x3, memory warps"),
      variant<192, 32, 3, 2, true>("RS 192x128 bk32 x3, memory warps, cluster 2"),
      variant<192, 32, 3, 1, true, true>("RS 192x128 bk32 x3, memory warps, panels"),
      variant<256, 16, 4, 1, true>("RS 256x128 bk16 x4, memory warps"),
      variant<256, 32, 4, 1, false>("RS 256x128 bk32 x4, direct"),
      variant<256, 32, 3, 1, false, false, true>("SS 256x128 bk32 x3, direct"),
      variant<256, 32, 3, 1, false, false, true, true>("SS 256x128 bk32 x3, direct, B not transposed (wrong sums)")};
  struct Shape { int64_t M, N, K; };
  const Shape shapes[] = {{4097, 4100, 500}, {301, 36, 36},      {11008, 4096, 512}, {4096, 4096, 512},
                          {4096, 11008, 512}, {11008, 4096, 1024}, {4096, 4096, 1024}, {4096, 11008, 1024},
                          {11008, 4096, 256}};
  if (profile) {
    const Variant& v = vs[std::atoi(argv[2])];
    const int64_t M = std::atoll(argv[3]), N = std::atoll(argv[4]), K = std::atoll(argv[5]);
    fillKernel<<<1024, 256>>>(A, M * K, 1, 1.0f);
    fillKernel<<<1024, 256>>>(B, K * N, 2, 1.0f / 16);
    for (int i = 0; i < 3; ++i) launchAll(v, {{M, N, K, A, B, Cs[i]}}, ab);
    CK(cudaDeviceSynchronize());
    std::printf("]}\n");
    return 0;
  }
  bool first = true;
  auto row = [&](const Shape& sh, const char* name, double us, float err) {
    const double floorUs = 2.0 * sh.M * sh.N * 4 / (copyGBps * 1e3), flops = 2.0 * sh.M * sh.N * sh.K;
    std::printf("%s  {\"M\": %lld, \"N\": %lld, \"K\": %lld, \"kernel\": \"%s\", \"us\": %.1f, \"tflops\": %.0f, \"fracOfCopy\": %.3f, \"relErr\": %.2e}",
                first ? "" : ",\n", (long long)sh.M, (long long)sh.N, (long long)sh.K, name, us, flops / (us * 1e6),
                floorUs / us, err);
    first = false;
    std::fflush(stdout);
  };
  for (const Shape& sh : shapes) {
    const int64_t nC = sh.M * sh.N;
    micro::backProblem(bb, sh.M, sh.N, sh.K);
    for (const Variant& v : vs) {
      CK(cudaMemcpy(tmp, C0, nC * 4, cudaMemcpyDeviceToDevice));
      launchAll(v, {{sh.M, sh.N, sh.K, A, B, tmp}}, ab);
      CK(cudaGetLastError());
      CK(cudaDeviceSynchronize());
      const float err = micro::maxRelDiff(tmp, Ref, nC, dd);
      const double us = timeUs([&](int i) { launchAll(v, {{sh.M, sh.N, sh.K, A, B, Cs[i]}}, ab); });
      row(sh, v.name, us, err);
    }
    if (cublas.fn) {
      auto call = [&](float* out) {
        int rc = cublas.fn(cublas.handle, 0, 0, int(sh.N), int(sh.M), int(sh.K), ab, B, int(sh.N), A, int(sh.K), ab + 1,
                           out, int(sh.N));
        if (rc != 0) { std::fprintf(stderr, "sgemm %d\n", rc); std::exit(1); }
      };
      CK(cudaMemcpy(tmp, C0, nC * 4, cudaMemcpyDeviceToDevice));
      call(tmp);
      CK(cudaDeviceSynchronize());
      const float err = micro::maxRelDiff(tmp, Ref, nC, dd);
      row(sh, "cublasSgemm tf32", timeUs([&](int i) { call(Cs[i]); }), err);
    }
  }
  // The 28 project-backs of a §6 step (4 layers: q, k, v, o 4096 x 4096; gate, up 11008 x 4096;
  // down 4096 x 11008), each with its own C, A and B, at r = 512 and 1024.
  for (int64_t r : {512, 1024}) {
    std::vector<Product> ps;
    std::vector<float*> owned;
    for (int layer = 0; layer < 4; ++layer) {
      const Shape s[7] = {{4096, 4096, r}, {4096, 4096, r}, {4096, 4096, r}, {4096, 4096, r},
                          {11008, 4096, r}, {11008, 4096, r}, {4096, 11008, r}};
      for (const Shape& sh : s) {
        float *a, *b, *c;
        CK(cudaMalloc(&a, sh.M * sh.K * 4)); CK(cudaMalloc(&b, sh.K * sh.N * 4)); CK(cudaMalloc(&c, sh.M * sh.N * 4));
        fillKernel<<<1024, 256>>>(a, sh.M * sh.K, 5, 1.0f);
        fillKernel<<<1024, 256>>>(b, sh.K * sh.N, 6, 1.0f / 16);
        fillKernel<<<1024, 256>>>(c, sh.M * sh.N, 7, 1.0f);
        owned.insert(owned.end(), {a, b, c});
        ps.push_back({sh.M, sh.N, sh.K, a, b, c});
      }
    }
    double flops = 0;
    for (const Product& p : ps) flops += 2.0 * p.M * p.N * p.K;
    const Shape all{0, 0, r};
    for (const Variant& v : vs) {
      const double us = timeUs([&](int) { launchAll(v, ps, ab); }, 10);
      std::printf(",\n  {\"step\": \"28 project-backs\", \"K\": %lld, \"kernel\": \"%s\", \"us\": %.1f, \"tflops\": %.0f}",
                  (long long)r, v.name, us, flops / (us * 1e6));
    }
    if (cublas.fn) {
      const double us = timeUs([&](int) {
        for (const Product& p : ps)
          cublas.fn(cublas.handle, 0, 0, int(p.N), int(p.M), int(p.K), ab, p.B, int(p.N), p.A, int(p.K), ab + 1, p.C,
                    int(p.N));
      }, 10);
      std::printf(",\n  {\"step\": \"28 project-backs\", \"K\": %lld, \"kernel\": \"cublasSgemm tf32\", \"us\": %.1f, \"tflops\": %.0f}",
                  (long long)r, us, flops / (us * 1e6));
    }
    (void)all;
    for (float* p : owned) CK(cudaFree(p));
  }
  std::printf("\n]}\n");
  return 0;
}
