/**
 * The notary (host/server/notary.ts) on a PostgreSQL datastore: receipts appended through it verify
 * offline, and a notary reopened on the same database rebuilds the same Merkle tree from it.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { claimsFromRecord, signStatement } from "../../host/provenance/receipt.ts";
import { makeTrust, verifyReceipt } from "../../host/provenance/verify.ts";
import { PostgresDatastore } from "../../host/server/datastore/postgres.ts";
import type { ServerCore } from "../../host/server/core.ts";
import { Notary } from "../../host/server/notary.ts";
import { type PostgresServer, postgresUnavailable, startPostgres } from "../helpers/postgres.ts";
import { DAY, makePki, makeRecord, makeSvid, T0, TD } from "../provenance/helpers.ts";
import { FakeClock } from "../../host/core/clock.ts";

const why = postgresUnavailable;

describe.skipIf(why !== undefined)(`notary on PostgreSQL${why ? ` (skipped: ${why})` : ""}`, () => {
  let server: PostgresServer;
  let dir: string;
  const toClose: PostgresDatastore[] = [];

  beforeAll(async () => {
    server = await startPostgres();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-notary-pg-"));
  });
  afterAll(async () => {
    for (const ds of toClose) await ds.close();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("appends concurrent receipts gaplessly; they verify offline; a reopened notary has the same tree", async () => {
    const pki = makePki();
    const web = makeSvid(pki, `spiffe://${TD}/ns/demo/web`);
    const db = makeSvid(pki, `spiffe://${TD}/ns/demo/db`);
    const url = await server.createDatabase();
    const coreOn = async () => {
      const ds = await PostgresDatastore.open(url);
      toClose.push(ds);
      return {
        cfg: { dataDir: dir, trustDomain: TD },
        ds,
        clock: new FakeClock(T0 + 10 * 60_000),
        log: { info: () => {}, warn: () => {}, error: () => {} },
        ca: { trustBundle: () => pki.bundle },
        metrics: { registry: new Registry() },
      } as unknown as ServerCore;
    };
    const core = await coreOn();
    const notary = await Notary.open(core);
    const stmts = Array.from({ length: 12 }, () =>
      signStatement(claimsFromRecord(makeRecord(web, db)), web.key, web.chainDer),
    );
    const results = await Promise.all(stmts.map((s) => notary.submit(s, web.id)));
    expect(results.map((r) => r.index).sort((a, b) => a - b)).toEqual(stmts.map((_, i) => i));
    const entries = await core.ds.listLogEntries();
    expect(entries.map((e) => e.leafIndex)).toEqual(stmts.map((_, i) => i));

    const trust = makeTrust([pki.bundle], notary.publicKey);
    for (const r of results) {
      const v = verifyReceipt(await notary.exportEntry(r.index), trust, {
        now: new Date(T0 + 3 * 365 * DAY),
      });
      expect(v.spiffeId).toBe(web.id);
      expect(v.leafIndex).toBe(r.index);
    }

    const again = await Notary.open(await coreOn());
    expect(again.size).toBe(notary.size);
    const [a, b] = [await notary.checkpoint(), await again.checkpoint()];
    expect(Buffer.from(b.root).equals(Buffer.from(a.root))).toBe(true);
  });
});
