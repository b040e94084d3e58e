/**
 * The tunnels: a TunnelClient accepts plaintext from a local application and carries it over TLS 1.3 to a
 * TunnelServer, which authenticates and authorizes the peer and forwards to its local application.
 *
 * - Peers are authenticated by X509-SVID with the SPIFFE rules (verifyX509Svid against the bundle of the
 *   peer's trust domain, federated ones included), never by hostname: node:tls runs with
 *   `rejectUnauthorized: false` and the tunnel verifies the presented chain itself after the handshake,
 *   before a single byte is piped in either direction.
 * - Mode "mtls" offers X25519MLKEM768, X25519, P-256 (one preference tuple); mode "pq" offers only
 *   X25519MLKEM768 and accepts only peers whose SVID algorithm is in `pqSigAlgs` (ML-DSA by default).
 *   The client learns the group from `getEphemeralKeyInfo()`; the server reads the ClientHello before
 *   handing the socket to OpenSSL and derives the group OpenSSL selects (clienthello.ts). In pq mode the
 *   server has no other group, so a completed handshake proves X25519MLKEM768.
 * - After verification: the mode's requirements, then `peerChecks`, then authorization (server: allow-list
 *   or Cedar action `connect`; client: the expected server SPIFFE IDs).
 * - The secure context is rebuilt when the SvidSource changes (rotation): established connections keep
 *   theirs, new ones use the new SVID. Bundles are read at each verification, so updates apply at once.
 * - One ExchangeRecord per connection (allowed or refused) goes to `recordSink`; the plaintext of each
 *   direction is hashed (SHA-256) only when a sink is configured.
 */
import crypto from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import type { Logger } from "pino";
import { type Clock, systemClock } from "../core/clock.ts";
import { assuranceOf } from "../core/assurance.ts";
import { QhxError, ValidationError } from "../core/errors.ts";
import { SpiffeId } from "../core/spiffeid.ts";
import { verifyX509Svid } from "../core/x509-verify.ts";
import { toPemChain } from "../core/pem.ts";
import { type CompiledPolicySet, type CedarEntity, workloadEntities, workloadUid } from "../policy/index.ts";
import { MODE_GROUPS, normalizeGroup, PQ_GROUP, readClientHello, selectGroup } from "./clienthello.ts";
import { TunnelMetrics } from "./metrics.ts";
import type { ExchangeRecord, RecordSink } from "./record.ts";
import type { SvidSource, SvidState } from "./svid-source.ts";
import {
  controlFrame,
  F_ACCEPT,
  F_DATA,
  F_END,
  F_OPEN,
  F_REFUSE,
  F_RESET,
  type FrameHandler,
  frameHeader,
  frameName,
  FrameParser,
  STREAMS_ALPN,
  StreamProtocolError,
} from "./streams.ts";

export type TunnelMode = "mtls" | "pq";
export const TUNNEL_MODES = ["mtls", "pq"] as const;

/** SVID algorithms accepted from peers in pq mode unless configured otherwise. */
export const PQ_SIG_ALGS = ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87"] as const;

export interface PeerInfo {
  spiffeId: string;
  trustDomain: string;
  /** the peer leaf's key (and so signature) algorithm, e.g. "ec-p256", "ml-dsa-65" */
  sigAlg: string;
  /** negotiated key-exchange group, e.g. "X25519MLKEM768" */
  group: string;
  chainDer: Uint8Array[];
  mode: TunnelMode;
}

export type PeerCheckResult = { ok: true } | { ok: false; reason: string };
export type PeerCheck = (peer: PeerInfo) => PeerCheckResult;

export interface HostPort {
  host: string;
  port: number;
}

/** "HOST:PORT" / "[v6]:PORT" → HostPort. */
export function parseHostPort(v: string, field: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ValidationError(`expected HOST:PORT, got "${v}"`, field);
  return { host: (m[1] ?? m[2])!, port };
}

export interface TunnelCommonOptions {
  mode?: TunnelMode;
  source: SvidSource;
  recordSink?: RecordSink;
  /** Extra checks on the verified peer (crypto policy, releasability), before authorization. */
  peerChecks?: PeerCheck[];
  /** Peer SVID algorithms accepted in pq mode. Default PQ_SIG_ALGS. */
  pqSigAlgs?: readonly string[];
  /** Most concurrent connections (in handshake or established); more are refused. Default 1024. */
  maxConnections?: number;
  /** Close a connection after this long without traffic either way; 0 = never. Default 5 min. */
  idleTimeoutMs?: number;
  /** TCP accept/connect to verified peer. Default 10 s. */
  handshakeTimeoutMs?: number;
  /**
   * Carry successive application connections over one verified TLS connection (ALPN qhx-streams/1,
   * streams.ts) when the peer is a QHx tunnel. Default true; false = one TLS connection per application
   * connection (the client does not offer the protocol, the server does not select it).
   */
  reuseConnections?: boolean;
  metrics?: TunnelMetrics;
  logger?: Logger;
  clock?: Clock;
}

export interface TunnelServerOptions extends TunnelCommonOptions {
  listen: HostPort;
  forward: HostPort;
  /** SPIFFE IDs allowed to connect (exact match). */
  allow?: string[];
  /** Cedar policies deciding action `connect` (principal: the peer Workload; resource: this Workload). */
  policy?: CompiledPolicySet;
  policyVersion?: number | null;
  /** Namespace put on Workload entities (the SVID carries none). Default "default". */
  namespace?: string;
}

export interface TunnelClientOptions extends TunnelCommonOptions {
  listen: HostPort;
  connect: HostPort;
  /** The SPIFFE IDs the server may present. */
  serverIds: string[];
  /** Resume TLS 1.3 sessions (tickets) with the server. Default true. */
  resumeSessions?: boolean;
  /** Most idle TLS connections kept for reuse. Default 32. */
  maxIdleConnections?: number;
  /** Close a pooled TLS connection after this long unused. Default 30 s. */
  poolIdleMs?: number;
}

/** A refusal: `code` is stable (metrics label), `message` human. */
class Refusal extends QhxError {}

const refuse = (code: string, message: string) => new Refusal(code, message);

/**
 * TLS 1.3 session resumption (client side): a ticket is reused for at most this long. Resumption uses
 * psk_dhe_ke (a fresh key exchange in the negotiated group every time); the peer chain remembered in the
 * session is verified again on every connection (current bundles, current time), so a resumed
 * connection is held to the same rules as a full handshake.
 */
const SESSION_LIFETIME_S = 300;

/** Bytes a client keeps to send again if a pooled link closes before the server accepts the stream. */
const MAX_UNACKED = 256 * 1024;

const EMPTY_SHA256 = crypto.createHash("sha256").digest("hex");

function sha256Hex(der: Uint8Array | undefined): string {
  return der ? crypto.createHash("sha256").update(der).digest("hex") : "";
}

