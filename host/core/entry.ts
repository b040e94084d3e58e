/**
 * Registration entries: selector syntax, validation and the snake_case JSON form used by the admin API
 * and the CLI. Pure: no I/O, no clock.
 *
 * Every rule failure is a ValidationError whose message starts with the field it is about, spelled the
 * way the caller spelled it: camelCase (`spiffeId`, `selectors[1]`) for validateEntryInput and
 * validateEntryPatch, snake_case (`spiffe_id`, `dns_names[0]`) for the JSON parsers. The first violation
 * in field order is reported; fields are checked in the order of ENTRY_FIELDS.
 */
import type {
  EntryPatch,
  RegistrationEntry,
  RegistrationEntryInput,
  Selector,
} from "../server/datastore/types.ts";
import { ValidationError } from "./errors.ts";
import { checkSpiffeId, SpiffeId, spiffeIdReason } from "./spiffeid.ts";

export const DEFAULT_NAMESPACE = "default";
/** Upper bound of x509SvidTtl / jwtSvidTtl, in seconds (366 days). */
export const MAX_SVID_TTL_SECONDS = 366 * 24 * 60 * 60;
export const MAX_LABELS = 64;
export const MAX_LABEL_VALUE_LENGTH = 256;
export const MAX_DNS_NAME_LENGTH = 253;
/** SPIFFE IDs whose path starts with this segment are reserved for QHx agents and servers. */
export const RESERVED_PATH_PREFIX = "/qhx/";
/** 9999-12-31T23:59:59Z: a larger expires_at is almost certainly milliseconds. */
export const MAX_EXPIRES_AT = 253_402_300_799;

const SELECTOR_TYPE_RE = /^[a-z0-9_-]+$/;
const NAMESPACE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LABEL_KEY_RE = /^[a-zA-Z0-9._/-]{1,63}$/;
const DNS_LABEL_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

// ---------------------------------------------------------------------------------------------------------
// Selectors

/**
 * Parse `type:value`. The type is the text before the first colon and matches [a-z0-9_-]+; the value is
 * the (non-empty) rest and may itself contain colons: `unix:uid:1000` is {type: "unix", value: "uid:1000"}.
 */
export function parseSelector(text: string, field = "selector"): Selector {
  if (typeof text !== "string") throw new ValidationError(`must be a string (got ${typeName(text)})`, field);
  const colon = text.indexOf(":");
  if (colon < 0) throw new ValidationError(`must be "type:value" (got ${quote(text)})`, field);
  return checkSelector(text.slice(0, colon), text.slice(colon + 1), field);
}

export function formatSelector(selector: Selector): string {
  return `${selector.type}:${selector.value}`;
}

function checkSelector(type: string, value: string, field: string): Selector {
  if (!SELECTOR_TYPE_RE.test(type)) {
    throw new ValidationError(
      `selector type must be lowercase letters, digits, "_" or "-" (got ${quote(type)} in ${quote(`${type}:${value}`)})`,
      field,
    );
  }
  if (value.length === 0) {
    throw new ValidationError(`selector value must not be empty (${quote(`${type}:`)})`, field);
  }
  return { type, value };
}

/** A selector given as `"type:value"` or as `{type, value}`. */
function selectorFrom(raw: unknown, field: string): Selector {
  if (typeof raw === "string") return parseSelector(raw, field);
  if (isPlainObject(raw)) {
    for (const k of Object.keys(raw)) {
      if (k !== "type" && k !== "value")
        throw new ValidationError(`unknown selector field ${quote(k)}`, field);
    }
    if (typeof raw.type !== "string") {
      throw new ValidationError(`selector type must be a string (got ${typeName(raw.type)})`, field);
    }
    if (typeof raw.value !== "string") {
      throw new ValidationError(`selector value must be a string (got ${typeName(raw.value)})`, field);
    }
    return checkSelector(raw.type, raw.value, field);
  }
  throw new ValidationError(`must be a "type:value" string (got ${typeName(raw)})`, field);
}

// ---------------------------------------------------------------------------------------------------------
// Field names

/** Entry input fields in validation order, camelCase -> snake_case. */
export const ENTRY_FIELDS = {
  spiffeId: "spiffe_id",
  parentId: "parent_id",
  selectors: "selectors",
  namespace: "namespace",
  labels: "labels",
  x509SvidTtl: "x509_svid_ttl",
  jwtSvidTtl: "jwt_svid_ttl",
  dnsNames: "dns_names",
  federatesWith: "federates_with",
  admin: "admin",
  expiresAt: "expires_at",
} as const satisfies Record<keyof RegistrationEntryInput, string>;

