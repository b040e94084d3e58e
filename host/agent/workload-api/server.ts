/**
 * The SPIFFE Workload API (service `SpiffeWorkloadAPI`, see proto.ts) on a GrpcServer, driven only through
 * a WorkloadIdentityProvider. Behaviour follows the SPIFFE Workload Endpoint / Workload API specs and
 * what SPIRE's agent does, so SPIFFE clients (go-spiffe, java-/py-/rust-spiffe) work unchanged:
 *
 * - every SpiffeWorkloadAPI call must carry the metadata `workload.spiffe.io: true`, else INVALID_ARGUMENT
 *   "security header missing from request" (the SDS service on the same server does not need it: Envoy
 *   does not send it, and SPIRE only checks `/SpiffeWorkloadAPI/` methods);
 * - the caller is `provider.identitiesFor(peer)`; a provider failure is UNAVAILABLE "workload attestation
 *   failed" (a GrpcError thrown by the provider passes through unchanged);
 * - a caller with no SVID gets PERMISSION_DENIED "no identity issued" from FetchX509SVID, FetchJWTSVID,
 *   FetchX509Bundles and FetchJWTBundles (the bundle streams too, unless `allowUnauthenticatedVerifiers`,
 *   SPIRE's option of that name); ValidateJWTSVID needs no identity (as in SPIRE);
 * - streams send the full state at once, then a full fresh message whenever `provider.onChange` fired and
 *   the caller's message actually changed (compared byte for byte), until the client cancels; if the
 *   caller loses its last SVID the stream ends with PERMISSION_DENIED (as in SPIRE);
 * - maps are keyed by trust domain ID (`spiffe://example.org`), chains are leaf first, keys PKCS#8 DER,
 *   the default SVID first; SVIDs with a hint already seen are dropped (first one wins, as SPIRE's hint
 *   filter does);
 * - FetchJWTBundles: per trust domain a standard JWKS (`{"keys":[…]}` without spiffe_sequence), each JWT
 *   authority with its `kid` and `use: "jwt-svid"` (parseSpiffeBundle reads it; go-spiffe ignores `use`).
 *   ML-DSA (`kty: AKP`) keys are left out unless `jwtBundlesIncludePostQuantum`: go-jose, under every
 *   go-spiffe client, rejects a whole JWKS holding an unknown `kty`;
 * - ValidateJWTSVID validates against `provider.allBundles()`; any failure is INVALID_ARGUMENT with the
 *   reason; the claims come back as a Struct, `aud` always as a list (SPIRE's compatibility rule).
 */
import type net from "node:net";
import type { JwtAuthority, TrustBundle } from "../../core/bundle-types.ts";
import { bundleJwk, JWT_SVID_USE } from "../../core/bundle.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import { isQhxError } from "../../core/errors.ts";
import { validateJwtSvid } from "../../core/jwtsvid.ts";
import { SpiffeId } from "../../core/spiffeid.ts";
import type { Logger } from "../../server/logger.ts";
import {
  type GrpcCallContext,
  GrpcError,
  GrpcServer,
  type GrpcServerOptions,
  type GrpcServerStreamCall,
  GrpcStatus,
  type ProtoMessage,
} from "../grpc/server.ts";
import type { PeerCred } from "../workload/types.ts";
import { protoType, WORKLOAD_SERVICE_NAME } from "./proto.ts";
import { addSdsService, type SdsOptions } from "./sds.ts";
import type { WorkloadIdentities, WorkloadIdentityProvider } from "./types.ts";
import {
  bundleOf,
  concatDer,
  filterHints,
  resolveIdentities,
  toProtoStruct,
  trustDomainId,
  watchIdentities,
} from "./watch.ts";

export { filterHints };

export const SECURITY_HEADER = "workload.spiffe.io";

export interface WorkloadApiServerOptions {
  provider: WorkloadIdentityProvider;
  /** The caller of a connection (SO_PEERCRED of the socket). */
  peerOf: (socket: net.Socket) => PeerCred | Promise<PeerCred>;
  logger?: Logger;
  /** Time for ValidateJWTSVID. Default: the system clock. */
  clock?: Clock;
  /** Let callers without an SVID stream bundles (SPIRE's `allow_unauthenticated_verifiers`). Default false. */
  allowUnauthenticatedVerifiers?: boolean;
  /** ValidateJWTSVID accepts ML-DSA JWT-SVIDs (non-standard; see jwtsvid.ts). Default false. */
  allowPostQuantumJwt?: boolean;
  /** FetchJWTBundles also lists ML-DSA (`kty: AKP`) keys, which go-spiffe clients cannot parse. Default false. */
  jwtBundlesIncludePostQuantum?: boolean;
  /** Envoy SDS on the same server (default on, with SPIRE's default names); `false` leaves it out. */
  sds?: SdsOptions | false;
  /** Passed to GrpcServer (message size limits, concurrency, shutdown grace). */
  grpc?: Omit<GrpcServerOptions, "peerOf" | "logger">;
}

