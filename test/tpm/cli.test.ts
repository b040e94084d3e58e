/** `qhx agent tpm-ek-hash` against a real software TPM equals what the server computes from the EK. */
import { describe, expect, it } from "vitest";
import { TpmClient } from "../../host/agent/attestors/tpm.ts";
import { qhx } from "../helpers/cli.ts";
import { startSwtpm, swtpmUnavailable } from "./swtpm.ts";

const missing = swtpmUnavailable();

describe("qhx agent tpm-ek-hash", () => {
  it.skipIf(missing !== undefined)("prints the EK public key hash an operator allow-lists", async () => {
    const tpm = await startSwtpm();
    try {
      const r = qhx(["agent", "tpm-ek-hash", "--tpm-tcti", tpm.tcti]);
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      const hash = r.stdout.trim();
      expect(hash).toMatch(/^[0-9a-f]{64}$/);
      expect(await new TpmClient({ tcti: tpm.tcti }).ekPublicKeyHash()).toBe(hash);
    } finally {
      await tpm.stop();
    }
  });
});
