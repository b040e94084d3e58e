import type { KeyObject } from "node:crypto";
import type { KeyAlg } from "../../core/alg.ts";

/**
 * Where the server's CA and JWT signing keys live. A key never leaves its manager as bytes except as the
 * in-process KeyObject used to sign. One file per implementation; registered in ./index.ts.
 */
export interface KeyManager {
  readonly kind: string;
  /** Create (or replace) key `id`; returns its public key. */
  generateKey(id: string, alg: KeyAlg): Promise<KeyObject>;
  /** Store an existing private key under `id` (e.g. an operator-supplied upstream key is NOT stored: only ours). */
  importKey(id: string, privateKey: KeyObject): Promise<void>;
  getPrivateKey(id: string): Promise<KeyObject>;
  getPublicKey(id: string): Promise<KeyObject>;
  hasKey(id: string): Promise<boolean>;
  deleteKey(id: string): Promise<void>;
  listKeys(): Promise<string[]>;
}

export const KEY_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
