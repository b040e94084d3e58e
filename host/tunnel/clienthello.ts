/**
 * Reading a TLS ClientHello before the TLS stack sees it. node:tls gives the negotiated key-exchange group
 * on the client side only (`getEphemeralKeyInfo()` is null on a server socket), so the tunnel server reads
 * the ClientHello off the TCP socket, puts the bytes back (`unshift`, which TLSSocket replays into OpenSSL)
 * and derives the group OpenSSL 3.5 selects (see `selectGroup`).
 */
import type net from "node:net";
import { QhxError } from "../core/errors.ts";

/** IANA TLS Supported Groups registry values QHx speaks, and their names. */
export const TLS_GROUPS: Record<number, string> = {
  0x0017: "P-256",
  0x0018: "P-384",
  0x0019: "P-521",
  0x001d: "X25519",
  0x001e: "X448",
  0x11eb: "SecP256r1MLKEM768",
  0x11ec: "X25519MLKEM768",
  0x11ed: "SecP384r1MLKEM1024",
};

/** The groups each mode offers, in preference order (OpenSSL names; one tuple). */
export const MODE_GROUPS = {
  mtls: ["X25519MLKEM768", "X25519", "P-256"],
  pq: ["X25519MLKEM768"],
} as const;

export const PQ_GROUP = "X25519MLKEM768";

/** A group's name from its code point ("0x1234" when unknown). */
export function groupName(code: number): string {
  return TLS_GROUPS[code] ?? `0x${code.toString(16).padStart(4, "0")}`;
}

/** Normalize node:tls / OpenSSL group names ("prime256v1", "secp256r1") to the registry names. */
export function normalizeGroup(name: string | undefined): string {
  if (!name) return "";
  if (name === "prime256v1" || name === "secp256r1") return "P-256";
  if (name === "secp384r1") return "P-384";
  if (name === "secp521r1") return "P-521";
  return name;
}

export interface ClientHelloInfo {
  /** supported_groups (extension 10), client order */
  supportedGroups: number[];
  /** groups of the key_share entries (extension 51), client order */
  keyShareGroups: number[];
  /** supported_versions (extension 43) */
  versions: number[];
  /** application_layer_protocol_negotiation (extension 16) protocol names, client order */
  alpn: string[];
}

export class ClientHelloError extends QhxError {
  constructor(message: string) {
    super("QHX_TUNNEL_BAD_CLIENT_HELLO", message);
  }
}

/** Most bytes of ClientHello we accept (a hybrid key share is ~1.2 kB; a large one stays far below). */
export const MAX_CLIENT_HELLO = 64 * 1024;

/**
 * How many bytes the handshake message starting the TLS stream in `buf` needs, or 0 if the first
 * record's header is not complete yet. Throws when the bytes are not a TLS handshake.
 * The ClientHello may span several handshake records; their payloads are concatenated.
 */
function handshakeBody(buf: Uint8Array): Uint8Array | null {
  const parts: Uint8Array[] = [];
  let have = 0;
  let need = -1;
  let off = 0;
  while (off + 5 <= buf.length) {
    if (buf[off] !== 22) throw new ClientHelloError(`not a TLS handshake record (content type ${buf[off]})`);
    if (buf[off + 1] !== 3) throw new ClientHelloError("not a TLS record (bad version byte)");
    const len = (buf[off + 3]! << 8) | buf[off + 4]!;
    if (len === 0 || len > 16384 + 256) throw new ClientHelloError(`bad TLS record length ${len}`);
    if (off + 5 + len > buf.length) return null;
    const frag = buf.subarray(off + 5, off + 5 + len);
    parts.push(frag);
    have += frag.length;
    off += 5 + len;
    if (need < 0 && have >= 4) {
      const first = concat(parts);
      if (first[0] !== 1)
        throw new ClientHelloError(`first handshake message is type ${first[0]}, not ClientHello`);
      need = 4 + ((first[1]! << 16) | (first[2]! << 8) | first[3]!);
      if (need > MAX_CLIENT_HELLO) throw new ClientHelloError(`ClientHello of ${need} bytes is too large`);
    }
    if (need >= 0 && have >= need) return concat(parts).subarray(0, need);
  }
  if (buf.length > MAX_CLIENT_HELLO) throw new ClientHelloError("ClientHello too large");
  return null;
}

