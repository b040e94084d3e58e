// ML-KEM-512/768/1024 (FIPS 203): key generation from (d, z), encapsulation with the modulus check,
// decapsulation with the hash check and implicit rejection. Polynomials are 256 i16 (512 bytes);
// NTT-domain products are Montgomery (R = 2^16).
import { keccakF1600 } from "./keccakf";
import {
  spShake128Seed2,
  spInit,
  spAbsorb,
  spAbsorbByte,
  spFinal,
  spPad,
  spSqueeze,
  spHash,
  keccakF1600Pair,
  spSqueezePair,
  RATE_SHAKE128,
  RATE_SHAKE256,
  RATE_SHA3_256,
  RATE_SHA3_512,
  DS_SHAKE,
  DS_SHA3,
} from "./sponge";
import { CTX, CTX_B, PK, SK, SIG, SEED, RND, SS, SCRATCH } from "./mem";
import { fqmul16, fqmulc16, barrett16 } from "./simd16";

const Q: i32 = 3329;
const QINV: i32 = -3327; // q^-1 mod 2^16, signed
const PB: usize = 512;

let K: i32 = 0;
let ETA1: i32 = 0;
let DU: i32 = 0;
let DV: i32 = 0;
let EK_BYTES: i32 = 0;
let CT_BYTES: i32 = 0;

function setParams(k: i32): bool {
  if (k == 2) {
    ETA1 = 3; DU = 10; DV = 4;
  } else if (k == 3) {
    ETA1 = 2; DU = 10; DV = 4;
  } else if (k == 4) {
    ETA1 = 2; DU = 11; DV = 5;
  } else return false;
  K = k;
  EK_BYTES = 384 * k + 32;
  CT_BYTES = 32 * (DU * k + DV);
  return true;
}

const MAT: usize = memory.data(16 * 512, 16);
const SV: usize = memory.data(4 * 512, 16); // s (NTT) / r (NTT)
const EV: usize = memory.data(4 * 512, 16); // e / e1
const TV: usize = memory.data(4 * 512, 16); // t (NTT)
const UV: usize = memory.data(4 * 512, 16); // u
const VP: usize = memory.data(512, 16); // v
const MP: usize = memory.data(512, 16); // message poly / scratch
const E2: usize = memory.data(512, 16);
const CT2: usize = memory.data(1600, 16); // re-encryption
const PRF: usize = memory.data(192, 16);
// scratch bytes
const RHO: usize = SCRATCH; // 32 (rho), then sigma at +32
const SIGMA: usize = SCRATCH + 32;
const HB: usize = SCRATCH + 64; // 64 hash input
const KR: usize = SCRATCH + 128; // 64: K || r
const MB: usize = SCRATCH + 192; // 32: m'

const ZETAS: usize = memory.data(128 * 2, 16);

function brv7(x: i32): i32 {
  let r = 0;
  for (let i = 0; i < 7; i++) r |= ((x >> i) & 1) << (6 - i);
  return r;
}
function initZetas(): void {
  for (let i = 0; i < 128; i++) {
    let z: i32 = 1;
    const e = brv7(i);
    for (let j = 0; j < e; j++) z = (z * 17) % Q;
    z = (z << 16) % Q; // Montgomery form
    if (z > Q / 2) z -= Q;
    store<i16>(ZETAS + (<usize>i << 1), <i16>z);
  }
}
initZetas();

// Twiddle vectors for the two innermost layers (len 4 and len 2) in the SIMD build: for each group of
// 16 coefficients, the zetas lane by lane and their products with q^-1; forward and inverse.
const NZ4: usize = memory.data(16 * 32, 16);
const NZ2: usize = memory.data(16 * 32, 16);
const IZ4: usize = memory.data(16 * 32, 16);
const IZ2: usize = memory.data(16 * 32, 16);
function putTw(tab: usize, g: i32, lane: i32, z: i32): void {
  store<i16>(tab + <usize>(g * 32 + lane * 2), <i16>z);
  store<i16>(tab + <usize>(g * 32 + 16 + lane * 2), <i16>(z * QINV));
}
function initTw(): void {
  for (let g = 0; g < 16; g++) {
    for (let lane = 0; lane < 8; lane++) {
      // len 4: lanes 0-3 belong to block 2g, lanes 4-7 to block 2g+1
      const b4 = 2 * g + (lane >> 2);
      putTw(NZ4, g, lane, <i32>load<i16>(ZETAS + (<usize>(32 + b4) << 1)));
      putTw(IZ4, g, lane, <i32>load<i16>(ZETAS + (<usize>(63 - b4) << 1)));
      // len 2: lanes (0,1) block 4g, (2,3) 4g+1, ...
      const b2 = 4 * g + (lane >> 1);
      putTw(NZ2, g, lane, <i32>load<i16>(ZETAS + (<usize>(64 + b2) << 1)));
      putTw(IZ2, g, lane, <i32>load<i16>(ZETAS + (<usize>(127 - b2) << 1)));
    }
  }
}
initTw();

