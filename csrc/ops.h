// Registration of the glue's function families, and argument helpers they share.
#pragma once
#include <napi.h>
#include "../cuda/common.cuh"

namespace slimopt {

DType dtypeArg(Napi::Env env, Napi::Value v);
int64_t countArg(Napi::Env env, Napi::Value v, const char* what);
// obj[key] as a finite float; E_ARG otherwise (hyperparameters of the step calls).
float finiteFloatField(Napi::Env env, Napi::Object obj, const char* key);

void registerTensorOps(Napi::Env env, Napi::Object exports);
void registerAdamw(Napi::Env env, Napi::Object exports);
void registerGalore(Napi::Env env, Napi::Object exports);
void registerGrass(Napi::Env env, Napi::Object exports);
void registerBench(Napi::Env env, Napi::Object exports);
void registerQuant(Napi::Env env, Napi::Object exports);
void registerQAdam(Napi::Env env, Napi::Object exports);
void registerTrain(Napi::Env env, Napi::Object exports);
void registerAdafactor(Napi::Env env, Napi::Object exports);

}  // namespace slimopt
