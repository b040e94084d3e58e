// SHA-256 (FIPS 180-4). Self-contained (own static data, no allocation, no abort path) so other Wasm
// modules (the proxy-wasm filter) can import it directly.
//
//   sha256(inPtr, len, outPtr)            one-shot digest of len bytes at inPtr into 32 bytes at outPtr
//   sha256Init / sha256Update / sha256Final  streaming over a SHA256_CTX_SIZE-byte context in linear memory
//
// Context layout: 8 state words (32 bytes), the total length in bytes (u64 at 32), then the 64-byte
// partial block buffer at 40. The compression function is fully unrolled over locals.

export const SHA256_CTX_SIZE: usize = 104;
const CTX_LEN: usize = 32;
const CTX_BUF: usize = 40;

/** Context of the one-shot sha256(). */
const ONE: usize = memory.data(<i32>SHA256_CTX_SIZE, 16);
/** A context for the host's streaming hash (it saves and restores its own states around each call). */
const HOST: usize = memory.data(<i32>SHA256_CTX_SIZE, 16);

export function sha256CtxPtr(): usize {
  return HOST;
}
export function sha256CtxSize(): usize {
  return SHA256_CTX_SIZE;
}

@inline
function bswap32(x: u32): u32 {
  return (rotl<u32>(x, 8) & 0x00ff00ff) | (rotr<u32>(x, 8) & 0xff00ff00);
}

@inline
function Sig0(x: u32): u32 {
  return rotr<u32>(x, 2) ^ rotr<u32>(x, 13) ^ rotr<u32>(x, 22);
}
@inline
function Sig1(x: u32): u32 {
  return rotr<u32>(x, 6) ^ rotr<u32>(x, 11) ^ rotr<u32>(x, 25);
}
@inline
function sig0(x: u32): u32 {
  return rotr<u32>(x, 7) ^ rotr<u32>(x, 18) ^ (x >>> 3);
}
@inline
function sig1(x: u32): u32 {
  return rotr<u32>(x, 17) ^ rotr<u32>(x, 19) ^ (x >>> 10);
}

/**
 * Compress `nblocks` consecutive 64-byte blocks at `p` into the state at `st`. The 64 rounds are
 * unrolled with the working variables renamed instead of shifted, and the message schedule kept as a
 * rolling window of 16 locals (round constants inline).
 */
