/**
 * Connection reuse between QHx tunnels: the wire format of `qhx-streams/1`.
 *
 * A QHx tunnel client offers the ALPN protocol `qhx-streams/1`; a QHx tunnel server selects it. Any other
 * TLS 1.3 peer (openssl s_client, stunnel, an older QHx) offers no such protocol and gets the plain byte
 * stream: one application connection per TLS connection. Over `qhx-streams/1` a TLS connection carries a
 * sequence of streams, one at a time, each one application connection:
 *
 *   client → server  OPEN                      start a stream (the server authorizes it and connects to
 *                                              its application; DATA may follow at once)
 *   server → client  ACCEPT                    the stream is authorized and the application connected
 *   either way       DATA <bytes>              application bytes
 *   either way       END                       no more bytes this way (TCP half-close)
 *   server → client  REFUSE <reason>           the stream is refused; the server then closes the TLS
 *   either way       RESET <reason>            the stream is aborted; the sender then closes the TLS
 *
 * Frame: type (1 byte), payload length (4 bytes, big-endian), payload. A stream ends cleanly once END
 * went both ways; only then may the client send the next OPEN on the same connection. Anything else —
 * REFUSE, RESET, a protocol error, a TLS error — ends the TLS connection, so no byte of one stream can
 * ever be read as part of another. A server closing an idle connection sends nothing but its TLS
 * close_notify; a client that reused a pooled connection and sees it end before ACCEPT opens a new one
 * and sends the stream again (the server never started it).
 */
import { QhxError } from "../core/errors.ts";

export const STREAMS_ALPN = "qhx-streams/1";

export const F_OPEN = 1;
export const F_ACCEPT = 2;
export const F_DATA = 3;
export const F_END = 4;
export const F_REFUSE = 5;
export const F_RESET = 6;

const NAMES = ["", "OPEN", "ACCEPT", "DATA", "END", "REFUSE", "RESET"];

/** Largest payload of a frame other than DATA (a reason text). */
export const MAX_CONTROL_PAYLOAD = 1024;
/** Largest DATA payload a sender produces (a receiver accepts any length: it streams DATA through). */
export const MAX_DATA_PAYLOAD = 1 << 24;

export class StreamProtocolError extends QhxError {
  constructor(message: string) {
    super("QHX_TUNNEL_PROTOCOL", message);
  }
}

export function frameName(type: number): string {
  return NAMES[type] ?? `0x${type.toString(16)}`;
}

/** The 5-byte header of a frame. */
export function frameHeader(type: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(5);
  b[0] = type;
  b.writeUInt32BE(length, 1);
  return b;
}

/** A whole control frame (no DATA): header and the optional UTF-8 reason. */
export function controlFrame(type: number, reason = ""): Buffer {
  let text = Buffer.from(reason, "utf8");
  if (text.length > MAX_CONTROL_PAYLOAD) text = text.subarray(0, MAX_CONTROL_PAYLOAD);
  return Buffer.concat([frameHeader(type, text.length), text]);
}

export interface FrameHandler {
  /** A piece of a DATA frame's payload (a frame may arrive in several pieces; never empty). */
  data(chunk: Buffer): void;
  /** A whole control frame; `reason` is its payload as text. */
  control(type: number, reason: string): void;
}

/**
 * Incremental frame parser: feed it what the TLS socket reads, it calls the handler in order. DATA
 * payloads are handed through as views of the input (no copy). Throws StreamProtocolError on an unknown
 * frame type or an oversized control frame; the connection must then be closed.
 */
export class FrameParser {
  #hdr = Buffer.alloc(5);
  #hdrLen = 0;
  #type = 0;
  /** payload bytes still expected for the current frame; -1 while reading a header */
  #left = -1;
  #ctrl: Buffer[] = [];
  handler: FrameHandler;

  constructor(handler: FrameHandler) {
    this.handler = handler;
  }

  /** Between frames (no partial header or payload pending). */
  get idle(): boolean {
    return this.#left === -1 && this.#hdrLen === 0;
  }

  push(buf: Buffer): void {
    let i = 0;
    const n = buf.length;
    while (i < n) {
      if (this.#left === -1) {
        // header (fast path when it is whole in this chunk)
        if (this.#hdrLen === 0 && n - i >= 5) {
          this.#type = buf[i]!;
          this.#left = buf.readUInt32BE(i + 1);
          i += 5;
        } else {
          const take = Math.min(5 - this.#hdrLen, n - i);
          buf.copy(this.#hdr, this.#hdrLen, i, i + take);
          this.#hdrLen += take;
          i += take;
          if (this.#hdrLen < 5) return;
          this.#hdrLen = 0;
          this.#type = this.#hdr[0]!;
          this.#left = this.#hdr.readUInt32BE(1);
        }
        const t = this.#type;
        if (t < F_OPEN || t > F_RESET) throw new StreamProtocolError(`unknown frame type ${frameName(t)}`);
        if (t !== F_DATA && this.#left > MAX_CONTROL_PAYLOAD) {
          throw new StreamProtocolError(`${frameName(t)} frame of ${this.#left} bytes`);
        }
        if (this.#left === 0) {
          this.#left = -1;
          if (t !== F_DATA) this.handler.control(t, "");
        }
        continue;
      }
      const take = Math.min(this.#left, n - i);
      const piece = take === n && i === 0 ? buf : buf.subarray(i, i + take);
      i += take;
      this.#left -= take;
      if (this.#type === F_DATA) {
        if (this.#left === 0) this.#left = -1;
        this.handler.data(piece);
      } else {
        this.#ctrl.push(Buffer.from(piece));
        if (this.#left === 0) {
          this.#left = -1;
          const reason = Buffer.concat(this.#ctrl).toString("utf8");
          this.#ctrl = [];
          this.handler.control(this.#type, reason);
        }
      }
    }
  }
}
