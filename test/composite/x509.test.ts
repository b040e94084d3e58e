import crypto from "node:crypto";
import { describe, expect, it } from "vitest";
import { generateKeyPair, type KeyAlg } from "../../host/core/alg.ts";
import type { TrustBundle } from "../../host/core/bundle-types.ts";
import {
  COMPOSITE_ALGS,
  compositeOid,
  compositeSpki,
  compositeVerify,
  generateCompositeKeyPair,
  serializeCompositePublic,
} from "../../host/core/composite.ts";
import { issueCaCertificate, issueX509Svid, parseCertificate } from "../../host/core/x509.ts";
import { verifyX509Svid } from "../../host/core/x509-verify.ts";

const TD = "example.org";
const ID = `spiffe://${TD}/ns/prod/sa/api`;
const HOUR = 3_600_000;
const NOW = new Date(Date.UTC(2026, 5, 1, 12));
const NB = new Date(NOW.getTime() - HOUR);
const NA = new Date(NOW.getTime() + 24 * HOUR);

function root(alg: KeyAlg) {
  const k = generateKeyPair(alg);
  const der = issueCaCertificate({
    publicKey: k.publicKey,
    signer: { privateKey: k.privateKey },
    trustDomain: TD,
    notBefore: NB,
    notAfter: NA,
  });
  return { der, key: k.privateKey };
}

const bundles = (...roots: Uint8Array[]): Map<string, TrustBundle> =>
  new Map([[TD, { trustDomain: TD, x509Authorities: roots, jwtAuthorities: [], sequence: 1 }]]);

