import crypto from "node:crypto";
import type { Clock } from "../../core/clock.ts";
import { QhxError } from "../../core/errors.ts";
import { fromPem } from "../../core/pem.ts";
import { makeCredential } from "./tpm2/credential.ts";
import { tpmFail } from "./tpm2/marshal.ts";
import {
  TPMA_OBJECT,
  TPM_ALG,
  TPM_ECC_NIST_P256,
  objectName,
  parseQuoteAttest,
  parseSignature,
  parseTpm2bPublic,
  publicKeyOf,
  verifyTpmSignature,
  type TpmPublic,
} from "./tpm2/structures.ts";
import type { AttestationStep, NodeAttestorVerifier } from "./types.ts";

export interface TpmVerifierOptions {
  /** PEM bundle of EK manufacturer CAs (roots and intermediates; each is a trust anchor) */
  ekCaBundlePem?: string;
  /** allowed EKs: lowercase hex SHA-256 of the EK's SubjectPublicKeyInfo DER */
  ekPublicKeyHashes?: string[];
  /** PCRs to quote; default 0–7 */
  pcrs?: number[];
  /** PCR bank and quote signature hash; only sha256 */
  hashAlg?: "sha256";
}

export const DEFAULT_TPM_PCRS: readonly number[] = [0, 1, 2, 3, 4, 5, 6, 7];

const MAX_B64 = 16_384;

function b64Field(o: Record<string, unknown>, key: string, optional = false): Buffer | undefined {
  const v = o[key];
  if (v === undefined && optional) return undefined;
  if (typeof v !== "string" || v.length > MAX_B64 || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) {
    throw tpmFail(`${key} must be base64`);
  }
  return Buffer.from(v, "base64");
}

const sha256hex = (b: Uint8Array) => crypto.createHash("sha256").update(b).digest("hex");

function spkiOf(key: crypto.KeyObject): Buffer {
  return key.export({ type: "spki", format: "der" });
}

/**
 * tpm: TPM 2.0 node attestation (hardware assurance).
 *
 * Round 1, agent → server: `{ ek_pub, ek_cert?, ak_pub }` (TPM2B_PUBLIC, DER certificate; base64). The
 * EK, RSA or ECC P-256, must be a restricted decryption key (as the TCG default templates make it); the
 * server accepts it if SHA-256 of its SubjectPublicKeyInfo is allow-listed, or its certificate chains to
 * a configured manufacturer CA and certifies exactly that key. The AK must be a restricted signing key
 * that never leaves the TPM (fixedTPM, fixedParent, sign, restricted, not decrypt), RSA or ECC P-256.
 * The server makes a credential (TPM2_MakeCredential in software; the seed by RSA-OAEP or ECDH)
 * protecting a random secret for the EK and the AK's Name, and sends it with a fresh nonce and the PCRs
 * to quote.
 *
 * Round 2, agent → server: `{ secret, quote, signature, pcr_values }`: the secret recovered by
 * TPM2_ActivateCredential (which the TPM performs only if the AK with that Name is loaded in the TPM that
 * holds the EK), a TPMS_ATTEST quote and TPMT_SIGNATURE by the AK, and the quoted PCR values (hex by
 * index). The server compares the secret in constant time, checks the quote (TPM-generated magic and
 * type, extraData = nonce, the selection = exactly the requested sha256 PCRs, pcrDigest = H(values)) and
 * that its signature verifies with the activated AK's key (the AK's scheme, SHA-256).
 *
 * Node ID: the first 32 hex digits of SHA-256(EK SPKI). Selectors: `tpm:ek_pubkey_sha256:<hex>`,
 * `tpm:ak_pubkey_sha256:<hex>`, `tpm:pcr:<i>:<hex>`.
 */
export class TpmVerifier implements NodeAttestorVerifier {
  readonly name = "tpm";
  readonly assurance = "hardware" as const;
  private readonly roots: crypto.X509Certificate[];
  private readonly allowed: Set<string>;
  private readonly pcrs: number[];
  private readonly clock: Clock;

