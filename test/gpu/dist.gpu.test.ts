// A world of one rank on the GPU through NCCL (when it loads: the same code path as N ranks),
// collectives on device tensors, DistributedOptimizer against the wrapped optimizer's own bits.
// Compressed averaging (GaLore's projected gradient, Grass's compact lines) and DistributedOptimizer
// checkpoints run here as on the CPU (test/dist_compress_helpers.ts).
// N ranks: bench/dist_check.js under `slimopt launch` on a multi-GPU machine.
import { initProcessGroup, ncclInfo, ProcessGroup } from "../../lib";
import {
  badCheckpoints, CKPT_CASES, galoreProjectedAverage, galoreProjectedRefusals, galoreProjectedStepParam, gatherCompactMatchesReference, grassCompactAverage,
  projectGradientMatchesReference, resumeOnOtherWorld, resumeWorldOfOne, wrapperEverySide,
} from "../dist_compress_helpers";
import { collectivesOfOne, worldOfOneMatchesPlain, wrapperRefusals } from "../dist_helpers";

describe("process group of one rank on cuda:0", () => {
  let pg: ProcessGroup;
  beforeAll(async () => { pg = await initProcessGroup({ device: "cuda:0", rank: 0, worldSize: 1 }); });
  afterAll(() => pg.dispose());

  test("backend: NCCL when it loads", () => {
    const info = ncclInfo();
    console.log("NCCL:", info.path, info.version, info.why);
    expect(pg.backend).toBe(info.path !== null ? "nccl" : "local");
  });
  test("collectives of one rank, and refusals that change nothing", () => collectivesOfOne(pg, "cuda:0"));
  test("DistributedOptimizer over one rank gives every optimizer's own bits", () => worldOfOneMatchesPlain(pg, "cuda:0"));
  test("DistributedOptimizer refuses bad input", () => wrapperRefusals(pg, "cuda:0"));
  // Checkpoints of a DistributedOptimizer: a world of one over NCCL, and simulated worlds (local
  // process groups of several ranks, see test/dist_compress_helpers.ts) for the re-deal.
  for (const c of CKPT_CASES) {
    test(`${c.name}: save and load on one rank = uninterrupted, bit for bit`, async () => {
      await resumeWorldOfOne(pg, c, "cuda:0", true);
      await resumeWorldOfOne(pg, c, "cuda:0", false);
    });
    test(`${c.name}: saved on 2 ranks, loaded on 1, 2 and 3 = one process, bit for bit`, async () => {
      for (const to of [1, 2, 3]) await resumeOnOtherWorld(c, "cuda:0", 2, to, true);
    });
  }
  test("every GaLore side through a compressing wrapper of one rank: the optimizer's own bits", () => wrapperEverySide(pg, "cuda:0"));
  test("bad checkpoints are refused with E_CHECKPOINT and change nothing", () => badCheckpoints("cuda:0"));
});

describe("compact gradients on cuda:0", () => {
  test("projectGradient matches a float64 reference (right, left, full; f32, bf16)", () => projectGradientMatchesReference("cuda:0"));
  test("gatherCompact gathers rows and columns exactly", () => gatherCompactMatchesReference("cuda:0"));
  test("GaLoreAdamW on the average of projected gradients = on the averaged gradient", () => galoreProjectedAverage("cuda:0"));
  test("GaLoreAdamW projected-gradient and projector refusals change nothing", () => galoreProjectedRefusals("cuda:0"));
  test("GaLoreAdamW stepParam uses a projected gradient as step() does", () => galoreProjectedStepParam("cuda:0"));
  test("GrassAdamW on the average of compact lines = on the averaged gradient, bit for bit", () => grassCompactAverage("cuda:0"));
});

test("the shm backend (CPU ranks) refuses a GPU rank", async () => {
  await expect(initProcessGroup({ device: "cuda:0", rank: 0, worldSize: 1, backend: "shm" })).rejects.toMatchObject({ code: "E_DEVICE" });
});
