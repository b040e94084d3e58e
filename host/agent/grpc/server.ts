/**
 * A minimal gRPC server (gRPC over HTTP/2, https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md)
 * on node:http2, cleartext (h2c) over a Unix socket. It exists because the agent must know who is calling:
 * every call's handler gets the `PeerCred` that `peerOf` reads from the call's own connection socket,
 * which @grpc/grpc-js does not expose.
 *
 * Wire behaviour:
 * - requests: `POST /<service>/<method>`, `content-type: application/grpc` or `application/grpc+proto`
 *   (anything else not starting with `application/grpc` gets HTTP 415, as the spec asks); messages are
 *   5-byte length-prefixed; a message with the compressed flag set gets UNIMPLEMENTED (this server
 *   advertises `grpc-accept-encoding: identity` and never compresses); a message larger than
 *   `maxReceiveMessageBytes` gets RESOURCE_EXHAUSTED; an undecodable one INTERNAL.
 * - responses: HTTP 200, `content-type: application/grpc`, messages, then `grpc-status` / `grpc-message`
 *   (percent-encoded) trailers. A call that ends before its first message is answered Trailers-Only
 *   (one HEADERS frame with END_STREAM), e.g. unknown service or method → UNIMPLEMENTED.
 * - `grpc-timeout` is honoured: at the deadline the handler's signal aborts and the call ends with
 *   DEADLINE_EXCEEDED. A malformed `grpc-timeout` is INTERNAL (as grpc-go does).
 * - client cancellation (RST_STREAM, or the connection going away) aborts the handler's signal; nothing
 *   more is sent on that call.
 * - `close()` does what SPIRE's agent does on shutdown (grpc-go `Server.Stop()`: listener closed, every
 *   open call ended, connections closed), except that instead of dropping connections mid-call it first
 *   ends every open call with UNAVAILABLE "the server is shutting down" trailers (the status grpc-go
 *   clients see after Stop(), and the one SPIFFE clients treat as retryable), then sends GOAWAY and
 *   destroys connections that have not gone away after `shutdownGraceMs`.
 * - the socket file is created with mode 0777: any local user may call; authorization is attestation.
 *
 * Handlers see plain objects: requests are decoded with protobufjs `toObject({ defaults, arrays,
 * objects })` (field names as in the .proto — parse with `keepCase: true` — bytes as Buffer, int64 as
 * number/Long per protobufjs), responses are encoded from plain objects with `fromObject` (or passed
 * already encoded as a Uint8Array).
 */
import fs from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import type { Type } from "protobufjs";
import { QhxError } from "../../core/errors.ts";
import type { Logger } from "../../server/logger.ts";
import type { PeerCred } from "../workload/types.ts";
import { encodeGrpcMessage, GrpcError, GrpcStatus, type GrpcStatusCode } from "./status.ts";

export {
  decodeGrpcMessage,
  encodeGrpcMessage,
  GrpcError,
  GrpcStatus,
  type GrpcStatusCode,
  type GrpcStatusName,
  grpcStatusName,
  isGrpcError,
} from "./status.ts";

/** A protobuf message as a plain object, field names as written in the .proto. */
export type ProtoMessage = Record<string, unknown>;

/** What every handler gets about its call. */
export interface GrpcCallContext {
  /** `/<service>/<method>` */
  readonly path: string;
  /** The caller, as `peerOf` read it from this call's connection. */
  readonly peer: PeerCred;
  /** The request headers (metadata), lower-case names; `-bin` values are still base64. */
  readonly metadata: Readonly<http2.IncomingHttpHeaders>;
  /** Aborts when the call ends for any reason: client cancel, deadline, server close, or completion. */
  readonly signal: AbortSignal;
  /** Epoch milliseconds of the grpc-timeout deadline, if the client sent one. */
  readonly deadline: number | undefined;
}

export interface GrpcServerStreamCall extends GrpcCallContext {
  /**
   * Send one response message (a plain object of the method's responseType, or its encoding). Resolves
   * when HTTP/2 has taken it (so a slow reader applies back-pressure); rejects with a GrpcError once the
   * call has ended.
   */
  send(message: ProtoMessage | Uint8Array): Promise<void>;
}

export interface GrpcBidiStreamCall extends GrpcServerStreamCall {
  /**
   * The client's messages in order. Ends when the client half-closes; throws a GrpcError if the call
   * ends first (cancel, deadline, protocol error, shutdown).
   */
  readonly requests: AsyncIterable<ProtoMessage>;
}

