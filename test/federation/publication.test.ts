/**
 * Bundle publication under the crypto policy (issue 9 item 4), with real trust domains on 127.0.0.1: the
 * bundle endpoint identifies the fetching server by the X509-SVID it presents as a TLS client certificate
 * and publishes only to the domains the policy's releasable_to allows; anonymous fetchers are served only
 * while nothing restricts publication; agent sync withholds a foreign bundle from a namespace whose
 * accept_from does not name that domain.
 */
import { afterEach, describe, expect, it } from "vitest";
import { Agent } from "../../host/agent/agent.ts";
import { parseSpiffeBundle } from "../../host/core/bundle.ts";
import { systemClock } from "../../host/core/clock.ts";
import {
  acceptedFederatedDomains,
  bundlePublicationRefusal,
  bundlePublicationRestricted,
  emptyCryptoPolicy,
  parseCryptoPolicy,
} from "../../host/core/crypto-policy.ts";
import { cryptoPolicyStoreFor } from "../../host/server/crypto-policy-store.ts";
import { fetchBundleDocument } from "../../host/server/federation/fetch.ts";
import { federationFor } from "../../host/server/federation/manager.ts";
import type { RunningServer } from "../../host/server/server.ts";
import {
  admin,
  agentWithWorkload,
  bundleJson,
  type Closer,
  federate,
  me,
  startDomain,
  webPki,
} from "./helpers.ts";

const closers: Closer[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c.close();
});

const spiffe = { profile: "https_spiffe" as const };

/** Apply a crypto policy document through the admin API (as `qhx crypto-policy apply` does). */
function applyPolicy(s: RunningServer, policy: Record<string, unknown>) {
  return admin(s, "POST", "/v1/crypto-policy", { policy });
}

/** Fetch `s`'s bundle over https_spiffe as `client` would (its server SVID), or anonymously. */
async function fetchFrom(s: RunningServer, client?: RunningServer | { cert: string; key: string }) {
  const td = s.core.cfg.trustDomain;
  const identity =
    client === undefined
      ? undefined
      : "core" in client
        ? await federationFor(client.core).clientIdentity()
        : client;
  return fetchBundleDocument({
    url: s.bundleEndpoint!.url,
    profile: "https_spiffe",
    endpointSpiffeId: `spiffe://${td}/qhx/server`,
    endpointBundles: new Map([[td, s.core.ca.trustBundle()]]),
    ...(identity ? { clientIdentity: identity } : {}),
    now: new Date(),
  });
}

async function metric(s: RunningServer, name: string): Promise<string> {
  return s.core.metrics.registry.getSingleMetricAsString(name);
}

describe("publication rules (model)", () => {
  it("is unrestricted exactly when some releasable_to that applies resolves to *", () => {
    expect(bundlePublicationRestricted(emptyCryptoPolicy("a.test"))).toBe(false);
    const only = (doc: Record<string, unknown>) =>
      parseCryptoPolicy({ format: 1, trust_domain: "a.test", ...doc });
    const restricted = only({ trust_domains: { "a.test": { releasable_to: ["b.test"] } } });
    expect(bundlePublicationRestricted(restricted)).toBe(true);
    expect(bundlePublicationRefusal(restricted, "b.test")).toBeNull();
    expect(bundlePublicationRefusal(restricted, "c.test")).toMatch(
      /no identity of a.test is releasable to c.test \("td:a.test" \(releasable_to: b.test\)\)/,
    );
    expect(bundlePublicationRefusal(restricted, null)).toMatch(/restricts bundle publication/);
    // a namespace releasable anywhere makes publication unrestricted again
    const open = only({
      default: { releasable_to: [] },
      namespaces: { public: { releasable_to: ["*"] } },
    });
    expect(bundlePublicationRestricted(open)).toBe(false);
    expect(bundlePublicationRefusal(open, null)).toBeNull();
    // a coalition covers its members only; releasing to none refuses everyone
    const coalition = only({
      coalitions: { alliance: ["b.test", "c.test"] },
      default: { releasable_to: ["coalition:alliance"] },
    });
    expect(bundlePublicationRestricted(coalition)).toBe(true);
    expect(bundlePublicationRefusal(coalition, "c.test")).toBeNull();
    expect(bundlePublicationRefusal(coalition, "d.test")).toMatch(
      /"default" \(releasable_to: coalition:alliance\)/,
    );
    expect(bundlePublicationRefusal(only({ default: { releasable_to: [] } }), "b.test")).toMatch(
      /releasable_to: none/,
    );
    // ingress: accept_from per namespace; the own trust domain always passes
    const ingress = only({ namespaces: { sealed: { accept_from: ["c.test"] } } });
    expect(
      acceptedFederatedDomains(ingress, { trustDomain: "a.test", namespace: "sealed" }, [
        "a.test",
        "b.test",
        "c.test",
      ]),
    ).toEqual({
      accepted: ["a.test", "c.test"],
      refused: [{ trustDomain: "b.test", rule: "ns:sealed", acceptFrom: ["c.test"] }],
    });
    expect(
      acceptedFederatedDomains(ingress, { trustDomain: "a.test", namespace: "other" }, ["b.test"]).accepted,
    ).toEqual(["b.test"]);
  });
});

