import crypto from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  activateCredentialSoftware,
  fromToolsCredentialFile,
  kdfa,
  kdfe,
  makeCredential,
  toToolsCredentialFile,
} from "../../host/server/attestation/tpm2/credential.ts";
import { tpm2b } from "../../host/server/attestation/tpm2/marshal.ts";
import {
  TPMA_OBJECT,
  TPM_ALG,
  objectName,
  parsePcrSelection,
  parseQuoteAttest,
  parseSignature,
  parseTpm2bPublic,
  parseTpmtPublic,
  publicKeyOf,
  verifyTpmSignature,
} from "../../host/server/attestation/tpm2/structures.ts";
import fixture from "./fixtures/swtpm-rsa.json" with { type: "json" };
import {
  AK_ATTRS,
  EK_ATTRS,
  eccPublicArea,
  pcrSelection,
  quoteAttest,
  rsaPublicArea,
  tpmSign,
} from "./soft-tpm.ts";

const hex = (s: string) => Buffer.from(s, "hex");
const ekPub = hex(fixture.ek_pub);
const akPub = hex(fixture.ak_pub);
const quote = hex(fixture.quote);
const signature = hex(fixture.signature);

/** Every strict prefix, and the input with a trailing byte, must fail with the attestation error. */
function expectRejectsTruncationAndTrailing(parse: (b: Buffer) => unknown, good: Buffer) {
  for (let n = 0; n < good.length; n++) {
    expect(() => parse(good.subarray(0, n)), `prefix of ${n} bytes`).toThrow(
      expect.objectContaining({ code: "QHX_ATTESTATION_FAILED" }),
    );
  }
  expect(() => parse(Buffer.concat([good, Buffer.from([0])]))).toThrow(/trailing|size|tpm:/);
}

/** Random bytes never crash a parser with anything but the attestation error. */
function expectGarbageRejectedCleanly(parse: (b: Buffer) => unknown) {
  let seed = 1;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >> 16) & 0xff;
  for (let i = 0; i < 300; i++) {
    const b = Buffer.from(Array.from({ length: (i % 90) + 1 }, rnd));
    try {
      parse(b);
    } catch (e) {
      expect((e as { code?: string }).code).toBe("QHX_ATTESTATION_FAILED");
    }
  }
}

describe("TPM2B_PUBLIC / TPMT_PUBLIC", () => {
  it("parses a swtpm RSA EK (default template: AES-128-CFB, restricted decrypt)", () => {
    const ek = parseTpm2bPublic(ekPub);
    expect(ek.type).toBe("rsa");
    expect(ek.nameAlg).toBe(TPM_ALG.SHA256);
    expect(ek.keyBits).toBe(2048);
    expect(ek.symmetric).toEqual({ algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB });
    expect(ek.attributes & TPMA_OBJECT.restricted).toBeTruthy();
    expect(ek.attributes & TPMA_OBJECT.decrypt).toBeTruthy();
    expect(ek.authPolicy.length).toBe(32);
    expect(publicKeyOf(ek).asymmetricKeyDetails?.modulusLength).toBe(2048);
  });

  it("parses a swtpm RSA AK and computes the same Name as tpm2_createak", () => {
    const ak = parseTpm2bPublic(akPub);
    expect(ak.type).toBe("rsa");
    expect(ak.scheme).toBe(TPM_ALG.RSASSA);
    expect(ak.schemeHash).toBe(TPM_ALG.SHA256);
    const need = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.restricted | TPMA_OBJECT.sign;
    expect(ak.attributes & need).toBe(need);
    expect(objectName(ak).toString("hex")).toBe(fixture.ak_name);
  });

  it("round-trips a software ECC P-256 key and an RSA key", () => {
    const ec = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const p = parseTpmtPublic(eccPublicArea(ec.publicKey, { attributes: AK_ATTRS }));
    expect(p.type).toBe("ecc");
    expect(p.scheme).toBe(TPM_ALG.ECDSA);
    expect(publicKeyOf(p).export({ format: "jwk" })).toEqual(ec.publicKey.export({ format: "jwk" }));
    const rsa = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
    const q = parseTpmtPublic(rsaPublicArea(rsa.publicKey, { attributes: EK_ATTRS, ek: true }));
    expect(publicKeyOf(q).export({ format: "jwk" })).toEqual(rsa.publicKey.export({ format: "jwk" }));
  });

  it("refuses unsupported curves, types and inconsistent sizes", () => {
    const ec = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const p384 = parseTpmtPublic(eccPublicArea(ec.publicKey, { attributes: AK_ATTRS, curve: 0x0004 }));
    expect(() => publicKeyOf(p384)).toThrow(/not P-256/);
    const keyedHash = Buffer.from(akPub.subarray(2));
    keyedHash.writeUInt16BE(TPM_ALG.KEYEDHASH, 0);
    expect(() => parseTpmtPublic(keyedHash)).toThrow(/neither RSA nor ECC/);
    const badBits = Buffer.from(akPub.subarray(2));
    // keyBits follows type(2) nameAlg(2) attrs(4) authPolicy(2+0) symmetric(2) scheme(4)
    badBits.writeUInt16BE(1024, 16);
    expect(() => parseTpmtPublic(badBits)).toThrow(/modulus is 2048 bits/);
  });

  it("rejects truncated input, trailing bytes and garbage", () => {
    expectRejectsTruncationAndTrailing(parseTpm2bPublic, ekPub);
    expectRejectsTruncationAndTrailing(parseTpm2bPublic, akPub);
    expectRejectsTruncationAndTrailing(parseTpmtPublic, akPub.subarray(2));
    expectGarbageRejectedCleanly(parseTpm2bPublic);
    expectGarbageRejectedCleanly(parseTpmtPublic);
    // the TPM2B size disagrees with the content
    const big = Buffer.from(akPub);
    big.writeUInt16BE(akPub.length - 3, 0);
    expect(() => parseTpm2bPublic(big)).toThrow(/trailing/);
  });
});

