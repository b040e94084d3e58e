/**
 * Offline verification of transparent statements (receipt files), with nothing but files:
 *
 *   trust/bundles/<trust-domain>.pem   X.509 authorities of each trust domain (a bundle snapshot)
 *   trust/notary.pem                   the notary's public key (SPKI PEM)
 *   trust/checkpoint                   optional: a checkpoint (C2SP signed note) the auditor already trusts
 *
 * Each check has a stable name; the first that fails throws a ReceiptCheckError naming it and why, and
 * a successful verification returns the list of what was proved:
 *
 *   statement     the file is a COSE_Sign1 statement of content type application/vnd.qhx.receipt+cbor
 *   signature     the statement's COSE signature verifies with its x5chain leaf key
 *   claims        the claims parse, and name the signer's SPIFFE ID and certificate fingerprint
 *   inclusion     the COSE Receipt's RFC 9162 inclusion path leads from the recomputed leaf to a root
 *   tree-head     the notary key signed that root (tree size n), kid matching
 *   svid-chain    the x5chain is a valid X509-SVID of the bundle at the log's admission time
 *   timing        the exchange ended before it was admitted, and was admitted before `now`
 *   consistency   (with a trusted checkpoint) the receipt's tree and the trusted one are consistent
 *
 * Parsed chains are cached by fingerprint: the expensive path validation (parsing, chain signatures) is
 * time-independent and is reused; only the validity windows are re-checked for each receipt's time.
 */
import crypto, { type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { parsePemBundle } from "../core/bundle.ts";
import type { BundleSource, TrustBundle } from "../core/bundle-types.ts";
import { QhxError } from "../core/errors.ts";
import { fromPem } from "../core/pem.ts";
import { type VerifiedX509Svid, verifyX509Svid } from "../core/x509-verify.ts";
import { type Checkpoint, verifyCheckpoint } from "./checkpoint.ts";
import { type CoseSign1, coseAlgName, decodeSign1, HEADER, verifySign1, x5chainOf } from "./cose.ts";
import { equal, rootFromInclusionProof, sha256, verifyConsistency } from "./merkle.ts";
import {
  type ConsistencyProof,
  checkClaimIds,
  consistencyProofsOf,
  decodeClaims,
  decodeNotaryReceipt,
  RECEIPT_CONTENT_TYPE,
  type ReceiptClaims,
  receiptLeafHash,
  statementHash,
} from "./receipt.ts";

export const RECEIPT_CHECKS = [
  "statement",
  "signature",
  "claims",
  "inclusion",
  "tree-head",
  "svid-chain",
  "timing",
  "consistency",
] as const;
export type ReceiptCheck = (typeof RECEIPT_CHECKS)[number];

/** A receipt failed check `check`; `code` is the underlying error's stable code. */
export class ReceiptCheckError extends QhxError {
  readonly check: ReceiptCheck;
  constructor(check: ReceiptCheck, code: string, message: string) {
    super(code, `${check}: ${message}`);
    this.name = "ReceiptCheckError";
    this.check = check;
  }
}

export interface TrustMaterial {
  bundles: Map<string, TrustBundle>;
  notaryKey: KeyObject;
  /** key id the notary puts in its receipts: SHA-256(SPKI DER)[:8] */
  notaryKid: Uint8Array;
  /** a checkpoint the auditor trusts (verified against notaryKey when loaded) */
  checkpoint?: Checkpoint;
}

export function notaryKidOf(key: KeyObject): Uint8Array {
  const pub = key.type === "private" ? crypto.createPublicKey(key) : key;
  return sha256(pub.export({ type: "spki", format: "der" })).subarray(0, 8);
}

export function makeTrust(
  bundles: TrustBundle[],
  notaryKey: KeyObject,
  checkpointText?: string,
): TrustMaterial {
  const t: TrustMaterial = {
    bundles: new Map(bundles.map((b) => [b.trustDomain, b])),
    notaryKey,
    notaryKid: notaryKidOf(notaryKey),
  };
  if (checkpointText !== undefined) t.checkpoint = verifyCheckpoint(checkpointText, notaryKey);
  return t;
}

/** Load trust material from a directory (see the module comment). Throws QHX_TRUST_DIR_INVALID. */
export function loadTrustDir(dir: string): TrustMaterial {
  const bad = (why: string): never => {
    throw new QhxError("QHX_TRUST_DIR_INVALID", `${dir}: ${why}`, {
      hint: "write one with `qhx log checkpoint --trust-out DIR` (or `qhx demo --keep DIR`)",
    });
  };
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) bad("not a directory");
  const bdir = path.join(dir, "bundles");
  const bundles: TrustBundle[] = [];
  if (fs.existsSync(bdir)) {
    for (const f of fs.readdirSync(bdir).sort()) {
      if (!f.endsWith(".pem")) continue;
      const td = f.slice(0, -4);
      try {
        bundles.push(parsePemBundle(fs.readFileSync(path.join(bdir, f), "utf8"), td));
      } catch (e) {
        bad(`bundles/${f}: ${(e as Error).message}`);
      }
    }
  }
  if (bundles.length === 0) bad("no trust bundle (bundles/<trust-domain>.pem)");
  const keyFile = path.join(dir, "notary.pem");
  if (!fs.existsSync(keyFile)) bad("no notary.pem (the notary's public key)");
  let key: KeyObject;
  try {
    key = crypto.createPublicKey(fs.readFileSync(keyFile, "utf8"));
  } catch (e) {
    return bad(`notary.pem: ${(e as Error).message}`);
  }
  const cpFile = path.join(dir, "checkpoint");
  let cp: string | undefined;
  if (fs.existsSync(cpFile)) cp = fs.readFileSync(cpFile, "utf8");
  try {
    return makeTrust(bundles, key, cp);
  } catch (e) {
    return bad(`checkpoint: ${(e as Error).message}`);
  }
}

