/**
 * The emitter's contract with the data path (host/tunnel/record.ts): record() returns at once and never
 * throws, the queue is bounded (overflow dropped and counted), a notary that is down is retried with
 * backoff and never surfaces as an error, and its metrics say what happened.
 */
import { once } from "node:events";
import net from "node:net";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReceiptEmitter } from "../../host/provenance/emitter.ts";
import { makePki, makeRecord, makeSvid, TD } from "./helpers.ts";

let deadPort: number;
let refusing: net.Server;
let accepted = 0;

beforeAll(async () => {
  // a port that accepts TCP and hangs up at once: every TLS attempt fails
  refusing = net.createServer((s) => {
    accepted++;
    s.destroy();
  });
  await new Promise<void>((r) => refusing.listen(0, "127.0.0.1", () => r()));
  deadPort = (refusing.address() as net.AddressInfo).port;
});

afterAll(async () => {
  await new Promise<void>((r) => refusing.close(() => r()));
});

describe("ReceiptEmitter", () => {
  const pki = makePki();
  const web = makeSvid(pki, `spiffe://${TD}/ns/demo/web`);

  it("bounded queue: overflow is dropped and counted, record() never throws", async () => {
    const registry = new Registry();
    const em = new ReceiptEmitter({
      host: "127.0.0.1",
      port: deadPort,
      trustDomain: TD,
      roots: pki.bundle.x509Authorities,
      maxQueue: 3,
      retryBaseMs: 5,
      retryMaxMs: 10,
      registry,
    });
    for (let i = 0; i < 8; i++) expect(() => em.record(makeRecord(web, undefined))).not.toThrow();
    expect(em.stats.queued).toBe(3);
    expect(em.stats.dropped).toBe(5);
    // garbage in: still no exception on the data path
    expect(() => em.record(null as never)).not.toThrow();
    await once(em, "retry");
    await em.close(50);
    expect(em.stats.retries).toBeGreaterThan(0);
    expect(accepted).toBeGreaterThan(0);
    expect(em.stats.admitted).toBe(0);
    const text = await registry.metrics();
    expect(text).toMatch(/qhx_receipts_total\{result="dropped"\} \d+/);
    expect(text).toMatch(/qhx_receipt_retries_total [1-9]/);
    // closed: further records are dropped, not queued
    em.record(makeRecord(web, undefined));
    expect(em.stats.queued).toBe(3);
  });

  it("a record whose key cannot sign is counted as failed, the others proceed", async () => {
    const em = new ReceiptEmitter({
      host: "127.0.0.1",
      port: deadPort,
      trustDomain: TD,
      roots: [],
      retryBaseMs: 5,
    });
    em.record(makeRecord(web, undefined, { svid: { key: "not a key" as never, chainDer: web.chainDer } }));
    em.record(makeRecord(web, undefined, { requestSha256: "zz" }));
    await em.close(100);
    expect(em.stats.failed).toBe(2);
  });
});