describe("TPMS_ATTEST (quote)", () => {
  it("parses a swtpm quote: nonce, selection, and a digest over the PCR values", () => {
    const q = parseQuoteAttest(quote);
    expect(q.extraData.toString("hex")).toBe(fixture.nonce);
    expect(q.pcrSelect).toEqual([{ hash: TPM_ALG.SHA256, pcrs: [0, 7] }]);
    expect(q.pcrDigest).toEqual(crypto.createHash("sha256").update(hex(fixture.pcr_values)).digest());
    expect(q.qualifiedSigner.subarray(0, 2).readUInt16BE()).toBe(TPM_ALG.SHA256);
    // PCR 7 was extended once with sha256("qhx")
    const pcr7 = crypto
      .createHash("sha256")
      .update(Buffer.alloc(32))
      .update(crypto.createHash("sha256").update("qhx").digest())
      .digest("hex");
    expect(fixture.pcr_values.slice(64)).toBe(pcr7);
  });

  it("refuses a wrong magic or a non-quote type", () => {
    const m = Buffer.from(quote);
    m.writeUInt32BE(0xff544348, 0);
    expect(() => parseQuoteAttest(m)).toThrow(/magic/);
    const t = Buffer.from(quote);
    t.writeUInt16BE(0x8017, 4); // TPM_ST_ATTEST_CERTIFY
    expect(() => parseQuoteAttest(t)).toThrow(/not a quote/);
  });

  it("rejects truncated input, trailing bytes and garbage", () => {
    expectRejectsTruncationAndTrailing(parseQuoteAttest, quote);
    expectGarbageRejectedCleanly(parseQuoteAttest);
    const magicThenGarbage = Buffer.concat([Buffer.from("ff5443478018", "hex"), crypto.randomBytes(40)]);
    expect(() => parseQuoteAttest(magicThenGarbage)).toThrow(
      expect.objectContaining({ code: "QHX_ATTESTATION_FAILED" }),
    );
  });
});

