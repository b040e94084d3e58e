/** Agent configuration: agent.yaml validated by a schema, every essential setting also a flag. */
import path from "node:path";
import { z } from "zod";
import { SVID_KEY_ALGS, type SvidKeyAlg } from "../core/alg.ts";
import { parseDuration } from "../core/clock.ts";
import { QhxError } from "../core/errors.ts";
import { checkSpiffeId, parseTrustDomain } from "../core/spiffeid.ts";
import { duration, listenAddr, splitHostPort } from "../server/config.ts";
import type { TpmClientOptions } from "./attestors/tpm.ts";

const hostPort = listenAddr;

export const agentConfigSchema = z
  .object({
    trust_domain: z
      .string()
      .refine(
        (v) => checkSpiffeId(v.startsWith("spiffe://") ? v : `spiffe://${v}`) === "OK",
        "invalid trust domain",
      )
      .optional(),
    server_address: hostPort,
    trust_bundle_file: z.string().min(1).optional(),
    insecure_bootstrap: z.boolean().default(false),
    join_token: z.string().min(16).optional(),
    x509pop: z
      .object({ cert_file: z.string().min(1), key_file: z.string().min(1) })
      .strict()
      .optional(),
    tpm: z
      .object({
        tcti: z.string().min(1).optional(),
        ek_alg: z.enum(["rsa", "ecc"]).optional(),
        ak_alg: z.enum(["rsa", "ecc"]).optional(),
        ek_cert_file: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
    data_dir: z.string().min(1),
    socket_path: z.string().min(1).optional(),
    health_listen: hostPort.default("127.0.0.1:8082"),
    log_level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
    sync_interval: duration.default(parseDuration("5s")),
    workload_key_type: z.enum(SVID_KEY_ALGS).default("ec-p256"),
    /** who computes ML-DSA/ML-KEM: node:crypto (OpenSSL) or QHx's Wasm kernels; QHX_PQ_BACKEND if unset */
    pq_backend: z.enum(["native", "wasm"]).optional(),
    workload_attestors: z
      .object({
        unix: z
          .union([
            z.literal(false),
            z
              .object({
                hash_max_bytes: z.number().int().min(0).optional(),
                discover_cgroup: z.boolean().optional(),
              })
              .strict(),
          ])
          .optional(),
      })
      .strict()
      .default({}),
    /** keep the qhx_authz filter configuration in this file (host/agent/filter-config.ts); unset: off */
    filter_config_path: z.string().min(1).optional(),
    /** ecds (Envoy config_discovery file, default), envoy (http_filters entry), istio, raw (the string) */
    filter_config_format: z.enum(["raw", "ecds", "envoy", "istio"]).default("ecds"),
    /** the filter's options (FilterOptions of host/filter/config.ts; the encoder validates them) */
    filter_options: z.record(z.string(), z.unknown()).optional(),
    /** the filter module referenced by the rendered documents (default build/filters/qhx_authz.wasm) */
    filter_wasm_file: z.string().min(1).optional(),
  })
  .strict();

export interface AgentConfig {
  trustDomain: string | undefined;
  server: { host: string; port: number };
  trustBundleFile: string | undefined;
  insecureBootstrap: boolean;
  joinToken: string | undefined;
  x509pop: { certFile: string; keyFile: string } | undefined;
  tpm: TpmClientOptions | undefined;
  dataDir: string;
  socketPath: string;
  healthListen: { host: string; port: number };
  logLevel: string;
  syncIntervalMs: number;
  workloadKeyType: SvidKeyAlg;
  unix: false | { hashMaxBytes?: number; discoverCgroup?: boolean };
  /** ML-DSA/ML-KEM backend (undefined: QHX_PQ_BACKEND, else native) */
  pqBackend: "native" | "wasm" | undefined;
  /** the filter configuration file the agent keeps current (undefined: off) */
  filterConfig:
    | {
        path: string;
        format: "raw" | "ecds" | "envoy" | "istio";
        options: Record<string, unknown> | undefined;
        wasmFile: string | undefined;
      }
    | undefined;
}

export function parseAgentConfig(raw: unknown, source = "config"): AgentConfig {
  const r = agentConfigSchema.safeParse(raw);
  if (!r.success) {
    const parts = r.error.issues.map((i) => {
      const where = i.path.join(".") || "(top level)";
      return i.code === "unrecognized_keys"
        ? `${where}: unknown key(s) ${i.keys.join(", ")}`
        : `${where}: ${i.message}`;
    });
    throw new QhxError("QHX_INVALID_CONFIG", `${source}: ${parts.join("; ")}`, {
      hint: "see `qhx agent start --help`",
    });
  }
  const c = r.data;
  if (!c.trust_bundle_file && !c.insecure_bootstrap) {
    throw new QhxError("QHX_INVALID_CONFIG", `${source}: trust_bundle_file is required`, {
      hint: "give --trust-bundle FILE (the server's bundle: qhx bundle show), or --insecure-bootstrap for tests",
    });
  }
  const [host, port] = splitHostPort(c.server_address);
  const [hh, hp] = splitHostPort(c.health_listen);
  const dataDir = path.resolve(c.data_dir);
  const unix = c.workload_attestors.unix;
  return {
    trustDomain: c.trust_domain ? parseTrustDomain(c.trust_domain) : undefined,
    server: { host, port },
    trustBundleFile: c.trust_bundle_file ? path.resolve(c.trust_bundle_file) : undefined,
    insecureBootstrap: c.insecure_bootstrap,
    joinToken: c.join_token,
    x509pop: c.x509pop
      ? { certFile: path.resolve(c.x509pop.cert_file), keyFile: path.resolve(c.x509pop.key_file) }
      : undefined,
    tpm: c.tpm
      ? {
          ...(c.tpm.tcti ? { tcti: c.tpm.tcti } : {}),
          ...(c.tpm.ek_alg ? { ekAlg: c.tpm.ek_alg } : {}),
          ...(c.tpm.ak_alg ? { akAlg: c.tpm.ak_alg } : {}),
          ...(c.tpm.ek_cert_file ? { ekCertFile: path.resolve(c.tpm.ek_cert_file) } : {}),
        }
      : undefined,
    dataDir,
    socketPath: path.resolve(c.socket_path ?? path.join(dataDir, "public", "api.sock")),
    healthListen: { host: hh, port: hp },
    logLevel: c.log_level,
    syncIntervalMs: c.sync_interval,
    workloadKeyType: c.workload_key_type,
    pqBackend: c.pq_backend,
    filterConfig: c.filter_config_path
      ? {
          path: path.resolve(c.filter_config_path),
          format: c.filter_config_format,
          options: c.filter_options,
          wasmFile: c.filter_wasm_file ? path.resolve(c.filter_wasm_file) : undefined,
        }
      : undefined,
    unix:
      unix === false
        ? false
        : {
            ...(unix?.hash_max_bytes !== undefined ? { hashMaxBytes: unix.hash_max_bytes } : {}),
            ...(unix?.discover_cgroup !== undefined ? { discoverCgroup: unix.discover_cgroup } : {}),
          },
  };
}
