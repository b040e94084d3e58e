/**
 * The `qhx server` process: ServerCore behind two listeners.
 * - the admin API over HTTP on a local Unix socket (mode 0600: only the server's user may administer it);
 * - a TCP listener (default 127.0.0.1:8081) with /healthz, /readyz, /metrics and the trust bundle at /bundle.
 * A timer advances CA rotation. SIGTERM/SIGINT close both listeners, wait for requests in flight, close
 * the datastore and remove the socket.
 */
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import net from "node:net";
import path from "node:path";
import { bundleToSpiffeJson } from "../core/bundle.ts";
import type { Clock } from "../core/clock.ts";
import { QhxError, ValidationError } from "../core/errors.ts";
import { type AdminRequest, errorBody, handleAdmin } from "./admin-api.ts";
import type { ServerConfig } from "./config.ts";
import { ServerCore } from "./core.ts";
import type { Logger } from "./logger.ts";
import { ServerMetrics } from "./metrics.ts";

const MAX_BODY = 1 << 20;

export interface RunningServer {
  core: ServerCore;
  /** the TCP listener's bound address (port resolved when 0 was asked) */
  address: AddressInfo;
  adminSocket: string;
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
    await listen(pub, cfg.listen);
  } catch (e) {
    admin.close();
    pub.close();
    await core.close();
    throw e;
  }
  const address = pub.address() as AddressInfo;

  let rotating = false;
  const timer = setInterval(() => {
    if (rotating) return;
    rotating = true;
    core.ca
      .rotate()
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
      adminSocket: cfg.adminSocket,
      caKeyType: cfg.ca.keyType,
      bundleSequence: core.ca.trustBundle().sequence,
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
        new Promise<void>((r) => pub.close(() => r())),
      ]);
      admin.closeIdleConnections();
      pub.closeIdleConnections();
      await Promise.allSettled([...inflight]);
      await closed;
      await core.close();
      fs.rmSync(cfg.adminSocket, { force: true });
      log.info("server stopped");
    })();
    return closing;
  };
  return { core, address, adminSocket: cfg.adminSocket, close };
}
