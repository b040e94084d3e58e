/**
 * `qhx demo --federation`: two trust domains with their own roots on this machine, federated both ways.
 * It starts two `qhx server` processes (alpha and bravo, each its own data directory and CA, each serving
 * its SPIFFE bundle endpoint with https_spiffe) and an agent process per domain; this process is a
 * workload of both (Workload API). Then, step by step:
 *   1. the roots are independent and a cross-domain tunnel is refused before federation;
 *   2. each side declares federation (`POST /v1/federation`, the first bundle exchanged out of band) and
 *      fetches the other's bundle from its endpoint;
 *   3. the agents hand the federated bundles to the workloads whose entries name the other domain, and a
 *      cross-domain tunnel (host/tunnel, TLS 1.3, X25519MLKEM768) carries traffic alpha → bravo;
 *   4. a releasability denial: bravo's crypto policy accepts no foreign identity into namespace `vault`,
 *      so a tunnel into it refuses alpha's workload although its chain verifies;
 *   5. alpha deletes the relationship: at the agent's next sync the bundle is gone and new tunnel
 *      connections are refused.
 */
import { type ChildProcess, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseSpiffeBundle } from "../core/bundle.ts";
import { checkReleasable, parseCryptoPolicy, subjectOf } from "../core/crypto-policy.ts";
import { formatError, QhxError } from "../core/errors.ts";
import type { ExchangeRecord } from "../tunnel/record.ts";
import type { SvidState } from "../tunnel/svid-source.ts";
import { TunnelClient, TunnelServer } from "../tunnel/tunnel.ts";
import { WorkloadSvidSource } from "../tunnel/workload-source.ts";
import { SocketClient } from "./client.ts";

const ALPHA = "alpha.qhx.internal";
const BRAVO = "bravo.qhx.internal";
const WAIT_MS = 30_000;

function findBin(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const rel of ["../../bin/qhx.js", "../../../bin/qhx.js"]) {
    const p = path.resolve(here, rel);
    if (fs.existsSync(p)) return p;
  }
  throw new Error("cannot find bin/qhx.js");
}

