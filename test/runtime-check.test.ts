import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
// @ts-expect-error plain JavaScript module
import { checkRuntime } from "../bin/runtime-check.js";
import { ROOT } from "./helpers/cli.ts";

describe("runtime check", () => {
  it("accepts Node 24 with OpenSSL 3.5 and newer", () => {
    expect(checkRuntime({ node: "24.21.0", openssl: "3.5.8" })).toBeNull();
    expect(checkRuntime({ node: "25.1.0", openssl: "3.6.0" })).toBeNull();
    expect(checkRuntime({ node: "24.0.0", openssl: "4.0.0" })).toBeNull();
  });

  it("refuses older Node with one line saying how to fix it", () => {
    const msg = checkRuntime({ node: "20.20.2", openssl: "3.0.19" }) as string;
    expect(msg).toMatch(/Node\.js >= 24 \(this is 20\.20\.2\)/);
    expect(msg).toMatch(/npm ci/);
    expect(msg).not.toContain("\n");
    expect(checkRuntime({ node: "22.9.0", openssl: "3.5.0" })).toMatch(/Node\.js >= 24/);
  });

  it("refuses an OpenSSL older than 3.5 even on Node 24", () => {
    expect(checkRuntime({ node: "24.1.0", openssl: "3.0.15+quic" })).toMatch(/OpenSSL >= 3\.5.*3\.0\.15/);
    expect(checkRuntime({ node: "24.1.0", openssl: "3.4.1" })).toMatch(/OpenSSL >= 3\.5/);
    expect(checkRuntime({ node: "24.1.0" })).toMatch(/no OpenSSL/);
  });

  it("refuses garbage versions", () => {
    expect(checkRuntime({ node: "banana" })).toMatch(/Node\.js >= 24/);
    expect(checkRuntime(undefined)).toMatch(/Node\.js >= 24/);
  });

  it("this test run itself is on Node 24 with OpenSSL 3.5", () => {
    expect(checkRuntime(process.versions)).toBeNull();
  });

  // The machine's own Node (20 here) must get the one-line refusal from the real entry point.
  const systemNode = ["/usr/bin/node", "/usr/local/bin/node"].find((p) => fs.existsSync(p));
  const systemMajor = systemNode
    ? Number(
        spawnSync(systemNode, ["-p", "process.versions.node.split('.')[0]"], {
          encoding: "utf8",
        }).stdout.trim(),
      )
    : 0;
  it.skipIf(!systemNode || systemMajor >= 24)(
    "bin/qhx.js exits 1 with one line under the system's older Node",
    () => {
      const r = spawnSync(systemNode!, [path.join(ROOT, "bin/qhx.js"), "--version"], { encoding: "utf8" });
      expect(r.status).toBe(1);
      const lines = r.stderr.trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^qhx: qhx needs Node\.js >= 24 \(this is 20\./);
    },
  );
});