// @ts-ignore: decorator
@inline function mred(a: i32): i16 {
  const t = <i16>(a * QINV);
  return <i16>((a - <i32>t * Q) >> 16);
}
// @ts-ignore: decorator
@inline function fqmul(a: i32, b: i32): i16 {
  return mred(a * b);
}
// @ts-ignore: decorator
@inline function barrett(a: i32): i16 {
  const v: i32 = 20159; // ((1 << 26) + q / 2) / q
  const t = (v * a + (1 << 25)) >> 26;
  return <i16>(a - t * Q);
}
@inline function cf(p: usize, i: i32): usize {
  return p + (<usize>i << 1);
}
@inline function ld(p: usize, i: i32): i32 {
  return <i32>load<i16>(p + (<usize>i << 1));
}
@inline function st(p: usize, i: i32, v: i32): void {
  store<i16>(p + (<usize>i << 1), <i16>v);
}

function ntt(p: usize): void {
  if (ASC_FEATURE_SIMD) {
    nttSimd(p);
    return;
  }
  let k = 1;
  for (let len = 128; len >= 2; len >>= 1) {
    for (let start = 0; start < 256; start += len << 1) {
      const zeta = <i32>load<i16>(ZETAS + (<usize>k << 1));
      k++;
      const end = start + len;
      if (ASC_FEATURE_SIMD && len >= 8) {
        const zv = i16x8.splat(<i16>zeta);
        const zq = i16x8.splat(<i16>(zeta * QINV));
        for (let j = start; j < end; j += 8) {
          const pj = cf(p, j);
          const pl = pj + (<usize>len << 1);
          const t = fqmulc16(v128.load(pl), zv, zq);
          const a = v128.load(pj);
          v128.store(pl, i16x8.sub(a, t));
          v128.store(pj, i16x8.add(a, t));
        }
        continue;
      }
      for (let j = start; j < end; j++) {
        const t = fqmul(zeta, ld(p, j + len));
        const a = ld(p, j);
        st(p, j + len, a - t);
        st(p, j, a + t);
      }
    }
  }
  polyReduce(p);
}

/**
 * Inverse NTT (with the Montgomery factor). Inputs |a| <= (q - 1) / 2 (Barrett-reduced). The sums are
 * reduced only after the len-8 and len-64 layers: coefficients stay below 8q, which fits i16, and every
 * Montgomery product input stays below 2^15 q.
 */
function invntt(p: usize): void {
  if (ASC_FEATURE_SIMD) {
    invnttSimd(p);
    return;
  }
  let k = 127;
  for (let len = 2; len <= 128; len <<= 1) {
    for (let start = 0; start < 256; start += len << 1) {
      const zeta = <i32>load<i16>(ZETAS + (<usize>k << 1));
      k--;
      const end = start + len;
      if (ASC_FEATURE_SIMD && len >= 8) {
        const zv = i16x8.splat(<i16>zeta);
        const zq = i16x8.splat(<i16>(zeta * QINV));
        for (let j = start; j < end; j += 8) {
          const pj = cf(p, j);
          const pl = pj + (<usize>len << 1);
          const t = v128.load(pj);
          const u = v128.load(pl);
          v128.store(pj, barrett16(i16x8.add(t, u)));
          v128.store(pl, fqmulc16(i16x8.sub(u, t), zv, zq));
        }
        continue;
      }
      const red = len == 8 || len == 64;
      for (let j = start; j < end; j++) {
        const t = ld(p, j);
        const u = ld(p, j + len);
        st(p, j, red ? <i32>barrett(t + u) : t + u);
        st(p, j + len, fqmul(zeta, u - t));
      }
    }
  }
  const f: i32 = 1441; // mont^2 / 128
  if (ASC_FEATURE_SIMD) {
    const fv = i16x8.splat(<i16>f);
    const fq = i16x8.splat(<i16>(f * QINV));
    for (let j = 0; j < 256; j += 8) v128.store(cf(p, j), fqmulc16(v128.load(cf(p, j)), fv, fq));
    return;
  }
  for (let j = 0; j < 256; j++) st(p, j, fqmul(ld(p, j), f));
}

function nttSimd(p: usize): void {
  let k = 1;
  for (let len = 128; len >= 8; len >>= 1) {
    for (let start = 0; start < 256; start += len << 1) {
      const zeta = <i32>load<i16>(ZETAS + (<usize>k << 1));
      k++;
      const zv = i16x8.splat(<i16>zeta);
      const zq = i16x8.splat(<i16>(zeta * QINV));
      const end = start + len;
      for (let j = start; j < end; j += 8) {
        const pj = cf(p, j);
        const pl = pj + (<usize>len << 1);
        const t = fqmulc16(v128.load(pl), zv, zq);
        const a = v128.load(pj);
        v128.store(pl, i16x8.sub(a, t));
        v128.store(pj, i16x8.add(a, t));
      }
    }
  }
  for (let g = 0; g < 16; g++) {
    const pp = cf(p, g * 16);
    let v0 = v128.load(pp);
    let v1 = v128.load(pp, 16);
    // len 4
    let a = i16x8.shuffle(v0, v1, 0, 1, 2, 3, 8, 9, 10, 11);
    let b = i16x8.shuffle(v0, v1, 4, 5, 6, 7, 12, 13, 14, 15);
    let t = fqmulc16(b, v128.load(NZ4 + <usize>(g * 32)), v128.load(NZ4 + <usize>(g * 32 + 16)));
    let x = i16x8.add(a, t);
    let y = i16x8.sub(a, t);
    // back to memory order: v0 = x0-3 y0-3, v1 = x4-7 y4-7
    v0 = i16x8.shuffle(x, y, 0, 1, 2, 3, 8, 9, 10, 11);
    v1 = i16x8.shuffle(x, y, 4, 5, 6, 7, 12, 13, 14, 15);
    // len 2
    a = i16x8.shuffle(v0, v1, 0, 1, 4, 5, 8, 9, 12, 13);
    b = i16x8.shuffle(v0, v1, 2, 3, 6, 7, 10, 11, 14, 15);
    t = fqmulc16(b, v128.load(NZ2 + <usize>(g * 32)), v128.load(NZ2 + <usize>(g * 32 + 16)));
    x = barrett16(i16x8.add(a, t));
    y = barrett16(i16x8.sub(a, t));
    v128.store(pp, i16x8.shuffle(x, y, 0, 1, 8, 9, 2, 3, 10, 11));
    v128.store(pp, i16x8.shuffle(x, y, 4, 5, 12, 13, 6, 7, 14, 15), 16);
  }
}

