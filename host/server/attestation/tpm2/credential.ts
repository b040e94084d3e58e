/**
 * TPM2_MakeCredential in software (TPM 2.0 Part 1 §24 "Credential Protection", Part 3 §12.6): protect a
 * secret so that only the TPM holding `ek` can recover it, and only by TPM2_ActivateCredential with a
 * loaded object whose Name is `name`.
 *
 *   seed       random, |H_ekNameAlg| bytes; encrypted to the EK with RSA-OAEP(H_ekNameAlg, label "IDENTITY\0"),
 *              or for an ECC P-256 EK derived by ECDH with an ephemeral key (KDFe, label "IDENTITY")
 *   symKey     KDFa(H, seed, "STORAGE", name, ∅, EK symmetric key bits)
 *   encIdentity = AES-CFB(symKey, IV = 0, TPM2B_DIGEST(secret))
 *   hmacKey    KDFa(H, seed, "INTEGRITY", ∅, ∅, |H| * 8)
 *   outerHMAC  HMAC_H(hmacKey, encIdentity || name)
 *   credentialBlob = TPM2B_ID_OBJECT(TPM2B_DIGEST(outerHMAC) || encIdentity)
 *   secret         = TPM2B_ENCRYPTED_SECRET(encrypted seed)
 */
import crypto from "node:crypto";
import { TpmReader, tpm2b, tpmFail, u32be } from "./marshal.ts";
import { TPM_ALG, hashInfo, publicKeyOf, type TpmPublic } from "./structures.ts";

/** KDFa (Part 1 §11.4.10.2): SP 800-108 counter-mode KDF with HMAC; the label gets its terminating 0. */
export function kdfa(
  hashAlg: number,
  key: Uint8Array,
  label: string,
  contextU: Uint8Array,
  contextV: Uint8Array,
  bits: number,
): Buffer {
  const h = hashInfo(hashAlg);
  const bytes = Math.ceil(bits / 8);
  const lab = Buffer.from(label.endsWith("\0") ? label : `${label}\0`, "latin1");
  const out: Buffer[] = [];
  for (let i = 1, got = 0; got < bytes; i++) {
    const block = crypto
      .createHmac(h.name, key)
      .update(u32be(i))
      .update(lab)
      .update(contextU)
      .update(contextV)
      .update(u32be(bits))
      .digest();
    out.push(block);
    got += block.length;
  }
  const k = Buffer.concat(out).subarray(0, bytes);
  // a bit count that is not a multiple of 8 masks the top of the first byte (Part 1 §11.4.10.2)
  if (bits % 8) k[0]! &= (1 << (bits % 8)) - 1;
  return k;
}

/**
 * KDFe (Part 1 §11.4.10.3): the SP 800-56A concatenation KDF, H(counter || Z || label\0 || partyU || partyV)
 * for counter = 1, 2, …
 */
export function kdfe(
  hashAlg: number,
  z: Uint8Array,
  label: string,
  partyU: Uint8Array,
  partyV: Uint8Array,
  bits: number,
): Buffer {
  const h = hashInfo(hashAlg);
  const bytes = Math.ceil(bits / 8);
  const lab = Buffer.from(label.endsWith("\0") ? label : `${label}\0`, "latin1");
  const out: Buffer[] = [];
  for (let i = 1, got = 0; got < bytes; i++) {
    const block = crypto
      .createHash(h.name)
      .update(u32be(i))
      .update(z)
      .update(lab)
      .update(partyU)
      .update(partyV)
      .digest();
    out.push(block);
    got += block.length;
  }
  const k = Buffer.concat(out).subarray(0, bytes);
  if (bits % 8) k[0]! &= (1 << (bits % 8)) - 1;
  return k;
}

const pad32 = (b: Uint8Array) => Buffer.concat([Buffer.alloc(Math.max(0, 32 - b.length)), b]);

/**
 * The seed and its encryption to the EK: RSA-OAEP with label "IDENTITY" (Part 1 §24.4, B.10.3), or for a
 * P-256 EK an ephemeral ECDH key: seed = KDFe(H, Z, "IDENTITY", ephemeral.x, ek.x), and the secret is the
 * ephemeral public point (TPMS_ECC_POINT; Part 1 C.6.4).
 */
function seedFor(ek: TpmPublic, size: number): { seed: Buffer; encrypted: Buffer } {
  const h = hashInfo(ek.nameAlg);
  if (ek.type === "rsa") {
    const seed = crypto.randomBytes(size);
    const encrypted = crypto.publicEncrypt(
      {
        key: publicKeyOf(ek),
        padding: crypto.constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: h.name,
        oaepLabel: Buffer.from("IDENTITY\0", "latin1"),
      },
      seed,
    );
    return { seed, encrypted };
  }
  publicKeyOf(ek); // P-256 and on the curve
  const eph = crypto.createECDH("prime256v1");
  eph.generateKeys();
  const point = eph.getPublicKey(); // 04 || x || y
  const ephX = point.subarray(1, 33);
  const ephY = point.subarray(33, 65);
  const ekPoint = Buffer.concat([Buffer.from([4]), pad32(ek.x!), pad32(ek.y!)]);
  let z: Buffer;
  try {
    z = eph.computeSecret(ekPoint);
  } catch {
    throw tpmFail("the EK's ECC point is not on P-256");
  }
  const seed = kdfe(ek.nameAlg, z, "IDENTITY", ephX, ek.x!, size * 8);
  return { seed, encrypted: Buffer.concat([tpm2b(ephX), tpm2b(ephY)]) };
}

export interface MadeCredential {
  /** TPM2B_ID_OBJECT */
  credentialBlob: Buffer;
  /** TPM2B_ENCRYPTED_SECRET */
  encryptedSecret: Buffer;
}

