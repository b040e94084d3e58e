import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { AsnConvert } from "@peculiar/asn1-schema";
import { Certificate } from "@peculiar/asn1-x509";
import { describe, expect, it } from "vitest";
import {
  COMPOSITE_ALGS,
  type CompositeAlg,
  compositeAlgForOid,
  compositeAlgOfSpki,
  compositeMessageRepresentative,
  compositeOid,
  compositePkcs8,
  compositeSign,
  compositeSpki,
  compositeVerify,
  deserializeCompositePrivate,
  deserializeCompositePublic,
  generateCompositeKeyPair,
  parseCompositePkcs8,
  parseCompositeSpki,
  serializeCompositePrivate,
  serializeCompositePublic,
} from "../../host/core/composite.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
/** The draft's own test vectors (lamps-wg/draft-composite-sigs src/testvectors.json), three algorithms. */
const TV = JSON.parse(fs.readFileSync(path.join(here, "vectors.json"), "utf8")) as {
  m: string;
  ctx: string;
  tests: {
    tcId: string;
    pk: string;
    x5c: string;
    sk: string;
    sk_pkcs8: string;
    s: string;
    sWithContext: string;
  }[];
};
const b64 = (s: string) => Buffer.from(s, "base64");
const M = b64(TV.m);
const CTX = b64(TV.ctx);
const ALG_OF_TC: Record<string, CompositeAlg> = {
  "id-MLDSA44-ECDSA-P256-SHA256": "mldsa44-ecdsa-p256",
  "id-MLDSA65-ECDSA-P256-SHA512": "mldsa65-ecdsa-p256",
  "id-MLDSA87-ECDSA-P384-SHA512": "mldsa87-ecdsa-p384",
};

describe("composite ML-DSA: draft test vectors", () => {
  it("has vectors for every supported composite", () => {
    expect(TV.tests.map((t) => ALG_OF_TC[t.tcId]).sort()).toEqual([...COMPOSITE_ALGS].sort());
  });

  for (const tc of TV.tests) {
    const alg = ALG_OF_TC[tc.tcId]!;
    it(`${tc.tcId}: verifies s and sWithContext, keys round-trip byte for byte`, () => {
      const pk = deserializeCompositePublic(alg, b64(tc.pk));
      expect(serializeCompositePublic(pk).equals(b64(tc.pk))).toBe(true);
      expect(compositeVerify(pk, M, b64(tc.s))).toBe(true);
      expect(compositeVerify(pk, M, b64(tc.sWithContext), CTX)).toBe(true);
      // the context is bound: swapped contexts fail
      expect(compositeVerify(pk, M, b64(tc.s), CTX)).toBe(false);
      expect(compositeVerify(pk, M, b64(tc.sWithContext))).toBe(false);

      const sk = parseCompositePkcs8(b64(tc.sk_pkcs8));
      expect(sk.composite).toBe(alg);
      expect(serializeCompositePrivate(sk).equals(b64(tc.sk))).toBe(true);
      expect(compositePkcs8(sk).equals(b64(tc.sk_pkcs8))).toBe(true);
      expect(serializeCompositePublic(sk).equals(b64(tc.pk))).toBe(true);
      const sk2 = deserializeCompositePrivate(alg, b64(tc.sk));
      const fresh = compositeSign(sk2, M, CTX);
      expect(compositeVerify(pk, M, fresh, CTX)).toBe(true);
    });

    it(`${tc.tcId}: the self-signed x5c's SPKI parses and its signature verifies`, () => {
      const der = b64(tc.x5c);
      const cert = AsnConvert.parse(der, Certificate);
      expect(cert.signatureAlgorithm.algorithm).toBe(compositeOid(alg));
      const spkiDer = Buffer.from(AsnConvert.serialize(cert.tbsCertificate.subjectPublicKeyInfo));
      expect(compositeAlgOfSpki(spkiDer)).toBe(alg);
      const pk = parseCompositeSpki(spkiDer);
      expect(compositeSpki(pk).equals(spkiDer)).toBe(true);
      const tbs = Buffer.from(AsnConvert.serialize(cert.tbsCertificate));
      const sig = Buffer.from(cert.signatureValue);
      expect(compositeVerify(pk, tbs, sig)).toBe(true);
      tbs[tbs.length - 5]! ^= 1;
      expect(compositeVerify(pk, tbs, sig)).toBe(false);
    });
  }
});

