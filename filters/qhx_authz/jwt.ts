// JWT-SVID verification in Wasm: ES256 (SHA-256 + ECDSA P-256) and ML-DSA-44/65/87 (pure, empty
// context, over the JWS signing input), against the configured bundle keys selected by trust domain
// and kid; exp/nbf with leeway, aud against the configured audiences, sub must be a SPIFFE ID.
// Verified tokens are cached by SHA3-256 of the token until exp (fixed-size table, replaced on
// collision, emptied by every configuration swap).
import { scratchAlloc, permAlloc } from "../proxy-wasm/memory";
import { spAbsorb } from "../../assembly/crypto/sponge";
import { PK, SIG, CTX_MU } from "../../assembly/crypto/mem";
import { dsaVerifyBegin, dsaVerifyEnd } from "../../assembly/crypto/mldsa";
import { sha256 } from "../../assembly/crypto/sha256";
import { p256Verify } from "../../assembly/crypto/p256";
import { checkSpiffeId, spiffeInputPtr, spiffeTrustDomainEnd } from "../../assembly/spiffeid";
import { base64Decode, bytesEq, eqLit, hashBytes } from "./bytes";
import { Cfg, ALG_ES256, ALG_MLDSA44, ALG_MLDSA65, ALG_MLDSA87 } from "./config";
import {
  objectBegin, nextMember, jsonError, keyPtr, keyLen, valType, valStart, valEnd, strPtr, strLen,
  numInt, numIsInt, arrayBegin, nextString, J_STRING, J_NUMBER, J_ARRAY,
} from "./json";

export const MAX_TOKEN = 32 * 1024;
const MAX_SUB = 2048;
const CACHE_ENTRIES: u32 = 256;
const TOKEN_SLOT: usize = 8192; // tokens up to this many bytes are cached (ML-DSA-87 JWT-SVIDs fit)
const SUB_SLOT: usize = 512; // and subjects up to this many
// entry: [token len u32, gen u32, sub len u32, _, exp i64, not-before i64] + token + subject
const ENTRY: usize = 32 + TOKEN_SLOT + SUB_SLOT;

const DIGEST: usize = memory.data(32, 16);

let cache: usize = 0;
export let cacheGen: u32 = 1;
export let cacheHits: u64 = 0;

/** The verified subject (a SPIFFE ID) of the last successful verify. */
export let subPtr: usize = 0;
export let subLen: usize = 0;
/** Why the last verify failed (a static string). */
export let jwtReason: string = "";

export function jwtInit(): void {
  cache = permAlloc(<usize>CACHE_ENTRIES * ENTRY);
}

/** Forget every cached token (the keys or audiences may have changed). */
export function jwtCacheClear(): void {
  cacheGen++;
}

function reject(why: string): bool {
  jwtReason = why;
  return false;
}

function findDot(p: usize, from: usize, end: usize): usize {
  for (let i = from; i < end; i++) if (load<u8>(p + i) == 0x2e) return i;
  return end;
}