function compress(st: usize, p: usize, nblocks: usize): void {
  let h0 = load<u32>(st, 0);
  let h1 = load<u32>(st, 4);
  let h2 = load<u32>(st, 8);
  let h3 = load<u32>(st, 12);
  let h4 = load<u32>(st, 16);
  let h5 = load<u32>(st, 20);
  let h6 = load<u32>(st, 24);
  let h7 = load<u32>(st, 28);
  while (nblocks-- > 0) {
    let w0 = bswap32(load<u32>(p, 0));
    let w1 = bswap32(load<u32>(p, 4));
    let w2 = bswap32(load<u32>(p, 8));
    let w3 = bswap32(load<u32>(p, 12));
    let w4 = bswap32(load<u32>(p, 16));
    let w5 = bswap32(load<u32>(p, 20));
    let w6 = bswap32(load<u32>(p, 24));
    let w7 = bswap32(load<u32>(p, 28));
    let w8 = bswap32(load<u32>(p, 32));
    let w9 = bswap32(load<u32>(p, 36));
    let w10 = bswap32(load<u32>(p, 40));
    let w11 = bswap32(load<u32>(p, 44));
    let w12 = bswap32(load<u32>(p, 48));
    let w13 = bswap32(load<u32>(p, 52));
    let w14 = bswap32(load<u32>(p, 56));
    let w15 = bswap32(load<u32>(p, 60));
    let a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
    h += Sig1(e) + (g ^ (e & (f ^ g))) + 0x428a2f98 + w0;
    d += h;
    h += Sig0(a) + ((a & b) | (c & (a | b)));
    g += Sig1(d) + (f ^ (d & (e ^ f))) + 0x71374491 + w1;
    c += g;
    g += Sig0(h) + ((h & a) | (b & (h | a)));
    f += Sig1(c) + (e ^ (c & (d ^ e))) + 0xb5c0fbcf + w2;
    b += f;
    f += Sig0(g) + ((g & h) | (a & (g | h)));
    e += Sig1(b) + (d ^ (b & (c ^ d))) + 0xe9b5dba5 + w3;
    a += e;
    e += Sig0(f) + ((f & g) | (h & (f | g)));
    d += Sig1(a) + (c ^ (a & (b ^ c))) + 0x3956c25b + w4;
    h += d;
    d += Sig0(e) + ((e & f) | (g & (e | f)));
    c += Sig1(h) + (b ^ (h & (a ^ b))) + 0x59f111f1 + w5;
    g += c;
    c += Sig0(d) + ((d & e) | (f & (d | e)));
    b += Sig1(g) + (a ^ (g & (h ^ a))) + 0x923f82a4 + w6;
    f += b;
    b += Sig0(c) + ((c & d) | (e & (c | d)));
    a += Sig1(f) + (h ^ (f & (g ^ h))) + 0xab1c5ed5 + w7;
    e += a;
    a += Sig0(b) + ((b & c) | (d & (b | c)));
    h += Sig1(e) + (g ^ (e & (f ^ g))) + 0xd807aa98 + w8;
    d += h;
    h += Sig0(a) + ((a & b) | (c & (a | b)));
    g += Sig1(d) + (f ^ (d & (e ^ f))) + 0x12835b01 + w9;
    c += g;
    g += Sig0(h) + ((h & a) | (b & (h | a)));
    f += Sig1(c) + (e ^ (c & (d ^ e))) + 0x243185be + w10;
    b += f;
    f += Sig0(g) + ((g & h) | (a & (g | h)));
    e += Sig1(b) + (d ^ (b & (c ^ d))) + 0x550c7dc3 + w11;
    a += e;
    e += Sig0(f) + ((f & g) | (h & (f | g)));
    d += Sig1(a) + (c ^ (a & (b ^ c))) + 0x72be5d74 + w12;
    h += d;
    d += Sig0(e) + ((e & f) | (g & (e | f)));
    c += Sig1(h) + (b ^ (h & (a ^ b))) + 0x80deb1fe + w13;
    g += c;
    c += Sig0(d) + ((d & e) | (f & (d | e)));
    b += Sig1(g) + (a ^ (g & (h ^ a))) + 0x9bdc06a7 + w14;
    f += b;
    b += Sig0(c) + ((c & d) | (e & (c | d)));
    a += Sig1(f) + (h ^ (f & (g ^ h))) + 0xc19bf174 + w15;
    e += a;
    a += Sig0(b) + ((b & c) | (d & (b | c)));
    w0 += sig0(w1) + w9 + sig1(w14);
    h += Sig1(e) + (g ^ (e & (f ^ g))) + 0xe49b69c1 + w0;
    d += h;
    h += Sig0(a) + ((a & b) | (c & (a | b)));
    w1 += sig0(w2) + w10 + sig1(w15);
    g += Sig1(d) + (f ^ (d & (e ^ f))) + 0xefbe4786 + w1;
    c += g;
    g += Sig0(h) + ((h & a) | (b & (h | a)));
    w2 += sig0(w3) + w11 + sig1(w0);
    f += Sig1(c) + (e ^ (c & (d ^ e))) + 0x0fc19dc6 + w2;
    b += f;
    f += Sig0(g) + ((g & h) | (a & (g | h)));
    w3 += sig0(w4) + w12 + sig1(w1);
    e += Sig1(b) + (d ^ (b & (c ^ d))) + 0x240ca1cc + w3;
    a += e;
    e += Sig0(f) + ((f & g) | (h & (f | g)));
    w4 += sig0(w5) + w13 + sig1(w2);
    d += Sig1(a) + (c ^ (a & (b ^ c))) + 0x2de92c6f + w4;
    h += d;
    d += Sig0(e) + ((e & f) | (g & (e | f)));
    w5 += sig0(w6) + w14 + sig1(w3);
    c += Sig1(h) + (b ^ (h & (a ^ b))) + 0x4a7484aa + w5;
    g += c;
    c += Sig0(d) + ((d & e) | (f & (d | e)));
    w6 += sig0(w7) + w15 + sig1(w4);
    b += Sig1(g) + (a ^ (g & (h ^ a))) + 0x5cb0a9dc + w6;
    f += b;
    b += Sig0(c) + ((c & d) | (e & (c | d)));
    w7 += sig0(w8) + w0 + sig1(w5);
    a += Sig1(f) + (h ^ (f & (g ^ h))) + 0x76f988da + w7;
    e += a;
    a += Sig0(b) + ((b & c) | (d & (b | c)));
    w8 += sig0(w9) + w1 + sig1(w6);
    h += Sig1(e) + (g ^ (e & (f ^ g))) + 0x983e5152 + w8;
    d += h;
    h += Sig0(a) + ((a & b) | (c & (a | b)));
    w9 += sig0(w10) + w2 + sig1(w7);
    g += Sig1(d) + (f ^ (d & (e ^ f))) + 0xa831c66d + w9;
    c += g;
    g += Sig0(h) + ((h & a) | (b & (h | a)));
    w10 += sig0(w11) + w3 + sig1(w8);
    f += Sig1(c) + (e ^ (c & (d ^ e))) + 0xb00327c8 + w10;
    b += f;
    f += Sig0(g) + ((g & h) | (a & (g | h)));
    w11 += sig0(w12) + w4 + sig1(w9);
    e += Sig1(b) + (d ^ (b & (c ^ d))) + 0xbf597fc7 + w11;
    a += e;
    e += Sig0(f) + ((f & g) | (h & (f | g)));
    w12 += sig0(w13) + w5 + sig1(w10);
    d += Sig1(a) + (c ^ (a & (b ^ c))) + 0xc6e00bf3 + w12;
    h += d;
    d += Sig0(e) + ((e & f) | (g & (e | f)));
    w13 += sig0(w14) + w6 + sig1(w11);
    c += Sig1(h) + (b ^ (h & (a ^ b))) + 0xd5a79147 + w13;
    g += c;
    c += Sig0(d) + ((d & e) | (f & (d | e)));
    w14 += sig0(w15) + w7 + sig1(w12);
    b += Sig1(g) + (a ^ (g & (h ^ a))) + 0x06ca6351 + w14;
    f += b;
    b += Sig0(c) + ((c & d) | (e & (c | d)));
    w15 += sig0(w0) + w8 + sig1(w13);
    a += Sig1(f) + (h ^ (f & (g ^ h))) + 0x14292967 + w15;
    e += a;
    a += Sig0(b) + ((b & c) | (d & (b | c)));
    w0 += sig0(w1) + w9 + sig1(w14);
    h += Sig1(e) + (g ^ (e & (f ^ g))) + 0x27b70a85 + w0;
    d += h;
    h += Sig0(a) + ((a & b) | (c & (a | b)));
    w1 += sig0(w2) + w10 + sig1(w15);
    g += Sig1(d) + (f ^ (d & (e ^ f))) + 0x2e1b2138 + w1;
    c += g;
    g += Sig0(h) + ((h & a) | (b & (h | a)));
    w2 += sig0(w3) + w11 + sig1(w0);
    f += Sig1(c) + (e ^ (c & (d ^ e))) + 0x4d2c6dfc + w2;
    b += f;
    f += Sig0(g) + ((g & h) | (a & (g | h)));
    w3 += sig0(w4) + w12 + sig1(w1);
    e += Sig1(b) + (d ^ (b & (c ^ d))) + 0x53380d13 + w3;
    a += e;
    e += Sig0(f) + ((f & g) | (h & (f | g)));
    w4 += sig0(w5) + w13 + sig1(w2);
    d += Sig1(a) + (c ^ (a & (b ^ c))) + 0x650a7354 + w4;
    h += d;
    d += Sig0(e) + ((e & f) | (g & (e | f)));
    w5 += sig0(w6) + w14 + sig1(w3);
    c += Sig1(h) + (b ^ (h & (a ^ b))) + 0x766a0abb + w5;
    g += c;
    c += Sig0(d) + ((d & e) | (f & (d | e)));
    w6 += sig0(w7) + w15 + sig1(w4);
    b += Sig1(g) + (a ^ (g & (h ^ a))) + 0x81c2c92e + w6;
    f += b;
    b += Sig0(c) + ((c & d) | (e & (c | d)));
    w7 += sig0(w8) + w0 + sig1(w5);
    a += Sig1(f) + (h ^ (f & (g ^ h))) + 0x92722c85 + w7;
    e += a;
    a += Sig0(b) + ((b & c) | (d & (b | c)));
    w8 += sig0(w9) + w1 + sig1(w6);
    h += Sig1(e) + (g ^ (e & (f ^ g))) + 0xa2bfe8a1 + w8;
    d += h;
    h += Sig0(a) + ((a & b) | (c & (a | b)));
    w9 += sig0(w10) + w2 + sig1(w7);
    g += Sig1(d) + (f ^ (d & (e ^ f))) + 0xa81a664b + w9;
    c += g;
    g += Sig0(h) + ((h & a) | (b & (h | a)));
    w10 += sig0(w11) + w3 + sig1(w8);
    f += Sig1(c) + (e ^ (c & (d ^ e))) + 0xc24b8b70 + w10;
    b += f;
    f += Sig0(g) + ((g & h) | (a & (g | h)));
    w11 += sig0(w12) + w4 + sig1(w9);
    e += Sig1(b) + (d ^ (b & (c ^ d))) + 0xc76c51a3 + w11;
    a += e;
    e += Sig0(f) + ((f & g) | (h & (f | g)));
    w12 += sig0(w13) + w5 + sig1(w10);
    d += Sig1(a) + (c ^ (a & (b ^ c))) + 0xd192e819 + w12;
    h += d;
    d += Sig0(e) + ((e & f) | (g & (e | f)));
    w13 += sig0(w14) + w6 + sig1(w11);
    c += Sig1(h) + (b ^ (h & (a ^ b))) + 0xd6990624 + w13;
    g += c;
    c += Sig0(d) + ((d & e) | (f & (d | e)));
    w14 += sig0(w15) + w7 + sig1(w12);
    b += Sig1(g) + (a ^ (g & (h ^ a))) + 0xf40e3585 + w14;
    f += b;
    b += Sig0(c) + ((c & d) | (e & (c | d)));
    w15 += sig0(w0) + w8 + sig1(w13);
    a += Sig1(f) + (h ^ (f & (g ^ h))) + 0x106aa070 + w15;
    e += a;
    a += Sig0(b) + ((b & c) | (d & (b | c)));
    w0 += sig0(w1) + w9 + sig1(w14);
    h += Sig1(e) + (g ^ (e & (f ^ g))) + 0x19a4c116 + w0;
    d += h;
    h += Sig0(a) + ((a & b) | (c & (a | b)));
    w1 += sig0(w2) + w10 + sig1(w15);
    g += Sig1(d) + (f ^ (d & (e ^ f))) + 0x1e376c08 + w1;
    c += g;
    g += Sig0(h) + ((h & a) | (b & (h | a)));
    w2 += sig0(w3) + w11 + sig1(w0);
    f += Sig1(c) + (e ^ (c & (d ^ e))) + 0x2748774c + w2;
    b += f;
    f += Sig0(g) + ((g & h) | (a & (g | h)));
    w3 += sig0(w4) + w12 + sig1(w1);
    e += Sig1(b) + (d ^ (b & (c ^ d))) + 0x34b0bcb5 + w3;
    a += e;
    e += Sig0(f) + ((f & g) | (h & (f | g)));
    w4 += sig0(w5) + w13 + sig1(w2);
    d += Sig1(a) + (c ^ (a & (b ^ c))) + 0x391c0cb3 + w4;
    h += d;
    d += Sig0(e) + ((e & f) | (g & (e | f)));
    w5 += sig0(w6) + w14 + sig1(w3);
    c += Sig1(h) + (b ^ (h & (a ^ b))) + 0x4ed8aa4a + w5;
    g += c;
    c += Sig0(d) + ((d & e) | (f & (d | e)));
    w6 += sig0(w7) + w15 + sig1(w4);
    b += Sig1(g) + (a ^ (g & (h ^ a))) + 0x5b9cca4f + w6;
    f += b;
    b += Sig0(c) + ((c & d) | (e & (c | d)));
    w7 += sig0(w8) + w0 + sig1(w5);
    a += Sig1(f) + (h ^ (f & (g ^ h))) + 0x682e6ff3 + w7;
    e += a;
    a += Sig0(b) + ((b & c) | (d & (b | c)));
    w8 += sig0(w9) + w1 + sig1(w6);
    h += Sig1(e) + (g ^ (e & (f ^ g))) + 0x748f82ee + w8;
    d += h;
    h += Sig0(a) + ((a & b) | (c & (a | b)));
    w9 += sig0(w10) + w2 + sig1(w7);
    g += Sig1(d) + (f ^ (d & (e ^ f))) + 0x78a5636f + w9;
    c += g;
    g += Sig0(h) + ((h & a) | (b & (h | a)));
    w10 += sig0(w11) + w3 + sig1(w8);
    f += Sig1(c) + (e ^ (c & (d ^ e))) + 0x84c87814 + w10;
    b += f;
    f += Sig0(g) + ((g & h) | (a & (g | h)));
    w11 += sig0(w12) + w4 + sig1(w9);
    e += Sig1(b) + (d ^ (b & (c ^ d))) + 0x8cc70208 + w11;
    a += e;
    e += Sig0(f) + ((f & g) | (h & (f | g)));
    w12 += sig0(w13) + w5 + sig1(w10);
    d += Sig1(a) + (c ^ (a & (b ^ c))) + 0x90befffa + w12;
    h += d;
    d += Sig0(e) + ((e & f) | (g & (e | f)));
    w13 += sig0(w14) + w6 + sig1(w11);
    c += Sig1(h) + (b ^ (h & (a ^ b))) + 0xa4506ceb + w13;
    g += c;
    c += Sig0(d) + ((d & e) | (f & (d | e)));
    w14 += sig0(w15) + w7 + sig1(w12);
    b += Sig1(g) + (a ^ (g & (h ^ a))) + 0xbef9a3f7 + w14;
    f += b;
    b += Sig0(c) + ((c & d) | (e & (c | d)));
    w15 += sig0(w0) + w8 + sig1(w13);
    a += Sig1(f) + (h ^ (f & (g ^ h))) + 0xc67178f2 + w15;
    e += a;
    a += Sig0(b) + ((b & c) | (d & (b | c)));
    h0 += a;
    h1 += b;
    h2 += c;
    h3 += d;
    h4 += e;
    h5 += f;
    h6 += g;
    h7 += h;
    p += 64;
  }
  store<u32>(st, h0, 0);
  store<u32>(st, h1, 4);
  store<u32>(st, h2, 8);
  store<u32>(st, h3, 12);
  store<u32>(st, h4, 16);
  store<u32>(st, h5, 20);
  store<u32>(st, h6, 24);
  store<u32>(st, h7, 28);
}