describe("composite ML-DSA: independent reconstruction", () => {
  for (const alg of COMPOSITE_ALGS) {
    it(`${alg}: M' rebuilt by hand, each component verified by node:crypto alone`, () => {
      const kp = generateCompositeKeyPair(alg);
      const msg = crypto.randomBytes(100);
      const ctx = Buffer.from("qhx-test");
      const sig = compositeSign(kp.privateKey, msg, ctx);
      const [label, ph, ecHash, mlLen] = {
        "mldsa44-ecdsa-p256": ["COMPSIG-MLDSA44-ECDSA-P256-SHA256", "sha256", "sha256", 2420],
        "mldsa65-ecdsa-p256": ["COMPSIG-MLDSA65-ECDSA-P256-SHA512", "sha512", "sha256", 3309],
        "mldsa87-ecdsa-p384": ["COMPSIG-MLDSA87-ECDSA-P384-SHA512", "sha512", "sha384", 4627],
      }[alg] as [string, string, string, number];
      const pkLen = { 2420: 1312, 3309: 1952, 4627: 2592 }[mlLen]!;
      const mPrime = Buffer.concat([
        Buffer.from("436F6D706F73697465416C676F726974686D5369676E61747572657332303235", "hex"),
        Buffer.from(label),
        Buffer.from([ctx.length]),
        ctx,
        crypto.createHash(ph).update(msg).digest(),
      ]);
      expect(compositeMessageRepresentative(alg, msg, ctx).equals(mPrime)).toBe(true);
      const mlSig = sig.subarray(0, mlLen);
      const ecSig = sig.subarray(mlLen);
      const vin = { key: kp.publicKey.mldsa, context: Buffer.from(label) } as crypto.VerifyKeyObjectInput;
      expect(crypto.verify(null, mPrime, vin, mlSig)).toBe(true);
      // the ML-DSA component is bound to the Label as its FIPS 204 context: it fails with ctx=""
      expect(crypto.verify(null, mPrime, kp.publicKey.mldsa, mlSig)).toBe(false);
      expect(crypto.verify(ecHash, mPrime, { key: kp.publicKey.ecdsa, dsaEncoding: "der" }, ecSig)).toBe(
        true,
      );
      expect(ecSig[0]).toBe(0x30);
      // SPKI: composite OID, parameters absent, BIT STRING = mldsa pk || uncompressed point
      const spki = compositeSpki(kp.publicKey);
      const raw = serializeCompositePublic(kp.publicKey);
      expect(spki.subarray(spki.length - raw.length).equals(raw)).toBe(true);
      const mlSpki = kp.publicKey.mldsa.export({ type: "spki", format: "der" });
      expect(raw.subarray(0, pkLen).equals(mlSpki.subarray(mlSpki.length - pkLen))).toBe(true);
      expect(raw[pkLen]).toBe(4);
      const back = parseCompositeSpki(spki);
      expect(compositeVerify(back, msg, sig, ctx)).toBe(true);
      const pk8 = parseCompositePkcs8(compositePkcs8(kp.privateKey));
      expect(compositeVerify(kp.publicKey, msg, compositeSign(pk8, msg), new Uint8Array())).toBe(true);
      expect(compositeAlgForOid(compositeOid(alg))).toBe(alg);
    });
  }
});

