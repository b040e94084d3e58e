/**
 * Differential test: the filter's decisions (inside Wasm, through the proxy-wasm host) equal
 * cedar-wasm's on the same Cedar request (host/filter/request.ts builds what the filter builds), over
 * seeded random policy sets and a few thousand random requests.
 */
import { describe, expect, it } from "vitest";
import { encodeFilterConfig, type FilterDirectoryEntry } from "../../host/filter/config.ts";
import { type FilterHttpRequest, filterCedarRequest } from "../../host/filter/request.ts";
import { compilePolicies } from "../../host/policy/index.ts";
import { Gen } from "../policy/gen.ts";
import { FakeClock, plugin, reason } from "./helpers.ts";

const NS = ["payments", "web", "batch"];
const TDS = ["example.org", "other.org"];
const HOSTS = [
  "api.example.org",
  "db.example.org",
  "API.example.org:8443",
  "[::1]:80",
  "db.example.org:9000",
];
const PATHS = ["/v1/pay", "/v1/orders/7", "/v2/pay?x=1", "/health", "/v1/", "/", "/v1/orders?q=/v1"];
const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PURGE"];
const ROUTES = ["/v1/", "/v1/orders", "/health"];
const TEAMS = ["frontend", "backend"];

function peers(): string[] {
  const out: string[] = [];
  for (const td of TDS)
    for (const ns of NS) for (const sa of ["api", "ui"]) out.push(`spiffe://${td}/ns/${ns}/sa/${sa}`);
  out.push("spiffe://example.org/legacy/app", "spiffe://example.org", "spiffe://other.org/ns/x");
  return out;
}
const PEERS = peers();

const DIRECTORY: FilterDirectoryEntry[] = [
  {
    spiffeId: "spiffe://example.org/ns/web/sa/ui",
    namespace: "web",
    assurance: "hardware",
    labels: { team: "frontend" },
  },
  {
    spiffeId: "spiffe://example.org/legacy/app",
    namespace: "payments",
    assurance: "key",
    labels: { team: "backend", tier: "1" },
  },
  { spiffeId: "spiffe://other.org/ns/batch/sa/api", namespace: "jobs" },
];

