/**
 * The proxy-wasm serialization of maps with HTTP fields / gRPC metadata (spec "Serialization"):
 * a little-endian u32 count, then `count` pairs of u32 (key length, value length), then each key and
 * value as bytes followed by a NUL. An empty map is either zero bytes or a single 0x00 byte.
 */
export type HeaderPairs = [string, string][];

import { Buffer, isAscii } from "node:buffer";

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8");
const strict = new TextDecoder("utf-8", { fatal: true });

/** A Buffer view of `b` (no copy): Buffer's latin1 decoding is much cheaper per call than TextDecoder's. */
export function bufferView(b: Uint8Array): Buffer {
  return b instanceof Buffer ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Decode bytes [start, end) of `b`: ASCII (checked in a loop for short runs, natively for long ones) as
 * latin1, which is the same string; anything else with `d` (strict or lenient UTF-8).
 */
function decodeRange(b: Buffer, start: number, end: number, d: { decode(b: Uint8Array): string }): string {
  const n = end - start;
  if (n === 0) return "";
  let ascii: boolean;
  if (n <= 32) {
    let i = start;
    while (i < end && b[i]! < 0x80) i++;
    ascii = i === end;
  } else ascii = isAscii(b.subarray(start, end));
  if (ascii) return b.toString("latin1", start, end);
  return d.decode(b.subarray(start, end));
}

/** Serialize header pairs (keys and values as UTF-8) into a new buffer. */
export function serializeHeaderMap(pairs: readonly (readonly [string, string])[]): Uint8Array {
  if (pairs.length === 0) return new Uint8Array(0); // an empty map is an empty value (as Envoy sends it)
  return serializeHeaderMapInto(pairs, new HeaderMapScratch()).slice();
}

/**
 * A reusable output buffer for serializeHeaderMapInto (grown on demand, never shrunk): the host
 * serializes every map into one of these instead of allocating per string and per map.
 */
export class HeaderMapScratch {
  buf = new Uint8Array(4096);
  dv = new DataView(this.buf.buffer);
  grow(need: number): void {
    let n = this.buf.length * 2;
    while (n < need) n *= 2;
    const next = new Uint8Array(n);
    next.set(this.buf);
    this.buf = next;
    this.dv = new DataView(next.buffer);
  }
}

/** Short ASCII strings are copied char by char; longer or non-ASCII ones go through encodeInto. */
const SHORT = 48;

/** Write `s` as UTF-8 at `at` (the buffer has at least 3 * s.length bytes free); the bytes written. */
function writeUtf8(sc: HeaderMapScratch, s: string, at: number): number {
  const n = s.length;
  if (n <= SHORT) {
    const buf = sc.buf;
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) break;
      buf[at + i] = c;
    }
    if (i === n) return n;
  }
  return enc.encodeInto(s, sc.buf.subarray(at)).written;
}

/**
 * Serialize header pairs into `sc`; the result is a view of its buffer, valid until the next call with
 * the same scratch. One pass: each string is encoded straight into place (no per-string arrays).
 */
export function serializeHeaderMapInto(
  pairs: readonly (readonly [string, string])[],
  sc: HeaderMapScratch,
): Uint8Array {
  const n = serializeHeaderMapLength(pairs, sc); // first: it may grow (replace) sc.buf
  return sc.buf.subarray(0, n);
}

/** serializeHeaderMapInto without the view: the map is sc.buf[0, returned length). */
export function serializeHeaderMapLength(
  pairs: readonly (readonly [string, string])[],
  sc: HeaderMapScratch,
): number {
  const count = pairs.length;
  if (count === 0) return 0;
  let size = 4 + 10 * count;
  for (let i = 0; i < count; i++) {
    const p = pairs[i]!;
    size += p[0].length + p[1].length;
  }
  if (size <= sc.buf.length) {
    const n = writeAsciiMap(pairs, sc.buf);
    if (n >= 0) return n;
  }
  return writeUtf8Map(pairs, sc);
}

/**
 * The map written into `out` (room for every UTF-16 unit as one byte) when every string is ASCII, the
 * usual case: short strings char by char, long ones (a JWT) natively; lengths written byte by byte.
 * -1 (out partly written) otherwise.
 */
