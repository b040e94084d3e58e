/**
 * Issuance throughput on one core: X509-SVIDs through the real CA path (CaManager.signX509Svid: build the
 * TBSCertificate, sign, parse back), and JWT-SVID mint/validate, each beside raw node:crypto
 * signing/verification of the same algorithm measured in the same run.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateKeyPair, type SvidKeyAlg, signData, verifyData } from "../host/core/alg.ts";
import { systemClock } from "../host/core/clock.ts";
import { validateJwtSvid } from "../host/core/jwtsvid.ts";
import { CaManager } from "../host/server/ca.ts";
import { openDatastore } from "../host/server/datastore/index.ts";
import { MemoryKeyManager } from "../host/server/keymanager/memory.ts";
import { fmt, opsPerSec, table } from "./harness.ts";

export async function run(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-bench-"));
  const tbs = crypto.randomBytes(600); // about the size of an SVID's TBSCertificate
  const rows: string[][] = [["X509-SVID issuance", "QHx SVIDs/s", "raw sign/s", "ratio", "goal"]];
  const goals: Record<string, string> = { "ec-p256": ">= 10,000/s", "ml-dsa-65": ">= 0.80" };
  process.stdout.write(`Node ${process.versions.node}, OpenSSL ${process.versions.openssl}, one core\n\n`);
  for (const alg of ["ec-p256", "ed25519", "ml-dsa-65"] as SvidKeyAlg[]) {
    const ds = await openDatastore({ kind: "sqlite", path: path.join(dir, `${alg}.sqlite3`) });
    const ca = new CaManager(
      ds,
      new MemoryKeyManager(),
      { trustDomain: "bench.test", keyAlg: alg, ttlMs: 86_400_000, jwtKeyAlg: "ec-p256" },
      systemClock,
    );
    await ca.init();
    const leaf = generateKeyPair(alg).publicKey;
    const caKey = generateKeyPair(alg).privateKey;
    const raw = await opsPerSec(() => signData(caKey, tbs, alg));
    const issued = await opsPerSec(() =>
      ca.signX509Svid({ spiffeId: "spiffe://bench.test/ns/prod/web", publicKey: leaf, ttlMs: 3_600_000 }),
    );
    rows.push([alg, fmt(issued), fmt(raw), (issued / raw).toFixed(2), goals[alg] ?? ""]);
    await ds.close();
  }
  process.stdout.write(`${table(rows)}\n\n`);

  const jrows: string[][] = [
    ["JWT-SVID", "mint/s", "raw sign/s", "ratio", "verify/s", "raw verify/s", "ratio"],
  ];
  for (const jwtKeyAlg of ["ec-p256", "ml-dsa-65"] as const) {
    const ds = await openDatastore({ kind: "sqlite", path: path.join(dir, `jwt-${jwtKeyAlg}.sqlite3`) });
    const ca = new CaManager(
      ds,
      new MemoryKeyManager(),
      { trustDomain: "bench.test", keyAlg: "ec-p256", ttlMs: 86_400_000, jwtKeyAlg },
      systemClock,
    );
    await ca.init();
    const req = { spiffeId: "spiffe://bench.test/web", audience: ["spiffe://bench.test/db"], ttlMs: 300_000 };
    const { token } = await ca.signJwtSvid(req);
    const bundles = new Map([["bench.test", ca.trustBundle()]]);
    const kp = generateKeyPair(jwtKeyAlg);
    const input = Buffer.from(token.split(".").slice(0, 2).join("."));
    const enc = jwtKeyAlg === "ec-p256" ? ("ieee-p1363" as const) : undefined;
    const sig =
      jwtKeyAlg === "ec-p256"
        ? crypto.sign("sha256", input, { key: kp.privateKey, dsaEncoding: "ieee-p1363" })
        : signData(kp.privateKey, input);
    const rawSign = await opsPerSec(() =>
      jwtKeyAlg === "ec-p256"
        ? crypto.sign("sha256", input, { key: kp.privateKey, dsaEncoding: "ieee-p1363" })
        : signData(kp.privateKey, input),
    );
    const rawVerify = await opsPerSec(() =>
      verifyData(kp.publicKey, input, sig, enc ? { ecdsaEncoding: enc } : {}),
    );
    const mint = await opsPerSec(() => ca.signJwtSvid(req));
    const verify = await opsPerSec(() =>
      validateJwtSvid(token, {
        audience: "spiffe://bench.test/db",
        bundles,
        now: new Date(),
        allowPostQuantum: true,
      }),
    );
    jrows.push([
      jwtKeyAlg === "ec-p256" ? "ES256" : "ML-DSA-65",
      fmt(mint),
      fmt(rawSign),
      (mint / rawSign).toFixed(2),
      fmt(verify),
      fmt(rawVerify),
      (verify / rawVerify).toFixed(2),
    ]);
    await ds.close();
  }
  process.stdout.write(`${table(jrows)}\n`);
  fs.rmSync(dir, { recursive: true, force: true });
}
