/**
 * Two trust domains with independent CAs (in-process servers, real TLS sockets on 127.0.0.1): each
 * serves its SPIFFE bundle endpoint (https_spiffe), agents hand workloads their SVIDs and bundles, and
 * cross-domain mTLS (node:tls, each side verifying with its own Workload API bundles) works only once both
 * sides declare federation; deleting a relationship revokes at the agent's next sync.
 */
import tls from "node:tls";
import { afterEach, describe, expect, it } from "vitest";
import { protoType } from "../../host/agent/workload-api/proto.ts";
import { buildSdsResources } from "../../host/agent/workload-api/sds.ts";
import { x509SvidResponse } from "../../host/agent/workload-api/server.ts";
import { parseSpiffeBundle } from "../../host/core/bundle.ts";
import { systemClock } from "../../host/core/clock.ts";
import { fetchBundleDocument } from "../../host/server/federation/fetch.ts";
import { admin, agentWithWorkload, type Closer, federate, me, mtlsExchange, startDomain } from "./helpers.ts";

const closers: Closer[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c.close();
});

describe("bundle endpoint", () => {
  it("serves the trust domain's SPIFFE bundle over https_spiffe, authenticated with its SVID", async () => {
    const a = await startDomain("a.test", closers, {
      clock: systemClock,
      endpoint: { profile: "https_spiffe" },
    });
    const own = a.core.ca.trustBundle();
    const doc = await fetchBundleDocument({
      url: a.bundleEndpoint!.url,
      profile: "https_spiffe",
      endpointSpiffeId: "spiffe://a.test/qhx/server",
      endpointBundles: new Map([["a.test", own]]),
      now: new Date(),
    });
    const raw = JSON.parse(doc) as Record<string, unknown>;
    expect(raw.spiffe_sequence).toBe(own.sequence);
    expect(raw.spiffe_refresh_hint).toBe(300);
    const b = parseSpiffeBundle(doc, "a.test");
    expect(b.x509Authorities).toEqual(own.x509Authorities);
    expect(b.jwtAuthorities.map((j) => j.kid)).toEqual(own.jwtAuthorities.map((j) => j.kid));

    // another path, another method
    const base = new URL(a.bundleEndpoint!.url);
    await expect(
      fetchBundleDocument({
        url: new URL("/other", base).toString(),
        profile: "https_spiffe",
        endpointSpiffeId: "spiffe://a.test/qhx/server",
        endpointBundles: new Map([["a.test", own]]),
        now: new Date(),
      }),
    ).rejects.toMatchObject({ code: "QHX_FEDERATION_ENDPOINT_UNAVAILABLE", message: /HTTP 404/ });
    const post = await fetch(a.bundleEndpoint!.url, { method: "POST" }).catch((e: Error) => e);
    expect(post).toBeInstanceOf(Error); // an untrusted (SPIFFE) certificate for fetch's Web PKI: refused

    // the serving SVID is re-issued (here on demand; the server does it at half its life)
    const served = () =>
      new Promise<string>((resolve, reject) => {
        const u = new URL(a.bundleEndpoint!.url);
        const sock = tls.connect(
          { host: u.hostname, port: Number(u.port), rejectUnauthorized: false },
          () => {
            resolve(sock.getPeerX509Certificate()!.fingerprint256);
            sock.destroy();
          },
        );
        sock.on("error", reject);
      });
    const before = await served();
    await a.bundleEndpoint!.renewIdentity();
    expect(await served()).not.toBe(before);

    // the endpoint counts its requests
    const m = await a.core.metrics.registry.getSingleMetricAsString(
      "qhx_federation_bundle_endpoint_requests_total",
    );
    expect(m).toMatch(/status="200"\} 1/);
    expect(m).toMatch(/status="404"\} 1/);
  });

  it("refuses an endpoint authenticating as another SPIFFE ID, or whose SVID the known bundle does not vouch for", async () => {
    const a = await startDomain("a.test", closers, {
      clock: systemClock,
      endpoint: { profile: "https_spiffe" },
    });
    const b = await startDomain("b.test", closers, {
      clock: systemClock,
      endpoint: { profile: "https_spiffe" },
    });
    const base = {
      url: a.bundleEndpoint!.url,
      profile: "https_spiffe" as const,
      now: new Date(),
    };
    await expect(
      fetchBundleDocument({
        ...base,
        endpointSpiffeId: "spiffe://a.test/qhx/bundle-endpoint",
        endpointBundles: new Map([["a.test", a.core.ca.trustBundle()]]),
      }),
    ).rejects.toMatchObject({
      code: "QHX_FEDERATION_ENDPOINT_AUTH_FAILED",
      message: /authenticated as spiffe:\/\/a.test\/qhx\/server/,
    });
    // b's bundle, relabelled as a.test's: a's SVID does not chain to it
    const impostor = { ...b.core.ca.trustBundle(), trustDomain: "a.test" };
    await expect(
      fetchBundleDocument({
        ...base,
        endpointSpiffeId: "spiffe://a.test/qhx/server",
        endpointBundles: new Map([["a.test", impostor]]),
      }),
    ).rejects.toMatchObject({ code: "QHX_FEDERATION_ENDPOINT_AUTH_FAILED", message: /does not verify/ });
  });
});

