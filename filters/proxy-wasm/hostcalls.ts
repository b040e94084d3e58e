// proxy-wasm ABI v0.2.1 host functions (module "env"), declared exactly as the spec names them, and a
// thin typed layer over them. Raw linear memory only: results the host hands back (property values,
// header maps, buffers) land in memory the host obtained through proxy_on_memory_allocate, i.e. in the
// per-callback scratch region of ./memory.ts, and stay valid until the callback returns.
import { scratchAlloc } from "./memory";

// ---- spec enums (Types section of the v0.2.1 spec) ----

export const STATUS_OK: u32 = 0;
export const STATUS_NOT_FOUND: u32 = 1;
export const STATUS_BAD_ARGUMENT: u32 = 2;
export const STATUS_EMPTY: u32 = 7;

export const ACTION_CONTINUE: u32 = 0;
export const ACTION_PAUSE: u32 = 1;

export const LOG_TRACE: u32 = 0;
export const LOG_DEBUG: u32 = 1;
export const LOG_INFO: u32 = 2;
export const LOG_WARN: u32 = 3;
export const LOG_ERROR: u32 = 4;
export const LOG_CRITICAL: u32 = 5;

export const MAP_REQUEST_HEADERS: u32 = 0;
export const MAP_REQUEST_TRAILERS: u32 = 1;
export const MAP_RESPONSE_HEADERS: u32 = 2;
export const MAP_RESPONSE_TRAILERS: u32 = 3;
export const MAP_HTTP_CALL_RESPONSE_HEADERS: u32 = 6;

export const BUFFER_HTTP_REQUEST_BODY: u32 = 0;
export const BUFFER_HTTP_CALL_RESPONSE_BODY: u32 = 4;
export const BUFFER_VM_CONFIGURATION: u32 = 6;
export const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;

export const METRIC_COUNTER: u32 = 0;
export const METRIC_GAUGE: u32 = 1;
export const METRIC_HISTOGRAM: u32 = 2;

// ---- imports ----

@external("env", "proxy_log")
declare function proxy_log(level: u32, messagePtr: usize, messageSize: usize): u32;
@external("env", "proxy_get_log_level")
declare function proxy_get_log_level(returnLevelPtr: usize): u32;
@external("env", "proxy_get_current_time_nanoseconds")
declare function proxy_get_current_time_nanoseconds(returnTimePtr: usize): u32;
@external("env", "proxy_set_tick_period_milliseconds")
declare function proxy_set_tick_period_milliseconds(period: u32): u32;
@external("env", "proxy_get_property")
declare function proxy_get_property(pathPtr: usize, pathSize: usize, returnValuePtr: usize, returnValueSize: usize): u32;
@external("env", "proxy_get_header_map_pairs")
declare function proxy_get_header_map_pairs(mapType: u32, returnPtr: usize, returnSize: usize): u32;
@external("env", "proxy_get_header_map_value")
declare function proxy_get_header_map_value(mapType: u32, keyPtr: usize, keySize: usize, returnValuePtr: usize, returnValueSize: usize): u32;
@external("env", "proxy_add_header_map_value")
declare function proxy_add_header_map_value(mapType: u32, keyPtr: usize, keySize: usize, valuePtr: usize, valueSize: usize): u32;
@external("env", "proxy_replace_header_map_value")
declare function proxy_replace_header_map_value(mapType: u32, keyPtr: usize, keySize: usize, valuePtr: usize, valueSize: usize): u32;
@external("env", "proxy_remove_header_map_value")
declare function proxy_remove_header_map_value(mapType: u32, keyPtr: usize, keySize: usize): u32;
@external("env", "proxy_send_local_response")
declare function proxy_send_local_response(statusCode: u32, detailsPtr: usize, detailsSize: usize, bodyPtr: usize, bodySize: usize, headersPtr: usize, headersSize: usize, grpcStatus: i32): u32;
@external("env", "proxy_get_buffer_bytes")
declare function proxy_get_buffer_bytes(bufferType: u32, start: usize, maxSize: usize, returnPtr: usize, returnSize: usize): u32;
@external("env", "proxy_http_call")
declare function proxy_http_call(upstreamPtr: usize, upstreamSize: usize, headersPtr: usize, headersSize: usize, bodyPtr: usize, bodySize: usize, trailersPtr: usize, trailersSize: usize, timeoutMs: u32, returnTokenPtr: usize): u32;
@external("env", "proxy_define_metric")
declare function proxy_define_metric(metricType: u32, namePtr: usize, nameSize: usize, returnIdPtr: usize): u32;
@external("env", "proxy_increment_metric")
declare function proxy_increment_metric(metricId: u32, offset: i64): u32;
@external("env", "proxy_record_metric")
declare function proxy_record_metric(metricId: u32, value: u64): u32;
@external("env", "proxy_get_shared_data")
declare function proxy_get_shared_data(keyPtr: usize, keySize: usize, returnValuePtr: usize, returnValueSize: usize, returnCasPtr: usize): u32;
@external("env", "proxy_set_shared_data")
declare function proxy_set_shared_data(keyPtr: usize, keySize: usize, valuePtr: usize, valueSize: usize, cas: u32): u32;

