/**
 * Trust domains for federation tests: real servers (in-process, real sockets on 127.0.0.1), each with its
 * own data directory and CA; agents attested with join tokens; a mutual-TLS exchange over node:tls where
 * each side verifies the other's X509-SVID against the bundles its own Workload API identities carry.
 */
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import path from "node:path";
import tls from "node:tls";
import { Agent } from "../../host/agent/agent.ts";
import { JoinTokenClient } from "../../host/agent/attestors/index.ts";
import { UnixAttestor } from "../../host/agent/workload/unix.ts";
import type { WorkloadIdentities } from "../../host/agent/workload-api/types.ts";
import { bundleToSpiffeJson } from "../../host/core/bundle.ts";
import type { TrustBundle } from "../../host/core/bundle-types.ts";
import type { Clock } from "../../host/core/clock.ts";
import { errorFromAnswer } from "../../host/core/errors.ts";
import { toPem } from "../../host/core/pem.ts";
import { verifyX509Svid } from "../../host/core/x509-verify.ts";
import { handleAdmin } from "../../host/server/admin-api.ts";
import { parseServerConfig } from "../../host/server/config.ts";
import { silentLogger } from "../../host/server/logger.ts";
import { type RunningServer, startServer } from "../../host/server/server.ts";
import { tmpDir } from "../helpers/cli.ts";

export const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };

export interface Closer {
  close(): Promise<void>;
}

export async function startDomain(
  td: string,
  closers: Closer[],
  opts: {
    clock: Clock;
    endpoint?: {
      profile: "https_spiffe" | "https_web";
      certFile?: string;
      keyFile?: string;
      spiffeId?: string;
    };
    refresh?: Record<string, string>;
  },
): Promise<RunningServer> {
  const dir = tmpDir("qhx-fed-");
  const cfg = parseServerConfig({
    trust_domain: td,
    data_dir: path.join(dir, "server"),
    listen: "127.0.0.1:0",
    health_listen: "127.0.0.1:0",
    log_level: "silent",
    federation: {
      ...(opts.endpoint
        ? {
            bundle_endpoint: {
              listen: "127.0.0.1:0",
              profile: opts.endpoint.profile,
              ...(opts.endpoint.certFile ? { cert_file: opts.endpoint.certFile } : {}),
              ...(opts.endpoint.keyFile ? { key_file: opts.endpoint.keyFile } : {}),
              ...(opts.endpoint.spiffeId ? { spiffe_id: opts.endpoint.spiffeId } : {}),
            },
          }
        : {}),
      // tests drive refreshes (refreshNow, tick): the background refresher never fires on its own
      refresh: { check_interval: "1h", ...opts.refresh },
    },
  });
  const s = await startServer(cfg, { clock: opts.clock, logger: silentLogger });
  closers.push(s);
  return s;
}

/** Call an admin route in-process; throws the QhxError of an error answer. */
export async function admin<T = Record<string, unknown>>(
  s: RunningServer,
  method: string,
  p: string,
  body?: unknown,
): Promise<T> {
  const url = new URL(p, "http://x");
  const r = await handleAdmin(s.core, { method, path: url.pathname, query: url.searchParams, body });
  if (r.status >= 400) throw errorFromAnswer(r.status, r.body);
  return r.body as T;
}

export function bundleJson(s: RunningServer): string {
  return bundleToSpiffeJson(s.core.ca.trustBundle());
}

/** `a` declares federation with `b` over b's https_spiffe endpoint, b's bundle given out of band. */
export function federate(a: RunningServer, b: RunningServer) {
  return admin(a, "POST", "/v1/federation", {
    trust_domain: b.core.cfg.trustDomain,
    bundle_endpoint_url: b.bundleEndpoint!.url,
    profile: "https_spiffe",
    endpoint_spiffe_id: `spiffe://${b.core.cfg.trustDomain}/qhx/server`,
    bundle: bundleJson(b),
  });
}

/**
 * An agent on `s` whose node alias is `alias`, with one workload entry for this process's uid (in
 * `namespace`, default "default").
 */
export async function agentWithWorkload(
  s: RunningServer,
  closers: Closer[],
  clock: Clock,
  workload: { path: string; alias: string; namespace?: string; federatesWith?: string[] },
): Promise<Agent> {
  const td = s.core.cfg.trustDomain;
  const alias = `spiffe://${td}/nodes/${workload.alias}`;
  const { token } = await admin<{ token: string }>(s, "POST", "/v1/join-tokens", { spiffe_id: alias });
  await admin(s, "POST", "/v1/entries", {
    spiffe_id: `spiffe://${td}${workload.path}`,
    parent_id: alias,
    selectors: [`unix:uid:${me.uid}`],
    ...(workload.namespace ? { namespace: workload.namespace } : {}),
    ...(workload.federatesWith ? { federates_with: workload.federatesWith } : {}),
  });
  const a = new Agent({
    trustDomain: td,
    server: { host: "127.0.0.1", port: s.address.port },
    bootstrapRoots: s.core.ca.trustBundle().x509Authorities,
    insecureBootstrap: false,
    dataDir: tmpDir("qhx-fed-agent-"),
    attestor: new JoinTokenClient(token),
    workloadAttestors: [new UnixAttestor({ hashMaxBytes: 0 })],
    workloadKeyType: "ec-p256",
    syncIntervalMs: 3_600_000,
    clock,
    logger: silentLogger,
  });
  closers.push({ close: () => a.stop() });
  await a.start();
  return a;
}

