import { loadCryptoWasm } from "./host/crypto/wasm.ts";
import { pqProvider } from "./host/crypto/index.ts";
const p = pqProvider("wasm", "simd");
const { publicKey, secretKey } = p.mlKem.keygen("ML-KEM-768");
const ds = p.mlDsa.keygen("ML-DSA-65");
const w = loadCryptoWasm("simd");
function bench(name: string, f: () => unknown) {
  for (let i = 0; i < 300; i++) f();
  const N = 2000; const t0 = performance.now();
  for (let i = 0; i < N; i++) f();
  console.log(name, ((performance.now() - t0) * 1000 / N).toFixed(1), "µs");
}
new Uint8Array(w.memory.buffer, w.pkPtr(), 1184).set(publicKey);
bench("raw kemEncaps", () => w.kemEncaps(3));
new Uint8Array(w.memory.buffer, w.skPtr(), 2400).set(secretKey);
const ct = p.mlKem.encapsulate("ML-KEM-768", publicKey).cipherText;
new Uint8Array(w.memory.buffer, w.sigPtr(), 1088).set(ct);
new Uint8Array(w.memory.buffer, w.skPtr(), 2400).set(secretKey);
bench("raw kemDecaps (wipes sk? no)", () => w.kemDecaps(3));
bench("api encaps", () => p.mlKem.encapsulate("ML-KEM-768", publicKey));
bench("api decaps", () => p.mlKem.decapsulate("ML-KEM-768", secretKey, ct));
const msg = new Uint8Array(64); const sig = p.mlDsa.sign("ML-DSA-65", ds.secretKey, msg);
bench("api verify65", () => p.mlDsa.verify("ML-DSA-65", ds.publicKey, msg, sig));
bench("api sign65", () => p.mlDsa.sign("ML-DSA-65", ds.secretKey, msg));
