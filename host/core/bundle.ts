/**
 * SPIFFE bundles per the SPIFFE Trust Domain and Bundle specification (§4) and the X.509-SVID / JWT-SVID
 * specifications' bundle sections:
 * - a bundle is an RFC 7517 JWK Set: `keys` (REQUIRED), `spiffe_sequence`, `spiffe_refresh_hint`;
 * - `use: "x509-svid"` keys carry the CA's public key and exactly one `x5c` certificate (standard
 *   base64 DER, RFC 7517 §4.7), whose public key must be the JWK's; they have no `kid`;
 * - `use: "jwt-svid"` keys carry a `kid` (REQUIRED, unique within the bundle);
 * - keys with an unknown `use` or an unknown `kty` MUST be ignored (§4.1.3, §4.2.1, §4.2.2). This module
 *   also ignores keys of a known `kty` whose curve / parameter set QHx cannot use (e.g. EC P-521, OKP
 *   X25519, AKP with an alg other than ML-DSA-44/65/87).
 *
 * Key types: EC P-256/P-384, OKP Ed25519, RSA, and AKP ML-DSA-44/65/87 (draft-ietf-cose-dilithium JWK).
 * JwtAuthority.expiresAt has no representation in the SPIFFE format and is not serialized.
 */
import crypto, { type JsonWebKey, type KeyObject, X509Certificate } from "node:crypto";
import type { JwtAuthority, TrustBundle } from "./bundle-types.ts";
import { QhxError } from "./errors.ts";
import { fromPem, toPemChain } from "./pem.ts";
import { parseTrustDomain } from "./spiffeid.ts";

export const X509_SVID_USE = "x509-svid";
export const JWT_SVID_USE = "jwt-svid";

/** Stable codes of bundle parsing / merging failures (thrown as BundleError). */
export const BUNDLE_ERROR_CODES = {
  invalidJson: "QHX_BUNDLE_INVALID_JSON",
  malformed: "QHX_BUNDLE_MALFORMED",
  badKey: "QHX_BUNDLE_BAD_KEY",
  privateKey: "QHX_BUNDLE_PRIVATE_KEY",
  x5cCount: "QHX_BUNDLE_X5C_COUNT",
  badCertificate: "QHX_BUNDLE_BAD_CERTIFICATE",
  keyMismatch: "QHX_BUNDLE_KEY_MISMATCH",
  missingKid: "QHX_BUNDLE_MISSING_KID",
  duplicateKid: "QHX_BUNDLE_DUPLICATE_KID",
  noCertificates: "QHX_BUNDLE_NO_CERTIFICATES",
  trustDomainMismatch: "QHX_BUNDLE_TRUST_DOMAIN_MISMATCH",
} as const;
export type BundleErrorCode = (typeof BUNDLE_ERROR_CODES)[keyof typeof BUNDLE_ERROR_CODES];

/** A bundle document is not a valid SPIFFE bundle; `code` names the rule (BUNDLE_ERROR_CODES). */
export class BundleError extends QhxError {
  constructor(code: BundleErrorCode, message: string) {
    super(code, message);
    this.name = "BundleError";
  }
}

const SUPPORTED_EC_CURVES = new Set(["P-256", "P-384"]);
const SUPPORTED_OKP_CURVES = new Set(["Ed25519"]);
const SUPPORTED_AKP_ALGS = new Set(["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"]);
const KNOWN_KTY = new Set(["EC", "OKP", "RSA", "AKP"]);

/** JWK members holding private key material; a bundle must never carry them. */
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"];

/** The public JWK of a key (only the key-material members, no use/kid/alg except AKP's required alg). */
export function bundleJwk(key: KeyObject): JsonWebKey {
  const pub = key.type === "private" ? crypto.createPublicKey(key) : key;
  if (pub.type !== "public")
    throw new QhxError("QHX_INVALID_ARGUMENT", "a bundle key must be an asymmetric key");
  return pub.export({ format: "jwk" });
}

function spkiOf(key: KeyObject): Buffer {
  return key.export({ type: "spki", format: "der" });
}

