import { AdamW, AdamW8bit, AdamW4bit, Parameter, tensor, zeros, randn, quant, SlimoptError, Tensor, DType } from "../lib";
import { native } from "../lib/native";
import { Rng, roundTo } from "./reference";
import { refQuantize, toF32, unpack4 } from "./quant_reference";
import { expectCode } from "./helpers";

// Math's functions aliased once: a global looked up inside jest's context costs ~100x in a hot loop.
const { abs, floor, max } = Math;

async function raw(t: Tensor): Promise<number[]> {
  return Array.from(await t.toTypedArray());
}

// Arrays the addon returns belong to Node's context, not the test's; element loops over them run
// many times slower here, so the checks copy them first.
async function f32(t: Tensor): Promise<Float32Array> {
  return new Float32Array(await t.toFloat32Array());
}
async function u8(t: Tensor): Promise<Uint8Array> {
  return new Uint8Array((await t.toTypedArray()) as Uint8Array);
}

// Gradients: one pool of N(0, 1) draws read from a fresh random offset each step (drawing 4M
// normals per step in JS would dominate the suite's time), times the std.
const POOL = new Float32Array(1 << 22);
beforeAll(async () => {
  POOL.set(await randn([1 << 22], { device: "cpu", seed: 2024 }).toFloat32Array());
});
function gradients(rng: Rng, n: number, std: number): Float32Array {
  const off = rng.u32();
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = POOL[(off + i) & (POOL.length - 1)] * std;
  return out;
}

type Quantized = typeof AdamW8bit | typeof AdamW4bit;
const MAPS = {
  8: { a: quant.dynamicMap(true), b: quant.dynamicMap(false), block: 256 },
  4: { a: quant.dynamicMap(true, { maxExponentBits: 3, totalBits: 4 }), b: quant.linearMap(4), block: 128 },
};

/** The most a value x in [-1, 1] of a block can be off once coded with `map` (units of absmax):
 *  half the widest gap around its code, or map[0] for the linear map's lowest code (values in
 *  [0, 1/32] all read as 1/16: it has no zero). */
function maxError(map: Float32Array, c: number): number {
  if (c === 0 && map[0] > 0) return map[0];
  const below = c > 0 ? map[c] - map[c - 1] : map[1] - map[0];
  const above = c + 1 < map.length ? map[c + 1] - map[c] : 0;
  return max(below, above) / 2;
}

interface StepStats { stateOutliers: number; beyondBound: number; codeMismatch: number; errMean: number; relMean: number }

/**
 * bitsandbytes' test_optimizer8bit methodology: the quantized optimizer and f32 AdamW take the same
 * gradient; then the states of both are compared (dequantized vs f32), and the f32 AdamW is reset
 * to the dequantized states and the parameters re-synchronised, so every step measures one step's
 * error (the drift test below measures accumulation). Every step runs and resynchronises; the
 * comparisons run at steps that are multiples of checkEvery (and the last), the exact-code check
 * at multiples of exactEvery (the big shapes would otherwise take most of the suite's time).
 */
