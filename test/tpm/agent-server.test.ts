/**
 * The tpm node attestor through the real agent and server (TLS, /agent/v1/attest rounds): an agent on a
 * swtpm attests, gets `spiffe://<td>/qhx/agent/tpm/<ek hash>`, hardware assurance, and workload SVIDs
 * that carry it.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent } from "../../host/agent/agent.ts";
import { TpmClient } from "../../host/agent/attestors/tpm.ts";
import { assuranceOf } from "../../host/core/assurance.ts";
import { systemClock } from "../../host/core/clock.ts";
import { parseCertificate } from "../../host/core/x509.ts";
import { UnixAttestor } from "../../host/agent/workload/unix.ts";
import { handleAdmin } from "../../host/server/admin-api.ts";
import type { NodeAttestorsConfig } from "../../host/server/attestation/index.ts";
import { parseServerConfig } from "../../host/server/config.ts";
import { silentLogger } from "../../host/server/logger.ts";
import { type RunningServer, startServer } from "../../host/server/server.ts";
import { tmpDir } from "../helpers/cli.ts";
import { type Swtpm, startSwtpm, swtpmUnavailable } from "./swtpm.ts";

const TD = "tpm.test";
const unavailable = swtpmUnavailable();
if (unavailable) console.warn(`skipping the agent/server TPM attestation tests: ${unavailable}`);

describe.skipIf(unavailable !== undefined)("agent ↔ server with tpm node attestation (swtpm)", () => {
  let tpm: Swtpm;
  let ekHash: string;
  const closers: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    tpm = await startSwtpm();
    ekHash = await new TpmClient({ tcti: tpm.tcti }).ekPublicKeyHash();
  });
  afterAll(async () => {
    for (const c of closers.reverse()) await c();
    await tpm?.stop();
  });

  async function server(nodeAttestors: NodeAttestorsConfig): Promise<RunningServer> {
    const cfg = parseServerConfig({
      trust_domain: TD,
      data_dir: path.join(tmpDir(), "server"),
      listen: "127.0.0.1:0",
      health_listen: "127.0.0.1:0",
      log_level: "silent",
    });
    cfg.nodeAttestors = nodeAttestors;
    const s = await startServer(cfg, { clock: systemClock, logger: silentLogger });
    closers.push(() => s.close());
    return s;
  }

  function agent(s: RunningServer) {
    const attestor = new TpmClient({ tcti: tpm.tcti });
    closers.push(async () => attestor.cleanup());
    const a = new Agent({
      trustDomain: TD,
      server: { host: "127.0.0.1", port: s.address.port },
      bootstrapRoots: s.core.ca.trustBundle().x509Authorities,
      insecureBootstrap: false,
      dataDir: tmpDir(),
      attestor,
      workloadAttestors: [new UnixAttestor({ hashMaxBytes: 0 })],
      workloadKeyType: "ec-p256",
      syncIntervalMs: 60_000,
      clock: systemClock,
      logger: silentLogger,
    });
    closers.push(() => a.stop());
    return a;
  }

  it("attests, and workload SVIDs under the node carry hardware assurance", async () => {
    const s = await server({ tpm: { ekPublicKeyHashes: [ekHash], pcrs: [0, 7] } });
    const a = agent(s);
    await a.start();
    expect(a.id).toBe(`spiffe://${TD}/qhx/agent/tpm/${ekHash.slice(0, 32)}`);
    expect(a.assuranceLevel).toBe("hardware");

    const node = await s.core.ds.getNode(a.id);
    expect(node?.attestationType).toBe("tpm");
    expect(node?.selectors).toContainEqual({ type: "tpm", value: `ek_pubkey_sha256:${ekHash}` });
    expect(node?.selectors.filter((x) => x.value.startsWith("pcr:")).length).toBe(2);

    const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };
    const r = await handleAdmin(s.core, {
      method: "POST",
      path: "/v1/entries",
      query: new URLSearchParams(),
      body: { spiffe_id: `spiffe://${TD}/web`, parent_id: a.id, selectors: [`unix:uid:${me.uid}`] },
    });
    expect(r.status).toBeLessThan(400);
    await a.syncOnce();
    const ids = await a.identitiesFor(me);
    expect(ids.svids.map((x) => x.spiffeId)).toEqual([`spiffe://${TD}/web`]);
    expect(assuranceOf(parseCertificate(ids.svids[0]!.chain[0]!))).toBe("hardware");
  });

  it("is refused when the server does not allow the EK", async () => {
    const s = await server({ tpm: { ekPublicKeyHashes: ["00".repeat(32)] } });
    await expect(agent(s).start()).rejects.toThrow(/not allow-listed/);
  });
});
