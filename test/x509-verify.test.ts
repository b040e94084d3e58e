import type { KeyObject } from "node:crypto";
import { describe, expect, it } from "vitest";
import { generateKeyPair, type KeyAlg, SIG_OID } from "../host/core/alg.ts";
import type { TrustBundle } from "../host/core/bundle-types.ts";
import { VerificationError } from "../host/core/errors.ts";
import {
  authorityKeyIdExtension,
  basicConstraintsExtension,
  computeKeyIdentifier,
  encodeName,
  encodeSpki,
  extKeyUsageExtension,
  type IssueCaOptions,
  type IssueSvidOptions,
  issueCaCertificate,
  issueCertificateRaw,
  issueX509Svid,
  type KeyUsageName,
  keyUsageExtension,
  OID,
  type ParsedCertificate,
  parseCertificate,
  randomSerial,
  subjectAltNameExtension,
  subjectKeyIdExtension,
  type X509Extension,
} from "../host/core/x509.ts";
import { SVID_ERROR_CODES, verifyX509Svid } from "../host/core/x509-verify.ts";

const TD = "example.org";
const ID = `spiffe://${TD}/ns/prod/sa/api`;
const HOUR = 3_600_000;
const NOW = new Date(Date.UTC(2026, 5, 1, 12));
const NB = new Date(NOW.getTime() - HOUR);
const NA = new Date(NOW.getTime() + 24 * HOUR);

interface Ca {
  der: Uint8Array;
  key: KeyObject;
  pub: KeyObject;
  c: ParsedCertificate;
}

function ca(der: Uint8Array, key: KeyObject, pub: KeyObject): Ca {
  return { der, key, pub, c: parseCertificate(der) };
}

function mkRoot(alg: KeyAlg = "ec-p256", o: Partial<IssueCaOptions> = {}): Ca {
  const k = generateKeyPair(alg);
  const der = issueCaCertificate({
    publicKey: k.publicKey,
    signer: { privateKey: k.privateKey },
    trustDomain: TD,
    notBefore: NB,
    notAfter: NA,
    ...o,
  });
  return ca(der, k.privateKey, k.publicKey);
}

function mkInter(parent: Ca, alg: KeyAlg = "ec-p256", o: Partial<IssueCaOptions> = {}): Ca {
  const k = generateKeyPair(alg);
  const der = issueCaCertificate({
    publicKey: k.publicKey,
    signer: { privateKey: parent.key, certDer: parent.der },
    trustDomain: TD,
    notBefore: NB,
    notAfter: NA,
    ...o,
  });
  return ca(der, k.privateKey, k.publicKey);
}

function mkLeaf(issuer: Ca, o: Partial<IssueSvidOptions> = {}, alg: KeyAlg = "ec-p256"): Uint8Array {
  return issueX509Svid({
    spiffeId: ID,
    publicKey: generateKeyPair(alg).publicKey,
    issuerCertDer: issuer.der,
    issuerKey: issuer.key,
    notBefore: NB,
    notAfter: NA,
    ...o,
  });
}

interface RawOpts {
  /** replace (or with null: drop) extensions by OID */
  ext?: Record<string, X509Extension | null>;
  add?: X509Extension[];
  notBefore?: Date;
  notAfter?: Date;
  signatureOid?: string;
  tbsSignatureOid?: string;
  subject?: Uint8Array;
  publicKey?: KeyObject;
}

