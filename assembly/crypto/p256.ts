// ECDSA P-256 (secp256r1) signature verification, FIPS 186-5 / SEC 1. Verification only: every input is
// public, so nothing here is constant time. Self-contained (own static data, no allocation, no abort
// path) so other Wasm modules (the proxy-wasm filter) can import it directly.
//
//   p256Verify(hashPtr, pubPtr, sigPtr): hash = 32-byte digest, pub = 65-byte 0x04 || X || Y,
//   sig = 64-byte r || s (all big-endian). Returns true only for a valid signature; any malformed input
//   (bad prefix, coordinate >= p, point not on the curve, r or s outside [1, n-1]) returns false.
//
// Field elements mod p are 8 little-endian 32-bit limbs (32 bytes of linear memory), kept partially
// reduced in [0, 2^256) (any such value is a valid multiplication input; zero tests accept 0 and p,
// comparisons canonicalise first). fmul/fsqr are unrolled 8x8 schoolbook products (fsqr computes the
// cross products once and doubles them) in product scanning order with u64 partial products whose
// 32-bit halves are summed separately, so there is no carry chain: word k = sum lo(k) + sum hi(k-1) <
// 2^36. The 16 words feed the Solinas reduction for p = 2^256 - 2^224 + 2^192 + 2^96 - 1 directly.
// Additions and small linear combinations share the same carry/fold normaliser. Scalars mod n: w = s^-1 by binary
// extended Euclid, then two Montgomery products for u1 = e w and u2 = r w.
// u1*G + u2*Q is a Straus/Shamir double-scalar multiplication over Jacobian coordinates with width-w
// NAF recoding: an affine table of odd multiples of G (w = 8, computed once on first use) and a
// per-call table of odd multiples of Q (w = 5, with cached Z^2, Z^3). The final x-coordinate test needs
// no field inversion: x(R) mod n == r  <=>  X == r * Z^2  or (r + n < p and X == (r + n) * Z^2).

const M: u64 = 0xffffffff;

// ---- constants (8 little-endian u32 limbs) ----
const P: usize = memory.data<u32>([0xffffffff, 0xffffffff, 0xffffffff, 0, 0, 0, 1, 0xffffffff]);
const N: usize = memory.data<u32>([
  0xfc632551, 0xf3b9cac2, 0xa7179e84, 0xbce6faad, 0xffffffff, 0xffffffff, 0, 0xffffffff,
]);
/** p - n: r + n < p exactly when r < p - n. */
const P_MINUS_N: usize = memory.data<u32>([0x039cdaae, 0x0c46353d, 0x58e8617b, 0x43190553, 0, 0, 0, 0]);
const CURVE_B: usize = memory.data<u32>([
  0x27d2604b, 0x3bce3c3e, 0xcc53b0f6, 0x651d06b0, 0x769886bc, 0xb3ebbd55, 0xaa3a93e7, 0x5ac635d8,
]);
const GX: usize = memory.data<u32>([
  0xd898c296, 0xf4a13945, 0x2deb33a0, 0x77037d81, 0x63a440f2, 0xf8bce6e5, 0xe12c4247, 0x6b17d1f2,
]);
const GY: usize = memory.data<u32>([
  0x37bf51f5, 0xcbb64068, 0x6b315ece, 0x2bce3357, 0x7c0f9e16, 0x8ee7eb4a, 0xfe1a7f9b, 0x4fe342e2,
]);
/** R^2 mod n for R = 2^256 (into the Montgomery domain). */
const R2N: usize = memory.data<u32>([
  0xbe79eea2, 0x83244c95, 0x49bd6fa6, 0x4699799c, 0x2b6bec59, 0x2845b239, 0xf3d95620, 0x66e12d94,
]);
/** -n^-1 mod 2^32. */
const N0INV: u64 = 0xee00bc4f;

// ---- window widths and tables ----
const WG: i32 = 8; // G: odd multiples 1G..127G, affine (64 points x 64 bytes)
const WQ: i32 = 5; // Q: odd multiples 1Q..15Q, Chudnovsky (8 points x 160 bytes)
const GTAB_N: i32 = 1 << (WG - 2);
const QTAB_N: i32 = 1 << (WQ - 2);
const GTAB: usize = memory.data(GTAB_N * 64, 16);
/** Chudnovsky point: Jacobian X, Y, Z followed by Z^2 and Z^3 (160 bytes). */
const CH: usize = 160;
const QTAB: usize = memory.data(QTAB_N * <i32>CH, 16);
let gReady = false;

