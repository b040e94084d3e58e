/** The ClientHello reader: parsing, negative cases, and the group selection checked against OpenSSL. */
import net from "node:net";
import tls from "node:tls";
import { describe, expect, it } from "vitest";
import { toPemChain } from "../../host/core/pem.ts";
import {
  ClientHelloError,
  groupName,
  type ClientHelloInfo,
  MODE_GROUPS,
  normalizeGroup,
  parseClientHello,
  readClientHello,
  selectGroup,
} from "../../host/tunnel/clienthello.ts";
import { mkCa, mkSvid } from "./helpers.ts";

const ca = mkCa("example.org");
const svid = mkSvid(ca, "spiffe://example.org/a");
const key = svid.key.export({ type: "pkcs8", format: "pem" }) as string;
const cert = toPemChain(svid.chainDer);

/** Capture a real ClientHello from node:tls with these groups, and the group the server then negotiates. */
async function capture(ecdhCurve: string, serverGroups: readonly string[], alpn?: string[]) {
  const ctx = tls.createSecureContext({
    key,
    cert,
    minVersion: "TLSv1.3",
    ecdhCurve: serverGroups.join(":"),
  });
  let info: ClientHelloInfo | undefined;
  let raw: Buffer | undefined;
  const srv = net.createServer((s) => {
    readClientHello(s, 5000).then((i) => {
      info = i;
      raw = s.readableLength ? (s.read() as Buffer) : undefined;
      if (raw) s.unshift(raw);
      const t = new tls.TLSSocket(s, { isServer: true, secureContext: ctx });
      t.on("secure", () => t.end());
      t.on("error", () => {});
    });
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const negotiated = await new Promise<string>((resolve) => {
    const c = tls.connect({
      port: (srv.address() as net.AddressInfo).port,
      host: "127.0.0.1",
      ecdhCurve,
      rejectUnauthorized: false,
      ...(alpn ? { ALPNProtocols: alpn } : {}),
    });
    c.on("secureConnect", () => resolve(normalizeGroup((c.getEphemeralKeyInfo() as { name: string }).name)));
    c.on("data", () => {});
    c.on("error", () => resolve(""));
  });
  srv.close();
  return { info: info!, raw: raw!, negotiated };
}

describe("parseClientHello and selectGroup against node:tls (OpenSSL 3.5)", () => {
  const cases = [
    "X25519MLKEM768:X25519:P-256",
    "X25519MLKEM768",
    "X25519",
    "P-256",
    "*X25519:*X25519MLKEM768",
    "*P-256:X25519MLKEM768",
    "*X448:P-256:X25519MLKEM768",
  ];
  for (const curves of cases) {
    it(`client ${curves} → the group the mtls server selects`, async () => {
      const { info, negotiated } = await capture(curves, MODE_GROUPS.mtls);
      expect(info.versions).toContain(0x0304);
      expect(info.supportedGroups.length).toBeGreaterThan(0);
      expect(selectGroup(info, MODE_GROUPS.mtls)).toBe(negotiated);
    });
  }

  it("the pq server selects X25519MLKEM768 or nothing", async () => {
    const ok = await capture("X25519:X25519MLKEM768", MODE_GROUPS.pq);
    expect(selectGroup(ok.info, MODE_GROUPS.pq)).toBe("X25519MLKEM768");
    expect(ok.negotiated).toBe("X25519MLKEM768");
    const none = await capture("X25519:P-256", MODE_GROUPS.pq);
    expect(selectGroup(none.info, MODE_GROUPS.pq)).toBe("");
    expect(none.negotiated).toBe("");
  });

  it("reads the ALPN protocols the client offers, in order", async () => {
    const { info } = await capture("X25519MLKEM768", MODE_GROUPS.pq, ["qhx-streams/1", "h2"]);
    expect(info.alpn).toEqual(["qhx-streams/1", "h2"]);
    expect((await capture("X25519", MODE_GROUPS.mtls)).info.alpn).toEqual([]);
  });

  it("reads a ClientHello split across TCP segments and records", async () => {
    const { raw } = await capture("X25519MLKEM768", MODE_GROUPS.pq);
    expect(parseClientHello(raw.subarray(0, 3))).toBeNull();
    expect(parseClientHello(raw.subarray(0, raw.length - 1))).toBeNull();
    // re-frame the handshake message into two records
    const body = raw.subarray(5);
    const rec = (b: Buffer) => Buffer.concat([Buffer.from([22, 3, 1, b.length >> 8, b.length & 255]), b]);
    const split = Buffer.concat([rec(body.subarray(0, 100)), rec(body.subarray(100))]);
    expect(parseClientHello(split)).toEqual(parseClientHello(raw));
    expect(parseClientHello(split.subarray(0, 110))).toBeNull();
  });
});

describe("parseClientHello rejects what is not a ClientHello", () => {
  const hs = (body: number[]) => {
    const msg = Buffer.from([1, 0, body.length >> 8, body.length & 255, ...body]);
    return Buffer.concat([Buffer.from([22, 3, 1, msg.length >> 8, msg.length & 255]), msg]);
  };
  const minimal = [3, 3, ...new Array(32).fill(0), 0, 0, 2, 0x13, 0x01, 1, 0];
  it("accepts a minimal ClientHello without extensions", () => {
    expect(parseClientHello(hs(minimal))).toEqual({
      supportedGroups: [],
      keyShareGroups: [],
      versions: [],
      alpn: [],
    });
  });
  const bad: [string, Buffer, RegExp][] = [
    ["plain HTTP", Buffer.from("GET / HTTP/1.1\r\n\r\n"), /not a TLS handshake record/],
    ["an alert record", Buffer.from([21, 3, 3, 0, 2, 2, 40]), /content type 21/],
    ["a bad version byte", Buffer.from([22, 9, 1, 0, 4, 1, 0, 0, 0]), /bad version/],
    ["a zero-length record", Buffer.from([22, 3, 1, 0, 0]), /record length 0/],
    ["a ServerHello", Buffer.from([22, 3, 3, 0, 4, 2, 0, 0, 0]), /type 2, not ClientHello/],
    ["a truncated body", hs([3, 3, 1, 2]), /truncated/],
    ["extensions longer than the message", hs([...minimal, 0, 9, 0, 10, 0, 0]), /extensions length/],
    ["an odd supported_groups list", hs([...minimal, 0, 7, 0, 10, 0, 3, 0, 1, 0x1d]), /supported_groups/],
    [
      "a key_share entry overrunning",
      hs([...minimal, 0, 10, 0, 51, 0, 6, 0, 4, 0, 0x1d, 0, 9]),
      /key_share entry/,
    ],
    ["a bad supported_versions", hs([...minimal, 0, 7, 0, 43, 0, 3, 5, 3, 4]), /supported_versions/],
    ["an empty ALPN name", hs([...minimal, 0, 7, 0, 16, 0, 3, 0, 1, 0]), /ALPN protocol name/],
    ["an ALPN name overrunning", hs([...minimal, 0, 8, 0, 16, 0, 4, 0, 2, 5, 0x68]), /ALPN protocol name/],
    ["a bad ALPN list length", hs([...minimal, 0, 7, 0, 16, 0, 3, 0, 9, 1]), /application_layer/],
  ];
  for (const [what, buf, re] of bad) {
    it(`rejects ${what}`, () => {
      expect(() => parseClientHello(buf)).toThrow(ClientHelloError);
      expect(() => parseClientHello(buf)).toThrow(re);
    });
  }
  it("rejects an oversized ClientHello", () => {
    const b = Buffer.from([22, 3, 1, 0, 8, 1, 0x02, 0, 0, 0, 0, 0, 0]);
    expect(() => parseClientHello(b)).toThrow(/too large/);
  });
  it("names groups", () => {
    expect(groupName(0x11ec)).toBe("X25519MLKEM768");
    expect(groupName(0x1234)).toBe("0x1234");
    expect(normalizeGroup("prime256v1")).toBe("P-256");
  });
  it("readClientHello fails on a connection that closes or sends garbage", async () => {
    const results: string[] = [];
    const srv = net.createServer((s) => {
      readClientHello(s, 5000).then(
        () => results.push("ok"),
        (e: Error) => {
          results.push((e as ClientHelloError).code);
          s.destroy();
        },
      );
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
    const port = (srv.address() as net.AddressInfo).port;
    for (const payload of ["", "GET / HTTP/1.0\r\n\r\n"]) {
      await new Promise<void>((r) => {
        const c = net.connect({ port, host: "127.0.0.1" }, () => c.end(payload));
        c.on("close", () => r());
        c.on("error", () => {});
      });
    }
    srv.close();
    expect(results).toEqual(["QHX_TUNNEL_BAD_CLIENT_HELLO", "QHX_TUNNEL_BAD_CLIENT_HELLO"]);
  });
});
