// Wasm SIMD helpers for ML-KEM (eight i16 lanes). Only compiled into the SIMD build: every caller
// sits behind `if (ASC_FEATURE_SIMD)`.

/** High 16 bits of the signed 32-bit lane products. */
// @ts-ignore: decorator
@inline export function mulhi16(a: v128, b: v128): v128 {
  return i16x8.shuffle(i32x4.extmul_low_i16x8_s(a, b), i32x4.extmul_high_i16x8_s(a, b), 1, 3, 5, 7, 9, 11, 13, 15);
}

/** Montgomery product a * b * 2^-16 mod q (|result| < q), lanewise. */
// @ts-ignore: decorator
@inline export function fqmul16(a: v128, b: v128): v128 {
  const t = i16x8.mul(i16x8.mul(a, b), i16x8.splat(-3327));
  return i16x8.sub(mulhi16(a, b), mulhi16(t, i16x8.splat(3329)));
}

/** Montgomery product with a constant whose product with q^-1 (mod 2^16) is precomputed. */
// @ts-ignore: decorator
@inline export function fqmulc16(a: v128, b: v128, bqinv: v128): v128 {
  const t = i16x8.mul(a, bqinv);
  return i16x8.sub(mulhi16(a, b), mulhi16(t, i16x8.splat(3329)));
}

/** Barrett reduction to the centered range, lanewise. */
// @ts-ignore: decorator
@inline export function barrett16(a: v128): v128 {
  const t = i16x8.shr_s(i16x8.add(mulhi16(a, i16x8.splat(20159)), i16x8.splat(512)), 10);
  return i16x8.sub(a, i16x8.mul(t, i16x8.splat(3329)));
}

// ---- ML-DSA: four i32 lanes ----

/** High 32 bits of the signed 64-bit lane products. */
// @ts-ignore: decorator
@inline export function mulhi32(a: v128, b: v128): v128 {
  return i32x4.shuffle(i64x2.extmul_low_i32x4_s(a, b), i64x2.extmul_high_i32x4_s(a, b), 1, 3, 5, 7);
}

/** Montgomery product a * b * 2^-32 mod 8380417, given bq = b * q^-1 mod 2^32 lanewise. */
// @ts-ignore: decorator
@inline export function montmul32(a: v128, b: v128, bq: v128): v128 {
  const t = i32x4.mul(a, bq);
  return i32x4.sub(mulhi32(a, b), mulhi32(t, i32x4.splat(8380417)));
}

/** Montgomery product of two varying vectors. */
// @ts-ignore: decorator
@inline export function montmul32v(a: v128, b: v128): v128 {
  return montmul32(a, b, i32x4.mul(b, i32x4.splat(58728449)));
}

/** reduce32: a - round(a / 2^23) * q, lanewise. */
// @ts-ignore: decorator
@inline export function reduce32x4(a: v128): v128 {
  const t = i32x4.shr_s(i32x4.add(a, i32x4.splat(1 << 22)), 23);
  return i32x4.sub(a, i32x4.mul(t, i32x4.splat(8380417)));
}

/** caddq: add q to negative lanes. */
// @ts-ignore: decorator
@inline export function caddq32x4(a: v128): v128 {
  return i32x4.add(a, v128.and(i32x4.shr_s(a, 31), i32x4.splat(8380417)));
}
