/**
 * X509-SVID verification: RFC 5280 path validation from the leaf to an X.509 authority of the leaf's
 * trust domain bundle, plus the SPIFFE rules of standards/X509-SVID.md (sections 3, 4 and 5).
 *
 * The path is the chain as presented (leaf first, each certificate issued by the next), ending either
 * at a certificate that is itself in the bundle or at one that a bundle authority signed directly;
 * certificates presented after a bundle authority are ignored. Every failure is a VerificationError
 * whose `code` names the rule (SVID_ERROR_CODES).
 */
import crypto from "node:crypto";
import { keyAlgForSigOid, verifyData } from "./alg.ts";
import { type BundleSource, lookupBundle } from "./bundle-types.ts";
import { compositeAlgForOid, compositeVerify } from "./composite.ts";
import { QhxError, VerificationError } from "./errors.ts";
import { SpiffeId } from "./spiffeid.ts";
import { bytesEqual, OID, type ParsedCertificate, parseCertificate } from "./x509.ts";

export const SVID_ERROR_CODES = [
  "QHX_SVID_EMPTY_CHAIN",
  "QHX_SVID_CHAIN_TOO_LONG",
  "QHX_SVID_MALFORMED",
  "QHX_SVID_NO_URI_SAN",
  "QHX_SVID_MULTIPLE_URI_SANS",
  "QHX_SVID_BAD_SPIFFE_ID",
  "QHX_SVID_NO_BASIC_CONSTRAINTS",
  "QHX_SVID_LEAF_IS_CA",
  "QHX_SVID_BAD_KEY_USAGE",
  "QHX_SVID_NO_BUNDLE",
  "QHX_SVID_UNKNOWN_CRITICAL_EXT",
  "QHX_SVID_NOT_CA",
  "QHX_SVID_TRUST_DOMAIN_MISMATCH",
  "QHX_SVID_NOT_YET_VALID",
  "QHX_SVID_EXPIRED",
  "QHX_SVID_ISSUER_MISMATCH",
  "QHX_SVID_BAD_SIGNATURE",
  "QHX_SVID_UNTRUSTED",
  "QHX_SVID_PATH_LEN",
] as const;
export type SvidErrorCode = (typeof SVID_ERROR_CODES)[number];

export const DEFAULT_MAX_CHAIN_LENGTH = 8;

export interface VerifyX509SvidOptions {
  /** Most certificates the presented chain may hold (leaf included). Default 8. */
  maxChainLength?: number;
}

/** The parsed certificates may be shared with other verifications: treat them as read-only. */
export interface VerifiedX509Svid {
  spiffeId: SpiffeId;
  trustDomain: string;
  leaf: ParsedCertificate;
  /** leaf, intermediates, and the bundle authority the path ends at */
  path: ParsedCertificate[];
}

/** Extensions this verifier processes; any other extension marked critical fails verification. */
const HANDLED_EXTENSIONS = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
]);

function fail(code: SvidErrorCode, message: string): never {
  throw new VerificationError(code, message);
}

/** Bundle authorities are long-lived objects: parse each once (null: unparseable, ignored). */
const AUTHORITIES = new WeakMap<Uint8Array, ParsedCertificate | null>();

function parseAuthority(der: Uint8Array): ParsedCertificate | null {
  let p = AUTHORITIES.get(der);
  if (p === undefined) {
    try {
      p = parseCertificate(der);
    } catch {
      p = null;
    }
    AUTHORITIES.set(der, p);
  }
  return p;
}

/**
 * Presented certificates parsed before, by SHA-256 of their DER: the same intermediates (and, between
 * rotations, the same leaves) arrive again and again, and asn1-x509 parsing costs far more than
 * hashing. Entries hold a private copy of the DER, so callers reusing their buffers cannot alter them.
 */
const PRESENTED = new Map<string, ParsedCertificate>();
const PRESENTED_MAX = 1024;

