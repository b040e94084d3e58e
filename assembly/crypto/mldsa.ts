// ML-DSA-44/65/87 (FIPS 204): key generation, signing (hedged or deterministic), verification.
// Polynomials are 256 i32 coefficients (1 KiB). NTT-domain arithmetic is Montgomery (R = 2^32).
import { keccakF1600 } from "./keccakf";
import {
  spShake128Seed2,
  spInit,
  spAbsorb,
  spAbsorbByte,
  spFinal,
  spPad,
  spSqueeze,
  spSqueezeByte,
  spHash,
  keccakF1600Pair,
  spSqueezePair,
  RATE_SHAKE128,
  RATE_SHAKE256,
  DS_SHAKE,
} from "./sponge";
import { CTX, CTX_B, CTX_MU, PK, SK, SIG, SEED, RND, SCRATCH } from "./mem";
import { packI32, packI32Off, unpackI32, unpackI32Off } from "./pack";
import { montmul32, montmul32v, reduce32x4, caddq32x4 } from "./simd16";

const Q: i32 = 8380417;
const QINV: i32 = 58728449; // q^-1 mod 2^32
const D: i32 = 13;
const PB: usize = 1024; // bytes per polynomial

// ---- parameters (set by setParams) ----
let K: i32 = 0;
let L: i32 = 0;
let ETA: i32 = 0;
let TAU: i32 = 0;
let BETA: i32 = 0;
let GAMMA1: i32 = 0;
let GAMMA2: i32 = 0;
let OMEGA: i32 = 0;
let CTB: i32 = 0; // c~ bytes (lambda / 4)
let ETABITS: i32 = 0;
let ZBITS: i32 = 0;
let W1BITS: i32 = 0;
export let DSA_PK_BYTES: i32 = 0;
export let DSA_SK_BYTES: i32 = 0;
export let DSA_SIG_BYTES: i32 = 0;

/** Select ML-DSA-44 (2), -65 (3) or -87 (5). Returns false for anything else. */
export function dsaSetParams(level: i32): bool {
  if (level == 2) {
    K = 4; L = 4; ETA = 2; TAU = 39; BETA = 78; GAMMA1 = 1 << 17; GAMMA2 = (Q - 1) / 88; OMEGA = 80; CTB = 32;
  } else if (level == 3) {
    K = 6; L = 5; ETA = 4; TAU = 49; BETA = 196; GAMMA1 = 1 << 19; GAMMA2 = (Q - 1) / 32; OMEGA = 55; CTB = 48;
  } else if (level == 5) {
    K = 8; L = 7; ETA = 2; TAU = 60; BETA = 120; GAMMA1 = 1 << 19; GAMMA2 = (Q - 1) / 32; OMEGA = 75; CTB = 64;
  } else return false;
  curLevel = level;
  ETABITS = ETA == 2 ? 3 : 4;
  ZBITS = GAMMA1 == 1 << 17 ? 18 : 20;
  W1BITS = GAMMA2 == (Q - 1) / 88 ? 6 : 4;
  DSA_PK_BYTES = 32 + 320 * K;
  DSA_SK_BYTES = 128 + 32 * ETABITS * (K + L) + 416 * K;
  DSA_SIG_BYTES = CTB + L * 32 * ZBITS + OMEGA + K;
  return true;
}

// ---- buffers ----
const MAT: usize = memory.data(8 * 7 * 1024, 16);
const S1: usize = memory.data(8 * 1024, 16);
const S2: usize = memory.data(8 * 1024, 16);
const T0: usize = memory.data(8 * 1024, 16);
const T1: usize = memory.data(8 * 1024, 16);
const Y: usize = memory.data(8 * 1024, 16);
const Z: usize = memory.data(8 * 1024, 16);
const W0: usize = memory.data(8 * 1024, 16);
const W1: usize = memory.data(8 * 1024, 16);
const HV: usize = memory.data(8 * 1024, 16);
const CP: usize = memory.data(1024, 16);
const BUF: usize = memory.data(1024, 16);
// scratch byte layout
const RHO: usize = SCRATCH; // 32
const RHOP: usize = SCRATCH + 32; // 64 (rho')
const KEY: usize = SCRATCH + 96; // 32
const MU: usize = SCRATCH + 192; // 64
const RHOPP: usize = SCRATCH + 256; // 64 (rho'')
const CT: usize = SCRATCH + 320; // 64 (c~)
const CT2: usize = SCRATCH + 384; // 64
const HB: usize = SCRATCH + 448; // 128 (hash input)
const W1P: usize = SCRATCH + 1024; // 1024 (w1 encoding, per polynomial chunk)

// ---- zetas ----
const ZETAS: usize = memory.data(256 * 4, 16);

function powmod(b: i64, e: i32): i64 {
  let r: i64 = 1;
  let x = b % Q;
  while (e > 0) {
    if (e & 1) r = (r * x) % Q;
    x = (x * x) % Q;
    e >>= 1;
  }
  return r;
}

