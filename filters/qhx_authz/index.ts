// qhx_authz: the QHx authorization filter for Envoy/Istio (proxy-wasm ABI v0.2.1). See docs/filter.md.
//
// Per request (proxy_on_request_headers): the peer's SPIFFE ID from the connection
// (connection.uri_san_peer_certificate) or, only when configured, from x-forwarded-client-cert; an
// optional JWT-SVID from a header, verified here; the Cedar request built from them and evaluated by
// the compiled decision program; continue, or a local 403 with the reason in a header. Any internal
// error answers 503 (fail closed). The configuration is swapped atomically in proxy_on_configure.
import {
  ACTION_CONTINUE, ACTION_PAUSE, BUFFER_PLUGIN_CONFIGURATION, LOG_ERROR, LOG_INFO, MAP_REQUEST_HEADERS,
  METRIC_COUNTER, METRIC_HISTOGRAM, STATUS_OK, defineMetric, getBuffer, getHeaderPairs, getProperty,
  headerCount, headerIterNext, headerIterStart, pairKey, pairKeyLen, pairValue, pairValueLen,
  headersAdd, headersBegin, headersEnd, headersPtr, incrementMetric, logWith, nowNanos, recordMetric,
  replaceHeader, resultLen, resultPtr, sendLocalResponse,
} from "../proxy-wasm/hostcalls";
import { ensureMemory, configBase, regionInit, scratchAlloc, scratchMark, setConfigEnd } from "../proxy-wasm/memory";
import { contextsInit, ContextRecord } from "../proxy-wasm/context";
import { onConfigure, onRequestHeaders, onStart, onVmStart, onDone } from "../proxy-wasm/exports";
import { init, arenaLimit, ensureUids, setProgram, staticBytes } from "../../assembly/policy/index";
import { checkSpiffeId, spiffeInputPtr, spiffeTrustDomainEnd } from "../../assembly/spiffeid";
import { base64Decode, bytesEq, eqLit, litBytes, startsWithLitCI } from "./bytes";
import { buildConfig, buildEnd, Cfg, configError, releasable, F_DEBUG_TRAP, F_JWT, F_JWT_PRINCIPAL, F_JWT_REQUIRED, F_PEER_HEADER, F_XFCC, WK_JWT, WK_MTLS, WK_XFCC } from "./config";
import { objectBegin, nextMember, jsonError, keyPtr, keyLen, valType, strPtr, strLen, J_STRING } from "./json";
import { jwtCacheClear, jwtInit, jwtReason, subLen, subPtr, verifyJwtSvid } from "./jwt";
import { HDRS, UID_CAP, decide, encodeError, requestBegin, setArenaBase, setPeer, setRequest } from "./request";

export {
  proxy_abi_version_0_2_1, proxy_on_memory_allocate, proxy_on_context_create, proxy_on_vm_start,
  proxy_on_configure, proxy_on_new_connection, proxy_on_request_headers, proxy_on_request_body,
  proxy_on_response_headers, proxy_on_done, proxy_on_log, proxy_on_delete, proxy_on_tick,
  proxy_on_http_call_response,
} from "../proxy-wasm/exports";

const ARENA_BYTES: i32 = 256 << 10;
const MAX_STREAMS: u32 = 16384;
const MAX_CONFIG: usize = 64 << 20;

let active: usize = 0; // the Cfg in force (0: none yet → 503)
let mAllowed: u32 = u32.MAX_VALUE;
let mDenied: u32 = u32.MAX_VALUE;
let mErrors: u32 = u32.MAX_VALUE;
let mLatency: u32 = u32.MAX_VALUE;
let mConfigs: u32 = u32.MAX_VALUE;
let mRejected: u32 = u32.MAX_VALUE;

function start(): void {
  const arena = init(ARENA_BYTES);
  setArenaBase(arena);
  ensureUids(UID_CAP);
  regionInit(arenaLimit() + staticBytes());
  contextsInit(MAX_STREAMS);
  jwtInit();
}

function vmStart(rootId: u32, size: usize): bool {
  mAllowed = defineMetric(METRIC_COUNTER, "qhx_authz.allowed");
  mDenied = defineMetric(METRIC_COUNTER, "qhx_authz.denied");
  mErrors = defineMetric(METRIC_COUNTER, "qhx_authz.errors");
  mLatency = defineMetric(METRIC_HISTOGRAM, "qhx_authz.latency_us");
  mConfigs = defineMetric(METRIC_COUNTER, "qhx_authz.config_applied");
  mRejected = defineMetric(METRIC_COUNTER, "qhx_authz.config_rejected");
  return true;
}