describe("TPMT_SIGNATURE", () => {
  it("parses the swtpm RSASSA signature, which verifies over the quote with the AK", () => {
    const s = parseSignature(signature);
    expect(s.sigAlg).toBe(TPM_ALG.RSASSA);
    expect(s.hash).toBe(TPM_ALG.SHA256);
    const ak = parseTpm2bPublic(akPub);
    expect(verifyTpmSignature(ak, quote, s, TPM_ALG.SHA256)).toBe(true);
    const flipped = Buffer.from(quote);
    flipped[flipped.length - 1]! ^= 1;
    expect(verifyTpmSignature(ak, flipped, s, TPM_ALG.SHA256)).toBe(false);
  });

  it("verifies ECDSA and RSAPSS, and refuses a scheme the key does not allow", () => {
    const ec = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const ecPub = parseTpmtPublic(eccPublicArea(ec.publicKey, { attributes: AK_ATTRS }));
    const data = Buffer.from("attest me");
    expect(
      verifyTpmSignature(
        ecPub,
        data,
        parseSignature(tpmSign(ec.privateKey, data, TPM_ALG.ECDSA)),
        TPM_ALG.SHA256,
      ),
    ).toBe(true);
    const rsa = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
    const pss = parseTpmtPublic(
      rsaPublicArea(rsa.publicKey, { attributes: AK_ATTRS, scheme: TPM_ALG.RSAPSS }),
    );
    const pssSig = parseSignature(tpmSign(rsa.privateKey, data, TPM_ALG.RSAPSS));
    expect(verifyTpmSignature(pss, data, pssSig, TPM_ALG.SHA256)).toBe(true);
    // an RSASSA-only key's signature presented as PSS (and vice versa) is refused
    const ssa = parseTpmtPublic(
      rsaPublicArea(rsa.publicKey, { attributes: AK_ATTRS, scheme: TPM_ALG.RSASSA }),
    );
    expect(verifyTpmSignature(ssa, data, pssSig, TPM_ALG.SHA256)).toBe(false);
  });

  it("rejects truncated input, trailing bytes, unknown algorithms and garbage", () => {
    expectRejectsTruncationAndTrailing(parseSignature, signature);
    expect(() => parseSignature(Buffer.from("0005000b0000", "hex"))).toThrow(/not RSASSA, RSAPSS or ECDSA/);
    expectGarbageRejectedCleanly(parseSignature);
  });
});

describe("TPML_PCR_SELECTION", () => {
  it("parses banks and bitmaps", () => {
    const sel = parsePcrSelection(
      pcrSelection([
        { hash: TPM_ALG.SHA256, pcrs: [0, 1, 7, 16, 23] },
        { hash: TPM_ALG.SHA1, pcrs: [] },
      ]),
    );
    expect(sel).toEqual([
      { hash: TPM_ALG.SHA256, pcrs: [0, 1, 7, 16, 23] },
      { hash: TPM_ALG.SHA1, pcrs: [] },
    ]);
  });

  it("rejects truncation, absurd counts and bitmaps, and garbage", () => {
    expectRejectsTruncationAndTrailing(
      parsePcrSelection,
      pcrSelection([{ hash: TPM_ALG.SHA256, pcrs: [3] }]),
    );
    expect(() => parsePcrSelection(Buffer.from("ffffffff", "hex"))).toThrow(/banks/);
    expect(() => parsePcrSelection(Buffer.from("00000001000b40", "hex"))).toThrow(/bitmap/);
    expectGarbageRejectedCleanly(parsePcrSelection);
  });
});

