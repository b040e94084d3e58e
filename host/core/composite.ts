/**
 * Composite ML-DSA signatures (ML-DSA + ECDSA) per the IETF LAMPS draft "Composite ML-DSA for use in
 * X.509 Public Key Infrastructure" — draft-ietf-lamps-pq-composite-sigs, text of
 * lamps-wg/draft-composite-sigs at commit 60fcb1e (after tag -19, April 2026). Built on node:crypto's
 * ML-DSA (FIPS 204, pure, with context) and ECDSA.
 *
 *   M'        = Prefix || Label || len(ctx) || ctx || PH(M)       (Prefix = "CompositeAlgorithmSignatures2025")
 *   signature = ML-DSA.Sign(mldsaSK, M', ctx=Label) || ECDSA.Sign(tradSK, M') (Ecdsa-Sig-Value DER)
 *   public    = mldsaPK (raw) || ECPoint (uncompressed, 0x04 || X || Y)
 *   private   = mldsaSeed (32 bytes) || ECPrivateKey (RFC 5915, NamedCurve parameter, no publicKey)
 *
 * SPKI: SEQUENCE { SEQUENCE { composite OID } (parameters absent), BIT STRING public }.
 * PKCS#8 (OneAsymmetricKey v0): SEQUENCE { INTEGER 0, SEQUENCE { composite OID }, OCTET STRING private }.
 */
import crypto, { type KeyObject } from "node:crypto";
import { QhxError } from "./errors.ts";

export const COMPOSITE_ALGS = ["mldsa44-ecdsa-p256", "mldsa65-ecdsa-p256", "mldsa87-ecdsa-p384"] as const;
export type CompositeAlg = (typeof COMPOSITE_ALGS)[number];

interface Params {
  oid: string;
  /** Draft name, e.g. id-MLDSA65-ECDSA-P256-SHA512. */
  name: string;
  label: string;
  mldsa: "ml-dsa-44" | "ml-dsa-65" | "ml-dsa-87";
  mldsaOid: string;
  mldsaPkLen: number;
  mldsaSigLen: number;
  curve: "P-256" | "P-384";
  curveOid: string;
  /** Field size in bytes (EC private scalar and coordinate length). */
  fieldLen: number;
  /** PH, the pre-hash of M. */
  ph: "sha256" | "sha512";
  /** The hash of the ECDSA component (ecdsa-with-SHA256 / -SHA384) over M'. */
  ecdsaHash: "sha256" | "sha384";
}

const PARAMS: Record<CompositeAlg, Params> = {
  "mldsa44-ecdsa-p256": {
    oid: "1.3.6.1.5.5.7.6.40",
    name: "id-MLDSA44-ECDSA-P256-SHA256",
    label: "COMPSIG-MLDSA44-ECDSA-P256-SHA256",
    mldsa: "ml-dsa-44",
    mldsaOid: "2.16.840.1.101.3.4.3.17",
    mldsaPkLen: 1312,
    mldsaSigLen: 2420,
    curve: "P-256",
    curveOid: "1.2.840.10045.3.1.7",
    fieldLen: 32,
    ph: "sha256",
    ecdsaHash: "sha256",
  },
  "mldsa65-ecdsa-p256": {
    oid: "1.3.6.1.5.5.7.6.45",
    name: "id-MLDSA65-ECDSA-P256-SHA512",
    label: "COMPSIG-MLDSA65-ECDSA-P256-SHA512",
    mldsa: "ml-dsa-65",
    mldsaOid: "2.16.840.1.101.3.4.3.18",
    mldsaPkLen: 1952,
    mldsaSigLen: 3309,
    curve: "P-256",
    curveOid: "1.2.840.10045.3.1.7",
    fieldLen: 32,
    ph: "sha512",
    ecdsaHash: "sha256",
  },
  "mldsa87-ecdsa-p384": {
    oid: "1.3.6.1.5.5.7.6.49",
    name: "id-MLDSA87-ECDSA-P384-SHA512",
    label: "COMPSIG-MLDSA87-ECDSA-P384-SHA512",
    mldsa: "ml-dsa-87",
    mldsaOid: "2.16.840.1.101.3.4.3.19",
    mldsaPkLen: 2592,
    mldsaSigLen: 4627,
    curve: "P-384",
    curveOid: "1.3.132.0.34",
    fieldLen: 48,
    ph: "sha512",
    ecdsaHash: "sha384",
  },
};

/** "CompositeAlgorithmSignatures2025" (draft §2.2). */
export const COMPOSITE_PREFIX = Buffer.from("CompositeAlgorithmSignatures2025", "ascii");

