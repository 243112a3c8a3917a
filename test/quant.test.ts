import { quant, tensor, zeros, randn, SlimoptError, Tensor, DType } from "../lib";
import { native } from "../lib/native";
import { Rng, roundTo } from "./reference";
import { bnbDynamicMap, halfStep, nearestCode, refDequantize, refQuantize, toF32 } from "./quant_reference";
import { expectCode } from "./helpers";

// Math's functions aliased once: a global looked up inside jest's context costs ~100x in a hot loop.
const { abs, floor } = Math;

async function raw(t: Tensor): Promise<number[]> {
  return Array.from(await t.toTypedArray());
}

// A few entries of bitsandbytes' signed map as a bitsandbytes run prints them (float32 values in
// repr); chosen where a linspace computed with two roundings per point would differ.
const BNB_SIGNED_SAMPLES: [number, number][] = [
  [0, -0.992968738079071], [18, -0.7398437261581421], [20, -0.7117187976837158],
  [23, -0.6695312261581421], [64, -0.09859374910593033], [65, -0.09578125923871994],
  [126, -5.500000384017767e-07], [127, 0], [128, 5.500000384017767e-07],
  [234, 0.7117187976837158], [254, 0.992968738079071], [255, 1],
];

describe("dynamic maps", () => {
  test("signed and unsigned 8-bit maps equal bitsandbytes' create_dynamic_map value for value", () => {
    for (const signed of [true, false]) {
      const m = quant.dynamicMap(signed);
      const ref = bnbDynamicMap(signed);
      expect(m).toBeInstanceOf(Float32Array);
      expect(m.length).toBe(256);
      expect(Array.from(m)).toEqual(ref);  // float32 values, compared exactly
    }
    const s = quant.dynamicMap(true);
    for (const [i, v] of BNB_SIGNED_SAMPLES) expect(s[i]).toBe(toF32(v));
  });

  test("structure: signed has 127 negatives, 0, 127 positives and 1; unsigned 0, 254 positives, 1", () => {
    const s = quant.dynamicMap(true), u = quant.dynamicMap(false);
    expect(s.filter((x) => x < 0).length).toBe(127);
    expect(s[127]).toBe(0);
    expect(s[255]).toBe(1);
    expect(s.every((x, i) => i === 0 || x > s[i - 1])).toBe(true);
    expect(u[0]).toBe(0);
    expect(u[255]).toBe(1);
    expect(u.every((x, i) => i === 0 || x > u[i - 1])).toBe(true);
    // 7 decades: 2^i values per sign (signed), 2^(i+1) (unsigned) in [0.1, 1) * 10^(i-6).
    for (let i = 0; i < 7; i++) {
      const lo = 0.1 * 10 ** (i - 6), hi = 10 ** (i - 6);
      expect(s.filter((x) => x > lo && x < hi).length).toBe(2 ** i);
      expect(u.filter((x) => x > lo && x < hi).length).toBe(2 ** (i + 1));
    }
  });

  test("4-bit maps: signed dynamic with 3 exponent bits (16 values), linear 1/16 .. 1 without zero", () => {
    const s4 = quant.dynamicMap(true, { maxExponentBits: 3, totalBits: 4 });
    expect(Array.from(s4)).toEqual(bnbDynamicMap(true, 3, 4));
    expect(s4.length).toBe(16);
    expect(s4[7]).toBe(0);
    expect(s4[15]).toBe(1);
    expect(Array.from(quant.linearMap(4))).toEqual(Array.from({ length: 16 }, (_, k) => (k + 1) / 16));
  });

  test("bad map options -> E_ARG", () => {
    expectCode(() => quant.dynamicMap(true, { totalBits: 9 }), "E_ARG");
    expectCode(() => quant.dynamicMap(true, { maxExponentBits: 8 }), "E_ARG");
    expectCode(() => quant.linearMap(0), "E_ARG");
  });
});

const DTYPES: DType[] = ["f32", "bf16", "f16"];
const BLOCKS = [64, 128, 256, 512, 1024, 2048, 4096];