async function resyncRun(Opt: Quantized, bits: 8 | 4, dtype: DType, shape: [number, number], steps: number,
                         check: (s: StepStats, step: number) => void, checkEvery = 1, exactEvery = 1): Promise<void> {
  const rng = new Rng(shape[1] * 10 + bits + dtype.length);
  const n = shape[0] * shape[1];
  const { a: mapA, b: mapB, block } = MAPS[bits];
  const hyper = { lr: 1e-3, betas: [0.9, 0.999] as [number, number], eps: 1e-8, weightDecay: 1e-2 };
  const pq = new Parameter(randn(shape, { dtype, device: "cpu", seed: rng.u32(), std: 0.1 }));
  const pr = new Parameter(zeros(shape, { device: "cpu" }).copyFrom(pq.data));
  const opt = new Opt([pq], hyper);
  const ref = new AdamW([pr], hyper);
  const deq = (codes: Uint8Array, absmax: Float32Array, map: Float32Array) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = toF32(map[codes[i]] * absmax[floor(i / block)]);
    return out;
  };
  const unpack = async (t: Tensor) => {
    const b = await u8(t);
    return bits === 8 ? b : unpack4(b, n);
  };
  for (let step = 0; step < steps; step++) {
    pq.grad.copyFrom(gradients(rng, n, 0.01));
    pr.grad.copyFrom(pq.grad);  // as stored: bf16 gradients reach AdamW rounded the same way
    ref.step();
    opt.step();
    const st = opt.stateOf(pq)!;
    const rs = ref.stateOf(pr)!;
    let dm: Float32Array | Tensor, dv: Float32Array | Tensor;
    if (step % checkEvery === 0 || step === steps - 1) {
      const [ca, cb, aa, ab] = [await unpack(st.m), await unpack(st.v), await f32(st.absmaxM!), await f32(st.absmaxV!)];
      const [rm, rv] = [await f32(rs.expAvg), await f32(rs.expAvgSq)];
      dm = deq(ca, aa, mapA);
      dv = deq(cb, ab, mapB);
      const s: StepStats = { stateOutliers: 0, beyondBound: 0, codeMismatch: 0, errMean: 0, relMean: 0 };
      for (const [d, r, c, am, map] of [[dm, rm, ca, aa, mapA], [dv, rv, cb, ab, mapB]] as const) {
        for (let i = 0; i < n; i++) {
          const diff = abs(d[i] - r[i]);
          if (diff > 3e-3 + 1e-3 * abs(r[i])) s.stateOutliers++;  // torch.isclose(atol=3e-3, rtol=1e-3)
          const a = am[floor(i / block)];
          if (diff > maxError(map, c[i]) * a + 2 ** -21 * a) s.beyondBound++;
        }
        if (step % exactEvery === 0) {
          // Both optimizers computed the same f32 moments from the same inputs: the codes must be
          // exactly the nearest codes of AdamW's moments.
          const q = refQuantize(r, map, block);
          for (let i = 0; i < n; i++) if (q.codes[i] !== c[i]) s.codeMismatch++;
        }
      }
      const [wr, wq] = [await f32(pr.data), await f32(pq.data)];
      for (let i = 0; i < n; i++) {
        const err = abs(wr[i] - wq[i]);
        s.errMean += err / n;
        s.relMean += err / (abs(wr[i]) + 1e-9) / n;
      }
      check(s, step);
    } else if (bits === 8) {
      dm = quant.dequantizeBlockwise(st.m, st.absmaxM!, { signed: true });
      dv = quant.dequantizeBlockwise(st.v, st.absmaxV!, { signed: false });
    } else {
      dm = deq(await unpack(st.m), await f32(st.absmaxM!), mapA);
      dv = deq(await unpack(st.v), await f32(st.absmaxV!), mapB);
    }
    // Re-synchronise: parameters through the quantized optimizer's dtype, AdamW's moments to the
    // dequantized states.
    pq.data.copyFrom(pr.data);
    pr.data.copyFrom(pq.data);
    rs.expAvg.copyFrom(dm);
    rs.expAvgSq.copyFrom(dv);
    if (dm instanceof Tensor) dm.dispose();
    if (dv instanceof Tensor) dv.dispose();
  }
  opt.dispose();
  ref.dispose();
}

describe("AdamW8bit against f32 AdamW (bitsandbytes' methodology), 50 steps of N(0, 0.01^2) gradients", () => {
  const cases: [DType, [number, number], number, number][] = [
    ["f32", [1024, 32], 1, 1], ["f32", [1024, 1024], 2, 10], ["f32", [1024, 4097], 7, 49],
    ["bf16", [1024, 32], 1, 1], ["bf16", [1024, 1024], 5, 25],
  ];
  for (const [dtype, shape, checkEvery, exactEvery] of cases) {
    test(`${dtype} ${shape.join("x")}`, async () => {
      let worst: StepStats = { stateOutliers: 0, beyondBound: 0, codeMismatch: 0, errMean: 0, relMean: 0 };
      await resyncRun(AdamW8bit, 8, dtype, shape, 50, (s) => {
        worst = {
          stateOutliers: max(worst.stateOutliers, s.stateOutliers), beyondBound: worst.beyondBound + s.beyondBound,
          codeMismatch: worst.codeMismatch + s.codeMismatch, errMean: max(worst.errMean, s.errMean),
          relMean: max(worst.relMean, s.relMean),
        };
      }, checkEvery, exactEvery);
      expect(worst.stateOutliers).toBeLessThan(20);  // dequantized states within 3e-3 (rtol 1e-3)
      expect(worst.beyondBound).toBe(0);             // and within half a code step of AdamW's
      expect(worst.codeMismatch).toBe(0);            // the codes are exactly the nearest codes
      if (dtype === "bf16") {
        expect(worst.errMean).toBeLessThan(1.7e-4);
        expect(worst.relMean).toBeLessThan(1.6e-3);
      } else {
        expect(worst.errMean).toBeLessThan(6e-5);
        expect(worst.relMean).toBeLessThan(6e-4);
      }
    });
  }
});

