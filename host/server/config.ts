/**
 * Server configuration: a YAML (or JSON) file validated by a schema, with every essential setting also
 * available as a flag. Flags override the file; every option has a safe default.
 */
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { z } from "zod";
import { SVID_KEY_ALGS, type SvidKeyAlg } from "../core/alg.ts";
import { parseDuration } from "../core/clock.ts";
import { QhxError, ValidationError } from "../core/errors.ts";
import { checkSpiffeId, parseTrustDomain } from "../core/spiffeid.ts";
import type { NodeAttestorsConfig } from "./attestation/index.ts";

/** A duration (`90s`, `1h30m`, seconds as a number) in ms; shared by the server and agent schemas. */
export const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch (e) {
    ctx.addIssue({ code: "custom", message: (e as Error).message });
    return z.NEVER;
  }
});

const trustDomain = z.string().transform((v, ctx) => {
  const code = checkSpiffeId(v.startsWith("spiffe://") ? v : `spiffe://${v}`);
  if (code !== "OK" || v.replace(/^spiffe:\/\//, "").includes("/")) {
    ctx.addIssue({
      code: "custom",
      message: `invalid trust domain "${v}" (${code === "OK" ? "has a path" : code})`,
    });
    return z.NEVER;
  }
  return parseTrustDomain(v);
});

export const listenAddr = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "expected HOST:PORT, e.g. 127.0.0.1:8081");

/** `federation`: this server's SPIFFE bundle endpoint and how foreign bundles are refreshed. */
const federationConfigSchema = z
  .object({
    bundle_endpoint: z
      .object({
        listen: listenAddr,
        /** URL path the bundle is served at */
        path: z
          .string()
          .regex(/^\/[\x21-\x7e]*$/, "expected an absolute URL path, e.g. /")
          .default("/"),
        profile: z.enum(["https_web", "https_spiffe"]).default("https_spiffe"),
        /** https_spiffe: the endpoint's SPIFFE ID (default spiffe://<td>/qhx/server) */
        spiffe_id: z.string().startsWith("spiffe://").optional(),
        /** https_web: the serving certificate chain (PEM, leaf first) and its PKCS#8 key */
        cert_file: z.string().min(1).optional(),
        key_file: z.string().min(1).optional(),
      })
      .strict()
      .refine((e) => e.profile !== "https_web" || (e.cert_file && e.key_file), {
        message: "profile https_web needs cert_file and key_file",
      })
      .refine((e) => e.profile !== "https_spiffe" || (!e.cert_file && !e.key_file), {
        message:
          "cert_file/key_file are for https_web; https_spiffe serves with an SVID of this trust domain",
      })
      .optional(),
    refresh: z
      .object({
        /** when a foreign bundle has no spiffe_refresh_hint */
        default_interval: duration.default(parseDuration("5m")),
        /** bounds applied to the refresh hint */
        min_interval: duration.default(parseDuration("5s")),
        max_interval: duration.default(parseDuration("1d")),
        /** first retry after a failure, doubled (with jitter) up to backoff_max */
        backoff_initial: duration.default(parseDuration("1s")),
        backoff_max: duration.default(parseDuration("5m")),
        /** how often the refresher looks for due relationships */
        check_interval: duration.default(parseDuration("1s")),
      })
      .strict()
      .refine((r) => r.min_interval <= r.max_interval, { message: "min_interval exceeds max_interval" })
      .default({
        default_interval: parseDuration("5m"),
        min_interval: parseDuration("5s"),
        max_interval: parseDuration("1d"),
        backoff_initial: parseDuration("1s"),
        backoff_max: parseDuration("5m"),
        check_interval: parseDuration("1s"),
      }),
  })
  .strict();

/** The parsed `federation` section (ms durations). */
export interface FederationConfig {
  bundleEndpoint?: {
    listen: { host: string; port: number };
    path: string;
    profile: "https_web" | "https_spiffe";
    spiffeId: string;
    certFile?: string;
    keyFile?: string;
  };
  refresh: {
    defaultIntervalMs: number;
    minIntervalMs: number;
    maxIntervalMs: number;
    backoffInitialMs: number;
    backoffMaxMs: number;
    checkIntervalMs: number;
  };
}

