// A strict, allocation-free JSON reader for flat objects (JWT headers and claims, the configuration
// wrapper): members are visited one at a time; strings are unescaped into scratch memory (UTF-8),
// integers are read exactly, nested values are validated and skipped. Any syntax error stops the walk.
import { scratchAlloc } from "../proxy-wasm/memory";

export const J_STRING = 1;
export const J_NUMBER = 2;
export const J_BOOL = 3;
export const J_NULL = 4;
export const J_ARRAY = 5;
export const J_OBJECT = 6;

let p: usize = 0;
let end: usize = 0;
export let jsonError = false;

export let keyPtr: usize = 0;
export let keyLen: usize = 0;
export let valType = 0;
export let valStart: usize = 0; // raw span of the value
export let valEnd: usize = 0;
export let strPtr: usize = 0; // unescaped string value (J_STRING)
export let strLen: usize = 0;
export let numInt: i64 = 0; // J_NUMBER: integer part (exact up to 2^53), numIsInt when no fraction/exponent
export let numIsInt = false;

function ws(): void {
  while (p < end) {
    const c = load<u8>(p);
    if (c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d) p++;
    else break;
  }
}

function hex4(at: usize): i32 {
  if (at + 4 > end) return -1;
  let v = 0;
  for (let i: usize = 0; i < 4; i++) {
    const c = <i32>load<u8>(at + i);
    let d: i32;
    if (c >= 0x30 && c <= 0x39) d = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) d = c - 0x61 + 10;
    else if (c >= 0x41 && c <= 0x46) d = c - 0x41 + 10;
    else return -1;
    v = (v << 4) | d;
  }
  return v;
}

function putUtf8(out: usize, o: usize, cp: u32): usize {
  if (cp < 0x80) {
    store<u8>(out + o, <u8>cp);
    return o + 1;
  }
  if (cp < 0x800) {
    store<u8>(out + o, <u8>(0xc0 | (cp >> 6)));
    store<u8>(out + o + 1, <u8>(0x80 | (cp & 0x3f)));
    return o + 2;
  }
  if (cp < 0x10000) {
    store<u8>(out + o, <u8>(0xe0 | (cp >> 12)));
    store<u8>(out + o + 1, <u8>(0x80 | ((cp >> 6) & 0x3f)));
    store<u8>(out + o + 2, <u8>(0x80 | (cp & 0x3f)));
    return o + 3;
  }
  store<u8>(out + o, <u8>(0xf0 | (cp >> 18)));
  store<u8>(out + o + 1, <u8>(0x80 | ((cp >> 12) & 0x3f)));
  store<u8>(out + o + 2, <u8>(0x80 | ((cp >> 6) & 0x3f)));
  store<u8>(out + o + 3, <u8>(0x80 | (cp & 0x3f)));
  return o + 4;
}

/** Parse a string at p (on the opening quote); when `out` != 0, unescape into it. Returns the length or -1. */
function str(out: usize): isize {
  if (p >= end || load<u8>(p) != 0x22) return -1;
  p++;
  let o: usize = 0;
  while (p < end) {
    const c = <u32>load<u8>(p);
    if (c == 0x22) {
      p++;
      return <isize>o;
    }
    if (c < 0x20) return -1;
    if (c == 0x5c) {
      if (p + 1 >= end) return -1;
      const e = <u32>load<u8>(p + 1);
      p += 2;
      let cp: u32 = 0;
      if (e == 0x22 || e == 0x5c || e == 0x2f) cp = e;
      else if (e == 0x62) cp = 8;
      else if (e == 0x66) cp = 12;
      else if (e == 0x6e) cp = 10;
      else if (e == 0x72) cp = 13;
      else if (e == 0x74) cp = 9;
      else if (e == 0x75) {
        const h = hex4(p);
        if (h < 0) return -1;
        p += 4;
        cp = <u32>h;
        if (cp >= 0xd800 && cp < 0xdc00) {
          if (p + 6 > end || load<u8>(p) != 0x5c || load<u8>(p + 1) != 0x75) return -1;
          const l = hex4(p + 2);
          if (l < 0xdc00 || l > 0xdfff) return -1;
          p += 6;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (<u32>l - 0xdc00);
        } else if (cp >= 0xdc00 && cp <= 0xdfff) return -1;
      } else return -1;
      if (out != 0) o = putUtf8(out, o, cp);
      else o += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
      continue;
    }
    if (out != 0) store<u8>(out + o, <u8>c);
    o++;
    p++;
  }
  return -1;
}

function lit(s: string): bool {
  const n = <usize>s.length;
  if (p + n > end) return false;
  for (let i: usize = 0; i < n; i++) if (<u32>load<u8>(p + i) != <u32>s.charCodeAt(<i32>i)) return false;
  p += n;
  return true;
}

