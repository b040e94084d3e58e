/**
 * SPIFFE IDs per the SPIFFE-ID specification (standards/SPIFFE-ID.md):
 *   spiffe://<trust-domain>/<path>
 * - scheme exactly `spiffe` (lowercase), followed by `//`
 * - trust domain: non-empty, only [a-z0-9._-], at most 255 bytes; no userinfo, no port
 * - path: optional; segments of [a-zA-Z0-9._-], no empty, `.` or `..` segment, no trailing `/`
 * - no query, fragment or percent-encoding anywhere
 * - the whole ID at most 2048 bytes
 *
 * The same rules, in the same order, live in assembly/spiffeid.ts; test/vectors/spiffe-ids.json is the
 * corpus both must agree on. Validation is a single left-to-right scan, so the first violation found
 * is the one reported, identically in both implementations.
 */
import { SpiffeIdError } from "./errors.ts";

export const MAX_SPIFFE_ID_BYTES = 2048;
export const MAX_TRUST_DOMAIN_BYTES = 255;
const PREFIX = "spiffe://";

/** Stable reason codes. Their numeric index is the code returned by the Wasm validator. */
export const SPIFFE_ID_CODES = [
  "OK",
  "SPIFFE_ID_EMPTY",
  "SPIFFE_ID_TOO_LONG",
  "SPIFFE_ID_WRONG_SCHEME",
  "SPIFFE_ID_MISSING_TRUST_DOMAIN",
  "SPIFFE_ID_TRUST_DOMAIN_TOO_LONG",
  "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR",
  "SPIFFE_ID_USERINFO",
  "SPIFFE_ID_PORT",
  "SPIFFE_ID_QUERY",
  "SPIFFE_ID_FRAGMENT",
  "SPIFFE_ID_PERCENT_ENCODED",
  "SPIFFE_ID_EMPTY_SEGMENT",
  "SPIFFE_ID_DOT_SEGMENT",
  "SPIFFE_ID_TRAILING_SLASH",
  "SPIFFE_ID_BAD_PATH_CHAR",
] as const;
export type SpiffeIdCode = (typeof SPIFFE_ID_CODES)[number];

const REASONS: Record<SpiffeIdCode, string> = {
  OK: "valid",
  SPIFFE_ID_EMPTY: "SPIFFE ID is empty",
  SPIFFE_ID_TOO_LONG: `SPIFFE ID is longer than ${MAX_SPIFFE_ID_BYTES} bytes`,
  SPIFFE_ID_WRONG_SCHEME: 'scheme is missing or not "spiffe://" (lowercase)',
  SPIFFE_ID_MISSING_TRUST_DOMAIN: "trust domain is missing",
  SPIFFE_ID_TRUST_DOMAIN_TOO_LONG: `trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`,
  SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR:
    "trust domain characters are limited to lowercase letters, digits, dots, dashes and underscores",
  SPIFFE_ID_USERINFO: "trust domain must not contain userinfo (@)",
  SPIFFE_ID_PORT: "trust domain must not contain a port (:)",
  SPIFFE_ID_QUERY: "SPIFFE ID must not contain a query (?)",
  SPIFFE_ID_FRAGMENT: "SPIFFE ID must not contain a fragment (#)",
  SPIFFE_ID_PERCENT_ENCODED: "SPIFFE ID must not contain percent-encoded characters",
  SPIFFE_ID_EMPTY_SEGMENT: "path must not contain empty segments (//)",
  SPIFFE_ID_DOT_SEGMENT: 'path must not contain "." or ".." segments',
  SPIFFE_ID_TRAILING_SLASH: "path must not end with /",
  SPIFFE_ID_BAD_PATH_CHAR:
    "path segment characters are limited to letters, digits, dots, dashes and underscores",
};

export function spiffeIdReason(code: SpiffeIdCode): string {
  return REASONS[code];
}

function isTdChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x5f // a-z 0-9 . - _
  );
}

function isPathChar(c: number): boolean {
  return isTdChar(c) || (c >= 0x41 && c <= 0x5a); // plus A-Z
}

/** The URI delimiter that makes a character illegal, or null. Shared by the trust domain and path scans. */
function delimiterCode(c: number): SpiffeIdCode | null {
  switch (c) {
    case 0x3f:
      return "SPIFFE_ID_QUERY";
    case 0x23:
      return "SPIFFE_ID_FRAGMENT";
    case 0x25:
      return "SPIFFE_ID_PERCENT_ENCODED";
    default:
      return null;
  }
}

