// QHx Cedar decision-program evaluator (see host/policy/compiler.ts for the program format and
// host/policy/runtime.ts for the host side). Raw linear memory, no GC (runtime stub):
//
//   [heap base, arenaEnd)  request arena: the host encodes the request here, evaluation allocates after it
//   [arenaEnd, staticTop)  static region: interned value nodes, program code, tables; grows with memory
//
// Values are pointers to nodes: BOOL [tag,b] LONG [tag,_,i64] STR [tag,strId,charPtr,len]
// ENT [tag,uidId,typeStrId,_] SET [tag,n,ptr...] REC [tag,n,(keyStrId,ptr)...]
// IP [tag,isV6,prefix,_,16 address bytes] DEC [tag,_,i64 (x 10^4)]. Evaluation errors return 0 and set `err`.

const T_BOOL: i32 = 1;
const T_LONG: i32 = 2;
const T_STR: i32 = 3;
const T_ENT: i32 = 4;
const T_SET: i32 = 5;
const T_REC: i32 = 6;
const T_IP: i32 = 7;
const T_DEC: i32 = 8;

const OP_CONST: i32 = 1;
const OP_VAR: i32 = 2;
const OP_NOT: i32 = 3;
const OP_NEG: i32 = 4;
const OP_EQ: i32 = 5;
const OP_NE: i32 = 6;
const OP_LT: i32 = 7;
const OP_LE: i32 = 8;
const OP_GT: i32 = 9;
const OP_GE: i32 = 10;
const OP_AND: i32 = 11;
const OP_OR: i32 = 12;
const OP_ADD: i32 = 13;
const OP_SUB: i32 = 14;
const OP_MUL: i32 = 15;
const OP_IN: i32 = 16;
const OP_CONTAINS: i32 = 17;
const OP_CONTAINS_ALL: i32 = 18;
const OP_CONTAINS_ANY: i32 = 19;
const OP_GETTAG: i32 = 20;
const OP_HASTAG: i32 = 21;
const OP_ISEMPTY: i32 = 22;
const OP_ATTR: i32 = 23;
const OP_HAS: i32 = 24;
const OP_LIKE: i32 = 25;
const OP_IS: i32 = 26;
const OP_ITE: i32 = 27;
const OP_SET: i32 = 28;
const OP_REC: i32 = 29;
const OP_IPV4: i32 = 30;
const OP_IPV6: i32 = 31;
const OP_LOOPBACK: i32 = 32;
const OP_MULTICAST: i32 = 33;
const OP_INRANGE: i32 = 34;
const OP_DLT: i32 = 35;
const OP_DLE: i32 = 36;
const OP_DGT: i32 = 37;
const OP_DGE: i32 = 38;
const OP_ENTEQ: i32 = 39; // [op, var, uidId]: scope `==` (never errors)
const OP_ENTIS: i32 = 40; // [op, var, typeStrId]: scope `is` (never errors)
const OP_ERROR: i32 = 42; // [op]: an extension constructor Cedar rejects (always an evaluation error)
const OP_VARIN: i32 = 41; // [op, var, right]: `principal|action|resource in right`, via memoized ancestors
// [op, child, result, seq lo, seq hi]: a boolean node shared by several parents or policies, evaluated
// once per request: the result (0, 1 or -error code) is valid while the seq words equal `seq`
const OP_MEMO: i32 = 43;

const E_TYPE: i32 = 1;
const E_NOATTR: i32 = 2;
const E_NOENTITY: i32 = 3;
const E_OVERFLOW: i32 = 4;
const E_NOTAG: i32 = 5;
const E_ARENA: i32 = 6;
const E_EXT: i32 = 7;

let err: i32 = 0;
let arenaBase: usize = 0;
let arenaEnd: usize = 0;
let arenaTop: usize = 0;
let staticTop: usize = 0;
let trueV: usize = 0;
let falseV: usize = 0;

let slots: usize = 0; // per uid: [gen, entryPtr, color, visit, ancestor-of-var marks x3, _]
let uidCap: i32 = 0;
let gen: i32 = 0;
let seq: i64 = 0; // request sequence number for MEMO nodes (never wraps)
let visitGen: i32 = 0;

let vPrincipal: usize = 0;
let vAction: usize = 0;
let vResource: usize = 0;
let vContext: usize = 0;
let ancDone0: i32 = 0;
let ancDone1: i32 = 0;
let ancDone2: i32 = 0;

let nPolicies: i32 = 0;
// rows of 8 words: [effect (1 permit, 2 forbid), bodyPtr, scope prefilter x5, scope index]; the loader
// writes the first seven (the last as 0), setProgram derives the scope index (see scopeIndex)
let polTab: usize = 0;
let indexedVars: i32 = 0; // bit k: some policy's scope index is on variable k
let outPtr: usize = 0; // [decision, nReasons, nErrors, reasons..., (policy, code)...]