/** End a socket (flushing what it still has to write), then destroy it; at once if it is already done. */
/**
 * Copy `src` to `dst` with backpressure, as `src.pipe(dst)` does, but coalescing the chunks one read
 * produces (a TLS socket emits each 16 kB record as its own chunk) into a single writev: `dst` stays
 * corked until the end of the tick. Ends `dst` when `src` ends (half-close).
 */
function pump(src: net.Socket, dst: net.Socket): void {
  let corked = false;
  const uncork = () => {
    corked = false;
    dst.uncork();
  };
  src.on("data", (chunk: Buffer) => {
    if (dst.destroyed) return;
    if (!corked) {
      corked = true;
      dst.cork();
      process.nextTick(uncork);
    }
    if (!dst.write(chunk)) src.pause();
  });
  dst.on("drain", () => src.resume());
  if (src.readableEnded) dst.end();
  else {
    src.on("end", () => {
      if (!dst.destroyed) dst.end();
    });
  }
}

function endThenDestroy(s: net.Socket): void {
  if (s.destroyed) return;
  if (s.writableFinished) {
    s.destroy();
    return;
  }
  s.once("finish", () => s.destroy());
  s.end();
  setTimeout(() => s.destroy(), 5_000).unref();
}

/**
 * End our side (close_notify, FIN) but keep reading until the peer ends too (bounded): destroying at
 * once would make the kernel answer the peer's in-flight bytes with a reset, which can discard the frames
 * we just sent (a REFUSE, a RESET) before the peer reads them.
 */
function lingerClose(s: net.Socket): void {
  if (s.destroyed) return;
  s.resume();
  if (!s.writableEnded) s.end();
  if (s.readableEnded) {
    s.destroy();
    return;
  }
  s.once("end", () => s.destroy());
  setTimeout(() => s.destroy(), 5_000).unref();
}

/** The peer's chain as presented (leaf first), from node:tls. */
export function peerChainOf(s: tls.TLSSocket): Uint8Array[] {
  const out: Uint8Array[] = [];
  let c = s.getPeerCertificate(true) as tls.DetailedPeerCertificate | undefined;
  const seen = new Set<unknown>();
  while (c && c.raw && !seen.has(c)) {
    seen.add(c);
    out.push(new Uint8Array(c.raw));
    if (!c.issuerCertificate || c.issuerCertificate === c) break;
    c = c.issuerCertificate;
  }
  return out;
}

interface Conn {
  id: string;
  startedAt: number;
  handshakeAt: number;
  state: SvidState;
  peer: PeerInfo | undefined;
  decision: "allow" | "deny";
  reason: string;
  refusalCode: string;
  closeReason: string;
  established: boolean;
  resumed: boolean;
  /** the peer SVID's assurance level (QHx extension), if any */
  assurance: string | undefined;
  policyVersion: number | null;
  /** labels of the active-connections gauge, once established */
  activeLabels: Record<"role" | "mode" | "peer" | "group" | "sig_alg", string> | undefined;
  tls: tls.TLSSocket | undefined;
  plain: net.Socket | undefined;
  reqHash: crypto.Hash | undefined;
  resHash: crypto.Hash | undefined;
  done: boolean;
  /** qhx-streams/1: the TLS connection carrying this stream (c.tls stays undefined: it is not ours) */
  link: Link | undefined;
  /** the stream ran over a TLS connection an earlier stream used */
  reused: boolean;
  /** the verified peer leaf's notAfter (ms) */
  peerNotAfter: number;
  /** END sent / received (a stream ends cleanly once both are true) */
  sentEnd: boolean;
  gotEnd: boolean;
  /** removes the stream's listeners from the application socket and the link */
  detach: (() => void) | undefined;
}

/** A verified TLS connection speaking qhx-streams/1 (streams.ts): carries one stream at a time. */
interface Link {
  t: tls.TLSSocket;
  peer: PeerInfo;
  assurance: string | undefined;
  /** the secure context and SVID state it was made with (a rotation retires the link) */
  ctx: tls.SecureContext;
  state: SvidState;
  /** the peer leaf's notAfter (ms): a link is not reused past it */
  peerNotAfter: number;
  parser: FrameParser;
  stream: Conn | undefined;
  closed: boolean;
  poolTimer: NodeJS.Timeout | undefined;
  /** set by the link's owner while a stream runs: the TLS connection ended ("end" = orderly) */
  onClosed: ((orderly: boolean, why: string) => void) | undefined;
  /** corked until the end of this tick (frames of one tick leave in one write) */
  corked: boolean;
}

const IDLE_HANDLER: FrameHandler = {
  data() {
    throw new StreamProtocolError("DATA outside a stream");
  },
  control(type) {
    throw new StreamProtocolError(`${frameName(type)} outside a stream`);
  },
};

/** Frames written in one tick leave in one write: the link's socket stays corked until the tick ends. */
function corkTick(link: Link): void {
  if (link.corked) return;
  link.corked = true;
  link.t.cork();
  process.nextTick(() => {
    link.corked = false;
    link.t.uncork();
  });
}

const plainCorked = new WeakSet<net.Socket>();

/**
 * The DATA of one TLS read (a 16 kB record each) leaves to the application in one writev: the socket
 * stays corked until the end of the tick.
 */
function corkPlain(s: net.Socket): void {
  if (plainCorked.has(s)) return;
  plainCorked.add(s);
  s.cork();
  process.nextTick(() => {
    plainCorked.delete(s);
    s.uncork();
  });
}

/** Send a DATA frame; returns write()'s answer (false: wait for "drain"). */
function sendData(link: Link, chunk: Buffer): boolean {
  const t = link.t;
  if (t.destroyed || !t.writable) return true;
  corkTick(link);
  t.write(frameHeader(F_DATA, chunk.length));
  return t.write(chunk);
}

function sendControl(link: Link, type: number, reason = ""): void {
  const t = link.t;
  if (t.destroyed || !t.writable) return;
  corkTick(link);
  t.write(controlFrame(type, reason));
}

abstract class TunnelBase {
  readonly mode: TunnelMode;
  readonly metrics: TunnelMetrics;
  protected readonly opts: TunnelCommonOptions;
  protected readonly log: Logger | undefined;
  protected readonly clock: Clock;
  protected readonly conns = new Set<Conn>();
  protected readonly links = new Set<Link>();
  protected ctx: tls.SecureContext;
  protected closing = false;
  protected abstract readonly role: "client" | "server";
  protected server: net.Server | undefined;
  #onChange: (s: SvidState) => void;
  #drained: (() => void) | undefined;

