/**
 * End to end with real processes: `qhx server start`, `qhx agent start` (join token), and Workload API
 * clients — the qhx CLI, a standard @grpc/grpc-js client, and a client running as user `nobody`.
 */
import { execFileSync, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, qhx, qhxSpawn, startServerProcess, tmpDir } from "../helpers/cli.ts";
import { StreamReader, connect, securityHeader, unary } from "../agent/fixtures-api/client.ts";
import * as grpc from "@grpc/grpc-js";

const TD = "example.org";
const ALIAS = `spiffe://${TD}/nodes/node-1`;
type Server = Awaited<ReturnType<typeof startServerProcess>>;
let srv: Server;
let agentDir: string;
let sock: string;
let agentProc: ReturnType<typeof qhxSpawn>;
const agentLogs: Record<string, unknown>[] = [];

function waitLog(
  logs: Record<string, unknown>[],
  pred: (l: Record<string, unknown>) => boolean,
  ms = 20_000,
) {
  return new Promise<Record<string, unknown>>((resolve, reject) => {
    const t0 = Date.now();
    const tick = () => {
      const hit = logs.find(pred);
      if (hit) return resolve(hit);
      if (Date.now() - t0 > ms) return reject(new Error("log line did not appear"));
      setTimeout(tick, 50);
    };
    tick();
  });
}

function startAgent(token: string, dataDir: string, socket: string, serverAddr: string) {
  const child = qhxSpawn([
    "agent",
    "start",
    "--server",
    serverAddr,
    "--trust-bundle",
    path.join(srv.dir, "bundle.pem"),
    "--join-token",
    token,
    "--data-dir",
    dataDir,
    "--socket",
    socket,
    "--health-listen",
    "127.0.0.1:0",
    "--sync-interval",
    "1s",
  ]);
  let buf = "";
  let stderr = "";
  child.stdout!.on("data", (c: Buffer) => {
    buf += c.toString();
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      try {
        agentLogs.push(JSON.parse(buf.slice(0, i)));
      } catch {
        /* not JSON */
      }
      buf = buf.slice(i + 1);
    }
  });
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  return { child, stderr: () => stderr };
}

beforeAll(async () => {
  srv = await startServerProcess();
  fs.writeFileSync(
    path.join(srv.dir, "bundle.pem"),
    qhx(["bundle", "show", "--socket", srv.adminSocket]).stdout,
  );
  const tok = qhx(["token", "generate", "--socket", srv.adminSocket, "--spiffe-id", ALIAS]);
  const token = tok.stdout
    .trim()
    .split("\n")
    .at(-1)!
    .replace(/^Token: /, "");
  for (const [id, uid, ttl] of [
    ["web", 0, "1h"],
    ["fast", 0, "6s"],
  ] as const) {
    const r = qhx([
      "entry",
      "create",
      "--socket",
      srv.adminSocket,
      "--spiffe-id",
      `spiffe://${TD}/${id}`,
      "--parent-id",
      ALIAS,
      "--selector",
      `unix:uid:${uid}`,
      "--x509-svid-ttl",
      ttl,
    ]);
    expect(r.status).toBe(0);
  }
  const pub = tmpDir("qhx-agent-sock-");
  fs.chmodSync(pub, 0o755);
  agentDir = tmpDir();
  sock = path.join(pub, "api.sock");
  agentProc = startAgent(token, agentDir, sock, srv.listen).child;
  await waitLog(agentLogs, (l) => l.msg === "agent started");
});

afterAll(async () => {
  if (agentProc && agentProc.exitCode === null) {
    const exited = new Promise((r) => agentProc.once("exit", r));
    agentProc.kill("SIGTERM");
    await exited;
  }
  await srv?.stop();
});

