// Host launchers of the quantization kernels and of the quantized-Adam step: plain C++, callable
// from the glue; each enqueues on the device's stream and returns the launch status. `mapBlob` is
// device memory holding a map as cpu::QuantMapHost::blob() lays it out (values, then the finder
// table), `f` its finder header.
#pragma once
#include <cstddef>
#include <cstdint>
#include "quant.cuh"
#include "runtime.h"

namespace slimopt {
namespace gpu {

// codes[i] = nearest code of x[i] / absmax[i / blockSize]; absmax[b] = max |x| over block b.
// blockSize: a power of two in [64, 4096].
Status quantizeBlockwise(int dev, const void* x, DType dtype, int64_t n, uint8_t* codes, float* absmax,
                         int64_t blockSize, const void* mapBlob, const QuantFinder& f);
// out[i] = values[codes[i] mod nCodes] * absmax[i / blockSize], stored as dtype.
Status dequantizeBlockwise(int dev, const uint8_t* codes, const float* absmax, int64_t n, void* out,
                           DType dtype, int64_t blockSize, const void* mapBlob, const QuantFinder& f);

// One quantized-Adam step over a group in one cooperative launch. `tensors` is a device array of
// nTensors descriptors with tileBegin set (kQuantTile elements per tile); totalTiles is the
// group's tile count. mapA (signed, m) and mapB (v) have 256 entries for 8 bits, 16 for 4 bits.
// `counters` is device memory; `scratch` holds qadamScratchInts(dev) ints.
Status qadamStep(int dev, const QAdamTensor* tensors, int32_t nTensors, int64_t totalTiles,
                 const QAdamHyper& hyper, const void* mapA, const QuantFinder& fA, const void* mapB,
                 const QuantFinder& fB, AdamwCounters* counters, int32_t* scratch);
int32_t qadamScratchInts(int dev);

// dst[0, bytes) = value (the initial codes of quantized states).
Status memsetBytes(int dev, void* dst, int value, size_t bytes);

}  // namespace gpu
}  // namespace slimopt