function brv8(x: i32): i32 {
  let r = 0;
  for (let i = 0; i < 8; i++) r |= ((x >> i) & 1) << (7 - i);
  return r;
}

function initZetas(): void {
  for (let i = 0; i < 256; i++) {
    let z = (powmod(1753, brv8(i)) << 32) % Q;
    if (z > Q / 2) z -= Q;
    store<i32>(ZETAS + (<usize>i << 2), <i32>z);
  }
}
initZetas();

// SIMD twiddles for the two innermost layers, per group g of 8 coefficients: [zeta lanes, zeta * q^-1
// lanes] for len 2 (lanes z_k z_k z_k+1 z_k+1) and len 1 (z_k .. z_k+3); inverse ones are negated.
const NZ2: usize = memory.data(32 * 32, 16);
const NZ1: usize = memory.data(32 * 32, 16);
const IZ2: usize = memory.data(32 * 32, 16);
const IZ1: usize = memory.data(32 * 32, 16);
function putTw(tab: usize, g: i32, lane: i32, z: i32): void {
  store<i32>(tab + <usize>(g * 32 + lane * 4), z);
  store<i32>(tab + <usize>(g * 32 + 16 + lane * 4), z * QINV);
}
function zetaAt(k: i32): i32 {
  return load<i32>(ZETAS + (<usize>k << 2));
}
function initTw(): void {
  for (let g = 0; g < 32; g++) {
    for (let lane = 0; lane < 4; lane++) {
      const b2 = 2 * g + (lane >> 1); // len 2: blocks of 4 coefficients
      putTw(NZ2, g, lane, zetaAt(64 + b2));
      putTw(IZ2, g, lane, -zetaAt(127 - b2));
      const b1 = 4 * g + lane; // len 1: blocks of 2 coefficients
      putTw(NZ1, g, lane, zetaAt(128 + b1));
      putTw(IZ1, g, lane, -zetaAt(255 - b1));
    }
  }
}
initTw();

function nttSimd(p: usize): void {
  let k = 0;
  for (let len = 128; len >= 4; len >>= 1) {
    for (let start = 0; start < 256; start += len << 1) {
      k++;
      const z = zetaAt(k);
      const zv = i32x4.splat(z);
      const zq = i32x4.splat(z * QINV);
      const end = start + len;
      for (let j = start; j < end; j += 4) {
        const pj = p + (<usize>j << 2);
        const pl = pj + (<usize>len << 2);
        const t = montmul32(v128.load(pl), zv, zq);
        const a = v128.load(pj);
        v128.store(pl, i32x4.sub(a, t));
        v128.store(pj, i32x4.add(a, t));
      }
    }
  }
  for (let g = 0; g < 32; g++) {
    const pp = p + (<usize>g << 5);
    let v0 = v128.load(pp);
    let v1 = v128.load(pp, 16);
    let a = i32x4.shuffle(v0, v1, 0, 1, 4, 5);
    let b = i32x4.shuffle(v0, v1, 2, 3, 6, 7);
    let t = montmul32(b, v128.load(NZ2 + <usize>(g * 32)), v128.load(NZ2 + <usize>(g * 32 + 16)));
    let x = i32x4.add(a, t);
    let y = i32x4.sub(a, t);
    v0 = i32x4.shuffle(x, y, 0, 1, 4, 5);
    v1 = i32x4.shuffle(x, y, 2, 3, 6, 7);
    a = i32x4.shuffle(v0, v1, 0, 2, 4, 6);
    b = i32x4.shuffle(v0, v1, 1, 3, 5, 7);
    t = montmul32(b, v128.load(NZ1 + <usize>(g * 32)), v128.load(NZ1 + <usize>(g * 32 + 16)));
    x = i32x4.add(a, t);
    y = i32x4.sub(a, t);
    v128.store(pp, i32x4.shuffle(x, y, 0, 4, 1, 5));
    v128.store(pp, i32x4.shuffle(x, y, 2, 6, 3, 7), 16);
  }
}

