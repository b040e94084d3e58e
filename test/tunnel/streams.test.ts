/**
 * qhx-streams/1 (connection reuse between QHx tunnels): the frame parser, and the client against a
 * scripted server on real TLS sockets — a pooled connection closed before the OPEN was read (the stream
 * goes out again on a new connection, nothing lost or doubled), protocol errors, a non-QHx ALPN peer.
 */
import crypto from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import { afterEach, describe, expect, it } from "vitest";
import { toPemChain } from "../../host/core/pem.ts";
import { StaticSvidSource } from "../../host/tunnel/svid-source.ts";
import {
  controlFrame,
  F_ACCEPT,
  F_DATA,
  F_END,
  F_OPEN,
  F_REFUSE,
  F_RESET,
  frameHeader,
  FrameParser,
  MAX_CONTROL_PAYLOAD,
  STREAMS_ALPN,
} from "../../host/tunnel/streams.ts";
import { TunnelClient, TunnelServer } from "../../host/tunnel/tunnel.ts";
import { echoServer, MemorySink, mkCa, mkSvid, roundTrip, stateOf } from "./helpers.ts";

const TD = "example.org";
const SID = `spiffe://${TD}/db`;
const CID = `spiffe://${TD}/web`;
const ca = mkCa(TD);

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

type Ev = [string, string];
function collect(p: FrameParser): Ev[] {
  const out: Ev[] = [];
  p.handler = {
    data: (b) => {
      const last = out.at(-1);
      if (last && last[0] === "DATA+") last[1] += b.toString("latin1");
      else out.push(["DATA+", b.toString("latin1")]);
    },
    control: (t, r) => out.push([String(t), r]),
  };
  return out;
}

describe("FrameParser", () => {
  const wire = Buffer.concat([
    controlFrame(F_OPEN),
    frameHeader(F_DATA, 5),
    Buffer.from("hello"),
    frameHeader(F_DATA, 0),
    controlFrame(F_END),
    controlFrame(F_RESET, "why not ünïcode"),
    controlFrame(F_ACCEPT),
  ]);
  const expected: Ev[] = [
    [String(F_OPEN), ""],
    ["DATA+", "hello"],
    [String(F_END), ""],
    [String(F_RESET), "why not ünïcode"],
    [String(F_ACCEPT), ""],
  ];

  it("parses the same events however the bytes are split (every split point, byte by byte)", () => {
    for (let cut = 0; cut <= wire.length; cut++) {
      const p = new FrameParser({ data() {}, control() {} });
      const ev = collect(p);
      p.push(wire.subarray(0, cut));
      p.push(wire.subarray(cut));
      expect(ev).toEqual(expected);
      expect(p.idle).toBe(true);
    }
    const p = new FrameParser({ data() {}, control() {} });
    const ev = collect(p);
    for (const b of wire) p.push(Buffer.from([b]));
    expect(ev).toEqual(expected);
  });

  it("hands DATA through as views of the input (no copy)", () => {
    const buf = Buffer.concat([frameHeader(F_DATA, 3), Buffer.from("abc")]);
    let seen: Buffer | undefined;
    new FrameParser({ data: (b) => (seen = b), control() {} }).push(buf);
    expect(seen!.buffer).toBe(buf.buffer);
  });

  it("rejects unknown frame types and oversized control frames, and reports a partial frame", () => {
    const p = () => new FrameParser({ data() {}, control() {} });
    expect(() => p().push(Buffer.from([0, 0, 0, 0, 0]))).toThrow(/unknown frame type/);
    expect(() => p().push(Buffer.from([9, 0, 0, 0, 0]))).toThrow(/unknown frame type/);
    expect(() => p().push(frameHeader(F_REFUSE, MAX_CONTROL_PAYLOAD + 1))).toThrow(/REFUSE frame of/);
    const q = p();
    q.push(frameHeader(F_DATA, 10).subarray(0, 3));
    expect(q.idle).toBe(false);
    expect(controlFrame(F_RESET, "x".repeat(5000)).length).toBe(5 + MAX_CONTROL_PAYLOAD);
  });
});

