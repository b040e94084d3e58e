/**
 * Host side of the compiled evaluator (build/qhx-policy.wasm, from assembly/policy/index.ts): loads a
 * decision program into its own Wasm instance and encodes each request straight into Wasm memory.
 *
 * Strings and entity uids are interned once per instance: each distinct string becomes a static STR
 * node (its UTF-16 code units stored beside it for `like`), each uid a static ENT node, so the hot path
 * writes only numbers, sets, records and the entity table into the request arena. Anything the encoder
 * is not sure Cedar reads the same way (non-integer or unsafe numbers, null, unknown escapes, odd
 * entity JSON, ill-formed strings, unknown type names, extension values outside the conservative
 * parsers) raises FALLBACK and the request is evaluated by cedar-wasm instead.
 */
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { QhxError } from "../core/errors.ts";
import { type ConstValue, type PolicyProgram, RELOC } from "./compiler.ts";
import { type IpValue, parseDecimal, parseIp } from "./ext.ts";

interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { exports: unknown };
}
const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

interface PolicyWasm {
  memory: WasmMemory;
  init(arenaBytes: number): number;
  arenaLimit(): number;
  trueValue(): number;
  falseValue(): number;
  salloc(bytes: number): number;
  staticBytes(): number;
  ensureUids(n: number): void;
  setProgram(n: number, table: number, out: number): void;
  authorize(
    principal: number,
    action: number,
    resource: number,
    context: number,
    ents: number,
    nEnt: number,
    arenaUsed: number,
  ): number;
}

const T_LONG = 2;
const T_STR = 3;
const T_ENT = 4;
const T_SET = 5;
const T_REC = 6;
const T_IP = 7;
const T_DEC = 8;

export const ERROR_MESSAGES: Record<number, string> = {
  1: "type error",
  2: "attribute does not exist",
  3: "entity does not exist",
  4: "integer overflow",
  5: "tag does not exist",
  7: "extension function error (invalid ip or decimal literal)",
};

const CANDIDATES = ["../../build/qhx-policy.wasm", "../../../build/qhx-policy.wasm"];
let wasmModule: object | undefined;

function loadModule(): object {
  if (wasmModule) return wasmModule;
  const tried: string[] = [];
  for (const rel of CANDIDATES) {
    const url = new URL(rel, import.meta.url);
    if (!existsSync(url)) {
      tried.push(fileURLToPath(url));
      continue;
    }
    try {
      wasmModule = new WA.Module(readFileSync(url));
    } catch (e) {
      throw new QhxError("QHX_WASM_INVALID", `cannot compile ${fileURLToPath(url)}: ${String(e)}`, {
        hint: "run npm run build:wasm",
        cause: e,
      });
    }
    return wasmModule;
  }
  throw new QhxError("QHX_WASM_MISSING", `qhx-policy.wasm not found (looked at ${tried.join(", ")})`, {
    hint: "run npm run build:wasm",
  });
}

/** Thrown by the encoder: this request goes to cedar-wasm. */
export const FALLBACK = Symbol("fallback");

/** Checks a type name against Cedar (cached by the caller's closure). */
export type TypeNameCheck = (type: string) => boolean;
/** Checks an extension value against Cedar: true when Cedar accepts `fn(arg)`. */
export type ExtValueCheck = (fn: "ip" | "decimal", arg: string) => boolean | undefined;

export interface RawDecision {
  decision: "allow" | "deny";
  reasons: string[];
  errors: { policyId: string; message: string }[];
}

/** Whether `o` has exactly one enumerable key (without allocating a key array). */
function singleKey(o: object): boolean {
  let n = 0;
  for (const _k in o) if (++n > 1) return false;
  return n === 1;
}

interface CachedEntity {
  uid: number;
  attrs: number;
  tags: number;
  parents: number[];
}

/**
 * Deep-frozen with own data properties only: such an object can never change (freezing is
 * permanent, and a frozen object's prototype is fixed), so its encoding can be reused.
 */
function deepFrozen(v: unknown): boolean {
  if (typeof v !== "object" || v === null) return true;
  if (!Object.isFrozen(v)) return false;
  for (const k in v) {
    const d = Object.getOwnPropertyDescriptor(v, k);
    if (!d || !("value" in d) || !deepFrozen(d.value)) return false;
  }
  return true;
}