type Field = keyof typeof ENTRY_FIELDS;
const FIELD_ORDER = Object.keys(ENTRY_FIELDS) as Field[];
const SNAKE_TO_CAMEL: Record<string, Field> = Object.fromEntries(
  FIELD_ORDER.map((f) => [ENTRY_FIELDS[f], f]),
);
/** Fields of a stored entry that the server assigns; rejected with a specific message on input. */
const SERVER_ASSIGNED = new Set(["id", "createdAt", "updatedAt", "revision", "created_at", "updated_at"]);

interface Style {
  name(f: Field): string;
  /** The spelling of `key` in the other style, if it is a known field there. */
  otherSpelling(key: string): string | undefined;
}

const CAMEL: Style = {
  name: (f) => f,
  otherSpelling: (key) => SNAKE_TO_CAMEL[key],
};

const SNAKE: Style = {
  name: (f) => ENTRY_FIELDS[f],
  otherSpelling: (key) => (Object.hasOwn(ENTRY_FIELDS, key) ? ENTRY_FIELDS[key as Field] : undefined),
};

export interface EntryValidationOptions {
  /** The server's own trust domain name, e.g. `example.org`. */
  trustDomain: string;
}

// ---------------------------------------------------------------------------------------------------------
// Validation

/**
 * Validate a camelCase entry input and return it normalized: defaults filled in (namespace "default",
 * labels {}, TTLs 0, dnsNames [], federatesWith [], admin false, expiresAt null), DNS names lowercased,
 * federatesWith as bare trust domain names. Throws ValidationError naming the first offending field.
 */
export function validateEntryInput(
  input: unknown,
  opts: EntryValidationOptions,
): Required<RegistrationEntryInput> {
  return normalizeInput(readFields(input, CAMEL, "entry"), CAMEL, opts);
}

/**
 * Validate a camelCase patch: only the fields present (not undefined) are checked and returned, by the
 * same rules as validateEntryInput. `expiresAt: null` clears the expiry. An empty patch is refused.
 */
export function validateEntryPatch(patch: unknown, opts: EntryValidationOptions): EntryPatch {
  return normalizePatch(readFields(patch, CAMEL, "patch"), CAMEL, opts);
}

/** Parse the snake_case JSON form (admin API request body, CLI file) into a normalized entry input. */
export function parseEntryJson(
  json: unknown,
  opts: EntryValidationOptions,
): Required<RegistrationEntryInput> {
  return normalizeInput(readFields(json, SNAKE, "entry"), SNAKE, opts);
}

/** Parse a snake_case JSON patch (admin API update body) into a validated EntryPatch. */
export function parseEntryPatchJson(json: unknown, opts: EntryValidationOptions): EntryPatch {
  return normalizePatch(readFields(json, SNAKE, "patch"), SNAKE, opts);
}

type Raw = Partial<Record<Field, unknown>>;

function readFields(obj: unknown, style: Style, what: string): Raw {
  if (!isPlainObject(obj)) throw new ValidationError(`must be an object (got ${typeName(obj)})`, what);
  const out: Raw = {};
  const known = new Map<string, Field>(FIELD_ORDER.map((f) => [style.name(f), f]));
  for (const key of Object.keys(obj)) {
    const f = known.get(key);
    if (f !== undefined) {
      if (obj[key] !== undefined) out[f] = obj[key];
      continue;
    }
    if (SERVER_ASSIGNED.has(key)) {
      throw new ValidationError("is assigned by the server and cannot be set", key);
    }
    const other = style.otherSpelling(key);
    if (other !== undefined) throw new ValidationError(`unknown field; did you mean ${quote(other)}?`, key);
    throw new ValidationError(
      `unknown field (allowed: ${FIELD_ORDER.map((x) => style.name(x)).join(", ")})`,
      key,
    );
  }
  return out;
}

function normalizeInput(
  raw: Raw,
  style: Style,
  opts: EntryValidationOptions,
): Required<RegistrationEntryInput> {
  for (const f of ["spiffeId", "parentId", "selectors"] as const) {
    if (raw[f] === undefined || raw[f] === null) throw new ValidationError("is required", style.name(f));
  }
  const p = normalizePatch(raw, style, opts, true);
  return {
    spiffeId: p.spiffeId!,
    parentId: p.parentId!,
    selectors: p.selectors!,
    namespace: p.namespace ?? DEFAULT_NAMESPACE,
    labels: p.labels ?? {},
    x509SvidTtl: p.x509SvidTtl ?? 0,
    jwtSvidTtl: p.jwtSvidTtl ?? 0,
    dnsNames: p.dnsNames ?? [],
    federatesWith: p.federatesWith ?? [],
    admin: p.admin ?? false,
    expiresAt: p.expiresAt ?? null,
  };
}

