import { Apollo, ApolloMini, ApolloScaleType, apolloProjection, DType, Parameter, tensor, Tensor, zeros } from "../lib";
import { relErr, roundTo, Rng } from "./reference";
import { ApolloRef, apolloRefStep, newApolloRef } from "./apollo_reference";
import { expectCode } from "./helpers";

async function raw(t: Tensor): Promise<number[]> { return Array.from(await t.toTypedArray()); }

describe("apolloProjection", () => {
  test("shape by side, N(0, 1/r) entries, deterministic, distinct per seed and refresh", async () => {
    const a = apolloProjection(300, 200, 16, { seed: 3, refreshIndex: 0 });
    expect(a.shape).toEqual([16, 200]);  // rows >= cols: r x cols
    const b = apolloProjection(200, 300, 16, { seed: 3, refreshIndex: 0 });
    expect(b.shape).toEqual([200, 16]);  // rows < cols: rows x r
    const x = await a.toFloat32Array();
    let mean = 0, sq = 0;
    for (const v of x) { mean += v; sq += v * v; }
    mean /= x.length; sq /= x.length;
    expect(Math.abs(mean)).toBeLessThan(4 / Math.sqrt(16 * x.length));
    expect(Math.abs(sq * 16 - 1)).toBeLessThan(0.05);
    expect(await raw(apolloProjection(300, 200, 16, { seed: 3, refreshIndex: 0 }))).toEqual(Array.from(x));
    const other = [await raw(apolloProjection(300, 200, 16, { seed: 4, refreshIndex: 0 })),
                   await raw(apolloProjection(300, 200, 16, { seed: 3, refreshIndex: 1 }))];
    for (const o of other) expect(relErr(o, x)).toBeGreaterThan(1);
    // Element e of P is the same whatever P's shape (a counter per element): r=16 rows of 200 vs r=16 rows of 250.
    const c = await apolloProjection(300, 250, 16, { seed: 3, refreshIndex: 0 }).toFloat32Array();
    expect(Array.from(c.slice(0, 200))).toEqual(Array.from(x.slice(0, 200)));
  });

  test("bad arguments are E_ARG", () => {
    expectCode(() => apolloProjection(10, 5, 6, { seed: 1, refreshIndex: 0 }), "E_ARG");
    expectCode(() => apolloProjection(10, 5, 0, { seed: 1, refreshIndex: 0 }), "E_ARG");
    expectCode(() => apolloProjection(10, 5, 2, { seed: -1, refreshIndex: 0 }), "E_ARG");
    expectCode(() => apolloProjection(10, 5, 2, { seed: 1, refreshIndex: 1.5 }), "E_ARG");
  });
});

interface Case { scaleType: ApolloScaleType; limiter: boolean; scaleFront: boolean; dtype: DType }

const CASES: Case[] = [
  { scaleType: "channel", limiter: true, scaleFront: false, dtype: "f32" },
  { scaleType: "channel", limiter: false, scaleFront: false, dtype: "f32" },
  { scaleType: "channel", limiter: true, scaleFront: true, dtype: "f32" },
  { scaleType: "tensor", limiter: true, scaleFront: false, dtype: "f32" },
  { scaleType: "tensor", limiter: false, scaleFront: true, dtype: "f32" },
  { scaleType: "tensor", limiter: true, scaleFront: true, dtype: "f32" },
  { scaleType: "channel", limiter: true, scaleFront: false, dtype: "bf16" },
  { scaleType: "tensor", limiter: true, scaleFront: true, dtype: "bf16" },
  { scaleType: "channel", limiter: true, scaleFront: true, dtype: "f16" },
];

