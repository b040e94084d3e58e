import { ml_dsa65 } from "@noble/post-quantum/ml-dsa.js";
import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";
import { afterEach, describe, expect, it } from "vitest";
import { configurePq, engineHasSimd, mlDsa, mlKem, pqBackend, pqProvider } from "../../host/crypto/index.ts";
import { kernelDsaVerify, kernelKemDecaps } from "../../host/crypto/kernel.ts";
import { loadCryptoWasm, type CryptoWasmExports } from "../../host/crypto/wasm.ts";
import { toHex } from "./vectors.ts";

const saved = { backend: process.env["QHX_PQ_BACKEND"], wasm: process.env["QHX_CRYPTO_WASM"] };
afterEach(() => {
  for (const [k, v] of [
    ["QHX_PQ_BACKEND", saved.backend],
    ["QHX_CRYPTO_WASM", saved.wasm],
  ] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  configurePq({});
});

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return String((e as { code?: string }).code);
  }
  return "none";
}

describe("backend switch", () => {
  it("QHX_PQ_BACKEND selects node:crypto or the kernels; both are interchangeable", () => {
    delete process.env["QHX_PQ_BACKEND"];
    configurePq({});
    expect(pqBackend()).toBe("native");
    const keys = mlDsa.keygen("ML-DSA-65");
    const sigNative = mlDsa.sign("ML-DSA-65", keys.secretKey, new Uint8Array([1]));
    process.env["QHX_PQ_BACKEND"] = "wasm";
    configurePq({});
    expect(pqBackend()).toBe("wasm");
    expect(mlDsa.verify("ML-DSA-65", keys.publicKey, new Uint8Array([1]), sigNative)).toBe(true);
    const kem = mlKem.keygen("ML-KEM-768");
    const enc = mlKem.encapsulate("ML-KEM-768", kem.publicKey);
    configurePq({ backend: "native" });
    expect(pqBackend()).toBe("native");
    expect(toHex(mlKem.decapsulate("ML-KEM-768", kem.secretKey, enc.cipherText))).toBe(
      toHex(enc.sharedSecret),
    );
  });

  it("rejects unknown backends and flavours with QHX_CONFIG_INVALID", () => {
    process.env["QHX_PQ_BACKEND"] = "openssl";
    expect(code(() => configurePq({}))).toBe("QHX_CONFIG_INVALID");
    expect(code(() => pqProvider("gpu" as "wasm"))).toBe("QHX_CONFIG_INVALID");
    delete process.env["QHX_PQ_BACKEND"];
    process.env["QHX_CRYPTO_WASM"] = "avx";
    expect(code(() => pqProvider("wasm"))).toBe("QHX_CONFIG_INVALID");
  });

  it("loads the SIMD build when the engine has SIMD, the scalar build on request", () => {
    expect(engineHasSimd()).toBe(true);
    expect(loadCryptoWasm("simd").simd()).toBe(1);
    expect(loadCryptoWasm("scalar").simd()).toBe(0);
    process.env["QHX_CRYPTO_WASM"] = "scalar";
    const p = pqProvider("wasm");
    const k = p.mlKem.keygen("ML-KEM-512", new Uint8Array(64));
    expect(k.publicKey.length).toBe(800);
  });
});

describe("kernel self-tests", () => {
  it.each(["simd", "scalar"] as const)(
    "ML-KEM inverse NTT never overflows i16 on extreme inputs (%s)",
    (f) => {
      const w = loadCryptoWasm(f);
      let bad = 0;
      for (let s = 1; s <= 100; s++) bad += w.kemSelfTest(Math.imul(s, 2654435761) >>> 0);
      expect(bad).toBe(0);
    },
  );
});

