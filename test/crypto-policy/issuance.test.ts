/**
 * Crypto policy enforced at the real issuance path: an in-process server on 127.0.0.1, a real agent
 * (join token, TLS 1.3 mTLS to the agent API), and raw agent-API calls made with the agent's own
 * credentials for requests a well-behaved agent would never send (a forbidden key algorithm).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Agent } from "../../host/agent/agent.ts";
import { ServerClient } from "../../host/agent/server-client.ts";
import { generateKeyPair, keyAlgOf, type SvidKeyAlg } from "../../host/core/alg.ts";
import { createCsr } from "../../host/core/csr.ts";
import { CryptoPolicyStore } from "../../host/server/crypto-policy-store.ts";
import { type RunningServer } from "../../host/server/server.ts";
import { controlPlane } from "../helpers/control-plane.ts";

const TD = "policy.test";
const ALIAS = `spiffe://${TD}/nodes/n1`;
const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };
const cp = controlPlane(TD);
afterEach(() => cp.close());
const server = (extra: Record<string, unknown> = {}): Promise<RunningServer> =>
  cp.server({ default_jwt_svid_ttl: "30m", ...extra });
const admin = cp.admin;
const startAgent = (s: RunningServer) => cp.agent(s, ALIAS);

async function entry(s: RunningServer, name: string, namespace: string, extra: Record<string, unknown> = {}) {
  return (await admin(s, "POST", "/v1/entries", {
    spiffe_id: `spiffe://${TD}/${name}`,
    parent_id: ALIAS,
    selectors: [`unix:uid:${me.uid}`],
    namespace,
    ...extra,
  })) as { id: string };
}

/** An agent-API client with the attested agent's own credentials (for requests the agent would not make). */
function rawClient(s: RunningServer, agentDir: string): ServerClient {
  const c = new ServerClient({
    host: "127.0.0.1",
    port: s.address.port,
    trustDomain: TD,
    roots: s.core.ca.trustBundle().x509Authorities,
    clientCert: {
      cert: fs.readFileSync(path.join(agentDir, "agent", "svid.pem"), "utf8"),
      key: fs.readFileSync(path.join(agentDir, "agent", "svid.key"), "utf8"),
    },
  });
  cp.track({ close: async () => c.close() });
  return c;
}

interface SvidsAnswer {
  svids: { entry_id: string; spiffe_id: string; chain: string[]; expires_at: number }[];
  denied: { entry_id: string; spiffe_id: string; code: string; message: string }[];
}

function requestSvid(c: ServerClient, entryId: string, alg: SvidKeyAlg) {
  const kp = generateKeyPair(alg);
  return c.call<SvidsAnswer>("POST", "/agent/v1/svids", {
    csrs: [{ entry_id: entryId, csr: Buffer.from(createCsr(kp.privateKey)).toString("base64") }],
  });
}

/** The key algorithm of each cached workload SVID, by SPIFFE ID, read from the certificates themselves. */
async function leafAlgs(a: Agent): Promise<Record<string, string>> {
  const ids = await a.identitiesFor(me);
  return Object.fromEntries(
    ids.svids.map((sv) => [
      sv.spiffeId.split("/").at(-1),
      keyAlgOf(new crypto.X509Certificate(sv.chain[0]!).publicKey),
    ]),
  );
}

