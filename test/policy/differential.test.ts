/**
 * Differential tests: the compiled evaluator against cedar-wasm on the same requests. Every request
 * must agree on the decision, the determining policies (reasons) and the erroring policy ids; a
 * request Cedar rejects must be rejected too. Set QHX_LONG_TESTS=1 for the 100,000-request run.
 */
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import { describe, expect, it } from "vitest";
import {
  type CompiledPolicySet,
  compilePolicies,
  freezeEntities,
  QHX_CEDAR_SCHEMA,
} from "../../host/policy/index.ts";
import { Gen, MESH_POLICIES, meshRequest, type Request } from "./gen.ts";

const LONG = process.env.QHX_LONG_TESTS === "1";
const TIMEOUT = LONG ? 1_800_000 : 60_000;
let refCounter = 0;

interface Tally {
  requests: number;
  compiled: number;
  allow: number;
  errored: number;
  rejected: number;
  disagreements: string[];
}

/** Run `reqs` through both engines; the reference preparses the original text (ids policy0…). */
function differential(set: CompiledPolicySet, text: string, reqs: Request[], schema?: string): Tally {
  const psetId = `ref-${++refCounter}`;
  const pre = cedar.preparsePolicySet(psetId, { staticPolicies: text });
  expect(pre.type).toBe("success");
  let schemaName: string | undefined;
  if (schema) {
    schemaName = `ref-schema-${refCounter}`;
    expect(cedar.preparseSchema(schemaName, schema).type).toBe("success");
  }
  const t: Tally = { requests: 0, compiled: 0, allow: 0, errored: 0, rejected: 0, disagreements: [] };
  const before = set.stats.compiled;
  for (const req of reqs) {
    t.requests++;
    const ref = cedar.statefulIsAuthorized({
      ...req,
      preparsedPolicySetId: psetId,
      ...(schemaName ? { preparsedSchemaName: schemaName } : {}),
    } as cedar.StatefulAuthorizationCall);
    let got: ReturnType<CompiledPolicySet["authorize"]> | undefined;
    let thrown: unknown;
    try {
      got = set.authorize(req);
    } catch (e) {
      thrown = e;
    }
    if (ref.type === "failure") {
      t.rejected++;
      if (!thrown) t.disagreements.push(`cedar rejected, we decided: ${JSON.stringify(req)}`);
      continue;
    }
    if (thrown || !got) {
      t.disagreements.push(`we threw ${String(thrown)}: ${JSON.stringify(req)}`);
      continue;
    }
    const want = {
      decision: ref.response.decision,
      reasons: [...ref.response.diagnostics.reason].sort(),
      errors: ref.response.diagnostics.errors.map((e) => e.policyId).sort(),
    };
    const have = {
      decision: got.decision,
      reasons: [...got.reasons].sort(),
      errors: got.errors.map((e) => e.policyId).sort(),
    };
    if (want.decision === "allow") t.allow++;
    if (want.errors.length) t.errored++;
    if (JSON.stringify(want) !== JSON.stringify(have)) {
      if (t.disagreements.length < 5) {
        t.disagreements.push(
          `want ${JSON.stringify(want)} have ${JSON.stringify(have)} for ${JSON.stringify(req)}`,
        );
      } else t.disagreements.push("…");
    }
  }
  t.compiled = set.stats.compiled - before;
  return t;
}

function report(name: string, t: Tally): void {
  process.stdout.write(
    `[differential] ${name}: ${t.requests} requests, ${t.compiled} compiled, ${t.allow} allow, ` +
      `${t.errored} with errors, ${t.rejected} rejected, ${t.disagreements.length} disagreements\n`,
  );
}

describe("differential vs cedar-wasm", () => {
  it(
    "10-policy mesh set (schema-validated)",
    async () => {
      const set = await compilePolicies({ policies: MESH_POLICIES, schema: QHX_CEDAR_SCHEMA });
      expect(set.engine).toBe("compiled");
      const g = new Gen(1);
      // half the requests carry deep-frozen entities shared between requests (the cached encoding path)
      const shared = new Map<string, unknown>();
      const reqs = Array.from({ length: LONG ? 20_000 : 5_000 }, (_, i) => {
        const r = meshRequest(g);
        if (i % 2) {
          r.entities = r.entities.map((e) => {
            const key = JSON.stringify(e);
            if (!shared.has(key)) shared.set(key, freezeEntities(structuredClone(e)));
            return shared.get(key) as typeof e;
          });
        }
        return r;
      });
      const t = differential(set, MESH_POLICIES, reqs, QHX_CEDAR_SCHEMA);
      report("mesh", t);
      expect(t.disagreements).toEqual([]);
      expect(t.rejected).toBe(0);
      expect(t.compiled).toBe(t.requests);
      expect(t.allow).toBeGreaterThan(t.requests / 10);
    },
    TIMEOUT,
  );

  for (const [n, count, longCount, seeds] of [
    [10, 300, 2_000, Array.from({ length: 20 }, (_, i) => 11 + i)],
    [100, 2_000, 10_000, [101, 102, 103, 104]],
    [1_000, 200, 4_000, [1001, 1002]],
  ] as const) {
    it(
      `generated ${n}-policy sets`,
      async () => {
        for (const seed of seeds) {
          const g = new Gen(seed);
          const text = g.policySet(n);
          const set = await compilePolicies({ policies: text });
          expect(set.unsupported).toEqual([]);
          expect(set.engine).toBe("compiled");
          // every third request also deep-frozen and sent twice (the cached encoding path)
          const reqs = Array.from({ length: LONG ? longCount : count }, (_, i) =>
            g.request({ cycles: i % 50 === 0 }),
          ).flatMap((r, i) => (i % 3 === 0 ? [freezeEntities(r), r] : [r]));
          const t = differential(set, text, reqs);
          report(`${n} policies seed ${seed}`, t);
          expect(t.disagreements).toEqual([]);
          // the encoder must handle nearly everything itself, or the test proves little
          expect(t.compiled).toBeGreaterThan(0.9 * (t.requests - t.rejected));
        }
      },
      TIMEOUT,
    );
  }
});
