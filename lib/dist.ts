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
import { inspectTensors, loadTensors, parseJsonStrict, saveTensors } from "./checkpoint";
import { Device, device as resolveDevice } from "./device";
import { DType, DTYPE_CODE, DTYPE_SIZE } from "./dtype";
import { fail, SlimoptError } from "./errors";
import { native, NcclCommHandle, ShmCommHandle } from "./native";
import { GemmPrecision } from "./linalg";
import { optimizerMetadata, parseOptimizerMetadata } from "./optim/checkpoint_meta";
import { GaLoreAdamW, GaLoreProjector, ProjType, projectGradient, rShape, sideOf, view2d } from "./optim/galore";
import { gatherCompact, GrassAdamW, grassView } from "./optim/grass";
import { Optimizer, GroupOptions, ParamGroupSpec, sameShape, withParamPositions } from "./optim/optimizer";
import { Parameter } from "./parameter";
import { Tensor, zeros } from "./tensor";

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
   *  others (ms; default SLIMOPT_DIST_TIMEOUT_MS, else 600000: a rank may be busy for minutes
   *  between collectives, saving a checkpoint say; a rank that has exited is noticed at once). */
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
  const timeoutMs = o.timeoutMs ?? envInt("SLIMOPT_DIST_TIMEOUT_MS") ?? 600_000;
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
  /** Average compact gradients where that gives the same update as averaging the full ones
   *  (default true): a GaLoreAdamW rank tensor on steps that keep its projector averages R, a
   *  GrassAdamW projected tensor between reselections averages its selected lines. Everything else
   *  (refresh steps, other optimizers, APOLLO: see below) averages the full gradient. */
  compress?: boolean;
}

type AnyOptimizer = Optimizer<GroupOptions>;

/** How a parameter's gradient can be averaged compactly, and what the ranks that do not own it
 *  hold to compute their compact gradient. APOLLO is not here on purpose: its update is the raw
 *  averaged gradient scaled per channel (G ⊙ s, then the norm-growth limiter on ‖G ⊙ s‖), so the
 *  owner needs the full averaged G whatever the projection; averaging R as well would only add
 *  bytes. */
interface CompactPlan {
  kind: "galore" | "grass";
  /** The tensor's projection is renewed at wrapper steps 0, gap, 2·gap, ... (full gradient then). */
  gap: number;
  /** Shape and dtype of the averaged compact gradient. */
  shape: number[];
  dtype: DType;
  /** GaLore: the projector's side, view and GEMM precision. */
  side?: GaLoreProjector["side"];
  rows: number;
  cols: number;
  rank: number;
  precision?: GemmPrecision;
  /** Grass: the selected side. */
  lines?: "rows" | "cols";
  /** The averaging buffer (allocated at the first compact step). */
  buf?: Tensor;
  /** Ranks that do not own the tensor: their copy of its projector (GaLore: P, and B for "full")
   *  or selection (Grass: the line indices). */
  replica?: Tensor[];
}

const DIST_FORMAT = "slimopt.distributed";
const DIST_FORMAT_VERSION = 1;
const DIST_META_KEY = "slimopt.dist";
const SHARD_FILE = /^shard-(0|[1-9][0-9]{0,8})-of-([1-9][0-9]{0,8})\.safetensors$/;
/** groupState entries that hold one value per parameter of the group (in group order): a re-deal
 *  regroups them; any other entry is the group's and must agree between the groups merged. */
const PER_PARAM_GROUP_STATE = ["projSides", "seeds"];