// ---- results of the typed layer ----

/** Out-parameters of the host calls (two words + a u64), in static memory. */
const RET: usize = memory.data(16, 8);

/** The last value returned by getProperty / getHeader / getBuffer / getHeaderPairs / getSharedData. */
export let resultPtr: usize = 0;
export let resultLen: usize = 0;

function takeResult(status: u32): u32 {
  if (status == STATUS_OK) {
    resultPtr = <usize>load<u32>(RET);
    resultLen = <usize>load<u32>(RET, 4);
  } else {
    resultPtr = 0;
    resultLen = 0;
  }
  return status;
}

// ---- typed wrappers ----

export function log(level: u32, ptr: usize, len: usize): void {
  proxy_log(level, ptr, len);
}

/** Log a static (ASCII) string literal followed by `len` bytes at `ptr`. */
export function logWith(level: u32, literal: string, ptr: usize, len: usize): void {
  const n = <usize>literal.length;
  const buf = scratchAlloc(n + len);
  for (let i: usize = 0; i < n; i++) store<u8>(buf + i, <u8>literal.charCodeAt(<i32>i));
  memory.copy(buf + n, ptr, len);
  proxy_log(level, buf, n + len);
}

/** Current wall-clock time in nanoseconds (0 if the host cannot tell). */
export function nowNanos(): u64 {
  store<u64>(RET, 0, 8);
  if (proxy_get_current_time_nanoseconds(RET + 8) != STATUS_OK) return 0;
  return load<u64>(RET, 8);
}

export function setTickPeriod(ms: u32): u32 {
  return proxy_set_tick_period_milliseconds(ms);
}

export function logLevel(): u32 {
  if (proxy_get_log_level(RET) != STATUS_OK) return LOG_INFO;
  return load<u32>(RET);
}

/** A property by its path (segments joined with NUL, as the ABI wants); result in resultPtr/resultLen. */
export function getProperty(pathPtr: usize, pathLen: usize): u32 {
  return takeResult(proxy_get_property(pathPtr, pathLen, RET, RET + 4));
}

/** One header of `mapType`; result in resultPtr/resultLen. */
export function getHeader(mapType: u32, keyPtr: usize, keyLen: usize): u32 {
  return takeResult(proxy_get_header_map_value(mapType, keyPtr, keyLen, RET, RET + 4));
}

/** The serialized header map (see headerCount/headerAt below); result in resultPtr/resultLen. */
export function getHeaderPairs(mapType: u32): u32 {
  return takeResult(proxy_get_header_map_pairs(mapType, RET, RET + 4));
}

export function addHeader(mapType: u32, keyPtr: usize, keyLen: usize, valuePtr: usize, valueLen: usize): u32 {
  return proxy_add_header_map_value(mapType, keyPtr, keyLen, valuePtr, valueLen);
}

export function replaceHeader(mapType: u32, keyPtr: usize, keyLen: usize, valuePtr: usize, valueLen: usize): u32 {
  return proxy_replace_header_map_value(mapType, keyPtr, keyLen, valuePtr, valueLen);
}

export function removeHeader(mapType: u32, keyPtr: usize, keyLen: usize): u32 {
  return proxy_remove_header_map_value(mapType, keyPtr, keyLen);
}

/** Bytes [start, start+max) of a buffer; result in resultPtr/resultLen. */
export function getBuffer(bufferType: u32, start: usize, max: usize): u32 {
  return takeResult(proxy_get_buffer_bytes(bufferType, start, max, RET, RET + 4));
}

export function sendLocalResponse(
  status: u32,
  detailsPtr: usize,
  detailsLen: usize,
  bodyPtr: usize,
  bodyLen: usize,
  headersPtr: usize,
  headersLen: usize,
): u32 {
  return proxy_send_local_response(status, detailsPtr, detailsLen, bodyPtr, bodyLen, headersPtr, headersLen, -1);
}

/** Dispatch an HTTP call; returns the token, or -1 with the status in lastStatus. */
export let lastStatus: u32 = 0;
export function httpCall(
  upstreamPtr: usize,
  upstreamLen: usize,
  headersPtr: usize,
  headersLen: usize,
  bodyPtr: usize,
  bodyLen: usize,
  timeoutMs: u32,
): i64 {
  lastStatus = proxy_http_call(upstreamPtr, upstreamLen, headersPtr, headersLen, bodyPtr, bodyLen, 0, 0, timeoutMs, RET);
  return lastStatus == STATUS_OK ? <i64>load<u32>(RET) : -1;
}

