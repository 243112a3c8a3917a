// Shared by test/checkpoint.test.ts (CPU) and test/gpu/checkpoint.gpu.test.ts (CUDA): the resume
// round trip, state snapshots, an independent safetensors parser and the mutations the loader is
// fuzzed with. Nothing here uses slimopt's safetensors code to check slimopt's safetensors code.
import * as fs from "fs";
import * as path from "path";
import { DType, loadTensors, Optimizer, Parameter, randn, saveTensors, SlimoptError, Tensor } from "../lib";
import { groupOptionsJson } from "../lib/optim/optimizer";
import { OptimizerCase, TEST_SHAPES } from "./optimizers";
import { Rng } from "./reference";

type AnyOptimizer = Optimizer<any>;  // eslint-disable-line @typescript-eslint/no-explicit-any

export async function rawBytes(t: Tensor): Promise<Buffer> {
  const a = await t.toTypedArray();
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

export function makeParams(dtype: DType, dev: string, seed = 100, shapes = TEST_SHAPES): Parameter[] {
  return shapes.map((s, i) => new Parameter(randn(s, { dtype, device: dev, seed: seed + i, std: 0.5 }), { name: `p${i}` }));
}

/** Deterministic gradients for step `step`; steps 4 and 8 put a NaN into parameter 1, so that
 *  its group skips them (skipped-step counters are part of the state being resumed). */
export function setGrads(params: Parameter[], step: number): void {
  params.forEach((p, i) => {
    if (i === 1) {
      const g = new Rng(step * 1000 + i).normals(p.numel, 0.5);
      if (step === 4 || step === 8) g[g.length >> 1] = NaN;
      p.grad.copyFrom(g);
      return;
    }
    const g = randn(p.shape, { device: p.device, seed: step * 1000 + i, std: 0.5 + 0.1 * i });
    p.grad.copyFrom(g);
    g.dispose();
  });
}

export interface Snapshot {
  params: Buffer[];
  state: Record<string, { dtype: string; shape: readonly number[]; bytes: Buffer }>;
  groups: string;
  skipped?: number;
}

export async function snapshot(opt: AnyOptimizer, params: Parameter[]): Promise<Snapshot> {
  const sd = opt.stateDict();
  const state: Snapshot["state"] = {};
  for (const [k, t] of Object.entries(sd.tensors)) state[k] = { dtype: t.dtype, shape: t.shape, bytes: await rawBytes(t) };
  const skippedFn = (opt as unknown as { skippedSteps?: () => Promise<number> }).skippedSteps;
  return {
    params: await Promise.all(params.map((p) => rawBytes(p.data))),
    state,
    groups: JSON.stringify(opt.paramGroups.map(groupOptionsJson)),
    skipped: typeof skippedFn === "function" ? await skippedFn.call(opt) : undefined,
  };
}

/** Compares two snapshots bit for bit; returns the first difference or "" (usable in a hot loop). */
export function snapshotDiff(a: Snapshot, b: Snapshot): string {
  if (a.params.length !== b.params.length) return "parameter count";
  for (let i = 0; i < a.params.length; i++) if (!a.params[i].equals(b.params[i])) return `parameter ${i}`;
  const ka = Object.keys(a.state).sort(), kb = Object.keys(b.state).sort();
  if (ka.join("\n") !== kb.join("\n")) return `state names [${ka}] vs [${kb}]`;
  for (const k of ka) {
    const x = a.state[k], y = b.state[k];
    if (x.dtype !== y.dtype || x.shape.join() !== y.shape.join()) return `state ${k} dtype/shape`;
    if (!x.bytes.equals(y.bytes)) return `state ${k} bytes`;
  }
  if (a.groups !== b.groups) return `group options ${a.groups} vs ${b.groups}`;
  if (a.skipped !== b.skipped) return `skipped steps ${a.skipped} vs ${b.skipped}`;
  return "";
}

/** A schedule's change between steps: a load must bring it back (options are restored). */
export function changeOptions(opt: AnyOptimizer): void {
  for (const g of opt.paramGroups) {
    g.lr = g.lr * 0.5;
    if (typeof g.weightDecay === "number") g.weightDecay = g.weightDecay * 2;
  }
}

function disposeAll(params: Parameter[], ...opts: AnyOptimizer[]): void {
  for (const o of opts) o.dispose();
  for (const p of params) p.dispose();
}

/** 5 steps, save (optimizer + parameters), rebuild fresh parameters and a fresh optimizer, load,
 *  5 more steps: bit-identical to 10 uninterrupted steps. `loadDev` is where the resumed run lives
 *  (default: the same device). */
export async function resumeRoundTrip(c: OptimizerCase, dtype: DType, dev: string, dir: string): Promise<void> {
  const ckpt = path.join(dir, `opt-${dtype}.safetensors`);
  const model = path.join(dir, `model-${dtype}.safetensors`);
  const pa = makeParams(dtype, dev);
  const optA = c.make(pa);
  let paramsAt5: Buffer[] = [];
  for (let s = 1; s <= 10; s++) {
    if (s === 3) changeOptions(optA);
    setGrads(pa, s);
    optA.step();
    if (s === 5) {
      paramsAt5 = await Promise.all(pa.map((p) => rawBytes(p.data)));
      await saveTensors(model, Object.fromEntries(pa.map((p) => [p.name, p.data])), { step: "5" });
      await optA.save(ckpt, { metadata: { step: "5" } });
    }
  }
  const uninterrupted = await snapshot(optA, pa);

  // A new process would do this: parameters from the model file, a fresh optimizer, load.
  const { tensors, metadata } = await loadTensors(model, { device: dev });
  expect(metadata.step).toBe("5");
  // Other names on purpose: parameters are matched by position, not by name.
  const pb = pa.map((p) => new Parameter(tensors[p.name], { name: `${p.name}.resumed` }));
  const loadedParams = await Promise.all(pb.map((p) => rawBytes(p.data)));
  expect(loadedParams.every((b, i) => b.equals(paramsAt5[i]))).toBe(true);
  const optB = c.make(pb);
  await optB.load(ckpt);
  for (let s = 6; s <= 10; s++) {
    setGrads(pb, s);
    optB.step();
  }
  const resumed = await snapshot(optB, pb);
  expect(snapshotDiff(resumed, uninterrupted)).toBe("");

  // Not vacuous: the same 5 steps from the same parameters without the load end elsewhere.
  const { tensors: t2 } = await loadTensors(model, { device: dev });
  const pc = pa.map((p) => new Parameter(t2[p.name], { name: p.name }));
  const optC = c.make(pc);
  for (let s = 6; s <= 10; s++) {
    setGrads(pc, s);
    optC.step();
  }
  const cold = await snapshot(optC, pc);
  expect(cold.params.some((b, i) => !b.equals(uninterrupted.params[i]))).toBe(true);
  disposeAll([...pa, ...pb, ...pc], optA, optB, optC);
}

// ---------------------------------------------------------------------------------------------
// An independent reading of the format (the safetensors README), strict about what slimopt's
// writer promises on top of it: the header padded to a multiple of 8 with spaces, every tensor
// aligned to its element size.

export const ELEMENT_SIZE: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1, U16: 2, U32: 4, U64: 8,
};

