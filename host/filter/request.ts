/**
 * The Cedar request the qhx_authz filter builds for an HTTP request (filters/qhx_authz/request.ts
 * builds the same one inside Wasm). The differential tests decide these with cedar-wasm and compare;
 * the benchmark's TypeScript path decides them with host/policy. docs/filter.md documents the mapping.
 */
import type { CedarEntity, PolicyRequest } from "../policy/index.ts";
import type { FilterDirectoryEntry } from "./config.ts";

export const HTTP_METHOD_ACTIONS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;
/** The request headers the filter copies into context.headers (the schema's Headers type). */
export const CONTEXT_HEADERS = ["content-type", "user-agent", "x-request-id", "x-qhx-tenant"] as const;

export interface FilterHttpRequest {
  /** The principal's SPIFFE ID (already validated). */
  principal: string;
  /** Where it came from: "mtls" (connection), "xfcc" or "jwt". */
  mode: "mtls" | "xfcc" | "jwt";
  method: string;
  /** :path (the query string is dropped). */
  path: string;
  /** :authority (the port is dropped, the host lower-cased). */
  authority: string;
  /** Request headers (lower-case names); the first of each CONTEXT_HEADERS name is used. */
  headers?: [string, string][];
  /** Unix seconds. */
  time: number;
}

export interface FilterRequestOptions {
  routes?: string[];
  directory?: FilterDirectoryEntry[];
}

function hostOf(authority: string): string {
  let end = authority.length;
  if (authority.startsWith("[")) end = authority.indexOf("]") + 1;
  else if (authority.includes(":")) end = authority.indexOf(":");
  return authority.slice(0, end).toLowerCase();
}

/** The Cedar request (with its entities) the filter evaluates. */
export function filterCedarRequest(req: FilterHttpRequest, opts: FilterRequestOptions = {}): PolicyRequest {
  const id = req.principal;
  const rest = id.slice("spiffe://".length);
  const slash = rest.indexOf("/");
  const td = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? "" : rest.slice(slash);
  const dir = opts.directory?.find((d) => d.spiffeId === id);
  let namespace: string;
  if (dir) namespace = dir.namespace;
  else {
    // Istio-style "/ns/<namespace>/…" paths name their namespace; anything else is "default"
    namespace = path.length > 4 && path.startsWith("/ns/") ? path.slice(4).split("/")[0]! : "default";
  }
  const nsUid = { type: "Namespace", id: `${td}/${namespace}` };
  const tdUid = { type: "TrustDomain", id: td };
  const principal = { type: "Workload", id };
  const method = req.method;
  const action = { type: "Action", id: method };
  const http = { type: "Action", id: "http" };
  const host = hostOf(req.authority);
  const service = { type: "Service", id: host };
  const q = req.path.indexOf("?");
  const reqPath = q < 0 ? req.path : req.path.slice(0, q);
  let best: string | undefined;
  for (const r of opts.routes ?? [])
    if (reqPath.startsWith(r) && (best === undefined || r.length > best.length)) best = r;
  const entities: CedarEntity[] = [
    {
      uid: principal,
      attrs: {
        spiffeId: id,
        trustDomain: td,
        path,
        namespace,
        assurance: dir?.assurance ?? "none",
        selectors: [],
      },
      parents: [nsUid],
      tags: { ...(dir?.labels ?? {}) },
    },
    { uid: nsUid, attrs: { name: namespace, trustDomain: td }, parents: [tdUid] },
    { uid: tdUid, attrs: { name: td }, parents: [] },
    {
      uid: action,
      attrs: {},
      parents: (HTTP_METHOD_ACTIONS as readonly string[]).includes(method) ? [http] : [],
    },
    { uid: http, attrs: {}, parents: [] },
    { uid: service, attrs: { name: host }, parents: [] },
  ];
  let resource = service;
  if (best !== undefined) {
    resource = { type: "Route", id: `${host} ${best}` };
    entities.push({ uid: resource, attrs: { pathPrefix: best }, parents: [service] });
  }
  const headers: Record<string, string> = {};
  for (const name of CONTEXT_HEADERS) {
    const h = req.headers?.find(([k]) => k === name);
    if (h) headers[name] = h[1];
  }
  return {
    principal,
    action,
    resource,
    context: {
      time: req.time,
      method,
      path: reqPath,
      headers,
      tls: { mode: req.mode, pq: false },
    },
    entities,
  };
}
