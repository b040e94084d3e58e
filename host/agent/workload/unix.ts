/**
 * The `unix` workload attestor: what a local process is, from the kernel's peer credentials and /proc.
 *
 *   unix:uid:N, unix:user:NAME          the peer's uid (SO_PEERCRED, used as-is) and its /etc/passwd name
 *   unix:gid:N, unix:group:NAME         the peer's gid (SO_PEERCRED, used as-is) and its /etc/group name
 *   unix:supplementary_gid:N,           each supplementary group (/proc/<pid>/status `Groups:`)
 *   unix:supplementary_group:NAME
 *   unix:path:/abs/exe                  readlink /proc/<pid>/exe (a " (deleted)" suffix is stripped)
 *   unix:sha256:<hex>                   the executable's hash, read through /proc/<pid>/exe so it is the exact
 *                                       inode the process runs; not for deleted executables, nor above
 *                                       hashMaxBytes (the reason is logged). Cached per file version
 *                                       (dev, inode, size, mtime, ctime)
 *   cgroup:path:<path>                  the cgroup v2 (unified) path, /proc/<pid>/cgroup line `0::<path>`
 *   container:id:<64 hex>               the docker / containerd / CRI-O / podman / kubepods container id
 *                                       found in the cgroup path
 *
 * Names that do not resolve are omitted (never guessed). Pid reuse: the process start time (field 22 of
 * /proc/<pid>/stat) is read before and after gathering, and the executable's inode before and after
 * hashing; any change, or the process vanishing, fails with QHX_WORKLOAD_GONE rather than describing
 * some other process. A caller that recorded the start time when the connection was accepted can pass
 * it as `startTime` to close the window between connect and attestation too.
 */
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { open, readFile, readlink, stat, type FileHandle } from "node:fs/promises";
import type { BigIntStats } from "node:fs";
import { QhxError, ValidationError } from "../../core/errors.ts";
import type { Selector } from "../../server/datastore/types.ts";
import { silentLogger, type Logger } from "../../server/logger.ts";
import type { PeerCred, WorkloadAttestor } from "./types.ts";

export const DEFAULT_HASH_MAX_BYTES = 64 * 1024 * 1024;

export interface UnixAttestorOptions {
  /** Executables larger than this get no `sha256` selector (the reason is logged). 0 = never hash. */
  hashMaxBytes?: number;
  /** Emit `cgroup:path:` and `container:id:` selectors. Default true. */
  discoverCgroup?: boolean;
  logger?: Pick<Logger, "warn" | "debug">;
}

/** A peer as SO_PEERCRED reported it, optionally with the start time recorded when it connected. */
export interface AttestedPeer extends PeerCred {
  /** processStartTime(pid) read when the connection was accepted; checked against the live process. */
  startTime?: number;
}

function gone(pid: number, why: string, cause?: unknown): QhxError {
  return new QhxError("QHX_WORKLOAD_GONE", `workload process ${pid} ${why}`, {
    hint: "the caller exited or was replaced during attestation; it can reconnect and retry",
    cause,
  });
}