function invnttSimd(p: usize): void {
  for (let g = 0; g < 16; g++) {
    const pp = cf(p, g * 16);
    let v0 = v128.load(pp);
    let v1 = v128.load(pp, 16);
    // len 2
    let a = i16x8.shuffle(v0, v1, 0, 1, 4, 5, 8, 9, 12, 13);
    let b = i16x8.shuffle(v0, v1, 2, 3, 6, 7, 10, 11, 14, 15);
    let x = i16x8.add(a, b);
    let y = fqmulc16(i16x8.sub(b, a), v128.load(IZ2 + <usize>(g * 32)), v128.load(IZ2 + <usize>(g * 32 + 16)));
    v0 = i16x8.shuffle(x, y, 0, 1, 8, 9, 2, 3, 10, 11);
    v1 = i16x8.shuffle(x, y, 4, 5, 12, 13, 6, 7, 14, 15);
    // len 4
    a = i16x8.shuffle(v0, v1, 0, 1, 2, 3, 8, 9, 10, 11);
    b = i16x8.shuffle(v0, v1, 4, 5, 6, 7, 12, 13, 14, 15);
    x = i16x8.add(a, b);
    y = fqmulc16(i16x8.sub(b, a), v128.load(IZ4 + <usize>(g * 32)), v128.load(IZ4 + <usize>(g * 32 + 16)));
    v128.store(pp, i16x8.shuffle(x, y, 0, 1, 2, 3, 8, 9, 10, 11));
    v128.store(pp, i16x8.shuffle(x, y, 4, 5, 6, 7, 12, 13, 14, 15), 16);
  }
  let k = 31;
  for (let len = 8; len <= 128; len <<= 1) {
    for (let start = 0; start < 256; start += len << 1) {
      const zeta = <i32>load<i16>(ZETAS + (<usize>k << 1));
      k--;
      const zv = i16x8.splat(<i16>zeta);
      const zq = i16x8.splat(<i16>(zeta * QINV));
      const end = start + len;
      const red = len == 8 || len == 64;
      for (let j = start; j < end; j += 8) {
        const pj = cf(p, j);
        const pl = pj + (<usize>len << 1);
        const t = v128.load(pj);
        const u = v128.load(pl);
        const sum = i16x8.add(t, u);
        v128.store(pj, red ? barrett16(sum) : sum);
        v128.store(pl, fqmulc16(i16x8.sub(u, t), zv, zq));
      }
    }
  }
  const fv = i16x8.splat(1441);
  const fq = i16x8.splat(<i16>(1441 * QINV));
  for (let j = 0; j < 256; j += 8) v128.store(cf(p, j), fqmulc16(v128.load(cf(p, j)), fv, fq));
}

/** Basemul twiddles per coefficient pair: +zeta, -zeta for each group of four (SIMD build). */
const BZ: usize = memory.data(128 * 2, 16);
function initBz(): void {
  for (let i = 0; i < 64; i++) {
    const z = load<i16>(ZETAS + (<usize>(64 + i) << 1));
    store<i16>(BZ + (<usize>(2 * i) << 1), z);
    store<i16>(BZ + (<usize>(2 * i + 1) << 1), -z);
  }
}
initBz();

