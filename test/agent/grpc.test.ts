import fs from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  decodeGrpcMessage,
  encodeGrpcMessage,
  GrpcError,
  GrpcServer,
  type GrpcServerOptions,
  GrpcStatus,
  parseGrpcTimeout,
} from "../../host/agent/grpc/server.ts";
import type { PeerCred } from "../../host/agent/workload/types.ts";
import { tempSocketPath, waitFor } from "./fixtures-api/provider.ts";

const TEST_PROTO = `
syntax = "proto3";
package qhx.test;
message Req { string text = 1; uint32 count = 2; uint32 delay_ms = 3; bytes blob = 4; }
message Res { string text = 1; uint32 index = 2; bytes blob = 3; }
service Test {
  rpc Echo(Req) returns (Res);
  rpc Ticks(Req) returns (stream Res);
  rpc Chat(stream Req) returns (stream Res);
}
`;

const root = new protobuf.Root();
protobuf.parse(TEST_PROTO, root, { keepCase: true });
root.resolveAll();
const Req = root.lookupType("qhx.test.Req");
const Res = root.lookupType("qhx.test.Res");

const PEER: PeerCred = { pid: 1, uid: 2, gid: 3 };

interface Seen {
  peer?: PeerCred;
  aborted?: unknown;
  socket?: net.Socket;
  echoCalls: number;
}

let seen: Seen;
let server: GrpcServer;
let dir: string;
let socket: string;

async function start(opts: Partial<GrpcServerOptions> = {}): Promise<void> {
  server = new GrpcServer({
    peerOf: (s) => {
      seen.socket = s;
      return PEER;
    },
    ...opts,
  });
  server.addService("qhx.test.Test", {
    Echo: {
      type: "unary",
      requestType: Req,
      responseType: Res,
      handler: async (req, call) => {
        seen.echoCalls++;
        seen.peer = call.peer;
        const text = req["text"] as string;
        if (text === "throw-grpc")
          throw new GrpcError(GrpcStatus.FAILED_PRECONDITION, "nicht möglich: 100% ✗");
        if (text === "throw-plain") throw new Error("secret internals");
        return { text: `echo:${text}`, blob: req["blob"] as Uint8Array };
      },
    },
    Ticks: {
      type: "server_stream",
      requestType: Req,
      responseType: Res,
      handler: async (req, call) => {
        call.signal.addEventListener("abort", () => (seen.aborted = call.signal.reason));
        const count = req["count"] as number;
        for (let i = 0; count === 0 || i < count; i++) {
          if (call.signal.aborted) return;
          await call.send({ text: req["text"] as string, index: i });
          await new Promise((r) => setTimeout(r, (req["delay_ms"] as number) || 1));
        }
      },
    },
    Chat: {
      type: "bidi_stream",
      requestType: Req,
      responseType: Res,
      handler: async (call) => {
        call.signal.addEventListener("abort", () => (seen.aborted = call.signal.reason));
        let i = 0;
        let hold = false;
        for await (const m of call.requests) {
          if (m["text"] === "hold") hold = true;
          await call.send({ text: `re:${m["text"] as string}`, index: i++ });
        }
        // "hold": keep the call open after the client's half-close, until it is cancelled
        if (hold) await new Promise((r) => call.signal.addEventListener("abort", r));
        await call.send({ text: "bye", index: i });
      },
    },
  });
  await server.listen(socket);
}

beforeEach(() => {
  seen = { echoCalls: 0 };
  ({ dir, socket } = tempSocketPath("t.sock"));
});

