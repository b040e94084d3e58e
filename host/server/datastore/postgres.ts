/**
 * The shared Datastore: PostgreSQL through `pg` (a Pool), for several servers on one database.
 *
 * Same behaviour as the SQLite datastore (sqlite.ts) for every method: error codes, list ordering (text
 * keys in byte order, COLLATE "C"; insertion order through an identity column where SQLite uses rowid),
 * JSON kept as text exactly as written, blobs as BYTEA, times as BIGINT unix seconds (the log: ms).
 *
 * Every mutating method is one BEGIN … COMMIT on a client of its own from the pool (ROLLBACK on any
 * error), so a resolved write is durable (synchronous_commit is the server's: keep it on). The invariants
 * that must hold when several servers share the database are enforced by the database itself:
 * - a join token is consumed by one DELETE … RETURNING: of any number of concurrent callers one wins;
 * - entry updates lock the row (SELECT … FOR UPDATE) before checking the expected revision;
 * - uniqueness (entries, tokens, relationships, statements) is a constraint, so a race ends in
 *   QHX_ALREADY_EXISTS, never in a duplicate;
 * - putBundle is one conditional upsert (… DO UPDATE … WHERE sequence < excluded.sequence);
 * - log appends take a transaction-scoped advisory lock, so leaf indices stay gapless and ordered.
 *
 * Opening migrates forward inside one transaction guarded by an advisory lock (two servers starting at
 * once do not race), tracking the version in the `qhx_schema` table. A database whose schema is newer
 * than this build is refused untouched (QHX_DATASTORE_TOO_NEW), as is a database that holds tables of
 * another application (QHX_DATASTORE_FOREIGN). The connection string's password never appears in a
 * message: errors name the database by its redacted URL.
 */
import { randomUUID } from "node:crypto";
import type pg from "pg";
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
  corrupt,
  definedOnly,
  FEDERATION_PROFILES,
  now,
  rowMappers,
  selectorsKey,
  withDefaults,
} from "./shared.ts";

/** The newest PostgreSQL schema version this build knows (its migrations mirror SQLite's, one for one). */
export const POSTGRES_SCHEMA_VERSION = 4;
/** The table holding the schema version; its presence marks a database as a QHx datastore. */
export const POSTGRES_SCHEMA_TABLE = "qhx_schema";
/** First key of QHx's two-key advisory locks ("QHx1"); the second key names the lock. */
const LOCK_NAMESPACE = 0x51487831;
const LOCK_MIGRATE = 1;
const LOCK_LOG_APPEND = 2;
const DEFAULT_POOL_SIZE = 10;
const CONNECT_TIMEOUT_MS = 10_000;

export interface PostgresDatastoreOptions {
  /** Current time in unix seconds (default: the system clock). */
  clock?: () => number;
  /** Most connections the pool opens (default 10). */
  maxConnections?: number;
}

type Row = Record<string, unknown>;
type Param = string | number | boolean | null | Uint8Array;

interface Querier {
  query(sql: string, params?: Param[]): Promise<pg.QueryResult<Row>>;
}

interface Migration {
  version: number;
  description: string;
  sql: string;
}

