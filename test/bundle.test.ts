import { execFileSync } from "node:child_process";
import crypto, { type KeyObject, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  BasicConstraints,
  Certificate,
  Extension,
  Extensions,
  id_ce_basicConstraints,
  Name,
  RelativeDistinguishedName,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
} from "@peculiar/asn1-x509";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  generateKeyPair,
  type KeyAlg,
  type KeyPair,
  keyAlgOf,
  SIG_OID,
  signData,
  spki,
} from "../host/core/alg.ts";
import {
  BUNDLE_ERROR_CODES,
  BundleError,
  bundleJwk,
  bundleToPem,
  bundleToSpiffeJson,
  mergeBundles,
  parsePemBundle,
  parseSpiffeBundle,
  sameBundleContent,
} from "../host/core/bundle.ts";
import type { TrustBundle } from "../host/core/bundle-types.ts";
import { mintJwtSvid, validateJwtSvid } from "../host/core/jwtsvid.ts";
import { toPem } from "../host/core/pem.ts";
import { issueCaCertificate } from "../host/core/x509.ts";

const TD = "example.org";

interface Ca {
  der: Uint8Array;
  publicKey: KeyObject;
}

let tmp: string;

/** A self-signed CA certificate from the system openssl (3.0: fine for EC and Ed25519). */
function opensslCa(newkey: string[], name: string): Ca {
  const keyOut = join(tmp, `${name}.key`);
  const certOut = join(tmp, `${name}.der`);
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      ...newkey,
      "-nodes",
      "-keyout",
      keyOut,
      "-out",
      certOut,
      "-outform",
      "DER",
      "-days",
      "30",
      "-subj",
      `/O=${TD}/CN=${name}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-addext",
      `subjectAltName=URI:spiffe://${TD}`,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const der = new Uint8Array(readFileSync(certOut));
  return { der, publicKey: new X509Certificate(der).publicKey };
}

/**
 * A self-signed CA certificate built in-process (asn1-x509 + the project's signData), for the key types the
 * system openssl 3.0 cannot make (ML-DSA); node:crypto (OpenSSL 3.5) then parses and verifies it.
 */
function builtCa(alg: KeyAlg, cn: string): Ca & KeyPair {
  const kp = generateKeyPair(alg);
  const name = new Name([
    new RelativeDistinguishedName([
      new AttributeTypeAndValue({ type: "2.5.4.10", value: new AttributeValue({ utf8String: TD }) }),
    ]),
    new RelativeDistinguishedName([
      new AttributeTypeAndValue({ type: "2.5.4.3", value: new AttributeValue({ utf8String: cn }) }),
    ]),
  ]);
  const sigAlg = new AlgorithmIdentifier({ algorithm: SIG_OID[keyAlgOf(kp.privateKey)] });
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: new Uint8Array(crypto.randomBytes(8)).buffer,
    signature: sigAlg,
    issuer: name,
    subject: name,
    validity: new Validity({ notBefore: new Date("2026-01-01"), notAfter: new Date("2036-01-01") }),
    subjectPublicKeyInfo: AsnConvert.parse(spki(kp.publicKey), SubjectPublicKeyInfo),
    extensions: new Extensions([
      new Extension({
        extnID: id_ce_basicConstraints,
        critical: true,
        extnValue: new OctetString(AsnConvert.serialize(new BasicConstraints({ cA: true }))),
      }),
    ]),
  });
  const sig = signData(kp.privateKey, new Uint8Array(AsnConvert.serialize(tbs)));
  const cert = new Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: sigAlg,
    signatureValue: new Uint8Array(sig).buffer,
  });
  return { der: new Uint8Array(AsnConvert.serialize(cert)), ...kp };
}

