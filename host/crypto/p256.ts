/**
 * ECDSA P-256 (ES256) verification and SHA-256 on the Wasm kernels (assembly/crypto/p256.ts, sha256.ts),
 * through the same module instance as the post-quantum kernels (host/crypto/wasm.ts).
 *
 *   ecdsaP256Verify(publicKey, message, signature)      signature = 64-byte r || s (IEEE P1363, JWS ES256)
 *   ecdsaP256VerifyDer(publicKey, message, derSignature) signature = strict DER ECDSA-Sig-Value (X.509)
 *   ecdsaP256VerifyDigest(publicKey, digest, signature)   digest already computed (32 bytes)
 *   sha256(data) / new Sha256().update(…).digest()
 *
 * Public keys are SEC 1 points: 65-byte uncompressed (0x04 || X || Y) or 33-byte compressed
 * (0x02/0x03 || X, decompressed here). Verification returns false for every malformed input (wrong
 * lengths, bad prefix, point not on the curve, r or s outside [1, n-1], non-canonical DER); only a
 * non-Uint8Array argument throws (QHX_CRYPTO_TYPE).
 *
 * DER policy: only canonical DER is accepted (definite short-form lengths, minimal non-negative
 * INTEGERs, no trailing bytes), which is what Wycheproof's ecdsa_secp256r1_sha256 vectors expect
 * (that file has no "acceptable" cases; BER encodings such as long-form lengths or padded integers are
 * "invalid" there and are rejected here).
 */
import { QhxError } from "../core/errors.ts";
import { loadCryptoWasm, type CryptoWasmExports, type WasmFlavour } from "./wasm.ts";

/** The exports of assembly/crypto/p256.ts and sha256.ts (re-exported by assembly/crypto/index.ts). */
interface P256Exports extends CryptoWasmExports {
  sha256(inPtr: number, len: number, outPtr: number): void;
  sha256Init(ctx: number): void;
  sha256Update(ctx: number, inPtr: number, len: number): void;
  sha256Final(ctx: number, outPtr: number): void;
  sha256CtxPtr(): number;
  sha256CtxSize(): number;
  p256Verify(hashPtr: number, pubPtr: number, sigPtr: number): number;
}

function kernels(flavour?: WasmFlavour): P256Exports {
  const w = loadCryptoWasm(flavour) as P256Exports;
  if (typeof w.p256Verify !== "function" || typeof w.sha256 !== "function") {
    throw new QhxError("QHX_WASM_INVALID", "the crypto kernels predate P-256/SHA-256", {
      hint: "run npm run build:wasm",
    });
  }
  return w;
}

function checkBytes(what: string, b: unknown): asserts b is Uint8Array {
  if (!(b instanceof Uint8Array)) throw new QhxError("QHX_CRYPTO_TYPE", `${what} must be a Uint8Array`);
}

// ---- SHA-256 ----

const DIGEST = 32;

/** One SHA-256 in progress; its state lives on the host and is swapped into the kernel per call. */
export class Sha256 {
  private readonly w: P256Exports;
  private readonly state: Uint8Array;
  private done = false;

  constructor(flavour?: WasmFlavour) {
    this.w = kernels(flavour);
    this.w.sha256Init(this.w.sha256CtxPtr());
    this.state = this.ctx().slice();
  }

  private ctx(): Uint8Array {
    return new Uint8Array(this.w.memory.buffer, this.w.sha256CtxPtr(), this.w.sha256CtxSize());
  }

  update(data: Uint8Array): this {
    checkBytes("data", data);
    if (this.done) throw new QhxError("QHX_CRYPTO_STATE", "SHA-256 already finished");
    const w = this.w;
    const io = w.ioPtr();
    const cap = w.ioCap();
    this.ctx().set(this.state);
    for (let off = 0; off < data.length; off += cap) {
      const part = data.subarray(off, Math.min(data.length, off + cap));
      new Uint8Array(w.memory.buffer, io, part.length).set(part);
      w.sha256Update(w.sha256CtxPtr(), io, part.length);
    }
    this.state.set(this.ctx());
    return this;
  }

  /** The 32-byte digest (once). */
  digest(): Uint8Array {
    if (this.done) throw new QhxError("QHX_CRYPTO_STATE", "SHA-256 already finished");
    this.done = true;
    const w = this.w;
    this.ctx().set(this.state);
    w.sha256Final(w.sha256CtxPtr(), w.ioPtr());
    return new Uint8Array(w.memory.buffer, w.ioPtr(), DIGEST).slice();
  }
}

/** Hash `data` into IO[0..32) of the kernel module (one-shot when it fits beside the digest). */
function hashInto(w: P256Exports, data: Uint8Array): void {
  const io = w.ioPtr();
  if (data.length <= w.ioCap() - 256) {
    new Uint8Array(w.memory.buffer, io + 256, data.length).set(data);
    w.sha256(io + 256, data.length, io);
    return;
  }
  const ctx = w.sha256CtxPtr();
  const saved = new Uint8Array(w.memory.buffer, ctx, w.sha256CtxSize()).slice();
  w.sha256Init(ctx);
  const cap = w.ioCap();
  for (let off = 0; off < data.length; off += cap) {
    const part = data.subarray(off, Math.min(data.length, off + cap));
    new Uint8Array(w.memory.buffer, io, part.length).set(part);
    w.sha256Update(ctx, io, part.length);
  }
  w.sha256Final(ctx, io);
  new Uint8Array(w.memory.buffer, ctx, saved.length).set(saved);
}

