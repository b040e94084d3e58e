/**
 * JWT-SVIDs per the SPIFFE JWT-SVID specification (standards/JWT-SVID.md):
 * - JWS Compact Serialization, protected header only; the header carries `alg`, `kid` and `typ: "JWT"`
 *   and nothing else (§2: any other header MUST NOT be present, so validation rejects it).
 * - claims: `sub` = the SPIFFE ID, `aud` (one or more values, REQUIRED), `exp` (REQUIRED), `iat`.
 *
 * Algorithms: the classical set ES256, ES384, RS256, PS256 (a subset of the spec's §2.1 table), plus
 * ML-DSA-44/65/87 (FIPS 204, JOSE `AKP` keys) as an explicit opt-in extension outside the SPIFFE
 * spec: minting with an ML-DSA key needs `alg` passed explicitly, and validation accepts ML-DSA only
 * when `allowPostQuantum` is set or the alg is listed in `allowedAlgs`.
 *
 * Validation parses and checks the header itself before any cryptography (no `alg: none`, no HS*, no
 * unknown alg, a `kid` is required — the bundle is kid-indexed — no `crit` or other extra headers),
 * selects the key strictly by `kid` from the bundle of the subject's trust domain, pins the algorithm
 * to the header's alg (which must fit the key's type), then lets jose verify signature and claims.
 */
import crypto, { type KeyObject } from "node:crypto";
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";
import { keyAlgOf } from "./alg.ts";
import { type BundleSource, lookupBundle } from "./bundle-types.ts";
import { QhxError, VerificationError } from "./errors.ts";
import { SpiffeId } from "./spiffeid.ts";

export const CLASSICAL_JWT_ALGS = ["ES256", "ES384", "RS256", "PS256"] as const;
export const PQ_JWT_ALGS = ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"] as const;
export const JWT_ALGS = [...CLASSICAL_JWT_ALGS, ...PQ_JWT_ALGS] as const;
export type JwtAlg = (typeof JWT_ALGS)[number];

/** Default clock skew tolerated on `exp`, `nbf` and `iat`, in seconds. */
export const DEFAULT_JWT_LEEWAY_SECONDS = 30;
/** Largest leeway a caller may configure, in seconds. */
export const MAX_JWT_LEEWAY_SECONDS = 300;
/** Tokens longer than this are rejected unparsed (an ML-DSA-87 JWT-SVID is about 7 KiB). */
export const MAX_JWT_LENGTH = 32 * 1024;

/** Stable codes of every JWT-SVID validation failure (all thrown as VerificationError). */
export const JWT_ERROR_CODES = {
  malformed: "QHX_JWT_MALFORMED",
  algNone: "QHX_JWT_ALG_NONE",
  algNotAllowed: "QHX_JWT_ALG_NOT_ALLOWED",
  algKeyMismatch: "QHX_JWT_ALG_KEY_MISMATCH",
  missingKid: "QHX_JWT_MISSING_KID",
  forbiddenHeader: "QHX_JWT_FORBIDDEN_HEADER",
  badType: "QHX_JWT_BAD_TYPE",
  missingClaim: "QHX_JWT_MISSING_CLAIM",
  badSubject: "QHX_JWT_BAD_SUBJECT",
  noBundle: "QHX_JWT_NO_BUNDLE",
  unknownKid: "QHX_JWT_UNKNOWN_KID",
  badSignature: "QHX_JWT_BAD_SIGNATURE",
  expired: "QHX_JWT_EXPIRED",
  notYetValid: "QHX_JWT_NOT_YET_VALID",
  issuedInFuture: "QHX_JWT_ISSUED_IN_FUTURE",
  audience: "QHX_JWT_AUDIENCE",
} as const;
export type JwtErrorCode = (typeof JWT_ERROR_CODES)[keyof typeof JWT_ERROR_CODES];

const ALLOWED_HEADERS = new Set(["alg", "kid", "typ"]);

export function isJwtAlg(s: string): s is JwtAlg {
  return (JWT_ALGS as readonly string[]).includes(s);
}

export function isPostQuantumJwtAlg(alg: JwtAlg): boolean {
  return (PQ_JWT_ALGS as readonly string[]).includes(alg);
}

