/**
 * The control plane's own ML-DSA (host/core/alg.ts signData/verifyData: X.509 and JWT-SVID issuance,
 * chain checks) on either backend: node:crypto by default, the Wasm kernels when configured
 * (`pq_backend: wasm` / QHX_PQ_BACKEND=wasm). Signatures from either verify under the other.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { generateKeyPair, mlDsaEngineName, signData, verifyData } from "../../host/core/alg.ts";
import { configurePq } from "../../host/crypto/index.ts";
import { fromPem } from "../../host/core/pem.ts";
import { qhx, startServerProcess } from "../helpers/cli.ts";

const saved = process.env["QHX_PQ_BACKEND"];
afterEach(() => {
  if (saved === undefined) delete process.env["QHX_PQ_BACKEND"];
  else process.env["QHX_PQ_BACKEND"] = saved;
  configurePq({});
});

describe("ML-DSA backend of the control plane", () => {
  for (const alg of ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87"] as const) {
    it(`${alg}: kernel signatures verify in node:crypto and the reverse; tampering fails on both`, () => {
      const keys = generateKeyPair(alg);
      const data = crypto.randomBytes(200);
      configurePq({ backend: "wasm" });
      expect(mlDsaEngineName()).toBe("qhx wasm kernels");
      const kernelSig = signData(keys.privateKey, data);
      // node:crypto, independently of the engine
      expect(crypto.verify(null, data, keys.publicKey, kernelSig)).toBe(true);
      const nativeSig = crypto.sign(null, data, keys.privateKey);
      expect(verifyData(keys.publicKey, data, nativeSig)).toBe(true);
      const bad = Buffer.from(nativeSig);
      bad[17]! ^= 4;
      expect(verifyData(keys.publicKey, data, bad)).toBe(false);
      expect(verifyData(keys.publicKey, data, nativeSig.subarray(1))).toBe(false);
      expect(verifyData(generateKeyPair(alg).publicKey, data, nativeSig)).toBe(false);
      configurePq({ backend: "native" });
      expect(mlDsaEngineName()).toBe("node:crypto");
      expect(verifyData(keys.publicKey, data, kernelSig)).toBe(true);
      const kbad = Buffer.from(kernelSig);
      kbad[kbad.length - 90]! ^= 1;
      expect(verifyData(keys.publicKey, data, kbad)).toBe(false);
    });
  }

  it("a private key re-imported from PKCS#8 signs through the engine; node:crypto verifies", () => {
    const keys = generateKeyPair("ml-dsa-65");
    // a KeyObject of its own (nothing cached for it), as a server loading its CA key from disk has
    const der = keys.privateKey.export({ format: "der", type: "pkcs8" });
    const imported = crypto.createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    configurePq({ backend: "wasm" });
    const sig = signData(imported, Buffer.from("x"));
    expect(crypto.verify(null, Buffer.from("x"), keys.publicKey, sig)).toBe(true);
  });
});

describe("server process with QHX_PQ_BACKEND=wasm", () => {
  let srv: Awaited<ReturnType<typeof startServerProcess>>;
  beforeAll(async () => {
    process.env["QHX_PQ_BACKEND"] = "wasm";
    srv = await startServerProcess(["--ca-key-type", "ml-dsa-65"]);
    delete process.env["QHX_PQ_BACKEND"];
  }, 60_000);
  afterAll(async () => {
    await srv?.stop();
  });

  it("signs its ML-DSA CA and SVIDs on the kernels; node:crypto verifies them", () => {
    const started = srv.logs.find((l) => l.msg === "server started");
    expect(started?.["mlDsa"]).toBe("qhx wasm kernels");
    const out = path.join(srv.dir, "svid");
    const r = qhx([
      "svid",
      "mint",
      "--socket",
      srv.adminSocket,
      "--spiffe-id",
      "spiffe://example.org/pq",
      "--alg",
      "ml-dsa-65",
      "--out",
      out,
    ]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const chain = fromPem(fs.readFileSync(path.join(out, "svid.pem"), "utf8"));
    const roots = fromPem(fs.readFileSync(path.join(out, "bundle.pem"), "utf8"));
    const leaf = new crypto.X509Certificate(chain[0]!);
    const root = new crypto.X509Certificate(roots[0]!);
    expect(root.publicKey.asymmetricKeyType).toBe("ml-dsa-65");
    expect(root.verify(root.publicKey)).toBe(true);
    expect(leaf.verify(root.publicKey)).toBe(true);
  });
});
