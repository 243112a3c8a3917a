// Compressed data-parallel steps and DistributedOptimizer checkpoints on the CPU (see
// test/dist_compress_helpers.ts); the same checks run on cuda:0 in test/gpu/dist.gpu.test.ts.
import { initProcessGroup, ProcessGroup } from "../lib";
import {
  badCheckpoints, CKPT_CASES, galoreProjectedAverage, galoreProjectedRefusals, galoreProjectedStepParam, gatherCompactMatchesReference, grassCompactAverage,
  projectGradientMatchesReference, resumeOnOtherWorld, resumeWorldOfOne, wrapperEverySide,
} from "./dist_compress_helpers";

const DEV = "cpu";

describe("compact gradients", () => {
  test("projectGradient matches a float64 reference (right, left, full; f32, bf16)", () => projectGradientMatchesReference(DEV));
  test("gatherCompact gathers rows and columns exactly", () => gatherCompactMatchesReference(DEV));
  test("GaLoreAdamW on the average of projected gradients = on the averaged gradient", () => galoreProjectedAverage(DEV));
  test("GaLoreAdamW projected-gradient and projector refusals change nothing", () => galoreProjectedRefusals(DEV));
  test("GaLoreAdamW stepParam uses a projected gradient as step() does", () => galoreProjectedStepParam(DEV));
  test("GrassAdamW on the average of compact lines = on the averaged gradient, bit for bit", () => grassCompactAverage(DEV));
});

describe("DistributedOptimizer checkpoints", () => {
  let pg: ProcessGroup;
  beforeAll(async () => { pg = await initProcessGroup({ device: DEV, rank: 0, worldSize: 1 }); });
  afterAll(() => pg.dispose());

  for (const c of CKPT_CASES) {
    test(`${c.name}: save and load on one rank = uninterrupted, bit for bit`, async () => {
      await resumeWorldOfOne(pg, c, DEV, true);
      await resumeWorldOfOne(pg, c, DEV, false);
    });
    test(`${c.name}: saved on 2 ranks, loaded on 1, 2 and 3 = one process, bit for bit`, async () => {
      for (const to of [1, 2, 3]) await resumeOnOtherWorld(c, DEV, 2, to, true);
      await resumeOnOtherWorld(c, DEV, 3, 2, false);
    });
  }
  test("every GaLore side through a compressing wrapper of one rank: the optimizer's own bits", () => wrapperEverySide(pg, DEV));
  test("bad checkpoints are refused with E_CHECKPOINT and change nothing", () => badCheckpoints(DEV));
});
