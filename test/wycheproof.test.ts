/**
 * Wycheproof (github.com/C2SP/wycheproof, Apache-2.0, see test/vectors/wycheproof/LICENSE) signature
 * vectors run through the project's own verifyData (host/core/alg.ts): every test case of
 * ecdsa_secp256r1_sha256_test.json (DER signatures) and ed25519_test.json.
 * "valid" must verify, "invalid" must not, "acceptable" may go either way (recorded, then reported).
 */
import crypto, { type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { type KeyAlg, keyAlgOf, verifyData } from "../host/core/alg.ts";

interface WycheproofCase {
  tcId: number;
  comment: string;
  flags?: string[];
  msg: string;
  sig: string;
  result: "valid" | "invalid" | "acceptable";
}

interface WycheproofGroup {
  type: string;
  publicKeyDer?: string;
  publicKeyPem?: string;
  publicKeyJwk?: crypto.JsonWebKey;
  tests: WycheproofCase[];
}

interface WycheproofFile {
  algorithm: string;
  numberOfTests: number;
  testGroups: WycheproofGroup[];
}

function load(name: string): WycheproofFile {
  const url = new URL(`./vectors/wycheproof/${name}`, import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")) as WycheproofFile;
}

/** The group's public key, from whichever encoding the file carries (DER preferred, then PEM, then JWK). */
function groupKey(g: WycheproofGroup): KeyObject {
  if (g.publicKeyDer) {
    return crypto.createPublicKey({ key: Buffer.from(g.publicKeyDer, "hex"), format: "der", type: "spki" });
  }
  if (g.publicKeyPem) return crypto.createPublicKey(g.publicKeyPem);
  if (g.publicKeyJwk) return crypto.createPublicKey({ key: g.publicKeyJwk, format: "jwk" });
  throw new Error(`test group of type ${g.type} has no public key`);
}

const SUITES: { file: string; groupType: string; alg: KeyAlg }[] = [
  { file: "ecdsa_secp256r1_sha256_test.json", groupType: "EcdsaVerify", alg: "ec-p256" },
  { file: "ed25519_test.json", groupType: "EddsaVerify", alg: "ed25519" },
];

for (const suite of SUITES) {
  describe(`wycheproof ${suite.file}`, () => {
    const data = load(suite.file);
    const cases = data.testGroups.flatMap((g) => g.tests.map((t) => ({ g, t })));
    const acceptable: { tcId: number; verified: boolean; flags: string[] }[] = [];

    it("has test cases, as many as it declares", () => {
      expect(data.testGroups.length).toBeGreaterThan(0);
      expect(cases.length).toBeGreaterThan(0);
      expect(cases.length).toBe(data.numberOfTests);
      for (const g of data.testGroups) expect(g.type).toBe(suite.groupType);
    });

    it("every group key has the expected algorithm", () => {
      for (const g of data.testGroups) expect(keyAlgOf(groupKey(g))).toBe(suite.alg);
    });

    it.each(cases.map(({ g, t }) => [t.tcId, t.result, t.comment, g, t] as const))(
      "tcId %i (%s) %s",
      (_id, _result, _comment, g, t) => {
        const key = groupKey(g);
        const msg = Buffer.from(t.msg, "hex");
        const sig = Buffer.from(t.sig, "hex");
        // verifyData is documented never to throw; a throw is a bug in it and fails the case here.
        let verified = false;
        let viaDefaults = false;
        expect(() => {
          verified = verifyData(key, msg, sig, { alg: suite.alg, ecdsaEncoding: "der" });
          viaDefaults = verifyData(key, msg, sig); // algorithm from the key, DER by default
        }).not.toThrow();
        expect(viaDefaults).toBe(verified);
        if (t.result === "valid") expect(verified, `tcId ${t.tcId}: ${t.comment}`).toBe(true);
        else if (t.result === "invalid") expect(verified, `tcId ${t.tcId}: ${t.comment}`).toBe(false);
        else acceptable.push({ tcId: t.tcId, verified, flags: t.flags ?? [] });
      },
    );

    it("records the 'acceptable' cases", () => {
      const n = cases.filter(({ t }) => t.result === "acceptable").length;
      expect(acceptable.length).toBe(n);
      if (n > 0) {
        console.info(
          `${suite.file}: ${n} acceptable case(s): ` +
            acceptable.map((a) => `${a.tcId}=${a.verified ? "accepted" : "rejected"}`).join(", "),
        );
      }
    });
  });
}
