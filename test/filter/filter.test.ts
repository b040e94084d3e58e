import crypto from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ProxyWasmPlugin } from "../../host/wasm/proxy-wasm/host.ts";
import { ENV_HOST_FUNCTIONS } from "../../host/wasm/proxy-wasm/abi.ts";
import { mintJwtSvid } from "../../host/core/jwtsvid.ts";
import { encodeFilterConfig, filterKeyOf } from "../../host/filter/config.ts";
import {
  API,
  EVIL,
  FakeClock,
  OTHER,
  NOW_MS,
  configFor,
  filterWasm,
  mint,
  plugin,
  policySet,
  reason,
  request,
  testKeys,
} from "./helpers.ts";

// the project's tsconfig has no DOM lib: type the part of the WebAssembly global used here
interface WasmModuleApi {
  Module: (new (bytes: Uint8Array) => object) & {
    imports(m: object): { module: string; name: string; kind: string }[];
    exports(m: object): { name: string; kind: string }[];
  };
}
const WA = (globalThis as unknown as { WebAssembly: WasmModuleApi }).WebAssembly;

const SPEC_EXPORTS = [
  "proxy_abi_version_0_2_1",
  "proxy_on_memory_allocate",
  "proxy_on_context_create",
  "proxy_on_vm_start",
  "proxy_on_configure",
  "proxy_on_new_connection",
  "proxy_on_request_headers",
  "proxy_on_request_body",
  "proxy_on_response_headers",
  "proxy_on_done",
  "proxy_on_log",
  "proxy_on_delete",
  "proxy_on_tick",
  "proxy_on_http_call_response",
];

describe("qhx_authz module interface", () => {
  it("exports exactly the spec's callbacks and memory, imports only spec host functions", () => {
    const m = new WA.Module(filterWasm());
    const exports = WA.Module.exports(m);
    expect(
      exports
        .filter((e) => e.kind === "function")
        .map((e) => e.name)
        .sort(),
    ).toEqual([...SPEC_EXPORTS].sort());
    expect(exports.filter((e) => e.kind !== "function")).toEqual([{ name: "memory", kind: "memory" }]);
    const imports = WA.Module.imports(m);
    expect(imports.length).toBeGreaterThan(0);
    for (const i of imports) {
      expect(i.module).toBe("env");
      expect(i.kind).toBe("function");
      expect(ENV_HOST_FUNCTIONS as readonly string[]).toContain(i.name);
    }
    // no env.abort: AssemblyScript's abort is routed to a trap
    expect(imports.map((i) => i.name)).not.toContain("abort");
  });
});

describe("proxy-wasm bindings (filters/proxy-wasm) alone", () => {
  it("passthrough.wasm: the spec's callbacks, no imports, every stream continues", () => {
    const wasm = readFileSync(new URL("../../build/filters/passthrough.wasm", import.meta.url));
    const m = new WA.Module(wasm);
    expect(
      WA.Module.exports(m)
        .filter((e) => e.kind === "function")
        .map((e) => e.name)
        .sort(),
    ).toEqual([...SPEC_EXPORTS].sort());
    expect(WA.Module.imports(m)).toEqual([]);
    const p = ProxyWasmPlugin.create({ wasm, pluginConfiguration: "" });
    for (let i = 0; i < 100; i++) {
      const s = p.newHttpStream();
      expect(s.onRequestHeaders([[":method", "GET"]], false)).toBe("continue");
      expect(s.onRequestBody(new Uint8Array(10), true)).toBe("continue");
      expect(s.onResponseHeaders([[":status", "200"]], true)).toBe("continue");
      s.done();
      expect(s.deleted).toBe(true);
    }
    p.tick();
    expect(p.failed).toBe(false);
  });
});

