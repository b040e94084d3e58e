import { randomBytes } from "node:crypto";
import { ml_dsa44, ml_dsa65, ml_dsa87 } from "@noble/post-quantum/ml-dsa.js";
import { describe, expect, it } from "vitest";
import { DSA_SIZES, pqProvider, type MlDsaParams } from "../../host/crypto/index.ts";
import { caseCount, hex, loadWycheproof, toHex } from "./vectors.ts";

const SETS: MlDsaParams[] = ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"];
const NOBLE = { "ML-DSA-44": ml_dsa44, "ML-DSA-65": ml_dsa65, "ML-DSA-87": ml_dsa87 } as const;
const FILES = {
  "ML-DSA-44": "mldsa_44_verify_test.json",
  "ML-DSA-65": "mldsa_65_verify_test.json",
  "ML-DSA-87": "mldsa_87_verify_test.json",
} as const;
const simd = pqProvider("wasm", "simd");
const scalar = pqProvider("wasm", "scalar");
const native = pqProvider("native");

describe.each(SETS)("%s Wycheproof verify vectors", (params) => {
  const file = loadWycheproof(FILES[params]);
  const cases = file.testGroups.flatMap((g) => g.tests.map((t) => ({ g, t })));

  it(`all ${file.numberOfTests} cases match on every backend`, () => {
    expect(cases.length).toBe(file.numberOfTests);
    let valid = 0;
    for (const { g, t } of cases) {
      const pk = hex(g["publicKey"]);
      const msg = hex(t["msg"]);
      const sig = hex(t["sig"]);
      const ctx = t["ctx"] === undefined ? undefined : hex(t["ctx"]);
      const want = t.result === "valid";
      if (want) valid++;
      for (const [name, p] of [
        ["simd", simd],
        ["scalar", scalar],
        ["native", native],
      ] as const) {
        expect(p.mlDsa.verify(params, pk, msg, sig, ctx), `${name} tcId ${t.tcId} ${t.comment ?? ""}`).toBe(
          want,
        );
      }
    }
    expect(valid).toBeGreaterThan(0);
  });
});

describe.each(SETS)("%s three-way differential (kernel, node:crypto, noble)", (params) => {
  const noble = NOBLE[params];
  const n = caseCount(300);

  it(`${n} random keys, messages and contexts`, () => {
    for (let i = 0; i < n; i++) {
      // noble is ~10x slower than the others: it checks every 4th case (every case with QHX_LONG_TESTS=1)
      const withNoble = i % 4 === 0 || n >= 10_000;
      const seed = randomBytes(32);
      const kernelKeys = (i % 2 ? scalar : simd).mlDsa.keygen(params, seed);
      const nativeKeys = native.mlDsa.keygen(params, seed);
      expect(toHex(kernelKeys.publicKey)).toBe(toHex(nativeKeys.publicKey));
      expect(toHex(kernelKeys.secretKey)).toBe(toHex(nativeKeys.secretKey));
      if (withNoble) {
        const nobleKeys = noble.keygen(seed);
        expect(toHex(kernelKeys.publicKey)).toBe(toHex(nobleKeys.publicKey));
        expect(toHex(kernelKeys.secretKey)).toBe(toHex(nobleKeys.secretKey));
      }
      const { publicKey: pk, secretKey: sk } = kernelKeys;
      const msg = randomBytes(i % 5 === 0 ? 0 : (i * 97) % 3000);
      const ctx = i % 3 === 0 ? undefined : randomBytes((i * 31) % 256);
      const opts = ctx === undefined ? {} : { context: ctx };

      // deterministic and explicit-randomness signatures: the two kernel builds agree, and equal noble's
      const det = simd.mlDsa.sign(params, sk, msg, { ...opts, random: false });
      const rnd = randomBytes(32);
      const hedged = scalar.mlDsa.sign(params, sk, msg, { ...opts, random: rnd });
      if (withNoble) {
        expect(toHex(det)).toBe(toHex(noble.sign(msg, sk, { ...opts, extraEntropy: false })));
        expect(toHex(hedged)).toBe(toHex(noble.sign(msg, sk, { ...opts, extraEntropy: rnd })));
      } else {
        expect(toHex(scalar.mlDsa.sign(params, sk, msg, { ...opts, random: false }))).toBe(toHex(det));
      }
      // node:crypto signs; everyone verifies everyone
      const nat = native.mlDsa.sign(params, sk, msg, opts);
      for (const sig of [det, hedged, nat]) {
        expect(simd.mlDsa.verify(params, pk, msg, sig, ctx)).toBe(true);
        expect(native.mlDsa.verify(params, pk, msg, sig, ctx)).toBe(true);
      }
      expect(scalar.mlDsa.verify(params, pk, msg, nat, ctx)).toBe(true);
      if (withNoble) {
        expect(noble.verify(hedged, msg, pk, opts)).toBe(true);
        expect(noble.verify(nat, msg, pk, opts)).toBe(true);
      }
      // mutations: signature byte, message, context, public key
      const bad = hedged.slice();
      const at = (i * 131) % bad.length;
      bad[at] = bad[at]! ^ (1 << (i % 8));
      const k = simd.mlDsa.verify(params, pk, msg, bad, ctx);
      expect(scalar.mlDsa.verify(params, pk, msg, bad, ctx)).toBe(k);
      expect(native.mlDsa.verify(params, pk, msg, bad, ctx)).toBe(k);
      if (withNoble) expect(noble.verify(bad, msg, pk, opts)).toBe(k);
      const msg2 = Buffer.concat([msg, Buffer.from([i & 255])]);
      expect(simd.mlDsa.verify(params, pk, msg2, hedged, ctx)).toBe(false);
      expect(simd.mlDsa.verify(params, pk, msg, hedged, randomBytes(3))).toBe(false);
      const pk2 = pk.slice();
      const pa = (i * 7) % pk2.length;
      pk2[pa] = pk2[pa]! ^ 0x10;
      expect(simd.mlDsa.verify(params, pk2, msg, hedged, ctx)).toBe(false);
      expect(native.mlDsa.verify(params, pk2, msg, hedged, ctx)).toBe(false);
    }
  });
});

