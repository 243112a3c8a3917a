// Device registry of the glue: device -1 is the CPU, 0..N-1 are CUDA devices. Holds the
// lost state of each CUDA device after a sticky error.
#pragma once
#include <napi.h>
#include <string>

namespace slimopt {

constexpr int kCpu = -1;

int cudaDeviceCount();                 // cached at first call
const std::string& noCudaReason();     // why cudaDeviceCount() is 0
void markLost(int dev, const std::string& why);
// Throws E_DEVICE for an unknown index, E_NO_CUDA without CUDA, E_CUDA if the device was lost.
void ensureUsable(Napi::Env env, int dev);

void registerDevices(Napi::Env env, Napi::Object exports);

}  // namespace slimopt
