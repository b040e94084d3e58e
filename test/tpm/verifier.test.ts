/** TpmVerifier against a software TPM (no swtpm needed): the protocol and every refusal. */
import crypto from "node:crypto";
import { describe, expect, it } from "vitest";
import { FakeClock, systemClock } from "../../host/core/clock.ts";
import { TpmVerifier } from "../../host/server/attestation/tpm.ts";
import type { AttestationStep, NodeAttestation } from "../../host/server/attestation/types.ts";
import { TPMA_OBJECT, TPM_ALG } from "../../host/server/attestation/tpm2/structures.ts";
import { issueEkCert, makeEkCa } from "./ek-ca.ts";
import { tpm2b } from "../../host/server/attestation/tpm2/marshal.ts";
import { AK_ATTRS, SoftTpm, rsaPublicArea, pcrSelection, quoteAttest, tpmSign } from "./soft-tpm.ts";

type Challenge = {
  credential_blob: string;
  encrypted_secret: string;
  nonce: string;
  pcrs: number[];
  hash_alg: string;
};

async function begin(v: TpmVerifier, payload: unknown) {
  const step = await v.begin(payload);
  if (!("challenge" in step)) throw new Error("expected a challenge");
  return step as { challenge: Challenge; answer(r: unknown): Promise<AttestationStep> };
}

async function done(step: Promise<AttestationStep>): Promise<NodeAttestation> {
  const s = await step;
  if (!("done" in s)) throw new Error("expected done");
  return s.done;
}

const rejected = (code = "QHX_ATTESTATION_FAILED") => expect.objectContaining({ code });