function ensureMemory(end: usize): void {
  const have = (<usize>memory.size()) << 16;
  if (end <= have) return;
  const need = <i32>((end - have + 0xffff) >> 16);
  const more = need > memory.size() ? need : memory.size(); // at least double
  if (memory.grow(more) < 0 && memory.grow(need) < 0) unreachable();
}

/** Set up the arena (bytes) and the static region; returns the arena base. */
export function init(arenaBytes: i32): usize {
  arenaBase = (__heap_base + 15) & ~(<usize>15);
  arenaEnd = arenaBase + <usize>arenaBytes;
  staticTop = arenaEnd;
  ensureMemory(staticTop + 65536);
  trueV = salloc(8);
  store<i32>(trueV, T_BOOL);
  store<i32>(trueV, 1, 4);
  falseV = salloc(8);
  store<i32>(falseV, T_BOOL);
  store<i32>(falseV, 0, 4);
  return arenaBase;
}

export function arenaLimit(): usize {
  return arenaEnd;
}

export function trueValue(): usize {
  return trueV;
}

export function falseValue(): usize {
  return falseV;
}

/** Allocate `bytes` (16-aligned) in the static region; may grow memory. */
export function salloc(bytes: i32): usize {
  const p = staticTop;
  staticTop = (staticTop + <usize>bytes + 15) & ~(<usize>15);
  ensureMemory(staticTop);
  return p;
}

export function staticBytes(): usize {
  return staticTop - arenaEnd;
}

/** Make room for uid ids < n in the entity slot table. */
export function ensureUids(n: i32): void {
  if (n <= uidCap) return;
  let cap = uidCap < 64 ? 64 : uidCap;
  while (cap < n) cap <<= 1;
  const p = salloc(cap << 5);
  memory.fill(p, 0, <usize>cap << 5);
  if (slots != 0) memory.copy(p, slots, <usize>uidCap << 5);
  slots = p;
  uidCap = cap;
}

export function setProgram(n: i32, table: usize, out: usize): void {
  nPolicies = n;
  polTab = table;
  outPtr = out;
  indexedVars = 0;
  for (let i = 0; i < n; i++) {
    const row = table + (<usize>i << 5);
    const ix = scopeIndex(<usize>load<i32>(row, 4));
    store<u32>(row, ix, 28);
    if (ix != 0) indexedVars |= 1 << ((ix >> 2) & 3); // ix = 32 uid + 16 + 4 k: (ix >> 2) & 3 is k
  }
}

// ---- scope index ----
// Most policies of a large set name their principal (or resource, or action) by `in` in their scope:
// `principal in Namespace::"td/ns7"`. Such a test never errors, so when it is false and only tests that
// never error come before it, the policy is certainly not satisfied and raises no error: the policy can
// be skipped without evaluating its body. setProgram finds one such test per policy (the principal's
// first, else the resource's, else the action's) and keeps in the row's last word the offset, in the
// entity slot table, of the mark that says "E is this variable or one of its ancestors" (the mark
// evalVarIn uses; ensureAncestors sets it for the variable itself too), 0 for none: authorize then
// decides the test with one load, before the body.

let ixP: i32 = -1;
let ixA: i32 = -1;
let ixR: i32 = -1;

/**
 * Walk the conjuncts of `n` in evaluation order while they cannot error (scope tests: `==`, `is`, `in`
 * an entity literal or a set of entity literals), noting the first `in <entity>` test per variable.
 * False once a conjunct that may error is reached (nothing after it may be used).
 */
function scanScope(n: usize): bool {
  let op = load<i32>(n);
  if (op == OP_MEMO) {
    n = child(n, 1);
    op = load<i32>(n);
  }
  if (op == OP_AND) return scanScope(child(n, 1)) && scanScope(child(n, 2));
  if (op == OP_ENTEQ || op == OP_ENTIS) return true;
  if (op != OP_VARIN) return false;
  const r = child(n, 2);
  if (load<i32>(r) != OP_CONST) return false;
  const v = child(r, 1);
  const k = load<i32>(n, 4);
  if (tag(v) == T_ENT) {
    const uid = load<i32>(v, 4);
    if (k == 0 && ixP < 0) ixP = uid;
    else if (k == 1 && ixA < 0) ixA = uid;
    else if (k == 2 && ixR < 0) ixR = uid;
    return true;
  }
  if (tag(v) != T_SET) return false;
  const m = load<i32>(v, 4);
  for (let i = 0; i < m; i++) if (tag(load<usize>(v + 8 + (<usize>i << 2))) != T_ENT) return false;
  return true;
}

/** Offset of the mark of entity `uid` for variable k in the slot table (never 0). */
@inline function markOffset(uid: i32, k: i32): u32 {
  return (<u32>uid << 5) + 16 + (<u32>k << 2);
}

