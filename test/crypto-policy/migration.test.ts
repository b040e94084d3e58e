/**
 * Item 5, migration without application changes: a server (in this process, real sockets), `qhx agent
 * start` (a real process) serving the SPIFFE Workload API, and two QHx tunnels (host/tunnel, each
 * following its SVID on the Workload API) in front of an unmodified TCP client and server app. The
 * operator switches namespace "payments" from ECDSA P-256 to ML-DSA-65 with `qhx crypto-policy apply`; at
 * their next rotation both workloads get ML-DSA-65 SVIDs, the tunnels swap credentials in place (no
 * restart of anything), and requests keep flowing the whole time with zero failures. A last step forbids
 * ECDSA: traffic still flows.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SocketClient } from "../../host/cli/client.ts";
import type { ExchangeRecord } from "../../host/tunnel/record.ts";
import { TunnelClient, TunnelServer } from "../../host/tunnel/tunnel.ts";
import { WorkloadSvidSource } from "../../host/tunnel/workload-source.ts";
import { systemClock } from "../../host/core/clock.ts";
import { parseServerConfig } from "../../host/server/config.ts";
import { silentLogger } from "../../host/server/logger.ts";
import { startServer } from "../../host/server/server.ts";
import { qhxSpawn, tmpDir } from "../helpers/cli.ts";
import { echoServer, roundTrip } from "../tunnel/helpers.ts";

const TD = "migrate.test";
const ALIAS = `spiffe://${TD}/nodes/n1`;
const SERVER_ID = `spiffe://${TD}/svc-a`;
const CLIENT_ID = `spiffe://${TD}/svc-b`;
const uid = process.getuid!();

const cleanup: [string, () => Promise<unknown> | void][] = [];
afterAll(async () => {
  for (const [name, f] of cleanup.reverse()) {
    const t0 = Date.now();
    await f();
    if (Date.now() - t0 > 2000) console.warn(`cleanup ${name} took ${Date.now() - t0} ms`);
  }
});

/** `qhx …` in a child process without blocking this process's event loop (the traffic keeps flowing). */
function qhxAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = qhxSpawn(args);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.once("close", (status) => resolve({ status, stdout, stderr })));
}

function policyFile(doc: unknown): string {
  const f = path.join(tmpDir(), "crypto-policy.json");
  fs.writeFileSync(f, JSON.stringify(doc));
  return f;
}