function requireSecurityHeader(call: GrpcCallContext): void {
  if (call.metadata[SECURITY_HEADER] !== "true") {
    throw new GrpcError(GrpcStatus.INVALID_ARGUMENT, "security header missing from request");
  }
}

function noIdentity(): GrpcError {
  return new GrpcError(GrpcStatus.PERMISSION_DENIED, "no identity issued");
}

function trustDomainOf(spiffeId: string): string {
  return SpiffeId.parse(spiffeId).trustDomain;
}

/** X509SVIDResponse for these identities (plain-object form). */
export function x509SvidResponse(ids: WorkloadIdentities): ProtoMessage {
  const own = ids.bundles[0];
  const svids = filterHints(ids.svids).map((s) => {
    const td = trustDomainOf(s.spiffeId);
    const bundle = bundleOf(ids.bundles, td) ?? own;
    return {
      spiffe_id: s.spiffeId,
      x509_svid: concatDer(s.chain),
      x509_svid_key: s.privateKey,
      bundle: concatDer(bundle?.x509Authorities ?? []),
      hint: s.hint ?? "",
    };
  });
  const svidDomains = new Set(ids.svids.map((s) => trustDomainOf(s.spiffeId)));
  if (own) svidDomains.add(own.trustDomain);
  const federated: Record<string, Uint8Array> = {};
  for (const b of ids.bundles) {
    if (!svidDomains.has(b.trustDomain))
      federated[trustDomainId(b.trustDomain)] = concatDer(b.x509Authorities);
  }
  return { svids, crl: [], federated_bundles: federated };
}

/** X509BundlesResponse: every bundle of the caller, keyed by trust domain ID. */
export function x509BundlesResponse(ids: WorkloadIdentities): ProtoMessage {
  const bundles: Record<string, Uint8Array> = {};
  for (const b of ids.bundles) bundles[trustDomainId(b.trustDomain)] = concatDer(b.x509Authorities);
  return { crl: [], bundles };
}

function isPostQuantumKey(a: JwtAuthority): boolean {
  return (a.publicKey.asymmetricKeyType ?? "").startsWith("ml-dsa");
}

/** A standard JWKS of a bundle's JWT authorities (kid and `use: "jwt-svid"` on each key). */
export function jwtBundleJwks(b: TrustBundle, includePostQuantum = false): string {
  const keys = b.jwtAuthorities
    .filter((a) => includePostQuantum || !isPostQuantumKey(a))
    .map((a) => ({ use: JWT_SVID_USE, kid: a.kid, ...bundleJwk(a.publicKey) }));
  return JSON.stringify({ keys });
}

/** JWTBundlesResponse: a JWKS per trust domain of the caller, keyed by trust domain ID. */
export function jwtBundlesResponse(ids: WorkloadIdentities, includePostQuantum = false): ProtoMessage {
  const bundles: Record<string, Uint8Array> = {};
  for (const b of ids.bundles) {
    bundles[trustDomainId(b.trustDomain)] = new Uint8Array(Buffer.from(jwtBundleJwks(b, includePostQuantum)));
  }
  return { bundles };
}

/**
 * The Workload API server (plus SDS unless `sds: false`). Call `listen(socketPath)` on the result; the
 * caller owns `close()`.
 */
export function createWorkloadApiServer(opts: WorkloadApiServerOptions): GrpcServer {
  const server = new GrpcServer({ ...opts.grpc, peerOf: opts.peerOf, logger: opts.logger });
  addWorkloadApiService(server, opts);
  if (opts.sds !== false) {
    addSdsService(server, { provider: opts.provider, logger: opts.logger, ...(opts.sds ?? {}) });
  }
  return server;
}

