// Builds the native addons under native/ with the system C compiler, directly: no node-gyp, no network.
//
//   native/peercred/peercred.c -> build/peercred.node   (SO_PEERCRED / SO_PEERGROUPS, Linux only)
//
// The addons use Node-API only, so the binary does not depend on the Node.js that runs this script
// (the build may run under one Node and the agent under another). Headers come from the node-api-headers
// package. Set CC to use another compiler, CFLAGS to add flags.
//
// On a platform other than Linux there is nothing to build: the script says so and succeeds, and the
// agent refuses to start with a clear error (host/agent/peercred.ts).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
process.chdir(root);

const ADDONS = [{ name: "peercred", sources: ["native/peercred/peercred.c"], out: "build/peercred.node" }];

function say(line) {
  process.stdout.write(`build:native ${line}\n`);
}
function fail(line) {
  process.stderr.write(`build:native FAILED: ${line}\n`);
  process.exit(1);
}

if (process.platform !== "linux") {
  say(
    `skipped: the native addons (SO_PEERCRED) are Linux-only and this is ${process.platform}; ` +
      "the QHx agent will not start here (the server and CLI work)",
  );
  process.exit(0);
}

// The C compiler.
const cc = process.env.CC?.trim() || "cc";
const probe = spawnSync(cc, ["--version"], { encoding: "utf8" });
if (probe.error || probe.status !== 0) {
  const why = probe.error?.code === "ENOENT" ? "not found" : (probe.error?.message ?? `exit ${probe.status}`);
  fail(
    `no C compiler: \`${cc}\` ${why}. The agent needs a small native addon (native/peercred) compiled ` +
      "at install; install a C compiler (Debian/Ubuntu: apt-get install gcc libc6-dev; Alpine: apk add " +
      "build-base; RHEL/Fedora: dnf install gcc) or set CC, then run npm run build:native",
  );
}
const ccVersion = probe.stdout.split("\n")[0]?.trim() ?? cc;

// Node-API headers.
let includeDir;
try {
  const require = createRequire(import.meta.url);
  includeDir = require("node-api-headers").include_dir;
} catch {
  includeDir = path.join(root, "node_modules", "node-api-headers", "include");
}
if (!fs.existsSync(path.join(includeDir, "node_api.h"))) {
  fail(`Node-API headers not found (looked in ${includeDir}); run npm ci (devDependency node-api-headers)`);
}

const cflags = [
  "-shared",
  "-fPIC",
  "-O2",
  "-std=gnu11",
  "-Wall",
  "-Wextra",
  "-Werror",
  "-fvisibility=hidden",
  "-fstack-protector-strong",
  "-D_FORTIFY_SOURCE=2",
  "-Wl,-z,relro,-z,now",
  ...(process.env.CFLAGS ? process.env.CFLAGS.split(/\s+/).filter(Boolean) : []),
];

fs.mkdirSync("build", { recursive: true });
say(`compiler: ${ccVersion}`);
for (const addon of ADDONS) {
  const t0 = performance.now();
  // Build next to the target and rename, so a half-written file never replaces a good one (and a
  // process that has the old one loaded keeps its inode).
  const tmp = `${addon.out}.tmp-${process.pid}`;
  const argv = [...cflags, "-I", path.relative(root, includeDir), ...addon.sources, "-o", tmp];
  say(`${cc} ${argv.join(" ")}`);
  const r = spawnSync(cc, argv, { stdio: ["ignore", "inherit", "inherit"] });
  if (r.error || r.status !== 0) {
    fs.rmSync(tmp, { force: true });
    fail(
      `${addon.name}: ${cc} ${r.error ? r.error.message : `exited with ${r.status ?? r.signal}`} (see above)`,
    );
  }
  fs.renameSync(tmp, addon.out);
  const size = fs.statSync(addon.out).size;
  say(`${addon.sources.join(" ")} -> ${addon.out} (${size} bytes, ${Math.round(performance.now() - t0)} ms)`);
}
