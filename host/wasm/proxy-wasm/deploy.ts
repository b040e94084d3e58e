/**
 * Deployment documents for a proxy-wasm HTTP filter: the Envoy `http_filters` entry
 * (`envoy.filters.http.wasm`), the Envoy ECDS resource file an agent keeps current (a filesystem
 * `DiscoveryResponse` holding one `TypedExtensionConfig`), and the Istio `WasmPlugin`. Each has a zod
 * schema written from the Envoy v3 / Istio API reference field names, strict (an unknown field is an
 * error, as Envoy's proto validation rejects it), so every document QHx renders is checked before it is
 * printed or written.
 *
 * Envoy's local `DataSource` has no sha256 field (only `RemoteAsyncDataSource` does): for local code
 * the digest is carried in a YAML comment; with a remote URL it is the verified `sha256`.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { stringify } from "yaml";
import { z } from "zod";
import { QhxError, ValidationError } from "../../core/errors.ts";

export const WASM_FILTER_NAME = "envoy.filters.http.wasm";
export const WASM_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
export const STRING_VALUE_TYPE_URL = "type.googleapis.com/google.protobuf.StringValue";
export const TYPED_EXTENSION_CONFIG_TYPE_URL =
  "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
export const V8_RUNTIME = "envoy.wasm.runtime.v8";

// ----- schemas (Envoy v3 API: envoy.extensions.filters.http.wasm.v3.Wasm, envoy.extensions.wasm.v3.*)

const stringValue = z.object({ "@type": z.literal(STRING_VALUE_TYPE_URL), value: z.string() }).strict();

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "sha256 must be 64 lower-case hex digits");

const asyncDataSource = z.union([
  z
    .object({
      local: z.object({ filename: z.string().startsWith("/", "must be an absolute path") }).strict(),
    })
    .strict(),
  z
    .object({
      remote: z
        .object({
          http_uri: z
            .object({
              uri: z.string().url(),
              cluster: z.string().min(1),
              timeout: z.string().regex(/^\d+(\.\d+)?s$/),
            })
            .strict(),
          sha256: sha256Hex,
        })
        .strict(),
    })
    .strict(),
]);

const vmConfig = z
  .object({
    vm_id: z.string().optional(),
    runtime: z.enum([
      V8_RUNTIME,
      "envoy.wasm.runtime.wamr",
      "envoy.wasm.runtime.wasmtime",
      "envoy.wasm.runtime.null",
    ]),
    code: asyncDataSource,
    configuration: stringValue.optional(),
    allow_precompiled: z.boolean().optional(),
    nack_on_code_cache_miss: z.boolean().optional(),
  })
  .strict();

export const envoyPluginConfigSchema = z
  .object({
    name: z.string().min(1),
    root_id: z.string(),
    vm_config: vmConfig,
    configuration: stringValue,
    fail_open: z.boolean(),
  })
  .strict();

export const envoyWasmSchema = z
  .object({ "@type": z.literal(WASM_TYPE_URL), config: envoyPluginConfigSchema })
  .strict();

/** One entry of an HttpConnectionManager's `http_filters` (envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter). */
export const envoyHttpFilterSchema = z
  .object({ name: z.literal(WASM_FILTER_NAME), typed_config: envoyWasmSchema })
  .strict();

/** A filesystem xDS file for ECDS: a DiscoveryResponse with one TypedExtensionConfig. */
export const envoyEcdsSchema = z
  .object({
    version_info: z.string().min(1),
    resources: z
      .array(
        z
          .object({
            "@type": z.literal(TYPED_EXTENSION_CONFIG_TYPE_URL),
            name: z.string().min(1),
            typed_config: envoyWasmSchema,
          })
          .strict(),
      )
      .length(1),
  })
  .strict();

const k8sName = z
  .string()
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, "must be a DNS-1123 name");

/** Istio extensions.istio.io/v1alpha1 WasmPlugin (the fields QHx sets). */
export const istioWasmPluginSchema = z
  .object({
    apiVersion: z.literal("extensions.istio.io/v1alpha1"),
    kind: z.literal("WasmPlugin"),
    metadata: z.object({ name: k8sName, namespace: k8sName }).strict(),
    spec: z
      .object({
        selector: z
          .object({ matchLabels: z.record(z.string(), z.string()) })
          .strict()
          .optional(),
        url: z
          .string()
          .regex(/^(file:\/\/\/|oci:\/\/|https?:\/\/)/, "url must be file:///, oci:// or http(s)://"),
        sha256: sha256Hex,
        phase: z.enum(["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"]),
        priority: z.number().int().optional(),
        pluginName: z.string().min(1),
        pluginConfig: z.record(z.string(), z.unknown()),
        failStrategy: z.enum(["FAIL_CLOSE", "FAIL_OPEN"]),
        type: z.enum(["HTTP", "NETWORK"]),
      })
      .strict(),
  })
  .strict();

export type EnvoyHttpFilter = z.infer<typeof envoyHttpFilterSchema>;
export type EnvoyEcds = z.infer<typeof envoyEcdsSchema>;
export type IstioWasmPlugin = z.infer<typeof istioWasmPluginSchema>;

// ----- rendering

export interface FilterDeployment {
  /** Absolute path of the filter's .wasm. */
  wasmPath: string;
  /** Its sha256, lower-case hex. */
  sha256: string;
  /** The filter's plugin configuration (proxy_on_configure buffer). */
  configuration: string;
  /** Envoy `config.name` / the Istio plugin name; default "qhx_authz". */
  name?: string;
  /** Envoy `root_id`; default the name. */
  rootId?: string;
  /** Envoy `vm_config.vm_id`; default the name. */
  vmId?: string;
  /** Remote code instead of the local file: Envoy fetches `url` from `cluster` and verifies the sha256. */
  remote?: { url: string; cluster: string; timeoutSeconds?: number };
}

