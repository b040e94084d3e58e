/**
 * The server's policy store: versioned, signed Cedar policy sets with history.
 *
 * Storage: one immutable JSON file per version under `<data dir>/policy/versions/<n>.json`, created
 * with O_EXCL after an atomic write of its content (tmp + fsync + rename-free link via `wx`), so a
 * version is never overwritten and two writers cannot both create version n. Files rather than a
 * datastore table: versions are write-once documents read whole, the history is inspectable and
 * backed up with the data directory, and no migration has to be coordinated with the datastore.
 *
 * Each version holds the policies (id → Cedar text), the schema they were validated against
 * (strictly, by cedar-wasm), the compiled decision program (or null when the set needs cedar-wasm),
 * the digest of the previous version (a hash chain), and an Ed25519 signature by the server's policy
 * signing key (`<data dir>/policy/signing-key.pem`, created on first use) over the canonical JSON of
 * everything else. Agents verify it with `verifyPolicyVersion` before swapping sets.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { NotFoundError, QhxError, ValidationError } from "../core/errors.ts";
import {
  digestOf,
  POLICY_VERSION_FORMAT,
  type PolicyVersion,
  signedContent,
  verifyPolicyVersion,
} from "../policy/signed.ts";
import {
  type CompiledPolicySet,
  compilePolicies,
  type PolicyDecision,
  type PolicyRequest,
  policiesFromText,
  QHX_CEDAR_SCHEMA,
} from "../policy/index.ts";

export { canonicalJson, POLICY_VERSION_FORMAT, verifyPolicyVersion } from "../policy/signed.ts";
export type { PolicySignature, PolicyVersion } from "../policy/signed.ts";

export interface PolicyVersionSummary {
  version: number;
  created_at: string;
  comment: string | null;
  digest: string;
  policies: number;
  engine: "compiled" | "cedar";
}

export interface PolicyDiff {
  from: number | null;
  to: number | null;
  added: string[];
  removed: string[];
  changed: { id: string; before: string; after: string }[];
}

export interface PolicyTestCase {
  name?: string;
  request: PolicyRequest;
  expect: "allow" | "deny";
  /** When given, the determining policies must be exactly these (any order). */
  reasons?: string[];
}

export interface PolicyTestResult {
  name: string;
  passed: boolean;
  expected: "allow" | "deny";
  decision?: PolicyDecision;
  error?: string;
}

