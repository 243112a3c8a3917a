// Assertions the suites share.
import { SlimoptError } from "../lib";

/** fn() must throw a SlimoptError with this code. */
export function expectCode(fn: () => unknown, code: string): void {
  let err: unknown;
  try { fn(); } catch (e) { err = e; }
  expect(err).toBeInstanceOf(SlimoptError);
  expect((err as SlimoptError).code).toBe(code);
}