function invnttSimd(p: usize): void {
  for (let g = 0; g < 32; g++) {
    const pp = p + (<usize>g << 5);
    let v0 = v128.load(pp);
    let v1 = v128.load(pp, 16);
    // len 1
    let a = i32x4.shuffle(v0, v1, 0, 2, 4, 6);
    let b = i32x4.shuffle(v0, v1, 1, 3, 5, 7);
    let x = i32x4.add(a, b);
    let y = montmul32(i32x4.sub(a, b), v128.load(IZ1 + <usize>(g * 32)), v128.load(IZ1 + <usize>(g * 32 + 16)));
    v0 = i32x4.shuffle(x, y, 0, 4, 1, 5);
    v1 = i32x4.shuffle(x, y, 2, 6, 3, 7);
    // len 2
    a = i32x4.shuffle(v0, v1, 0, 1, 4, 5);
    b = i32x4.shuffle(v0, v1, 2, 3, 6, 7);
    x = i32x4.add(a, b);
    y = montmul32(i32x4.sub(a, b), v128.load(IZ2 + <usize>(g * 32)), v128.load(IZ2 + <usize>(g * 32 + 16)));
    v128.store(pp, i32x4.shuffle(x, y, 0, 1, 4, 5));
    v128.store(pp, i32x4.shuffle(x, y, 2, 3, 6, 7), 16);
  }
  let k = 64;
  for (let len = 4; len < 256; len <<= 1) {
    for (let start = 0; start < 256; start += len << 1) {
      k--;
      const z = -zetaAt(k);
      const zv = i32x4.splat(z);
      const zq = i32x4.splat(z * QINV);
      const end = start + len;
      for (let j = start; j < end; j += 4) {
        const pj = p + (<usize>j << 2);
        const pl = pj + (<usize>len << 2);
        const t = v128.load(pj);
        const u = v128.load(pl);
        v128.store(pj, i32x4.add(t, u));
        v128.store(pl, montmul32(i32x4.sub(t, u), zv, zq));
      }
    }
  }
  const fv = i32x4.splat(41978);
  const fq = i32x4.splat(41978 * QINV);
  for (let j = 0; j < 256; j += 4) {
    const pj = p + (<usize>j << 2);
    v128.store(pj, montmul32(v128.load(pj), fv, fq));
  }
}

// ---- arithmetic ----
// @ts-ignore: decorator
@inline function mred(a: i64): i32 {
  const t: i32 = <i32>a * QINV;
  return <i32>((a - <i64>t * Q) >> 32);
}

// @ts-ignore: decorator
@inline function reduce32(a: i32): i32 {
  const t = (a + (1 << 22)) >> 23;
  return a - t * Q;
}

// @ts-ignore: decorator
@inline function caddq(a: i32): i32 {
  return a + ((a >> 31) & Q);
}

@inline function cf(p: usize, i: i32): usize {
  return p + (<usize>i << 2);
}

/** Forward NTT, in place; output in bit-reversed order, coefficients grow by at most 8q. */
export function ntt(p: usize): void {
  if (ASC_FEATURE_SIMD) {
    nttSimd(p);
    return;
  }
  let k = 0;
  for (let len = 128; len > 0; len >>= 1) {
    for (let start = 0; start < 256; start += len << 1) {
      k++;
      const zeta = <i64>load<i32>(ZETAS + (<usize>k << 2));
      const end = start + len;
      for (let j = start; j < end; j++) {
        const pj = cf(p, j);
        const pl = pj + (<usize>len << 2);
        const t = mred(zeta * <i64>load<i32>(pl));
        const a = load<i32>(pj);
        store<i32>(pl, a - t);
        store<i32>(pj, a + t);
      }
    }
  }
}

/** Inverse NTT with multiplication by the Montgomery factor; inputs |a| < q, outputs |a| < q. */
export function invntt(p: usize): void {
  if (ASC_FEATURE_SIMD) {
    invnttSimd(p);
    return;
  }
  let k = 256;
  for (let len = 1; len < 256; len <<= 1) {
    for (let start = 0; start < 256; start += len << 1) {
      k--;
      const zeta = -<i64>load<i32>(ZETAS + (<usize>k << 2));
      const end = start + len;
      for (let j = start; j < end; j++) {
        const pj = cf(p, j);
        const pl = pj + (<usize>len << 2);
        const t = load<i32>(pj);
        const u = load<i32>(pl);
        store<i32>(pj, t + u);
        store<i32>(pl, mred(zeta * <i64>(t - u)));
      }
    }
  }
  const f: i64 = 41978; // mont^2 / 256
  for (let j = 0; j < 256; j++) store<i32>(cf(p, j), mred(f * <i64>load<i32>(cf(p, j))));
}

