import crypto from "node:crypto";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { generateKeyPair, keyAlgOf } from "../host/core/alg.ts";
import { parseSpiffeBundle } from "../host/core/bundle.ts";
import { FakeClock } from "../host/core/clock.ts";
import { validateJwtSvid } from "../host/core/jwtsvid.ts";
import { issueCaCertificate, parseCertificate } from "../host/core/x509.ts";
import { verifyX509Svid } from "../host/core/x509-verify.ts";
import { type CaConfig, CaManager } from "../host/server/ca.ts";
import { openDatastore } from "../host/server/datastore/index.ts";
import type { Datastore } from "../host/server/datastore/types.ts";
import { DiskKeyManager } from "../host/server/keymanager/disk.ts";
import { MemoryKeyManager } from "../host/server/keymanager/memory.ts";
import { tmpDir } from "./helpers/cli.ts";

const TD = "example.org";
const HOUR = 3_600_000;
const open: Datastore[] = [];

async function setup(cfg: Partial<CaConfig> = {}, clock = new FakeClock(Date.UTC(2026, 5, 1))) {
  const dir = tmpDir();
  const ds = await openDatastore({ kind: "sqlite", path: path.join(dir, "ds.sqlite3") });
  open.push(ds);
  const km = new DiskKeyManager(path.join(dir, "keys"));
  const full: CaConfig = {
    trustDomain: TD,
    keyAlg: "ec-p256",
    ttlMs: 24 * HOUR,
    jwtKeyAlg: "ec-p256",
    ...cfg,
  };
  const ca = new CaManager(ds, km, full, clock);
  await ca.init();
  return { ca, ds, km, clock, dir, cfg: full };
}

afterEach(async () => {
  for (const ds of open.splice(0)) await ds.close();
});

async function svid(ca: CaManager, alg: Parameters<typeof generateKeyPair>[0] = "ec-p256", ttlMs = HOUR) {
  const kp = generateKeyPair(alg);
  return ca.signX509Svid({ spiffeId: `spiffe://${TD}/web`, publicKey: kp.publicKey, ttlMs });
}

