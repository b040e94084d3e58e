/**
 * X.509 certificates for SPIFFE (standards/X509-SVID.md) on RFC 5280: issuing CA certificates and
 * X509-SVIDs, and parsing certificates back into the fields path validation needs.
 *
 * Structures are built and parsed with @peculiar/asn1-x509 / asn1-schema; signatures come from
 * node:crypto through ./alg.ts (ECDSA P-256/P-384, Ed25519, ML-DSA-44/65/87 per RFC 9881: pure,
 * empty context, AlgorithmIdentifier parameters absent). The only hand-written DER code is readTlv,
 * a TLV header reader used to slice bytes out of existing encodings.
 *
 * Issuing speed (bench/x509-issue.ts): asn1js costs microseconds per encoded node, so issueX509Svid
 * encodes per certificate as little as possible. Constant parts (leaf extensions, per-issuer Name,
 * AKI and AlgorithmIdentifier, per-second Validity, per-ID SAN) are serialized once by asn1-x509 and
 * spliced into later serializations (PreEncoded), and the whole TBSCertificate for one issuer × SAN ×
 * key type is kept as an asn1-x509-built template whose fixed-length fields (serial, validity, public
 * key, key identifier) are overwritten per certificate (TbsTemplate). test/x509.test.ts checks both
 * against a fully typed build, byte for byte.
 */
import crypto, { type KeyObject } from "node:crypto";
import {
  AsnConvert,
  AsnIntegerArrayBufferConverter,
  AsnProp,
  AsnPropTypes,
  BitString,
  OctetString,
} from "@peculiar/asn1-schema";
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  AuthorityKeyIdentifier,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  Extension,
  Extensions,
  GeneralName,
  KeyUsage,
  Name,
  RelativeDistinguishedName,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Time,
  Validity,
} from "@peculiar/asn1-x509";
import { type KeyAlg, keyAlgOf, SIG_OID, SVID_KEY_ALGS, signData, spki } from "./alg.ts";
import {
  type CompositeAlg,
  type CompositePrivateKey,
  type CompositePublicKey,
  compositeAlgOfSpki,
  compositeOid,
  compositePublicOf,
  compositeSign,
  compositeSpki,
  isCompositeAlg,
  isCompositeKey,
  isCompositePrivateKey,
  parseCompositeSpki,
  serializeCompositePublic,
} from "./composite.ts";
import { QhxError, VerificationError } from "./errors.ts";
import { fromPem, toPem, toPemChain } from "./pem.ts";
import { SpiffeId } from "./spiffeid.ts";

// ------------------------------------------------------------------------------------------------
// OIDs and public types
// ------------------------------------------------------------------------------------------------

export const OID = {
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyIdentifier: "2.5.29.14",
  authorityKeyIdentifier: "2.5.29.35",
  nameConstraints: "2.5.29.30",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  commonName: "2.5.4.3",
  serialNumber: "2.5.4.5",
  country: "2.5.4.6",
  organization: "2.5.4.10",
} as const;

/** KeyUsage bits in RFC 5280 order: bit i of the BIT STRING is `1 << i` here (as in asn1-x509). */
export const KEY_USAGE_NAMES = [
  "digitalSignature",
  "nonRepudiation",
  "keyEncipherment",
  "dataEncipherment",
  "keyAgreement",
  "keyCertSign",
  "cRLSign",
  "encipherOnly",
  "decipherOnly",
] as const;
export type KeyUsageName = (typeof KEY_USAGE_NAMES)[number];

/** One certificate extension: `value` is the DER inside extnValue's OCTET STRING. */
export interface X509Extension {
  oid: string;
  critical: boolean;
  value: Uint8Array;
}

/** The subject DN attributes QHx writes (C, O, CN, in that order; serialNumber last). */
export interface SubjectFields {
  commonName?: string;
  organization?: string;
  /** two-letter ISO 3166 code, PrintableString */
  country?: string;
  /** the X.520 serialNumber attribute (2.5.4.5), PrintableString */
  serialNumber?: string;
}

export interface CaSigner {
  /** A composite ML-DSA + ECDSA private key signs with its composite algorithm (host/core/composite.ts). */
  privateKey: KeyObject | CompositePrivateKey;
  /** The signer's certificate; absent for a self-signed (root) certificate. */
  certDer?: Uint8Array;
}

export interface IssueCaOptions {
  /** The new CA's public key (a private key is accepted and its public half used); may be composite. */
  publicKey: KeyObject | CompositePublicKey;
  signer: CaSigner;
  trustDomain: string;
  /** Default: O=QHx, CN=<trust domain>, serialNumber=<certificate serial in hex>. */
  subject?: SubjectFields;
  notBefore: Date;
  notAfter: Date;
  pathLen?: number;
  serial?: Uint8Array;
}

export interface IssueSvidOptions {
  spiffeId: SpiffeId | string;
  /**
   * The workload's public key (a private key is accepted and its public half used), or a composite
   * ML-DSA + ECDSA key (host/core/composite.ts), whose SPKI carries the composite OID.
   */
  publicKey: KeyObject | CompositePublicKey;
  issuerCertDer: Uint8Array;
  issuerKey: KeyObject | CompositePrivateKey;
  notBefore: Date;
  /** Clamped to the issuer's notAfter: an SVID never outlives the certificate that signs it. */
  notAfter: Date;
  dnsNames?: string[];
  /** Default: an empty subject, and then the SAN extension is critical (RFC 5280 4.2.1.6). */
  subject?: SubjectFields;
  extraExtensions?: X509Extension[];
  serial?: Uint8Array;
}

/** Every field of a certificate, for issueCertificateRaw (tests use it to craft invalid certificates). */
export interface CertificateTemplate {
  /** INTEGER magnitude (unsigned, big-endian); normalized to minimal DER. */
  serial: Uint8Array;
  /** DER Name, written verbatim. */
  issuer: Uint8Array;
  /** DER Name, written verbatim. */
  subject: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  /** The subject key, or its DER SubjectPublicKeyInfo. */
  publicKey: KeyObject | CompositePublicKey | Uint8Array;
  extensions: X509Extension[];
  signingKey: KeyObject | CompositePrivateKey;
  /** Override the outer signatureAlgorithm OID (default: the signing key's). */
  signatureOid?: string;
  /** Override the TBSCertificate signature OID (default: the outer one). */
  tbsSignatureOid?: string;
}

// ------------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------------

function invalid(message: string, code = "QHX_X509_INVALID_ARGUMENT"): QhxError {
  return new QhxError(code, message);
}

