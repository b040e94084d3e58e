/**
 * COSE_Sign1 (RFC 9052 §4.2, §4.4) with node:crypto signatures.
 *
 *   COSE_Sign1 = #6.18([ protected: bstr .cbor header_map, unprotected: header_map,
 *                        payload: bstr / nil, signature: bstr ])
 *   Sig_structure = [ "Signature1", body_protected, external_aad, payload ]
 *
 * Algorithms: ES256 (-7) and ES384 (-35) with the IEEE P1363 r||s signature form (RFC 9053 §2.1),
 * EdDSA (-8) with Ed25519, ML-DSA-44/65/87 (-48/-49/-50, draft-ietf-cose-dilithium: pure, empty context).
 * The algorithm must match the verifying key's type: a mismatch is refused before any crypto. Certificate
 * chains travel in x5chain (label 33, RFC 9360): one bstr for a single certificate, else an array, leaf
 * first. A detached payload (nil) is supplied by the verifier (COSE Receipts do this with the Merkle root).
 */
import crypto, { type KeyObject } from "node:crypto";
import { type KeyAlg, keyAlgOf } from "../core/alg.ts";
import { QhxError } from "../core/errors.ts";
import {
  asArray,
  asBytes,
  asInt,
  asMap,
  type CborValue,
  CborError,
  decodeCbor,
  encodeCbor,
  Tagged,
} from "./cbor.ts";

export const COSE_SIGN1_TAG = 18;

/** Common header labels (RFC 9052 §3.1, RFC 9360, RFC 9942 / RFC 9943). */
export const HEADER = {
  alg: 1,
  crit: 2,
  contentType: 3,
  kid: 4,
  x5chain: 33,
  /** COSE Receipts: verifiable data structure (RFC 9942) */
  vds: 395,
  /** COSE Receipts: verifiable data structure proofs */
  vdp: 396,
  /** SCITT: receipts carried in a transparent statement's unprotected header (RFC 9943) */
  receipts: 394,
} as const;

/** COSE algorithm identifiers QHx signs and verifies with. */
export const COSE_ALG = {
  ES256: -7,
  ES384: -35,
  EdDSA: -8,
  "ML-DSA-44": -48,
  "ML-DSA-65": -49,
  "ML-DSA-87": -50,
} as const;

const ALG_BY_KEY: Partial<Record<KeyAlg, number>> = {
  "ec-p256": COSE_ALG.ES256,
  "ec-p384": COSE_ALG.ES384,
  ed25519: COSE_ALG.EdDSA,
  "ml-dsa-44": COSE_ALG["ML-DSA-44"],
  "ml-dsa-65": COSE_ALG["ML-DSA-65"],
  "ml-dsa-87": COSE_ALG["ML-DSA-87"],
};

export function coseAlgName(alg: number): string {
  for (const [n, v] of Object.entries(COSE_ALG)) if (v === alg) return n;
  return `unknown (${alg})`;
}

/** The COSE algorithm for a signing or verifying key (throws QHX_UNSUPPORTED_ALGORITHM for RSA etc.). */
export function coseAlgFor(key: KeyObject): number {
  const alg = ALG_BY_KEY[keyAlgOf(key)];
  if (alg === undefined) {
    throw new QhxError("QHX_UNSUPPORTED_ALGORITHM", `no COSE algorithm for a ${keyAlgOf(key)} key in QHx`);
  }
  return alg;
}

export class CoseError extends QhxError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = "CoseError";
  }
}

export interface CoseSign1 {
  /** the serialized protected header (bstr content), exactly as received */
  protectedBytes: Uint8Array;
  protected: Map<CborValue, CborValue>;
  unprotected: Map<CborValue, CborValue>;
  /** null: detached */
  payload: Uint8Array | null;
  signature: Uint8Array;
}

export function sigStructure(
  protectedBytes: Uint8Array,
  payload: Uint8Array,
  externalAad?: Uint8Array,
): Uint8Array {
  return encodeCbor(["Signature1", protectedBytes, externalAad ?? new Uint8Array(0), payload]);
}

function sigParams(key: KeyObject, alg: number): { digest: string | null; p1363: boolean } {
  switch (alg) {
    case COSE_ALG.ES256:
      return { digest: "sha256", p1363: true };
    case COSE_ALG.ES384:
      return { digest: "sha384", p1363: true };
    default:
      void key;
      return { digest: null, p1363: false };
  }
}

/** Sign: returns the tagged COSE_Sign1 encoding. `payload` null with `detachedPayload` signs detached. */
export function signSign1(opts: {
  key: KeyObject;
  protected: Map<CborValue, CborValue>;
  unprotected?: Map<CborValue, CborValue>;
  payload: Uint8Array | null;
  detachedPayload?: Uint8Array;
}): Uint8Array {
  const alg = coseAlgFor(opts.key);
  const prot = new Map(opts.protected);
  prot.set(HEADER.alg, alg);
  const protectedBytes = encodeCbor(prot);
  const signed = opts.payload ?? opts.detachedPayload;
  if (!signed) throw new QhxError("QHX_INVALID_ARGUMENT", "signSign1: no payload");
  const sig = signSign1Bytes(opts.key, alg, protectedBytes, signed);
  return encodeSign1({
    protectedBytes,
    unprotected: opts.unprotected ?? new Map(),
    payload: opts.payload,
    signature: sig,
  });
}

