/**
 * Parsers for the TPM 2.0 structures node attestation needs (TPM 2.0 Part 2): TPM2B_PUBLIC / TPMT_PUBLIC
 * (RSA and ECC), TPMS_ATTEST (quote), TPMT_SIGNATURE and TPML_PCR_SELECTION; the object Name; and
 * conversion of a TPM public area to a node:crypto KeyObject. Only what a quote-based attestation uses is
 * supported; anything else is refused with a precise message.
 */
import crypto, { type KeyObject } from "node:crypto";
import { TpmReader, tpmFail, u16be } from "./marshal.ts";

/** TPM_ALG_ID values (Part 2, table 9) used here. */
export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  HMAC: 0x0005,
  AES: 0x0006,
  KEYEDHASH: 0x0008,
  XOR: 0x000a,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  SM2: 0x001b,
  ECSCHNORR: 0x001c,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CFB: 0x0043,
} as const;

/** TPMA_OBJECT bits (Part 2, table 31). */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const;

export const TPM_ECC_NIST_P256 = 0x0003;
export const TPM_GENERATED_VALUE = 0xff544347;
export const TPM_ST_ATTEST_QUOTE = 0x8018;

const HASHES: Record<number, { name: string; size: number }> = {
  [TPM_ALG.SHA1]: { name: "sha1", size: 20 },
  [TPM_ALG.SHA256]: { name: "sha256", size: 32 },
  [TPM_ALG.SHA384]: { name: "sha384", size: 48 },
  [TPM_ALG.SHA512]: { name: "sha512", size: 64 },
};

/** node:crypto name and digest size of a TPM hash algorithm; throws for anything else. */
export function hashInfo(alg: number): { name: string; size: number } {
  const h = HASHES[alg];
  if (!h) throw tpmFail(`unsupported hash algorithm 0x${alg.toString(16).padStart(4, "0")}`);
  return h;
}

export interface TpmSymDef {
  /** TPM_ALG_NULL when the object has none */
  algorithm: number;
  keyBits: number;
  mode: number;
}

export interface TpmPublic {
  type: "rsa" | "ecc";
  nameAlg: number;
  attributes: number;
  authPolicy: Buffer;
  symmetric: TpmSymDef;
  /** signing/encryption scheme, TPM_ALG_NULL if none */
  scheme: number;
  /** hash of the scheme, TPM_ALG_NULL if none */
  schemeHash: number;
  /** RSA */
  keyBits?: number;
  exponent?: number;
  modulus?: Buffer;
  /** ECC */
  curve?: number;
  x?: Buffer;
  y?: Buffer;
  /** the marshaled TPMT_PUBLIC, exactly as received (the Name is computed over it) */
  raw: Buffer;
}

function symDef(r: TpmReader): TpmSymDef {
  const algorithm = r.u16("symmetric.algorithm");
  if (algorithm === TPM_ALG.NULL) return { algorithm, keyBits: 0, mode: TPM_ALG.NULL };
  return { algorithm, keyBits: r.u16("symmetric.keyBits"), mode: r.u16("symmetric.mode") };
}

/** A scheme: algorithm, then (unless NULL or a detail-less scheme) TPMS_SCHEME_HASH (+ count for ECDAA). */
function scheme(r: TpmReader): { scheme: number; schemeHash: number } {
  const s = r.u16("scheme.scheme");
  if (s === TPM_ALG.NULL || s === TPM_ALG.RSAES) return { scheme: s, schemeHash: TPM_ALG.NULL };
  const schemeHash = r.u16("scheme.hashAlg");
  if (s === TPM_ALG.ECDAA) r.u16("scheme.count");
  return { scheme: s, schemeHash };
}

/** Parse a TPMT_PUBLIC from the reader (RSA or ECC objects only). */
function readTpmtPublic(r: TpmReader): TpmPublic {
  const start = r.offset;
  const typeAlg = r.u16("type");
  if (typeAlg !== TPM_ALG.RSA && typeAlg !== TPM_ALG.ECC) {
    throw tpmFail(`public area type 0x${typeAlg.toString(16)} is neither RSA nor ECC`);
  }
  const nameAlg = r.u16("nameAlg");
  hashInfo(nameAlg);
  const attributes = r.u32("objectAttributes");
  const authPolicy = r.tpm2b("authPolicy", 64);
  const symmetric = symDef(r);
  const sch = scheme(r);
  let out: Omit<TpmPublic, "raw">;
  if (typeAlg === TPM_ALG.RSA) {
    const keyBits = r.u16("rsa.keyBits");
    const exponent = r.u32("rsa.exponent");
    const modulus = r.tpm2b("unique.rsa", 512);
    if (modulus.length * 8 !== keyBits) {
      throw tpmFail(`RSA modulus is ${modulus.length * 8} bits, the public area says ${keyBits}`);
    }
    out = { type: "rsa", nameAlg, attributes, authPolicy, symmetric, ...sch, keyBits, exponent, modulus };
  } else {
    const curve = r.u16("ecc.curveID");
    const kdf = r.u16("ecc.kdf.scheme");
    if (kdf !== TPM_ALG.NULL) r.u16("ecc.kdf.hashAlg");
    const x = r.tpm2b("unique.ecc.x", 128);
    const y = r.tpm2b("unique.ecc.y", 128);
    out = { type: "ecc", nameAlg, attributes, authPolicy, symmetric, ...sch, curve, x, y };
  }
  return { ...out, raw: r.bytesFrom(start) };
}

