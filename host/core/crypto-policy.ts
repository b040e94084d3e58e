/**
 * Crypto policy: which signature algorithms, tunnel key-exchange modes, SVID lifetimes and assurance
 * levels a workload may have, declared per namespace, per trust domain and per coalition (a named set of
 * trust domains), plus releasability — which foreign trust domains a namespace's identities may be
 * presented to (egress) or accepted from (ingress). Pure: no I/O, no clock.
 *
 * Resolution is field by field, most specific first: the namespace rule, then the rule of the workload's
 * trust domain, then the rule of the coalition that trust domain belongs to, then the policy's `default`
 * rule, then the built-in default (which allows everything QHx supports, so an empty policy changes
 * nothing). `signature_algorithms` (allowed + default) is one field: a rule sets both or neither.
 *
 * Document (JSON or YAML; snake_case):
 *   format: 1
 *   trust_domain: example.org          # the server this policy belongs to (set by the server on apply)
 *   coalitions: { alliance: [a.test, b.test] }
 *   default:      RULE
 *   coalition_rules: { alliance: RULE }
 *   trust_domains:   { example.org: RULE }
 *   namespaces:      { payments: RULE }  # namespaces of this policy's trust domain
 * RULE:
 *   signature_algorithms: { allowed: [ml-dsa-65, ec-p256], default: ml-dsa-65 }
 *   tunnel_modes: [pq]                 # allowed tunnel key exchange: mtls, pq
 *   max_x509_svid_ttl: 1h              # duration ("90s", "1h") or seconds
 *   max_jwt_svid_ttl: 5m
 *   min_assurance: key                 # token < key < hardware
 *   releasable_to: [partner.org, "coalition:alliance"]   # egress; "*" = any foreign trust domain
 *   accept_from:   ["*"]                                  # ingress
 *
 * Every violation is a QhxError `QHX_CRYPTO_POLICY` whose message names the deciding rule, e.g.
 * `crypto policy "ns:payments" forbids ECDSA-P256 (allowed: ML-DSA-65)`.
 */
import YAML from "yaml";
import { SVID_KEY_ALGS, type SvidKeyAlg, WORKLOAD_KEY_ALGS, type WorkloadKeyAlg } from "./alg.ts";
import { ASSURANCE_LEVELS, type Assurance } from "./assurance.ts";
import { formatDuration, parseDuration } from "./clock.ts";
import { QhxError, ValidationError } from "./errors.ts";
import { checkSpiffeId, SpiffeId, spiffeIdReason } from "./spiffeid.ts";

export const CRYPTO_POLICY_FORMAT = 1;
export const CRYPTO_POLICY_ERROR = "QHX_CRYPTO_POLICY";
export const TUNNEL_MODES = ["mtls", "pq"] as const;
export type TunnelMode = (typeof TUNNEL_MODES)[number];
/** Assurance levels, weakest first. */
export const ASSURANCE_ORDER: readonly Assurance[] = ["token", "key", "hardware"];
/** Same bound as entries' TTLs (366 days). */
const MAX_TTL_S = 366 * 24 * 60 * 60;

/** Names for operators and error messages. */
export const ALG_DISPLAY: Record<WorkloadKeyAlg, string> = {
  "mldsa44-ecdsa-p256": "ML-DSA-44+ECDSA-P256 (composite)",
  "mldsa65-ecdsa-p256": "ML-DSA-65+ECDSA-P256 (composite)",
  "mldsa87-ecdsa-p384": "ML-DSA-87+ECDSA-P384 (composite)",
  "ec-p256": "ECDSA-P256",
  "ec-p384": "ECDSA-P384",
  ed25519: "Ed25519",
  "ml-dsa-44": "ML-DSA-44",
  "ml-dsa-65": "ML-DSA-65",
  "ml-dsa-87": "ML-DSA-87",
};

export interface CryptoRule {
  signatureAlgorithms?: { allowed: WorkloadKeyAlg[]; default: WorkloadKeyAlg };
  tunnelModes?: TunnelMode[];
  /** seconds */
  maxX509SvidTtl?: number;
  /** seconds */
  maxJwtSvidTtl?: number;
  minAssurance?: Assurance;
  /** egress targets: trust domain names, "coalition:<name>" or "*" */
  releasableTo?: string[];
  /** ingress targets, same forms */
  acceptFrom?: string[];
}

export interface CryptoPolicy {
  format: number;
  trustDomain?: string;
  coalitions: Record<string, string[]>;
  default?: CryptoRule;
  coalitionRules: Record<string, CryptoRule>;
  trustDomains: Record<string, CryptoRule>;
  namespaces: Record<string, CryptoRule>;
}