/** The raw COSE signature over Sig_structure (for callers that reuse a protected header). */
export function signSign1Bytes(
  key: KeyObject,
  alg: number,
  protectedBytes: Uint8Array,
  payload: Uint8Array,
): Uint8Array {
  const { digest, p1363 } = sigParams(key, alg);
  const tbs = sigStructure(protectedBytes, payload);
  return new Uint8Array(crypto.sign(digest, tbs, p1363 ? { key, dsaEncoding: "ieee-p1363" } : key));
}

export function encodeSign1(m: {
  protectedBytes: Uint8Array;
  unprotected: Map<CborValue, CborValue>;
  payload: Uint8Array | null;
  signature: Uint8Array;
}): Uint8Array {
  return encodeCbor(new Tagged(COSE_SIGN1_TAG, [m.protectedBytes, m.unprotected, m.payload, m.signature]));
}

/** Parse a COSE_Sign1 (tagged or untagged) strictly. Throws CoseError QHX_COSE_MALFORMED. */
export function decodeSign1(bytes: Uint8Array): CoseSign1 {
  let v: CborValue;
  try {
    v = decodeCbor(bytes);
  } catch (e) {
    throw new CoseError("QHX_COSE_MALFORMED", `not a COSE_Sign1: ${(e as Error).message}`);
  }
  try {
    if (v instanceof Tagged) {
      if (v.tag !== COSE_SIGN1_TAG) throw new CborError(`tag ${v.tag} is not COSE_Sign1 (18)`);
      v = v.value;
    }
    const a = asArray(v, "COSE_Sign1");
    if (a.length !== 4) throw new CborError(`COSE_Sign1 must have 4 elements, has ${a.length}`);
    const protectedBytes = asBytes(a[0], "protected header");
    const prot =
      protectedBytes.length === 0 ? new Map() : asMap(decodeCbor(protectedBytes), "protected header");
    const unprotected = asMap(a[1], "unprotected header");
    for (const k of prot.keys()) {
      if (unprotected.has(k))
        throw new CborError(`header label ${String(k)} is both protected and unprotected`);
    }
    const payload = a[2] === null ? null : asBytes(a[2], "payload");
    const signature = asBytes(a[3], "signature");
    if (prot.has(HEADER.crit)) throw new CborError("critical headers (crit) are not supported");
    asInt(prot.get(HEADER.alg), "protected alg");
    return { protectedBytes, protected: prot, unprotected, payload, signature };
  } catch (e) {
    if (e instanceof CoseError) throw e;
    throw new CoseError("QHX_COSE_MALFORMED", (e as Error).message);
  }
}

const KEY_COSE_ALG = new WeakMap<KeyObject, number | null>();

/** The key type each COSE algorithm requires (the key's algorithm is looked up once per KeyObject). */
function keyMatches(key: KeyObject, alg: number): boolean {
  let a = KEY_COSE_ALG.get(key);
  if (a === undefined) {
    try {
      a = ALG_BY_KEY[keyAlgOf(key)] ?? null;
    } catch {
      a = null;
    }
    KEY_COSE_ALG.set(key, a);
  }
  return a === alg;
}

/**
 * Verify a COSE_Sign1's signature with `key`. Throws CoseError: QHX_COSE_ALG_MISMATCH (the header's
 * algorithm is not the key's), QHX_COSE_BAD_SIGNATURE, QHX_COSE_NO_PAYLOAD (detached and none given).
 */
export function verifySign1(msg: CoseSign1, key: KeyObject, detachedPayload?: Uint8Array): void {
  const alg = msg.protected.get(HEADER.alg) as number;
  if (!keyMatches(key, alg)) {
    let keyAlg = "unsupported";
    try {
      keyAlg = keyAlgOf(key);
    } catch {
      /* keep "unsupported" */
    }
    throw new CoseError(
      "QHX_COSE_ALG_MISMATCH",
      `algorithm ${coseAlgName(alg)} does not match the ${keyAlg} key`,
    );
  }
  const payload = msg.payload ?? detachedPayload;
  if (!payload) throw new CoseError("QHX_COSE_NO_PAYLOAD", "the payload is detached and was not supplied");
  const { digest, p1363 } = sigParams(key, alg);
  if (p1363 && msg.signature.length !== (alg === COSE_ALG.ES256 ? 64 : 96)) {
    throw new CoseError(
      "QHX_COSE_BAD_SIGNATURE",
      `an ${coseAlgName(alg)} signature has ${msg.signature.length} bytes`,
    );
  }
  let ok: boolean;
  try {
    ok = crypto.verify(
      digest,
      sigStructure(msg.protectedBytes, payload),
      p1363 ? { key, dsaEncoding: "ieee-p1363" } : key,
      msg.signature,
    );
  } catch {
    ok = false;
  }
  if (!ok) throw new CoseError("QHX_COSE_BAD_SIGNATURE", "the COSE signature does not verify");
}

/** x5chain (label 33) of a header map, leaf first. */
export function x5chainOf(h: Map<CborValue, CborValue>): Uint8Array[] | undefined {
  const v = h.get(HEADER.x5chain);
  if (v === undefined) return undefined;
  if (v instanceof Uint8Array) return [v];
  const a = asArray(v, "x5chain");
  if (a.length < 2)
    throw new CoseError("QHX_COSE_MALFORMED", "x5chain as an array must hold 2 or more certificates");
  return a.map((c, i) => asBytes(c, `x5chain[${i}]`));
}

export function x5chainValue(chain: Uint8Array[]): CborValue {
  if (chain.length === 0) throw new QhxError("QHX_INVALID_ARGUMENT", "x5chain: empty chain");
  return chain.length === 1 ? chain[0]! : [...chain];
}
