// Packages the post-quantum kernels as a WebAssembly component (world `kernels`, wit/qhx-crypto.wit):
//   build/qhx-crypto-component-core.wasm   core module, built by build-wasm.mjs from assembly/component
//   -> exports renamed to their canonical-ABI names (AssemblyScript cannot spell `pkg/iface@v#fn`)
//   -> component-type section embedded (jco embed = wasm-tools component embed)
//   -> build/qhx-crypto.component.wasm     the component, for wasmtime-based hosts (jco new)
//   -> build/component/                    the same transpiled to JS + core Wasm by jco, for Node/browsers
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { componentEmbed, componentNew, transpile } from "@bytecodealliance/jco";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
process.chdir(root);

const PKG = "qhx:crypto";
const VERSION = "0.1.0";
const fn = (iface, name) => `${PKG}/${iface}@${VERSION}#${name}`;
// core export name -> canonical-ABI names; post-return functions wipe and reset the argument arena
const RENAMES = {
  mldsa_keygen: [fn("mldsa", "keygen")],
  mldsa_sign: [fn("mldsa", "sign")],
  mldsa_verify: [fn("mldsa", "verify")],
  mlkem_keygen: [fn("mlkem", "keygen")],
  mlkem_encapsulate: [fn("mlkem", "encapsulate")],
  mlkem_decapsulate: [fn("mlkem", "decapsulate")],
  post_secret: ["mldsa#keygen", "mlkem#keygen", "mlkem#decapsulate"].map((s) => {
    const [i, n] = s.split("#");
    return `cabi_post_${fn(i, n)}`;
  }),
  post_reset: ["mldsa#sign", "mldsa#verify", "mlkem#encapsulate"].map((s) => {
    const [i, n] = s.split("#");
    return `cabi_post_${fn(i, n)}`;
  }),
  memory: ["memory"],
  cabi_realloc: ["cabi_realloc"],
};

function readU32(buf, pos) {
  let result = 0;
  let shift = 0;
  for (;;) {
    const b = buf[pos++];
    result |= (b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [result >>> 0, pos];
    shift += 7;
    if (shift > 28) throw new Error("LEB128 too long");
  }
}
function u32(n) {
  const out = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** Rewrite the export section of a core module: each export is renamed per `table` (or dropped). */
export function renameExports(bytes, table) {
  if (bytes.readUInt32LE(0) !== 0x6d736100) throw new Error("not a Wasm module");
  const parts = [bytes.subarray(0, 8)];
  const seen = new Set();
  let pos = 8;
  while (pos < bytes.length) {
    const id = bytes[pos];
    const [size, start] = readU32(bytes, pos + 1);
    const end = start + size;
    if (id !== 7) {
      parts.push(bytes.subarray(pos, end));
      pos = end;
      continue;
    }
    let [count, p] = readU32(bytes, start);
    const entries = [];
    for (let i = 0; i < count; i++) {
      const [len, q] = readU32(bytes, p);
      const name = bytes.subarray(q, q + len).toString("utf8");
      const kind = bytes[q + len];
      const [index, r] = readU32(bytes, q + len + 1);
      p = r;
      const names = table[name];
      if (!names) throw new Error(`unexpected export "${name}" in the component core module`);
      seen.add(name);
      for (const n of names) entries.push([n, kind, index]);
    }
    const body = [...u32(entries.length)];
    for (const [n, kind, index] of entries) {
      const b = Buffer.from(n, "utf8");
      body.push(...u32(b.length), ...b, kind, ...u32(index));
    }
    parts.push(Buffer.from([7, ...u32(body.length), ...body]));
    pos = end;
  }
  for (const name of Object.keys(table)) {
    if (!seen.has(name)) throw new Error(`the component core module does not export "${name}"`);
  }
  return Buffer.concat(parts);
}

const t0 = performance.now();
const core = fs.readFileSync("build/qhx-crypto-component-core.wasm");
const renamed = renameExports(core, RENAMES);
const embedded = await componentEmbed({
  binary: renamed,
  witPath: path.resolve("wit/qhx-crypto.wit"),
  world: "kernels",
  metadata: [["processed-by", [["qhx-build-component", VERSION]]]],
});
const component = await componentNew(embedded, []);
fs.writeFileSync("build/qhx-crypto.component.wasm", component);
const { files } = await transpile(component, { name: "qhx-crypto", noTypescript: false, quiet: true });
fs.rmSync("build/component", { recursive: true, force: true });
for (const [name, data] of Object.entries(files)) {
  const out = path.join("build/component", name);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, data);
}
process.stdout.write(
  `build:component build/qhx-crypto.component.wasm (${component.length} bytes) + build/component/ ` +
    `(${Object.keys(files).length} files, ${Math.round(performance.now() - t0)} ms)\n`,
);