// ---- scratch (field elements are 32 bytes, Jacobian points 96) ----
const SCR: usize = memory.data(32 * 32, 16);
const T0: usize = SCR;
const T1: usize = SCR + 32;
const T2: usize = SCR + 64;
const T3: usize = SCR + 96;
const T4: usize = SCR + 128;
const T5: usize = SCR + 160;
const T6: usize = SCR + 192;
const T7: usize = SCR + 224;
const T8: usize = SCR + 256;
const E: usize = SCR + 320; // hash as a scalar mod n
const SR: usize = SCR + 352; // r
const SS: usize = SCR + 384; // s
const U1: usize = SCR + 416;
const U2: usize = SCR + 448;
const SA: usize = SCR + 480; // scalar scratch
const SB: usize = SCR + 512;
const MT: usize = SCR + 576; // 10-limb Montgomery accumulator (40 bytes)
const ACC: usize = memory.data(96, 16); // accumulator point
const PQ: usize = memory.data(96, 16); // the public key as a Jacobian point (Z = 1)
const P2: usize = memory.data(<i32>CH, 16); // 2Q (or 2G) while building a table
const NAF_G: usize = memory.data(260 * 4, 16);
const NAF_Q: usize = memory.data(260 * 4, 16);

// ---- big-endian bytes <-> limbs ----
@inline
function bswap32(x: u32): u32 {
  return (rotl<u32>(x, 8) & 0x00ff00ff) | (rotr<u32>(x, 8) & 0xff00ff00);
}
function fromBytes(r: usize, src: usize): void {
  for (let i: usize = 0; i < 8; i++) store<u32>(r + (i << 2), bswap32(load<u32>(src + 28 - (i << 2))));
}

// ---- 256-bit helpers (any modulus) ----
@inline
function copy32(r: usize, a: usize): void {
  store<u64>(r, load<u64>(a, 0), 0);
  store<u64>(r, load<u64>(a, 8), 8);
  store<u64>(r, load<u64>(a, 16), 16);
  store<u64>(r, load<u64>(a, 24), 24);
}
function isZero(a: usize): bool {
  return (load<u64>(a, 0) | load<u64>(a, 8) | load<u64>(a, 16) | load<u64>(a, 24)) == 0;
}
/** a == 0 mod p for a field element in [0, 2^256). */
function fIsZero(a: usize): bool {
  return isZero(a) || equal(a, P);
}
/** Bring a field element from [0, 2^256) into [0, p). */
function fCanon(a: usize): void {
  if (!less(a, P)) sub256(a, a, P);
}
function equal(a: usize, b: usize): bool {
  return (
    ((load<u64>(a, 0) ^ load<u64>(b, 0)) |
      (load<u64>(a, 8) ^ load<u64>(b, 8)) |
      (load<u64>(a, 16) ^ load<u64>(b, 16)) |
      (load<u64>(a, 24) ^ load<u64>(b, 24))) ==
    0
  );
}
/** a < b as unsigned 256-bit integers. */
function less(a: usize, b: usize): bool {
  for (let i: i32 = 28; i >= 0; i -= 4) {
    const x = load<u32>(a + <usize>i);
    const y = load<u32>(b + <usize>i);
    if (x != y) return x < y;
  }
  return false;
}
/** r = a - b, returns the borrow (0 or 1). */
function sub256(r: usize, a: usize, b: usize): u64 {
  let c: i64 = 0;
  for (let i: usize = 0; i < 32; i += 4) {
    c += <i64>load<u32>(a + i) - <i64>load<u32>(b + i);
    store<u32>(r + i, <u32>c);
    c >>= 32;
  }
  return <u64>(-c);
}
/** r = a + b, returns the carry (0 or 1). */
function add256(r: usize, a: usize, b: usize): u64 {
  let c: u64 = 0;
  for (let i: usize = 0; i < 32; i += 4) {
    c += <u64>load<u32>(a + i) + <u64>load<u32>(b + i);
    store<u32>(r + i, <u32>c);
    c >>= 32;
  }
  return c;
}

// ---- field arithmetic mod p ----

/**
 * Store w7..w0 (signed 32-bit-word sums, |w| < 2^40) mod p into r as a value in [0, 2^256).
 * Carries are propagated and the signed carry out of 2^256 is folded back with
 * 2^256 = 2^224 - 2^192 - 2^96 + 1 (mod p) until none is left (fCanon brings it below p).
 */
@inline
function norm(r: usize, w0: i64, w1: i64, w2: i64, w3: i64, w4: i64, w5: i64, w6: i64, w7: i64): void {
  const m = <i64>M;
  let x = w0;
  let r0 = x & m;
  x = (x >> 32) + w1;
  let r1 = x & m;
  x = (x >> 32) + w2;
  let r2 = x & m;
  x = (x >> 32) + w3;
  let r3 = x & m;
  x = (x >> 32) + w4;
  let r4 = x & m;
  x = (x >> 32) + w5;
  let r5 = x & m;
  x = (x >> 32) + w6;
  let r6 = x & m;
  x = (x >> 32) + w7;
  let r7 = x & m;
  let top = x >> 32;
  // top * 2^256 = top * (2^224 - 2^192 - 2^96 + 1); at most three rounds for |top| < 2^31
  while (top != 0) {
    x = r0 + top;
    r0 = x & m;
    x = (x >> 32) + r1;
    r1 = x & m;
    x = (x >> 32) + r2;
    r2 = x & m;
    x = (x >> 32) + r3 - top;
    r3 = x & m;
    x = (x >> 32) + r4;
    r4 = x & m;
    x = (x >> 32) + r5;
    r5 = x & m;
    x = (x >> 32) + r6 - top;
    r6 = x & m;
    x = (x >> 32) + r7 + top;
    r7 = x & m;
    top = x >> 32;
  }
  store<u32>(r, <u32>r0, 0);
  store<u32>(r, <u32>r1, 4);
  store<u32>(r, <u32>r2, 8);
  store<u32>(r, <u32>r3, 12);
  store<u32>(r, <u32>r4, 16);
  store<u32>(r, <u32>r5, 20);
  store<u32>(r, <u32>r6, 24);
  store<u32>(r, <u32>r7, 28);
}