/** Verify `token` [p, p+len) at `now` (unix seconds). On success subPtr/subLen hold the subject. */
export function verifyJwtSvid(c: Cfg, p: usize, len: usize, now: i64): bool {
  if (len == 0) return reject("jwt: empty token");
  if (len > <usize>MAX_TOKEN) return reject("jwt: token too long");
  const leeway = <i64>c.leeway;
  const tail: usize = len < 64 ? len : 64;
  const slot = (hashBytes(p + len - tail, tail) ^ <u32>len) & (CACHE_ENTRIES - 1);
  const e = cache + <usize>slot * ENTRY;
  if (load<u32>(e) == <u32>len && load<u32>(e, 4) == cacheGen && bytesEq(e + 32, len, p, len)) {
    const exp = load<i64>(e, 16);
    const nbf = load<i64>(e, 24);
    if (now >= exp + leeway) return reject("jwt: expired");
    if (nbf > now + leeway) return reject("jwt: not yet valid");
    cacheHits++;
    subPtr = e + 32 + TOKEN_SLOT;
    subLen = <usize>load<u32>(e, 8);
    return true;
  }
  const d1 = findDot(p, 0, len);
  if (d1 == len) return reject("jwt: malformed (not three segments)");
  const d2 = findDot(p, d1 + 1, len);
  if (d2 == len || findDot(p, d2 + 1, len) != len) return reject("jwt: malformed (not three segments)");
  // header
  const hdr = scratchAlloc(d1 + 4);
  const hl = base64Decode(p, d1, hdr, true);
  if (hl < 0) return reject("jwt: malformed header encoding");
  let alg: u32 = 0;
  let kidP: usize = 0;
  let kidL: usize = 0;
  let seen = 0;
  if (!objectBegin(hdr, <usize>hl)) return reject("jwt: malformed header");
  while (nextMember()) {
    if (eqLit(keyPtr, keyLen, "alg")) {
      if (seen & 1 || valType != J_STRING) return reject("jwt: bad alg");
      seen |= 1;
      if (eqLit(strPtr, strLen, "ES256")) alg = ALG_ES256;
      else if (eqLit(strPtr, strLen, "ML-DSA-44")) alg = ALG_MLDSA44;
      else if (eqLit(strPtr, strLen, "ML-DSA-65")) alg = ALG_MLDSA65;
      else if (eqLit(strPtr, strLen, "ML-DSA-87")) alg = ALG_MLDSA87;
      else return reject("jwt: alg not allowed");
    } else if (eqLit(keyPtr, keyLen, "kid")) {
      if (seen & 2 || valType != J_STRING) return reject("jwt: bad kid");
      seen |= 2;
      kidP = strPtr;
      kidL = strLen;
    } else if (eqLit(keyPtr, keyLen, "typ")) {
      if (seen & 4 || valType != J_STRING) return reject("jwt: bad typ");
      seen |= 4;
      if (!eqLit(strPtr, strLen, "JWT") && !eqLit(strPtr, strLen, "JOSE")) return reject("jwt: bad typ");
    } else return reject("jwt: unexpected header parameter");
  }
  if (jsonError) return reject("jwt: malformed header");
  if ((seen & 3) != 3 || kidL == 0) return reject("jwt: header needs alg and kid");
  // claims
  const pl = d2 - d1 - 1;
  const body = scratchAlloc(pl + 4);
  const bl = base64Decode(p + d1 + 1, pl, body, true);
  if (bl < 0) return reject("jwt: malformed claims encoding");
  let sub: usize = 0;
  let sl: usize = 0;
  let exp: i64 = 0;
  let nbf: i64 = i64.MIN_VALUE;
  let iat: i64 = i64.MIN_VALUE;
  let audOk = false;
  let cseen = 0;
  if (!objectBegin(body, <usize>bl)) return reject("jwt: malformed claims");
  while (nextMember()) {
    if (eqLit(keyPtr, keyLen, "sub")) {
      if (cseen & 1 || valType != J_STRING) return reject("jwt: bad sub");
      cseen |= 1;
      sub = strPtr;
      sl = strLen;
    } else if (eqLit(keyPtr, keyLen, "exp")) {
      if (cseen & 2 || valType != J_NUMBER || !numIsInt) return reject("jwt: bad exp");
      cseen |= 2;
      exp = numInt;
    } else if (eqLit(keyPtr, keyLen, "nbf")) {
      if (cseen & 4 || valType != J_NUMBER || !numIsInt) return reject("jwt: bad nbf");
      cseen |= 4;
      nbf = numInt;
    } else if (eqLit(keyPtr, keyLen, "aud")) {
      if (cseen & 8) return reject("jwt: bad aud");
      cseen |= 8;
      if (valType == J_STRING) audOk = audienceOk(c, strPtr, strLen);
      else if (valType == J_ARRAY) {
        const vs = valStart;
        const ve = valEnd;
        arrayBegin(vs, ve);
        let n = 0;
        while (true) {
          const r = nextString();
          if (r < 0) return reject("jwt: bad aud");
          if (r == 0) break;
          n++;
          if (audienceOk(c, strPtr, strLen)) audOk = true;
        }
        if (n == 0) return reject("jwt: bad aud");
      } else return reject("jwt: bad aud");
    } else if (eqLit(keyPtr, keyLen, "iat")) {
      if (cseen & 16 || valType != J_NUMBER) return reject("jwt: bad iat");
      cseen |= 16;
      iat = numInt;
    }
  }
  if (jsonError) return reject("jwt: malformed claims");
  if ((cseen & 11) != 11) return reject("jwt: claims need sub, aud and exp");
  if (!audOk) return reject("jwt: audience not accepted");
  if (now >= exp + leeway) return reject("jwt: expired");
  if (nbf != i64.MIN_VALUE && nbf > now + leeway) return reject("jwt: not yet valid");
  if (iat != i64.MIN_VALUE && iat > now + leeway) return reject("jwt: not yet valid");
  if (sl > <usize>MAX_SUB) return reject("jwt: sub is not a SPIFFE ID");
  memory.copy(spiffeInputPtr(), sub, sl);
  if (checkSpiffeId(<i32>sl) != 0) return reject("jwt: sub is not a SPIFFE ID");
  const tdEnd = <usize>spiffeTrustDomainEnd(<i32>sl);
  // key by trust domain and kid, alg pinned to the key's
  let key: usize = 0;
  for (let i: u32 = 0; i < c.nKeys; i++) {
    const k = c.keyTab + (<usize>i << 5);
    if (
      bytesEq(<usize>load<u32>(k), <usize>load<u32>(k, 4), sub + 9, tdEnd - 9) &&
      bytesEq(<usize>load<u32>(k, 8), <usize>load<u32>(k, 12), kidP, kidL)
    ) {
      key = k;
      break;
    }
  }
  if (key == 0) return reject("jwt: no key for kid in the trust domain's bundle");
  if (load<u32>(key, 16) != alg) return reject("jwt: alg does not fit the key");
  const sigLen = len - d2 - 1;
  const sig = scratchAlloc(sigLen + 4);
  const sgl = base64Decode(p + d2 + 1, sigLen, sig, true);
  if (sgl < 0) return reject("jwt: malformed signature encoding");
  const keyPtr_ = <usize>load<u32>(key, 20);
  if (alg == ALG_ES256) {
    if (sgl != 64) return reject("jwt: bad signature");
    sha256(p, d2, DIGEST);
    if (!p256Verify(DIGEST, keyPtr_, sig)) return reject("jwt: bad signature");
  } else {
    const level = alg == ALG_MLDSA44 ? 2 : alg == ALG_MLDSA65 ? 3 : 5;
    memory.copy(PK, keyPtr_, <usize>load<u32>(key, 24));
    if (dsaVerifyBegin(level) != 0) return reject("jwt: bad signature");
    // M' = 0 || |ctx| (= 0) || signing input
    store<u16>(DIGEST, 0);
    spAbsorb(CTX_MU, DIGEST, 2);
    spAbsorb(CTX_MU, p, d2);
    if (sgl > 8192) return reject("jwt: bad signature");
    memory.copy(SIG, sig, <usize>sgl);
    if (dsaVerifyEnd(level, <i32>sgl) != 1) return reject("jwt: bad signature");
  }
  subPtr = sub;
  subLen = sl;
  // remember it (longer tokens or subjects are simply not cached)
  if (len <= TOKEN_SLOT && sl <= SUB_SLOT) {
    store<u32>(e, <u32>len);
    store<u32>(e, cacheGen, 4);
    store<u32>(e, <u32>sl, 8);
    store<i64>(e, exp, 16);
    store<i64>(e, nbf > iat ? nbf : iat, 24);
    memory.copy(e + 32, p, len);
    memory.copy(e + 32 + TOKEN_SLOT, sub, sl);
  }
  return true;
}

function audienceOk(c: Cfg, p: usize, len: usize): bool {
  for (let i: u32 = 0; i < c.nAud; i++) {
    const a = c.audTab + (<usize>i << 3);
    if (bytesEq(<usize>load<u32>(a), <usize>load<u32>(a, 4), p, len)) return true;
  }
  return false;
}
