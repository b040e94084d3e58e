/**
 * `qhx tunnel client|server`: identity-bound TLS 1.3 tunnels for unmodified applications (host/tunnel).
 *
 * Extending: every tunnel option goes through `tunnelCommonOptions` (flags both sides share) and
 * `runtimeFromFlags` (flags → the common TunnelCommonOptions); add a flag there and map it to an option
 * (e.g. `--receipts` → `recordSink`) and both commands get it.
 */
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import type { Command } from "commander";
import { parseDuration } from "../core/clock.ts";
import { ValidationError } from "../core/errors.ts";
import { compilePolicies, policiesFromText, QHX_CEDAR_SCHEMA } from "../policy/index.ts";
import { createLogger, type Logger } from "../server/logger.ts";
import { FileSvidSource, type SvidSource } from "../tunnel/svid-source.ts";
import { TunnelMetrics } from "../tunnel/metrics.ts";
import { type ReceiptEmitter, receiptEmitterForSource } from "../provenance/emitter.ts";
import {
  parseHostPort,
  PQ_SIG_ALGS,
  type TunnelCommonOptions,
  TunnelClient,
  type TunnelMode,
  TUNNEL_MODES,
  TunnelServer,
} from "../tunnel/tunnel.ts";
import { WorkloadSvidSource } from "../tunnel/workload-source.ts";
import { defaultWorkloadSocket } from "./workload-client.ts";
import { tunnelPeerChecks } from "./crypto-policy.ts";

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

export interface TunnelFlags {
  mode: string;
  svidDir?: string;
  socket?: string;
  spiffeId?: string;
  pqSigAlg?: string[];
  maxConnections?: string;
  idleTimeout?: string;
  handshakeTimeout?: string;
  drainTimeout?: string;
  metricsListen?: string;
  logLevel: string;
  cryptoPolicy?: string;
  cryptoNamespace?: string;
  receipts?: string;
  receiptsDir?: string;
  connectionReuse?: boolean;
}

/** The flags both tunnel sides share. */
export function tunnelCommonOptions(cmd: Command): Command {
  return cmd
    .option("--mode <mode>", "mtls (X25519MLKEM768, X25519, P-256) or pq (X25519MLKEM768 only)", "mtls")
    .option("--svid-dir <dir>", "SVID from files: svid.pem, svid.key, bundle.pem (reread on change)")
    .option("--socket <path>", "SVID from the Workload API (default: SPIFFE_ENDPOINT_SOCKET)")
    .option("--spiffe-id <id>", "which of the workload's SVIDs to use (Workload API; default: its default)")
    .option(
      "--pq-sig-alg <alg>",
      `peer SVID algorithm accepted in pq mode (repeatable; default ${PQ_SIG_ALGS.join(", ")})`,
      collect,
    )
    .option("--max-connections <n>", "concurrent connections; more are refused", "1024")
    .option("--idle-timeout <duration>", "close connections idle this long (0: never)", "5m")
    .option("--handshake-timeout <duration>", "TCP accept to verified peer", "10s")
    .option(
      "--no-connection-reuse",
      "one TLS connection per application connection (default: QHx peers carry successive connections over one verified TLS connection, ALPN qhx-streams/1)",
    )
    .option("--drain-timeout <duration>", "on SIGTERM, let connections finish this long", "30s")
    .option("--metrics-listen <host:port>", "serve Prometheus /metrics there")
    .option("--log-level <level>", "trace|debug|info|warn|error", "info")
    .option("--crypto-policy <file>", "enforce a crypto policy file (qhx crypto-policy show --format json)")
    .option("--crypto-namespace <ns>", "this workload's namespace for --crypto-policy rules")
    .option(
      "--receipts <host:port>",
      "sign a receipt of every connection; submit it to the server's notary there",
    )
    .option("--receipts-dir <dir>", "also keep each logged receipt in this directory (with --receipts)");
}

function durationMs(v: string | undefined, field: string): number | undefined {
  if (v === undefined) return undefined;
  if (v === "0") return 0;
  try {
    return parseDuration(v);
  } catch (e) {
    throw new ValidationError((e as Error).message, field);
  }
}

function positiveInt(v: string | undefined, field: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1)
    throw new ValidationError(`expected a positive integer, got "${v}"`, field);
  return n;
}

export interface TunnelRuntime {
  common: TunnelCommonOptions;
  log: Logger;
  drainMs: number;
  metricsListen: string | undefined;
  /** Closed after the tunnel (e.g. a receipt emitter flushing). */
  closers: (() => Promise<void>)[];
}

