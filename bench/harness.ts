/** Minimal timing harness: run `fn` repeatedly for `ms` after a warm-up; report operations per second. */
export async function opsPerSec(
  fn: () => unknown | Promise<unknown>,
  ms = 1500,
  warmup = 200,
): Promise<number> {
  const isAsync = fn() instanceof Promise;
  const until = (deadline: number) => async () => {
    let n = 0;
    while (performance.now() < deadline) {
      for (let i = 0; i < 16; i++) {
        if (isAsync) await fn();
        else fn();
      }
      n += 16;
    }
    return n;
  };
  await until(performance.now() + warmup)();
  const t0 = performance.now();
  const n = await until(t0 + ms)();
  return (n * 1000) / (performance.now() - t0);
}

export function fmt(n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(1);
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "))
    .join("\n");
}
