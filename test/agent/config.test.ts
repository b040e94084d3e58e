import { describe, expect, it } from "vitest";
import { parseAgentConfig } from "../../host/agent/config.ts";
import { parseServerConfig } from "../../host/server/config.ts";

const base = { server_address: "127.0.0.1:8081", trust_bundle_file: "b.pem", data_dir: "/tmp/a" };

describe("agent config", () => {
  it("fills defaults", () => {
    const c = parseAgentConfig({ ...base, join_token: "t".repeat(32) });
    expect(c.server).toEqual({ host: "127.0.0.1", port: 8081 });
    expect(c.socketPath).toBe("/tmp/a/public/api.sock");
    expect(c.syncIntervalMs).toBe(5000);
    expect(c.workloadKeyType).toBe("ec-p256");
    expect(c.healthListen).toEqual({ host: "127.0.0.1", port: 8082 });
  });

  it("takes TPM settings", () => {
    const c = parseAgentConfig({ ...base, tpm: { tcti: "device:/dev/tpmrm0", ek_alg: "ecc" } });
    expect(c.tpm).toEqual({ tcti: "device:/dev/tpmrm0", ekAlg: "ecc" });
  });

  it("names bad settings precisely and needs a trust bundle unless bootstrap is explicitly insecure", () => {
    expect(() => parseAgentConfig({ ...base, server_address: "nowhere" })).toThrow(
      /server_address: expected HOST:PORT/,
    );
    expect(() => parseAgentConfig({ ...base, sync_interval: "often" })).toThrow(
      /sync_interval: invalid duration/,
    );
    expect(() => parseAgentConfig({ ...base, tpm: { ek_alg: "dsa" } })).toThrow(/tpm\.ek_alg/);
    expect(() => parseAgentConfig({ ...base, colour: 1 })).toThrow(/unknown key\(s\) colour/);
    const { trust_bundle_file: _, ...noBundle } = base;
    expect(() => parseAgentConfig(noBundle)).toThrow(/trust_bundle_file is required/);
    expect(
      parseAgentConfig({ ...noBundle, insecure_bootstrap: true, trust_domain: "x.test" }).insecureBootstrap,
    ).toBe(true);
  });
});

describe("server node attestor settings", () => {
  const s = { trust_domain: "example.org", data_dir: "/tmp/s" };
  it("enables TPM with an EK allow-list or a manufacturer CA bundle", () => {
    const h = "a".repeat(64);
    const c = parseServerConfig({
      ...s,
      node_attestors: { tpm: { ek_public_key_hashes: [h], pcrs: [0, 7] } },
    });
    expect(c.nodeAttestors.tpm).toEqual({ ekPublicKeyHashes: [h], pcrs: [0, 7] });
    expect(() => parseServerConfig({ ...s, node_attestors: { tpm: { pcrs: [7] } } })).toThrow(
      /give ek_ca_bundle_file and\/or ek_public_key_hashes/,
    );
    expect(() =>
      parseServerConfig({ ...s, node_attestors: { tpm: { ek_public_key_hashes: ["xyz"] } } }),
    ).toThrow(/expected sha256 hex/);
    expect(() =>
      parseServerConfig({ ...s, node_attestors: { tpm: { ek_public_key_hashes: [h], pcrs: [24] } } }),
    ).toThrow(/pcrs/);
  });
});