function u8(buf: ArrayBuffer | ArrayBufferView): Uint8Array {
  return buf instanceof ArrayBuffer
    ? new Uint8Array(buf)
    : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** A fresh ArrayBuffer holding exactly these bytes (asn1-schema converters take ArrayBuffers). */
function ab(bytes: Uint8Array): ArrayBuffer {
  return bytes.slice().buffer as ArrayBuffer;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

/**
 * The one hand-rolled piece of DER: a TLV header reader (definite lengths only), used to slice the
 * exact TBSCertificate bytes out of a certificate and the subjectPublicKey out of an SPKI.
 */
export function readTlv(der: Uint8Array, offset: number): { tag: number; start: number; end: number } {
  if (offset + 2 > der.length) throw new VerificationError("QHX_X509_MALFORMED", "truncated DER");
  const tag = der[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new VerificationError("QHX_X509_MALFORMED", "multi-byte DER tag");
  let len = der[offset + 1]!;
  let start = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new VerificationError("QHX_X509_MALFORMED", "unsupported DER length");
    if (start + n > der.length) throw new VerificationError("QHX_X509_MALFORMED", "truncated DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i]!;
    if (len < 0x80 || (n > 1 && der[start] === 0)) {
      throw new VerificationError("QHX_X509_MALFORMED", "non-minimal DER length");
    }
    start += n;
  }
  const end = start + len;
  if (end > der.length) throw new VerificationError("QHX_X509_MALFORMED", "DER length exceeds input");
  return { tag, start, end };
}

/** The subjectPublicKey BIT STRING contents (without the unused-bits octet) of an SPKI. */
function subjectPublicKeyBits(spkiDer: Uint8Array): Uint8Array {
  const outer = readTlv(spkiDer, 0);
  const algId = readTlv(spkiDer, outer.start);
  const bits = readTlv(spkiDer, algId.end);
  if (outer.tag !== 0x30 || algId.tag !== 0x30 || bits.tag !== 0x03 || bits.end - bits.start < 1) {
    throw invalid("not a SubjectPublicKeyInfo");
  }
  return spkiDer.subarray(bits.start + 1, bits.end);
}

/** SubjectKeyIdentifier per RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits. */
export function computeKeyIdentifier(spkiDer: Uint8Array): Uint8Array {
  return crypto.createHash("sha1").update(subjectPublicKeyBits(spkiDer)).digest();
}

function publicHalf(key: KeyObject): KeyObject;
function publicHalf(key: KeyObject | CompositePublicKey): KeyObject | CompositePublicKey;
function publicHalf(key: KeyObject | CompositePublicKey): KeyObject | CompositePublicKey {
  if (isCompositeKey(key)) return compositePublicOf(key);
  return key.type === "private" ? crypto.createPublicKey(key) : key;
}

/** DER SPKI of a key, composite included. */
function anySpki(key: KeyObject | CompositePublicKey): Uint8Array {
  return isCompositeKey(key) ? new Uint8Array(compositeSpki(key)) : spki(key);
}

/** A certificate-signing key's algorithm: composite ML-DSA + ECDSA keys may sign certificates too. */
function signingAlgOrThrow(key: KeyObject | CompositePrivateKey, what: string): KeyAlg | CompositeAlg {
  if (isCompositeKey(key)) {
    if (!isCompositePrivateKey(key)) throw invalid(`${what} must be a private key`);
    return key.composite;
  }
  return keyAlgOrThrow(key, what, CERT_SIGNING_ALGS);
}

const sigOidOf = (alg: KeyAlg | CompositeAlg): string =>
  isCompositeAlg(alg) ? compositeOid(alg) : SIG_OID[alg];

function keyAlgOrThrow(key: KeyObject, what: string, allowed: readonly string[]): KeyAlg {
  const alg = keyAlgOf(key);
  if (!allowed.includes(alg)) {
    throw new QhxError("QHX_UNSUPPORTED_ALGORITHM", `${what} algorithm ${alg} cannot be used here`, {
      hint: `use one of ${allowed.join(", ")}`,
    });
  }
  return alg;
}

// ------------------------------------------------------------------------------------------------
// Splicing pre-encoded DER into asn1-schema serialization
// ------------------------------------------------------------------------------------------------

const EMPTY_AB = new ArrayBuffer(0);

/**
 * An asn1js-compatible block that writes fixed bytes. asn1js constructed blocks serialize their
 * children through `toBER(sizeOnly, writer)`; this one writes its DER as-is.
 */
class RawBlock {
  readonly bytes: ArrayBuffer;
  constructor(bytes: ArrayBuffer) {
    this.bytes = bytes;
  }
  toBER(_sizeOnly?: boolean, writer?: { write(buf: ArrayBuffer): void }): ArrayBuffer {
    if (writer) {
      writer.write(this.bytes);
      return EMPTY_AB;
    }
    return this.bytes;
  }
}

/**
 * A DER value produced earlier (by asn1-schema, or taken verbatim from a certificate) that the
 * asn1-schema serializer embeds unchanged wherever a typed field or array item would go: the
 * serializer hands any object with toASN/fromASN ("convertible") to that object.
 */
export class PreEncoded {
  readonly der: Uint8Array;
  readonly #block: RawBlock;
  constructor(der: Uint8Array | ArrayBuffer) {
    this.der = der instanceof ArrayBuffer ? new Uint8Array(der) : der;
    this.#block = new RawBlock(der instanceof ArrayBuffer ? der : ab(der));
  }
  static of(value: object): PreEncoded {
    return new PreEncoded(AsnConvert.serialize(value));
  }
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- asn1js block type, duck-typed (see RawBlock)
  toASN(): any {
    return this.#block;
  }
  fromASN(): this {
    throw new Error("PreEncoded is write-only");
  }
  toSchema(): never {
    throw new Error("PreEncoded is write-only");
  }
}

/** Cast a PreEncoded into the slot of a typed asn1-x509 field. */
function spliced<T>(p: PreEncoded): T {
  return p as unknown as T;
}

// ------------------------------------------------------------------------------------------------
// Building blocks (exported for tests that craft certificates field by field)
// ------------------------------------------------------------------------------------------------

function attribute(type: string, value: AttributeValue): RelativeDistinguishedName {
  return new RelativeDistinguishedName([new AttributeTypeAndValue({ type, value })]);
}

const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

/** DER Name for these attributes (C, O, CN, serialNumber; absent ones skipped; none → empty Name). */
export function encodeName(fields: SubjectFields = {}): Uint8Array {
  const rdns: RelativeDistinguishedName[] = [];
  if (fields.country !== undefined) {
    if (!/^[A-Z]{2}$/.test(fields.country))
      throw invalid(`country must be two capital letters: ${fields.country}`);
    rdns.push(attribute(OID.country, new AttributeValue({ printableString: fields.country })));
  }
  for (const [oid, v] of [
    [OID.organization, fields.organization],
    [OID.commonName, fields.commonName],
  ] as const) {
    if (v === undefined) continue;
    if (v.length === 0 || v.length > 1024) throw invalid(`DN attribute ${oid} must be 1..1024 characters`);
    rdns.push(attribute(oid, new AttributeValue({ utf8String: v })));
  }
  if (fields.serialNumber !== undefined) {
    if (
      !PRINTABLE.test(fields.serialNumber) ||
      fields.serialNumber.length === 0 ||
      fields.serialNumber.length > 64
    ) {
      throw invalid("serialNumber attribute must be 1..64 printable characters");
    }
    rdns.push(attribute(OID.serialNumber, new AttributeValue({ printableString: fields.serialNumber })));
  }
  return u8(AsnConvert.serialize(new Name(rdns)));
}

function extension(oid: string, critical: boolean, value: object): X509Extension {
  return { oid, critical, value: u8(AsnConvert.serialize(value)) };
}

export function basicConstraintsExtension(cA: boolean, pathLen?: number, critical = true): X509Extension {
  if (pathLen !== undefined && (!Number.isSafeInteger(pathLen) || pathLen < 0)) {
    throw invalid(`pathLen must be a non-negative integer: ${pathLen}`);
  }
  return extension(OID.basicConstraints, critical, new BasicConstraints({ cA, pathLenConstraint: pathLen }));
}

export function keyUsageBits(usages: Iterable<KeyUsageName>): number {
  let bits = 0;
  for (const u of usages) {
    const i = KEY_USAGE_NAMES.indexOf(u);
    if (i < 0) throw invalid(`unknown key usage ${u}`);
    bits |= 1 << i;
  }
  return bits;
}

export function keyUsageExtension(usages: Iterable<KeyUsageName>, critical = true): X509Extension {
  return extension(OID.keyUsage, critical, new KeyUsage(keyUsageBits(usages)));
}

export function extKeyUsageExtension(oids: string[], critical = false): X509Extension {
  return extension(OID.extKeyUsage, critical, new ExtendedKeyUsage(oids));
}

export function subjectAltNameExtension(
  names: { uris?: string[]; dnsNames?: string[] },
  critical = false,
): X509Extension {
  const gns = [
    ...(names.uris ?? []).map((u) => new GeneralName({ uniformResourceIdentifier: u })),
    ...(names.dnsNames ?? []).map((d) => new GeneralName({ dNSName: d })),
  ];
  return extension(OID.subjectAltName, critical, new SubjectAlternativeName(gns));
}

export function subjectKeyIdExtension(keyId: Uint8Array): X509Extension {
  return extension(OID.subjectKeyIdentifier, false, new SubjectKeyIdentifier(ab(keyId)));
}

export function authorityKeyIdExtension(keyId: Uint8Array): X509Extension {
  return extension(
    OID.authorityKeyIdentifier,
    false,
    new AuthorityKeyIdentifier({ keyIdentifier: new OctetString(ab(keyId)) }),
  );
}

function toAsnExtension(e: X509Extension): Extension {
  return new Extension({ extnID: e.oid, critical: e.critical, extnValue: new OctetString(ab(e.value)) });
}

/**
 * UTCTime for 1950–2049, GeneralizedTime otherwise (RFC 5280 4.1.2.5); whole seconds, UTC.
 * asn1-x509's `new Time(date)` only handles the upper bound, so the CHOICE is set here.
 */
export function x509Time(d: Date): Time {
  const t = d.getTime();
  if (!Number.isFinite(t)) throw invalid("invalid date");
  const date = new Date(t - (((t % 1000) + 1000) % 1000));
  const y = date.getUTCFullYear();
  if (y < 0 || y > 9999) throw invalid(`year ${y} cannot be encoded in a certificate`);
  return new Time(y >= 1950 && y <= 2049 ? { utcTime: date } : { generalTime: date });
}

function validity(notBefore: Date, notAfter: Date): Validity {
  const v = new Validity();
  v.notBefore = x509Time(notBefore);
  v.notAfter = x509Time(notAfter);
  return v;
}

/** Truncate to whole seconds, as the certificate will store it. */
function toSecond(d: Date): number {
  const t = d.getTime();
  return t - (((t % 1000) + 1000) % 1000);
}

// ------------------------------------------------------------------------------------------------
// Serial numbers
// ------------------------------------------------------------------------------------------------

let serialPool = Buffer.alloc(0);
let serialPos = 0;

/** 16 random bytes as a positive INTEGER: high bit cleared and first byte non-zero (so 16 bytes in DER). */
export function randomSerial(): Uint8Array {
  if (serialPos + 16 > serialPool.length) {
    serialPool = crypto.randomBytes(4096);
    serialPos = 0;
  }
  const s = new Uint8Array(serialPool.subarray(serialPos, serialPos + 16));
  serialPos += 16;
  const first = s[0]! & 0x7f;
  s[0] = first === 0 ? 1 : first;
  return s;
}

/** An unsigned serial as the minimal two's-complement INTEGER content (RFC 5280: positive, ≤ 20 octets). */
export function normalizeSerial(serial: Uint8Array): Uint8Array {
  let i = 0;
  while (i < serial.length && serial[i] === 0) i++;
  if (i === serial.length) throw invalid("serial number must be positive", "QHX_X509_BAD_SERIAL");
  const mag = serial.subarray(i);
  const out = mag[0]! & 0x80 ? Uint8Array.of(0, ...mag) : new Uint8Array(mag);
  if (out.length > 20) throw invalid("serial number longer than 20 octets", "QHX_X509_BAD_SERIAL");
  return out;
}

// ------------------------------------------------------------------------------------------------
// Signature algorithms
// ------------------------------------------------------------------------------------------------

const SIG_ALG_CACHE = new Map<string, PreEncoded>();

/** AlgorithmIdentifier with parameters absent (RFC 5758, RFC 8410, RFC 9881), pre-serialized. */
function signatureAlgorithmId(oid: string): PreEncoded {
  let p = SIG_ALG_CACHE.get(oid);
  if (!p) {
    p = PreEncoded.of(new AlgorithmIdentifier({ algorithm: oid }));
    SIG_ALG_CACHE.set(oid, p);
  }
  return p;
}

/** Algorithms that may sign certificates. */
export const CERT_SIGNING_ALGS: readonly KeyAlg[] = SVID_KEY_ALGS;

// ------------------------------------------------------------------------------------------------
// Raw, template-level issuance
// ------------------------------------------------------------------------------------------------

/** Sign TBSCertificate bytes and wrap them in an asn1-x509 Certificate. */
function signTbs(
  tbsDer: Uint8Array,
  signingKey: KeyObject | CompositePrivateKey,
  alg: KeyAlg | CompositeAlg,
  outerSigAlg: PreEncoded,
): Uint8Array {
  // composite: Composite-ML-DSA.Sign(sk, TBSCertificate, ctx="") per draft-ietf-lamps-pq-composite-sigs
  const signature = isCompositeKey(signingKey)
    ? new Uint8Array(compositeSign(signingKey as CompositePrivateKey, tbsDer)) // own buffer (ab() slices)
    : signData(signingKey, tbsDer, alg as KeyAlg);
  const cert = Object.assign(Object.create(Certificate.prototype) as Certificate, {
    tbsCertificate: spliced<TBSCertificate>(new PreEncoded(tbsDer)),
    signatureAlgorithm: spliced<AlgorithmIdentifier>(outerSigAlg),
    signatureValue: ab(signature),
  });
  return u8(AsnConvert.serialize(cert));
}

/**
 * Build and sign a certificate from explicit fields, with no SPIFFE rules applied: whatever the
 * template says is written. Issuance code goes through issueCaCertificate / issueX509Svid; this is
 * the escape hatch tests use to produce certificates the verifier must reject.
 */
export function issueCertificateRaw(t: CertificateTemplate): Uint8Array {
  const alg = signingAlgOrThrow(t.signingKey, "signing key");
  const outerOid = t.signatureOid ?? sigOidOf(alg);
  const spkiDer = t.publicKey instanceof Uint8Array ? t.publicKey : anySpki(t.publicKey);
  const tbs = new TBSCertificate({
    version: 2,
    serialNumber: ab(normalizeSerial(t.serial)),
    signature: spliced<AlgorithmIdentifier>(signatureAlgorithmId(t.tbsSignatureOid ?? outerOid)),
    issuer: spliced<Name>(new PreEncoded(t.issuer)),
    validity: validity(t.notBefore, t.notAfter),
    subject: spliced<Name>(new PreEncoded(t.subject)),
    subjectPublicKeyInfo: spliced<TBSCertificate["subjectPublicKeyInfo"]>(new PreEncoded(spkiDer)),
    extensions: t.extensions.length ? new Extensions(t.extensions.map(toAsnExtension)) : undefined,
  });
  return signTbs(u8(AsnConvert.serialize(tbs)), t.signingKey, alg, signatureAlgorithmId(outerOid));
}

// ------------------------------------------------------------------------------------------------
// CA certificates
// ------------------------------------------------------------------------------------------------

function checkValidityOrder(notBefore: Date, notAfter: Date): void {
  if (!(toSecond(notAfter) > toSecond(notBefore))) {
    throw invalid(
      `notAfter (${notAfter.toISOString()}) must be after notBefore (${notBefore.toISOString()})`,
      "QHX_X509_INVALID_VALIDITY",
    );
  }
}

function assertKeyMatchesCert(
  privateKey: KeyObject | CompositePrivateKey,
  certSpki: Uint8Array,
  what: string,
): void {
  const own = isCompositeKey(privateKey) ? anySpki(compositePublicOf(privateKey)) : spki(privateKey);
  if (!bytesEqual(own, certSpki)) {
    throw new QhxError(
      "QHX_X509_KEY_MISMATCH",
      `${what}: private key does not match the certificate's public key`,
    );
  }
}

function assertIsCa(cert: ParsedCertificate, what: string): void {
  if (!cert.basicConstraints?.cA || (cert.keyUsage && !cert.keyUsage.has("keyCertSign"))) {
    throw new QhxError(
      "QHX_X509_ISSUER_NOT_CA",
      `${what} is not a CA certificate (cA=true with keyCertSign)`,
    );
  }
}

/**
 * Issue a CA certificate for `trustDomain`: self-signed when `signer.certDer` is absent (the signer
 * key must then be the private half of `publicKey`), otherwise signed by the signer's certificate,
 * whose subject DN becomes the issuer DN byte for byte. The validity is written as given (not clamped).
 */
export function issueCaCertificate(o: IssueCaOptions): Uint8Array {
  const td = SpiffeId.parse(`spiffe://${o.trustDomain}`).trustDomain;
  if (!isCompositeKey(o.publicKey)) keyAlgOrThrow(o.publicKey, "CA key", CERT_SIGNING_ALGS);
  signingAlgOrThrow(o.signer.privateKey, "signer key");
  if (!isCompositeKey(o.signer.privateKey) && o.signer.privateKey.type !== "private") {
    throw invalid("signer.privateKey must be a private key");
  }
  checkValidityOrder(o.notBefore, o.notAfter);
  const serial = normalizeSerial(o.serial ?? randomSerial());
  const subjectSpki = isCompositeKey(o.publicKey)
    ? anySpki(compositePublicOf(o.publicKey))
    : spki(o.publicKey);
  const ski = computeKeyIdentifier(subjectSpki);
  const subject = encodeName(
    o.subject ?? {
      organization: "QHx",
      commonName: td,
      serialNumber: hex(serial),
    },
  );
  let issuerName: Uint8Array;
  let aki: Uint8Array;
  if (o.signer.certDer) {
    const issuer = parseCertificate(o.signer.certDer);
    assertIsCa(issuer, "signer certificate");
    assertKeyMatchesCert(o.signer.privateKey, issuer.spki, "signer");
    issuerName = issuer.subject;
    aki = issuer.subjectKeyId ?? computeKeyIdentifier(issuer.spki);
  } else {
    assertKeyMatchesCert(o.signer.privateKey, subjectSpki, "self-signed CA");
    issuerName = subject;
    aki = ski;
  }
  return issueCertificateRaw({
    serial,
    issuer: issuerName,
    subject,
    notBefore: o.notBefore,
    notAfter: o.notAfter,
    publicKey: subjectSpki,
    signingKey: o.signer.privateKey,
    extensions: [
      basicConstraintsExtension(true, o.pathLen),
      keyUsageExtension(["digitalSignature", "keyCertSign", "cRLSign"]),
      subjectKeyIdExtension(ski),
      authorityKeyIdExtension(aki),
      subjectAltNameExtension({ uris: [`spiffe://${td}`] }),
    ],
  });
}

// ------------------------------------------------------------------------------------------------
// X509-SVIDs (the hot path)
// ------------------------------------------------------------------------------------------------

/**
 * asn1js (under asn1-schema) spends several microseconds on every node it encodes, OBJECT IDENTIFIERs
 * most of all, so the SVID path encodes per certificate only what differs per certificate: the serial,
 * the subject key and its identifier, and the signature. Everything else is DER the same serializer
 * produced before: per process (constant extensions), per issuer (Name, AKI, AlgorithmIdentifier),
 * per second (Validity) and per SPIFFE ID (SAN extension).
 */

/** asn1-schema converter for an ANY field holding pre-encoded DER (serialization splices it). */
const RAW_DER = {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- asn1js block type, duck-typed (see RawBlock)
  toASN: (v: ArrayBuffer): any => new RawBlock(v),
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- asn1js block
  fromASN: (asn: any): ArrayBuffer => ab(u8(asn.valueBeforeDecodeView)),
};

/** asn1-x509's Extension with its extnID given as pre-encoded OBJECT IDENTIFIER DER. */
class OidSplicedExtension {
  extnID: ArrayBuffer = EMPTY_AB;
  critical = false;
  extnValue = new OctetString();
}
AsnProp({ type: AsnPropTypes.Any, converter: RAW_DER })(OidSplicedExtension.prototype, "extnID");
AsnProp({ type: AsnPropTypes.Boolean, defaultValue: false })(OidSplicedExtension.prototype, "critical");
AsnProp({ type: OctetString })(OidSplicedExtension.prototype, "extnValue");

/** DER of an OBJECT IDENTIFIER, taken from an asn1-x509 AlgorithmIdentifier encoding. */
function oidDer(oid: string): ArrayBuffer {
  const seq = u8(AsnConvert.serialize(new AlgorithmIdentifier({ algorithm: oid })));
  const outer = readTlv(seq, 0);
  return ab(seq.subarray(outer.start, readTlv(seq, outer.start).end));
}

const SKI_OID_DER = oidDer(OID.subjectKeyIdentifier);
const SAN_OID_DER = oidDer(OID.subjectAltName);

/** SubjectPublicKeyInfo AlgorithmIdentifiers of the key types the fast path encodes itself. */
const SPKI_ALG: Partial<Record<string, PreEncoded>> = {
  "ec-p256": PreEncoded.of(
    new AlgorithmIdentifier({ algorithm: "1.2.840.10045.2.1", parameters: oidDer("1.2.840.10045.3.1.7") }),
  ),
  "ec-p384": PreEncoded.of(
    new AlgorithmIdentifier({ algorithm: "1.2.840.10045.2.1", parameters: oidDer("1.3.132.0.34") }),
  ),
  ed25519: PreEncoded.of(new AlgorithmIdentifier({ algorithm: "1.3.101.112" })),
  "ml-dsa-44": PreEncoded.of(new AlgorithmIdentifier({ algorithm: SIG_OID["ml-dsa-44"] })),
  "ml-dsa-65": PreEncoded.of(new AlgorithmIdentifier({ algorithm: SIG_OID["ml-dsa-65"] })),
  "ml-dsa-87": PreEncoded.of(new AlgorithmIdentifier({ algorithm: SIG_OID["ml-dsa-87"] })),
};

interface EncodedKey {
  /** the SPKI, typed (asn1-x509, fast path) or as DER (OpenSSL's encoder, fallback) */
  spki: SubjectPublicKeyInfo | Uint8Array;
  /** raw public key (BIT STRING contents) when the fast path applies */
  raw: Buffer | undefined;
  alg: KeyAlg | undefined;
  /** SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 method 1) */
  keyId: Buffer;
}

/**
 * The SubjectPublicKeyInfo of a public key plus its key identifier. OpenSSL's SPKI encoder costs
 * 30–45 µs per call; exporting the raw public key (node ≥ 24.x "raw-public") and wrapping it with
 * asn1-x509's SubjectPublicKeyInfo yields the same DER (test/x509.test.ts checks) in a fraction.
 */
function encodeKey(publicKey: KeyObject | CompositePublicKey): EncodedKey {
  if (isCompositeKey(publicKey)) {
    // composite ML-DSA: SPKI = composite OID, BIT STRING mldsaPK || ECPoint; typed fast path does not apply
    return {
      spki: new Uint8Array(compositeSpki(publicKey)), // own ArrayBuffer: PreEncoded splices `.buffer`
      raw: undefined,
      alg: undefined,
      keyId: crypto.createHash("sha1").update(serializeCompositePublic(publicKey)).digest(),
    };
  }
  let alg: KeyAlg | undefined;
  try {
    alg = keyAlgOf(publicKey);
  } catch {
    alg = undefined;
  }
  const algId = alg && SPKI_ALG[alg];
  if (algId) {
    let raw: Buffer | undefined;
    try {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- "raw-public" is newer than @types/node
      raw = (publicKey as any).export({ format: "raw-public" }) as Buffer;
    } catch {
      raw = undefined;
    }
    if (raw && raw.length === RAW_KEY_LENGTH[alg!] && (raw[0] === 4 || !alg!.startsWith("ec-"))) {
      return {
        spki: new SubjectPublicKeyInfo({
          algorithm: spliced<AlgorithmIdentifier>(algId),
          subjectPublicKey: ab(raw),
        }),
        raw,
        alg,
        keyId: crypto.createHash("sha1").update(raw).digest(),
      };
    }
  }
  const der = spki(publicKey);
  return {
    spki: der,
    raw: undefined,
    alg,
    keyId: crypto.createHash("sha1").update(subjectPublicKeyBits(der)).digest(),
  };
}

const RAW_KEY_LENGTH: Partial<Record<KeyAlg, number>> = {
  "ec-p256": 65,
  "ec-p384": 97,
  ed25519: 32,
  "ml-dsa-44": 1312,
  "ml-dsa-65": 1952,
  "ml-dsa-87": 2592,
};

/** DER SubjectPublicKeyInfo of a key, encoded with asn1-x509 where QHx knows the key type. */
export function encodeSpki(publicKey: KeyObject): Uint8Array {
  const k = encodeKey(publicHalf(publicKey));
  return k.spki instanceof Uint8Array ? k.spki : u8(AsnConvert.serialize(k.spki));
}

/** What issuing under one (issuer certificate, issuer key) pair needs, computed once. */
interface IssuerContext {
  alg: KeyAlg | CompositeAlg;
  sigAlg: PreEncoded;
  issuerName: PreEncoded;
  notAfterMs: number;
  /** AuthorityKeyIdentifier Extension, pre-serialized */
  aki: PreEncoded;
}

const ISSUERS = new WeakMap<Uint8Array, WeakMap<KeyObject | CompositePrivateKey, IssuerContext>>();

function issuerContext(certDer: Uint8Array, key: KeyObject | CompositePrivateKey): IssuerContext {
  let byKey = ISSUERS.get(certDer);
  const hit = byKey?.get(key);
  if (hit) return hit;
  if (!isCompositeKey(key) && key.type !== "private") throw invalid("issuerKey must be a private key");
  const alg = signingAlgOrThrow(key, "issuer key");
  const issuer = parseCertificate(certDer);
  assertIsCa(issuer, "issuer certificate");
  assertKeyMatchesCert(key, issuer.spki, "issuer");
  const ctx: IssuerContext = {
    alg,
    sigAlg: signatureAlgorithmId(sigOidOf(alg)),
    issuerName: new PreEncoded(issuer.subject),
    notAfterMs: issuer.notAfter.getTime(),
    aki: PreEncoded.of(
      toAsnExtension(authorityKeyIdExtension(issuer.subjectKeyId ?? computeKeyIdentifier(issuer.spki))),
    ),
  };
  if (!byKey) {
    byKey = new WeakMap();
    ISSUERS.set(certDer, byKey);
  }
  byKey.set(key, ctx);
  return ctx;
}

/** Extensions every SVID carries, serialized once. */
const LEAF = {
  basicConstraints: PreEncoded.of(toAsnExtension(basicConstraintsExtension(false))),
  keyUsage: PreEncoded.of(toAsnExtension(keyUsageExtension(["digitalSignature"]))),
  keyUsageRsa: PreEncoded.of(toAsnExtension(keyUsageExtension(["digitalSignature", "keyEncipherment"]))),
  extKeyUsage: PreEncoded.of(toAsnExtension(extKeyUsageExtension([OID.serverAuth, OID.clientAuth]))),
  emptyName: PreEncoded.of(new Name()),
};

const SVID_BUILTIN_EXTS = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
  OID.subjectAltName,
]);

function checkDnsName(d: string): void {
  if (d.length === 0 || d.length > 253 || !/^[\x21-\x7e]+$/.test(d)) {
    throw invalid(`invalid DNS name ${JSON.stringify(d)}`);
  }
}

/** Validity DER of the last (notBefore, notAfter) pair, in whole seconds: issuing at rate repeats it. */
let lastValidity: { nb: number; na: number; der: PreEncoded } | undefined;

function validityDer(notBeforeMs: number, notAfterMs: number): PreEncoded {
  const v = lastValidity;
  if (v && v.nb === notBeforeMs && v.na === notAfterMs) return v.der;
  const der = PreEncoded.of(validity(new Date(notBeforeMs), new Date(notAfterMs)));
  lastValidity = { nb: notBeforeMs, na: notAfterMs, der };
  return der;
}

/** A bounded memo: cleared wholesale when full (entries are cheap to rebuild). */
class Memo<V> {
  readonly #map = new Map<string, V>();
  readonly #max: number;
  constructor(max: number) {
    this.#max = max;
  }
  get(key: string, make: () => V): V {
    let v = this.#map.get(key);
    if (v === undefined) {
      v = make();
      if (this.#map.size >= this.#max) this.#map.clear();
      this.#map.set(key, v);
    }
    return v;
  }
}

/** SAN extensions by (SPIFFE ID, DNS names, critical): SVIDs for one workload are reissued all day. */
const SAN_CACHE = new Memo<PreEncoded>(4096);

function sanExtension(uri: string, dnsNames: readonly string[] | undefined, critical: boolean): PreEncoded {
  const key = `${critical ? "!" : ""}${uri} ${dnsNames ? dnsNames.join(" ") : ""}`;
  return SAN_CACHE.get(key, () => {
    const names = [new GeneralName({ uniformResourceIdentifier: uri })];
    for (const d of dnsNames ?? []) {
      checkDnsName(d);
      names.push(new GeneralName({ dNSName: d }));
    }
    const ext = new OidSplicedExtension();
    ext.extnID = SAN_OID_DER;
    ext.critical = critical;
    ext.extnValue = new OctetString(AsnConvert.serialize(new SubjectAlternativeName(names)));
    return PreEncoded.of(ext);
  });
}

interface SvidParts {
  serial: Uint8Array;
  validity: PreEncoded;
  subject: PreEncoded;
  spki: SubjectPublicKeyInfo | Uint8Array;
  keyId: Uint8Array;
  san: PreEncoded;
  rsa: boolean;
  extra: X509Extension[] | undefined;
}

/** The SVID TBSCertificate, serialized by asn1-x509 with the cached parts spliced in. */
function buildSvidTbs(ctx: IssuerContext, p: SvidParts): Uint8Array {
  const ski = new OidSplicedExtension();
  ski.extnID = SKI_OID_DER;
  ski.extnValue = new OctetString(AsnConvert.serialize(new SubjectKeyIdentifier(ab(p.keyId))));
  const exts: (Extension | OidSplicedExtension)[] = [
    spliced<Extension>(LEAF.basicConstraints),
    spliced<Extension>(p.rsa ? LEAF.keyUsageRsa : LEAF.keyUsage),
    spliced<Extension>(LEAF.extKeyUsage),
    ski,
    spliced<Extension>(ctx.aki),
    spliced<Extension>(p.san),
  ];
  if (p.extra) {
    const seen = new Set(SVID_BUILTIN_EXTS);
    for (const e of p.extra) {
      if (seen.has(e.oid)) throw invalid(`duplicate extension ${e.oid}`);
      seen.add(e.oid);
      exts.push(toAsnExtension(e));
    }
  }
  const tbs = Object.assign(Object.create(TBSCertificate.prototype) as TBSCertificate, {
    version: 2,
    serialNumber: ab(p.serial),
    signature: spliced<AlgorithmIdentifier>(ctx.sigAlg),
    issuer: spliced<Name>(ctx.issuerName),
    validity: spliced<Validity>(p.validity),
    subject: spliced<Name>(p.subject),
    subjectPublicKeyInfo:
      p.spki instanceof Uint8Array ? spliced<SubjectPublicKeyInfo>(new PreEncoded(p.spki)) : p.spki,
    extensions: new Extensions(exts as Extension[]),
  });
  return u8(AsnConvert.serialize(tbs));
}

/**
 * A serialized SVID TBSCertificate with fixed-length holes: the serial's 16 content octets, the
 * Validity, the raw public key and the 20-octet key identifier. asn1-x509 builds it once (with random
 * placeholders, located afterwards) per issuer × SAN × subject × leaf key type × time encodings;
 * issuing then copies it and overwrites the holes with values of exactly the same length, so every
 * TLV header stays valid. test/x509.test.ts checks the result against a full buildSvidTbs.
 */
interface TbsTemplate {
  der: Uint8Array;
  serialAt: number;
  validityAt: number;
  validityLength: number;
  keyAt: number;
  keyLength: number;
  keyIdAt: number;
}

const TEMPLATES = new WeakMap<IssuerContext, Memo<TbsTemplate | null>>();

function uniqueIndex(hay: Buffer, needle: Uint8Array): number {
  const i = hay.indexOf(needle);
  return i >= 0 && hay.indexOf(needle, i + 1) < 0 ? i : -1;
}

function makeTemplate(
  ctx: IssuerContext,
  key: EncodedKey,
  validity: PreEncoded,
  subject: PreEncoded,
  san: PreEncoded,
) {
  const serial = randomSerial();
  const raw = crypto.randomBytes(key.raw!.length);
  if (key.alg!.startsWith("ec-")) raw[0] = 4;
  const keyId = crypto.randomBytes(20);
  const der = buildSvidTbs(ctx, {
    serial,
    validity,
    subject,
    spki: new SubjectPublicKeyInfo({
      algorithm: spliced<AlgorithmIdentifier>(SPKI_ALG[key.alg!]!),
      subjectPublicKey: ab(raw),
    }),
    keyId,
    san,
    rsa: false,
    extra: undefined,
  });
  const buf = Buffer.from(der.buffer, der.byteOffset, der.byteLength);
  const t: TbsTemplate = {
    der,
    serialAt: uniqueIndex(buf, serial),
    validityAt: uniqueIndex(buf, validity.der),
    validityLength: validity.der.length,
    keyAt: uniqueIndex(buf, raw.subarray(1)) - 1,
    keyLength: raw.length,
    keyIdAt: uniqueIndex(buf, keyId),
  };
  return t.serialAt < 0 || t.validityAt < 0 || t.keyAt < 0 || t.keyIdAt < 0 ? null : t;
}

/** A copy of the template with this certificate's values in its holes. */
function fillTemplate(t: TbsTemplate, serial: Uint8Array, validity: PreEncoded, key: EncodedKey): Uint8Array {
  const tbs = t.der.slice();
  tbs.set(serial, t.serialAt);
  tbs.set(validity.der, t.validityAt);
  tbs.set(key.raw!, t.keyAt);
  tbs.set(key.keyId, t.keyIdAt);
  return tbs;
}

const SUBJECT_CACHE = new Memo<PreEncoded>(256);

function timeKind(ms: number): string {
  const y = new Date(ms).getUTCFullYear();
  return y >= 1950 && y <= 2049 ? "u" : "g";
}

/**
 * Issue an X509-SVID: exactly one URI SAN (the SPIFFE ID, which must have a path) plus optional DNS
 * SANs; basicConstraints cA=false and keyUsage digitalSignature (RSA keys also keyEncipherment), both
 * critical; extKeyUsage serverAuth+clientAuth; SKI; AKI; a random 16-byte serial unless one is given.
 * Without `subject` the subject is empty and the SAN extension critical (RFC 5280 4.2.1.6).
 *
 * Validity: notAfter is CLAMPED to the issuer's notAfter, so an SVID never outlives the certificate
 * that signs it; if that leaves an empty window (the issuer has expired by notBefore) the call throws
 * QHX_X509_INVALID_VALIDITY. Times are truncated to whole seconds.
 *
 * The leaf key's algorithm is independent of the issuer's (e.g. ML-DSA CA, P-256 leaf).
 */
export function issueX509Svid(o: IssueSvidOptions): Uint8Array {
  const id = typeof o.spiffeId === "string" ? SpiffeId.parse(o.spiffeId) : o.spiffeId;
  if (id.path === "") {
    throw invalid(`an X509-SVID's SPIFFE ID must have a path: ${id}`, "QHX_X509_BAD_SPIFFE_ID");
  }
  const ctx = issuerContext(o.issuerCertDer, o.issuerKey);
  const leafKey = publicHalf(o.publicKey);
  const notBeforeMs = toSecond(o.notBefore);
  const notAfterMs = Math.min(toSecond(o.notAfter), ctx.notAfterMs);
  if (!(notAfterMs > notBeforeMs)) {
    throw invalid(
      `validity window is empty once notAfter is clamped to the issuer's (${new Date(ctx.notAfterMs).toISOString()})`,
      "QHX_X509_INVALID_VALIDITY",
    );
  }
  const key = encodeKey(leafKey);
  const validity = validityDer(notBeforeMs, notAfterMs);
  const uri = id.toString();
  const subjectKey = o.subject
    ? JSON.stringify([
        o.subject.country,
        o.subject.organization,
        o.subject.commonName,
        o.subject.serialNumber,
      ])
    : "";
  const subject = o.subject
    ? SUBJECT_CACHE.get(subjectKey, () => new PreEncoded(encodeName(o.subject)))
    : LEAF.emptyName;
  const san = sanExtension(uri, o.dnsNames, o.subject === undefined);

  const serial = o.serial ? normalizeSerial(o.serial) : randomSerial();
  let tbs: Uint8Array | undefined;
  if (key.raw && !o.extraExtensions && serial.length === 16) {
    let memo = TEMPLATES.get(ctx);
    if (!memo) {
      memo = new Memo(1024);
      TEMPLATES.set(ctx, memo);
    }
    const tkey = `${key.alg}|${timeKind(notBeforeMs)}${timeKind(notAfterMs)}|${subjectKey}|${uri} ${o.dnsNames?.join(" ") ?? ""}`;
    const t = memo.get(tkey, () => makeTemplate(ctx, key, validity, subject, san));
    if (t && t.validityLength === validity.der.length && t.keyLength === key.raw.length) {
      tbs = fillTemplate(t, serial, validity, key);
    }
  }
  tbs ??= buildSvidTbs(ctx, {
    serial,
    validity,
    subject,
    spki: key.spki,
    keyId: key.keyId,
    san,
    rsa: !isCompositeKey(leafKey) && leafKey.asymmetricKeyType === "rsa",
    extra: o.extraExtensions,
  });
  return signTbs(tbs, o.issuerKey, ctx.alg, ctx.sigAlg);
}

/** Test hook: the TBSCertificate issueX509Svid's template path and its typed path produce. */
export function _svidTbsBothWays(o: IssueSvidOptions & { serial: Uint8Array }): {
  template: Uint8Array | undefined;
  typed: Uint8Array;
} {
  const id = typeof o.spiffeId === "string" ? SpiffeId.parse(o.spiffeId) : o.spiffeId;
  const ctx = issuerContext(o.issuerCertDer, o.issuerKey);
  const key = encodeKey(publicHalf(o.publicKey));
  const nb = toSecond(o.notBefore);
  const na = Math.min(toSecond(o.notAfter), ctx.notAfterMs);
  const validity = validityDer(nb, na);
  const subject = o.subject ? new PreEncoded(encodeName(o.subject)) : LEAF.emptyName;
  const san = sanExtension(id.toString(), o.dnsNames, o.subject === undefined);
  const serial = normalizeSerial(o.serial);
  const typed = buildSvidTbs(ctx, {
    serial,
    validity,
    subject,
    spki: key.spki,
    keyId: key.keyId,
    san,
    rsa: false,
    extra: undefined,
  });
  const t = key.raw && serial.length === 16 ? makeTemplate(ctx, key, validity, subject, san) : null;
  return { template: t ? fillTemplate(t, serial, validity, key) : undefined, typed };
}

// ------------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------------

/**
 * TBSCertificate as asn1-x509 declares it, except that the fields whose exact bytes matter (the
 * AlgorithmIdentifier, both Names, the SPKI) are kept as raw DER (ASN.1 ANY).
 * The asn1-schema decorators are applied by hand (decorator syntax is not erasable TypeScript).
 */
class TbsView {
  version = 0;
  serialNumber: ArrayBuffer = EMPTY_AB;
  signature = new AlgorithmIdentifier();
  signatureRaw?: ArrayBufferView;
  issuer = new Name();
  issuerRaw?: ArrayBufferView;
  validity = new Validity();
  subject = new Name();
  subjectRaw?: ArrayBufferView;
  subjectPublicKeyInfo: ArrayBuffer = EMPTY_AB;
  issuerUniqueID?: ArrayBuffer;
  subjectUniqueID?: ArrayBuffer;
  extensions?: Extensions;
}
AsnProp({ type: AsnPropTypes.Integer, context: 0, defaultValue: 0 })(TbsView.prototype, "version");
AsnProp({ type: AsnPropTypes.Integer, converter: AsnIntegerArrayBufferConverter })(
  TbsView.prototype,
  "serialNumber",
);
AsnProp({ type: AlgorithmIdentifier, raw: true })(TbsView.prototype, "signature");
AsnProp({ type: Name, raw: true })(TbsView.prototype, "issuer");
AsnProp({ type: Validity })(TbsView.prototype, "validity");
AsnProp({ type: Name, raw: true })(TbsView.prototype, "subject");
AsnProp({ type: AsnPropTypes.Any })(TbsView.prototype, "subjectPublicKeyInfo");
AsnProp({ type: AsnPropTypes.BitString, context: 1, implicit: true, optional: true })(
  TbsView.prototype,
  "issuerUniqueID",
);
AsnProp({ type: AsnPropTypes.BitString, context: 2, implicit: true, optional: true })(
  TbsView.prototype,
  "subjectUniqueID",
);
AsnProp({ type: Extensions, context: 3, optional: true })(TbsView.prototype, "extensions");

class CertView {
  tbsCertificate = new TbsView();
  signatureAlgorithm = new AlgorithmIdentifier();
  signatureAlgorithmRaw?: ArrayBufferView;
  signatureValue = new BitString();
}
AsnProp({ type: TbsView })(CertView.prototype, "tbsCertificate");
AsnProp({ type: AlgorithmIdentifier, raw: true })(CertView.prototype, "signatureAlgorithm");
AsnProp({ type: BitString })(CertView.prototype, "signatureValue");

/** The exact DER of a field parsed with `raw: true` (a copy). */
function rawOf(v: ArrayBufferView | undefined): Uint8Array {
  if (!v) throw new VerificationError("QHX_X509_MALFORMED", "missing raw field");
  return u8(v).slice();
}

export interface ParsedExtension {
  oid: string;
  critical: boolean;
  /** DER inside extnValue */
  value: Uint8Array;
}

const ATTR_SHORT: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.5": "serialNumber",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "0.9.2342.19200300.100.1.25": "DC",
  "0.9.2342.19200300.100.1.1": "UID",
  "2.5.4.45": "x500UniqueIdentifier",
  "1.2.840.113549.1.9.1": "emailAddress",
};

/** "C=US, O=QHx, CN=example.org" in certificate order; multi-valued RDNs joined with "+". */
export function nameToString(name: Uint8Array | Name): string {
  const n = name instanceof Uint8Array ? AsnConvert.parse(name, Name) : name;
  return n
    .map((rdn) => rdn.map((atv) => `${ATTR_SHORT[atv.type] ?? atv.type}=${atv.value.toString()}`).join("+"))
    .join(", ");
}

function parseExtValue<T>(e: ParsedExtension, type: new () => T): T {
  try {
    return AsnConvert.parse(e.value, type);
  } catch (err) {
    throw new VerificationError(
      "QHX_X509_MALFORMED",
      `malformed extension ${e.oid}: ${(err as Error).message}`,
    );
  }
}

/** An X.509 certificate, decoded. All byte fields are views into (or copies of) the original DER. */
export class ParsedCertificate {
  readonly der: Uint8Array;
  /** 1 or 3 */
  readonly version: number;
  /** INTEGER content bytes (two's complement, as encoded) */
  readonly serialBytes: Uint8Array;
  /** lowercase hex of the serial's magnitude (no sign octet) */
  readonly serial: string;
  /** raw DER of the subject Name */
  readonly subject: Uint8Array;
  readonly subjectString: string;
  /** raw DER of the issuer Name */
  readonly issuer: Uint8Array;
  readonly issuerString: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** DER SubjectPublicKeyInfo */
  readonly spki: Uint8Array;
  /**
   * The public key. Throws QHX_UNSUPPORTED_ALGORITHM for a composite key (use `compositeKey`): handing
   * out one component would let a caller accept a signature by that component alone.
   */
  get publicKey(): KeyObject {
    if (!this.#publicKey) {
      throw new QhxError(
        "QHX_UNSUPPORTED_ALGORITHM",
        `the certificate's key is composite (${this.keyAlg}); use compositeKey`,
      );
    }
    return this.#publicKey;
  }
  readonly #publicKey: KeyObject | undefined;
  /** The composite ML-DSA + ECDSA key when the SPKI carries a composite OID. */
  readonly compositeKey: CompositePublicKey | undefined;
  /** The QHx algorithm of the key (e.g. "ml-dsa-65", "mldsa65-ecdsa-p256"), undefined when unsupported. */
  readonly keyAlg: KeyAlg | CompositeAlg | undefined;
  /** outer signatureAlgorithm OID */
  readonly signatureAlgorithm: string;
  /** raw DER of the outer AlgorithmIdentifier */
  readonly signatureAlgorithmDer: Uint8Array;
  /** TBSCertificate.signature OID */
  readonly tbsSignatureAlgorithm: string;
  /** raw DER of TBSCertificate.signature */
  readonly tbsSignatureAlgorithmDer: Uint8Array;
  /** true if the outer AlgorithmIdentifier carries parameters (none of QHx's algorithms allow them) */
  readonly signatureAlgorithmHasParams: boolean;
  /** exact TBSCertificate bytes of the original DER */
  readonly tbs: Uint8Array;
  readonly signature: Uint8Array;
  readonly basicConstraints: { cA: boolean; pathLen: number | undefined } | undefined;
  readonly keyUsage: ReadonlySet<KeyUsageName> | undefined;
  readonly extKeyUsage: string[] | undefined;
  readonly uriSans: string[];
  readonly dnsSans: string[];
  readonly subjectKeyId: Uint8Array | undefined;
  readonly authorityKeyId: Uint8Array | undefined;
  readonly extensions: ParsedExtension[];
  #x509: crypto.X509Certificate | undefined;

  constructor(der: Uint8Array) {
    const malformed = (m: string): VerificationError => new VerificationError("QHX_X509_MALFORMED", m);
    if (!(der instanceof Uint8Array) || der.length < 16) throw malformed("not a DER certificate");
    const outer = readTlv(der, 0);
    if (outer.tag !== 0x30 || outer.end !== der.length)
      throw malformed("certificate is not a single DER SEQUENCE");
    const tbsTlv = readTlv(der, outer.start);
    if (tbsTlv.tag !== 0x30) throw malformed("TBSCertificate is not a SEQUENCE");
    this.der = der;
    this.tbs = der.subarray(outer.start, tbsTlv.end);

    let view: CertView;
    try {
      view = AsnConvert.parse(der, CertView);
    } catch (e) {
      throw malformed(`cannot decode certificate: ${(e as Error).message}`);
    }
    const tbs = view.tbsCertificate;
    if (tbs.version !== 0 && tbs.version !== 2)
      throw malformed(`unsupported certificate version ${tbs.version + 1}`);
    this.version = tbs.version + 1;
    if (tbs.version === 0 && tbs.extensions) throw malformed("v1 certificate with extensions");

    this.serialBytes = u8(tbs.serialNumber);
    if (this.serialBytes.length === 0) throw malformed("empty serial number");
    this.serial = hex(
      this.serialBytes.length > 1 && this.serialBytes[0] === 0
        ? this.serialBytes.subarray(1)
        : this.serialBytes,
    );

    this.signatureAlgorithmDer = rawOf(view.signatureAlgorithmRaw);
    this.tbsSignatureAlgorithmDer = rawOf(tbs.signatureRaw);
    this.signatureAlgorithm = view.signatureAlgorithm.algorithm;
    this.tbsSignatureAlgorithm = tbs.signature.algorithm;
    this.signatureAlgorithmHasParams = view.signatureAlgorithm.parameters !== undefined;

    if (view.signatureValue.unusedBits !== 0) throw malformed("signature BIT STRING has unused bits");
    this.signature = u8(view.signatureValue.value);

    this.issuer = rawOf(tbs.issuerRaw);
    this.subject = rawOf(tbs.subjectRaw);
    this.issuerString = nameToString(tbs.issuer);
    this.subjectString = nameToString(tbs.subject);
    this.notBefore = tbs.validity.notBefore.getTime();
    this.notAfter = tbs.validity.notAfter.getTime();
    if (Number.isNaN(this.notBefore.getTime()) || Number.isNaN(this.notAfter.getTime())) {
      throw malformed("bad validity time");
    }

    this.spki = u8(tbs.subjectPublicKeyInfo);
    const composite = compositeAlgOfSpki(this.spki);
    if (composite) {
      try {
        this.compositeKey = parseCompositeSpki(this.spki);
      } catch (e) {
        throw malformed(`malformed composite public key: ${((e as Error).cause as Error)?.message ?? ""}`);
      }
      this.#publicKey = undefined;
      this.keyAlg = composite;
    } else {
      this.compositeKey = undefined;
      try {
        this.#publicKey = crypto.createPublicKey({
          key: Buffer.from(this.spki),
          format: "der",
          type: "spki",
        });
      } catch (e) {
        throw malformed(`unsupported or malformed public key: ${(e as Error).message}`);
      }
      let keyAlg: KeyAlg | undefined;
      try {
        keyAlg = keyAlgOf(this.#publicKey);
      } catch {
        keyAlg = undefined;
      }
      this.keyAlg = keyAlg;
    }

    const extensions: ParsedExtension[] = [];
    const seen = new Set<string>();
    for (const e of tbs.extensions ?? []) {
      if (seen.has(e.extnID)) throw malformed(`duplicate extension ${e.extnID}`);
      seen.add(e.extnID);
      extensions.push({ oid: e.extnID, critical: e.critical, value: u8(e.extnValue.buffer) });
    }
    this.extensions = extensions;

    let bc: ParsedCertificate["basicConstraints"];
    let ku: Set<KeyUsageName> | undefined;
    let eku: string[] | undefined;
    let ski: Uint8Array | undefined;
    let aki: Uint8Array | undefined;
    const uris: string[] = [];
    const dns: string[] = [];
    for (const e of extensions) {
      switch (e.oid) {
        case OID.basicConstraints: {
          const v = parseExtValue(e, BasicConstraints);
          const pathLen = v.pathLenConstraint;
          if (pathLen !== undefined && (typeof pathLen !== "number" || pathLen < 0)) {
            throw malformed("bad pathLenConstraint");
          }
          bc = { cA: v.cA === true, pathLen };
          break;
        }
        case OID.keyUsage: {
          const v = parseExtValue(e, KeyUsage);
          const bytes = u8(v.value);
          ku = new Set();
          for (let i = 0; i < KEY_USAGE_NAMES.length; i++) {
            const byte = bytes[i >> 3] ?? 0;
            if (byte & (0x80 >> (i & 7))) ku.add(KEY_USAGE_NAMES[i]!);
          }
          break;
        }
        case OID.extKeyUsage:
          eku = [...parseExtValue(e, ExtendedKeyUsage)];
          break;
        case OID.subjectAltName:
          for (const gn of parseExtValue(e, SubjectAlternativeName)) {
            if (gn.uniformResourceIdentifier !== undefined) uris.push(gn.uniformResourceIdentifier);
            else if (gn.dNSName !== undefined) dns.push(gn.dNSName);
          }
          break;
        case OID.subjectKeyIdentifier:
          ski = u8(parseExtValue(e, SubjectKeyIdentifier).buffer);
          break;
        case OID.authorityKeyIdentifier: {
          const v = parseExtValue(e, AuthorityKeyIdentifier);
          if (v.keyIdentifier) aki = u8(v.keyIdentifier.buffer);
          break;
        }
      }
    }
    this.basicConstraints = bc;
    this.keyUsage = ku;
    this.extKeyUsage = eku;
    this.uriSans = uris;
    this.dnsSans = dns;
    this.subjectKeyId = ski;
    this.authorityKeyId = aki;
  }

  /** node:crypto's view of the same certificate (OpenSSL parses it on first access). */
  get x509(): crypto.X509Certificate {
    this.#x509 ??= new crypto.X509Certificate(this.der);
    return this.#x509;
  }

  /** Subject DN equals issuer DN (byte-wise). */
  get selfIssued(): boolean {
    return bytesEqual(this.subject, this.issuer);
  }

  extension(oid: string): ParsedExtension | undefined {
    return this.extensions.find((e) => e.oid === oid);
  }
}

/** Decode a DER certificate; throws VerificationError QHX_X509_MALFORMED. */
export function parseCertificate(der: Uint8Array): ParsedCertificate {
  return new ParsedCertificate(der);
}

// ------------------------------------------------------------------------------------------------
// PEM
// ------------------------------------------------------------------------------------------------

export function certToPem(der: Uint8Array): string {
  return toPem(der, "CERTIFICATE");
}

export function chainToPem(chain: readonly Uint8Array[]): string {
  return toPemChain(chain, "CERTIFICATE");
}

/** All CERTIFICATE blocks of a PEM text, in order, as DER. */
export function parsePemChain(text: string): Uint8Array[] {
  return fromPem(text, "CERTIFICATE");
}
