export { SlimoptError, ErrorCode } from "./errors";
export { DType } from "./dtype";
export { Device, devices, defaultDevice, device } from "./device";
export { Tensor, tensor, zeros, randn, fromDevicePointer, manualSeed, TensorOptions, RandnOptions } from "./tensor";
export { Parameter, ParameterOptions } from "./parameter";
export { Optimizer, GroupOptions, ParamGroup, ParamGroupSpec, StateDict, SaveOptions, LoadOptions } from "./optim/optimizer";
export { AdamW, AdamWOptions } from "./optim/adamw";
export { info, SlimoptInfo } from "./info";
export { saveTensors, loadTensors, inspectTensors, LoadTensorsOptions, SAFETENSORS_DTYPE, MAX_HEADER_BYTES } from "./checkpoint";
