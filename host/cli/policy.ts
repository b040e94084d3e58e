/**
 * `qhx policy …`: Cedar policy sets in the server's policy store. Register with
 * `registerPolicyCommands(program)`.
 *
 *   qhx policy validate FILE [--schema FILE]        parse + strict schema validation + compile (local)
 *   qhx policy apply FILE [--comment T] [--expect-version N]
 *   qhx policy list | show [VERSION] | diff [FROM] [TO] [--file FILE]
 *   qhx policy test FILE [--version N] [--policies FILE]
 *
 * FILE: Cedar text (.cedar; policies named by @id annotations, else policy<N>) or JSON (id → text).
 * Server commands take --socket PATH (running server) or --data-dir DIR (offline, on the store files).
 */
import fs from "node:fs";
import type { Command } from "commander";
import { QhxError, ValidationError } from "../core/errors.ts";
import { compilePolicies, policiesFromText, QHX_CEDAR_SCHEMA } from "../policy/index.ts";
import { handlePolicyAdmin } from "../server/admin-policy.ts";
import type { ServerCore } from "../server/core.ts";
import { parsePolicyTests, type PolicyTestResult, runPolicyTests } from "../server/policy-store.ts";
import {
  type AdminClient,
  type ConnectionOptions as ConnOpts,
  withClient as withAdminClient,
  withConnection,
} from "./client.ts";

function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

/** Offline: the policy routes on a data directory's store files, without starting a server. */
class LocalPolicyClient implements AdminClient {
  private readonly core: ServerCore;
  constructor(dataDir: string) {
    if (!fs.existsSync(dataDir)) throw new QhxError("QHX_NOT_A_DATA_DIR", `${dataDir} does not exist`);
    // the policy routes use only the data directory and the logger
    this.core = { cfg: { dataDir }, log: { info() {}, error() {} } } as unknown as ServerCore;
  }
  async call<T>(method: string, p: string, body?: unknown): Promise<T> {
    const url = new URL(p, "http://local");
    const r = await handlePolicyAdmin(this.core, {
      method,
      path: url.pathname,
      query: url.searchParams,
      body,
    });
    if (!r) throw new QhxError("QHX_NOT_FOUND", `no such endpoint: ${method} ${url.pathname}`);
    if (r.status >= 400) {
      const err = (r.body as { error?: { code?: string; message?: string; hint?: string } }).error;
      throw new QhxError(err?.code ?? `HTTP_${r.status}`, err?.message ?? `status ${r.status}`, {
        ...(err?.hint ? { hint: err.hint } : {}),
      });
    }
    return r.body as T;
  }
  async close(): Promise<void> {}
}

function withClient<T>(o: ConnOpts, fn: (c: AdminClient) => Promise<T>): Promise<T> {
  return withAdminClient(o, fn, (dir) => new LocalPolicyClient(dir));
}

/** A policy file: JSON (object id → text, or { policies: … }) or Cedar text. Returns id → text. */
export function readPolicyFile(file: string): Record<string, string> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new QhxError("QHX_FILE_UNREADABLE", `cannot read ${file}: ${(e as Error).message}`);
  }
  if (file.endsWith(".json")) {
    let j: unknown;
    try {
      j = JSON.parse(text);
    } catch (e) {
      throw new ValidationError(`${file} is not JSON: ${(e as Error).message}`);
    }
    const p = (j as { policies?: unknown })?.policies ?? j;
    if (typeof p === "string") return policiesFromText(p);
    if (
      !p ||
      typeof p !== "object" ||
      Array.isArray(p) ||
      !Object.values(p).every((v) => typeof v === "string")
    ) {
      throw new ValidationError(`${file}: expected an object of policy id → Cedar text`);
    }
    return p as Record<string, string>;
  }
  return policiesFromText(text);
}

function readJsonFile(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new ValidationError(`cannot read JSON from ${file}: ${(e as Error).message}`);
  }
}

function printResults(results: PolicyTestResult[]): boolean {
  for (const r of results) {
    const got = r.error ? `error: ${r.error}` : `${r.decision!.decision} [${r.decision!.reasons.join(", ")}]`;
    out(`${r.passed ? "PASS" : "FAIL"}  ${r.name}: expected ${r.expected}, got ${got}`);
  }
  const failed = results.filter((r) => !r.passed).length;
  out();
  out(`${results.length - failed} passed, ${failed} failed`);
  return failed === 0;
}

interface VersionDoc {
  version: number;
  created_at: string;
  comment: string | null;
  digest: string;
  engine: string;
  policies: Record<string, string>;
  unsupported?: { policyId: string; construct: string }[];
}

