/**
 * A proxy-wasm ABI v0.2.1 host for Node: runs the same `.wasm` HTTP filter Envoy loads (QHx tunnels,
 * edge runtimes, tests). Exact to the spec (github.com/proxy-wasm/spec, abi-versions/v0.2.1):
 *
 * - memory ownership: buffers the host returns are allocated in the guest through
 *   `proxy_on_memory_allocate` (or the deprecated `malloc`), filled, and their pointer/size written into the
 *   guest's out-params; the guest frees them. Empty results are written as (0, 0) without allocating.
 * - every pointer/length the guest passes is bounds-checked against its linear memory before use
 *   (INVALID_MEMORY_ACCESS); no guest input can make a host function throw.
 * - status codes, map/buffer/stream/metric types and log levels are the spec's numbers (./abi.ts).
 * - a trap (or any exception) in a callback marks the plugin failed (its VM is dead, as in Envoy) and,
 *   unless `failOpen`, answers the stream with a local 503 "wasm_fail_stream"; every later stream of the
 *   failed plugin gets the same 503.
 *
 * Semantics where the spec leaves a choice follow Envoy / proxy-wasm-cpp-host; docs/proxy-wasm.md lists
 * them.
 */
import { Buffer } from "node:buffer";
import { randomFillSync } from "node:crypto";
import { QhxError } from "../../core/errors.ts";
import {
  ABI_VERSION_EXPORT,
  BufferType,
  ClockId,
  ENV_HOST_FUNCTIONS,
  Errno,
  Fd,
  LOG_LEVELS,
  MAX_BUFFER_TYPE,
  MAX_MAP_TYPE,
  MAX_RANDOM_GET_BYTES,
  MAX_STREAM_TYPE,
  METRIC_TYPES,
  MapType,
  Status,
  StreamType,
  WASI_EXTRA_FUNCTIONS,
  WASI_SPEC_FUNCTIONS,
  type LogLevel,
  type MetricType,
} from "./abi.ts";
import {
  HeaderMapParseError,
  HeaderMapScratch,
  encodeInt64Property,
  parseHeaderMap,
  serializeHeaderMapInto,
  toBytes,
  utf8,
  parseHeaderFields,
  utf8Range,
  type HeaderPairs,
} from "./serialization.ts";

export type Bytes = Uint8Array | string;
export type { LogLevel, MetricType } from "./abi.ts";

export interface HttpCallResponse {
  headers: [string, string][];
  body: Uint8Array;
  trailers: [string, string][];
}

export interface ProxyWasmPluginOptions {
  /** Module bytes. */
  wasm: Uint8Array;
  /** Root id (Envoy `root_id`); default "". */
  rootId?: string;
  /** `plugin_name` property (Envoy `config.name`); default the root id. */
  name?: string;
  /** VM id (Envoy `vm_config.vm_id`): plugins with the same VM id share shared data and queues; default "". */
  vmId?: string;
  /** The `proxy_on_vm_start` buffer (VM_CONFIGURATION). */
  vmConfiguration?: Bytes;
  /** The `proxy_on_configure` buffer (PLUGIN_CONFIGURATION). */
  pluginConfiguration: Bytes;
  /** Plugin-level properties; a key is a NUL-joined path ("node\0id"), or a dotted one ("node.id"). */
  properties?: Record<string, Bytes>;
  /** Milliseconds since the epoch; drives proxy_get_current_time_nanoseconds and the REALTIME clock. */
  clock?: { now(): number };
  /** Where guest logs (proxy_log, fd_write) and host diagnostics go; default discarded. */
  log?: (level: LogLevel, message: string) => void;
  /** The level proxy_get_log_level reports; messages below it are dropped. Default "trace". */
  logLevel?: LogLevel;
  /** Carries proxy_http_call; without it every upstream is unknown (BAD_ARGUMENT). */
  httpCall?: (
    upstream: string,
    headers: [string, string][],
    body: Uint8Array,
    trailers: [string, string][],
    timeoutMs: number,
  ) => Promise<HttpCallResponse>;
  /** Functions for proxy_call_foreign_function, by name; absent names answer NOT_FOUND. */
  foreignFunctions?: Record<string, (args: Uint8Array) => Uint8Array>;
  /** Envoy's fail_open; default false = fail closed. */
  failOpen?: boolean;
  /**
   * Imports outside the ABI (module → name → function). By default a module importing anything the spec
   * does not define is refused, as Envoy refuses it.
   */
  extraImports?: Record<string, Record<string, (...args: never[]) => unknown>>;
  /** Called with the guest's raw exports once instantiated, before any callback runs (embedders, tests). */
  onInstantiated?: (exports: Readonly<Record<string, unknown>>) => void;
}

export type FilterAction = "continue" | "pause";

export interface LocalResponse {
  status: number;
  details: string;
  body: Uint8Array;
  headers: [string, string][];
  /** gRPC status, or -1 when the guest passed none (0xFFFFFFFF). */
  grpcStatus: number;
}

export interface MetricValue {
  type: MetricType;
  value: bigint;
  samples?: bigint[];
}

export interface HttpStream {
  readonly contextId: number;
  onRequestHeaders(headers: [string, string][], endOfStream: boolean): FilterAction;
  onRequestBody(body: Uint8Array, endOfStream: boolean): FilterAction;
  onRequestTrailers(trailers: [string, string][]): FilterAction;
  onResponseHeaders(headers: [string, string][], endOfStream: boolean): FilterAction;
  onResponseBody(body: Uint8Array, endOfStream: boolean): FilterAction;
  onResponseTrailers(trailers: [string, string][]): FilterAction;
  /** As the filter left them. */
  readonly requestHeaders: [string, string][];
  readonly responseHeaders: [string, string][];
  readonly requestTrailers: [string, string][];
  readonly responseTrailers: [string, string][];
  /** The buffered request / response body as the filter left it. */
  readonly requestBody: Uint8Array;
  readonly responseBody: Uint8Array;
  /** Set by proxy_send_local_response (or by the host's fail-closed 503). */
  readonly localResponse: LocalResponse | undefined;
  /** True while the filter holds the request / response (it returned PAUSE and has not continued). */
  readonly requestPaused: boolean;
  readonly responsePaused: boolean;
  /** Stream types the filter closed with proxy_close_stream. */
  readonly closed: ReadonlySet<number>;
  /** Set properties (proxy_set_property) of this stream, NUL-joined path → value. */
  readonly properties: ReadonlyMap<string, Uint8Array>;
  /** proxy_on_done, then (when it answers true, or later at proxy_done) proxy_on_log and proxy_on_delete. */
  done(): void;
  /** True once proxy_on_delete ran (or the stream ended without a live VM). */
  readonly deleted: boolean;
}

// ----- the WebAssembly global, typed for what we use (the project's tsconfig has no DOM lib) -----
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmModuleImport {
  module: string;
  name: string;
  kind: string;
}
interface WasmApi {
  Module: {
    new (bytes: Uint8Array): object;
    imports(m: object): WasmModuleImport[];
    exports(m: object): { name: string; kind: string }[];
  };
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { exports: unknown };
}
const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

type GuestFn = (...args: (number | bigint)[]) => number | undefined;

// ----- shared data and queues: per VM id, across plugins in this process (as Envoy shares them per vm_id) -----
interface SharedStore {
  data: Map<string, { value: Uint8Array; cas: number }>;
  queues: Map<string, number>;
}
const sharedStores = new Map<string, SharedStore>();
const queuesById = new Map<number, { items: Uint8Array[]; owner: ProxyWasmPlugin; contextId: number }>();
let nextCas = 1;
let nextQueueId = 1;

function store(vmId: string): SharedStore {
  let s = sharedStores.get(vmId);
  if (!s) {
    s = { data: new Map(), queues: new Map() };
    sharedStores.set(vmId, s);
  }
  return s;
}

/** Envoy request attributes derived from request headers when the stream does not set them. */
const DERIVED_REQUEST_PROPERTIES: Record<string, (h: HeaderPairs) => string | undefined> = {
  "request\0path": (h) => first(h, ":path"),
  "request\0url_path": (h) => first(h, ":path")?.split("?")[0],
  "request\0query": (h) => {
    const p = first(h, ":path");
    const i = p?.indexOf("?") ?? -1;
    return p !== undefined && i >= 0 ? p.slice(i + 1) : undefined;
  },
  "request\0host": (h) => first(h, ":authority"),
  "request\0scheme": (h) => first(h, ":scheme"),
  "request\0method": (h) => first(h, ":method"),
  "request\0id": (h) => first(h, "x-request-id"),
  "request\0referer": (h) => first(h, "referer"),
  "request\0useragent": (h) => first(h, "user-agent"),
};

function first(h: HeaderPairs, key: string): string | undefined {
  for (const [k, v] of h) if (k === key) return v;
  return undefined;
}

/** Normalize a property key given by the embedder: NUL-joined as is, else dotted → NUL-joined. */
function propertyKey(k: string): string {
  return k.includes("\0") ? k : k.split(".").join("\0");
}