/** r = a o b in NTT domain (Montgomery), or r += a o b when acc. */
function basemul(r: usize, a: usize, b: usize, acc: bool): void {
  if (ASC_FEATURE_SIMD) {
    // 16 coefficients (8 pairs) per step: deinterleave even/odd, multiply, interleave back
    for (let i = 0; i < 256; i += 16) {
      const x0 = v128.load(cf(a, i));
      const x1 = v128.load(cf(a, i + 8));
      const y0 = v128.load(cf(b, i));
      const y1 = v128.load(cf(b, i + 8));
      const ae = i16x8.shuffle(x0, x1, 0, 2, 4, 6, 8, 10, 12, 14);
      const ao = i16x8.shuffle(x0, x1, 1, 3, 5, 7, 9, 11, 13, 15);
      const be = i16x8.shuffle(y0, y1, 0, 2, 4, 6, 8, 10, 12, 14);
      const bo = i16x8.shuffle(y0, y1, 1, 3, 5, 7, 9, 11, 13, 15);
      const z = v128.load(BZ + (<usize>(i >> 1) << 1));
      const re = i16x8.add(fqmul16(fqmul16(ao, bo), z), fqmul16(ae, be));
      const ro = i16x8.add(fqmul16(ae, bo), fqmul16(ao, be));
      let r0 = i16x8.shuffle(re, ro, 0, 8, 1, 9, 2, 10, 3, 11);
      let r1 = i16x8.shuffle(re, ro, 4, 12, 5, 13, 6, 14, 7, 15);
      if (acc) {
        r0 = i16x8.add(r0, v128.load(cf(r, i)));
        r1 = i16x8.add(r1, v128.load(cf(r, i + 8)));
      }
      v128.store(cf(r, i), r0);
      v128.store(cf(r, i + 8), r1);
    }
    return;
  }
  for (let i = 0; i < 64; i++) {
    const zeta = <i32>load<i16>(ZETAS + (<usize>(64 + i) << 1));
    for (let h = 0; h < 2; h++) {
      const z = h == 0 ? zeta : -zeta;
      const o = 4 * i + 2 * h;
      const a0 = ld(a, o);
      const a1 = ld(a, o + 1);
      const b0 = ld(b, o);
      const b1 = ld(b, o + 1);
      let r0 = <i32>fqmul(<i32>fqmul(a1, b1), z) + <i32>fqmul(a0, b0);
      let r1 = <i32>fqmul(a0, b1) + <i32>fqmul(a1, b0);
      if (acc) {
        r0 += ld(r, o);
        r1 += ld(r, o + 1);
      }
      st(r, o, r0);
      st(r, o + 1, r1);
    }
  }
}

function polyReduce(p: usize): void {
  if (ASC_FEATURE_SIMD) {
    for (let j = 0; j < 256; j += 8) v128.store(cf(p, j), barrett16(v128.load(cf(p, j))));
    return;
  }
  for (let j = 0; j < 256; j++) st(p, j, barrett(ld(p, j)));
}
function polyToMont(p: usize): void {
  const f: i32 = 1353; // 2^32 mod q
  if (ASC_FEATURE_SIMD) {
    const fv = i16x8.splat(<i16>f);
    const fq = i16x8.splat(<i16>(f * QINV));
    for (let j = 0; j < 256; j += 8) v128.store(cf(p, j), fqmulc16(v128.load(cf(p, j)), fv, fq));
    return;
  }
  for (let j = 0; j < 256; j++) st(p, j, fqmul(ld(p, j), f));
}
function polyAdd(r: usize, a: usize, b: usize): void {
  if (ASC_FEATURE_SIMD) {
    for (let j = 0; j < 256; j += 8) v128.store(cf(r, j), i16x8.add(v128.load(cf(a, j)), v128.load(cf(b, j))));
    return;
  }
  for (let j = 0; j < 256; j++) st(r, j, ld(a, j) + ld(b, j));
}
/** Map a (barrett-reduced) coefficient to [0, q). */
// @ts-ignore: decorator
@inline function canon(a: i32): i32 {
  a += (a >> 31) & Q;
  a -= Q;
  return a + ((a >> 31) & Q);
}

// ---- sampling ----
/** Parse one SHAKE128 block of `ctx` into coefficients < q (FIPS 203 SampleNTT); returns the new count. */
function sampleParse(ctx: usize, out: usize, n: i32): i32 {
  for (let b: usize = 0; b < 168 && n < 256; b += 3) {
    const x = load<u32>(ctx + b);
    const d1 = <i32>(x & 0xfff);
    const d2 = <i32>((x >> 12) & 0xfff);
    if (d1 < Q) {
      st(out, n, d1);
      n++;
    }
    if (d2 < Q && n < 256) {
      st(out, n, d2);
      n++;
    }
  }
  return n;
}

/** SampleNTT(rho || j || i) into out. */
function sampleNtt(out: usize, rho: usize, j: i32, i: i32): void {
  spShake128Seed2(CTX, rho, j, i);
  let n = 0;
  while (n < 256) {
    keccakF1600(CTX);
    n = sampleParse(CTX, out, n);
  }
}

/** Two SampleNTT at once (two-way SIMD permutation). */
function sampleNttPair(outA: usize, jA: i32, iA: i32, outB: usize, jB: i32, iB: i32, rho: usize): void {
  spShake128Seed2(CTX, rho, jA, iA);
  spShake128Seed2(CTX_B, rho, jB, iB);
  let na = 0;
  let nb = 0;
  while (na < 256 && nb < 256) {
    keccakF1600Pair(CTX, CTX_B);
    na = sampleParse(CTX, outA, na);
    nb = sampleParse(CTX_B, outB, nb);
  }
  while (na < 256) {
    keccakF1600(CTX);
    na = sampleParse(CTX, outA, na);
  }
  while (nb < 256) {
    keccakF1600(CTX_B);
    nb = sampleParse(CTX_B, outB, nb);
  }
}

/** A (or its transpose) from rho: MAT[i][j] = SampleNTT(rho || j || i), or rho || i || j transposed. */
function genMatrix(rho: usize, transposed: bool): void {
  const n = K * K;
  let t = 0;
  for (; t + 1 < n; t += 2) {
    const u = t + 1;
    const ti = t / K;
    const tj = t % K;
    const ui = u / K;
    const uj = u % K;
    if (transposed) sampleNttPair(MAT + <usize>t * PB, ti, tj, MAT + <usize>u * PB, ui, uj, rho);
    else sampleNttPair(MAT + <usize>t * PB, tj, ti, MAT + <usize>u * PB, uj, ui, rho);
  }
  if (t < n) {
    if (transposed) sampleNtt(MAT + <usize>t * PB, rho, t / K, t % K);
    else sampleNtt(MAT + <usize>t * PB, rho, t % K, t / K);
  }
}

