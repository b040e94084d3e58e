// QHx post-quantum kernels: SHA-3/SHAKE, ML-DSA (FIPS 204), ML-KEM (FIPS 203).
// The host writes inputs into the static buffers (addresses exported below), calls a kernel, and reads
// the outputs back. No allocation happens at run time (runtime "stub", static data only).
import { spInit, spAbsorb, spFinal, spSqueeze, CTX_SIZE } from "./sponge";
import { IO, IO_CAP, PK, SK, SIG, SEED, RND, SS, CTX_HOST, CTX_MU } from "./mem";

export { dsaKeygen, dsaSignBegin, dsaSignEnd, dsaVerifyBegin, dsaVerifyEnd } from "./mldsa";
export { kemKeygen, kemEncaps, kemDecaps, kemSelfTest } from "./mlkem";
export { sha256, sha256Init, sha256Update, sha256Final, sha256CtxPtr, sha256CtxSize } from "./sha256";
export { p256Verify, p256Arith } from "./p256";


export function ioPtr(): usize {
  return IO;
}
export function ioCap(): usize {
  return IO_CAP;
}
export function pkPtr(): usize {
  return PK;
}
export function skPtr(): usize {
  return SK;
}
export function sigPtr(): usize {
  return SIG;
}
export function seedPtr(): usize {
  return SEED;
}
export function rndPtr(): usize {
  return RND;
}
export function ssPtr(): usize {
  return SS;
}
/** 1 when this build uses Wasm SIMD. */
export function simd(): i32 {
  return ASC_FEATURE_SIMD ? 1 : 0;
}

/** Absorb IO[0..len) into the message-representative hash of the current sign/verify. */
export function muAbsorb(len: usize): void {
  spAbsorb(CTX_MU, IO, len);
}

/** Host SHA-3: rate in bytes (168/136/72) and domain byte (0x1f SHAKE, 0x06 SHA-3). */
export function shaInit(rate: u32, ds: u32): void {
  spInit(CTX_HOST, rate, ds);
}
export function shaAbsorb(len: usize): void {
  spAbsorb(CTX_HOST, IO, len);
}
export function shaFinal(): void {
  spFinal(CTX_HOST);
}
export function shaSqueeze(len: usize): void {
  spSqueeze(CTX_HOST, IO, len);
}
/** The host sponge context (CTX_SIZE bytes), so the host can save and restore several hashes. */
export function shaCtxPtr(): usize {
  return CTX_HOST;
}
export function shaCtxSize(): usize {
  return CTX_SIZE;
}
