/**
 * The kernels packaged as a WebAssembly component (wit/qhx-crypto.wit, built by
 * scripts/build-component.mjs with jco) and transpiled by jco for Node: the same answers as the core
 * module (host/crypto's Wasm backend) and node:crypto, the WIT world as declared, errors as typed.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { componentWit } from "@bytecodealliance/jco";
import { describe, expect, it } from "vitest";
import { pqProvider, type MlDsaParams, type MlKemParams } from "../../host/crypto/index.ts";

interface Keypair {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}
interface ComponentApi {
  mldsa: {
    keygen(p: string, seed: Uint8Array): Keypair;
    sign(p: string, sk: Uint8Array, msg: Uint8Array, ctx: Uint8Array, rnd: Uint8Array): Uint8Array;
    verify(p: string, pk: Uint8Array, msg: Uint8Array, sig: Uint8Array, ctx: Uint8Array): boolean;
  };
  mlkem: {
    keygen(p: string, seed: Uint8Array): Keypair;
    encapsulate(
      p: string,
      ek: Uint8Array,
      m: Uint8Array,
    ): { cipherText: Uint8Array; sharedSecret: Uint8Array };
    decapsulate(p: string, dk: Uint8Array, ct: Uint8Array): Uint8Array;
  };
}

const root = new URL("../../", import.meta.url);
const componentJs = new URL("build/component/qhx-crypto.js", root);
const c = (await import(componentJs.href)) as ComponentApi;
const core = pqProvider("wasm");

const DSA: [MlDsaParams, string][] = [
  ["ML-DSA-44", "mldsa44"],
  ["ML-DSA-65", "mldsa65"],
  ["ML-DSA-87", "mldsa87"],
];
const KEM: [MlKemParams, string][] = [
  ["ML-KEM-512", "mlkem512"],
  ["ML-KEM-768", "mlkem768"],
  ["ML-KEM-1024", "mlkem1024"],
];

/** A deterministic byte stream so that failures reproduce. */
function rng(seed: number): (n: number) => Uint8Array {
  let ctr = 0;
  return (n) => {
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const h = crypto.createHash("sha256").update(`${seed}:${ctr++}`).digest();
      out.set(h.subarray(0, Math.min(32, n - off)), off);
      off += 32;
    }
    return out;
  };
}

function componentError(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return String((e as { payload?: unknown }).payload);
  }
  return "none";
}

