// Host launcher of the Adafactor kernels (cuda/adafactor.cu): plain C++, callable from the glue.
#pragma once
#include "adafactor.cuh"
#include "galore.cuh"
#include "runtime.h"

namespace slimopt {
namespace gpu {

// One Adafactor step of T at t = counters->step + 1 (device memory); nothing is written when *flag
// != 0. scratch: adafactorScratchFloats(T) floats of device memory.
Status adafactorStep(int dev, const AdafactorTensor& T, const AdafactorHyper& h, const AdamwCounters* counters,
                     const int32_t* flag, float* scratch);
// GaLoreAdafactor, one tensor (contract of cpu::galoreAdafactorStep): sBig is rows x cols f32
// (the gradient's f32 copy when it is not f32, then back(N)); scratch: adafactorScratchFloats(R).
Status galoreAdafactorStep(int dev, const GaloreTensor& G, const AdafactorTensor& R, const AdafactorHyper& h, float scale,
                           const AdamwCounters* counters, const int32_t* flag, float* sR, float* sT, float* sBig,
                           float* scratch, GemmMode mode);

}  // namespace gpu
}  // namespace slimopt
