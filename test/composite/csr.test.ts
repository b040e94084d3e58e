import { AsnConvert } from "@peculiar/asn1-schema";
import { CertificationRequest } from "@peculiar/asn1-csr";
import { AlgorithmIdentifier } from "@peculiar/asn1-x509";
import { describe, expect, it } from "vitest";
import { generateWorkloadKeyPair, workloadKeyAlgOf, WORKLOAD_KEY_ALGS } from "../../host/core/alg.ts";
import {
  COMPOSITE_ALGS,
  compositeOid,
  compositeSpki,
  compositeVerify,
  generateCompositeKeyPair,
  isCompositeKey,
} from "../../host/core/composite.ts";
import { createCsr, verifyCsr, verifyWorkloadCsr } from "../../host/core/csr.ts";

describe("composite PKCS#10 CSRs", () => {
  for (const alg of COMPOSITE_ALGS) {
    it(`${alg}: composite self-signature, round trip, any flipped byte refused`, () => {
      const kp = generateCompositeKeyPair(alg);
      const der = createCsr(kp.privateKey);
      const req = AsnConvert.parse(der, CertificationRequest);
      expect(req.signatureAlgorithm.algorithm).toBe(compositeOid(alg));
      expect(req.signatureAlgorithm.parameters).toBeUndefined();
      const info = AsnConvert.serialize(req.certificationRequestInfo);
      expect(compositeVerify(kp.publicKey, new Uint8Array(info), new Uint8Array(req.signature))).toBe(true);
      const k = verifyWorkloadCsr(der);
      expect(isCompositeKey(k) && compositeSpki(k).equals(compositeSpki(kp.publicKey))).toBe(true);
      for (const i of [10, Math.floor(der.length / 2), der.length - 3]) {
        const t = new Uint8Array(der);
        t[i]! ^= 0x40;
        expect(() => verifyWorkloadCsr(t)).toThrow();
      }
    });
  }

  it("verifyCsr (agent SVIDs, TLS) refuses a composite key; verifyWorkloadCsr still takes classical ones", () => {
    const der = createCsr(generateCompositeKeyPair("mldsa65-ecdsa-p256").privateKey);
    expect(() => verifyCsr(der)).toThrow(/composite/);
    const ec = generateWorkloadKeyPair("ec-p256");
    expect(workloadKeyAlgOf(verifyWorkloadCsr(createCsr(ec.privateKey as never)))).toBe("ec-p256");
    expect(WORKLOAD_KEY_ALGS).toContain("mldsa65-ecdsa-p256");
  });

  it("refuses a composite OID over a key of another composite, and parameters", () => {
    const der = createCsr(generateCompositeKeyPair("mldsa65-ecdsa-p256").privateKey);
    const req = AsnConvert.parse(der, CertificationRequest);
    req.signatureAlgorithm = new AlgorithmIdentifier({ algorithm: compositeOid("mldsa44-ecdsa-p256") });
    expect(() => verifyWorkloadCsr(new Uint8Array(AsnConvert.serialize(req)))).toThrow(/does not match/);
    req.signatureAlgorithm = new AlgorithmIdentifier({
      algorithm: compositeOid("mldsa65-ecdsa-p256"),
      parameters: new Uint8Array([5, 0]).buffer,
    });
    expect(() => verifyWorkloadCsr(new Uint8Array(AsnConvert.serialize(req)))).toThrow(/parameters/);
    // a classical OID over a composite key
    req.signatureAlgorithm = new AlgorithmIdentifier({ algorithm: "1.2.840.10045.4.3.2" });
    expect(() => verifyWorkloadCsr(new Uint8Array(AsnConvert.serialize(req)))).toThrow(/CSR/);
  });
});
