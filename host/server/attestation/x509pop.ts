import crypto from "node:crypto";
import { verifyData } from "../../core/alg.ts";
import type { Clock } from "../../core/clock.ts";
import { QhxError } from "../../core/errors.ts";
import { fromPem } from "../../core/pem.ts";
import type { AttestationStep, NodeAttestorVerifier } from "./types.ts";

const fail = (m: string) => new QhxError("QHX_ATTESTATION_FAILED", `x509pop: ${m}`);

/**
 * x509pop: the agent proves possession of the private key of a certificate that chains to an
 * operator-given CA. The server verifies the chain (OpenSSL, via node:crypto) at the current time, then
 * sends a fresh 32-byte nonce; the agent signs `"qhx-x509pop-v1" || nonce` with the certificate's key.
 * Node ID: SHA-1 fingerprint of the leaf (as SPIRE does). Selectors: subject CN, SHA-256 fingerprint
 * of the leaf, and of each CA in the chain.
 */
export class X509PopVerifier implements NodeAttestorVerifier {
  readonly name = "x509pop";
  readonly assurance = "key" as const;
  private readonly roots: crypto.X509Certificate[];
  private readonly clock: Clock;

  constructor(caBundlePem: string, clock: Clock) {
    this.roots = fromPem(caBundlePem).map((d) => new crypto.X509Certificate(d));
    if (this.roots.length === 0)
      throw new QhxError("QHX_INVALID_CONFIG", "x509pop: the CA bundle has no certificate");
    this.clock = clock;
  }

  async begin(payload: unknown): Promise<AttestationStep> {
    const chainPem = (payload as { chain?: unknown } | null)?.chain;
    if (typeof chainPem !== "string") throw fail("payload must be { chain: PEM }");
    let chain: crypto.X509Certificate[];
    try {
      chain = fromPem(chainPem).map((d) => new crypto.X509Certificate(d));
    } catch {
      throw fail("chain is not PEM certificates");
    }
    const leaf = chain[0];
    if (!leaf) throw fail("empty chain");
    this.verifyChain(chain);
    const nonce = crypto.randomBytes(32);
    return {
      challenge: { nonce: nonce.toString("base64") },
      answer: async (response: unknown) => {
        const sig = (response as { signature?: unknown } | null)?.signature;
        if (typeof sig !== "string") throw fail("response must be { signature: base64 }");
        const data = Buffer.concat([Buffer.from("qhx-x509pop-v1"), nonce]);
        if (!verifyData(leaf.publicKey, data, Buffer.from(sig, "base64"))) {
          throw fail("proof of possession failed: the signature does not verify with the certificate's key");
        }
        const cn = /(?:^|\n)CN=([^\n]+)/.exec(leaf.subject)?.[1];
        return {
          done: {
            nodeId: leaf.fingerprint.replace(/:/g, "").toLowerCase(),
            selectors: [
              ...(cn ? [{ type: "x509pop", value: `subject:cn:${cn}` }] : []),
              {
                type: "x509pop",
                value: `fingerprint:${leaf.fingerprint256.replace(/:/g, "").toLowerCase()}`,
              },
              ...chain.slice(1).map((c) => ({
                type: "x509pop",
                value: `ca:fingerprint:${c.fingerprint256.replace(/:/g, "").toLowerCase()}`,
              })),
            ],
            aliases: [],
          },
        };
      },
    };
  }

  private verifyChain(chain: crypto.X509Certificate[]): void {
    const now = this.clock.now();
    for (const c of chain) {
      if (new Date(c.validFrom) > now || new Date(c.validTo) < now)
        throw fail(`certificate ${c.subject} is not valid now`);
    }
    if (chain[0]!.ca) throw fail("the leaf is a CA certificate");
    for (let i = 0; i + 1 < chain.length; i++) {
      const c = chain[i]!;
      const issuer = chain[i + 1]!;
      if (!issuer.ca || !c.checkIssued(issuer) || !c.verify(issuer.publicKey)) {
        throw fail(`certificate ${i} is not signed by certificate ${i + 1}`);
      }
    }
    const top = chain[chain.length - 1]!;
    const anchored = this.roots.some(
      (r) => top.raw.equals(r.raw) || (top.checkIssued(r) && top.verify(r.publicKey) && r.ca),
    );
    if (!anchored) throw fail("the chain does not lead to a configured CA");
  }
}
