import type { Selector } from "../../server/datastore/types.ts";

/** The caller of a local socket, as the kernel reports it (SO_PEERCRED): never taken from the caller. */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/**
 * A workload attestor: turns a caller's pid into selectors (`unix:uid:1000`, `unix:path:/usr/bin/web`, …).
 * One file per attestor under host/agent/workload/, registered in one place.
 */
export interface WorkloadAttestor {
  readonly name: string;
  attest(peer: PeerCred): Promise<Selector[]>;
}