function polyReduce(p: usize): void {
  if (ASC_FEATURE_SIMD) {
    for (let i = 0; i < 256; i += 4) v128.store(cf(p, i), reduce32x4(v128.load(cf(p, i))));
    return;
  }
  for (let i = 0; i < 256; i++) store<i32>(cf(p, i), reduce32(load<i32>(cf(p, i))));
}
function polyCaddq(p: usize): void {
  if (ASC_FEATURE_SIMD) {
    for (let i = 0; i < 256; i += 4) v128.store(cf(p, i), caddq32x4(v128.load(cf(p, i))));
    return;
  }
  for (let i = 0; i < 256; i++) store<i32>(cf(p, i), caddq(load<i32>(cf(p, i))));
}
function polyAdd(r: usize, a: usize, b: usize): void {
  if (ASC_FEATURE_SIMD) {
    for (let i = 0; i < 256; i += 4) v128.store(cf(r, i), i32x4.add(v128.load(cf(a, i)), v128.load(cf(b, i))));
    return;
  }
  for (let i = 0; i < 256; i++) store<i32>(cf(r, i), load<i32>(cf(a, i)) + load<i32>(cf(b, i)));
}
function polySub(r: usize, a: usize, b: usize): void {
  if (ASC_FEATURE_SIMD) {
    for (let i = 0; i < 256; i += 4) v128.store(cf(r, i), i32x4.sub(v128.load(cf(a, i)), v128.load(cf(b, i))));
    return;
  }
  for (let i = 0; i < 256; i++) store<i32>(cf(r, i), load<i32>(cf(a, i)) - load<i32>(cf(b, i)));
}
function polyPointwise(r: usize, a: usize, b: usize): void {
  if (ASC_FEATURE_SIMD) {
    for (let i = 0; i < 256; i += 4) v128.store(cf(r, i), montmul32v(v128.load(cf(a, i)), v128.load(cf(b, i))));
    return;
  }
  for (let i = 0; i < 256; i++)
    store<i32>(cf(r, i), mred(<i64>load<i32>(cf(a, i)) * <i64>load<i32>(cf(b, i))));
}
function polyPointwiseAcc(r: usize, a: usize, b: usize): void {
  if (ASC_FEATURE_SIMD) {
    for (let i = 0; i < 256; i += 4) {
      const m = montmul32v(v128.load(cf(a, i)), v128.load(cf(b, i)));
      v128.store(cf(r, i), i32x4.add(v128.load(cf(r, i)), m));
    }
    return;
  }
  for (let i = 0; i < 256; i++)
    store<i32>(cf(r, i), load<i32>(cf(r, i)) + mred(<i64>load<i32>(cf(a, i)) * <i64>load<i32>(cf(b, i))));
}
/** 1 if some |coefficient| >= bound (coefficients must be reduce32-centered). Leaks only that fact. */
function polyChkNorm(p: usize, bound: i32): i32 {
  let bad = 0;
  for (let i = 0; i < 256; i++) {
    const a = load<i32>(cf(p, i));
    const t = a - ((a >> 31) & (a << 1)); // |a|
    bad |= (bound - 1 - t) >> 31;
  }
  return bad & 1;
}

// ---- sampling ----
/** Parse one SHAKE128 block of `ctx` into coefficients < q (FIPS 204 RejNTTPoly); returns the new count. */
function rejParse(ctx: usize, out: usize, n: i32): i32 {
  for (let b: usize = 0; b < 168 && n < 256; b += 3) {
    const v = <i32>(load<u32>(ctx + b) & 0x7fffff);
    if (v < Q) {
      store<i32>(cf(out, n), v);
      n++;
    }
  }
  return n;
}

/** RejNTTPoly from SHAKE128(rho || j || i). */
function rejNttPoly(out: usize, rho: usize, j: i32, i: i32): void {
  spShake128Seed2(CTX, rho, j, i);
  let n = 0;
  while (n < 256) {
    keccakF1600(CTX);
    n = rejParse(CTX, out, n);
  }
}

/** Two RejNTTPoly at once: the two SHAKE128 streams share the two-way SIMD permutation. */
function rejNttPolyPair(outA: usize, jA: i32, iA: i32, outB: usize, jB: i32, iB: i32, rho: usize): void {
  spShake128Seed2(CTX, rho, jA, iA);
  spShake128Seed2(CTX_B, rho, jB, iB);
  let na = 0;
  let nb = 0;
  while (na < 256 && nb < 256) {
    keccakF1600Pair(CTX, CTX_B);
    na = rejParse(CTX, outA, na);
    nb = rejParse(CTX_B, outB, nb);
  }
  while (na < 256) {
    keccakF1600(CTX);
    na = rejParse(CTX, outA, na);
  }
  while (nb < 256) {
    keccakF1600(CTX_B);
    nb = rejParse(CTX_B, outB, nb);
  }
}

// Expansions of the last key are kept (all public): A for the last rho, and for verification tr = H(pk)
// and NTT(t1 * 2^d) for the last public key. Repeated signing or verifying with one key skips them.
const MAT_RHO: usize = memory.data(32, 16);
let matLevel: i32 = 0; // 0: MAT holds no complete expansion
let curLevel: i32 = 0;
const PK_C: usize = memory.data(2592, 16);
const TR_C: usize = memory.data(64, 16);
const T1_C: usize = memory.data(8 * 1024, 16);
let pkLevel: i32 = 0;

function sameBytes(a: usize, b: usize, n: usize): bool {
  let d: u64 = 0;
  let i: usize = 0;
  for (; i + 8 <= n; i += 8) d |= load<u64>(a + i) ^ load<u64>(b + i);
  for (; i < n; i++) d |= <u64>(load<u8>(a + i) ^ load<u8>(b + i));
  return d == 0;
}

/** Expand the k x l matrix A (NTT domain) from rho into MAT (unless it already holds it). */
function expandA(rho: usize): void {
  if (matLevel == curLevel && sameBytes(rho, MAT_RHO, 32)) return;
  matLevel = 0;
  const n = K * L;
  let t = 0;
  for (; t + 1 < n; t += 2) {
    const u = t + 1;
    rejNttPolyPair(MAT + <usize>t * PB, t % L, t / L, MAT + <usize>u * PB, u % L, u / L, rho);
  }
  if (t < n) rejNttPoly(MAT + <usize>t * PB, rho, t % L, t / L);
  memory.copy(MAT_RHO, rho, 32);
  matLevel = curLevel;
}

