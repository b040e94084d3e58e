/**
 * Federation relationships: validation of what an operator declares (`qhx federation create|update`) and
 * the rules every foreign bundle must pass before it is stored, whether given out of band or fetched.
 *
 * A relationship names the foreign trust domain, its bundle endpoint URL and profile (SPIFFE Federation
 * §5.2): `https_spiffe` needs the endpoint's SPIFFE ID and, when that ID is in the foreign trust domain
 * itself, the first bundle of that domain (exchanged out of band, §6.1); `https_web` is validated with
 * Web PKI against the system roots or the operator's CA certificates (`web_trust_roots`).
 */
import { X509Certificate } from "node:crypto";
import { parsePemBundle, parseSpiffeBundle } from "../../core/bundle.ts";
import type { TrustBundle } from "../../core/bundle-types.ts";
import { QhxError, ValidationError } from "../../core/errors.ts";
import { fromPem } from "../../core/pem.ts";
import { parseTrustDomain, SpiffeId } from "../../core/spiffeid.ts";
import { parseCertificate } from "../../core/x509.ts";
import type { FederationProfile, FederationRelationship } from "../datastore/types.ts";

/** Stable codes of federation failures. */
export const FEDERATION_ERROR_CODES = {
  /** a bundle's X.509 authorities name another trust domain */
  trustDomainMismatch: "QHX_FEDERATION_TRUST_DOMAIN_MISMATCH",
  /** spiffe_sequence lower than the last accepted one */
  sequenceRegression: "QHX_FEDERATION_SEQUENCE_REGRESSION",
  /** same spiffe_sequence as the last accepted bundle but different keys */
  sequenceReused: "QHX_FEDERATION_SEQUENCE_REUSED",
  /** the bundle holds no key at all */
  emptyBundle: "QHX_FEDERATION_EMPTY_BUNDLE",
  /** the endpoint's TLS authentication failed (certificate, chain, or SPIFFE ID) */
  endpointAuth: "QHX_FEDERATION_ENDPOINT_AUTH_FAILED",
  /** the endpoint could not be reached or answered something other than a bundle */
  endpointUnavailable: "QHX_FEDERATION_ENDPOINT_UNAVAILABLE",
  /** no bundle is known to authenticate an https_spiffe endpoint with */
  noBundle: "QHX_FEDERATION_NO_BUNDLE",
  /** the fetched document is not a SPIFFE bundle */
  badBundle: "QHX_FEDERATION_BAD_BUNDLE",
  /** the endpoint answered 403: its crypto policy does not publish its bundle to this trust domain */
  publicationRefused: "QHX_FEDERATION_PUBLICATION_REFUSED",
} as const;

export class FederationError extends QhxError {
  constructor(code: string, message: string, options?: { hint?: string; cause?: unknown }) {
    super(code, message, options);
    this.name = "FederationError";
  }
}

const PROFILES: readonly FederationProfile[] = ["https_web", "https_spiffe"];

/**
 * The bundle-level rules for a foreign trust domain `td`: at least one key, and every X.509 authority
 * that carries a SPIFFE ID in its URI SANs (as QHx and SPIRE CAs do, `spiffe://<td>`) names `td`. This
 * keeps a <trust domain, bundle> binding (SPIFFE Federation §7.3): an endpoint serving another domain's
 * bundle is refused.
 */
export function checkForeignBundle(b: TrustBundle, td: string): void {
  if (b.x509Authorities.length === 0 && b.jwtAuthorities.length === 0) {
    throw new FederationError(
      FEDERATION_ERROR_CODES.emptyBundle,
      `the bundle for ${td} holds no X.509 or JWT authority`,
    );
  }
  b.x509Authorities.forEach((der, i) => {
    const uris = parseCertificate(der).uriSans.filter((u) => u.toLowerCase().startsWith("spiffe://"));
    for (const u of uris) {
      let other: string;
      try {
        other = SpiffeId.parse(u).trustDomain;
      } catch {
        other = u;
      }
      if (other !== td) {
        throw new FederationError(
          FEDERATION_ERROR_CODES.trustDomainMismatch,
          `the bundle for ${td} holds an X.509 authority (#${i}) of trust domain ${other}`,
          { hint: "the endpoint serves another trust domain's bundle; check the relationship's URL" },
        );
      }
    }
  });
}

/** A bundle given out of band: SPIFFE bundle JSON or PEM CA certificates. */
export function parseInitialBundle(text: string, td: string): TrustBundle {
  let b: TrustBundle;
  try {
    b = text.trimStart().startsWith("{") ? parseSpiffeBundle(text, td) : parsePemBundle(text, td);
  } catch (e) {
    throw new ValidationError((e as Error).message, "bundle", (e as QhxError).code ?? "QHX_INVALID_ARGUMENT");
  }
  checkForeignBundle(b, td);
  return b;
}

/** Validate an https bundle endpoint URL (no credentials, no fragment). */
export function parseEndpointUrl(v: unknown, field = "bundle_endpoint_url"): string {
  if (typeof v !== "string" || v.length === 0) throw new ValidationError("is required", field);
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ValidationError(`not a URL: ${JSON.stringify(v)}`, field);
  }
  if (u.protocol !== "https:") throw new ValidationError("must be an https:// URL", field);
  if (u.username || u.password) throw new ValidationError("must not carry credentials", field);
  if (u.hash) throw new ValidationError("must not have a fragment", field);
  return u.toString();
}

function parseProfile(v: unknown): FederationProfile {
  if (typeof v !== "string" || !PROFILES.includes(v as FederationProfile)) {
    throw new ValidationError(`must be one of ${PROFILES.join(", ")}`, "profile");
  }
  return v as FederationProfile;
}