function parsePresented(der: Uint8Array): ParsedCertificate {
  const key = crypto.createHash("sha256").update(der).digest("base64");
  let p = PRESENTED.get(key);
  if (!p) {
    p = parseCertificate(new Uint8Array(der));
    if (PRESENTED.size >= PRESENTED_MAX) PRESENTED.clear();
    PRESENTED.set(key, p);
  }
  return p;
}

function describe(cert: ParsedCertificate, index: number): string {
  return `certificate ${index} (${cert.subjectString || cert.uriSans[0] || `serial ${cert.serial}`})`;
}

/**
 * Why `cert` was not signed by `issuer`'s key, or null if it was: the two signatureAlgorithm fields
 * must be identical, parameters absent, the algorithm one QHx accepts and of the issuer key's type.
 */
function signatureProblem(cert: ParsedCertificate, issuer: ParsedCertificate): string | null {
  if (!bytesEqual(cert.signatureAlgorithmDer, cert.tbsSignatureAlgorithmDer)) {
    return "signatureAlgorithm differs from the TBSCertificate signature field";
  }
  if (cert.signatureAlgorithmHasParams)
    return `signature algorithm ${cert.signatureAlgorithm} has parameters`;
  const composite = compositeAlgForOid(cert.signatureAlgorithm);
  if (composite) {
    // composite ML-DSA + ECDSA (draft-ietf-lamps-pq-composite-sigs): both components over M', empty ctx
    if (issuer.keyAlg !== composite || !issuer.compositeKey) {
      return `signature algorithm ${composite} does not match the issuer's ${issuer.keyAlg ?? "unsupported"} key`;
    }
    if (!compositeVerify(issuer.compositeKey, cert.tbs, cert.signature)) return "signature does not verify";
    return null;
  }
  const alg = keyAlgForSigOid(cert.signatureAlgorithm);
  if (!alg || alg === "rsa-2048") return `unsupported signature algorithm ${cert.signatureAlgorithm}`;
  if (issuer.keyAlg !== alg) {
    return `signature algorithm ${alg} does not match the issuer's ${issuer.keyAlg ?? "unsupported"} key`;
  }
  if (!verifyData(issuer.publicKey, cert.tbs, cert.signature, { alg })) return "signature does not verify";
  return null;
}

function checkValidity(cert: ParsedCertificate, index: number, now: Date): void {
  const t = now.getTime();
  if (t < cert.notBefore.getTime()) {
    fail(
      "QHX_SVID_NOT_YET_VALID",
      `${describe(cert, index)} is not valid before ${cert.notBefore.toISOString()}`,
    );
  }
  if (t > cert.notAfter.getTime()) {
    fail("QHX_SVID_EXPIRED", `${describe(cert, index)} expired at ${cert.notAfter.toISOString()}`);
  }
}

function checkCriticalExtensions(cert: ParsedCertificate, index: number): void {
  for (const e of cert.extensions) {
    if (e.critical && !HANDLED_EXTENSIONS.has(e.oid)) {
      fail(
        "QHX_SVID_UNKNOWN_CRITICAL_EXT",
        `${describe(cert, index)} has unsupported critical extension ${e.oid}`,
      );
    }
  }
}

/** cA=true and keyCertSign (SPIFFE requires the keyUsage extension on every signing certificate). */
function checkCa(cert: ParsedCertificate, index: number): void {
  if (!cert.basicConstraints?.cA) {
    fail(
      "QHX_SVID_NOT_CA",
      `${describe(cert, index)} issues certificates but is not a CA (basicConstraints cA)`,
    );
  }
  if (!cert.keyUsage?.has("keyCertSign")) {
    fail(
      "QHX_SVID_NOT_CA",
      `${describe(cert, index)} issues certificates but its keyUsage lacks keyCertSign`,
    );
  }
}

/**
 * pathLenConstraint of every CA in the path: the non-self-issued intermediates below it (between it
 * and the leaf) may not outnumber it (RFC 5280 6.1.4 (l), (m); applied to the bundle authority too).
 */
