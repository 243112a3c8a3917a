// safetensors files: writer, validating reader, atomic replacement.
//
// The format (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 N, then N
// bytes of UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string:
// string}}, then the data: every tensor's bytes, little-endian, row-major, at data_offsets
// relative to the start of the data, which the tensors cover contiguously (no gaps, no overlaps,
// nothing after the last one). We pad the header with spaces to a multiple of 8 so the data
// starts 8-aligned, and order the data by element size (largest first) so that every tensor is
// aligned to its element size, as the reference writer does.
//
// The reader trusts nothing: every length is checked against the real file size before anything
// is allocated, the JSON is parsed by a strict parser that refuses duplicate keys and deep
// nesting, and every problem is an E_CHECKPOINT that names the file and what is wrong.
import { randomBytes } from "crypto";
import { constants as fsc, promises as fsp } from "fs";
import * as os from "os";
import * as path from "path";
import { Device, device as resolveDevice } from "./device";
import { DType, DTYPE_SIZE } from "./dtype";
import { fail, SlimoptError } from "./errors";
import { native } from "./native";
import { Tensor } from "./tensor";

/** slimopt dtype → safetensors dtype name. */
export const SAFETENSORS_DTYPE: Readonly<Record<DType, string>> = { f32: "F32", bf16: "BF16", f16: "F16", u8: "U8", i32: "I32" };
const FROM_SAFETENSORS: Readonly<Record<string, DType>> = { F32: "f32", BF16: "bf16", F16: "f16", U8: "u8", I32: "i32" };
/** dtypes of the format slimopt cannot hold (named in the refusal). */
const OTHER_SAFETENSORS_DTYPES = new Set(["F64", "I64", "U64", "I16", "U16", "I8", "U32", "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"]);

/** The reference implementation refuses headers above 100 MB; so do we, before allocating. */
export const MAX_HEADER_BYTES = 100_000_000;
/** Nesting allowed in the header JSON (the format needs 3). */
const MAX_JSON_DEPTH = 32;
/** Bytes per read/write call: large enough to be fast, small enough to interleave. */
const IO_CHUNK = 16 << 20;

const LITTLE_ENDIAN = os.endianness() === "LE";

/** One tensor as a header describes it (checked). */
export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Byte range inside the data section. */
  begin: number;
  end: number;
}

/** A checked header: tensors in data order, metadata, and where the data starts in the file. */
export interface SafetensorsHeader {
  tensors: TensorInfo[];
  metadata: Record<string, string>;
  dataStart: number;
  fileSize: number;
}

export interface LoadTensorsOptions {
  /** Where the tensors are created (default: defaultDevice(), as for tensor()). */
  device?: string | Device;
}

const bad = (file: string, msg: string): never => fail("E_CHECKPOINT", `${file}: ${msg}`);

/** Defines an own enumerable property (safe for names such as "__proto__"). */
function setOwn<T>(o: Record<string, T>, k: string, v: T): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

// ---------------------------------------------------------------------------------------------
// Strict JSON: JSON.parse keeps the last of duplicate keys silently and "__proto__" keys are a
// trap; the header is small (≤ 100 MB) and parsed once, so a plain recursive-descent parser with
// a depth limit is the honest tool. Objects are returned as null-prototype records.

/** Parses JSON, refusing duplicate keys and nesting deeper than `maxDepth`. Throws E_CHECKPOINT
 *  with `what` and the character offset of the problem. */