/** Define a metric; its id, or u32.MAX_VALUE if the host refused. */
export function defineMetric(metricType: u32, name: string): u32 {
  const n = <usize>name.length;
  const buf = scratchAlloc(n);
  for (let i: usize = 0; i < n; i++) store<u8>(buf + i, <u8>name.charCodeAt(<i32>i));
  if (proxy_define_metric(metricType, buf, n, RET) != STATUS_OK) return u32.MAX_VALUE;
  return load<u32>(RET);
}

export function incrementMetric(id: u32, by: i64): void {
  if (id != u32.MAX_VALUE) proxy_increment_metric(id, by);
}

export function recordMetric(id: u32, value: u64): void {
  if (id != u32.MAX_VALUE) proxy_record_metric(id, value);
}

/** Shared data by key; result in resultPtr/resultLen, the CAS in sharedCas. */
export let sharedCas: u32 = 0;
export function getSharedData(keyPtr: usize, keyLen: usize): u32 {
  const st = takeResult(proxy_get_shared_data(keyPtr, keyLen, RET, RET + 4, RET + 8));
  sharedCas = st == STATUS_OK ? load<u32>(RET, 8) : 0;
  return st;
}

export function setSharedData(keyPtr: usize, keyLen: usize, valuePtr: usize, valueLen: usize, cas: u32): u32 {
  return proxy_set_shared_data(keyPtr, keyLen, valuePtr, valueLen, cas);
}

// ---- header map serialization (spec: "Header maps") ----
// [u32 count] then count × [u32 keyLen, u32 valueLen], then each key and value followed by a NUL byte.

/** Number of pairs in a serialized map, or -1 when it is malformed (sizes beyond the buffer). */
export function headerCount(buf: usize, len: usize): i32 {
  if (len < 4) return len == 0 ? 0 : -1;
  const n = load<u32>(buf);
  if (<u64>n * 8 + 4 > <u64>len) return -1;
  let need: u64 = 4 + <u64>n * 8;
  for (let i: u32 = 0; i < n; i++) {
    need += <u64>load<u32>(buf + 4 + (<usize>i << 3)) + 1 + <u64>load<u32>(buf + 8 + (<usize>i << 3)) + 1;
    if (need > <u64>len) return -1;
  }
  return <i32>n;
}

/** Offsets of pair i (call after headerCount validated the buffer); fills pairKey/pairKeyLen/pairValue/pairValueLen. */
export let pairKey: usize = 0;
export let pairKeyLen: usize = 0;
export let pairValue: usize = 0;
export let pairValueLen: usize = 0;
let iterBuf: usize = 0;
let iterNext: usize = 0;
let iterIdx: u32 = 0;

export function headerIterStart(buf: usize): void {
  iterBuf = buf;
  iterIdx = 0;
  iterNext = buf + 4 + (<usize>load<u32>(buf) << 3);
}

export function headerIterNext(): void {
  pairKeyLen = <usize>load<u32>(iterBuf + 4 + (<usize>iterIdx << 3));
  pairValueLen = <usize>load<u32>(iterBuf + 8 + (<usize>iterIdx << 3));
  pairKey = iterNext;
  pairValue = iterNext + pairKeyLen + 1;
  iterNext = pairValue + pairValueLen + 1;
  iterIdx++;
}

/** Serialize pairs for proxy_send_local_response / proxy_http_call: begin, add each pair, end. */
let serBuf: usize = 0;
let serCount: u32 = 0;
let serCap: u32 = 0;
let serData: usize = 0;
let serDataLen: usize = 0;

export function headersBegin(maxPairs: u32, maxBytes: usize): void {
  serCap = maxPairs;
  serCount = 0;
  serBuf = scratchAlloc(4 + (<usize>maxPairs << 3) + maxBytes + (<usize>maxPairs << 1));
  serData = scratchAlloc(maxBytes + (<usize>maxPairs << 1));
  serDataLen = 0;
}

export function headersAdd(keyPtr: usize, keyLen: usize, valuePtr: usize, valueLen: usize): void {
  if (serCount >= serCap) unreachable();
  store<u32>(serBuf + 4 + (<usize>serCount << 3), <u32>keyLen);
  store<u32>(serBuf + 8 + (<usize>serCount << 3), <u32>valueLen);
  memory.copy(serData + serDataLen, keyPtr, keyLen);
  store<u8>(serData + serDataLen + keyLen, 0);
  serDataLen += keyLen + 1;
  memory.copy(serData + serDataLen, valuePtr, valueLen);
  store<u8>(serData + serDataLen + valueLen, 0);
  serDataLen += valueLen + 1;
  serCount++;
}

/** Finish the map; returns its length (the map starts at headersPtr()). */
export function headersEnd(): usize {
  store<u32>(serBuf, serCount);
  const head: usize = 4 + (<usize>serCount << 3);
  memory.copy(serBuf + head, serData, serDataLen);
  return head + serDataLen;
}

export function headersPtr(): usize {
  return serBuf;
}
