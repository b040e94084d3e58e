/**
 * `qhx filter config`: the qhx_authz proxy-wasm filter's deployment configuration. Register with
 * `registerFilterCommands(program)`.
 *
 *   qhx filter config --format envoy|istio|ecds|raw [-o yaml|json] [--out FILE]
 *       [--socket PATH | --data-dir DIR]            policy version, trust bundle and directory from a server
 *       [--policy-version FILE] [--bundle [TD=]FILE]...  ... or from files (qhx policy show -o json, qhx bundle show)
 *       [--identity-source connection|xfcc] [--jwt-header H --audience A...] [--route PREFIX]... [--options FILE]
 *       [--wasm FILE] [--name N] [--root-id R] [--vm-id V] [--remote-url URL --remote-cluster C]
 *       [--namespace NS] [--selector k=v]...          (istio)
 *       [--crypto-policy FILE [--crypto-namespace NS]]  refuse peers the crypto policy's accept_from refuses
 *
 * The configuration string is the filter engineer's encodeFilterConfig (host/filter/config.ts); the
 * documents around it are rendered and schema-checked by host/wasm/proxy-wasm/deploy.ts.
 */
import fs from "node:fs";
import path from "node:path";
import { type Command, Option } from "commander";
import { parsePemBundle, parseSpiffeBundle } from "../core/bundle.ts";
import type { TrustBundle } from "../core/bundle-types.ts";
import type { EntryJson } from "../core/entry.ts";
import { QhxError, ValidationError } from "../core/errors.ts";
import {
  encodeFilterConfig,
  type FilterDirectoryEntry,
  type FilterOptions,
  type FilterReleasability,
  filterReleasability,
} from "../filter/config.ts";
import { POLICY_VERSION_FORMAT, type PolicyVersion, verifyPolicyVersion } from "../policy/signed.ts";
import {
  FILTER_DOCUMENT_FORMATS,
  type FilterDocumentFormat,
  renderFilterDocument,
  writeIfChanged,
} from "../agent/filter-config.ts";
import { type AdminClient, LocalClient, SocketClient } from "./client.ts";
import { readCryptoPolicyFile } from "./crypto-policy.ts";

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

interface ConfigFlags {
  format: FilterDocumentFormat;
  output: "yaml" | "json";
  out?: string;
  socket?: string;
  dataDir?: string;
  policyVersion?: string;
  policyKey?: string;
  bundle?: string[];
  trustDomain?: string;
  directory?: boolean;
  identitySource?: "connection" | "xfcc";
  jwtHeader?: string;
  audience?: string[];
  jwtRequired?: boolean;
  route?: string[];
  options?: string;
  wasm?: string;
  name?: string;
  rootId?: string;
  vmId?: string;
  remoteUrl?: string;
  remoteCluster?: string;
  namespace?: string;
  selector?: string[];
  istioName?: string;
  cryptoPolicy?: string;
  cryptoNamespace?: string;
}

function readJson(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new ValidationError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code}`, what);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new ValidationError(`${file} is not JSON`, what);
  }
}

/** A signed policy version document (as `qhx policy show -o json` prints it). */
export function parsePolicyVersionDoc(doc: unknown, source: string): PolicyVersion {
  const v = doc as Partial<PolicyVersion> | null;
  if (!v || typeof v !== "object" || v.format !== POLICY_VERSION_FORMAT) {
    throw new ValidationError(`${source} is not a ${POLICY_VERSION_FORMAT} document`, "policy-version");
  }
  if (
    !Number.isInteger(v.version) ||
    typeof v.digest !== "string" ||
    (v.engine !== "compiled" && v.engine !== "cedar")
  ) {
    throw new ValidationError(`${source}: version, digest and engine are required`, "policy-version");
  }
  return v as PolicyVersion;
}

/** `[TD=]FILE`: a SPIFFE bundle (JSON) or PEM bundle; the trust domain from TD=, --trust-domain, or the server. */
function readBundleArg(arg: string, fallbackTd: string | undefined): TrustBundle {
  const m = /^([a-z0-9._-]+)=(.+)$/.exec(arg);
  const td = m?.[1] ?? fallbackTd;
  const file = m?.[2] ?? arg;
  if (!td)
    throw new ValidationError(`give the trust domain of ${file} as TD=${file} or --trust-domain`, "bundle");
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new ValidationError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code}`, "bundle");
  }
  return text.trimStart().startsWith("{") ? parseSpiffeBundle(text, td) : parsePemBundle(text, td);
}

function parseSelector(list: string[] | undefined): Record<string, string> | undefined {
  if (!list) return undefined;
  const out: Record<string, string> = {};
  for (const s of list) {
    const i = s.indexOf("=");
    if (i <= 0) throw new ValidationError(`"${s}" is not KEY=VALUE`, "selector");
    out[s.slice(0, i)] = s.slice(i + 1);
  }
  return out;
}

