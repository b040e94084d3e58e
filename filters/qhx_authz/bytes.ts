// Byte-level helpers over raw linear memory: comparison, hashing, base64, UTF-8, decimal numbers.
import { scratchAlloc } from "../proxy-wasm/memory";

export function bytesEq(a: usize, alen: usize, b: usize, blen: usize): bool {
  if (alen != blen) return false;
  let i: usize = 0;
  for (; i + 8 <= alen; i += 8) if (load<u64>(a + i) != load<u64>(b + i)) return false;
  for (; i < alen; i++) if (load<u8>(a + i) != load<u8>(b + i)) return false;
  return true;
}

/** Compare bytes with a static ASCII literal. */
export function eqLit(p: usize, len: usize, lit: string): bool {
  if (<usize>lit.length != len) return false;
  for (let i: usize = 0; i < len; i++) if (<u32>load<u8>(p + i) != <u32>lit.charCodeAt(<i32>i)) return false;
  return true;
}

/** Case-insensitive (ASCII) prefix test against a lower-case literal. */
export function startsWithLitCI(p: usize, len: usize, lit: string): bool {
  const n = <usize>lit.length;
  if (len < n) return false;
  for (let i: usize = 0; i < n; i++) {
    let c = <u32>load<u8>(p + i);
    if (c >= 0x41 && c <= 0x5a) c += 32;
    if (c != <u32>lit.charCodeAt(<i32>i)) return false;
  }
  return true;
}

// The bytes of the literals litBytes was asked for, converted once (they are asked for on every request:
// the peer property's path, the reason header's name, the details): [literal address, bytes address].
const LIT_MAX = 32;
const LIT_AREA_BYTES: usize = 1024;
const LIT_KEYS: usize = memory.data(LIT_MAX * 8, 8);
const LIT_AREA: usize = memory.data(<i32>LIT_AREA_BYTES, 16);
let litCount = 0;
let litTop: usize = 0;

/**
 * The bytes of a static ASCII literal (length = lit.length), read-only: converted from UTF-16 once and
 * kept in a static area (beyond its room, into scratch on each call).
 */
export function litBytes(lit: string): usize {
  const key = <u32>changetype<usize>(lit);
  for (let i = 0; i < litCount; i++) {
    if (load<u32>(LIT_KEYS + (<usize>i << 3)) == key) return <usize>load<u32>(LIT_KEYS + (<usize>i << 3), 4);
  }
  const n = <usize>lit.length;
  let p: usize;
  if (litCount < LIT_MAX && litTop + n <= LIT_AREA_BYTES) {
    p = LIT_AREA + litTop;
    litTop += n;
    store<u32>(LIT_KEYS + (<usize>litCount << 3), key);
    store<u32>(LIT_KEYS + (<usize>litCount << 3), <u32>p, 4);
    litCount++;
  } else p = scratchAlloc(n == 0 ? 1 : n);
  for (let i: usize = 0; i < n; i++) store<u8>(p + i, <u8>lit.charCodeAt(<i32>i));
  return p;
}

/**
 * A 32-bit hash of bytes for hash tables (not cryptographic): eight bytes per step, multiply-xorshift
 * mixing (the constants of splitmix64), so strings that differ in one byte anywhere spread apart.
 */
export function hashBytes(p: usize, len: usize): u32 {
  let h: u64 = <u64>len * 0x9e3779b97f4a7c15;
  let i: usize = 0;
  for (; i + 8 <= len; i += 8) {
    h = (h ^ load<u64>(p + i)) * 0xbf58476d1ce4e5b9;
    h ^= h >> 31;
  }
  let t: u64 = 0;
  for (let k: usize = 0; i < len; i++, k += 8) t |= <u64>load<u8>(p + i) << k;
  h = (h ^ t) * 0x94d049bb133111eb;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9;
  h ^= h >> 32;
  return <u32>h;
}

function b64val(c: u32, url: bool): i32 {
  if (c >= 0x41 && c <= 0x5a) return <i32>(c - 0x41);
  if (c >= 0x61 && c <= 0x7a) return <i32>(c - 0x61 + 26);
  if (c >= 0x30 && c <= 0x39) return <i32>(c - 0x30 + 52);
  if (url) {
    if (c == 0x2d) return 62;
    if (c == 0x5f) return 63;
  } else {
    if (c == 0x2b) return 62;
    if (c == 0x2f) return 63;
  }
  return -1;
}

