/**
 * Conformance of the proxy-wasm ABI v0.2.1 host, one block per host function: each is called by real
 * Wasm code (the probe's t_<name> pass-throughs) from inside a real callback, and checked for the spec's
 * status codes, out-param writes, memory ownership and serialization.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ENV_HOST_FUNCTIONS, Errno, Status, WASI_SPEC_FUNCTIONS } from "../../host/wasm/proxy-wasm/abi.ts";
import {
  encodeInt64Property,
  HeaderMapParseError,
  parseHeaderMap,
  serializeHeaderMap,
} from "../../host/wasm/proxy-wasm/serialization.ts";
import { fixture, moduleInterface } from "./helpers/fixtures.ts";
import { Probe } from "./helpers/probe.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const BEYOND = 0x7fff_fff0; // far past any linear memory

/** Run `f` inside proxy_on_request_headers of a fresh stream; returns what f returned. */
function inRequest<T>(p: Probe, headers: [string, string][], f: () => T, body?: Uint8Array): T {
  let out: T | undefined;
  const ev = body ? "request_body" : "request_headers";
  p.on(ev, () => {
    out = f();
    return 0;
  });
  const s = p.plugin.newHttpStream();
  s.onRequestHeaders(headers, !body);
  if (body) s.onRequestBody(body, true);
  p.off(ev);
  expect(p.handlerErrors).toEqual([]);
  return out as T;
}

describe("imports and exports", () => {
  it("the probe imports every host function the spec defines, and the host instantiates it", async () => {
    const { imports } = moduleInterface(await fixture("probe"));
    expect(new Set(imports)).toEqual(
      new Set([
        ...ENV_HOST_FUNCTIONS.map((n) => `env.${n}`),
        ...WASI_SPEC_FUNCTIONS.map((n) => `wasi_snapshot_preview1.${n}`),
      ]),
    );
    const p = await Probe.create();
    expect(p.plugin.failed).toBe(false);
  });
});

describe("proxy_log / proxy_get_log_level", () => {
  it("logs at each level, rejects unknown levels and bad memory", async () => {
    const p = await Probe.create();
    inRequest(p, [], () => {
      for (let l = 0; l <= 5; l++) {
        const [m, n] = p.put(`msg ${l}`);
        expect(p.call("proxy_log", l, m, n)).toBe(Status.Ok);
      }
      const [m, n] = p.put("x");
      expect(p.call("proxy_log", 6, m, n)).toBe(Status.BadArgument);
      expect(p.call("proxy_log", -1, m, n)).toBe(Status.BadArgument);
      expect(p.call("proxy_log", 2, BEYOND, 4)).toBe(Status.InvalidMemoryAccess);
      expect(p.call("proxy_log", 2, p.memSize - 2, 4)).toBe(Status.InvalidMemoryAccess);
      expect(p.call("proxy_log", 2, m, -1)).toBe(Status.InvalidMemoryAccess);
    });
    expect(p.logs).toEqual([
      ["trace", "msg 0"],
      ["debug", "msg 1"],
      ["info", "msg 2"],
      ["warn", "msg 3"],
      ["error", "msg 4"],
      ["critical", "msg 5"],
    ]);
  });

  it("reports the host log level and drops messages below it", async () => {
    const p = await Probe.create({ logLevel: "warn" });
    inRequest(p, [], () => {
      const out = p.alloc(4);
      expect(p.call("proxy_get_log_level", out)).toBe(Status.Ok);
      expect(p.u32(out)).toBe(3);
      expect(p.call("proxy_get_log_level", BEYOND)).toBe(Status.InvalidMemoryAccess);
      for (const l of [1, 3]) {
        const [m, n] = p.put(`l${l}`);
        p.call("proxy_log", l, m, n);
      }
    });
    expect(p.logs).toEqual([["warn", "l3"]]);
  });
});

describe("clocks and timers", () => {
  it("proxy_get_current_time_nanoseconds follows the injected clock", async () => {
    let now = 1_767_225_600_123;
    const p = await Probe.create({ clock: { now: () => now } });
    inRequest(p, [], () => {
      const out = p.alloc(8);
      expect(p.call("proxy_get_current_time_nanoseconds", out)).toBe(Status.Ok);
      expect(p.u64(out)).toBe(1_767_225_600_123_000_000n);
      now += 5;
      p.call("proxy_get_current_time_nanoseconds", out);
      expect(p.u64(out)).toBe(1_767_225_600_128_000_000n);
      expect(p.call("proxy_get_current_time_nanoseconds", p.memSize - 4)).toBe(Status.InvalidMemoryAccess);
    });
  });

  it("proxy_set_tick_period_milliseconds arms proxy_on_tick; 0 disarms", async () => {
    const p = await Probe.create({}, (p) =>
      p.on("configure", () => {
        expect(p.call("proxy_set_tick_period_milliseconds", 250)).toBe(Status.Ok);
        return true;
      }),
    );
    expect(p.plugin.tickPeriodMs).toBe(250);
    p.plugin.tick();
    p.plugin.tick();
    expect(p.eventsOf("tick")).toEqual([
      [1, 0, 0, 0, 0],
      [1, 0, 0, 0, 0],
    ]);
    p.on("tick", () => {
      p.call("proxy_set_tick_period_milliseconds", 0);
      return undefined;
    });
    p.plugin.tick();
    p.plugin.tick();
    expect(p.eventsOf("tick")).toHaveLength(3);
  });
});

