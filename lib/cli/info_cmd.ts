// `slimopt info`: the build, the devices, and which linear-algebra path is in use.
import { info, SlimoptInfo } from "../info";
import { fmtBytes } from "./format";

export function runInfo(json: boolean): number {
  const i = info();
  if (json) {
    process.stdout.write(JSON.stringify(i, null, 2) + "\n");
    return 0;
  }
  process.stdout.write(formatInfo(i));
  return 0;
}

export function formatInfo(i: SlimoptInfo): string {
  const rows: [string, string][] = [
    ["version", i.version],
    ["addon", i.addon],
    ["CUDA compiled", i.cudaCompiled ? `yes (archs ${i.cudaArchs || "?"})` : "no (CPU backend only)"],
    ["build flags", i.buildFlags],
    ["CUDA usable", i.cuda.usable ? "yes" : `no${i.cuda.why ? `: ${i.cuda.why}` : ""}`],
  ];
  i.devices.forEach((d, k) => {
    const cpus = d.id === "cpu" ? require("os").cpus() : [];
    const name = d.id === "cpu" ? `${(cpus[0]?.model ?? "cpu").trim()}, ${cpus.length} cores` : d.name;
    const parts = [d.id.padEnd(7), name];
    if (d.computeCapability) parts.push(`compute ${d.computeCapability}`);
    parts.push(fmtBytes(d.totalMemory));
    if (d.lost) parts.push(`LOST: ${d.lost}`);
    rows.push([k === 0 ? "devices" : "", parts.join("  ")]);
  });
  rows.push(["cuBLAS", i.cublas ?? "not found"]);
  rows.push(["cuSOLVER", i.cusolver ?? "not found"]);
  rows.push(["NCCL", i.nccl ?? "not found (multi-GPU process groups unavailable)"]);
  rows.push(["linear algebra", i.linearAlgebra]);
  const w = Math.max(...rows.map(([k]) => k.length));
  return `slimopt ${i.version}\n` + rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join("\n") + "\n";
}
