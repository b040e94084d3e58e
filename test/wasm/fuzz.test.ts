/**
 * Seeded fuzzing of the host's ABI surface: hostile pointers/lengths into every host function, random
 * (and randomly corrupted) header maps, random property paths. The host must answer every call with one
 * of the spec's status codes and never throw (a host exception would unwind the guest and fail the
 * plugin, which each test checks did not happen).
 */
import { describe, expect, it } from "vitest";
import { ENV_HOST_FUNCTIONS, Errno, Status, WASI_SPEC_FUNCTIONS } from "../../host/wasm/proxy-wasm/abi.ts";
import {
  HeaderMapParseError,
  parseHeaderMap,
  serializeHeaderMap,
} from "../../host/wasm/proxy-wasm/serialization.ts";
import { Probe } from "./helpers/probe.ts";

/** xorshift32: deterministic per seed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** Parameter counts (i64 parameters marked "I") of the host functions, from the spec. */
const SIGNATURES: Record<string, string> = {
  proxy_log: "iii",
  proxy_get_log_level: "i",
  proxy_get_current_time_nanoseconds: "i",
  proxy_set_tick_period_milliseconds: "i",
  proxy_done: "",
  proxy_set_effective_context: "i",
  proxy_set_buffer_bytes: "iiiii",
  proxy_get_buffer_bytes: "iiiii",
  proxy_get_buffer_status: "iii",
  proxy_get_header_map_size: "ii",
  proxy_get_header_map_pairs: "iii",
  proxy_set_header_map_pairs: "iii",
  proxy_get_header_map_value: "iiiii",
  proxy_add_header_map_value: "iiiii",
  proxy_replace_header_map_value: "iiiii",
  proxy_remove_header_map_value: "iii",
  proxy_continue_stream: "i",
  proxy_close_stream: "i",
  proxy_get_status: "iii",
  proxy_send_local_response: "iiiiiiii",
  proxy_http_call: "iiiiiiiiii",
  proxy_grpc_call: "iiiiiiiiiiii",
  proxy_grpc_stream: "iiiiiiiii",
  proxy_grpc_send: "iiii",
  proxy_grpc_cancel: "i",
  proxy_grpc_close: "i",
  proxy_set_shared_data: "iiiii",
  proxy_get_shared_data: "iiiii",
  proxy_register_shared_queue: "iii",
  proxy_resolve_shared_queue: "iiiii",
  proxy_enqueue_shared_queue: "iii",
  proxy_dequeue_shared_queue: "iii",
  proxy_define_metric: "iiii",
  proxy_record_metric: "iI",
  proxy_increment_metric: "iI",
  proxy_get_metric: "ii",
  proxy_get_property: "iiii",
  proxy_set_property: "iiii",
  proxy_call_foreign_function: "iiiiii",
  fd_write: "iiii",
  clock_time_get: "iIi",
  random_get: "ii",
  environ_sizes_get: "ii",
  environ_get: "ii",
  args_sizes_get: "ii",
  args_get: "ii",
};

const STATUSES = new Set<number>(Object.values(Status));
const ERRNOS = new Set<number>(Object.values(Errno));

