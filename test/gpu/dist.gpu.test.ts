// A world of one rank on the GPU through NCCL (when it loads: the same code path as N ranks),
// collectives on device tensors, DistributedOptimizer against the wrapped optimizer's own bits.
// N ranks: bench/dist_check.js under `slimopt launch` on a multi-GPU machine.
import { initProcessGroup, ncclInfo, ProcessGroup } from "../../lib";
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
});

test("the shm backend (CPU ranks) refuses a GPU rank", async () => {
  await expect(initProcessGroup({ device: "cuda:0", rank: 0, worldSize: 1, backend: "shm" })).rejects.toMatchObject({ code: "E_DEVICE" });
});