/**
 * A record sink named by flags: `--receipts HOST:PORT` (the server's agent API) signs a receipt of every
 * connection with the tunnel's SVID and submits it to the notary (host/provenance/emitter.ts).
 */
function sinkFromFlags(o: TunnelFlags, source: SvidSource, log: Logger): ReceiptEmitter | undefined {
  if (!o.receipts) return undefined;
  return receiptEmitterForSource({
    ...parseHostPort(o.receipts, "--receipts"),
    source,
    logger: log,
    ...(o.receiptsDir ? { dir: path.resolve(o.receiptsDir) } : {}),
  });
}

const closeEmitter = (e: ReceiptEmitter) => () => e.close();

/** Flags → the SVID source, logger, and common tunnel options. */
export async function runtimeFromFlags(o: TunnelFlags, role: "client" | "server"): Promise<TunnelRuntime> {
  if (!(TUNNEL_MODES as readonly string[]).includes(o.mode)) {
    throw new ValidationError(`unknown mode "${o.mode}" (mtls|pq)`, "--mode");
  }
  // every flag is checked before the SVID source (a file watcher, a stream) exists
  const limits = {
    maxConnections: positiveInt(o.maxConnections, "--max-connections"),
    idleTimeoutMs: durationMs(o.idleTimeout, "--idle-timeout"),
    handshakeTimeoutMs: durationMs(o.handshakeTimeout, "--handshake-timeout"),
    reuseConnections: o.connectionReuse !== false,
  };
  const drainMs = durationMs(o.drainTimeout, "--drain-timeout") ?? 30_000;
  if (o.receiptsDir && !o.receipts) throw new ValidationError("needs --receipts HOST:PORT", "--receipts-dir");
  if (o.receipts) parseHostPort(o.receipts, "--receipts");
  const log = createLogger(o.logLevel, `qhx-tunnel-${role}`);
  const onError = (e: Error) => log.warn({ err: e.message }, "SVID source problem");
  let source: SvidSource;
  if (o.svidDir && o.socket) throw new ValidationError("give --svid-dir or --socket, not both");
  if (o.svidDir) {
    source = new FileSvidSource(path.resolve(o.svidDir), { onError });
  } else {
    const sock = o.socket ?? defaultWorkloadSocket();
    if (!sock) throw new ValidationError("give --svid-dir DIR, --socket PATH or set SPIFFE_ENDPOINT_SOCKET");
    const ws = new WorkloadSvidSource({ socketPath: sock, spiffeId: o.spiffeId, onError });
    try {
      await ws.ready();
    } catch (e) {
      await ws.close();
      throw e;
    }
    source = ws;
  }
  let common: TunnelCommonOptions;
  let sink: ReceiptEmitter | undefined;
  try {
    sink = sinkFromFlags(o, source, log);
    common = {
      mode: o.mode as TunnelMode,
      source,
      logger: log,
      metrics: new TunnelMetrics(true),
      ...(sink ? { recordSink: sink } : {}),
      ...(o.pqSigAlg ? { pqSigAlgs: o.pqSigAlg } : {}),
      ...limits,
      ...(o.cryptoPolicy
        ? { peerChecks: tunnelPeerChecks(o.cryptoPolicy, source, o.mode as TunnelMode, o.cryptoNamespace) }
        : {}),
    };
    sink?.attachMetrics(common.metrics!.registry);
  } catch (e) {
    await source.close();
    throw e;
  }
  return {
    common,
    log,
    drainMs,
    metricsListen: o.metricsListen,
    closers: [...(sink ? [closeEmitter(sink)] : []), () => source.close()],
  };
}

