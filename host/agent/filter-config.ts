/**
 * The qhx_authz filter configuration, kept current by the agent.
 *
 * `buildFilterConfiguration` turns a signed policy version, trust bundles, the workload directory and the
 * filter options into the filter's plugin configuration string (host/filter/config.ts encodes it), and
 * `renderFilterDocument` wraps it for its consumer: `raw` (the string, for QHx's own proxy-wasm host),
 * `ecds` (an Envoy filesystem DiscoveryResponse for `config_discovery`: Envoy reconfigures the filter,
 * proxy_on_configure, without a restart), `envoy` (an `http_filters` entry) or `istio` (a WasmPlugin).
 *
 * `FilterConfigKeeper` rewrites the file whenever the agent's policy version or bundles change: only
 * when its content changes, atomically (temporary file + rename), so Envoy's file watch never sees a
 * partial file. A policy the filter cannot run (evaluated by cedar-wasm) or a failing encode leaves the
 * previous file in place and is logged.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { QhxError, formatError } from "../core/errors.ts";
import type { TrustBundle } from "../core/bundle-types.ts";
import { encodeFilterConfig, type FilterDirectoryEntry, type FilterOptions } from "../filter/config.ts";
import type { PolicyVersion } from "../policy/signed.ts";
import { verifyPolicyVersion } from "../policy/signed.ts";
import { writeFileAtomic } from "../server/keymanager/disk.ts";
import type { Logger } from "../server/logger.ts";
import {
  type FilterDeployment,
  formatDocument,
  renderEnvoyEcds,
  renderEnvoyHttpFilter,
  renderIstioWasmPlugin,
  wasmFileInfo,
} from "../wasm/proxy-wasm/deploy.ts";
import type { Agent } from "./agent.ts";
import { ServerClient } from "./server-client.ts";

export const FILTER_DOCUMENT_FORMATS = ["raw", "ecds", "envoy", "istio"] as const;
export type FilterDocumentFormat = (typeof FILTER_DOCUMENT_FORMATS)[number];

export interface FilterConfigInputs {
  policy: PolicyVersion;
  bundles: TrustBundle[];
  directory?: FilterDirectoryEntry[];
  options?: FilterOptions;
}

/** The filter's plugin configuration string: one call to the filter's encoder. */
export function buildFilterConfiguration(i: FilterConfigInputs): string {
  return encodeFilterConfig({
    policy: { engine: i.policy.engine, program: i.policy.program, unsupported: i.policy.unsupported },
    bundles: i.bundles,
    ...(i.directory ? { directory: i.directory } : {}),
    ...(i.options ? { options: i.options } : {}),
  });
}

export interface RenderOptions {
  format: FilterDocumentFormat;
  output?: "yaml" | "json";
  /** The filter module (default build/filters/qhx_authz.wasm of this installation). */
  wasmFile?: string;
  name?: string;
  rootId?: string;
  vmId?: string;
  remote?: FilterDeployment["remote"];
  istio?: { name?: string; namespace?: string; matchLabels?: Record<string, string>; url?: string };
  /** Stamped into comments and the ECDS version_info. */
  policyVersion?: number;
  policyDigest?: string;
}

/** build/filters/qhx_authz.wasm of this installation (from source or from dist/). */
export function defaultFilterWasm(): string {
  for (const rel of ["../../build/filters/qhx_authz.wasm", "../../../build/filters/qhx_authz.wasm"]) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (fs.existsSync(p)) return p;
  }
  return fileURLToPath(new URL("../../build/filters/qhx_authz.wasm", import.meta.url));
}

/** The document for `format` around `configuration` (validated against its schema). */
export function renderFilterDocument(configuration: string, o: RenderOptions): string {
  if (o.format === "raw") return configuration.endsWith("\n") ? configuration : `${configuration}\n`;
  const wasm = wasmFileInfo(o.wasmFile ?? defaultFilterWasm());
  const d: FilterDeployment = {
    wasmPath: wasm.wasmPath,
    sha256: wasm.sha256,
    configuration,
    ...(o.name ? { name: o.name } : {}),
    ...(o.rootId ? { rootId: o.rootId } : {}),
    ...(o.vmId ? { vmId: o.vmId } : {}),
    ...(o.remote ? { remote: o.remote } : {}),
  };
  const policy =
    o.policyVersion !== undefined ? `policy version ${o.policyVersion} (${o.policyDigest ?? "?"})` : "";
  const code = `${o.remote ? o.remote.url : wasm.wasmPath} sha256 ${wasm.sha256}`;
  const output = o.output ?? "yaml";
  switch (o.format) {
    case "envoy":
      // a one-item list: paste it into the HttpConnectionManager's http_filters, before envoy.filters.http.router
      return formatDocument(
        [renderEnvoyHttpFilter(d)],
        output,
        `qhx_authz: an http_filters entry (place it before envoy.filters.http.router)\n${code}\n${policy}`.trim(),
      );
    case "ecds":
      return formatDocument(
        renderEnvoyEcds(
          d,
          `${o.policyVersion ?? 0}-${(o.policyDigest ?? "").slice(0, 12)}-${wasm.sha256.slice(0, 12)}`,
        ),
        output,
        `qhx_authz ECDS resource for config_discovery (path_config_source)\n${code}\n${policy}`.trim(),
      );
    case "istio":
      return formatDocument(renderIstioWasmPlugin(d, o.istio ?? {}), output, `qhx_authz\n${policy}`.trim());
  }
}