/** Resolve with the first JSON log record whose msg is `msg`; reject when the process exits first. */
function waitForLog(child: ChildProcess, msg: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`no "${msg}" within ${WAIT_MS / 1000} s`)), WAIT_MS);
    const onData = (c: Buffer) => {
      buf += c.toString("utf8");
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          if (rec.msg === msg) {
            clearTimeout(timer);
            child.stdout!.off("data", onData);
            resolve(rec);
          }
        } catch {
          /* not a log line */
        }
      }
    };
    child.stdout!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with code ${code} before "${msg}"`));
    });
  });
}

/** Wait until the source's state satisfies `pred` (on its "change" events). */
function waitForState(
  src: WorkloadSvidSource,
  what: string,
  pred: (s: SvidState) => boolean,
): Promise<SvidState> {
  const now = src.current();
  if (pred(now)) return Promise.resolve(now);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      src.off("change", on);
      reject(new Error(`the Workload API did not deliver ${what} within ${WAIT_MS / 1000} s`));
    }, WAIT_MS);
    const on = (s: SvidState) => {
      if (!pred(s)) return;
      clearTimeout(timer);
      src.off("change", on);
      resolve(s);
    };
    src.on("change", on);
  });
}

/** One request through a tunnel client: resolves with the echoed text ("" when the tunnel refused). */
function roundTrip(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    let got = "";
    const s = net.connect(port, "127.0.0.1", () => s.end(text));
    s.on("data", (d) => {
      got += d.toString();
    });
    s.on("error", () => undefined);
    s.on("close", () => resolve(got));
  });
}

interface Domain {
  td: string;
  dir: string;
  server: ChildProcess;
  agent?: ChildProcess;
  admin: SocketClient;
  started: Record<string, unknown>;
  socket: string;
}

export async function runFederationDemo(opts: { keep?: boolean } = {}): Promise<number> {
  const say = (s: string) => process.stdout.write(`${s}\n`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-demo-federation-"));
  const results: [string, boolean][] = [];
  const step = async (name: string, fn: () => Promise<string>) => {
    const t0 = performance.now();
    try {
      const detail = await fn();
      results.push([name, true]);
      say(`  ok    ${name} (${(performance.now() - t0).toFixed(0)} ms)${detail ? `: ${detail}` : ""}`);
      return true;
    } catch (e) {
      results.push([name, false]);
      say(`  FAIL  ${name}: ${formatError(e)}`);
      return false;
    }
  };
  // the child processes run the same qhx as this one (bin/qhx.js → dist/, or host/cli/run.ts from source)
  const self = process.argv[1] ?? "";
  const bin = /(?:run\.ts|qhx\.js)$/.test(self) ? self : findBin();
  const logs: fs.WriteStream[] = [];
  const spawnLogged = (name: string, args: string[]) => {
    const child = spawn(process.execPath, [...process.execArgv, bin, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const log = fs.createWriteStream(path.join(dir, `${name}.log`));
    logs.push(log);
    child.stdout!.pipe(log);
    child.stderr!.pipe(log);
    return child;
  };
  const domains: Domain[] = [];
  const closers: (() => Promise<unknown>)[] = [];
  const records: ExchangeRecord[] = [];
  const sink = { record: (r: ExchangeRecord) => records.push(r) };
  const uid = process.getuid?.() ?? 0;

  say(`QHx federation demo: trust domains ${ALPHA} and ${BRAVO}, data in ${dir}`);
  try {
    // --- two servers, each with its own data directory, CA and bundle endpoint
    const startServer = async (td: string, name: string): Promise<Domain> => {
      const ddir = path.join(dir, name);
      fs.mkdirSync(ddir, { recursive: true });
      const cfg = path.join(ddir, "server.json");
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          trust_domain: td,
          data_dir: path.join(ddir, "data"),
          listen: "127.0.0.1:0",
          health_listen: "127.0.0.1:0",
          federation: { bundle_endpoint: { listen: "127.0.0.1:0", profile: "https_spiffe" } },
        }),
      );
      const server = spawnLogged(`${name}-server`, ["server", "start", "--config", cfg]);
      const d: Domain = {
        td,
        dir: ddir,
        server,
        admin: undefined as unknown as SocketClient,
        started: {},
        socket: "",
      };
      domains.push(d);
      d.started = await waitForLog(server, "server started");
      d.admin = new SocketClient(d.started.adminSocket as string);
      return d;
    };
    const [alpha, bravo] = await Promise.all([startServer(ALPHA, "alpha"), startServer(BRAVO, "bravo")]);
    const a = alpha!;
    const b = bravo!;
    for (const d of [a, b]) {
      say(`  ${d.td}: server pid ${d.server.pid}, bundle endpoint ${d.started.bundleEndpoint as string}`);
    }

    await step("two trust domains with independent roots", async () => {
      const fp = async (d: Domain) => {
        const r = await d.admin.call<{ bundle: string }>("GET", "/v1/bundle?format=spiffe");
        const der = parseSpiffeBundle(r.bundle, d.td).x509Authorities[0]!;
        return crypto.createHash("sha256").update(der).digest("hex").slice(0, 16);
      };
      const [fa, fb] = await Promise.all([fp(a), fp(b)]);
      if (fa === fb) throw new Error("the two domains share a root");
      return `${ALPHA} root sha256 ${fa}…, ${BRAVO} root sha256 ${fb}…`;
    });

    // --- registration and agents: this process is alpha's `web` and bravo's `api` and `vault`
    const register = async (
      d: Domain,
      name: string,
      entries: { path: string; ns: string; fed: string[] }[],
    ) => {
      const alias = `spiffe://${d.td}/nodes/demo`;
      const tok = await d.admin.call<{ token: string }>("POST", "/v1/join-tokens", {
        ttl: "5m",
        spiffe_id: alias,
      });
      for (const e of entries) {
        await d.admin.call("POST", "/v1/entries", {
          spiffe_id: `spiffe://${d.td}${e.path}`,
          parent_id: alias,
          selectors: [`unix:uid:${uid}`],
          namespace: e.ns,
          federates_with: e.fed,
        });
      }
      const pem = await d.admin.call<{ bundle: string }>("GET", "/v1/bundle?format=pem");
      fs.writeFileSync(path.join(d.dir, "bundle.pem"), pem.bundle);
      d.socket = path.join(d.dir, "agent", "public", "api.sock");
      d.agent = spawnLogged(`${name}-agent`, [
        "agent",
        "start",
        "--server",
        d.started.listen as string,
        "--trust-bundle",
        path.join(d.dir, "bundle.pem"),
        "--join-token",
        tok.token,
        "--data-dir",
        path.join(d.dir, "agent"),
        "--socket",
        d.socket,
        "--health-listen",
        "127.0.0.1:0",
        "--sync-interval",
        "1s",
      ]);
      await waitForLog(d.agent, "agent started");
    };
    await Promise.all([
      register(a, "alpha", [{ path: "/ns/web/frontend", ns: "web", fed: [BRAVO] }]),
      register(b, "bravo", [
        { path: "/ns/api/orders", ns: "api", fed: [ALPHA] },
        { path: "/ns/vault/secrets", ns: "vault", fed: [ALPHA] },
      ]),
    ]);
    const web = new WorkloadSvidSource({ socketPath: a.socket });
    const api = new WorkloadSvidSource({ socketPath: b.socket, spiffeId: `spiffe://${BRAVO}/ns/api/orders` });
    const vault = new WorkloadSvidSource({
      socketPath: b.socket,
      spiffeId: `spiffe://${BRAVO}/ns/vault/secrets`,
    });
    for (const s of [web, api, vault]) closers.push(() => s.close());
    await Promise.all([web.ready(), api.ready(), vault.ready()]);
    say(
      `  workloads: ${web.current().svid.spiffeId}, ${api.current().svid.spiffeId}, ${vault.current().svid.spiffeId}`,
    );

    // --- an echo application behind bravo's tunnel servers, alpha's tunnel client in front
    const echo = net.createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
    closers.push(() => new Promise<void>((r) => echo.close(() => r())));
    const echoPort = (echo.address() as net.AddressInfo).port;
    const webId = web.current().svid.spiffeId;
    const apiServer = new TunnelServer({
      listen: { host: "127.0.0.1", port: 0 },
      forward: { host: "127.0.0.1", port: echoPort },
      source: api,
      allow: [webId],
      recordSink: sink,
    });
    const apiAt = await apiServer.listen();
    closers.push(() => apiServer.close());
    const client = (serverId: string, port: number) => {
      const c = new TunnelClient({
        listen: { host: "127.0.0.1", port: 0 },
        connect: { host: "127.0.0.1", port },
        source: web,
        serverIds: [serverId],
        recordSink: sink,
      });
      closers.push(() => c.close());
      return c;
    };
    const toApi = await client(api.current().svid.spiffeId, apiAt.port).listen();
    const lastRefusal = () => {
      const denied = records.filter((x) => x.decision === "deny");
      const r = denied.find((x) => x.role === "client") ?? denied[0];
      return r ? `refused by the ${r.role === "client" ? "alpha" : "bravo"} side: ${r.reason}` : "refused";
    };

    await step("cross-domain tunnel refused before federation", async () => {
      records.length = 0;
      const got = await roundTrip(toApi.port, "hello");
      if (got !== "") throw new Error(`the tunnel carried traffic: ${JSON.stringify(got)}`);
      return lastRefusal();
    });

    await step("federation declared both ways (https_spiffe, first bundle out of band)", async () => {
      const declare = async (self: Domain, other: Domain) => {
        const bundle = await other.admin.call<{ bundle: string }>("GET", "/v1/bundle?format=spiffe");
        await self.admin.call("POST", "/v1/federation", {
          trust_domain: other.td,
          bundle_endpoint_url: other.started.bundleEndpoint,
          profile: "https_spiffe",
          endpoint_spiffe_id: `spiffe://${other.td}/qhx/server`,
          bundle: bundle.bundle,
        });
        const r = await self.admin.call<{ outcome: string; sequence: number }>(
          "POST",
          `/v1/federation/${other.td}/refresh`,
        );
        return `${self.td} → ${other.td} (endpoint fetch: ${r.outcome}, sequence ${r.sequence})`;
      };
      return (await Promise.all([declare(a, b), declare(b, a)])).join("; ");
    });

    await step("agents hand the federated bundles to the workloads that name the domain", async () => {
      await Promise.all([
        waitForState(web, `${BRAVO}'s bundle`, (s) => s.bundles.has(BRAVO)),
        waitForState(api, `${ALPHA}'s bundle`, (s) => s.bundles.has(ALPHA)),
        waitForState(vault, `${ALPHA}'s bundle`, (s) => s.bundles.has(ALPHA)),
      ]);
      return `web trusts [${[...web.current().bundles.keys()].join(", ")}], api trusts [${[...api.current().bundles.keys()].join(", ")}]`;
    });

    await step("cross-domain tunnel alpha → bravo carries traffic", async () => {
      records.length = 0;
      const got = await roundTrip(toApi.port, "GET /orders");
      if (got !== "GET /orders") throw new Error(`no echo through the tunnel (${lastRefusal()})`);
      const r = records.find((x) => x.role === "server" && x.decision === "allow");
      return `echoed ${JSON.stringify(got)}; bravo saw ${r?.peerId ?? "?"} over ${r?.group ?? "?"}, alpha saw ${
        records.find((x) => x.role === "client")?.peerId ?? "?"
      }`;
    });

    await step("releasability denial: bravo's namespace vault accepts no foreign identity", async () => {
      await b.admin.call("POST", "/v1/crypto-policy", {
        policy: { format: 1, namespaces: { vault: { accept_from: [] }, api: { accept_from: [ALPHA] } } },
        comment: "federation demo",
      });
      const cur = await b.admin.call<{ policy: unknown }>("GET", "/v1/crypto-policy");
      const policy = parseCryptoPolicy(cur.policy);
      const vaultServer = new TunnelServer({
        listen: { host: "127.0.0.1", port: 0 },
        forward: { host: "127.0.0.1", port: echoPort },
        source: vault,
        allow: [webId],
        recordSink: sink,
        peerChecks: [
          (peer) =>
            checkReleasable(policy, {
              local: subjectOf(vault.current().svid.spiffeId, "vault"),
              peer: { spiffeId: peer.spiffeId, trustDomain: peer.trustDomain },
              direction: "ingress",
            }),
        ],
      });
      const at = await vaultServer.listen();
      closers.push(() => vaultServer.close());
      const toVault = await client(vault.current().svid.spiffeId, at.port).listen();
      records.length = 0;
      const got = await roundTrip(toVault.port, "GET /secrets");
      if (got !== "") throw new Error("the vault tunnel carried traffic from a foreign identity");
      const denied = records.find((x) => x.role === "server" && x.decision === "deny");
      if (!denied?.peerId) throw new Error(`refused before the peer was authenticated (${lastRefusal()})`);
      return `${denied.peerId} verified, then refused: ${denied.reason}`;
    });

    await step("deleting the federation revokes access at the next sync", async () => {
      await a.admin.call("DELETE", `/v1/federation/${BRAVO}`);
      await waitForState(web, `the removal of ${BRAVO}'s bundle`, (s) => !s.bundles.has(BRAVO));
      records.length = 0;
      const got = await roundTrip(toApi.port, "GET /orders");
      if (got !== "") throw new Error("the tunnel still carries traffic");
      return lastRefusal();
    });
  } catch (e) {
    results.push(["setup", false]);
    say(`  FAIL  ${formatError(e)} (logs in ${dir})`);
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    for (const d of domains) await d.admin?.close();
    const stop = async (p: ChildProcess | undefined, what: string) => {
      if (!p || p.exitCode !== null) return;
      const exited = new Promise<number | null>((r) => p.once("exit", (code) => r(code)));
      p.kill("SIGTERM");
      const code = await exited;
      if (code !== 0) {
        results.push([`${what} stopped`, false]);
        say(`  FAIL  ${what} exited with ${code} on SIGTERM`);
      }
    };
    await Promise.all(domains.map((d) => stop(d.agent, `${d.td} agent`)));
    await Promise.all(domains.map((d) => stop(d.server, `${d.td} server`)));
    for (const l of logs) l.end();
  }
  const failed = results.filter((r) => !r[1]).length;
  say(`\n${results.length - failed} passed, ${failed} failed`);
  if (opts.keep || failed) say(`data directories and logs kept in ${dir}`);
  else fs.rmSync(dir, { recursive: true, force: true });
  if (failed && results.length === 0) throw new QhxError("QHX_DEMO_FAILED", "nothing ran");
  return failed ? 1 : 0;
}
