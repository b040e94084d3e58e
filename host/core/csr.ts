/**
 * PKCS#10 certification requests (RFC 2986), the proof that whoever asks for an SVID holds its private key.
 * Built and parsed with @peculiar/asn1-csr; signed and verified with node:crypto through alg.ts.
 */
import crypto, { type KeyObject } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import { CertificationRequest, CertificationRequestInfo } from "@peculiar/asn1-csr";
import { AlgorithmIdentifier, Name, SubjectPublicKeyInfo } from "@peculiar/asn1-x509";
import { SIG_OID, keyAlgForSigOid, keyAlgOf, signData, spki, verifyData } from "./alg.ts";
import {
  type CompositePrivateKey,
  type CompositePublicKey,
  compositeAlgForOid,
  compositeAlgOfSpki,
  compositeOid,
  compositeSign,
  compositeSpki,
  compositeVerify,
  isCompositeKey,
  parseCompositeSpki,
} from "./composite.ts";
import { VerificationError } from "./errors.ts";
import { readTlv } from "./x509.ts";

const ECDSA_PARAMS_ABSENT = new Set(Object.values(SIG_OID));

/**
 * A DER CSR for `privateKey`'s public half, with an empty subject (the SPIFFE ID comes from the entry).
 * A composite ML-DSA + ECDSA key self-signs with its composite algorithm (empty ctx), parameters absent.
 */
export function createCsr(privateKey: KeyObject | CompositePrivateKey): Uint8Array {
  const composite = isCompositeKey(privateKey);
  const info = new CertificationRequestInfo({
    version: 0,
    subject: new Name(),
    subjectPKInfo: AsnConvert.parse(
      composite ? new Uint8Array(compositeSpki(privateKey)) : spki(privateKey),
      SubjectPublicKeyInfo,
    ),
  });
  const infoDer = new Uint8Array(AsnConvert.serialize(info));
  const sig = composite ? compositeSign(privateKey, infoDer) : signData(privateKey, infoDer);
  const req = new CertificationRequest({
    certificationRequestInfo: info,
    signatureAlgorithm: new AlgorithmIdentifier({
      algorithm: composite ? compositeOid(privateKey.composite) : SIG_OID[keyAlgOf(privateKey)],
    }),
    signature: new Uint8Array(sig).buffer as ArrayBuffer,
  });
  return new Uint8Array(AsnConvert.serialize(req));
}

/**
 * Parse and verify a CSR's self-signature; returns the public key it certifies, a composite ML-DSA +
 * ECDSA key for a CSR signed with a composite algorithm (workload X509-SVIDs only).
 */
export function verifyWorkloadCsr(der: Uint8Array): KeyObject | CompositePublicKey {
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
  const composite = compositeAlgForOid(oid);
  if (composite) return verifyCompositeCsr(der, req, composite, bad);
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

/**
 * Parse and verify a CSR's self-signature; returns the node:crypto public key it certifies. Composite
 * keys are refused (agent SVIDs serve TLS, which has no composite signatures): see verifyWorkloadCsr.
 */
export function verifyCsr(der: Uint8Array): KeyObject {
  const k = verifyWorkloadCsr(der);
  if (isCompositeKey(k)) {
    throw new VerificationError("QHX_CSR_INVALID", "CSR: a composite key cannot be used here (TLS)");
  }
  return k;
}

function verifyCompositeCsr(
  der: Uint8Array,
  req: CertificationRequest,
  composite: NonNullable<ReturnType<typeof compositeAlgForOid>>,
  bad: (m: string) => VerificationError,
): CompositePublicKey {
  // parameters must be absent (not even NULL): the AlgorithmIdentifier holds the OID and nothing else
  const outerTlv = readTlv(der, 0);
  const sigAlgTlv = readTlv(der, readTlv(der, outerTlv.start).end);
  if (readTlv(der, sigAlgTlv.start).end !== sigAlgTlv.end) {
    throw bad("signature algorithm parameters must be absent");
  }
  const spkiDer = new Uint8Array(AsnConvert.serialize(req.certificationRequestInfo.subjectPKInfo));
  const keyAlg = compositeAlgOfSpki(spkiDer);
  if (keyAlg !== composite) {
    throw bad(`signature algorithm ${composite} does not match the ${keyAlg ?? "non-composite"} key`);
  }
  let publicKey: CompositePublicKey;
  try {
    publicKey = parseCompositeSpki(spkiDer);
  } catch {
    throw bad("unreadable composite public key");
  }
  const outer = readTlv(der, 0);
  const infoTlv = readTlv(der, outer.start);
  const infoDer = der.subarray(outer.start, infoTlv.end);
  if (!compositeVerify(publicKey, infoDer, new Uint8Array(req.signature))) {
    throw bad("the signature does not verify: the requester does not hold the private key");
  }
  return publicKey;
}
