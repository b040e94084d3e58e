// The post-quantum kernels behind the WebAssembly Component Model canonical ABI (world `kernels` in
// wit/qhx-crypto.wit). This module is the core module of build/qhx-crypto.component.wasm: it links the
// same kernels as build/qhx-crypto*.wasm (assembly/crypto) and adds only the canonical-ABI glue:
//
// - `cabi_realloc`: a bump arena above the static data, for the lists the host lowers into memory;
//   every post-return function resets it (and wipes it), so nothing accumulates between calls.
// - one export per WIT function. Their core names (`qhx:crypto/mldsa@0.1.0#keygen`, …) are not valid
//   AssemblyScript identifiers, so they are exported here as `mldsa_keygen`, … and renamed in the binary
//   by scripts/build-component.mjs (the rename table lives there, next to the WIT world).
// - results that flatten to more than one value are returned through RET, a static return area:
//   result<T, error> = discriminant u8 at 0, payload at 4 (a list is ptr,len; the error enum a u8).
import { dsaKeygen, dsaSignBegin, dsaSignEnd, dsaVerifyBegin, dsaVerifyEnd, dsaSetParams, DSA_PK_BYTES, DSA_SK_BYTES, DSA_SIG_BYTES } from "../crypto/mldsa";
import { kemKeygen, kemEncaps, kemDecaps } from "../crypto/mlkem";
import { spAbsorb, spAbsorbByte } from "../crypto/sponge";
import { PK, SK, SIG, SEED, RND, SS, CTX_MU } from "../crypto/mem";

// error enum (wit: types.error)
const E_BAD_LENGTH: u8 = 0;
const E_BAD_CONTEXT: u8 = 1;
const E_BAD_KEY: u8 = 2;

const RET: usize = memory.data(32, 8);

// ---- the arena for lowered arguments ----

let arenaBase: usize = 0;
let arenaTop: usize = 0;

function arenaStart(): usize {
  if (arenaBase == 0) {
    arenaBase = (__heap_base + 15) & ~(<usize>15);
    arenaTop = arenaBase;
  }
  return arenaBase;
}

/** Canonical ABI realloc: the host asks for memory to lower a list into. Never frees in place. */
export function cabi_realloc(oldPtr: usize, oldSize: usize, align: usize, newSize: usize): usize {
  arenaStart();
  const a = align < 1 ? <usize>1 : align;
  const p = (arenaTop + a - 1) & ~(a - 1);
  const end = p + newSize;
  const have = <usize>memory.size() << 16;
  if (end > have) {
    const pages = <i32>((end - have + 0xffff) >> 16);
    if (memory.grow(pages) < 0) unreachable();
  }
  if (oldPtr != 0 && oldSize != 0) memory.copy(p, oldPtr, oldSize < newSize ? oldSize : newSize);
  arenaTop = end;
  return p;
}

/** Post-return for every function: wipe what the call lowered (secret keys, messages) and reset. */
export function post_reset(_ret: i32): void {
  const base = arenaStart();
  if (arenaTop > base) memory.fill(base, 0, arenaTop - base);
  arenaTop = base;
  memory.fill(SEED, 0, 64);
  memory.fill(RND, 0, 32);
  memory.fill(SS, 0, 32);
}

/** Post-return for the calls that hand back or consume secret keys: also wipe the key buffer. */
export function post_secret(ret: i32): void {
  post_reset(ret);
  memory.fill(SK, 0, 8192);
}

// ---- result helpers ----

function ok2(p1: usize, n1: usize, p2: usize, n2: usize): usize {
  store<u8>(RET, 0);
  store<u32>(RET, <u32>p1, 4);
  store<u32>(RET, <u32>n1, 8);
  store<u32>(RET, <u32>p2, 12);
  store<u32>(RET, <u32>n2, 16);
  return RET;
}
function ok1(p: usize, n: usize): usize {
  store<u8>(RET, 0);
  store<u32>(RET, <u32>p, 4);
  store<u32>(RET, <u32>n, 8);
  return RET;
}
function fail(e: u8): usize {
  store<u8>(RET, 1);
  store<u8>(RET, e, 4);
  return RET;
}

// Output buffers handed back to the host. The kernels' PK/SK/SIG/SS are overwritten by the next call,
// which is fine: the host lifts (copies) results before it calls post-return.