export interface IndependentEntry { name: string; dtype: string; shape: number[]; begin: number; end: number }

export function parseSafetensorsIndependently(buf: Buffer): { entries: IndependentEntry[]; metadata: Record<string, string>; dataStart: number } {
  const problems: string[] = [];
  const need = (ok: boolean, what: string) => { if (!ok) problems.push(what); };
  if (buf.length < 8) throw new Error("shorter than 8 bytes");
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(buf.length - 8)) throw new Error(`header length ${n} beyond the file`);
  const hl = Number(n);
  need(hl % 8 === 0, `header length ${hl} is not a multiple of 8`);
  const text = buf.toString("utf8", 8, 8 + hl);
  need(text[0] === "{", "header does not start with {");
  const trimmed = text.replace(/ +$/, "");
  need(trimmed.endsWith("}"), "header padding is not spaces after the object");
  const header = JSON.parse(text);
  const metadata: Record<string, string> = header.__metadata__ ?? {};
  for (const [k, v] of Object.entries(metadata)) need(typeof v === "string", `metadata ${k} is not a string`);
  const dataStart = 8 + hl;
  need(dataStart % 8 === 0, "data does not start 8-aligned");
  const entries: IndependentEntry[] = [];
  for (const [name, e] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const x = e as { dtype: string; shape: number[]; data_offsets: [number, number] };
    need(x.dtype in ELEMENT_SIZE, `${name}: dtype ${x.dtype}`);
    const numel = x.shape.reduce((a, b) => a * b, 1);
    need(x.data_offsets[1] - x.data_offsets[0] === numel * ELEMENT_SIZE[x.dtype], `${name}: size`);
    need((dataStart + x.data_offsets[0]) % ELEMENT_SIZE[x.dtype] === 0, `${name}: not aligned to its element size`);
    entries.push({ name, dtype: x.dtype, shape: x.shape, begin: x.data_offsets[0], end: x.data_offsets[1] });
  }
  const sorted = [...entries].sort((a, b) => a.begin - b.begin);
  let pos = 0;
  for (const e of sorted) {
    need(e.begin === pos, `${e.name}: begins at ${e.begin}, previous data ends at ${pos}`);
    pos = e.end;
  }
  need(dataStart + pos === buf.length, `data ends at ${dataStart + pos}, the file at ${buf.length}`);
  if (problems.length) throw new Error(problems.join("; "));
  return { entries, metadata, dataStart };
}

