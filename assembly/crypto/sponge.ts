// SHA-3 / SHAKE sponge (FIPS 202) over Keccak-f[1600]. A context is CTX_SIZE bytes of linear memory:
// the 200-byte state, then the byte position, the rate and the domain-separation byte.
import { keccakF1600 } from "./keccakf";
import { keccakF1600x2 } from "./keccakx2";

export const CTX_SIZE: usize = 216;
const POS: usize = 200;
const RATE: usize = 204;
const DS: usize = 208;

export const RATE_SHAKE128: u32 = 168;
export const RATE_SHAKE256: u32 = 136;
export const RATE_SHA3_256: u32 = 136;
export const RATE_SHA3_512: u32 = 72;
export const DS_SHAKE: u32 = 0x1f;
export const DS_SHA3: u32 = 0x06;

/** Reset `ctx` for absorbing with the given rate (bytes) and domain-separation byte. */
export function spInit(ctx: usize, rate: u32, ds: u32): void {
  memory.fill(ctx, 0, 200);
  store<u32>(ctx, 0, POS);
  store<u32>(ctx, rate, RATE);
  store<u32>(ctx, ds, DS);
}

/** Absorb `len` bytes from `src`. */
export function spAbsorb(ctx: usize, src: usize, len: usize): void {
  const rate = <usize>load<u32>(ctx, RATE);
  let pos = <usize>load<u32>(ctx, POS);
  let i: usize = 0;
  // bytes until the position is lane-aligned
  while (i < len && (pos & 7) != 0) {
    store<u8>(ctx + pos, load<u8>(ctx + pos) ^ load<u8>(src + i));
    i++;
    pos++;
    if (pos == rate) {
      keccakF1600(ctx);
      pos = 0;
    }
  }
  // whole lanes
  while (len - i >= 8) {
    store<u64>(ctx + pos, load<u64>(ctx + pos) ^ load<u64>(src + i));
    i += 8;
    pos += 8;
    if (pos == rate) {
      keccakF1600(ctx);
      pos = 0;
    }
  }
  while (i < len) {
    store<u8>(ctx + pos, load<u8>(ctx + pos) ^ load<u8>(src + i));
    i++;
    pos++;
    if (pos == rate) {
      keccakF1600(ctx);
      pos = 0;
    }
  }
  store<u32>(ctx, <u32>pos, POS);
}

/** Absorb one byte. */
export function spAbsorbByte(ctx: usize, b: u32): void {
  const rate = load<u32>(ctx, RATE);
  const pos = load<u32>(ctx, POS);
  const p = ctx + <usize>pos;
  store<u8>(p, load<u8>(p) ^ <u8>b);
  if (pos + 1 == rate) {
    keccakF1600(ctx);
    store<u32>(ctx, 0, POS);
  } else store<u32>(ctx, pos + 1, POS);
}

/** Pad and permute: the state then holds the first `rate` output bytes, and squeezing starts at 0. */
export function spFinal(ctx: usize): void {
  const rate = <usize>load<u32>(ctx, RATE);
  const pos = <usize>load<u32>(ctx, POS);
  store<u8>(ctx + pos, load<u8>(ctx + pos) ^ <u8>load<u32>(ctx, DS));
  store<u8>(ctx + rate - 1, load<u8>(ctx + rate - 1) ^ 0x80);
  keccakF1600(ctx);
  store<u32>(ctx, 0, POS);
}

/** Squeeze `len` bytes into `dst` (after spFinal). */
export function spSqueeze(ctx: usize, dst: usize, len: usize): void {
  const rate = <usize>load<u32>(ctx, RATE);
  let pos = <usize>load<u32>(ctx, POS);
  let i: usize = 0;
  while (i < len) {
    if (pos == rate) {
      keccakF1600(ctx);
      pos = 0;
    }
    let n = rate - pos;
    if (n > len - i) n = len - i;
    memory.copy(dst + i, ctx + pos, n);
    i += n;
    pos += n;
  }
  store<u32>(ctx, <u32>pos, POS);
}

/** Squeeze one byte. */
export function spSqueezeByte(ctx: usize): u32 {
  let pos = load<u32>(ctx, POS);
  if (pos == load<u32>(ctx, RATE)) {
    keccakF1600(ctx);
    pos = 0;
  }
  store<u32>(ctx, pos + 1, POS);
  return <u32>load<u8>(ctx + <usize>pos);
}

/** One-shot helper: hash `len` bytes at `src` and write `outLen` bytes to `dst`. */
export function spHash(ctx: usize, rate: u32, ds: u32, src: usize, len: usize, dst: usize, outLen: usize): void {
  spInit(ctx, rate, ds);
  spAbsorb(ctx, src, len);
  spFinal(ctx);
  spSqueeze(ctx, dst, outLen);
}

/** Pad without permuting (for the two-way SIMD permutation below). */
export function spPad(ctx: usize): void {
  const rate = <usize>load<u32>(ctx, RATE);
  const pos = <usize>load<u32>(ctx, POS);
  store<u8>(ctx + pos, load<u8>(ctx + pos) ^ <u8>load<u32>(ctx, DS));
  store<u8>(ctx + rate - 1, load<u8>(ctx + rate - 1) ^ 0x80);
  store<u32>(ctx, 0, POS);
}

/**
 * Start SHAKE128(seed[0..32) || b0 || b1) and pad, ready for squeezing block by block — the matrix
 * sampling XOF of both ML-DSA (ExpandA: rho || j || i) and ML-KEM (SampleNTT: rho || j || i).
 */
export function spShake128Seed2(ctx: usize, seed: usize, b0: i32, b1: i32): void {
  spInit(ctx, RATE_SHAKE128, DS_SHAKE);
  spAbsorb(ctx, seed, 32);
  spAbsorbByte(ctx, b0);
  spAbsorbByte(ctx, b1);
  spPad(ctx);
}

const ST2: usize = memory.data(400, 16);

/** Permute the states of two contexts at once (SIMD build: i64x2 lanes; scalar build: one by one). */
export function keccakF1600Pair(a: usize, b: usize): void {
  if (ASC_FEATURE_SIMD) {
    for (let i: usize = 0; i < 25; i++) {
      const o = i << 3;
      v128.store(ST2 + (i << 4), i64x2.replace_lane(i64x2.splat(load<i64>(a + o)), 1, load<i64>(b + o)));
    }
    keccakF1600x2(ST2);
    for (let i: usize = 0; i < 25; i++) {
      const v = v128.load(ST2 + (i << 4));
      const o = i << 3;
      store<i64>(a + o, i64x2.extract_lane(v, 0));
      store<i64>(b + o, i64x2.extract_lane(v, 1));
    }
    return;
  }
  keccakF1600(a);
  keccakF1600(b);
}

/** After spPad on both: squeeze `len` bytes from each of two contexts with the same rate, pairwise. */
export function spSqueezePair(a: usize, b: usize, dstA: usize, dstB: usize, len: usize): void {
  const rate = <usize>load<u32>(a, RATE);
  let off: usize = 0;
  while (off < len) {
    keccakF1600Pair(a, b);
    let n = rate;
    if (n > len - off) n = len - off;
    memory.copy(dstA + off, a, n);
    memory.copy(dstB + off, b, n);
    off += n;
  }
}
