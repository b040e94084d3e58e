import type { TrustBundle } from "../../core/bundle-types.ts";
import type { PeerCred } from "../workload/types.ts";

/** One X509-SVID the agent holds for a workload. The private key never leaves the host. */
export interface WorkloadX509Svid {
  spiffeId: string;
  /** leaf first */
  chain: Uint8Array[];
  /** PKCS#8 DER */
  privateKey: Uint8Array;
  /** unix seconds */
  expiresAt: number;
  /** operator-chosen hint (entry label `hint`), optional */
  hint?: string;
}

/** Everything a given caller is entitled to right now. `svids[0]` is the default SVID. */
export interface WorkloadIdentities {
  svids: WorkloadX509Svid[];
  /** the agent's own trust domain bundle first, then the federated ones the caller's entries ask for */
  bundles: TrustBundle[];
}

/**
 * What the agent gives the Workload API (and SDS) server. The server knows nothing of attestation,
 * caching or rotation; the agent implements this.
 */
export interface WorkloadIdentityProvider {
  /** Attest the caller and return its identities; `svids` empty when no entry matches (PermissionDenied). */
  identitiesFor(peer: PeerCred): Promise<WorkloadIdentities>;
  /** Called whenever any SVID or bundle changed; open streams re-resolve their caller. Returns unsubscribe. */
  onChange(listener: () => void): () => void;
  /** Mint a JWT-SVID for one of the caller's SPIFFE IDs (or its default when spiffeId is undefined). */
  fetchJwtSvids(
    peer: PeerCred,
    audience: string[],
    spiffeId?: string,
  ): Promise<{ spiffeId: string; token: string; hint?: string }[]>;
  /** All trust bundles the agent knows (own + federated), for FetchJWTBundles/ValidateJWTSVID. */
  allBundles(): TrustBundle[];
}
