/**
 * `npm run bench -- <name…>`: run benchmarks. Each prints QHx beside its reference measured in the same
 * run, and the ratio. With no name, lists them.
 */
const benches: Record<string, () => Promise<unknown>> = {
  issue: () => import("./issue.ts").then((m) => m.run()),
  agent: () => import("./agent.ts").then((m) => m.run()),
  policy: () => import("./policy.ts").then((m) => m.run()),
  crypto: () => import("./crypto.ts").then((m) => m.run()),
  filter: () => import("./filter.ts").then((m) => m.run()),
  "proxy-wasm": () => import("./proxy-wasm.ts").then((m) => m.run()),
  receipts: () => import("./receipts.ts").then((m) => m.run()),
  tunnel: () => import("./tunnel.ts").then((m) => m.run()),
  ecdsa: () => import("./ecdsa.ts").then((m) => m.run()),
  component: () => import("./component.ts").then((m) => m.run()),
  "crypto-policy": () => import("./crypto-policy.ts").then((m) => m.run()),
};

const names = process.argv.slice(2);
if (names.length === 0) {
  process.stdout.write(`usage: npm run bench -- <${Object.keys(benches).join("|")}>\n`);
  process.exit(2);
}
for (const n of names) {
  const b = benches[n];
  if (!b) {
    process.stderr.write(`unknown benchmark "${n}"; known: ${Object.keys(benches).join(", ")}\n`);
    process.exit(2);
  }
  await b();
}