export function parseJsonStrict(text: string, what: string, maxDepth = MAX_JSON_DEPTH): unknown {
  let i = 0;
  const err = (m: string): never => fail("E_CHECKPOINT", `${what}: ${m} at character ${i}`);
  const ws = () => {
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
  };
  const numRe = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  const str = (): string => {
    const start = i;
    i++;  // opening quote
    for (;;) {
      if (i >= text.length) err("unterminated string");
      const c = text.charCodeAt(i);
      if (c === 0x22) break;
      if (c < 0x20) err("control character in a string");
      if (c === 0x5c) i++;  // the escaped character is checked by JSON.parse below
      i++;
    }
    i++;
    try {
      return JSON.parse(text.slice(start, i)) as string;
    } catch {
      return err("bad escape in a string");
    }
  };
  const value = (depth: number): unknown => {
    if (depth > maxDepth) err(`nested deeper than ${maxDepth}`);
    ws();
    if (i >= text.length) err("unexpected end");
    const c = text[i];
    if (c === "{") {
      i++;
      const obj: Record<string, unknown> = Object.create(null);
      const seen = new Set<string>();
      ws();
      if (text[i] === "}") { i++; return obj; }
      for (;;) {
        ws();
        if (text[i] !== "\"") err("expected a key");
        const k = str();
        if (seen.has(k)) err(`duplicate key ${JSON.stringify(k)}`);
        seen.add(k);
        ws();
        if (text[i] !== ":") err("expected ':'");
        i++;
        setOwn(obj, k, value(depth + 1));
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "}") { i++; return obj; }
        err("expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const arr: unknown[] = [];
      ws();
      if (text[i] === "]") { i++; return arr; }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "]") { i++; return arr; }
        err("expected ',' or ']'");
      }
    }
    if (c === "\"") return str();
    if (text.startsWith("true", i)) { i += 4; return true; }
    if (text.startsWith("false", i)) { i += 5; return false; }
    if (text.startsWith("null", i)) { i += 4; return null; }
    numRe.lastIndex = i;
    const m = numRe.exec(text);
    if (!m) err("unexpected character");
    i += m![0].length;
    return Number(m![0]);
  };
  const v = value(0);
  ws();
  if (i !== text.length) err("trailing characters after the JSON value");
  return v;
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === "object" && !Array.isArray(x);
}

// ---------------------------------------------------------------------------------------------
// Header

/** Checks a header's JSON text against a data section of `dataBytes` bytes. */
export function parseHeaderText(text: string, dataBytes: number, file: string): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  if (text.length === 0 || text[0] !== "{") bad(file, "the header is not a JSON object (it must start with '{')");
  const root = parseJsonStrict(text, `${file}: header JSON`);
  if (!isRecord(root)) bad(file, "the header is not a JSON object");
  const hdr = root as Record<string, unknown>;
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const name of Object.keys(hdr)) {
    const e = hdr[name];
    if (name === "__metadata__") {
      if (e === null) continue;
      if (!isRecord(e)) bad(file, "__metadata__ must be an object of strings");
      for (const [k, v] of Object.entries(e as Record<string, unknown>)) {
        if (typeof v !== "string") bad(file, `__metadata__ value of ${JSON.stringify(k)} is not a string`);
        setOwn(metadata, k, v as string);
      }
      continue;
    }
    const tn = `tensor ${JSON.stringify(name)}`;
    if (!isRecord(e)) bad(file, `${tn}: entry is not an object`);
    const ent = e as Record<string, unknown>;
    for (const k of ["dtype", "shape", "data_offsets"])
      if (!(k in ent)) bad(file, `${tn}: missing key "${k}"`);
    const st = ent.dtype;
    if (typeof st !== "string") bad(file, `${tn}: dtype is not a string`);
    const dtype = FROM_SAFETENSORS[st as string];
    if (dtype === undefined) {
      if (OTHER_SAFETENSORS_DTYPES.has(st as string)) bad(file, `${tn}: dtype ${st} is not one slimopt holds (F32, BF16, F16, U8, I32)`);
      bad(file, `${tn}: unknown dtype ${JSON.stringify(st)}`);
    }
    const shape = ent.shape;
    if (!Array.isArray(shape)) bad(file, `${tn}: shape is not an array`);
    let numel = 1;
    for (const s of shape as unknown[]) {
      if (typeof s !== "number" || !Number.isSafeInteger(s) || s < 0) bad(file, `${tn}: bad dimension ${JSON.stringify(s)} in shape`);
      numel *= s as number;
      if (!Number.isSafeInteger(numel)) bad(file, `${tn}: shape ${JSON.stringify(shape)} is impossibly large`);
    }
    const off = ent.data_offsets;
    if (!Array.isArray(off) || off.length !== 2) bad(file, `${tn}: data_offsets must be [begin, end]`);
    const [begin, end] = off as unknown[];
    for (const x of [begin, end])
      if (typeof x !== "number" || !Number.isSafeInteger(x) || x < 0) bad(file, `${tn}: bad data_offsets ${JSON.stringify(off)}`);
    const b = begin as number, en = end as number;
    if (en < b) bad(file, `${tn}: data_offsets [${b}, ${en}] end before they begin`);
    if (en > dataBytes) bad(file, `${tn}: data_offsets [${b}, ${en}] lie beyond the data section (${dataBytes} bytes; truncated file?)`);
    const nbytes = numel * DTYPE_SIZE[dtype];
    if (!Number.isSafeInteger(nbytes) || nbytes !== en - b)
      bad(file, `${tn}: ${st} ${JSON.stringify(shape)} needs ${nbytes} bytes, data_offsets [${b}, ${en}] hold ${en - b}`);
    tensors.push({ name, dtype, shape: (shape as number[]).map((d) => d + 0 /* no -0 */), begin: b, end: en });
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev = "the start of the data";
  for (const t of tensors) {
    if (t.begin < pos) bad(file, `tensor ${JSON.stringify(t.name)}: data_offsets [${t.begin}, ${t.end}] overlap ${prev}`);
    if (t.begin > pos) bad(file, `tensor ${JSON.stringify(t.name)}: gap of ${t.begin - pos} bytes before it, after ${prev}`);
    pos = t.end;
    prev = `tensor ${JSON.stringify(t.name)}`;
  }
  if (pos !== dataBytes) bad(file, `${dataBytes - pos} bytes after the last tensor's data (the data section must end with it)`);
  return { tensors, metadata };
}