async function connect(o: ConfigFlags): Promise<AdminClient | undefined> {
  if (o.socket && o.dataDir) throw new ValidationError("give --socket or --data-dir, not both");
  if (o.socket) return new SocketClient(path.resolve(o.socket));
  if (o.dataDir) return LocalClient.open(path.resolve(o.dataDir));
  if (!o.policyVersion && process.env.QHX_ADMIN_SOCKET) return new SocketClient(process.env.QHX_ADMIN_SOCKET);
  return undefined;
}

function filterOptions(o: ConfigFlags): FilterOptions {
  const fromFile = o.options ? (readJson(o.options, "options") as FilterOptions) : {};
  if (fromFile === null || typeof fromFile !== "object" || Array.isArray(fromFile)) {
    throw new ValidationError(`${o.options} must hold a JSON object`, "options");
  }
  return {
    ...fromFile,
    ...(o.identitySource ? { identitySource: o.identitySource } : {}),
    ...(o.jwtHeader ? { jwtHeader: o.jwtHeader } : {}),
    ...(o.audience ? { audiences: o.audience } : {}),
    ...(o.jwtRequired ? { jwtRequired: true } : {}),
    ...(o.route ? { routes: o.route } : {}),
  };
}

/**
 * `--crypto-policy FILE [--crypto-namespace NS]`: the filter's ingress releasability from a crypto policy
 * file (what `qhx crypto-policy show --format json --out FILE` writes): the `accept_from` resolved for the
 * protected workload's namespace (without one, trust-domain and wider rules). The local trust domain is
 * the policy's `trust_domain`, else the server's, else --trust-domain.
 */
function releasabilityFor(o: ConfigFlags, serverTd: string | undefined): FilterReleasability | undefined {
  if (!o.cryptoPolicy) {
    if (o.cryptoNamespace)
      throw new ValidationError("--crypto-namespace needs --crypto-policy", "crypto-policy");
    return undefined;
  }
  const policy = readCryptoPolicyFile(o.cryptoPolicy);
  const trustDomain = policy.trustDomain ?? serverTd ?? o.trustDomain;
  if (!trustDomain) {
    throw new ValidationError(
      `${o.cryptoPolicy} names no trust_domain: give a server or --trust-domain`,
      "crypto-policy",
    );
  }
  return filterReleasability(policy, {
    trustDomain,
    ...(o.cryptoNamespace !== undefined ? { namespace: o.cryptoNamespace } : {}),
  });
}

/** Gather the inputs, encode the configuration, render the document. */
export async function filterConfigDocument(o: ConfigFlags): Promise<string> {
  const client = await connect(o);
  let policy: PolicyVersion | undefined;
  const bundles: TrustBundle[] = [];
  let directory: FilterDirectoryEntry[] | undefined;
  let serverTd: string | undefined;
  try {
    if (client) {
      serverTd = (await client.call<{ trust_domain: string }>("GET", "/v1/health")).trust_domain;
      if (!o.policyVersion) {
        policy = parsePolicyVersionDoc(
          await client.call("GET", "/v1/policies/current"),
          "the server's current policy",
        );
      }
      const b = await client.call<{ bundle: string }>("GET", "/v1/bundle?format=spiffe");
      bundles.push(parseSpiffeBundle(b.bundle, serverTd));
      if (o.directory !== false) {
        const r = await client.call<{ entries: EntryJson[] }>("GET", "/v1/entries");
        directory = r.entries.map((e) => ({
          spiffeId: e.spiffe_id,
          namespace: e.namespace,
          ...(Object.keys(e.labels ?? {}).length ? { labels: e.labels } : {}),
        }));
      }
    }
    if (o.policyVersion) {
      policy = parsePolicyVersionDoc(readJson(o.policyVersion, "policy-version"), o.policyVersion);
      if (o.policyKey && !verifyPolicyVersion(policy, fs.readFileSync(o.policyKey, "utf8"))) {
        throw new QhxError(
          "QHX_POLICY_TAMPERED",
          `${o.policyVersion} fails signature verification with ${o.policyKey}`,
        );
      }
    }
    for (const arg of o.bundle ?? []) {
      const b = readBundleArg(arg, o.trustDomain ?? serverTd);
      const i = bundles.findIndex((x) => x.trustDomain === b.trustDomain);
      if (i >= 0) bundles[i] = b;
      else bundles.push(b);
    }
  } finally {
    await client?.close();
  }
  if (!policy) {
    throw new ValidationError(
      "no policy: give --socket PATH / --data-dir DIR, or --policy-version FILE",
      "policy-version",
    );
  }
  if (bundles.length === 0)
    throw new ValidationError("no trust bundle: give a server or --bundle [TD=]FILE", "bundle");
  const releasability = releasabilityFor(o, serverTd);
  const configuration = encodeFilterConfig({
    policy: { engine: policy.engine, program: policy.program, unsupported: policy.unsupported },
    bundles,
    ...(directory ? { directory } : {}),
    options: filterOptions(o),
    ...(releasability ? { releasability } : {}),
  });
  const matchLabels = parseSelector(o.selector);
  return renderFilterDocument(configuration, {
    format: o.format,
    output: o.output,
    ...(o.wasm ? { wasmFile: o.wasm } : {}),
    ...(o.name ? { name: o.name } : {}),
    ...(o.rootId ? { rootId: o.rootId } : {}),
    ...(o.vmId ? { vmId: o.vmId } : {}),
    ...(o.format !== "istio" && (o.remoteUrl || o.remoteCluster)
      ? (() => {
          if (!o.remoteUrl || !o.remoteCluster) {
            throw new ValidationError(
              "Envoy remote code needs both --remote-url and --remote-cluster",
              "remote-url",
            );
          }
          return { remote: { url: o.remoteUrl, cluster: o.remoteCluster } };
        })()
      : {}),
    istio: {
      ...(o.istioName ? { name: o.istioName } : {}),
      ...(o.namespace ? { namespace: o.namespace } : {}),
      ...(matchLabels ? { matchLabels } : {}),
      ...(o.remoteUrl ? { url: o.remoteUrl } : {}),
    },
    policyVersion: policy.version,
    policyDigest: policy.digest,
  });
}

