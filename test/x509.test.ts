import crypto, { type KeyObject, X509Certificate } from "node:crypto";
import { ml_dsa44, ml_dsa65, ml_dsa87 } from "@noble/post-quantum/ml-dsa.js";
import { AsnConvert } from "@peculiar/asn1-schema";
import { describe, expect, it } from "vitest";
import { generateKeyPair, type KeyAlg, type KeyPair, SIG_OID, spki } from "../host/core/alg.ts";
import {
  _svidTbsBothWays,
  bytesEqual,
  certToPem,
  chainToPem,
  encodeName,
  encodeSpki,
  issueCaCertificate,
  issueCertificateRaw,
  issueX509Svid,
  normalizeSerial,
  OID,
  type ParsedCertificate,
  parseCertificate,
  parsePemChain,
  randomSerial,
  readTlv,
  x509Time,
} from "../host/core/x509.ts";

const TD = "example.org";
const ALGS = ["ec-p256", "ed25519", "ml-dsa-44", "ml-dsa-65", "ml-dsa-87"] as const;
const HOUR = 3_600_000;
const NOW = Date.now();
const NB = new Date(NOW - HOUR);
const CA_NA = new Date(NOW + 30 * 24 * HOUR);

const keys = new Map<string, KeyPair>();
function kp(alg: KeyAlg, tag = ""): KeyPair {
  const k = `${alg}/${tag}`;
  let v = keys.get(k);
  if (!v) {
    v = generateKeyPair(alg);
    keys.set(k, v);
  }
  return v;
}

function root(alg: KeyAlg, extra: Partial<Parameters<typeof issueCaCertificate>[0]> = {}) {
  const k = kp(alg, "root");
  const der = issueCaCertificate({
    publicKey: k.publicKey,
    signer: { privateKey: k.privateKey },
    trustDomain: TD,
    notBefore: NB,
    notAfter: CA_NA,
    ...extra,
  });
  return { der, key: k.privateKey, pub: k.publicKey };
}

const b = (u: Uint8Array) => Buffer.from(u);
const sha1 = (u: Uint8Array) => crypto.createHash("sha1").update(u).digest();

/** The raw public key: the BIT STRING contents at the end of the SPKI. */
function rawPublicKey(spkiDer: Uint8Array): Uint8Array {
  const outer = readTlv(spkiDer, 0);
  const algId = readTlv(spkiDer, outer.start);
  const bits = readTlv(spkiDer, algId.end);
  return spkiDer.subarray(bits.start + 1, bits.end);
}

const NOBLE = { "ml-dsa-44": ml_dsa44, "ml-dsa-65": ml_dsa65, "ml-dsa-87": ml_dsa87 } as const;
const RAW_LEN = { "ml-dsa-44": 1312, "ml-dsa-65": 1952, "ml-dsa-87": 2592 } as const;

function extSummary(c: ParsedCertificate): string[] {
  return c.extensions.map((e) => `${e.oid}${e.critical ? "!" : ""}`).sort();
}

function checkSignature(cert: ParsedCertificate, issuerAlg: KeyAlg, issuerPub: KeyObject) {
  expect(cert.signatureAlgorithm).toBe(SIG_OID[issuerAlg]);
  expect(cert.tbsSignatureAlgorithm).toBe(SIG_OID[issuerAlg]);
  expect(cert.signatureAlgorithmHasParams).toBe(false);
  // parameters ABSENT: the AlgorithmIdentifier is SEQUENCE { OID } and nothing else
  const alg = cert.signatureAlgorithmDer;
  const oid = readTlv(alg, readTlv(alg, 0).start);
  expect(oid.end).toBe(alg.length);
  expect(cert.x509.verify(issuerPub)).toBe(true);
  if (issuerAlg.startsWith("ml-dsa")) {
    const a = issuerAlg as keyof typeof NOBLE;
    const issuerSpki = spki(issuerPub);
    const raw = issuerSpki.subarray(issuerSpki.length - RAW_LEN[a]);
    expect(b(raw)).toEqual(b(rawPublicKey(issuerSpki)));
    expect(NOBLE[a].verify(cert.signature, cert.tbs, raw)).toBe(true);
    const tampered = new Uint8Array(cert.tbs);
    tampered[10]! ^= 1;
    expect(NOBLE[a].verify(cert.signature, tampered, raw)).toBe(false);
  }
}

