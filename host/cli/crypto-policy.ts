/**
 * `qhx crypto-policy …`: the crypto policy (algorithms, tunnel modes, lifetimes, assurance,
 * releasability) per namespace, trust domain and coalition (docs/crypto-policy.md). Register with
 * `registerCryptoPolicyCommands(program)`.
 *
 *   qhx crypto-policy validate FILE                          (local, no server)
 *   qhx crypto-policy show [--format text|json] [--out FILE]
 *   qhx crypto-policy apply FILE [--comment T] [--expect-version N]
 *   qhx crypto-policy versions
 *   qhx crypto-policy explain ID [--namespace NS] [--file FILE] [--format text|json]
 *
 * FILE is JSON or YAML; `show --format json` writes exactly what `apply` and `qhx tunnel --crypto-policy`
 * read. Server commands take --socket PATH (running server) or --data-dir DIR (offline, same files).
 */
import fs from "node:fs";
import path from "node:path";
import { type Command, Option } from "commander";
import {
  checkTunnelMode,
  type CryptoPolicy,
  cryptoPolicyPeerCheck,
  cryptoPolicyToJson,
  type Explanation,
  explain,
  parseCryptoPolicyText,
  resolveCryptoPolicy,
  type Subject,
  type TunnelMode,
} from "../core/crypto-policy.ts";
import { QhxError, ValidationError } from "../core/errors.ts";
import { writeFileAtomic } from "../server/keymanager/disk.ts";
import { type ConnectionOptions as ConnOpts, withClient, withConnection } from "./client.ts";

function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

/** Read and validate a crypto policy file (JSON or YAML; `show --format json` output included). */
export function readCryptoPolicyFile(file: string): CryptoPolicy {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new QhxError("QHX_FILE_UNREADABLE", `cannot read ${file}: ${(e as NodeJS.ErrnoException).code}`);
  }
  return parseCryptoPolicyText(text, file);
}

/**
 * `qhx tunnel --crypto-policy FILE [--crypto-namespace NS]`: the tunnel's peer checks from a policy file
 * (what `show --format json` writes). The local trust domain is the SVID's; the namespace is the operator's
 * statement (an SVID does not carry one; without it only trust-domain and wider rules apply). Refuses to
 * start in a mode the policy forbids. The file is re-read when it changes; a file that no longer
 * validates refuses every new connection (fail closed) until it is fixed.
 */
export function tunnelPeerChecks(
  file: string,
  source: { current(): { svid: { trustDomain: string } } },
  mode: TunnelMode,
  namespace?: string,
): ((peer: {
  spiffeId: string;
  trustDomain: string;
  sigAlg: string;
  mode: string;
}) => { ok: true } | { ok: false; reason: string })[] {
  let loaded = { mtimeMs: fs.statSync(file).mtimeMs, policy: readCryptoPolicyFile(file) };
  const local = (): Subject => ({
    trustDomain: source.current().svid.trustDomain,
    ...(namespace !== undefined ? { namespace } : {}),
  });
  checkTunnelMode(resolveCryptoPolicy(loaded.policy, local()), mode);
  const current = (): CryptoPolicy => {
    const m = fs.statSync(file).mtimeMs;
    if (m !== loaded.mtimeMs) loaded = { mtimeMs: m, policy: readCryptoPolicyFile(file) };
    return loaded.policy;
  };
  // an exception in a peer check refuses the connection with its message (host/tunnel)
  return [cryptoPolicyPeerCheck(current, local)];
}

interface ShowAnswer {
  version: number | null;
  created_at: string | null;
  comment: string | null;
  digest: string | null;
  policy: Record<string, unknown>;
}

function printRule(indent: string, r: Record<string, unknown>): void {
  const keys = Object.keys(r);
  if (keys.length === 0) out(`${indent}(no settings: inherits everything)`);
  for (const k of keys) {
    const v = r[k];
    if (k === "signature_algorithms") {
      const sa = v as { allowed: string[]; default: string };
      out(`${indent}${k}: ${sa.allowed.join(", ")} (default ${sa.default})`);
    } else out(`${indent}${k}: ${Array.isArray(v) ? (v.length ? v.join(", ") : "(none)") : String(v)}`);
  }
}

export function printExplanation(x: Explanation): void {
  out(`${x.spiffe_id}  trust domain ${x.trust_domain}  namespace ${x.namespace ?? "(none)"}`);
  out("rules, most specific first:");
  for (const r of x.rules) out(`  ${r.applies ? "applies " : "skipped "} ${r.name.padEnd(24)} ${r.why}`);
  out("effective:");
  for (const [field, { value, rule }] of Object.entries(x.effective)) {
    const shown =
      field === "signature_algorithms"
        ? `${(value as { allowed: string[] }).allowed.join(", ")} (default ${(value as { default: string }).default})`
        : Array.isArray(value)
          ? value.length
            ? value.join(", ")
            : "(none)"
          : String(value);
    out(`  ${field.padEnd(21)} ${shown.padEnd(50)} from "${rule}"`);
  }
}