describe("qhx_authz decisions (identity from the connection)", () => {
  it("allows a permitted identity and stamps the peer header", async () => {
    const p = plugin(await configFor());
    const s = request(p, { peer: API, headers: [["x-qhx-peer-id", "spoofed"]] });
    expect(s.localResponse).toBeUndefined();
    expect(s.requestPaused).toBe(false);
    expect(s.requestHeaders.filter(([k]) => k === "x-qhx-peer-id")).toEqual([["x-qhx-peer-id", API]]);
    s.done();
    expect(p.metrics.get("qhx_authz.allowed")?.value).toBe(1n);
    expect(p.metrics.get("qhx_authz.latency_us")?.samples?.length).toBe(1);
  });

  it("answers 403 naming the forbidding policy", async () => {
    const p = plugin(await configFor());
    const s = request(p, { peer: EVIL });
    expect(s.localResponse?.status).toBe(403);
    expect(s.localResponse?.details).toBe("qhx_authz_denied");
    expect(reason(s)).toBe("denied: forbidden by no-evil");
    expect(new TextDecoder().decode(s.localResponse!.body)).toBe("denied: forbidden by no-evil\n");
    expect(p.metrics.get("qhx_authz.denied")?.value).toBe(1n);
  });

  it("denies by default when no policy permits", async () => {
    const p = plugin(await configFor());
    expect(reason(request(p, { peer: API, path: "/v2/pay" }))).toBe("denied: no policy permits the request");
    expect(reason(request(p, { peer: API, method: "DELETE" }))).toBe("denied: no policy permits the request");
    expect(reason(request(p, { peer: OTHER }))).toBe("denied: no policy permits the request");
  });

  it("uses the directory (labels as tags) and routes (Route resources)", async () => {
    const p = plugin(await configFor());
    expect(request(p, { peer: OTHER, method: "POST", path: "/v1/orders/7" }).localResponse).toBeUndefined();
    // same identity, a path under the shorter route only: resource.pathPrefix differs
    expect(request(p, { peer: OTHER, method: "POST", path: "/v1/pay" }).localResponse?.status).toBe(403);
    // the label comes from the directory, not from the identity: API has no team tag
    expect(request(p, { peer: API, method: "POST", path: "/v1/orders/7" }).localResponse?.status).toBe(403);
  });

  it("reads the context headers subset", async () => {
    const p = plugin(await configFor());
    const s = request(p, { peer: API, headers: [["x-qhx-tenant", "blocked"]] });
    expect(reason(s)).toBe("denied: forbidden by tenant-guard");
    expect(request(p, { peer: API, headers: [["x-qhx-tenant", "ok"]] }).localResponse).toBeUndefined();
  });

  it("denies a missing or malformed identity", async () => {
    const p = plugin(await configFor());
    expect(reason(request(p, {}))).toBe("no peer identity");
    expect(reason(request(p, { peer: "" }))).toBe("no peer identity");
    for (const bad of [
      "example.org/api",
      "spiffe://Example.org/x",
      "spiffe://example.org/a//b",
      "spiffe://example.org/x?q",
      "https://example.org/x",
    ]) {
      expect(reason(request(p, { peer: bad }))).toBe("invalid peer identity");
    }
    expect(p.metrics.get("qhx_authz.allowed")?.value).toBe(0n);
  });

  it("never takes the identity from x-forwarded-client-cert unless configured", async () => {
    const p = plugin(await configFor());
    const s = request(p, { headers: [["x-forwarded-client-cert", `URI=${API}`]] });
    expect(reason(s)).toBe("no peer identity");
  });

  it("denies malformed request lines", async () => {
    const p = plugin(await configFor());
    expect(reason(request(p, { peer: API, method: "get" }))).toBe("malformed request (:method)");
    expect(reason(request(p, { peer: API, authority: "" }))).toBe("malformed request (:authority)");
    expect(reason(request(p, { peer: API, authority: "[::1" }))).toBe("malformed request (:authority)");
    expect(reason(request(p, { peer: API, authority: "a b" }))).toBe("malformed request (:authority)");
  });
});

describe("qhx_authz memory", () => {
  it("does not grow per request: host buffers live in the per-callback scratch region", async () => {
    const p = plugin(await configFor({ options: { jwtHeader: "authorization", audiences: ["payments"] } }));
    const token = await mint("ml");
    const memory = () => (p.exports.memory as { buffer: ArrayBuffer }).buffer.byteLength;
    const burst = (n: number) => {
      for (let i = 0; i < n; i++) {
        const s = request(p, {
          peer: i % 2 ? API : EVIL,
          path: `/v1/item/${i}`,
          headers: i % 3 ? [["authorization", `Bearer ${token}`]] : [["x-request-id", `r-${i}`]],
        });
        s.done();
      }
    };
    burst(300);
    const before = memory();
    burst(3000);
    expect(memory()).toBe(before);
    expect(p.failed).toBe(false);
  });
});

