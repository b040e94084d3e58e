/**
 * The receipt emitter: a RecordSink (host/tunnel/record.ts) that turns each ExchangeRecord into a signed
 * statement (receipt.ts) and submits it to the notary over the server's agent API — TLS 1.3, the server
 * authenticated as spiffe://<td>/qhx/server against the bundle, the emitter by the very SVID the record
 * names (rec.svid) — asynchronously, in batches.
 *
 * The data path is never blocked and never sees an error: record() only queues. Signing happens off the
 * call (setImmediate), batches go out at most `concurrency` at a time, a batch that fails to reach the
 * notary (network, 5xx) is retried with exponential backoff and jitter (the notary deduplicates, so a retry
 * after a lost answer is harmless), statements the notary refuses are dropped and counted. The queue is
 * bounded: when full, new records are dropped, counted and logged (rate-limited). Metrics:
 * qhx_receipts_total{result=queued|admitted|rejected|dropped|failed}, qhx_receipt_retries_total,
 * qhx_receipt_queue_depth. Optionally each admitted receipt is also written as a transparent statement to
 * `dir` (receipt-<log index>.cose).
 */
import crypto from "node:crypto";
import { EventEmitter } from "node:events";
import fs from "node:fs";
import https from "node:https";
import path from "node:path";
import { Counter, Gauge, type Registry } from "prom-client";
import { isQhxError, parseJsonAnswer, QhxError } from "../core/errors.ts";
import { toPem } from "../core/pem.ts";
import type { ExchangeRecord, RecordSink } from "../tunnel/record.ts";
import { claimsFromRecord, signStatement, transparentStatement } from "./receipt.ts";

export interface EmitterLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface ReceiptEmitterOptions {
  /** the server's agent API address */
  host: string;
  port: number;
  trustDomain: string;
  /** X.509 authorities (DER) to authenticate the server with; a function is asked at each new connection pool */
  roots: Uint8Array[] | (() => Uint8Array[]);
  /** also write admitted receipts here */
  dir?: string;
  /** most records waiting (default 10,000) */
  maxQueue?: number;
  /** most statements per submission (default 64) and bytes of base64 per submission (default 640 KiB) */
  batchSize?: number;
  maxBatchBytes?: number;
  /** backoff: first delay and cap in ms (default 250 ms, 30 s) */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** submissions in flight (default 2) */
  concurrency?: number;
  timeoutMs?: number;
  logger?: EmitterLogger;
  registry?: Registry;
}

interface Item {
  rec?: ExchangeRecord;
  statement?: Uint8Array;
  b64?: string;
  /** TLS identity to submit with */
  svid: ExchangeRecord["svid"];
  fp: string;
  exchangeId: string;
}

export interface EmitterStats {
  queued: number;
  admitted: number;
  rejected: number;
  dropped: number;
  failed: number;
  retries: number;
}

/** Most milliseconds of signing per batch (ML-DSA signatures cost about a millisecond each). */
const SIGN_BUDGET_MS = 4;

const silent: EmitterLogger = { info() {}, warn() {}, error() {} };

/**
 * Event (for tests and embedding; never needed on the data path): "retry" (error, statement count)
 * after a submission that failed and will be retried.
 */
export class ReceiptEmitter extends EventEmitter implements RecordSink {
  private readonly o: Required<Omit<ReceiptEmitterOptions, "dir" | "registry" | "logger">> & {
    dir?: string;
  };
  private readonly log: EmitterLogger;
  private readonly queue: Item[] = [];
  private inflight = 0;
  private scheduled = false;
  private backoffUntil = 0;
  private backoffTimer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private closed = false;
  private abandoned = false;
  private lastDropLog = 0;
  private readonly agents = new Map<string, https.Agent>();
  private idleWaiters: (() => void)[] = [];
  readonly stats: EmitterStats = { queued: 0, admitted: 0, rejected: 0, dropped: 0, failed: 0, retries: 0 };
  private m: { total: Counter<"result">; retries: Counter; depth: Gauge } | undefined;

