import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { mergeConfig, parseServerConfig, readConfigFile } from "../host/server/config.ts";
import { tmpDir } from "./helpers/cli.ts";

const base = { trust_domain: "example.org", data_dir: "/tmp/qhx-x" };

function err(raw: unknown): string {
  try {
    parseServerConfig(raw, "server.yaml");
  } catch (e) {
    expect((e as { code: string }).code).toBe("QHX_INVALID_CONFIG");
    return (e as Error).message;
  }
  throw new Error("config was accepted");
}

describe("server config", () => {
  it("fills safe defaults", () => {
    const c = parseServerConfig(base);
    expect(c.trustDomain).toBe("example.org");
    expect(c.listen).toEqual({ host: "127.0.0.1", port: 8081 });
    expect(c.adminSocket).toBe("/tmp/qhx-x/admin.sock");
    expect(c.ca.keyType).toBe("ec-p256");
    expect(c.ca.ttlMs).toBe(7 * 86_400_000);
    expect(c.jwtKeyType).toBe("ec-p256");
    expect(c.defaultX509SvidTtlMs).toBe(3_600_000);
    expect(c.defaultJwtSvidTtlMs).toBe(300_000);
    expect(c.keyManager).toBe("disk");
    expect(c.logLevel).toBe("info");
  });

  it("accepts every CA algorithm and an upstream CA", () => {
    for (const a of ["ec-p256", "ec-p384", "ed25519", "ml-dsa-44", "ml-dsa-65", "ml-dsa-87"]) {
      expect(parseServerConfig({ ...base, ca: { key_type: a } }).ca.keyType).toBe(a);
    }
    const c = parseServerConfig({
      ...base,
      ca: { upstream: { cert_file: "a.pem", key_file: "a.key" }, ttl: "2d" },
    });
    expect(c.ca.upstream).toEqual({ certFile: "a.pem", keyFile: "a.key" });
    expect(c.ca.ttlMs).toBe(2 * 86_400_000);
  });

  it("accepts a trust domain given as spiffe://", () => {
    expect(parseServerConfig({ ...base, trust_domain: "spiffe://example.org" }).trustDomain).toBe(
      "example.org",
    );
  });

  it("names the offending setting precisely", () => {
    expect(err({ data_dir: "/x" })).toMatch(/trust_domain/);
    expect(err({ ...base, trust_domain: "Example.ORG" })).toMatch(
      /trust_domain: invalid trust domain "Example.ORG"/,
    );
    expect(err({ ...base, trust_domain: "example.org/path" })).toMatch(/trust_domain: invalid trust domain/);
    expect(err({ ...base, listen: "8081" })).toMatch(/listen: expected HOST:PORT/);
    expect(err({ ...base, ca: { ttl: "forever" } })).toMatch(/ca\.ttl: invalid duration "forever"/);
    expect(err({ ...base, ca: { key_type: "rsa-1024" } })).toMatch(/ca\.key_type/);
    expect(err({ ...base, ca: { ttl: "1h", colour: "blue" } })).toMatch(/ca: unknown key\(s\) colour/);
    expect(err({ ...base, typo_key: 1 })).toMatch(/unknown key\(s\) typo_key/);
    expect(err({ ...base, default_x509_svid_ttl: -5 })).toMatch(/default_x509_svid_ttl/);
    expect(err({ ...base, log_level: "loud" })).toMatch(/log_level/);
    expect(err({ ...base, key_manager: "hsm" })).toMatch(/key_manager/);
    expect(err({ ...base, ca: { upstream: { cert_file: "a.pem" } } })).toMatch(/ca\.upstream\.key_file/);
  });

  it("reads YAML and JSON files, and reports syntax errors and missing files", () => {
    const dir = tmpDir();
    const y = path.join(dir, "server.yaml");
    fs.writeFileSync(y, "trust_domain: example.org\ndata_dir: /tmp/d\nca:\n  key_type: ml-dsa-65\n");
    expect(parseServerConfig(readConfigFile(y)).ca.keyType).toBe("ml-dsa-65");
    const j = path.join(dir, "server.json");
    fs.writeFileSync(j, JSON.stringify(base));
    expect(parseServerConfig(readConfigFile(j)).trustDomain).toBe("example.org");
    const bad = path.join(dir, "bad.yaml");
    fs.writeFileSync(bad, "trust_domain: [unclosed\n");
    expect(() => readConfigFile(bad)).toThrow(/bad\.yaml/);
    const dup = path.join(dir, "dup.yaml");
    fs.writeFileSync(dup, "trust_domain: a.org\ntrust_domain: b.org\n");
    expect(() => readConfigFile(dup)).toThrow(/dup\.yaml/);
    const list = path.join(dir, "list.yaml");
    fs.writeFileSync(list, "- a\n- b\n");
    expect(() => readConfigFile(list)).toThrow(/mapping/);
    expect(() => readConfigFile(path.join(dir, "missing.yaml"))).toThrow(/cannot read config file .*ENOENT/);
    fs.rmSync(dir, { recursive: true });
  });

  it("lets flags override the file, including nested settings", () => {
    const merged = mergeConfig(
      { ...base, ca: { key_type: "ec-p256", ttl: "1d" } },
      { "ca.key_type": "ml-dsa-65", listen: "127.0.0.1:9999", log_level: undefined },
    );
    const c = parseServerConfig(merged);
    expect(c.ca.keyType).toBe("ml-dsa-65");
    expect(c.ca.ttlMs).toBe(86_400_000);
    expect(c.listen.port).toBe(9999);
  });
});