/** Register the SpiffeWorkloadAPI service on an existing GrpcServer. */
export function addWorkloadApiService(
  server: GrpcServer,
  opts: Omit<WorkloadApiServerOptions, "peerOf" | "sds" | "grpc">,
): void {
  const { provider } = opts;
  const log = opts.logger;
  const clock = opts.clock ?? systemClock;
  const pq = opts.jwtBundlesIncludePostQuantum ?? false;
  const T = (name: string) => protoType(name);

  /**
   * A stream of full-state messages: `compose` builds the message for the current identities (or throws
   * a GrpcError, which ends the stream); it is sent when its encoding differs from the last one sent.
   */
  const stream = async (
    call: GrpcServerStreamCall,
    responseType: string,
    compose: (ids: WorkloadIdentities) => ProtoMessage,
  ): Promise<void> => {
    requireSecurityHeader(call);
    const type = T(responseType);
    let last: Buffer | undefined;
    await watchIdentities(provider, call.peer, call.signal, log, async (ids) => {
      const bytes = Buffer.from(type.encode(type.fromObject(compose(ids))).finish());
      if (last && last.equals(bytes)) return;
      last = bytes;
      await call.send(bytes);
    });
  };

  const requireIdentity = (ids: WorkloadIdentities) => {
    if (ids.svids.length === 0) throw noIdentity();
  };

  server.addService(WORKLOAD_SERVICE_NAME, {
    FetchX509SVID: {
      type: "server_stream",
      requestType: T("X509SVIDRequest"),
      responseType: T("X509SVIDResponse"),
      handler: (_req, call) =>
        stream(call, "X509SVIDResponse", (ids) => {
          requireIdentity(ids);
          return x509SvidResponse(ids);
        }),
    },
    FetchX509Bundles: {
      type: "server_stream",
      requestType: T("X509BundlesRequest"),
      responseType: T("X509BundlesResponse"),
      handler: (_req, call) =>
        stream(call, "X509BundlesResponse", (ids) => {
          if (!opts.allowUnauthenticatedVerifiers) requireIdentity(ids);
          return x509BundlesResponse(ids);
        }),
    },
    FetchJWTBundles: {
      type: "server_stream",
      requestType: T("JWTBundlesRequest"),
      responseType: T("JWTBundlesResponse"),
      handler: (_req, call) =>
        stream(call, "JWTBundlesResponse", (ids) => {
          if (!opts.allowUnauthenticatedVerifiers) requireIdentity(ids);
          return jwtBundlesResponse(ids, pq);
        }),
    },
    FetchJWTSVID: {
      type: "unary",
      requestType: T("JWTSVIDRequest"),
      responseType: T("JWTSVIDResponse"),
      handler: async (req, call) => {
        requireSecurityHeader(call);
        const audience = ((req["audience"] as string[] | undefined) ?? []).filter((a) => a !== "");
        if (audience.length === 0) {
          throw new GrpcError(GrpcStatus.INVALID_ARGUMENT, "audience must be specified");
        }
        const requested = (req["spiffe_id"] as string | undefined) ?? "";
        if (requested !== "") {
          try {
            SpiffeId.parse(requested);
          } catch (e) {
            throw new GrpcError(
              GrpcStatus.INVALID_ARGUMENT,
              `invalid requested SPIFFE ID: ${(e as Error).message}`,
            );
          }
        }
        const ids = await resolveIdentities(provider, call.peer, log);
        // Unset spiffe_id means every identity of the caller (the spec's wording), default first.
        const wanted = [...new Set(filterHints(ids.svids).map((s) => s.spiffeId))].filter(
          (id) => requested === "" || id === requested,
        );
        if (wanted.length === 0) throw noIdentity();
        let minted: { spiffeId: string; token: string; hint?: string }[];
        try {
          const perId = await Promise.all(
            wanted.map((id) => provider.fetchJwtSvids(call.peer, audience, id)),
          );
          minted = perId.flat();
        } catch (e) {
          if (e instanceof GrpcError) throw e;
          log?.error({ err: e, pid: call.peer.pid }, "could not fetch JWT-SVID");
          const why = isQhxError(e) ? `${e.code}: ${e.message}` : (e as Error).message;
          throw new GrpcError(GrpcStatus.UNAVAILABLE, `could not fetch JWT-SVID: ${why}`, { cause: e });
        }
        if (minted.length === 0) throw noIdentity();
        return {
          svids: minted.map((m) => ({ spiffe_id: m.spiffeId, svid: m.token, hint: m.hint ?? "" })),
        };
      },
    },
    ValidateJWTSVID: {
      type: "unary",
      requestType: T("ValidateJWTSVIDRequest"),
      responseType: T("ValidateJWTSVIDResponse"),
      handler: async (req, call) => {
        requireSecurityHeader(call);
        const audience = (req["audience"] as string | undefined) ?? "";
        const svid = (req["svid"] as string | undefined) ?? "";
        if (audience === "") throw new GrpcError(GrpcStatus.INVALID_ARGUMENT, "audience must be specified");
        if (svid === "") throw new GrpcError(GrpcStatus.INVALID_ARGUMENT, "svid must be specified");
        const bundles = new Map(provider.allBundles().map((b) => [b.trustDomain, b]));
        let result: Awaited<ReturnType<typeof validateJwtSvid>>;
        try {
          result = await validateJwtSvid(svid, {
            audience,
            bundles,
            now: clock.now(),
            allowPostQuantum: opts.allowPostQuantumJwt ?? false,
          });
        } catch (e) {
          const why = isQhxError(e) ? `${e.code}: ${e.message}` : String(e);
          log?.warn({ pid: call.peer.pid, reason: why }, "JWT-SVID validation failed");
          throw new GrpcError(GrpcStatus.INVALID_ARGUMENT, why);
        }
        const claims: Record<string, unknown> = { ...result.claims };
        if (typeof claims["aud"] === "string") claims["aud"] = [claims["aud"]];
        return { spiffe_id: result.spiffeId.toString(), claims: toProtoStruct(claims) };
      },
    },
  });
}
