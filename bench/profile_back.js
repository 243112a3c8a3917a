// One project-back product W <- W - 1e-3 N P of an 11008 x 4096 W at rank 128 (TF32), twice each
// by the built-in path's streaming kernel, its tile kernel and cuBLAS (where it loads), for ncu:
//   ncu --clock-control none --set full -k regex:'tcStream|tcGemm|sm90' node bench/profile_back.js
const { gemm, randn, setBuiltinLinalg } = require("../dist");
const { setStreamGemm } = require("../dist/linalg");
const [m, n, r] = [11008, 4096, 128];
const W = randn([m, n], { device: "cuda", seed: 1, std: 0.02 });
const N = randn([m, r], { device: "cuda", seed: 2 });
const P = randn([r, n], { device: "cuda", seed: 3, std: 1 / 64 });
for (const [builtin, stream] of [[true, true], [true, false], [false, true]]) {
  setBuiltinLinalg(builtin);
  setStreamGemm(stream);
  for (let k = 0; k < 2; k++) gemm(N, P, W, { alpha: -1e-3, beta: 1, precision: "tf32" });
}
setBuiltinLinalg(false);
setStreamGemm(true);
W.toFloat32Array().then(() => console.log("done"));