interface UidChain {
  uid: number;
  node: number;
  next: UidChain | undefined;
}

/**
 * A string-keyed dictionary without a prototype. Property lookups turn a looked-up string into a
 * pointer to its internalized copy, so a string seen again costs a pointer comparison, where a Map
 * compares contents each time.
 */
function dict<V>(): Record<string, V | undefined> {
  return Object.create(null) as Record<string, V | undefined>;
}

const NAME = /^[_a-zA-Z][_a-zA-Z0-9]*(::[_a-zA-Z][_a-zA-Z0-9]*)*$/;
const ARENA_BYTES = 4 << 20;
/**
 * Interned strings and uids accumulate (request values such as request ids are interned too): past
 * this many bytes of static data or this many interned strings the instance is rebuilt, which bounds
 * memory under an unbounded stream of distinct values (a rebuild costs about a millisecond).
 */
const STATIC_LIMIT = 32 << 20;
const INTERN_LIMIT = 500_000;

export class CompiledEvaluator {
  private w!: PolicyWasm;
  private buf!: ArrayBuffer;
  private i32!: Int32Array;
  private u16!: Uint16Array;
  private u8!: Uint8Array;
  private arenaBase = 0;
  private arenaEnd = 0;
  private top = 0;
  private strIds = dict<number>();
  private strNodes: number[] = [];
  /** Deep-frozen entity objects, encoded once into static memory (see cachedEntity). */
  private entCache = new WeakMap<object, CachedEntity>();
  private notCacheable = new WeakSet<object>();
  /** Frozen entity arrays whose entities are all cached: their entity table words (see cachedTable). */
  private tabCache = new WeakMap<object, Int32Array>();
  private tabNotCacheable = new WeakSet<object>();
  private staticMode = false;
  private uidById = dict<UidChain>();
  private uidTypes: string[] = [];
  private uidCount = 0;
  private uidCapacity = 0;
  private typeOk = new Map<string, boolean>();
  private ipCache = new Map<string, IpValue | null>();
  private decCache = new Map<string, bigint | null>();
  private outPtr = 0;
  private trueV = 0;
  private falseV = 0;
  private ids: string[];
  private wantAttr: Map<string, number>;
  private wantTag: Map<string, number> | null;
  private wholeContext: boolean;
  private readonly program: PolicyProgram;
  private readonly typeCheck: TypeNameCheck;
  private readonly extCheck: ExtValueCheck;

  private readonly staticLimit: number;
  private readonly internLimit: number;
  /** How many times the instance was rebuilt to bound memory. */
  rebuilds = 0;

  constructor(
    program: PolicyProgram,
    typeCheck: TypeNameCheck,
    extCheck: ExtValueCheck,
    limits: { staticBytes?: number; interned?: number } = {},
  ) {
    this.staticLimit = limits.staticBytes ?? STATIC_LIMIT;
    this.internLimit = limits.interned ?? INTERN_LIMIT;
    this.program = program;
    this.typeCheck = typeCheck;
    this.extCheck = extCheck;
    this.ids = program.policies.map((p) => p.id);
    this.wantAttr = new Map();
    this.wantTag = program.access.tags ? new Map() : null;
    this.wholeContext = program.access.wholeContext;
    this.instantiate();
  }

  private instantiate(): void {
    const inst = new WA.Instance(loadModule(), {
      env: {
        abort(): never {
          throw new QhxError("QHX_WASM_ABORT", "qhx-policy.wasm aborted");
        },
      },
    });
    this.w = inst.exports as PolicyWasm;
    this.arenaBase = this.w.init(ARENA_BYTES);
    this.arenaEnd = this.w.arenaLimit();
    this.trueV = this.w.trueValue();
    this.falseV = this.w.falseValue();
    this.strIds = dict();
    this.strNodes = [];
    this.uidById = dict();
    this.uidTypes = [];
    this.entCache = new WeakMap();
    this.tabCache = new WeakMap();
    this.uidCount = 0;
    this.uidCapacity = 0;
    this.refresh();
    this.load(this.program);
    // wanted keys → their interned string ids (filled after each (re)instantiation)
    for (const k of this.program.access.attrs) this.wantAttr.set(k, this.strId(k));
    for (const k of this.program.access.tags ?? []) this.wantTag?.set(k, this.strId(k));
  }