@inline
function limb(a: usize, off: usize): i64 {
  return <i64>load<u32>(a + off);
}

/** r = ka*a + kb*b mod p for small constants ka, kb (|k| <= 8). */
@inline
function flin(r: usize, a: usize, ka: i64, b: usize, kb: i64): void {
  norm(
    r,
    ka * limb(a, 0) + kb * limb(b, 0),
    ka * limb(a, 4) + kb * limb(b, 4),
    ka * limb(a, 8) + kb * limb(b, 8),
    ka * limb(a, 12) + kb * limb(b, 12),
    ka * limb(a, 16) + kb * limb(b, 16),
    ka * limb(a, 20) + kb * limb(b, 20),
    ka * limb(a, 24) + kb * limb(b, 24),
    ka * limb(a, 28) + kb * limb(b, 28),
  );
}

/** r = ka*a + kb*b + kc*c mod p for small constants. */
@inline
function flin3(r: usize, a: usize, ka: i64, b: usize, kb: i64, c: usize, kc: i64): void {
  norm(
    r,
    ka * limb(a, 0) + kb * limb(b, 0) + kc * limb(c, 0),
    ka * limb(a, 4) + kb * limb(b, 4) + kc * limb(c, 4),
    ka * limb(a, 8) + kb * limb(b, 8) + kc * limb(c, 8),
    ka * limb(a, 12) + kb * limb(b, 12) + kc * limb(c, 12),
    ka * limb(a, 16) + kb * limb(b, 16) + kc * limb(c, 16),
    ka * limb(a, 20) + kb * limb(b, 20) + kc * limb(c, 20),
    ka * limb(a, 24) + kb * limb(b, 24) + kc * limb(c, 24),
    ka * limb(a, 28) + kb * limb(b, 28) + kc * limb(c, 28),
  );
}

/** r = a + b mod p. */
function fadd(r: usize, a: usize, b: usize): void {
  flin(r, a, 1, b, 1);
}
/** r = a - b mod p. */
function fsub(r: usize, a: usize, b: usize): void {
  flin(r, a, 1, b, -1);
}

/**
 * Solinas reduction (FIPS 186 D.2.3) of the 512-bit product sum(c_k 2^(32k)) into r; the words need not
 * be normalised (each c_k < 2^36).
 */
@inline
function reduce(
  r: usize,
  c0: u64, c1: u64, c2: u64, c3: u64, c4: u64, c5: u64, c6: u64, c7: u64,
  c8: u64, c9: u64, c10: u64, c11: u64, c12: u64, c13: u64, c14: u64, c15: u64,
): void {
  // per 32-bit word: s1 + 2 s2 + 2 s3 + s4 + s5 - d1 - d2 - d3 - d4
  norm(
    r,
    <i64>(c0 + c8 + c9) - <i64>(c11 + c12 + c13 + c14),
    <i64>(c1 + c9 + c10) - <i64>(c12 + c13 + c14 + c15),
    <i64>(c2 + c10 + c11) - <i64>(c13 + c14 + c15),
    <i64>(c3 + ((c11 + c12) << 1) + c13) - <i64>(c15 + c8 + c9),
    <i64>(c4 + ((c12 + c13) << 1) + c14) - <i64>(c9 + c10),
    <i64>(c5 + ((c13 + c14) << 1) + c15) - <i64>(c10 + c11),
    <i64>(c6 + c14 * 3 + (c15 << 1) + c13) - <i64>(c8 + c9),
    <i64>(c7 + c15 * 3 + c8) - <i64>(c10 + c11 + c12 + c13),
  );
}

