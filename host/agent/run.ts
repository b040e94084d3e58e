/**
 * The `qhx agent` process: the Agent, the SPIFFE Workload API + Envoy SDS on a Unix socket (callers
 * identified by SO_PEERCRED), and a health/metrics listener. SIGTERM stops streams, listeners, then sync.
 */
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { parsePemBundle, parseSpiffeBundle } from "../core/bundle.ts";
import type { Clock } from "../core/clock.ts";
import { QhxError } from "../core/errors.ts";
import { mlDsaEngineName } from "../core/alg.ts";
import { configurePq } from "../crypto/index.ts";
import { parseCertificate } from "../core/x509.ts";
import type { Logger } from "../server/logger.ts";
import { Agent } from "./agent.ts";
import { nodeAttestorClient } from "./attestors/index.ts";
import type { AgentConfig } from "./config.ts";
import { assertPeerCredAvailable, peerCredOf } from "./peercred.ts";
import { agentFilterSource, FilterConfigKeeper } from "./filter-config.ts";
import type { FilterOptions } from "../filter/config.ts";
import { createWorkloadApiServer } from "./workload-api/server.ts";
import { workloadAttestors } from "./workload/index.ts";

export interface RunningAgent {
  agent: Agent;
  socketPath: string;
  healthAddress: AddressInfo;
  close(): Promise<void>;
}

/** Read the bootstrap bundle (PEM or SPIFFE JSON) and the trust domain it belongs to. */
export function loadBootstrap(
  file: string,
  trustDomain: string | undefined,
): { roots: Uint8Array[]; trustDomain: string } {
  const text = fs.readFileSync(file, "utf8");
  const isJson = text.trimStart().startsWith("{");
  let roots: Uint8Array[];
  if (isJson) {
    roots = parseSpiffeBundle(text, trustDomain ?? "bootstrap").x509Authorities;
  } else {
    roots = parsePemBundle(text, trustDomain ?? "bootstrap").x509Authorities;
  }
  if (roots.length === 0)
    throw new QhxError("QHX_INVALID_CONFIG", `trust bundle ${file} has no X.509 authority`);
  let td = trustDomain;
  if (!td) {
    const uri = parseCertificate(roots[0]!).uriSans.find((u) => u.startsWith("spiffe://"));
    td = uri ? new URL(uri).host : undefined;
    if (!td) {
      throw new QhxError("QHX_INVALID_CONFIG", "cannot tell the trust domain from the bundle", {
        hint: "give --trust-domain",
      });
    }
  }
  return { roots, trustDomain: td };
}

