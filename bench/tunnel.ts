/**
 * Tunnel benchmarks, all in one run with the same certificates: throughput (MB/s) over 1 and 16 streams,
 * new end-to-end connections (ms each, through both tunnel hops), and added p50 latency of a small
 * request/response, for raw TCP, qhx mtls (P-256 SVIDs), qhx pq with P-256 SVIDs, qhx pq with ML-DSA-65
 * SVIDs, and stunnel4 (client + server, P-256, TLS 1.3, chain verification on both sides).
 * The tunnels run as real processes (`qhx tunnel client|server`, stunnel4), the load in this process.
 * Beside wall-clock figures it reports the CPU the tunnel processes used (/proc/PID/stat) per 100 MB and
 * per connection: on a shared, loaded machine MB/s mostly measures the scheduler, CPU per unit of work
 * much less so.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { generateKeyPair, type KeyAlg } from "../host/core/alg.ts";
import { toPem } from "../host/core/pem.ts";
import { issueCaCertificate, issueX509Svid } from "../host/core/x509.ts";
import { table } from "./harness.ts";

const TD = "bench.test";
const ROOT = path.resolve(import.meta.dirname, "..");
const CLI = path.join(ROOT, "host/cli/run.ts");
const STUNNEL = "/usr/bin/stunnel4";
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-bench-tunnel-"));
const procs: ChildProcess[] = [];

function mkCa(alg: KeyAlg) {
  const k = generateKeyPair(alg);
  const now = Date.now();
  const der = issueCaCertificate({
    publicKey: k.publicKey,
    signer: { privateKey: k.privateKey },
    trustDomain: TD,
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + 86_400_000),
  });
  return { der, key: k.privateKey };
}

function svidDir(name: string, ca: ReturnType<typeof mkCa>, id: string, alg: KeyAlg, roots: Uint8Array[]) {
  const k = generateKeyPair(alg);
  const der = issueX509Svid({
    spiffeId: id,
    publicKey: k.publicKey,
    issuerCertDer: ca.der,
    issuerKey: ca.key,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
  });
  const d = path.join(dir, name);
  fs.mkdirSync(d);
  fs.writeFileSync(path.join(d, "svid.pem"), toPem(der));
  fs.writeFileSync(path.join(d, "svid.key"), k.privateKey.export({ type: "pkcs8", format: "pem" }) as string);
  fs.writeFileSync(path.join(d, "bundle.pem"), roots.map((r) => toPem(r)).join(""));
  return d;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const ok = await new Promise<boolean>((r) => {
      const c = net.connect({ port, host: "127.0.0.1" }, () => {
        c.destroy();
        r(true);
      });
      c.on("error", () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} never opened`);
}

function spawnProc(cmd: string, args: string[]): ChildProcess {
  const p = spawn(cmd, args, { stdio: ["ignore", "ignore", "inherit"] });
  procs.push(p);
  return p;
}

/** The app behind the tunnels: "sink" discards and reports through `received`, otherwise echo. */
function appServer(): Promise<{ port: number; server: net.Server; received: { n: number } }> {
  const received = { n: 0 };
  const server = net.createServer((c) => {
    c.setNoDelay(true);
    c.once("data", (first: Buffer) => {
      if (first[0] === 0x53 /* S: sink */) {
        received.n += first.length - 1;
        c.on("data", (b: Buffer) => (received.n += b.length));
        c.on("end", () => c.end());
      } else {
        c.write(first);
        c.pipe(c);
      }
    });
    c.on("error", () => {});
  });
  return new Promise((r) =>
    server.listen(0, "127.0.0.1", () =>
      r({ port: (server.address() as net.AddressInfo).port, server, received }),
    ),
  );
}

const CHUNK = Buffer.alloc(64 * 1024, 0x61);

/** User + system CPU seconds a process used so far (/proc/PID/stat; 0 when not available). */
function cpuSeconds(pid: number | undefined): number {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
}

const tunnelCpu = () => procs.reduce((a, p) => a + cpuSeconds(p.pid), 0);

/** Send `bytesPerStream` on each of `streams` connections; MB/s of plaintext delivered. */
async function throughput(port: number, streams: number, bytesPerStream: number): Promise<number> {
  const t0 = performance.now();
  await Promise.all(
    Array.from(
      { length: streams },
      () =>
        new Promise<void>((resolve, reject) => {
          const c = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
          let sent = 0;
          const pump = () => {
            while (sent < bytesPerStream) {
              sent += CHUNK.length;
              if (!c.write(CHUNK)) return;
            }
            c.end();
          };
          c.on("connect", () => {
            c.write("S");
            pump();
          });
          c.on("drain", pump);
          c.on("close", () => resolve());
          c.on("error", reject);
          c.resume();
        }),
    ),
  );
  const s = (performance.now() - t0) / 1000;
  return (streams * bytesPerStream) / 1e6 / s;
}