/** RejBoundedPoly: coefficients in [-eta, eta] from SHAKE256(rho' || nonce16). */
function rejBoundedPoly(out: usize, rhop: usize, nonce: i32): void {
  spInit(CTX, RATE_SHAKE256, DS_SHAKE);
  spAbsorb(CTX, rhop, 64);
  spAbsorbByte(CTX, nonce & 0xff);
  spAbsorbByte(CTX, nonce >> 8);
  spFinal(CTX);
  let n = 0;
  while (true) {
    for (let b: usize = 0; b < 136 && n < 256; b++) {
      const z = <i32>load<u8>(CTX + b);
      const z0 = z & 15;
      const z1 = z >> 4;
      if (ETA == 2) {
        if (z0 < 15) {
          store<i32>(cf(out, n), 2 - (z0 - ((205 * z0) >> 10) * 5));
          n++;
        }
        if (z1 < 15 && n < 256) {
          store<i32>(cf(out, n), 2 - (z1 - ((205 * z1) >> 10) * 5));
          n++;
        }
      } else {
        if (z0 < 9) {
          store<i32>(cf(out, n), 4 - z0);
          n++;
        }
        if (z1 < 9 && n < 256) {
          store<i32>(cf(out, n), 4 - z1);
          n++;
        }
      }
    }
    if (n >= 256) break;
    keccakF1600(CTX);
  }
}

const BUF_B: usize = memory.data(1024, 16);

function maskStart(ctx: usize, nonce: i32): void {
  spInit(ctx, RATE_SHAKE256, DS_SHAKE);
  spAbsorb(ctx, RHOPP, 64);
  spAbsorbByte(ctx, nonce & 0xff);
  spAbsorbByte(ctx, (nonce >> 8) & 0xff);
}

/** ExpandMask: y = gamma1 - unpack(SHAKE256(rho'' || nonce16)), for y[0..l), two streams at a time. */
function expandMask(kappa: i32): void {
  const nbytes = <usize>(32 * ZBITS);
  let r = 0;
  for (; r + 1 < L; r += 2) {
    maskStart(CTX, kappa + r);
    maskStart(CTX_B, kappa + r + 1);
    spPad(CTX);
    spPad(CTX_B);
    spSqueezePair(CTX, CTX_B, BUF, BUF_B, nbytes);
    unpackI32Off(BUF, Y + <usize>r * PB, ZBITS, GAMMA1);
    unpackI32Off(BUF_B, Y + <usize>(r + 1) * PB, ZBITS, GAMMA1);
  }
  if (r < L) {
    maskStart(CTX, kappa + r);
    spFinal(CTX);
    spSqueeze(CTX, BUF, nbytes);
    unpackI32Off(BUF, Y + <usize>r * PB, ZBITS, GAMMA1);
  }
}

/** SampleInBall(c~) into CP. */
function sampleInBall(ct: usize): void {
  spInit(CTX, RATE_SHAKE256, DS_SHAKE);
  spAbsorb(CTX, ct, <usize>CTB);
  spFinal(CTX);
  let signs: u64 = 0;
  for (let i = 0; i < 8; i++) signs |= <u64>spSqueezeByte(CTX) << (<u64>(8 * i));
  memory.fill(CP, 0, PB);
  for (let i = 256 - TAU; i < 256; i++) {
    let b: i32;
    do {
      b = <i32>spSqueezeByte(CTX);
    } while (b > i);
    store<i32>(cf(CP, i), load<i32>(cf(CP, b)));
    store<i32>(cf(CP, b), 1 - 2 * <i32>(signs & 1));
    signs >>= 1;
  }
}

// ---- rounding ----
/** Decompose a in [0, q): returns a1, and a0 (centered) in DEC_A0. */
let DEC_A0: i32 = 0;
// @ts-ignore: decorator
@inline function decompose(a: i32): i32 {
  let a1 = (a + 127) >> 7;
  if (GAMMA2 == (Q - 1) / 32) {
    a1 = (a1 * 1025 + (1 << 21)) >> 22;
    a1 &= 15;
  } else {
    a1 = (a1 * 11275 + (1 << 23)) >> 24;
    a1 ^= ((43 - a1) >> 31) & a1;
  }
  let a0 = a - a1 * 2 * GAMMA2;
  a0 -= (((Q - 1) / 2 - a0) >> 31) & Q;
  DEC_A0 = a0;
  return a1;
}

// ---- matrix-vector ----
/** out[i] = sum_j MAT[i][j] o v[j] (Montgomery), i < K. */
function matVec(out: usize, v: usize): void {
  for (let i = 0; i < K; i++) {
    const o = out + <usize>i * PB;
    polyPointwise(o, MAT + <usize>(i * L) * PB, v);
    for (let j = 1; j < L; j++) polyPointwiseAcc(o, MAT + <usize>(i * L + j) * PB, v + <usize>j * PB);
  }
}

