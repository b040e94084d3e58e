// ML-KEM-512/768/1024 (FIPS 203): key generation from (d, z), encapsulation with the modulus check,
// decapsulation with the hash check and implicit rejection. Polynomials are 256 i16 (512 bytes);
// NTT-domain products are Montgomery (R = 2^16).
import { keccakF1600 } from "./keccakf";
import {
  spInit,
  spAbsorb,
  spAbsorbByte,
  spFinal,
  spSqueeze,
  spHash,
  RATE_SHAKE128,
  RATE_SHAKE256,
  RATE_SHA3_256,
  RATE_SHA3_512,
  DS_SHAKE,
  DS_SHA3,
} from "./sponge";
import { CTX, PK, SK, SIG, SEED, RND, SS, SCRATCH } from "./mem";
import { packI16, unpackI16 } from "./pack";

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
const HEK: usize = SCRATCH + 224; // 32

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
  let k = 1;
  for (let len = 128; len >= 2; len >>= 1) {
    for (let start = 0; start < 256; start += len << 1) {
      const zeta = <i32>load<i16>(ZETAS + (<usize>k << 1));
      k++;
      const end = start + len;
      for (let j = start; j < end; j++) {
        const t = fqmul(zeta, ld(p, j + len));
        const a = ld(p, j);
        st(p, j + len, a - t);
        st(p, j, a + t);
      }
    }
  }
  for (let j = 0; j < 256; j++) st(p, j, barrett(ld(p, j)));
}

function invntt(p: usize): void {
  let k = 127;
  for (let len = 2; len <= 128; len <<= 1) {
    for (let start = 0; start < 256; start += len << 1) {
      const zeta = <i32>load<i16>(ZETAS + (<usize>k << 1));
      k--;
      const end = start + len;
      for (let j = start; j < end; j++) {
        const t = ld(p, j);
        const u = ld(p, j + len);
        st(p, j, barrett(t + u));
        st(p, j + len, fqmul(zeta, u - t));
      }
    }
  }
  const f: i32 = 1441; // mont^2 / 128
  for (let j = 0; j < 256; j++) st(p, j, fqmul(ld(p, j), f));
}