export async function startAgent(
  cfg: AgentConfig,
  opts: { clock: Clock; logger: Logger },
): Promise<RunningAgent> {
  const log = opts.logger;
  configurePq({ backend: cfg.pqBackend });
  assertPeerCredAvailable();
  let roots: Uint8Array[] = [];
  let trustDomain = cfg.trustDomain;
  if (cfg.trustBundleFile) {
    const b = loadBootstrap(cfg.trustBundleFile, cfg.trustDomain);
    roots = b.roots;
    trustDomain = b.trustDomain;
  }
  if (!trustDomain)
    throw new QhxError("QHX_INVALID_CONFIG", "trust_domain is required with insecure bootstrap");
  const agent = new Agent({
    trustDomain,
    server: cfg.server,
    bootstrapRoots: roots,
    insecureBootstrap: cfg.insecureBootstrap,
    dataDir: cfg.dataDir,
    attestor: nodeAttestorClient({
      ...(cfg.joinToken ? { joinToken: cfg.joinToken } : {}),
      ...(cfg.x509pop ? { x509pop: cfg.x509pop } : {}),
      ...(cfg.tpm ? { tpm: cfg.tpm } : {}),
    }),
    workloadAttestors: workloadAttestors(
      { unix: cfg.unix === false ? false : { ...cfg.unix } },
      { logger: log },
    ),
    workloadKeyType: cfg.workloadKeyType,
    syncIntervalMs: cfg.syncIntervalMs,
    clock: opts.clock,
    logger: log,
  });
  const needsAttestor = !fs.existsSync(path.join(cfg.dataDir, "agent", "state.json"));
  if (needsAttestor && !cfg.joinToken && !cfg.x509pop && !cfg.tpm) {
    throw new QhxError(
      "QHX_INVALID_CONFIG",
      "this agent has not attested yet and has no node attestor configured",
      {
        hint: "give --join-token TOKEN (qhx token generate), --x509pop-cert/--x509pop-key, or --tpm-tcti",
      },
    );
  }
  await agent.start();

  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "qhx_agent_process_" });
  new Gauge({
    name: "qhx_agent_cached_svids",
    help: "X509-SVIDs the agent holds for workloads",
    registers: [registry],
    collect() {
      this.set(agent.cachedSvids().length);
    },
  });
  const calls = new Counter({
    name: "qhx_agent_workload_connections_total",
    help: "Workload API connections",
    registers: [registry],
  });

  const api = createWorkloadApiServer({
    provider: agent,
    peerOf: (socket) => {
      calls.inc();
      return peerCredOf(socket);
    },
    logger: log,
    clock: opts.clock,
  });
  fs.mkdirSync(path.dirname(cfg.socketPath), { recursive: true, mode: 0o755 });
  await api.listen(cfg.socketPath);

  const health = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://agent");
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(`${JSON.stringify(body)}\n`);
    };
    if (url.pathname === "/healthz") {
      return json(200, {
        status: "ok",
        agent_id: agent.id,
        policy_version: agent.policy?.version?.version ?? null,
      });
    }
    if (url.pathname === "/readyz") {
      const fresh = opts.clock.now().getTime() - agent.lastSyncOk < Math.max(60_000, cfg.syncIntervalMs * 6);
      return json(fresh ? 200 : 503, {
        status: fresh ? "ready" : "server unreachable",
        last_sync: agent.lastSyncOk,
      });
    }
    if (url.pathname === "/metrics") {
      registry.metrics().then((t) => {
        res.writeHead(200, { "content-type": registry.contentType });
        res.end(t);
      });
      return;
    }
    json(404, { error: { code: "QHX_NOT_FOUND", message: url.pathname } });
  });
  await new Promise<void>((resolve, reject) => {
    health.once("error", (e: NodeJS.ErrnoException) =>
      reject(
        new QhxError(
          "QHX_LISTEN_FAILED",
          `cannot listen on ${cfg.healthListen.host}:${cfg.healthListen.port}: ${e.code}`,
        ),
      ),
    );
    health.listen(cfg.healthListen.port, cfg.healthListen.host, () => resolve());
  });
  const healthAddress = health.address() as AddressInfo;
  log.info(
    {
      agentId: agent.id,
      assurance: agent.assuranceLevel,
      socket: cfg.socketPath,
      healthListen: `${healthAddress.address}:${healthAddress.port}`,
      server: `${cfg.server.host}:${cfg.server.port}`,
      mlDsa: mlDsaEngineName(),
    },
    "agent started",
  );
  let filterKeeper: FilterConfigKeeper | undefined;
  if (cfg.filterConfig) {
    const fc = cfg.filterConfig;
    filterKeeper = new FilterConfigKeeper(
      agentFilterSource(agent, { ...cfg.server, trustDomain, dataDir: cfg.dataDir }),
      {
        path: fc.path,
        format: fc.format,
        ...(fc.options ? { options: fc.options as FilterOptions } : {}),
        ...(fc.wasmFile ? { wasmFile: fc.wasmFile } : {}),
        logger: log,
      },
    );
    await filterKeeper.start();
  }
  let closing: Promise<void> | undefined;
  return {
    agent,
    socketPath: cfg.socketPath,
    healthAddress,
    close: () =>
      (closing ??= (async () => {
        filterKeeper?.stop();
        await api.close();
        await new Promise<void>((r) => {
          health.close(() => r());
          health.closeAllConnections();
        });
        await agent.stop();
        log.info("agent stopped");
      })()),
  };
}