function writeAsciiMap(pairs: readonly (readonly [string, string])[], out: Uint8Array): number {
  const n = pairs.length;
  out[0] = n;
  out[1] = n >>> 8;
  out[2] = n >>> 16;
  out[3] = n >>> 24;
  let hdr = 4;
  let data = 4 + 8 * n;
  for (let i = 0; i < n; i++) {
    const p = pairs[i]!;
    const kl = writeAscii(p[0], out, data);
    if (kl < 0) return -1;
    data += kl;
    out[data++] = 0;
    const vl = writeAscii(p[1], out, data);
    if (vl < 0) return -1;
    data += vl;
    out[data++] = 0;
    out[hdr] = kl;
    out[hdr + 1] = kl >>> 8;
    out[hdr + 2] = kl >>> 16;
    out[hdr + 3] = kl >>> 24;
    out[hdr + 4] = vl;
    out[hdr + 5] = vl >>> 8;
    out[hdr + 6] = vl >>> 16;
    out[hdr + 7] = vl >>> 24;
    hdr += 8;
  }
  return data;
}

/** `s` written at `at` when it is ASCII (its length), else -1. */
function writeAscii(s: string, out: Uint8Array, at: number): number {
  const n = s.length;
  if (n > SHORT) {
    // natively; a non-ASCII string encodes to more bytes than it has units (or does not fit)
    const r = enc.encodeInto(s, out.subarray(at, at + n));
    return r.read === n && r.written === n ? n : -1;
  }
  let all = 0;
  for (let j = 0; j < n; j++) {
    const c = s.charCodeAt(j);
    all |= c;
    out[at + j] = c;
  }
  return all < 0x80 ? n : -1;
}

/** The general writer: any string, as UTF-8 (lone surrogates as U+FFFD, as TextEncoder writes them). */
function writeUtf8Map(pairs: readonly (readonly [string, string])[], sc: HeaderMapScratch): number {
  const count = pairs.length;
  let worst = 4 + 10 * count;
  for (let i = 0; i < count; i++) {
    const p = pairs[i]!;
    worst += 3 * (p[0].length + p[1].length); // UTF-16 unit → at most 3 UTF-8 bytes
  }
  if (worst > sc.buf.length) sc.grow(worst);
  const buf = sc.buf;
  const dv = sc.dv;
  dv.setUint32(0, count, true);
  let hdr = 4;
  let data = 4 + 8 * count;
  for (let i = 0; i < count; i++) {
    const p = pairs[i]!;
    const kl = writeUtf8(sc, p[0], data);
    data += kl;
    buf[data++] = 0;
    const vl = writeUtf8(sc, p[1], data);
    data += vl;
    buf[data++] = 0;
    dv.setUint32(hdr, kl, true);
    dv.setUint32(hdr + 4, vl, true);
    hdr += 8;
  }
  return data;
}

/** Why a serialized map was rejected. */
export class HeaderMapParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HeaderMapParseError";
  }
}

