// CPU backend of Adafactor (cuda/adafactor.cuh): the reference of cuda/adafactor.cu.
#pragma once
#include "../../cuda/adafactor.cuh"

namespace slimopt {
namespace cpu {

// One step of T at t = counters->step + 1; nothing when *flag != 0. scratch: adafactorScratchFloats.
void adafactorStep(const AdafactorTensor& T, const AdafactorHyper& h, const AdamwCounters* counters,
                   const int32_t* flag, float* scratch);

}  // namespace cpu
}  // namespace slimopt