describe("CA certificates", () => {
  for (const alg of ALGS) {
    it(`self-signed ${alg} root has the SPIFFE signing-certificate profile`, () => {
      const r = root(alg, { pathLen: 1 });
      const c = parseCertificate(r.der);
      expect(c.version).toBe(3);
      expect(extSummary(c)).toEqual(
        [
          `${OID.basicConstraints}!`,
          `${OID.keyUsage}!`,
          OID.subjectKeyIdentifier,
          OID.authorityKeyIdentifier,
          OID.subjectAltName,
        ].sort(),
      );
      expect(c.basicConstraints).toEqual({ cA: true, pathLen: 1 });
      expect([...c.keyUsage!].sort()).toEqual(["cRLSign", "digitalSignature", "keyCertSign"]);
      expect(c.uriSans).toEqual([`spiffe://${TD}`]);
      expect(c.dnsSans).toEqual([]);
      expect(b(c.subject)).toEqual(b(c.issuer));
      expect(c.selfIssued).toBe(true);
      expect(c.subjectString).toBe(`O=QHx, CN=${TD}, serialNumber=${c.serial}`);
      expect(b(c.subjectKeyId!)).toEqual(sha1(rawPublicKey(c.spki)));
      expect(b(c.authorityKeyId!)).toEqual(b(c.subjectKeyId!));
      expect(c.keyAlg).toBe(alg);
      expect(b(c.spki)).toEqual(spki(r.pub));
      expect(c.notBefore.getTime()).toBe(Math.floor(NB.getTime() / 1000) * 1000);
      expect(c.notAfter.getTime()).toBe(Math.floor(CA_NA.getTime() / 1000) * 1000);
      // node / OpenSSL 3.5 agree
      expect(c.x509.ca).toBe(true);
      expect(c.x509.subjectAltName).toBe(`URI:spiffe://${TD}`);
      expect(c.x509.checkIssued(c.x509)).toBe(true);
      expect(c.x509.serialNumber.toLowerCase().replace(/^0+/, "")).toBe(c.serial.replace(/^0+/, ""));
      checkSignature(c, alg, r.pub);
    });
  }

  it("an intermediate takes the signer's subject DN verbatim and its SKI as AKI", () => {
    const up = root("ml-dsa-65", {
      subject: { commonName: "Corp Root", organization: "Corp", country: "DE" },
    });
    const k = kp("ec-p256", "inter");
    const der = issueCaCertificate({
      publicKey: k.publicKey,
      signer: { privateKey: up.key, certDer: up.der },
      trustDomain: TD,
      subject: { commonName: "QHx intermediate" },
      notBefore: NB,
      notAfter: CA_NA,
      pathLen: 0,
    });
    const c = parseCertificate(der);
    const upc = parseCertificate(up.der);
    expect(upc.subjectString).toBe("C=DE, O=Corp, CN=Corp Root");
    expect(b(c.issuer)).toEqual(b(upc.subject));
    expect(c.issuerString).toBe("C=DE, O=Corp, CN=Corp Root");
    expect(c.subjectString).toBe("CN=QHx intermediate");
    expect(b(c.authorityKeyId!)).toEqual(b(upc.subjectKeyId!));
    expect(c.basicConstraints).toEqual({ cA: true, pathLen: 0 });
    expect(c.selfIssued).toBe(false);
    expect(c.x509.checkIssued(upc.x509)).toBe(true);
    checkSignature(c, "ml-dsa-65", up.pub);
  });

  it("rejects a signer key that does not match", () => {
    const a = kp("ec-p256", "a");
    const other = kp("ec-p256", "b");
    expect(() =>
      issueCaCertificate({
        publicKey: a.publicKey,
        signer: { privateKey: other.privateKey },
        trustDomain: TD,
        notBefore: NB,
        notAfter: CA_NA,
      }),
    ).toThrow(expect.objectContaining({ code: "QHX_X509_KEY_MISMATCH" }));
    const r = root("ec-p256");
    expect(() =>
      issueCaCertificate({
        publicKey: a.publicKey,
        signer: { privateKey: other.privateKey, certDer: r.der },
        trustDomain: TD,
        notBefore: NB,
        notAfter: CA_NA,
      }),
    ).toThrow(expect.objectContaining({ code: "QHX_X509_KEY_MISMATCH" }));
    expect(() =>
      issueCaCertificate({
        publicKey: a.publicKey,
        signer: { privateKey: a.privateKey },
        trustDomain: "Bad_Domain!",
        notBefore: NB,
        notAfter: CA_NA,
      }),
    ).toThrow();
  });
});

