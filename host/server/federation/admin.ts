/**
 * Admin routes for federation relationships (appended to the admin route table):
 *   POST   /v1/federation              {trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id?,
 *                                       bundle?, web_trust_roots?}                       -> 201 relationship
 *   GET    /v1/federation              -> {relationships: [...]}
 *   GET    /v1/federation/:td          -> relationship with its bundle and refresher state
 *   PATCH  /v1/federation/:td          {bundle_endpoint_url?, profile?, endpoint_spiffe_id?, web_trust_roots?}
 *   DELETE /v1/federation/:td          -> removes the relationship and the foreign bundle
 *   POST   /v1/federation/:td/refresh  -> fetch now: {trust_domain, outcome, sequence, next_refresh_at}
 */
import { bundleToSpiffeJson, parseSpiffeBundle } from "../../core/bundle.ts";
import { NotFoundError, ValidationError } from "../../core/errors.ts";
import { parseTrustDomain } from "../../core/spiffeid.ts";
import type { AdminRequest, AdminResponse } from "../admin-api.ts";
import type { ServerCore } from "../core.ts";
import type { FederationRelationship } from "../datastore/types.ts";
import { federationFor } from "./manager.ts";
import { applyRelationshipPatch, parseRelationshipJson } from "./relationship.ts";

type Handler = (core: ServerCore, req: AdminRequest, params: string[]) => Promise<AdminResponse>;

function obj(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ValidationError("request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

function nowS(core: ServerCore): number {
  return Math.floor(core.clock.now().getTime() / 1000);
}

async function relationshipJson(core: ServerCore, rel: FederationRelationship, withDocument = false) {
  const rec = await core.ds.getBundle(rel.trustDomain);
  const st = federationFor(core).state(rel.trustDomain);
  let bundle: Record<string, unknown> | null = null;
  if (rec) {
    const b = parseSpiffeBundle(rec.document, rel.trustDomain);
    bundle = {
      sequence: rec.sequence,
      refresh_hint: b.refreshHint ?? null,
      x509_authorities: b.x509Authorities.length,
      jwt_authorities: b.jwtAuthorities.length,
      updated_at: rec.updatedAt,
      ...(withDocument ? { document: rec.document } : {}),
    };
  }
  return {
    trust_domain: rel.trustDomain,
    bundle_endpoint_url: rel.bundleEndpointUrl,
    profile: rel.profile,
    endpoint_spiffe_id: rel.endpointSpiffeId,
    web_trust_roots: rel.webTrustRoots !== null,
    created_at: rel.createdAt,
    updated_at: rel.updatedAt,
    bundle,
    refresh: {
      last_attempt_at: st.lastAttemptAt === null ? null : Math.floor(st.lastAttemptAt / 1000),
      last_success_at: st.lastSuccessAt === null ? null : Math.floor(st.lastSuccessAt / 1000),
      last_error: st.lastError,
      consecutive_failures: st.consecutiveFailures,
      next_refresh_at: Math.floor(st.nextRefreshAt / 1000),
    },
  };
}

async function mustGet(core: ServerCore, td: string): Promise<FederationRelationship> {
  const rel = await core.ds.getFederationRelationship(parseTrustDomain(td));
  if (!rel) throw new NotFoundError("federation relationship", td);
  return rel;
}

export const federationRoutes: [string, RegExp, Handler][] = [
  [
    "POST",
    /^\/v1\/federation$/,
    async (core, req) => {
      const { rel, initialBundle } = parseRelationshipJson(obj(req.body), core.cfg.trustDomain);
      const t = nowS(core);
      const full: FederationRelationship = { ...rel, createdAt: t, updatedAt: t };
      await core.ds.createFederationRelationship(
        full,
        initialBundle
          ? {
              trustDomain: rel.trustDomain,
              document: bundleToSpiffeJson(initialBundle),
              sequence: initialBundle.sequence,
              updatedAt: t,
            }
          : undefined,
      );
      federationFor(core).forget(rel.trustDomain);
      core.log.info(
        { trustDomain: rel.trustDomain, profile: rel.profile, url: rel.bundleEndpointUrl },
        "federation relationship created",
      );
      return { status: 201, body: await relationshipJson(core, full) };
    },
  ],
  [
    "GET",
    /^\/v1\/federation$/,
    async (core) => {
      const rels = await core.ds.listFederationRelationships();
      return {
        status: 200,
        body: { relationships: await Promise.all(rels.map((r) => relationshipJson(core, r))) },
      };
    },
  ],
  [
    "GET",
    /^\/v1\/federation\/([^/]+)$/,
    async (core, _req, [td]) => ({
      status: 200,
      body: await relationshipJson(core, await mustGet(core, td!), true),
    }),
  ],
  [
    "PATCH",
    /^\/v1\/federation\/([^/]+)$/,
    async (core, req, [td]) => {
      const cur = await mustGet(core, td!);
      const next = applyRelationshipPatch(cur, obj(req.body), core.cfg.trustDomain);
      const updated = await core.ds.updateFederationRelationship(
        cur.trustDomain,
        {
          bundleEndpointUrl: next.bundleEndpointUrl,
          profile: next.profile,
          endpointSpiffeId: next.endpointSpiffeId,
          webTrustRoots: next.webTrustRoots,
        },
        nowS(core),
      );
      // a changed endpoint is fetched at the next refresher tick
      federationFor(core).state(cur.trustDomain).nextRefreshAt = core.clock.now().getTime();
      core.log.info({ trustDomain: cur.trustDomain }, "federation relationship updated");
      return { status: 200, body: await relationshipJson(core, updated) };
    },
  ],
  [
    "DELETE",
    /^\/v1\/federation\/([^/]+)$/,
    async (core, _req, [td]) => {
      const name = parseTrustDomain(td!);
      if (!(await core.ds.deleteFederationRelationship(name))) {
        throw new NotFoundError("federation relationship", td!);
      }
      federationFor(core).forget(name);
      core.log.info(
        { trustDomain: name },
        "federation relationship deleted; its bundle is no longer distributed",
      );
      return { status: 200, body: { deleted: name } };
    },
  ],
  [
    "POST",
    /^\/v1\/federation\/([^/]+)\/refresh$/,
    async (core, _req, [td]) => {
      const rel = await mustGet(core, td!);
      const r = await federationFor(core).refreshNow(rel.trustDomain);
      return {
        status: 200,
        body: {
          trust_domain: r.trustDomain,
          outcome: r.outcome,
          sequence: r.sequence,
          next_refresh_at: Math.floor(r.nextRefreshAt / 1000),
        },
      };
    },
  ],
];
