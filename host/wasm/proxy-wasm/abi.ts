/**
 * Constants of the proxy-wasm ABI v0.2.1 (github.com/proxy-wasm/spec, abi-versions/v0.2.1), with the
 * exact numeric values of its `Types` section. Plain `as const` objects, not enums (type stripping).
 */

/** `proxy_status_t`: what every host function returns. */
export const Status = {
  Ok: 0,
  NotFound: 1,
  BadArgument: 2,
  SerializationFailure: 3,
  ParseFailure: 4,
  InvalidMemoryAccess: 6,
  Empty: 7,
  CasMismatch: 8,
  InternalFailure: 10,
  Unimplemented: 12,
} as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

/** `proxy_log_level_t`. */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "critical"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** `proxy_action_t`. */
export const Action = { Continue: 0, Pause: 1 } as const;

/** `proxy_buffer_type_t`. */
export const BufferType = {
  HttpRequestBody: 0,
  HttpResponseBody: 1,
  DownstreamData: 2,
  UpstreamData: 3,
  HttpCallResponseBody: 4,
  GrpcCallMessage: 5,
  VmConfiguration: 6,
  PluginConfiguration: 7,
  ForeignFunctionArguments: 8,
} as const;
export const MAX_BUFFER_TYPE = 8;

/** `proxy_map_type_t`. */
export const MapType = {
  HttpRequestHeaders: 0,
  HttpRequestTrailers: 1,
  HttpResponseHeaders: 2,
  HttpResponseTrailers: 3,
  GrpcCallInitialMetadata: 4,
  GrpcCallTrailingMetadata: 5,
  HttpCallResponseHeaders: 6,
  HttpCallResponseTrailers: 7,
} as const;
export const MAX_MAP_TYPE = 7;

/** `proxy_peer_type_t`. */
export const PeerType = { Unknown: 0, Local: 1, Remote: 2 } as const;

/** `proxy_stream_type_t`. */
export const StreamType = { HttpRequest: 0, HttpResponse: 1, Downstream: 2, Upstream: 3 } as const;
export const MAX_STREAM_TYPE = 3;

/** `proxy_metric_type_t`. */
export const METRIC_TYPES = ["counter", "gauge", "histogram"] as const;
export type MetricType = (typeof METRIC_TYPES)[number];

/** `wasi_errno_t` (the subset the spec uses). */
export const Errno = { Success: 0, Badf: 8, Fault: 21, Inval: 28, Notsup: 58 } as const;

/** `wasi_fd_id_t`. */
export const Fd = { Stdout: 1, Stderr: 2 } as const;

/** `wasi_clock_id_t`. */
export const ClockId = { Realtime: 0, Monotonic: 1 } as const;

/** The marker export every ABI v0.2.1 module carries. */
export const ABI_VERSION_EXPORT = "proxy_abi_version_0_2_1";

/** Largest `random_get` request served (as proxy-wasm-cpp-host). */
export const MAX_RANDOM_GET_BYTES = 64 * 1024;

/** Host functions the spec defines in module "env", with their parameter counts (all params and results i32 unless noted). */
export const ENV_HOST_FUNCTIONS = [
  "proxy_log",
  "proxy_get_log_level",
  "proxy_get_current_time_nanoseconds",
  "proxy_set_tick_period_milliseconds",
  "proxy_done",
  "proxy_set_effective_context",
  "proxy_set_buffer_bytes",
  "proxy_get_buffer_bytes",
  "proxy_get_buffer_status",
  "proxy_get_header_map_size",
  "proxy_get_header_map_pairs",
  "proxy_set_header_map_pairs",
  "proxy_get_header_map_value",
  "proxy_add_header_map_value",
  "proxy_replace_header_map_value",
  "proxy_remove_header_map_value",
  "proxy_continue_stream",
  "proxy_close_stream",
  "proxy_get_status",
  "proxy_send_local_response",
  "proxy_http_call",
  "proxy_grpc_call",
  "proxy_grpc_stream",
  "proxy_grpc_send",
  "proxy_grpc_cancel",
  "proxy_grpc_close",
  "proxy_set_shared_data",
  "proxy_get_shared_data",
  "proxy_register_shared_queue",
  "proxy_resolve_shared_queue",
  "proxy_enqueue_shared_queue",
  "proxy_dequeue_shared_queue",
  "proxy_define_metric",
  "proxy_record_metric",
  "proxy_increment_metric",
  "proxy_get_metric",
  "proxy_get_property",
  "proxy_set_property",
  "proxy_call_foreign_function",
] as const;

/** WASI functions the spec lists (module "wasi_snapshot_preview1"). */
export const WASI_SPEC_FUNCTIONS = [
  "fd_write",
  "clock_time_get",
  "random_get",
  "environ_sizes_get",
  "environ_get",
  "args_sizes_get",
  "args_get",
  "proc_exit",
] as const;

/**
 * Further WASI functions that wasm32-wasi toolchains import and proxy-wasm-cpp-host (Envoy) provides as
 * "not supported" answers, so such modules instantiate here as they do in Envoy.
 */
export const WASI_EXTRA_FUNCTIONS = [
  "fd_read",
  "fd_close",
  "fd_seek",
  "fd_fdstat_get",
  "fd_fdstat_set_flags",
  "fd_prestat_get",
  "fd_prestat_dir_name",
  "path_open",
  "poll_oneoff",
  "sched_yield",
] as const;
