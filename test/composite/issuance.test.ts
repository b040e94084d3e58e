/**
 * Composite ML-DSA + ECDSA X509-SVIDs through the real issuance path: an in-process server on 127.0.0.1,
 * the operator's `qhx crypto-policy apply` (a separate CLI process, admin Unix socket) setting the
 * namespace default to mldsa65-ecdsa-p256, a real agent (join token, TLS 1.3 mTLS to the agent API)
 * that generates a composite key and sends a composite-signed CSR, and the server that checks it.
 */
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ServerClient } from "../../host/agent/server-client.ts";
import {
  compositeSign,
  compositeVerify,
  generateCompositeKeyPair,
  parseCompositePkcs8,
} from "../../host/core/composite.ts";
import { createCsr } from "../../host/core/csr.ts";
import { fromPem } from "../../host/core/pem.ts";
import { parseCertificate } from "../../host/core/x509.ts";
import { verifyX509Svid } from "../../host/core/x509-verify.ts";
import { type RunningServer } from "../../host/server/server.ts";
import { qhxSpawn, tmpDir } from "../helpers/cli.ts";
import { controlPlane } from "../helpers/control-plane.ts";

const TD = "composite.test";
const ALIAS = `spiffe://${TD}/nodes/n1`;
const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };
const cp = controlPlane(TD);
afterEach(() => cp.close());
const server = (extra: Record<string, unknown> = {}): Promise<RunningServer> => cp.server({ ...extra });
const admin = cp.admin;
const startAgent = (s: RunningServer) => cp.agent(s, ALIAS);

/** `qhx crypto-policy apply <file> --socket <admin socket>` as a separate process. */
function applyPolicy(
  s: RunningServer,
  doc: unknown,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const f = path.join(tmpDir(), "crypto-policy.json");
  fs.writeFileSync(f, JSON.stringify(doc));
  const child = qhxSpawn(["crypto-policy", "apply", f, "--socket", s.adminSocket]);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.once("close", (status) => resolve({ status, stdout, stderr })));
}

describe("composite X509-SVIDs through the real issuance path", () => {
  it("crypto-policy apply sets mldsa65-ecdsa-p256 for a namespace; the workload gets a composite SVID that verifies", async () => {
    const s = await server();
    for (const [name, ns] of [
      ["pay", "payments"],
      ["web", "frontend"],
    ]) {
      await admin(s, "POST", "/v1/entries", {
        spiffe_id: `spiffe://${TD}/${name}`,
        parent_id: ALIAS,
        selectors: [`unix:uid:${me.uid}`],
        namespace: ns,
      });
    }
    const r = await applyPolicy(s, {
      namespaces: {
        payments: {
          signature_algorithms: {
            allowed: ["mldsa65-ecdsa-p256", "ml-dsa-65"],
            default: "mldsa65-ecdsa-p256",
          },
        },
      },
    });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);

    const { agent, dir } = await startAgent(s);
    const algs = Object.fromEntries(agent.cachedSvids().map((c) => [c.spiffeId.split("/").at(-1), c.keyAlg]));
    expect(algs).toEqual({ pay: "mldsa65-ecdsa-p256", web: "ec-p256" });

    const ids = await agent.identitiesFor(me);
    const pay = ids.svids.find((sv) => sv.spiffeId.endsWith("/pay"))!;
    const v = verifyX509Svid(pay.chain, new Map([[TD, s.core.ca.trustBundle()]]), new Date());
    expect(v.spiffeId.toString()).toBe(`spiffe://${TD}/pay`);
    expect(v.leaf.keyAlg).toBe("mldsa65-ecdsa-p256");
    expect(v.leaf.signatureAlgorithm).toBe("1.2.840.10045.4.3.2"); // signed by the (P-256) CA
    // the workload's private key (the draft's PKCS#8) matches the certificate and signs receipts
    const sk = parseCompositePkcs8(pay.privateKey);
    expect(sk.composite).toBe("mldsa65-ecdsa-p256");
    const msg = Buffer.from("receipt #1");
    expect(compositeVerify(v.leaf.compositeKey!, msg, compositeSign(sk, msg))).toBe(true);
    const web = ids.svids.find((sv) => sv.spiffeId.endsWith("/web"))!;
    expect(parseCertificate(web.chain[0]!).keyAlg).toBe("ec-p256");

    // the server checks the composite CSR's self-signature and the policy, with the agent's credentials
    const c = new ServerClient({
      host: "127.0.0.1",
      port: s.address.port,
      trustDomain: TD,
      roots: s.core.ca.trustBundle().x509Authorities,
      clientCert: {
        cert: fs.readFileSync(path.join(dir, "agent", "svid.pem"), "utf8"),
        key: fs.readFileSync(path.join(dir, "agent", "svid.key"), "utf8"),
      },
    });
    cp.track({ close: async () => c.close() });
    const entryId = agent.cachedSvids().find((x) => x.spiffeId.endsWith("/pay"))!.entryId;
    type Answer = { svids: { chain: string[] }[]; denied: { code: string; message: string }[] };
    const call = (csr: Uint8Array) =>
      c.call<Answer>("POST", "/agent/v1/svids", {
        csrs: [{ entry_id: entryId, csr: Buffer.from(csr).toString("base64") }],
      });
    const ok = await call(createCsr(generateCompositeKeyPair("mldsa65-ecdsa-p256").privateKey));
    expect(ok.svids).toHaveLength(1);
    expect(parseCertificate(fromPem(ok.svids[0]!.chain[0]!)[0]!).keyAlg).toBe("mldsa65-ecdsa-p256");
    // a tampered composite CSR (possession not proven) is refused
    const bad = createCsr(generateCompositeKeyPair("mldsa65-ecdsa-p256").privateKey);
    bad[bad.length - 20]! ^= 1;
    await expect(call(bad)).rejects.toThrow(/does not verify/);
    // another composite, not allowed in the namespace, is denied naming the rule
    const other = await call(createCsr(generateCompositeKeyPair("mldsa44-ecdsa-p256").privateKey));
    expect(other.svids).toEqual([]);
    expect(other.denied[0]!.code).toBe("QHX_CRYPTO_POLICY");
    expect(other.denied[0]!.message).toMatch(/ns:payments" forbids ML-DSA-44\+ECDSA-P256/);
    // the agent's own SVID (TLS) cannot be composite: a composite CSR at renewal is refused
    await expect(
      c.call("POST", "/agent/v1/renew", {
        csr: Buffer.from(createCsr(generateCompositeKeyPair("mldsa65-ecdsa-p256").privateKey)).toString(
          "base64",
        ),
      }),
    ).rejects.toThrow(/composite/);
  });
});