function refuse(why: string): bool {
  incrementMetric(mRejected, 1);
  logWith(LOG_ERROR, "qhx_authz: configuration refused, previous one stays in force: ", changetype<usize>(0), 0);
  const n = <usize>why.length;
  const p = scratchAlloc(n + 1);
  for (let i: usize = 0; i < n; i++) store<u8>(p + i, <u8>why.charCodeAt(<i32>i));
  logWith(LOG_ERROR, "qhx_authz: ", p, n);
  return false;
}

/**
 * The plugin configuration: {"format":"qhx-authz-config/1","config":"<base64 of the binary>"}.
 * Validated completely (built once in scratch) before the swap; the swap rebuilds it in place.
 */
function configure(rootId: u32, size: usize): bool {
  if (size == 0 || size > MAX_CONFIG) return refuse("empty or oversized configuration");
  if (getBuffer(BUFFER_PLUGIN_CONFIGURATION, 0, size) != STATUS_OK) return refuse("cannot read the configuration");
  const json = resultPtr;
  const jsonLen = resultLen;
  let b64: usize = 0;
  let b64Len: usize = 0;
  let seen = 0;
  if (!objectBegin(json, jsonLen)) return refuse("configuration is not a JSON object");
  while (nextMember()) {
    if (eqLit(keyPtr, keyLen, "format")) {
      if (seen & 1 || valType != J_STRING || !eqLit(strPtr, strLen, "qhx-authz-config/1")) return refuse("unsupported format");
      seen |= 1;
    } else if (eqLit(keyPtr, keyLen, "config")) {
      if (seen & 2 || valType != J_STRING) return refuse("config must be a base64 string");
      seen |= 2;
      b64 = strPtr;
      b64Len = strLen;
    } else return refuse("unknown configuration key");
  }
  if (jsonError || seen != 3) return refuse("configuration must be {format, config}");
  const blob = scratchAlloc((b64Len >> 2) * 3 + 4);
  const blen = base64Decode(b64, b64Len, blob, false);
  if (blen < 0) return refuse("config is not valid base64");
  const bl = <usize>blen;
  // 1. validate: build in scratch
  const tmpScratch = scratchAlloc(2 * bl + 256);
  const tmp = scratchMark();
  const trial = buildConfig(blob, bl, tmp, tmpScratch);
  if (trial == 0) return refuse(configError);
  if (<i32>changetype<Cfg>(trial).nUids > UID_CAP - 256) return refuse("too many entity uids");
  const need = buildEnd() - tmp;
  // 2. swap: move the input above everything, rebuild at the configuration base (cannot fail now)
  const base = configBase();
  let hi = buildEnd();
  if (base + need > hi) hi = base + need;
  const blob2 = (hi + 15) & ~(<usize>15);
  const scratch2 = (blob2 + bl + 15) & ~(<usize>15);
  ensureMemory(scratch2 + 2 * bl + 256);
  memory.copy(blob2, blob, bl);
  const c = buildConfig(blob2, bl, base, scratch2);
  if (c == 0 || buildEnd() - base != need) unreachable();
  setConfigEnd(buildEnd());
  active = c;
  const cfg = changetype<Cfg>(c);
  setProgram(<i32>cfg.nPolicies, cfg.polTab, cfg.outPtr);
  jwtCacheClear();
  incrementMetric(mConfigs, 1);
  logWith(LOG_INFO, "qhx_authz: configuration applied", changetype<usize>(0), 0);
  return true;
}

// ---- responses ----

function deny(status: u32, reason: string, extraP: usize, extraL: usize): u32 {
  const c = changetype<Cfg>(active);
  const n = <usize>reason.length;
  const msg = scratchAlloc(n + extraL + 1);
  for (let i: usize = 0; i < n; i++) store<u8>(msg + i, <u8>reason.charCodeAt(<i32>i));
  // header values stay printable ASCII: anything else in the extra part becomes '?'
  for (let i: usize = 0; i < extraL; i++) {
    const ch = load<u8>(extraP + i);
    store<u8>(msg + n + i, ch >= 0x20 && ch < 0x7f ? ch : 0x3f);
  }
  const ml = n + extraL;
  let hname: usize;
  let hlen: usize;
  if (active != 0 && c.reasonHeaderLen > 0) {
    hname = c.reasonHeader;
    hlen = c.reasonHeaderLen;
  } else {
    hname = litBytes("x-qhx-authz-reason");
    hlen = 18;
  }
  headersBegin(2, hlen + ml + 64);
  headersAdd(hname, hlen, msg, ml);
  const ct = litBytes("content-type");
  const tp = litBytes("text/plain");
  headersAdd(ct, 12, tp, 10);
  const hl = headersEnd();
  const body = scratchAlloc(ml + 1);
  memory.copy(body, msg, ml);
  store<u8>(body + ml, 0x0a);
  const details = status == 403 ? litBytes("qhx_authz_denied") : litBytes("qhx_authz_error");
  sendLocalResponse(status, details, status == 403 ? 16 : 15, body, ml + 1, headersPtr(), hl);
  if (status == 403) incrementMetric(mDenied, 1);
  else incrementMetric(mErrors, 1);
  return ACTION_PAUSE;
}

