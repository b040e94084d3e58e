/**
 * The qhx_authz filter configuration (docs/filter.md): what the control plane hands the Envoy/Istio
 * Wasm filter as its plugin configuration. A small JSON object whose `config` member is base64 of a
 * compact little-endian binary: options, the string table, the compiled Cedar decision program, the
 * workload directory and the JWT-SVID keys of each trust domain. The filter parses it defensively
 * (filters/qhx_authz/config.ts) and swaps it in atomically; a configuration it refuses leaves the
 * previous one in force.
 *
 *   encodeFilterConfig({ policy, bundles, directory?, options }) → string
 *   decodeFilterConfig(string) → the decoded, validated structure (tests, tooling)
 */
import type { KeyObject } from "node:crypto";
import { QhxError, ValidationError } from "../core/errors.ts";
import type { TrustBundle } from "../core/bundle-types.ts";
import { type CryptoPolicy, resolveCryptoPolicy, type Subject } from "../core/crypto-policy.ts";
import { isValidSpiffeId } from "../core/spiffeid.ts";
import type { ConstValue, PolicyProgram } from "../policy/compiler.ts";
import { PROGRAM_FORMATS } from "../policy/compiler.ts";

export const FILTER_CONFIG_FORMAT = "qhx-authz-config/1";
const MAGIC = 0x46584851; // "QHXF"
const VERSION = 1;
/** Version 2: version 1 plus a trailing releasability section (written only when releasability is set). */
const VERSION_RELEASABILITY = 2;

export const FLAG = {
  xfcc: 1,
  jwt: 2,
  jwtRequired: 4,
  jwtPrincipal: 8,
  peerHeader: 16,
  debugTrap: 0x80000000,
} as const;

export const FILTER_JWT_ALGS = ["ES256", "ML-DSA-44", "ML-DSA-65", "ML-DSA-87"] as const;
export type FilterJwtAlg = (typeof FILTER_JWT_ALGS)[number];
const ALG_CODE: Record<FilterJwtAlg, number> = { ES256: 1, "ML-DSA-44": 2, "ML-DSA-65": 3, "ML-DSA-87": 4 };
const KEY_BYTES: Record<FilterJwtAlg, number> = {
  ES256: 65,
  "ML-DSA-44": 1312,
  "ML-DSA-65": 1952,
  "ML-DSA-87": 2592,
};

/** Strings the filter itself uses (filters/qhx_authz/config.ts WK_*), in that order. */
export const WELL_KNOWN_STRINGS = [
  "Workload",
  "Namespace",
  "TrustDomain",
  "Service",
  "Route",
  "Action",
  "http",
  "spiffeId",
  "trustDomain",
  "path",
  "namespace",
  "assurance",
  "selectors",
  "name",
  "pathPrefix",
  "time",
  "method",
  "headers",
  "tls",
  "mode",
  "pq",
  "content-type",
  "user-agent",
  "x-request-id",
  "x-qhx-tenant",
  "none",
  "default",
  "mtls",
  "xfcc",
  "jwt",
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "PATCH",
  "DELETE",
  "OPTIONS",
] as const;

/** A JWT-SVID key for the filter: raw public key bytes (ES256: 65-byte uncompressed point). */
export interface FilterJwtKey {
  kid: string;
  alg: FilterJwtAlg;
  publicKey: Uint8Array;
}

export interface FilterDirectoryEntry {
  spiffeId: string;
  namespace: string;
  assurance?: string;
  labels?: Record<string, string>;
}

export interface FilterOptions {
  /** Where the peer identity comes from: the TLS connection (default) or x-forwarded-client-cert. */
  identitySource?: "connection" | "xfcc";
  /** Header carrying a JWT-SVID (lower case); `authorization` expects `Bearer <token>`. Unset: no JWT. */
  jwtHeader?: string;
  /** Accepted audiences (one at least when jwtHeader is set). */
  audiences?: string[];
  /** Deny requests without a JWT-SVID (default false: the token is optional). */
  jwtRequired?: boolean;
  /** The JWT-SVID's subject is the principal (default true); false: it is verified, the peer decides. */
  jwtPrincipal?: boolean;
  /** exp/nbf leeway in seconds, 0..300 (default 30). */
  leewaySeconds?: number;
  /** Header naming why a request was denied (default x-qhx-authz-reason). */
  reasonHeader?: string;
  /** Set this request header to the principal's SPIFFE ID on allowed requests (default: not set). */
  peerHeader?: string;
  /** Route path prefixes ("/api/"): a request under one is a Route resource in its Service. */
  routes?: string[];
  /** Test builds only: a request with header x-qhx-debug-trap makes the filter trap. */
  debugTrap?: boolean;
}

