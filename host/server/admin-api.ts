/**
 * The admin API: one route table, served over HTTP on the server's local Unix socket and called
 * in-process by the CLI's offline (`--data-dir`) mode. Requests and responses are JSON; errors are
 * `{ "error": { "code", "message", "hint" } }` with an HTTP status that matches the code.
 */
import crypto from "node:crypto";
import { bundleToPem, bundleToSpiffeJson } from "../core/bundle.ts";
import { parseDuration } from "../core/clock.ts";
import { entryToJson, parseEntryJson, parseEntryPatchJson, parseSelector } from "../core/entry.ts";
import { isQhxError, NotFoundError, QhxError, ValidationError } from "../core/errors.ts";
import { toPem } from "../core/pem.ts";
import { SpiffeId } from "../core/spiffeid.ts";
import { policyRoutes } from "./admin-policy.ts";
import { notaryRoutes } from "./notary.ts";
import { federationRoutes } from "./federation/admin.ts";
import { cryptoPolicyRoutes } from "./crypto-policy-store.ts";
import type { ServerCore } from "./core.ts";
import type { EntryFilter } from "./datastore/types.ts";

export interface AdminRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  body: unknown;
}

export interface AdminResponse {
  status: number;
  body: unknown;
}

type Handler = (core: ServerCore, req: AdminRequest, params: string[]) => Promise<AdminResponse>;

const ok = (body: unknown, status = 200): AdminResponse => ({ status, body });

