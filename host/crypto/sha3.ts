/** SHA3-256/512 and SHAKE128/256 from the Wasm kernels, with incremental absorb and squeeze. */
import { QhxError } from "../core/errors.ts";
import { loadCryptoWasm, type CryptoWasmExports, type WasmFlavour } from "./wasm.ts";

export type Sha3Algorithm = "sha3-256" | "sha3-512" | "shake128" | "shake256";

const SPEC: Record<Sha3Algorithm, { rate: number; ds: number; out: number }> = {
  "sha3-256": { rate: 136, ds: 0x06, out: 32 },
  "sha3-512": { rate: 72, ds: 0x06, out: 64 },
  shake128: { rate: 168, ds: 0x1f, out: 16 },
  shake256: { rate: 136, ds: 0x1f, out: 32 },
};

/**
 * One hash in progress. Its sponge state lives on the host side and is swapped into the kernel's
 * host context for each call, so any number of hashes can be in flight at once.
 */
export class Sha3 {
  readonly algorithm: Sha3Algorithm;
  private readonly w: CryptoWasmExports;
  private readonly state: Uint8Array;
  private finalized = false;

  constructor(algorithm: Sha3Algorithm, flavour?: WasmFlavour) {
    const spec = SPEC[algorithm];
    if (spec === undefined)
      throw new QhxError("QHX_CRYPTO_ALGORITHM", `unknown SHA-3 algorithm ${algorithm}`);
    this.algorithm = algorithm;
    this.w = loadCryptoWasm(flavour);
    this.w.shaInit(spec.rate, spec.ds);
    this.state = this.ctx().slice();
  }

  private ctx(): Uint8Array {
    return new Uint8Array(this.w.memory.buffer, this.w.shaCtxPtr(), this.w.shaCtxSize());
  }

  /** Absorb more input (not after squeezing started). */
  update(data: Uint8Array): this {
    if (this.finalized) throw new QhxError("QHX_CRYPTO_STATE", "cannot absorb after squeezing");
    const w = this.w;
    const cap = w.ioCap();
    this.ctx().set(this.state);
    for (let off = 0; off < data.length; off += cap) {
      const part = data.subarray(off, Math.min(data.length, off + cap));
      new Uint8Array(w.memory.buffer, w.ioPtr(), part.length).set(part);
      w.shaAbsorb(part.length);
    }
    this.state.set(this.ctx());
    return this;
  }

  /** Squeeze `len` more bytes (SHAKE: any number of calls), or the digest (SHA-3: once). */
  squeeze(len = SPEC[this.algorithm].out): Uint8Array {
    const spec = SPEC[this.algorithm];
    if (spec.ds === 0x06 && (this.finalized || len !== spec.out)) {
      throw new QhxError("QHX_CRYPTO_STATE", `${this.algorithm} has one ${spec.out}-byte digest`);
    }
    const w = this.w;
    const cap = w.ioCap();
    this.ctx().set(this.state);
    if (!this.finalized) {
      w.shaFinal();
      this.finalized = true;
    }
    const out = new Uint8Array(len);
    for (let off = 0; off < len; off += cap) {
      const n = Math.min(cap, len - off);
      w.shaSqueeze(n);
      out.set(new Uint8Array(w.memory.buffer, w.ioPtr(), n), off);
    }
    this.state.set(this.ctx());
    return out;
  }
}

/** One-shot SHA-3 / SHAKE (outLen only matters for SHAKE). */
export function sha3(
  algorithm: Sha3Algorithm,
  data: Uint8Array,
  outLen?: number,
  flavour?: WasmFlavour,
): Uint8Array {
  return new Sha3(algorithm, flavour).update(data).squeeze(outLen);
}
