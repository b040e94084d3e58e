/**
 * Compiler: Cedar policies in Cedar's JSON policy format (the EST that cedar-wasm's `policyToJson`
 * produces from Cedar's own parser) → a decision program for the evaluator in assembly/policy.
 *
 * The program is position-independent and serialisable (it is what the policy store signs and ships):
 * `code` is a flat array of 32-bit words holding expression nodes `[op, operand...]`; operands that
 * the loader must resolve are listed in `relocs` as pairs `[wordIndex, kind]` (a child node, an
 * interned string, a constant value, an entity uid). Any construct outside the supported subset throws
 * `UnsupportedConstruct` naming it; the caller then evaluates that policy set with cedar-wasm.
 */
import { parseDecimal, parseIp } from "./ext.ts";

export const PROGRAM_FORMAT = "qhx-policy-program/2";
/** Formats the loaders accept: /1 is /2 without MEMO nodes. */
export const PROGRAM_FORMATS: readonly string[] = ["qhx-policy-program/1", PROGRAM_FORMAT];

export const OP = {
  CONST: 1,
  VAR: 2,
  NOT: 3,
  NEG: 4,
  EQ: 5,
  NE: 6,
  LT: 7,
  LE: 8,
  GT: 9,
  GE: 10,
  AND: 11,
  OR: 12,
  ADD: 13,
  SUB: 14,
  MUL: 15,
  IN: 16,
  CONTAINS: 17,
  CONTAINS_ALL: 18,
  CONTAINS_ANY: 19,
  GETTAG: 20,
  HASTAG: 21,
  ISEMPTY: 22,
  ATTR: 23,
  HAS: 24,
  LIKE: 25,
  IS: 26,
  ITE: 27,
  SET: 28,
  REC: 29,
  IPV4: 30,
  IPV6: 31,
  LOOPBACK: 32,
  MULTICAST: 33,
  INRANGE: 34,
  DLT: 35,
  DLE: 36,
  DGT: 37,
  DGE: 38,
  ENTEQ: 39,
  ENTIS: 40,
  VARIN: 41,
  ERROR: 42,
  /**
   * `[MEMO, child, result, seq lo, seq hi]`: a boolean node shared by several parents (or policies);
   * the evaluator computes it once per request and keeps the result in words 2–4 (emitted as 0).
   */
  MEMO: 43,
} as const;

/** Operators whose value is always a boolean (or an error): their shared nodes may be memoized. */
const BOOLEAN_OPS: ReadonlySet<number> = new Set<number>([
  OP.NOT,
  OP.EQ,
  OP.NE,
  OP.LT,
  OP.LE,
  OP.GT,
  OP.GE,
  OP.AND,
  OP.OR,
  OP.IN,
  OP.CONTAINS,
  OP.CONTAINS_ALL,
  OP.CONTAINS_ANY,
  OP.HASTAG,
  OP.HAS,
  OP.LIKE,
  OP.IS,
  OP.IPV4,
  OP.IPV6,
  OP.LOOPBACK,
  OP.MULTICAST,
  OP.INRANGE,
  OP.DLT,
  OP.DLE,
  OP.DGT,
  OP.DGE,
  OP.VARIN,
]);

/** Relocation kinds. */
export const RELOC = { CHILD: 1, STR: 2, CONST: 3, UID: 4 } as const;

/** A constant value; strings are indices into the program's string table. */
export type ConstValue =
  | { t: "bool"; v: boolean }
  | { t: "long"; v: number }
  | { t: "str"; s: number }
  | { t: "ent"; type: number; id: number }
  | { t: "set"; v: ConstValue[] }
  | { t: "rec"; v: [number, ConstValue][] }
  | { t: "ip"; v6: boolean; prefix: number; bytes: number[] }
  | { t: "dec"; v: string };

export interface ProgramPolicy {
  id: string;
  effect: "permit" | "forbid";
  /** Word index of the policy's condition node. */
  body: number;
  /**
   * Scope prefilter (scope constraints never error, so a request failing one cannot be satisfied or
   * error): `==` constraints as constant indices of entity uids, `is` constraints as string indices of
   * type names. The body does not repeat them: every loader must apply the prefilter.
   */
  filter?: {
    action?: number;
    principal?: number;
    resource?: number;
    principalIs?: number;
    resourceIs?: number;
  };
}