/** r = a o b in NTT domain (Montgomery), or r += a o b when acc. */
function basemul(r: usize, a: usize, b: usize, acc: bool): void {
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
  for (let j = 0; j < 256; j++) st(p, j, barrett(ld(p, j)));
}
function polyToMont(p: usize): void {
  const f: i32 = 1353; // 2^32 mod q
  for (let j = 0; j < 256; j++) st(p, j, fqmul(ld(p, j), f));
}
function polyAdd(r: usize, a: usize, b: usize): void {
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
/** SampleNTT(rho || j || i) into out. */
function sampleNtt(out: usize, rho: usize, j: i32, i: i32): void {
  spInit(CTX, RATE_SHAKE128, DS_SHAKE);
  spAbsorb(CTX, rho, 32);
  spAbsorbByte(CTX, j);
  spAbsorbByte(CTX, i);
  spFinal(CTX);
  let n = 0;
  while (true) {
    for (let b: usize = 0; b < 168 && n < 256; b += 3) {
      const x = load<u32>(CTX + b);
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
    if (n >= 256) break;
    keccakF1600(CTX);
  }
}

/** A (or its transpose) from rho: MAT[i][j] = SampleNTT(rho || j || i). */
function genMatrix(rho: usize, transposed: bool): void {
  for (let i = 0; i < K; i++)
    for (let j = 0; j < K; j++) {
      const out = MAT + <usize>(i * K + j) * PB;
      if (transposed) sampleNtt(out, rho, i, j);
      else sampleNtt(out, rho, j, i);
    }
}

/** CBD_eta(PRF_eta(seed, nonce)) into out. */
function cbd(out: usize, seed: usize, nonce: i32, eta: i32): void {
  memory.copy(HB, seed, 32);
  store<u8>(HB + 32, <u8>nonce);
  spHash(CTX, RATE_SHAKE256, DS_SHAKE, HB, 33, PRF, <usize>(64 * eta));
  if (eta == 2) {
    for (let i = 0; i < 32; i++) {
      const t = load<u32>(PRF + (<usize>i << 2));
      const d = (t & 0x55555555) + ((t >> 1) & 0x55555555);
      for (let j = 0; j < 8; j++) {
        const a = <i32>((d >> (4 * j)) & 3);
        const b = <i32>((d >> (4 * j + 2)) & 3);
        st(out, 8 * i + j, a - b);
      }
    }
  } else {
    for (let i = 0; i < 64; i++) {
      const t = load<u32>(PRF + <usize>(3 * i)) & 0xffffff;
      const d = (t & 0x249249) + ((t >> 1) & 0x249249) + ((t >> 2) & 0x249249);
      for (let j = 0; j < 4; j++) {
        const a = <i32>((d >> (6 * j)) & 7);
        const b = <i32>((d >> (6 * j + 3)) & 7);
        st(out, 4 * i + j, a - b);
      }
    }
  }
}

// ---- compression ----
// floor(x / q) for 0 <= x < 2^23, by multiplication (no division instruction on secret data).
// @ts-ignore: decorator
@inline function divq(x: u32): u32 {
  return <u32>((<u64>x * 84552411148) >> 48);
}
function compressPoly(p: usize, d: i32, out: usize): void {
  const mask = (1 << d) - 1;
  for (let j = 0; j < 256; j++) {
    const x = <u32>canon(ld(p, j));
    st(MP, j, <i32>divq((x << <u32>d) + 1664) & mask);
  }
  packI16(MP, out, d);
}
function decompressPoly(src: usize, d: i32, p: usize): void {
  unpackI16(src, p, d);
  const half = 1 << (d - 1);
  for (let j = 0; j < 256; j++) st(p, j, (ld(p, j) * Q + half) >> d);
}

// ---- K-PKE ----
function pkeKeygen(d: usize): void {
  memory.copy(HB, d, 32);
  store<u8>(HB + 32, <u8>K);
  spHash(CTX, RATE_SHA3_512, DS_SHA3, HB, 33, RHO, 64); // rho || sigma
  genMatrix(RHO, false);
  let n = 0;
  for (let i = 0; i < K; i++) cbd(SV + <usize>i * PB, SIGMA, n++, ETA1);
  for (let i = 0; i < K; i++) cbd(EV + <usize>i * PB, SIGMA, n++, ETA1);
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
  let n = 0;
  for (let i = 0; i < K; i++) cbd(SV + <usize>i * PB, r, n++, ETA1);
  for (let i = 0; i < K; i++) cbd(EV + <usize>i * PB, r, n++, 2);
  cbd(E2, r, n++, 2);
  for (let i = 0; i < K; i++) ntt(SV + <usize>i * PB);
  const du = <usize>(32 * DU);
  for (let i = 0; i < K; i++) {
    const u = UV + <usize>i * PB;
    for (let j = 0; j < K; j++) basemul(u, MAT + <usize>(i * K + j) * PB, SV + <usize>j * PB, j > 0);
    invntt(u);
    polyAdd(u, u, EV + <usize>i * PB);
    polyReduce(u);
    compressPoly(u, DU, ct + <usize>i * du);
  }
  for (let j = 0; j < K; j++) basemul(VP, TV + <usize>j * PB, SV + <usize>j * PB, j > 0);
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

/** Load ek (at `ek`) into TV and the transposed matrix; returns nonzero if the modulus check fails. */
function loadEk(ek: usize): i32 {
  let bad = 0;
  for (let i = 0; i < K; i++) bad |= decode12(ek + <usize>(384 * i), TV + <usize>i * PB);
  genMatrix(ek + <usize>(384 * K), true);
  return bad;
}

// ---- ML-KEM ----
/** KeyGen from SEED = d || z; writes PK (ek) and SK (dk). */
export function kemKeygen(k: i32): i32 {
  if (!setParams(k)) return -1;
  pkeKeygen(SEED);
  const off = <usize>(384 * K);
  memory.copy(SK + off, PK, <usize>EK_BYTES);
  spHash(CTX, RATE_SHA3_256, DS_SHA3, PK, <usize>EK_BYTES, SK + off + <usize>EK_BYTES, 32);
  memory.copy(SK + off + <usize>EK_BYTES + 32, SEED + 32, 32);
  memory.fill(SV, 0, 4 * PB);
  memory.fill(EV, 0, 4 * PB);
  memory.fill(SIGMA, 0, 32);
  memory.fill(HB, 0, 64);
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
  spHash(CTX, RATE_SHA3_256, DS_SHA3, PK, <usize>EK_BYTES, HB + 32, 32);
  spHash(CTX, RATE_SHA3_512, DS_SHA3, HB, 64, KR, 64);
  pkeEncrypt(RND, KR + 32, SIG);
  memory.copy(SS, KR, 32);
  memory.fill(KR, 0, 64);
  memory.fill(HB, 0, 64);
  memory.fill(SV, 0, 4 * PB);
  memory.fill(EV, 0, 4 * PB);
  memory.fill(E2, 0, PB);
  return 0;
}

/** Decaps with dk in SK and the ciphertext in SIG; writes SS. 2 if dk fails the hash check. */
export function kemDecaps(k: i32): i32 {
  if (!setParams(k)) return -1;
  const off = <usize>(384 * K);
  const ek = SK + off;
  const h = ek + <usize>EK_BYTES;
  const z = h + 32;
  // FIPS 203 section 7.3 hash check on the decapsulation key
  spHash(CTX, RATE_SHA3_256, DS_SHA3, ek, <usize>EK_BYTES, HEK, 32);
  let diff = 0;
  for (let i: usize = 0; i < 32; i++) diff |= <i32>(load<u8>(HEK + i) ^ load<u8>(h + i));
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
    unpackI16(SK + <usize>(384 * i), SV + <usize>i * PB, 12);
    basemul(VP, SV + <usize>i * PB, UV + <usize>i * PB, i > 0);
  }
  invntt(VP);
  decompressPoly(SIG + <usize>K * du, DV, MP);
  for (let j = 0; j < 256; j++) st(VP, j, ld(MP, j) - ld(VP, j));
  polyReduce(VP);
  for (let i = 0; i < 32; i++) {
    let byte = 0;
    for (let j = 0; j < 8; j++) {
      const x = <u32>canon(ld(VP, 8 * i + j));
      byte |= <i32>(divq((x << 1) + 1664) & 1) << j;
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
  // re-encrypt and compare in constant time
  loadEk(ek);
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
  return 0;
}
