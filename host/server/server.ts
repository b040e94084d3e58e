/**
 * The `qhx server` process: ServerCore behind three listeners.
 * - the admin API over HTTP on a local Unix socket (mode 0600: only the server's user may administer it);
 * - the agent API over TLS 1.3 on `listen` (default 127.0.0.1:8081), authenticated by the server's own
 *   X509-SVID `spiffe://<td>/qhx/server` (re-issued at half its life), agents by theirs (see agent-api.ts);
 * - `health_listen` (default 127.0.0.1:8080, plain HTTP): /healthz, /readyz, /metrics, /bundle.
 * A timer advances CA rotation. SIGTERM/SIGINT close both listeners, wait for requests in flight, close
 * the datastore and remove the socket.
 */
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import net from "node:net";
import path from "node:path";
import { bundleToSpiffeJson } from "../core/bundle.ts";
import type { Clock } from "../core/clock.ts";
import { QhxError, ValidationError } from "../core/errors.ts";
import { generateKeyPair, mlDsaEngineName } from "../core/alg.ts";
import { configurePq } from "../crypto/index.ts";
import { toPem } from "../core/pem.ts";
import { type AdminRequest, errorBody, handleAdmin } from "./admin-api.ts";
import { AgentApi } from "./agent-api.ts";
import { nodeAttestorVerifiers } from "./attestation/index.ts";
import type { ServerConfig } from "./config.ts";
import { ServerCore } from "./core.ts";
import type { Logger } from "./logger.ts";
import { ServerMetrics } from "./metrics.ts";
import { type BundleEndpoint, startBundleEndpoint } from "./federation/endpoint.ts";
import { federationFor } from "./federation/manager.ts";

const MAX_BODY = 1 << 20;

export interface RunningServer {
  core: ServerCore;
  /** the agent API's bound address (port resolved when 0 was asked) */
  address: AddressInfo;
  /** the health/metrics listener's bound address */
  healthAddress: AddressInfo;
  adminSocket: string;
  /** the SPIFFE bundle endpoint, when federation.bundle_endpoint is configured */
  bundleEndpoint?: BundleEndpoint;
  close(): Promise<void>;
}

function readBody(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new ValidationError("request body too large"));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      if (size === 0) return resolve(undefined);
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch {
        reject(new ValidationError("request body is not valid JSON"));
      }
    });
    req.on("error", reject);
  });
}

function send(res: http.ServerResponse, status: number, body: unknown, type = "application/json"): void {
  const text = type === "application/json" ? `${JSON.stringify(body)}\n` : String(body);
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/** Refuse to start over a live server's socket; remove a stale one left by a crash. */
async function claimSocket(file: string): Promise<void> {
  if (!fs.existsSync(file)) return;
  const alive = await new Promise<boolean>((resolve) => {
    const s = net.connect(file);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
  if (alive) {
    throw new QhxError("QHX_ADDRESS_IN_USE", `another server is listening on ${file}`, {
      hint: "stop it first, or use another --admin-socket",
    });
  }
  fs.rmSync(file, { force: true });
}

function listen(server: http.Server, target: { port: number; host: string } | string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      reject(
        new QhxError(
          "QHX_LISTEN_FAILED",
          `cannot listen on ${typeof target === "string" ? target : `${target.host}:${target.port}`}: ${e.code ?? e.message}`,
        ),
      );
    };
    server.once("error", onError);
    const done = () => {
      server.off("error", onError);
      resolve();
    };
    if (typeof target === "string") server.listen(target, done);
    else server.listen(target.port, target.host, done);
  });
}

