/**
 * Random bytes for seeds, signing randomness and encapsulation messages. node:crypto's randomBytes
 * costs a system call (about 5 µs) per call, so bytes are drawn from a 4 KiB pool refilled from the
 * OS CSPRNG; handed-out bytes are zeroed in the pool.
 */
import { randomFillSync } from "node:crypto";

const POOL = new Uint8Array(4096);
let pos = POOL.length;

export function randomBytes(n: number): Uint8Array {
  if (n > POOL.length) return randomFillSync(new Uint8Array(n));
  if (pos + n > POOL.length) {
    randomFillSync(POOL);
    pos = 0;
  }
  const out = POOL.slice(pos, pos + n);
  POOL.fill(0, pos, pos + n);
  pos += n;
  return out;
}