/**
 * Decode base64 (`url`: base64url without padding, strict; else standard with optional '=' padding)
 * into `out` (room for len*3/4+3 bytes). Returns the decoded length or -1 when malformed (including
 * non-zero trailing bits, so every byte string has exactly one accepted encoding).
 */
export function base64Decode(src: usize, len: usize, out: usize, url: bool): isize {
  let n = len;
  if (!url) {
    if (n % 4 != 0) return -1;
    if (n > 0 && load<u8>(src + n - 1) == 0x3d) n--;
    if (n > 0 && load<u8>(src + n - 1) == 0x3d) n--;
  }
  if (n % 4 == 1) return -1;
  let o: usize = 0;
  let i: usize = 0;
  while (i + 4 <= n) {
    const a = b64val(load<u8>(src + i), url);
    const b = b64val(load<u8>(src + i + 1), url);
    const c = b64val(load<u8>(src + i + 2), url);
    const d = b64val(load<u8>(src + i + 3), url);
    if ((a | b | c | d) < 0) return -1;
    const v = (<u32>a << 18) | (<u32>b << 12) | (<u32>c << 6) | <u32>d;
    store<u8>(out + o, <u8>(v >> 16));
    store<u8>(out + o + 1, <u8>(v >> 8));
    store<u8>(out + o + 2, <u8>v);
    o += 3;
    i += 4;
  }
  const rest = n - i;
  if (rest == 2) {
    const a = b64val(load<u8>(src + i), url);
    const b = b64val(load<u8>(src + i + 1), url);
    if ((a | b) < 0 || (b & 15) != 0) return -1;
    store<u8>(out + o, <u8>((a << 2) | (b >> 4)));
    o += 1;
  } else if (rest == 3) {
    const a = b64val(load<u8>(src + i), url);
    const b = b64val(load<u8>(src + i + 1), url);
    const c = b64val(load<u8>(src + i + 2), url);
    if ((a | b | c) < 0 || (c & 3) != 0) return -1;
    store<u8>(out + o, <u8>((a << 2) | (b >> 4)));
    store<u8>(out + o + 1, <u8>(((b & 15) << 4) | (c >> 2)));
    o += 2;
  }
  return <isize>o;
}

/**
 * Decode well-formed UTF-8 into UTF-16 code units at `out` (room for len units). Returns the number of
 * units, or -1 for ill-formed UTF-8 (overlong forms, surrogates, beyond U+10FFFF, truncation).
 */
export function utf8ToUtf16(p: usize, len: usize, out: usize): isize {
  let i: usize = 0;
  let o: usize = 0;
  while (i < len) {
    const c = <u32>load<u8>(p + i);
    let cp: u32;
    let n: usize;
    if (c < 0x80) {
      cp = c;
      n = 1;
    } else if (c >= 0xc2 && c < 0xe0) {
      cp = c & 0x1f;
      n = 2;
    } else if (c >= 0xe0 && c < 0xf0) {
      cp = c & 0x0f;
      n = 3;
    } else if (c >= 0xf0 && c < 0xf5) {
      cp = c & 0x07;
      n = 4;
    } else return -1;
    if (i + n > len) return -1;
    for (let k: usize = 1; k < n; k++) {
      const cc = <u32>load<u8>(p + i + k);
      if ((cc & 0xc0) != 0x80) return -1;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) return -1;
    if (cp >= 0xd800 && cp <= 0xdfff) return -1;
    if (cp >= 0x10000) {
      const v = cp - 0x10000;
      store<u16>(out + (o << 1), <u16>(0xd800 + (v >> 10)));
      store<u16>(out + ((o + 1) << 1), <u16>(0xdc00 + (v & 0x3ff)));
      o += 2;
    } else {
      store<u16>(out + (o << 1), <u16>cp);
      o += 1;
    }
    i += n;
  }
  return <isize>o;
}

/** Write `v` (>= 0) in decimal at `out`; returns the length. */
export function writeDecimal(out: usize, v: u64): usize {
  if (v == 0) {
    store<u8>(out, 0x30);
    return 1;
  }
  let n: usize = 0;
  let x = v;
  while (x > 0) {
    n++;
    x /= 10;
  }
  x = v;
  for (let i: usize = n; i > 0; i--) {
    store<u8>(out + i - 1, <u8>(0x30 + <u32>(x % 10)));
    x /= 10;
  }
  return n;
}