describe("WASI functions", () => {
  it("fd_write goes to the log (stdout info, stderr error); other fds are BADF", async () => {
    const p = await Probe.create();
    inRequest(p, [], () => {
      const [a, al] = p.put("hello ");
      const [b, bl] = p.put("world\n");
      const iov = p.alloc(16);
      const dv = new DataView(p.mem);
      dv.setUint32(iov, a, true);
      dv.setUint32(iov + 4, al, true);
      dv.setUint32(iov + 8, b, true);
      dv.setUint32(iov + 12, bl, true);
      const written = p.alloc(4);
      expect(p.call("fd_write", 1, iov, 2, written)).toBe(Errno.Success);
      expect(p.u32(written)).toBe(12);
      expect(p.call("fd_write", 2, iov, 1, written)).toBe(Errno.Success);
      expect(p.call("fd_write", 3, iov, 1, written)).toBe(Errno.Badf);
      expect(p.call("fd_write", 1, BEYOND, 1, written)).toBe(Errno.Fault);
      new DataView(p.mem).setUint32(iov, BEYOND, true);
      expect(p.call("fd_write", 1, iov, 1, written)).toBe(Errno.Fault);
    });
    expect(p.logs).toEqual([
      ["info", "hello world"],
      ["error", "hello "],
    ]);
  });

  it("clock_time_get: realtime from the clock, monotonic, NOTSUP otherwise", async () => {
    const p = await Probe.create({ clock: { now: () => 2000 } });
    inRequest(p, [], () => {
      const out = p.alloc(8);
      expect(p.call("clock_time_get", 0, 1n, out)).toBe(Errno.Success);
      expect(p.u64(out)).toBe(2_000_000_000n);
      expect(p.call("clock_time_get", 1, 1n, out)).toBe(Errno.Success);
      const m1 = p.u64(out);
      p.call("clock_time_get", 1, 1n, out);
      expect(p.u64(out) >= m1).toBe(true);
      expect(p.call("clock_time_get", 2, 1n, out)).toBe(Errno.Notsup);
      expect(p.call("clock_time_get", 0, 1n, BEYOND)).toBe(Errno.Fault);
    });
  });

  it("random_get fills the buffer; INVAL past 64 KiB; FAULT out of bounds", async () => {
    const p = await Probe.create();
    inRequest(p, [], () => {
      const buf = p.alloc(64);
      new Uint8Array(p.mem, buf, 64).fill(0);
      expect(p.call("random_get", buf, 64)).toBe(Errno.Success);
      expect(p.bytes(buf, 64).some((b) => b !== 0)).toBe(true);
      expect(p.call("random_get", buf, 65537)).toBe(Errno.Inval);
      expect(p.call("random_get", p.memSize - 8, 64)).toBe(Errno.Fault);
    });
  });

  it("environ and args are empty; proc_exit is a trap", async () => {
    const p = await Probe.create();
    inRequest(p, [], () => {
      const [a, b] = p.outPair();
      expect(p.call("environ_sizes_get", a, b)).toBe(Errno.Success);
      expect([p.u32(a), p.u32(b)]).toEqual([0, 0]);
      expect(p.call("args_sizes_get", a, b)).toBe(Errno.Success);
      expect([p.u32(a), p.u32(b)]).toEqual([0, 0]);
      expect(p.call("environ_sizes_get", BEYOND, b)).toBe(Errno.Fault);
      expect(p.call("args_get", a, b)).toBe(Errno.Success);
      expect(p.call("environ_get", a, b)).toBe(Errno.Success);
    });
    const s = p.plugin.newHttpStream();
    p.on("request_headers", () => ({ procExit: 3 }));
    // the guest's proc_exit unwinds its callback: fail closed
    expect(s.onRequestHeaders([], true)).toBe("pause");
    expect(p.plugin.failed).toBe(true);
    expect(s.localResponse?.status).toBe(503);
    expect(p.logs.some(([l, m]) => l === "critical" && m.includes("proc_exit(3)"))).toBe(true);
  });
});

describe("buffers", () => {
  it("proxy_get_buffer_bytes windows the request body; status codes", async () => {
    const p = await Probe.create();
    const body = te.encode("0123456789");
    inRequest(
      p,
      [],
      () => {
        let out = p.outPair();
        expect(p.call("proxy_get_buffer_bytes", 0, 0, 10, ...out)).toBe(Status.Ok);
        expect(td.decode(p.returned(out))).toBe("0123456789");
        out = p.outPair();
        expect(p.call("proxy_get_buffer_bytes", 0, 3, 4, ...out)).toBe(Status.Ok);
        expect(td.decode(p.returned(out))).toBe("3456");
        out = p.outPair();
        expect(p.call("proxy_get_buffer_bytes", 0, 8, 100, ...out)).toBe(Status.Ok); // clamped
        expect(td.decode(p.returned(out))).toBe("89");
        out = p.outPair();
        expect(p.call("proxy_get_buffer_bytes", 0, 10, 5, ...out)).toBe(Status.Ok); // empty: (0, 0)
        expect([p.u32(out[0]), p.u32(out[1])]).toEqual([0, 0]);
        out = p.outPair();
        expect(p.call("proxy_get_buffer_bytes", 0, 11, 5, ...out)).toBe(Status.Ok); // past the end: empty
        expect([p.u32(out[0]), p.u32(out[1])]).toEqual([0, 0]);
        expect(p.call("proxy_get_buffer_bytes", 0, 5, -1, ...p.outPair())).toBe(Status.BadArgument); // overflow
        expect(p.call("proxy_get_buffer_bytes", 9, 0, 5, ...p.outPair())).toBe(Status.BadArgument);
        expect(p.call("proxy_get_buffer_bytes", 1, 0, 5, ...p.outPair())).toBe(Status.NotFound); // no response body
        expect(p.call("proxy_get_buffer_bytes", 7, 0, 5, ...p.outPair())).toBe(Status.NotFound); // config: not now
        expect(p.call("proxy_get_buffer_bytes", 0, 0, 5, BEYOND, 16)).toBe(Status.InvalidMemoryAccess);
        expect(p.call("proxy_get_buffer_bytes", 0, 0, 5, 16, p.memSize - 2)).toBe(Status.InvalidMemoryAccess);
        const st = p.outPair();
        expect(p.call("proxy_get_buffer_status", 0, ...st)).toBe(Status.Ok);
        expect(p.u32(st[0])).toBe(10);
        expect(p.call("proxy_get_buffer_status", 12, ...st)).toBe(Status.BadArgument);
        expect(p.call("proxy_get_buffer_status", 4, ...st)).toBe(Status.NotFound);
        expect(p.call("proxy_get_buffer_status", 0, BEYOND, st[1])).toBe(Status.InvalidMemoryAccess);
      },
      body,
    );
  });

  it("proxy_set_buffer_bytes prepends, replaces, appends the request body", async () => {
    const p = await Probe.create();
    p.on("request_body", () => {
      const [a, al] = p.put(">>");
      expect(p.call("proxy_set_buffer_bytes", 0, 0, 0, a, al)).toBe(Status.Ok); // prepend
      const [b, bl] = p.put("XY");
      expect(p.call("proxy_set_buffer_bytes", 0, 2, 3, b, bl)).toBe(Status.Ok); // replace "abc"
      const [c, cl] = p.put("<<");
      expect(p.call("proxy_set_buffer_bytes", 0, -1, 0, c, cl)).toBe(Status.Ok); // append (max size_t)
      expect(p.call("proxy_set_buffer_bytes", 0, 0, 0, BEYOND, 2)).toBe(Status.InvalidMemoryAccess);
      expect(p.call("proxy_set_buffer_bytes", 7, 0, 0, c, cl)).toBe(Status.NotFound); // not writable
      expect(p.call("proxy_set_buffer_bytes", 99, 0, 0, c, cl)).toBe(Status.BadArgument);
      return 0;
    });
    const stream = p.plugin.newHttpStream();
    stream.onRequestHeaders([], false);
    stream.onRequestBody(te.encode("abcdef"), true);
    expect(p.handlerErrors).toEqual([]);
    expect(td.decode(stream.requestBody)).toBe(">>XYdef<<");
  });

  it("a paused request buffers body chunks: body_size is the running total", async () => {
    const p = await Probe.create();
    p.on("request_body", ([, size, eos]) => (eos ? 0 : size! < 6 ? 1 : 0));
    const s = p.plugin.newHttpStream();
    s.onRequestHeaders([], false);
    expect(s.onRequestBody(te.encode("abc"), false)).toBe("pause");
    expect(s.onRequestBody(te.encode("def"), true)).toBe("continue");
    expect(p.eventsOf("request_body").map((a) => a[1])).toEqual([3, 6]);
    expect(td.decode(s.requestBody)).toBe("abcdef");
  });

  it("host buffers larger than the guest's memory make it grow; the pointer stays valid", async () => {
    const p = await Probe.create();
    const big = new Uint8Array(300_000).map((_, i) => i & 0xff);
    const got = inRequest(
      p,
      [],
      () => {
        const before = p.memSize;
        const out = p.outPair();
        expect(p.call("proxy_get_buffer_bytes", 0, 0, big.length, ...out)).toBe(Status.Ok);
        expect(p.memSize).toBeGreaterThan(before);
        return p.returned(out);
      },
      big,
    );
    expect(got).toEqual(big);
  });
});

