/**
 * gRPC status codes (https://github.com/grpc/grpc/blob/master/doc/statuscodes.md) and the error a handler
 * throws to end a call with one of them.
 */
import { QhxError } from "../../core/errors.ts";

export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusName = keyof typeof GrpcStatus;
export type GrpcStatusCode = (typeof GrpcStatus)[GrpcStatusName];

const NAMES = new Map<number, GrpcStatusName>(
  Object.entries(GrpcStatus).map(([name, code]) => [code, name as GrpcStatusName]),
);

/** `INVALID_ARGUMENT` for 3, … ; `UNKNOWN` for a number that is no status code. */
export function grpcStatusName(code: number): GrpcStatusName {
  return NAMES.get(code) ?? "UNKNOWN";
}

/**
 * Ends a gRPC call with `status` and `message` (sent to the client as grpc-status / grpc-message).
 * Its QhxError `code` is `QHX_GRPC_<STATUS NAME>`, e.g. `QHX_GRPC_PERMISSION_DENIED`.
 */
export class GrpcError extends QhxError {
  readonly status: GrpcStatusCode;

  constructor(status: GrpcStatusCode, message: string, options?: { cause?: unknown }) {
    super(`QHX_GRPC_${grpcStatusName(status)}`, message, options);
    this.name = "GrpcError";
    this.status = status;
  }
}

export function isGrpcError(e: unknown): e is GrpcError {
  return e instanceof GrpcError;
}

/**
 * Percent-encoding of grpc-message (gRPC over HTTP/2 spec): the UTF-8 bytes outside printable ASCII
 * 0x20–0x7E, and `%` itself, become `%XX`.
 */
export function encodeGrpcMessage(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    if (byte >= 0x20 && byte <= 0x7e && byte !== 0x25) out += String.fromCharCode(byte);
    else out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** Inverse of encodeGrpcMessage; malformed escapes are kept verbatim (as the spec asks of receivers). */
export function decodeGrpcMessage(encoded: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < encoded.length; i++) {
    const c = encoded.charCodeAt(i);
    if (c === 0x25 && /^[0-9A-Fa-f]{2}$/.test(encoded.slice(i + 1, i + 3))) {
      bytes.push(parseInt(encoded.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(c & 0xff);
    }
  }
  return Buffer.from(bytes).toString("utf8");
}