describe("bundle endpoint publication", () => {
  it("publishes to an allowed domain and refuses a forbidden one; the refused refresher keeps its last good bundle", async () => {
    const a = await startDomain("a.test", closers, { clock: systemClock, endpoint: spiffe });
    const b = await startDomain("b.test", closers, { clock: systemClock, endpoint: spiffe });
    const c = await startDomain("c.test", closers, { clock: systemClock, endpoint: spiffe });
    // a knows b's and c's bundles (to verify their client SVIDs); b and c federate with a
    await federate(a, b);
    await federate(a, c);
    await federate(b, a);
    await federate(c, a);
    await applyPolicy(a, { trust_domains: { "a.test": { releasable_to: ["b.test"] } } });

    await expect(admin(b, "POST", "/v1/federation/a.test/refresh")).resolves.toMatchObject({
      outcome: "unchanged",
      sequence: 1,
    });
    await expect(admin(c, "POST", "/v1/federation/a.test/refresh")).rejects.toMatchObject({
      code: "QHX_FEDERATION_PUBLICATION_REFUSED",
      message:
        /QHX_FEDERATION_PUBLICATION_REFUSED: crypto policy: no identity of a.test is releasable to c.test \("td:a.test" \(releasable_to: b.test\)\)/,
    });
    // c keeps a's last good bundle and reports the failure
    expect((await c.core.ds.getBundle("a.test"))?.sequence).toBe(1);
    const shown = await admin<{
      refresh: { last_error: { code: string } | null; consecutive_failures: number };
    }>(c, "GET", "/v1/federation/a.test");
    expect(shown.refresh).toMatchObject({
      last_error: { code: "QHX_FEDERATION_PUBLICATION_REFUSED" },
      consecutive_failures: 1,
    });
    expect(await metric(c, "qhx_federation_refresh_total")).toMatch(
      /trust_domain="a.test",result="QHX_FEDERATION_PUBLICATION_REFUSED"\} 1/,
    );
    expect(await metric(a, "qhx_federation_bundle_publication_refused_total")).toMatch(
      /reason="not_releasable"\} 1/,
    );
    expect(await metric(a, "qhx_federation_bundle_endpoint_requests_total")).toMatch(/status="403"\} 1/);

    // the policy is read at each request: releasing to a coalition with c lets c refresh again
    await applyPolicy(a, {
      coalitions: { partners: ["b.test", "c.test"] },
      trust_domains: { "a.test": { releasable_to: ["coalition:partners"] } },
    });
    await expect(admin(c, "POST", "/v1/federation/a.test/refresh")).resolves.toMatchObject({
      outcome: "unchanged",
    });
    // and the same domain's own server is never refused
    await expect(fetchFrom(a, a)).resolves.toContain("spiffe_sequence");
  });

  it("serves anonymous fetchers without restrictions and refuses them with restrictions", async () => {
    const a = await startDomain("a.test", closers, { clock: systemClock, endpoint: spiffe });
    // no policy: SPIFFE Federation interoperability, anyone gets the bundle
    const doc = await fetchFrom(a);
    expect(parseSpiffeBundle(doc, "a.test").x509Authorities).toEqual(a.core.ca.trustBundle().x509Authorities);

    // applied offline through the store (as `qhx crypto-policy apply --data-dir` does)
    cryptoPolicyStoreFor(a.core).apply(
      { format: 1, default: { releasable_to: ["b.test"] } },
      { now: new Date(), comment: "restrict" },
    );
    await expect(fetchFrom(a)).rejects.toMatchObject({
      code: "QHX_FEDERATION_PUBLICATION_REFUSED",
      message: /QHX_FEDERATION_CLIENT_UNIDENTIFIED: crypto policy restricts bundle publication/,
    });
    expect(await metric(a, "qhx_federation_bundle_publication_refused_total")).toMatch(
      /reason="anonymous"\} 1/,
    );

    // a namespace releasable to "*" lifts the restriction: anonymous fetches work again
    await applyPolicy(a, {
      default: { releasable_to: ["b.test"] },
      namespaces: { public: { releasable_to: ["*"] } },
    });
    await expect(fetchFrom(a)).resolves.toContain("spiffe_sequence");
  });

  it("refuses a client certificate from an untrusted CA when publication is restricted", async () => {
    const a = await startDomain("a.test", closers, { clock: systemClock, endpoint: spiffe });
    const b = await startDomain("b.test", closers, { clock: systemClock, endpoint: spiffe });
    // an impostor "b.test" with its own CA, unknown to a
    const fakeB = await startDomain("b.test", closers, { clock: systemClock });
    await federate(a, b);
    const impostor = await federationFor(fakeB.core).clientIdentity();

    // unrestricted: an unverifiable certificate is no worse than none, the bundle is public
    await expect(fetchFrom(a, impostor)).resolves.toContain("spiffe_sequence");

    await applyPolicy(a, { trust_domains: { "a.test": { releasable_to: ["b.test"] } } });
    await expect(fetchFrom(a, b)).resolves.toContain("spiffe_sequence");
    await expect(fetchFrom(a, impostor)).rejects.toMatchObject({
      code: "QHX_FEDERATION_PUBLICATION_REFUSED",
      message:
        /QHX_FEDERATION_CLIENT_UNIDENTIFIED: the client certificate is not an X509-SVID of a known trust domain/,
    });
    // Web PKI certificates are not SVIDs either
    const pki = webPki();
    const fs = await import("node:fs");
    await expect(
      fetchFrom(a, {
        cert: fs.readFileSync(pki.certFile, "utf8"),
        key: fs.readFileSync(pki.keyFile, "utf8"),
      }),
    ).rejects.toMatchObject({ code: "QHX_FEDERATION_PUBLICATION_REFUSED" });
    expect(await metric(a, "qhx_federation_bundle_publication_refused_total")).toMatch(
      /reason="client_auth_failed"\} 2/,
    );
  });

  it("identifies the fetching server over https_web too", async () => {
    const pki = webPki();
    const a = await startDomain("a.test", closers, {
      clock: systemClock,
      endpoint: { profile: "https_web", certFile: pki.certFile, keyFile: pki.keyFile },
    });
    const b = await startDomain("b.test", closers, { clock: systemClock, endpoint: spiffe });
    const c = await startDomain("c.test", closers, { clock: systemClock, endpoint: spiffe });
    await federate(a, b);
    await federate(a, c);
    for (const s of [b, c]) {
      await admin(s, "POST", "/v1/federation", {
        trust_domain: "a.test",
        bundle_endpoint_url: a.bundleEndpoint!.url,
        profile: "https_web",
        web_trust_roots: pki.caPem,
      });
    }
    await applyPolicy(a, { default: { releasable_to: ["b.test"] } });
    await expect(admin(b, "POST", "/v1/federation/a.test/refresh")).resolves.toMatchObject({
      outcome: "updated",
    });
    await expect(admin(c, "POST", "/v1/federation/a.test/refresh")).rejects.toMatchObject({
      code: "QHX_FEDERATION_PUBLICATION_REFUSED",
    });
    // c never got a's bundle
    expect(await c.core.ds.getBundle("a.test")).toBeUndefined();
    expect(JSON.parse((await b.core.ds.getBundle("a.test"))!.document)).toMatchObject({
      spiffe_sequence: JSON.parse(bundleJson(a)).spiffe_sequence,
    });
  });
});