// ---- key generation ----
/** KeyGen from the 32-byte seed in SEED; writes PK and SK. */
export function dsaKeygen(level: i32): i32 {
  if (!dsaSetParams(level)) return -1;
  memory.copy(HB, SEED, 32);
  store<u8>(HB + 32, <u8>K);
  store<u8>(HB + 33, <u8>L);
  spHash(CTX, RATE_SHAKE256, DS_SHAKE, HB, 34, RHO, 128); // rho || rho' || K
  expandA(RHO);
  for (let r = 0; r < L; r++) rejBoundedPoly(S1 + <usize>r * PB, RHOP, r);
  for (let r = 0; r < K; r++) rejBoundedPoly(S2 + <usize>r * PB, RHOP, r + L);
  // s1hat in Y
  memory.copy(Y, S1, <usize>L * PB);
  for (let r = 0; r < L; r++) ntt(Y + <usize>r * PB);
  matVec(T1, Y);
  for (let i = 0; i < K; i++) {
    const t = T1 + <usize>i * PB;
    const t0 = T0 + <usize>i * PB;
    polyReduce(t);
    invntt(t);
    polyAdd(t, t, S2 + <usize>i * PB);
    polyReduce(t);
    polyCaddq(t);
    // Power2Round
    for (let c = 0; c < 256; c++) {
      const a = load<i32>(cf(t, c));
      const a1 = (a + (1 << (D - 1)) - 1) >> D;
      store<i32>(cf(t0, c), a - (a1 << D));
      store<i32>(cf(t, c), a1);
    }
  }
  // pk = rho || t1 (10 bits)
  memory.copy(PK, RHO, 32);
  for (let i = 0; i < K; i++) packI32(T1 + <usize>i * PB, PK + 32 + <usize>i * 320, 10);
  // sk = rho || K || tr || s1 || s2 || t0
  memory.copy(SK, RHO, 32);
  memory.copy(SK + 32, KEY, 32);
  spHash(CTX, RATE_SHAKE256, DS_SHAKE, PK, <usize>DSA_PK_BYTES, SK + 64, 64);
  let o = SK + 128;
  const eb = <usize>(32 * ETABITS);
  for (let r = 0; r < L; r++) {
    packI32Off(S1 + <usize>r * PB, o, ETABITS, ETA);
    o += eb;
  }
  for (let r = 0; r < K; r++) {
    packI32Off(S2 + <usize>r * PB, o, ETABITS, ETA);
    o += eb;
  }
  for (let r = 0; r < K; r++) {
    packI32Off(T0 + <usize>r * PB, o, 13, 1 << 12);
    o += 416;
  }
  memory.fill(HB, 0, 34);
  memory.fill(RHOP, 0, 96);
  memory.fill(S1, 0, <usize>L * PB);
  memory.fill(S2, 0, <usize>K * PB);
  memory.fill(T0, 0, <usize>K * PB);
  memory.fill(Y, 0, <usize>L * PB);
  memory.fill(CTX, 0, 200);
  return 0;
}

// ---- message representative ----
/** Start mu = H(tr || M') where tr is the 64 bytes at `tr`; the caller then streams M' with muAbsorb. */
function muStart(tr: usize): void {
  spInit(CTX_MU, RATE_SHAKE256, DS_SHAKE);
  spAbsorb(CTX_MU, tr, 64);
}

/** Sign step 1: with SK loaded, begin mu; the host then absorbs 0 || |ctx| || ctx || M. */
export function dsaSignBegin(level: i32): i32 {
  if (!dsaSetParams(level)) return -1;
  muStart(SK + 64);
  return 0;
}

/** Verify step 1: with PK loaded, compute tr = H(pk) and begin mu. */
export function dsaVerifyBegin(level: i32): i32 {
  if (!dsaSetParams(level)) return -1;
  if (pkLevel != level || !sameBytes(PK, PK_C, <usize>DSA_PK_BYTES)) {
    pkLevel = 0;
    spHash(CTX, RATE_SHAKE256, DS_SHAKE, PK, <usize>DSA_PK_BYTES, TR_C, 64);
    for (let i = 0; i < K; i++) {
      const t = T1_C + <usize>i * PB;
      unpackI32(PK + 32 + <usize>i * 320, t, 10);
      for (let c = 0; c < 256; c++) store<i32>(cf(t, c), load<i32>(cf(t, c)) << D);
      ntt(t);
    }
    memory.copy(PK_C, PK, <usize>DSA_PK_BYTES);
    pkLevel = level;
  }
  muStart(TR_C);
  return 0;
}

function muFinish(): void {
  spFinal(CTX_MU);
  spSqueeze(CTX_MU, MU, 64);
}