describe("AdamW4bit against f32 AdamW, same methodology", () => {
  // Derived bounds. One step's state error is one requantization: m is within half the widest gap
  // of the 4-bit signed map around its code (at most 0.225 / 2 of the block's absmax), v within
  // half a step of 1/16 of its absmax, or within absmax/16 where it is below absmax/32 (the linear
  // map has no zero). Checked element by element (beyondBound). The parameters see the same f32
  // update as AdamW's from the same (resynchronised) states, so their error is float rounding
  // alone: the 8-bit thresholds hold unchanged.
  const cases: [DType, [number, number], number][] = [["f32", [1024, 32], 2], ["f32", [1024, 257], 6], ["bf16", [1024, 257], 6]];
  for (const [dtype, shape, exactEvery] of cases) {
    test(`${dtype} ${shape.join("x")}`, async () => {
      let bad = 0, mism = 0, errMean = 0, relMean = 0;
      await resyncRun(AdamW4bit, 4, dtype, shape, 50, (s) => {
        bad += s.beyondBound;
        mism += s.codeMismatch;
        errMean = max(errMean, s.errMean);
        relMean = max(relMean, s.relMean);
      }, 2, exactEvery);
      expect(bad).toBe(0);
      expect(mism).toBe(0);
      expect(errMean).toBeLessThan(dtype === "bf16" ? 1.7e-4 : 6e-5);
      expect(relMean).toBeLessThan(dtype === "bf16" ? 1.6e-3 : 6e-4);
    });
  }
});

describe("drift over 50 steps without resynchronisation", () => {
  // How far the parameters end from f32 AdamW's when the quantized states are carried for real.
  // Each step's update lr * m/sqrt(v) is off by the states' relative quantization error, a few
  // tenths of a percent for 8 bits (64 to 128 codes per decade) and several percent for 4 bits
  // (2 to 4 per decade, v linear): 50 steps of errors of lr * 0.5% (8 bits) or lr * 5% (4 bits)
  // give the bounds 2.5e-4 and 2.5e-3, about twice what this problem measures (1.2e-4, 1.6e-3),
  // against a mean total move of ~0.03 per element.
  for (const [Opt, bits, bound] of [[AdamW8bit, 8, 2.5e-4], [AdamW4bit, 4, 2.5e-3]] as const) {
    test(`AdamW${bits}bit f32 1024x256`, async () => {
      const rng = new Rng(bits);
      const shape = [1024, 256];
      const n = 1024 * 256;
      const pq = new Parameter(randn(shape, { device: "cpu", seed: bits, std: 0.1 }));
      const pr = new Parameter(pq.data.clone());
      const w0 = await f32(pq.data);
      const opt = new Opt([pq], { lr: 1e-3 });
      const ref = new AdamW([pr], { lr: 1e-3 });
      for (let s = 0; s < 50; s++) {
        const g = gradients(rng, n, 0.01);
        pq.grad.copyFrom(g);
        pr.grad.copyFrom(g);
        opt.step();
        ref.step();
      }
      const [a, b] = [await f32(pq.data), await f32(pr.data)];
      let err = 0, moved = 0;
      for (let i = 0; i < n; i++) {
        err += abs(a[i] - b[i]) / n;
        moved += abs(b[i] - w0[i]) / n;
      }
      expect(moved).toBeGreaterThan(5e-3);  // the problem is not trivial
      expect(err).toBeLessThan(bound);
    });
  }
});