/** The scope index word of a policy body (0: none). */
function scopeIndex(body: usize): u32 {
  ixP = -1;
  ixA = -1;
  ixR = -1;
  scanScope(body);
  if (ixP >= 0) return markOffset(ixP, 0);
  if (ixR >= 0) return markOffset(ixR, 2);
  if (ixA >= 0) return markOffset(ixA, 1);
  return 0;
}

function alloc(bytes: i32): usize {
  const p = arenaTop;
  const next = (arenaTop + <usize>bytes + 7) & ~(<usize>7);
  if (next > arenaEnd) {
    err = E_ARENA;
    return 0;
  }
  arenaTop = next;
  return p;
}

@inline function tag(v: usize): i32 {
  return load<i32>(v);
}

@inline function boolV(b: bool): usize {
  return b ? trueV : falseV;
}

function longV(x: i64): usize {
  const p = alloc(16);
  if (p == 0) return 0;
  store<i32>(p, T_LONG);
  store<i64>(p, x, 8);
  return p;
}

function fail(code: i32): usize {
  if (err == 0) err = code;
  return 0;
}

// ---- entities ----

@inline function slotOf(uid: i32): usize {
  return slots + (<usize>uid << 5);
}

/** The entity entry for `uid`, or 0 when the request has no such entity. */
function entityOf(uid: i32): usize {
  const s = slotOf(uid);
  return load<i32>(s) == gen ? <usize>load<i32>(s, 4) : 0;
}

/** DFS for a cycle in the hierarchy (Cedar rejects such requests). */
function hasCycle(entry: usize): bool {
  const s = slotOf(load<i32>(entry));
  store<i32>(s, 1, 8);
  const np = load<i32>(entry, 12);
  for (let i = 0; i < np; i++) {
    const puid = load<i32>(entry + 16 + (<usize>i << 2));
    const ps = slotOf(puid);
    if (load<i32>(ps) != gen) continue;
    const c = load<i32>(ps, 8);
    if (c == 1) return true;
    if (c == 0 && hasCycle(<usize>load<i32>(ps, 4))) return true;
  }
  store<i32>(s, 2, 8);
  return false;
}

function targetIn(uid: i32, targets: usize, n: i32): bool {
  for (let i = 0; i < n; i++) {
    if (load<i32>(load<usize>(targets + 8 + (<usize>i << 2)), 4) == uid) return true;
  }
  return false;
}

/** Is some proper ancestor of the entity with entry `entry` among the targets? */
function ancestorIn(entry: usize, targets: usize, n: i32): bool {
  const np = load<i32>(entry, 12);
  for (let i = 0; i < np; i++) {
    const puid = load<i32>(entry + 16 + (<usize>i << 2));
    if (targetIn(puid, targets, n)) return true;
  }
  for (let i = 0; i < np; i++) {
    const puid = load<i32>(entry + 16 + (<usize>i << 2));
    const ps = slotOf(puid);
    if (load<i32>(ps) != gen || load<i32>(ps, 12) == visitGen) continue;
    store<i32>(ps, visitGen, 12);
    if (ancestorIn(<usize>load<i32>(ps, 4), targets, n)) return true;
  }
  return false;
}

/** `l in r`: r is an entity or a set of entities. targets layout: SET-like [tag, n, ptrs]. */
function evalIn(l: usize, r: usize): usize {
  if (tag(l) != T_ENT) return fail(E_TYPE);
  const uid = load<i32>(l, 4);
  let targets: usize;
  let n: i32;
  const rt = tag(r);
  if (rt == T_ENT) {
    if (load<i32>(r, 4) == uid) return trueV;
    // a one-element view: build it in the arena
    targets = alloc(12);
    if (targets == 0) return 0;
    store<i32>(targets, T_SET);
    store<i32>(targets, 1, 4);
    store<i32>(targets, <i32>r, 8);
    n = 1;
  } else if (rt == T_SET) {
    targets = r;
    n = load<i32>(r, 4);
    for (let i = 0; i < n; i++) {
      const e = load<usize>(r + 8 + (<usize>i << 2));
      if (tag(e) != T_ENT) return fail(E_TYPE);
    }
    if (targetIn(uid, r, n)) return trueV;
  } else {
    return fail(E_TYPE);
  }
  const entry = entityOf(uid);
  if (entry == 0) return falseV;
  visitGen++;
  store<i32>(slotOf(uid), visitGen, 12);
  return boolV(ancestorIn(entry, targets, n));
}

/** Mark every ancestor of the entity `entry` with `gen` in slot word 4+k. */
function markAncestors(entry: usize, k: i32): void {
  const np = load<i32>(entry, 12);
  const off = <usize>(16 + (k << 2));
  for (let i = 0; i < np; i++) {
    const ps = slotOf(load<i32>(entry + 16 + (<usize>i << 2)));
    if (load<i32>(ps + off) == gen) continue;
    store<i32>(ps + off, gen);
    if (load<i32>(ps) == gen) markAncestors(<usize>load<i32>(ps, 4), k);
  }
}

