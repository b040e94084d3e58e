/**
 * The server's crypto policy store (host/core/crypto-policy.ts is the model): versioned, write-once.
 *
 * Storage: one immutable JSON file per version under `<data dir>/crypto-policy/versions/<n>.json`, written
 * to a temporary file, fsynced, then hard-linked into place (link fails if the version exists, so two
 * writers can never both create version n) and the directory fsynced. The highest version is current.
 * Files rather than a datastore migration, as the Cedar policy store does (host/server/policy-store.ts):
 * versions are small write-once documents read whole, the history is inspectable and backed up with the
 * data directory, and `qhx crypto-policy apply --data-dir` works offline on the same files.
 *
 * The running server re-reads the current version when the directory changes (one stat per issuance),
 * so an offline apply on a live server's data directory takes effect at the next issuance too.
 *
 * Admin routes (appended to admin-api.ts's table):
 *   GET  /v1/crypto-policy                          -> { version, created_at, comment, digest, policy }
 *   GET  /v1/crypto-policy/versions                 -> { versions: [{ version, created_at, comment, digest }] }
 *   POST /v1/crypto-policy { policy, comment?, expected_version? } -> 201 version summary
 *   GET  /v1/crypto-policy/explain?spiffe_id=ID[&namespace=NS]    -> { explanations: [...] }
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import {
  bundlePublicationRefusal,
  type CryptoPolicy,
  cryptoPolicyToJson,
  emptyCryptoPolicy,
  type Explanation,
  explain,
  mayPublishBundleTo,
  parseCryptoPolicy,
} from "../core/crypto-policy.ts";
import { QhxError, ValidationError } from "../core/errors.ts";
import { SpiffeId } from "../core/spiffeid.ts";
import { canonicalJson } from "../policy/signed.ts";
import type { AdminRequest, AdminResponse } from "./admin-api.ts";
import type { ServerCore } from "./core.ts";

export interface CryptoPolicyVersion {
  version: number;
  created_at: string;
  comment: string | null;
  /** sha256 of the canonical JSON of the policy */
  digest: string;
  previous_digest: string | null;
  policy: Record<string, unknown>;
}

export type CryptoPolicyVersionSummary = Omit<CryptoPolicyVersion, "policy" | "previous_digest">;

export class CryptoPolicyStore {
  readonly dir: string;
  readonly trustDomain: string;
  private cache:
    { stamp: string; current: { version: CryptoPolicyVersion | null; policy: CryptoPolicy } } | undefined;

  constructor(dataDir: string, trustDomain: string) {
    this.dir = path.join(dataDir, "crypto-policy", "versions");
    this.trustDomain = trustDomain;
  }

  private file(n: number): string {
    return path.join(this.dir, `${n}.json`);
  }