function normalizePatch(
  raw: Raw,
  style: Style,
  opts: EntryValidationOptions,
  allowEmpty = false,
): EntryPatch {
  const out: EntryPatch = {};
  const n = (f: Field) => style.name(f);
  if (!allowEmpty && FIELD_ORDER.every((f) => raw[f] === undefined)) {
    throw new ValidationError(`must change at least one field (${FIELD_ORDER.map(n).join(", ")})`, "patch");
  }
  if (raw.spiffeId !== undefined)
    out.spiffeId = checkEntrySpiffeId(raw.spiffeId, n("spiffeId"), opts.trustDomain);
  if (raw.parentId !== undefined) out.parentId = checkParentId(raw.parentId, n("parentId"), opts.trustDomain);
  if (raw.selectors !== undefined) out.selectors = checkSelectors(raw.selectors, n("selectors"));
  if (raw.namespace !== undefined) out.namespace = checkNamespace(raw.namespace, n("namespace"));
  if (raw.labels !== undefined) out.labels = checkLabels(raw.labels, n("labels"));
  if (raw.x509SvidTtl !== undefined) out.x509SvidTtl = checkTtl(raw.x509SvidTtl, n("x509SvidTtl"));
  if (raw.jwtSvidTtl !== undefined) out.jwtSvidTtl = checkTtl(raw.jwtSvidTtl, n("jwtSvidTtl"));
  if (raw.dnsNames !== undefined) out.dnsNames = checkDnsNames(raw.dnsNames, n("dnsNames"));
  if (raw.federatesWith !== undefined) {
    out.federatesWith = checkFederatesWith(raw.federatesWith, n("federatesWith"), opts.trustDomain);
  }
  if (raw.admin !== undefined) {
    if (typeof raw.admin !== "boolean") {
      throw new ValidationError(`must be a boolean (got ${typeName(raw.admin)})`, n("admin"));
    }
    out.admin = raw.admin;
  }
  if (raw.expiresAt !== undefined) out.expiresAt = checkExpiresAt(raw.expiresAt, n("expiresAt"));
  return out;
}

function parseId(raw: unknown, field: string): SpiffeId {
  if (typeof raw !== "string") throw new ValidationError(`must be a string (got ${typeName(raw)})`, field);
  const code = checkSpiffeId(raw);
  if (code !== "OK") throw new ValidationError(`${spiffeIdReason(code)} (${quote(raw)})`, field);
  return SpiffeId.parse(raw);
}

function checkEntrySpiffeId(raw: unknown, field: string, trustDomain: string): string {
  const id = parseId(raw, field);
  if (!id.memberOf(trustDomain)) {
    throw new ValidationError(
      `must be in trust domain ${quote(trustDomain)} (got ${quote(id.toString())})`,
      field,
    );
  }
  if (id.path === "") {
    throw new ValidationError(
      `must not be the trust domain ID itself (${quote(id.toString())}); add a path, e.g. "${id}/my-service"`,
      field,
    );
  }
  if (isReservedPath(id.path)) {
    throw new ValidationError(
      `path prefix "${RESERVED_PATH_PREFIX}" is reserved for QHx agents and servers (${quote(id.toString())})`,
      field,
    );
  }
  return id.toString();
}

/** `/qhx` and everything under `/qhx/`, compared case-insensitively so `/QHX/agent` cannot pose as one. */
export function isReservedPath(path: string): boolean {
  const first = path.split("/")[1] ?? "";
  return first.toLowerCase() === RESERVED_PATH_PREFIX.slice(1, -1);
}

function checkParentId(raw: unknown, field: string, trustDomain: string): string {
  const id = parseId(raw, field);
  // A parent is an agent, a server or another entry of this trust domain; a foreign parent could never
  // attest here, so the entry would be dead.
  if (!id.memberOf(trustDomain)) {
    throw new ValidationError(
      `must be in trust domain ${quote(trustDomain)} (got ${quote(id.toString())})`,
      field,
    );
  }
  return id.toString();
}

function checkSelectors(raw: unknown, field: string): Selector[] {
  if (!Array.isArray(raw)) throw new ValidationError(`must be an array (got ${typeName(raw)})`, field);
  if (raw.length === 0) throw new ValidationError("at least one selector is required", field);
  const seen = new Set<string>();
  return raw.map((item, i) => {
    const sel = selectorFrom(item, `${field}[${i}]`);
    const text = formatSelector(sel);
    if (seen.has(text)) throw new ValidationError(`duplicate selector ${quote(text)}`, `${field}[${i}]`);
    seen.add(text);
    return sel;
  });
}

