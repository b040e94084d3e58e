/**
 * Key and signature algorithms QHx signs and verifies with, all through node:crypto (OpenSSL 3.5):
 * ECDSA P-256/P-384, Ed25519, RSA (JWT interop only), and ML-DSA-44/65/87 (FIPS 204, pure, empty context).
 */
import crypto, { type KeyObject } from "node:crypto";
import {
  COMPOSITE_ALGS,
  type CompositeAlg,
  type CompositePrivateKey,
  type CompositePublicKey,
  compositePkcs8,
  generateCompositeKeyPair,
  isCompositeAlg,
  isCompositeKey,
} from "./composite.ts";
import { QhxError } from "./errors.ts";

export const KEY_ALGS = [
  "ec-p256",
  "ec-p384",
  "ed25519",
  "rsa-2048",
  "ml-dsa-44",
  "ml-dsa-65",
  "ml-dsa-87",
] as const;
export type KeyAlg = (typeof KEY_ALGS)[number];

/** Algorithms a CA or an SVID key may use (RSA is accepted only for JWT-SVID interop). */
export const SVID_KEY_ALGS = [
  "ec-p256",
  "ec-p384",
  "ed25519",
  "ml-dsa-44",
  "ml-dsa-65",
  "ml-dsa-87",
] as const;
export type SvidKeyAlg = (typeof SVID_KEY_ALGS)[number];

/**
 * Algorithms a workload's X509-SVID key may use: SVID_KEY_ALGS plus the composite ML-DSA + ECDSA keys of
 * host/core/composite.ts (draft-ietf-lamps-pq-composite-sigs). Composite keys are workload keys only
 * (not CA, JWT or TLS keys): SVID_KEY_ALGS, its users and the defaults built from it are unchanged.
 */
export const WORKLOAD_KEY_ALGS = [...SVID_KEY_ALGS, ...COMPOSITE_ALGS] as const;
export type WorkloadKeyAlg = SvidKeyAlg | CompositeAlg;

export function isWorkloadKeyAlg(s: unknown): s is WorkloadKeyAlg {
  return typeof s === "string" && (WORKLOAD_KEY_ALGS as readonly string[]).includes(s);
}

/** A workload's public key: a node:crypto key or a composite one. */
export type WorkloadPublicKey = KeyObject | CompositePublicKey;

export interface WorkloadKeyPair {
  publicKey: WorkloadPublicKey;
  privateKey: KeyObject | CompositePrivateKey;
}

/** Generate a workload key: composite names give a CompositeKeyPair, the others generateKeyPair's. */
export function generateWorkloadKeyPair(alg: WorkloadKeyAlg): WorkloadKeyPair {
  return isCompositeAlg(alg) ? generateCompositeKeyPair(alg) : generateKeyPair(alg);
}

/** The algorithm of a workload key, composite included. */
export function workloadKeyAlgOf(key: WorkloadPublicKey): KeyAlg | CompositeAlg {
  return isCompositeKey(key) ? key.composite : keyAlgOf(key);
}

/** PKCS#8 DER of a workload private key (composite: the draft's OneAsymmetricKey form). */
export function workloadPkcs8(key: KeyObject | CompositePrivateKey): Buffer {
  return isCompositeKey(key) ? compositePkcs8(key) : key.export({ type: "pkcs8", format: "der" });
}

export function isKeyAlg(s: string): s is KeyAlg {
  return (KEY_ALGS as readonly string[]).includes(s);
}

export function parseKeyAlg(s: string, allowed: readonly string[] = SVID_KEY_ALGS): KeyAlg {
  const v = s.trim().toLowerCase();
  if (!isKeyAlg(v) || !allowed.includes(v)) {
    throw new QhxError("QHX_UNSUPPORTED_ALGORITHM", `unsupported key algorithm "${s}"`, {
      hint: `use one of ${allowed.join(", ")}`,
    });
  }
  return v;
}

export function isPostQuantum(alg: KeyAlg): boolean {
  return alg.startsWith("ml-dsa");
}

export interface KeyPair {
  publicKey: KeyObject;
  privateKey: KeyObject;
}

export function generateKeyPair(alg: KeyAlg): KeyPair {
  switch (alg) {
    case "ec-p256":
      return crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    case "ec-p384":
      return crypto.generateKeyPairSync("ec", { namedCurve: "P-384" });
    case "ed25519":
      return crypto.generateKeyPairSync("ed25519");
    case "rsa-2048":
      return crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
    case "ml-dsa-44":
    case "ml-dsa-65":
    case "ml-dsa-87":
      // @types/node lags OpenSSL 3.5's key types; node:crypto takes "ml-dsa-44/65/87" at run time
      return (crypto.generateKeyPairSync as unknown as (t: string) => KeyPair)(alg);
  }
}

/** The QHx algorithm of a key (public or private). */
export function keyAlgOf(key: KeyObject): KeyAlg {
  const t = key.asymmetricKeyType as string | undefined;
  switch (t) {
    case "ec": {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === "prime256v1" || curve === "P-256") return "ec-p256";
      if (curve === "secp384r1" || curve === "P-384") return "ec-p384";
      throw new QhxError("QHX_UNSUPPORTED_ALGORITHM", `unsupported EC curve ${curve}`);
    }
    case "ed25519":
      return "ed25519";
    case "rsa":
      return "rsa-2048";
    case "ml-dsa-44":
    case "ml-dsa-65":
    case "ml-dsa-87":
      return t;
    default:
      throw new QhxError("QHX_UNSUPPORTED_ALGORITHM", `unsupported key type ${t}`);
  }
}