/** One-shot SHA-256 on the Wasm kernel. */
export function sha256(data: Uint8Array, flavour?: WasmFlavour): Uint8Array {
  checkBytes("data", data);
  const w = kernels(flavour);
  hashInto(w, data);
  return new Uint8Array(w.memory.buffer, w.ioPtr(), DIGEST).slice();
}

// ---- public keys ----

const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;

function modPow(b: bigint, e: bigint, m: bigint): bigint {
  let r = 1n;
  b %= m;
  while (e > 0n) {
    if (e & 1n) r = (r * b) % m;
    b = (b * b) % m;
    e >>= 1n;
  }
  return r;
}

function bytesToBig(b: Uint8Array): bigint {
  let x = 0n;
  for (const v of b) x = (x << 8n) | BigInt(v);
  return x;
}

function bigTo32(x: bigint): Uint8Array {
  const out = new Uint8Array(32);
  for (let i = 31; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

/**
 * The 65-byte uncompressed form of a SEC 1 public key, or null when the encoding is malformed (a
 * compressed key whose x is >= p or has no square root). On-curve checks of uncompressed keys are the
 * kernel's.
 */
export function uncompressP256(publicKey: Uint8Array): Uint8Array | null {
  checkBytes("publicKey", publicKey);
  if (publicKey.length === 65) return publicKey[0] === 0x04 ? publicKey : null;
  if (publicKey.length !== 33 || (publicKey[0] !== 0x02 && publicKey[0] !== 0x03)) return null;
  const x = bytesToBig(publicKey.subarray(1));
  if (x >= P) return null;
  const rhs = (((x * x) % P) * x - 3n * x + B + 3n * P) % P;
  const y = modPow(rhs, (P + 1n) / 4n, P); // p = 3 (mod 4)
  if ((y * y) % P !== rhs) return null;
  const yy = (y & 1n) === BigInt(publicKey[0]! & 1) ? y : (P - y) % P;
  if (yy === 0n && publicKey[0] === 0x03) return null;
  const out = new Uint8Array(65);
  out[0] = 0x04;
  out.set(publicKey.subarray(1), 1);
  out.set(bigTo32(yy), 33);
  return out;
}

// ---- DER signatures ----

/** One strict-DER INTEGER at `off`: its magnitude (leading 0x00 stripped) and the next offset. */
function derInteger(der: Uint8Array, off: number): { value: Uint8Array; next: number } | null {
  if (off + 2 > der.length || der[off] !== 0x02) return null;
  const len = der[off + 1]!;
  if (len === 0 || len >= 0x80) return null; // empty, or long form (never needed below 128 bytes)
  const start = off + 2;
  const end = start + len;
  if (end > der.length) return null;
  const first = der[start]!;
  if (first & 0x80) return null; // negative
  if (first === 0 && len > 1 && (der[start + 1]! & 0x80) === 0) return null; // non-minimal padding
  let value = der.subarray(start, end);
  while (value.length > 1 && value[0] === 0) value = value.subarray(1);
  if (value.length > 32) return null;
  return { value, next: end };
}

/**
 * Convert a strict-DER ECDSA-Sig-Value (SEQUENCE { r INTEGER, s INTEGER }) to 64-byte r || s, or null
 * for anything that is not canonical DER or whose integers exceed 256 bits. Range checks of r and s
 * (1 <= r, s < n) are the kernel's.
 */
export function derToP1363(der: Uint8Array): Uint8Array | null {
  checkBytes("signature", der);
  if (der.length < 8 || der[0] !== 0x30) return null;
  const len = der[1]!;
  if (len >= 0x80 || len !== der.length - 2) return null;
  const r = derInteger(der, 2);
  if (!r) return null;
  const s = derInteger(der, r.next);
  if (!s || s.next !== der.length) return null;
  const out = new Uint8Array(64);
  out.set(r.value, 32 - r.value.length);
  out.set(s.value, 64 - s.value.length);
  return out;
}

// ---- verification ----

function verifyWith(w: P256Exports, pub: Uint8Array, sig: Uint8Array): boolean {
  const io = w.ioPtr();
  const mem = new Uint8Array(w.memory.buffer);
  mem.set(pub, io + 32);
  mem.set(sig, io + 128);
  return w.p256Verify(io, io + 32, io + 128) !== 0;
}

/** Verify an ES256 signature (64-byte r || s) over SHA-256(message). */
export function ecdsaP256Verify(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
  flavour?: WasmFlavour,
): boolean {
  checkBytes("message", message);
  checkBytes("signature", signature);
  const pub = uncompressP256(publicKey);
  if (pub === null || signature.length !== 64) return false;
  const w = kernels(flavour);
  hashInto(w, message);
  return verifyWith(w, pub, signature);
}

/** Verify a DER-encoded ECDSA signature (as in X.509 and Wycheproof) over SHA-256(message). */
export function ecdsaP256VerifyDer(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
  flavour?: WasmFlavour,
): boolean {
  const sig = derToP1363(signature);
  checkBytes("message", message);
  if (sig === null) return false;
  return ecdsaP256Verify(publicKey, message, sig, flavour);
}

/** Verify r || s over a precomputed 32-byte digest. */
export function ecdsaP256VerifyDigest(
  publicKey: Uint8Array,
  digest: Uint8Array,
  signature: Uint8Array,
  flavour?: WasmFlavour,
): boolean {
  checkBytes("digest", digest);
  checkBytes("signature", signature);
  const pub = uncompressP256(publicKey);
  if (pub === null || digest.length !== DIGEST || signature.length !== 64) return false;
  const w = kernels(flavour);
  new Uint8Array(w.memory.buffer, w.ioPtr(), DIGEST).set(digest);
  return verifyWith(w, pub, signature);
}
