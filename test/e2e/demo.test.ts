/** `npx qhx demo` through the installed entry point (bin/qhx.js → dist/), as a user runs it. */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "../helpers/cli.ts";

const built = fs.existsSync(path.join(ROOT, "dist/host/cli/main.js"));

describe("qhx demo", () => {
  it.runIf(built || process.env.CI)("runs the whole job end to end and reports success", () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, "bin/qhx.js"), "demo"], {
      encoding: "utf8",
      timeout: 120_000,
    });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/X509-SVID \(ml-dsa-65 key\) issued and verified/);
    expect(r.stdout).toMatch(/tampered X509-SVID rejected .*QHX_SVID_BAD_SIGNATURE/);
    expect(r.stdout).toMatch(/server stopped on SIGTERM \(exit code 0\)/);
    expect(r.stdout).toMatch(/agent attested its node \(join token\) over TLS 1\.3 .*assurance token/);
    expect(r.stdout).toMatch(/this process fetched its X509-SVID from the Workload API .*assurance token/);
    expect(r.stdout).toMatch(/agent stopped on SIGTERM \(exit code 0\)/);
    expect(r.stdout).toMatch(/tunnel mtls: .*group X25519MLKEM768/);
    expect(r.stdout).toMatch(/tunnel pq: .*group X25519MLKEM768.*\(ml-dsa-65\) → server .*\(ml-dsa-65\)/);
    expect(r.stdout).toMatch(/receipts verified offline, with every QHx process stopped .*4\/4 verified/);
    expect(r.stdout).toMatch(/\n18 passed, 0 failed\n$/);
  });

  it.runIf(built || process.env.CI)("bin/qhx.js prints help and version", () => {
    const v = spawnSync(process.execPath, [path.join(ROOT, "bin/qhx.js"), "--version"], { encoding: "utf8" });
    expect(v.stdout.trim()).toBe("0.1.0");
    const h = spawnSync(process.execPath, [path.join(ROOT, "bin/qhx.js"), "svid", "mint", "--help"], {
      encoding: "utf8",
    });
    expect(h.stdout).toMatch(/--spiffe-id <id>/);
    expect(h.stdout).toMatch(/Example:/);
  });
});
