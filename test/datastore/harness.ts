/**
 * One harness per datastore kind, so the same tests run against SQLite and PostgreSQL. Call
 * `useDatastoreHarness(kind)` inside a describe: it registers the hooks (a PostgreSQL server for the
 * describe block, a fresh database per test) and returns handles to open datastores on that database.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { afterAll, afterEach, beforeAll, beforeEach } from "vitest";
import { PostgresDatastore } from "../../host/server/datastore/postgres.ts";
import { SqliteDatastore } from "../../host/server/datastore/sqlite.ts";
import type { Datastore } from "../../host/server/datastore/types.ts";
import { type PostgresServer, postgresUnavailable, startPostgres } from "../helpers/postgres.ts";

export type DatastoreKind = "sqlite" | "postgres";

export const DATASTORE_KINDS: readonly DatastoreKind[] = ["sqlite", "postgres"];

/** Why a kind cannot run here (postgres without binaries), else undefined. */
export function unavailable(kind: DatastoreKind): string | undefined {
  return kind === "postgres" ? postgresUnavailable : undefined;
}

export interface DatastoreHarness {
  readonly kind: DatastoreKind;
  /** A new datastore (its own connection / pool) on this test's database; closed after the test. */
  open(opts?: { clock?: () => number }): Promise<Datastore>;
  /** Rows in a table of this test's database, read beside the datastore. */
  count(table: string): Promise<number>;
  /** This test's database: a file path (sqlite) or a connection string (postgres). */
  location(): string;
  /** The PostgreSQL server (postgres kind only). */
  server(): PostgresServer;
}

export function useDatastoreHarness(kind: DatastoreKind): DatastoreHarness {
  let pgServer: PostgresServer | undefined;
  let dir = "";
  let where = "";
  const opened: Datastore[] = [];

  beforeAll(async () => {
    if (kind === "postgres") pgServer = await startPostgres();
  });
  afterAll(async () => {
    await pgServer?.stop();
  });
  beforeEach(async () => {
    if (kind === "sqlite") {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-ds-"));
      where = path.join(dir, "qhx.db");
    } else {
      where = await pgServer!.createDatabase();
    }
  });
  afterEach(async () => {
    for (const ds of opened.splice(0)) await ds.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dir = "";
  });

  return {
    kind,
    async open(opts = {}) {
      const ds =
        kind === "sqlite"
          ? SqliteDatastore.open(where, opts.clock ? { clock: opts.clock } : {})
          : await PostgresDatastore.open(where, opts.clock ? { clock: opts.clock } : {});
      opened.push(ds);
      return ds;
    },
    async count(table) {
      if (!/^[a-z_]+$/.test(table)) throw new Error(`bad table name ${table}`);
      if (kind === "sqlite") {
        const db = new DatabaseSync(where, { readOnly: true });
        try {
          return Number(db.prepare(`SELECT count(*) AS n FROM ${table}`).get()!.n);
        } finally {
          db.close();
        }
      }
      const r = await pgServer!.query(where, `SELECT count(*)::int AS n FROM ${table}`);
      return Number((r.rows[0] as { n: number }).n);
    },
    location: () => where,
    server() {
      if (!pgServer) throw new Error("no PostgreSQL server for this harness");
      return pgServer;
    },
  };
}
