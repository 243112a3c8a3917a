import { fail, SlimoptError } from "./errors";
import { native } from "./native";

export type DeviceKind = "cpu" | "cuda";

/** A place tensors live and kernels run: the CPU, or one CUDA device with its one stream. */
export class Device {
  /** -1 for the CPU, the CUDA ordinal otherwise. */
  readonly index: number;
  readonly kind: DeviceKind;
  readonly name: string;
  /** "9.0" for an H200; "" for the CPU. */
  readonly computeCapability: string;
  readonly totalMemory: number;
  readonly multiprocessors: number;

  /** @internal use device() */
  constructor(index: number) {
    this.index = index;
    this.kind = index < 0 ? "cpu" : "cuda";
    if (index < 0) {
      this.name = "cpu";
      this.computeCapability = "";
      this.totalMemory = require("os").totalmem();
      this.multiprocessors = require("os").cpus().length;
    } else {
      const p = native().deviceProps(index);
      this.name = p.name;
      this.computeCapability = `${p.major}.${p.minor}`;
      this.totalMemory = p.totalMemory;
      this.multiprocessors = p.multiprocessors;
    }
  }

  /** "cpu" or "cuda:N". */
  toString(): string {
    return this.kind === "cpu" ? "cpu" : `cuda:${this.index}`;
  }

  /** Free and total bytes of device memory now (host memory for the CPU). */
  memory(): { free: number; total: number } {
    if (this.kind === "cpu") {
      const os = require("os");
      return { free: os.freemem(), total: os.totalmem() };
    }
    return native().memInfo(this.index);
  }

  /** The cudaStream_t slimopt enqueues on, for other native code; 0n on the CPU. */
  get stream(): bigint {
    return this.kind === "cpu" ? 0n : native().stream(this.index);
  }

  /** Resolves when everything enqueued on this device so far has finished. */
  synchronize(): Promise<void> {
    return native().synchronize(this.index);
  }

  /** Why the device is unusable after a sticky CUDA error, or null. */
  get lost(): string | null {
    return this.kind === "cpu" ? null : native().lostReason(this.index);
  }
}

const cache = new Map<number, Device>();

function get(index: number): Device {
  let d = cache.get(index);
  if (!d) {
    d = new Device(index);
    cache.set(index, d);
  }
  return d;
}

export function cudaDeviceCount(): { count: number; why: string } {
  return native().deviceCount();
}

/** cpu, then every CUDA device. No GPU is not an error. */
export function devices(): Device[] {
  const out = [get(-1)];
  const { count } = cudaDeviceCount();
  for (let i = 0; i < count; i++) out.push(get(i));
  return out;
}

/** cuda:0 when a usable GPU is present, else cpu. SLIMOPT_DEVICE=cpu forces the CPU. */
export function defaultDevice(): Device {
  if (process.env.SLIMOPT_DEVICE) return device(process.env.SLIMOPT_DEVICE);
  return cudaDeviceCount().count > 0 ? get(0) : get(-1);
}

/** "cpu", "cuda" (= cuda:0), "cuda:N", or a Device. */
export function device(spec?: string | Device): Device {
  if (spec === undefined) return defaultDevice();
  if (spec instanceof Device) return spec;
  if (typeof spec !== "string") fail("E_DEVICE", `not a device: ${String(spec)}`);
  const s = spec.trim().toLowerCase();
  if (s === "cpu") return get(-1);
  const m = /^cuda(?::(\d+))?$/.exec(s);
  if (!m) fail("E_DEVICE", `unknown device "${spec}" (use "cpu", "cuda" or "cuda:N")`);
  const index = m[1] === undefined ? 0 : Number(m[1]);
  const { count, why } = cudaDeviceCount();
  if (count === 0) throw new SlimoptError("E_NO_CUDA", `asked for ${spec} but no CUDA device is usable: ${why}`);
  if (index >= count) fail("E_DEVICE", `asked for ${spec} but there are ${count} CUDA device(s)`);
  return get(index);
}