/** The absolute path and sha256 of a .wasm file (which must exist and be a Wasm binary). */
export function wasmFileInfo(file: string): { wasmPath: string; sha256: string; bytes: Uint8Array } {
  const wasmPath = path.resolve(file);
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(wasmPath);
  } catch (e) {
    throw new QhxError(
      "QHX_FILTER_WASM_MISSING",
      `cannot read ${wasmPath}: ${(e as NodeJS.ErrnoException).code}`,
      {
        hint: "build it with npm run build:wasm, or give --wasm FILE",
      },
    );
  }
  if (bytes.length < 8 || bytes.readUInt32BE(0) !== 0x0061736d) {
    throw new QhxError("QHX_FILTER_WASM_INVALID", `${wasmPath} is not a WebAssembly binary`);
  }
  return { wasmPath, sha256: createHash("sha256").update(bytes).digest("hex"), bytes: new Uint8Array(bytes) };
}

function check<T>(schema: z.ZodType<T>, doc: unknown, what: string): T {
  const r = schema.safeParse(doc);
  if (!r.success) {
    const why = r.error.issues.map((i) => `${i.path.join(".") || "(top)"}: ${i.message}`).join("; ");
    throw new ValidationError(
      `generated ${what} fails its schema: ${why}`,
      undefined,
      "QHX_FILTER_DEPLOY_INVALID",
    );
  }
  return r.data;
}

function wasmConfig(d: FilterDeployment): z.infer<typeof envoyWasmSchema> {
  const name = d.name ?? "qhx_authz";
  const code = d.remote
    ? {
        remote: {
          http_uri: {
            uri: d.remote.url,
            cluster: d.remote.cluster,
            timeout: `${d.remote.timeoutSeconds ?? 10}s`,
          },
          sha256: d.sha256,
        },
      }
    : { local: { filename: d.wasmPath } };
  return {
    "@type": WASM_TYPE_URL,
    config: {
      name,
      root_id: d.rootId ?? name,
      vm_config: { vm_id: d.vmId ?? name, runtime: V8_RUNTIME, code },
      configuration: { "@type": STRING_VALUE_TYPE_URL, value: d.configuration },
      fail_open: false,
    },
  };
}

/** The ready `http_filters` entry: `envoy.filters.http.wasm` with the filter, fail closed. */
export function renderEnvoyHttpFilter(d: FilterDeployment): EnvoyHttpFilter {
  return check(
    envoyHttpFilterSchema,
    { name: WASM_FILTER_NAME, typed_config: wasmConfig(d) },
    "Envoy http filter",
  );
}

/** The ECDS file (filesystem DiscoveryResponse) for `config_discovery` with a `path_config_source`. */
export function renderEnvoyEcds(d: FilterDeployment, versionInfo: string): EnvoyEcds {
  return check(
    envoyEcdsSchema,
    {
      version_info: versionInfo,
      resources: [
        {
          "@type": TYPED_EXTENSION_CONFIG_TYPE_URL,
          name: d.name ?? "qhx_authz",
          typed_config: wasmConfig(d),
        },
      ],
    },
    "Envoy ECDS resource",
  );
}

export interface IstioTarget {
  /** WasmPlugin metadata.name; default the plugin name with "_" → "-". */
  name?: string;
  namespace?: string;
  /** Workload selector labels (unset: every workload in the namespace). */
  matchLabels?: Record<string, string>;
  /** Module URL; default file://<wasmPath>. */
  url?: string;
}

/** The Istio WasmPlugin: phase AUTHZ, fail closed, pluginConfig = the filter configuration object. */
export function renderIstioWasmPlugin(d: FilterDeployment, t: IstioTarget = {}): IstioWasmPlugin {
  let pluginConfig: unknown;
  try {
    pluginConfig = JSON.parse(d.configuration);
  } catch {
    pluginConfig = undefined;
  }
  if (pluginConfig === null || typeof pluginConfig !== "object" || Array.isArray(pluginConfig)) {
    // Istio's pluginConfig is a protobuf Struct: the configuration must be a JSON object
    throw new ValidationError(
      "the filter configuration is not a JSON object",
      "pluginConfig",
      "QHX_FILTER_DEPLOY_INVALID",
    );
  }
  const pluginName = d.name ?? "qhx_authz";
  return check(
    istioWasmPluginSchema,
    {
      apiVersion: "extensions.istio.io/v1alpha1",
      kind: "WasmPlugin",
      metadata: { name: t.name ?? pluginName.replaceAll("_", "-"), namespace: t.namespace ?? "istio-system" },
      spec: {
        ...(t.matchLabels && Object.keys(t.matchLabels).length
          ? { selector: { matchLabels: t.matchLabels } }
          : {}),
        url: t.url ?? `file://${d.wasmPath}`,
        sha256: d.sha256,
        phase: "AUTHZ",
        pluginName,
        pluginConfig,
        failStrategy: "FAIL_CLOSE",
        type: "HTTP",
      },
    },
    "Istio WasmPlugin",
  );
}

/** YAML (with a leading comment) or JSON text of a document. */
export function formatDocument(doc: unknown, format: "yaml" | "json", comment?: string): string {
  if (format === "json") return `${JSON.stringify(doc, null, 2)}\n`;
  const head = comment
    ? `${comment
        .split("\n")
        .map((l) => `# ${l}`.trimEnd())
        .join("\n")}\n`
    : "";
  return head + stringify(doc, { lineWidth: 0 });
}