/** Sequential connect → 1-byte echo → close through both hops; ms per connection. */
async function newConnection(port: number, n: number): Promise<number> {
  const once = () =>
    new Promise<void>((resolve, reject) => {
      const c = net.connect({ port, host: "127.0.0.1" }, () => c.write("e"));
      c.once("data", () => c.destroy());
      c.on("close", () => resolve());
      c.on("error", reject);
    });
  for (let i = 0; i < 3; i++) await once();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await once();
  return (performance.now() - t0) / n;
}

/** p50 of a 64-byte request/response round trip on one established connection, ms. */
async function p50Latency(port: number, n: number): Promise<number> {
  const c = net.connect({ port, host: "127.0.0.1", noDelay: true });
  await new Promise((r) => c.once("connect", r));
  const msg = Buffer.alloc(64, 0x65);
  const times: number[] = [];
  for (let i = 0; i < n + 50; i++) {
    const t0 = performance.now();
    let got = 0;
    await new Promise<void>((resolve) => {
      const on = (b: Buffer) => {
        got += b.length;
        if (got >= 64) {
          c.off("data", on);
          resolve();
        }
      };
      c.on("data", on);
      c.write(msg);
    });
    if (i >= 50) times.push(performance.now() - t0);
  }
  c.destroy();
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

async function qhxPair(
  mode: "mtls" | "pq",
  srvDir: string,
  cliDir: string,
  appPort: number,
  pqSig?: string,
  handshakes: "reuse" | "resumed" | "full" = "reuse",
) {
  const [sp, cp] = [await freePort(), await freePort()];
  const extra = pqSig ? ["--pq-sig-alg", pqSig] : [];
  // reuse: successive connections over one TLS connection (the default); resumed: one TLS connection per
  // connection with TLS 1.3 resumption; full: a full handshake per connection
  const clientExtra = {
    reuse: [],
    resumed: ["--no-connection-reuse"],
    full: ["--no-connection-reuse", "--no-session-resumption"],
  }[handshakes];
  spawnProc(process.execPath, [
    "--no-warnings",
    CLI,
    "tunnel",
    "server",
    "--mode",
    mode,
    "--svid-dir",
    srvDir,
    "--listen",
    `127.0.0.1:${sp}`,
    "--forward",
    `127.0.0.1:${appPort}`,
    "--allow",
    `spiffe://${TD}/client`,
    "--log-level",
    "warn",
    ...extra,
  ]);
  spawnProc(process.execPath, [
    "--no-warnings",
    CLI,
    "tunnel",
    "client",
    "--mode",
    mode,
    "--svid-dir",
    cliDir,
    "--listen",
    `127.0.0.1:${cp}`,
    "--connect",
    `127.0.0.1:${sp}`,
    "--server-id",
    `spiffe://${TD}/server`,
    "--log-level",
    "warn",
    ...extra,
    ...clientExtra,
  ]);
  await waitPort(sp);
  await waitPort(cp);
  return cp;
}

async function stunnelPair(srvDir: string, cliDir: string, appPort: number) {
  const [sp, cp] = [await freePort(), await freePort()];
  const conf = (name: string, d: string, client: boolean, accept: number, connect: number) => {
    const f = path.join(dir, `${name}.conf`);
    fs.writeFileSync(
      f,
      [
        "foreground = yes",
        "pid =",
        "debug = 3",
        `[${name}]`,
        `client = ${client ? "yes" : "no"}`,
        `accept = 127.0.0.1:${accept}`,
        `connect = 127.0.0.1:${connect}`,
        `cert = ${d}/svid.pem`,
        `key = ${d}/svid.key`,
        `CAfile = ${d}/bundle.pem`,
        "verifyChain = yes",
        "sslVersionMin = TLSv1.3",
        "socket = l:TCP_NODELAY=1",
        "socket = r:TCP_NODELAY=1",
        "",
      ].join("\n"),
    );
    return f;
  };
  spawnProc(STUNNEL, [conf("srv", srvDir, false, sp, appPort)]);
  spawnProc(STUNNEL, [conf("cli", cliDir, true, cp, sp)]);
  await waitPort(sp);
  await waitPort(cp);
  return cp;
}

export async function run(): Promise<void> {
  const caP = mkCa("ec-p256");
  const caM = mkCa("ml-dsa-65");
  const roots = [caP.der, caM.der];
  const srvP = svidDir("srv-p256", caP, `spiffe://${TD}/server`, "ec-p256", roots);
  const cliP = svidDir("cli-p256", caP, `spiffe://${TD}/client`, "ec-p256", roots);
  const srvM = svidDir("srv-mldsa", caM, `spiffe://${TD}/server`, "ml-dsa-65", roots);
  const cliM = svidDir("cli-mldsa", caM, `spiffe://${TD}/client`, "ml-dsa-65", roots);
  const app = await appServer();
  const one = Number(process.env.QHX_BENCH_TUNNEL_MB ?? 256) * 1e6;
  const setups: [string, () => Promise<number>][] = [
    ["raw TCP", async () => app.port],
    ["stunnel4 (P-256, TLS 1.3)", () => stunnelPair(srvP, cliP, app.port)],
    ["qhx mtls (P-256)", () => qhxPair("mtls", srvP, cliP, app.port)],
    [
      "qhx mtls (P-256, resumed handshakes)",
      () => qhxPair("mtls", srvP, cliP, app.port, undefined, "resumed"),
    ],
    ["qhx mtls (P-256, full handshakes)", () => qhxPair("mtls", srvP, cliP, app.port, undefined, "full")],
    ["qhx pq (X25519MLKEM768, P-256)", () => qhxPair("pq", srvP, cliP, app.port, "ec-p256")],
    ["qhx pq (X25519MLKEM768, ML-DSA-65)", () => qhxPair("pq", srvM, cliM, app.port)],
    [
      "qhx pq (ML-DSA-65, resumed handshakes)",
      () => qhxPair("pq", srvM, cliM, app.port, undefined, "resumed"),
    ],
    ["qhx pq (ML-DSA-65, full handshakes)", () => qhxPair("pq", srvM, cliM, app.port, undefined, "full")],
  ];
  const rows: string[][] = [
    [
      "path",
      "1 stream MB/s",
      "16 streams MB/s",
      "CPU ms/100 MB",
      "new conn ms",
      "CPU ms/conn",
      "p50 ms",
      "added p50 ms",
    ],
  ];
  type Result = { t1: number; t16: number; conn: number; p50: number; cpu: number; cpu100: number };
  const res: Record<string, Result> = {};
  try {
    for (const [name, setup] of setups) {
      const port = await setup();
      // the handshake variants carry bytes exactly as their default row does: connections only
      const handshakeOnly = name.includes("handshakes)");
      const cpu0 = tunnelCpu();
      const t1 = handshakeOnly ? NaN : await throughput(port, 1, one);
      const t16 = handshakeOnly ? NaN : await throughput(port, 16, one / 16);
      // CPU the tunnel processes spent per 100 MB carried (load-independent, unlike MB/s on a shared box)
      const cpuPer100MB =
        procs.length && !handshakeOnly ? ((tunnelCpu() - cpu0) * 1000) / ((2 * one) / 1e8) : 0;
      const cpu1 = tunnelCpu();
      const conn = await newConnection(port, 200);
      const cpuPerConn = procs.length ? ((tunnelCpu() - cpu1) * 1000) / 203 : 0;
      const p50 = handshakeOnly ? NaN : await p50Latency(port, 1000);
      res[name] = { t1, t16, conn, p50, cpu: cpuPerConn, cpu100: cpuPer100MB };
      const raw = res["raw TCP"]!;
      const f = (v: number, d: number) => (Number.isNaN(v) ? "-" : v.toFixed(d));
      rows.push([
        name,
        f(t1, 0),
        f(t16, 0),
        handshakeOnly ? "-" : cpuPer100MB.toFixed(0),
        conn.toFixed(2),
        cpuPerConn.toFixed(2),
        f(p50, 3),
        f(p50 - raw.p50, 3),
      ]);
      process.stderr.write(`  measured ${name}\n`);
      for (const p of procs.splice(0)) p.kill("SIGTERM");
    }
  } finally {
    for (const p of procs) p.kill("SIGKILL");
    app.server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(
    `\nTunnels (${one / 1e6} MB per throughput run; plaintext app echo/sink in the bench process)\n`,
  );
  process.stdout.write(`${table(rows)}\n\n`);
  const st = res["stunnel4 (P-256, TLS 1.3)"]!;
  const mt = res["qhx mtls (P-256)"]!;
  const pqm = res["qhx pq (X25519MLKEM768, ML-DSA-65)"]!;
  const full = res["qhx mtls (P-256, full handshakes)"]!;
  const resumed = res["qhx mtls (P-256, resumed handshakes)"]!;
  const pqFull = res["qhx pq (ML-DSA-65, full handshakes)"]!;
  const pqResumed = res["qhx pq (ML-DSA-65, resumed handshakes)"]!;
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
  process.stdout.write(
    table([
      ["goal", "measured", "target"],
      ["mtls / stunnel4 throughput, 1 stream", ratio(mt.t1, st.t1), ">= 1.00x"],
      ["mtls / stunnel4 throughput, 16 streams", ratio(mt.t16, st.t16), ">= 1.00x"],
      ["mtls / stunnel4 new-connection time", ratio(mt.conn, st.conn), "<= 0.50x"],
      ["pq ML-DSA-65 / mtls new-connection time", ratio(pqm.conn, mt.conn), "<= 2.00x"],
      ["pq ML-DSA-65 / mtls, full handshake per connection", ratio(pqFull.conn, full.conn), "<= 2.00x"],
      [
        "pq ML-DSA-65 / mtls, resumed handshake per connection",
        ratio(pqResumed.conn, resumed.conn),
        "<= 2.00x",
      ],
      ["mtls / stunnel4 CPU per 100 MB", ratio(mt.cpu100, st.cpu100), "(lower is better)"],
      ["mtls / stunnel4 CPU per connection", ratio(mt.cpu, st.cpu), "(lower is better)"],
    ]) + "\n",
  );
}