/** Parse a TPMT_PUBLIC (no size prefix); the whole input must be consumed. */
export function parseTpmtPublic(bytes: Uint8Array): TpmPublic {
  const r = new TpmReader(bytes, "TPMT_PUBLIC");
  const p = readTpmtPublic(r);
  r.end();
  return p;
}

/** Parse a TPM2B_PUBLIC (what tpm2-tools writes for `-u`); the size must match the content exactly. */
export function parseTpm2bPublic(bytes: Uint8Array): TpmPublic {
  const outer = new TpmReader(bytes, "TPM2B_PUBLIC");
  const inner = outer.tpm2b("publicArea");
  outer.end();
  return parseTpmtPublic(inner);
}

/** The object's Name: nameAlg || H_nameAlg(TPMT_PUBLIC). */
export function objectName(pub: TpmPublic): Buffer {
  const h = hashInfo(pub.nameAlg);
  return Buffer.concat([u16be(pub.nameAlg), crypto.createHash(h.name).update(pub.raw).digest()]);
}

const b64u = (b: Buffer) => b.toString("base64url");

/** The public key as a KeyObject (RSA any size from 1024 bits, ECC NIST P-256 only). */
export function publicKeyOf(pub: TpmPublic): KeyObject {
  try {
    if (pub.type === "rsa") {
      const e = pub.exponent === 0 ? 65537 : pub.exponent!;
      let eb = Buffer.alloc(4);
      eb.writeUInt32BE(e);
      while (eb.length > 1 && eb[0] === 0) eb = eb.subarray(1);
      if ((pub.keyBits ?? 0) < 1024) throw tpmFail(`RSA key of ${pub.keyBits} bits is too small`);
      return crypto.createPublicKey({
        key: { kty: "RSA", n: b64u(pub.modulus!), e: b64u(eb) },
        format: "jwk",
      });
    }
    if (pub.curve !== TPM_ECC_NIST_P256) throw tpmFail(`ECC curve 0x${pub.curve!.toString(16)} is not P-256`);
    const pad = (b: Buffer) => {
      if (b.length > 32) throw tpmFail("ECC coordinate longer than 32 bytes");
      return Buffer.concat([Buffer.alloc(32 - b.length), b]);
    };
    return crypto.createPublicKey({
      key: { kty: "EC", crv: "P-256", x: b64u(pad(pub.x!)), y: b64u(pad(pub.y!)) },
      format: "jwk",
    });
  } catch (e) {
    if (e instanceof Error && e.name === "QhxError") throw e;
    throw tpmFail(`the public area does not hold a valid ${pub.type.toUpperCase()} key`);
  }
}

export interface PcrSelection {
  hash: number;
  /** selected PCR indices, ascending */
  pcrs: number[];
}

function readPcrSelectionList(r: TpmReader): PcrSelection[] {
  const count = r.u32("TPML_PCR_SELECTION.count");
  if (count > 16) throw tpmFail(`PCR selection lists ${count} banks`);
  const out: PcrSelection[] = [];
  for (let i = 0; i < count; i++) {
    const hash = r.u16("pcrSelections.hash");
    const size = r.u8("pcrSelections.sizeofSelect");
    if (size > 4) throw tpmFail(`PCR selection bitmap of ${size} bytes`);
    const bitmap = r.bytes(size, "pcrSelections.pcrSelect");
    const pcrs: number[] = [];
    for (let b = 0; b < size * 8; b++) if (bitmap[b >> 3]! & (1 << (b & 7))) pcrs.push(b);
    out.push({ hash, pcrs });
  }
  return out;
}

/** Parse a TPML_PCR_SELECTION; the whole input must be consumed. */
export function parsePcrSelection(bytes: Uint8Array): PcrSelection[] {
  const r = new TpmReader(bytes, "TPML_PCR_SELECTION");
  const s = readPcrSelectionList(r);
  r.end();
  return s;
}