  private refresh(): void {
    const b = this.w.memory.buffer;
    if (b === this.buf) return;
    this.buf = b;
    this.i32 = new Int32Array(b);
    this.u16 = new Uint16Array(b);
    this.u8 = new Uint8Array(b);
  }

  private salloc(bytes: number): number {
    const p = this.w.salloc(bytes);
    this.refresh();
    return p;
  }

  // ---- interning (static nodes) ----

  private intern(s: string): number {
    const known = this.strIds[s];
    if (known !== undefined) return this.strNodes[known]!;
    if (!s.isWellFormed()) throw FALLBACK;
    const node = this.salloc(16 + s.length * 2);
    const chars = node + 16;
    for (let i = 0; i < s.length; i++) this.u16[(chars >> 1) + i] = s.charCodeAt(i);
    const id = this.strNodes.length;
    const w = node >> 2;
    this.i32[w] = T_STR;
    this.i32[w + 1] = id;
    this.i32[w + 2] = chars;
    this.i32[w + 3] = s.length;
    this.strIds[s] = id;
    this.strNodes.push(node);
    return node;
  }

  private strId(s: string): number {
    const known = this.strIds[s];
    if (known !== undefined) return known;
    const node = this.intern(s);
    return this.i32[(node >> 2) + 1]!;
  }

  private uidNode(type: string, id: string): number {
    // one lookup by id; ids rarely repeat across types, so the chain is usually one node long
    let n = this.uidById[id];
    while (n !== undefined) {
      if (this.uidTypes[n.uid] === type) return n.node;
      n = n.next;
    }
    return this.newUid(type, id);
  }

  private newUid(type: string, id: string): number {
    let ok = this.typeOk.get(type);
    if (ok === undefined) {
      ok = NAME.test(type) && this.typeCheck(type);
      if (this.typeOk.size > 10_000) this.typeOk.clear();
      this.typeOk.set(type, ok);
    }
    if (!ok || !id.isWellFormed()) throw FALLBACK;
    const typeStr = this.strId(type);
    this.strId(id);
    const node = this.salloc(16);
    const uid = this.uidCount++;
    const w = node >> 2;
    this.i32[w] = T_ENT;
    this.i32[w + 1] = uid;
    this.i32[w + 2] = typeStr;
    this.uidTypes[uid] = type;
    this.uidById[id] = { uid, node, next: this.uidById[id] };
    if (uid >= this.uidCapacity) {
      this.uidCapacity = Math.max(64, this.uidCapacity * 2);
      this.w.ensureUids(this.uidCapacity);
      this.refresh();
    }
    return node;
  }

  // ---- program loading ----

  private constNode(c: ConstValue, strings: string[]): number {
    switch (c.t) {
      case "bool":
        return c.v ? this.trueV : this.falseV;
      case "str":
        return this.intern(strings[c.s]!);
      case "ent":
        return this.uidNode(strings[c.type]!, strings[c.id]!);
      case "long": {
        const p = this.salloc(16);
        this.writeLong(p, c.v);
        return p;
      }
      case "dec": {
        const p = this.salloc(16);
        this.i32[p >> 2] = T_DEC;
        new BigInt64Array(this.buf, p + 8, 1)[0] = BigInt(c.v);
        return p;
      }
      case "ip": {
        const p = this.salloc(32);
        this.writeIp(p, c.v6, c.prefix, c.bytes);
        return p;
      }
      case "set": {
        const kids = c.v.map((x) => this.constNode(x, strings));
        const p = this.salloc(8 + 4 * kids.length);
        this.i32[p >> 2] = T_SET;
        this.i32[(p >> 2) + 1] = kids.length;
        kids.forEach((k, i) => (this.i32[(p >> 2) + 2 + i] = k));
        return p;
      }
      case "rec": {
        const kids = c.v.map(([k, v]) => [this.strId(strings[k]!), this.constNode(v, strings)] as const);
        const p = this.salloc(8 + 8 * kids.length);
        this.i32[p >> 2] = T_REC;
        this.i32[(p >> 2) + 1] = kids.length;
        kids.forEach(([k, v], i) => {
          this.i32[(p >> 2) + 2 + 2 * i] = k;
          this.i32[(p >> 2) + 3 + 2 * i] = v;
        });
        return p;
      }
    }
  }