/** r = a * b mod p (r may alias a or b). */
function fmul(r: usize, a: usize, bp: usize): void {
  let p: u64, lo: u64, hi: u64, h: u64 = 0;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(bp, 0);
  lo = p & M;
  hi = p >> 32;
  const t0 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(bp, 4);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(bp, 0);
  lo += p & M;
  hi += p >> 32;
  const t1 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(bp, 8);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(bp, 4);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(bp, 0);
  lo += p & M;
  hi += p >> 32;
  const t2 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(bp, 12);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(bp, 8);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(bp, 4);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(bp, 0);
  lo += p & M;
  hi += p >> 32;
  const t3 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(bp, 16);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(bp, 12);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(bp, 8);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(bp, 4);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(bp, 0);
  lo += p & M;
  hi += p >> 32;
  const t4 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(bp, 20);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(bp, 16);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(bp, 12);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(bp, 8);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(bp, 4);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 20) * <u64>load<u32>(bp, 0);
  lo += p & M;
  hi += p >> 32;
  const t5 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(bp, 24);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(bp, 20);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(bp, 16);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(bp, 12);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(bp, 8);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 20) * <u64>load<u32>(bp, 4);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 24) * <u64>load<u32>(bp, 0);
  lo += p & M;
  hi += p >> 32;
  const t6 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(bp, 28);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(bp, 24);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(bp, 20);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(bp, 16);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(bp, 12);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 20) * <u64>load<u32>(bp, 8);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 24) * <u64>load<u32>(bp, 4);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 28) * <u64>load<u32>(bp, 0);
  lo += p & M;
  hi += p >> 32;
  const t7 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(bp, 28);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(bp, 24);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(bp, 20);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(bp, 16);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 20) * <u64>load<u32>(bp, 12);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 24) * <u64>load<u32>(bp, 8);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 28) * <u64>load<u32>(bp, 4);
  lo += p & M;
  hi += p >> 32;
  const t8 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(bp, 28);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(bp, 24);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(bp, 20);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 20) * <u64>load<u32>(bp, 16);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 24) * <u64>load<u32>(bp, 12);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 28) * <u64>load<u32>(bp, 8);
  lo += p & M;
  hi += p >> 32;
  const t9 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(bp, 28);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(bp, 24);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 20) * <u64>load<u32>(bp, 20);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 24) * <u64>load<u32>(bp, 16);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 28) * <u64>load<u32>(bp, 12);
  lo += p & M;
  hi += p >> 32;
  const t10 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(bp, 28);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 20) * <u64>load<u32>(bp, 24);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 24) * <u64>load<u32>(bp, 20);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 28) * <u64>load<u32>(bp, 16);
  lo += p & M;
  hi += p >> 32;
  const t11 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 20) * <u64>load<u32>(bp, 28);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 24) * <u64>load<u32>(bp, 24);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 28) * <u64>load<u32>(bp, 20);
  lo += p & M;
  hi += p >> 32;
  const t12 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 24) * <u64>load<u32>(bp, 28);
  lo = p & M;
  hi = p >> 32;
  p = <u64>load<u32>(a, 28) * <u64>load<u32>(bp, 24);
  lo += p & M;
  hi += p >> 32;
  const t13 = lo + h;
  h = hi;
  p = <u64>load<u32>(a, 28) * <u64>load<u32>(bp, 28);
  lo = p & M;
  hi = p >> 32;
  const t14 = lo + h;
  h = hi;
  const t15 = h;
  reduce(r, t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15);
}

/** r = a^2 mod p (r may alias a). */
function fsqr(r: usize, a: usize): void {
  let p: u64, lo: u64, hi: u64, h: u64 = 0;
  lo = 0;
  hi = 0;
  lo <<= 1;
  hi <<= 1;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(a, 0);
  lo += p & M;
  hi += p >> 32;
  const t0 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(a, 4);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  const t1 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(a, 8);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(a, 4);
  lo += p & M;
  hi += p >> 32;
  const t2 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(a, 12);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(a, 8);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  const t3 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(a, 16);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(a, 12);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(a, 8);
  lo += p & M;
  hi += p >> 32;
  const t4 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(a, 20);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(a, 16);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(a, 12);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  const t5 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(a, 24);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(a, 20);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(a, 16);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(a, 12);
  lo += p & M;
  hi += p >> 32;
  const t6 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 0) * <u64>load<u32>(a, 28);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(a, 24);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(a, 20);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(a, 16);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  const t7 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 4) * <u64>load<u32>(a, 28);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(a, 24);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(a, 20);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(a, 16);
  lo += p & M;
  hi += p >> 32;
  const t8 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 8) * <u64>load<u32>(a, 28);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(a, 24);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(a, 20);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  const t9 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 12) * <u64>load<u32>(a, 28);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(a, 24);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  p = <u64>load<u32>(a, 20) * <u64>load<u32>(a, 20);
  lo += p & M;
  hi += p >> 32;
  const t10 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 16) * <u64>load<u32>(a, 28);
  lo += p & M;
  hi += p >> 32;
  p = <u64>load<u32>(a, 20) * <u64>load<u32>(a, 24);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  const t11 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 20) * <u64>load<u32>(a, 28);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  p = <u64>load<u32>(a, 24) * <u64>load<u32>(a, 24);
  lo += p & M;
  hi += p >> 32;
  const t12 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  p = <u64>load<u32>(a, 24) * <u64>load<u32>(a, 28);
  lo += p & M;
  hi += p >> 32;
  lo <<= 1;
  hi <<= 1;
  const t13 = lo + h;
  h = hi;
  lo = 0;
  hi = 0;
  lo <<= 1;
  hi <<= 1;
  p = <u64>load<u32>(a, 28) * <u64>load<u32>(a, 28);
  lo += p & M;
  hi += p >> 32;
  const t14 = lo + h;
  h = hi;
  const t15 = h;
  reduce(r, t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15);
}