let p256Ca: Ca;
let ed25519Ca: Ca;
let mldsa65Ca: Ca & KeyPair;
let p384Ca: Ca & KeyPair;
let es256: KeyPair;
let mldsa65Jwt: KeyPair;
let mldsa44Jwt: KeyPair;
let rsaJwt: KeyPair;
let mixed: TrustBundle;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), "qhx-bundle-test-"));
  p256Ca = opensslCa(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "p256");
  ed25519Ca = opensslCa(["-newkey", "ed25519"], "ed25519");
  mldsa65Ca = builtCa("ml-dsa-65", "mldsa65");
  p384Ca = builtCa("ec-p384", "p384");
  es256 = generateKeyPair("ec-p256");
  mldsa65Jwt = generateKeyPair("ml-dsa-65");
  mldsa44Jwt = generateKeyPair("ml-dsa-44");
  rsaJwt = generateKeyPair("rsa-2048");
  mixed = {
    trustDomain: TD,
    x509Authorities: [p256Ca.der, mldsa65Ca.der, ed25519Ca.der, p384Ca.der],
    jwtAuthorities: [
      { kid: "es256-1", publicKey: es256.publicKey },
      { kid: "mldsa65-1", publicKey: mldsa65Jwt.publicKey },
      { kid: "mldsa44-1", publicKey: mldsa44Jwt.privateKey }, // a private key: only its public half is published
      { kid: "rsa-1", publicKey: rsaJwt.publicKey },
    ],
    sequence: 7,
    refreshHint: 300,
  };
});

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

type Jwk = Record<string, unknown>;
const doc = (keys: unknown[], extra: Record<string, unknown> = {}) =>
  JSON.stringify({ keys, spiffe_sequence: 1, ...extra });
const b64 = (der: Uint8Array) => Buffer.from(der).toString("base64");
const x509Key = (ca: Ca, over: Jwk = {}): Jwk => ({
  use: "x509-svid",
  ...bundleJwk(ca.publicKey),
  x5c: [b64(ca.der)],
  ...over,
});
const jwtKey = (kid: string | undefined, key: KeyObject, over: Jwk = {}): Jwk => ({
  use: "jwt-svid",
  ...(kid === undefined ? {} : { kid }),
  ...bundleJwk(key),
  ...over,
});

function expectBundleError(fn: () => unknown, code: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, `expected BundleError ${code}`).toBeInstanceOf(BundleError);
  expect((err as BundleError).code).toBe(code);
}

describe("test certificates", () => {
  it("are CA certificates node:crypto can parse and verify, including ML-DSA-65", () => {
    for (const [ca, type] of [
      [p256Ca, "ec"],
      [ed25519Ca, "ed25519"],
      [mldsa65Ca, "ml-dsa-65"],
      [p384Ca, "ec"],
    ] as const) {
      const x = new X509Certificate(ca.der);
      expect(x.ca).toBe(true);
      expect(x.publicKey.asymmetricKeyType).toBe(type);
      expect(x.verify(x.publicKey)).toBe(true);
    }
  });
});