const PRF_B: usize = memory.data(192, 16);

/** CBD_eta of the 64 * eta bytes at `buf` into out. */
function cbdFrom(out: usize, buf: usize, eta: i32): void {
  if (eta == 2) {
    for (let i = 0; i < 32; i++) {
      const t = load<u32>(buf + (<usize>i << 2));
      const d = (t & 0x55555555) + ((t >> 1) & 0x55555555);
      for (let j = 0; j < 8; j++) {
        const a = <i32>((d >> (4 * j)) & 3);
        const b = <i32>((d >> (4 * j + 2)) & 3);
        st(out, 8 * i + j, a - b);
      }
    }
  } else {
    for (let i = 0; i < 64; i++) {
      const t = load<u32>(buf + <usize>(3 * i)) & 0xffffff;
      const d = (t & 0x249249) + ((t >> 1) & 0x249249) + ((t >> 2) & 0x249249);
      for (let j = 0; j < 4; j++) {
        const a = <i32>((d >> (6 * j)) & 7);
        const b = <i32>((d >> (6 * j + 3)) & 7);
        st(out, 4 * i + j, a - b);
      }
    }
  }
}

function prfStart(ctx: usize, seed: usize, nonce: i32): void {
  spInit(ctx, RATE_SHAKE256, DS_SHAKE);
  spAbsorb(ctx, seed, 32);
  spAbsorbByte(ctx, nonce);
  spPad(ctx);
}

/** CBD_eta(PRF_eta(seed, nonce)) into out. */
function cbd(out: usize, seed: usize, nonce: i32, eta: i32): void {
  prfStart(CTX, seed, nonce);
  keccakF1600(CTX);
  const n = <usize>(64 * eta);
  memory.copy(PRF, CTX, n < 136 ? n : 136);
  if (n > 136) {
    keccakF1600(CTX);
    memory.copy(PRF + 136, CTX, n - 136);
  }
  cbdFrom(out, PRF, eta);
}

/** Two CBD samples (nonces n and n + 1) sharing the two-way permutation. */
function cbdPair(outA: usize, outB: usize, seed: usize, nonce: i32, eta: i32): void {
  prfStart(CTX, seed, nonce);
  prfStart(CTX_B, seed, nonce + 1);
  spSqueezePair(CTX, CTX_B, PRF, PRF_B, <usize>(64 * eta));
  cbdFrom(outA, PRF, eta);
  cbdFrom(outB, PRF_B, eta);
}

/** out[i] = CBD_eta(PRF(seed, nonce + i)) for i < K (polynomials PB apart). */
function cbdVec(out: usize, seed: usize, nonce: i32, eta: i32): void {
  let i = 0;
  for (; i + 1 < K; i += 2) cbdPair(out + <usize>i * PB, out + <usize>(i + 1) * PB, seed, nonce + i, eta);
  if (i < K) cbd(out + <usize>i * PB, seed, nonce + i, eta);
}

function wipePrf(): void {
  memory.fill(PRF, 0, 192);
  memory.fill(PRF_B, 0, 192);
  memory.fill(CTX, 0, 200);
  memory.fill(CTX_B, 0, 200);
}

// ---- compression ----
// floor(x / q) for 0 <= x < 2^23, by multiplication (no division instruction on secret data).
// @ts-ignore: decorator
@inline function divq(x: u32): u32 {
  return <u32>((<u64>x * 84552411148) >> 48);
}
/** Pack 256 i16 values of d bits (d in 1, 4, 5, 10, 11, 12) a group at a time; may write 7 bytes past. */
function packFast(src: usize, dst: usize, d: i32): void {
  let o = dst;
  if (d == 11) {
    for (let i = 0; i < 256; i += 8) {
      const q = src + (<usize>i << 1);
      const acc0 =
        <u64>load<u16>(q) |
        (<u64>load<u16>(q, 2) << 11) |
        (<u64>load<u16>(q, 4) << 22) |
        (<u64>load<u16>(q, 6) << 33) |
        (<u64>load<u16>(q, 8) << 44) |
        (<u64>load<u16>(q, 10) << 55);
      const acc1 =
        (<u32>load<u16>(q, 10) >> 9) | (<u32>load<u16>(q, 12) << 2) | (<u32>load<u16>(q, 14) << 13);
      store<u64>(o, acc0);
      store<u32>(o + 8, acc1);
      o += 11;
    }
    return;
  }
  const g = d <= 8 ? 8 : 4; // values per group: 8d or 4d bits, a whole number of bytes
  const step = <usize>((g * d) >> 3);
  for (let i = 0; i < 256; i += g) {
    let acc: u64 = 0;
    for (let j = 0; j < g; j++) acc |= <u64>load<u16>(src + (<usize>(i + j) << 1)) << <u64>(j * d);
    store<u64>(o, acc);
    o += step;
  }
}

