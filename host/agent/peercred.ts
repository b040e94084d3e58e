/**
 * Who is calling on a local socket, as the kernel reports it: SO_PEERCRED (pid, uid, gid at connect time)
 * and SO_PEERGROUPS (the peer's supplementary groups) through the small Node-API addon in
 * native/peercred (built by `npm run build:native` into build/peercred.node). Node does not expose these,
 * and nothing here is taken from the caller or guessed from /proc tables.
 *
 * The path is resolved relative to this module, so it works both from source (host/agent/peercred.ts ->
 * ../../build/) and compiled by tsc (dist/host/agent/peercred.js -> ../../../build/).
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { QhxError } from "../core/errors.ts";
import type { PeerCred } from "./workload/types.ts";

/** The raw exports of build/peercred.node (native/peercred/peercred.c). */
export interface PeerCredAddon {
  /** getsockopt(SO_PEERCRED); throws an Error with errno text (`code` = errno name) on failure. */
  getPeerCred(fd: number): PeerCred;
  /** getsockopt(SO_PEERGROUPS) (Linux >= 4.13). */
  getPeerGroups(fd: number): number[];
}

const CANDIDATES = ["../../build/peercred.node", "../../../build/peercred.node"];

let cached: PeerCredAddon | undefined;
let cachedError: QhxError | undefined;

function unavailable(message: string, hint: string, cause?: unknown): QhxError {
  return new QhxError("QHX_PEERCRED_UNAVAILABLE", message, { hint, cause });
}

/** Load build/peercred.node (once). Throws QHX_PEERCRED_UNAVAILABLE if this platform or build has none. */
export function loadPeerCredAddon(): PeerCredAddon {
  if (cached) return cached;
  if (cachedError) throw cachedError;
  if (process.platform !== "linux") {
    cachedError = unavailable(
      `the QHx agent needs SO_PEERCRED to identify workloads, which is Linux-only (this is ${process.platform})`,
      "run the agent on Linux",
    );
    throw cachedError;
  }
  const tried: string[] = [];
  for (const rel of CANDIDATES) {
    const url = new URL(rel, import.meta.url);
    const file = fileURLToPath(url);
    if (!existsSync(file)) {
      tried.push(file);
      continue;
    }
    try {
      const addon = createRequire(import.meta.url)(file) as Partial<PeerCredAddon>;
      if (typeof addon.getPeerCred !== "function" || typeof addon.getPeerGroups !== "function") {
        throw new Error("exports getPeerCred/getPeerGroups missing");
      }
      cached = addon as PeerCredAddon;
      return cached;
    } catch (e) {
      // Not cached: a rebuild (npm run build:native) may fix it without restarting the process.
      throw unavailable(
        `failed to load the peercred addon ${file}: ${e instanceof Error ? e.message : String(e)}`,
        "rebuild it with npm run build:native",
        e,
      );
    }
  }
  throw unavailable(
    `the peercred native addon is not built (looked at ${tried.join(", ")})`,
    "run npm run build:native (needs a C compiler)",
  );
}

/** Throws QHX_PEERCRED_UNAVAILABLE (with a hint) unless SO_PEERCRED works here; for agent start-up. */
export function assertPeerCredAvailable(): void {
  loadPeerCredAddon();
}

/**
 * The OS file descriptor of a connected net.Socket (a Unix-domain socket accepted by a net.Server), or
 * undefined when it has none (destroyed, not yet connected, or not fd-backed). Node keeps it on the
 * internal libuv handle; this is the one place that reaches into it.
 */
export function socketFd(socket: Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === "number" && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

function requireFd(socket: Socket): number {
  const fd = socketFd(socket);
  if (fd === undefined) {
    throw unavailable(
      "the socket has no file descriptor (closed, not connected, or not a Unix-domain socket)",
      "peer credentials can only be read from a connected Unix-domain socket",
    );
  }
  return fd;
}

function sockoptFailed(what: string, fd: number, e: unknown): QhxError {
  const errno = (e as { code?: unknown } | null)?.code;
  return new QhxError(
    "QHX_PEERCRED_FAILED",
    `${what} on fd ${fd}: ${e instanceof Error ? e.message : String(e)}${typeof errno === "string" ? ` (${errno})` : ""}`,
    { cause: e },
  );
}

/** The kernel's credentials of the process at the other end of `fd` (a connected Unix-domain socket). */
export function peerCredOfFd(fd: number): PeerCred {
  const addon = loadPeerCredAddon();
  let cred: PeerCred;
  try {
    cred = addon.getPeerCred(fd);
  } catch (e) {
    throw sockoptFailed("SO_PEERCRED", fd, e);
  }
  return { pid: cred.pid, uid: cred.uid, gid: cred.gid };
}

/**
 * The kernel's credentials (pid, uid, gid) of the process that connected `socket`: a socket accepted by a
 * net.Server listening on a Unix-domain path. Throws QHX_PEERCRED_UNAVAILABLE when the addon or the fd
 * is missing, QHX_PEERCRED_FAILED when the kernel refuses (e.g. not a Unix-domain socket).
 */
export function peerCredOf(socket: Socket): PeerCred {
  loadPeerCredAddon();
  return peerCredOfFd(requireFd(socket));
}

/** The peer's supplementary group ids at connect time (SO_PEERGROUPS), as the kernel reports them. */
export function peerGroupsOf(socket: Socket): number[] {
  const addon = loadPeerCredAddon();
  const fd = requireFd(socket);
  try {
    return addon.getPeerGroups(fd);
  } catch (e) {
    throw sockoptFailed("SO_PEERGROUPS", fd, e);
  }
}
