/**
 * Run the CLI straight from source (Node 24 strips the types): `npx node host/cli/run.ts …`.
 * The installed entry point is bin/qhx.js, which runs the built dist/ instead.
 */
// @ts-expect-error plain JavaScript module without types
import { checkRuntime } from "../../bin/runtime-check.js";
import { main } from "./main.ts";

const problem = checkRuntime(process.versions) as string | null;
if (problem) {
  process.stderr.write(`qhx: ${problem}\n`);
  process.exit(1);
}
await main(process.argv);
