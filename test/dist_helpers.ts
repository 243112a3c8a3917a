// Shared by test/dist.test.ts (CPU) and test/gpu/dist.gpu.test.ts (CUDA): a world of one rank
// through DistributedOptimizer must give the wrapped optimizer's bits, and the collectives of one
// rank must be what they mean.
import { DistributedOptimizer, DType, GaLoreAdamW, GrassAdamW, GroupOptions, Optimizer, ParamGroupSpec, Parameter, ProcessGroup, randn, tensor } from "../lib";
import { makeParams, rawBytes, setGrads } from "./checkpoint_helpers";
import { expectCode } from "./helpers";
import { OPTIMIZERS } from "./optimizers";

type AnyOptimizer = Optimizer<any>;  // eslint-disable-line @typescript-eslint/no-explicit-any

/** The bytes a step hands the collectives in a world of one: each gradient whole, or, where
 *  `compress` applies and the next step keeps the projection, GaLore's R (f32) or Grass's selected
 *  lines (the parameter's dtype). Read from the plain optimizer before its step. */
function expectedBytes(plain: AnyOptimizer, params: Parameter[], compress: boolean): { bytes: number; compact: number } {
  let n = 0, compact = 0;
  for (const p of params) {
    const o = plain as unknown as { needsFullGrad?(p: Parameter): boolean; projectedShape?(p: Parameter): number[]; compactShape?(p: Parameter): number[] };
    if (!compress || !o.needsFullGrad || o.needsFullGrad(p)) { n += p.grad.nbytes; continue; }
    compact++;
    if (plain instanceof GaLoreAdamW) n += o.projectedShape!(p).reduce((a, b) => a * b, 1) * 4;
    else if (plain instanceof GrassAdamW) n += o.compactShape!(p).reduce((a, b) => a * b, 1) * p.grad.nbytes / p.numel;
    else n += p.grad.nbytes;
  }
  return { bytes: n, compact };
}

/** Counts the compact gradients the wrapper hands its optimizer (the owner's side of a compressed
 *  step: without it the owner would step on its own gradient, not the average). */
function countHandedGradients(o: AnyOptimizer | null): { n: number } {
  const count = { n: 0 };
  const inner = o as unknown as Record<string, (p: Parameter, t: unknown) => void> | null;
  for (const name of ["setProjectedGrad", "setCompactGrad"]) {
    if (!inner || typeof inner[name] !== "function") continue;
    const f = inner[name].bind(inner);
    inner[name] = (p, t) => { count.n++; f(p, t); };
  }
  return count;
}

/** Five steps (one with a NaN in a gradient) of every registered optimizer, plain and wrapped: the
 *  wrapped one gives the plain one's bits, compressed or not (a world of one projects its own
 *  gradient with the same GEMM as the step: the same R). The bytes of each step are checked too. */
export async function worldOfOneMatchesPlain(pg: ProcessGroup, dev: string): Promise<void> {
  for (const c of OPTIMIZERS) {
    const compressible = /GaLoreAdamW|GrassAdamW/.test(c.name);
    for (const dtype of c.dtypes as DType[]) {
      for (const shardStates of [true, false]) {
        for (const compress of compressible ? [true, false] : [true]) {
          const a = makeParams(dtype, dev, 300), b = makeParams(dtype, dev, 300);
          const plain = c.make(a);
          const wrapped = new DistributedOptimizer(pg, b,
            (groups: ParamGroupSpec<GroupOptions>[]) => c.make(groups.flatMap((g) => g.params)) as AnyOptimizer,
            { shardStates, bucketBytes: 4096, compress });
          let compactSteps = 0, compactGrads = 0;
          const handed = countHandedGradients(wrapped.inner);
          for (let s = 1; s <= 5; s++) {
            setGrads(a, s);
            setGrads(b, s);
            const want = expectedBytes(plain, a, compress);
            const full = a.reduce((n, p) => n + p.grad.nbytes, 0);
            if (want.bytes < full) compactSteps++;
            compactGrads += want.compact;
            plain.step();
            wrapped.step();
            expect(wrapped.bytesCommunicatedLastStep()).toBe(want.bytes);
          }
          expect(handed.n).toBe(compactGrads);
          // Steps 2, 3 and 5 keep the projection (gap 3) of the rank-3 cases: compressed.
          if (compressible && compress && /gap 3/.test(c.name)) expect(compactSteps).toBe(3);
          if (!compress) expect(compactSteps).toBe(0);
          for (let i = 0; i < a.length; i++) {
            const [x, y] = [await rawBytes(a[i].data), await rawBytes(b[i].data)];
            if (!x.equals(y)) throw new Error(`${c.name} ${dtype} shard=${shardStates} compress=${compress}: parameter ${i} differs`);
          }
          // State tensors equal; the native workspace may differ: a compressed Grass step caches
          // one more device list of its tensors (compact gradients instead of full ones).
          const workspace = (o: unknown) => (o as { workspaceBytes?: () => number } | null)?.workspaceBytes?.() ?? 0;
          expect(wrapped.stateBytes() - workspace(wrapped.inner)).toBe(plain.stateBytes() - workspace(plain));
          expect(await wrapped.skippedSteps()).toBe(await plain.skippedSteps());
          plain.dispose();
          wrapped.dispose();
          for (const p of [...a, ...b]) { p.data.dispose(); p.grad.dispose(); }
        }
      }
    }
  }
}