function writeExclusive(file: string, data: string): void {
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`;
  const fd = fs.openSync(tmp, "wx", 0o600);
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    // link fails if `file` exists: a version is never replaced
    fs.linkSync(tmp, file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") {
      throw new QhxError("QHX_CONFLICT", `policy version ${path.basename(file, ".json")} already exists`, {
        hint: "another apply won the race; list versions and retry",
      });
    }
    throw e;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  const dfd = fs.openSync(path.dirname(file), "r");
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

/** Cedar text becomes a record named by `@id` annotations (else policy<N>); records pass through. */
function normalizePolicies(p: unknown): Record<string, string> {
  if (typeof p === "string") return policiesFromText(p);
  if (p && typeof p === "object" && !Array.isArray(p)) {
    for (const [k, v] of Object.entries(p)) {
      if (typeof v !== "string") throw new ValidationError(`policy ${k} must be Cedar text`, "policies");
    }
    return p as Record<string, string>;
  }
  throw new ValidationError("must be Cedar text or an object of policy id → text", "policies");
}

export class PolicyStore {
  readonly dir: string;
  private readonly key: crypto.KeyObject;
  readonly publicKeyPem: string;
  readonly kid: string;
  private cached: { version: number; set: CompiledPolicySet } | undefined;

  private constructor(dir: string, key: crypto.KeyObject) {
    this.dir = dir;
    this.key = key;
    this.publicKeyPem = crypto.createPublicKey(key).export({ type: "spki", format: "pem" }) as string;
    this.kid = crypto
      .createHash("sha256")
      .update(crypto.createPublicKey(key).export({ type: "spki", format: "der" }))
      .digest("hex")
      .slice(0, 16);
  }

  /** Open (creating if needed) the store under `<dataDir>/policy`. */
  static open(dataDir: string): PolicyStore {
    const dir = path.join(dataDir, "policy");
    fs.mkdirSync(path.join(dir, "versions"), { recursive: true, mode: 0o700 });
    const keyFile = path.join(dir, "signing-key.pem");
    if (!fs.existsSync(keyFile)) {
      const { privateKey } = crypto.generateKeyPairSync("ed25519");
      try {
        writeExclusive(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }) as string);
      } catch (e) {
        if ((e as QhxError).code !== "QHX_CONFLICT") throw e; // created concurrently: use that one
      }
    }
    let key: crypto.KeyObject;
    try {
      key = crypto.createPrivateKey(fs.readFileSync(keyFile));
    } catch (e) {
      throw new QhxError("QHX_KEY_INVALID", `policy signing key ${keyFile} is unreadable`, { cause: e });
    }
    return new PolicyStore(dir, key);
  }

  private file(version: number): string {
    return path.join(this.dir, "versions", `${version}.json`);
  }

  private versionNumbers(): number[] {
    return fs
      .readdirSync(path.join(this.dir, "versions"))
      .map((f) => /^(\d+)\.json$/.exec(f)?.[1])
      .filter((x): x is string => x !== undefined)
      .map(Number)
      .sort((a, b) => a - b);
  }

  /** A version (verified), or undefined when there is none. "current" is the latest. */
  get(version: number | "current"): PolicyVersion | undefined {
    const n = version === "current" ? this.versionNumbers().at(-1) : version;
    if (n === undefined || !fs.existsSync(this.file(n))) return undefined;
    const v = JSON.parse(fs.readFileSync(this.file(n), "utf8")) as PolicyVersion;
    if (v.version !== n || !verifyPolicyVersion(v, this.publicKeyPem)) {
      throw new QhxError("QHX_POLICY_TAMPERED", `policy version ${n} fails signature verification`, {
        hint: `inspect ${this.file(n)}`,
      });
    }
    return v;
  }

  list(): PolicyVersionSummary[] {
    return this.versionNumbers().map((n) => {
      const v = this.get(n)!;
      return {
        version: v.version,
        created_at: v.created_at,
        comment: v.comment,
        digest: v.digest,
        policies: Object.keys(v.policies).length,
        engine: v.engine,
      };
    });
  }

  /** Parse, validate (strict, against `schema` or the QHx schema) and compile, without storing. */
  async check(input: { policies: unknown; schema?: string }): Promise<CompiledPolicySet> {
    return compilePolicies({
      policies: normalizePolicies(input.policies),
      schema: input.schema ?? QHX_CEDAR_SCHEMA,
    });
  }

  /** Validate, compile, sign and store a new version. `expectedVersion`: the current one (optimistic lock). */
  async apply(input: {
    policies: unknown;
    schema?: string;
    comment?: string;
    expectedVersion?: number;
    now?: Date;
  }): Promise<PolicyVersion> {
    const schema = input.schema ?? QHX_CEDAR_SCHEMA;
    const set = await this.check({ policies: input.policies, schema });
    const prev = this.get("current");
    if (input.expectedVersion !== undefined && (prev?.version ?? 0) !== input.expectedVersion) {
      throw new QhxError(
        "QHX_CONFLICT",
        `current policy version is ${prev?.version ?? 0}, not ${input.expectedVersion}`,
      );
    }
    const body: Omit<PolicyVersion, "digest" | "signature"> = {
      format: POLICY_VERSION_FORMAT,
      version: (prev?.version ?? 0) + 1,
      created_at: (input.now ?? new Date()).toISOString(),
      comment: input.comment ?? null,
      previous_digest: prev?.digest ?? null,
      policies: { ...set.policyTexts },
      schema,
      engine: set.engine,
      unsupported: [...set.unsupported],
      program: set.program ?? null,
    };
    const v = { ...body, digest: digestOf(body) } as PolicyVersion;
    v.signature = {
      alg: "ed25519",
      kid: this.kid,
      value: crypto.sign(null, signedContent(v), this.key).toString("base64"),
    };
    writeExclusive(this.file(v.version), `${JSON.stringify(v, null, 2)}\n`);
    this.cached = { version: v.version, set };
    return v;
  }

  /** The compiled set of a version (default: current), from its stored program. */
  async policySet(version: number | "current" = "current"): Promise<CompiledPolicySet | undefined> {
    const v = this.get(version);
    if (!v) return undefined;
    if (this.cached?.version === v.version) return this.cached.set;
    const set = await compilePolicies({
      policies: v.policies,
      ...(v.program ? { program: v.program } : { engine: "cedar" as const }),
    });
    if (version === "current") this.cached = { version: v.version, set };
    return set;
  }

  diff(from: number | "current" | null, to: number | "current"): PolicyDiff {
    const a = from === null ? undefined : this.get(from);
    const b = this.get(to);
    if (from !== null && from !== "current" && !a) throw new NotFoundError("policy version", String(from));
    if (to !== "current" && !b) throw new NotFoundError("policy version", String(to));
    const pa = a?.policies ?? {};
    const pb = b?.policies ?? {};
    return {
      from: a?.version ?? null,
      to: b?.version ?? null,
      added: Object.keys(pb).filter((k) => !(k in pa)),
      removed: Object.keys(pa).filter((k) => !(k in pb)),
      changed: Object.keys(pb)
        .filter((k) => k in pa && pa[k] !== pb[k])
        .map((id) => ({ id, before: pa[id]!, after: pb[id]! })),
    };
  }

  /** Run test cases against a version (default current) or against an unsaved set. */
  async test(
    cases: PolicyTestCase[],
    target: number | "current" | CompiledPolicySet = "current",
  ): Promise<PolicyTestResult[]> {
    const set = typeof target === "object" ? target : await this.policySet(target);
    if (!set) throw new NotFoundError("policy version", String(target));
    return runPolicyTests(set, cases);
  }
}

/** Parse a test file's content: `{ "tests": [...] }` or a bare array of cases. */
export function parsePolicyTests(json: unknown): PolicyTestCase[] {
  const list = Array.isArray(json) ? json : (json as { tests?: unknown })?.tests;
  if (!Array.isArray(list))
    throw new ValidationError('must be a list of cases or { "tests": [...] }', "tests");
  return list.map((c, i) => {
    const t = c as Partial<PolicyTestCase>;
    if (!t || typeof t !== "object" || !t.request || typeof t.request !== "object") {
      throw new ValidationError("needs a request object", `tests[${i}]`);
    }
    if (t.expect !== "allow" && t.expect !== "deny") {
      throw new ValidationError('expect must be "allow" or "deny"', `tests[${i}]`);
    }
    if (
      t.reasons !== undefined &&
      !(Array.isArray(t.reasons) && t.reasons.every((r) => typeof r === "string"))
    ) {
      throw new ValidationError("reasons must be a list of policy ids", `tests[${i}]`);
    }
    return t as PolicyTestCase;
  });
}

export function runPolicyTests(set: CompiledPolicySet, cases: PolicyTestCase[]): PolicyTestResult[] {
  return cases.map((c, i) => {
    const name = c.name ?? `test ${i + 1}`;
    try {
      const d = set.authorize(c.request);
      const reasonsOk =
        c.reasons === undefined || [...c.reasons].sort().join("\0") === [...d.reasons].sort().join("\0");
      return { name, passed: d.decision === c.expect && reasonsOk, expected: c.expect, decision: d };
    } catch (e) {
      return { name, passed: false, expected: c.expect, error: (e as Error).message };
    }
  });
}