describe("qhx_authz with x-forwarded-client-cert", () => {
  it("takes URI= of the last element", async () => {
    const p = plugin(await configFor({ options: { identitySource: "xfcc" } }));
    const xfcc = `By=spiffe://example.org/gw;URI=${EVIL},By=spiffe://example.org/x;Hash=ab;Subject="CN=a,O=b";URI=${API}`;
    expect(request(p, { headers: [["x-forwarded-client-cert", xfcc]] }).localResponse).toBeUndefined();
    expect(reason(request(p, { headers: [["x-forwarded-client-cert", `URI="${EVIL}"`]] }))).toBe(
      "denied: forbidden by no-evil",
    );
    // the connection property is not used in this mode
    expect(reason(request(p, { peer: API }))).toBe("no peer identity");
  });

  it("denies malformed headers", async () => {
    const p = plugin(await configFor({ options: { identitySource: "xfcc" } }));
    for (const bad of ['URI="unterminated', "Hash=ab", "URI", `Subject="x";By=y`]) {
      expect(reason(request(p, { headers: [["x-forwarded-client-cert", bad]] }))).toMatch(
        /^malformed peer identity/,
      );
    }
    expect(reason(request(p, { headers: [["x-forwarded-client-cert", "URI=not-spiffe"]] }))).toBe(
      "invalid peer identity",
    );
  });
});

