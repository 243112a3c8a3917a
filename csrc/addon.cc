// Module entry: registers each family of the glue.
#include <napi.h>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"

namespace slimopt {

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  registerErrors(env, exports);
  registerDevices(env, exports);
  exports.Set("NativeBuffer", NativeBuffer::Init(env));
  registerTensorOps(env, exports);
  registerAdamw(env, exports);
  registerGalore(env, exports);
  registerGrass(env, exports);
  registerBench(env, exports);
  registerQuant(env, exports);
  registerQAdam(env, exports);
  registerNccl(env, exports);
  registerApollo(env, exports);
  registerCharlm(env, exports);
  registerTrain(env, exports);
  registerAdafactor(env, exports);
  registerShm(env, exports);
  return exports;
}

}  // namespace slimopt

static Napi::Object InitSlimopt(Napi::Env env, Napi::Object exports) { return slimopt::Init(env, exports); }

NODE_API_MODULE(slimopt, InitSlimopt)
