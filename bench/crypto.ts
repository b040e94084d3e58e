/**
 * `npm run bench -- crypto`: ML-DSA and ML-KEM per operation (µs/op) on the Wasm kernels (SIMD and
 * scalar builds, through the host API), node:crypto (OpenSSL, with pre-imported KeyObjects) and
 * @noble/post-quantum, measured in the same run, with the kernel/node:crypto ratios.
 * The kernels keep the expansion of the last key (A, tr, NTT(t1); for ML-KEM t^, A and H(ek)), so the
 * plain rows are the repeated-key case; the "new key" rows defeat that cache on every call.
 */
import crypto from "node:crypto";
import { ml_dsa44, ml_dsa65, ml_dsa87 } from "@noble/post-quantum/ml-dsa.js";
import { ml_kem512, ml_kem768, ml_kem1024 } from "@noble/post-quantum/ml-kem.js";
import { pqProvider, type MlDsaParams, type MlKemParams } from "../host/crypto/index.ts";
import { opsPerSec, table } from "./harness.ts";

const MS = Number(process.env["QHX_BENCH_MS"] ?? 600);
const us = (opsPerSecond: number) => 1e6 / opsPerSecond;
const f = (x: number) => (x >= 100 ? Math.round(x).toString() : x.toFixed(1));

async function time(fn: () => unknown, ms = MS): Promise<number> {
  return us(await opsPerSec(fn, ms, Math.min(200, ms / 3)));
}

