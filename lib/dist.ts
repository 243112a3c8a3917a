// Data parallelism across processes, one per GPU of a host: a process group over NCCL (loaded at
// run time: SLIMOPT_NCCL, then libnccl.so.2), collectives on Tensors enqueued on the device
// stream, and DistributedOptimizer, which wraps any slimopt optimizer.
//
// Rendezvous. Rank 0 asks NCCL for a unique id and writes it to a file (atomically, by rename);
// the other ranks wait for the file. `slimopt launch -n N script.js` starts the N processes with
// SLIMOPT_RANK, SLIMOPT_WORLD_SIZE, SLIMOPT_LOCAL_RANK and SLIMOPT_RENDEZVOUS set and a fresh
// folder for the file; each rank uses cuda:<local rank>.
//
// World size 1 runs through the same code: over NCCL when it loads (one-rank communicator), else
// locally (every collective of one rank is a copy or nothing), which is what the CPU gets.
//
// Several ranks on the CPU (device "cpu") use the "shm" backend (csrc/cpu/shm_comm.h): rank 0
// creates a segment file beside the rendezvous file and writes its path there instead of an NCCL
// id; every rank maps it, and rank 0 removes the file once all have joined. Its collectives are
// synchronous and deterministic (rank-ordered sums in f32), so the N-rank logic of
// DistributedOptimizer runs on any machine exactly as it will over NCCL. A rank that does not
// arrive within the timeout, or whose process is gone, breaks the group: every rank's next
// collective throws E_DEVICE instead of hanging.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Device, device as resolveDevice } from "./device";
import { DTYPE_CODE, DTYPE_SIZE } from "./dtype";
import { fail, SlimoptError } from "./errors";
import { native, NcclCommHandle, ShmCommHandle } from "./native";
import { Optimizer, GroupOptions, ParamGroupSpec, withParamPositions } from "./optim/optimizer";
import { Parameter } from "./parameter";
import { Tensor } from "./tensor";

export type ReduceOpName = "sum" | "prod" | "max" | "min" | "avg";
const REDUCE_CODE: Record<ReduceOpName, number> = { sum: 0, prod: 1, max: 2, min: 3, avg: 4 };

export interface ProcessGroupOptions {
  /** This process's rank (default: SLIMOPT_RANK, else 0). */
  rank?: number;
  /** Number of processes (default: SLIMOPT_WORLD_SIZE, else 1). */
  worldSize?: number;
  /** The device of this rank (default: cuda:<SLIMOPT_LOCAL_RANK or rank> when a GPU is usable, else cpu). */
  device?: string | Device;
  /** File through which rank 0 hands the NCCL id to the others (default: SLIMOPT_RENDEZVOUS). */
  rendezvous?: string;
  /** How long the other ranks wait for the id, and (shm) how long a collective waits for the
   *  others (ms; default SLIMOPT_DIST_TIMEOUT_MS, else 120000). */
  timeoutMs?: number;
  /** Force the local backend for a world of one (tests); "shm" is what several CPU ranks use. */
  backend?: "nccl" | "local" | "shm";
  /** shm: bytes each rank stages per round; larger tensors go in chunks (default
   *  SLIMOPT_SHM_CHUNK_BYTES, else 4 MiB; a multiple of 64). */
  chunkBytes?: number;
}

export type BackendName = "nccl" | "local" | "shm";

/** What NCCL path serves multi-GPU work now. */
export function ncclInfo(): { path: string | null; version: number; why: string } {
  return native().ncclInfo();
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) fail("E_ARG", `${name} must be a non-negative integer, got "${v}"`);
  return n;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** What rank 0 of a CPU group writes to the rendezvous file, before the segment's path. */
const SHM_TAG = "slimopt-shm:";

/** Rank 0's side of the rendezvous: the file appears whole (written aside, then renamed). */
function publish(file: string, content: Uint8Array | string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, content);
  fs.renameSync(tmp, file);
}

