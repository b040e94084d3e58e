/**
 * Cedar's public integration tests (github.com/cedar-policy/cedar-integration-tests), when a checkout is
 * given: QHX_CEDAR_INTEGRATION_DIR=/path/to/cedar-integration-tests (with corpus-tests.tar.gz unpacked
 * into corpus-tests/ for the corpus; QHX_CEDAR_INTEGRATION_LIMIT=n caps the number of test files).
 *
 * For every request: the compiled evaluator must agree with cedar-wasm on the same input (decision,
 * reasons, errored policy ids, or both rejecting it); agreement with the recorded expectations is counted
 * too. Our request path does not apply the schema to entity data (Cedar's tests do), so a recorded
 * expectation can legitimately differ when an entity file relies on schema-based parsing.
 */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { compilePolicies, type PolicyDecision, type PolicyRequest } from "../../host/policy/index.ts";

const DIR = process.env.QHX_CEDAR_INTEGRATION_DIR;
const LIMIT = Number(process.env.QHX_CEDAR_INTEGRATION_LIMIT ?? "100000");

interface IntegrationTest {
  policies: string;
  entities: string;
  schema: string;
  shouldValidate: boolean;
  requests: (PolicyRequest & { description: string; decision: string; reason: string[]; errors: string[] })[];
}

function testFiles(dir: string): string[] {
  const out: string[] = [];
  for (const sub of ["tests", "corpus-tests"]) {
    const root = path.join(dir, sub);
    if (!fs.existsSync(root)) continue;
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith(".json") && !e.name.endsWith(".entities.json")) out.push(p);
      }
    };
    walk(root);
  }
  return out.sort().slice(0, LIMIT);
}

const norm = (d: PolicyDecision) => ({
  decision: d.decision,
  reasons: [...d.reasons].sort(),
  errors: d.errors.map((e) => e.policyId).sort(),
});

describe.skipIf(!DIR)("Cedar integration tests", () => {
  it("agree with cedar-wasm on every request", async () => {
    const t = {
      files: 0,
      compiledSets: 0,
      requests: 0,
      compiled: 0,
      agreeCedar: 0,
      agreeExpected: 0,
      skipped: 0,
    };
    const disagreements: string[] = [];
    for (const file of testFiles(DIR!)) {
      const spec = JSON.parse(fs.readFileSync(file, "utf8")) as IntegrationTest;
      const read = (p: string) => fs.readFileSync(path.join(DIR!, p), "utf8");
      let set;
      try {
        const schema = read(spec.schema);
        set = await compilePolicies({
          policies: read(spec.policies),
          ...(spec.shouldValidate ? { schema } : {}),
        });
      } catch {
        t.skipped++; // does not parse/validate: nothing to compare
        continue;
      }
      t.files++;
      if (set.engine === "compiled") t.compiledSets++;
      const entities = JSON.parse(read(spec.entities));
      for (const r of spec.requests) {
        t.requests++;
        const req = {
          principal: r.principal,
          action: r.action,
          resource: r.resource,
          context: r.context,
          entities,
        };
        const before = set.stats.compiled;
        let ours: unknown, ref: unknown;
        try {
          ours = norm(set.authorize(req));
        } catch (e) {
          ours = `rejected ${(e as { code?: string }).code}`;
        }
        if (set.stats.compiled > before) t.compiled++;
        try {
          ref = norm(set.authorizeWithCedar(req));
        } catch (e) {
          ref = `rejected ${(e as { code?: string }).code}`;
        }
        if (JSON.stringify(ours) === JSON.stringify(ref)) t.agreeCedar++;
        else if (disagreements.length < 10)
          disagreements.push(`${file} ${r.description}: ${JSON.stringify(ours)} vs ${JSON.stringify(ref)}`);
        const want = { decision: r.decision, reasons: [...r.reason].sort(), errors: [...r.errors].sort() };
        if (JSON.stringify(ours) === JSON.stringify(want)) t.agreeExpected++;
      }
    }
    process.stdout.write(`[cedar-integration] ${JSON.stringify(t)}\n`);
    expect(disagreements).toEqual([]);
    expect(t.agreeCedar).toBe(t.requests);
  }, 1_800_000);
});
