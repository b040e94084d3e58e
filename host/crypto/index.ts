/**
 * `qhx/crypto`: ML-DSA (FIPS 204) and ML-KEM (FIPS 203) with FIPS byte formats (the same as
 * @noble/post-quantum and node:crypto's raw keys), on either backend:
 *   - "wasm":   the AssemblyScript kernels (build/qhx-crypto[-simd].wasm), SIMD or scalar chosen at load;
 *   - "native": node:crypto (OpenSSL 3.5).
 * The default backend is QHX_PQ_BACKEND (native|wasm), else "native"; `configurePq({ backend })` sets it
 * (the control plane's config key calls this). Every failure is a QhxError with a stable code;
 * `mlDsa.verify` returns false for any malformed input instead of throwing.
 */
import type { KeyObject } from "node:crypto";
import { type MlDsaAlg, type MlDsaEngine, setMlDsaEngine } from "../core/alg.ts";
import { randomBytes } from "./random.ts";
import { QhxError } from "../core/errors.ts";
import {
  checkLength,
  dsaSizes,
  kemSizes,
  kernelDsaKeygen,
  kernelDsaSign,
  kernelDsaVerify,
  kernelKemDecaps,
  kernelKemEncaps,
  kernelKemKeygen,
  DSA_SIZES,
  KEM_SIZES,
  type MlDsaParams,
  type MlKemParams,
} from "./kernel.ts";
import {
  nativeDsaKeygen,
  nativeDsaSign,
  nativeDsaVerify,
  nativeKemDecaps,
  nativeKemEncaps,
  nativeKemKeygen,
} from "./native.ts";
import { loadCryptoWasm, defaultFlavour, engineHasSimd, type WasmFlavour } from "./wasm.ts";

export type { MlDsaParams, MlKemParams } from "./kernel.ts";
export type { WasmFlavour } from "./wasm.ts";
export { DSA_SIZES, KEM_SIZES, engineHasSimd };
export { Sha3, sha3, type Sha3Algorithm } from "./sha3.ts";
export { ecdsaP256Verify, ecdsaP256VerifyDer, ecdsaP256VerifyDigest, Sha256, sha256 } from "./p256.ts";

export type PqBackend = "native" | "wasm";

export interface KeyPair {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}
export interface SignOptions {
  /** FIPS 204 context string, at most 255 bytes (default empty). */
  context?: Uint8Array;
  /**
   * 32 bytes of signing randomness (rnd), or `false` for the deterministic variant (rnd = 0^32).
   * Default: hedged, fresh random bytes. The native backend draws its own randomness, so an explicit
   * value (or `false`) is always served by the Wasm kernels, which produce the same bytes everywhere.
   */
  random?: Uint8Array | false;
}
export interface Encapsulation {
  cipherText: Uint8Array;
  sharedSecret: Uint8Array;
}

export interface MlDsa {
  keygen(params: MlDsaParams, seed?: Uint8Array): KeyPair;
  sign(params: MlDsaParams, secretKey: Uint8Array, message: Uint8Array, opts?: SignOptions): Uint8Array;
  verify(
    params: MlDsaParams,
    publicKey: Uint8Array,
    message: Uint8Array,
    signature: Uint8Array,
    context?: Uint8Array,
  ): boolean;
}
export interface MlKem {
  /** `seed` is d || z (64 bytes). */
  keygen(params: MlKemParams, seed?: Uint8Array): KeyPair;
  /** `m` (32 bytes) is for tests only; by default it is random. */
  encapsulate(params: MlKemParams, publicKey: Uint8Array, m?: Uint8Array): Encapsulation;
  decapsulate(params: MlKemParams, secretKey: Uint8Array, cipherText: Uint8Array): Uint8Array;
}
export interface PqProvider {
  readonly backend: PqBackend;
  readonly mlDsa: MlDsa;
  readonly mlKem: MlKem;
}

const EMPTY = new Uint8Array(0);