describe("header maps", () => {
  const H: [string, string][] = [
    [":method", "GET"],
    [":path", "/x?y=1"],
    [":authority", "api.example"],
    ["Accept", "a/b"],
    ["x-multi", "1"],
    ["x-multi", "2"],
  ];

  it("proxy_get_header_map_pairs returns the spec serialization, allocated in the guest", async () => {
    const p = await Probe.create();
    inRequest(p, H, () => {
      const out = p.outPair();
      expect(p.call("proxy_get_header_map_pairs", 0, ...out)).toBe(Status.Ok);
      const raw = p.returned(out);
      const lower = H.map(([k, v]) => [k.toLowerCase(), v] as [string, string]);
      expect(raw).toEqual(serializeHeaderMap(lower));
      expect(parseHeaderMap(raw)).toEqual(lower);
      // spec example layout: count, (klen, vlen)*, key\0value\0 ...
      const dv = new DataView(raw.buffer);
      expect(dv.getUint32(0, true)).toBe(6);
      expect([dv.getUint32(4, true), dv.getUint32(8, true)]).toEqual([7, 3]);
      expect(td.decode(raw.subarray(4 + 48, 4 + 48 + 12))).toBe(":method\0GET\0");
      const size = p.alloc(4);
      expect(p.call("proxy_get_header_map_size", 0, size)).toBe(Status.Ok);
      expect(p.u32(size)).toBe(raw.length);
      expect(p.call("proxy_get_header_map_size", 0, BEYOND)).toBe(Status.InvalidMemoryAccess);
      expect(p.call("proxy_get_header_map_pairs", 8, ...p.outPair())).toBe(Status.BadArgument);
      expect(p.call("proxy_get_header_map_pairs", 2, ...p.outPair())).toBe(Status.BadArgument); // no response yet
      expect(p.call("proxy_get_header_map_pairs", 0, BEYOND, out[1])).toBe(Status.InvalidMemoryAccess);
    });
  });

  it("the spec's example map {a: 1, b: 22} serializes byte for byte", () => {
    expect([
      ...serializeHeaderMap([
        ["a", "1"],
        ["b", "22"],
      ]),
    ]).toEqual([
      2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0x61, 0, 0x31, 0, 0x62, 0, 0x32, 0x32, 0,
    ]);
    expect(parseHeaderMap(new Uint8Array(0))).toEqual([]);
    expect(parseHeaderMap(Uint8Array.of(0))).toEqual([]);
    expect(parseHeaderMap(new Uint8Array(4))).toEqual([]); // a zero count is accepted too
    expect(serializeHeaderMap([])).toEqual(new Uint8Array(0));
    for (const bad of [Uint8Array.of(1), Uint8Array.of(0, 0), Uint8Array.of(0, 0, 0, 0, 0)]) {
      expect(() => parseHeaderMap(bad)).toThrow(HeaderMapParseError);
    }
  });

  it("an empty map is returned as (0, 0) without allocating", async () => {
    const p = await Probe.create();
    inRequest(p, [], () => {
      const out = p.outPair();
      expect(p.call("proxy_get_header_map_pairs", 0, ...out)).toBe(Status.Ok);
      expect([p.u32(out[0]), p.u32(out[1])]).toEqual([0, 0]);
      const size = p.alloc(4);
      expect(p.call("proxy_get_header_map_size", 0, size)).toBe(Status.Ok);
      expect(p.u32(size)).toBe(0);
    });
  });

  it("proxy_get_header_map_value: case-insensitive, first value, NOT_FOUND", async () => {
    const p = await Probe.create();
    inRequest(p, H, () => {
      const get = (k: string): [number, string] => {
        const [kp, kl] = p.put(k);
        const out = p.outPair();
        const st = p.call("proxy_get_header_map_value", 0, kp, kl, ...out);
        return [st, st === Status.Ok ? p.returnedText(out) : ""];
      };
      expect(get(":path")).toEqual([Status.Ok, "/x?y=1"]);
      expect(get("ACCEPT")).toEqual([Status.Ok, "a/b"]);
      expect(get("x-multi")).toEqual([Status.Ok, "1"]);
      expect(get("missing")).toEqual([Status.NotFound, ""]);
      const [kp, kl] = p.put("accept");
      expect(p.call("proxy_get_header_map_value", 0, BEYOND, 3, ...p.outPair())).toBe(
        Status.InvalidMemoryAccess,
      );
      expect(p.call("proxy_get_header_map_value", 0, kp, kl, BEYOND, BEYOND)).toBe(
        Status.InvalidMemoryAccess,
      );
      expect(p.call("proxy_get_header_map_value", 9, kp, kl, ...p.outPair())).toBe(Status.BadArgument);
      expect(p.call("proxy_get_header_map_value", 2, kp, kl, ...p.outPair())).toBe(Status.NotFound);
    });
  });

  it("add / replace / remove / set pairs modify the stream's headers", async () => {
    const p = await Probe.create();
    p.on("request_headers", () => {
      const [ak, akl] = p.put("X-Added");
      const [av, avl] = p.put("v1");
      expect(p.call("proxy_add_header_map_value", 0, ak, akl, av, avl)).toBe(Status.Ok);
      expect(p.call("proxy_add_header_map_value", 0, ak, akl, av, avl)).toBe(Status.Ok);
      const [rk, rkl] = p.put("x-multi");
      const [rv, rvl] = p.put("only");
      expect(p.call("proxy_replace_header_map_value", 0, rk, rkl, rv, rvl)).toBe(Status.Ok);
      const [nk, nkl] = p.put("x-new");
      expect(p.call("proxy_replace_header_map_value", 0, nk, nkl, rv, rvl)).toBe(Status.Ok);
      const [dk, dkl] = p.put("Accept");
      expect(p.call("proxy_remove_header_map_value", 0, dk, dkl)).toBe(Status.Ok);
      expect(p.call("proxy_remove_header_map_value", 0, dk, dkl)).toBe(Status.Ok); // absent: still OK
      // header injection is refused
      const [bad, badl] = p.put("a\r\nb");
      expect(p.call("proxy_add_header_map_value", 0, ak, akl, bad, badl)).toBe(Status.BadArgument);
      expect(p.call("proxy_replace_header_map_value", 0, bad, badl, av, avl)).toBe(Status.BadArgument);
      const [ek, ekl] = p.put("");
      expect(p.call("proxy_add_header_map_value", 0, ek, ekl, av, avl)).toBe(Status.BadArgument);
      expect(p.call("proxy_add_header_map_value", 0, BEYOND, 1, av, avl)).toBe(Status.InvalidMemoryAccess);
      expect(p.call("proxy_remove_header_map_value", 0, BEYOND, 1)).toBe(Status.InvalidMemoryAccess);
      expect(p.call("proxy_add_header_map_value", 10, ak, akl, av, avl)).toBe(Status.BadArgument);
      expect(p.call("proxy_add_header_map_value", 6, ak, akl, av, avl)).toBe(Status.BadArgument); // read-only
      return 0;
    });
    const s = p.plugin.newHttpStream();
    s.onRequestHeaders(H, true);
    expect(p.handlerErrors).toEqual([]);
    expect(s.requestHeaders).toEqual([
      [":method", "GET"],
      [":path", "/x?y=1"],
      [":authority", "api.example"],
      ["x-multi", "only"],
      ["x-added", "v1"],
      ["x-added", "v1"],
      ["x-new", "only"],
    ]);

    p.on("response_headers", () => {
      const [m, ml] = p.put(
        serializeHeaderMap([
          [":status", "201"],
          ["Set-Cookie", "a=1"],
        ]),
      );
      expect(p.call("proxy_set_header_map_pairs", 2, m, ml)).toBe(Status.Ok);
      const [e, el] = p.put(Uint8Array.of(0));
      expect(p.call("proxy_set_header_map_pairs", 3, e, el)).toBe(Status.Ok); // trailers: empty map
      const [bad, badl] = p.put(Uint8Array.of(5, 0, 0, 0, 1));
      expect(p.call("proxy_set_header_map_pairs", 2, bad, badl)).toBe(Status.BadArgument);
      expect(p.call("proxy_set_header_map_pairs", 2, BEYOND, 8)).toBe(Status.InvalidMemoryAccess);
      expect(p.call("proxy_set_header_map_pairs", 11, m, ml)).toBe(Status.BadArgument);
      return 0;
    });
    s.onResponseHeaders([[":status", "200"]], true);
    expect(p.handlerErrors).toEqual([]);
    expect(s.responseHeaders).toEqual([
      [":status", "201"],
      ["set-cookie", "a=1"],
    ]);
    expect(s.responseTrailers).toEqual([]);
  });

  it("trailers: request and response trailers callbacks", async () => {
    const p = await Probe.create();
    let seen = "";
    p.on("request_trailers", ([, n]) => {
      const out = p.outPair();
      expect(p.call("proxy_get_header_map_pairs", 1, ...out)).toBe(Status.Ok);
      seen = `${n}:${JSON.stringify(parseHeaderMap(p.returned(out)))}`;
      return 0;
    });
    const s = p.plugin.newHttpStream();
    s.onRequestHeaders([], false);
    expect(s.onRequestTrailers([["grpc-status", "0"]])).toBe("continue");
    expect(s.onResponseTrailers([["x", "y"]])).toBe("continue");
    expect(seen).toBe('1:[["grpc-status","0"]]');
    expect(p.eventsOf("response_trailers")).toHaveLength(1);
  });
});

