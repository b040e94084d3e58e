/**
 * Agent ↔ server over real TLS sockets (in-process server): join-token attestation, replay refusal,
 * entry sync, workload SVIDs with the assurance extension, renewal, resume from disk, eviction,
 * and serving the cache while the server is down.
 */
import crypto from "node:crypto";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { assuranceOf } from "../../host/core/assurance.ts";
import { systemClock } from "../../host/core/clock.ts";
import { fromPem } from "../../host/core/pem.ts";
import { parseCertificate } from "../../host/core/x509.ts";
import { verifyX509Svid } from "../../host/core/x509-verify.ts";
import { Agent, renewTime } from "../../host/agent/agent.ts";
import { JoinTokenClient } from "../../host/agent/attestors/index.ts";
import { UnixAttestor } from "../../host/agent/workload/unix.ts";
import { handleAdmin } from "../../host/server/admin-api.ts";
import { parseServerConfig } from "../../host/server/config.ts";
import { silentLogger } from "../../host/server/logger.ts";
import { type RunningServer, startServer } from "../../host/server/server.ts";
import { tmpDir } from "../helpers/cli.ts";

const TD = "agent.test";
const running: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const r of running.splice(0).reverse()) await r.close();
});

async function server(dir = tmpDir(), port = 0): Promise<RunningServer> {
  const cfg = parseServerConfig({
    trust_domain: TD,
    data_dir: path.join(dir, "server"),
    listen: `127.0.0.1:${port}`,
    health_listen: "127.0.0.1:0",
    log_level: "silent",
    default_x509_svid_ttl: "1h",
  });
  const s = await startServer(cfg, { clock: systemClock, logger: silentLogger });
  running.push(s);
  return s;
}

async function admin(s: RunningServer, method: string, p: string, body?: unknown) {
  const url = new URL(p, "http://x");
  const r = await handleAdmin(s.core, { method, path: url.pathname, query: url.searchParams, body });
  if (r.status >= 400) throw new Error(JSON.stringify(r.body));
  return r.body as Record<string, unknown>;
}

function bundleRoots(s: RunningServer): Uint8Array[] {
  return s.core.ca.trustBundle().x509Authorities;
}

function agent(s: RunningServer, token: string, dataDir = tmpDir(), roots = bundleRoots(s)) {
  const a = new Agent({
    trustDomain: TD,
    server: { host: "127.0.0.1", port: s.address.port },
    bootstrapRoots: roots,
    insecureBootstrap: roots.length === 0,
    dataDir,
    attestor: new JoinTokenClient(token),
    workloadAttestors: [new UnixAttestor({ hashMaxBytes: 0 })],
    workloadKeyType: "ec-p256",
    syncIntervalMs: 60_000,
    clock: systemClock,
    logger: silentLogger,
  });
  running.push({ close: () => a.stop() });
  return a;
}

const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };

describe("agent and server", () => {
  it("attests with a join token, gets its SVID, syncs entries and serves workload SVIDs", async () => {
    const s = await server();
    const alias = `spiffe://${TD}/nodes/n1`;
    const { token } = (await admin(s, "POST", "/v1/join-tokens", { spiffe_id: alias })) as { token: string };
    await admin(s, "POST", "/v1/entries", {
      spiffe_id: `spiffe://${TD}/web`,
      parent_id: alias,
      selectors: [`unix:uid:${me.uid}`],
      labels: { hint: "web" },
    });
    await admin(s, "POST", "/v1/entries", {
      spiffe_id: `spiffe://${TD}/other`,
      parent_id: alias,
      selectors: ["unix:uid:4242"],
    });
    const a = agent(s, token);
    await a.start();
    expect(a.id).toMatch(new RegExp(`^spiffe://${TD}/qhx/agent/join_token/[0-9a-f]{32}$`));
    expect(a.assuranceLevel).toBe("token");
    expect(
      a
        .cachedSvids()
        .map((c) => c.spiffeId)
        .sort(),
    ).toEqual([`spiffe://${TD}/other`, `spiffe://${TD}/web`]);

    const ids = await a.identitiesFor(me);
    expect(ids.svids.map((x) => x.spiffeId)).toEqual([`spiffe://${TD}/web`]);
    const svid = ids.svids[0]!;
    expect(svid.hint).toBe("web");
    const bundles = new Map([[TD, s.core.ca.trustBundle()]]);
    const v = verifyX509Svid(svid.chain, bundles, new Date());
    expect(v.spiffeId.toString()).toBe(`spiffe://${TD}/web`);
    expect(assuranceOf(parseCertificate(svid.chain[0]!))).toBe("token");
    const key = crypto.createPrivateKey({ key: Buffer.from(svid.privateKey), format: "der", type: "pkcs8" });
    expect(new crypto.X509Certificate(svid.chain[0]!).checkPrivateKey(key)).toBe(true);

    const nodes = (await admin(s, "GET", "/v1/agents")).agents as {
      spiffe_id: string;
      assurance: string;
      aliases: string[];
    }[];
    expect(nodes).toEqual([
      expect.objectContaining({ spiffe_id: a.id, assurance: "token", aliases: [alias] }),
    ]);

    const jwts = await a.fetchJwtSvids(me, ["spiffe://agent.test/db"]);
    expect(jwts).toHaveLength(1);
    expect(JSON.parse(Buffer.from(jwts[0]!.token.split(".")[1]!, "base64url").toString()).sub).toBe(
      `spiffe://${TD}/web`,
    );
  });

  it("refuses a replayed join token and an unknown one", async () => {
    const s = await server();
    const { token } = (await admin(s, "POST", "/v1/join-tokens", {})) as { token: string };
    await agent(s, token).start();
    await expect(agent(s, token).start()).rejects.toMatchObject({ code: "QHX_ATTESTATION_FAILED" });
    await expect(agent(s, "x".repeat(32)).start()).rejects.toMatchObject({ code: "QHX_ATTESTATION_FAILED" });
  });

  it("refuses a server whose certificate does not chain to the bootstrap bundle", async () => {
    const s = await server();
    const other = await server();
    const { token } = (await admin(s, "POST", "/v1/join-tokens", {})) as { token: string };
    await expect(agent(s, token, tmpDir(), bundleRoots(other)).start()).rejects.toMatchObject({
      code: "QHX_SERVER_UNREACHABLE",
    });
  });

  it("resumes from its stored SVID after a restart without a new token, and rotates SVIDs when due", async () => {
    const s = await server();
    const { token } = (await admin(s, "POST", "/v1/join-tokens", {})) as { token: string };
    const dir = tmpDir();
    const a1 = agent(s, token, dir);
    await a1.start();
    await admin(s, "POST", "/v1/entries", {
      spiffe_id: `spiffe://${TD}/w`,
      parent_id: a1.id,
      selectors: [`unix:uid:${me.uid}`],
    });
    await a1.syncOnce();
    const first = (await a1.identitiesFor(me)).svids[0]!;
    await a1.stop();
    const a2 = agent(s, token, dir); // the token is spent: resume must not need it
    await a2.start();
    expect(a2.id).toBe(a1.id);
    const again = (await a2.identitiesFor(me)).svids[0]!;
    expect(again.spiffeId).toBe(first.spiffeId);
    expect(parseCertificate(again.chain[0]!).serial).not.toBe(parseCertificate(first.chain[0]!).serial);
  });

  it("keeps serving cached SVIDs while the server is down, and resumes syncing when it returns", async () => {
    const dir = tmpDir();
    const s = await server(dir);
    const port = s.address.port;
    const { token } = (await admin(s, "POST", "/v1/join-tokens", {})) as { token: string };
    const a = agent(s, token);
    await a.start();
    await admin(s, "POST", "/v1/entries", {
      spiffe_id: `spiffe://${TD}/w`,
      parent_id: a.id,
      selectors: [`unix:uid:${me.uid}`],
    });
    await a.syncOnce();
    await s.close();
    running.splice(running.indexOf(s), 1);
    await expect(a.syncOnce()).rejects.toMatchObject({ code: "QHX_SERVER_UNREACHABLE" });
    expect((await a.identitiesFor(me)).svids.map((x) => x.spiffeId)).toEqual([`spiffe://${TD}/w`]);
    const s2 = await server(dir, port); // same data dir, same CA, same port
    await admin(s2, "POST", "/v1/entries", {
      spiffe_id: `spiffe://${TD}/w2`,
      parent_id: a.id,
      selectors: [`unix:uid:${me.uid}`],
    });
    await a.syncOnce();
    expect((await a.identitiesFor(me)).svids.map((x) => x.spiffeId).sort()).toEqual([
      `spiffe://${TD}/w`,
      `spiffe://${TD}/w2`,
    ]);
  });

  it("attestation needs a CSR whose signature proves possession of the key", async () => {
    const s = await server();
    const { token } = (await admin(s, "POST", "/v1/join-tokens", {})) as { token: string };
    const { ServerClient } = await import("../../host/agent/server-client.ts");
    const { createCsr } = await import("../../host/core/csr.ts");
    const { generateKeyPair } = await import("../../host/core/alg.ts");
    const c = new ServerClient({
      host: "127.0.0.1",
      port: s.address.port,
      trustDomain: TD,
      roots: bundleRoots(s),
    });
    const pem = generateKeyPair("ec-p256").publicKey.export({ type: "spki", format: "pem" });
    await expect(
      c.call("POST", "/agent/v1/attest", { attestor: "join_token", payload: { token }, public_key: pem }),
    ).rejects.toMatchObject({
      code: "QHX_INVALID_ARGUMENT",
      message: expect.stringMatching(/^csr: is required/),
    });
    const csr = createCsr(generateKeyPair("ec-p256").privateKey);
    csr[csr.length - 4]! ^= 1;
    await expect(
      c.call("POST", "/agent/v1/attest", {
        attestor: "join_token",
        payload: { token },
        csr: Buffer.from(csr).toString("base64"),
      }),
    ).rejects.toMatchObject({ message: expect.stringMatching(/does not hold the private key|CSR/) });
    c.close();
  });

  it("admission: a Cedar policy decides each issuance; a denied entry does not starve the others", async () => {
    const s = await server();
    const alias = `spiffe://${TD}/nodes/pol`;
    const { token } = (await admin(s, "POST", "/v1/join-tokens", { spiffe_id: alias })) as { token: string };
    for (const [id, ns] of [
      ["pay", "payments"],
      ["web", "frontend"],
    ] as const) {
      await admin(s, "POST", "/v1/entries", {
        spiffe_id: `spiffe://${TD}/${id}`,
        parent_id: alias,
        selectors: [`unix:uid:${me.uid}`],
        namespace: ns,
      });
    }
    await admin(s, "POST", "/v1/policies", {
      policies: {
        "allow-all": `permit (principal, action == Action::"issue", resource);`,
        "no-token-payments": `forbid (principal, action == Action::"issue", resource)
          when { principal.namespace == "payments" && principal.assurance == "token" };`,
      },
      comment: "payments needs a hardware-rooted node",
    });
    const a = agent(s, token);
    await a.start();
    expect(a.cachedSvids().map((c) => c.spiffeId)).toEqual([`spiffe://${TD}/web`]);
    await expect(a.fetchJwtSvids(me, ["x"], `spiffe://${TD}/web`)).resolves.toHaveLength(1);

    // the signed policy reached the agent, verified; a new version replaces it on the next sync
    expect(a.policy?.version?.version).toBe(1);
    await admin(s, "POST", "/v1/policies", {
      policies: { "allow-all": `permit (principal, action == Action::"issue", resource);` },
    });
    await a.syncOnce();
    expect(a.policy?.version?.version).toBe(2);
    await a.syncOnce(); // with no server-side change it stays and the payments SVID is now issued
    expect(
      a
        .cachedSvids()
        .map((c) => c.spiffeId)
        .sort(),
    ).toEqual([`spiffe://${TD}/pay`, `spiffe://${TD}/web`]);
  });

  it("an evicted agent is refused", async () => {
    const s = await server();
    const { token } = (await admin(s, "POST", "/v1/join-tokens", {})) as { token: string };
    const a = agent(s, token);
    await a.start();
    await admin(s, "DELETE", `/v1/agents/${encodeURIComponent(a.id)}`);
    await expect(a.syncOnce()).rejects.toMatchObject({ code: "QHX_UNAUTHENTICATED" });
  });

  it("negotiates the hybrid post-quantum group X25519MLKEM768 with the server", async () => {
    const s = await server();
    const { ServerClient } = await import("../../host/agent/server-client.ts");
    const c = new ServerClient({
      host: "127.0.0.1",
      port: s.address.port,
      trustDomain: TD,
      roots: bundleRoots(s),
    });
    expect(await c.negotiatedGroup()).toBe("X25519MLKEM768");
    c.close();
  });

  it("renews at half life plus bounded jitter", () => {
    expect(renewTime(0, 1000, 0)).toBe(500);
    expect(renewTime(0, 1000, 1)).toBe(600);
    expect(fromPem("")).toEqual([]);
  });
});