export function isCompositeAlg(s: string): s is CompositeAlg {
  return (COMPOSITE_ALGS as readonly string[]).includes(s);
}

export function compositeParams(alg: CompositeAlg): Readonly<Params> {
  return PARAMS[alg];
}

/** The composite OID of an algorithm (also its X.509 signatureAlgorithm OID; parameters absent). */
export function compositeOid(alg: CompositeAlg): string {
  return PARAMS[alg].oid;
}

export function compositeAlgForOid(oid: string): CompositeAlg | undefined {
  for (const alg of COMPOSITE_ALGS) if (PARAMS[alg].oid === oid) return alg;
  return undefined;
}

/** A composite key: both component KeyObjects. `privateKey`s are absent for a public-only key. */
export interface CompositePublicKey {
  readonly composite: CompositeAlg;
  readonly mldsa: KeyObject;
  readonly ecdsa: KeyObject;
}
export interface CompositePrivateKey extends CompositePublicKey {
  readonly mldsaPrivate: KeyObject;
  readonly ecdsaPrivate: KeyObject;
}
export interface CompositeKeyPair {
  publicKey: CompositePublicKey;
  privateKey: CompositePrivateKey;
}

export function isCompositeKey(k: unknown): k is CompositePublicKey {
  return typeof k === "object" && k !== null && "composite" in k && isCompositeAlg(String(k.composite));
}

export function isCompositePrivateKey(k: unknown): k is CompositePrivateKey {
  return isCompositeKey(k) && "mldsaPrivate" in k && "ecdsaPrivate" in k;
}

export function generateCompositeKeyPair(alg: CompositeAlg): CompositeKeyPair {
  const p = PARAMS[alg];
  const m = (
    crypto.generateKeyPairSync as unknown as (t: string) => { publicKey: KeyObject; privateKey: KeyObject }
  )(p.mldsa);
  const e = crypto.generateKeyPairSync("ec", { namedCurve: p.curve });
  const publicKey: CompositePublicKey = { composite: alg, mldsa: m.publicKey, ecdsa: e.publicKey };
  return {
    publicKey,
    privateKey: { ...publicKey, mldsaPrivate: m.privateKey, ecdsaPrivate: e.privateKey },
  };
}

export function compositePublicOf(key: CompositePublicKey): CompositePublicKey {
  return { composite: key.composite, mldsa: key.mldsa, ecdsa: key.ecdsa };
}

// ---------------------------------------------------------------- minimal DER

function derLen(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
function tlv(tag: number, body: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([tag]), derLen(body.length), body]);
}
function oidBody(oid: string): Buffer {
  const parts = oid.split(".").map(Number);
  const out = [40 * parts[0]! + parts[1]!];
  for (const v of parts.slice(2)) {
    const enc = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) enc.unshift(0x80 | (x & 0x7f));
    out.push(...enc);
  }
  return Buffer.from(out);
}
const seq = (...items: Uint8Array[]): Buffer => tlv(0x30, Buffer.concat(items));
const oidTlv = (oid: string): Buffer => tlv(0x06, oidBody(oid));
const algId = (oid: string): Buffer => seq(oidTlv(oid));

/** Strict DER reader: returns [tag, body, rest] or throws. */
function readTlv(buf: Buffer): [number, Buffer, Buffer] {
  if (buf.length < 2) throw new Error("truncated");
  const tag = buf[0]!;
  let len = buf[1]!;
  let off = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3 || buf.length < 2 + n) throw new Error("bad length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[2 + i]!;
    if (len < 0x80 || buf[2] === 0) throw new Error("non-minimal length");
    off = 2 + n;
  }
  if (buf.length < off + len) throw new Error("truncated");
  return [tag, buf.subarray(off, off + len), buf.subarray(off + len)];
}

function expect(buf: Buffer, tag: number): [Buffer, Buffer] {
  const [t, body, rest] = readTlv(buf);
  if (t !== tag) throw new Error(`expected tag ${tag}, got ${t}`);
  return [body, rest];
}

function invalid(what: string, cause?: unknown): QhxError {
  return new QhxError("QHX_INVALID_KEY", `malformed composite ${what}`, { cause });
}

// ---------------------------------------------------------------- component encodings

function mldsaRawPublic(key: KeyObject): Buffer {
  const der = key.export({ type: "spki", format: "der" });
  // SPKI of ML-DSA: SEQUENCE { SEQUENCE { OID }, BIT STRING 00 || pk }
  const [body] = expect(der, 0x30);
  const [, rest] = expect(body, 0x30);
  const [bits] = expect(rest, 0x03);
  return Buffer.from(bits.subarray(1));
}

