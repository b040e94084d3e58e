/**
 * Envoy's Secret Discovery Service v3 (`envoy.service.secret.v3.SecretDiscoveryService`: StreamSecrets,
 * FetchSecrets; DeltaSecrets answers UNIMPLEMENTED as in SPIRE) on the Workload API's GrpcServer, as
 * SPIRE's agent serves it:
 *
 * Resources (type `envoy.extensions.transport_sockets.tls.v3.Secret`, in `google.protobuf.Any`):
 * - each SPIFFE ID of the caller → TlsCertificate (PEM chain, leaf first; PEM PKCS#8 key);
 *   `default` (defaultSvidName) → the default SVID, under that name;
 * - `spiffe://<td>` of the own or a federated trust domain → that trust domain's CertificateValidationContext;
 *   `ROOTCA` (defaultBundleName) → the own trust domain's; `ALL` (defaultAllBundlesName) → all of the
 *   caller's trust domains;
 * - no names (a wildcard request) → every SVID by SPIFFE ID and every bundle by trust domain ID;
 * - a name the caller is not entitled to → INVALID_ARGUMENT "workload is not authorized for the requested
 *   identities [...]" (ends the stream, as in SPIRE).
 * Validation contexts use Envoy's SPIFFE certificate validator (`envoy.tls.cert_validator.spiffe`, one trust
 * bundle per trust domain, so no trust domain can vouch for another's IDs), as SPIRE does by default; with
 * `disableSpiffeCertValidation`, Envoy node metadata `disable_spiffe_cert_validation: true`, or an Envoy
 * older than 1.18 (node.user_agent_build_version), they are plain `trusted_ca` PEM instead — and `ALL` is
 * then refused (FAILED_PRECONDITION), since one CA pool for several trust domains would let each
 * impersonate the others.
 *
 * StreamSecrets versioning (SPIRE's state machine): the version is a counter bumped whenever the caller's
 * identities change; every response carries a fresh random nonce. A request whose response_nonce is not
 * the last nonce sent is stale and ignored; one with the right nonce is an ACK (version_info = the last
 * version) or a NACK (another version_info, error_detail set: logged). A response is sent when the set of
 * requested names changes (including the first request) or, for the names last requested, when the
 * identities change. Node info from the first request is kept for later requests that omit it.
 * FetchSecrets answers once, with version_info "" and no nonce.
 */
import crypto from "node:crypto";
import { toPem, toPemChain } from "../../core/pem.ts";
import type { Logger } from "../../server/logger.ts";
import {
  type GrpcBidiStreamCall,
  GrpcError,
  type GrpcServer,
  GrpcStatus,
  type ProtoMessage,
} from "../grpc/server.ts";
import {
  protoType,
  SDS_SERVICE_NAME,
  SECRET_TYPE_URL,
  SPIFFE_VALIDATOR_CONFIG_TYPE_URL,
  SPIFFE_VALIDATOR_NAME,
} from "./proto.ts";
import type { WorkloadIdentities, WorkloadIdentityProvider, WorkloadX509Svid } from "./types.ts";
import { filterHints, fromProtoStruct, resolveIdentities, trustDomainId } from "./watch.ts";
import type { TrustBundle } from "../../core/bundle-types.ts";

export const DEFAULT_SDS_SVID_NAME = "default";
export const DEFAULT_SDS_BUNDLE_NAME = "ROOTCA";
export const DEFAULT_SDS_ALL_BUNDLES_NAME = "ALL";
const DISABLE_SPIFFE_VALIDATION_KEY = "disable_spiffe_cert_validation";

/** SPIRE's `sds` agent settings. */
export interface SdsOptions {
  /** Resource name of the default SVID. Default `default`. */
  defaultSvidName?: string;
  /** Resource name of the own trust domain's validation context. Default `ROOTCA`. */
  defaultBundleName?: string;
  /** Resource name of the validation context for all trust domains. Default `ALL`. */
  defaultAllBundlesName?: string;
  /** Plain trusted_ca validation contexts instead of the SPIFFE validator. Default false. */
  disableSpiffeCertValidation?: boolean;
}

