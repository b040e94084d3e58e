/**
 * Drives the conformance probe (fixtures/probe.ts): every probe callback reports to `on(event, …)`
 * handlers through proxy_call_foreign_function("probe"), and the handler — running inside the real
 * callback — calls host functions through the probe's t_<name> pass-through exports with pointers into
 * the guest's memory.
 */
import { ProxyWasmPlugin, type ProxyWasmPluginOptions } from "../../../host/wasm/proxy-wasm/host.ts";
import { fixture } from "./fixtures.ts";

export const EVENTS = [
  "context_create",
  "vm_start",
  "configure",
  "request_headers",
  "request_body",
  "request_trailers",
  "response_headers",
  "response_body",
  "response_trailers",
  "done",
  "log",
  "delete",
  "tick",
  "http_call_response",
  "queue_ready",
  "new_connection",
] as const;
export type ProbeEvent = (typeof EVENTS)[number];

/** What a handler tells the callback: return this value, trap, or (undefined) the default. */
export type Answer = number | boolean | "trap" | "trap-oob" | { procExit: number } | undefined;

export interface Fired {
  event: ProbeEvent;
  args: number[];
}

const enc = new TextEncoder();

export class Probe {
  plugin!: ProxyWasmPlugin;
  exports!: Readonly<Record<string, unknown>>;
  readonly fired: Fired[] = [];
  readonly logs: [string, string][] = [];
  /** Exceptions thrown by handlers (the host turns them into INTERNAL_FAILURE; tests assert none). */
  readonly handlerErrors: unknown[] = [];
  private readonly handlers = new Map<ProbeEvent, (args: number[]) => Answer>();

  static async create(
    opts: Partial<ProxyWasmPluginOptions> = {},
    setup?: (p: Probe) => void,
  ): Promise<Probe> {
    const p = new Probe();
    setup?.(p);
    const wasm = await fixture("probe");
    p.plugin = ProxyWasmPlugin.create({
      pluginConfiguration: "",
      log: (level, message) => p.logs.push([level, message]),
      ...opts,
      wasm,
      foreignFunctions: { ...opts.foreignFunctions, probe: (a) => p.dispatch(a) },
      onInstantiated: (e) => (p.exports = e),
    });
    return p;
  }

  on(event: ProbeEvent, handler: (args: number[]) => Answer): this {
    this.handlers.set(event, handler);
    return this;
  }

  off(event: ProbeEvent): this {
    this.handlers.delete(event);
    return this;
  }

  private dispatch(a: Uint8Array): Uint8Array {
    const dv = new DataView(a.buffer, a.byteOffset, a.byteLength);
    const event = EVENTS[dv.getUint8(0)]!;
    const args = [1, 5, 9, 13, 17].map((o) => dv.getUint32(o, true));
    this.fired.push({ event, args });
    const h = this.handlers.get(event);
    if (!h) return new Uint8Array(0);
    let ans: Answer;
    try {
      ans = h(args);
    } catch (e) {
      this.handlerErrors.push(e);
      throw e;
    }
    if (ans === undefined) return new Uint8Array(0);
    if (ans === "trap") return Uint8Array.of(2);
    if (ans === "trap-oob") return Uint8Array.of(3);
    const out = new Uint8Array(5);
    out[0] = typeof ans === "object" ? 4 : 1;
    const v = typeof ans === "object" ? ans.procExit : typeof ans === "boolean" ? (ans ? 1 : 0) : ans;
    new DataView(out.buffer).setUint32(1, v, true);
    return out;
  }

  // ---- guest access
  get mem(): ArrayBuffer {
    return (this.exports.memory as { buffer: ArrayBuffer }).buffer;
  }
  get memSize(): number {
    return this.mem.byteLength;
  }
  /** Call host function `name` through the probe's pass-through export. */
  call(name: string, ...args: (number | bigint)[]): number {
    const f = this.exports[`t_${name}`] as ((...a: (number | bigint)[]) => number) | undefined;
    if (!f) throw new Error(`probe has no t_${name}`);
    return f(...args);
  }
  alloc(n: number): number {
    return (this.exports.t_alloc as (n: number) => number)(n);
  }
  /** Copy bytes/string into fresh guest memory: [ptr, len]. */
  put(data: Uint8Array | string): [number, number] {
    const b = typeof data === "string" ? enc.encode(data) : data;
    const p = this.alloc(Math.max(1, b.length));
    new Uint8Array(this.mem, p, b.length).set(b);
    return [p, b.length];
  }
  /** Two zeroed u32 out-params (pointer, size): their addresses. */
  outPair(): [number, number] {
    const p = this.alloc(8);
    new Uint8Array(this.mem, p, 8).fill(0xee);
    return [p, p + 4];
  }
  u32(ptr: number): number {
    return new DataView(this.mem).getUint32(ptr, true);
  }
  u64(ptr: number): bigint {
    return new DataView(this.mem).getBigUint64(ptr, true);
  }
  bytes(ptr: number, len: number): Uint8Array {
    return new Uint8Array(this.mem, ptr, len).slice();
  }
  /** The (ptr, size) the host wrote into an out pair, as bytes. */
  returned(pair: [number, number]): Uint8Array {
    return this.bytes(this.u32(pair[0]), this.u32(pair[1]));
  }
  returnedText(pair: [number, number]): string {
    return new TextDecoder().decode(this.returned(pair));
  }
  eventsOf(event: ProbeEvent): number[][] {
    return this.fired.filter((f) => f.event === event).map((f) => f.args);
  }
}
