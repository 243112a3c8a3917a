// GaLore on CUDA against the CPU backend on the same inputs, with cuBLAS and with the built-in
// kernels forced. Skipped where no CUDA device exists.
import { devices, GaLoreAdamW, gemm, Parameter, ProjType, setBuiltinLinalg, linalgPaths, tensor, Tensor, DType } from "../../lib";
import { relErr, Rng } from "../reference";

const hasCuda = devices().length > 1;
const suite = hasCuda ? describe : describe.skip;

async function f32(t: Tensor): Promise<Float32Array> { return t.toFloat32Array(); }

for (const builtin of [false, true]) {
  suite(`GaLore CUDA vs CPU (${builtin ? "built-in kernels forced" : "cuBLAS when present"})`, () => {
    beforeAll(() => setBuiltinLinalg(builtin));
    afterAll(() => setBuiltinLinalg(false));

    test("the path in use is reported", () => {
      const l = linalgPaths();
      expect(l.forceBuiltin).toBe(builtin);
      if (builtin) expect(l.blas).toMatch(/built-in/);
    });

    test.each([[1, 1, 1], [67, 130, 33], [300, 129, 517], [1024, 128, 4096]])("gemm %ix%ix%i, transposes, tf32 and f32", async (M, N, K) => {
      const rng = new Rng(M + N + K);
      for (const precision of ["f32", "tf32"] as const) for (const transA of [false, true]) for (const transB of [false, true]) {
        const a = rng.normals(M * K), b = rng.normals(K * N), c = rng.normals(M * N);
        const mk = (dev: string) => [tensor(a, transA ? [K, M] : [M, K], { device: dev }), tensor(b, transB ? [N, K] : [K, N], { device: dev }),
                                     tensor(c, [M, N], { device: dev })];
        const [ac, bc, cc] = mk("cpu"), [ag, bg, cg] = mk("cuda");
        gemm(ac, bc, cc, { transA, transB, alpha: 0.5, beta: -1, precision });
        gemm(ag, bg, cg, { transA, transB, alpha: 0.5, beta: -1, precision });
        const tol = precision === "f32" ? 1e-5 : 3e-3;
        expect(relErr(await f32(cg), await f32(cc))).toBeLessThan(tol);
        for (const t of [ac, bc, cc, ag, bg, cg]) t.dispose();
      }
    });

    for (const projType of ["std", "reverse_std", "left", "right", "full"] as ProjType[]) {
      for (const precision of ["f32", "tf32"] as const) {
        for (const dtype of ["f32", "bf16"] as DType[]) {
          test(`${projType}, ${precision}, ${dtype} params: 12 steps, refresh every 4, a NaN at a refresh`, async () => {
            const rng = new Rng(projType.length * 13 + (precision === "f32" ? 1 : 2) + dtype.length);
            const shapes = [[96, 64], [70, 130], [8, 5, 13]];
            const mk = (dev: string) => shapes.map((s, i) => new Parameter(tensor(w0[i], s, { device: dev, dtype }), { name: `w${i}` }));
            const w0 = shapes.map((s) => rng.normals(s.reduce((a, b) => a * b), 0.02));
            const pc = mk("cpu"), pg = mk("cuda");
            const bc = new Parameter(tensor(rng.normals(33), [33], { device: "cpu", dtype }));
            const bg = new Parameter(tensor(await bc.data.toFloat32Array(), [33], { device: "cuda", dtype }));
            const opts = { lr: 0.01, weightDecay: 0.01, precision };
            const spec = (ps: Parameter[], b: Parameter) => [{ params: ps, rank: 5, updateProjGap: 4, projType }, { params: [b] }];
            const oc = new GaLoreAdamW(spec(pc, bc), opts), og = new GaLoreAdamW(spec(pg, bg), opts);
            for (let s = 0; s < 12; s++) {
              for (let k = 0; k < shapes.length; k++) {
                const g = rng.normals(pc[k].numel);
                if (s === 8 && k === 1) g[7] = NaN;  // the group skips this refresh step whole
                pc[k].grad.copyFrom(g); pg[k].grad.copyFrom(g);
              }
              const gb = rng.normals(33);
              bc.grad.copyFrom(gb); bg.grad.copyFrom(gb);
              oc.step(); og.step();
            }
            const tol = dtype === "bf16" ? 1e-2 : precision === "f32" || builtin ? 1e-5 : 3e-3;
            for (let k = 0; k < shapes.length; k++) {
              const base = Float32Array.from(await f32(tensor(w0[k], [w0[k].length], { device: "cpu", dtype })));
              const uc = (await f32(pc[k].data)).map((x, i) => x - base[i]);
              const ug = (await f32(pg[k].data)).map((x, i) => x - base[i]);
              expect(relErr(ug, uc)).toBeLessThan(tol);
              const sc = oc.stateOf(pc[k])!, sg = og.stateOf(pg[k])!;
              expect(relErr(await f32(sg.proj!), await f32(sc.proj!))).toBeLessThan(1e-5);
            }
            expect(await og.skippedStepsPerGroup()).toEqual(await oc.skippedStepsPerGroup());
            expect(await og.completedStepsPerGroup()).toEqual([11, 12]);
            expect(og.stateBytes()).toBe(oc.stateBytes());
            oc.dispose(); og.dispose();
          });
        }
      }
    }
  });
}
