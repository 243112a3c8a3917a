/** Codes of every refusal slimopt makes (DESIGN §2). */
export type ErrorCode =
  | "E_SHAPE" | "E_DTYPE" | "E_DEVICE" | "E_DISPOSED" | "E_ARG" | "E_OOM"
  | "E_NO_CUDA" | "E_CUDA" | "E_CHECKPOINT";

/** The one error type slimopt throws. A refused call has changed nothing. */
export class SlimoptError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = "SlimoptError";
    this.code = code;
  }
}

export function fail(code: ErrorCode, message: string): never {
  throw new SlimoptError(code, message);
}