/** What policy input the encoder accepts: a signed policy version, a compiled policy set, or a program. */
export type FilterPolicyInput =
  | {
      engine: "compiled" | "cedar";
      program: PolicyProgram | null | undefined;
      unsupported?: readonly unknown[];
    }
  | PolicyProgram;

export type FilterBundles =
  readonly TrustBundle[] | ReadonlyMap<string, TrustBundle> | Record<string, FilterJwtKey[]>;

/**
 * Ingress releasability (crypto policy `accept_from`, docs/crypto-policy.md): a peer of a foreign trust
 * domain not accepted here is refused (403 `not releasable: …`) before policy evaluation. The local
 * trust domain is always accepted. `filterReleasability` computes it from a crypto policy.
 */
export interface FilterReleasability {
  localTrustDomain: string;
  /** foreign trust domains whose identities are accepted, or "*" for any */
  acceptFrom: readonly string[] | "*";
  /** the deciding rule, quoted in the refusal reason (e.g. `crypto policy "ns:payments"`) */
  rule?: string;
}

export interface FilterConfigInput {
  policy: FilterPolicyInput;
  bundles: FilterBundles;
  directory?: FilterDirectoryEntry[];
  options?: FilterOptions;
  releasability?: FilterReleasability;
}

const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;

/**
 * The releasability section for a workload of `local` (trust domain, namespace) under a crypto policy:
 * the resolved `accept_from` with coalitions expanded to their members — the same answer as
 * `checkReleasable(policy, { local, peer, direction: "ingress" })` for every peer.
 */
export function filterReleasability(policy: CryptoPolicy, local: Subject): FilterReleasability {
  const f = resolveCryptoPolicy(policy, local).acceptFrom;
  const rule = `crypto policy "${f.rule}" accept_from: ${f.value.length ? f.value.join(", ") : "none"}`;
  if (f.value.includes("*")) return { localTrustDomain: local.trustDomain, acceptFrom: "*", rule };
  const tds = new Set<string>();
  for (const t of f.value) {
    if (t.startsWith("coalition:")) for (const m of policy.coalitions[t.slice(10)] ?? []) tds.add(m);
    else tds.add(t);
  }
  tds.delete(local.trustDomain);
  return { localTrustDomain: local.trustDomain, acceptFrom: [...tds].sort(), rule };
}

function releasabilityOf(r: FilterReleasability | undefined): FilterReleasability | undefined {
  if (r === undefined) return undefined;
  if (r === null || typeof r !== "object") throw invalid("releasability", "must be an object");
  if (typeof r.localTrustDomain !== "string" || !TRUST_DOMAIN.test(r.localTrustDomain))
    throw invalid("releasability.localTrustDomain", `invalid trust domain "${String(r.localTrustDomain)}"`);
  if (r.acceptFrom !== "*") {
    if (!Array.isArray(r.acceptFrom) || r.acceptFrom.length > 4096)
      throw invalid("releasability.acceptFrom", 'must be "*" or a list of at most 4096 trust domains');
    const seen = new Set<string>();
    for (const td of r.acceptFrom) {
      if (typeof td !== "string" || !TRUST_DOMAIN.test(td))
        throw invalid("releasability.acceptFrom", `invalid trust domain "${String(td)}"`);
      if (seen.has(td)) throw invalid("releasability.acceptFrom", `duplicate trust domain "${td}"`);
      seen.add(td);
    }
  }
  if (
    r.rule !== undefined &&
    (typeof r.rule !== "string" || r.rule.length > 1024 || !/^[\x20-\x7e]*$/.test(r.rule))
  )
    throw invalid("releasability.rule", "at most 1024 printable ASCII characters");
  return r;
}

const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;

function invalid(field: string, message: string): ValidationError {
  return new ValidationError(message, field, "QHX_FILTER_CONFIG_INVALID");
}