  constructor(o: TpmVerifierOptions, clock: Clock) {
    this.roots = o.ekCaBundlePem ? fromPem(o.ekCaBundlePem).map((d) => new crypto.X509Certificate(d)) : [];
    if (o.ekCaBundlePem !== undefined && this.roots.length === 0) {
      throw new QhxError("QHX_INVALID_CONFIG", "tpm: the EK CA bundle has no certificate");
    }
    this.allowed = new Set();
    for (const h of o.ekPublicKeyHashes ?? []) {
      if (!/^[0-9a-fA-F]{64}$/.test(h)) {
        throw new QhxError("QHX_INVALID_CONFIG", `tpm: EK public key hash "${h}" is not 64 hex digits`);
      }
      this.allowed.add(h.toLowerCase());
    }
    if (this.roots.length === 0 && this.allowed.size === 0) {
      throw new QhxError("QHX_INVALID_CONFIG", "tpm: configure EK CAs or an EK public key allow-list", {
        hint: "set tpm.ekCaBundleFile or tpm.ekPublicKeyHashes",
      });
    }
    if (o.hashAlg !== undefined && o.hashAlg !== "sha256") {
      throw new QhxError("QHX_INVALID_CONFIG", `tpm: hash algorithm "${String(o.hashAlg)}" is not supported`);
    }
    const pcrs = [...new Set(o.pcrs ?? DEFAULT_TPM_PCRS)].sort((a, b) => a - b);
    if (pcrs.length === 0 || pcrs.some((p) => !Number.isInteger(p) || p < 0 || p > 23)) {
      throw new QhxError("QHX_INVALID_CONFIG", "tpm: pcrs must be a non-empty list of PCR indices 0–23");
    }
    this.pcrs = pcrs;
    this.clock = clock;
  }

  async begin(payload: unknown): Promise<AttestationStep> {
    if (typeof payload !== "object" || payload === null)
      throw tpmFail("payload must be { ek_pub, ak_pub, ek_cert? }");
    const p = payload as Record<string, unknown>;
    const ek = parseTpm2bPublic(b64Field(p, "ek_pub")!);
    const ekCertDer = b64Field(p, "ek_cert", true);
    const ak = parseTpm2bPublic(b64Field(p, "ak_pub")!);

    const ekNeed =
      TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt;
    if ((ek.attributes & ekNeed) !== ekNeed || ek.attributes & TPMA_OBJECT.sign) {
      throw tpmFail("ek_pub is not a restricted decryption key with fixedTPM and fixedParent");
    }
    if (ek.nameAlg === TPM_ALG.SHA1 || ak.nameAlg === TPM_ALG.SHA1) {
      throw tpmFail("SHA-1 name algorithms are not accepted for the EK or the AK");
    }
    const ekSpki = spkiOf(publicKeyOf(ek));
    const ekHash = sha256hex(ekSpki);
    this.checkEk(ekHash, ekSpki, ekCertDer);
    checkAk(ak);
    const akName = objectName(ak);
    const akHash = sha256hex(spkiOf(publicKeyOf(ak)));

    const secret = crypto.randomBytes(32);
    const cred = makeCredential(ek, akName, secret);
    const nonce = crypto.randomBytes(32);
    const pcrs = this.pcrs;
    return {
      challenge: {
        credential_blob: cred.credentialBlob.toString("base64"),
        encrypted_secret: cred.encryptedSecret.toString("base64"),
        nonce: nonce.toString("base64"),
        pcrs: [...pcrs],
        hash_alg: "sha256",
      },
      answer: async (response: unknown) => {
        if (typeof response !== "object" || response === null) {
          throw tpmFail("response must be { secret, quote, signature, pcr_values }");
        }
        const r = response as Record<string, unknown>;
        const got = b64Field(r, "secret")!;
        if (got.length !== secret.length || !crypto.timingSafeEqual(got, secret)) {
          throw tpmFail("credential activation failed: the AK is not bound to the EK's TPM");
        }
        const quoteBytes = b64Field(r, "quote")!;
        const quote = parseQuoteAttest(quoteBytes);
        const sig = parseSignature(b64Field(r, "signature")!);
        if (!quote.extraData.equals(nonce)) throw tpmFail("the quote does not carry this session's nonce");
        const sel = quote.pcrSelect.filter((s) => s.pcrs.length > 0);
        if (
          sel.length !== 1 ||
          sel[0]!.hash !== TPM_ALG.SHA256 ||
          sel[0]!.pcrs.length !== pcrs.length ||
          sel[0]!.pcrs.some((v, i) => v !== pcrs[i])
        ) {
          throw tpmFail(`the quote does not select exactly sha256 PCRs ${pcrs.join(",")}`);
        }
        const values = pcrValues(r.pcr_values, pcrs);
        const digest = crypto.createHash("sha256").update(Buffer.concat(values)).digest();
        if (!quote.pcrDigest.equals(digest))
          throw tpmFail("the reported PCR values do not match the quote's digest");
        if (!verifyTpmSignature(ak, quoteBytes, sig, TPM_ALG.SHA256)) {
          throw tpmFail("the quote signature does not verify with the AK");
        }
        return {
          done: {
            nodeId: ekHash.slice(0, 32),
            selectors: [
              { type: "tpm", value: `ek_pubkey_sha256:${ekHash}` },
              { type: "tpm", value: `ak_pubkey_sha256:${akHash}` },
              ...pcrs.map((i, k) => ({ type: "tpm", value: `pcr:${i}:${values[k]!.toString("hex")}` })),
            ],
            aliases: [],
          },
        };
      },
    };
  }