/**
 * What the program can read, so the encoder may skip the rest of a request (it still checks that the
 * skipped values are valid Cedar): top-level attribute names (entity attributes and context keys), tag
 * keys (null: any), and whether `context` is used as a whole value.
 */
export interface ProgramAccess {
  attrs: string[];
  tags: string[] | null;
  wholeContext: boolean;
}

export interface PolicyProgram {
  format: string;
  access: ProgramAccess;
  policies: ProgramPolicy[];
  code: number[];
  relocs: number[];
  strings: string[];
  consts: ConstValue[];
}

/** A construct the compiler does not support (the policy set falls back to cedar-wasm). */
export class UnsupportedConstruct extends Error {
  readonly construct: string;
  constructor(construct: string) {
    super(`unsupported construct: ${construct}`);
    this.construct = construct;
  }
}

/** Checks an extension literal against Cedar itself: true when Cedar accepts `fn("arg")`. */
export type ExtLiteralCheck = (fn: "ip" | "decimal", arg: string) => boolean | undefined;

type Json = unknown;
type Obj = Record<string, Json>;

const VARS: Record<string, number> = { principal: 0, action: 1, resource: 2, context: 3 };

const BINARY: Record<string, number> = {
  "==": OP.EQ,
  "!=": OP.NE,
  "<": OP.LT,
  "<=": OP.LE,
  ">": OP.GT,
  ">=": OP.GE,
  "&&": OP.AND,
  "||": OP.OR,
  "+": OP.ADD,
  "-": OP.SUB,
  "*": OP.MUL,
  in: OP.IN,
  contains: OP.CONTAINS,
  containsAll: OP.CONTAINS_ALL,
  containsAny: OP.CONTAINS_ANY,
  getTag: OP.GETTAG,
  hasTag: OP.HASTAG,
};

const EXT_UNARY: Record<string, number> = {
  isIpv4: OP.IPV4,
  isIpv6: OP.IPV6,
  isLoopback: OP.LOOPBACK,
  isMulticast: OP.MULTICAST,
};
const EXT_BINARY: Record<string, number> = {
  isInRange: OP.INRANGE,
  lessThan: OP.DLT,
  lessThanOrEqual: OP.DLE,
  greaterThan: OP.DGT,
  greaterThanOrEqual: OP.DGE,
};

