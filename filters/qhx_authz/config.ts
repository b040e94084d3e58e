// The filter's configuration: a compact binary (host/filter/config.ts writes it; docs/filter.md
// documents it) carried base64 in a small JSON object. `buildConfig` parses it defensively and lays the
// decision program, string table, directory and keys out at `base`; every read is bounds-checked and
// every index validated, so a bad configuration is refused (proxy_on_configure returns false) and never
// reaches the evaluator.
import { ensureMemory } from "../proxy-wasm/memory";
import { falseValue, trueValue } from "../../assembly/policy/index";
import { hashBytes, bytesEq, utf8ToUtf16 } from "./bytes";

export const MAGIC: u32 = 0x46584851; // "QHXF"
export const VERSION: u32 = 1;
/** Version 2: version 1 followed by the releasability section. */
export const VERSION_RELEASABILITY: u32 = 2;

export const REL_NONE: u32 = 0; // no releasability section: every verified peer goes on to the policy
export const REL_LIST: u32 = 1; // the local trust domain and the listed foreign ones
export const REL_ANY: u32 = 2; // every trust domain

export const F_XFCC: u32 = 1;
export const F_JWT: u32 = 2;
export const F_JWT_REQUIRED: u32 = 4;
export const F_JWT_PRINCIPAL: u32 = 8;
export const F_PEER_HEADER: u32 = 16;
export const F_DEBUG_TRAP: u32 = 0x80000000;

export const ALG_ES256: u32 = 1;
export const ALG_MLDSA44: u32 = 2;
export const ALG_MLDSA65: u32 = 3;
export const ALG_MLDSA87: u32 = 4;

// value tags and program constants (assembly/policy/index.ts, host/policy/compiler.ts)
export const T_BOOL: i32 = 1;
export const T_LONG: i32 = 2;
export const T_STR: i32 = 3;
export const T_ENT: i32 = 4;
export const T_SET: i32 = 5;
export const T_REC: i32 = 6;
const T_IP: i32 = 7;
const T_DEC: i32 = 8;
const RELOC_CHILD: u32 = 1;
const RELOC_STR: u32 = 2;
const RELOC_CONST: u32 = 3;
const RELOC_UID: u32 = 4;

/** Well-known strings (the encoder puts each in the string table): index → text. */
export const WK_WORKLOAD = 0;
export const WK_NAMESPACE = 1;
export const WK_TRUSTDOMAIN = 2;
export const WK_SERVICE = 3;
export const WK_ROUTE = 4;
export const WK_ACTION = 5;
export const WK_HTTP = 6;
export const WK_SPIFFEID = 7;
export const WK_TRUSTDOMAIN_ATTR = 8;
export const WK_PATH = 9;
export const WK_NAMESPACE_ATTR = 10;
export const WK_ASSURANCE = 11;
export const WK_SELECTORS = 12;
export const WK_NAME = 13;
export const WK_PATHPREFIX = 14;
export const WK_TIME = 15;
export const WK_METHOD = 16;
export const WK_HEADERS = 17;
export const WK_TLS = 18;
export const WK_MODE = 19;
export const WK_PQ = 20;
export const WK_H_CONTENT_TYPE = 21; // 21..24: the RequestContext header subset, in schema order
export const WK_NONE = 25;
export const WK_DEFAULT = 26;
export const WK_MTLS = 27;
export const WK_XFCC = 28;
export const WK_JWT = 29;
export const WK_GET = 30; // 30..36: the HTTP method actions
export const NWK = 37;

function wkText(i: i32): string {
  switch (i) {
    case 0: return "Workload";
    case 1: return "Namespace";
    case 2: return "TrustDomain";
    case 3: return "Service";
    case 4: return "Route";
    case 5: return "Action";
    case 6: return "http";
    case 7: return "spiffeId";
    case 8: return "trustDomain";
    case 9: return "path";
    case 10: return "namespace";
    case 11: return "assurance";
    case 12: return "selectors";
    case 13: return "name";
    case 14: return "pathPrefix";
    case 15: return "time";
    case 16: return "method";
    case 17: return "headers";
    case 18: return "tls";
    case 19: return "mode";
    case 20: return "pq";
    case 21: return "content-type";
    case 22: return "user-agent";
    case 23: return "x-request-id";
    case 24: return "x-qhx-tenant";
    case 25: return "none";
    case 26: return "default";
    case 27: return "mtls";
    case 28: return "xfcc";
    case 29: return "jwt";
    case 30: return "GET";
    case 31: return "HEAD";
    case 32: return "POST";
    case 33: return "PUT";
    case 34: return "PATCH";
    case 35: return "DELETE";
    case 36: return "OPTIONS";
  }
  return "";
}

