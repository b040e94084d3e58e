import type { Clock } from "../../core/clock.ts";
import { QhxError } from "../../core/errors.ts";
import { hashToken } from "../core.ts";
import type { Datastore } from "../datastore/types.ts";
import type { AttestationStep, NodeAttestorVerifier } from "./types.ts";

/**
 * join_token: the agent presents a token an operator generated. Tokens are single use (consumed in one
 * atomic DELETE … RETURNING, so a replay or a race loses), expire, and are stored only as SHA-256.
 * Node ID: the first 32 hex digits of the token's hash (stable, and reveals nothing about the token).
 */
export class JoinTokenVerifier implements NodeAttestorVerifier {
  readonly name = "join_token";
  readonly assurance = "token" as const;
  private readonly ds: Datastore;
  private readonly clock: Clock;

  constructor(ds: Datastore, clock: Clock) {
    this.ds = ds;
    this.clock = clock;
  }

  async begin(payload: unknown): Promise<AttestationStep> {
    const token = (payload as { token?: unknown } | null)?.token;
    if (typeof token !== "string" || token.length < 16 || token.length > 256) {
      throw new QhxError("QHX_ATTESTATION_FAILED", "join_token: payload must be { token: string }");
    }
    const hash = hashToken(token);
    const rec = await this.ds.consumeJoinToken(hash, Math.floor(this.clock.now().getTime() / 1000));
    if (!rec) {
      throw new QhxError("QHX_ATTESTATION_FAILED", "join_token: unknown, expired or already used token");
    }
    const nodeId = hash.slice(0, 32);
    return {
      done: {
        nodeId,
        selectors: [{ type: "join_token", value: `id:${nodeId}` }],
        aliases: rec.spiffeId ? [rec.spiffeId] : [],
      },
    };
  }
}