export interface GrpcUnaryMethod {
  type: "unary";
  requestType: Type;
  responseType: Type;
  handler(request: ProtoMessage, call: GrpcCallContext): Promise<ProtoMessage | Uint8Array>;
}

export interface GrpcServerStreamMethod {
  type: "server_stream";
  requestType: Type;
  responseType: Type;
  /** Resolve to end the call with OK; throw a GrpcError to end it with that status. */
  handler(request: ProtoMessage, call: GrpcServerStreamCall): Promise<void>;
}

export interface GrpcBidiStreamMethod {
  type: "bidi_stream";
  requestType: Type;
  responseType: Type;
  /** Resolve to end the call with OK; throw a GrpcError to end it with that status. */
  handler(call: GrpcBidiStreamCall): Promise<void>;
}

export type GrpcMethod = GrpcUnaryMethod | GrpcServerStreamMethod | GrpcBidiStreamMethod;

/** Method name (as in the .proto `rpc` line) → implementation. */
export type GrpcServiceImplementation = Record<string, GrpcMethod>;

export interface GrpcServerOptions {
  /**
   * Who is on the other end of a connection (SO_PEERCRED). Called once per call with the connection's
   * net.Socket; a throw (or rejection) ends the call with UNAVAILABLE.
   */
  peerOf: (socket: net.Socket) => PeerCred | Promise<PeerCred>;
  logger?: Logger;
  /** Largest request message accepted. Default 4 MiB (the gRPC default). */
  maxReceiveMessageBytes?: number;
  /** Largest response message sent (a larger one ends the call with RESOURCE_EXHAUSTED). Default 16 MiB. */
  maxSendMessageBytes?: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection. Default 1000. */
  maxConcurrentStreams?: number;
  /** How long close() lets connections go away by themselves before destroying them. Default 1000 ms. */
  shutdownGraceMs?: number;
}

export const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024;
export const DEFAULT_MAX_SEND_MESSAGE_BYTES = 16 * 1024 * 1024;

const RESPONSE_CONTENT_TYPE = "application/grpc";
/** grpc-timeout: at most 8 digits and a unit (hours, minutes, seconds, milli-, micro-, nanoseconds). */
const TIMEOUT_RE = /^(\d{1,8})([HMSmun])$/;
const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };
/** setTimeout's largest delay; a longer deadline is as good as none. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Lets the per-connection raw socket be read back through Http2Session.socket (a proxy to it). */
const kRawSocket = Symbol("qhx.grpc.rawSocket");

/** grpc-timeout header value → milliseconds; throws GrpcError(INTERNAL) when malformed. */
export function parseGrpcTimeout(value: string): number {
  const m = TIMEOUT_RE.exec(value);
  if (!m) throw new GrpcError(GrpcStatus.INTERNAL, `malformed grpc-timeout: ${JSON.stringify(value)}`);
  return Number(m[1]) * TIMEOUT_UNIT_MS[m[2]!]!;
}

/** Splits the request byte stream into length-prefixed messages. */
class MessageDecoder {
  private chunks: Buffer[] = [];
  private size = 0;
  private need: number | undefined;
  private readonly maxBytes: number;
  private readonly encoding: string | undefined;

  constructor(maxBytes: number, encoding: string | undefined) {
    this.maxBytes = maxBytes;
    this.encoding = encoding;
  }

  /** The complete messages this chunk finishes; throws GrpcError on a protocol violation. */
  push(chunk: Buffer): Buffer[] {
    this.chunks.push(chunk);
    this.size += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.need === undefined) {
        if (this.size < 5) break;
        const head = this.take(5);
        const flag = head[0]!;
        const length = head.readUInt32BE(1);
        if (flag !== 0) {
          throw new GrpcError(
            GrpcStatus.UNIMPLEMENTED,
            `compressed messages are not supported (grpc-encoding: ${this.encoding ?? "none"}); ` +
              "this server accepts identity encoding only",
          );
        }
        if (length > this.maxBytes) {
          throw new GrpcError(
            GrpcStatus.RESOURCE_EXHAUSTED,
            `received message larger than max (${length} vs. ${this.maxBytes})`,
          );
        }
        this.need = length;
      }
      if (this.size < this.need) break;
      out.push(this.take(this.need));
      this.need = undefined;
    }
    return out;
  }

  /** True when no partial message is buffered. */
  get idle(): boolean {
    return this.size === 0 && this.need === undefined;
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
    const head = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.size -= n;
    return head;
  }
}

