#!/usr/bin/env node
import { checkRuntime } from "./runtime-check.js";

const problem = checkRuntime(process.versions);
if (problem) {
  process.stderr.write(`qhx: ${problem}\n`);
  process.exit(1);
}
// node:crypto's WebCrypto ML-DSA is flagged experimental in Node 24; QHx uses it deliberately.
const emit = process.emitWarning;
process.emitWarning = (warning, ...rest) => {
  const text = typeof warning === "string" ? warning : warning?.message;
  if (typeof text === "string" && /ML-DSA|ML-KEM|SQLite/.test(text)) return;
  return emit.call(process, warning, ...rest);
};
const { main } = await import("../dist/host/cli/main.js").catch((e) => {
  if (e && e.code === "ERR_MODULE_NOT_FOUND") {
    process.stderr.write("qhx: the build output is missing (dist/); run `npm ci` or `npm run build`\n");
    process.exit(1);
  }
  throw e;
});
await main(process.argv);