/** r = a^-1 mod p (Fermat: a^(p-2)); a != 0. Used only to build the G table. */
function finv(r: usize, a: usize): void {
  // p - 2 = ffffffff 00000001 00000000 00000000 00000000 ffffffff ffffffff fffffffd
  copy32(T8, a);
  let first = true;
  for (let i: i32 = 255; i >= 0; i--) {
    const bit = i == 1 ? 0 : (load<u32>(P + ((<usize>i >> 5) << 2)) >>> (<u32>i & 31)) & 1;
    if (first) {
      if (bit != 0) {
        copy32(T7, T8);
        first = false;
      }
      continue;
    }
    fsqr(T7, T7);
    if (bit != 0) fmul(T7, T7, T8);
  }
  copy32(r, T7);
}

// ---- scalar arithmetic mod n (Montgomery, R = 2^256) ----

/** r = a * b * R^-1 mod n (r may alias a or b). */
function nmont(r: usize, a: usize, b: usize): void {
  memory.fill(MT, 0, 40);
  for (let i: usize = 0; i < 32; i += 4) {
    const bi = <u64>load<u32>(b + i);
    let c: u64 = 0;
    for (let j: usize = 0; j < 32; j += 4) {
      c += <u64>load<u32>(MT + j) + <u64>load<u32>(a + j) * bi;
      store<u32>(MT + j, <u32>c);
      c >>= 32;
    }
    c += <u64>load<u32>(MT, 32);
    store<u32>(MT, <u32>c, 32);
    store<u32>(MT, <u32>(c >> 32), 36);
    const m = (<u64>load<u32>(MT) * N0INV) & M;
    c = <u64>load<u32>(MT) + m * <u64>load<u32>(N);
    c >>= 32;
    for (let j: usize = 4; j < 32; j += 4) {
      c += <u64>load<u32>(MT + j) + m * <u64>load<u32>(N + j);
      store<u32>(MT + j - 4, <u32>c);
      c >>= 32;
    }
    c += <u64>load<u32>(MT, 32);
    store<u32>(MT, <u32>c, 28);
    store<u32>(MT, load<u32>(MT, 36) + <u32>(c >> 32), 32);
  }
  if (load<u32>(MT, 32) != 0 || !less(MT, N)) sub256(MT, MT, N);
  copy32(r, MT);
}

// Binary extended Euclid mod n over 4 x u64 limbs (four 32-byte registers): u = x a, v = y a (mod n).
const IU: usize = memory.data(32, 16);
const IV: usize = memory.data(32, 16);
const IX: usize = memory.data(32, 16);
const IY: usize = memory.data(32, 16);

/** a -= b over 4 u64 limbs; returns the borrow. */
@inline
function sub4(a: usize, b: usize): u64 {
  let borrow: u64 = 0;
  for (let i: usize = 0; i < 32; i += 8) {
    const x = load<u64>(a + i);
    const y = load<u64>(b + i);
    const d = x - y;
    const nb = <u64>(x < y) | <u64>(d < borrow);
    store<u64>(a + i, d - borrow);
    borrow = nb;
  }
  return borrow;
}
/** a += b over 4 u64 limbs; returns the carry. */
@inline
function add4(a: usize, b: usize): u64 {
  let carry: u64 = 0;
  for (let i: usize = 0; i < 32; i += 8) {
    const x = load<u64>(a + i);
    const s = x + load<u64>(b + i);
    const c1 = <u64>(s < x);
    const s2 = s + carry;
    carry = c1 | <u64>(s2 < s);
    store<u64>(a + i, s2);
  }
  return carry;
}
/** a = (a + top * 2^256) >> 1. */
@inline
function shr4(a: usize, top: u64): void {
  const a0 = load<u64>(a, 0),
    a1 = load<u64>(a, 8),
    a2 = load<u64>(a, 16),
    a3 = load<u64>(a, 24);
  store<u64>(a, (a0 >>> 1) | (a1 << 63), 0);
  store<u64>(a, (a1 >>> 1) | (a2 << 63), 8);
  store<u64>(a, (a2 >>> 1) | (a3 << 63), 16);
  store<u64>(a, (a3 >>> 1) | (top << 63), 24);
}
@inline
function isOne4(a: usize): bool {
  return (load<u64>(a, 0) ^ 1 | load<u64>(a, 8) | load<u64>(a, 16) | load<u64>(a, 24)) == 0;
}
/** a >= b over 4 u64 limbs. */
@inline
function geq4(a: usize, b: usize): bool {
  for (let i: i32 = 24; i >= 0; i -= 8) {
    const x = load<u64>(a + <usize>i);
    const y = load<u64>(b + <usize>i);
    if (x != y) return x > y;
  }
  return true;
}
/** Halve u and keep x u^-1 a fixed: x = x / 2 mod n. */
@inline
function halve(u: usize, x: usize): void {
  shr4(u, 0);
  if ((load<u64>(x) & 1) != 0) shr4(x, add4(x, N));
  else shr4(x, 0);
}