/** Unpack 256 values of d bits into i16 (may read 7 bytes past the end). */
function unpackFast(src: usize, dst: usize, d: i32): void {
  const mask: u64 = (<u64>1 << <u64>d) - 1;
  let s = src;
  if (d == 11) {
    for (let i = 0; i < 256; i += 8) {
      const acc0 = load<u64>(s);
      const acc1 = <u64>load<u32>(s + 8);
      const q = dst + (<usize>i << 1);
      store<u16>(q, <u16>(acc0 & mask));
      store<u16>(q, <u16>((acc0 >> 11) & mask), 2);
      store<u16>(q, <u16>((acc0 >> 22) & mask), 4);
      store<u16>(q, <u16>((acc0 >> 33) & mask), 6);
      store<u16>(q, <u16>((acc0 >> 44) & mask), 8);
      store<u16>(q, <u16>(((acc0 >> 55) | (acc1 << 9)) & mask), 10);
      store<u16>(q, <u16>((acc1 >> 2) & mask), 12);
      store<u16>(q, <u16>((acc1 >> 13) & mask), 14);
      s += 11;
    }
    return;
  }
  const g = d <= 8 ? 8 : 4;
  const step = <usize>((g * d) >> 3);
  for (let i = 0; i < 256; i += g) {
    const acc = load<u64>(s);
    for (let j = 0; j < g; j++) store<u16>(dst + (<usize>(i + j) << 1), <u16>((acc >> <u64>(j * d)) & mask));
    s += step;
  }
}

/** Compress_d of a barrett-reduced polynomial, then ByteEncode_d. */
function compressPoly(p: usize, d: i32, out: usize): void {
  const mask = (1 << d) - 1;
  if (ASC_FEATURE_SIMD) {
    const qv = i16x8.splat(<i16>Q);
    const m = i32x4.splat(<i32>2642262849); // ceil(2^43 / q): floor(t / q) = (t * m) >> 43 for t < 2^23
    const h = i32x4.splat(1664);
    const mk = i16x8.splat(<i16>mask);
    for (let j = 0; j < 256; j += 8) {
      let v = v128.load(cf(p, j));
      v = i16x8.add(v, v128.and(i16x8.shr_s(v, 15), qv));
      v = i16x8.sub(v, qv);
      v = i16x8.add(v, v128.and(i16x8.shr_s(v, 15), qv));
      const lo = i32x4.add(i32x4.shl(i32x4.extend_low_i16x8_u(v), d), h);
      const hi = i32x4.add(i32x4.shl(i32x4.extend_high_i16x8_u(v), d), h);
      const clo = i32x4.shuffle(
        i64x2.shr_u(i64x2.extmul_low_i32x4_u(lo, m), 43),
        i64x2.shr_u(i64x2.extmul_high_i32x4_u(lo, m), 43),
        0, 2, 4, 6,
      );
      const chi = i32x4.shuffle(
        i64x2.shr_u(i64x2.extmul_low_i32x4_u(hi, m), 43),
        i64x2.shr_u(i64x2.extmul_high_i32x4_u(hi, m), 43),
        0, 2, 4, 6,
      );
      v128.store(cf(MP, j), v128.and(i16x8.narrow_i32x4_u(clo, chi), mk));
    }
  } else {
    for (let j = 0; j < 256; j++) {
      const x = <u32>canon(ld(p, j));
      st(MP, j, <i32>divq((x << <u32>d) + 1664) & mask);
    }
  }
  packFast(MP, out, d);
}
function decompressPoly(src: usize, d: i32, p: usize): void {
  unpackFast(src, p, d);
  const half = 1 << (d - 1);
  if (ASC_FEATURE_SIMD) {
    const qv = i16x8.splat(<i16>Q);
    const hv = i32x4.splat(half);
    for (let j = 0; j < 256; j += 8) {
      const v = v128.load(cf(p, j));
      const lo = i32x4.shr_u(i32x4.add(i32x4.extmul_low_i16x8_u(v, qv), hv), d);
      const hi = i32x4.shr_u(i32x4.add(i32x4.extmul_high_i16x8_u(v, qv), hv), d);
      v128.store(cf(p, j), i16x8.narrow_i32x4_u(lo, hi));
    }
    return;
  }
  for (let j = 0; j < 256; j++) st(p, j, (ld(p, j) * Q + half) >> d);
}

// ---- K-PKE ----
function pkeKeygen(d: usize): void {
  memory.copy(HB, d, 32);
  store<u8>(HB + 32, <u8>K);
  spHash(CTX, RATE_SHA3_512, DS_SHA3, HB, 33, RHO, 64); // rho || sigma
  genMatrix(RHO, false);
  cbdVec(SV, SIGMA, 0, ETA1);
  cbdVec(EV, SIGMA, K, ETA1);
  for (let i = 0; i < K; i++) ntt(SV + <usize>i * PB);
  for (let i = 0; i < K; i++) ntt(EV + <usize>i * PB);
  for (let i = 0; i < K; i++) {
    const t = TV + <usize>i * PB;
    for (let j = 0; j < K; j++) basemul(t, MAT + <usize>(i * K + j) * PB, SV + <usize>j * PB, j > 0);
    polyToMont(t);
    polyAdd(t, t, EV + <usize>i * PB);
    polyReduce(t);
  }
  // ek = t || rho ; dk_pke = s
  for (let i = 0; i < K; i++) {
    encode12(TV + <usize>i * PB, PK + <usize>(384 * i));
    encode12(SV + <usize>i * PB, SK + <usize>(384 * i));
  }
  memory.copy(PK + <usize>(384 * K), RHO, 32);
}