function checkNamespace(raw: unknown, field: string): string {
  if (typeof raw !== "string") throw new ValidationError(`must be a string (got ${typeName(raw)})`, field);
  if (!NAMESPACE_RE.test(raw)) {
    throw new ValidationError(
      `must be 1-63 lowercase letters, digits or "-", starting and ending with a letter or digit (got ${quote(raw)})`,
      field,
    );
  }
  return raw;
}

function checkLabels(raw: unknown, field: string): Record<string, string> {
  if (!isPlainObject(raw)) throw new ValidationError(`must be an object (got ${typeName(raw)})`, field);
  const keys = Object.keys(raw);
  if (keys.length > MAX_LABELS) {
    throw new ValidationError(`at most ${MAX_LABELS} labels are allowed (got ${keys.length})`, field);
  }
  const entries: [string, string][] = [];
  for (const key of keys) {
    if (!LABEL_KEY_RE.test(key)) {
      throw new ValidationError(
        `key must be 1-63 characters of letters, digits, ".", "_", "/" or "-" (got ${quote(key)})`,
        field,
      );
    }
    const value = raw[key];
    const f = `${field}[${JSON.stringify(key)}]`;
    if (typeof value !== "string") throw new ValidationError(`must be a string (got ${typeName(value)})`, f);
    if (value.length > MAX_LABEL_VALUE_LENGTH) {
      throw new ValidationError(
        `must be at most ${MAX_LABEL_VALUE_LENGTH} characters (got ${value.length})`,
        f,
      );
    }
    entries.push([key, value]);
  }
  // fromEntries defines own properties, so a key like "__proto__" stays an ordinary label.
  return Object.fromEntries(entries);
}

function checkTtl(raw: unknown, field: string): number {
  if (typeof raw !== "number" || !Number.isInteger(raw)) {
    throw new ValidationError(`must be an integer number of seconds (got ${describe(raw)})`, field);
  }
  if (raw < 0 || raw > MAX_SVID_TTL_SECONDS) {
    throw new ValidationError(
      `must be between 0 and ${MAX_SVID_TTL_SECONDS} seconds (366 days); 0 means the server default (got ${raw})`,
      field,
    );
  }
  return raw;
}

/**
 * An RFC 1123 host name, lowercased: at most 253 characters, dot-separated labels of 1-63 letters, digits
 * and "-" not starting or ending with "-"; "*" is allowed only as the whole leftmost label, followed by at
 * least one more label. No trailing dot. Returns the normalized name.
 */
export function checkDnsName(raw: unknown, field = "dns_name"): string {
  if (typeof raw !== "string") throw new ValidationError(`must be a string (got ${typeName(raw)})`, field);
  const name = raw.toLowerCase();
  if (name.length === 0) throw new ValidationError("DNS name must not be empty", field);
  if (name.length > MAX_DNS_NAME_LENGTH) {
    throw new ValidationError(
      `DNS name is longer than ${MAX_DNS_NAME_LENGTH} characters (${name.length}: ${quote(raw)})`,
      field,
    );
  }
  if (name.endsWith(".")) throw new ValidationError(`DNS name must not end with "." (${quote(raw)})`, field);
  const labels = name.split(".");
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i]!;
    if (label.includes("*")) {
      if (label !== "*" || i !== 0) {
        throw new ValidationError(
          `wildcard "*" is only allowed as the entire leftmost label (${quote(raw)})`,
          field,
        );
      }
      if (labels.length < 2)
        throw new ValidationError(`a wildcard needs a domain after it (${quote(raw)})`, field);
      continue;
    }
    if (label.length === 0)
      throw new ValidationError(`DNS name must not contain an empty label (${quote(raw)})`, field);
    if (label.length > 63) {
      throw new ValidationError(
        `DNS label ${quote(label)} is longer than 63 characters (${quote(raw)})`,
        field,
      );
    }
    if (!DNS_LABEL_RE.test(label)) {
      throw new ValidationError(
        `DNS label ${quote(label)} must be letters, digits and "-", not starting or ending with "-" ` +
          `(use punycode "xn--..." for international names) (${quote(raw)})`,
        field,
      );
    }
  }
  return name;
}

function checkDnsNames(raw: unknown, field: string): string[] {
  if (!Array.isArray(raw)) throw new ValidationError(`must be an array (got ${typeName(raw)})`, field);
  const seen = new Set<string>();
  return raw.map((item, i) => {
    const name = checkDnsName(item, `${field}[${i}]`);
    if (seen.has(name)) throw new ValidationError(`duplicate DNS name ${quote(name)}`, `${field}[${i}]`);
    seen.add(name);
    return name;
  });
}