/** What each shard file of a DistributedOptimizer checkpoint says about the set (JSON in metadata). */
interface ShardMeta {
  format: string;
  version: number;
  shard: number;
  shards: number;
  /** Wrapper steps so far (the compression schedule). */
  calls: number;
  params: { name: string; shape: number[]; dtype: string }[];
  /** The shard holding each parameter's state. */
  owners: number[];
  /** The global index of each parameter of the shard's optimizer, in its order ([] when none). */
  inner: number[];
}

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
 * Compression (option compress, default on). Projection is linear, so where the projection is
 * known on every rank the average of the projected gradients is the projection of the average:
 * GaLoreAdamW rank tensors average R = project(G) (rows x r, r x cols or r x r, f32) on steps that
 * keep the projector, GrassAdamW projected tensors average their selected lines (r x n or m x r,
 * the parameter's dtype) between reselections. At a refresh the full gradient is averaged (the SVD
 * and the selection need it), the owner refreshes, and the new projector (or line indices) is
 * broadcast to the other ranks, which keep a copy for their projections (stateBytes counts it).
 * The update equals the single-process update on the averaged gradient to f32 rounding (on GPU to
 * the GEMM precision, TF32 by default: each rank's projection is rounded on its own). On a compact
 * step the owner's non-finite check reads the averaged R (or lines), and gradient clipping set on
 * the wrapped optimizer acts on p.grad, which such a step does not read: clip before step(), or
 * use compress: false.
 *
 * Sharding is by whole tensors: parameters are dealt to ranks by size (largest first, to the
 * least loaded rank; ties to the lower rank), so every optimizer works unchanged, and per-tensor
 * state (a GaLore projector, a Grass selection) stays with one rank; parameters keep the seeds
 * their position gives them in the whole optimizer (`make` is called once over all groups to learn
 * it, before any state exists; compression reads each parameter's resolved options (rank, gap,
 * side) from that optimizer too, which never steps). Not yet the stochastic-rounding stream of bf16
 * parameters: it is keyed by a tensor's index in its group, so sharded rounding draws differ from
 * one process's (equally unbiased). The non-finite skip is then decided per rank over the
 * parameters it owns. After step() the non-owners' gradients still hold their local values.
 */
