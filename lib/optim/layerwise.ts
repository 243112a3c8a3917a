// Layer-wise steps (Optimizer.stepParam) run a parameter alone through its optimizer's native
// group engine: a group handle built over that one tensor (with the tensor's index in its whole
// group, so stochastic-rounding streams match) and a private copy of the group's step counters.
// This cache keeps one such handle per parameter, rebuilt only when one of its buffers changes.
import { Parameter } from "../parameter";

export class OneTensorPlans<H extends { dispose(): void }> {
  private plans = new Map<Parameter, { key: readonly unknown[]; handle: H }>();

  /** p's handle for these buffers (key: the native handles it was built over). */
  get(p: Parameter, key: readonly unknown[], build: () => H): H {
    const have = this.plans.get(p);
    if (have && have.key.length === key.length && have.key.every((k, i) => k === key[i])) return have.handle;
    const handle = build();
    have?.handle.dispose();
    this.plans.set(p, { key, handle });
    return handle;
  }

  dispose(): void {
    for (const { handle } of this.plans.values()) handle.dispose();
    this.plans.clear();
  }
}
