/** Policy store (real files), its admin routes, and the `qhx policy` commands (in-process). */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Command } from "commander";
import { afterEach, describe, expect, it, vi } from "vitest";
import { registerPolicyCommands } from "../../host/cli/policy.ts";
import { handlePolicyAdmin } from "../../host/server/admin-policy.ts";
import type { ServerCore } from "../../host/server/core.ts";
import { PolicyStore, verifyPolicyVersion } from "../../host/server/policy-store.ts";

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "qhx-policy-"));

const V1 = `
@id("issue-ns")
permit(principal is Workload in Namespace::"example.org/payments", action == Action::"issue", resource);

@id("no-software")
forbid(principal, action == Action::"issue", resource) when { principal.assurance == "software" };
`;
const V2 =
  V1.replace(`"software"`, `"none"`) +
  `\n@id("connect")\npermit(principal, action == Action::"connect", resource);\n`;

const workload = (assurance: string) => ({
  principal: { type: "Workload", id: "spiffe://example.org/api" },
  action: { type: "Action", id: "issue" },
  resource: { type: "TrustDomain", id: "example.org" },
  context: { time: 1, svidType: "x509" },
  entities: [
    {
      uid: { type: "Workload", id: "spiffe://example.org/api" },
      attrs: {
        spiffeId: "spiffe://example.org/api",
        trustDomain: "example.org",
        path: "/api",
        namespace: "payments",
        assurance,
        selectors: [],
      },
      parents: [{ type: "Namespace", id: "example.org/payments" }],
      tags: {},
    },
  ],
});

describe("PolicyStore", () => {
  it("stores signed, chained versions and verifies them on read", async () => {
    const dir = tmp();
    const store = PolicyStore.open(dir);
    expect(store.get("current")).toBeUndefined();
    const v1 = await store.apply({ policies: V1, comment: "first", now: new Date(0) });
    expect(v1.version).toBe(1);
    expect(Object.keys(v1.policies)).toEqual(["issue-ns", "no-software"]);
    expect(v1.engine).toBe("compiled");
    expect(v1.previous_digest).toBeNull();
    expect(verifyPolicyVersion(v1, store.publicKeyPem)).toBe(true);
    const v2 = await store.apply({ policies: V2, expectedVersion: 1 });
    expect(v2.previous_digest).toBe(v1.digest);
    expect(store.list().map((v) => v.version)).toEqual([1, 2]);
    expect(store.diff(1, 2)).toMatchObject({
      from: 1,
      to: 2,
      added: ["connect"],
      removed: [],
      changed: [{ id: "no-software" }],
    });
    await expect(store.apply({ policies: V2, expectedVersion: 1 })).rejects.toMatchObject({
      code: "QHX_CONFLICT",
    });
    // a reopened store (a restarted server) sees the same history, with the same key
    const again = PolicyStore.open(dir);
    expect(again.get("current")!.digest).toBe(v2.digest);
    const set = await again.policySet();
    expect(set!.engine).toBe("compiled");
    expect(set!.authorize(workload("software")).decision).toBe("allow");
    expect(set!.authorize(workload("none"))).toMatchObject({ decision: "deny", reasons: ["no-software"] });
    // tampering is detected
    const f = path.join(dir, "policy", "versions", "1.json");
    fs.writeFileSync(f, fs.readFileSync(f, "utf8").replace("first", "second"));
    expect(() => again.get(1)).toThrow(expect.objectContaining({ code: "QHX_POLICY_TAMPERED" }));
    expect(verifyPolicyVersion(v2, PolicyStore.open(tmp()).publicKeyPem)).toBe(false);
  });

  it("refuses invalid policies without writing a version", async () => {
    const dir = tmp();
    const store = PolicyStore.open(dir);
    await expect(
      store.apply({ policies: `permit(principal, action, resource) when { principal.nosuch };` }),
    ).rejects.toMatchObject({
      code: "QHX_POLICY_INVALID",
    });
    await expect(store.apply({ policies: "permit(" })).rejects.toMatchObject({ code: "QHX_POLICY_PARSE" });
    expect(store.list()).toEqual([]);
  });

  it("runs test cases", async () => {
    const store = PolicyStore.open(tmp());
    await store.apply({ policies: V1 });
    const r = await store.test([
      { name: "hardware", request: workload("hardware") as never, expect: "allow", reasons: ["issue-ns"] },
      { name: "software", request: workload("software") as never, expect: "allow" },
    ]);
    expect(r.map((x) => x.passed)).toEqual([true, false]);
  });
});

describe("admin routes", () => {
  it("serves validate, apply, list, show, diff, test", async () => {
    const dir = tmp();
    const core = { cfg: { dataDir: dir }, log: { info() {}, error() {} } } as unknown as ServerCore;
    const call = (method: string, p: string, body?: unknown) => {
      const u = new URL(p, "http://x");
      return handlePolicyAdmin(core, { method, path: u.pathname, query: u.searchParams, body });
    };
    expect((await call("POST", "/v1/policies/validate", { policies: V1 }))!.body).toMatchObject({
      ok: true,
      policy_ids: ["issue-ns", "no-software"],
    });
    expect((await call("POST", "/v1/policies/validate", { policies: "permit(" }))!.status).toBe(400);
    expect((await call("GET", "/v1/policies/current"))!.status).toBe(404);
    expect((await call("POST", "/v1/policies", { policies: V1, comment: "c" }))!).toMatchObject({
      status: 201,
      body: { version: 1 },
    });
    expect((await call("POST", "/v1/policies", { policies: V2, expected_version: 0 }))!.status).toBe(409);
    expect((await call("POST", "/v1/policies", { policies: V2 }))!.status).toBe(201);
    expect((await call("GET", "/v1/policies"))!.body).toMatchObject({
      versions: [{ version: 1, comment: "c" }, { version: 2 }],
    });
    expect((await call("GET", "/v1/policies/1"))!.body).toMatchObject({
      version: 1,
      signature: { alg: "ed25519" },
    });
    expect((await call("GET", "/v1/policies/diff"))!.body).toMatchObject({
      from: 1,
      to: 2,
      added: ["connect"],
    });
    const t = await call("POST", "/v1/policies/test", {
      tests: { tests: [{ request: workload("none"), expect: "deny", reasons: ["no-software"] }] },
    });
    expect(t!.body).toMatchObject({ passed: 1, failed: 0 });
    expect((await call("GET", "/v1/policies/public-key"))!.body).toMatchObject({ alg: "ed25519" });
  });
});

