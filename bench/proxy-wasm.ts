/**
 * `npm run bench -- proxy-wasm`: what QHx's Node proxy-wasm host costs per request, measured with a no-op
 * filter (test/wasm/fixtures/noop.ts: reads :path through proxy_get_header_map_value, continues). One
 * request = new stream (proxy_on_context_create), request headers, done (on_done/on_log/on_delete).
 * Beside it, in the same run, the reference: the same request handled by a plain TypeScript function
 * (the header lookup without Wasm and without the ABI), so the ratio is the host's overhead.
 */
import { ProxyWasmPlugin } from "../host/wasm/proxy-wasm/host.ts";
import { fixture } from "../test/wasm/helpers/fixtures.ts";
import { table } from "./harness.ts";

const HEADERS: [string, string][] = [
  [":method", "GET"],
  [":path", "/api/v1/items?limit=10"],
  [":authority", "api.example.org"],
  [":scheme", "https"],
  ["user-agent", "bench/1.0"],
  ["accept", "application/json"],
  ["x-request-id", "0f6c3b1e-4c57-4a8e-9a0e-1d2f3a4b5c6d"],
  ["x-forwarded-proto", "https"],
];

function percentiles(samples: number[]): { p50: number; p99: number; mean: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { p50: at(0.5), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

/** Per-call latency in µs of `fn`, batched to stay above the timer's resolution. */
function measure(fn: () => void, rounds = 4000, batch = 16): number[] {
  for (let i = 0; i < 2000; i++) fn(); // warm up (JIT, Wasm tier-up)
  const out: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) fn();
    out.push(Number(process.hrtime.bigint() - t0) / 1000 / batch);
  }
  return out;
}

export async function run(): Promise<void> {
  const plugin = ProxyWasmPlugin.create({ wasm: await fixture("noop"), pluginConfiguration: "" });
  let sink = 0;
  const viaHost = () => {
    const s = plugin.newHttpStream({
      properties: { "connection\0uri_san_peer_certificate": "spiffe://example.org/a" },
    });
    if (s.onRequestHeaders(HEADERS, true) === "continue") sink++;
    s.done();
  };
  const reference = () => {
    // the same work in TypeScript: lower-case the map, find :path, continue
    const h = HEADERS.map(([k, v]) => [k.toLowerCase(), v] as const);
    if (h.find(([k]) => k === ":path")) sink++;
  };
  const host = percentiles(measure(viaHost));
  const ref = percentiles(measure(reference));
  if (plugin.failed || sink === 0) throw new Error("the no-op filter failed");
  const us = (n: number) => `${n.toFixed(2)} µs`;
  process.stdout.write(
    `${table([
      ["proxy-wasm host, no-op filter (per request)", "p50", "p99", "mean"],
      ["QHx Node host (Wasm, ABI 0.2.1)", us(host.p50), us(host.p99), us(host.mean)],
      ["reference: TypeScript, no Wasm", us(ref.p50), us(ref.p99), us(ref.mean)],
      [
        "ratio (host / reference)",
        `${(host.p50 / ref.p50).toFixed(1)}x`,
        `${(host.p99 / ref.p99).toFixed(1)}x`,
        `${(host.mean / ref.mean).toFixed(1)}x`,
      ],
    ])}\n`,
  );
  plugin.close();
}