async function serveMetrics(rt: TunnelRuntime): Promise<http.Server | undefined> {
  if (!rt.metricsListen) return undefined;
  const at = parseHostPort(rt.metricsListen, "--metrics-listen");
  const reg = rt.common.metrics!.registry;
  const srv = http.createServer((req, res) => {
    if (req.url !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    reg.metrics().then(
      (text) => res.writeHead(200, { "content-type": reg.contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(at.port, at.host, () => resolve());
  });
  return srv;
}

/** Start; if that fails, release what the runtime holds (file watcher, Workload API stream) and rethrow. */
async function startOrRelease(rt: TunnelRuntime, start: () => Promise<void>): Promise<void> {
  try {
    await start();
  } catch (e) {
    for (const c of rt.closers) await c();
    throw e;
  }
}

/** Run a tunnel until SIGTERM/SIGINT, then drain and exit 0. */
async function run(
  tunnel: TunnelClient | TunnelServer,
  rt: TunnelRuntime,
  fields: Record<string, unknown>,
): Promise<void> {
  const addr = await tunnel.listen();
  const metrics = await serveMetrics(rt);
  const svid = rt.common.source.current().svid;
  rt.log.info(
    {
      ...fields,
      mode: tunnel.mode,
      listen: `${addr.host}:${addr.port}`,
      spiffeId: svid.spiffeId,
      keyAlg: svid.keyAlg,
      ...(metrics ? { metricsListen: `127.0.0.1:${(metrics.address() as AddressInfo).port}` } : {}),
    },
    "tunnel started",
  );
  const stop = (signal: string) => {
    rt.log.info({ signal, active: tunnel.activeConnections, drainMs: rt.drainMs }, "draining");
    tunnel
      .close({ drainMs: rt.drainMs })
      .then(async () => {
        metrics?.close();
        for (const c of rt.closers) await c();
        rt.log.info({ signal }, "tunnel stopped");
        process.exit(0);
      })
      .catch((e) => {
        rt.log.error({ err: (e as Error).message }, "shutdown failed");
        process.exit(1);
      });
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}

export function registerTunnelCommands(program: Command): void {
  const tunnel = program
    .command("tunnel")
    .description("mTLS / post-quantum TLS 1.3 tunnels between workloads, for unmodified applications");

  tunnelCommonOptions(
    tunnel
      .command("client")
      .description("accept plaintext from a local app and carry it to a tunnel server")
      .requiredOption("--listen <host:port>", "local plaintext listener, e.g. 127.0.0.1:7000")
      .requiredOption("--connect <host:port>", "the tunnel server")
      .requiredOption("--server-id <id>", "SPIFFE ID the server must present (repeatable)", collect)
      .option("--no-session-resumption", "always run a full handshake (no TLS 1.3 session tickets)"),
  )
    .addHelpText(
      "after",
      "\nExample:\n  qhx tunnel client --svid-dir ./web --listen 127.0.0.1:7000 --connect db.internal:8443 \\\n    --server-id spiffe://example.org/db --mode pq",
    )
    .action(
      async (
        o: TunnelFlags & { listen: string; connect: string; serverId: string[]; sessionResumption: boolean },
      ) => {
        const listen = parseHostPort(o.listen, "--listen");
        const connect = parseHostPort(o.connect, "--connect");
        const rt = await runtimeFromFlags(o, "client");
        await startOrRelease(rt, async () => {
          const t = new TunnelClient({
            ...rt.common,
            listen,
            connect,
            serverIds: o.serverId,
            resumeSessions: o.sessionResumption,
          });
          await run(t, rt, { role: "client", connect: o.connect, serverIds: o.serverId });
        });
      },
    );

  tunnelCommonOptions(
    tunnel
      .command("server")
      .description(
        "accept tunnels, authorize the peer (allow-list or Cedar `connect`), forward to a local app",
      )
      .requiredOption("--listen <host:port>", "TLS listener, e.g. 0.0.0.0:8443")
      .requiredOption("--forward <host:port>", "the local app, e.g. 127.0.0.1:5432")
      .option("--allow <id>", "a SPIFFE ID allowed to connect (repeatable)", collect)
      .option("--policy <file>", "Cedar policies for action `connect` (QHx schema)")
      .option("--namespace <ns>", "namespace of Workload entities in policy requests", "default"),
  )
    .addHelpText(
      "after",
      "\nExample:\n  qhx tunnel server --svid-dir ./db --listen 0.0.0.0:8443 --forward 127.0.0.1:5432 \\\n    --allow spiffe://example.org/web --mode pq",
    )
    .action(
      async (
        o: TunnelFlags & {
          listen: string;
          forward: string;
          allow?: string[];
          policy?: string;
          namespace: string;
        },
      ) => {
        const listen = parseHostPort(o.listen, "--listen");
        const forward = parseHostPort(o.forward, "--forward");
        if (!o.allow && !o.policy)
          throw new ValidationError("give --allow SPIFFE_ID (repeatable) or --policy FILE");
        const policy = o.policy
          ? await compilePolicies({
              policies: policiesFromText(fs.readFileSync(o.policy, "utf8")),
              schema: QHX_CEDAR_SCHEMA,
            })
          : undefined;
        const rt = await runtimeFromFlags(o, "server");
        await startOrRelease(rt, async () => {
          const t = new TunnelServer({
            ...rt.common,
            listen,
            forward,
            ...(o.allow ? { allow: o.allow } : {}),
            ...(policy ? { policy } : {}),
            namespace: o.namespace,
          });
          await run(t, rt, { role: "server", forward: o.forward, policy: o.policy, allow: o.allow });
        });
      },
    );
}