function mldsaPublicFromRaw(p: Params, raw: Buffer): KeyObject {
  const der = seq(algId(p.mldsaOid), tlv(0x03, Buffer.concat([Buffer.from([0]), raw])));
  const k = crypto.createPublicKey({ key: der, format: "der", type: "spki" });
  if (k.asymmetricKeyType !== p.mldsa) throw new Error("ML-DSA key type mismatch");
  return k;
}

function mldsaPrivateFromSeed(p: Params, seed: Buffer): KeyObject {
  if (seed.length !== 32) throw new Error("ML-DSA seed must be 32 bytes");
  // RFC 9881 ML-DSA-PrivateKey, seed CHOICE: [0] IMPLICIT OCTET STRING (SIZE 32)
  const der = seq(tlv(0x02, Buffer.from([0])), algId(p.mldsaOid), tlv(0x04, tlv(0x80, seed)));
  return crypto.createPrivateKey({ key: der, format: "der", type: "pkcs8" });
}

function mldsaSeedOf(key: KeyObject): Buffer {
  const seed = (key.export as unknown as (o: { format: string }) => Buffer)({ format: "raw-seed" });
  if (seed.length !== 32) throw new Error("ML-DSA private key has no seed");
  return Buffer.from(seed);
}

function ecPoint(key: KeyObject): Buffer {
  const jwk = key.export({ format: "jwk" });
  return Buffer.concat([
    Buffer.from([4]),
    Buffer.from(jwk.x!, "base64url"),
    Buffer.from(jwk.y!, "base64url"),
  ]);
}

function ecPublicFromPoint(p: Params, point: Buffer): KeyObject {
  if (point.length !== 1 + 2 * p.fieldLen || point[0] !== 4) throw new Error("EC point must be uncompressed");
  const der = seq(
    seq(oidTlv("1.2.840.10045.2.1"), oidTlv(p.curveOid)),
    tlv(0x03, Buffer.concat([Buffer.from([0]), point])),
  );
  return crypto.createPublicKey({ key: der, format: "der", type: "spki" });
}

/** RFC 5915 ECPrivateKey with the NamedCurve parameter and without publicKey, as the draft requires. */
function ecPrivateKeyDer(p: Params, key: KeyObject): Buffer {
  const d = Buffer.from(key.export({ format: "jwk" }).d!, "base64url");
  const scalar = Buffer.concat([Buffer.alloc(p.fieldLen - d.length), d]);
  return seq(tlv(0x02, Buffer.from([1])), tlv(0x04, scalar), tlv(0xa0, oidTlv(p.curveOid)));
}

function ecPrivateFromDer(p: Params, der: Buffer): KeyObject {
  const [body, after] = expect(der, 0x30);
  if (after.length) throw new Error("trailing bytes after ECPrivateKey");
  const [ver, r1] = expect(body, 0x02);
  if (ver.length !== 1 || ver[0] !== 1) throw new Error("ECPrivateKey version must be 1");
  const [scalar, r2] = expect(r1, 0x04);
  if (scalar.length !== p.fieldLen) throw new Error("EC private scalar has the wrong length");
  let rest = r2;
  if (rest.length && rest[0] === 0xa0) {
    const [params, r3] = expect(rest, 0xa0);
    const [curve] = expect(params, 0x06);
    if (!curve.equals(oidBody(p.curveOid)))
      throw new Error("ECPrivateKey curve does not match the composite");
    rest = r3;
  }
  if (rest.length && rest[0] === 0xa1) rest = expect(rest, 0xa1)[1];
  if (rest.length) throw new Error("unexpected fields in ECPrivateKey");
  const k = crypto.createPrivateKey({ key: der, format: "der", type: "sec1" });
  const curve = k.asymmetricKeyDetails?.namedCurve;
  if (curve !== (p.curve === "P-256" ? "prime256v1" : "secp384r1")) throw new Error("EC curve mismatch");
  return k;
}

// ---------------------------------------------------------------- raw serialization (draft §4)

/** SerializePublicKey: mldsaPK || ECPoint. */
export function serializeCompositePublic(key: CompositePublicKey): Buffer {
  return Buffer.concat([mldsaRawPublic(key.mldsa), ecPoint(key.ecdsa)]);
}

