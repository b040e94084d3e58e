/**
 * Ingress releasability in qhx_authz (issue 9): a peer whose trust domain the crypto policy's
 * `accept_from` does not accept is refused with 403 `not releasable: …` before policy evaluation —
 * through the real filter module in QHx's proxy-wasm host, for the connection identity, XFCC and
 * JWT-SVIDs, and through `qhx filter config --crypto-policy` in a real child process.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkReleasable, parseCryptoPolicy } from "../../host/core/crypto-policy.ts";
import {
  decodeFilterConfig,
  encodeFilterConfig,
  type FilterConfigInput,
  type FilterReleasability,
  filterReleasability,
} from "../../host/filter/config.ts";
import { filterConfigDocument } from "../../host/cli/filter.ts";
import { qhx, tmpDir } from "../helpers/cli.ts";
import { mint, plugin, policySet, reason, request, testKeys } from "./helpers.ts";

const ALLOW_ALL = `@id("all") permit(principal, action, resource);`;
const LOCAL = "spiffe://example.org/ns/payments/sa/api";
const PARTNER = "spiffe://partner.org/ns/payments/sa/api";
const ROGUE = "spiffe://rogue.org/ns/payments/sa/api";
const jwtOptions = { jwtHeader: "authorization", audiences: ["payments"] };

async function config(
  releasability: FilterReleasability | undefined,
  options: FilterConfigInput["options"] = {},
): Promise<string> {
  const k = testKeys().filterKeys;
  return encodeFilterConfig({
    policy: await policySet(ALLOW_ALL),
    bundles: { "example.org": k, "partner.org": k, "rogue.org": k },
    options,
    ...(releasability ? { releasability } : {}),
  });
}

const bearer = (t: string): [string, string][] => [["authorization", `Bearer ${t}`]];

describe("qhx_authz ingress releasability", () => {
  const partnerOnly: FilterReleasability = {
    localTrustDomain: "example.org",
    acceptFrom: ["partner.org"],
    rule: 'crypto policy "ns:payments" accept_from: partner.org',
  };

  it("connection identity: local and accepted foreign peers continue, others get 403 with the reason", async () => {
    const p = plugin(await config(partnerOnly));
    expect(request(p, { peer: LOCAL }).localResponse).toBeUndefined();
    expect(request(p, { peer: PARTNER }).localResponse).toBeUndefined();
    const s = request(p, { peer: ROGUE });
    expect(s.localResponse?.status).toBe(403);
    expect(reason(s)).toBe(
      'not releasable: trust domain rogue.org is not accepted (crypto policy "ns:payments" accept_from: partner.org)',
    );
    expect(p.metrics.get("qhx_authz.denied")?.value).toBe(1n);
    expect(p.metrics.get("qhx_authz.allowed")?.value).toBe(2n);
    // a trust domain that merely starts or ends like an accepted one is not accepted
    for (const td of ["partner.or", "partner.org2", "xpartner.org", "example.org.evil"]) {
      const r = request(p, { peer: `spiffe://${td}/sa/x` });
      expect(r.localResponse?.status).toBe(403);
      expect(reason(r)).toMatch(new RegExp(`^not releasable: trust domain ${td.replace(/\./g, "\\.")} `));
    }
  });

  it("JWT-SVID subject: refused by its trust domain, after the token verifies", async () => {
    const p = plugin(await config(partnerOnly, jwtOptions));
    for (const which of ["es", "ml"] as const) {
      expect(
        request(p, { headers: bearer(await mint(which, { sub: LOCAL })) }).localResponse,
      ).toBeUndefined();
      expect(
        request(p, { headers: bearer(await mint(which, { sub: PARTNER })) }).localResponse,
      ).toBeUndefined();
      const s = request(p, { headers: bearer(await mint(which, { sub: ROGUE })) });
      expect(s.localResponse?.status).toBe(403);
      expect(reason(s)).toMatch(/^not releasable: trust domain rogue\.org is not accepted \(crypto policy/);
    }
    // the JWT subject is the principal even over an accepted connection peer
    const s = request(p, { peer: PARTNER, headers: bearer(await mint("es", { sub: ROGUE })) });
    expect(reason(s)).toMatch(/^not releasable: trust domain rogue\.org/);
    // a bad token is still refused as such (verification comes first)
    const [h, , sig] = (await mint("es", { sub: ROGUE })).split(".");
    const forged = Buffer.from(JSON.stringify({ sub: LOCAL })).toString("base64url");
    expect(reason(request(p, { headers: bearer(`${h}.${forged}.${sig}`) }))).toMatch(/^jwt: /);
    expect(p.metrics.get("qhx_authz.denied")?.value).toBe(4n);
  });

  it("XFCC identity is checked the same way", async () => {
    const p = plugin(await config(partnerOnly, { identitySource: "xfcc" }));
    const xfcc = (id: string): [string, string][] => [
      ["x-forwarded-client-cert", `By=spiffe://example.org/gw;URI=${id}`],
    ];
    expect(request(p, { headers: xfcc(PARTNER) }).localResponse).toBeUndefined();
    expect(reason(request(p, { headers: xfcc(ROGUE) }))).toMatch(/^not releasable: trust domain rogue\.org/);
  });

  it('"*" accepts every trust domain; an empty list only the local one; no section behaves as before', async () => {
    const any = plugin(await config({ localTrustDomain: "example.org", acceptFrom: "*" }));
    for (const peer of [LOCAL, PARTNER, ROGUE]) expect(request(any, { peer }).localResponse).toBeUndefined();
    const none = plugin(await config({ localTrustDomain: "example.org", acceptFrom: [] }));
    expect(request(none, { peer: LOCAL }).localResponse).toBeUndefined();
    expect(reason(request(none, { peer: PARTNER }))).toBe(
      "not releasable: trust domain partner.org is not accepted (policy)",
    );
    const old = await config(undefined);
    expect(decodeFilterConfig(old).releasability).toBeUndefined();
    const bytes = Buffer.from((JSON.parse(old) as { config: string }).config, "base64");
    expect(bytes.readUInt32LE(4)).toBe(1); // version 1: loads in filters that predate the section
    const p = plugin(old);
    for (const peer of [LOCAL, PARTNER, ROGUE]) expect(request(p, { peer }).localResponse).toBeUndefined();
    // and policies still decide after an accepted peer: the default deny is untouched
    const strict = plugin(
      encodeFilterConfig({
        policy: await policySet(
          `@id("local") permit(principal in TrustDomain::"example.org", action, resource);`,
        ),
        bundles: {},
        releasability: { localTrustDomain: "example.org", acceptFrom: ["partner.org"] },
      }),
    );
    expect(request(strict, { peer: LOCAL }).localResponse).toBeUndefined();
    expect(reason(request(strict, { peer: PARTNER }))).toBe("denied: no policy permits the request");
    expect(reason(request(strict, { peer: ROGUE }))).toMatch(/^not releasable: /);
  });

  it("the encoder validates the section; the filter and decoder refuse malformed sections", async () => {
    const bad: unknown[] = [
      { localTrustDomain: "Example.org", acceptFrom: [] },
      { localTrustDomain: "example.org", acceptFrom: ["bad domain"] },
      { localTrustDomain: "example.org", acceptFrom: ["a.org", "a.org"] },
      { localTrustDomain: "example.org", acceptFrom: "all" },
      { localTrustDomain: "example.org", acceptFrom: [], rule: "line\nbreak" },
      "example.org",
    ];
    for (const r of bad) {
      await expect(config(r as FilterReleasability)).rejects.toMatchObject({
        code: "QHX_FILTER_CONFIG_INVALID",
      });
    }
    const good = await config(partnerOnly);
    expect(decodeFilterConfig(good).releasability).toEqual({
      localTrustDomain: "example.org",
      acceptFrom: ["partner.org"],
      rule: partnerOnly.rule,
    });
    const raw = Buffer.from((JSON.parse(good) as { config: string }).config, "base64");
    const wrap = (b: Buffer) =>
      JSON.stringify({ format: "qhx-authz-config/1", config: b.toString("base64") });
    // the section is last: "partner.org" is the final string; corrupt it, truncate it, set a bad mode
    const corrupt = Buffer.from(raw);
    corrupt[corrupt.length - 1] = 0x20; // "partner.or " — not a trust domain
    const truncated = raw.subarray(0, raw.length - 3);
    const lenAt = raw.length - 4 - "partner.org".length - 4 - 4 - Buffer.byteLength(partnerOnly.rule!) - 4;
    const badMode = Buffer.from(raw);
    expect(badMode.readUInt32LE(lenAt)).toBe(0);
    badMode.writeUInt32LE(7, lenAt);
    const starWithList = Buffer.from(raw);
    starWithList.writeUInt32LE(1, lenAt);
    const v3 = Buffer.from(raw);
    v3.writeUInt32LE(3, 4);
    const v1WithSection = Buffer.from(raw);
    v1WithSection.writeUInt32LE(1, 4);
    const logs: string[] = [];
    const p = plugin(good, undefined, logs);
    for (const [b, why] of [
      [corrupt, /invalid trust domain/],
      [truncated, /truncated|out of range/],
      [badMode, /bad (releasability )?mode/],
      [starWithList, /with a list/],
      [v3, /version/],
      [v1WithSection, /trailing bytes/],
    ] as const) {
      expect(() => decodeFilterConfig(wrap(b))).toThrow(why);
      expect(p.configure(wrap(b))).toBe(false);
      expect(logs.at(-1)).toMatch(why);
    }
    // the previous configuration stays in force
    expect(reason(request(p, { peer: ROGUE }))).toMatch(/^not releasable: /);
    expect(request(p, { peer: PARTNER }).localResponse).toBeUndefined();
  });
});

describe("releasability from a crypto policy", () => {
  const policy = parseCryptoPolicy({
    format: 1,
    trust_domain: "example.org",
    coalitions: { alliance: ["a.test", "b.test"] },
    default: { accept_from: ["partner.org"] },
    namespaces: {
      payments: { accept_from: ["coalition:alliance", "c.test"] },
      open: { accept_from: ["*"] },
      closed: { accept_from: [] },
    },
  });
  const peers = ["example.org", "partner.org", "a.test", "b.test", "c.test", "rogue.org"];

  it("the filter decides exactly as checkReleasable(…, ingress) for each namespace", async () => {
    for (const namespace of [undefined, "payments", "open", "closed", "unlisted"]) {
      const local = { trustDomain: "example.org", ...(namespace ? { namespace } : {}) };
      const p = plugin(await config(filterReleasability(policy, local)));
      for (const td of peers) {
        const spiffeId = `spiffe://${td}/ns/x/sa/y`;
        const want = checkReleasable(policy, {
          local,
          peer: { spiffeId, trustDomain: td },
          direction: "ingress",
        });
        const s = request(p, { peer: spiffeId });
        expect({ namespace, td, ok: s.localResponse === undefined }).toEqual({ namespace, td, ok: want.ok });
        if (!want.ok)
          expect(reason(s)).toMatch(new RegExp(`^not releasable: trust domain ${td.replace(".", "\\.")} `));
      }
    }
    expect(filterReleasability(policy, { trustDomain: "example.org", namespace: "payments" })).toEqual({
      localTrustDomain: "example.org",
      acceptFrom: ["a.test", "b.test", "c.test"],
      rule: 'crypto policy "ns:payments" accept_from: coalition:alliance, c.test',
    });
  });
});

describe("qhx filter config --crypto-policy", () => {
  let dir: string;
  let policyFile: string;
  let bundleFile: string;
  let cryptoFile: string;

  beforeAll(async () => {
    dir = tmpDir("qhx-filter-rel-");
    const set = await policySet(ALLOW_ALL);
    policyFile = path.join(dir, "policy.json");
    fs.writeFileSync(
      policyFile,
      JSON.stringify({
        format: "qhx-policy-version/1",
        version: 1,
        digest: "0".repeat(64),
        engine: set.engine,
        program: set.program,
        policies: { all: ALLOW_ALL },
      }),
    );
    const jwk = testKeys().es.publicKey.export({ format: "jwk" });
    bundleFile = path.join(dir, "bundle.json");
    fs.writeFileSync(bundleFile, JSON.stringify({ keys: [{ ...jwk, use: "jwt-svid", kid: "es-1" }] }));
    cryptoFile = path.join(dir, "crypto.json");
    fs.writeFileSync(
      cryptoFile,
      JSON.stringify({
        format: 1,
        trust_domain: "example.org",
        coalitions: {},
        coalition_rules: {},
        trust_domains: {},
        default: { accept_from: [] },
        namespaces: { payments: { accept_from: ["partner.org"] } },
      }),
    );
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("renders a configuration that enforces accept_from (real CLI process)", async () => {
    const r = qhx([
      "filter",
      "config",
      "--format",
      "raw",
      "--policy-version",
      policyFile,
      "--bundle",
      `example.org=${bundleFile}`,
      "--crypto-policy",
      cryptoFile,
      "--crypto-namespace",
      "payments",
    ]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const cfg = r.stdout.trim();
    expect(decodeFilterConfig(cfg).releasability).toMatchObject({
      localTrustDomain: "example.org",
      acceptFrom: ["partner.org"],
    });
    const p = plugin(cfg);
    expect(request(p, { peer: LOCAL }).localResponse).toBeUndefined();
    expect(request(p, { peer: PARTNER }).localResponse).toBeUndefined();
    expect(reason(request(p, { peer: ROGUE }))).toBe(
      'not releasable: trust domain rogue.org is not accepted (crypto policy "ns:payments" accept_from: partner.org)',
    );
  });

  it("without --crypto-namespace the wider rules apply; bad inputs are refused", async () => {
    const base = {
      format: "raw" as const,
      output: "yaml" as const,
      policyVersion: policyFile,
      bundle: [`example.org=${bundleFile}`],
    };
    const p = plugin((await filterConfigDocument({ ...base, cryptoPolicy: cryptoFile })).trim());
    expect(request(p, { peer: LOCAL }).localResponse).toBeUndefined();
    expect(reason(request(p, { peer: PARTNER }))).toBe(
      'not releasable: trust domain partner.org is not accepted (crypto policy "default" accept_from: none)',
    );
    // no --crypto-policy: no section
    expect(decodeFilterConfig((await filterConfigDocument(base)).trim()).releasability).toBeUndefined();
    await expect(filterConfigDocument({ ...base, cryptoNamespace: "payments" })).rejects.toThrow(
      /--crypto-namespace needs --crypto-policy/,
    );
    await expect(
      filterConfigDocument({ ...base, cryptoPolicy: path.join(dir, "missing.json") }),
    ).rejects.toThrow(/cannot read/);
    const invalid = path.join(dir, "invalid.json");
    fs.writeFileSync(
      invalid,
      JSON.stringify({ format: 1, namespaces: { x: { accept_from: ["coalition:nope"] } } }),
    );
    await expect(filterConfigDocument({ ...base, cryptoPolicy: invalid })).rejects.toThrow();
    const noTd = path.join(dir, "no-td.json");
    fs.writeFileSync(noTd, JSON.stringify({ format: 1, default: { accept_from: [] } }));
    await expect(filterConfigDocument({ ...base, cryptoPolicy: noTd })).rejects.toThrow(/no trust_domain/);
    // --trust-domain supplies it
    const q = plugin(
      (await filterConfigDocument({ ...base, cryptoPolicy: noTd, trustDomain: "example.org" })).trim(),
    );
    expect(request(q, { peer: LOCAL }).localResponse).toBeUndefined();
    expect(reason(request(q, { peer: PARTNER }))).toMatch(/^not releasable: trust domain partner\.org/);
  });
});
