import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { generateKeyPair } from "../host/core/alg.ts";
import { createCsr, verifyCsr } from "../host/core/csr.ts";
import { tmpDir } from "./helpers/cli.ts";

describe("PKCS#10 CSRs", () => {
  for (const alg of ["ec-p256", "ec-p384", "ed25519", "ml-dsa-44", "ml-dsa-65", "ml-dsa-87"] as const) {
    it(`${alg}: round trip, and any flipped byte is refused`, () => {
      const kp = generateKeyPair(alg);
      const der = createCsr(kp.privateKey);
      expect(verifyCsr(der).equals(kp.publicKey)).toBe(true);
      for (const i of [10, Math.floor(der.length / 2), der.length - 3]) {
        const t = new Uint8Array(der);
        t[i]! ^= 0x40;
        expect(() => verifyCsr(t)).toThrow();
      }
    });
  }

  it("classical CSRs verify with Debian's openssl", () => {
    const dir = tmpDir();
    for (const alg of ["ec-p256", "ed25519"] as const) {
      const f = path.join(dir, `${alg}.der`);
      fs.writeFileSync(f, createCsr(generateKeyPair(alg).privateKey));
      const out = execFileSync("openssl", ["req", "-in", f, "-inform", "DER", "-verify", "-noout"], {
        encoding: "utf8",
        stdio: ["pipe", "pipe", "pipe"],
      });
      expect(out).toBe("");
    }
  });

  it("a CSR signed by another key is refused", () => {
    const a = generateKeyPair("ec-p256");
    const b = generateKeyPair("ec-p256");
    const der = createCsr(a.privateKey);
    const forged = createCsr(b.privateKey);
    // graft b's signature onto a's request body: the request no longer proves possession
    const sigA = der.subarray(der.length - 72);
    expect(() => verifyCsr(new Uint8Array([...forged.subarray(0, forged.length - 72), ...sigA]))).toThrow(
      /QHX_CSR_INVALID|CSR/,
    );
    expect(() => verifyCsr(new Uint8Array([1, 2, 3]))).toThrow(/not a DER PKCS#10/);
  });
});
