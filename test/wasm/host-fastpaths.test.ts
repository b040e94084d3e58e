/**
 * The host's fast paths keep the ABI's results exact: the reused serialization scratch and the
 * per-stream serialized-map cache (invalidated by every change), the short-ASCII encode/decode paths
 * next to full UTF-8, lazily encoded (and memoized) property strings, the property-path cache, the
 * borrowed header pairs (the caller's array is never changed), the bounded histogram samples, HTTP
 * fields checked and decoded straight from guest memory, local responses (and the remembered details
 * string), and the stream table.
 */
import { Buffer } from "node:buffer";
import { describe, expect, it } from "vitest";
import { Status } from "../../host/wasm/proxy-wasm/abi.ts";
import { HISTOGRAM_SAMPLES } from "../../host/wasm/proxy-wasm/host.ts";
import {
  HeaderMapScratch,
  parseHeaderFields,
  parseHeaderMap,
  serializeHeaderMap,
  serializeHeaderMapInto,
} from "../../host/wasm/proxy-wasm/serialization.ts";
import { Probe } from "./helpers/probe.ts";

const te = new TextEncoder();
const td = new TextDecoder();

/** The reference serialization, written independently of serialization.ts. */
function reference(pairs: [string, string][]): Uint8Array {
  if (pairs.length === 0) return new Uint8Array(0);
  const enc = pairs.map(([k, v]) => [te.encode(k), te.encode(v)] as const);
  const parts: number[] = [];
  const u32 = (n: number) => parts.push(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24);
  u32(pairs.length);
  for (const [k, v] of enc) {
    u32(k.length);
    u32(v.length);
  }
  for (const [k, v] of enc) parts.push(...k, 0, ...v, 0);
  return Uint8Array.from(parts);
}

describe("serialization fast paths", () => {
  const cases: [string, string][][] = [
    [["a", "1"]],
    [
      ["x-ascii", "plain"],
      ["x-long", "v".repeat(5000)],
    ],
    [
      ["x-utf8", "grüße €"], // short, non-ASCII
      ["x-utf8-long", `${"é".repeat(40)}😀${"z".repeat(30)}`], // long, non-ASCII, astral
      ["ключ", "значение"], // non-ASCII key
      ["x-empty", ""],
    ],
    [["x-lone-surrogate", "a\ud800b"]], // encoded as U+FFFD, as TextEncoder does
  ];
  it("serializeHeaderMap and serializeHeaderMapInto match an independent encoder byte for byte", () => {
    const sc = new HeaderMapScratch();
    for (const pairs of cases) {
      expect(serializeHeaderMap(pairs)).toEqual(reference(pairs));
      expect(Uint8Array.from(serializeHeaderMapInto(pairs, sc))).toEqual(reference(pairs));
    }
  });
  it("the scratch grows for large maps and is reused afterwards", () => {
    const sc = new HeaderMapScratch();
    const big: [string, string][] = Array.from({ length: 64 }, (_, i) => [`k${i}`, "ü".repeat(300)]);
    const first = serializeHeaderMapInto(big, sc);
    expect(sc.buf.length).toBeGreaterThanOrEqual(first.length);
    expect(Uint8Array.from(first)).toEqual(reference(big));
    const small = serializeHeaderMapInto([["a", "b"]], sc);
    expect(small.buffer).toBe(sc.buf.buffer);
    expect(Uint8Array.from(small)).toEqual(reference([["a", "b"]]));
  });
  it("parseHeaderMap decodes short ASCII, long and non-ASCII strings and still refuses bad UTF-8", () => {
    for (const pairs of cases.slice(0, 3)) expect(parseHeaderMap(reference(pairs))).toEqual(pairs);
    const bad = reference([["ab", "cd"]]);
    bad[4 + 8 + 3] = 0xff; // the value's first byte: a short value that is not UTF-8
    expect(() => parseHeaderMap(bad)).toThrow(/not valid UTF-8/);
  });
});