export function registerCryptoPolicyCommands(program: Command): void {
  const cp = program
    .command("crypto-policy")
    .description("crypto policy per namespace, trust domain and coalition: show, apply, explain");

  cp.command("validate")
    .argument("<file>", "crypto policy, JSON or YAML")
    .description("validate a crypto policy file (no server needed)")
    .action((file: string) => {
      const p = readCryptoPolicyFile(file);
      out(
        `valid: ${Object.keys(p.namespaces).length} namespace, ${Object.keys(p.trustDomains).length} trust domain, ` +
          `${Object.keys(p.coalitionRules).length} coalition rules; ${Object.keys(p.coalitions).length} coalitions`,
      );
    });

  withConnection(cp.command("show"))
    .addOption(
      new Option("--format <format>", "text or json (the policy document)")
        .choices(["text", "json"])
        .default("text"),
    )
    .option("--out <file>", "write the JSON policy document to a file (for `qhx tunnel --crypto-policy`)")
    .description("show the crypto policy in force")
    .action(async (o: ConnOpts & { format: string; out?: string }) => {
      const r = await withClient(o, (c) => c.call<ShowAnswer>("GET", "/v1/crypto-policy"));
      const json = `${JSON.stringify(r.policy, null, 2)}\n`;
      if (o.out) {
        writeFileAtomic(path.resolve(o.out), json, 0o644);
        if (o.format !== "json") out(`wrote version ${r.version ?? "(none)"} to ${o.out}`);
      }
      if (o.format === "json") {
        if (!o.out) process.stdout.write(json);
        return;
      }
      out(
        r.version === null
          ? "no crypto policy applied (built-in default: every algorithm, no limits)"
          : `version ${r.version}  ${r.created_at}  digest ${r.digest}${r.comment ? `  (${r.comment})` : ""}`,
      );
      const p = r.policy as {
        trust_domain?: string;
        coalitions: Record<string, string[]>;
        default?: Record<string, unknown>;
        coalition_rules: Record<string, Record<string, unknown>>;
        trust_domains: Record<string, Record<string, unknown>>;
        namespaces: Record<string, Record<string, unknown>>;
      };
      if (p.trust_domain) out(`trust domain: ${p.trust_domain}`);
      for (const [k, v] of Object.entries(p.coalitions)) out(`coalition ${k}: ${v.join(", ")}`);
      const sections: [string, Record<string, unknown>][] = [
        ...Object.entries(p.namespaces).map(
          ([k, r2]) => [`ns:${k}`, r2] as [string, Record<string, unknown>],
        ),
        ...Object.entries(p.trust_domains).map(
          ([k, r2]) => [`td:${k}`, r2] as [string, Record<string, unknown>],
        ),
        ...Object.entries(p.coalition_rules).map(
          ([k, r2]) => [`coalition:${k}`, r2] as [string, Record<string, unknown>],
        ),
        ...(p.default ? [["default", p.default] as [string, Record<string, unknown>]] : []),
      ];
      for (const [name, rule] of sections) {
        out(`rule ${name}`);
        printRule("  ", rule);
      }
    });

  withConnection(cp.command("apply"))
    .argument("<file>", "crypto policy, JSON or YAML")
    .option("--comment <text>", "note stored with the version")
    .option("--expect-version <n>", "fail unless the current version is n (0: none yet)")
    .description("validate and store a new crypto policy version (enforced at the next issuance)")
    .action(async (file: string, o: ConnOpts & { comment?: string; expectVersion?: string }) => {
      // validated here first for a precise local message; the server validates again
      const policy = cryptoPolicyToJson(readCryptoPolicyFile(file));
      const body: Record<string, unknown> = { policy };
      if (o.comment) body.comment = o.comment;
      if (o.expectVersion !== undefined) {
        if (!/^\d+$/.test(o.expectVersion)) throw new ValidationError("must be a number", "--expect-version");
        body.expected_version = Number(o.expectVersion);
      }
      const v = await withClient(o, (c) =>
        c.call<{ version: number; digest: string }>("POST", "/v1/crypto-policy", body),
      );
      out(`applied crypto policy version ${v.version} (digest ${v.digest.slice(0, 16)})`);
    });

  withConnection(cp.command("versions"))
    .description("list crypto policy versions")
    .action(async (o: ConnOpts) => {
      const r = await withClient(o, (c) =>
        c.call<{
          versions: { version: number; created_at: string; comment: string | null; digest: string }[];
        }>("GET", "/v1/crypto-policy/versions"),
      );
      if (r.versions.length === 0) return out("no crypto policy versions");
      for (const v of r.versions) {
        out(
          `${String(v.version).padStart(4)}  ${v.created_at}  ${v.digest.slice(0, 16)}  ${v.comment ?? ""}`,
        );
      }
    });

  withConnection(cp.command("explain"))
    .argument("<spiffe-id>", "the SPIFFE ID to explain")
    .option("--namespace <ns>", "namespace (default: the namespaces of its registration entries)")
    .option("--file <file>", "explain against this policy file instead of a server's")
    .addOption(new Option("--format <format>", "text or json").choices(["text", "json"]).default("text"))
    .description("which rule applies to this SPIFFE ID, field by field, and why")
    .action(async (id: string, o: ConnOpts & { namespace?: string; file?: string; format: string }) => {
      let list: Explanation[];
      if (o.file) {
        if (o.socket || o.dataDir) throw new ValidationError("give --file or a server, not both");
        list = [explain(readCryptoPolicyFile(o.file), id, o.namespace)];
      } else {
        const q = new URLSearchParams({ spiffe_id: id, ...(o.namespace ? { namespace: o.namespace } : {}) });
        list = (
          await withClient(o, (c) =>
            c.call<{ explanations: Explanation[] }>("GET", `/v1/crypto-policy/explain?${q}`),
          )
        ).explanations;
      }
      if (o.format === "json") return out(JSON.stringify(list.length === 1 ? list[0] : list, null, 2));
      list.forEach((x, i) => {
        if (i) out();
        printExplanation(x);
      });
    });
}
