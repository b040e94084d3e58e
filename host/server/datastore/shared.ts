/**
 * What every Datastore implementation shares: input checks and defaults, the canonical selector key, and
 * the mapping of a table row to its record. Each implementation supplies only how its driver hands out a
 * column (`ColumnReader`): node:sqlite gives integers as numbers and booleans as 0/1, pg gives BIGINT as a
 * decimal string and BOOLEAN as a boolean.
 */
import { QhxError, ValidationError } from "../../core/errors.ts";
import type {
  AssuranceLevel,
  AttestedNode,
  BundleRecord,
  CaKind,
  CaRecord,
  CaStatus,
  EntryPatch,
  FederationRelationship,
  LogEntryRecord,
  LogHeadRecord,
  RegistrationEntry,
  RegistrationEntryInput,
  Selector,
} from "./types.ts";

export const CA_KINDS: readonly CaKind[] = ["x509", "jwt"];
export const CA_STATUSES: readonly CaStatus[] = ["prepared", "active", "retired"];
export const ASSURANCE_LEVELS: readonly AssuranceLevel[] = ["hardware", "key", "token"];
export const FEDERATION_PROFILES: readonly string[] = ["https_web", "https_spiffe"];

export function checkOneOf(value: string, allowed: readonly string[], field: string): void {
  if (!allowed.includes(value)) {
    throw new ValidationError(`must be one of ${allowed.join(", ")} (got ${JSON.stringify(value)})`, field);
  }
}

/** The datastore clock's current unix second (an injected clock must return seconds, not ms). */
export function now(clock: () => number): number {
  const t = clock();
  if (!Number.isFinite(t) || t > 1e11) {
    throw new QhxError("QHX_INTERNAL", `datastore clock must return unix seconds (got ${t})`);
  }
  return Math.floor(t);
}

export type EntryFields = Omit<RegistrationEntry, "id" | "createdAt" | "updatedAt" | "revision">;

/** Fill defaults and copy, so callers' later mutations do not reach returned records. */
export function withDefaults(input: RegistrationEntryInput): EntryFields {
  if (input.selectors.length === 0)
    throw new ValidationError("at least one selector is required", "selectors");
  return {
    spiffeId: input.spiffeId,
    parentId: input.parentId,
    selectors: input.selectors.map((s) => ({ type: s.type, value: s.value })),
    namespace: input.namespace ?? "default",
    labels: Object.fromEntries(Object.entries(input.labels ?? {})),
    x509SvidTtl: input.x509SvidTtl ?? 0,
    jwtSvidTtl: input.jwtSvidTtl ?? 0,
    dnsNames: [...(input.dnsNames ?? [])],
    federatesWith: [...(input.federatesWith ?? [])],
    admin: input.admin ?? false,
    expiresAt: input.expiresAt ?? null,
  };
}

/** Drop undefined-valued keys so spreading a patch never erases a field; `expiresAt: null` is kept. */
export function definedOnly(patch: EntryPatch): EntryPatch {
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) as EntryPatch;
}

/** Canonical, unambiguous form of a selector set: JSON of the sorted [type, value] pairs. */
export function selectorsKey(selectors: Selector[]): string {
  const pairs = selectors.map((s) => [s.type, s.value] as const);
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return JSON.stringify(pairs);
}

export function corrupt(expected: string, v: unknown): QhxError {
  return new QhxError("QHX_DATASTORE_CORRUPT", `expected ${expected} column, got ${typeof v}`);
}

/** How one driver hands out a column; each throws QHX_DATASTORE_CORRUPT on a value of the wrong type. */
export interface ColumnReader {
  str(v: unknown): string;
  num(v: unknown): number;
  bool(v: unknown): boolean;
  blob(v: unknown): Uint8Array;
}

type Row = Record<string, unknown>;