function bytes(what: string, b: unknown): Uint8Array {
  if (!(b instanceof Uint8Array)) throw new QhxError("QHX_CRYPTO_TYPE", `${what} must be a Uint8Array`);
  return b;
}

function wasmProvider(flavour: WasmFlavour): PqProvider {
  const w = () => loadCryptoWasm(flavour);
  return {
    backend: "wasm",
    mlDsa: {
      keygen: (params, seed) => {
        dsaSizes(params);
        return kernelDsaKeygen(w(), params, seed === undefined ? randomBytes(32) : bytes("seed", seed));
      },
      sign: (params, secretKey, message, opts = {}) => {
        dsaSizes(params);
        const rnd = opts.random === false ? new Uint8Array(32) : (opts.random ?? randomBytes(32));
        return kernelDsaSign(
          w(),
          params,
          bytes("secret key", secretKey),
          bytes("message", message),
          bytes("context", opts.context ?? EMPTY),
          bytes("random", rnd),
        );
      },
      verify: (params, publicKey, message, signature, context = EMPTY) => {
        dsaSizes(params);
        if (![publicKey, message, signature, context].every((b) => b instanceof Uint8Array)) return false;
        return kernelDsaVerify(w(), params, publicKey, message, signature, context);
      },
    },
    mlKem: {
      keygen: (params, seed) => {
        kemSizes(params);
        return kernelKemKeygen(w(), params, seed === undefined ? randomBytes(64) : bytes("seed", seed));
      },
      encapsulate: (params, publicKey, m) => {
        kemSizes(params);
        return kernelKemEncaps(
          w(),
          params,
          bytes("public key", publicKey),
          m === undefined ? randomBytes(32) : bytes("m", m),
        );
      },
      decapsulate: (params, secretKey, cipherText) => {
        kemSizes(params);
        return kernelKemDecaps(w(), params, bytes("secret key", secretKey), bytes("ciphertext", cipherText));
      },
    },
  };
}

function nativeProvider(): PqProvider {
  const kernel = () => wasmProvider(defaultFlavour());
  return {
    backend: "native",
    mlDsa: {
      keygen: (params, seed) => {
        dsaSizes(params);
        return nativeDsaKeygen(params, seed === undefined ? randomBytes(32) : bytes("seed", seed));
      },
      sign: (params, secretKey, message, opts = {}) => {
        dsaSizes(params);
        if (opts.random !== undefined) return kernel().mlDsa.sign(params, secretKey, message, opts);
        return nativeDsaSign(
          params,
          bytes("secret key", secretKey),
          bytes("message", message),
          bytes("context", opts.context ?? EMPTY),
        );
      },
      verify: (params, publicKey, message, signature, context = EMPTY) => {
        dsaSizes(params);
        if (![publicKey, message, signature, context].every((b) => b instanceof Uint8Array)) return false;
        return nativeDsaVerify(params, publicKey, message, signature, context);
      },
    },
    mlKem: {
      keygen: (params, seed) => {
        kemSizes(params);
        return nativeKemKeygen(params, seed === undefined ? randomBytes(64) : bytes("seed", seed));
      },
      encapsulate: (params, publicKey, m) => {
        kemSizes(params);
        if (m !== undefined) {
          checkLength("m", bytes("m", m), 32);
          return kernel().mlKem.encapsulate(params, publicKey, m);
        }
        return nativeKemEncaps(params, bytes("public key", publicKey));
      },
      decapsulate: (params, secretKey, cipherText) => {
        kemSizes(params);
        return nativeKemDecaps(params, bytes("secret key", secretKey), bytes("ciphertext", cipherText));
      },
    },
  };
}

/** A provider bound to one backend (and, for "wasm", one kernel flavour). */
export function pqProvider(backend: PqBackend, flavour?: WasmFlavour): PqProvider {
  if (backend === "wasm") return wasmProvider(flavour ?? defaultFlavour());
  if (backend === "native") return nativeProvider();
  throw new QhxError("QHX_CONFIG_INVALID", `unknown post-quantum backend ${JSON.stringify(backend)}`, {
    hint: "use native or wasm",
  });
}