  constructor(opts: ReceiptEmitterOptions) {
    super();
    this.o = {
      host: opts.host,
      port: opts.port,
      trustDomain: opts.trustDomain,
      roots: opts.roots,
      maxQueue: opts.maxQueue ?? 10_000,
      batchSize: opts.batchSize ?? 64,
      maxBatchBytes: opts.maxBatchBytes ?? 640 * 1024,
      retryBaseMs: opts.retryBaseMs ?? 250,
      retryMaxMs: opts.retryMaxMs ?? 30_000,
      concurrency: opts.concurrency ?? 2,
      timeoutMs: opts.timeoutMs ?? 15_000,
      ...(opts.dir ? { dir: opts.dir } : {}),
    };
    this.log = opts.logger ?? silent;
    if (opts.dir) fs.mkdirSync(opts.dir, { recursive: true });
    if (opts.registry) this.attachMetrics(opts.registry);
  }

  /** Register this emitter's metrics in `registry` (once). */
  attachMetrics(registry: Registry): void {
    if (this.m) return;
    const registers = [registry];
    this.m = {
      total: new Counter({
        name: "qhx_receipts_total",
        help: "Exchange receipts by outcome (queued|admitted|rejected|dropped|failed)",
        labelNames: ["result"] as const,
        registers,
      }),
      retries: new Counter({
        name: "qhx_receipt_retries_total",
        help: "Receipt submissions retried",
        registers,
      }),
      depth: new Gauge({
        name: "qhx_receipt_queue_depth",
        help: "Receipts waiting for the notary",
        registers,
      }),
    };
  }

  private count(result: keyof Omit<EmitterStats, "retries">, n = 1): void {
    this.stats[result] += n;
    this.m?.total.inc({ result }, n);
  }

  /** RecordSink: queue and return at once; never throws. */
  record(rec: ExchangeRecord): void {
    try {
      if (this.closed || this.queue.length >= this.o.maxQueue) {
        this.count("dropped");
        const now = Date.now();
        if (now - this.lastDropLog > 10_000) {
          this.lastDropLog = now;
          this.log.warn(
            { dropped: this.stats.dropped, queue: this.queue.length, closed: this.closed },
            "receipt queue full: exchange receipts dropped",
          );
        }
        return;
      }
      this.queue.push({ rec, svid: rec.svid, fp: rec.localCertSha256, exchangeId: rec.id });
      this.count("queued");
      this.m?.depth.set(this.queue.length);
      this.schedule();
    } catch (e) {
      this.log.error({ err: e }, "receipt emitter failed to queue a record");
    }
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  /** Sign what is unsigned and start batches while capacity allows. */
  private pump(): void {
    if (this.abandoned) {
      if (this.inflight === 0) this.notifyIdle();
      return;
    }
    if (this.queue.length === 0 && this.inflight === 0) {
      this.notifyIdle();
      return;
    }
    const wait = this.backoffUntil - Date.now();
    if (wait > 0) {
      if (!this.backoffTimer) {
        this.backoffTimer = setTimeout(() => {
          this.backoffTimer = undefined;
          this.pump();
        }, wait);
        this.backoffTimer.unref();
      }
      return;
    }
    while (this.inflight < this.o.concurrency && this.queue.length > 0) {
      const batch = this.takeBatch();
      if (batch.length === 0) break;
      this.inflight++;
      void this.submit(batch).finally(() => {
        this.inflight--;
        this.m?.depth.set(this.queue.length);
        this.pump();
      });
    }
  }

  /** Items of one SVID, signed, within the size limits. */
  private takeBatch(): Item[] {
    const fp = this.queue[0]!.fp;
    const batch: Item[] = [];
    let bytes = 0;
    // signing runs on the tunnel's event loop: at most SIGN_BUDGET_MS of it per batch
    const started = performance.now();
    for (let i = 0; i < this.queue.length && batch.length < this.o.batchSize;) {
      const it = this.queue[i]!;
      if (it.fp !== fp) {
        i++;
        continue;
      }
      if (!it.statement && batch.length > 0 && performance.now() - started > SIGN_BUDGET_MS) break;
      if (!this.sign(it)) {
        this.queue.splice(i, 1);
        continue;
      }
      if (batch.length > 0 && bytes + it.b64!.length > this.o.maxBatchBytes) break;
      bytes += it.b64!.length;
      batch.push(it);
      this.queue.splice(i, 1);
    }
    return batch;
  }

