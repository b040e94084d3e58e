/**
 * The one Datastore interface. SQLite (node:sqlite) is the embedded default; a PostgreSQL implementation
 * (pg) plugs in behind the same interface, which is why every method is async even though node:sqlite is
 * synchronous. Every mutating call is one transaction: when its promise resolves, the write is durable.
 */

export interface Selector {
  /** e.g. `unix`, `tpm`, `x509pop`, `k8s` */
  type: string;
  /** e.g. `uid:1000`, `pcr:7:ab12…` */
  value: string;
}

export interface RegistrationEntryInput {
  spiffeId: string;
  parentId: string;
  selectors: Selector[];
  namespace?: string;
  labels?: Record<string, string>;
  /** seconds; 0 = server default */
  x509SvidTtl?: number;
  /** seconds; 0 = server default */
  jwtSvidTtl?: number;
  dnsNames?: string[];
  /** trust domain names */
  federatesWith?: string[];
  admin?: boolean;
  /** unix seconds; null/undefined = never */
  expiresAt?: number | null;
}

export interface RegistrationEntry {
  id: string;
  spiffeId: string;
  parentId: string;
  selectors: Selector[];
  namespace: string;
  labels: Record<string, string>;
  x509SvidTtl: number;
  jwtSvidTtl: number;
  dnsNames: string[];
  federatesWith: string[];
  admin: boolean;
  expiresAt: number | null;
  /** unix seconds */
  createdAt: number;
  updatedAt: number;
  /** starts at 1, +1 on every update (optimistic concurrency) */
  revision: number;
}

export type EntryPatch = Partial<Omit<RegistrationEntryInput, never>>;

export interface EntryFilter {
  spiffeId?: string;
  parentId?: string;
  namespace?: string;
  /** entries whose selectors include this one */
  selector?: Selector;
}

export type CaKind = "x509" | "jwt";
export type CaStatus = "prepared" | "active" | "retired";

/** One row of the CA journal: an X.509 signing CA or a JWT signing key, and where it is in its life. */
export interface CaRecord {
  id: string;
  kind: CaKind;
  status: CaStatus;
  /** key manager id of the private key */
  keyId: string;
  /** KeyAlg */
  alg: string;
  /** X.509 CA: DER certificate; JWT key: null */
  certDer: Uint8Array | null;
  /** X.509 CA signed by an upstream CA: the upstream chain (DER, issuer first up to the root); else [] */
  upstreamChain: Uint8Array[];
  /** JWT key: SPKI DER of the public key; X.509 CA: null */
  publicKeyDer: Uint8Array | null;
  /** JWT key id; X.509: null */
  kid: string | null;
  /** unix seconds */
  notBefore: number;
  notAfter: number;
  createdAt: number;
}

export interface BundleRecord {
  /** trust domain name */
  trustDomain: string;
  /** the SPIFFE bundle document (JWK Set JSON text) */
  document: string;
  /** spiffe_sequence of the document; putBundle refuses a sequence not greater than the stored one */
  sequence: number;
  updatedAt: number;
}

/** The two SPIFFE Federation bundle endpoint profiles. */
export type FederationProfile = "https_web" | "https_spiffe";

/**
 * An explicit federation relationship with a foreign trust domain: where its bundle endpoint is and how
 * to authenticate it. The foreign bundle itself is a BundleRecord of that trust domain.
 */
export interface FederationRelationship {
  /** the foreign trust domain name */
  trustDomain: string;
  /** https URL of the foreign bundle endpoint */
  bundleEndpointUrl: string;
  profile: FederationProfile;
  /** https_spiffe: the SPIFFE ID the endpoint must authenticate as; null for https_web */
  endpointSpiffeId: string | null;
  /** https_web: PEM CA certificates to validate the endpoint with instead of the system roots; else null */
  webTrustRoots: string | null;
  /** unix seconds */
  createdAt: number;
  updatedAt: number;
}

export type FederationRelationshipPatch = Partial<
  Pick<FederationRelationship, "bundleEndpointUrl" | "profile" | "endpointSpiffeId" | "webTrustRoots">
>;

export interface JoinTokenRecord {
  /** sha256 hex of the token; the token itself is never stored */
  tokenHash: string;
  expiresAt: number;
  createdAt: number;
  /** optional alias SPIFFE ID given to the node that redeems the token (`qhx token generate --spiffe-id`) */
  spiffeId?: string;
}

export type AssuranceLevel = "hardware" | "key" | "token";