describe("agent + Workload API, real processes", () => {
  it("`qhx svid fetch` gets the caller's SVIDs (default first) and writes files openssl verifies", () => {
    const out = path.join(tmpDir(), "svid");
    const r = qhx(["svid", "fetch", "--socket", sock, "--write", out]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`SPIFFE ID : spiffe://${TD}/web \\(default\\)`));
    expect(r.stdout).toMatch(new RegExp(`SPIFFE ID : spiffe://${TD}/fast`));
    expect(fs.statSync(path.join(out, "svid.key")).mode & 0o777).toBe(0o600);
    const v = execFileSync(
      "openssl",
      ["verify", "-CAfile", path.join(out, "bundle.pem"), path.join(out, "svid.pem")],
      {
        encoding: "utf8",
      },
    );
    expect(v).toMatch(/OK/);
    const text = execFileSync("openssl", ["x509", "-in", path.join(out, "svid.pem"), "-noout", "-text"], {
      encoding: "utf8",
    });
    expect(text).toContain(`URI:spiffe://${TD}/web`);
    expect(text).toMatch(/2\.25\.77251242596262909329468476093155551153:\s*\n\s*\.\.token/); // assurance extension
  });

  it("SPIFFE_ENDPOINT_SOCKET is honoured, and JWT-SVIDs come through the Workload API", () => {
    const r = qhx(["jwt", "fetch", "--audience", "spiffe://example.org/db"], {
      env: { SPIFFE_ENDPOINT_SOCKET: `unix://${sock}` },
    });
    expect(r.status).toBe(0);
    const claims = JSON.parse(Buffer.from(r.stdout.trim().split(".")[1]!, "base64url").toString());
    expect(claims.sub).toBe(`spiffe://${TD}/web`);
    expect(claims.aud).toEqual(expect.arrayContaining(["spiffe://example.org/db"]));
  });

  it("a caller with no matching entry (user nobody) gets PermissionDenied", () => {
    const r = spawnSync(
      "setpriv",
      [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        process.execPath,
        "--no-warnings",
        CLI,
        "svid",
        "fetch",
        "--socket",
        sock,
      ],
      { encoding: "utf8", timeout: 30_000, cwd: "/" },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/PERMISSION_DENIED: no identity issued/);
  });

  it("a request without the security header gets InvalidArgument (standard gRPC client)", async () => {
    const c = connect(sock);
    await expect(
      unary(c.workload, "FetchJWTSVID", { audience: ["x"] }, new grpc.Metadata()),
    ).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
    const ok = await unary(c.workload, "FetchJWTSVID", { audience: ["x"] });
    expect((ok.svids as unknown[]).length).toBeGreaterThan(0);
    c.close();
  });

  it("rotation is pushed on an open FetchX509SVID stream (short TTL)", async () => {
    const c = connect(sock);
    const reader = new StreamReader(
      (
        c.workload.FetchX509SVID as (
          r: object,
          m: grpc.Metadata,
        ) => grpc.ClientReadableStream<Record<string, unknown>>
      )({}, securityHeader()),
    );
    const serialOfFast = (m: Record<string, unknown>) => {
      const s = (m.svids as { spiffe_id: string; x509_svid: Buffer }[]).find((x) =>
        x.spiffe_id.endsWith("/fast"),
      )!;
      return new crypto.X509Certificate(s.x509_svid.subarray(0, 2 + 2 + s.x509_svid.readUInt16BE(2)))
        .serialNumber;
    };
    const first = serialOfFast(await reader.next());
    let rotated: string | undefined;
    const deadline = Date.now() + 15_000;
    while (!rotated && Date.now() < deadline) {
      const s = serialOfFast(await reader.next(15_000));
      if (s !== first) rotated = s;
    }
    expect(rotated).toBeDefined();
    reader.call.cancel();
    c.close();
  });

  it("a replayed join token is refused", async () => {
    const tok = qhx(["token", "generate", "--socket", srv.adminSocket]);
    const token = tok.stdout
      .trim()
      .split("\n")
      .at(-1)!
      .replace(/^Token: /, "");
    const a = startAgent(token, tmpDir(), path.join(tmpDir(), "a.sock"), srv.listen);
    await waitLog(
      agentLogs,
      (l) =>
        l.msg === "agent started" && l.agentId !== agentLogs.find((x) => x.msg === "agent started")?.agentId,
    );
    const a2 = startAgent(token, tmpDir(), path.join(tmpDir(), "b.sock"), srv.listen);
    const code = await new Promise<number | null>((r) => a2.child.once("exit", r));
    expect(code).toBe(1);
    expect(a2.stderr()).toMatch(/QHX_ATTESTATION_FAILED: join_token: unknown, expired or already used token/);
    a.child.kill("SIGTERM");
    await new Promise((r) => a.child.once("exit", r));
  });

  it("`qhx agent list` shows the node with its attestor, alias and assurance", () => {
    const r = qhx(["agent", "list", "--socket", srv.adminSocket, "-o", "json"]);
    const agents = JSON.parse(r.stdout) as {
      spiffe_id: string;
      attestation_type: string;
      assurance: string;
      aliases: string[];
    }[];
    expect(agents.find((a) => a.aliases.includes(ALIAS))).toMatchObject({
      attestation_type: "join_token",
      assurance: "token",
    });
  });

  it("with the server killed, cached SVIDs are still served; syncing resumes when it returns", async () => {
    expect(await srv.stop("SIGKILL")).toBe(null);
    const r = qhx(["svid", "fetch", "--socket", sock]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/spiffe:\/\/example\.org\/web/);
    await waitLog(agentLogs, (l) => l.msg === "sync with server failed; serving cache");
    // restart on the same data dir and port
    const child = qhxSpawn([
      "server",
      "start",
      "--trust-domain",
      TD,
      "--data-dir",
      srv.dataDir,
      "--listen",
      srv.listen,
      "--health-listen",
      "127.0.0.1:0",
    ]);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on("data", (b: Buffer) => b.toString().includes("server started") && resolve());
      child.once("exit", (code) => reject(new Error(`server exit ${code}`)));
    });
    const n = agentLogs.length;
    const created = qhx([
      "entry",
      "create",
      "--socket",
      srv.adminSocket,
      "--spiffe-id",
      `spiffe://${TD}/late`,
      "--parent-id",
      ALIAS,
      "--selector",
      "unix:uid:0",
    ]);
    expect(created.status).toBe(0);
    await waitLog(
      agentLogs.slice(n),
      (l) => l.msg === "workload SVID issued" && l.spiffeId === `spiffe://${TD}/late`,
    ).catch(async () =>
      waitLog(agentLogs, (l) => l.msg === "workload SVID issued" && l.spiffeId === `spiffe://${TD}/late`),
    );
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  });
});