describe("quantizeBlockwise / dequantizeBlockwise on the CPU", () => {
  const signedMap = quant.dynamicMap(true), unsignedMap = quant.dynamicMap(false);

  for (const dtype of DTYPES) {
    test(`${dtype}: codes are the nearest codes, absmax exact, error within half a code step, every block size`, async () => {
      const rng = new Rng(DTYPES.indexOf(dtype) + 1);
      for (const n of [1, 7, 4097, 65537]) {
        for (const block of n === 4097 ? BLOCKS : n > 4097 ? [256] : [64, 4096]) {
          for (const signed of [true, false]) {
            const vals = rng.normals(n, 0.37);
            if (!signed) for (let i = 0; i < n; i++) vals[i] = abs(vals[i]);
            const x = tensor(vals, [n], { dtype, device: "cpu" });
            const stored = await x.toFloat32Array();
            const map = signed ? signedMap : unsignedMap;
            const { codes, absmax } = quant.quantizeBlockwise(x, { signed, blockSize: block });
            expect(codes.dtype).toBe("u8");
            expect(codes.shape).toEqual([n]);
            expect(absmax.shape).toEqual([Math.ceil(n / block)]);
            const ref = refQuantize(stored, map, block);
            const c = (await codes.toTypedArray()) as Uint8Array;
            const a = (await absmax.toTypedArray()) as Float32Array;
            expect(Array.from(a)).toEqual(Array.from(ref.absmax));
            let mismatches = 0;
            for (let i = 0; i < n; i++) if (c[i] !== ref.codes[i]) mismatches++;
            expect(mismatches).toBe(0);
            const refY = refDequantize(c, a, map, block);
            for (const odt of n === 4097 && block === 256 ? DTYPES : ["f32" as DType]) {
              const y = await quant.dequantizeBlockwise(codes, absmax, { signed, blockSize: block, dtype: odt }).toFloat32Array();
              let wrong = 0, far = 0;
              for (let i = 0; i < n; i++) {
                if (y[i] !== roundTo(odt, refY[i])) wrong++;
                if (odt === "f32") {
                  const am = a[floor(i / block)];
                  // Within half a code step (plus the float32 roundings of x/absmax and of the product).
                  if (abs(y[i] - stored[i]) > halfStep(map, c[i]) * am + 2 ** -22 * am) far++;
                }
              }
              expect([odt, wrong, far]).toEqual([odt, 0, 0]);
            }
          }
        }
      }
    });
  }

  test("ties and near-ties: every midpoint of the map and its neighbouring floats, both signs", async () => {
    for (const signed of [true, false]) {
      const map = signed ? signedMap : unsignedMap;
      const xs: number[] = [];
      for (let k = 0; k + 1 < map.length; k++) {
        const mid = toF32((map[k] + map[k + 1]) / 2);
        const bits = new Uint32Array(Float32Array.of(mid).buffer)[0];
        for (let d = -3; d <= 3; d++) {
          const v = new Float32Array(new Uint32Array([bits + d]).buffer)[0];
          if (abs(v) <= 1 && Number.isFinite(v)) xs.push(v, -v);
        }
      }
      // Tiny, zero and subnormal values.
      xs.push(0, -0, 1e-45, -1e-45, 1e-38, 2 ** -126, 1e-30, -1e-30, 1e-8, 2e-7, 3e-7, -3e-7);
      // Blocks of 64 with 1.0 first: absmax 1, so each value is quantized as is.
      const block = 64, per = block - 1;
      const data: number[] = [];
      for (let i = 0; i < xs.length; i += per) data.push(1, ...xs.slice(i, i + per));
      const x = tensor(Float32Array.from(data), [data.length], { device: "cpu" });
      const { codes } = quant.quantizeBlockwise(x, { signed, blockSize: block });
      const c = (await codes.toTypedArray()) as Uint8Array;
      const stored = Float32Array.from(data);
      let bad = 0;
      for (let i = 0; i < data.length; i++) if (c[i] !== nearestCode(map, stored[i])) bad++;
      expect(bad).toBe(0);
      // Never flips a sign: a negative value gets a code <= that of 0, a positive one >= it.
      let flipped = 0;
      for (let i = 0; i < data.length; i++) if (stored[i] * map[c[i]] < 0) flipped++;
      expect(flipped).toBe(0);
    }
  });

  test("random float32 bit patterns within [-1, 1] map to the nearest code", async () => {
    const rng = new Rng(99);
    const n = 64 * 2000;
    const bits = new Uint32Array(n);
    for (let i = 0; i < n; i++) bits[i] = ((rng.u32() & 0x3fffffff) + (rng.u32() & 0x80000000)) >>> 0;
    const vals = new Float32Array(bits.buffer);
    for (let b = 0; b < n; b += 64) vals[b] = 1;  // absmax 1
    for (let i = 0; i < n; i++) if (!(abs(vals[i]) <= 1)) vals[i] = 0.5;
    for (const signed of [true, false]) {
      const map = signed ? signedMap : unsignedMap;
      const { codes } = quant.quantizeBlockwise(tensor(vals, [n], { device: "cpu" }), { signed, blockSize: 64 });
      const c = (await codes.toTypedArray()) as Uint8Array;
      let bad = 0;
      for (let i = 0; i < n; i++) if (c[i] !== nearestCode(map, vals[i])) bad++;
      expect(bad).toBe(0);
    }
  });

  test("an all-zero block has absmax 0 and the code of 0; a custom 16-entry map works", async () => {
    const x = tensor(new Float32Array(300), [300], { device: "cpu" });
    const { codes, absmax } = quant.quantizeBlockwise(x);
    expect(new Set(await raw(codes))).toEqual(new Set([127]));
    expect(await raw(absmax)).toEqual([0, 0]);
    const m4 = quant.dynamicMap(true, { maxExponentBits: 3, totalBits: 4 });
    const y = randn([1000], { device: "cpu", seed: 4 });
    const q = quant.quantizeBlockwise(y, { code: m4, blockSize: 128 });
    const c = (await q.codes.toTypedArray()) as Uint8Array;
    const ref = refQuantize(await y.toFloat32Array(), m4, 128);
    expect(Array.from(c)).toEqual(Array.from(ref.codes));
    const back = await quant.dequantizeBlockwise(q.codes, q.absmax, { code: m4, blockSize: 128 }).toFloat32Array();
    expect(Array.from(back)).toEqual(Array.from(refDequantize(c, ref.absmax, m4, 128)));
  });

  test("non-finite input does not crash; shapes are kept; out tensors are reused", async () => {
    const x = tensor(Float32Array.from([1, NaN, -Infinity, 2, Infinity, 0, -3]), [7], { device: "cpu" });
    const { codes, absmax } = quant.quantizeBlockwise(x, { blockSize: 64 });
    expect((await raw(codes)).every((c) => c >= 0 && c < 256)).toBe(true);
    expect(absmax.numel).toBe(1);
    const y = randn([3, 5, 7], { dtype: "bf16", device: "cpu", seed: 1 });
    const out = { codes: zeros([105], { dtype: "u8", device: "cpu" }), absmax: zeros([2], { device: "cpu" }) };
    const r = quant.quantizeBlockwise(y, { blockSize: 64, out });
    expect(r.codes).toBe(out.codes);
    expect(r.absmax).toBe(out.absmax);
    const d = quant.dequantizeBlockwise(out.codes, out.absmax, { blockSize: 64, dtype: "bf16" });
    expect(d.shape).toEqual([105]);
    expect(d.dtype).toBe("bf16");
  });
});