@unmanaged
export class Cfg {
  flags: u32;
  leeway: u32;
  jwtHeader: usize;
  jwtHeaderLen: usize;
  reasonHeader: usize;
  reasonHeaderLen: usize;
  peerHeader: usize;
  peerHeaderLen: usize;
  nAud: u32;
  audTab: usize; // [ptr, len] u32 pairs
  nRoutes: u32;
  routeTab: usize; // [ptr, len]
  nStrings: u32;
  strTab: usize; // 16 bytes per id: [STR node, utf8 ptr, utf8 len, directory record or 0]
  strHash: usize; // u32 per bucket: string id + 1 (0 empty)
  strMask: u32;
  nUids: u32;
  uidHash: usize; // 16 bytes per bucket: [type id + 1, id string id, uid, ENT node]
  uidMask: u32;
  nPolicies: u32;
  polIds: usize; // [ptr, len]
  polTab: usize; // evaluator rows (8 words)
  outPtr: usize;
  nKeys: u32;
  keyTab: usize; // 32 bytes: [td ptr, td len, kid ptr, kid len, alg, key ptr, key len, _]
  wk: usize; // NWK string ids
  relMode: u32;
  relLocal: usize;
  relLocalLen: usize;
  relRule: usize;
  relRuleLen: usize;
  nRel: u32;
  relTab: usize; // [ptr, len]
}

/** Is a peer of trust domain [p, p+len) accepted across the ingress edge? */
export function releasable(c: Cfg, p: usize, len: usize): bool {
  if (c.relMode == REL_NONE || c.relMode == REL_ANY) return true;
  if (bytesEq(p, len, c.relLocal, c.relLocalLen)) return true;
  for (let i: u32 = 0; i < c.nRel; i++) {
    const e = c.relTab + (<usize>i << 3);
    if (bytesEq(p, len, <usize>load<u32>(e), <usize>load<u32>(e, 4))) return true;
  }
  return false;
}

function trustDomainOk(p: usize, len: usize): bool {
  if (len == 0 || len > 255) return false;
  for (let i: usize = 0; i < len; i++) {
    const ch = load<u8>(p + i);
    if (!((ch >= 0x61 && ch <= 0x7a) || (ch >= 0x30 && ch <= 0x39) || ch == 0x2e || ch == 0x5f || ch == 0x2d)) return false;
  }
  return true;
}

// ---- the output region (bump allocation at the build base) ----

let bp: usize = 0;

function balloc(bytes: usize): usize {
  const p = bp;
  bp = (bp + bytes + 15) & ~(<usize>15);
  ensureMemory(bp);
  return p;
}

// ---- the input cursor ----

let rp: usize = 0;
let rEnd: usize = 0;
let bad = false;
export let configError: string = "";

function fail(why: string): void {
  if (!bad) configError = why;
  bad = true;
}

function u32r(): u32 {
  if (bad || rp + 4 > rEnd) {
    fail("truncated");
    return 0;
  }
  const v = load<u32>(rp);
  rp += 4;
  return v;
}

function i64r(): i64 {
  if (bad || rp + 8 > rEnd) {
    fail("truncated");
    return 0;
  }
  const v = load<i64>(rp);
  rp += 8;
  return v;
}

let sPtr: usize = 0;
let sLen: usize = 0;

/** Read a length-prefixed byte string (points into the input). */
function strr(max: u32): bool {
  const n = u32r();
  if (bad) return false;
  if (n > max || rp + <usize>n > rEnd) {
    fail("string length out of range");
    return false;
  }
  sPtr = rp;
  sLen = <usize>n;
  rp += <usize>n;
  return true;
}

/** Read a byte string and copy it into the output region. */
function strCopy(max: u32): usize {
  if (!strr(max)) return 0;
  const p = balloc(sLen == 0 ? 1 : sLen);
  memory.copy(p, sPtr, sLen);
  return p;
}

