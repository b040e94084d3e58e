/**
 * The tunnel part of `qhx demo`: an unmodified HTTP server (node:http, plaintext on 127.0.0.1) behind a
 * `tunnel server`, reached through a `tunnel client`, in mode mtls (the client's SVID followed from the
 * Workload API of the demo's agent) and in mode pq (ML-DSA-65 SVIDs on both sides). Reports the
 * negotiated group and both sides' signature algorithms from the tunnels' own records.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { generateKeyPair, type KeyAlg } from "../core/alg.ts";
import type { TrustBundle } from "../core/bundle-types.ts";
import { fromPem } from "../core/pem.ts";
import type { ExchangeRecord } from "../tunnel/record.ts";
import { makeSvid, StaticSvidSource, type SvidSource } from "../tunnel/svid-source.ts";
import { type TunnelMode, TunnelClient, TunnelServer } from "../tunnel/tunnel.ts";
import { WorkloadSvidSource } from "../tunnel/workload-source.ts";
import type { SocketClient } from "./client.ts";

export interface TunnelDemoOptions {
  step: (name: string, fn: () => Promise<string>) => Promise<void>;
  client: SocketClient;
  bundle: TrustBundle;
  /** the Workload API socket of the demo's agent, and the SPIFFE ID it gives this process */
  workloadSocket: string;
  selfId: string;
  /** a second registered workload: the server side */
  serverId: string;
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

export async function runTunnelDemo(o: TunnelDemoOptions): Promise<void> {
  const bundles = new Map([[o.bundle.trustDomain, o.bundle]]);
  const app = http.createServer((req, res) => res.end(`hello from an unmodified HTTP server (${req.url})`));
  await new Promise<void>((r) => app.listen(0, "127.0.0.1", () => r()));
  const appPort = (app.address() as AddressInfo).port;
  const run = async (mode: TunnelMode, serverSrc: SvidSource, clientSrc: SvidSource) => {
    const records: ExchangeRecord[] = [];
    const sink = { record: (r: ExchangeRecord) => records.push(r) };
    const server = new TunnelServer({
      mode,
      source: serverSrc,
      listen: { host: "127.0.0.1", port: 0 },
      forward: { host: "127.0.0.1", port: appPort },
      allow: [o.selfId],
      recordSink: sink,
    });
    const client = new TunnelClient({
      mode,
      source: clientSrc,
      listen: { host: "127.0.0.1", port: 0 },
      connect: await server.listen(),
      serverIds: [o.serverId],
      recordSink: sink,
    });
    try {
      const { port } = await client.listen();
      const r = await fetch(`http://127.0.0.1:${port}/demo`, { headers: { connection: "close" } });
      const body = await r.text();
      if (!body.startsWith("hello from an unmodified HTTP server"))
        throw new Error(`unexpected answer: ${body}`);
      await client.close({ drainMs: 5_000 });
      await server.close({ drainMs: 5_000 });
      const s = records.find((x) => x.role === "server");
      const c = records.find((x) => x.role === "client");
      if (!s || !c) throw new Error("the tunnels produced no records");
      if (s.decision !== "allow" || c.decision !== "allow")
        throw new Error(`refused: ${s.reason} / ${c.reason}`);
      return `GET through ${mode} tunnel: ${r.status}, group ${s.group}, client ${s.peerId} (${s.peerSigAlg}) → server ${c.peerId} (${c.peerSigAlg}), ${s.requestBytes} B up / ${s.responseBytes} B down`;
    } finally {
      await client.close();
      await server.close();
    }
  };
  try {
    await o.step(
      "tunnel mtls: HTTP through client and server tunnels (client SVID from the Workload API)",
      async () => {
        const ws = new WorkloadSvidSource({ socketPath: o.workloadSocket });
        try {
          await ws.ready(10_000);
          const server = new StaticSvidSource({ svid: await mint(o.client, o.serverId, "ec-p256"), bundles });
          return await run("mtls", server, ws);
        } finally {
          await ws.close();
        }
      },
    );
    await o.step("tunnel pq: X25519MLKEM768 only, ML-DSA-65 SVIDs both ways", async () => {
      const server = new StaticSvidSource({ svid: await mint(o.client, o.serverId, "ml-dsa-65"), bundles });
      const client = new StaticSvidSource({ svid: await mint(o.client, o.selfId, "ml-dsa-65"), bundles });
      return run("pq", server, client);
    });
  } finally {
    app.closeAllConnections();
    await new Promise<void>((r) => app.close(() => r()));
  }
}
