/**
 * A real PostgreSQL server for tests: initdb + pg_ctl on a temp directory, listening on 127.0.0.1 and a
 * free port (fsync=off: tests only), one per test file; each test gets a fresh database.
 *
 * Binaries: $QHX_PG_BIN, else Debian's /usr/lib/postgresql/<n>/bin (package `postgresql`). As root, the
 * server runs as the `postgres` OS user (initdb refuses root). With QHX_TEST_POSTGRES_URL set (an admin
 * connection string of an existing server, e.g. in CI), that server is used instead.
 * Without either (or with QHX_TEST_POSTGRES=0), `postgresUnavailable` says why and the postgres variants
 * are skipped.
 */
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";

function findBinDir(): string | undefined {
  const candidates: string[] = [];
  if (process.env.QHX_PG_BIN) candidates.push(process.env.QHX_PG_BIN);
  const base = "/usr/lib/postgresql";
  if (fs.existsSync(base)) {
    for (const v of fs.readdirSync(base).sort((a, b) => Number(b) - Number(a))) {
      candidates.push(path.join(base, v, "bin"));
    }
  }
  return candidates.find(
    (d) => fs.existsSync(path.join(d, "initdb")) && fs.existsSync(path.join(d, "pg_ctl")),
  );
}

const EXTERNAL_URL = process.env.QHX_TEST_POSTGRES_URL;
const BIN_DIR = EXTERNAL_URL ? undefined : findBinDir();
const IS_ROOT = process.getuid?.() === 0;

function postgresUser(): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
    return { uid, gid };
  } catch {
    return undefined;
  }
}

const PG_USER = IS_ROOT && !EXTERNAL_URL ? postgresUser() : undefined;

/** Why the postgres variants cannot run here, or undefined when they can. */
export const postgresUnavailable: string | undefined = EXTERNAL_URL
  ? undefined
  : process.env.QHX_TEST_POSTGRES === "0"
    ? "disabled by QHX_TEST_POSTGRES=0"
    : BIN_DIR === undefined
      ? "PostgreSQL binaries not found (install the Debian package `postgresql`, set QHX_PG_BIN, or set QHX_TEST_POSTGRES_URL)"
      : IS_ROOT && PG_USER === undefined
        ? "running as root without a `postgres` OS user to run initdb as"
        : undefined;

if (postgresUnavailable) console.warn(`[qhx] PostgreSQL datastore tests skipped: ${postgresUnavailable}`);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Run a PostgreSQL binary, as the postgres OS user when we are root. */
function runPg(bin: string, args: string[]): void {
  const exe = path.join(BIN_DIR!, bin);
  const [cmd, argv] = PG_USER ? ["runuser", ["-u", "postgres", "--", exe, ...args]] : [exe, args];
  const r = spawnSync(cmd, argv, { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) {
    throw new Error(`${bin} ${args.join(" ")} failed (${r.status ?? r.signal}): ${r.stderr}${r.stdout}`);
  }
}

export interface PostgresServer {
  /** Admin connection string (database `postgres`). */
  adminUrl: string;
  /** A fresh, empty database; its connection string. */
  createDatabase(prefix?: string): Promise<string>;
  /** Run SQL on a database given by its connection string. */
  query(url: string, sql: string, params?: unknown[]): Promise<pg.QueryResult>;
  /** Take the local server down (fast shutdown) / bring it back on the same port. Not with an external one. */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

let dbCounter = 0;

/** Start a throwaway server (or attach to QHX_TEST_POSTGRES_URL). Call `stop()` in afterAll. */
export async function startPostgres(): Promise<PostgresServer> {
  if (postgresUnavailable) throw new Error(postgresUnavailable);
  let adminUrl: string;
  let stopServer: () => void = () => {};
  let startServer: () => void = () => {
    throw new Error("pause/resume need the local server, not QHX_TEST_POSTGRES_URL");
  };
  let dir: string | undefined;
  if (EXTERNAL_URL) {
    adminUrl = EXTERNAL_URL;
  } else {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-pg-"));
    const data = path.join(dir, "data");
    if (PG_USER) fs.chownSync(dir, PG_USER.uid, PG_USER.gid);
    fs.chmodSync(dir, 0o700);
    runPg("initdb", ["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
    const port = await freePort();
    const opts = [
      "-c listen_addresses=127.0.0.1",
      `-c port=${port}`,
      `-c unix_socket_directories=${dir}`,
      "-c fsync=off",
      "-c full_page_writes=off",
      "-c max_connections=100",
    ].join(" ");
    const log = path.join(dir, "server.log");
    startServer = () => runPg("pg_ctl", ["-D", data, "-l", log, "-o", opts, "-w", "-t", "60", "start"]);
    startServer();
    adminUrl = `postgres://postgres@127.0.0.1:${port}/postgres`;
    stopServer = () => runPg("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
  }
  const created: string[] = [];
  const query = async (url: string, sql: string, params?: unknown[]) => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return await c.query(sql, params);
    } finally {
      await c.end();
    }
  };
  // FILE_COPY (PostgreSQL 15+) makes an empty database several times faster than WAL_LOG when fsync is off
  const version = Number((await query(adminUrl, "SHOW server_version_num")).rows[0].server_version_num);
  const strategy = version >= 150000 ? " STRATEGY FILE_COPY" : "";
  let paused = false;
  return {
    adminUrl,
    async createDatabase(prefix = "qhx_test") {
      const name = `${prefix}_${process.pid}_${++dbCounter}`;
      await query(adminUrl, `CREATE DATABASE ${name}${strategy}`);
      created.push(name);
      const u = new URL(adminUrl);
      u.pathname = `/${name}`;
      return u.toString();
    },
    query,
    pause() {
      if (EXTERNAL_URL) throw new Error("pause/resume need the local server, not QHX_TEST_POSTGRES_URL");
      stopServer();
      paused = true;
    },
    resume() {
      startServer();
      paused = false;
    },
    async stop() {
      if (paused) return void (dir && fs.rmSync(dir, { recursive: true, force: true }));
      if (EXTERNAL_URL) {
        for (const name of created) await query(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      }
      stopServer();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