  private load(prog: PolicyProgram): void {
    const strings = prog.strings;
    let consts: number[];
    try {
      consts = prog.consts.map((c) => this.constNode(c, strings));
    } catch (e) {
      if (e === FALLBACK) {
        throw new QhxError("QHX_POLICY_UNSUPPORTED", "a constant of the program cannot be encoded");
      }
      throw e;
    }
    const code = prog.code.slice();
    const codePtr = this.salloc(code.length * 4);
    for (let i = 0; i < prog.relocs.length; i += 2) {
      const at = prog.relocs[i]!;
      const kind = prog.relocs[i + 1]!;
      const v = code[at]!;
      if (kind === RELOC.CHILD) code[at] = codePtr + v * 4;
      else if (kind === RELOC.STR) code[at] = this.strId(strings[v]!);
      else if (kind === RELOC.CONST) code[at] = consts[v]!;
      else if (kind === RELOC.UID) code[at] = this.i32[(consts[v]! >> 2) + 1]!;
      else throw new QhxError("QHX_POLICY_PROGRAM_INVALID", `unknown relocation kind ${kind}`);
    }
    this.i32.set(code, codePtr >> 2);
    const n = prog.policies.length;
    // policy table rows: [effect, body, action uid, principal uid, resource uid, principal type,
    // resource type, _], -1 where the scope does not constrain
    const uidOfConst = (k: number | undefined) => (k === undefined ? -1 : this.i32[(consts[k]! >> 2) + 1]!);
    const typeOfStr = (k: number | undefined) => (k === undefined ? -1 : this.strId(strings[k]!));
    const rows = prog.policies.map((p) => {
      const f = p.filter ?? {};
      return [
        p.effect === "forbid" ? 2 : 1,
        codePtr + p.body * 4,
        uidOfConst(f.action),
        uidOfConst(f.principal),
        uidOfConst(f.resource),
        typeOfStr(f.principalIs),
        typeOfStr(f.resourceIs),
        0,
      ];
    });
    const table = this.salloc(32 * Math.max(1, n));
    rows.forEach((r, i) => this.i32.set(r, (table >> 2) + 8 * i));
    this.outPtr = this.salloc(12 + 16 * Math.max(1, n));
    this.w.setProgram(n, table, this.outPtr);
  }

  // ---- request encoding (arena) ----

  private alloc(bytes: number): number {
    if (this.staticMode) return this.salloc(bytes);
    const p = this.top;
    this.top = (p + bytes + 7) & ~7;
    if (this.top > this.arenaEnd) throw FALLBACK;
    return p;
  }

  private writeLong(p: number, v: number): void {
    const hi = Math.floor(v / 4294967296);
    const w = p >> 2;
    this.i32[w] = T_LONG;
    this.i32[w + 2] = (v - hi * 4294967296) | 0;
    this.i32[w + 3] = hi;
  }

  private writeIp(p: number, v6: boolean, prefix: number, bytes: number[]): void {
    const w = p >> 2;
    this.i32[w] = T_IP;
    this.i32[w + 1] = v6 ? 1 : 0;
    this.i32[w + 2] = prefix;
    this.i32[w + 3] = 0;
    for (let i = 0; i < 16; i++) this.u8[p + 16 + i] = bytes[i]!;
  }

  /** The ENT node of an entity reference `{type, id}` or `{__entity: {type, id}}` (extra keys ignored, as Cedar does). */
  private uidOf(x: unknown): number {
    if (typeof x !== "object" || x === null) throw FALLBACK;
    let u = x as { type?: unknown; id?: unknown; __entity?: unknown };
    if (u.__entity !== undefined) {
      u = u.__entity as { type?: unknown; id?: unknown };
      if (typeof u !== "object" || u === null) throw FALLBACK;
    }
    const type = u.type;
    const id = u.id;
    if (typeof type !== "string" || typeof id !== "string") throw FALLBACK;
    return this.uidNode(type, id);
  }

  private uidIdOf(x: unknown): number {
    const node = this.uidOf(x);
    return this.i32[(node >> 2) + 1]!;
  }

