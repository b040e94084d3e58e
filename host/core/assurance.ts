/**
 * Assurance level of an identity: how strongly the node it was issued under proved itself.
 *   hardware — TPM 2.0 (EK certificate, credential activation, quote)
 *   key      — proof of possession of an operator-certified key (x509pop)
 *   token    — a single-use join token
 * Every workload X509-SVID carries it in a non-critical extension (a UTF8String), so relying parties and
 * policy can see it without asking the server.
 */
import { ObjectIdentifier, Utf8String, fromBER } from "asn1js";
import { VerificationError } from "./errors.ts";

export const ASSURANCE_LEVELS = ["hardware", "key", "token"] as const;
export type Assurance = (typeof ASSURANCE_LEVELS)[number];

/**
 * OID of the QHx assurance extension: under the UUID arc 2.25 (ITU-T X.667), which needs no registration;
 * the UUID is QHx's own (3a1e0c52-9f7b-4c1d-8e55-7c0d51f0a7b1).
 */
export const ASSURANCE_OID = `2.25.${BigInt("0x3a1e0c529f7b4c1d8e557c0d51f0a7b1").toString()}`;

/**
 * asn1js (under @peculiar/asn1-x509, which parses certificates) renders arcs beyond 2^53 in its own
 * notation; compute that rendering once so a parsed extension can be recognised either way.
 */
const ASSURANCE_OID_AS_PARSED = (() => {
  const der = new ObjectIdentifier({ value: ASSURANCE_OID }).toBER();
  const r = fromBER(der);
  return (r.result as ObjectIdentifier).getValue();
})();

export function isAssuranceOid(oid: string): boolean {
  return oid === ASSURANCE_OID || oid === ASSURANCE_OID_AS_PARSED;
}

export function assuranceExtension(level: Assurance): { oid: string; critical: boolean; value: Uint8Array } {
  return {
    oid: ASSURANCE_OID,
    critical: false,
    value: new Uint8Array(new Utf8String({ value: level }).toBER()),
  };
}

/** Decode the extension's value; throws for anything but one of the known levels. */
export function decodeAssurance(value: Uint8Array): Assurance {
  const r = fromBER(value.slice().buffer);
  if (r.offset === -1 || !(r.result instanceof Utf8String)) {
    throw new VerificationError("QHX_BAD_ASSURANCE", "assurance extension is not a UTF8String");
  }
  const v = r.result.valueBlock.value;
  if (!(ASSURANCE_LEVELS as readonly string[]).includes(v)) {
    throw new VerificationError("QHX_BAD_ASSURANCE", `unknown assurance level "${v}"`);
  }
  return v as Assurance;
}

/** The assurance level an X509-SVID's certificate carries, if any. */
export function assuranceOf(cert: {
  extensions: { oid: string; value: Uint8Array }[];
}): Assurance | undefined {
  const ext = cert.extensions.find((e) => isAssuranceOid(e.oid));
  return ext ? decodeAssurance(ext.value) : undefined;
}
