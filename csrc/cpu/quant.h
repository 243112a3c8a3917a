// CPU backend of blockwise quantization and the quantized AdamW (the reference for the CUDA
// kernels), and the host-side builder of a map's code finder (cuda/quant.cuh), which both
// backends use.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "../../cuda/quant.cuh"

namespace slimopt {
namespace cpu {

struct QuantMapHost {
  QuantFinder finder{};
  std::vector<float> values;    // nCodes
  std::vector<uint32_t> table;  // finder.entries
  // values then table: the layout the kernels read (mapBlobBytes(finder) bytes).
  std::vector<uint8_t> blob() const;
};

// Builds the finder of a map of n = 16 or 256 values. Returns "" on success, else why the map is
// refused (not strictly increasing, outside [-1, 1], not finite, or too dense near some point for
// one change of code per bucket).
std::string buildQuantMap(const float* values, int n, QuantMapHost* out);

// The nearest-code definition itself (binary search, exact comparison): the builder's source of
// truth, and what tests compare the finder with.
uint32_t nearestCode(const std::vector<float>& values, float x);

// codes[i] = nearest code of x[i] / absmax[i / blockSize]; absmax[b] = max |x| over block b.
void quantizeBlockwise(const void* x, DType dtype, int64_t n, uint8_t* codes, float* absmax,
                       int64_t blockSize, const QuantMapHost& map);
// out[i] = values[codes[i] mod nCodes] * absmax[i / blockSize], stored as dtype.
void dequantizeBlockwise(const uint8_t* codes, const float* absmax, int64_t n, void* out, DType dtype,
                         int64_t blockSize, const QuantMapHost& map);

// One step of a quantized-Adam group (same contract as gpu::qadamStep): skipped whole, and
// counted, when skipNonFinite is set and a gradient holds NaN/Inf. mapA (signed, for m) and mapB
// (for v) have 256 entries for 8 bits, 16 for 4 bits.
void qadamStep(const QAdamTensor* tensors, int32_t nTensors, const QAdamHyper& hyper,
               const QuantMapHost& mapA, const QuantMapHost& mapB, AdamwCounters* counters);

}  // namespace cpu
}  // namespace slimopt