describe("per-stream serialized maps", () => {
  it("a map read repeatedly is exact after every add / replace / remove / set", async () => {
    const p = await Probe.create();
    const given: [string, string][] = [
      [":method", "GET"],
      ["X-Upper", "1"],
      ["x-utf8", "ü"],
    ];
    const snapshot = given.map(([k, v]) => [k, v] as [string, string]);
    const seen: Uint8Array[] = [];
    const read = (type = 0): Uint8Array => {
      const out = p.outPair();
      expect(p.call("proxy_get_header_map_pairs", type, ...out)).toBe(Status.Ok);
      const size = p.alloc(4);
      expect(p.call("proxy_get_header_map_size", type, size)).toBe(Status.Ok);
      const b = p.returned(out);
      expect(p.u32(size)).toBe(b.length);
      return b;
    };
    p.on("request_headers", () => {
      seen.push(read(), read(), read()); // the second and third come from the stream's cached copy
      const [k, kl] = p.put("x-added");
      const [v, vl] = p.put("a");
      expect(p.call("proxy_add_header_map_value", 0, k, kl, v, vl)).toBe(Status.Ok);
      seen.push(read(), read());
      const [v2, v2l] = p.put("b");
      expect(p.call("proxy_replace_header_map_value", 0, k, kl, v2, v2l)).toBe(Status.Ok);
      seen.push(read(), read());
      const [uk, ukl] = p.put("x-upper");
      expect(p.call("proxy_remove_header_map_value", 0, uk, ukl)).toBe(Status.Ok);
      seen.push(read(), read());
      const [m, ml] = p.put(serializeHeaderMap([["only", "one"]]));
      expect(p.call("proxy_set_header_map_pairs", 0, m, ml)).toBe(Status.Ok);
      seen.push(read(), read());
      return 0;
    });
    p.on("response_headers", () => {
      seen.push(read(0), read(2), read(0), read(2)); // two map types alternating share one slot
      return 0;
    });
    const s = p.plugin.newHttpStream();
    s.onRequestHeaders(given, true);
    s.onResponseHeaders([[":status", "200"]], true);
    expect(p.handlerErrors).toEqual([]);
    const base: [string, string][] = [
      [":method", "GET"],
      ["x-upper", "1"],
      ["x-utf8", "ü"],
    ];
    const added: [string, string][] = [...base, ["x-added", "a"]];
    const replaced: [string, string][] = [...base, ["x-added", "b"]];
    const removed: [string, string][] = replaced.filter(([k]) => k !== "x-upper");
    const set: [string, string][] = [["only", "one"]];
    const status: [string, string][] = [[":status", "200"]];
    const want = [base, base, base, added, added, replaced, replaced, removed, removed, set, set];
    want.push(set, status, set, status);
    expect(seen.map((b) => parseHeaderMap(b))).toEqual(want);
    expect(seen.map((b) => [...b])).toEqual(want.map((m) => [...reference(m)]));
    // the caller's array and pairs were never changed (the host shares lower-case pairs, copies the rest)
    expect(given).toEqual(snapshot);
    expect(s.requestHeaders).toEqual(set);
  });

  it("a new header map for the stream is never answered from the previous one's bytes", async () => {
    const p = await Probe.create();
    const got: string[] = [];
    p.on("request_trailers", () => {
      const out = p.outPair();
      expect(p.call("proxy_get_header_map_pairs", 1, ...out)).toBe(Status.Ok);
      got.push(td.decode(p.returned(out)));
      expect(p.call("proxy_get_header_map_pairs", 1, ...out)).toBe(Status.Ok);
      got.push(td.decode(p.returned(out)));
      return 0;
    });
    const s = p.plugin.newHttpStream();
    s.onRequestHeaders([[":method", "GET"]], false);
    s.onRequestTrailers([["t", "1"]]);
    s.onRequestTrailers([["t", "2"]]);
    expect(got.map((x) => x.slice(-4))).toEqual([
      "t\u00001\u0000",
      "t\u00001\u0000",
      "t\u00002\u0000",
      "t\u00002\u0000",
    ]);
  });
});