  private extValue(e: unknown): number {
    if (typeof e !== "object" || e === null) throw FALLBACK;
    const o = e as { fn?: unknown; arg?: unknown };
    const fn = o.fn;
    const arg = o.arg;
    if (typeof arg !== "string") throw FALLBACK;
    if (fn === "ip") {
      let ip = this.ipCache.get(arg);
      if (ip === undefined) {
        const parsed = parseIp(arg);
        ip = parsed && this.extCheck("ip", arg) === true ? parsed : null;
        if (this.ipCache.size > 50_000) this.ipCache.clear();
        this.ipCache.set(arg, ip);
      }
      if (ip === null) throw FALLBACK;
      const p = this.alloc(32);
      this.writeIp(p, ip.v6, ip.prefix, ip.bytes);
      return p;
    }
    if (fn === "decimal") {
      let d = this.decCache.get(arg);
      if (d === undefined) {
        const parsed = parseDecimal(arg);
        d = parsed !== undefined && this.extCheck("decimal", arg) === true ? parsed : null;
        if (this.decCache.size > 50_000) this.decCache.clear();
        this.decCache.set(arg, d);
      }
      if (d === null) throw FALLBACK;
      const p = this.alloc(16);
      this.i32[p >> 2] = T_DEC;
      this.i32[(p >> 2) + 2] = Number(BigInt.asIntN(32, d));
      this.i32[(p >> 2) + 3] = Number(d >> 32n);
      return p;
    }
    throw FALLBACK;
  }

  private scratch = new Int32Array(4096);
  private sp = 0;

  /** Copy scratch[from, to) to i32[at…] (a loop: subarray() would allocate a view per call). */
  private copyScratch(from: number, to: number, at: number): void {
    const src = this.scratch;
    const dst = this.i32;
    for (let i = from; i < to; i++) dst[at + i - from] = src[i]!;
  }

  private push(x: number): void {
    if (this.sp === this.scratch.length) {
      const bigger = new Int32Array(this.scratch.length * 2);
      bigger.set(this.scratch);
      this.scratch = bigger;
    }
    this.scratch[this.sp++] = x;
  }

  private value(v: unknown): number {
    switch (typeof v) {
      case "string":
        return this.intern(v);
      case "boolean":
        return v ? this.trueV : this.falseV;
      case "number": {
        if (!Number.isSafeInteger(v)) throw FALLBACK;
        const p = this.alloc(16);
        this.writeLong(p, v);
        return p;
      }
      case "object": {
        if (v === null) throw FALLBACK;
        if (Array.isArray(v)) {
          const n = v.length;
          const base = this.sp;
          for (let i = 0; i < n; i++) this.push(this.value(v[i]));
          const p = this.alloc(8 + 4 * n);
          const w = p >> 2;
          this.i32[w] = T_SET;
          this.i32[w + 1] = n;
          this.copyScratch(base, base + n, w + 2);
          this.sp = base;
          return p;
        }
        const o = v as { __entity?: unknown; __extn?: unknown; __expr?: unknown };
        if (o.__entity !== undefined) {
          if (!singleKey(o)) throw FALLBACK;
          return this.uidOf(o);
        }
        if (o.__extn !== undefined) {
          if (!singleKey(o)) throw FALLBACK;
          return this.extValue(o.__extn);
        }
        if (o.__expr !== undefined) throw FALLBACK;
        return this.record(v as Record<string, unknown>);
      }
    }
    throw FALLBACK;
  }

  /** Check that a value the program cannot read is one Cedar accepts (else: FALLBACK). */
  private check(v: unknown): void {
    switch (typeof v) {
      case "string":
        if (!v.isWellFormed()) throw FALLBACK;
        return;
      case "boolean":
        return;
      case "number":
        if (!Number.isSafeInteger(v)) throw FALLBACK;
        return;
      case "object": {
        if (v === null) throw FALLBACK;
        if (Array.isArray(v)) {
          for (let i = 0; i < v.length; i++) this.check(v[i]);
          return;
        }
        const o = v as { __entity?: unknown; __extn?: unknown; __expr?: unknown };
        if (o.__entity !== undefined || o.__extn !== undefined || o.__expr !== undefined) {
          const top = this.top;
          const sp = this.sp;
          this.value(v);
          this.top = top;
          this.sp = sp;
          return;
        }
        if (Object.getPrototypeOf(v) !== Object.prototype) throw FALLBACK;
        for (const k in v) {
          if (!k.isWellFormed()) throw FALLBACK;
          this.check((v as Record<string, unknown>)[k]);
        }
        return;
      }
    }
    throw FALLBACK;
  }