const FAIL_STREAM: Omit<LocalResponse, "body"> = {
  status: 503,
  details: "wasm_fail_stream",
  headers: [],
  grpcStatus: 14, // UNAVAILABLE, as Envoy's fail-closed reply
};

/** A header value/key the host refuses to carry (NUL, CR, LF), as Envoy validates header characters. */
function invalidHeaderText(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0 || c === 0x0a || c === 0x0d) return true;
  }
  return false;
}

class Stream implements HttpStream {
  readonly contextId: number;
  readonly plugin: ProxyWasmPlugin;
  /**
   * Property values as [path, value, path, value, …] (a stream has a handful: a flat array costs one
   * small allocation, a Map a hash table); embedder strings stay strings until the guest reads them.
   */
  props: Bytes[];
  reqHeaders: HeaderPairs | undefined;
  reqTrailers: HeaderPairs | undefined;
  respHeaders: HeaderPairs | undefined;
  respTrailers: HeaderPairs | undefined;
  reqBody: Uint8Array | undefined;
  respBody: Uint8Array | undefined;
  local: LocalResponse | undefined;
  reqPaused = false;
  respPaused = false;
  closedTypes: Set<number> | undefined; // made on the first proxy_close_stream
  /**
   * The last header map serialized for this stream (one slot: filters read one map at a time): its map
   * type, the map, and from its second serialization on (unchanged) a copy of the bytes.
   */
  serType = -1;
  serOf: HeaderPairs | undefined;
  serBytes: Uint8Array | undefined;
  pendingDone = false;
  isDeleted = false;
  /** false when proxy_on_context_create never ran for it (the plugin had failed). */
  live: boolean;

  constructor(plugin: ProxyWasmPlugin, id: number, props: Bytes[], live: boolean) {
    this.plugin = plugin;
    this.contextId = id;
    this.props = props;
    this.live = live;
  }

  get requestHeaders(): [string, string][] {
    return (this.reqHeaders ?? []).map(([k, v]) => [k, v]);
  }
  get responseHeaders(): [string, string][] {
    return (this.respHeaders ?? []).map(([k, v]) => [k, v]);
  }
  get requestTrailers(): [string, string][] {
    return (this.reqTrailers ?? []).map(([k, v]) => [k, v]);
  }
  get responseTrailers(): [string, string][] {
    return (this.respTrailers ?? []).map(([k, v]) => [k, v]);
  }
  get requestBody(): Uint8Array {
    return this.reqBody ?? new Uint8Array(0);
  }
  get responseBody(): Uint8Array {
    return this.respBody ?? new Uint8Array(0);
  }
  get localResponse(): LocalResponse | undefined {
    return this.local;
  }
  get requestPaused(): boolean {
    return this.reqPaused;
  }
  get responsePaused(): boolean {
    return this.respPaused;
  }
  get closed(): ReadonlySet<number> {
    return this.closedTypes ?? NO_CLOSED;
  }
  get properties(): ReadonlyMap<string, Uint8Array> {
    const out = new Map<string, Uint8Array>();
    const p = this.props;
    for (let i = 0; i < p.length; i += 2) {
      const v = p[i + 1]!;
      out.set(p[i] as string, typeof v === "string" ? toBytes(v) : v);
    }
    return out;
  }
  get deleted(): boolean {
    return this.isDeleted;
  }

  onRequestHeaders(headers: [string, string][], endOfStream: boolean): FilterAction {
    this.reqHeaders = normalizeHeaders(headers);
    return this.plugin.streamCallback(
      this,
      "request",
      "proxy_on_request_headers",
      this.reqHeaders.length,
      endOfStream ? 1 : 0,
    );
  }
  onRequestBody(body: Uint8Array, endOfStream: boolean): FilterAction {
    // while the filter pauses the request, chunks are buffered and body_size is the total
    this.reqBody = this.reqPaused && this.reqBody ? concat(this.reqBody, body) : body.slice();
    return this.plugin.streamCallback(
      this,
      "request",
      "proxy_on_request_body",
      this.reqBody.length,
      endOfStream ? 1 : 0,
    );
  }
  onRequestTrailers(trailers: [string, string][]): FilterAction {
    this.reqTrailers = normalizeHeaders(trailers);
    return this.plugin.streamCallback(
      this,
      "request",
      "proxy_on_request_trailers",
      this.reqTrailers.length,
      0,
    );
  }
  onResponseHeaders(headers: [string, string][], endOfStream: boolean): FilterAction {
    this.respHeaders = normalizeHeaders(headers);
    return this.plugin.streamCallback(
      this,
      "response",
      "proxy_on_response_headers",
      this.respHeaders.length,
      endOfStream ? 1 : 0,
    );
  }
  onResponseBody(body: Uint8Array, endOfStream: boolean): FilterAction {
    this.respBody = this.respPaused && this.respBody ? concat(this.respBody, body) : body.slice();
    return this.plugin.streamCallback(
      this,
      "response",
      "proxy_on_response_body",
      this.respBody.length,
      endOfStream ? 1 : 0,
    );
  }
  onResponseTrailers(trailers: [string, string][]): FilterAction {
    this.respTrailers = normalizeHeaders(trailers);
    return this.plugin.streamCallback(
      this,
      "response",
      "proxy_on_response_trailers",
      this.respTrailers.length,
      0,
    );
  }
  done(): void {
    this.plugin.streamDone(this);
  }
}

/** The value of `path` in a stream's [path, value, …] list. */
function propGet(props: Bytes[], path: string): Bytes | undefined {
  for (let i = 0; i < props.length; i += 2) if (props[i] === path) return props[i + 1];
  return undefined;
}

/** Set `path` in a stream's [path, value, …] list (replacing its value, as Map#set). */
function propSet(props: Bytes[], path: string, v: Bytes): void {
  for (let i = 0; i < props.length; i += 2) {
    if (props[i] === path) {
      props[i + 1] = v;
      return;
    }
  }
  props.push(path, v);
}

/**
 * Live streams by context id: open addressing (linear probing, backward-shift deletion) in arrays that
 * only grow. A Map would do, but V8 shrinks a Map's table each time it empties: with streams coming and
 * going one at a time, as through a proxy, that is a new hash table per stream.
 */
class StreamTable {
  private ids: number[] = new Array<number>(16).fill(0); // 0: empty (stream ids start at 2)
  private vals: (Stream | undefined)[] = new Array<Stream | undefined>(16).fill(undefined);
  private mask = 15;
  private count = 0;

  get(id: number): Stream | undefined {
    const ids = this.ids;
    let i = id & this.mask;
    for (;;) {
      const k = ids[i]!;
      if (k === id) return this.vals[i];
      if (k === 0) return undefined;
      i = (i + 1) & this.mask;
    }
  }

  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  set(id: number, s: Stream): void {
    if (id === 0) throw new Error("stream id 0");
    if (2 * (this.count + 1) > this.ids.length) this.grow();
    let i = id & this.mask;
    for (;;) {
      const k = this.ids[i]!;
      if (k === id) {
        this.vals[i] = s;
        return;
      }
      if (k === 0) break;
      i = (i + 1) & this.mask;
    }
    this.ids[i] = id;
    this.vals[i] = s;
    this.count++;
  }

  delete(id: number): void {
    const ids = this.ids;
    const mask = this.mask;
    let i = id & mask;
    for (;;) {
      const k = ids[i]!;
      if (k === 0) return;
      if (k === id) break;
      i = (i + 1) & mask;
    }
    // backward shift: move later entries of the probe run into the hole unless their home lies in (hole, j]
    let hole = i;
    let j = (i + 1) & mask;
    for (;;) {
      const k = ids[j]!;
      if (k === 0) break;
      if (((j - (k & mask)) & mask) >= ((j - hole) & mask)) {
        ids[hole] = k;
        this.vals[hole] = this.vals[j];
        hole = j;
      }
      j = (j + 1) & mask;
    }
    ids[hole] = 0;
    this.vals[hole] = undefined;
    this.count--;
  }

