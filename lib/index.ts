export { SlimoptError, ErrorCode } from "./errors";
export { DType } from "./dtype";
export { Device, devices, defaultDevice, device } from "./device";
export { Tensor, tensor, zeros, randn, fromDevicePointer, manualSeed, TensorOptions, RandnOptions } from "./tensor";
export { Parameter, ParameterOptions } from "./parameter";
export { Optimizer, GroupOptions, ParamGroup, ParamGroupSpec, StateDict } from "./optim/optimizer";
export { AdamW, AdamWOptions } from "./optim/adamw";
export { GrassAdamW, GrassOptions, GrassSelectMode, GrassSelectOptions, GrassView, grassSelect, grassView, gatherRows, scatterRows } from "./optim/grass";
export { info, SlimoptInfo } from "./info";