export interface VerifiedReceipt {
  claims: ReceiptClaims;
  spiffeId: string;
  leafIndex: number;
  treeSize: number;
  root: Uint8Array;
  admittedAt: Date;
  svidNotAfter: Date;
  /** one line per check, what it proved */
  proved: { check: ReceiptCheck; detail: string }[];
}

export interface VerifyOptions {
  /** verify as of this time (default: now); receipts admitted later fail `timing` */
  now?: Date;
  /** consistency proofs from elsewhere (e.g. `qhx log consistency` output) */
  consistency?: ConsistencyProof[];
  /** how far after its admission an exchange may claim to have ended (clock skew; default 5 min) */
  maxSkewMs?: number;
}

// ---- caches (per trust material: the same chain under another bundle is verified afresh)

interface ChainEntry {
  result: VerifiedX509Svid;
  notBefore: number;
  notAfter: number;
}
const CHAINS = new WeakMap<object, Map<string, ChainEntry>>();
const TREE_HEADS = new WeakMap<TrustMaterial, Set<string>>();
const CONSISTENT = new WeakMap<TrustMaterial, Set<string>>();
const CACHE_MAX = 4096;

function chainFingerprint(chain: Uint8Array[]): string {
  const h = crypto.createHash("sha256");
  for (const c of chain) {
    h.update(Buffer.from(String(c.length)));
    h.update(":");
    h.update(c);
  }
  return h.digest("base64");
}

function verifyChainAt(trust: TrustMaterial, chain: Uint8Array[], at: Date): VerifiedX509Svid {
  return verifyChainCached(trust, trust.bundles, chain, at);
}

/**
 * verifyX509Svid with a cache per `owner` (an object whose life bounds the trust anchors' — the trust
 * material, or a bundle object that is replaced, never mutated, on change).
 */
export function verifyChainCached(
  owner: object,
  bundles: BundleSource,
  chain: Uint8Array[],
  at: Date,
): VerifiedX509Svid {
  let cache = CHAINS.get(owner);
  if (!cache) CHAINS.set(owner, (cache = new Map()));
  const fp = chainFingerprint(chain);
  const hit = cache.get(fp);
  const t = at.getTime();
  // path validation is time-independent except the validity windows: reuse it inside the window
  if (hit && t >= hit.notBefore && t <= hit.notAfter) return hit.result;
  const result = verifyX509Svid(chain, bundles, at);
  const notBefore = Math.max(...result.path.map((c) => c.notBefore.getTime()));
  const notAfter = Math.min(...result.path.map((c) => c.notAfter.getTime()));
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(fp, { result, notBefore, notAfter });
  return result;
}

/** Leaf public keys by SHA-256 of the certificate (parsing a certificate costs more than a verification). */
const LEAF_KEYS = new Map<string, KeyObject>();

function leafKeyOf(der: Uint8Array): KeyObject {
  const fp = crypto.createHash("sha256").update(der).digest("base64");
  let key = LEAF_KEYS.get(fp);
  if (!key) {
    try {
      key = new crypto.X509Certificate(der).publicKey;
    } catch (e) {
      throw new QhxError("QHX_SVID_MALFORMED", `the x5chain leaf cannot be parsed: ${(e as Error).message}`);
    }
    if (LEAF_KEYS.size >= CACHE_MAX) LEAF_KEYS.clear();
    LEAF_KEYS.set(fp, key);
  }
  return key;
}

function fail(check: ReceiptCheck, e: unknown): never {
  if (e instanceof ReceiptCheckError) throw e;
  const code = e instanceof QhxError ? e.code : "QHX_RECEIPT_INVALID";
  throw new ReceiptCheckError(check, code, (e as Error).message ?? String(e));
}