function dsaLevel(params: i32): i32 {
  if (params == 0) return 2;
  if (params == 1) return 3;
  if (params == 2) return 5;
  unreachable();
  return 0;
}
function kemLevel(params: i32): i32 {
  if (params >= 0 && params <= 2) return params + 2;
  unreachable();
  return 0;
}
function kemEkBytes(k: i32): usize {
  return <usize>(384 * k + 32);
}
function kemDkBytes(k: i32): usize {
  return <usize>(768 * k + 96);
}
function kemCtBytes(k: i32): usize {
  return k == 4 ? 1568 : <usize>(32 * (10 * k + 4));
}

/** M' = 0 || |ctx| || ctx || msg into the signature's mu hash (FIPS 204 pure signing). */
function absorbMessage(msg: usize, msgLen: usize, ctx: usize, ctxLen: usize): void {
  spAbsorbByte(CTX_MU, 0);
  spAbsorbByte(CTX_MU, <u32>ctxLen);
  spAbsorb(CTX_MU, ctx, ctxLen);
  spAbsorb(CTX_MU, msg, msgLen);
}

// ---- mldsa ----

export function mldsa_keygen(params: i32, seed: usize, seedLen: usize): usize {
  const level = dsaLevel(params);
  if (seedLen != 32) return fail(E_BAD_LENGTH);
  memory.copy(SEED, seed, 32);
  if (dsaKeygen(level) != 0) unreachable();
  return ok2(PK, <usize>DSA_PK_BYTES, SK, <usize>DSA_SK_BYTES);
}

export function mldsa_sign(
  params: i32,
  sk: usize,
  skLen: usize,
  msg: usize,
  msgLen: usize,
  ctx: usize,
  ctxLen: usize,
  rnd: usize,
  rndLen: usize,
): usize {
  const level = dsaLevel(params);
  dsaSetParams(level);
  if (skLen != <usize>DSA_SK_BYTES || rndLen != 32) return fail(E_BAD_LENGTH);
  if (ctxLen > 255) return fail(E_BAD_CONTEXT);
  memory.copy(SK, sk, skLen);
  dsaSignBegin(level);
  absorbMessage(msg, msgLen, ctx, ctxLen);
  memory.copy(RND, rnd, 32);
  const rc = dsaSignEnd(level);
  memory.fill(SK, 0, skLen);
  if (rc != 0) return fail(E_BAD_KEY);
  return ok1(SIG, <usize>DSA_SIG_BYTES);
}

export function mldsa_verify(
  params: i32,
  pk: usize,
  pkLen: usize,
  msg: usize,
  msgLen: usize,
  sig: usize,
  sigLen: usize,
  ctx: usize,
  ctxLen: usize,
): i32 {
  const level = dsaLevel(params);
  dsaSetParams(level);
  if (pkLen != <usize>DSA_PK_BYTES || sigLen != <usize>DSA_SIG_BYTES || ctxLen > 255) return 0;
  memory.copy(PK, pk, pkLen);
  dsaVerifyBegin(level);
  absorbMessage(msg, msgLen, ctx, ctxLen);
  memory.copy(SIG, sig, sigLen);
  return dsaVerifyEnd(level, <i32>sigLen) == 1 ? 1 : 0;
}

// ---- mlkem ----

export function mlkem_keygen(params: i32, seed: usize, seedLen: usize): usize {
  const k = kemLevel(params);
  if (seedLen != 64) return fail(E_BAD_LENGTH);
  memory.copy(SEED, seed, 64);
  if (kemKeygen(k) != 0) unreachable();
  return ok2(PK, kemEkBytes(k), SK, kemDkBytes(k));
}

export function mlkem_encapsulate(params: i32, ek: usize, ekLen: usize, m: usize, mLen: usize): usize {
  const k = kemLevel(params);
  if (ekLen != kemEkBytes(k) || mLen != 32) return fail(E_BAD_LENGTH);
  memory.copy(PK, ek, ekLen);
  memory.copy(RND, m, 32);
  if (kemEncaps(k) != 0) return fail(E_BAD_KEY);
  return ok2(SIG, kemCtBytes(k), SS, 32);
}

export function mlkem_decapsulate(params: i32, dk: usize, dkLen: usize, ct: usize, ctLen: usize): usize {
  const k = kemLevel(params);
  if (dkLen != kemDkBytes(k) || ctLen != kemCtBytes(k)) return fail(E_BAD_LENGTH);
  memory.copy(SK, dk, dkLen);
  memory.copy(SIG, ct, ctLen);
  const rc = kemDecaps(k);
  memory.fill(SK, 0, dkLen);
  if (rc != 0) return fail(E_BAD_KEY);
  return ok1(SS, 32);
}
