/** Storage types. Parameters and gradients are f32, bf16 or f16; u8 and i32 hold states. */
export type DType = "f32" | "bf16" | "f16" | "u8" | "i32";

export const DTYPES: readonly DType[] = ["f32", "bf16", "f16", "u8", "i32"];

/** Codes shared with the native side (cuda/common.cuh DType). */
export const DTYPE_CODE: Record<DType, number> = { f32: 0, bf16: 1, f16: 2, u8: 3, i32: 4 };
export const DTYPE_SIZE: Record<DType, number> = { f32: 4, bf16: 2, f16: 2, u8: 1, i32: 4 };

export function isFloatType(d: DType): boolean {
  return d === "f32" || d === "bf16" || d === "f16";
}
