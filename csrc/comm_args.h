// Argument checks shared by the process-group communicators' glue (nccl_comm.cc, shm_comm.cc).
#pragma once
#include <string>
#include "buffer.h"
#include "errors.h"
#include "ops.h"

namespace slimopt {

// A reduce op code, 0 (sum) .. 4 (avg): ncclRedOp_t's values, which both backends use.
inline int32_t reduceOpArg(Napi::Env env, Napi::Value v) {
  const int64_t op = countArg(env, v, "reduce op");
  if (op > 4) throwError(env, "E_ARG", "reduce op must be 0 (sum) .. 4 (avg)");
  return int32_t(op);
}

inline void needBytes(Napi::Env env, NativeBuffer* b, int64_t count, DType t, const char* what) {
  const size_t bytes = size_t(count) * size_t(dtypeSize(t));
  if (bytes > b->bytes())
    throwError(env, "E_SHAPE", std::string(what) + ": " + std::to_string(bytes) + " bytes needed, the buffer has " +
                                   std::to_string(b->bytes()));
}

}  // namespace slimopt
