// QuantMap: a validated code map with its finder table, built once on the host and uploaded to
// each CUDA device on first use there.
#pragma once
#include <napi.h>
#include <map>
#include <vector>
#include "cpu/quant.h"

namespace slimopt {

class QuantMap : public Napi::ObjectWrap<QuantMap> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Unwraps argument v; throws E_ARG if it is no QuantMap.
  static QuantMap* From(Napi::Env env, Napi::Value v, const char* what);

  explicit QuantMap(const Napi::CallbackInfo& info);
  ~QuantMap() override;

  const cpu::QuantMapHost& host() const { return host_; }
  int size() const { return int(host_.values.size()); }
  // The map's blob on CUDA device dev (uploaded on the device's stream the first time); throws
  // the mapped CUDA error on failure.
  const void* deviceBlob(Napi::Env env, int dev);
  // The blob in host memory (built on first use), for the CPU backend's kernels.
  const uint8_t* hostBlob() {
    if (hostBlob_.empty()) hostBlob_ = host_.blob();
    return hostBlob_.data();
  }

 private:
  Napi::Value Size(const Napi::CallbackInfo& info);
  Napi::Value TableBytes(const Napi::CallbackInfo& info);

  cpu::QuantMapHost host_;
  std::map<int, void*> device_;
  std::vector<uint8_t> hostBlob_;
};

// The maps of 8-bit Adam states (GaLore, Grass: stateBits 8) from a step's arguments: m's (signed)
// and v's (unsigned), each a QuantMap of 256 entries (E_ARG / E_SHAPE otherwise).
struct Q8MapArgs { QuantMap* a; QuantMap* b; };
Q8MapArgs q8MapArgs(Napi::Env env, Napi::Value a, Napi::Value b);
// The pair as the kernels of device dev read it: host blobs for the CPU, device blobs for CUDA.
Q8Maps q8MapsOn(Napi::Env env, const Q8MapArgs& m, int dev);

}  // namespace slimopt