/** A scripted qhx-streams/1 server speaking TLS 1.3 with the server SVID; `onConn` drives each connection. */
async function scriptedServer(
  onConn: (t: tls.TLSSocket, index: number) => void,
  onTcp: (index: number) => void = () => {},
) {
  const svid = mkSvid(ca, SID);
  let n = 0;
  const sockets = new Set<net.Socket>();
  const srv = tls.createServer(
    {
      key: svid.key.export({ type: "pkcs8", format: "pem" }) as string,
      cert: toPemChain(svid.chainDer),
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: "TLSv1.3",
      ALPNProtocols: [STREAMS_ALPN],
    },
    (t) => {
      sockets.add(t);
      t.on("close", () => sockets.delete(t));
      t.on("error", () => {});
      onConn(t, n++);
    },
  );
  let tcp = 0;
  srv.on("connection", () => onTcp(tcp++));
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  );
  return { port: (srv.address() as net.AddressInfo).port, connections: () => n };
}

/** Echo each stream back (ACCEPT, DATA echoed, END after END), stream after stream. */
function echoStreams(t: tls.TLSSocket, log: string[]) {
  const p = new FrameParser({
    data: (b) => {
      log.push(`data:${b.toString("latin1")}`);
      t.write(Buffer.concat([frameHeader(F_DATA, b.length), b]));
    },
    control: (type) => {
      log.push(`ctl:${type}`);
      if (type === F_OPEN) t.write(controlFrame(F_ACCEPT));
      if (type === F_END) t.write(controlFrame(F_END));
    },
  });
  t.on("data", (b: Buffer) => p.push(b));
}

async function client(port: number) {
  const sink = new MemorySink();
  const c = new TunnelClient({
    source: new StaticSvidSource(stateOf(mkSvid(ca, CID), ca)),
    listen: { host: "127.0.0.1", port: 0 },
    connect: { host: "127.0.0.1", port },
    serverIds: [SID],
    recordSink: sink,
  });
  const at = await c.listen();
  cleanups.push(() => c.close());
  return { c, port: at.port, sink };
}

