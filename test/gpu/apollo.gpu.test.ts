// APOLLO on CUDA against the CPU backend on the same inputs, with cuBLAS and with the built-in
// kernels forced; the projection bit for bit. Skipped where no CUDA device exists.
import { Apollo, ApolloMini, ApolloScaleType, apolloProjection, devices, DType, Parameter, setBuiltinLinalg, tensor, Tensor } from "../../lib";
import { bitsEqual, relErr, Rng } from "../reference";

const hasCuda = devices().length > 1;
const suite = hasCuda ? describe : describe.skip;

async function f32(t: Tensor): Promise<Float32Array> { return t.toFloat32Array(); }

suite("apolloProjection: CUDA equals the CPU bit for bit", () => {
  test.each([[37, 23, 4, 1, 0], [23, 37, 4, 1, 0], [4096, 1024, 256, 7, 3], [1024, 4096, 256, 7, 3], [11008, 4096, 1, 28, 5], [5, 5, 5, 2 ** 40, 4000000000]])(
    "%ix%i rank %i seed %i refresh %i", async (rows, cols, rank, seed, refreshIndex) => {
      const c = apolloProjection(rows, cols, rank, { seed, refreshIndex, device: "cpu" });
      const g = apolloProjection(rows, cols, rank, { seed, refreshIndex, device: "cuda" });
      expect(g.shape).toEqual(c.shape);
      expect(bitsEqual(await f32(g), await f32(c))).toBe(true);
      c.dispose(); g.dispose();
    });
});

