/**
 * The embedded Datastore: one SQLite file through node:sqlite (DatabaseSync).
 *
 * Durability: WAL journal with synchronous=FULL, and every mutating method is a single
 * BEGIN IMMEDIATE … COMMIT transaction that runs to completion before its promise settles, so a resolved
 * write survives a process or OS crash.
 *
 * Opening is careful: before anything is written, the file is probed read-only and refused, untouched,
 * when it is not a SQLite database or is corrupt (QHX_DATASTORE_CORRUPT), belongs to another application
 * (QHX_DATASTORE_FOREIGN) or has a schema newer than this build (QHX_DATASTORE_TOO_NEW). Only then is it
 * opened read-write and migrated, one transaction per migration, tracked in PRAGMA user_version.
 */
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { pathToFileURL } from "node:url";
import { NotFoundError, QhxError, ValidationError } from "../../core/errors.ts";
import type {
  AttestedNode,
  BundleRecord,
  CaKind,
  CaRecord,
  CaStatus,
  Datastore,
  EntryFilter,
  EntryPatch,
  FederationRelationship,
  FederationRelationshipPatch,
  JoinTokenRecord,
  LogEntryFilter,
  LogEntryRecord,
  LogHeadRecord,
  RegistrationEntry,
  RegistrationEntryInput,
  Selector,
} from "./types.ts";
import {
  ASSURANCE_LEVELS,
  CA_KINDS,
  CA_STATUSES,
  checkOneOf,
  type ColumnReader,
  corrupt,
  definedOnly,
  FEDERATION_PROFILES,
  now,
  rowMappers,
  selectorsKey,
  withDefaults,
} from "./shared.ts";

/** The newest schema version this build knows. */
export const SCHEMA_VERSION = 4;
/** PRAGMA application_id of a QHx datastore ("QHx1"). */
export const QHX_APPLICATION_ID = 0x51487831;
/** The table whose presence marks a file as a QHx datastore. */
export const MARKER_TABLE = "qhx_meta";
const BUSY_TIMEOUT_MS = 5000;
const SQLITE_MAGIC = "SQLite format 3\0";

export interface SqliteDatastoreOptions {
  /** Current time in unix seconds (default: the system clock). */
  clock?: () => number;
}

interface Migration {
  version: number;
  description: string;
  up(db: DatabaseSync, now: number): void;
}