describe("MakeCredential", () => {
  const rsa = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const ek = parseTpmtPublic(rsaPublicArea(rsa.publicKey, { attributes: EK_ATTRS, ek: true }));
  const name = objectName(parseTpm2bPublic(akPub));

  it("KDFa is SP 800-108 counter mode with the label's terminating zero", () => {
    const key = Buffer.alloc(32, 7);
    const expected = crypto
      .createHmac("sha256", key)
      .update(Buffer.from("00000001", "hex"))
      .update("STORAGE\0")
      .update(name)
      .update(Buffer.from("00000080", "hex"))
      .digest()
      .subarray(0, 16);
    expect(kdfa(TPM_ALG.SHA256, key, "STORAGE", name, Buffer.alloc(0), 128)).toEqual(expected);
    expect(kdfa(TPM_ALG.SHA256, key, "INTEGRITY", Buffer.alloc(0), Buffer.alloc(0), 512).length).toBe(64);
  });

  it("round-trips through a software ActivateCredential, and only for the same Name", () => {
    const secret = crypto.randomBytes(32);
    const cred = makeCredential(ek, name, secret);
    expect(cred.credentialBlob.readUInt16BE(0)).toBe(2 + 32 + 2 + 32);
    expect(cred.encryptedSecret.readUInt16BE(0)).toBe(256);
    expect(activateCredentialSoftware(ek, rsa.privateKey, name, cred)).toEqual(secret);
    const other = Buffer.from(name);
    other[5]! ^= 1;
    expect(() => activateCredentialSoftware(ek, rsa.privateKey, other, cred)).toThrow(/integrity/);
  });

  it("round-trips with an ECC P-256 EK (ephemeral ECDH, KDFe), and only for the same Name", () => {
    const ec = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const eccEk = parseTpmtPublic(eccPublicArea(ec.publicKey, { attributes: EK_ATTRS, ek: true }));
    const secret = crypto.randomBytes(32);
    const cred = makeCredential(eccEk, name, secret);
    expect(cred.encryptedSecret.readUInt16BE(0)).toBe(2 + 32 + 2 + 32);
    expect(activateCredentialSoftware(eccEk, ec.privateKey, name, cred)).toEqual(secret);
    const other = Buffer.from(name);
    other[9]! ^= 1;
    expect(() => activateCredentialSoftware(eccEk, ec.privateKey, other, cred)).toThrow(/integrity/);
  });

  it("KDFe is the concatenation KDF: H(counter || Z || label\\0 || partyU || partyV)", () => {
    const z = Buffer.alloc(32, 1);
    const u = Buffer.alloc(32, 2);
    const v = Buffer.alloc(32, 3);
    const expected = crypto
      .createHash("sha256")
      .update(Buffer.from("00000001", "hex"))
      .update(z)
      .update("IDENTITY\0")
      .update(u)
      .update(v)
      .digest();
    expect(kdfe(TPM_ALG.SHA256, z, "IDENTITY", u, v, 256)).toEqual(expected);
  });

  it("refuses EKs without AES-CFB protection", () => {
    const noSym = parseTpmtPublic(rsaPublicArea(rsa.publicKey, { attributes: EK_ATTRS }));
    expect(() => makeCredential(noSym, name, Buffer.alloc(32))).toThrow(/AES/);
    const ec = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const eccNoSym = parseTpmtPublic(eccPublicArea(ec.publicKey, { attributes: EK_ATTRS }));
    expect(() => makeCredential(eccNoSym, name, Buffer.alloc(32))).toThrow(/AES/);
  });

  it("writes and reads the tpm2-tools credential file (0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET)", () => {
    const cred = makeCredential(ek, name, crypto.randomBytes(16));
    const file = toToolsCredentialFile(cred);
    expect(file.subarray(0, 8).toString("hex")).toBe("badcc0de00000001");
    expect(file.length).toBe(8 + cred.credentialBlob.length + cred.encryptedSecret.length);
    expect(fromToolsCredentialFile(file)).toEqual(cred);
    const bad = Buffer.from(file);
    bad[0] = 0;
    expect(() => fromToolsCredentialFile(bad)).toThrow(/magic/);
    expect(() => fromToolsCredentialFile(file.subarray(0, 20))).toThrow(/truncated/);
    expect(tpm2b(Buffer.from([1, 2]))).toEqual(Buffer.from([0, 2, 1, 2]));
  });
});

describe("verifyTpmSignature with a quote from the software TPM", () => {
  it("verifies a quote made by soft-tpm", () => {
    const ec = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const pub = parseTpmtPublic(eccPublicArea(ec.publicKey, { attributes: AK_ATTRS }));
    const q = quoteAttest({
      signerName: objectName(pub),
      extraData: Buffer.alloc(32, 1),
      pcrs: [0],
      pcrDigest: Buffer.alloc(32),
    });
    expect(parseQuoteAttest(q).pcrSelect).toEqual([{ hash: TPM_ALG.SHA256, pcrs: [0] }]);
    expect(
      verifyTpmSignature(pub, q, parseSignature(tpmSign(ec.privateKey, q, TPM_ALG.ECDSA)), TPM_ALG.SHA256),
    ).toBe(true);
  });
});
