/**
 * SPIFFE ID validation: the TypeScript validator (host/core/spiffeid.ts) and its Wasm twin
 * (assembly/spiffeid.ts, via host/wasm/core.ts) against the shared corpus test/vectors/spiffe-ids.json,
 * plus unit tests of the SpiffeId helpers and a seeded random differential test TS vs Wasm.
 *
 * Corpus format: { id, valid, code, note, repeat?, utf8Bytes? }. `repeat` ({ char, count, at } or an
 * array of them) replaces every occurrence of the placeholder `at` in `id` by `char` repeated `count`
 * times, so long IDs stay readable; `utf8Bytes`, when present, is the expanded ID's UTF-8 length.
 * Requires build/qhx-core.wasm (`npm run build:wasm`).
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { SpiffeIdError } from "../host/core/errors.ts";
import {
  checkSpiffeId,
  isValidSpiffeId,
  MAX_SPIFFE_ID_BYTES,
  parseTrustDomain,
  SPIFFE_ID_CODES,
  SpiffeId,
  type SpiffeIdCode,
} from "../host/core/spiffeid.ts";
import { loadCoreWasm, wasmCheckSpiffeId, wasmSpiffeTrustDomainEnd } from "../host/wasm/core.ts";

interface Repeat {
  char: string;
  count: number;
  at: string;
}
interface VectorCase {
  id: string;
  valid: boolean;
  code: SpiffeIdCode;
  note: string;
  repeat?: Repeat | Repeat[];
  utf8Bytes?: number;
}

function expand(c: VectorCase): string {
  const repeats = c.repeat === undefined ? [] : Array.isArray(c.repeat) ? c.repeat : [c.repeat];
  let id = c.id;
  for (const r of repeats) {
    if (!id.includes(r.at)) throw new Error(`placeholder ${r.at} not in ${c.id}`);
    id = id.replaceAll(r.at, r.char.repeat(r.count));
  }
  return id;
}

const CASES: VectorCase[] = JSON.parse(
  readFileSync(new URL("./vectors/spiffe-ids.json", import.meta.url), "utf8"),
) as VectorCase[];

function expectParseError(s: string, code: SpiffeIdCode): void {
  let err: unknown;
  try {
    SpiffeId.parse(s);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SpiffeIdError);
  expect((err as SpiffeIdError).code).toBe(code);
  expect((err as SpiffeIdError).reason).toBe(code);
}

function expectThrowsCode(fn: () => unknown, code: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SpiffeIdError);
  expect((err as SpiffeIdError).code).toBe(code);
}

describe("corpus test/vectors/spiffe-ids.json", () => {
  it("is well formed, has at least 80 cases and covers every code", () => {
    expect(CASES.length).toBeGreaterThanOrEqual(80);
    const seen = new Set<string>();
    for (const c of CASES) {
      expect(SPIFFE_ID_CODES).toContain(c.code);
      expect(c.valid).toBe(c.code === "OK");
      expect(typeof c.note).toBe("string");
      expect(c.note.length).toBeGreaterThan(0);
      seen.add(c.code);
    }
    for (const code of SPIFFE_ID_CODES) expect(seen, `no case for ${code}`).toContain(code);
  });

  it.each(CASES.map((c, i) => [`#${i} ${c.code}: ${c.note}`, c] as const))("%s", (_name, c) => {
    const id = expand(c);
    if (c.utf8Bytes !== undefined) expect(Buffer.byteLength(id, "utf8")).toBe(c.utf8Bytes);

    expect(checkSpiffeId(id)).toBe(c.code);
    expect(isValidSpiffeId(id)).toBe(c.valid);
    expect(wasmCheckSpiffeId(id)).toBe(c.code);

    if (c.valid) {
      const parsed = SpiffeId.parse(id);
      expect(parsed.toString()).toBe(id);
      expect(parsed.trustDomainId() + parsed.path).toBe(id);
      expect(wasmSpiffeTrustDomainEnd(id)).toBe("spiffe://".length + parsed.trustDomain.length);
    } else {
      expectParseError(id, c.code);
      expect(wasmSpiffeTrustDomainEnd(id)).toBe(-1);
    }
  });
});

describe("SpiffeId", () => {
  it("parse splits trust domain and path", () => {
    const id = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web");
    expect(id.trustDomain).toBe("example.org");
    expect(id.path).toBe("/ns/prod/sa/web");
    expect(id.trustDomainId()).toBe("spiffe://example.org");
    expect(id.toJSON()).toBe("spiffe://example.org/ns/prod/sa/web");
    expect(JSON.stringify({ id })).toBe('{"id":"spiffe://example.org/ns/prod/sa/web"}');
    const td = SpiffeId.parse("spiffe://example.org");
    expect(td.trustDomain).toBe("example.org");
    expect(td.path).toBe("");
  });

  it("fromSegments builds and validates each segment", () => {
    expect(SpiffeId.fromSegments("example.org", "ns", "prod", "sa", "web").toString()).toBe(
      "spiffe://example.org/ns/prod/sa/web",
    );
    expect(SpiffeId.fromSegments("example.org").toString()).toBe("spiffe://example.org");
    expect(SpiffeId.fromSegments("example.org", "...").path).toBe("/...");
    expectThrowsCode(() => SpiffeId.fromSegments("example.org", "a", ""), "SPIFFE_ID_TRAILING_SLASH");
    expectThrowsCode(() => SpiffeId.fromSegments("example.org", "", "a"), "SPIFFE_ID_EMPTY_SEGMENT");
    expectThrowsCode(() => SpiffeId.fromSegments("example.org", ".."), "SPIFFE_ID_DOT_SEGMENT");
    expectThrowsCode(() => SpiffeId.fromSegments("example.org", "a b"), "SPIFFE_ID_BAD_PATH_CHAR");
    // A segment is one segment: a "/" inside it is refused, never silently split.
    expectThrowsCode(() => SpiffeId.fromSegments("example.org", "a/b"), "SPIFFE_ID_BAD_PATH_CHAR");
    expectThrowsCode(() => SpiffeId.fromSegments("example.org/x", "a"), "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR");
    expectThrowsCode(() => SpiffeId.fromPath("example.org/x", "/a"), "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR");
    expectThrowsCode(() => SpiffeId.fromSegments("Example.org", "a"), "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR");
    expectThrowsCode(() => SpiffeId.fromSegments("", "a"), "SPIFFE_ID_MISSING_TRUST_DOMAIN");
  });

  it("fromPath accepts an empty path or one starting with /", () => {
    expect(SpiffeId.fromPath("example.org", "").toString()).toBe("spiffe://example.org");
    expect(SpiffeId.fromPath("example.org", "/a/b").toString()).toBe("spiffe://example.org/a/b");
    expectThrowsCode(() => SpiffeId.fromPath("example.org", "a/b"), "SPIFFE_ID_BAD_PATH_CHAR");
    expectThrowsCode(() => SpiffeId.fromPath("example.org", "/"), "SPIFFE_ID_TRAILING_SLASH");
    expectThrowsCode(() => SpiffeId.fromPath("example.org", "/a/./b"), "SPIFFE_ID_DOT_SEGMENT");
    expectThrowsCode(() => SpiffeId.fromPath("example.org:443", "/a"), "SPIFFE_ID_PORT");
  });

  it("segments()", () => {
    expect(SpiffeId.parse("spiffe://example.org").segments()).toEqual([]);
    expect(SpiffeId.parse("spiffe://example.org/a").segments()).toEqual(["a"]);
    expect(SpiffeId.parse("spiffe://example.org/ns/prod/.../x").segments()).toEqual([
      "ns",
      "prod",
      "...",
      "x",
    ]);
  });

  it("memberOf and equals", () => {
    const id = SpiffeId.parse("spiffe://example.org/web");
    expect(id.memberOf("example.org")).toBe(true);
    expect(id.memberOf("other.org")).toBe(false);
    expect(id.memberOf("example.org.evil")).toBe(false);
    expect(id.memberOf("example")).toBe(false);
    expect(SpiffeId.parse("spiffe://example.org").memberOf("example.org")).toBe(true);
    expect(id.equals("spiffe://example.org/web")).toBe(true);
    expect(id.equals(SpiffeId.fromSegments("example.org", "web"))).toBe(true);
    expect(id.equals("spiffe://example.org/Web")).toBe(false);
  });
});

describe("parseTrustDomain", () => {
  it("accepts the bare and the spiffe:// forms", () => {
    expect(parseTrustDomain("example.org")).toBe("example.org");
    expect(parseTrustDomain("spiffe://example.org")).toBe("example.org");
    expect(parseTrustDomain("a-b_c.0")).toBe("a-b_c.0");
  });

  it("rejects a path, in either form", () => {
    expectThrowsCode(
      () => parseTrustDomain("spiffe://example.org/workload"),
      "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR",
    );
    expectThrowsCode(() => parseTrustDomain("example.org/workload"), "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR");
  });

  it("rejects invalid trust domains with their own code", () => {
    expectThrowsCode(() => parseTrustDomain(""), "SPIFFE_ID_MISSING_TRUST_DOMAIN");
    expectThrowsCode(() => parseTrustDomain("spiffe://"), "SPIFFE_ID_MISSING_TRUST_DOMAIN");
    expectThrowsCode(() => parseTrustDomain("Example.org"), "SPIFFE_ID_BAD_TRUST_DOMAIN_CHAR");
    expectThrowsCode(() => parseTrustDomain("example.org:443"), "SPIFFE_ID_PORT");
    expectThrowsCode(() => parseTrustDomain("user@example.org"), "SPIFFE_ID_USERINFO");
    expectThrowsCode(() => parseTrustDomain("example.org/"), "SPIFFE_ID_TRAILING_SLASH");
    expectThrowsCode(() => parseTrustDomain("a".repeat(256)), "SPIFFE_ID_TRUST_DOMAIN_TOO_LONG");
    expect(parseTrustDomain("a".repeat(255))).toBe("a".repeat(255));
  });
});

describe("Wasm kernel", () => {
  it("loads once and exposes a buffer large enough for every ID within the limit", () => {
    const w = loadCoreWasm();
    expect(loadCoreWasm()).toBe(w);
    expect(w.spiffeInputCap()).toBeGreaterThanOrEqual(Math.max(4096, MAX_SPIFFE_ID_BYTES + 1));
    expect(w.spiffeInputPtr() + w.spiffeInputCap()).toBeLessThanOrEqual(w.memory.buffer.byteLength);
  });

  it("raw checkSpiffeId handles lengths at and beyond the limits", () => {
    const w = loadCoreWasm();
    const buf = new Uint8Array(w.memory.buffer, w.spiffeInputPtr(), w.spiffeInputCap());
    const prefix = new TextEncoder().encode("spiffe://example.org/");
    buf.set(prefix);
    buf.fill(0x61, prefix.length);
    expect(w.checkSpiffeId(0)).toBe(SPIFFE_ID_CODES.indexOf("SPIFFE_ID_EMPTY"));
    expect(w.checkSpiffeId(MAX_SPIFFE_ID_BYTES)).toBe(0);
    expect(w.spiffeTrustDomainEnd(MAX_SPIFFE_ID_BYTES)).toBe(20);
    expect(w.checkSpiffeId(MAX_SPIFFE_ID_BYTES + 1)).toBe(SPIFFE_ID_CODES.indexOf("SPIFFE_ID_TOO_LONG"));
    expect(w.checkSpiffeId(w.spiffeInputCap())).toBe(SPIFFE_ID_CODES.indexOf("SPIFFE_ID_TOO_LONG"));
    expect(w.checkSpiffeId(-1)).toBe(SPIFFE_ID_CODES.indexOf("SPIFFE_ID_TOO_LONG"));
    // Stale bytes beyond `len` must not matter: "spiffe:/" is a prefix of what is in the buffer.
    expect(w.checkSpiffeId(8)).toBe(SPIFFE_ID_CODES.indexOf("SPIFFE_ID_WRONG_SCHEME"));
    expect(w.checkSpiffeId(9)).toBe(SPIFFE_ID_CODES.indexOf("SPIFFE_ID_MISSING_TRUST_DOMAIN"));
    expect(w.checkSpiffeId(21)).toBe(SPIFFE_ID_CODES.indexOf("SPIFFE_ID_TRAILING_SLASH"));
  });
});

/** mulberry32: a small deterministic PRNG, so the differential test is reproducible. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Weighted toward the characters that drive the state machine.
const ALPHABET: [string, number][] = [
  ["/", 14],
  [".", 12],
  ["a", 12],
  [":", 4],
  ["@", 4],
  ["?", 3],
  ["#", 3],
  ["%", 3],
  ["A", 5],
  ["0", 4],
  ["-", 3],
  ["_", 3],
  ["z", 2],
  ["Z", 1],
  [" ", 1],
  ["+", 1],
  ["~", 1],
  ["\\", 1],
  ["\u0000", 1],
  ["\u007f", 1],
  ["é", 1],
  ["€", 1],
  ["😀", 1],
  ["\ud800", 1],
];
const PREFIXES: [string, number][] = [
  ["spiffe://", 30],
  ["spiffe://example.org/", 10],
  ["spiffe:/", 2],
  ["spiffe:", 1],
  ["SPIFFE://", 2],
  ["", 5],
];

function weighted<T>(rand: () => number, table: [T, number][]): T {
  const total = table.reduce((n, [, w]) => n + w, 0);
  let r = rand() * total;
  for (const [v, w] of table) {
    r -= w;
    if (r < 0) return v;
  }
  return table[table.length - 1]![0];
}

function randomTail(rand: () => number, n: number): string {
  let s = "";
  for (let i = 0; i < n; i++) s += weighted(rand, ALPHABET);
  return s;
}

function randomId(rand: () => number): string {
  const prefix = weighted(rand, PREFIXES);
  const roll = rand();
  // Mostly short strings from the weighted alphabet.
  if (roll < 0.85) return prefix + randomTail(rand, Math.floor(rand() * 24));
  // A trust domain (or first segment) around the 255-byte limit, then a few random characters.
  if (roll < 0.93)
    return prefix + "a".repeat(250 + Math.floor(rand() * 10)) + randomTail(rand, Math.floor(rand() * 4));
  // A path of legal segments around the 2048-byte limit, then a few random (possibly multi-byte) characters.
  let s = prefix + "td";
  const target = MAX_SPIFFE_ID_BYTES - 12 + Math.floor(rand() * 16);
  while (s.length < target) s += "/" + "aB0._-".repeat(4).slice(0, 1 + Math.floor(rand() * 20));
  return s.slice(0, target) + randomTail(rand, Math.floor(rand() * 4));
}

describe("differential TS vs Wasm (seeded)", () => {
  it("agrees on 5000 random strings", () => {
    const rand = mulberry32(0x5eed_1d5);
    const seen = new Map<SpiffeIdCode, number>();
    for (let i = 0; i < 5000; i++) {
      const s = randomId(rand);
      const ts = checkSpiffeId(s);
      const wasm = wasmCheckSpiffeId(s);
      if (ts !== wasm) expect.fail(`case ${i}: TS ${ts} != Wasm ${wasm} for ${JSON.stringify(s)}`);
      if (ts === "OK") {
        const end = wasmSpiffeTrustDomainEnd(s);
        expect(end).toBe("spiffe://".length + SpiffeId.parse(s).trustDomain.length);
      }
      seen.set(ts, (seen.get(ts) ?? 0) + 1);
    }
    // The generator is meant to reach most outcomes; this guards against it degenerating.
    expect(seen.size).toBe(SPIFFE_ID_CODES.length);
  });
});
