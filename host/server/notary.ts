/**
 * The notary: admits signed receipt statements into an append-only RFC 9162 Merkle log kept in the
 * datastore, and answers with COSE Receipts (RFC 9942) and C2SP checkpoints signed by the notary key.
 *
 * Admission: a statement is admitted only if it is a QHx receipt statement whose COSE signature verifies
 * with its x5chain leaf, whose chain is a valid X509-SVID of this trust domain's bundle now, whose claims
 * name that SVID (SPIFFE ID and certificate fingerprint), and — over the agent API — whose signer is the
 * workload that submits it (its mTLS client SVID). Submitting a statement already in the log returns its
 * existing receipt (emitters retry).
 *
 * Appends are group-committed: statements queue, and one flush appends all of them to the in-memory tree,
 * signs one tree head (a COSE Receipt signature over the new root, shared by every leaf of the batch, and
 * a checkpoint), and writes entries and head in one datastore transaction (SQLite: one fsync). Only after
 * that commit are the appends acknowledged; if it fails, the tree is rolled back and the batch rejected.
 *
 * Key: Ed25519, `<data dir>/notary/signing-key.pem` (0600, created on first use). Origin (the checkpoint
 * name): `<trust domain>/qhx/notary`.
 *
 * Routes — admin API (Unix socket):
 *   GET /v1/log/entries?signer=&peer=&from=&limit=   → { tree_size, entries: [summary…] }
 *   GET /v1/log/entries/<index>                       → summary + claims + hashes
 *   GET /v1/log/entries/<index>/receipt               → { receipt: base64 transparent statement }
 *   GET /v1/log/checkpoint                            → { origin, tree_size, root, checkpoint }
 *   GET /v1/log/consistency?from=&to=                 → { first, second, proof: [hex…] }
 *   GET /v1/log/trust                                 → { origin, notary_public_key, trust_domain, bundle }
 * agent API (TLS 1.3, any X509-SVID of the trust domain):
 *   POST /notary/v1/statements { statements: [base64…] } → { results: [{ index, tree_size, receipt } | { error }] }
 */
import crypto, { type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Counter, Gauge, Histogram } from "prom-client";
import { bundleToPem } from "../core/bundle.ts";
import { isQhxError, NotFoundError, QhxError, ValidationError } from "../core/errors.ts";
import { SpiffeId } from "../core/spiffeid.ts";
import { verifyX509Svid } from "../core/x509-verify.ts";
import { signCheckpoint } from "../provenance/checkpoint.ts";
import { COSE_ALG, decodeSign1, HEADER, signSign1Bytes, verifySign1, x5chainOf } from "../provenance/cose.ts";
import { equal, MerkleTree, sha256 } from "../provenance/merkle.ts";
import {
  canonicalStatement,
  checkClaimIds,
  type ConsistencyProof,
  claimsToJson,
  decodeClaims,
  encodeNotaryReceipt,
  notaryProtectedHeader,
  RECEIPT_CONTENT_TYPE,
  receiptLeafHash,
  transparentStatement,
} from "../provenance/receipt.ts";
import { notaryKidOf, verifyChainCached } from "../provenance/verify.ts";
import type { AdminRequest, AdminResponse } from "./admin-api.ts";
import type { ServerCore } from "./core.ts";
import type { LogEntryRecord } from "./datastore/types.ts";
import { writeFileAtomic } from "./keymanager/disk.ts";

/** Most statements one flush commits. */
const MAX_BATCH = 4096;
/** Most statements one agent-API call may submit. */
const MAX_SUBMIT = 256;
/** How far in the future an exchange may claim to have ended (clock skew). */
const MAX_SKEW_MS = 5 * 60_000;

export interface AppendResult {
  index: number;
  treeSize: number;
  /** the COSE Receipt (RFC 9942) */
  receipt: Uint8Array;
  /** true when the statement was already in the log */
  existing: boolean;
}

interface Pending {
  statement: Uint8Array;
  statementHash: Uint8Array;
  signerId: string;
  peerId: string;
  decision: string;
  exchangeId: string;
  waiters: { resolve: (r: AppendResult) => void; reject: (e: unknown) => void }[];
}

interface NotaryMetrics {
  appends: Counter<"result">;
  batch: Histogram;
  treeSize: Gauge;
}

const METRICS = new WeakMap<object, NotaryMetrics>();

