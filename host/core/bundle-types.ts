import type { KeyObject } from "node:crypto";

/** A JWT-SVID signing key published in a trust bundle. */
export interface JwtAuthority {
  kid: string;
  publicKey: KeyObject;
  /** unix seconds, when the key stops being published; optional */
  expiresAt?: number;
}

/** The trust anchors of one trust domain: X.509 roots (DER) and JWT keys, with the bundle sequence. */
export interface TrustBundle {
  trustDomain: string;
  x509Authorities: Uint8Array[];
  jwtAuthorities: JwtAuthority[];
  /** spiffe_sequence */
  sequence: number;
  /** spiffe_refresh_hint, seconds */
  refreshHint?: number;
}

/** Where a verifier finds the bundle for a trust domain. */
export type BundleSource =
  ReadonlyMap<string, TrustBundle> | ((trustDomain: string) => TrustBundle | undefined);

export function lookupBundle(src: BundleSource, trustDomain: string): TrustBundle | undefined {
  return typeof src === "function" ? src(trustDomain) : src.get(trustDomain);
}