export function registerPolicyCommands(program: Command): void {
  const policy = program.command("policy").description("Cedar policies: validate, apply, history, tests");

  policy
    .command("validate")
    .argument("<file>", "policies: Cedar text (.cedar) or JSON (id → text)")
    .option("--schema <file>", "Cedar schema (default: the QHx schema)")
    .description("parse, validate strictly against the schema and compile (no server needed)")
    .action(async (file: string, o: { schema?: string }) => {
      const schema = o.schema ? fs.readFileSync(o.schema, "utf8") : QHX_CEDAR_SCHEMA;
      const set = await compilePolicies({ policies: readPolicyFile(file), schema });
      out(`valid: ${set.policyIds.length} policies (${set.policyIds.join(", ")})`);
      out(`engine: ${set.engine}`);
      for (const u of set.unsupported) out(`  ${u.policyId}: ${u.construct} (evaluated by cedar-wasm)`);
    });

  withConnection(policy.command("apply"))
    .argument("<file>", "policies: Cedar text (.cedar) or JSON (id → text)")
    .option("--comment <text>", "note stored with the version")
    .option("--expect-version <n>", "fail unless the current version is n (0: none yet)")
    .description("validate, compile, sign and store a new policy version")
    .action(async (file: string, o: ConnOpts & { comment?: string; expectVersion?: string }) => {
      const body: Record<string, unknown> = { policies: readPolicyFile(file) };
      if (o.comment) body.comment = o.comment;
      if (o.expectVersion !== undefined) {
        if (!/^\d+$/.test(o.expectVersion)) throw new ValidationError("must be a number", "expect-version");
        body.expected_version = Number(o.expectVersion);
      }
      const v = await withClient(o, (c) => c.call<VersionDoc>("POST", "/v1/policies", body));
      out(`applied version ${v.version} (${v.engine}, digest ${v.digest.slice(0, 16)})`);
    });

  withConnection(policy.command("list"))
    .option("-o, --output <format>", "text|json", "text")
    .description("list policy versions")
    .action(async (o: ConnOpts & { output: string }) => {
      const r = await withClient(o, (c) => c.call<{ versions: VersionDoc[] }>("GET", "/v1/policies"));
      if (o.output === "json") return out(JSON.stringify(r.versions, null, 2));
      if (r.versions.length === 0) return out("no policy versions (admission not enforced)");
      for (const v of r.versions) {
        out(
          `${String(v.version).padStart(4)}  ${v.created_at}  ${String(v.policies).padStart(4)} policies  ${v.engine.padEnd(8)}  ${v.comment ?? ""}`,
        );
      }
    });

  withConnection(policy.command("show"))
    .argument("[version]", "version number (default: current)")
    .option("-o, --output <format>", "text|json", "text")
    .description("show a policy version")
    .action(async (version: string | undefined, o: ConnOpts & { output: string }) => {
      const v = await withClient(o, (c) =>
        c.call<VersionDoc>("GET", `/v1/policies/${encodeURIComponent(version ?? "current")}`),
      );
      if (o.output === "json") return out(JSON.stringify(v, null, 2));
      out(`version ${v.version}  ${v.created_at}  ${v.engine}  digest ${v.digest}`);
      if (v.comment) out(`comment: ${v.comment}`);
      for (const u of v.unsupported ?? []) out(`unsupported (cedar-wasm): ${u.policyId}: ${u.construct}`);
      out();
      for (const [id, text] of Object.entries(v.policies)) {
        out(`// ${id}`);
        out(text);
        out();
      }
    });

  withConnection(policy.command("diff"))
    .argument("[from]", "version (default: the one before <to>; 'none' for empty)")
    .argument("[to]", "version (default: current)")
    .option("--file <file>", "compare a local policy file against the current version instead")
    .description("show added, removed and changed policies between versions")
    .action(async (from: string | undefined, to: string | undefined, o: ConnOpts & { file?: string }) => {
      let d: {
        from: number | null;
        to: number | null;
        added: string[];
        removed: string[];
        changed: { id: string; before: string; after: string }[];
      };
      if (o.file) {
        const local = readPolicyFile(o.file);
        const cur = await withClient(o, (c) =>
          c.call<VersionDoc>("GET", "/v1/policies/current").catch((e: QhxError) => {
            if (e.code === "QHX_NOT_FOUND") return undefined;
            throw e;
          }),
        );
        const base = cur?.policies ?? {};
        d = {
          from: cur?.version ?? null,
          to: null,
          added: Object.keys(local).filter((k) => !(k in base)),
          removed: Object.keys(base).filter((k) => !(k in local)),
          changed: Object.keys(local)
            .filter((k) => k in base && base[k] !== local[k])
            .map((id) => ({ id, before: base[id]!, after: local[id]! })),
        };
      } else {
        const q = new URLSearchParams();
        if (from) q.set("from", from);
        if (to) q.set("to", to);
        d = await withClient(o, (c) => c.call("GET", `/v1/policies/diff?${q}`));
      }
      out(`diff ${d.from ?? "(none)"} -> ${d.to ?? o.file ?? "(none)"}`);
      for (const id of d.added) out(`+ ${id}`);
      for (const id of d.removed) out(`- ${id}`);
      for (const c of d.changed) {
        out(`~ ${c.id}`);
        out(`  - ${c.before.replaceAll("\n", "\n    ")}`);
        out(`  + ${c.after.replaceAll("\n", "\n    ")}`);
      }
      if (!d.added.length && !d.removed.length && !d.changed.length) out("no differences");
    });

  withConnection(policy.command("test"))
    .argument(
      "<file>",
      'JSON: { "tests": [{ "name", "request": {principal, action, resource, context, entities}, "expect": "allow"|"deny", "reasons"? }] }',
    )
    .option("--version <n>", "policy version to test (default: current)")
    .option("--policies <file>", "test a local policy file instead (no server needed)")
    .description("run requests with expected decisions; exits 1 on any failure")
    .action(async (file: string, o: ConnOpts & { version?: string; policies?: string }) => {
      const tests = parsePolicyTests(readJsonFile(file));
      let results: PolicyTestResult[];
      if (o.policies) {
        const set = await compilePolicies({ policies: readPolicyFile(o.policies), schema: QHX_CEDAR_SCHEMA });
        results = runPolicyTests(set, tests);
      } else {
        const r = await withClient(o, (c) =>
          c.call<{ results: PolicyTestResult[] }>("POST", "/v1/policies/test", {
            tests,
            ...(o.version ? { version: o.version } : {}),
          }),
        );
        results = r.results;
      }
      if (!printResults(results)) process.exitCode = 1;
    });
}