  constructor(opts: TunnelCommonOptions) {
    this.opts = opts;
    this.mode = opts.mode ?? "mtls";
    if (!(TUNNEL_MODES as readonly string[]).includes(this.mode)) {
      throw new ValidationError(`unknown mode "${this.mode}" (mtls|pq)`, "mode");
    }
    this.metrics = opts.metrics ?? new TunnelMetrics();
    this.log = opts.logger;
    this.clock = opts.clock ?? systemClock;
    this.ctx = this.buildContext(opts.source.current());
    this.#onChange = (s) => {
      try {
        this.ctx = this.buildContext(s);
        // idle links were verified with the old SVID or bundles: new connections get new handshakes
        for (const l of [...this.links]) if (!l.stream) this.closeLink(l);
        this.onContextChange();
        this.metrics.svidRotations.inc({ role: this.role });
        this.log?.info(
          {
            spiffeId: s.svid.spiffeId,
            expiresAt: s.svid.expiresAt.toISOString(),
            trustDomains: [...s.bundles.keys()],
          },
          "tunnel SVID or bundles updated",
        );
      } catch (e) {
        this.log?.error({ err: (e as Error).message }, "cannot use the new SVID; keeping the previous one");
      }
    };
    opts.source.on("change", this.#onChange);
  }

  /** A TLS 1.3 secure context for this SVID and mode. */
  buildContext(s: SvidState): tls.SecureContext {
    return tls.createSecureContext({
      key: s.svid.key.export({ type: "pkcs8", format: "pem" }) as string,
      cert: toPemChain(s.svid.chainDer),
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      ecdhCurve: MODE_GROUPS[this.mode].join(":"),
      sessionTimeout: SESSION_LIFETIME_S,
      // required for resumption on a server that requests client certificates
      sessionIdContext: `qhx-tunnel-${this.mode}`,
    });
  }

  /** Called after the secure context was replaced (rotation, bundle update). */
  protected onContextChange(): void {}

  get activeConnections(): number {
    return this.conns.size;
  }

  address(): HostPort {
    const a = this.server?.address();
    if (!a || typeof a === "string") throw new QhxError("QHX_NOT_LISTENING", "the tunnel is not listening");
    return { host: a.address, port: a.port };
  }

