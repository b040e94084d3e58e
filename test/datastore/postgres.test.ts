/**
 * What is PostgreSQL's alone: schema migrations under concurrency, refusing foreign and newer databases,
 * connection errors that never show the password, the `datastore` config section, and `qhx server` end to
 * end on a PostgreSQL datastore. The shared behaviour is the conformance suite (test/datastore.test.ts).
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseServerConfig } from "../../host/server/config.ts";
import { openDatastore } from "../../host/server/datastore/index.ts";
import {
  POSTGRES_SCHEMA_VERSION,
  PostgresDatastore,
  redactConnectionString,
} from "../../host/server/datastore/postgres.ts";
import { qhx, startServerProcess, tmpDir } from "../helpers/cli.ts";
import { type PostgresServer, postgresUnavailable, startPostgres } from "../helpers/postgres.ts";
import { input, rejectsWith } from "./conformance.ts";

describe("redactConnectionString", () => {
  it("hides the password of a URL and of a password= parameter, and nothing else", () => {
    expect(redactConnectionString("postgres://qhx:s3cret@db:5432/qhx")).toBe(
      "postgres://qhx:***@db:5432/qhx",
    );
    expect(redactConnectionString("postgresql://qhx:p%40ss:w@db/qhx?sslmode=require")).toBe(
      "postgresql://qhx:***@db/qhx?sslmode=require",
    );
    expect(redactConnectionString("postgres://qhx@db/qhx")).toBe("postgres://qhx@db/qhx");
    expect(redactConnectionString("postgres://db/qhx?user=a&password=hunter2&x=1")).toBe(
      "postgres://db/qhx?user=a&password=***&x=1",
    );
    expect(redactConnectionString("postgres://:only@db/qhx")).toBe("postgres://:***@db/qhx");
  });
});

describe("datastore config section", () => {
  const base = { trust_domain: "example.org", data_dir: "/tmp/qhx-x" };

  it("defaults to sqlite and parses a postgres datastore", () => {
    expect(parseServerConfig(base).datastore).toEqual({ kind: "sqlite" });
    expect(parseServerConfig({ ...base, datastore: { kind: "sqlite" } }).datastore).toEqual({
      kind: "sqlite",
    });
    expect(
      parseServerConfig({
        ...base,
        datastore: { kind: "postgres", connection_string: "postgres://qhx@db/qhx", max_connections: 4 },
      }).datastore,
    ).toEqual({ kind: "postgres", connectionString: "postgres://qhx@db/qhx", maxConnections: 4 });
  });

  it("rejects bad datastore sections with precise messages that never echo the connection string", () => {
    const bad = (datastore: unknown) => {
      try {
        parseServerConfig({ ...base, datastore });
      } catch (e) {
        expect((e as { code: string }).code).toBe("QHX_INVALID_CONFIG");
        return (e as Error).message;
      }
      throw new Error("accepted");
    };
    expect(bad({ kind: "postgres" })).toMatch(/datastore\.connection_string/);
    const msg = bad({ kind: "postgres", connection_string: "mysql://u:topsecret@h/d" });
    expect(msg).toMatch(/datastore\.connection_string: expected a postgres:\/\/ URL/);
    expect(msg).not.toContain("topsecret");
    expect(bad({ kind: "mysql" })).toMatch(/datastore\.kind/);
    expect(bad({ kind: "sqlite", connection_string: "postgres://x/y" })).toMatch(/unknown key/);
    expect(bad({ kind: "postgres", connection_string: "postgres://x/y", pool: 3 })).toMatch(/unknown key/);
    expect(bad({ kind: "postgres", connection_string: "postgres://x/y", max_connections: 0 })).toMatch(
      /max_connections/,
    );
  });
});

describe("postgres: connection errors", () => {
  it("refuses a string that is not a postgres:// URL, without echoing its password", async () => {
    const err = await rejectsWith(
      PostgresDatastore.open("host=db user=qhx password=hunter2"),
      "QHX_DATASTORE_OPEN_FAILED",
    );
    expect(err.message).toContain("expected postgres://");
    expect(err.message).not.toContain("hunter2");
    const bad = await rejectsWith(
      PostgresDatastore.open("postgres://qhx:hunter2@db:notaport/qhx"),
      "QHX_DATASTORE_OPEN_FAILED",
    );
    expect(bad.message).toContain('"postgres://qhx:***@db:notaport/qhx"');
    expect(bad.message).not.toContain("hunter2");
  });

  it("reports a refused connection clearly, naming the database without its password", async () => {
    // a port nothing listens on: bind one, learn it, close it
    const net = await import("node:net");
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const err = await rejectsWith(
      openDatastore({ kind: "postgres", connectionString: `postgres://qhx:hunter2@127.0.0.1:${port}/qhx` }),
      "QHX_DATASTORE_OPEN_FAILED",
    );
    expect(err.message).toContain(`postgres://qhx:***@127.0.0.1:${port}/qhx`);
    expect(err.message).not.toContain("hunter2");
    expect(err.hint).toMatch(/PostgreSQL is running/);
  });
});

const why = postgresUnavailable;

describe.skipIf(why !== undefined)(`postgres only${why ? ` (skipped: ${why})` : ""}`, () => {
  let server: PostgresServer;
  const opened: PostgresDatastore[] = [];
  const open = async (url: string) => {
    const ds = await PostgresDatastore.open(url);
    opened.push(ds);
    return ds;
  };

  beforeAll(async () => {
    server = await startPostgres();
  });
  afterAll(async () => {
    for (const ds of opened.splice(0)) await ds.close();
    await server?.stop();
  });

  const tables = async (url: string) =>
    (
      await server.query(
        url,
        `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'
         ORDER BY table_name COLLATE "C"`,
      )
    ).rows.map((r: { table_name: string }) => r.table_name);

  describe("opening and migrations", () => {
    it("openDatastore opens postgres and migrates a fresh database to the current schema", async () => {
      const url = await server.createDatabase();
      const ds = await openDatastore({ kind: "postgres", connectionString: url });
      try {
        expect(ds).toBeInstanceOf(PostgresDatastore);
        expect(ds.kind).toBe("postgres");
        expect(await (ds as PostgresDatastore).schemaVersion()).toBe(POSTGRES_SCHEMA_VERSION);
      } finally {
        await ds.close();
      }
      expect(await tables(url)).toEqual([
        "bundles",
        "ca_journal",
        "ca_upstream_chain",
        "entries",
        "entry_selectors",
        "federation_relationships",
        "join_tokens",
        "log_entries",
        "log_heads",
        "nodes",
        "qhx_schema",
      ]);
      const row = (await server.query(url, "SELECT id, version, application FROM qhx_schema")).rows;
      expect(row).toEqual([{ id: 1, version: POSTGRES_SCHEMA_VERSION, application: "qhx" }]);
    });

    it("several servers opening a fresh database at once migrate it once", async () => {
      const url = await server.createDatabase();
      const all = await Promise.all(Array.from({ length: 5 }, () => open(url)));
      for (const ds of all) expect(await ds.schemaVersion()).toBe(POSTGRES_SCHEMA_VERSION);
      expect((await server.query(url, "SELECT count(*)::int AS n FROM qhx_schema")).rows[0].n).toBe(1);
      // and they all work on the same data
      const e = await all[0]!.createEntry(input());
      expect(await all[4]!.getEntry(e.id)).toEqual(e);
    });

    it("migrates forward from an older schema, keeping the data", async () => {
      const url = await server.createDatabase();
      const ds = await open(url);
      const e = await ds.createEntry(input());
      await ds.close();
      // make it look like a version-2 database (before federation and the notary log)
      await server.query(url, "DROP TABLE federation_relationships, log_entries, log_heads");
      await server.query(url, "UPDATE qhx_schema SET version = 2");
      const again = await open(url);
      expect(await again.schemaVersion()).toBe(POSTGRES_SCHEMA_VERSION);
      expect(await again.getEntry(e.id)).toEqual(e);
      expect(await again.listFederationRelationships()).toEqual([]);
      expect(await again.getLogHead()).toBeUndefined();
    });

    it("refuses a database with a newer schema, untouched", async () => {
      const url = await server.createDatabase();
      await (await open(url)).close();
      await server.query(url, "UPDATE qhx_schema SET version = 99");
      const before = await tables(url);
      const err = await rejectsWith(PostgresDatastore.open(url), "QHX_DATASTORE_TOO_NEW");
      expect(err.message).toContain("schema version 99");
      expect(err.message).toContain(`supports up to version ${POSTGRES_SCHEMA_VERSION}`);
      expect(err.hint).toMatch(/newer QHx/);
      expect(await tables(url)).toEqual(before);
      expect((await server.query(url, "SELECT version FROM qhx_schema")).rows[0].version).toBe(99);
    });

    it("refuses another application's database, untouched", async () => {
      const url = await server.createDatabase();
      await server.query(url, "CREATE TABLE users (id serial PRIMARY KEY, name text)");
      const err = await rejectsWith(PostgresDatastore.open(url), "QHX_DATASTORE_FOREIGN");
      expect(err.message).toContain("users");
      expect(err.hint).toMatch(/does not modify/);
      expect(await tables(url)).toEqual(["users"]);
      // and a qhx_schema table that is not ours
      const url2 = await server.createDatabase();
      await server.query(
        url2,
        `CREATE TABLE qhx_schema (id int PRIMARY KEY, version int NOT NULL, application text NOT NULL,
           created_at bigint NOT NULL, updated_at bigint NOT NULL);
         INSERT INTO qhx_schema VALUES (1, 1, 'other', 0, 0)`,
      );
      await rejectsWith(PostgresDatastore.open(url2), "QHX_DATASTORE_FOREIGN");
    });

    it("a failed migration is rolled back entirely", async () => {
      const url = await server.createDatabase();
      await (await open(url)).close();
      await server.query(url, "DROP TABLE log_entries, log_heads");
      // version 3 with a conflicting object in the way of migration 4: migration 4 fails half-way
      await server.query(url, "UPDATE qhx_schema SET version = 3; CREATE TABLE log_heads (x int)");
      const err = await rejectsWith(PostgresDatastore.open(url), "QHX_DATASTORE_ERROR");
      expect(err.message).toContain("log_heads");
      expect((await server.query(url, "SELECT version FROM qhx_schema")).rows[0].version).toBe(3);
      expect(await tables(url)).not.toContain("log_entries");
    });

    it("reports an unknown database and a role that may not log in clearly", async () => {
      const u = new URL(server.adminUrl);
      u.pathname = "/no_such_db";
      const missing = await rejectsWith(PostgresDatastore.open(u.toString()), "QHX_DATASTORE_OPEN_FAILED");
      expect(missing.message).toContain("no_such_db");
      expect(missing.hint).toMatch(/createdb/);
      await server.query(server.adminUrl, "DROP ROLE IF EXISTS qhx_nologin; CREATE ROLE qhx_nologin NOLOGIN");
      const v = new URL(server.adminUrl);
      v.username = "qhx_nologin";
      v.password = "hunter2";
      const denied = await rejectsWith(PostgresDatastore.open(v.toString()), "QHX_DATASTORE_OPEN_FAILED");
      expect(denied.message).not.toContain("hunter2");
      expect(denied.hint).toMatch(/user and password/);
    });
  });

  describe("outages", () => {
    it.skipIf(process.env.QHX_TEST_POSTGRES_URL !== undefined)(
      "while the database is down calls fail with QHX_DATASTORE_UNAVAILABLE; they work again once it is back",
      async () => {
        const url = await server.createDatabase();
        const ds = await open(url);
        const e = await ds.createEntry(input());
        server.pause();
        try {
          const err = await rejectsWith(ds.listEntries(), "QHX_DATASTORE_UNAVAILABLE");
          expect(err.hint).toMatch(/running/);
          await rejectsWith(
            ds.createEntry(input({ spiffeId: "spiffe://example.org/x" })),
            "QHX_DATASTORE_UNAVAILABLE",
          );
          await rejectsWith(ds.consumeJoinToken("a".repeat(64), 1), "QHX_DATASTORE_UNAVAILABLE");
        } finally {
          server.resume();
        }
        // the pool dropped its dead connections and opens new ones
        expect(await ds.listEntries()).toEqual([e]);
        await ds.createEntry(input({ spiffeId: "spiffe://example.org/y" }));
        expect(await ds.listEntries()).toHaveLength(2);
      },
    );
  });

  describe("`qhx server` on a PostgreSQL datastore", () => {
    let srv: Awaited<ReturnType<typeof startServerProcess>> | undefined;
    let srv2: Awaited<ReturnType<typeof startServerProcess>> | undefined;
    const made: string[] = [];
    afterAll(async () => {
      await srv?.stop();
      await srv2?.stop();
      for (const d of [...made, srv?.dir, srv2?.dir]) if (d) fs.rmSync(d, { recursive: true, force: true });
    });

    it("starts, issues an X509-SVID and keeps its state in PostgreSQL, never logging the password", async () => {
      const url = new URL(await server.createDatabase("qhx_e2e"));
      const db = url.pathname.slice(1);
      await server.query(
        server.adminUrl,
        `DROP ROLE IF EXISTS qhx_server; CREATE ROLE qhx_server LOGIN PASSWORD 'pw-Zq81xx'; ALTER DATABASE ${db} OWNER TO qhx_server`,
      );
      url.username = "qhx_server";
      url.password = "pw-Zq81xx";
      const dir = tmpDir("qhx-pg-e2e-");
      made.push(dir);
      const cfg = path.join(dir, "server.yaml");
      fs.writeFileSync(cfg, `datastore:\n  kind: postgres\n  connection_string: "${url.toString()}"\n`);
      srv = await startServerProcess(["--config", cfg]);
      const opened = srv.logs.find((l) => l.msg === "datastore opened");
      expect(opened).toMatchObject({ datastore: "postgres" });
      expect(String(opened!.target)).toContain("qhx_server:***@127.0.0.1");

      const sock = ["--socket", srv.adminSocket];
      const c = qhx([
        "entry",
        "create",
        ...sock,
        "--spiffe-id",
        "spiffe://example.org/web",
        "--parent-id",
        "spiffe://example.org/qhx/agent/join_token/n1",
        "--selector",
        "unix:uid:1000",
      ]);
      expect(c.stderr).toBe("");
      expect(c.status).toBe(0);
      const out = path.join(dir, "svid");
      const m = qhx(["svid", "mint", ...sock, "--spiffe-id", "spiffe://example.org/web", "--out", out]);
      expect(m.stderr).toBe("");
      expect(m.status).toBe(0);
      const verify = execFileSync(
        "openssl",
        ["verify", "-CAfile", path.join(out, "bundle.pem"), path.join(out, "svid.pem")],
        { encoding: "utf8" },
      );
      expect(verify).toMatch(/: OK/);

      // the state is in PostgreSQL, not in a SQLite file
      const admin = server.adminUrl.replace(/\/postgres$/, `/${db}`);
      const entries = await server.query(admin, "SELECT spiffe_id FROM entries");
      expect(entries.rows).toEqual([{ spiffe_id: "spiffe://example.org/web" }]);
      const cas = await server.query(
        admin,
        "SELECT count(*)::int AS n FROM ca_journal WHERE status = 'active'",
      );
      expect(cas.rows[0].n).toBeGreaterThanOrEqual(1);
      expect(fs.existsSync(path.join(srv.dataDir, "datastore.sqlite3"))).toBe(false);

      const t = qhx(["token", "generate", ...sock, "--ttl", "5m"]);
      expect(t.status).toBe(0);
      expect((await server.query(admin, "SELECT count(*)::int AS n FROM join_tokens")).rows[0].n).toBe(1);

      // a second server on the same database (its data directory a copy of the first's: the CA keys are
      // not in the datastore) sees the same entries and issues SVIDs under the same trust bundle
      const dir2 = path.join(dir, "data2");
      fs.cpSync(srv.dataDir, dir2, { recursive: true, filter: (f) => !f.endsWith(".sock") });
      srv2 = await startServerProcess(["--config", cfg, "--data-dir", dir2]);
      const sock2 = ["--socket", srv2.adminSocket];
      const list = JSON.parse(qhx(["entry", "list", ...sock2, "-o", "json"]).stdout);
      expect(list.map((e: { spiffe_id: string }) => e.spiffe_id)).toEqual(["spiffe://example.org/web"]);
      const out2 = path.join(dir, "svid2");
      const m2 = qhx(["svid", "mint", ...sock2, "--spiffe-id", "spiffe://example.org/web", "--out", out2]);
      expect(m2.stderr).toBe("");
      expect(m2.status).toBe(0);
      expect(
        execFileSync(
          "openssl",
          ["verify", "-CAfile", path.join(out, "bundle.pem"), path.join(out2, "svid.pem")],
          {
            encoding: "utf8",
          },
        ),
      ).toMatch(/: OK/);
      expect(await srv.stop()).toBe(0);
      expect(await srv2.stop()).toBe(0);
      for (const s of [srv, srv2]) {
        const all = JSON.stringify(s.logs) + s.stderrText();
        expect(all).not.toContain("pw-Zq81xx");
      }

      // offline commands on this data directory would see an empty SQLite datastore: refused, nothing made
      const offline = qhx(["entry", "list", "--data-dir", srv.dataDir]);
      expect(offline.status).toBe(1);
      expect(offline.stderr).toMatch(/QHX_DATASTORE_MISMATCH/);
      expect(fs.existsSync(path.join(srv.dataDir, "datastore.sqlite3"))).toBe(false);
    });

    it("a server whose database is unreachable exits with QHX_DATASTORE_OPEN_FAILED, never showing the password", async () => {
      const dir = tmpDir("qhx-pg-e2e-");
      made.push(dir);
      const cfg = path.join(dir, "server.yaml");
      const u = new URL(server.adminUrl);
      u.username = "qhx";
      u.password = "pw-Hidden77";
      u.pathname = "/qhx_absent_db";
      fs.writeFileSync(cfg, `datastore:\n  kind: postgres\n  connection_string: "${u.toString()}"\n`);
      const err = await startServerProcess(["--config", cfg]).then(
        () => {
          throw new Error("server started");
        },
        (e: Error) => e,
      );
      expect(err.message).toMatch(/QHX_DATASTORE_OPEN_FAILED/);
      expect(err.message).toContain("qhx:***@");
      expect(err.message).not.toContain("pw-Hidden77");
    });
  });
});