function envBackend(): PqBackend {
  const v = process.env["QHX_PQ_BACKEND"];
  if (v === undefined || v === "") return "native";
  if (v === "native" || v === "wasm") return v;
  throw new QhxError("QHX_CONFIG_INVALID", `QHX_PQ_BACKEND must be native or wasm, got ${JSON.stringify(v)}`);
}

let current: PqProvider | undefined;

function provider(): PqProvider {
  current ??= pqProvider(envBackend());
  return current;
}

const PARAMS_OF: Record<MlDsaAlg, MlDsaParams> = {
  "ml-dsa-44": "ML-DSA-44",
  "ml-dsa-65": "ML-DSA-65",
  "ml-dsa-87": "ML-DSA-87",
};

/**
 * node:crypto KeyObjects → the FIPS byte formats the kernels take, cached per key object: the public key
 * from its JWK (`AKP` `pub`), the secret key expanded from the 32-byte seed in its JWK (`priv`). A key
 * node:crypto cannot export as a seed (an expanded-only PKCS#8 import) is left to node:crypto.
 */
function kernelEngine(p: PqProvider): MlDsaEngine {
  const pubs = new WeakMap<KeyObject, Uint8Array>();
  const secrets = new WeakMap<KeyObject, Uint8Array | null>();
  const rawPublic = (key: KeyObject): Uint8Array => {
    let raw = pubs.get(key);
    if (!raw) {
      const jwk = key.export({ format: "jwk" }) as { pub?: string };
      raw = Buffer.from(jwk.pub ?? "", "base64url");
      pubs.set(key, raw);
    }
    return raw;
  };
  const expandedSecret = (alg: MlDsaAlg, key: KeyObject): Uint8Array | null => {
    let sk = secrets.get(key);
    if (sk === undefined) {
      try {
        const jwk = key.export({ format: "jwk" }) as { priv?: string };
        sk = jwk.priv ? p.mlDsa.keygen(PARAMS_OF[alg], Buffer.from(jwk.priv, "base64url")).secretKey : null;
      } catch {
        sk = null;
      }
      secrets.set(key, sk);
    }
    return sk;
  };
  return {
    name: "qhx wasm kernels",
    sign(alg, privateKey, data) {
      const sk = expandedSecret(alg, privateKey);
      return sk ? p.mlDsa.sign(PARAMS_OF[alg], sk, data) : undefined;
    },
    verify(alg, publicKey, data, signature) {
      return p.mlDsa.verify(PARAMS_OF[alg], rawPublic(publicKey), data, signature);
    },
  };
}

/**
 * Select the backend used by `mlDsa` / `mlKem` (the config key `crypto.pq_backend` maps here), and for
 * the control plane's own ML-DSA signatures and verifications (host/core/alg.ts signData/verifyData:
 * X.509 and JWT-SVID issuance, bundle and policy checks).
 */
export function configurePq(opts: { backend?: PqBackend; flavour?: WasmFlavour }): void {
  current = pqProvider(opts.backend ?? envBackend(), opts.flavour);
  setMlDsaEngine(current.backend === "wasm" ? kernelEngine(current) : undefined);
}

/** The backend currently in use. */
export function pqBackend(): PqBackend {
  return provider().backend;
}

export const mlDsa: MlDsa = {
  keygen: (params, seed) => provider().mlDsa.keygen(params, seed),
  sign: (params, secretKey, message, opts) => provider().mlDsa.sign(params, secretKey, message, opts),
  verify: (params, publicKey, message, signature, context) =>
    provider().mlDsa.verify(params, publicKey, message, signature, context),
};

export const mlKem: MlKem = {
  keygen: (params, seed) => provider().mlKem.keygen(params, seed),
  encapsulate: (params, publicKey, m) => provider().mlKem.encapsulate(params, publicKey, m),
  decapsulate: (params, secretKey, cipherText) => provider().mlKem.decapsulate(params, secretKey, cipherText),
};
