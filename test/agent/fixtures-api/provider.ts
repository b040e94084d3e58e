/**
 * Test fixtures for the Workload API / SDS servers: a real PKI (generated keys, CA and SVID certificates,
 * JWT authority) and a WorkloadIdentityProvider whose state the tests change at will.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateKeyPair, type KeyPair } from "../../../host/core/alg.ts";
import type { TrustBundle } from "../../../host/core/bundle-types.ts";
import { mintJwtSvid } from "../../../host/core/jwtsvid.ts";
import { issueCaCertificate, issueX509Svid, readTlv } from "../../../host/core/x509.ts";
import type {
  WorkloadIdentities,
  WorkloadIdentityProvider,
  WorkloadX509Svid,
} from "../../../host/agent/workload-api/types.ts";
import type { PeerCred } from "../../../host/agent/workload/types.ts";

export const TD = "example.org";
export const FED_TD = "partner.test";
export const WEB_ID = "spiffe://example.org/web";
export const DB_ID = "spiffe://example.org/db";
export const JWT_KID = "jwt-key-1";
export const PEER: PeerCred = { pid: 4242, uid: 1000, gid: 1000 };

export interface TestCa {
  trustDomain: string;
  key: KeyPair;
  cert: Uint8Array;
}

export function makeCa(trustDomain: string): TestCa {
  const key = generateKeyPair("ec-p256");
  const now = Date.now();
  const cert = issueCaCertificate({
    publicKey: key.publicKey,
    signer: { privateKey: key.privateKey },
    trustDomain,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * 3600_000),
  });
  return { trustDomain, key, cert };
}

export function makeSvid(ca: TestCa, spiffeId: string, hint?: string): WorkloadX509Svid {
  const key = generateKeyPair("ec-p256");
  const now = Date.now();
  const leaf = issueX509Svid({
    spiffeId,
    publicKey: key.publicKey,
    issuerCertDer: ca.cert,
    issuerKey: ca.key.privateKey,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3600_000),
  });
  const privateKey = new Uint8Array(key.privateKey.export({ format: "der", type: "pkcs8" }));
  const svid: WorkloadX509Svid = {
    spiffeId,
    chain: [leaf],
    privateKey,
    expiresAt: Math.floor(now / 1000) + 3600,
  };
  if (hint !== undefined) svid.hint = hint;
  return svid;
}

/** DER certificates concatenated → each certificate. */
export function splitDer(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let off = 0;
  while (off < bytes.length) {
    const { end } = readTlv(bytes, off);
    out.push(bytes.subarray(off, end));
    off = end;
  }
  return out;
}

export class TestProvider implements WorkloadIdentityProvider {
  readonly ca = makeCa(TD);
  readonly fedCa = makeCa(FED_TD);
  readonly jwtKey = generateKeyPair("ec-p256");
  svids: WorkloadX509Svid[];
  bundles: TrustBundle[];
  /** identitiesFor returns no SVIDs while set. */
  denied = false;
  /** identitiesFor throws this while set. */
  failWith: Error | undefined;
  readonly listeners = new Set<() => void>();
  readonly peersSeen: PeerCred[] = [];
  identitiesCalls = 0;

  constructor() {
    this.svids = [makeSvid(this.ca, WEB_ID, "internal"), makeSvid(this.ca, DB_ID, "external")];
    this.bundles = [
      {
        trustDomain: TD,
        x509Authorities: [this.ca.cert],
        jwtAuthorities: [{ kid: JWT_KID, publicKey: this.jwtKey.publicKey }],
        sequence: 1,
      },
      { trustDomain: FED_TD, x509Authorities: [this.fedCa.cert], jwtAuthorities: [], sequence: 1 },
    ];
  }

  async identitiesFor(peer: PeerCred): Promise<WorkloadIdentities> {
    this.identitiesCalls++;
    this.peersSeen.push(peer);
    if (this.failWith) throw this.failWith;
    return { svids: this.denied ? [] : [...this.svids], bundles: [...this.bundles] };
  }

  onChange(listener: () => void): () => void {
    // a wrapper, so the same function subscribed twice counts twice
    const l = () => listener();
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  async fetchJwtSvids(
    _peer: PeerCred,
    audience: string[],
    spiffeId?: string,
  ): Promise<{ spiffeId: string; token: string; hint?: string }[]> {
    const svid = spiffeId === undefined ? this.svids[0] : this.svids.find((s) => s.spiffeId === spiffeId);
    if (!svid) return [];
    const token = await mintJwtSvid({
      spiffeId: svid.spiffeId,
      audience,
      ttlSeconds: 300,
      privateKey: this.jwtKey.privateKey,
      kid: JWT_KID,
      now: new Date(),
    });
    return [{ spiffeId: svid.spiffeId, token, ...(svid.hint ? { hint: svid.hint } : {}) }];
  }

  allBundles(): TrustBundle[] {
    return [...this.bundles];
  }

  /** Tell subscribers something changed. */
  emit(): void {
    for (const l of [...this.listeners]) l();
  }

  /** A new key and certificate for the default SVID, then emit(). */
  rotateDefault(): WorkloadX509Svid {
    const first = this.svids[0]!;
    const next = makeSvid(this.ca, first.spiffeId, first.hint);
    this.svids = [next, ...this.svids.slice(1)];
    this.emit();
    return next;
  }
}

/** A short socket path in a fresh temp dir (sun_path is 108 bytes). */
export function tempSocketPath(name = "api.sock"): { dir: string; socket: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-wl-"));
  return { dir, socket: path.join(dir, name) };
}

/** Poll until `cond()` holds (or fail after `ms`). */
export async function waitFor(cond: () => boolean, ms = 3000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function sha256(b: Uint8Array): string {
  return crypto.createHash("sha256").update(b).digest("hex");
}