/** The other ranks' side: polls the file until `accept` takes its content. */
async function awaitPublished<T>(rank: number, file: string, timeoutMs: number, what: string,
                                 accept: (b: Buffer) => T | undefined): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    let content: Buffer | undefined;
    try {
      content = fs.readFileSync(file);
    } catch {
      // not there yet
    }
    const got = content === undefined ? undefined : accept(content);
    if (got !== undefined) return got;
    if (Date.now() > until) fail("E_DEVICE", `rank ${rank}: no ${what} in ${file} after ${timeoutMs} ms (did rank 0 start?)`);
    await sleep(10);
  }
}

async function exchangeId(rank: number, file: string, timeoutMs: number): Promise<Uint8Array> {
  if (rank === 0) {
    const id = native().ncclUniqueId();
    publish(file, id);
    return id;
  }
  return awaitPublished(rank, file, timeoutMs, "NCCL id", (b) => {
    if (b.toString("utf8", 0, SHM_TAG.length) === SHM_TAG)
      fail("E_DEVICE", `rank ${rank} is on a GPU, rank 0 opened a CPU (shm) group: every rank needs the same kind of device`);
    return b.length === 128 ? new Uint8Array(b) : undefined;
  });
}

/** Opens (rank 0) or joins the shm segment named in the rendezvous file (a world of one needs
 *  none: its segment goes to the temp folder); returns once every rank has joined. */
async function openShm(rank: number, worldSize: number, file: string | undefined, timeoutMs: number, chunkBytes: number): Promise<ShmCommHandle> {
  let comm: ShmCommHandle;
  if (rank === 0) {
    const seg = file ? `${file}.${process.pid}.shm` : path.join(os.tmpdir(), `slimopt-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.shm`);
    fs.rmSync(seg, { force: true });  // a leftover of a killed run with the same pid
    comm = new (native().ShmComm)(seg, worldSize, 0, chunkBytes, timeoutMs);
    try {
      if (file) publish(file, SHM_TAG + seg);
    } catch (e) {
      comm.dispose();
      throw e;
    }
  } else if (!file) {
    fail("E_ARG", "a process group of several ranks needs a rendezvous file");
  } else {
    const seg = await awaitPublished(rank, file, timeoutMs, "shm segment", (b) => {
      const text = b.toString("utf8");
      if (b.length === 128 && !text.startsWith(SHM_TAG))
        fail("E_DEVICE", `rank ${rank} is on the CPU, rank 0 opened an NCCL group: every rank needs the same kind of device`);
      return text.startsWith(SHM_TAG) ? text.slice(SHM_TAG.length) : undefined;
    });
    comm = new (native().ShmComm)(seg, worldSize, rank, chunkBytes, timeoutMs);
  }
  try {
    comm.waitAll();
  } catch (e) {
    comm.dispose();
    throw e;
  }
  return comm;
}

/**
 * One rank of a group of processes. Collectives run in place where that makes sense, are
 * enqueued on the rank's device stream and return at once (shm: they return when done); `group(fn)` fuses the collectives
 * called inside fn into one NCCL launch. `bytesSent` counts the payload each collective hands
 * NCCL from this rank (count × element size; reduceScatter: the whole input), whatever algorithm
 * NCCL picks.
 */