describe("bad input is refused with its code and changes nothing", () => {
  async function setup() {
    const x = randn([1000], { device: "cpu", seed: 7 });
    const codes = zeros([1000], { dtype: "u8", device: "cpu" }).copyFrom(Uint8Array.from({ length: 1000 }, (_, i) => i % 251));
    const absmax = zeros([4], { device: "cpu" }).copyFrom([1, 2, 3, 4]);
    const out = zeros([1000], { device: "cpu" }).copyFrom(Float32Array.from({ length: 1000 }, (_, i) => i));
    const snap = async () => Promise.all([raw(codes), raw(absmax), raw(out)]);
    return { x, codes, absmax, out, snap, before: await snap() };
  }

  test("block size not a power of two, or out of [64, 4096] -> E_ARG", async () => {
    const s = await setup();
    for (const blockSize of [100, 32, 8192, 0, -256, 256.5, NaN]) {
      expectCode(() => quant.quantizeBlockwise(s.x, { blockSize, out: { codes: s.codes, absmax: s.absmax } }), "E_ARG");
      expectCode(() => quant.dequantizeBlockwise(s.codes, s.absmax, { blockSize, out: s.out }), "E_ARG");
    }
    // The native entry points refuse on their own too.
    const nat = native();
    const m = quant.mapHandle("signed8");
    expectCode(() => nat.quantizeBlockwise(s.x.handle, 0, 1000, s.codes.handle, s.absmax.handle, 100, m), "E_ARG");
    expectCode(() => nat.dequantizeBlockwise(s.codes.handle, s.absmax.handle, 1000, s.out.handle, 0, 8192, m), "E_ARG");
    expect(await s.snap()).toEqual(s.before);
  });

  test("codes and absmax of mismatched length -> E_SHAPE", async () => {
    const s = await setup();
    const short = zeros([3], { device: "cpu" });
    expectCode(() => quant.dequantizeBlockwise(s.codes, short, { out: s.out }), "E_SHAPE");
    expectCode(() => quant.dequantizeBlockwise(s.codes, s.absmax, { blockSize: 128, out: s.out }), "E_SHAPE");
    expectCode(() => quant.quantizeBlockwise(s.x, { out: { codes: s.codes, absmax: short } }), "E_SHAPE");
    expectCode(() => quant.quantizeBlockwise(s.x, { out: { codes: zeros([999], { dtype: "u8", device: "cpu" }), absmax: s.absmax } }), "E_SHAPE");
    expectCode(() => quant.dequantizeBlockwise(s.codes, s.absmax, { out: zeros([999], { device: "cpu" }) }), "E_SHAPE");
    // Native: buffers smaller than the count say E_SHAPE, never read past the end.
    const nat = native(), m = quant.mapHandle("signed8");
    expectCode(() => nat.quantizeBlockwise(s.x.handle, 0, 1000, s.codes.handle, short.handle, 256, m), "E_SHAPE");
    expectCode(() => nat.dequantizeBlockwise(s.codes.handle, short.handle, 1000, s.out.handle, 0, 256, m), "E_SHAPE");
    expectCode(() => nat.dequantizeBlockwise(s.codes.handle, s.absmax.handle, 2000, s.out.handle, 0, 256, m), "E_SHAPE");
    expect(await s.snap()).toEqual(s.before);
  });

  test("a map that is not 256 (or 16) long -> E_SHAPE; unsorted or outside [-1, 1] -> E_ARG", async () => {
    const s = await setup();
    const m = quant.dynamicMap(true);
    for (const code of [new Float32Array(100), m.subarray(0, 255), new Float32Array(257), new Float32Array(0)])
      expectCode(() => quant.quantizeBlockwise(s.x, { code, out: { codes: s.codes, absmax: s.absmax } }), "E_SHAPE");
    expectCode(() => quant.dequantizeBlockwise(s.codes, s.absmax, { code: new Float32Array(15), out: s.out }), "E_SHAPE");
    const unsorted = Float32Array.from(m).reverse();
    const big = Float32Array.from(m, (x) => x * 2);
    const nan = Float32Array.from(m); nan[3] = NaN;
    const dup = Float32Array.from(m); dup[4] = dup[5];
    for (const code of [unsorted, big, nan, dup])
      expectCode(() => quant.quantizeBlockwise(s.x, { code, out: { codes: s.codes, absmax: s.absmax } }), "E_ARG");
    expectCode(() => new (native().QuantMap)(new Float64Array(256) as unknown as Float32Array), "E_ARG");
    expect(await s.snap()).toEqual(s.before);
  });

  test("wrong dtypes -> E_DTYPE; not a tensor -> E_ARG; disposed -> E_DISPOSED", async () => {
    const s = await setup();
    expectCode(() => quant.quantizeBlockwise(s.codes), "E_DTYPE");
    expectCode(() => quant.dequantizeBlockwise(s.out, s.absmax), "E_DTYPE");
    expectCode(() => quant.dequantizeBlockwise(s.codes, zeros([4], { dtype: "i32", device: "cpu" })), "E_DTYPE");
    expectCode(() => quant.dequantizeBlockwise(s.codes, s.absmax, { dtype: "u8" }), "E_DTYPE");
    expectCode(() => quant.quantizeBlockwise(s.x, { out: { codes: s.out, absmax: s.absmax } }), "E_DTYPE");
    expectCode(() => quant.quantizeBlockwise([1, 2] as unknown as Tensor), "E_ARG");
    expectCode(() => quant.quantizeBlockwise(s.x, { signed: "yes" as unknown as boolean }), "E_ARG");
    const gone = randn([10], { device: "cpu" });
    gone.dispose();
    expectCode(() => quant.quantizeBlockwise(gone), "E_DISPOSED");
    expect(await s.snap()).toEqual(s.before);
  });
});