function errnoOf(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** ENOENT/ESRCH under /proc/<pid> mean the process is gone: rethrow as QHX_WORKLOAD_GONE. */
function rethrowIfGone(pid: number, e: unknown): void {
  const code = errnoOf(e);
  if (code === "ENOENT" || code === "ESRCH") throw gone(pid, "no longer exists", e);
}

function checkPid(pid: number): void {
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new ValidationError(`invalid pid ${pid}`, "pid");
}

/**
 * The start time of process `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat). Together
 * with the pid it names one process for the life of the system. QHX_WORKLOAD_GONE if there is no such
 * process.
 */
export async function processStartTime(pid: number): Promise<number> {
  checkPid(pid);
  let text: string;
  try {
    // procfs files are generated in memory: a synchronous read costs a few µs, where the promise API's
    // open/fstat/read/close round trips through the thread pool cost far more on this hot path
    text = readFileSync(`/proc/${pid}/stat`, "latin1");
  } catch (e) {
    rethrowIfGone(pid, e);
    throw e;
  }
  return parseStartTime(text, pid);
}

/** Field 22 (starttime) of a /proc/<pid>/stat line. The comm field (2) may hold spaces and ')'. */
export function parseStartTime(stat: string, pid = 0): number {
  const close = stat.lastIndexOf(")");
  // After ") " come fields 3 (state), 4, … so field 22 is index 19.
  const field = close < 0 ? undefined : stat.slice(close + 2).split(" ")[19];
  if (field === undefined || !/^\d+$/.test(field)) {
    throw new QhxError("QHX_PROC_PARSE", `cannot parse the start time in /proc/${pid}/stat`);
  }
  return Number(field);
}

/** name by id from /etc/passwd or /etc/group (first entry wins, as getpwuid does); empty if unreadable. */
async function idNames(file: string): Promise<Map<number, string>> {
  const names = new Map<number, string>();
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return names;
  }
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const [name, , id] = line.split(":");
    if (!name || id === undefined || !/^\d+$/.test(id)) continue;
    const n = Number(id);
    if (!names.has(n)) names.set(n, name);
  }
  return names;
}

/** The ids on the `Groups:` line of /proc/<pid>/status. */
export function parseStatusGroups(status: string): number[] {
  const m = /^Groups:[ \t]*(.*)$/m.exec(status);
  if (!m) return [];
  return (m[1] ?? "")
    .trim()
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number);
}

export interface ProcCgroups {
  /** the cgroup v2 (unified hierarchy) path, from the `0::<path>` line */
  unified: string | undefined;
  /** every path, unified and v1, in file order */
  all: string[];
}

/** Parse /proc/<pid>/cgroup (`hierarchy-id:controllers:path` per line; the path may contain ':'). */
export function parseProcCgroup(text: string): ProcCgroups {
  let unified: string | undefined;
  const all: string[] = [];
  for (const line of text.split("\n")) {
    const a = line.indexOf(":");
    const b = a < 0 ? -1 : line.indexOf(":", a + 1);
    if (b < 0) continue;
    const path = line.slice(b + 1);
    if (path === "") continue;
    all.push(path);
    if (line.slice(0, b) === "0:" && unified === undefined) unified = path;
  }
  return { unified, all };
}

const HEX64 = "[0-9a-f]{64}";
/** One path segment that names a container, each capturing the id:
 *  - a bare id: docker cgroupfs `/docker/<id>`, kubepods cgroupfs `/kubepods/burstable/pod<uid>/<id>`,
 *    containerd namespaces `/k8s.io/<id>`, podman cgroupfs `/libpod_parent/libpod-…/<id>`
 *  - a systemd scope: `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
 *    `libpod-<id>.scope`, `nerdctl-<id>.scope` (but not `crio-conmon-…`/`libpod-conmon-…`: the monitor)
 *  - the cgroupfs form of a systemd cgroupsPath: `…slice:cri-containerd:<id>`, `…slice:crio:<id>`,
 *    `…slice:docker:<id>`
 *  - cgroupfs podman: `libpod-<id>` */
const SEGMENT_PATTERNS = [
  new RegExp(`^(${HEX64})$`),
  new RegExp(`^(?:docker|cri-containerd|crio|libpod|nerdctl|containerd)-(${HEX64})(?:\\.scope)?$`),
  new RegExp(`:(?:docker|cri-containerd|crio|containerd):(${HEX64})$`),
];

/**
 * The container id in a cgroup path, or undefined if it names no container. With nested containers the
 * innermost (last) id wins: that is the container the process runs in.
 */
export function containerIdFromCgroupPath(path: string): string | undefined {
  const segments = path.split("/");
  for (let i = segments.length - 1; i >= 0; i--) {
    const seg = segments[i] ?? "";
    for (const re of SEGMENT_PATTERNS) {
      const m = re.exec(seg);
      if (m?.[1]) return m[1];
    }
  }
  return undefined;
}

