/**
 * SPIFFE ID validator, the Wasm twin of host/core/spiffeid.ts.
 *
 * Same rules, same order of checks, same numeric codes (the index in SPIFFE_ID_CODES), so both
 * implementations report the same first violation for every input; test/vectors/spiffe-ids.json and
 * the differential test in test/spiffeid.test.ts hold them to it.
 *
 * The host writes the ID's UTF-8 bytes into the static input buffer (spiffeInputPtr/spiffeInputCap) and
 * calls checkSpiffeId(len). The scan never allocates. Every legal character is ASCII, so any byte
 * >= 0x80 is simply an illegal character; since the TS version stops at the first non-ASCII UTF-16 code
 * unit, which is also where the first non-ASCII byte is, both report the same BAD_*_CHAR code. Length
 * limits are in UTF-8 bytes in both.
 */

// Numeric codes: index in SPIFFE_ID_CODES (host/core/spiffeid.ts). Keep in sync.
const OK: i32 = 0;
const EMPTY: i32 = 1;
const TOO_LONG: i32 = 2;
const WRONG_SCHEME: i32 = 3;
const MISSING_TRUST_DOMAIN: i32 = 4;
const TRUST_DOMAIN_TOO_LONG: i32 = 5;
const BAD_TRUST_DOMAIN_CHAR: i32 = 6;
const USERINFO: i32 = 7;
const PORT: i32 = 8;
const QUERY: i32 = 9;
const FRAGMENT: i32 = 10;
const PERCENT_ENCODED: i32 = 11;
const EMPTY_SEGMENT: i32 = 12;
const DOT_SEGMENT: i32 = 13;
const TRAILING_SLASH: i32 = 14;
const BAD_PATH_CHAR: i32 = 15;

const MAX_SPIFFE_ID_BYTES: i32 = 2048;
const MAX_TRUST_DOMAIN_BYTES: i32 = 255;
const PREFIX_LEN: i32 = 9; // "spiffe://"
/** "spiffe:/" as a little-endian u64; the ninth byte is checked separately. */
const PREFIX_LO: u64 = 0x2f3a656666697073;

const INPUT_CAP: i32 = 4096;
const INPUT: usize = memory.data(INPUT_CAP, 16);

/** Address of the static input buffer the host writes UTF-8 bytes into. */
export function spiffeInputPtr(): usize {
  return INPUT;
}

/** Capacity of the input buffer in bytes (>= MAX_SPIFFE_ID_BYTES + 1). */
export function spiffeInputCap(): i32 {
  return INPUT_CAP;
}

@inline
function byteAt(i: i32): u32 {
  return <u32>load<u8>(INPUT + <usize>i);
}

// a-z 0-9 . - _
@inline
function isTdChar(c: u32): bool {
  return c - 0x61 <= 25 || c - 0x30 <= 9 || c == 0x2e || c == 0x2d || c == 0x5f;
}

// plus A-Z
@inline
function isPathChar(c: u32): bool {
  return isTdChar(c) || c - 0x41 <= 25;
}

/** The code for a URI delimiter (? # %), or `otherwise`. Shared by the trust domain and path scans. */
@inline
function delimiterCode(c: u32, otherwise: i32): i32 {
  if (c == 0x3f) return QUERY;
  if (c == 0x23) return FRAGMENT;
  if (c == 0x25) return PERCENT_ENCODED;
  return otherwise;
}

/** Validate the path part (`/seg/seg…`) starting at the slash at `start`. */
@inline
function checkPath(start: i32, len: i32): i32 {
  let segStart = start + 1;
  for (let i = start + 1; i <= len; i++) {
    const c: u32 = i < len ? byteAt(i) : 0x2f;
    if (c == 0x2f) {
      const segLen = i - segStart;
      if (segLen == 0) return i == len ? TRAILING_SLASH : EMPTY_SEGMENT;
      if (byteAt(segStart) == 0x2e && (segLen == 1 || (segLen == 2 && byteAt(segStart + 1) == 0x2e))) {
        return DOT_SEGMENT;
      }
      segStart = i + 1;
      continue;
    }
    if (isPathChar(c)) continue;
    return delimiterCode(c, BAD_PATH_CHAR);
  }
  return OK;
}

/** Offset of the slash ending the trust domain, or `len`. */
@inline
function trustDomainEnd(len: i32): i32 {
  let i = PREFIX_LEN;
  while (i < len && byteAt(i) != 0x2f) i++;
  return i;
}

/**
 * Validate the `len` UTF-8 bytes in the input buffer. Returns the numeric code of the first violated
 * rule, 0 when valid.
 */
export function checkSpiffeId(len: i32): i32 {
  if (len == 0) return EMPTY;
  // Unsigned compare: a negative length is nonsense, report it as too long rather than read memory.
  if (<u32>len > <u32>MAX_SPIFFE_ID_BYTES) return TOO_LONG;
  if (len < PREFIX_LEN || load<u64>(INPUT) != PREFIX_LO || byteAt(8) != 0x2f) return WRONG_SCHEME;
  let i = PREFIX_LEN;
  for (; i < len; i++) {
    const c = byteAt(i);
    if (c == 0x2f) break;
    if (isTdChar(c)) continue;
    if (c == 0x40) return USERINFO;
    if (c == 0x3a) return PORT;
    return delimiterCode(c, BAD_TRUST_DOMAIN_CHAR);
  }
  const tdLen = i - PREFIX_LEN;
  if (tdLen == 0) return MISSING_TRUST_DOMAIN;
  if (tdLen > MAX_TRUST_DOMAIN_BYTES) return TRUST_DOMAIN_TOO_LONG;
  if (i == len) return OK;
  return checkPath(i, len);
}

/**
 * Byte offset where the trust domain ends (the path's leading slash, or `len`). Only meaningful after
 * checkSpiffeId(len) returned 0 for the same buffer contents; the trust domain is bytes [9, end).
 */
export function spiffeTrustDomainEnd(len: i32): i32 {
  if (len < PREFIX_LEN || len > INPUT_CAP) return -1;
  return trustDomainEnd(len);
}
