/**
 * The filter control plane: `qhx filter config` (real CLI processes, offline data dir, files, a real
 * server's admin socket), the Envoy/Istio documents checked against their schemas, the rendered
 * configuration run through the real qhx_authz filter in QHx's proxy-wasm host, and the agent keeping
 * the filter configuration file current as policy versions change.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { systemClock } from "../../host/core/clock.ts";
import { bundleToPem } from "../../host/core/bundle.ts";
import type { TrustBundle } from "../../host/core/bundle-types.ts";
import { parseAgentConfig } from "../../host/agent/config.ts";
import { startAgent } from "../../host/agent/run.ts";
import {
  defaultFilterWasm,
  FilterConfigKeeper,
  type FilterConfigSource,
  writeIfChanged,
} from "../../host/agent/filter-config.ts";
import type { PolicyVersion } from "../../host/policy/signed.ts";
import { handleAdmin } from "../../host/server/admin-api.ts";
import { parseServerConfig } from "../../host/server/config.ts";
import { silentLogger } from "../../host/server/logger.ts";
import { type RunningServer, startServer } from "../../host/server/server.ts";
import {
  envoyEcdsSchema,
  envoyHttpFilterSchema,
  istioWasmPluginSchema,
  renderEnvoyEcds,
  renderEnvoyHttpFilter,
  renderIstioWasmPlugin,
  WASM_TYPE_URL,
} from "../../host/wasm/proxy-wasm/deploy.ts";
import { ProxyWasmPlugin } from "../../host/wasm/proxy-wasm/host.ts";
import { filterConfigDocument } from "../../host/cli/filter.ts";
import { qhx, qhxSpawn, tmpDir } from "../helpers/cli.ts";

const TD = "example.org";
const POLICY_V1 = `@id("prod-only")\npermit (principal, action, resource) when { principal.namespace == "prod" };\n`;
const POLICY_V2 = `@id("dev-only")\npermit (principal, action, resource) when { principal.namespace == "dev" };\n`;
const WASM = defaultFilterWasm();

/** Run the real qhx_authz filter in our host with `configuration`; the decision for a peer namespace. */
function decide(configuration: string, ns: string): { action: string; status: number | undefined } {
  const p = ProxyWasmPlugin.create({
    wasm: fs.readFileSync(WASM),
    rootId: "qhx_authz",
    pluginConfiguration: configuration,
  });
  const s = p.newHttpStream({
    properties: { "connection\0uri_san_peer_certificate": `spiffe://${TD}/ns/${ns}/sa/web` },
  });
  const action = s.onRequestHeaders(
    [
      [":method", "GET"],
      [":path", "/api/x"],
      [":authority", "api"],
    ],
    true,
  );
  s.done();
  p.close();
  return { action, status: s.localResponse?.status };
}

/** `qhx …` as a real child process, without blocking this process (which serves the admin socket). */
function qhxAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = qhxSpawn(args);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.once("close", (status) => resolve({ status, stdout, stderr })));
}