/**
 * Mark the ancestors of principal (0), action (1) or resource (2), and the variable itself, once per
 * request.
 */
function ensureAncestors(k: i32, uid: i32): void {
  const done = k == 0 ? ancDone0 : k == 1 ? ancDone1 : ancDone2;
  if (done != gen) {
    store<i32>(slotOf(uid) + 16 + (<usize>k << 2), gen);
    const entry = entityOf(uid);
    if (entry != 0) markAncestors(entry, k);
    if (k == 0) ancDone0 = gen;
    else if (k == 1) ancDone1 = gen;
    else ancDone2 = gen;
  }
}

/** `var in r` for principal (0), action (1), resource (2): same results as evalIn. */
function evalVarIn(k: i32, r: usize): usize {
  const v = k == 0 ? vPrincipal : k == 1 ? vAction : vResource;
  const uid = load<i32>(v, 4);
  ensureAncestors(k, uid);
  const off = <usize>(16 + (k << 2));
  const rt = tag(r);
  if (rt == T_ENT) {
    const t = load<i32>(r, 4);
    return boolV(t == uid || load<i32>(slotOf(t) + off) == gen);
  }
  if (rt != T_SET) return fail(E_TYPE);
  const n = load<i32>(r, 4);
  for (let i = 0; i < n; i++) {
    if (tag(load<usize>(r + 8 + (<usize>i << 2))) != T_ENT) return fail(E_TYPE);
  }
  for (let i = 0; i < n; i++) {
    const t = load<i32>(load<usize>(r + 8 + (<usize>i << 2)), 4);
    if (t == uid || load<i32>(slotOf(t) + off) == gen) return trueV;
  }
  return falseV;
}

// ---- values ----

function recGet(rec: usize, key: i32): usize {
  const n = load<i32>(rec, 4);
  for (let i = 0; i < n; i++) {
    const p = rec + 8 + (<usize>i << 3);
    if (load<i32>(p) == key) return <usize>load<i32>(p, 4);
  }
  return 0;
}

function setHas(set: usize, v: usize): bool {
  const n = load<i32>(set, 4);
  for (let i = 0; i < n; i++) {
    if (valueEq(load<usize>(set + 8 + (<usize>i << 2)), v)) return true;
  }
  return false;
}

function valueEq(a: usize, b: usize): bool {
  if (a == b) return true;
  const t = tag(a);
  if (t != tag(b)) return false;
  switch (t) {
    case T_BOOL:
      return load<i32>(a, 4) == load<i32>(b, 4);
    case T_LONG:
    case T_DEC:
      return load<i64>(a, 8) == load<i64>(b, 8);
    case T_STR:
    case T_ENT:
      return load<i32>(a, 4) == load<i32>(b, 4);
    case T_SET: {
      const na = load<i32>(a, 4);
      const nb = load<i32>(b, 4);
      for (let i = 0; i < na; i++) if (!setHas(b, load<usize>(a + 8 + (<usize>i << 2)))) return false;
      for (let i = 0; i < nb; i++) if (!setHas(a, load<usize>(b + 8 + (<usize>i << 2)))) return false;
      return true;
    }
    case T_REC: {
      const n = load<i32>(a, 4);
      if (n != load<i32>(b, 4)) return false;
      for (let i = 0; i < n; i++) {
        const p = a + 8 + (<usize>i << 3);
        const bv = recGet(b, load<i32>(p));
        if (bv == 0 || !valueEq(<usize>load<i32>(p, 4), bv)) return false;
      }
      return true;
    }
    case T_IP:
      return (
        load<i32>(a, 4) == load<i32>(b, 4) &&
        load<i32>(a, 8) == load<i32>(b, 8) &&
        load<i64>(a, 16) == load<i64>(b, 16) &&
        load<i64>(a, 24) == load<i64>(b, 24)
      );
  }
  return false;
}

function likeMatch(s: usize, pat: usize, m: i32): bool {
  const text = <usize>load<i32>(s, 8);
  const n = load<i32>(s, 12);
  let i = 0;
  let j = 0;
  let star = -1;
  let mark = 0;
  while (i < n) {
    if (j < m) {
      const pc = load<i32>(pat + (<usize>j << 2));
      if (pc == -1) {
        star = j;
        mark = i;
        j++;
        continue;
      }
      if (pc == <i32>load<u16>(text + (<usize>i << 1))) {
        i++;
        j++;
        continue;
      }
    }
    if (star < 0) return false;
    j = star + 1;
    mark++;
    i = mark;
  }
  while (j < m && load<i32>(pat + (<usize>j << 2)) == -1) j++;
  return j == m;
}