function checkPathLengths(path: ParsedCertificate[]): void {
  let below = 0;
  for (let k = 1; k < path.length; k++) {
    const p = path[k]!.basicConstraints?.pathLen;
    if (p !== undefined && below > p) {
      fail(
        "QHX_SVID_PATH_LEN",
        `${describe(path[k]!, k)} allows ${p} intermediate CA(s) below it, the path has ${below}`,
      );
    }
    if (!path[k]!.selfIssued) below++;
  }
}

/**
 * Verify an X509-SVID chain (DER, leaf first) against the bundle of the leaf's trust domain at `now`.
 * Returns the SPIFFE ID and the validated path; throws VerificationError (SVID_ERROR_CODES) otherwise.
 */
export function verifyX509Svid(
  chain: Uint8Array[],
  bundles: BundleSource,
  now: Date,
  opts: VerifyX509SvidOptions = {},
): VerifiedX509Svid {
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) {
    throw new QhxError("QHX_INVALID_ARGUMENT", "verifyX509Svid: `now` must be a valid Date");
  }
  if (!Array.isArray(chain) || chain.length === 0)
    fail("QHX_SVID_EMPTY_CHAIN", "the certificate chain is empty");
  const max = opts.maxChainLength ?? DEFAULT_MAX_CHAIN_LENGTH;
  if (chain.length > max) {
    fail(
      "QHX_SVID_CHAIN_TOO_LONG",
      `the chain has ${chain.length} certificates, at most ${max} are accepted`,
    );
  }
  const certs = chain.map((der, i) => {
    try {
      return parsePresented(der);
    } catch (e) {
      return fail("QHX_SVID_MALFORMED", `certificate ${i} cannot be parsed: ${(e as Error).message}`);
    }
  });

  // --- the leaf (X509-SVID 3.1, 4.1, 4.3, 5.2)
  const leaf = certs[0]!;
  if (leaf.uriSans.length === 0) fail("QHX_SVID_NO_URI_SAN", "the leaf certificate has no URI SAN");
  if (leaf.uriSans.length > 1) {
    fail(
      "QHX_SVID_MULTIPLE_URI_SANS",
      `the leaf certificate has ${leaf.uriSans.length} URI SANs, exactly one is allowed`,
    );
  }
  let spiffeId: SpiffeId;
  try {
    spiffeId = SpiffeId.parse(leaf.uriSans[0]!);
  } catch (e) {
    return fail("QHX_SVID_BAD_SPIFFE_ID", `the leaf URI SAN is not a SPIFFE ID: ${(e as Error).message}`);
  }
  if (spiffeId.path === "") {
    fail(
      "QHX_SVID_BAD_SPIFFE_ID",
      `the leaf SPIFFE ID ${spiffeId} has no path (a trust domain ID is not an SVID)`,
    );
  }
  if (!leaf.basicConstraints) {
    fail("QHX_SVID_NO_BASIC_CONSTRAINTS", "the leaf certificate has no basicConstraints extension");
  }
  if (leaf.basicConstraints.cA)
    fail("QHX_SVID_LEAF_IS_CA", "the leaf certificate is a CA (basicConstraints cA=true)");
  if (!leaf.keyUsage) fail("QHX_SVID_BAD_KEY_USAGE", "the leaf certificate has no keyUsage extension");
  if (!leaf.keyUsage.has("digitalSignature")) {
    fail("QHX_SVID_BAD_KEY_USAGE", "the leaf keyUsage lacks digitalSignature");
  }
  if (leaf.keyUsage.has("keyCertSign") || leaf.keyUsage.has("cRLSign")) {
    fail("QHX_SVID_BAD_KEY_USAGE", "the leaf keyUsage has keyCertSign or cRLSign");
  }

  const trustDomain = spiffeId.trustDomain;
  const bundle = lookupBundle(bundles, trustDomain);
  if (!bundle) fail("QHX_SVID_NO_BUNDLE", `no trust bundle for trust domain ${trustDomain}`);
  const authorities = bundle.x509Authorities;

  // --- the presented path, up to the first certificate that is itself a bundle authority
  let end = certs.length;
  let anchoredInChain = false;
  for (let i = 1; i < certs.length; i++) {
    if (authorities.some((a) => bytesEqual(a, chain[i]!))) {
      end = i + 1;
      anchoredInChain = true;
      break;
    }
  }
  const path = certs.slice(0, end);
  const lastChainIndex = anchoredInChain ? end - 2 : end - 1; // last certificate that is not an authority

  for (let i = 0; i <= lastChainIndex; i++) {
    const c = path[i]!;
    checkCriticalExtensions(c, i);
    if (i === 0) continue;
    checkCa(c, i);
    for (const uri of c.uriSans) {
      let caId: SpiffeId;
      try {
        caId = SpiffeId.parse(uri);
      } catch (e) {
        return fail(
          "QHX_SVID_BAD_SPIFFE_ID",
          `${describe(c, i)} URI SAN is not a SPIFFE ID: ${(e as Error).message}`,
        );
      }
      if (caId.path !== "") {
        fail(
          "QHX_SVID_BAD_SPIFFE_ID",
          `${describe(c, i)} is a signing certificate; its SPIFFE ID ${caId} has a path`,
        );
      }
      if (caId.trustDomain !== trustDomain) {
        fail(
          "QHX_SVID_TRUST_DOMAIN_MISMATCH",
          `${describe(c, i)} belongs to trust domain ${caId.trustDomain}, the leaf to ${trustDomain}`,
        );
      }
    }
  }
  for (let i = 0; i < path.length; i++) checkValidity(path[i]!, i, now);
  for (let i = 0; i + 1 < path.length; i++) {
    const c = path[i]!;
    const issuer = path[i + 1]!;
    if (!bytesEqual(c.issuer, issuer.subject)) {
      fail(
        "QHX_SVID_ISSUER_MISMATCH",
        `${describe(c, i)} was issued by "${c.issuerString}", not by the next certificate "${issuer.subjectString}"`,
      );
    }
    const problem = signatureProblem(c, issuer);
    if (problem) fail("QHX_SVID_BAD_SIGNATURE", `${describe(c, i)}: ${problem}`);
  }

  // --- the trust anchor
  if (anchoredInChain) {
    checkCa(path[path.length - 1]!, path.length - 1);
  } else {
    const last = path[path.length - 1]!;
    const at = path.length;
    let firstError: VerificationError | undefined;
    let keyIdProblem: string | undefined;
    let anchor: ParsedCertificate | undefined;
    for (const der of authorities) {
      const a = parseAuthority(der);
      if (!a || !bytesEqual(a.subject, last.issuer)) continue;
      const problem = signatureProblem(last, a);
      if (problem) {
        // named as the issuer by key identifier too: the certificate, not the bundle, is at fault
        const keyIdMatches =
          last.authorityKeyId && a.subjectKeyId && bytesEqual(last.authorityKeyId, a.subjectKeyId);
        if (keyIdMatches) keyIdProblem ??= problem;
        continue;
      }
      try {
        checkValidity(a, at, now);
        checkCa(a, at);
        checkPathLengths([...path, a]);
        anchor = a;
        break;
      } catch (e) {
        firstError ??= e as VerificationError;
      }
    }
    if (!anchor) {
      if (firstError) throw firstError;
      if (keyIdProblem) fail("QHX_SVID_BAD_SIGNATURE", `${describe(last, at - 1)}: ${keyIdProblem}`);
      fail(
        "QHX_SVID_UNTRUSTED",
        `${describe(last, at - 1)} was not issued by any X.509 authority in the bundle of ${trustDomain}`,
      );
    }
    path.push(anchor);
  }
  checkPathLengths(path);
  return { spiffeId, trustDomain, leaf, path };
}