export class DistributedOptimizer {
  readonly pg: ProcessGroup;
  readonly shardStates: boolean;
  readonly bucketBytes: number;
  readonly compress: boolean;
  /** The wrapped optimizer over this rank's parameters (null when it owns none). */
  readonly inner: AnyOptimizer | null;
  private readonly params: Parameter[];
  private readonly owners: Map<Parameter, number>;
  private readonly innerGroupOf: number[];  // group index of the spec -> inner group index (or -1)
  private readonly buckets: Parameter[][];
  private readonly plans = new Map<Parameter, CompactPlan>();
  /** GaLore projections of this rank: r x cols (Full) and rows x cols f32 (non-f32 gradients on CUDA). */
  private scratch: { t?: Tensor; big?: Tensor } = {};
  /** step() calls so far: the compression schedule (saved in checkpoints). */
  private calls = 0;
  /** After a load the other ranks' projector copies are out of date until the owners send theirs. */
  private replicasStale = false;
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
    if (o.compress !== undefined && typeof o.compress !== "boolean") fail("E_ARG", `compress must be true or false, got ${String(o.compress)}`);
    this.pg = pg;
    this.shardStates = o.shardStates ?? true;
    this.bucketBytes = bucketBytes;
    this.compress = o.compress ?? true;
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
    const innerSpecs: ParamGroupSpec<GroupOptions>[] = [];
    this.innerGroupOf = specs.map((s) => {
      const ps = s.params.filter((p) => this.mine(p));
      if (ps.length === 0) return -1;
      innerSpecs.push({ ...s, params: ps });
      return innerSpecs.length - 1;
    });
    // Sharded over several ranks: the optimizer over every group, built (no state) for the
    // parameters' whole-optimizer positions and resolved options, then disposed.
    const whole = this.shardStates && pg.worldSize > 1 ? make(specs) : null;
    try {
      this.inner = innerSpecs.length > 0 ? buildShard(make, whole, innerSpecs) : null;
      if (this.compress) this.planCompression(whole);
    } finally {
      whole?.dispose();
    }
    this.buckets = bucketize([...this.params].reverse(), bucketBytes);
  }

  /** This rank updates p (every rank does when states are not sharded). */
  private mine(p: Parameter): boolean {
    return !this.shardStates || this.owners.get(p) === this.pg.rank;
  }

  /** Reads each parameter's resolved options from the optimizer that owns it here, or from the
   *  one over every group (never stepped) for the parameters this rank does not own. */
  private planCompression(whole: AnyOptimizer | null): void {
    for (const p of this.params) {
      const src = this.mine(p) ? this.inner : whole;
      const plan = src ? compactPlanOf(src, p) : undefined;
      if (plan) this.plans.set(p, plan);
    }
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

  /** Whether p's gradient is averaged compactly at the next step (false at a refresh, and for
   *  parameters without a compact form). */
  compactNext(p: Parameter): boolean {
    const plan = this.plans.get(p);
    return plan !== undefined && this.calls % plan.gap !== 0;
  }

  step(): void {
    const pg = this.pg;
    const owners = this.owners;
    const sharded = this.shardStates;
    const many = sharded && pg.worldSize > 1;
    // Decide the step's form and allocate everything before the first collective.
    const compact = new Set<Parameter>();
    for (const [p, plan] of this.plans) {
      const due = this.calls % plan.gap === 0;
      if (this.mine(p) && (this.inner as unknown as { needsFullGrad(p: Parameter): boolean }).needsFullGrad(p) !== due)
        fail("E_ARG", `${p.name}: the wrapped optimizer's refresh schedule is not the wrapper's (was it stepped directly?)`);
      if (!due) compact.add(p);
      this.ensureBuffers(p, plan, !due);
    }
    const before = pg.bytesSent;
    if (this.replicasStale) {
      // After a load: the owners' projectors (and selections) go to the other ranks first.
      if (many) this.sendReplicas([...compact]);
      this.replicasStale = false;
    }
    for (const p of compact) this.compactGradient(p, this.plans.get(p)!);
    for (const b of this.buckets) {
      pg.group(() => {
        for (const p of b) {
          const t = compact.has(p) ? this.plans.get(p)!.buf! : p.grad;
          if (sharded) pg.reduce(t, owners.get(p)!, { op: "avg" });
          else pg.allReduce(t, { op: "avg" });
        }
      });
    }
    if (this.inner) {
      for (const p of compact) {
        if (!this.mine(p)) continue;
        const plan = this.plans.get(p)!;
        if (plan.kind === "galore") (this.inner as unknown as GaLoreAdamW).setProjectedGrad(p, plan.buf!);
        else (this.inner as unknown as GrassAdamW).setCompactGrad(p, plan.buf!);
      }
      this.inner.step();
    }
    if (many) {
      for (const b of this.buckets) pg.group(() => { for (const p of b) pg.broadcast(p.data, owners.get(p)!); });
      // Renewed projections go to the ranks that project with them.
      this.sendReplicas([...this.plans.keys()].filter((p) => !compact.has(p)));
    }
    this.calls++;
    this.lastBytes = pg.bytesSent - before;
  }

  /** Broadcasts the projectors (GaLore) or line indices (Grass) of `ps` from their owners. */
  private sendReplicas(ps: Parameter[]): void {
    if (ps.length === 0) return;
    this.pg.group(() => {
      for (const p of ps) for (const t of this.projectionTensors(p)) this.pg.broadcast(t, this.owners.get(p)!);
    });
  }

  /** The tensors that fix p's projection on this rank: the owner's live ones, else the copy. */
  private projectionTensors(p: Parameter): Tensor[] {
    const plan = this.plans.get(p)!;
    if (!this.mine(p)) return plan.replica!;
    if (plan.kind === "galore") {
      const q = (this.inner as unknown as GaLoreAdamW).projector(p);
      return q.projB ? [q.proj, q.projB] : [q.proj];
    }
    return [(this.inner as unknown as GrassAdamW).selection(p).indices];
  }

  /** The averaging buffer (when `compactNow`) and, on a rank that does not own p, the copy of its
   *  projection. Allocated once, zero: a copy is filled by the first refresh's broadcast. */
  private ensureBuffers(p: Parameter, plan: CompactPlan, compactNow: boolean): void {
    const dev = p.device;
    if (compactNow && !plan.buf) plan.buf = zeros(plan.shape, { dtype: plan.dtype, device: dev });
    if (!this.mine(p) && !plan.replica) {
      const shapes = plan.kind === "grass" ? [[plan.rank]]
        : plan.side === "right" ? [[plan.rank, plan.cols]] : plan.side === "left" ? [[plan.rows, plan.rank]]
        : [[plan.rows, plan.rank], [plan.rank, plan.cols]];
      const made: Tensor[] = [];
      try {
        for (const s of shapes) made.push(zeros(s, { dtype: plan.kind === "grass" ? "i32" : "f32", device: dev }));
      } catch (e) {
        for (const t of made) t.dispose();
        throw e;
      }
      plan.replica = made;
    }
    if (compactNow && plan.kind === "galore") {
      const needT = plan.side === "full" ? plan.rank * plan.cols : 0;
      const needBig = dev.kind === "cuda" && p.grad.dtype !== "f32" ? plan.rows * plan.cols : 0;
      // Grown to the largest tensor seen; the old one is freed once the new one exists.
      for (const [k, n] of [["t", needT], ["big", needBig]] as const) {
        const old = this.scratch[k];
        if (n === 0 || (old && old.numel >= n)) continue;
        this.scratch[k] = zeros([n], { device: dev });
        old?.dispose();
      }
    }
  }

  /** This rank's compact gradient of p into plan.buf: R = project(G) (GaLore) or G's selected
   *  lines (Grass), with the projection in effect on every rank. */
  private compactGradient(p: Parameter, plan: CompactPlan): void {
    const [a, b] = this.projectionTensors(p);
    if (plan.kind === "galore") {
      projectGradient(p.grad, { side: plan.side!, rows: plan.rows, cols: plan.cols, rank: plan.rank, proj: a, projB: b },
                      plan.buf!, { precision: plan.precision, scratchT: this.scratch.t, scratchBig: this.scratch.big });
    } else {
      gatherCompact(p.grad, { side: plan.lines!, indices: a }, plan.buf!);
    }
  }

  /** Payload bytes this rank handed the collectives in the last step (what goes over the wire:
   *  compact gradients where compressed, projectors/selections broadcast after a refresh). */
  bytesCommunicatedLastStep(): number {
    return this.lastBytes;
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad.zero();
  }

  /** Bytes of optimizer state held by this rank: the wrapped optimizer's, plus the copies of the
   *  projectors (or selections) of parameters it does not own. */
  stateBytes(): number {
    let n = this.inner ? this.inner.stateBytes() : 0;
    for (const plan of this.plans.values()) for (const t of plan.replica ?? []) if (!t.disposed) n += t.nbytes;
    return n;
  }

  /** Bytes of the averaging buffers and projection scratch (not state). */
  scratchBytes(): number {
    let n = 0;
    for (const plan of this.plans.values()) if (plan.buf && !plan.buf.disposed) n += plan.buf.nbytes;
    for (const t of [this.scratch.t, this.scratch.big]) if (t && !t.disposed) n += t.nbytes;
    return n;
  }

  skippedSteps(): Promise<number> {
    return this.inner ? this.inner.skippedSteps() : Promise.resolve(0);
  }

  // ---- checkpoints ------------------------------------------------------------------------------
  //
  // Each rank writes the state it holds to its own file, `<dir>/shard-<rank>-of-<N>.safetensors`
  // (the wrapped optimizer's own checkpoint format, plus the owner map in the metadata): no state
  // crosses the wire and no rank ever holds more than its share, and the N files are written in
  // parallel. Without sharded states rank 0 alone writes shard-0-of-1 (every rank holds the same
  // state). The directory must be reachable by every rank that loads (one host: any directory).
  // A load checks the whole set first (every shard present, the same step, the same parameters and
  // owner map; with saves of several world sizes in the directory, the newest complete set). On
  // the same world size each rank loads its own shard as the optimizer's load does;
  // on another, parameters are re-dealt and each rank gathers the states of the parameters it now
  // owns from the shards that hold them (group step counters must then agree between the groups
  // merged). Save, then make sure every rank finished (a barrier, or await on every rank before a
  // collective) before another process loads.

  /** Writes this rank's shard of the state into directory `dir` (created when missing). */
  async save(dir: string): Promise<void> {
    if (typeof dir !== "string" || dir.length === 0) fail("E_ARG", "save(dir) needs a directory path");
    const shards = this.shardStates ? this.pg.worldSize : 1;
    if (!this.shardStates && this.pg.rank !== 0) return;
    const shard = this.shardStates ? this.pg.rank : 0;
    const index = new Map(this.params.map((p, i) => [p, i]));
    const meta: ShardMeta = {
      format: DIST_FORMAT, version: DIST_FORMAT_VERSION, shard, shards, calls: this.calls,
      params: this.params.map((p) => ({ name: p.name, shape: [...p.shape], dtype: p.dtype })),
      owners: this.params.map((p) => (this.shardStates ? this.owners.get(p)! : 0)),
      inner: this.inner ? this.inner.paramGroups.flatMap((g) => g.params.map((p) => index.get(p)!)) : [],
    };
    await fs.promises.mkdir(dir, { recursive: true });
    const file = path.join(dir, `shard-${shard}-of-${shards}.safetensors`);
    const extra = { [DIST_META_KEY]: JSON.stringify(meta) };
    if (this.inner) await this.inner.save(file, { metadata: extra });
    else await saveTensors(file, {}, extra);
  }

  /** Restores a checkpoint written by save() on any number of ranks. Everything is checked before
   *  any state changes; a refusal is E_CHECKPOINT and leaves the optimizer as it was. */
  async load(dir: string): Promise<void> {
    if (typeof dir !== "string" || dir.length === 0) fail("E_ARG", "load(dir) needs a directory path");
    const set = await readShardSet(dir, this.params);
    const index = new Map(this.params.map((p, i) => [p, i]));
    const innerGlobal = this.inner ? this.inner.paramGroups.flatMap((g) => g.params.map((p) => index.get(p)!)) : [];
    const shard = this.shardStates ? this.pg.rank : 0;
    const mineNow = this.params.map((p) => (this.shardStates ? this.owners.get(p)! : 0));
    const sameDeal = set.shards === (this.shardStates ? this.pg.worldSize : 1) &&
      set.meta[0].owners.every((o, i) => o === mineNow[i]) &&
      sameShape(set.meta[shard]?.inner ?? [], innerGlobal);
    if (this.inner) {
      if (sameDeal) await this.inner.load(set.files[shard]);
      else await loadRedealt(this.inner, innerGlobal, set);
    }
    this.calls = set.meta[0].calls;
    this.replicasStale = true;
  }

  dispose(): void {
    this.inner?.dispose();
    for (const plan of this.plans.values()) {
      plan.buf?.dispose();
      for (const t of plan.replica ?? []) t.dispose();
      plan.buf = undefined;
      plan.replica = undefined;
    }
    this.scratch.t?.dispose();
    this.scratch.big?.dispose();
    this.scratch = {};
  }
}