/** DeserializePublicKey for `alg`; throws QHX_INVALID_KEY when malformed. */
export function deserializeCompositePublic(alg: CompositeAlg, raw: Uint8Array): CompositePublicKey {
  const p = PARAMS[alg];
  const b = Buffer.from(raw);
  try {
    if (b.length !== p.mldsaPkLen + 1 + 2 * p.fieldLen) throw new Error(`length ${b.length}`);
    return {
      composite: alg,
      mldsa: mldsaPublicFromRaw(p, b.subarray(0, p.mldsaPkLen)),
      ecdsa: ecPublicFromPoint(p, b.subarray(p.mldsaPkLen)),
    };
  } catch (e) {
    throw invalid("public key", e);
  }
}

/** SerializePrivateKey: mldsaSeed || ECPrivateKey. */
export function serializeCompositePrivate(key: CompositePrivateKey): Buffer {
  return Buffer.concat([
    mldsaSeedOf(key.mldsaPrivate),
    ecPrivateKeyDer(PARAMS[key.composite], key.ecdsaPrivate),
  ]);
}

export function deserializeCompositePrivate(alg: CompositeAlg, raw: Uint8Array): CompositePrivateKey {
  const p = PARAMS[alg];
  const b = Buffer.from(raw);
  try {
    if (b.length < 33) throw new Error("too short");
    const mldsaPrivate = mldsaPrivateFromSeed(p, b.subarray(0, 32));
    const ecdsaPrivate = ecPrivateFromDer(p, b.subarray(32));
    return {
      composite: alg,
      mldsa: crypto.createPublicKey(mldsaPrivate),
      ecdsa: crypto.createPublicKey(ecdsaPrivate),
      mldsaPrivate,
      ecdsaPrivate,
    };
  } catch (e) {
    throw invalid("private key", e);
  }
}

// ---------------------------------------------------------------- SPKI / PKCS#8

export function compositeSpki(key: CompositePublicKey): Buffer {
  const bits = Buffer.concat([Buffer.from([0]), serializeCompositePublic(key)]);
  return seq(algId(PARAMS[key.composite].oid), tlv(0x03, bits));
}

/** The composite algorithm of a DER SubjectPublicKeyInfo, or undefined when its OID is not a composite. */
export function compositeAlgOfSpki(der: Uint8Array): CompositeAlg | undefined {
  try {
    const [body] = expect(Buffer.from(der), 0x30);
    const [alg] = expect(body, 0x30);
    const [oid] = expect(alg, 0x06);
    for (const a of COMPOSITE_ALGS) if (oidBody(PARAMS[a].oid).equals(oid)) return a;
  } catch {
    return undefined;
  }
  return undefined;
}

/** Parse a composite SubjectPublicKeyInfo (parameters must be absent; no trailing bytes). */
export function parseCompositeSpki(der: Uint8Array): CompositePublicKey {
  let alg: CompositeAlg | undefined;
  let raw: Buffer;
  try {
    const [body, after] = expect(Buffer.from(der), 0x30);
    if (after.length) throw new Error("trailing bytes");
    const [algBody, rest] = expect(body, 0x30);
    const [oid, params] = expect(algBody, 0x06);
    if (params.length) throw new Error("composite AlgorithmIdentifier parameters must be absent");
    alg = COMPOSITE_ALGS.find((a) => oidBody(PARAMS[a].oid).equals(oid));
    if (!alg) throw new Error("not a composite ML-DSA OID");
    const [bits, tail] = expect(rest, 0x03);
    if (tail.length) throw new Error("trailing bytes in SPKI");
    if (bits.length < 1 || bits[0] !== 0) throw new Error("BIT STRING has unused bits");
    raw = bits.subarray(1);
  } catch (e) {
    throw invalid("SubjectPublicKeyInfo", e);
  }
  return deserializeCompositePublic(alg, raw);
}

export function compositePkcs8(key: CompositePrivateKey): Buffer {
  return seq(
    tlv(0x02, Buffer.from([0])),
    algId(PARAMS[key.composite].oid),
    tlv(0x04, serializeCompositePrivate(key)),
  );
}

export function parseCompositePkcs8(der: Uint8Array): CompositePrivateKey {
  let alg: CompositeAlg | undefined;
  let raw: Buffer;
  try {
    const [body, after] = expect(Buffer.from(der), 0x30);
    if (after.length) throw new Error("trailing bytes");
    const [ver, r1] = expect(body, 0x02);
    if (ver.length !== 1 || (ver[0] !== 0 && ver[0] !== 1)) throw new Error("bad version");
    const [algBody, r2] = expect(r1, 0x30);
    const [oid, params] = expect(algBody, 0x06);
    if (params.length) throw new Error("parameters must be absent");
    alg = COMPOSITE_ALGS.find((a) => oidBody(PARAMS[a].oid).equals(oid));
    if (!alg) throw new Error("not a composite ML-DSA OID");
    [raw] = expect(r2, 0x04);
  } catch (e) {
    throw invalid("PKCS#8 private key", e);
  }
  return deserializeCompositePrivate(alg, raw);
}

