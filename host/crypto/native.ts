/**
 * The node:crypto (OpenSSL 3.5) backend, with the same FIPS 203/204 byte formats as the kernels:
 * raw public keys, expanded secret keys (imported and exported through PKCS#8 "expandedKey").
 */
import {
  createPrivateKey,
  createPublicKey,
  decapsulate,
  encapsulate,
  sign as nodeSign,
  timingSafeEqual,
  verify as nodeVerify,
  type KeyObject,
} from "node:crypto";
import { QhxError } from "../core/errors.ts";
import { checkLength, dsaSizes, kemSizes, type MlDsaParams, type MlKemParams } from "./kernel.ts";

const OID: Record<MlDsaParams | MlKemParams, string> = {
  "ML-DSA-44": "0609608648016503040311",
  "ML-DSA-65": "0609608648016503040312",
  "ML-DSA-87": "0609608648016503040313",
  "ML-KEM-512": "0609608648016503040401",
  "ML-KEM-768": "0609608648016503040402",
  "ML-KEM-1024": "0609608648016503040403",
};

function derLen(n: number): Buffer {
  return n < 128 ? Buffer.from([n]) : n < 256 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 255]);
}
function tlv(tag: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), derLen(body.length), body]);
}

/** PKCS#8 OneAsymmetricKey holding the expandedKey form of an ML-DSA / ML-KEM secret key. */
function expandedPkcs8(params: MlDsaParams | MlKemParams, secretKey: Uint8Array): Buffer {
  return tlv(
    0x30,
    Buffer.concat([
      Buffer.from("020100", "hex"),
      tlv(0x30, Buffer.from(OID[params], "hex")),
      tlv(0x04, tlv(0x04, Buffer.from(secretKey))),
    ]),
  );
}

function nativeError(op: string, e: unknown, code = "QHX_CRYPTO_NATIVE"): QhxError {
  return new QhxError(code, `node:crypto ${op} failed: ${e instanceof Error ? e.message : String(e)}`, {
    cause: e,
  });
}

// One-entry caches: repeated use of the same key skips the import.
let lastPriv: { params: string; bytes: Buffer; key: KeyObject } | undefined;
let lastPub: { params: string; bytes: Buffer; key: KeyObject } | undefined;

function importPrivate(params: MlDsaParams | MlKemParams, secretKey: Uint8Array): KeyObject {
  if (
    lastPriv &&
    lastPriv.params === params &&
    lastPriv.bytes.length === secretKey.length &&
    timingSafeEqual(lastPriv.bytes, secretKey)
  ) {
    return lastPriv.key;
  }
  const key = createPrivateKey({ key: expandedPkcs8(params, secretKey), format: "der", type: "pkcs8" });
  lastPriv = { params, bytes: Buffer.from(secretKey), key };
  return key;
}
function importPublic(params: MlDsaParams | MlKemParams, publicKey: Uint8Array): KeyObject {
  if (lastPub && lastPub.params === params && lastPub.bytes.equals(publicKey)) return lastPub.key;
  const key = createPublicKey({
    key: Buffer.from(publicKey),
    format: "raw-public",
    asymmetricKeyType: params.toLowerCase(),
  } as unknown as Parameters<typeof createPublicKey>[0]);
  lastPub = { params, bytes: Buffer.from(publicKey), key };
  return key;
}

/** Keys from a seed: the raw public key and the expanded secret key (tail of OpenSSL's PKCS#8). */
function keygenFromSeed(
  params: MlDsaParams | MlKemParams,
  seed: Uint8Array,
  skLen: number,
): { publicKey: Uint8Array; secretKey: Uint8Array } {
  try {
    const priv = createPrivateKey({
      key: Buffer.from(seed),
      format: "raw-seed",
      asymmetricKeyType: params.toLowerCase(),
    } as unknown as Parameters<typeof createPrivateKey>[0]);
    const pub = createPublicKey(priv).export({ format: "raw-public" } as never) as unknown as Buffer;
    const der = priv.export({ format: "der", type: "pkcs8" });
    // seed-and-expanded form: ... OCTET STRING (expanded) at the end
    const secretKey = new Uint8Array(der.subarray(der.length - skLen));
    const check = der.subarray(der.length - skLen - 4, der.length - skLen);
    if (check[0] !== 0x04 || check[1] !== 0x82 || ((check[2] ?? 0) << 8) + (check[3] ?? 0) !== skLen) {
      throw new Error("OpenSSL did not export the expanded key");
    }
    return { publicKey: new Uint8Array(pub), secretKey };
  } catch (e) {
    throw nativeError(`${params} keygen`, e);
  }
}

