import { describe, expect, it } from "vitest";
import { Status } from "../../host/wasm/proxy-wasm/abi.ts";
import { ProxyWasmPlugin } from "../../host/wasm/proxy-wasm/host.ts";
import { serializeHeaderMap } from "../../host/wasm/proxy-wasm/serialization.ts";
import { fixture } from "./helpers/fixtures.ts";
import { Probe } from "./helpers/probe.ts";

describe("proxy-wasm host: lifecycle", () => {
  it("creates the root context, starts the VM with its configuration, configures the plugin", async () => {
    let vmConf = "";
    let pluginConf = "";
    const p = await Probe.create(
      { vmConfiguration: "vm-conf", pluginConfiguration: "plugin-conf-1", rootId: "r" },
      (p) => {
        p.on("vm_start", ([, size]) => {
          const out = p.outPair();
          expect(p.call("proxy_get_buffer_bytes", 6, 0, size!, ...out)).toBe(Status.Ok);
          vmConf = p.returnedText(out);
          return true;
        });
        p.on("configure", ([, size]) => {
          const out = p.outPair();
          expect(p.call("proxy_get_buffer_bytes", 7, 0, size!, ...out)).toBe(Status.Ok);
          pluginConf = p.returnedText(out);
          // the VM configuration is only readable in proxy_on_vm_start
          expect(p.call("proxy_get_buffer_bytes", 6, 0, 100, ...p.outPair())).toBe(Status.NotFound);
          return true;
        });
      },
    );
    expect(p.handlerErrors).toEqual([]);
    expect(p.fired.map((f) => f.event)).toEqual(["context_create", "vm_start", "configure"]);
    expect(p.fired[0]!.args.slice(0, 2)).toEqual([1, 0]); // root context 1, no parent
    expect(p.fired[1]!.args.slice(0, 2)).toEqual([1, 7]);
    expect(p.fired[2]!.args.slice(0, 2)).toEqual([1, 13]);
    expect(vmConf).toBe("vm-conf");
    expect(pluginConf).toBe("plugin-conf-1");

    // reconfigure without restart
    expect(p.plugin.configure("plugin-conf-2")).toBe(true);
    expect(pluginConf).toBe("plugin-conf-2");
    p.on("configure", () => false);
    expect(p.plugin.configure("rejected")).toBe(false);
    expect(p.plugin.failed).toBe(false);
  });

  it("throws QhxError when proxy_on_vm_start or proxy_on_configure refuse, or the start traps", async () => {
    await expect(Probe.create({}, (p) => p.on("vm_start", () => false))).rejects.toMatchObject({
      code: "QHX_PROXY_WASM_VM_START",
    });
    await expect(Probe.create({}, (p) => p.on("configure", () => false))).rejects.toMatchObject({
      code: "QHX_PROXY_WASM_CONFIGURE",
    });
    await expect(Probe.create({}, (p) => p.on("configure", () => "trap"))).rejects.toMatchObject({
      code: "QHX_PROXY_WASM_TRAP",
    });
  });

  it("refuses modules that are not ABI v0.2.1 or import what the spec does not define", async () => {
    const unknownImport = await fixture("unknown-import");
    expect(() =>
      ProxyWasmPlugin.create({ wasm: new Uint8Array([0, 1, 2]), pluginConfiguration: "" }),
    ).toThrow(expect.objectContaining({ code: "QHX_PROXY_WASM_INVALID_MODULE" }));
    const noMarker = await fixture("no-abi-marker");
    expect(() => ProxyWasmPlugin.create({ wasm: noMarker, pluginConfiguration: "" })).toThrow(
      expect.objectContaining({ code: "QHX_PROXY_WASM_ABI" }),
    );
    expect(() => ProxyWasmPlugin.create({ wasm: unknownImport, pluginConfiguration: "" })).toThrow(
      expect.objectContaining({
        code: "QHX_PROXY_WASM_UNKNOWN_IMPORT",
        message: expect.stringContaining("env.proxy_not_in_the_spec"),
      }),
    );
    // ... unless the embedder supplies it
    const p = ProxyWasmPlugin.create({
      wasm: unknownImport,
      pluginConfiguration: "",
      extraImports: { env: { proxy_not_in_the_spec: () => 0 } },
    });
    expect(p.failed).toBe(false);
  });

  it("uses the deprecated malloc when proxy_on_memory_allocate is absent", async () => {
    const logs: string[] = [];
    const p = ProxyWasmPlugin.create({
      wasm: await fixture("malloc-only"),
      pluginConfiguration: "",
      name: "my-plugin",
      log: (_l, m) => logs.push(m),
    });
    expect(p.failed).toBe(false);
    expect(logs).toEqual(["my-plugin"]);
  });

  it("runs a stream: context create, headers, body, response, done/log/delete in order", async () => {
    const p = await Probe.create();
    const s = p.plugin.newHttpStream();
    expect(s.contextId).toBe(2);
    expect(
      s.onRequestHeaders(
        [
          [":path", "/a"],
          ["X-Test", "1"],
        ],
        false,
      ),
    ).toBe("continue");
    expect(s.onRequestBody(new Uint8Array([1, 2, 3]), true)).toBe("continue");
    expect(s.onResponseHeaders([[":status", "200"]], true)).toBe("continue");
    s.done();
    expect(s.deleted).toBe(true);
    const evs = p.fired.slice(3).map((f) => [f.event, ...f.args.slice(0, 3)]);
    expect(evs).toEqual([
      ["context_create", 2, 1, 0],
      ["request_headers", 2, 2, 0],
      ["request_body", 2, 3, 1],
      ["response_headers", 2, 1, 1],
      ["done", 2, 0, 0],
      ["log", 2, 0, 0],
      ["delete", 2, 0, 0],
    ]);
    expect(s.requestHeaders).toEqual([
      [":path", "/a"],
      ["x-test", "1"],
    ]);
    const s2 = p.plugin.newHttpStream();
    expect(s2.contextId).toBe(3);
  });

  it("proxy_on_done false defers log/delete until the plugin calls proxy_done", async () => {
    const p = await Probe.create();
    const s = p.plugin.newHttpStream();
    p.on("done", () => false);
    s.done();
    expect(s.deleted).toBe(false);
    expect(p.eventsOf("log")).toEqual([]);
    // later, inside another callback of that stream, the plugin finishes
    p.on("response_headers", () => {
      expect(p.call("proxy_done")).toBe(Status.Ok);
      expect(p.call("proxy_done")).toBe(Status.NotFound); // no longer pending
      return 0;
    });
    s.onResponseHeaders([[":status", "200"]], true);
    expect(p.handlerErrors).toEqual([]);
    expect(s.deleted).toBe(true);
    expect(p.eventsOf("log")).toHaveLength(1);
    expect(p.eventsOf("delete")).toHaveLength(1);
  });

  it("pause and proxy_continue_stream", async () => {
    const p = await Probe.create();
    const s = p.plugin.newHttpStream();
    p.on("request_headers", () => 1);
    expect(s.onRequestHeaders([[":path", "/"]], true)).toBe("pause");
    expect(s.requestPaused).toBe(true);
    p.on("response_headers", ([ctx]) => {
      expect(p.call("proxy_set_effective_context", ctx!)).toBe(Status.Ok);
      expect(p.call("proxy_continue_stream", 0)).toBe(Status.Ok);
      expect(p.call("proxy_continue_stream", 2)).toBe(Status.Unimplemented);
      expect(p.call("proxy_continue_stream", 4)).toBe(Status.BadArgument);
      expect(p.call("proxy_close_stream", 1)).toBe(Status.Ok);
      expect(p.call("proxy_close_stream", 9)).toBe(Status.BadArgument);
      return 0;
    });
    s.onResponseHeaders([], true);
    expect(p.handlerErrors).toEqual([]);
    expect(s.requestPaused).toBe(false);
    expect([...s.closed]).toEqual([1]);
  });

  it("a stream that is done takes no further callbacks", async () => {
    const p = await Probe.create();
    const s = p.plugin.newHttpStream();
    s.onRequestHeaders([[":path", "/"]], true);
    s.done();
    expect(() => s.onResponseHeaders([[":status", "200"]], true)).toThrow(
      expect.objectContaining({ code: "QHX_PROXY_WASM_STATE" }),
    );
    s.done(); // idempotent
    expect(p.eventsOf("delete")).toHaveLength(1);
  });

  it("close runs the root context's done/log/delete and makes the plugin unusable", async () => {
    const p = await Probe.create();
    p.plugin.close();
    expect(p.fired.slice(-3).map((f) => [f.event, f.args[0]])).toEqual([
      ["done", 1],
      ["log", 1],
      ["delete", 1],
    ]);
    expect(() => p.plugin.newHttpStream()).toThrow(
      expect.objectContaining({ code: "QHX_PROXY_WASM_CLOSED" }),
    );
  });
});