function checkFederatesWith(raw: unknown, field: string, ownTrustDomain: string): string[] {
  if (!Array.isArray(raw)) throw new ValidationError(`must be an array (got ${typeName(raw)})`, field);
  const seen = new Set<string>();
  return raw.map((item, i) => {
    const f = `${field}[${i}]`;
    if (typeof item !== "string") throw new ValidationError(`must be a string (got ${typeName(item)})`, f);
    const asId = item.startsWith("spiffe://") ? item : `spiffe://${item}`;
    const code = checkSpiffeId(asId);
    if (code !== "OK") throw new ValidationError(`${spiffeIdReason(code)} (${quote(item)})`, f);
    const id = SpiffeId.parse(asId);
    if (id.path !== "") throw new ValidationError(`a trust domain name has no path (${quote(item)})`, f);
    if (id.trustDomain === ownTrustDomain) {
      throw new ValidationError(`must not be the server's own trust domain ${quote(ownTrustDomain)}`, f);
    }
    if (seen.has(id.trustDomain))
      throw new ValidationError(`duplicate trust domain ${quote(id.trustDomain)}`, f);
    seen.add(id.trustDomain);
    return id.trustDomain;
  });
}

function checkExpiresAt(raw: unknown, field: string): number | null {
  if (raw === null) return null;
  if (typeof raw !== "number" || !Number.isInteger(raw) || raw < 0) {
    throw new ValidationError(
      `must be null or a non-negative integer unix time in seconds (got ${describe(raw)})`,
      field,
    );
  }
  if (raw > MAX_EXPIRES_AT) {
    throw new ValidationError(
      `must be unix seconds, at most ${MAX_EXPIRES_AT} (9999-12-31); ${raw} looks like milliseconds`,
      field,
    );
  }
  return raw;
}

// ---------------------------------------------------------------------------------------------------------
// snake_case JSON form

/** The JSON (wire/CLI) form of an entry input. */
export interface EntryInputJson {
  spiffe_id: string;
  parent_id: string;
  /** `"type:value"` */
  selectors: string[];
  namespace: string;
  labels: Record<string, string>;
  x509_svid_ttl: number;
  jwt_svid_ttl: number;
  dns_names: string[];
  federates_with: string[];
  admin: boolean;
  expires_at: number | null;
}

/** The JSON form of a stored entry. */
export interface EntryJson extends EntryInputJson {
  id: string;
  created_at: number;
  updated_at: number;
  revision: number;
}

/** camelCase input -> snake_case JSON, defaults filled in. Does not validate. */
export function entryInputToJson(input: RegistrationEntryInput): EntryInputJson {
  return {
    spiffe_id: input.spiffeId,
    parent_id: input.parentId,
    selectors: input.selectors.map(formatSelector),
    namespace: input.namespace ?? DEFAULT_NAMESPACE,
    labels: Object.fromEntries(Object.entries(input.labels ?? {})),
    x509_svid_ttl: input.x509SvidTtl ?? 0,
    jwt_svid_ttl: input.jwtSvidTtl ?? 0,
    dns_names: [...(input.dnsNames ?? [])],
    federates_with: [...(input.federatesWith ?? [])],
    admin: input.admin ?? false,
    expires_at: input.expiresAt ?? null,
  };
}

/** A stored entry -> its snake_case JSON form (admin API responses, `qhx entry show -o json`). */
export function entryToJson(entry: RegistrationEntry): EntryJson {
  return {
    id: entry.id,
    ...entryInputToJson(entry),
    created_at: entry.createdAt,
    updated_at: entry.updatedAt,
    revision: entry.revision,
  };
}

/** camelCase patch -> snake_case JSON patch (only the fields present). Does not validate. */
export function entryPatchToJson(patch: EntryPatch): Partial<EntryInputJson> {
  const out: Record<string, unknown> = {};
  for (const f of FIELD_ORDER) {
    const v = patch[f];
    if (v === undefined) continue;
    out[ENTRY_FIELDS[f]] = f === "selectors" ? (v as Selector[]).map(formatSelector) : v;
  }
  return out as Partial<EntryInputJson>;
}

// ---------------------------------------------------------------------------------------------------------
// helpers

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

function describe(v: unknown): string {
  return typeof v === "number" ? String(v) : typeof v === "string" ? `string ${quote(v)}` : typeName(v);
}

function quote(s: string): string {
  return JSON.stringify(s.length > 120 ? `${s.slice(0, 117)}...` : s);
}
