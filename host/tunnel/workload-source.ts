/**
 * An SvidSource that follows the SPIFFE Workload API: one FetchX509SVID server stream (gRPC over HTTP/2 on
 * a Unix socket), each message a full X.509 context (the SVIDs, the own bundle, federated_bundles). Every
 * message that changes the SVID or a bundle emits "change"; when the stream ends or fails the source
 * reconnects with backoff and keeps serving the last good state meanwhile.
 */
import crypto from "node:crypto";
import { EventEmitter } from "node:events";
import http2 from "node:http2";
import net from "node:net";
import type { TrustBundle } from "../core/bundle-types.ts";
import { QhxError } from "../core/errors.ts";
import { SpiffeId } from "../core/spiffeid.ts";
import { readTlv } from "../core/x509.ts";
import { protoType } from "../agent/workload-api/proto.ts";
import { makeSvid, type SvidSource, SvidSourceError, type SvidState } from "./svid-source.ts";

/** Split concatenated DER certificates (the Workload API's wire form). */
export function splitDer(buf: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < buf.length;) {
    const t = readTlv(buf, i);
    out.push(new Uint8Array(buf.subarray(i, t.end)));
    i = t.end;
  }
  return out;
}

interface X509SvidMsg {
  spiffe_id: string;
  x509_svid: Uint8Array;
  x509_svid_key: Uint8Array;
  bundle: Uint8Array;
}

/** The tunnel's state from one X509SVIDResponse (the SVID `spiffeId`, else the default one). */
export function stateFromResponse(msg: Record<string, unknown>, spiffeId?: string): SvidState {
  const svids = (msg.svids ?? []) as X509SvidMsg[];
  const s = spiffeId ? svids.find((x) => x.spiffe_id === spiffeId) : svids[0];
  if (!s) {
    throw new SvidSourceError(
      spiffeId ? `the Workload API holds no SVID for ${spiffeId}` : "the Workload API sent no SVID",
    );
  }
  const key = crypto.createPrivateKey({ key: Buffer.from(s.x509_svid_key), format: "der", type: "pkcs8" });
  const svid = makeSvid(splitDer(s.x509_svid), key);
  const bundles = new Map<string, TrustBundle>();
  const add = (td: string, der: Uint8Array) => {
    const x509Authorities = splitDer(der);
    if (x509Authorities.length) {
      bundles.set(td, { trustDomain: td, x509Authorities, jwtAuthorities: [], sequence: 0 });
    }
  };
  for (const [tdId, der] of Object.entries((msg.federated_bundles ?? {}) as Record<string, Uint8Array>)) {
    add(SpiffeId.parse(tdId).trustDomain, der);
  }
  add(svid.trustDomain, s.bundle);
  return { svid, bundles };
}

export interface WorkloadSvidSourceOptions {
  socketPath: string;
  /** Which of the workload's SVIDs to use (default: the default one, first in the message). */
  spiffeId?: string;
  /** Called on stream failures and bad messages (the source keeps its last good state). */
  onError?: (e: Error) => void;
  /** First reconnect delay (doubles up to 10 s). Default 200 ms. */
  retryMs?: number;
}

export class WorkloadSvidSource extends EventEmitter implements SvidSource {
  readonly opts: WorkloadSvidSourceOptions;
  #state: SvidState | undefined;
  #ready: Promise<void>;
  #resolveReady!: () => void;
  #session: http2.ClientHttp2Session | undefined;
  #closed = false;
  #retry: NodeJS.Timeout | undefined;
  #delay: number;

  constructor(opts: WorkloadSvidSourceOptions) {
    super();
    this.opts = opts;
    this.#delay = opts.retryMs ?? 200;
    this.#ready = new Promise((r) => (this.#resolveReady = r));
    this.#connect();
  }

  current(): SvidState {
    if (!this.#state) throw new QhxError("QHX_UNAVAILABLE", "no SVID received from the Workload API yet");
    return this.#state;
  }

  /** Resolves on the first message; rejects after `timeoutMs` without one. */
  ready(timeoutMs = 30_000): Promise<void> {
    let timer: NodeJS.Timeout;
    return Promise.race([
      this.#ready.then(() => clearTimeout(timer)),
      new Promise<void>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new QhxError(
                "QHX_UNAVAILABLE",
                `no X509-SVID from the Workload API at ${this.opts.socketPath}`,
                {
                  hint: "is the agent running, and is this process registered?",
                },
              ),
            ),
          timeoutMs,
        );
      }),
    ]);
  }

  #report(e: Error): void {
    this.opts.onError?.(e);
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#retry) return;
    this.#session?.destroy();
    this.#session = undefined;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#connect();
    }, this.#delay);
    this.#delay = Math.min(this.#delay * 2, 10_000);
  }

  #connect(): void {
    if (this.#closed) return;
    const reqT = protoType("X509SVIDRequest");
    const resT = protoType("X509SVIDResponse");
    const body = reqT.encode(reqT.fromObject({})).finish();
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    Buffer.from(body).copy(frame, 5);
    const session = http2.connect("http://localhost", {
      createConnection: () => net.connect(this.opts.socketPath),
    });
    this.#session = session;
    session.on("error", (e) => {
      this.#report(new QhxError("QHX_UNAVAILABLE", `Workload API: ${e.message}`));
      this.#scheduleReconnect();
    });
    session.on("close", () => this.#scheduleReconnect());
    const stream = session.request({
      ":method": "POST",
      ":path": "/SpiffeWorkloadAPI/FetchX509SVID",
      "content-type": "application/grpc",
      te: "trailers",
      "workload.spiffe.io": "true",
    });
    let buf: Buffer = Buffer.alloc(0);
    stream.on("data", (c: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, c]) : c;
      while (buf.length >= 5) {
        const len = buf.readUInt32BE(1);
        if (buf.length < 5 + len) break;
        const payload = buf.subarray(5, 5 + len);
        buf = buf.subarray(5 + len);
        try {
          const msg = resT.toObject(resT.decode(payload), { bytes: Buffer, defaults: true, longs: Number });
          this.#apply(stateFromResponse(msg as Record<string, unknown>, this.opts.spiffeId));
          this.#delay = this.opts.retryMs ?? 200;
        } catch (e) {
          this.#report(e as Error);
        }
      }
    });
    const onTrailers = (h: http2.IncomingHttpHeaders) => {
      if (h["grpc-status"] !== undefined && h["grpc-status"] !== "0") {
        this.#report(
          new QhxError(
            "QHX_UNAVAILABLE",
            `Workload API FetchX509SVID: status ${h["grpc-status"]} ${decodeURIComponent(String(h["grpc-message"] ?? ""))}`,
          ),
        );
      }
    };
    stream.on("response", onTrailers);
    stream.on("trailers", onTrailers);
    stream.on("error", () => this.#scheduleReconnect());
    stream.on("close", () => this.#scheduleReconnect());
    stream.end(frame);
  }

  #apply(next: SvidState): void {
    const prev = this.#state;
    this.#state = next;
    if (!prev) {
      this.#resolveReady();
      return;
    }
    this.emit("change", next);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#session?.destroy();
    this.removeAllListeners();
  }
}
