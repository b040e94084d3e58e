/**
 * What the crypto policy costs where it runs, beside the work it sits next to, measured in the same run:
 * - issuance: resolve the rule of an entry (policy with 200 namespaces, 50 trust domains, 10 coalitions)
 *   + algorithm, assurance and TTL checks, vs the CA signing the X509-SVID (CaManager.signX509Svid);
 * - tunnel setup: the peer check (mode, peer algorithm, releasability both ways), vs the SPIFFE chain
 *   verification every connection does anyway (verifyX509Svid);
 * - the server's store read per issuance (readdir of the versions directory, cached model).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateKeyPair } from "../host/core/alg.ts";
import { systemClock } from "../host/core/clock.ts";
import {
  capTtl,
  checkAssurance,
  checkSignatureAlgorithm,
  cryptoPolicyPeerCheck,
  parseCryptoPolicy,
  resolveCryptoPolicy,
} from "../host/core/crypto-policy.ts";
import { verifyX509Svid } from "../host/core/x509-verify.ts";
import { CaManager } from "../host/server/ca.ts";
import { CryptoPolicyStore } from "../host/server/crypto-policy-store.ts";
import { openDatastore } from "../host/server/datastore/index.ts";
import { MemoryKeyManager } from "../host/server/keymanager/memory.ts";
import { fmt, opsPerSec, table } from "./harness.ts";

const TD = "bench.test";

function bigPolicy(): Record<string, unknown> {
  const coalitions: Record<string, string[]> = {};
  const coalitionRules: Record<string, unknown> = {};
  for (let c = 0; c < 10; c++) {
    coalitions[`c${c}`] = Array.from({ length: 5 }, (_, i) => `td${c * 5 + i}.test`);
    coalitionRules[`c${c}`] = { tunnel_modes: ["pq"], min_assurance: "key" };
  }
  coalitions.home = [TD];
  coalitionRules.home = { max_jwt_svid_ttl: "5m" };
  const trustDomains: Record<string, unknown> = {};
  for (let t = 0; t < 50; t++)
    trustDomains[`td${t}.test`] = { signature_algorithms: { allowed: ["ml-dsa-65"] } };
  trustDomains[TD] = { signature_algorithms: { allowed: ["ec-p256", "ml-dsa-65"] }, max_x509_svid_ttl: "1h" };
  const namespaces: Record<string, unknown> = {};
  for (let n = 0; n < 200; n++) {
    namespaces[`ns${n}`] = { releasable_to: ["coalition:c1", "td7.test"], accept_from: ["coalition:c1"] };
  }
  return {
    trust_domain: TD,
    coalitions,
    coalition_rules: coalitionRules,
    trust_domains: trustDomains,
    namespaces,
  };
}

export async function run(): Promise<void> {
  process.stdout.write(`Node ${process.versions.node}, OpenSSL ${process.versions.openssl}, one core\n\n`);
  const doc = bigPolicy();
  const policy = parseCryptoPolicy(doc);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-bench-cp-"));
  const ds = await openDatastore({ kind: "sqlite", path: path.join(dir, "ds.sqlite3") });
  const ca = new CaManager(
    ds,
    new MemoryKeyManager(),
    { trustDomain: TD, keyAlg: "ec-p256", ttlMs: 86_400_000, jwtKeyAlg: "ec-p256" },
    systemClock,
  );
  await ca.init();
  const leaf = generateKeyPair("ec-p256").publicKey;

  let i = 0;
  const decide = () => {
    const eff = resolveCryptoPolicy(policy, { trustDomain: TD, namespace: `ns${i++ % 200}` });
    checkSignatureAlgorithm(eff, "ec-p256");
    checkAssurance(eff, "token");
    return capTtl(eff, "x509", 7200);
  };
  const policyOps = await opsPerSec(decide);
  const signOps = await opsPerSec(() =>
    ca.signX509Svid({ spiffeId: `spiffe://${TD}/ns/prod/web`, publicKey: leaf, ttlMs: 3_600_000 }),
  );

  const store = new CryptoPolicyStore(path.join(dir, "data"), TD);
  store.apply(doc, { now: new Date() });
  const storeOps = await opsPerSec(() => store.current());

  // tunnel: a peer of td5.test (coalition c1) reaching namespace ns3, chain verified per connection
  const peerCa = new CaManager(
    await openDatastore({ kind: "sqlite", path: path.join(dir, "peer.sqlite3") }),
    new MemoryKeyManager(),
    { trustDomain: "td5.test", keyAlg: "ml-dsa-65", ttlMs: 86_400_000, jwtKeyAlg: "ec-p256" },
    systemClock,
  );
  await peerCa.init();
  const peerSvid = await peerCa.signX509Svid({
    spiffeId: "spiffe://td5.test/web",
    publicKey: generateKeyPair("ml-dsa-65").publicKey,
    ttlMs: 3_600_000,
  });
  const bundles = new Map([["td5.test", peerCa.trustBundle()]]);
  const check = cryptoPolicyPeerCheck(policy, () => ({ trustDomain: TD, namespace: "ns3" }));
  const peer = {
    spiffeId: "spiffe://td5.test/web",
    trustDomain: "td5.test",
    sigAlg: "ml-dsa-65",
    mode: "pq",
  };
  if (!check(peer).ok) throw new Error("bench peer should pass");
  const checkOps = await opsPerSec(() => check(peer));
  const verifyOps = await opsPerSec(() => verifyX509Svid(peerSvid.chain, bundles, new Date()));

  const rows = [
    ["where", "QHx crypto policy/s", "reference", "reference/s", "policy share"],
    [
      "issuance",
      fmt(policyOps),
      "CA signs the SVID (P-256)",
      fmt(signOps),
      `${((100 * signOps) / policyOps).toFixed(2)} %`,
    ],
    [
      "issuance store read",
      fmt(storeOps),
      "CA signs the SVID (P-256)",
      fmt(signOps),
      `${((100 * signOps) / storeOps).toFixed(2)} %`,
    ],
    [
      "tunnel setup",
      fmt(checkOps),
      "verifyX509Svid (ML-DSA-65)",
      fmt(verifyOps),
      `${((100 * verifyOps) / checkOps).toFixed(2)} %`,
    ],
  ];
  process.stdout.write(`${table(rows)}\n`);
  process.stdout.write(
    "\npolicy: 200 namespaces, 51 trust domains, 11 coalitions; share = time in the policy / time of the reference\n",
  );
  await ds.close();
}
