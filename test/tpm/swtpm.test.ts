/**
 * The tpm node attestor end to end against real software TPMs (swtpm) driven through tpm2-tools:
 * TpmClient (agent half) against TpmVerifier (server half), begin → challenge → answer → done.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TpmClient } from "../../host/agent/attestors/tpm.ts";
import { systemClock } from "../../host/core/clock.ts";
import { TpmVerifier } from "../../host/server/attestation/tpm.ts";
import type { AttestationStep, NodeAttestation } from "../../host/server/attestation/types.ts";
import { parseTpm2bPublic, publicKeyOf } from "../../host/server/attestation/tpm2/structures.ts";
import { issueEkCert, makeEkCa } from "./ek-ca.ts";
import { type Swtpm, startSwtpm, swtpmUnavailable } from "./swtpm.ts";

const unavailable = swtpmUnavailable();
if (unavailable) console.warn(`skipping the swtpm TPM attestation tests: ${unavailable}`);

type Challenge = { nonce: string; pcrs: number[] };
type Answer = { secret: string; quote: string; signature: string; pcr_values: Record<string, string> };

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

const sha256 = (...b: Uint8Array[]) => {
  const h = crypto.createHash("sha256");
  for (const x of b) h.update(x);
  return h.digest();
};

describe.skipIf(unavailable !== undefined)("tpm attestation against swtpm", () => {
  let a: Swtpm;
  let b: Swtpm;
  let ekHashA: string;
  let ekSpkiA: Buffer;
  const measurement = sha256(Buffer.from("qhx boot measurement"));

  beforeAll(async () => {
    [a, b] = await Promise.all([startSwtpm(), startSwtpm()]);
    await a.tool("tpm2_pcrextend", [`7:sha256=${measurement.toString("hex")}`]);
    ekHashA = await new TpmClient({ tcti: a.tcti }).ekPublicKeyHash();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-tpm-test-"));
    await a.tool("tpm2_createek", [
      "-c",
      path.join(dir, "ek.ctx"),
      "-G",
      "rsa",
      "-u",
      path.join(dir, "ek.pub"),
    ]);
    await a.tool("tpm2_flushcontext", ["-t"]);
    ekSpkiA = publicKeyOf(parseTpm2bPublic(fs.readFileSync(path.join(dir, "ek.pub")))).export({
      type: "spki",
      format: "der",
    });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it("attests with an allow-listed EK: hardware assurance, EK/AK/PCR selectors, node ID", async () => {
    expect(ekHashA).toBe(sha256(ekSpkiA).toString("hex"));
    const v = new TpmVerifier({ ekPublicKeyHashes: [ekHashA] }, systemClock);
    const client = new TpmClient({ tcti: a.tcti });
    const payload = await client.payload();
    expect(payload.ek_cert).toBeUndefined(); // nothing provisioned in NV yet
    const s = await begin(v, payload);
    const node = await done(s.answer(await client.answer(s.challenge)));
    expect(node.nodeId).toBe(ekHashA.slice(0, 32));
    const akSpki = publicKeyOf(parseTpm2bPublic(Buffer.from(payload.ak_pub, "base64"))).export({
      type: "spki",
      format: "der",
    });
    const pcr7 = sha256(Buffer.alloc(32), measurement).toString("hex");
    expect(node.selectors).toEqual([
      { type: "tpm", value: `ek_pubkey_sha256:${ekHashA}` },
      { type: "tpm", value: `ak_pubkey_sha256:${sha256(akSpki).toString("hex")}` },
      ...[0, 1, 2, 3, 4, 5, 6].map((i) => ({ type: "tpm", value: `pcr:${i}:${"0".repeat(64)}` })),
      { type: "tpm", value: `pcr:7:${pcr7}` },
    ]);
    expect(v.assurance).toBe("hardware");
  });

  it("attests with an EK certificate read from NV 0x01c00002, checked against the manufacturer CA", async () => {
    const ca = makeEkCa();
    const cert = issueEkCert(ca, ekSpkiA);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-tpm-test-"));
    fs.writeFileSync(path.join(dir, "ek.crt"), cert);
    await a.tool("tpm2_nvdefine", [
      ...["0x01c00002", "-C", "p", "-s", String(cert.length)],
      ...["-a", "ppwrite|ppread|ownerread|authread|no_da|platformcreate"],
    ]);
    await a.tool("tpm2_nvwrite", ["0x01c00002", "-C", "p", "-i", path.join(dir, "ek.crt")]);
    fs.rmSync(dir, { recursive: true, force: true });

    const client = new TpmClient({ tcti: a.tcti });
    const payload = await client.payload();
    expect(Buffer.from(payload.ek_cert!, "base64")).toEqual(cert);
    const v = new TpmVerifier({ ekCaBundlePem: ca.pem }, systemClock);
    const s = await begin(v, payload);
    const node = await done(s.answer(await client.answer(s.challenge)));
    expect(node.nodeId).toBe(ekHashA.slice(0, 32));
    // another manufacturer's CA does not vouch for it
    const other = new TpmVerifier({ ekCaBundlePem: makeEkCa("Other Vendor").pem }, systemClock);
    await expect(other.begin(payload)).rejects.toThrow(/not issued by a configured manufacturer CA/);
  });

  it("refuses an EK that is not allowed", async () => {
    const v = new TpmVerifier({ ekPublicKeyHashes: [crypto.randomBytes(32).toString("hex")] }, systemClock);
    const client = new TpmClient({ tcti: b.tcti });
    try {
      await expect(v.begin(await client.payload())).rejects.toThrow(
        /is not allow-listed and has no certificate/,
      );
    } finally {
      client.cleanup();
    }
  });

  it("refuses a replayed quote (wrong nonce), altered PCR values and a tampered signature", async () => {
    const v = new TpmVerifier({ ekPublicKeyHashes: [ekHashA] }, systemClock);
    const client = new TpmClient({ tcti: a.tcti });
    try {
      const payload = await client.payload();
      const s1 = await begin(v, payload);
      const secret1 = await client.activate(s1.challenge);
      const old = await client.quote(Buffer.from(s1.challenge.nonce, "base64"), s1.challenge.pcrs);
      await done(s1.answer({ secret: secret1.toString("base64"), ...old }));

      const s2 = await begin(v, payload);
      const secret = (await client.activate(s2.challenge)).toString("base64");
      // replay: a valid, correctly signed quote, but over the previous session's nonce
      await expect(s2.answer({ secret, ...old })).rejects.toThrow(/nonce/);
      const good: Answer = {
        secret,
        ...(await client.quote(Buffer.from(s2.challenge.nonce, "base64"), s2.challenge.pcrs)),
      };
      // PCR 7 extended after the quote: the values read now are not the ones quoted
      await a.tool("tpm2_pcrextend", [`7:sha256=${sha256(Buffer.from("later")).toString("hex")}`]);
      const now7 = /7\s*:\s*0x([0-9A-Fa-f]{64})/
        .exec(await a.tool("tpm2_pcrread", ["sha256:7"]))![1]!
        .toLowerCase();
      expect(now7).not.toBe(good.pcr_values["7"]);
      await expect(s2.answer({ ...good, pcr_values: { ...good.pcr_values, 7: now7 } })).rejects.toThrow(
        /do not match the quote's digest/,
      );
      // tampered signature
      const sig = Buffer.from(good.signature, "base64");
      sig[sig.length - 1]! ^= 1;
      await expect(s2.answer({ ...good, signature: sig.toString("base64") })).rejects.toThrow(
        /signature does not verify/,
      );
      // tampered quote (the signature no longer covers it)
      const q = Buffer.from(good.quote, "base64");
      q[q.length - 1]! ^= 1;
      await expect(s2.answer({ ...good, quote: q.toString("base64") })).rejects.toThrow(/digest|signature/);
      // the genuine answer passes, and shows the new PCR 7 only after a new quote
      const node = await done(s2.answer(good));
      expect(node.selectors).toContainEqual({ type: "tpm", value: `pcr:7:${good.pcr_values["7"]}` });
    } finally {
      client.cleanup();
    }
  });

  it("refuses an AK that is not bound to the EK (an AK from another TPM)", async () => {
    const v = new TpmVerifier({ ekPublicKeyHashes: [ekHashA] }, systemClock);
    const clientA = new TpmClient({ tcti: a.tcti });
    const clientB = new TpmClient({ tcti: b.tcti });
    try {
      const payloadA = await clientA.payload();
      const payloadB = await clientB.payload();
      // TPM A's allowed EK, with TPM B's AK (which B would let sign anything asked of it)
      const s = await begin(v, { ek_pub: payloadA.ek_pub, ak_pub: payloadB.ak_pub });
      // TPM A cannot activate: the credential names B's AK, which A does not hold
      await expect(clientA.activate(s.challenge)).rejects.toThrow(/tpm2_activatecredential failed/);
      // TPM B cannot either: the seed is encrypted to A's EK
      await expect(clientB.activate(s.challenge)).rejects.toThrow(/tpm2_activatecredential failed/);
      // so a quote from B's AK comes with a guessed secret, and is refused
      const quoteB = await clientB.quote(Buffer.from(s.challenge.nonce, "base64"), s.challenge.pcrs);
      await expect(
        s.answer({ secret: crypto.randomBytes(32).toString("base64"), ...quoteB }),
      ).rejects.toThrow(/credential activation failed/);

      // and the other way round: A's AK activates, but the quote comes from B's AK
      const s2 = await begin(v, { ek_pub: payloadA.ek_pub, ak_pub: payloadA.ak_pub });
      const secret = (await clientA.activate(s2.challenge)).toString("base64");
      const quoteB2 = await clientB.quote(Buffer.from(s2.challenge.nonce, "base64"), s2.challenge.pcrs);
      await expect(s2.answer({ secret, ...quoteB2 })).rejects.toThrow(/signature does not verify|digest/);
    } finally {
      clientA.cleanup();
      clientB.cleanup();
    }
  });

  it("attests with an ECC P-256 EK (ECDH-protected credential) and an ECDSA AK", async () => {
    const client = new TpmClient({ tcti: b.tcti, ekAlg: "ecc", akAlg: "ecc" });
    const payload = await client.payload();
    const ek = parseTpm2bPublic(Buffer.from(payload.ek_pub, "base64"));
    const ak = parseTpm2bPublic(Buffer.from(payload.ak_pub, "base64"));
    expect([ek.type, ak.type]).toEqual(["ecc", "ecc"]);
    const hash = sha256(publicKeyOf(ek).export({ type: "spki", format: "der" })).toString("hex");
    const v = new TpmVerifier({ ekPublicKeyHashes: [hash], pcrs: [0, 16] }, systemClock);
    const s = await begin(v, payload);
    const node = await done(s.answer(await client.answer(s.challenge)));
    expect(node.nodeId).toBe(hash.slice(0, 32));
    expect(node.selectors.map((x) => x.value.split(":").slice(0, 2).join(":"))).toEqual([
      `ek_pubkey_sha256:${hash}`,
      expect.stringMatching(/^ak_pubkey_sha256:[0-9a-f]{64}$/),
      "pcr:0",
      "pcr:16",
    ]);
  });
});
