import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Sha256, sha256 } from "../../host/crypto/p256.ts";
import type { WasmFlavour } from "../../host/crypto/wasm.ts";
import { toHex } from "./vectors.ts";

const FLAVOURS: WasmFlavour[] = ["simd", "scalar"];

/** Seeded PRNG (mulberry32) so every run hashes the same inputs. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function bytes(rnd: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}
const ref = (d: Uint8Array) => createHash("sha256").update(d).digest("hex");

describe.each(FLAVOURS)("SHA-256 kernel (%s)", (flavour) => {
  it("matches the FIPS 180-4 examples", () => {
    const ascii = (s: string) => new TextEncoder().encode(s);
    expect(toHex(sha256(ascii("abc"), flavour))).toBe(
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
    expect(toHex(sha256(ascii("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"), flavour))).toBe(
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    );
    expect(toHex(sha256(new Uint8Array(0), flavour))).toBe(
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
    // 1,000,000 x 'a': longer than the kernel's IO buffer, so it is streamed in chunks
    expect(toHex(sha256(new Uint8Array(1_000_000).fill(0x61), flavour))).toBe(
      "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    );
  });

  it("matches node:crypto at every padding boundary and on seeded random lengths 0..2000", () => {
    const rnd = prng(0x5eed256);
    const lens = [0, 1, 54, 55, 56, 57, 63, 64, 65, 111, 112, 119, 120, 127, 128, 129, 183, 184, 191, 192];
    for (let i = 0; i < 400; i++) lens.push(Math.floor(rnd() * 2001));
    for (const n of lens) {
      const d = bytes(rnd, n);
      expect(toHex(sha256(d, flavour)), `length ${n}`).toBe(ref(d));
    }
  });

  it("streams: random chunking equals one-shot, across 64-byte blocks and the IO buffer", () => {
    const rnd = prng(0xc0ffee);
    for (let t = 0; t < 60; t++) {
      const n = t === 0 ? 200_000 : Math.floor(rnd() * 3000);
      const d = bytes(rnd, n);
      const h = new Sha256(flavour);
      let off = 0;
      while (off < d.length) {
        const k = Math.min(d.length - off, Math.floor(rnd() * (t === 0 ? 90_000 : 200)));
        h.update(d.subarray(off, off + k));
        off += k;
      }
      expect(toHex(h.digest())).toBe(ref(d));
    }
  });

  it("keeps interleaved hashes apart and refuses reuse after digest", () => {
    const a = new Sha256(flavour).update(new TextEncoder().encode("ab"));
    const b = new Sha256(flavour).update(new Uint8Array(100).fill(7));
    a.update(new TextEncoder().encode("c"));
    // a one-shot in between must not disturb the streaming states either
    sha256(new Uint8Array(70_000), flavour);
    expect(toHex(a.digest())).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(toHex(b.digest())).toBe(ref(new Uint8Array(100).fill(7)));
    expect(() => a.digest()).toThrow(expect.objectContaining({ code: "QHX_CRYPTO_STATE" }));
    expect(() => a.update(new Uint8Array(1))).toThrow(expect.objectContaining({ code: "QHX_CRYPTO_STATE" }));
    expect(() => sha256("abc" as unknown as Uint8Array, flavour)).toThrow(
      expect.objectContaining({ code: "QHX_CRYPTO_TYPE" }),
    );
  });
});
