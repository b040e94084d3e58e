/**
 * End to end with real processes: two `qhx server start` processes (own data dirs and CAs) serving their
 * bundle endpoints from a config file, and `qhx federation create|list|show|refresh|update|delete` CLI
 * processes over the admin socket. Also the config's federation rules.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseServerConfig } from "../../host/server/config.ts";
import { qhx, startServerProcess, tmpDir } from "../helpers/cli.ts";

type Server = Awaited<ReturnType<typeof startServerProcess>>;
let a: Server;
let b: Server;
const dir = tmpDir("qhx-fed-cli-");

function configFile(name: string, federation: unknown): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify({ federation }));
  return file;
}

const endpointOf = (s: Server) => s.logs.find((l) => l.msg === "server started")!.bundleEndpoint as string;

beforeAll(async () => {
  const cfg = configFile("fed.json", { bundle_endpoint: { listen: "127.0.0.1:0", path: "/bundle" } });
  [a, b] = await Promise.all([
    startServerProcess(["--config", cfg], "a.test"),
    startServerProcess(["--config", cfg], "b.test"),
  ]);
});

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
});

describe("qhx federation", () => {
  it("creates, lists, shows, refreshes, updates and deletes a relationship", async () => {
    const url = endpointOf(b);
    expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/bundle$/);
    // the out-of-band exchange: b's operator hands its bundle over (here: from b's health listener)
    const bundleFile = path.join(dir, "b-bundle.json");
    fs.writeFileSync(bundleFile, await (await fetch(`http://${b.healthListen}/bundle`)).text());

    const sock = ["--socket", a.adminSocket];
    const created = qhx([
      "federation",
      "create",
      ...sock,
      "--trust-domain",
      "b.test",
      "--endpoint-url",
      url,
      "--profile",
      "https_spiffe",
      "--endpoint-spiffe-id",
      "spiffe://b.test/qhx/server",
      "--bundle",
      bundleFile,
    ]);
    expect(created.stderr).toBe("");
    expect(created.status).toBe(0);
    expect(created.stdout).toMatch(/Created federation with b.test/);
    expect(created.stdout).toMatch(/bundle: +sequence 1, 1 X.509 \/ 1 JWT authorities/);

    const list = qhx(["federation", "list", ...sock]);
    expect(list.stdout).toMatch(new RegExp(`^b.test\\thttps_spiffe\\t${url}\\tseq 1`, "m"));

    // the endpoint moves somewhere dead: refresh fails with the reason, the last good bundle stays
    const upd = qhx(["federation", "update", "b.test", ...sock, "--endpoint-url", "https://127.0.0.1:1/"]);
    expect(upd.status).toBe(0);
    const failed = qhx(["federation", "refresh", "b.test", ...sock]);
    expect(failed.status).toBe(1);
    expect(failed.stderr).toMatch(
      /QHX_FEDERATION_ENDPOINT_UNAVAILABLE: https:\/\/127.0.0.1:1\/: ECONNREFUSED/,
    );
    const after = qhx(["federation", "show", "b.test", ...sock, "--bundle"]);
    expect(after.stdout).toMatch(/last error: +QHX_FEDERATION_ENDPOINT_UNAVAILABLE/);
    expect(after.stdout).toMatch(/bundle: +sequence 1/);
    expect(after.stdout).toMatch(/"spiffe_sequence": 1/);

    const metrics = await (await fetch(`http://${a.healthListen}/metrics`)).text();
    expect(metrics).toMatch(
      /qhx_federation_refresh_total\{trust_domain="b.test",result="QHX_FEDERATION_ENDPOINT_UNAVAILABLE"\} [1-9]/,
    );
    expect(metrics).toMatch(/qhx_federation_consecutive_failures\{trust_domain="b.test"\} [1-9]/);

    expect(qhx(["federation", "delete", "b.test", ...sock]).stdout).toMatch(/Deleted federation with b.test/);
    const gone = await fetch(`http://${a.healthListen}/metrics`);
    expect(await gone.text()).not.toMatch(/qhx_federation_consecutive_failures\{trust_domain="b.test"\}/);
  }, 150_000); // real processes: generous on a loaded machine

  it("validates the federation section of the server config", () => {
    const parse = (federation: unknown) => () =>
      parseServerConfig({ trust_domain: "c.test", data_dir: path.join(dir, "c"), federation });
    expect(parse({ bundle_endpoint: { listen: "127.0.0.1:0", profile: "https_web" } })).toThrow(
      /federation.bundle_endpoint: profile https_web needs cert_file and key_file/,
    );
    expect(parse({ bundle_endpoint: { listen: "127.0.0.1:0", cert_file: "x", key_file: "y" } })).toThrow(
      /cert_file\/key_file are for https_web/,
    );
    expect(parse({ bundle_endpoint: { listen: "127.0.0.1:0", spiffe_id: "spiffe://other.test/x" } })).toThrow(
      /spiffe:\/\/other.test\/x is not in trust domain c.test/,
    );
    expect(parse({ refresh: { min_interval: "2d" } })).toThrow(/min_interval exceeds max_interval/);
    expect(parse({ bundle_endpoint: { listen: "nowhere" } })).toThrow(/federation.bundle_endpoint.listen/);
    expect(parse({ bundle_endpoint: { listen: "127.0.0.1:0", path: "bundle" } })).toThrow(
      /absolute URL path/,
    );
    expect(parse({ refresh: { backoff_initial: "soon" } })).toThrow(/federation.refresh.backoff_initial/);
    expect(parse({ nope: 1 })).toThrow(/federation: unknown key\(s\) nope/);
    const ok = parseServerConfig({
      trust_domain: "c.test",
      data_dir: path.join(dir, "c"),
      federation: { bundle_endpoint: { listen: "127.0.0.1:8443" }, refresh: { max_interval: "1h" } },
    });
    expect(ok.federation.bundleEndpoint).toMatchObject({
      profile: "https_spiffe",
      path: "/",
      spiffeId: "spiffe://c.test/qhx/server",
      listen: { host: "127.0.0.1", port: 8443 },
    });
    expect(ok.federation.refresh).toMatchObject({
      maxIntervalMs: 3_600_000,
      minIntervalMs: 5000,
      defaultIntervalMs: 300_000,
    });
    expect(
      parseServerConfig({ trust_domain: "c.test", data_dir: "d" }).federation.bundleEndpoint,
    ).toBeUndefined();
  });
});