describe("ECDSA -> ML-DSA migration under live traffic", () => {
  it("switches namespace payments by crypto-policy apply; zero failed requests across the switch", async () => {
    let sent = 0;
    // the server runs in this process (its agent API on a real TLS socket, its admin API on a Unix socket
    // the CLI reaches); the agent and the operator's `qhx crypto-policy apply` are separate processes
    const dir = tmpDir();
    const srv = await startServer(
      parseServerConfig({
        trust_domain: TD,
        data_dir: path.join(dir, "data"),
        listen: "127.0.0.1:0",
        health_listen: "127.0.0.1:0",
        log_level: "silent",
      }),
      { clock: systemClock, logger: silentLogger },
    );
    cleanup.push(["server", () => srv.close()]);
    const sock = srv.adminSocket;
    const adminApi = new SocketClient(sock);
    cleanup.push(["admin client", () => adminApi.close()]);
    const apply = async (doc: unknown) => {
      const r = await qhxAsync(["crypto-policy", "apply", policyFile(doc), "--socket", sock]);
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      return r.stdout;
    };
    // setup through the admin API directly (the operator's crypto-policy commands go through the CLI)
    await adminApi.call("POST", "/v1/crypto-policy", {
      policy: {
        namespaces: { payments: { signature_algorithms: { allowed: ["ec-p256"], default: "ec-p256" } } },
      },
    });
    for (const id of [SERVER_ID, CLIENT_ID]) {
      await adminApi.call("POST", "/v1/entries", {
        spiffe_id: id,
        parent_id: ALIAS,
        selectors: [`unix:uid:${uid}`],
        namespace: "payments",
        // short-lived: the CA backdates 10 s, so rotation comes every ~2-4 s
        x509_svid_ttl: 14,
      });
    }
    const bundlePem = path.join(dir, "bundle.pem");
    fs.writeFileSync(
      bundlePem,
      (await adminApi.call<{ bundle: string }>("GET", "/v1/bundle?format=pem")).bundle,
    );
    const { token } = await adminApi.call<{ token: string }>("POST", "/v1/join-tokens", { spiffe_id: ALIAS });
    const pub = tmpDir("qhx-mig-sock-");
    const apiSock = path.join(pub, "api.sock");
    const agent = qhxSpawn([
      "agent",
      "start",
      "--server",
      `127.0.0.1:${srv.address.port}`,
      "--trust-bundle",
      bundlePem,
      "--join-token",
      token,
      "--data-dir",
      tmpDir(),
      "--socket",
      apiSock,
      "--health-listen",
      "127.0.0.1:0",
      "--sync-interval",
      "500ms",
    ]);
    cleanup.push([
      "agent",
      () =>
        new Promise<void>((resolve) => {
          if (agent.exitCode !== null) return resolve();
          agent.once("exit", () => resolve());
          agent.kill("SIGTERM");
        }),
    ]);
    await new Promise<void>((resolve, reject) => {
      let buf = "";
      agent.stdout!.on("data", (c: Buffer) => {
        buf += c.toString();
        if (buf.includes('"agent started"')) resolve();
      });
      agent.once("exit", (code) => reject(new Error(`agent exited ${code}`)));
    });

    // --- the two tunnels, each following its SVID on the Workload API; the apps behind them never change -----
    const app = await echoServer();
    cleanup.push(["app", () => app.close()]);
    const records: ExchangeRecord[] = [];
    const sink = { record: (r: ExchangeRecord) => records.push(r) };
    const ssrc = new WorkloadSvidSource({ socketPath: apiSock, spiffeId: SERVER_ID });
    const csrc = new WorkloadSvidSource({ socketPath: apiSock, spiffeId: CLIENT_ID });
    cleanup.push(["sources", () => Promise.all([ssrc.close(), csrc.close()])]);
    await Promise.all([ssrc.ready(), csrc.ready()]);
    expect(ssrc.current().svid.keyAlg).toBe("ec-p256");
    const tunnelServer = new TunnelServer({
      source: ssrc,
      listen: { host: "127.0.0.1", port: 0 },
      forward: { host: "127.0.0.1", port: app.port },
      allow: [CLIENT_ID],
      recordSink: sink,
    });
    const sa = await tunnelServer.listen();
    cleanup.push(["tunnel server", () => tunnelServer.close()]);
    const tunnelClient = new TunnelClient({
      source: csrc,
      listen: { host: "127.0.0.1", port: 0 },
      connect: sa,
      serverIds: [SERVER_ID],
      recordSink: sink,
    });
    const port = (await tunnelClient.listen()).port;
    cleanup.push(["tunnel client", () => tunnelClient.close()]);
    const svidAlgs = { server: new Set<string>(), client: new Set<string>() };
    ssrc.on("change", (st) => svidAlgs.server.add(st.svid.keyAlg));
    csrc.on("change", (st) => svidAlgs.client.add(st.svid.keyAlg));
    svidAlgs.server.add(ssrc.current().svid.keyAlg);
    svidAlgs.client.add(csrc.current().svid.keyAlg);

    // --- traffic: the unmodified client app opens a connection per request to its local tunnel port --------
    const failures: string[] = [];
    let traffic = true;
    const waiters: { pred: () => boolean; resolve: () => void }[] = [];
    const worker = async (w: number) => {
      for (let i = 0; traffic; i++) {
        const msg = `req ${w}-${i}`;
        sent++;
        try {
          const back = (await roundTrip(port, msg)).toString();
          if (back !== msg) failures.push(`${msg}: got ${JSON.stringify(back)}`);
        } catch (e) {
          failures.push(`${msg}: ${(e as Error).message}`);
        }
        for (const x of waiters.splice(0)) {
          if (x.pred()) x.resolve();
          else waiters.push(x);
        }
      }
    };
    const until = (pred: () => boolean) =>
      pred() ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ pred, resolve }));
    // a connection's algorithms: the server side records the client's, the client side the server's
    const count = (alg: string, from = 0) => {
      const r = records.slice(from).filter((x) => x.decision === "allow" && x.peerSigAlg === alg);
      return Math.min(
        r.filter((x) => x.role === "server").length,
        r.filter((x) => x.role === "client").length,
      );
    };
    const workers = [worker(0), worker(1)];

    await until(() => count("ec-p256") >= 20);
    const before = sent;

    // the operator's change: ML-DSA-65 becomes the default, ECDSA stays allowed during the switch
    expect(
      await apply({
        namespaces: {
          payments: { signature_algorithms: { allowed: ["ml-dsa-65", "ec-p256"], default: "ml-dsa-65" } },
        },
      }),
    ).toMatch(/version 2/);
    await until(() => count("ml-dsa-65") >= 20);

    // once everyone has rotated, ECDSA is forbidden: nothing in use breaks
    await adminApi.call("POST", "/v1/crypto-policy", {
      policy: { namespaces: { payments: { signature_algorithms: { allowed: ["ml-dsa-65"] } } } },
    });
    const n = records.length;
    await until(() => count("ml-dsa-65", n) >= 20);
    traffic = false;
    await Promise.all(workers);

    expect(failures).toEqual([]);
    expect(records.filter((r) => r.decision !== "allow")).toEqual([]);
    expect(before).toBeGreaterThanOrEqual(20);
    expect(records.slice(n).every((r) => r.peerSigAlg === "ml-dsa-65")).toBe(true);
    expect([...svidAlgs.server].sort()).toEqual(["ec-p256", "ml-dsa-65"]);
    expect([...svidAlgs.client].sort()).toEqual(["ec-p256", "ml-dsa-65"]);
  });
});
