// Builds every AssemblyScript module. The core module comes from asconfig.json; each further module
// (crypto kernels, policy evaluator, filters) is declared by a `wasm.build.json` file beside its sources:
//   { "modules": [ { "entry": "kernels.ts", "out": "build/qhx-crypto-simd.wasm", "args": ["--enable", "simd"] } ] }
// `entry` is relative to the json file, `out` to the repository root; `args` are extra asc flags.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import asc from "assemblyscript/asc";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
process.chdir(root);

function findBuildFiles(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...findBuildFiles(p));
    else if (e.name === "wasm.build.json") out.push(p);
  }
  return out;
}

const jobs = [{ name: "core (asconfig.json)", argv: ["--config", "asconfig.json", "--target", "release"] }];
for (const dir of ["assembly", "filters"]) {
  if (!fs.existsSync(dir)) continue;
  for (const file of findBuildFiles(dir)) {
    const spec = JSON.parse(fs.readFileSync(file, "utf8"));
    for (const m of spec.modules ?? []) {
      const entry = path.relative(root, path.resolve(path.dirname(file), m.entry));
      jobs.push({
        name: `${entry} -> ${m.out}`,
        // an explicit config: otherwise asc merges asconfig.json, whose entries (the core module's SPIFFE
        // functions) would leak into every module's exports
        argv: [
          entry,
          "--config",
          "scripts/asconfig.module.json",
          "--outFile",
          m.out,
          "-O3",
          ...(m.args ?? []),
        ],
      });
    }
  }
}

fs.mkdirSync("build", { recursive: true });
let failed = 0;
for (const job of jobs) {
  const t0 = performance.now();
  const { error, stderr } = await asc.main(job.argv, {});
  if (error) {
    failed++;
    process.stderr.write(`build:wasm FAILED ${job.name}\n${stderr.toString()}\n`);
  } else {
    process.stdout.write(`build:wasm ${job.name} (${Math.round(performance.now() - t0)} ms)\n`);
  }
}
process.exit(failed ? 1 : 0);
