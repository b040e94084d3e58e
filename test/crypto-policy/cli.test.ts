/**
 * `qhx crypto-policy validate|apply|show|versions|explain` as an operator runs them: real `qhx` processes
 * against a real server process (admin socket) and offline on its data directory.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseCryptoPolicy } from "../../host/core/crypto-policy.ts";
import { qhx, startServerProcess, tmpDir } from "../helpers/cli.ts";

const TD = "cli.test";
type Server = Awaited<ReturnType<typeof startServerProcess>>;
let srv: Server;
let dir: string;

const POLICY_YAML = `# payments moves to ML-DSA; the trust domain keeps classical for everyone else
coalitions:
  alliance: [${TD}, partner.test]
coalition_rules:
  alliance:
    tunnel_modes: [pq]
trust_domains:
  ${TD}:
    signature_algorithms: { allowed: [ec-p256, ml-dsa-65], default: ec-p256 }
    max_x509_svid_ttl: 1h
namespaces:
  payments:
    signature_algorithms: { allowed: [ml-dsa-65] }
    min_assurance: key
    releasable_to: ["coalition:alliance"]
`;

beforeAll(async () => {
  srv = await startServerProcess([], TD);
  dir = tmpDir();
  fs.writeFileSync(path.join(dir, "policy.yaml"), POLICY_YAML);
});

afterAll(async () => {
  await srv?.stop();
});

describe("qhx crypto-policy", () => {
  it("validate refuses a bad file with the path of the offending setting", () => {
    const bad = path.join(dir, "bad.yaml");
    fs.writeFileSync(
      bad,
      "namespaces:\n  payments:\n    signature_algorithms: { allowed: [ml-dsa-65], default: ec-p256 }\n",
    );
    const r = qhx(["crypto-policy", "validate", bad]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(
      "qhx: QHX_INVALID_ARGUMENT: namespaces.payments.signature_algorithms.default: ECDSA-P256 is not among the allowed algorithms (ML-DSA-65)\n",
    );
  });

  it("apply, show --format json (round-trips), explain against the server and against a file", () => {
    const a = qhx([
      "crypto-policy",
      "apply",
      path.join(dir, "policy.yaml"),
      "--socket",
      srv.adminSocket,
      "--comment",
      "pq payments",
    ]);
    expect(a.stderr).toBe("");
    expect(a.stdout).toMatch(/^applied crypto policy version 1 \(digest [0-9a-f]{16}\)\n$/);

    const out = path.join(dir, "policy.json");
    const s = qhx(["crypto-policy", "show", "--format", "json", "--out", out, "--socket", srv.adminSocket]);
    expect(s.status).toBe(0);
    const doc = JSON.parse(fs.readFileSync(out, "utf8")) as Record<string, unknown>;
    expect(doc.trust_domain).toBe(TD);
    const model = parseCryptoPolicy(doc);
    expect(model.namespaces.payments?.signatureAlgorithms).toEqual({
      allowed: ["ml-dsa-65"],
      default: "ml-dsa-65",
    });
    expect(model.trustDomains[TD]?.maxX509SvidTtl).toBe(3600);

    const x = qhx([
      "crypto-policy",
      "explain",
      `spiffe://${TD}/pay/api`,
      "--namespace",
      "payments",
      "--socket",
      srv.adminSocket,
    ]);
    expect(x.stderr).toBe("");
    const lines = x.stdout.split("\n");
    expect(lines[0]).toBe(`spiffe://${TD}/pay/api  trust domain ${TD}  namespace payments`);
    expect(x.stdout).toMatch(/applies\s+ns:payments\s+its entry is in namespace "payments"/);
    expect(x.stdout).toMatch(
      /applies\s+coalition:alliance\s+trust domain cli\.test is a member of coalition "alliance"/,
    );
    expect(x.stdout).toMatch(/signature_algorithms\s+ml-dsa-65 \(default ml-dsa-65\)\s+from "ns:payments"/);
    expect(x.stdout).toMatch(/max_x509_svid_ttl\s+1h\s+from "td:cli\.test"/);
    expect(x.stdout).toMatch(/tunnel_modes\s+pq\s+from "coalition:alliance"/);
    expect(x.stdout).toMatch(/min_assurance\s+key\s+from "ns:payments"/);

    // the same question offline, against the file show wrote: same answer
    const f = qhx(["crypto-policy", "explain", `spiffe://${TD}/web`, "--file", out, "--format", "json"]);
    expect(f.stderr).toBe("");
    const j = JSON.parse(f.stdout) as {
      namespace: null;
      effective: Record<string, { value: unknown; rule: string }>;
    };
    expect(j.namespace).toBeNull();
    expect(j.effective.signature_algorithms).toEqual({
      value: { allowed: ["ec-p256", "ml-dsa-65"], default: "ec-p256" },
      rule: `td:${TD}`,
    });
    expect(j.effective.min_assurance).toEqual({ value: "token", rule: "builtin" });
  });

  it("works offline on the data directory: the same version", async () => {
    await srv.stop();
    const show = qhx(["crypto-policy", "show", "--data-dir", srv.dataDir]);
    expect(show.stdout).toMatch(/^version 1 .*\(pq payments\)\n/);
    expect(show.stdout).toContain(
      "rule ns:payments\n  signature_algorithms: ml-dsa-65 (default ml-dsa-65)\n",
    );
  });
});