  private grow(): void {
    const oldIds = this.ids;
    const oldVals = this.vals;
    const n = oldIds.length * 2;
    this.ids = new Array<number>(n).fill(0);
    this.vals = new Array<Stream | undefined>(n).fill(undefined);
    this.mask = n - 1;
    this.count = 0;
    for (let i = 0; i < oldIds.length; i++) if (oldIds[i] !== 0) this.set(oldIds[i]!, oldVals[i]!);
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Copy src[from, from+len) into dst at `at`: short runs byte by byte (no view objects), long ones natively. */
function copyBytes(src: Uint8Array, from: number, len: number, dst: Uint8Array, at: number): void {
  if (len <= 64) for (let i = 0; i < len; i++) dst[at + i] = src[from + i]!;
  else dst.set(src.subarray(from, from + len), at);
}

const NO_CLOSED: ReadonlySet<number> = new Set<number>();

/** A histogram keeps at least its last this many samples (and at most twice as many). */
export const HISTOGRAM_SAMPLES = 10_000;

/** True when `k` needs lower-casing (an upper-case ASCII letter or any non-ASCII character). */
function hasUpper(k: string): boolean {
  for (let i = 0; i < k.length; i++) {
    const c = k.charCodeAt(i);
    if ((c >= 0x41 && c <= 0x5a) || c >= 0x80) return true;
  }
  return false;
}

/**
 * Header names are case-insensitive: the host keeps them lower-cased, as Envoy does. The host owns the
 * returned array (it pushes, splices and replaces whole pairs, never writes into a pair), so pairs whose
 * name is already lower-case are shared with the caller's array, not copied.
 */
function normalizeHeaders(h: readonly (readonly [string, string])[]): HeaderPairs {
  const n = h.length;
  const out = new Array<[string, string]>(n);
  for (let i = 0; i < n; i++) {
    const p = h[i]!;
    out[i] = hasUpper(p[0]) ? [p[0].toLowerCase(), p[1]] : (p as [string, string]);
  }
  return out;
}

type Phase =
  | "none"
  | "vm_start"
  | "configure"
  | "http_call_response"
  | "stream"
  | "tick"
  | "queue_ready"
  | "foreign"
  | "lifecycle";

/** A guest trap or exception while the host was calling into the VM. */
class GuestFailure extends Error {}

export class ProxyWasmPlugin {
  readonly rootId: string;
  readonly rootContextId = 1;
  readonly vmId: string;
  readonly metrics = new Map<string, MetricValue>();
  private readonly metricIds: string[] = []; // id - 1 -> name
  private readonly metricList: MetricValue[] = []; // id - 1 -> metric
  private readonly opts: ProxyWasmPluginOptions;
  private readonly props = new Map<string, Uint8Array>();
  private readonly exp: Record<string, GuestFn>;
  private readonly memory: WasmMemory;
  // the hot callbacks, looked up once
  private readonly fAlloc: GuestFn | undefined;
  private readonly fContextCreate: GuestFn | undefined;
  private readonly fDone: GuestFn | undefined;
  private readonly fLog: GuestFn | undefined;
  private readonly fDelete: GuestFn | undefined;
  /** Reused for serializing header maps (see serializedMap). */
  private readonly scratch = new HeaderMapScratch();
  private scratchBusy = false;
  /**
   * UTF-8 bytes of embedder-given property strings, by string (bounded): a connection's properties
   * (the peer's URI SAN, addresses) recur on every stream of the connection and are encoded once, as
   * Envoy holds them as bytes.
   */
  private readonly propBytes = new Map<string, Uint8Array>();
  /** The stream of the running stream callback (a hint for effectiveStream; checked on every use). */
  private current: Stream | undefined;
  private readonly clockNow: () => number;
  private readonly logLevelIndex: number;
  private pluginConfiguration: Uint8Array;
  private readonly vmConfiguration: Uint8Array;
  private readonly streams = new StreamTable();
  private nextContextId = 2;
  private effective: number; // effective context id
  private phase: Phase = "none";
  private tickPeriod = 0;
  private isFailed = false;
  private failure: unknown;
  private isClosed = false;
  private nextCallToken = 1;
  private readonly pendingCalls = new Set<Promise<void>>();
  private httpCallResponse: (HttpCallResponse & { status: number; message: string }) | undefined;
  private foreignArgs: Uint8Array | undefined;

  /** Instantiate, create the root context, run proxy_on_vm_start and proxy_on_configure. */
  static create(opts: ProxyWasmPluginOptions): ProxyWasmPlugin {
    return new ProxyWasmPlugin(opts);
  }

  private constructor(opts: ProxyWasmPluginOptions) {
    this.opts = opts;
    this.rootId = opts.rootId ?? "";
    this.vmId = opts.vmId ?? "";
    // default: wall-clock time with sub-millisecond precision (filters time their own work with it)
    this.clockNow = opts.clock ? () => opts.clock!.now() : () => performance.timeOrigin + performance.now();
    this.logLevelIndex = LOG_LEVELS.indexOf(opts.logLevel ?? "trace");
    this.pluginConfiguration = toBytes(opts.pluginConfiguration).slice();
    this.vmConfiguration = toBytes(opts.vmConfiguration ?? "").slice();
    for (const [k, v] of Object.entries(opts.properties ?? {})) this.props.set(propertyKey(k), toBytes(v));
    this.effective = this.rootContextId;

    let module: object;
    try {
      module = new WA.Module(opts.wasm);
    } catch (e) {
      throw new QhxError("QHX_PROXY_WASM_INVALID_MODULE", `not a valid Wasm module: ${(e as Error).message}`);
    }
    const exportNames = new Set(WA.Module.exports(module).map((e) => e.name));
    if (!exportNames.has(ABI_VERSION_EXPORT)) {
      throw new QhxError(
        "QHX_PROXY_WASM_ABI",
        `module does not export ${ABI_VERSION_EXPORT}: not a proxy-wasm ABI v0.2.1 module`,
      );
    }
    const imports = this.buildImports();
    const missing = WA.Module.imports(module).filter(
      (i) =>
        i.kind !== "function" ||
        !Object.hasOwn(imports, i.module) ||
        !Object.hasOwn(imports[i.module]!, i.name) ||
        typeof imports[i.module]![i.name] !== "function",
    );
    if (missing.length > 0) {
      throw new QhxError(
        "QHX_PROXY_WASM_UNKNOWN_IMPORT",
        `module imports what the proxy-wasm ABI v0.2.1 does not define: ${missing
          .map((i) => `${i.module}.${i.name} (${i.kind})`)
          .join(", ")}`,
        { hint: "a filter may import only the spec's host functions (Envoy refuses others)" },
      );
    }
    let instance: { exports: unknown };
    try {
      instance = new WA.Instance(module, imports);
    } catch (e) {
      throw new QhxError("QHX_PROXY_WASM_INSTANTIATE", `instantiation failed: ${(e as Error).message}`);
    }
    this.exp = instance.exports as Record<string, GuestFn>;
    const mem = (instance.exports as Record<string, unknown>).memory as WasmMemory | undefined;
    if (!mem || !(mem.buffer instanceof ArrayBuffer)) {
      throw new QhxError("QHX_PROXY_WASM_ABI", "module does not export its linear memory as `memory`");
    }
    this.memory = mem;
    this.fAlloc = this.exp.proxy_on_memory_allocate ?? this.exp.malloc;
    this.fContextCreate = this.exp.proxy_on_context_create;
    this.fDone = this.exp.proxy_on_done;
    this.fLog = this.exp.proxy_on_log;
    this.fDelete = this.exp.proxy_on_delete;
    opts.onInstantiated?.(this.exp);

    try {
      this.guard("lifecycle", this.rootContextId, () => {
        // integration: _initialize (+ main) or _start
        if (this.exp._initialize) {
          this.exp._initialize();
          if (this.exp.main) this.exp.main(0, 0);
        } else if (this.exp._start) {
          this.exp._start();
        }
        this.callIf("proxy_on_context_create", this.rootContextId, 0);
      });
      const started = this.guard("vm_start", this.rootContextId, () =>
        this.exp.proxy_on_vm_start
          ? this.exp.proxy_on_vm_start(this.rootContextId, this.vmConfiguration.length)
          : 1,
      );
      if (!started) throw new QhxError("QHX_PROXY_WASM_VM_START", "proxy_on_vm_start returned false");
      const configured = this.guard("configure", this.rootContextId, () => this.callConfigure());
      if (!configured) throw new QhxError("QHX_PROXY_WASM_CONFIGURE", "proxy_on_configure returned false");
    } catch (e) {
      if (e instanceof GuestFailure) {
        throw new QhxError(
          "QHX_PROXY_WASM_TRAP",
          `the module trapped while starting: ${describe(this.failure)}`,
          {
            cause: this.failure,
          },
        );
      }
      throw e;
    }
  }

  /** True after a trap: the VM is dead, as in Envoy. */
  get failed(): boolean {
    return this.isFailed;
  }
  /** What the guest threw when the plugin failed. */
  get failureCause(): unknown {
    return this.failure;
  }
  /** The guest's raw exports (its linear memory, callbacks and any further exports), for embedders and tests. */
  get exports(): Readonly<Record<string, unknown>> {
    return this.exp;
  }
  /** The period set by proxy_set_tick_period_milliseconds (0 = no timer). */
  get tickPeriodMs(): number {
    return this.tickPeriod;
  }

  /** proxy_on_configure with a new configuration (policy/bundle update without restart). */
  configure(pluginConfiguration: Bytes): boolean {
    this.assertOpen();
    if (this.isFailed) return false;
    const previous = this.pluginConfiguration;
    this.pluginConfiguration = toBytes(pluginConfiguration).slice();
    try {
      const ok = this.guard("configure", this.rootContextId, () => this.callConfigure());
      if (!ok) this.pluginConfiguration = previous;
      return ok !== 0;
    } catch (e) {
      if (e instanceof GuestFailure) return false;
      throw e;
    }
  }

  /** A new HTTP stream context (proxy_on_context_create(id, root)); per-stream properties by path. */
  newHttpStream(opts?: { properties?: Record<string, Bytes> }): HttpStream {
    this.assertOpen();
    let props: Bytes[] | undefined;
    const given = opts?.properties;
    if (given) {
      for (const k in given) {
        if (!Object.hasOwn(given, k)) continue;
        const v = given[k]!;
        // strings are encoded when the guest reads them; bytes are copied now (the caller may reuse them)
        const path = propertyKey(k);
        const value = typeof v === "string" ? v : new Uint8Array(v);
        // a two-element literal for the first (usually only) property: no spare capacity allocated
        if (props === undefined) props = [path, value];
        else propSet(props, path, value);
      }
    }
    props ??= [];
    const id = this.nextContextId++;
    const s = new Stream(this, id, props, !this.isFailed);
    if (this.isFailed) return s;
    this.streams.set(id, s);
    const f = this.fContextCreate;
    if (!f) return s;
    // guard(), inlined: no closure per stream
    const prevPhase = this.phase;
    const prevEffective = this.effective;
    this.phase = "lifecycle";
    this.effective = id;
    try {
      f(id, this.rootContextId);
    } catch (e) {
      this.markFailed(e);
    } finally {
      this.phase = prevPhase;
      this.effective = prevEffective;
    }
    return s;
  }

  /** proxy_on_tick, if the plugin set a tick period. */
  tick(): void {
    this.assertOpen();
    if (this.isFailed || this.tickPeriod === 0) return;
    try {
      this.guard("tick", this.rootContextId, () => this.callIf("proxy_on_tick", this.rootContextId));
    } catch (e) {
      if (!(e instanceof GuestFailure)) throw e;
    }
  }

  /** Resolves once every outstanding proxy_http_call has been answered to the guest. */
  async idle(): Promise<void> {
    while (this.pendingCalls.size > 0) await Promise.all([...this.pendingCalls]);
  }

  /** proxy_on_done / proxy_on_log / proxy_on_delete for the root context; the plugin is unusable after. */
  close(): void {
    if (this.isClosed) return;
    if (!this.isFailed) {
      try {
        this.guard("lifecycle", this.rootContextId, () => {
          const done = this.callIf("proxy_on_done", this.rootContextId);
          if (done === undefined || done !== 0) {
            this.callIf("proxy_on_log", this.rootContextId);
            this.callIf("proxy_on_delete", this.rootContextId);
          }
        });
      } catch (e) {
        if (!(e instanceof GuestFailure)) throw e;
      }
    }
    this.isClosed = true;
    for (const [name, id] of store(this.vmId).queues) {
      if (queuesById.get(id)?.owner === this) {
        queuesById.delete(id);
        store(this.vmId).queues.delete(name);
      }
    }
  }

  // ----------------------------------------------------------------------------------------------
  // internal: callbacks

  private assertOpen(): void {
    if (this.isClosed) throw new QhxError("QHX_PROXY_WASM_CLOSED", "the proxy-wasm plugin is closed");
  }

  private callIf(
    name: string,
    a?: number,
    b?: number,
    c?: number,
    d?: number,
    e?: number,
  ): number | undefined {
    const f = this.exp[name];
    return f ? f(a ?? 0, b ?? 0, c ?? 0, d ?? 0, e ?? 0) : undefined;
  }

  private callConfigure(): number {
    if (!this.exp.proxy_on_configure) return 1;
    return this.exp.proxy_on_configure(this.rootContextId, this.pluginConfiguration.length) ?? 0;
  }

  /**
   * Run guest code with `contextId` as the effective context in `phase`. A trap/exception marks the
   * plugin failed and is rethrown as GuestFailure; a plugin that already failed never re-enters its VM.
   */
  private guard<T>(phase: Phase, contextId: number, f: () => T): T {
    if (this.isFailed) throw new GuestFailure("plugin failed");
    const prevPhase = this.phase;
    const prevEffective = this.effective;
    this.phase = phase;
    this.effective = contextId;
    try {
      return f();
    } catch (e) {
      this.markFailed(e);
      throw new GuestFailure(describe(e));
    } finally {
      this.phase = prevPhase;
      this.effective = prevEffective;
    }
  }

  private markFailed(e: unknown): void {
    if (this.isFailed) return;
    this.isFailed = true;
    this.failure = e;
    this.log("critical", `proxy-wasm plugin "${this.rootId}" failed: ${describe(e)}`);
  }

  /** Run a stream callback; fail closed (or open) on a trap. */
  streamCallback(
    s: Stream,
    dir: "request" | "response",
    name: string,
    arg0: number,
    arg1: number,
  ): FilterAction {
    this.assertOpen();
    if (s.isDeleted) {
      throw new QhxError("QHX_PROXY_WASM_STATE", `stream ${s.contextId} is done; no further callbacks`);
    }
    if (this.isFailed || !s.live) return this.failStream(s);
    let r: number | undefined;
    const f = this.exp[name];
    if (f) {
      // guard(), inlined: no closure per callback
      const prevPhase = this.phase;
      const prevEffective = this.effective;
      this.phase = "stream";
      this.effective = s.contextId;
      this.current = s;
      try {
        r = f(s.contextId, arg0, arg1);
      } catch (e) {
        this.markFailed(e);
        return this.failStream(s);
      } finally {
        this.phase = prevPhase;
        this.effective = prevEffective;
      }
    }
    const pause = r !== undefined && r !== 0;
    if (s.local) {
      // a local response ends the stream: nothing is forwarded upstream / from upstream
      return "pause";
    }
    if (dir === "request") s.reqPaused = pause;
    else s.respPaused = pause;
    return pause ? "pause" : "continue";
  }

  private failStream(s: Stream): FilterAction {
    if (this.opts.failOpen) return "continue";
    s.local ??= { ...FAIL_STREAM, body: new Uint8Array(0), headers: [] };
    return "pause";
  }

  streamDone(s: Stream): void {
    this.assertOpen();
    if (s.isDeleted) return;
    if (this.isFailed || !s.live) {
      s.isDeleted = true;
      this.streams.delete(s.contextId);
      return;
    }
    // guard(), inlined: no closure per stream
    const prevPhase = this.phase;
    const prevEffective = this.effective;
    this.phase = "lifecycle";
    this.effective = s.contextId;
    this.current = s;
    try {
      const f = this.fDone;
      const done = f ? f(s.contextId) : undefined;
      if (done === undefined || done !== 0) this.finalize(s);
      else s.pendingDone = true;
    } catch (e) {
      this.markFailed(e);
      s.isDeleted = true;
      this.streams.delete(s.contextId);
    } finally {
      this.phase = prevPhase;
      this.effective = prevEffective;
    }
  }

  /** proxy_on_log + proxy_on_delete (inside a guard). */
  private finalize(s: Stream): void {
    s.pendingDone = false;
    const prev = this.effective;
    this.effective = s.contextId;
    try {
      this.fLog?.(s.contextId);
      this.fDelete?.(s.contextId);
    } finally {
      this.effective = prev;
    }
    s.isDeleted = true;
    this.streams.delete(s.contextId);
  }

  private log(level: LogLevel, message: string): void {
    if (LOG_LEVELS.indexOf(level) < this.logLevelIndex) return;
    this.opts.log?.(level, message);
  }

  // ----------------------------------------------------------------------------------------------
  // internal: guest memory (every access bounds-checked; the buffer is re-read after each guest call
  // because an allocation may grow and detach it)

  // Views of the guest memory, re-made only when it grew: growing a (non-shared) Wasm memory detaches
  // its old ArrayBuffer, so a view whose length dropped to 0 is stale (memory.buffer is a slow getter).
  private u8Cache: Buffer = Buffer.alloc(0); // a Buffer: utf8() decodes from it without a new view
  private viewCache = new DataView(new ArrayBuffer(0));

  private u8(): Uint8Array {
    if (this.u8Cache.length === 0) this.refreshViews();
    return this.u8Cache;
  }

  /** A DataView of the guest memory. */
  private view(): DataView {
    if (this.u8Cache.length === 0) this.refreshViews();
    return this.viewCache;
  }

  private refreshViews(): void {
    const b = this.memory.buffer;
    this.u8Cache = Buffer.from(b);
    this.viewCache = new DataView(b);
  }

  private inBounds(ptr: number, len: number): boolean {
    return ptr + len <= this.u8().length;
  }

  /** A copy of guest bytes [ptr, ptr+len), or undefined when out of bounds. */
  private read(ptr: number, len: number): Uint8Array | undefined {
    ptr >>>= 0;
    len >>>= 0;
    if (!this.inBounds(ptr, len)) return undefined;
    return new Uint8Array(this.u8Cache.subarray(ptr, ptr + len)); // a copy (Buffer#slice would be a view)
  }

  // the last property paths the guest asked for (bytes → normalized path): filters read the same few
  private readonly pathBytes: Uint8Array[] = [];
  private readonly pathStrings: string[] = [];

  /** A property path from guest memory (a trailing NUL dropped), decoded once per distinct path. */
  private propertyPath(ptr: number, len: number): string | undefined {
    ptr >>>= 0;
    len >>>= 0;
    if (!this.inBounds(ptr, len)) return undefined;
    const mem = this.u8Cache;
    const cache = this.pathBytes;
    for (let c = 0; c < cache.length; c++) {
      const b = cache[c]!;
      if (b.length !== len) continue;
      let i = 0;
      while (i < len && b[i] === mem[ptr + i]) i++;
      if (i === len) return this.pathStrings[c];
    }
    const raw = utf8(mem.subarray(ptr, ptr + len));
    const path = raw.endsWith("\0") ? raw.slice(0, -1) : raw;
    if (len <= 256) {
      if (cache.length >= 16) {
        cache.length = 0;
        this.pathStrings.length = 0;
      }
      cache.push(new Uint8Array(mem.subarray(ptr, ptr + len)));
      this.pathStrings.push(path);
    }
    return path;
  }

  // the last local-response details decoded (filters send one of a few constants: compare, don't decode)
  private detailsBytes: Uint8Array = new Uint8Array(0);
  private details = "";

  /** Local-response details from guest memory (bounds checked by the caller). */
  private detailsString(ptr: number, len: number): string {
    const mem = this.u8Cache;
    const last = this.detailsBytes;
    if (last.length === len) {
      let i = 0;
      while (i < len && last[i] === mem[ptr + i]) i++;
      if (i === len) return this.details;
    }
    const d = utf8Range(mem, ptr, ptr + len);
    if (len <= 64) {
      const b = new Uint8Array(len);
      copyBytes(mem, ptr, len, b, 0);
      this.detailsBytes = b;
      this.details = d;
    }
    return d;
  }

  /** A view (not a copy) of guest bytes, for immediate use before the guest runs again. */
  private view8(ptr: number, len: number): Uint8Array | undefined {
    ptr >>>= 0;
    len >>>= 0;
    if (!this.inBounds(ptr, len)) return undefined;
    return this.u8Cache.subarray(ptr, ptr + len);
  }

  private readString(ptr: number, len: number): string | undefined {
    ptr >>>= 0;
    len >>>= 0;
    if (!this.inBounds(ptr, len)) return undefined;
    return utf8(this.u8Cache.subarray(ptr, ptr + len)); // decoded straight from guest memory, no copy
  }

  private writeU32(ptr: number, v: number): boolean {
    ptr >>>= 0;
    if (!this.inBounds(ptr, 4)) return false;
    this.view().setUint32(ptr, v >>> 0, true);
    return true;
  }

  private writeU64(ptr: number, v: bigint): boolean {
    ptr >>>= 0;
    if (!this.inBounds(ptr, 8)) return false;
    this.view().setBigUint64(ptr, BigInt.asUintN(64, v), true);
    return true;
  }

  /** Allocate `len` bytes in the guest and copy `data` there; 0 when it cannot. */
  private allocIn(data: Uint8Array): number {
    const alloc = this.fAlloc;
    if (!alloc) return 0;
    const p = (alloc(data.length) ?? 0) >>> 0;
    if (p === 0 || !this.inBounds(p, data.length)) return 0;
    this.u8Cache.set(data, p);
    return p;
  }

  /** Return `data` through the (ptr, size) out-params, allocating in the guest. */
  private copyOut(data: Uint8Array, retPtr: number, retSize: number): number {
    retPtr >>>= 0;
    retSize >>>= 0;
    if (!this.inBounds(retPtr, 4) || !this.inBounds(retSize, 4)) return Status.InvalidMemoryAccess;
    let p = 0;
    if (data.length > 0) {
      p = this.allocIn(data);
      if (p === 0) return Status.InvalidMemoryAccess;
    }
    this.writeU32(retPtr, p);
    this.writeU32(retSize, data.length);
    return Status.Ok;
  }

  // ----------------------------------------------------------------------------------------------
  // internal: maps, buffers, properties of the effective context

  private effectiveStream(): Stream | undefined {
    const c = this.current; // the stream whose callback is running: most host calls act on it
    if (c !== undefined && c.contextId === this.effective && !c.isDeleted) return c;
    return this.streams.get(this.effective);
  }

  /** The map `type` if it exists for the effective context; "unknown" for a type outside the spec. */
  private getMap(type: number): HeaderPairs | undefined | "unknown" {
    if (type < 0 || type > MAX_MAP_TYPE) return "unknown";
    if (type === MapType.HttpCallResponseHeaders) return this.httpCallResponse?.headers;
    if (type === MapType.HttpCallResponseTrailers) return this.httpCallResponse?.trailers;
    const s = this.effectiveStream();
    if (!s) return undefined;
    switch (type) {
      case MapType.HttpRequestHeaders:
        return s.reqHeaders;
      case MapType.HttpRequestTrailers:
        return s.reqTrailers;
      case MapType.HttpResponseHeaders:
        return s.respHeaders;
      case MapType.HttpResponseTrailers:
        return s.respTrailers;
      default:
        return undefined; // gRPC metadata: this host makes no gRPC calls
    }
  }

  /** A writable map: the stream's own maps only (HTTP-call responses are read-only). */
  private getMutableMap(type: number): HeaderPairs | undefined | "unknown" {
    if (type < 0 || type > MAX_MAP_TYPE) return "unknown";
    if (type > MapType.HttpResponseTrailers) return undefined;
    const s = this.effectiveStream();
    if (!s) return undefined;
    // every caller changes the map: forget its serialization
    if (s.serType === type) {
      s.serType = -1;
      s.serOf = undefined;
      s.serBytes = undefined;
    }
    // trailers may be added from the body callback at end of stream: create the map on first write
    if (type === MapType.HttpRequestTrailers) return (s.reqTrailers ??= []);
    if (type === MapType.HttpResponseTrailers) return (s.respTrailers ??= []);
    return this.getMap(type);
  }

  private getBuffer(type: number): Uint8Array | undefined | "unknown" {
    if (type < 0 || type > MAX_BUFFER_TYPE) return "unknown";
    switch (type) {
      case BufferType.VmConfiguration:
        return this.phase === "vm_start" ? this.vmConfiguration : undefined;
      case BufferType.PluginConfiguration:
        return this.phase === "configure" ? this.pluginConfiguration : undefined;
      case BufferType.HttpRequestBody:
        return this.effectiveStream()?.reqBody;
      case BufferType.HttpResponseBody:
        return this.effectiveStream()?.respBody;
      case BufferType.HttpCallResponseBody:
        return this.httpCallResponse?.body;
      case BufferType.ForeignFunctionArguments:
        return this.foreignArgs;
      default:
        return undefined; // TCP data and gRPC messages: not carried by this host
    }
  }

  /** UTF-8 of an embedder's property string (memoized, bounded; the guest always receives a copy). */
  private propertyBytes(v: string): Uint8Array {
    let b = this.propBytes.get(v);
    if (b === undefined) {
      b = toBytes(v);
      if (v.length <= 4096) {
        if (this.propBytes.size >= 4096) this.propBytes.clear();
        this.propBytes.set(v, b);
      }
    }
    return b;
  }

  /**
   * The serialization of map `m` (of `type`) of the effective stream `s`. The first one is written into
   * the reusable scratch and handed out as a view (copied into the guest at once); a map serialized a
   * second time unchanged keeps a copy until the stream changes it (getMutableMap forgets it).
   */
  private serializedMap(type: number, m: HeaderPairs): Uint8Array {
    const s = type <= MapType.HttpResponseTrailers ? this.effectiveStream() : undefined;
    if (s) {
      if (s.serType === type && s.serOf === m) {
        if (s.serBytes === undefined) s.serBytes = this.serializeFresh(m).slice();
        return s.serBytes;
      }
      s.serType = type;
      s.serOf = m;
      s.serBytes = undefined;
    }
    return this.serializeFresh(m);
  }

  /** Into the scratch, unless a serialization in it is still being copied out (a reentrant call). */
  private serializeFresh(m: HeaderPairs): Uint8Array {
    return this.scratchBusy
      ? serializeHeaderMapInto(m, new HeaderMapScratch())
      : serializeHeaderMapInto(m, this.scratch);
  }

  private getProperty(path: string): Uint8Array | undefined {
    const s = this.effectiveStream();
    const mine = s === undefined ? undefined : propGet(s.props, path);
    if (mine !== undefined) {
      if (typeof mine !== "string") return mine;
      const b = this.propertyBytes(mine);
      propSet(s!.props, path, b);
      return b;
    }
    const own = this.props.get(path);
    if (own) return own;
    switch (path) {
      case "plugin_name":
        return toBytes(this.opts.name ?? this.rootId);
      case "plugin_root_id":
        return toBytes(this.rootId);
      case "plugin_vm_id":
        return toBytes(this.vmId);
    }
    if (s?.reqHeaders) {
      const derive = DERIVED_REQUEST_PROPERTIES[path];
      const v = derive?.(s.reqHeaders);
      if (v !== undefined) return toBytes(v);
    }
    if (path === "response\0code" && s?.respHeaders) {
      const code = Number(first(s.respHeaders, ":status"));
      if (Number.isInteger(code)) return encodeInt64Property(code);
    }
    return undefined;
  }

  // ----------------------------------------------------------------------------------------------
  // internal: the import object

  private buildImports(): Record<string, Record<string, unknown>> {
    const env: Record<string, (...a: never[]) => unknown> = this.envFunctions();
    const wasi: Record<string, (...a: never[]) => unknown> = this.wasiFunctions();
    for (const n of ENV_HOST_FUNCTIONS) if (!env[n]) throw new Error(`host function ${n} missing`);
    for (const n of [...WASI_SPEC_FUNCTIONS, ...WASI_EXTRA_FUNCTIONS]) {
      if (!wasi[n]) throw new Error(`WASI function ${n} missing`);
    }
    const out: Record<string, Record<string, unknown>> = {
      env: { ...env },
      wasi_snapshot_preview1: { ...wasi },
    };
    for (const [mod, fns] of Object.entries(this.opts.extraImports ?? {})) {
      out[mod] = { ...(out[mod] ?? {}), ...fns };
    }
    return out;
  }

  private envFunctions(): Record<string, (...a: never[]) => unknown> {
    const S = Status;
    return {
      // --- logging, clocks, timers
      proxy_log: (level: number, ptr: number, len: number): number => {
        if (level < 0 || level >= LOG_LEVELS.length) return S.BadArgument;
        const msg = this.readString(ptr, len);
        if (msg === undefined) return S.InvalidMemoryAccess;
        this.log(LOG_LEVELS[level]!, msg);
        return S.Ok;
      },
      proxy_get_log_level: (ret: number): number =>
        this.writeU32(ret, this.logLevelIndex) ? S.Ok : S.InvalidMemoryAccess,
      proxy_get_current_time_nanoseconds: (ret: number): number =>
        this.writeU64(ret, msToNs(this.clockNow())) ? S.Ok : S.InvalidMemoryAccess,
      proxy_set_tick_period_milliseconds: (period: number): number => {
        this.tickPeriod = period >>> 0;
        return S.Ok;
      },

      // --- context lifecycle
      proxy_done: (): number => {
        const s = this.effectiveStream();
        if (!s || !s.pendingDone) return S.NotFound;
        this.finalize(s);
        return S.Ok;
      },
      proxy_set_effective_context: (id: number): number => {
        id >>>= 0;
        if (id !== this.rootContextId && !this.streams.has(id)) return S.BadArgument;
        this.effective = id;
        return S.Ok;
      },

      // --- buffers
      proxy_get_buffer_bytes: (type: number, start: number, max: number, retPtr: number, retSize: number) => {
        const b = this.getBuffer(type);
        if (b === "unknown") return S.BadArgument;
        if (b === undefined) return S.NotFound;
        start >>>= 0;
        max >>>= 0;
        // a window that overflows size_t is BAD_ARGUMENT; one past the end is empty (as Envoy)
        if (start + max > 0xffffffff) return S.BadArgument;
        const end = Math.min(b.length, start + max);
        if (start >= end) return this.copyOut(new Uint8Array(0), retPtr, retSize);
        return this.copyOut(b.subarray(start, end), retPtr, retSize);
      },
      proxy_set_buffer_bytes: (type: number, start: number, size: number, ptr: number, len: number) => {
        const b = this.getBuffer(type);
        if (b === "unknown") return S.BadArgument;
        const s = this.effectiveStream();
        const writable =
          (type === BufferType.HttpRequestBody || type === BufferType.HttpResponseBody) &&
          s &&
          b !== undefined;
        if (!writable) return S.NotFound;
        const value = this.read(ptr, len);
        if (value === undefined) return S.InvalidMemoryAccess;
        start = Math.min(start >>> 0, b.length);
        const end = Math.min(b.length, start + (size >>> 0));
        const next = new Uint8Array(b.length - (end - start) + value.length);
        next.set(b.subarray(0, start));
        next.set(value, start);
        next.set(b.subarray(end), start + value.length);
        if (type === BufferType.HttpRequestBody) s.reqBody = next;
        else s.respBody = next;
        return S.Ok;
      },
      proxy_get_buffer_status: (type: number, retSize: number, retFlags: number): number => {
        const b = this.getBuffer(type);
        if (b === "unknown") return S.BadArgument;
        if (b === undefined) return S.NotFound;
        if (!this.inBounds(retSize >>> 0, 4) || !this.inBounds(retFlags >>> 0, 4))
          return S.InvalidMemoryAccess;
        this.writeU32(retSize, b.length);
        this.writeU32(retFlags, 0);
        return S.Ok;
      },

      // --- header maps
      proxy_get_header_map_size: (type: number, retSize: number): number => {
        const m = this.getMap(type);
        if (m === "unknown" || m === undefined) return S.BadArgument;
        return this.writeU32(retSize, this.serializedMap(type, m).length) ? S.Ok : S.InvalidMemoryAccess;
      },
      proxy_get_header_map_pairs: (type: number, retPtr: number, retSize: number): number => {
        const m = this.getMap(type);
        if (m === "unknown" || m === undefined) return S.BadArgument;
        const bytes = this.serializedMap(type, m);
        if (bytes.buffer !== this.scratch.buf.buffer) return this.copyOut(bytes, retPtr, retSize);
        // the scratch must not be reused while the guest allocates the destination
        this.scratchBusy = true;
        try {
          return this.copyOut(bytes, retPtr, retSize);
        } finally {
          this.scratchBusy = false;
        }
      },
      proxy_set_header_map_pairs: (type: number, ptr: number, len: number): number => {
        const m = this.getMutableMap(type);
        if (m === "unknown" || m === undefined) return S.BadArgument;
        ptr >>>= 0;
        len >>>= 0;
        if (!this.inBounds(ptr, len)) return S.InvalidMemoryAccess;
        const pairs = parseHeaderFields(this.u8Cache, ptr, ptr + len); // decoded (lower-cased) right away
        if (pairs === undefined) return S.BadArgument;
        m.splice(0, m.length, ...pairs);
        return S.Ok;
      },
      proxy_get_header_map_value: (type: number, kp: number, kl: number, retPtr: number, retSize: number) => {
        const m = this.getMap(type);
        if (m === "unknown") return S.BadArgument;
        const key = this.readString(kp, kl);
        if (key === undefined) return S.InvalidMemoryAccess;
        if (m === undefined) return S.NotFound;
        const v = first(m, key.toLowerCase());
        if (v === undefined) return S.NotFound;
        return this.copyOut(toBytes(v), retPtr, retSize);
      },
      proxy_add_header_map_value: (type: number, kp: number, kl: number, vp: number, vl: number): number => {
        const m = this.getMutableMap(type);
        if (m === "unknown" || m === undefined) return S.BadArgument;
        const key = this.readString(kp, kl);
        const value = this.readString(vp, vl);
        if (key === undefined || value === undefined) return S.InvalidMemoryAccess;
        if (key === "" || invalidHeaderText(key) || invalidHeaderText(value)) return S.BadArgument;
        m.push([key.toLowerCase(), value]);
        return S.Ok;
      },
      proxy_replace_header_map_value: (type: number, kp: number, kl: number, vp: number, vl: number) => {
        const m = this.getMutableMap(type);
        if (m === "unknown" || m === undefined) return S.BadArgument;
        const key = this.readString(kp, kl);
        const value = this.readString(vp, vl);
        if (key === undefined || value === undefined) return S.InvalidMemoryAccess;
        if (key === "" || invalidHeaderText(key) || invalidHeaderText(value)) return S.BadArgument;
        const k = key.toLowerCase();
        const i = m.findIndex(([x]) => x === k);
        if (i < 0) m.push([k, value]);
        else {
          m[i] = [k, value];
          for (let j = m.length - 1; j > i; j--) if (m[j]![0] === k) m.splice(j, 1);
        }
        return S.Ok;
      },
      proxy_remove_header_map_value: (type: number, kp: number, kl: number): number => {
        const m = this.getMutableMap(type);
        if (m === "unknown" || m === undefined) return S.BadArgument;
        const key = this.readString(kp, kl);
        if (key === undefined) return S.InvalidMemoryAccess;
        const k = key.toLowerCase();
        for (let j = m.length - 1; j >= 0; j--) if (m[j]![0] === k) m.splice(j, 1);
        return S.Ok;
      },

      // --- stream operations
      proxy_continue_stream: (type: number): number => {
        if (type < 0 || type > MAX_STREAM_TYPE) return S.BadArgument;
        const s = this.effectiveStream();
        if (!s) return S.BadArgument;
        if (type === StreamType.HttpRequest) s.reqPaused = false;
        else if (type === StreamType.HttpResponse) s.respPaused = false;
        else return S.Unimplemented; // TCP streams are not carried by this host
        return S.Ok;
      },
      proxy_close_stream: (type: number): number => {
        if (type < 0 || type > MAX_STREAM_TYPE) return S.BadArgument;
        const s = this.effectiveStream();
        if (!s) return S.BadArgument;
        (s.closedTypes ??= new Set<number>()).add(type);
        return S.Ok;
      },
      proxy_get_status: (retCode: number, retMsgPtr: number, retMsgSize: number): number => {
        const r = this.httpCallResponse;
        if (!r) return S.NotFound;
        if (!this.inBounds(retCode >>> 0, 4)) return S.InvalidMemoryAccess;
        const st = this.copyOut(toBytes(r.message), retMsgPtr, retMsgSize);
        if (st !== S.Ok) return st;
        this.writeU32(retCode, r.status);
        return S.Ok;
      },
      proxy_send_local_response: (
        status: number,
        dp: number,
        dl: number,
        bp: number,
        bl: number,
        hp: number,
        hl: number,
        grpc: number,
      ): number => {
        dp >>>= 0;
        dl >>>= 0;
        bp >>>= 0;
        bl >>>= 0;
        hp >>>= 0;
        hl >>>= 0;
        if (!this.inBounds(dp, dl) || !this.inBounds(bp, bl) || !this.inBounds(hp, hl)) {
          return S.InvalidMemoryAccess;
        }
        // checked and decoded straight from guest memory (one pass over the bytes, one decode)
        const mem = this.u8Cache;
        const headers = parseHeaderFields(mem, hp, hp + hl);
        if (headers === undefined) return S.BadArgument;
        status >>>= 0;
        if (status < 100 || status > 999) return S.BadArgument;
        const s = this.effectiveStream();
        if (!s) return S.BadArgument; // only a stream can be answered
        const body = new Uint8Array(bl);
        copyBytes(mem, bp, bl, body, 0);
        s.local = {
          status,
          details: this.detailsString(dp, dl),
          body,
          headers,
          grpcStatus: grpc | 0,
        };
        return S.Ok;
      },

      // --- HTTP and gRPC calls
      proxy_http_call: (
        up: number,
        ul: number,
        hp: number,
        hl: number,
        bp: number,
        bl: number,
        tp: number,
        tl: number,
        timeout: number,
        retToken: number,
      ): number => {
        const upstream = this.readString(up, ul);
        const hbytes = this.read(hp, hl);
        const body = this.read(bp, bl);
        const tbytes = this.read(tp, tl);
        if (upstream === undefined || hbytes === undefined || body === undefined || tbytes === undefined) {
          return S.InvalidMemoryAccess;
        }
        if (!this.inBounds(retToken >>> 0, 4)) return S.InvalidMemoryAccess;
        let headers: HeaderPairs;
        let trailers: HeaderPairs;
        try {
          headers = normalizeHeaders(parseHeaderMap(hbytes));
          trailers = normalizeHeaders(parseHeaderMap(tbytes));
        } catch (e) {
          if (e instanceof HeaderMapParseError) return S.BadArgument;
          throw e;
        }
        if (!this.opts.httpCall) return S.BadArgument; // no upstream is known
        for (const required of [":authority", ":method", ":path"]) {
          if (first(headers, required) === undefined) return S.BadArgument;
        }
        const token = this.nextCallToken++;
        this.writeU32(retToken, token);
        this.startHttpCall(this.effective, token, upstream, headers, body, trailers, timeout >>> 0);
        return S.Ok;
      },
      proxy_grpc_call: (...a: number[]): number => this.noGrpcUpstream(a, [0, 2, 4, 6, 8], 11),
      proxy_grpc_stream: (...a: number[]): number => this.noGrpcUpstream(a, [0, 2, 4, 6], 8),
      proxy_grpc_send: (_id: number, ptr: number, len: number): number =>
        this.read(ptr, len) === undefined ? S.InvalidMemoryAccess : S.NotFound,
      proxy_grpc_cancel: (): number => S.NotFound,
      proxy_grpc_close: (): number => S.NotFound,

      // --- shared data and queues
      proxy_set_shared_data: (kp: number, kl: number, vp: number, vl: number, cas: number): number => {
        const key = this.readString(kp, kl);
        const value = this.read(vp, vl);
        if (key === undefined || value === undefined) return S.InvalidMemoryAccess;
        const data = store(this.vmId).data;
        const cur = data.get(key);
        cas >>>= 0;
        if (cas !== 0 && cur && cur.cas !== cas) return S.CasMismatch;
        data.set(key, { value, cas: nextCas++ });
        return S.Ok;
      },
      proxy_get_shared_data: (kp: number, kl: number, retPtr: number, retSize: number, retCas: number) => {
        const key = this.readString(kp, kl);
        if (key === undefined) return S.InvalidMemoryAccess;
        const cur = store(this.vmId).data.get(key);
        if (!this.inBounds(retCas >>> 0, 4)) return S.InvalidMemoryAccess;
        if (!cur) return S.NotFound;
        const st = this.copyOut(cur.value, retPtr, retSize);
        if (st !== S.Ok) return st;
        this.writeU32(retCas, cur.cas);
        return S.Ok;
      },
      proxy_register_shared_queue: (np: number, nl: number, retId: number): number => {
        const name = this.readString(np, nl);
        if (name === undefined || !this.inBounds(retId >>> 0, 4)) return S.InvalidMemoryAccess;
        const st = store(this.vmId);
        let id = st.queues.get(name);
        if (id === undefined) {
          id = nextQueueId++;
          st.queues.set(name, id);
          queuesById.set(id, { items: [], owner: this, contextId: this.rootContextId });
        }
        this.writeU32(retId, id);
        return S.Ok;
      },
      proxy_resolve_shared_queue: (vp: number, vl: number, np: number, nl: number, retId: number): number => {
        const vm = this.readString(vp, vl);
        const name = this.readString(np, nl);
        if (vm === undefined || name === undefined || !this.inBounds(retId >>> 0, 4))
          return S.InvalidMemoryAccess;
        const id = sharedStores.get(vm)?.queues.get(name);
        if (id === undefined) return S.NotFound;
        this.writeU32(retId, id);
        return S.Ok;
      },
      proxy_enqueue_shared_queue: (id: number, vp: number, vl: number): number => {
        const q = queuesById.get(id >>> 0);
        const value = this.read(vp, vl);
        if (value === undefined) return S.InvalidMemoryAccess;
        if (!q) return S.NotFound;
        q.items.push(value);
        q.owner.notifyQueue(id >>> 0);
        return S.Ok;
      },
      proxy_dequeue_shared_queue: (id: number, retPtr: number, retSize: number): number => {
        const q = queuesById.get(id >>> 0);
        if (!this.inBounds(retPtr >>> 0, 4) || !this.inBounds(retSize >>> 0, 4)) return S.InvalidMemoryAccess;
        if (!q) return S.NotFound;
        const item = q.items[0];
        if (item === undefined) return S.Empty;
        const st = this.copyOut(item, retPtr, retSize);
        if (st === S.Ok) q.items.shift();
        return st;
      },

      // --- metrics
      proxy_define_metric: (type: number, np: number, nl: number, retId: number): number => {
        if (type < 0 || type >= METRIC_TYPES.length) return S.BadArgument;
        const name = this.readString(np, nl);
        if (name === undefined || !this.inBounds(retId >>> 0, 4)) return S.InvalidMemoryAccess;
        const mtype = METRIC_TYPES[type]!;
        const existing = this.metrics.get(name);
        if (existing && existing.type !== mtype) return S.BadArgument;
        let id = this.metricIds.indexOf(name) + 1;
        if (!existing) {
          this.metrics.set(
            name,
            mtype === "histogram" ? { type: mtype, value: 0n, samples: [] } : { type: mtype, value: 0n },
          );
          id = this.metricIds.push(name);
          this.metricList.push(this.metrics.get(name)!);
        }
        this.writeU32(retId, id);
        return S.Ok;
      },
      proxy_record_metric: (id: number, value: bigint): number => {
        const m = this.metricById(id);
        if (!m) return S.NotFound;
        const v = BigInt.asUintN(64, value);
        if (m.type === "counter")
          m.value = BigInt.asUintN(64, m.value + v); // Envoy: counters only add
        else if (m.type === "gauge") m.value = v;
        else {
          const samples = m.samples!;
          // the most recent HISTOGRAM_SAMPLES at least (trimmed in batches: amortized O(1))
          if (samples.length >= 2 * HISTOGRAM_SAMPLES) samples.splice(0, samples.length - HISTOGRAM_SAMPLES);
          samples.push(v);
          m.value = v;
        }
        return S.Ok;
      },
      proxy_increment_metric: (id: number, delta: bigint): number => {
        const m = this.metricById(id);
        if (!m) return S.NotFound;
        const d = BigInt.asIntN(64, delta);
        if (m.type === "histogram") return S.BadArgument;
        if (m.type === "counter" && d < 0n) return S.BadArgument;
        m.value = BigInt.asUintN(64, m.value + d);
        return S.Ok;
      },
      proxy_get_metric: (id: number, ret: number): number => {
        const m = this.metricById(id);
        if (!m) return S.NotFound;
        if (m.type === "histogram") return S.BadArgument;
        return this.writeU64(ret, m.value) ? S.Ok : S.InvalidMemoryAccess;
      },

      // --- properties
      proxy_get_property: (pp: number, pl: number, retPtr: number, retSize: number): number => {
        const path = this.propertyPath(pp, pl);
        if (path === undefined) return S.InvalidMemoryAccess;
        const v = this.getProperty(path);
        if (v === undefined) return S.NotFound;
        return this.copyOut(v, retPtr, retSize);
      },
      proxy_set_property: (pp: number, pl: number, vp: number, vl: number): number => {
        const path = this.readString(pp, pl);
        const value = this.read(vp, vl);
        if (path === undefined || value === undefined) return S.InvalidMemoryAccess;
        const s = this.effectiveStream();
        if (!s) return S.NotFound; // only stream (filter-state) properties are writable
        propSet(s.props, path.endsWith("\0") ? path.slice(0, -1) : path, value);
        return S.Ok;
      },

      // --- foreign functions
      proxy_call_foreign_function: (
        np: number,
        nl: number,
        ap: number,
        al: number,
        retPtr: number,
        retSize: number,
      ): number => {
        const name = this.readString(np, nl);
        const args = this.read(ap, al);
        if (name === undefined || args === undefined) return S.InvalidMemoryAccess;
        const f = Object.hasOwn(this.opts.foreignFunctions ?? {}, name)
          ? this.opts.foreignFunctions![name]
          : undefined;
        if (!f) return S.NotFound;
        let result: Uint8Array;
        try {
          result = f(args);
        } catch (e) {
          this.log("error", `foreign function ${name} failed: ${describe(e)}`);
          return S.InternalFailure;
        }
        return this.copyOut(result, retPtr, retSize);
      },
    };
  }

  private noGrpcUpstream(a: number[], pairs: number[], retIdx: number): number {
    for (const i of pairs)
      if (this.read(a[i] ?? 0, a[i + 1] ?? 0) === undefined) return Status.InvalidMemoryAccess;
    if (!this.inBounds((a[retIdx] ?? 0) >>> 0, 4)) return Status.InvalidMemoryAccess;
    return Status.ParseFailure; // no gRPC upstream is known to this host
  }

  private metricById(id: number): MetricValue | undefined {
    return this.metricList[(id >>> 0) - 1];
  }

  private wasiFunctions(): Record<string, (...a: never[]) => unknown> {
    const E = Errno;
    return {
      fd_write: (fd: number, iovs: number, iovsLen: number, retWritten: number): number => {
        if (fd !== Fd.Stdout && fd !== Fd.Stderr) return E.Badf;
        iovs >>>= 0;
        iovsLen >>>= 0;
        if (iovsLen > 1024 || !this.inBounds(iovs, iovsLen * 8) || !this.inBounds(retWritten >>> 0, 4))
          return E.Fault;
        const dv = this.view();
        const parts: Uint8Array[] = [];
        let total = 0;
        for (let i = 0; i < iovsLen; i++) {
          const b = this.read(dv.getUint32(iovs + 8 * i, true), dv.getUint32(iovs + 8 * i + 4, true));
          if (b === undefined) return E.Fault;
          parts.push(b);
          total += b.length;
        }
        const msg = utf8(parts.reduce((a, b) => concat(a, b), new Uint8Array(0)));
        this.log(fd === Fd.Stdout ? "info" : "error", msg.endsWith("\n") ? msg.slice(0, -1) : msg);
        this.writeU32(retWritten, total);
        return E.Success;
      },
      clock_time_get: (id: number, _precision: bigint, ret: number): number => {
        let t: bigint;
        if (id === ClockId.Realtime) t = msToNs(this.clockNow());
        else if (id === ClockId.Monotonic) t = process.hrtime.bigint();
        else return E.Notsup;
        return this.writeU64(ret, t) ? E.Success : E.Fault;
      },
      random_get: (ptr: number, len: number): number => {
        ptr >>>= 0;
        len >>>= 0;
        if (len > MAX_RANDOM_GET_BYTES) return E.Inval;
        if (!this.inBounds(ptr, len)) return E.Fault;
        randomFillSync(new Uint8Array(this.memory.buffer, ptr, len));
        return E.Success;
      },
      environ_sizes_get: (retCount: number, retSize: number): number => {
        if (!this.inBounds(retCount >>> 0, 4) || !this.inBounds(retSize >>> 0, 4)) return E.Fault;
        this.writeU32(retCount, 0);
        this.writeU32(retSize, 0);
        return E.Success;
      },
      environ_get: (): number => E.Success,
      args_sizes_get: (retArgc: number, retSize: number): number => {
        if (!this.inBounds(retArgc >>> 0, 4) || !this.inBounds(retSize >>> 0, 4)) return E.Fault;
        this.writeU32(retArgc, 0);
        this.writeU32(retSize, 0);
        return E.Success;
      },
      args_get: (): number => E.Success,
      proc_exit: (code: number): never => {
        throw new QhxError("QHX_PROXY_WASM_PROC_EXIT", `the module called proc_exit(${code})`);
      },
      fd_read: (): number => E.Badf,
      fd_close: (): number => E.Badf,
      fd_seek: (): number => E.Badf,
      fd_fdstat_get: (): number => E.Badf,
      fd_fdstat_set_flags: (): number => E.Badf,
      fd_prestat_get: (): number => E.Badf,
      fd_prestat_dir_name: (): number => E.Notsup,
      path_open: (): number => E.Notsup,
      poll_oneoff: (): number => E.Notsup,
      sched_yield: (): number => E.Success,
    };
  }

  // ----------------------------------------------------------------------------------------------
  // internal: asynchronous work (HTTP calls, queues)

  private startHttpCall(
    contextId: number,
    token: number,
    upstream: string,
    headers: HeaderPairs,
    body: Uint8Array,
    trailers: HeaderPairs,
    timeoutMs: number,
  ): void {
    const call = this.opts.httpCall!;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      if (timeoutMs > 0) {
        timer = setTimeout(() => reject(new Error(`http call timed out after ${timeoutMs} ms`)), timeoutMs);
        timer.unref?.();
      }
    });
    const p = Promise.race([
      Promise.resolve().then(() => call(upstream, headers, body, trailers, timeoutMs)),
      timeout,
    ]).then(
      (r) => this.deliverHttpCall(contextId, token, r),
      (e: unknown) => {
        this.log("warn", `http call ${token} to ${upstream} failed: ${describe(e)}`);
        this.deliverHttpCall(contextId, token, undefined);
      },
    );
    const tracked = p.finally(() => {
      if (timer) clearTimeout(timer);
      this.pendingCalls.delete(tracked);
    });
    this.pendingCalls.add(tracked);
  }

