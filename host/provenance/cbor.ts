/**
 * Deterministic CBOR (RFC 8949 §4.2.1 "core deterministic encoding") on top of cborg: preferred
 * (shortest) argument encoding, definite lengths only, map keys sorted by the bytewise order of their
 * encodings, no duplicate keys. QHx's provenance data uses the subset integers, byte and text strings,
 * arrays, maps (integer or text keys), booleans, null and tags; floating point is refused, so no float
 * canonicalization question arises.
 *
 * Decoding is strict: anything a deterministic encoder would not have produced (non-minimal integers or
 * lengths, indefinite lengths, unsorted or duplicate map keys, undefined, floats, trailing bytes) is a
 * ValidationError QHX_CBOR_INVALID. Maps decode to `Map` so integer keys (COSE labels) survive.
 */
import * as cborg from "cborg";
import { QhxError } from "../core/errors.ts";

export type CborValue =
  | number
  | bigint
  | string
  | boolean
  | null
  | Uint8Array
  | CborValue[]
  | Map<CborValue, CborValue>
  | Tagged
  | { [k: string]: CborValue };

/** A CBOR tag (major type 6) around a value. */
export class Tagged {
  readonly tag: number;
  readonly value: CborValue;
  constructor(tag: number, value: CborValue) {
    this.tag = tag;
    this.value = value;
  }
}

export class CborError extends QhxError {
  constructor(message: string) {
    super("QHX_CBOR_INVALID", message);
    this.name = "CborError";
  }
}

const { Type } = cborg;

function checkValue(v: unknown, depth: number): void {
  if (depth > 32) throw new CborError("nesting deeper than 32 levels");
  if (typeof v === "number" && !Number.isSafeInteger(v)) {
    throw new CborError(`only integers are encodable (got ${v})`);
  }
  if (v === undefined) throw new CborError("undefined is not encodable");
  if (Array.isArray(v)) for (const x of v) checkValue(x, depth + 1);
  else if (v instanceof Map) {
    for (const [k, x] of v) {
      if (typeof k !== "string" && !(typeof k === "number" && Number.isSafeInteger(k))) {
        throw new CborError("map keys must be integers or text strings");
      }
      checkValue(x, depth + 1);
    }
  } else if (v instanceof Tagged) throw new CborError("tags are only supported at the top level");
  else if (v !== null && typeof v === "object" && !(v instanceof Uint8Array)) {
    for (const x of Object.values(v)) checkValue(x, depth + 1);
  }
}

/** cborg's RFC 8949 options: map keys sorted by the bytewise order of their encodings. */
const encodeOptions: cborg.EncodeOptions = { ...cborg.rfc8949EncodeOptions, float64: false };

