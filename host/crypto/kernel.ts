/**
 * Byte-level calls into the Wasm kernels: inputs are copied into the module's static buffers, the
 * kernel runs, outputs are copied out. Lengths are checked here; a trap becomes a QhxError.
 */
import { QhxError } from "../core/errors.ts";
import type { CryptoWasmExports } from "./wasm.ts";

export type MlDsaParams = "ML-DSA-44" | "ML-DSA-65" | "ML-DSA-87";
export type MlKemParams = "ML-KEM-512" | "ML-KEM-768" | "ML-KEM-1024";

export interface DsaSizes {
  readonly level: number;
  readonly publicKey: number;
  readonly secretKey: number;
  readonly signature: number;
}
export interface KemSizes {
  readonly level: number;
  readonly publicKey: number;
  readonly secretKey: number;
  readonly cipherText: number;
}

export const DSA_SIZES: Readonly<Record<MlDsaParams, DsaSizes>> = {
  "ML-DSA-44": { level: 2, publicKey: 1312, secretKey: 2560, signature: 2420 },
  "ML-DSA-65": { level: 3, publicKey: 1952, secretKey: 4032, signature: 3309 },
  "ML-DSA-87": { level: 5, publicKey: 2592, secretKey: 4896, signature: 4627 },
};
export const KEM_SIZES: Readonly<Record<MlKemParams, KemSizes>> = {
  "ML-KEM-512": { level: 2, publicKey: 800, secretKey: 1632, cipherText: 768 },
  "ML-KEM-768": { level: 3, publicKey: 1184, secretKey: 2400, cipherText: 1088 },
  "ML-KEM-1024": { level: 4, publicKey: 1568, secretKey: 3168, cipherText: 1568 },
};

export function dsaSizes(params: string): DsaSizes {
  const s = DSA_SIZES[params as MlDsaParams];
  if (s === undefined || !Object.hasOwn(DSA_SIZES, params)) {
    throw new QhxError("QHX_CRYPTO_PARAMS", `unknown ML-DSA parameter set ${JSON.stringify(params)}`);
  }
  return s;
}
export function kemSizes(params: string): KemSizes {
  const s = KEM_SIZES[params as MlKemParams];
  if (s === undefined || !Object.hasOwn(KEM_SIZES, params)) {
    throw new QhxError("QHX_CRYPTO_PARAMS", `unknown ML-KEM parameter set ${JSON.stringify(params)}`);
  }
  return s;
}

export function checkLength(what: string, b: Uint8Array, len: number, code = "QHX_CRYPTO_LENGTH"): void {
  if (!(b instanceof Uint8Array)) throw new QhxError("QHX_CRYPTO_TYPE", `${what} must be a Uint8Array`);
  if (b.length !== len) throw new QhxError(code, `${what} must be ${len} bytes, got ${b.length}`);
}

function trap(op: string, e: unknown): QhxError {
  if (e instanceof QhxError) return e;
  return new QhxError("QHX_CRYPTO_KERNEL_TRAP", `crypto kernel trapped in ${op}: ${String(e)}`, { cause: e });
}

function put(w: CryptoWasmExports, ptr: number, data: Uint8Array): void {
  new Uint8Array(w.memory.buffer, ptr, data.length).set(data);
}
function get(w: CryptoWasmExports, ptr: number, len: number): Uint8Array {
  return new Uint8Array(w.memory.buffer, ptr, len).slice();
}
function wipe(w: CryptoWasmExports, ptr: number, len: number): void {
  new Uint8Array(w.memory.buffer, ptr, len).fill(0);
}

/** Stream M' = 0 || |ctx| || ctx || msg into the kernel's mu hash. */
function absorbMessage(w: CryptoWasmExports, msg: Uint8Array, ctx: Uint8Array): void {
  const io = w.ioPtr();
  const cap = w.ioCap();
  const head = new Uint8Array(2 + ctx.length);
  head[1] = ctx.length;
  head.set(ctx, 2);
  put(w, io, head);
  w.muAbsorb(head.length);
  for (let off = 0; off < msg.length; off += cap) {
    const part = msg.subarray(off, Math.min(msg.length, off + cap));
    put(w, io, part);
    w.muAbsorb(part.length);
  }
}

export function kernelDsaKeygen(
  w: CryptoWasmExports,
  params: MlDsaParams,
  seed: Uint8Array,
): { publicKey: Uint8Array; secretKey: Uint8Array } {
  const s = dsaSizes(params);
  checkLength("seed", seed, 32);
  try {
    put(w, w.seedPtr(), seed);
    if (w.dsaKeygen(s.level) !== 0) throw new QhxError("QHX_CRYPTO_PARAMS", `kernel rejected ${params}`);
    const out = { publicKey: get(w, w.pkPtr(), s.publicKey), secretKey: get(w, w.skPtr(), s.secretKey) };
    wipe(w, w.skPtr(), s.secretKey);
    wipe(w, w.seedPtr(), 32);
    return out;
  } catch (e) {
    throw trap("ML-DSA keygen", e);
  }
}