/** Every JWT alg this key can sign or verify with (RSA keys fit both RS256 and PS256). */
export function jwtAlgsForKey(key: KeyObject): JwtAlg[] {
  let alg: ReturnType<typeof keyAlgOf>;
  try {
    alg = keyAlgOf(key);
  } catch {
    return [];
  }
  switch (alg) {
    case "ec-p256":
      return ["ES256"];
    case "ec-p384":
      return ["ES384"];
    case "rsa-2048":
      return ["RS256", "PS256"];
    case "ml-dsa-44":
      return ["ML-DSA-44"];
    case "ml-dsa-65":
      return ["ML-DSA-65"];
    case "ml-dsa-87":
      return ["ML-DSA-87"];
    default:
      return [];
  }
}

/**
 * The natural JWT alg of a key: ES256 for P-256, ES384 for P-384, RS256 for RSA, ML-DSA-xx for ML-DSA.
 * Throws QHX_UNSUPPORTED_ALGORITHM for keys JWT-SVIDs cannot use (e.g. Ed25519, which the spec omits).
 */
export function jwtAlgForKey(key: KeyObject): JwtAlg {
  const algs = jwtAlgsForKey(key);
  if (algs[0] === undefined) {
    throw new QhxError(
      "QHX_UNSUPPORTED_ALGORITHM",
      `a ${key.asymmetricKeyType ?? key.type} key cannot sign JWT-SVIDs`,
      { hint: "use an EC P-256/P-384, RSA or ML-DSA key" },
    );
  }
  return algs[0];
}

export interface MintJwtSvidOptions {
  spiffeId: SpiffeId | string;
  /** One audience (emitted as a string) or several (emitted as an array). */
  audience: string | string[];
  ttlSeconds: number;
  privateKey: KeyObject;
  kid: string;
  /** Defaults to jwtAlgForKey(privateKey) for classical keys; REQUIRED (explicit opt-in) for ML-DSA keys. */
  alg?: JwtAlg;
  now: Date;
  /** Additional claims; may not set sub, aud, exp or iat. */
  extraClaims?: Record<string, unknown>;
}

const RESERVED_CLAIMS = ["sub", "aud", "exp", "iat"];

function invalidArg(message: string): QhxError {
  return new QhxError("QHX_INVALID_ARGUMENT", message);
}

/** Mint a JWT-SVID. Throws QhxError for invalid arguments (never produces a token the validator rejects). */
export async function mintJwtSvid(opts: MintJwtSvidOptions): Promise<string> {
  const id = typeof opts.spiffeId === "string" ? SpiffeId.parse(opts.spiffeId) : opts.spiffeId;
  const audiences = typeof opts.audience === "string" ? [opts.audience] : opts.audience;
  if (audiences.length === 0 || audiences.some((a) => typeof a !== "string" || a.length === 0)) {
    throw invalidArg("audience must be one or more non-empty strings");
  }
  if (!Number.isSafeInteger(opts.ttlSeconds) || opts.ttlSeconds <= 0) {
    throw invalidArg(`ttlSeconds must be a positive integer, got ${opts.ttlSeconds}`);
  }
  if (typeof opts.kid !== "string" || opts.kid.length === 0)
    throw invalidArg("kid must be a non-empty string");
  if (opts.privateKey.type !== "private") throw invalidArg("privateKey must be a private key");
  const nowMs = opts.now.getTime();
  if (!Number.isFinite(nowMs)) throw invalidArg("now is not a valid date");

  const fits = jwtAlgsForKey(opts.privateKey);
  let alg: JwtAlg;
  if (opts.alg !== undefined) {
    if (!isJwtAlg(opts.alg)) {
      throw new QhxError("QHX_UNSUPPORTED_ALGORITHM", `unsupported JWT-SVID alg ${String(opts.alg)}`);
    }
    if (!fits.includes(opts.alg)) {
      throw new QhxError(
        JWT_ERROR_CODES.algKeyMismatch,
        `alg ${opts.alg} does not fit a ${opts.privateKey.asymmetricKeyType} key`,
        { hint: fits.length > 0 ? `use ${fits.join(" or ")}` : undefined },
      );
    }
    alg = opts.alg;
  } else {
    alg = jwtAlgForKey(opts.privateKey);
    if (isPostQuantumJwtAlg(alg)) {
      throw new QhxError(
        JWT_ERROR_CODES.algNotAllowed,
        `ML-DSA JWT-SVIDs are a non-standard extension: pass alg "${alg}" explicitly`,
      );
    }
  }

  const extra = opts.extraClaims ?? {};
  for (const c of RESERVED_CLAIMS) {
    if (Object.hasOwn(extra, c)) throw invalidArg(`extraClaims may not set "${c}"`);
  }
  const iat = Math.floor(nowMs / 1000);
  return new SignJWT({
    ...extra,
    sub: id.toString(),
    aud: typeof opts.audience === "string" ? opts.audience : [...audiences],
    exp: iat + opts.ttlSeconds,
    iat,
  })
    .setProtectedHeader({ alg, kid: opts.kid, typ: "JWT" })
    .sign(opts.privateKey);
}