export interface SdsServiceOptions extends SdsOptions {
  provider: WorkloadIdentityProvider;
  logger?: Logger;
}

/** The fields of envoy.service.discovery.v3.DiscoveryRequest this server reads (decoded form). */
export interface DiscoveryRequest {
  version_info: string;
  node: ProtoMessage | null;
  resource_names: string[];
  type_url: string;
  response_nonce: string;
  error_detail: { code?: number; message?: string } | null;
}

function asDiscoveryRequest(m: ProtoMessage): DiscoveryRequest {
  return {
    version_info: (m["version_info"] as string | undefined) ?? "",
    node: (m["node"] as ProtoMessage | null | undefined) ?? null,
    resource_names: (m["resource_names"] as string[] | undefined) ?? [],
    type_url: (m["type_url"] as string | undefined) ?? "",
    response_nonce: (m["response_nonce"] as string | undefined) ?? "",
    error_detail: (m["error_detail"] as DiscoveryRequest["error_detail"] | undefined) ?? null,
  };
}

/** Go's strconv.ParseBool, which SPIRE applies to the node metadata flag. */
function parseGoBool(v: unknown): boolean | undefined {
  if (typeof v === "boolean") return v;
  if (typeof v !== "string") return undefined;
  if (["1", "t", "T", "TRUE", "true", "True"].includes(v)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(v)) return false;
  return undefined;
}

function useSpiffeValidator(req: DiscoveryRequest, opts: SdsOptions): boolean {
  let disabled = opts.disableSpiffeCertValidation ?? false;
  const node = req.node;
  if (node) {
    const override = parseGoBool(fromProtoStruct(node["metadata"])[DISABLE_SPIFFE_VALIDATION_KEY]);
    if (override !== undefined) disabled = override;
  }
  if (disabled) return false;
  const build = node?.["user_agent_build_version"] as { version?: Record<string, number> | null } | null;
  const v = build?.version;
  if (v) {
    const major = v["major_number"] ?? 0;
    const minor = v["minor_number"] ?? 0;
    return (major === 1 && minor > 17) || major > 1;
  }
  return true;
}

function pemBytes(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, "utf8"));
}

function secretAny(secret: ProtoMessage): ProtoMessage {
  const t = protoType("envoy.extensions.transport_sockets.tls.v3.Secret");
  return { type_url: SECRET_TYPE_URL, value: t.encode(t.fromObject(secret)).finish() };
}

function tlsCertificateSecret(name: string, svid: WorkloadX509Svid): ProtoMessage {
  return secretAny({
    name,
    tls_certificate: {
      certificate_chain: { inline_bytes: pemBytes(toPemChain(svid.chain)) },
      private_key: { inline_bytes: pemBytes(toPem(svid.privateKey, "PRIVATE KEY")) },
    },
  });
}

function validationSecret(name: string, bundles: readonly TrustBundle[], spiffe: boolean): ProtoMessage {
  if (!spiffe) {
    return secretAny({
      name,
      validation_context: {
        trusted_ca: { inline_bytes: pemBytes(toPemChain(bundles.flatMap((b) => b.x509Authorities))) },
      },
    });
  }
  const cfgType = protoType("envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig");
  const trustDomains = [...bundles]
    .sort((a, b) => (a.trustDomain < b.trustDomain ? -1 : a.trustDomain > b.trustDomain ? 1 : 0))
    .map((b) => ({
      name: b.trustDomain,
      trust_bundle: { inline_bytes: pemBytes(toPemChain(b.x509Authorities)) },
    }));
  const cfg = cfgType.encode(cfgType.fromObject({ trust_domains: trustDomains })).finish();
  return secretAny({
    name,
    validation_context: {
      custom_validator_config: {
        name: SPIFFE_VALIDATOR_NAME,
        typed_config: { type_url: SPIFFE_VALIDATOR_CONFIG_TYPE_URL, value: cfg },
      },
    },
  });
}

