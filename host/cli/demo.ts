/**
 * `qhx demo`: the main job, end to end, on this machine. It starts a real `qhx server` process on a fresh
 * data directory, registers a workload, mints X509-SVIDs (P-256 and ML-DSA-65) and a JWT-SVID over the
 * admin socket, verifies each against the served trust bundle, shows that tampering is caught, reads the
 * metrics, stops the server with SIGTERM and reports. Later issues grow it into the whole trust loop.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { generateKeyPair } from "../core/alg.ts";
import { parseSpiffeBundle } from "../core/bundle.ts";
import { formatError } from "../core/errors.ts";
import { validateJwtSvid } from "../core/jwtsvid.ts";
import { fromPem } from "../core/pem.ts";
import { verifyX509Svid } from "../core/x509-verify.ts";
import { SocketClient } from "./client.ts";
import { runFederationDemo } from "./demo-federation.ts";
import { runTunnelDemo } from "./demo-tunnel.ts";
import { type ReceiptsDemoOptions, runReceiptsDemo, verifyReceiptsDemo } from "./demo-receipts.ts";
import { workloadCall } from "./workload-client.ts";
import { assuranceOf } from "../core/assurance.ts";
import { parseCertificate, readTlv } from "../core/x509.ts";

const TD = "demo.qhx.internal";

function findBin(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const rel of ["../../bin/qhx.js", "../../../bin/qhx.js"]) {
    const p = path.resolve(here, rel);
    if (fs.existsSync(p)) return p;
  }
  throw new Error("cannot find bin/qhx.js");
}

function waitForStart(
  child: ChildProcess,
): Promise<{ listen: string; healthListen: string; adminSocket: string }> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error("server did not start within 30 s")), 30_000);
    child.stdout!.on("data", (c: Buffer) => {
      buf += c.toString("utf8");
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const rec = JSON.parse(line) as {
            msg?: string;
            listen?: string;
            healthListen?: string;
            adminSocket?: string;
          };
          if (rec.msg === "server started") {
            clearTimeout(timer);
            resolve({ listen: rec.listen!, healthListen: rec.healthListen!, adminSocket: rec.adminSocket! });
          }
        } catch {
          /* not a log line */
        }
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with code ${code} before it started`));
    });
  });
}

function waitForLog(child: ChildProcess, msg: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`no "${msg}" within 30 s`)), 30_000);
    child.stdout!.on("data", (c: Buffer) => {
      buf += c.toString("utf8");
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          if (rec.msg === msg) {
            clearTimeout(timer);
            resolve(rec);
          }
        } catch {
          /* not a log line */
        }
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with code ${code}`));
    });
  });
}

