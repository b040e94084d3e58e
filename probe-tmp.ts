import { compilePolicies } from "./host/policy/index.ts";
import { Gen, MESH_POLICIES, meshRequest } from "./test/policy/gen.ts";
const set = await compilePolicies({ policies: MESH_POLICIES });
const empty = await compilePolicies({ policies: "permit(principal == Workload::\"zz\", action, resource);" });
const g = new Gen(5);
const reqs = Array.from({ length: 512 }, () => meshRequest(g));
for (const [name, s] of [["mesh", set], ["one-policy", empty]] as const) {
  for (let round = 0; round < 3; round++) {
    const t0 = performance.now();
    const N = 400_000;
    for (let i = 0; i < N; i++) s.authorize(reqs[i & 511]!);
    console.log(name, ((performance.now() - t0) * 1000 / N).toFixed(3), "µs");
  }
}