describe("properties", () => {
  it("embedder strings are encoded as UTF-8 when read; same-length paths stay distinct", async () => {
    const p = await Probe.create({ properties: { "node.id": "nöde" } });
    const values = new Map<string, string | number>();
    p.on("request_headers", () => {
      for (const path of ["source\0aaa", "source\0bbb", "source\0aaa", "node\0id", "source\0ccc", "x\0y"]) {
        const [pp, pl] = p.put(path);
        const out = p.outPair();
        const st = p.call("proxy_get_property", pp, pl, ...out);
        values.set(`${path}#${values.size}`, st === Status.Ok ? td.decode(p.returned(out)) : st);
      }
      return 0;
    });
    const props = { "source.aaa": "spiffe://td/ä", "source\0bbb": "b", "source\0ccc": te.encode("c") };
    const s = p.plugin.newHttpStream({ properties: props });
    s.onRequestHeaders([], true);
    expect(p.handlerErrors).toEqual([]);
    expect([...values.values()]).toEqual([
      "spiffe://td/ä",
      "b",
      "spiffe://td/ä",
      "nöde",
      "c",
      Status.NotFound,
    ]);
    // the public view is bytes, whether or not the guest read the value
    const s2 = p.plugin.newHttpStream({ properties: { "a.b": "x€" } });
    expect(s2.properties.get("a\0b")).toEqual(te.encode("x€"));
    expect(s.properties.get("source\0aaa")).toEqual(te.encode("spiffe://td/ä"));
  });

  it("bytes given as a property are copied: changing them afterwards does not change the stream", async () => {
    const p = await Probe.create();
    const raw = te.encode("before");
    const buf = Buffer.from("buffer"); // Buffer#slice is a view: the host must still copy
    const s = p.plugin.newHttpStream({ properties: { "a.b": raw, "a.c": buf } });
    raw.set(te.encode("AFTER!"));
    buf.write("CHANGE");
    expect(td.decode(s.properties.get("a\0b"))).toBe("before");
    expect(td.decode(s.properties.get("a\0c"))).toBe("buffer");
  });
});

describe("metrics", () => {
  it("a histogram keeps its most recent samples, bounded", async () => {
    const p = await Probe.create();
    const n = 2 * HISTOGRAM_SAMPLES + 5;
    p.on("request_headers", () => {
      const [nm, nl] = p.put("h");
      const out = p.alloc(4);
      expect(p.call("proxy_define_metric", 2, nm, nl, out)).toBe(Status.Ok);
      const id = p.u32(out);
      for (let i = 1; i <= n; i++) p.call("proxy_record_metric", id, BigInt(i));
      return 0;
    });
    p.plugin.newHttpStream().onRequestHeaders([], true);
    const m = p.plugin.metrics.get("h")!;
    expect(m.value).toBe(BigInt(n));
    expect(m.samples!.length).toBeGreaterThanOrEqual(HISTOGRAM_SAMPLES);
    expect(m.samples!.length).toBeLessThanOrEqual(2 * HISTOGRAM_SAMPLES);
    const last = m.samples!.slice(-HISTOGRAM_SAMPLES);
    expect(last[0]).toBe(BigInt(n - HISTOGRAM_SAMPLES + 1));
    expect(last.at(-1)).toBe(BigInt(n));
  });
});

describe("HTTP fields from guest memory (parseHeaderFields)", () => {
  /** The map at an offset inside a larger buffer, as the host reads it from guest memory. */
  const inMemory = (map: Uint8Array, at = 37): [Buffer, number, number] => {
    const mem = Buffer.alloc(at + map.length + 11, 0xee);
    mem.set(map, at);
    return [mem, at, at + map.length];
  };
  const fields = (map: Uint8Array) => parseHeaderFields(...inMemory(map));

  it("decodes valid fields, lower-cases names (ASCII and not), and agrees with parseHeaderMap", () => {
    const pairs: [string, string][] = [
      ["X-QHx-Authz-Reason", "denied: forbidden by a, b"],
      ["content-type", "text/plain"],
      ["Ключ", "значение"],
      ["x-empty", ""],
    ];
    expect(fields(reference(pairs))).toEqual(pairs.map(([k, v]) => [k.toLowerCase(), v]));
    expect(fields(reference([["a", "1"]]))).toEqual([["a", "1"]]);
    expect(fields(new Uint8Array(0))).toEqual([]);
    expect(fields(Uint8Array.of(0))).toEqual([]);
    const more: [string, string][][] = [
      [["x-long", "v".repeat(5000)]],
      [["x-utf8-long", `${"é".repeat(40)}😀${"z".repeat(30)}`]],
      [["Mixed-Case", "ü"]],
    ];
    for (const c of more) {
      expect(fields(reference(c))).toEqual(
        parseHeaderMap(reference(c)).map(([k, v]) => [k.toLowerCase(), v]),
      );
    }
  });

  it("refuses what parseHeaderMap refuses and what HTTP fields may not hold", () => {
    const bad: [string, Uint8Array][] = [
      ["empty name", reference([["", "v"]])],
      ["NUL in a name", reference([["a\0b", "v"]])],
      ["NUL in a value", reference([["a", "v\0w"]])],
      ["CR in a value", reference([["a", "v\rw"]])],
      ["LF in a name", reference([["a\nb", "v"]])],
      ["truncated", reference([["a", "v"]]).subarray(0, 10)],
      ["trailing bytes", Uint8Array.from([...reference([["a", "v"]]), 0])],
      ["count beyond the bytes", Uint8Array.of(9, 0, 0, 0, 1, 0, 0, 0)],
      ["three bytes", Uint8Array.of(1, 0, 0)],
    ];
    const notUtf8 = reference([["ab", "cd"]]);
    notUtf8[4 + 8 + 3] = 0xff;
    bad.push(["not UTF-8", notUtf8]);
    const unterminated = reference([["ab", "cd"]]);
    unterminated[4 + 8 + 2] = 0x41; // the key's NUL
    bad.push(["key not NUL-terminated", unterminated]);
    for (const [why, map] of bad) expect(fields(map), why).toBeUndefined();
    // parseHeaderMap itself still accepts an empty name or NUL inside a string (only fields refuse them)
    expect(parseHeaderMap(reference([["", "v"]]))).toEqual([["", "v"]]);
    expect(() => parseHeaderMap(unterminated)).toThrow(/not NUL-terminated/);
  });
});