/** Nonzero if some coefficient lies outside [-eta, eta] (no branch on the values). */
function etaOutOfRange(p: usize): i32 {
  let bad = 0;
  for (let i = 0; i < 256; i++) {
    const a = load<i32>(cf(p, i));
    bad |= (ETA - a) | (a + ETA);
  }
  return bad >>> 31;
}

/**
 * Sign step 2: with RND (32 bytes, zero for deterministic) loaded, write the signature to SIG.
 * Returns 0, or 1 if the secret key's s1/s2 encoding is out of range.
 */
export function dsaSignEnd(level: i32): i32 {
  if (!dsaSetParams(level)) return -1;
  muFinish();
  // decode sk
  const eb = <usize>(32 * ETABITS);
  let o = SK + 128;
  let bad = 0;
  for (let r = 0; r < L; r++) {
    unpackI32Off(o, S1 + <usize>r * PB, ETABITS, ETA);
    bad |= etaOutOfRange(S1 + <usize>r * PB);
    ntt(S1 + <usize>r * PB);
    o += eb;
  }
  for (let r = 0; r < K; r++) {
    unpackI32Off(o, S2 + <usize>r * PB, ETABITS, ETA);
    bad |= etaOutOfRange(S2 + <usize>r * PB);
    ntt(S2 + <usize>r * PB);
    o += eb;
  }
  if (bad != 0) {
    // not a valid secret key encoding (s1, s2 must lie in [-eta, eta]); like OpenSSL, refuse it
    memory.fill(S1, 0, <usize>L * PB);
    memory.fill(S2, 0, <usize>K * PB);
    return 1;
  }
  for (let r = 0; r < K; r++) {
    unpackI32Off(o, T0 + <usize>r * PB, 13, 1 << 12);
    ntt(T0 + <usize>r * PB);
    o += 416;
  }
  expandA(SK);
  // rho'' = H(K || rnd || mu, 64)
  memory.copy(HB, SK + 32, 32);
  memory.copy(HB + 32, RND, 32);
  memory.copy(HB + 64, MU, 64);
  spHash(CTX, RATE_SHAKE256, DS_SHAKE, HB, 128, RHOPP, 64);
  memory.fill(HB, 0, 128);

  const w1b = <usize>(32 * W1BITS);
  const zb = <usize>(32 * ZBITS);
  let kappa = 0;
  while (true) {
    expandMask(kappa);
    kappa += L;
    memory.copy(Z, Y, <usize>L * PB);
    for (let r = 0; r < L; r++) ntt(Z + <usize>r * PB);
    matVec(W1, Z);
    // w = invNTT(A y); decompose; c~ = H(mu || w1Encode(w1))
    spInit(CTX_MU, RATE_SHAKE256, DS_SHAKE);
    spAbsorb(CTX_MU, MU, 64);
    for (let i = 0; i < K; i++) {
      const w = W1 + <usize>i * PB;
      const w0 = W0 + <usize>i * PB;
      polyReduce(w);
      invntt(w);
      polyCaddq(w);
      for (let c = 0; c < 256; c++) {
        const a1 = decompose(load<i32>(cf(w, c)));
        store<i32>(cf(w0, c), DEC_A0);
        store<i32>(cf(w, c), a1);
      }
      packI32(w, W1P, W1BITS);
      spAbsorb(CTX_MU, W1P, w1b);
    }
    spFinal(CTX_MU);
    spSqueeze(CTX_MU, CT, <usize>CTB);
    sampleInBall(CT);
    ntt(CP);
    // z = y + c s1
    let rej = 0;
    for (let r = 0; r < L; r++) {
      const z = Z + <usize>r * PB;
      polyPointwise(z, CP, S1 + <usize>r * PB);
      invntt(z);
      polyAdd(z, z, Y + <usize>r * PB);
      polyReduce(z);
      rej |= polyChkNorm(z, GAMMA1 - BETA);
    }
    if (rej) continue;
    // w0 - c s2
    for (let i = 0; i < K; i++) {
      const h = HV + <usize>i * PB;
      const w0 = W0 + <usize>i * PB;
      polyPointwise(h, CP, S2 + <usize>i * PB);
      invntt(h);
      polySub(w0, w0, h);
      polyReduce(w0);
      rej |= polyChkNorm(w0, GAMMA2 - BETA);
    }
    if (rej) continue;
    // c t0, hints
    let nh = 0;
    for (let i = 0; i < K; i++) {
      const h = HV + <usize>i * PB;
      const w0 = W0 + <usize>i * PB;
      const w1 = W1 + <usize>i * PB;
      polyPointwise(h, CP, T0 + <usize>i * PB);
      invntt(h);
      polyReduce(h);
      rej |= polyChkNorm(h, GAMMA2);
      polyAdd(w0, w0, h);
      for (let c = 0; c < 256; c++) {
        const a0 = load<i32>(cf(w0, c));
        const a1 = load<i32>(cf(w1, c));
        // MakeHint: 1 iff a0 > gamma2 or a0 < -gamma2 or (a0 == -gamma2 and a1 != 0)
        const gt = (GAMMA2 - a0) >>> 31;
        const lt = (a0 + GAMMA2) >>> 31;
        const eq = <i32>(a0 == -GAMMA2) & <i32>(a1 != 0);
        const hbit = gt | lt | eq;
        store<i32>(cf(h, c), hbit);
        nh += hbit;
      }
    }
    if (rej) continue;
    if (nh > OMEGA) continue;
    // encode signature
    memory.copy(SIG, CT, <usize>CTB);
    let so = SIG + <usize>CTB;
    for (let r = 0; r < L; r++) {
      packI32Off(Z + <usize>r * PB, so, ZBITS, GAMMA1);
      so += zb;
    }
    memory.fill(so, 0, <usize>(OMEGA + K));
    let idx = 0;
    for (let i = 0; i < K; i++) {
      const h = HV + <usize>i * PB;
      for (let c = 0; c < 256; c++) {
        if (load<i32>(cf(h, c)) != 0) {
          store<u8>(so + <usize>idx, <u8>c);
          idx++;
        }
      }
      store<u8>(so + <usize>(OMEGA + i), <u8>idx);
    }
    break;
  }
  // wipe secrets
  memory.fill(S1, 0, <usize>L * PB);
  memory.fill(S2, 0, <usize>K * PB);
  memory.fill(T0, 0, <usize>K * PB);
  memory.fill(Y, 0, <usize>L * PB);
  memory.fill(W0, 0, <usize>K * PB);
  memory.fill(RHOPP, 0, 64);
  memory.fill(BUF, 0, 1024);
  memory.fill(BUF_B, 0, 1024);
  memory.fill(CTX, 0, 200);
  memory.fill(CTX_B, 0, 200);
  return 0;
}

