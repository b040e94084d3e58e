/**
 * QHx receipts: what one exchange was, signed by the workload that carried it, and what the notary's log
 * says about it. Three objects, all CBOR (RFC 8949 deterministic encoding):
 *
 * 1. The **signed statement** — a COSE_Sign1 (RFC 9052) by the workload's SVID key:
 *      protected   { 1: alg, 3: "application/vnd.qhx.receipt+cbor", 33: x5chain (leaf first) }
 *      payload     the claims (ReceiptClaims) as a deterministic CBOR map with text keys
 * 2. The **log entry** the notary appends — RFC 9162 leaf input
 *      [ "qhx-receipt/1", admitted_at (unix ms), SHA-256(statement with an empty unprotected header) ]
 *    so the admission time is part of the append-only log and a verifier can check the SVID chain at it.
 * 3. The **COSE Receipt** (RFC 9942, vds RFC9162_SHA256) — a COSE_Sign1 by the notary key with a
 *    detached payload, the Merkle root:
 *      protected   { 1: -8 (EdDSA), 4: kid, 395: 1 }
 *      unprotected { 396: { -1: [ bstr .cbor [tree_size, leaf_index, [path…]] ] },
 *                    -65537: admitted_at (QHx private label: needed to recompute the leaf) }
 * A **transparent statement** (RFC 9943) is the signed statement with the COSE Receipt in its unprotected
 * header (label 394); QHx adds consistency proofs from the receipt's tree size to later ones under the
 * private label -65538: [[first, second, [hash…]]…]. It is the file `qhx receipt export` writes and
 * `qhx receipt verify` reads.
 */
import type { KeyObject } from "node:crypto";
import { QhxError, ValidationError } from "../core/errors.ts";
import { SpiffeId } from "../core/spiffeid.ts";
import type { ExchangeRecord } from "../tunnel/record.ts";
import {
  asArray,
  asBytes,
  asMap,
  asText,
  asUint,
  type CborValue,
  CborError,
  decodeCbor,
  encodeCbor,
  head,
} from "./cbor.ts";
import {
  COSE_ALG,
  type CoseSign1,
  decodeSign1,
  encodeSign1,
  HEADER,
  signSign1,
  x5chainValue,
} from "./cose.ts";
import { leafHash, sha256 } from "./merkle.ts";

export const RECEIPT_CONTENT_TYPE = "application/vnd.qhx.receipt+cbor";
export const LEAF_DOMAIN = "qhx-receipt/1";
/** COSE Receipts: verifiable data structure RFC9162_SHA256 */
export const VDS_RFC9162_SHA256 = 1;
/** vdp map key for inclusion proofs */
export const VDP_INCLUSION = -1;
/** QHx private-use header labels (RFC 9052 §16.5: below -65536) */
export const LABEL_ADMITTED_AT = -65537;
export const LABEL_CONSISTENCY = -65538;

export interface ReceiptClaims {
  v: 1;
  /** connection id */
  id: string;
  mode: string;
  role: "client" | "server";
  signer: { id: string; certSha256: Uint8Array };
  peer: { id: string; certSha256: Uint8Array };
  request: { sha256: Uint8Array; bytes: number };
  response: { sha256: Uint8Array; bytes: number };
  decision: "allow" | "deny";
  reason: string;
  policyVersion: number | null;
  tls: { group: string; peerSigAlg: string };
  /** unix ms */
  time: { start: number; handshake: number; end: number };
}

function hex32(s: string, field: string, allowEmpty = false): Uint8Array {
  if (allowEmpty && s === "") return new Uint8Array(0);
  if (!/^[0-9a-f]{64}$/i.test(s)) throw new ValidationError("must be 64 hex digits (SHA-256)", field);
  return new Uint8Array(Buffer.from(s, "hex"));
}

