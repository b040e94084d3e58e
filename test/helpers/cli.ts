import { type SpawnOptions, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const ROOT = path.resolve(import.meta.dirname, "../..");
export const CLI = path.join(ROOT, "host/cli/run.ts");
const NODE_ARGS = ["--no-warnings"];

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Run `qhx …` from source in a real child process and wait for it. */
export function qhx(
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): RunResult {
  const r = spawnSync(process.execPath, [...NODE_ARGS, CLI, ...args], {
    encoding: "utf8",
    input: opts.input,
    env: { ...process.env, ...opts.env },
    cwd: opts.cwd ?? ROOT,
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Start `qhx …` in the background. */
export function qhxSpawn(args: string[], opts: SpawnOptions = {}) {
  return spawn(process.execPath, [...NODE_ARGS, CLI, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    ...opts,
  });
}

export function tmpDir(prefix = "qhx-test-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Start a real server process on a fresh data dir and wait until it logs "server started". */
export async function startServerProcess(extra: string[] = [], td = "example.org") {
  const dir = tmpDir();
  const dataDir = path.join(dir, "data");
  const child = qhxSpawn([
    "server",
    "start",
    "--trust-domain",
    td,
    "--data-dir",
    dataDir,
    "--listen",
    "127.0.0.1:0",
    "--health-listen",
    "127.0.0.1:0",
    ...extra,
  ]);
  const logs: Record<string, unknown>[] = [];
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  const started = await new Promise<{ listen: string; healthListen: string; adminSocket: string }>(
    (resolve, reject) => {
      let buf = "";
      const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 30_000);
      child.stdout!.on("data", (c: Buffer) => {
        buf += c.toString();
        for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          try {
            const rec = JSON.parse(line) as Record<string, unknown>;
            logs.push(rec);
            if (rec.msg === "server started") {
              clearTimeout(timer);
              resolve({
                listen: rec.listen as string,
                healthListen: rec.healthListen as string,
                adminSocket: rec.adminSocket as string,
              });
            }
          } catch {
            /* ignore */
          }
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`server exited ${code}: ${stderr}`));
      });
    },
  );
  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    child.kill(signal);
    return exited;
  };
  return { child, dir, dataDir, logs, stderrText: () => stderr, ...started, stop };
}