/** Digest node:crypto.sign/verify takes for this key algorithm (null: the algorithm hashes internally). */
export function digestFor(alg: KeyAlg): string | null {
  switch (alg) {
    case "ec-p256":
    case "rsa-2048":
      return "sha256";
    case "ec-p384":
      return "sha384";
    default:
      return null;
  }
}

export type MlDsaAlg = "ml-dsa-44" | "ml-dsa-65" | "ml-dsa-87";

/**
 * Who computes ML-DSA for signData/verifyData: node:crypto (OpenSSL) by default, or a replacement such
 * as the Wasm kernels, installed by host/crypto's `configurePq({ backend: "wasm" })` (the config key
 * `crypto.pq_backend` and `QHX_PQ_BACKEND`). The two produce interchangeable FIPS 204 signatures.
 */
export interface MlDsaEngine {
  readonly name: string;
  /** Returns undefined when it cannot use this key (then node:crypto signs). */
  sign(alg: MlDsaAlg, privateKey: KeyObject, data: Uint8Array): Uint8Array | undefined;
  /** Returns undefined when it cannot use this key (then node:crypto verifies). */
  verify(alg: MlDsaAlg, publicKey: KeyObject, data: Uint8Array, signature: Uint8Array): boolean | undefined;
}

let mlDsaEngine: MlDsaEngine | undefined;

/** Install (or, with undefined, remove) the ML-DSA engine used by signData/verifyData. */
export function setMlDsaEngine(engine: MlDsaEngine | undefined): void {
  mlDsaEngine = engine;
}

/** The name of the ML-DSA engine in use ("node:crypto" unless one was installed). */
export function mlDsaEngineName(): string {
  return mlDsaEngine?.name ?? "node:crypto";
}

/** Sign `data` as X.509 does: ECDSA signatures DER-encoded, the others raw. */
export function signData(
  privateKey: KeyObject,
  data: Uint8Array,
  alg: KeyAlg = keyAlgOf(privateKey),
): Buffer {
  if (mlDsaEngine && isPostQuantum(alg)) {
    const sig = mlDsaEngine.sign(alg as MlDsaAlg, privateKey, data);
    if (sig) return Buffer.from(sig.buffer, sig.byteOffset, sig.byteLength);
  }
  return crypto.sign(digestFor(alg), data, privateKey);
}

export type EcdsaEncoding = "der" | "ieee-p1363";

/**
 * Verify a signature. ECDSA signatures are DER (X.509) unless `ecdsaEncoding` says IEEE P1363 (JOSE).
 * Never throws for a malformed signature or key mismatch: returns false.
 */
export function verifyData(
  publicKey: KeyObject,
  data: Uint8Array,
  signature: Uint8Array,
  opts: { alg?: KeyAlg; ecdsaEncoding?: EcdsaEncoding; rsaPss?: boolean } = {},
): boolean {
  let alg: KeyAlg;
  try {
    alg = opts.alg ?? keyAlgOf(publicKey);
  } catch {
    return false;
  }
  try {
    if (alg === "ec-p256" || alg === "ec-p384") {
      if (opts.ecdsaEncoding === "ieee-p1363") {
        const n = alg === "ec-p256" ? 64 : 96;
        if (signature.length !== n) return false;
      }
      return crypto.verify(
        digestFor(alg),
        data,
        { key: publicKey, dsaEncoding: opts.ecdsaEncoding ?? "der" },
        signature,
      );
    }
    if (alg === "rsa-2048" && opts.rsaPss) {
      return crypto.verify(
        "sha256",
        data,
        { key: publicKey, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
        signature,
      );
    }
    if (mlDsaEngine && isPostQuantum(alg)) {
      const ok = mlDsaEngine.verify(alg as MlDsaAlg, publicKey, data, signature);
      if (ok !== undefined) return ok;
    }
    return crypto.verify(digestFor(alg), data, publicKey, signature);
  } catch {
    return false;
  }
}

/** X.509 signatureAlgorithm OIDs (RFC 5758, RFC 8410, RFC 9881, RFC 4055). Parameters are always absent. */
export const SIG_OID: Record<KeyAlg, string> = {
  "ec-p256": "1.2.840.10045.4.3.2",
  "ec-p384": "1.2.840.10045.4.3.3",
  ed25519: "1.3.101.112",
  "rsa-2048": "1.2.840.113549.1.1.11",
  "ml-dsa-44": "2.16.840.1.101.3.4.3.17",
  "ml-dsa-65": "2.16.840.1.101.3.4.3.18",
  "ml-dsa-87": "2.16.840.1.101.3.4.3.19",
};

/** Key algorithm implied by a signatureAlgorithm OID, or undefined for one QHx does not accept. */
export function keyAlgForSigOid(oid: string): KeyAlg | undefined {
  for (const [alg, o] of Object.entries(SIG_OID)) if (o === oid) return alg as KeyAlg;
  return undefined;
}

/** DER SubjectPublicKeyInfo of a key. */
export function spki(key: KeyObject): Buffer {
  const pub = key.type === "private" ? crypto.createPublicKey(key) : key;
  return pub.export({ type: "spki", format: "der" });
}
