/**
 * `qhx tunnel client|server` as real processes with unmodified tools: python3 -m http.server behind the
 * server tunnel, curl in front of the client tunnel (both modes); openssl s_client (Debian OpenSSL 3.0,
 * classical) against mtls and pq servers; a tshark capture of the pq handshake; SIGTERM drain.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { qhxSpawn } from "../helpers/cli.ts";
import { mkCa, mkSvid, tmp, waitForLog, writeSvidDir } from "./helpers.ts";

const TD = "example.org";
const SID = `spiffe://${TD}/db`;
const CID = `spiffe://${TD}/web`;
const dir = tmp("qhx-tunnel-cli-");
const procs: ChildProcess[] = [];

const caP = mkCa(TD);
const caM = mkCa(TD, "ml-dsa-65");
const dirs = {
  srvP: writeSvidDir(mkSvid(caP, SID), [caP, caM], path.join(dir, "srv-p256")),
  cliP: writeSvidDir(mkSvid(caP, CID), [caP, caM], path.join(dir, "cli-p256")),
  srvM: writeSvidDir(mkSvid(caM, SID, "ml-dsa-65"), [caP, caM], path.join(dir, "srv-mldsa")),
  cliM: writeSvidDir(mkSvid(caM, CID, "ml-dsa-65"), [caP, caM], path.join(dir, "cli-mldsa")),
  other: writeSvidDir(mkSvid(caP, `spiffe://${TD}/other`), [caP], path.join(dir, "other")),
};

let httpPort = 0;
beforeAll(async () => {
  fs.writeFileSync(path.join(dir, "index.txt"), "served by an unmodified python http.server\n");
  httpPort = await freePort();
  const py = spawn(
    "python3",
    ["-m", "http.server", String(httpPort), "--bind", "127.0.0.1", "--directory", dir],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  procs.push(py);
  await waitForPort(httpPort);
});

afterAll(async () => {
  // SIGTERM, not SIGKILL: tshark must get to stop its dumpcap child
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill("SIGTERM");
  fs.rmSync(dir, { recursive: true, force: true });
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitForPort(port: number): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const c = net.connect({ port, host: "127.0.0.1" }, () => {
        c.destroy();
        r(true);
      });
      c.on("error", () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function start(args: string[]): Promise<{ child: ChildProcess; port: number; logs: string[] }> {
  const child = qhxSpawn(["tunnel", ...args, "--listen", "127.0.0.1:0"].filter(Boolean));
  procs.push(child);
  const logs: string[] = [];
  child.stdout!.on("data", (b: Buffer) => logs.push(b.toString()));
  let stderr = "";
  child.stderr!.on("data", (b: Buffer) => (stderr += b));
  const started = await Promise.race([
    waitForLog(child.stdout!, "tunnel started"),
    new Promise<never>((_, reject) =>
      child.once("exit", (code) => reject(new Error(`exited ${code}: ${stderr}`))),
    ),
  ]);
  return { child, port: Number(String(started.listen).split(":").pop()), logs };
}

const server = (mode: string, svidDir: string, extra: string[] = []) =>
  start([
    "server",
    "--mode",
    mode,
    "--svid-dir",
    svidDir,
    "--forward",
    `127.0.0.1:${httpPort}`,
    "--allow",
    CID,
    ...extra,
  ]);
const client = (mode: string, svidDir: string, to: number, extra: string[] = []) =>
  start([
    "client",
    "--mode",
    mode,
    "--svid-dir",
    svidDir,
    "--connect",
    `127.0.0.1:${to}`,
    "--server-id",
    SID,
    ...extra,
  ]);

function curl(port: number): { status: number | null; body: string } {
  const r = spawnSync("curl", ["-sS", "--max-time", "20", `http://127.0.0.1:${port}/index.txt`], {
    encoding: "utf8",
  });
  return { status: r.status, body: r.stdout };
}

async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
  child.kill("SIGTERM");
  return exited;
}

interface Proc {
  child: ChildProcess;
  port: number;
  logs: string[];
}
let mtlsServer: Proc;
let pqServer: Proc;
let mtlsClient: Proc;
let pqClient: Proc;

beforeAll(async () => {
  // all four processes start in parallel (process start-up dominates on a loaded box)
  [mtlsServer, pqServer] = await Promise.all([
    server("mtls", dirs.srvP, [
      "--metrics-listen",
      "127.0.0.1:0",
      "--log-level",
      "debug",
      "--drain-timeout",
      "30s",
    ]),
    server("pq", dirs.srvM, ["--metrics-listen", "127.0.0.1:0", "--log-level", "debug"]),
  ]);
  [mtlsClient, pqClient] = await Promise.all([
    client("mtls", dirs.cliP, mtlsServer.port),
    // the pq pair runs one TLS connection per application connection (the tshark test needs a handshake
    // per connection); the mtls pair carries successive connections over one (qhx-streams/1)
    client("pq", dirs.cliM, pqServer.port, ["--no-connection-reuse"]),
  ]);
}, 120_000);

const logText = (p: Proc) => p.logs.join("");

describe("curl -> tunnel client -> tunnel server -> python http.server", () => {
  for (const [mode, alg] of [
    ["mtls", "ec-p256"],
    ["pq", "ml-dsa-65"],
  ] as const) {
    it(`${mode} mode (${alg} SVIDs)`, async () => {
      const s = mode === "mtls" ? mtlsServer : pqServer;
      const c = mode === "mtls" ? mtlsClient : pqClient;
      const conn = waitForLog(s.child.stdout!, "tunnel connection");
      const r = curl(c.port);
      expect(r.status).toBe(0);
      expect(r.body).toBe("served by an unmodified python http.server\n");
      expect(await conn).toMatchObject({ peer: CID, group: "X25519MLKEM768", sigAlg: alg });
      const metricsAt = JSON.parse(
        logText(s)
          .split("\n")
          .find((l) => l.includes("tunnel started"))!,
      ).metricsListen as string;
      const text = await (await fetch(`http://${metricsAt}/metrics`)).text();
      expect(text).toMatch(
        new RegExp(
          `qhx_tunnel_connections_total\\{role="server",mode="${mode}",peer="${CID}",outcome="allowed"\\} [1-9]`,
        ),
      );
      expect(text).toMatch(
        new RegExp(
          `qhx_tunnel_handshake_seconds_count\\{role="server",mode="${mode}",group="X25519MLKEM768",sig_alg="${alg}",peer="${CID}"\\} [1-9]`,
        ),
      );
      // a second request: over the same TLS connection in mtls (reuse), over a new one in pq
      const again = waitForLog(s.child.stdout!, "tunnel connection");
      expect(curl(c.port).body).toBe("served by an unmodified python http.server\n");
      expect(await again).toMatchObject({ peer: CID, reused: mode === "mtls" });
      const text2 = await (await fetch(`http://${metricsAt}/metrics`)).text();
      const reused = /qhx_tunnel_reused_connections_total\{role="server"\} (\d+)/.exec(text2);
      expect(Number(reused?.[1] ?? 0) > 0).toBe(mode === "mtls");
    });
  }
});

function sClient(port: number, svidDir: string, extra: string[] = []) {
  return spawnSync(
    "openssl",
    [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-cert",
      path.join(svidDir, "svid.pem"),
      "-key",
      path.join(svidDir, "svid.key"),
      "-tls1_3",
      "-quiet",
      "-ign_eof",
      ...extra,
    ],
    { input: "GET /index.txt HTTP/1.0\r\n\r\n", encoding: "utf8", timeout: 20_000 },
  );
}

describe("openssl s_client (Debian OpenSSL 3.0, classical) with a P-256 SVID", () => {
  it("reaches an mtls tunnel server when allowed, is cut off when denied", async () => {
    const ok = sClient(mtlsServer.port, dirs.cliP);
    expect(ok.stdout).toMatch(/^HTTP\/1\.0 200/m);
    expect(ok.stdout).toContain("served by an unmodified python http.server");
    const refused = waitForLog(mtlsServer.child.stdout!, "tunnel connection refused");
    const denied = sClient(mtlsServer.port, dirs.other);
    expect(denied.stdout).not.toContain("served by");
    expect(await refused).toMatchObject({
      code: "QHX_TUNNEL_DENIED",
      peer: "spiffe://example.org/other",
      reason: "spiffe://example.org/other is not in the allow-list",
    });
  });

  it("is refused by a pq tunnel server (no X25519MLKEM768 offered)", async () => {
    const refused = waitForLog(pqServer.child.stdout!, "tunnel connection refused");
    const r = sClient(pqServer.port, dirs.cliP);
    expect(r.stdout).not.toContain("served by");
    expect(r.stderr).toMatch(/handshake failure|alert/);
    expect(await refused).toMatchObject({ code: "QHX_TUNNEL_NO_COMMON_GROUP" });
  });
});

describe("tshark on loopback", () => {
  const tsharkOk = spawnSync("tshark", ["-D"], { encoding: "utf8" }).stdout?.includes("lo");
  it.skipIf(!tsharkOk)(
    "shows key share group 0x11ec in ClientHello and ServerHello of a pq handshake",
    async () => {
      const pcap = path.join(dir, "pq.pcap");
      const cap = spawn("tshark", ["-i", "lo", "-f", `tcp port ${pqServer.port}`, "-w", pcap], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      procs.push(cap);
      await new Promise<void>((resolve) => {
        let err = "";
        cap.stderr!.on("data", (b: Buffer) => {
          err += b;
          // "Capturing on" comes before dumpcap really captures; "Capture started" after
          if (/Capture started/.test(err)) resolve();
        });
      });
      const conn = waitForLog(pqServer.child.stdout!, "tunnel connection");
      expect(curl(pqClient.port).status).toBe(0);
      await conn;
      // dumpcap hands packets over in batches and drops what it has not processed when stopped: read
      // the file until both hellos are in it (bounded), then stop the capture
      const hellos = () => {
        const r = spawnSync(
          "tshark",
          [
            "-r",
            pcap,
            "-Y",
            "tls.handshake.type == 1 || tls.handshake.type == 2",
            "-T",
            "fields",
            "-e",
            "tls.handshake.type",
            "-e",
            "tls.handshake.extensions_key_share_group",
          ],
          { encoding: "utf8" },
        );
        return (r.stdout ?? "")
          .trim()
          .split("\n")
          .filter(Boolean)
          .map((l) => l.split("\t"));
      };
      let lines = hellos();
      for (let i = 0; i < 40 && lines.length < 2; i++) {
        await new Promise((r) => setTimeout(r, 250));
        lines = hellos();
      }
      const exited = new Promise((r) => cap.once("exit", r));
      cap.kill("SIGINT");
      await exited;
      const hello = (t: string) => lines.find((l) => l[0]!.split(",")[0] === t);
      expect(hello("1")?.[1]).toMatch(/^(0x11ec|4588)$/i);
      expect(hello("2")?.[1]).toMatch(/^(0x11ec|4588)$/i);
    },
    90_000,
  );
});

describe("SIGTERM", () => {
  it("drains: an open connection finishes, then the process exits 0", async () => {
    const sock = net.connect({ port: mtlsClient.port, host: "127.0.0.1", allowHalfOpen: true });
    const established = waitForLog(mtlsServer.child.stdout!, "tunnel connection");
    sock.write("GET /index.txt HTTP/1.0\r\n"); // incomplete: the app waits for the rest
    await established;
    let got = "";
    sock.on("data", (b) => (got += b));
    const draining = waitForLog(mtlsServer.child.stdout!, "draining");
    const exit = new Promise<number | null>((r) => mtlsServer.child.once("exit", (code) => r(code)));
    mtlsServer.child.kill("SIGTERM");
    expect((await draining).active).toBe(1);
    sock.end("\r\n"); // the drained connection still works
    await new Promise((r) => sock.once("close", r));
    expect(got).toContain("served by an unmodified python http.server");
    expect(await exit).toBe(0);
    expect(await stop(mtlsClient.child)).toBe(0);
    expect(await stop(pqClient.child)).toBe(0);
    expect(await stop(pqServer.child)).toBe(0);
  });
});