/**
 * The Secret resources a request asks for, as `google.protobuf.Any` (plain-object form). Throws
 * INVALID_ARGUMENT for names the caller is not entitled to.
 */
export function buildSdsResources(
  req: Pick<DiscoveryRequest, "resource_names" | "node">,
  ids: WorkloadIdentities,
  opts: SdsOptions = {},
): ProtoMessage[] {
  const svidName = opts.defaultSvidName ?? DEFAULT_SDS_SVID_NAME;
  const bundleName = opts.defaultBundleName ?? DEFAULT_SDS_BUNDLE_NAME;
  const allName = opts.defaultAllBundlesName ?? DEFAULT_SDS_ALL_BUNDLES_NAME;
  const names = new Set(req.resource_names.filter((n) => n !== ""));
  const wildcard = names.size === 0;
  const spiffe = useSpiffeValidator({ ...asDiscoveryRequest({}), node: req.node }, opts);
  const out: ProtoMessage[] = [];

  for (const b of ids.bundles) {
    const id = trustDomainId(b.trustDomain);
    if (wildcard || names.has(id)) {
      out.push(validationSecret(id, [b], spiffe));
      names.delete(id);
    }
  }
  const own = ids.bundles[0];
  if (own && names.has(bundleName)) {
    out.push(validationSecret(bundleName, [own], spiffe));
    names.delete(bundleName);
  }
  if (ids.bundles.length > 0 && names.has(allName)) {
    if (!spiffe) {
      throw new GrpcError(
        GrpcStatus.FAILED_PRECONDITION,
        `"${allName}" needs Envoy's SPIFFE certificate validator (Envoy 1.18+, SPIFFE validation not disabled)`,
      );
    }
    out.push(validationSecret(allName, ids.bundles, spiffe));
    names.delete(allName);
  }
  filterHints(ids.svids).forEach((s, i) => {
    if (wildcard || names.has(s.spiffeId)) {
      out.push(tlsCertificateSecret(s.spiffeId, s));
      names.delete(s.spiffeId);
    }
    if (i === 0 && names.has(svidName)) {
      out.push(tlsCertificateSecret(svidName, s));
      names.delete(svidName);
    }
  });
  if (names.size > 0) {
    const list = [...names].sort().map((n) => JSON.stringify(n));
    throw new GrpcError(
      GrpcStatus.INVALID_ARGUMENT,
      `workload is not authorized for the requested identities [${list.join(" ")}]`,
    );
  }
  return out;
}

/** A digest of everything SDS serves from these identities: equal digests, equal responses. */
function identitiesDigest(ids: WorkloadIdentities): string {
  const h = crypto.createHash("sha256");
  const put = (b: Uint8Array | string) => {
    const buf = typeof b === "string" ? Buffer.from(b, "utf8") : Buffer.from(b);
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(buf.length);
    h.update(len).update(buf);
  };
  for (const s of ids.svids) {
    put("svid");
    put(s.spiffeId);
    put(s.hint ?? "");
    put(s.privateKey);
    for (const c of s.chain) put(c);
  }
  for (const b of ids.bundles) {
    put("bundle");
    put(b.trustDomain);
    for (const c of b.x509Authorities) put(c);
  }
  return h.digest("hex");
}

function namesChanged(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return true;
  const set = new Set(a);
  return b.some((n) => !set.has(n));
}

type SdsEvent =
  | { kind: "request"; req: DiscoveryRequest }
  | { kind: "change" }
  | { kind: "eof" }
  | { kind: "error"; error: unknown };

/** A single-consumer async queue of events. */
class EventQueue<T> {
  private readonly items: T[] = [];
  private closed = false;
  private wake: (() => void) | undefined;

  push(v: T): void {
    if (this.closed) return;
    this.items.push(v);
    this.notify();
  }

  close(): void {
    this.closed = true;
    this.notify();
  }

