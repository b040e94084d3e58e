import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Sha3, sha3, type Sha3Algorithm } from "../../host/crypto/sha3.ts";
import type { WasmFlavour } from "../../host/crypto/wasm.ts";

function ref(alg: Sha3Algorithm, data: Uint8Array, outLen?: number): Uint8Array {
  const h = alg.startsWith("shake") ? createHash(alg, { outputLength: outLen }) : createHash(alg);
  return new Uint8Array(h.update(data).digest());
}

const ALGS: Sha3Algorithm[] = ["sha3-256", "sha3-512", "shake128", "shake256"];
const FLAVOURS: WasmFlavour[] = ["simd", "scalar"];

describe.each(FLAVOURS)("SHA-3 kernels (%s)", (flavour) => {
  it.each(ALGS)("%s matches node:crypto on lengths 0..300 and random lengths", (alg) => {
    const lens = [...Array(301).keys(), 1000, 4095, 65535, 65536, 65537, 200_003];
    for (let i = 0; i < 40; i++) lens.push(Math.floor(Math.random() * 20000));
    for (const n of lens) {
      const data = randomBytes(n);
      const out = alg.startsWith("shake") ? 1 + (n % 500) : undefined;
      expect(Buffer.from(sha3(alg, data, out, flavour)).toString("hex")).toBe(
        Buffer.from(ref(alg, data, out)).toString("hex"),
      );
    }
  });

  it.each(ALGS)("%s incremental absorb in random chunks equals one-shot", (alg) => {
    for (let t = 0; t < 50; t++) {
      const data = randomBytes(Math.floor(Math.random() * 3000));
      const h = new Sha3(alg, flavour);
      let off = 0;
      while (off < data.length) {
        const n = Math.min(data.length - off, Math.floor(Math.random() * 300));
        h.update(data.subarray(off, off + n));
        off += n;
      }
      expect(Buffer.from(h.squeeze()).equals(Buffer.from(ref(alg, data)))).toBe(true);
    }
  });

  it.each(["shake128", "shake256"] as const)("%s incremental squeeze equals one long output", (alg) => {
    for (let t = 0; t < 30; t++) {
      const data = randomBytes(t * 37);
      const total = 1 + Math.floor(Math.random() * 2000);
      const h = new Sha3(alg, flavour).update(data);
      const parts: Uint8Array[] = [];
      let got = 0;
      while (got < total) {
        const n = Math.min(total - got, Math.floor(Math.random() * 400));
        parts.push(h.squeeze(n));
        got += n;
      }
      expect(Buffer.concat(parts).equals(Buffer.from(ref(alg, data, total)))).toBe(true);
    }
  });

  it("interleaved hashes do not disturb each other", () => {
    const a = new Sha3("sha3-256", flavour);
    const b = new Sha3("shake256", flavour);
    a.update(Buffer.from("abc"));
    b.update(Buffer.from("xyz"));
    a.update(Buffer.from("def"));
    expect(Buffer.from(a.squeeze()).equals(Buffer.from(ref("sha3-256", Buffer.from("abcdef"))))).toBe(true);
    expect(Buffer.from(b.squeeze(64)).equals(Buffer.from(ref("shake256", Buffer.from("xyz"), 64)))).toBe(
      true,
    );
  });

  it("rejects misuse with codes", () => {
    const h = new Sha3("sha3-256", flavour);
    h.squeeze();
    expect(() => h.update(new Uint8Array(1))).toThrow(expect.objectContaining({ code: "QHX_CRYPTO_STATE" }));
    expect(() => h.squeeze()).toThrow(expect.objectContaining({ code: "QHX_CRYPTO_STATE" }));
  });
});