/** p's compact form in `opt` (its resolved group options), or undefined. */
function compactPlanOf(opt: AnyOptimizer, p: Parameter): CompactPlan | undefined {
  const g = opt.paramGroups.find((x) => x.params.includes(p));
  if (!g || g.rank === undefined || g.rank === null) return undefined;
  const gap = g.updateProjGap as number;
  if (opt instanceof GaLoreAdamW) {
    const [rows, cols] = view2d(p);
    const rank = g.rank as number;
    const side = sideOf(g.projType as ProjType, rows, cols);
    return { kind: "galore", gap, shape: rShape(side, rows, cols, rank), dtype: "f32", side: (["right", "left", "full"] as const)[side],
             rows, cols, rank, precision: g.precision as GemmPrecision };
  }
  if (opt instanceof GrassAdamW) {
    const v = grassView(p.shape, g.rank as number);
    if (v.kind === "dense") return undefined;
    return { kind: "grass", gap, shape: opt.compactShape(p), dtype: p.dtype, rows: v.rows, cols: v.cols, rank: v.rank, lines: v.kind };
  }
  return undefined;
}


interface ShardSet {
  shards: number;
  files: string[];
  meta: ShardMeta[];
  /** Each shard's own metadata (the optimizer checkpoint's strings). */
  raw: Record<string, string>[];
}