export interface JwtSvidHeader {
  alg: JwtAlg;
  kid: string;
  typ?: string;
}

export interface JwtSvidClaims {
  sub: string;
  aud: string | string[];
  exp: number;
  iat?: number;
  nbf?: number;
  [claim: string]: unknown;
}

export interface ValidateJwtSvidOptions {
  /** The audience this validator identifies with; it must be one of the token's `aud` values. */
  audience: string;
  bundles: BundleSource;
  now: Date;
  /**
   * Clock skew tolerated, in seconds, on `exp` (accepted until exp + leeway), `nbf` and `iat`
   * (accepted when at most leeway seconds in the future). Default DEFAULT_JWT_LEEWAY_SECONDS (30),
   * at most MAX_JWT_LEEWAY_SECONDS (300).
   */
  leewaySeconds?: number;
  /** Algorithms accepted. Default: CLASSICAL_JWT_ALGS (plus PQ_JWT_ALGS if allowPostQuantum). */
  allowedAlgs?: readonly JwtAlg[];
  /** Also accept ML-DSA-44/65/87 (non-standard extension). Default false. */
  allowPostQuantum?: boolean;
}

export interface ValidatedJwtSvid {
  spiffeId: SpiffeId;
  claims: JwtSvidClaims;
  header: JwtSvidHeader;
}

function fail(code: JwtErrorCode, message: string): VerificationError {
  return new VerificationError(code, message);
}

const B64URL = /^[A-Za-z0-9_-]*$/;

