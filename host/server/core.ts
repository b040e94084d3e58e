/**
 * ServerCore: the trust-domain server's state and operations (datastore, key manager, CA, registration,
 * join tokens, issuance), independent of transport. The admin API and the offline CLI both call it, so
 * `qhx … --socket` and `qhx … --data-dir` behave identically.
 */
import crypto, { X509Certificate } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { type WorkloadPublicKey, workloadKeyAlgOf } from "../core/alg.ts";
import { type Assurance, assuranceExtension } from "../core/assurance.ts";
import type { Clock } from "../core/clock.ts";
import { QhxError } from "../core/errors.ts";
import { fromPem } from "../core/pem.ts";
import { type CaConfig, CaManager, type UpstreamCa } from "./ca.ts";
import type { ServerConfig } from "./config.ts";
import { openDatastore } from "./datastore/index.ts";
import type { Datastore } from "./datastore/types.ts";
import { readPrivateKeyFile, writeFileAtomic } from "./keymanager/disk.ts";
import { type KeyManager, openKeyManager } from "./keymanager/index.ts";
import { type Logger, silentLogger } from "./logger.ts";
import { ServerMetrics } from "./metrics.ts";

export const DATA_DIR_MARKER = "qhx-server.json";
const DATA_DIR_FORMAT = 1;

/** What a data directory remembers about the server that created it. */
interface DataDirInfo {
  format: number;
  trust_domain: string;
  created_at: string;
  settings: {
    ca_key_type: string;
    ca_ttl_ms: number;
    jwt_key_type: string;
    default_x509_svid_ttl_ms: number;
    default_jwt_svid_ttl_ms: number;
    key_manager: string;
    ca_upstream?: { cert_file: string; key_file: string; bundle_file?: string };
    /** absent: sqlite (data directories made before PostgreSQL support) */
    datastore_kind?: "sqlite" | "postgres";
  };
}

export type { DataDirInfo };

export function readDataDirInfo(dataDir: string): DataDirInfo | undefined {
  const file = path.join(dataDir, DATA_DIR_MARKER);
  if (!fs.existsSync(file)) return undefined;
  let info: DataDirInfo;
  try {
    info = JSON.parse(fs.readFileSync(file, "utf8")) as DataDirInfo;
  } catch (e) {
    throw new QhxError("QHX_DATA_DIR_CORRUPT", `${file} is not valid JSON`, { cause: e });
  }
  if (info.format > DATA_DIR_FORMAT) {
    throw new QhxError(
      "QHX_DATA_DIR_TOO_NEW",
      `data directory ${dataDir} has format ${info.format}; this build understands up to ${DATA_DIR_FORMAT}`,
      { hint: "upgrade qhx; the data directory was left untouched" },
    );
  }
  return info;
}

export interface OpenOptions {
  clock: Clock;
  logger?: Logger;
  metrics?: ServerMetrics;
  /** create the data directory and CA if missing (server start, server init); otherwise require them */
  create: boolean;
}

export class ServerCore {
  readonly cfg: ServerConfig;
  readonly ds: Datastore;
  readonly km: KeyManager;
  readonly ca: CaManager;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: ServerMetrics;

  private constructor(
    cfg: ServerConfig,
    ds: Datastore,
    km: KeyManager,
    ca: CaManager,
    clock: Clock,
    log: Logger,
    metrics: ServerMetrics,
  ) {
    this.cfg = cfg;
    this.ds = ds;
    this.km = km;
    this.ca = ca;
    this.clock = clock;
    this.log = log;
    this.metrics = metrics;
  }

