/**
 * The datastore: the conformance suite (test/datastore/conformance.ts) against every kind, then what is
 * SQLite's alone (the file, its header and modes, several processes on one file).
 * PostgreSQL-only behaviour (migrations, connection errors, the server end to end): test/datastore/.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openDatastore } from "../host/server/datastore/index.ts";
import { QHX_APPLICATION_ID, SCHEMA_VERSION, SqliteDatastore } from "../host/server/datastore/sqlite.ts";
import { datastoreConformance, input, rejectsWith } from "./datastore/conformance.ts";
import { DATASTORE_KINDS, unavailable, useDatastoreHarness } from "./datastore/harness.ts";

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), "e2e", "fixtures");

for (const kind of DATASTORE_KINDS) {
  const why = unavailable(kind);
  describe.skipIf(why !== undefined)(
    `datastore conformance: ${kind}${why ? ` (skipped: ${why})` : ""}`,
    () => {
      datastoreConformance(useDatastoreHarness(kind));
    },
  );
}

let dir: string;
let dbPath: string;
let t: number;
const clock = () => t;
const opened: SqliteDatastore[] = [];

function open(p = dbPath): SqliteDatastore {
  const ds = SqliteDatastore.open(p, { clock });
  opened.push(ds);
  return ds;
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-ds-"));
  dbPath = path.join(dir, "qhx.db");
  t = 1_800_000_000;
});

afterEach(async () => {
  for (const ds of opened.splice(0)) await ds.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("sqlite: files and processes", () => {
  it("uses the selector index for the selector filter", () => {
    const ds = open();
    const db = new DatabaseSync(dbPath);
    try {
      const plan = db
        .prepare(
          "EXPLAIN QUERY PLAN SELECT entry_id FROM entry_selectors WHERE type = 'unix' AND value = 'uid:1'",
        )
        .all()
        .map((r) => String(r.detail))
        .join("\n");
      expect(plan).toContain("entry_selectors_type_value");
    } finally {
      db.close();
    }
    expect(ds.schemaVersion()).toBe(SCHEMA_VERSION);
  });

  const tok = { tokenHash: "a".repeat(64), expiresAt: 1_800_000_600, createdAt: 1_800_000_000 };

  it("concurrent consumption from several processes: exactly one wins", async () => {
    const ds = open();
    await ds.createJoinToken(tok);
    const startAt = Date.now() + 1500;
    const script = path.join(FIXTURES, "consume-token.ts");
    const runs = Array.from({ length: 4 }, () => {
      const child = spawn(process.execPath, [script, dbPath, tok.tokenHash, "1800000001", String(startAt)], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      let err = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
      });
      child.stderr.on("data", (d: Buffer) => {
        err += d.toString();
      });
      return new Promise<string>((resolve, reject) =>
        child.on("exit", (code) =>
          code === 0 ? resolve(out.trim()) : reject(new Error(`exit ${code}: ${err}`)),
        ),
      );
    });
    const results = await Promise.all(runs);
    expect(results.sort()).toEqual(["lost", "lost", "lost", "won"]);
  });
});

describe("sqlite: opening", () => {
  it("creates the file 0600 in WAL mode with synchronous=FULL and foreign keys on", async () => {
    const ds = open();
    expect(fs.statSync(dbPath).mode & 0o777).toBe(0o600);
    const db = new DatabaseSync(dbPath, { readOnly: true });
    try {
      expect(db.prepare("PRAGMA journal_mode").get()!.journal_mode).toBe("wal");
      expect(db.prepare("PRAGMA user_version").get()!.user_version).toBe(SCHEMA_VERSION);
      expect(db.prepare("PRAGMA application_id").get()!.application_id).toBe(QHX_APPLICATION_ID);
      expect(db.prepare("SELECT value FROM qhx_meta WHERE key = 'application'").get()!.value).toBe("qhx");
    } finally {
      db.close();
    }
    await ds.close();
  });

  it("migrations are idempotent: reopening, and opening concurrently, leaves one schema", async () => {
    const first = open();
    const schema = () => {
      const db = new DatabaseSync(dbPath, { readOnly: true });
      try {
        return db.prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY name").all();
      } finally {
        db.close();
      }
    };
    const before = schema();
    await first.close();
    for (let i = 0; i < 3; i++) await open().close();
    const a = open();
    const b = open();
    expect(a.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(b.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(schema()).toEqual(before);
  });

  it("refuses a non-SQLite file and leaves it byte-identical", async () => {
    const garbage = Buffer.from("this is definitely not a database\n".repeat(200));
    fs.writeFileSync(dbPath, garbage);
    const err = await rejectsWith(() => open(), "QHX_DATASTORE_CORRUPT");
    expect(err.message).toContain("not a SQLite database");
    expect(err.hint).toContain("backup");
    expect(fs.readFileSync(dbPath).equals(garbage)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(["qhx.db"]);
  });

  it("refuses a corrupt SQLite file (valid header, damaged pages) and leaves it byte-identical", async () => {
    const ds = open();
    for (let i = 0; i < 50; i++) await ds.createEntry(input({ spiffeId: `spiffe://example.org/w${i}` }));
    await ds.close();
    const good = fs.readFileSync(dbPath);
    const pageSize = good.readUInt16BE(16);
    const bad = Buffer.from(good);
    for (let i = pageSize; i < Math.min(bad.length, 4 * pageSize); i++) bad[i] = (i * 31) & 0xff;
    fs.writeFileSync(dbPath, bad);
    const err = await rejectsWith(() => open(), "QHX_DATASTORE_CORRUPT");
    expect(err.message).toContain(dbPath);
    expect(fs.readFileSync(dbPath).equals(bad)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(["qhx.db"]);
  });

  it("refuses a database with a newer schema version and leaves it byte-identical", async () => {
    await open().close();
    const raw = new DatabaseSync(dbPath);
    raw.exec("PRAGMA user_version = 99");
    raw.close();
    const before = fs.readFileSync(dbPath);
    const err = await rejectsWith(() => open(), "QHX_DATASTORE_TOO_NEW");
    expect(err.message).toContain("schema version 99");
    expect(err.message).toContain(`supports up to version ${SCHEMA_VERSION}`);
    expect(err.hint).toMatch(/newer QHx/);
    expect(fs.readFileSync(dbPath).equals(before)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(["qhx.db"]);
  });

  it("refuses another application's SQLite database and leaves it byte-identical", async () => {
    const raw = new DatabaseSync(dbPath);
    raw.exec(
      "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('bob')",
    );
    raw.close();
    const before = fs.readFileSync(dbPath);
    const err = await rejectsWith(() => open(), "QHX_DATASTORE_FOREIGN");
    expect(err.message).toContain("another application");
    expect(err.message).toContain("users");
    expect(fs.readFileSync(dbPath).equals(before)).toBe(true);
    // even one that happens to have a user_version but no tables
    fs.rmSync(dbPath);
    const raw2 = new DatabaseSync(dbPath);
    raw2.exec("PRAGMA user_version = 7");
    raw2.close();
    const before2 = fs.readFileSync(dbPath);
    await rejectsWith(() => open(), "QHX_DATASTORE_FOREIGN");
    expect(fs.readFileSync(dbPath).equals(before2)).toBe(true);
  });

  it("initializes an existing empty file", async () => {
    fs.writeFileSync(dbPath, "");
    const ds = open();
    expect(ds.schemaVersion()).toBe(SCHEMA_VERSION);
  });

  it("reports a missing directory clearly", async () => {
    const err = await rejectsWith(
      () => open(path.join(dir, "no", "such", "x.db")),
      "QHX_DATASTORE_OPEN_FAILED",
    );
    expect(err.hint).toContain("directory");
  });

  it("supports :memory:", async () => {
    const ds = open(":memory:");
    const e = await ds.createEntry(input());
    expect(await ds.getEntry(e.id)).toEqual(e);
  });
});

describe("openDatastore", () => {
  it("opens sqlite", async () => {
    const ds = await openDatastore({ kind: "sqlite", path: dbPath });
    expect(ds.kind).toBe("sqlite");
    expect(ds).toBeInstanceOf(SqliteDatastore);
    await ds.close();
  });

  it("rejects an unknown kind", async () => {
    const err = await rejectsWith(openDatastore({ kind: "mysql" } as never), "QHX_UNSUPPORTED");
    expect(err.message).toContain('"mysql"');
    expect(err.hint).toContain("postgres");
  });
});