const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: "initial schema",
    sql: `
      CREATE TABLE entries (
        id             TEXT PRIMARY KEY,
        seq            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,  -- insertion order (SQLite's rowid)
        spiffe_id      TEXT NOT NULL,
        parent_id      TEXT NOT NULL,
        -- canonical JSON of the sorted [type, value] pairs; part of the uniqueness key
        selectors_key  TEXT NOT NULL,
        namespace      TEXT NOT NULL,
        labels         TEXT NOT NULL,   -- JSON object
        x509_svid_ttl  BIGINT NOT NULL,
        jwt_svid_ttl   BIGINT NOT NULL,
        dns_names      TEXT NOT NULL,   -- JSON array
        federates_with TEXT NOT NULL,   -- JSON array
        admin          BOOLEAN NOT NULL,
        expires_at     BIGINT,
        created_at     BIGINT NOT NULL,
        updated_at     BIGINT NOT NULL,
        revision       BIGINT NOT NULL,
        UNIQUE (spiffe_id, parent_id, selectors_key)
      );
      CREATE INDEX entries_parent_id ON entries (parent_id);
      CREATE INDEX entries_namespace ON entries (namespace);

      CREATE TABLE entry_selectors (
        entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        type     TEXT NOT NULL,
        value    TEXT NOT NULL,
        PRIMARY KEY (entry_id, position)
      );
      CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value, entry_id);

      CREATE TABLE ca_journal (
        id             TEXT PRIMARY KEY,
        seq            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        kind           TEXT NOT NULL CHECK (kind IN ('x509', 'jwt')),
        status         TEXT NOT NULL CHECK (status IN ('prepared', 'active', 'retired')),
        key_id         TEXT NOT NULL,
        alg            TEXT NOT NULL,
        cert_der       BYTEA,
        public_key_der BYTEA,
        kid            TEXT,
        not_before     BIGINT NOT NULL,
        not_after      BIGINT NOT NULL,
        created_at     BIGINT NOT NULL
      );
      CREATE TABLE ca_upstream_chain (
        ca_id    TEXT NOT NULL REFERENCES ca_journal (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        der      BYTEA NOT NULL,
        PRIMARY KEY (ca_id, position)
      );

      CREATE TABLE bundles (
        trust_domain TEXT PRIMARY KEY,
        document     TEXT NOT NULL,
        sequence     BIGINT NOT NULL,
        updated_at   BIGINT NOT NULL
      );

      CREATE TABLE join_tokens (
        token_hash TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL
      );
      CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

      CREATE TABLE nodes (
        spiffe_id        TEXT PRIMARY KEY,
        attestation_type TEXT NOT NULL,
        selectors        TEXT NOT NULL,  -- JSON [[type, value], ...]
        assurance        TEXT NOT NULL CHECK (assurance IN ('hardware', 'key', 'token')),
        cert_serial      TEXT NOT NULL,
        cert_not_after   BIGINT NOT NULL,
        banned           BOOLEAN NOT NULL,
        created_at       BIGINT NOT NULL,
        updated_at       BIGINT NOT NULL
      );`,
  },
  {
    version: 2,
    description: "node aliases: a join token may name the node's alias SPIFFE ID",
    sql: `
      ALTER TABLE join_tokens ADD COLUMN spiffe_id TEXT;
      ALTER TABLE nodes ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]';  -- JSON [spiffe_id, ...]`,
  },
  {
    version: 3,
    description: "federation relationships (foreign bundle endpoints)",
    sql: `
      CREATE TABLE federation_relationships (
        trust_domain        TEXT PRIMARY KEY,
        bundle_endpoint_url TEXT NOT NULL,
        profile             TEXT NOT NULL CHECK (profile IN ('https_web', 'https_spiffe')),
        endpoint_spiffe_id  TEXT,
        web_trust_roots     TEXT,
        created_at          BIGINT NOT NULL,
        updated_at          BIGINT NOT NULL
      );`,
  },
  {
    version: 4,
    description: "provenance: the notary's RFC 9162 Merkle log (entries and signed tree heads)",
    sql: `
      CREATE TABLE log_entries (
        leaf_index     BIGINT PRIMARY KEY,
        leaf_hash      BYTEA NOT NULL,
        statement_hash BYTEA NOT NULL UNIQUE,
        admitted_at    BIGINT NOT NULL,   -- unix ms, part of the leaf
        statement      BYTEA NOT NULL,    -- COSE_Sign1, empty unprotected header
        signer_id      TEXT NOT NULL,
        peer_id        TEXT NOT NULL,
        decision       TEXT NOT NULL,
        exchange_id    TEXT NOT NULL,
        tree_size      BIGINT NOT NULL    -- the first signed tree head that includes it
      );
      CREATE INDEX log_entries_signer_id ON log_entries (signer_id);
      CREATE TABLE log_heads (
        tree_size  BIGINT PRIMARY KEY,
        root_hash  BYTEA NOT NULL,
        created_at BIGINT NOT NULL,       -- unix ms
        protected  BYTEA NOT NULL,        -- COSE Receipt protected header
        signature  BYTEA NOT NULL,        -- COSE Receipt signature over the root
        checkpoint TEXT NOT NULL          -- C2SP signed note
      );`,
  },
];

const FOREIGN_HINT = "check the connection string; QHx does not modify a database it did not create";

export class PostgresDatastore implements Datastore {
  readonly kind = "postgres" as const;
  /** The connection string with its password replaced by `***`: safe to log. */
  readonly target: string;
  #pool: pg.Pool | undefined;
  readonly #clock: () => number;

  private constructor(target: string, pool: pg.Pool, clock: () => number) {
    this.target = target;
    this.#pool = pool;
    this.#clock = clock;
  }

  /**
   * Connect to the database named by `connectionString` and migrate it. Throws QhxError
   * QHX_DATASTORE_OPEN_FAILED (unreachable, refused, bad credentials, bad string), _FOREIGN or _TOO_NEW
   * (the database is left untouched).
   */
  static async open(
    connectionString: string,
    opts: PostgresDatastoreOptions = {},
  ): Promise<PostgresDatastore> {
    const clock = opts.clock ?? (() => Math.floor(Date.now() / 1000));
    const target = redactConnectionString(connectionString);
    if (!/^postgres(ql)?:\/\//i.test(connectionString) || !URL.canParse(connectionString)) {
      throw new QhxError(
        "QHX_DATASTORE_OPEN_FAILED",
        `invalid PostgreSQL connection string "${target}": expected postgres://[user[:password]@]host[:port]/database`,
        { hint: "set datastore.connection_string to a postgres:// URL" },
      );
    }
    // loaded on first use: `pg` costs every other process (the CLI, agents) startup time for nothing
    const { default: pgModule } = await import("pg");
    let pool: pg.Pool;
    try {
      pool = new pgModule.Pool({
        connectionString,
        max: opts.maxConnections ?? DEFAULT_POOL_SIZE,
        connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
        application_name: "qhx",
      });
    } catch (e) {
      throw openFailed(target, e);
    }
    // An idle client that loses its connection emits here; pg drops it from the pool and the next query
    // opens a new one. Without a listener the process would crash on a database restart.
    pool.on("error", () => {});
    try {
      await migrate(pool, target, now(clock));
    } catch (e) {
      await pool.end().catch(() => {});
      if (e instanceof QhxError) throw e;
      throw isConnectionError(e) ? openFailed(target, e) : mapPgError(e, target);
    }
    return new PostgresDatastore(target, pool, clock);
  }

  /** The schema version of the database (qhx_schema). */
  async schemaVersion(): Promise<number> {
    return this.#read(async (q) => schemaVersionOf(q));
  }

  async close(): Promise<void> {
    const pool = this.#pool;
    if (pool === undefined) return;
    this.#pool = undefined;
    await pool.end();
  }

  // --- entries ------------------------------------------------------------------------------------------