describe("proxy_set_effective_context", () => {
  it("switches the context host calls act on; unknown ids are BAD_ARGUMENT", async () => {
    const p = await Probe.create();
    const a = p.plugin.newHttpStream();
    a.onRequestHeaders([["x-who", "a"]], true);
    const b = p.plugin.newHttpStream();
    let seen = "";
    p.on("request_headers", () => {
      expect(p.call("proxy_set_effective_context", a.contextId)).toBe(Status.Ok);
      const [k, kl] = p.put("x-who");
      const out = p.outPair();
      expect(p.call("proxy_get_header_map_value", 0, k, kl, ...out)).toBe(Status.Ok);
      seen = p.returnedText(out);
      expect(p.call("proxy_set_effective_context", 999)).toBe(Status.BadArgument);
      return 0;
    });
    b.onRequestHeaders([["x-who", "b"]], true);
    expect(p.handlerErrors).toEqual([]);
    expect(seen).toBe("a");
  });
});

describe("proxy_send_local_response", () => {
  it("validates memory, headers and context", async () => {
    const p = await Probe.create();
    inRequest(p, [], () => {
      const [d, dl] = p.put("x");
      const [h, hl] = p.put(serializeHeaderMap([["ok", "1"]]));
      expect(p.call("proxy_send_local_response", 403, BEYOND, 1, 0, 0, h, hl, -1)).toBe(
        Status.InvalidMemoryAccess,
      );
      expect(p.call("proxy_send_local_response", 403, d, dl, BEYOND, 1, h, hl, -1)).toBe(
        Status.InvalidMemoryAccess,
      );
      const [bad, badl] = p.put(Uint8Array.of(1, 0, 0, 0, 9, 0, 0, 0));
      expect(p.call("proxy_send_local_response", 403, d, dl, 0, 0, bad, badl, -1)).toBe(Status.BadArgument);
      const [inj, injl] = p.put(serializeHeaderMap([["x", "a\nb"]]));
      expect(p.call("proxy_send_local_response", 403, d, dl, 0, 0, inj, injl, -1)).toBe(Status.BadArgument);
      expect(p.call("proxy_send_local_response", 42, d, dl, 0, 0, h, hl, -1)).toBe(Status.BadArgument);
    });
    // from the root context (no stream to answer)
    p.on("tick", () => {
      expect(p.call("proxy_send_local_response", 403, 0, 0, 0, 0, 0, 0, -1)).toBe(Status.BadArgument);
      return undefined;
    });
    p.on("configure", () => {
      p.call("proxy_set_tick_period_milliseconds", 1);
      return true;
    });
    p.plugin.configure("");
    p.plugin.tick();
    expect(p.eventsOf("tick")).toHaveLength(1);
    expect(p.handlerErrors).toEqual([]);
  });
});

