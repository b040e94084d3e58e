import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  assertPeerCredAvailable,
  loadPeerCredAddon,
  peerCredOf,
  peerCredOfFd,
  peerGroupsOf,
  socketFd,
} from "../../host/agent/peercred.ts";
import { attestWorkload, workloadAttestors } from "../../host/agent/workload/index.ts";
import { parseStatusGroups } from "../../host/agent/workload/unix.ts";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLIENT = path.join(HERE, "fixtures", "peer-client.mjs");
const ADDON = path.resolve(HERE, "../../build/peercred.node");
const NOBODY = 65534;

let dir: string;
let sockPath: string;
let server: net.Server;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-peercred-"));
  // Reachable by the `nobody` client.
  fs.chmodSync(dir, 0o777);
  sockPath = path.join(dir, "agent.sock");
  server = net.createServer();
  server.listen(sockPath);
  await once(server, "listening");
  fs.chmodSync(sockPath, 0o777);
});

afterAll(async () => {
  server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function nextConnection(): Promise<net.Socket> {
  return once(server, "connection").then(([s]) => s as net.Socket);
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr?.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  return once(child, "exit").then(([code]) => ({ code: code as number | null, stdout, stderr }));
}

describe("peerCredOf (SO_PEERCRED through the native addon)", () => {
  it("the addon is built and loads", () => {
    expect(fs.existsSync(ADDON)).toBe(true);
    expect(() => assertPeerCredAvailable()).not.toThrow();
    const addon = loadPeerCredAddon();
    expect(typeof addon.getPeerCred).toBe("function");
    expect(typeof addon.getPeerGroups).toBe("function");
  });

  it("a client in this process: pid, uid and gid are ours, on both ends", async () => {
    const accepted = nextConnection();
    const client = net.connect(sockPath);
    await once(client, "connect");
    const sock = await accepted;
    try {
      const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };
      expect(peerCredOf(sock)).toEqual(me);
      // The client's peer is the server, which is this process too.
      expect(peerCredOf(client)).toEqual(me);
      expect(socketFd(sock)).toBeGreaterThanOrEqual(0);
      const groups = parseStatusGroups(fs.readFileSync("/proc/self/status", "latin1"));
      expect(peerGroupsOf(sock).sort((a, b) => a - b)).toEqual(groups.sort((a, b) => a - b));
    } finally {
      client.destroy();
      sock.destroy();
    }
  });

  it("a client running as nobody (setpriv): uid/gid 65534, its own pid, no groups; the unix attestor names it", async () => {
    const accepted = nextConnection();
    const child = spawn(
      "setpriv",
      [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", process.execPath, CLIENT, sockPath],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const exited = exitOf(child);
    const sock = await Promise.race([
      accepted,
      exited.then((r) => {
        throw new Error(`client exited early (${r.code}): ${r.stderr}`);
      }),
    ]);
    const cred = peerCredOf(sock);
    // setpriv execs node in place, so the connecting process is the spawned child itself.
    expect(cred).toEqual({ pid: child.pid, uid: NOBODY, gid: NOBODY });
    expect(peerGroupsOf(sock)).toEqual([]);

    const selectors = await attestWorkload(cred, workloadAttestors());
    const values = selectors.map((s) => `${s.type}:${s.value}`);
    expect(values).toContain(`unix:uid:${NOBODY}`);
    expect(values).toContain(`unix:gid:${NOBODY}`);
    expect(values).toContain("unix:user:nobody");
    expect(values).toContain(`unix:path:${fs.realpathSync(process.execPath)}`);
    expect(values.some((v) => v.startsWith("unix:supplementary_gid:"))).toBe(false);

    sock.end(JSON.stringify(cred));
    const r = await exited;
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(cred);
  });

  it("SO_PEERGROUPS reports the peer's supplementary groups", async () => {
    const accepted = nextConnection();
    const child = spawn(
      "setpriv",
      [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--groups=100,50", process.execPath, CLIENT, sockPath],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const exited = exitOf(child);
    const sock = await accepted;
    expect(peerCredOf(sock).uid).toBe(NOBODY);
    expect(peerGroupsOf(sock).sort((a, b) => a - b)).toEqual([50, 100]);
    sock.end("ok");
    expect((await exited).code).toBe(0);
  });

  it("refuses a TCP socket (the kernel would report pid 0 / uid 65534 for it)", async () => {
    const tcp = net.createServer();
    tcp.listen(0, "127.0.0.1");
    await once(tcp, "listening");
    const accepted = once(tcp, "connection").then(([s]) => s as net.Socket);
    const client = net.connect((tcp.address() as net.AddressInfo).port, "127.0.0.1");
    const sock = await accepted;
    try {
      expect(() => peerCredOf(sock)).toThrow(expect.objectContaining({ code: "QHX_PEERCRED_FAILED" }));
      expect(() => peerCredOf(sock)).toThrow(/non-Unix socket.*EAFNOSUPPORT/);
    } finally {
      client.destroy();
      sock.destroy();
      tcp.close();
    }
  });

  it("a closed socket has no fd: QHX_PEERCRED_UNAVAILABLE", async () => {
    const accepted = nextConnection();
    const client = net.connect(sockPath);
    const sock = await accepted;
    client.destroy();
    sock.destroy();
    expect(socketFd(sock)).toBeUndefined();
    expect(() => peerCredOf(sock)).toThrow(expect.objectContaining({ code: "QHX_PEERCRED_UNAVAILABLE" }));
  });

  it("a file descriptor that is not a socket: QHX_PEERCRED_FAILED with the errno text", () => {
    const fd = fs.openSync("/proc/self/stat", "r");
    try {
      expect(() => peerCredOfFd(fd)).toThrow(/Socket operation on non-socket \(ENOTSOCK\)/);
      expect(() => peerCredOfFd(fd)).toThrow(expect.objectContaining({ code: "QHX_PEERCRED_FAILED" }));
    } finally {
      fs.closeSync(fd);
    }
    const addon = loadPeerCredAddon();
    expect(() => addon.getPeerCred(-1)).toThrow(RangeError);
    expect(() => addon.getPeerCred("3" as unknown as number)).toThrow(TypeError);
  });

  // The addon is pure Node-API: the same binary loads under another Node (the machine's Node 20, if any).
  const otherNode = ["/usr/bin/node", "/usr/local/bin/node"].find(
    (p) => fs.existsSync(p) && fs.realpathSync(p) !== fs.realpathSync(process.execPath),
  );
  it.skipIf(!otherNode)("the same binary works under another Node.js", () => {
    const script = `
      const net = require("node:net");
      const addon = require(process.argv[1]);
      const srv = net.createServer((s) => {
        const c = addon.getPeerCred(s._handle.fd);
        console.log(JSON.stringify({ version: process.version, ok: c.pid === process.pid && c.uid === process.getuid() }));
        s.destroy(); srv.close(); client.destroy();
      });
      const p = process.argv[2];
      let client;
      srv.listen(p, () => { client = net.connect(p); });`;
    const r = spawnSync(otherNode!, ["-e", script, ADDON, path.join(dir, "other-node.sock")], {
      encoding: "utf8",
      timeout: 20_000,
    });
    expect(r.stderr).toBe("");
    const out = JSON.parse(r.stdout) as { version: string; ok: boolean };
    expect(out.ok).toBe(true);
    expect(out.version).not.toBe(process.version);
  });
});