function programOf(p: FilterPolicyInput): PolicyProgram {
  if (p === null || typeof p !== "object")
    throw invalid("policy", "a policy version, policy set or program is required");
  if ("format" in p && typeof p.format === "string" && PROGRAM_FORMATS.includes(p.format)) return p;
  const q = p as { engine?: unknown; program?: PolicyProgram | null; unsupported?: readonly unknown[] };
  if (q.engine === "cedar" || !q.program) {
    const why =
      Array.isArray(q.unsupported) && q.unsupported.length
        ? `: ${q.unsupported.map((u) => JSON.stringify(u)).join(", ")}`
        : "";
    throw new QhxError(
      "QHX_FILTER_POLICY_UNSUPPORTED",
      `this policy set is evaluated by cedar-wasm (no compiled decision program)${why}; the filter can only run compiled policies`,
      { hint: "rewrite the named constructs, or enforce this policy set outside the filter" },
    );
  }
  if (!PROGRAM_FORMATS.includes(q.program.format))
    throw invalid("policy.program", `unsupported program format ${String(q.program.format)}`);
  return q.program;
}

function b64urlToBytes(s: unknown, field: string): Uint8Array {
  if (typeof s !== "string") throw invalid(field, "missing key material");
  return new Uint8Array(Buffer.from(s, "base64url"));
}

/** Raw key bytes and filter alg of a public KeyObject (EC P-256 or ML-DSA), or undefined for other types. */
export function filterKeyOf(kid: string, key: KeyObject): FilterJwtKey | undefined {
  const jwk = key.export({ format: "jwk" }) as Record<string, unknown>;
  if (jwk.kty === "EC" && jwk.crv === "P-256") {
    const x = b64urlToBytes(jwk.x, "x");
    const y = b64urlToBytes(jwk.y, "y");
    const out = new Uint8Array(65);
    out[0] = 4;
    out.set(x, 1 + 32 - x.length);
    out.set(y, 33 + 32 - y.length);
    return { kid, alg: "ES256", publicKey: out };
  }
  if (jwk.kty === "AKP" && typeof jwk.alg === "string" && jwk.alg in KEY_BYTES && jwk.alg !== "ES256") {
    return { kid, alg: jwk.alg as FilterJwtAlg, publicKey: b64urlToBytes(jwk.pub, "pub") };
  }
  return undefined;
}

function keysOf(bundles: FilterBundles): [string, FilterJwtKey[]][] {
  const out: [string, FilterJwtKey[]][] = [];
  const fromBundle = (b: TrustBundle) => {
    const keys: FilterJwtKey[] = [];
    for (const a of b.jwtAuthorities) {
      const k = filterKeyOf(a.kid, a.publicKey);
      if (k) keys.push(k); // keys the filter cannot use (RSA, P-384, Ed25519) are left out
    }
    out.push([b.trustDomain, keys]);
  };
  if (Array.isArray(bundles)) for (const b of bundles as TrustBundle[]) fromBundle(b);
  else if (bundles instanceof Map) for (const b of bundles.values()) fromBundle(b);
  else if (bundles && typeof bundles === "object") {
    for (const [td, keys] of Object.entries(bundles as Record<string, FilterJwtKey[]>)) {
      if (!Array.isArray(keys)) throw invalid(`bundles.${td}`, "must be a list of keys");
      out.push([td, keys]);
    }
  } else throw invalid("bundles", "trust bundles are required");
  for (const [td, keys] of out) {
    if (!/^[a-z0-9._-]{1,255}$/.test(td)) throw invalid("bundles", `invalid trust domain "${td}"`);
    const kids = new Set<string>();
    for (const k of keys) {
      if (typeof k.kid !== "string" || k.kid.length === 0 || k.kid.length > 1024)
        throw invalid(`bundles.${td}`, "kid must be a non-empty string");
      if (kids.has(k.kid)) throw invalid(`bundles.${td}`, `duplicate kid "${k.kid}"`);
      kids.add(k.kid);
      if (!(FILTER_JWT_ALGS as readonly string[]).includes(k.alg))
        throw invalid(`bundles.${td}.${k.kid}`, `unsupported alg ${String(k.alg)}`);
      if (!(k.publicKey instanceof Uint8Array) || k.publicKey.length !== KEY_BYTES[k.alg]) {
        throw invalid(`bundles.${td}.${k.kid}`, `${k.alg} public key must be ${KEY_BYTES[k.alg]} bytes`);
      }
      if (k.alg === "ES256" && k.publicKey[0] !== 4)
        throw invalid(`bundles.${td}.${k.kid}`, "ES256 key must be an uncompressed point");
    }
  }
  return out;
}

