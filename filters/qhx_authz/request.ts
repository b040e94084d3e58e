// Builds the Cedar request for one HTTP request in the evaluator's value format (the same encoding
// host/policy/runtime.ts writes from the host) and evaluates it with the compiled decision program.
//
//   principal  Workload::"<SPIFFE ID>"  {spiffeId, trustDomain, path, namespace, assurance, selectors: []}
//              tags = directory labels; parent Namespace::"<td>/<namespace>" {name, trustDomain},
//              whose parent is TrustDomain::"<td>" {name}
//   action     Action::"<METHOD>" (in Action::"http" for GET HEAD POST PUT PATCH DELETE OPTIONS)
//   resource   Route::"<host> <prefix>" {pathPrefix} in Service::"<host>" {name} for the longest
//              configured route prefix of the path, else Service::"<host>"; host = :authority without port
//   context    {time, method, path (without query), headers: {content-type?, user-agent?, x-request-id?,
//              x-qhx-tenant?}, tls: {mode: "mtls"|"xfcc"|"jwt", pq: false}}
//
// Strings are looked up in the configuration's string table (same ids as the program's); strings the
// program never names get fresh ids for this request only, so equal strings always share an id.
import { scratchAlloc } from "../proxy-wasm/memory";
import { authorize } from "../../assembly/policy/index";
import {
  Cfg, findString, findUid, makeStrNode, strNode, wkId, wkNode, T_BOOL, T_ENT, T_LONG, T_REC, T_SET,
  WK_ACTION, WK_ASSURANCE, WK_DEFAULT, WK_GET, WK_HEADERS, WK_HTTP, WK_METHOD, WK_MODE, WK_NAME,
  WK_NAMESPACE, WK_NAMESPACE_ATTR, WK_NONE, WK_PATH, WK_PATHPREFIX, WK_PQ, WK_ROUTE, WK_SELECTORS,
  WK_SERVICE, WK_SPIFFEID, WK_TIME, WK_TLS, WK_TRUSTDOMAIN, WK_TRUSTDOMAIN_ATTR, WK_WORKLOAD,
  WK_H_CONTENT_TYPE,
} from "./config";
import { bytesEq } from "./bytes";
import { falseValue } from "../../assembly/policy/index";

export const UID_CAP: i32 = 1 << 15;
/** Start of the evaluator's request arena (its init() result). */
export let arenaBase: usize = 0;
export function setArenaBase(p: usize): void {
  arenaBase = p;
}
const MAX_DYN: i32 = 64;

let c: Cfg = changetype<Cfg>(0);
let dynStr: usize = 0; // MAX_DYN × [utf8 ptr, len, node, _]
let nDynStr: i32 = 0;
let dynUid: usize = 0; // MAX_DYN × [type id, id id, node, _]
let nDynUid: i32 = 0;
export let encodeError: string = "";
let failed = false;

function fail(why: string): usize {
  if (!failed) encodeError = why;
  failed = true;
  return 0;
}

export function requestBegin(cfg: Cfg): void {
  c = cfg;
  dynStr = scratchAlloc(<usize>MAX_DYN << 4);
  dynUid = scratchAlloc(<usize>MAX_DYN << 4);
  nDynStr = 0;
  nDynUid = 0;
  failed = false;
  encodeError = "";
}

/** The STR node for these UTF-8 bytes (interned for this request). */
export function str(p: usize, len: usize): usize {
  if (failed) return 0;
  const id = findString(c, p, len);
  if (id >= 0) return strNode(c, id);
  for (let i = 0; i < nDynStr; i++) {
    const e = dynStr + (<usize>i << 4);
    if (bytesEq(<usize>load<u32>(e), <usize>load<u32>(e, 4), p, len)) return <usize>load<u32>(e, 8);
  }
  if (nDynStr >= MAX_DYN) return fail("too many distinct strings");
  const node = scratchAlloc(16 + (len << 1));
  if (!makeStrNode(node, <i32>c.nStrings + nDynStr, p, len)) return fail("ill-formed UTF-8");
  const e = dynStr + (<usize>nDynStr << 4);
  store<u32>(e, <u32>p);
  store<u32>(e, <u32>len, 4);
  store<u32>(e, <u32>node, 8);
  nDynStr++;
  return node;
}