describe("X509-SVIDs for every CA × leaf algorithm", () => {
  for (const caAlg of ALGS) {
    for (const leafAlg of ALGS) {
      it(`${caAlg} CA → ${leafAlg} leaf`, () => {
        const r = root(caAlg);
        const ca = parseCertificate(r.der);
        const leafKey = kp(leafAlg, "leaf");
        const der = issueX509Svid({
          spiffeId: `spiffe://${TD}/ns/prod/sa/web`,
          publicKey: leafKey.publicKey,
          issuerCertDer: r.der,
          issuerKey: r.key,
          notBefore: NB,
          notAfter: new Date(NOW + HOUR),
          dnsNames: ["web.example.org", "web"],
        });
        const c = parseCertificate(der);
        expect(c.version).toBe(3);
        expect(extSummary(c)).toEqual(
          [
            `${OID.basicConstraints}!`,
            `${OID.keyUsage}!`,
            OID.extKeyUsage,
            OID.subjectKeyIdentifier,
            OID.authorityKeyIdentifier,
            `${OID.subjectAltName}!`,
          ].sort(),
        );
        expect(c.basicConstraints).toEqual({ cA: false, pathLen: undefined });
        expect([...c.keyUsage!]).toEqual(["digitalSignature"]);
        expect(c.extKeyUsage).toEqual([OID.serverAuth, OID.clientAuth]);
        expect(c.uriSans).toEqual([`spiffe://${TD}/ns/prod/sa/web`]);
        expect(c.dnsSans).toEqual(["web.example.org", "web"]);
        expect(b(c.subject)).toEqual(Buffer.from([0x30, 0x00]));
        expect(b(c.issuer)).toEqual(b(ca.subject));
        expect(b(c.subjectKeyId!)).toEqual(sha1(rawPublicKey(c.spki)));
        expect(b(c.authorityKeyId!)).toEqual(b(ca.subjectKeyId!));
        expect(c.keyAlg).toBe(leafAlg);
        expect(b(c.spki)).toEqual(spki(leafKey.publicKey));
        expect(b(c.tbs)).toEqual(
          b(der.subarray(readTlv(der, 0).start, readTlv(der, readTlv(der, 0).start).end)),
        );
        // node / OpenSSL 3.5
        expect(c.x509.ca).toBe(false);
        expect(c.x509.subjectAltName).toBe(`URI:spiffe://${TD}/ns/prod/sa/web, DNS:web.example.org, DNS:web`);
        expect(c.x509.keyUsage).toEqual([OID.serverAuth, OID.clientAuth]);
        expect(c.x509.checkIssued(ca.x509)).toBe(true);
        expect(c.x509.verify(kp(leafAlg, "unrelated").publicKey)).toBe(false);
        checkSignature(c, caAlg, r.pub);
      });
    }
  }
});