function encode12(p: usize, out: usize): void {
  for (let j = 0; j < 128; j++) {
    const a = canon(ld(p, 2 * j));
    const b = canon(ld(p, 2 * j + 1));
    const o = out + <usize>(3 * j);
    store<u8>(o, <u8>a);
    store<u8>(o + 1, <u8>((a >> 8) | (b << 4)));
    store<u8>(o + 2, <u8>(b >> 4));
  }
}
/** Decode 12-bit values; returns nonzero if some value is >= q. */
function decode12(src: usize, p: usize): i32 {
  let bad = 0;
  for (let j = 0; j < 128; j++) {
    const o = src + <usize>(3 * j);
    const b0 = <i32>load<u8>(o);
    const b1 = <i32>load<u8>(o + 1);
    const b2 = <i32>load<u8>(o + 2);
    const a = b0 | ((b1 & 15) << 8);
    const b = (b1 >> 4) | (b2 << 4);
    bad |= (Q - 1 - a) | (Q - 1 - b);
    st(p, 2 * j, a);
    st(p, 2 * j + 1, b);
  }
  return bad >>> 31;
}

/** K-PKE.Encrypt(ek at `ek`, m at `m`, r at `r`) into `ct`. TV must hold t^ and MAT the transposed A. */
function pkeEncrypt(m: usize, r: usize, ct: usize): void {
  cbdVec(SV, r, 0, ETA1);
  cbdVec(EV, r, K, 2);
  cbd(E2, r, 2 * K, 2);
  for (let i = 0; i < K; i++) ntt(SV + <usize>i * PB);
  const du = <usize>(32 * DU);
  for (let i = 0; i < K; i++) {
    const u = UV + <usize>i * PB;
    for (let j = 0; j < K; j++) basemul(u, MAT + <usize>(i * K + j) * PB, SV + <usize>j * PB, j > 0);
    polyReduce(u); // the sum of K products may exceed what the inverse NTT's first layer takes in i16
    invntt(u);
    polyAdd(u, u, EV + <usize>i * PB);
    polyReduce(u);
    compressPoly(u, DU, ct + <usize>i * du);
  }
  for (let j = 0; j < K; j++) basemul(VP, TV + <usize>j * PB, SV + <usize>j * PB, j > 0);
  polyReduce(VP);
  invntt(VP);
  polyAdd(VP, VP, E2);
  // + Decompress_1(m)
  for (let i = 0; i < 32; i++) {
    const byte = <i32>load<u8>(m + <usize>i);
    for (let j = 0; j < 8; j++) {
      const mask = -((byte >> j) & 1);
      st(VP, 8 * i + j, ld(VP, 8 * i + j) + (mask & ((Q + 1) / 2)));
    }
  }
  polyReduce(VP);
  compressPoly(VP, DV, ct + <usize>K * du);
}

// The expansion of the last encapsulation key (t^, the transposed A and H(ek)) is kept, so repeated
// encapsulations to one peer key, or decapsulations with one key, skip SampleNTT and the ek hash.
// Everything cached is public.
const CACHE_EK: usize = memory.data(1600, 16);
const CACHE_H: usize = memory.data(32, 16);
let cacheK: i32 = 0; // 0: nothing cached

function sameEk(ek: usize): bool {
  if (cacheK != K) return false;
  let d: u64 = 0;
  for (let i: usize = 0; i < <usize>EK_BYTES; i += 8) d |= load<u64>(ek + i) ^ load<u64>(CACHE_EK + i);
  return d == 0;
}

/**
 * Load ek (at `ek`) into TV, the transposed matrix into MAT and H(ek) into CACHE_H; returns nonzero
 * if the modulus check fails (then nothing is cached).
 */
function loadEk(ek: usize): i32 {
  if (sameEk(ek)) return 0;
  cacheK = 0;
  let bad = 0;
  for (let i = 0; i < K; i++) bad |= decode12(ek + <usize>(384 * i), TV + <usize>i * PB);
  genMatrix(ek + <usize>(384 * K), true);
  spHash(CTX, RATE_SHA3_256, DS_SHA3, ek, <usize>EK_BYTES, CACHE_H, 32);
  if (bad == 0) {
    memory.copy(CACHE_EK, ek, <usize>EK_BYTES);
    cacheK = K;
  }
  return bad;
}

// ---- ML-KEM ----
/** KeyGen from SEED = d || z; writes PK (ek) and SK (dk). */
export function kemKeygen(k: i32): i32 {
  if (!setParams(k)) return -1;
  cacheK = 0; // MAT is overwritten
  pkeKeygen(SEED);
  const off = <usize>(384 * K);
  memory.copy(SK + off, PK, <usize>EK_BYTES);
  spHash(CTX, RATE_SHA3_256, DS_SHA3, PK, <usize>EK_BYTES, SK + off + <usize>EK_BYTES, 32);
  memory.copy(SK + off + <usize>EK_BYTES + 32, SEED + 32, 32);
  memory.fill(SV, 0, 4 * PB);
  memory.fill(EV, 0, 4 * PB);
  memory.fill(SIGMA, 0, 32);
  memory.fill(HB, 0, 64);
  wipePrf();
  return 0;
}