describe("agent sync ingress releasability", () => {
  it("withholds a foreign bundle from a namespace whose rule does not accept from that domain", async () => {
    const clock = systemClock;
    const a = await startDomain("a.test", closers, { clock, endpoint: spiffe });
    const b = await startDomain("b.test", closers, { clock, endpoint: spiffe });
    await federate(a, b);
    await applyPolicy(a, { namespaces: { sealed: { accept_from: [] } } });
    const open = await agentWithWorkload(a, closers, clock, {
      path: "/open",
      alias: "n1",
      namespace: "open",
      federatesWith: ["b.test"],
    });
    const sealed = await agentWithWorkload(a, closers, clock, {
      path: "/sealed",
      alias: "n2",
      namespace: "sealed",
      federatesWith: ["b.test"],
    });
    const tds = async (ag: Agent) => (await ag.identitiesFor(me)).bundles.map((x) => x.trustDomain);
    expect(await tds(open)).toEqual(["a.test", "b.test"]);
    expect(await tds(sealed)).toEqual(["a.test"]);
    // the node of the sealed namespace was not even sent b's bundle
    expect(sealed.allBundles().map((x) => x.trustDomain)).toEqual(["a.test"]);

    // the rule now accepts b.test: the node receives the bundle at its next sync, no restart (the
    // workload's cached entry takes the wider federates_with at its next SVID rotation or entry update)
    await applyPolicy(a, { namespaces: { sealed: { accept_from: ["b.test"] } } });
    await sealed.syncOnce();
    expect(sealed.allBundles().map((x) => x.trustDomain)).toEqual(["a.test", "b.test"]);
    // withdrawn from every workload at the next sync once no rule accepts b.test
    await applyPolicy(a, { default: { accept_from: [] } });
    await sealed.syncOnce();
    await open.syncOnce();
    expect(await tds(sealed)).toEqual(["a.test"]);
    expect(await tds(open)).toEqual(["a.test"]);
    expect(open.allBundles().map((x) => x.trustDomain)).toEqual(["a.test"]);
  });
});
