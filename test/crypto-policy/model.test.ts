/**
 * The pure crypto policy model: parsing with precise messages (a negative case per rule), resolution
 * most specific first (namespace > trust domain > coalition > default > built-in, field by field),
 * explain(), issuance checks, and releasability in both directions.
 */
import { describe, expect, it } from "vitest";
import {
  BUILTIN_RULE,
  capTtl,
  checkAssurance,
  checkReleasable,
  checkSignatureAlgorithm,
  checkTunnelMode,
  cryptoPolicyToJson,
  explain,
  mayPublishBundleTo,
  parseCryptoPolicy,
  parseCryptoPolicyText,
  resolveCryptoPolicy,
} from "../../host/core/crypto-policy.ts";
import { QhxError, ValidationError } from "../../host/core/errors.ts";

const TD = "example.org";

const doc = {
  trust_domain: TD,
  coalitions: { alliance: [TD, "partner.org"], far: ["far.org"] },
  default: { max_jwt_svid_ttl: "10m" },
  coalition_rules: {
    alliance: {
      signature_algorithms: { allowed: ["ec-p384", "ml-dsa-87"], default: "ec-p384" },
      tunnel_modes: ["pq"],
      max_x509_svid_ttl: "2h",
      min_assurance: "key",
    },
  },
  trust_domains: {
    [TD]: {
      signature_algorithms: { allowed: ["ec-p256", "ml-dsa-65"], default: "ec-p256" },
      max_x509_svid_ttl: "1h",
      releasable_to: ["coalition:alliance"],
    },
  },
  namespaces: {
    payments: {
      signature_algorithms: { allowed: ["ml-dsa-65"] },
      min_assurance: "hardware",
      releasable_to: ["partner.org"],
      accept_from: ["partner.org"],
    },
    open: { releasable_to: ["*"], accept_from: [] },
  },
};

describe("crypto policy: resolution", () => {
  const p = parseCryptoPolicy(doc);

  it("namespace over trust domain over coalition over default over built-in, field by field", () => {
    const e = resolveCryptoPolicy(p, { trustDomain: TD, namespace: "payments" });
    expect(e.signatureAlgorithms).toEqual({
      value: { allowed: ["ml-dsa-65"], default: "ml-dsa-65" },
      rule: "ns:payments",
    });
    expect(e.minAssurance).toEqual({ value: "hardware", rule: "ns:payments" });
    expect(e.maxX509SvidTtl).toEqual({ value: 3600, rule: `td:${TD}` });
    expect(e.tunnelModes).toEqual({ value: ["pq"], rule: "coalition:alliance" });
    expect(e.maxJwtSvidTtl).toEqual({ value: 600, rule: "default" });
    expect(e.releasableTo.rule).toBe("ns:payments");

    const other = resolveCryptoPolicy(p, { trustDomain: TD, namespace: "billing" });
    expect(other.signatureAlgorithms.rule).toBe(`td:${TD}`);
    expect(other.minAssurance).toEqual({ value: "key", rule: "coalition:alliance" });

    const partner = resolveCryptoPolicy(p, { trustDomain: "partner.org" });
    expect(partner.signatureAlgorithms).toEqual({
      value: { allowed: ["ec-p384", "ml-dsa-87"], default: "ec-p384" },
      rule: "coalition:alliance",
    });
    const stranger = resolveCryptoPolicy(p, { trustDomain: "stranger.org" });
    expect(stranger.signatureAlgorithms).toEqual({
      value: BUILTIN_RULE.signatureAlgorithms,
      rule: "builtin",
    });
    expect(stranger.maxJwtSvidTtl.rule).toBe("default");
  });

  it("namespace rules belong to the policy's trust domain", () => {
    const e = resolveCryptoPolicy(p, { trustDomain: "partner.org", namespace: "payments" });
    expect(e.signatureAlgorithms.rule).toBe("coalition:alliance");
  });

  it("an empty policy is the built-in default everywhere", () => {
    const e = resolveCryptoPolicy(parseCryptoPolicy({}), { trustDomain: TD, namespace: "x" });
    for (const f of Object.values(e)) expect(f.rule).toBe("builtin");
  });

  it("explain lists the rules considered, which apply and why, and each field's deciding rule", () => {
    const x = explain(p, `spiffe://${TD}/pay/api`, "payments");
    expect(x.namespace).toBe("payments");
    expect(x.rules.filter((r) => r.applies).map((r) => r.name)).toEqual([
      "ns:payments",
      `td:${TD}`,
      "coalition:alliance",
      "default",
      "builtin",
    ]);
    expect(x.rules.find((r) => r.name === "ns:open")).toEqual({
      name: "ns:open",
      applies: false,
      why: 'the entry is in namespace "payments", not "open"',
    });
    expect(x.effective.signature_algorithms).toEqual({
      value: { allowed: ["ml-dsa-65"], default: "ml-dsa-65" },
      rule: "ns:payments",
    });
    expect(x.effective.max_x509_svid_ttl).toEqual({ value: "1h", rule: `td:${TD}` });
    expect(x.effective.tunnel_modes).toEqual({ value: ["pq"], rule: "coalition:alliance" });

    const far = explain(p, "spiffe://far.org/x");
    expect(far.namespace).toBeNull();
    expect(far.rules.find((r) => r.name === "coalition:alliance")).toMatchObject({ applies: false });
    expect(far.rules.find((r) => r.name === "ns:payments")?.why).toMatch(/no namespace/);
    expect(far.effective.signature_algorithms!.rule).toBe("builtin");
  });

  it("round-trips through its JSON form", () => {
    const again = parseCryptoPolicy(JSON.parse(JSON.stringify(cryptoPolicyToJson(p))));
    expect(again).toEqual(p);
    const y = parseCryptoPolicyText(
      "namespaces:\n  payments:\n    signature_algorithms: { allowed: [ml-dsa-65] }\n    max_x509_svid_ttl: 90\n",
    );
    expect(y.namespaces.payments).toEqual({
      signatureAlgorithms: { allowed: ["ml-dsa-65"], default: "ml-dsa-65" },
      maxX509SvidTtl: 90,
    });
  });
});

