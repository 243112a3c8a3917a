// The corpus of the character-level LM example: the text shipped in examples/charlm/data, its
// character vocabulary, a deterministic train/validation split, and seeded batch sampling.
import * as fs from "fs";
import * as path from "path";
import { fail } from "../../errors";

/** The corpus shipped with the package (KJV Genesis–Judges; see examples/charlm/data/README.md). */
export function defaultCorpusPath(): string {
  // lib/demo/charlm (ts-jest) and dist/demo/charlm (compiled) are both three levels down.
  return path.resolve(__dirname, "..", "..", "..", "examples", "charlm", "data", "kjv-genesis-judges.txt");
}

export interface Corpus {
  /** Sorted distinct characters; a character's id is its index. */
  chars: string[];
  train: Int32Array;
  val: Int32Array;
}

/** Reads the text, builds the vocabulary and splits it: the first (1 - valFraction) of the
 *  characters train, the rest validate (a contiguous tail, so no verse is in both). */
export function loadCorpus(file = defaultCorpusPath(), valFraction = 0.1): Corpus {
  if (!fs.existsSync(file)) fail("E_ARG", `corpus ${file} does not exist`);
  return splitCorpus(fs.readFileSync(file, "utf8"), valFraction);
}

export function splitCorpus(text: string, valFraction = 0.1): Corpus {
  if (!(valFraction > 0 && valFraction < 1)) fail("E_ARG", `valFraction must be in (0, 1), got ${valFraction}`);
  const symbols = Array.from(text);
  const chars = [...new Set(symbols)].sort();
  const id = new Map(chars.map((c, i) => [c, i]));
  const ids = Int32Array.from(symbols, (c) => id.get(c)!);
  const cut = Math.floor(ids.length * (1 - valFraction));
  return { chars, train: ids.subarray(0, cut), val: ids.subarray(cut) };
}

/** splitmix32-style generator: small, fast, and the same sequence everywhere for a seed. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = (seed ^ 0x9e3779b9) >>> 0;
  }
  /** Uniform integer in [0, n). */
  below(n: number): number {
    this.s = (this.s + 0x9e3779b9) >>> 0;
    let z = this.s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return Math.floor((z / 4294967296) * n);
  }
}

/** Fills indices [batch * context] and targets [batch] with the examples predicting data[t] from
 *  data[t - context, t), for the positions given. */
export function fillExamples(data: Int32Array, context: number, positions: ArrayLike<number>, indices: Int32Array,
                             targets: Int32Array): void {
  for (let b = 0; b < positions.length; b++) {
    const t = positions[b];
    indices.set(data.subarray(t - context, t), b * context);
    targets[b] = data[t];
  }
}

/** Random training positions in [context, data.length), from a seeded generator: the same seed
 *  gives the same data order for every optimizer. */
export class BatchSampler {
  private readonly rng: Rng;
  private readonly positions: Int32Array;
  constructor(private readonly data: Int32Array, private readonly context: number, batch: number, seed: number) {
    if (data.length <= context) fail("E_ARG", `the text (${data.length} characters) is shorter than the context`);
    this.rng = new Rng(seed);
    this.positions = new Int32Array(batch);
  }
  next(indices: Int32Array, targets: Int32Array): void {
    const span = this.data.length - this.context;
    for (let b = 0; b < this.positions.length; b++) this.positions[b] = this.context + this.rng.below(span);
    fillExamples(this.data, this.context, this.positions, indices, targets);
  }
}

/** `count` positions spread evenly over [context, data.length) (all of them when count is larger). */
export function evenPositions(data: Int32Array, context: number, count: number): Int32Array {
  const span = data.length - context;
  const n = Math.min(count, span);
  return Int32Array.from({ length: n }, (_, i) => context + Math.floor((i * span) / n));
}