const pem = (label: string, der: Buffer): string =>
  `-----BEGIN ${label}-----\n${der.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n?$/, "\n")}-----END ${label}-----\n`;

export function compositePrivatePem(key: CompositePrivateKey): string {
  return pem("PRIVATE KEY", compositePkcs8(key));
}
export function compositePublicPem(key: CompositePublicKey): string {
  return pem("PUBLIC KEY", compositeSpki(key));
}

// ---------------------------------------------------------------- sign / verify (draft §3.2, §3.3)

/** M' = Prefix || Label || len(ctx) || ctx || PH(M). */
export function compositeMessageRepresentative(
  alg: CompositeAlg,
  message: Uint8Array,
  ctx: Uint8Array = new Uint8Array(0),
): Buffer {
  if (ctx.length > 255) throw new QhxError("QHX_INVALID_ARGUMENT", "composite ctx longer than 255 bytes");
  const p = PARAMS[alg];
  const ph = crypto.createHash(p.ph).update(message).digest();
  return Buffer.concat([COMPOSITE_PREFIX, Buffer.from(p.label, "ascii"), Buffer.from([ctx.length]), ctx, ph]);
}

/** Composite-ML-DSA.Sign(sk, M, ctx): mldsaSig || DER ECDSA signature. */
export function compositeSign(
  key: CompositePrivateKey,
  message: Uint8Array,
  ctx: Uint8Array = new Uint8Array(0),
): Buffer {
  const p = PARAMS[key.composite];
  const mPrime = compositeMessageRepresentative(key.composite, message, ctx);
  const label = Buffer.from(p.label, "ascii");
  const mldsaSig = crypto.sign(null, mPrime, {
    key: key.mldsaPrivate,
    context: label,
  } as crypto.SignKeyObjectInput);
  const tradSig = crypto.sign(p.ecdsaHash, mPrime, { key: key.ecdsaPrivate, dsaEncoding: "der" });
  if (mldsaSig.length !== p.mldsaSigLen)
    throw new QhxError("QHX_CRYPTO", "ML-DSA signature has the wrong length");
  return Buffer.concat([mldsaSig, tradSig]);
}

/** Strict DER Ecdsa-Sig-Value check (SEQUENCE of two positive minimal INTEGERs, nothing trailing). */
function isStrictEcdsaDer(sig: Buffer, fieldLen: number): boolean {
  try {
    const [body, after] = expect(sig, 0x30);
    if (after.length) return false;
    const [r, r1] = expect(body, 0x02);
    const [s, r2] = expect(r1, 0x02);
    if (r2.length) return false;
    for (const n of [r, s]) {
      if (n.length === 0 || n.length > fieldLen + 1) return false;
      if (n[0]! & 0x80) return false;
      if (n.length > 1 && n[0] === 0 && !(n[1]! & 0x80)) return false;
    }
    return true;
  } catch {
    return false;
  }
}

/**
 * Composite-ML-DSA.Verify(pk, M, s, ctx). Both components must verify. Never throws: false for a malformed
 * signature, a wrong-length component, a ctx over 255 bytes or a key of another algorithm.
 */
export function compositeVerify(
  key: CompositePublicKey,
  message: Uint8Array,
  signature: Uint8Array,
  ctx: Uint8Array = new Uint8Array(0),
): boolean {
  try {
    if (!isCompositeKey(key) || ctx.length > 255) return false;
    const p = PARAMS[key.composite];
    if (key.mldsa.asymmetricKeyType !== p.mldsa || key.ecdsa.asymmetricKeyType !== "ec") return false;
    const sig = Buffer.from(signature);
    if (sig.length <= p.mldsaSigLen) return false;
    const mldsaSig = sig.subarray(0, p.mldsaSigLen);
    const tradSig = sig.subarray(p.mldsaSigLen);
    if (!isStrictEcdsaDer(tradSig, p.fieldLen)) return false;
    const mPrime = compositeMessageRepresentative(key.composite, message, ctx);
    const label = Buffer.from(p.label, "ascii");
    const okM = crypto.verify(
      null,
      mPrime,
      { key: key.mldsa, context: label } as crypto.VerifyKeyObjectInput,
      mldsaSig,
    );
    const okE = crypto.verify(p.ecdsaHash, mPrime, { key: key.ecdsa, dsaEncoding: "der" }, tradSig);
    return okM && okE;
  } catch {
    return false;
  }
}
