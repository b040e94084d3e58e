import crypto, { X509Certificate } from "node:crypto";
import fs from "node:fs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { GrpcServer } from "../../host/agent/grpc/server.ts";
import { fromProtoStruct } from "../../host/agent/workload-api/watch.ts";
import { createWorkloadApiServer } from "../../host/agent/workload-api/server.ts";
import { parseSpiffeBundle } from "../../host/core/bundle.ts";
import { validateJwtSvid } from "../../host/core/jwtsvid.ts";
import { type Clients, connect, grpc, securityHeader, serverStream, unary } from "./fixtures-api/client.ts";
import {
  DB_ID,
  FED_TD,
  PEER,
  splitDer,
  TD,
  tempSocketPath,
  TestProvider,
  waitFor,
  WEB_ID,
} from "./fixtures-api/provider.ts";

let provider: TestProvider;
let server: GrpcServer;
let clients: Clients;
let dir: string;
let socket: string;

beforeEach(async () => {
  provider = new TestProvider();
  ({ dir, socket } = tempSocketPath());
  server = createWorkloadApiServer({ provider, peerOf: () => PEER });
  await server.listen(socket);
  clients = connect(socket);
});

afterEach(async () => {
  clients.close();
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const bytes = (v: unknown) => new Uint8Array(v as Buffer);

describe("security header and authorization", () => {
  it("refuses every Workload API method without workload.spiffe.io: true (INVALID_ARGUMENT)", async () => {
    const none = new grpc.Metadata();
    const wrong = new grpc.Metadata();
    wrong.set("workload.spiffe.io", "yes");
    for (const md of [none, wrong]) {
      await expect(unary(clients.workload, "FetchJWTSVID", { audience: ["a"] }, md)).rejects.toMatchObject({
        code: grpc.status.INVALID_ARGUMENT,
        details: "security header missing from request",
      });
      await expect(
        unary(clients.workload, "ValidateJWTSVID", { audience: "a", svid: "x" }, md),
      ).rejects.toMatchObject({
        code: grpc.status.INVALID_ARGUMENT,
      });
      for (const m of ["FetchX509SVID", "FetchX509Bundles", "FetchJWTBundles"]) {
        const err = await serverStream(clients.workload, m, {}, md).failure();
        expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
        expect(err.details).toBe("security header missing from request");
      }
    }
    expect(provider.identitiesCalls).toBe(0);
  });

  it("answers PERMISSION_DENIED 'no identity issued' to a caller without SVIDs", async () => {
    provider.denied = true;
    for (const m of ["FetchX509SVID", "FetchX509Bundles", "FetchJWTBundles"]) {
      const err = await serverStream(clients.workload, m).failure();
      expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(err.details).toBe("no identity issued");
    }
    await expect(unary(clients.workload, "FetchJWTSVID", { audience: ["a"] })).rejects.toMatchObject({
      code: grpc.status.PERMISSION_DENIED,
      details: "no identity issued",
    });
    await waitFor(() => provider.listeners.size === 0, 3000, "unsubscribe");
  });

  it("passes the peer from peerOf to the provider", async () => {
    const r = serverStream(clients.workload, "FetchX509SVID");
    await r.next();
    expect(provider.peersSeen[0]).toEqual(PEER);
    r.call.cancel();
  });

  it("maps a provider failure to UNAVAILABLE 'workload attestation failed'", async () => {
    provider.failWith = new Error("process vanished");
    const err = await serverStream(clients.workload, "FetchX509SVID").failure();
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(err.details).toBe("workload attestation failed");
  });
});

describe("FetchX509SVID", () => {
  it("sends the full X.509 context at once: chain, PKCS#8 key, bundle, federated bundles, default first", async () => {
    const t0 = Date.now();
    const r = serverStream(clients.workload, "FetchX509SVID");
    const msg = await r.next();
    expect(Date.now() - t0).toBeLessThan(2000);
    const svids = msg["svids"] as Record<string, unknown>[];
    expect(svids.map((s) => s["spiffe_id"])).toEqual([WEB_ID, DB_ID]);
    expect(svids.map((s) => s["hint"])).toEqual(["internal", "external"]);

    for (const [i, s] of svids.entries()) {
      const chain = splitDer(bytes(s["x509_svid"]));
      expect(chain).toHaveLength(1);
      const leaf = new X509Certificate(chain[0]!);
      expect(leaf.subjectAltName).toContain(`URI:${s["spiffe_id"]}`);
      expect(Buffer.from(chain[0]!).equals(Buffer.from(provider.svids[i]!.chain[0]!))).toBe(true);
      const key = crypto.createPrivateKey({
        key: Buffer.from(bytes(s["x509_svid_key"])),
        format: "der",
        type: "pkcs8",
      });
      const pubFromKey = crypto.createPublicKey(key).export({ format: "der", type: "spki" });
      expect(pubFromKey.equals(leaf.publicKey.export({ format: "der", type: "spki" }))).toBe(true);
      const bundle = splitDer(bytes(s["bundle"]));
      expect(bundle).toHaveLength(1);
      const ca = new X509Certificate(bundle[0]!);
      expect(leaf.verify(ca.publicKey)).toBe(true);
    }
    const fed = msg["federated_bundles"] as Record<string, Buffer>;
    expect(Object.keys(fed)).toEqual([`spiffe://${FED_TD}`]);
    const fedCa = new X509Certificate(splitDer(bytes(fed[`spiffe://${FED_TD}`]))[0]!);
    expect(fedCa.subjectAltName).toContain(`URI:spiffe://${FED_TD}`);
    expect(msg["crl"]).toEqual([]);
    r.call.cancel();
  });

  it("pushes a full new message on the open stream when the SVID rotates, and nothing when nothing changed", async () => {
    const r = serverStream(clients.workload, "FetchX509SVID");
    const first = await r.next();
    provider.emit(); // a change elsewhere: this caller's content is the same
    expect(await r.quiet(300)).toBe(true);
    const next = provider.rotateDefault();
    const second = await r.next();
    const svids = second["svids"] as Record<string, unknown>[];
    expect(svids).toHaveLength(2);
    expect(Buffer.from(bytes(svids[0]!["x509_svid"])).equals(Buffer.from(next.chain[0]!))).toBe(true);
    expect(svids[0]!["x509_svid"]).not.toEqual(
      (first["svids"] as Record<string, unknown>[])[0]!["x509_svid"],
    );
    expect(svids[1]).toEqual((first["svids"] as Record<string, unknown>[])[1]); // unchanged SVID resent in full
    r.call.cancel();
  });

  it("unsubscribes from onChange when the client cancels (no leaked listeners)", async () => {
    const readers = [1, 2, 3].map(() => serverStream(clients.workload, "FetchX509SVID"));
    for (const r of readers) await r.next();
    expect(provider.listeners.size).toBe(3);
    for (const r of readers) r.call.cancel();
    await waitFor(() => provider.listeners.size === 0, 3000, "listeners released");
    await waitFor(() => server.calls.size === 0, 3000, "calls released");
    const before = provider.identitiesCalls;
    provider.rotateDefault();
    await new Promise((r) => setTimeout(r, 100));
    expect(provider.identitiesCalls).toBe(before);
  });

  it("serves 50 concurrent streams, pushes one rotation to all of them, and releases them all", async () => {
    const readers = Array.from({ length: 50 }, () => serverStream(clients.workload, "FetchX509SVID"));
    await Promise.all(readers.map((r) => r.next()));
    expect(provider.listeners.size).toBe(50);
    const next = provider.rotateDefault();
    const updates = await Promise.all(readers.map((r) => r.next()));
    for (const u of updates) {
      const leaf = bytes((u["svids"] as Record<string, unknown>[])[0]!["x509_svid"]);
      expect(Buffer.from(leaf).equals(Buffer.from(next.chain[0]!))).toBe(true);
    }
    for (const r of readers) r.call.cancel();
    await waitFor(() => provider.listeners.size === 0 && server.calls.size === 0, 5000, "all released");
  });

  it("ends the stream with PERMISSION_DENIED when the caller loses its last SVID", async () => {
    const r = serverStream(clients.workload, "FetchX509SVID");
    await r.next();
    provider.denied = true;
    provider.emit();
    const err = await r.failure();
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    await waitFor(() => provider.listeners.size === 0, 3000, "unsubscribe");
  });

  it("drops an SVID whose hint an earlier SVID already has", async () => {
    provider.svids[1]!.hint = "internal";
    const r = serverStream(clients.workload, "FetchX509SVID");
    const msg = await r.next();
    expect((msg["svids"] as Record<string, unknown>[]).map((s) => s["spiffe_id"])).toEqual([WEB_ID]);
    r.call.cancel();
  });

  it("honours a client deadline: the call ends DEADLINE_EXCEEDED after the first message and is released", async () => {
    const r = serverStream(clients.workload, "FetchX509SVID", {}, securityHeader(), {
      deadline: Date.now() + 400,
    });
    await r.next();
    const err = await r.failure();
    expect(err.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await waitFor(() => provider.listeners.size === 0 && server.calls.size === 0, 3000, "release");
  });

  it("ends open streams with UNAVAILABLE when the server closes", async () => {
    const r = serverStream(clients.workload, "FetchX509SVID");
    await r.next();
    await server.close();
    const err = await r.failure();
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(provider.listeners.size).toBe(0);
    expect(fs.existsSync(socket)).toBe(false);
  });
});

describe("FetchX509Bundles", () => {
  it("streams every bundle of the caller keyed by trust domain ID, and pushes bundle changes", async () => {
    const r = serverStream(clients.workload, "FetchX509Bundles");
    const msg = await r.next();
    const bundles = msg["bundles"] as Record<string, Buffer>;
    expect(Object.keys(bundles).sort()).toEqual([`spiffe://${TD}`, `spiffe://${FED_TD}`].sort());
    expect(Buffer.from(bundles[`spiffe://${TD}`]!).equals(Buffer.from(provider.ca.cert))).toBe(true);
    provider.rotateDefault(); // SVID change only: the bundles message is unchanged
    expect(await r.quiet(300)).toBe(true);
    provider.bundles[1] = {
      ...provider.bundles[1]!,
      x509Authorities: [provider.fedCa.cert, provider.ca.cert],
    };
    provider.emit();
    const next = await r.next();
    expect(splitDer(bytes((next["bundles"] as Record<string, Buffer>)[`spiffe://${FED_TD}`]))).toHaveLength(
      2,
    );
    r.call.cancel();
  });
});

describe("allowUnauthenticatedVerifiers", () => {
  it("lets a caller without SVIDs stream bundles, but not SVIDs", async () => {
    const other = tempSocketPath();
    const open = createWorkloadApiServer({
      provider,
      peerOf: () => PEER,
      allowUnauthenticatedVerifiers: true,
    });
    await open.listen(other.socket);
    const c = connect(other.socket);
    try {
      provider.denied = true;
      const r = serverStream(c.workload, "FetchX509Bundles");
      expect(Object.keys((await r.next())["bundles"] as object)).toHaveLength(2);
      r.call.cancel();
      const j = serverStream(c.workload, "FetchJWTBundles");
      expect(Object.keys((await j.next())["bundles"] as object)).toHaveLength(2);
      j.call.cancel();
      expect((await serverStream(c.workload, "FetchX509SVID").failure()).code).toBe(
        grpc.status.PERMISSION_DENIED,
      );
    } finally {
      c.close();
      await open.close();
      fs.rmSync(other.dir, { recursive: true, force: true });
    }
  });
});

describe("JWT-SVIDs", () => {
  it("FetchJWTSVID then ValidateJWTSVID round trip", async () => {
    const res = await unary(clients.workload, "FetchJWTSVID", { audience: ["spiffe://example.org/api"] });
    const svids = res["svids"] as Record<string, string>[];
    // spiffe_id unset: every identity of the caller, default first
    expect(svids.map((s) => s["spiffe_id"])).toEqual([WEB_ID, DB_ID]);
    expect(svids[0]!["hint"]).toBe("internal");
    const token = svids[0]!["svid"]!;
    const local = await validateJwtSvid(token, {
      audience: "spiffe://example.org/api",
      bundles: new Map(provider.bundles.map((b) => [b.trustDomain, b])),
      now: new Date(),
    });
    expect(local.spiffeId.toString()).toBe(WEB_ID);

    const v = await unary(clients.workload, "ValidateJWTSVID", {
      audience: "spiffe://example.org/api",
      svid: token,
    });
    expect(v["spiffe_id"]).toBe(WEB_ID);
    const claims = fromProtoStruct(v["claims"]);
    expect(claims["sub"]).toBe(WEB_ID);
    expect(claims["aud"]).toEqual(["spiffe://example.org/api"]);
    expect(typeof claims["exp"]).toBe("number");
  });

  it("returns only the requested SPIFFE ID, and PERMISSION_DENIED for one the caller does not have", async () => {
    const res = await unary(clients.workload, "FetchJWTSVID", { audience: ["x"], spiffe_id: DB_ID });
    expect((res["svids"] as Record<string, string>[]).map((s) => s["spiffe_id"])).toEqual([DB_ID]);
    await expect(
      unary(clients.workload, "FetchJWTSVID", { audience: ["x"], spiffe_id: "spiffe://example.org/other" }),
    ).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect(
      unary(clients.workload, "FetchJWTSVID", { audience: ["x"], spiffe_id: "not-an-id" }),
    ).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
  });

  it("requires an audience", async () => {
    await expect(unary(clients.workload, "FetchJWTSVID", { audience: [] })).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: "audience must be specified",
    });
    await expect(
      unary(clients.workload, "ValidateJWTSVID", { audience: "", svid: "x" }),
    ).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
    await expect(
      unary(clients.workload, "ValidateJWTSVID", { audience: "a", svid: "" }),
    ).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: "svid must be specified",
    });
  });

  it("ValidateJWTSVID: wrong audience, tampering and garbage are INVALID_ARGUMENT with the reason", async () => {
    const res = await unary(clients.workload, "FetchJWTSVID", { audience: ["aud-1"] });
    const token = (res["svids"] as Record<string, string>[])[0]!["svid"]!;
    await expect(
      unary(clients.workload, "ValidateJWTSVID", { audience: "aud-2", svid: token }),
    ).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining("QHX_JWT_AUDIENCE"),
    });
    const [h, p, s] = token.split(".");
    const forged = `${h}.${p}.${s!.startsWith("A") ? "B" : "A"}${s!.slice(1)}`;
    await expect(
      unary(clients.workload, "ValidateJWTSVID", { audience: "aud-1", svid: forged }),
    ).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
    await expect(
      unary(clients.workload, "ValidateJWTSVID", { audience: "aud-1", svid: "abc" }),
    ).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining("QHX_JWT_MALFORMED"),
    });
  });

  it("FetchJWTBundles streams a JWKS per trust domain that parses as a SPIFFE bundle", async () => {
    const r = serverStream(clients.workload, "FetchJWTBundles");
    const msg = await r.next();
    const bundles = msg["bundles"] as Record<string, Buffer>;
    expect(Object.keys(bundles).sort()).toEqual([`spiffe://${TD}`, `spiffe://${FED_TD}`].sort());
    const json = Buffer.from(bundles[`spiffe://${TD}`]!).toString("utf8");
    const doc = JSON.parse(json) as { keys: Record<string, unknown>[] };
    expect(doc).not.toHaveProperty("spiffe_sequence");
    expect(doc.keys).toHaveLength(1);
    expect(doc.keys[0]).toMatchObject({ kid: "jwt-key-1", kty: "EC", crv: "P-256", use: "jwt-svid" });
    const parsed = parseSpiffeBundle(json, TD);
    expect(parsed.jwtAuthorities.map((a) => a.kid)).toEqual(["jwt-key-1"]);
    expect(
      parsed.jwtAuthorities[0]!.publicKey.export({ format: "der", type: "spki" }).equals(
        provider.jwtKey.publicKey.export({ format: "der", type: "spki" }),
      ),
    ).toBe(true);
    expect(JSON.parse(Buffer.from(bundles[`spiffe://${FED_TD}`]!).toString("utf8"))).toEqual({ keys: [] });
    r.call.cancel();
    await waitFor(() => provider.listeners.size === 0, 3000, "unsubscribe");
  });
});

describe("unknown methods", () => {
  it("answers UNIMPLEMENTED (e.g. the WIT-SVID methods of newer clients)", async () => {
    const client = clients.workload;
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      client.makeUnaryRequest(
        "/SpiffeWorkloadAPI/FetchWITSVID",
        () => Buffer.alloc(0),
        (b: Buffer) => b,
        {},
        securityHeader(),
        (e) => resolve(e!),
      );
    });
    expect(err.code).toBe(grpc.status.UNIMPLEMENTED);
    expect(err.details).toContain("FetchWITSVID");
  });
});
