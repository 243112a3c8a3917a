// Adafactor on CUDA against the CPU backend on the same inputs (the CPU is checked against float64
// in test/adafactor.test.ts). Skipped where no CUDA device exists.
import { Adafactor, AdafactorOptions, devices, DType, GaLoreAdafactor, Parameter, randn } from "../../lib";
import { relErr, Rng, roundTo } from "../reference";

// GaLoreAdafactor's rank groups are refused on CUDA until GaLore's CUDA refresh is validated; the
// check below does not depend on that refresh (its projectors come from the CPU).

const hasCuda = devices().length > 1;
const suite = hasCuda ? describe : describe.skip;

const SHAPES = [[1], [7], [4097], [65537], [33, 17], [3, 5, 11], [300, 5000], [5000, 3], [4, 33, 65]];
const VARIANTS: [string, AdafactorOptions][] = [
  ["lr 1e-2", { lr: 1e-2 }],
  ["clipping active, weight decay, beta1", { lr: 1e-2, clipThreshold: 0.05, weightDecay: 0.1, beta1: 0.9 }],
  ["relativeStep, warmupInit, scaleParameter", { relativeStep: true, warmupInit: true, scaleParameter: true }],
];

suite("Adafactor: CUDA against the CPU", () => {
  for (const [label, opts] of VARIANTS) {
    for (const dtype of ["f32", "bf16", "f16"] as DType[]) {
      test(`${label}, ${dtype}`, async () => {
        const make = (dev: string) => SHAPES.map((s, i) => new Parameter(randn(s, { dtype, device: dev, seed: 60 + i, std: 0.5 })));
        const pc = make("cpu"), pg = make("cuda");
        const A = new Adafactor(pc, opts), B = new Adafactor(pg, opts);
        const rng = new Rng(label.length + dtype.length);
        for (let s = 0; s < 4; s++) {
          pc.forEach((p, i) => {
            const g = Float32Array.from(rng.normals(p.numel, 0.2 + 0.2 * s), (x) => roundTo(dtype, x));
            if (s === 2 && i === 1) g[3] = NaN;  // step 2 is skipped on both
            p.grad.copyFrom(g);
            pg[i].grad.copyFrom(g);
          });
          A.step();
          B.step();
        }
        expect(await B.skippedSteps()).toBe(1);
        expect(await B.completedStepsPerGroup()).toEqual(await A.completedStepsPerGroup());
        for (let i = 0; i < pc.length; i++) {
          expect(relErr(await pg[i].data.toFloat32Array(), await pc[i].data.toFloat32Array())).toBeLessThan(dtype === "f32" ? 1e-5 : 1e-2);
          const sa = A.stateOf(pc[i])!, sb = B.stateOf(pg[i])!;
          for (const k of ["row", "col", "full", "expAvg"] as const) {
            expect(!sa[k]).toBe(!sb[k]);
            if (sa[k]) expect(relErr(await sb[k]!.toFloat32Array(), await sa[k]!.toFloat32Array())).toBeLessThan(dtype === "f32" ? 1e-5 : 1e-2);
          }
        }
      });
    }
  }
});

// GaLoreAdafactor's CUDA path after the projectors exist: the first step (with its refresh) runs
// on the CPU, its state is loaded into the CUDA optimizer, and the next steps (no refresh) must
// agree. This checks the projection, Adafactor on R and the project-back on the device apart from
// GaLore's CUDA refresh (validated in galore.gpu.test.ts).
suite("GaLoreAdafactor: CUDA against the CPU (projectors from the CPU)", () => {
  for (const dtype of ["f32", "bf16"] as DType[]) {
    for (const projType of ["std", "reverse_std", "full"] as const) {
      test(`${projType}, ${dtype}`, async () => {
        const shapes = [[300, 200], [64, 1000], [9, 10, 60], [1001]];
        const make = (dev: string) => shapes.map((s, i) => new Parameter(randn(s, { dtype, device: dev, seed: 90 + i, std: 0.5 })));
        const pc = make("cpu"), pg = make("cuda");
        const opts = (ps: Parameter[]) => [
          { params: ps.filter((p) => p.shape.length >= 2), rank: 8, updateProjGap: 1000, projType, precision: "f32" as const, beta1: 0.9,
            scaleParameter: true, weightDecay: 0.01 },
          { params: ps.filter((p) => p.shape.length < 2) }];
        const A = new GaLoreAdafactor(opts(pc), { lr: 1e-2 }), B = new GaLoreAdafactor(opts(pg), { lr: 1e-2 });
        const rng = new Rng(projType.length + dtype.length);
        const grads = () => pc.map((p) => Float32Array.from(rng.normals(p.numel, 0.3), (x) => roundTo(dtype, x)));
        let g = grads();
        pc.forEach((p, i) => p.grad.copyFrom(g[i]));
        A.step();
        B.loadStateDict(A.stateDict());
        pg.forEach((p, i) => p.data.copyFrom(pc[i].data));
        for (let s = 0; s < 3; s++) {
          g = grads();
          pc.forEach((p, i) => { p.grad.copyFrom(g[i]); pg[i].grad.copyFrom(g[i]); });
          A.step();
          B.step();
        }
        for (let i = 0; i < pc.length; i++) {
          expect(relErr(await pg[i].data.toFloat32Array(), await pc[i].data.toFloat32Array())).toBeLessThan(dtype === "f32" ? 1e-5 : 1e-2);
          const sa = A.rankStateOf(pc[i]), sb = B.rankStateOf(pg[i]);
          if (sa) {
            expect(relErr(await sb!.row.toFloat32Array(), await sa.row.toFloat32Array())).toBeLessThan(1e-4);
            expect(relErr(await sb!.col.toFloat32Array(), await sa.col.toFloat32Array())).toBeLessThan(1e-4);
          }
        }
      });
    }
  }
});