describe("the client against a scripted qhx-streams/1 server", () => {
  it("sends a stream again, once, on a new connection when a pooled one closes before ACCEPT", async () => {
    const logs: string[][] = [];
    const srv = await scriptedServer((t, i) => {
      const log: string[] = [];
      logs.push(log);
      if (i === 0) {
        // the first connection serves one stream, then closes (close_notify) when the next OPEN arrives
        // without reading it: as a server closing an idle connection does when the OPEN crossed its close
        let streams = 0;
        const p = new FrameParser({
          data: (b) => t.write(Buffer.concat([frameHeader(F_DATA, b.length), b])),
          control: (type) => {
            if (type === F_OPEN && ++streams === 2) {
              log.push("closed on second OPEN");
              t.end();
              p.handler = { data() {}, control() {} };
              return;
            }
            if (type === F_OPEN) t.write(controlFrame(F_ACCEPT));
            if (type === F_END) t.write(controlFrame(F_END));
          },
        });
        t.on("data", (b: Buffer) => p.push(b));
      } else echoStreams(t, log);
    });
    const { c, port, sink } = await client(srv.port);
    expect((await roundTrip(port, "one")).toString()).toBe("one");
    expect(c.pooledConnections).toBe(1);
    const big = crypto.randomBytes(100_000);
    expect((await roundTrip(port, big)).equals(big)).toBe(true);
    expect(srv.connections()).toBe(2);
    expect(logs[0]).toEqual(["closed on second OPEN"]);
    // the retried stream arrived whole and once: OPEN, the bytes, END
    expect(logs[1]![0]).toBe(`ctl:${F_OPEN}`);
    expect(logs[1]!.at(-1)).toBe(`ctl:${F_END}`);
    const echoed = logs[1]!.filter((l) => l.startsWith("data:")).map((l) => l.slice(5));
    expect(Buffer.from(echoed.join(""), "latin1").length).toBe(big.length);
    const recs = await sink.waitFor(2);
    expect(recs[1]).toMatchObject({ decision: "allow", requestBytes: big.length, responseBytes: big.length });
    expect(recs[1]!.reused).toBeUndefined(); // it ran over the new connection
  });

  it("keeps what the application sends while the stream is being sent again (nothing lost, END kept)", async () => {
    const logs: string[][] = [];
    let secondConnection: () => void = () => {};
    const retrying = new Promise<void>((r) => (secondConnection = r));
    const srv = await scriptedServer(
      (t, i) => {
        const log: string[] = [];
        logs.push(log);
        if (i === 0) {
          let streams = 0;
          const p = new FrameParser({
            data: (b) => t.write(Buffer.concat([frameHeader(F_DATA, b.length), b])),
            control: (type) => {
              if (type === F_OPEN && ++streams === 2) {
                t.end();
                p.handler = { data() {}, control() {} };
                return;
              }
              if (type === F_OPEN) t.write(controlFrame(F_ACCEPT));
              if (type === F_END) t.write(controlFrame(F_END));
            },
          });
          t.on("data", (b: Buffer) => p.push(b));
        } else echoStreams(t, log);
      },
      (tcp) => {
        // the client's new connection is in its handshake: the application's next bytes and END come now
        if (tcp === 1) secondConnection();
      },
    );
    const { port } = await client(srv.port);
    expect((await roundTrip(port, "one")).toString()).toBe("one");
    const got = await new Promise<string>((resolve, reject) => {
      const c = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
      let s = "";
      c.on("data", (b) => (s += b));
      c.on("close", () => resolve(s));
      c.on("error", reject);
      c.write("first part, ");
      void retrying.then(() => c.end("second part"));
    });
    expect(got).toBe("first part, second part");
    expect(logs[1]!.at(-1)).toBe(`ctl:${F_END}`);
  });

  it("does not send a stream again once the server accepted it (a reset mid-stream is final)", async () => {
    let conns = 0;
    const srv = await scriptedServer((t) => {
      conns++;
      const p = new FrameParser({
        data: () => t.destroy(), // accepted, then the connection breaks
        control: (type) => {
          if (type === F_OPEN) t.write(controlFrame(F_ACCEPT));
        },
      });
      t.on("data", (b: Buffer) => p.push(b));
    });
    const { port, sink } = await client(srv.port);
    expect((await roundTrip(port, "lost")).length).toBe(0);
    expect(conns).toBe(1);
    const [rec] = await sink.waitFor(1);
    expect(rec!.decision).toBe("allow");
    expect(rec!.closeReason).toBeTruthy();
  });

  for (const [what, bytes] of [
    ["an unknown frame type", Buffer.from([0x7f, 0, 0, 0, 0])],
    ["DATA before ACCEPT", Buffer.concat([frameHeader(F_DATA, 2), Buffer.from("hi")])],
    ["an oversized control frame", frameHeader(F_RESET, 1 << 20)],
  ] as const) {
    it(`ends the stream and the connection on ${what}`, async () => {
      const srv = await scriptedServer((t) => {
        t.once("data", () => t.write(bytes));
      });
      const { c, port, sink } = await client(srv.port);
      expect((await roundTrip(port, "x")).length).toBe(0);
      const [rec] = await sink.waitFor(1);
      expect(rec!.closeReason).toMatch(/protocol error/);
      expect(c.pooledConnections).toBe(0);
    });
  }
});

describe("the server with peers that do not speak qhx-streams/1", () => {
  it("a client offering another ALPN protocol gets the plain byte stream", async () => {
    const echo = await echoServer();
    cleanups.push(() => echo.close());
    const server = new TunnelServer({
      source: new StaticSvidSource(stateOf(mkSvid(ca, SID), ca)),
      listen: { host: "127.0.0.1", port: 0 },
      forward: { host: "127.0.0.1", port: echo.port },
      allow: [CID],
    });
    const at = await server.listen();
    cleanups.push(() => server.close());
    const svid = mkSvid(ca, CID);
    const got = await new Promise<string>((resolve, reject) => {
      const t = tls.connect({
        host: "127.0.0.1",
        port: at.port,
        key: svid.key.export({ type: "pkcs8", format: "pem" }) as string,
        cert: toPemChain(svid.chainDer),
        rejectUnauthorized: false,
        checkServerIdentity: () => undefined,
        ALPNProtocols: ["h2", "http/1.1"],
        minVersion: "TLSv1.3",
      });
      let s = "";
      t.on("secureConnect", () => {
        expect(t.alpnProtocol).toBe(false);
        t.end("plain bytes");
      });
      t.on("data", (b) => (s += b));
      t.on("close", () => resolve(s));
      t.on("error", reject);
    });
    expect(got).toBe("plain bytes");
  });
});