  async createEntry(input: RegistrationEntryInput): Promise<RegistrationEntry> {
    const e = withDefaults(input);
    return this.#tx(async (q) => {
      const key = selectorsKey(e.selectors);
      await assertUniqueEntry(q, e.spiffeId, e.parentId, key, undefined, e.selectors);
      const t = now(this.#clock);
      const entry: RegistrationEntry = { id: randomUUID(), ...e, createdAt: t, updatedAt: t, revision: 1 };
      try {
        await q.query(
          `INSERT INTO entries (id, spiffe_id, parent_id, selectors_key, namespace, labels, x509_svid_ttl,
             jwt_svid_ttl, dns_names, federates_with, admin, expires_at, created_at, updated_at, revision)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
          [
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
            entry.admin,
            entry.expiresAt,
            entry.createdAt,
            entry.updatedAt,
            entry.revision,
          ],
        );
      } catch (err) {
        // another server created the same entry between the check above and this insert
        if ((err as { code?: unknown }).code === "23505")
          throw duplicateEntry(e.spiffeId, e.parentId, e.selectors);
        throw err;
      }
      await insertSelectors(q, entry.id, entry.selectors);
      return entry;
    });
  }

  async getEntry(id: string): Promise<RegistrationEntry | undefined> {
    return this.#read(async (q) => {
      const r = await q.query(`${ENTRY_SELECT} WHERE e.id = $1`, [id]);
      return r.rows[0] === undefined ? undefined : rowToEntry(r.rows[0]);
    });
  }

  async listEntries(filter: EntryFilter = {}): Promise<RegistrationEntry[]> {
    return this.#read(async (q) => {
      const where: string[] = [];
      const params: Param[] = [];
      const p = (v: Param) => {
        params.push(v);
        return `$${params.length}`;
      };
      if (filter.spiffeId !== undefined) where.push(`e.spiffe_id = ${p(filter.spiffeId)}`);
      if (filter.parentId !== undefined) where.push(`e.parent_id = ${p(filter.parentId)}`);
      if (filter.namespace !== undefined) where.push(`e.namespace = ${p(filter.namespace)}`);
      if (filter.selector !== undefined) {
        where.push(
          `e.id IN (SELECT entry_id FROM entry_selectors WHERE type = ${p(filter.selector.type)} ` +
            `AND value = ${p(filter.selector.value)})`,
        );
      }
      const sql = `${ENTRY_SELECT}${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY e.seq`;
      return (await q.query(sql, params)).rows.map(rowToEntry);
    });
  }

  async updateEntry(id: string, patch: EntryPatch, expectedRevision?: number): Promise<RegistrationEntry> {
    return this.#tx(async (q) => {
      // lock the row first: a concurrent update waits here and then sees the new revision
      const locked = await q.query("SELECT id FROM entries WHERE id = $1 FOR UPDATE", [id]);
      if (locked.rows.length === 0) throw new NotFoundError("entry", id);
      const row = (await q.query(`${ENTRY_SELECT} WHERE e.id = $1`, [id])).rows[0];
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
      await assertUniqueEntry(q, merged.spiffeId, merged.parentId, key, id, merged.selectors);
      const next: RegistrationEntry = {
        ...merged,
        id,
        createdAt: cur.createdAt,
        updatedAt: now(this.#clock),
        revision: cur.revision + 1,
      };
      try {
        await q.query(
          `UPDATE entries SET spiffe_id = $1, parent_id = $2, selectors_key = $3, namespace = $4, labels = $5,
             x509_svid_ttl = $6, jwt_svid_ttl = $7, dns_names = $8, federates_with = $9, admin = $10,
             expires_at = $11, updated_at = $12, revision = $13
           WHERE id = $14`,
          [
            next.spiffeId,
            next.parentId,
            key,
            next.namespace,
            JSON.stringify(next.labels),
            next.x509SvidTtl,
            next.jwtSvidTtl,
            JSON.stringify(next.dnsNames),
            JSON.stringify(next.federatesWith),
            next.admin,
            next.expiresAt,
            next.updatedAt,
            next.revision,
            id,
          ],
        );
      } catch (err) {
        if ((err as { code?: unknown }).code === "23505")
          throw duplicateEntry(next.spiffeId, next.parentId, next.selectors);
        throw err;
      }
      if (patch.selectors !== undefined) {
        await q.query("DELETE FROM entry_selectors WHERE entry_id = $1", [id]);
        await insertSelectors(q, id, next.selectors);
      }
      return next;
    });
  }

  async deleteEntry(id: string): Promise<boolean> {
    return this.#tx(
      async (q) => ((await q.query("DELETE FROM entries WHERE id = $1", [id])).rowCount ?? 0) > 0,
    );
  }

  // --- CA journal ---------------------------------------------------------------------------------------

  async putCa(rec: CaRecord): Promise<void> {
    checkOneOf(rec.kind, CA_KINDS, "kind");
    checkOneOf(rec.status, CA_STATUSES, "status");
    await this.#tx(async (q) => {
      await q.query(
        `INSERT INTO ca_journal (id, kind, status, key_id, alg, cert_der, public_key_der, kid, not_before,
           not_after, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, status = excluded.status, key_id = excluded.key_id,
           alg = excluded.alg, cert_der = excluded.cert_der, public_key_der = excluded.public_key_der,
           kid = excluded.kid, not_before = excluded.not_before, not_after = excluded.not_after,
           created_at = excluded.created_at`,
        [
          rec.id,
          rec.kind,
          rec.status,
          rec.keyId,
          rec.alg,
          bytesParam(rec.certDer),
          bytesParam(rec.publicKeyDer),
          rec.kid,
          rec.notBefore,
          rec.notAfter,
          rec.createdAt,
        ],
      );
      await q.query("DELETE FROM ca_upstream_chain WHERE ca_id = $1", [rec.id]);
      for (const [i, der] of rec.upstreamChain.entries()) {
        await q.query("INSERT INTO ca_upstream_chain (ca_id, position, der) VALUES ($1, $2, $3)", [
          rec.id,
          i,
          bytesParam(der),
        ]);
      }
    });
  }

  async setCaStatus(id: string, status: CaStatus): Promise<void> {
    checkOneOf(status, CA_STATUSES, "status");
    await this.#tx(async (q) => {
      const r = await q.query("UPDATE ca_journal SET status = $1 WHERE id = $2", [status, id]);
      if ((r.rowCount ?? 0) === 0) throw new NotFoundError("CA", id);
    });
  }

  async listCas(kind?: CaKind): Promise<CaRecord[]> {
    return this.#read(async (q) => {
      const journal =
        kind === undefined
          ? (await q.query("SELECT * FROM ca_journal ORDER BY created_at, seq")).rows
          : (await q.query("SELECT * FROM ca_journal WHERE kind = $1 ORDER BY created_at, seq", [kind])).rows;
      return mappers.cas(
        journal,
        (await q.query("SELECT ca_id, der FROM ca_upstream_chain ORDER BY ca_id, position")).rows,
      );
    });
  }

  /** Idempotent: deleting an absent CA is not an error. */
  async deleteCa(id: string): Promise<void> {
    await this.#tx(async (q) => {
      await q.query("DELETE FROM ca_journal WHERE id = $1", [id]);
    });
  }

  // --- bundles ------------------------------------------------------------------------------------------

  async getBundle(trustDomain: string): Promise<BundleRecord | undefined> {
    return this.#read(async (q) => {
      const r = await q.query("SELECT * FROM bundles WHERE trust_domain = $1", [trustDomain]);
      return r.rows[0] === undefined ? undefined : rowToBundle(r.rows[0]);
    });
  }

  /** One conditional upsert: of two servers storing bundles concurrently, the greater sequence stays. */
  async putBundle(rec: BundleRecord): Promise<void> {
    if (!Number.isSafeInteger(rec.sequence) || rec.sequence < 0) {
      throw new ValidationError(`must be a non-negative integer (got ${rec.sequence})`, "sequence");
    }
    await this.#tx(async (q) => {
      const r = await q.query(
        `INSERT INTO bundles (trust_domain, document, sequence, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, sequence = excluded.sequence,
           updated_at = excluded.updated_at
         WHERE bundles.sequence < excluded.sequence`,
        [rec.trustDomain, rec.document, rec.sequence, rec.updatedAt],
      );
      if ((r.rowCount ?? 0) > 0) return;
      const cur = (await q.query("SELECT sequence FROM bundles WHERE trust_domain = $1", [rec.trustDomain]))
        .rows[0];
      const stored = cur === undefined ? "a greater" : String(num(cur.sequence));
      throw new QhxError(
        "QHX_CONFLICT",
        `bundle for "${rec.trustDomain}" has sequence ${stored}; refusing sequence ${rec.sequence} ` +
          "(a new bundle must have a greater sequence)",
        { hint: "this bundle is stale or a replay; fetch the current bundle and increment its sequence" },
      );
    });
  }

  async listBundles(): Promise<BundleRecord[]> {
    return this.#read(async (q) =>
      (await q.query('SELECT * FROM bundles ORDER BY trust_domain COLLATE "C"')).rows.map(rowToBundle),
    );
  }

  async deleteBundle(trustDomain: string): Promise<boolean> {
    return this.#tx(
      async (q) =>
        ((await q.query("DELETE FROM bundles WHERE trust_domain = $1", [trustDomain])).rowCount ?? 0) > 0,
    );
  }

  // --- federation relationships -------------------------------------------------------------------------

  async createFederationRelationship(
    rel: FederationRelationship,
    initialBundle?: BundleRecord,
  ): Promise<void> {
    checkOneOf(rel.profile, FEDERATION_PROFILES, "profile");
    await this.#tx(async (q) => {
      const r = await q.query(
        `INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id,
           web_trust_roots, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (trust_domain) DO NOTHING`,
        [
          rel.trustDomain,
          rel.bundleEndpointUrl,
          rel.profile,
          rel.endpointSpiffeId,
          rel.webTrustRoots,
          rel.createdAt,
          rel.updatedAt,
        ],
      );
      if ((r.rowCount ?? 0) === 0) {
        throw new QhxError(
          "QHX_ALREADY_EXISTS",
          `a federation relationship with "${rel.trustDomain}" already exists`,
          { hint: "update it, or delete it first" },
        );
      }
      if (initialBundle !== undefined) {
        // a new relationship starts from the bundle given out of band, whatever was stored before
        await q.query(
          `INSERT INTO bundles (trust_domain, document, sequence, updated_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, sequence = excluded.sequence,
             updated_at = excluded.updated_at`,
          [
            initialBundle.trustDomain,
            initialBundle.document,
            initialBundle.sequence,
            initialBundle.updatedAt,
          ],
        );
      }
    });
  }

  async getFederationRelationship(trustDomain: string): Promise<FederationRelationship | undefined> {
    return this.#read(async (q) => {
      const r = await q.query("SELECT * FROM federation_relationships WHERE trust_domain = $1", [
        trustDomain,
      ]);
      return r.rows[0] === undefined ? undefined : rowToFederation(r.rows[0]);
    });
  }

  async listFederationRelationships(): Promise<FederationRelationship[]> {
    return this.#read(async (q) =>
      (await q.query('SELECT * FROM federation_relationships ORDER BY trust_domain COLLATE "C"')).rows.map(
        rowToFederation,
      ),
    );
  }

  async updateFederationRelationship(
    trustDomain: string,
    patch: FederationRelationshipPatch,
    updatedAt: number,
  ): Promise<FederationRelationship> {
    if (patch.profile !== undefined) checkOneOf(patch.profile, FEDERATION_PROFILES, "profile");
    return this.#tx(async (q) => {
      const row = (
        await q.query("SELECT * FROM federation_relationships WHERE trust_domain = $1 FOR UPDATE", [
          trustDomain,
        ])
      ).rows[0];
      if (row === undefined) throw new NotFoundError("federation relationship", trustDomain);
      const defined = Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined));
      const next: FederationRelationship = { ...rowToFederation(row), ...defined, updatedAt };
      await q.query(
        `UPDATE federation_relationships SET bundle_endpoint_url = $1, profile = $2, endpoint_spiffe_id = $3,
           web_trust_roots = $4, updated_at = $5 WHERE trust_domain = $6`,
        [
          next.bundleEndpointUrl,
          next.profile,
          next.endpointSpiffeId,
          next.webTrustRoots,
          next.updatedAt,
          trustDomain,
        ],
      );
      return next;
    });
  }

  async deleteFederationRelationship(trustDomain: string): Promise<boolean> {
    return this.#tx(async (q) => {
      const n =
        (await q.query("DELETE FROM federation_relationships WHERE trust_domain = $1", [trustDomain]))
          .rowCount ?? 0;
      if (n > 0) await q.query("DELETE FROM bundles WHERE trust_domain = $1", [trustDomain]);
      return n > 0;
    });
  }

  // --- join tokens --------------------------------------------------------------------------------------

  async createJoinToken(rec: JoinTokenRecord): Promise<void> {
    await this.#tx(async (q) => {
      const r = await q.query(
        `INSERT INTO join_tokens (token_hash, expires_at, created_at, spiffe_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (token_hash) DO NOTHING`,
        [rec.tokenHash, rec.expiresAt, rec.createdAt, rec.spiffeId ?? null],
      );
      if ((r.rowCount ?? 0) === 0) {
        throw new QhxError("QHX_ALREADY_EXISTS", "a join token with this hash already exists", {
          hint: "generate a new random token",
        });
      }
    });
  }

  /**
   * Valid while `now < expiresAt`. One DELETE … RETURNING: a concurrent caller blocks on the row lock and
   * then finds the row gone, so of any number of callers on any number of servers, one wins.
   */
  async consumeJoinToken(tokenHash: string, now: number): Promise<JoinTokenRecord | undefined> {
    return this.#tx(async (q) => {
      const row = (
        await q.query(
          `DELETE FROM join_tokens WHERE token_hash = $1 AND expires_at > $2
           RETURNING token_hash, expires_at, created_at, spiffe_id`,
          [tokenHash, wholeSeconds(now)],
        )
      ).rows[0];
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
    return this.#tx(
      async (q) =>
        (await q.query("DELETE FROM join_tokens WHERE expires_at <= $1", [wholeSeconds(now)])).rowCount ?? 0,
    );
  }

  // --- nodes --------------------------------------------------------------------------------------------

  /** Insert or replace; an existing node keeps its original createdAt. */
  async upsertNode(node: AttestedNode): Promise<void> {
    checkOneOf(node.assurance, ASSURANCE_LEVELS, "assurance");
    await this.#tx(async (q) => {
      await q.query(
        `INSERT INTO nodes (spiffe_id, attestation_type, selectors, assurance, cert_serial, cert_not_after, banned,
           created_at, updated_at, aliases)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (spiffe_id) DO UPDATE SET attestation_type = excluded.attestation_type,
           selectors = excluded.selectors, assurance = excluded.assurance, cert_serial = excluded.cert_serial,
           cert_not_after = excluded.cert_not_after, banned = excluded.banned, updated_at = excluded.updated_at,
           aliases = excluded.aliases`,
        [
          node.spiffeId,
          node.attestationType,
          JSON.stringify(node.selectors.map((s) => [s.type, s.value])),
          node.assurance,
          node.certSerial,
          node.certNotAfter,
          node.banned,
          node.createdAt,
          node.updatedAt,
          JSON.stringify(node.aliases ?? []),
        ],
      );
    });
  }

  async getNode(spiffeId: string): Promise<AttestedNode | undefined> {
    return this.#read(async (q) => {
      const r = await q.query("SELECT * FROM nodes WHERE spiffe_id = $1", [spiffeId]);
      return r.rows[0] === undefined ? undefined : rowToNode(r.rows[0]);
    });
  }

  async listNodes(): Promise<AttestedNode[]> {
    return this.#read(async (q) =>
      (await q.query('SELECT * FROM nodes ORDER BY spiffe_id COLLATE "C"')).rows.map(rowToNode),
    );
  }

  async deleteNode(spiffeId: string): Promise<boolean> {
    return this.#tx(
      async (q) => ((await q.query("DELETE FROM nodes WHERE spiffe_id = $1", [spiffeId])).rowCount ?? 0) > 0,
    );
  }

  // --- notary log (provenance) ---------------------------------------------------------------------------

  /**
   * Entries and their tree head in one transaction; QHX_CONFLICT unless the entries extend the log. The
   * advisory lock serializes appenders on every server, so the size read here is still the size at commit.
   */
  async appendLog(entries: LogEntryRecord[], head: LogHeadRecord): Promise<void> {
    await this.#tx(async (q) => {
      await q.query("SELECT pg_advisory_xact_lock($1, $2)", [LOCK_NAMESPACE, LOCK_LOG_APPEND]);
      const size = num(
        (await q.query("SELECT COALESCE(MAX(leaf_index) + 1, 0) AS n FROM log_entries")).rows[0]?.n,
      );
      const first = entries[0]?.leafIndex ?? size;
      if (first !== size || head.treeSize !== size + entries.length) {
        throw new QhxError(
          "QHX_CONFLICT",
          `the log has ${size} entries; refusing entries from ${first} with a head of size ${head.treeSize}`,
        );
      }
      for (const [i, e] of entries.entries()) {
        if (e.leafIndex !== size + i) throw new QhxError("QHX_CONFLICT", "log entries must be contiguous");
        await q.query(
          `INSERT INTO log_entries (leaf_index, leaf_hash, statement_hash, admitted_at, statement, signer_id,
             peer_id, decision, exchange_id, tree_size) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
          [
            e.leafIndex,
            bytesParam(e.leafHash),
            bytesParam(e.statementHash),
            e.admittedAt,
            bytesParam(e.statement),
            e.signerId,
            e.peerId,
            e.decision,
            e.exchangeId,
            e.treeSize,
          ],
        );
      }
      await q.query(
        `INSERT INTO log_heads (tree_size, root_hash, created_at, protected, signature, checkpoint)
         VALUES ($1, $2, $3, $4, $5, $6)`,
        [
          head.treeSize,
          bytesParam(head.rootHash),
          head.createdAt,
          bytesParam(head.protectedHeader),
          bytesParam(head.signature),
          head.checkpoint,
        ],
      );
    });
  }

  async logHashes(): Promise<{ leafHash: Uint8Array; statementHash: Uint8Array }[]> {
    return this.#read(async (q) =>
      (await q.query("SELECT leaf_hash, statement_hash FROM log_entries ORDER BY leaf_index")).rows.map(
        (r) => ({
          leafHash: blob(r.leaf_hash),
          statementHash: blob(r.statement_hash),
        }),
      ),
    );
  }

  async getLogEntry(leafIndex: number): Promise<LogEntryRecord | undefined> {
    return this.#read(async (q) => {
      const r = await q.query("SELECT * FROM log_entries WHERE leaf_index = $1", [leafIndex]);
      return r.rows[0] === undefined ? undefined : rowToLogEntry(r.rows[0]);
    });
  }

  async findLogEntry(statementHash: Uint8Array): Promise<LogEntryRecord | undefined> {
    return this.#read(async (q) => {
      const r = await q.query("SELECT * FROM log_entries WHERE statement_hash = $1", [
        bytesParam(statementHash),
      ]);
      return r.rows[0] === undefined ? undefined : rowToLogEntry(r.rows[0]);
    });
  }

  async listLogEntries(filter: LogEntryFilter = {}): Promise<LogEntryRecord[]> {
    return this.#read(async (q) => {
      const params: Param[] = [filter.fromIndex ?? 0];
      const where: string[] = ["leaf_index >= $1"];
      if (filter.signerId !== undefined) {
        params.push(filter.signerId);
        where.push(`signer_id = $${params.length}`);
      }
      if (filter.peerId !== undefined) {
        params.push(filter.peerId);
        where.push(`peer_id = $${params.length}`);
      }
      // SQLite's LIMIT -1 (no limit when absent or negative) is PostgreSQL's LIMIT NULL (ALL)
      params.push(filter.limit === undefined || filter.limit < 0 ? null : filter.limit);
      const sql = `SELECT * FROM log_entries WHERE ${where.join(" AND ")} ORDER BY leaf_index LIMIT $${params.length}`;
      return (await q.query(sql, params)).rows.map(rowToLogEntry);
    });
  }

  async getLogHead(treeSize?: number): Promise<LogHeadRecord | undefined> {
    return this.#read(async (q) => {
      const r =
        treeSize === undefined
          ? (await q.query("SELECT * FROM log_heads ORDER BY tree_size DESC LIMIT 1")).rows[0]
          : (await q.query("SELECT * FROM log_heads WHERE tree_size = $1", [treeSize])).rows[0];
      return r === undefined ? undefined : mappers.logHead(r);
    });
  }

  // --- plumbing -----------------------------------------------------------------------------------------

  #conn(): pg.Pool {
    if (this.#pool === undefined) {
      throw new QhxError("QHX_DATASTORE_CLOSED", `datastore "${this.target}" is closed`);
    }
    return this.#pool;
  }

  /** A read: one statement or several on the pool (each its own snapshot, as in autocommit SQLite). */
  async #read<T>(fn: (q: Querier) => Promise<T>): Promise<T> {
    const pool = this.#conn();
    try {
      return await fn(pool as unknown as Querier);
    } catch (e) {
      throw mapPgError(e, this.target);
    }
  }

  /** Run `fn` in one BEGIN … COMMIT on a dedicated client; ROLLBACK on any error. */
  async #tx<T>(fn: (q: Querier) => Promise<T>): Promise<T> {
    const pool = this.#conn();
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (e) {
      throw mapPgError(e, this.target);
    }
    try {
      return await transaction(client, fn);
    } catch (e) {
      throw mapPgError(e, this.target);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// transactions and migrations

/** BEGIN … COMMIT on `client`, ROLLBACK on error; the client is released (destroyed if it broke). */
async function transaction<T>(client: pg.PoolClient, fn: (q: Querier) => Promise<T>): Promise<T> {
  const q = client as unknown as Querier;
  let broken: Error | undefined;
  try {
    await q.query("BEGIN");
    const result = await fn(q);
    await q.query("COMMIT");
    return result;
  } catch (e) {
    try {
      await q.query("ROLLBACK");
    } catch (rollbackError) {
      broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
    }
    throw e;
  } finally {
    client.release(broken);
  }
}

async function tableExists(q: Querier, name: string): Promise<boolean> {
  const r = await q.query("SELECT to_regclass(quote_ident(current_schema()) || '.' || $1) IS NOT NULL AS e", [
    name,
  ]);
  return r.rows[0]?.e === true;
}

async function schemaVersionOf(q: Querier): Promise<number> {
  if (!(await tableExists(q, POSTGRES_SCHEMA_TABLE))) return 0;
  const r = await q.query(`SELECT version FROM ${POSTGRES_SCHEMA_TABLE} WHERE id = 1`);
  return r.rows[0] === undefined ? 0 : num(r.rows[0].version);
}

/**
 * Bring the schema to POSTGRES_SCHEMA_VERSION in one transaction under an advisory lock: a second server
 * opening at the same time waits, then finds the work done. Refuses (and rolls back, changing nothing) a
 * newer schema or a database that holds another application's tables.
 */
async function migrate(pool: pg.Pool, target: string, t: number): Promise<void> {
  const client = await pool.connect();
  await transaction(client, async (q) => {
    await q.query("SELECT pg_advisory_xact_lock($1, $2)", [LOCK_NAMESPACE, LOCK_MIGRATE]);
    if (!(await tableExists(q, POSTGRES_SCHEMA_TABLE))) {
      const others = (
        await q.query(
          `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()
           ORDER BY table_name COLLATE "C"`,
        )
      ).rows.map((r) => str(r.table_name));
      if (others.length > 0) {
        const listed = others.slice(0, 8).join(", ") + (others.length > 8 ? ", ..." : "");
        throw new QhxError(
          "QHX_DATASTORE_FOREIGN",
          `PostgreSQL database "${target}" holds tables of another application, not a QHx datastore ` +
            `(no ${POSTGRES_SCHEMA_TABLE} table; tables: ${listed})`,
          { hint: FOREIGN_HINT },
        );
      }
      await q.query(
        `CREATE TABLE ${POSTGRES_SCHEMA_TABLE} (
           id          INTEGER PRIMARY KEY CHECK (id = 1),
           version     INTEGER NOT NULL,
           application TEXT NOT NULL,
           created_at  BIGINT NOT NULL,
           updated_at  BIGINT NOT NULL
         )`,
      );
      await q.query(
        `INSERT INTO ${POSTGRES_SCHEMA_TABLE} (id, version, application, created_at, updated_at)
         VALUES (1, 0, 'qhx', $1, $1)`,
        [t],
      );
    }
    const row = (await q.query(`SELECT version, application FROM ${POSTGRES_SCHEMA_TABLE} WHERE id = 1`))
      .rows[0];
    if (row === undefined || row.application !== "qhx") {
      throw new QhxError(
        "QHX_DATASTORE_FOREIGN",
        `PostgreSQL database "${target}" has a ${POSTGRES_SCHEMA_TABLE} table that is not QHx's`,
        { hint: FOREIGN_HINT },
      );
    }
    const version = num(row.version);
    if (version > POSTGRES_SCHEMA_VERSION) throw tooNew(target, version);
    for (const m of MIGRATIONS) {
      if (m.version <= version) continue;
      await q.query(m.sql);
      await q.query(`UPDATE ${POSTGRES_SCHEMA_TABLE} SET version = $1, updated_at = $2 WHERE id = 1`, [
        m.version,
        t,
      ]);
    }
  });
}

function tooNew(target: string, version: number): QhxError {
  return new QhxError(
    "QHX_DATASTORE_TOO_NEW",
    `datastore "${target}" has schema version ${version}, but this build of QHx supports up to version ${POSTGRES_SCHEMA_VERSION}`,
    {
      hint: "it was written by a newer QHx: run that version (or newer), or restore a backup taken before the upgrade",
    },
  );
}

// ---------------------------------------------------------------------------------------------------------
// errors

/** Replace the password of a postgres:// URL (and any `password=` parameter) with `***`. */
export function redactConnectionString(cs: string): string {
  let out = cs;
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^@/?#]*)@/i.exec(out);
  if (m?.[1] !== undefined && m[2] !== undefined) {
    const userinfo = m[2];
    const colon = userinfo.indexOf(":");
    if (colon >= 0) out = `${m[1]}${userinfo.slice(0, colon)}:***@${out.slice(m[0].length)}`;
  }
  return out.replace(/(password=)[^&\s]*/gi, "$1***");
}

/** Errors raised before any server answered: DNS, refused, timeouts, TLS, authentication. */
function isConnectionError(e: unknown): boolean {
  const code = (e as { code?: unknown } | undefined)?.code;
  if (typeof code !== "string") return true; // not a server error (no SQLSTATE): the connection failed
  return code.startsWith("08") || code.startsWith("28") || code === "3D000" || /^E[A-Z_]+$/.test(code);
}

function openFailed(target: string, cause: unknown): QhxError {
  const code = (cause as { code?: unknown } | undefined)?.code;
  const hint =
    code === "ECONNREFUSED" || code === "ENOTFOUND" || code === "EAI_AGAIN" || code === "ETIMEDOUT"
      ? "check that PostgreSQL is running and that the host and port of datastore.connection_string are right"
      : code === "28P01" || code === "28000"
        ? "check the user and password (the password may also come from PGPASSWORD or ~/.pgpass)"
        : code === "3D000"
          ? "create the database first (createdb), or fix its name in datastore.connection_string"
          : "check datastore.connection_string and that the PostgreSQL server is reachable";
  return new QhxError(
    "QHX_DATASTORE_OPEN_FAILED",
    `cannot open PostgreSQL datastore "${target}": ${redactMessage(cause)}`,
    { hint, cause },
  );
}

function redactMessage(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return message.replace(/postgres(ql)?:\/\/\S+/gi, (u) => redactConnectionString(u));
}

const LOST_CONNECTION =
  /connection terminated|connection error|not queryable|timeout exceeded when trying to connect/i;

function unavailable(e: unknown, target: string): QhxError {
  return new QhxError(
    "QHX_DATASTORE_UNAVAILABLE",
    `datastore "${target}" is unreachable: ${redactMessage(e)}`,
    {
      hint: "check that the PostgreSQL server is running and reachable; retry",
      cause: e,
    },
  );
}

/** Map a pg error (SQLSTATE in `code`) to the QhxError codes the SQLite datastore uses. */
function mapPgError(e: unknown, target: string): QhxError {
  if (e instanceof QhxError) return e;
  const code = (e as { code?: unknown } | undefined)?.code;
  const message = redactMessage(e);
  if (typeof code === "string") {
    if (code === "23505") return new QhxError("QHX_ALREADY_EXISTS", `datastore: ${message}`, { cause: e });
    if (code.startsWith("23") || code.startsWith("22")) {
      return new QhxError("QHX_INVALID_ARGUMENT", `datastore: ${message}`, { cause: e });
    }
    if (code === "40001" || code === "40P01" || code === "55P03" || code === "57014") {
      return new QhxError("QHX_DATASTORE_BUSY", `datastore "${target}" is busy: ${message}`, {
        hint: "another server held a conflicting lock; retry",
        cause: e,
      });
    }
    if (code.startsWith("08") || code.startsWith("57P") || /^E[A-Z]+$/.test(code))
      return unavailable(e, target);
  } else if (LOST_CONNECTION.test(message)) {
    // pg's own errors for a connection that died under a query carry no SQLSTATE
    return unavailable(e, target);
  }
  return new QhxError("QHX_DATASTORE_ERROR", `datastore "${target}": ${message}`, { cause: e });
}

// ---------------------------------------------------------------------------------------------------------
// rows

const ENTRY_SELECT = `SELECT e.*,
  (SELECT COALESCE(json_agg(json_build_array(s.type, s.value) ORDER BY s.position), '[]'::json)
     FROM entry_selectors s WHERE s.entry_id = e.id)::text AS selectors_json
  FROM entries e`;

/**
 * `now` for comparison with integer columns: for an integer x, x > t ⇔ x > ⌊t⌋ and x ≤ t ⇔ x ≤ ⌊t⌋, so
 * flooring keeps SQLite's answers for fractional times (BIGINT parameters refuse fractions).
 */
function wholeSeconds(t: number): number {
  if (!Number.isFinite(t)) throw new ValidationError(`must be a finite number (got ${t})`, "now");
  return Math.floor(t);
}

async function insertSelectors(q: Querier, entryId: string, selectors: Selector[]): Promise<void> {
  for (const [i, s] of selectors.entries()) {
    await q.query("INSERT INTO entry_selectors (entry_id, position, type, value) VALUES ($1, $2, $3, $4)", [
      entryId,
      i,
      s.type,
      s.value,
    ]);
  }
}

/** The friendly duplicate message; the UNIQUE constraint still decides races between servers. */
async function assertUniqueEntry(
  q: Querier,
  spiffeId: string,
  parentId: string,
  key: string,
  selfId: string | undefined,
  selectors: Selector[],
): Promise<void> {
  const other = (
    await q.query(
      "SELECT id FROM entries WHERE spiffe_id = $1 AND parent_id = $2 AND selectors_key = $3 AND id IS DISTINCT FROM $4",
      [spiffeId, parentId, key, selfId ?? null],
    )
  ).rows[0];
  if (other !== undefined) throw duplicateEntry(spiffeId, parentId, selectors, String(other.id));
}

function duplicateEntry(spiffeId: string, parentId: string, selectors: Selector[], id?: string): QhxError {
  return new QhxError(
    "QHX_ALREADY_EXISTS",
    `an entry with spiffe_id "${spiffeId}", parent_id "${parentId}" and selectors ` +
      `[${selectors.map((s) => `${s.type}:${s.value}`).join(", ")}] already exists` +
      (id === undefined ? "" : ` (id ${id})`),
    { hint: "update the existing entry instead of creating a new one" },
  );
}

/** A byte array as pg sends BYTEA: a Buffer over the same memory (no copy). */
function bytesParam(v: Uint8Array): Buffer;
function bytesParam(v: Uint8Array | null): Buffer | null;
function bytesParam(v: Uint8Array | null): Buffer | null {
  if (v === null) return null;
  return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

// pg's column values: TEXT as string, BIGINT as a decimal string, BOOLEAN as boolean, BYTEA as Buffer
function str(v: unknown): string {
  if (typeof v !== "string") throw corrupt("a text", v);
  return v;
}

/** BIGINT arrives as a decimal string (pg does not guess at precision); every value QHx stores is safe. */
function num(v: unknown): number {
  if (typeof v === "number") return v;
  if (typeof v === "string" && /^-?\d+$/.test(v)) {
    const n = Number(v);
    if (Number.isSafeInteger(n)) return n;
  }
  if (typeof v === "bigint") return Number(v);
  throw corrupt("an integer", v);
}

function bool(v: unknown): boolean {
  if (typeof v === "boolean") return v;
  throw corrupt("a boolean", v);
}

/** BYTEA arrives as a Buffer; hand out a plain Uint8Array copy, as node:sqlite does. */
function blob(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return new Uint8Array(v);
  throw corrupt("a blob", v);
}

const mappers = rowMappers({ str, num, bool, blob });
const rowToEntry = mappers.entry;
const rowToBundle = mappers.bundle;
const rowToFederation = mappers.federation;
const rowToLogEntry = mappers.logEntry;
const rowToNode = mappers.node;