describe("bundleToSpiffeJson / parseSpiffeBundle", () => {
  it("serializes per the spec: x509-svid with one standard-base64 x5c and no kid, jwt-svid with kid", () => {
    const json = JSON.parse(bundleToSpiffeJson(mixed));
    expect(json.spiffe_sequence).toBe(7);
    expect(json.spiffe_refresh_hint).toBe(300);
    expect(json.keys).toHaveLength(8);
    const x509 = json.keys.filter((k: Jwk) => k.use === "x509-svid");
    const jwt = json.keys.filter((k: Jwk) => k.use === "jwt-svid");
    expect(x509).toHaveLength(4);
    expect(jwt).toHaveLength(4);
    x509.forEach((k: Jwk, i: number) => {
      expect(k).not.toHaveProperty("kid");
      expect(k.x5c).toEqual([b64(mixed.x509Authorities[i]!)]);
      expect(k.x5c as string[]).toHaveLength(1);
      expect((k.x5c as string[])[0]).toMatch(/^[A-Za-z0-9+/]+={0,2}$/);
      const { use: _u, x5c: _x, ...jwk } = k;
      expect(jwk).toEqual(new X509Certificate(mixed.x509Authorities[i]!).publicKey.export({ format: "jwk" }));
    });
    expect(x509.map((k: Jwk) => k.kty)).toEqual(["EC", "AKP", "OKP", "EC"]);
    expect(x509[1].alg).toBe("ML-DSA-65");
    expect(x509[1]).toHaveProperty("pub");
    expect(jwt.map((k: Jwk) => k.kid)).toEqual(["es256-1", "mldsa65-1", "mldsa44-1", "rsa-1"]);
    expect(jwt.map((k: Jwk) => k.kty)).toEqual(["EC", "AKP", "AKP", "RSA"]);
    for (const k of jwt) {
      expect(k).not.toHaveProperty("x5c");
      for (const priv of ["d", "priv", "p", "q"]) expect(k).not.toHaveProperty(priv);
    }
  });

  it("round-trips a mixed-algorithm bundle exactly", () => {
    const text = bundleToSpiffeJson(mixed);
    const back = parseSpiffeBundle(text, TD);
    expect(back.trustDomain).toBe(TD);
    expect(back.sequence).toBe(7);
    expect(back.refreshHint).toBe(300);
    expect(back.x509Authorities.map(b64)).toEqual(mixed.x509Authorities.map(b64));
    expect(back.jwtAuthorities.map((a) => a.kid)).toEqual(["es256-1", "mldsa65-1", "mldsa44-1", "rsa-1"]);
    const originals = [es256.publicKey, mldsa65Jwt.publicKey, mldsa44Jwt.publicKey, rsaJwt.publicKey];
    back.jwtAuthorities.forEach((a, i) => {
      expect(a.publicKey.type).toBe("public");
      expect(a.publicKey.equals(originals[i]!)).toBe(true);
    });
    expect(sameBundleContent(back, mixed)).toBe(true);
    expect(bundleToSpiffeJson(back)).toBe(text);
  });

  it("a parsed bundle validates JWT-SVIDs of classical and ML-DSA keys", async () => {
    const parsed = parseSpiffeBundle(bundleToSpiffeJson(mixed), TD);
    const now = new Date(Date.UTC(2026, 0, 2));
    const bundles = new Map([[TD, parsed]]);
    for (const [privateKey, kid, alg] of [
      [es256.privateKey, "es256-1", "ES256"],
      [rsaJwt.privateKey, "rsa-1", "PS256"],
      [mldsa65Jwt.privateKey, "mldsa65-1", "ML-DSA-65"],
      [mldsa44Jwt.privateKey, "mldsa44-1", "ML-DSA-44"],
    ] as const) {
      const token = await mintJwtSvid({
        spiffeId: `spiffe://${TD}/w`,
        audience: "a",
        ttlSeconds: 60,
        privateKey,
        kid,
        alg,
        now,
      });
      const res = await validateJwtSvid(token, { audience: "a", bundles, now, allowPostQuantum: true });
      expect(res.header.kid).toBe(kid);
    }
  });

  it("round-trips CA certificates issued by host/core/x509.ts (ML-DSA-87, ML-DSA-44, P-384)", () => {
    const now = new Date();
    const ders = (["ml-dsa-87", "ml-dsa-44", "ec-p384"] as const).map((alg) => {
      const kp = generateKeyPair(alg);
      return issueCaCertificate({
        publicKey: kp.publicKey,
        signer: { privateKey: kp.privateKey },
        trustDomain: TD,
        notBefore: now,
        notAfter: new Date(now.getTime() + 86_400_000),
      });
    });
    const b: TrustBundle = { trustDomain: TD, x509Authorities: ders, jwtAuthorities: [], sequence: 2 };
    const json = JSON.parse(bundleToSpiffeJson(b));
    expect(json.keys.map((k: Jwk) => k.alg ?? k.crv)).toEqual(["ML-DSA-87", "ML-DSA-44", "P-384"]);
    const back = parseSpiffeBundle(JSON.stringify(json), TD);
    expect(back.x509Authorities.map(b64)).toEqual(ders.map(b64));
    expect(parsePemBundle(bundleToPem(b), TD).x509Authorities.map(b64)).toEqual(ders.map(b64));
  });

  it("defaults: no sequence → 0, no refresh hint → omitted", () => {
    const b = parseSpiffeBundle(JSON.stringify({ keys: [x509Key(p256Ca)] }), TD);
    expect(b.sequence).toBe(0);
    expect(b.refreshHint).toBeUndefined();
    expect(JSON.parse(bundleToSpiffeJson(b))).not.toHaveProperty("spiffe_refresh_hint");
    expect(parseSpiffeBundle(JSON.stringify({ keys: [] }), TD).x509Authorities).toEqual([]);
  });

  it("accepts extra JWK Set members and extra JWK parameters", () => {
    const b = parseSpiffeBundle(
      doc([x509Key(p256Ca, { alg: "ES256", x5t: "abc" }), jwtKey("k", es256.publicKey, { alg: "ES256" })], {
        custom: { a: 1 },
      }),
      TD,
    );
    expect(b.x509Authorities).toHaveLength(1);
    expect(b.jwtAuthorities).toHaveLength(1);
  });

  it("ignores keys with an unknown kty, however malformed otherwise", () => {
    const b = parseSpiffeBundle(
      doc([
        { use: "x509-svid", kty: "oct", k: "c2VjcmV0" },
        { use: "jwt-svid", kty: "FOO", kid: "x" },
        { use: "x509-svid", kty: "PQ-FUTURE", x5c: ["a", "b"] },
        { use: "jwt-svid", kty: "ec" }, // case-sensitive: not "EC"
        x509Key(p256Ca),
        jwtKey("k", es256.publicKey),
      ]),
      TD,
    );
    expect(b.x509Authorities.map(b64)).toEqual([b64(p256Ca.der)]);
    expect(b.jwtAuthorities.map((a) => a.kid)).toEqual(["k"]);
  });

  it("ignores keys with an unknown use (case-sensitive), however malformed otherwise", () => {
    const b = parseSpiffeBundle(
      doc([
        { use: "enc", ...bundleJwk(es256.publicKey) },
        { use: "sig", ...bundleJwk(es256.publicKey) }, // no kid, but not a jwt-svid key
        { use: "X509-SVID", kty: "EC", x5c: [] },
        { use: "JWT-SVID", kty: "EC" },
        { use: "spiffe-future-svid", kty: "EC", crv: "P-256", x: "!!", y: "!!" },
        jwtKey("k", es256.publicKey),
      ]),
      TD,
    );
    expect(b.x509Authorities).toEqual([]);
    expect(b.jwtAuthorities.map((a) => a.kid)).toEqual(["k"]);
  });

  it("ignores keys of a known kty with a curve or parameter set QHx does not use", () => {
    const p521 = crypto.generateKeyPairSync("ec", { namedCurve: "P-521" }).publicKey;
    const x25519 = crypto.generateKeyPairSync("x25519").publicKey;
    const b = parseSpiffeBundle(
      doc([
        jwtKey("p521", p521),
        jwtKey("x25519", x25519),
        { use: "jwt-svid", kid: "slh", kty: "AKP", alg: "SLH-DSA-SHA2-128s", pub: "AAAA" },
        jwtKey("ok", es256.publicKey),
      ]),
      TD,
    );
    expect(b.jwtAuthorities.map((a) => a.kid)).toEqual(["ok"]);
  });

  it("deduplicates a repeated x509 authority", () => {
    const b = parseSpiffeBundle(doc([x509Key(p256Ca), x509Key(p256Ca)]), TD);
    expect(b.x509Authorities).toHaveLength(1);
  });

  describe("strict errors", () => {
    it("invalid JSON", () => {
      for (const t of ["", "{", "{keys: []}", "[1,", "nul"]) {
        expectBundleError(() => parseSpiffeBundle(t, TD), BUNDLE_ERROR_CODES.invalidJson);
      }
    });

    it("not a JWK Set", () => {
      for (const t of ["[]", "null", "3", '"keys"', "{}", '{"keys": {}}', '{"keys": null}']) {
        expectBundleError(() => parseSpiffeBundle(t, TD), BUNDLE_ERROR_CODES.malformed);
      }
      expectBundleError(() => parseSpiffeBundle(doc([null]), TD), BUNDLE_ERROR_CODES.malformed);
      expectBundleError(() => parseSpiffeBundle(doc([["EC"]]), TD), BUNDLE_ERROR_CODES.malformed);
    });

    it("a key without use or kty (both MUST be set)", () => {
      const { use: _u, ...noUse } = x509Key(p256Ca);
      const { kty: _k, ...noKty } = x509Key(p256Ca);
      expectBundleError(() => parseSpiffeBundle(doc([noUse]), TD), BUNDLE_ERROR_CODES.malformed);
      expectBundleError(() => parseSpiffeBundle(doc([noKty]), TD), BUNDLE_ERROR_CODES.malformed);
      expectBundleError(
        () => parseSpiffeBundle(doc([x509Key(p256Ca, { use: 1 })]), TD),
        BUNDLE_ERROR_CODES.malformed,
      );
    });

    it("bad spiffe_sequence / spiffe_refresh_hint", () => {
      for (const v of [-1, 1.5, "1", null, true]) {
        expectBundleError(
          () => parseSpiffeBundle(JSON.stringify({ keys: [], spiffe_sequence: v }), TD),
          BUNDLE_ERROR_CODES.malformed,
        );
        expectBundleError(
          () => parseSpiffeBundle(JSON.stringify({ keys: [], spiffe_refresh_hint: v }), TD),
          BUNDLE_ERROR_CODES.malformed,
        );
      }
    });

    it("x509-svid key with zero or several x5c", () => {
      const { x5c: _x, ...none } = x509Key(p256Ca);
      for (const k of [
        none,
        x509Key(p256Ca, { x5c: [] }),
        x509Key(p256Ca, { x5c: [b64(p256Ca.der), b64(p256Ca.der)] }),
        x509Key(p256Ca, { x5c: [b64(p256Ca.der), b64(mldsa65Ca.der)] }),
        x509Key(p256Ca, { x5c: b64(p256Ca.der) }),
      ]) {
        expectBundleError(() => parseSpiffeBundle(doc([k]), TD), BUNDLE_ERROR_CODES.x5cCount);
      }
    });

    it("x5c that is base64url, not base64, or not a certificate", () => {
      const std = b64(p256Ca.der);
      const url = Buffer.from(p256Ca.der).toString("base64url");
      expect(url).not.toBe(std.replace(/=+$/, "")); // the DER's base64 has + or /, so the alphabets differ
      for (const bad of [url, `${std}!`, "", 5, "AAAA", b64(Buffer.from("not a certificate"))]) {
        expectBundleError(
          () => parseSpiffeBundle(doc([x509Key(p256Ca, { x5c: [bad] })]), TD),
          BUNDLE_ERROR_CODES.badCertificate,
        );
      }
    });

    it("x509-svid JWK that does not match its certificate", () => {
      // same type, another key
      const other = bundleJwk(generateKeyPair("ec-p256").publicKey);
      expectBundleError(
        () => parseSpiffeBundle(doc([x509Key(p256Ca, { ...other })]), TD),
        BUNDLE_ERROR_CODES.keyMismatch,
      );
      // the ML-DSA CA's JWK carrying the P-256 certificate, and vice versa
      expectBundleError(
        () => parseSpiffeBundle(doc([x509Key(mldsa65Ca, { x5c: [b64(p256Ca.der)] })]), TD),
        BUNDLE_ERROR_CODES.keyMismatch,
      );
      expectBundleError(
        () => parseSpiffeBundle(doc([x509Key(p256Ca, { x5c: [b64(mldsa65Ca.der)] })]), TD),
        BUNDLE_ERROR_CODES.keyMismatch,
      );
    });

    it("jwt-svid key without kid", () => {
      for (const k of [
        jwtKey(undefined, es256.publicKey),
        jwtKey("", es256.publicKey),
        jwtKey("x", es256.publicKey, { kid: 3 }),
      ]) {
        expectBundleError(() => parseSpiffeBundle(doc([k]), TD), BUNDLE_ERROR_CODES.missingKid);
      }
      expectBundleError(
        () => parseSpiffeBundle(doc([jwtKey(undefined, mldsa65Jwt.publicKey)]), TD),
        BUNDLE_ERROR_CODES.missingKid,
      );
    });

    it("duplicate kid", () => {
      expectBundleError(
        () => parseSpiffeBundle(doc([jwtKey("k", es256.publicKey), jwtKey("k", mldsa65Jwt.publicKey)]), TD),
        BUNDLE_ERROR_CODES.duplicateKid,
      );
      expectBundleError(
        () => parseSpiffeBundle(doc([jwtKey("k", es256.publicKey), jwtKey("k", es256.publicKey)]), TD),
        BUNDLE_ERROR_CODES.duplicateKid,
      );
    });

    it("an invalid JWK of a supported type", () => {
      const ec = bundleJwk(es256.publicKey) as Jwk;
      const akp = bundleJwk(mldsa65Jwt.publicKey) as Jwk;
      for (const k of [
        jwtKey("k", es256.publicKey, { x: "AAAA" }),
        jwtKey("k", es256.publicKey, { y: ec["x"] }), // not on the curve
        jwtKey("k", es256.publicKey, { y: undefined }),
        jwtKey("k", mldsa65Jwt.publicKey, { pub: (akp["pub"] as string).slice(0, 100) }),
        jwtKey("k", mldsa65Jwt.publicKey, { pub: bundleJwk(mldsa44Jwt.publicKey).pub }), // 44 key labelled 65
        jwtKey("k", rsaJwt.publicKey, { n: 5 }),
      ]) {
        expectBundleError(() => parseSpiffeBundle(doc([k]), TD), BUNDLE_ERROR_CODES.badKey);
      }
    });

    it("private key material", () => {
      const ecPriv = es256.privateKey.export({ format: "jwk" });
      const mlPriv = mldsa65Jwt.privateKey.export({ format: "jwk" });
      expect(mlPriv).toHaveProperty("priv");
      for (const k of [
        { use: "jwt-svid", kid: "k", ...ecPriv },
        { use: "jwt-svid", kid: "k", ...mlPriv },
        x509Key(p256Ca, { d: ecPriv.d }),
      ]) {
        expectBundleError(() => parseSpiffeBundle(doc([k]), TD), BUNDLE_ERROR_CODES.privateKey);
      }
    });

    it("an invalid trust domain", () => {
      expect(() => parseSpiffeBundle(doc([]), "Example.org")).toThrow(
        expect.objectContaining({ code: "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR" }),
      );
      expect(parseSpiffeBundle(doc([]), `spiffe://${TD}`).trustDomain).toBe(TD);
    });
  });
});