describe("fuzz: the ABI surface", () => {
  it("covers every host function but proc_exit", () => {
    expect(Object.keys(SIGNATURES).sort()).toEqual(
      [...ENV_HOST_FUNCTIONS, ...WASI_SPEC_FUNCTIONS.filter((n) => n !== "proc_exit")].sort(),
    );
  });

  for (const seed of [1, 0xc0ffee, 424242]) {
    it(`random pointers and lengths into every host function never break the host (seed ${seed})`, async () => {
      const r = rng(seed);
      const p = await Probe.create({
        vmId: `fuzz-${seed}`,
        httpCall: async () => ({ headers: [], body: new Uint8Array(0), trailers: [] }),
      });
      const names = Object.keys(SIGNATURES);
      const counts = new Map<string, Set<number>>();
      p.on("request_body", () => {
        const scratch = p.alloc(256);
        const pick = (): number => {
          const size = p.memSize;
          switch (r() % 10) {
            case 0:
              return 0;
            case 1:
              return scratch + (r() % 256);
            case 2:
              return size - (r() % 16);
            case 3:
              return size + (r() % 65536);
            case 4:
              return -1; // 0xffffffff
            case 5:
              return 0x7fffffff;
            case 6:
              return r() % 8; // small enum-like values
            case 7:
              return r() % 64;
            default:
              return r() | 0;
          }
        };
        for (let i = 0; i < 2500; i++) {
          const name = names[r() % names.length]!;
          const args = [...SIGNATURES[name]!].map((t) =>
            t === "I" ? BigInt.asIntN(64, (BigInt(r()) << 32n) | BigInt(r())) : pick(),
          );
          const st = p.call(name, ...args);
          const ok = name.startsWith("proxy_") ? STATUSES.has(st) : ERRNOS.has(st);
          if (!ok) throw new Error(`${name}(${args.join(", ")}) returned ${st}`);
          if (!counts.has(name)) counts.set(name, new Set());
          counts.get(name)!.add(st);
          // undo context switches so later calls act on this stream most of the time
          p.call("proxy_set_effective_context", p.eventsOf("request_body").at(-1)![0]!);
        }
        return 0;
      });
      const s = p.plugin.newHttpStream();
      s.onRequestHeaders(
        [
          [":path", "/fuzz"],
          ["x-a", "1"],
        ],
        false,
      );
      s.onRequestBody(new TextEncoder().encode("fuzz body"), true);
      s.onResponseHeaders([[":status", "200"]], true);
      s.done();
      await p.plugin.idle();
      expect(p.handlerErrors).toEqual([]);
      expect(p.plugin.failed).toBe(false);
      // the fuzzer reached both rejections and successes
      const all = new Set([...counts.values()].flatMap((x) => [...x]));
      expect(all.has(Status.Ok)).toBe(true);
      expect(all.has(Status.InvalidMemoryAccess)).toBe(true);
      expect(all.has(Status.BadArgument)).toBe(true);
      expect(counts.size).toBeGreaterThan(40);
    });
  }
});

function randomText(r: () => number, max: number): string {
  const alphabet = ["a", "Z", "-", ":", " ", "\r", "\n", "é", "ü", "😀", "\t", "9", "x", "\0"];
  let s = "";
  const n = r() % (max + 1);
  for (let i = 0; i < n; i++) s += alphabet[r() % alphabet.length];
  return s;
}

