import crypto, { type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { generateKeyPair, type KeyAlg } from "../../core/alg.ts";
import { NotFoundError, QhxError } from "../../core/errors.ts";
import { checkId } from "./memory.ts";
import type { KeyManager } from "./types.ts";

/**
 * Keys as PKCS#8 PEM files, one per key, mode 0600 in a directory of mode 0700. A key file readable or
 * writable by group or others is refused (never silently fixed): someone may already have copied it.
 * Writes are atomic (temp file, fsync, rename, fsync of the directory), so a crash leaves either the old
 * key or the new one, never a torn file.
 */
export class DiskKeyManager implements KeyManager {
  readonly kind = "disk";
  readonly dir: string;
  private readonly cache = new Map<string, KeyObject>();

  constructor(dir: string) {
    this.dir = dir;
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = fs.statSync(dir);
    if ((st.mode & 0o077) !== 0) {
      throw new QhxError(
        "QHX_KEY_PERMISSIONS",
        `key directory ${dir} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)})`,
        { hint: `chmod 700 ${dir}` },
      );
    }
  }

  private file(id: string): string {
    checkId(id);
    return path.join(this.dir, `${id}.key.pem`);
  }

  async generateKey(id: string, alg: KeyAlg): Promise<KeyObject> {
    const kp = generateKeyPair(alg);
    await this.importKey(id, kp.privateKey);
    return kp.publicKey;
  }

  async importKey(id: string, privateKey: KeyObject): Promise<void> {
    const file = this.file(id);
    const pem = privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    writeFileAtomic(file, pem, 0o600);
    this.cache.set(id, privateKey);
  }

  async getPrivateKey(id: string): Promise<KeyObject> {
    const cached = this.cache.get(id);
    if (cached) return cached;
    const file = this.file(id);
    const key = readPrivateKeyFile(file, `key ${id}`);
    this.cache.set(id, key);
    return key;
  }

  async getPublicKey(id: string): Promise<KeyObject> {
    return crypto.createPublicKey(await this.getPrivateKey(id));
  }

  async hasKey(id: string): Promise<boolean> {
    return fs.existsSync(this.file(id));
  }

  async deleteKey(id: string): Promise<void> {
    this.cache.delete(id);
    fs.rmSync(this.file(id), { force: true });
  }

  async listKeys(): Promise<string[]> {
    return fs
      .readdirSync(this.dir)
      .filter((f) => f.endsWith(".key.pem"))
      .map((f) => f.slice(0, -".key.pem".length))
      .sort();
  }
}

/** Read a PKCS#8 (or other PEM/DER) private key file, refusing group/other-accessible files. */
export function readPrivateKeyFile(file: string, what = "private key"): KeyObject {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new NotFoundError(what, file);
  }
  if ((st.mode & 0o077) !== 0) {
    throw new QhxError(
      "QHX_KEY_PERMISSIONS",
      `${what} file ${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)})`,
      { hint: `chmod 600 ${file}` },
    );
  }
  try {
    return crypto.createPrivateKey(fs.readFileSync(file));
  } catch (e) {
    throw new QhxError("QHX_KEY_INVALID", `${what} file ${file} does not hold a readable private key`, {
      cause: e,
    });
  }
}

export function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o644): void {
  const dir = path.dirname(file);
  const tmp = path.join(
    dir,
    `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`,
  );
  const fd = fs.openSync(tmp, "wx", mode);
  try {
    fs.writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, file);
  const dfd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}