function tlsCredentials(ids: WorkloadIdentities) {
  const svid = ids.svids[0]!;
  const key = crypto.createPrivateKey({ key: Buffer.from(svid.privateKey), format: "der", type: "pkcs8" });
  return {
    key: key.export({ type: "pkcs8", format: "pem" }) as string,
    cert: svid.chain.map((d) => toPem(d)).join(""),
  };
}

function peerChain(sock: tls.TLSSocket): Uint8Array[] {
  const chain: Uint8Array[] = [];
  for (let c = sock.getPeerCertificate(true); c?.raw && chain.length < 10; c = c.issuerCertificate) {
    if (chain.length > 0 && c.raw.equals(Buffer.from(chain[chain.length - 1]!))) break;
    chain.push(new Uint8Array(c.raw));
  }
  return chain;
}

function verifyWith(chain: Uint8Array[], bundles: TrustBundle[]): string {
  return verifyX509Svid(
    chain,
    new Map(bundles.map((b) => [b.trustDomain, b])),
    new Date(),
  ).spiffeId.toString();
}

export interface MtlsOutcome {
  /** what the server side concluded about the client: its SPIFFE ID or the refusal code */
  server: string;
  /** what the client side concluded about the server */
  client: string;
  /** the exchange completed (both sides accepted the other and the echo came back) */
  ok: boolean;
}

/**
 * One TLS 1.3 exchange between two workloads with each side's Workload API identities: the server
 * verifies the client's X509-SVID against its bundles, the client the server's against its own. An
 * exchange completes only when both accept.
 */
export async function mtlsExchange(
  serverIds: WorkloadIdentities,
  clientIds: WorkloadIdentities,
): Promise<MtlsOutcome> {
  let serverView = "no client";
  const server = tls.createServer(
    { ...tlsCredentials(serverIds), requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.3" },
    (sock) => {
      try {
        serverView = verifyWith(peerChain(sock), serverIds.bundles);
        sock.on("data", (d) => sock.end(Buffer.concat([Buffer.from("echo:"), d])));
      } catch (e) {
        serverView = (e as { code?: string }).code ?? String(e);
        sock.destroy();
      }
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  try {
    const { clientView, echoed } = await new Promise<{ clientView: string; echoed: string }>((resolve) => {
      let clientView = "no server";
      let got = "";
      const c = tls.connect({
        host: "127.0.0.1",
        port,
        ...tlsCredentials(clientIds),
        rejectUnauthorized: false,
        minVersion: "TLSv1.3",
      });
      c.once("secureConnect", () => {
        try {
          clientView = verifyWith(peerChain(c), clientIds.bundles);
          c.write("hello");
        } catch (e) {
          clientView = (e as { code?: string }).code ?? String(e);
          c.destroy();
        }
      });
      c.on("data", (d) => {
        got += d.toString();
      });
      c.on("error", () => undefined);
      c.on("close", () => resolve({ clientView, echoed: got }));
    });
    return { server: serverView, client: clientView, ok: echoed === "echo:hello" };
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
}

/**
 * A bundle endpoint the test controls: real https_spiffe TLS with the given SVID, serving whatever
 * document `serve` holds. `close()` takes it down; `listen()` brings it back on the same port.
 */
export async function controlledEndpoint(cred: { cert: string; key: string }) {
  const state = { document: "{}", status: 200 };
  let server: https.Server | undefined;
  let port = 0;
  const listen = async () => {
    server = https.createServer({ ...cred, minVersion: "TLSv1.2" }, (_req, res) => {
      res.writeHead(state.status, { "content-type": "application/json" });
      res.end(state.document);
    });
    await new Promise<void>((r) => server!.listen(port, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  };
  await listen();
  return {
    state,
    url: () => `https://127.0.0.1:${port}/`,
    listen,
    close: async () => {
      if (!server) return;
      const s = server;
      server = undefined;
      const closed = new Promise<void>((r) => s.close(() => r()));
      s.closeAllConnections();
      await closed;
    },
  };
}

/** A Web PKI CA and a server certificate for 127.0.0.1 (only), made by Debian's openssl. */
export function webPki(dir = tmpDir("qhx-fed-web-")) {
  const run = (args: string[]) => {
    const r = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  run([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-subj",
    "/CN=QHx test web CA",
    "-days",
    "2",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign",
  ]);
  run(["req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
  fs.writeFileSync(path.join(dir, "ext.cnf"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  run([
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.pem",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
  ]);
  return {
    dir,
    caFile: path.join(dir, "ca.pem"),
    certFile: path.join(dir, "server.pem"),
    keyFile: path.join(dir, "server.key"),
    caPem: fs.readFileSync(path.join(dir, "ca.pem"), "utf8"),
  };
}