describe("fuzz: header maps", () => {
  it("random maps through proxy_set_header_map_pairs: accepted exactly when valid", async () => {
    const r = rng(7);
    const p = await Probe.create();
    let cases = 0;
    let accepted = 0;
    p.on("request_headers", () => {
      for (let i = 0; i < 400; i++) {
        const pairs: [string, string][] = [];
        const n = r() % 6;
        for (let j = 0; j < n; j++) pairs.push([randomText(r, 6), randomText(r, 8)]);
        const valid = pairs.every(([k, v]) => k !== "" && !/[\0\r\n]/.test(k) && !/[\0\r\n]/.test(v));
        const bytes = serializeHeaderMap(pairs);
        const [m, ml] = p.put(bytes);
        const st = p.call("proxy_set_header_map_pairs", 0, m, ml);
        if (st !== (valid ? Status.Ok : Status.BadArgument))
          throw new Error(`${JSON.stringify(pairs)} → ${st}`);
        if (valid) {
          accepted++;
          const out = p.outPair();
          p.call("proxy_get_header_map_pairs", 0, ...out);
          const back = parseHeaderMap(p.returned(out));
          const want = pairs.map(([k, v]) => [k.toLowerCase(), v]);
          if (JSON.stringify(back) !== JSON.stringify(want))
            throw new Error(`round trip ${JSON.stringify(pairs)}`);
        }
        cases++;
      }
      return 0;
    });
    p.plugin.newHttpStream().onRequestHeaders([], true);
    expect(p.handlerErrors).toEqual([]);
    expect(cases).toBe(400);
    expect(accepted).toBeGreaterThan(20);
    expect(accepted).toBeLessThan(400);
    expect(p.plugin.failed).toBe(false);
  });

  it("corrupted serializations are rejected or parse canonically; never anything else", async () => {
    const r = rng(99);
    const p = await Probe.create();
    let rejected = 0;
    p.on("request_headers", () => {
      for (let i = 0; i < 600; i++) {
        const pairs: [string, string][] = [];
        for (let j = 0, n = 1 + (r() % 4); j < n; j++) pairs.push([`k${r() % 100}`, `v${r() % 1000}`]);
        let b = serializeHeaderMap(pairs);
        switch (r() % 4) {
          case 0: // flip a byte
            {
              const at = r() % b.length;
              b[at] = b[at]! ^ (1 << (r() % 8));
            }
            break;
          case 1: // truncate
            b = b.subarray(0, r() % b.length);
            break;
          case 2: // extend
            b = Uint8Array.from([...b, ...Array.from({ length: 1 + (r() % 8) }, () => r() & 0xff)]);
            break;
          default: // huge count
            new DataView(b.buffer, b.byteOffset).setUint32(0, r(), true);
        }
        let parsed: [string, string][] | undefined;
        try {
          parsed = parseHeaderMap(b);
        } catch (e) {
          if (!(e instanceof HeaderMapParseError)) throw e;
        }
        if (parsed && parsed.length > 0) expect(serializeHeaderMap(parsed)).toEqual(b);
        const [m, ml] = p.put(b);
        const st = p.call("proxy_set_header_map_pairs", 0, m, ml);
        if (parsed === undefined && st !== Status.BadArgument)
          throw new Error(`accepted corrupt map (${st})`);
        if (st !== Status.Ok && st !== Status.BadArgument) throw new Error(`status ${st}`);
        if (st === Status.BadArgument) rejected++;
      }
      return 0;
    });
    p.plugin.newHttpStream().onRequestHeaders([], true);
    expect(p.handlerErrors).toEqual([]);
    expect(rejected).toBeGreaterThan(300);
    expect(p.plugin.failed).toBe(false);
  });
});

describe("fuzz: property paths", () => {
  it("random paths answer OK with the right value or NOT_FOUND", async () => {
    const r = rng(2024);
    const known: Record<string, string> = {
      "connection\0uri_san_peer_certificate": "spiffe://td/a",
      "node\0id": "n1",
      "source\0address": "127.0.0.1:5",
    };
    const segments = [
      "connection",
      "uri_san_peer_certificate",
      "node",
      "id",
      "source",
      "address",
      "request",
      "path",
      "",
      "é",
    ];
    const p = await Probe.create({ properties: { "node\0id": "n1" } });
    let found = 0;
    p.on("request_headers", () => {
      for (let i = 0; i < 500; i++) {
        const keys = [...Object.keys(known), "request\0path", "plugin_name"];
        const kind = r() % 4;
        const path =
          kind === 0
            ? randomText(r, 12)
            : kind === 1
              ? keys[r() % keys.length]! + (r() % 2 ? "\0" : "")
              : Array.from({ length: 1 + (r() % 3) }, () => segments[r() % segments.length]).join("\0");
        const [pp, pl] = p.put(path);
        const out = p.outPair();
        const st = p.call("proxy_get_property", pp, pl, ...out);
        const q = path.replace(/\0$/, "");
        const expected = q === "request\0path" ? "/p" : q === "plugin_name" ? "" : known[q];
        if (expected === undefined) {
          if (st !== Status.NotFound) throw new Error(`${JSON.stringify(path)} → ${st}`);
        } else {
          if (st !== Status.Ok || p.returnedText(out) !== expected)
            throw new Error(`${JSON.stringify(path)} wrong`);
          found++;
        }
      }
      return 0;
    });
    p.plugin
      .newHttpStream({
        properties: {
          "connection.uri_san_peer_certificate": "spiffe://td/a",
          "source.address": "127.0.0.1:5",
        },
      })
      .onRequestHeaders([[":path", "/p"]], true);
    expect(p.handlerErrors).toEqual([]);
    expect(found).toBeGreaterThan(50);
    expect(p.plugin.failed).toBe(false);
  });
});