describe("crypto policy: checks", () => {
  const p = parseCryptoPolicy(doc);
  const pay = resolveCryptoPolicy(p, { trustDomain: TD, namespace: "payments" });

  it("refuses a forbidden algorithm naming the rule", () => {
    expect(() => checkSignatureAlgorithm(pay, "ec-p256")).toThrow(
      'crypto policy "ns:payments" forbids ECDSA-P256 (allowed: ML-DSA-65)',
    );
    expect(() => checkSignatureAlgorithm(pay, "ml-dsa-65")).not.toThrow();
    try {
      checkSignatureAlgorithm(pay, "ed25519");
    } catch (e) {
      expect(e).toBeInstanceOf(QhxError);
      expect((e as QhxError).code).toBe("QHX_CRYPTO_POLICY");
    }
  });

  it("refuses assurance below the minimum (token < key < hardware)", () => {
    expect(() => checkAssurance(pay, "key")).toThrow(
      'crypto policy "ns:payments" requires assurance "hardware" or higher; the node attested with "key"',
    );
    expect(() => checkAssurance(pay, "hardware")).not.toThrow();
    const billing = resolveCryptoPolicy(p, { trustDomain: TD, namespace: "billing" });
    expect(() => checkAssurance(billing, "token")).toThrow(/"coalition:alliance" requires assurance "key"/);
    expect(() => checkAssurance(billing, "key")).not.toThrow();
    expect(() => checkAssurance(billing, undefined)).toThrow(/attested with "none"/);
  });

  it("caps lifetimes to the rule's maximum", () => {
    expect(capTtl(pay, "x509", 7200)).toEqual({ ttlS: 3600, capped: true, rule: `td:${TD}` });
    expect(capTtl(pay, "x509", 60)).toEqual({ ttlS: 60, capped: false, rule: `td:${TD}` });
    expect(capTtl(pay, "jwt", 3600)).toEqual({ ttlS: 600, capped: true, rule: "default" });
  });

  it("refuses a tunnel mode the rule does not allow", () => {
    expect(() => checkTunnelMode(pay, "mtls")).toThrow(
      'crypto policy "coalition:alliance" forbids tunnel mode mtls (allowed: pq)',
    );
    expect(() => checkTunnelMode(pay, "pq")).not.toThrow();
  });
});