const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: "initial schema",
    up(db, now) {
      db.exec(`
        CREATE TABLE ${MARKER_TABLE} (
          key   TEXT PRIMARY KEY,
          value TEXT NOT NULL
        ) STRICT;

        CREATE TABLE entries (
          id             TEXT PRIMARY KEY,
          spiffe_id      TEXT NOT NULL,
          parent_id      TEXT NOT NULL,
          -- canonical JSON of the sorted [type, value] pairs; part of the uniqueness key
          selectors_key  TEXT NOT NULL,
          namespace      TEXT NOT NULL,
          labels         TEXT NOT NULL,   -- JSON object
          x509_svid_ttl  INTEGER NOT NULL,
          jwt_svid_ttl   INTEGER NOT NULL,
          dns_names      TEXT NOT NULL,   -- JSON array
          federates_with TEXT NOT NULL,   -- JSON array
          admin          INTEGER NOT NULL CHECK (admin IN (0, 1)),
          expires_at     INTEGER,
          created_at     INTEGER NOT NULL,
          updated_at     INTEGER NOT NULL,
          revision       INTEGER NOT NULL,
          UNIQUE (spiffe_id, parent_id, selectors_key)
        ) STRICT;
        CREATE INDEX entries_parent_id ON entries (parent_id);
        CREATE INDEX entries_namespace ON entries (namespace);

        CREATE TABLE entry_selectors (
          entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
          position INTEGER NOT NULL,
          type     TEXT NOT NULL,
          value    TEXT NOT NULL,
          PRIMARY KEY (entry_id, position)
        ) STRICT;
        CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value, entry_id);

        CREATE TABLE ca_journal (
          id             TEXT PRIMARY KEY,
          kind           TEXT NOT NULL CHECK (kind IN ('x509', 'jwt')),
          status         TEXT NOT NULL CHECK (status IN ('prepared', 'active', 'retired')),
          key_id         TEXT NOT NULL,
          alg            TEXT NOT NULL,
          cert_der       BLOB,
          public_key_der BLOB,
          kid            TEXT,
          not_before     INTEGER NOT NULL,
          not_after      INTEGER NOT NULL,
          created_at     INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE ca_upstream_chain (
          ca_id    TEXT NOT NULL REFERENCES ca_journal (id) ON DELETE CASCADE,
          position INTEGER NOT NULL,
          der      BLOB NOT NULL,
          PRIMARY KEY (ca_id, position)
        ) STRICT;

        CREATE TABLE bundles (
          trust_domain TEXT PRIMARY KEY,
          document     TEXT NOT NULL,
          sequence     INTEGER NOT NULL,
          updated_at   INTEGER NOT NULL
        ) STRICT;

        CREATE TABLE join_tokens (
          token_hash TEXT PRIMARY KEY,
          expires_at INTEGER NOT NULL,
          created_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

        CREATE TABLE nodes (
          spiffe_id        TEXT PRIMARY KEY,
          attestation_type TEXT NOT NULL,
          selectors        TEXT NOT NULL,  -- JSON [[type, value], ...]
          assurance        TEXT NOT NULL CHECK (assurance IN ('hardware', 'key', 'token')),
          cert_serial      TEXT NOT NULL,
          cert_not_after   INTEGER NOT NULL,
          banned           INTEGER NOT NULL CHECK (banned IN (0, 1)),
          created_at       INTEGER NOT NULL,
          updated_at       INTEGER NOT NULL
        ) STRICT;

        PRAGMA application_id = ${QHX_APPLICATION_ID};
      `);
      const ins = db.prepare(`INSERT INTO ${MARKER_TABLE} (key, value) VALUES (?, ?)`);
      ins.run("application", "qhx");
      ins.run("created_at", String(now));
    },
  },
  {
    version: 2,
    description: "node aliases: a join token may name the node's alias SPIFFE ID",
    up(db) {
      db.exec(`
        ALTER TABLE join_tokens ADD COLUMN spiffe_id TEXT;
        ALTER TABLE nodes ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]';  -- JSON [spiffe_id, ...]
      `);
    },
  },
  {
    version: 3,
    description: "federation relationships (foreign bundle endpoints)",
    up(db) {
      db.exec(`
        CREATE TABLE federation_relationships (
          trust_domain        TEXT PRIMARY KEY,
          bundle_endpoint_url TEXT NOT NULL,
          profile             TEXT NOT NULL CHECK (profile IN ('https_web', 'https_spiffe')),
          endpoint_spiffe_id  TEXT,
          web_trust_roots     TEXT,
          created_at          INTEGER NOT NULL,
          updated_at          INTEGER NOT NULL
        ) STRICT;
      `);
    },
  },
  {
    version: 4,
    description: "provenance: the notary's RFC 9162 Merkle log (entries and signed tree heads)",
    up(db) {
      db.exec(`
        CREATE TABLE log_entries (
          leaf_index     INTEGER PRIMARY KEY,
          leaf_hash      BLOB NOT NULL,
          statement_hash BLOB NOT NULL UNIQUE,
          admitted_at    INTEGER NOT NULL,  -- unix ms, part of the leaf
          statement      BLOB NOT NULL,     -- COSE_Sign1, empty unprotected header
          signer_id      TEXT NOT NULL,
          peer_id        TEXT NOT NULL,
          decision       TEXT NOT NULL,
          exchange_id    TEXT NOT NULL,
          tree_size      INTEGER NOT NULL   -- the first signed tree head that includes it
        ) STRICT;
        CREATE INDEX log_entries_signer_id ON log_entries (signer_id);
        CREATE TABLE log_heads (
          tree_size  INTEGER PRIMARY KEY,
          root_hash  BLOB NOT NULL,
          created_at INTEGER NOT NULL,      -- unix ms
          protected  BLOB NOT NULL,         -- COSE Receipt protected header
          signature  BLOB NOT NULL,         -- COSE Receipt signature over the root
          checkpoint TEXT NOT NULL          -- C2SP signed note
        ) STRICT;
      `);
    },
  },
];

const CORRUPT_HINT =
  "restore the datastore from a backup, or point the datastore path at the right file; QHx left this file untouched";

export class SqliteDatastore implements Datastore {
  readonly kind = "sqlite" as const;
  readonly path: string;
  #db: DatabaseSync | undefined;
  readonly #clock: () => number;
  readonly #stmts = new Map<string, StatementSync>();

  private constructor(path: string, db: DatabaseSync, clock: () => number) {
    this.path = path;
    this.#db = db;
    this.#clock = clock;
  }