/** Reset a streaming context. */
export function sha256Init(ctx: usize): void {
  store<u32>(ctx, 0x6a09e667, 0);
  store<u32>(ctx, 0xbb67ae85, 4);
  store<u32>(ctx, 0x3c6ef372, 8);
  store<u32>(ctx, 0xa54ff53a, 12);
  store<u32>(ctx, 0x510e527f, 16);
  store<u32>(ctx, 0x9b05688c, 20);
  store<u32>(ctx, 0x1f83d9ab, 24);
  store<u32>(ctx, 0x5be0cd19, 28);
  store<u64>(ctx, 0, CTX_LEN);
}

/** Absorb `len` bytes at `inPtr`. */
export function sha256Update(ctx: usize, inPtr: usize, len: usize): void {
  const total = load<u64>(ctx, CTX_LEN);
  let used = <usize>(total & 63);
  store<u64>(ctx, total + <u64>len, CTX_LEN);
  if (used != 0) {
    const take = min<usize>(64 - used, len);
    memory.copy(ctx + CTX_BUF + used, inPtr, take);
    used += take;
    inPtr += take;
    len -= take;
    if (used < 64) return;
    compress(ctx, ctx + CTX_BUF, 1);
  }
  const whole = len >> 6;
  if (whole != 0) {
    compress(ctx, inPtr, whole);
    inPtr += whole << 6;
    len &= 63;
  }
  if (len != 0) memory.copy(ctx + CTX_BUF, inPtr, len);
}