for (const builtin of [false, true]) {
  suite(`Apollo CUDA vs CPU (${builtin ? "built-in kernels forced" : "cuBLAS when present"})`, () => {
    beforeAll(() => setBuiltinLinalg(builtin));
    afterAll(() => setBuiltinLinalg(false));

    for (const scaleType of ["channel", "tensor"] as ApolloScaleType[]) {
      for (const limiter of [true, false]) {
        for (const precision of ["f32", "tf32"] as const) {
          for (const dtype of ["f32", "bf16"] as DType[]) {
            const scaleFront = !limiter;  // both placements of sqrt(scale) are covered
            test(`${scaleType}, limiter ${limiter}, ${precision}, ${dtype}: 12 steps, gap 5, a NaN at step 8`, async () => {
              const rng = new Rng(scaleType.length * 13 + (limiter ? 1 : 2) + (precision === "f32" ? 3 : 5) + dtype.length);
              const shapes = [[96, 64], [70, 130], [8, 5, 13], [300, 129]];
              const w0 = shapes.map((s) => rng.normals(s.reduce((a, b) => a * b), 0.02));
              const mk = (dev: string) => shapes.map((s, i) => new Parameter(tensor(w0[i], s, { device: dev, dtype }), { name: `w${i}` }));
              const pc = mk("cpu"), pg = mk("cuda");
              const bc = new Parameter(tensor(rng.normals(33), [33], { device: "cpu", dtype }));
              const bg = new Parameter(tensor(await bc.data.toFloat32Array(), [33], { device: "cuda", dtype }));
              const opts = { lr: 0.01, weightDecay: 0.01, precision };
              const spec = (ps: Parameter[], b: Parameter) => [
                { params: ps, rank: 8, updateProjGap: 5, scaleType, normGrowthLimiter: limiter, scaleFront, scale: 2 }, { params: [b] }];
              const oc = new Apollo(spec(pc, bc), opts), og = new Apollo(spec(pg, bg), opts);
              for (let s = 0; s < 12; s++) {
                for (let k = 0; k < shapes.length; k++) {
                  const g = rng.normals(pc[k].numel, s % 4 === 3 ? 3 : 1);
                  if (s === 8 && k === 1) g[7] = NaN;  // the group skips this step whole
                  pc[k].grad.copyFrom(g); pg[k].grad.copyFrom(g);
                }
                const gb = rng.normals(33);
                bc.grad.copyFrom(gb); bg.grad.copyFrom(gb);
                oc.step(); og.step();
              }
              // The built-in path runs TF32 on tensor cores like cuBLAS (cuda/gemm_tc.cu).
              const tol = dtype === "bf16" ? 1e-2 : precision === "f32" ? 1e-5 : 3e-3;
              for (let k = 0; k < shapes.length; k++) {
                const base = await f32(tensor(w0[k], [w0[k].length], { device: "cpu", dtype }));
                const uc = (await f32(pc[k].data)).map((x, i) => x - base[i]);
                const ug = (await f32(pg[k].data)).map((x, i) => x - base[i]);
                expect(relErr(ug, uc)).toBeLessThan(tol);
                const sc = oc.stateOf(pc[k])!, sg = og.stateOf(pg[k])!;
                expect(relErr(await f32(sg.expAvg), await f32(sc.expAvg))).toBeLessThan(tol);
                expect(relErr(await f32(sg.prevNorm!), await f32(sc.prevNorm!))).toBeLessThan(tol);
              }
              expect(await og.skippedStepsPerGroup()).toEqual([1, 0]);
              expect(await oc.skippedStepsPerGroup()).toEqual([1, 0]);
              expect(await og.completedStepsPerGroup()).toEqual([11, 12]);
              expect(og.stateBytes()).toBe(oc.stateBytes());
              oc.dispose(); og.dispose();
            });
          }
        }
      }
    }

    // Rank 1 takes the fused path on CUDA: the scan's one read of G also projects (no GEMM).
    for (const dtype of ["f32", "bf16", "f16"] as DType[]) {
      test(`rank 1 (fused scan + projection), channel scaling, ${dtype}: 12 steps, gap 5, a NaN at step 8`, async () => {
        const rng = new Rng(dtype.length * 31 + (builtin ? 1 : 0));
        const shapes = [[96, 64], [70, 130], [8, 5, 13], [33, 700]];
        const w0 = shapes.map((s) => rng.normals(s.reduce((a, b) => a * b), 0.02));
        const mk = (dev: string) => shapes.map((s, i) => new Parameter(tensor(w0[i], s, { device: dev, dtype })));
        const pc = mk("cpu"), pg = mk("cuda");
        const spec = (ps: Parameter[]) => [{ params: ps, rank: 1, updateProjGap: 5, scaleType: "channel" as const, scale: 4 }];
        const oc = new Apollo(spec(pc), { lr: 0.01, weightDecay: 0.01 }), og = new Apollo(spec(pg), { lr: 0.01, weightDecay: 0.01 });
        for (let s = 0; s < 12; s++) {
          for (let k = 0; k < shapes.length; k++) {
            const g = rng.normals(pc[k].numel, s % 4 === 3 ? 3 : 1);
            if (s === 8 && k === 3) g[5] = Infinity;
            pc[k].grad.copyFrom(g); pg[k].grad.copyFrom(g);
          }
          oc.step(); og.step();
        }
        // Rank 1 projects with f32 dot products summed in another order than the CPU's (a fused
        // reduction, no GEMM); Adam's m/sqrt(v) then magnifies rounding in small R entries over
        // 12 steps: 2e-5 was measured on the H200, a layout or indexing bug gives ~1.
        const tol = dtype === "f32" ? 5e-5 : 1e-2;
        for (let k = 0; k < shapes.length; k++) {
          const base = await f32(tensor(w0[k], [w0[k].length], { device: "cpu", dtype }));
          const uc = (await f32(pc[k].data)).map((x, i) => x - base[i]);
          const ug = (await f32(pg[k].data)).map((x, i) => x - base[i]);
          expect(relErr(ug, uc)).toBeLessThan(tol);
          expect(relErr(await f32(og.stateOf(pg[k])!.prevNorm!), await f32(oc.stateOf(pc[k])!.prevNorm!))).toBeLessThan(tol);
        }
        expect(await og.skippedStepsPerGroup()).toEqual([1]);
        expect(await og.completedStepsPerGroup()).toEqual([11]);
        oc.dispose(); og.dispose();
      });
    }

    test("ApolloMini on larger matrices (both sides), f32 strict and tf32", async () => {
      const rng = new Rng(4);
      for (const precision of ["f32", "tf32"] as const) {
        const shapes = [[1024, 512], [512, 1536]];
        const w0 = shapes.map((s) => rng.normals(s[0] * s[1], 0.02));
        const mk = (dev: string) => shapes.map((s, i) => new Parameter(tensor(w0[i], s, { device: dev })));
        const pc = mk("cpu"), pg = mk("cuda");
        const oc = new ApolloMini(pc, { lr: 1e-3, precision }), og = new ApolloMini(pg, { lr: 1e-3, precision });
        for (let s = 0; s < 4; s++) {
          for (let k = 0; k < 2; k++) { const g = rng.normals(pc[k].numel); pc[k].grad.copyFrom(g); pg[k].grad.copyFrom(g); }
          oc.step(); og.step();
        }
        for (let k = 0; k < 2; k++) {
          const uc = (await f32(pc[k].data)).map((x, i) => x - w0[k][i]);
          const ug = (await f32(pg[k].data)).map((x, i) => x - w0[k][i]);
          expect(relErr(ug, uc)).toBeLessThan(precision === "f32" ? 1e-5 : 3e-3);
        }
        oc.dispose(); og.dispose();
      }
    });
  });
}