/** Collectives of a world of one, and the refusals (nothing changes when refused). */
export async function collectivesOfOne(pg: ProcessGroup, dev: string): Promise<void> {
  const x = randn([37], { device: dev, seed: 1 });
  const before = await x.toFloat32Array();
  for (const op of ["sum", "avg", "max", "min", "prod"] as const) pg.allReduce(x, { op });
  pg.broadcast(x, 0);
  pg.reduce(x, 0, { op: "avg" });
  expect(Array.from(await x.toFloat32Array())).toEqual(Array.from(before));
  const out = randn([37], { device: dev, seed: 2 });
  pg.allGather(out, x);
  expect(Array.from(await out.toFloat32Array())).toEqual(Array.from(before));
  const rs = randn([37], { device: dev, seed: 3 });
  pg.reduceScatter(rs, x, { op: "sum" });
  expect(Array.from(await rs.toFloat32Array())).toEqual(Array.from(before));
  const h = tensor(Int32Array.from([3, -4, 5]), [3], { dtype: "i32", device: dev });
  pg.allReduce(h, { op: "max" });
  expect(Array.from(await h.toTypedArray() as Int32Array)).toEqual([3, -4, 5]);

  const keep = await out.toFloat32Array();
  expectCode(() => pg.broadcast(x, 1), "E_ARG");
  expectCode(() => pg.reduce(x, -1), "E_ARG");
  expectCode(() => pg.allReduce(x, { op: "mean" as never }), "E_ARG");
  const small = randn([36], { device: dev, seed: 4 });
  expectCode(() => pg.allGather(small, x), "E_SHAPE");
  expectCode(() => pg.reduceScatter(small, x), "E_SHAPE");
  const b16 = randn([37], { device: dev, seed: 5, dtype: "bf16" });
  expectCode(() => pg.allGather(b16, x), "E_DTYPE");
  expectCode(() => pg.allReduce({} as never), "E_ARG");
  const gone = randn([37], { device: dev, seed: 6 });
  gone.dispose();
  expectCode(() => pg.allReduce(gone), "E_DISPOSED");
  expect(Array.from(await out.toFloat32Array())).toEqual(Array.from(keep));
  for (const t of [x, out, rs, h, small, b16]) t.dispose();
}

/** Refusals of the wrapper: nothing is built. */
export function wrapperRefusals(pg: ProcessGroup, dev: string): void {
  const ps = makeParams("f32", dev, 400);
  const make = (g: ParamGroupSpec<GroupOptions>[]) => OPTIMIZERS[0].make(g.flatMap((x) => x.params)) as AnyOptimizer;
  expectCode(() => new DistributedOptimizer({} as never, ps, make), "E_ARG");
  expectCode(() => new DistributedOptimizer(pg, [], make), "E_ARG");
  expectCode(() => new DistributedOptimizer(pg, ps, undefined as never), "E_ARG");
  expectCode(() => new DistributedOptimizer(pg, ps, make, { bucketBytes: 0 }), "E_ARG");
  expectCode(() => new DistributedOptimizer(pg, ps, make, { compress: "yes" as never }), "E_ARG");
  expectCode(() => new DistributedOptimizer(pg, [{ params: [ps[0], {} as Parameter] }], make), "E_ARG");
  for (const p of ps) { p.data.dispose(); p.grad.dispose(); }
}
