import { QhxError } from "../../core/errors.ts";
import { DiskKeyManager } from "./disk.ts";
import { MemoryKeyManager } from "./memory.ts";
import type { KeyManager } from "./types.ts";

export type { KeyManager } from "./types.ts";
export { DiskKeyManager, MemoryKeyManager };

export type KeyManagerConfig = { kind: "disk"; dir: string } | { kind: "memory" };

/** The one place key manager plugins are registered. */
export function openKeyManager(cfg: KeyManagerConfig): KeyManager {
  switch (cfg.kind) {
    case "disk":
      return new DiskKeyManager(cfg.dir);
    case "memory":
      return new MemoryKeyManager();
    default:
      throw new QhxError("QHX_UNSUPPORTED", `unknown key manager ${(cfg as { kind: string }).kind}`);
  }
}
