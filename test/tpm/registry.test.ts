/** The tpm attestor's registrations: server verifier registry and agent client factory. */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { TpmClient } from "../../host/agent/attestors/tpm.ts";
import { nodeAttestorClient } from "../../host/agent/attestors/index.ts";
import { systemClock } from "../../host/core/clock.ts";
import { nodeAttestorVerifiers } from "../../host/server/attestation/index.ts";
import type { Datastore } from "../../host/server/datastore/types.ts";
import { tmpDir } from "../helpers/cli.ts";
import { makeEkCa } from "./ek-ca.ts";

const ds = {} as Datastore;

describe("tpm registration", () => {
  it("the server registers TpmVerifier from NodeAttestorsConfig.tpm (allow-list and/or CA bundle file)", () => {
    expect(nodeAttestorVerifiers({}, ds, systemClock).has("tpm")).toBe(false);
    const file = path.join(tmpDir(), "ek-ca.pem");
    fs.writeFileSync(file, makeEkCa().pem);
    const m = nodeAttestorVerifiers(
      { tpm: { ekCaBundleFile: file, ekPublicKeyHashes: ["ab".repeat(32)], pcrs: [0, 7] } },
      ds,
      systemClock,
    );
    expect(m.get("tpm")?.assurance).toBe("hardware");
    expect(() => nodeAttestorVerifiers({ tpm: {} }, ds, systemClock)).toThrow(
      expect.objectContaining({ code: "QHX_INVALID_CONFIG" }),
    );
  });

  it("the agent builds a TpmClient from NodeAttestorClientConfig.tpm, and only one attestor", () => {
    const c = nodeAttestorClient({ tpm: { tcti: "swtpm:host=127.0.0.1,port=2321" } });
    expect(c).toBeInstanceOf(TpmClient);
    expect(c.name).toBe("tpm");
    expect(() => nodeAttestorClient({ joinToken: "x".repeat(20), tpm: {} })).toThrow(/one node attestor/);
    expect(() => new TpmClient({ ekAlg: "dsa" as "rsa" })).toThrow(
      /EK algorithm "dsa" is neither rsa nor ecc/,
    );
    expect(() => new TpmClient({ akAlg: "ed25519" as "rsa" })).toThrow(/AK algorithm/);
  });

  it("the client refuses a malformed challenge before touching the TPM", async () => {
    const c = new TpmClient({ tcti: "swtpm:host=127.0.0.1,port=1" });
    for (const ch of [
      null,
      {},
      { credential_blob: "!", encrypted_secret: "", nonce: "", pcrs: [0], hash_alg: "sha256" },
    ]) {
      await expect(c.answer(ch)).rejects.toThrow(/malformed challenge/);
    }
    await expect(
      c.answer({ credential_blob: "", encrypted_secret: "", nonce: "", pcrs: [24], hash_alg: "sha256" }),
    ).rejects.toThrow(/malformed challenge/);
  });
});
