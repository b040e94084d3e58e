import crypto from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  decodeFilterConfig,
  encodeFilterConfig,
  filterKeyOf,
  WELL_KNOWN_STRINGS,
} from "../../host/filter/config.ts";
import { compilePolicies } from "../../host/policy/index.ts";
import { API, OTHER, configFor, plugin, policySet, request, testKeys } from "./helpers.ts";

describe("encodeFilterConfig / decodeFilterConfig", () => {
  it("round-trips options, directory, keys and the program", async () => {
    const text = await configFor({
      options: {
        identitySource: "xfcc",
        jwtHeader: "x-jwt",
        audiences: ["a", "b"],
        jwtRequired: true,
        leewaySeconds: 5,
      },
    });
    const d = decodeFilterConfig(text);
    expect(d.options).toMatchObject({
      identitySource: "xfcc",
      jwtHeader: "x-jwt",
      audiences: ["a", "b"],
      jwtRequired: true,
      jwtPrincipal: true,
      leewaySeconds: 5,
      reasonHeader: "x-qhx-authz-reason",
      peerHeader: "x-qhx-peer-id",
      routes: ["/v1/", "/v1/orders"],
      debugTrap: false,
    });
    const set = await policySet();
    expect(d.policies.map((p) => p.id)).toEqual(set.policyIds);
    expect(d.code).toEqual(set.program!.code);
    for (const s of WELL_KNOWN_STRINGS) expect(d.strings).toContain(s);
    // the program's strings keep their indices
    expect(d.strings.slice(0, set.program!.strings.length)).toEqual(set.program!.strings);
    expect(d.directory).toEqual([
      { spiffeId: OTHER, namespace: "web", assurance: "hardware", labels: { team: "frontend" } },
    ]);
    expect(d.keys.map((k) => [k.trustDomain, k.kid, k.alg, k.publicKey.length])).toEqual([
      ["example.org", "es-1", "ES256", 65],
      ["example.org", "ml-1", "ML-DSA-65", 1952],
    ]);
  });

  it("takes keys from TrustBundles, leaving out key types the filter cannot verify", async () => {
    const es = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey;
    const ed = crypto.generateKeyPairSync("ed25519").publicKey;
    const ml = crypto.generateKeyPairSync("ml-dsa-44").publicKey;
    const d = decodeFilterConfig(
      encodeFilterConfig({
        policy: await policySet(),
        bundles: [
          {
            trustDomain: "example.org",
            x509Authorities: [],
            jwtAuthorities: [
              { kid: "a", publicKey: es },
              { kid: "b", publicKey: ed },
              { kid: "c", publicKey: ml },
            ],
            sequence: 1,
          },
        ],
      }),
    );
    expect(d.keys.map((k) => [k.kid, k.alg])).toEqual([
      ["a", "ES256"],
      ["c", "ML-DSA-44"],
    ]);
    expect(filterKeyOf("x", ed)).toBeUndefined();
  });

  it("takes a signed policy version or a bare program", async () => {
    const set = await policySet();
    const fromSet = decodeFilterConfig(encodeFilterConfig({ policy: set, bundles: {} }));
    const version = { engine: "compiled" as const, program: set.program!, unsupported: [] };
    expect(decodeFilterConfig(encodeFilterConfig({ policy: version, bundles: {} }))).toEqual(fromSet);
    expect(decodeFilterConfig(encodeFilterConfig({ policy: set.program!, bundles: {} }))).toEqual(fromSet);
    expect(() =>
      encodeFilterConfig({ policy: { engine: "cedar", program: null, unsupported: [] }, bundles: {} }),
    ).toThrow(/cedar-wasm/);
  });

  it("refuses a policy set that needs cedar-wasm", async () => {
    const set = await compilePolicies({
      policies: {
        p: 'permit(principal, action, resource) when { decimal(context.s).lessThan(decimal("1.0")) };',
      },
    });
    expect(set.engine).toBe("cedar");
    expect(() => encodeFilterConfig({ policy: set, bundles: {} })).toThrow(
      /QHX_FILTER_POLICY_UNSUPPORTED|cedar-wasm/,
    );
    try {
      encodeFilterConfig({ policy: set, bundles: {} });
    } catch (e) {
      expect((e as { code: string }).code).toBe("QHX_FILTER_POLICY_UNSUPPORTED");
      expect(String(e)).toContain("decimal() on a non-literal argument");
    }
  });

  it("validates options, bundles and directory with the offending field", async () => {
    const policy = await policySet();
    const bad: [unknown, RegExp][] = [
      [{ options: { identitySource: "header" } }, /identitySource/],
      [{ options: { jwtHeader: "Authorization", audiences: ["a"] } }, /jwtHeader/],
      [{ options: { jwtHeader: "authorization" } }, /audiences/],
      [{ options: { jwtRequired: true } }, /jwtRequired/],
      [{ options: { leewaySeconds: 301 } }, /leewaySeconds/],
      [{ options: { routes: ["v1"] } }, /routes/],
      [{ options: { routes: ["/a", "/a"] } }, /routes/],
      [{ options: { reasonHeader: "bad header" } }, /reasonHeader/],
      [{ bundles: { "Bad.TD": [] } }, /trust domain/],
      [
        { bundles: { "example.org": [{ kid: "k", alg: "ES256", publicKey: new Uint8Array(64) }] } },
        /65 bytes/,
      ],
      [
        { bundles: { "example.org": [{ kid: "k", alg: "RS256", publicKey: new Uint8Array(65) }] } },
        /unsupported alg/,
      ],
      [{ bundles: { "example.org": [testKeys().filterKeys[0], testKeys().filterKeys[0]] } }, /duplicate kid/],
      [{ directory: [{ spiffeId: "nope", namespace: "x" }] }, /SPIFFE ID/],
      [{ directory: [{ spiffeId: API, namespace: "" }] }, /namespace/],
      [
        {
          directory: [
            { spiffeId: API, namespace: "a" },
            { spiffeId: API, namespace: "b" },
          ],
        },
        /duplicate/,
      ],
    ];
    for (const [extra, re] of bad) {
      expect(() => encodeFilterConfig({ policy, bundles: {}, ...(extra as object) })).toThrow(re);
    }
  });

  it("the filter verifies the program's code before using it", async () => {
    const set = await policySet();
    const good = await configFor();
    const p = plugin(good);
    const prog = set.program!;
    const childAt: number[] = [];
    for (let i = 0; i < prog.relocs.length; i += 2)
      if (prog.relocs[i + 1] === 1) childAt.push(prog.relocs[i]!);
    const broken = [
      // a child pointing at its own node or beyond (a cycle / forward reference)
      (code: number[]) => (code[childAt[0]!] = childAt[0]!),
      (code: number[]) => (code[childAt[1]!] = code.length + 5),
      // an unknown opcode at a policy body
      (code: number[]) => (code[prog.policies[0]!.body] = 99),
    ];
    for (const mutate of broken) {
      const code = [...prog.code];
      mutate(code);
      const cfg = encodeFilterConfig({ policy: { ...prog, code }, bundles: {} });
      expect(p.configure(cfg)).toBe(false);
    }
    const relocs = [...prog.relocs];
    relocs[1] = 9; // unknown relocation kind
    expect(p.configure(encodeFilterConfig({ policy: { ...prog, relocs }, bundles: {} }))).toBe(false);
    expect(p.failed).toBe(false);
    expect(request(p, { peer: API }).localResponse).toBeUndefined();
  });

  it("the decoder refuses what the filter refuses", async () => {
    const good = await configFor();
    const raw = Buffer.from(JSON.parse(good).config, "base64");
    const wrap = (b: Uint8Array) =>
      JSON.stringify({ format: "qhx-authz-config/1", config: Buffer.from(b).toString("base64") });
    const badMagic = Buffer.from(raw);
    badMagic[0] = 0;
    const cases = [
      "not json",
      "[]",
      JSON.stringify({ format: "qhx-authz-config/2", config: "" }),
      JSON.stringify({ format: "qhx-authz-config/1", config: "@@@@" }),
      JSON.stringify({ format: "qhx-authz-config/1", config: raw.toString("base64"), extra: 1 }),
      wrap(badMagic),
      wrap(raw.subarray(0, raw.length - 3)),
      wrap(Buffer.concat([raw, Buffer.from([0])])),
    ];
    const p = plugin(good);
    for (const c of cases) {
      expect(() => decodeFilterConfig(c), c.slice(0, 60)).toThrow();
      expect(p.configure(c), c.slice(0, 60)).toBe(false);
    }
    expect(p.failed).toBe(false);
    expect(decodeFilterConfig(good).policies.length).toBe(4);
  });
});