  private versions(): number[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw e;
    }
    return names
      .filter((n) => /^[1-9][0-9]*\.json$/.test(n))
      .map((n) => Number(n.slice(0, -5)))
      .sort((a, b) => a - b);
  }

  get(n: number): CryptoPolicyVersion | undefined {
    let text: string;
    try {
      text = fs.readFileSync(this.file(n), "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
    let v: CryptoPolicyVersion;
    try {
      v = JSON.parse(text) as CryptoPolicyVersion;
    } catch {
      throw new QhxError("QHX_DATA_DIR_CORRUPT", `${this.file(n)} is not valid JSON`);
    }
    if (v.version !== n || digestOf(v.policy) !== v.digest) {
      throw new QhxError("QHX_DATA_DIR_CORRUPT", `${this.file(n)} does not match its version or digest`, {
        hint: "restore the data directory from a backup; the file was left untouched",
      });
    }
    return v;
  }

  /** The current version and its model (the empty policy, version null, when none was applied). */
  current(): { version: CryptoPolicyVersion | null; policy: CryptoPolicy } {
    // a new version is a new directory entry, which moves the directory's mtime (and size): one stat per
    // issuance, the listing only when it changed (an apply resets the cache of its own store)
    let stamp = "none";
    try {
      const st = fs.statSync(this.dir, { bigint: true });
      stamp = `${st.mtimeNs}:${st.size}:${st.ino}`;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    if (this.cache?.stamp === stamp) return this.cache.current;
    const list = this.versions();
    const last = list.length ? this.get(list[list.length - 1]!)! : null;
    const current = {
      version: last,
      policy: last ? parseCryptoPolicy(last.policy) : emptyCryptoPolicy(this.trustDomain),
    };
    this.cache = { stamp, current };
    return current;
  }

  list(): CryptoPolicyVersionSummary[] {
    return this.versions().map((n) => summary(this.get(n)!));
  }

  /**
   * Validate and store a new version. The policy's trust_domain is set to this server's (a document naming
   * another trust domain is refused). `expectedVersion` (the current version number, 0 for none) guards
   * against a concurrent apply.
   */
  apply(
    doc: unknown,
    opts: { comment?: string; expectedVersion?: number; now: Date },
  ): CryptoPolicyVersionSummary {
    const parsed = parseCryptoPolicy(doc);
    if (parsed.trustDomain !== undefined && parsed.trustDomain !== this.trustDomain) {
      throw new ValidationError(
        `the policy is for trust domain ${parsed.trustDomain}; this server is ${this.trustDomain}`,
        "trust_domain",
      );
    }
    parsed.trustDomain = this.trustDomain;
    const list = this.versions();
    const latest = list.length ? list[list.length - 1]! : 0;
    if (opts.expectedVersion !== undefined && opts.expectedVersion !== latest) {
      throw new QhxError(
        "QHX_CONFLICT",
        `crypto policy is at version ${latest}, not ${opts.expectedVersion}`,
        { hint: "show the current version, merge your change and apply again" },
      );
    }
    const prev = latest ? this.get(latest)! : undefined;
    const policy = cryptoPolicyToJson(parsed);
    const v: CryptoPolicyVersion = {
      version: latest + 1,
      created_at: opts.now.toISOString(),
      comment: opts.comment ?? null,
      digest: digestOf(policy),
      previous_digest: prev?.digest ?? null,
      policy,
    };
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    writeExclusive(this.file(v.version), `${JSON.stringify(v, null, 2)}\n`);
    this.cache = undefined;
    return summary(v);
  }
}

function summary(v: CryptoPolicyVersion): CryptoPolicyVersionSummary {
  return { version: v.version, created_at: v.created_at, comment: v.comment, digest: v.digest };
}

function digestOf(policy: unknown): string {
  return crypto.createHash("sha256").update(canonicalJson(policy)).digest("hex");
}

function writeExclusive(file: string, data: string): void {
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`;
  const fd = fs.openSync(tmp, "wx", 0o600);
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.linkSync(tmp, file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") {
      throw new QhxError(
        "QHX_CONFLICT",
        `crypto policy version ${path.basename(file, ".json")} already exists`,
        {
          hint: "another apply won the race; show the current version and retry",
        },
      );
    }
    throw e;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  const dfd = fs.openSync(path.dirname(file), "r");
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

const stores = new WeakMap<ServerCore, CryptoPolicyStore>();

/** The crypto policy store of a server (under its data directory). */
export function cryptoPolicyStoreFor(core: ServerCore): CryptoPolicyStore {
  let s = stores.get(core);
  if (!s) {
    s = new CryptoPolicyStore(core.cfg.dataDir, core.cfg.trustDomain);
    stores.set(core, s);
  }
  return s;
}

/** The crypto policy in force on a server. */
export function currentCryptoPolicy(core: ServerCore): CryptoPolicy {
  return cryptoPolicyStoreFor(core).current().policy;
}

/**
 * May this server's bundle be published to a foreign trust domain under the policy in force
 * (`mayPublishBundleTo`)? For the federation side: a bundle endpoint that knows who asks, or a push.
 */
export function mayPublishBundle(core: ServerCore, foreignTd: string): boolean {
  return mayPublishBundleTo(currentCryptoPolicy(core), foreignTd);
}

/**
 * Why this server's bundle may not be published to `foreignTd` (null: an anonymous client) under the
 * policy in force, or null when it may (`bundlePublicationRefusal`).
 */
export function bundlePublicationRefusalFor(core: ServerCore, foreignTd: string | null): string | null {
  return bundlePublicationRefusal(currentCryptoPolicy(core), foreignTd);
}

// ---------------------------------------------------------------------------------------------------------
// admin routes

type Handler = (core: ServerCore, req: AdminRequest, params: string[]) => Promise<AdminResponse>;

function obj(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ValidationError("request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

/** Explanations for an ID: one per namespace its entries are in (none registered: without a namespace). */
export async function explainFor(
  core: ServerCore,
  spiffeId: string,
  namespace?: string,
): Promise<Explanation[]> {
  const id = SpiffeId.parse(spiffeId).toString();
  const policy = currentCryptoPolicy(core);
  if (namespace !== undefined) return [explain(policy, id, namespace)];
  const spaces = [...new Set((await core.ds.listEntries({ spiffeId: id })).map((e) => e.namespace))].sort();
  return spaces.length ? spaces.map((ns) => explain(policy, id, ns)) : [explain(policy, id)];
}

export const cryptoPolicyRoutes: [string, RegExp, Handler][] = [
  [
    "GET",
    /^\/v1\/crypto-policy$/,
    async (core) => {
      const { version, policy } = cryptoPolicyStoreFor(core).current();
      return {
        status: 200,
        body: {
          version: version?.version ?? null,
          created_at: version?.created_at ?? null,
          comment: version?.comment ?? null,
          digest: version?.digest ?? null,
          policy: cryptoPolicyToJson(policy),
        },
      };
    },
  ],
  [
    "GET",
    /^\/v1\/crypto-policy\/versions$/,
    async (core) => ({ status: 200, body: { versions: cryptoPolicyStoreFor(core).list() } }),
  ],
  [
    "POST",
    /^\/v1\/crypto-policy$/,
    async (core, req) => {
      const b = obj(req.body);
      if (b.policy === undefined) throw new ValidationError("is required", "policy");
      if (b.comment !== undefined && typeof b.comment !== "string") {
        throw new ValidationError("must be a string", "comment");
      }
      if (
        b.expected_version !== undefined &&
        !(Number.isInteger(b.expected_version) && (b.expected_version as number) >= 0)
      ) {
        throw new ValidationError("must be a non-negative integer", "expected_version");
      }
      const s = cryptoPolicyStoreFor(core).apply(b.policy, {
        now: core.clock.now(),
        ...(b.comment !== undefined ? { comment: b.comment as string } : {}),
        ...(b.expected_version !== undefined ? { expectedVersion: b.expected_version as number } : {}),
      });
      core.log.info({ version: s.version, digest: s.digest }, "crypto policy applied");
      return { status: 201, body: s };
    },
  ],
  [
    "GET",
    /^\/v1\/crypto-policy\/explain$/,
    async (core, req) => {
      const id = req.query.get("spiffe_id");
      if (!id) throw new ValidationError("is required", "spiffe_id");
      const ns = req.query.get("namespace") ?? undefined;
      return { status: 200, body: { explanations: await explainFor(core, id, ns) } };
    },
  ],
];