// IP ranges: addresses as two u64 halves (big-endian order), v4 in the high 32 bits of the first half.
function ipBits(v: usize): i32 {
  return load<i32>(v, 4) ? 128 : 32;
}

@inline function bswap64(x: u64): u64 {
  return bswap<u64>(x);
}

function ipHi(v: usize): u64 {
  return bswap64(load<u64>(v, 16));
}

function ipLo(v: usize): u64 {
  return bswap64(load<u64>(v, 24));
}

function maskHi(prefix: i32): u64 {
  if (prefix <= 0) return 0;
  if (prefix >= 64) return ~(<u64>0);
  return ~(<u64>0) << (64 - <u64>prefix);
}

function maskLo(prefix: i32): u64 {
  if (prefix <= 64) return 0;
  if (prefix >= 128) return ~(<u64>0);
  return ~(<u64>0) << (128 - <u64>prefix);
}

function ipInRange(a: usize, b: usize): bool {
  if (load<i32>(a, 4) != load<i32>(b, 4)) return false;
  // a v4 address sits in the top 32 bits, so its prefix masks the same leading bits
  const pa = load<i32>(a, 8);
  const pb = load<i32>(b, 8);
  const ahi = ipHi(a);
  const alo = ipLo(a);
  const bhi = ipHi(b);
  const blo = ipLo(b);
  const aStartHi = ahi & maskHi(pa);
  const aStartLo = alo & maskLo(pa);
  const aEndHi = ahi | ~maskHi(pa);
  const aEndLo = alo | ~maskLo(pa);
  const bStartHi = bhi & maskHi(pb);
  const bStartLo = blo & maskLo(pb);
  const bEndHi = bhi | ~maskHi(pb);
  const bEndLo = blo | ~maskLo(pb);
  const geStart = aStartHi > bStartHi || (aStartHi == bStartHi && aStartLo >= bStartLo);
  const leEnd = aEndHi < bEndHi || (aEndHi == bEndHi && aEndLo <= bEndLo);
  return geStart && leEnd;
}

function ipLoopback(v: usize): bool {
  // Cedar: the address alone decides (127.0.0.0/8, ::1), whatever the prefix
  if (load<i32>(v, 4) == 0) return load<u8>(v, 16) == 127;
  return ipHi(v) == 0 && ipLo(v) == 1;
}

function ipMulticast(v: usize): bool {
  const prefix = load<i32>(v, 8);
  if (load<i32>(v, 4) == 0) return (load<u8>(v, 16) & 0xf0) == 0xe0 && prefix >= 4;
  return load<u8>(v, 16) == 0xff && prefix >= 8;
}

// ---- evaluation ----

@inline function child(n: usize, k: i32): usize {
  return <usize>load<i32>(n + (<usize>k << 2));
}

/**
 * A boolean condition as -1 (error), 0 or 1. Scope checks and connectives are handled here, in a
 * small function, without boxing booleans; everything else goes through evalNode.
 */
function evalBool(n: usize): i32 {
  switch (load<i32>(n)) {
    case OP_AND: {
      const a = evalBool(child(n, 1));
      if (a <= 0) return a;
      return evalBool(child(n, 2));
    }
    case OP_OR: {
      const a = evalBool(child(n, 1));
      if (a != 0) return a;
      return evalBool(child(n, 2));
    }
    case OP_NOT: {
      const a = evalBool(child(n, 1));
      return a < 0 ? a : a ^ 1;
    }
    case OP_ENTEQ: {
      const k = load<i32>(n, 4);
      const v = k == 0 ? vPrincipal : k == 1 ? vAction : vResource;
      return <i32>(load<i32>(v, 4) == load<i32>(n, 8));
    }
    case OP_ENTIS: {
      const k = load<i32>(n, 4);
      const v = k == 0 ? vPrincipal : k == 1 ? vAction : vResource;
      return <i32>(load<i32>(v, 8) == load<i32>(n, 8));
    }
    case OP_VARIN: {
      const r = evalNode(child(n, 2));
      if (r == 0) return -1;
      const v = evalVarIn(load<i32>(n, 4), r);
      return v == 0 ? -1 : load<i32>(v, 4);
    }
    case OP_EQ:
    case OP_NE: {
      const a = evalNode(child(n, 1));
      if (a == 0) return -1;
      const b = evalNode(child(n, 2));
      if (b == 0) return -1;
      const eq = <i32>valueEq(a, b);
      return load<i32>(n) == OP_EQ ? eq : eq ^ 1;
    }
    case OP_MEMO:
      return evalMemo(n);
  }
  return evalBoolSlow(n);
}

/**
 * A shared boolean node: evaluated once per request. Errors propagate without being caught, so `err` is
 * 0 on entry and, after an error, holds this subtree's code: replaying it sets the same code.
 */