/** The fields of a rule, in the order explain() lists them, camelCase -> snake_case. */
export const RULE_FIELDS = {
  signatureAlgorithms: "signature_algorithms",
  tunnelModes: "tunnel_modes",
  maxX509SvidTtl: "max_x509_svid_ttl",
  maxJwtSvidTtl: "max_jwt_svid_ttl",
  minAssurance: "min_assurance",
  releasableTo: "releasable_to",
  acceptFrom: "accept_from",
} as const satisfies Record<keyof CryptoRule, string>;
type RuleField = keyof typeof RULE_FIELDS;
const FIELD_ORDER = Object.keys(RULE_FIELDS) as RuleField[];
const SNAKE_FIELDS = new Map(FIELD_ORDER.map((f) => [RULE_FIELDS[f] as string, f]));

/** The built-in default: everything QHx supports, no caps beyond the entries' own, no releasability limit. */
export const BUILTIN_RULE: Required<CryptoRule> = {
  signatureAlgorithms: { allowed: [...SVID_KEY_ALGS], default: "ec-p256" },
  tunnelModes: [...TUNNEL_MODES],
  maxX509SvidTtl: MAX_TTL_S,
  maxJwtSvidTtl: MAX_TTL_S,
  minAssurance: "token",
  releasableTo: ["*"],
  acceptFrom: ["*"],
};
export const BUILTIN_RULE_NAME = "builtin";

export function emptyCryptoPolicy(trustDomain?: string): CryptoPolicy {
  return {
    format: CRYPTO_POLICY_FORMAT,
    ...(trustDomain ? { trustDomain } : {}),
    coalitions: {},
    coalitionRules: {},
    trustDomains: {},
    namespaces: {},
  };
}

// ---------------------------------------------------------------------------------------------------------
// Parsing and validation

const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const TOP_KEYS = [
  "format",
  "trust_domain",
  "coalitions",
  "default",
  "coalition_rules",
  "trust_domains",
  "namespaces",
] as const;

/** Parse policy text (JSON or YAML). Throws ValidationError naming the offending path. */
export function parseCryptoPolicyText(text: string, source = "crypto policy"): CryptoPolicy {
  let doc: unknown;
  try {
    doc = YAML.parse(text, { uniqueKeys: true });
  } catch (e) {
    throw new ValidationError(`${source}: ${(e as Error).message.split("\n")[0]}`);
  }
  return parseCryptoPolicy(doc ?? {});
}

/**
 * Validate a policy document (snake_case JSON form) and return the model. Checks, with the path of the
 * first offending setting in the message: known keys only, names, trust domains, algorithms (default
 * among allowed), modes, durations, assurance levels, releasability targets (coalitions must exist), rules
 * only for declared coalitions, and no trust domain in two coalitions that both have a rule.
 */
export function parseCryptoPolicy(doc: unknown): CryptoPolicy {
  const root = record(doc, "");
  for (const k of Object.keys(root)) {
    if (!(TOP_KEYS as readonly string[]).includes(k)) {
      throw new ValidationError(`unknown key (expected one of ${TOP_KEYS.join(", ")})`, quote(k));
    }
  }
  const format = root.format ?? CRYPTO_POLICY_FORMAT;
  if (format !== CRYPTO_POLICY_FORMAT) {
    throw new ValidationError(
      `unsupported format ${JSON.stringify(format)}; this build reads format ${CRYPTO_POLICY_FORMAT}`,
      "format",
    );
  }
  const p = emptyCryptoPolicy();
  if (root.trust_domain !== undefined) p.trustDomain = trustDomainName(root.trust_domain, "trust_domain");

  const coalitions = root.coalitions === undefined ? {} : record(root.coalitions, "coalitions");
  for (const [name, members] of Object.entries(coalitions)) {
    const f = `coalitions.${name}`;
    checkName(name, f, "coalition name");
    if (!Array.isArray(members) || members.length === 0) {
      throw new ValidationError(`must be a non-empty list of trust domain names`, f);
    }
    const seen = new Set<string>();
    p.coalitions[name] = members.map((m, i) => {
      const td = trustDomainName(m, `${f}[${i}]`);
      if (seen.has(td)) throw new ValidationError(`duplicate trust domain ${quote(td)}`, `${f}[${i}]`);
      seen.add(td);
      return td;
    });
  }
  const known = new Set(Object.keys(p.coalitions));
  if (root.default !== undefined) p.default = parseRule(root.default, "default", known);
  for (const [name, r] of Object.entries(
    root.coalition_rules === undefined ? {} : record(root.coalition_rules, "coalition_rules"),
  )) {
    const f = `coalition_rules.${name}`;
    if (!known.has(name)) {
      throw new ValidationError(
        `coalition ${quote(name)} is not declared under coalitions` +
          (known.size ? ` (declared: ${[...known].join(", ")})` : ""),
        f,
      );
    }
    p.coalitionRules[name] = parseRule(r, f, known);
  }
  for (const [td, r] of Object.entries(
    root.trust_domains === undefined ? {} : record(root.trust_domains, "trust_domains"),
  )) {
    const f = `trust_domains.${td}`;
    trustDomainName(td, f);
    p.trustDomains[td] = parseRule(r, f, known);
  }
  for (const [ns, r] of Object.entries(
    root.namespaces === undefined ? {} : record(root.namespaces, "namespaces"),
  )) {
    const f = `namespaces.${ns}`;
    checkName(ns, f, "namespace");
    p.namespaces[ns] = parseRule(r, f, known);
  }
  // a trust domain in two coalitions that both carry a rule: precedence between them would be arbitrary
  const ruled = Object.keys(p.coalitionRules);
  for (let i = 0; i < ruled.length; i++) {
    for (let j = i + 1; j < ruled.length; j++) {
      const a = ruled[i]!;
      const b = ruled[j]!;
      const shared = p.coalitions[a]!.filter((td) => p.coalitions[b]!.includes(td));
      if (shared.length) {
        throw new ValidationError(
          `coalitions ${quote(a)} and ${quote(b)} both have a rule and share ${shared.map(quote).join(", ")}; ` +
            `precedence between them would be ambiguous (give ${shared.length > 1 ? "these trust domains" : "it"} a trust_domains rule or drop one coalition rule)`,
          `coalition_rules.${b}`,
        );
      }
    }
  }
  return p;
}