export class ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly device: Device;
  readonly backend: BackendName;
  bytesSent = 0;
  private comm: NcclCommHandle | null;
  private grouping = 0;

  /** @internal use initProcessGroup() */
  constructor(rank: number, worldSize: number, dev: Device, comm: NcclCommHandle | null, backend?: BackendName) {
    this.rank = rank;
    this.worldSize = worldSize;
    this.device = dev;
    this.comm = comm;
    this.backend = backend ?? (comm ? "nccl" : "local");
  }

  private live(): NcclCommHandle | null {
    if (this.disposed) fail("E_DISPOSED", "the process group was disposed");
    return this.comm;
  }
  private disposed = false;

  private check(t: Tensor, what: string): void {
    if (!(t instanceof Tensor)) fail("E_ARG", `${what} is not a Tensor`);
    t.assertLive(what);
    if (t.device !== this.device) fail("E_DEVICE", `${what} is on ${t.device}, the process group on ${this.device}`);
  }
  private op(o: { op?: ReduceOpName } | undefined): number {
    const name = o?.op ?? "sum";
    const code = REDUCE_CODE[name];
    if (code === undefined) fail("E_ARG", `unknown reduce op "${String(name)}" (sum, prod, max, min, avg)`);
    return code;
  }

  /** t ← op over ranks of t (in place). */
  allReduce(t: Tensor, o?: { op?: ReduceOpName }): void {
    const c = this.live();
    this.check(t, "allReduce tensor");
    const op = this.op(o);
    this.bytesSent += t.nbytes;
    if (c) c.allReduce(t.handle, t.handle, t.numel, DTYPE_CODE[t.dtype], op);
  }

  /** On `root`: t ← op over ranks of t (in place); other ranks' t is left as it was. */
  reduce(t: Tensor, root: number, o?: { op?: ReduceOpName }): void {
    const c = this.live();
    this.check(t, "reduce tensor");
    this.checkRoot(root);
    const op = this.op(o);
    this.bytesSent += t.nbytes;
    if (c) c.reduce(t.handle, t.handle, t.numel, DTYPE_CODE[t.dtype], op, root);
  }

  /** out ← this rank's slice of op over ranks of input (input has worldSize × out.numel elements). */
  reduceScatter(out: Tensor, input: Tensor, o?: { op?: ReduceOpName }): void {
    const c = this.live();
    this.check(out, "reduceScatter output");
    this.check(input, "reduceScatter input");
    if (out.dtype !== input.dtype) fail("E_DTYPE", `reduceScatter: input ${input.dtype}, output ${out.dtype}`);
    if (input.numel !== out.numel * this.worldSize)
      fail("E_SHAPE", `reduceScatter: input of ${input.numel} elements for ${this.worldSize} ranks × ${out.numel}`);
    const op = this.op(o);
    this.bytesSent += input.nbytes;
    if (c) c.reduceScatter(input.handle, out.handle, out.numel, DTYPE_CODE[out.dtype], op);
    else out.copyFrom(input);
  }

  /** out ← the inputs of every rank, in rank order (out has worldSize × input.numel elements). */
  allGather(out: Tensor, input: Tensor): void {
    const c = this.live();
    this.check(out, "allGather output");
    this.check(input, "allGather input");
    if (out.dtype !== input.dtype) fail("E_DTYPE", `allGather: input ${input.dtype}, output ${out.dtype}`);
    if (out.numel !== input.numel * this.worldSize)
      fail("E_SHAPE", `allGather: output of ${out.numel} elements for ${this.worldSize} ranks × ${input.numel}`);
    this.bytesSent += input.nbytes;
    if (c) c.allGather(input.handle, out.handle, input.numel, DTYPE_CODE[input.dtype]);
    else out.copyFrom(input);
  }

  /** t ← root's t on every rank (in place). */
  broadcast(t: Tensor, root = 0): void {
    const c = this.live();
    this.check(t, "broadcast tensor");
    this.checkRoot(root);
    if (this.rank === root) this.bytesSent += t.nbytes;
    if (c) c.broadcast(t.handle, t.handle, t.numel, DTYPE_CODE[t.dtype], root);
  }

  /** Runs fn with NCCL's grouping on, so its collectives go out as one launch (shm: one after
   *  the other, each done when it returns). */
  group(fn: () => void): void {
    const c = this.live();
    if (!c || this.backend !== "nccl") return fn();
    native().ncclGroupStart();
    this.grouping++;
    try {
      fn();
    } finally {
      this.grouping--;
      native().ncclGroupEnd();
    }
  }

  private checkRoot(root: number): void {
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize)
      fail("E_ARG", `root must be a rank in [0, ${this.worldSize}), got ${String(root)}`);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.comm?.dispose();
    this.comm = null;
  }
}

/**
 * Joins (or, for rank 0, opens) the process group. Ranks and the rendezvous file come from the
 * options or from what `slimopt launch` sets. A world of more than one runs over NCCL on CUDA
 * devices, over the shm backend on the CPU.
 */