/** Strip an optional port from :authority ("host:port", "[v6]:port"); lower-case the result. */
function hostOf(p: usize, len: usize): usize {
  let end = len;
  if (len > 0 && load<u8>(p) == 0x5b) {
    let i: usize = 0;
    while (i < len && load<u8>(p + i) != 0x5d) i++;
    if (i == len) return usize.MAX_VALUE;
    end = i + 1;
  } else {
    for (let i: usize = 0; i < len; i++) if (load<u8>(p + i) == 0x3a) {
      end = i;
      break;
    }
  }
  for (let i: usize = 0; i < end; i++) {
    const ch = load<u8>(p + i);
    if (ch >= 0x41 && ch <= 0x5a) store<u8>(p + i, ch + 32);
    else if (ch <= 0x20 || ch >= 0x7f) return usize.MAX_VALUE;
  }
  return end;
}

/** XFCC: the URI= value of the last element (the immediate peer), unquoted, into xfccP/xfccL. */
let xfccP: usize = 0;
let xfccL: usize = 0;
function xfccUri(p: usize, len: usize): bool {
  // find the start of the last element (commas outside quotes)
  let start: usize = 0;
  let q = false;
  for (let i: usize = 0; i < len; i++) {
    const ch = load<u8>(p + i);
    if (ch == 0x5c && q) i++;
    else if (ch == 0x22) q = !q;
    else if (ch == 0x2c && !q) start = i + 1;
  }
  if (q) return false;
  let i = start;
  while (i < len) {
    while (i < len && load<u8>(p + i) == 0x20) i++;
    // key
    const k = i;
    while (i < len && load<u8>(p + i) != 0x3d && load<u8>(p + i) != 0x3b) i++;
    if (i >= len || load<u8>(p + i) != 0x3d) return false;
    const isUri = startsWithLitCI(p + k, i - k, "uri") && i - k == 3;
    i++;
    // value (maybe quoted)
    const out = scratchAlloc(len - i + 1);
    let ol: usize = 0;
    if (i < len && load<u8>(p + i) == 0x22) {
      i++;
      while (i < len && load<u8>(p + i) != 0x22) {
        if (load<u8>(p + i) == 0x5c && i + 1 < len) i++;
        store<u8>(out + ol++, load<u8>(p + i));
        i++;
      }
      if (i >= len) return false;
      i++;
    } else {
      while (i < len && load<u8>(p + i) != 0x3b) store<u8>(out + ol++, load<u8>(p + i++));
    }
    if (isUri) {
      xfccP = out;
      xfccL = ol;
      return true;
    }
    if (i < len && load<u8>(p + i) != 0x3b) return false;
    i++;
  }
  return false;
}

// The request headers the filter reads, collected in one pass over proxy_get_header_map_pairs (one
// host call instead of one per name): slot → [value ptr, value len] (len u32.MAX when absent; the first
// occurrence wins).
const S_METHOD = 0;
const S_PATH = 1;
const S_AUTHORITY = 2;
const S_CTX = 3; // 3..6: content-type, user-agent, x-request-id, x-qhx-tenant (RequestContext headers)
const S_JWT = 7;
const S_XFCC = 8;
const S_TRAP = 9;
const NSLOTS = 10;
const SLOTS: usize = memory.data(NSLOTS * 8, 8);

function slotOf(c: Cfg, k: usize, kl: usize): i32 {
  switch (<i32>kl) {
    case 5: if (eqLit(k, kl, ":path")) return S_PATH; break;
    case 7: if (eqLit(k, kl, ":method")) return S_METHOD; break;
    case 10:
      if (eqLit(k, kl, ":authority")) return S_AUTHORITY;
      if (eqLit(k, kl, "user-agent")) return S_CTX + 1;
      break;
    case 12:
      if (eqLit(k, kl, "content-type")) return S_CTX;
      if (eqLit(k, kl, "x-request-id")) return S_CTX + 2;
      if (eqLit(k, kl, "x-qhx-tenant")) return S_CTX + 3;
      break;
    case 16: if (eqLit(k, kl, "x-qhx-debug-trap")) return S_TRAP; break;
    case 23: if (eqLit(k, kl, "x-forwarded-client-cert")) return S_XFCC; break;
  }
  if (c.jwtHeaderLen > 0 && bytesEq(k, kl, c.jwtHeader, c.jwtHeaderLen)) return S_JWT;
  return -1;
}

