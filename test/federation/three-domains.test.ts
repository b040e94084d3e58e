/**
 * Three trust domains with independent CAs: a.test federates with b.test and c.test, b.test and
 * c.test only with a.test. Each workload gets exactly the foreign bundles its entry names; an endpoint
 * that authenticates correctly but serves another trust domain's bundle is refused; and the relationship
 * rules refuse malformed declarations.
 */
import { afterEach, describe, expect, it } from "vitest";
import { bundleToPem } from "../../host/core/bundle.ts";
import { systemClock } from "../../host/core/clock.ts";
import {
  admin,
  agentWithWorkload,
  bundleJson,
  type Closer,
  federate,
  me,
  mtlsExchange,
  startDomain,
} from "./helpers.ts";

const closers: Closer[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c.close();
});

describe("three trust domains", () => {
  it("each workload trusts exactly the domains its entry names and both sides federate", async () => {
    const clock = systemClock;
    const [a, b, c] = await Promise.all(
      ["a.test", "b.test", "c.test"].map((td) =>
        startDomain(td, closers, { clock, endpoint: { profile: "https_spiffe" } }),
      ),
    );
    await federate(a!, b!);
    await federate(a!, c!);
    await federate(b!, a!);
    await federate(c!, a!);
    const listed = await admin<{ relationships: { trust_domain: string }[] }>(a!, "GET", "/v1/federation");
    expect(listed.relationships.map((r) => r.trust_domain)).toEqual(["b.test", "c.test"]);

    const onlyB = await agentWithWorkload(a!, closers, clock, {
      path: "/only-b",
      alias: "n1",
      federatesWith: ["b.test"],
    });
    const both = await agentWithWorkload(a!, closers, clock, {
      path: "/both",
      alias: "n2",
      federatesWith: ["b.test", "c.test"],
    });
    const inB = await agentWithWorkload(b!, closers, clock, {
      path: "/svc",
      alias: "nb",
      federatesWith: ["a.test"],
    });
    const inC = await agentWithWorkload(c!, closers, clock, {
      path: "/svc",
      alias: "nc",
      federatesWith: ["a.test", "b.test"], // b.test: c has no relationship with it, so nothing comes
    });

    const ids = {
      onlyB: await onlyB.identitiesFor(me),
      both: await both.identitiesFor(me),
      b: await inB.identitiesFor(me),
      c: await inC.identitiesFor(me),
    };
    expect(ids.onlyB.bundles.map((x) => x.trustDomain)).toEqual(["a.test", "b.test"]);
    expect(ids.both.bundles.map((x) => x.trustDomain)).toEqual(["a.test", "b.test", "c.test"]);
    expect(ids.c.bundles.map((x) => x.trustDomain)).toEqual(["c.test", "a.test"]);

    expect((await mtlsExchange(ids.b, ids.onlyB)).ok).toBe(true);
    expect((await mtlsExchange(ids.c, ids.both)).ok).toBe(true);
    // the only-b workload does not trust c.test even though its server federates with it
    expect(await mtlsExchange(ids.c, ids.onlyB)).toMatchObject({ ok: false, client: "QHX_SVID_NO_BUNDLE" });
    // b.test and c.test never federated with each other
    expect(await mtlsExchange(ids.c, ids.b)).toMatchObject({ ok: false, client: "QHX_SVID_NO_BUNDLE" });
  });

  it("refuses an endpoint that authenticates but serves another trust domain's bundle", async () => {
    const clock = systemClock;
    const [a, b, c] = await Promise.all(
      ["a.test", "b.test", "c.test"].map((td) =>
        startDomain(td, closers, { clock, endpoint: { profile: "https_spiffe" } }),
      ),
    );
    await federate(a!, b!);
    // c.test's relationship points, by mistake or malice, at b.test's endpoint (which a trusts through b)
    await admin(a!, "POST", "/v1/federation", {
      trust_domain: "c.test",
      bundle_endpoint_url: b!.bundleEndpoint!.url,
      profile: "https_spiffe",
      endpoint_spiffe_id: "spiffe://b.test/qhx/server",
      bundle: bundleJson(c!),
    });
    await expect(admin(a!, "POST", "/v1/federation/c.test/refresh")).rejects.toMatchObject({
      code: "QHX_FEDERATION_TRUST_DOMAIN_MISMATCH",
      message: /X.509 authority \(#0\) of trust domain b.test/,
    });
    // c.test's bundle stays the one given out of band
    const rec = await a!.core.ds.getBundle("c.test");
    expect(rec!.sequence).toBe(1);
    expect(rec!.document).toBe(bundleJson(c!));
    // without a relationship with the endpoint's trust domain, nothing authenticates it
    await admin(a!, "DELETE", "/v1/federation/b.test");
    await expect(admin(a!, "POST", "/v1/federation/c.test/refresh")).rejects.toMatchObject({
      code: "QHX_FEDERATION_NO_BUNDLE",
    });
  });

  it("validates relationship declarations", async () => {
    const clock = systemClock;
    const a = await startDomain("a.test", closers, { clock });
    const b = await startDomain("b.test", closers, { clock });
    const base = {
      trust_domain: "b.test",
      bundle_endpoint_url: "https://127.0.0.1:9/",
      profile: "https_spiffe",
      endpoint_spiffe_id: "spiffe://b.test/qhx/server",
      bundle: bundleJson(b),
    };
    const refused = (body: Record<string, unknown>, code: string, message: RegExp) =>
      expect(admin(a, "POST", "/v1/federation", body)).rejects.toMatchObject({ code, message });
    await refused({ ...base, trust_domain: "a.test" }, "QHX_INVALID_ARGUMENT", /own trust domain/);
    await refused({ ...base, trust_domain: "B..test" }, "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR", /./);
    await refused({ ...base, bundle_endpoint_url: "http://127.0.0.1:9/" }, "QHX_INVALID_ARGUMENT", /https/);
    await refused({ ...base, bundle_endpoint_url: "https://u:p@h/" }, "QHX_INVALID_ARGUMENT", /credentials/);
    await refused({ ...base, bundle_endpoint_url: "nope" }, "QHX_INVALID_ARGUMENT", /not a URL/);
    await refused({ ...base, profile: "https" }, "QHX_INVALID_ARGUMENT", /profile/);
    await refused({ ...base, endpoint_spiffe_id: undefined }, "QHX_INVALID_ARGUMENT", /endpoint_spiffe_id/);
    await refused(
      { ...base, endpoint_spiffe_id: "spiffe://a.test/x" },
      "QHX_INVALID_ARGUMENT",
      /own trust domain/,
    );
    await refused({ ...base, bundle: undefined }, "QHX_INVALID_ARGUMENT", /out of band/);
    await refused(
      { ...base, bundle: bundleJson(a) },
      "QHX_FEDERATION_TRUST_DOMAIN_MISMATCH",
      /trust domain a.test/,
    );
    await refused({ ...base, bundle: "{ nope" }, "QHX_BUNDLE_INVALID_JSON", /bundle/);
    await refused(
      { ...base, bundle: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" },
      "QHX_BUNDLE_BAD_CERTIFICATE",
      /bundle/,
    );
    await refused({ ...base, profile: "https_web" }, "QHX_INVALID_ARGUMENT", /only for https_spiffe/);
    await refused(
      { ...base, profile: "https_web", endpoint_spiffe_id: undefined, web_trust_roots: "junk" },
      "QHX_INVALID_ARGUMENT",
      /web_trust_roots/,
    );
    await refused({ ...base, extra: 1 }, "QHX_INVALID_ARGUMENT", /extra: unknown field/);

    // a PEM bundle is accepted (sequence 0); a second relationship for the same domain is not
    const ok = await admin<{ bundle: { sequence: number; x509_authorities: number } }>(
      a,
      "POST",
      "/v1/federation",
      {
        ...base,
        bundle: bundleToPem(b.core.ca.trustBundle()),
      },
    );
    expect(ok.bundle).toMatchObject({ sequence: 0, x509_authorities: 1 });
    await refused(base, "QHX_ALREADY_EXISTS", /already exists/);
    await expect(
      admin(a, "PATCH", "/v1/federation/b.test", { trust_domain: "c.test" }),
    ).rejects.toMatchObject({
      code: "QHX_INVALID_ARGUMENT",
    });
    await expect(admin(a, "PATCH", "/v1/federation/b.test", { profile: "https_web" })).resolves.toMatchObject(
      {
        profile: "https_web",
        endpoint_spiffe_id: null,
      },
    );
    await expect(
      admin(a, "PATCH", "/v1/federation/b.test", { profile: "https_spiffe" }),
    ).rejects.toMatchObject({
      message: /endpoint_spiffe_id: is required/,
    });
    await expect(admin(a, "PATCH", "/v1/federation/c.test", { profile: "https_web" })).rejects.toMatchObject({
      code: "QHX_NOT_FOUND",
    });
    await expect(admin(a, "DELETE", "/v1/federation/c.test")).rejects.toMatchObject({
      code: "QHX_NOT_FOUND",
    });
  });
});