function ekProtection(ek: TpmPublic): { hash: number; cipher: string; keyBits: number } {
  const sym = ek.symmetric;
  if (
    sym.algorithm !== TPM_ALG.AES ||
    sym.mode !== TPM_ALG.CFB ||
    (sym.keyBits !== 128 && sym.keyBits !== 256)
  ) {
    throw tpmFail("the EK is not a storage key with AES-128/256-CFB protection");
  }
  return { hash: ek.nameAlg, cipher: `aes-${sym.keyBits}-cfb`, keyBits: sym.keyBits };
}

/** Make a credential for the object named `name`, to be activated with the (RSA or ECC P-256) EK `ek`. */
export function makeCredential(ek: TpmPublic, name: Uint8Array, secret: Uint8Array): MadeCredential {
  const { hash, cipher, keyBits } = ekProtection(ek);
  const h = hashInfo(hash);
  if (secret.length > h.size) throw tpmFail("credential longer than the EK's digest");
  const { seed, encrypted: encSeed } = seedFor(ek, h.size);
  const symKey = kdfa(hash, seed, "STORAGE", name, Buffer.alloc(0), keyBits);
  const c = crypto.createCipheriv(cipher, symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([c.update(tpm2b(secret)), c.final()]);
  const hmacKey = kdfa(hash, seed, "INTEGRITY", Buffer.alloc(0), Buffer.alloc(0), h.size * 8);
  const outerHmac = crypto.createHmac(h.name, hmacKey).update(encIdentity).update(name).digest();
  return {
    credentialBlob: tpm2b(Buffer.concat([tpm2b(outerHmac), encIdentity])),
    encryptedSecret: tpm2b(encSeed),
  };
}

/**
 * TPM2_ActivateCredential in software, given the EK's private key: the inverse of makeCredential. Tests
 * use it; a real agent asks its TPM.
 */
export function activateCredentialSoftware(
  ek: TpmPublic,
  ekPrivate: crypto.KeyObject,
  name: Uint8Array,
  cred: MadeCredential,
): Buffer {
  const { hash, cipher, keyBits } = ekProtection(ek);
  const h = hashInfo(hash);
  const sr = new TpmReader(cred.encryptedSecret, "TPM2B_ENCRYPTED_SECRET");
  const encSeed = sr.tpm2b("secret");
  sr.end();
  let seed: Buffer;
  if (ek.type === "rsa") {
    seed = crypto.privateDecrypt(
      {
        key: ekPrivate,
        padding: crypto.constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: h.name,
        oaepLabel: Buffer.from("IDENTITY\0", "latin1"),
      },
      encSeed,
    );
  } else {
    const pr = new TpmReader(encSeed, "TPMS_ECC_POINT");
    const x = pr.tpm2b("x", 32);
    const y = pr.tpm2b("y", 32);
    pr.end();
    const ecdh = crypto.createECDH("prime256v1");
    ecdh.setPrivateKey(Buffer.from(ekPrivate.export({ format: "jwk" }).d ?? "", "base64url"));
    const z = ecdh.computeSecret(Buffer.concat([Buffer.from([4]), pad32(x), pad32(y)]));
    seed = kdfe(hash, z, "IDENTITY", x, ek.x!, h.size * 8);
  }
  const cr = new TpmReader(cred.credentialBlob, "TPM2B_ID_OBJECT");
  const idObject = new TpmReader(cr.tpm2b("credential"), "TPMS_ID_OBJECT");
  cr.end();
  const outerHmac = idObject.tpm2b("integrityHMAC", 64);
  const encIdentity = idObject.bytes(idObject.remaining, "encIdentity");
  const hmacKey = kdfa(hash, seed, "INTEGRITY", Buffer.alloc(0), Buffer.alloc(0), h.size * 8);
  const expect = crypto.createHmac(h.name, hmacKey).update(encIdentity).update(name).digest();
  if (expect.length !== outerHmac.length || !crypto.timingSafeEqual(expect, outerHmac)) {
    throw tpmFail("credential integrity check failed");
  }
  const symKey = kdfa(hash, seed, "STORAGE", name, Buffer.alloc(0), keyBits);
  const d = crypto.createDecipheriv(cipher, symKey, Buffer.alloc(16));
  const plain = Buffer.concat([d.update(encIdentity), d.final()]);
  const pr = new TpmReader(plain, "TPM2B_DIGEST");
  const secret = pr.tpm2b("credential", 64);
  pr.end();
  return secret;
}

const TOOLS_MAGIC = 0xbadcc0de;

/**
 * The file tpm2_makecredential writes and tpm2_activatecredential -i reads (tpm2-tools lib/files.c):
 * BE32 0xBADCC0DE || BE32 version 1 || TPM2B_ID_OBJECT || TPM2B_ENCRYPTED_SECRET.
 */
export function toToolsCredentialFile(cred: MadeCredential): Buffer {
  return Buffer.concat([u32be(TOOLS_MAGIC), u32be(1), cred.credentialBlob, cred.encryptedSecret]);
}

export function fromToolsCredentialFile(file: Uint8Array): MadeCredential {
  const r = new TpmReader(file, "tpm2-tools credential file");
  if (r.u32("magic") !== TOOLS_MAGIC) throw tpmFail("not a tpm2-tools file (bad magic)");
  if (r.u32("version") !== 1) throw tpmFail("unsupported tpm2-tools credential file version");
  const credentialBlob = tpm2b(r.tpm2b("credentialBlob"));
  const encryptedSecret = tpm2b(r.tpm2b("secret"));
  r.end();
  return { credentialBlob, encryptedSecret };
}
