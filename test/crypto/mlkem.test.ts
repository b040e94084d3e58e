import { randomBytes } from "node:crypto";
import { ml_kem512, ml_kem768, ml_kem1024 } from "@noble/post-quantum/ml-kem.js";
import { describe, expect, it } from "vitest";
import { KEM_SIZES, pqProvider, type MlKemParams, type PqProvider } from "../../host/crypto/index.ts";
import { caseCount, hex, loadWycheproof, toHex } from "./vectors.ts";

const SETS: MlKemParams[] = ["ML-KEM-512", "ML-KEM-768", "ML-KEM-1024"];
const NOBLE = { "ML-KEM-512": ml_kem512, "ML-KEM-768": ml_kem768, "ML-KEM-1024": ml_kem1024 } as const;
const simd = pqProvider("wasm", "simd");
const scalar = pqProvider("wasm", "scalar");
const native = pqProvider("native");
const BACKENDS: [string, PqProvider][] = [
  ["simd", simd],
  ["scalar", scalar],
  ["native", native],
];

function attempt<T>(f: () => T): T | { error: string } {
  try {
    return f();
  } catch (e) {
    return { error: String((e as { code?: string }).code ?? e) };
  }
}

describe("ML-KEM-768 Wycheproof", () => {
  it("mlkem_768_test.json: keygen from seed, decapsulation, malformed lengths", () => {
    const file = loadWycheproof("mlkem_768_test.json");
    let count = 0;
    for (const g of file.testGroups)
      for (const t of g.tests) {
        count++;
        const seed = hex(t["seed"]);
        const c = hex(t["c"]);
        for (const [name, p] of BACKENDS) {
          const got = attempt(() => {
            const keys = p.mlKem.keygen("ML-KEM-768", seed);
            if (t["ek"] !== undefined) expect(toHex(keys.publicKey)).toBe(t["ek"]);
            return toHex(p.mlKem.decapsulate("ML-KEM-768", keys.secretKey, c));
          });
          const label = `${name} tcId ${t.tcId} ${t.comment ?? ""}`;
          if (t.result === "valid") expect(got, label).toBe(t["K"]);
          else expect(typeof got, label).toBe("object");
        }
      }
    expect(count).toBe(file.numberOfTests);
  });

  it("mlkem_768_encaps_test.json: encapsulation with the modulus check", () => {
    const file = loadWycheproof("mlkem_768_encaps_test.json");
    let count = 0;
    for (const g of file.testGroups)
      for (const t of g.tests) {
        count++;
        const ek = hex(t["ek"]);
        const m = hex(t["m"]);
        for (const [name, p] of BACKENDS) {
          const label = `${name} tcId ${t.tcId} ${t.comment ?? ""}`;
          // the native backend takes no m: it checks the key with a random m
          const got = attempt(() => p.mlKem.encapsulate("ML-KEM-768", ek, name === "native" ? undefined : m));
          if (t.result === "valid") {
            expect("error" in got, label).toBe(false);
            if (name !== "native" && !("error" in got)) {
              expect(toHex(got.cipherText), label).toBe(t["c"]);
              expect(toHex(got.sharedSecret), label).toBe(t["K"]);
            }
          } else {
            expect(got, label).toEqual({
              error: expect.stringMatching(/^QHX_CRYPTO_(KEY_INVALID|KEY_LENGTH)$/),
            });
          }
        }
      }
    expect(count).toBe(file.numberOfTests);
  });

  it("mlkem_768_semi_expanded_decaps_test.json: decapsulation-key checks", () => {
    const file = loadWycheproof("mlkem_768_semi_expanded_decaps_test.json");
    let count = 0;
    for (const g of file.testGroups)
      for (const t of g.tests) {
        count++;
        for (const [name, p] of BACKENDS) {
          const got = attempt(() => toHex(p.mlKem.decapsulate("ML-KEM-768", hex(t["dk"]), hex(t["c"]))));
          const label = `${name} tcId ${t.tcId} ${t.comment ?? ""}`;
          if (t.result === "valid") expect(got, label).toBe(t["K"]);
          else expect(typeof got, label).toBe("object");
        }
      }
    expect(count).toBe(file.numberOfTests);
  });
});