function parseRule(raw: unknown, field: string, coalitions: Set<string>): CryptoRule {
  const r = record(raw, field);
  const out: CryptoRule = {};
  for (const k of Object.keys(r)) {
    if (!SNAKE_FIELDS.has(k)) {
      throw new ValidationError(
        `unknown rule field (expected one of ${Object.values(RULE_FIELDS).join(", ")})`,
        `${field}.${k}`,
      );
    }
  }
  if (r.signature_algorithms !== undefined) {
    const f = `${field}.signature_algorithms`;
    const sa = record(r.signature_algorithms, f);
    for (const k of Object.keys(sa)) {
      if (k !== "allowed" && k !== "default") {
        throw new ValidationError(`unknown field (expected allowed, default)`, `${f}.${k}`);
      }
    }
    if (!Array.isArray(sa.allowed) || sa.allowed.length === 0) {
      throw new ValidationError(
        `must be a non-empty list of ${WORKLOAD_KEY_ALGS.join(", ")}`,
        `${f}.allowed`,
      );
    }
    const allowed = uniqueList(sa.allowed, `${f}.allowed`, (v, ff) => alg(v, ff));
    const def = sa.default === undefined ? allowed[0]! : alg(sa.default, `${f}.default`);
    if (!allowed.includes(def)) {
      throw new ValidationError(
        `${ALG_DISPLAY[def]} is not among the allowed algorithms (${allowed.map((a) => ALG_DISPLAY[a]).join(", ")})`,
        `${f}.default`,
      );
    }
    out.signatureAlgorithms = { allowed, default: def };
  }
  if (r.tunnel_modes !== undefined) {
    const f = `${field}.tunnel_modes`;
    if (!Array.isArray(r.tunnel_modes) || r.tunnel_modes.length === 0) {
      throw new ValidationError(`must be a non-empty list of ${TUNNEL_MODES.join(", ")}`, f);
    }
    out.tunnelModes = uniqueList(r.tunnel_modes, f, (v, ff) => {
      if (typeof v !== "string" || !(TUNNEL_MODES as readonly string[]).includes(v)) {
        throw new ValidationError(`unknown tunnel mode ${show(v)} (use ${TUNNEL_MODES.join(" or ")})`, ff);
      }
      return v as TunnelMode;
    });
  }
  if (r.max_x509_svid_ttl !== undefined) {
    out.maxX509SvidTtl = ttlSeconds(r.max_x509_svid_ttl, `${field}.max_x509_svid_ttl`);
  }
  if (r.max_jwt_svid_ttl !== undefined) {
    out.maxJwtSvidTtl = ttlSeconds(r.max_jwt_svid_ttl, `${field}.max_jwt_svid_ttl`);
  }
  if (r.min_assurance !== undefined) {
    const v = r.min_assurance;
    if (typeof v !== "string" || !(ASSURANCE_LEVELS as readonly string[]).includes(v)) {
      throw new ValidationError(
        `unknown assurance level ${show(v)} (use ${ASSURANCE_ORDER.join(" < ")})`,
        `${field}.min_assurance`,
      );
    }
    out.minAssurance = v as Assurance;
  }
  for (const [k, camel] of [
    ["releasable_to", "releasableTo"],
    ["accept_from", "acceptFrom"],
  ] as const) {
    if (r[k] === undefined) continue;
    const f = `${field}.${k}`;
    if (!Array.isArray(r[k])) {
      throw new ValidationError(
        `must be a list of trust domains, "coalition:<name>" or "*" ([] releases to none)`,
        f,
      );
    }
    out[camel] = uniqueList(r[k] as unknown[], f, (v, ff) => target(v, ff, coalitions));
  }
  return out;
}