describe("local responses", () => {
  it("details, body and headers are exact for every response, whatever the previous one was", async () => {
    const p = await Probe.create();
    const answers: [string, string, [string, string][]][] = [
      ["qhx_authz_denied", "one\n", [["X-Reason", "a"]]],
      ["qhx_authz_denied", "two\n", [["x-reason", "b"]]],
      ["qhx_authz_denieD", "", []], // same length, one byte apart
      ["qhx_authz_error", "ü\n", [["x-reason", "grüße"]]],
      ["", "x".repeat(300), [["x-long", "y".repeat(300)]]],
      ["d".repeat(100), "", []], // too long to be remembered
      ["d".repeat(100), "", []],
      ["qhx_authz_denied", "one\n", [["x-reason", "a"]]],
    ];
    let next = 0;
    p.on("request_headers", () => {
      const [d, b, h] = answers[next++]!;
      const [dp, dl] = p.put(d);
      const [bp, bl] = p.put(b);
      const [hp, hl] = p.put(serializeHeaderMap(h));
      expect(p.call("proxy_send_local_response", 403, dp, dl, bp, bl, hp, hl, -1)).toBe(Status.Ok);
      return 0;
    });
    for (const [d, b, h] of answers) {
      const s = p.plugin.newHttpStream();
      expect(s.onRequestHeaders([[":path", "/"]], true)).toBe("pause");
      expect(s.localResponse).toEqual({
        status: 403,
        details: d,
        body: te.encode(b),
        headers: h.map(([k, v]) => [k.toLowerCase(), v]),
        grpcStatus: -1,
      });
      s.done();
    }
    expect(p.handlerErrors).toEqual([]);
  });
});

describe("the stream table", () => {
  it("finds every live stream by id and none of the finished ones, with many streams finishing in any order", async () => {
    const p = await Probe.create();
    const n = 300;
    const streams = Array.from({ length: n }, () => p.plugin.newHttpStream());
    const order = Array.from({ length: n }, (_, i) => (i * 7919) % n); // a permutation (7919 is prime)
    const done = new Set<number>();
    let probeIds: number[] = [];
    const seen: number[] = [];
    p.on("request_headers", () => {
      for (const id of probeIds) seen.push(p.call("proxy_set_effective_context", id));
      return 0;
    });
    for (let k = 0; k < n; k++) {
      const s = streams[order[k]!]!;
      // from inside this stream's callback: every stream's id, live or finished
      probeIds = streams.filter((_, i) => i % 13 === k % 13).map((x) => x.contextId);
      seen.length = 0;
      s.onRequestHeaders([], true);
      const want = probeIds.map((id) => (done.has(id) ? Status.BadArgument : Status.Ok));
      expect(seen).toEqual(want);
      s.done();
      done.add(s.contextId);
      expect(s.deleted).toBe(true);
    }
    // and a fresh round after all of them are gone
    const again = p.plugin.newHttpStream();
    probeIds = [again.contextId, streams[0]!.contextId];
    seen.length = 0;
    again.onRequestHeaders([], true);
    expect(seen).toEqual([Status.Ok, Status.BadArgument]);
    expect(p.handlerErrors).toEqual([]);
  });
});