function evalMemo(n: usize): i32 {
  if (load<i64>(n, 12) == seq) {
    const r = load<i32>(n, 8);
    if (r >= 0) return r;
    fail(-r);
    return -1;
  }
  const r = evalBool(child(n, 1));
  if (r < 0 && err == E_ARENA) return -1; // the whole request goes to cedar-wasm: nothing to remember
  store<i32>(n, r >= 0 ? r : -err, 8);
  store<i64>(n, seq, 12);
  return r;
}

function evalBoolSlow(n: usize): i32 {
  const v = evalNode(n);
  if (v == 0) return -1;
  if (tag(v) != T_BOOL) {
    fail(E_TYPE);
    return -1;
  }
  return load<i32>(v, 4);
}

function evalNode(n: usize): usize {
  const op = load<i32>(n);
  switch (op) {
    case OP_CONST:
      return child(n, 1);
    case OP_VAR: {
      const k = load<i32>(n, 4);
      return k == 0 ? vPrincipal : k == 1 ? vAction : k == 2 ? vResource : vContext;
    }
    case OP_ENTEQ: {
      const k = load<i32>(n, 4);
      const v = k == 0 ? vPrincipal : k == 1 ? vAction : vResource;
      return boolV(load<i32>(v, 4) == load<i32>(n, 8));
    }
    case OP_ENTIS: {
      const k = load<i32>(n, 4);
      const v = k == 0 ? vPrincipal : k == 1 ? vAction : vResource;
      return boolV(load<i32>(v, 8) == load<i32>(n, 8));
    }
    case OP_ERROR:
      return fail(E_EXT);
    case OP_MEMO: {
      const r = evalMemo(n);
      return r < 0 ? 0 : boolV(r != 0);
    }
    case OP_VARIN: {
      const r = evalNode(child(n, 2));
      if (r == 0) return 0;
      return evalVarIn(load<i32>(n, 4), r);
    }
    case OP_AND: {
      const a = evalBool(child(n, 1));
      if (a < 0) return 0;
      if (a == 0) return falseV;
      const b = evalBool(child(n, 2));
      if (b < 0) return 0;
      return boolV(b != 0);
    }
    case OP_OR: {
      const a = evalBool(child(n, 1));
      if (a < 0) return 0;
      if (a == 1) return trueV;
      const b = evalBool(child(n, 2));
      if (b < 0) return 0;
      return boolV(b != 0);
    }
    case OP_NOT: {
      const a = evalBool(child(n, 1));
      if (a < 0) return 0;
      return boolV(a == 0);
    }
    case OP_ITE: {
      const c = evalBool(child(n, 1));
      if (c < 0) return 0;
      return evalNode(child(n, c ? 2 : 3));
    }
    case OP_NEG: {
      const a = evalNode(child(n, 1));
      if (a == 0) return 0;
      if (tag(a) != T_LONG) return fail(E_TYPE);
      const x = load<i64>(a, 8);
      if (x == i64.MIN_VALUE) return fail(E_OVERFLOW);
      return longV(-x);
    }
    case OP_ISEMPTY: {
      const a = evalNode(child(n, 1));
      if (a == 0) return 0;
      if (tag(a) != T_SET) return fail(E_TYPE);
      return boolV(load<i32>(a, 4) == 0);
    }
    case OP_ATTR: {
      const a = evalNode(child(n, 1));
      if (a == 0) return 0;
      const key = load<i32>(n, 8);
      const t = tag(a);
      let rec: usize;
      if (t == T_REC) rec = a;
      else if (t == T_ENT) {
        const e = entityOf(load<i32>(a, 4));
        if (e == 0) return fail(E_NOENTITY);
        rec = <usize>load<i32>(e, 4);
      } else return fail(E_TYPE);
      const v = recGet(rec, key);
      if (v == 0) return fail(E_NOATTR);
      return v;
    }
    case OP_HAS: {
      const a = evalNode(child(n, 1));
      if (a == 0) return 0;
      const key = load<i32>(n, 8);
      const t = tag(a);
      if (t == T_REC) return boolV(recGet(a, key) != 0);
      if (t == T_ENT) {
        const e = entityOf(load<i32>(a, 4));
        if (e == 0) return falseV;
        return boolV(recGet(<usize>load<i32>(e, 4), key) != 0);
      }
      return fail(E_TYPE);
    }
    case OP_LIKE: {
      const a = evalNode(child(n, 1));
      if (a == 0) return 0;
      if (tag(a) != T_STR) return fail(E_TYPE);
      return boolV(likeMatch(a, n + 12, load<i32>(n, 8)));
    }
    case OP_IS: {
      const a = evalNode(child(n, 1));
      if (a == 0) return 0;
      if (tag(a) != T_ENT) return fail(E_TYPE);
      return boolV(load<i32>(a, 8) == load<i32>(n, 8));
    }
    case OP_SET: {
      const cnt = load<i32>(n, 4);
      const tmp = alloc(8 + (cnt << 2));
      if (tmp == 0) return 0;
      store<i32>(tmp, T_SET);
      store<i32>(tmp, cnt, 4);
      for (let i = 0; i < cnt; i++) {
        const v = evalNode(child(n, 2 + i));
        if (v == 0) return 0;
        store<i32>(tmp + 8 + (<usize>i << 2), <i32>v);
      }
      return tmp;
    }
    case OP_REC: {
      const cnt = load<i32>(n, 4);
      const tmp = alloc(8 + (cnt << 3));
      if (tmp == 0) return 0;
      store<i32>(tmp, T_REC);
      store<i32>(tmp, cnt, 4);
      for (let i = 0; i < cnt; i++) {
        const v = evalNode(child(n, 3 + 2 * i));
        if (v == 0) return 0;
        store<i32>(tmp + 8 + (<usize>i << 3), load<i32>(n + 8 + (<usize>i << 3)));
        store<i32>(tmp + 12 + (<usize>i << 3), <i32>v);
      }
      return tmp;
    }
    case OP_IPV4:
    case OP_IPV6:
    case OP_LOOPBACK:
    case OP_MULTICAST: {
      const a = evalNode(child(n, 1));
      if (a == 0) return 0;
      if (tag(a) != T_IP) return fail(E_TYPE);
      if (op == OP_IPV4) return boolV(load<i32>(a, 4) == 0);
      if (op == OP_IPV6) return boolV(load<i32>(a, 4) != 0);
      if (op == OP_LOOPBACK) return boolV(ipLoopback(a));
      return boolV(ipMulticast(a));
    }
  }
  // binary operators: both operands are evaluated (left first)
  const a = evalNode(child(n, 1));
  if (a == 0) return 0;
  const b = evalNode(child(n, 2));
  if (b == 0) return 0;
  switch (op) {
    case OP_EQ:
      return boolV(valueEq(a, b));
    case OP_NE:
      return boolV(!valueEq(a, b));
    case OP_LT:
    case OP_LE:
    case OP_GT:
    case OP_GE: {
      if (tag(a) != T_LONG || tag(b) != T_LONG) return fail(E_TYPE);
      const x = load<i64>(a, 8);
      const y = load<i64>(b, 8);
      if (op == OP_LT) return boolV(x < y);
      if (op == OP_LE) return boolV(x <= y);
      if (op == OP_GT) return boolV(x > y);
      return boolV(x >= y);
    }
    case OP_DLT:
    case OP_DLE:
    case OP_DGT:
    case OP_DGE: {
      if (tag(a) != T_DEC || tag(b) != T_DEC) return fail(E_TYPE);
      const x = load<i64>(a, 8);
      const y = load<i64>(b, 8);
      if (op == OP_DLT) return boolV(x < y);
      if (op == OP_DLE) return boolV(x <= y);
      if (op == OP_DGT) return boolV(x > y);
      return boolV(x >= y);
    }
    case OP_ADD:
    case OP_SUB:
    case OP_MUL: {
      if (tag(a) != T_LONG || tag(b) != T_LONG) return fail(E_TYPE);
      const x = load<i64>(a, 8);
      const y = load<i64>(b, 8);
      let r: i64;
      if (op == OP_ADD) {
        r = x + y;
        if (((x ^ r) & (y ^ r)) < 0) return fail(E_OVERFLOW);
      } else if (op == OP_SUB) {
        r = x - y;
        if (((x ^ y) & (x ^ r)) < 0) return fail(E_OVERFLOW);
      } else {
        r = x * y;
        if (x != 0 && y != 0) {
          if ((x == -1 && y == i64.MIN_VALUE) || (y == -1 && x == i64.MIN_VALUE)) return fail(E_OVERFLOW);
          if (r / y != x) return fail(E_OVERFLOW);
        }
      }
      return longV(r);
    }
    case OP_IN:
      return evalIn(a, b);
    case OP_CONTAINS:
      if (tag(a) != T_SET) return fail(E_TYPE);
      return boolV(setHas(a, b));
    case OP_CONTAINS_ALL:
    case OP_CONTAINS_ANY: {
      if (tag(a) != T_SET || tag(b) != T_SET) return fail(E_TYPE);
      const nb = load<i32>(b, 4);
      if (op == OP_CONTAINS_ALL) {
        for (let i = 0; i < nb; i++) if (!setHas(a, load<usize>(b + 8 + (<usize>i << 2)))) return falseV;
        return trueV;
      }
      for (let i = 0; i < nb; i++) if (setHas(a, load<usize>(b + 8 + (<usize>i << 2)))) return trueV;
      return falseV;
    }
    case OP_GETTAG:
    case OP_HASTAG: {
      if (tag(a) != T_ENT || tag(b) != T_STR) return fail(E_TYPE);
      const e = entityOf(load<i32>(a, 4));
      if (e == 0) return op == OP_HASTAG ? falseV : fail(E_NOENTITY);
      const tags = <usize>load<i32>(e, 8);
      const v: usize = tags == 0 ? <usize>0 : recGet(tags, load<i32>(b, 4));
      if (op == OP_HASTAG) return boolV(v != 0);
      if (v == 0) return fail(E_NOTAG);
      return v;
    }
    case OP_INRANGE:
      if (tag(a) != T_IP || tag(b) != T_IP) return fail(E_TYPE);
      return boolV(ipInRange(a, b));
  }
  unreachable();
  return 0;
}

