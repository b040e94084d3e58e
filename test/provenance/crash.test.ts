/**
 * Durability of the notary log under a hard crash: a real `qhx server` process takes concurrent
 * submissions over mTLS; every statement it acknowledged is recorded; the server is SIGKILLed while
 * appends are in flight. Then, from the files alone: every acknowledged statement is in the log at the
 * index it was acknowledged with, the latest signed tree head covers exactly the stored entries, the file
 * is intact, and a reopened notary serves a receipt for an acknowledged entry that verifies offline.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { afterAll, expect, it } from "vitest";
import { generateKeyPair } from "../../host/core/alg.ts";
import { parsePemBundle } from "../../host/core/bundle.ts";
import { fromPem, toPem } from "../../host/core/pem.ts";
import { SocketClient } from "../../host/cli/client.ts";
import { decodeSign1 } from "../../host/provenance/cose.ts";
import { MerkleTree } from "../../host/provenance/merkle.ts";
import { claimsFromRecord, signStatement, statementHash } from "../../host/provenance/receipt.ts";
import { makeTrust, verifyReceipt } from "../../host/provenance/verify.ts";
import { SqliteDatastore } from "../../host/server/datastore/sqlite.ts";
import { startServerProcess } from "../helpers/cli.ts";
import { makePki, makeRecord, openTestNotary } from "./helpers.ts";

const TD = "example.org";
const cleanup: string[] = [];

afterAll(() => {
  for (const d of cleanup) fs.rmSync(d, { recursive: true, force: true });
});

it("a SIGKILLed server loses no acknowledged receipt", { timeout: 120_000 }, async () => {
  const server = await startServerProcess();
  cleanup.push(server.dir);
  const admin = new SocketClient(server.adminSocket);
  const id = `spiffe://${TD}/ns/demo/web`;
  const kp = generateKeyPair("ec-p256");
  const minted = await admin.call<{ chain: string[]; bundle: string }>("POST", "/v1/svids/x509", {
    spiffe_id: id,
    public_key: kp.publicKey.export({ type: "spki", format: "pem" }),
    ttl: "1h",
  });
  await admin.close();
  const chainDer = minted.chain.flatMap((p) => fromPem(p));
  const svid = { id, key: kp.privateKey, chainDer };
  const now = Date.now();
  const statements = Array.from({ length: 2000 }, () =>
    signStatement(
      claimsFromRecord(
        makeRecord(svid, undefined, { startedAt: now - 10, handshakeAt: now - 5, endedAt: now }),
      ),
      svid.key,
      svid.chainDer,
    ),
  );

  const [host, port] = server.listen.split(":") as [string, string];
  const agent = new https.Agent({
    keepAlive: true,
    maxSockets: 8,
    ca: fromPem(minted.bundle).map((d) => toPem(d)),
    checkServerIdentity: () => undefined,
    key: kp.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    cert: chainDer.map((d) => toPem(d)).join(""),
  });
  const post = (batch: Uint8Array[]) =>
    new Promise<{ results: { index: number }[] }>((resolve, reject) => {
      const body = JSON.stringify({ statements: batch.map((s) => Buffer.from(s).toString("base64")) });
      const req = https.request(
        {
          host,
          port: Number(port),
          method: "POST",
          path: "/notary/v1/statements",
          agent,
          headers: { "content-length": Buffer.byteLength(body) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            res.statusCode === 200
              ? resolve(JSON.parse(Buffer.concat(chunks).toString()))
              : reject(new Error(`status ${res.statusCode}`)),
          );
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(body);
    });

  // 8 concurrent submitters of 5 statements per request; kill after a random number ≥ 400 acknowledgements
  const acked = new Map<string, number>();
  const killAt = 400 + Math.floor(Math.random() * 200);
  let next = 0;
  let killed = false;
  let resolveKilled!: () => void;
  const killedP = new Promise<void>((r) => (resolveKilled = r));
  const worker = async () => {
    while (!killed && next < statements.length) {
      const batch = statements.slice(next, next + 5);
      next += 5;
      let r;
      try {
        r = await post(batch);
      } catch {
        return; // the server died under this request: nothing was acknowledged
      }
      r.results.forEach((x, i) => {
        expect(x.index).toBeTypeOf("number");
        acked.set(Buffer.from(statementHash(decodeSign1(batch[i]!))).toString("hex"), x.index);
      });
      if (!killed && acked.size >= killAt) {
        killed = true;
        server.child.kill("SIGKILL");
        resolveKilled();
      }
    }
  };
  const workers = Array.from({ length: 8 }, worker);
  await killedP;
  await Promise.all(workers);
  agent.destroy();
  await new Promise<void>((r) =>
    server.child.exitCode !== null || server.child.signalCode !== null
      ? r()
      : server.child.once("exit", () => r()),
  );
  expect(server.child.signalCode).toBe("SIGKILL");
  expect(acked.size).toBeGreaterThanOrEqual(killAt);

  // --- from the files alone
  const dbFile = path.join(server.dataDir, "datastore.sqlite3");
  const ds = SqliteDatastore.open(dbFile);
  try {
    for (const [h, index] of acked) {
      const e = await ds.findLogEntry(new Uint8Array(Buffer.from(h, "hex")));
      expect(e?.leafIndex, `acknowledged statement ${h}`).toBe(index);
    }
    const hashes = await ds.logHashes();
    const head = await ds.getLogHead();
    expect(head!.treeSize).toBe(hashes.length);
    const tree = new MerkleTree();
    for (const x of hashes) tree.appendHash(x.leafHash);
    expect(Buffer.from(tree.root()).equals(Buffer.from(head!.rootHash))).toBe(true);
  } finally {
    await ds.close();
  }
  const db = new DatabaseSync(dbFile);
  expect(
    db
      .prepare("PRAGMA integrity_check")
      .all()
      .map((r) => String(r.integrity_check)),
  ).toEqual(["ok"]);
  db.close();

  // a reopened notary (same data directory) serves a receipt that verifies offline
  const tn = await openTestNotary(makePki(), { dir: server.dataDir });
  try {
    const [someHash, someIndex] = [...acked.entries()][Math.floor(acked.size / 2)]!;
    const file = await tn.notary.exportEntry(someIndex);
    const bundle = parsePemBundle(minted.bundle, TD);
    const v = verifyReceipt(
      file,
      makeTrust([bundle], tn.notary.publicKey, (await tn.notary.checkpoint()).checkpoint),
    );
    expect(v.leafIndex).toBe(someIndex);
    expect(Buffer.from(statementHash(decodeSign1(file))).toString("hex")).toBe(someHash);
  } finally {
    await tn.close();
  }
  void crypto;
});
