/**
 * Shared by the Workload API and SDS servers: resolving a caller's identities, following changes, and the
 * small encodings both need.
 */
import type { TrustBundle } from "../../core/bundle-types.ts";
import type { Logger } from "../../server/logger.ts";
import { GrpcError, GrpcStatus } from "../grpc/server.ts";
import type { PeerCred } from "../workload/types.ts";
import type { WorkloadIdentities, WorkloadIdentityProvider, WorkloadX509Svid } from "./types.ts";

/** `spiffe://<td>`: the key of a bundle in Workload API maps and the SDS resource name of a bundle. */
export function trustDomainId(trustDomain: string): string {
  return `spiffe://${trustDomain}`;
}

/** DER certificates back to back (the Workload API's `bytes` form of chains and bundles). */
export function concatDer(ders: readonly Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(ders.map((d) => Buffer.from(d.buffer, d.byteOffset, d.byteLength))));
}

/**
 * identitiesFor, with SPIRE's error mapping: a GrpcError thrown by the provider is passed on; anything else
 * is logged and becomes UNAVAILABLE "workload attestation failed" (clients retry).
 */
export async function resolveIdentities(
  provider: WorkloadIdentityProvider,
  peer: PeerCred,
  log: Logger | undefined,
): Promise<WorkloadIdentities> {
  try {
    return await provider.identitiesFor(peer);
  } catch (e) {
    if (e instanceof GrpcError) throw e;
    log?.error({ err: e, pid: peer.pid, uid: peer.uid }, "workload attestation failed");
    throw new GrpcError(GrpcStatus.UNAVAILABLE, "workload attestation failed", { cause: e });
  }
}

/**
 * Calls `emit` with the caller's identities at once, then again after provider changes (coalesced: a
 * burst of changes while one resolution runs costs one more resolution), one at a time, until `signal`
 * aborts. The onChange subscription is taken before the first resolution (no change can be missed) and
 * always released. Resolves when aborted; rejects with what `emit` or the resolution threw.
 */
export async function watchIdentities(
  provider: WorkloadIdentityProvider,
  peer: PeerCred,
  signal: AbortSignal,
  log: Logger | undefined,
  emit: (ids: WorkloadIdentities) => Promise<void>,
): Promise<void> {
  let dirty = true;
  let wake: (() => void) | undefined;
  const poke = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const unsubscribe = provider.onChange(() => {
    dirty = true;
    poke();
  });
  signal.addEventListener("abort", poke, { once: true });
  try {
    while (!signal.aborted) {
      if (!dirty) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        continue;
      }
      dirty = false;
      const ids = await resolveIdentities(provider, peer, log);
      if (signal.aborted) break;
      await emit(ids);
    }
  } finally {
    unsubscribe();
    signal.removeEventListener("abort", poke);
  }
}

/** The caller's SVIDs, default first, dropping any whose non-empty hint an earlier SVID already has. */
export function filterHints(svids: readonly WorkloadX509Svid[]): WorkloadX509Svid[] {
  const seen = new Set<string>();
  const out: WorkloadX509Svid[] = [];
  for (const s of svids) {
    if (s.hint) {
      if (seen.has(s.hint)) continue;
      seen.add(s.hint);
    }
    out.push(s);
  }
  return out;
}

/** The bundle of a trust domain among the caller's bundles. */
export function bundleOf(bundles: readonly TrustBundle[], trustDomain: string): TrustBundle | undefined {
  return bundles.find((b) => b.trustDomain === trustDomain);
}

/** JSON value → google.protobuf.Value (plain-object form for protobufjs fromObject). */
export function toProtoValue(v: unknown): Record<string, unknown> {
  if (v === null || v === undefined) return { null_value: 0 };
  switch (typeof v) {
    case "number":
      return { number_value: v };
    case "string":
      return { string_value: v };
    case "boolean":
      return { bool_value: v };
    case "bigint":
      return { number_value: Number(v) };
    case "object":
      if (Array.isArray(v)) return { list_value: { values: v.map(toProtoValue) } };
      return { struct_value: toProtoStruct(v as Record<string, unknown>) };
    default:
      return { null_value: 0 };
  }
}

/** JSON object → google.protobuf.Struct (plain-object form). */
export function toProtoStruct(obj: Record<string, unknown>): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (v !== undefined) fields[k] = toProtoValue(v);
  }
  return { fields };
}

/** google.protobuf.Struct (plain-object form, as protobufjs or proto-loader decode it) → JSON object. */
export function fromProtoStruct(s: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const fields = (s as { fields?: Record<string, unknown> } | null | undefined)?.fields ?? {};
  for (const [k, v] of Object.entries(fields)) out[k] = fromProtoValue(v);
  return out;
}

/** google.protobuf.Value (plain-object form) → JSON value. */
export function fromProtoValue(v: unknown): unknown {
  const o = (v ?? {}) as Record<string, unknown>;
  if (o["struct_value"] != null) return fromProtoStruct(o["struct_value"]);
  if (o["list_value"] != null) {
    const values = (o["list_value"] as { values?: unknown[] }).values ?? [];
    return values.map(fromProtoValue);
  }
  if (o["string_value"] != null) return o["string_value"];
  if (o["number_value"] != null) return o["number_value"];
  if (o["bool_value"] != null) return o["bool_value"];
  return null;
}
