// The one notice GaLore gives on a CUDA device when cuBLAS or cuSOLVER did not load (the built-in
// kernels serve): exactly once per process where a library is missing, never where both loaded.
// Apollo (rank > 1) gives the same notice. Run it with the libraries hidden too:
//   scripts/without_cuda_math_libs.sh npx jest test/gpu/linalg_notice
// Skipped where no CUDA device exists.
import { Apollo, devices, GaLoreAdamW, linalgPaths, Parameter, zeros } from "../../lib";

const hasCuda = devices().length > 1;
const suite = hasCuda ? describe : describe.skip;

suite("SLIMOPT_BUILTIN_LINALG notice", () => {
  test("once per process, and only when a library is missing", async () => {
    // Under jest, `process` is the test context's copy: a "warning" listener on it never fires (the
    // real process prints the warning), so the call itself is counted.
    const seen: string[] = [];
    const spy = jest.spyOn(process, "emitWarning").mockImplementation(((w: string | Error, o?: unknown) => {
      if (o && typeof o === "object" && (o as { code?: string }).code === "SLIMOPT_BUILTIN_LINALG") seen.push(String(w));
    }) as typeof process.emitWarning);
    try {
      for (let i = 0; i < 3; i++) {
        const w = new Parameter(zeros([48, 32], { device: "cuda" }), { name: `w${i}` });
        new GaLoreAdamW([{ params: [w], rank: 4 }]);
        new Apollo([{ params: [w], rank: 4 }]);
      }
    } finally {
      spy.mockRestore();
    }
    const l = linalgPaths();
    const missing = (!l.blas.startsWith("cuBLAS") || !l.solver.startsWith("cuSOLVER")) && !l.forceBuiltin;
    process.stderr.write(`linalg paths: ${JSON.stringify(l)}; notices: ${seen.length}\n`);
    expect(seen.length).toBe(missing ? 1 : 0);
    if (missing) expect(seen[0]).toContain("built-in CUDA kernels serve");
  });
});
