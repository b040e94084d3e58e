/**
 * NIST ACVP ML-DSA keyGen (FIPS 204) vectors: the kernels (SIMD and scalar) and node:crypto derive the
 * expected public key and secret key from each seed. See test/vectors/acvp/README.md.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { describe, expect, it } from "vitest";
import { pqProvider, type MlDsaParams } from "../../host/crypto/index.ts";

interface KeyGenFile {
  testGroups: {
    parameterSet: MlDsaParams;
    tests: { tcId: number; seed: string; pk: string; skSha256: string }[];
  }[];
}
const file = JSON.parse(
  fs.readFileSync(new URL("../vectors/acvp/ml-dsa-keygen-fips204.json", import.meta.url), "utf8"),
) as KeyGenFile;

const OID_LAST: Record<MlDsaParams, number> = { "ML-DSA-44": 0x11, "ML-DSA-65": 0x12, "ML-DSA-87": 0x13 };

/** RFC 9881 PKCS#8 with the seed-only private key form: OneAsymmetricKey { 0, alg, [0] seed }. */
function seedPkcs8(params: MlDsaParams, seed: Uint8Array): Buffer {
  const oid = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, OID_LAST[params]];
  const body = [0x02, 0x01, 0x00, 0x30, oid.length, ...oid, 0x04, 0x22, 0x80, 0x20, ...seed];
  return Buffer.from([0x30, body.length, ...body]);
}

const sha256 = (b: Uint8Array) => crypto.createHash("sha256").update(b).digest("hex");

describe("NIST ACVP ML-DSA keyGen", () => {
  it("has the 75 vectors of the three parameter sets", () => {
    expect(file.testGroups.map((g) => [g.parameterSet, g.tests.length])).toEqual([
      ["ML-DSA-44", 25],
      ["ML-DSA-65", 25],
      ["ML-DSA-87", 25],
    ]);
  });

  for (const group of file.testGroups) {
    it(`${group.parameterSet}: kernels (SIMD, scalar) and node:crypto derive the expected keys`, () => {
      for (const flavour of ["simd", "scalar"] as const) {
        const p = pqProvider("wasm", flavour);
        for (const t of group.tests) {
          const kp = p.mlDsa.keygen(group.parameterSet, Buffer.from(t.seed, "hex"));
          expect(Buffer.from(kp.publicKey).toString("hex").toUpperCase(), `tcId ${t.tcId}`).toBe(
            t.pk.toUpperCase(),
          );
          expect(sha256(kp.secretKey), `tcId ${t.tcId}`).toBe(t.skSha256);
        }
      }
      for (const t of group.tests) {
        const key = crypto.createPrivateKey({
          key: seedPkcs8(group.parameterSet, Buffer.from(t.seed, "hex")),
          format: "der",
          type: "pkcs8",
        });
        const jwk = crypto.createPublicKey(key).export({ format: "jwk" }) as { pub: string };
        expect(Buffer.from(jwk.pub, "base64url").toString("hex").toUpperCase(), `tcId ${t.tcId}`).toBe(
          t.pk.toUpperCase(),
        );
      }
    });
  }
});