/** A certificate built field by field with the x509.ts building blocks, signed by `issuer`. */
function raw(issuer: Ca, defaults: X509Extension[], o: RawOpts): Uint8Array {
  const publicKey = o.publicKey ?? generateKeyPair("ec-p256").publicKey;
  const all = [
    ...defaults,
    subjectKeyIdExtension(computeKeyIdentifier(encodeSpki(publicKey))),
    authorityKeyIdExtension(issuer.c.subjectKeyId!),
  ];
  const exts: X509Extension[] = [];
  for (const e of all) {
    const r = o.ext?.[e.oid];
    if (r === null) continue;
    exts.push(r ?? e);
  }
  for (const [oid, e] of Object.entries(o.ext ?? {})) if (e && !all.some((x) => x.oid === oid)) exts.push(e);
  exts.push(...(o.add ?? []));
  return issueCertificateRaw({
    serial: randomSerial(),
    issuer: issuer.c.subject,
    subject: o.subject ?? encodeName(),
    notBefore: o.notBefore ?? NB,
    notAfter: o.notAfter ?? NA,
    publicKey,
    extensions: exts,
    signingKey: issuer.key,
    signatureOid: o.signatureOid,
    tbsSignatureOid: o.tbsSignatureOid,
  });
}

function rawLeaf(issuer: Ca, o: RawOpts = {}): Uint8Array {
  return raw(
    issuer,
    [
      basicConstraintsExtension(false),
      keyUsageExtension(["digitalSignature"]),
      extKeyUsageExtension([OID.serverAuth, OID.clientAuth]),
      subjectAltNameExtension({ uris: [ID] }, true),
    ],
    o,
  );
}

function rawCa(issuer: Ca, o: RawOpts = {}, usages: KeyUsageName[] = ["keyCertSign", "cRLSign"]): Ca {
  const k = generateKeyPair("ec-p256");
  const der = raw(
    issuer,
    [
      basicConstraintsExtension(true),
      keyUsageExtension(usages),
      subjectAltNameExtension({ uris: [`spiffe://${TD}`] }),
    ],
    { subject: encodeName({ commonName: `raw CA ${Math.random()}` }), ...o, publicKey: k.publicKey },
  );
  return ca(der, k.privateKey, k.publicKey);
}

function bundles(...roots: Ca[]): Map<string, TrustBundle> {
  return new Map([
    [TD, { trustDomain: TD, x509Authorities: roots.map((r) => r.der), jwtAuthorities: [], sequence: 1 }],
  ]);
}

const tested = new Set<string>();