function target(v: unknown, field: string, coalitions: Set<string>): string {
  if (typeof v !== "string") throw new ValidationError(`must be a string (got ${typeName(v)})`, field);
  if (v === "*") return v;
  if (v.startsWith("coalition:")) {
    const name = v.slice("coalition:".length);
    if (!coalitions.has(name)) {
      throw new ValidationError(`coalition ${quote(name)} is not declared under coalitions`, field);
    }
    return v;
  }
  return trustDomainName(v, field);
}

function alg(v: unknown, field: string): WorkloadKeyAlg {
  if (typeof v !== "string" || !(WORKLOAD_KEY_ALGS as readonly string[]).includes(v)) {
    throw new ValidationError(
      `unknown signature algorithm ${show(v)} (use ${SVID_KEY_ALGS.join(", ")}; composite ML-DSA + classical is not supported yet except ${WORKLOAD_KEY_ALGS.slice(SVID_KEY_ALGS.length).join(", ")})`,
      field,
    );
  }
  return v as WorkloadKeyAlg;
}

function ttlSeconds(v: unknown, field: string): number {
  if (typeof v !== "string" && typeof v !== "number") {
    throw new ValidationError(`must be a duration such as "1h" or a number of seconds`, field);
  }
  let ms: number;
  try {
    ms = parseDuration(v);
  } catch (e) {
    throw new ValidationError((e as Error).message, field);
  }
  const s = Math.floor(ms / 1000);
  if (s < 1 || s > MAX_TTL_S) {
    throw new ValidationError(`must be between 1s and 366d (got ${show(v)})`, field);
  }
  return s;
}

function trustDomainName(v: unknown, field: string): string {
  if (typeof v !== "string")
    throw new ValidationError(`must be a trust domain name (got ${typeName(v)})`, field);
  const code = checkSpiffeId(`spiffe://${v}`);
  if (code !== "OK") throw new ValidationError(`${spiffeIdReason(code)} (${quote(v)})`, field);
  const id = SpiffeId.parse(`spiffe://${v}`);
  if (id.path !== "") throw new ValidationError(`a trust domain name has no path (${quote(v)})`, field);
  return id.trustDomain;
}

function checkName(v: string, field: string, what: string): void {
  if (!NAME_RE.test(v)) {
    throw new ValidationError(
      `${what} must be 1-63 lowercase letters, digits or "-", starting and ending with a letter or digit (got ${quote(v)})`,
      field,
    );
  }
}

function uniqueList<T>(list: unknown[], field: string, each: (v: unknown, f: string) => T): T[] {
  const seen = new Set<T>();
  return list.map((v, i) => {
    const x = each(v, `${field}[${i}]`);
    if (seen.has(x)) throw new ValidationError(`duplicate ${show(x)}`, `${field}[${i}]`);
    seen.add(x);
    return x;
  });
}

// ---------------------------------------------------------------------------------------------------------
// JSON form (what `qhx crypto-policy show --format json` writes and `apply` reads)

export function ruleToJson(r: CryptoRule): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (r.signatureAlgorithms) {
    o.signature_algorithms = {
      allowed: [...r.signatureAlgorithms.allowed],
      default: r.signatureAlgorithms.default,
    };
  }
  if (r.tunnelModes) o.tunnel_modes = [...r.tunnelModes];
  if (r.maxX509SvidTtl !== undefined) o.max_x509_svid_ttl = formatDuration(r.maxX509SvidTtl * 1000);
  if (r.maxJwtSvidTtl !== undefined) o.max_jwt_svid_ttl = formatDuration(r.maxJwtSvidTtl * 1000);
  if (r.minAssurance) o.min_assurance = r.minAssurance;
  if (r.releasableTo) o.releasable_to = [...r.releasableTo];
  if (r.acceptFrom) o.accept_from = [...r.acceptFrom];
  return o;
}