describe("PEM bundles", () => {
  it("round-trips the X.509 authorities", () => {
    const pem = bundleToPem(mixed);
    expect(pem.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(4);
    const b = parsePemBundle(pem, TD);
    expect(b.trustDomain).toBe(TD);
    expect(b.x509Authorities.map(b64)).toEqual(mixed.x509Authorities.map(b64));
    expect(b.jwtAuthorities).toEqual([]);
    expect(b.sequence).toBe(0);
  });

  it("skips other PEM blocks and duplicates", () => {
    const key = es256.publicKey.export({ type: "spki", format: "pem" });
    const b = parsePemBundle(`junk\n${key}${toPem(p256Ca.der)}${toPem(p256Ca.der)}`, TD);
    expect(b.x509Authorities).toHaveLength(1);
  });

  it("rejects an empty, broken or non-certificate PEM bundle", () => {
    expectBundleError(() => parsePemBundle("", TD), BUNDLE_ERROR_CODES.noCertificates);
    expectBundleError(
      () => parsePemBundle(es256.publicKey.export({ type: "spki", format: "pem" }) as string, TD),
      BUNDLE_ERROR_CODES.noCertificates,
    );
    expectBundleError(
      () => parsePemBundle("-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n", TD),
      BUNDLE_ERROR_CODES.badCertificate,
    );
    expectBundleError(
      () => parsePemBundle(toPem(Buffer.from("definitely not DER")), TD),
      BUNDLE_ERROR_CODES.badCertificate,
    );
  });
});

describe("mergeBundles / sameBundleContent", () => {
  it("merges, deduplicating certificates and kids", () => {
    const a: TrustBundle = {
      trustDomain: TD,
      x509Authorities: [p256Ca.der],
      jwtAuthorities: [{ kid: "es256-1", publicKey: es256.publicKey }],
      sequence: 3,
      refreshHint: 600,
    };
    const b: TrustBundle = {
      trustDomain: TD,
      x509Authorities: [p256Ca.der, mldsa65Ca.der],
      jwtAuthorities: [
        { kid: "es256-1", publicKey: es256.privateKey },
        { kid: "mldsa65-1", publicKey: mldsa65Jwt.publicKey },
      ],
      sequence: 5,
      refreshHint: 300,
    };
    const m = mergeBundles(a, b);
    expect(m.x509Authorities.map(b64)).toEqual([b64(p256Ca.der), b64(mldsa65Ca.der)]);
    expect(m.jwtAuthorities.map((j) => j.kid)).toEqual(["es256-1", "mldsa65-1"]);
    expect(m.sequence).toBe(5);
    expect(m.refreshHint).toBe(300);
    expect(sameBundleContent(m, mergeBundles(b, a))).toBe(true);
  });

  it("rejects a kid bound to two keys, or two trust domains", () => {
    const a: TrustBundle = {
      trustDomain: TD,
      x509Authorities: [],
      jwtAuthorities: [{ kid: "k", publicKey: es256.publicKey }],
      sequence: 1,
    };
    expectBundleError(
      () => mergeBundles(a, { ...a, jwtAuthorities: [{ kid: "k", publicKey: mldsa65Jwt.publicKey }] }),
      BUNDLE_ERROR_CODES.duplicateKid,
    );
    expectBundleError(
      () => mergeBundles(a, { ...a, trustDomain: "other.org" }),
      BUNDLE_ERROR_CODES.trustDomainMismatch,
    );
  });

  it("compares content regardless of order, sequence and refresh hint", () => {
    const reordered: TrustBundle = {
      ...mixed,
      x509Authorities: [...mixed.x509Authorities].reverse(),
      jwtAuthorities: [...mixed.jwtAuthorities].reverse(),
      sequence: 99,
      refreshHint: undefined,
    };
    expect(sameBundleContent(mixed, reordered)).toBe(true);
    expect(sameBundleContent(mixed, { ...mixed, x509Authorities: mixed.x509Authorities.slice(1) })).toBe(
      false,
    );
    expect(sameBundleContent(mixed, { ...mixed, trustDomain: "other.org" })).toBe(false);
    const swapped = mixed.jwtAuthorities.map((j) =>
      j.kid === "es256-1" ? { ...j, publicKey: generateKeyPair("ec-p256").publicKey } : j,
    );
    expect(sameBundleContent(mixed, { ...mixed, jwtAuthorities: swapped })).toBe(false);
    expect(sameBundleContent(mixed, { ...mixed, jwtAuthorities: mixed.jwtAuthorities.slice(1) })).toBe(false);
  });
});