describe("states", () => {
  test("state bytes: 2 codes and 2 absmax per block of 256 (8 bits), half of that with blocks of 128 (4 bits)", () => {
    const p = new Parameter(zeros([1000, 1000], { device: "cpu" }));
    const small = new Parameter(zeros([4095], { device: "cpu" }));
    const o8 = new AdamW8bit([p, small]);
    o8.step();
    const blocks8 = Math.ceil(1e6 / 256);
    expect(o8.stateBytes()).toBe(2 * 1e6 + 2 * 4 * blocks8 + 8 * 4095 + 8);
    expect((2 * 1e6 + 8 * blocks8) / 1e6).toBeCloseTo(2.03125, 4);
    const o4 = new AdamW4bit([p]);
    o4.step();
    expect(o4.stateBytes()).toBe(2 * 5e5 + 2 * 4 * Math.ceil(1e6 / 128) + 8);
    expect(o4.stateOf(p)!.m.numel).toBe(5e5);
    expect(o8.stateOf(small)!.m.dtype).toBe("f32");  // under minSize8bit: f32 states
    const o = new AdamW8bit([small], { minSize8bit: 100 });
    o.step();
    expect(o.stateOf(small)!.m.dtype).toBe("u8");
  });

  test("states start at the code of 0 with absmax 0: a zero gradient leaves them there and only decays W", async () => {
    for (const [Opt, bits] of [[AdamW8bit, 8], [AdamW4bit, 4]] as const) {
      const w0 = new Rng(3).normals(5000, 0.1);
      const p = new Parameter(tensor(w0, [5000], { device: "cpu" }));
      const opt = new Opt([p], { lr: 0.01, weightDecay: 0.1 });
      opt.step();
      const st = opt.stateOf(p)!;
      const zeroA = bits === 8 ? 127 : 7;
      const unpackAll = async (t: Tensor) => (bits === 8 ? await raw(t) : Array.from(unpack4((await t.toTypedArray()) as Uint8Array, 5000)));
      expect(new Set(await unpackAll(st.m))).toEqual(new Set([zeroA]));
      expect(new Set(await unpackAll(st.v))).toEqual(new Set([0]));
      expect(new Set(await raw(st.absmaxM!))).toEqual(new Set([0]));
      expect(new Set(await raw(st.absmaxV!))).toEqual(new Set([0]));
      const w = await p.data.toFloat32Array();
      const decay = toF32(1 - 0.01 * 0.1);
      expect(Array.from(w)).toEqual(Array.from(w0, (x) => toF32(toF32(x) * decay)));
    }
  });

  test("re-encoding never flips m's sign; tensors under minSize8bit match AdamW", async () => {
    const rng = new Rng(8);
    const n = 70000;
    const big = new Parameter(tensor(rng.normals(n, 0.1), [n], { device: "cpu" }));
    const small = new Parameter(tensor(rng.normals(33, 0.1), [33], { device: "cpu" }));
    const smallRef = new Parameter(small.data.clone());
    const opt = new AdamW8bit([big, small], { lr: 0.01 });
    const ref = new AdamW([smallRef], { lr: 0.01 });
    let prev: Float32Array = new Float32Array(n);  // m as dequantized after the previous step
    const b1 = toF32(0.9), c1 = toF32(1 - b1);
    let flips = 0, zeroed = 0;
    for (let s = 0; s < 5; s++) {
      const g = rng.normals(n, s === 2 ? 1e-6 : 0.01);  // one step of tiny gradients: many m near 0
      big.grad.copyFrom(g);
      const gs = rng.normals(33, 0.01);
      small.grad.copyFrom(gs);
      smallRef.grad.copyFrom(gs);
      opt.step();
      ref.step();
      const st = opt.stateOf(big)!;
      const m = await f32(quant.dequantizeBlockwise(st.m, st.absmaxM!));
      for (let i = 0; i < n; i++) {
        const exact = toF32(toF32(b1 * prev[i]) + toF32(c1 * toF32(g[i])));  // this step's f32 m
        if (m[i] * exact < 0) flips++;
        if (m[i] === 0 && exact !== 0) zeroed++;
      }
      prev = m;
    }
    expect(flips).toBe(0);
    expect(zeroed).toBeLessThan(n);  // (values far under a block's absmax do round to 0)
    const a = await f32(small.data), b = await f32(smallRef.data);
    let worst = 0;
    for (let i = 0; i < 33; i++) worst = max(worst, abs(a[i] - b[i]));
    expect(worst).toBeLessThan(1e-7);
  });

  test("stateDict / loadStateDict: a restored optimizer continues bit for bit", async () => {
    for (const Opt of [AdamW8bit, AdamW4bit]) {
      const rng = new Rng(12);
      const mk = (w: Float32Array, shape: number[], dtype: DType) => new Parameter(tensor(w, shape, { dtype, device: "cpu" }));
      const wa = rng.normals(5000, 0.1), wb = rng.normals(100, 0.1);
      const a1 = mk(wa, [50, 100], "f32"), b1 = mk(wb, [100], "bf16");
      const a2 = mk(wa, [50, 100], "f32"), b2 = mk(wb, [100], "bf16");
      const o1 = new Opt([{ params: [a1] }, { params: [b1], lr: 0.01 }]);
      const o2 = new Opt([{ params: [a2] }, { params: [b2], lr: 0.01 }]);
      const feed = (ga: Float32Array, gb: Float32Array) => {
        for (const p of [a1, a2]) p.grad.copyFrom(ga);
        for (const p of [b1, b2]) p.grad.copyFrom(gb);
      };
      for (let s = 0; s < 3; s++) { feed(rng.normals(5000, 0.01), rng.normals(100, 0.01)); o1.step(); }
      a2.data.copyFrom(a1.data);
      b2.data.copyFrom(b1.data);
      const sd = o1.stateDict();
      expect(Object.keys(sd.tensors).sort()).toEqual(["group.0.counters", "group.1.counters", "param.0.exp_avg",
        "param.0.exp_avg_absmax", "param.0.exp_avg_sq", "param.0.exp_avg_sq_absmax", "param.1.exp_avg", "param.1.exp_avg_sq"]);
      o2.loadStateDict(sd);
      for (let s = 0; s < 3; s++) { feed(rng.normals(5000, 0.01), rng.normals(100, 0.01)); o1.step(); o2.step(); }
      expect(await raw(a2.data)).toEqual(await raw(a1.data));
      expect(await raw(b2.data)).toEqual(await raw(b1.data));
      expect(await raw(o2.stateOf(a2)!.m)).toEqual(await raw(o1.stateOf(a1)!.m));
      expect(await raw(o2.stateOf(a2)!.absmaxV!)).toEqual(await raw(o1.stateOf(a1)!.absmaxV!));
      expect(await o2.completedStepsPerGroup()).toEqual([6, 6]);
      // A state dict of the other kind is refused whole.
      const other = new (Opt === AdamW8bit ? AdamW4bit : AdamW8bit)([{ params: [a1] }, { params: [b1] }]);
      expectCode(() => other.loadStateDict(sd), "E_CHECKPOINT");
      const bad = { ...sd, optimizer: (other as unknown as { name: string }).name };
      expectCode(() => other.loadStateDict(bad), "E_CHECKPOINT");
    }
  });
});

