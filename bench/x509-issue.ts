/**
 * Micro-benchmark: X509-SVID issuances per second beside the raw node:crypto signing rate of the
 * issuer key, per issuer algorithm. The leaf key is P-256 throughout (one key per run: generating it
 * is the workload's job, not the CA's; exporting it is part of every issuance).
 *
 * Raw signing and issuing are measured in alternating short rounds and the best round of each is
 * reported, so that load from other processes on the machine skews both sides alike.
 *
 *   npx node bench/x509-issue.ts [rounds=7] [alg ...]      (default algs: ec-p256 ed25519 ml-dsa-65)
 */
import crypto, { type KeyObject } from "node:crypto";
import { digestFor, generateKeyPair, type KeyAlg } from "../host/core/alg.ts";
import { issueCaCertificate, issueX509Svid } from "../host/core/x509.ts";

const rounds = Number(process.argv[2] ?? 7) || 7;
const algs = (
  process.argv.length > 3 ? process.argv.slice(3) : ["ec-p256", "ed25519", "ml-dsa-65"]
) as KeyAlg[];
const ROUND_MS = 400;

/** Operations per second over one round of about `ms` milliseconds. */
function rate(fn: () => void, ms: number): number {
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let i = 0; i < 10; i++) fn();
    n += 10;
    now = performance.now();
  }
  return (n * 1000) / (now - start);
}

const nb = new Date(Date.now() - 60_000);
const na = new Date(Date.now() + 3600_000);
const rows: string[][] = [["issuer alg", "raw sign/s", "issue/s", "issue/raw", "µs/issue"]];

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
  const first = issueX509Svid({
    spiffeId: "spiffe://example.org/ns/default/sa/frontend",
    publicKey: leafKey,
    issuerCertDer: root,
    issuerKey: ca.privateKey,
    notBefore: nb,
    notAfter: na,
  });
  // sign inputs of the size the issuer really signs
  const tbsLike = crypto.randomBytes(first.length - 100);
  const digest = digestFor(alg);
  const sign = () => crypto.sign(digest, tbsLike, ca.privateKey);
  const issue = () =>
    issueX509Svid({
      spiffeId: "spiffe://example.org/ns/default/sa/frontend",
      publicKey: leafKey,
      issuerCertDer: root,
      issuerKey: ca.privateKey,
      notBefore: nb,
      notAfter: na,
    });
  rate(sign, 100); // warm-up
  rate(issue, 100);
  let raw = 0;
  let iss = 0;
  for (let r = 0; r < rounds; r++) {
    raw = Math.max(raw, rate(sign, ROUND_MS));
    iss = Math.max(iss, rate(issue, ROUND_MS));
  }
  rows.push([
    alg,
    raw.toFixed(0),
    iss.toFixed(0),
    `${((iss / raw) * 100).toFixed(1)}%`,
    (1e6 / iss).toFixed(1),
  ]);
}

const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
for (const r of rows) console.log(r.map((c, i) => c.padStart(widths[i]!)).join("  "));
