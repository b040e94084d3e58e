/**
 * The crypto policy at tunnel setup (host/tunnel peerChecks), over real sockets on 127.0.0.1: two trust
 * domains with independent CAs whose chains verify (each side holds the other's bundle), and the policy
 * still refuses — releasability in both directions, the peer's signature algorithm, the tunnel mode.
 * The checks come from a policy file exactly as `qhx tunnel --crypto-policy FILE` loads it.
 */
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tunnelPeerChecks } from "../../host/cli/crypto-policy.ts";
import type { ExchangeRecord } from "../../host/tunnel/record.ts";
import { StaticSvidSource, type SvidState } from "../../host/tunnel/svid-source.ts";
import { TunnelClient, TunnelServer } from "../../host/tunnel/tunnel.ts";
import { echoServer, MemorySink, mkCa, mkSvid, roundTrip, stateOf, tmp } from "../tunnel/helpers.ts";

const A = "alpha.test";
const B = "bravo.test";
const caA = mkCa(A);
const caB = mkCa(B);
const caBmldsa = mkCa(B, "ml-dsa-65");
const SRV = `spiffe://${A}/db`;
const CLI = `spiffe://${B}/web`;
const LOCAL = { host: "127.0.0.1", port: 0 };

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function policyFile(doc: unknown): string {
  const f = path.join(tmp("qhx-cp-"), "policy.json");
  fs.writeFileSync(f, JSON.stringify(doc));
  return f;
}

/** A tunnel server in alpha and a client in bravo, each with a policy file and its own namespace. */
async function pair(o: {
  serverPolicy?: unknown;
  serverNs?: string;
  clientPolicy?: unknown;
  clientNs?: string;
  clientState?: SvidState;
}) {
  const echo = await echoServer();
  cleanups.push(() => echo.close());
  const sink = new MemorySink();
  const ssrc = new StaticSvidSource(stateOf(mkSvid(caA, SRV), caA, caB, caBmldsa));
  const csrc = new StaticSvidSource(o.clientState ?? stateOf(mkSvid(caB, CLI), caB, caA));
  const server = new TunnelServer({
    source: ssrc,
    listen: LOCAL,
    forward: { host: "127.0.0.1", port: echo.port },
    allow: [CLI],
    recordSink: sink,
    ...(o.serverPolicy
      ? { peerChecks: tunnelPeerChecks(policyFile(o.serverPolicy), ssrc, "mtls", o.serverNs) }
      : {}),
  });
  const sa = await server.listen();
  cleanups.push(() => server.close());
  const client = new TunnelClient({
    source: csrc,
    listen: LOCAL,
    connect: sa,
    serverIds: [SRV],
    recordSink: sink,
    ...(o.clientPolicy
      ? { peerChecks: tunnelPeerChecks(policyFile(o.clientPolicy), csrc, "mtls", o.clientNs) }
      : {}),
  });
  const port = (await client.listen()).port;
  cleanups.push(() => client.close());
  return { port, sink };
}

async function recordOf(sink: MemorySink, role: "client" | "server"): Promise<ExchangeRecord> {
  for (let n = 1; ; n++) {
    const r = (await sink.waitFor(n)).find((x) => x.role === role);
    if (r) return r;
  }
}

