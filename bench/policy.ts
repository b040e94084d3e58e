/**
 * Policy decisions: µs per decision for the compiled evaluator (host/policy, build/qhx-policy.wasm)
 * against cedar-wasm `statefulIsAuthorized` with the policy set preparsed, on the same requests, at
 * 10, 100 and 1,000 policies. Two families: the QHx mesh set (scaled by copying it per namespace:
 * realistic scopes, 8-entity requests) and randomly generated sets (every supported construct, random
 * entity graphs: a worst case). Goal: ≤ 2 µs per decision at 100 policies.
 */
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import { type CompiledPolicySet, compilePolicies } from "../host/policy/index.ts";
import { Gen, MESH_POLICIES, meshRequest, type Request } from "../test/policy/gen.ts";
import { fmt, opsPerSec, table } from "./harness.ts";

function scaledMesh(n: number): string {
  const copies = Math.max(1, Math.round(n / 10));
  let text = "";
  for (let k = 0; k < copies; k++) {
    text += k === 0 ? MESH_POLICIES : MESH_POLICIES.replaceAll("payments", `payments${k}`);
  }
  return text;
}

async function measure(
  label: string,
  text: string,
  reqs: Request[],
): Promise<{ row: string[]; us: number; set: CompiledPolicySet }> {
  const set = await compilePolicies({ policies: text });
  const psetId = `bench-${label}`;
  cedar.preparsePolicySet(psetId, { staticPolicies: text });
  let i = 0;
  const compiledOps = await opsPerSec(() => set.authorize(reqs[i++ % reqs.length]!), 1500);
  let j = 0;
  const cedarOps = await opsPerSec(
    () =>
      cedar.statefulIsAuthorized({
        ...reqs[j++ % reqs.length]!,
        preparsedPolicySetId: psetId,
      } as cedar.StatefulAuthorizationCall),
    1500,
  );
  const us = 1e6 / compiledOps;
  const cus = 1e6 / cedarOps;
  return {
    set,
    us,
    row: [label, set.engine, us.toFixed(2), cus.toFixed(1), `${fmt(cus / us)}x`, fmt(compiledOps)],
  };
}

export async function run(): Promise<void> {
  process.stdout.write(`Node ${process.versions.node}, cedar-wasm ${cedar.getCedarVersion()}, one core\n\n`);
  const rows: string[][] = [["policy set", "engine", "compiled µs", "cedar µs", "speed-up", "decisions/s"]];
  let goal = NaN;
  for (const n of [10, 100, 1000]) {
    const g = new Gen(7 + n);
    const reqs = Array.from({ length: 512 }, () => meshRequest(g));
    const m = await measure(`mesh ${n}`, scaledMesh(n), reqs);
    if (n === 100) goal = m.us;
    rows.push(m.row);
  }
  for (const n of [10, 100, 1000]) {
    const g = new Gen(3 + n);
    const text = g.policySet(n);
    const reqs = Array.from({ length: 512 }, () => g.request());
    rows.push((await measure(`generated ${n}`, text, reqs)).row);
  }
  process.stdout.write(`${table(rows)}\n\n`);
  process.stdout.write(
    `goal: <= 2 µs per decision at 100 policies (mesh): ${goal.toFixed(2)} µs ${goal <= 2 ? "MET" : "NOT MET"}\n`,
  );
}