/** r = a^-1 mod n for 0 < a < n (n prime, so the gcd is 1). */
function ninv(r: usize, a: usize): void {
  copy32(IU, a);
  copy32(IV, N);
  memory.fill(IX, 0, 32);
  store<u64>(IX, 1);
  memory.fill(IY, 0, 32);
  while (true) {
    while ((load<u64>(IU) & 1) == 0) halve(IU, IX);
    while ((load<u64>(IV) & 1) == 0) halve(IV, IY);
    if (isOne4(IU)) {
      copy32(r, IX);
      return;
    }
    if (isOne4(IV)) {
      copy32(r, IY);
      return;
    }
    // both odd and > 1: subtract the smaller from the larger (the difference is even and nonzero)
    if (geq4(IU, IV)) {
      sub4(IU, IV);
      if (sub4(IX, IY) != 0) add4(IX, N);
    } else {
      sub4(IV, IU);
      if (sub4(IY, IX) != 0) add4(IY, N);
    }
  }
}

// ---- points (Jacobian X, Y, Z at offsets 0, 32, 64; Z = 0 is the point at infinity) ----

@inline
function setOne(z: usize): void {
  store<u64>(z, 1, 0);
  store<u64>(z, 0, 8);
  store<u64>(z, 0, 16);
  store<u64>(z, 0, 24);
}

/** p = 2p (a = -3; dbl-2001-b with Z3 = 2 Y Z): 4M + 4S. */
function pdbl(p: usize): void {
  const X = p,
    Y = p + 32,
    Z = p + 64;
  if (fIsZero(Z)) return;
  fsqr(T0, Z); // delta
  fsqr(T1, Y); // gamma
  fmul(Z, Y, Z);
  flin(Z, Z, 2, Z, 0); // Z3 = 2 Y Z
  fmul(T2, X, T1); // beta
  flin(T3, X, 3, T0, -3);
  flin(T4, X, 1, T0, 1);
  fmul(T3, T3, T4); // alpha = 3 (X - delta)(X + delta)
  fsqr(T4, T3);
  flin(X, T4, 1, T2, -8); // X3 = alpha^2 - 8 beta
  flin(T2, T2, 4, X, -1);
  fmul(T2, T3, T2);
  fsqr(T1, T1);
  flin(Y, T2, 1, T1, -8); // Y3 = alpha (4 beta - X3) - 8 gamma^2
}

/** p = p + (x2, sgn * y2) for an affine point (x2, y2) and sgn = +1 or -1 (madd-2004-hmv style). */
function paddAffine(p: usize, x2: usize, y2: usize, sgn: i64): void {
  const X = p,
    Y = p + 32,
    Z = p + 64;
  if (fIsZero(Z)) {
    copy32(X, x2);
    flin(Y, y2, sgn, y2, 0);
    setOne(Z);
    return;
  }
  fsqr(T0, Z); // Z1Z1
  fmul(T1, x2, T0); // U2
  fmul(T0, T0, Z);
  fmul(T0, T0, y2); // +-S2
  flin(T1, T1, 1, X, -1); // H = U2 - X1
  flin(T0, T0, sgn, Y, -1); // r = S2 - Y1
  if (fIsZero(T1)) {
    if (fIsZero(T0)) pdbl(p);
    else memory.fill(Z, 0, 32);
    return;
  }
  fmul(Z, Z, T1); // Z3 = Z1 H
  fsqr(T2, T1); // HH
  fmul(T1, T1, T2); // HHH
  fmul(T2, X, T2); // V = X1 HH
  fsqr(T3, T0);
  flin3(X, T3, 1, T1, -1, T2, -2); // X3 = r^2 - HHH - 2V
  flin(T2, T2, 1, X, -1);
  fmul(T2, T0, T2);
  fmul(T1, Y, T1);
  flin(Y, T2, 1, T1, -1); // Y3 = r (V - X3) - Y1 HHH
}

/** Fill in Z^2 and Z^3 of a Chudnovsky point from its Z. */
function cacheZ(q: usize): void {
  fsqr(q + 96, q + 64);
  fmul(q + 128, q + 96, q + 64);
}

/**
 * p = p + (x2, sgn * y2, z2) for a Chudnovsky point q = (x2, y2, z2, z2^2, z2^3) (add-1998-cmo-2 with
 * the cached powers of z2: 11M + 3S).
 */