// one in-process server for the whole file; the CLI reaches it through its real admin socket
let dir: string;
let server: RunningServer;
let sock: string;
async function admin(method: string, p: string, body?: unknown): Promise<Record<string, unknown>> {
  const url = new URL(p, "http://x");
  const r = await handleAdmin(server.core, { method, path: url.pathname, query: url.searchParams, body });
  if (r.status >= 400) throw new Error(JSON.stringify(r.body));
  return r.body as Record<string, unknown>;
}
beforeAll(async () => {
  dir = tmpDir("qhx-filter-");
  server = await startServer(
    parseServerConfig({
      trust_domain: TD,
      data_dir: path.join(dir, "server"),
      listen: "127.0.0.1:0",
      health_listen: "127.0.0.1:0",
      log_level: "silent",
    }),
    { clock: systemClock, logger: silentLogger },
  );
  sock = server.adminSocket;
  await admin("POST", "/v1/policies", { policies: { "prod-only": POLICY_V1.split("\n")[1] } });
});
afterAll(async () => {
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The command's core, in-process (the real CLI process is exercised by the tests marked "CLI"). */
function render(flags: Record<string, unknown>): Promise<string> {
  return filterConfigDocument({ output: "yaml", ...flags } as Parameters<typeof filterConfigDocument>[0]);
}

const sha256Of = (file: string) => createHash("sha256").update(fs.readFileSync(file)).digest("hex");

describe("qhx filter config", () => {
  it("CLI --format envoy -o json --socket --out: a schema-valid http_filters entry the filter enforces", async () => {
    const out = path.join(dir, "envoy-cli", "qhx_authz.json");
    const r = await qhxAsync([
      "filter",
      "config",
      "--format",
      "envoy",
      "-o",
      "json",
      "--socket",
      sock,
      "--out",
      out,
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`wrote ${out}`);
    expect(r.stdout).toBe("");
    expect(fs.readdirSync(path.dirname(out))).toEqual(["qhx_authz.json"]); // no temporary left behind
    const doc = JSON.parse(fs.readFileSync(out, "utf8"));
    expect(doc).toHaveLength(1);
    const entry = envoyHttpFilterSchema.parse(doc[0]);
    expect(entry.name).toBe("envoy.filters.http.wasm");
    expect(entry.typed_config["@type"]).toBe(WASM_TYPE_URL);
    const c = entry.typed_config.config;
    expect(c.vm_config.runtime).toBe("envoy.wasm.runtime.v8");
    expect(c.vm_config.code).toEqual({ local: { filename: WASM } });
    expect(path.isAbsolute(WASM)).toBe(true);
    expect(c.fail_open).toBe(false);
    expect(c.configuration["@type"]).toBe("type.googleapis.com/google.protobuf.StringValue");
    expect(decide(c.configuration.value, "prod")).toEqual({ action: "continue", status: undefined });
    expect(decide(c.configuration.value, "dev")).toEqual({ action: "pause", status: 403 });
  });

  it("CLI: no policy source, one error line, exit 1", () => {
    const r = qhx(["filter", "config", "--format", "envoy"], { env: { QHX_ADMIN_SOCKET: "" } });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain("no policy");
  });

  it("ECDS document; writeIfChanged writes atomically and only changed content", async () => {
    const out = path.join(dir, "envoy", "qhx_authz.yaml");
    expect(writeIfChanged(out, await render({ format: "ecds", socket: sock }))).toBe(true);
    const text = fs.readFileSync(out, "utf8");
    const ecds = envoyEcdsSchema.parse(parseYaml(text));
    expect(ecds.resources[0]!.name).toBe("qhx_authz");
    expect(ecds.version_info).toMatch(/^1-[0-9a-f]{12}-[0-9a-f]{12}$/);
    const mtime = fs.statSync(out).mtimeMs;
    expect(writeIfChanged(out, await render({ format: "ecds", socket: sock }))).toBe(false);
    expect(fs.statSync(out).mtimeMs).toBe(mtime);
    expect(writeIfChanged(out, `${text}# changed\n`)).toBe(true);
    expect(fs.readdirSync(path.dirname(out))).toEqual(["qhx_authz.yaml"]); // no temporary left behind
  });

  it("YAML by default, with the module's sha256 and the policy version in the comment", async () => {
    const text = await render({ format: "envoy", socket: sock });
    expect(text).toContain(`sha256 ${sha256Of(WASM)}`);
    expect(text).toMatch(/# policy version 1 \([0-9a-f]{64}\)/);
    const doc = parseYaml(text) as unknown[];
    expect(envoyHttpFilterSchema.safeParse(doc[0]).success).toBe(true);
  });

  it("--format istio from files: WasmPlugin with file:// url, sha256, AUTHZ, FAIL_CLOSE, pluginConfig", async () => {
    const policyFile = path.join(dir, "policy.json");
    fs.writeFileSync(policyFile, JSON.stringify(await admin("GET", "/v1/policies/current")));
    const bundleFile = path.join(dir, "bundle.json");
    fs.writeFileSync(bundleFile, (await admin("GET", "/v1/bundle?format=spiffe")).bundle as string);
    const text = await render({
      format: "istio",
      policyVersion: policyFile,
      bundle: [`${TD}=${bundleFile}`],
      namespace: "payments",
      selector: ["app=api"],
    });
    const wp = istioWasmPluginSchema.parse(parseYaml(text));
    expect(wp.metadata).toEqual({ name: "qhx-authz", namespace: "payments" });
    expect(wp.spec).toMatchObject({
      url: `file://${WASM}`,
      phase: "AUTHZ",
      failStrategy: "FAIL_CLOSE",
      pluginName: "qhx_authz",
      type: "HTTP",
      selector: { matchLabels: { app: "api" } },
    });
    expect(wp.spec.sha256).toBe(sha256Of(WASM));
    // a registry URL instead of the local file (no Envoy cluster needed)
    const oci = istioWasmPluginSchema.parse(
      parseYaml(
        await render({ format: "istio", socket: sock, remoteUrl: "oci://registry.example/qhx/authz:1" }),
      ),
    );
    expect(oci.spec.url).toBe("oci://registry.example/qhx/authz:1");
    // Istio hands the plugin its pluginConfig as JSON
    const configuration = JSON.stringify(wp.spec.pluginConfig);
    expect(decide(configuration, "prod").action).toBe("continue");
    expect(decide(configuration, "dev").status).toBe(403);
  });

  it("--policy-key verifies a policy file; a tampered one is refused", async () => {
    const doc = (await admin("GET", "/v1/policies/current")) as unknown as PolicyVersion;
    const bundleFile = path.join(dir, "bundle2.json");
    fs.writeFileSync(bundleFile, (await admin("GET", "/v1/bundle?format=spiffe")).bundle as string);
    const keyFile = path.join(dir, "policy-key.pem");
    fs.writeFileSync(keyFile, (await admin("GET", "/v1/policies/public-key")).public_key as string);
    const flags = (f: string) => ({
      format: "raw",
      policyVersion: f,
      policyKey: keyFile,
      bundle: [bundleFile],
      trustDomain: TD,
    });
    const good = path.join(dir, "good.json");
    fs.writeFileSync(good, JSON.stringify(doc));
    expect(decide((await render(flags(good))).trim(), "prod").action).toBe("continue");
    const bad = path.join(dir, "tampered.json");
    fs.writeFileSync(
      bad,
      JSON.stringify({ ...doc, policies: { "prod-only": "permit (principal, action, resource);" } }),
    );
    await expect(render(flags(bad))).rejects.toMatchObject({ code: "QHX_POLICY_TAMPERED" });
  });

  it("refuses missing or malformed inputs", async () => {
    const notJson = path.join(dir, "v1.cedar");
    fs.writeFileSync(notJson, POLICY_V1);
    const notVersion = path.join(dir, "not-version.json");
    fs.writeFileSync(notVersion, JSON.stringify({ hello: 1 }));
    const policyFile = path.join(dir, "policy-neg.json");
    fs.writeFileSync(policyFile, JSON.stringify(await admin("GET", "/v1/policies/current")));
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ format: "envoy", policyVersion: notJson }, /is not JSON/],
      [
        { format: "envoy", policyVersion: notVersion, bundle: [`${TD}=x`] },
        /not a qhx-policy-version\/1 document/,
      ],
      [{ format: "envoy", socket: sock, bundle: ["/nonexistent"] }, /cannot read \/nonexistent/],
      [{ format: "envoy", policyVersion: policyFile, bundle: ["b.json"] }, /trust domain of b.json/],
      [{ format: "envoy", policyVersion: policyFile }, /no trust bundle/],
      [{ format: "envoy", socket: sock, remoteUrl: "https://x/y.wasm" }, /--remote-cluster/],
      [{ format: "envoy", socket: sock, wasm: notJson }, /not a WebAssembly binary/],
      [{ format: "envoy", socket: sock, wasm: path.join(dir, "missing.wasm") }, /cannot read/],
      [{ format: "envoy", socket: sock, jwtHeader: "x-jwt" }, /audience/],
      [{ format: "envoy", socket: sock, identitySource: "header" }, /identitySource/],
      [{ format: "envoy", socket: "/x.sock", dataDir: dir }, /not both/],
      [{ format: "envoy", socket: path.join(dir, "nobody.sock") }, /cannot reach/],
      [{ format: "istio", socket: sock, selector: ["novalue"] }, /KEY=VALUE/],
    ];
    for (const [flags, msg] of cases) {
      await expect(render(flags), JSON.stringify(flags)).rejects.toThrow(msg);
    }
  });
});

describe("deployment documents: schema checks", () => {
  const d = { wasmPath: "/opt/qhx/qhx_authz.wasm", sha256: "a".repeat(64), configuration: '{"k":1}' };

  it("Envoy: local code; remote code carries the sha256", () => {
    expect(renderEnvoyHttpFilter(d).typed_config.config.vm_config.code).toEqual({
      local: { filename: "/opt/qhx/qhx_authz.wasm" },
    });
    const remote = renderEnvoyHttpFilter({
      ...d,
      remote: { url: "https://wasm.example/qhx.wasm", cluster: "wasm" },
    });
    expect(remote.typed_config.config.vm_config.code).toEqual({
      remote: {
        http_uri: { uri: "https://wasm.example/qhx.wasm", cluster: "wasm", timeout: "10s" },
        sha256: "a".repeat(64),
      },
    });
    const ecds = renderEnvoyEcds(d, "7-abc");
    expect(ecds.resources[0]!["@type"]).toBe("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig");
  });

  it("rejects what Envoy or Istio would reject", () => {
    expect(() => renderEnvoyHttpFilter({ ...d, wasmPath: "relative.wasm" })).toThrow(/absolute path/);
    expect(() =>
      renderEnvoyHttpFilter({ ...d, remote: { url: "https://x/y", cluster: "c" }, sha256: "XYZ" }),
    ).toThrow(/sha256/);
    const good = renderEnvoyHttpFilter(d);
    expect(envoyHttpFilterSchema.safeParse({ ...good, extra: 1 }).success).toBe(false);
    expect(
      envoyHttpFilterSchema.safeParse({
        ...good,
        typed_config: { ...good.typed_config, config: { ...good.typed_config.config, fail_open: "no" } },
      }).success,
    ).toBe(false);
    const local = good.typed_config.config.vm_config.code as { local: Record<string, unknown> };
    // Envoy's local DataSource has no sha256 field
    expect(
      envoyHttpFilterSchema.safeParse({
        ...good,
        typed_config: {
          ...good.typed_config,
          config: {
            ...good.typed_config.config,
            vm_config: {
              ...good.typed_config.config.vm_config,
              code: { local: { ...local.local, sha256: "a".repeat(64) } },
            },
          },
        },
      }).success,
    ).toBe(false);
    expect(() => renderIstioWasmPlugin({ ...d, configuration: "not json" })).toThrow(/not a JSON object/);
    expect(() => renderIstioWasmPlugin({ ...d, configuration: "[1]" })).toThrow(/not a JSON object/);
    expect(() => renderIstioWasmPlugin(d, { namespace: "Bad_NS" })).toThrow(/DNS-1123/);
    const wp = renderIstioWasmPlugin(d);
    expect(istioWasmPluginSchema.safeParse({ ...wp, spec: { ...wp.spec, phase: "LATE" } }).success).toBe(
      false,
    );
  });
});

// ------------------------------------------------------------------------------------------------
// the agent keeps the file current

/** Resolve when `file` satisfies `pred`, watching its directory (no polling sleeps). */
function waitForFile(file: string, pred: (text: string) => boolean, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      let text: string;
      try {
        text = fs.readFileSync(file, "utf8");
      } catch {
        return false;
      }
      if (!pred(text)) return false;
      watcher.close();
      clearTimeout(timer);
      resolve(text);
      return true;
    };
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const watcher = fs.watch(path.dirname(file), () => void check());
    const timer = setTimeout(() => {
      watcher.close();
      reject(new Error(`timed out waiting for ${what}`));
    }, 30_000);
    check();
  });
}