/** A little-endian u32 at `at` (the caller checked the bounds). */
function u32le(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/** Set by checkMap: whether every key and value of the map it accepted is ASCII. */
let mapIsAscii = true;
/** Set by checkMap with `fields`: whether every key is lower-case ASCII already. */
let mapKeysLower = true;

/**
 * Why bytes [start, end) of `b` are not a well-formed serialized map, or "" when they are: the lengths
 * account for every byte and every key and value is NUL-terminated. With `fields`, also what the host
 * accepts as HTTP fields: every name non-empty, no NUL, CR or LF inside a name or value. Checked on the
 * bytes in one pass, nothing decoded; sets mapIsAscii.
 */
function checkMap(b: Uint8Array, start: number, end: number, fields: boolean): string {
  const n = end - start;
  if (n === 0 || (n === 1 && b[start] === 0)) return "";
  if (n < 4) return `map of ${n} bytes is shorter than its count`;
  const count = u32le(b, start);
  // each pair needs 8 bytes of sizes and at least 2 NULs: bound count before reading further
  if (count > (n - 4) / 10) return `count ${count} does not fit ${n} bytes`;
  let data = start + 4 + 8 * count;
  let high = 0;
  let upper = false;
  for (let i = 0; i < count; i++) {
    const kl = u32le(b, start + 4 + 8 * i);
    const vl = u32le(b, start + 8 + 8 * i);
    const sep = data + kl;
    const stop = sep + 1 + vl;
    if (stop + 1 > end) return `pair ${i} runs past the end`;
    if (b[sep] !== 0) return `key ${i} is not NUL-terminated`;
    if (b[stop] !== 0) return `value ${i} is not NUL-terminated`;
    if (fields) {
      if (kl === 0) return `key ${i} is empty`;
      for (let j = data; j < sep; j++) {
        const c = b[j]!;
        if (c === 0x0a || c === 0x0d || c === 0) return `pair ${i} holds NUL, CR or LF`;
        if (c >= 0x41 && c <= 0x5a) upper = true;
        high |= c;
      }
      for (let j = sep + 1; j < stop; j++) {
        const c = b[j]!;
        if (c === 0x0a || c === 0x0d || c === 0) return `pair ${i} holds NUL, CR or LF`;
        high |= c;
      }
    } else if (kl + vl <= 64) {
      for (let j = data; j < stop; j++) high |= b[j]!;
    } else high = 0x80;
    data = stop + 1;
  }
  if (data !== end) return `${end - data} trailing bytes after ${count} pairs`;
  mapIsAscii = high < 0x80;
  mapKeysLower = !upper && high < 0x80;
  return "";
}

/**
 * The pairs of the map checkMap just accepted in bytes [start, end) of `buf`, or undefined when a string
 * is not UTF-8. ASCII maps (the usual case) are decoded with one native call for the whole data region,
 * the strings cut from it.
 */
function decodeMap(buf: Buffer, start: number, end: number): HeaderPairs | undefined {
  if (end - start <= 1) return [];
  const count = u32le(buf, start);
  const data = start + 4 + 8 * count;
  const out = new Array<[string, string]>(count);
  if (mapIsAscii || isAscii(buf.subarray(data, end))) {
    const all = buf.toString("latin1", data, end);
    let at = 0;
    for (let i = 0; i < count; i++) {
      const kl = u32le(buf, start + 4 + 8 * i);
      const vl = u32le(buf, start + 8 + 8 * i);
      out[i] = [all.slice(at, at + kl), all.slice(at + kl + 1, at + kl + 1 + vl)];
      at += kl + vl + 2;
    }
    return out;
  }
  let at = data;
  for (let i = 0; i < count; i++) {
    const kl = u32le(buf, start + 4 + 8 * i);
    const vl = u32le(buf, start + 8 + 8 * i);
    try {
      out[i] = [
        decodeRange(buf, at, at + kl, strict),
        decodeRange(buf, at + kl + 1, at + kl + 1 + vl, strict),
      ];
    } catch {
      return undefined;
    }
    at += kl + 1 + vl + 1;
  }
  return out;
}

/**
 * Parse a serialized map strictly: the lengths must account for every byte, every key and value must be
 * NUL-terminated, and bytes must be valid UTF-8. Throws HeaderMapParseError otherwise.
 */
export function parseHeaderMap(bytes: Uint8Array): HeaderPairs {
  const why = checkMap(bytes, 0, bytes.length, false);
  if (why !== "") throw new HeaderMapParseError(why);
  const out = decodeMap(bufferView(bytes), 0, bytes.length);
  if (out === undefined) throw new HeaderMapParseError("a pair is not valid UTF-8");
  return out;
}

/**
 * The HTTP fields serialized in bytes [start, end) of `buf` (guest memory), decoded, names lower-cased
 * (HTTP field names are case-insensitive; the host keeps them lower-case, as Envoy does); undefined when
 * parseHeaderMap would refuse them or a field breaks the host's rules (an empty name; NUL, CR or LF in a
 * name or value). One pass over the bytes, then one decode.
 */
export function parseHeaderFields(buf: Buffer, start: number, end: number): HeaderPairs | undefined {
  if (checkMap(buf, start, end, true) !== "") return undefined;
  const out = decodeMap(buf, start, end);
  if (out !== undefined && !mapKeysLower) for (const p of out) p[0] = p[0].toLowerCase();
  return out;
}

/** Lenient UTF-8 decode of bytes [start, end) of `buf` (U+FFFD for invalid sequences). */
export function utf8Range(buf: Buffer, start: number, end: number): string {
  return decodeRange(buf, start, end, dec);
}

/** UTF-8 encode a string, or pass bytes through. */
export function toBytes(b: Uint8Array | string): Uint8Array {
  return typeof b === "string" ? enc.encode(b) : b;
}

/** Lenient UTF-8 decode (U+FFFD for invalid sequences), for log messages and names. */
export function utf8(b: Uint8Array): string {
  return decodeRange(bufferView(b), 0, b.length, dec);
}

/** An Envoy-style 64-bit little-endian integer property value (e.g. `source.port`). */
export function encodeInt64Property(n: number | bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigInt64(0, BigInt(n), true);
  return out;
}

/** An Envoy-style boolean property value (one byte, 0 or 1). */
export function encodeBoolProperty(b: boolean): Uint8Array {
  return Uint8Array.of(b ? 1 : 0);
}