describe("X509-SVID details", () => {
  it("the template fast path is byte-identical to a full asn1-x509 build", () => {
    for (const caAlg of ALGS) {
      const r = root(caAlg);
      for (const leafAlg of [...ALGS, "ec-p384"] as const) {
        for (const variant of [
          {},
          { dnsNames: ["a.example", "b.example"] },
          { subject: { organization: "Acme", commonName: "web" } },
          { notAfter: new Date(Date.UTC(2051, 0, 1)) },
        ]) {
          const opts = {
            spiffeId: `spiffe://${TD}/w/${leafAlg}`,
            publicKey: kp(leafAlg, "leaf").publicKey,
            issuerCertDer: r.der,
            issuerKey: r.key,
            notBefore: NB,
            notAfter: new Date(NOW + HOUR),
            serial: randomSerial(),
            ...variant,
          };
          const { template, typed } = _svidTbsBothWays(opts);
          expect(template).toBeDefined();
          expect(b(template!)).toEqual(b(typed));
          // and issueX509Svid itself emits that TBS
          const der = issueX509Svid(opts);
          expect(b(parseCertificate(der).tbs)).toEqual(b(typed));
        }
      }
    }
  });

  it("encodes every supported SubjectPublicKeyInfo exactly as OpenSSL does", () => {
    for (const alg of [...ALGS, "ec-p384", "rsa-2048"] as const) {
      const k = kp(alg, "spki");
      expect(b(encodeSpki(k.publicKey))).toEqual(spki(k.publicKey));
      expect(b(encodeSpki(k.privateKey))).toEqual(spki(k.publicKey));
    }
  });

  it("gives RSA leaves keyEncipherment, and a non-critical SAN when a subject is set", () => {
    const r = root("ec-p256");
    const der = issueX509Svid({
      spiffeId: `spiffe://${TD}/legacy`,
      publicKey: kp("rsa-2048").publicKey,
      issuerCertDer: r.der,
      issuerKey: r.key,
      notBefore: NB,
      notAfter: new Date(NOW + HOUR),
      subject: { country: "US", organization: "SPIRE-compatible", commonName: "legacy" },
    });
    const c = parseCertificate(der);
    expect([...c.keyUsage!].sort()).toEqual(["digitalSignature", "keyEncipherment"]);
    expect(c.subjectString).toBe("C=US, O=SPIRE-compatible, CN=legacy");
    expect(c.extension(OID.subjectAltName)?.critical).toBe(false);
    expect(c.x509.subject).toContain("CN=legacy");
    expect(c.x509.verify(r.pub)).toBe(true);
  });

  it("writes extra extensions with their critical flag and refuses duplicates of built-in ones", () => {
    const r = root("ed25519");
    const base = {
      spiffeId: `spiffe://${TD}/x`,
      publicKey: kp("ec-p256").publicKey,
      issuerCertDer: r.der,
      issuerKey: r.key,
      notBefore: NB,
      notAfter: new Date(NOW + HOUR),
    };
    const der = issueX509Svid({
      ...base,
      extraExtensions: [
        { oid: "1.3.6.1.4.1.57264.1.1", critical: false, value: Uint8Array.of(0x05, 0x00) },
        { oid: "1.3.6.1.4.1.57264.1.2", critical: true, value: Uint8Array.of(0x0c, 0x01, 0x41) },
      ],
    });
    const c = parseCertificate(der);
    expect(c.extension("1.3.6.1.4.1.57264.1.1")).toEqual({
      oid: "1.3.6.1.4.1.57264.1.1",
      critical: false,
      value: Uint8Array.of(0x05, 0x00),
    });
    expect(c.extension("1.3.6.1.4.1.57264.1.2")?.critical).toBe(true);
    expect(c.x509.verify(r.pub)).toBe(true);
    expect(() =>
      issueX509Svid({
        ...base,
        extraExtensions: [{ oid: OID.keyUsage, critical: true, value: Uint8Array.of(5, 0) }],
      }),
    ).toThrow(/duplicate extension/);
  });

  it("refuses SPIFFE IDs without a path, non-CA issuers and mismatched issuer keys", () => {
    const r = root("ec-p256");
    const base = {
      spiffeId: `spiffe://${TD}/x`,
      publicKey: kp("ec-p256").publicKey,
      issuerCertDer: r.der,
      issuerKey: r.key,
      notBefore: NB,
      notAfter: new Date(NOW + HOUR),
    };
    expect(() => issueX509Svid({ ...base, spiffeId: `spiffe://${TD}` })).toThrow(
      expect.objectContaining({ code: "QHX_X509_BAD_SPIFFE_ID" }),
    );
    expect(() => issueX509Svid({ ...base, spiffeId: "spiffe://example.org/a/../b" })).toThrow(
      expect.objectContaining({ code: "SPIFFE_ID_DOT_SEGMENT" }),
    );
    expect(() => issueX509Svid({ ...base, issuerKey: kp("ec-p256", "x").privateKey })).toThrow(
      expect.objectContaining({ code: "QHX_X509_KEY_MISMATCH" }),
    );
    const leafKey = kp("ec-p256", "leafissuer");
    const leaf = issueX509Svid({ ...base, publicKey: leafKey.publicKey });
    expect(() => issueX509Svid({ ...base, issuerCertDer: leaf, issuerKey: leafKey.privateKey })).toThrow(
      expect.objectContaining({ code: "QHX_X509_ISSUER_NOT_CA" }),
    );
    expect(() => issueX509Svid({ ...base, dnsNames: ["bad name"] })).toThrow(/invalid DNS name/);
  });

  it("issues unique, positive 16-octet serials", () => {
    const r = root("ec-p256");
    const leafKey = kp("ec-p256").publicKey;
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const c = parseCertificate(
        issueX509Svid({
          spiffeId: `spiffe://${TD}/s`,
          publicKey: leafKey,
          issuerCertDer: r.der,
          issuerKey: r.key,
          notBefore: NB,
          notAfter: new Date(NOW + HOUR),
        }),
      );
      expect(c.serialBytes.length).toBe(16);
      expect(c.serialBytes[0]).toBeGreaterThan(0);
      expect(c.serialBytes[0]).toBeLessThan(0x80);
      seen.add(c.serial);
    }
    expect(seen.size).toBe(2000);
    for (let i = 0; i < 50_000; i++) {
      const s = randomSerial();
      if (s.length !== 16 || s[0] === 0 || s[0]! >= 0x80)
        throw new Error(`bad serial ${b(s).toString("hex")}`);
    }
  });

  it("normalizes caller-supplied serials to minimal positive INTEGERs", () => {
    expect(b(normalizeSerial(Uint8Array.of(0, 0, 5)))).toEqual(Buffer.from([5]));
    expect(b(normalizeSerial(Uint8Array.of(0x80, 1)))).toEqual(Buffer.from([0, 0x80, 1]));
    expect(() => normalizeSerial(Uint8Array.of(0, 0))).toThrow(
      expect.objectContaining({ code: "QHX_X509_BAD_SERIAL" }),
    );
    expect(() => normalizeSerial(new Uint8Array(21).fill(1))).toThrow(/20 octets/);
    const r = root("ec-p256");
    const c = parseCertificate(
      issueX509Svid({
        spiffeId: `spiffe://${TD}/s`,
        publicKey: kp("ec-p256").publicKey,
        issuerCertDer: r.der,
        issuerKey: r.key,
        notBefore: NB,
        notAfter: new Date(NOW + HOUR),
        serial: Uint8Array.of(0xff, 0xee),
      }),
    );
    expect(c.serial).toBe("ffee");
    expect(b(c.serialBytes)).toEqual(Buffer.from([0, 0xff, 0xee]));
  });

  it("clamps notAfter to the issuer's notAfter and truncates to whole seconds", () => {
    const k = kp("ec-p256", "short");
    const caEnd = new Date(NOW + 2 * HOUR + 123);
    const der = issueCaCertificate({
      publicKey: k.publicKey,
      signer: { privateKey: k.privateKey },
      trustDomain: TD,
      notBefore: NB,
      notAfter: caEnd,
    });
    const ca = parseCertificate(der);
    expect(ca.notAfter.getTime()).toBe(Math.floor(caEnd.getTime() / 1000) * 1000);
    const base = {
      spiffeId: `spiffe://${TD}/c`,
      publicKey: kp("ed25519").publicKey,
      issuerCertDer: der,
      issuerKey: k.privateKey,
      notBefore: new Date(NOW + 999),
    };
    const long = parseCertificate(issueX509Svid({ ...base, notAfter: new Date(NOW + 48 * HOUR) }));
    expect(long.notAfter.getTime()).toBe(ca.notAfter.getTime());
    expect(long.notBefore.getTime()).toBe(Math.floor((NOW + 999) / 1000) * 1000);
    const short = parseCertificate(issueX509Svid({ ...base, notAfter: new Date(NOW + HOUR + 500) }));
    expect(short.notAfter.getTime()).toBe(Math.floor((NOW + HOUR + 500) / 1000) * 1000);
    expect(() =>
      issueX509Svid({ ...base, notBefore: new Date(NOW + 3 * HOUR), notAfter: new Date(NOW + 4 * HOUR) }),
    ).toThrow(expect.objectContaining({ code: "QHX_X509_INVALID_VALIDITY" }));
    expect(() =>
      issueCaCertificate({
        publicKey: k.publicKey,
        signer: { privateKey: k.privateKey },
        trustDomain: TD,
        notBefore: NB,
        notAfter: NB,
      }),
    ).toThrow(expect.objectContaining({ code: "QHX_X509_INVALID_VALIDITY" }));
  });

  it("uses UTCTime through 2049 and GeneralizedTime from 2050 (and before 1950)", () => {
    const tag = (d: Date) => new Uint8Array(AsnConvert.serialize(x509Time(d)))[0];
    expect(tag(new Date("2049-12-31T23:59:59Z"))).toBe(0x17);
    expect(tag(new Date("2050-01-01T00:00:00Z"))).toBe(0x18);
    expect(tag(new Date("1950-01-01T00:00:00Z"))).toBe(0x17);
    expect(tag(new Date("1949-12-31T23:59:59Z"))).toBe(0x18);

    const k = kp("ec-p256", "2050");
    const caDer = issueCaCertificate({
      publicKey: k.publicKey,
      signer: { privateKey: k.privateKey },
      trustDomain: TD,
      notBefore: new Date("2049-12-31T23:59:59.500Z"),
      notAfter: new Date("2070-06-01T00:00:00Z"),
    });
    const tbs = b(parseCertificate(caDer).tbs);
    expect(tbs.includes(Buffer.concat([Buffer.from([0x17, 13]), Buffer.from("491231235959Z")]))).toBe(true);
    expect(tbs.includes(Buffer.concat([Buffer.from([0x18, 15]), Buffer.from("20700601000000Z")]))).toBe(true);
    const ca = parseCertificate(caDer);
    expect(ca.notBefore.toISOString()).toBe("2049-12-31T23:59:59.000Z");
    expect(ca.notAfter.toISOString()).toBe("2070-06-01T00:00:00.000Z");
    expect(new Date(ca.x509.validTo).toISOString()).toBe("2070-06-01T00:00:00.000Z");

    const leaf = parseCertificate(
      issueX509Svid({
        spiffeId: `spiffe://${TD}/future`,
        publicKey: kp("ec-p256").publicKey,
        issuerCertDer: caDer,
        issuerKey: k.privateKey,
        notBefore: new Date("2050-01-01T00:00:00Z"),
        notAfter: new Date("2080-01-01T00:00:00Z"),
      }),
    );
    expect(leaf.notBefore.toISOString()).toBe("2050-01-01T00:00:00.000Z");
    expect(leaf.notAfter.toISOString()).toBe("2070-06-01T00:00:00.000Z"); // clamped
    expect(b(leaf.tbs).includes(Buffer.from("20500101000000Z"))).toBe(true);
    expect(leaf.x509.verify(k.publicKey)).toBe(true);
    for (const [nb, na] of [
      ["2049-06-01T00:00:00Z", "2052-01-01T00:00:00Z"],
      ["2051-06-01T00:00:00Z", "2052-01-01T00:00:00Z"],
    ] as const) {
      const { template, typed } = _svidTbsBothWays({
        spiffeId: `spiffe://${TD}/future`,
        publicKey: kp("ml-dsa-44").publicKey,
        issuerCertDer: caDer,
        issuerKey: k.privateKey,
        notBefore: new Date(nb),
        notAfter: new Date(na),
        serial: randomSerial(),
      });
      expect(b(template!)).toEqual(b(typed));
    }
  });
});