describe("crypto policy at tunnel setup", () => {
  it("a releasable peer passes on both sides", async () => {
    const p = await pair({
      serverPolicy: { namespaces: { orders: { accept_from: [B], releasable_to: [B] } } },
      serverNs: "orders",
      clientPolicy: { trust_domains: { [B]: { releasable_to: [A], accept_from: [A] } } },
    });
    expect((await roundTrip(p.port, "hello")).toString()).toBe("hello");
    expect(await recordOf(p.sink, "server")).toMatchObject({ decision: "allow", peerId: CLI });
  });

  it("ingress: the server refuses a verified peer its namespace does not accept", async () => {
    const p = await pair({
      serverPolicy: {
        coalitions: { allies: ["charlie.test"] },
        namespaces: { orders: { accept_from: ["coalition:allies"] } },
      },
      serverNs: "orders",
    });
    expect((await roundTrip(p.port, "secret")).length).toBe(0);
    expect(await recordOf(p.sink, "server")).toMatchObject({
      decision: "deny",
      peerId: CLI,
      reason: `crypto policy "ns:orders": namespace "orders" of ${A} does not accept identities from ${B} (accept_from: coalition:allies); refusing ${CLI}`,
    });
  });

  it("egress: the client refuses to present its identity to a domain it is not releasable to, and sends nothing", async () => {
    const p = await pair({
      clientPolicy: {
        trust_domains: { [B]: { releasable_to: ["*"] } },
        namespaces: { secret: { releasable_to: [] } },
      },
      clientNs: "secret",
    });
    expect((await roundTrip(p.port, "classified")).length).toBe(0);
    const c = await recordOf(p.sink, "client");
    expect(c).toMatchObject({
      decision: "deny",
      peerId: SRV,
      reason: `crypto policy "ns:secret": identities of namespace "secret" of ${B} are not releasable to ${A} (releasable_to: none); refusing ${SRV}`,
    });
    expect(c.requestBytes).toBe(0);
  });

  it("egress from the server side too: its identity must be releasable to the client's domain", async () => {
    const p = await pair({ serverPolicy: { trust_domains: { [A]: { releasable_to: ["delta.test"] } } } });
    expect((await roundTrip(p.port, "x")).length).toBe(0);
    expect((await recordOf(p.sink, "server")).reason).toBe(
      `crypto policy "td:${A}": identities of ${A} are not releasable to ${B} (releasable_to: delta.test); refusing ${CLI}`,
    );
  });

  it("refuses a peer whose signature algorithm its domain's rule forbids; accepts the allowed one", async () => {
    const policy = { trust_domains: { [B]: { signature_algorithms: { allowed: ["ml-dsa-65"] } } } };
    const p = await pair({ serverPolicy: policy });
    expect((await roundTrip(p.port, "x")).length).toBe(0);
    expect((await recordOf(p.sink, "server")).reason).toBe(
      `crypto policy "td:${B}" forbids ECDSA-P256 (allowed: ML-DSA-65); refusing ${CLI}`,
    );
    const ok = await pair({
      serverPolicy: policy,
      clientState: stateOf(mkSvid(caBmldsa, CLI, "ml-dsa-65"), caBmldsa, caA),
    });
    expect((await roundTrip(ok.port, "pq")).toString()).toBe("pq");
  });

  it("refuses to start in a tunnel mode the policy forbids, naming the rule", () => {
    const src = new StaticSvidSource(stateOf(mkSvid(caA, SRV), caA));
    const f = policyFile({ coalitions: { c: [A] }, coalition_rules: { c: { tunnel_modes: ["pq"] } } });
    expect(() => tunnelPeerChecks(f, src, "mtls")).toThrow(
      'crypto policy "coalition:c" forbids tunnel mode mtls (allowed: pq)',
    );
    expect(() => tunnelPeerChecks(f, src, "pq")).not.toThrow();
    expect(() => tunnelPeerChecks(policyFile({ namespaces: { "Bad!": {} } }), src, "pq")).toThrow(
      /namespaces\.Bad!/,
    );
  });

  it("follows the policy file: a change applies to the next connection; an invalid file fails closed", async () => {
    const echo = await echoServer();
    cleanups.push(() => echo.close());
    const sink = new MemorySink();
    const ssrc = new StaticSvidSource(stateOf(mkSvid(caA, SRV), caA, caB));
    const file = policyFile({});
    const server = new TunnelServer({
      source: ssrc,
      listen: LOCAL,
      forward: { host: "127.0.0.1", port: echo.port },
      allow: [CLI],
      recordSink: sink,
      peerChecks: tunnelPeerChecks(file, ssrc, "mtls"),
    });
    const sa = await server.listen();
    cleanups.push(() => server.close());
    const client = new TunnelClient({
      source: new StaticSvidSource(stateOf(mkSvid(caB, CLI), caB, caA)),
      listen: LOCAL,
      connect: sa,
      serverIds: [SRV],
    });
    const port = (await client.listen()).port;
    cleanups.push(() => client.close());
    expect((await roundTrip(port, "1")).toString()).toBe("1");
    const bump = (text: string) => {
      const before = fs.statSync(file).mtimeMs;
      fs.writeFileSync(file, text);
      // make sure the mtime moves even on a coarse clock
      fs.utimesSync(file, new Date(), new Date(before + 1000));
    };
    bump(JSON.stringify({ trust_domains: { [A]: { accept_from: [] } } }));
    expect((await roundTrip(port, "2")).length).toBe(0);
    expect((await sink.waitFor(2))[1]!.reason).toMatch(/does not accept identities from bravo\.test/);
    bump("{ not json");
    expect((await roundTrip(port, "3")).length).toBe(0);
    expect((await sink.waitFor(3))[2]!.reason).toMatch(/^peer check failed: .*policy\.json/);
  });
});