/** The claims of an exchange record (the record's own fields; no secrets). */
export function claimsFromRecord(rec: ExchangeRecord): ReceiptClaims {
  return {
    v: 1,
    id: rec.id,
    mode: rec.mode,
    role: rec.role,
    signer: { id: rec.localId, certSha256: hex32(rec.localCertSha256, "localCertSha256") },
    peer: { id: rec.peerId, certSha256: hex32(rec.peerCertSha256, "peerCertSha256", true) },
    request: { sha256: hex32(rec.requestSha256, "requestSha256"), bytes: rec.requestBytes },
    response: { sha256: hex32(rec.responseSha256, "responseSha256"), bytes: rec.responseBytes },
    decision: rec.decision,
    reason: rec.reason,
    policyVersion: rec.policyVersion,
    tls: { group: rec.group, peerSigAlg: rec.peerSigAlg },
    time: { start: rec.startedAt, handshake: rec.handshakeAt, end: rec.endedAt },
  };
}

export function encodeClaims(c: ReceiptClaims): Uint8Array {
  return encodeCbor({
    v: c.v,
    id: c.id,
    mode: c.mode,
    role: c.role,
    signer: { id: c.signer.id, cert_sha256: c.signer.certSha256 },
    peer: { id: c.peer.id, cert_sha256: c.peer.certSha256 },
    request: { sha256: c.request.sha256, bytes: c.request.bytes },
    response: { sha256: c.response.sha256, bytes: c.response.bytes },
    decision: c.decision,
    reason: c.reason,
    policy_version: c.policyVersion,
    tls: { group: c.tls.group, peer_sig_alg: c.tls.peerSigAlg },
    time: { start: c.time.start, handshake: c.time.handshake, end: c.time.end },
  });
}

function onlyKeys(m: Map<CborValue, CborValue>, keys: string[], what: string): void {
  for (const k of m.keys()) {
    if (typeof k !== "string" || !keys.includes(k))
      throw new CborError(`${what}: unexpected field ${String(k)}`);
  }
  for (const k of keys) if (!m.has(k)) throw new CborError(`${what}: missing field ${k}`);
}

/** Parse and validate claims (strict: exact fields and types). Throws CborError QHX_CBOR_INVALID. */
export function decodeClaims(payload: Uint8Array): ReceiptClaims {
  const m = asMap(decodeCbor(payload), "claims");
  onlyKeys(
    m,
    [
      "v",
      "id",
      "mode",
      "role",
      "signer",
      "peer",
      "request",
      "response",
      "decision",
      "reason",
      "policy_version",
      "tls",
      "time",
    ],
    "claims",
  );
  if (m.get("v") !== 1) throw new CborError(`claims: unsupported version ${String(m.get("v"))}`);
  const sub = (k: string, fields: string[]) => {
    const s = asMap(m.get(k), k);
    onlyKeys(s, fields, k);
    return s;
  };
  const signer = sub("signer", ["id", "cert_sha256"]);
  const peer = sub("peer", ["id", "cert_sha256"]);
  const request = sub("request", ["sha256", "bytes"]);
  const response = sub("response", ["sha256", "bytes"]);
  const tls = sub("tls", ["group", "peer_sig_alg"]);
  const time = sub("time", ["start", "handshake", "end"]);
  const role = asText(m.get("role"), "role");
  if (role !== "client" && role !== "server") throw new CborError(`role: "${role}" is not client or server`);
  const decision = asText(m.get("decision"), "decision");
  if (decision !== "allow" && decision !== "deny")
    throw new CborError(`decision: "${decision}" is not allow or deny`);
  const pv = m.get("policy_version");
  const peerCert = asBytes(peer.get("cert_sha256"), "peer.cert_sha256");
  if (peerCert.length !== 0 && peerCert.length !== 32)
    throw new CborError("peer.cert_sha256 must be 0 or 32 bytes");
  return {
    v: 1,
    id: asText(m.get("id"), "id"),
    mode: asText(m.get("mode"), "mode"),
    role,
    signer: {
      id: asText(signer.get("id"), "signer.id"),
      certSha256: asBytes(signer.get("cert_sha256"), "signer.cert_sha256", 32),
    },
    peer: { id: asText(peer.get("id"), "peer.id"), certSha256: peerCert },
    request: {
      sha256: asBytes(request.get("sha256"), "request.sha256", 32),
      bytes: asUint(request.get("bytes"), "request.bytes"),
    },
    response: {
      sha256: asBytes(response.get("sha256"), "response.sha256", 32),
      bytes: asUint(response.get("bytes"), "response.bytes"),
    },
    decision,
    reason: asText(m.get("reason"), "reason"),
    policyVersion: pv === null ? null : asUint(pv, "policy_version"),
    tls: {
      group: asText(tls.get("group"), "tls.group"),
      peerSigAlg: asText(tls.get("peer_sig_alg"), "tls.peer_sig_alg"),
    },
    time: {
      start: asUint(time.get("start"), "time.start"),
      handshake: asUint(time.get("handshake"), "time.handshake"),
      end: asUint(time.get("end"), "time.end"),
    },
  };
}