  static async open(cfg: ServerConfig, opts: OpenOptions): Promise<ServerCore> {
    const log = opts.logger ?? silentLogger;
    const metrics = opts.metrics ?? new ServerMetrics(false);
    const info = readDataDirInfo(cfg.dataDir);
    if (!info) {
      if (!opts.create) {
        throw new QhxError("QHX_NOT_A_DATA_DIR", `${cfg.dataDir} is not a QHx server data directory`, {
          hint: `initialize it with: qhx server init --trust-domain <td> --data-dir ${cfg.dataDir}`,
        });
      }
      if (fs.existsSync(cfg.dataDir) && fs.readdirSync(cfg.dataDir).some((f) => !f.startsWith("."))) {
        throw new QhxError(
          "QHX_DATA_DIR_NOT_EMPTY",
          `${cfg.dataDir} is not empty and is not a QHx data directory; refusing to initialize it`,
          { hint: "choose an empty or new directory" },
        );
      }
      fs.mkdirSync(cfg.dataDir, { recursive: true, mode: 0o700 });
      const fresh: DataDirInfo = {
        format: DATA_DIR_FORMAT,
        trust_domain: cfg.trustDomain,
        created_at: opts.clock.now().toISOString(),
        settings: {
          ca_key_type: cfg.ca.keyType,
          ca_ttl_ms: cfg.ca.ttlMs,
          jwt_key_type: cfg.jwtKeyType,
          default_x509_svid_ttl_ms: cfg.defaultX509SvidTtlMs,
          default_jwt_svid_ttl_ms: cfg.defaultJwtSvidTtlMs,
          key_manager: cfg.keyManager,
          ...(cfg.datastore?.kind === "postgres" ? { datastore_kind: "postgres" as const } : {}),
          ...(cfg.ca.upstream
            ? {
                ca_upstream: {
                  cert_file: path.resolve(cfg.ca.upstream.certFile),
                  key_file: path.resolve(cfg.ca.upstream.keyFile),
                  ...(cfg.ca.upstream.bundleFile
                    ? { bundle_file: path.resolve(cfg.ca.upstream.bundleFile) }
                    : {}),
                },
              }
            : {}),
        },
      };
      writeFileAtomic(path.join(cfg.dataDir, DATA_DIR_MARKER), `${JSON.stringify(fresh, null, 2)}\n`, 0o600);
      log.info({ dataDir: cfg.dataDir, trustDomain: cfg.trustDomain }, "initialized data directory");
    } else if (info.trust_domain !== cfg.trustDomain) {
      throw new QhxError(
        "QHX_TRUST_DOMAIN_MISMATCH",
        `data directory ${cfg.dataDir} belongs to trust domain ${info.trust_domain}, not ${cfg.trustDomain}`,
        { hint: "a trust domain cannot be renamed; use another data directory" },
      );
    }
    if (info?.settings.datastore_kind === "postgres" && cfg.datastore?.kind !== "postgres") {
      throw new QhxError(
        "QHX_DATASTORE_MISMATCH",
        `data directory ${cfg.dataDir} belongs to a server whose datastore is PostgreSQL; refusing to open a SQLite datastore beside it`,
        {
          hint: "reach the running server with --socket, or give the server its datastore config (--config)",
        },
      );
    }
    const ds = await openDatastore(
      cfg.datastore?.kind === "postgres"
        ? { ...cfg.datastore }
        : { kind: "sqlite", path: path.join(cfg.dataDir, "datastore.sqlite3") },
    );
    // a PostgresDatastore names its database by the connection string with the password redacted
    log.info({ datastore: ds.kind, ...("target" in ds ? { target: ds.target } : {}) }, "datastore opened");
    try {
      const km = openKeyManager(
        cfg.keyManager === "disk"
          ? { kind: "disk", dir: path.join(cfg.dataDir, "keys") }
          : { kind: "memory" },
      );
      const caCfg: CaConfig = {
        trustDomain: cfg.trustDomain,
        keyAlg: cfg.ca.keyType,
        ttlMs: cfg.ca.ttlMs,
        subject: cfg.ca.subject,
        jwtKeyAlg: cfg.jwtKeyType,
        refreshHintSeconds: cfg.bundleRefreshHintS,
        ...(cfg.ca.upstream ? { upstream: loadUpstream(cfg.ca.upstream) } : {}),
      };
      const ca = new CaManager(ds, km, caCfg, opts.clock);
      ca.onEvent = (event, rec) => {
        metrics.caEvents.inc({ event });
        if (event === "bundle_published") {
          metrics.bundleSequence.set((rec as unknown as { sequence: number }).sequence);
          log.info({ sequence: (rec as unknown as { sequence: number }).sequence }, "trust bundle published");
        } else {
          log.info(
            { event, id: rec.id, alg: rec.alg, notAfter: new Date(rec.notAfter * 1000).toISOString() },
            "CA journal change",
          );
        }
      };
      await ca.init();
      const core = new ServerCore(cfg, ds, km, ca, opts.clock, log, metrics);
      metrics.entries.set((await ds.listEntries()).length);
      return core;
    } catch (e) {
      await ds.close();
      throw e;
    }
  }

