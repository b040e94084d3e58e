/**
 * The single registration point for datastore plugins: config in, Datastore out. Add a new kind here
 * (one case) and nowhere else.
 */
import { QhxError } from "../../core/errors.ts";
import { PostgresDatastore } from "./postgres.ts";
import { SqliteDatastore } from "./sqlite.ts";
import type { Datastore } from "./types.ts";

export { PostgresDatastore } from "./postgres.ts";
export { SqliteDatastore } from "./sqlite.ts";
export type { Datastore } from "./types.ts";

export interface SqliteDatastoreConfig {
  kind: "sqlite";
  /** Database file (created with mode 0600 if absent), or ":memory:". */
  path: string;
  /** Current time in unix seconds (tests). */
  clock?: () => number;
}

export interface PostgresDatastoreConfig {
  kind: "postgres";
  /** e.g. postgres://qhx@db.internal/qhx (a password here is never logged; PGPASSWORD also works) */
  connectionString: string;
  /** Most connections the pool opens (default 10). */
  maxConnections?: number;
  /** Current time in unix seconds (tests). */
  clock?: () => number;
}

export type DatastoreConfig = SqliteDatastoreConfig | PostgresDatastoreConfig;

export const DATASTORE_KINDS = ["sqlite", "postgres"] as const;

export async function openDatastore(config: DatastoreConfig): Promise<Datastore> {
  const kind: string = config.kind;
  switch (config.kind) {
    case "sqlite":
      return SqliteDatastore.open(config.path, config.clock === undefined ? {} : { clock: config.clock });
    case "postgres":
      return PostgresDatastore.open(config.connectionString, {
        ...(config.clock === undefined ? {} : { clock: config.clock }),
        ...(config.maxConnections === undefined ? {} : { maxConnections: config.maxConnections }),
      });
    default:
      throw new QhxError("QHX_UNSUPPORTED", `unknown datastore kind ${JSON.stringify(kind)}`, {
        hint: 'supported kinds: "sqlite", "postgres"',
      });
  }
}
