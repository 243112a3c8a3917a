// The DESIGN §6 workload as Parameters on `dev` (f32 W ~ N(0, 0.02²), G ~ N(0, 0.01²), fixed
// seeds), for the scripts in bench/ that run GaLore's step on it outside `slimopt bench`.
const s = require("../dist");
const { llamaLayers } = require("../dist/cli/workload");

function workloadParams(dev) {
  return llamaLayers().matrices.map(({ name, shape }, i) => {
    const p = new s.Parameter(s.randn(shape, { device: dev, seed: 1 + i, std: 0.02 }), { name });
    const g = s.randn(shape, { device: dev, seed: 1000 + i, std: 1e-2 });
    p.grad.copyFrom(g);
    g.dispose();
    return p;
  });
}

module.exports = { workloadParams };