  protected listenOn(server: net.Server, at: HostPort): Promise<HostPort> {
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(at.port, at.host, () => {
        server.off("error", reject);
        resolve(this.address());
      });
    });
  }

  protected newConn(): Conn {
    return {
      id: crypto.randomUUID(),
      startedAt: this.clock.now().getTime(),
      handshakeAt: 0,
      state: this.opts.source.current(),
      peer: undefined,
      decision: "deny",
      reason: "",
      refusalCode: "",
      closeReason: "",
      established: false,
      resumed: false,
      assurance: undefined,
      policyVersion: null,
      activeLabels: undefined,
      tls: undefined,
      plain: undefined,
      reqHash: undefined,
      resHash: undefined,
      done: false,
      link: undefined,
      reused: false,
      peerNotAfter: 0,
      sentEnd: false,
      gotEnd: false,
      detach: undefined,
    };
  }

  /** Refuse above the connection limit or while draining. Returns false (and records) when refused. */
  protected admit(c: Conn, sock: net.Socket): boolean {
    const max = this.opts.maxConnections ?? 1024;
    if (this.closing || this.conns.size >= max) {
      c.refusalCode = this.closing ? "QHX_TUNNEL_DRAINING" : "QHX_TUNNEL_CONNECTION_LIMIT";
      c.reason = this.closing ? "the tunnel is shutting down" : `connection limit (${max}) reached`;
      sock.destroy();
      this.finish(c);
      return false;
    }
    this.conns.add(c);
    return true;
  }

  /** Verify the peer chain and apply the mode's rules and the peer checks. Throws Refusal. */
  protected verifyPeer(c: Conn, chain: Uint8Array[], group: string): PeerInfo {
    if (chain.length === 0) throw refuse("QHX_TUNNEL_NO_PEER_CERT", "the peer presented no certificate");
    let v;
    try {
      v = verifyX509Svid(chain, this.opts.source.current().bundles, this.clock.now());
    } catch (e) {
      const code = (e as QhxError).code ?? "QHX_SVID_UNTRUSTED";
      throw refuse(code, `peer SVID rejected: ${(e as Error).message}`);
    }
    const peer: PeerInfo = {
      spiffeId: v.spiffeId.toString(),
      trustDomain: v.trustDomain,
      sigAlg: v.leaf.keyAlg ?? "unknown",
      group,
      chainDer: chain,
      mode: this.mode,
    };
    c.peer = peer;
    c.assurance = assuranceOf(v.leaf);
    c.peerNotAfter = v.leaf.notAfter.getTime();
    if (this.mode === "pq") {
      if (group !== PQ_GROUP) {
        throw refuse(
          "QHX_TUNNEL_NOT_PQ",
          `negotiated group ${group || "unknown"} is not ${PQ_GROUP} (pq mode)`,
        );
      }
      const algs = this.opts.pqSigAlgs ?? PQ_SIG_ALGS;
      if (!algs.includes(peer.sigAlg)) {
        throw refuse(
          "QHX_TUNNEL_PEER_ALG",
          `peer SVID algorithm ${peer.sigAlg} is not allowed in pq mode (allowed: ${algs.join(", ")})`,
        );
      }
    }
    const why = this.peerCheckFailure(peer);
    if (why) throw refuse("QHX_TUNNEL_PEER_CHECK", why);
    return peer;
  }

  /** The first peer check that fails, with its reason (checks run again for every reused stream). */
  protected peerCheckFailure(peer: PeerInfo): string | undefined {
    for (const check of this.opts.peerChecks ?? []) {
      let r: PeerCheckResult;
      try {
        r = check(peer);
      } catch (e) {
        r = { ok: false, reason: `peer check failed: ${(e as Error).message}` };
      }
      if (!r.ok) return r.reason;
    }
    return undefined;
  }

  /** Count the connection (or stream) as established: active gauge; hashes when recording. */
  protected markEstablished(c: Conn): void {
    c.established = true;
    const peer = c.peer!;
    const activeLabels = {
      role: this.role,
      mode: this.mode,
      peer: peer.spiffeId,
      group: peer.group,
      sig_alg: peer.sigAlg,
    };
    this.metrics.active.inc(activeLabels);
    c.activeLabels = activeLabels;
    if (this.opts.recordSink) {
      c.reqHash = crypto.createHash("sha256");
      c.resHash = crypto.createHash("sha256");
    }
  }

  /** Pipe both directions (hashing when a sink is configured); close both when either closes. */
  protected splice(c: Conn, reqSrc: net.Socket, resSrc: net.Socket): void {
    const t = c.tls!;
    const p = c.plain!;
    this.markEstablished(c);
    const idle = this.opts.idleTimeoutMs ?? 300_000;
    t.setTimeout(idle);
    if (c.reqHash && c.resHash) {
      const [rh, sh] = [c.reqHash, c.resHash];
      reqSrc.on("data", (b: Buffer) => rh.update(b));
      resSrc.on("data", (b: Buffer) => sh.update(b));
    }
    pump(t, p);
    pump(p, t);
    let open = 2;
    const closed = (other: net.Socket) => () => {
      endThenDestroy(other);
      if (--open > 0) return;
      this.finish(c);
    };
    t.once("close", closed(p));
    p.once("close", closed(t));
  }

  /** Close both sockets and emit the record (once). */
  protected finish(c: Conn): void {
    if (c.done) return;
    c.done = true;
    c.tls?.destroy();
    c.plain?.destroy();
    this.conns.delete(c);
    if (c.activeLabels) this.metrics.active.dec(c.activeLabels);
    const peerId = c.peer?.spiffeId ?? "";
    const outcome = c.established ? "allowed" : c.decision === "deny" && c.peer ? "denied" : "refused";
    this.metrics.connections.inc({ role: this.role, mode: this.mode, peer: peerId, outcome });
    if (!c.established) {
      this.metrics.refusals.inc({
        role: this.role,
        mode: this.mode,
        reason: c.refusalCode || "QHX_TUNNEL_FAILED",
      });
    }
    const { reqBytes, resBytes } = this.byteCounts(c);
    if (c.established && (reqBytes || resBytes)) {
      this.metrics.bytes.inc({ role: this.role, peer: peerId, direction: "request" }, reqBytes);
      this.metrics.bytes.inc({ role: this.role, peer: peerId, direction: "response" }, resBytes);
    }
    if (this.conns.size === 0) this.#drained?.();
    const sink = this.opts.recordSink;
    if (!sink) return;
    const svid = c.state.svid;
    const rec: ExchangeRecord = {
      id: c.id,
      mode: this.mode,
      role: this.role,
      localId: svid.spiffeId,
      peerId,
      localCertSha256: sha256Hex(svid.chainDer[0]),
      peerCertSha256: sha256Hex(c.peer?.chainDer[0]),
      decision: c.decision,
      reason: c.reason,
      policyVersion: c.policyVersion,
      group: c.peer?.group ?? "",
      peerSigAlg: c.peer?.sigAlg ?? "",
      startedAt: c.startedAt,
      handshakeAt: c.handshakeAt,
      endedAt: this.clock.now().getTime(),
      requestBytes: reqBytes,
      requestSha256: c.reqHash ? c.reqHash.digest("hex") : EMPTY_SHA256,
      responseBytes: resBytes,
      responseSha256: c.resHash ? c.resHash.digest("hex") : EMPTY_SHA256,
      svid: { key: svid.key, chainDer: svid.chainDer },
      peerChainDer: c.peer?.chainDer ?? [],
    };
    if (c.closeReason) rec.closeReason = c.closeReason;
    if (c.resumed) rec.resumed = true;
    if (c.reused) rec.reused = true;
    try {
      sink.record(rec);
    } catch (e) {
      this.log?.error({ err: (e as Error).message }, "record sink threw");
    }
  }

  protected abstract byteCounts(c: Conn): { reqBytes: number; resBytes: number };

  protected logRefusal(c: Conn, remote: string | undefined): void {
    this.log?.warn(
      {
        conn: c.id,
        role: this.role,
        mode: this.mode,
        remote,
        peer: c.peer?.spiffeId,
        code: c.refusalCode,
        reason: c.reason,
      },
      "tunnel connection refused",
    );
  }

  /** A verified TLS connection that negotiated qhx-streams/1 (c: the connection that made it). */
  protected newLink(t: tls.TLSSocket, c: Conn): Link {
    const link: Link = {
      t,
      peer: c.peer!,
      assurance: c.assurance,
      ctx: this.ctx,
      state: c.state,
      peerNotAfter: c.peerNotAfter,
      parser: new FrameParser(IDLE_HANDLER),
      stream: undefined,
      closed: false,
      poolTimer: undefined,
      onClosed: undefined,
      corked: false,
    };
    this.links.add(link);
    const gone = (orderly: boolean, why: string) => {
      if (!link.closed) this.closeLink(link, !orderly);
      const cb = link.onClosed;
      if (link.stream && cb) {
        link.onClosed = undefined;
        cb(orderly, why);
      }
    };
    t.on("data", (b: Buffer) => {
      if (link.closed) return;
      try {
        link.parser.push(b);
      } catch (e) {
        const why = `protocol error: ${(e as Error).message}`;
        this.log?.warn(
          { peer: link.peer.spiffeId, role: this.role, err: why },
          "tunnel stream protocol error",
        );
        if (link.stream) link.stream.closeReason ||= why;
        sendControl(link, F_RESET, why);
        this.closeLink(link);
        gone(false, why);
      }
    });
    t.on("end", () => gone(true, "the peer closed the tunnel connection"));
    t.on("error", (e: NodeJS.ErrnoException) => gone(false, e.code ?? e.message));
    t.on("close", () => gone(false, "the tunnel connection closed"));
    t.on("timeout", () => {
      const s = link.stream;
      if (s) {
        s.closeReason ||= "idle timeout";
        sendControl(link, F_RESET, "idle timeout");
      }
      this.closeLink(link, true);
      gone(false, "idle timeout");
    });
    t.setTimeout(this.opts.idleTimeoutMs ?? 300_000);
    return link;
  }

  /** Abort stream `c` if `link` still carries it: RESET, then the link closes (it carries no other). */
  protected resetStream(link: Link, c: Conn, why: string): void {
    if (link.stream !== c) return;
    link.stream = undefined;
    link.onClosed = undefined;
    sendControl(link, F_RESET, why);
    this.closeLink(link);
  }

  /** A link ended (either side): forget it (the client drops it from its pool). */
  protected linkGone(link: Link): void {
    clearTimeout(link.poolTimer);
  }

  /** End a link (TLS close_notify, then the socket); at once with `now`. */
  protected closeLink(link: Link, now = false): void {
    const was = link.closed;
    link.closed = true;
    this.links.delete(link);
    clearTimeout(link.poolTimer);
    if (now) link.t.destroy();
    else lingerClose(link.t);
    if (!was) this.linkGone(link);
  }

  /**
   * Stop accepting, let established connections finish for up to `drainMs`, then close what is left.
   */
  async close(opts: { drainMs?: number } = {}): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      this.opts.source.off("change", this.#onChange);
      // idle links carry nothing: close them now (a client that just reused one sends its stream again)
      for (const l of [...this.links]) if (!l.stream) this.closeLink(l);
    }
    const closed = new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    if (this.conns.size > 0) {
      const drainMs = opts.drainMs ?? 0;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, drainMs);
        this.#drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      for (const c of [...this.conns]) {
        c.closeReason ||= "shutdown";
        c.tls?.destroy();
        c.plain?.destroy();
        if (c.link) this.closeLink(c.link, true);
        this.finish(c);
      }
    }
    for (const l of [...this.links]) this.closeLink(l, true);
    await closed;
  }
}

/** The server side: accepts tunnels, authenticates and authorizes the peer, forwards to the local app. */
export class TunnelServer extends TunnelBase {
  protected readonly role = "server" as const;
  readonly options: TunnelServerOptions;
  #entities = new Map<string, CedarEntity[]>();