function condition(g: Gen): string {
  const q = (s: string) => JSON.stringify(s);
  switch (g.int(24)) {
    case 0:
      return `principal.namespace == ${q(g.pick([...NS, "jobs", "default"]))}`;
    case 1:
      return `principal in Namespace::${q(`${g.pick(TDS)}/${g.pick([...NS, "default"])}`)}`;
    case 2:
      return `principal.trustDomain == ${q(g.pick(TDS))}`;
    case 3:
      return `principal.path like ${q(`/ns/${g.pick(NS)}/*`)}`;
    case 4:
      return `principal.assurance == ${q(g.pick(["hardware", "key", "none"]))}`;
    case 5:
      return `principal.hasTag("team") && principal.getTag("team") == ${q(g.pick(TEAMS))}`;
    case 6:
      return `principal.getTag("team") == ${q(g.pick(TEAMS))}`;
    case 7:
      return `principal.spiffeId like "*api"`;
    case 8:
      return `resource is Route && resource.pathPrefix == ${q(g.pick(ROUTES))}`;
    case 9:
      return `resource.pathPrefix like "/v1*"`;
    case 10:
      return `resource.name == ${q(g.pick(["api.example.org", "db.example.org", "::1"]))}`;
    case 11:
      return `resource in Service::${q(g.pick(["api.example.org", "db.example.org", "[::1]"]))}`;
    case 12:
      return `context.path like ${q(g.pick(["/v1/*", "*pay", "/health"]))}`;
    case 13:
      return `context.method == ${q(g.pick(METHODS))}`;
    case 14:
      return `context.headers has "x-qhx-tenant" && context.headers["x-qhx-tenant"] == ${q(g.pick(["t1", "blocked"]))}`;
    case 15:
      return `context.headers["user-agent"] like "curl*"`;
    case 16:
      return `context.tls.mode == "mtls" && !context.tls.pq`;
    case 17:
      return `context.time > ${g.pick([1_700_000_000, 1_900_000_000])}`;
    case 18:
      return `action in Action::"http"`;
    case 19:
      return `action in [Action::"GET", Action::"HEAD"]`;
    case 20:
      return `principal.selectors.isEmpty() && !(principal has nodeId)`;
    case 21:
      return `context.tls == {"mode": "mtls", "pq": false}`;
    case 22:
      return `context.headers == {}`;
    default:
      return `principal.trustDomain == resource.name`;
  }
}

function scope(g: Gen): string {
  const q = (s: string) => JSON.stringify(s);
  const p = g.pick([
    "principal",
    "principal is Workload",
    `principal == Workload::${q(g.pick(PEERS))}`,
    `principal in Namespace::${q(`example.org/${g.pick(NS)}`)}`,
  ]);
  const a = g.pick([
    "action",
    `action == Action::${q(g.pick(METHODS))}`,
    'action in Action::"http"',
    'action in [Action::"POST", Action::"PUT"]',
  ]);
  const r = g.pick([
    "resource",
    "resource is Route",
    "resource is Service",
    `resource in Service::"api.example.org"`,
  ]);
  return `${p}, ${a}, ${r}`;
}

function policySet(g: Gen, n: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    const effect = g.chance(0.3) ? "forbid" : "permit";
    const conds: string[] = [];
    for (let k = g.int(3); k > 0; k--) {
      const c = condition(g);
      conds.push(g.chance(0.2) ? `!(${c})` : g.chance(0.2) ? `(${c} || ${condition(g)})` : c);
    }
    const clause = conds.length ? ` ${g.chance(0.8) ? "when" : "unless"} { ${conds.join(" && ")} }` : "";
    out[`p${i}`] = `${effect}(${scope(g)})${clause};`;
  }
  return out;
}

function httpRequest(g: Gen, now: number): FilterHttpRequest {
  const headers: [string, string][] = [];
  if (g.chance(0.4)) headers.push(["x-qhx-tenant", g.pick(["t1", "blocked", ""])]);
  if (g.chance(0.4)) headers.push(["user-agent", g.pick(["curl/8", "envoy", "curl/7 ü"])]);
  if (g.chance(0.2)) headers.push(["content-type", "application/json"]);
  if (g.chance(0.2)) headers.push(["x-request-id", `req-${g.int(5)}`]);
  if (g.chance(0.1)) headers.push(["x-other", "1"]);
  return {
    principal: g.pick(PEERS),
    mode: "mtls",
    method: g.pick(METHODS),
    path: g.pick(PATHS),
    authority: g.pick(HOSTS),
    headers,
    time: Math.floor(now / 1000),
  };
}

describe("qhx_authz differential vs cedar-wasm", () => {
  it("decides like cedar-wasm on 3000 random requests over random policy sets", async () => {
    const g = new Gen(0x5eed6);
    let compared = 0;
    const outcomes = { allow: 0, forbid: 0, default: 0 };
    for (let set = 0; set < 6; set++) {
      const policies = policySet(g, 4 + g.int(12));
      const compiled = await compilePolicies({ policies });
      expect(compiled.engine).toBe("compiled");
      const clock = new FakeClock();
      const p = plugin(
        encodeFilterConfig({
          policy: compiled,
          bundles: {},
          directory: DIRECTORY,
          options: { routes: ROUTES },
        }),
        clock,
      );
      for (let i = 0; i < 500; i++) {
        const req = httpRequest(g, clock.ms);
        const s = p.newHttpStream({ properties: { "connection\0uri_san_peer_certificate": req.principal } });
        s.onRequestHeaders(
          [[":method", req.method], [":path", req.path], [":authority", req.authority], ...req.headers!],
          true,
        );
        const want = compiled.authorizeWithCedar(
          filterCedarRequest(req, { routes: ROUTES, directory: DIRECTORY }),
        );
        const ctx = `set ${set} request ${i}: ${JSON.stringify(req)}\n${JSON.stringify(policies, null, 1)}`;
        if (want.decision === "allow") {
          expect(s.localResponse, ctx).toBeUndefined();
          outcomes.allow++;
        } else {
          expect(s.localResponse?.status, ctx).toBe(403);
          const expected = want.reasons.length
            ? `denied: forbidden by ${want.reasons.join(", ")}`
            : "denied: no policy permits the request";
          expect(reason(s), ctx).toBe(expected);
          if (want.reasons.length) outcomes.forbid++;
          else outcomes.default++;
        }
        s.done();
        compared++;
      }
      expect(p.failed).toBe(false);
    }
    expect(compared).toBe(3000);
    // the generator must exercise every outcome
    expect(outcomes.allow).toBeGreaterThan(100);
    expect(outcomes.forbid).toBeGreaterThan(100);
    expect(outcomes.default).toBeGreaterThan(100);
  });
});
