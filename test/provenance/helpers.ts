/** Test fixtures for provenance: a small PKI, exchange records, and an in-process notary on a real datastore. */
import crypto, { type KeyObject } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Registry } from "prom-client";
import { generateKeyPair, type KeyAlg } from "../../host/core/alg.ts";
import type { TrustBundle } from "../../host/core/bundle-types.ts";
import { FakeClock } from "../../host/core/clock.ts";
import { issueCaCertificate, issueX509Svid } from "../../host/core/x509.ts";
import { SqliteDatastore } from "../../host/server/datastore/sqlite.ts";
import { Notary } from "../../host/server/notary.ts";
import type { ServerCore } from "../../host/server/core.ts";
import type { ExchangeRecord } from "../../host/tunnel/record.ts";

export const TD = "example.org";
export const T0 = Date.UTC(2026, 0, 1);
export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

export interface Pki {
  rootDer: Uint8Array;
  rootKey: KeyObject;
  bundle: TrustBundle;
}

/** A root CA valid [T0 - 1 day, T0 + 30 days]. */
export function makePki(alg: KeyAlg = "ec-p256", td = TD): Pki {
  const k = generateKeyPair(alg);
  const rootDer = issueCaCertificate({
    publicKey: k.publicKey,
    signer: { privateKey: k.privateKey },
    trustDomain: td,
    notBefore: new Date(T0 - DAY),
    notAfter: new Date(T0 + 30 * DAY),
  });
  return {
    rootDer,
    rootKey: k.privateKey,
    bundle: { trustDomain: td, x509Authorities: [rootDer], jwtAuthorities: [], sequence: 1 },
  };
}

export interface Svid {
  key: KeyObject;
  chainDer: Uint8Array[];
  id: string;
}

/** An X509-SVID valid [T0, T0 + 1 h] (by default). */
export function makeSvid(pki: Pki, id: string, alg: KeyAlg = "ec-p256", notAfter = T0 + HOUR): Svid {
  const k = generateKeyPair(alg);
  const leaf = issueX509Svid({
    spiffeId: id,
    publicKey: k.publicKey,
    issuerCertDer: pki.rootDer,
    issuerKey: pki.rootKey,
    notBefore: new Date(T0),
    notAfter: new Date(notAfter),
  });
  return { key: k.privateKey, chainDer: [leaf], id };
}

const sha = (b: Uint8Array | string) => crypto.createHash("sha256").update(b).digest("hex");

export function makeRecord(
  svid: Svid,
  peer: Svid | undefined,
  o: Partial<ExchangeRecord> = {},
): ExchangeRecord {
  const req = crypto.randomBytes(64);
  const resp = crypto.randomBytes(128);
  return {
    id: crypto.randomUUID(),
    mode: "mtls",
    role: "client",
    localId: svid.id,
    peerId: peer?.id ?? "",
    localCertSha256: sha(svid.chainDer[0]!),
    peerCertSha256: peer ? sha(peer.chainDer[0]!) : "",
    decision: "allow",
    reason: "policy allow-web",
    policyVersion: 3,
    group: "X25519MLKEM768",
    peerSigAlg: "ecdsa_secp256r1_sha256",
    startedAt: T0 + 60_000,
    handshakeAt: T0 + 60_010,
    endedAt: T0 + 61_000,
    requestBytes: req.length,
    requestSha256: sha(req),
    responseBytes: resp.length,
    responseSha256: sha(resp),
    svid: { key: svid.key, chainDer: svid.chainDer },
    peerChainDer: peer?.chainDer ?? [],
    ...o,
  };
}

export interface TestNotary {
  notary: Notary;
  ds: SqliteDatastore;
  clock: FakeClock;
  dir: string;
  core: ServerCore;
  setBundle(b: TrustBundle): void;
  close(): Promise<void>;
}

/** A Notary on a real SQLite datastore in a temporary data directory, with a fake clock at T0 + 10 min. */
export async function openTestNotary(pki: Pki, o: { dir?: string } = {}): Promise<TestNotary> {
  const dir = o.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "qhx-notary-"));
  const ds = SqliteDatastore.open(path.join(dir, "datastore.sqlite3"));
  const clock = new FakeClock(T0 + 10 * 60_000);
  let bundle = pki.bundle;
  const logs: unknown[] = [];
  const core = {
    cfg: { dataDir: dir, trustDomain: pki.bundle.trustDomain },
    ds,
    clock,
    log: { info: () => {}, warn: (x: unknown) => logs.push(x), error: (x: unknown) => logs.push(x) },
    ca: { trustBundle: () => bundle },
    metrics: { registry: new Registry() },
  } as unknown as ServerCore;
  const notary = await Notary.open(core);
  return {
    notary,
    ds,
    clock,
    dir,
    core,
    setBundle: (b) => {
      bundle = b;
    },
    close: async () => {
      await ds.close();
      if (!o.dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