  constructor(opts: TunnelServerOptions) {
    super(opts);
    this.options = opts;
    if (!opts.allow?.length && !opts.policy) {
      throw new ValidationError("give an allow-list (--allow) or a Cedar policy (--policy)", "authorization");
    }
    for (const id of opts.allow ?? []) SpiffeId.parse(id);
  }

  async listen(): Promise<HostPort> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (raw) => this.#accept(raw));
    return this.listenOn(server, this.options.listen);
  }

  protected byteCounts(c: Conn): { reqBytes: number; resBytes: number } {
    return { reqBytes: c.plain?.bytesWritten ?? 0, resBytes: c.plain?.bytesRead ?? 0 };
  }

  #accept(raw: net.Socket): void {
    const c = this.newConn();
    if (!this.admit(c, raw)) {
      this.logRefusal(c, raw.remoteAddress);
      return;
    }
    raw.on("error", () => {});
    const fail = (code: string, reason: string) => {
      if (c.done) return;
      c.refusalCode ||= code;
      c.reason ||= reason;
      this.logRefusal(c, raw.remoteAddress);
      if (c.tls) c.tls.destroy();
      else raw.destroy();
      this.finish(c);
    };
    const timeoutMs = this.opts.handshakeTimeoutMs ?? 10_000;
    const hsTimer = setTimeout(() => fail("QHX_TUNNEL_HANDSHAKE_TIMEOUT", "handshake timed out"), timeoutMs);
    const onRawClose = () => {
      clearTimeout(hsTimer);
      if (!c.established) fail("QHX_TUNNEL_CLOSED", "the peer closed the connection during the handshake");
    };
    raw.once("close", onRawClose);
    readClientHello(raw, timeoutMs).then(
      (hello) => {
        if (c.done) return;
        const group = selectGroup(hello, MODE_GROUPS[this.mode]);
        const t = new tls.TLSSocket(raw, {
          isServer: true,
          secureContext: this.ctx,
          requestCert: true,
          rejectUnauthorized: false,
          // ALPN only for a client that offers qhx-streams/1: node:tls would refuse a client offering
          // other protocols only (no_application_protocol), and a plain tunnel selects none
          ...(this.opts.reuseConnections !== false && hello.alpn.includes(STREAMS_ALPN)
            ? { ALPNProtocols: [STREAMS_ALPN] }
            : {}),
        });
        c.tls = t;
        // a server-side TLSSocket reports handshake failures as "_tlsError" (tls.Server turns them into
        // "tlsClientError") and a peer vanishing mid-handshake only as "close"
        const noPq = this.mode === "pq" && group !== PQ_GROUP;
        const closedEarly = () => {
          if (c.established || c.handshakeAt) return;
          if (noPq) fail("QHX_TUNNEL_NO_COMMON_GROUP", `the client does not offer ${PQ_GROUP} (pq mode)`);
          else fail("QHX_TUNNEL_CLOSED", "the peer closed the connection during the handshake");
        };
        t.once("end", closedEarly);
        t.once("close", closedEarly);
        const onError = (e: NodeJS.ErrnoException) => {
          if (c.established) {
            c.closeReason ||= e.code ?? e.message;
            t.destroy();
            return;
          }
          if (noPq)
            fail(
              "QHX_TUNNEL_NO_COMMON_GROUP",
              `the client does not offer ${PQ_GROUP} (pq mode): ${e.message}`,
            );
          else if (group === "")
            fail("QHX_TUNNEL_NO_COMMON_GROUP", `no common key-exchange group: ${e.message}`);
          else fail("QHX_TUNNEL_TLS", `TLS handshake failed: ${e.message}`);
        };
        t.on("_tlsError", onError);
        t.on("error", onError);
        t.once("secure", () => {
          clearTimeout(hsTimer);
          if (c.done) return;
          try {
            const peer = this.verifyPeer(c, peerChainOf(t), group);
            const d = this.#authorize(c, peer);
            c.reason = d.reason;
            if (d.decision === "deny") {
              c.decision = "deny";
              throw refuse("QHX_TUNNEL_DENIED", d.reason);
            }
            c.decision = "allow";
          } catch (e) {
            fail((e as QhxError).code ?? "QHX_TUNNEL_FAILED", (e as Error).message);
            return;
          }
          c.resumed = t.isSessionReused();
          c.handshakeAt = this.clock.now().getTime();
          const peer = c.peer!;
          this.metrics.handshake.observe(
            { role: "server", mode: this.mode, group: peer.group, sig_alg: peer.sigAlg, peer: peer.spiffeId },
            (c.handshakeAt - c.startedAt) / 1000,
          );
          if (t.alpnProtocol === STREAMS_ALPN) {
            // a QHx client: streams over this connection; the link's own handlers take over
            raw.off("close", onRawClose);
            t.off("end", closedEarly);
            t.off("close", closedEarly);
            t.off("_tlsError", onError);
            t.off("error", onError);
            this.#serveLink(c, t);
            return;
          }
          const f = this.options.forward;
          const p = net.connect({ host: f.host, port: f.port, allowHalfOpen: true, noDelay: true });
          c.plain = p;
          p.on("error", (e: NodeJS.ErrnoException) => {
            if (!c.established) {
              c.closeReason = `forward to ${f.host}:${f.port} failed: ${e.code ?? e.message}`;
              this.log?.error({ conn: c.id, err: e.code ?? e.message }, "tunnel forward failed");
              c.established = false;
              this.finish(c);
            } else c.closeReason ||= e.code ?? e.message;
          });
          p.once("connect", () => {
            if (c.done || t.destroyed) {
              // the peer went away while the app connection was being made
              c.closeReason ||= "the peer closed before the forward connection was up";
              p.destroy();
              this.finish(c);
              return;
            }
            t.on("timeout", () => {
              c.closeReason ||= "idle timeout";
              t.destroy();
            });
            this.splice(c, t, p);
            this.log?.debug(
              { conn: c.id, peer: peer.spiffeId, group: peer.group, sigAlg: peer.sigAlg, reused: false },
              "tunnel connection",
            );
          });
        });
      },
      (e: Error) => fail((e as QhxError).code ?? "QHX_TUNNEL_BAD_CLIENT_HELLO", e.message),
    );
  }

  /**
   * qhx-streams/1 on a verified connection: each OPEN is a stream, authorized afresh and forwarded to
   * the application on its own TCP connection. `first` (the accept-time connection) carries the first.
   */
  #serveLink(first: Conn, t: tls.TLSSocket): void {
    first.tls = undefined;
    const link = this.newLink(t, first);
    let pending: Conn | undefined = first;
    link.stream = first;
    link.onClosed = (_orderly, why) => {
      first.refusalCode ||= "QHX_TUNNEL_CLOSED";
      first.reason ||= `the peer opened no stream (${why})`;
      this.finish(first);
    };
    const expectOpen: FrameHandler = {
      data() {
        throw new StreamProtocolError("DATA before OPEN");
      },
      control: (type) => {
        if (type !== F_OPEN) throw new StreamProtocolError(`${frameName(type)} before OPEN`);
        let c = pending;
        pending = undefined;
        if (!c) {
          // draining, or a rotation retired the link: close without starting the stream (the client
          // sees an orderly close before ACCEPT and sends the stream again on a new connection)
          if (this.closing || link.ctx !== this.ctx) {
            this.closeLink(link);
            return;
          }
          c = this.newConn();
          c.reused = true;
          c.state = link.state;
          c.peer = link.peer;
          const max = this.opts.maxConnections ?? 1024;
          if (this.conns.size >= max) {
            c.refusalCode = "QHX_TUNNEL_CONNECTION_LIMIT";
            c.reason = `connection limit (${max}) reached`;
            sendControl(link, F_REFUSE, c.reason);
            this.closeLink(link);
            this.logRefusal(c, t.remoteAddress);
            this.finish(c);
            return;
          }
          this.conns.add(c);
          this.metrics.reused.inc({ role: "server" });
        }
        this.#serverStream(link, c, expectOpen);
      },
    };
    link.parser.handler = expectOpen;
  }

  #serverStream(link: Link, c: Conn, idleHandler: FrameHandler): void {
    const t = link.t;
    link.stream = c;
    c.link = link;
    c.peer = link.peer;
    c.assurance = link.assurance;
    c.peerNotAfter = link.peerNotAfter;
    const abort = (why: string) => this.resetStream(link, c, why);
    if (c.reused) {
      // a fresh decision for every stream: peer checks (crypto policy) and policy may have changed
      const failed = this.peerCheckFailure(link.peer);
      const d = failed ? { decision: "deny" as const, reason: failed } : this.#authorize(c, link.peer);
      c.reason = d.reason;
      c.decision = d.decision;
      if (d.decision === "deny") {
        c.refusalCode = failed ? "QHX_TUNNEL_PEER_CHECK" : "QHX_TUNNEL_DENIED";
        link.stream = undefined;
        sendControl(link, F_REFUSE, d.reason);
        this.closeLink(link);
        this.logRefusal(c, t.remoteAddress);
        this.finish(c);
        return;
      }
      c.handshakeAt = this.clock.now().getTime();
    }
    const f = this.options.forward;
    const p = net.connect({ host: f.host, port: f.port, allowHalfOpen: true, noDelay: true });
    c.plain = p;
    // what arrives before the application connection is up (bounded: beyond it the link stops reading)
    let held: Buffer[] | undefined = [];
    let heldBytes = 0;
    const toApp = (b: Buffer) => {
      c.reqHash?.update(b);
      corkPlain(p);
      if (!p.write(b)) t.pause();
    };
    const onTDrain = () => p.resume();
    const onPDrain = () => {
      if (link.stream === c) t.resume();
    };
    t.on("drain", onTDrain);
    p.on("drain", onPDrain);
    c.detach = () => {
      t.off("drain", onTDrain);
      p.off("drain", onPDrain);
    };
    const done = () => {
      if (!(c.sentEnd && c.gotEnd) || link.stream !== c) return;
      // over on the wire: the link may carry the next stream (the record waits for the app socket)
      link.stream = undefined;
      link.onClosed = undefined;
      c.detach?.();
      t.resume();
      if (this.closing || link.ctx !== this.ctx || link.closed) this.closeLink(link);
      else link.parser.handler = idleHandler;
    };
    link.parser.handler = {
      data: (b) => {
        if (c.gotEnd) throw new StreamProtocolError("DATA after END");
        if (held) {
          held.push(b);
          heldBytes += b.length;
          if (heldBytes > MAX_UNACKED) t.pause();
        } else toApp(b);
      },
      control: (type, reason) => {
        if (type === F_END) {
          if (c.gotEnd) throw new StreamProtocolError("END twice");
          c.gotEnd = true;
          if (!held) p.end();
          done();
        } else if (type === F_RESET) {
          c.closeReason ||= `reset by the client: ${reason}`;
          link.stream = undefined;
          this.closeLink(link);
          p.destroy();
        } else throw new StreamProtocolError(`${frameName(type)} inside a stream`);
      },
    };
    link.onClosed = (_orderly, why) => {
      c.closeReason ||= why;
      p.destroy();
    };
    p.on("error", (e: NodeJS.ErrnoException) => {
      if (held) {
        c.closeReason = `forward to ${f.host}:${f.port} failed: ${e.code ?? e.message}`;
        this.log?.error({ conn: c.id, err: e.code ?? e.message }, "tunnel forward failed");
      } else c.closeReason ||= e.code ?? e.message;
    });
    p.once("connect", () => {
      if (link.stream !== c) {
        p.destroy();
        return;
      }
      this.markEstablished(c);
      sendControl(link, F_ACCEPT);
      const early = held!;
      held = undefined;
      for (const b of early) toApp(b);
      if (heldBytes > MAX_UNACKED && !p.writableNeedDrain) t.resume();
      if (c.gotEnd) p.end();
      const peer = c.peer!;
      this.log?.debug(
        { conn: c.id, peer: peer.spiffeId, group: peer.group, sigAlg: peer.sigAlg, reused: c.reused },
        "tunnel connection",
      );
    });
    p.on("data", (b: Buffer) => {
      c.resHash?.update(b);
      if (!sendData(link, b)) p.pause();
    });
    p.on("end", () => {
      if (link.stream !== c) return;
      c.sentEnd = true;
      sendControl(link, F_END);
      done();
    });
    p.on("close", () => {
      if (!(c.sentEnd && c.gotEnd)) abort(c.closeReason || "the application closed the connection");
      c.detach?.();
      this.finish(c);
    });
  }

  #authorize(c: Conn, peer: PeerInfo): { decision: "allow" | "deny"; reason: string } {
    const o = this.options;
    if (o.policy) {
      c.policyVersion = o.policyVersion ?? null;
      const local = c.state.svid;
      const ns = o.namespace ?? "default";
      const assurance = c.assurance;
      const d = o.policy.authorize({
        principal: workloadUid(peer.spiffeId),
        action: { type: "Action", id: "connect" },
        resource: workloadUid(local.spiffeId),
        context: {
          time: Math.floor(this.clock.now().getTime() / 1000),
          tls: { mode: this.mode, pq: peer.group === PQ_GROUP },
        },
        entities: [
          ...this.#entitiesFor(peer.spiffeId, ns, assurance),
          ...(local.spiffeId === peer.spiffeId
            ? []
            : this.#entitiesFor(local.spiffeId, ns, undefined).slice(0, 1)),
        ],
      });
      if (d.decision === "allow")
        return { decision: "allow", reason: `policy: permitted by ${d.reasons.join(", ")}` };
      const why = d.reasons.length ? `forbidden by ${d.reasons.join(", ")}` : "no policy permits it";
      return { decision: "deny", reason: `policy: ${why}` };
    }
    if (o.allow?.includes(peer.spiffeId)) return { decision: "allow", reason: "allow-list" };
    return { decision: "deny", reason: `${peer.spiffeId} is not in the allow-list` };
  }

  #entitiesFor(spiffeId: string, namespace: string, assurance: string | undefined): CedarEntity[] {
    const key = `${spiffeId} ${assurance ?? ""}`;
    let e = this.#entities.get(key);
    if (!e) {
      const id = SpiffeId.parse(spiffeId);
      e = workloadEntities({ spiffeId, trustDomain: id.trustDomain, path: id.path, namespace, assurance });
      if (this.#entities.size > 4096) this.#entities.clear();
      this.#entities.set(key, e);
    }
    return e;
  }
}