/** A count that must fit in the remaining input at `minBytes` per element. */
function countr(minBytes: u32, max: u32): u32 {
  const n = u32r();
  if (bad) return 0;
  if (n > max || <u64>n * <u64>minBytes > <u64>(rEnd - rp)) {
    fail("count out of range");
    return 0;
  }
  return n;
}

// ---- string table ----

let cfg: Cfg = changetype<Cfg>(0);

function lookupStr(c: Cfg, p: usize, len: usize, h: u32): i32 {
  let i = h & c.strMask;
  while (true) {
    const e = load<u32>(c.strHash + (<usize>i << 2));
    if (e == 0) return -1;
    const t = c.strTab + (<usize>(e - 1) << 4);
    if (bytesEq(load<u32>(t, 4), load<u32>(t, 8), p, len)) return <i32>(e - 1);
    i = (i + 1) & c.strMask;
  }
  return -1;
}

/** The id of the string with these UTF-8 bytes in the configuration's table, or -1. */
export function findString(c: Cfg, p: usize, len: usize): i32 {
  return lookupStr(c, p, len, hashBytes(p, len));
}

export function strNode(c: Cfg, id: i32): usize {
  return <usize>load<u32>(c.strTab + (<usize>id << 4));
}

export function wkId(c: Cfg, k: i32): i32 {
  return load<i32>(c.wk + (<usize>k << 2));
}

export function wkNode(c: Cfg, k: i32): usize {
  return strNode(c, wkId(c, k));
}

/** STR node: [T_STR, id, chars, units] followed by the UTF-16 code units. */
export function makeStrNode(at: usize, id: i32, utf8: usize, len: usize): bool {
  const chars = at + 16;
  const units = utf8ToUtf16(utf8, len, chars);
  if (units < 0) return false;
  store<i32>(at, T_STR);
  store<i32>(at, id, 4);
  store<u32>(at, <u32>chars, 8);
  store<i32>(at, <i32>units, 12);
  return true;
}

function readStrings(c: Cfg): void {
  const n = countr(4, 1 << 20);
  if (bad) return;
  c.nStrings = n;
  c.strTab = balloc((<usize>n << 4) + 16);
  let cap: u32 = 16;
  while (cap < n * 2 + 2) cap <<= 1;
  c.strMask = cap - 1;
  c.strHash = balloc(<usize>cap << 2);
  memory.fill(c.strHash, 0, <usize>cap << 2);
  for (let i: u32 = 0; i < n; i++) {
    if (!strr(1 << 16)) return;
    const node = balloc(16 + (sLen << 1));
    if (!makeStrNode(node, <i32>i, sPtr, sLen)) {
      fail("string table: ill-formed UTF-8");
      return;
    }
    const t = c.strTab + (<usize>i << 4);
    store<u32>(t, <u32>node);
    // keep the UTF-8 bytes beside the node for lookups
    const copy = balloc(sLen == 0 ? 1 : sLen);
    memory.copy(copy, sPtr, sLen);
    store<u32>(t, <u32>copy, 4);
    store<u32>(t, <u32>sLen, 8);
    store<u32>(t, 0, 12);
    const h = hashBytes(copy, sLen);
    if (lookupStr(c, copy, sLen, h) >= 0) {
      fail("string table: duplicate string");
      return;
    }
    let b = h & c.strMask;
    while (load<u32>(c.strHash + (<usize>b << 2)) != 0) b = (b + 1) & c.strMask;
    store<u32>(c.strHash + (<usize>b << 2), i + 1);
  }
  c.wk = balloc(NWK << 2);
  for (let k = 0; k < NWK; k++) {
    const lit = wkText(k);
    const len = <usize>lit.length;
    const tmp = balloc(len);
    for (let j: usize = 0; j < len; j++) store<u8>(tmp + j, <u8>lit.charCodeAt(<i32>j));
    const id = findString(c, tmp, len);
    if (id < 0) {
      fail("string table: a well-known string is missing");
      return;
    }
    store<i32>(c.wk + (<usize>k << 2), id);
  }
}

// ---- uids ----