  private sign(it: Item): boolean {
    if (it.statement) return true;
    try {
      const rec = it.rec!;
      it.statement = signStatement(claimsFromRecord(rec), rec.svid.key, rec.svid.chainDer);
      it.b64 = Buffer.from(it.statement).toString("base64");
      delete it.rec; // keep the statement, not the record (it holds nothing more we need)
      return true;
    } catch (e) {
      this.count("failed");
      this.log.error({ err: e, exchangeId: it.exchangeId }, "cannot sign an exchange receipt");
      return false;
    }
  }

  private agentFor(it: Item): https.Agent {
    let a = this.agents.get(it.fp);
    if (!a) {
      const expected = `spiffe://${this.o.trustDomain}/qhx/server`;
      a = new https.Agent({
        keepAlive: true,
        maxSockets: this.o.concurrency,
        minVersion: "TLSv1.3",
        ecdhCurve: "X25519MLKEM768:X25519:P-256",
        ca: (typeof this.o.roots === "function" ? this.o.roots() : this.o.roots).map((d) => toPem(d)),
        rejectUnauthorized: true,
        checkServerIdentity: (_h: string, cert: { subjectaltname?: string }) => {
          const uris = (cert.subjectaltname ?? "")
            .split(", ")
            .filter((x) => x.startsWith("URI:"))
            .map((x) => x.slice(4));
          return uris.length === 1 && uris[0] === expected
            ? undefined
            : new Error(`server presented ${uris.join(",") || "no SPIFFE ID"}, expected ${expected}`);
        },
        key: it.svid.key.export({ type: "pkcs8", format: "pem" }) as string,
        cert: it.svid.chainDer.map((d) => toPem(d)).join(""),
      });
      // SVIDs rotate: keep the agents of the few most recent ones
      if (this.agents.size >= 4) {
        const [oldest, agent] = this.agents.entries().next().value as [string, https.Agent];
        agent.destroy();
        this.agents.delete(oldest);
      }
      this.agents.set(it.fp, a);
    }
    return a;
  }