describe("TpmVerifier (software TPM)", () => {
  it("attests with an allow-listed EK: selectors, node ID, challenge shape", async () => {
    const tpm = new SoftTpm("ecc");
    tpm.pcrs[7] = crypto.randomBytes(32);
    const v = new TpmVerifier({ ekPublicKeyHashes: [tpm.ekSpkiSha256.toUpperCase()] }, systemClock);
    expect(v.name).toBe("tpm");
    expect(v.assurance).toBe("hardware");
    const s = await begin(v, tpm.payload());
    expect(s.challenge.pcrs).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(s.challenge.hash_alg).toBe("sha256");
    expect(Buffer.from(s.challenge.nonce, "base64").length).toBe(32);
    const a = await done(s.answer(tpm.answer(s.challenge)));
    expect(a.nodeId).toBe(tpm.ekSpkiSha256.slice(0, 32));
    const akHash = crypto
      .createHash("sha256")
      .update(tpm.ak.publicKey.export({ type: "spki", format: "der" }))
      .digest("hex");
    expect(a.selectors).toContainEqual({ type: "tpm", value: `ek_pubkey_sha256:${tpm.ekSpkiSha256}` });
    expect(a.selectors).toContainEqual({ type: "tpm", value: `ak_pubkey_sha256:${akHash}` });
    expect(a.selectors).toContainEqual({ type: "tpm", value: `pcr:7:${tpm.pcr(7).toString("hex")}` });
    expect(a.selectors).toContainEqual({ type: "tpm", value: `pcr:0:${"0".repeat(64)}` });
    expect(a.selectors.length).toBe(2 + 8);
    expect(a.aliases).toEqual([]);
  });

  it("attests with an RSA AK and a configured PCR list", async () => {
    const tpm = new SoftTpm("rsa");
    const v = new TpmVerifier({ ekPublicKeyHashes: [tpm.ekSpkiSha256], pcrs: [16, 7, 7] }, systemClock);
    const s = await begin(v, tpm.payload());
    expect(s.challenge.pcrs).toEqual([7, 16]);
    const a = await done(s.answer(tpm.answer(s.challenge)));
    expect(a.selectors.filter((x) => x.value.startsWith("pcr:")).map((x) => x.value.split(":")[1])).toEqual([
      "7",
      "16",
    ]);
  });

  it("accepts an EK certificate from a configured manufacturer CA, and only that", async () => {
    const tpm = new SoftTpm();
    const ca = makeEkCa();
    const spki = tpm.ek.publicKey.export({ type: "spki", format: "der" });
    const cert = issueEkCert(ca, spki);
    const v = new TpmVerifier({ ekCaBundlePem: ca.pem }, systemClock);
    const s = await begin(v, tpm.payload(cert));
    await done(s.answer(tpm.answer(s.challenge)));

    // no certificate, not allow-listed
    await expect(v.begin(tpm.payload())).rejects.toThrow(/not allow-listed and has no certificate/);
    // a certificate from another CA
    const other = makeEkCa("Other Vendor");
    await expect(v.begin(tpm.payload(issueEkCert(other, spki)))).rejects.toThrow(
      /not issued by a configured/,
    );
    // a genuine certificate, for another EK
    const elsewhere = new SoftTpm();
    await expect(v.begin(elsewhere.payload(cert))).rejects.toThrow(/does not certify ek_pub/);
    // expired
    const old = issueEkCert(ca, spki, {
      notBefore: new Date(Date.UTC(2020, 0, 1)),
      notAfter: new Date(Date.UTC(2021, 0, 1)),
    });
    await expect(v.begin(tpm.payload(old))).rejects.toThrow(/not valid now/);
    // not yet valid, by the verifier's clock
    const early = new TpmVerifier({ ekCaBundlePem: ca.pem }, new FakeClock(Date.UTC(2000, 0, 1)));
    await expect(early.begin(tpm.payload(cert))).rejects.toThrow(/not valid now/);
    // garbage certificate
    await expect(v.begin({ ...tpm.payload(), ek_cert: "AAAA" })).rejects.toThrow(/not a DER certificate/);
  });

  it("refuses an EK that is not allowed", async () => {
    const tpm = new SoftTpm();
    const v = new TpmVerifier({ ekPublicKeyHashes: ["ab".repeat(32)] }, systemClock);
    await expect(v.begin(tpm.payload())).rejects.toThrow(rejected());
    await expect(v.begin(tpm.payload())).rejects.toThrow(/is not allow-listed/);
  });

  it("refuses AKs that are not restricted, TPM-bound signing keys", async () => {
    for (const attrs of [
      AK_ATTRS & ~TPMA_OBJECT.restricted,
      AK_ATTRS & ~TPMA_OBJECT.fixedTPM,
      AK_ATTRS & ~TPMA_OBJECT.fixedParent,
      AK_ATTRS & ~TPMA_OBJECT.sign,
      AK_ATTRS | TPMA_OBJECT.decrypt,
    ]) {
      const tpm = new SoftTpm("ecc", attrs);
      const v = new TpmVerifier({ ekPublicKeyHashes: [tpm.ekSpkiSha256] }, systemClock);
      await expect(v.begin(tpm.payload())).rejects.toThrow(/restricted signing key/);
    }
  });

  it("refuses an EK that is not a restricted decryption key", async () => {
    const tpm = new SoftTpm();
    const v = new TpmVerifier({ ekPublicKeyHashes: [tpm.ekSpkiSha256] }, systemClock);
    const signingEk = tpm2b(rsaPublicArea(tpm.ek.publicKey, { attributes: AK_ATTRS, ek: true }));
    await expect(v.begin({ ...tpm.payload(), ek_pub: signingEk.toString("base64") })).rejects.toThrow(
      /restricted decryption key/,
    );
  });

  it("refuses SHA-1 names", async () => {
    const tpm = new SoftTpm();
    const v = new TpmVerifier({ ekPublicKeyHashes: [tpm.ekSpkiSha256] }, systemClock);
    const ak = Buffer.from(tpm.akPublic);
    ak.writeUInt16BE(TPM_ALG.SHA1, 4); // TPM2B size (2), type (2), nameAlg
    await expect(v.begin({ ...tpm.payload(), ak_pub: ak.toString("base64") })).rejects.toThrow(/SHA-1/);
  });

  it("refuses malformed payloads and responses", async () => {
    const tpm = new SoftTpm();
    const v = new TpmVerifier({ ekPublicKeyHashes: [tpm.ekSpkiSha256] }, systemClock);
    for (const p of [null, 7, {}, { ek_pub: "!!", ak_pub: "" }, { ...tpm.payload(), ak_pub: "AAAA" }]) {
      await expect(v.begin(p)).rejects.toThrow(rejected());
    }
    const s = await begin(v, tpm.payload());
    const good = tpm.answer(s.challenge);
    for (const r of [
      null,
      {},
      { ...good, quote: 5 },
      { ...good, pcr_values: [] },
      { ...good, pcr_values: { 0: "zz" } },
    ]) {
      await expect(s.answer(r)).rejects.toThrow(rejected());
    }
  });

  it("refuses a wrong activated secret (the AK is not in the EK's TPM)", async () => {
    const tpm = new SoftTpm();
    const v = new TpmVerifier({ ekPublicKeyHashes: [tpm.ekSpkiSha256] }, systemClock);
    // the agent claims the AK of another TPM: the credential is bound to that AK's Name, so this TPM
    // cannot activate it; the best it can do is guess
    const impostor = new SoftTpm();
    const s = await begin(v, { ...tpm.payload(), ak_pub: impostor.akPublic.toString("base64") });
    expect(() => tpm.answer(s.challenge)).toThrow(/integrity/);
    expect(() => impostor.activate(s.challenge)).toThrow(); // and the other TPM has not got the EK
    const forged = { ...impostor.quote(s.challenge), secret: crypto.randomBytes(32).toString("base64") };
    await expect(s.answer(forged)).rejects.toThrow(/credential activation failed/);
  });

  it("refuses a replayed quote (wrong nonce), wrong PCR selections, altered PCR values, bad signatures", async () => {
    const tpm = new SoftTpm();
    tpm.pcrs[7] = crypto.randomBytes(32);
    const v = new TpmVerifier({ ekPublicKeyHashes: [tpm.ekSpkiSha256] }, systemClock);
    const first = await begin(v, tpm.payload());
    const old = tpm.answer(first.challenge);
    await done(first.answer(old));

    const s = await begin(v, tpm.payload());
    const good = tpm.answer(s.challenge);
    // replay: fresh activation, old quote
    await expect(s.answer({ ...good, quote: old.quote, signature: old.signature })).rejects.toThrow(/nonce/);
    // altered PCR value
    await expect(
      s.answer({ ...good, pcr_values: { ...good.pcr_values, 7: "00".repeat(32) } }),
    ).rejects.toThrow(/do not match the quote's digest/);
    // missing / extra PCR values
    const { 7: _drop, ...fewer } = good.pcr_values;
    await expect(s.answer({ ...good, pcr_values: fewer })).rejects.toThrow(/exactly the requested/);
    // tampered signature
    const sig = Buffer.from(good.signature, "base64");
    sig[sig.length - 3]! ^= 0x40;
    await expect(s.answer({ ...good, signature: sig.toString("base64") })).rejects.toThrow(
      /signature does not verify/,
    );
    // a quote over other PCRs, or another bank, properly signed
    const nonce = Buffer.from(s.challenge.nonce, "base64");
    const akName = Buffer.from(Buffer.from(good.quote, "base64").subarray(8, 8 + 34));
    const digest = Buffer.from(good.quote, "base64").subarray(-32);
    for (const selection of [
      pcrSelection([{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6] }]),
      pcrSelection([{ hash: TPM_ALG.SHA1, pcrs: [0, 1, 2, 3, 4, 5, 6, 7] }]),
      pcrSelection([
        { hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7] },
        { hash: TPM_ALG.SHA1, pcrs: [0] },
      ]),
    ]) {
      const q = quoteAttest({ signerName: akName, extraData: nonce, pcrs: [], pcrDigest: digest, selection });
      const r = {
        ...good,
        quote: q.toString("base64"),
        signature: tpmSign(tpm.ak.privateKey, q, TPM_ALG.ECDSA).toString("base64"),
      };
      await expect(s.answer(r)).rejects.toThrow(/does not select exactly sha256 PCRs/);
    }
    // a quote signed by another key (e.g. a software key posing as the AK)
    const rogue = new SoftTpm();
    const rq = Buffer.from(good.quote, "base64");
    await expect(
      s.answer({ ...good, signature: tpmSign(rogue.ak.privateKey, rq, TPM_ALG.ECDSA).toString("base64") }),
    ).rejects.toThrow(/signature does not verify/);
    // and the genuine answer still passes
    await done(s.answer(good));
  });

  it("validates its configuration", () => {
    const cfg = (o: ConstructorParameters<typeof TpmVerifier>[0]) => () => new TpmVerifier(o, systemClock);
    expect(cfg({})).toThrow(rejected("QHX_INVALID_CONFIG"));
    expect(cfg({ ekPublicKeyHashes: ["xyz"] })).toThrow(/64 hex/);
    expect(cfg({ ekCaBundlePem: "not pem" })).toThrow(/no certificate/);
    expect(cfg({ ekPublicKeyHashes: ["ab".repeat(32)], pcrs: [24] })).toThrow(/PCR indices/);
    expect(cfg({ ekPublicKeyHashes: ["ab".repeat(32)], pcrs: [] })).toThrow(/PCR indices/);
    expect(cfg({ ekPublicKeyHashes: ["ab".repeat(32)], hashAlg: "sha1" as "sha256" })).toThrow(
      /not supported/,
    );
  });
});