describe.each(SETS)("%s three-way differential (kernel, node:crypto, noble)", (params) => {
  const noble = NOBLE[params];
  const n = caseCount(300);
  it(`${n} random keys, encapsulations and mutated ciphertexts`, () => {
    for (let i = 0; i < n; i++) {
      const withNoble = i % 3 === 0 || n >= 10_000;
      const seed = randomBytes(64);
      const kk = (i % 2 ? scalar : simd).mlKem.keygen(params, seed);
      const nk = native.mlKem.keygen(params, seed);
      expect(toHex(kk.publicKey)).toBe(toHex(nk.publicKey));
      expect(toHex(kk.secretKey)).toBe(toHex(nk.secretKey));
      if (withNoble) expect(toHex(kk.secretKey)).toBe(toHex(noble.keygen(seed).secretKey));
      // kernel encapsulates (both builds agree; noble agrees), node and noble decapsulate
      const m = randomBytes(32);
      const e = simd.mlKem.encapsulate(params, kk.publicKey, m);
      const e2 = scalar.mlKem.encapsulate(params, kk.publicKey, m);
      expect(toHex(e2.cipherText)).toBe(toHex(e.cipherText));
      expect(toHex(e2.sharedSecret)).toBe(toHex(e.sharedSecret));
      expect(toHex(native.mlKem.decapsulate(params, kk.secretKey, e.cipherText))).toBe(toHex(e.sharedSecret));
      if (withNoble) {
        const ne = noble.encapsulate(kk.publicKey, m);
        expect(toHex(ne.cipherText)).toBe(toHex(e.cipherText));
        expect(toHex(ne.sharedSecret)).toBe(toHex(e.sharedSecret));
      }
      // node encapsulates, kernel decapsulates
      const n2 = native.mlKem.encapsulate(params, kk.publicKey);
      expect(toHex(simd.mlKem.decapsulate(params, kk.secretKey, n2.cipherText))).toBe(toHex(n2.sharedSecret));
      expect(toHex(scalar.mlKem.decapsulate(params, kk.secretKey, n2.cipherText))).toBe(
        toHex(n2.sharedSecret),
      );
      // mutated ciphertext: implicit rejection gives the same (pseudo-random) key everywhere
      const bad = e.cipherText.slice();
      const at = (i * 131) % bad.length;
      bad[at] = bad[at]! ^ (1 << (i % 8));
      const rej = toHex(simd.mlKem.decapsulate(params, kk.secretKey, bad));
      expect(rej).not.toBe(toHex(e.sharedSecret));
      expect(toHex(scalar.mlKem.decapsulate(params, kk.secretKey, bad))).toBe(rej);
      expect(toHex(native.mlKem.decapsulate(params, kk.secretKey, bad))).toBe(rej);
      if (withNoble) expect(toHex(noble.decapsulate(bad, kk.secretKey))).toBe(rej);
    }
  });

  it("rejects encapsulation keys with a coefficient >= q and corrupted decapsulation keys", () => {
    const { publicKey, secretKey } = simd.mlKem.keygen(params);
    for (let t = 0; t < 20; t++) {
      const ek = publicKey.slice();
      // set one 12-bit coefficient of t to a value in [q, 4096)
      const pairs = (KEM_SIZES[params].publicKey - 32) / 3;
      const j = ((t * 37) % pairs) * 3;
      const v = 3329 + ((t * 53) % 767);
      ek[j] = v & 255;
      ek[j + 1] = (ek[j + 1]! & 0xf0) | (v >> 8);
      for (const [, p] of BACKENDS) {
        expect(attempt(() => p.mlKem.encapsulate(params, ek))).toEqual({ error: "QHX_CRYPTO_KEY_INVALID" });
      }
    }
    const dk = secretKey.slice();
    const at = KEM_SIZES[params].secretKey - 40; // inside H(ek)
    dk[at] = dk[at]! ^ 1;
    const ct = simd.mlKem.encapsulate(params, publicKey).cipherText;
    for (const [, p] of BACKENDS) {
      expect(attempt(() => p.mlKem.decapsulate(params, dk, ct))).toHaveProperty("error");
    }
  });
});

describe("ML-KEM API contract", () => {
  it("errors carry codes", () => {
    const code = (f: () => unknown) => (attempt(f) as { error?: string }).error ?? "none";
    const { publicKey, secretKey } = simd.mlKem.keygen("ML-KEM-512");
    expect(code(() => simd.mlKem.keygen("ML-KEM-2048" as MlKemParams))).toBe("QHX_CRYPTO_PARAMS");
    expect(code(() => simd.mlKem.keygen("ML-KEM-512", new Uint8Array(32)))).toBe("QHX_CRYPTO_LENGTH");
    expect(code(() => simd.mlKem.encapsulate("ML-KEM-512", publicKey.subarray(1)))).toBe(
      "QHX_CRYPTO_KEY_LENGTH",
    );
    expect(code(() => simd.mlKem.decapsulate("ML-KEM-512", secretKey, new Uint8Array(767)))).toBe(
      "QHX_CRYPTO_CIPHERTEXT_LENGTH",
    );
    expect(code(() => native.mlKem.decapsulate("ML-KEM-512", secretKey, new Uint8Array(769)))).toBe(
      "QHX_CRYPTO_CIPHERTEXT_LENGTH",
    );
    expect(code(() => simd.mlKem.decapsulate("ML-KEM-512", secretKey.subarray(2), new Uint8Array(768)))).toBe(
      "QHX_CRYPTO_KEY_LENGTH",
    );
    const e = simd.mlKem.encapsulate("ML-KEM-512", publicKey);
    expect(toHex(simd.mlKem.decapsulate("ML-KEM-512", secretKey, e.cipherText))).toBe(toHex(e.sharedSecret));
  });
});