/** Whether this module can represent / use a public key of this kind. */
function supportedJwk(jwk: Record<string, unknown>): boolean {
  switch (jwk["kty"]) {
    case "EC":
      return SUPPORTED_EC_CURVES.has(jwk["crv"] as string);
    case "OKP":
      return SUPPORTED_OKP_CURVES.has(jwk["crv"] as string);
    case "RSA":
      return true;
    case "AKP":
      return SUPPORTED_AKP_ALGS.has(jwk["alg"] as string);
    default:
      return false;
  }
}

function certificateOf(der: Uint8Array, where: string): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch (e) {
    throw new BundleError(
      BUNDLE_ERROR_CODES.badCertificate,
      `${where}: not a DER X.509 certificate (${(e as Error).message})`,
    );
  }
}

/** Serialize as a SPIFFE bundle (JWK Set), x509-svid keys first, in the bundle's order. */
export function bundleToSpiffeJson(b: TrustBundle): string {
  const keys: Record<string, unknown>[] = [];
  b.x509Authorities.forEach((der, i) => {
    const cert = certificateOf(der, `x509 authority ${i}`);
    keys.push({
      use: X509_SVID_USE,
      ...bundleJwk(cert.publicKey),
      x5c: [Buffer.from(der).toString("base64")],
    });
  });
  for (const a of b.jwtAuthorities) {
    if (typeof a.kid !== "string" || a.kid.length === 0) {
      throw new BundleError(BUNDLE_ERROR_CODES.missingKid, "a JWT authority has no kid");
    }
    keys.push({ use: JWT_SVID_USE, kid: a.kid, ...bundleJwk(a.publicKey) });
  }
  const doc: Record<string, unknown> = { keys, spiffe_sequence: b.sequence };
  if (b.refreshHint !== undefined) doc["spiffe_refresh_hint"] = b.refreshHint;
  return JSON.stringify(doc, null, 2);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function optionalUint(doc: Record<string, unknown>, name: string): number | undefined {
  const v = doc[name];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new BundleError(BUNDLE_ERROR_CODES.malformed, `"${name}" must be a non-negative integer`);
  }
  return v;
}

const STD_B64 = /^[A-Za-z0-9+/]*={0,2}$/;

function importJwk(jwk: Record<string, unknown>, where: string): KeyObject {
  for (const m of PRIVATE_MEMBERS) {
    if (Object.hasOwn(jwk, m)) {
      throw new BundleError(
        BUNDLE_ERROR_CODES.privateKey,
        `${where}: JWK carries private key material ("${m}")`,
      );
    }
  }
  // Only the key-material members go to node:crypto (use/kid/x5c/key_ops are ours to interpret).
  const material: Record<string, unknown> = { kty: jwk["kty"] };
  const members: Record<string, string[]> = {
    EC: ["crv", "x", "y"],
    OKP: ["crv", "x"],
    RSA: ["n", "e"],
    AKP: ["alg", "pub"],
  };
  for (const m of members[jwk["kty"] as string] ?? []) {
    if (typeof jwk[m] !== "string") {
      throw new BundleError(
        BUNDLE_ERROR_CODES.badKey,
        `${where}: JWK member "${m}" is missing or not a string`,
      );
    }
    material[m] = jwk[m];
  }
  try {
    return crypto.createPublicKey({ key: material as JsonWebKey, format: "jwk" });
  } catch (e) {
    throw new BundleError(BUNDLE_ERROR_CODES.badKey, `${where}: invalid JWK (${(e as Error).message})`);
  }
}

/**
 * Parse and strictly validate a SPIFFE bundle for `trustDomain`. Throws BundleError (BUNDLE_ERROR_CODES)
 * for anything non-conforming; silently skips keys with an unknown `use` or `kty` (as the spec requires)
 * or an unsupported curve / parameter set.
 */
