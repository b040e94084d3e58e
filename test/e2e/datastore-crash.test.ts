/**
 * Durability under a hard crash: a real child process writes entries and prints each id only after the
 * write was acknowledged; we SIGKILL it mid-stream and check that every acknowledged id survived and the
 * database is intact. Two rounds, so the second writer starts from a crash-recovered file.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteDatastore } from "../../host/server/datastore/sqlite.ts";

const WRITER = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures", "datastore-writer.ts");
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-crash-"));
});

afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * Run the writer until it has acknowledged at least `min` ids, then SIGKILL it. Returns every id it printed,
 * including lines still in the pipe at the time of the kill (they, too, were acknowledged).
 */
function writeThenKill(dbPath: string, label: string, min: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, dbPath, label], { stdio: ["ignore", "pipe", "pipe"] });
    const acked: string[] = [];
    let partial = "";
    let stderr = "";
    let killed = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    // Kill at a slightly random point past `min`, so the kill lands at varying places in a transaction.
    const target = min + Math.floor(Math.random() * 50);
    child.stdout.on("data", (chunk: Buffer) => {
      partial += chunk.toString("utf8");
      const lines = partial.split("\n");
      partial = lines.pop() ?? ""; // an unterminated line was not (fully) acknowledged
      for (const line of lines) if (line !== "ready") acked.push(line);
      if (!killed && acked.length >= target) {
        killed = true;
        child.kill("SIGKILL");
      }
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      exit = { code, signal };
    });
    // "close": the process exited and its stdout is fully drained
    child.on("close", () => {
      if (killed && exit?.signal === "SIGKILL") resolve(acked);
      else
        reject(
          new Error(`writer exited unexpectedly (code ${exit?.code}, signal ${exit?.signal}): ${stderr}`),
        );
    });
  });
}

function integrityCheck(dbPath: string): string[] {
  const db = new DatabaseSync(dbPath);
  try {
    return db
      .prepare("PRAGMA integrity_check")
      .all()
      .map((r) => String(r.integrity_check));
  } finally {
    db.close();
  }
}

describe("datastore crash durability", () => {
  it("keeps every acknowledged write across SIGKILL, and the file stays intact", async () => {
    const dbPath = path.join(dir, "qhx.db");
    const allAcked: string[] = [];
    for (const round of ["r1", "r2"]) {
      const acked = await writeThenKill(dbPath, round, 300);
      expect(acked.length).toBeGreaterThanOrEqual(300);
      for (const id of acked) expect(id).toMatch(UUID_RE);
      allAcked.push(...acked);

      // the crash left a WAL behind; opening must recover it, not refuse it
      const ds = SqliteDatastore.open(dbPath);
      try {
        const stored = await ds.listEntries();
        const ids = new Set(stored.map((e) => e.id));
        const missing = allAcked.filter((id) => !ids.has(id));
        expect(missing).toEqual([]);
        const roundEntries = stored.filter((e) => e.labels.round === round);
        // per round, at most one write can have committed without being acknowledged (killed before
        // its id was printed)
        expect(roundEntries.length - acked.length).toBeGreaterThanOrEqual(0);
        expect(roundEntries.length - acked.length).toBeLessThanOrEqual(1);
        for (const e of roundEntries) {
          expect(e.selectors).toHaveLength(2);
          expect(e.dnsNames).toHaveLength(1);
        }
        // entries of the round are contiguous: no acknowledged write was lost before a later one survived
        const indexes = roundEntries.map((e) => Number(e.labels.i)).sort((a, b) => a - b);
        expect(indexes).toEqual(indexes.map((_, i) => i));
      } finally {
        await ds.close();
      }
      expect(integrityCheck(dbPath)).toEqual(["ok"]);
    }
  });
});
