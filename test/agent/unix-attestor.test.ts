import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { QhxError } from "../../host/core/errors.ts";
import type { Selector } from "../../host/server/datastore/types.ts";
import {
  attestWorkload,
  processStartTime,
  UnixAttestor,
  workloadAttestors,
  type WorkloadAttestor,
} from "../../host/agent/workload/index.ts";
import {
  containerIdFromCgroupPath,
  containerIdFromCgroups,
  DEFAULT_HASH_MAX_BYTES,
  parseProcCgroup,
  parseStartTime,
  parseStatusGroups,
} from "../../host/agent/workload/unix.ts";

const NOBODY = 65534;
const UID = process.getuid!();
const GID = process.getgid!();

const SLEEP = fs.realpathSync(spawnSync("which", ["sleep"], { encoding: "utf8" }).stdout.trim());
const SLEEP_SHA256 = createHash("sha256").update(fs.readFileSync(SLEEP)).digest("hex");

const children: ChildProcess[] = [];
let dir: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-unix-attestor-"));
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Start a process and wait until it runs `exe` (setpriv execs it after a while). */
async function start(cmd: string, args: string[], exe: string): Promise<ChildProcess & { pid: number }> {
  const child = spawn(cmd, args, { stdio: "ignore" });
  children.push(child);
  if (child.pid === undefined) throw new Error(`spawn ${cmd} failed`);
  for (let i = 0; i < 200; i++) {
    try {
      if (fs.readlinkSync(`/proc/${child.pid}/exe`) === exe) return child as ChildProcess & { pid: number };
    } catch {}
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${cmd} did not exec ${exe}`);
}

function strings(selectors: Selector[]): string[] {
  return selectors.map((s) => `${s.type}:${s.value}`);
}

function expectedUnifiedCgroup(pid: number | "self"): string | undefined {
  const line = fs
    .readFileSync(`/proc/${pid}/cgroup`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("0::"));
  return line?.slice(3);
}

async function expectGone(p: Promise<unknown>): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(QhxError);
  expect((err as QhxError).code).toBe("QHX_WORKLOAD_GONE");
}

describe("UnixAttestor on real processes", () => {
  it("a sleep child: uid/gid (and names), path, sha256, cgroup", async () => {
    const child = await start(SLEEP, ["30"], SLEEP);
    const attestor = new UnixAttestor();
    expect(attestor.name).toBe("unix");
    const got = strings(await attestor.attest({ pid: child.pid, uid: UID, gid: GID }));

    expect(got).toContain(`unix:uid:${UID}`);
    expect(got).toContain(`unix:gid:${GID}`);
    if (UID === 0) expect(got).toContain("unix:user:root");
    if (GID === 0) expect(got).toContain("unix:group:root");
    expect(got).toContain(`unix:path:${fs.readlinkSync(`/proc/${child.pid}/exe`)}`);
    expect(got).toContain(`unix:path:${SLEEP}`);
    expect(got).toContain(`unix:sha256:${SLEEP_SHA256}`);

    // The machine's cgroup v2 path, as /proc/self/cgroup says (the child inherited ours).
    const cgroup = expectedUnifiedCgroup("self");
    if (cgroup !== undefined) expect(got).toContain(`cgroup:path:${cgroup}`);
    else expect(got.some((s) => s.startsWith("cgroup:"))).toBe(false);
    expect(got.filter((s) => s.startsWith("cgroup:path:"))).toHaveLength(cgroup === undefined ? 0 : 1);
  });

  it("uid and gid are the SO_PEERCRED values as given, never re-read from /proc", async () => {
    const child = await start(SLEEP, ["30"], SLEEP);
    const got = strings(await new UnixAttestor().attest({ pid: child.pid, uid: 4242, gid: 4343 }));
    expect(got).toContain("unix:uid:4242");
    expect(got).toContain("unix:gid:4343");
    expect(got).not.toContain(`unix:uid:${UID}`);
    expect(got).not.toContain(`unix:gid:${GID}`);
    // No passwd/group entry for these ids: no names, rather than guesses.
    expect(got.some((s) => s.startsWith("unix:user:") || s.startsWith("unix:group:"))).toBe(false);
  });

  it("a process running as nobody with supplementary groups", async () => {
    const child = await start(
      "setpriv",
      [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--groups=50,100", SLEEP, "30"],
      SLEEP,
    );
    const got = strings(await new UnixAttestor().attest({ pid: child.pid, uid: NOBODY, gid: NOBODY }));
    expect(got).toContain(`unix:uid:${NOBODY}`);
    expect(got).toContain("unix:user:nobody");
    expect(got).toContain(`unix:gid:${NOBODY}`);
    const groupFile = fs.readFileSync("/etc/group", "utf8");
    const groupName = (gid: number) =>
      groupFile
        .split("\n")
        .map((l) => l.split(":"))
        .find((f) => f[2] === String(gid))?.[0];
    if (groupName(NOBODY)) expect(got).toContain(`unix:group:${groupName(NOBODY)}`);
    for (const g of [50, 100]) {
      expect(got).toContain(`unix:supplementary_gid:${g}`);
      const name = groupName(g);
      if (name) expect(got).toContain(`unix:supplementary_group:${name}`);
    }
    expect(got).toContain(`unix:sha256:${SLEEP_SHA256}`);
  });

  it("hashMaxBytes below the executable's size: no sha256 selector, and the reason is logged", async () => {
    const child = await start(SLEEP, ["30"], SLEEP);
    const size = fs.statSync(SLEEP).size;
    const warnings: string[] = [];
    const logger = {
      warn: (_obj: object, msg?: string) => warnings.push(msg ?? ""),
      debug: () => {},
    };
    const small = new UnixAttestor({ hashMaxBytes: size - 1, logger: logger as never });
    const got = strings(await small.attest({ pid: child.pid, uid: UID, gid: GID }));
    expect(got).toContain(`unix:path:${SLEEP}`);
    expect(got.some((s) => s.startsWith("unix:sha256:"))).toBe(false);
    expect(warnings.join("\n")).toMatch(/larger than hashMaxBytes/);

    // Exactly the size is allowed.
    const exact = strings(
      await new UnixAttestor({ hashMaxBytes: size }).attest({ pid: child.pid, uid: UID, gid: GID }),
    );
    expect(exact).toContain(`unix:sha256:${SLEEP_SHA256}`);
    expect(new UnixAttestor().hashMaxBytes).toBe(DEFAULT_HASH_MAX_BYTES);
    expect(() => new UnixAttestor({ hashMaxBytes: -1 })).toThrow(/hashMaxBytes/);
  });

  it("a deleted executable: the path without ' (deleted)', and no sha256", async () => {
    const copy = path.join(dir, "sleep-copy");
    fs.copyFileSync(SLEEP, copy);
    fs.chmodSync(copy, 0o755);
    const child = await start(copy, ["30"], copy);
    fs.rmSync(copy);
    expect(fs.readlinkSync(`/proc/${child.pid}/exe`)).toBe(`${copy} (deleted)`);
    const got = strings(await new UnixAttestor().attest({ pid: child.pid, uid: UID, gid: GID }));
    expect(got).toContain(`unix:path:${copy}`);
    expect(got.some((s) => s.startsWith("unix:sha256:"))).toBe(false);
  });

  it("the hash cache follows the file: a changed executable is hashed again", async () => {
    const copy = path.join(dir, "sleep-changing");
    fs.copyFileSync(SLEEP, copy);
    fs.chmodSync(copy, 0o755);
    const attestor = new UnixAttestor();
    const first = await start(copy, ["30"], copy);
    const a1 = strings(await attestor.attest({ pid: first.pid, uid: UID, gid: GID }));
    const a2 = strings(await attestor.attest({ pid: first.pid, uid: UID, gid: GID }));
    expect(a1).toContain(`unix:sha256:${SLEEP_SHA256}`);
    expect(a2).toEqual(a1);
    first.kill("SIGKILL");
    await once(first, "exit");

    // Same inode, new content (an ELF with a trailing byte still runs).
    fs.appendFileSync(copy, Buffer.from([0]));
    const changed = createHash("sha256").update(fs.readFileSync(copy)).digest("hex");
    expect(changed).not.toBe(SLEEP_SHA256);
    const second = await start(copy, ["30"], copy);
    const b = strings(await attestor.attest({ pid: second.pid, uid: UID, gid: GID }));
    expect(b).toContain(`unix:sha256:${changed}`);
    expect(b).not.toContain(`unix:sha256:${SLEEP_SHA256}`);
  });

  it("discoverCgroup: false emits no cgroup or container selectors", async () => {
    const child = await start(SLEEP, ["30"], SLEEP);
    const got = strings(
      await new UnixAttestor({ discoverCgroup: false }).attest({ pid: child.pid, uid: UID, gid: GID }),
    );
    expect(got.some((s) => s.startsWith("cgroup:") || s.startsWith("container:"))).toBe(false);
    expect(got).toContain(`unix:sha256:${SLEEP_SHA256}`);
  });

  it("pid reuse guard: a process that is gone fails with QHX_WORKLOAD_GONE", async () => {
    const child = await start(SLEEP, ["30"], SLEEP);
    const pid = child.pid;
    const t = await processStartTime(pid);
    child.kill("SIGKILL");
    await once(child, "exit");
    await expectGone(new UnixAttestor().attest({ pid, uid: UID, gid: GID }));
    await expectGone(processStartTime(pid));
    await expectGone(new UnixAttestor().attest({ pid, uid: UID, gid: GID, startTime: t }));
  });

  it("pid reuse guard: a start time recorded at connect time must match the live process", async () => {
    const child = await start(SLEEP, ["30"], SLEEP);
    const t = await processStartTime(child.pid);
    const ok = await new UnixAttestor().attest({ pid: child.pid, uid: UID, gid: GID, startTime: t });
    expect(strings(ok)).toContain(`unix:path:${SLEEP}`);
    await expectGone(new UnixAttestor().attest({ pid: child.pid, uid: UID, gid: GID, startTime: t - 1 }));
  });

  it("processStartTime: stable, later for a younger process, field 22 of /proc/<pid>/stat", async () => {
    const self = await processStartTime(process.pid);
    expect(await processStartTime(process.pid)).toBe(self);
    const child = await start(SLEEP, ["30"], SLEEP);
    expect(await processStartTime(child.pid)).toBeGreaterThanOrEqual(self);
    await expect(processStartTime(0)).rejects.toThrow(/invalid pid/);
    // comm may hold spaces and parentheses: parse after the last ')'.
    const line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100\n";
    expect(parseStartTime(line)).toBe(987654);
    expect(() => parseStartTime("1234 (x) S 1")).toThrow(/start time/);
  });
});

describe("/proc parsing", () => {
  it("Groups: line of /proc/<pid>/status", () => {
    expect(parseStatusGroups("Name:\tx\nGroups:\t4 24 27 100 \nNSpid:\t1\n")).toEqual([4, 24, 27, 100]);
    expect(parseStatusGroups("Name:\tx\nGroups:\t\nNSpid:\t1\n")).toEqual([]);
    expect(parseStatusGroups("Name:\tx\n")).toEqual([]);
  });

  it("/proc/<pid>/cgroup, v2 and hybrid", () => {
    expect(parseProcCgroup("0::/user.slice/user-1000.slice/session-2.scope\n")).toEqual({
      unified: "/user.slice/user-1000.slice/session-2.scope",
      all: ["/user.slice/user-1000.slice/session-2.scope"],
    });
    const id = "a".repeat(64);
    const hybrid = `12:memory:/docker/${id}\n1:name=systemd:/docker/${id}\n0::/\n`;
    const parsed = parseProcCgroup(hybrid);
    expect(parsed.unified).toBe("/");
    expect(containerIdFromCgroups(parsed)).toBe(id);
    expect(containerIdFromCgroups(parseProcCgroup("0::/init.scope\n"))).toBeUndefined();
  });
});

describe("container id from a cgroup path", () => {
  const id = "3f1c2d4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
  const id2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  const cases: [string, string, string | undefined][] = [
    ["docker, cgroupfs driver", `/docker/${id}`, id],
    ["docker, systemd driver", `/system.slice/docker-${id}.scope`, id],
    ["docker in docker: the innermost", `/docker/${id2}/docker/${id}`, id],
    [
      "kubepods + containerd, systemd driver",
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-${id}.scope`,
      id,
    ],
    [
      "kubepods + containerd, cgroupfs driver",
      `/kubepods/burstable/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/${id}`,
      id,
    ],
    [
      "kubepods besteffort, cgroupfs",
      `/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/${id}`,
      id,
    ],
    [
      "kubepods systemd cgroupsPath in cgroupfs form",
      `/kubepods-besteffort-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice:cri-containerd:${id}`,
      id,
    ],
    [
      "cri-o, systemd driver",
      `/kubepods.slice/kubepods-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/crio-${id}.scope`,
      id,
    ],
    [
      "cri-o conmon is not the container",
      `/kubepods.slice/kubepods-podx.slice/crio-conmon-${id}.scope`,
      undefined,
    ],
    ["podman rootful, systemd", `/machine.slice/libpod-${id}.scope`, id],
    [
      "podman rootless, systemd",
      `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${id}.scope/container`,
      id,
    ],
    ["podman conmon is not the container", `/machine.slice/libpod-conmon-${id}.scope`, undefined],
    ["podman, cgroupfs", `/libpod_parent/libpod-${id}`, id],
    ["containerd namespace (nerdctl, cgroupfs)", `/k8s.io/${id}`, id],
    ["inside a cgroup namespace", `/../../kubepods/burstable/pod1/${id}`, id],
    ["a user session", "/user.slice/user-1000.slice/session-3.scope", undefined],
    ["a system service", "/system.slice/sshd.service", undefined],
    ["the root", "/", undefined],
    ["too short to be an id", `/docker/${id.slice(0, 12)}`, undefined],
    ["upper case is not an id", `/docker/${id.toUpperCase()}`, undefined],
  ];
  for (const [what, p, want] of cases) {
    it(what, () => {
      expect(containerIdFromCgroupPath(p)).toBe(want);
    });
  }
});

