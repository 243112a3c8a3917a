// Host launcher of the Adafactor kernels (cuda/adafactor.cu): plain C++, callable from the glue.
#pragma once
#include "adafactor.cuh"
#include "runtime.h"

namespace slimopt {
namespace gpu {

// One Adafactor step of T at t = counters->step + 1 (device memory); nothing is written when *flag
// != 0. scratch: adafactorScratchFloats(T) floats of device memory.
Status adafactorStep(int dev, const AdafactorTensor& T, const AdafactorHyper& h, const AdamwCounters* counters,
                     const int32_t* flag, float* scratch);

}  // namespace gpu
}  // namespace slimopt