export function registerFilterCommands(program: Command): void {
  const filter = program.command("filter").description("the qhx_authz proxy-wasm filter (Envoy, Istio)");
  filter
    .command("config")
    .description(
      "render the filter's configuration: an Envoy http_filters entry, an ECDS file, or an Istio WasmPlugin",
    )
    .addOption(
      new Option(
        "--format <format>",
        "envoy | istio | ecds (Envoy config_discovery file) | raw (the configuration string)",
      )
        .choices(FILTER_DOCUMENT_FORMATS)
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("-o, --output <output>", "document syntax").choices(["yaml", "json"]).default("yaml"),
    )
    .option("--out <file>", "write the document there (atomically, only when it changed) instead of stdout")
    .option("--socket <path>", "a running server's admin socket (policy, bundle, directory)")
    .option("--data-dir <dir>", "a server's data directory, offline")
    .option(
      "--policy-version <file>",
      "a signed policy version (qhx policy show -o json) instead of the server's",
    )
    .option("--policy-key <file>", "verify --policy-version with the server's policy public key (PEM)")
    .option(
      "--bundle <[td=]file>",
      "a trust bundle, SPIFFE JSON or PEM (repeatable; federated domains too)",
      collect,
    )
    .option("--trust-domain <td>", "trust domain of --bundle files given without TD=")
    .option("--no-directory", "do not include the registration entries as the workload directory")
    .addOption(new Option("--identity-source <source>", "peer identity from").choices(["connection", "xfcc"]))
    .option("--jwt-header <name>", "header carrying a JWT-SVID (authorization: Bearer)")
    .option("--audience <aud>", "accepted JWT-SVID audience (repeatable)", collect)
    .option("--jwt-required", "deny requests without a JWT-SVID")
    .option("--route <prefix>", "a route path prefix (repeatable)", collect)
    .option("--options <file>", "filter options as JSON (flags override it)")
    .option("--wasm <file>", "the filter module (default build/filters/qhx_authz.wasm)")
    .option("--name <name>", "plugin name (Envoy config.name, Istio pluginName)", "qhx_authz")
    .option("--root-id <id>", "Envoy root_id (default: the name)")
    .option("--vm-id <id>", "Envoy vm_config.vm_id (default: the name)")
    .option("--remote-url <url>", "serve the module from this URL (Envoy remote code with sha256; Istio url)")
    .option("--remote-cluster <name>", "the Envoy cluster that reaches --remote-url")
    .option("--namespace <ns>", "istio: the WasmPlugin's namespace", "istio-system")
    .option("--istio-name <name>", "istio: metadata.name (default: the name with - for _)")
    .option("--selector <key=value>", "istio: workload selector label (repeatable)", collect)
    .option(
      "--crypto-policy <file>",
      "refuse peers of trust domains the crypto policy's accept_from refuses (qhx crypto-policy show --format json)",
    )
    .option("--crypto-namespace <ns>", "the protected workload's namespace for --crypto-policy rules")
    .addHelpText(
      "after",
      `
Examples:
  qhx filter config --format envoy --socket ./data/admin.sock
  qhx filter config --format istio --policy-version policy.json --bundle example.org=bundle.json --selector app=api
  qhx filter config --format ecds --socket ./data/admin.sock --out /etc/envoy/qhx_authz.yaml

No Envoy binary is involved: the documents are checked against schemas written from the Envoy v3 and
Istio API references, and the filter itself is proven through QHx's proxy-wasm host (docs/proxy-wasm.md).`,
    )
    .action(async (o: ConfigFlags) => {
      const doc = await filterConfigDocument(o);
      if (o.out) {
        const file = path.resolve(o.out);
        const written = writeIfChanged(file, doc);
        process.stderr.write(`${written ? "wrote" : "unchanged"} ${file}\n`);
      } else {
        process.stdout.write(doc);
      }
    });
}
