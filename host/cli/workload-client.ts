/**
 * A small SPIFFE Workload API client (gRPC over HTTP/2 on a Unix socket, node:http2 + protobufjs) for
 * `qhx svid fetch`, `qhx jwt fetch` and `qhx agent healthcheck`. It reads the first message of
 * FetchX509SVID, or one unary answer, and closes.
 */
import http2 from "node:http2";
import net from "node:net";
import { QhxError } from "../core/errors.ts";
import { protoType } from "../agent/workload-api/proto.ts";

const STATUS_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

export function defaultWorkloadSocket(): string | undefined {
  const env = process.env.SPIFFE_ENDPOINT_SOCKET;
  if (!env) return undefined;
  return env.startsWith("unix://")
    ? env.slice("unix://".length)
    : env.startsWith("unix:")
      ? env.slice(5)
      : env;
}

/** Call `method` and return the first response message, decoded. */
export function workloadCall(
  socketPath: string,
  method: string,
  requestType: string,
  responseType: string,
  request: Record<string, unknown>,
  timeoutMs = 10_000,
): Promise<Record<string, unknown>> {
  const reqT = protoType(requestType);
  const resT = protoType(responseType);
  const body = reqT.encode(reqT.fromObject(request)).finish();
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  Buffer.from(body).copy(frame, 5);
  return new Promise((resolve, reject) => {
    const session = http2.connect("http://localhost", { createConnection: () => net.connect(socketPath) });
    const done = (e?: unknown, v?: Record<string, unknown>) => {
      clearTimeout(timer);
      session.close();
      session.destroy();
      if (e) reject(e);
      else resolve(v!);
    };
    const timer = setTimeout(
      () => done(new QhxError("QHX_UNAVAILABLE", `no answer from the Workload API at ${socketPath}`)),
      timeoutMs,
    );
    session.on("error", (e: NodeJS.ErrnoException) =>
      done(
        new QhxError(
          "QHX_UNAVAILABLE",
          `cannot reach the Workload API at ${socketPath}: ${e.code ?? e.message}`,
          {
            hint: "is `qhx agent start` running? set --socket or SPIFFE_ENDPOINT_SOCKET",
          },
        ),
      ),
    );
    const stream = session.request({
      ":method": "POST",
      ":path": `/SpiffeWorkloadAPI/${method}`,
      "content-type": "application/grpc",
      te: "trailers",
      "workload.spiffe.io": "true",
    });
    let buf = Buffer.alloc(0);
    let status: string | undefined;
    let message = "";
    const finishWithStatus = () => {
      const code = Number(status ?? 2);
      const name = STATUS_NAMES[code] ?? String(code);
      done(
        new QhxError(
          `WORKLOAD_API_${name}`,
          `Workload API ${method}: ${name}: ${decodeURIComponent(message)}`,
        ),
      );
    };
    stream.on("response", (headers) => {
      if (headers["grpc-status"] !== undefined) {
        status = String(headers["grpc-status"]);
        message = String(headers["grpc-message"] ?? "");
      }
    });
    stream.on("trailers", (t) => {
      status = String(t["grpc-status"]);
      message = String(t["grpc-message"] ?? "");
    });
    stream.on("data", (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= 5) {
        const len = buf.readUInt32BE(1);
        if (buf.length >= 5 + len) {
          const msg = resT.toObject(resT.decode(buf.subarray(5, 5 + len)), {
            bytes: Buffer,
            defaults: true,
            longs: Number,
          });
          stream.close();
          done(undefined, msg as Record<string, unknown>);
        }
      }
    });
    stream.on("end", () => {
      if (status !== undefined && status !== "0") finishWithStatus();
      else done(new QhxError("QHX_BAD_RESPONSE", `Workload API ${method} ended without a message`));
    });
    stream.on("error", (e) => done(e));
    stream.end(frame);
  });
}
