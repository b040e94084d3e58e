/**
 * Loader for the post-quantum kernels (build/qhx-crypto-simd.wasm and build/qhx-crypto.wasm, built by
 * `npm run build:wasm` from assembly/crypto). Compiled and instantiated synchronously, once per flavour.
 * The SIMD build is used when the engine validates Wasm SIMD, otherwise the scalar build; the choice
 * can be forced with `QHX_CRYPTO_WASM=simd|scalar`.
 */
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { QhxError } from "../core/errors.ts";

interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { exports: unknown };
  validate(bytes: Uint8Array): boolean;
}
const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** Raw exports of the crypto kernels (see assembly/crypto/index.ts). */
export interface CryptoWasmExports {
  readonly memory: WasmMemory;
  ioPtr(): number;
  ioCap(): number;
  pkPtr(): number;
  skPtr(): number;
  sigPtr(): number;
  seedPtr(): number;
  rndPtr(): number;
  ssPtr(): number;
  simd(): number;
  muAbsorb(len: number): void;
  shaInit(rate: number, ds: number): void;
  shaAbsorb(len: number): void;
  shaFinal(): void;
  shaSqueeze(len: number): void;
  shaCtxPtr(): number;
  shaCtxSize(): number;
  dsaKeygen(level: number): number;
  dsaSignBegin(level: number): number;
  dsaSignEnd(level: number): number;
  dsaVerifyBegin(level: number): number;
  dsaVerifyEnd(level: number, sigLen: number): number;
  kemKeygen(level: number): number;
  kemEncaps(level: number): number;
  kemDecaps(level: number): number;
  /** Lazy-reduction self-test of the ML-KEM inverse NTT; number of mismatches (0 expected). */
  kemSelfTest(seed: number): number;
}

export type WasmFlavour = "simd" | "scalar";

const FILES: Record<WasmFlavour, string> = { simd: "qhx-crypto-simd.wasm", scalar: "qhx-crypto.wasm" };

// (module (func (result v128) (v128.const i32x4 0 0 0 0)))
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0, 253, 12, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11,
]);

let simdSupported: boolean | undefined;

/** Whether this engine supports 128-bit Wasm SIMD. */
export function engineHasSimd(): boolean {
  if (simdSupported === undefined) {
    try {
      simdSupported = WA.validate(SIMD_PROBE);
    } catch {
      simdSupported = false;
    }
  }
  return simdSupported;
}

/** The flavour chosen at load time: QHX_CRYPTO_WASM if set, else SIMD when the engine has it. */
export function defaultFlavour(): WasmFlavour {
  const forced = process.env["QHX_CRYPTO_WASM"];
  if (forced === "simd" || forced === "scalar") return forced;
  if (forced !== undefined && forced !== "") {
    throw new QhxError("QHX_CONFIG_INVALID", `QHX_CRYPTO_WASM must be "simd" or "scalar", got "${forced}"`);
  }
  return engineHasSimd() ? "simd" : "scalar";
}

function locate(file: string): URL {
  const tried: string[] = [];
  for (const rel of [`../../build/${file}`, `../../../build/${file}`]) {
    const url = new URL(rel, import.meta.url);
    if (existsSync(url)) return url;
    tried.push(fileURLToPath(url));
  }
  throw new QhxError("QHX_WASM_MISSING", `${file} not found (looked at ${tried.join(", ")})`, {
    hint: "run npm run build:wasm",
  });
}

function readAsString(memory: WasmMemory, ptr: number): string {
  if (ptr === 0) return "";
  const bytes = new Uint32Array(memory.buffer, ptr - 4, 1)[0] ?? 0;
  return new TextDecoder("utf-16le").decode(new Uint8Array(memory.buffer, ptr, bytes));
}

const cache: Partial<Record<WasmFlavour, CryptoWasmExports>> = {};

/** Compile and instantiate one flavour of the kernels (once) and return its raw exports. */
export function loadCryptoWasm(flavour: WasmFlavour = defaultFlavour()): CryptoWasmExports {
  const hit = cache[flavour];
  if (hit) return hit;
  if (flavour === "simd" && !engineHasSimd()) {
    throw new QhxError("QHX_WASM_UNSUPPORTED", "this engine has no Wasm SIMD; use the scalar kernels");
  }
  const url = locate(FILES[flavour]);
  let exports: CryptoWasmExports;
  try {
    const module = new WA.Module(readFileSync(url));
    // eslint-disable-next-line prefer-const
    let memory: WasmMemory | undefined;
    const imports = {
      env: {
        abort(msg: number, file: number, line: number, column: number): never {
          const m = memory ? readAsString(memory, msg) : String(msg);
          const f = memory ? readAsString(memory, file) : String(file);
          throw new QhxError("QHX_WASM_ABORT", `${FILES[flavour]} aborted: ${m} at ${f}:${line}:${column}`);
        },
      },
    };
    exports = new WA.Instance(module, imports).exports as CryptoWasmExports;
    memory = exports.memory;
  } catch (e) {
    throw new QhxError("QHX_WASM_INVALID", `cannot instantiate ${fileURLToPath(url)}: ${String(e)}`, {
      hint: "run npm run build:wasm",
      cause: e,
    });
  }
  cache[flavour] = exports;
  return exports;
}