function step<T>(check: ReceiptCheck, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    return fail(check, e);
  }
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** Verify one transparent statement (receipt file bytes). Throws ReceiptCheckError at the first failure. */
export function verifyReceipt(
  bytes: Uint8Array,
  trust: TrustMaterial,
  opts: VerifyOptions = {},
): VerifiedReceipt {
  const now = opts.now ?? new Date();
  const proved: VerifiedReceipt["proved"] = [];

  // statement
  const { msg, chain } = step("statement", () => {
    const msg: CoseSign1 = decodeSign1(bytes);
    const ct = msg.protected.get(HEADER.contentType);
    if (ct !== RECEIPT_CONTENT_TYPE) {
      throw new QhxError(
        "QHX_RECEIPT_MALFORMED",
        `content type ${JSON.stringify(ct)} is not ${RECEIPT_CONTENT_TYPE}`,
      );
    }
    if (msg.payload === null)
      throw new QhxError("QHX_RECEIPT_MALFORMED", "the statement's payload is detached");
    const chain = x5chainOf(msg.protected);
    if (!chain) throw new QhxError("QHX_RECEIPT_MALFORMED", "the protected header has no x5chain (33)");
    return { msg, chain };
  });
  proved.push({ check: "statement", detail: `COSE_Sign1, ${chain.length} certificate(s) in x5chain` });

  // signature (leaf key; the chain is validated below, at admission time)
  const leafKey = step("signature", () => {
    const key = leafKeyOf(chain[0]!);
    verifySign1(msg, key);
    return key;
  });
  proved.push({
    check: "signature",
    detail: `${coseAlgName(msg.protected.get(HEADER.alg) as number)} signature by the x5chain leaf key (${leafKey.asymmetricKeyType}) verifies`,
  });

  // claims
  const claims = step("claims", () => {
    const c = decodeClaims(msg.payload!);
    checkClaimIds(c);
    if (!equal(c.signer.certSha256, sha256(chain[0]!))) {
      throw new QhxError(
        "QHX_RECEIPT_SIGNER_MISMATCH",
        "signer.cert_sha256 is not the fingerprint of the x5chain leaf",
      );
    }
    return c;
  });
  proved.push({
    check: "claims",
    detail: `exchange ${claims.id}: ${claims.signer.id} → ${claims.peer.id || "(no peer)"}, ${claims.decision}`,
  });

  // inclusion
  const { nr, root } = step("inclusion", () => {
    const list = msg.unprotected.get(HEADER.receipts);
    if (!Array.isArray(list) || list.length === 0) {
      throw new QhxError(
        "QHX_RECEIPT_NOT_LOGGED",
        "the statement carries no COSE Receipt (unprotected header 394)",
      );
    }
    if (!(list[0] instanceof Uint8Array))
      throw new QhxError("QHX_RECEIPT_MALFORMED", "receipt (394) entries are byte strings");
    const nr = decodeNotaryReceipt(list[0]);
    const leaf = receiptLeafHash(nr.admittedAt, statementHash(msg));
    const root = rootFromInclusionProof(nr.proof.leafIndex, nr.proof.treeSize, leaf, nr.proof.path);
    return { nr, root };
  });
  proved.push({
    check: "inclusion",
    detail: `leaf ${nr.proof.leafIndex} of a tree of ${nr.proof.treeSize} (RFC 9162 path of ${nr.proof.path.length} hashes) → root ${hex(root).slice(0, 16)}…`,
  });

  // tree-head
  step("tree-head", () => {
    const kid = nr.msg.protected.get(HEADER.kid);
    if (!(kid instanceof Uint8Array) || !equal(kid, trust.notaryKid)) {
      throw new QhxError(
        "QHX_RECEIPT_WRONG_NOTARY",
        "the COSE Receipt's kid is not the trusted notary key's",
      );
    }
    let heads = TREE_HEADS.get(trust);
    if (!heads) TREE_HEADS.set(trust, (heads = new Set()));
    const key = `${hex(sha256(nr.msg.protectedBytes, root, nr.msg.signature))}`;
    if (heads.has(key)) return;
    verifySign1(nr.msg, trust.notaryKey, root);
    if (heads.size >= CACHE_MAX) heads.clear();
    heads.add(key);
  });
  proved.push({
    check: "tree-head",
    detail: `the notary key signed the root of the tree of size ${nr.proof.treeSize}`,
  });

  // svid-chain at the admission time
  const admittedAt = new Date(nr.admittedAt);
  const svid = step("svid-chain", () => {
    const v = verifyChainAt(trust, chain, admittedAt);
    if (v.spiffeId.toString() !== claims.signer.id) {
      throw new QhxError(
        "QHX_RECEIPT_SIGNER_MISMATCH",
        `the SVID is ${v.spiffeId}, the claims name ${claims.signer.id}`,
      );
    }
    return v;
  });
  proved.push({
    check: "svid-chain",
    detail: `X509-SVID ${svid.spiffeId} valid at admission ${admittedAt.toISOString()} (expires ${svid.leaf.notAfter.toISOString()}), anchored in the bundle of ${svid.trustDomain}`,
  });

  // timing
  step("timing", () => {
    const skew = opts.maxSkewMs ?? 5 * 60_000;
    if (claims.time.end > nr.admittedAt + skew) {
      throw new QhxError(
        "QHX_RECEIPT_TIME",
        `the exchange ended at ${new Date(claims.time.end).toISOString()}, after it was admitted`,
      );
    }
    if (
      !(claims.time.start <= claims.time.handshake || claims.time.handshake === 0) ||
      claims.time.start > claims.time.end
    ) {
      throw new QhxError("QHX_RECEIPT_TIME", "the exchange's times are out of order");
    }
    if (nr.admittedAt > now.getTime()) {
      throw new QhxError(
        "QHX_RECEIPT_TIME",
        `admitted at ${admittedAt.toISOString()}, after the verification time ${now.toISOString()}`,
      );
    }
  });
  proved.push({
    check: "timing",
    detail: `exchange ended ${new Date(claims.time.end).toISOString()}, admitted ${admittedAt.toISOString()}, verified as of ${now.toISOString()}`,
  });

  // consistency with a trusted checkpoint
  if (trust.checkpoint) {
    const cp = trust.checkpoint;
    step("consistency", () => {
      const n = nr.proof.treeSize;
      const m = cp.size;
      if (n === m) {
        if (!equal(root, cp.root))
          throw new QhxError(
            "QHX_MERKLE_BAD_PROOF",
            `the trusted checkpoint of size ${m} has another root: the log forked`,
          );
        return;
      }
      const [first, second, r1, r2] = n < m ? [n, m, root, cp.root] : [m, n, cp.root, root];
      const all = [...step("consistency", () => consistencyProofsOf(msg)), ...(opts.consistency ?? [])];
      const p = all.find((c) => c.first === first && c.second === second);
      if (!p) {
        throw new QhxError(
          "QHX_RECEIPT_NO_CONSISTENCY",
          `no consistency proof from tree size ${first} to ${second}`,
          {
            hint: `get one with: qhx log consistency --from ${first} --to ${second} --out FILE, then --consistency FILE`,
          },
        );
      }
      // receipts of one batch share their consistency proof: verify each (sizes, roots, proof) once
      let seen = CONSISTENT.get(trust);
      if (!seen) CONSISTENT.set(trust, (seen = new Set()));
      const key = hex(sha256(Buffer.from(`${first},${second}`), r1, r2, ...p.path));
      if (seen.has(key)) return;
      verifyConsistency(first, second, r1, r2, p.path);
      if (seen.size >= CACHE_MAX) seen.clear();
      seen.add(key);
    });
    proved.push({
      check: "consistency",
      detail: `tree ${nr.proof.treeSize} is consistent with the trusted checkpoint of size ${cp.size}`,
    });
  }

  return {
    claims,
    spiffeId: svid.spiffeId.toString(),
    leafIndex: nr.proof.leafIndex,
    treeSize: nr.proof.treeSize,
    root,
    admittedAt,
    svidNotAfter: svid.leaf.notAfter,
    proved,
  };
}

/** Parse a consistency-proof file written by `qhx log consistency --out` (JSON). */
export function parseConsistencyFile(text: string): ConsistencyProof[] {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    throw new QhxError("QHX_INVALID_ARGUMENT", "the consistency file is not JSON");
  }
  const list = Array.isArray(j) ? j : [j];
  return list.map((x, i) => {
    const o = x as { first?: unknown; second?: unknown; proof?: unknown };
    if (!Number.isSafeInteger(o.first) || !Number.isSafeInteger(o.second) || !Array.isArray(o.proof)) {
      throw new QhxError("QHX_INVALID_ARGUMENT", `consistency proof ${i}: needs first, second and proof[]`);
    }
    return {
      first: o.first as number,
      second: o.second as number,
      path: (o.proof as unknown[]).map((h) => {
        if (typeof h !== "string" || !/^[0-9a-f]{64}$/.test(h))
          throw new QhxError("QHX_INVALID_ARGUMENT", `consistency proof ${i}: hashes are 64 hex digits`);
        return new Uint8Array(Buffer.from(h, "hex"));
      }),
    };
  });
}

export { fromPem };
