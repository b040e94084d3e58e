/**
 * Round trip through a real tunnel: a plain TCP application behind a TunnelServer, reached through a
 * TunnelClient, both with the receipt emitter as their RecordSink and SVIDs minted by a real `qhx server`
 * process; the notary admits both sides' receipts over mTLS; after the server stopped, the exported
 * receipts verify offline and their claims hash exactly the bytes that crossed the tunnel. A refused
 * connection is receipted too (decision deny).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeyPair, type KeyAlg } from "../../host/core/alg.ts";
import { parsePemBundle } from "../../host/core/bundle.ts";
import { fromPem, toPem } from "../../host/core/pem.ts";
import { SocketClient } from "../../host/cli/client.ts";
import { exportReceipts, verifyFiles, writeTrustDir } from "../../host/cli/receipt.ts";
import { ReceiptEmitter } from "../../host/provenance/emitter.ts";
import { makeSvid, StaticSvidSource } from "../../host/tunnel/svid-source.ts";
import { type TunnelMode, TunnelClient, TunnelServer } from "../../host/tunnel/tunnel.ts";
import { startServerProcess, tmpDir } from "../helpers/cli.ts";

type Server = Awaited<ReturnType<typeof startServerProcess>>;
const TD = "example.org";
const CLIENT = `spiffe://${TD}/ns/shop/frontend`;
const SERVER = `spiffe://${TD}/ns/shop/payments`;
let server: Server;
let admin: SocketClient;
let work: string;
let app: net.Server;
let appPort: number;

async function mint(id: string, alg: KeyAlg) {
  const kp = generateKeyPair(alg);
  const r = await admin.call<{ chain: string[] }>("POST", "/v1/svids/x509", {
    spiffe_id: id,
    public_key: kp.publicKey.export({ type: "spki", format: "pem" }),
    ttl: "1h",
  });
  return makeSvid(
    r.chain.flatMap((p) => fromPem(p)),
    kp.privateKey,
  );
}

beforeAll(async () => {
  server = await startServerProcess();
  admin = new SocketClient(server.adminSocket);
  work = tmpDir("qhx-tunnel-receipts-");
  // the unmodified application: answers "pong:" + what it got, then closes
  app = net.createServer({ allowHalfOpen: true }, (s) => {
    const chunks: Buffer[] = [];
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("end", () => s.end(Buffer.concat([Buffer.from("pong:"), ...chunks])));
  });
  await new Promise<void>((r) => app.listen(0, "127.0.0.1", () => r()));
  appPort = (app.address() as net.AddressInfo).port;
}, 60_000);

afterAll(async () => {
  await admin?.close();
  await server?.stop();
  await new Promise<void>((r) => app.close(() => r()));
  fs.rmSync(work, { recursive: true, force: true });
  fs.rmSync(server.dir, { recursive: true, force: true });
});

/** Send `payload` through the tunnels, half-close, read the whole answer. */
function exchange(port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => s.end(payload));
    const chunks: Buffer[] = [];
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("close", () => resolve(Buffer.concat(chunks)));
    s.on("error", reject);
  });
}

describe("qhx tunnel --receipts (the flags → the emitter as the tunnel's RecordSink)", () => {
  it(
    "runtimeFromFlags builds a sink that signs with the tunnel's SVID and submits to --receipts",
    { timeout: 60_000 },
    async () => {
      const { runtimeFromFlags } = await import("../../host/cli/tunnel.ts");
      const svid = await mint(CLIENT, "ec-p256");
      const b = await admin.call<{ bundle: string }>("GET", "/v1/bundle?format=pem");
      const svidDir = path.join(work, "svid");
      fs.mkdirSync(svidDir, { recursive: true });
      fs.writeFileSync(path.join(svidDir, "svid.pem"), svid.chainDer.map((d) => toPem(d)).join(""));
      fs.writeFileSync(
        path.join(svidDir, "svid.key"),
        svid.key.export({ type: "pkcs8", format: "pem" }) as string,
      );
      fs.writeFileSync(path.join(svidDir, "bundle.pem"), b.bundle);
      await expect(
        runtimeFromFlags(
          { mode: "mtls", svidDir, logLevel: "error", receiptsDir: path.join(work, "x") },
          "client",
        ),
      ).rejects.toThrow(/--receipts/);
      const rt = await runtimeFromFlags(
        {
          mode: "mtls",
          svidDir,
          logLevel: "error",
          receipts: server.listen,
          receiptsDir: path.join(work, "cli-receipts"),
        },
        "client",
      );
      const sink = rt.common.recordSink as ReceiptEmitter;
      expect(sink).toBeInstanceOf(ReceiptEmitter);
      const sha = (x: string) => crypto.createHash("sha256").update(x).digest("hex");
      const now = Date.now();
      sink.record({
        id: crypto.randomUUID(),
        mode: "mtls",
        role: "client",
        localId: CLIENT,
        peerId: SERVER,
        localCertSha256: crypto.createHash("sha256").update(svid.chainDer[0]!).digest("hex"),
        peerCertSha256: sha("peer"),
        decision: "allow",
        reason: "expected server",
        policyVersion: null,
        group: "X25519MLKEM768",
        peerSigAlg: "ec-p256",
        startedAt: now - 5,
        handshakeAt: now - 3,
        endedAt: now,
        requestBytes: 1,
        requestSha256: sha("a"),
        responseBytes: 1,
        responseSha256: sha("b"),
        svid: { key: svid.key, chainDer: svid.chainDer },
        peerChainDer: [],
      });
      await sink.flush();
      expect(sink.stats.admitted).toBe(1);
      expect(fs.readdirSync(path.join(work, "cli-receipts"))).toHaveLength(1);
      expect(await rt.common.metrics!.registry.metrics()).toMatch(
        /qhx_receipts_total\{result="admitted"\} 1/,
      );
      for (const c of rt.closers) await c();
    },
  );
});

