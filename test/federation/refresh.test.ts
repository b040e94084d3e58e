/**
 * The refresher's rules against real endpoints on 127.0.0.1: a newer bundle is taken, an older sequence,
 * a reused sequence with other keys, another trust domain's bundle, a non-bundle and an untrusted
 * endpoint are refused, and while the endpoint is down the last good bundle stays, retries back off
 * exponentially (with jitter), then recover. Time is a FakeClock started at the real time (certificates
 * are real); refreshes are driven by refreshNow/tick, never by sleeping.
 */
import crypto from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { generateKeyPair } from "../../host/core/alg.ts";
import { bundleToSpiffeJson, parseSpiffeBundle } from "../../host/core/bundle.ts";
import type { TrustBundle } from "../../host/core/bundle-types.ts";
import { FakeClock, systemClock } from "../../host/core/clock.ts";
import { toPem } from "../../host/core/pem.ts";
import { issueCaCertificate, issueX509Svid } from "../../host/core/x509.ts";
import { federationFor } from "../../host/server/federation/manager.ts";
import type { RunningServer } from "../../host/server/server.ts";
import {
  admin,
  bundleJson,
  type Closer,
  controlledEndpoint,
  federate,
  startDomain,
  webPki,
} from "./helpers.ts";

const closers: Closer[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c.close();
});

/** An SVID of `s`'s trust domain for a test endpoint, minted through the admin API. */
async function endpointSvid(s: RunningServer, spiffeId: string) {
  const kp = generateKeyPair("ec-p256");
  const r = await admin<{ chain: string[] }>(s, "POST", "/v1/svids/x509", {
    spiffe_id: spiffeId,
    public_key: kp.publicKey.export({ type: "spki", format: "pem" }),
  });
  return { cert: r.chain.join(""), key: kp.privateKey.export({ type: "pkcs8", format: "pem" }) as string };
}

const withSequence = (b: TrustBundle, sequence: number, refreshHint?: number) =>
  bundleToSpiffeJson({ ...b, sequence, ...(refreshHint !== undefined ? { refreshHint } : {}) });