/** Finds and checks the one complete set of shard files in `dir` against `params`. */
async function readShardSet(dir: string, params: Parameter[]): Promise<ShardSet> {
  const bad = (m: string): never => fail("E_CHECKPOINT", `${dir}: ${m}`);
  let names: string[] = [];
  try {
    names = await fs.promises.readdir(dir);
  } catch (e) {
    bad(`cannot read the checkpoint directory (${(e as Error).message})`);
  }
  const sets = new Map<number, Set<number>>();
  for (const n of names) {
    const m = SHARD_FILE.exec(n);
    if (!m) continue;
    const k = Number(m[1]), total = Number(m[2]);
    if (!sets.has(total)) sets.set(total, new Set());
    sets.get(total)!.add(k);
  }
  if (sets.size === 0) bad("no shard-<k>-of-<n>.safetensors files");
  if (sets.size === 1) return checkShardSet(dir, [...sets][0], params);
  // Sets of several world sizes (saves into one directory from runs of different sizes): the
  // newest complete one is loaded; a tie, or none complete, is refused.
  const good: ShardSet[] = [];
  const why: string[] = [];
  for (const entry of [...sets].sort((a, b) => a[0] - b[0])) {
    try {
      good.push(await checkShardSet(dir, entry, params));
    } catch (e) {
      if (!(e instanceof SlimoptError) || e.code !== "E_CHECKPOINT") throw e;
      why.push(`set of ${entry[0]}: ${e.message.replace(/^E_CHECKPOINT: /, "")}`);
    }
  }
  if (good.length === 0) bad(`no complete set of shards (${why.join("; ")})`);
  const newest = Math.max(...good.map((g) => g.meta[0].calls));
  const pick = good.filter((g) => g.meta[0].calls === newest);
  if (pick.length > 1) bad(`sets of ${pick.map((g) => g.shards).join(" and ")} shards were both saved at step ${newest}: which to load is ambiguous`);
  return pick[0];
}