function metricsFor(core: ServerCore): NotaryMetrics {
  const reg = core.metrics.registry;
  let m = METRICS.get(reg);
  if (!m) {
    m = {
      appends: new Counter({
        name: "qhx_notary_statements_total",
        help: "Receipt statements submitted to the notary, by result (admitted|existing|rejected|failed)",
        labelNames: ["result"] as const,
        registers: [reg],
      }),
      batch: new Histogram({
        name: "qhx_notary_batch_size",
        help: "Statements per group commit of the notary log",
        buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096],
        registers: [reg],
      }),
      treeSize: new Gauge({
        name: "qhx_notary_tree_size",
        help: "Size of the notary's Merkle log",
        registers: [reg],
      }),
    };
    METRICS.set(reg, m);
  }
  return m;
}

function loadKey(dataDir: string): KeyObject {
  const dir = path.join(dataDir, "notary");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, "signing-key.pem");
  if (!fs.existsSync(file)) {
    const { privateKey } = crypto.generateKeyPairSync("ed25519");
    writeFileAtomic(file, privateKey.export({ type: "pkcs8", format: "pem" }) as string, 0o600);
  }
  try {
    const key = crypto.createPrivateKey(fs.readFileSync(file));
    if (key.asymmetricKeyType !== "ed25519") throw new Error(`a ${key.asymmetricKeyType} key`);
    return key;
  } catch (e) {
    throw new QhxError("QHX_KEY_INVALID", `notary signing key ${file} is unusable: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

function rejected(message: string, code = "QHX_RECEIPT_REJECTED"): QhxError {
  return new QhxError(code, message);
}

export class Notary {
  readonly origin: string;
  readonly publicKey: KeyObject;
  readonly kid: Uint8Array;
  private readonly core: ServerCore;
  private readonly key: KeyObject;
  private readonly protectedBytes: Uint8Array;
  private readonly tree = new MerkleTree();
  /** statement hash (base64) → leaf index, for every committed entry */
  private readonly index = new Map<string, number>();
  private readonly pending = new Map<string, Pending>();
  private queue: Pending[] = [];
  private flushing = false;
  /** leaves durable in the datastore (the in-memory tree may hold a batch being committed) */
  private committed = 0;
  private scheduled = false;
  private readonly metrics: NotaryMetrics;

  private constructor(core: ServerCore, key: KeyObject) {
    this.core = core;
    this.key = key;
    this.publicKey = crypto.createPublicKey(key);
    this.kid = notaryKidOf(this.publicKey);
    this.origin = `${core.cfg.trustDomain}/qhx/notary`;
    this.protectedBytes = notaryProtectedHeader(this.kid);
    this.metrics = metricsFor(core);
  }

  static async open(core: ServerCore): Promise<Notary> {
    const n = new Notary(core, loadKey(core.cfg.dataDir));
    const hashes = await core.ds.logHashes();
    for (const [i, h] of hashes.entries()) {
      n.tree.appendHash(h.leafHash);
      n.index.set(Buffer.from(h.statementHash).toString("base64"), i);
    }
    const head = await core.ds.getLogHead();
    if ((head?.treeSize ?? 0) !== n.tree.size || (head && !equal(head.rootHash, n.tree.root()))) {
      throw new QhxError(
        "QHX_DATASTORE_CORRUPT",
        `the notary log's entries (${n.tree.size}) do not match its latest signed tree head`,
      );
    }
    n.committed = n.tree.size;
    n.metrics.treeSize.set(n.tree.size);
    return n;
  }

  /** Entries durable in the log. */
  get size(): number {
    return this.committed;
  }

  publicKeyPem(): string {
    return this.publicKey.export({ type: "spki", format: "pem" }) as string;
  }

  /**
   * Check a statement for admission (see the module comment). Returns what the log records about it.
   * Throws QhxError QHX_RECEIPT_REJECTED naming the failed rule.
   */
  admit(statement: Uint8Array, submitter?: string): Omit<Pending, "waiters"> {
    let msg;
    try {
      msg = decodeSign1(statement);
    } catch (e) {
      throw rejected(`statement: ${(e as Error).message}`);
    }
    if (msg.protected.get(HEADER.contentType) !== RECEIPT_CONTENT_TYPE) {
      throw rejected(`statement: content type is not ${RECEIPT_CONTENT_TYPE}`);
    }
    if (msg.payload === null) throw rejected("statement: detached payload");
    let chain: Uint8Array[] | undefined;
    try {
      chain = x5chainOf(msg.protected);
    } catch (e) {
      throw rejected(`statement: ${(e as Error).message}`);
    }
    if (!chain) throw rejected("statement: no x5chain");
    const now = this.core.clock.now();
    let svid;
    try {
      const bundle = this.core.ca.trustBundle();
      svid = verifyChainCached(bundle, new Map([[this.core.cfg.trustDomain, bundle]]), chain, now);
    } catch (e) {
      throw rejected(`svid-chain: ${(e as Error).message}`);
    }
    try {
      verifySign1(msg, svid.leaf.publicKey);
    } catch (e) {
      throw rejected(`signature: ${(e as Error).message}`);
    }
    let claims;
    try {
      claims = decodeClaims(msg.payload);
      checkClaimIds(claims);
    } catch (e) {
      throw rejected(`claims: ${(e as Error).message}`);
    }
    const id = svid.spiffeId.toString();
    if (claims.signer.id !== id)
      throw rejected(`claims: signer.id ${claims.signer.id} is not the SVID's ${id}`);
    if (!equal(claims.signer.certSha256, sha256(chain[0]!))) {
      throw rejected("claims: signer.cert_sha256 is not the fingerprint of the x5chain leaf");
    }
    if (submitter !== undefined && submitter !== id) {
      throw rejected(
        `submitter ${submitter} may not submit statements signed by ${id}`,
        "QHX_PERMISSION_DENIED",
      );
    }
    if (claims.time.end > now.getTime() + MAX_SKEW_MS)
      throw rejected("timing: the exchange ends in the future");
    const canonical = canonicalStatement(msg);
    return {
      statement: canonical,
      statementHash: sha256(canonical),
      signerId: id,
      peerId: claims.peer.id,
      decision: claims.decision,
      exchangeId: claims.id,
    };
  }

  /** Admit and append one statement; resolves once it is durable in the log. */
  async submit(statement: Uint8Array, submitter?: string): Promise<AppendResult> {
    let a: Omit<Pending, "waiters">;
    try {
      a = this.admit(statement, submitter);
    } catch (e) {
      this.metrics.appends.inc({ result: "rejected" });
      throw e;
    }
    return this.append(a);
  }

  /** Append an admitted statement (group commit). */
  append(a: Omit<Pending, "waiters">): Promise<AppendResult> {
    const key = Buffer.from(a.statementHash).toString("base64");
    const known = this.index.get(key);
    if (known !== undefined) {
      this.metrics.appends.inc({ result: "existing" });
      return this.receiptFor(known).then((r) => ({ ...r, existing: true }));
    }
    return new Promise<AppendResult>((resolve, reject) => {
      let p = this.pending.get(key);
      if (!p) {
        p = { ...a, waiters: [] };
        this.pending.set(key, p);
        this.queue.push(p);
      }
      p.waiters.push({ resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.flushing) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.flushing || this.queue.length === 0) return;
    this.flushing = true;
    const batch = this.queue.splice(0, MAX_BATCH);
    const start = this.tree.size;
    const admittedAt = this.core.clock.now().getTime();
    try {
      const entries: LogEntryRecord[] = batch.map((p) => {
        const leafHash = receiptLeafHash(admittedAt, p.statementHash);
        const leafIndex = this.tree.appendHash(leafHash);
        return {
          leafIndex,
          leafHash,
          statementHash: p.statementHash,
          admittedAt,
          statement: p.statement,
          signerId: p.signerId,
          peerId: p.peerId,
          decision: p.decision,
          exchangeId: p.exchangeId,
          treeSize: start + batch.length,
        };
      });
      const size = this.tree.size;
      const root = this.tree.root();
      const signature = signSign1Bytes(this.key, COSE_ALG.EdDSA, this.protectedBytes, root);
      const checkpoint = signCheckpoint({ origin: this.origin, size, root }, this.key);
      await this.core.ds.appendLog(entries, {
        treeSize: size,
        rootHash: root,
        createdAt: admittedAt,
        protectedHeader: this.protectedBytes,
        signature,
        checkpoint,
      });
      // durable: acknowledge
      this.committed = size;
      this.metrics.batch.observe(batch.length);
      this.metrics.treeSize.set(size);
      for (const [i, p] of batch.entries()) {
        const key = Buffer.from(p.statementHash).toString("base64");
        this.index.set(key, start + i);
        this.pending.delete(key);
        const receipt = encodeNotaryReceipt({
          protectedBytes: this.protectedBytes,
          signature,
          proof: { treeSize: size, leafIndex: start + i, path: this.tree.inclusionProof(start + i, size) },
          admittedAt,
        });
        this.metrics.appends.inc({ result: "admitted" });
        for (const w of p.waiters) w.resolve({ index: start + i, treeSize: size, receipt, existing: false });
      }
    } catch (e) {
      this.tree.truncate(start);
      this.core.log.error({ err: e, batch: batch.length }, "notary log append failed");
      for (const p of batch) {
        this.pending.delete(Buffer.from(p.statementHash).toString("base64"));
        this.metrics.appends.inc({ result: "failed" });
        for (const w of p.waiters)
          w.reject(isQhxError(e) ? e : new QhxError("QHX_NOTARY_UNAVAILABLE", "the log append failed"));
      }
    } finally {
      this.flushing = false;
      if (this.queue.length) this.schedule();
    }
  }

  private async entry(index: number): Promise<LogEntryRecord> {
    const e = await this.core.ds.getLogEntry(index);
    if (!e) throw new NotFoundError("log entry", String(index));
    return e;
  }

  /** The COSE Receipt an entry got when it was admitted (its batch's tree head). */
  async receiptFor(index: number): Promise<Omit<AppendResult, "existing">> {
    const e = await this.entry(index);
    const head = await this.core.ds.getLogHead(e.treeSize);
    if (!head) throw new QhxError("QHX_DATASTORE_CORRUPT", `no signed tree head of size ${e.treeSize}`);
    return {
      index,
      treeSize: e.treeSize,
      receipt: encodeNotaryReceipt({
        protectedBytes: head.protectedHeader,
        signature: head.signature,
        proof: { treeSize: e.treeSize, leafIndex: index, path: this.tree.inclusionProof(index, e.treeSize) },
        admittedAt: e.admittedAt,
      }),
    };
  }

  /** The transparent statement of an entry, with a consistency proof from its tree to the latest. */
  async exportEntry(index: number): Promise<Uint8Array> {
    const e = await this.entry(index);
    const r = await this.receiptFor(index);
    const latest = this.committed;
    const consistency: ConsistencyProof[] =
      latest > e.treeSize
        ? [{ first: e.treeSize, second: latest, path: this.tree.consistencyProof(e.treeSize, latest) }]
        : [];
    return transparentStatement(e.statement, r.receipt, consistency);
  }

  consistency(first: number, second: number): Uint8Array[] {
    if (second > this.committed) throw new ValidationError(`the log has ${this.committed} entries`, "to");
    return this.tree.consistencyProof(first, second);
  }

  async checkpoint(): Promise<{ treeSize: number; root: Uint8Array; checkpoint: string; createdAt: number }> {
    const head = await this.core.ds.getLogHead();
    if (head)
      return {
        treeSize: head.treeSize,
        root: head.rootHash,
        checkpoint: head.checkpoint,
        createdAt: head.createdAt,
      };
    // the empty log: a checkpoint of size 0, signed on demand
    const root = this.tree.root(0);
    return {
      treeSize: 0,
      root,
      checkpoint: signCheckpoint({ origin: this.origin, size: 0, root }, this.key),
      createdAt: 0,
    };
  }

  /** Agent API: a batch of base64 statements from a workload authenticated by `peerChain`. */
  async submitBatch(peerChain: Uint8Array[], body: unknown): Promise<unknown> {
    if (peerChain.length === 0) {
      throw new QhxError(
        "QHX_UNAUTHENTICATED",
        "submitting statements needs an X509-SVID as TLS client certificate",
      );
    }
    let submitter: string;
    try {
      submitter = verifyX509Svid(
        peerChain,
        new Map([[this.core.cfg.trustDomain, this.core.ca.trustBundle()]]),
        this.core.clock.now(),
      ).spiffeId.toString();
    } catch (e) {
      throw new QhxError("QHX_UNAUTHENTICATED", `client certificate refused: ${(e as Error).message}`);
    }
    const list = (body as { statements?: unknown } | null)?.statements;
    if (!Array.isArray(list) || list.length === 0 || list.length > MAX_SUBMIT) {
      throw new ValidationError(
        `must be a list of 1..${MAX_SUBMIT} base64 COSE_Sign1 statements`,
        "statements",
      );
    }
    const results = await Promise.all(
      list.map(async (s) => {
        try {
          if (typeof s !== "string" || !/^[A-Za-z0-9+/]+={0,2}$/.test(s))
            throw new ValidationError("must be base64", "statements[]");
          const r = await this.submit(new Uint8Array(Buffer.from(s, "base64")), submitter);
          return {
            index: r.index,
            tree_size: r.treeSize,
            receipt: Buffer.from(r.receipt).toString("base64"),
            existing: r.existing,
          };
        } catch (e) {
          const err = isQhxError(e)
            ? { code: e.code, message: e.message }
            : { code: "QHX_INTERNAL", message: "internal error" };
          if (!isQhxError(e)) this.core.log.error({ err: e }, "notary submission failed");
          else this.core.log.warn({ submitter, reason: e.message }, "receipt statement refused");
          return { error: err };
        }
      }),
    );
    return { results };
  }
}

const notaries = new WeakMap<ServerCore, Promise<Notary>>();

/** The notary of a server (opened on first use). */
export function notaryFor(core: ServerCore): Promise<Notary> {
  let n = notaries.get(core);
  if (!n) {
    n = Notary.open(core);
    notaries.set(core, n);
    n.catch(() => notaries.delete(core));
  }
  return n;
}

// ---- admin routes ---------------------------------------------------------------------------------------

type Handler = (core: ServerCore, req: AdminRequest, params: string[]) => Promise<AdminResponse>;

function intParam(q: URLSearchParams, name: string, dflt?: number): number | undefined {
  const v = q.get(name);
  if (v === null || v === "") return dflt;
  if (!/^\d{1,15}$/.test(v)) throw new ValidationError("must be a non-negative integer", name);
  return Number(v);
}

function summary(e: LogEntryRecord) {
  return {
    index: e.leafIndex,
    signer: e.signerId,
    peer: e.peerId,
    decision: e.decision,
    exchange_id: e.exchangeId,
    admitted_at: new Date(e.admittedAt).toISOString(),
    tree_size: e.treeSize,
  };
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

export const notaryRoutes: [string, RegExp, Handler][] = [
  [
    "GET",
    /^\/v1\/log\/entries$/,
    async (core, req) => {
      const n = await notaryFor(core);
      const q = req.query;
      const signer = q.get("signer");
      const peer = q.get("peer");
      if (signer) SpiffeId.parse(signer);
      if (peer) SpiffeId.parse(peer);
      const list = await core.ds.listLogEntries({
        ...(signer ? { signerId: signer } : {}),
        ...(peer ? { peerId: peer } : {}),
        fromIndex: intParam(q, "from", 0)!,
        limit: intParam(q, "limit", 1000)!,
      });
      return { status: 200, body: { tree_size: n.size, entries: list.map(summary) } };
    },
  ],
  [
    "GET",
    /^\/v1\/log\/entries\/(\d{1,15})$/,
    async (core, _req, [i]) => {
      await notaryFor(core);
      const e = await core.ds.getLogEntry(Number(i));
      if (!e) throw new NotFoundError("log entry", i!);
      const msg = decodeSign1(e.statement);
      return {
        status: 200,
        body: {
          ...summary(e),
          statement_sha256: hex(e.statementHash),
          leaf_hash: hex(e.leafHash),
          alg: msg.protected.get(HEADER.alg),
          claims: claimsToJson(decodeClaims(msg.payload!)),
        },
      };
    },
  ],
  [
    "GET",
    /^\/v1\/log\/entries\/(\d{1,15})\/receipt$/,
    async (core, _req, [i]) => {
      const n = await notaryFor(core);
      const bytes = await n.exportEntry(Number(i));
      return { status: 200, body: { index: Number(i), receipt: Buffer.from(bytes).toString("base64") } };
    },
  ],
  [
    "GET",
    /^\/v1\/log\/checkpoint$/,
    async (core) => {
      const n = await notaryFor(core);
      const c = await n.checkpoint();
      return {
        status: 200,
        body: { origin: n.origin, tree_size: c.treeSize, root: hex(c.root), checkpoint: c.checkpoint },
      };
    },
  ],
  [
    "GET",
    /^\/v1\/log\/consistency$/,
    async (core, req) => {
      const n = await notaryFor(core);
      const from = intParam(req.query, "from");
      const to = intParam(req.query, "to", n.size)!;
      if (from === undefined) throw new ValidationError("is required", "from");
      if (from > to) throw new ValidationError(`must not exceed to (${to})`, "from");
      return { status: 200, body: { first: from, second: to, proof: n.consistency(from, to).map(hex) } };
    },
  ],
  [
    "GET",
    /^\/v1\/log\/trust$/,
    async (core) => {
      const n = await notaryFor(core);
      return {
        status: 200,
        body: {
          origin: n.origin,
          kid: hex(n.kid),
          notary_public_key: n.publicKeyPem(),
          trust_domain: core.cfg.trustDomain,
          bundle: bundleToPem(core.ca.trustBundle()),
        },
      };
    },
  ],
];
