/**
 * An in-process control plane for tests that go through the real issuance path: a QHx server on
 * 127.0.0.1 (agent API over TLS 1.3, admin API called in-process) and real agents attested by join token,
 * their workloads attested by the unix attestor. Everything a fixture starts is closed by `close()`
 * (call it from afterEach), newest first.
 */
import path from "node:path";
import { Agent } from "../../host/agent/agent.ts";
import { JoinTokenClient } from "../../host/agent/attestors/index.ts";
import { UnixAttestor } from "../../host/agent/workload/unix.ts";
import { systemClock } from "../../host/core/clock.ts";
import { QhxError } from "../../host/core/errors.ts";
import { handleAdmin } from "../../host/server/admin-api.ts";
import { parseServerConfig } from "../../host/server/config.ts";
import { silentLogger } from "../../host/server/logger.ts";
import { type RunningServer, startServer } from "../../host/server/server.ts";
import { tmpDir } from "./cli.ts";

export interface ControlPlane {
  /** A server for the trust domain (fresh data directory); `extra` is merged into its config. */
  server(extra?: Record<string, unknown>): Promise<RunningServer>;
  /** An admin API call, in-process; an error answer throws a QhxError with its code. */
  admin(s: RunningServer, method: string, p: string, body?: unknown): Promise<Record<string, unknown>>;
  /** An agent attested with a new join token for `alias`, started (its first sync done). */
  agent(s: RunningServer, alias: string): Promise<{ agent: Agent; dir: string }>;
  /** Something else to close with the rest. */
  track(c: { close(): Promise<void> }): void;
  close(): Promise<void>;
}

export function controlPlane(trustDomain: string): ControlPlane {
  const running: { close(): Promise<void> }[] = [];
  const admin: ControlPlane["admin"] = async (s, method, p, body) => {
    const url = new URL(p, "http://x");
    const r = await handleAdmin(s.core, { method, path: url.pathname, query: url.searchParams, body });
    if (r.status >= 400) {
      const e = (r.body as { error: { code: string; message: string } }).error;
      throw new QhxError(e.code, e.message);
    }
    return r.body as Record<string, unknown>;
  };
  return {
    async server(extra = {}) {
      const cfg = parseServerConfig({
        trust_domain: trustDomain,
        data_dir: path.join(tmpDir(), "server"),
        listen: "127.0.0.1:0",
        health_listen: "127.0.0.1:0",
        log_level: "silent",
        default_x509_svid_ttl: "1h",
        ...extra,
      });
      const s = await startServer(cfg, { clock: systemClock, logger: silentLogger });
      running.push(s);
      return s;
    },
    admin,
    async agent(s, alias) {
      const { token } = (await admin(s, "POST", "/v1/join-tokens", { spiffe_id: alias })) as {
        token: string;
      };
      const dir = tmpDir();
      const a = new Agent({
        trustDomain,
        server: { host: "127.0.0.1", port: s.address.port },
        bootstrapRoots: s.core.ca.trustBundle().x509Authorities,
        insecureBootstrap: false,
        dataDir: dir,
        attestor: new JoinTokenClient(token),
        workloadAttestors: [new UnixAttestor({ hashMaxBytes: 0 })],
        workloadKeyType: "ec-p256",
        syncIntervalMs: 3_600_000,
        clock: systemClock,
        logger: silentLogger,
      });
      running.push({ close: () => a.stop() });
      await a.start();
      return { agent: a, dir };
    },
    track(c) {
      running.push(c);
    },
    async close() {
      for (const r of running.splice(0).reverse()) await r.close();
    },
  };
}
