/**
 * Micro-benchmark: X509-SVID issuances per second against the raw node:crypto signing rate of the
 * issuer key, per issuer algorithm (leaf key P-256 throughout; one fresh leaf key per run is reused,
 * as key generation is the workload's job, not the CA's).
 *
 *   npx node bench/x509-issue.ts [seconds-per-case=2] [alg ...]
 */
import crypto, { type KeyObject } from "node:crypto";
import { digestFor, generateKeyPair, type KeyAlg } from "../host/core/alg.ts";
import { issueCaCertificate, issueX509Svid } from "../host/core/x509.ts";

const seconds = Number(process.argv[2] ?? 2) || 2;
const algs = (
  process.argv.slice(3).length ? process.argv.slice(3) : ["ec-p256", "ed25519", "ml-dsa-65"]
) as KeyAlg[];

function rate(fn: () => void, ms: number): number {
  for (let i = 0; i < 50; i++) fn(); // warm-up
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let i = 0; i < 20; i++) fn();
    n += 20;
    now = performance.now();
  }
  return (n * 1000) / (now - start);
}

const tbsLike = crypto.randomBytes(420);
const nb = new Date(Date.now() - 60_000);
const na = new Date(Date.now() + 3600_000);
const rows: string[][] = [["issuer alg", "raw sign/s", "issue/s", "ratio", "µs/issue"]];

for (const alg of algs) {
  const ca = generateKeyPair(alg);
  const root = issueCaCertificate({
    publicKey: ca.publicKey,
    signer: { privateKey: ca.privateKey },
    trustDomain: "example.org",
    notBefore: nb,
    notAfter: new Date(Date.now() + 86400_000),
  });
  const leafKey: KeyObject = generateKeyPair("ec-p256").publicKey;
  const digest = digestFor(alg);
  const raw = rate(() => crypto.sign(digest, tbsLike, ca.privateKey), seconds * 1000);
  const issue = rate(
    () =>
      issueX509Svid({
        spiffeId: "spiffe://example.org/ns/default/sa/frontend",
        publicKey: leafKey,
        issuerCertDer: root,
        issuerKey: ca.privateKey,
        notBefore: nb,
        notAfter: na,
      }),
    seconds * 1000,
  );
  rows.push([
    alg,
    raw.toFixed(0),
    issue.toFixed(0),
    `${((issue / raw) * 100).toFixed(1)}%`,
    (1e6 / issue).toFixed(1),
  ]);
}

const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
for (const r of rows) console.log(r.map((c, i) => c.padStart(widths[i]!)).join("  "));
