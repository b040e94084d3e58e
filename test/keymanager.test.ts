import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { keyAlgOf, signData, verifyData } from "../host/core/alg.ts";
import { readPrivateKeyFile } from "../host/server/keymanager/disk.ts";
import { DiskKeyManager, MemoryKeyManager, openKeyManager } from "../host/server/keymanager/index.ts";
import { tmpDir } from "./helpers/cli.ts";

describe("key managers", () => {
  for (const make of [() => new MemoryKeyManager(), () => new DiskKeyManager(path.join(tmpDir(), "keys"))]) {
    const km = make();
    it(`${km.kind}: generates, signs with, lists and deletes keys of every algorithm`, async () => {
      for (const alg of ["ec-p256", "ed25519", "ml-dsa-65"] as const) {
        const pub = await km.generateKey(`k-${alg}`, alg);
        const priv = await km.getPrivateKey(`k-${alg}`);
        expect(keyAlgOf(priv)).toBe(alg);
        const sig = signData(priv, Buffer.from("x"));
        expect(verifyData(pub, Buffer.from("x"), sig)).toBe(true);
        expect((await km.getPublicKey(`k-${alg}`)).equals(pub)).toBe(true);
      }
      expect(await km.listKeys()).toEqual(["k-ec-p256", "k-ed25519", "k-ml-dsa-65"]);
      await km.deleteKey("k-ed25519");
      expect(await km.hasKey("k-ed25519")).toBe(false);
      await expect(km.getPrivateKey("k-ed25519")).rejects.toMatchObject({ code: "QHX_NOT_FOUND" });
      await expect(km.generateKey("../escape", "ec-p256")).rejects.toMatchObject({
        code: "QHX_INVALID_ARGUMENT",
      });
    });
  }

  it("disk: PKCS#8 PEM files of mode 0600 in a 0700 directory, readable by a new manager", async () => {
    const dir = path.join(tmpDir(), "keys");
    const km = openKeyManager({ kind: "disk", dir });
    const pub = await km.generateKey("ca-1", "ml-dsa-44");
    const file = path.join(dir, "ca-1.key.pem");
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    expect(fs.readFileSync(file, "utf8")).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(fs.readdirSync(dir)).toEqual(["ca-1.key.pem"]); // no temp files left behind
    const again = new DiskKeyManager(dir);
    expect(crypto.createPublicKey(await again.getPrivateKey("ca-1")).equals(pub)).toBe(true);
  });

  it("disk: refuses a key file readable by group or others, and a loose key directory", async () => {
    const dir = path.join(tmpDir(), "keys");
    const km = new DiskKeyManager(dir);
    await km.generateKey("ca-1", "ec-p256");
    const file = path.join(dir, "ca-1.key.pem");
    fs.chmodSync(file, 0o644);
    await expect(new DiskKeyManager(dir).getPrivateKey("ca-1")).rejects.toMatchObject({
      code: "QHX_KEY_PERMISSIONS",
      hint: `chmod 600 ${file}`,
    });
    expect(() => readPrivateKeyFile(file)).toThrow(/accessible by group or others/);
    fs.chmodSync(dir, 0o755);
    expect(() => new DiskKeyManager(dir)).toThrow(/key directory .*\(mode 755\)/);
  });

  it("disk: a garbage key file gets a clear error", async () => {
    const dir = path.join(tmpDir(), "keys");
    new DiskKeyManager(dir);
    fs.writeFileSync(path.join(dir, "bad.key.pem"), "not a key", { mode: 0o600 });
    await expect(new DiskKeyManager(dir).getPrivateKey("bad")).rejects.toMatchObject({
      code: "QHX_KEY_INVALID",
    });
  });
});
