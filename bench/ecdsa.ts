/**
 * `npm run bench -- ecdsa`: ES256 (ECDSA P-256 + SHA-256) verification and SHA-256 on the Wasm kernels
 * (SIMD and scalar builds, through host/crypto/p256.ts) beside node:crypto (OpenSSL) measured in the
 * same run, µs/op and the kernel/node:crypto ratios. The kernel keeps no per-key state, so the
 * "new key" rows only add node:crypto's key import to the reference. Each row runs its three
 * candidates in turn for several short rounds and keeps each one's best round, so a busy machine
 * disturbs the ratios less.
 */
import crypto from "node:crypto";
import { ecdsaP256Verify, ecdsaP256VerifyDigest, sha256 } from "../host/crypto/p256.ts";
import { opsPerSec, table } from "./harness.ts";

const MS = Number(process.env["QHX_BENCH_MS"] ?? 600);
/** QHX_BENCH_CLOCK=cpu measures CPU time per op instead of wall time (steadier on a shared machine). */
const CPU = process.env["QHX_BENCH_CLOCK"] === "cpu";
const us = (opsPerSecond: number) => 1e6 / opsPerSecond;
const f = (x: number) => (x >= 100 ? Math.round(x).toString() : x.toFixed(2));

const ROUNDS = 5;

async function time(fn: () => unknown, ms = MS): Promise<number> {
  if (CPU) return cpuTime(fn, ms);
  return us(await opsPerSec(fn, ms, Math.min(200, ms / 3)));
}

/** µs of this process's CPU time per call (all candidates here are synchronous, on this thread). */
function cpuTime(fn: () => unknown, ms: number): number {
  const warm = performance.now() + Math.min(200, ms / 3);
  while (performance.now() < warm) fn();
  const c0 = process.cpuUsage();
  let n = 0;
  let spent = 0;
  while (spent < ms * 1000) {
    for (let i = 0; i < 16; i++) fn();
    n += 16;
    const c = process.cpuUsage(c0);
    spent = c.user + c.system;
  }
  return spent / n;
}

/** Best µs/op of each candidate over ROUNDS interleaved rounds. */
async function best(...fns: (() => unknown)[]): Promise<number[]> {
  const out = fns.map(() => Infinity);
  for (let r = 0; r < ROUNDS; r++) {
    for (let i = 0; i < fns.length; i++) out[i] = Math.min(out[i]!, await time(fns[i]!, MS / ROUNDS));
  }
  return out;
}

function must(ok: boolean, what: string): void {
  if (!ok) throw new Error(`bench setup: ${what} did not verify`);
}

export async function run(): Promise<void> {
  process.stdout.write(
    `Node ${process.versions.node}, OpenSSL ${process.versions.openssl}; µs/op (lower is better); ` +
      `ratio = kernel / node:crypto; ${CPU ? "CPU time" : "wall time"} (QHX_BENCH_CLOCK=cpu|wall)\n\n`,
  );
  const rows: string[][] = [
    ["op", "wasm SIMD", "wasm scalar", "node:crypto", "SIMD/node", "scalar/node", "goal"],
  ];
  const row = ([s, sc, n]: number[], op: string, goal = "") =>
    rows.push([op, f(s!), f(sc!), f(n!), (s! / n!).toFixed(2), (sc! / n!).toFixed(2), goal]);

  const keys = [0, 1].map(() => {
    const { publicKey, privateKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = publicKey.export({ format: "jwk" });
    const raw = new Uint8Array(
      Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url")]),
    );
    return { publicKey, privateKey, jwk, raw };
  });
  const msg = crypto.randomBytes(256); // about the size of a JWT-SVID's signing input
  const sigs = keys.map(
    (k) => new Uint8Array(crypto.sign("sha256", msg, { key: k.privateKey, dsaEncoding: "ieee-p1363" })),
  );
  const digest = new Uint8Array(crypto.createHash("sha256").update(msg).digest());
  const k0 = keys[0]!;
  const sig0 = sigs[0]!;
  for (const fl of ["simd", "scalar"] as const) {
    must(ecdsaP256Verify(k0.raw, msg, sig0, fl), `${fl} ES256`);
    must(ecdsaP256VerifyDigest(k0.raw, digest, sig0, fl), `${fl} digest`);
  }
  const nodeSig = { key: k0.publicKey, dsaEncoding: "ieee-p1363" } as const;
  must(crypto.verify("sha256", msg, nodeSig, sig0), "node ES256");

  row(
    await best(
      () => ecdsaP256Verify(k0.raw, msg, sig0, "simd"),
      () => ecdsaP256Verify(k0.raw, msg, sig0, "scalar"),
      () => crypto.verify("sha256", msg, nodeSig, sig0),
    ),
    "ES256 verify (256-byte message)",
    "< 150 µs",
  );
  row(
    await best(
      () => ecdsaP256VerifyDigest(k0.raw, digest, sig0, "simd"),
      () => ecdsaP256VerifyDigest(k0.raw, digest, sig0, "scalar"),
      () => crypto.verify(null, digest, nodeSig, sig0),
    ),
    "P-256 verify, digest given",
  );
  let flip = false;
  const cold = (fl: "simd" | "scalar") => () => {
    flip = !flip;
    const i = flip ? 1 : 0;
    return ecdsaP256Verify(keys[i]!.raw, msg, sigs[i]!, fl);
  };
  row(
    await best(cold("simd"), cold("scalar"), () => {
      flip = !flip;
      const i = flip ? 1 : 0;
      const key = crypto.createPublicKey({ key: keys[i]!.jwk, format: "jwk" });
      return crypto.verify("sha256", msg, { key, dsaEncoding: "ieee-p1363" }, sigs[i]!);
    }),
    "ES256 verify, new key each call",
  );
  for (const n of [64, 1024, 16384]) {
    const data = crypto.randomBytes(n);
    row(
      await best(
        () => sha256(data, "simd"),
        () => sha256(data, "scalar"),
        () => crypto.createHash("sha256").update(data).digest(),
      ),
      `SHA-256 ${n} bytes`,
    );
  }
  process.stdout.write(`${table(rows)}\n`);
}