describe("receipts through real tunnels", () => {
  it(
    "both sides receipt every exchange; offline verification proves the bytes, identities and decisions",
    { timeout: 120_000 },
    async () => {
      const b = await admin.call<{ bundle: string }>("GET", "/v1/bundle?format=pem");
      const bundle = parsePemBundle(b.bundle, TD);
      const bundles = new Map([[TD, bundle]]);
      const [host, port] = server.listen.split(":") as [string, string];
      const emitter = new ReceiptEmitter({
        host,
        port: Number(port),
        trustDomain: TD,
        roots: bundle.x509Authorities,
        dir: path.join(work, "local"),
      });
      const sent: Buffer[] = [];
      const run = async (mode: TunnelMode, alg: KeyAlg, allow: string[]) => {
        const ts = new TunnelServer({
          mode,
          source: new StaticSvidSource({ svid: await mint(SERVER, alg), bundles }),
          listen: { host: "127.0.0.1", port: 0 },
          forward: { host: "127.0.0.1", port: appPort },
          allow,
          recordSink: emitter,
        });
        const tc = new TunnelClient({
          mode,
          source: new StaticSvidSource({ svid: await mint(CLIENT, alg), bundles }),
          listen: { host: "127.0.0.1", port: 0 },
          connect: await ts.listen(),
          serverIds: [SERVER],
          recordSink: emitter,
        });
        try {
          const { port: p } = await tc.listen();
          const payload = crypto.randomBytes(3000 + Math.floor(Math.random() * 1000));
          sent.push(payload);
          return await exchange(p, payload);
        } finally {
          await tc.close({ drainMs: 5_000 });
          await ts.close({ drainMs: 5_000 });
        }
      };
      const answer1 = await run("mtls", "ec-p256", [CLIENT]);
      expect(answer1.subarray(0, 5).toString()).toBe("pong:");
      const answer2 = await run("pq", "ml-dsa-65", [CLIENT]);
      expect(answer2.equals(Buffer.concat([Buffer.from("pong:"), sent[1]!]))).toBe(true);
      await run("mtls", "ec-p256", [`spiffe://${TD}/ns/shop/other`]); // refused by the server's allow-list
      await emitter.flush();
      expect(emitter.stats.failed).toBe(0);
      expect(emitter.stats.rejected).toBe(0);
      expect(emitter.stats.admitted).toBe(emitter.stats.queued);
      expect(emitter.stats.admitted).toBeGreaterThanOrEqual(5); // 2 × 2 allowed sides + the refusal
      await emitter.close();

      const trustDir = path.join(work, "trust");
      const t = await writeTrustDir(admin, trustDir);
      const files = await exportReceipts(
        admin,
        Array.from({ length: t.treeSize }, (_, i) => i),
        path.join(work, "receipts"),
      );
      expect(await server.stop()).toBe(0);

      const later = new Date(Date.now() + 5 * 365 * 86_400_000);
      const outcomes = verifyFiles(files, trustDir, { now: later });
      for (const o of outcomes) expect(o.ok, `${o.file}: ${o.error}`).toBe(true);
      const claims = outcomes.map((o) => o.result!.claims);
      const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
      const sha = (b: Buffer) => crypto.createHash("sha256").update(b).digest("hex");
      for (const [i, mode] of (["mtls", "pq"] as const).entries()) {
        const up = sha(sent[i]!);
        const down = sha(Buffer.concat([Buffer.from("pong:"), sent[i]!]));
        const sides = claims.filter(
          (c) => c.mode === mode && c.decision === "allow" && hex(c.request.sha256) === up,
        );
        expect(sides.map((c) => c.role).sort()).toEqual(["client", "server"]);
        for (const c of sides) {
          expect(hex(c.response.sha256)).toBe(down);
          expect(c.request.bytes).toBe(sent[i]!.length);
          expect(c.tls.group).toBe("X25519MLKEM768");
          expect(c.role === "client" ? [c.signer.id, c.peer.id] : [c.peer.id, c.signer.id]).toEqual([
            CLIENT,
            SERVER,
          ]);
        }
        if (mode === "pq") for (const c of sides) expect(c.tls.peerSigAlg).toMatch(/ml-dsa|mldsa/i);
      }
      const denied = claims.filter((c) => c.decision === "deny");
      expect(denied.length).toBeGreaterThanOrEqual(1);
      expect(denied.find((c) => c.role === "server")?.peer.id).toBe(CLIENT);
    },
  );
});