export async function run(): Promise<void> {
  const simd = pqProvider("wasm", "simd");
  const scalar = pqProvider("wasm", "scalar");
  process.stdout.write(
    `Node ${process.versions.node}, OpenSSL ${process.versions.openssl}; µs/op (lower is better); ` +
      `ratio = kernel SIMD / node:crypto\n\n`,
  );
  const rows: string[][] = [
    ["op", "wasm SIMD", "wasm scalar", "node:crypto", "noble", "SIMD/node", "scalar/node", "goal"],
  ];
  const row = (op: string, s: number, sc: number, n: number, nb: number, goal = "") =>
    rows.push([op, f(s), f(sc), f(n), f(nb), (s / n).toFixed(2), (sc / n).toFixed(2), goal]);

  const dsaNoble = { "ML-DSA-44": ml_dsa44, "ML-DSA-65": ml_dsa65, "ML-DSA-87": ml_dsa87 } as const;
  for (const params of ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"] as MlDsaParams[]) {
    const noble = dsaNoble[params];
    const type = params.toLowerCase();
    const seed = crypto.randomBytes(32);
    const { publicKey, secretKey } = simd.mlDsa.keygen(params, seed);
    const priv = crypto.createPrivateKey({ key: seed, format: "raw-seed", asymmetricKeyType: type } as never);
    const pub = crypto.createPublicKey(priv);
    const msg = crypto.randomBytes(64);
    const sig = simd.mlDsa.sign(params, secretKey, msg);
    row(
      `${params} keygen`,
      await time(() => simd.mlDsa.keygen(params, seed)),
      await time(() => scalar.mlDsa.keygen(params, seed)),
      await time(() =>
        crypto
          .createPrivateKey({ key: seed, format: "raw-seed", asymmetricKeyType: type } as never)
          .export({ format: "der", type: "pkcs8" }),
      ),
      await time(() => noble.keygen(seed), MS / 3),
    );
    row(
      `${params} sign`,
      await time(() => simd.mlDsa.sign(params, secretKey, msg)),
      await time(() => scalar.mlDsa.sign(params, secretKey, msg)),
      await time(() => crypto.sign(null, msg, priv)),
      await time(() => noble.sign(msg, secretKey), MS / 3),
      params === "ML-DSA-65" ? "<= 1.00" : "",
    );
    row(
      `${params} verify`,
      await time(() => simd.mlDsa.verify(params, publicKey, msg, sig)),
      await time(() => scalar.mlDsa.verify(params, publicKey, msg, sig)),
      await time(() => crypto.verify(null, msg, pub, sig)),
      await time(() => noble.verify(sig, msg, publicKey), MS / 3),
      params === "ML-DSA-65" ? "<= 0.80" : "",
    );
    // a different public key on every call: no expansion can be reused (kernel alternates two keys,
    // node:crypto imports the raw key each time)
    const other = simd.mlDsa.keygen(params);
    const otherSig = simd.mlDsa.sign(params, other.secretKey, msg);
    let flip = false;
    const cold = (p: typeof simd) => () => {
      flip = !flip;
      return flip
        ? p.mlDsa.verify(params, publicKey, msg, sig)
        : p.mlDsa.verify(params, other.publicKey, msg, otherSig);
    };
    row(
      `${params} verify, new key`,
      await time(cold(simd)),
      await time(cold(scalar)),
      await time(() =>
        crypto.verify(
          null,
          msg,
          crypto.createPublicKey({ key: publicKey, format: "raw-public", asymmetricKeyType: type } as never),
          sig,
        ),
      ),
      await time(() => noble.verify(sig, msg, publicKey), MS / 3),
      params === "ML-DSA-65" ? "<= 0.80" : "",
    );
  }

  const kemNoble = { "ML-KEM-512": ml_kem512, "ML-KEM-768": ml_kem768, "ML-KEM-1024": ml_kem1024 } as const;
  for (const params of ["ML-KEM-512", "ML-KEM-768", "ML-KEM-1024"] as MlKemParams[]) {
    const noble = kemNoble[params];
    const type = params.toLowerCase();
    const seed = crypto.randomBytes(64);
    const { publicKey, secretKey } = simd.mlKem.keygen(params, seed);
    const priv = crypto.createPrivateKey({ key: seed, format: "raw-seed", asymmetricKeyType: type } as never);
    const pub = crypto.createPublicKey(priv);
    const { cipherText } = simd.mlKem.encapsulate(params, publicKey);
    const k = {
      simd: [0, 0, 0],
      scalar: [0, 0, 0],
      node: [0, 0, 0],
      noble: [0, 0, 0],
    };
    k.simd = [
      await time(() => simd.mlKem.keygen(params, seed)),
      await time(() => simd.mlKem.encapsulate(params, publicKey)),
      await time(() => simd.mlKem.decapsulate(params, secretKey, cipherText)),
    ];
    k.scalar = [
      await time(() => scalar.mlKem.keygen(params, seed)),
      await time(() => scalar.mlKem.encapsulate(params, publicKey)),
      await time(() => scalar.mlKem.decapsulate(params, secretKey, cipherText)),
    ];
    k.node = [
      await time(() =>
        crypto
          .createPrivateKey({ key: seed, format: "raw-seed", asymmetricKeyType: type } as never)
          .export({ format: "der", type: "pkcs8" }),
      ),
      await time(() => crypto.encapsulate(pub)),
      await time(() => crypto.decapsulate(priv, cipherText)),
    ];
    k.noble = [
      await time(() => noble.keygen(seed), MS / 3),
      await time(() => noble.encapsulate(publicKey), MS / 3),
      await time(() => noble.decapsulate(cipherText, secretKey), MS / 3),
    ];
    const ops = ["keygen", "encaps", "decaps"];
    for (let i = 0; i < 3; i++) row(`${params} ${ops[i]}`, k.simd[i]!, k.scalar[i]!, k.node[i]!, k.noble[i]!);
    const sum = (a: number[]) => a[1]! + a[2]!;
    row(
      `${params} encaps+decaps`,
      sum(k.simd),
      sum(k.scalar),
      sum(k.node),
      sum(k.noble),
      params === "ML-KEM-768" ? "<= 1.00" : "",
    );
    // a different encapsulation key on every call (kernel alternates two keys; node imports each time)
    const other = simd.mlKem.keygen(params).publicKey;
    let flip = false;
    const cold = (p: typeof simd) => () => {
      flip = !flip;
      return p.mlKem.encapsulate(params, flip ? publicKey : other);
    };
    row(
      `${params} encaps, new key`,
      await time(cold(simd)),
      await time(cold(scalar)),
      await time(() =>
        crypto.encapsulate(
          crypto.createPublicKey({ key: publicKey, format: "raw-public", asymmetricKeyType: type } as never),
        ),
      ),
      k.noble[1]!,
    );
  }
  process.stdout.write(`${table(rows)}\n`);
}
