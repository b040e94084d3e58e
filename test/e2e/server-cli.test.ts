/**
 * End to end: a real `qhx server start` process, driven by real `qhx` CLI processes over its admin socket
 * and offline on its data directory; certificates checked by Debian's openssl.
 */
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSpiffeBundle } from "../../host/core/bundle.ts";
import { fromPem } from "../../host/core/pem.ts";
import { verifyX509Svid } from "../../host/core/x509-verify.ts";
import { qhx, qhxSpawn, startServerProcess, tmpDir } from "../helpers/cli.ts";

type Server = Awaited<ReturnType<typeof startServerProcess>>;
let srv: Server;
const TD = "example.org";
const PARENT = `spiffe://${TD}/qhx/agent/join_token/node-1`;

beforeAll(async () => {
  srv = await startServerProcess();
});

afterAll(async () => {
  await srv?.stop();
});

const sock = () => ["--socket", srv.adminSocket];

describe("qhx server + CLI over the admin socket", () => {
  it("serves health, readiness, metrics and the bundle on the TCP listener", async () => {
    expect((await fetch(`http://${srv.healthListen}/healthz`)).status).toBe(200);
    expect((await fetch(`http://${srv.healthListen}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`http://${srv.healthListen}/metrics`)).text();
    expect(metrics).toMatch(/qhx_bundle_sequence 1/);
    expect(metrics).toMatch(/qhx_process_/);
    const bundle = (await (await fetch(`http://${srv.healthListen}/bundle`)).json()) as {
      spiffe_sequence: number;
    };
    expect(bundle.spiffe_sequence).toBe(1);
    expect((await fetch(`http://${srv.healthListen}/nope`)).status).toBe(404);
    expect(qhx(["server", "healthcheck", ...sock()]).status).toBe(0);
    expect(qhx(["server", "healthcheck", "--address", srv.healthListen]).status).toBe(0);
    const down = qhx(["server", "healthcheck", "--socket", path.join(srv.dir, "nope.sock")]);
    expect(down.status).toBe(1);
    expect(down.stderr).toMatch(/QHX_UNAVAILABLE: cannot reach the server's admin socket/);
  });

  it("admin socket is mode 0600", () => {
    expect(fs.statSync(srv.adminSocket).mode & 0o777).toBe(0o600);
  });

  it("creates, lists, shows, updates and deletes registration entries", () => {
    const c = qhx([
      "entry",
      "create",
      ...sock(),
      "--spiffe-id",
      `spiffe://${TD}/ns/prod/web`,
      "--parent-id",
      PARENT,
      "--selector",
      "unix:uid:1000",
      "--selector",
      "unix:path:/usr/bin/web",
      "--namespace",
      "prod",
      "--label",
      "app=web",
      "--x509-svid-ttl",
      "30m",
      "--dns-name",
      "web.example.org",
    ]);
    expect(c.stderr).toBe("");
    expect(c.status).toBe(0);
    const id = /Entry ID\s+: (\S+)/.exec(c.stdout)![1]!;
    expect(c.stdout).toMatch(/X509-SVID TTL\s+: 1800/);

    const list = JSON.parse(
      qhx(["entry", "list", ...sock(), "--selector", "unix:uid:1000", "-o", "json"]).stdout,
    );
    expect(list.map((e: { id: string }) => e.id)).toContain(id);
    expect(
      JSON.parse(qhx(["entry", "list", ...sock(), "--namespace", "other", "-o", "json"]).stdout),
    ).toEqual([]);

    const shown = JSON.parse(qhx(["entry", "show", id, ...sock(), "-o", "json"]).stdout);
    expect(shown).toMatchObject({
      spiffe_id: `spiffe://${TD}/ns/prod/web`,
      namespace: "prod",
      labels: { app: "web" },
      revision: 1,
    });

    const up = qhx(["entry", "update", id, ...sock(), "--label", "tier=gold", "--revision", "1"]);
    expect(up.status).toBe(0);
    expect(up.stdout).toMatch(/Revision\s+: 2/);
    const stale = qhx(["entry", "update", id, ...sock(), "--label", "tier=silver", "--revision", "1"]);
    expect(stale.status).toBe(1);
    expect(stale.stderr).toMatch(/QHX_CONFLICT/);

    const dup = qhx([
      "entry",
      "create",
      ...sock(),
      "--spiffe-id",
      `spiffe://${TD}/ns/prod/web`,
      "--parent-id",
      PARENT,
      "--selector",
      "unix:path:/usr/bin/web",
      "--selector",
      "unix:uid:1000",
    ]);
    expect(dup.status).toBe(1);
    expect(dup.stderr).toMatch(/QHX_ALREADY_EXISTS/);

    expect(qhx(["entry", "delete", id, ...sock()]).status).toBe(0);
    const gone = qhx(["entry", "show", id, ...sock()]);
    expect(gone.status).toBe(1);
    expect(gone.stderr).toMatch(/QHX_NOT_FOUND/);
  });

  it("rejects bad entries with precise one-line errors", () => {
    const bad = qhx([
      "entry",
      "create",
      ...sock(),
      "--spiffe-id",
      "spiffe://Example.org/x",
      "--parent-id",
      PARENT,
      "--selector",
      "unix:uid:1",
    ]);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    expect(bad.stderr).toMatch(/spiffe_id/);
    const other = qhx([
      "entry",
      "create",
      ...sock(),
      "--spiffe-id",
      "spiffe://other.org/x",
      "--parent-id",
      PARENT,
      "--selector",
      "unix:uid:1",
    ]);
    expect(other.stderr).toMatch(/spiffe_id.*trust domain/);
    const nosel = qhx([
      "entry",
      "create",
      ...sock(),
      "--spiffe-id",
      `spiffe://${TD}/x`,
      "--parent-id",
      PARENT,
    ]);
    expect(nosel.status).toBe(1);
    expect(nosel.stderr).toMatch(/selectors/);
    const badttl = qhx([
      "entry",
      "create",
      ...sock(),
      "--spiffe-id",
      `spiffe://${TD}/x`,
      "--parent-id",
      PARENT,
      "--selector",
      "a:b",
      "--x509-svid-ttl",
      "soon",
    ]);
    expect(badttl.stderr).toMatch(/x509_svid_ttl: invalid duration/);
  });

  it("generates single-use join tokens", () => {
    const r = qhx(["token", "generate", ...sock(), "--ttl", "5m"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Expires at: \d{4}-.*\nToken: [A-Za-z0-9_-]{32}\n$/);
  });

  it("mints a P-256 X509-SVID whose chain openssl verifies and whose extensions openssl shows", () => {
    const out = path.join(srv.dir, "svid-p256");
    const r = qhx([
      "svid",
      "mint",
      ...sock(),
      "--spiffe-id",
      `spiffe://${TD}/ns/prod/web`,
      "--ttl",
      "10m",
      "--out",
      out,
    ]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(fs.statSync(path.join(out, "svid.key")).mode & 0o777).toBe(0o600);
    const key = crypto.createPrivateKey(fs.readFileSync(path.join(out, "svid.key")));
    const leaf = new crypto.X509Certificate(fs.readFileSync(path.join(out, "svid.pem")));
    expect(leaf.checkPrivateKey(key)).toBe(true);
    const verify = execFileSync(
      "openssl",
      ["verify", "-CAfile", path.join(out, "bundle.pem"), path.join(out, "svid.pem")],
      {
        encoding: "utf8",
      },
    );
    expect(verify).toMatch(/: OK/);
    const text = execFileSync("openssl", ["x509", "-in", path.join(out, "svid.pem"), "-noout", "-text"], {
      encoding: "utf8",
    });
    expect(text).toContain(`URI:spiffe://${TD}/ns/prod/web`);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature/);
    expect(text).toMatch(/TLS Web Server Authentication, TLS Web Client Authentication/);
  });

  it("mints an ML-DSA-65 X509-SVID verified by OpenSSL 3.5 and by the QHx verifier", () => {
    const out = path.join(srv.dir, "svid-mldsa");
    const r = qhx([
      "svid",
      "mint",
      ...sock(),
      "--spiffe-id",
      `spiffe://${TD}/pq`,
      "--alg",
      "ml-dsa-65",
      "--out",
      out,
    ]);
    expect(r.status).toBe(0);
    const chain = fromPem(fs.readFileSync(path.join(out, "svid.pem"), "utf8"));
    const roots = fromPem(fs.readFileSync(path.join(out, "bundle.pem"), "utf8"));
    const leaf = new crypto.X509Certificate(chain[0]!);
    expect(leaf.publicKey.asymmetricKeyType).toBe("ml-dsa-65");
    expect(leaf.verify(new crypto.X509Certificate(roots[0]!).publicKey)).toBe(true);
    const bundle = { trustDomain: TD, x509Authorities: roots, jwtAuthorities: [], sequence: 1 };
    expect(verifyX509Svid(chain, new Map([[TD, bundle]]), new Date()).spiffeId.toString()).toBe(
      `spiffe://${TD}/pq`,
    );
  });

  it("refuses to mint for another trust domain or with an unknown algorithm", () => {
    const out = path.join(srv.dir, "nope");
    const r = qhx(["svid", "mint", ...sock(), "--spiffe-id", "spiffe://other.org/x", "--out", out]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/QHX_WRONG_TRUST_DOMAIN/);
    const a = qhx([
      "svid",
      "mint",
      ...sock(),
      "--spiffe-id",
      `spiffe://${TD}/x`,
      "--alg",
      "rsa-512",
      "--out",
      out,
    ]);
    expect(a.stderr).toMatch(/QHX_UNSUPPORTED_ALGORITHM.*hint: use one of/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it("mints JWT-SVIDs that `qhx jwt verify` accepts, and rejects wrong audience and tampering", () => {
    const bundleFile = path.join(srv.dir, "bundle.json");
    const b = qhx(["bundle", "show", ...sock(), "--format", "spiffe"]);
    expect(b.status).toBe(0);
    fs.writeFileSync(bundleFile, b.stdout);
    expect(parseSpiffeBundle(b.stdout, TD).jwtAuthorities).toHaveLength(1);
    const pem = qhx(["bundle", "show", ...sock()]);
    expect(pem.stdout).toMatch(/^-----BEGIN CERTIFICATE-----/);

    const m = qhx([
      "jwt",
      "mint",
      ...sock(),
      "--spiffe-id",
      `spiffe://${TD}/web`,
      "--audience",
      "spiffe://example.org/db",
    ]);
    expect(m.status).toBe(0);
    const token = m.stdout.trim();
    const ok = qhx(["jwt", "verify", token, "--audience", "spiffe://example.org/db", "--bundle", bundleFile]);
    expect(ok.stderr).toBe("");
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/^valid: spiffe:\/\/example\.org\/web \(alg ES256/);
    const stdin = qhx(
      ["jwt", "verify", "-", "--audience", "spiffe://example.org/db", "--bundle", bundleFile],
      { input: token },
    );
    expect(stdin.status).toBe(0);

    const aud = qhx(["jwt", "verify", token, "--audience", "someone-else", "--bundle", bundleFile]);
    expect(aud.status).toBe(1);
    expect(aud.stderr).toMatch(/QHX_JWT_AUDIENCE/);
    const [h, p, s] = token.split(".");
    const claims = JSON.parse(Buffer.from(p!, "base64url").toString());
    claims.sub = `spiffe://${TD}/admin`;
    const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${s}`;
    const t = qhx(["jwt", "verify", forged, "--audience", "spiffe://example.org/db", "--bundle", bundleFile]);
    expect(t.status).toBe(1);
    expect(t.stderr).toMatch(/QHX_JWT_BAD_SIGNATURE/);
  });

  it("refuses a second server on the same admin socket", () => {
    const r = qhx([
      "server",
      "start",
      "--trust-domain",
      TD,
      "--data-dir",
      path.join(srv.dir, "other"),
      "--admin-socket",
      srv.adminSocket,
      "--listen",
      "127.0.0.1:0",
    ]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/QHX_ADDRESS_IN_USE/);
  });

  it("logs JSON and never logs key material or tokens", async () => {
    // the CLI runs via spawnSync, which blocks this process: let the server's stdout drain first
    await new Promise((r) => setTimeout(r, 200));
    expect(srv.logs.length).toBeGreaterThan(3);
    const all = JSON.stringify(srv.logs);
    expect(all).not.toMatch(/PRIVATE KEY/);
    expect(srv.logs.some((l) => l.msg === "X509-SVID issued")).toBe(true);
  });
});

describe("qhx id check", () => {
  it("prints normalized valid IDs and exits 0", () => {
    const r = qhx(["id", "check", "spiffe://example.org/a/b", "spiffe://example.org"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("spiffe://example.org/a/b\nspiffe://example.org\n");
  });
  it("prints invalid: CODE: reason on stderr and exits 1", () => {
    const r = qhx(["id", "check", "spiffe://example.org/ok", "spiffe://example.org/a/../b", "http://x"]);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe("spiffe://example.org/ok\n");
    const lines = r.stderr.trim().split("\n");
    expect(lines[0]).toMatch(/^invalid: SPIFFE_ID_DOT_SEGMENT: /);
    expect(lines[1]).toMatch(/^invalid: SPIFFE_ID_WRONG_SCHEME: /);
  });
});

describe("offline --data-dir mode and server life cycle", () => {
  it("initializes a data dir, works on it offline, and a server started on it serves the same CA", async () => {
    const dir = tmpDir();
    const dataDir = path.join(dir, "data");
    const init = qhx([
      "server",
      "init",
      "--trust-domain",
      "offline.test",
      "--data-dir",
      dataDir,
      "--ca-key-type",
      "ml-dsa-44",
    ]);
    expect(init.stderr).toBe("");
    expect(init.status).toBe(0);
    const bundleBefore = qhx(["bundle", "show", "--data-dir", dataDir]).stdout;
    const c = qhx([
      "entry",
      "create",
      "--data-dir",
      dataDir,
      "--spiffe-id",
      "spiffe://offline.test/w",
      "--parent-id",
      "spiffe://offline.test/qhx/agent/x509pop/n",
      "--selector",
      "unix:uid:0",
    ]);
    expect(c.status).toBe(0);
    const out = path.join(dir, "svid");
    expect(
      qhx(["svid", "mint", "--data-dir", dataDir, "--spiffe-id", "spiffe://offline.test/w", "--out", out])
        .status,
    ).toBe(0);

    // now a server on the same data directory
    const child = qhxSpawn([
      "server",
      "start",
      "--trust-domain",
      "offline.test",
      "--data-dir",
      dataDir,
      "--listen",
      "127.0.0.1:0",
      "--health-listen",
      "127.0.0.1:0",
    ]);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on("data", (b: Buffer) => b.toString().includes("server started") && resolve());
      child.once("exit", (code) => reject(new Error(`exit ${code}`)));
    });
    const sockPath = path.join(dataDir, "admin.sock");
    expect(qhx(["bundle", "show", "--socket", sockPath]).stdout).toBe(bundleBefore);
    const list = JSON.parse(qhx(["entry", "list", "--socket", sockPath, "-o", "json"]).stdout);
    expect(list).toHaveLength(1);
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(fs.existsSync(sockPath)).toBe(false);
  });

  it("refuses a data dir of another trust domain, a non-QHx directory and bad flags", () => {
    const dir = tmpDir();
    const dataDir = path.join(dir, "data");
    expect(qhx(["server", "init", "--trust-domain", "a.test", "--data-dir", dataDir]).status).toBe(0);
    const r = qhx(["server", "init", "--trust-domain", "b.test", "--data-dir", dataDir]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/QHX_TRUST_DOMAIN_MISMATCH/);
    fs.writeFileSync(path.join(dir, "junk.txt"), "x");
    const j = qhx(["server", "init", "--trust-domain", "a.test", "--data-dir", dir]);
    expect(j.stderr).toMatch(/QHX_DATA_DIR_NOT_EMPTY/);
    const off = qhx(["entry", "list", "--data-dir", path.join(dir, "nothing")]);
    expect(off.stderr).toMatch(/QHX_NOT_A_DATA_DIR.*hint: initialize it/);
    const noServer = qhx(["entry", "list"], { env: { QHX_ADMIN_SOCKET: "" } });
    expect(noServer.stderr).toMatch(/no server given/);
    const badTd = qhx(["server", "start", "--trust-domain", "Bad_TD!", "--data-dir", dataDir]);
    expect(badTd.status).toBe(1);
    expect(badTd.stderr).toMatch(/QHX_INVALID_CONFIG: flags: trust_domain: invalid trust domain/);
    const cfg = path.join(dir, "server.yaml");
    fs.writeFileSync(cfg, "trust_domain: a.test\ndata_dir: data\nca:\n  ttl: eventually\n");
    const badCfg = qhx(["server", "start", "--config", cfg]);
    expect(badCfg.stderr).toMatch(/server\.yaml: ca\.ttl: invalid duration "eventually"/);
  });

  it("exits 0 on SIGTERM and removes its socket", async () => {
    const s = await startServerProcess();
    expect(fs.existsSync(s.adminSocket)).toBe(true);
    expect(await s.stop("SIGTERM")).toBe(0);
    expect(fs.existsSync(s.adminSocket)).toBe(false);
    expect(s.logs.some((l) => l.msg === "server stopped")).toBe(true);
  });
});
