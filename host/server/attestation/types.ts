import type { Assurance } from "../../core/assurance.ts";
import type { Selector } from "../datastore/types.ts";

/** What a successful node attestation establishes. */
export interface NodeAttestation {
  /** becomes the agent ID `spiffe://<td>/qhx/agent/<attestor>/<nodeId>`; [A-Za-z0-9._-]+ */
  nodeId: string;
  selectors: Selector[];
  /** alias SPIFFE IDs: entries parented to them apply to this node */
  aliases: string[];
}

/** One round of a challenge–response attestation: either done, or a challenge to answer. */
export type AttestationStep =
  { done: NodeAttestation } | { challenge: unknown; answer(response: unknown): Promise<AttestationStep> };

/**
 * The server half of a node attestor. The agent half lives in host/agent/attestors/. One file per
 * attestor, registered in ./index.ts.
 */
export interface NodeAttestorVerifier {
  readonly name: string;
  readonly assurance: Assurance;
  /** Begin with the agent's first payload. Throws QhxError(QHX_ATTESTATION_FAILED) on bad evidence. */
  begin(payload: unknown): Promise<AttestationStep>;
}