describe("X509-SVIDs with composite ML-DSA keys", () => {
  for (const caAlg of ["ec-p256", "ml-dsa-65"] as const) {
    for (const alg of COMPOSITE_ALGS) {
      it(`${alg} leaf signed by a ${caAlg} CA: issued, parsed, verified`, () => {
        const ca = root(caAlg);
        const kp = generateCompositeKeyPair(alg);
        const leaf = issueX509Svid({
          spiffeId: ID,
          publicKey: kp.publicKey,
          issuerCertDer: ca.der,
          issuerKey: ca.key,
          notBefore: NB,
          notAfter: NA,
        });
        const v = verifyX509Svid([leaf], bundles(ca.der), NOW);
        expect(v.spiffeId.toString()).toBe(ID);
        expect(v.leaf.keyAlg).toBe(alg);
        // SPKI is the composite one, byte for byte; SKI is SHA-1 of the BIT STRING contents
        expect(Buffer.from(v.leaf.spki).equals(compositeSpki(kp.publicKey))).toBe(true);
        const ski = crypto.createHash("sha1").update(serializeCompositePublic(kp.publicKey)).digest();
        expect(Buffer.from(v.leaf.subjectKeyId!).equals(ski)).toBe(true);
        // the certificate's composite key verifies signatures made with the workload's private key
        const msg = Buffer.from("receipt");
        const sig = await_sign(kp.privateKey, msg);
        expect(compositeVerify(v.leaf.compositeKey!, msg, sig)).toBe(true);
        // no component KeyObject is handed out as "the" public key
        expect(() => v.leaf.publicKey).toThrow(/composite/);
        // a private composite key is accepted in place of the public one
        const leaf2 = issueX509Svid({
          spiffeId: ID,
          publicKey: kp.privateKey,
          issuerCertDer: ca.der,
          issuerKey: ca.key,
          notBefore: NB,
          notAfter: NA,
        });
        expect(Buffer.from(parseCertificate(leaf2).spki).equals(compositeSpki(kp.publicKey))).toBe(true);
      });
    }
  }

  it("a corrupted composite public key in the leaf is refused as malformed", () => {
    const ca = root("ec-p256");
    const kp = generateCompositeKeyPair("mldsa65-ecdsa-p256");
    const leaf = Buffer.from(
      issueX509Svid({
        spiffeId: ID,
        publicKey: kp.publicKey,
        issuerCertDer: ca.der,
        issuerKey: ca.key,
        notBefore: NB,
        notAfter: NA,
      }),
    );
    // turn the uncompressed-point marker 0x04 into 0x02 (compressed): the composite parser refuses it
    const raw = serializeCompositePublic(kp.publicKey);
    const at = leaf.indexOf(raw);
    expect(at).toBeGreaterThan(0);
    leaf[at + 1952] = 2;
    expect(() => parseCertificate(leaf)).toThrow(/composite/);
    expect(() => verifyX509Svid([leaf], bundles(ca.der), NOW)).toThrow();
    // OID of the composite kept, signature tampered: fails on the signature
    const good = Buffer.from(
      issueX509Svid({
        spiffeId: ID,
        publicKey: kp.publicKey,
        issuerCertDer: ca.der,
        issuerKey: ca.key,
        notBefore: NB,
        notAfter: NA,
      }),
    );
    good[good.length - 10]! ^= 1;
    expect(() => verifyX509Svid([good], bundles(ca.der), NOW)).toThrow(/signature/);
    expect(compositeOid("mldsa65-ecdsa-p256")).toBe("1.3.6.1.5.5.7.6.45");
  });

  describe("composite CA certificates", () => {
    function compositeRoot(alg: (typeof COMPOSITE_ALGS)[number]) {
      const k = generateCompositeKeyPair(alg);
      const der = issueCaCertificate({
        publicKey: k.publicKey,
        signer: { privateKey: k.privateKey },
        trustDomain: TD,
        notBefore: NB,
        notAfter: NA,
      });
      return { der, key: k.privateKey };
    }

    for (const alg of COMPOSITE_ALGS) {
      it(`${alg} root: self-signed with the composite algorithm, signs composite and classical leaves`, () => {
        const ca = compositeRoot(alg);
        const c = parseCertificate(ca.der);
        expect(c.keyAlg).toBe(alg);
        expect(c.signatureAlgorithm).toBe(compositeOid(alg));
        expect(c.signatureAlgorithmHasParams).toBe(false);
        expect(compositeVerify(c.compositeKey!, c.tbs, c.signature)).toBe(true);
        for (const leafKey of [
          generateCompositeKeyPair("mldsa65-ecdsa-p256").publicKey,
          generateKeyPair("ec-p256").publicKey,
        ]) {
          const leaf = issueX509Svid({
            spiffeId: ID,
            publicKey: leafKey,
            issuerCertDer: ca.der,
            issuerKey: ca.key,
            notBefore: NB,
            notAfter: NA,
          });
          const v = verifyX509Svid([leaf], bundles(ca.der), NOW);
          expect(v.leaf.signatureAlgorithm).toBe(compositeOid(alg));
          expect(v.path).toHaveLength(2);
          const t = Buffer.from(leaf);
          t[t.length - 40]! ^= 1; // inside the ECDSA component of the composite signature
          expect(() => verifyX509Svid([t], bundles(ca.der), NOW)).toThrow(/signature does not verify/);
        }
      });
    }

    it("a composite intermediate under an ML-DSA root; wrong issuer keys are refused", () => {
      const r = root("ml-dsa-65");
      const ik = generateCompositeKeyPair("mldsa87-ecdsa-p384");
      const inter = issueCaCertificate({
        publicKey: ik.publicKey,
        signer: { privateKey: r.key, certDer: r.der },
        trustDomain: TD,
        notBefore: NB,
        notAfter: NA,
      });
      const leaf = issueX509Svid({
        spiffeId: ID,
        publicKey: generateCompositeKeyPair("mldsa44-ecdsa-p256").publicKey,
        issuerCertDer: inter,
        issuerKey: ik.privateKey,
        notBefore: NB,
        notAfter: NA,
      });
      const v = verifyX509Svid([leaf, inter], bundles(r.der), NOW);
      expect(v.path.map((c) => c.keyAlg)).toEqual(["mldsa44-ecdsa-p256", "mldsa87-ecdsa-p384", "ml-dsa-65"]);
      // another composite key of the same algorithm cannot issue under this intermediate
      expect(() =>
        issueX509Svid({
          spiffeId: ID,
          publicKey: generateKeyPair("ec-p256").publicKey,
          issuerCertDer: inter,
          issuerKey: generateCompositeKeyPair("mldsa87-ecdsa-p384").privateKey,
          notBefore: NB,
          notAfter: NA,
        }),
      ).toThrow(/does not match/);
      // a public composite key is not a signer
      expect(() =>
        issueX509Svid({
          spiffeId: ID,
          publicKey: generateKeyPair("ec-p256").publicKey,
          issuerCertDer: inter,
          issuerKey: ik.publicKey as never,
          notBefore: NB,
          notAfter: NA,
        }),
      ).toThrow(/private key/);
      // a leaf whose composite signature names another composite than the issuer's key is refused
      const other = compositeRoot("mldsa65-ecdsa-p256");
      const l2 = issueX509Svid({
        spiffeId: ID,
        publicKey: generateKeyPair("ec-p256").publicKey,
        issuerCertDer: other.der,
        issuerKey: other.key,
        notBefore: NB,
        notAfter: NA,
      });
      expect(() => verifyX509Svid([l2], bundles(r.der), NOW)).toThrow();
    });
  });
});

import { compositeSign } from "../../host/core/composite.ts";
function await_sign(k: Parameters<typeof compositeSign>[0], m: Buffer): Buffer {
  return compositeSign(k, m);
}
