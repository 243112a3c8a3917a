// Registration of the glue's function families, and argument helpers they share.
#pragma once
#include <napi.h>
#include "../cuda/common.cuh"

namespace slimopt {

DType dtypeArg(Napi::Env env, Napi::Value v);
int64_t countArg(Napi::Env env, Napi::Value v, const char* what);
// obj[key] as a finite float; E_ARG otherwise (hyperparameters of the step calls).
float finiteFloatField(Napi::Env env, Napi::Object obj, const char* key);
// A live buffer on dev holding at least `bytes` (E_DEVICE / E_SHAPE otherwise); optBufArg takes
// null/undefined as nullptr. deviceOf: the device of buffer v, checked usable. numField: obj[key]
// as a finite double. floatDtype: f32, bf16 or f16 (E_DTYPE otherwise).
void* bufArg(Napi::Env env, Napi::Value v, int dev, size_t bytes, const char* what);
void* optBufArg(Napi::Env env, Napi::Value v, int dev, size_t bytes, const char* what);
int deviceOf(Napi::Env env, Napi::Value v);
double numField(Napi::Env env, Napi::Object o, const char* key);
DType floatDtype(Napi::Env env, Napi::Value v);

void registerTensorOps(Napi::Env env, Napi::Object exports);
void registerAdamw(Napi::Env env, Napi::Object exports);
void registerGalore(Napi::Env env, Napi::Object exports);
void registerGrass(Napi::Env env, Napi::Object exports);
void registerBench(Napi::Env env, Napi::Object exports);
void registerQuant(Napi::Env env, Napi::Object exports);
void registerQAdam(Napi::Env env, Napi::Object exports);
void registerNccl(Napi::Env env, Napi::Object exports);
void registerApollo(Napi::Env env, Napi::Object exports);
void registerCharlm(Napi::Env env, Napi::Object exports);
void registerTrain(Napi::Env env, Napi::Object exports);
void registerAdafactor(Napi::Env env, Napi::Object exports);
void registerShm(Napi::Env env, Napi::Object exports);

}  // namespace slimopt