function uidSlot(c: Cfg, typeId: i32, idId: i32): usize {
  let i = (<u32>typeId * 0x9e3779b1 ^ <u32>idId * 0x85ebca6b) & c.uidMask;
  while (true) {
    const s = c.uidHash + (<usize>i << 4);
    const t = load<i32>(s);
    if (t == 0 || (t == typeId + 1 && load<i32>(s, 4) == idId)) return s;
    i = (i + 1) & c.uidMask;
  }
  return 0;
}

/** The ENT node of a program uid, or 0 when the program never names it. */
export function findUid(c: Cfg, typeId: i32, idId: i32): usize {
  const s = uidSlot(c, typeId, idId);
  return load<i32>(s) == 0 ? 0 : <usize>load<u32>(s, 12);
}

function uidNode(c: Cfg, typeId: i32, idId: i32): usize {
  const s = uidSlot(c, typeId, idId);
  if (load<i32>(s) != 0) return <usize>load<u32>(s, 12);
  if (c.nUids * 2 + 2 > c.uidMask) {
    fail("too many entity uids");
    return 0;
  }
  const node = balloc(16);
  store<i32>(node, T_ENT);
  store<u32>(node, c.nUids, 4);
  store<i32>(node, typeId, 8);
  store<i32>(s, typeId + 1);
  store<i32>(s, idId, 4);
  store<u32>(s, c.nUids, 8);
  store<u32>(s, <u32>node, 12);
  c.nUids++;
  return node;
}

// ---- constants ----

function constNode(c: Cfg, depth: i32): usize {
  if (depth > 64) {
    fail("constant nested too deeply");
    return 0;
  }
  const tag = <i32>u32r();
  if (bad) return 0;
  switch (tag) {
    case T_BOOL: {
      const v = u32r();
      if (v > 1) fail("bad boolean");
      return v ? trueValue() : falseValue();
    }
    case T_LONG: {
      const p = balloc(16);
      store<i32>(p, T_LONG);
      store<i64>(p, i64r(), 8);
      return p;
    }
    case T_STR: {
      const s = u32r();
      if (s >= c.nStrings) {
        fail("constant: string index out of range");
        return 0;
      }
      return strNode(c, <i32>s);
    }
    case T_ENT: {
      const t = u32r();
      const id = u32r();
      if (t >= c.nStrings || id >= c.nStrings) {
        fail("constant: uid string index out of range");
        return 0;
      }
      return uidNode(c, <i32>t, <i32>id);
    }
    case T_SET: {
      const n = countr(4, 1 << 16);
      const p = balloc(8 + (<usize>n << 2));
      store<i32>(p, T_SET);
      store<u32>(p, n, 4);
      for (let i: u32 = 0; i < n && !bad; i++) store<u32>(p + 8 + (<usize>i << 2), <u32>constNode(c, depth + 1));
      return p;
    }
    case T_REC: {
      const n = countr(8, 1 << 16);
      const p = balloc(8 + (<usize>n << 3));
      store<i32>(p, T_REC);
      store<u32>(p, n, 4);
      for (let i: u32 = 0; i < n && !bad; i++) {
        const k = u32r();
        if (k >= c.nStrings) fail("constant: record key out of range");
        store<u32>(p + 8 + (<usize>i << 3), k);
        store<u32>(p + 12 + (<usize>i << 3), <u32>constNode(c, depth + 1));
      }
      return p;
    }
    case T_IP: {
      const v6 = u32r();
      const prefix = u32r();
      if (v6 > 1 || prefix > (v6 ? <u32>128 : <u32>32) || rp + 16 > rEnd) {
        fail("constant: bad ip");
        return 0;
      }
      const p = balloc(32);
      store<i32>(p, T_IP);
      store<u32>(p, v6, 4);
      store<u32>(p, prefix, 8);
      store<u32>(p, 0, 12);
      memory.copy(p + 16, rp, 16);
      rp += 16;
      return p;
    }
    case T_DEC: {
      const p = balloc(16);
      store<i32>(p, T_DEC);
      store<i64>(p, i64r(), 8);
      return p;
    }
  }
  fail("constant: unknown tag");
  return 0;
}

// ---- code verification ----