function isObj(x: Json): x is Obj {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

function single(o: Obj): [string, Json] {
  const keys = Object.keys(o);
  if (keys.length !== 1) throw new UnsupportedConstruct(`expression with keys ${JSON.stringify(keys)}`);
  return [keys[0]!, o[keys[0]!]];
}

class Builder {
  code: number[] = [];
  relocs: number[] = [];
  strings: string[] = [];
  consts: ConstValue[] = [];
  private strIdx = new Map<string, number>();
  private constIdx = new Map<string, number>();
  private extCheck: ExtLiteralCheck;
  attrNames = new Set<string>();
  tagKeys: Set<string> | null = new Set<string>();
  wholeContext = false;
  filter: NonNullable<ProgramPolicy["filter"]> = {};
  /**
   * Hash-consing: identical nodes are emitted once. A node's structural key names its children by
   * canonical id (cid), so keys do not depend on where MEMO wrappers were inserted.
   */
  private byKey = new Map<string, number>();
  private cidOf = new Map<number, number>();
  private nextCid = 0;
  /** cid → distinct parent cids (first pass), and cid → policy bodies referring to it. */
  parents = new Map<number, Set<number>>();
  bodyRefs = new Map<number, number>();
  /** Boolean nodes to wrap in MEMO (the cids found shared by a first pass). */
  private memo: ReadonlySet<number>;

  constructor(extCheck: ExtLiteralCheck, memo: ReadonlySet<number> = new Set()) {
    this.extCheck = extCheck;
    this.memo = memo;
  }

  /** Note that a policy body is node `at` (for the sharing analysis). */
  body(at: number): void {
    const cid = this.cidOf.get(at)!;
    this.bodyRefs.set(cid, (this.bodyRefs.get(cid) ?? 0) + 1);
  }

  /** The cids of the boolean nodes that have two or more distinct users (parents or policies). */
  sharedBooleans(): Set<number> {
    const out = new Set<number>();
    for (const [at, cid] of this.cidOf) {
      if (!BOOLEAN_OPS.has(this.code[at]!)) continue;
      const users = (this.parents.get(cid)?.size ?? 0) + (this.bodyRefs.get(cid) ?? 0);
      if (users >= 2) out.add(cid);
    }
    return out;
  }

  str(s: string): number {
    let i = this.strIdx.get(s);
    if (i === undefined) {
      i = this.strings.length;
      this.strings.push(s);
      this.strIdx.set(s, i);
    }
    return i;
  }

  constant(c: ConstValue): number {
    const key = JSON.stringify(c);
    let i = this.constIdx.get(key);
    if (i === undefined) {
      i = this.consts.length;
      this.consts.push(c);
      this.constIdx.set(key, i);
    }
    return i;
  }

  /** Emit a node; `kinds[i]` is the relocation kind of word i+1 (0 = none). */
  node(op: number, operands: number[], kinds: number[]): number {
    let key = `${op}`;
    for (let i = 0; i < operands.length; i++) {
      const k = kinds[i] ?? 0;
      key += k === RELOC.CHILD ? ` c${this.cidOf.get(operands[i]!)}` : ` ${k}:${operands[i]}`;
    }
    const known = this.byKey.get(key);
    if (known !== undefined) return known;
    const cid = this.nextCid++;
    let at = this.code.length;
    this.code.push(op);
    for (let i = 0; i < operands.length; i++) {
      const k = kinds[i] ?? 0;
      if (k) this.relocs.push(at + 1 + i, k);
      this.code.push(operands[i]!);
      if (k === RELOC.CHILD) {
        const c = this.cidOf.get(operands[i]!)!;
        let ps = this.parents.get(c);
        if (!ps) this.parents.set(c, (ps = new Set()));
        ps.add(cid);
      }
    }
    this.cidOf.set(at, cid);
    if (this.memo.has(cid)) {
      const m = this.code.length;
      this.code.push(OP.MEMO, at, 0, 0, 0);
      this.relocs.push(m + 1, RELOC.CHILD);
      this.cidOf.set(m, cid);
      at = m;
    }
    this.byKey.set(key, at);
    return at;
  }

  constNode(c: ConstValue): number {
    return this.node(OP.CONST, [this.constant(c)], [RELOC.CONST]);
  }

  // ---- values ----

  uid(x: Json, where: string): ConstValue & { t: "ent" } {
    let u = x;
    if (isObj(u) && "__entity" in u) u = u.__entity;
    if (!isObj(u) || typeof u.type !== "string" || typeof u.id !== "string") {
      throw new UnsupportedConstruct(`entity reference in ${where}`);
    }
    return { t: "ent", type: this.str(u.type), id: this.str(u.id) };
  }

  value(x: Json): ConstValue {
    if (typeof x === "boolean") return { t: "bool", v: x };
    if (typeof x === "number") {
      if (!Number.isSafeInteger(x)) throw new UnsupportedConstruct(`integer literal ${x} (beyond ±2^53)`);
      return { t: "long", v: x };
    }
    if (typeof x === "bigint") throw new UnsupportedConstruct(`integer literal ${x} (beyond ±2^53)`);
    if (typeof x === "string") return { t: "str", s: this.str(x) };
    if (Array.isArray(x)) return { t: "set", v: x.map((e) => this.value(e)) };
    if (isObj(x)) {
      if ("__entity" in x) return this.uid(x, "a literal");
      if ("__extn" in x || "__expr" in x) throw new UnsupportedConstruct("extension escape in a literal");
      return {
        t: "rec",
        v: Object.keys(x).map((k) => [this.str(k), this.value(x[k])] as [number, ConstValue]),
      };
    }
    throw new UnsupportedConstruct(`literal ${JSON.stringify(x)}`);
  }

  /** The constant, or undefined for a literal that Cedar (and our parser) reject. */
  extLiteral(fn: "ip" | "decimal", args: Json): ConstValue | undefined {
    if (!Array.isArray(args) || args.length !== 1) throw new UnsupportedConstruct(`${fn}() arity`);
    const a = args[0];
    if (!isObj(a) || !("Value" in a) || typeof a.Value !== "string") {
      throw new UnsupportedConstruct(`${fn}() on a non-literal argument`);
    }
    const s = a.Value;
    const parsed = fn === "ip" ? parseIp(s) : parseDecimal(s);
    const valid = this.extCheck(fn, s);
    // both reject it: evaluating it is an error, every time
    if (!parsed && valid === false) return undefined;
    // our parser is conservative; Cedar must agree that the literal is valid, else leave it to Cedar
    if (!parsed || !valid) throw new UnsupportedConstruct(`${fn}("${s}") literal`);
    if (fn === "ip") {
      const ip = parsed as ReturnType<typeof parseIp> & object;
      return { t: "ip", v6: ip.v6, prefix: ip.prefix, bytes: ip.bytes };
    }
    return { t: "dec", v: (parsed as bigint).toString() };
  }

  // ---- expressions ----

  expr(e: Json): number {
    if (!isObj(e)) throw new UnsupportedConstruct(`expression ${JSON.stringify(e)}`);
    const [k, v] = single(e);
    switch (k) {
      case "Value":
        return this.constNode(this.value(v));
      case "Var": {
        const i = VARS[v as string];
        if (i === undefined) throw new UnsupportedConstruct(`variable ${String(v)}`);
        if (i === 3) this.wholeContext = true;
        return this.node(OP.VAR, [i], [0]);
      }
      case "Slot":
        throw new UnsupportedConstruct("template slot");
      case "!":
        return this.unary(OP.NOT, v);
      case "neg":
        return this.unary(OP.NEG, v);
      case "isEmpty":
        return this.unary(OP.ISEMPTY, v);
      case ".": {
        const o = v as Obj;
        this.attrNames.add(String(o.attr));
        return this.node(OP.ATTR, [this.recv(o.left), this.str(String(o.attr))], [RELOC.CHILD, RELOC.STR]);
      }
      case "has": {
        const o = v as Obj;
        const attrs = Array.isArray(o.attr) ? (o.attr as string[]) : [String(o.attr)];
        if (attrs.length === 0) throw new UnsupportedConstruct("empty `has` path");
        // `e has a.b.c` = e has a && e.a has b && e.a.b has c
        const left = o.left;
        for (const a of attrs) this.attrNames.add(a);
        let cur = this.node(OP.HAS, [this.recv(left), this.str(attrs[0]!)], [RELOC.CHILD, RELOC.STR]);
        let path: Json = left;
        for (let i = 1; i < attrs.length; i++) {
          path = { ".": { left: path, attr: attrs[i - 1] } };
          const next = this.node(OP.HAS, [this.expr(path), this.str(attrs[i]!)], [RELOC.CHILD, RELOC.STR]);
          cur = this.node(OP.AND, [cur, next], [RELOC.CHILD, RELOC.CHILD]);
        }
        return cur;
      }
      case "like": {
        const o = v as Obj;
        if (!Array.isArray(o.pattern)) throw new UnsupportedConstruct("like pattern");
        const units: number[] = [];
        for (const p of o.pattern as Json[]) {
          if (p === "Wildcard") units.push(-1);
          else if (isObj(p) && typeof p.Literal === "string") {
            for (let i = 0; i < p.Literal.length; i++) units.push(p.Literal.charCodeAt(i));
          } else throw new UnsupportedConstruct(`like pattern element ${JSON.stringify(p)}`);
        }
        return this.node(
          OP.LIKE,
          [this.expr(o.left), units.length, ...units],
          [RELOC.CHILD, 0, ...units.map(() => 0)],
        );
      }
      case "is": {
        const o = v as Obj;
        const isNode = this.node(
          OP.IS,
          [this.expr(o.left), this.str(String(o.entity_type))],
          [RELOC.CHILD, RELOC.STR],
        );
        if (o.in === undefined) return isNode;
        const inNode = this.node(OP.IN, [this.expr(o.left), this.expr(o.in)], [RELOC.CHILD, RELOC.CHILD]);
        return this.node(OP.AND, [isNode, inNode], [RELOC.CHILD, RELOC.CHILD]);
      }
      case "if-then-else": {
        const o = v as Obj;
        return this.node(
          OP.ITE,
          [this.expr(o.if), this.expr(o.then), this.expr(o.else)],
          [RELOC.CHILD, RELOC.CHILD, RELOC.CHILD],
        );
      }
      case "Set": {
        if (!Array.isArray(v)) throw new UnsupportedConstruct("set literal");
        const kids = v.map((x) => this.expr(x));
        return this.node(OP.SET, [kids.length, ...kids], [0, ...kids.map(() => RELOC.CHILD)]);
      }
      case "Record": {
        if (!isObj(v)) throw new UnsupportedConstruct("record literal");
        const ops: number[] = [Object.keys(v).length];
        const kinds: number[] = [0];
        for (const key of Object.keys(v)) {
          ops.push(this.str(key), this.expr(v[key]));
          kinds.push(RELOC.STR, RELOC.CHILD);
        }
        return this.node(OP.REC, ops, kinds);
      }
      case "ip":
      case "decimal": {
        const c = this.extLiteral(k, v);
        return c ? this.constNode(c) : this.node(OP.ERROR, [], []);
      }
    }
    const bin = BINARY[k];
    if (bin !== undefined) {
      const o = v as Obj;
      if (!isObj(o) || !("left" in o) || !("right" in o)) throw new UnsupportedConstruct(`operator ${k}`);
      if (bin === OP.GETTAG || bin === OP.HASTAG) {
        const key = o.right;
        if (isObj(key) && typeof key.Value === "string") this.tagKeys?.add(key.Value);
        else this.tagKeys = null;
      }
      if (bin === OP.IN) {
        const vi = this.entityVar(o.left);
        if (vi !== undefined) return this.node(OP.VARIN, [vi, this.expr(o.right)], [0, RELOC.CHILD]);
      }
      return this.node(bin, [this.expr(o.left), this.expr(o.right)], [RELOC.CHILD, RELOC.CHILD]);
    }
    const eu = EXT_UNARY[k];
    if (eu !== undefined) {
      if (!Array.isArray(v) || v.length !== 1) throw new UnsupportedConstruct(`${k}() arity`);
      return this.node(eu, [this.expr(v[0])], [RELOC.CHILD]);
    }
    const eb = EXT_BINARY[k];
    if (eb !== undefined) {
      if (!Array.isArray(v) || v.length !== 2) throw new UnsupportedConstruct(`${k}() arity`);
      return this.node(eb, [this.expr(v[0]), this.expr(v[1])], [RELOC.CHILD, RELOC.CHILD]);
    }
    throw new UnsupportedConstruct(
      Array.isArray(v) ? `extension function ${k}()` : `operator ${JSON.stringify(k)}`,
    );
  }

  /** principal/action/resource as 0/1/2 when `e` is that variable. */
  entityVar(e: Json): number | undefined {
    if (!isObj(e) || typeof e.Var !== "string") return undefined;
    const i = VARS[e.Var];
    return i !== undefined && i < 3 ? i : undefined;
  }

  /** The receiver of `.attr` / `has`: `context` there does not make the whole context observable. */
  recv(e: Json): number {
    if (isObj(e) && e.Var === "context" && Object.keys(e).length === 1) return this.node(OP.VAR, [3], [0]);
    return this.expr(e);
  }

  unary(op: number, v: Json): number {
    if (!isObj(v) || !("arg" in v)) throw new UnsupportedConstruct(`operator ${op}`);
    return this.node(op, [this.expr(v.arg)], [RELOC.CHILD]);
  }

  // ---- scopes ----

  scope(which: "principal" | "action" | "resource", c: Json): number | undefined {
    const varIdx = VARS[which]!;
    if (!isObj(c)) throw new UnsupportedConstruct(`${which} scope`);
    switch (c.op) {
      case "All":
        return undefined;
      case "==": {
        if ("slot" in c) throw new UnsupportedConstruct("template slot");
        // checked by the scope prefilter alone (both loaders apply it before the body)
        this.filter[which] = this.constant(this.uid(c.entity, `${which} scope`));
        return undefined;
      }
      case "in": {
        if ("slot" in c) throw new UnsupportedConstruct("template slot");
        if ("entities" in c) {
          if (!Array.isArray(c.entities)) throw new UnsupportedConstruct(`${which} scope`);
          const set: ConstValue = { t: "set", v: c.entities.map((x) => this.uid(x, `${which} scope`)) };
          return this.node(OP.VARIN, [varIdx, this.constNode(set)], [0, RELOC.CHILD]);
        }
        const u = this.uid(c.entity, `${which} scope`);
        return this.node(OP.VARIN, [varIdx, this.constNode(u)], [0, RELOC.CHILD]);
      }
      case "is": {
        const ts = this.str(String(c.entity_type));
        // the type test is the prefilter's (the action has no `is` filter: it stays in the body)
        let isNode: number | undefined;
        if (which === "principal") this.filter.principalIs = ts;
        else if (which === "resource") this.filter.resourceIs = ts;
        else isNode = this.node(OP.ENTIS, [varIdx, ts], [0, RELOC.STR]);
        if (c.in === undefined) return isNode;
        const inC = c.in as Obj;
        if ("slot" in inC) throw new UnsupportedConstruct("template slot");
        const u = this.uid(inC.entity, `${which} scope`);
        const inNode = this.node(OP.VARIN, [varIdx, this.constNode(u)], [0, RELOC.CHILD]);
        return isNode === undefined
          ? inNode
          : this.node(OP.AND, [isNode, inNode], [RELOC.CHILD, RELOC.CHILD]);
      }
    }
    throw new UnsupportedConstruct(`${which} scope operator ${JSON.stringify(c.op)}`);
  }

  policy(p: Obj): number {
    // Scope constraints never error, so their order is free: the action first (most selective),
    // then principal and resource.
    const parts: number[] = [];
    for (const w of ["action", "principal", "resource"] as const) {
      const n = this.scope(w, p[w]);
      if (n !== undefined) parts.push(n);
    }
    const conds = p.conditions;
    if (!Array.isArray(conds)) throw new UnsupportedConstruct("conditions");
    for (const c of conds as Obj[]) {
      const body = this.expr(c.body);
      if (c.kind === "when") parts.push(body);
      else if (c.kind === "unless") parts.push(this.node(OP.NOT, [body], [RELOC.CHILD]));
      else throw new UnsupportedConstruct(`condition kind ${String(c.kind)}`);
    }
    if (parts.length === 0) return this.constNode({ t: "bool", v: true });
    // left-nested, as Cedar builds `scope && when && !unless ...`
    let acc = parts[0]!;
    for (let i = 1; i < parts.length; i++) {
      acc = this.node(OP.AND, [acc, parts[i]!], [RELOC.CHILD, RELOC.CHILD]);
    }
    return acc;
  }
}

export interface CompileResult {
  program?: PolicyProgram;
  /** Each unsupported construct, with the policy it occurs in. */
  unsupported: { policyId: string; construct: string }[];
}

/** Compile policies (id → Cedar JSON policy), in the given order. */
export function compileProgram(policies: [string, unknown][], extCheck: ExtLiteralCheck): CompileResult {
  // first pass: find the boolean nodes shared by several parents or policies; second: wrap them in MEMO
  const first = build(policies, extCheck, new Set());
  if (!first.program) return first;
  const { program, unsupported } = first.shared.size ? build(policies, extCheck, first.shared) : first;
  return { program, unsupported };
}

function build(
  policies: [string, unknown][],
  extCheck: ExtLiteralCheck,
  memo: ReadonlySet<number>,
): CompileResult & { shared: Set<number> } {
  const b = new Builder(extCheck, memo);
  const out: ProgramPolicy[] = [];
  const unsupported: { policyId: string; construct: string }[] = [];
  for (const [id, json] of policies) {
    try {
      if (!isObj(json)) throw new UnsupportedConstruct("policy JSON");
      if (json.effect !== "permit" && json.effect !== "forbid") {
        throw new UnsupportedConstruct(`effect ${String(json.effect)}`);
      }
      b.filter = {};
      const body = b.policy(json);
      b.body(body);
      out.push({
        id,
        effect: json.effect,
        body,
        ...(Object.keys(b.filter).length ? { filter: b.filter } : {}),
      });
    } catch (e) {
      if (!(e instanceof UnsupportedConstruct)) throw e;
      unsupported.push({ policyId: id, construct: e.construct });
    }
  }
  if (unsupported.length) return { unsupported, shared: new Set() };
  return {
    unsupported,
    shared: b.sharedBooleans(),
    program: {
      format: PROGRAM_FORMAT,
      access: {
        attrs: [...b.attrNames].sort(),
        tags: b.tagKeys ? [...b.tagKeys].sort() : null,
        wholeContext: b.wholeContext,
      },
      policies: out,
      code: b.code,
      relocs: b.relocs,
      strings: b.strings,
      consts: b.consts,
    },
  };
}
