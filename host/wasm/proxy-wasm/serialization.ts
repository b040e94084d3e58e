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
  const count = pairs.length;
  if (count === 0) return sc.buf.subarray(0, 0);
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
  return buf.subarray(0, data);
}

/** Why a serialized map was rejected. */
export class HeaderMapParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HeaderMapParseError";
  }
}

/**
 * Parse a serialized map strictly: the lengths must account for every byte, every key and value must be
 * NUL-terminated, and bytes must be valid UTF-8. Throws HeaderMapParseError otherwise.
 */
export function parseHeaderMap(bytes: Uint8Array): HeaderPairs {
  if (bytes.length === 0 || (bytes.length === 1 && bytes[0] === 0)) return [];
  if (bytes.length < 4)
    throw new HeaderMapParseError(`map of ${bytes.length} bytes is shorter than its count`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const buf = bufferView(bytes);
  const count = dv.getUint32(0, true);
  // each pair needs 8 bytes of sizes and at least 2 NULs: bound count before allocating anything
  if (count > (bytes.length - 4) / 10)
    throw new HeaderMapParseError(`count ${count} does not fit ${bytes.length} bytes`);
  let data = 4 + 8 * count;
  const out: HeaderPairs = [];
  for (let i = 0; i < count; i++) {
    const kl = dv.getUint32(4 + 8 * i, true);
    const vl = dv.getUint32(8 + 8 * i, true);
    if (data + kl + 1 + vl + 1 > bytes.length) throw new HeaderMapParseError(`pair ${i} runs past the end`);
    if (bytes[data + kl] !== 0) throw new HeaderMapParseError(`key ${i} is not NUL-terminated`);
    if (bytes[data + kl + 1 + vl] !== 0) throw new HeaderMapParseError(`value ${i} is not NUL-terminated`);
    let k: string;
    let v: string;
    try {
      k = decodeRange(buf, data, data + kl, strict);
      v = decodeRange(buf, data + kl + 1, data + kl + 1 + vl, strict);
    } catch {
      throw new HeaderMapParseError(`pair ${i} is not valid UTF-8`);
    }
    out.push([k, v]);
    data += kl + 1 + vl + 1;
  }
  if (data !== bytes.length)
    throw new HeaderMapParseError(`${bytes.length - data} trailing bytes after ${count} pairs`);
  return out;
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
