/**
 * What a tunnel hands to provenance: one record per connection it carried (or refused). The tunnel
 * produces these; a RecordSink (the receipt emitter in host/provenance, or a test) consumes them.
 *
 * The contract: `record()` is called once per connection, after it closed (or was refused), from the
 * event loop. It must return at once (queue the work) and must not throw; a sink that fails reports it
 * through its own metrics and logs, never by breaking the data path.
 */
import type { KeyObject } from "node:crypto";

export interface ExchangeRecord {
  /** Random id of this connection (UUID v4). */
  id: string;
  /** The tunnel mode the connection ran in. */
  mode: "mtls" | "pq";
  /** Which tunnel side produced the record: the client side (local app -> peer) or the server side. */
  role: "client" | "server";
  /** SPIFFE ID of this tunnel's own X509-SVID. */
  localId: string;
  /** SPIFFE ID of the authenticated peer ("" when the handshake failed before one was known). */
  peerId: string;
  /** SHA-256 (hex) of the DER of this side's leaf certificate and of the peer's. */
  localCertSha256: string;
  peerCertSha256: string;
  /** The authorization outcome for the peer; `reason` says which rule or check decided. */
  decision: "allow" | "deny";
  reason: string;
  /** The policy version that decided (null for an allow-list or no policy). */
  policyVersion: number | null;
  /** Negotiated TLS key-exchange group (e.g. "X25519MLKEM768") and the peer's signature algorithm. */
  group: string;
  peerSigAlg: string;
  /** Unix milliseconds: TCP accept/connect, handshake done, close. */
  startedAt: number;
  handshakeAt: number;
  endedAt: number;
  /**
   * Bytes and SHA-256 (hex) of each direction of the plaintext stream: "request" is what flowed from the
   * tunnel client side to the server side (app request), "response" the other way.
   */
  requestBytes: number;
  requestSha256: string;
  responseBytes: number;
  responseSha256: string;
  /**
   * The SVID this side used for the connection: its private key (never logged, never serialized) and its
   * certificate chain, leaf first, as DER. Receipts are signed with it.
   */
  svid: { key: KeyObject; chainDer: Uint8Array[] };
  /** The peer's certificate chain as presented, leaf first, DER (empty when none). */
  peerChainDer: Uint8Array[];
  /** Why the connection ended when not by an orderly close ("idle timeout", "shutdown", an errno code). */
  closeReason?: string;
  /** The TLS 1.3 session was resumed (PSK with a fresh key exchange; the peer chain verified again). */
  resumed?: boolean;
  /** Carried over a TLS connection an earlier connection already used (qhx-streams/1): no handshake. */
  reused?: boolean;
}

export interface RecordSink {
  record(rec: ExchangeRecord): void;
}