export async function runDemo(
  opts: { keep?: boolean; keepDir?: string; federation?: boolean } = {},
): Promise<number> {
  if (opts.federation) return runFederationDemo(opts);
  const say = (s: string) => process.stdout.write(`${s}\n`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-demo-"));
  const results: [string, boolean, string][] = [];
  const step = async (name: string, fn: () => Promise<string>) => {
    const t0 = performance.now();
    try {
      const detail = await fn();
      const ms = (performance.now() - t0).toFixed(1);
      results.push([name, true, detail]);
      say(`  ok    ${name} (${ms} ms)${detail ? `: ${detail}` : ""}`);
    } catch (e) {
      results.push([name, false, formatError(e)]);
      say(`  FAIL  ${name}: ${formatError(e)}`);
    }
  };

  say(`QHx demo: trust domain ${TD}, data in ${dir}`);
  const serverLog = path.join(dir, "server.log");
  const child = spawn(
    process.execPath,
    [
      findBin(),
      "server",
      "start",
      "--trust-domain",
      TD,
      "--data-dir",
      path.join(dir, "data"),
      "--listen",
      "127.0.0.1:0",
      "--health-listen",
      "127.0.0.1:0",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const logStream = fs.createWriteStream(serverLog);
  child.stdout!.pipe(logStream);
  child.stderr!.pipe(logStream);
  let client: SocketClient | undefined;
  let agent: ChildProcess | undefined;
  let receipts: ReceiptsDemoOptions | undefined;
  let receiptFiles: string[] = [];
  try {
    const started = await waitForStart(child);
    say(
      `  server pid ${child.pid} agent API on ${started.listen}, health on ${started.healthListen}, admin socket ${started.adminSocket}`,
    );
    client = new SocketClient(started.adminSocket);
    const c = client;

    await step("health endpoint answers", async () => {
      const r = await fetch(`http://${started.healthListen}/healthz`);
      if (!r.ok) throw new Error(`healthz answered ${r.status}`);
      return "GET /healthz 200";
    });

    const workload = `spiffe://${TD}/ns/demo/web`;
    await step("registration entry created", async () => {
      const e = await c.call<{ id: string }>("POST", "/v1/entries", {
        spiffe_id: workload,
        parent_id: `spiffe://${TD}/qhx/agent/join_token/demo-node`,
        selectors: ["unix:uid:1000", "unix:path:/usr/bin/web"],
        namespace: "demo",
        labels: { app: "web" },
      });
      return `${workload} (entry ${e.id.slice(0, 8)}…)`;
    });

    const bundleDoc = await c.call<{ bundle: string; sequence: number }>("GET", "/v1/bundle?format=spiffe");
    const bundle = parseSpiffeBundle(bundleDoc.bundle, TD);
    const bundles = new Map([[TD, bundle]]);
    say(
      `  trust bundle sequence ${bundle.sequence}: ${bundle.x509Authorities.length} X.509 CA, ${bundle.jwtAuthorities.length} JWT key`,
    );

    let lastChain: Uint8Array[] = [];
    for (const alg of ["ec-p256", "ml-dsa-65"] as const) {
      await step(`X509-SVID (${alg} key) issued and verified`, async () => {
        const kp = generateKeyPair(alg);
        const r = await c.call<{ chain: string[]; expires_at: number }>("POST", "/v1/svids/x509", {
          spiffe_id: workload,
          public_key: kp.publicKey.export({ type: "spki", format: "pem" }),
          ttl: "1h",
        });
        const chain = r.chain.flatMap((p) => fromPem(p));
        const v = verifyX509Svid(chain, bundles, new Date());
        lastChain = chain;
        return `${v.spiffeId}, ${chain[0]!.length} B, expires ${new Date(r.expires_at * 1000).toISOString()}`;
      });
    }

    await step("tampered X509-SVID rejected", async () => {
      const bad = lastChain.map((d) => new Uint8Array(d));
      const leaf = bad[0]!;
      leaf[leaf.length - 10]! ^= 0x01;
      try {
        verifyX509Svid(bad, bundles, new Date());
      } catch (e) {
        return `rejected with ${(e as { code?: string }).code}`;
      }
      throw new Error("a tampered certificate verified");
    });

    let token = "";
    await step("JWT-SVID minted and validated", async () => {
      const r = await c.call<{ token: string; alg: string }>("POST", "/v1/svids/jwt", {
        spiffe_id: workload,
        audience: [`spiffe://${TD}/ns/demo/db`],
      });
      token = r.token;
      const v = await validateJwtSvid(token, {
        audience: `spiffe://${TD}/ns/demo/db`,
        bundles,
        now: new Date(),
      });
      return `${v.spiffeId} for ${v.claims.aud}, ${r.alg}`;
    });

    await step("JWT-SVID for another audience rejected", async () => {
      try {
        await validateJwtSvid(token, { audience: `spiffe://${TD}/ns/demo/other`, bundles, now: new Date() });
      } catch (e) {
        return `rejected with ${(e as { code?: string }).code}`;
      }
      throw new Error("accepted for the wrong audience");
    });

    // --- the agent: node attestation with a join token, then the Workload API for this very process
    const alias = `spiffe://${TD}/nodes/demo-node`;
    const tok = await c.call<{ token: string }>("POST", "/v1/join-tokens", { ttl: "5m", spiffe_id: alias });
    const me = `spiffe://${TD}/ns/demo/cli`;
    await c.call("POST", "/v1/entries", {
      spiffe_id: me,
      parent_id: alias,
      selectors: [`unix:uid:${process.getuid?.() ?? 0}`],
      namespace: "demo",
      x509_svid_ttl: 600,
    });
    const pem = await c.call<{ bundle: string }>("GET", "/v1/bundle?format=pem");
    fs.writeFileSync(path.join(dir, "bundle.pem"), pem.bundle);
    const sock = path.join(dir, "agent", "public", "api.sock");
    const agentLog = fs.createWriteStream(path.join(dir, "agent.log"));
    agent = spawn(
      process.execPath,
      [
        findBin(),
        "agent",
        "start",
        "--server",
        started.listen,
        "--trust-bundle",
        path.join(dir, "bundle.pem"),
        "--join-token",
        tok.token,
        "--data-dir",
        path.join(dir, "agent"),
        "--socket",
        sock,
        "--health-listen",
        "127.0.0.1:0",
        "--sync-interval",
        "2s",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    agent.stdout!.pipe(agentLog);
    agent.stderr!.pipe(agentLog);
    const a = agent;
    await step("agent attested its node (join token) over TLS 1.3", async () => {
      const rec = await waitForLog(a, "agent started");
      return `${rec.agentId}, assurance ${rec.assurance}`;
    });
    await step("this process fetched its X509-SVID from the Workload API", async () => {
      const r = await workloadCall(sock, "FetchX509SVID", "X509SVIDRequest", "X509SVIDResponse", {});
      const svid = (r.svids as { spiffe_id: string; x509_svid: Buffer }[])[0]!;
      const chain: Uint8Array[] = [];
      for (let i = 0; i < svid.x509_svid.length;) {
        const t = readTlv(svid.x509_svid, i);
        chain.push(svid.x509_svid.subarray(i, t.end));
        i = t.end;
      }
      const v = verifyX509Svid(chain, bundles, new Date());
      const leaf = parseCertificate(chain[0]!);
      const ttl = Math.round((leaf.notAfter.getTime() - leaf.notBefore.getTime()) / 1000);
      return `${v.spiffeId}, key ${leaf.keyAlg}, signed ${leaf.signatureAlgorithm === "1.2.840.10045.4.3.2" ? "ECDSA-P256" : leaf.signatureAlgorithm}, TTL ${ttl}s, assurance ${assuranceOf(leaf)}`;
    });

    await runTunnelDemo({ step, client: c, bundle, workloadSocket: sock, selfId: me, serverId: workload });

    receipts = {
      step,
      client: c,
      bundle,
      listen: started.listen,
      clientId: me,
      serverId: workload,
      dir: opts.keepDir ? path.resolve(opts.keepDir) : path.join(dir, "provenance"),
    };
    receiptFiles = await runReceiptsDemo(receipts);

    await step("metrics exported", async () => {
      const text = await (await fetch(`http://${started.healthListen}/metrics`)).text();
      const issued = text
        .split("\n")
        .filter((l) => l.startsWith("qhx_svids_issued_total"))
        .map((l) => l.replace(/^qhx_svids_issued_total/, ""));
      if (issued.length === 0) throw new Error("qhx_svids_issued_total missing");
      return issued.join(", ");
    });
  } catch (e) {
    results.push(["server start", false, formatError(e)]);
    say(`  FAIL  ${formatError(e)} (server log: ${serverLog})`);
  } finally {
    await client?.close();
    if (agent && agent.exitCode === null) {
      const exited = new Promise<number | null>((r) => agent!.once("exit", (code) => r(code)));
      agent.kill("SIGTERM");
      const code = await exited;
      results.push(["agent stopped cleanly on SIGTERM", code === 0, `exit code ${code}`]);
      say(`  ${code === 0 ? "ok  " : "FAIL"}  agent stopped on SIGTERM (exit code ${code})`);
    }
    if (child.exitCode === null) {
      const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
      child.kill("SIGTERM");
      const code = await exited;
      results.push(["server stopped cleanly on SIGTERM", code === 0, `exit code ${code}`]);
      say(`  ${code === 0 ? "ok  " : "FAIL"}  server stopped on SIGTERM (exit code ${code})`);
    }
    logStream.end();
    if (receipts) await verifyReceiptsDemo(receipts, receiptFiles);
  }
  const failed = results.filter((r) => !r[1]).length;
  say(`\n${results.length - failed} passed, ${failed} failed`);
  if (opts.keep || failed) say(`data directory and server log kept in ${dir}`);
  else fs.rmSync(dir, { recursive: true, force: true });
  return failed ? 1 : 0;
}
