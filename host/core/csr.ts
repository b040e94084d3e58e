/**
 * PKCS#10 certification requests (RFC 2986), the proof that whoever asks for an SVID holds its private key.
 * Built and parsed with @peculiar/asn1-csr; signed and verified with node:crypto through alg.ts.
 */
import crypto, { type KeyObject } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import { CertificationRequest, CertificationRequestInfo } from "@peculiar/asn1-csr";
import { AlgorithmIdentifier, Name, SubjectPublicKeyInfo } from "@peculiar/asn1-x509";
import { SIG_OID, keyAlgForSigOid, keyAlgOf, signData, spki, verifyData } from "./alg.ts";
import { VerificationError } from "./errors.ts";
import { readTlv } from "./x509.ts";

const ECDSA_PARAMS_ABSENT = new Set(Object.values(SIG_OID));

/** A DER CSR for `privateKey`'s public half, with an empty subject (the SPIFFE ID comes from the entry). */
export function createCsr(privateKey: KeyObject): Uint8Array {
  const alg = keyAlgOf(privateKey);
  const info = new CertificationRequestInfo({
    version: 0,
    subject: new Name(),
    subjectPKInfo: AsnConvert.parse(spki(privateKey), SubjectPublicKeyInfo),
  });
  const infoDer = new Uint8Array(AsnConvert.serialize(info));
  const sig = signData(privateKey, infoDer, alg);
  const req = new CertificationRequest({
    certificationRequestInfo: info,
    signatureAlgorithm: new AlgorithmIdentifier({ algorithm: SIG_OID[alg] }),
    signature: new Uint8Array(sig).buffer as ArrayBuffer,
  });
  return new Uint8Array(AsnConvert.serialize(req));
}

/** Parse and verify a CSR's self-signature; returns the public key it certifies. */
export function verifyCsr(der: Uint8Array): KeyObject {
  const bad = (m: string) => new VerificationError("QHX_CSR_INVALID", `CSR: ${m}`);
  let req: CertificationRequest;
  try {
    const outer = readTlv(der, 0);
    if (outer.end !== der.length) throw new Error("trailing bytes");
    req = AsnConvert.parse(der, CertificationRequest);
  } catch (e) {
    throw bad(`not a DER PKCS#10 request (${(e as Error).message})`);
  }
  const oid = req.signatureAlgorithm.algorithm;
  const alg = keyAlgForSigOid(oid);
  if (!alg || !ECDSA_PARAMS_ABSENT.has(oid)) throw bad(`unsupported signature algorithm ${oid}`);
  if (req.signatureAlgorithm.parameters && req.signatureAlgorithm.parameters.byteLength > 0) {
    throw bad("signature algorithm parameters must be absent");
  }
  let publicKey: KeyObject;
  try {
    const spkiDer = new Uint8Array(AsnConvert.serialize(req.certificationRequestInfo.subjectPKInfo));
    publicKey = crypto.createPublicKey({ key: Buffer.from(spkiDer), format: "der", type: "spki" });
  } catch {
    throw bad("unreadable public key");
  }
  if (keyAlgOf(publicKey) !== alg)
    throw bad(`signature algorithm ${oid} does not match the ${keyAlgOf(publicKey)} key`);
  // the signed bytes are the exact CertificationRequestInfo TLV of the original encoding
  const outer = readTlv(der, 0);
  const infoTlv = readTlv(der, outer.start);
  const infoDer = der.subarray(outer.start, infoTlv.end);
  if (!verifyData(publicKey, infoDer, new Uint8Array(req.signature), { alg })) {
    throw bad("the signature does not verify: the requester does not hold the private key");
  }
  return publicKey;
}