/** A file from a header (object or raw JSON text) and data; the header is padded with spaces to a
 *  multiple of 8 unless `pad` is false; `len` overrides the length field. */
export function craft(header: unknown, data: Uint8Array = new Uint8Array(0), opts: { pad?: boolean; len?: bigint } = {}): Buffer {
  let text = Buffer.from(typeof header === "string" ? header : JSON.stringify(header), "utf8");
  if (opts.pad !== false && text.length % 8 !== 0) text = Buffer.concat([text, Buffer.alloc(8 - (text.length % 8), 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.len ?? BigInt(text.length));
  return Buffer.concat([len, text, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

export function splitFile(buf: Buffer): { header: Record<string, any>; text: string; data: Buffer } {  // eslint-disable-line @typescript-eslint/no-explicit-any
  const n = Number(buf.readBigUInt64LE(0));
  const text = buf.toString("utf8", 8, 8 + n);
  return { header: JSON.parse(text), text: text.trimEnd(), data: buf.subarray(8 + n) };
}

/** Rewrites a file's metadata key (the data stays). */
export function withMetadata(buf: Buffer, edit: (m: Record<string, string>) => void): Buffer {
  const { header, data } = splitFile(buf);
  edit(header.__metadata__);
  return craft(header, data);
}

/** Rewrites the "groups" JSON of an optimizer checkpoint. */
export function withGroups(buf: Buffer, edit: (g: Record<string, unknown>[]) => void): Buffer {
  return withMetadata(buf, (m) => {
    const g = JSON.parse(m.groups);
    edit(g);
    m.groups = JSON.stringify(g);
  });
}

export function withParams(buf: Buffer, edit: (p: Record<string, unknown>[]) => void): Buffer {
  return withMetadata(buf, (m) => {
    const p = JSON.parse(m.params);
    edit(p);
    m.params = JSON.stringify(p);
  });
}

// ---------------------------------------------------------------------------------------------
// Mutations for the fuzz test: each is a damaged or doctored copy of a valid checkpoint.

export interface Mutant { kind: string; file: Buffer }

export function mutants(base: Buffer, seed: number, count: number): Mutant[] {
  const rng = new Rng(seed);
  const int = (k: number) => Math.floor(rng.uniform() * k);
  const pick = <T>(a: readonly T[]): T => a[int(a.length)];
  const { header, text, data } = splitFile(base);
  const hl = Number(base.readBigUInt64LE(0));
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const clone = (): Record<string, any> => JSON.parse(JSON.stringify(header));  // eslint-disable-line @typescript-eslint/no-explicit-any
  const copy = () => Buffer.from(base);
  const randomBytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  const entryOf = (h: Record<string, any>) => h[pick(names)];  // eslint-disable-line @typescript-eslint/no-explicit-any

  const kinds: [string, () => Buffer][] = [
    ["truncate anywhere", () => base.subarray(0, int(base.length))],
    ["truncate in the header", () => base.subarray(0, int(8 + hl))],
    ["truncate in the data", () => base.subarray(0, 8 + hl + int(Math.max(1, data.length)))],
    ["flip a length byte", () => { const b = copy(); b[int(8)] ^= 1 + int(255); return b; }],
    ["flip header bytes", () => { const b = copy(); for (let k = 1 + int(3); k > 0; k--) b[8 + int(hl)] ^= 1 + int(255); return b; }],
    ["flip one header bit", () => { const b = copy(); b[8 + int(hl)] ^= 1 << int(8); return b; }],
    ["flip data bytes", () => { const b = copy(); if (data.length) for (let k = 1 + int(3); k > 0; k--) b[8 + hl + int(data.length)] ^= 1 + int(255); return b; }],
    ["length field value", () => {
      const b = copy();
      b.writeBigUInt64LE(pick([0n, 1n, 2n, 7n, BigInt(hl - 1), BigInt(hl + 1), BigInt(hl + 8), BigInt(base.length - 8), BigInt(base.length),
        1n << 32n, 1n << 60n, (1n << 64n) - 1n, 100_000_001n]), 0);
      return b;
    }],
    ["append bytes", () => Buffer.concat([base, randomBytes(1 + int(16))])],
    ["garbage", () => randomBytes(int(96))],
    ["garbage after a plausible length", () => { const g = randomBytes(8 + int(200)); g.writeBigUInt64LE(BigInt(int(g.length)), 0); return g; }],
    ["data_offsets", () => {
      const h = clone(); const e = entryOf(h); const [b, en] = e.data_offsets as number[];
      e.data_offsets = pick<unknown>([[b + 1, en + 1], [b, en + 1], [b, en - 1], [Math.max(0, b - 4), en - 4], [0, en - b], [b, 2 ** 60],
        [2 ** 53, 2 ** 53 + (en - b)], [-1, en], [b, "x"], [en, b], [b + 0.5, en + 0.5], [b], [b, en, 0], null, "0,4", [data.length, data.length + en - b],
        [b, en + data.length], [1e300, 1e300]]);
      return craft(h, data);
    }],
    ["swap the data of two tensors", () => {
      const h = clone(); const a = entryOf(h), c = entryOf(h);
      [a.data_offsets, c.data_offsets] = [c.data_offsets, a.data_offsets];
      return craft(h, data);
    }],
    ["dtype", () => {
      const h = clone();
      entryOf(h).dtype = pick<unknown>(["F64", "I64", "BOOL", "F8_E4M3", "Q4", "f32", "", "F32 ", 5, null, ["F32"], "F32", "BF16", "F16", "U8", "I32", "I16", "U16"]);
      return craft(h, data);
    }],
    ["shape", () => {
      const h = clone(); const e = entryOf(h); const s = e.shape as number[];
      e.shape = pick<unknown>([[], [0], [s.reduce((a, b) => a * b, 1) + 1], [2 ** 40, 2 ** 40], [2 ** 26, 2 ** 26, 2 ** 26], [-1], [1.5], "7", null, [1, ...s], [...s].reverse(), [s.reduce((a, b) => a * b, 1)], ["3"]]);
      return craft(h, data);
    }],
    ["entry keys", () => {
      const h = clone(); const k = pick(names);
      if (rng.uniform() < 0.5) delete h[k][pick(["dtype", "shape", "data_offsets"])];
      else h[k] = pick<unknown>([null, [], "x", 5, {}, true]);
      return craft(h, data);
    }],
    ["drop a tensor", () => { const h = clone(); delete h[pick(names)]; return craft(h, data); }],
    ["rename a tensor", () => {
      const h = clone(); const k = pick(names);
      const to = pick(["param.99.exp_avg", "group.9.counters", "state.x", "param.01.exp_avg", "__proto__", "", "param.0.exp_avg_sq", "group.0.counters", "param.0.other", "param.-1.exp_avg"]);
      const e = h[k]; delete h[k]; h[to] = e;
      return craft(h, data);
    }],
    ["duplicate a name (JSON text)", () => {
      const a = pick(names), c = pick(names.filter((x) => x !== a).concat(a));
      return craft(text.replace(JSON.stringify(a) + ":", JSON.stringify(c) + ":"), data);
    }],
    ["extra tensor", () => {
      const h = clone(); const extra = randomBytes(4);
      const name = pick(["param.0.extra", "zzz", "group.0.more", "param.1.exp_avg_sq2"]);
      h[name] = pick<unknown>([
        { dtype: "U8", shape: [4], data_offsets: [data.length, data.length + 4] },
        { dtype: "U8", shape: [4], data_offsets: [0, 4] },
        { dtype: "F32", shape: [1], data_offsets: [data.length, data.length + 4] },
      ]);
      return craft(h, Buffer.concat([data, extra]));
    }],
    ["metadata", () => {
      const h = clone(); const m = h.__metadata__;
      const edits: (() => void)[] = [
        () => { delete m[pick(["format", "format_version", "optimizer", "groups", "params", "slimopt_version"])]; },
        () => { m.optimizer = pick(["GaLoreAdamW", "", "adamw", "AdamW8bit"]); },
        () => { m.format_version = pick(["2", "0", "01", "x", "1.0", " 1", "999999999999"]); },
        () => { m.format = pick(["other", "", "slimopt.model"]); },
        () => { m.groups = pick(["[]", "{}", "nope", "[{}]", "[1,2]", "[[]]", "null", "[{\"lr\":0.01}]", "", "[" + "[".repeat(5000)]); },
        () => { m.params = pick(["[]", "{}", "x", "[1]", "[null]", "null", "[{\"name\":\"a\"}]"]); },
        () => { m[pick(["x", "groups", "format"])] = pick<unknown>([5, null, [], {}, true]); },
        () => { h.__metadata__ = pick<unknown>([[], "x", 5, true]); },
        () => { h.__metadata__ = null; },
        () => {
          const g = JSON.parse(m.groups); const gi = int(g.length); const k = pick(Object.keys(g[gi]));
          const e = int(5);
          if (e === 0) delete g[gi][k];
          else if (e === 1) g[gi][pick(["rank", "updateProjGap", "extra"])] = 4;
          else g[gi][k] = pick<unknown>([-1, "0.1", null, 1e-3, { $float: "NaN" }, { $float: "Infinity" }, [0.9], [0.9, 1], 1.5, "bf16", "f32", true, 0, 2 ** 60, {}]);
          m.groups = JSON.stringify(g);
        },
        () => {
          const p = JSON.parse(m.params); const i = int(p.length);
          const e = int(6);
          if (e === 0) p[i].shape = [2];
          else if (e === 1) p.pop();
          else if (e === 2) p[i].dtype = pick(["f16", "bf16", "f32", "u8", "F32"]);
          else if (e === 3) p[i].group = pick([7, -1, 1, 0.5, "0"]);
          else if (e === 4) p.push({ ...p[0] });
          else p[i] = "x";
          m.params = JSON.stringify(p);
        },
      ];
      pick(edits)();
      return craft(h, data);
    }],
    ["root is not an object", () => craft(pick(["[]", "1", "null", "\"x\"", "true", "[{}]", " {}", "{}x", "{} {}"]), data)],
    ["JSON text damage", () => {
      const t = text; const at = int(t.length);
      const e = int(6);
      let out: string;
      if (e === 0) out = t.slice(0, at);
      else if (e === 1) out = t.slice(0, at) + pick(["{", "}", "[", "]", ",", ":", "\"", "\\", "\u0000", "x", "\n"]) + t.slice(at);
      else if (e === 2) out = t.slice(0, at) + t.slice(at + 1 + int(8));
      else if (e === 3) out = t.replace(/}$/, ",}");
      else if (e === 4) out = "\uFEFF" + t;
      else out = t + pick(["x", "}", "\u0000", " 1"]);
      return craft(out, data);
    }],
    ["deep nesting", () => craft(`{"__metadata__":{"a":"b"},"x":${"[".repeat(10000 + int(100000))}`, data)],
    ["padding", () => {
      const b = Buffer.from(craft(header, data, { pad: false }));
      // re-pad by hand with something that is not a space
      const t = Buffer.concat([Buffer.from(JSON.stringify(header)), Buffer.alloc(8, pick([0, 0x78, 0x09, 0x0a]))]);
      const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(t.length));
      return rng.uniform() < 0.5 ? Buffer.concat([len, t, data]) : b;
    }],
    ["bad UTF-8", () => {
      const b = copy(); b[8 + 1 + int(hl - 1)] = pick([0xff, 0xc3, 0xe2, 0x80, 0xf8]); return b;
    }],
    ["huge numbers (text)", () => {
      const k = pick(names);
      const rep = pick([`"shape":[1e400]`, `"shape":[9007199254740993]`, `"data_offsets":[0,9007199254740993]`, `"data_offsets":[0,1e999]`, `"shape":[-0]`, `"shape":[1E2]`]);
      const t = text.replace(new RegExp(`("${k.replace(/\./g, "\\.")}":\\{[^}]*?)"shape":\\[[^\\]]*\\]`), `$1${rep}`);
      return craft(t, data);
    }],
  ];
  const out: Mutant[] = [];
  for (let i = 0; i < count; i++) {
    const [kind, f] = kinds[i % kinds.length];
    out.push({ kind, file: f() });
  }
  return out;
}

export function expectCheckpointError(e: unknown, what = ""): void {
  if (!(e instanceof SlimoptError) || e.code !== "E_CHECKPOINT")
    throw new Error(`${what}: expected E_CHECKPOINT, got ${(e as Error)?.stack ?? String(e)}`);
}

/** Loads `count` mutants of a stepped optimizer's checkpoint into it (and into loadTensors): each
 *  load is refused with E_CHECKPOINT, leaving the optimizer bit-identical (and it still steps), or
 *  succeeds with exactly the file's state. Returns refused/loaded counts per kind of mutation. */
export async function fuzzLoad(c: OptimizerCase, dtype: DType, dev: string, dir: string, count: number, seed: number):
    Promise<Record<string, { refused: number; loaded: number }>> {
  const params = makeParams(dtype, dev);
  const opt = c.make(params);
  for (let s = 1; s <= 3; s++) {
    setGrads(params, s);
    opt.step();
  }
  const good = path.join(dir, `fuzz-good-${seed}.safetensors`);
  await opt.save(good);
  const bytes = fs.readFileSync(good);
  const file = path.join(dir, `fuzz-${seed}.safetensors`);
  const tally: Record<string, { refused: number; loaded: number }> = {};
  let refusals = 0;
  for (const m of mutants(bytes, seed, count)) {
    fs.writeFileSync(file, m.file);
    const t = (tally[m.kind] ??= { refused: 0, loaded: 0 });
    // The bare reader first.
    try {
      const { tensors } = await loadTensors(file, { device: dev });
      for (const x of Object.values(tensors)) x.dispose();
    } catch (e) {
      expectCheckpointError(e, m.kind);
    }
    const before = await snapshot(opt, params);
    let loaded = false;
    try {
      await opt.load(file);
      loaded = true;
    } catch (e) {
      expectCheckpointError(e, m.kind);
    }
    if (!loaded) {
      t.refused++;
      const diff = snapshotDiff(await snapshot(opt, params), before);
      if (diff) throw new Error(`${m.kind}: a refused load changed ${diff}`);
      if (++refusals % 25 === 0) {  // still steps
        setGrads(params, 3 + (refusals % 5));
        opt.step();
      }
      continue;
    }
    t.loaded++;
    // A correct load: the state is the file's, tensor for tensor.
    const { tensors } = await loadTensors(file, { device: "cpu" });
    const sd = opt.stateDict();
    const names = Object.keys(sd.tensors).sort().join(), fileNames = Object.keys(tensors).sort().join();
    if (names !== fileNames) throw new Error(`${m.kind}: loaded state [${names}], the file holds [${fileNames}]`);
    for (const [k, x] of Object.entries(tensors)) {
      if (!(await rawBytes(x)).equals(await rawBytes(sd.tensors[k]))) throw new Error(`${m.kind}: loaded ${k} differs from the file`);
      x.dispose();
    }
    await opt.load(good);
  }
  const refused = Object.values(tally).reduce((a, x) => a + x.refused, 0);
  const loaded = Object.values(tally).reduce((a, x) => a + x.loaded, 0);
  expect(refused + loaded).toBe(count);
  expect(refused).toBeGreaterThan(count * 0.7);  // the mutations do bite
  setGrads(params, 9);
  opt.step();
  disposeAll(params, opt);
  return tally;
}
