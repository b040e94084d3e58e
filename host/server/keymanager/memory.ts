import crypto, { type KeyObject } from "node:crypto";
import { generateKeyPair, type KeyAlg } from "../../core/alg.ts";
import { NotFoundError, ValidationError } from "../../core/errors.ts";
import { KEY_ID_RE, type KeyManager } from "./types.ts";

/** Keys held only in process memory: for tests and ephemeral servers. Lost on restart. */
export class MemoryKeyManager implements KeyManager {
  readonly kind = "memory";
  private readonly keys = new Map<string, KeyObject>();

  async generateKey(id: string, alg: KeyAlg): Promise<KeyObject> {
    checkId(id);
    const kp = generateKeyPair(alg);
    this.keys.set(id, kp.privateKey);
    return kp.publicKey;
  }
  async importKey(id: string, privateKey: KeyObject): Promise<void> {
    checkId(id);
    this.keys.set(id, privateKey);
  }
  async getPrivateKey(id: string): Promise<KeyObject> {
    const k = this.keys.get(id);
    if (!k) throw new NotFoundError("key", id);
    return k;
  }
  async getPublicKey(id: string): Promise<KeyObject> {
    return crypto.createPublicKey(await this.getPrivateKey(id));
  }
  async hasKey(id: string): Promise<boolean> {
    return this.keys.has(id);
  }
  async deleteKey(id: string): Promise<void> {
    this.keys.delete(id);
  }
  async listKeys(): Promise<string[]> {
    return [...this.keys.keys()].sort();
  }
}

export function checkId(id: string): void {
  if (!KEY_ID_RE.test(id)) throw new ValidationError(`invalid key id ${JSON.stringify(id)}`, "key_id");
}
