/**
 * Agent halves of the node attestors (the server halves are in host/server/attestation/). Each produces
 * the first payload and answers challenges. Registered in one place: `nodeAttestorClient`.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { signData } from "../../core/alg.ts";
import { QhxError } from "../../core/errors.ts";
import { readPrivateKeyFile } from "../../server/keymanager/disk.ts";
import { TpmClient, type TpmClientOptions } from "./tpm.ts";

export interface NodeAttestorClient {
  readonly name: string;
  payload(): Promise<unknown>;
  answer(challenge: unknown): Promise<unknown>;
}

export class JoinTokenClient implements NodeAttestorClient {
  readonly name = "join_token";
  private readonly token: string;
  constructor(token: string) {
    this.token = token;
  }
  async payload() {
    return { token: this.token };
  }
  async answer(): Promise<unknown> {
    throw new QhxError("QHX_ATTESTATION_FAILED", "join_token has no challenge");
  }
}

/** Proves possession of the key of an operator-issued certificate: signs the server's nonce. */
export class X509PopClient implements NodeAttestorClient {
  readonly name = "x509pop";
  private readonly chainPem: string;
  private readonly key: crypto.KeyObject;
  constructor(certFile: string, keyFile: string) {
    this.chainPem = fs.readFileSync(certFile, "utf8");
    this.key = readPrivateKeyFile(keyFile, "x509pop key");
  }
  async payload() {
    return { chain: this.chainPem };
  }
  async answer(challenge: unknown) {
    const nonce = (challenge as { nonce?: unknown } | null)?.nonce;
    if (typeof nonce !== "string")
      throw new QhxError("QHX_ATTESTATION_FAILED", "x509pop: malformed challenge");
    const data = Buffer.concat([Buffer.from("qhx-x509pop-v1"), Buffer.from(nonce, "base64")]);
    return { signature: signData(this.key, data).toString("base64") };
  }
}

export interface NodeAttestorClientConfig {
  joinToken?: string;
  x509pop?: { certFile: string; keyFile: string };
  /** TPM 2.0 through tpm2-tools: `tcti` e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321` */
  tpm?: TpmClientOptions;
}

export function nodeAttestorClient(cfg: NodeAttestorClientConfig): NodeAttestorClient {
  if ([cfg.joinToken, cfg.x509pop, cfg.tpm].filter(Boolean).length > 1) {
    throw new QhxError("QHX_INVALID_CONFIG", "configure one node attestor: join_token, x509pop or tpm");
  }
  if (cfg.joinToken) return new JoinTokenClient(cfg.joinToken);
  if (cfg.x509pop) return new X509PopClient(cfg.x509pop.certFile, cfg.x509pop.keyFile);
  if (cfg.tpm) return new TpmClient(cfg.tpm);
  throw new QhxError("QHX_INVALID_CONFIG", "no node attestor configured", {
    hint: "give --join-token TOKEN, x509pop cert and key files, or tpm (a TCTI)",
  });
}
