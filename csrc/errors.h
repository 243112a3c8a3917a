// Error mapping: every refusal is a SlimoptError (lib/errors.ts) with a code, thrown before
// anything runs. The JS class is registered once at load (setErrorClass).
#pragma once
#include <napi.h>
#include <string>
#include "../cuda/runtime.h"

namespace slimopt {

// Builds `new SlimoptError(code, message)`; falls back to a plain Error with .code set.
Napi::Error makeError(Napi::Env env, const char* code, const std::string& message);
[[noreturn]] void throwError(Napi::Env env, const char* code, const std::string& message);

// Maps a failed CUDA status: E_OOM (with bytes asked and free), E_CUDA otherwise. A sticky error
// marks the device lost first, so every later call on it is refused.
[[noreturn]] void throwCuda(Napi::Env env, int dev, const gpu::Status& st, const std::string& what,
                            size_t bytesAsked = 0);

void registerErrors(Napi::Env env, Napi::Object exports);

}  // namespace slimopt