/** Pad, finish and write the 32-byte digest to `outPtr` (the context must be re-initialised after). */
export function sha256Final(ctx: usize, outPtr: usize): void {
  const total = load<u64>(ctx, CTX_LEN);
  const used = <usize>(total & 63);
  const buf = ctx + CTX_BUF;
  store<u8>(buf + used, 0x80);
  if (used >= 56) {
    memory.fill(buf + used + 1, 0, 63 - used);
    compress(ctx, buf, 1);
    memory.fill(buf, 0, 56);
  } else {
    memory.fill(buf + used + 1, 0, 55 - used);
  }
  const bits = total << 3;
  store<u32>(buf, bswap32(<u32>(bits >>> 32)), 56);
  store<u32>(buf, bswap32(<u32>bits), 60);
  compress(ctx, buf, 1);
  for (let i: usize = 0; i < 32; i += 4) store<u32>(outPtr + i, bswap32(load<u32>(ctx + i)));
}

/** One-shot SHA-256 of `len` bytes at `inPtr`; the 32-byte digest goes to `outPtr` (may overlap the input). */
export function sha256(inPtr: usize, len: usize, outPtr: usize): void {
  sha256Init(ONE);
  sha256Update(ONE, inPtr, len);
  sha256Final(ONE, outPtr);
}