export function parseSpiffeBundle(json: string, trustDomain: string): TrustBundle {
  const td = parseTrustDomain(trustDomain);
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (e) {
    throw new BundleError(
      BUNDLE_ERROR_CODES.invalidJson,
      `bundle is not valid JSON: ${(e as Error).message}`,
    );
  }
  if (!isObject(doc)) throw new BundleError(BUNDLE_ERROR_CODES.malformed, "bundle is not a JSON object");
  if (!Array.isArray(doc["keys"])) {
    throw new BundleError(BUNDLE_ERROR_CODES.malformed, 'bundle has no "keys" array');
  }
  const sequence = optionalUint(doc, "spiffe_sequence") ?? 0;
  const refreshHint = optionalUint(doc, "spiffe_refresh_hint");

  const x509Authorities: Uint8Array[] = [];
  const seenCerts = new Set<string>();
  const jwtAuthorities: JwtAuthority[] = [];
  const kids = new Set<string>();

  doc["keys"].forEach((jwk: unknown, i: number) => {
    const where = `keys[${i}]`;
    if (!isObject(jwk)) throw new BundleError(BUNDLE_ERROR_CODES.malformed, `${where} is not a JSON object`);
    const use = jwk["use"];
    const kty = jwk["kty"];
    if (typeof use !== "string") {
      throw new BundleError(BUNDLE_ERROR_CODES.malformed, `${where}: "use" is missing or not a string`);
    }
    if (typeof kty !== "string") {
      throw new BundleError(BUNDLE_ERROR_CODES.malformed, `${where}: "kty" is missing or not a string`);
    }
    if (use !== X509_SVID_USE && use !== JWT_SVID_USE) return; // unknown use: ignore (§4.2.2)
    if (!KNOWN_KTY.has(kty)) return; // unknown key type: ignore (§4.2.1)
    if (!supportedJwk(jwk)) return; // known type, but a curve / parameter set QHx does not use

    const key = importJwk(jwk, where);
    if (use === X509_SVID_USE) {
      const x5c = jwk["x5c"];
      if (!Array.isArray(x5c) || x5c.length !== 1) {
        const n = Array.isArray(x5c) ? x5c.length : 0;
        throw new BundleError(
          BUNDLE_ERROR_CODES.x5cCount,
          `${where}: x509-svid key needs exactly one x5c, has ${n}`,
        );
      }
      const b64 = x5c[0];
      if (typeof b64 !== "string" || b64.length === 0 || b64.length % 4 !== 0 || !STD_B64.test(b64)) {
        throw new BundleError(BUNDLE_ERROR_CODES.badCertificate, `${where}: x5c[0] is not standard base64`);
      }
      const der = new Uint8Array(Buffer.from(b64, "base64"));
      const cert = certificateOf(der, where);
      if (!spkiOf(cert.publicKey).equals(spkiOf(key))) {
        throw new BundleError(
          BUNDLE_ERROR_CODES.keyMismatch,
          `${where}: the JWK does not match the certificate's public key`,
        );
      }
      const h = Buffer.from(der).toString("base64");
      if (!seenCerts.has(h)) {
        seenCerts.add(h);
        x509Authorities.push(der);
      }
      return;
    }
    const kid = jwk["kid"];
    if (typeof kid !== "string" || kid.length === 0) {
      throw new BundleError(BUNDLE_ERROR_CODES.missingKid, `${where}: jwt-svid key has no kid`);
    }
    if (kids.has(kid)) {
      throw new BundleError(
        BUNDLE_ERROR_CODES.duplicateKid,
        `${where}: duplicate kid ${JSON.stringify(kid)}`,
      );
    }
    kids.add(kid);
    jwtAuthorities.push({ kid, publicKey: key });
  });

  const bundle: TrustBundle = { trustDomain: td, x509Authorities, jwtAuthorities, sequence };
  if (refreshHint !== undefined) bundle.refreshHint = refreshHint;
  return bundle;
}

/** The bundle's X.509 authorities as a PEM certificate chain (JWT authorities are not representable). */
export function bundleToPem(b: TrustBundle): string {
  return toPemChain(b.x509Authorities);
}