/** JSON view of claims for `qhx receipt show` and the admin API. */
export function claimsToJson(c: ReceiptClaims): Record<string, unknown> {
  const hx = (b: Uint8Array) => Buffer.from(b).toString("hex");
  const client = c.role === "client" ? c.signer.id : c.peer.id;
  const server = c.role === "server" ? c.signer.id : c.peer.id;
  return {
    id: c.id,
    mode: c.mode,
    role: c.role,
    signer: { spiffe_id: c.signer.id, cert_sha256: hx(c.signer.certSha256) },
    peer: { spiffe_id: c.peer.id, cert_sha256: hx(c.peer.certSha256) },
    client,
    server,
    request: { sha256: hx(c.request.sha256), bytes: c.request.bytes },
    response: { sha256: hx(c.response.sha256), bytes: c.response.bytes },
    decision: c.decision,
    reason: c.reason,
    policy_version: c.policyVersion,
    tls: { group: c.tls.group, peer_sig_alg: c.tls.peerSigAlg },
    started_at: new Date(c.time.start).toISOString(),
    handshake_at: new Date(c.time.handshake).toISOString(),
    ended_at: new Date(c.time.end).toISOString(),
  };
}

/** Sign a statement over `claims` with the SVID key; the chain (DER, leaf first) goes in x5chain. */
export function signStatement(claims: ReceiptClaims, key: KeyObject, chainDer: Uint8Array[]): Uint8Array {
  return signSign1({
    key,
    protected: new Map<CborValue, CborValue>([
      [HEADER.contentType, RECEIPT_CONTENT_TYPE],
      [HEADER.x5chain, x5chainValue(chainDer)],
    ]),
    payload: encodeClaims(claims),
  });
}

/** The statement as logged: its COSE_Sign1 with an empty unprotected header (what the log hashes). */
export function canonicalStatement(msg: CoseSign1): Uint8Array {
  if (msg.payload === null)
    throw new QhxError("QHX_RECEIPT_INVALID", "a statement cannot have a detached payload");
  return encodeSign1({
    protectedBytes: msg.protectedBytes,
    unprotected: new Map(),
    payload: msg.payload,
    signature: msg.signature,
  });
}

/**
 * SHA-256 of canonicalStatement(msg), hashed as it streams: tag 18, a 4-array, the three byte strings
 * and an empty map, without building the encoding (test/provenance checks both agree).
 */
export function statementHash(msg: CoseSign1): Uint8Array {
  if (msg.payload === null)
    throw new QhxError("QHX_RECEIPT_INVALID", "a statement cannot have a detached payload");
  const bstr = (b: Uint8Array) => [head(2, b.length), b];
  return sha256(
    Uint8Array.of(0xd2, 0x84),
    ...bstr(msg.protectedBytes),
    Uint8Array.of(0xa0),
    ...bstr(msg.payload),
    ...bstr(msg.signature),
  );
}

export function leafInput(admittedAtMs: number, stmtHash: Uint8Array): Uint8Array {
  return encodeCbor([LEAF_DOMAIN, admittedAtMs, stmtHash]);
}

export function receiptLeafHash(admittedAtMs: number, stmtHash: Uint8Array): Uint8Array {
  return leafHash(leafInput(admittedAtMs, stmtHash));
}

export interface InclusionProof {
  treeSize: number;
  leafIndex: number;
  path: Uint8Array[];
}

export interface ConsistencyProof {
  first: number;
  second: number;
  path: Uint8Array[];
}

export function notaryProtectedHeader(kid: Uint8Array): Uint8Array {
  return encodeCbor(
    new Map<CborValue, CborValue>([
      [HEADER.alg, COSE_ALG.EdDSA],
      [HEADER.kid, kid],
      [HEADER.vds, VDS_RFC9162_SHA256],
    ]),
  );
}