describe("crypto policy: releasability", () => {
  const p = parseCryptoPolicy(doc);
  const q = (namespace: string | undefined, peer: string, direction: "ingress" | "egress") =>
    checkReleasable(p, {
      local: { trustDomain: TD, ...(namespace ? { namespace } : {}) },
      peer: { spiffeId: peer, trustDomain: new URL(peer).host },
      direction,
    });

  it("egress: a namespace's identities go only where releasable_to says", () => {
    expect(q("payments", "spiffe://partner.org/svc", "egress")).toEqual({ ok: true });
    const r = q("payments", "spiffe://far.org/svc", "egress");
    expect(r).toEqual({
      ok: false,
      reason:
        'crypto policy "ns:payments": identities of namespace "payments" of example.org are not releasable to far.org (releasable_to: partner.org); refusing spiffe://far.org/svc',
    });
    // the trust domain's rule (coalition) for namespaces without their own
    expect(q("billing", "spiffe://partner.org/svc", "egress")).toEqual({ ok: true });
    expect(q("billing", "spiffe://far.org/svc", "egress")).toMatchObject({
      ok: false,
      reason: expect.stringContaining(`crypto policy "td:${TD}"`),
    });
    expect(q(undefined, "spiffe://far.org/svc", "egress").ok).toBe(false);
    expect(q("open", "spiffe://far.org/svc", "egress")).toEqual({ ok: true });
  });

  it("ingress: a namespace accepts foreign identities only from accept_from", () => {
    expect(q("payments", "spiffe://partner.org/svc", "ingress")).toEqual({ ok: true });
    expect(q("open", "spiffe://partner.org/svc", "ingress")).toEqual({
      ok: false,
      reason:
        'crypto policy "ns:open": namespace "open" of example.org does not accept identities from partner.org (accept_from: none); refusing spiffe://partner.org/svc',
    });
    // no ingress restriction above the namespace: built-in accepts
    expect(q("billing", "spiffe://far.org/svc", "ingress")).toEqual({ ok: true });
  });

  it("a peer of the local trust domain crosses no edge; a peer outside its claimed domain is refused", () => {
    expect(q("open", `spiffe://${TD}/x`, "ingress")).toEqual({ ok: true });
    expect(
      checkReleasable(p, {
        local: { trustDomain: TD },
        peer: { spiffeId: "spiffe://far.org/x", trustDomain: "partner.org" },
        direction: "egress",
      }),
    ).toEqual({ ok: false, reason: "peer spiffe://far.org/x is not in trust domain partner.org" });
    expect(
      checkReleasable(p, {
        local: { trustDomain: TD },
        peer: { spiffeId: "not an id", trustDomain: "partner.org" },
        direction: "egress",
      }).ok,
    ).toBe(false);
  });

  it("bundles are published only to domains something is releasable to", () => {
    expect(mayPublishBundleTo(p, "partner.org")).toBe(true);
    // namespace "open" releases to "*"
    expect(mayPublishBundleTo(p, "far.org")).toBe(true);
    const strict = parseCryptoPolicy({
      trust_domain: TD,
      trust_domains: { [TD]: { releasable_to: ["partner.org"] } },
      namespaces: { payments: { releasable_to: [] } },
    });
    expect(mayPublishBundleTo(strict, "partner.org")).toBe(true);
    expect(mayPublishBundleTo(strict, "far.org")).toBe(false);
    expect(mayPublishBundleTo(parseCryptoPolicy({}), "far.org")).toBe(true);
  });
});