function paddJac(p: usize, q: usize, sgn: i64): void {
  const X = p,
    Y = p + 32,
    Z = p + 64;
  const x2 = q,
    y2 = q + 32,
    z2 = q + 64;
  if (fIsZero(z2)) return;
  if (fIsZero(Z)) {
    copy32(X, x2);
    flin(Y, y2, sgn, y2, 0);
    copy32(Z, z2);
    return;
  }
  fsqr(T0, Z); // Z1Z1
  fmul(T2, X, q + 96); // U1 = X1 Z2^2
  fmul(T3, x2, T0); // U2
  fmul(T4, Y, q + 128); // S1 = Y1 Z2^3
  fmul(T5, y2, T0);
  fmul(T5, T5, Z); // +-S2
  flin(T3, T3, 1, T2, -1); // H
  flin(T5, T5, sgn, T4, -1); // r
  if (fIsZero(T3)) {
    if (fIsZero(T5)) pdbl(p);
    else memory.fill(Z, 0, 32);
    return;
  }
  fmul(Z, Z, z2);
  fmul(Z, Z, T3); // Z3 = Z1 Z2 H
  fsqr(T6, T3); // HH
  fmul(T3, T3, T6); // HHH
  fmul(T6, T2, T6); // V = U1 HH
  fsqr(T0, T5);
  flin3(X, T0, 1, T3, -1, T6, -2); // X3 = r^2 - HHH - 2V
  flin(T6, T6, 1, X, -1);
  fmul(T6, T5, T6);
  fmul(T4, T4, T3);
  flin(Y, T6, 1, T4, -1); // Y3 = r (V - X3) - S1 HHH
}

/** Z coordinates and their prefix products while the G table is built. */
const GZ: usize = memory.data(GTAB_N * 32, 16);
const GZP: usize = memory.data(GTAB_N * 32, 16);

/** The affine table of odd multiples of G, built once (one inversion, Montgomery's batch trick). */
function buildGTable(): void {
  const G2 = P2;
  copy32(G2, GX);
  copy32(G2 + 32, GY);
  setOne(G2 + 64);
  pdbl(G2);
  cacheZ(G2);
  copy32(ACC, GX);
  copy32(ACC + 32, GY);
  setOne(ACC + 64);
  // Jacobian 1G, 3G, 5G, ...: X, Y into the table, Z aside, prefix products of the Zs
  for (let i: usize = 0; i < <usize>GTAB_N; i++) {
    if (i > 0) paddJac(ACC, G2, 1);
    memory.copy(GTAB + i * 64, ACC, 64);
    copy32(GZ + i * 32, ACC + 64);
    if (i == 0) copy32(GZP, ACC + 64);
    else fmul(GZP + i * 32, GZP + (i - 1) * 32, ACC + 64);
  }
  finv(T8, GZP + <usize>(GTAB_N - 1) * 32); // (Z0 Z1 ... Z63)^-1
  for (let i: i32 = GTAB_N - 1; i >= 0; i--) {
    const k = <usize>i;
    // T7 = Zk^-1, then T8 = (Z0 ... Z(k-1))^-1
    if (i > 0) {
      fmul(T7, T8, GZP + (k - 1) * 32);
      fmul(T8, T8, GZ + k * 32);
    } else copy32(T7, T8);
    const e = GTAB + k * 64;
    fsqr(T6, T7);
    fmul(e, e, T6);
    fmul(T6, T6, T7);
    fmul(e + 32, e + 32, T6);
  }
  gReady = true;
}

/**
 * Width-w NAF of the 256-bit scalar k into out[0..256] (i32 digits, odd, |d| < 2^(w-1), zero elsewhere).
 */
function wnaf(out: usize, k: usize, w: i32): void {
  memory.fill(out, 0, 257 * 4);
  let carry: u32 = 0;
  let bit: i32 = 0;
  while (bit < 256) {
    const b = (load<u32>(k + ((<usize>bit >> 5) << 2)) >>> (<u32>bit & 31)) & 1;
    if (b == carry) {
      bit++;
      continue;
    }
    let now = w;
    if (now > 256 - bit) now = 256 - bit;
    // bits [bit, bit + now) of k
    const lo = <usize>bit >> 5;
    const sh = <u64>(<u32>bit & 31);
    let v: u64 = <u64>load<u32>(k + (lo << 2));
    if (lo < 7) v |= <u64>load<u32>(k + ((lo + 1) << 2)) << 32;
    let word = <i32>((v >> sh) & ((<u64>1 << <u64>now) - 1)) + <i32>carry;
    carry = (<u32>word >>> (<u32>w - 1)) & 1;
    word -= <i32>(carry << <u32>w);
    store<i32>(out + (<usize>bit << 2), word);
    bit += now;
  }
  if (carry != 0) store<i32>(out + (256 << 2), 1);
}

