/** Start and stop a throwaway swtpm (TPM 2.0 over TCP on 127.0.0.1) for tests. */
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const TOOLS = [
  "swtpm",
  "tpm2_createek",
  "tpm2_createak",
  "tpm2_activatecredential",
  "tpm2_quote",
  "tpm2_nvdefine",
];

/** Why the swtpm tests cannot run here, or undefined when they can. */
export function swtpmUnavailable(): string | undefined {
  const missing = TOOLS.filter((t) => spawnSync("sh", ["-c", `command -v ${t}`]).status !== 0);
  return missing.length
    ? `missing ${missing.join(", ")} (apt-get install swtpm swtpm-tools tpm2-tools)`
    : undefined;
}

async function listen(port: number): Promise<net.Server | undefined> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(undefined));
    s.listen(port, "127.0.0.1", () => resolve(s));
  });
}

/** A free port P with P+1 free too: the swtpm TCTI expects the control channel on the next port. */
async function freePortPair(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const first = await listen(0);
    if (!first) continue;
    const port = (first.address() as net.AddressInfo).port;
    const second = port < 65535 ? await listen(port + 1) : undefined;
    await new Promise((r) => first.close(r));
    if (second) {
      await new Promise((r) => second.close(r));
      return port;
    }
  }
  throw new Error("no free pair of ports");
}

async function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(port, "127.0.0.1");
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

export interface Swtpm {
  tcti: string;
  /** run a tpm2-tools command against this TPM */
  tool(cmd: string, args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export async function startSwtpm(): Promise<Swtpm> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-swtpm-"));
  const port = await freePortPair();
  const ctrl = port + 1;
  const proc: ChildProcess = spawn(
    "swtpm",
    [
      ...["socket", "--tpm2", "--tpmstate", `dir=${dir}`],
      ...["--server", `type=tcp,port=${port},bindaddr=127.0.0.1`],
      ...["--ctrl", `type=tcp,port=${ctrl},bindaddr=127.0.0.1`],
      ...["--flags", "not-need-init,startup-clear"],
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  proc.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const deadline = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill();
      throw new Error(`swtpm did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const tcti = `swtpm:host=127.0.0.1,port=${port}`;
  return {
    tcti,
    tool: (cmd, args) =>
      new Promise((resolve, reject) =>
        execFile(
          cmd,
          args,
          { env: { ...process.env, TPM2TOOLS_TCTI: tcti }, cwd: dir },
          (err, out, errOut) => (err ? reject(new Error(`${cmd}: ${errOut || err.message}`)) : resolve(out)),
        ),
      ),
    stop: async () => {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
