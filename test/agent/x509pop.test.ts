/**
 * x509pop node attestation against a real server over TLS: the node proves possession of the key of a
 * certificate issued by an operator CA (made here with Debian's openssl).
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Agent } from "../../host/agent/agent.ts";
import { X509PopClient } from "../../host/agent/attestors/index.ts";
import { systemClock } from "../../host/core/clock.ts";
import { parseServerConfig } from "../../host/server/config.ts";
import { silentLogger } from "../../host/server/logger.ts";
import { type RunningServer, startServer } from "../../host/server/server.ts";
import { tmpDir } from "../helpers/cli.ts";

const TD = "pop.test";
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

function openssl(args: string[], cwd: string) {
  execFileSync("openssl", args, { cwd, stdio: "pipe" });
}

/** An operator CA and a node certificate signed by it; returns file paths. */
function makePki(dir: string, name: string) {
  openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${name}-ca.key`,
      "-out",
      `${name}-ca.pem`,
      "-days",
      "2",
      "-subj",
      `/CN=${name} operator CA`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign",
    ],
    dir,
  );
  openssl(
    [
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${name}-node.key`,
      "-out",
      `${name}-node.csr`,
      "-subj",
      `/CN=${name}-node-7`,
    ],
    dir,
  );
  fs.writeFileSync(
    path.join(dir, `${name}-ext.cnf`),
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
  );
  openssl(
    [
      "x509",
      "-req",
      "-in",
      `${name}-node.csr`,
      "-CA",
      `${name}-ca.pem`,
      "-CAkey",
      `${name}-ca.key`,
      "-CAcreateserial",
      "-out",
      `${name}-node.pem`,
      "-days",
      "1",
      "-extfile",
      `${name}-ext.cnf`,
    ],
    dir,
  );
  fs.chmodSync(path.join(dir, `${name}-node.key`), 0o600);
  return {
    ca: path.join(dir, `${name}-ca.pem`),
    cert: path.join(dir, `${name}-node.pem`),
    key: path.join(dir, `${name}-node.key`),
  };
}

async function server(dir: string, caBundle: string): Promise<RunningServer> {
  const s = await startServer(
    parseServerConfig({
      trust_domain: TD,
      data_dir: path.join(dir, "server"),
      listen: "127.0.0.1:0",
      health_listen: "127.0.0.1:0",
      log_level: "silent",
      node_attestors: { x509pop: { ca_bundle_file: caBundle } },
    }),
    { clock: systemClock, logger: silentLogger },
  );
  closers.push(() => s.close());
  return s;
}

function agent(s: RunningServer, cert: string, key: string) {
  const a = new Agent({
    trustDomain: TD,
    server: { host: "127.0.0.1", port: s.address.port },
    bootstrapRoots: s.core.ca.trustBundle().x509Authorities,
    insecureBootstrap: false,
    dataDir: tmpDir(),
    attestor: new X509PopClient(cert, key),
    workloadAttestors: [],
    workloadKeyType: "ec-p256",
    syncIntervalMs: 60_000,
    clock: systemClock,
    logger: silentLogger,
  });
  closers.push(() => a.stop());
  return a;
}

describe("x509pop", () => {
  it("attests a node holding an operator-issued key: assurance `key`, selectors from the certificate", async () => {
    const dir = tmpDir();
    const pki = makePki(dir, "corp");
    const s = await server(dir, pki.ca);
    const a = agent(s, pki.cert, pki.key);
    await a.start();
    expect(a.id).toMatch(new RegExp(`^spiffe://${TD}/qhx/agent/x509pop/[0-9a-f]{40}$`));
    expect(a.assuranceLevel).toBe("key");
    const node = await s.core.ds.getNode(a.id);
    expect(node?.selectors).toContainEqual({ type: "x509pop", value: "subject:cn:corp-node-7" });
    expect(node?.selectors.some((x) => x.value.startsWith("fingerprint:"))).toBe(true);
  });

  it("refuses a certificate from another CA", async () => {
    const dir = tmpDir();
    const corp = makePki(dir, "corp");
    const rogue = makePki(dir, "rogue");
    const s = await server(dir, corp.ca);
    await expect(agent(s, rogue.cert, rogue.key).start()).rejects.toMatchObject({
      code: "QHX_ATTESTATION_FAILED",
      message: expect.stringMatching(/does not lead to a configured CA/),
    });
  });

  it("refuses a node that has the certificate but not its key", async () => {
    const dir = tmpDir();
    const corp = makePki(dir, "corp");
    const other = makePki(dir, "other");
    const s = await server(dir, corp.ca);
    await expect(agent(s, corp.cert, other.key).start()).rejects.toMatchObject({
      code: "QHX_ATTESTATION_FAILED",
      message: expect.stringMatching(/proof of possession failed/),
    });
  });
});