function decodeJsonSegment(seg: string, what: string): Record<string, unknown> {
  if (!B64URL.test(seg) || seg.length % 4 === 1) {
    throw fail(JWT_ERROR_CODES.malformed, `JWT ${what} is not base64url`);
  }
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(Buffer.from(seg, "base64url")));
  } catch {
    throw fail(JWT_ERROR_CODES.malformed, `JWT ${what} is not valid UTF-8 JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw fail(JWT_ERROR_CODES.malformed, `JWT ${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

function resolveAllowedAlgs(opts: ValidateJwtSvidOptions): Set<JwtAlg> {
  const base = opts.allowedAlgs ?? CLASSICAL_JWT_ALGS;
  for (const a of base) {
    if (!isJwtAlg(a)) throw invalidArg(`allowedAlgs contains unsupported alg ${String(a)}`);
  }
  const set = new Set<JwtAlg>(base);
  if (opts.allowPostQuantum) for (const a of PQ_JWT_ALGS) set.add(a);
  return set;
}

function resolveLeeway(opts: ValidateJwtSvidOptions): number {
  const l = opts.leewaySeconds ?? DEFAULT_JWT_LEEWAY_SECONDS;
  if (!Number.isFinite(l) || l < 0 || l > MAX_JWT_LEEWAY_SECONDS) {
    throw invalidArg(`leewaySeconds must be between 0 and ${MAX_JWT_LEEWAY_SECONDS}, got ${l}`);
  }
  return l;
}

/** Parse and check the JOSE header, before any key lookup or cryptography. */
function checkHeader(raw: Record<string, unknown>, allowed: Set<JwtAlg>): JwtSvidHeader {
  const alg = raw["alg"];
  if (typeof alg !== "string") throw fail(JWT_ERROR_CODES.malformed, 'JWT header has no string "alg"');
  if (alg.toLowerCase() === "none") throw fail(JWT_ERROR_CODES.algNone, 'JWT alg "none" is never accepted');
  if (/^hs\d*$/i.test(alg)) {
    throw fail(JWT_ERROR_CODES.algNotAllowed, `JWT alg ${alg} (HMAC) is never accepted for JWT-SVIDs`);
  }
  if (!isJwtAlg(alg))
    throw fail(JWT_ERROR_CODES.algNotAllowed, `JWT alg ${JSON.stringify(alg)} is not supported`);
  if (!allowed.has(alg)) throw fail(JWT_ERROR_CODES.algNotAllowed, `JWT alg ${alg} is not allowed here`);
  if (Object.hasOwn(raw, "crit")) {
    throw fail(JWT_ERROR_CODES.forbiddenHeader, 'JWT header "crit" is not allowed in a JWT-SVID');
  }
  for (const h of Object.keys(raw)) {
    if (!ALLOWED_HEADERS.has(h)) {
      throw fail(
        JWT_ERROR_CODES.forbiddenHeader,
        `JWT header ${JSON.stringify(h)} is not allowed in a JWT-SVID`,
      );
    }
  }
  const typ = raw["typ"];
  if (typ !== undefined && typ !== "JWT" && typ !== "JOSE") {
    throw fail(JWT_ERROR_CODES.badType, `JWT typ must be "JWT" or "JOSE", got ${JSON.stringify(typ)}`);
  }
  const kid = raw["kid"];
  if (typeof kid !== "string" || kid.length === 0) {
    throw fail(JWT_ERROR_CODES.missingKid, 'JWT header has no "kid"; the signing key cannot be selected');
  }
  return typ === undefined ? { alg, kid } : { alg, kid, typ };
}

function mapJoseError(e: unknown): VerificationError {
  if (e instanceof joseErrors.JWTExpired) return fail(JWT_ERROR_CODES.expired, "JWT-SVID has expired");
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.reason === "missing")
      return fail(JWT_ERROR_CODES.missingClaim, `JWT-SVID has no "${e.claim}" claim`);
    if (e.claim === "aud" && e.reason === "check_failed") {
      return fail(JWT_ERROR_CODES.audience, "JWT-SVID audience does not include this validator");
    }
    if (e.claim === "nbf" && e.reason === "check_failed") {
      return fail(JWT_ERROR_CODES.notYetValid, "JWT-SVID is not yet valid (nbf)");
    }
    return fail(JWT_ERROR_CODES.malformed, `JWT-SVID claim "${e.claim}" is invalid: ${e.message}`);
  }
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) {
    return fail(JWT_ERROR_CODES.badSignature, "JWT-SVID signature does not verify");
  }
  if (e instanceof joseErrors.JOSEAlgNotAllowed || e instanceof joseErrors.JOSENotSupported) {
    return fail(JWT_ERROR_CODES.algNotAllowed, `JWT-SVID alg rejected: ${(e as Error).message}`);
  }
  if (e instanceof joseErrors.JWSInvalid || e instanceof joseErrors.JWTInvalid) {
    return fail(JWT_ERROR_CODES.malformed, `JWT-SVID is malformed: ${e.message}`);
  }
  if (e instanceof TypeError)
    return fail(JWT_ERROR_CODES.algKeyMismatch, `JWT-SVID key unusable: ${e.message}`);
  return fail(JWT_ERROR_CODES.badSignature, `JWT-SVID could not be verified: ${String(e)}`);
}

/**
 * Validate a JWT-SVID against the bundle of its subject's trust domain. Returns the SPIFFE ID, claims
 * and header; throws VerificationError with one of JWT_ERROR_CODES otherwise.
 */