describe("properties", () => {
  it("plugin, stream, built-in and derived properties by NUL-joined path", async () => {
    const p = await Probe.create({
      rootId: "qhx_authz",
      name: "authz",
      vmId: "vm1",
      properties: { "node.id": "sidecar~1", "node\0cluster": "c1" },
    });
    const results = inRequest(
      p,
      [
        [":path", "/v1/x?a=b"],
        [":method", "POST"],
        [":authority", "svc"],
      ],
      () => {
        const get = (path: string): [number, Uint8Array] => {
          const [pp, pl] = p.put(path);
          const out = p.outPair();
          const st = p.call("proxy_get_property", pp, pl, ...out);
          return [st, st === Status.Ok ? p.returned(out) : new Uint8Array(0)];
        };
        const text = (path: string): string | number => {
          const [st, v] = get(path);
          return st === Status.Ok ? td.decode(v) : st;
        };
        expect(p.call("proxy_get_property", BEYOND, 4, ...p.outPair())).toBe(Status.InvalidMemoryAccess);
        const [pp, pl] = p.put("plugin_name");
        expect(p.call("proxy_get_property", pp, pl, BEYOND, 0)).toBe(Status.InvalidMemoryAccess);
        // set_property then read back from the same stream
        const [sk, skl] = p.put("filter_state\0qhx.decision");
        const [sv, svl] = p.put("allow");
        expect(p.call("proxy_set_property", sk, skl, sv, svl)).toBe(Status.Ok);
        expect(p.call("proxy_set_property", BEYOND, 1, sv, svl)).toBe(Status.InvalidMemoryAccess);
        return {
          name: text("plugin_name"),
          root: text("plugin_root_id"),
          vm: text("plugin_vm_id"),
          node: text("node\0id"),
          cluster: text("node\0cluster"),
          nodeTrailingNul: text("node\0id\0"),
          dotted: text("node.id"), // a dot is not a separator in the ABI
          san: text("connection\0uri_san_peer_certificate"),
          port: get("source\0port")[1],
          path: text("request\0path"),
          urlPath: text("request\0url_path"),
          query: text("request\0query"),
          method: text("request\0method"),
          host: text("request\0host"),
          missing: text("request\0nonexistent"),
          state: text("filter_state\0qhx.decision"),
        };
      },
    );
    expect(results).toEqual({
      name: "authz",
      root: "qhx_authz",
      vm: "vm1",
      node: "sidecar~1",
      cluster: "c1",
      nodeTrailingNul: "sidecar~1",
      dotted: Status.NotFound,
      san: Status.NotFound, // this stream has no peer certificate
      port: new Uint8Array(0),
      path: "/v1/x?a=b",
      urlPath: "/v1/x",
      query: "a=b",
      method: "POST",
      host: "svc",
      missing: Status.NotFound,
      state: "allow",
    });

    const s = p.plugin.newHttpStream({
      properties: {
        "connection\0uri_san_peer_certificate": "spiffe://example.org/ns/a/sa/b",
        "source.port": encodeInt64Property(44321),
      },
    });
    let san = "";
    let port = 0n;
    p.on("request_headers", () => {
      const [pp, pl] = p.put("connection\0uri_san_peer_certificate");
      let out = p.outPair();
      expect(p.call("proxy_get_property", pp, pl, ...out)).toBe(Status.Ok);
      san = p.returnedText(out);
      const [qp, ql] = p.put("source\0port");
      out = p.outPair();
      expect(p.call("proxy_get_property", qp, ql, ...out)).toBe(Status.Ok);
      port = new DataView(p.returned(out).buffer).getBigInt64(0, true);
      return 0;
    });
    s.onRequestHeaders([], true);
    expect(p.handlerErrors).toEqual([]);
    expect(san).toBe("spiffe://example.org/ns/a/sa/b");
    expect(port).toBe(44321n);
    expect(s.properties.size).toBe(2);
  });

  it("set_property from the root context is NOT_FOUND", async () => {
    const p = await Probe.create({}, (p) =>
      p.on("configure", () => {
        const [k, kl] = p.put("a");
        expect(p.call("proxy_set_property", k, kl, k, kl)).toBe(Status.NotFound);
        return true;
      }),
    );
    expect(p.handlerErrors).toEqual([]);
  });
});

