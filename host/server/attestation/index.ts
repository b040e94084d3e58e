import fs from "node:fs";
import type { Clock } from "../../core/clock.ts";
import type { Datastore } from "../datastore/types.ts";
import { JoinTokenVerifier } from "./join-token.ts";
import { TpmVerifier } from "./tpm.ts";
import type { NodeAttestorVerifier } from "./types.ts";
import { X509PopVerifier } from "./x509pop.ts";

export type { NodeAttestation, NodeAttestorVerifier } from "./types.ts";

export interface NodeAttestorsConfig {
  x509pop?: { caBundleFile: string };
  /** TPM 2.0: EKs accepted by manufacturer CA (PEM bundle) and/or SHA-256 of the EK SPKI; PCRs quoted (default 0–7) */
  tpm?: { ekCaBundleFile?: string; ekPublicKeyHashes?: string[]; pcrs?: number[]; hashAlg?: "sha256" };
}

/** The one place node attestor verifiers are registered. join_token is always on. */
export function nodeAttestorVerifiers(
  cfg: NodeAttestorsConfig,
  ds: Datastore,
  clock: Clock,
): Map<string, NodeAttestorVerifier> {
  const list: NodeAttestorVerifier[] = [new JoinTokenVerifier(ds, clock)];
  if (cfg.x509pop) list.push(new X509PopVerifier(fs.readFileSync(cfg.x509pop.caBundleFile, "utf8"), clock));
  if (cfg.tpm) {
    const { ekCaBundleFile, ...rest } = cfg.tpm;
    const ekCaBundlePem = ekCaBundleFile === undefined ? undefined : fs.readFileSync(ekCaBundleFile, "utf8");
    list.push(new TpmVerifier({ ...rest, ekCaBundlePem }, clock));
  }
  return new Map(list.map((v) => [v.name, v]));
}