describe("refresher rules", () => {
  it("takes newer bundles and refuses older, reused or foreign ones, keeping the last good", async () => {
    const clock = new FakeClock(Date.now());
    const a = await startDomain("a.test", closers, {
      clock,
      refresh: { backoff_initial: "2s", backoff_max: "1m" },
    });
    const b = await startDomain("b.test", closers, { clock: systemClock });
    const c = await startDomain("c.test", closers, { clock: systemClock });
    const ep = await controlledEndpoint(await endpointSvid(b, "spiffe://b.test/bundle-test"));
    closers.push(ep);
    const bb = b.core.ca.trustBundle();
    await admin(a, "POST", "/v1/federation", {
      trust_domain: "b.test",
      bundle_endpoint_url: ep.url(),
      profile: "https_spiffe",
      endpoint_spiffe_id: "spiffe://b.test/bundle-test",
      bundle: bundleJson(b),
    });
    const fed = federationFor(a.core);
    fed.random = () => 0.5; // jitter factor exactly 1
    const stored = async () => (await a.core.ds.getBundle("b.test"))!.sequence;

    ep.state.document = withSequence(bb, 5, 60);
    await expect(admin(a, "POST", "/v1/federation/b.test/refresh")).resolves.toMatchObject({
      outcome: "updated",
      sequence: 5,
    });
    expect(fed.state("b.test").nextRefreshAt).toBe(clock.now().getTime() + 60_000);

    const refused = async (doc: string, code: string) => {
      ep.state.document = doc;
      await expect(fed.refreshNow("b.test")).rejects.toMatchObject({ code });
      expect(await stored()).toBe(5);
      expect(
        parseSpiffeBundle((await a.core.ds.getBundle("b.test"))!.document, "b.test").x509Authorities,
      ).toEqual(bb.x509Authorities);
    };
    await refused(withSequence(bb, 4), "QHX_FEDERATION_SEQUENCE_REGRESSION");
    const extraKey = {
      kid: "extra",
      publicKey: crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey,
    };
    await refused(
      bundleToSpiffeJson({ ...bb, sequence: 5, jwtAuthorities: [...bb.jwtAuthorities, extraKey] }),
      "QHX_FEDERATION_SEQUENCE_REUSED",
    );
    await refused(withSequence(c.core.ca.trustBundle(), 9), "QHX_FEDERATION_TRUST_DOMAIN_MISMATCH");
    await refused("not a bundle", "QHX_FEDERATION_BAD_BUNDLE");
    await refused(JSON.stringify({ keys: [], spiffe_sequence: 10 }), "QHX_FEDERATION_EMPTY_BUNDLE");
    ep.state.status = 302;
    await refused(withSequence(bb, 11), "QHX_FEDERATION_ENDPOINT_UNAVAILABLE");
    ep.state.status = 200;

    // same sequence, same keys: unchanged, no write
    ep.state.document = withSequence(bb, 5, 60);
    await expect(fed.refreshNow("b.test")).resolves.toMatchObject({ outcome: "unchanged", sequence: 5 });
    expect(fed.state("b.test").consecutiveFailures).toBe(0);

    // a newer one with an extra JWT key
    ep.state.document = bundleToSpiffeJson({
      ...bb,
      sequence: 6,
      jwtAuthorities: [...bb.jwtAuthorities, extraKey],
    });
    await expect(fed.refreshNow("b.test")).resolves.toMatchObject({ outcome: "updated", sequence: 6 });

    const metrics = await a.core.metrics.registry.getSingleMetricAsString("qhx_federation_refresh_total");
    expect(metrics).toMatch(/trust_domain="b.test",result="QHX_FEDERATION_SEQUENCE_REGRESSION"\} 1/);
    expect(metrics).toMatch(/trust_domain="b.test",result="updated"\} 2/);
    const seq = await a.core.metrics.registry.getSingleMetricAsString("qhx_federation_bundle_sequence");
    expect(seq).toMatch(/trust_domain="b.test"\} 6/);
  });

  it("keeps the last good bundle while the endpoint is down, backs off, and recovers by the clock", async () => {
    const clock = new FakeClock(Date.now());
    const a = await startDomain("a.test", closers, {
      clock,
      refresh: { backoff_initial: "2s", backoff_max: "10s", min_interval: "5s", max_interval: "1h" },
    });
    const b = await startDomain("b.test", closers, { clock: systemClock });
    const ep = await controlledEndpoint(await endpointSvid(b, "spiffe://b.test/bundle-test"));
    closers.push(ep);
    const bb = b.core.ca.trustBundle();
    await admin(a, "POST", "/v1/federation", {
      trust_domain: "b.test",
      bundle_endpoint_url: ep.url(),
      profile: "https_spiffe",
      endpoint_spiffe_id: "spiffe://b.test/bundle-test",
      bundle: bundleJson(b),
    });
    const fed = federationFor(a.core);
    fed.random = () => 0.5;
    ep.state.document = withSequence(bb, 3, 1); // a 1 s hint is raised to min_interval
    await fed.tick(); // a new relationship is due at once
    expect(fed.state("b.test")).toMatchObject({
      consecutiveFailures: 0,
      nextRefreshAt: clock.now().getTime() + 5000,
    });
    expect((await a.core.ds.getBundle("b.test"))!.sequence).toBe(3);

    await ep.close();
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const st = fed.state("b.test");
      const before = st.nextRefreshAt;
      await fed.tick(); // not due yet: nothing happens
      expect(fed.state("b.test").nextRefreshAt).toBe(before);
      clock.set(before);
      await fed.tick();
      const after = fed.state("b.test");
      expect(after.lastError?.code).toBe("QHX_FEDERATION_ENDPOINT_UNAVAILABLE");
      delays.push(after.nextRefreshAt - clock.now().getTime());
    }
    expect(delays).toEqual([2000, 4000, 8000, 10_000, 10_000]);
    expect(fed.state("b.test").consecutiveFailures).toBe(5);
    expect((await a.core.ds.getBundle("b.test"))!.sequence).toBe(3); // last good kept
    const shown = await admin<{ refresh: { consecutive_failures: number; last_error: { code: string } } }>(
      a,
      "GET",
      "/v1/federation/b.test",
    );
    expect(shown.refresh).toMatchObject({
      consecutive_failures: 5,
      last_error: { code: "QHX_FEDERATION_ENDPOINT_UNAVAILABLE" },
    });

    // jitter stays within ±20 %
    fed.random = () => 0;
    expect(fed.backoffFor(1)).toBe(1600);
    fed.random = () => 0.999999;
    expect(fed.backoffFor(1)).toBe(2400);
    fed.random = () => 0.5;

    await ep.listen();
    ep.state.document = withSequence(bb, 4, 7200); // a 2 h hint is capped at max_interval
    clock.set(fed.state("b.test").nextRefreshAt);
    await fed.tick();
    expect(fed.state("b.test")).toMatchObject({ consecutiveFailures: 0, lastError: null });
    expect(fed.state("b.test").nextRefreshAt).toBe(clock.now().getTime() + 3_600_000);
    expect((await a.core.ds.getBundle("b.test"))!.sequence).toBe(4);
  });

  it("refuses an https_spiffe endpoint whose SVID comes from a CA the known bundle does not hold", async () => {
    const a = await startDomain("a.test", closers, { clock: systemClock });
    const b = await startDomain("b.test", closers, { clock: systemClock });
    // an impostor CA for b.test, with its own SVID for the endpoint ID
    const caKey = generateKeyPair("ec-p256");
    const now = new Date();
    const later = new Date(now.getTime() + 3_600_000);
    const caDer = issueCaCertificate({
      publicKey: caKey.publicKey,
      signer: { privateKey: caKey.privateKey },
      trustDomain: "b.test",
      notBefore: now,
      notAfter: later,
    });
    const leafKey = generateKeyPair("ec-p256");
    const leaf = issueX509Svid({
      spiffeId: "spiffe://b.test/qhx/server",
      publicKey: leafKey.publicKey,
      issuerCertDer: caDer,
      issuerKey: caKey.privateKey,
      notBefore: now,
      notAfter: later,
    });
    const ep = await controlledEndpoint({
      cert: toPem(leaf) + toPem(caDer),
      key: leafKey.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    });
    closers.push(ep);
    ep.state.document = withSequence(b.core.ca.trustBundle(), 50);
    await admin(a, "POST", "/v1/federation", {
      trust_domain: "b.test",
      bundle_endpoint_url: ep.url(),
      profile: "https_spiffe",
      endpoint_spiffe_id: "spiffe://b.test/qhx/server",
      bundle: bundleJson(b),
    });
    await expect(admin(a, "POST", "/v1/federation/b.test/refresh")).rejects.toMatchObject({
      code: "QHX_FEDERATION_ENDPOINT_AUTH_FAILED",
    });
    expect((await a.core.ds.getBundle("b.test"))!.sequence).toBe(1);
  });
});