  /** The next event, undefined once closed. */
  async next(): Promise<T | undefined> {
    for (;;) {
      if (this.closed) return undefined;
      const v = this.items.shift();
      if (v !== undefined) return v;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

/** Register the SDS service on the Workload API's server. */
export function addSdsService(server: GrpcServer, opts: SdsServiceOptions): void {
  const { provider } = opts;
  const log = opts.logger;
  const requestType = protoType("envoy.service.discovery.v3.DiscoveryRequest");
  const responseType = protoType("envoy.service.discovery.v3.DiscoveryResponse");

  const response = (
    versionInfo: string,
    req: DiscoveryRequest,
    ids: WorkloadIdentities,
    nonce: string,
  ): ProtoMessage => ({
    version_info: versionInfo,
    resources: buildSdsResources(req, ids, opts),
    type_url: req.type_url || SECRET_TYPE_URL,
    nonce,
  });

  const streamSecrets = async (call: GrpcBidiStreamCall): Promise<void> => {
    const events = new EventQueue<SdsEvent>();
    let changePending = false;
    const pushChange = () => {
      if (changePending) return;
      changePending = true;
      events.push({ kind: "change" });
    };
    const unsubscribe = provider.onChange(pushChange);
    const onAbort = () => events.close();
    call.signal.addEventListener("abort", onAbort, { once: true });
    pushChange(); // the caller's identities, at once
    void (async () => {
      try {
        for await (const m of call.requests) events.push({ kind: "request", req: asDiscoveryRequest(m) });
        events.push({ kind: "eof" });
      } catch (e) {
        events.push({ kind: "error", error: e });
      }
    })();

    let versionCounter = 0;
    let versionInfo = "0";
    let lastNonce = "";
    let lastNode: ProtoMessage | null = null;
    let lastReq: DiscoveryRequest | undefined;
    let current: WorkloadIdentities | undefined;
    let currentDigest = "";
    try {
      for (;;) {
        const ev = await events.next();
        if (ev === undefined || ev.kind === "eof") return;
        if (ev.kind === "error") throw ev.error;
        if (ev.kind === "change") {
          changePending = false;
          const ids = await resolveIdentities(provider, call.peer, log);
          const digest = identitiesDigest(ids);
          if (current && digest === currentDigest) continue; // nothing of this caller's changed
          current = ids;
          currentDigest = digest;
          versionCounter++;
          versionInfo = String(versionCounter);
          if (!lastReq) continue; // nothing requested yet
        } else {
          const req = ev.req;
          if (req.error_detail) {
            log?.error(
              { resourceNames: req.resource_names, error: req.error_detail.message ?? "" },
              "Envoy reported errors applying secrets",
            );
          }
          if (lastNonce !== "") {
            if (req.response_nonce !== lastNonce) {
              log?.warn(
                { nonce: req.response_nonce, expected: lastNonce },
                "SDS: stale nonce; request ignored",
              );
              continue;
            }
            if (req.version_info === "" || req.version_info !== versionInfo) {
              log?.error(
                { versionInfo: req.version_info, expected: versionInfo },
                "SDS: Envoy rejected the last secrets version",
              );
            }
            if (req.node === null) req.node = lastNode;
          }
          const send = lastReq === undefined || namesChanged(lastReq.resource_names, req.resource_names);
          lastReq = req;
          if (!send || !current) continue;
        }
        const nonce = crypto.randomBytes(8).toString("hex");
        await call.send(response(versionInfo, lastReq, current, nonce));
        lastNonce = nonce;
        if (lastReq.node !== null) lastNode = lastReq.node;
      }
    } finally {
      unsubscribe();
      call.signal.removeEventListener("abort", onAbort);
    }
  };

  server.addService(SDS_SERVICE_NAME, {
    StreamSecrets: {
      type: "bidi_stream",
      requestType,
      responseType,
      handler: streamSecrets,
    },
    FetchSecrets: {
      type: "unary",
      requestType,
      responseType,
      handler: async (m, call) => {
        const req = asDiscoveryRequest(m);
        const ids = await resolveIdentities(provider, call.peer, log);
        return response("", req, ids, "");
      },
    },
  });
}
