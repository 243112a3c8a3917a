import { cudaDeviceCount, devices } from "./device";
import { addonPath, native } from "./native";

export interface SlimoptInfo {
  version: string;
  addon: string;
  cudaCompiled: boolean;
  cudaArchs: string;
  buildFlags: string;
  cuda: { usable: boolean; why: string };
  devices: { id: string; name: string; computeCapability: string; totalMemory: number; lost: string | null }[];
  cublas: string | null;
  cusolver: string | null;
  /** NCCL for multi-GPU process groups (SLIMOPT_NCCL, then libnccl.so.2), or null. */
  nccl: string | null;
  linearAlgebra: string;
}

/** The GEMM and SVD-refresh paths GaLore uses now (cuBLAS or the built-in kernel; the solver). */
function linearAlgebra(cuda: boolean): string {
  const cpu = "CPU: blocked f32 GEMM, exact SVD (double Gram + symmetric eigen)";
  if (!cuda) return cpu;
  const l = native().linalgInfo();
  return `GEMM: ${l.blas}; SVD refresh: ${l.solver}`;
}

/** What `slimopt info` prints: the build, the devices, and which library paths are in use. */
export function info(): SlimoptInfo {
  const nat = native();
  const b = nat.buildInfo();
  const { count, why } = cudaDeviceCount();
  const cublas = nat.probeLibrary("SLIMOPT_CUBLAS", ["libcublas.so.13", "libcublas.so.12"]);
  const cusolver = nat.probeLibrary("SLIMOPT_CUSOLVER", ["libcusolver.so.12", "libcusolver.so.11"]);
  const nccl = nat.probeLibrary("SLIMOPT_NCCL", ["libnccl.so.2"]);
  return {
    version: require("../package.json").version,
    addon: addonPath,
    cudaCompiled: b.cudaCompiled,
    cudaArchs: b.cudaArchs,
    buildFlags: b.buildFlags,
    cuda: { usable: count > 0, why: count > 0 ? "" : why },
    devices: devices().map((d) => ({
      id: d.toString(), name: d.name, computeCapability: d.computeCapability, totalMemory: d.totalMemory, lost: d.lost,
    })),
    cublas,
    cusolver,
    nccl,
    linearAlgebra: linearAlgebra(count > 0),
  };
}