/** The request messages of one call, consumed one at a time, with back-pressure on the HTTP/2 stream. */
class RequestQueue {
  private readonly items: Buffer[] = [];
  private ended = false;
  private error: GrpcError | undefined;
  private wake: (() => void) | undefined;
  private readonly stream: http2.ServerHttp2Stream;
  private paused = false;

  constructor(stream: http2.ServerHttp2Stream) {
    this.stream = stream;
  }

  push(msg: Buffer): void {
    if (this.ended || this.error) return;
    this.items.push(msg);
    if (this.items.length >= 32 && !this.paused) {
      this.paused = true;
      this.stream.pause();
    }
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(e: GrpcError): void {
    if (!this.error) this.error = e;
    this.notify();
  }

  /** The next message, undefined at the client's half-close; throws the error the call ended with. */
  async next(): Promise<Buffer | undefined> {
    for (;;) {
      const item = this.items.shift();
      if (item !== undefined) {
        if (this.paused && this.items.length < 8) {
          this.paused = false;
          this.stream.resume();
        }
        return item;
      }
      if (this.error) throw this.error;
      if (this.ended) return undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

/** One RPC on one HTTP/2 stream. */
class ServerCall {
  readonly controller = new AbortController();
  readonly stream: http2.ServerHttp2Stream;
  readonly path: string;
  readonly requests: RequestQueue;
  done = false;
  private readonly startedAt = Date.now();
  private headersSent = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly server: GrpcServer;
  private readonly maxSend: number;

  constructor(server: GrpcServer, stream: http2.ServerHttp2Stream, path: string, maxSend: number) {
    this.server = server;
    this.stream = stream;
    this.path = path;
    this.maxSend = maxSend;
    this.requests = new RequestQueue(stream);
  }

  setDeadline(ms: number): void {
    if (ms > MAX_TIMER_MS) return;
    this.timer = setTimeout(() => this.finish(GrpcStatus.DEADLINE_EXCEEDED, "deadline exceeded"), ms);
  }

  /** The error a send or a read sees once the call has ended. */
  endedError(): GrpcError {
    const reason: unknown = this.controller.signal.reason;
    return reason instanceof GrpcError ? reason : new GrpcError(GrpcStatus.CANCELLED, "the call has ended");
  }

  async send(bytes: Uint8Array): Promise<void> {
    if (!this.done && (this.stream.closed || this.stream.destroyed)) this.onClosed();
    if (this.done) throw this.endedError();
    if (bytes.length > this.maxSend) {
      throw new GrpcError(
        GrpcStatus.RESOURCE_EXHAUSTED,
        `response message larger than max (${bytes.length} vs. ${this.maxSend})`,
      );
    }
    if (!this.headersSent) {
      this.headersSent = true;
      this.stream.respond(
        { ":status": 200, "content-type": RESPONSE_CONTENT_TYPE, "grpc-accept-encoding": "identity" },
        { waitForTrailers: true },
      );
    }
    const frame = Buffer.allocUnsafe(5 + bytes.length);
    frame[0] = 0;
    frame.writeUInt32BE(bytes.length, 1);
    frame.set(bytes, 5);
    const signal = this.controller.signal;
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(this.endedError());
      signal.addEventListener("abort", onAbort, { once: true });
      this.stream.write(frame, (err) => {
        signal.removeEventListener("abort", onAbort);
        if (err) reject(this.done ? this.endedError() : new GrpcError(GrpcStatus.UNAVAILABLE, err.message));
        else resolve();
      });
    });
  }

  /** End the call with this status (idempotent: the first end wins). */
  finish(status: GrpcStatusCode, message: string): void {
    if (this.done) return;
    this.done = true;
    this.cleanup();
    this.server.log?.debug(
      { path: this.path, status, message, ms: Date.now() - this.startedAt },
      "gRPC call ended",
    );
    const stream = this.stream;
    if (!stream.closed && !stream.destroyed) {
      const trailers: http2.OutgoingHttpHeaders = { "grpc-status": String(status) };
      if (message) trailers["grpc-message"] = encodeGrpcMessage(message);
      try {
        if (!this.headersSent) {
          this.headersSent = true;
          stream.respond(
            { ":status": 200, "content-type": RESPONSE_CONTENT_TYPE, ...trailers },
            { endStream: true },
          );
        } else {
          stream.once("wantTrailers", () => {
            try {
              stream.sendTrailers(trailers);
            } catch {
              // the stream went away between end() and the trailers: nothing left to tell
            }
          });
          stream.end();
        }
      } catch (e) {
        this.server.log?.debug({ err: e, path: this.path }, "could not end gRPC call");
      }
      // Whatever the client still sends is not wanted; keep the connection window moving.
      stream.resume();
    }
    this.requests.fail(new GrpcError(status === GrpcStatus.OK ? GrpcStatus.CANCELLED : status, message));
    this.controller.abort(new GrpcError(status, message || "the call has ended"));
  }

  /** The stream closed (RST_STREAM from the client, connection loss, or after our own end). */
  onClosed(): void {
    if (this.done) return;
    this.done = true;
    this.cleanup();
    this.server.log?.debug(
      { path: this.path, ms: Date.now() - this.startedAt },
      "gRPC call cancelled by the client",
    );
    const e = new GrpcError(GrpcStatus.CANCELLED, "the client cancelled the call");
    this.requests.fail(e);
    this.controller.abort(e);
  }

  private cleanup(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.server.calls.delete(this);
  }
}

function singleHeader(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function isGrpcContentType(ct: string): boolean {
  return (
    ct === "application/grpc" || ct.startsWith("application/grpc+") || ct.startsWith("application/grpc;")
  );
}

/** Removes a Unix socket left by a dead process; refuses to touch a live one or a non-socket. */
async function removeStaleSocket(path: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  if (!st.isSocket()) {
    throw new QhxError("QHX_SOCKET_PATH_IN_USE", `${path} exists and is not a socket`, {
      hint: "choose another socket path or remove the file",
    });
  }
  // Only ECONNREFUSED proves nobody listens; any other failure (e.g. EACCES) leaves the file alone.
  const alive = await new Promise<boolean>((resolve, reject) => {
    const probe = net.connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "ECONNREFUSED") resolve(false);
      else
        reject(
          new QhxError("QHX_SOCKET_PATH_IN_USE", `cannot probe the existing socket ${path}: ${e.message}`),
        );
    });
  });
  if (alive) {
    throw new QhxError("QHX_SOCKET_IN_USE", `another process is already serving ${path}`, {
      hint: "stop the other agent or choose another socket path",
    });
  }
  fs.unlinkSync(path);
}