describe("crypto policy: parsing refuses with the path of the offending setting", () => {
  const cases: [string, unknown, string][] = [
    ["not a mapping", [], "must be a mapping (got list)"],
    ["unknown top key", { namespace: {} }, '"namespace": unknown key'],
    ["format", { format: 2 }, "format: unsupported format 2"],
    ["trust_domain", { trust_domain: "spiffe://x" }, "trust_domain:"],
    [
      "coalition name",
      { coalitions: { Bad_Name: ["a.org"] } },
      "coalitions.Bad_Name: coalition name must be",
    ],
    ["empty coalition", { coalitions: { c: [] } }, "coalitions.c: must be a non-empty list"],
    ["bad member", { coalitions: { c: ["a.org/path"] } }, "coalitions.c[0]:"],
    [
      "duplicate member",
      { coalitions: { c: ["a.org", "a.org"] } },
      'coalitions.c[1]: duplicate trust domain "a.org"',
    ],
    [
      "rule for undeclared coalition",
      { coalition_rules: { ghost: {} } },
      'coalition_rules.ghost: coalition "ghost" is not declared',
    ],
    [
      "ambiguous coalitions",
      {
        coalitions: { a: ["x.org"], b: ["x.org"] },
        coalition_rules: { a: { min_assurance: "key" }, b: { min_assurance: "token" } },
      },
      'coalition_rules.b: coalitions "a" and "b" both have a rule and share "x.org"',
    ],
    [
      "uppercase domain",
      { trust_domains: { "Example.org": {} } },
      "trust_domains.Example.org: trust domain characters are limited to lowercase",
    ],
    ["bad namespace", { namespaces: { "-x": {} } }, "namespaces.-x: namespace must be"],
    [
      "unknown rule field",
      { namespaces: { a: { max_ttl: "1h" } } },
      "namespaces.a.max_ttl: unknown rule field",
    ],
    ["rule not a mapping", { namespaces: { a: "strict" } }, "namespaces.a: must be a mapping (got string)"],
    [
      "empty allowed",
      { namespaces: { a: { signature_algorithms: { allowed: [] } } } },
      "namespaces.a.signature_algorithms.allowed: must be a non-empty list",
    ],
    [
      "unknown algorithm",
      { namespaces: { a: { signature_algorithms: { allowed: ["rsa-2048"] } } } },
      'namespaces.a.signature_algorithms.allowed[0]: unknown signature algorithm "rsa-2048"',
    ],
    [
      "composite not supported",
      { namespaces: { a: { signature_algorithms: { allowed: ["ml-dsa-65+ec-p256"] } } } },
      "composite ML-DSA + classical is not supported yet",
    ],
    [
      "duplicate algorithm",
      { namespaces: { a: { signature_algorithms: { allowed: ["ed25519", "ed25519"] } } } },
      'namespaces.a.signature_algorithms.allowed[1]: duplicate "ed25519"',
    ],
    [
      "default not allowed",
      { namespaces: { a: { signature_algorithms: { allowed: ["ml-dsa-65"], default: "ec-p256" } } } },
      "namespaces.a.signature_algorithms.default: ECDSA-P256 is not among the allowed algorithms (ML-DSA-65)",
    ],
    [
      "unknown signature_algorithms field",
      { namespaces: { a: { signature_algorithms: { allowed: ["ed25519"], prefer: "ed25519" } } } },
      "namespaces.a.signature_algorithms.prefer: unknown field",
    ],
    [
      "tunnel mode",
      { default: { tunnel_modes: ["tls12"] } },
      'default.tunnel_modes[0]: unknown tunnel mode "tls12"',
    ],
    [
      "empty tunnel modes",
      { default: { tunnel_modes: [] } },
      "default.tunnel_modes: must be a non-empty list",
    ],
    [
      "bad duration",
      { default: { max_x509_svid_ttl: "forever" } },
      'default.max_x509_svid_ttl: invalid duration "forever"',
    ],
    [
      "too long",
      { default: { max_jwt_svid_ttl: "400d" } },
      "default.max_jwt_svid_ttl: must be between 1s and 366d",
    ],
    [
      "sub-second",
      { default: { max_jwt_svid_ttl: "500ms" } },
      "default.max_jwt_svid_ttl: must be between 1s and 366d",
    ],
    [
      "duration type",
      { default: { max_jwt_svid_ttl: true } },
      "default.max_jwt_svid_ttl: must be a duration",
    ],
    [
      "assurance",
      { default: { min_assurance: "tpm" } },
      'default.min_assurance: unknown assurance level "tpm" (use token < key < hardware)',
    ],
    ["releasable_to type", { default: { releasable_to: "*" } }, "default.releasable_to: must be a list"],
    [
      "unknown coalition target",
      { default: { accept_from: ["coalition:nope"] } },
      'default.accept_from[0]: coalition "nope" is not declared',
    ],
    ["bad target", { default: { releasable_to: ["spiffe://a.org"] } }, "default.releasable_to[0]:"],
    [
      "target type",
      { default: { releasable_to: [7] } },
      "default.releasable_to[0]: must be a string (got number)",
    ],
  ];
  for (const [name, input, message] of cases) {
    it(name, () => {
      let err: unknown;
      try {
        parseCryptoPolicy(input);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as Error).message).toContain(message);
    });
  }

  it("bad YAML and duplicate keys", () => {
    expect(() => parseCryptoPolicyText("namespaces: [", "p.yaml")).toThrow(/^p\.yaml: /);
    expect(() => parseCryptoPolicyText("default: {}\ndefault: {}\n", "p.yaml")).toThrow(ValidationError);
  });
});