  private post(agent: https.Agent, body: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: this.o.host,
          port: this.o.port,
          method: "POST",
          path: "/notary/v1/statements",
          agent,
          timeout: this.o.timeoutMs,
          headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const status = res.statusCode ?? 500;
            try {
              resolve(parseJsonAnswer(status, Buffer.concat(chunks).toString("utf8")));
            } catch (e) {
              (e as { status?: number }).status = status;
              reject(e);
            }
          });
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new QhxError("QHX_TIMEOUT", "notary request timed out")));
      req.on("error", (e: NodeJS.ErrnoException) =>
        reject(
          isQhxError(e)
            ? e
            : new QhxError("QHX_SERVER_UNREACHABLE", `notary unreachable: ${e.code ?? e.message}`),
        ),
      );
      req.end(body);
    });
  }

  private async submit(batch: Item[]): Promise<void> {
    let answer: {
      results: ({ index: number; receipt: string } | { error: { code: string; message: string } })[];
    };
    try {
      answer = (await this.post(
        this.agentFor(batch[0]!),
        JSON.stringify({ statements: batch.map((b) => b.b64) }),
      )) as typeof answer;
      if (!Array.isArray(answer?.results) || answer.results.length !== batch.length) {
        throw new QhxError("QHX_BAD_RESPONSE", "the notary's answer does not match the batch");
      }
    } catch (e) {
      const status = (e as { status?: number }).status;
      if (status !== undefined && status >= 400 && status < 500) {
        // the whole submission was refused (authentication, malformed): retrying will not help
        this.count("rejected", batch.length);
        this.log.warn({ err: formatErr(e), count: batch.length }, "notary refused a receipt batch");
        return;
      }
      if (this.abandoned) {
        this.count("dropped", batch.length);
        return;
      }
      this.stats.retries += batch.length;
      this.m?.retries.inc(batch.length);
      this.attempt++;
      const delay = Math.min(this.o.retryMaxMs, this.o.retryBaseMs * 2 ** Math.min(this.attempt - 1, 16));
      this.backoffUntil = Date.now() + delay / 2 + Math.random() * (delay / 2);
      this.queue.unshift(...batch);
      // reconnect afresh next time (the server's certificate or our trust anchors may have changed)
      this.agents.get(batch[0]!.fp)?.destroy();
      this.agents.delete(batch[0]!.fp);
      this.log.warn(
        { err: formatErr(e), count: batch.length, retryInMs: Math.round(delay) },
        "receipt submission failed; will retry",
      );
      this.emit("retry", e, batch.length);
      return;
    }
    this.attempt = 0;
    this.backoffUntil = 0;
    answer.results.forEach((r, i) => {
      const it = batch[i]!;
      if ("error" in r) {
        this.count("rejected");
        this.log.warn(
          { exchangeId: it.exchangeId, code: r.error.code, reason: r.error.message },
          "notary rejected a receipt",
        );
        return;
      }
      this.count("admitted");
      if (this.o.dir) {
        try {
          const file = path.join(this.o.dir, `receipt-${r.index}.cose`);
          const tmp = `${file}.${crypto.randomBytes(4).toString("hex")}.tmp`;
          fs.writeFileSync(
            tmp,
            transparentStatement(it.statement!, new Uint8Array(Buffer.from(r.receipt, "base64"))),
          );
          fs.renameSync(tmp, file);
        } catch (e) {
          this.log.error({ err: e, dir: this.o.dir }, "cannot write a receipt file");
        }
      }
    });
  }

  private notifyIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  /** Resolves when every queued record has been admitted, rejected or dropped (retries included). */
  flush(): Promise<void> {
    if (this.queue.length === 0 && this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      this.schedule();
    });
  }

  /** Stop accepting records; wait up to `timeoutMs` for the queue to drain, then drop the rest. */
  async close(timeoutMs = 5000): Promise<void> {
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.flush(), new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
    // give up: nothing new is sent, failures are no longer retried, and every receipt is accounted for
    this.abandoned = true;
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    this.backoffTimer = undefined;
    if (this.queue.length) {
      this.count("dropped", this.queue.length);
      this.log.warn({ dropped: this.queue.length }, "receipt emitter closed with receipts still queued");
      this.queue.length = 0;
    }
    for (const a of this.agents.values()) a.destroy(); // aborts submissions in flight: they count as dropped
    this.agents.clear();
    if (this.inflight > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
    this.notifyIdle();
  }
}

function formatErr(e: unknown): string {
  return isQhxError(e) ? `${e.code}: ${e.message}` : (e as Error).message;
}

/**
 * An emitter for a tunnel: the trust domain and the roots that authenticate the server come from the
 * tunnel's SVID source (re-read whenever a new connection pool is made, so bundle rotation applies).
 */
export function receiptEmitterForSource(o: {
  host: string;
  port: number;
  source: {
    current(): {
      svid: { trustDomain: string };
      bundles: ReadonlyMap<string, { x509Authorities: Uint8Array[] }>;
    };
  };
  dir?: string;
  logger?: EmitterLogger;
  registry?: Registry;
}): ReceiptEmitter {
  const td = o.source.current().svid.trustDomain;
  return new ReceiptEmitter({
    host: o.host,
    port: o.port,
    trustDomain: td,
    roots: () => o.source.current().bundles.get(td)?.x509Authorities ?? [],
    ...(o.dir ? { dir: o.dir } : {}),
    ...(o.logger ? { logger: o.logger } : {}),
    ...(o.registry ? { registry: o.registry } : {}),
  });
}
