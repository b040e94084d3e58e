// Root and per-stream contexts. The host names every context by a u32 id (proxy_on_context_create);
// a context created with parent 0 is a root (plugin) context, any other is a stream whose root is its
// parent. The table is an open-addressed hash (linear probing, backward-shift deletion) in permanent
// memory, sized once; each slot is a ContextRecord the filter may use for its per-stream state.
import { permAlloc } from "./memory";

@unmanaged
export class ContextRecord {
  id: u32;
  rootId: u32;
  kind: u32; // 1 root, 2 stream
  flags: u32;
  startNs: u64;
  user0: u64;
  user1: u64;
  user2: u64;
}

export const KIND_ROOT: u32 = 1;
export const KIND_STREAM: u32 = 2;
const SLOT: usize = 48;

let table: usize = 0;
let mask: u32 = 0;
let count: u32 = 0;

/** Allocate the table for up to `capacity` live contexts (rounded up to a power of two, x2). */
export function contextsInit(capacity: u32): void {
  let cap: u32 = 16;
  while (cap < capacity * 2) cap <<= 1;
  table = permAlloc(<usize>cap * SLOT);
  mask = cap - 1;
  count = 0;
}

@inline function slotAt(i: u32): usize {
  return table + <usize>i * SLOT;
}

// Hosts number contexts sequentially (Envoy, proxy-wasm-cpp-host, QHx's host): the id itself spreads
// them over the table with no collisions among the live ones, and consecutive streams use neighbouring
// slots (a scrambling hash touches a new cache line per stream: qhx_authz's table is 1.5 MB).
@inline function hashId(id: u32): u32 {
  return id;
}

export function contextGet(id: u32): ContextRecord | null {
  if (id == 0 || table == 0) return null;
  let i = hashId(id) & mask;
  while (true) {
    const s = slotAt(i);
    const sid = load<u32>(s);
    if (sid == id) return changetype<ContextRecord>(s);
    if (sid == 0) return null;
    i = (i + 1) & mask;
  }
  return null;
}

/** Create (or reset) the record for `id`; null when the table is full. */
export function contextCreate(id: u32, parent: u32): ContextRecord | null {
  if (id == 0 || table == 0) return null;
  let i = hashId(id) & mask;
  while (true) {
    const s = slotAt(i);
    const sid = load<u32>(s);
    if (sid == id || sid == 0) {
      if (sid == 0) {
        if (count >= (mask >> 1)) return null;
        count++;
      }
      memory.fill(s, 0, SLOT);
      const r = changetype<ContextRecord>(s);
      r.id = id;
      r.rootId = parent == 0 ? id : parent;
      r.kind = parent == 0 ? KIND_ROOT : KIND_STREAM;
      return r;
    }
    i = (i + 1) & mask;
  }
  return null;
}

export function contextDelete(id: u32): void {
  if (id == 0 || table == 0) return;
  let i = hashId(id) & mask;
  while (true) {
    const s = slotAt(i);
    const sid = load<u32>(s);
    if (sid == 0) return;
    if (sid == id) break;
    i = (i + 1) & mask;
  }
  // backward-shift deletion keeps every probe chain intact without tombstones
  let hole = i;
  let j = (i + 1) & mask;
  while (true) {
    const s = slotAt(j);
    const sid = load<u32>(s);
    if (sid == 0) break;
    const home = hashId(sid) & mask;
    // move j into the hole when its home is not within (hole, j]
    const dist = (j - home) & mask;
    const gap = (j - hole) & mask;
    if (dist >= gap) {
      memory.copy(slotAt(hole), s, SLOT);
      hole = j;
    }
    j = (j + 1) & mask;
  }
  memory.fill(slotAt(hole), 0, SLOT);
  count--;
}

export function contextCount(): u32 {
  return count;
}