  /** A record of only the keys in `want` (the others are checked, not encoded). */
  private recordOf(o: Record<string, unknown>, want: Map<string, number> | null): number {
    if (want === null) return this.record(o);
    // a non-plain object (Date, class instance with toJSON…) may serialise differently for Cedar
    if (Object.getPrototypeOf(o) !== Object.prototype) throw FALLBACK;
    const base = this.sp;
    let n = 0;
    for (const k in o) {
      let key = want.get(k);
      if (key === undefined) {
        // remember well-formed unread keys as -1, so each key costs one lookup
        if (!k.isWellFormed()) throw FALLBACK;
        if (want.size < 10_000) want.set(k, -1);
        key = -1;
      }
      if (key < 0) {
        this.check(o[k]);
        continue;
      }
      const val = this.value(o[k]);
      this.push(key);
      this.push(val);
      n++;
    }
    const p = this.alloc(8 + 8 * n);
    const w = p >> 2;
    this.i32[w] = T_REC;
    this.i32[w + 1] = n;
    this.copyScratch(base, base + 2 * n, w + 2);
    this.sp = base;
    return p;
  }

  private record(o: Record<string, unknown>): number {
    if (Object.getPrototypeOf(o) !== Object.prototype) throw FALLBACK;
    const base = this.sp;
    let n = 0;
    for (const k in o) {
      const val = this.value(o[k]);
      const key = this.strId(k);
      this.push(key);
      this.push(val);
      n++;
    }
    const p = this.alloc(8 + 8 * n);
    const w = p >> 2;
    this.i32[w] = T_REC;
    this.i32[w + 1] = n;
    this.copyScratch(base, base + 2 * n, w + 2);
    this.sp = base;
    return p;
  }

  /**
   * Encode a deep-frozen entity once, into static memory, and remember it. Undefined when it is not
   * deep-frozen (or not valid Cedar: then the normal path decides, falling back to cedar-wasm).
   */
  private cacheEntity(e: {
    uid?: unknown;
    attrs?: unknown;
    parents?: unknown;
    tags?: unknown;
  }): CachedEntity | undefined {
    if (this.notCacheable.has(e)) return undefined;
    if (!deepFrozen(e)) {
      this.notCacheable.add(e);
      return undefined;
    }
    const a = e.attrs;
    const t = e.tags;
    const ps = e.parents;
    if (typeof a !== "object" || a === null || Array.isArray(a)) return undefined;
    if (t !== undefined && (typeof t !== "object" || t === null || Array.isArray(t))) return undefined;
    if (!Array.isArray(ps)) return undefined;
    const sp = this.sp;
    this.staticMode = true;
    try {
      const c: CachedEntity = {
        uid: this.uidIdOf(e.uid),
        attrs: this.recordOf(a as Record<string, unknown>, this.wantAttr),
        tags: t === undefined ? 0 : this.recordOf(t as Record<string, unknown>, this.wantTag),
        parents: ps.map((p) => this.uidIdOf(p)),
      };
      this.entCache.set(e, c);
      return c;
    } catch (err) {
      if (err === FALLBACK) {
        this.notCacheable.add(e);
        return undefined;
      }
      throw err;
    } finally {
      this.staticMode = false;
      this.sp = sp;
    }
  }

  /**
   * The entity table of a frozen array of deep-frozen entities, built once (one lookup per request
   * instead of one per entity). Undefined when some element is not cacheable.
   */
  private cachedTable(ents: readonly unknown[]): Int32Array | undefined {
    if (this.tabNotCacheable.has(ents)) return undefined;
    const words: number[] = [];
    for (let i = 0; i < ents.length; i++) {
      // a frozen array may still hold accessors: only data properties are stable
      const d = Object.getOwnPropertyDescriptor(ents, i);
      const e: unknown = d && "value" in d ? d.value : undefined;
      const c =
        typeof e === "object" && e !== null && Object.isFrozen(e)
          ? (this.entCache.get(e) ?? this.cacheEntity(e))
          : undefined;
      if (c === undefined) {
        this.tabNotCacheable.add(ents);
        return undefined;
      }
      words.push(c.uid, c.attrs, c.tags, c.parents.length, ...c.parents);
    }
    const t = Int32Array.from(words);
    this.tabCache.set(ents, t);
    return t;
  }