  /**
   * As in Envoy (proxy-wasm-cpp-host), an HTTP call belongs to the root context: its answer goes to
   * proxy_on_http_call_response(root context id, …) with the root as effective context, and the plugin
   * switches to the stream it was for with proxy_set_effective_context. `origin` (the context that made
   * the call) only decides which stream fails closed if that callback traps.
   */
  private deliverHttpCall(origin: number, token: number, r: HttpCallResponse | undefined): void {
    if (this.isClosed) return;
    if (this.isFailed) {
      // the VM died while the call was out: a stream waiting for it fails closed now
      const waiting = this.streams.get(origin);
      if (waiting) this.failStream(waiting);
      return;
    }
    const resp = r
      ? {
          headers: normalizeHeaders(r.headers),
          body: r.body.slice(),
          trailers: normalizeHeaders(r.trailers),
          status: Number(first(normalizeHeaders(r.headers), ":status") ?? 0) | 0,
          message: "",
        }
      : undefined;
    const prev = this.httpCallResponse;
    this.httpCallResponse = resp;
    try {
      this.guard("http_call_response", this.rootContextId, () =>
        this.callIf(
          "proxy_on_http_call_response",
          this.rootContextId,
          token,
          resp?.headers.length ?? 0,
          resp?.body.length ?? 0,
          resp?.trailers.length ?? 0,
        ),
      );
    } catch (e) {
      if (!(e instanceof GuestFailure)) throw e;
      const s = this.streams.get(origin);
      if (s) this.failStream(s);
    } finally {
      this.httpCallResponse = prev;
    }
  }

  /** @internal proxy_on_queue_ready on the queue owner, after the enqueuing host call returned. */
  notifyQueue(queueId: number): void {
    queueMicrotask(() => {
      if (this.isClosed || this.isFailed) return;
      try {
        this.guard("queue_ready", this.rootContextId, () =>
          this.callIf("proxy_on_queue_ready", this.rootContextId, queueId),
        );
      } catch (e) {
        if (!(e instanceof GuestFailure)) throw e;
      }
    });
  }
}

/** Milliseconds (possibly fractional) → nanoseconds, without losing the fraction to float rounding. */
let lastMs = NaN;
let lastNs = 0n;
function msToNs(ms: number): bigint {
  if (ms === lastMs) return lastNs; // BigInt arithmetic allocates: reuse the last answer
  lastMs = ms;
  lastNs = msToNsExact(ms);
  return lastNs;
}
function msToNsExact(ms: number): bigint {
  const whole = Math.floor(ms);
  return BigInt(whole) * 1_000_000n + BigInt(Math.round((ms - whole) * 1e6));
}

function describe(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}