export class GrpcServer {
  /** Open calls (internal; exposed for close() and tests). */
  readonly calls = new Set<ServerCall>();
  readonly log: Logger | undefined;
  private readonly services = new Map<string, GrpcServiceImplementation>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly options: GrpcServerOptions;
  private readonly http: http2.Http2Server;
  private listeningPath: string | undefined;
  private closing: Promise<void> | undefined;

  constructor(options: GrpcServerOptions) {
    this.options = options;
    this.log = options.logger;
    this.http = http2.createServer({
      settings: { maxConcurrentStreams: options.maxConcurrentStreams ?? 1000 },
      // nghttp2's rapid-reset guard (1000 resets, then 33/s) kills connections of ordinary SPIFFE clients
      // that fetch once and cancel, many times a second. Callers here are local processes on a Unix
      // socket, so allow a far higher rate while keeping a bound.
      streamResetBurst: 100_000,
      streamResetRate: 10_000,
    } as http2.ServerOptions);
    this.http.on("connection", (socket: net.Socket) => {
      (socket as unknown as Record<symbol, unknown>)[kRawSocket] = socket;
    });
    this.http.on("session", (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      session.on("close", () => this.sessions.delete(session));
      session.on("error", (err) => this.log?.debug({ err }, "gRPC connection error"));
      if (this.closing) session.close();
    });
    this.http.on("sessionError", (err) => this.log?.debug({ err }, "gRPC session error"));
    this.http.on("stream", (stream, headers) => this.onStream(stream, headers));
  }

  /** Register a service under its full name (`package.Service`, or just `Service` without a package). */
  addService(serviceName: string, implementation: GrpcServiceImplementation): void {
    if (this.services.has(serviceName)) {
      throw new QhxError("QHX_INVALID_ARGUMENT", `gRPC service ${serviceName} is already registered`);
    }
    this.services.set(serviceName, { ...implementation });
  }

