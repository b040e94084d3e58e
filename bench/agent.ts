/**
 * Agent benchmarks (one process, real sockets):
 * - FetchX509SVID latency from the agent's cache over the Workload API socket (SO_PEERCRED, unix
 *   attestation, protobuf, HTTP/2), p50/p99 with 1 and 50 concurrent clients — beside a bare HTTP/2
 *   round trip on a Unix socket measured in the same run (the floor any gRPC-over-UDS API pays);
 * - time and memory for an agent to sync 10,000 entries (10,000 keys generated, CSRs signed, cached).
 */
import fs from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Agent } from "../host/agent/agent.ts";
import { JoinTokenClient } from "../host/agent/attestors/index.ts";
import { peerCredOf } from "../host/agent/peercred.ts";
import { UnixAttestor } from "../host/agent/workload/unix.ts";
import { workloadProtoJson } from "../host/agent/workload-api/proto.ts";
import { createWorkloadApiServer } from "../host/agent/workload-api/server.ts";
import { systemClock } from "../host/core/clock.ts";
import { parseServerConfig } from "../host/server/config.ts";
import { silentLogger } from "../host/server/logger.ts";
import { startServer } from "../host/server/server.ts";
import { table } from "./harness.ts";

const TD = "bench.test";

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function latencies(concurrency: number, total: number, once: () => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  let left = total;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (left-- > 0) {
        const t0 = performance.now();
        await once();
        out.push((performance.now() - t0) * 1000);
      }
    }),
  );
  return out.sort((a, b) => a - b);
}

export async function run(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-bench-agent-"));
  const server = await startServer(
    parseServerConfig({
      trust_domain: TD,
      data_dir: path.join(dir, "server"),
      listen: "127.0.0.1:0",
      health_listen: "127.0.0.1:0",
      log_level: "silent",
    }),
    { clock: systemClock, logger: silentLogger },
  );
  const { token } = await server.core.generateJoinToken(600_000);
  const agent = new Agent({
    trustDomain: TD,
    server: { host: "127.0.0.1", port: server.address.port },
    bootstrapRoots: server.core.ca.trustBundle().x509Authorities,
    insecureBootstrap: false,
    dataDir: path.join(dir, "agent"),
    attestor: new JoinTokenClient(token),
    workloadAttestors: [new UnixAttestor({ hashMaxBytes: 0 })],
    workloadKeyType: "ec-p256",
    syncIntervalMs: 3_600_000,
    clock: systemClock,
    logger: silentLogger,
  });
  await agent.start();
  await server.core.ds.createEntry({
    spiffeId: `spiffe://${TD}/bench`,
    parentId: agent.id,
    selectors: [{ type: "unix", value: `uid:${process.getuid!()}` }],
  });
  await agent.syncOnce();

  const sock = path.join(dir, "api.sock");
  const api = createWorkloadApiServer({ provider: agent, peerOf: peerCredOf, logger: silentLogger });
  await api.listen(sock);
  const def = protoLoader.fromJSON(workloadProtoJson() as Parameters<typeof protoLoader.fromJSON>[0], {
    keepCase: true,
    defaults: true,
  });
  const Workload = grpc.loadPackageDefinition(def).SpiffeWorkloadAPI as grpc.ServiceClientConstructor;
  const md = new grpc.Metadata();
  md.set("workload.spiffe.io", "true");

  // reference: a bare HTTP/2 request/response on a Unix socket
  const refSock = path.join(dir, "ref.sock");
  const ref = http2.createServer((_req, res) => res.end("x"));
  await new Promise<void>((r) => ref.listen(refSock, r));

  process.stdout.write(`Node ${process.versions.node}; FetchX509SVID from the agent cache (µs)\n\n`);
  const rows = [["clients", "QHx p50", "QHx p99", "bare h2 p50", "bare h2 p99", "p50 ratio"]];
  for (const conc of [1, 50]) {
    const clients = Array.from(
      { length: conc },
      () => new Workload(`unix:${sock}`, grpc.credentials.createInsecure()),
    );
    let rr = 0;
    const fetchOnce = () =>
      new Promise<void>((resolve, reject) => {
        const c = clients[rr++ % clients.length]!;
        const call = (
          c as unknown as Record<string, (r: object, m: grpc.Metadata) => grpc.ClientReadableStream<unknown>>
        ).FetchX509SVID!({}, md);
        call.once("data", () => {
          call.cancel();
          resolve();
        });
        call.once("error", (e: grpc.ServiceError) =>
          e.code === grpc.status.CANCELLED ? undefined : reject(e),
        );
      });
    await latencies(conc, 200, fetchOnce); // warm-up
    const q = await latencies(conc, conc === 1 ? 2000 : 5000, fetchOnce);
    const sessions = Array.from({ length: conc }, () =>
      http2.connect("http://localhost", { createConnection: () => net.connect(refSock) }),
    );
    let sr = 0;
    const refOnce = () =>
      new Promise<void>((resolve, reject) => {
        const st = sessions[sr++ % sessions.length]!.request({ ":path": "/" });
        st.on("data", () => undefined);
        st.on("end", () => resolve());
        st.on("error", reject);
        st.end();
      });
    await latencies(conc, 200, refOnce);
    const b = await latencies(conc, conc === 1 ? 2000 : 5000, refOnce);
    rows.push([
      String(conc),
      pct(q, 50).toFixed(0),
      pct(q, 99).toFixed(0),
      pct(b, 50).toFixed(0),
      pct(b, 99).toFixed(0),
      (pct(q, 50) / pct(b, 50)).toFixed(1),
    ]);
    for (const c of clients) c.close();
    for (const s of sessions) s.close();
  }
  process.stdout.write(`${table(rows)}\n\n`);

  if (process.env.QHX_BENCH_LATENCY_ONLY) {
    await api.close();
    await new Promise<void>((r) => ref.close(() => r()));
    await agent.stop();
    await server.close();
    return;
  }
  // syncing 10,000 entries
  const N = 10_000;
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    await server.core.ds.createEntry({
      spiffeId: `spiffe://${TD}/svc/${i}`,
      parentId: agent.id,
      selectors: [{ type: "unix", value: `uid:${10_000 + i}` }],
    });
  }
  const tCreate = performance.now() - t0;
  global.gc?.();
  const rss0 = process.memoryUsage().rss;
  const heap0 = process.memoryUsage().heapUsed;
  const t1 = performance.now();
  await agent.syncOnce();
  const tSync = performance.now() - t1;
  const heap1 = process.memoryUsage().heapUsed;
  const rss1 = process.memoryUsage().rss;
  process.stdout.write(
    `${table([
      ["sync of 10,000 entries", "value"],
      [
        "entries written to the datastore",
        `${(tCreate / 1000).toFixed(1)} s (${Math.round(N / (tCreate / 1000))}/s, each a durable transaction)`,
      ],
      [
        "agent sync: 10,000 keys, CSRs, SVIDs cached",
        `${(tSync / 1000).toFixed(2)} s (${Math.round(N / (tSync / 1000))} SVIDs/s)`,
      ],
      [
        "agent heap growth",
        `${((heap1 - heap0) / 1048576).toFixed(1)} MiB (${Math.round((heap1 - heap0) / N)} B/entry)`,
      ],
      ["process RSS growth", `${((rss1 - rss0) / 1048576).toFixed(1)} MiB`],
      ["SVIDs cached", String(agent.cachedSvids().length)],
    ])}\n`,
  );
  await api.close();
  await new Promise<void>((r) => ref.close(() => r()));
  await agent.stop();
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
