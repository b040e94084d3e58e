/**
 * Loader for the AssemblyScript kernels in build/qhx-core.wasm (built by `npm run build:wasm` from
 * assembly/index.ts). The module is compiled and instantiated synchronously, once, on first use.
 *
 * The path is resolved relative to this module, so it works both from source (host/wasm/core.ts ->
 * ../../build/) and compiled by tsc (dist/host/wasm/core.js -> ../../../build/).
 */
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { QhxError } from "../core/errors.ts";
import { MAX_SPIFFE_ID_BYTES, SPIFFE_ID_CODES, type SpiffeIdCode } from "../core/spiffeid.ts";

// The project's tsconfig has no DOM lib, so the WebAssembly global is untyped: describe the part we use.
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(delta: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { exports: unknown };
}
const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** Raw exports of build/qhx-core.wasm. Later kernels add their exports here. */
export interface CoreWasmExports {
  readonly memory: WasmMemory;
  /** Address of the static SPIFFE ID input buffer. */
  spiffeInputPtr(): number;
  /** Its capacity in bytes (>= 2049). */
  spiffeInputCap(): number;
  /** Validate `len` UTF-8 bytes in the input buffer; the index into SPIFFE_ID_CODES (0 = OK). */
  checkSpiffeId(len: number): number;
  /** Byte offset where the trust domain ends; valid only after checkSpiffeId(len) returned 0. */
  spiffeTrustDomainEnd(len: number): number;
}

const CANDIDATES = ["../../build/qhx-core.wasm", "../../../build/qhx-core.wasm"];

function locateWasm(): URL {
  const tried: string[] = [];
  for (const rel of CANDIDATES) {
    const url = new URL(rel, import.meta.url);
    if (existsSync(url)) return url;
    tried.push(fileURLToPath(url));
  }
  throw new QhxError("QHX_WASM_MISSING", `qhx-core.wasm not found (looked at ${tried.join(", ")})`, {
    hint: "run npm run build:wasm",
  });
}

/** Decode an AssemblyScript string (UTF-16LE, byte length stored at ptr - 4) for abort messages. */
function readAsString(memory: WasmMemory, ptr: number): string {
  if (ptr === 0) return "";
  const bytes = new Uint32Array(memory.buffer, ptr - 4, 1)[0] ?? 0;
  return new TextDecoder("utf-16le").decode(new Uint8Array(memory.buffer, ptr, bytes));
}

let cached: CoreWasmExports | undefined;

/** Compile and instantiate build/qhx-core.wasm (once) and return its raw exports. */
export function loadCoreWasm(): CoreWasmExports {
  if (cached) return cached;
  const url = locateWasm();
  let exports: CoreWasmExports;
  try {
    const module = new WA.Module(readFileSync(url));
    // assigned once the instance exists; the abort import reads it lazily
    // eslint-disable-next-line prefer-const
    let memory: WasmMemory | undefined;
    const imports = {
      env: {
        abort(msg: number, file: number, line: number, column: number): never {
          const m = memory ? readAsString(memory, msg) : String(msg);
          const f = memory ? readAsString(memory, file) : String(file);
          throw new QhxError("QHX_WASM_ABORT", `qhx-core.wasm aborted: ${m} at ${f}:${line}:${column}`);
        },
        seed(): number {
          return Date.now();
        },
      },
    };
    exports = new WA.Instance(module, imports).exports as CoreWasmExports;
    memory = exports.memory;
  } catch (e) {
    throw new QhxError("QHX_WASM_INVALID", `cannot instantiate ${fileURLToPath(url)}: ${String(e)}`, {
      hint: "run npm run build:wasm",
      cause: e,
    });
  }
  // Every ID within the byte limit must fit, so that the kernel itself checks it (and its length).
  if (exports.spiffeInputCap() <= MAX_SPIFFE_ID_BYTES) {
    throw new QhxError("QHX_WASM_INVALID", `qhx-core.wasm SPIFFE input buffer is too small`, {
      hint: "run npm run build:wasm",
    });
  }
  cached = exports;
  return exports;
}

// The SPIFFE ID input buffer, as a view that is recreated if the memory grows (which detaches it).
let inputView: Uint8Array | undefined;
const encoder = new TextEncoder();

function spiffeInput(w: CoreWasmExports): Uint8Array {
  if (inputView === undefined || inputView.buffer !== w.memory.buffer || inputView.byteLength === 0) {
    inputView = new Uint8Array(w.memory.buffer, w.spiffeInputPtr(), w.spiffeInputCap());
  }
  return inputView;
}

/** Write `s` as UTF-8 into the input buffer; returns its byte length, or -1 if it does not fit. */
function writeSpiffeInput(w: CoreWasmExports, s: string): number {
  const buf = spiffeInput(w);
  // UTF-8 is at least one byte per UTF-16 code unit, so a longer string cannot fit.
  if (s.length > buf.length) return -1;
  const { read, written } = encoder.encodeInto(s, buf);
  return read < s.length ? -1 : written;
}

/** The Wasm SPIFFE ID validator; same result as checkSpiffeId in host/core/spiffeid.ts. */
export function wasmCheckSpiffeId(s: string): SpiffeIdCode {
  const w = loadCoreWasm();
  const len = writeSpiffeInput(w, s);
  // Did not fit: its UTF-8 length exceeds the buffer (> 2048 bytes), which the scan would report first.
  if (len < 0) return "SPIFFE_ID_TOO_LONG";
  const code = SPIFFE_ID_CODES[w.checkSpiffeId(len)];
  if (code === undefined) throw new QhxError("QHX_WASM_INVALID", "qhx-core.wasm returned an unknown code");
  return code;
}

/**
 * Validate with the Wasm kernel and, when valid, return the trust domain's UTF-8 byte range end
 * (as reported by spiffeTrustDomainEnd). Mostly for tests and later kernels.
 */
export function wasmSpiffeTrustDomainEnd(s: string): number {
  const w = loadCoreWasm();
  const len = writeSpiffeInput(w, s);
  if (len < 0 || w.checkSpiffeId(len) !== 0) return -1;
  return w.spiffeTrustDomainEnd(len);
}