describe("qhx policy (CLI)", () => {
  let lines: string[] = [];
  afterEach(() => vi.restoreAllMocks());
  async function run(...args: string[]): Promise<string> {
    lines = [];
    vi.spyOn(process.stdout, "write").mockImplementation((s) => {
      lines.push(String(s));
      return true;
    });
    const program = new Command().exitOverride();
    registerPolicyCommands(program);
    try {
      await program.parseAsync(["node", "qhx", "policy", ...args]);
    } finally {
      vi.restoreAllMocks();
    }
    return lines.join("");
  }

  it("validate, apply, list, show, diff, test on a data directory", async () => {
    const dir = tmp();
    const f1 = path.join(dir, "v1.cedar");
    const f2 = path.join(dir, "v2.cedar");
    const tests = path.join(dir, "tests.json");
    fs.writeFileSync(f1, V1);
    fs.writeFileSync(f2, V2);
    fs.writeFileSync(
      tests,
      JSON.stringify({ tests: [{ name: "sw", request: workload("software"), expect: "deny" }] }),
    );
    const data = path.join(dir, "data");
    fs.mkdirSync(data);
    expect(await run("validate", f1)).toMatch(
      /valid: 2 policies \(issue-ns, no-software\)\nengine: compiled/,
    );
    expect(await run("apply", f1, "--data-dir", data, "--comment", "one")).toMatch(
      /applied version 1 \(compiled/,
    );
    expect(await run("apply", f2, "--data-dir", data, "--expect-version", "1")).toMatch(/applied version 2/);
    expect(await run("list", "--data-dir", data)).toMatch(/1 .* 2 policies .*one/);
    expect(await run("show", "1", "--data-dir", data)).toMatch(
      /\/\/ no-software\n@id\("no-software"\)\nforbid/,
    );
    expect(await run("diff", "--data-dir", data)).toMatch(/diff 1 -> 2\n\+ connect\n~ no-software/);
    expect(await run("diff", "--file", f1, "--data-dir", data)).toMatch(/- connect/);
    expect(await run("test", tests, "--version", "1", "--data-dir", data)).toMatch(
      /PASS {2}sw: expected deny, got deny \[no-software\]/,
    );
    expect(await run("test", tests, "--data-dir", data)).toMatch(/FAIL {2}sw/);
    process.exitCode = 0;
    expect(await run("test", tests, "--policies", f1)).toMatch(/1 passed, 0 failed/);
    await expect(run("apply", f2, "--data-dir", data, "--expect-version", "1")).rejects.toMatchObject({
      code: "QHX_CONFLICT",
    });
  });
});

describe("distribution (PolicyHolder)", () => {
  it("verifies, installs and swaps signed versions; refuses tampering and rollback", async () => {
    const { PolicyHolder } = await import("../../host/policy/distribution.ts");
    const store = PolicyStore.open(tmp());
    const v1 = await store.apply({ policies: V1 });
    const v2 = await store.apply({ policies: V2 });
    const h = new PolicyHolder(store.publicKeyPem);
    expect(() => h.authorize(workload("none"))).toThrow(
      expect.objectContaining({ code: "QHX_POLICY_UNAVAILABLE" }),
    );
    expect(await h.update(JSON.parse(JSON.stringify(v1)))).toBe(true);
    expect(h.authorize(workload("none")).decision).toBe("allow");
    const forged = {
      ...v2,
      policies: { ...v2.policies, "no-software": "permit(principal, action, resource);" },
    };
    await expect(h.update(forged)).rejects.toMatchObject({ code: "QHX_POLICY_TAMPERED" });
    expect(await h.update(v2)).toBe(true);
    expect(h.version).toMatchObject({ version: 2, engine: "compiled" });
    expect(h.authorize(workload("none"))).toMatchObject({ decision: "deny", reasons: ["no-software"] });
    expect(await h.update(v2)).toBe(false);
    await expect(h.update(v1)).rejects.toMatchObject({ code: "QHX_POLICY_ROLLBACK" });
  });
});

describe("workloadIdentityFromEntry", () => {
  it("maps a registration entry for admission", async () => {
    const { workloadIdentityFromEntry } = await import("../../host/server/admin-policy.ts");
    expect(
      workloadIdentityFromEntry(
        {
          spiffeId: "spiffe://example.org/ns/payments/sa/api",
          namespace: "payments",
          labels: { team: "x" },
          selectors: [{ type: "k8s", value: "ns:payments" }],
        },
        { assurance: "hardware" },
      ),
    ).toEqual({
      spiffeId: "spiffe://example.org/ns/payments/sa/api",
      trustDomain: "example.org",
      path: "/ns/payments/sa/api",
      namespace: "payments",
      labels: { team: "x" },
      selectors: ["k8s:ns:payments"],
      assurance: "hardware",
    });
  });
});