export function kernelDsaSign(
  w: CryptoWasmExports,
  params: MlDsaParams,
  secretKey: Uint8Array,
  msg: Uint8Array,
  ctx: Uint8Array,
  rnd: Uint8Array,
): Uint8Array {
  const s = dsaSizes(params);
  checkLength("secret key", secretKey, s.secretKey, "QHX_CRYPTO_KEY_LENGTH");
  checkLength("random", rnd, 32);
  if (ctx.length > 255) throw new QhxError("QHX_CRYPTO_CONTEXT", "context must be at most 255 bytes");
  let rc: number;
  let sig: Uint8Array;
  try {
    put(w, w.skPtr(), secretKey);
    w.dsaSignBegin(s.level);
    absorbMessage(w, msg, ctx);
    put(w, w.rndPtr(), rnd);
    rc = w.dsaSignEnd(s.level);
    sig = get(w, w.sigPtr(), s.signature);
    wipe(w, w.skPtr(), s.secretKey);
    wipe(w, w.rndPtr(), 32);
  } catch (e) {
    throw trap("ML-DSA sign", e);
  }
  if (rc !== 0) {
    throw new QhxError("QHX_CRYPTO_KEY_INVALID", `${params} secret key has s1/s2 coefficients out of range`);
  }
  return sig;
}

/** FIPS 204 ML-DSA.Verify; false for every malformed input (lengths, context, encoding). */
export function kernelDsaVerify(
  w: CryptoWasmExports,
  params: MlDsaParams,
  publicKey: Uint8Array,
  msg: Uint8Array,
  sig: Uint8Array,
  ctx: Uint8Array,
): boolean {
  const s = dsaSizes(params);
  if (publicKey.length !== s.publicKey || sig.length !== s.signature || ctx.length > 255) return false;
  try {
    put(w, w.pkPtr(), publicKey);
    w.dsaVerifyBegin(s.level);
    absorbMessage(w, msg, ctx);
    put(w, w.sigPtr(), sig);
    return w.dsaVerifyEnd(s.level, sig.length) === 1;
  } catch (e) {
    throw trap("ML-DSA verify", e);
  }
}

export function kernelKemKeygen(
  w: CryptoWasmExports,
  params: MlKemParams,
  seed: Uint8Array,
): { publicKey: Uint8Array; secretKey: Uint8Array } {
  const s = kemSizes(params);
  checkLength("seed (d || z)", seed, 64);
  try {
    put(w, w.seedPtr(), seed);
    if (w.kemKeygen(s.level) !== 0) throw new QhxError("QHX_CRYPTO_PARAMS", `kernel rejected ${params}`);
    const out = { publicKey: get(w, w.pkPtr(), s.publicKey), secretKey: get(w, w.skPtr(), s.secretKey) };
    wipe(w, w.skPtr(), s.secretKey);
    wipe(w, w.seedPtr(), 64);
    return out;
  } catch (e) {
    throw trap("ML-KEM keygen", e);
  }
}

export function kernelKemEncaps(
  w: CryptoWasmExports,
  params: MlKemParams,
  publicKey: Uint8Array,
  m: Uint8Array,
): { cipherText: Uint8Array; sharedSecret: Uint8Array } {
  const s = kemSizes(params);
  checkLength("encapsulation key", publicKey, s.publicKey, "QHX_CRYPTO_KEY_LENGTH");
  checkLength("message m", m, 32);
  let rc: number;
  let out: { cipherText: Uint8Array; sharedSecret: Uint8Array };
  try {
    put(w, w.pkPtr(), publicKey);
    put(w, w.rndPtr(), m);
    rc = w.kemEncaps(s.level);
    out = { cipherText: get(w, w.sigPtr(), s.cipherText), sharedSecret: get(w, w.ssPtr(), 32) };
    wipe(w, w.ssPtr(), 32);
    wipe(w, w.rndPtr(), 32);
  } catch (e) {
    throw trap("ML-KEM encapsulate", e);
  }
  if (rc !== 0) {
    throw new QhxError("QHX_CRYPTO_KEY_INVALID", "encapsulation key fails the FIPS 203 modulus check");
  }
  return out;
}

export function kernelKemDecaps(
  w: CryptoWasmExports,
  params: MlKemParams,
  secretKey: Uint8Array,
  cipherText: Uint8Array,
): Uint8Array {
  const s = kemSizes(params);
  checkLength("decapsulation key", secretKey, s.secretKey, "QHX_CRYPTO_KEY_LENGTH");
  checkLength("ciphertext", cipherText, s.cipherText, "QHX_CRYPTO_CIPHERTEXT_LENGTH");
  let rc: number;
  let ss: Uint8Array;
  try {
    put(w, w.skPtr(), secretKey);
    put(w, w.sigPtr(), cipherText);
    rc = w.kemDecaps(s.level);
    ss = get(w, w.ssPtr(), 32);
    wipe(w, w.ssPtr(), 32);
    wipe(w, w.skPtr(), s.secretKey);
  } catch (e) {
    throw trap("ML-KEM decapsulate", e);
  }
  if (rc !== 0) {
    throw new QhxError("QHX_CRYPTO_KEY_INVALID", "decapsulation key fails the FIPS 203 hash check");
  }
  return ss;
}