describe("FilterConfigKeeper", () => {
  const closers: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
  });

  it("writes on start, rewrites only on content change, keeps the previous file when an update fails", async () => {
    const policyDoc = (await admin("GET", "/v1/policies/current")) as unknown as PolicyVersion;
    const bundle: TrustBundle = server.core.ca.trustBundle();
    let policy: PolicyVersion | undefined;
    const listeners = new Set<() => void>();
    const source: FilterConfigSource = {
      policy: async () => policy,
      bundles: () => [bundle],
      onChange: (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    };
    const file = path.join(tmpDir(), "filter", "qhx_authz.conf");
    const results: { written: boolean; error?: unknown }[] = [];
    const errors: unknown[] = [];
    const keeper = new FilterConfigKeeper(source, {
      path: file,
      format: "raw",
      logger: { info() {}, warn() {}, error: (o: unknown) => errors.push(o) } as never,
      onRefresh: (r) => results.push(r),
    });
    await keeper.start();
    expect(fs.existsSync(file)).toBe(false); // no policy yet: nothing written
    policy = policyDoc;
    for (const l of listeners) l();
    await keeper.refresh();
    const first = fs.readFileSync(file, "utf8");
    expect(decide(first.trim(), "prod").action).toBe("continue");
    expect(keeper.writes).toBe(1);
    await keeper.refresh(); // same inputs: no write
    expect(keeper.writes).toBe(1);
    // an update the filter cannot run: the file stays as it was
    policy = { ...policyDoc, version: 9, digest: "f".repeat(64), engine: "cedar", program: null };
    await keeper.refresh();
    expect(fs.readFileSync(file, "utf8")).toBe(first);
    expect(results.at(-1)?.error).toMatchObject({ code: "QHX_FILTER_POLICY_UNSUPPORTED" });
    expect(errors).toHaveLength(1);
    keeper.stop();
    expect(listeners.size).toBe(0);
  });

  it("the agent (filter_config_path) rewrites the ECDS file when a new policy version arrives", async () => {
    const base = tmpDir("qhx-filter-agent-");
    const { token } = (await admin("POST", "/v1/join-tokens", { spiffe_id: `spiffe://${TD}/nodes/f1` })) as {
      token: string;
    };
    const bundleFile = path.join(base, "bundle.pem");
    fs.writeFileSync(bundleFile, bundleToPem(server.core.ca.trustBundle()));
    const filterFile = path.join(base, "envoy", "qhx_authz_ecds.yaml");
    const running = await startAgent(
      parseAgentConfig({
        server_address: `127.0.0.1:${server.address.port}`,
        trust_bundle_file: bundleFile,
        join_token: token,
        data_dir: path.join(base, "agent"),
        socket_path: path.join(base, "agent", "api.sock"),
        health_listen: "127.0.0.1:0",
        log_level: "silent",
        sync_interval: "1h",
        filter_config_path: filterFile,
      }),
      { clock: systemClock, logger: silentLogger },
    );
    closers.push(() => running.close());
    const v1 = envoyEcdsSchema.parse(
      parseYaml(await waitForFile(filterFile, (t) => t.includes("version_info: 1-"), "policy v1")),
    );
    const conf1 = v1.resources[0]!.typed_config.config.configuration.value;
    expect(decide(conf1, "prod").action).toBe("continue");
    expect(decide(conf1, "dev").status).toBe(403);

    await admin("POST", "/v1/policies", { policies: { "dev-only": POLICY_V2.split("\n")[1] } });
    await running.agent.syncOnce();
    const v2 = envoyEcdsSchema.parse(
      parseYaml(await waitForFile(filterFile, (t) => t.includes("version_info: 2-"), "policy v2")),
    );
    const conf2 = v2.resources[0]!.typed_config.config.configuration.value;
    expect(decide(conf2, "dev").action).toBe("continue");
    expect(decide(conf2, "prod").status).toBe(403);
    expect(fs.readdirSync(path.dirname(filterFile))).toEqual(["qhx_authz_ecds.yaml"]);
  });
});
