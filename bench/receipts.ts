/**
 * Provenance throughput: notary appends per second (admission + group commit on a real SQLite file +
 * inclusion proof and COSE Receipt for every append) and offline receipt verifications per second, with
 * ECDSA P-256 and ML-DSA-65 workload keys. References measured in the same run: the same appends with
 * one transaction (one fsync) per append instead of a group commit, and the bare node:crypto verification
 * of the statement signature (the floor of an offline verification).
 * Goals on 2 cores: >= 3,000 appends/s; <= 200 µs per ECDSA receipt verification.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Registry } from "prom-client";
import { generateKeyPair, type KeyAlg } from "../host/core/alg.ts";
import { FakeClock } from "../host/core/clock.ts";
import { issueCaCertificate, issueX509Svid } from "../host/core/x509.ts";
import { decodeSign1, sigStructure } from "../host/provenance/cose.ts";
import { claimsFromRecord, signStatement } from "../host/provenance/receipt.ts";
import { makeTrust, verifyReceipt } from "../host/provenance/verify.ts";
import type { ServerCore } from "../host/server/core.ts";
import { SqliteDatastore } from "../host/server/datastore/sqlite.ts";
import { Notary } from "../host/server/notary.ts";
import type { ExchangeRecord } from "../host/tunnel/record.ts";
import { fmt, opsPerSec, table } from "./harness.ts";

const TD = "bench.test";
const T0 = Date.UTC(2026, 0, 1);

function pki(alg: KeyAlg) {
  const ca = generateKeyPair("ec-p256");
  const rootDer = issueCaCertificate({
    publicKey: ca.publicKey,
    signer: { privateKey: ca.privateKey },
    trustDomain: TD,
    notBefore: new Date(T0 - 86_400_000),
    notAfter: new Date(T0 + 30 * 86_400_000),
  });
  const k = generateKeyPair(alg);
  const leaf = issueX509Svid({
    spiffeId: `spiffe://${TD}/ns/prod/web`,
    publicKey: k.publicKey,
    issuerCertDer: rootDer,
    issuerKey: ca.privateKey,
    notBefore: new Date(T0),
    notAfter: new Date(T0 + 3_600_000),
  });
  return {
    bundle: { trustDomain: TD, x509Authorities: [rootDer], jwtAuthorities: [], sequence: 1 },
    key: k.privateKey,
    chainDer: [leaf],
  };
}

const hx = (s: string) => crypto.createHash("sha256").update(s).digest("hex");

function statements(p: ReturnType<typeof pki>, n: number): Uint8Array[] {
  const fp = crypto.createHash("sha256").update(p.chainDer[0]!).digest("hex");
  return Array.from({ length: n }, (_, i) => {
    const rec: ExchangeRecord = {
      id: crypto.randomUUID(),
      mode: "mtls",
      role: "client",
      localId: `spiffe://${TD}/ns/prod/web`,
      peerId: `spiffe://${TD}/ns/prod/db`,
      localCertSha256: fp,
      peerCertSha256: hx("peer"),
      decision: "allow",
      reason: "allow-list",
      policyVersion: 7,
      group: "X25519MLKEM768",
      peerSigAlg: "ecdsa_secp256r1_sha256",
      startedAt: T0 + 60_000,
      handshakeAt: T0 + 60_002,
      endedAt: T0 + 60_100 + i,
      requestBytes: 512,
      requestSha256: hx(`req ${i}`),
      responseBytes: 4096,
      responseSha256: hx(`resp ${i}`),
      svid: { key: p.key, chainDer: p.chainDer },
      peerChainDer: [],
    };
    return signStatement(claimsFromRecord(rec), p.key, p.chainDer);
  });
}

async function openNotary(dir: string, bundle: ReturnType<typeof pki>["bundle"]) {
  fs.mkdirSync(dir, { recursive: true });
  const ds = SqliteDatastore.open(path.join(dir, "datastore.sqlite3"));
  const core = {
    cfg: { dataDir: dir, trustDomain: TD },
    ds,
    clock: new FakeClock(T0 + 600_000),
    log: { info() {}, warn() {}, error() {} },
    ca: { trustBundle: () => bundle },
    metrics: { registry: new Registry() },
  } as unknown as ServerCore;
  return { notary: await Notary.open(core), ds };
}

export async function run(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-bench-receipts-"));
  process.stdout.write(
    `Node ${process.versions.node}, OpenSSL ${process.versions.openssl}, ${os.cpus().length} cores, SQLite WAL synchronous=FULL on ${os.tmpdir()}\n\n`,
  );
  const arows: string[][] = [
    ["notary appends (with proofs)", "QHx appends/s", "CPU µs/append", "1 tx/append /s", "ratio", "goal"],
  ];
  const vrows: string[][] = [
    [
      "offline verification",
      "QHx receipts/s",
      "µs/receipt",
      "CPU µs/receipt",
      "raw verify/s",
      "ratio",
      "goal",
    ],
  ];
  const N = 6000;
  for (const alg of ["ec-p256", "ml-dsa-65"] as KeyAlg[]) {
    const p = pki(alg);
    const stmts = statements(p, N + 400);
    const { notary, ds } = await openNotary(path.join(root, alg), p.bundle);
    // warm-up, then N concurrent submissions: admission, group commit, inclusion proof + COSE Receipt each
    await Promise.all(stmts.slice(N, N + 200).map((s) => notary.submit(s)));
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const results = await Promise.all(stmts.slice(0, N).map((s) => notary.submit(s)));
    const appends = (N * 1000) / (performance.now() - t0);
    const cpu = process.cpuUsage(c0);
    const cpuPerAppend = (cpu.user + cpu.system) / N;
    if (results.some((r) => r.receipt.length === 0)) throw new Error("missing receipt");
    // reference: the same admitted appends, each awaited alone (one transaction and fsync per append)
    const admitted = stmts.slice(N + 200, N + 400).map((s) => notary.admit(s));
    const t1 = performance.now();
    for (const a of admitted) await notary.append(a);
    const serial = (admitted.length * 1000) / (performance.now() - t1);
    arows.push([
      alg,
      fmt(appends),
      cpuPerAppend.toFixed(0),
      fmt(serial),
      (appends / serial).toFixed(1),
      alg === "ec-p256" ? ">= 3,000/s" : "",
    ]);

    // offline verification of exported transparent statements
    const trust = makeTrust([p.bundle], notary.publicKey, (await notary.checkpoint()).checkpoint);
    const files = await Promise.all(results.slice(0, 512).map((r) => notary.exportEntry(r.index)));
    const now = new Date(T0 + 10 * 365 * 86_400_000);
    let i = 0;
    const verified = await opsPerSec(() => verifyReceipt(files[i++ % files.length]!, trust, { now }));
    const v0 = process.cpuUsage();
    for (const f of files) verifyReceipt(f, trust, { now });
    const vc = process.cpuUsage(v0);
    const cpuPerVerify = (vc.user + vc.system) / files.length;
    const m = decodeSign1(files[0]!);
    const tbs = sigStructure(m.protectedBytes, m.payload!);
    const pub = crypto.createPublicKey(p.key);
    const raw = await opsPerSec(() =>
      crypto.verify(
        alg === "ec-p256" ? "sha256" : null,
        tbs,
        alg === "ec-p256" ? { key: pub, dsaEncoding: "ieee-p1363" } : pub,
        m.signature,
      ),
    );
    vrows.push([
      alg,
      fmt(verified),
      (1e6 / verified).toFixed(0),
      cpuPerVerify.toFixed(0),
      fmt(raw),
      (verified / raw).toFixed(2),
      alg === "ec-p256" ? "<= 200 µs" : "",
    ]);
    await ds.close();
  }
  process.stdout.write(`${table(arows)}\n\n${table(vrows)}\n`);
  process.stdout.write(
    `\nload average ${os
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(" ")} (wall-clock rates drop with load; CPU µs are this process's own)\n`,
  );
  fs.rmSync(root, { recursive: true, force: true });
}