afterEach(async () => {
  await server?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function client(): grpc.Client & Record<string, (...a: unknown[]) => unknown> {
  const def = protoLoader.fromJSON(root.toJSON() as Parameters<typeof protoLoader.fromJSON>[0], {
    keepCase: true,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    qhx: { test: { Test: grpc.ServiceClientConstructor } };
  };
  return new pkg.qhx.test.Test(`unix:${socket}`, grpc.credentials.createInsecure()) as grpc.Client &
    Record<string, (...a: unknown[]) => unknown>;
}

function frame(msg: Uint8Array, flag = 0): Buffer {
  const b = Buffer.alloc(5 + msg.length);
  b[0] = flag;
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
}

function encodeReq(obj: Record<string, unknown>): Uint8Array {
  return Req.encode(Req.fromObject(obj)).finish();
}

interface RawResult {
  headers: http2.IncomingHttpHeaders;
  headersEndStream: boolean;
  trailers: http2.IncomingHttpHeaders | undefined;
  data: Buffer;
  status: string | undefined;
}

/** A gRPC call by hand over node:http2, to see the exact frames the server sends. */
function raw(
  path: string,
  body: Buffer | undefined,
  extraHeaders: http2.OutgoingHttpHeaders = {},
  opts: { cancelAfterMs?: number; endStream?: boolean } = {},
): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const session = http2.connect("http://localhost", { createConnection: () => net.connect(socket) });
    session.on("error", () => {});
    const req = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      ...extraHeaders,
    });
    const res: RawResult = {
      headers: {},
      headersEndStream: false,
      trailers: undefined,
      data: Buffer.alloc(0),
      status: undefined,
    };
    req.on("response", (h, flags) => {
      res.headers = h;
      res.headersEndStream = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    req.on("trailers", (t) => (res.trailers = t));
    req.on("data", (d: Buffer) => (res.data = Buffer.concat([res.data, d])));
    req.on("error", () => {});
    const done = () => {
      const src = res.trailers ?? res.headers;
      res.status = src["grpc-status"] as string | undefined;
      req.close();
      session.close();
      resolve(res);
    };
    // the server's END_STREAM ends the readable side; a reset closes the stream
    req.on("end", done);
    req.on("close", done);
    req.resume();
    if (opts.cancelAfterMs !== undefined) {
      setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), opts.cancelAfterMs);
    }
    if (body) req.write(body);
    if (opts.endStream !== false) req.end();
    setTimeout(() => reject(new Error("raw call timed out")), 5000).unref();
  });
}

function messages(data: Buffer): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  let off = 0;
  while (off < data.length) {
    expect(data[off]).toBe(0);
    const len = data.readUInt32BE(off + 1);
    out.push(Res.toObject(Res.decode(data.subarray(off + 5, off + 5 + len)), { defaults: true }));
    off += 5 + len;
  }
  return out;
}

describe("helpers", () => {
  it("percent-encodes grpc-message and decodes it back", () => {
    expect(encodeGrpcMessage("plain text")).toBe("plain text");
    expect(encodeGrpcMessage("100% ✗\n")).toBe("100%25 %E2%9C%97%0A");
    expect(decodeGrpcMessage("100%25 %E2%9C%97%0A")).toBe("100% ✗\n");
    expect(decodeGrpcMessage("bad %zz escape")).toBe("bad %zz escape");
  });

  it("parses grpc-timeout", () => {
    expect(parseGrpcTimeout("1H")).toBe(3_600_000);
    expect(parseGrpcTimeout("2M")).toBe(120_000);
    expect(parseGrpcTimeout("3S")).toBe(3000);
    expect(parseGrpcTimeout("250m")).toBe(250);
    expect(parseGrpcTimeout("5000u")).toBe(5);
    expect(parseGrpcTimeout("7000000n")).toBe(7);
    for (const bad of ["", "10", "1s", "123456789S", "-1S", "1.5S"]) {
      expect(() => parseGrpcTimeout(bad)).toThrow(GrpcError);
    }
  });

  it("GrpcError carries a stable QhxError code", () => {
    const e = new GrpcError(GrpcStatus.PERMISSION_DENIED, "no");
    expect(e.code).toBe("QHX_GRPC_PERMISSION_DENIED");
    expect(e.status).toBe(7);
  });
});

