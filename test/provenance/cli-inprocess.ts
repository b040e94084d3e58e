/** Run `qhx …` in this process (the real command code, real sockets and files), capturing its output. */
export async function qhxIn(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  const { main } = await import("../../host/cli/main.ts");
  let stdout = "";
  let stderr = "";
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string | Uint8Array) => {
    stdout += typeof s === "string" ? s : Buffer.from(s).toString("utf8");
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((s: string | Uint8Array) => {
    stderr += typeof s === "string" ? s : Buffer.from(s).toString("utf8");
    return true;
  }) as typeof process.stderr.write;
  const before = process.exitCode;
  process.exitCode = 0;
  try {
    await main(["node", "qhx", ...args]);
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
  const status = Number(process.exitCode ?? 0);
  process.exitCode = before;
  return { status, stdout, stderr };
}