/** Verify step 2: with SIG (sigLen bytes) loaded; 1 if valid, 0 if not. */
export function dsaVerifyEnd(level: i32, sigLen: i32): i32 {
  if (!dsaSetParams(level)) return 0;
  muFinish();
  if (sigLen != DSA_SIG_BYTES) return 0;
  // hints: HintBitUnpack with every FIPS 204 check
  const hp = SIG + <usize>(CTB + L * 32 * ZBITS);
  memory.fill(HV, 0, <usize>K * PB);
  let idx = 0;
  for (let i = 0; i < K; i++) {
    const end = <i32>load<u8>(hp + <usize>(OMEGA + i));
    if (end < idx || end > OMEGA) return 0;
    const first = idx;
    while (idx < end) {
      const pos = <i32>load<u8>(hp + <usize>idx);
      if (idx > first && <i32>load<u8>(hp + <usize>(idx - 1)) >= pos) return 0;
      store<i32>(cf(HV + <usize>i * PB, pos), 1);
      idx++;
    }
  }
  for (let i = idx; i < OMEGA; i++) if (load<u8>(hp + <usize>i) != 0) return 0;
  // z, with the norm check
  const zb = <usize>(32 * ZBITS);
  for (let r = 0; r < L; r++) {
    const z = Z + <usize>r * PB;
    unpackI32Off(SIG + <usize>CTB + <usize>r * zb, z, ZBITS, GAMMA1);
    if (polyChkNorm(z, GAMMA1 - BETA)) return 0;
    ntt(z);
  }
  expandA(PK);
  sampleInBall(SIG);
  ntt(CP);
  // w' = A z - c t1 2^d
  matVec(W1, Z);
  const w1b = <usize>(32 * W1BITS);
  spInit(CTX_MU, RATE_SHAKE256, DS_SHAKE);
  spAbsorb(CTX_MU, MU, 64);
  for (let i = 0; i < K; i++) {
    const t = T1 + <usize>i * PB;
    polyPointwise(t, CP, T1_C + <usize>i * PB);
    const w = W1 + <usize>i * PB;
    polySub(w, w, t);
    polyReduce(w);
    invntt(w);
    polyCaddq(w);
    const h = HV + <usize>i * PB;
    for (let c = 0; c < 256; c++) {
      let a1 = decompose(load<i32>(cf(w, c)));
      if (load<i32>(cf(h, c)) != 0) {
        if (GAMMA2 == (Q - 1) / 32) {
          a1 = DEC_A0 > 0 ? (a1 + 1) & 15 : (a1 - 1) & 15;
        } else {
          if (DEC_A0 > 0) a1 = a1 == 43 ? 0 : a1 + 1;
          else a1 = a1 == 0 ? 43 : a1 - 1;
        }
      }
      store<i32>(cf(w, c), a1);
    }
    packI32(w, W1P, W1BITS);
    spAbsorb(CTX_MU, W1P, w1b);
  }
  spFinal(CTX_MU);
  spSqueeze(CTX_MU, CT2, <usize>CTB);
  let diff = 0;
  for (let i = 0; i < CTB; i++) diff |= <i32>(load<u8>(SIG + <usize>i) ^ load<u8>(CT2 + <usize>i));
  return diff == 0 ? 1 : 0;
}
