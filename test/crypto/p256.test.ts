import crypto from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  derToP1363,
  ecdsaP256Verify,
  ecdsaP256VerifyDer,
  ecdsaP256VerifyDigest,
  uncompressP256,
} from "../../host/crypto/p256.ts";
import { loadCryptoWasm, type WasmFlavour } from "../../host/crypto/wasm.ts";
import { hex, loadWycheproof, toHex } from "./vectors.ts";

const FLAVOURS: WasmFlavour[] = ["simd", "scalar"];
const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function bytes(rnd: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}
const big = (b: Uint8Array) => BigInt(`0x${toHex(b) || "0"}`);
function be32(x: bigint): Uint8Array {
  return hex(x.toString(16).padStart(64, "0"));
}
const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));

interface Key {
  pub: Uint8Array; // 65-byte uncompressed
  priv: crypto.KeyObject;
}
/** A P-256 key from a seeded private scalar (OpenSSL derives the public point). */
function keyFrom(rnd: () => number): Key {
  let d = 0n;
  while (d === 0n || d >= N) d = big(bytes(rnd, 32));
  const der = cat(
    hex("30310201010420"),
    be32(d),
    hex("a00a06082a8648ce3d030107"), // [0] namedCurve prime256v1
  );
  const priv = crypto.createPrivateKey({ key: Buffer.from(der), format: "der", type: "sec1" });
  const jwk = crypto.createPublicKey(priv).export({ format: "jwk" });
  const pub = cat(hex("04"), Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url"));
  return { pub, priv };
}
/** node:crypto's verdict; a key it cannot import (off the curve, bad encoding) verifies nothing. */
function nodeVerify(pub: Uint8Array, msg: Uint8Array, sig: Uint8Array): boolean {
  let key: crypto.KeyObject;
  try {
    key = crypto.createPublicKey({
      key: { kty: "EC", crv: "P-256", x: b64u(pub.subarray(1, 33)), y: b64u(pub.subarray(33)) },
      format: "jwk",
    });
  } catch {
    return false;
  }
  return crypto.verify("sha256", msg, { key, dsaEncoding: "ieee-p1363" }, sig);
}
const b64u = (b: Uint8Array) => Buffer.from(b).toString("base64url");
const compress = (pub: Uint8Array) => cat(new Uint8Array([2 | (pub[64]! & 1)]), pub.subarray(1, 33));

describe.each(FLAVOURS)("ECDSA P-256 kernel (%s)", (flavour) => {
  it("agrees with every Wycheproof ecdsa_secp256r1_sha256 vector (DER signatures)", () => {
    const file = loadWycheproof("ecdsa_secp256r1_sha256_test.json");
    let count = 0;
    let valid = 0;
    const wrong: string[] = [];
    for (const g of file.testGroups) {
      const pub = hex((g["publicKey"] as { uncompressed: string }).uncompressed);
      for (const t of g.tests) {
        count++;
        // this file has no "acceptable" results; were one added, strict DER would reject it
        const expected = t.result === "valid";
        if (expected) valid++;
        const msg = hex(t["msg"]);
        const got = ecdsaP256VerifyDer(pub, msg, hex(t["sig"]), flavour);
        if (got !== expected) wrong.push(`tcId ${t.tcId} (${t.comment}): got ${got}`);
        // the same verdict through a compressed key
        if (ecdsaP256VerifyDer(compress(pub), msg, hex(t["sig"]), flavour) !== expected) {
          wrong.push(`tcId ${t.tcId} (${t.comment}, compressed key)`);
        }
      }
    }
    expect(wrong).toEqual([]);
    expect(count).toBe(file.numberOfTests);
    expect(valid).toBeGreaterThan(100);
  });

  it("agrees with node:crypto on seeded keys, messages and mutations", () => {
    const cases = flavour === "simd" ? 2000 : 300;
    const rnd = prng(flavour === "simd" ? 0x9256 : 0x5ca1a);
    const counts = { valid: 0, invalid: 0 };
    let prev: Key | undefined;
    for (let i = 0; i < cases; i++) {
      const key = keyFrom(rnd);
      const msg = bytes(rnd, Math.floor(rnd() * 300));
      const sig = new Uint8Array(crypto.sign("sha256", msg, { key: key.priv, dsaEncoding: "ieee-p1363" }));
      const check = (pub: Uint8Array, m: Uint8Array, s: Uint8Array, expected: boolean, what: string) => {
        expect(nodeVerify(pub, m, s), `node, case ${i}: ${what}`).toBe(expected);
        expect(ecdsaP256Verify(pub, m, s, flavour), `kernel, case ${i}: ${what}`).toBe(expected);
        counts[expected ? "valid" : "invalid"]++;
      };
      check(key.pub, msg, sig, true, "valid signature");
      // high s: (r, n - s) verifies too in plain ECDSA (no low-s rule), in both implementations
      const s = big(sig.subarray(32));
      const high = cat(sig.subarray(0, 32), be32(N - s));
      const mutation = i % 8;
      if (mutation === 0) check(key.pub, msg, high, true, "(r, n - s)");
      else if (mutation === 1) {
        const bad = sig.slice();
        const bit = Math.floor(rnd() * 512);
        bad[bit >> 3]! ^= 1 << (bit & 7);
        check(key.pub, msg, bad, false, `signature bit ${bit} flipped`);
      } else if (mutation === 2) {
        const m2 = msg.length === 0 ? new Uint8Array([0]) : msg.slice();
        if (msg.length > 0) m2[Math.floor(rnd() * msg.length)]! ^= 1 + Math.floor(rnd() * 255);
        check(key.pub, m2, sig, false, "message changed");
      } else if (mutation === 3 && prev) {
        check(prev.pub, msg, sig, false, "someone else's key");
      } else if (mutation === 4) {
        // the negated point -Q is on the curve but does not verify Q's signature
        const neg = cat(key.pub.subarray(0, 33), be32(P - big(key.pub.subarray(33))));
        check(neg, msg, sig, false, "negated public key");
      } else if (mutation === 5) {
        const bad = key.pub.slice();
        bad[1 + Math.floor(rnd() * 64)]! ^= 1 << Math.floor(rnd() * 8);
        check(bad, msg, sig, false, "public key bit flipped (off the curve)");
      } else if (mutation === 6) {
        // r + n or s + n still fits in 256 bits for most r, s: out of range, must fail
        const r = big(sig.subarray(0, 32));
        const plus =
          r + N < 1n << 256n ? cat(be32(r + N), sig.subarray(32)) : cat(sig.subarray(0, 32), be32(N));
        check(key.pub, msg, plus, false, "r + n (or s = n)");
      } else {
        const swapped = cat(sig.subarray(32), sig.subarray(0, 32));
        check(key.pub, msg, swapped, false, "r and s swapped");
      }
      prev = key;
    }
    expect(counts.valid).toBeGreaterThanOrEqual(cases);
    expect(counts.invalid).toBeGreaterThan(cases / 2);
  });

  it("verifies over precomputed digests, compressed keys and messages longer than the IO buffer", () => {
    const rnd = prng(42);
    const key = keyFrom(rnd);
    const msg = bytes(rnd, 200_000);
    const sig = new Uint8Array(crypto.sign("sha256", msg, { key: key.priv, dsaEncoding: "ieee-p1363" }));
    expect(ecdsaP256Verify(key.pub, msg, sig, flavour)).toBe(true);
    expect(ecdsaP256Verify(compress(key.pub), msg, sig, flavour)).toBe(true);
    const wrongParity = compress(key.pub);
    wrongParity[0]! ^= 1;
    expect(ecdsaP256Verify(wrongParity, msg, sig, flavour)).toBe(false);
    const digest = new Uint8Array(crypto.createHash("sha256").update(msg).digest());
    expect(ecdsaP256VerifyDigest(key.pub, digest, sig, flavour)).toBe(true);
    expect(ecdsaP256VerifyDigest(key.pub, digest.subarray(1), sig, flavour)).toBe(false);
    digest[0]! ^= 1;
    expect(ecdsaP256VerifyDigest(key.pub, digest, sig, flavour)).toBe(false);
    const der = new Uint8Array(crypto.sign("sha256", msg, key.priv));
    expect(ecdsaP256VerifyDer(key.pub, msg, der, flavour)).toBe(true);
  });

  it("rejects malformed public keys and out-of-range r, s", () => {
    const rnd = prng(7);
    const key = keyFrom(rnd);
    const msg = new TextEncoder().encode("qhx");
    const sig = new Uint8Array(crypto.sign("sha256", msg, { key: key.priv, dsaEncoding: "ieee-p1363" }));
    const ok = (pub: Uint8Array, s = sig) => ecdsaP256Verify(pub, msg, s, flavour);
    expect(ok(key.pub)).toBe(true);
    // prefix, lengths
    for (const prefix of [0x00, 0x02, 0x03, 0x05, 0x06, 0x07]) {
      const bad = key.pub.slice();
      bad[0] = prefix;
      expect(ok(bad), `prefix ${prefix}`).toBe(false);
    }
    expect(ok(key.pub.subarray(0, 64))).toBe(false);
    expect(ok(cat(key.pub, new Uint8Array(1)))).toBe(false);
    expect(ok(new Uint8Array([0]))).toBe(false); // SEC 1 encoding of the point at infinity
    expect(ok(new Uint8Array(65))).toBe(false);
    // coordinates equal to p (x = p is 0 mod p, y = p likewise): not field elements
    expect(ok(cat(hex("04"), be32(P), key.pub.subarray(33)))).toBe(false);
    expect(ok(cat(hex("04"), key.pub.subarray(1, 33), be32(P)))).toBe(false);
    expect(ok(cat(hex("04"), new Uint8Array(64).fill(0xff)))).toBe(false);
    // compressed: x >= p, and an x for which x^3 - 3x + b has no square root
    expect(ok(cat(hex("02"), be32(P)))).toBe(false);
    expect(uncompressP256(cat(hex("02"), be32(P)))).toBeNull();
    const nonResidueX = smallX(false);
    expect(uncompressP256(cat(hex("02"), be32(nonResidueX)))).toBeNull();
    expect(uncompressP256(cat(hex("03"), be32(nonResidueX)))).toBeNull();
    expect(uncompressP256(cat(hex("04"), new Uint8Array(31)))).toBeNull();
    // r, s range
    const r = sig.subarray(0, 32);
    const s = sig.subarray(32);
    const zero = new Uint8Array(32);
    for (const [what, bad] of [
      ["r = 0", cat(zero, s)],
      ["s = 0", cat(r, zero)],
      ["r = n", cat(be32(N), s)],
      ["s = n", cat(r, be32(N))],
      ["r = 2^256 - 1", cat(new Uint8Array(32).fill(0xff), s)],
      ["s = 2^256 - 1", cat(r, new Uint8Array(32).fill(0xff))],
      ["both 0", new Uint8Array(64)],
    ] as const) {
      expect(ok(key.pub, bad), what).toBe(false);
    }
    expect(ok(key.pub, sig.subarray(0, 63))).toBe(false);
    expect(ok(key.pub, cat(sig, new Uint8Array(1)))).toBe(false);
    expect(() => ecdsaP256Verify(key.pub, "qhx" as unknown as Uint8Array, sig, flavour)).toThrow(
      expect.objectContaining({ code: "QHX_CRYPTO_TYPE" }),
    );
    expect(() => ecdsaP256Verify([4] as unknown as Uint8Array, msg, sig, flavour)).toThrow(
      expect.objectContaining({ code: "QHX_CRYPTO_TYPE" }),
    );
  });
});

// ---- a small affine reference for P-256 in BigInt (test-only; slow but obviously correct) ----
const B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;
const G = {
  x: 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n,
  y: 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n,
};
type Pt = { x: bigint; y: bigint } | null;
const mod = (a: bigint, m: bigint) => ((a % m) + m) % m;
function pow(b: bigint, e: bigint, m: bigint): bigint {
  let r = 1n;
  b = mod(b, m);
  for (; e > 0n; e >>= 1n, b = (b * b) % m) if (e & 1n) r = (r * b) % m;
  return r;
}
const inv = (a: bigint, m: bigint) => pow(a, m - 2n, m);
function add(p1: Pt, p2: Pt): Pt {
  if (!p1) return p2;
  if (!p2) return p1;
  if (p1.x === p2.x && mod(p1.y + p2.y, P) === 0n) return null;
  const l =
    p1.x === p2.x
      ? mod((3n * p1.x * p1.x - 3n) * inv(2n * p1.y, P), P)
      : mod((p2.y - p1.y) * inv(p2.x - p1.x, P), P);
  const x = mod(l * l - p1.x - p2.x, P);
  return { x, y: mod(l * (p1.x - x) - p1.y, P) };
}
function mul(k: bigint, pt: Pt): Pt {
  let r: Pt = null;
  for (let i = 255; i >= 0; i--) {
    r = add(r, r);
    if ((k >> BigInt(i)) & 1n) r = add(r, pt);
  }
  return r;
}
const rhs = (x: bigint) => mod(x * x * x - 3n * x + B, P);
/** The smallest x >= 2 whose x^3 - 3x + b is (or is not) a square mod p. */
function smallX(square: boolean): bigint {
  for (let x = 2n; ; x++) if ((pow(rhs(x), (P - 1n) / 2n, P) === 1n) === square) return x;
}

describe.each(FLAVOURS)("ECDSA P-256 kernel, non-canonical coordinates (%s)", (flavour) => {
  it("accepts a point with small x and rejects the same point written with x + p", () => {
    const x = smallX(true);
    const Q = { x, y: pow(rhs(x), (P + 1n) / 4n, P) };
    // nobody knows Q's private key, but a (digest, r, s) triple for Q can be made from R = aG + bQ:
    // r = x(R), s = r / b, digest = a s  (then u1 = a, u2 = b)
    const a = 0x1234567890abcdefn;
    const b = 0xfedcba0987654321n;
    const R = add(mul(a, G), mul(b, Q))!;
    const r = mod(R.x, N);
    const s = mod(r * inv(b, N), N);
    const digest = be32(mod(a * s, N));
    const sig = cat(be32(r), be32(s));
    const pub = cat(hex("04"), be32(Q.x), be32(Q.y));
    expect(ecdsaP256VerifyDigest(pub, digest, sig, flavour)).toBe(true);
    expect(ecdsaP256VerifyDigest(compress(pub), digest, sig, flavour)).toBe(true);
    expect(x + P < 1n << 256n).toBe(true);
    expect(ecdsaP256VerifyDigest(cat(hex("04"), be32(Q.x + P), be32(Q.y)), digest, sig, flavour)).toBe(false);
    expect(ecdsaP256VerifyDigest(cat(hex("02"), be32(Q.x + P)), digest, sig, flavour)).toBe(false);
    // u1 G + u2 Q = infinity: with Q = kG for a known k, a = -b k makes R the point at infinity
    const k = 0x77n;
    const Qk = mul(k, G)!;
    const pubK = cat(hex("04"), be32(Qk.x), be32(Qk.y));
    const sInf = 5n;
    const bInf = mod(r * inv(sInf, N), N); // u2 for (r, s = 5)
    const aInf = mod(-bInf * k, N); // u1 = digest / s
    expect(add(mul(aInf, G), mul(bInf, Qk))).toBeNull();
    const digestInf = be32(mod(aInf * sInf, N));
    expect(ecdsaP256VerifyDigest(pubK, digestInf, cat(be32(r), be32(sInf)), flavour)).toBe(false);
  });
});

describe.each(FLAVOURS)("P-256 kernel arithmetic against BigInt (%s)", (flavour) => {
  type Arith = { p256Arith(op: number, r: number, a: number, b: number): number };
  const w = () => loadCryptoWasm(flavour) as unknown as Arith & ReturnType<typeof loadCryptoWasm>;
  const le = (x: bigint) => be32(x).reverse();
  const fromLe = (b: Uint8Array) => big(b.slice().reverse());
  function call(op: number, a: bigint, b: bigint): bigint {
    const k = w();
    const io = k.ioPtr();
    const mem = new Uint8Array(k.memory.buffer);
    mem.set(le(a), io);
    mem.set(le(b), io + 32);
    expect(k.p256Arith(op, io + 64, io, io + 32)).toBe(1);
    return fromLe(new Uint8Array(k.memory.buffer, io + 64, 32));
  }
  const TOP = (1n << 256n) - 1n;
  const edges = [
    0n,
    1n,
    2n,
    3n,
    P - 2n,
    P - 1n,
    P,
    P + 1n,
    P + 2n,
    TOP,
    TOP - 1n,
    1n << 255n,
    (1n << 255n) - 1n,
    1n << 224n,
    (1n << 224n) - 1n,
    1n << 192n,
    (1n << 192n) - 1n,
    1n << 96n,
    (1n << 96n) - 1n,
    (1n << 32n) - 1n,
    1n << 32n,
    (1n << 256n) - P,
    N - 1n,
    N,
    0xffffffff00000000ffffffff00000000ffffffff00000000ffffffff00000000n,
  ];
  const rnd = prng(0xa417);
  const randoms = Array.from({ length: 60 }, () => big(bytes(rnd, 32)));

  it("field multiply, square, add, subtract and 8a - 3b match on edge values and random values", () => {
    const vals = [...edges, ...randoms];
    const bad: string[] = [];
    for (const a of vals) {
      if (call(1, a, 0n) !== mod(a * a, P)) bad.push(`sqr ${a.toString(16)}`);
      for (const b of vals) {
        const want = [mod(a * b, P), a, mod(a + b, P), mod(a - b, P), mod(8n * a - 3n * b, P)];
        for (const op of [0, 2, 3, 4]) {
          if (call(op, a, b) !== want[op]) bad.push(`op ${op} ${a.toString(16)} ${b.toString(16)}`);
        }
      }
    }
    expect(bad).toEqual([]);
  });

  it("scalar inverse and Montgomery product mod n match", () => {
    const R = 1n << 256n;
    const vals = [
      1n,
      2n,
      3n,
      N - 1n,
      N - 2n,
      (N + 1n) / 2n,
      1n << 255n,
      P - N,
      ...randoms.map((x) => mod(x, N - 1n) + 1n),
    ];
    for (const a of vals) {
      expect(call(5, a, 0n), `inverse of ${a.toString(16)}`).toBe(inv(a, N));
      for (const b of vals.slice(0, 12)) expect(call(6, a, b)).toBe(mod(a * b * inv(R % N, N), N));
    }
    expect(w().p256Arith(99, 0, 0, 0)).toBe(0);
    // scalar operands out of range are refused (an inverse of 0 does not exist)
    const k = w();
    const io = k.ioPtr();
    const mem = new Uint8Array(k.memory.buffer);
    for (const [op, a, b] of [
      [5, 0n, 0n],
      [5, N, 0n],
      [6, N, 1n],
      [6, 1n, TOP],
    ] as const) {
      mem.set(le(a), io);
      mem.set(le(b), io + 32);
      expect(k.p256Arith(op, io + 64, io, io + 32), `op ${op}`).toBe(0);
    }
  });
});

describe("strict DER signature parsing", () => {
  const r = hex("00" + "8f".repeat(32)); // needs the 0x00 pad
  const s = hex("01".repeat(32));
  const int = (v: Uint8Array) => cat(new Uint8Array([0x02, v.length]), v);
  const seq = (body: Uint8Array) => cat(new Uint8Array([0x30, body.length]), body);
  const good = seq(cat(int(r), int(s)));

  it("accepts canonical DER and returns r || s", () => {
    expect(toHex(derToP1363(good)!)).toBe("8f".repeat(32) + "01".repeat(32));
    const small = derToP1363(seq(cat(int(hex("01")), int(hex("7f")))))!;
    expect(big(small.subarray(0, 32))).toBe(1n);
    expect(big(small.subarray(32))).toBe(127n);
    expect(big(derToP1363(seq(cat(int(hex("0080")), int(hex("00")))))!.subarray(0, 32))).toBe(128n);
  });

  it.each([
    ["empty", new Uint8Array(0)],
    ["wrong outer tag", cat(hex("31"), good.subarray(1))],
    ["long-form outer length", cat(hex("3081"), good.subarray(1))],
    ["outer length too long", cat(hex("30"), new Uint8Array([good[1]! + 1]), good.subarray(2))],
    ["outer length too short", cat(hex("30"), new Uint8Array([good[1]! - 1]), good.subarray(2))],
    ["trailing byte", cat(good, hex("00"))],
    ["trailing byte inside the sequence", seq(cat(int(r), int(s), hex("00")))],
    ["missing s", seq(int(r))],
    ["wrong integer tag", seq(cat(hex("03"), int(r).subarray(1), int(s)))],
    ["empty integer", seq(cat(hex("0200"), int(s)))],
    ["negative r", seq(cat(int(r.subarray(1)), int(s)))],
    ["non-minimal zero pad", seq(cat(int(cat(hex("00"), s)), int(s)))],
    ["zero padded zero", seq(cat(int(hex("0000")), int(s)))],
    ["long-form integer length", seq(cat(hex("028121"), r, int(s)))],
    ["33-byte magnitude", seq(cat(int(cat(hex("01"), s)), int(s)))],
    ["integer runs past the end", cat(hex("3006022001020304"))],
    ["three integers", seq(cat(int(r), int(s), int(s)))],
  ])("rejects %s", (_what, der) => {
    expect(derToP1363(der)).toBeNull();
    expect(ecdsaP256VerifyDer(new Uint8Array(65), new Uint8Array(0), der)).toBe(false);
  });
});