/** The head of a data item of major type `major` with argument `n`, in preferred (shortest) form. */
export function head(major: number, n: number): Uint8Array {
  const m = major << 5;
  if (n < 24) return Uint8Array.of(m | n);
  if (n < 0x100) return Uint8Array.of(m | 24, n);
  if (n < 0x10000) return Uint8Array.of(m | 25, n >> 8, n & 0xff);
  if (n < 0x100000000) return Uint8Array.of(m | 26, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  throw new CborError(`tag ${n} is too large`);
}

/**
 * Deterministic encoding of `value` (RFC 8949 §4.2.1). A Tagged value is accepted at the top level only
 * (COSE_Sign1's tag 18), which is all QHx needs.
 */
export function encodeCbor(value: CborValue): Uint8Array {
  if (value instanceof Tagged) {
    if (!Number.isSafeInteger(value.tag) || value.tag < 0) throw new CborError("invalid tag number");
    const inner = encodeCbor(value.value);
    if (value.value instanceof Tagged) throw new CborError("nested tags are not supported");
    return Buffer.concat([head(6, value.tag), inner]);
  }
  checkValue(value, 0);
  try {
    return cborg.encode(value, encodeOptions);
  } catch (e) {
    throw new CborError(`cannot encode: ${(e as Error).message}`);
  }
}

const tokenizerOptions: cborg.DecodeOptions = {
  strict: true,
  allowIndefinite: false,
  allowUndefined: false,
  allowInfinity: false,
  allowNaN: false,
  allowBigInt: false,
};

type Tokenizer = InstanceType<typeof cborg.Tokenizer>;

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

/**
 * One data item from cborg's strict tokenizer (minimal heads, definite lengths only), checking the
 * deterministic map key order (bytewise order of the keys' encodings, no duplicates) as it goes.
 */
function readItem(t: Tokenizer, bytes: Uint8Array, depth: number): CborValue {
  if (depth > 32) throw new CborError("nesting deeper than 32 levels");
  if (t.done()) throw new CborError("truncated input");
  const tok = t.next();
  switch (tok.type) {
    case Type.uint:
    case Type.negint:
      if (typeof tok.value !== "number") throw new CborError("integer out of range");
      return tok.value;
    case Type.bytes:
      return new Uint8Array(tok.value as Uint8Array);
    case Type.string:
      return tok.value as string;
    case Type.true:
      return true;
    case Type.false:
      return false;
    case Type.null:
      return null;
    case Type.array: {
      const n = tok.value as number;
      const a: CborValue[] = [];
      for (let i = 0; i < n; i++) a.push(readItem(t, bytes, depth + 1));
      return a;
    }
    case Type.map: {
      const n = tok.value as number;
      const m = new Map<CborValue, CborValue>();
      let prev: Uint8Array | undefined;
      for (let i = 0; i < n; i++) {
        const ks = t.pos();
        const k = readItem(t, bytes, depth + 1);
        if (typeof k !== "string" && typeof k !== "number")
          throw new CborError("map keys must be integers or text strings");
        const kb = bytes.subarray(ks, t.pos());
        if (prev) {
          const c = compareBytes(prev, kb);
          if (c === 0) throw new CborError(`duplicate map key ${JSON.stringify(k)}`);
          if (c > 0) throw new CborError("map keys are not in deterministic order (RFC 8949 §4.2.1)");
        }
        prev = kb;
        m.set(k, readItem(t, bytes, depth + 1));
      }
      return m;
    }
    case Type.tag:
      return new Tagged(tok.value as number, readItem(t, bytes, depth + 1));
    case Type.float:
      throw new CborError("floating-point values are not accepted");
    default:
      throw new CborError(`unexpected ${tok.type.name}`);
  }
}

/**
 * Decode one deterministically encoded CBOR item that spans all of `bytes`. Throws CborError for
 * malformed, non-deterministic (non-minimal heads, indefinite lengths, unsorted or duplicate keys),
 * unsupported (floats, undefined, big integers) or trailing input. Maps decode to Map.
 */
export function decodeCbor(bytes: Uint8Array): CborValue {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new CborError("empty input");
  const t = new cborg.Tokenizer(bytes, tokenizerOptions);
  let v: CborValue;
  try {
    v = readItem(t, bytes, 0);
  } catch (e) {
    if (e instanceof CborError) throw e;
    throw new CborError((e as Error).message.replace(/^CBOR decode error: /, ""));
  }
  if (!t.done()) throw new CborError("trailing bytes after the data item");
  return v;
}

export function bytesEq(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}

// --- typed accessors for decoded structures -----------------------------------------------------------

export function asMap(v: CborValue | undefined, what: string): Map<CborValue, CborValue> {
  if (!(v instanceof Map)) throw new CborError(`${what} must be a map`);
  return v;
}

export function asArray(v: CborValue | undefined, what: string): CborValue[] {
  if (!Array.isArray(v)) throw new CborError(`${what} must be an array`);
  return v;
}

export function asBytes(v: CborValue | undefined, what: string, len?: number): Uint8Array {
  if (!(v instanceof Uint8Array)) throw new CborError(`${what} must be a byte string`);
  if (len !== undefined && v.length !== len)
    throw new CborError(`${what} must be ${len} bytes, got ${v.length}`);
  return v;
}

export function asText(v: CborValue | undefined, what: string): string {
  if (typeof v !== "string") throw new CborError(`${what} must be a text string`);
  return v;
}

export function asUint(v: CborValue | undefined, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new CborError(`${what} must be an unsigned integer`);
  }
  return v;
}

export function asInt(v: CborValue | undefined, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw new CborError(`${what} must be an integer`);
  return v;
}