function number(): bool {
  const start = p;
  let neg = false;
  if (p < end && load<u8>(p) == 0x2d) {
    neg = true;
    p++;
  }
  if (p >= end) return false;
  let c = load<u8>(p);
  if (c == 0x30) p++;
  else if (c >= 0x31 && c <= 0x39) {
    while (p < end && load<u8>(p) >= 0x30 && load<u8>(p) <= 0x39) p++;
  } else return false;
  const intEnd = p;
  let isInt = true;
  if (p < end && load<u8>(p) == 0x2e) {
    isInt = false;
    p++;
    const f = p;
    while (p < end && load<u8>(p) >= 0x30 && load<u8>(p) <= 0x39) p++;
    if (p == f) return false;
  }
  if (p < end && (load<u8>(p) == 0x65 || load<u8>(p) == 0x45)) {
    isInt = false;
    p++;
    if (p < end && (load<u8>(p) == 0x2b || load<u8>(p) == 0x2d)) p++;
    const f = p;
    while (p < end && load<u8>(p) >= 0x30 && load<u8>(p) <= 0x39) p++;
    if (p == f) return false;
  }
  // integer part (saturating beyond 2^53: such values never pass a time check anyway)
  let v: i64 = 0;
  for (let q = start + (neg ? 1 : 0); q < intEnd; q++) {
    if (v < 9007199254740992) v = v * 10 + <i64>(load<u8>(q) - 0x30);
  }
  numInt = neg ? -v : v;
  numIsInt = isInt;
  c = 0;
  return true;
}

function skip(depth: i32): bool {
  if (depth > 32) return false;
  ws();
  if (p >= end) return false;
  const c = load<u8>(p);
  if (c == 0x22) return str(0) >= 0;
  if (c == 0x7b || c == 0x5b) {
    const obj = c == 0x7b;
    p++;
    ws();
    if (p < end && load<u8>(p) == (obj ? 0x7d : 0x5d)) {
      p++;
      return true;
    }
    while (true) {
      if (obj) {
        ws();
        if (str(0) < 0) return false;
        ws();
        if (p >= end || load<u8>(p) != 0x3a) return false;
        p++;
      }
      if (!skip(depth + 1)) return false;
      ws();
      if (p >= end) return false;
      const d = load<u8>(p);
      p++;
      if (d == 0x2c) continue;
      if (d == (obj ? 0x7d : 0x5d)) return true;
      return false;
    }
  }
  if (c == 0x74) return lit("true");
  if (c == 0x66) return lit("false");
  if (c == 0x6e) return lit("null");
  return number();
}

let first = true;

/** Start walking the object at [ptr, ptr+len); false when it does not start with '{'. */
export function objectBegin(ptr: usize, len: usize): bool {
  p = ptr;
  end = ptr + len;
  jsonError = false;
  first = true;
  ws();
  if (p >= end || load<u8>(p) != 0x7b) {
    jsonError = true;
    return false;
  }
  p++;
  return true;
}

/** The next member (key and value); false at the end of the object or on an error (jsonError). */
export function nextMember(): bool {
  if (jsonError) return false;
  ws();
  if (p >= end) {
    jsonError = true;
    return false;
  }
  if (load<u8>(p) == 0x7d) {
    p++;
    ws();
    if (p != end) jsonError = true; // trailing garbage
    return false;
  }
  if (!first) {
    if (load<u8>(p) != 0x2c) {
      jsonError = true;
      return false;
    }
    p++;
    ws();
  }
  first = false;
  // key
  const save = p;
  const kl = str(0);
  if (kl < 0) {
    jsonError = true;
    return false;
  }
  p = save;
  keyPtr = scratchAlloc(<usize>kl + 1);
  keyLen = <usize>str(keyPtr);
  ws();
  if (p >= end || load<u8>(p) != 0x3a) {
    jsonError = true;
    return false;
  }
  p++;
  ws();
  if (p >= end) {
    jsonError = true;
    return false;
  }
  valStart = p;
  const c = load<u8>(p);
  if (c == 0x22) {
    const sl = str(0);
    if (sl < 0) {
      jsonError = true;
      return false;
    }
    p = valStart;
    strPtr = scratchAlloc(<usize>sl + 1);
    strLen = <usize>str(strPtr);
    valType = J_STRING;
  } else {
    if (!skip(0)) {
      jsonError = true;
      return false;
    }
    valType = c == 0x7b ? J_OBJECT : c == 0x5b ? J_ARRAY : c == 0x74 || c == 0x66 ? J_BOOL : c == 0x6e ? J_NULL : J_NUMBER;
    if (valType == J_NUMBER) {
      const q = p;
      p = valStart;
      number();
      p = q;
    }
  }
  valEnd = p;
  return true;
}

// ---- arrays of strings ----

let ap: usize = 0;
let aEnd: usize = 0;
let aFirst = true;

/** Walk the array value [start, end) of the current member. */
export function arrayBegin(start: usize, stop: usize): void {
  ap = start + 1;
  aEnd = stop;
  aFirst = true;
}

/** The next element as a string (strPtr/strLen); 0 at the end, -1 when an element is not a string. */
export function nextString(): i32 {
  const sp = p;
  const se = end;
  p = ap;
  end = aEnd;
  ws();
  let r: i32 = 0;
  if (p < end && load<u8>(p) == 0x5d) r = 0;
  else {
    if (!aFirst) {
      if (p < end && load<u8>(p) == 0x2c) {
        p++;
        ws();
      } else r = -1;
    }
    if (r == 0) {
      const save = p;
      const sl = str(0);
      if (sl < 0) r = -1;
      else {
        p = save;
        strPtr = scratchAlloc(<usize>sl + 1);
        strLen = <usize>str(strPtr);
        r = 1;
      }
    }
  }
  aFirst = false;
  ap = p;
  p = sp;
  end = se;
  return r;
}