/** Checks one set of shard files (`shards` of them, indices `have`) against `params`. */
async function checkShardSet(dir: string, [shards, have]: [number, Set<number>], params: Parameter[]): Promise<ShardSet> {
  const bad = (m: string): never => fail("E_CHECKPOINT", `${dir}: ${m}`);
  for (let k = 0; k < shards; k++) if (!have.has(k)) bad(`shard-${k}-of-${shards}.safetensors is missing`);
  if (have.size !== shards) bad(`shard files beyond ${shards - 1} in a set of ${shards}`);
  const files = Array.from({ length: shards }, (_, k) => path.join(dir, `shard-${k}-of-${shards}.safetensors`));
  const raw = await Promise.all(files.map(async (f) => (await inspectTensors(f)).metadata));
  const meta = raw.map((r, k) => parseShardMeta(r, files[k], k, shards));
  meta.forEach((m, k) => {
    const f = files[k];
    if (m.calls !== meta[0].calls) fail("E_CHECKPOINT", `${f}: saved at step ${m.calls}, shard 0 at step ${meta[0].calls} (shards of different saves)`);
    if (JSON.stringify(m.params) !== JSON.stringify(meta[0].params) || !sameShape(m.owners, meta[0].owners))
      fail("E_CHECKPOINT", `${f}: its parameter list or owner map differs from shard 0's`);
    const expect = m.owners.flatMap((o, i) => (o === k ? [i] : []));
    if (!sameShape([...m.inner].sort((a, b) => a - b), expect)) fail("E_CHECKPOINT", `${f}: holds parameters [${m.inner}], the owner map says [${expect}]`);
    if (m.inner.length > 0 && raw[k].format === undefined) fail("E_CHECKPOINT", `${f}: holds parameters but no optimizer state`);
  });
  const m0 = meta[0];
  if (m0.params.length !== params.length) bad(`the checkpoint has ${m0.params.length} parameters, this optimizer ${params.length}`);
  params.forEach((p, i) => {
    const q = m0.params[i];
    if (q.dtype !== p.dtype || !sameShape(q.shape, p.shape))
      bad(`parameter ${i} (${p.name}) is [${q.shape}] ${q.dtype} in the checkpoint, [${p.shape}] ${p.dtype} here`);
  });
  return { shards, files, meta, raw };
}

