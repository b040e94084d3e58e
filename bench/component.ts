/**
 * `npm run bench -- component`: the per-call cost of the kernels behind the Component Model
 * (build/qhx-crypto.component.wasm transpiled by jco: canonical-ABI lowering of every list argument,
 * lifting of the results, post-return) against the same kernels called as a core module through
 * host/crypto (copy into static buffers, call, copy out), measured in the same run. Both are SIMD builds.
 */
import crypto from "node:crypto";
import { pqProvider } from "../host/crypto/index.ts";
import { opsPerSec, table } from "./harness.ts";

interface ComponentApi {
  mldsa: {
    keygen(p: string, seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array };
    sign(p: string, sk: Uint8Array, msg: Uint8Array, ctx: Uint8Array, rnd: Uint8Array): Uint8Array;
    verify(p: string, pk: Uint8Array, msg: Uint8Array, sig: Uint8Array, ctx: Uint8Array): boolean;
  };
  mlkem: {
    keygen(p: string, seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array };
    encapsulate(
      p: string,
      ek: Uint8Array,
      m: Uint8Array,
    ): { cipherText: Uint8Array; sharedSecret: Uint8Array };
    decapsulate(p: string, dk: Uint8Array, ct: Uint8Array): Uint8Array;
  };
}

const MS = Number(process.env["QHX_BENCH_MS"] ?? 600);
const us = async (fn: () => unknown) => 1e6 / (await opsPerSec(fn, MS, Math.min(200, MS / 3)));
const f = (x: number) => (x >= 100 ? Math.round(x).toString() : x.toFixed(2));

export async function run(): Promise<void> {
  const c = (await import(new URL("../build/component/qhx-crypto.js", import.meta.url).href)) as ComponentApi;
  const core = pqProvider("wasm", "simd");
  const none = new Uint8Array(0);
  const zero32 = new Uint8Array(32);
  const dsa = core.mlDsa.keygen("ML-DSA-65", crypto.randomBytes(32));
  const msg = crypto.randomBytes(64);
  const sig = core.mlDsa.sign("ML-DSA-65", dsa.secretKey, msg, { random: false });
  const kem = core.mlKem.keygen("ML-KEM-768", crypto.randomBytes(64));
  const m = crypto.randomBytes(32);
  const enc = core.mlKem.encapsulate("ML-KEM-768", kem.publicKey, m);
  const badSig = sig.subarray(1);

  const rows: string[][] = [["op (µs/call)", "component (jco)", "core module", "extra µs/call", "ratio"]];
  const row = async (op: string, comp: () => unknown, mod: () => unknown) => {
    const a = await us(comp);
    const b = await us(mod);
    rows.push([op, f(a), f(b), f(a - b), (a / b).toFixed(2)]);
  };
  await row(
    "ML-DSA-65 verify, malformed (call overhead)",
    () => c.mldsa.verify("mldsa65", dsa.publicKey, msg, badSig, none),
    () => core.mlDsa.verify("ML-DSA-65", dsa.publicKey, msg, badSig),
  );
  await row(
    "ML-DSA-65 verify",
    () => c.mldsa.verify("mldsa65", dsa.publicKey, msg, sig, none),
    () => core.mlDsa.verify("ML-DSA-65", dsa.publicKey, msg, sig),
  );
  await row(
    "ML-DSA-65 sign (deterministic)",
    () => c.mldsa.sign("mldsa65", dsa.secretKey, msg, none, zero32),
    () => core.mlDsa.sign("ML-DSA-65", dsa.secretKey, msg, { random: false }),
  );
  await row(
    "ML-KEM-768 encapsulate",
    () => c.mlkem.encapsulate("mlkem768", kem.publicKey, m),
    () => core.mlKem.encapsulate("ML-KEM-768", kem.publicKey, m),
  );
  await row(
    "ML-KEM-768 decapsulate",
    () => c.mlkem.decapsulate("mlkem768", kem.secretKey, enc.cipherText),
    () => core.mlKem.decapsulate("ML-KEM-768", kem.secretKey, enc.cipherText),
  );
  process.stdout.write(`Node ${process.versions.node}; component = jco-transpiled, core = host/crypto\n\n`);
  process.stdout.write(table(rows) + "\n");
}
