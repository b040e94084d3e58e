import crypto, { type KeyObject } from "node:crypto";
import { ml_dsa44, ml_dsa65, ml_dsa87 } from "@noble/post-quantum/ml-dsa.js";
import { decodeProtectedHeader, jwtVerify, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { generateKeyPair, type KeyAlg, type KeyPair, verifyData } from "../host/core/alg.ts";
import type { TrustBundle } from "../host/core/bundle-types.ts";
import { VerificationError } from "../host/core/errors.ts";
import {
  CLASSICAL_JWT_ALGS,
  DEFAULT_JWT_LEEWAY_SECONDS,
  JWT_ALGS,
  type JwtAlg,
  jwtAlgForKey,
  jwtAlgsForKey,
  mintJwtSvid,
  PQ_JWT_ALGS,
  type ValidateJwtSvidOptions,
  validateJwtSvid,
} from "../host/core/jwtsvid.ts";
import { SpiffeId } from "../host/core/spiffeid.ts";

const TD = "example.org";
const SUB = "spiffe://example.org/ns/prod/sa/web";
const AUD = "spiffe://example.org/reports";
const NOW = new Date(Date.UTC(2026, 0, 1, 12, 0, 0));
const NOW_S = Math.floor(NOW.getTime() / 1000);

const KEY_ALG_FOR: Record<JwtAlg, KeyAlg> = {
  ES256: "ec-p256",
  ES384: "ec-p384",
  RS256: "rsa-2048",
  PS256: "rsa-2048",
  "ML-DSA-44": "ml-dsa-44",
  "ML-DSA-65": "ml-dsa-65",
  "ML-DSA-87": "ml-dsa-87",
};

const keys = new Map<KeyAlg, KeyPair>();
const kidOf = (a: KeyAlg) => `kid-${a}`;
let bundle: TrustBundle;
let bundles: Map<string, TrustBundle>;

beforeAll(() => {
  for (const a of new Set(Object.values(KEY_ALG_FOR))) keys.set(a, generateKeyPair(a));
  bundle = {
    trustDomain: TD,
    x509Authorities: [],
    jwtAuthorities: [...keys].map(([a, kp]) => ({ kid: kidOf(a), publicKey: kp.publicKey })),
    sequence: 1,
  };
  bundles = new Map([[TD, bundle]]);
});

const kp = (alg: JwtAlg) => keys.get(KEY_ALG_FOR[alg])!;

function mint(alg: JwtAlg, over: Partial<Parameters<typeof mintJwtSvid>[0]> = {}): Promise<string> {
  return mintJwtSvid({
    spiffeId: SUB,
    audience: AUD,
    ttlSeconds: 300,
    privateKey: kp(alg).privateKey,
    kid: kidOf(KEY_ALG_FOR[alg]),
    alg,
    now: NOW,
    ...over,
  });
}

function validate(token: string, over: Partial<ValidateJwtSvidOptions> = {}) {
  return validateJwtSvid(token, { audience: AUD, bundles, now: NOW, allowPostQuantum: true, ...over });
}

async function expectCode(p: Promise<unknown>, code: string): Promise<VerificationError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected rejection with ${code}`).toBeInstanceOf(VerificationError);
  expect((err as VerificationError).code).toBe(code);
  return err as VerificationError;
}

async function expectQhxCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ code });
}

const b64u = (x: string | Uint8Array) => Buffer.from(x).toString("base64url");
const json64 = (o: unknown) => b64u(JSON.stringify(o));

/** Sign arbitrary header/payload by hand (node:crypto), bypassing jose's own header checks. */
function handSign(header: Record<string, unknown>, payload: Record<string, unknown>, key: KeyObject): string {
  const input = `${json64(header)}.${json64(payload)}`;
  const t = key.asymmetricKeyType;
  let sig: Buffer;
  if (t === "ec") sig = crypto.sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  else if (t === "rsa") sig = crypto.sign("sha256", Buffer.from(input), key);
  else sig = crypto.sign(null, Buffer.from(input), key);
  return `${input}.${b64u(sig)}`;
}

const goodPayload = (over: Record<string, unknown> = {}) => ({
  sub: SUB,
  aud: AUD,
  exp: NOW_S + 300,
  iat: NOW_S,
  ...over,
});

const es256Header = (over: Record<string, unknown> = {}) => ({
  alg: "ES256",
  kid: kidOf("ec-p256"),
  typ: "JWT",
  ...over,
});

function parts(token: string): [string, string, string] {
  const p = token.split(".");
  expect(p).toHaveLength(3);
  return p as [string, string, string];
}

describe("jwtAlgForKey", () => {
  it("maps each key type to its JWT alg", () => {
    expect(jwtAlgForKey(generateKeyPair("ec-p256").publicKey)).toBe("ES256");
    expect(jwtAlgForKey(generateKeyPair("ec-p384").privateKey)).toBe("ES384");
    expect(jwtAlgForKey(kp("RS256").publicKey)).toBe("RS256");
    expect(jwtAlgsForKey(kp("RS256").publicKey)).toEqual(["RS256", "PS256"]);
    expect(jwtAlgForKey(kp("ML-DSA-44").publicKey)).toBe("ML-DSA-44");
    expect(jwtAlgForKey(kp("ML-DSA-65").publicKey)).toBe("ML-DSA-65");
    expect(jwtAlgForKey(kp("ML-DSA-87").publicKey)).toBe("ML-DSA-87");
  });

  it("refuses Ed25519 (not a JWT-SVID algorithm)", () => {
    expect(() => jwtAlgForKey(generateKeyPair("ed25519").publicKey)).toThrow(
      expect.objectContaining({ code: "QHX_UNSUPPORTED_ALGORITHM" }),
    );
    expect(jwtAlgsForKey(generateKeyPair("ed25519").publicKey)).toEqual([]);
  });
});

describe("round trips", () => {
  it.each(JWT_ALGS.map((a) => [a]))("%s: mint → validate", async (alg) => {
    const token = await mint(alg);
    const res = await validate(token);
    expect(res.spiffeId).toBeInstanceOf(SpiffeId);
    expect(res.spiffeId.toString()).toBe(SUB);
    expect(res.header).toEqual({ alg, kid: kidOf(KEY_ALG_FOR[alg]), typ: "JWT" });
    expect(res.claims).toEqual({ sub: SUB, aud: AUD, exp: NOW_S + 300, iat: NOW_S });
  });

  it("the header has exactly alg, kid, typ", async () => {
    const h = JSON.parse(Buffer.from(parts(await mint("ES256"))[0], "base64url").toString());
    expect(Object.keys(h).sort()).toEqual(["alg", "kid", "typ"]);
  });

  it("defaults the alg from the key for classical keys", async () => {
    const token = await mint("ES256", { alg: undefined });
    expect(decodeProtectedHeader(token).alg).toBe("ES256");
    const rsa = await mint("RS256", { alg: undefined });
    expect(decodeProtectedHeader(rsa).alg).toBe("RS256");
  });

  it("several audiences are emitted as an array, any one of them validates", async () => {
    const token = await mint("ES256", { audience: ["a", AUD, "c"] });
    expect((await validate(token)).claims.aud).toEqual(["a", AUD, "c"]);
    expect((await validate(token, { audience: "c" })).claims.aud).toEqual(["a", AUD, "c"]);
  });

  it("extra claims are carried", async () => {
    const token = await mint("ES384", { extraClaims: { jti: "abc", iss: "qhx" } });
    const { claims } = await validate(token);
    expect(claims["jti"]).toBe("abc");
    expect(claims["iss"]).toBe("qhx");
  });

  it("accepts a SpiffeId object and a function bundle source", async () => {
    const token = await mint("PS256", { spiffeId: SpiffeId.parse(SUB) });
    const res = await validate(token, { bundles: (td) => (td === TD ? bundle : undefined) });
    expect(res.spiffeId.toString()).toBe(SUB);
  });

  it("accepts typ JOSE and an absent typ (spec §2.3)", async () => {
    const { privateKey } = kp("ES256");
    for (const typ of ["JOSE", undefined]) {
      const header: Record<string, unknown> = es256Header({ typ });
      if (typ === undefined) delete header["typ"];
      const res = await validate(handSign(header, goodPayload(), privateKey));
      expect(res.header.typ).toBe(typ);
    }
  });
});

describe("interop", () => {
  it.each(CLASSICAL_JWT_ALGS.map((a) => [a]))(
    "%s: jose jwtVerify and decodeProtectedHeader agree",
    async (alg) => {
      const token = await mint(alg);
      expect(decodeProtectedHeader(token)).toEqual({ alg, kid: kidOf(KEY_ALG_FOR[alg]), typ: "JWT" });
      const { payload, protectedHeader } = await jwtVerify(token, kp(alg).publicKey, {
        algorithms: [alg],
        audience: AUD,
        currentDate: NOW,
      });
      expect(protectedHeader.alg).toBe(alg);
      expect(payload.sub).toBe(SUB);
      // and the project's own verifyData agrees on the raw JWS signature
      const [h, p, s] = parts(token);
      const ok = verifyData(kp(alg).publicKey, Buffer.from(`${h}.${p}`), Buffer.from(s, "base64url"), {
        ecdsaEncoding: "ieee-p1363",
        rsaPss: alg === "PS256",
      });
      expect(ok).toBe(true);
    },
  );

  it("validates a token jose minted independently", async () => {
    const token = await new SignJWT({ sub: SUB, aud: [AUD], exp: NOW_S + 60, iat: NOW_S })
      .setProtectedHeader({ alg: "ES256", kid: kidOf("ec-p256"), typ: "JWT" })
      .sign(kp("ES256").privateKey);
    expect((await validate(token)).spiffeId.toString()).toBe(SUB);
  });

  const NOBLE = { "ML-DSA-44": ml_dsa44, "ML-DSA-65": ml_dsa65, "ML-DSA-87": ml_dsa87 } as const;
  it.each(PQ_JWT_ALGS.map((a) => [a]))("%s: @noble/post-quantum and jose verify the token", async (alg) => {
    const token = await mint(alg);
    const header = decodeProtectedHeader(token);
    expect(header).toEqual({ alg, kid: kidOf(KEY_ALG_FOR[alg]), typ: "JWT" });
    const jwk = kp(alg).publicKey.export({ format: "jwk" }) as { kty: string; alg: string; pub: string };
    expect(jwk.kty).toBe("AKP");
    expect(jwk.alg).toBe(alg);
    const pub = Buffer.from(jwk.pub, "base64url");
    const [h, p, s] = parts(token);
    const msg = new TextEncoder().encode(`${h}.${p}`);
    const sig = Buffer.from(s, "base64url");
    // @noble/post-quantum 0.7: verify(signature, message, publicKey)
    expect(NOBLE[alg].verify(sig, msg, pub)).toBe(true);
    const bad = Uint8Array.from(msg);
    bad[bad.length - 1]! ^= 1;
    expect(NOBLE[alg].verify(sig, bad, pub)).toBe(false);
    const { payload } = await jwtVerify(token, kp(alg).publicKey, { algorithms: [alg], currentDate: NOW });
    expect(payload.sub).toBe(SUB);
  });
});

describe("header rejections", () => {
  it("alg none (any case), even with an empty signature", async () => {
    for (const alg of ["none", "None", "NONE"]) {
      const token = `${json64(es256Header({ alg }))}.${json64(goodPayload())}.`;
      await expectCode(validate(token), "QHX_JWT_ALG_NONE");
      await expectCode(validate(`${token}AAAA`), "QHX_JWT_ALG_NONE");
    }
  });

  it("HS256 keyed with the public key bytes (key-confusion attack)", async () => {
    for (const alg of ["ES256", "RS256"] as const) {
      const pub = kp(alg).publicKey;
      const secrets = [
        pub.export({ type: "spki", format: "pem" }),
        pub.export({ type: "spki", format: "der" }),
      ];
      for (const secret of secrets) {
        const token = await new SignJWT(goodPayload())
          .setProtectedHeader({ alg: "HS256", kid: kidOf(KEY_ALG_FOR[alg]), typ: "JWT" })
          .sign(new Uint8Array(Buffer.from(secret)));
        await expectCode(validate(token), "QHX_JWT_ALG_NOT_ALLOWED");
        // and it cannot be opted into
        await expectQhxCode(validate(token, { allowedAlgs: ["HS256" as JwtAlg] }), "QHX_INVALID_ARGUMENT");
      }
    }
    for (const alg of ["HS384", "HS512", "hs256"]) {
      await expectCode(
        validate(handSign(es256Header({ alg }), goodPayload(), kp("ES256").privateKey)),
        "QHX_JWT_ALG_NOT_ALLOWED",
      );
    }
  });

  it("unknown or unsupported algs", async () => {
    for (const alg of ["ES512", "RS512", "PS384", "EdDSA", "Ed25519", "ML-DSA-128", "FOO", ""]) {
      const token = handSign(es256Header({ alg }), goodPayload(), kp("ES256").privateKey);
      await expectCode(validate(token), "QHX_JWT_ALG_NOT_ALLOWED");
    }
    await expectCode(
      validate(handSign(es256Header({ alg: 256 }), goodPayload(), kp("ES256").privateKey)),
      "QHX_JWT_MALFORMED",
    );
  });

  it("algs outside allowedAlgs", async () => {
    const rs = await mint("RS256");
    await expectCode(validate(rs, { allowedAlgs: ["ES256"] }), "QHX_JWT_ALG_NOT_ALLOWED");
    expect((await validate(rs, { allowedAlgs: ["RS256"] })).header.alg).toBe("RS256");
  });

  it("a header alg that does not fit the key named by kid", async () => {
    // signed with P-384 as ES384, but names the P-256 key
    const token = await mint("ES384", { kid: kidOf("ec-p256") });
    await expectCode(validate(token), "QHX_JWT_ALG_KEY_MISMATCH");
    // an RSA kid with an ECDSA alg
    const t2 = await mint("ES256", { kid: kidOf("rsa-2048") });
    await expectCode(validate(t2), "QHX_JWT_ALG_KEY_MISMATCH");
    // ML-DSA-44 alg against the ML-DSA-65 key
    const t3 = await mint("ML-DSA-44", { kid: kidOf("ml-dsa-65") });
    await expectCode(validate(t3), "QHX_JWT_ALG_KEY_MISMATCH");
  });

  it("a missing or empty kid", async () => {
    const { privateKey } = kp("ES256");
    const noKid = es256Header();
    delete (noKid as Record<string, unknown>)["kid"];
    await expectCode(validate(handSign(noKid, goodPayload(), privateKey)), "QHX_JWT_MISSING_KID");
    await expectCode(
      validate(handSign(es256Header({ kid: "" }), goodPayload(), privateKey)),
      "QHX_JWT_MISSING_KID",
    );
    await expectCode(
      validate(handSign(es256Header({ kid: 7 }), goodPayload(), privateKey)),
      "QHX_JWT_MISSING_KID",
    );
  });

  it("crit and every other header beyond alg/kid/typ (spec §2)", async () => {
    const { privateKey, publicKey } = kp("ES256");
    const extras: Record<string, unknown>[] = [
      { crit: ["exp"] },
      { crit: [] },
      { b64: false, crit: ["b64"] },
      { jku: "https://attacker.example/jwks.json" },
      { jwk: publicKey.export({ format: "jwk" }) },
      { x5u: "https://attacker.example/cert.pem" },
      { cty: "JWT" },
      { foo: "bar" },
    ];
    for (const extra of extras) {
      await expectCode(
        validate(handSign(es256Header(extra), goodPayload(), privateKey)),
        "QHX_JWT_FORBIDDEN_HEADER",
      );
    }
  });

  it("a typ other than JWT or JOSE", async () => {
    const { privateKey } = kp("ES256");
    for (const typ of ["at+jwt", "jwt", 1]) {
      await expectCode(
        validate(handSign(es256Header({ typ }), goodPayload(), privateKey)),
        "QHX_JWT_BAD_TYPE",
      );
    }
  });

  it("malformed tokens", async () => {
    const good = await mint("ES256");
    const [h, p, s] = parts(good);
    const bad = [
      "",
      "abc",
      `${h}.${p}`,
      `${h}.${p}.${s}.x`,
      `${h}.${p}.`,
      `${h}.${p}.${s}=`,
      `${h}=.${p}.${s}`,
      `!!.${p}.${s}`,
      `${b64u("not json")}.${p}.${s}`,
      `${json64(["ES256"])}.${p}.${s}`,
      `${h}.${b64u("not json")}.${s}`,
      `${h}.${json64("a string")}.${s}`,
      `${h}.${b64u(Uint8Array.of(0xff, 0xfe, 0x7b, 0x7d))}.${s}`,
      `${h}.${p}.${"A".repeat(40_000)}`,
    ];
    for (const t of bad) await expectCode(validate(t), "QHX_JWT_MALFORMED");
    await expectCode(validate(undefined as unknown as string), "QHX_JWT_MALFORMED");
  });
});

describe("claim rejections", () => {
  const es = (payload: Record<string, unknown>) => handSign(es256Header(), payload, kp("ES256").privateKey);

  it("missing aud, exp or sub", async () => {
    for (const c of ["aud", "exp", "sub"]) {
      const p = goodPayload();
      delete (p as Record<string, unknown>)[c];
      await expectCode(validate(es(p)), "QHX_JWT_MISSING_CLAIM");
    }
  });

  it("wrong aud", async () => {
    await expectCode(validate(await mint("ES256", { audience: "other" })), "QHX_JWT_AUDIENCE");
    await expectCode(validate(await mint("ES256", { audience: ["x", "y"] })), "QHX_JWT_AUDIENCE");
    await expectCode(
      validate(await mint("ES256"), { audience: "spiffe://example.org/other" }),
      "QHX_JWT_AUDIENCE",
    );
    await expectCode(validate(es(goodPayload({ aud: [] }))), "QHX_JWT_AUDIENCE");
    await expectCode(validate(es(goodPayload({ aud: 5 }))), "QHX_JWT_AUDIENCE");
    // prefix / case variations are not matches
    await expectCode(validate(es(goodPayload({ aud: `${AUD}/x` }))), "QHX_JWT_AUDIENCE");
    await expectCode(validate(es(goodPayload({ aud: AUD.toUpperCase() }))), "QHX_JWT_AUDIENCE");
  });

  it("exp: not a number is malformed", async () => {
    await expectCode(validate(es(goodPayload({ exp: String(NOW_S + 300) }))), "QHX_JWT_MALFORMED");
  });

  it("expired, with the leeway honoured both ways", async () => {
    const token = await mint("ES256", { ttlSeconds: 60 }); // exp = NOW + 60
    const at = (s: number) => new Date(NOW.getTime() + s * 1000);
    expect(DEFAULT_JWT_LEEWAY_SECONDS).toBe(30);
    // default leeway 30 s: valid until exp + 30 (exclusive)
    await validate(token, { now: at(89) });
    await expectCode(validate(token, { now: at(90) }), "QHX_JWT_EXPIRED");
    // no leeway: exp itself is already expired (RFC 7519 §4.1.4)
    await validate(token, { now: at(59), leewaySeconds: 0 });
    await expectCode(validate(token, { now: at(60), leewaySeconds: 0 }), "QHX_JWT_EXPIRED");
    // a larger leeway
    await validate(token, { now: at(179), leewaySeconds: 120 });
    await expectCode(validate(token, { now: at(180), leewaySeconds: 120 }), "QHX_JWT_EXPIRED");
    await expectCode(validate(token, { now: at(3600) }), "QHX_JWT_EXPIRED");
  });

  it("leeway out of range is an argument error", async () => {
    const token = await mint("ES256");
    await expectQhxCode(validate(token, { leewaySeconds: -1 }), "QHX_INVALID_ARGUMENT");
    await expectQhxCode(validate(token, { leewaySeconds: 301 }), "QHX_INVALID_ARGUMENT");
    await expectQhxCode(validate(token, { leewaySeconds: Number.NaN }), "QHX_INVALID_ARGUMENT");
  });

  it("nbf in the future, with the leeway honoured", async () => {
    const far = await mint("ES256", { extraClaims: { nbf: NOW_S + 100 } });
    await expectCode(validate(far), "QHX_JWT_NOT_YET_VALID");
    const near = await mint("ES256", { extraClaims: { nbf: NOW_S + 20 } });
    await validate(near); // within the default 30 s
    await expectCode(validate(near, { leewaySeconds: 0 }), "QHX_JWT_NOT_YET_VALID");
    await validate(near, { leewaySeconds: 0, now: new Date((NOW_S + 20) * 1000) });
  });

  it("iat in the future, with the leeway honoured", async () => {
    const future = await mint("ES256", { now: new Date((NOW_S + 100) * 1000) });
    await expectCode(validate(future), "QHX_JWT_ISSUED_IN_FUTURE");
    const near = await mint("ES256", { now: new Date((NOW_S + 20) * 1000) });
    await validate(near);
    await expectCode(validate(near, { leewaySeconds: 0 }), "QHX_JWT_ISSUED_IN_FUTURE");
    await expectCode(validate(es(goodPayload({ iat: "yesterday" }))), "QHX_JWT_MALFORMED");
  });

  it("sub that is not a SPIFFE ID", async () => {
    for (const sub of [
      "web",
      "user@example.org",
      "https://example.org/web",
      "spiffe://Example.org/web",
      "spiffe://example.org/web/",
      "spiffe://example.org/a/../b",
      "spiffe://",
      "",
    ]) {
      await expectCode(validate(es(goodPayload({ sub }))), "QHX_JWT_BAD_SUBJECT");
    }
    await expectCode(validate(es(goodPayload({ sub: 42 }))), "QHX_JWT_BAD_SUBJECT");
  });
});

describe("key selection", () => {
  it("unknown kid", async () => {
    await expectCode(validate(await mint("ES256", { kid: "rotated-away" })), "QHX_JWT_UNKNOWN_KID");
  });

  it("no bundle for the subject's trust domain", async () => {
    const token = await mint("ES256", { spiffeId: "spiffe://other.org/web" });
    await expectCode(validate(token), "QHX_JWT_NO_BUNDLE");
    await expectCode(validate(token, { bundles: () => undefined }), "QHX_JWT_NO_BUNDLE");
    // a bundle source answering with another trust domain's bundle is not trusted
    await expectCode(validate(token, { bundles: () => bundle }), "QHX_JWT_NO_BUNDLE");
  });

  it("sub in another trust domain than the signing key's bundle", async () => {
    // example.org's key signs for other.org; other.org's bundle does not have that kid …
    const other = generateKeyPair("ec-p256");
    const otherBundle: TrustBundle = {
      trustDomain: "other.org",
      x509Authorities: [],
      jwtAuthorities: [{ kid: "other-key", publicKey: other.publicKey }],
      sequence: 1,
    };
    const both = new Map([
      [TD, bundle],
      ["other.org", otherBundle],
    ]);
    const forged = await mint("ES256", { spiffeId: "spiffe://other.org/admin" });
    await expectCode(validate(forged, { bundles: both }), "QHX_JWT_UNKNOWN_KID");
    // … and where other.org happens to reuse the kid for its own key, the signature fails
    const sameKid: TrustBundle = {
      ...otherBundle,
      jwtAuthorities: [{ kid: kidOf("ec-p256"), publicKey: other.publicKey }],
    };
    await expectCode(
      validate(forged, {
        bundles: new Map([
          [TD, bundle],
          ["other.org", sameKid],
        ]),
      }),
      "QHX_JWT_BAD_SIGNATURE",
    );
    // other.org's own key does work for other.org
    const ok = await mintJwtSvid({
      spiffeId: "spiffe://other.org/admin",
      audience: AUD,
      ttlSeconds: 60,
      privateKey: other.privateKey,
      kid: "other-key",
      now: NOW,
    });
    expect((await validate(ok, { bundles: both })).spiffeId.trustDomain).toBe("other.org");
  });
});

describe("tampering", () => {
  function flipPayload(token: string): string {
    const [h, p, s] = parts(token);
    const claims = JSON.parse(Buffer.from(p, "base64url").toString());
    claims.sub = `${claims.sub.slice(0, -1)}X`; // still a valid SPIFFE ID in the same trust domain
    return `${h}.${json64(claims)}.${s}`;
  }
  function flipSignature(token: string, at: number): string {
    const [h, p, s] = parts(token);
    const sig = Buffer.from(s, "base64url");
    sig[at % sig.length]! ^= 0x01;
    return `${h}.${p}.${b64u(sig)}`;
  }
  function flipPayloadByte(token: string): string {
    const [h, p, s] = parts(token);
    const raw = Buffer.from(p, "base64url");
    const i = raw.indexOf(Buffer.from('"aud"')) + 1; // "aud" → "bud": payload still JSON, claims altered
    raw[i]! ^= 0x03;
    return `${h}.${b64u(raw)}.${s}`;
  }

  it.each(JWT_ALGS.map((a) => [a]))("%s: a flipped byte in payload or signature is rejected", async (alg) => {
    const token = await mint(alg);
    await validate(token);
    await expectCode(validate(flipPayload(token)), "QHX_JWT_BAD_SIGNATURE");
    const flipped = flipPayloadByte(token);
    expect(flipped).not.toBe(token);
    await expectCode(validate(flipped), "QHX_JWT_BAD_SIGNATURE");
    for (const at of [0, 17, -1]) {
      const sigLen = Buffer.from(parts(token)[2], "base64url").length;
      await expectCode(validate(flipSignature(token, at < 0 ? sigLen - 1 : at)), "QHX_JWT_BAD_SIGNATURE");
    }
  });

  it("changing a signed header value breaks the signature", async () => {
    const token = await mint("ES256");
    const [, p, s] = parts(token);
    await expectCode(validate(`${json64(es256Header({ typ: "JOSE" }))}.${p}.${s}`), "QHX_JWT_BAD_SIGNATURE");
    // PS256 signature relabelled RS256
    const ps = await mint("PS256");
    const [, pp, ss] = parts(ps);
    const relabelled = `${json64({ alg: "RS256", kid: kidOf("rsa-2048"), typ: "JWT" })}.${pp}.${ss}`;
    await expectCode(validate(relabelled), "QHX_JWT_BAD_SIGNATURE");
  });

  it("a truncated, empty-ish or DER-encoded ECDSA signature", async () => {
    const token = await mint("ES256");
    const [h, p, s] = parts(token);
    const sig = Buffer.from(s, "base64url");
    await expectCode(validate(`${h}.${p}.${b64u(sig.subarray(0, 63))}`), "QHX_JWT_BAD_SIGNATURE");
    await expectCode(validate(`${h}.${p}.AA`), "QHX_JWT_BAD_SIGNATURE");
    const der = crypto.sign("sha256", Buffer.from(`${h}.${p}`), kp("ES256").privateKey); // DER, not JOSE
    await expectCode(validate(`${h}.${p}.${b64u(der)}`), "QHX_JWT_BAD_SIGNATURE");
  });

  it("a signature by a different key under a known kid", async () => {
    const imposter = generateKeyPair("ec-p256");
    const token = await mint("ES256", { privateKey: imposter.privateKey });
    await expectCode(validate(token), "QHX_JWT_BAD_SIGNATURE");
  });
});

describe("post-quantum opt-in", () => {
  it.each(PQ_JWT_ALGS.map((a) => [a]))("%s is rejected unless allowed", async (alg) => {
    const token = await mint(alg);
    await expectCode(validate(token, { allowPostQuantum: false }), "QHX_JWT_ALG_NOT_ALLOWED");
    await expectCode(validate(token, { allowPostQuantum: undefined }), "QHX_JWT_ALG_NOT_ALLOWED");
    await expectCode(
      validate(token, { allowPostQuantum: false, allowedAlgs: [...CLASSICAL_JWT_ALGS] }),
      "QHX_JWT_ALG_NOT_ALLOWED",
    );
    expect((await validate(token, { allowPostQuantum: false, allowedAlgs: [alg] })).header.alg).toBe(alg);
    expect((await validate(token, { allowPostQuantum: true })).header.alg).toBe(alg);
  });

  it("minting with an ML-DSA key needs the alg spelled out", async () => {
    await expectQhxCode(mint("ML-DSA-65", { alg: undefined }), "QHX_JWT_ALG_NOT_ALLOWED");
  });
});

describe("mint argument checks", () => {
  it("rejects bad arguments", async () => {
    await expectQhxCode(mint("ES256", { alg: "ES384" }), "QHX_JWT_ALG_KEY_MISMATCH");
    await expectQhxCode(mint("ES256", { alg: "ML-DSA-65" }), "QHX_JWT_ALG_KEY_MISMATCH");
    await expectQhxCode(mint("RS256", { alg: "HS256" as JwtAlg }), "QHX_UNSUPPORTED_ALGORITHM");
    await expectQhxCode(
      mint("ES256", { alg: undefined, privateKey: generateKeyPair("ed25519").privateKey }),
      "QHX_UNSUPPORTED_ALGORITHM",
    );
    await expectQhxCode(mint("ES256", { privateKey: kp("ES256").publicKey }), "QHX_INVALID_ARGUMENT");
    await expectQhxCode(mint("ES256", { ttlSeconds: 0 }), "QHX_INVALID_ARGUMENT");
    await expectQhxCode(mint("ES256", { ttlSeconds: 1.5 }), "QHX_INVALID_ARGUMENT");
    await expectQhxCode(mint("ES256", { audience: [] }), "QHX_INVALID_ARGUMENT");
    await expectQhxCode(mint("ES256", { audience: "" }), "QHX_INVALID_ARGUMENT");
    await expectQhxCode(mint("ES256", { kid: "" }), "QHX_INVALID_ARGUMENT");
    await expectQhxCode(mint("ES256", { now: new Date(Number.NaN) }), "QHX_INVALID_ARGUMENT");
    for (const c of ["sub", "aud", "exp", "iat"]) {
      await expectQhxCode(mint("ES256", { extraClaims: { [c]: "x" } }), "QHX_INVALID_ARGUMENT");
    }
    await expectQhxCode(mint("ES256", { spiffeId: "spiffe://example.org/a//b" }), "SPIFFE_ID_EMPTY_SEGMENT");
  });
});