test("save / load through a safetensors file: codes survive, the restored optimizer continues bit for bit", async () => {
  const os = await import("os");
  const path = await import("path");
  const fs = await import("fs");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slimopt-q-"));
  try {
    for (const Opt of [AdamW8bit, AdamW4bit]) {
      const rng = new Rng(31);
      const w = rng.normals(6000, 0.1), w2 = rng.normals(50, 0.1);
      const mk = () => [new Parameter(tensor(w, [60, 100], { device: "cpu" })), new Parameter(tensor(w2, [50], { device: "cpu" }))];
      const [a1, b1] = mk(), [a2, b2] = mk();
      const o1 = new Opt([a1, b1], { lr: 0.01 });
      const o2 = new Opt([a2, b2], { lr: 0.05, minSize8bit: 4096 });
      const gs = [rng.normals(6000, 0.01), rng.normals(50, 0.01)];
      for (let s = 0; s < 3; s++) { a1.grad.copyFrom(gs[0]); b1.grad.copyFrom(gs[1]); o1.step(); }
      const file = path.join(dir, `${Opt.name}.safetensors`);
      await o1.save(file);
      await o2.load(file);
      expect(o2.paramGroups[0].lr).toBe(0.01);  // options restored
      a2.data.copyFrom(a1.data);
      b2.data.copyFrom(b1.data);
      for (const [a, b, o] of [[a1, b1, o1], [a2, b2, o2]] as const) {
        a.grad.copyFrom(gs[0]);
        b.grad.copyFrom(gs[1]);
        o.step();
      }
      expect(await raw(a2.data)).toEqual(await raw(a1.data));
      expect(await raw(b2.data)).toEqual(await raw(b1.data));
      expect(await raw(o2.stateOf(a2)!.m)).toEqual(await raw(o1.stateOf(a1)!.m));
      // A checkpoint of another minSize8bit is refused before anything changes.
      const o3 = new Opt([...mk()], { minSize8bit: 10 });
      await expect(o3.load(file)).rejects.toMatchObject({ code: "E_CHECKPOINT" });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

describe("non-finite gradients", () => {
  for (const [Opt, bad] of [[AdamW8bit, NaN], [AdamW8bit, Infinity], [AdamW4bit, -Infinity]] as const) {
    test(`${Opt.name}: a ${bad} skips that group's step whole (codes, absmax, f32 states, W); the other group steps`, async () => {
      const rng = new Rng(9);
      const a = new Parameter(tensor(rng.normals(4097), [4097], { device: "cpu" }));
      const b = new Parameter(tensor(rng.normals(65537), [65537], { dtype: "bf16", device: "cpu" }));
      const s = new Parameter(tensor(rng.normals(33), [33], { device: "cpu" }));
      const c = new Parameter(tensor(rng.normals(5000), [5000], { device: "cpu" }));
      const opt = new Opt([{ params: [a, b, s] }, { params: [c] }], { lr: 0.01 });
      for (const p of [a, b, s, c]) p.grad.copyFrom(rng.normals(p.numel));
      opt.step();
      const snap = async () => Promise.all([a, b, s].flatMap((p) => {
        const st = opt.stateOf(p)!;
        return [p.data, st.m, st.v, ...(st.absmaxM ? [st.absmaxM, st.absmaxV!] : [])].map(raw);
      }));
      const before = await snap();
      const cBefore = await raw(c.data);
      const g = rng.normals(65537);
      g[65536] = bad;  // the very last element of the bf16 tensor
      b.grad.copyFrom(g);
      a.grad.copyFrom(rng.normals(4097));
      s.grad.copyFrom(rng.normals(33));
      c.grad.copyFrom(rng.normals(5000));
      opt.step();
      expect(await snap()).toEqual(before);
      expect(await raw(c.data)).not.toEqual(cBefore);
      expect(await opt.skippedStepsPerGroup()).toEqual([1, 0]);
      expect(await opt.skippedSteps()).toBe(1);
      expect(await opt.completedStepsPerGroup()).toEqual([1, 2]);
      b.grad.copyFrom(rng.normals(65537));
      opt.step();
      expect(await opt.completedStepsPerGroup()).toEqual([2, 3]);
    });
  }
});

describe("bad input is refused with its code and changes nothing", () => {
  async function setup() {
    const rng = new Rng(11);
    const p = new Parameter(tensor(rng.normals(5000), [5000], { device: "cpu" }), { name: "p" });
    const q = new Parameter(tensor(rng.normals(7), [7], { dtype: "bf16", device: "cpu" }), { name: "q" });
    const opt = new AdamW8bit([p, q], { lr: 0.01 });
    p.grad.copyFrom(rng.normals(5000));
    q.grad.copyFrom(rng.normals(7));
    opt.step();
    p.grad.copyFrom(rng.normals(5000));
    const snap = async () => Promise.all([p, q].flatMap((x) => {
      const st = opt.stateOf(x)!;
      return [x.data, st.m, st.v, ...(st.absmaxM ? [st.absmaxM, st.absmaxV!] : [])].map(raw);
    }));
    return { p, q, opt, snap, before: await snap() };
  }

  test("gradient of another shape -> E_SHAPE; of another dtype -> E_DTYPE", async () => {
    const s = await setup();
    s.p.grad = zeros([4999], { device: "cpu" });
    expectCode(() => s.opt.step(), "E_SHAPE");
    s.p.grad = zeros([5000], { dtype: "f16", device: "cpu" });
    expectCode(() => s.opt.step(), "E_DTYPE");
    expect(await s.snap()).toEqual(s.before);
  });

  test("lr or betas out of range, set between steps -> E_ARG", async () => {
    const s = await setup();
    for (const lr of [-1e-3, NaN, Infinity]) {
      s.opt.paramGroups[0].lr = lr;
      expectCode(() => s.opt.step(), "E_ARG");
    }
    s.opt.paramGroups[0].lr = 0.01;
    s.opt.paramGroups[0].betas = [0.9, 1];
    expectCode(() => s.opt.step(), "E_ARG");
    expect(await s.snap()).toEqual(s.before);
  });

  test("constructor refusals", () => {
    const p = new Parameter(zeros([3], { device: "cpu" }));
    for (const Opt of [AdamW8bit, AdamW4bit]) {
      expectCode(() => new Opt([]), "E_ARG");
      expectCode(() => new Opt([p], { lr: -1 }), "E_ARG");
      expectCode(() => new Opt([p], { minSize8bit: -1 }), "E_ARG");
      expectCode(() => new Opt([p], { minSize8bit: 1.5 }), "E_ARG");
      expectCode(() => new Opt([p], { betas: [0.9, NaN] }), "E_ARG");
      expectCode(() => new Opt([p, p]), "E_ARG");
    }
  });

  test("native group: maps of the wrong length -> E_SHAPE, state buffers too small -> E_SHAPE, bits -> E_ARG", async () => {
    const s = await setup();
    const nat = native();
    const counters = zeros([2], { dtype: "i32", device: "cpu" });
    const n = 5000;
    const codes = zeros([n], { dtype: "u8", device: "cpu" });
    const absmax = zeros([Math.ceil(n / 256)], { device: "cpu" });
    const entry = (c: Tensor, am: Tensor) => [[s.p.data.handle, s.p.grad.handle, c.handle, c.handle, am.handle, am.handle, n, 0, true]];
    const m8 = quant.mapHandle("signed8"), m4 = quant.mapHandle("signed4");
    expectCode(() => new nat.QAdamGroup(-1, 8, entry(codes, absmax), counters.handle, m4, m8), "E_SHAPE");
    expectCode(() => new nat.QAdamGroup(-1, 4, entry(codes, absmax), counters.handle, m8, m4), "E_SHAPE");
    expectCode(() => new nat.QAdamGroup(-1, 8, entry(zeros([n - 1], { dtype: "u8", device: "cpu" }), absmax), counters.handle, m8, m8), "E_SHAPE");
    expectCode(() => new nat.QAdamGroup(-1, 8, entry(codes, zeros([3], { device: "cpu" })), counters.handle, m8, m8), "E_SHAPE");
    expectCode(() => new nat.QAdamGroup(-1, 6, entry(codes, absmax), counters.handle, m8, m8), "E_ARG");
    expectCode(() => new nat.QAdamGroup(-1, 8, entry(codes, absmax), counters.handle, {} as never, m8), "E_ARG");
    expect(await s.snap()).toEqual(s.before);
    expect(await raw(codes)).toEqual(new Array(n).fill(0));
  });

  test("a disposed gradient -> E_DISPOSED, nothing changed", async () => {
    const s = await setup();
    s.q.grad.dispose();
    expectCode(() => s.opt.step(), "E_DISPOSED");
    expect(await s.snap()).toEqual(s.before);
  });
});

test("bf16 parameters with stochastic rounding move by the right amount on average", async () => {
  const n = 65536;
  const p = new Parameter(tensor(new Float32Array(n).fill(1), [n], { dtype: "bf16", device: "cpu" }));
  const opt = new AdamW8bit([p], { lr: 1e-4, weightDecay: 0, stochasticRounding: true, seed: 5 });
  for (let s = 0; s < 20; s++) {
    p.grad.copyFrom(new Float32Array(n).fill(1));
    opt.step();
  }
  const w = await p.data.toFloat32Array();
  const mean = w.reduce((a, x) => a + x, 0) / n;
  // A constant gradient makes every Adam step lr (the 8-bit states of a constant are exact).
  expect(abs(mean - (1 - 20 * 1e-4))).toBeLessThan(2e-4);
  expect(roundTo("bf16", w[0])).toBe(w[0]);
});