/** Operand layout check of node `at` against the relocation kinds; children must precede their parent. */
function verifyNode(code: usize, kinds: usize, n: u32, at: u32): bool {
  if (at >= n) return false;
  const op = load<i32>(code + (<usize>at << 2));
  let len: u32 = 0;
  // expected kinds per operand: 1 child, 2 str, 3 const, 4 uid, 0 plain, 5 var(0..3), 6 var(0..2)
  let e0: u32 = 0, e1: u32 = 0, e2: u32 = 0;
  switch (op) {
    case 1: len = 1; e0 = 3; break; // CONST
    case 2: len = 1; e0 = 5; break; // VAR
    case 3: case 4: case 22: case 30: case 31: case 32: case 33: len = 1; e0 = 1; break;
    case 5: case 6: case 7: case 8: case 9: case 10: case 11: case 12: case 13: case 14: case 15:
    case 16: case 17: case 18: case 19: case 20: case 21: case 34: case 35: case 36: case 37: case 38:
      len = 2; e0 = 1; e1 = 1; break;
    case 23: case 24: case 26: len = 2; e0 = 1; e1 = 2; break; // ATTR HAS IS
    case 27: len = 3; e0 = 1; e1 = 1; e2 = 1; break; // ITE
    case 39: len = 2; e0 = 6; e1 = 4; break; // ENTEQ
    case 40: len = 2; e0 = 6; e1 = 2; break; // ENTIS
    case 41: len = 2; e0 = 6; e1 = 1; break; // VARIN
    case 42: len = 0; break; // ERROR
    case 43: { // MEMO [op, child, result, seq lo, seq hi]: the evaluator's state words must start at 0
      if (<u64>at + 4 >= <u64>n) return false;
      for (let i: u32 = 2; i <= 4; i++) {
        if (load<u8>(kinds + at + i) != 0 || load<i32>(code + (<usize>(at + i) << 2)) != 0) return false;
      }
      len = 1; e0 = 1; break;
    }
    case 25: { // LIKE [op, child, m, units...]
      if (at + 2 >= n) return false;
      const m = load<u32>(code + (<usize>(at + 2) << 2));
      if (<u64>at + 3 + <u64>m > <u64>n) return false;
      if (load<u8>(kinds + at + 1) != 1 || load<u8>(kinds + at + 2) != 0) return false;
      for (let i: u32 = 0; i < m; i++) {
        if (load<u8>(kinds + at + 3 + i) != 0) return false;
        const u = load<i32>(code + (<usize>(at + 3 + i) << 2));
        if (u < -1 || u > 0xffff) return false;
      }
      return load<u32>(code + (<usize>(at + 1) << 2)) < at;
    }
    case 28: case 29: { // SET [op, n, children] / REC [op, n, (str, child)...]
      if (at + 1 >= n) return false;
      const cnt = load<u32>(code + (<usize>(at + 1) << 2));
      const per: u32 = op == 28 ? 1 : 2;
      if (<u64>at + 2 + <u64>cnt * per > <u64>n) return false;
      if (load<u8>(kinds + at + 1) != 0) return false;
      for (let i: u32 = 0; i < cnt * per; i++) {
        const w = at + 2 + i;
        const want: u8 = op == 28 || (i & 1) == 1 ? 1 : 2;
        if (load<u8>(kinds + w) != want) return false;
        if (want == 1 && load<u32>(code + (<usize>w << 2)) >= at) return false;
      }
      return true;
    }
    default:
      return false;
  }
  if (<u64>at + <u64>len >= <u64>n + 1) return false;
  for (let i: u32 = 0; i < len; i++) {
    const w = at + 1 + i;
    if (w >= n) return false;
    const want = i == 0 ? e0 : i == 1 ? e1 : e2;
    const kind = <u32>load<u8>(kinds + w);
    const v = load<u32>(code + (<usize>w << 2));
    if (want == 5 || want == 6) {
      if (kind != 0 || v > (want == 5 ? <u32>3 : <u32>2)) return false;
    } else if (kind != want) return false;
    else if (want == 1 && v >= at) return false;
  }
  return true;
}