describe("metrics", () => {
  it("define / increment / record / get with the spec's types and status codes", async () => {
    const p = await Probe.create();
    inRequest(p, [], () => {
      const def = (type: number, name: string): [number, number] => {
        const [n, nl] = p.put(name);
        const out = p.alloc(4);
        const st = p.call("proxy_define_metric", type, n, nl, out);
        return [st, st === Status.Ok ? p.u32(out) : 0];
      };
      const [s1, c] = def(0, "qhx_allowed");
      const [s2, g] = def(1, "qhx_inflight");
      const [s3, h] = def(2, "qhx_latency_us");
      expect([s1, s2, s3]).toEqual([Status.Ok, Status.Ok, Status.Ok]);
      expect(new Set([c, g, h]).size).toBe(3);
      expect(def(0, "qhx_allowed")).toEqual([Status.Ok, c]); // same name, same id
      expect(def(1, "qhx_allowed")[0]).toBe(Status.BadArgument); // same name, other type
      expect(def(3, "x")[0]).toBe(Status.BadArgument);
      const [n, nl] = p.put("m");
      expect(p.call("proxy_define_metric", 0, n, nl, BEYOND)).toBe(Status.InvalidMemoryAccess);
      expect(p.call("proxy_define_metric", 0, BEYOND, 3, n)).toBe(Status.InvalidMemoryAccess);

      expect(p.call("proxy_increment_metric", c, 1n)).toBe(Status.Ok);
      expect(p.call("proxy_increment_metric", c, 2n)).toBe(Status.Ok);
      expect(p.call("proxy_increment_metric", c, -1n)).toBe(Status.BadArgument); // counters never go down
      expect(p.call("proxy_increment_metric", g, 5n)).toBe(Status.Ok);
      expect(p.call("proxy_increment_metric", g, -2n)).toBe(Status.Ok);
      expect(p.call("proxy_increment_metric", h, 1n)).toBe(Status.BadArgument);
      expect(p.call("proxy_record_metric", h, 120n)).toBe(Status.Ok);
      expect(p.call("proxy_record_metric", h, 80n)).toBe(Status.Ok);
      expect(p.call("proxy_record_metric", 999, 1n)).toBe(Status.NotFound);
      expect(p.call("proxy_increment_metric", 999, 1n)).toBe(Status.NotFound);
      const out = p.alloc(8);
      expect(p.call("proxy_get_metric", c, out)).toBe(Status.Ok);
      expect(p.u64(out)).toBe(3n);
      expect(p.call("proxy_get_metric", g, out)).toBe(Status.Ok);
      expect(p.u64(out)).toBe(3n);
      expect(p.call("proxy_record_metric", g, 42n)).toBe(Status.Ok);
      expect(p.call("proxy_get_metric", g, out)).toBe(Status.Ok);
      expect(p.u64(out)).toBe(42n);
      expect(p.call("proxy_get_metric", h, out)).toBe(Status.BadArgument);
      expect(p.call("proxy_get_metric", 999, out)).toBe(Status.NotFound);
      expect(p.call("proxy_get_metric", c, BEYOND)).toBe(Status.InvalidMemoryAccess);
    });
    expect(p.plugin.metrics.get("qhx_allowed")).toEqual({ type: "counter", value: 3n });
    expect(p.plugin.metrics.get("qhx_inflight")).toEqual({ type: "gauge", value: 42n });
    expect(p.plugin.metrics.get("qhx_latency_us")).toEqual({
      type: "histogram",
      value: 80n,
      samples: [120n, 80n],
    });
  });
});

describe("shared data and queues", () => {
  it("get/set with compare-and-swap; shared per VM id across plugins", async () => {
    const a = await Probe.create({ vmId: "shared-cas-test" });
    const b = await Probe.create({ vmId: "shared-cas-test" });
    const other = await Probe.create({ vmId: "shared-cas-other" });
    const set = (p: Probe, k: string, v: string, cas: number): number => {
      const [kp, kl] = p.put(k);
      const [vp, vl] = p.put(v);
      return p.call("proxy_set_shared_data", kp, kl, vp, vl, cas);
    };
    const get = (p: Probe, k: string): [number, string, number] => {
      const [kp, kl] = p.put(k);
      const out = p.outPair();
      const cas = p.alloc(4);
      const st = p.call("proxy_get_shared_data", kp, kl, ...out, cas);
      return st === Status.Ok ? [st, p.returnedText(out), p.u32(cas)] : [st, "", 0];
    };
    let cas1 = 0;
    inRequest(a, [], () => {
      expect(get(a, "k")[0]).toBe(Status.NotFound);
      expect(set(a, "k", "v1", 0)).toBe(Status.Ok);
      const [st, v, cas] = get(a, "k");
      expect([st, v]).toEqual([Status.Ok, "v1"]);
      expect(cas).not.toBe(0);
      cas1 = cas;
      const [kp, kl] = a.put("k");
      expect(a.call("proxy_get_shared_data", kp, kl, ...a.outPair(), BEYOND)).toBe(
        Status.InvalidMemoryAccess,
      );
      expect(a.call("proxy_set_shared_data", BEYOND, 1, kp, kl, 0)).toBe(Status.InvalidMemoryAccess);
    });
    inRequest(b, [], () => {
      expect(get(b, "k").slice(0, 2)).toEqual([Status.Ok, "v1"]);
      expect(set(b, "k", "v2", cas1)).toBe(Status.Ok); // CAS matches
      expect(set(b, "k", "v3", cas1)).toBe(Status.CasMismatch); // stale
      expect(get(b, "k")[1]).toBe("v2");
      expect(set(b, "k", "v4", 0)).toBe(Status.Ok); // 0: unconditional
    });
    inRequest(other, [], () => expect(get(other, "k")[0]).toBe(Status.NotFound));
  });

  it("register / resolve / enqueue / dequeue; proxy_on_queue_ready on the owner", async () => {
    const owner = await Probe.create({ vmId: "queue-vm" });
    const producer = await Probe.create({ vmId: "producer-vm" });
    let qid = 0;
    inRequest(owner, [], () => {
      const [n, nl] = owner.put("events");
      const out = owner.alloc(4);
      expect(owner.call("proxy_register_shared_queue", n, nl, out)).toBe(Status.Ok);
      qid = owner.u32(out);
      expect(owner.call("proxy_register_shared_queue", n, nl, out)).toBe(Status.Ok);
      expect(owner.u32(out)).toBe(qid); // opened, not re-created
      expect(owner.call("proxy_register_shared_queue", BEYOND, 2, out)).toBe(Status.InvalidMemoryAccess);
    });
    inRequest(producer, [], () => {
      const [vm, vml] = producer.put("queue-vm");
      const [n, nl] = producer.put("events");
      const out = producer.alloc(4);
      expect(producer.call("proxy_resolve_shared_queue", vm, vml, n, nl, out)).toBe(Status.Ok);
      expect(producer.u32(out)).toBe(qid);
      const [x, xl] = producer.put("nope");
      expect(producer.call("proxy_resolve_shared_queue", vm, vml, x, xl, out)).toBe(Status.NotFound);
      const [item, il] = producer.put("item-1");
      expect(producer.call("proxy_enqueue_shared_queue", qid, item, il)).toBe(Status.Ok);
      expect(producer.call("proxy_enqueue_shared_queue", 99999, item, il)).toBe(Status.NotFound);
      expect(producer.call("proxy_enqueue_shared_queue", qid, BEYOND, 1)).toBe(Status.InvalidMemoryAccess);
    });
    let dequeued = "";
    const ready = new Promise<void>((resolve) =>
      owner.on("queue_ready", ([, q]) => {
        expect(q).toBe(qid);
        const out = owner.outPair();
        expect(owner.call("proxy_dequeue_shared_queue", q!, ...out)).toBe(Status.Ok);
        dequeued = owner.returnedText(out);
        expect(owner.call("proxy_dequeue_shared_queue", q!, ...owner.outPair())).toBe(Status.Empty);
        expect(owner.call("proxy_dequeue_shared_queue", 99999, ...owner.outPair())).toBe(Status.NotFound);
        resolve();
        return undefined;
      }),
    );
    await ready;
    expect(owner.handlerErrors).toEqual([]);
    expect(dequeued).toBe("item-1");
    owner.plugin.close();
  });
});