describe("Apollo on the CPU against a float64 reference given the same P", () => {
  const shapes: number[][] = [[37, 23], [23, 37], [5, 4, 9]];
  for (const c of CASES) {
    test(`${c.scaleType} scaling, limiter ${c.limiter ? "on" : "off"}, scaleFront ${c.scaleFront}, ${c.dtype}: 12 steps across refreshes (gap 5), plus a rank-less group`, async () => {
      const rng = new Rng(c.scaleType.length * 7 + (c.limiter ? 1 : 0) + (c.scaleFront ? 2 : 0) + c.dtype.length * 3);
      const lr = 0.02, b1 = 0.9, b2 = 0.99, eps = 1e-6, wd = 0.05, scale = 4, T = 5, r = 4, gamma = 1.01;
      const store = (x: number) => roundTo(c.dtype, x);
      const ps = shapes.map((s, i) => new Parameter(tensor(rng.normals(s.reduce((a, b) => a * b), 0.05), s, { device: "cpu", dtype: c.dtype }), { name: `w${i}` }));
      const bias = new Parameter(tensor(rng.normals(7), [7], { device: "cpu", dtype: c.dtype }), { name: "b" });
      const refs: ApolloRef[] = [];
      for (const p of ps) refs.push(newApolloRef(await p.data.toFloat32Array(), p.shape[0], p.numel / p.shape[0], r));
      const bRef = { w: Float64Array.from(await bias.data.toFloat32Array()), m: new Float64Array(7), v: new Float64Array(7) };
      const w0 = await Promise.all(ps.map((p) => p.data.toFloat32Array()));
      const opt = new Apollo([
        { params: ps, rank: r, updateProjGap: T, scale, scaleType: c.scaleType, scaleFront: c.scaleFront, normGrowthLimiter: c.limiter },
        { params: [bias] }], { lr, betas: [b1, b2], eps, weightDecay: wd });
      const h = { lr, b1, b2, eps, wd, scale, scaleFront: c.scaleFront, limiter: c.limiter, gamma, channel: c.scaleType === "channel" };
      for (let step = 0; step < 12; step++) {
        // Growing gradients now and then: the limiter must act.
        const amp = step % 4 === 3 ? 3 : 1;
        for (let k = 0; k < ps.length; k++) {
          ps[k].grad.copyFrom(rng.normals(ps[k].numel, amp));
          const g = await ps[k].grad.toFloat32Array();  // as stored (bf16-rounded)
          const rows = refs[k].rows, cols = refs[k].cols;
          const P = await apolloProjection(rows, cols, r, { seed: k + 1, refreshIndex: Math.floor(step / T) }).toFloat32Array();
          apolloRefStep(refs[k], g, P, step + 1, h, store);
        }
        bias.grad.copyFrom(rng.normals(7));
        const gb = await bias.grad.toFloat32Array();
        for (let i = 0; i < 7; i++) {  // plain Adam, GaLore/APOLLO convention
          const t = step + 1;
          bRef.m[i] = b1 * bRef.m[i] + (1 - b1) * gb[i];
          bRef.v[i] = b2 * bRef.v[i] + (1 - b2) * gb[i] * gb[i];
          const cc = lr * Math.sqrt(1 - b2 ** t) / (1 - b1 ** t);
          bRef.w[i] = store((bRef.w[i] - cc * bRef.m[i] / (Math.sqrt(bRef.v[i]) + eps)) * (1 - lr * wd));
        }
        opt.step();
      }
      const tol = c.dtype === "f32" ? 1e-5 : 1e-2;
      for (let k = 0; k < ps.length; k++) {
        const w = await ps[k].data.toFloat32Array();
        const dOut = Float64Array.from(w, (x, i) => x - w0[k][i]);
        const dRef = Float64Array.from(refs[k].w, (x, i) => x - w0[k][i]);
        expect(relErr(dOut, dRef)).toBeLessThan(tol);
        const st = opt.stateOf(ps[k])!;
        expect(st.side).toBe(refs[k].left ? "left" : "right");
        expect(st.seed).toBe(k + 1);
        if (c.dtype === "f32") {
          expect(relErr(await st.expAvg.toFloat32Array(), refs[k].m)).toBeLessThan(1e-5);
          expect(relErr(await st.expAvgSq.toFloat32Array(), refs[k].v)).toBeLessThan(1e-5);
        }
        const prev = (await st.prevNorm!.toFloat32Array())[0];
        if (c.limiter) {
          expect(Math.abs(prev - refs[k].prev!) / refs[k].prev!).toBeLessThan(1e-5);
          expect(refs[k].limited).toBeGreaterThan(0);
        } else {
          expect(prev).toBe(-1);
        }
      }
      expect(relErr(await bias.data.toFloat32Array(), bRef.w)).toBeLessThan(c.dtype === "f32" ? 1e-6 : 1e-2);
      expect(await opt.completedStepsPerGroup()).toEqual([12, 12]);
      // State: m, v like R and the limiter norm per tensor, counters and flag; bias: m, v, counters.
      let want = 7 * 8 + 8 + 8 + 4;
      for (const ref of refs) want += 8 * ref.m.length + 4;
      expect(opt.stateBytes()).toBe(want);
      opt.dispose();
    });
  }

  test("ApolloMini: rank 1, tensor scaling, scale 128 by default; 1-D parameters in a rank: null group", async () => {
    const rng = new Rng(91);
    const w = new Parameter(tensor(rng.normals(40 * 30, 0.02), [40, 30], { device: "cpu" }));
    const b = new Parameter(tensor(rng.normals(5), [5], { device: "cpu" }));
    const opt = new ApolloMini([{ params: [w] }, { params: [b], rank: null }], { lr: 1e-3, weightDecay: 0.1 });
    const g0 = opt.paramGroups[0];
    expect([g0.rank, g0.scaleType, g0.scale, g0.normGrowthLimiter]).toEqual([1, "tensor", 128, true]);
    const ref = newApolloRef(await w.data.toFloat32Array(), 40, 30, 1);
    const h = { lr: 1e-3, b1: 0.9, b2: 0.999, eps: 1e-6, wd: 0.1, scale: 128, scaleFront: false, limiter: true, gamma: 1.01, channel: false };
    for (let step = 0; step < 3; step++) {
      const g = rng.normals(1200);
      w.grad.copyFrom(g); b.grad.copyFrom(rng.normals(5));
      const P = await apolloProjection(40, 30, 1, { seed: 1, refreshIndex: 0 }).toFloat32Array();
      apolloRefStep(ref, g, P, step + 1, h);
      opt.step();
    }
    const w0 = ref.w;  // compare the update against the reference's
    expect(relErr(await w.data.toFloat32Array(), w0)).toBeLessThan(1e-6);
    expect(opt.stateBytes()).toBe(2 * 40 * 4 + 4 + 8 + 4 + 5 * 8 + 8);
    expect(opt.stateDict().optimizer).toBe("ApolloMini");
    // A 1-D parameter in a rank group is refused.
    expectCode(() => new ApolloMini([w, b]), "E_ARG");
  });

  test("given seeds are used; a non-finite gradient skips the step whole (W, m, v, limiter norm, counters)", async () => {
    const rng = new Rng(5);
    const p = new Parameter(tensor(rng.normals(48), [8, 6], { device: "cpu" }));
    const q = new Parameter(tensor(rng.normals(30), [5, 6], { device: "cpu" }));
    const opt = new Apollo([{ params: [p, q], rank: 2, updateProjGap: 2, paramSeeds: [77, 78] }], { lr: 1e-2 });
    const ref = newApolloRef(await p.data.toFloat32Array(), 8, 6, 2);
    const h = { lr: 1e-2, b1: 0.9, b2: 0.999, eps: 1e-6, wd: 0, scale: 1, scaleFront: false, limiter: true, gamma: 1.01, channel: true };
    const snap = async () => Promise.all([p, q].flatMap((x) => [raw(x.data), raw(opt.stateOf(x)!.expAvg), raw(opt.stateOf(x)!.expAvgSq), raw(opt.stateOf(x)!.prevNorm!)]));
    let before: number[][] = [];
    for (let call = 0; call < 5; call++) {
      const g = rng.normals(48);
      if (call === 2) g[17] = NaN;
      p.grad.copyFrom(g); q.grad.copyFrom(rng.normals(30));
      if (call === 2) before = await snap();
      opt.step();
      if (call === 2) {
        expect(await snap()).toEqual(before);
        continue;
      }
      const done = call < 2 ? call : call - 1;  // completed steps before this one
      const P = await apolloProjection(8, 6, 2, { seed: 77, refreshIndex: Math.floor(done / 2) }).toFloat32Array();
      apolloRefStep(ref, g, P, done + 1, h);
    }
    expect(await opt.skippedSteps()).toBe(1);
    expect(await opt.completedStepsPerGroup()).toEqual([4]);
    const w = await p.data.toFloat32Array();
    expect(relErr(w, ref.w)).toBeLessThan(1e-6);
    opt.dispose();
  });

  test("stateDict / loadStateDict round trip continues identically; the seeds travel with the state", async () => {
    const rng = new Rng(12);
    const mk = (w: Float32Array) => [new Parameter(tensor(w.slice(0, 63), [9, 7], { device: "cpu" })), new Parameter(tensor(w.slice(63, 68), [5], { device: "cpu" }))];
    const w = rng.normals(68);
    const a = mk(w), b = mk(w);
    const spec = (ps: Parameter[], seeds?: number[]) => [{ params: [ps[0]], rank: 3, updateProjGap: 3, paramSeeds: seeds }, { params: [ps[1]] }];
    const oa = new Apollo(spec(a, [1234]), { lr: 0.01 }), ob = new Apollo(spec(b), { lr: 0.01 });
    const grads = Array.from({ length: 8 }, () => [rng.normals(63), rng.normals(5)]);
    for (let s = 0; s < 4; s++) { a[0].grad.copyFrom(grads[s][0]); a[1].grad.copyFrom(grads[s][1]); oa.step(); }
    for (let k = 0; k < 2; k++) b[k].data.copyFrom(a[k].data);
    ob.loadStateDict(oa.stateDict());
    expect(ob.stateOf(b[0])!.seed).toBe(1234);
    for (let s = 4; s < 8; s++) for (const [ps, o] of [[a, oa], [b, ob]] as [Parameter[], Apollo][]) {
      ps[0].grad.copyFrom(grads[s][0]); ps[1].grad.copyFrom(grads[s][1]); o.step();
    }
    for (let k = 0; k < 2; k++) expect(await raw(b[k].data)).toEqual(await raw(a[k].data));
    // An ApolloMini state dict is refused by an Apollo.
    const oc = new ApolloMini([{ params: [b[0]] }, { params: [b[1]], rank: null }]);
    expectCode(() => oc.loadStateDict(oa.stateDict()), "E_CHECKPOINT");
  });
});

