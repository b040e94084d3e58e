// The proxy-wasm ABI v0.2.1 entry points (exported by the module under exactly the spec's names).
// Each resets the scratch region, keeps the context table, and dispatches to the handlers a filter
// registers with the on*() setters below (plain function references: no managed allocation).
import { scratchAlloc, scratchReset, regionReady } from "./memory";
import { contextCreate, contextDelete, contextGet, ContextRecord, KIND_ROOT } from "./context";
import { ACTION_CONTINUE } from "./hostcalls";
// AssemblyScript's abort hook (asconfig "use": abort=filters/proxy-wasm/abort/trap) lives here
import { trap } from "./abort";

function noStart(): void {}
function yes(rootId: u32, size: usize): bool {
  return true;
}
function cont(ctx: ContextRecord, n: usize, eos: bool): u32 {
  return ACTION_CONTINUE;
}
function nothing(ctx: ContextRecord): void {}
function doneYes(ctx: ContextRecord): bool {
  return true;
}
function noCallResponse(ctx: ContextRecord, token: u32, headers: u32, bodySize: usize, trailers: u32): void {}

let hStart: () => void = noStart;
let hVmStart: (rootId: u32, size: usize) => bool = yes;
let hConfigure: (rootId: u32, size: usize) => bool = yes;
let hRequestHeaders: (ctx: ContextRecord, headers: usize, eos: bool) => u32 = cont;
let hRequestBody: (ctx: ContextRecord, size: usize, eos: bool) => u32 = cont;
let hResponseHeaders: (ctx: ContextRecord, headers: usize, eos: bool) => u32 = cont;
let hNewConnection: (ctx: ContextRecord, unused: usize, eos: bool) => u32 = cont;
let hDone: (ctx: ContextRecord) => bool = doneYes;
let hLog: (ctx: ContextRecord) => void = nothing;
let hDelete: (ctx: ContextRecord) => void = nothing;
let hTick: (ctx: ContextRecord) => void = nothing;
let hHttpCallResponse: (ctx: ContextRecord, token: u32, headers: u32, bodySize: usize, trailers: u32) => void =
  noCallResponse;
let started = false;

/** Runs once, before any other handler (set up memory, contexts, metrics). */
export function onStart(f: () => void): void {
  hStart = f;
}
export function onVmStart(f: (rootId: u32, size: usize) => bool): void {
  hVmStart = f;
}
export function onConfigure(f: (rootId: u32, size: usize) => bool): void {
  hConfigure = f;
}
export function onRequestHeaders(f: (ctx: ContextRecord, headers: usize, eos: bool) => u32): void {
  hRequestHeaders = f;
}
export function onRequestBody(f: (ctx: ContextRecord, size: usize, eos: bool) => u32): void {
  hRequestBody = f;
}
export function onResponseHeaders(f: (ctx: ContextRecord, headers: usize, eos: bool) => u32): void {
  hResponseHeaders = f;
}
export function onNewConnection(f: (ctx: ContextRecord, unused: usize, eos: bool) => u32): void {
  hNewConnection = f;
}
export function onDone(f: (ctx: ContextRecord) => bool): void {
  hDone = f;
}
export function onLog(f: (ctx: ContextRecord) => void): void {
  hLog = f;
}
export function onDelete(f: (ctx: ContextRecord) => void): void {
  hDelete = f;
}
export function onTick(f: (ctx: ContextRecord) => void): void {
  hTick = f;
}
export function onHttpCallResponse(
  f: (ctx: ContextRecord, token: u32, headers: u32, bodySize: usize, trailers: u32) => void,
): void {
  hHttpCallResponse = f;
}

function enter(): void {
  if (!started) {
    started = true;
    hStart();
    if (!regionReady()) unreachable();
  }
  scratchReset();
}

/** A record for `id`; a context the host never announced is an ABI violation (trap: fail closed). */
function known(id: u32): ContextRecord {
  const r = contextGet(id);
  if (r === null) unreachable();
  return changetype<ContextRecord>(r);
}

export function proxy_abi_version_0_2_1(): void {}

export function proxy_on_memory_allocate(size: usize): usize {
  if (!started) {
    started = true;
    hStart();
  }
  return scratchAlloc(size == 0 ? 1 : size);
}

export function proxy_on_context_create(contextId: u32, parentContextId: u32): void {
  enter();
  if (contextCreate(contextId, parentContextId) === null) unreachable();
}

export function proxy_on_vm_start(rootContextId: u32, vmConfigurationSize: usize): bool {
  enter();
  return hVmStart(rootContextId, vmConfigurationSize);
}

export function proxy_on_configure(rootContextId: u32, pluginConfigurationSize: usize): bool {
  enter();
  return hConfigure(rootContextId, pluginConfigurationSize);
}

export function proxy_on_tick(rootContextId: u32): void {
  enter();
  hTick(known(rootContextId));
}

export function proxy_on_new_connection(contextId: u32): u32 {
  enter();
  return hNewConnection(known(contextId), 0, false);
}

export function proxy_on_request_headers(contextId: u32, numHeaders: usize, endOfStream: bool): u32 {
  enter();
  return hRequestHeaders(known(contextId), numHeaders, endOfStream);
}

export function proxy_on_request_body(contextId: u32, bodySize: usize, endOfStream: bool): u32 {
  enter();
  return hRequestBody(known(contextId), bodySize, endOfStream);
}

export function proxy_on_response_headers(contextId: u32, numHeaders: usize, endOfStream: bool): u32 {
  enter();
  return hResponseHeaders(known(contextId), numHeaders, endOfStream);
}

export function proxy_on_http_call_response(
  contextId: u32,
  token: u32,
  numHeaders: u32,
  bodySize: usize,
  numTrailers: u32,
): void {
  enter();
  hHttpCallResponse(known(contextId), token, numHeaders, bodySize, numTrailers);
}

export function proxy_on_done(contextId: u32): bool {
  enter();
  const r = contextGet(contextId);
  return r === null ? true : hDone(changetype<ContextRecord>(r));
}

export function proxy_on_log(contextId: u32): void {
  enter();
  const r = contextGet(contextId);
  if (r !== null) hLog(changetype<ContextRecord>(r));
}

export function proxy_on_delete(contextId: u32): void {
  enter();
  const r = contextGet(contextId);
  if (r !== null) {
    hDelete(changetype<ContextRecord>(r));
    contextDelete(contextId);
  }
}

export { KIND_ROOT };