@inline function sid(node: usize): i32 {
  return load<i32>(node, 4);
}

/** The ENT node of type (a STR node) and id (a STR node). */
function uid(typeNode: usize, idNode: usize): usize {
  if (failed || typeNode == 0 || idNode == 0) return 0;
  const t = sid(typeNode);
  const i = sid(idNode);
  if (t < <i32>c.nStrings && i < <i32>c.nStrings) {
    const n = findUid(c, t, i);
    if (n != 0) return n;
  }
  for (let k = 0; k < nDynUid; k++) {
    const e = dynUid + (<usize>k << 4);
    if (load<i32>(e) == t && load<i32>(e, 4) == i) return <usize>load<u32>(e, 8);
  }
  if (nDynUid >= MAX_DYN || <i32>c.nUids + nDynUid >= UID_CAP) return fail("too many entities");
  const node = scratchAlloc(16);
  store<i32>(node, T_ENT);
  store<i32>(node, <i32>c.nUids + nDynUid, 4);
  store<i32>(node, t, 8);
  const e = dynUid + (<usize>nDynUid << 4);
  store<i32>(e, t);
  store<i32>(e, i, 4);
  store<u32>(e, <u32>node, 8);
  nDynUid++;
  return node;
}

// ---- record / set builders ----

let recPtr: usize = 0;
let recN: i32 = 0;

function recBegin(max: i32): void {
  recPtr = scratchAlloc(8 + (<usize>max << 3));
  store<i32>(recPtr, T_REC);
  recN = 0;
}

function recPut(keyWk: i32, val: usize): void {
  if (val == 0) {
    fail("missing value");
    return;
  }
  store<i32>(recPtr + 8 + (<usize>recN << 3), wkId(c, keyWk));
  store<u32>(recPtr + 12 + (<usize>recN << 3), <u32>val);
  recN++;
}

function recPutId(keyId: i32, val: usize): void {
  store<i32>(recPtr + 8 + (<usize>recN << 3), keyId);
  store<u32>(recPtr + 12 + (<usize>recN << 3), <u32>val);
  recN++;
}

function recEnd(): usize {
  store<i32>(recPtr, recN, 4);
  return recPtr;
}

// ---- the entity table ----

let ents: usize = 0;
let entTop: usize = 0;
let nEnt: i32 = 0;

function entity(uidNode: usize, attrs: usize, tags: usize, parent: usize): void {
  if (failed || uidNode == 0) return;
  store<i32>(entTop, load<i32>(uidNode, 4));
  store<u32>(entTop, <u32>attrs, 4);
  store<u32>(entTop, <u32>tags, 8);
  if (parent != 0) {
    store<i32>(entTop, 1, 12);
    store<i32>(entTop, load<i32>(parent, 4), 16);
    entTop += 20;
  } else {
    store<i32>(entTop, 0, 12);
    entTop += 16;
  }
  nEnt++;
}

/** Inputs of one decision (UTF-8 byte ranges); set by the caller before decide(). */
export let peerP: usize = 0;
export let peerL: usize = 0;
export let tdEnd: usize = 0; // byte offset where the trust domain ends in the peer ID
export let methodP: usize = 0;
export let methodL: usize = 0;
export let pathP: usize = 0;
export let pathL: usize = 0;
export let hostP: usize = 0;
export let hostL: usize = 0;
export let timeSec: i64 = 0;
export let modeWk: i32 = 0;
/** Header subset: 4 × [ptr, len] (len u32.MAX when absent), schema order. */
export const HDRS: usize = memory.data(32, 8);