/** Write `content` to `file` atomically when it differs from what is there; true when written. */
export function writeIfChanged(file: string, content: string, mode = 0o644): boolean {
  let current: string | undefined;
  try {
    current = fs.readFileSync(file, "utf8");
  } catch {
    current = undefined;
  }
  if (current === content) return false;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeFileAtomic(file, content, mode);
  return true;
}

/** Where the keeper gets the policy version and bundles from. */
export interface FilterConfigSource {
  /** The verified policy version in force (undefined before the first one). */
  policy(): Promise<PolicyVersion | undefined>;
  bundles(): TrustBundle[];
  onChange(listener: () => void): () => void;
}

export interface FilterConfigKeeperOptions {
  path: string;
  format: FilterDocumentFormat;
  output?: "yaml" | "json";
  options?: FilterOptions;
  wasmFile?: string;
  logger: Pick<Logger, "info" | "warn" | "error">;
  /** Called after each refresh attempt (tests await it instead of sleeping). */
  onRefresh?: (r: { written: boolean; error?: unknown }) => void;
}

export class FilterConfigKeeper {
  private readonly o: FilterConfigKeeperOptions;
  private readonly source: FilterConfigSource;
  private queue: Promise<void> = Promise.resolve();
  private pending = false;
  private unsubscribe: (() => void) | undefined;
  private stopped = false;
  /** Times the file was (re)written. */
  writes = 0;

  constructor(source: FilterConfigSource, o: FilterConfigKeeperOptions) {
    this.source = source;
    this.o = o;
  }

  /** Write the file now (if there is a policy) and on every later change. */
  start(): Promise<void> {
    this.unsubscribe = this.source.onChange(() => void this.refresh());
    return this.refresh();
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
  }

  /** Coalesced: at most one refresh runs, and one more is queued behind it. */
  refresh(): Promise<void> {
    if (this.pending) return this.queue;
    this.pending = true;
    this.queue = this.queue.then(async () => {
      this.pending = false;
      if (this.stopped) return;
      let written: boolean;
      try {
        written = await this.refreshOnce();
      } catch (e) {
        this.o.logger.error(
          { path: this.o.path, reason: formatError(e) },
          "filter configuration not updated; the previous one stays in force",
        );
        this.o.onRefresh?.({ written: false, error: e });
        return;
      }
      this.o.onRefresh?.({ written });
    });
    return this.queue;
  }

  private async refreshOnce(): Promise<boolean> {
    const policy = await this.source.policy();
    if (!policy) return false; // nothing to enforce yet: Envoy keeps failing closed on the missing config
    const bundles = this.source.bundles();
    if (bundles.length === 0) throw new QhxError("QHX_FILTER_NO_BUNDLE", "no trust bundle yet");
    const configuration = buildFilterConfiguration({
      policy,
      bundles,
      ...(this.o.options ? { options: this.o.options } : {}),
    });
    const doc = renderFilterDocument(configuration, {
      format: this.o.format,
      ...(this.o.output ? { output: this.o.output } : {}),
      ...(this.o.wasmFile ? { wasmFile: this.o.wasmFile } : {}),
      policyVersion: policy.version,
      policyDigest: policy.digest,
    });
    const written = writeIfChanged(this.o.path, doc);
    if (written) {
      this.writes++;
      this.o.logger.info(
        { path: this.o.path, policyVersion: policy.version, trustDomains: bundles.map((b) => b.trustDomain) },
        "filter configuration written",
      );
    }
    return written;
  }
}

/**
 * The agent as a FilterConfigSource: its bundle, and the signed policy version it has installed. The
 * agent keeps only the compiled set, so the document is fetched again over the agent's own mTLS
 * identity (`GET /agent/v1/policy`), verified with the server's policy key, and used only when its
 * digest is the one the agent installed (never a version the agent refused).
 */
export function agentFilterSource(
  agent: Agent,
  conn: { host: string; port: number; trustDomain: string; dataDir: string },
): FilterConfigSource {
  let cached: PolicyVersion | undefined;
  return {
    bundles: () => {
      const b = agent.trustBundle();
      return b ? [b] : [];
    },
    onChange: (l) => agent.onChange(l),
    async policy() {
      const installed = agent.policy?.version;
      if (!installed) return undefined;
      if (cached?.digest === installed.digest) return cached;
      const dir = path.join(conn.dataDir, "agent");
      const bundle = agent.trustBundle();
      const client = new ServerClient({
        host: conn.host,
        port: conn.port,
        trustDomain: conn.trustDomain,
        roots: bundle?.x509Authorities ?? [],
        clientCert: {
          cert: fs.readFileSync(path.join(dir, "svid.pem"), "utf8"),
          key: fs.readFileSync(path.join(dir, "svid.key"), "utf8"),
        },
      });
      try {
        const r = await client.call<{ public_key: string; version: PolicyVersion | null }>(
          "GET",
          "/agent/v1/policy",
        );
        const v = r.version;
        if (!v || !verifyPolicyVersion(v, r.public_key)) {
          throw new QhxError("QHX_POLICY_TAMPERED", "policy version fails signature verification");
        }
        // the server may have moved on since the agent installed its version: use it only when it is the
        // agent's (the next change event brings the newer one once the agent has installed it)
        if (v.digest !== agent.policy?.version?.digest) return cached;
        cached = v;
        return v;
      } finally {
        client.close();
      }
    },
  };
}
