/**
 * The tunnels in-process, over real sockets on 127.0.0.1: both modes, every rejection rule, authorization
 * (allow-list, Cedar, peer checks), rotation and bundle updates, limits, idle timeout, records and metrics.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { Command } from "commander";
import { afterEach, describe, expect, it } from "vitest";
import { registerTunnelCommands } from "../../host/cli/tunnel.ts";
import { createWorkloadApiServer } from "../../host/agent/workload-api/server.ts";
import type { WorkloadIdentities, WorkloadIdentityProvider } from "../../host/agent/workload-api/types.ts";
import { FakeClock } from "../../host/core/clock.ts";
import { toPemChain } from "../../host/core/pem.ts";
import { compilePolicies, policiesFromText, QHX_CEDAR_SCHEMA } from "../../host/policy/index.ts";
import {
  FileSvidSource,
  readSvidDir,
  StaticSvidSource,
  type Svid,
  type SvidState,
} from "../../host/tunnel/svid-source.ts";
import {
  type PeerInfo,
  parseHostPort,
  type TunnelClientOptions,
  TunnelClient,
  type TunnelServerOptions,
  TunnelServer,
} from "../../host/tunnel/tunnel.ts";
import { WorkloadSvidSource } from "../../host/tunnel/workload-source.ts";
import {
  echoServer,
  MemorySink,
  mkCa,
  mkSvid,
  roundTrip,
  stateOf,
  type TestCa,
  tmp,
  writeSvidDir,
} from "./helpers.ts";

const TD = "example.org";
const SID = `spiffe://${TD}/db`;
const CID = `spiffe://${TD}/web`;
const LOCAL = { host: "127.0.0.1", port: 0 };

const caP256 = mkCa(TD);
const caMlDsa = mkCa(TD, "ml-dsa-65");

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sha = (b: Uint8Array) => crypto.createHash("sha256").update(b).digest("hex");

interface Pair {
  server: TunnelServer;
  client: TunnelClient;
  ssrc: StaticSvidSource;
  csrc: StaticSvidSource;
  sink: MemorySink;
  port: number;
}

async function pair(
  o: {
    mode?: "mtls" | "pq";
    ca?: TestCa;
    alg?: "ec-p256" | "ml-dsa-65";
    server?: Partial<TunnelServerOptions>;
    client?: Partial<TunnelClientOptions>;
    clientState?: SvidState;
    serverState?: SvidState;
  } = {},
): Promise<Pair> {
  const ca = o.ca ?? caP256;
  const alg = o.alg ?? "ec-p256";
  const echo = await echoServer();
  cleanups.push(() => echo.close());
  const sink = new MemorySink();
  const ssrc = new StaticSvidSource(o.serverState ?? stateOf(mkSvid(ca, SID, alg), ca));
  const csrc = new StaticSvidSource(o.clientState ?? stateOf(mkSvid(ca, CID, alg), ca));
  const server = new TunnelServer({
    mode: o.mode,
    source: ssrc,
    listen: LOCAL,
    forward: { host: "127.0.0.1", port: echo.port },
    allow: [CID],
    recordSink: sink,
    ...o.server,
  });
  const sa = await server.listen();
  cleanups.push(() => server.close());
  const client = new TunnelClient({
    mode: o.mode,
    source: csrc,
    listen: LOCAL,
    connect: sa,
    serverIds: [SID],
    recordSink: sink,
    ...o.client,
  });
  const port = (await client.listen()).port;
  cleanups.push(() => client.close());
  return { server, client, ssrc, csrc, sink, port };
}

async function serverRecord(sink: MemorySink) {
  for (let n = 1; ; n++) {
    const recs = await sink.waitFor(n);
    const r = recs.find((x) => x.role === "server");
    if (r) return r;
  }
}

describe("both modes carry the bytes and record the exchange", () => {
  for (const [mode, alg] of [
    ["mtls", "ec-p256"],
    ["mtls", "ml-dsa-65"],
    ["pq", "ml-dsa-65"],
  ] as const) {
    it(`${mode} with ${alg} SVIDs`, async () => {
      const p = await pair({ mode, alg, ca: alg === "ml-dsa-65" ? caMlDsa : caP256 });
      const data = crypto.randomBytes(3 * 1024 * 1024 + 17);
      const back = await roundTrip(p.port, data);
      expect(back.equals(data)).toBe(true);
      const recs = await p.sink.waitFor(2);
      const s = recs.find((r) => r.role === "server")!;
      const c = recs.find((r) => r.role === "client")!;
      expect(s).toMatchObject({
        mode,
        localId: SID,
        peerId: CID,
        decision: "allow",
        reason: "allow-list",
        group: "X25519MLKEM768",
        peerSigAlg: alg,
        requestBytes: data.length,
        responseBytes: data.length,
        requestSha256: sha(data),
        responseSha256: sha(data),
        policyVersion: null,
      });
      expect(c).toMatchObject({
        mode,
        localId: CID,
        peerId: SID,
        decision: "allow",
        group: "X25519MLKEM768",
      });
      expect(c.requestSha256).toBe(sha(data));
      expect(s.peerCertSha256).toBe(c.localCertSha256);
      expect(c.peerCertSha256).toBe(s.localCertSha256);
      expect(s.peerChainDer[0]).toEqual(p.csrc.current().svid.chainDer[0]);
      expect(s.svid.chainDer).toBe(p.ssrc.current().svid.chainDer);
      expect(s.startedAt).toBeLessThanOrEqual(s.handshakeAt);
      expect(s.handshakeAt).toBeLessThanOrEqual(s.endedAt);
      const text = await p.server.metrics.registry.metrics();
      expect(text).toContain(
        `qhx_tunnel_connections_total{role="server",mode="${mode}",peer="${CID}",outcome="allowed"} 1`,
      );
      expect(text).toContain(
        `qhx_tunnel_bytes_total{role="server",peer="${CID}",direction="request"} ${data.length}`,
      );
      expect(text).toMatch(
        new RegExp(
          `qhx_tunnel_handshake_seconds_count\\{role="server",mode="${mode}",group="X25519MLKEM768",sig_alg="${alg}",peer="${CID}"\\} 1`,
        ),
      );
    });
  }

  it("half-close: the response still arrives after the request side ended (HTTP/1.0 style)", async () => {
    const p = await pair();
    const back = await roundTrip(p.port, "ping");
    expect(back.toString()).toBe("ping");
  });
});

describe("peer authentication (SPIFFE rules, never hostnames)", () => {
  const refused = async (
    clientState: SvidState,
    code: RegExp,
    serverOpts: Partial<TunnelServerOptions> = {},
  ) => {
    const p = await pair({ clientState, server: serverOpts });
    const back = await roundTrip(p.port, "secret");
    expect(back.length).toBe(0);
    const s = await serverRecord(p.sink);
    expect(s.decision).toBe("deny");
    expect(s.reason).toMatch(code);
    expect(s.requestBytes).toBe(0);
    const text = await p.server.metrics.registry.metrics();
    expect(text).toMatch(/qhx_tunnel_refusals_total\{role="server",mode="mtls",reason="QHX_SVID_\w+"\} 1/);
    return s;
  };

  it("rejects a peer of another trust domain (no bundle for it)", async () => {
    const other = mkCa("other.org");
    await refused(
      stateOf(mkSvid(other, "spiffe://other.org/web"), other, caP256),
      /no trust bundle for trust domain other.org/,
    );
  });

  it("rejects an expired SVID", async () => {
    const now = Date.now();
    const expired = mkSvid(caP256, CID, "ec-p256", {
      notBefore: new Date(now - 7_200_000),
      notAfter: new Date(now - 3_600_000),
    });
    await refused(stateOf(expired, caP256), /expired/i);
  });

  it("rejects an SVID from an untrusted CA of the same trust domain", async () => {
    const rogue = mkCa(TD);
    await refused(stateOf(mkSvid(rogue, CID), rogue, caP256), /not issued by any X.509 authority/);
  });

  it("the client refuses a server with an unexpected SPIFFE ID and sends it nothing", async () => {
    const echo = await echoServer();
    cleanups.push(() => echo.close());
    const p = await pair({ serverState: stateOf(mkSvid(caP256, `spiffe://${TD}/impostor`), caP256) });
    const back = await roundTrip(p.port, "secret");
    expect(back.length).toBe(0);
    const recs = await p.sink.waitFor(2);
    const c = recs.find((r) => r.role === "client")!;
    expect(c.decision).toBe("deny");
    expect(c.reason).toMatch(/impostor is not the expected/);
    expect(c.requestBytes).toBe(0);
  });

  it("accepts a federated trust domain whose bundle the server holds", async () => {
    const fed = mkCa("partner.org");
    const fedId = "spiffe://partner.org/web";
    const p = await pair({
      clientState: stateOf(mkSvid(fed, fedId), fed, caP256),
      serverState: stateOf(mkSvid(caP256, SID), caP256, fed),
      server: { allow: [fedId] },
    });
    expect((await roundTrip(p.port, "hi")).toString()).toBe("hi");
    expect((await serverRecord(p.sink)).peerId).toBe(fedId);
  });
});

describe("authorization", () => {
  it("denies a verified peer not in the allow-list", async () => {
    const p = await pair({ server: { allow: [`spiffe://${TD}/someone-else`] } });
    expect((await roundTrip(p.port, "x")).length).toBe(0);
    const s = await serverRecord(p.sink);
    expect(s).toMatchObject({ decision: "deny", peerId: CID, reason: `${CID} is not in the allow-list` });
    expect(await p.server.metrics.registry.metrics()).toContain(
      `qhx_tunnel_connections_total{role="server",mode="mtls",peer="${CID}",outcome="denied"} 1`,
    );
  });

  it("decides with Cedar action connect (principal, resource, tls context)", async () => {
    const policy = await compilePolicies({
      schema: QHX_CEDAR_SCHEMA,
      policies: policiesFromText(`@id("web-to-db")
permit (principal == Workload::"${CID}", action == Action::"connect", resource == Workload::"${SID}")
when { context has tls && context.tls.pq && principal.trustDomain == "${TD}" };`),
    });
    const p = await pair({ server: { allow: undefined, policy, policyVersion: 7 } });
    expect((await roundTrip(p.port, "ok")).toString()).toBe("ok");
    const s = await serverRecord(p.sink);
    expect(s).toMatchObject({
      decision: "allow",
      reason: "policy: permitted by web-to-db",
      policyVersion: 7,
    });

    // the same policy refuses another workload
    const other = `spiffe://${TD}/batch`;
    const p2 = await pair({
      clientState: stateOf(mkSvid(caP256, other), caP256),
      server: { allow: undefined, policy, policyVersion: 7 },
    });
    expect((await roundTrip(p2.port, "no")).length).toBe(0);
    expect(await serverRecord(p2.sink)).toMatchObject({
      decision: "deny",
      peerId: other,
      reason: "policy: no policy permits it",
    });
  });

  it("runs peerChecks after verification and before authorization, refusing like a denial", async () => {
    const seen: PeerInfo[] = [];
    const check = (peer: PeerInfo) => {
      seen.push(peer);
      return peer.sigAlg === "ml-dsa-65"
        ? ({ ok: true } as const)
        : ({ ok: false, reason: "crypto policy: ML-DSA required" } as const);
    };
    const p = await pair({ server: { peerChecks: [check] } });
    expect((await roundTrip(p.port, "x")).length).toBe(0);
    const s = await serverRecord(p.sink);
    expect(s).toMatchObject({ decision: "deny", reason: "crypto policy: ML-DSA required", peerId: CID });
    expect(seen[0]).toMatchObject({
      spiffeId: CID,
      trustDomain: TD,
      sigAlg: "ec-p256",
      group: "X25519MLKEM768",
      mode: "mtls",
    });
    expect(seen[0]!.chainDer[0]).toEqual(p.csrc.current().svid.chainDer[0]);
    expect(await p.server.metrics.registry.metrics()).toContain('reason="QHX_TUNNEL_PEER_CHECK"');
  });

  it("refuses to start without an allow-list or a policy", () => {
    const src = new StaticSvidSource(stateOf(mkSvid(caP256, SID), caP256));
    expect(() => new TunnelServer({ source: src, listen: LOCAL, forward: LOCAL })).toThrow(
      /allow-list|policy/,
    );
  });
});

describe("pq mode", () => {
  it("refuses a client that offers only X25519 (no downgrade)", async () => {
    const p = await pair({ mode: "pq", alg: "ml-dsa-65", ca: caMlDsa });
    const svid = p.csrc.current().svid;
    const err = await new Promise<Error>((resolve) => {
      const s = tls.connect({
        ...p.server.address(),
        key: svid.key.export({ type: "pkcs8", format: "pem" }),
        cert: toPemChain(svid.chainDer),
        ecdhCurve: "X25519",
        rejectUnauthorized: false,
      });
      s.on("secureConnect", () => resolve(new Error("handshake completed")));
      s.on("error", resolve);
    });
    expect(err.message).toMatch(/handshake failure|alert/i);
    const s = await serverRecord(p.sink);
    expect(s.decision).toBe("deny");
    expect(s.reason).toMatch(/does not offer X25519MLKEM768/);
  });

  it("refuses a classical (P-256) peer SVID unless pqSigAlgs allows it", async () => {
    const p = await pair({ mode: "pq", alg: "ec-p256" });
    expect((await roundTrip(p.port, "x")).length).toBe(0);
    expect((await p.sink.waitFor(1))[0]!.reason).toMatch(/ec-p256 is not allowed in pq mode/);

    const p2 = await pair({
      mode: "pq",
      alg: "ec-p256",
      server: { pqSigAlgs: ["ec-p256"] },
      client: { pqSigAlgs: ["ec-p256"] },
    });
    expect((await roundTrip(p2.port, "migrating")).toString()).toBe("migrating");
  });

  it("an mtls client reaching a pq server gets X25519MLKEM768", async () => {
    const p = await pair({ mode: "pq", alg: "ml-dsa-65", ca: caMlDsa });
    const c = new TunnelClient({
      source: p.csrc,
      listen: LOCAL,
      connect: p.server.address(),
      serverIds: [SID],
    });
    const port = (await c.listen()).port;
    cleanups.push(() => c.close());
    expect((await roundTrip(port, "q")).toString()).toBe("q");
    expect((await serverRecord(p.sink)).group).toBe("X25519MLKEM768");
  });
});

describe("mtls mode with classical clients", () => {
  for (const curve of ["X25519", "P-256"]) {
    it(`a TLS 1.3 client offering only ${curve} interoperates, and the server records ${curve}`, async () => {
      const p = await pair();
      const svid = p.csrc.current().svid;
      const got = await new Promise<{ group: string; data: string }>((resolve, reject) => {
        const s = tls.connect({
          ...p.server.address(),
          key: svid.key.export({ type: "pkcs8", format: "pem" }),
          cert: toPemChain(svid.chainDer),
          ecdhCurve: curve,
          rejectUnauthorized: false,
        });
        let data = "";
        let group = "";
        s.on("secureConnect", () => {
          group = (s.getEphemeralKeyInfo() as { name: string }).name;
          s.end("classical");
        });
        s.on("data", (b) => (data += b));
        s.on("close", () => resolve({ group, data }));
        s.on("error", reject);
      });
      expect(got.data).toBe("classical");
      const s = await serverRecord(p.sink);
      expect(s.group).toBe(curve);
      expect(got.group.replace("prime256v1", "P-256")).toBe(curve);
    });
  }
});

describe("rotation and bundle updates", () => {
  it("keeps an established connection across SVID rotation; new connections use the new SVID", async () => {
    const p = await pair();
    const oldServerLeaf = p.ssrc.current().svid.chainDer[0]!;
    const sock = net.connect({ host: "127.0.0.1", port: p.port });
    const recv = (n: number) =>
      new Promise<string>((resolve) => {
        let s = "";
        const on = (b: Buffer) => {
          s += b;
          if (s.length >= n) {
            sock.off("data", on);
            resolve(s);
          }
        };
        sock.on("data", on);
      });
    sock.write("before");
    expect(await recv(6)).toBe("before");
    const newServer = mkSvid(caP256, SID);
    const newClient = mkSvid(caP256, CID);
    p.ssrc.set({ svid: newServer });
    p.csrc.set({ svid: newClient });
    sock.write("after!");
    expect(await recv(6)).toBe("after!");

    const back = await roundTrip(p.port, "fresh");
    expect(back.toString()).toBe("fresh");
    const first = (await p.sink.waitFor(2)).filter((r) => r.role === "server");
    expect(first[0]!.localCertSha256).toBe(sha(newServer.chainDer[0]!));
    expect(first[0]!.peerCertSha256).toBe(sha(newClient.chainDer[0]!));

    const closed = new Promise((r) => sock.once("close", r));
    sock.end();
    await closed;
    const all = await p.sink.waitFor(4);
    const long = all.filter((r) => r.role === "server" && r.requestBytes === 12)[0]!;
    expect(long.localCertSha256).toBe(sha(oldServerLeaf));
    expect(await p.server.metrics.registry.metrics()).toContain(
      'qhx_tunnel_svid_updates_total{role="server"} 1',
    );
  });

  it("applies a bundle update at once (a new CA becomes trusted for the next connection)", async () => {
    const ca2 = mkCa(TD);
    const p = await pair({ clientState: stateOf(mkSvid(ca2, CID), ca2, caP256) });
    expect((await roundTrip(p.port, "1")).length).toBe(0);
    p.ssrc.set({ bundles: stateOf(p.ssrc.current().svid, caP256, ca2).bundles });
    expect((await roundTrip(p.port, "2")).toString()).toBe("2");
  });
});

describe("TLS 1.3 session resumption (client side)", () => {
  // one TLS connection per application connection here (with reuse, later connections need no handshake)
  const noReuse = { reuseConnections: false };
  it("resumes with a verified server, verifies its chain again, and forgets the ticket on rotation", async () => {
    const p = await pair({ client: noReuse });
    for (let i = 0; i < 3; i++) expect((await roundTrip(p.port, `r${i}`)).toString()).toBe(`r${i}`);
    const recs = await p.sink.waitFor(6);
    const client = recs.filter((r) => r.role === "client");
    expect(client.map((r) => Boolean(r.resumed))).toEqual([false, true, true]);
    expect(client.every((r) => r.peerId === SID && r.decision === "allow")).toBe(true);
    expect(recs.filter((r) => r.role === "server").map((r) => Boolean(r.resumed))).toEqual([
      false,
      true,
      true,
    ]);
    // after rotation, the next connection runs a full handshake with the new SVID
    const next = mkSvid(caP256, CID);
    p.csrc.set({ svid: next });
    expect((await roundTrip(p.port, "new")).toString()).toBe("new");
    const after = (await p.sink.waitFor(8)).filter((r) => r.role === "server").at(-1)!;
    expect(after.resumed).toBeUndefined();
    expect(after.peerCertSha256).toBe(sha(next.chainDer[0]!));
  });

  for (const reuseConnections of [false, true]) {
    it(`a resumed session (or a pooled connection: ${reuseConnections}) is refused once the server's chain no longer verifies (expiry)`, async () => {
      const clock = new FakeClock(Date.now());
      const p = await pair({ client: { clock, reuseConnections } });
      expect((await roundTrip(p.port, "a")).toString()).toBe("a");
      expect(p.client.pooledConnections).toBe(reuseConnections ? 1 : 0);
      // the server's SVID (1 h) has expired by the client's clock: neither the ticket nor the pooled
      // connection may bypass verification
      clock.advance(2 * 3_600_000);
      expect((await roundTrip(p.port, "b")).length).toBe(0);
      const c = (await p.sink.waitFor(3)).filter((r) => r.role === "client").at(-1)!;
      expect(c.decision).toBe("deny");
      expect(c.reason).toMatch(/expired/i);
    });
  }

  it("can be turned off", async () => {
    const p = await pair({ client: { resumeSessions: false, ...noReuse } });
    for (let i = 0; i < 2; i++) await roundTrip(p.port, "x");
    const recs = await p.sink.waitFor(4);
    expect(recs.some((r) => r.resumed)).toBe(false);
  });
});

describe("connection reuse (qhx-streams/1)", () => {
  const metricValue = async (m: { get(): Promise<{ values: { value: number }[] }> }) =>
    (await m.get()).values.reduce((a, v) => a + v.value, 0);

  it("carries successive connections over one verified TLS connection, one record each", async () => {
    const p = await pair();
    const payloads = ["first", crypto.randomBytes(1 << 20), "third"].map((x) => Buffer.from(x));
    for (const b of payloads) expect((await roundTrip(p.port, b)).equals(b)).toBe(true);
    const recs = await p.sink.waitFor(6);
    for (const role of ["client", "server"] as const) {
      const mine = recs.filter((r) => r.role === role);
      expect(mine.map((r) => Boolean(r.reused))).toEqual([false, true, true]);
      expect(mine.map((r) => r.requestBytes)).toEqual(payloads.map((b) => b.length));
      expect(mine.map((r) => r.requestSha256)).toEqual(payloads.map((b) => sha(b)));
      expect(mine.map((r) => r.responseSha256)).toEqual(payloads.map((b) => sha(b)));
      expect(mine.every((r) => r.decision === "allow" && r.peerChainDer.length > 0)).toBe(true);
    }
    const hs = (await p.server.metrics.handshake.get()).values.find((v) => v.metricName?.endsWith("_count"));
    expect(hs?.value).toBe(1);
    expect(await metricValue(p.server.metrics.reused)).toBe(2);
    expect(await metricValue(p.client.metrics.reused)).toBe(2);
    expect(p.client.pooledConnections).toBe(1);
  });

  it("decides every stream afresh: a peer taken off the allow-list is refused on a pooled connection", async () => {
    const p = await pair();
    expect((await roundTrip(p.port, "ok")).toString()).toBe("ok");
    p.server.options.allow!.splice(0);
    expect((await roundTrip(p.port, "no")).length).toBe(0);
    const recs = await p.sink.waitFor(4);
    const [c, s] = [recs.filter((r) => r.role === "client")[1]!, recs.filter((r) => r.role === "server")[1]!];
    expect(s).toMatchObject({ decision: "deny", reused: true, requestBytes: 0 });
    expect(s.reason).toMatch(/not in the allow-list/);
    expect(c.decision).toBe("deny");
    expect(c.reason).toMatch(/refused the connection: .*not in the allow-list/);
    expect(p.client.pooledConnections).toBe(0);
  });

  it("an application that speaks first reaches the client over a pooled connection", async () => {
    const banner = net.createServer((c) => c.end("220 ready\n"));
    await new Promise<void>((r) => banner.listen(0, "127.0.0.1", () => r()));
    cleanups.push(() => new Promise((r) => banner.close(r)));
    const p = await pair({
      server: { forward: { host: "127.0.0.1", port: (banner.address() as net.AddressInfo).port } },
    });
    const listen = () =>
      new Promise<string>((resolve, reject) => {
        const c = net.connect({ port: p.port, host: "127.0.0.1", allowHalfOpen: true });
        let got = "";
        c.on("data", (b) => (got += b));
        c.on("end", () => c.end());
        c.on("close", () => resolve(got));
        c.on("error", reject);
      });
    expect(await listen()).toBe("220 ready\n");
    expect(await listen()).toBe("220 ready\n");
    const recs = await p.sink.waitFor(4);
    expect(recs.filter((r) => r.role === "server").map((r) => Boolean(r.reused))).toEqual([false, true]);
  });

  it("an application reset aborts the stream and retires the TLS connection", async () => {
    const rst = net.createServer((c) => c.once("data", () => c.resetAndDestroy()));
    await new Promise<void>((r) => rst.listen(0, "127.0.0.1", () => r()));
    cleanups.push(() => new Promise((r) => rst.close(r)));
    const p = await pair({
      server: { forward: { host: "127.0.0.1", port: (rst.address() as net.AddressInfo).port } },
    });
    expect((await roundTrip(p.port, "x")).length).toBe(0);
    const recs = await p.sink.waitFor(2);
    expect(recs.find((r) => r.role === "server")!.closeReason).toBe("ECONNRESET");
    expect(recs.find((r) => r.role === "client")!.closeReason).toMatch(/reset by the server: ECONNRESET/);
    expect(p.client.pooledConnections).toBe(0);
  });

  it("retires pooled connections when either side's SVID changes", async () => {
    const p = await pair();
    expect((await roundTrip(p.port, "a")).toString()).toBe("a");
    const srv2 = mkSvid(caP256, SID);
    p.ssrc.set({ svid: srv2 });
    expect((await roundTrip(p.port, "b")).toString()).toBe("b");
    const cli = (await p.sink.waitFor(4)).filter((r) => r.role === "client");
    expect(cli[1]!.reused).toBeUndefined();
    expect(cli[1]!.peerCertSha256).toBe(sha(srv2.chainDer[0]!));
    const cli2 = mkSvid(caP256, CID);
    p.csrc.set({ svid: cli2 });
    expect((await roundTrip(p.port, "c")).toString()).toBe("c");
    const srv = (await p.sink.waitFor(6)).filter((r) => r.role === "server");
    expect(srv[2]!.reused).toBeUndefined();
    expect(srv[2]!.peerCertSha256).toBe(sha(cli2.chainDer[0]!));
  });

  it("many concurrent connections of random sizes and endings over the pool: every byte, once, in order", async () => {
    const p = await pair();
    // 40 rounds of 8 concurrent connections: a mix of empty, small and 300 kB payloads; some read the
    // whole answer, some reset right after sending (the pool must never carry their bytes into another)
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const sizes = [0, 1, 100, 16_384, 65_537, 300_000];
    for (let round = 0; round < 40; round++) {
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          const size = sizes[Math.floor(rnd() * sizes.length)]!;
          const body = crypto.randomBytes(size);
          if (rnd() < 0.2) {
            // reset mid-way: connect, write, destroy at once
            await new Promise<void>((resolve) => {
              const c = net.connect({ port: p.port, host: "127.0.0.1" }, () => {
                c.write(body);
                c.resetAndDestroy();
              });
              c.on("close", () => resolve());
              c.on("error", () => {});
            });
            return;
          }
          const got = await roundTrip(p.port, body);
          expect(got.length).toBe(size);
          expect(got.equals(body)).toBe(true);
        }),
      );
    }
    const reused = (await p.client.metrics.reused.get()).values.reduce((a, v) => a + v.value, 0);
    expect(reused).toBeGreaterThan(100);
    expect(p.client.pooledConnections).toBeLessThanOrEqual(8);
  });

  for (const [side, other] of [
    ["server", "client"],
    ["client", "server"],
  ] as const) {
    it(`a ${side} with reuse turned off gets one TLS connection per application connection`, async () => {
      const p = await pair({ [side]: { reuseConnections: false } });
      for (const x of ["1", "2"]) expect((await roundTrip(p.port, x)).toString()).toBe(x);
      const recs = await p.sink.waitFor(4);
      expect(recs.some((r) => r.reused)).toBe(false);
      expect(p.client.pooledConnections).toBe(0);
      expect(other).toBeTruthy();
    });
  }
});

describe("limits", () => {
  it("refuses connections beyond maxConnections", async () => {
    const p = await pair({ server: { maxConnections: 1 } });
    const held = net.connect({ host: "127.0.0.1", port: p.port });
    held.write("hold");
    await new Promise((r) => held.once("data", r));
    expect((await roundTrip(p.port, "x")).length).toBe(0);
    const s = await serverRecord(p.sink);
    expect(s.reason).toMatch(/connection limit \(1\)/);
    expect(await p.server.metrics.registry.metrics()).toContain('reason="QHX_TUNNEL_CONNECTION_LIMIT"');
    held.destroy();
  });

  it("closes an idle connection", async () => {
    const p = await pair({ server: { idleTimeoutMs: 150 } });
    const sock = net.connect({ host: "127.0.0.1", port: p.port });
    sock.write("x");
    await new Promise((r) => sock.once("data", r));
    await new Promise((r) => sock.once("close", r));
    const s = (await serverRecord(p.sink)) as { closeReason?: string };
    expect(s.closeReason).toBe("idle timeout");
  });

  it("close() drains: an established connection finishes, new ones are refused", async () => {
    const p = await pair();
    const sock = net.connect({ host: "127.0.0.1", port: p.port, allowHalfOpen: true });
    sock.write("a");
    await new Promise((r) => sock.once("data", r));
    const closing = p.server.close({ drainMs: 30_000 });
    let got = "";
    sock.on("data", (b) => (got += b));
    const done = new Promise((r) => sock.once("close", r));
    sock.end("b");
    await done;
    await closing;
    expect(got).toBe("b");
    expect(p.server.activeConnections).toBe(0);
  });
});

describe("SVID sources", () => {
  it("files: reads svid-dir, rejects bad sets, rereads on change", async () => {
    const a = mkSvid(caP256, CID);
    const dir = writeSvidDir(a, [caP256]);
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const errors: Error[] = [];
    const src = new FileSvidSource(dir, { onError: (e) => errors.push(e) });
    cleanups.push(() => src.close());
    expect(src.current().svid.spiffeId).toBe(CID);
    expect([...src.current().bundles.keys()]).toEqual([TD]);
    const b = mkSvid(caP256, CID);
    const changed = new Promise<SvidState>((r) => src.on("change", r));
    writeSvidDir(b, [caP256], dir);
    expect((await changed).svid.chainDer[0]).toEqual(b.chainDer[0]);
    // a key that does not match the certificate is refused, the last good state stays
    fs.writeFileSync(
      path.join(dir, "svid.key"),
      mkSvid(caP256, CID).key.export({ type: "pkcs8", format: "pem" }),
    );
    expect(src.reload()).toBe(false);
    expect(errors.at(-1)!.message).toMatch(/does not match/);
    expect(src.current().svid.chainDer[0]).toEqual(b.chainDer[0]);
  });

  it("files: names the missing or malformed file", () => {
    const dir = tmp();
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    expect(() => readSvidDir(dir)).toThrow(/svid\.pem.*ENOENT/);
    writeSvidDir(mkSvid(caP256, CID), [caP256], dir);
    fs.writeFileSync(path.join(dir, "bundle.pem"), "nothing here");
    expect(() => readSvidDir(dir)).toThrow(/bundle\.pem holds no certificate/);
    writeSvidDir(mkSvid(caP256, CID), [caP256], dir);
    fs.writeFileSync(
      path.join(dir, "svid.key"),
      "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    expect(() => readSvidDir(dir)).toThrow(/not a private key/);
  });

  it("Workload API: follows the FetchX509SVID stream (rotation, federated bundles)", async () => {
    const fed = mkCa("partner.org");
    const toIds = (s: Svid): WorkloadIdentities => ({
      svids: [
        {
          spiffeId: s.spiffeId,
          chain: s.chainDer,
          privateKey: new Uint8Array(s.key.export({ type: "pkcs8", format: "der" })),
          expiresAt: Math.floor(s.expiresAt.getTime() / 1000),
        },
      ],
      bundles: [
        { trustDomain: TD, x509Authorities: [caP256.der], jwtAuthorities: [], sequence: 1 },
        { trustDomain: "partner.org", x509Authorities: [fed.der], jwtAuthorities: [], sequence: 1 },
      ],
    });
    let current = toIds(mkSvid(caP256, CID));
    const listeners = new Set<() => void>();
    const provider: WorkloadIdentityProvider = {
      identitiesFor: async () => current,
      onChange: (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
      fetchJwtSvids: async () => [],
      allBundles: () => current.bundles,
    };
    const dir = tmp();
    const socketPath = path.join(dir, "api.sock");
    const api = createWorkloadApiServer({ provider, peerOf: () => ({ pid: 1, uid: 0, gid: 0 }) });
    await api.listen(socketPath);
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    cleanups.push(() => api.close());
    const src = new WorkloadSvidSource({ socketPath });
    cleanups.push(() => src.close());
    await src.ready();
    expect(src.current().svid.spiffeId).toBe(CID);
    expect([...src.current().bundles.keys()].sort()).toEqual(["example.org", "partner.org"]);
    const next = mkSvid(caP256, CID);
    const changed = new Promise<SvidState>((r) => src.on("change", r));
    current = toIds(next);
    for (const l of listeners) l();
    expect((await changed).svid.chainDer[0]).toEqual(next.chainDer[0]);
  });
});

describe("parseHostPort", () => {
  it("parses host:port and [v6]:port, rejects the rest", () => {
    expect(parseHostPort("127.0.0.1:80", "f")).toEqual({ host: "127.0.0.1", port: 80 });
    expect(parseHostPort("[::1]:443", "f")).toEqual({ host: "::1", port: 443 });
    for (const bad of ["127.0.0.1", ":80", "h:99999", "h:x", "a:b:1"])
      expect(() => parseHostPort(bad, "f")).toThrow(/HOST:PORT/);
  });
});

describe("qhx tunnel flags (in-process)", () => {
  const parse = async (args: string[]) => {
    const program = new Command().exitOverride();
    program.configureOutput({ writeErr: () => {}, writeOut: () => {} });
    registerTunnelCommands(program);
    await program.parseAsync(["node", "qhx", "tunnel", ...args]);
  };
  it("rejects bad flags with a named error before doing anything", async () => {
    const dir = writeSvidDir(mkSvid(caP256, SID), [caP256]);
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const empty = tmp();
    cleanups.push(() => fs.rmSync(empty, { recursive: true, force: true }));
    const srv = ["server", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:1"];
    await expect(parse([...srv, "--svid-dir", dir])).rejects.toThrow(/--allow SPIFFE_ID .* or --policy FILE/);
    await expect(parse([...srv, "--svid-dir", dir, "--allow", CID, "--mode", "quantum"])).rejects.toThrow(
      /unknown mode "quantum"/,
    );
    await expect(parse([...srv, "--svid-dir", dir, "--socket", "/x", "--allow", CID])).rejects.toThrow(
      /--svid-dir or --socket, not both/,
    );
    await expect(parse([...srv, "--svid-dir", dir, "--allow", "not-a-spiffe-id"])).rejects.toThrow(
      /scheme|SPIFFE/i,
    );
    await expect(
      parse([...srv, "--svid-dir", dir, "--allow", CID, "--max-connections", "0"]),
    ).rejects.toThrow(/positive integer/);
    await expect(
      parse(["server", "--listen", "nowhere", "--forward", "127.0.0.1:1", "--allow", CID]),
    ).rejects.toThrow(/HOST:PORT/);
    await expect(
      parse([
        "client",
        "--listen",
        "127.0.0.1:0",
        "--connect",
        "127.0.0.1:1",
        "--server-id",
        SID,
        "--svid-dir",
        empty,
      ]),
    ).rejects.toThrow(/svid\.pem/);
  });
});