/** A bundle of X.509 authorities from PEM CERTIFICATE blocks. Requires at least one valid certificate. */
export function parsePemBundle(text: string, trustDomain: string): TrustBundle {
  const td = parseTrustDomain(trustDomain);
  let ders: Uint8Array[];
  try {
    ders = fromPem(text, "CERTIFICATE");
  } catch (e) {
    throw new BundleError(BUNDLE_ERROR_CODES.badCertificate, `PEM bundle: ${(e as Error).message}`);
  }
  if (ders.length === 0) {
    throw new BundleError(BUNDLE_ERROR_CODES.noCertificates, "PEM bundle contains no CERTIFICATE block");
  }
  const seen = new Set<string>();
  const x509Authorities: Uint8Array[] = [];
  ders.forEach((der, i) => {
    const cert = certificateOf(der, `PEM certificate ${i}`);
    if (!supportedJwk(bundleJwk(cert.publicKey) as Record<string, unknown>)) {
      throw new BundleError(BUNDLE_ERROR_CODES.badKey, `PEM certificate ${i}: unsupported public key type`);
    }
    const h = Buffer.from(der).toString("base64");
    if (!seen.has(h)) {
      seen.add(h);
      x509Authorities.push(der);
    }
  });
  return { trustDomain: td, x509Authorities, jwtAuthorities: [], sequence: 0 };
}

function derKey(der: Uint8Array): string {
  return Buffer.from(der).toString("base64");
}

function jwtKeyId(a: JwtAuthority): string {
  const pub = a.publicKey.type === "private" ? crypto.createPublicKey(a.publicKey) : a.publicKey;
  return spkiOf(pub).toString("base64");
}

/**
 * Union of two bundles of the same trust domain: X.509 authorities deduplicated by DER, JWT authorities by
 * kid (the same kid bound to different keys is an error). Sequence: the larger; refresh hint: the smaller.
 */
export function mergeBundles(a: TrustBundle, b: TrustBundle): TrustBundle {
  if (a.trustDomain !== b.trustDomain) {
    throw new BundleError(
      BUNDLE_ERROR_CODES.trustDomainMismatch,
      `cannot merge bundles of "${a.trustDomain}" and "${b.trustDomain}"`,
    );
  }
  const seen = new Set<string>();
  const x509Authorities: Uint8Array[] = [];
  for (const der of [...a.x509Authorities, ...b.x509Authorities]) {
    const k = derKey(der);
    if (!seen.has(k)) {
      seen.add(k);
      x509Authorities.push(der);
    }
  }
  const byKid = new Map<string, JwtAuthority>();
  for (const auth of [...a.jwtAuthorities, ...b.jwtAuthorities]) {
    const prev = byKid.get(auth.kid);
    if (!prev) {
      byKid.set(auth.kid, auth);
      continue;
    }
    if (jwtKeyId(prev) !== jwtKeyId(auth)) {
      throw new BundleError(
        BUNDLE_ERROR_CODES.duplicateKid,
        `kid ${JSON.stringify(auth.kid)} names two different keys`,
      );
    }
    if (prev.expiresAt !== undefined && (auth.expiresAt === undefined || auth.expiresAt > prev.expiresAt)) {
      byKid.set(auth.kid, { ...prev, expiresAt: auth.expiresAt });
    }
  }
  const merged: TrustBundle = {
    trustDomain: a.trustDomain,
    x509Authorities,
    jwtAuthorities: [...byKid.values()],
    sequence: Math.max(a.sequence, b.sequence),
  };
  const hints = [a.refreshHint, b.refreshHint].filter((h): h is number => h !== undefined);
  if (hints.length > 0) merged.refreshHint = Math.min(...hints);
  return merged;
}

/**
 * Whether two bundles hold the same trust anchors: same trust domain, same set of X.509 authorities and
 * same kid → key mapping, regardless of order, sequence, refresh hint and expiresAt.
 */
export function sameBundleContent(a: TrustBundle, b: TrustBundle): boolean {
  if (a.trustDomain !== b.trustDomain) return false;
  const certs = (x: TrustBundle) => [...new Set(x.x509Authorities.map(derKey))].sort();
  const ca = certs(a);
  const cb = certs(b);
  if (ca.length !== cb.length || ca.some((v, i) => v !== cb[i])) return false;
  const jwts = (x: TrustBundle) => new Map(x.jwtAuthorities.map((j) => [j.kid, jwtKeyId(j)]));
  const ja = jwts(a);
  const jb = jwts(b);
  if (ja.size !== jb.size) return false;
  for (const [kid, k] of ja) if (jb.get(kid) !== k) return false;
  return true;
}