describe("WebAssembly component of the kernels", () => {
  it("is a component exporting exactly the WIT world, importing nothing", async () => {
    const wit = await componentWit(fs.readFileSync(new URL("build/qhx-crypto.component.wasm", root)));
    expect(wit).toContain("export qhx:crypto/mldsa@0.1.0;");
    expect(wit).toContain("export qhx:crypto/mlkem@0.1.0;");
    expect(wit).toContain("export qhx:crypto/types@0.1.0;");
    expect(wit).not.toMatch(/^\s*import /m);
    expect(Object.keys(c.mldsa).sort()).toEqual(["keygen", "sign", "verify"]);
    expect(Object.keys(c.mlkem).sort()).toEqual(["decapsulate", "encapsulate", "keygen"]);
  });

  for (const [params, name] of DSA) {
    it(`${params}: keys, deterministic and hedged signatures equal the core module's; verification agrees`, () => {
      const r = rng(params.length * 7 + 1);
      for (let i = 0; i < 12; i++) {
        const seed = r(32);
        const kp = c.mldsa.keygen(name, seed);
        const ref = core.mlDsa.keygen(params, seed);
        expect(Buffer.from(kp.publicKey).equals(ref.publicKey)).toBe(true);
        expect(Buffer.from(kp.secretKey).equals(ref.secretKey)).toBe(true);
        const msg = r(i * 97);
        const ctx = r(i * 23);
        const rnd = i % 2 ? new Uint8Array(32) : r(32);
        const sig = c.mldsa.sign(name, kp.secretKey, msg, ctx, rnd);
        const refSig = core.mlDsa.sign(params, ref.secretKey, msg, { context: ctx, random: rnd });
        expect(Buffer.from(sig).equals(refSig)).toBe(true);
        expect(c.mldsa.verify(name, kp.publicKey, msg, sig, ctx)).toBe(true);
        // node:crypto (OpenSSL) agrees too, on the empty context it supports
        if (ctx.length === 0) {
          const pub = crypto.createPublicKey({
            key: { kty: "AKP", alg: params, pub: Buffer.from(kp.publicKey).toString("base64url") },
            format: "jwk",
          });
          expect(crypto.verify(null, msg, pub, sig)).toBe(true);
        }
        // one flipped bit anywhere: the message, the signature, the context
        const badSig = Uint8Array.from(sig);
        badSig[(i * 131) % badSig.length]! ^= 1 << (i % 8);
        expect(c.mldsa.verify(name, kp.publicKey, msg, badSig, ctx)).toBe(false);
        expect(c.mldsa.verify(name, kp.publicKey, Buffer.concat([msg, Buffer.from([0])]), sig, ctx)).toBe(
          false,
        );
        expect(c.mldsa.verify(name, kp.publicKey, msg, sig, Buffer.concat([ctx, Buffer.from([1])]))).toBe(
          false,
        );
      }
    });
  }

  it("ML-DSA: malformed inputs are typed errors (sign) or false (verify), never traps", () => {
    const kp = c.mldsa.keygen("mldsa65", new Uint8Array(32).fill(3));
    const none = new Uint8Array(0);
    expect(componentError(() => c.mldsa.keygen("mldsa65", new Uint8Array(31)))).toBe("bad-length");
    expect(
      componentError(() => c.mldsa.sign("mldsa65", kp.secretKey.subarray(1), none, none, new Uint8Array(32))),
    ).toBe("bad-length");
    expect(
      componentError(() =>
        c.mldsa.sign("mldsa65", kp.secretKey, none, new Uint8Array(256), new Uint8Array(32)),
      ),
    ).toBe("bad-context");
    expect(componentError(() => c.mldsa.sign("mldsa44", kp.secretKey, none, none, new Uint8Array(32)))).toBe(
      "bad-length",
    );
    const sig = c.mldsa.sign("mldsa65", kp.secretKey, none, none, new Uint8Array(32));
    expect(c.mldsa.verify("mldsa65", kp.publicKey, none, sig.subarray(1), none)).toBe(false);
    expect(c.mldsa.verify("mldsa65", kp.publicKey.subarray(1), none, sig, none)).toBe(false);
    expect(c.mldsa.verify("mldsa65", kp.publicKey, none, sig, new Uint8Array(256))).toBe(false);
    expect(c.mldsa.verify("mldsa87", kp.publicKey, none, sig, none)).toBe(false);
    // a large message crosses the arena and is reset after the call
    const big = new Uint8Array(3_000_000).fill(7);
    const bigSig = c.mldsa.sign("mldsa65", kp.secretKey, big, none, new Uint8Array(32));
    expect(c.mldsa.verify("mldsa65", kp.publicKey, big, bigSig, none)).toBe(true);
    expect(core.mlDsa.verify("ML-DSA-65", kp.publicKey, big, bigSig)).toBe(true);
  });

  for (const [params, name] of KEM) {
    it(`${params}: keys, ciphertexts and shared secrets equal the core module's; implicit rejection`, () => {
      const r = rng(params.length * 11 + 5);
      for (let i = 0; i < 12; i++) {
        const seed = r(64);
        const kp = c.mlkem.keygen(name, seed);
        const ref = core.mlKem.keygen(params, seed);
        expect(Buffer.from(kp.publicKey).equals(ref.publicKey)).toBe(true);
        expect(Buffer.from(kp.secretKey).equals(ref.secretKey)).toBe(true);
        const m = r(32);
        const enc = c.mlkem.encapsulate(name, kp.publicKey, m);
        const refEnc = core.mlKem.encapsulate(params, ref.publicKey, m);
        expect(Buffer.from(enc.cipherText).equals(refEnc.cipherText)).toBe(true);
        expect(Buffer.from(enc.sharedSecret).equals(refEnc.sharedSecret)).toBe(true);
        expect(
          Buffer.from(c.mlkem.decapsulate(name, kp.secretKey, enc.cipherText)).equals(enc.sharedSecret),
        ).toBe(true);
        const bad = Uint8Array.from(enc.cipherText);
        bad[i * 17]! ^= 0x80;
        const rejected = c.mlkem.decapsulate(name, kp.secretKey, bad);
        expect(Buffer.from(rejected).equals(enc.sharedSecret)).toBe(false);
        expect(Buffer.from(rejected).equals(core.mlKem.decapsulate(params, ref.secretKey, bad))).toBe(true);
      }
    });
  }

  it("ML-KEM: wrong lengths and keys failing the FIPS 203 checks are typed errors", () => {
    const kp = c.mlkem.keygen("mlkem768", new Uint8Array(64).fill(9));
    expect(componentError(() => c.mlkem.keygen("mlkem768", new Uint8Array(32)))).toBe("bad-length");
    expect(
      componentError(() => c.mlkem.encapsulate("mlkem768", kp.publicKey.subarray(1), new Uint8Array(32))),
    ).toBe("bad-length");
    expect(componentError(() => c.mlkem.decapsulate("mlkem512", kp.secretKey, new Uint8Array(1088)))).toBe(
      "bad-length",
    );
    // encapsulation key with a coefficient >= q: the modulus check
    const ek = Uint8Array.from(kp.publicKey);
    ek[0] = 0xff;
    ek[1] = ek[1]! | 0x0f;
    expect(componentError(() => c.mlkem.encapsulate("mlkem768", ek, new Uint8Array(32)))).toBe("bad-key");
    // decapsulation key whose H(ek) does not match: the hash check
    const dk = Uint8Array.from(kp.secretKey);
    dk[dk.length - 40]! ^= 1;
    expect(componentError(() => c.mlkem.decapsulate("mlkem768", dk, new Uint8Array(1088)))).toBe("bad-key");
  });
});
