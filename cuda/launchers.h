// Host launchers of the CUDA kernels: plain C++, callable from the glue. Each enqueues on the
// device's stream (gpu::stream) and returns the launch status; nothing here blocks.
#pragma once
#include <cstdint>
#include "adamw.cuh"
#include "runtime.h"

namespace slimopt {
namespace gpu {

// out[i] = mean + std * N(0,1)_i of the (seed) stream, stored as dtype.
Status fillRandn(int dev, void* out, DType dtype, int64_t n, uint64_t seed, float mean, float std);
// Element-wise conversion between f32/bf16/f16 (same n).
Status convert(int dev, const void* src, DType srcType, void* dst, DType dstType, int64_t n);

// One multi-tensor AdamW step over a group, in one launch. `tensors` is a device array of
// nTensors descriptors with chunkBegin set (chunk = hyper.chunkSize elements); totalChunks is the
// group's chunk count. `counters` is device memory: the step is skipped (and counted) when
// skipNonFinite is set and any gradient element is NaN/Inf. `scratch` holds gridFlagsNeeded()
// ints.
Status adamwStep(int dev, const AdamwTensor* tensors, int32_t nTensors, int64_t totalChunks,
                 const AdamwHyper& hyper, AdamwCounters* counters, int32_t* scratch);
int32_t adamwScratchInts(int dev);

// Bandwidth probe: dst = src over n bytes with 16-byte accesses (the copy the floor is set by).
Status copyKernel(int dev, void* dst, const void* src, size_t bytes);

// Event timing on the device's stream: record, then elapsed milliseconds between two.
Status eventCreate(void** ev);
Status eventRecord(int dev, void* ev);
Status eventElapsedMs(void* start, void* stop, float* ms);  // synchronizes on stop
void eventDestroy(void* ev);

}  // namespace gpu
}  // namespace slimopt