class Writer {
  private buf = new Uint8Array(4096);
  private view = new DataView(this.buf.buffer);
  len = 0;
  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
    this.view = new DataView(b.buffer);
  }
  u32(v: number): void {
    this.room(4);
    this.view.setUint32(this.len, v >>> 0, true);
    this.len += 4;
  }
  i32(v: number): void {
    this.room(4);
    this.view.setInt32(this.len, v, true);
    this.len += 4;
  }
  i64(v: bigint): void {
    this.room(8);
    this.view.setBigInt64(this.len, v, true);
    this.len += 8;
  }
  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  str(s: string | Uint8Array): void {
    const b = typeof s === "string" ? Buffer.from(s, "utf8") : s;
    this.u32(b.length);
    this.bytes(b);
  }
  done(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

function wellFormed(s: string, field: string): string {
  if (typeof s !== "string" || !s.isWellFormed()) throw invalid(field, "must be a well-formed string");
  return s;
}

function writeConst(w: Writer, c: ConstValue, nStrings: number): void {
  switch (c.t) {
    case "bool":
      w.u32(1);
      w.u32(c.v ? 1 : 0);
      return;
    case "long":
      w.u32(2);
      w.i64(BigInt(c.v));
      return;
    case "str":
      w.u32(3);
      w.u32(c.s);
      return;
    case "ent":
      w.u32(4);
      w.u32(c.type);
      w.u32(c.id);
      return;
    case "set":
      w.u32(5);
      w.u32(c.v.length);
      for (const x of c.v) writeConst(w, x, nStrings);
      return;
    case "rec":
      w.u32(6);
      w.u32(c.v.length);
      for (const [k, v] of c.v) {
        w.u32(k);
        writeConst(w, v, nStrings);
      }
      return;
    case "ip":
      w.u32(7);
      w.u32(c.v6 ? 1 : 0);
      w.u32(c.prefix);
      w.bytes(Uint8Array.from({ length: 16 }, (_, i) => c.bytes[i] ?? 0));
      return;
    case "dec":
      w.u32(8);
      w.i64(BigInt(c.v));
      return;
  }
}

/** Encode the filter's plugin configuration (a JSON string). Throws QhxError / ValidationError. */
export function encodeFilterConfig(input: FilterConfigInput): string {
  if (input === null || typeof input !== "object") throw invalid("", "configuration input required");
  const program = programOf(input.policy);
  const o = input.options ?? {};
  const source = o.identitySource ?? "connection";
  if (source !== "connection" && source !== "xfcc")
    throw invalid("options.identitySource", 'must be "connection" or "xfcc"');
  let flags = source === "xfcc" ? FLAG.xfcc : 0;
  const jwtHeader = o.jwtHeader ?? "";
  const audiences = o.audiences ?? [];
  if (jwtHeader) {
    if (!HEADER_NAME.test(jwtHeader) || jwtHeader.length > 256)
      throw invalid("options.jwtHeader", "must be a lower-case header name");
    if (audiences.length === 0)
      throw invalid("options.audiences", "at least one audience is required with jwtHeader");
    flags |= FLAG.jwt;
    if (o.jwtRequired) flags |= FLAG.jwtRequired;
    if (o.jwtPrincipal ?? true) flags |= FLAG.jwtPrincipal;
  } else if (o.jwtRequired) throw invalid("options.jwtRequired", "needs jwtHeader");
  if (
    audiences.length > 64 ||
    audiences.some((a) => typeof a !== "string" || a.length === 0 || a.length > 1024)
  ) {
    throw invalid("options.audiences", "1 to 64 non-empty strings");
  }
  const leeway = o.leewaySeconds ?? 30;
  if (!Number.isInteger(leeway) || leeway < 0 || leeway > 300)
    throw invalid("options.leewaySeconds", "must be an integer 0..300");
  const reasonHeader = o.reasonHeader ?? "x-qhx-authz-reason";
  if (!HEADER_NAME.test(reasonHeader) || reasonHeader.length > 256)
    throw invalid("options.reasonHeader", "must be a lower-case header name");
  const peerHeader = o.peerHeader ?? "";
  if (peerHeader) {
    if (!HEADER_NAME.test(peerHeader) || peerHeader.length > 256)
      throw invalid("options.peerHeader", "must be a lower-case header name");
    flags |= FLAG.peerHeader;
  }
  const routes = o.routes ?? [];
  for (const r of routes) {
    if (typeof r !== "string" || !r.startsWith("/") || r.length > 2048 || !r.isWellFormed()) {
      throw invalid("options.routes", `route prefix "${String(r)}" must start with /`);
    }
  }
  if (new Set(routes).size !== routes.length) throw invalid("options.routes", "duplicate route prefix");
  if (o.debugTrap) flags |= FLAG.debugTrap;
  const keys = keysOf(input.bundles);
  const rel = releasabilityOf(input.releasability);

  // string table: the program's (same indices), then the filter's and the directory's
  const strings = program.strings.map((s, i) => wellFormed(s, `policy.program.strings[${i}]`));
  const index = new Map<string, number>();
  strings.forEach((s, i) => {
    if (index.has(s)) throw invalid("policy.program.strings", `duplicate string "${s}"`);
    index.set(s, i);
  });
  const sid = (s: string): number => {
    let i = index.get(s);
    if (i === undefined) {
      i = strings.length;
      strings.push(s);
      index.set(s, i);
    }
    return i;
  };
  for (const s of WELL_KNOWN_STRINGS) sid(s);
  const dir = input.directory ?? [];
  const dirSeen = new Set<string>();
  const dirRows = dir.map((d, i) => {
    const f = `directory[${i}]`;
    if (typeof d.spiffeId !== "string" || !isValidSpiffeId(d.spiffeId))
      throw invalid(`${f}.spiffeId`, "not a SPIFFE ID");
    if (dirSeen.has(d.spiffeId)) throw invalid(`${f}.spiffeId`, "duplicate SPIFFE ID");
    dirSeen.add(d.spiffeId);
    if (typeof d.namespace !== "string" || d.namespace.length === 0)
      throw invalid(`${f}.namespace`, "required");
    const labels = Object.entries(d.labels ?? {}).map(([k, v]) => {
      if (typeof v !== "string") throw invalid(`${f}.labels.${k}`, "must be a string");
      return [sid(wellFormed(k, `${f}.labels`)), sid(wellFormed(v, `${f}.labels.${k}`))] as const;
    });
    return {
      s: sid(d.spiffeId),
      ns: sid(wellFormed(d.namespace, `${f}.namespace`)),
      as: sid(wellFormed(d.assurance ?? "none", `${f}.assurance`)),
      labels,
    };
  });

  const w = new Writer();
  w.u32(MAGIC);
  w.u32(rel ? VERSION_RELEASABILITY : VERSION);
  w.u32(flags);
  w.str(jwtHeader);
  w.str(reasonHeader);
  w.str(peerHeader);
  w.u32(leeway);
  w.u32(audiences.length);
  for (const a of audiences) w.str(a);
  w.u32(routes.length);
  for (const r of routes) w.str(r);
  w.u32(strings.length);
  for (const s of strings) w.str(s);
  w.u32(program.policies.length);
  for (const p of program.policies) {
    w.str(wellFormed(p.id, "policy.program.policies.id"));
    w.u32(p.effect === "forbid" ? 2 : 1);
    w.u32(p.body);
    const f = p.filter ?? {};
    for (const v of [f.action, f.principal, f.resource, f.principalIs, f.resourceIs]) w.i32(v ?? -1);
  }
  w.u32(program.code.length);
  for (const x of program.code) w.i32(x);
  w.u32(program.relocs.length / 2);
  for (const x of program.relocs) w.u32(x);
  w.u32(program.consts.length);
  for (const c of program.consts) writeConst(w, c, strings.length);
  w.u32(dirRows.length);
  for (const d of dirRows) {
    w.u32(d.s);
    w.u32(d.ns);
    w.u32(d.as);
    w.u32(d.labels.length);
    for (const [k, v] of d.labels) {
      w.u32(k);
      w.u32(v);
    }
  }
  const flat = keys.flatMap(([td, ks]) => ks.map((k) => [td, k] as const));
  w.u32(flat.length);
  for (const [td, k] of flat) {
    w.str(td);
    w.str(k.kid);
    w.u32(ALG_CODE[k.alg]);
    w.str(k.publicKey);
  }
  if (rel) {
    // releasability: local trust domain, mode (0 list, 1 any), rule text, accepted foreign trust domains
    w.str(rel.localTrustDomain);
    w.u32(rel.acceptFrom === "*" ? 1 : 0);
    w.str(rel.rule ?? "");
    const list = rel.acceptFrom === "*" ? [] : rel.acceptFrom;
    w.u32(list.length);
    for (const td of list) w.str(td);
  }
  return JSON.stringify({ format: FILTER_CONFIG_FORMAT, config: Buffer.from(w.done()).toString("base64") });
}

// ---- decoding (tests, tooling) ----

export interface DecodedFilterConfig {
  flags: number;
  options: Required<Pick<FilterOptions, "identitySource" | "leewaySeconds" | "reasonHeader">> & {
    jwtHeader: string;
    audiences: string[];
    jwtRequired: boolean;
    jwtPrincipal: boolean;
    peerHeader: string;
    routes: string[];
    debugTrap: boolean;
  };
  strings: string[];
  policies: { id: string; effect: "permit" | "forbid"; body: number; filter: number[] }[];
  code: number[];
  relocs: number[];
  consts: number;
  directory: { spiffeId: string; namespace: string; assurance: string; labels: Record<string, string> }[];
  keys: { trustDomain: string; kid: string; alg: FilterJwtAlg; publicKey: Uint8Array }[];
  /** absent in version 1 configurations */
  releasability?: { localTrustDomain: string; acceptFrom: string[] | "*"; rule: string };
}

class Reader {
  private view: DataView;
  pos = 0;
  private bytes: Uint8Array;
  constructor(b: Uint8Array) {
    this.bytes = b;
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  need(n: number): void {
    if (this.pos + n > this.bytes.length) throw invalid("config", "truncated");
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i64(): bigint {
    this.need(8);
    const v = this.view.getBigInt64(this.pos, true);
    this.pos += 8;
    return v;
  }
  raw(n: number): Uint8Array {
    this.need(n);
    const b = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  str(): string {
    const n = this.u32();
    return new TextDecoder("utf-8", { fatal: true }).decode(this.raw(n));
  }
  count(min: number): number {
    const n = this.u32();
    if (n * min > this.bytes.length - this.pos) throw invalid("config", "count out of range");
    return n;
  }
  get left(): number {
    return this.bytes.length - this.pos;
  }
}

function skipConst(r: Reader, nStrings: number, depth = 0): void {
  if (depth > 64) throw invalid("config", "constant nested too deeply");
  const t = r.u32();
  switch (t) {
    case 1:
      if (r.u32() > 1) throw invalid("config", "bad boolean");
      return;
    case 2:
    case 8:
      r.i64();
      return;
    case 3:
      if (r.u32() >= nStrings) throw invalid("config", "string index out of range");
      return;
    case 4:
      if (r.u32() >= nStrings || r.u32() >= nStrings) throw invalid("config", "string index out of range");
      return;
    case 5:
      for (let i = r.count(4); i > 0; i--) skipConst(r, nStrings, depth + 1);
      return;
    case 6:
      for (let i = r.count(8); i > 0; i--) {
        if (r.u32() >= nStrings) throw invalid("config", "string index out of range");
        skipConst(r, nStrings, depth + 1);
      }
      return;
    case 7:
      r.u32();
      r.u32();
      r.raw(16);
      return;
  }
  throw invalid("config", `unknown constant tag ${t}`);
}

/**
 * Parse and validate a filter configuration string: the filter's structural checks (lengths, counts,
 * indices, key sizes), in TypeScript. The filter additionally verifies the program's code node by node.
 */
export function decodeFilterConfig(text: string): DecodedFilterConfig {
  let outer: unknown;
  try {
    outer = JSON.parse(text);
  } catch (e) {
    throw invalid("", `not JSON: ${String(e)}`);
  }
  const o = outer as { format?: unknown; config?: unknown };
  if (o === null || typeof o !== "object" || Array.isArray(o)) throw invalid("", "must be a JSON object");
  for (const k of Object.keys(o)) if (k !== "format" && k !== "config") throw invalid(k, "unknown key");
  if (o.format !== FILTER_CONFIG_FORMAT) throw invalid("format", `must be "${FILTER_CONFIG_FORMAT}"`);
  if (typeof o.config !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(o.config) || o.config.length % 4) {
    throw invalid("config", "must be base64");
  }
  const r = new Reader(new Uint8Array(Buffer.from(o.config, "base64")));
  if (r.u32() !== MAGIC) throw invalid("config", "bad magic");
  const version = r.u32();
  if (version !== VERSION && version !== VERSION_RELEASABILITY)
    throw invalid("config", "unsupported version");
  const flags = r.u32();
  const jwtHeader = r.str();
  const reasonHeader = r.str();
  const peerHeader = r.str();
  const leewaySeconds = r.u32();
  if (leewaySeconds > 300) throw invalid("config", "leeway beyond 300 s");
  const audiences = Array.from({ length: r.count(4) }, () => r.str());
  const routes = Array.from({ length: r.count(4) }, () => r.str());
  const strings = Array.from({ length: r.count(4) }, () => r.str());
  if (new Set(strings).size !== strings.length) throw invalid("config", "duplicate string");
  for (const s of WELL_KNOWN_STRINGS)
    if (!strings.includes(s)) throw invalid("config", `missing well-known string "${s}"`);
  const policies = Array.from({ length: r.count(28) }, () => {
    const id = r.str();
    const e = r.u32();
    if (e !== 1 && e !== 2) throw invalid("config", "bad effect");
    const body = r.u32();
    const filter = [r.i32(), r.i32(), r.i32(), r.i32(), r.i32()];
    return { id, effect: e === 2 ? ("forbid" as const) : ("permit" as const), body, filter };
  });
  const code = Array.from({ length: r.count(4) }, () => r.i32());
  const relocs = Array.from({ length: r.count(8) * 2 }, () => r.u32());
  const nConsts = r.count(4);
  for (let i = 0; i < nConsts; i++) skipConst(r, strings.length);
  const directory = Array.from({ length: r.count(16) }, () => {
    const s = r.u32();
    const ns = r.u32();
    const as = r.u32();
    const labels: Record<string, string> = {};
    for (let n = r.count(8); n > 0; n--) {
      const k = r.u32();
      const v = r.u32();
      if (k >= strings.length || v >= strings.length) throw invalid("config", "label out of range");
      labels[strings[k]!] = strings[v]!;
    }
    if (s >= strings.length || ns >= strings.length || as >= strings.length)
      throw invalid("config", "directory index out of range");
    return { spiffeId: strings[s]!, namespace: strings[ns]!, assurance: strings[as]!, labels };
  });
  const keys = Array.from({ length: r.count(16) }, () => {
    const trustDomain = r.str();
    const kid = r.str();
    const code = r.u32();
    const alg = FILTER_JWT_ALGS[code - 1];
    if (!alg) throw invalid("config", `unknown key alg ${code}`);
    const n = r.u32();
    if (n !== KEY_BYTES[alg]) throw invalid("config", `${alg} key must be ${KEY_BYTES[alg]} bytes`);
    return { trustDomain, kid, alg, publicKey: r.raw(n) };
  });
  let releasability: DecodedFilterConfig["releasability"];
  if (version === VERSION_RELEASABILITY) {
    const localTrustDomain = r.str();
    const mode = r.u32();
    if (mode > 1) throw invalid("config", "bad releasability mode");
    const rule = r.str();
    const list = Array.from({ length: r.count(4) }, () => r.str());
    for (const td of [localTrustDomain, ...list])
      if (!TRUST_DOMAIN.test(td)) throw invalid("config", `releasability: invalid trust domain "${td}"`);
    if (mode === 1 && list.length) throw invalid("config", 'releasability: "*" with a list');
    releasability = { localTrustDomain, acceptFrom: mode === 1 ? "*" : list, rule };
  }
  if (r.left !== 0) throw invalid("config", "trailing bytes");
  return {
    flags,
    options: {
      identitySource: flags & FLAG.xfcc ? "xfcc" : "connection",
      leewaySeconds,
      reasonHeader,
      jwtHeader,
      audiences,
      jwtRequired: (flags & FLAG.jwtRequired) !== 0,
      jwtPrincipal: (flags & FLAG.jwtPrincipal) !== 0,
      peerHeader,
      routes,
      debugTrap: (flags & FLAG.debugTrap) !== 0,
    },
    strings,
    policies,
    code,
    relocs,
    consts: nConsts,
    directory,
    keys,
    ...(releasability ? { releasability } : {}),
  };
}