/** A COSE Receipt from its parts (the signature over the batch root is shared by the batch's leaves). */
export function encodeNotaryReceipt(p: {
  protectedBytes: Uint8Array;
  signature: Uint8Array;
  proof: InclusionProof;
  admittedAt: number;
}): Uint8Array {
  const proof = encodeCbor([p.proof.treeSize, p.proof.leafIndex, p.proof.path]);
  return encodeSign1({
    protectedBytes: p.protectedBytes,
    unprotected: new Map<CborValue, CborValue>([
      [HEADER.vdp, new Map<CborValue, CborValue>([[VDP_INCLUSION, [proof]]])],
      [LABEL_ADMITTED_AT, p.admittedAt],
    ]),
    payload: null,
    signature: p.signature,
  });
}

export interface ParsedNotaryReceipt {
  msg: CoseSign1;
  proof: InclusionProof;
  admittedAt: number;
}

/** Parse a COSE Receipt strictly (shape only; signature checks are verify.ts's). */
export function decodeNotaryReceipt(bytes: Uint8Array): ParsedNotaryReceipt {
  const msg = decodeSign1(bytes);
  try {
    if (msg.payload !== null) throw new CborError("a COSE Receipt's payload must be detached (nil)");
    if (msg.protected.get(HEADER.vds) !== VDS_RFC9162_SHA256) {
      throw new CborError(
        `verifiable data structure ${String(msg.protected.get(HEADER.vds))} is not RFC9162_SHA256 (1)`,
      );
    }
    const vdp = asMap(msg.unprotected.get(HEADER.vdp), "vdp (396)");
    const proofs = asArray(vdp.get(VDP_INCLUSION), "inclusion proofs (-1)");
    if (proofs.length !== 1) throw new CborError(`expected one inclusion proof, found ${proofs.length}`);
    const p = asArray(decodeCbor(asBytes(proofs[0], "inclusion proof")), "inclusion proof");
    if (p.length !== 3) throw new CborError("an inclusion proof is [tree_size, leaf_index, path]");
    const path = asArray(p[2], "inclusion path").map((h, i) => asBytes(h, `inclusion path[${i}]`, 32));
    return {
      msg,
      proof: { treeSize: asUint(p[0], "tree_size"), leafIndex: asUint(p[1], "leaf_index"), path },
      admittedAt: asUint(msg.unprotected.get(LABEL_ADMITTED_AT), "admitted_at (-65537)"),
    };
  } catch (e) {
    if (e instanceof QhxError && e.code !== "QHX_CBOR_INVALID") throw e;
    throw new QhxError("QHX_RECEIPT_MALFORMED", `COSE Receipt: ${(e as Error).message}`);
  }
}

/** The transparent statement: the statement with the notary receipt (and optional consistency proofs). */
export function transparentStatement(
  statement: Uint8Array,
  receipt: Uint8Array,
  consistency: ConsistencyProof[] = [],
): Uint8Array {
  const msg = decodeSign1(statement);
  const unprotected = new Map<CborValue, CborValue>([[HEADER.receipts, [receipt]]]);
  if (consistency.length)
    unprotected.set(
      LABEL_CONSISTENCY,
      consistency.map((c) => [c.first, c.second, c.path]),
    );
  return encodeSign1({
    protectedBytes: msg.protectedBytes,
    unprotected,
    payload: msg.payload,
    signature: msg.signature,
  });
}

export function consistencyProofsOf(msg: CoseSign1): ConsistencyProof[] {
  const v = msg.unprotected.get(LABEL_CONSISTENCY);
  if (v === undefined) return [];
  return asArray(v, "consistency proofs").map((c, i) => {
    const a = asArray(c, `consistency proof ${i}`);
    if (a.length !== 3) throw new CborError(`consistency proof ${i} is [first, second, path]`);
    return {
      first: asUint(a[0], "first"),
      second: asUint(a[1], "second"),
      path: asArray(a[2], "path").map((h) => asBytes(h, "consistency hash", 32)),
    };
  });
}

/** Basic checks a SPIFFE ID claim must pass. */
export function checkClaimIds(c: ReceiptClaims): void {
  SpiffeId.parse(c.signer.id);
  if (c.peer.id !== "") SpiffeId.parse(c.peer.id);
}