export async function initProcessGroup(o: ProcessGroupOptions = {}): Promise<ProcessGroup> {
  const worldSize = o.worldSize ?? envInt("SLIMOPT_WORLD_SIZE") ?? 1;
  const rank = o.rank ?? envInt("SLIMOPT_RANK") ?? 0;
  if (!Number.isInteger(worldSize) || worldSize < 1) fail("E_ARG", `worldSize must be a positive integer, got ${String(worldSize)}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) fail("E_ARG", `rank must be in [0, ${worldSize}), got ${String(rank)}`);
  const timeoutMs = o.timeoutMs ?? envInt("SLIMOPT_DIST_TIMEOUT_MS") ?? 120_000;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) fail("E_ARG", `timeoutMs must be a positive integer, got ${String(timeoutMs)}`);
  if (o.backend !== undefined && !["nccl", "local", "shm"].includes(o.backend))
    fail("E_ARG", `backend must be "nccl", "local" or "shm", got ${String(o.backend)}`);
  let dev: Device;
  if (o.device !== undefined) dev = resolveDevice(o.device);
  else {
    const local = envInt("SLIMOPT_LOCAL_RANK") ?? rank;
    dev = native().deviceCount().count > 0 ? resolveDevice(`cuda:${local}`) : resolveDevice("cpu");
  }
  if (dev.kind === "cpu" && (worldSize > 1 || o.backend === "shm")) {
    if (o.backend !== undefined && o.backend !== "shm") fail("E_ARG", `a CPU process group of ${worldSize} ranks uses the shm backend, not ${o.backend}`);
    const chunkBytes = o.chunkBytes ?? envInt("SLIMOPT_SHM_CHUNK_BYTES") ?? 4 * 1024 * 1024;
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 512 * worldSize || chunkBytes % 64 !== 0)
      fail("E_ARG", `chunkBytes must be a multiple of 64 of at least ${512 * worldSize}, got ${String(chunkBytes)}`);
    const file = o.rendezvous ?? process.env.SLIMOPT_RENDEZVOUS;
    if (!file && worldSize > 1) fail("E_ARG", "a process group of several ranks needs a rendezvous file (option rendezvous or SLIMOPT_RENDEZVOUS; `slimopt launch` sets it)");
    if (file) fs.mkdirSync(path.dirname(file), { recursive: true });
    const comm = await openShm(rank, worldSize, file, timeoutMs, chunkBytes);
    return new ProcessGroup(rank, worldSize, dev, comm, "shm");
  }
  if (o.backend === "shm") fail("E_DEVICE", `the shm backend moves host memory; this rank is on ${dev}`);
  const nccl = native().ncclInfo();
  const useNccl = dev.kind === "cuda" && o.backend !== "local" && (worldSize > 1 || nccl.path !== null);
  if (!useNccl) {
    if (worldSize > 1) {
      if (dev.kind !== "cuda") fail("E_DEVICE", `a process group of ${worldSize} ranks needs CUDA devices; this rank is on ${dev}`);
      throw new SlimoptError("E_NO_CUDA", `a process group of ${worldSize} ranks needs NCCL: ${nccl.why || "not loadable"}`);
    }
    return new ProcessGroup(0, 1, dev, null);
  }
  if (nccl.path === null) throw new SlimoptError("E_NO_CUDA", `NCCL could not be loaded: ${nccl.why}`);
  // NVLink multicast (NVLS) stays off unless the user turned it on: a program that uses it can take
  // a shared host's GPUs out of service.
  if (process.env.NCCL_NVLS_ENABLE === undefined) process.env.NCCL_NVLS_ENABLE = "0";
  let id: Uint8Array;
  if (worldSize === 1) id = native().ncclUniqueId();
  else {
    const file = o.rendezvous ?? process.env.SLIMOPT_RENDEZVOUS;
    if (!file) fail("E_ARG", "a process group of several ranks needs a rendezvous file (option rendezvous or SLIMOPT_RENDEZVOUS; `slimopt launch` sets it)");
    fs.mkdirSync(path.dirname(file), { recursive: true });
    id = await exchangeId(rank, file, timeoutMs);
  }
  const comm = new (native().NcclComm)(dev.index, id, worldSize, rank);
  return new ProcessGroup(rank, worldSize, dev, comm);
}

// ---- DistributedOptimizer ---------------------------------------------------------------------

export interface DistributedOptions {
  /** Each rank keeps the optimizer state of its share of the parameters only (default true). */
  shardStates?: boolean;
  /** Gradients go out in buckets of about this many bytes, one grouped collective each (default 25 MiB). */
  bucketBytes?: number;
}

type AnyOptimizer = Optimizer<GroupOptions>;

/**
 * Data parallelism around any slimopt optimizer. Every rank holds all parameters; after the
 * backward pass each rank's gradients hold its own micro-batch's gradient.
 *
 * step(): (1) gradients are averaged over the ranks, in buckets (one grouped NCCL launch per
 * bucket, parameters in reverse order, the order a backward pass finishes them); with sharded
 * states the average goes only to the parameter's owner (reduce), else to every rank
 * (all-reduce); (2) the wrapped optimizer steps (sharded: over this rank's parameters only);
 * (3) sharded: each parameter is broadcast from its owner, again in buckets.
 *
 * Sharding is by whole tensors: parameters are dealt to ranks by size (largest first, to the
 * least loaded rank; ties to the lower rank), so every optimizer works unchanged, and per-tensor
 * state (a GaLore projector, a Grass selection) stays with one rank; parameters keep the seeds
 * their position gives them in the whole optimizer (`make` is called once over all groups to learn
 * it, before any state exists). Not yet the stochastic-rounding stream of bf16 parameters: it is
 * keyed by a tensor's index in its group, so sharded rounding draws differ from one process's
 * (equally unbiased). The non-finite skip is then decided per rank over the parameters it owns.
 * After step() the non-owners' gradients still hold their local values.
 */
export class DistributedOptimizer {
  readonly pg: ProcessGroup;
  readonly shardStates: boolean;
  readonly bucketBytes: number;
  /** The wrapped optimizer over this rank's parameters (null when it owns none). */
  readonly inner: AnyOptimizer | null;
  private readonly params: Parameter[];
  private readonly owners: Map<Parameter, number>;
  private readonly innerGroupOf: number[];  // group index of the spec -> inner group index (or -1)
  private readonly buckets: Parameter[][];
  private lastBytes = 0;

  constructor(pg: ProcessGroup, paramsOrGroups: Parameter[] | ParamGroupSpec<GroupOptions>[],
              make: (groups: ParamGroupSpec<GroupOptions>[]) => AnyOptimizer, o: DistributedOptions = {}) {
    if (!(pg instanceof ProcessGroup)) fail("E_ARG", "DistributedOptimizer needs a ProcessGroup");
    if (typeof make !== "function") fail("E_ARG", "DistributedOptimizer needs a function that builds the optimizer");
    if (!Array.isArray(paramsOrGroups) || paramsOrGroups.length === 0) fail("E_ARG", "DistributedOptimizer needs parameters");
    const specs: ParamGroupSpec<GroupOptions>[] = paramsOrGroups[0] instanceof Parameter
      ? [{ params: paramsOrGroups as Parameter[] }]
      : (paramsOrGroups as ParamGroupSpec<GroupOptions>[]);
    const bucketBytes = o.bucketBytes ?? 25 * 1024 * 1024;
    if (!Number.isFinite(bucketBytes) || bucketBytes <= 0) fail("E_ARG", `bucketBytes must be positive, got ${String(bucketBytes)}`);
    this.pg = pg;
    this.shardStates = o.shardStates ?? true;
    this.bucketBytes = bucketBytes;
    this.params = [];
    for (const s of specs) {
      if (s === null || typeof s !== "object" || !Array.isArray(s.params)) fail("E_ARG", "groups must be { params, ...options }");
      for (const p of s.params) {
        if (!(p instanceof Parameter)) fail("E_ARG", "a group holds something that is not a Parameter");
        if (p.device !== pg.device) fail("E_DEVICE", `${p.name} is on ${p.device}, the process group on ${pg.device}`);
        this.params.push(p);
      }
    }
    this.owners = dealByteSize(this.params, this.shardStates ? pg.worldSize : 1);
    const mine = (p: Parameter) => !this.shardStates || this.owners.get(p) === pg.rank;
    const innerSpecs: ParamGroupSpec<GroupOptions>[] = [];
    this.innerGroupOf = specs.map((s) => {
      const ps = s.params.filter(mine);
      if (ps.length === 0) return -1;
      innerSpecs.push({ ...s, params: ps });
      return innerSpecs.length - 1;
    });
    this.inner = innerSpecs.length > 0 ? buildShard(make, specs, innerSpecs, this.shardStates && pg.worldSize > 1) : null;
    this.buckets = bucketize([...this.params].reverse(), bucketBytes);
  }

  /** The rank that updates p (every rank when states are not sharded: then -1). */
  owner(p: Parameter): number {
    return this.shardStates ? (this.owners.get(p) ?? -1) : -1;
  }

  /** Sets the learning rate of group `gi` (as given to the constructor) on this rank. */
  setLr(lr: number, gi?: number): void {
    if (!this.inner) return;
    const targets = gi === undefined ? this.innerGroupOf : [this.innerGroupOf[gi]];
    for (const k of targets) if (k !== undefined && k >= 0) this.inner.paramGroups[k].lr = lr;
  }

  step(): void {
    const pg = this.pg;
    const before = pg.bytesSent;
    for (const b of this.buckets) {
      pg.group(() => {
        for (const p of b) {
          if (this.shardStates) pg.reduce(p.grad, this.owners.get(p)!, { op: "avg" });
          else pg.allReduce(p.grad, { op: "avg" });
        }
      });
    }
    this.inner?.step();
    if (this.shardStates && pg.worldSize > 1) {
      for (const b of this.buckets) pg.group(() => { for (const p of b) pg.broadcast(p.data, this.owners.get(p)!); });
    }
    this.lastBytes = pg.bytesSent - before;
  }

  /** Payload bytes this rank handed NCCL in the last step. */
  bytesCommunicatedLastStep(): number {
    return this.lastBytes;
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad.zero();
  }

  /** Bytes of optimizer state held by this rank. */
  stateBytes(): number {
    return this.inner ? this.inner.stateBytes() : 0;
  }

  skippedSteps(): Promise<number> {
    return this.inner ? this.inner.skippedSteps() : Promise.resolve(0);
  }

  dispose(): void {
    this.inner?.dispose();
  }
}

/**
 * The optimizer over this rank's groups. A shard's parameters keep the positions they have in
 * the optimizer over all of them (make(all) is built for that alone, before any state exists, and
 * disposed), so what defaults to a position (APOLLO's projection seeds, Grass's selection seeds)
 * is the same as in one process.
 */
function buildShard(make: (groups: ParamGroupSpec<GroupOptions>[]) => AnyOptimizer, all: ParamGroupSpec<GroupOptions>[],
                    mine: ParamGroupSpec<GroupOptions>[], sharded: boolean): AnyOptimizer {
  if (!sharded) return make(mine);
  const whole = make(all);
  const positions = new Map<Parameter, number>();
  for (const g of whole.paramGroups) for (const p of g.params) positions.set(p, positions.size);
  whole.dispose();
  return withParamPositions(positions, () => make(mine));
}

/** Owner of each parameter: largest first, to the least loaded rank (ties: lower rank). */
function dealByteSize(params: Parameter[], ranks: number): Map<Parameter, number> {
  const load = new Array<number>(ranks).fill(0);
  const order = params.map((p, i) => ({ p, i, bytes: p.numel * DTYPE_SIZE[p.dtype] }))
    .sort((a, b) => b.bytes - a.bytes || a.i - b.i);
  const out = new Map<Parameter, number>();
  for (const { p, bytes } of order) {
    let best = 0;
    for (let r = 1; r < ranks; r++) if (load[r] < load[best]) best = r;
    load[best] += bytes;
    out.set(p, best);
  }
  return out;
}

/** Consecutive parameters in buckets of at most `bytes` (a larger tensor is a bucket alone). */
function bucketize(params: Parameter[], bytes: number): Parameter[][] {
  const out: Parameter[][] = [];
  let cur: Parameter[] = [], size = 0;
  for (const p of params) {
    const b = p.numel * DTYPE_SIZE[p.dtype];
    if (cur.length > 0 && size + b > bytes) {
      out.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(p);
    size += b;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}