function concat(parts: Uint8Array[]): Uint8Array {
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/**
 * Parse the ClientHello at the start of `buf` (TLS records). Returns null when more bytes are needed;
 * throws ClientHelloError when the bytes are not a well-formed ClientHello.
 */
export function parseClientHello(buf: Uint8Array): ClientHelloInfo | null {
  const hs = handshakeBody(buf);
  if (!hs) return null;
  const bad = (what: string): never => {
    throw new ClientHelloError(`malformed ClientHello: ${what}`);
  };
  let p = 4;
  const need = (n: number, what: string) => {
    if (p + n > hs.length) bad(`truncated ${what}`);
  };
  need(2 + 32, "version/random");
  p += 2 + 32;
  need(1, "session id");
  p += 1 + hs[p]!;
  need(2, "cipher suites");
  const cs = (hs[p]! << 8) | hs[p + 1]!;
  p += 2 + cs;
  need(1, "compression methods");
  p += 1 + hs[p]!;
  const info: ClientHelloInfo = { supportedGroups: [], keyShareGroups: [], versions: [], alpn: [] };
  if (p === hs.length) return info;
  need(2, "extensions length");
  const extEnd = p + 2 + ((hs[p]! << 8) | hs[p + 1]!);
  p += 2;
  if (extEnd !== hs.length) bad("extensions length does not match the message");
  while (p < extEnd) {
    need(4, "extension header");
    const type = (hs[p]! << 8) | hs[p + 1]!;
    const len = (hs[p + 2]! << 8) | hs[p + 3]!;
    p += 4;
    need(len, `extension ${type}`);
    const e = hs.subarray(p, p + len);
    p += len;
    if (type === 10) {
      if (e.length < 2 || ((e[0]! << 8) | e[1]!) !== e.length - 2 || e.length % 2) bad("supported_groups");
      for (let i = 2; i < e.length; i += 2) info.supportedGroups.push((e[i]! << 8) | e[i + 1]!);
    } else if (type === 51) {
      if (e.length < 2 || ((e[0]! << 8) | e[1]!) !== e.length - 2) bad("key_share");
      for (let i = 2; i < e.length;) {
        if (i + 4 > e.length) bad("key_share entry");
        const g = (e[i]! << 8) | e[i + 1]!;
        const kl = (e[i + 2]! << 8) | e[i + 3]!;
        if (i + 4 + kl > e.length) bad("key_share entry length");
        info.keyShareGroups.push(g);
        i += 4 + kl;
      }
    } else if (type === 16) {
      if (e.length < 2 || ((e[0]! << 8) | e[1]!) !== e.length - 2)
        bad("application_layer_protocol_negotiation");
      for (let i = 2; i < e.length;) {
        const n = e[i]!;
        if (n === 0 || i + 1 + n > e.length) bad("ALPN protocol name");
        info.alpn.push(Buffer.from(e.subarray(i + 1, i + 1 + n)).toString("latin1"));
        i += 1 + n;
      }
    } else if (type === 43) {
      if (e.length < 1 || e[0] !== e.length - 1 || e[0]! % 2) bad("supported_versions");
      for (let i = 1; i < e.length; i += 2) info.versions.push((e[i]! << 8) | e[i + 1]!);
    }
  }
  return info;
}

/**
 * The group an OpenSSL 3.5 TLS 1.3 server whose groups (one tuple) are `serverGroups` selects for this
 * ClientHello: the first key share the client sent (client order) for a group the server has; if none,
 * the first of the client's supported_groups the server has (a HelloRetryRequest); "" if no common group.
 * (Checked against the client's `getEphemeralKeyInfo()` in test/tunnel.)
 */
export function selectGroup(hello: ClientHelloInfo, serverGroups: readonly string[]): string {
  const has = (g: number) => serverGroups.includes(groupName(g));
  for (const g of hello.keyShareGroups) if (has(g)) return groupName(g);
  for (const g of hello.supportedGroups) if (has(g)) return groupName(g);
  return "";
}

/**
 * Read the ClientHello from a fresh server-side TCP socket, then put every byte read back so a TLSSocket
 * wrapping `socket` replays them. Rejects on timeout, close, or bytes that are not a ClientHello.
 */
export function readClientHello(socket: net.Socket, timeoutMs: number): Promise<ClientHelloInfo> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const finish = (e: Error | null, v?: ClientHelloInfo) => {
      clearTimeout(timer);
      socket.off("readable", onReadable);
      socket.off("end", onEnd);
      socket.off("close", onEnd);
      socket.off("error", onError);
      if (chunks.length) socket.unshift(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total));
      if (e) reject(e);
      else resolve(v!);
    };
    const onReadable = () => {
      let c: Buffer | null;
      while ((c = socket.read() as Buffer | null) !== null) {
        chunks.push(c);
        total += c.length;
      }
      let info: ClientHelloInfo | null;
      try {
        info = parseClientHello(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total));
      } catch (e) {
        finish(e as Error);
        return;
      }
      if (info) finish(null, info);
    };
    const onEnd = () => finish(new ClientHelloError("the connection closed before a ClientHello"));
    const onError = (e: Error) => finish(e);
    const timer = setTimeout(
      () => finish(new QhxError("QHX_TUNNEL_HANDSHAKE_TIMEOUT", "no ClientHello in time")),
      timeoutMs,
    );
    socket.on("readable", onReadable);
    socket.on("end", onEnd);
    socket.on("close", onEnd);
    socket.on("error", onError);
  });
}