describe("proxy_http_call", () => {
  let server: Server;
  let port = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        res.setHeader("x-echo-path", req.url ?? "");
        res.setHeader("x-echo-method", req.method ?? "");
        res.writeHead(200);
        res.end(`got:${body}`);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  /** The embedder's upstream: a real HTTP request to 127.0.0.1 for the "echo" cluster. */
  const httpCall = async (upstream: string, headers: [string, string][], body: Uint8Array) => {
    if (upstream !== "echo") throw new Error(`unknown cluster ${upstream}`);
    const h = Object.fromEntries(headers);
    const res = await fetch(`http://127.0.0.1:${port}${h[":path"]}`, {
      method: h[":method"],
      body: body.length ? body : undefined,
    });
    const out: [string, string][] = [[":status", String(res.status)]];
    res.headers.forEach((v, k) => out.push([k, v]));
    return { headers: out, body: new Uint8Array(await res.arrayBuffer()), trailers: [] };
  };

  it("sends the call; the answer comes to the root context, which resumes the paused stream", async () => {
    const p = await Probe.create({ httpCall });
    let token = 0;
    p.on("request_headers", () => {
      const [u, ul] = p.put("echo");
      const [h, hl] = p.put(
        serializeHeaderMap([
          [":method", "POST"],
          [":path", "/check"],
          [":authority", "echo"],
        ]),
      );
      const [b, bl] = p.put("payload");
      const t = p.alloc(4);
      expect(p.call("proxy_http_call", u, ul, h, hl, b, bl, 0, 0, 5000, t)).toBe(Status.Ok);
      token = p.u32(t);
      return 1; // pause until the answer
    });
    let answer: Record<string, unknown> = {};
    p.on("http_call_response", ([ctx, tok, nh, bs, nt]) => {
      const hdrs = p.outPair();
      expect(p.call("proxy_get_header_map_pairs", 6, ...hdrs)).toBe(Status.Ok);
      const body = p.outPair();
      expect(p.call("proxy_get_buffer_bytes", 4, 0, bs!, ...body)).toBe(Status.Ok);
      const trl = p.outPair();
      expect(p.call("proxy_get_header_map_pairs", 7, ...trl)).toBe(Status.Ok);
      const code = p.alloc(4);
      const msg = p.outPair();
      expect(p.call("proxy_get_status", code, ...msg)).toBe(Status.Ok);
      answer = {
        ctx,
        tok,
        nh,
        nt,
        headers: Object.fromEntries(parseHeaderMap(p.returned(hdrs))),
        body: p.returnedText(body),
        status: p.u32(code),
      };
      // the answer arrives on the root context (as in Envoy): continuing needs the stream as effective context
      expect(p.call("proxy_continue_stream", 0)).toBe(Status.BadArgument);
      expect(p.call("proxy_set_effective_context", s.contextId)).toBe(Status.Ok);
      expect(p.call("proxy_continue_stream", 0)).toBe(Status.Ok);
      return undefined;
    });
    const s = p.plugin.newHttpStream();
    expect(s.onRequestHeaders([[":path", "/"]], true)).toBe("pause");
    expect(s.requestPaused).toBe(true);
    await p.plugin.idle();
    expect(p.handlerErrors).toEqual([]);
    expect(answer).toMatchObject({
      ctx: 1, // the root context
      tok: token,
      nt: 0,
      body: "got:payload",
      status: 200,
      headers: { ":status": "200", "x-echo-path": "/check", "x-echo-method": "POST" },
    });
    expect(s.requestPaused).toBe(false);
    // outside the callback the call's maps and buffer are gone
    inRequest(p, [], () => {
      expect(p.call("proxy_get_header_map_pairs", 6, ...p.outPair())).toBe(Status.BadArgument);
      expect(p.call("proxy_get_buffer_bytes", 4, 0, 1, ...p.outPair())).toBe(Status.NotFound);
      expect(p.call("proxy_get_status", p.alloc(4), ...p.outPair())).toBe(Status.NotFound);
    });
  });

  it("a failed call is answered with num_headers 0; bad requests are refused", async () => {
    const p = await Probe.create({ httpCall });
    const call = (upstream: string, headers: [string, string][]): number => {
      const [u, ul] = p.put(upstream);
      const [h, hl] = p.put(serializeHeaderMap(headers));
      return p.call("proxy_http_call", u, ul, h, hl, 0, 0, 0, 0, 1000, p.alloc(4));
    };
    const full: [string, string][] = [
      [":method", "GET"],
      [":path", "/"],
      [":authority", "x"],
    ];
    inRequest(p, [], () => {
      expect(call("no-such-cluster", full)).toBe(Status.Ok); // the embedder rejects it asynchronously
      expect(call("echo", full.slice(1))).toBe(Status.BadArgument); // no :method
      expect(call("echo", full.slice(0, 2))).toBe(Status.BadArgument); // no :authority
      const [u, ul] = p.put("echo");
      expect(p.call("proxy_http_call", u, ul, BEYOND, 8, 0, 0, 0, 0, 1, p.alloc(4))).toBe(
        Status.InvalidMemoryAccess,
      );
      const [h, hl] = p.put(serializeHeaderMap(full));
      expect(p.call("proxy_http_call", u, ul, h, hl, 0, 0, 0, 0, 1, BEYOND)).toBe(Status.InvalidMemoryAccess);
      const [bad, badl] = p.put(Uint8Array.of(1, 2, 3, 4, 5));
      expect(p.call("proxy_http_call", u, ul, bad, badl, 0, 0, 0, 0, 1, p.alloc(4))).toBe(Status.BadArgument);
    });
    await p.plugin.idle();
    expect(p.eventsOf("http_call_response").map((a) => a.slice(2))).toEqual([[0, 0, 0]]);
    expect(p.logs.some(([l, m]) => l === "warn" && m.includes("unknown cluster no-such-cluster"))).toBe(true);

    const noUpstreams = await Probe.create();
    inRequest(noUpstreams, [], () => {
      const [u, ul] = noUpstreams.put("echo");
      const [h, hl] = noUpstreams.put(serializeHeaderMap(full));
      expect(noUpstreams.call("proxy_http_call", u, ul, h, hl, 0, 0, 0, 0, 1, noUpstreams.alloc(4))).toBe(
        Status.BadArgument,
      );
    });
  });

  it("a stream waiting for a call fails closed when the VM dies before the answer", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const p = await Probe.create({
      httpCall: async () => {
        await gate;
        return { headers: [[":status", "200"]], body: new Uint8Array(0), trailers: [] };
      },
    });
    p.on("request_headers", ([ctx]) => {
      if (ctx !== 2) return "trap"; // the second stream kills the VM
      const [u, ul] = p.put("echo");
      const [h, hl] = p.put(
        serializeHeaderMap([
          [":method", "GET"],
          [":path", "/"],
          [":authority", "e"],
        ]),
      );
      p.call("proxy_http_call", u, ul, h, hl, 0, 0, 0, 0, 1000, p.alloc(4));
      return 1;
    });
    const waiting = p.plugin.newHttpStream();
    expect(waiting.onRequestHeaders([], true)).toBe("pause");
    expect(waiting.localResponse).toBeUndefined();
    p.plugin.newHttpStream().onRequestHeaders([], true);
    expect(p.plugin.failed).toBe(true);
    release();
    await p.plugin.idle();
    expect(waiting.localResponse?.details).toBe("wasm_fail_stream");
    expect(p.eventsOf("http_call_response")).toHaveLength(0);
  });

  it("a trap in proxy_on_http_call_response fails the paused stream closed", async () => {
    const p = await Probe.create({ httpCall });
    p.on("request_headers", () => {
      const [u, ul] = p.put("echo");
      const [h, hl] = p.put(
        serializeHeaderMap([
          [":method", "GET"],
          [":path", "/"],
          [":authority", "e"],
        ]),
      );
      p.call("proxy_http_call", u, ul, h, hl, 0, 0, 0, 0, 1000, p.alloc(4));
      return 1;
    });
    p.on("http_call_response", () => "trap");
    const s = p.plugin.newHttpStream();
    s.onRequestHeaders([], true);
    await p.plugin.idle();
    expect(p.plugin.failed).toBe(true);
    expect(s.localResponse?.details).toBe("wasm_fail_stream");
  });
});