describe("proxy-wasm host: fail closed", () => {
  for (const trap of ["trap", "trap-oob"] as const) {
    it(`a ${trap} in proxy_on_request_headers answers 503 wasm_fail_stream and fails the plugin`, async () => {
      const p = await Probe.create();
      p.on("request_headers", () => trap);
      const s = p.plugin.newHttpStream();
      expect(s.onRequestHeaders([[":path", "/"]], true)).toBe("pause");
      expect(p.plugin.failed).toBe(true);
      expect(s.localResponse).toMatchObject({ status: 503, details: "wasm_fail_stream", grpcStatus: 14 });
      expect(p.logs.some(([l, m]) => l === "critical" && m.includes("RuntimeError"))).toBe(true);
      // every later stream of the failed plugin gets the 503 without entering the dead VM
      const before = p.fired.length;
      const s2 = p.plugin.newHttpStream();
      expect(s2.onRequestHeaders([[":path", "/"]], true)).toBe("pause");
      expect(s2.localResponse?.status).toBe(503);
      s2.done();
      expect(p.fired.length).toBe(before);
      expect(p.plugin.configure("x")).toBe(false);
    });
  }

  it("a trap in any stream callback fails closed (body, response, context create)", async () => {
    for (const ev of ["request_body", "response_headers", "context_create"] as const) {
      const p = await Probe.create();
      p.on(ev, () => "trap");
      const s = p.plugin.newHttpStream();
      s.onRequestHeaders([[":path", "/"]], false);
      s.onRequestBody(new Uint8Array(1), true);
      s.onResponseHeaders([[":status", "200"]], true);
      expect(p.plugin.failed).toBe(true);
      expect(s.localResponse?.details).toBe("wasm_fail_stream");
    }
  });

  it("failOpen: the stream continues, the plugin is still dead", async () => {
    const p = await Probe.create({ failOpen: true });
    p.on("request_headers", () => "trap");
    const s = p.plugin.newHttpStream();
    expect(s.onRequestHeaders([[":path", "/"]], true)).toBe("continue");
    expect(s.localResponse).toBeUndefined();
    expect(p.plugin.failed).toBe(true);
    const s2 = p.plugin.newHttpStream();
    expect(s2.onRequestHeaders([[":path", "/"]], true)).toBe("continue");
  });

  it("a trap in configure() marks the plugin failed", async () => {
    const p = await Probe.create();
    p.on("configure", () => "trap");
    expect(p.plugin.configure("x")).toBe(false);
    expect(p.plugin.failed).toBe(true);
  });

  it("proxy_send_local_response ends the stream with the filter's answer", async () => {
    const p = await Probe.create();
    p.on("request_headers", () => {
      const [dp, dl] = p.put("denied_by_policy");
      const [bp, bl] = p.put("forbidden\n");
      const [hp, hl] = p.put(serializeHeaderMap([["X-QHx-Reason", "no-policy"]]));
      expect(p.call("proxy_send_local_response", 403, dp, dl, bp, bl, hp, hl, -1)).toBe(Status.Ok);
      return 0;
    });
    const s = p.plugin.newHttpStream();
    expect(s.onRequestHeaders([[":path", "/"]], true)).toBe("pause");
    expect(p.handlerErrors).toEqual([]);
    expect(s.localResponse).toEqual({
      status: 403,
      details: "denied_by_policy",
      body: new TextEncoder().encode("forbidden\n"),
      headers: [["x-qhx-reason", "no-policy"]],
      grpcStatus: -1,
    });
  });
});
