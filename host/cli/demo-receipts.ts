/**
 * The provenance part of `qhx demo`: exchanges through a client and a server tunnel (modes mtls and pq)
 * whose RecordSink is the receipt emitter, so both sides sign a receipt of every connection with their
 * own SVID and submit it to the demo server's notary over mTLS. The receipts and the trust material an
 * auditor needs are exported to DIR/receipts and DIR/trust; once every QHx process has stopped the demo
 * verifies them offline, as of now and as of ten years later, and shows that a tampered copy is refused.
 */
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { generateKeyPair, type KeyAlg } from "../core/alg.ts";
import type { TrustBundle } from "../core/bundle-types.ts";
import { fromPem } from "../core/pem.ts";
import { ReceiptEmitter } from "../provenance/emitter.ts";
import { makeSvid, StaticSvidSource } from "../tunnel/svid-source.ts";
import { type TunnelMode, TunnelClient, TunnelServer } from "../tunnel/tunnel.ts";
import type { SocketClient } from "./client.ts";
import { exportReceipts, verifyFiles, writeTrustDir } from "./receipt.ts";

export interface ReceiptsDemoOptions {
  step: (name: string, fn: () => Promise<string>) => Promise<void>;
  client: SocketClient;
  bundle: TrustBundle;
  /** the server's agent API, HOST:PORT */
  listen: string;
  clientId: string;
  serverId: string;
  /** receipts go to DIR/receipts, trust material to DIR/trust */
  dir: string;
}

async function mint(c: SocketClient, spiffeId: string, alg: KeyAlg) {
  const kp = generateKeyPair(alg);
  const r = await c.call<{ chain: string[] }>("POST", "/v1/svids/x509", {
    spiffe_id: spiffeId,
    public_key: kp.publicKey.export({ type: "spki", format: "pem" }),
    ttl: "1h",
  });
  return makeSvid(
    r.chain.flatMap((p) => fromPem(p)),
    kp.privateKey,
  );
}

/** While the server runs: exchanges with receipts, then export. Returns the receipt files. */
export async function runReceiptsDemo(o: ReceiptsDemoOptions): Promise<string[]> {
  const bundles = new Map([[o.bundle.trustDomain, o.bundle]]);
  const [host, port] = o.listen.split(":") as [string, string];
  const emitter = new ReceiptEmitter({
    host,
    port: Number(port),
    trustDomain: o.bundle.trustDomain,
    roots: o.bundle.x509Authorities,
  });
  const app = http.createServer((req, res) => res.end(`receipted answer to ${req.url}`));
  await new Promise<void>((r) => app.listen(0, "127.0.0.1", () => r()));
  const appPort = (app.address() as AddressInfo).port;
  let files: string[] = [];
  try {
    await o.step("receipts: tunnel exchanges signed by both sides and logged by the notary", async () => {
      const exchange = async (mode: TunnelMode, alg: KeyAlg) => {
        const server = new TunnelServer({
          mode,
          source: new StaticSvidSource({ svid: await mint(o.client, o.serverId, alg), bundles }),
          listen: { host: "127.0.0.1", port: 0 },
          forward: { host: "127.0.0.1", port: appPort },
          allow: [o.clientId],
          recordSink: emitter,
        });
        const client = new TunnelClient({
          mode,
          source: new StaticSvidSource({ svid: await mint(o.client, o.clientId, alg), bundles }),
          listen: { host: "127.0.0.1", port: 0 },
          connect: await server.listen(),
          serverIds: [o.serverId],
          recordSink: emitter,
        });
        try {
          const { port: p } = await client.listen();
          const r = await fetch(`http://127.0.0.1:${p}/${mode}`, { headers: { connection: "close" } });
          await r.text();
          await client.close({ drainMs: 5_000 });
          await server.close({ drainMs: 5_000 });
        } finally {
          await client.close();
          await server.close();
        }
      };
      await exchange("mtls", "ec-p256");
      await exchange("pq", "ml-dsa-65");
      await emitter.flush();
      const s = emitter.stats;
      if (s.admitted !== 4 || s.queued !== 4) {
        throw new Error(`expected 4 receipts admitted, got ${JSON.stringify(s)}`);
      }
      return `${s.admitted} receipts (2 exchanges × client and server side, ECDSA P-256 and ML-DSA-65) admitted`;
    });
    await o.step("receipts exported with the trust material an auditor needs", async () => {
      const trustDir = path.join(o.dir, "trust");
      const t = await writeTrustDir(o.client, trustDir);
      files = await exportReceipts(
        o.client,
        Array.from({ length: t.treeSize }, (_, i) => i),
        path.join(o.dir, "receipts"),
      );
      return `${files.length} receipts in ${path.join(o.dir, "receipts")}, bundle, notary key and checkpoint (tree size ${t.treeSize}) in ${trustDir}`;
    });
  } finally {
    await emitter.close(1000);
    app.closeAllConnections();
    await new Promise<void>((r) => app.close(() => r()));
  }
  return files;
}

/** After every QHx process stopped: verify the exported receipts with files only. */
export async function verifyReceiptsDemo(o: ReceiptsDemoOptions, files: string[]): Promise<void> {
  const trustDir = path.join(o.dir, "trust");
  await o.step("receipts verified offline, with every QHx process stopped", async () => {
    if (files.length === 0) throw new Error("no receipts were exported");
    const now = verifyFiles(files, trustDir);
    const bad = now.filter((x) => !x.ok);
    if (bad.length) throw new Error(`${bad[0]!.file}: check ${bad[0]!.check} failed: ${bad[0]!.error}`);
    const later = new Date(Date.now() + 10 * 365 * 86_400_000);
    const years = verifyFiles(files, trustDir, { now: later });
    if (years.some((x) => !x.ok))
      throw new Error(`as of ${later.toISOString()}: ${years.find((x) => !x.ok)!.error}`);
    const checks = now[0]!.result!.proved.map((p) => p.check).join(", ");
    return `${files.length}/${files.length} verified now and as of ${later.toISOString().slice(0, 10)} (${checks}); run: qhx receipt verify ${path.join(o.dir, "receipts")}/* --trust ${trustDir}`;
  });
  await o.step("a tampered receipt is refused offline", async () => {
    const bytes = fs.readFileSync(files[0]!);
    bytes[bytes.length - 3]! ^= 0x01;
    const tampered = path.join(o.dir, "tampered.cose");
    fs.writeFileSync(tampered, bytes);
    try {
      const [r] = verifyFiles([tampered], trustDir);
      if (r!.ok) throw new Error("a tampered receipt verified");
      return `check "${r!.check}" failed: ${r!.code}`;
    } finally {
      fs.rmSync(tampered, { force: true });
    }
  });
}