/** Verify every node reachable from `root` (memoised in `seen`). */
function verifyTree(code: usize, kinds: usize, n: u32, root: u32, seen: usize, depth: i32): bool {
  if (root >= n) return false;
  if (load<u8>(seen + root)) return true;
  if (depth > 2000) return false;
  if (!verifyNode(code, kinds, n, root)) return false;
  store<u8>(seen + root, 1);
  // walk the children
  const op = load<i32>(code + (<usize>root << 2));
  if (op == 28 || op == 29) {
    const cnt = load<u32>(code + (<usize>(root + 1) << 2));
    const per: u32 = op == 28 ? 1 : 2;
    for (let i: u32 = 0; i < cnt * per; i++) {
      const w = root + 2 + i;
      if (load<u8>(kinds + w) == 1 && !verifyTree(code, kinds, n, load<u32>(code + (<usize>w << 2)), seen, depth + 1))
        return false;
    }
    return true;
  }
  // operand count: ERROR none; CONST, VAR, LIKE (its child) and the unary operators one; ITE three;
  // the rest two (only words with a CHILD relocation are followed)
  let len: u32 = 2;
  if (op == 42) len = 0;
  else if (op == 27) len = 3;
  else if (op == 1 || op == 2 || op == 3 || op == 4 || op == 22 || op == 25 || (op >= 30 && op <= 33)) len = 1;
  for (let i: u32 = 0; i < len; i++) {
    const w = root + 1 + i;
    if (w < n && load<u8>(kinds + w) == 1) {
      if (!verifyTree(code, kinds, n, load<u32>(code + (<usize>w << 2)), seen, depth + 1)) return false;
    }
  }
  return true;
}

// ---- the whole configuration ----

/**
 * Parse the binary configuration [blob, blob+len) and lay it out from `base`. Returns the Cfg (at
 * `base`), or 0 with configError set. `scratch` is temporary space of at least 2*len + 64 bytes.
 */