function collectHeaders(c: Cfg): bool {
  for (let i = 0; i < NSLOTS; i++) store<u32>(SLOTS + (<usize>i << 3), u32.MAX_VALUE, 4);
  if (getHeaderPairs(MAP_REQUEST_HEADERS) != STATUS_OK) return false;
  const n = headerCount(resultPtr, resultLen);
  if (n < 0) return false;
  if (n == 0) return true;
  headerIterStart(resultPtr);
  for (let i = 0; i < n; i++) {
    headerIterNext();
    const slot = slotOf(c, pairKey, pairKeyLen);
    if (slot < 0) continue;
    const e = SLOTS + (<usize>slot << 3);
    if (load<u32>(e, 4) != u32.MAX_VALUE) continue;
    store<u32>(e, <u32>pairValue);
    store<u32>(e, <u32>pairValueLen, 4);
  }
  return true;
}

@inline function has(slot: i32): bool {
  return load<u32>(SLOTS + (<usize>slot << 3), 4) != u32.MAX_VALUE;
}
@inline function slotPtr(slot: i32): usize {
  return <usize>load<u32>(SLOTS + (<usize>slot << 3));
}
@inline function slotLen(slot: i32): usize {
  return <usize>load<u32>(SLOTS + (<usize>slot << 3), 4);
}