  private checkEk(ekHash: string, ekSpki: Buffer, certDer: Buffer | undefined): void {
    let cert: crypto.X509Certificate | undefined;
    if (certDer) {
      try {
        cert = new crypto.X509Certificate(certDer);
      } catch {
        throw tpmFail("ek_cert is not a DER certificate");
      }
      if (!spkiOf(cert.publicKey).equals(ekSpki)) throw tpmFail("the EK certificate does not certify ek_pub");
    }
    if (this.allowed.has(ekHash)) return;
    if (!cert) throw tpmFail(`EK ${ekHash} is not allow-listed and has no certificate`);
    if (this.roots.length === 0) throw tpmFail(`EK ${ekHash} is not allow-listed`);
    const now = this.clock.now();
    if (new Date(cert.validFrom) > now || new Date(cert.validTo) < now) {
      throw tpmFail("the EK certificate is not valid now");
    }
    const anchored = this.roots.some((root) => {
      try {
        return root.ca && cert.checkIssued(root) && cert.verify(root.publicKey);
      } catch {
        return false;
      }
    });
    if (!anchored) throw tpmFail("the EK certificate is not issued by a configured manufacturer CA");
  }
}

/** An attestation key: restricted signing key, generated in and bound to the TPM, RSA or ECC P-256. */
function checkAk(ak: TpmPublic): void {
  const a = ak.attributes;
  const need = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.restricted | TPMA_OBJECT.sign;
  if ((a & need) !== need || a & TPMA_OBJECT.decrypt) {
    throw tpmFail("ak_pub is not a restricted signing key with fixedTPM and fixedParent");
  }
  if (ak.type === "ecc" && ak.curve !== TPM_ECC_NIST_P256) throw tpmFail("the ECC AK is not on P-256");
  if (ak.type === "rsa" && (ak.keyBits ?? 0) < 2048) throw tpmFail("the RSA AK is shorter than 2048 bits");
}

function pcrValues(v: unknown, pcrs: number[]): Buffer[] {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    throw tpmFail("pcr_values must be { index: hex }");
  const o = v as Record<string, unknown>;
  if (Object.keys(o).length !== pcrs.length) throw tpmFail("pcr_values must hold exactly the requested PCRs");
  return pcrs.map((i) => {
    const h = o[String(i)];
    if (typeof h !== "string" || !/^[0-9a-fA-F]{64}$/.test(h))
      throw tpmFail(`pcr_values[${i}] must be 64 hex digits`);
    return Buffer.from(h, "hex");
  });
}