export function buildConfig(blob: usize, len: usize, base: usize, scratch: usize): usize {
  bad = false;
  configError = "";
  rp = blob;
  rEnd = blob + len;
  bp = base;
  const c = changetype<Cfg>(balloc(offsetof<Cfg>()));
  memory.fill(changetype<usize>(c), 0, offsetof<Cfg>());
  if (u32r() != MAGIC) fail("not a qhx_authz configuration (bad magic)");
  let version: u32 = 0;
  if (!bad) {
    version = u32r();
    if (version != VERSION && version != VERSION_RELEASABILITY) fail("unsupported configuration version");
  }
  c.flags = u32r();
  c.jwtHeader = strCopy(256);
  c.jwtHeaderLen = sLen;
  c.reasonHeader = strCopy(256);
  c.reasonHeaderLen = sLen;
  c.peerHeader = strCopy(256);
  c.peerHeaderLen = sLen;
  c.leeway = u32r();
  if (c.leeway > 300) fail("leeway beyond 300 s");
  c.nAud = countr(4, 64);
  c.audTab = balloc((<usize>c.nAud << 3) + 8);
  for (let i: u32 = 0; i < c.nAud && !bad; i++) {
    store<u32>(c.audTab + (<usize>i << 3), <u32>strCopy(1024));
    store<u32>(c.audTab + (<usize>i << 3), <u32>sLen, 4);
  }
  c.nRoutes = countr(4, 4096);
  c.routeTab = balloc((<usize>c.nRoutes << 3) + 8);
  for (let i: u32 = 0; i < c.nRoutes && !bad; i++) {
    store<u32>(c.routeTab + (<usize>i << 3), <u32>strCopy(2048));
    store<u32>(c.routeTab + (<usize>i << 3), <u32>sLen, 4);
    if (sLen == 0 || load<u8>(sPtr) != 0x2f) fail("route prefix must start with /");
  }
  if (bad) return 0;
  readStrings(c);
  if (bad) return 0;
  // uid hash, sized for every uid the constants can name
  let ucap: u32 = 64;
  while (ucap < c.nStrings * 2 + 64) ucap <<= 1;
  c.uidMask = ucap - 1;
  c.uidHash = balloc(<usize>ucap << 4);
  memory.fill(c.uidHash, 0, <usize>ucap << 4);
  // policies
  const np = countr(28, 1 << 16);
  c.nPolicies = np;
  c.polIds = balloc((<usize>np << 3) + 8);
  const rows = scratch; // [effect, body, filters x5] raw, resolved after the constants
  for (let i: u32 = 0; i < np && !bad; i++) {
    store<u32>(c.polIds + (<usize>i << 3), <u32>strCopy(1024));
    store<u32>(c.polIds + (<usize>i << 3), <u32>sLen, 4);
    for (let j: u32 = 0; j < 7; j++) store<u32>(rows + (<usize>(i * 7 + j) << 2), u32r());
  }
  // code and relocations
  const ncode = countr(4, 1 << 24);
  if (bad) return 0;
  const codeIn = rp;
  rp += <usize>ncode << 2;
  const nrel = countr(8, 1 << 24);
  if (bad) return 0;
  const relIn = rp;
  rp += <usize>nrel << 3;
  const kinds = rows + (<usize>np * 28) + 16;
  memory.fill(kinds, 0, <usize>ncode + 1);
  for (let i: u32 = 0; i < nrel; i++) {
    const at = load<u32>(relIn + (<usize>i << 3));
    const kind = load<u32>(relIn + (<usize>i << 3) + 4);
    if (at >= ncode || kind < 1 || kind > 4 || load<u8>(kinds + at) != 0) {
      fail("bad relocation");
      return 0;
    }
    store<u8>(kinds + at, <u8>kind);
  }
  // constants
  const nconst = countr(4, 1 << 20);
  if (bad) return 0;
  const consts = balloc((<usize>nconst << 2) + 4);
  for (let i: u32 = 0; i < nconst && !bad; i++) store<u32>(consts + (<usize>i << 2), <u32>constNode(c, 0));
  if (bad) return 0;
  // verify the code structure from every policy body
  const seen = kinds + <usize>ncode + 16;
  memory.fill(seen, 0, <usize>ncode + 1);
  for (let i: u32 = 0; i < np; i++) {
    const body = load<u32>(rows + (<usize>(i * 7 + 1) << 2));
    if (!verifyTree(codeIn, kinds, ncode, body, seen, 0)) {
      fail("decision program: malformed code");
      return 0;
    }
  }
  // relocate into the output
  const code = balloc((<usize>ncode << 2) + 4);
  for (let i: u32 = 0; i < ncode; i++) {
    const v = load<u32>(codeIn + (<usize>i << 2));
    const kind = <u32>load<u8>(kinds + i);
    let out = v;
    if (kind == RELOC_CHILD) {
      if (v >= ncode) fail("child out of range");
      out = <u32>(code + (<usize>v << 2));
    } else if (kind == RELOC_STR) {
      if (v >= c.nStrings) fail("string out of range");
    } else if (kind == RELOC_CONST) {
      if (v >= nconst) fail("constant out of range");
      else out = load<u32>(consts + (<usize>v << 2));
    } else if (kind == RELOC_UID) {
      if (v >= nconst) fail("constant out of range");
      else {
        const node = <usize>load<u32>(consts + (<usize>v << 2));
        if (load<i32>(node) != T_ENT) fail("uid relocation names a non-entity");
        else out = load<u32>(node, 4);
      }
    }
    store<u32>(code + (<usize>i << 2), out);
  }
  if (bad) return 0;
  c.polTab = balloc((np > 0 ? <usize>np : <usize>1) << 5);
  for (let i: u32 = 0; i < np; i++) {
    const r = rows + (<usize>(i * 7) << 2);
    const row = c.polTab + (<usize>i << 5);
    const eff = load<u32>(r);
    if (eff != 1 && eff != 2) fail("bad effect");
    store<u32>(row, eff);
    store<u32>(row, <u32>(code + (<usize>load<u32>(r, 4) << 2)), 4);
    for (let j: u32 = 0; j < 5; j++) {
      const f = load<i32>(r + 8 + (<usize>j << 2));
      let v: i32 = -1;
      if (f >= 0) {
        if (j < 3) {
          if (<u32>f >= nconst) fail("scope filter out of range");
          else {
            const node = <usize>load<u32>(consts + (<usize>f << 2));
            if (load<i32>(node) != T_ENT) fail("scope filter names a non-entity");
            else v = load<i32>(node, 4);
          }
        } else {
          if (<u32>f >= c.nStrings) fail("scope filter out of range");
          else v = f;
        }
      } else if (f != -1) fail("bad scope filter");
      store<i32>(row + 8 + (<usize>j << 2), v);
    }
    store<u32>(row, 0, 28);
  }
  c.outPtr = balloc(<usize>12 + ((np > 0 ? <usize>np : <usize>1) << 4));
  // directory: SPIFFE ID → namespace, assurance, labels (string ids)
  const nd = countr(16, 1 << 20);
  for (let i: u32 = 0; i < nd && !bad; i++) {
    const sid = u32r();
    const ns = u32r();
    const as = u32r();
    const nl = countr(8, 1024);
    if (bad) break;
    if (sid >= c.nStrings || ns >= c.nStrings || as >= c.nStrings) {
      fail("directory: string index out of range");
      break;
    }
    const rec = balloc(16 + (<usize>nl << 3));
    store<u32>(rec, sid);
    store<u32>(rec, ns, 4);
    store<u32>(rec, as, 8);
    store<u32>(rec, nl, 12);
    for (let j: u32 = 0; j < nl; j++) {
      const k = u32r();
      const v = u32r();
      if (k >= c.nStrings || v >= c.nStrings) fail("directory: label out of range");
      store<u32>(rec + 16 + (<usize>j << 3), k);
      store<u32>(rec + 20 + (<usize>j << 3), v);
    }
    const t = c.strTab + (<usize>sid << 4);
    if (load<u32>(t, 12) != 0) fail("directory: duplicate SPIFFE ID");
    store<u32>(t, <u32>rec, 12);
  }
  // keys
  c.nKeys = countr(16, 4096);
  c.keyTab = balloc((<usize>c.nKeys << 5) + 32);
  for (let i: u32 = 0; i < c.nKeys && !bad; i++) {
    const k = c.keyTab + (<usize>i << 5);
    store<u32>(k, <u32>strCopy(255));
    store<u32>(k, <u32>sLen, 4);
    store<u32>(k, <u32>strCopy(1024), 8);
    store<u32>(k, <u32>sLen, 12);
    const alg = u32r();
    store<u32>(k, alg, 16);
    store<u32>(k, <u32>strCopy(4096), 20);
    store<u32>(k, <u32>sLen, 24);
    const want: usize = alg == ALG_ES256 ? 65 : alg == ALG_MLDSA44 ? 1312 : alg == ALG_MLDSA65 ? 1952 : alg == ALG_MLDSA87 ? 2592 : 0;
    if (want == 0 || sLen != want) fail("key: unknown alg or wrong key length");
    else if (alg == ALG_ES256 && load<u8>(sPtr) != 4) fail("key: ES256 key must be an uncompressed point");
  }
  // releasability (version 2): local trust domain, mode (0 list, 1 any), rule text, accepted domains
  c.relMode = REL_NONE;
  if (!bad && version == VERSION_RELEASABILITY) {
    c.relLocal = strCopy(255);
    c.relLocalLen = sLen;
    if (!bad && !trustDomainOk(sPtr, sLen)) fail("releasability: invalid local trust domain");
    const mode = u32r();
    if (!bad && mode > 1) fail("releasability: bad mode");
    c.relMode = mode == 1 ? REL_ANY : REL_LIST;
    c.relRule = strCopy(1024);
    c.relRuleLen = sLen;
    for (let i: usize = 0; i < sLen && !bad; i++) {
      const ch = load<u8>(sPtr + i);
      if (ch < 0x20 || ch >= 0x7f) fail("releasability: rule text must be printable ASCII");
    }
    c.nRel = countr(4, 4096);
    if (!bad && mode == 1 && c.nRel != 0) fail("releasability: \"*\" with a list");
    c.relTab = balloc((<usize>c.nRel << 3) + 8);
    for (let i: u32 = 0; i < c.nRel && !bad; i++) {
      store<u32>(c.relTab + (<usize>i << 3), <u32>strCopy(255));
      store<u32>(c.relTab + (<usize>i << 3), <u32>sLen, 4);
      if (!bad && !trustDomainOk(sPtr, sLen)) fail("releasability: invalid trust domain");
    }
  }
  if (!bad && rp != rEnd) fail("trailing bytes");
  if (bad) return 0;
  return changetype<usize>(c);
}

/** End of the region the last buildConfig used. */
export function buildEnd(): usize {
  return bp;
}
