// Memory ownership for a proxy-wasm module built with the AssemblyScript "stub" runtime (which never
// frees). Nothing here uses the managed heap; the module owns linear memory above `base` in three parts:
//
//   [base, permTop)          permanent: tables sized once at start (contexts, caches)
//   [permTop, cfgEnd)        the active configuration (rebuilt in place by an atomic swap)
//   [scratchBase, top)       scratch: everything the host returns (proxy_on_memory_allocate) and every
//                            temporary of a callback; reset when the next callback starts
//
// A callback consumes host-returned buffers before it returns, so resetting the scratch region at
// callback entry frees them all: no per-request leak, no free list, no allocator metadata to corrupt.

let base: usize = 0;
let permTop: usize = 0;
let cfgEnd: usize = 0;
let scratchBase: usize = 0;
let scratchTop: usize = 0;
let frozen = false;
let highWater: usize = 0;

/** Grow linear memory so that [0, end) is addressable (traps when the engine refuses). */
export function ensureMemory(end: usize): void {
  const have = (<usize>memory.size()) << 16;
  if (end <= have) return;
  const need = <i32>((end - have + 0xffff) >> 16);
  const more = need > memory.size() ? need : memory.size();
  if (memory.grow(more) < 0 && memory.grow(need) < 0) unreachable();
}

@inline function align16(p: usize): usize {
  return (p + 15) & ~(<usize>15);
}

/** Hand the allocator the first address it owns. Call once, before anything else here. */
export function regionInit(first: usize): void {
  base = align16(first);
  permTop = base;
  cfgEnd = base;
  scratchBase = base;
  scratchTop = base;
  ensureMemory(base + 65536);
}

export function regionReady(): bool {
  return base != 0;
}

/** Permanent allocation (zeroed); only before the first configuration is installed. */
export function permAlloc(bytes: usize): usize {
  if (frozen) unreachable();
  const p = permTop;
  permTop = align16(permTop + bytes);
  ensureMemory(permTop);
  memory.fill(p, 0, bytes);
  cfgEnd = permTop;
  scratchBase = permTop;
  scratchTop = permTop;
  return p;
}

/** Where the configuration region starts (fixed once the first configuration is built). */
export function configBase(): usize {
  frozen = true;
  return permTop;
}

/** The configuration now occupies [configBase(), end); scratch starts above it. */
export function setConfigEnd(end: usize): void {
  cfgEnd = align16(end);
  scratchBase = cfgEnd;
  if (scratchTop < scratchBase) scratchTop = scratchBase;
}

/** Drop every scratch allocation (start of a callback). */
export function scratchReset(): void {
  scratchTop = scratchBase;
}

/** Scratch allocation, 16-aligned, grows memory as needed; valid until the next scratchReset. */
export function scratchAlloc(bytes: usize): usize {
  if (base == 0) unreachable();
  const p = scratchTop;
  scratchTop = align16(scratchTop + bytes);
  ensureMemory(scratchTop);
  if (scratchTop - scratchBase > highWater) highWater = scratchTop - scratchBase;
  return p;
}

export function scratchMark(): usize {
  return scratchTop;
}

export function scratchRelease(mark: usize): void {
  if (mark >= scratchBase && mark <= scratchTop) scratchTop = mark;
}

/** Largest scratch use seen (bytes), for diagnostics. */
export function scratchHighWater(): usize {
  return highWater;
}
