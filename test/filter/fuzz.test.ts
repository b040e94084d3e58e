/**
 * Seeded fuzzing of everything the filter reads from the host: header maps (pseudo-headers, XFCC,
 * JWT headers), the peer property (arbitrary bytes) and the configuration buffer (mutated binaries).
 * The filter must never trap, must answer every request with continue or a 403, and must keep its
 * previous configuration whenever it refuses a new one.
 */
import { describe, expect, it } from "vitest";
import { FakeClock, API, configFor, mint, plugin, reason, request } from "./helpers.ts";
import { Gen } from "../policy/gen.ts";

const ALPHABET = 'abcXYZ019:/.,;="\\ %?#@[]-_~\u00e9\u4e2d\u{1f600}\t';

function junk(g: Gen, max: number): string {
  let s = "";
  for (let n = g.int(max); n > 0; n--) s += ALPHABET[g.int(ALPHABET.length)];
  return s;
}

function bytes(g: Gen, max: number): Uint8Array {
  return Uint8Array.from({ length: g.int(max) }, () => g.int(256));
}

describe("qhx_authz fuzzing", () => {
  it("header and property inputs never trap and always decide", async () => {
    const g = new Gen(0xf22);
    const token = await mint("ml");
    const es = await mint("es");
    for (const source of ["connection", "xfcc"] as const) {
      const p = plugin(
        await configFor({
          options: { identitySource: source, jwtHeader: "authorization", audiences: ["payments"] },
        }),
        new FakeClock(),
      );
      let allowed = 0;
      for (let i = 0; i < 1000; i++) {
        const headers: [string, string][] = [];
        const pick = g.int(8);
        if (pick !== 0)
          headers.push([":method", g.chance(0.7) ? g.pick(["GET", "POST", "HEAD"]) : junk(g, 10)]);
        if (pick !== 1)
          headers.push([":path", g.chance(0.7) ? g.pick(["/v1/pay", "/v1/orders/1?x", "/"]) : junk(g, 40)]);
        if (pick !== 2)
          headers.push([":authority", g.chance(0.7) ? g.pick(["api.example.org", "x:1"]) : junk(g, 30)]);
        for (let k = g.int(4); k > 0; k--) {
          headers.push([
            g.pick(["x-qhx-tenant", "user-agent", "content-type", "x-request-id", "x-y"]),
            junk(g, 30),
          ]);
        }
        if (g.chance(0.3)) {
          const t = g.pick([token, es, junk(g, 60)]);
          const mangled = g.chance(0.5)
            ? t
            : t.slice(0, g.int(t.length)) + junk(g, 5) + t.slice(g.int(t.length));
          headers.push(["authorization", g.chance(0.8) ? `Bearer ${mangled}` : mangled]);
        }
        if (source === "xfcc" && g.chance(0.8)) {
          headers.push(["x-forwarded-client-cert", g.chance(0.5) ? `Hash=1;URI=${API}` : junk(g, 80)]);
        }
        const properties: Record<string, string | Uint8Array> = {};
        if (g.chance(0.8)) {
          properties["connection\0uri_san_peer_certificate"] = g.chance(0.5)
            ? API
            : g.chance(0.5)
              ? bytes(g, 64)
              : `spiffe://example.org/${junk(g, 20)}`;
        }
        const s = p.newHttpStream({ properties });
        const action = s.onRequestHeaders(headers, true);
        expect(p.failed, JSON.stringify(headers)).toBe(false);
        if (action === "continue") {
          expect(s.localResponse).toBeUndefined();
          allowed++;
        } else {
          expect(s.localResponse?.status, JSON.stringify(headers)).toBe(403);
          expect(reason(s)).toMatch(/^[\x20-\x7e]+$/);
        }
        s.done();
      }
      expect(allowed).toBeGreaterThan(10);
      const m = p.metrics;
      expect(m.get("qhx_authz.allowed")!.value + m.get("qhx_authz.denied")!.value).toBe(1000n);
      expect(m.get("qhx_authz.errors")!.value).toBe(0n);
    }
  });

  it("a mutated configuration is applied or refused, never traps, never half-applied", async () => {
    const g = new Gen(0xc0f);
    const good = await configFor();
    const p = plugin(good);
    const raw = Buffer.from(JSON.parse(good).config, "base64");
    let refused = 0;
    for (let i = 0; i < 300; i++) {
      const m = Buffer.from(raw);
      const kind = g.int(3);
      if (kind === 0) for (let k = 1 + g.int(4); k > 0; k--) m[g.int(m.length)] = g.int(256);
      const cut = kind === 1 ? m.subarray(0, g.int(m.length)) : m;
      const ext = kind === 2 ? Buffer.concat([m, Buffer.from(bytes(g, 8))]) : cut;
      const text = JSON.stringify({ format: "qhx-authz-config/1", config: ext.toString("base64") });
      const ok = p.configure(text);
      expect(p.failed).toBe(false);
      if (!ok) {
        refused++;
        // the previous (good) configuration is still in force
        expect(request(p, { peer: API }).localResponse).toBeUndefined();
        expect(reason(request(p, { peer: "spiffe://example.org/ns/payments/sa/evil" }))).toBe(
          "denied: forbidden by no-evil",
        );
      }
      expect(p.configure(good)).toBe(true);
    }
    expect(refused).toBeGreaterThan(100);
  });
});