function expectCode(fn: () => unknown, code: (typeof SVID_ERROR_CODES)[number], message?: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${code}`).toBeInstanceOf(VerificationError);
  expect((err as VerificationError).code).toBe(code);
  if (message) expect((err as Error).message).toMatch(message);
  tested.add(code);
}

function flip(der: Uint8Array, at: number): Uint8Array {
  const copy = new Uint8Array(der);
  copy[at]! ^= 0x01;
  return copy;
}

describe("valid X509-SVID chains", () => {
  it("root → leaf, for mixed algorithms", () => {
    for (const [caAlg, leafAlg] of [
      ["ec-p256", "ec-p256"],
      ["ml-dsa-65", "ec-p256"],
      ["ec-p256", "ml-dsa-87"],
      ["ed25519", "ml-dsa-44"],
      ["ml-dsa-87", "ed25519"],
      ["ec-p384", "ec-p256"],
    ] as const) {
      const root = mkRoot(caAlg);
      const leaf = mkLeaf(root, {}, leafAlg);
      const v = verifyX509Svid([leaf], bundles(root), NOW);
      expect(v.spiffeId.toString()).toBe(ID);
      expect(v.trustDomain).toBe(TD);
      expect(v.leaf.keyAlg).toBe(leafAlg);
      expect(v.path.map((p) => p.serial)).toEqual([v.leaf.serial, root.c.serial]);
    }
  });

  it("root → intermediate → leaf, with the root in the bundle or also presented", () => {
    const root = mkRoot("ml-dsa-65");
    const inter = mkInter(root, "ec-p256", { pathLen: 0 });
    const leaf = mkLeaf(inter);
    const v = verifyX509Svid([leaf, inter.der], bundles(root), NOW);
    expect(v.path).toHaveLength(3);
    expect(v.path[1]!.serial).toBe(inter.c.serial);
    expect(v.path[2]!.serial).toBe(root.c.serial);
    // the root presented too (and anything after it ignored)
    const other = mkRoot();
    expect(verifyX509Svid([leaf, inter.der, root.der, other.der], bundles(root), NOW).path).toHaveLength(3);
    // an intermediate that is itself in the bundle anchors the path
    expect(verifyX509Svid([leaf, inter.der], bundles(inter), NOW).path).toHaveLength(2);
  });

  it("upstream root (not an SVID) → QHx intermediate CA → leaf", () => {
    const k = generateKeyPair("ec-p384");
    const subject = encodeName({ country: "US", organization: "Corp", commonName: "Corp Root CA" });
    const upstreamDer = issueCertificateRaw({
      serial: randomSerial(),
      issuer: subject,
      subject,
      notBefore: new Date(NOW.getTime() - 365 * 24 * HOUR),
      notAfter: new Date(NOW.getTime() + 365 * 24 * HOUR),
      publicKey: k.publicKey,
      signingKey: k.privateKey,
      extensions: [
        basicConstraintsExtension(true, 2),
        keyUsageExtension(["keyCertSign", "cRLSign"]),
        subjectKeyIdExtension(computeKeyIdentifier(encodeSpki(k.publicKey))),
      ],
    });
    const upstream = ca(upstreamDer, k.privateKey, k.publicKey);
    const qhx = mkInter(upstream, "ml-dsa-44", { subject: { organization: "QHx", commonName: "QHx CA" } });
    const leaf = mkLeaf(qhx, { dnsNames: ["api.example.org"] });
    const v = verifyX509Svid([leaf, qhx.der], bundles(upstream), NOW);
    expect(v.path.map((p) => p.subjectString)).toEqual([
      "",
      "O=QHx, CN=QHx CA",
      "C=US, O=Corp, CN=Corp Root CA",
    ]);
    expect(v.leaf.dnsSans).toEqual(["api.example.org"]);
  });

  it("tries every bundle authority with the issuer's name (rotation, renewal)", () => {
    const subject = { organization: "QHx", commonName: "rotating" };
    const oldRoot = mkRoot("ec-p256", { subject });
    const newRoot = mkRoot("ed25519", { subject });
    const leaf = mkLeaf(newRoot);
    expect(verifyX509Svid([leaf], bundles(oldRoot, newRoot), NOW).path[1]!.serial).toBe(newRoot.c.serial);
    // a renewed root (same key and name): the expired copy is skipped
    const expired = ca(
      issueCaCertificate({
        publicKey: newRoot.pub,
        signer: { privateKey: newRoot.key },
        trustDomain: TD,
        subject,
        notBefore: new Date(NOW.getTime() - 48 * HOUR),
        notAfter: new Date(NOW.getTime() - 24 * HOUR),
      }),
      newRoot.key,
      newRoot.pub,
    );
    expect(verifyX509Svid([leaf], bundles(expired, newRoot), NOW).path[1]!.serial).toBe(newRoot.c.serial);
    expectCode(() => verifyX509Svid([leaf], bundles(expired), NOW), "QHX_SVID_EXPIRED", /certificate 1/);
  });

  it("accepts the validity bounds themselves, and a function as bundle source", () => {
    const root = mkRoot();
    const leaf = mkLeaf(root, { notBefore: NOW, notAfter: new Date(NOW.getTime() + HOUR) });
    const src = (td: string) => bundles(root).get(td);
    expect(verifyX509Svid([leaf], src, NOW).spiffeId.toString()).toBe(ID);
    expect(verifyX509Svid([leaf], src, new Date(NOW.getTime() + HOUR)).spiffeId.toString()).toBe(ID);
    expectCode(() => verifyX509Svid([leaf], src, new Date(NOW.getTime() + HOUR + 1000)), "QHX_SVID_EXPIRED");
    expectCode(() => verifyX509Svid([leaf], src, new Date(NOW.getTime() - 1000)), "QHX_SVID_NOT_YET_VALID");
  });

  it("accepts unknown non-critical extensions and chains of exactly maxChainLength", () => {
    const root = mkRoot();
    const leaf = mkLeaf(root, {
      extraExtensions: [{ oid: "1.3.6.1.4.1.99999.1", critical: false, value: Uint8Array.of(5, 0) }],
    });
    expect(verifyX509Svid([leaf], bundles(root), NOW).spiffeId.toString()).toBe(ID);
    let issuer = root;
    const inters: Ca[] = [];
    for (let i = 0; i < 7; i++) {
      issuer = mkInter(issuer);
      inters.unshift(issuer);
    }
    const deep = mkLeaf(issuer);
    const chain = [deep, ...inters.map((c) => c.der)];
    expect(chain).toHaveLength(8);
    expect(verifyX509Svid(chain, bundles(root), NOW).path).toHaveLength(9);
  });
});

describe("rejections, one per error code", () => {
  const root = mkRoot();
  const B = bundles(root);

  it("QHX_SVID_EMPTY_CHAIN", () => {
    expectCode(() => verifyX509Svid([], B, NOW), "QHX_SVID_EMPTY_CHAIN");
  });

  it("QHX_SVID_CHAIN_TOO_LONG", () => {
    const leaf = mkLeaf(root);
    expectCode(() => verifyX509Svid(Array(9).fill(leaf), B, NOW), "QHX_SVID_CHAIN_TOO_LONG");
    const inter = mkInter(root);
    const l2 = mkLeaf(inter);
    expect(verifyX509Svid([l2, inter.der], B, NOW).path).toHaveLength(3);
    expectCode(
      () => verifyX509Svid([l2, inter.der, root.der], B, NOW, { maxChainLength: 2 }),
      "QHX_SVID_CHAIN_TOO_LONG",
    );
  });

  it("QHX_SVID_MALFORMED: garbage, truncated, or a garbage intermediate", () => {
    const leaf = mkLeaf(root);
    expectCode(() => verifyX509Svid([new Uint8Array(64).fill(0x30)], B, NOW), "QHX_SVID_MALFORMED");
    expectCode(() => verifyX509Svid([Buffer.from("not a certificate at all")], B, NOW), "QHX_SVID_MALFORMED");
    expectCode(() => verifyX509Svid([leaf.subarray(0, leaf.length - 5)], B, NOW), "QHX_SVID_MALFORMED");
    expectCode(
      () => verifyX509Svid([leaf, Uint8Array.of(1, 2, 3)], B, NOW),
      "QHX_SVID_MALFORMED",
      /certificate 1/,
    );
  });

  it("QHX_SVID_NO_URI_SAN", () => {
    const dnsOnly = rawLeaf(root, {
      ext: { [OID.subjectAltName]: subjectAltNameExtension({ dnsNames: ["a.b"] }) },
    });
    expectCode(() => verifyX509Svid([dnsOnly], B, NOW), "QHX_SVID_NO_URI_SAN");
    const noSan = rawLeaf(root, { ext: { [OID.subjectAltName]: null } });
    expectCode(() => verifyX509Svid([noSan], B, NOW), "QHX_SVID_NO_URI_SAN");
  });

  it("QHX_SVID_MULTIPLE_URI_SANS", () => {
    const two = rawLeaf(root, {
      ext: { [OID.subjectAltName]: subjectAltNameExtension({ uris: [ID, `spiffe://${TD}/other`] }, true) },
    });
    expectCode(() => verifyX509Svid([two], B, NOW), "QHX_SVID_MULTIPLE_URI_SANS");
  });

  it("QHX_SVID_BAD_SPIFFE_ID: not spiffe://, no path, or a signing certificate with a path", () => {
    for (const uri of [
      "https://example.org/api",
      `spiffe://${TD}`,
      "spiffe://Example.org/api",
      `spiffe://${TD}/a//b`,
    ]) {
      const leaf = rawLeaf(root, {
        ext: { [OID.subjectAltName]: subjectAltNameExtension({ uris: [uri] }, true) },
      });
      expectCode(() => verifyX509Svid([leaf], B, NOW), "QHX_SVID_BAD_SPIFFE_ID");
    }
    const inter = rawCa(root, {
      ext: { [OID.subjectAltName]: subjectAltNameExtension({ uris: [`spiffe://${TD}/ca`] }) },
    });
    expectCode(
      () => verifyX509Svid([mkLeaf(inter), inter.der], B, NOW),
      "QHX_SVID_BAD_SPIFFE_ID",
      /has a path/,
    );
  });

  it("QHX_SVID_NO_BASIC_CONSTRAINTS", () => {
    const leaf = rawLeaf(root, { ext: { [OID.basicConstraints]: null } });
    expectCode(() => verifyX509Svid([leaf], B, NOW), "QHX_SVID_NO_BASIC_CONSTRAINTS");
  });

  it("QHX_SVID_LEAF_IS_CA", () => {
    const leaf = rawLeaf(root, { ext: { [OID.basicConstraints]: basicConstraintsExtension(true) } });
    expectCode(() => verifyX509Svid([leaf], B, NOW), "QHX_SVID_LEAF_IS_CA");
    // a CA certificate presented as the leaf (its trust-domain ID has no path either, so use a raw one)
    const caLike = rawLeaf(root, {
      ext: {
        [OID.basicConstraints]: basicConstraintsExtension(true, 0),
        [OID.keyUsage]: keyUsageExtension(["keyCertSign"]),
      },
    });
    expectCode(() => verifyX509Svid([caLike], B, NOW), "QHX_SVID_LEAF_IS_CA");
  });

  it("QHX_SVID_BAD_KEY_USAGE: missing, no digitalSignature, keyCertSign or cRLSign", () => {
    for (const ku of [
      null,
      keyUsageExtension(["keyEncipherment"]),
      keyUsageExtension(["digitalSignature", "keyCertSign"]),
      keyUsageExtension(["digitalSignature", "cRLSign"]),
    ]) {
      const leaf = rawLeaf(root, { ext: { [OID.keyUsage]: ku } });
      expectCode(() => verifyX509Svid([leaf], B, NOW), "QHX_SVID_BAD_KEY_USAGE");
    }
    // keyAgreement / keyEncipherment beside digitalSignature are allowed (X509-SVID 4.3)
    const ok = rawLeaf(root, {
      ext: { [OID.keyUsage]: keyUsageExtension(["digitalSignature", "keyAgreement"]) },
    });
    expect(verifyX509Svid([ok], B, NOW).spiffeId.toString()).toBe(ID);
  });

  it("QHX_SVID_NO_BUNDLE: only another trust domain's bundle", () => {
    const leaf = mkLeaf(root);
    const other = new Map([
      [
        "other.org",
        { trustDomain: "other.org", x509Authorities: [root.der], jwtAuthorities: [], sequence: 1 },
      ],
    ]);
    expectCode(() => verifyX509Svid([leaf], other, NOW), "QHX_SVID_NO_BUNDLE", /example\.org/);
    expectCode(() => verifyX509Svid([leaf], () => undefined, NOW), "QHX_SVID_NO_BUNDLE");
  });

  it("QHX_SVID_UNKNOWN_CRITICAL_EXT: on the leaf or on an intermediate", () => {
    const leaf = mkLeaf(root, {
      extraExtensions: [{ oid: "1.3.6.1.4.1.99999.1", critical: true, value: Uint8Array.of(5, 0) }],
    });
    expectCode(
      () => verifyX509Svid([leaf], B, NOW),
      "QHX_SVID_UNKNOWN_CRITICAL_EXT",
      /1\.3\.6\.1\.4\.1\.99999\.1/,
    );
    // name constraints are not processed, so a critical one is refused too
    const inter = rawCa(root, {
      add: [{ oid: OID.nameConstraints, critical: true, value: Uint8Array.of(0x30, 0) }],
    });
    expectCode(() => verifyX509Svid([mkLeaf(inter), inter.der], B, NOW), "QHX_SVID_UNKNOWN_CRITICAL_EXT");
  });

  it("QHX_SVID_NOT_CA: intermediate without cA, without keyCertSign, or a non-CA bundle authority", () => {
    const noCa = rawCa(root, { ext: { [OID.basicConstraints]: basicConstraintsExtension(false) } });
    const leaf1 = rawLeaf(noCa);
    expectCode(() => verifyX509Svid([leaf1, noCa.der], B, NOW), "QHX_SVID_NOT_CA", /certificate 1/);
    const noBc = rawCa(root, { ext: { [OID.basicConstraints]: null } });
    expectCode(() => verifyX509Svid([rawLeaf(noBc), noBc.der], B, NOW), "QHX_SVID_NOT_CA");
    const noCertSign = rawCa(root, {}, ["cRLSign", "digitalSignature"]);
    expectCode(
      () => verifyX509Svid([rawLeaf(noCertSign), noCertSign.der], B, NOW),
      "QHX_SVID_NOT_CA",
      /keyCertSign/,
    );
    const noKu = rawCa(root, { ext: { [OID.keyUsage]: null } });
    expectCode(() => verifyX509Svid([rawLeaf(noKu), noKu.der], B, NOW), "QHX_SVID_NOT_CA");
    // the non-CA certificate as the bundle authority
    expectCode(() => verifyX509Svid([leaf1], bundles(noCa), NOW), "QHX_SVID_NOT_CA");
    expectCode(() => verifyX509Svid([leaf1, noCa.der], bundles(noCa), NOW), "QHX_SVID_NOT_CA");
  });

  it("QHX_SVID_TRUST_DOMAIN_MISMATCH: an intermediate's SPIFFE ID in another trust domain", () => {
    const inter = mkInter(root, "ec-p256", { trustDomain: "other.org" });
    expect(inter.c.uriSans).toEqual(["spiffe://other.org"]);
    expectCode(
      () => verifyX509Svid([mkLeaf(inter), inter.der], B, NOW),
      "QHX_SVID_TRUST_DOMAIN_MISMATCH",
      /other\.org/,
    );
  });

  it("QHX_SVID_EXPIRED: the leaf, an intermediate, or the root", () => {
    const leaf = mkLeaf(root, {
      notBefore: new Date(NOW.getTime() - 2 * HOUR),
      notAfter: new Date(NOW.getTime() - HOUR),
    });
    expectCode(() => verifyX509Svid([leaf], B, NOW), "QHX_SVID_EXPIRED", /certificate 0/);
    const inter = mkInter(root, "ed25519", {
      notBefore: new Date(NOW.getTime() - 48 * HOUR),
      notAfter: new Date(NOW.getTime() - 60_000),
    });
    const leaf2 = rawLeaf(inter); // not clamped, valid now
    expect(parseCertificate(leaf2).notAfter.getTime()).toBeGreaterThan(NOW.getTime());
    expectCode(() => verifyX509Svid([leaf2, inter.der], B, NOW), "QHX_SVID_EXPIRED", /certificate 1/);
    const oldRoot = mkRoot("ec-p256", {
      notBefore: new Date(NOW.getTime() - 48 * HOUR),
      notAfter: new Date(NOW.getTime() - 1000),
    });
    expectCode(
      () => verifyX509Svid([rawLeaf(oldRoot)], bundles(oldRoot), NOW),
      "QHX_SVID_EXPIRED",
      /certificate 1/,
    );
  });

  it("QHX_SVID_NOT_YET_VALID", () => {
    const leaf = mkLeaf(root, {
      notBefore: new Date(NOW.getTime() + HOUR),
      notAfter: new Date(NOW.getTime() + 2 * HOUR),
    });
    expectCode(() => verifyX509Svid([leaf], B, NOW), "QHX_SVID_NOT_YET_VALID");
  });

  it("QHX_SVID_ISSUER_MISMATCH: the next certificate is not the issuer", () => {
    const a = mkInter(root, "ec-p256", { subject: { commonName: "A" } });
    const bb = mkInter(root, "ec-p256", { subject: { commonName: "B" } });
    expectCode(() => verifyX509Svid([mkLeaf(a), bb.der], B, NOW), "QHX_SVID_ISSUER_MISMATCH", /"CN=A"/);
  });

  it("QHX_SVID_BAD_SIGNATURE: tampered signature, tampered TBS, wrong algorithm identifiers", () => {
    const leaf = mkLeaf(root);
    expectCode(() => verifyX509Svid([flip(leaf, leaf.length - 1)], B, NOW), "QHX_SVID_BAD_SIGNATURE");
    const serialAt = Buffer.from(leaf).indexOf(Buffer.from(parseCertificate(leaf).serialBytes));
    expect(serialAt).toBeGreaterThan(0);
    expectCode(() => verifyX509Svid([flip(leaf, serialAt + 15)], B, NOW), "QHX_SVID_BAD_SIGNATURE");
    // through an intermediate, with ML-DSA
    const pq = mkInter(root, "ml-dsa-65");
    const pqLeaf = mkLeaf(pq);
    expect(verifyX509Svid([pqLeaf, pq.der], B, NOW).path).toHaveLength(3);
    expectCode(
      () => verifyX509Svid([flip(pqLeaf, pqLeaf.length - 100), pq.der], B, NOW),
      "QHX_SVID_BAD_SIGNATURE",
    );
    expectCode(
      () => verifyX509Svid([pqLeaf, flip(pq.der, pq.der.length - 1)], B, NOW),
      "QHX_SVID_BAD_SIGNATURE",
    );
    // signatureAlgorithm not the issuer key's type; and differing from the TBS copy
    const wrongAlg = rawLeaf(root, { signatureOid: SIG_OID.ed25519 });
    expectCode(() => verifyX509Svid([wrongAlg], B, NOW), "QHX_SVID_BAD_SIGNATURE", /does not match/);
    const differing = rawLeaf(root, { tbsSignatureOid: SIG_OID["ec-p384"] });
    expectCode(() => verifyX509Svid([differing], B, NOW), "QHX_SVID_BAD_SIGNATURE", /differs/);
  });

  it("QHX_SVID_UNTRUSTED: a different root, even with the same name", () => {
    const leaf = mkLeaf(root);
    expectCode(() => verifyX509Svid([leaf], bundles(mkRoot()), NOW), "QHX_SVID_UNTRUSTED");
    const subject = { commonName: "Same Name" };
    const r1 = mkRoot("ec-p256", { subject });
    const r2 = mkRoot("ec-p256", { subject });
    expectCode(() => verifyX509Svid([mkLeaf(r1)], bundles(r2), NOW), "QHX_SVID_UNTRUSTED");
    // the presented self-signed root is not in the bundle
    expectCode(() => verifyX509Svid([mkLeaf(r1), r1.der], bundles(r2), NOW), "QHX_SVID_UNTRUSTED");
    const empty = new Map([[TD, { trustDomain: TD, x509Authorities: [], jwtAuthorities: [], sequence: 1 }]]);
    expectCode(() => verifyX509Svid([leaf], empty, NOW), "QHX_SVID_UNTRUSTED");
  });

  it("QHX_SVID_PATH_LEN: an intermediate's, or the root's, pathLenConstraint exceeded", () => {
    const strictRoot = mkRoot("ec-p256", { pathLen: 0 });
    const inter = mkInter(strictRoot);
    expect(verifyX509Svid([mkLeaf(strictRoot)], bundles(strictRoot), NOW).path).toHaveLength(2);
    expectCode(
      () => verifyX509Svid([mkLeaf(inter), inter.der], bundles(strictRoot), NOW),
      "QHX_SVID_PATH_LEN",
      /certificate 2/,
    );
    const i1 = mkInter(root, "ec-p256", { pathLen: 0 });
    const i2 = mkInter(i1);
    expect(verifyX509Svid([mkLeaf(i1), i1.der], B, NOW).path).toHaveLength(3);
    expectCode(
      () => verifyX509Svid([mkLeaf(i2), i2.der, i1.der], B, NOW),
      "QHX_SVID_PATH_LEN",
      /certificate 2/,
    );
  });

  it("covers every error code", () => {
    expect([...tested].sort()).toEqual([...SVID_ERROR_CODES].sort());
  });
});
