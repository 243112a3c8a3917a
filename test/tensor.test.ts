import { devices, defaultDevice, device, tensor, zeros, randn, fromDevicePointer, SlimoptError, Tensor, info } from "../lib";
import { Rng, roundBf16, roundF16 } from "./reference";
import { expectCode } from "./helpers";

describe("devices", () => {
  test("cpu is always listed and usable; no GPU is not an error", () => {
    const ds = devices();
    expect(ds[0].toString()).toBe("cpu");
    expect(ds[0].kind).toBe("cpu");
    expect(device("cpu")).toBe(ds[0]);
    expect(["cpu", "cuda:0"]).toContain(defaultDevice().toString());
    expect(device("cpu").stream).toBe(0n);
  });

  test("asking for cuda without a GPU says why", () => {
    if (devices().length > 1) return;  // this check is for machines without a GPU
    let err: unknown;
    try { device("cuda"); } catch (e) { err = e; }
    expect((err as SlimoptError).code).toBe("E_NO_CUDA");
    expect((err as Error).message.length).toBeGreaterThan(20);
  });

  test("bad device specs", () => {
    expectCode(() => device("tpu"), "E_DEVICE");
    expectCode(() => device("cuda:x"), "E_DEVICE");
  });

  test("synchronize resolves", async () => {
    await expect(device("cpu").synchronize()).resolves.toBeUndefined();
  });

  test("info reports the build and devices", () => {
    const i = info();
    expect(typeof i.cudaCompiled).toBe("boolean");
    expect(i.devices[0].id).toBe("cpu");
    expect(i.version).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe("tensors on the CPU", () => {
  const sizes = [1, 7, 4097, 65537];

  test.each(sizes)("round trip f32/bf16/f16 of %i values rounds as IEEE nearest-even", async (n) => {
    const rng = new Rng(n);
    const x = rng.normals(n, 3);
    // Values that exercise rounding: ties, subnormals, overflow for f16.
    if (n > 10) x.set([0, -0, 1e-8, 6.1e-5, 65519, 65520, 1e5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 2 ** -20]);
    for (const [dtype, round] of [["f32", Math.fround], ["bf16", roundBf16], ["f16", roundF16]] as const) {
      const t = tensor(x, [n], { dtype, device: "cpu" });
      expect(t.shape).toEqual([n]);
      expect(t.nbytes).toBe(n * (dtype === "f32" ? 4 : 2));
      const back = await t.toFloat32Array();
      for (let i = 0; i < n; i++) {
        if (!Object.is(back[i], round(x[i]))) throw new Error(`${dtype}[${i}]: ${x[i]} -> ${back[i]}, expected ${round(x[i])}`);
      }
      t.dispose();
    }
  });

  test("i32 and u8 tensors hold exact integers", async () => {
    const a = tensor(Int32Array.from([1, -2, 2 ** 31 - 1]), [3], { device: "cpu" });
    expect(a.dtype).toBe("i32");
    expect(Array.from(await a.toTypedArray())).toEqual([1, -2, 2 ** 31 - 1]);
    const b = tensor(Uint8Array.from([0, 7, 255]), [3], { device: "cpu" });
    expect(Array.from(await b.toFloat32Array())).toEqual([0, 7, 255]);
  });

  test("copyFrom between tensors converts dtypes", async () => {
    const rng = new Rng(3);
    const x = rng.normals(4097);
    const a = tensor(x, [17, 241], { device: "cpu" });
    const b = zeros([17, 241], { dtype: "bf16", device: "cpu" });
    b.copyFrom(a);
    const back = await b.toFloat32Array();
    expect(Array.from(back)).toEqual(Array.from(x, roundBf16));
    const c = b.clone();
    expect(Array.from(await c.toFloat32Array())).toEqual(Array.from(back));
  });

  test("randn: same seed same values, moments right, std and mean applied", async () => {
    const n = 1 << 20;
    const a = await randn([n], { seed: 42, device: "cpu" }).toFloat32Array();
    const b = await randn([n], { seed: 42, device: "cpu" }).toFloat32Array();
    const c = await randn([n], { seed: 43, device: "cpu" }).toFloat32Array();
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
    expect(Buffer.from(a.buffer).equals(Buffer.from(c.buffer))).toBe(false);
    let s = 0, s2 = 0, s4 = 0;
    for (const x of a) { s += x; s2 += x * x; s4 += x ** 4; }
    const mean = s / n, varr = s2 / n - mean * mean;
    expect(Math.abs(mean)).toBeLessThan(5 / Math.sqrt(n));
    expect(Math.abs(varr - 1)).toBeLessThan(0.01);
    expect(Math.abs(s4 / n - 3)).toBeLessThan(0.05);  // kurtosis of a normal
    const d = await randn([1000], { seed: 42, std: 0.02, mean: 1, device: "cpu" }).toFloat32Array();
    for (let i = 0; i < 1000; i++) expect(d[i]).toBe(Math.fround(1 + Math.fround(Math.fround(0.02) * a[i])));
    // A prefix of a longer draw equals a shorter draw (counter-based).
    const e = await randn([7], { seed: 42, device: "cpu" }).toFloat32Array();
    expect(Array.from(e)).toEqual(Array.from(a.subarray(0, 7)));
  });

  test("dispose is idempotent, Symbol.dispose works, later use is E_DISPOSED", async () => {
    const t = zeros([5], { device: "cpu" });
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    await expect(t.toFloat32Array()).rejects.toMatchObject({ code: "E_DISPOSED" });
    expectCode(() => t.copyFrom(new Float32Array(5)), "E_DISPOSED");
    expectCode(() => t.devicePointer, "E_DISPOSED");
    const u = zeros([5], { device: "cpu" }) as Tensor & { [k: symbol]: () => void };
    const sym = (Symbol as unknown as { dispose: symbol }).dispose ?? Symbol.for("nodejs.dispose");
    u[sym]();
    expect(u.disposed).toBe(true);
  });

  test("bad input to tensor functions", () => {
    expectCode(() => tensor(new Float32Array(5), [2, 3], { device: "cpu" }), "E_SHAPE");
    expectCode(() => zeros([2, -1], { device: "cpu" }), "E_SHAPE");
    expectCode(() => zeros([2.5], { device: "cpu" }), "E_SHAPE");
    expectCode(() => zeros([2], { dtype: "f64" as "f32", device: "cpu" }), "E_DTYPE");
    expectCode(() => randn([2], { dtype: "u8", device: "cpu" }), "E_DTYPE");
    expectCode(() => randn([2], { seed: -1, device: "cpu" }), "E_ARG");
    const t = zeros([4], { device: "cpu" });
    expectCode(() => t.copyFrom(new Float32Array(5)), "E_SHAPE");
    expectCode(() => t.copyFrom(new Uint16Array(4)), "E_DTYPE");
    expectCode(() => t.copyFrom("abcd" as unknown as number[]), "E_ARG");
    expectCode(() => fromDevicePointer(0n, [4], { device: "cpu" }), "E_ARG");
    expectCode(() => fromDevicePointer(12345n, [4], { device: "cpu" }), "E_DEVICE");
  });
});

describe("typed arrays from another realm", () => {
  test("a Float32Array made in a vm context fills a tensor like a local one", async () => {
    const vm = require("vm");
    const foreign = vm.runInNewContext("new Float32Array([1.5, -2, 3])") as Float32Array;
    expect(foreign instanceof Float32Array).toBe(false);
    const t = tensor(foreign, [3], { dtype: "bf16", device: "cpu" });
    expect(Array.from(await t.toFloat32Array())).toEqual([1.5, -2, 3]);
    const u = tensor(vm.runInNewContext("new Int32Array([4, 5])") as Int32Array, [2], { device: "cpu" });
    expect(u.dtype).toBe("i32");
  });
});