async function readFully(fh: fsp.FileHandle, buf: Uint8Array, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const len = Math.min(IO_CHUNK, buf.length - done);
    const { bytesRead } = await fh.read(buf, done, len, position + done);
    if (bytesRead === 0) bad(file, `the file ended at byte ${position + done} while reading (it changed or shrank during the load)`);
    done += bytesRead;
  }
}

function ioError(file: string, what: string, e: unknown): SlimoptError {
  if (e instanceof SlimoptError) return e;
  const err = new SlimoptError("E_CHECKPOINT", `${file}: cannot ${what}: ${(e as Error)?.message ?? String(e)}`);
  (err as { cause?: unknown }).cause = e;
  return err;
}

/** Host allocation sized by a length already checked against the file; a failure is E_OOM. */
function hostBytes(n: number, file: string): Uint8Array {
  try {
    return new Uint8Array(n);
  } catch {
    return fail("E_OOM", `${file}: cannot allocate ${n} bytes of host memory`);
  }
}

/** An open safetensors file whose header has been checked; read tensors, then close(). */
export class SafetensorsReader {
  readonly file: string;
  readonly header: SafetensorsHeader;
  private fh: fsp.FileHandle | undefined;

  private constructor(file: string, fh: fsp.FileHandle, header: SafetensorsHeader) {
    this.file = file;
    this.fh = fh;
    this.header = header;
  }

