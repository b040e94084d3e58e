/** compilePolicies: inputs, validation, errors, fallback to cedar-wasm, admission, programs. */
import { describe, expect, it } from "vitest";
import {
  assertIssuanceAllowed,
  authorizeIssuance,
  compilePolicies,
  freezeEntities,
  issuanceRequest,
  QHX_CEDAR_SCHEMA,
  type WorkloadIdentity,
} from "../../host/policy/index.ts";

const W = (id: string) => ({ type: "Workload", id });
const req = (context: Record<string, unknown> = {}, entities: unknown[] = []) => ({
  principal: W("a"),
  action: { type: "Action", id: "connect" },
  resource: { type: "Service", id: "s" },
  context,
  entities: entities as never,
});

async function code(p: Promise<unknown> | (() => unknown)): Promise<string | undefined> {
  try {
    if (typeof p === "function") p();
    else await p;
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe("compilePolicies", () => {
  it("takes Cedar text (ids policy0, policy1, … in source order) or a record of id → text", async () => {
    const text = Array.from(
      { length: 12 },
      (_, i) => `permit(principal, action, resource) when { context.n == ${i} };`,
    ).join("\n");
    const set = await compilePolicies({ policies: text });
    expect(set.engine).toBe("compiled");
    expect(set.policyIds).toEqual(Array.from({ length: 12 }, (_, i) => `policy${i}`));
    expect(set.authorize(req({ n: 10 })).reasons).toEqual(["policy10"]);
    const rec = await compilePolicies({
      policies: {
        allow: "permit(principal, action, resource);",
        block: "forbid(principal, action, resource) when { context.bad };",
      },
    });
    expect(rec.authorize(req({ bad: false }))).toEqual({ decision: "allow", reasons: ["allow"], errors: [] });
    expect(rec.authorize(req({ bad: true }))).toEqual({ decision: "deny", reasons: ["block"], errors: [] });
    const d = rec.authorize(req({}));
    expect(d.decision).toBe("allow");
    expect(d.errors.map((e) => e.policyId)).toEqual(["block"]);
  });

  it("denies by default and reports erroring policies", async () => {
    const set = await compilePolicies({
      policies: "permit(principal, action, resource) when { context.n + 1 > 0 };",
    });
    expect(set.authorize(req({ n: "x" }))).toMatchObject({
      decision: "deny",
      reasons: [],
      errors: [{ policyId: "policy0" }],
    });
    expect(set.authorize(req({ n: 9_007_199_254_740_991 })).decision).toBe("allow");
  });

  it("rejects malformed policies and schema violations with clear errors", async () => {
    expect(await code(compilePolicies({ policies: "permit(principal, action, resource" }))).toBe(
      "QHX_POLICY_PARSE",
    );
    expect(
      await code(
        compilePolicies({
          policies: { a: "permit(principal, action, resource); permit(principal, action, resource);" },
        }),
      ),
    ).toBe("QHX_POLICY_PARSE");
    expect(
      await code(compilePolicies({ policies: "permit(principal == ?principal, action, resource);" })),
    ).toBe("QHX_POLICY_PARSE");
    const bad = `permit(principal is Workload, action == Action::"connect", resource) when { principal.nosuch == 1 };`;
    await expect(compilePolicies({ policies: bad, schema: QHX_CEDAR_SCHEMA })).rejects.toThrow(
      /policy0: .*nosuch/,
    );
    expect(await code(compilePolicies({ policies: bad, schema: "entity {" }))).toBe("QHX_POLICY_SCHEMA");
  });

  it("falls back to cedar-wasm for unsupported constructs, naming them", async () => {
    const set = await compilePolicies({
      policies: `permit(principal, action, resource) when { context.t > datetime("2024-01-01") };
                 permit(principal, action, resource) when { ip(context.s).isIpv4() };`,
    });
    expect(set.engine).toBe("cedar");
    expect(set.unsupported.map((u) => u.construct)).toEqual([
      "extension function datetime()",
      "ip() on a non-literal argument",
    ]);
    const d = set.authorize(req({ t: { __extn: { fn: "datetime", arg: "2025-01-01" } }, s: "10.0.0.1" }));
    expect(d).toEqual({ decision: "allow", reasons: ["policy0", "policy1"], errors: [] });
  });

  it("sends requests it cannot encode exactly to cedar-wasm, and reports invalid ones", async () => {
    const set = await compilePolicies({
      policies: "permit(principal, action, resource) when { context.n == 1 };",
    });
    expect(set.authorize(req({ n: 1 })).decision).toBe("allow");
    expect(set.stats).toEqual({ compiled: 1, cedar: 0 });
    expect(await code(() => set.authorize(req({ n: 1.5 })))).toBe("QHX_POLICY_REQUEST_INVALID");
    expect(await code(() => set.authorize(req({ n: null })))).toBe("QHX_POLICY_REQUEST_INVALID");
    expect(await code(() => set.authorize(req({ x: "\ud800" })))).toBe("QHX_POLICY_REQUEST_INVALID");
    // a hierarchy cycle: Cedar rejects the request
    const cyc = [
      { uid: W("a"), attrs: {}, parents: [W("b")] },
      { uid: W("b"), attrs: {}, parents: [W("a")] },
    ];
    expect(await code(() => set.authorize(req({ n: 1 }, cyc)))).toBe("QHX_POLICY_REQUEST_INVALID");
    expect(set.stats.cedar).toBe(4);
  });

  it("evaluates ip and decimal values from requests", async () => {
    const set = await compilePolicies({
      policies: `permit(principal, action, resource) when { context.src.isInRange(ip("10.0.0.0/8")) && context.r.lessThan(decimal("0.5")) };`,
    });
    const ok = set.authorize(
      req({ src: { __extn: { fn: "ip", arg: "10.1.2.3" } }, r: { __extn: { fn: "decimal", arg: "0.25" } } }),
    );
    expect(ok.decision).toBe("allow");
    const no = set.authorize(
      req({ src: { __extn: { fn: "ip", arg: "11.1.2.3" } }, r: { __extn: { fn: "decimal", arg: "0.25" } } }),
    );
    expect(no.decision).toBe("deny");
    expect(set.stats).toEqual({ compiled: 2, cedar: 0 });
  });

  it("adds the schema's action groups to requests", async () => {
    const set = await compilePolicies({
      policies: `permit(principal is Workload, action in Action::"http", resource);`,
      schema: QHX_CEDAR_SCHEMA,
    });
    const r = {
      principal: W("spiffe://example.org/a"),
      action: { type: "Action", id: "GET" },
      resource: { type: "Service", id: "s" },
      context: { time: 1 },
      entities: [],
    };
    expect(set.authorize(r)).toEqual({ decision: "allow", reasons: ["policy0"], errors: [] });
    expect(set.authorizeWithCedar(r)).toEqual({ decision: "allow", reasons: ["policy0"], errors: [] });
  });

  it("loads a previously compiled program", async () => {
    const policies = { p: `permit(principal, action, resource) when { context.x like "a*" };` };
    const first = await compilePolicies({ policies });
    const program = JSON.parse(JSON.stringify(first.program));
    const again = await compilePolicies({ policies, program });
    expect(again.engine).toBe("compiled");
    expect(again.authorize(req({ x: "abc" })).decision).toBe("allow");
    expect(await code(compilePolicies({ policies: { q: policies.p }, program }))).toBe(
      "QHX_POLICY_PROGRAM_INVALID",
    );
  });
});

describe("admission (action issue)", () => {
  const workload: WorkloadIdentity = {
    spiffeId: "spiffe://example.org/ns/payments/sa/api",
    trustDomain: "example.org",
    path: "/ns/payments/sa/api",
    namespace: "payments",
    labels: { team: "payments" },
    assurance: "hardware",
    selectors: ["k8s:ns:payments"],
  };
  const policies = {
    "issue-ns": `permit(principal is Workload in Namespace::"example.org/payments", action == Action::"issue", resource == TrustDomain::"example.org");`,
    "no-software": `forbid(principal, action == Action::"issue", resource) when { principal.assurance == "software" };`,
  };

  it("allows, and denies naming the deciding policies", async () => {
    const set = await compilePolicies({ policies, schema: QHX_CEDAR_SCHEMA });
    expect(authorizeIssuance(set, { workload, svidType: "x509" })).toEqual({
      decision: "allow",
      reasons: ["issue-ns"],
      errors: [],
    });
    expect(() =>
      assertIssuanceAllowed(set, { workload: { ...workload, assurance: "software" }, svidType: "x509" }),
    ).toThrow(/denied by policy: forbidden by no-software/);
    expect(() =>
      assertIssuanceAllowed(set, { workload: { ...workload, namespace: "web" }, svidType: "jwt" }),
    ).toThrow(expect.objectContaining({ code: "QHX_POLICY_DENIED" }));
    const r = issuanceRequest({ workload, svidType: "jwt", time: 5 });
    expect(r.context).toEqual({ time: 5, svidType: "jwt" });
    expect(set.authorize(r)).toEqual(set.authorizeWithCedar(r));
  });
});

describe("evaluator memory bound", () => {
  it("rebuilds its instance when interned values pile up, deciding the same", async () => {
    const { CompiledEvaluator } = await import("../../host/policy/runtime.ts");
    const set = await compilePolicies({
      policies: `permit(principal, action, resource) when { context.id like "req-*" && principal in Namespace::"ns" };`,
    });
    const ev = new CompiledEvaluator(
      set.program!,
      () => true,
      () => true,
      { interned: 200 },
    );
    for (let i = 0; i < 1000; i++) {
      const r = ev.authorize(
        req({ id: `${i % 2 ? "req" : "xyz"}-${i}` }, [
          { uid: W("a"), attrs: {}, parents: [{ type: "Namespace", id: "ns" }] },
        ]),
      );
      expect(r?.decision).toBe(i % 2 ? "allow" : "deny");
    }
    expect(ev.rebuilds).toBeGreaterThan(2);
  });
});

describe("encoder corner cases", () => {
  it("leaves non-plain objects to cedar-wasm", async () => {
    const set = await compilePolicies({
      policies: `permit(principal, action, resource) when { context.d == "1970-01-01T00:00:00.000Z" };`,
    });
    // a Date serialises as a string for Cedar
    expect(set.authorize(req({ d: new Date(0) as never })).decision).toBe("allow");
    expect(set.stats).toEqual({ compiled: 0, cedar: 1 });
    expect(set.authorize(req({ d: "1970-01-01T00:00:00.000Z" })).decision).toBe("allow");
    expect(set.stats).toEqual({ compiled: 1, cedar: 1 });
  });
});

describe("shared conditions and cached entity tables", () => {
  const E = (id: string, attrs: Record<string, unknown>) => ({ uid: W(id), attrs, parents: [] });
  // decision, reasons and errored policy ids (messages are worded differently by the two engines)
  const norm = (d: { decision: string; reasons: string[]; errors: { policyId: string }[] }) => ({
    decision: d.decision,
    reasons: d.reasons,
    errors: d.errors.map((e) => e.policyId),
  });
  const policies = `
    permit(principal, action, resource) when { principal.n > 1 && context.t };
    forbid(principal, action, resource) when { principal.n > 1 && context.t };
    permit(principal, action, resource) when { principal.n > 1 && context.t && principal.m == 2 };
    permit(principal, action == Action::"connect", resource) when { principal.n > 1 };
  `;

  it("evaluates identical conditions once per request (MEMO nodes), with Cedar's results", async () => {
    const set = await compilePolicies({ policies });
    const memo = set.program!.code.filter((w, i, c) => w === 43 && c[i + 2] === 0).length;
    expect(memo).toBeGreaterThan(0);
    for (const [n, t, m] of [
      [2, true, 2],
      [2, false, 2],
      [0, true, 2],
      ["x", true, 2], // type error in the shared condition: every policy using it errors
      [2, "y", 2],
    ] as const) {
      const r = req({ t }, [E("a", { n, m })]);
      expect(norm(set.authorize(r))).toEqual(norm(set.authorizeWithCedar(r)));
    }
    expect(set.stats.compiled).toBe(5);
    // a program of the previous format (no MEMO nodes) still loads
    const plain = await compilePolicies({
      policies: `permit(principal, action, resource) when { context.t };`,
    });
    const old = { ...plain.program!, format: "qhx-policy-program/1" };
    expect(
      (await compilePolicies({ policies: plain.policyTexts, program: old })).authorize(req({ t: true })),
    ).toMatchObject({ decision: "allow" });
  });

  it("reuses the table of a frozen entity array, and never caches accessors", async () => {
    const set = await compilePolicies({ policies });
    const ents = freezeEntities([E("a", { n: 2, m: 2 })]);
    for (let i = 0; i < 3; i++) {
      expect(norm(set.authorize(req({ t: true }, ents)))).toEqual(
        norm(set.authorizeWithCedar(req({ t: true }, ents))),
      );
    }
    // an accessor element of a frozen array may answer differently each time: decided afresh
    let flip = 0;
    const tricky: unknown[] = [];
    Object.defineProperty(tricky, 0, {
      get: () => E("a", { n: flip++ % 2 ? 0 : 2, m: 2 }),
      enumerable: true,
    });
    Object.freeze(tricky);
    const first = set.authorize(req({ t: true }, tricky));
    const second = set.authorize(req({ t: true }, tricky));
    expect(first.decision).toBe("deny"); // n = 2: the forbid applies
    expect(second.reasons).toEqual([]); // n = 0: nothing applies
  });
});