describe("workload attestor registry", () => {
  it("unix is on by default, configurable, and can be disabled; unknown names are refused", () => {
    const all = workloadAttestors();
    expect(all.map((a) => a.name)).toEqual(["unix"]);
    const [unix] = workloadAttestors({ unix: { hashMaxBytes: 1024, discoverCgroup: false } });
    expect(unix).toBeInstanceOf(UnixAttestor);
    expect((unix as UnixAttestor).hashMaxBytes).toBe(1024);
    expect((unix as UnixAttestor).discoverCgroup).toBe(false);
    expect(workloadAttestors({ unix: false })).toEqual([]);
    expect(() => workloadAttestors({ docker: {} } as never)).toThrow(/unknown workload attestor "docker"/);
    expect(() => workloadAttestors({ unix: "yes" } as never)).toThrow(/workloadAttestors\.unix/);
  });

  it("attestWorkload merges: deduplicated and sorted", async () => {
    const fake = (name: string, selectors: Selector[]): WorkloadAttestor => ({
      name,
      attest: async () => selectors,
    });
    const got = await attestWorkload({ pid: 1, uid: 0, gid: 0 }, [
      fake("a", [
        { type: "unix", value: "uid:0" },
        { type: "cgroup", value: "path:/" },
        { type: "unix", value: "gid:0" },
      ]),
      fake("b", [
        { type: "unix", value: "uid:0" },
        { type: "container", value: "id:x" },
      ]),
    ]);
    expect(got).toEqual([
      { type: "cgroup", value: "path:/" },
      { type: "container", value: "id:x" },
      { type: "unix", value: "gid:0" },
      { type: "unix", value: "uid:0" },
    ]);
  });

  it("attestWorkload fails as a whole when an attestor fails", async () => {
    const child = await start(SLEEP, ["30"], SLEEP);
    const pid = child.pid;
    child.kill("SIGKILL");
    await once(child, "exit");
    await expectGone(attestWorkload({ pid, uid: UID, gid: GID }, workloadAttestors()));
  });

  it("the real pipeline on a live child", async () => {
    const child = await start(SLEEP, ["30"], SLEEP);
    const got = await attestWorkload({ pid: child.pid, uid: UID, gid: GID }, workloadAttestors());
    const sorted = [...got].sort((a, b) =>
      a.type === b.type ? (a.value < b.value ? -1 : 1) : a.type < b.type ? -1 : 1,
    );
    expect(got).toEqual(sorted);
    expect(strings(got)).toContain(`unix:sha256:${SLEEP_SHA256}`);
  });
});