describe("ML-DSA API contract", () => {
  const p = simd;
  it("errors carry codes; verify returns false on malformed input", () => {
    const { publicKey, secretKey } = p.mlDsa.keygen("ML-DSA-44");
    const msg = new Uint8Array([1, 2, 3]);
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as { code?: string }).code;
      }
      return "none";
    };
    expect(code(() => p.mlDsa.keygen("ML-DSA-13" as MlDsaParams))).toBe("QHX_CRYPTO_PARAMS");
    expect(code(() => p.mlDsa.keygen("ML-DSA-44", new Uint8Array(31)))).toBe("QHX_CRYPTO_LENGTH");
    expect(code(() => p.mlDsa.sign("ML-DSA-44", secretKey.subarray(1), msg))).toBe("QHX_CRYPTO_KEY_LENGTH");
    expect(code(() => p.mlDsa.sign("ML-DSA-44", secretKey, msg, { context: new Uint8Array(256) }))).toBe(
      "QHX_CRYPTO_CONTEXT",
    );
    expect(code(() => p.mlDsa.sign("ML-DSA-44", secretKey, msg, { random: new Uint8Array(5) }))).toBe(
      "QHX_CRYPTO_LENGTH",
    );
    expect(code(() => native.mlDsa.sign("ML-DSA-44", secretKey, msg, { context: new Uint8Array(256) }))).toBe(
      "QHX_CRYPTO_CONTEXT",
    );
    // s1 coefficients out of [-eta, eta]: both backends refuse the key
    const badKey = secretKey.slice();
    badKey.fill(0xff, 128, 160);
    expect(code(() => p.mlDsa.sign("ML-DSA-44", badKey, msg))).toBe("QHX_CRYPTO_KEY_INVALID");
    expect(code(() => scalar.mlDsa.sign("ML-DSA-44", badKey, msg, { random: false }))).toBe(
      "QHX_CRYPTO_KEY_INVALID",
    );
    expect(code(() => native.mlDsa.sign("ML-DSA-44", badKey, msg))).toBe("QHX_CRYPTO_KEY_INVALID");
    const sig = p.mlDsa.sign("ML-DSA-44", secretKey, msg);
    expect(sig.length).toBe(DSA_SIZES["ML-DSA-44"].signature);
    expect(p.mlDsa.verify("ML-DSA-44", publicKey, msg, sig)).toBe(true);
    expect(p.mlDsa.verify("ML-DSA-44", publicKey, msg, sig.subarray(1))).toBe(false);
    expect(p.mlDsa.verify("ML-DSA-44", publicKey.subarray(1), msg, sig)).toBe(false);
    expect(p.mlDsa.verify("ML-DSA-44", publicKey, msg, sig, new Uint8Array(256))).toBe(false);
    expect(p.mlDsa.verify("ML-DSA-44", publicKey, msg, "x" as unknown as Uint8Array)).toBe(false);
    expect(p.mlDsa.verify("ML-DSA-44", publicKey, msg, new Uint8Array(sig.length))).toBe(false);
    expect(p.mlDsa.verify("ML-DSA-44", publicKey, msg, new Uint8Array(sig.length).fill(255))).toBe(false);
    // messages larger than the kernel's I/O buffer are streamed
    const big = randomBytes(200_000);
    const bigSig = p.mlDsa.sign("ML-DSA-44", secretKey, big);
    expect(native.mlDsa.verify("ML-DSA-44", publicKey, big, bigSig)).toBe(true);
    expect(ml_dsa44.verify(bigSig, big, publicKey)).toBe(true);
  });
});