  async close(): Promise<void> {
    await this.ds.close();
  }

  /** Create a single-use join token. Only its hash is stored. */
  async generateJoinToken(ttlMs: number, alias?: string): Promise<{ token: string; expiresAt: number }> {
    const token = crypto.randomBytes(24).toString("base64url");
    const now = Math.floor(this.clock.now().getTime() / 1000);
    const expiresAt = now + Math.max(1, Math.round(ttlMs / 1000));
    await this.ds.createJoinToken({
      tokenHash: hashToken(token),
      expiresAt,
      createdAt: now,
      ...(alias ? { spiffeId: alias } : {}),
    });
    return { token, expiresAt };
  }

  async issueX509(req: {
    spiffeId: string;
    publicKey: WorkloadPublicKey;
    ttlMs?: number;
    dnsNames?: string[];
    assurance?: Assurance;
  }) {
    const r = await this.ca.signX509Svid({
      spiffeId: req.spiffeId,
      publicKey: req.publicKey,
      ttlMs: req.ttlMs ?? this.cfg.defaultX509SvidTtlMs,
      ...(req.dnsNames ? { dnsNames: req.dnsNames } : {}),
      ...(req.assurance ? { extraExtensions: [assuranceExtension(req.assurance)] } : {}),
    });
    this.metrics.svidsIssued.inc({ type: "x509", alg: workloadKeyAlgOf(req.publicKey) });
    this.log.info(
      { spiffeId: req.spiffeId, serial: r.serial, notAfter: r.notAfter.toISOString() },
      "X509-SVID issued",
    );
    return r;
  }

  async issueJwt(req: { spiffeId: string; audience: string[]; ttlMs?: number }) {
    const r = await this.ca.signJwtSvid({
      spiffeId: req.spiffeId,
      audience: req.audience,
      ttlMs: req.ttlMs ?? this.cfg.defaultJwtSvidTtlMs,
    });
    this.metrics.svidsIssued.inc({ type: "jwt", alg: r.alg });
    this.log.info({ spiffeId: req.spiffeId, audience: req.audience, alg: r.alg }, "JWT-SVID issued");
    return r;
  }
}

export function hashToken(token: string): string {
  return crypto.createHash("sha256").update(token).digest("hex");
}

function loadUpstream(u: { certFile: string; keyFile: string; bundleFile?: string }): UpstreamCa {
  let certs: Uint8Array[];
  try {
    certs = fromPem(fs.readFileSync(u.certFile, "utf8"));
  } catch (e) {
    throw new QhxError("QHX_INVALID_CONFIG", `ca.upstream.cert_file ${u.certFile}: ${(e as Error).message}`);
  }
  if (certs.length === 0)
    throw new QhxError("QHX_INVALID_CONFIG", `ca.upstream.cert_file ${u.certFile}: no certificate`);
  const privateKey = readPrivateKeyFile(u.keyFile, "upstream CA key");
  const first = new X509Certificate(certs[0]!);
  if (!first.checkPrivateKey(privateKey)) {
    throw new QhxError(
      "QHX_INVALID_CONFIG",
      "ca.upstream.key_file does not match the first certificate of cert_file",
    );
  }
  if (!first.ca)
    throw new QhxError("QHX_INVALID_CONFIG", "ca.upstream.cert_file: the certificate is not a CA (cA=false)");
  const isSelfSigned = (d: Uint8Array) => {
    const c = new X509Certificate(d);
    return c.checkIssued(c) && c.verify(c.publicKey);
  };
  let roots: Uint8Array[];
  if (u.bundleFile) {
    roots = fromPem(fs.readFileSync(u.bundleFile, "utf8"));
    if (roots.length === 0)
      throw new QhxError("QHX_INVALID_CONFIG", `ca.upstream.bundle_file ${u.bundleFile}: no certificate`);
  } else {
    const last = certs[certs.length - 1]!;
    if (!isSelfSigned(last)) {
      throw new QhxError(
        "QHX_INVALID_CONFIG",
        "ca.upstream: cert_file does not end in a root; give bundle_file",
      );
    }
    roots = [last];
  }
  let chain = certs.filter((c) => !roots.some((r) => Buffer.from(r).equals(Buffer.from(c))));
  if (chain.length === 0) chain = [certs[0]!];
  return { chain, privateKey, roots };
}