/** PEM CA certificates for https_web; returned normalized (certificates only). */
export function parseWebTrustRoots(v: unknown): string {
  if (typeof v !== "string" || v.length === 0) {
    throw new ValidationError("must be PEM CA certificates", "web_trust_roots");
  }
  let ders: Uint8Array[];
  try {
    ders = fromPem(v, "CERTIFICATE");
  } catch (e) {
    throw new ValidationError((e as Error).message, "web_trust_roots");
  }
  if (ders.length === 0) throw new ValidationError("holds no CERTIFICATE block", "web_trust_roots");
  return ders
    .map((d, i) => {
      try {
        return new X509Certificate(d).toString();
      } catch {
        throw new ValidationError(`certificate ${i} is not valid DER`, "web_trust_roots");
      }
    })
    .join("");
}

export interface RelationshipInput {
  rel: Omit<FederationRelationship, "createdAt" | "updatedAt">;
  initialBundle?: TrustBundle;
}

function optString(b: Record<string, unknown>, field: string): string | undefined {
  const v = b[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string" || v.length === 0) throw new ValidationError("must be a non-empty string", field);
  return v;
}

const FIELDS = new Set([
  "trust_domain",
  "bundle_endpoint_url",
  "profile",
  "endpoint_spiffe_id",
  "web_trust_roots",
  "bundle",
]);

/** Check the profile-dependent fields of a complete relationship. */
export function checkProfileFields(
  rel: Omit<FederationRelationship, "createdAt" | "updatedAt">,
  ownTd: string,
): void {
  if (rel.profile === "https_spiffe") {
    if (!rel.endpointSpiffeId)
      throw new ValidationError("is required for https_spiffe", "endpoint_spiffe_id");
    if (rel.webTrustRoots) throw new ValidationError("is only for https_web", "web_trust_roots");
    const etd = SpiffeId.parse(rel.endpointSpiffeId).trustDomain;
    if (etd === ownTd) {
      throw new ValidationError(
        `${rel.endpointSpiffeId} is in this server's own trust domain`,
        "endpoint_spiffe_id",
      );
    }
  } else if (rel.endpointSpiffeId) {
    throw new ValidationError("is only for https_spiffe", "endpoint_spiffe_id");
  }
}

/** Parse `POST /v1/federation`'s body. */
export function parseRelationshipJson(body: Record<string, unknown>, ownTd: string): RelationshipInput {
  for (const k of Object.keys(body)) if (!FIELDS.has(k)) throw new ValidationError("unknown field", k);
  const tdRaw = optString(body, "trust_domain");
  if (!tdRaw) throw new ValidationError("is required", "trust_domain");
  const td = parseTrustDomain(tdRaw);
  if (td === ownTd) {
    throw new ValidationError(`${td} is this server's own trust domain`, "trust_domain");
  }
  const profile = parseProfile(body.profile);
  const endpointRaw = optString(body, "endpoint_spiffe_id");
  const endpointSpiffeId = endpointRaw ? SpiffeId.parse(endpointRaw).toString() : null;
  const roots = body.web_trust_roots;
  const rel = {
    trustDomain: td,
    bundleEndpointUrl: parseEndpointUrl(body.bundle_endpoint_url),
    profile,
    endpointSpiffeId,
    webTrustRoots: roots === undefined || roots === null ? null : parseWebTrustRoots(roots),
  };
  checkProfileFields(rel, ownTd);
  const bundleText = optString(body, "bundle");
  const initialBundle = bundleText ? parseInitialBundle(bundleText, td) : undefined;
  if (profile === "https_spiffe" && !initialBundle && SpiffeId.parse(endpointSpiffeId!).trustDomain === td) {
    throw new ValidationError(
      `is required: the https_spiffe endpoint ${endpointSpiffeId} is authenticated with ${td}'s bundle, ` +
        "and the first one must be exchanged out of band",
      "bundle",
    );
  }
  return { rel, ...(initialBundle ? { initialBundle } : {}) };
}

const PATCH_FIELDS = new Set(["bundle_endpoint_url", "profile", "endpoint_spiffe_id", "web_trust_roots"]);

/** Parse `PATCH /v1/federation/:td`'s body onto the current relationship; null clears a field. */
export function applyRelationshipPatch(
  cur: FederationRelationship,
  body: Record<string, unknown>,
  ownTd: string,
): Omit<FederationRelationship, "createdAt" | "updatedAt"> {
  for (const k of Object.keys(body)) {
    if (!PATCH_FIELDS.has(k)) throw new ValidationError("unknown or immutable field", k);
  }
  const next = {
    trustDomain: cur.trustDomain,
    bundleEndpointUrl:
      body.bundle_endpoint_url === undefined
        ? cur.bundleEndpointUrl
        : parseEndpointUrl(body.bundle_endpoint_url),
    profile: body.profile === undefined ? cur.profile : parseProfile(body.profile),
    endpointSpiffeId:
      body.endpoint_spiffe_id === undefined
        ? cur.endpointSpiffeId
        : body.endpoint_spiffe_id === null
          ? null
          : SpiffeId.parse(String(body.endpoint_spiffe_id)).toString(),
    webTrustRoots:
      body.web_trust_roots === undefined
        ? cur.webTrustRoots
        : body.web_trust_roots === null
          ? null
          : parseWebTrustRoots(body.web_trust_roots),
  };
  if (next.profile === "https_web" && body.endpoint_spiffe_id === undefined) next.endpointSpiffeId = null;
  if (next.profile === "https_spiffe" && body.web_trust_roots === undefined) next.webTrustRoots = null;
  checkProfileFields(next, ownTd);
  return next;
}