  /** The socket path being served, once listen() resolved. */
  get socketPath(): string | undefined {
    return this.listeningPath;
  }

  /**
   * Listen on a Unix socket (mode 0777). A stale socket file left by a dead process is replaced; a live
   * one (something accepts connections on it) or a non-socket file is an error.
   */
  async listen(socketPath: string): Promise<void> {
    if (this.listeningPath)
      throw new QhxError("QHX_INVALID_ARGUMENT", "the gRPC server is already listening");
    await removeStaleSocket(socketPath);
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error) =>
        reject(
          new QhxError("QHX_SOCKET_LISTEN_FAILED", `cannot listen on ${socketPath}: ${e.message}`, {
            hint: "check that the socket's directory exists and is writable (a socket path is at most 107 bytes)",
            cause: e,
          }),
        );
      this.http.once("error", onError);
      this.http.listen(socketPath, () => {
        this.http.off("error", onError);
        resolve();
      });
    });
    fs.chmodSync(socketPath, 0o777);
    this.listeningPath = socketPath;
    this.http.on("error", (err) => this.log?.error({ err }, "gRPC server error"));
  }

  /**
   * Stop: no new connections; every open call ends with UNAVAILABLE; connections get GOAWAY and are
   * destroyed after shutdownGraceMs if still open. Resolves when the listener is closed (the socket file
   * is removed). Idempotent.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = new Promise<void>((resolve) => {
      for (const call of [...this.calls]) call.finish(GrpcStatus.UNAVAILABLE, "the server is shutting down");
      for (const s of this.sessions) s.close();
      const grace = setTimeout(() => {
        for (const s of this.sessions) s.destroy();
      }, this.options.shutdownGraceMs ?? 1000);
      grace.unref();
      if (!this.http.listening) {
        clearTimeout(grace);
        resolve();
        return;
      }
      this.http.close(() => {
        clearTimeout(grace);
        resolve();
      });
    });
    return this.closing;
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on("error", (err) => this.log?.debug({ err }, "gRPC stream error"));
    // (respond() throws if the client reset the stream meanwhile: never let that escape this listener)
    const answer = (headers: http2.OutgoingHttpHeaders) => {
      if (stream.closed || stream.destroyed) return;
      try {
        stream.respond(headers, { endStream: true });
        stream.resume();
      } catch (err) {
        this.log?.debug({ err }, "could not answer a gRPC request");
      }
    };
    const trailersOnly = (status: GrpcStatusCode, message: string) =>
      answer({
        ":status": 200,
        "content-type": RESPONSE_CONTENT_TYPE,
        "grpc-status": String(status),
        "grpc-message": encodeGrpcMessage(message),
      });
    const plainHttp = (status: number) => answer({ ":status": status });

    if (this.closing) return trailersOnly(GrpcStatus.UNAVAILABLE, "the server is shutting down");
    if (headers[":method"] !== "POST") return plainHttp(405);
    const contentType = singleHeader(headers["content-type"]) ?? "";
    if (!isGrpcContentType(contentType)) return plainHttp(415);
    const subtype = /^application\/grpc\+([^;]*)/.exec(contentType)?.[1];
    if (subtype !== undefined && subtype !== "proto") {
      return trailersOnly(GrpcStatus.UNIMPLEMENTED, `content-subtype ${subtype} is not supported`);
    }

    const path = singleHeader(headers[":path"]) ?? "";
    const m = /^\/([^/]+)\/([^/]+)$/.exec(path);
    if (!m) return trailersOnly(GrpcStatus.UNIMPLEMENTED, `malformed method name: ${JSON.stringify(path)}`);
    const service = this.services.get(m[1]!);
    if (!service) return trailersOnly(GrpcStatus.UNIMPLEMENTED, `unknown service ${m[1]}`);
    const method = Object.hasOwn(service, m[2]!) ? service[m[2]!] : undefined;
    if (!method) return trailersOnly(GrpcStatus.UNIMPLEMENTED, `unknown method ${m[2]} for service ${m[1]}`);

    let timeoutMs: number | undefined;
    const timeoutHeader = singleHeader(headers["grpc-timeout"]);
    if (timeoutHeader !== undefined) {
      try {
        timeoutMs = parseGrpcTimeout(timeoutHeader);
      } catch (e) {
        return trailersOnly((e as GrpcError).status, (e as GrpcError).message);
      }
    }

    const call = new ServerCall(
      this,
      stream,
      path,
      this.options.maxSendMessageBytes ?? DEFAULT_MAX_SEND_MESSAGE_BYTES,
    );
    this.calls.add(call);
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    if (timeoutMs !== undefined) call.setDeadline(timeoutMs);

    const decoder = new MessageDecoder(
      this.options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
      singleHeader(headers["grpc-encoding"]),
    );
    stream.on("data", (chunk: Buffer) => {
      if (call.done) return;
      try {
        for (const msg of decoder.push(chunk)) call.requests.push(msg);
      } catch (e) {
        const ge = e as GrpcError;
        call.finish(ge.status, ge.message);
      }
    });
    stream.on("end", () => {
      if (call.done) return;
      // A reset stream also ends the readable side: that is a cancel, not the client's half-close.
      if (stream.closed || stream.destroyed) {
        call.onClosed();
        return;
      }
      if (!decoder.idle) {
        call.finish(GrpcStatus.INTERNAL, "the request ended in the middle of a message");
        return;
      }
      call.requests.end();
    });
    stream.on("close", () => call.onClosed());

    void this.run(call, method, headers, deadline);
  }

  private async run(
    call: ServerCall,
    method: GrpcMethod,
    headers: http2.IncomingHttpHeaders,
    deadline: number | undefined,
  ): Promise<void> {
    try {
      const session = call.stream.session;
      if (!session) throw new GrpcError(GrpcStatus.UNAVAILABLE, "the connection has gone away");
      const proxy = session.socket as unknown as Record<symbol, unknown>;
      const socket = (proxy[kRawSocket] as net.Socket | undefined) ?? (session.socket as net.Socket);
      let peer: PeerCred;
      try {
        peer = await this.options.peerOf(socket);
      } catch (e) {
        this.log?.error({ err: e, path: call.path }, "could not identify the caller of a gRPC call");
        throw new GrpcError(GrpcStatus.UNAVAILABLE, "could not identify the calling process");
      }
      if (call.done) return;

      const decode = (bytes: Buffer): ProtoMessage => {
        try {
          const t = method.requestType;
          return t.toObject(t.decode(bytes), { defaults: true, arrays: true, objects: true });
        } catch (e) {
          throw new GrpcError(GrpcStatus.INTERNAL, `could not decode the request: ${(e as Error).message}`);
        }
      };
      const encode = (msg: ProtoMessage | Uint8Array): Uint8Array => {
        if (msg instanceof Uint8Array) return msg;
        const t = method.responseType;
        return t.encode(t.fromObject(msg)).finish();
      };
      const ctx: GrpcCallContext = {
        path: call.path,
        peer,
        metadata: headers,
        signal: call.controller.signal,
        deadline,
      };
      const streamCtx: GrpcServerStreamCall = { ...ctx, send: (msg) => call.send(encode(msg)) };

      const firstRequest = async (): Promise<ProtoMessage> => {
        const bytes = await call.requests.next();
        if (bytes === undefined)
          throw new GrpcError(GrpcStatus.INTERNAL, "the client sent no request message");
        return decode(bytes);
      };

      switch (method.type) {
        case "unary": {
          const request = await firstRequest();
          const response = await method.handler(request, ctx);
          if (call.done) return;
          await call.send(encode(response));
          break;
        }
        case "server_stream": {
          const request = await firstRequest();
          await method.handler(request, streamCtx);
          break;
        }
        case "bidi_stream": {
          const requests: AsyncIterable<ProtoMessage> = {
            [Symbol.asyncIterator]: () => ({
              next: async (): Promise<IteratorResult<ProtoMessage>> => {
                const bytes = await call.requests.next();
                return bytes === undefined
                  ? { done: true, value: undefined }
                  : { done: false, value: decode(bytes) };
              },
            }),
          };
          await method.handler({ ...streamCtx, requests });
          break;
        }
      }
      call.finish(GrpcStatus.OK, "");
    } catch (e) {
      if (call.done) return;
      if (e instanceof GrpcError) {
        call.finish(e.status, e.message);
      } else {
        this.log?.error({ err: e, path: call.path }, "gRPC handler failed");
        call.finish(GrpcStatus.UNKNOWN, "internal error");
      }
    }
  }
}