describe("CA manager", () => {
  it("creates an active X.509 CA and JWT key on first start and publishes bundle sequence 1", async () => {
    const { ca, ds } = await setup();
    const recs = ca.records();
    expect(recs.map((r) => `${r.kind}:${r.status}`).sort()).toEqual(["jwt:active", "x509:active"]);
    const b = ca.trustBundle();
    expect(b.sequence).toBe(1);
    expect(b.x509Authorities).toHaveLength(1);
    expect(b.jwtAuthorities).toHaveLength(1);
    const stored = await ds.getBundle(TD);
    expect(stored?.sequence).toBe(1);
    const parsed = parseSpiffeBundle(stored!.document, TD);
    expect(parsed.x509Authorities[0]).toEqual(b.x509Authorities[0]);
    const root = parseCertificate(b.x509Authorities[0]!);
    expect(root.basicConstraints?.cA).toBe(true);
    expect(root.uriSans).toEqual([`spiffe://${TD}`]);
  });

  it("prepares the next CA at ½ life, activates it at ⅙ remaining, keeps the old one until it expires", async () => {
    const { ca, clock } = await setup();
    const first = ca.records().find((r) => r.kind === "x509")!;
    const oldSvid = await svid(ca, "ec-p256", 23 * HOUR);

    clock.advance(11 * HOUR); // before ½
    expect(await ca.rotate()).toBe(false);
    expect(ca.trustBundle().sequence).toBe(1);

    clock.advance(1.5 * HOUR); // past ½ (12h + 10s backdate)
    expect(await ca.rotate()).toBe(true);
    const prepared = ca.records().filter((r) => r.status === "prepared");
    expect(prepared.map((r) => r.kind).sort()).toEqual(["jwt", "x509"]);
    expect(ca.trustBundle().sequence).toBe(2);
    expect(ca.trustBundle().x509Authorities).toHaveLength(2); // published before it signs anything
    // still signing with the first CA
    const mid = await svid(ca);
    expect(parseCertificate(mid.chain[0]!).issuer).toEqual(parseCertificate(first.certDer!).subject);

    clock.set(first.notAfter * 1000 - 3.9 * HOUR); // ⅙ of 24h = 4h remaining
    expect(await ca.rotate()).toBe(true);
    const active = ca.records().find((r) => r.kind === "x509" && r.status === "active")!;
    expect(active.id).not.toBe(first.id);
    expect(ca.records().find((r) => r.id === first.id)?.status).toBe("retired");
    const fresh = await svid(ca);
    expect(Buffer.from(parseCertificate(fresh.chain[0]!).authorityKeyId!)).toEqual(
      Buffer.from(parseCertificate(active.certDer!).subjectKeyId!),
    );

    // both old and new SVIDs verify against the current bundle
    const bundles = new Map([[TD, ca.trustBundle()]]);
    const now = clock.now();
    expect(verifyX509Svid(oldSvid.chain, bundles, now).spiffeId.toString()).toBe(`spiffe://${TD}/web`);
    expect(verifyX509Svid(fresh.chain, bundles, now).spiffeId.toString()).toBe(`spiffe://${TD}/web`);

    // once the retired CA expires it is pruned from journal, key manager and bundle
    clock.set(first.notAfter * 1000 + 1000);
    expect(await ca.rotate()).toBe(true);
    expect(ca.records().some((r) => r.id === first.id)).toBe(false);
    expect(ca.trustBundle().x509Authorities).toHaveLength(1);
    expect(() => verifyX509Svid(oldSvid.chain, new Map([[TD, ca.trustBundle()]]), clock.now())).toThrow();
  });

  it("caps an SVID's lifetime at its CA's end of life", async () => {
    const { ca } = await setup();
    const caEnd = ca.records().find((r) => r.kind === "x509")!.notAfter;
    const r = await svid(ca, "ec-p256", 100 * HOUR);
    expect(r.notAfter.getTime() / 1000).toBeLessThanOrEqual(caEnd);
  });

  it("resumes from the journal after a restart, and recovers after a long outage", async () => {
    const { ca, ds, dir, clock, cfg } = await setup();
    const before = ca
      .records()
      .map((r) => r.id)
      .sort();
    const km2 = new DiskKeyManager(path.join(dir, "keys"));
    const ca2 = new CaManager(ds, km2, cfg, clock);
    await ca2.init();
    expect(
      ca2
        .records()
        .map((r) => r.id)
        .sort(),
    ).toEqual(before);
    expect(ca2.trustBundle().sequence).toBe(1);
    // the server was down for three days: everything expired, a new CA is created at once
    clock.advance(72 * HOUR);
    const ca3 = new CaManager(ds, km2, cfg, clock);
    await ca3.init();
    const active = ca3.records().find((r) => r.kind === "x509" && r.status === "active")!;
    expect(active.notBefore * 1000).toBeGreaterThan(clock.now().getTime() - 60_000);
    expect(before).not.toContain(active.id);
    const r = await svid(ca3);
    verifyX509Svid(r.chain, new Map([[TD, ca3.trustBundle()]]), clock.now());
  });

  it("refuses to start when a journal key is missing from the key manager", async () => {
    const { ds, cfg, clock } = await setup();
    const ca = new CaManager(ds, new MemoryKeyManager(), cfg, clock);
    await expect(ca.init()).rejects.toMatchObject({ code: "QHX_CA_KEY_MISSING" });
  });

  for (const [caAlg, leafAlg] of [
    ["ml-dsa-65", "ec-p256"],
    ["ec-p256", "ml-dsa-65"],
    ["ed25519", "ml-dsa-44"],
    ["ml-dsa-87", "ed25519"],
  ] as const) {
    it(`${caAlg} CA signs ${leafAlg} leaves that verify`, async () => {
      const { ca, clock } = await setup({ keyAlg: caAlg });
      const r = await svid(ca, leafAlg);
      const leaf = new crypto.X509Certificate(r.chain[0]!);
      expect(keyAlgOf(leaf.publicKey)).toBe(leafAlg);
      const v = verifyX509Svid(r.chain, new Map([[TD, ca.trustBundle()]]), clock.now());
      expect(v.spiffeId.toString()).toBe(`spiffe://${TD}/web`);
      expect(leaf.verify(new crypto.X509Certificate(ca.trustBundle().x509Authorities[0]!).publicKey)).toBe(
        true,
      );
    });
  }

  it("signs only its own trust domain", async () => {
    const { ca } = await setup();
    const kp = generateKeyPair("ec-p256");
    await expect(
      ca.signX509Svid({ spiffeId: "spiffe://other.org/web", publicKey: kp.publicKey, ttlMs: HOUR }),
    ).rejects.toMatchObject({ code: "QHX_WRONG_TRUST_DOMAIN" });
    await expect(
      ca.signJwtSvid({ spiffeId: "spiffe://other.org/web", audience: ["a"], ttlMs: HOUR }),
    ).rejects.toMatchObject({
      code: "QHX_WRONG_TRUST_DOMAIN",
    });
  });

  it("becomes an intermediate under an upstream CA and publishes the upstream root", async () => {
    const clock = new FakeClock(Date.UTC(2026, 5, 1));
    const rootKp = generateKeyPair("ec-p256");
    const now = clock.now();
    const rootDer = issueCaCertificate({
      publicKey: rootKp.publicKey,
      signer: { privateKey: rootKp.privateKey },
      trustDomain: TD,
      subject: { commonName: "Corp Root", organization: "Corp" },
      notBefore: new Date(now.getTime() - HOUR),
      notAfter: new Date(now.getTime() + 365 * 24 * HOUR),
    });
    const { ca } = await setup(
      { upstream: { chain: [rootDer], privateKey: rootKp.privateKey, roots: [rootDer] } },
      clock,
    );
    expect(ca.trustBundle().x509Authorities).toEqual([rootDer]);
    const r = await svid(ca, "ml-dsa-65");
    expect(r.chain).toHaveLength(2);
    const v = verifyX509Svid(r.chain, new Map([[TD, ca.trustBundle()]]), clock.now());
    expect(v.path).toHaveLength(3);
  });

  it("mints JWT-SVIDs with the active key; ML-DSA keys mint ML-DSA tokens", async () => {
    for (const jwtKeyAlg of ["ec-p256", "ml-dsa-65"] as const) {
      const { ca, clock } = await setup({ jwtKeyAlg });
      const { token, alg } = await ca.signJwtSvid({
        spiffeId: `spiffe://${TD}/web`,
        audience: ["db"],
        ttlMs: 300_000,
      });
      expect(alg).toBe(jwtKeyAlg === "ec-p256" ? "ES256" : "ML-DSA-65");
      const v = await validateJwtSvid(token, {
        audience: "db",
        bundles: new Map([[TD, ca.trustBundle()]]),
        now: clock.now(),
        allowPostQuantum: true,
      });
      expect(v.spiffeId.toString()).toBe(`spiffe://${TD}/web`);
    }
  });
});