export async function validateJwtSvid(
  token: string,
  opts: ValidateJwtSvidOptions,
): Promise<ValidatedJwtSvid> {
  if (typeof opts.audience !== "string" || opts.audience.length === 0) {
    throw invalidArg("audience must be a non-empty string");
  }
  const allowed = resolveAllowedAlgs(opts);
  const leeway = resolveLeeway(opts);
  const nowSec = Math.floor(opts.now.getTime() / 1000);
  if (!Number.isFinite(nowSec)) throw invalidArg("now is not a valid date");

  if (typeof token !== "string" || token.length === 0 || token.length > MAX_JWT_LENGTH) {
    throw fail(JWT_ERROR_CODES.malformed, "JWT-SVID is empty or too long");
  }
  const parts = token.split(".");
  if (parts.length !== 3) {
    throw fail(JWT_ERROR_CODES.malformed, "JWT-SVID must be a JWS compact serialization (3 parts)");
  }
  const header = checkHeader(decodeJsonSegment(parts[0]!, "header"), allowed);
  const payload = decodeJsonSegment(parts[1]!, "payload");
  if (parts[2]!.length === 0 || !B64URL.test(parts[2]!)) {
    throw fail(JWT_ERROR_CODES.malformed, "JWT-SVID signature is missing or not base64url");
  }

  // The subject selects the trust domain, whose bundle (and nothing else) supplies the key.
  const sub = payload["sub"];
  if (sub === undefined) throw fail(JWT_ERROR_CODES.missingClaim, 'JWT-SVID has no "sub" claim');
  if (typeof sub !== "string") throw fail(JWT_ERROR_CODES.badSubject, 'JWT-SVID "sub" is not a string');
  let spiffeId: SpiffeId;
  try {
    spiffeId = SpiffeId.parse(sub);
  } catch (e) {
    throw fail(JWT_ERROR_CODES.badSubject, `JWT-SVID "sub" is not a SPIFFE ID: ${(e as Error).message}`);
  }
  const bundle = lookupBundle(opts.bundles, spiffeId.trustDomain);
  if (!bundle) {
    throw fail(JWT_ERROR_CODES.noBundle, `no trust bundle for trust domain "${spiffeId.trustDomain}"`);
  }
  if (bundle.trustDomain !== spiffeId.trustDomain) {
    throw fail(
      JWT_ERROR_CODES.noBundle,
      `bundle source returned the bundle of "${bundle.trustDomain}" for "${spiffeId.trustDomain}"`,
    );
  }
  const authority = bundle.jwtAuthorities.find((a) => a.kid === header.kid);
  if (!authority) {
    throw fail(
      JWT_ERROR_CODES.unknownKid,
      `kid ${JSON.stringify(header.kid)} is not a JWT authority of "${spiffeId.trustDomain}"`,
    );
  }
  const key =
    authority.publicKey.type === "private"
      ? crypto.createPublicKey(authority.publicKey)
      : authority.publicKey;
  if (!jwtAlgsForKey(key).includes(header.alg)) {
    throw fail(
      JWT_ERROR_CODES.algKeyMismatch,
      `JWT alg ${header.alg} does not fit the ${key.asymmetricKeyType} key with kid ${JSON.stringify(header.kid)}`,
    );
  }

  let claims: JwtSvidClaims;
  try {
    const res = await jwtVerify(token, key, {
      algorithms: [header.alg],
      audience: opts.audience,
      requiredClaims: ["sub", "aud", "exp"],
      currentDate: opts.now,
      clockTolerance: leeway,
    });
    claims = res.payload as JwtSvidClaims;
  } catch (e) {
    throw mapJoseError(e);
  }

  // jose checked exp/nbf/aud presence and types; the rest is ours.
  if (claims.sub !== sub)
    throw fail(JWT_ERROR_CODES.badSubject, "JWT-SVID subject changed during verification");
  if (typeof claims.exp !== "number" || !Number.isFinite(claims.exp)) {
    throw fail(JWT_ERROR_CODES.malformed, 'JWT-SVID "exp" is not a number');
  }
  if (claims.exp <= nowSec - leeway) throw fail(JWT_ERROR_CODES.expired, "JWT-SVID has expired");
  const aud = claims.aud;
  const auds = typeof aud === "string" ? [aud] : aud;
  if (!Array.isArray(auds) || auds.length === 0 || auds.some((a) => typeof a !== "string")) {
    throw fail(JWT_ERROR_CODES.audience, 'JWT-SVID "aud" must be a string or a non-empty array of strings');
  }
  if (!auds.includes(opts.audience)) {
    throw fail(JWT_ERROR_CODES.audience, "JWT-SVID audience does not include this validator");
  }
  if (claims.iat !== undefined) {
    if (typeof claims.iat !== "number" || !Number.isFinite(claims.iat)) {
      throw fail(JWT_ERROR_CODES.malformed, 'JWT-SVID "iat" is not a number');
    }
    if (claims.iat > nowSec + leeway) {
      throw fail(JWT_ERROR_CODES.issuedInFuture, "JWT-SVID was issued in the future (iat)");
    }
  }
  return { spiffeId, claims, header };
}
