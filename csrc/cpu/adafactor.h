// CPU backend of Adafactor (cuda/adafactor.cuh): the reference of cuda/adafactor.cu.
#pragma once
#include "../../cuda/adafactor.cuh"
#include "../../cuda/galore.cuh"

namespace slimopt {
namespace cpu {

// One step of T at t = counters->step + 1; nothing when *flag != 0. scratch: adafactorScratchFloats.
void adafactorStep(const AdafactorTensor& T, const AdafactorHyper& h, const AdamwCounters* counters,
                   const int32_t* flag, float* scratch);
// GaLoreAdafactor, one tensor: R = project(G) into sR, Adafactor on R in update-only mode (R's
// tensor: grad = update = sR, paramNorm = ||W|| when scaleParameter), then W = decay(W) - scale *
// back(N). scratch: at least 2 floats (lr_t, divisor). Nothing when *flag != 0.
void galoreAdafactorStep(const GaloreTensor& G, const AdafactorTensor& R, const AdafactorHyper& h, float scale,
                         const AdamwCounters* counters, const int32_t* flag, float* sR, float* sT, float* scratch);

}  // namespace cpu
}  // namespace slimopt
