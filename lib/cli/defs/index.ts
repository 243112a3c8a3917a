// Every benchmark `slimopt bench` knows, in the order they run. Add new definitions here.
import { BenchDefinition } from "../registry";
import { adamw } from "./adamw";
import { apollo, apolloMini } from "./apollo";
import { adamw4bit, adamw8bit, dequantizeBlockwiseBench, quantizeBlockwiseBench } from "./adamw8bit";
import { galore, galoreRefresh } from "./galore";
import { grass, grassRowOps } from "./grass";
import { adamwHostOverhead } from "./host_overhead";
import { adafactor } from "./adafactor";
import { gemmBackAllBench, gemmBench } from "./gemm";

export const BENCHMARKS: BenchDefinition[] = [adamw, adamwHostOverhead, adamw8bit, adamw4bit, quantizeBlockwiseBench,
  dequantizeBlockwiseBench, grassRowOps, grass, galore, galoreRefresh,
  apollo, apolloMini, gemmBench, gemmBackAllBench];
BENCHMARKS.push(adafactor);