export const DEFAULT_FEDERATION_REFRESH: FederationConfig["refresh"] = {
  defaultIntervalMs: parseDuration("5m"),
  minIntervalMs: parseDuration("5s"),
  maxIntervalMs: parseDuration("1d"),
  backoffInitialMs: parseDuration("1s"),
  backoffMaxMs: parseDuration("5m"),
  checkIntervalMs: parseDuration("1s"),
};

/**
 * `datastore`: where the server keeps its state. `sqlite` (default): datastore.sqlite3 in data_dir.
 * `postgres`: a PostgreSQL database shared by several servers of the trust domain.
 */
const datastoreConfigSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("sqlite") }).strict(),
  z
    .object({
      kind: z.literal("postgres"),
      /** postgres://user[:password]@host[:port]/database[?sslmode=…]; the password is never logged */
      connection_string: z
        .string()
        .regex(/^postgres(ql)?:\/\/\S+$/i, "expected a postgres:// URL, e.g. postgres://qhx@db.internal/qhx"),
      /** most connections this server opens */
      max_connections: z.number().int().min(1).max(1000).optional(),
    })
    .strict(),
]);

/** The parsed `datastore` section. */
export type ServerDatastoreConfig =
  { kind: "sqlite" } | { kind: "postgres"; connectionString: string; maxConnections?: number };