describe("the server's refresher", () => {
  it("refreshes due relationships on its own timer", async () => {
    const a = await startDomain("a.test", closers, {
      clock: systemClock,
      refresh: { check_interval: "20ms" },
    });
    const b = await startDomain("b.test", closers, {
      clock: systemClock,
      endpoint: { profile: "https_spiffe" },
    });
    const fed = federationFor(a.core);
    const refreshed = new Promise<void>((resolve) => {
      const tick = fed.tick.bind(fed);
      fed.tick = () =>
        tick().then(() => {
          if (fed.state("b.test").lastSuccessAt !== null) resolve();
        });
    });
    await federate(a, b); // a new relationship is due at once
    await refreshed;
    expect(fed.state("b.test")).toMatchObject({ consecutiveFailures: 0, lastError: null });
    expect(fed.state("b.test").nextRefreshAt).toBeGreaterThan(Date.now() + 200_000); // b's 5 min hint
  });
});

describe("https_web profile", () => {
  it("validates the endpoint with the operator's CA, and refuses it without", async () => {
    const pki = webPki();
    const a = await startDomain("a.test", closers, { clock: systemClock });
    const b = await startDomain("b.test", closers, {
      clock: systemClock,
      endpoint: { profile: "https_web", certFile: pki.certFile, keyFile: pki.keyFile },
    });
    // no bundle out of band: with https_web the first one is fetched
    const created = await admin<{ bundle: unknown }>(a, "POST", "/v1/federation", {
      trust_domain: "b.test",
      bundle_endpoint_url: b.bundleEndpoint!.url,
      profile: "https_web",
      web_trust_roots: pki.caPem,
    });
    expect(created.bundle).toBeNull();
    await expect(admin(a, "POST", "/v1/federation/b.test/refresh")).resolves.toMatchObject({
      outcome: "updated",
      sequence: 1,
    });
    expect(
      parseSpiffeBundle((await a.core.ds.getBundle("b.test"))!.document, "b.test").x509Authorities,
    ).toEqual(b.core.ca.trustBundle().x509Authorities);

    // the system roots do not know the operator's CA
    await admin(a, "PATCH", "/v1/federation/b.test", { web_trust_roots: null });
    await expect(admin(a, "POST", "/v1/federation/b.test/refresh")).rejects.toMatchObject({
      code: "QHX_FEDERATION_ENDPOINT_AUTH_FAILED",
    });
    // a host name the certificate does not carry
    await admin(a, "PATCH", "/v1/federation/b.test", {
      web_trust_roots: pki.caPem,
      bundle_endpoint_url: b.bundleEndpoint!.url.replace("127.0.0.1", "localhost"),
    });
    await expect(admin(a, "POST", "/v1/federation/b.test/refresh")).rejects.toMatchObject({
      code: "QHX_FEDERATION_ENDPOINT_AUTH_FAILED",
    });
  });
});