export async function startServer(
  cfg: ServerConfig,
  opts: { clock: Clock; logger: Logger },
): Promise<RunningServer> {
  const log = opts.logger;
  configurePq({ backend: cfg.pqBackend });
  const metrics = new ServerMetrics(true);
  const core = await ServerCore.open(cfg, { clock: opts.clock, logger: log, metrics, create: true });
  const inflight = new Set<Promise<void>>();
  let ready = true;

  const admin = http.createServer((req, res) => {
    const started = process.hrtime.bigint();
    const url = new URL(req.url ?? "/", "http://admin");
    const p = (async () => {
      let status = 500;
      try {
        const body = await readBody(req);
        const areq: AdminRequest = {
          method: req.method ?? "GET",
          path: url.pathname,
          query: url.searchParams,
          body,
        };
        const r = await handleAdmin(core, areq);
        status = r.status;
        send(res, r.status, r.body);
      } catch (e) {
        status = 400;
        send(res, 400, errorBody(e));
      } finally {
        const route = url.pathname.replace(/\/v1\/entries\/[^/]+$/, "/v1/entries/:id");
        metrics.adminRequests.observe(
          { route, status: String(status) },
          Number(process.hrtime.bigint() - started) / 1e9,
        );
      }
    })();
    inflight.add(p);
    p.finally(() => inflight.delete(p));
  });

  const agentApi = new AgentApi(
    core,
    nodeAttestorVerifiers(cfg.nodeAttestors, core.ds, opts.clock),
    cfg.agentSvidTtlMs,
  );
  const serverId = `spiffe://${cfg.trustDomain}/qhx/server`;
  let identityRenewAt = 0;
  const serverIdentity = async () => {
    const kp = generateKeyPair("ec-p256");
    const r = await core.issueX509({
      spiffeId: serverId,
      publicKey: kp.publicKey,
      ttlMs: cfg.defaultX509SvidTtlMs,
    });
    const now = opts.clock.now().getTime();
    identityRenewAt = now + (r.notAfter.getTime() - now) / 2;
    return {
      key: kp.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
      cert: r.chain.map((d) => toPem(d)).join(""),
    };
  };
  const agentServer = https.createServer(
    {
      ...(await serverIdentity()),
      minVersion: "TLSv1.3",
      ecdhCurve: "X25519MLKEM768:X25519:P-256",
      requestCert: true,
      rejectUnauthorized: false, // agents before attestation have no certificate; agent-api.ts verifies SVIDs
    },
    (req, res) => {
      const url = new URL(req.url ?? "/", "https://server");
      const p = (async () => {
        try {
          const body = await readBody(req);
          const peer = (req.socket as import("node:tls").TLSSocket).getPeerCertificate(true);
          const peerChain: Uint8Array[] = [];
          for (let c = peer; c && c.raw && peerChain.length < 10; c = c.issuerCertificate) {
            if (peerChain.length > 0 && c.raw.equals(Buffer.from(peerChain[peerChain.length - 1]!))) break;
            peerChain.push(new Uint8Array(c.raw));
          }
          const r = await agentApi.handle({
            method: req.method ?? "GET",
            path: url.pathname,
            body,
            peerChain,
          });
          send(res, r.status, r.body);
        } catch (e) {
          send(res, 400, errorBody(e));
        }
      })();
      inflight.add(p);
      p.finally(() => inflight.delete(p));
    },
  );

  const pub = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://server");
    if (req.method !== "GET")
      return send(res, 405, errorBody(new QhxError("QHX_METHOD_NOT_ALLOWED", req.method ?? "")));
    switch (url.pathname) {
      case "/healthz":
        return send(res, 200, { status: "ok" });
      case "/readyz":
        return ready ? send(res, 200, { status: "ready" }) : send(res, 503, { status: "shutting down" });
      case "/metrics":
        metrics.registry
          .metrics()
          .then((text) => send(res, 200, text, metrics.registry.contentType))
          .catch(() => send(res, 500, { status: "error" }));
        return;
      case "/bundle":
        return send(res, 200, JSON.parse(bundleToSpiffeJson(core.ca.trustBundle())));
      default:
        return send(res, 404, errorBody(new QhxError("QHX_NOT_FOUND", url.pathname)));
    }
  });

  let bundleEndpoint: BundleEndpoint | undefined;
  try {
    await claimSocket(cfg.adminSocket);
    fs.mkdirSync(path.dirname(cfg.adminSocket), { recursive: true, mode: 0o700 });
    const oldUmask = process.umask(0o177);
    try {
      await listen(admin, cfg.adminSocket);
    } finally {
      process.umask(oldUmask);
    }
    fs.chmodSync(cfg.adminSocket, 0o600);
    await listen(agentServer as unknown as http.Server, cfg.listen);
    await listen(pub, cfg.healthListen);
    if (cfg.federation.bundleEndpoint) {
      bundleEndpoint = await startBundleEndpoint(core, cfg.federation.bundleEndpoint);
    }
  } catch (e) {
    admin.close();
    agentServer.close();
    pub.close();
    await core.close();
    throw e;
  }
  const federation = federationFor(core);
  federation.start();
  const address = agentServer.address() as AddressInfo;
  const healthAddress = pub.address() as AddressInfo;

  let rotating = false;
  const timer = setInterval(() => {
    if (rotating) return;
    rotating = true;
    core.ca
      .rotate()
      .then(async () => {
        if (opts.clock.now().getTime() >= identityRenewAt) {
          agentServer.setSecureContext({
            ...(await serverIdentity()),
            minVersion: "TLSv1.3",
            ecdhCurve: "X25519MLKEM768:X25519:P-256",
          });
          log.info("server TLS identity renewed");
        }
      })
      .catch((e) => log.error({ err: e }, "CA rotation failed"))
      .finally(() => {
        rotating = false;
      });
  }, cfg.rotationCheckIntervalMs);
  timer.unref();

  log.info(
    {
      trustDomain: cfg.trustDomain,
      listen: `${address.address}:${address.port}`,
      healthListen: `${healthAddress.address}:${healthAddress.port}`,
      adminSocket: cfg.adminSocket,
      caKeyType: cfg.ca.keyType,
      mlDsa: mlDsaEngineName(),
      bundleSequence: core.ca.trustBundle().sequence,
      ...(bundleEndpoint ? { bundleEndpoint: bundleEndpoint.url } : {}),
    },
    "server started",
  );

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      ready = false;
      clearInterval(timer);
      const closed = Promise.all([
        new Promise<void>((r) => admin.close(() => r())),
        new Promise<void>((r) => agentServer.close(() => r())),
        new Promise<void>((r) => pub.close(() => r())),
      ]);
      admin.closeIdleConnections();
      agentServer.closeIdleConnections();
      pub.closeIdleConnections();
      await Promise.allSettled([...inflight]);
      await closed;
      await federation.stop();
      await bundleEndpoint?.close();
      await core.close();
      fs.rmSync(cfg.adminSocket, { force: true });
      log.info("server stopped");
    })();
    return closing;
  };
  return {
    core,
    address,
    healthAddress,
    adminSocket: cfg.adminSocket,
    ...(bundleEndpoint ? { bundleEndpoint } : {}),
    close,
  };
}