function utf8Length(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

/** Validate the path part (`""` or `/seg/seg…`), starting at `start` in `s`. */
function checkPath(s: string, start: number): SpiffeIdCode {
  let segStart = start + 1;
  for (let i = start + 1; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 0x2f;
    if (c === 0x2f) {
      const len = i - segStart;
      if (len === 0) return i === s.length ? "SPIFFE_ID_TRAILING_SLASH" : "SPIFFE_ID_EMPTY_SEGMENT";
      if (
        s.charCodeAt(segStart) === 0x2e &&
        (len === 1 || (len === 2 && s.charCodeAt(segStart + 1) === 0x2e))
      ) {
        return "SPIFFE_ID_DOT_SEGMENT";
      }
      segStart = i + 1;
      continue;
    }
    if (isPathChar(c)) continue;
    return delimiterCode(c) ?? "SPIFFE_ID_BAD_PATH_CHAR";
  }
  return "OK";
}

/** Validate without throwing. Returns the first violated rule, or "OK". */
export function checkSpiffeId(s: string): SpiffeIdCode {
  if (s.length === 0) return "SPIFFE_ID_EMPTY";
  if (utf8Length(s) > MAX_SPIFFE_ID_BYTES) return "SPIFFE_ID_TOO_LONG";
  if (!s.startsWith(PREFIX)) return "SPIFFE_ID_WRONG_SCHEME";
  let i = PREFIX.length;
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2f) break;
    if (isTdChar(c)) continue;
    if (c === 0x40) return "SPIFFE_ID_USERINFO";
    if (c === 0x3a) return "SPIFFE_ID_PORT";
    return delimiterCode(c) ?? "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR";
  }
  const tdLen = i - PREFIX.length;
  if (tdLen === 0) return "SPIFFE_ID_MISSING_TRUST_DOMAIN";
  if (tdLen > MAX_TRUST_DOMAIN_BYTES) return "SPIFFE_ID_TRUST_DOMAIN_TOO_LONG";
  if (i === s.length) return "OK";
  return checkPath(s, i);
}

/** A parsed, validated SPIFFE ID. Immutable; `toString()` is its canonical form. */
export class SpiffeId {
  readonly trustDomain: string;
  readonly path: string;
  private constructor(trustDomain: string, path: string) {
    this.trustDomain = trustDomain;
    this.path = path;
  }

  /** Parse and validate; throws SpiffeIdError with a stable reason code. */
  static parse(s: string): SpiffeId {
    const code = checkSpiffeId(s);
    if (code !== "OK") throw new SpiffeIdError(code, `${REASONS[code]}: ${JSON.stringify(truncate(s))}`);
    const slash = s.indexOf("/", PREFIX.length);
    return slash < 0
      ? new SpiffeId(s.slice(PREFIX.length), "")
      : new SpiffeId(s.slice(PREFIX.length, slash), s.slice(slash));
  }

  /** Build from a trust domain and path segments, validating each. */
  static fromSegments(trustDomain: string, ...segments: string[]): SpiffeId {
    if (trustDomain.includes("/")) {
      throw new SpiffeIdError(
        "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR",
        `a trust domain has no "/": ${truncate(trustDomain)}`,
      );
    }
    for (const seg of segments) {
      if (seg.includes("/")) {
        throw new SpiffeIdError("SPIFFE_ID_BAD_PATH_CHAR", `a path segment has no "/": ${truncate(seg)}`);
      }
    }
    return SpiffeId.parse(PREFIX + trustDomain + segments.map((x) => `/${x}`).join(""));
  }

  /** Build from a trust domain and a path (`""` or beginning with `/`). */
  static fromPath(trustDomain: string, path: string): SpiffeId {
    if (path !== "" && !path.startsWith("/")) {
      throw new SpiffeIdError("SPIFFE_ID_BAD_PATH_CHAR", `path must be empty or begin with "/": ${path}`);
    }
    if (trustDomain.includes("/")) {
      throw new SpiffeIdError(
        "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR",
        `a trust domain has no "/": ${truncate(trustDomain)}`,
      );
    }
    return SpiffeId.parse(PREFIX + trustDomain + path);
  }

  toString(): string {
    return PREFIX + this.trustDomain + this.path;
  }

  toJSON(): string {
    return this.toString();
  }

  /** The trust domain's own ID, `spiffe://<td>`. */
  trustDomainId(): string {
    return PREFIX + this.trustDomain;
  }

  memberOf(trustDomain: string): boolean {
    return this.trustDomain === trustDomain;
  }

  equals(other: SpiffeId | string): boolean {
    return this.toString() === other.toString();
  }

  /** Path segments, without the leading slash; [] for a trust domain ID. */
  segments(): string[] {
    return this.path === "" ? [] : this.path.slice(1).split("/");
  }
}

function truncate(s: string): string {
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

/** Parse a trust domain name, given bare (`example.org`) or as its ID (`spiffe://example.org`). */
export function parseTrustDomain(s: string): string {
  const id = SpiffeId.parse(s.startsWith(PREFIX) ? s : PREFIX + s);
  if (id.path !== "") {
    throw new SpiffeIdError("SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR", `a trust domain has no path: ${truncate(s)}`);
  }
  return id.trustDomain;
}

export function isValidSpiffeId(s: string): boolean {
  return checkSpiffeId(s) === "OK";
}