export interface AttestedNode {
  spiffeId: string;
  attestationType: string;
  selectors: Selector[];
  assurance: AssuranceLevel;
  certSerial: string;
  certNotAfter: number;
  banned: boolean;
  createdAt: number;
  updatedAt: number;
  /** alias SPIFFE IDs of this node: entries whose parent is an alias apply to it */
  aliases?: string[];
}

/** One receipt in the notary's Merkle log (host/server/notary.ts). */
export interface LogEntryRecord {
  leafIndex: number;
  /** RFC 9162 leaf hash */
  leafHash: Uint8Array;
  /** SHA-256 of the statement (COSE_Sign1 with an empty unprotected header) */
  statementHash: Uint8Array;
  /** unix ms; part of the leaf */
  admittedAt: number;
  statement: Uint8Array;
  signerId: string;
  peerId: string;
  decision: string;
  exchangeId: string;
  /** size of the first signed tree head that includes the entry */
  treeSize: number;
}

/** A signed tree head of the notary log. */
export interface LogHeadRecord {
  treeSize: number;
  rootHash: Uint8Array;
  /** unix ms */
  createdAt: number;
  /** COSE Receipt protected header and signature over the root */
  protectedHeader: Uint8Array;
  signature: Uint8Array;
  /** C2SP checkpoint (signed note) */
  checkpoint: string;
}

export interface LogEntryFilter {
  signerId?: string;
  peerId?: string;
  fromIndex?: number;
  limit?: number;
}

export interface Datastore {
  readonly kind: "sqlite" | "postgres";
  close(): Promise<void>;

  createEntry(input: RegistrationEntryInput): Promise<RegistrationEntry>;
  getEntry(id: string): Promise<RegistrationEntry | undefined>;
  listEntries(filter?: EntryFilter): Promise<RegistrationEntry[]>;
  /** Throws NotFoundError; with expectedRevision, throws QHX_CONFLICT if the entry changed meanwhile. */
  updateEntry(id: string, patch: EntryPatch, expectedRevision?: number): Promise<RegistrationEntry>;
  deleteEntry(id: string): Promise<boolean>;

  putCa(rec: CaRecord): Promise<void>;
  setCaStatus(id: string, status: CaStatus): Promise<void>;
  listCas(kind?: CaKind): Promise<CaRecord[]>;
  deleteCa(id: string): Promise<void>;

  getBundle(trustDomain: string): Promise<BundleRecord | undefined>;
  putBundle(rec: BundleRecord): Promise<void>;
  listBundles(): Promise<BundleRecord[]>;
  deleteBundle(trustDomain: string): Promise<boolean>;

  createJoinToken(rec: JoinTokenRecord): Promise<void>;
  /** Atomically delete and return the token if it exists and has not expired at `now` (unix s). */
  consumeJoinToken(tokenHash: string, now: number): Promise<JoinTokenRecord | undefined>;
  pruneJoinTokens(now: number): Promise<number>;

  /**
   * Create a relationship and store its initial (out-of-band) bundle in one transaction. QHX_ALREADY_EXISTS
   * if a relationship for that trust domain exists.
   */
  createFederationRelationship(rel: FederationRelationship, initialBundle?: BundleRecord): Promise<void>;
  getFederationRelationship(trustDomain: string): Promise<FederationRelationship | undefined>;
  listFederationRelationships(): Promise<FederationRelationship[]>;
  /** Throws NotFoundError. */
  updateFederationRelationship(
    trustDomain: string,
    patch: FederationRelationshipPatch,
    updatedAt: number,
  ): Promise<FederationRelationship>;
  /** Delete the relationship and the foreign bundle it brought, in one transaction. */
  deleteFederationRelationship(trustDomain: string): Promise<boolean>;

  upsertNode(node: AttestedNode): Promise<void>;
  getNode(spiffeId: string): Promise<AttestedNode | undefined>;
  listNodes(): Promise<AttestedNode[]>;
  deleteNode(spiffeId: string): Promise<boolean>;

  /** Append entries (contiguous, extending the log) and their signed tree head in one transaction. */
  appendLog(entries: LogEntryRecord[], head: LogHeadRecord): Promise<void>;
  /** Every entry's leaf hash and statement hash, in leaf order. */
  logHashes(): Promise<{ leafHash: Uint8Array; statementHash: Uint8Array }[]>;
  getLogEntry(leafIndex: number): Promise<LogEntryRecord | undefined>;
  findLogEntry(statementHash: Uint8Array): Promise<LogEntryRecord | undefined>;
  listLogEntries(filter?: LogEntryFilter): Promise<LogEntryRecord[]>;
  /** The head of that size, or the latest. */
  getLogHead(treeSize?: number): Promise<LogHeadRecord | undefined>;
}
