// The smallest filter on the QHx proxy-wasm bindings: every callback keeps its default (continue). It
// is the bindings' example and the benchmark's baseline (the cost of the host and the ABI alone).
import { regionInit } from "../proxy-wasm/memory";
import { contextsInit } from "../proxy-wasm/context";
import { onStart } from "../proxy-wasm/exports";

export {
  proxy_abi_version_0_2_1, proxy_on_memory_allocate, proxy_on_context_create, proxy_on_vm_start,
  proxy_on_configure, proxy_on_new_connection, proxy_on_request_headers, proxy_on_request_body,
  proxy_on_response_headers, proxy_on_done, proxy_on_log, proxy_on_delete, proxy_on_tick,
  proxy_on_http_call_response,
} from "../proxy-wasm/exports";

function start(): void {
  regionInit(__heap_base);
  contextsInit(1024);
}

onStart(start);