  /** Opens `file` and checks its header; E_CHECKPOINT for anything wrong. */
  static async open(file: string): Promise<SafetensorsReader> {
    if (typeof file !== "string" || file.length === 0) fail("E_ARG", "the path must be a non-empty string");
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(file, fsc.O_RDONLY);
    } catch (e) {
      throw ioError(file, "open it", e);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) bad(file, "not a regular file");
      const size = st.size;
      if (size < 8) bad(file, `the file is ${size} bytes, too short for the 8-byte header length (truncated?)`);
      const lenBuf = Buffer.alloc(8);
      await readFully(fh, lenBuf, 0, file);
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(size - 8)) bad(file, `the header length ${n} is larger than the rest of the file (${size - 8} bytes; truncated or not safetensors?)`);
      if (n > BigInt(MAX_HEADER_BYTES)) bad(file, `the header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
      const hlen = Number(n);
      if (hlen < 2) bad(file, `the header length ${hlen} is too small for a JSON object`);
      const hbuf = hostBytes(hlen, file);
      await readFully(fh, hbuf, 8, file);
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(hbuf);
      } catch {
        return bad(file, "the header is not valid UTF-8");
      }
      const dataStart = 8 + hlen;
      const { tensors, metadata } = parseHeaderText(text, size - dataStart, file);
      return new SafetensorsReader(file, fh, { tensors, metadata, dataStart, fileSize: size });
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw ioError(file, "read it", e);
    }
  }

  /** One tensor, created on `dev`, read in chunks straight into its memory (no host buffer of
   *  the tensor's size, so tensors above the 4 GiB a JS buffer may hold load too). */
  async readTensor(t: TensorInfo, dev: Device): Promise<Tensor> {
    if (!this.fh) fail("E_ARG", `${this.file}: reader is closed`);
    const n = t.end - t.begin;
    const out = Tensor.empty(t.shape, t.dtype, dev);
    try {
      const chunk = hostBytes(Math.min(n, IO_CHUNK), this.file);
      for (let off = 0; off < n; off += chunk.length) {
        const view = chunk.subarray(0, Math.min(chunk.length, n - off));
        await readFully(this.fh!, view, this.header.dataStart + t.begin + off, this.file);
        if (!LITTLE_ENDIAN) swapBytes(view, DTYPE_SIZE[t.dtype]);
        native().writeRaw(out.handle, off, view);
      }
    } catch (e) {
      out.dispose();
      throw ioError(this.file, "read it", e);
    }
    return out;
  }

  /** Every tensor, created on `dev`, by name. On failure nothing is left allocated. */
  async readAll(dev: Device): Promise<Record<string, Tensor>> {
    const out: Record<string, Tensor> = {};
    try {
      for (const t of this.header.tensors) setOwn(out, t.name, await this.readTensor(t, dev));
    } catch (e) {
      for (const t of Object.values(out)) t.dispose();
      throw e;
    }
    return out;
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh) await fh.close().catch(() => undefined);
  }
}

function swapBytes(b: Uint8Array, size: number): void {
  if (size === 1) return;
  for (let i = 0; i + size <= b.length; i += size) b.subarray(i, i + size).reverse();
}

// ---------------------------------------------------------------------------------------------
// Writer

interface PendingTensor {
  name: string;
  dtype: DType;
  shape: number[];
  nbytes: number;
  /** The contents as read when the save began. */
  data: Promise<ArrayBufferView>;
}

/** Builds the header bytes (padded with spaces to a multiple of 8) for tensors in data order. */
function headerBytes(order: PendingTensor[], metadata: Record<string, string>): { bytes: Buffer; dataBytes: number } {
  const hdr: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) hdr.__metadata__ = metadata;
  let pos = 0;
  for (const t of order) {
    setOwn(hdr, t.name, { dtype: SAFETENSORS_DTYPE[t.dtype], shape: t.shape, data_offsets: [pos, pos + t.nbytes] });
    pos += t.nbytes;
  }
  const json = Buffer.from(JSON.stringify(hdr), "utf8");
  if (json.length > MAX_HEADER_BYTES) fail("E_ARG", `the header would be ${json.length} bytes, over the ${MAX_HEADER_BYTES}-byte limit readers enforce`);
  const padded = Math.ceil(json.length / 8) * 8;
  const bytes = Buffer.alloc(8 + padded, 0x20);
  bytes.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(bytes, 8);
  return { bytes, dataBytes: pos };
}

async function writeFully(fh: fsp.FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const len = Math.min(IO_CHUNK, data.length - done);
    const { bytesWritten } = await fh.write(data, done, len, position + done);
    done += bytesWritten;
  }
}

/** fsync of a directory makes a rename in it durable; platforms that cannot open a directory
 *  (Windows) are skipped. */
async function syncDir(dir: string): Promise<void> {
  let dh: fsp.FileHandle;
  try {
    dh = await fsp.open(dir, fsc.O_RDONLY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EISDIR" || code === "EPERM" || code === "EACCES") return;
    throw e;
  }
  try {
    await dh.sync();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EINVAL" && code !== "ENOTSUP" && code !== "EBADF" && code !== "EPERM") throw e;
  } finally {
    await dh.close().catch(() => undefined);
  }
}

/** The name of the temporary file a save of `target` writes first (same directory). */
export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
}

/** Writes the file to a temporary next to `file`, fsyncs it, renames it over `file`, fsyncs the
 *  directory. A crash at any point leaves `file` as it was (old or new, whole). */
async function writeAtomic(file: string, order: PendingTensor[], metadata: Record<string, string>): Promise<void> {
  const { bytes: head } = headerBytes(order, metadata);
  const tmp = tempPathFor(path.resolve(file));
  let fh: fsp.FileHandle | undefined;
  let created = false;
  try {
    fh = await fsp.open(tmp, "wx");
    created = true;
    await writeFully(fh, head, 0);
    let pos = head.length;
    for (const t of order) {
      const view = await t.data;
      let bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
      if (bytes.length !== t.nbytes) fail("E_ARG", `tensor ${t.name} changed size during the save`);
      if (!LITTLE_ENDIAN && DTYPE_SIZE[t.dtype] > 1) {
        bytes = bytes.slice();
        swapBytes(bytes, DTYPE_SIZE[t.dtype]);
      }
      await writeFully(fh, bytes, pos);
      pos += bytes.length;
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.rename(tmp, file);
    created = false;
    await syncDir(path.dirname(path.resolve(file)));
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    if (created) await fsp.unlink(tmp).catch(() => undefined);
    throw ioError(file, "write it", e);
  }
}

function checkMetadata(metadata: unknown): Record<string, string> {
  if (metadata === undefined) return {};
  if (!isRecord(metadata)) fail("E_ARG", "metadata must be an object of strings");
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata as Record<string, unknown>)) {
    if (typeof v !== "string") fail("E_ARG", `metadata value of ${JSON.stringify(k)} must be a string (JSON-encode structures)`);
    setOwn(out, k, v as string);
  }
  return out;
}

/** Snapshots the record (every read is enqueued now, before this returns, so work enqueued
 *  afterwards, a step for instance, does not leak into the file) and writes it atomically. */
function saveRecord(file: string, record: Record<string, Tensor>, metadata: Record<string, string>): Promise<void> {
  if (typeof file !== "string" || file.length === 0) fail("E_ARG", "the path must be a non-empty string");
  if (!isRecord(record)) fail("E_ARG", "saveTensors needs a record of name → Tensor");
  const entries = Object.entries(record);
  for (const [name, t] of entries) {
    if (name === "__metadata__") fail("E_ARG", "\"__metadata__\" is reserved by the format and cannot name a tensor");
    if (!(t instanceof Tensor)) fail("E_ARG", `${JSON.stringify(name)} is not a Tensor`);
    t.assertLive(`tensor ${name}`);
  }
  const pending: PendingTensor[] = entries.map(([name, t]) => {
    const data = t.toTypedArray();
    data.catch(() => undefined);  // awaited below; never an unhandled rejection if we stop early
    return { name, dtype: t.dtype, shape: [...t.shape], nbytes: t.nbytes, data };
  });
  // Largest elements first (stable), so every tensor is aligned to its element size.
  const order = pending.map((p, i) => ({ p, i }))
    .sort((a, b) => DTYPE_SIZE[b.p.dtype] - DTYPE_SIZE[a.p.dtype] || a.i - b.i)
    .map((x) => x.p);
  return writeAtomic(file, order, metadata);
}

/** Writes named tensors (model weights, for instance) to a safetensors file, atomically: the
 *  file is replaced whole or not at all. The contents are those at the call (the reads are
 *  enqueued before it returns). `metadata` values must be strings. */
export function saveTensors(file: string, record: Record<string, Tensor>, metadata?: Record<string, string>): Promise<void> {
  try {
    return saveRecord(file, record, checkMetadata(metadata));
  } catch (e) {
    return Promise.reject(e);
  }
}

/** Reads every tensor of a safetensors file (F32, BF16, F16, U8, I32) onto `device`, with the
 *  file's metadata. The whole header is checked before any tensor is allocated; a malformed file
 *  is E_CHECKPOINT. */
export async function loadTensors(file: string, opts: LoadTensorsOptions = {}): Promise<{ tensors: Record<string, Tensor>; metadata: Record<string, string> }> {
  const dev = resolveDevice(opts.device);
  const r = await SafetensorsReader.open(file);
  try {
    const tensors = await r.readAll(dev);
    return { tensors, metadata: { ...r.header.metadata } };
  } finally {
    await r.close();
  }
}

/** @internal Opens and checks `file`, lets `onHeader` refuse it from the header alone, reads every
 *  tensor onto `dev`, hands them to `onData` (synchronously, so nothing can run in between), then
 *  frees them: what onData keeps, it must copy. */
export async function loadTensorsChecked<T>(file: string, dev: Device, onHeader: (h: SafetensorsHeader) => void,
                                            onData: (tensors: Record<string, Tensor>, h: SafetensorsHeader) => T): Promise<T> {
  const r = await SafetensorsReader.open(file);
  let tensors: Record<string, Tensor> | undefined;
  try {
    onHeader(r.header);
    tensors = await r.readAll(dev);
    return onData(tensors, r.header);
  } finally {
    await r.close();
    if (tensors) for (const t of Object.values(tensors)) t.dispose();
  }
}

/** The names, dtypes, shapes and metadata of a safetensors file, without reading its data. */
export async function inspectTensors(file: string): Promise<{ tensors: { name: string; dtype: DType; shape: number[] }[]; metadata: Record<string, string> }> {
  const r = await SafetensorsReader.open(file);
  await r.close();
  return {
    tensors: r.header.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })),
    metadata: { ...r.header.metadata },
  };
}