  /**
   * Open (creating if absent, with mode 0600) and migrate the datastore at `path`. `":memory:"` gives a
   * private in-memory database. Throws QhxError QHX_DATASTORE_CORRUPT / _FOREIGN / _TOO_NEW /
   * _OPEN_FAILED without modifying an existing file.
   */
  static open(path: string, opts: SqliteDatastoreOptions = {}): SqliteDatastore {
    const clock = opts.clock ?? (() => Math.floor(Date.now() / 1000));
    const memory = path === ":memory:";
    if (!memory) {
      if (probe(path) === "missing") createEmptyFile(path);
    }
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path, { enableForeignKeyConstraints: true });
    } catch (e) {
      throw openFailed(path, e);
    }
    try {
      db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const mode = db.prepare("PRAGMA journal_mode = WAL").get()?.journal_mode;
      if (!memory && mode !== "wal") {
        throw new QhxError(
          "QHX_DATASTORE_OPEN_FAILED",
          `could not switch "${path}" to WAL mode (got ${mode})`,
          {
            hint: "the file system may not support shared memory (e.g. some network file systems); use a local disk",
          },
        );
      }
      db.exec("PRAGMA synchronous = FULL");
      db.exec("PRAGMA foreign_keys = ON");
      migrate(db, path, now(clock));
    } catch (e) {
      db.close();
      throw e instanceof QhxError ? e : mapSqliteError(e, path);
    }
    return new SqliteDatastore(path, db, clock);
  }

  /** The schema version of the open database (PRAGMA user_version). */
  schemaVersion(): number {
    return userVersion(this.#conn());
  }

  async close(): Promise<void> {
    const db = this.#db;
    if (db === undefined) return;
    this.#db = undefined;
    this.#stmts.clear();
    db.close();
  }

  // --- entries ------------------------------------------------------------------------------------------

  async createEntry(input: RegistrationEntryInput): Promise<RegistrationEntry> {
    const e = withDefaults(input);
    return this.#tx(() => {
      const key = selectorsKey(e.selectors);
      this.#assertUniqueEntry(e.spiffeId, e.parentId, key, undefined, e.selectors);
      const t = now(this.#clock);
      const entry: RegistrationEntry = { id: randomUUID(), ...e, createdAt: t, updatedAt: t, revision: 1 };
      this.#stmt(
        `INSERT INTO entries (id, spiffe_id, parent_id, selectors_key, namespace, labels, x509_svid_ttl,
           jwt_svid_ttl, dns_names, federates_with, admin, expires_at, created_at, updated_at, revision)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        entry.id,
        entry.spiffeId,
        entry.parentId,
        key,
        entry.namespace,
        JSON.stringify(entry.labels),
        entry.x509SvidTtl,
        entry.jwtSvidTtl,
        JSON.stringify(entry.dnsNames),
        JSON.stringify(entry.federatesWith),
        entry.admin ? 1 : 0,
        entry.expiresAt,
        entry.createdAt,
        entry.updatedAt,
        entry.revision,
      );
      this.#insertSelectors(entry.id, entry.selectors);
      return entry;
    });
  }

  async getEntry(id: string): Promise<RegistrationEntry | undefined> {
    return this.#read(() => {
      const row = this.#stmt(`${ENTRY_SELECT} WHERE e.id = ?`).get(id);
      return row === undefined ? undefined : rowToEntry(row);
    });
  }

  async listEntries(filter: EntryFilter = {}): Promise<RegistrationEntry[]> {
    return this.#read(() => {
      const where: string[] = [];
      const params: SQLInputValue[] = [];
      if (filter.spiffeId !== undefined) {
        where.push("e.spiffe_id = ?");
        params.push(filter.spiffeId);
      }
      if (filter.parentId !== undefined) {
        where.push("e.parent_id = ?");
        params.push(filter.parentId);
      }
      if (filter.namespace !== undefined) {
        where.push("e.namespace = ?");
        params.push(filter.namespace);
      }
      if (filter.selector !== undefined) {
        where.push("e.id IN (SELECT entry_id FROM entry_selectors WHERE type = ? AND value = ?)");
        params.push(filter.selector.type, filter.selector.value);
      }
      const sql = `${ENTRY_SELECT}${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY e.rowid`;
      return this.#stmt(sql)
        .all(...params)
        .map(rowToEntry);
    });
  }

  async updateEntry(id: string, patch: EntryPatch, expectedRevision?: number): Promise<RegistrationEntry> {
    return this.#tx(() => {
      const row = this.#stmt(`${ENTRY_SELECT} WHERE e.id = ?`).get(id);
      if (row === undefined) throw new NotFoundError("entry", id);
      const cur = rowToEntry(row);
      if (expectedRevision !== undefined && cur.revision !== expectedRevision) {
        throw new QhxError(
          "QHX_CONFLICT",
          `entry ${id} was changed concurrently: expected revision ${expectedRevision}, found ${cur.revision}`,
          { hint: "re-read the entry and apply the change again" },
        );
      }
      const merged = withDefaults({ ...cur, ...definedOnly(patch) });
      const key = selectorsKey(merged.selectors);
      this.#assertUniqueEntry(merged.spiffeId, merged.parentId, key, id, merged.selectors);
      const next: RegistrationEntry = {
        ...merged,
        id,
        createdAt: cur.createdAt,
        updatedAt: now(this.#clock),
        revision: cur.revision + 1,
      };
      this.#stmt(
        `UPDATE entries SET spiffe_id = ?, parent_id = ?, selectors_key = ?, namespace = ?, labels = ?,
           x509_svid_ttl = ?, jwt_svid_ttl = ?, dns_names = ?, federates_with = ?, admin = ?, expires_at = ?,
           updated_at = ?, revision = ?
         WHERE id = ?`,
      ).run(
        next.spiffeId,
        next.parentId,
        key,
        next.namespace,
        JSON.stringify(next.labels),
        next.x509SvidTtl,
        next.jwtSvidTtl,
        JSON.stringify(next.dnsNames),
        JSON.stringify(next.federatesWith),
        next.admin ? 1 : 0,
        next.expiresAt,
        next.updatedAt,
        next.revision,
        id,
      );
      if (patch.selectors !== undefined) {
        this.#stmt("DELETE FROM entry_selectors WHERE entry_id = ?").run(id);
        this.#insertSelectors(id, next.selectors);
      }
      return next;
    });
  }

  async deleteEntry(id: string): Promise<boolean> {
    return this.#tx(() => Number(this.#stmt("DELETE FROM entries WHERE id = ?").run(id).changes) > 0);
  }

  #insertSelectors(entryId: string, selectors: Selector[]): void {
    const ins = this.#stmt(
      "INSERT INTO entry_selectors (entry_id, position, type, value) VALUES (?, ?, ?, ?)",
    );
    selectors.forEach((s, i) => {
      ins.run(entryId, i, s.type, s.value);
    });
  }

  #assertUniqueEntry(
    spiffeId: string,
    parentId: string,
    key: string,
    selfId: string | undefined,
    selectors: Selector[],
  ): void {
    const other = this.#stmt(
      "SELECT id FROM entries WHERE spiffe_id = ? AND parent_id = ? AND selectors_key = ? AND id IS NOT ?",
    ).get(spiffeId, parentId, key, selfId ?? null);
    if (other !== undefined) {
      throw new QhxError(
        "QHX_ALREADY_EXISTS",
        `an entry with spiffe_id "${spiffeId}", parent_id "${parentId}" and selectors ` +
          `[${selectors.map((s) => `${s.type}:${s.value}`).join(", ")}] already exists (id ${String(other.id)})`,
        { hint: "update the existing entry instead of creating a new one" },
      );
    }
  }

  // --- CA journal ---------------------------------------------------------------------------------------

  async putCa(rec: CaRecord): Promise<void> {
    checkOneOf(rec.kind, CA_KINDS, "kind");
    checkOneOf(rec.status, CA_STATUSES, "status");
    this.#tx(() => {
      this.#stmt(
        `INSERT INTO ca_journal (id, kind, status, key_id, alg, cert_der, public_key_der, kid, not_before,
           not_after, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, status = excluded.status, key_id = excluded.key_id,
           alg = excluded.alg, cert_der = excluded.cert_der, public_key_der = excluded.public_key_der,
           kid = excluded.kid, not_before = excluded.not_before, not_after = excluded.not_after,
           created_at = excluded.created_at`,
      ).run(
        rec.id,
        rec.kind,
        rec.status,
        rec.keyId,
        rec.alg,
        rec.certDer,
        rec.publicKeyDer,
        rec.kid,
        rec.notBefore,
        rec.notAfter,
        rec.createdAt,
      );
      this.#stmt("DELETE FROM ca_upstream_chain WHERE ca_id = ?").run(rec.id);
      const ins = this.#stmt("INSERT INTO ca_upstream_chain (ca_id, position, der) VALUES (?, ?, ?)");
      rec.upstreamChain.forEach((der, i) => {
        ins.run(rec.id, i, der);
      });
    });
  }

  async setCaStatus(id: string, status: CaStatus): Promise<void> {
    checkOneOf(status, CA_STATUSES, "status");
    this.#tx(() => {
      const r = this.#stmt("UPDATE ca_journal SET status = ? WHERE id = ?").run(status, id);
      if (Number(r.changes) === 0) throw new NotFoundError("CA", id);
    });
  }

  async listCas(kind?: CaKind): Promise<CaRecord[]> {
    return this.#read(() => {
      const journal =
        kind === undefined
          ? this.#stmt("SELECT * FROM ca_journal ORDER BY created_at, rowid").all()
          : this.#stmt("SELECT * FROM ca_journal WHERE kind = ? ORDER BY created_at, rowid").all(kind);
      return mappers.cas(
        journal,
        this.#stmt("SELECT ca_id, der FROM ca_upstream_chain ORDER BY ca_id, position").all(),
      );
    });
  }

  /** Idempotent: deleting an absent CA is not an error. */
  async deleteCa(id: string): Promise<void> {
    this.#tx(() => {
      this.#stmt("DELETE FROM ca_journal WHERE id = ?").run(id);
    });
  }

  // --- bundles ------------------------------------------------------------------------------------------

  async getBundle(trustDomain: string): Promise<BundleRecord | undefined> {
    return this.#read(() => {
      const row = this.#stmt("SELECT * FROM bundles WHERE trust_domain = ?").get(trustDomain);
      return row === undefined ? undefined : rowToBundle(row);
    });
  }

  async putBundle(rec: BundleRecord): Promise<void> {
    if (!Number.isSafeInteger(rec.sequence) || rec.sequence < 0) {
      throw new ValidationError(`must be a non-negative integer (got ${rec.sequence})`, "sequence");
    }
    this.#tx(() => {
      const cur = this.#stmt("SELECT sequence FROM bundles WHERE trust_domain = ?").get(rec.trustDomain);
      if (cur !== undefined && rec.sequence <= num(cur.sequence)) {
        throw new QhxError(
          "QHX_CONFLICT",
          `bundle for "${rec.trustDomain}" has sequence ${num(cur.sequence)}; refusing sequence ${rec.sequence} ` +
            "(a new bundle must have a greater sequence)",
          { hint: "this bundle is stale or a replay; fetch the current bundle and increment its sequence" },
        );
      }
      this.#stmt(
        `INSERT INTO bundles (trust_domain, document, sequence, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, sequence = excluded.sequence,
           updated_at = excluded.updated_at`,
      ).run(rec.trustDomain, rec.document, rec.sequence, rec.updatedAt);
    });
  }

  async listBundles(): Promise<BundleRecord[]> {
    return this.#read(() => this.#stmt("SELECT * FROM bundles ORDER BY trust_domain").all().map(rowToBundle));
  }

  async deleteBundle(trustDomain: string): Promise<boolean> {
    return this.#tx(
      () => Number(this.#stmt("DELETE FROM bundles WHERE trust_domain = ?").run(trustDomain).changes) > 0,
    );
  }

  // --- federation relationships -------------------------------------------------------------------------

  async createFederationRelationship(
    rel: FederationRelationship,
    initialBundle?: BundleRecord,
  ): Promise<void> {
    checkOneOf(rel.profile, FEDERATION_PROFILES, "profile");
    this.#tx(() => {
      const dup = this.#stmt("SELECT 1 FROM federation_relationships WHERE trust_domain = ?").get(
        rel.trustDomain,
      );
      if (dup !== undefined) {
        throw new QhxError(
          "QHX_ALREADY_EXISTS",
          `a federation relationship with "${rel.trustDomain}" already exists`,
          { hint: "update it, or delete it first" },
        );
      }
      this.#stmt(
        `INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id,
           web_trust_roots, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        rel.trustDomain,
        rel.bundleEndpointUrl,
        rel.profile,
        rel.endpointSpiffeId,
        rel.webTrustRoots,
        rel.createdAt,
        rel.updatedAt,
      );
      if (initialBundle !== undefined) {
        // a new relationship starts from the bundle given out of band, whatever was stored before
        this.#stmt(
          `INSERT INTO bundles (trust_domain, document, sequence, updated_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, sequence = excluded.sequence,
             updated_at = excluded.updated_at`,
        ).run(
          initialBundle.trustDomain,
          initialBundle.document,
          initialBundle.sequence,
          initialBundle.updatedAt,
        );
      }
    });
  }

  async getFederationRelationship(trustDomain: string): Promise<FederationRelationship | undefined> {
    return this.#read(() => {
      const row = this.#stmt("SELECT * FROM federation_relationships WHERE trust_domain = ?").get(
        trustDomain,
      );
      return row === undefined ? undefined : rowToFederation(row);
    });
  }

  async listFederationRelationships(): Promise<FederationRelationship[]> {
    return this.#read(() =>
      this.#stmt("SELECT * FROM federation_relationships ORDER BY trust_domain").all().map(rowToFederation),
    );
  }

  async updateFederationRelationship(
    trustDomain: string,
    patch: FederationRelationshipPatch,
    updatedAt: number,
  ): Promise<FederationRelationship> {
    if (patch.profile !== undefined) checkOneOf(patch.profile, FEDERATION_PROFILES, "profile");
    return this.#tx(() => {
      const row = this.#stmt("SELECT * FROM federation_relationships WHERE trust_domain = ?").get(
        trustDomain,
      );
      if (row === undefined) throw new NotFoundError("federation relationship", trustDomain);
      const defined = Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined));
      const next: FederationRelationship = { ...rowToFederation(row), ...defined, updatedAt };
      this.#stmt(
        `UPDATE federation_relationships SET bundle_endpoint_url = ?, profile = ?, endpoint_spiffe_id = ?,
           web_trust_roots = ?, updated_at = ? WHERE trust_domain = ?`,
      ).run(
        next.bundleEndpointUrl,
        next.profile,
        next.endpointSpiffeId,
        next.webTrustRoots,
        next.updatedAt,
        trustDomain,
      );
      return next;
    });
  }

  async deleteFederationRelationship(trustDomain: string): Promise<boolean> {
    return this.#tx(() => {
      const n = Number(
        this.#stmt("DELETE FROM federation_relationships WHERE trust_domain = ?").run(trustDomain).changes,
      );
      if (n > 0) this.#stmt("DELETE FROM bundles WHERE trust_domain = ?").run(trustDomain);
      return n > 0;
    });
  }

  // --- join tokens --------------------------------------------------------------------------------------

  async createJoinToken(rec: JoinTokenRecord): Promise<void> {
    this.#tx(() => {
      const dup = this.#stmt("SELECT 1 FROM join_tokens WHERE token_hash = ?").get(rec.tokenHash);
      if (dup !== undefined) {
        throw new QhxError("QHX_ALREADY_EXISTS", "a join token with this hash already exists", {
          hint: "generate a new random token",
        });
      }
      this.#stmt(
        "INSERT INTO join_tokens (token_hash, expires_at, created_at, spiffe_id) VALUES (?, ?, ?, ?)",
      ).run(rec.tokenHash, rec.expiresAt, rec.createdAt, rec.spiffeId ?? null);
    });
  }

  /** Valid while `now < expiresAt`. One DELETE … RETURNING: of any number of concurrent callers, one wins. */
  async consumeJoinToken(tokenHash: string, now: number): Promise<JoinTokenRecord | undefined> {
    return this.#tx(() => {
      const row = this.#stmt(
        "DELETE FROM join_tokens WHERE token_hash = ? AND expires_at > ? RETURNING token_hash, expires_at, created_at, spiffe_id",
      ).get(tokenHash, now);
      if (row === undefined) return undefined;
      const rec: JoinTokenRecord = {
        tokenHash: str(row.token_hash),
        expiresAt: num(row.expires_at),
        createdAt: num(row.created_at),
      };
      if (typeof row.spiffe_id === "string") rec.spiffeId = row.spiffe_id;
      return rec;
    });
  }

  async pruneJoinTokens(now: number): Promise<number> {
    return this.#tx(() =>
      Number(this.#stmt("DELETE FROM join_tokens WHERE expires_at <= ?").run(now).changes),
    );
  }

  // --- nodes --------------------------------------------------------------------------------------------

  /** Insert or replace; an existing node keeps its original createdAt. */
  async upsertNode(node: AttestedNode): Promise<void> {
    checkOneOf(node.assurance, ASSURANCE_LEVELS, "assurance");
    this.#tx(() => {
      this.#stmt(
        `INSERT INTO nodes (spiffe_id, attestation_type, selectors, assurance, cert_serial, cert_not_after, banned,
           created_at, updated_at, aliases)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (spiffe_id) DO UPDATE SET attestation_type = excluded.attestation_type,
           selectors = excluded.selectors, assurance = excluded.assurance, cert_serial = excluded.cert_serial,
           cert_not_after = excluded.cert_not_after, banned = excluded.banned, updated_at = excluded.updated_at,
           aliases = excluded.aliases`,
      ).run(
        node.spiffeId,
        node.attestationType,
        JSON.stringify(node.selectors.map((s) => [s.type, s.value])),
        node.assurance,
        node.certSerial,
        node.certNotAfter,
        node.banned ? 1 : 0,
        node.createdAt,
        node.updatedAt,
        JSON.stringify(node.aliases ?? []),
      );
    });
  }

  async getNode(spiffeId: string): Promise<AttestedNode | undefined> {
    return this.#read(() => {
      const row = this.#stmt("SELECT * FROM nodes WHERE spiffe_id = ?").get(spiffeId);
      return row === undefined ? undefined : rowToNode(row);
    });
  }

  async listNodes(): Promise<AttestedNode[]> {
    return this.#read(() => this.#stmt("SELECT * FROM nodes ORDER BY spiffe_id").all().map(rowToNode));
  }

  async deleteNode(spiffeId: string): Promise<boolean> {
    return this.#tx(
      () => Number(this.#stmt("DELETE FROM nodes WHERE spiffe_id = ?").run(spiffeId).changes) > 0,
    );
  }

  // --- notary log (provenance) ---------------------------------------------------------------------------

  /** Entries and their tree head in one transaction; QHX_CONFLICT unless the entries extend the log. */
  async appendLog(entries: LogEntryRecord[], head: LogHeadRecord): Promise<void> {
    this.#tx(() => {
      const size = num(this.#stmt("SELECT COALESCE(MAX(leaf_index) + 1, 0) AS n FROM log_entries").get()?.n);
      const first = entries[0]?.leafIndex ?? size;
      if (first !== size || head.treeSize !== size + entries.length) {
        throw new QhxError(
          "QHX_CONFLICT",
          `the log has ${size} entries; refusing entries from ${first} with a head of size ${head.treeSize}`,
        );
      }
      const ins = this.#stmt(
        `INSERT INTO log_entries (leaf_index, leaf_hash, statement_hash, admitted_at, statement, signer_id, peer_id,
           decision, exchange_id, tree_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      entries.forEach((e, i) => {
        if (e.leafIndex !== size + i) throw new QhxError("QHX_CONFLICT", "log entries must be contiguous");
        ins.run(
          e.leafIndex,
          e.leafHash,
          e.statementHash,
          e.admittedAt,
          e.statement,
          e.signerId,
          e.peerId,
          e.decision,
          e.exchangeId,
          e.treeSize,
        );
      });
      this.#stmt(
        "INSERT INTO log_heads (tree_size, root_hash, created_at, protected, signature, checkpoint) VALUES (?, ?, ?, ?, ?, ?)",
      ).run(
        head.treeSize,
        head.rootHash,
        head.createdAt,
        head.protectedHeader,
        head.signature,
        head.checkpoint,
      );
    });
  }

  async logHashes(): Promise<{ leafHash: Uint8Array; statementHash: Uint8Array }[]> {
    return this.#read(() =>
      this.#stmt("SELECT leaf_hash, statement_hash FROM log_entries ORDER BY leaf_index")
        .all()
        .map((r) => ({ leafHash: blob(r.leaf_hash), statementHash: blob(r.statement_hash) })),
    );
  }

  async getLogEntry(leafIndex: number): Promise<LogEntryRecord | undefined> {
    return this.#read(() => {
      const r = this.#stmt("SELECT * FROM log_entries WHERE leaf_index = ?").get(leafIndex);
      return r === undefined ? undefined : rowToLogEntry(r);
    });
  }

  async findLogEntry(statementHash: Uint8Array): Promise<LogEntryRecord | undefined> {
    return this.#read(() => {
      const r = this.#stmt("SELECT * FROM log_entries WHERE statement_hash = ?").get(statementHash);
      return r === undefined ? undefined : rowToLogEntry(r);
    });
  }

  async listLogEntries(filter: LogEntryFilter = {}): Promise<LogEntryRecord[]> {
    return this.#read(() => {
      const where: string[] = ["leaf_index >= ?"];
      const params: SQLInputValue[] = [filter.fromIndex ?? 0];
      if (filter.signerId !== undefined) {
        where.push("signer_id = ?");
        params.push(filter.signerId);
      }
      if (filter.peerId !== undefined) {
        where.push("peer_id = ?");
        params.push(filter.peerId);
      }
      params.push(filter.limit ?? -1);
      return this.#stmt(`SELECT * FROM log_entries WHERE ${where.join(" AND ")} ORDER BY leaf_index LIMIT ?`)
        .all(...params)
        .map(rowToLogEntry);
    });
  }

  async getLogHead(treeSize?: number): Promise<LogHeadRecord | undefined> {
    return this.#read(() => {
      const r =
        treeSize === undefined
          ? this.#stmt("SELECT * FROM log_heads ORDER BY tree_size DESC LIMIT 1").get()
          : this.#stmt("SELECT * FROM log_heads WHERE tree_size = ?").get(treeSize);
      return r === undefined ? undefined : mappers.logHead(r);
    });
  }

  // --- plumbing -----------------------------------------------------------------------------------------

  #conn(): DatabaseSync {
    if (this.#db === undefined) {
      throw new QhxError("QHX_DATASTORE_CLOSED", `datastore "${this.path}" is closed`);
    }
    return this.#db;
  }

  #stmt(sql: string): StatementSync {
    let s = this.#stmts.get(sql);
    if (s === undefined) {
      s = this.#conn().prepare(sql);
      this.#stmts.set(sql, s);
    }
    return s;
  }

  #read<T>(fn: () => T): T {
    this.#conn();
    try {
      return fn();
    } catch (e) {
      throw e instanceof QhxError ? e : mapSqliteError(e, this.path);
    }
  }

  /** Run `fn` in one BEGIN IMMEDIATE … COMMIT transaction; roll back on any error. */
  #tx<T>(fn: () => T): T {
    const db = this.#conn();
    try {
      return transaction(db, fn);
    } catch (e) {
      throw e instanceof QhxError ? e : mapSqliteError(e, this.path);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// open: probe, create, migrate

function transaction<T>(db: DatabaseSync, fn: () => T): T {
  db.exec("BEGIN IMMEDIATE");
  try {
    const result = fn();
    db.exec("COMMIT");
    return result;
  } catch (e) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw e;
  }
}

function userVersion(db: DatabaseSync): number {
  return num(db.prepare("PRAGMA user_version").get()?.user_version);
}

function migrate(db: DatabaseSync, path: string, t: number): void {
  for (const m of MIGRATIONS) {
    if (userVersion(db) >= m.version) continue;
    transaction(db, () => {
      const v = userVersion(db); // re-read under the write lock: another process may have migrated
      if (v >= m.version) return;
      if (v !== m.version - 1) {
        throw new QhxError(
          "QHX_DATASTORE_CORRUPT",
          `datastore "${path}" is at schema version ${v}, cannot apply migration ${m.version}`,
          { hint: CORRUPT_HINT },
        );
      }
      m.up(db, t);
      db.exec(`PRAGMA user_version = ${m.version}`);
    });
  }
  const v = userVersion(db);
  if (v > SCHEMA_VERSION) throw tooNew(path, v);
}

function createEmptyFile(path: string): void {
  try {
    fs.closeSync(fs.openSync(path, "wx", 0o600));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return;
    throw openFailed(path, e);
  }
}

/**
 * Inspect an existing file without writing to it. Returns "missing" (no file), "fresh" (empty database to
 * initialize) or "qhx" (a QHx datastore this build can open); throws for anything it must refuse.
 */
function probe(path: string): "missing" | "fresh" | "qhx" {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "missing";
    throw openFailed(path, e);
  }
  if (!st.isFile()) {
    throw new QhxError("QHX_DATASTORE_OPEN_FAILED", `datastore path "${path}" is not a regular file`, {
      hint: "point the datastore path at a file (it is created if absent)",
    });
  }
  const hasWal = fs.existsSync(`${path}-wal`);
  if (st.size === 0 && !hasWal) return "fresh";
  if (st.size > 0) {
    const head = Buffer.alloc(16);
    const fd = fs.openSync(path, "r");
    try {
      fs.readSync(fd, head, 0, 16, 0);
    } finally {
      fs.closeSync(fd);
    }
    if (st.size < 100 || head.toString("latin1") !== SQLITE_MAGIC) {
      throw new QhxError(
        "QHX_DATASTORE_CORRUPT",
        `datastore "${path}" is not a SQLite database (bad file header)`,
        { hint: CORRUPT_HINT },
      );
    }
  }
  // Without a WAL file, open immutable: no locks, no -wal/-shm files created. With one, a plain read-only
  // connection is needed so committed transactions still in the WAL are seen.
  let target: string | URL = path;
  if (!hasWal) {
    target = pathToFileURL(path);
    target.searchParams.set("mode", "ro");
    target.searchParams.set("immutable", "1");
  }
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(target, { readOnly: true });
  } catch (e) {
    throw mapSqliteError(e, path);
  }
  try {
    db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    const problems = db
      .prepare("PRAGMA quick_check(5)")
      .all()
      .map((r) => String(r.quick_check))
      .filter((s) => s !== "ok");
    if (problems.length > 0) {
      throw new QhxError(
        "QHX_DATASTORE_CORRUPT",
        `datastore "${path}" failed its integrity check: ${problems.join("; ")}`,
        { hint: CORRUPT_HINT },
      );
    }
    const tables = db
      .prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
      )
      .all()
      .map((r) => String(r.name));
    const version = userVersion(db);
    const appId = num(db.prepare("PRAGMA application_id").get()?.application_id);
    const isOurs = tables.includes(MARKER_TABLE) && appId === QHX_APPLICATION_ID;
    if (!isOurs) {
      if (tables.length === 0 && version === 0 && (appId === 0 || appId === QHX_APPLICATION_ID))
        return "fresh";
      const listed = tables.slice(0, 8).join(", ") + (tables.length > 8 ? ", ..." : "");
      throw new QhxError(
        "QHX_DATASTORE_FOREIGN",
        `"${path}" is a SQLite database of another application, not a QHx datastore ` +
          `(no ${MARKER_TABLE} table with application_id ${QHX_APPLICATION_ID}; tables: ${listed || "none"})`,
        { hint: "check the datastore path; QHx does not modify a database it did not create" },
      );
    }
    if (version > SCHEMA_VERSION) throw tooNew(path, version);
    if (version < 1) {
      throw new QhxError(
        "QHX_DATASTORE_CORRUPT",
        `datastore "${path}" has a QHx marker but no schema version`,
        {
          hint: CORRUPT_HINT,
        },
      );
    }
    return "qhx";
  } catch (e) {
    throw e instanceof QhxError ? e : mapSqliteError(e, path);
  } finally {
    db.close();
  }
}

function tooNew(path: string, version: number): QhxError {
  return new QhxError(
    "QHX_DATASTORE_TOO_NEW",
    `datastore "${path}" has schema version ${version}, but this build of QHx supports up to version ${SCHEMA_VERSION}`,
    {
      hint: "it was written by a newer QHx: run that version (or newer), or restore a backup taken before the upgrade",
    },
  );
}

function openFailed(path: string, cause: unknown): QhxError {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  const hint =
    code === "ENOENT"
      ? "create the directory that holds the datastore file"
      : code === "EACCES" || code === "EPERM"
        ? "check the permissions of the datastore file and its directory"
        : "check the datastore path";
  return new QhxError(
    "QHX_DATASTORE_OPEN_FAILED",
    `cannot open datastore "${path}": ${cause instanceof Error ? cause.message : String(cause)}`,
    { hint, cause },
  );
}

/** node:sqlite errors carry `errcode` (the extended SQLite result code). */
function mapSqliteError(e: unknown, path: string): QhxError {
  if (e instanceof QhxError) return e;
  const errcode = (e as { errcode?: unknown } | undefined)?.errcode;
  const message = e instanceof Error ? e.message : String(e);
  if (typeof errcode === "number") {
    switch (errcode & 0xff) {
      case 5: // SQLITE_BUSY
      case 6: // SQLITE_LOCKED
        return new QhxError("QHX_DATASTORE_BUSY", `datastore "${path}" is busy: ${message}`, {
          hint: `another process held the database lock for more than ${BUSY_TIMEOUT_MS} ms; retry`,
          cause: e,
        });
      case 11: // SQLITE_CORRUPT
      case 26: // SQLITE_NOTADB
        return new QhxError("QHX_DATASTORE_CORRUPT", `datastore "${path}" is corrupt: ${message}`, {
          hint: CORRUPT_HINT,
          cause: e,
        });
      case 14: // SQLITE_CANTOPEN
        return openFailed(path, e);
      case 19: // SQLITE_CONSTRAINT
        if (errcode === 2067 || errcode === 1555) {
          return new QhxError("QHX_ALREADY_EXISTS", `datastore: ${message}`, { cause: e });
        }
        return new QhxError("QHX_INVALID_ARGUMENT", `datastore: ${message}`, { cause: e });
    }
  }
  return new QhxError("QHX_DATASTORE_ERROR", `datastore "${path}": ${message}`, { cause: e });
}

// ---------------------------------------------------------------------------------------------------------
// rows

const ENTRY_SELECT = `SELECT e.*,
  (SELECT json_group_array(json_array(s.type, s.value) ORDER BY s.position)
     FROM entry_selectors s WHERE s.entry_id = e.id) AS selectors_json
  FROM entries e`;

// node:sqlite's column values: TEXT as string, INTEGER as number (bigint past 2^53), BLOB as Uint8Array
function str(v: unknown): string {
  if (typeof v !== "string") throw corrupt("a text", v);
  return v;
}

function num(v: unknown): number {
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  throw corrupt("an integer", v);
}

function blob(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v;
  throw corrupt("a blob", v);
}

const SQLITE_COLUMNS: ColumnReader = { str, num, bool: (v) => num(v) === 1, blob };
const mappers = rowMappers(SQLITE_COLUMNS);
const rowToEntry = mappers.entry;
const rowToBundle = mappers.bundle;
const rowToFederation = mappers.federation;
const rowToLogEntry = mappers.logEntry;
const rowToNode = mappers.node;
