/**
 * Admin API routes for the policy store (host/server/policy-store.ts), in the route-tuple format of
 * admin-api.ts: append `...policyRoutes` to its route table.
 *
 *   POST /v1/policies/validate  { policies, schema? }                 → { ok, policy_ids, engine, unsupported }
 *   POST /v1/policies           { policies, comment?, expected_version?, schema? } → 201 version summary
 *   GET  /v1/policies                                                 → { versions: [summary…] }
 *   GET  /v1/policies/current | /v1/policies/<n>                      → the signed version document
 *   GET  /v1/policies/diff?from=<n|none>&to=<n|current>               → { from, to, added, removed, changed }
 *   POST /v1/policies/test      { tests, version? }                   → { passed, failed, results }
 *   GET  /v1/policies/public-key                                      → { alg, kid, public_key }
 *
 * `policies` is Cedar text (policies named by their @id annotation, else policy<N>) or an object of
 * id → text. Admission: `policyAdmission(core, input)` evaluates action `issue` against the current
 * version (no version applied yet: admission is not enforced).
 */
import { isQhxError, NotFoundError, ValidationError } from "../core/errors.ts";
import { formatSelector } from "../core/entry.ts";
import { SpiffeId } from "../core/spiffeid.ts";
import {
  assertIssuanceAllowed,
  type IssuanceInput,
  type PolicyDecision,
  type WorkloadIdentity,
} from "../policy/index.ts";
// types only: admin-api.ts imports this module (its route table spreads policyRoutes)
import type { AdminRequest, AdminResponse } from "./admin-api.ts";
import type { ServerCore } from "./core.ts";
import { parsePolicyTests, PolicyStore, type PolicyVersion } from "./policy-store.ts";

type Handler = (core: ServerCore, req: AdminRequest, params: string[]) => Promise<AdminResponse>;

const stores = new WeakMap<ServerCore, PolicyStore>();

/** The policy store of a server (opened on first use under its data directory). */
export function policyStoreFor(core: ServerCore): PolicyStore {
  let s = stores.get(core);
  if (!s) {
    s = PolicyStore.open(core.cfg.dataDir);
    stores.set(core, s);
  }
  return s;
}

/**
 * Admission for SVID issuance: evaluates action `issue` for the workload against the current policy
 * version. Throws QhxError QHX_POLICY_DENIED naming the deciding policies on deny. Returns undefined
 * when no policy version has been applied (admission not enforced), else the decision.
 */
export async function policyAdmission(
  core: ServerCore,
  input: IssuanceInput,
): Promise<PolicyDecision | undefined> {
  const set = await policyStoreFor(core).policySet("current");
  if (!set) return undefined;
  return assertIssuanceAllowed(set, input);
}

/**
 * The Cedar identity of a registration entry's workload (for admission): SPIFFE ID, trust domain,
 * path, namespace, labels (tags), selectors as "type:value", and optionally the attested node and
 * assurance level of the issuance.
 */
export function workloadIdentityFromEntry(
  entry: {
    spiffeId: string;
    namespace: string;
    labels: Record<string, string>;
    selectors: { type: string; value: string }[];
  },
  extra: { nodeId?: string; assurance?: string } = {},
): WorkloadIdentity {
  const id = SpiffeId.parse(entry.spiffeId);
  return {
    spiffeId: entry.spiffeId,
    trustDomain: id.trustDomain,
    path: id.path,
    namespace: entry.namespace,
    labels: entry.labels,
    selectors: entry.selectors.map((s) => formatSelector(s)),
    ...(extra.nodeId !== undefined ? { nodeId: extra.nodeId } : {}),
    ...(extra.assurance !== undefined ? { assurance: extra.assurance } : {}),
  };
}