/** Row → record for every table, over one driver's column reader. */
export function rowMappers(c: ColumnReader) {
  const { str, num, bool, blob } = c;
  const selectorPairs = (v: unknown): Selector[] =>
    (JSON.parse(str(v)) as [string, string][]).map(([type, value]) => ({ type, value }));
  return {
    entry(r: Row): RegistrationEntry {
      return {
        id: str(r.id),
        spiffeId: str(r.spiffe_id),
        parentId: str(r.parent_id),
        selectors: selectorPairs(r.selectors_json),
        namespace: str(r.namespace),
        labels: JSON.parse(str(r.labels)) as Record<string, string>,
        x509SvidTtl: num(r.x509_svid_ttl),
        jwtSvidTtl: num(r.jwt_svid_ttl),
        dnsNames: JSON.parse(str(r.dns_names)) as string[],
        federatesWith: JSON.parse(str(r.federates_with)) as string[],
        admin: bool(r.admin),
        expiresAt: r.expires_at === null ? null : num(r.expires_at),
        createdAt: num(r.created_at),
        updatedAt: num(r.updated_at),
        revision: num(r.revision),
      };
    },
    bundle(r: Row): BundleRecord {
      return {
        trustDomain: str(r.trust_domain),
        document: str(r.document),
        sequence: num(r.sequence),
        updatedAt: num(r.updated_at),
      };
    },
    federation(r: Row): FederationRelationship {
      return {
        trustDomain: str(r.trust_domain),
        bundleEndpointUrl: str(r.bundle_endpoint_url),
        profile: str(r.profile) as FederationRelationship["profile"],
        endpointSpiffeId: r.endpoint_spiffe_id === null ? null : str(r.endpoint_spiffe_id),
        webTrustRoots: r.web_trust_roots === null ? null : str(r.web_trust_roots),
        createdAt: num(r.created_at),
        updatedAt: num(r.updated_at),
      };
    },
    logEntry(r: Row): LogEntryRecord {
      return {
        leafIndex: num(r.leaf_index),
        leafHash: blob(r.leaf_hash),
        statementHash: blob(r.statement_hash),
        admittedAt: num(r.admitted_at),
        statement: blob(r.statement),
        signerId: str(r.signer_id),
        peerId: str(r.peer_id),
        decision: str(r.decision),
        exchangeId: str(r.exchange_id),
        treeSize: num(r.tree_size),
      };
    },
    /** CA journal rows, with the upstream chain rows (ca_id, der; in position order) of all of them. */
    cas(journal: Row[], chainRows: Row[]): CaRecord[] {
      const chains = new Map<string, Uint8Array[]>();
      for (const c of chainRows) {
        const id = str(c.ca_id);
        const list = chains.get(id) ?? [];
        list.push(blob(c.der));
        chains.set(id, list);
      }
      return journal.map((r) => ({
        id: str(r.id),
        kind: str(r.kind) as CaKind,
        status: str(r.status) as CaStatus,
        keyId: str(r.key_id),
        alg: str(r.alg),
        certDer: r.cert_der === null ? null : blob(r.cert_der),
        upstreamChain: chains.get(str(r.id)) ?? [],
        publicKeyDer: r.public_key_der === null ? null : blob(r.public_key_der),
        kid: r.kid === null ? null : str(r.kid),
        notBefore: num(r.not_before),
        notAfter: num(r.not_after),
        createdAt: num(r.created_at),
      }));
    },
    logHead(r: Row): LogHeadRecord {
      return {
        treeSize: num(r.tree_size),
        rootHash: blob(r.root_hash),
        createdAt: num(r.created_at),
        protectedHeader: blob(r.protected),
        signature: blob(r.signature),
        checkpoint: str(r.checkpoint),
      };
    },
    node(r: Row): AttestedNode {
      return {
        spiffeId: str(r.spiffe_id),
        attestationType: str(r.attestation_type),
        selectors: selectorPairs(r.selectors),
        assurance: str(r.assurance) as AssuranceLevel,
        certSerial: str(r.cert_serial),
        certNotAfter: num(r.cert_not_after),
        banned: bool(r.banned),
        createdAt: num(r.created_at),
        updatedAt: num(r.updated_at),
        aliases: JSON.parse(str(r.aliases)) as string[],
      };
    },
  };
}