describe("gRPC and foreign functions", () => {
  it("gRPC: no upstream is known (PARSE_FAILURE); unknown ids NOT_FOUND; bad memory", async () => {
    const p = await Probe.create();
    inRequest(p, [], () => {
      const [s, sl] = p.put("svc");
      const t = p.alloc(4);
      expect(p.call("proxy_grpc_call", s, sl, s, sl, s, sl, 0, 0, 0, 0, 100, t)).toBe(Status.ParseFailure);
      expect(p.call("proxy_grpc_call", BEYOND, 1, s, sl, s, sl, 0, 0, 0, 0, 100, t)).toBe(
        Status.InvalidMemoryAccess,
      );
      expect(p.call("proxy_grpc_stream", s, sl, s, sl, s, sl, 0, 0, t)).toBe(Status.ParseFailure);
      expect(p.call("proxy_grpc_stream", s, sl, s, sl, s, sl, 0, 0, BEYOND)).toBe(Status.InvalidMemoryAccess);
      expect(p.call("proxy_grpc_send", 1, s, sl, 1)).toBe(Status.NotFound);
      expect(p.call("proxy_grpc_send", 1, BEYOND, 1, 1)).toBe(Status.InvalidMemoryAccess);
      expect(p.call("proxy_grpc_cancel", 1)).toBe(Status.NotFound);
      expect(p.call("proxy_grpc_close", 1)).toBe(Status.NotFound);
    });
  });

  it("proxy_call_foreign_function calls the embedder's function, NOT_FOUND otherwise", async () => {
    const p = await Probe.create({
      foreignFunctions: {
        reverse: (a) => a.slice().reverse(),
        broken: () => {
          throw new Error("boom");
        },
      },
    });
    inRequest(p, [], () => {
      const [n, nl] = p.put("reverse");
      const [a, al] = p.put("abc");
      const out = p.outPair();
      expect(p.call("proxy_call_foreign_function", n, nl, a, al, ...out)).toBe(Status.Ok);
      expect(p.returnedText(out)).toBe("cba");
      const [x, xl] = p.put("toString"); // not an own function
      expect(p.call("proxy_call_foreign_function", x, xl, a, al, ...p.outPair())).toBe(Status.NotFound);
      const [b, bl] = p.put("broken");
      expect(p.call("proxy_call_foreign_function", b, bl, a, al, ...p.outPair())).toBe(
        Status.InternalFailure,
      );
      expect(p.call("proxy_call_foreign_function", BEYOND, 1, a, al, ...p.outPair())).toBe(
        Status.InvalidMemoryAccess,
      );
    });
  });
});