/** Is (x, y) on y^2 = x^3 - 3x + b? */
function onCurve(x: usize, y: usize): bool {
  fsqr(T0, x);
  fmul(T0, T0, x);
  flin3(T0, T0, 1, x, -3, CURVE_B, 1);
  fsqr(T1, y);
  fCanon(T0);
  fCanon(T1);
  return equal(T0, T1);
}

/**
 * Verify an ECDSA P-256 signature: hashPtr = 32-byte message digest, pubPtr = 65-byte uncompressed SEC 1
 * point (0x04 || X || Y), sigPtr = 64-byte r || s. All big-endian.
 */
export function p256Verify(hashPtr: usize, pubPtr: usize, sigPtr: usize): bool {
  // public key: prefix, coordinates < p, on the curve (the encoding cannot express infinity)
  if (load<u8>(pubPtr) != 0x04) return false;
  const QX = PQ,
    QY = PQ + 32,
    QZ = PQ + 64;
  fromBytes(QX, pubPtr + 1);
  fromBytes(QY, pubPtr + 33);
  if (!less(QX, P) || !less(QY, P)) return false;
  if (!onCurve(QX, QY)) return false;
  memory.fill(QZ, 0, 32);
  store<u32>(QZ, 1);
  // r, s in [1, n - 1]
  fromBytes(SR, sigPtr);
  fromBytes(SS, sigPtr + 32);
  if (isZero(SR) || isZero(SS) || !less(SR, N) || !less(SS, N)) return false;
  // e = hash mod n (hash < 2^256 < 2n)
  fromBytes(E, hashPtr);
  if (!less(E, N)) sub256(E, E, N);
  // w = s^-1, u1 = e w, u2 = r w (mod n)
  ninv(SA, SS);
  nmont(SB, SA, R2N); // w R
  nmont(U1, E, SB); // e w
  nmont(U2, SR, SB); // r w
  if (!gReady) buildGTable();
  // Q table: Q, 3Q, ..., 15Q (Chudnovsky)
  copy32(P2, QX);
  copy32(P2 + 32, QY);
  copy32(P2 + 64, QZ);
  pdbl(P2);
  cacheZ(P2);
  for (let i: i32 = 0; i < QTAB_N; i++) {
    const e = QTAB + <usize>i * CH;
    if (i == 0) {
      copy32(e, QX);
      copy32(e + 32, QY);
      copy32(e + 64, QZ);
    } else {
      memory.copy(e, e - CH, 96);
      paddJac(e, P2, 1);
    }
    cacheZ(e);
  }
  wnaf(NAF_G, U1, WG);
  wnaf(NAF_Q, U2, WQ);
  memory.fill(ACC, 0, 96);
  for (let i: i32 = 256; i >= 0; i--) {
    pdbl(ACC);
    const dg = load<i32>(NAF_G + (<usize>i << 2));
    if (dg != 0) {
      const e = GTAB + <usize>(((dg < 0 ? -dg : dg) >> 1) * 64);
      paddAffine(ACC, e, e + 32, dg < 0 ? -1 : 1);
    }
    const dq = load<i32>(NAF_Q + (<usize>i << 2));
    if (dq != 0) {
      const e = QTAB + <usize>((dq < 0 ? -dq : dq) >> 1) * CH;
      paddJac(ACC, e, dq < 0 ? -1 : 1);
    }
  }
  // R = u1 G + u2 Q must not be infinity, and x(R) mod n == r
  const Z = ACC + 64;
  if (fIsZero(Z)) return false;
  fCanon(ACC);
  fsqr(T0, Z);
  fmul(T1, SR, T0);
  fCanon(T1);
  if (equal(T1, ACC)) return true;
  if (!less(SR, P_MINUS_N)) return false;
  add256(T2, SR, N);
  fmul(T1, T2, T0);
  fCanon(T1);
  return equal(T1, ACC);
}

/**
 * Test hook for the arithmetic (used by test/crypto/p256.test.ts against a BigInt reference): r = op(a, b)
 * on 32-byte little-endian limb arrays. Field ops take any a, b < 2^256 and return the canonical value
 * mod p: 0 a*b, 1 a^2, 2 a+b, 3 a-b, 4 8a - 3b. Scalar ops: 5 a^-1 mod n (0 < a < n),
 * 6 a*b*2^-256 mod n (a, b < n). Returns false for an unknown op or scalar operands out of range.
 */
export function p256Arith(op: i32, r: usize, a: usize, b: usize): bool {
  switch (op) {
    case 0:
      fmul(r, a, b);
      break;
    case 1:
      fsqr(r, a);
      break;
    case 2:
      fadd(r, a, b);
      break;
    case 3:
      fsub(r, a, b);
      break;
    case 4:
      flin(r, a, 8, b, -3);
      break;
    case 5:
      if (isZero(a) || !less(a, N)) return false;
      ninv(r, a);
      return true;
    case 6:
      if (!less(a, N) || !less(b, N)) return false;
      nmont(r, a, b);
      return true;
    default:
      return false;
  }
  fCanon(r);
  return true;
}