function parseShardMeta(raw: Record<string, string>, file: string, k: number, shards: number): ShardMeta {
  const bad = (m: string): never => fail("E_CHECKPOINT", `${file}: ${m}`);
  const text = raw[DIST_META_KEY];
  if (typeof text !== "string") bad(`no "${DIST_META_KEY}" metadata (not a DistributedOptimizer shard)`);
  const m = parseJsonStrict(text, `${file}: metadata "${DIST_META_KEY}"`) as ShardMeta;
  if (m === null || typeof m !== "object" || m.format !== DIST_FORMAT) bad(`not a DistributedOptimizer shard`);
  if (m.version !== DIST_FORMAT_VERSION) bad(`shard format version ${String(m.version)}; this slimopt reads ${DIST_FORMAT_VERSION}`);
  if (m.shard !== k || m.shards !== shards) bad(`says it is shard ${String(m.shard)} of ${String(m.shards)}, its name ${k} of ${shards}`);
  const nat = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
  if (!nat(m.calls)) bad("bad step count");
  if (!Array.isArray(m.params) || m.params.some((q) => q === null || typeof q !== "object" || typeof q.dtype !== "string" ||
      !Array.isArray(q.shape) || q.shape.some((s) => !nat(s))))
    bad("bad parameter list");
  if (!Array.isArray(m.owners) || m.owners.length !== m.params.length || m.owners.some((o) => !nat(o) || o >= shards)) bad("bad owner map");
  if (!Array.isArray(m.inner) || m.inner.some((i) => !nat(i) || i >= m.params.length) || new Set(m.inner).size !== m.inner.length)
    bad("bad list of the shard's parameters");
  return m;
}

/** Loads into `inner` (whose parameters are `innerGlobal`, global indices in its order) the states
 *  of its parameters from the shards that hold them: one optimizer checkpoint is assembled (state
 *  tensors renamed to inner's order, the groups' counters and state taken from the groups they
 *  come from, which must agree within each new group) and loaded through inner.load(), which
 *  checks it whole before anything changes. */
