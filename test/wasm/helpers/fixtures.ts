/**
 * Compiles the AssemblyScript probe modules in test/wasm/fixtures/ with the assemblyscript compiler API
 * into build/test-fixtures/<name>-<hash>.wasm, cached by the hash of the fixture sources, the compiler
 * version and the flags. Concurrent test workers write through a temporary file and an atomic rename.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, "../../..");
const FIXTURES = path.join(ROOT, "test/wasm/fixtures");
const OUT = path.join(ROOT, "build/test-fixtures");
const FLAGS = ["--runtime", "stub", "--use", "abort=", "-O2", "--noAssert"];

function ascVersion(): string {
  const require = createRequire(import.meta.url);
  const pkg = require.resolve("assemblyscript/package.json", { paths: [ROOT] });
  return (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version;
}

function sourceHash(): string {
  const h = createHash("sha256");
  h.update(ascVersion());
  h.update(FLAGS.join(" "));
  for (const f of readdirSync(FIXTURES, { recursive: true, encoding: "utf8" }).sort()) {
    const p = path.join(FIXTURES, f);
    if (!statSync(p).isFile()) continue;
    h.update(f);
    h.update(readFileSync(p));
  }
  return h.digest("hex").slice(0, 16);
}

const memo = new Map<string, Uint8Array>();

/** The compiled bytes of test/wasm/fixtures/<name>.ts. */
export async function fixture(name: string): Promise<Uint8Array> {
  const cached = memo.get(name);
  if (cached) return cached;
  const out = path.join(OUT, `${name}-${sourceHash()}.wasm`);
  if (!existsSync(out)) {
    mkdirSync(OUT, { recursive: true });
    const tmp = `${out}.${process.pid}.tmp`;
    const asc = (await import("assemblyscript/asc")).default;
    const entry = path.relative(ROOT, path.join(FIXTURES, `${name}.ts`));
    // --config: the fixtures' own (empty) asconfig, not the repository's (which adds assembly/index.ts)
    const { error, stderr } = await asc.main(
      [entry, "--baseDir", ROOT, "--config", "test/wasm/fixtures/asconfig.json", "--outFile", tmp, ...FLAGS],
      {},
    );
    if (error) {
      rmSync(tmp, { force: true });
      throw new Error(`asc ${name}.ts failed: ${error.message}\n${stderr.toString()}`);
    }
    renameSync(tmp, out);
  }
  const bytes = new Uint8Array(readFileSync(out));
  memo.set(name, bytes);
  return bytes;
}

interface WasmModuleApi {
  Module: {
    new (bytes: Uint8Array): object;
    imports(m: object): { module: string; name: string; kind: string }[];
    exports(m: object): { name: string; kind: string }[];
  };
}
const WA = (globalThis as unknown as { WebAssembly: WasmModuleApi }).WebAssembly;

/** A module's imports as "module.name" and exports as names. */
export function moduleInterface(bytes: Uint8Array): { imports: string[]; exports: string[] } {
  const m = new WA.Module(bytes);
  return {
    imports: WA.Module.imports(m).map((i) => `${i.module}.${i.name}`),
    exports: WA.Module.exports(m).map((e) => e.name),
  };
}