/** The client side: accepts plaintext from the local app and carries it to the tunnel server. */
export class TunnelClient extends TunnelBase {
  protected readonly role = "client" as const;
  readonly options: TunnelClientOptions;
  /** The last TLS session ticket from a verified server, with the chain verified in that handshake. */
  #session: { ticket: Buffer; chainDer: Uint8Array[] } | undefined;
  /** Idle qhx-streams/1 links, newest last. */
  #pool: Link[] = [];

  protected override onContextChange(): void {
    this.#session = undefined;
    for (const l of this.#pool.splice(0)) this.closeLink(l);
  }

  protected override linkGone(link: Link): void {
    super.linkGone(link);
    const i = this.#pool.indexOf(link);
    if (i >= 0) this.#pool.splice(i, 1);
  }

  /** Idle links kept for reuse (tests, metrics). */
  get pooledConnections(): number {
    return this.#pool.length;
  }

  constructor(opts: TunnelClientOptions) {
    super(opts);
    this.options = opts;
    if (!opts.serverIds.length) throw new ValidationError("give the server's SPIFFE ID", "server-id");
    for (const id of opts.serverIds) SpiffeId.parse(id);
  }

  async listen(): Promise<HostPort> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (local) =>
      this.#accept(local),
    );
    return this.listenOn(server, this.options.listen);
  }

  override async close(opts: { drainMs?: number } = {}): Promise<void> {
    for (const l of this.#pool.splice(0)) this.closeLink(l);
    return super.close(opts);
  }

  protected byteCounts(c: Conn): { reqBytes: number; resBytes: number } {
    return { reqBytes: c.plain?.bytesRead ?? 0, resBytes: c.plain?.bytesWritten ?? 0 };
  }

  #accept(local: net.Socket): void {
    const c = this.newConn();
    c.plain = local;
    if (!this.admit(c, local)) {
      this.logRefusal(c, local.remoteAddress);
      return;
    }
    local.on("error", (e: NodeJS.ErrnoException) => {
      c.closeReason ||= e.code ?? e.message;
    });
    const link = this.#takeLink();
    if (link) {
      c.reused = true;
      this.metrics.reused.inc({ role: "client" });
      this.#stream(c, link, undefined);
      return;
    }
    this.#connect(c, undefined);
  }

  /** A pooled link still fit to carry a stream (same SVID and bundles, peer SVID valid, not too old). */
  #takeLink(): Link | undefined {
    const now = this.clock.now().getTime();
    while (this.#pool.length > 0) {
      const l = this.#pool.pop()!;
      clearTimeout(l.poolTimer);
      // a link that no longer passes the peer checks (crypto policy changed) is retired: the new
      // handshake that follows refuses, and records why
      if (
        l.closed ||
        l.t.destroyed ||
        l.ctx !== this.ctx ||
        l.peerNotAfter <= now ||
        this.peerCheckFailure(l.peer)
      ) {
        this.closeLink(l);
        continue;
      }
      return l;
    }
    return undefined;
  }

  /** A link whose stream ended cleanly: keep it for the next application connection, or close it. */
  #release(link: Link): void {
    const o = this.options;
    if (
      this.closing ||
      link.closed ||
      link.ctx !== this.ctx ||
      link.peerNotAfter <= this.clock.now().getTime() ||
      this.#pool.length >= (o.maxIdleConnections ?? 32)
    ) {
      this.closeLink(link);
      return;
    }
    this.#pool.push(link);
    link.poolTimer = setTimeout(() => this.closeLink(link), o.poolIdleMs ?? 30_000);
    link.poolTimer.unref();
  }

  /**
   * A new TLS connection for `c`. `replay`: what the application already sent on a pooled link that
   * turned out closed before the server accepted the stream (sent again here, in order).
   */
  #connect(c: Conn, replay: { chunks: Buffer[]; ended: boolean } | undefined): void {
    const local = c.plain!;
    let handshaking = true;
    const fail = (code: string, reason: string) => {
      if (c.done) return;
      handshaking = false;
      c.established = false;
      c.refusalCode ||= code;
      c.reason ||= reason;
      this.logRefusal(c, local.remoteAddress);
      this.finish(c);
    };
    const o = this.options;
    const reuse = o.reuseConnections !== false;
    const t = tls.connect({
      host: o.connect.host,
      port: o.connect.port,
      secureContext: this.ctx,
      ...(this.#session ? { session: this.#session.ticket } : {}),
      ...(reuse ? { ALPNProtocols: [STREAMS_ALPN] } : {}),
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
      allowHalfOpen: true,
      noDelay: true,
    } as tls.ConnectionOptions);
    c.tls = t;
    const ctxAtConnect = this.ctx;
    const offered = this.#session;
    let pending: Buffer | undefined;
    let verified: Uint8Array[] | undefined;
    const keepTicket = () => {
      // keep a ticket only from a verified server, and only for the context it was made with
      if (pending && verified && ctxAtConnect === this.ctx && o.resumeSessions !== false) {
        this.#session = { ticket: pending, chainDer: verified };
        pending = undefined;
      }
    };
    // the ticket may arrive before "secureConnect" (same read as the server's Finished), or later
    t.on("session", (ticket: Buffer) => {
      pending = ticket;
      keepTicket();
    });
    t.setTimeout(this.opts.handshakeTimeoutMs ?? 10_000);
    const onHsTimeout = () => fail("QHX_TUNNEL_HANDSHAKE_TIMEOUT", "handshake timed out");
    t.once("timeout", onHsTimeout);
    const onLocalClose = () => {
      if (!handshaking) return;
      c.closeReason ||= "the local application closed before the tunnel was up";
      fail("QHX_TUNNEL_CLOSED", "the local application closed during the handshake");
    };
    local.once("close", onLocalClose);
    const onError = (e: NodeJS.ErrnoException) => {
      if (!handshaking) {
        c.closeReason ||= e.code ?? e.message;
        return;
      }
      fail(
        e.code === "ECONNREFUSED" ? "QHX_TUNNEL_UNREACHABLE" : "QHX_TUNNEL_TLS",
        `TLS connection failed: ${e.message}`,
      );
    };
    t.on("error", onError);
    const closedEarly = () => {
      if (handshaking) fail("QHX_TUNNEL_CLOSED", "the server closed the connection during the handshake");
    };
    t.once("end", closedEarly);
    t.once("close", closedEarly);
    t.once("secureConnect", () => {
      if (c.done) return;
      const group = normalizeGroup((t.getEphemeralKeyInfo() as { name?: string } | null)?.name);
      try {
        // a resumed session does not carry the server's chain: verify again the one it was issued with
        const resumed = t.isSessionReused() && offered !== undefined;
        const peer = this.verifyPeer(c, resumed ? offered.chainDer : peerChainOf(t), group);
        if (!o.serverIds.includes(peer.spiffeId)) {
          c.decision = "deny";
          throw refuse(
            "QHX_TUNNEL_DENIED",
            `server ${peer.spiffeId} is not the expected ${o.serverIds.join(" or ")}`,
          );
        }
        c.decision = "allow";
        c.reason = "server identity matches";
      } catch (e) {
        this.#session = undefined;
        fail((e as QhxError).code ?? "QHX_TUNNEL_FAILED", (e as Error).message);
        return;
      }
      handshaking = false;
      local.off("close", onLocalClose);
      t.off("timeout", onHsTimeout);
      t.off("end", closedEarly);
      t.off("close", closedEarly);
      c.resumed = t.isSessionReused();
      verified = c.peer!.chainDer;
      keepTicket();
      c.handshakeAt = this.clock.now().getTime();
      const peer = c.peer!;
      this.metrics.handshake.observe(
        { role: "client", mode: this.mode, group: peer.group, sig_alg: peer.sigAlg, peer: peer.spiffeId },
        (c.handshakeAt - c.startedAt) / 1000,
      );
      if (t.alpnProtocol === STREAMS_ALPN) {
        t.off("error", onError);
        c.tls = undefined;
        this.#stream(c, this.newLink(t, c), replay);
        return;
      }
      t.on("timeout", () => {
        c.closeReason ||= "idle timeout";
        t.destroy();
      });
      for (const b of replay?.chunks ?? []) t.write(b);
      this.splice(c, local, t);
      local.resume();
    });
  }

  /** Run application connection `c` as a stream over `link` (qhx-streams/1). */
  #stream(c: Conn, link: Link, replay: { chunks: Buffer[]; ended: boolean } | undefined): void {
    const local = c.plain!;
    const t = link.t;
    clearTimeout(link.poolTimer);
    link.stream = c;
    c.link = link;
    c.peer = link.peer;
    c.assurance = link.assurance;
    c.peerNotAfter = link.peerNotAfter;
    c.decision = "allow";
    c.reason = "server identity matches";
    if (c.reused) c.handshakeAt = this.clock.now().getTime();
    if (!c.established) this.markEstablished(c);
    let accepted = false;
    // On a pooled link, what the application sent before ACCEPT is kept: should the server have closed
    // the link before reading the OPEN (idle close, shutdown), the stream goes out again on a new one.
    let unacked: Buffer[] | undefined = c.reused ? [] : undefined;
    let unackedBytes = 0;
    sendControl(link, F_OPEN);
    for (const b of replay?.chunks ?? []) sendData(link, b);
    if (replay?.ended) sendControl(link, F_END);
    const abort = (why: string) => this.resetStream(link, c, why);
    const done = () => {
      if (!(c.sentEnd && c.gotEnd) || link.stream !== c) return;
      link.stream = undefined;
      link.onClosed = undefined;
      link.parser.handler = IDLE_HANDLER;
      t.off("drain", onTDrain);
      t.resume();
      this.#release(link);
    };
    const onData = (b: Buffer) => {
      c.reqHash?.update(b);
      if (unacked) {
        unacked.push(b);
        unackedBytes += b.length;
        if (unackedBytes > MAX_UNACKED) local.pause();
      }
      if (!sendData(link, b)) local.pause();
    };
    const onEnd = () => {
      c.sentEnd = true;
      sendControl(link, F_END);
      done();
    };
    const onTDrain = () => {
      if (!unacked || unackedBytes <= MAX_UNACKED) local.resume();
    };
    const onLocalDrain = () => {
      if (link.stream === c) t.resume();
    };
    const onLocalClose = () => {
      if (!(c.sentEnd && c.gotEnd)) {
        c.closeReason ||= "the local application closed the connection";
        abort("the application closed the connection");
      }
      c.detach?.();
      this.finish(c);
    };
    c.detach = () => {
      local.off("data", onData);
      local.off("end", onEnd);
      local.off("drain", onLocalDrain);
      local.off("close", onLocalClose);
      t.off("drain", onTDrain);
    };
    link.parser.handler = {
      data: (b) => {
        if (!accepted || c.gotEnd)
          throw new StreamProtocolError(`DATA ${accepted ? "after END" : "before ACCEPT"}`);
        c.resHash?.update(b);
        corkPlain(local);
        if (!local.write(b)) t.pause();
      },
      control: (type, reason) => {
        if (type === F_ACCEPT && !accepted) {
          accepted = true;
          if (unacked) {
            unacked = undefined;
            if (local.isPaused() && !t.writableNeedDrain) local.resume();
          }
        } else if (type === F_END && accepted && !c.gotEnd) {
          c.gotEnd = true;
          local.end();
          done();
        } else if (type === F_REFUSE && !accepted) {
          c.established = false;
          c.decision = "deny";
          c.refusalCode = "QHX_TUNNEL_DENIED";
          c.reason = `the server refused the connection: ${reason}`;
          this.logRefusal(c, local.remoteAddress);
          link.stream = undefined;
          link.onClosed = undefined;
          this.closeLink(link);
          local.destroy();
        } else if (type === F_RESET) {
          c.closeReason ||= `reset by the server: ${reason}`;
          link.stream = undefined;
          link.onClosed = undefined;
          this.closeLink(link);
          local.destroy();
        } else throw new StreamProtocolError(`unexpected ${frameName(type)}`);
      },
    };
    link.onClosed = (orderly, why) => {
      if (orderly && unacked && !accepted && !this.closing) {
        // the server closed this pooled link before it read the OPEN: it never started the stream
        const again = { chunks: unacked, ended: c.sentEnd };
        // pause first: a flowing socket without "data"/"end" listeners would drop what arrives during
        // the new handshake (#stream resumes it)
        local.pause();
        c.detach?.();
        c.reused = false;
        c.link = undefined;
        this.#connect(c, again);
        return;
      }
      c.closeReason ||= why;
      local.destroy();
    };
    local.on("data", onData);
    local.on("end", onEnd);
    local.on("drain", onLocalDrain);
    local.on("close", onLocalClose);
    t.on("drain", onTDrain);
    if (!c.sentEnd) local.resume();
  }
}