function obj(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ValidationError("request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

function optString(b: Record<string, unknown>, field: string): string | undefined {
  const v = b[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new ValidationError("must be a string", field);
  return v;
}

function versionParam(v: string | null | undefined, field: string): number | "current" {
  if (v === undefined || v === null || v === "" || v === "current") return "current";
  if (!/^\d+$/.test(v)) throw new ValidationError(`"${v}" is not a version number`, field);
  return Number(v);
}

function summary(v: PolicyVersion) {
  return {
    version: v.version,
    created_at: v.created_at,
    comment: v.comment,
    digest: v.digest,
    policies: Object.keys(v.policies).length,
    engine: v.engine,
    unsupported: v.unsupported,
  };
}

const ok = (body: unknown, status = 200): AdminResponse => ({ status, body });

export const policyRoutes: [string, RegExp, Handler][] = [
  [
    "POST",
    /^\/v1\/policies\/validate$/,
    async (core, req) => {
      const b = obj(req.body);
      const schema = optString(b, "schema");
      const set = await policyStoreFor(core).check({ policies: b.policies, ...(schema ? { schema } : {}) });
      return ok({ ok: true, policy_ids: set.policyIds, engine: set.engine, unsupported: set.unsupported });
    },
  ],
  [
    "POST",
    /^\/v1\/policies\/test$/,
    async (core, req) => {
      const b = obj(req.body);
      const tests = parsePolicyTests(b.tests);
      const version = b.version === undefined ? "current" : versionParam(String(b.version), "version");
      const results = await policyStoreFor(core).test(tests, version);
      const passed = results.filter((r) => r.passed).length;
      return ok({ passed, failed: results.length - passed, results });
    },
  ],
  [
    "POST",
    /^\/v1\/policies$/,
    async (core, req) => {
      const b = obj(req.body);
      const ev = b.expected_version;
      if (ev !== undefined && ev !== null && !Number.isInteger(ev)) {
        throw new ValidationError("must be an integer", "expected_version");
      }
      const comment = optString(b, "comment");
      const schema = optString(b, "schema");
      const v = await policyStoreFor(core).apply({
        policies: b.policies,
        ...(comment ? { comment } : {}),
        ...(schema ? { schema } : {}),
        ...(typeof ev === "number" ? { expectedVersion: ev } : {}),
      });
      core.log.info(
        { policyVersion: v.version, digest: v.digest, engine: v.engine },
        "policy version applied",
      );
      return ok(summary(v), 201);
    },
  ],
  ["GET", /^\/v1\/policies$/, async (core) => ok({ versions: policyStoreFor(core).list() })],
  [
    "GET",
    /^\/v1\/policies\/public-key$/,
    async (core) => {
      const s = policyStoreFor(core);
      return ok({ alg: "ed25519", kid: s.kid, public_key: s.publicKeyPem });
    },
  ],
  [
    "GET",
    /^\/v1\/policies\/diff$/,
    async (core, req) => {
      const s = policyStoreFor(core);
      const to = versionParam(req.query.get("to"), "to");
      const fromQ = req.query.get("from");
      let from: number | "current" | null;
      if (fromQ === "none") from = null;
      else if (fromQ) from = versionParam(fromQ, "from");
      else {
        // default: the version before `to`
        const toN = to === "current" ? (s.get("current")?.version ?? 0) : to;
        from = toN > 1 ? toN - 1 : null;
      }
      return ok(s.diff(from, to));
    },
  ],
  [
    "GET",
    /^\/v1\/policies\/(current|\d+)$/,
    async (core, _req, [v]) => {
      const version = versionParam(v, "version");
      const doc = policyStoreFor(core).get(version);
      if (!doc) throw new NotFoundError("policy version", v!);
      return ok(doc);
    },
  ],
];

/**
 * Route one admin request through the policy routes only (no server needed: offline CLI, tests).
 * Same response shapes as handleAdmin; undefined when no policy route matches.
 */
export async function handlePolicyAdmin(
  core: ServerCore,
  req: AdminRequest,
): Promise<AdminResponse | undefined> {
  for (const [method, re, handler] of policyRoutes) {
    const m = re.exec(req.path);
    if (!m || method !== req.method) continue;
    try {
      return await handler(core, req, m.slice(1).map(decodeURIComponent));
    } catch (e) {
      // the same mapping as admin-api.ts statusFor/errorBody (not imported: see the import note)
      if (!isQhxError(e))
        return { status: 500, body: { error: { code: "QHX_INTERNAL", message: "internal error" } } };
      const status =
        e instanceof ValidationError
          ? 400
          : e.code === "QHX_NOT_FOUND"
            ? 404
            : e.code === "QHX_CONFLICT"
              ? 409
              : 400;
      return {
        status,
        body: { error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } },
      };
    }
  }
  return undefined;
}