function requestHeaders(ctx: ContextRecord, numHeaders: usize, eos: bool): u32 {
  const t0 = nowNanos();
  ctx.startNs = t0;
  if (active == 0) return deny(503, "internal: no configuration", 0, 0);
  // without a clock no exp/nbf or context.time can be trusted
  if (t0 == 0) return deny(503, "internal: no clock", 0, 0);
  const c = changetype<Cfg>(active);
  if (!collectHeaders(c)) return deny(503, "internal: cannot read the request headers", 0, 0);
  if (c.flags & F_DEBUG_TRAP && has(S_TRAP)) unreachable();
  requestBegin(c);
  const nowSec = <i64>(t0 / 1_000_000_000);
  // ---- peer identity ----
  let peerP: usize = 0;
  let peerL: usize = 0;
  let mode = WK_MTLS;
  let havePeer = false;
  if (c.flags & F_XFCC) {
    if (has(S_XFCC)) {
      if (!xfccUri(slotPtr(S_XFCC), slotLen(S_XFCC))) return deny(403, "malformed peer identity (x-forwarded-client-cert)", 0, 0);
      peerP = xfccP;
      peerL = xfccL;
      havePeer = true;
      mode = WK_XFCC;
    }
  } else {
    const path = litBytes("connection\0uri_san_peer_certificate");
    if (getProperty(path, 35) == STATUS_OK && resultLen > 0) {
      peerP = resultPtr;
      peerL = resultLen;
      havePeer = true;
    }
  }
  // ---- JWT-SVID ----
  let jwtOk = false;
  if (c.flags & F_JWT) {
    if (has(S_JWT)) {
      let tp = slotPtr(S_JWT);
      let tl = slotLen(S_JWT);
      if (eqLit(c.jwtHeader, c.jwtHeaderLen, "authorization")) {
        if (!startsWithLitCI(tp, tl, "bearer ")) return deny(403, "jwt: authorization is not a Bearer token", 0, 0);
        tp += 7;
        tl -= 7;
      }
      if (!verifyJwtSvid(c, tp, tl, nowSec)) return deny(403, jwtReason, 0, 0);
      jwtOk = true;
    } else if (c.flags & F_JWT_REQUIRED) return deny(403, "jwt: missing JWT-SVID", 0, 0);
  }
  if (jwtOk && (c.flags & F_JWT_PRINCIPAL || !havePeer)) {
    peerP = subPtr;
    peerL = subLen;
    havePeer = true;
    mode = WK_JWT;
  }
  if (!havePeer) return deny(403, "no peer identity", 0, 0);
  if (peerL > 2048) return deny(403, "invalid peer identity", 0, 0);
  memory.copy(spiffeInputPtr(), peerP, peerL);
  if (checkSpiffeId(<i32>peerL) != 0) return deny(403, "invalid peer identity", 0, 0);
  const tdEnd = <usize>spiffeTrustDomainEnd(<i32>peerL);
  setPeer(peerP, peerL, tdEnd);
  // ---- releasability (crypto policy accept_from): a foreign trust domain not accepted here ----
  if (!releasable(c, peerP + 9, tdEnd - 9)) {
    const tl = tdEnd - 9;
    const lit = " is not accepted (";
    const ll = <usize>lit.length;
    const rl = c.relRuleLen > 0 ? c.relRuleLen : 6;
    const why = scratchAlloc(tl + ll + rl + 2);
    memory.copy(why, peerP + 9, tl);
    for (let i: usize = 0; i < ll; i++) store<u8>(why + tl + i, <u8>lit.charCodeAt(<i32>i));
    if (c.relRuleLen > 0) memory.copy(why + tl + ll, c.relRule, rl);
    else memory.copy(why + tl + ll, litBytes("policy"), 6);
    store<u8>(why + tl + ll + rl, 0x29);
    return deny(403, "not releasable: trust domain ", why, tl + ll + rl + 1);
  }
  // ---- request line ----
  if (!has(S_METHOD) || slotLen(S_METHOD) == 0 || slotLen(S_METHOD) > 32) return deny(403, "malformed request (:method)", 0, 0);
  const mp = slotPtr(S_METHOD);
  const ml = slotLen(S_METHOD);
  for (let i: usize = 0; i < ml; i++) {
    const ch = load<u8>(mp + i);
    if (ch < 0x41 || ch > 0x5a) return deny(403, "malformed request (:method)", 0, 0);
  }
  if (!has(S_PATH) || slotLen(S_PATH) == 0) return deny(403, "malformed request (:path)", 0, 0);
  const pp = slotPtr(S_PATH);
  let pl = slotLen(S_PATH);
  for (let i: usize = 0; i < pl; i++) if (load<u8>(pp + i) == 0x3f) {
    pl = i;
    break;
  }
  if (!has(S_AUTHORITY) || slotLen(S_AUTHORITY) == 0) return deny(403, "malformed request (:authority)", 0, 0);
  const ap = slotPtr(S_AUTHORITY);
  const al = hostOf(ap, slotLen(S_AUTHORITY));
  if (al == usize.MAX_VALUE || al == 0) return deny(403, "malformed request (:authority)", 0, 0);
  memory.copy(HDRS, SLOTS + (<usize>S_CTX << 3), 32);
  setRequest(mp, ml, pp, pl, ap, al, nowSec, mode);
  const d = decide();
  if (d < 0) {
    if (encodeError == "ill-formed UTF-8") return deny(403, "malformed request (ill-formed UTF-8)", 0, 0);
    // the encoder's reason is a static ASCII string: pass its bytes as the detail
    const why = encodeError;
    const wl = <usize>why.length;
    const wp = scratchAlloc(wl + 1);
    for (let i: usize = 0; i < wl; i++) store<u8>(wp + i, <u8>why.charCodeAt(<i32>i));
    return deny(503, "internal: ", wp, wl);
  }
  const t1 = nowNanos();
  recordMetric(mLatency, t1 > t0 ? (t1 - t0) / 1000 : 0);
  if (d == 0) {
    // the determining forbids, or none (default deny)
    const out = c.outPtr;
    const nr = load<i32>(out, 4);
    if (nr == 0) return deny(403, "denied: no policy permits the request", 0, 0);
    let total: usize = 0;
    for (let i = 0; i < nr; i++) total += <usize>load<u32>(c.polIds + (<usize>load<u32>(out + 12 + (<usize>i << 2)) << 3), 4) + 2;
    const ids = scratchAlloc(total + 1);
    let o: usize = 0;
    for (let i = 0; i < nr; i++) {
      const e = c.polIds + (<usize>load<u32>(out + 12 + (<usize>i << 2)) << 3);
      if (i > 0) {
        store<u8>(ids + o++, 0x2c);
        store<u8>(ids + o++, 0x20);
      }
      const l = <usize>load<u32>(e, 4);
      memory.copy(ids + o, <usize>load<u32>(e), l);
      o += l;
    }
    return deny(403, "denied: forbidden by ", ids, o);
  }
  if (c.flags & F_PEER_HEADER) replaceHeader(MAP_REQUEST_HEADERS, c.peerHeader, c.peerHeaderLen, peerP, peerL);
  incrementMetric(mAllowed, 1);
  return ACTION_CONTINUE;
}

function done(ctx: ContextRecord): bool {
  return true;
}

onStart(start);
onVmStart(vmStart);
onConfigure(configure);
onRequestHeaders(requestHeaders);
onDone(done);