export const serverConfigSchema = z
  .object({
    trust_domain: trustDomain,
    data_dir: z.string().min(1),
    listen: listenAddr.default("127.0.0.1:8081"),
    health_listen: listenAddr.default("127.0.0.1:8080"),
    admin_socket: z.string().min(1).optional(),
    log_level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
    ca: z
      .object({
        key_type: z.enum(SVID_KEY_ALGS).default("ec-p256"),
        ttl: duration.default(parseDuration("7d")),
        subject: z
          .object({
            common_name: z.string().min(1).max(64).optional(),
            organization: z.string().min(1).max(64).optional(),
            country: z.string().length(2).optional(),
          })
          .strict()
          .default({}),
        upstream: z
          .object({
            cert_file: z.string().min(1),
            key_file: z.string().min(1),
            bundle_file: z.string().min(1).optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .default({ key_type: "ec-p256", ttl: parseDuration("7d"), subject: {} }),
    jwt: z
      .object({
        key_type: z
          .enum(["ec-p256", "ec-p384", "rsa-2048", "ml-dsa-44", "ml-dsa-65", "ml-dsa-87"])
          .default("ec-p256"),
      })
      .strict()
      .default({ key_type: "ec-p256" }),
    default_x509_svid_ttl: duration.default(parseDuration("1h")),
    default_jwt_svid_ttl: duration.default(parseDuration("5m")),
    key_manager: z.enum(["disk", "memory"]).default("disk"),
    rotation_check_interval: duration.default(parseDuration("10s")),
    agent_svid_ttl: duration.default(parseDuration("1h")),
    node_attestors: z
      .object({
        x509pop: z
          .object({ ca_bundle_file: z.string().min(1) })
          .strict()
          .optional(),
        tpm: z
          .object({
            ek_ca_bundle_file: z.string().min(1).optional(),
            ek_public_key_hashes: z
              .array(z.string().regex(/^[0-9a-f]{64}$/, "expected sha256 hex"))
              .optional(),
            pcrs: z.array(z.number().int().min(0).max(23)).min(1).optional(),
          })
          .strict()
          .refine((t) => t.ek_ca_bundle_file || t.ek_public_key_hashes?.length, {
            message: "give ek_ca_bundle_file and/or ek_public_key_hashes",
          })
          .optional(),
      })
      .strict()
      .default({}),
    bundle_refresh_hint: duration.default(parseDuration("5m")),
    federation: federationConfigSchema.optional(),
    datastore: datastoreConfigSchema.optional(),
    /** who computes ML-DSA/ML-KEM: node:crypto (OpenSSL) or QHx's Wasm kernels; QHX_PQ_BACKEND if unset */
    pq_backend: z.enum(["native", "wasm"]).optional(),
  })
  .strict();

export type ServerConfigInput = z.input<typeof serverConfigSchema>;

export interface ServerConfig {
  trustDomain: string;
  dataDir: string;
  /** agent API (TLS) */
  listen: { host: string; port: number };
  /** health, readiness, metrics, bundle (plain HTTP) */
  healthListen: { host: string; port: number };
  adminSocket: string;
  agentSvidTtlMs: number;
  nodeAttestors: NodeAttestorsConfig;
  logLevel: string;
  ca: {
    keyType: SvidKeyAlg;
    ttlMs: number;
    subject: { commonName?: string; organization?: string; country?: string };
    upstream?: { certFile: string; keyFile: string; bundleFile?: string };
  };
  jwtKeyType: "ec-p256" | "ec-p384" | "rsa-2048" | "ml-dsa-44" | "ml-dsa-65" | "ml-dsa-87";
  defaultX509SvidTtlMs: number;
  defaultJwtSvidTtlMs: number;
  keyManager: "disk" | "memory";
  rotationCheckIntervalMs: number;
  bundleRefreshHintS: number;
  /** SPIFFE federation: the bundle endpoint (if served) and refresh settings */
  federation: FederationConfig;
  /** ML-DSA/ML-KEM backend (undefined: QHX_PQ_BACKEND, else native) */
  pqBackend: "native" | "wasm" | undefined;
  /** the datastore (absent: SQLite in dataDir) */
  datastore?: ServerDatastoreConfig;
}

/** Turn zod issues into one precise message: `ca.ttl: invalid duration "x" …; listen: expected HOST:PORT`. */
function describeIssues(err: z.ZodError, source: string): QhxError {
  const parts = err.issues.map((i) => {
    const where = i.path.join(".") || "(top level)";
    if (i.code === "unrecognized_keys")
      return `${where === "(top level)" ? "" : `${where}: `}unknown key(s) ${i.keys.join(", ")}`;
    return `${where}: ${i.message}`;
  });
  return new QhxError("QHX_INVALID_CONFIG", `${source}: ${parts.join("; ")}`, {
    hint: "see `qhx server start --help` and docs/configuration.md",
  });
}

export function parseServerConfig(raw: unknown, source = "config"): ServerConfig {
  const r = serverConfigSchema.safeParse(raw);
  if (!r.success) throw describeIssues(r.error, source);
  const c = r.data;
  const [host, port] = splitHostPort(c.listen);
  const [hhost, hport] = splitHostPort(c.health_listen);
  const dataDir = path.resolve(c.data_dir);
  return {
    trustDomain: c.trust_domain,
    dataDir,
    listen: { host, port },
    healthListen: { host: hhost, port: hport },
    agentSvidTtlMs: c.agent_svid_ttl,
    nodeAttestors: {
      ...(c.node_attestors.x509pop
        ? { x509pop: { caBundleFile: path.resolve(c.node_attestors.x509pop.ca_bundle_file) } }
        : {}),
      ...(c.node_attestors.tpm
        ? {
            tpm: {
              ...(c.node_attestors.tpm.ek_ca_bundle_file
                ? { ekCaBundleFile: path.resolve(c.node_attestors.tpm.ek_ca_bundle_file) }
                : {}),
              ...(c.node_attestors.tpm.ek_public_key_hashes
                ? { ekPublicKeyHashes: c.node_attestors.tpm.ek_public_key_hashes }
                : {}),
              ...(c.node_attestors.tpm.pcrs ? { pcrs: c.node_attestors.tpm.pcrs } : {}),
            },
          }
        : {}),
    },
    adminSocket: path.resolve(c.admin_socket ?? path.join(dataDir, "admin.sock")),
    logLevel: c.log_level,
    ca: {
      keyType: c.ca.key_type,
      ttlMs: c.ca.ttl,
      subject: {
        ...(c.ca.subject.common_name ? { commonName: c.ca.subject.common_name } : {}),
        ...(c.ca.subject.organization ? { organization: c.ca.subject.organization } : {}),
        ...(c.ca.subject.country ? { country: c.ca.subject.country } : {}),
      },
      ...(c.ca.upstream
        ? {
            upstream: {
              certFile: c.ca.upstream.cert_file,
              keyFile: c.ca.upstream.key_file,
              ...(c.ca.upstream.bundle_file ? { bundleFile: c.ca.upstream.bundle_file } : {}),
            },
          }
        : {}),
    },
    jwtKeyType: c.jwt.key_type,
    defaultX509SvidTtlMs: c.default_x509_svid_ttl,
    defaultJwtSvidTtlMs: c.default_jwt_svid_ttl,
    keyManager: c.key_manager,
    rotationCheckIntervalMs: c.rotation_check_interval,
    bundleRefreshHintS: Math.round(c.bundle_refresh_hint / 1000),
    federation: federationConfigOf(c.federation, c.trust_domain),
    pqBackend: c.pq_backend,
    datastore:
      c.datastore?.kind === "postgres"
        ? {
            kind: "postgres",
            connectionString: c.datastore.connection_string,
            ...(c.datastore.max_connections ? { maxConnections: c.datastore.max_connections } : {}),
          }
        : { kind: "sqlite" },
  };
}

function federationConfigOf(
  f: z.output<typeof federationConfigSchema> | undefined,
  td: string,
): FederationConfig {
  if (!f) return { refresh: { ...DEFAULT_FEDERATION_REFRESH } };
  const r = f.refresh;
  const e = f.bundle_endpoint;
  let endpoint: FederationConfig["bundleEndpoint"];
  if (e) {
    const [host, port] = splitHostPort(e.listen);
    const spiffeId = e.spiffe_id ?? `spiffe://${td}/qhx/server`;
    const code = checkSpiffeId(spiffeId);
    if (code !== "OK") {
      throw new QhxError(
        "QHX_INVALID_CONFIG",
        `federation.bundle_endpoint.spiffe_id: ${spiffeId} is invalid (${code})`,
      );
    }
    if (!spiffeId.startsWith(`spiffe://${td}/`)) {
      throw new QhxError(
        "QHX_INVALID_CONFIG",
        `federation.bundle_endpoint.spiffe_id: ${spiffeId} is not in trust domain ${td}`,
      );
    }
    endpoint = {
      listen: { host, port },
      path: e.path,
      profile: e.profile,
      spiffeId,
      ...(e.cert_file ? { certFile: path.resolve(e.cert_file) } : {}),
      ...(e.key_file ? { keyFile: path.resolve(e.key_file) } : {}),
    };
  }
  return {
    ...(endpoint ? { bundleEndpoint: endpoint } : {}),
    refresh: {
      defaultIntervalMs: r.default_interval,
      minIntervalMs: r.min_interval,
      maxIntervalMs: r.max_interval,
      backoffInitialMs: r.backoff_initial,
      backoffMaxMs: r.backoff_max,
      checkIntervalMs: r.check_interval,
    },
  };
}

export function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(":");
  const host = s.slice(0, i).replace(/^\[|\]$/g, "");
  const port = Number(s.slice(i + 1));
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new ValidationError(`invalid port in ${s}`, "listen");
  return [host, port];
}

/** Read a config file (YAML or JSON). Missing or unreadable files and syntax errors get precise messages. */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new QhxError(
      "QHX_INVALID_CONFIG",
      `cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code}`,
    );
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text, { prettyErrors: true, uniqueKeys: true });
  } catch (e) {
    throw new QhxError("QHX_INVALID_CONFIG", `${file}: ${(e as Error).message.split("\n")[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== "object" || Array.isArray(doc)) {
    throw new QhxError("QHX_INVALID_CONFIG", `${file}: expected a mapping of settings at the top level`);
  }
  return doc as Record<string, unknown>;
}

/** Flags in snake_case config form, already set only where the user gave them. */
export function mergeConfig(
  file: Record<string, unknown>,
  flags: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...file };
  for (const [k, v] of Object.entries(flags)) {
    if (v === undefined) continue;
    if (k.includes(".")) {
      const [a, b] = k.split(".") as [string, string];
      out[a] = { ...((out[a] as Record<string, unknown>) ?? {}), [b]: v };
    } else out[k] = v;
  }
  return out;
}