describe("qhx_authz JWT-SVIDs", () => {
  const jwtOptions = { jwtHeader: "authorization", audiences: ["payments"] };

  it("accepts ES256 and ML-DSA-65 JWT-SVIDs; the subject is the principal", async () => {
    const p = plugin(await configFor({ options: jwtOptions }));
    for (const alg of ["es", "ml"] as const) {
      const token = await mint(alg, { sub: API });
      const s = request(p, { peer: EVIL, headers: [["authorization", `Bearer ${token}`]] });
      expect(s.localResponse, alg).toBeUndefined();
      expect(s.requestHeaders.find(([k]) => k === "x-qhx-peer-id")?.[1]).toBe(API);
      const evil = await mint(alg, { sub: EVIL });
      expect(reason(request(p, { peer: API, headers: [["authorization", `Bearer ${evil}`]] }))).toBe(
        "denied: forbidden by no-evil",
      );
    }
  });

  it("accepts ML-DSA-44 and ML-DSA-87 JWT-SVIDs, and pins the alg to the key", async () => {
    const pairs = {
      "ML-DSA-44": crypto.generateKeyPairSync("ml-dsa-44"),
      "ML-DSA-87": crypto.generateKeyPairSync("ml-dsa-87"),
    } as const;
    const p = plugin(
      encodeFilterConfig({
        policy: await policySet(),
        bundles: {
          "example.org": Object.entries(pairs).map(([alg, k]) => filterKeyOf(`k-${alg}`, k.publicKey)!),
        },
        options: jwtOptions,
      }),
    );
    for (const [alg, k] of Object.entries(pairs) as [
      keyof typeof pairs,
      (typeof pairs)[keyof typeof pairs],
    ][]) {
      const token = await mintJwtSvid({
        spiffeId: API,
        audience: "payments",
        ttlSeconds: 300,
        privateKey: k.privateKey,
        kid: `k-${alg}`,
        alg,
        now: new Date(NOW_MS),
      });
      expect(
        request(p, { headers: [["authorization", `Bearer ${token}`]] }).localResponse,
        alg,
      ).toBeUndefined();
      // the same token presented under the other key's kid: the alg no longer fits the key
      const other = alg === "ML-DSA-44" ? "k-ML-DSA-87" : "k-ML-DSA-44";
      const [h, rest] = [token.slice(0, token.indexOf(".")), token.slice(token.indexOf("."))];
      const header = { ...JSON.parse(Buffer.from(h, "base64url").toString()), kid: other };
      const swapped = Buffer.from(JSON.stringify(header)).toString("base64url") + rest;
      expect(reason(request(p, { headers: [["authorization", `Bearer ${swapped}`]] }))).toBe(
        "jwt: alg does not fit the key",
      );
    }
  });

  it("rejects tampered, expired, not-yet-valid, foreign and malformed tokens", async () => {
    const clock = new FakeClock();
    const p = plugin(await configFor({ options: jwtOptions }), clock);
    const bearer = (t: string): [string, string][] => [["authorization", `Bearer ${t}`]];
    for (const alg of ["es", "ml"] as const) {
      const good = await mint(alg);
      const [h, c, sig] = good.split(".");
      const claims = JSON.parse(Buffer.from(c!, "base64url").toString());
      const forged = Buffer.from(JSON.stringify({ ...claims, sub: OTHER })).toString("base64url");
      expect(reason(request(p, { headers: bearer(`${h}.${forged}.${sig}`) }))).toBe("jwt: bad signature");
      const flipped = sig!.slice(0, 10) + (sig![10] === "A" ? "B" : "A") + sig!.slice(11);
      expect(reason(request(p, { headers: bearer(`${h}.${c}.${flipped}`) }))).toMatch(
        /^jwt: (bad|malformed) signature/,
      );
      const expired = await mint(alg, { ttl: 60, now: clock.ms - 120_000 });
      expect(reason(request(p, { headers: bearer(expired) }))).toBe("jwt: expired");
      const future = await mint(alg, { now: clock.ms + 3_600_000 });
      expect(reason(request(p, { headers: bearer(future) }))).toBe("jwt: not yet valid");
      expect(reason(request(p, { headers: bearer(await mint(alg, { audience: "other" })) }))).toBe(
        "jwt: audience not accepted",
      );
      expect(reason(request(p, { headers: bearer(await mint(alg, { sub: "spiffe://other.org/x" })) }))).toBe(
        "jwt: no key for kid in the trust domain's bundle",
      );
    }
    expect(reason(request(p, { headers: [["authorization", "Basic abc"]] }))).toBe(
      "jwt: authorization is not a Bearer token",
    );
    for (const bad of ["a.b", "a.b.c.d", "!!.e30.x", "e30.e30.x"]) {
      expect(reason(request(p, { peer: API, headers: bearer(bad) }))).toMatch(/^jwt: /);
    }
    const none = `${Buffer.from('{"alg":"none","kid":"es-1"}').toString("base64url")}.${Buffer.from("{}").toString("base64url")}.`;
    expect(reason(request(p, { headers: bearer(none) }))).toBe("jwt: alg not allowed");
  });

  it("caches verified tokens until exp, and a configuration swap empties the cache", async () => {
    const clock = new FakeClock();
    const cfg = await configFor({ options: jwtOptions });
    const p = plugin(cfg, clock);
    const token = await mint("ml", { ttl: 60 });
    const bearer: [string, string][] = [["authorization", `Bearer ${token}`]];
    expect(request(p, { headers: bearer }).localResponse).toBeUndefined();
    expect(request(p, { headers: bearer }).localResponse).toBeUndefined();
    // same signature (same cache slot), different claims: a cache hit needs the whole token to match
    const [h, c, sig] = token.split(".");
    const claims = JSON.parse(Buffer.from(c!, "base64url").toString());
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...claims, sub: EVIL })).toString("base64url")}.${sig}`;
    expect(reason(request(p, { headers: [["authorization", `Bearer ${forged}`]] }))).toBe(
      "jwt: bad signature",
    );
    expect(request(p, { headers: bearer }).localResponse).toBeUndefined();
    clock.ms += 200_000; // past exp + leeway: the cached entry must not keep it alive
    expect(reason(request(p, { headers: bearer }))).toBe("jwt: expired");
    clock.ms -= 200_000;
    // new bundle without the ML-DSA key: the cached verification must not survive the swap
    const withoutMl = encodeFilterConfig({
      policy: await policySet(),
      bundles: { "example.org": [testKeys().filterKeys[0]!] },
      options: jwtOptions,
    });
    expect(p.configure(withoutMl)).toBe(true);
    expect(reason(request(p, { headers: bearer }))).toBe("jwt: no key for kid in the trust domain's bundle");
  });

  it("requires a token when configured, falls back to the peer otherwise", async () => {
    const required = plugin(await configFor({ options: { ...jwtOptions, jwtRequired: true } }));
    expect(reason(request(required, { peer: API }))).toBe("jwt: missing JWT-SVID");
    const optional = plugin(await configFor({ options: jwtOptions }));
    expect(request(optional, { peer: API }).localResponse).toBeUndefined();
    // jwtPrincipal false: the token is verified but the connection identity decides
    const peerDecides = plugin(await configFor({ options: { ...jwtOptions, jwtPrincipal: false } }));
    const token = await mint("es", { sub: API });
    expect(
      reason(request(peerDecides, { peer: EVIL, headers: [["authorization", `Bearer ${token}`]] })),
    ).toBe("denied: forbidden by no-evil");
    // a custom header carries the bare token
    const custom = plugin(await configFor({ options: { jwtHeader: "x-jwt-svid", audiences: ["payments"] } }));
    expect(request(custom, { headers: [["x-jwt-svid", token]] }).localResponse).toBeUndefined();
  });
});

describe("qhx_authz configuration swaps", () => {
  it("applies a policy update without restart; a bad update keeps the previous one", async () => {
    const logs: string[] = [];
    const p = plugin(await configFor(), new FakeClock(), logs);
    expect(request(p, { peer: API }).localResponse).toBeUndefined();
    const stricter = encodeFilterConfig({
      policy: await policySet(
        `@id("only-web") permit(principal in Namespace::"example.org/web", action, resource);`,
      ),
      bundles: {},
    });
    expect(p.configure(stricter)).toBe(true);
    expect(reason(request(p, { peer: API }))).toBe("denied: no policy permits the request");
    expect(request(p, { peer: OTHER, path: "/anything" }).localResponse).toBeUndefined();
    for (const bad of [
      "",
      "{}",
      "not json",
      '{"format":"qhx-authz-config/1","config":"!!"}',
      '{"format":"qhx-authz-config/1","config":"AAAA"}',
    ]) {
      expect(p.configure(bad)).toBe(false);
      expect(p.failed).toBe(false);
      expect(request(p, { peer: OTHER, path: "/anything" }).localResponse).toBeUndefined();
    }
    expect(logs.some((l) => l.includes("configuration refused"))).toBe(true);
    expect(p.metrics.get("qhx_authz.config_rejected")?.value).toBe(5n);
    expect(p.metrics.get("qhx_authz.config_applied")?.value).toBe(2n);
  });

  it("refuses to start with a bad configuration", () => {
    expect(() => plugin('{"format":"qhx-authz-config/1","config":""}')).toThrow();
  });
});

describe("qhx_authz failure", () => {
  it("fails closed on a trap: 503 now and for every later stream", async () => {
    const p = plugin(await configFor({ options: { debugTrap: true } }));
    expect(request(p, { peer: API }).localResponse).toBeUndefined();
    const s = request(p, { peer: API, headers: [["x-qhx-debug-trap", "1"]] });
    expect(s.localResponse?.status).toBe(503);
    expect(p.failed).toBe(true);
    expect(request(p, { peer: API }).localResponse?.status).toBe(503);
  });

  it("answers 503 on an internal error (no usable clock) and counts it", async () => {
    const p = plugin(await configFor(), { now: () => 0 } as FakeClock);
    const s = request(p, { peer: API });
    expect(s.localResponse?.status).toBe(503);
    expect(s.localResponse?.details).toBe("qhx_authz_error");
    expect(reason(s)).toBe("internal: no clock");
    expect(p.metrics.get("qhx_authz.errors")?.value).toBe(1n);
    expect(p.failed).toBe(false);
  });

  it("ignores the trap header unless the test option is set", async () => {
    const p = plugin(await configFor());
    expect(request(p, { peer: API, headers: [["x-qhx-debug-trap", "1"]] }).localResponse).toBeUndefined();
    expect(p.failed).toBe(false);
  });
});
