/**
 * The evaluator's scope index (assembly/policy/index.ts, setProgram/authorize): a policy whose scope
 * names its principal, resource or action with `in <entity>` is skipped without evaluating its body when
 * that test is false, but only where skipping cannot change the answer: the test must come before
 * anything that can error. Every case is decided by the compiled program and by cedar-wasm, which must
 * agree on the decision, the determining policies and the policies that errored; and the same policies
 * run through the qhx_authz filter.
 */
import { describe, expect, it } from "vitest";
import { compilePolicies, type PolicyRequest, QHX_CEDAR_SCHEMA } from "../../host/policy/index.ts";
import { API, OTHER, configFor, plugin, reason, request } from "./helpers.ts";

const ent = (type: string, id: string, parents: { type: string; id: string }[] = [], attrs = {}) => ({
  uid: { type, id },
  attrs,
  parents,
});
const NS_A = { type: "Namespace", id: "a" };
const NS_B = { type: "Namespace", id: "b" };
const SVC = { type: "Service", id: "s" };

function req(principal: string, parents: { type: string; id: string }[], context = {}): PolicyRequest {
  return {
    principal: { type: "Workload", id: principal },
    action: { type: "Action", id: "GET" },
    resource: { type: "Route", id: "r" },
    context,
    entities: [
      ent("Workload", principal, parents),
      ent("Namespace", "a"),
      ent("Namespace", "b", [NS_A]),
      ent("Route", "r", [SVC]),
      ent("Service", "s"),
      ent("Action", "GET", [{ type: "Action", id: "http" }]),
      ent("Action", "http"),
    ] as never,
  };
}

const POLICIES = {
  // indexed on the principal: applies to members of a (directly or through b)
  "p-in-a": `permit(principal in Namespace::"a", action, resource);`,
  // indexed on the resource
  "f-svc": `forbid(principal, action, resource in Service::"s") when { context has stop && context.stop };`,
  // indexed on the action (a set of actions is not indexed, but cannot error either)
  "p-http": `permit(principal, action in Action::"http", resource) when { context has go && context.go };`,
  "p-set": `permit(principal, action in [Action::"GET", Action::"PUT"], resource in Service::"s") when { context has set && context.set };`,
  // the condition errors (no attribute x) before its `in` test: never skipped, the error is reported
  "err-first": `forbid(principal, action, resource) when { context.x > 1 && principal in Namespace::"a" };`,
  // the `in` test in the condition, after a scope that cannot error: a valid index
  "in-when": `forbid(principal, action, resource) when { principal in Namespace::"b" && context has block };`,
};

describe("scope index", () => {
  it("skips exactly the policies whose `in` test is false, and reports the same errors as cedar-wasm", async () => {
    const set = await compilePolicies({ policies: POLICIES });
    expect(set.engine).toBe("compiled");
    const cases: PolicyRequest[] = [
      req("w1", [NS_A]), // in a directly
      req("w2", [NS_B]), // in a through b
      req("w3", []), // in nothing
      req("w4", [NS_B], { block: true }),
      req("w5", [], { go: true }),
      req("w6", [], { set: true, stop: true }),
      req("w7", [NS_A], { x: 5 }), // err-first applies: forbid
      req("w8", [], { x: 0 }),
    ];
    // the same decision, determining policies and erroring policies (the messages are each engine's own)
    const view = (d: ReturnType<typeof set.authorize>) => ({ ...d, errors: d.errors.map((e) => e.policyId) });
    cases.forEach((r, i) => {
      const ours = view(set.authorize(r));
      const cedar = view(set.authorizeWithCedar(r));
      expect({ i, ...ours }).toEqual({ i, ...cedar });
    });
    // err-first errors wherever context.x is absent, whether or not the principal is in a
    const noX = set.authorize(req("w3", []));
    expect(noX.errors.map((e) => e.policyId)).toEqual(["err-first"]);
    expect(noX.decision).toBe("deny");
    expect(set.authorize(req("w2", [NS_B])).reasons).toEqual(["p-in-a"]);
    expect(set.authorize(req("w4", [NS_B], { block: true }))).toMatchObject({
      decision: "deny",
      reasons: ["in-when"],
    });
    expect(set.authorize(req("w7", [NS_A], { x: 5 }))).toMatchObject({
      decision: "deny",
      reasons: ["err-first"],
    });
  });

  it("a configuration swap re-derives the index (the filter decides with the new policies)", async () => {
    const only = (ns: string) =>
      compilePolicies({
        policies: { [`in-${ns}`]: `permit(principal in Namespace::"example.org/${ns}", action, resource);` },
        schema: QHX_CEDAR_SCHEMA,
      });
    const p = plugin(await configFor({ policy: await only("web") }));
    // OTHER is in web (directory), API in payments (its Istio-style path)
    expect(request(p, { peer: OTHER }).localResponse).toBeUndefined();
    expect(reason(request(p, { peer: API }))).toBe("denied: no policy permits the request");
    expect(p.configure(await configFor({ policy: await only("payments") }))).toBe(true);
    expect(request(p, { peer: API }).localResponse).toBeUndefined();
    expect(reason(request(p, { peer: OTHER }))).toBe("denied: no policy permits the request");
    expect(p.failed).toBe(false);
  });
});
