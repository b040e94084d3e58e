/**
 * Big-endian reading of TPM 2.0 marshaled structures (TPM 2.0 Part 2). Every read is bounds-checked:
 * truncated or garbage input throws QhxError("QHX_ATTESTATION_FAILED", "tpm: …"), never a RangeError.
 */
import { QhxError } from "../../../core/errors.ts";

export const tpmFail = (m: string) => new QhxError("QHX_ATTESTATION_FAILED", `tpm: ${m}`);

export class TpmReader {
  private readonly buf: Buffer;
  private pos = 0;
  private readonly what: string;

  constructor(bytes: Uint8Array, what: string) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.what = what;
  }

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  private need(n: number, field: string): void {
    if (this.remaining < n) throw tpmFail(`${this.what}: truncated at ${field}`);
  }

  u8(field: string): number {
    this.need(1, field);
    return this.buf.readUInt8(this.pos++);
  }

  u16(field: string): number {
    this.need(2, field);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(field: string): number {
    this.need(4, field);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(field: string): bigint {
    this.need(8, field);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  bytes(n: number, field: string): Buffer {
    this.need(n, field);
    const v = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return v;
  }

  /** The bytes from `start` up to the current position. */
  bytesFrom(start: number): Buffer {
    return Buffer.from(this.buf.subarray(start, this.pos));
  }

  /** A TPM2B_*: UINT16 size, then that many bytes. `max` bounds the size (the union's largest member). */
  tpm2b(field: string, max = 0xffff): Buffer {
    const n = this.u16(`${field}.size`);
    if (n > max) throw tpmFail(`${this.what}: ${field} is ${n} bytes, more than ${max}`);
    return this.bytes(n, field);
  }

  /** Everything parsed: trailing bytes are an error (a structure is never followed by junk). */
  end(): void {
    if (this.remaining !== 0) throw tpmFail(`${this.what}: ${this.remaining} trailing bytes`);
  }
}

export function u16be(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}

export function u32be(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}

/** Marshal a TPM2B: UINT16 size || bytes. */
export function tpm2b(bytes: Uint8Array): Buffer {
  if (bytes.length > 0xffff) throw tpmFail("TPM2B too large");
  return Buffer.concat([u16be(bytes.length), bytes]);
}
