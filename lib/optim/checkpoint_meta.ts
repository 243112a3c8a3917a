// The metadata of an optimizer checkpoint (the "__metadata__" strings of its safetensors file)
// and the checks a load makes against the optimizer before any state changes.
import { fail } from "../errors";
import { parseJsonStrict } from "../checkpoint";
import type { StateDict } from "./optimizer";

export const CHECKPOINT_FORMAT = "slimopt.optimizer";
export const CHECKPOINT_FORMAT_VERSION = 1;
/** Metadata keys slimopt writes; a user's extra metadata may not reuse them. */
export const RESERVED_METADATA = ["format", "format_version", "slimopt_version", "optimizer", "groups", "params", "group_state"];

const bad = (file: string, msg: string): never => fail("E_CHECKPOINT", `${file}: ${msg}`);

function slimoptVersion(): string {
  try {
    return String(require("../../package.json").version);
  } catch {
    return "unknown";
  }
}

// Options are JSON, but JSON has no Infinity/NaN (they would come back as null) and no BigInt:
// those are written as {"$float": "Infinity"} / {"$bigint": "123"} and restored on reading.
function encodeOptions(x: unknown): string {
  return JSON.stringify(x, (_k, v) => {
    if (typeof v === "number" && !Number.isFinite(v)) return { $float: String(v) };
    if (typeof v === "bigint") return { $bigint: v.toString() };
    return v;
  });
}

function decodeOptions(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(decodeOptions);
  if (x !== null && typeof x === "object") {
    const o = x as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length === 1 && keys[0] === "$float" && ["Infinity", "-Infinity", "NaN"].includes(o.$float as string)) return Number(o.$float);
    if (keys.length === 1 && keys[0] === "$bigint" && typeof o.$bigint === "string" && /^-?\d+$/.test(o.$bigint)) return BigInt(o.$bigint);
    const out: Record<string, unknown> = {};
    for (const k of keys) Object.defineProperty(out, k, { value: decodeOptions(o[k]), enumerable: true, writable: true, configurable: true });
    return out;
  }
  return x;
}

