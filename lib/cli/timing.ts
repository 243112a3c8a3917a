// Timers and statistics for the benchmark: CUDA events on a GPU, the wall clock on the CPU
// (whose backend runs each call to completion before it returns).
import { Device } from "../device";
import { native, NativeBufferHandle } from "../native";

export interface Stats {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function stats(xs: number[]): Stats {
  if (xs.length === 0) throw new Error("stats of nothing");
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  const median = s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
  return { median, min: s[0], max: s[s.length - 1], n: s.length };
}

function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * Runs `warmup` untimed calls of fn, then `n` timed ones, and returns each timed call's duration
 * in ms.
 *
 * CUDA: events are recorded between consecutive calls on the device's stream (event i before call
 * i, event i+1 after it) and read once at the end, so the host never waits between calls and the
 * queue stays ahead of the device: each duration is the device time of one call, not the launch
 * latency. The warmup calls are enqueued just before, with no synchronize, so the first timed call
 * does not start on an idle device either. bench/torch_baseline.py times torch the same way.
 *
 * CPU: process.hrtime around each call.
 */
export async function timeCalls(dev: Device, fn: (i: number) => void, n: number, warmup: number,
                                onProgress?: (done: number) => void): Promise<number[]> {
  if (dev.kind === "cpu") {
    for (let i = 0; i < warmup; i++) fn(i);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = nowMs();
      fn(warmup + i);
      out.push(nowMs() - t0);
      onProgress?.(i + 1);
    }
    return out;
  }
  const nat = native();
  await dev.synchronize();
  const evs = Array.from({ length: n + 1 }, () => nat.newEvent());
  for (let i = 0; i < warmup; i++) fn(i);
  nat.recordEvent(dev.index, evs[0]);
  for (let i = 0; i < n; i++) {
    fn(warmup + i);
    nat.recordEvent(dev.index, evs[i + 1]);
  }
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(nat.elapsedMs(evs[i], evs[i + 1]));
    onProgress?.(i + 1);
  }
  await dev.synchronize();
  return out;
}

/**
 * Device time of `fn(i)` for calls too short to outrun the host: before each timed call, `prime()`
 * enqueues device work that takes longer than the host needs to enqueue the call, and the start
 * event is recorded after it, so the call's launches are all queued when the device reaches them
 * and the events time the device alone. (timeCalls primes nothing: after the first calls a short
 * call there is timed at the host's pace.) CUDA only; on the CPU this is timeCalls.
 */
export async function timeQueuedCalls(dev: Device, prime: () => void, fn: (i: number) => void, n: number,
                                      warmup: number, onProgress?: (done: number) => void): Promise<number[]> {
  if (dev.kind === "cpu") return timeCalls(dev, fn, n, warmup, onProgress);
  const nat = native();
  await dev.synchronize();
  for (let i = 0; i < warmup; i++) fn(i);
  const pairs: [unknown, unknown][] = [];
  for (let i = 0; i < n; i++) {
    const ev: [unknown, unknown] = [nat.newEvent(), nat.newEvent()];
    prime();
    nat.recordEvent(dev.index, ev[0]);
    fn(warmup + i);
    nat.recordEvent(dev.index, ev[1]);
    pairs.push(ev);
  }
  const out: number[] = [];
  for (const [a, b] of pairs) {
    out.push(nat.elapsedMs(a, b));
    onProgress?.(out.length);
  }
  await dev.synchronize();
  return out;
}

export interface CopyBandwidth {
  /** (bytes read + bytes written) / median time, in GB/s (1e9). */
  GBps: number;
  /** Bytes copied per call (the counted traffic is twice that). */
  bytes: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  reps: number;
  method: string;
}

/**
 * The copy bandwidth that sets the floor of every memory-bound step, measured in this run.
 * CUDA: slimopt's 16-byte copy kernel over `bytes`; CPU: copyBuffer (memmove, one thread).
 */
export async function measureCopyBandwidth(dev: Device, bytes: number, reps: number, warmup = 3): Promise<CopyBandwidth> {
  const nat = native();
  let src: NativeBufferHandle | undefined;
  let dst: NativeBufferHandle | undefined;
  try {
    src = new nat.NativeBuffer(dev.index, bytes);
    dst = new nat.NativeBuffer(dev.index, bytes);
    // Touch every page first (fresh host memory would otherwise read as the shared zero page).
    nat.fillZero(src, bytes);
    nat.fillZero(dst, bytes);
    const s = src;
    const d = dst;
    const copy = dev.kind === "cpu" ? () => nat.copyBuffer(d, s, bytes) : () => nat.copyKernel(d, s, bytes);
    const times = await timeCalls(dev, copy, reps, warmup);
    const st = stats(times);
    return {
      GBps: (2 * bytes) / (st.median * 1e6),
      bytes,
      medianMs: st.median,
      minMs: st.min,
      maxMs: st.max,
      reps,
      method: dev.kind === "cpu" ? "copyBuffer (memmove, 1 thread), wall clock" : "copyKernel (16-byte vector copy), CUDA events",
    };
  } finally {
    src?.dispose();
    dst?.dispose();
    if (dev.kind === "cuda") await dev.synchronize();
  }
}