async function loadRedealt(inner: AnyOptimizer, innerGlobal: number[], set: ShardSet): Promise<void> {
  const cpu = resolveDevice("cpu");
  const needed = [...new Set(innerGlobal.map((j) => set.meta[0].owners[j]))].sort((a, b) => a - b);
  const loaded = new Map<number, { tensors: Record<string, Tensor>; meta: ReturnType<typeof parseOptimizerMetadata> }>();
  const tmp = path.join(os.tmpdir(), `slimopt-redeal-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.safetensors`);
  try {
    for (const k of needed) {
      const { tensors, metadata } = await loadTensors(set.files[k], { device: cpu });
      loaded.set(k, { tensors, meta: parseOptimizerMetadata(metadata, set.files[k]) });
    }
    const bad = (m: string): never => fail("E_CHECKPOINT", `${path.dirname(set.files[0])}: ${m}`);
    const mine = inner.stateDict();
    const steps = needed.map((k) => set.raw[k]["slimopt.step_count"]);
    if (steps.some((s) => s !== steps[0])) bad(`the shards disagree on the optimizer's step count (${steps.join(", ")})`);
    // Where each of inner's parameters comes from: shard, index there, group there.
    const src = innerGlobal.map((j) => {
      const k = set.meta[0].owners[j];
      const i = set.meta[k].inner.indexOf(j);
      const sp = loaded.get(k)!.meta.params[i];
      if (!sp) bad(`shard ${k} lists parameter ${j} but has no state entry for it`);
      return { k, i, g: sp.group };
    });
    const tensors: Record<string, Tensor> = {};
    const groups: Record<string, unknown>[] = [];
    const groupState: Record<string, unknown>[] = [];
    let anyGroupState = false;
    const compares: { a: Tensor; b: Tensor; what: string }[] = [];
    mine.groups.forEach((_, gn) => {
      const members = mine.params.map((q, i) => ({ q, i })).filter((x) => x.q.group === gn).map((x) => x.i);
      const from = members.map((i) => src[i]);
      const first = from[0];
      const firstMeta = loaded.get(first.k)!.meta;
      groups.push(firstMeta.groups[first.g]);
      const gs: Record<string, unknown> = {};
      const fgs = firstMeta.groupState?.[first.g];
      if (fgs) anyGroupState = true;
      for (const [key, v] of Object.entries(fgs ?? {})) if (!PER_PARAM_GROUP_STATE.includes(key)) gs[key] = v;
      // Group tensors (counters, ...) of the first source group.
      const groupTensors = (s: { k: number; g: number }) => {
        const out: Record<string, Tensor> = {};
        const pre = `group.${s.g}.`;
        for (const [n, t] of Object.entries(loaded.get(s.k)!.tensors)) if (n.startsWith(pre)) out[n.slice(pre.length)] = t;
        return out;
      };
      const base = groupTensors(first);
      for (const [what, t] of Object.entries(base)) tensors[`group.${gn}.${what}`] = t;
      for (const s of from) {
        const m = loaded.get(s.k)!.meta;
        if (JSON.stringify(m.groups[s.g]) !== JSON.stringify(firstMeta.groups[first.g]))
          bad(`parameters of one group now come from groups with different options in the checkpoint`);
        const other = m.groupState?.[s.g] ?? {};
        for (const [key, v] of Object.entries(other))
          if (!PER_PARAM_GROUP_STATE.includes(key) && JSON.stringify(v) !== JSON.stringify(gs[key]))
            bad(`group state "${key}" differs between the shards merged into group ${gn} (${JSON.stringify(v)} vs ${JSON.stringify(gs[key])})`);
        const theirs = groupTensors(s);
        const names = Object.keys(theirs).sort();
        if (names.join() !== Object.keys(base).sort().join()) bad(`the groups merged into group ${gn} hold different state tensors`);
        for (const n of names) compares.push({ a: theirs[n], b: base[n], what: `group tensor "${n}" differs between the shards merged into group ${gn} (a step skipped on some ranks only cannot be re-dealt)` });
      }
      // Per-parameter entries, regrouped.
      for (const key of PER_PARAM_GROUP_STATE) {
        const vals = from.map((s) => {
          const m = loaded.get(s.k)!.meta;
          const arr = m.groupState?.[s.g]?.[key];
          if (arr === undefined) return undefined;
          if (!Array.isArray(arr)) bad(`group state "${key}" is not a list`);
          const pos = m.params.slice(0, s.i).filter((q) => q.group === s.g).length;
          return (arr as unknown[])[pos];
        });
        if (vals.every((v) => v === undefined)) continue;
        if (vals.some((v) => v === undefined)) bad(`group state "${key}" is missing for some parameters of group ${gn}`);
        gs[key] = vals;
      }
      groupState.push(gs);
      for (const i of members) {
        const s = src[i];
        const pre = `param.${s.i}.`;
        for (const [n, t] of Object.entries(loaded.get(s.k)!.tensors)) if (n.startsWith(pre)) tensors[`param.${i}.${n.slice(pre.length)}`] = t;
      }
    });
    for (const c of compares) if (!(await sameBytes(c.a, c.b))) bad(c.what);
    const step = steps[0];
    const sd = { optimizer: mine.optimizer, groups, params: mine.params, groupState: anyGroupState ? groupState : undefined };
    await saveTensors(tmp, tensors, optimizerMetadata(sd, step !== undefined ? { "slimopt.step_count": step } : undefined));
    await inner.load(tmp);
  } finally {
    for (const { tensors } of loaded.values()) for (const t of Object.values(tensors)) t.dispose();
    await fs.promises.rm(tmp, { force: true });
  }
}

/** Equal dtype, shape and bytes (host tensors of a checkpoint). */
async function sameBytes(a: Tensor, b: Tensor): Promise<boolean> {
  if (a.dtype !== b.dtype || a.numel !== b.numel) return false;
  const [x, y] = await Promise.all([a.toTypedArray(), b.toTypedArray()]);
  const bx = Buffer.from(x.buffer, x.byteOffset, x.byteLength), by = Buffer.from(y.buffer, y.byteOffset, y.byteLength);
  return bx.equals(by);
}

/**
 * The optimizer over this rank's groups. A shard's parameters keep the positions they have in
 * `whole`, the optimizer over all of them (built before any state exists; null when not sharded),
 * so what defaults to a position (APOLLO's projection seeds, Grass's selection seeds) is the same
 * as in one process.
 */
function buildShard(make: (groups: ParamGroupSpec<GroupOptions>[]) => AnyOptimizer, whole: AnyOptimizer | null,
                    mine: ParamGroupSpec<GroupOptions>[]): AnyOptimizer {
  if (!whole) return make(mine);
  const positions = new Map<Parameter, number>();
  for (const g of whole.paramGroups) for (const p of g.params) positions.set(p, positions.size);
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