function obj(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ValidationError("request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

function str(b: Record<string, unknown>, field: string, required = true): string | undefined {
  const v = b[field];
  if (v === undefined || v === null) {
    if (required) throw new ValidationError("is required", field);
    return undefined;
  }
  if (typeof v !== "string" || v.length === 0) throw new ValidationError("must be a non-empty string", field);
  return v;
}

function ttl(b: Record<string, unknown>, field = "ttl"): number | undefined {
  const v = b[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string" && typeof v !== "number") throw new ValidationError("must be a duration", field);
  try {
    return parseDuration(v);
  } catch (e) {
    throw new ValidationError((e as Error).message, field);
  }
}

function stringList(b: Record<string, unknown>, field: string): string[] | undefined {
  const v = b[field];
  if (v === undefined || v === null) return undefined;
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || !list.every((x) => typeof x === "string" && x.length > 0)) {
    throw new ValidationError("must be a string or a list of non-empty strings", field);
  }
  return list as string[];
}

const routes: [string, RegExp, Handler][] = [
  ["GET", /^\/v1\/health$/, async (core) => ok({ status: "ok", trust_domain: core.cfg.trustDomain })],

  [
    "POST",
    /^\/v1\/entries$/,
    async (core, req) => {
      const input = parseEntryJson(obj(req.body), { trustDomain: core.cfg.trustDomain });
      const e = await core.ds.createEntry(input);
      core.metrics.entries.inc();
      core.log.info({ entryId: e.id, spiffeId: e.spiffeId }, "entry created");
      return ok(entryToJson(e), 201);
    },
  ],
  [
    "GET",
    /^\/v1\/entries$/,
    async (core, req) => {
      const filter: EntryFilter = {};
      const q = req.query;
      if (q.get("spiffe_id")) filter.spiffeId = SpiffeId.parse(q.get("spiffe_id")!).toString();
      if (q.get("parent_id")) filter.parentId = SpiffeId.parse(q.get("parent_id")!).toString();
      if (q.get("namespace")) filter.namespace = q.get("namespace")!;
      if (q.get("selector")) filter.selector = parseSelector(q.get("selector")!);
      const list = await core.ds.listEntries(filter);
      return ok({ entries: list.map(entryToJson) });
    },
  ],
  [
    "GET",
    /^\/v1\/entries\/([^/]+)$/,
    async (core, _req, [id]) => {
      const e = await core.ds.getEntry(id!);
      if (!e) throw new NotFoundError("entry", id!);
      return ok(entryToJson(e));
    },
  ],
  [
    "PATCH",
    /^\/v1\/entries\/([^/]+)$/,
    async (core, req, [id]) => {
      const body = obj(req.body);
      const { revision, ...rest } = body;
      if (revision !== undefined && !Number.isInteger(revision))
        throw new ValidationError("must be an integer", "revision");
      const patch = parseEntryPatchJson(rest, { trustDomain: core.cfg.trustDomain });
      const e = await core.ds.updateEntry(id!, patch, revision as number | undefined);
      core.log.info({ entryId: e.id, revision: e.revision }, "entry updated");
      return ok(entryToJson(e));
    },
  ],
  [
    "DELETE",
    /^\/v1\/entries\/([^/]+)$/,
    async (core, _req, [id]) => {
      if (!(await core.ds.deleteEntry(id!))) throw new NotFoundError("entry", id!);
      core.metrics.entries.dec();
      core.log.info({ entryId: id }, "entry deleted");
      return ok({ deleted: id });
    },
  ],

  [
    "POST",
    /^\/v1\/join-tokens$/,
    async (core, req) => {
      const b = req.body === undefined || req.body === null ? {} : obj(req.body);
      const alias = str(b, "spiffe_id", false);
      if (alias !== undefined) {
        const id = SpiffeId.parse(alias);
        if (!id.memberOf(core.cfg.trustDomain)) {
          throw new ValidationError(`${alias} is not in trust domain ${core.cfg.trustDomain}`, "spiffe_id");
        }
      }
      const t = await core.generateJoinToken(ttl(b) ?? 600_000, alias);
      core.log.info({ expiresAt: t.expiresAt, alias }, "join token generated");
      return ok({ token: t.token, expires_at: t.expiresAt, ...(alias ? { spiffe_id: alias } : {}) }, 201);
    },
  ],

  [
    "GET",
    /^\/v1\/agents$/,
    async (core) =>
      ok({
        agents: (await core.ds.listNodes()).map((n) => ({
          spiffe_id: n.spiffeId,
          attestation_type: n.attestationType,
          selectors: n.selectors.map((x) => `${x.type}:${x.value}`),
          assurance: n.assurance,
          aliases: n.aliases ?? [],
          serial: n.certSerial,
          expires_at: n.certNotAfter,
          banned: n.banned,
        })),
      }),
  ],
  [
    "DELETE",
    /^\/v1\/agents\/(.+)$/,
    async (core, _req, [id]) => {
      if (!(await core.ds.deleteNode(id!))) throw new NotFoundError("agent", id!);
      core.log.info({ agentId: id }, "agent evicted");
      return ok({ evicted: id });
    },
  ],
  [
    "GET",
    /^\/v1\/bundle$/,
    async (core, req) => {
      const format = req.query.get("format") ?? "spiffe";
      const b = core.ca.trustBundle();
      if (format === "pem") return ok({ format, sequence: b.sequence, bundle: bundleToPem(b) });
      if (format === "spiffe") return ok({ format, sequence: b.sequence, bundle: bundleToSpiffeJson(b) });
      throw new ValidationError(`unknown format "${format}" (use pem or spiffe)`, "format");
    },
  ],
  [
    "GET",
    /^\/v1\/ca$/,
    async (core) =>
      ok({
        authorities: core.ca.records().map((r) => ({
          id: r.id,
          kind: r.kind,
          status: r.status,
          alg: r.alg,
          kid: r.kid,
          not_before: r.notBefore,
          not_after: r.notAfter,
        })),
      }),
  ],

  [
    "POST",
    /^\/v1\/svids\/x509$/,
    async (core, req) => {
      const b = obj(req.body);
      const spiffeId = str(b, "spiffe_id")!;
      const pem = str(b, "public_key")!;
      let publicKey: crypto.KeyObject;
      try {
        publicKey = crypto.createPublicKey(pem);
      } catch {
        throw new ValidationError("is not a PEM SubjectPublicKeyInfo", "public_key");
      }
      const dnsNames = stringList(b, "dns_names");
      const ttlMs = ttl(b);
      const r = await core.issueX509({
        spiffeId,
        publicKey,
        ...(ttlMs ? { ttlMs } : {}),
        ...(dnsNames ? { dnsNames } : {}),
      });
      return ok(
        {
          spiffe_id: spiffeId,
          chain: r.chain.map((d) => toPem(d)),
          bundle: bundleToPem(core.ca.trustBundle()),
          serial: r.serial,
          expires_at: Math.floor(r.notAfter.getTime() / 1000),
        },
        201,
      );
    },
  ],
  [
    "POST",
    /^\/v1\/svids\/jwt$/,
    async (core, req) => {
      const b = obj(req.body);
      const spiffeId = str(b, "spiffe_id")!;
      const audience = stringList(b, "audience");
      if (!audience?.length) throw new ValidationError("is required", "audience");
      const ttlMs = ttl(b);
      const r = await core.issueJwt({ spiffeId, audience, ...(ttlMs ? { ttlMs } : {}) });
      return ok({ token: r.token, alg: r.alg, expires_at: Math.floor(r.expiresAt.getTime() / 1000) }, 201);
    },
  ],
];

routes.push(...policyRoutes);
routes.push(...notaryRoutes);
routes.push(...federationRoutes);
routes.push(...cryptoPolicyRoutes);

export function statusFor(e: unknown): number {
  if (!isQhxError(e)) return 500;
  if (e instanceof ValidationError || e.code.startsWith("SPIFFE_ID_")) return 400;
  switch (e.code) {
    case "QHX_NOT_FOUND":
      return 404;
    case "QHX_ALREADY_EXISTS":
    case "QHX_CONFLICT":
      return 409;
    case "QHX_INVALID_ARGUMENT":
    case "QHX_WRONG_TRUST_DOMAIN":
    case "QHX_UNSUPPORTED_ALGORITHM":
      return 400;
    case "QHX_CA_UNAVAILABLE":
      return 503;
    case "QHX_POLICY_DENIED":
      return 403;
    default:
      return 400;
  }
}

export function errorBody(e: unknown): { error: { code: string; message: string; hint?: string } } {
  if (isQhxError(e))
    return { error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } };
  return { error: { code: "QHX_INTERNAL", message: "internal error; see the server log" } };
}

/** Route and run one admin request. Never throws: errors become error responses. */
export async function handleAdmin(core: ServerCore, req: AdminRequest): Promise<AdminResponse> {
  let methodMismatch = false;
  for (const [method, re, handler] of routes) {
    const m = re.exec(req.path);
    if (!m) continue;
    if (method !== req.method) {
      methodMismatch = true;
      continue;
    }
    try {
      return await handler(core, req, m.slice(1).map(decodeURIComponent));
    } catch (e) {
      const status = statusFor(e);
      if (status >= 500) core.log.error({ err: e, path: req.path }, "admin request failed");
      return { status, body: errorBody(e) };
    }
  }
  if (methodMismatch) {
    return {
      status: 405,
      body: errorBody(new QhxError("QHX_METHOD_NOT_ALLOWED", `${req.method} ${req.path}`)),
    };
  }
  return {
    status: 404,
    body: errorBody(new QhxError("QHX_NOT_FOUND", `no such endpoint: ${req.method} ${req.path}`)),
  };
}