describe("Apollo refusals change nothing", () => {
  test("constructor: rank <= 0 or larger than the projected side, unknown scaleType, bad options", () => {
    const w = new Parameter(zeros([6, 4], { device: "cpu" }));
    const b = new Parameter(zeros([4], { device: "cpu" }));
    for (const rank of [0, -1, 5, 1.5, NaN]) expectCode(() => new Apollo([{ params: [w], rank }]), "E_ARG");
    for (const updateProjGap of [0, -3, 2.5]) expectCode(() => new Apollo([{ params: [w], rank: 2, updateProjGap }]), "E_ARG");
    expectCode(() => new Apollo([{ params: [w], rank: 2, scaleType: "row" as ApolloScaleType }]), "E_ARG");
    expectCode(() => new Apollo([{ params: [w, b], rank: 2 }]), "E_ARG");
    expectCode(() => new Apollo([{ params: [w], rank: 2, scale: -1 }]), "E_ARG");
    expectCode(() => new Apollo([{ params: [w], rank: 2, normGrowthRate: 0.9 }]), "E_ARG");
    expectCode(() => new Apollo([{ params: [w], rank: 2, paramSeeds: [1, 2] }]), "E_ARG");
    expectCode(() => new Apollo([{ params: [w], rank: 2, paramSeeds: [-1] }]), "E_ARG");
    expectCode(() => new ApolloMini([{ params: [w], rank: 0 }]), "E_ARG");
  });

  test("options broken between steps -> E_ARG, parameters and states bit-identical", async () => {
    const rng = new Rng(8);
    const w = new Parameter(tensor(rng.normals(24), [6, 4], { device: "cpu" }));
    const opt = new Apollo([{ params: [w], rank: 2, updateProjGap: 2 }], { lr: 0.01 });
    w.grad.copyFrom(rng.normals(24));
    opt.step();
    const st = opt.stateOf(w)!;
    const snap = async () => Promise.all([raw(w.data), raw(st.expAvg), raw(st.expAvgSq), raw(st.prevNorm!),
                                                   opt.completedStepsPerGroup(), opt.skippedStepsPerGroup()]);
    const before = await snap();
    const g = opt.paramGroups[0];
    for (const [k, v] of [["rank", 0], ["rank", 5], ["rank", 3], ["updateProjGap", 0], ["scaleType", "rows"], ["paramSeeds", [9]]] as [string, unknown][]) {
      const old = g[k];
      g[k] = v;
      expectCode(() => opt.step(), "E_ARG");
      g[k] = old;
    }
    w.grad = zeros([4, 6], { device: "cpu" });
    expectCode(() => opt.step(), "E_SHAPE");
    expect(await snap()).toEqual(before);
  });
});