export function nativeDsaKeygen(
  params: MlDsaParams,
  seed: Uint8Array,
): { publicKey: Uint8Array; secretKey: Uint8Array } {
  const s = dsaSizes(params);
  checkLength("seed", seed, 32);
  return keygenFromSeed(params, seed, s.secretKey);
}

/** Hedged signing only: OpenSSL draws its own randomness. */
export function nativeDsaSign(
  params: MlDsaParams,
  secretKey: Uint8Array,
  msg: Uint8Array,
  ctx: Uint8Array,
): Uint8Array {
  const s = dsaSizes(params);
  checkLength("secret key", secretKey, s.secretKey, "QHX_CRYPTO_KEY_LENGTH");
  if (ctx.length > 255) throw new QhxError("QHX_CRYPTO_CONTEXT", "context must be at most 255 bytes");
  let key: KeyObject;
  try {
    key = importPrivate(params, secretKey);
  } catch (e) {
    throw nativeError(`${params} secret key import`, e, "QHX_CRYPTO_KEY_INVALID");
  }
  try {
    return new Uint8Array(nodeSign(null, msg, { key, context: ctx } as never));
  } catch (e) {
    throw nativeError(`${params} sign`, e);
  }
}

export function nativeDsaVerify(
  params: MlDsaParams,
  publicKey: Uint8Array,
  msg: Uint8Array,
  sig: Uint8Array,
  ctx: Uint8Array,
): boolean {
  const s = dsaSizes(params);
  if (publicKey.length !== s.publicKey || sig.length !== s.signature || ctx.length > 255) return false;
  try {
    const key = importPublic(params, publicKey);
    return nodeVerify(null, msg, { key, context: ctx } as never, sig);
  } catch {
    return false;
  }
}

export function nativeKemKeygen(
  params: MlKemParams,
  seed: Uint8Array,
): { publicKey: Uint8Array; secretKey: Uint8Array } {
  const s = kemSizes(params);
  checkLength("seed (d || z)", seed, 64);
  return keygenFromSeed(params, seed, s.secretKey);
}

export function nativeKemEncaps(
  params: MlKemParams,
  publicKey: Uint8Array,
): { cipherText: Uint8Array; sharedSecret: Uint8Array } {
  const s = kemSizes(params);
  checkLength("encapsulation key", publicKey, s.publicKey, "QHX_CRYPTO_KEY_LENGTH");
  let key: KeyObject;
  try {
    key = importPublic(params, publicKey);
  } catch (e) {
    throw nativeError(`${params} encapsulation key import`, e, "QHX_CRYPTO_KEY_INVALID");
  }
  try {
    const r = encapsulate(key) as unknown as { sharedKey: Buffer; ciphertext: Buffer };
    return { cipherText: new Uint8Array(r.ciphertext), sharedSecret: new Uint8Array(r.sharedKey) };
  } catch (e) {
    throw nativeError(`${params} encapsulate`, e, "QHX_CRYPTO_KEY_INVALID");
  }
}

export function nativeKemDecaps(
  params: MlKemParams,
  secretKey: Uint8Array,
  cipherText: Uint8Array,
): Uint8Array {
  const s = kemSizes(params);
  checkLength("decapsulation key", secretKey, s.secretKey, "QHX_CRYPTO_KEY_LENGTH");
  checkLength("ciphertext", cipherText, s.cipherText, "QHX_CRYPTO_CIPHERTEXT_LENGTH");
  let key: KeyObject;
  try {
    key = importPrivate(params, secretKey);
  } catch (e) {
    throw nativeError(`${params} decapsulation key import`, e, "QHX_CRYPTO_KEY_INVALID");
  }
  try {
    return new Uint8Array(decapsulate(key, cipherText) as unknown as Buffer);
  } catch (e) {
    throw nativeError(`${params} decapsulate`, e);
  }
}