describe("composite ML-DSA: every malformed input is refused", () => {
  const alg: CompositeAlg = "mldsa65-ecdsa-p256";
  const kp = generateCompositeKeyPair(alg);
  const msg = Buffer.from("hello composite");
  const sig = compositeSign(kp.privateKey, msg);

  it("verification is false (never throws) for tampered, truncated or mixed signatures", () => {
    expect(compositeVerify(kp.publicKey, msg, sig)).toBe(true);
    expect(compositeVerify(kp.publicKey, Buffer.from("other"), sig)).toBe(false);
    for (const i of [0, 1000, 3308, 3309, 3312, sig.length - 1]) {
      const t = Buffer.from(sig);
      t[i]! ^= 0x01;
      expect(compositeVerify(kp.publicKey, msg, t)).toBe(false);
    }
    expect(compositeVerify(kp.publicKey, msg, sig.subarray(0, 3309))).toBe(false);
    expect(compositeVerify(kp.publicKey, msg, sig.subarray(0, sig.length - 1))).toBe(false);
    expect(compositeVerify(kp.publicKey, msg, Buffer.concat([sig, Buffer.from([0])]))).toBe(false);
    expect(compositeVerify(kp.publicKey, msg, Buffer.alloc(0))).toBe(false);
    expect(compositeVerify(kp.publicKey, msg, sig, Buffer.alloc(256))).toBe(false);
    expect(() => compositeSign(kp.privateKey, msg, Buffer.alloc(256))).toThrow(/255/);
    // a valid ML-DSA half with another key's ECDSA half
    const other = generateCompositeKeyPair(alg);
    const sig2 = compositeSign(other.privateKey, msg);
    expect(
      compositeVerify(kp.publicKey, msg, Buffer.concat([sig.subarray(0, 3309), sig2.subarray(3309)])),
    ).toBe(false);
    // a P1363 ECDSA half instead of DER
    const p1363 = crypto.sign("sha256", compositeMessageRepresentative(alg, msg), {
      key: kp.privateKey.ecdsaPrivate,
      dsaEncoding: "ieee-p1363",
    });
    expect(compositeVerify(kp.publicKey, msg, Buffer.concat([sig.subarray(0, 3309), p1363]))).toBe(false);
    // the same keys under another composite label (cross-algorithm) fail: 44 and 65 differ in size anyway,
    // so relabel by verifying an mldsa44 signature under an mldsa65 key object claim
    const k44 = generateCompositeKeyPair("mldsa44-ecdsa-p256");
    const s44 = compositeSign(k44.privateKey, msg);
    expect(compositeVerify({ ...k44.publicKey, composite: "mldsa65-ecdsa-p256" }, msg, s44)).toBe(false);
    expect(compositeVerify({} as never, msg, sig)).toBe(false);
  });

  it("a bare component signature over M' alone (stripped composite) does not verify as a composite", () => {
    const mPrime = compositeMessageRepresentative(alg, msg);
    const mlPure = crypto.sign(null, mPrime, kp.privateKey.mldsaPrivate);
    const ec = sig.subarray(3309);
    expect(compositeVerify(kp.publicKey, msg, Buffer.concat([mlPure, ec]))).toBe(false);
  });

  it("SPKI parsing refuses malformed encodings", () => {
    const spki = compositeSpki(kp.publicKey);
    expect(() => parseCompositeSpki(Buffer.concat([spki, Buffer.from([0])]))).toThrow(/QHX|malformed/);
    expect(() => parseCompositeSpki(spki.subarray(0, spki.length - 1))).toThrow(/malformed/);
    const ecSpki = kp.publicKey.ecdsa.export({ type: "spki", format: "der" });
    expect(() => parseCompositeSpki(ecSpki)).toThrow(/malformed/);
    expect(compositeAlgOfSpki(ecSpki)).toBeUndefined();
    expect(compositeAlgOfSpki(Buffer.from([1, 2, 3]))).toBeUndefined();
    // wrong raw lengths and a compressed point
    const raw = serializeCompositePublic(kp.publicKey);
    expect(() => deserializeCompositePublic(alg, raw.subarray(1))).toThrow(/malformed/);
    expect(() => deserializeCompositePublic("mldsa44-ecdsa-p256", raw)).toThrow(/malformed/);
    const compressed = Buffer.from(raw);
    compressed[1952] = 2;
    expect(() => deserializeCompositePublic(alg, compressed)).toThrow(/malformed/);
    // a point not on the curve
    const offCurve = Buffer.from(raw);
    offCurve[raw.length - 1]! ^= 1;
    expect(() => deserializeCompositePublic(alg, offCurve)).toThrow(/malformed/);
    // nonzero unused-bits byte in the BIT STRING
    const ub = Buffer.from(spki);
    ub[spki.length - raw.length - 1] = 1;
    expect(() => parseCompositeSpki(ub)).toThrow(/malformed/);
  });

  it("PKCS#8 parsing refuses malformed encodings", () => {
    const der = compositePkcs8(kp.privateKey);
    expect(() => parseCompositePkcs8(der.subarray(0, der.length - 2))).toThrow(/malformed/);
    expect(() => parseCompositePkcs8(Buffer.concat([der, Buffer.from([0])]))).toThrow(/malformed/);
    const raw = serializeCompositePrivate(kp.privateKey);
    expect(raw.length).toBe(32 + 2 + 3 + 34 + 12);
    expect(() => deserializeCompositePrivate(alg, raw.subarray(0, 40))).toThrow(/malformed/);
    // a P-384 ECPrivateKey under a P-256 composite
    const k87 = generateCompositeKeyPair("mldsa87-ecdsa-p384");
    const raw87 = serializeCompositePrivate(k87.privateKey);
    expect(() => deserializeCompositePrivate(alg, raw87)).toThrow(/malformed/);
    const pkcs8Ec = kp.privateKey.ecdsaPrivate.export({ type: "pkcs8", format: "der" });
    expect(() => parseCompositePkcs8(pkcs8Ec)).toThrow(/malformed/);
  });
});