/**
 * Evaluate every policy for one request. The host has encoded the request into the arena up to
 * `arenaUsed`; `ents` is its entity table (n entries [uidId, attrs, tags, nParents, parentUid...]).
 * Returns 0 deny / 1 allow (details in the output buffer), or -1: the request must go to cedar-wasm
 * (duplicate entity, hierarchy cycle, arena exhausted).
 */
export function authorize(
  principal: usize,
  action: usize,
  resource: usize,
  context: usize,
  ents: usize,
  nEnt: i32,
  arenaUsed: usize,
): i32 {
  seq++;
  gen++;
  if (gen == 0x7fffffff) {
    memory.fill(slots, 0, <usize>uidCap << 5);
    gen = 1;
  }
  let p = ents;
  let anyParents = false;
  for (let i = 0; i < nEnt; i++) {
    const s = slotOf(load<i32>(p));
    if (load<i32>(s) == gen) return -1; // duplicate entity
    store<i32>(s, gen);
    store<i32>(s, <i32>p, 4);
    store<i32>(s, 0, 8);
    const np = load<i32>(p, 12);
    if (np > 0) anyParents = true;
    p += 16 + (<usize>np << 2);
  }
  if (anyParents) {
    p = ents;
    for (let i = 0; i < nEnt; i++) {
      const s = slotOf(load<i32>(p));
      if (load<i32>(s, 8) == 0 && hasCycle(p)) return -1;
      p += 16 + (<usize>load<i32>(p, 12) << 2);
    }
  }
  vPrincipal = principal;
  vAction = action;
  vResource = resource;
  vContext = context;
  const base = (arenaUsed + 7) & ~(<usize>7);
  let permits = 0;
  let forbids = 0;
  let nErr = 0;
  // output: [decision, nReasons, nErrors] reasons[n] forbidScratch[n] errors[n][2]
  const reasons = outPtr + 12;
  const fscratch = reasons + (<usize>nPolicies << 2);
  const errs = fscratch + (<usize>nPolicies << 2);
  const aUid = load<i32>(action, 4);
  const pUid = load<i32>(principal, 4);
  const rUid = load<i32>(resource, 4);
  const pType = load<i32>(principal, 8);
  const rType = load<i32>(resource, 8);
  if (indexedVars & 1) ensureAncestors(0, pUid);
  if (indexedVars & 2) ensureAncestors(1, aUid);
  if (indexedVars & 4) ensureAncestors(2, rUid);
  for (let i = 0; i < nPolicies; i++) {
    const row = polTab + (<usize>i << 5);
    // scope index: the policy's `var in E` is false (E is neither the variable nor one of its ancestors)
    const ix = load<u32>(row, 28);
    if (ix != 0 && load<i32>(slots + <usize>ix) != gen) continue;
    // scope prefilter (-1: unconstrained)
    let f = load<i32>(row, 8);
    if (f >= 0 && f != aUid) continue;
    f = load<i32>(row, 12);
    if (f >= 0 && f != pUid) continue;
    f = load<i32>(row, 16);
    if (f >= 0 && f != rUid) continue;
    f = load<i32>(row, 20);
    if (f >= 0 && f != pType) continue;
    f = load<i32>(row, 24);
    if (f >= 0 && f != rType) continue;
    arenaTop = base;
    err = 0;
    const r = evalBool(<usize>load<i32>(row, 4));
    if (r < 0) {
      if (err == E_ARENA) return -1;
      store<i32>(errs + (<usize>nErr << 3), i);
      store<i32>(errs + (<usize>nErr << 3), err, 4);
      nErr++;
    } else if (r == 1) {
      if (load<i32>(row) == 2) {
        store<i32>(fscratch + (<usize>forbids << 2), i);
        forbids++;
      } else {
        store<i32>(reasons + (<usize>permits << 2), i);
        permits++;
      }
    }
  }
  let decision = 0;
  if (forbids > 0) {
    memory.copy(reasons, fscratch, <usize>forbids << 2);
    store<i32>(outPtr, 0);
    store<i32>(outPtr, forbids, 4);
  } else {
    decision = permits > 0 ? 1 : 0;
    store<i32>(outPtr, decision);
    store<i32>(outPtr, permits, 4);
  }
  store<i32>(outPtr, nErr, 8);
  return decision;
}