export function cryptoPolicyToJson(p: CryptoPolicy): Record<string, unknown> {
  const map = (m: Record<string, CryptoRule>) =>
    Object.fromEntries(Object.entries(m).map(([k, r]) => [k, ruleToJson(r)]));
  return {
    format: p.format,
    ...(p.trustDomain ? { trust_domain: p.trustDomain } : {}),
    coalitions: Object.fromEntries(Object.entries(p.coalitions).map(([k, v]) => [k, [...v]])),
    ...(p.default ? { default: ruleToJson(p.default) } : {}),
    coalition_rules: map(p.coalitionRules),
    trust_domains: map(p.trustDomains),
    namespaces: map(p.namespaces),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Resolution

export interface Subject {
  trustDomain: string;
  /** the registration entry's namespace; absent when unknown (only trust domain and wider rules apply) */
  namespace?: string;
}

export interface ResolvedField<T> {
  value: T;
  /** `ns:<name>`, `td:<name>`, `coalition:<name>`, `default` or `builtin` */
  rule: string;
}

export type EffectiveCryptoPolicy = { [F in RuleField]-?: ResolvedField<Required<CryptoRule>[F]> };

/** The rules that apply to a subject, most specific first, each with its name and why it applies. */
export function applicableRules(
  policy: CryptoPolicy,
  subject: Subject,
): { name: string; why: string; rule: CryptoRule }[] {
  const out: { name: string; why: string; rule: CryptoRule }[] = [];
  const ownDomain = !policy.trustDomain || policy.trustDomain === subject.trustDomain;
  if (subject.namespace !== undefined && ownDomain) {
    const r = policy.namespaces[subject.namespace];
    if (r)
      out.push({
        name: `ns:${subject.namespace}`,
        why: `its entry is in namespace "${subject.namespace}"`,
        rule: r,
      });
  }
  const td = policy.trustDomains[subject.trustDomain];
  if (td)
    out.push({
      name: `td:${subject.trustDomain}`,
      why: `it is in trust domain ${subject.trustDomain}`,
      rule: td,
    });
  for (const [name, rule] of Object.entries(policy.coalitionRules)) {
    if (policy.coalitions[name]?.includes(subject.trustDomain)) {
      out.push({
        name: `coalition:${name}`,
        why: `trust domain ${subject.trustDomain} is a member of coalition "${name}"`,
        rule,
      });
    }
  }
  if (policy.default)
    out.push({
      name: "default",
      why: "the policy's default rule applies to every identity",
      rule: policy.default,
    });
  out.push({
    name: BUILTIN_RULE_NAME,
    why: "QHx's built-in default (everything supported, no limits)",
    rule: BUILTIN_RULE,
  });
  return out;
}

/** The effective policy for a subject: each field from the most specific rule that sets it. */
export function resolveCryptoPolicy(policy: CryptoPolicy, subject: Subject): EffectiveCryptoPolicy {
  const rules = applicableRules(policy, subject);
  const out = {} as Record<RuleField, ResolvedField<unknown>>;
  for (const f of FIELD_ORDER) {
    const hit = rules.find((r) => r.rule[f] !== undefined)!;
    out[f] = { value: hit.rule[f], rule: hit.name };
  }
  return out as EffectiveCryptoPolicy;
}

/** The subject of a SPIFFE ID (its trust domain) in a namespace. */
export function subjectOf(spiffeId: string, namespace?: string): Subject {
  const id = SpiffeId.parse(spiffeId);
  return { trustDomain: id.trustDomain, ...(namespace !== undefined ? { namespace } : {}) };
}

export interface Explanation {
  spiffe_id: string;
  trust_domain: string;
  namespace: string | null;
  /** the rules considered, most specific first */
  rules: { name: string; applies: boolean; why: string }[];
  /** each field's value and the rule that decided it */
  effective: Record<string, { value: unknown; rule: string }>;
}

/** Which rule applies to this SPIFFE ID (in this namespace) for each field, and why. */
export function explain(policy: CryptoPolicy, spiffeId: string, namespace?: string): Explanation {
  const subject = subjectOf(spiffeId, namespace);
  const applicable = applicableRules(policy, subject);
  const names = new Set(applicable.map((r) => r.name));
  const rules: Explanation["rules"] = [];
  const notApplied = (name: string, why: string) => {
    if (!names.has(name)) rules.push({ name, applies: false, why });
  };
  for (const r of applicable) rules.push({ name: r.name, applies: true, why: r.why });
  for (const ns of Object.keys(policy.namespaces)) {
    if (namespace === undefined)
      notApplied(`ns:${ns}`, "no namespace given (the SPIFFE ID has no entry here)");
    else if (policy.trustDomain && policy.trustDomain !== subject.trustDomain)
      notApplied(`ns:${ns}`, `namespace rules are for trust domain ${policy.trustDomain}`);
    else notApplied(`ns:${ns}`, `the entry is in namespace "${namespace}", not "${ns}"`);
  }
  for (const td of Object.keys(policy.trustDomains)) {
    notApplied(`td:${td}`, `the SPIFFE ID is in trust domain ${subject.trustDomain}`);
  }
  for (const c of Object.keys(policy.coalitionRules)) {
    notApplied(`coalition:${c}`, `trust domain ${subject.trustDomain} is not a member`);
  }
  const eff = resolveCryptoPolicy(policy, subject);
  const effective: Explanation["effective"] = {};
  for (const f of FIELD_ORDER) {
    const v = eff[f];
    effective[RULE_FIELDS[f]] = { value: ruleToJson({ [f]: v.value })[RULE_FIELDS[f]], rule: v.rule };
  }
  return {
    spiffe_id: SpiffeId.parse(spiffeId).toString(),
    trust_domain: subject.trustDomain,
    namespace: namespace ?? null,
    rules,
    effective,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Enforcement (issuance)

function deny(rule: string, message: string, hint?: string): QhxError {
  return new QhxError(CRYPTO_POLICY_ERROR, `crypto policy "${rule}" ${message}`, hint ? { hint } : undefined);
}

/**
 * Throws QHX_CRYPTO_POLICY unless `keyAlg` is allowed for the subject. `what` names what the key signs
 * when it is not the workload's own X509-SVID key (e.g. the server's JWT key).
 */
export function checkSignatureAlgorithm(eff: EffectiveCryptoPolicy, keyAlg: string, what?: string): void {
  const { value, rule } = eff.signatureAlgorithms;
  if (!(value.allowed as string[]).includes(keyAlg)) {
    const name = ALG_DISPLAY[keyAlg as WorkloadKeyAlg] ?? keyAlg.toUpperCase();
    throw deny(
      rule,
      `forbids ${name} (allowed: ${value.allowed.map((a) => ALG_DISPLAY[a]).join(", ")})${what ? ` for ${what}` : ""}`,
      what
        ? "change the server's jwt.key_type or allow its algorithm"
        : `the agent generates ${ALG_DISPLAY[value.default]} keys for it at the next rotation`,
    );
  }
}

/** Throws QHX_CRYPTO_POLICY when the node's assurance is below the subject's minimum. */
export function checkAssurance(eff: EffectiveCryptoPolicy, assurance: string | undefined): void {
  const { value, rule } = eff.minAssurance;
  const have = ASSURANCE_ORDER.indexOf(assurance as Assurance);
  if (have < ASSURANCE_ORDER.indexOf(value)) {
    throw deny(
      rule,
      `requires assurance "${value}" or higher; the node attested with "${assurance ?? "none"}"`,
      `attest the node with ${value === "hardware" ? "a TPM" : "x509pop or a TPM"}`,
    );
  }
}

/** Throws QHX_CRYPTO_POLICY when a tunnel mode is not allowed. */
export function checkTunnelMode(eff: EffectiveCryptoPolicy, mode: TunnelMode): void {
  const { value, rule } = eff.tunnelModes;
  if (!value.includes(mode)) {
    throw deny(rule, `forbids tunnel mode ${mode} (allowed: ${value.join(", ")})`);
  }
}

/** The lifetime to issue: the requested one capped to the rule's maximum (policy caps, never refuses). */
export function capTtl(
  eff: EffectiveCryptoPolicy,
  kind: "x509" | "jwt",
  requestedS: number,
): { ttlS: number; capped: boolean; rule: string } {
  const f = kind === "x509" ? eff.maxX509SvidTtl : eff.maxJwtSvidTtl;
  return requestedS > f.value
    ? { ttlS: f.value, capped: true, rule: f.rule }
    : { ttlS: requestedS, capped: false, rule: f.rule };
}

// ---------------------------------------------------------------------------------------------------------
// Releasability

export interface ReleasabilityQuery {
  local: Subject;
  peer: { spiffeId: string; trustDomain: string };
  direction: "ingress" | "egress";
}

export type ReleasabilityResult = { ok: true } | { ok: false; reason: string };

/** Whether a target list ("*", trust domains, "coalition:<name>") covers a trust domain. */
export function targetsCover(policy: CryptoPolicy, targets: readonly string[], td: string): boolean {
  return targets.some(
    (t) =>
      t === "*" ||
      t === td ||
      (t.startsWith("coalition:") && (policy.coalitions[t.slice("coalition:".length)] ?? []).includes(td)),
  );
}

/**
 * May this peer cross the federation edge? Egress: may the local identity (trust domain, namespace) be
 * presented to the peer's trust domain (`releasable_to`). Ingress: may the local workload accept the peer
 * from its trust domain (`accept_from`). A peer of the local trust domain crosses no edge and is always
 * releasable. The peer's SPIFFE ID must be in the peer trust domain given.
 */
export function checkReleasable(policy: CryptoPolicy, q: ReleasabilityQuery): ReleasabilityResult {
  let peerTd: string;
  try {
    peerTd = SpiffeId.parse(q.peer.spiffeId).trustDomain;
  } catch (e) {
    return {
      ok: false,
      reason: `peer SPIFFE ID ${JSON.stringify(q.peer.spiffeId)} is invalid: ${(e as Error).message}`,
    };
  }
  if (peerTd !== q.peer.trustDomain) {
    return { ok: false, reason: `peer ${q.peer.spiffeId} is not in trust domain ${q.peer.trustDomain}` };
  }
  if (peerTd === q.local.trustDomain) return { ok: true };
  const eff = resolveCryptoPolicy(policy, q.local);
  const f = q.direction === "egress" ? eff.releasableTo : eff.acceptFrom;
  if (targetsCover(policy, f.value, peerTd)) return { ok: true };
  const who =
    q.local.namespace !== undefined
      ? `namespace "${q.local.namespace}" of ${q.local.trustDomain}`
      : q.local.trustDomain;
  const list = f.value.length ? f.value.join(", ") : "none";
  return {
    ok: false,
    reason:
      q.direction === "egress"
        ? `crypto policy "${f.rule}": identities of ${who} are not releasable to ${peerTd} (releasable_to: ${list}); refusing ${q.peer.spiffeId}`
        : `crypto policy "${f.rule}": ${who} does not accept identities from ${peerTd} (accept_from: ${list}); refusing ${q.peer.spiffeId}`,
  };
}

/**
 * May the local trust domain's bundle be published to a foreign trust domain? Only where some identity
 * of it is releasable there (the trust domain's own rule or any namespace rule): a domain nothing may be
 * presented to has no use for the bundle. Without `policy.trustDomain` the trust-domain rule is unknown and
 * only namespace, default and built-in rules count.
 */
export function mayPublishBundleTo(policy: CryptoPolicy, foreignTd: string): boolean {
  const td = policy.trustDomain;
  if (td !== undefined && foreignTd === td) return true;
  const local = td ?? "";
  const subjects: Subject[] = [
    { trustDomain: local },
    ...Object.keys(policy.namespaces).map((namespace) => ({ trustDomain: local, namespace })),
  ];
  return subjects.some((s) =>
    targetsCover(policy, resolveCryptoPolicy(policy, s).releasableTo.value, foreignTd),
  );
}

/** The subjects whose `releasable_to` decides bundle publication: the trust domain and each namespace. */
function publicationSubjects(policy: CryptoPolicy): Subject[] {
  const local = policy.trustDomain ?? "";
  return [
    { trustDomain: local },
    ...Object.keys(policy.namespaces).map((namespace) => ({ trustDomain: local, namespace })),
  ];
}

/**
 * Does the policy restrict bundle publication at all? Unrestricted means `mayPublishBundleTo` holds for
 * every foreign trust domain, i.e. the `releasable_to` resolved for the trust domain itself or for some
 * namespace contains `"*"` (a finite list of domains and coalitions never covers every domain). The empty
 * policy is unrestricted (the built-in rule releases to `"*"`). Only an unrestricted policy lets a bundle
 * endpoint answer a client it cannot identify (anonymous, SPIFFE Federation interoperability).
 */
export function bundlePublicationRestricted(policy: CryptoPolicy): boolean {
  return !publicationSubjects(policy).some((s) =>
    resolveCryptoPolicy(policy, s).releasableTo.value.includes("*"),
  );
}

/**
 * Why the bundle may not be published to `foreignTd` (null: it may, `mayPublishBundleTo`); `foreignTd`
 * null asks about an anonymous client, who may have it only when publication is unrestricted. The reason
 * names each deciding rule and its `releasable_to`.
 */
export function bundlePublicationRefusal(policy: CryptoPolicy, foreignTd: string | null): string | null {
  if (foreignTd === null ? !bundlePublicationRestricted(policy) : mayPublishBundleTo(policy, foreignTd)) {
    return null;
  }
  const seen = new Set<string>();
  const rules: string[] = [];
  for (const s of publicationSubjects(policy)) {
    const f = resolveCryptoPolicy(policy, s).releasableTo;
    const line = `"${f.rule}" (releasable_to: ${f.value.length ? f.value.join(", ") : "none"})`;
    if (!seen.has(line)) {
      seen.add(line);
      rules.push(line);
    }
  }
  const td = policy.trustDomain ?? "this trust domain";
  return foreignTd === null
    ? `crypto policy restricts bundle publication (${rules.join("; ")}): an anonymous client cannot be ` +
        `told apart from a domain that is refused; present an X509-SVID`
    : `crypto policy: no identity of ${td} is releasable to ${foreignTd} (${rules.join("; ")})`;
}

/**
 * The foreign trust domains among `tds` a workload of this namespace accepts identities from
 * (`accept_from`, ingress), and the ones it does not with the deciding rule. The local trust domain is
 * always accepted (no edge crossed).
 */
export function acceptedFederatedDomains(
  policy: CryptoPolicy,
  local: Subject,
  tds: readonly string[],
): { accepted: string[]; refused: { trustDomain: string; rule: string; acceptFrom: string[] }[] } {
  const eff = resolveCryptoPolicy(policy, local).acceptFrom;
  const accepted: string[] = [];
  const refused: { trustDomain: string; rule: string; acceptFrom: string[] }[] = [];
  for (const td of tds) {
    if (td === local.trustDomain || targetsCover(policy, eff.value, td)) accepted.push(td);
    else refused.push({ trustDomain: td, rule: eff.rule, acceptFrom: [...eff.value] });
  }
  return { accepted, refused };
}

// ---------------------------------------------------------------------------------------------------------
// Tunnels

/** What a tunnel knows about a verified peer (host/tunnel's PeerInfo has these fields). */
export interface TunnelPeer {
  spiffeId: string;
  trustDomain: string;
  /** the peer leaf's key algorithm (alg.ts names) */
  sigAlg: string;
  /** the tunnel's own mode */
  mode: string;
}

/**
 * The crypto policy as a tunnel peer check (for host/tunnel's `peerChecks`, either side), in this order:
 * the tunnel's mode must be allowed for the local workload (`tunnel_modes` of its rule); the peer's SVID
 * algorithm must be allowed by the rule governing the peer (its trust domain, coalition, default: a
 * peer's namespace is not visible in its SVID); the peer must be releasable across the edge both ways —
 * the local identity may be presented to the peer's trust domain (egress) and the local workload accepts
 * identities from it (ingress). `local` is called per connection (the SVID may rotate).
 */
export function cryptoPolicyPeerCheck(
  policy: CryptoPolicy | (() => CryptoPolicy),
  local: () => Subject,
): (peer: TunnelPeer) => ReleasabilityResult {
  return (peer) => {
    const p = typeof policy === "function" ? policy() : policy;
    const me = local();
    const mine = resolveCryptoPolicy(p, me);
    if (!(mine.tunnelModes.value as string[]).includes(peer.mode)) {
      return {
        ok: false,
        reason: `crypto policy "${mine.tunnelModes.rule}" forbids tunnel mode ${peer.mode} (allowed: ${mine.tunnelModes.value.join(", ")})`,
      };
    }
    const theirs = resolveCryptoPolicy(p, { trustDomain: peer.trustDomain }).signatureAlgorithms;
    if (!(theirs.value.allowed as string[]).includes(peer.sigAlg)) {
      const name = ALG_DISPLAY[peer.sigAlg as SvidKeyAlg] ?? peer.sigAlg.toUpperCase();
      return {
        ok: false,
        reason: `crypto policy "${theirs.rule}" forbids ${name} (allowed: ${theirs.value.allowed.map((a) => ALG_DISPLAY[a]).join(", ")}); refusing ${peer.spiffeId}`,
      };
    }
    for (const direction of ["egress", "ingress"] as const) {
      const r = checkReleasable(p, {
        local: me,
        peer: { spiffeId: peer.spiffeId, trustDomain: peer.trustDomain },
        direction,
      });
      if (!r.ok) return r;
    }
    return { ok: true };
  };
}

// ---------------------------------------------------------------------------------------------------------
// helpers

function record(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ValidationError(`must be a mapping (got ${typeName(v)})`, field || undefined);
  }
  return v as Record<string, unknown>;
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "list";
  return typeof v;
}

function show(v: unknown): string {
  return typeof v === "string" ? quote(v) : typeof v === "number" ? String(v) : typeName(v);
}

function quote(s: string): string {
  return JSON.stringify(s.length > 120 ? `${s.slice(0, 117)}...` : s);
}
