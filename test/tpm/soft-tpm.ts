/**
 * A software stand-in for the TPM side of the protocol, for unit tests that need no swtpm: marshals
 * TPMT_PUBLIC (RSA EK, RSA/ECC AK), TPMS_ATTEST quotes and TPMT_SIGNATUREs, and activates credentials
 * with the EK's private key.
 */
import crypto from "node:crypto";
import { tpm2b, u16be, u32be } from "../../host/server/attestation/tpm2/marshal.ts";
import { activateCredentialSoftware } from "../../host/server/attestation/tpm2/credential.ts";
import {
  TPMA_OBJECT,
  TPM_ALG,
  objectName,
  parseTpm2bPublic,
} from "../../host/server/attestation/tpm2/structures.ts";

const u64be = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
};

const jwk = (k: crypto.KeyObject) => k.export({ format: "jwk" });
const unb64u = (s: string | undefined) => Buffer.from(s ?? "", "base64url");

/** The default (TCG "template L-1") EK attributes: fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt. */
export const EK_ATTRS =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.adminWithPolicy |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.decrypt;

export const AK_ATTRS =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.userWithAuth |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.sign;

export function rsaPublicArea(
  key: crypto.KeyObject,
  o: { attributes: number; ek?: boolean; scheme?: number; authPolicy?: Buffer },
): Buffer {
  const j = jwk(key);
  const n = unb64u(j.n);
  const sym = o.ek
    ? Buffer.concat([u16be(TPM_ALG.AES), u16be(128), u16be(TPM_ALG.CFB)])
    : u16be(TPM_ALG.NULL);
  const scheme =
    o.scheme === undefined || o.scheme === TPM_ALG.NULL
      ? u16be(TPM_ALG.NULL)
      : Buffer.concat([u16be(o.scheme), u16be(TPM_ALG.SHA256)]);
  return Buffer.concat([
    u16be(TPM_ALG.RSA),
    u16be(TPM_ALG.SHA256),
    u32be(o.attributes),
    tpm2b(o.authPolicy ?? Buffer.alloc(0)),
    sym,
    scheme,
    u16be(n.length * 8),
    u32be(0),
    tpm2b(n),
  ]);
}

export function eccPublicArea(
  key: crypto.KeyObject,
  o: { attributes: number; curve?: number; ek?: boolean },
): Buffer {
  const j = jwk(key);
  return Buffer.concat([
    u16be(TPM_ALG.ECC),
    u16be(TPM_ALG.SHA256),
    u32be(o.attributes),
    tpm2b(Buffer.alloc(0)),
    o.ek ? Buffer.concat([u16be(TPM_ALG.AES), u16be(128), u16be(TPM_ALG.CFB)]) : u16be(TPM_ALG.NULL),
    o.ek ? u16be(TPM_ALG.NULL) : Buffer.concat([u16be(TPM_ALG.ECDSA), u16be(TPM_ALG.SHA256)]),
    u16be(o.curve ?? 0x0003),
    u16be(TPM_ALG.NULL),
    tpm2b(unb64u(j.x)),
    tpm2b(unb64u(j.y)),
  ]);
}

export function pcrSelection(banks: { hash: number; pcrs: number[] }[]): Buffer {
  return Buffer.concat([
    u32be(banks.length),
    ...banks.map((b) => {
      const bm = Buffer.alloc(3);
      for (const p of b.pcrs) bm[p >> 3]! |= 1 << (p & 7);
      return Buffer.concat([u16be(b.hash), Buffer.from([3]), bm]);
    }),
  ]);
}

export function quoteAttest(o: {
  signerName: Buffer;
  extraData: Buffer;
  pcrs: number[];
  pcrDigest: Buffer;
  magic?: number;
  type?: number;
  selection?: Buffer;
}): Buffer {
  return Buffer.concat([
    u32be(o.magic ?? 0xff544347),
    u16be(o.type ?? 0x8018),
    tpm2b(o.signerName),
    tpm2b(o.extraData),
    u64be(123456n),
    u32be(1),
    u32be(0),
    Buffer.from([1]),
    u64be(0x2019102300163636n),
    o.selection ?? pcrSelection([{ hash: TPM_ALG.SHA256, pcrs: o.pcrs }]),
    tpm2b(o.pcrDigest),
  ]);
}

