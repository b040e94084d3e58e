/**
 * The workload attestor registry: the one place that knows every workload attestor. A new attestor is a
 * file under host/agent/workload/ plus one line in FACTORIES.
 */
import { ValidationError } from "../../core/errors.ts";
import type { Selector } from "../../server/datastore/types.ts";
import type { Logger } from "../../server/logger.ts";
import type { PeerCred, WorkloadAttestor } from "./types.ts";
import { UnixAttestor, type UnixAttestorOptions } from "./unix.ts";

export type { PeerCred, WorkloadAttestor } from "./types.ts";
export { UnixAttestor, processStartTime, type AttestedPeer, type UnixAttestorOptions } from "./unix.ts";

/**
 * Which workload attestors the agent runs, by name, with their options (the agent config's
 * `workloadAttestors` section). An attestor left out gets its defaults; `false` disables it.
 */
export interface WorkloadAttestorsConfig {
  unix?: Omit<UnixAttestorOptions, "logger"> | false;
}

type Factory = (
  options: Record<string, unknown>,
  logger: Pick<Logger, "warn" | "debug"> | undefined,
) => WorkloadAttestor;

const FACTORIES: Record<string, Factory> = {
  unix: (options, logger) => new UnixAttestor({ ...(options as UnixAttestorOptions), logger }),
};

/** The names of every known workload attestor. */
export const WORKLOAD_ATTESTOR_NAMES: readonly string[] = Object.keys(FACTORIES);

/** Build the configured workload attestors (all known ones, with defaults, unless disabled). */
export function workloadAttestors(
  config: WorkloadAttestorsConfig = {},
  options: { logger?: Pick<Logger, "warn" | "debug"> } = {},
): WorkloadAttestor[] {
  const raw = config as Record<string, unknown>;
  for (const name of Object.keys(raw)) {
    if (!Object.hasOwn(FACTORIES, name)) {
      throw new ValidationError(
        `unknown workload attestor "${name}" (known: ${WORKLOAD_ATTESTOR_NAMES.join(", ")})`,
        "workloadAttestors",
      );
    }
  }
  const out: WorkloadAttestor[] = [];
  for (const [name, factory] of Object.entries(FACTORIES)) {
    const opts = raw[name];
    if (opts === false) continue;
    if (
      opts !== undefined &&
      opts !== true &&
      (typeof opts !== "object" || opts === null || Array.isArray(opts))
    ) {
      throw new ValidationError("must be an object of options or false", `workloadAttestors.${name}`);
    }
    out.push(
      factory((opts === undefined || opts === true ? {} : opts) as Record<string, unknown>, options.logger),
    );
  }
  return out;
}

function compareSelectors(a: Selector, b: Selector): number {
  if (a.type !== b.type) return a.type < b.type ? -1 : 1;
  if (a.value !== b.value) return a.value < b.value ? -1 : 1;
  return 0;
}

/**
 * Run every attestor on the peer and merge their selectors: deduplicated, sorted by type then value
 * (code-unit order, so the result is deterministic). Any attestor failing fails the whole attestation
 * (e.g. QHX_WORKLOAD_GONE): a partial answer is never returned.
 */
export async function attestWorkload(
  peer: PeerCred,
  attestors: readonly WorkloadAttestor[],
): Promise<Selector[]> {
  const results = await Promise.all(attestors.map((a) => a.attest(peer)));
  const seen = new Map<string, Selector>();
  for (const selectors of results) {
    for (const s of selectors) {
      const key = `${s.type}\u0000${s.value}`;
      if (!seen.has(key)) seen.set(key, { type: s.type, value: s.value });
    }
  }
  return [...seen.values()].sort(compareSelectors);
}
