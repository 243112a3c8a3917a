// The built-in tensor-core GEMM (cuda/gemm_tc.cu): what serves GemmMode::Tf32 and ::Bf16 when
// cuBLAS is absent or forced off, and every GEMM whose C is bf16/f16 (GaLore's project-back into a
// bf16 W, with the update in the epilogue). sm_80 and newer; callers fall back to the SIMT kernel
// of galore.cu elsewhere and for GemmMode::Strict.
#pragma once
#include <cuda_runtime.h>
#include "galore.cuh"
#include "internal.cuh"

namespace slimopt {
namespace gpu {

// dev is sm_80+ and this build carries the tensor-core kernels for it (cached per device).
bool tensorCoreGemmAvailable(int dev);

// C = alpha op(A) op(B) + beta C on the tensor cores, GemmArgs' contract (row-major, A and B f32,
// C f32/bf16/f16; C is not read when beta is 0). mode Tf32: operands rounded to TF32; Bf16: to
// bf16; accumulation in f32 either way. alphaBeta: device [alpha, beta], or null for g.alpha,
// g.beta. flag: device int, nothing is written when *flag != 0 (null: never). Long-K products
// with too few output tiles to fill the device are split along K (deterministic: partial sums in
// a stream-ordered workspace, then a fixed-order reduction that applies the epilogue).
// Only call when tensorCoreGemmAvailable(dev).
Status tensorCoreGemm(int dev, cudaStream_t st, const GemmArgs& g, GemmMode mode, const float* alphaBeta,
                      const int32_t* flag);

// The streaming kernel (gemm_tc.cu) for C (f32) <- alpha A B + beta C with A (M x K) and B (K x N)
// untransposed f32, K a multiple of 8 up to 128, TF32 mode, 16-byte aligned bases and leading
// dimensions a multiple of 4: GaLore's project-back at rank <= 128 on the built-in path, where it
// beats the tile kernel (not cuBLAS). streamGemmFits says whether g qualifies on dev (and the
// kernel is enabled: setStreamGemm in launchers.h; off, the tile kernel serves).
// On sm_90 with an sm_90a image the warpgroup-MMA version of the kernel serves instead
// (streamGemmWgmma), and then on the cuBLAS path too, where it beats cuBLAS's project-back.
bool streamGemmFits(int dev, const GemmArgs& g, GemmMode mode);
Status streamGemm(int dev, cudaStream_t st, const GemmArgs& g, const float* alphaBeta, const int32_t* flag);
// streamGemm of each of gs[0 .. count), in order, every one fitting (streamGemmFits); alphaBeta and
// flag as streamGemm's, for all of them. The wgmma kernel takes them 32 to a launch; elsewhere one
// launch each. The results are those of streamGemm one by one, bit for bit.
Status streamGemmMany(int dev, cudaStream_t st, const GemmArgs* gs, int64_t count, const float* alphaBeta,
                      const int32_t* flag);
bool streamGemmWgmma(int dev);

}  // namespace gpu
}  // namespace slimopt