describe("kernel failures never escape opaquely", () => {
  function trapping(w: CryptoWasmExports): CryptoWasmExports {
    return new Proxy(w, {
      get(target, prop, recv) {
        if (prop === "dsaVerifyEnd" || prop === "kemDecaps") {
          return () => {
            throw new (
              globalThis as unknown as { WebAssembly: { RuntimeError: ErrorConstructor } }
            ).WebAssembly.RuntimeError("unreachable");
          };
        }
        return Reflect.get(target, prop, recv);
      },
    });
  }
  it("a trap becomes QHX_CRYPTO_KERNEL_TRAP", () => {
    const w = trapping(loadCryptoWasm("simd"));
    const k = ml_dsa65.keygen(new Uint8Array(32));
    const sig = ml_dsa65.sign(new Uint8Array(0), k.secretKey);
    expect(
      code(() => kernelDsaVerify(w, "ML-DSA-65", k.publicKey, new Uint8Array(0), sig, new Uint8Array(0))),
    ).toBe("QHX_CRYPTO_KERNEL_TRAP");
    const kk = ml_kem768.keygen(new Uint8Array(64));
    expect(code(() => kernelKemDecaps(w, "ML-KEM-768", kk.secretKey, new Uint8Array(1088)))).toBe(
      "QHX_CRYPTO_KERNEL_TRAP",
    );
    // the real module still works afterwards
    expect(
      kernelDsaVerify(
        loadCryptoWasm("simd"),
        "ML-DSA-65",
        k.publicKey,
        new Uint8Array(0),
        sig,
        new Uint8Array(0),
      ),
    ).toBe(true);
  });
});

describe("key-expansion caches", () => {
  const p = pqProvider("wasm", "simd");
  it("ML-DSA: a public key that shares rho but not t1 is not confused with the cached one", () => {
    const k = p.mlDsa.keygen("ML-DSA-65", new Uint8Array(32).fill(1));
    const msg = new Uint8Array([7, 7]);
    const sig = p.mlDsa.sign("ML-DSA-65", k.secretKey, msg);
    expect(p.mlDsa.verify("ML-DSA-65", k.publicKey, msg, sig)).toBe(true);
    const pk2 = k.publicKey.slice();
    pk2[100] = pk2[100]! ^ 1; // inside t1, same rho
    expect(p.mlDsa.verify("ML-DSA-65", pk2, msg, sig)).toBe(ml_dsa65.verify(sig, msg, pk2));
    expect(p.mlDsa.verify("ML-DSA-65", pk2, msg, sig)).toBe(false);
    expect(p.mlDsa.verify("ML-DSA-65", k.publicKey, msg, sig)).toBe(true);
    // and across parameter sets
    const k44 = p.mlDsa.keygen("ML-DSA-44", new Uint8Array(32).fill(1));
    const s44 = p.mlDsa.sign("ML-DSA-44", k44.secretKey, msg);
    expect(p.mlDsa.verify("ML-DSA-44", k44.publicKey, msg, s44)).toBe(true);
    expect(p.mlDsa.verify("ML-DSA-65", k.publicKey, msg, sig)).toBe(true);
  });

  it("ML-KEM: an encapsulation key that shares rho but not t is not confused with the cached one", () => {
    const k = p.mlKem.keygen("ML-KEM-768", new Uint8Array(64).fill(2));
    const m = new Uint8Array(32).fill(3);
    const e1 = p.mlKem.encapsulate("ML-KEM-768", k.publicKey, m);
    const ek2 = k.publicKey.slice();
    ek2[0] = ek2[0]! ^ 1; // first coefficient of t, stays < q or not: compare with noble either way
    let want: string;
    try {
      want = toHex(ml_kem768.encapsulate(ek2, m).cipherText);
    } catch {
      want = "QHX_CRYPTO_KEY_INVALID";
    }
    let got: string;
    try {
      got = toHex(p.mlKem.encapsulate("ML-KEM-768", ek2, m).cipherText);
    } catch (e) {
      got = String((e as { code?: string }).code);
    }
    expect(got).toBe(want);
    expect(toHex(p.mlKem.encapsulate("ML-KEM-768", k.publicKey, m).cipherText)).toBe(toHex(e1.cipherText));
    expect(toHex(p.mlKem.decapsulate("ML-KEM-768", k.secretKey, e1.cipherText))).toBe(toHex(e1.sharedSecret));
  });
});