export function setPeer(p: usize, l: usize, td: usize): void {
  peerP = p;
  peerL = l;
  tdEnd = td;
}
export function setRequest(mp: usize, ml: usize, pp: usize, pl: usize, hp: usize, hl: usize, t: i64, mode: i32): void {
  methodP = mp;
  methodL = ml;
  pathP = pp;
  pathL = pl;
  hostP = hp;
  hostL = hl;
  timeSec = t;
  modeWk = mode;
}

function concat(a: usize, al: usize, sep: u8, b: usize, bl: usize): usize {
  const p = scratchAlloc(al + 1 + bl);
  memory.copy(p, a, al);
  store<u8>(p + al, sep);
  memory.copy(p + al + 1, b, bl);
  return p;
}

/** Bytes [p, p+len) start with [q, q+ql)? */
function hasPrefix(p: usize, len: usize, q: usize, ql: usize): bool {
  if (ql > len) return false;
  for (let i: usize = 0; i < ql; i++) if (load<u8>(p + i) != load<u8>(q + i)) return false;
  return true;
}

/** Decision outcome: 1 allow, 0 deny, -1 could not evaluate (encodeError says why). */
export function decide(): i32 {
  if (failed) return -1;
  ents = scratchAlloc(8 * 24 + 64);
  entTop = ents;
  nEnt = 0;
  // ---- principal ----
  const td = peerP + 9;
  const tdL = tdEnd - 9;
  const path = peerP + tdEnd;
  const pathLen = peerL - tdEnd;
  const peerNode = str(peerP, peerL);
  const tdNode = str(td, tdL);
  const pathNode = str(path, pathLen);
  if (failed) return -1;
  let nsNode: usize = 0;
  let assuranceNode = wkNode(c, WK_NONE);
  let dir: usize = 0;
  const pid = sid(peerNode);
  if (pid < <i32>c.nStrings) dir = <usize>load<u32>(c.strTab + (<usize>pid << 4), 12);
  if (dir != 0) {
    nsNode = strNode(c, load<i32>(dir, 4));
    assuranceNode = strNode(c, load<i32>(dir, 8));
  } else {
    // Istio-style "/ns/<namespace>/…" paths name their namespace; anything else is "default"
    if (pathLen > 4 && load<u8>(path) == 0x2f && load<u8>(path + 1) == 0x6e && load<u8>(path + 2) == 0x73 && load<u8>(path + 3) == 0x2f) {
      let e: usize = 4;
      while (e < pathLen && load<u8>(path + e) != 0x2f) e++;
      nsNode = str(path + 4, e - 4);
    } else nsNode = wkNode(c, WK_DEFAULT);
  }
  if (failed) return -1;
  // the namespace uid "<td>/<namespace>" needs the namespace's UTF-8 bytes
  let nsP: usize = 0;
  let nsL: usize = 0;
  const nsId = sid(nsNode);
  if (nsId < <i32>c.nStrings) {
    const t = c.strTab + (<usize>nsId << 4);
    nsP = <usize>load<u32>(t, 4);
    nsL = <usize>load<u32>(t, 8);
  } else {
    const e = dynStr + (<usize>(nsId - <i32>c.nStrings) << 4);
    nsP = <usize>load<u32>(e);
    nsL = <usize>load<u32>(e, 4);
  }
  const nsUidNode = uid(wkNode(c, WK_NAMESPACE), str(concat(td, tdL, 0x2f, nsP, nsL), tdL + 1 + nsL));
  const tdUidNode = uid(wkNode(c, WK_TRUSTDOMAIN), tdNode);
  const principal = uid(wkNode(c, WK_WORKLOAD), peerNode);
  if (failed) return -1;
  const emptySet = scratchAlloc(8);
  store<i32>(emptySet, T_SET);
  store<i32>(emptySet, 0, 4);
  recBegin(6);
  recPut(WK_SPIFFEID, peerNode);
  recPut(WK_TRUSTDOMAIN_ATTR, tdNode);
  recPut(WK_PATH, pathNode);
  recPut(WK_NAMESPACE_ATTR, nsNode);
  recPut(WK_ASSURANCE, assuranceNode);
  recPut(WK_SELECTORS, emptySet);
  const wAttrs = recEnd();
  const nl = dir != 0 ? load<i32>(dir, 12) : 0;
  recBegin(nl);
  for (let i = 0; i < nl; i++) {
    recPutId(load<i32>(dir + 16 + (<usize>i << 3)), strNode(c, load<i32>(dir + 20 + (<usize>i << 3))));
  }
  const wTags = recEnd();
  entity(principal, wAttrs, wTags, nsUidNode);
  recBegin(2);
  recPut(WK_NAME, nsNode);
  recPut(WK_TRUSTDOMAIN_ATTR, tdNode);
  entity(nsUidNode, recEnd(), 0, tdUidNode);
  recBegin(1);
  recPut(WK_NAME, tdNode);
  entity(tdUidNode, recEnd(), 0, 0);
  // ---- action ----
  const actionType = wkNode(c, WK_ACTION);
  const methodNode = str(methodP, methodL);
  const action = uid(actionType, methodNode);
  const httpAction = uid(actionType, wkNode(c, WK_HTTP));
  if (failed) return -1;
  const mid = sid(methodNode);
  let standard = false;
  for (let k = 0; k < 7; k++) if (mid == wkId(c, WK_GET + k)) standard = true;
  recBegin(0);
  entity(action, recEnd(), 0, standard ? httpAction : 0);
  recBegin(0);
  entity(httpAction, recEnd(), 0, 0);
  // ---- resource ----
  const hostNode = str(hostP, hostL);
  const service = uid(wkNode(c, WK_SERVICE), hostNode);
  recBegin(1);
  recPut(WK_NAME, hostNode);
  entity(service, recEnd(), 0, 0);
  let best: i32 = -1;
  let bestLen: usize = 0;
  for (let i: u32 = 0; i < c.nRoutes; i++) {
    const r = c.routeTab + (<usize>i << 3);
    const rl = <usize>load<u32>(r, 4);
    if ((best < 0 || rl > bestLen) && hasPrefix(pathP, pathL, <usize>load<u32>(r), rl)) {
      best = <i32>i;
      bestLen = rl;
    }
  }
  let resource = service;
  if (best >= 0) {
    const r = c.routeTab + (<usize>best << 3);
    const rp = <usize>load<u32>(r);
    const prefixNode = str(rp, bestLen);
    resource = uid(wkNode(c, WK_ROUTE), str(concat(hostP, hostL, 0x20, rp, bestLen), hostL + 1 + bestLen));
    recBegin(1);
    recPut(WK_PATHPREFIX, prefixNode);
    entity(resource, recEnd(), 0, service);
  }
  if (failed) return -1;
  // ---- context ----
  const time = scratchAlloc(16);
  store<i32>(time, T_LONG);
  store<i64>(time, timeSec, 8);
  recBegin(4);
  for (let k = 0; k < 4; k++) {
    const hl = load<u32>(HDRS + (<usize>k << 3), 4);
    if (hl != u32.MAX_VALUE) recPut(WK_H_CONTENT_TYPE + k, str(<usize>load<u32>(HDRS + (<usize>k << 3)), <usize>hl));
  }
  const headers = recEnd();
  recBegin(2);
  recPut(WK_MODE, wkNode(c, modeWk));
  recPut(WK_PQ, falseValue());
  const tls = recEnd();
  recBegin(5);
  recPut(WK_TIME, time);
  recPut(WK_METHOD, methodNode);
  recPut(WK_PATH, str(pathP, pathL));
  recPut(WK_HEADERS, headers);
  recPut(WK_TLS, tls);
  const context = recEnd();
  if (failed) return -1;
  const d = authorize(principal, action, resource, context, ents, nEnt, arenaBase);
  if (d < 0) {
    encodeError = "the request cannot be evaluated (entity hierarchy or arena)";
    return -1;
  }
  return d;
}