describe("with @grpc/grpc-js as the client", () => {
  it("unary, server streaming and bidi streaming calls work", async () => {
    await start();
    const c = client();
    const echo = await new Promise<Record<string, unknown>>((resolve, reject) =>
      (c["Echo"] as (r: unknown, cb: (e: Error | null, v: Record<string, unknown>) => void) => void)(
        { text: "hi", blob: Buffer.from([1, 2, 3]) },
        (e, v) => (e ? reject(e) : resolve(v)),
      ),
    );
    expect(echo["text"]).toBe("echo:hi");
    expect([...(echo["blob"] as Buffer)]).toEqual([1, 2, 3]);
    expect(seen.peer).toEqual(PEER);

    const ticks: unknown[] = [];
    const tickStream = (c["Ticks"] as (r: unknown) => grpc.ClientReadableStream<Record<string, unknown>>)({
      text: "t",
      count: 3,
    });
    tickStream.on("data", (m: Record<string, unknown>) => ticks.push(m["index"]));
    const tickStatus = await new Promise<grpc.StatusObject>((resolve) => tickStream.on("status", resolve));
    expect(tickStatus.code).toBe(grpc.status.OK);
    expect(ticks).toEqual([0, 1, 2]);

    const chat = (c["Chat"] as () => grpc.ClientDuplexStream<unknown, Record<string, unknown>>)();
    const replies: unknown[] = [];
    chat.on("data", (m: Record<string, unknown>) => replies.push(m["text"]));
    const chatStatus = new Promise<grpc.StatusObject>((resolve) => chat.on("status", resolve));
    chat.write({ text: "a" });
    chat.write({ text: "b" });
    chat.end();
    expect((await chatStatus).code).toBe(grpc.status.OK);
    expect(replies).toEqual(["re:a", "re:b", "bye"]);
    c.close();
  });

  it("sends handler errors as status + percent-encoded message; hides non-gRPC errors as UNKNOWN", async () => {
    await start();
    const c = client();
    const call = (text: string) =>
      new Promise<grpc.ServiceError>((resolve) =>
        (c["Echo"] as (r: unknown, cb: (e: grpc.ServiceError | null) => void) => void)({ text }, (e) =>
          resolve(e!),
        ),
      );
    const e1 = await call("throw-grpc");
    expect(e1.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(e1.details).toBe("nicht möglich: 100% ✗");
    const e2 = await call("throw-plain");
    expect(e2.code).toBe(grpc.status.UNKNOWN);
    expect(e2.details).toBe("internal error");
    c.close();
  });

  it("ends an open stream with UNAVAILABLE on close() and removes the socket file", async () => {
    await start();
    const c = client();
    const s = (c["Ticks"] as (r: unknown) => grpc.ClientReadableStream<unknown>)({
      text: "x",
      count: 0,
      delay_ms: 20,
    });
    const first = new Promise((resolve) => s.once("data", resolve));
    const status = new Promise<grpc.StatusObject>((resolve) => s.on("status", resolve));
    s.on("error", () => {});
    await first;
    await server.close();
    const st = await status;
    expect(st.code).toBe(grpc.status.UNAVAILABLE);
    expect(st.details).toBe("the server is shutting down");
    expect(seen.aborted).toBeInstanceOf(GrpcError);
    expect(fs.existsSync(socket)).toBe(false);
    c.close();
  });
});

describe("wire format, by hand over node:http2", () => {
  it("answers an unknown service / method / malformed path with a Trailers-Only UNIMPLEMENTED", async () => {
    await start();
    for (const [path, text] of [
      ["/no.such.Service/Echo", "unknown service no.such.Service"],
      ["/qhx.test.Test/Nope", "unknown method Nope for service qhx.test.Test"],
      ["/justone", "malformed method name"],
    ] as const) {
      const r = await raw(path, frame(encodeReq({ text: "x" })));
      expect(r.headers[":status"]).toBe(200);
      expect(r.headers["content-type"]).toBe("application/grpc");
      expect(r.headers["grpc-status"]).toBe(String(GrpcStatus.UNIMPLEMENTED));
      expect(decodeGrpcMessage(r.headers["grpc-message"] as string)).toContain(text);
      expect(r.headersEndStream).toBe(true);
      expect(r.trailers).toBeUndefined();
      expect(r.data.length).toBe(0);
    }
    expect(seen.echoCalls).toBe(0);
  });

  it("sends headers, length-prefixed messages and grpc-status trailers on success", async () => {
    await start();
    const r = await raw("/qhx.test.Test/Echo", frame(encodeReq({ text: "abc" })), {
      "content-type": "application/grpc+proto",
    });
    expect(r.headers[":status"]).toBe(200);
    expect(r.headers["content-type"]).toBe("application/grpc");
    expect(r.headers["grpc-accept-encoding"]).toBe("identity");
    expect(r.headersEndStream).toBe(false);
    expect(r.trailers?.["grpc-status"]).toBe("0");
    expect(messages(r.data)).toEqual([{ text: "echo:abc", index: 0, blob: Buffer.alloc(0) }]);
  });

  it("refuses non-gRPC content types with HTTP 415 and unsupported subtypes with UNIMPLEMENTED", async () => {
    await start();
    const r = await raw("/qhx.test.Test/Echo", frame(encodeReq({})), { "content-type": "text/plain" });
    expect(r.headers[":status"]).toBe(415);
    const j = await raw("/qhx.test.Test/Echo", frame(encodeReq({})), {
      "content-type": "application/grpc+json",
    });
    expect(j.status).toBe(String(GrpcStatus.UNIMPLEMENTED));
  });

  it("refuses a compressed message with UNIMPLEMENTED without calling the handler", async () => {
    await start();
    const r = await raw("/qhx.test.Test/Echo", frame(encodeReq({ text: "x" }), 1), {
      "grpc-encoding": "gzip",
    });
    expect(r.status).toBe(String(GrpcStatus.UNIMPLEMENTED));
    expect(seen.echoCalls).toBe(0);
  });

  it("enforces the receive and send size limits with RESOURCE_EXHAUSTED", async () => {
    await start({ maxReceiveMessageBytes: 1024, maxSendMessageBytes: 1500 });
    const big = await raw("/qhx.test.Test/Echo", frame(encodeReq({ blob: Buffer.alloc(2000) })));
    expect(big.status).toBe(String(GrpcStatus.RESOURCE_EXHAUSTED));
    expect(decodeGrpcMessage(big.headers["grpc-message"] as string)).toMatch(/larger than max/);
    // only the 5-byte prefix announces the size: refused before the body arrives
    const prefixOnly = Buffer.alloc(5);
    prefixOnly.writeUInt32BE(10_000_000, 1);
    const r2 = await raw("/qhx.test.Test/Echo", prefixOnly, {}, { endStream: false });
    expect(r2.status).toBe(String(GrpcStatus.RESOURCE_EXHAUSTED));
    expect(seen.echoCalls).toBe(0);
    const ok = await raw("/qhx.test.Test/Echo", frame(encodeReq({ blob: Buffer.alloc(1000) })));
    expect(ok.status).toBe("0");
  });

  it("refuses a truncated message or a missing request with INTERNAL", async () => {
    await start();
    const whole = frame(encodeReq({ text: "hello" }));
    const cut = await raw("/qhx.test.Test/Echo", whole.subarray(0, whole.length - 2));
    expect(cut.status).toBe(String(GrpcStatus.INTERNAL));
    const none = await raw("/qhx.test.Test/Echo", undefined);
    expect(none.status).toBe(String(GrpcStatus.INTERNAL));
    const garbage = await raw("/qhx.test.Test/Echo", frame(Buffer.from([0xff, 0xff, 0xff])));
    expect(garbage.status).toBe(String(GrpcStatus.INTERNAL));
  });

  it("honours grpc-timeout: DEADLINE_EXCEEDED from the server, handler signal aborted", async () => {
    await start();
    const t0 = Date.now();
    const r = await raw("/qhx.test.Test/Ticks", frame(encodeReq({ text: "x", count: 0, delay_ms: 20 })), {
      "grpc-timeout": "300m",
    });
    const took = Date.now() - t0;
    expect(r.trailers?.["grpc-status"]).toBe(String(GrpcStatus.DEADLINE_EXCEEDED));
    expect(took).toBeGreaterThanOrEqual(280);
    expect(took).toBeLessThan(2000);
    expect(messages(r.data).length).toBeGreaterThan(2);
    expect((seen.aborted as GrpcError).status).toBe(GrpcStatus.DEADLINE_EXCEEDED);
    expect(server.calls.size).toBe(0);
  });

  it("answers a malformed grpc-timeout with INTERNAL", async () => {
    await start();
    const r = await raw("/qhx.test.Test/Echo", frame(encodeReq({})), { "grpc-timeout": "soon" });
    expect(r.status).toBe(String(GrpcStatus.INTERNAL));
  });

  it("stops a streaming handler when the client resets the stream (RST_STREAM CANCEL)", async () => {
    await start();
    await raw(
      "/qhx.test.Test/Ticks",
      frame(encodeReq({ text: "x", count: 0, delay_ms: 10 })),
      {},
      { cancelAfterMs: 150 },
    );
    await waitFor(() => seen.aborted !== undefined, 3000, "abort");
    expect((seen.aborted as GrpcError).status).toBe(GrpcStatus.CANCELLED);
    await waitFor(() => server.calls.size === 0, 3000, "call released");
  });

  it("stops a bidi handler when the client resets the stream", async () => {
    await start();
    // (node:http2's close() half-closes before RST_STREAM, so the handler holds the call open)
    await raw(
      "/qhx.test.Test/Chat",
      frame(encodeReq({ text: "hold" })),
      {},
      { cancelAfterMs: 100, endStream: false },
    );
    await waitFor(() => seen.aborted !== undefined, 3000, "abort");
    expect((seen.aborted as GrpcError).status).toBe(GrpcStatus.CANCELLED);
  });

  it("answers a non-POST request with HTTP 405", async () => {
    await start();
    const r = await raw("/qhx.test.Test/Echo", undefined, { ":method": "GET" });
    expect(r.headers[":status"]).toBe(405);
  });
});

describe("peer identification and the socket", () => {
  it("gives peerOf the connection's real net.Socket", async () => {
    await start();
    await raw("/qhx.test.Test/Echo", frame(encodeReq({ text: "x" })));
    expect(seen.socket).toBeInstanceOf(net.Socket);
    const fd = (seen.socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    expect(typeof fd).toBe("number");
    expect(fd).toBeGreaterThan(0);
  });

  it("ends the call with UNAVAILABLE when peerOf fails, without calling the handler", async () => {
    await start({
      peerOf: () => {
        throw new Error("no SO_PEERCRED");
      },
    });
    const r = await raw("/qhx.test.Test/Echo", frame(encodeReq({ text: "x" })));
    expect(r.status).toBe(String(GrpcStatus.UNAVAILABLE));
    expect(seen.echoCalls).toBe(0);
  });

  it("survives a client that speaks garbage, and keeps serving", async () => {
    await start();
    await new Promise<void>((resolve) => {
      const s = net.connect(socket, () => s.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage"));
      s.on("error", () => {});
      s.on("close", () => resolve());
      s.resume();
      setTimeout(() => s.destroy(), 500).unref();
    });
    const r = await raw("/qhx.test.Test/Echo", frame(encodeReq({ text: "still here" })));
    expect(r.status).toBe("0");
    expect(messages(r.data)[0]!["text"]).toBe("echo:still here");
  });

  it("creates the socket with mode 0777", async () => {
    await start();
    expect(fs.statSync(socket).mode & 0o777).toBe(0o777);
  });

  it("replaces a stale socket, refuses a live one and a non-socket file", async () => {
    // a stale socket file, as a crashed agent leaves it: bound once, nobody listening any more
    // (Node unlinks its socket on close, so move the file aside while closing)
    const dead = net.createServer();
    await new Promise<void>((r) => dead.listen(socket, r));
    fs.renameSync(socket, `${socket}.keep`);
    await new Promise<void>((r) => dead.close(() => r()));
    fs.renameSync(`${socket}.keep`, socket);
    expect(fs.lstatSync(socket).isSocket()).toBe(true);
    await start();
    expect(fs.statSync(socket).mode & 0o777).toBe(0o777);

    const other = new GrpcServer({ peerOf: () => PEER });
    await expect(other.listen(socket)).rejects.toMatchObject({ code: "QHX_SOCKET_IN_USE" });
    await other.close();

    const missing = new GrpcServer({ peerOf: () => PEER });
    await expect(missing.listen(`${dir}/no/such/dir/x.sock`)).rejects.toMatchObject({
      code: "QHX_SOCKET_LISTEN_FAILED",
    });
    await missing.close();

    const file = `${dir}/plain`;
    fs.writeFileSync(file, "x");
    const third = new GrpcServer({ peerOf: () => PEER });
    await expect(third.listen(file)).rejects.toMatchObject({ code: "QHX_SOCKET_PATH_IN_USE" });
    await third.close();
  });
});