  /**
   * Evaluate one request; returns undefined when it must go to cedar-wasm instead.
   * `extraEntities` (the schema's action entities) are added unless the request defines them.
   */
  authorize(req: {
    principal: unknown;
    action: unknown;
    resource: unknown;
    context?: unknown;
    entities?: unknown;
  }): RawDecision | undefined {
    if (this.strNodes.length > this.internLimit || this.w.staticBytes() > this.staticLimit) {
      this.rebuilds++;
      this.instantiate();
    }
    this.top = this.arenaBase;
    this.sp = 0;
    let principal: number, action: number, resource: number, context: number;
    let entTab: number;
    let nEnt: number;
    try {
      principal = this.uidOf(req.principal);
      action = this.uidOf(req.action);
      resource = this.uidOf(req.resource);
      const ctx = req.context ?? {};
      if (typeof ctx !== "object" || ctx === null || Array.isArray(ctx)) throw FALLBACK;
      context = this.recordOf(ctx as Record<string, unknown>, this.wholeContext ? null : this.wantAttr);
      const ents = req.entities ?? [];
      if (!Array.isArray(ents)) throw FALLBACK;
      nEnt = ents.length;
      const tab = Object.isFrozen(ents) ? (this.tabCache.get(ents) ?? this.cachedTable(ents)) : undefined;
      if (tab !== undefined) nEnt = 0; // skip the per-entity loop

      // the entity table accumulates on the scratch stack: [uid, attrs, tags, nParents, parent uids...]
      for (let i = 0; i < nEnt; i++) {
        const e = ents[i] as { uid?: unknown; attrs?: unknown; parents?: unknown; tags?: unknown };
        if (typeof e !== "object" || e === null) throw FALLBACK;
        if (Object.isFrozen(e)) {
          const c = this.entCache.get(e) ?? this.cacheEntity(e);
          if (c !== undefined) {
            this.push(c.uid);
            this.push(c.attrs);
            this.push(c.tags);
            this.push(c.parents.length);
            for (let j = 0; j < c.parents.length; j++) this.push(c.parents[j]!);
            continue;
          }
        }
        const a = e.attrs;
        if (typeof a !== "object" || a === null || Array.isArray(a)) throw FALLBACK;
        const attrs = this.recordOf(a as Record<string, unknown>, this.wantAttr);
        const t = e.tags;
        let tags = 0;
        if (t !== undefined) {
          if (typeof t !== "object" || t === null || Array.isArray(t)) throw FALLBACK;
          tags = this.recordOf(t as Record<string, unknown>, this.wantTag);
        }
        const ps = e.parents;
        if (!Array.isArray(ps)) throw FALLBACK;
        this.push(this.uidIdOf(e.uid));
        this.push(attrs);
        this.push(tags);
        this.push(ps.length);
        for (let j = 0; j < ps.length; j++) this.push(this.uidIdOf(ps[j]));
      }
      if (tab !== undefined) {
        nEnt = ents.length;
        entTab = this.alloc(4 * tab.length);
        this.i32.set(tab, entTab >> 2);
      } else {
        entTab = this.alloc(4 * this.sp);
        this.copyScratch(0, this.sp, entTab >> 2);
      }
    } catch (e) {
      if (e === FALLBACK) return undefined;
      throw e;
    }
    const d = this.w.authorize(principal, action, resource, context, entTab, nEnt, this.top);
    if (d < 0) return undefined;
    // authorize() never grows memory (it allocates in the arena), so the views are still current
    const o = this.outPtr >> 2;
    const nReasons = this.i32[o + 1]!;
    const nErrors = this.i32[o + 2]!;
    const n = this.ids.length;
    const reasons = new Array<string>(nReasons);
    for (let i = 0; i < nReasons; i++) reasons[i] = this.ids[this.i32[o + 3 + i]!]!;
    const errors: { policyId: string; message: string }[] = [];
    const eb = o + 3 + 2 * n;
    for (let i = 0; i < nErrors; i++) {
      const code = this.i32[eb + 2 * i + 1]!;
      errors.push({
        policyId: this.ids[this.i32[eb + 2 * i]!]!,
        message: ERROR_MESSAGES[code] ?? `evaluation error ${code}`,
      });
    }
    return { decision: d === 1 ? "allow" : "deny", reasons, errors };
  }
}
