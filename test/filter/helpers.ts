/** Shared fixtures for the qhx_authz filter tests: the built module, policies, keys, a plugin factory. */
import crypto, { type KeyObject } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { mintJwtSvid } from "../../host/core/jwtsvid.ts";
import {
  encodeFilterConfig,
  type FilterConfigInput,
  type FilterJwtKey,
  filterKeyOf,
} from "../../host/filter/config.ts";
import {
  compilePolicies,
  type CompiledPolicySet,
  policiesFromText,
  QHX_CEDAR_SCHEMA,
} from "../../host/policy/index.ts";
import { type HttpStream, ProxyWasmPlugin } from "../../host/wasm/proxy-wasm/host.ts";

const WASM_URL = new URL("../../build/filters/qhx_authz.wasm", import.meta.url);

export function filterWasm(): Uint8Array {
  if (!existsSync(WASM_URL)) throw new Error(`${fileURLToPath(WASM_URL)} missing: run npm run build:wasm`);
  return readFileSync(WASM_URL);
}

export const PEER_PROPERTY = "connection\0uri_san_peer_certificate";
export const API = "spiffe://example.org/ns/payments/sa/api";
export const EVIL = "spiffe://example.org/ns/payments/sa/evil";
export const OTHER = "spiffe://example.org/ns/web/sa/ui";

export const POLICIES = `
@id("payments-read")
permit(principal is Workload in Namespace::"example.org/payments", action in [Action::"GET", Action::"HEAD"], resource)
when { context has path && context.path like "/v1/*" };

@id("frontend-write")
permit(principal is Workload, action == Action::"POST", resource is Route)
when { principal.hasTag("team") && principal.getTag("team") == "frontend" && resource.pathPrefix == "/v1/orders" };

@id("no-evil")
forbid(principal == Workload::"spiffe://example.org/ns/payments/sa/evil", action, resource);

@id("tenant-guard")
forbid(principal, action in Action::"http", resource)
when { context has headers && context.headers has "x-qhx-tenant" && context.headers["x-qhx-tenant"] == "blocked" };
`;

let cached: CompiledPolicySet | undefined;
export async function policySet(text = POLICIES): Promise<CompiledPolicySet> {
  if (text === POLICIES && cached) return cached;
  const set = await compilePolicies({ policies: policiesFromText(text), schema: QHX_CEDAR_SCHEMA });
  if (text === POLICIES) cached = set;
  return set;
}

export const NOW_MS = Date.UTC(2026, 10, 24, 4, 0, 0);

export class FakeClock {
  ms = NOW_MS;
  now(): number {
    return this.ms;
  }
}

export interface Keys {
  es: { kid: string; privateKey: KeyObject; publicKey: KeyObject };
  ml: { kid: string; privateKey: KeyObject; publicKey: KeyObject };
  filterKeys: FilterJwtKey[];
}

let keys: Keys | undefined;
export function testKeys(): Keys {
  if (keys) return keys;
  const es = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const ml = crypto.generateKeyPairSync("ml-dsa-65");
  keys = {
    es: { kid: "es-1", ...es },
    ml: { kid: "ml-1", ...ml },
    filterKeys: [filterKeyOf("es-1", es.publicKey)!, filterKeyOf("ml-1", ml.publicKey)!],
  };
  return keys;
}

export async function mint(
  which: "es" | "ml",
  opts: { sub?: string; audience?: string | string[]; ttl?: number; now?: number } = {},
): Promise<string> {
  const k = testKeys()[which];
  return mintJwtSvid({
    spiffeId: opts.sub ?? API,
    audience: opts.audience ?? "payments",
    ttlSeconds: opts.ttl ?? 300,
    privateKey: k.privateKey,
    kid: k.kid,
    ...(which === "ml" ? { alg: "ML-DSA-65" as const } : {}),
    now: new Date(opts.now ?? NOW_MS),
  });
}

export async function configFor(extra: Partial<FilterConfigInput> = {}): Promise<string> {
  return encodeFilterConfig({
    policy: await policySet(),
    bundles: { "example.org": testKeys().filterKeys },
    directory: [{ spiffeId: OTHER, namespace: "web", assurance: "hardware", labels: { team: "frontend" } }],
    ...extra,
    options: { routes: ["/v1/", "/v1/orders"], peerHeader: "x-qhx-peer-id", ...(extra.options ?? {}) },
  });
}

export function plugin(config: string, clock = new FakeClock(), logs: string[] = []): ProxyWasmPlugin {
  return ProxyWasmPlugin.create({
    wasm: filterWasm(),
    pluginConfiguration: config,
    clock,
    log: (level, message) => logs.push(`${level}: ${message}`),
  });
}

export function request(
  p: ProxyWasmPlugin,
  opts: {
    peer?: string;
    method?: string;
    path?: string;
    authority?: string;
    headers?: [string, string][];
    properties?: Record<string, string>;
  } = {},
): HttpStream {
  const properties: Record<string, string> = { ...(opts.properties ?? {}) };
  if (opts.peer !== undefined) properties[PEER_PROPERTY] = opts.peer;
  const s = p.newHttpStream({ properties });
  s.onRequestHeaders(
    [
      [":method", opts.method ?? "GET"],
      [":path", opts.path ?? "/v1/pay"],
      [":authority", opts.authority ?? "api.example.org:8443"],
      [":scheme", "https"],
      ...(opts.headers ?? []),
    ],
    true,
  );
  return s;
}

export function reason(s: HttpStream): string | undefined {
  return s.localResponse?.headers.find(([k]) => k === "x-qhx-authz-reason")?.[1];
}
