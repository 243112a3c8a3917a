// Every benchmark `slimopt bench` knows, in the order they run. Add new definitions here.
import { BenchDefinition } from "../registry";
import { adamw } from "./adamw";
import { galore, galoreRefresh } from "./galore";
import { grass, grassRowOps } from "./grass";
import { adamwHostOverhead } from "./host_overhead";

export const BENCHMARKS: BenchDefinition[] = [adamw, adamwHostOverhead, grassRowOps, grass, galore, galoreRefresh];