export interface TpmQuote {
  qualifiedSigner: Buffer;
  extraData: Buffer;
  clock: bigint;
  resetCount: number;
  restartCount: number;
  safe: boolean;
  firmwareVersion: bigint;
  pcrSelect: PcrSelection[];
  pcrDigest: Buffer;
}

/**
 * Parse a TPMS_ATTEST and require it to be a TPM-generated quote: magic TPM_GENERATED_VALUE, type
 * TPM_ST_ATTEST_QUOTE. The whole input must be consumed.
 */
export function parseQuoteAttest(bytes: Uint8Array): TpmQuote {
  const r = new TpmReader(bytes, "TPMS_ATTEST");
  const magic = r.u32("magic");
  if (magic !== TPM_GENERATED_VALUE)
    throw tpmFail(`TPMS_ATTEST magic is 0x${magic.toString(16)}, not TPM-generated`);
  const type = r.u16("type");
  if (type !== TPM_ST_ATTEST_QUOTE) throw tpmFail(`TPMS_ATTEST type is 0x${type.toString(16)}, not a quote`);
  const qualifiedSigner = r.tpm2b("qualifiedSigner", 2 + 64);
  const extraData = r.tpm2b("extraData", 64);
  const clock = r.u64("clockInfo.clock");
  const resetCount = r.u32("clockInfo.resetCount");
  const restartCount = r.u32("clockInfo.restartCount");
  const safe = r.u8("clockInfo.safe");
  const firmwareVersion = r.u64("firmwareVersion");
  const pcrSelect = readPcrSelectionList(r);
  const pcrDigest = r.tpm2b("pcrDigest", 64);
  r.end();
  return {
    qualifiedSigner,
    extraData,
    clock,
    resetCount,
    restartCount,
    safe: safe !== 0,
    firmwareVersion,
    pcrSelect,
    pcrDigest,
  };
}

export interface TpmSignature {
  sigAlg: number;
  hash: number;
  /** RSA: the signature; ECDSA: r||s as P1363 (each padded to the curve size) */
  rsa?: Buffer;
  r?: Buffer;
  s?: Buffer;
}

/** Parse a TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA); the whole input must be consumed. */
export function parseSignature(bytes: Uint8Array): TpmSignature {
  const rd = new TpmReader(bytes, "TPMT_SIGNATURE");
  const sigAlg = rd.u16("sigAlg");
  let out: TpmSignature;
  if (sigAlg === TPM_ALG.RSASSA || sigAlg === TPM_ALG.RSAPSS) {
    out = { sigAlg, hash: rd.u16("hash"), rsa: rd.tpm2b("sig", 512) };
  } else if (sigAlg === TPM_ALG.ECDSA) {
    out = { sigAlg, hash: rd.u16("hash"), r: rd.tpm2b("signatureR", 128), s: rd.tpm2b("signatureS", 128) };
  } else {
    throw tpmFail(`signature algorithm 0x${sigAlg.toString(16)} is not RSASSA, RSAPSS or ECDSA`);
  }
  rd.end();
  return out;
}

/**
 * Verify a TPMT_SIGNATURE over `data` with the public key of `pub` (the signature's hash must be
 * `hashAlg`, and a key whose template fixes a scheme must have used it). Returns false on any mismatch.
 */
export function verifyTpmSignature(
  pub: TpmPublic,
  data: Uint8Array,
  sig: TpmSignature,
  hashAlg: number,
): boolean {
  if (sig.hash !== hashAlg) return false;
  if (pub.scheme !== TPM_ALG.NULL && (pub.scheme !== sig.sigAlg || pub.schemeHash !== sig.hash)) return false;
  const h = hashInfo(hashAlg).name;
  const key = publicKeyOf(pub);
  try {
    if (pub.type === "rsa") {
      if (sig.sigAlg === TPM_ALG.RSASSA) {
        return crypto.verify(h, data, { key, padding: crypto.constants.RSA_PKCS1_PADDING }, sig.rsa!);
      }
      if (sig.sigAlg === TPM_ALG.RSAPSS) {
        return crypto.verify(
          h,
          data,
          {
            key,
            padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
            saltLength: crypto.constants.RSA_PSS_SALTLEN_AUTO,
          },
          sig.rsa!,
        );
      }
      return false;
    }
    if (sig.sigAlg !== TPM_ALG.ECDSA) return false;
    const pad = (b: Buffer) => (b.length > 32 ? null : Buffer.concat([Buffer.alloc(32 - b.length), b]));
    const r = pad(sig.r!);
    const s = pad(sig.s!);
    if (!r || !s) return false;
    return crypto.verify(h, data, { key, dsaEncoding: "ieee-p1363" }, Buffer.concat([r, s]));
  } catch {
    return false;
  }
}
