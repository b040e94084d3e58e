/** A test "TPM manufacturer" CA that issues EK certificates for arbitrary EK public keys. */
import crypto from "node:crypto";
import { generateKeyPair } from "../../host/core/alg.ts";
import { toPem } from "../../host/core/pem.ts";
import {
  encodeName,
  issueCaCertificate,
  issueCertificateRaw,
  keyUsageExtension,
  randomSerial,
} from "../../host/core/x509.ts";

export interface EkCa {
  key: crypto.KeyObject;
  der: Uint8Array;
  pem: string;
  name: string;
}

const DAY = 86_400_000;

export function makeEkCa(name = "Test TPM Vendor EK CA"): EkCa {
  const kp = generateKeyPair("ec-p256");
  const now = Date.now();
  const der = issueCaCertificate({
    publicKey: kp.publicKey,
    signer: { privateKey: kp.privateKey },
    trustDomain: "tpm-vendor.test",
    subject: { organization: "Test TPM Vendor", commonName: name },
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 365 * DAY),
  });
  return { key: kp.privateKey, der, pem: toPem(der), name };
}

/** An EK certificate (DER) for the EK SubjectPublicKeyInfo `ekSpki`, signed by `ca`. */
export function issueEkCert(
  ca: EkCa,
  ekSpki: Uint8Array,
  validity?: { notBefore: Date; notAfter: Date },
): Buffer {
  const now = Date.now();
  return Buffer.from(
    issueCertificateRaw({
      serial: randomSerial(),
      issuer: encodeName({ organization: "Test TPM Vendor", commonName: ca.name }),
      subject: new Uint8Array([0x30, 0x00]),
      notBefore: validity?.notBefore ?? new Date(now - DAY),
      notAfter: validity?.notAfter ?? new Date(now + 3650 * DAY),
      publicKey: ekSpki,
      extensions: [keyUsageExtension(["keyEncipherment"])],
      signingKey: ca.key,
    }),
  );
}