/** Encaps with ek in PK and m in RND; writes SIG (ciphertext) and SS. 1 if ek fails the modulus check. */
export function kemEncaps(k: i32): i32 {
  if (!setParams(k)) return -1;
  if (loadEk(PK) != 0) {
    memory.fill(SS, 0, 32);
    return 1;
  }
  // (K, r) = G(m || H(ek))
  memory.copy(HB, RND, 32);
  memory.copy(HB + 32, CACHE_H, 32);
  spHash(CTX, RATE_SHA3_512, DS_SHA3, HB, 64, KR, 64);
  pkeEncrypt(RND, KR + 32, SIG);
  memory.copy(SS, KR, 32);
  memory.fill(KR, 0, 64);
  memory.fill(HB, 0, 64);
  memory.fill(SV, 0, 4 * PB);
  memory.fill(EV, 0, 4 * PB);
  memory.fill(E2, 0, PB);
  wipePrf();
  return 0;
}

/** Decaps with dk in SK and the ciphertext in SIG; writes SS. 2 if dk fails the hash check. */
export function kemDecaps(k: i32): i32 {
  if (!setParams(k)) return -1;
  const off = <usize>(384 * K);
  const ek = SK + off;
  const h = ek + <usize>EK_BYTES;
  const z = h + 32;
  // FIPS 203 section 7.3 hash check on the decapsulation key (loadEk computes H(ek))
  loadEk(ek);
  let diff = 0;
  for (let i: usize = 0; i < 32; i++) diff |= <i32>(load<u8>(CACHE_H + i) ^ load<u8>(h + i));
  if (diff != 0) {
    memory.fill(SS, 0, 32);
    return 2;
  }
  // m' = Decrypt(dk_pke, c)
  const du = <usize>(32 * DU);
  for (let i = 0; i < K; i++) {
    const u = UV + <usize>i * PB;
    decompressPoly(SIG + <usize>i * du, DU, u);
    ntt(u);
  }
  for (let i = 0; i < K; i++) {
    decode12(SK + <usize>(384 * i), SV + <usize>i * PB);
    basemul(VP, SV + <usize>i * PB, UV + <usize>i * PB, i > 0);
  }
  polyReduce(VP);
  invntt(VP);
  decompressPoly(SIG + <usize>K * du, DV, MP);
  for (let j = 0; j < 256; j++) st(VP, j, ld(MP, j) - ld(VP, j));
  polyReduce(VP);
  for (let i = 0; i < 32; i++) {
    let byte = 0;
    for (let j = 0; j < 8; j++) {
      // Compress_1(x) = 1 iff 833 <= x <= 2496
      const x = canon(ld(VP, 8 * i + j));
      byte |= (((832 - x) & (x - 2497)) >>> 31) << j;
    }
    store<u8>(MB + <usize>i, <u8>byte);
  }
  // (K', r') = G(m' || h)
  memory.copy(HB, MB, 32);
  memory.copy(HB + 32, h, 32);
  spHash(CTX, RATE_SHA3_512, DS_SHA3, HB, 64, KR, 64);
  // K-bar = J(z || c)
  spInit(CTX, RATE_SHAKE256, DS_SHAKE);
  spAbsorb(CTX, z, 32);
  spAbsorb(CTX, SIG, <usize>CT_BYTES);
  spFinal(CTX);
  spSqueeze(CTX, SS, 32);
  // re-encrypt (TV and MAT hold ek's expansion) and compare in constant time
  pkeEncrypt(MB, KR + 32, CT2);
  let d: u32 = 0;
  for (let i: usize = 0; i < <usize>CT_BYTES; i++) d |= <u32>(load<u8>(SIG + i) ^ load<u8>(CT2 + i));
  const keep = <u8>(((d | (0 - d)) >> 31) - 1); // 0xff if equal (use K'), 0 otherwise
  for (let i: usize = 0; i < 32; i++) {
    const a = load<u8>(KR + i);
    const b = load<u8>(SS + i);
    store<u8>(SS + i, b ^ (keep & (a ^ b)));
  }
  memory.fill(KR, 0, 64);
  memory.fill(MB, 0, 32);
  memory.fill(HB, 0, 64);
  memory.fill(SV, 0, 4 * PB);
  memory.fill(EV, 0, 4 * PB);
  memory.fill(E2, 0, PB);
  memory.fill(VP, 0, PB);
  memory.fill(MP, 0, PB);
  wipePrf();
  return 0;
}

/**
 * Self-test of the lazily reduced inverse NTT on extreme inputs: for patterns of coefficients in
 * [-(q-1)/2, (q-1)/2] (all max, all min, alternating, pseudo-random by `seed`), checks
 * NTT(invNTT(a)) == a * 2^16 (mod q). Returns the number of mismatching coefficients.
 */
export function kemSelfTest(seed: u32): i32 {
  let bad = 0;
  let x = seed | 1;
  for (let pattern = 0; pattern < 6; pattern++) {
    for (let j = 0; j < 256; j++) {
      let v: i32;
      if (pattern == 0) v = 1664;
      else if (pattern == 1) v = -1664;
      else if (pattern == 2) v = j & 1 ? 1664 : -1664;
      else if (pattern == 3) v = j & 2 ? 1664 : -1664;
      else {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v = <i32>(x % 3329) - 1664;
      }
      st(MP, j, v);
      st(VP, j, v);
    }
    invntt(VP);
    ntt(VP);
    for (let j = 0; j < 256; j++) {
      const want = ((ld(MP, j) * 2285) % Q + Q) % Q; // 2^16 mod q = 2285
      const got = (ld(VP, j) % Q + Q) % Q;
      if (want != got) bad++;
    }
  }
  return bad;
}
