// Checkpoints on CUDA: the resume round trip of every optimizer (test/optimizers.ts) on the GPU,
// checkpoints moving between devices, save() ordered on the stream, refusals leaving device state
// bit-identical, and the reference Python reader (bench/check_safetensors.py) where installed.
// GaLore's CUDA path is gated while it is being validated (lib/optim/galore.ts); round trips still apply.
import { spawnSync } from "child_process";
import { createHash } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { AdamW, devices, loadTensors, Parameter, randn, saveTensors, tensor, Tensor, zeros } from "../../lib";
import { fuzzLoad, makeParams, rawBytes, resumeRoundTrip, setGrads, snapshot, snapshotDiff } from "../checkpoint_helpers";
import { OPTIMIZERS } from "../optimizers";

const hasCuda = devices().length > 1;

(hasCuda ? describe : describe.skip)("checkpoints on CUDA", () => {
  let dir: string;
  beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), "slimopt-ckpt-gpu-")); });
  afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

  describe("5 steps, save, fresh parameters and optimizer, load, 5 steps = 10 steps, bit for bit", () => {
    for (const c of OPTIMIZERS) {
      for (const dtype of c.dtypes) {
        test(`${c.name}, ${dtype} parameters`, async () => {
          await resumeRoundTrip(c, dtype, "cuda", dir);
        });
      }
    }
  });

  test("a checkpoint moves CUDA → CPU → CUDA with every state tensor bit-identical", async () => {
    for (const c of OPTIMIZERS) {
      const dtype = c.dtypes[0];
      const pg = makeParams(dtype, "cuda");
      const og = c.make(pg);
      for (let s = 1; s <= 3; s++) {
        setGrads(pg, s);
        og.step();
      }
      const f1 = path.join(dir, "from-cuda.safetensors");
      await og.save(f1);
      const pc = pg.map((p) => new Parameter(p.data.clone("cpu"), { name: p.name }));
      const oc = c.make(pc);
      await oc.load(f1);
      expect(snapshotDiff(await snapshot(oc, pc), await snapshot(og, pg))).toBe("");
      const f2 = path.join(dir, "from-cpu.safetensors");
      await oc.save(f2);
      expect(fs.readFileSync(f2).equals(fs.readFileSync(f1))).toBe(true);  // same state, same bytes
      const pg2 = pg.map((p) => new Parameter(p.data.clone(), { name: p.name }));
      const og2 = c.make(pg2);
      await og2.load(f2);
      expect(snapshotDiff(await snapshot(og2, pg2), await snapshot(og, pg))).toBe("");
      for (const o of [og, oc, og2]) o.dispose();
      for (const p of [...pg, ...pc, ...pg2]) p.dispose();
    }
  });

  test("save() captures the state at the call: steps enqueued right after stay out of the file", async () => {
    // Large enough that the device-to-host copies are still running when the steps are enqueued.
    const params = [new Parameter(randn([4096, 4096], { device: "cuda", seed: 1 })), new Parameter(randn([4097], { device: "cuda", seed: 2 }))];
    const opt = new AdamW(params, { lr: 1e-2 });
    setGrads(params, 1);
    opt.step();
    const before = await snapshot(opt, params);
    const file = path.join(dir, "at-call.safetensors");
    const saving = opt.save(file);
    for (let s = 2; s <= 6; s++) {
      setGrads(params, s);
      opt.step();
    }
    await saving;
    const { tensors } = await loadTensors(file, { device: "cpu" });
    for (const [k, st] of Object.entries(before.state)) expect((await rawBytes(tensors[k])).equals(st.bytes)).toBe(true);
    expect(snapshotDiff(await snapshot(opt, params), before)).not.toBe("");
    opt.dispose();
  });

  test("loadTensors onto CUDA, every dtype", async () => {
    const rec: Record<string, Tensor> = {
      a: randn([33, 17], { device: "cuda", seed: 3 }),
      b: randn([4097], { device: "cuda", dtype: "bf16", seed: 4 }),
      c: randn([5, 1], { device: "cuda", dtype: "f16", seed: 5 }),
      d: tensor(Uint8Array.from([1, 2, 3]), [3], { device: "cuda" }),
      e: tensor(Int32Array.from([-1, 7]), [2], { device: "cuda" }),
      f: zeros([0], { device: "cuda" }),
    };
    const file = path.join(dir, "cuda-tensors.safetensors");
    await saveTensors(file, rec);
    const { tensors } = await loadTensors(file, { device: "cuda" });
    for (const [k, t] of Object.entries(rec)) {
      expect(tensors[k].device.kind).toBe("cuda");
      expect((await rawBytes(tensors[k])).equals(await rawBytes(t))).toBe(true);
    }
  });

  describe("refused loads leave CUDA state bit-identical (fuzzed)", () => {
    for (const [ci, c] of OPTIMIZERS.entries()) {
      test(`${c.name}: 150 mutated files`, async () => {
        await fuzzLoad(c, c.dtypes[0], "cuda", dir, 150, 5000 + ci);
      });
    }
  });

  // The reference implementation reads what we write (python3 with `safetensors` on the GPU machine).
  const py = spawnSync("python3", ["-c", "import safetensors"], { encoding: "utf8" });
  (py.status === 0 ? test : test.skip)("Python safetensors opens slimopt's files: same names, dtypes, shapes, bytes", async () => {
    const files: Record<string, Record<string, Tensor>> = {};
    for (const c of OPTIMIZERS) {
      for (const dtype of c.dtypes) {
        const params = makeParams(dtype, "cuda");
        const opt = c.make(params);
        for (let s = 1; s <= 2; s++) {
          setGrads(params, s);
          opt.step();
        }
        const f = path.join(dir, `py-${c.name.replace(/\W+/g, "_")}-${dtype}.safetensors`);
        await opt.save(f);
        files[f] = opt.stateDict().tensors;
        const m = path.join(dir, `py-model-${c.name.replace(/\W+/g, "_")}-${dtype}.safetensors`);
        const rec = Object.fromEntries(params.map((p) => [p.name, p.data]));
        await saveTensors(m, rec, { kind: "model" });
        files[m] = rec;
      }
    }
    const script = path.resolve(__dirname, "..", "..", "bench", "check_safetensors.py");
    const r = spawnSync("python3", [script, "--json", ...Object.keys(files)], { encoding: "utf8", maxBuffer: 1 << 28 });
    if (r.status !== 0) throw new Error(`check_safetensors.py exited ${r.status}: ${r.stderr}\n${r.stdout}`);
    const out = JSON.parse(r.stdout);
    const torchName: Record<string, string> = { f32: "float32", bf16: "bfloat16", f16: "float16", u8: "uint8", i32: "int32" };
    for (const [f, rec] of Object.entries(files)) {
      const got = out[f];
      expect(got.errors).toEqual([]);
      expect(Object.keys(got.tensors).sort()).toEqual(Object.keys(rec).sort());
      for (const [k, t] of Object.entries(rec)) {
        const g = got.tensors[k];
        if (got.framework === "pt") expect(g.dtype).toBe(torchName[t.dtype]);
        expect(g.shape).toEqual([...t.shape]);
        expect(g.sha256).toBe(createHash("sha256").update(await rawBytes(t)).digest("hex"));
      }
    }
  });
});