/** TPMT_SIGNATURE over `data` by `key` (RSASSA / RSAPSS / ECDSA, SHA-256). */
export function tpmSign(key: crypto.KeyObject, data: Buffer, sigAlg: number): Buffer {
  if (sigAlg === TPM_ALG.ECDSA) {
    const sig = crypto.sign("sha256", data, { key, dsaEncoding: "ieee-p1363" });
    return Buffer.concat([
      u16be(sigAlg),
      u16be(TPM_ALG.SHA256),
      tpm2b(sig.subarray(0, 32)),
      tpm2b(sig.subarray(32)),
    ]);
  }
  const padding =
    sigAlg === TPM_ALG.RSAPSS ? crypto.constants.RSA_PKCS1_PSS_PADDING : crypto.constants.RSA_PKCS1_PADDING;
  const sig = crypto.sign("sha256", data, { key, padding, saltLength: 32 });
  return Buffer.concat([u16be(sigAlg), u16be(TPM_ALG.SHA256), tpm2b(sig)]);
}

/** The agent side of the protocol in software: an RSA EK and an ECC or RSA AK, PCR values at will. */
export class SoftTpm {
  readonly ek = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  readonly ak: crypto.KeyPairKeyObjectResult;
  readonly akAlg: "ecc" | "rsa";
  pcrs: Record<number, Buffer> = {};
  readonly akAttributes: number;
  constructor(akAlg: "ecc" | "rsa" = "ecc", akAttributes = AK_ATTRS) {
    this.akAlg = akAlg;
    this.akAttributes = akAttributes;
    this.ak =
      akAlg === "ecc"
        ? crypto.generateKeyPairSync("ec", { namedCurve: "P-256" })
        : crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  }
  get ekPublic(): Buffer {
    return tpm2b(rsaPublicArea(this.ek.publicKey, { attributes: EK_ATTRS, ek: true }));
  }
  get akPublic(): Buffer {
    return tpm2b(
      this.akAlg === "ecc"
        ? eccPublicArea(this.ak.publicKey, { attributes: this.akAttributes })
        : rsaPublicArea(this.ak.publicKey, { attributes: this.akAttributes, scheme: TPM_ALG.RSASSA }),
    );
  }
  get ekSpkiSha256(): string {
    return crypto
      .createHash("sha256")
      .update(this.ek.publicKey.export({ type: "spki", format: "der" }))
      .digest("hex");
  }
  payload(ekCert?: Buffer) {
    return {
      ek_pub: this.ekPublic.toString("base64"),
      ak_pub: this.akPublic.toString("base64"),
      ...(ekCert ? { ek_cert: ekCert.toString("base64") } : {}),
    };
  }
  pcr(i: number): Buffer {
    return this.pcrs[i] ?? Buffer.alloc(32);
  }
  /** TPM2_ActivateCredential with this EK, for this AK's Name. */
  activate(challenge: unknown): Buffer {
    const c = challenge as { credential_blob: string; encrypted_secret: string };
    const ek = parseTpm2bPublic(this.ekPublic);
    return activateCredentialSoftware(ek, this.ek.privateKey, objectName(parseTpm2bPublic(this.akPublic)), {
      credentialBlob: Buffer.from(c.credential_blob, "base64"),
      encryptedSecret: Buffer.from(c.encrypted_secret, "base64"),
    });
  }

  /** TPM2_Quote by the AK over the challenge's PCRs and nonce. */
  quote(challenge: unknown): { quote: string; signature: string; pcr_values: Record<string, string> } {
    const c = challenge as { nonce: string; pcrs: number[] };
    const akPub = parseTpm2bPublic(this.akPublic);
    const values = c.pcrs.map((i) => this.pcr(i));
    const quote = quoteAttest({
      signerName: objectName(akPub),
      extraData: Buffer.from(c.nonce, "base64"),
      pcrs: c.pcrs,
      pcrDigest: crypto.createHash("sha256").update(Buffer.concat(values)).digest(),
    });
    const sig = tpmSign(this.ak.privateKey, quote, this.akAlg === "ecc" ? TPM_ALG.ECDSA : TPM_ALG.RSASSA);
    return {
      quote: quote.toString("base64"),
      signature: sig.toString("base64"),
      pcr_values: Object.fromEntries(c.pcrs.map((i, k) => [String(i), values[k]!.toString("hex")])),
    };
  }

  answer(challenge: unknown) {
    return { secret: this.activate(challenge).toString("base64"), ...this.quote(challenge) };
  }
}