describe("crypto policy at issuance", () => {
  it("precedence at the agent API: namespace over trust domain over coalition; the agent follows the policy's algorithm", async () => {
    const s = await server();
    await entry(s, "pay", "payments");
    await entry(s, "bill", "billing");
    await entry(s, "web", "frontend");
    await admin(s, "POST", "/v1/crypto-policy", {
      policy: {
        coalitions: { alliance: [TD, "partner.test"] },
        coalition_rules: {
          alliance: { signature_algorithms: { allowed: ["ed25519", "ec-p256"], default: "ed25519" } },
        },
      },
    });
    const { agent } = await startAgent(s);
    // only the coalition rule: every workload gets Ed25519 (the agent's own default is P-256)
    expect(await leafAlgs(agent)).toEqual({ pay: "ed25519", bill: "ed25519", web: "ed25519" });

    await admin(s, "POST", "/v1/crypto-policy", {
      policy: {
        coalitions: { alliance: [TD, "partner.test"] },
        coalition_rules: {
          alliance: { signature_algorithms: { allowed: ["ed25519", "ec-p256"], default: "ed25519" } },
        },
        trust_domains: {
          [TD]: { signature_algorithms: { allowed: ["ec-p384", "ed25519"], default: "ec-p384" } },
        },
        namespaces: { payments: { signature_algorithms: { allowed: ["ml-dsa-65"] } } },
      },
      expected_version: 1,
    });
    await agent.syncOnce();
    // pay: Ed25519 is no longer allowed in its namespace -> replaced at once with ML-DSA-65;
    // bill and web: Ed25519 still allowed by the trust domain rule -> kept until their next rotation
    expect(await leafAlgs(agent)).toEqual({ pay: "ml-dsa-65", bill: "ed25519", web: "ed25519" });

    // explain agrees, through the admin API, with the entry's namespace found from the registration
    const x = (await admin(s, "GET", `/v1/crypto-policy/explain?spiffe_id=spiffe://${TD}/pay`)) as {
      explanations: { namespace: string; effective: Record<string, { rule: string }> }[];
    };
    expect(x.explanations).toHaveLength(1);
    expect(x.explanations[0]!.namespace).toBe("payments");
    expect(x.explanations[0]!.effective.signature_algorithms!.rule).toBe("ns:payments");
    const xb = (await admin(s, "GET", `/v1/crypto-policy/explain?spiffe_id=spiffe://${TD}/bill`)) as {
      explanations: { effective: Record<string, { rule: string }> }[];
    };
    expect(xb.explanations[0]!.effective.signature_algorithms!.rule).toBe(`td:${TD}`);
  });

  it("refuses a forbidden key algorithm naming the rule, without starving the other entries", async () => {
    const s = await server();
    const pay = await entry(s, "pay", "payments");
    const web = await entry(s, "web", "frontend");
    await admin(s, "POST", "/v1/crypto-policy", {
      policy: {
        trust_domains: { [TD]: { signature_algorithms: { allowed: ["ec-p256", "ml-dsa-65"] } } },
        namespaces: { payments: { signature_algorithms: { allowed: ["ml-dsa-65"] } } },
      },
    });
    const { dir } = await startAgent(s);
    const c = rawClient(s, dir);

    const bad = await requestSvid(c, pay.id, "ec-p256");
    expect(bad.svids).toEqual([]);
    expect(bad.denied).toEqual([
      {
        entry_id: pay.id,
        spiffe_id: `spiffe://${TD}/pay`,
        code: "QHX_CRYPTO_POLICY",
        message: 'crypto policy "ns:payments" forbids ECDSA-P256 (allowed: ML-DSA-65)',
      },
    ]);
    const td = await requestSvid(c, web.id, "ed25519");
    expect(td.denied[0]!.message).toBe(
      `crypto policy "td:${TD}" forbids Ed25519 (allowed: ECDSA-P256, ML-DSA-65)`,
    );

    // one request with both: the allowed one is issued beside the denial
    const kpOk = generateKeyPair("ml-dsa-65");
    const kpBad = generateKeyPair("ec-p384");
    const both = await c.call<SvidsAnswer>("POST", "/agent/v1/svids", {
      csrs: [
        { entry_id: web.id, csr: Buffer.from(createCsr(kpBad.privateKey)).toString("base64") },
        { entry_id: pay.id, csr: Buffer.from(createCsr(kpOk.privateKey)).toString("base64") },
      ],
    });
    expect(both.svids.map((x) => x.spiffe_id)).toEqual([`spiffe://${TD}/pay`]);
    expect(both.denied.map((d) => d.spiffe_id)).toEqual([`spiffe://${TD}/web`]);
  });

  it("refuses issuance below the minimum assurance (X509 and JWT), naming the rule", async () => {
    const s = await server();
    const pay = await entry(s, "pay", "payments");
    await entry(s, "web", "frontend");
    await admin(s, "POST", "/v1/crypto-policy", {
      policy: { namespaces: { payments: { min_assurance: "key" } } },
    });
    const { agent, dir } = await startAgent(s);
    // the join-token node (assurance "token") gets only the frontend SVID
    expect(agent.cachedSvids().map((x) => x.spiffeId)).toEqual([`spiffe://${TD}/web`]);
    const r = await requestSvid(rawClient(s, dir), pay.id, "ec-p256");
    expect(r.denied[0]).toMatchObject({
      code: "QHX_CRYPTO_POLICY",
      message:
        'crypto policy "ns:payments" requires assurance "key" or higher; the node attested with "token"',
    });
    await expect(
      rawClient(s, dir).call("POST", "/agent/v1/jwt", { entry_id: pay.id, audience: ["db"] }),
    ).rejects.toMatchObject({
      code: "QHX_CRYPTO_POLICY",
      message: expect.stringContaining('"ns:payments" requires assurance'),
    });
  });

  it("refuses a JWT-SVID when the server's JWT key algorithm is not allowed", async () => {
    const s = await server();
    const pay = await entry(s, "pay", "payments");
    await admin(s, "POST", "/v1/crypto-policy", {
      policy: { namespaces: { payments: { signature_algorithms: { allowed: ["ml-dsa-65"] } } } },
    });
    const { dir } = await startAgent(s);
    await expect(
      rawClient(s, dir).call("POST", "/agent/v1/jwt", { entry_id: pay.id, audience: ["db"] }),
    ).rejects.toMatchObject({
      code: "QHX_CRYPTO_POLICY",
      message:
        'crypto policy "ns:payments" forbids ECDSA-P256 (allowed: ML-DSA-65) for JWT-SVIDs (the server\'s JWT key)',
    });
  });

  it("without a signature_algorithms rule nothing is restricted (an RSA JWT key keeps working)", async () => {
    const s = await server({ jwt: { key_type: "rsa-2048" } });
    const web = await entry(s, "web", "frontend");
    await admin(s, "POST", "/v1/crypto-policy", {
      policy: { namespaces: { frontend: { max_jwt_svid_ttl: "1m" } } },
    });
    const { dir } = await startAgent(s);
    const c = rawClient(s, dir);
    const jwt = await c.call<{ token: string }>("POST", "/agent/v1/jwt", {
      entry_id: web.id,
      audience: ["db"],
    });
    expect(JSON.parse(Buffer.from(jwt.token.split(".")[0]!, "base64url").toString()).alg).toBe("RS256");
    await admin(s, "POST", "/v1/crypto-policy", {
      policy: { namespaces: { frontend: { signature_algorithms: { allowed: ["ec-p256"] } } } },
    });
    await expect(c.call("POST", "/agent/v1/jwt", { entry_id: web.id, audience: ["db"] })).rejects.toThrow(
      'crypto policy "ns:frontend" forbids RSA-2048 (allowed: ECDSA-P256) for JWT-SVIDs',
    );
  });

  it("caps X509 and JWT lifetimes to the rule's maximum", async () => {
    const s = await server();
    const pay = await entry(s, "pay", "payments", { x509_svid_ttl: 7200 });
    const web = await entry(s, "web", "frontend", { x509_svid_ttl: 90 });
    await admin(s, "POST", "/v1/crypto-policy", {
      policy: {
        trust_domains: { [TD]: { max_x509_svid_ttl: "2m", max_jwt_svid_ttl: "45s" } },
      },
    });
    const { dir } = await startAgent(s);
    const c = rawClient(s, dir);
    const life = async (id: string) => {
      const r = await requestSvid(c, id, "ec-p256");
      const cert = new crypto.X509Certificate(r.svids[0]!.chain[0]!);
      // the CA backdates notBefore by 10 s for clock skew
      return (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 1000 - 10;
    };
    expect(await life(pay.id)).toBe(120); // entry asks 2 h: capped
    expect(await life(web.id)).toBe(90); // under the cap: unchanged
    const jwt = await c.call<{ token: string }>("POST", "/agent/v1/jwt", {
      entry_id: web.id,
      audience: ["db"],
    });
    const claims = JSON.parse(Buffer.from(jwt.token.split(".")[1]!, "base64url").toString()) as {
      iat: number;
      exp: number;
    };
    expect(claims.exp - claims.iat).toBe(45); // server default 30 m: capped
  });

  it("an apply made offline on the data directory (another process's store) is in force at the next issuance", async () => {
    const s = await server();
    await entry(s, "web", "frontend");
    const { agent } = await startAgent(s);
    expect(await leafAlgs(agent)).toEqual({ web: "ec-p256" });
    new CryptoPolicyStore(s.core.cfg.dataDir, TD).apply(
      { namespaces: { frontend: { signature_algorithms: { allowed: ["ml-dsa-44"] } } } },
      { now: new Date() },
    );
    await agent.syncOnce();
    expect(await leafAlgs(agent)).toEqual({ web: "ml-dsa-44" });
  });

  it("the admin API refuses an invalid policy, another trust domain's, and a stale expected_version", async () => {
    const s = await server();
    await expect(
      admin(s, "POST", "/v1/crypto-policy", { policy: { namespaces: { a: { min_assurance: "tpm" } } } }),
    ).rejects.toMatchObject({
      code: "QHX_INVALID_ARGUMENT",
      message: expect.stringContaining("namespaces.a.min_assurance"),
    });
    await expect(
      admin(s, "POST", "/v1/crypto-policy", { policy: { trust_domain: "other.test" } }),
    ).rejects.toThrow("trust_domain: the policy is for trust domain other.test; this server is policy.test");
    await expect(admin(s, "POST", "/v1/crypto-policy", {})).rejects.toThrow("policy: is required");
    await admin(s, "POST", "/v1/crypto-policy", { policy: {}, expected_version: 0 });
    await expect(
      admin(s, "POST", "/v1/crypto-policy", { policy: {}, expected_version: 0 }),
    ).rejects.toMatchObject({ code: "QHX_CONFLICT" });
    const v = (await admin(s, "GET", "/v1/crypto-policy/versions")) as { versions: { version: number }[] };
    expect(v.versions.map((x) => x.version)).toEqual([1]);
    const cur = (await admin(s, "GET", "/v1/crypto-policy")) as {
      version: number;
      policy: { trust_domain: string };
    };
    expect(cur).toMatchObject({ version: 1, policy: { trust_domain: TD } });
  });
});