describe("parsing and PEM", () => {
  it("round-trips chains through PEM", () => {
    const r = root("ec-p256");
    const leaf = issueX509Svid({
      spiffeId: `spiffe://${TD}/p`,
      publicKey: kp("ed25519").publicKey,
      issuerCertDer: r.der,
      issuerKey: r.key,
      notBefore: NB,
      notAfter: new Date(NOW + HOUR),
    });
    const pem = chainToPem([leaf, r.der]);
    expect(pem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(parsePemChain(pem).map(b)).toEqual([b(leaf), b(r.der)]);
    expect(parsePemChain(certToPem(leaf)).map(b)).toEqual([b(leaf)]);
    expect(new X509Certificate(certToPem(leaf)).subjectAltName).toBe(`URI:spiffe://${TD}/p`);
  });

  it("rejects garbage, truncation, trailing bytes and duplicate extensions as QHX_X509_MALFORMED", () => {
    const r = root("ec-p256");
    const malformed = expect.objectContaining({ code: "QHX_X509_MALFORMED" });
    expect(() => parseCertificate(crypto.randomBytes(300))).toThrow(malformed);
    expect(() => parseCertificate(r.der.subarray(0, r.der.length - 1))).toThrow(malformed);
    expect(() => parseCertificate(Buffer.concat([r.der, Buffer.from([0])]))).toThrow(malformed);
    expect(() => parseCertificate(new Uint8Array(0))).toThrow(malformed);
    const c = parseCertificate(r.der);
    const ext = { oid: "1.2.3.4", critical: false, value: Uint8Array.of(5, 0) };
    const dup = issueCertificateRaw({
      serial: randomSerial(),
      issuer: c.subject,
      subject: encodeName({ commonName: "dup" }),
      notBefore: NB,
      notAfter: CA_NA,
      publicKey: kp("ec-p256").publicKey,
      extensions: [ext, ext],
      signingKey: r.key,
    });
    expect(() => parseCertificate(dup)).toThrow(/duplicate extension/);
  });

  it("reads the issuer/subject DN bytes verbatim and exposes all extensions", () => {
    const r = root("ed25519", { subject: { commonName: "Root", organization: "Org" } });
    const c = parseCertificate(r.der);
    expect(b(c.subject)).toEqual(b(encodeName({ commonName: "Root", organization: "Org" })));
    expect(c.extensions).toHaveLength(5);
    for (const e of c.extensions) expect(e.value).toBeInstanceOf(Uint8Array);
    expect(bytesEqual(c.subject, c.issuer)).toBe(true);
  });
});