/** The metadata an optimizer checkpoint carries (all values strings; structures JSON-encoded). */
export function optimizerMetadata(sd: Omit<StateDict, "tensors">, extra: Record<string, string> | undefined): Record<string, string> {
  const meta: Record<string, string> = {};
  meta.format = CHECKPOINT_FORMAT;
  meta.format_version = String(CHECKPOINT_FORMAT_VERSION);
  meta.slimopt_version = slimoptVersion();
  meta.optimizer = sd.optimizer;
  try {
    meta.groups = encodeOptions(sd.groups);
  } catch (e) {
    fail("E_ARG", `group options cannot be written as JSON: ${(e as Error).message}`);
  }
  meta.params = JSON.stringify(sd.params);
  if (sd.groupState !== undefined) meta.group_state = JSON.stringify(sd.groupState);
  if (extra !== undefined) {
    if (extra === null || typeof extra !== "object" || Array.isArray(extra)) fail("E_ARG", "metadata must be an object of strings");
    for (const [k, v] of Object.entries(extra)) {
      if (RESERVED_METADATA.includes(k)) fail("E_ARG", `metadata key "${k}" is reserved for slimopt's own use`);
      if (typeof v !== "string") fail("E_ARG", `metadata value of ${JSON.stringify(k)} must be a string (JSON-encode structures)`);
      Object.defineProperty(meta, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
  }
  return meta;
}

/** What a checkpoint's metadata says, checked for form (not yet against an optimizer). */
export interface CheckpointMeta {
  optimizer: string;
  slimoptVersion: string;
  groups: Record<string, unknown>[];
  params: StateDict["params"];
  groupState?: Record<string, unknown>[];
}

export function parseOptimizerMetadata(meta: Record<string, string>, file: string): CheckpointMeta {
  if (meta.format === undefined)
    bad(file, `not a slimopt optimizer checkpoint (no "format" metadata: tensors written by saveTensors or another tool?)`);
  if (meta.format !== CHECKPOINT_FORMAT) bad(file, `not a slimopt optimizer checkpoint (format ${JSON.stringify(meta.format)})`);
  const v = meta.format_version;
  if (typeof v !== "string" || !/^[1-9][0-9]{0,8}$/.test(v)) bad(file, `bad format_version ${JSON.stringify(v)}`);
  if (Number(v) > CHECKPOINT_FORMAT_VERSION)
    bad(file, `format version ${v} was written by a newer slimopt (${meta.slimopt_version ?? "?"}); this one reads version ${CHECKPOINT_FORMAT_VERSION}`);
  if (typeof meta.optimizer !== "string" || meta.optimizer.length === 0) bad(file, "no optimizer name in the metadata");
  if (typeof meta.groups !== "string") bad(file, "no group options (\"groups\") in the metadata");
  if (typeof meta.params !== "string") bad(file, "no parameter list (\"params\") in the metadata");
  const groups = decodeOptions(parseJsonStrict(meta.groups, `${file}: metadata "groups"`));
  if (!Array.isArray(groups) || groups.some((g) => g === null || typeof g !== "object" || Array.isArray(g)))
    bad(file, "metadata \"groups\" is not a list of option objects");
  const params = parseJsonStrict(meta.params, `${file}: metadata "params"`);
  if (!Array.isArray(params)) bad(file, "metadata \"params\" is not a list");
  (params as unknown[]).forEach((p, i) => {
    const q = p as Record<string, unknown>;
    if (q === null || typeof q !== "object" || Array.isArray(q) || typeof q.name !== "string" || typeof q.dtype !== "string" ||
        !Number.isSafeInteger(q.group) || !Array.isArray(q.shape) || (q.shape as unknown[]).some((s) => !Number.isSafeInteger(s) || (s as number) < 0))
      bad(file, `metadata "params" entry ${i} is not {name, shape, dtype, group}`);
  });
  let groupState: Record<string, unknown>[] | undefined;
  if (meta.group_state !== undefined) {
    const gs = typeof meta.group_state === "string" ? parseJsonStrict(meta.group_state, `${file}: metadata "group_state"`) : undefined;
    if (!Array.isArray(gs) || gs.length !== (groups as unknown[]).length || gs.some((g) => g === null || typeof g !== "object" || Array.isArray(g)))
      bad(file, "metadata \"group_state\" is not a list of one object per group");
    groupState = gs as Record<string, unknown>[];
  }
  return {
    optimizer: meta.optimizer,
    slimoptVersion: meta.slimopt_version ?? "unknown",
    groups: groups as Record<string, unknown>[],
    params: params as StateDict["params"],
    groupState,
  };
}

/** Tensor names follow the StateDict contract: group.<g>.<what> or param.<i>.<what>. */
export function checkTensorNames(names: string[], nGroups: number, nParams: number, file: string): void {
  for (const n of names) {
    const m = /^(group|param)\.(0|[1-9][0-9]{0,8})\.(.+)$/s.exec(n);
    if (!m) bad(file, `unexpected tensor ${JSON.stringify(n)} (state tensors are group.<g>.<what> or param.<i>.<what>)`);
    const idx = Number(m![2]);
    const lim = m![1] === "group" ? nGroups : nParams;
    if (idx >= lim) bad(file, `tensor ${JSON.stringify(n)} refers to ${m![1]} ${idx}, this optimizer has ${lim}`);
  }
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a as object), kb = Object.keys(b as object);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) &&
    deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

const isNumberArray = (x: unknown): x is number[] => Array.isArray(x) && x.every((y) => typeof y === "number");
const show = (x: unknown): string => {
  try {
    return encodeOptions(x) ?? String(x);
  } catch {
    return String(x);
  }
};

/** Which option values a load restores, per group. Both sides must have the same options; those
 *  that fix the state's layout (strings such as stateDtype, anything non-numeric, and the names in
 *  `fixed`) must be equal; numbers, booleans and lists of numbers (lr, betas, eps, weightDecay,
 *  seed, ...) are taken from the file, as torch's load_state_dict does. */
export function planGroupOptions(current: Record<string, unknown>[], fromFile: Record<string, unknown>[],
                                 fixed: readonly string[], file: string): Record<string, unknown>[] {
  if (current.length !== fromFile.length) bad(file, `the checkpoint has ${fromFile.length} groups, this optimizer ${current.length}`);
  return current.map((curAll, gi) => {
    const cur: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(curAll)) if (k !== "params" && v !== undefined) cur[k] = v;
    const fil = fromFile[gi];
    for (const k of Object.keys(fil))
      if (!Object.prototype.hasOwnProperty.call(cur, k)) bad(file, `group ${gi}: the checkpoint has option "${k}", this optimizer's group does not (different hyperparameter layout)`);
    const out: Record<string, unknown> = {};
    for (const [k, cv] of Object.entries(cur)) {
      if (!Object.prototype.hasOwnProperty.call(fil, k))
        bad(file, `group ${gi}: option "${k}" is missing from the checkpoint (different hyperparameter layout)`);
      const fv = fil[k];
      const restorable = !fixed.includes(k) &&
        (typeof cv === "number" || typeof cv === "boolean" || typeof cv === "bigint" || isNumberArray(cv));
      if (!restorable) {
        if (!deepEqual(cv, fv))
          bad(file, `group ${gi}: option "${k}" is ${show(fv)} in the checkpoint, ${show(cv)} here (it fixes the state's layout, so it must match)`);
        continue;
      }
      const sameKind = isNumberArray(cv) ? isNumberArray(fv) && fv.length === cv.length : typeof fv === typeof cv;
      if (!sameKind) bad(file, `group ${gi}: option "${k}" is ${show(fv)} in the checkpoint, ${show(cv)} here (a different kind of value)`);
      out[k] = Array.isArray(fv) ? [...fv] : fv;
    }
    return out;
  });
}