/** The container id from a parsed /proc/<pid>/cgroup: the unified path first, then the v1 hierarchies. */
export function containerIdFromCgroups(cgroups: ProcCgroups): string | undefined {
  if (cgroups.unified !== undefined) {
    const id = containerIdFromCgroupPath(cgroups.unified);
    if (id) return id;
  }
  for (const p of cgroups.all) {
    const id = containerIdFromCgroupPath(p);
    if (id) return id;
  }
  return undefined;
}

const DELETED = " (deleted)";
const HASH_CHUNK = 1024 * 1024;

function sameFile(a: BigIntStats, b: BigIntStats): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/** Identifies one version of one file: a write changes ctime (which no caller can set back). */
function fileVersionKey(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

/** Hashes of executables already seen, by file version: most workloads call many times. */
const HASH_CACHE_MAX = 256;

export class UnixAttestor implements WorkloadAttestor {
  readonly name = "unix";
  readonly hashMaxBytes: number;
  readonly discoverCgroup: boolean;
  private readonly log: Pick<Logger, "warn" | "debug">;
  private readonly hashCache = new Map<string, string>();

  constructor(options: UnixAttestorOptions = {}) {
    const max = options.hashMaxBytes ?? DEFAULT_HASH_MAX_BYTES;
    if (!Number.isSafeInteger(max) || max < 0) {
      throw new ValidationError("must be a non-negative integer (bytes)", "unix.hashMaxBytes");
    }
    this.hashMaxBytes = max;
    this.discoverCgroup = options.discoverCgroup ?? true;
    this.log = options.logger ?? silentLogger;
  }

  async attest(peer: AttestedPeer): Promise<Selector[]> {
    const { pid, uid, gid } = peer;
    checkPid(pid);
    for (const [k, v] of [
      ["uid", uid],
      ["gid", gid],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 0 || v > 0xffffffff)
        throw new ValidationError(`invalid ${k} ${v}`, k);
    }

    const before = await processStartTime(pid);
    if (peer.startTime !== undefined && peer.startTime !== before) {
      throw gone(pid, "is not the process that connected (its start time changed: pid reused)");
    }

    const [users, groups, supplementary, exe, cgroups] = await Promise.all([
      idNames("/etc/passwd"),
      idNames("/etc/group"),
      this.supplementaryGroups(pid),
      this.executable(pid),
      this.discoverCgroup ? this.cgroups(pid) : Promise.resolve(undefined),
    ]);

    const after = await processStartTime(pid);
    if (after !== before)
      throw gone(pid, "was replaced during attestation (its start time changed: pid reused)");

    const out: Selector[] = [];
    const unix = (value: string): void => {
      out.push({ type: "unix", value });
    };
    // uid and gid exactly as the kernel reported them at connect time (SO_PEERCRED), never from /proc.
    unix(`uid:${uid}`);
    const user = users.get(uid);
    if (user !== undefined) unix(`user:${user}`);
    unix(`gid:${gid}`);
    const group = groups.get(gid);
    if (group !== undefined) unix(`group:${group}`);
    for (const g of supplementary) {
      unix(`supplementary_gid:${g}`);
      const name = groups.get(g);
      if (name !== undefined) unix(`supplementary_group:${name}`);
    }
    if (exe.path !== undefined) unix(`path:${exe.path}`);
    if (exe.sha256 !== undefined) unix(`sha256:${exe.sha256}`);
    if (cgroups) {
      if (cgroups.unified !== undefined) out.push({ type: "cgroup", value: `path:${cgroups.unified}` });
      const id = containerIdFromCgroups(cgroups);
      if (id !== undefined) out.push({ type: "container", value: `id:${id}` });
    }
    return out;
  }

  private async supplementaryGroups(pid: number): Promise<number[]> {
    try {
      return parseStatusGroups(await readFile(`/proc/${pid}/status`, "latin1"));
    } catch (e) {
      rethrowIfGone(pid, e);
      throw e;
    }
  }

  private async cgroups(pid: number): Promise<ProcCgroups | undefined> {
    try {
      return parseProcCgroup(await readFile(`/proc/${pid}/cgroup`, "utf8"));
    } catch (e) {
      rethrowIfGone(pid, e);
      this.log.warn({ pid, err: String(e) }, "unix attestor: cannot read the cgroup; no cgroup selectors");
      return undefined;
    }
  }

  /** path and sha256 of the executable the process runs now (the exact inode, via /proc/<pid>/exe). */
  private async executable(pid: number): Promise<{ path?: string; sha256?: string }> {
    const link = `/proc/${pid}/exe`;
    let first: BigIntStats;
    let target: string;
    try {
      first = await stat(link, { bigint: true });
      target = await readlink(link);
    } catch (e) {
      rethrowIfGone(pid, e);
      // EACCES: we may not inspect this process (no CAP_SYS_PTRACE / different user): omit, never guess.
      this.log.warn(
        { pid, err: String(e) },
        "unix attestor: cannot read the executable; no path/sha256 selectors",
      );
      return {};
    }
    const deleted = target.endsWith(DELETED);
    const path = deleted ? target.slice(0, -DELETED.length) : target;
    if (deleted) {
      this.log.warn(
        { pid, path },
        "unix attestor: the executable was deleted or replaced on disk; no sha256 selector",
      );
      return { path };
    }
    if (this.hashMaxBytes === 0) return { path };
    if (first.size > BigInt(this.hashMaxBytes)) {
      this.log.warn(
        { pid, path, size: Number(first.size), hashMaxBytes: this.hashMaxBytes },
        "unix attestor: executable larger than hashMaxBytes; no sha256 selector",
      );
      return { path };
    }

    let sha256: string | undefined;
    let opened: BigIntStats;
    let fh: FileHandle;
    try {
      fh = await open(link, "r");
    } catch (e) {
      rethrowIfGone(pid, e);
      this.log.warn(
        { pid, path, err: String(e) },
        "unix attestor: cannot open the executable; no sha256 selector",
      );
      return { path };
    }
    try {
      opened = await fh.stat({ bigint: true });
      // Between stat+readlink and open the process may have exec'd another program.
      if (!sameFile(first, opened)) throw gone(pid, "executed another program during attestation");
      sha256 = await this.hashOpened(fh, opened, pid, path);
    } finally {
      await fh.close();
    }
    // And after hashing, it must still be running the inode we hashed.
    let last: BigIntStats;
    try {
      last = await stat(link, { bigint: true });
    } catch (e) {
      rethrowIfGone(pid, e);
      throw e;
    }
    if (!sameFile(opened, last)) throw gone(pid, "executed another program during attestation");
    return sha256 === undefined ? { path } : { path, sha256 };
  }

  /** sha256 of an open executable (cached by file version), or undefined if it is over hashMaxBytes. */
  private async hashOpened(
    fh: FileHandle,
    st: BigIntStats,
    pid: number,
    path: string,
  ): Promise<string | undefined> {
    const key = fileVersionKey(st);
    const hit = this.hashCache.get(key);
    if (hit !== undefined) return hit;
    const hash = createHash("sha256");
    const buf = Buffer.allocUnsafe(HASH_CHUNK);
    let total = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > this.hashMaxBytes) {
        this.log.warn(
          { pid, path, hashMaxBytes: this.hashMaxBytes },
          "unix attestor: executable grew past hashMaxBytes while hashing; no sha256 selector",
        );
        return undefined;
      }
      hash.update(buf.subarray(0, bytesRead));
    }
    // Only cache what did not change while we read it.
    const after = await fh.stat({ bigint: true });
    const digest = hash.digest("hex");
    if (fileVersionKey(after) === key) {
      if (this.hashCache.size >= HASH_CACHE_MAX) {
        const oldest = this.hashCache.keys().next().value;
        if (oldest !== undefined) this.hashCache.delete(oldest);
      }
      this.hashCache.set(key, digest);
    }
    return digest;
  }
}
