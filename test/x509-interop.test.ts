/**
 * Interop with the system `openssl` binary (3.0: classical algorithms only): chains QHx issues must
 * verify with `openssl verify`, and `openssl x509 -text` must show the X509-SVID profile.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generateKeyPair, type KeyAlg } from "../host/core/alg.ts";
import { certToPem, chainToPem, issueCaCertificate, issueX509Svid } from "../host/core/x509.ts";

const TD = "example.org";
const ID = `spiffe://${TD}/ns/prod/sa/web`;
const HOUR = 3_600_000;
const hasOpenssl = spawnSync("openssl", ["version"], { encoding: "utf8" }).status === 0;
const dir = mkdtempSync(join(tmpdir(), "qhx-x509-interop-"));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function openssl(...args: string[]): string {
  return execFileSync("openssl", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** Run openssl expecting failure; returns stdout+stderr. */
function opensslFails(...args: string[]): string {
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  expect(r.status).not.toBe(0);
  return `${r.stdout}${r.stderr}`;
}

function write(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

let pkis = 0;

function pki(alg: KeyAlg) {
  const n = `${alg}-${pkis++}`;
  const now = Date.now();
  const rootKp = generateKeyPair(alg);
  const root = issueCaCertificate({
    publicKey: rootKp.publicKey,
    signer: { privateKey: rootKp.privateKey },
    trustDomain: TD,
    subject: { country: "US", organization: "QHx", commonName: `Interop Root ${alg}` },
    notBefore: new Date(now - HOUR),
    notAfter: new Date(now + 24 * HOUR),
    pathLen: 1,
  });
  const interKp = generateKeyPair(alg);
  const inter = issueCaCertificate({
    publicKey: interKp.publicKey,
    signer: { privateKey: rootKp.privateKey, certDer: root },
    trustDomain: TD,
    subject: { organization: "QHx", commonName: `Interop Intermediate ${alg}` },
    notBefore: new Date(now - HOUR),
    notAfter: new Date(now + 12 * HOUR),
    pathLen: 0,
  });
  const leaf = issueX509Svid({
    spiffeId: ID,
    publicKey: generateKeyPair(alg).publicKey,
    issuerCertDer: inter,
    issuerKey: interKp.privateKey,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + HOUR),
    dnsNames: ["web.example.org"],
  });
  return {
    root: write(`${n}-root.pem`, certToPem(root)),
    inter: write(`${n}-inter.pem`, certToPem(inter)),
    leaf: write(`${n}-leaf.pem`, certToPem(leaf)),
    chain: write(`${n}-chain.pem`, chainToPem([leaf, inter])),
  };
}

describe.skipIf(!hasOpenssl)("openssl interop", () => {
  for (const alg of ["ec-p256", "ed25519"] as const) {
    describe(alg, () => {
      const p = pki(alg);

      it("openssl verify accepts root → intermediate → leaf", () => {
        expect(openssl("verify", "-CAfile", p.root, "-untrusted", p.inter, p.leaf).trim()).toBe(
          `${p.leaf}: OK`,
        );
        expect(
          openssl("verify", "-x509_strict", "-CAfile", p.root, "-untrusted", p.inter, p.leaf).trim(),
        ).toBe(`${p.leaf}: OK`);
        for (const purpose of ["sslserver", "sslclient"]) {
          expect(
            openssl("verify", "-purpose", purpose, "-CAfile", p.root, "-untrusted", p.inter, p.leaf),
          ).toContain(": OK");
        }
        expect(openssl("verify", "-CAfile", p.root, p.inter).trim()).toBe(`${p.inter}: OK`);
        // the PEM chain as a workload would serve it (leaf, intermediate)
        expect(openssl("verify", "-CAfile", p.root, "-untrusted", p.chain, p.leaf).trim()).toBe(
          `${p.leaf}: OK`,
        );
      });

      it("openssl x509 -text shows the X509-SVID profile of the leaf", () => {
        const text = openssl("x509", "-in", p.leaf, "-noout", "-text");
        expect(text).toContain(`URI:${ID}`);
        expect(text).toContain("DNS:web.example.org");
        expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
        expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
        expect(text).toMatch(
          /X509v3 Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/,
        );
        expect(text).toMatch(/X509v3 Subject Alternative Name: critical/);
        expect(text).toContain("X509v3 Subject Key Identifier");
        expect(text).toContain("X509v3 Authority Key Identifier");
        expect(text).toContain(
          alg === "ed25519" ? "Signature Algorithm: ED25519" : "Signature Algorithm: ecdsa-with-SHA256",
        );
        expect(text).toContain("Version: 3 (0x2)");
      });

      it("openssl x509 -text shows the CA profile of the intermediate", () => {
        const text = openssl("x509", "-in", p.inter, "-noout", "-text");
        expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
        expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/);
        expect(text).toContain(`URI:spiffe://${TD}`);
        expect(text).toMatch(/Issuer: C\s*=\s*US, O\s*=\s*QHx, CN\s*=\s*Interop Root/);
      });

      it("openssl verify rejects the chain against a different root", () => {
        const other = pki(alg);
        const out = opensslFails("verify", "-CAfile", other.root, "-untrusted", p.inter, p.leaf);
        expect(out).toMatch(/unable to get local issuer certificate|certificate signature failure|error/);
        // and a leaf whose intermediate is missing
        expect(opensslFails("verify", "-CAfile", p.root, p.leaf)).toMatch(
          /unable to get local issuer certificate/,
        );
      });
    });
  }
});