describe("two trust domains", () => {
  it("cross-domain mTLS works only after both declare federation; deleting it revokes at the next sync", async () => {
    const clock = systemClock;
    const a = await startDomain("a.test", closers, { clock, endpoint: { profile: "https_spiffe" } });
    const b = await startDomain("b.test", closers, { clock, endpoint: { profile: "https_spiffe" } });
    const agentA = await agentWithWorkload(a, closers, clock, {
      path: "/web",
      alias: "na",
      federatesWith: ["b.test"],
    });
    const agentB = await agentWithWorkload(b, closers, clock, {
      path: "/db",
      alias: "nb",
      federatesWith: ["a.test"],
    });

    // no federation: each workload holds its own trust domain's bundle only
    let web = await agentA.identitiesFor(me);
    let db = await agentB.identitiesFor(me);
    expect(web.svids.map((s) => s.spiffeId)).toEqual(["spiffe://a.test/web"]);
    expect(web.bundles.map((x) => x.trustDomain)).toEqual(["a.test"]);
    let r = await mtlsExchange(db, web);
    expect(r.ok).toBe(false);
    expect(r.client).toBe("QHX_SVID_NO_BUNDLE");

    // a declares federation with b: a's workload trusts b, b's does not trust a yet
    const created = await federate(a, b);
    expect(created).toMatchObject({
      trust_domain: "b.test",
      profile: "https_spiffe",
      bundle: { sequence: 1 },
    });
    await expect(admin(a, "POST", "/v1/federation/b.test/refresh")).resolves.toMatchObject({
      outcome: "unchanged",
      sequence: 1,
    });
    await agentA.syncOnce();
    await agentB.syncOnce();
    web = await agentA.identitiesFor(me);
    db = await agentB.identitiesFor(me);
    expect(web.bundles.map((x) => x.trustDomain)).toEqual(["a.test", "b.test"]);
    expect(db.bundles.map((x) => x.trustDomain)).toEqual(["b.test"]);
    r = await mtlsExchange(db, web);
    expect(r).toMatchObject({ ok: false, client: "spiffe://b.test/db", server: "QHX_SVID_NO_BUNDLE" });

    // both sides declare it: the exchange completes, each side sees the other's SPIFFE ID
    await federate(b, a);
    await agentB.syncOnce();
    db = await agentB.identitiesFor(me);
    expect(db.bundles.map((x) => x.trustDomain)).toEqual(["b.test", "a.test"]);
    r = await mtlsExchange(db, web);
    expect(r).toEqual({ ok: true, client: "spiffe://b.test/db", server: "spiffe://a.test/web" });
    // the Workload API's X509SVIDResponse carries the federated bundle keyed by trust domain ID
    const resp = x509SvidResponse(web) as { federated_bundles: Record<string, Uint8Array> };
    expect(Object.keys(resp.federated_bundles)).toEqual(["spiffe://b.test"]);

    // a deletes the relationship: its bundle is gone from the server at once, from the workload at the next sync
    await expect(admin(a, "DELETE", "/v1/federation/b.test")).resolves.toEqual({ deleted: "b.test" });
    expect(await a.core.ds.getBundle("b.test")).toBeUndefined();
    await agentA.syncOnce();
    web = await agentA.identitiesFor(me);
    expect(web.bundles.map((x) => x.trustDomain)).toEqual(["a.test"]);
    expect(agentA.allBundles().map((x) => x.trustDomain)).toEqual(["a.test"]);
    r = await mtlsExchange(db, web);
    expect(r).toMatchObject({ ok: false, client: "QHX_SVID_NO_BUNDLE" });
    await expect(admin(a, "GET", "/v1/federation/b.test")).rejects.toMatchObject({ code: "QHX_NOT_FOUND" });
  });

  it("hands the foreign bundle only to workloads whose entries name the domain", async () => {
    const clock = systemClock;
    const a = await startDomain("a.test", closers, { clock, endpoint: { profile: "https_spiffe" } });
    const b = await startDomain("b.test", closers, { clock, endpoint: { profile: "https_spiffe" } });
    await federate(a, b);
    const named = await agentWithWorkload(a, closers, clock, {
      path: "/named",
      alias: "n1",
      federatesWith: ["b.test"],
    });
    const plain = await agentWithWorkload(a, closers, clock, { path: "/plain", alias: "n2" });
    expect((await named.identitiesFor(me)).bundles.map((x) => x.trustDomain)).toEqual(["a.test", "b.test"]);
    const p = await plain.identitiesFor(me);
    expect(p.svids.map((s) => s.spiffeId)).toEqual(["spiffe://a.test/plain"]);
    expect(p.bundles.map((x) => x.trustDomain)).toEqual(["a.test"]);
    // the server did not even send it to the node whose entries do not name b.test
    expect(plain.allBundles().map((x) => x.trustDomain)).toEqual(["a.test"]);
    const resp = x509SvidResponse(p) as { federated_bundles: Record<string, Uint8Array> };
    expect(resp.federated_bundles).toEqual({});
    const secretT = protoType("envoy.extensions.transport_sockets.tls.v3.Secret");
    // SDS: the named workload can ask for spiffe://b.test's validation context, the other cannot
    const names = (ids: Awaited<ReturnType<typeof plain.identitiesFor>>) =>
      buildSdsResources({ resource_names: [], node: null }, ids).map(
        (r) => (secretT.decode((r as { value: Uint8Array }).value) as unknown as { name: string }).name,
      );
    expect(names(await named.identitiesFor(me))).toContain("spiffe://b.test");
    expect(names(p)).not.toContain("spiffe://b.test");
    expect(() => buildSdsResources({ resource_names: ["spiffe://b.test"], node: null }, p)).toThrow(
      /spiffe:\/\/b.test/,
    );
  });
});
