/**
 * The QHx agent: attests its node to the server, keeps its own X509-SVID fresh, syncs the registration
 * entries that apply to its node, and keeps an X509-SVID for each of them — keys generated here, never
 * sent anywhere — rotated at about half their life with random jitter. It serves them to workloads
 * (Workload API / SDS) through the WorkloadIdentityProvider interface, after attesting each caller.
 *
 * When the server is unreachable the agent keeps serving what it has while it is valid, never anything
 * expired, and retries with exponential backoff.
 */
import crypto, { type KeyObject } from "node:crypto";
import { EventEmitter } from "node:events";
import fs from "node:fs";
import path from "node:path";
import {
  type SvidKeyAlg,
  generateKeyPair,
  generateWorkloadKeyPair,
  isWorkloadKeyAlg,
  SVID_KEY_ALGS,
  type WorkloadKeyAlg,
  workloadPkcs8,
} from "../core/alg.ts";
import type { CompositePrivateKey } from "../core/composite.ts";
import { bundleToSpiffeJson, parseSpiffeBundle } from "../core/bundle.ts";
import type { TrustBundle } from "../core/bundle-types.ts";
import type { Clock } from "../core/clock.ts";
import { QhxError, formatError } from "../core/errors.ts";
import { fromPem, toPem } from "../core/pem.ts";
import { parseCertificate } from "../core/x509.ts";
import type { RegistrationEntry, Selector } from "../server/datastore/types.ts";
import { writeFileAtomic } from "../server/keymanager/disk.ts";
import type { Logger } from "../server/logger.ts";
import type { NodeAttestorClient } from "./attestors/index.ts";
import { ServerClient } from "./server-client.ts";
import { createCsr } from "../core/csr.ts";
import { PolicyHolder } from "../policy/distribution.ts";
import type { EntryJson } from "../core/entry.ts";
import { attestWorkload, processStartTime } from "./workload/index.ts";
import type { PeerCred, WorkloadAttestor } from "./workload/types.ts";
import type { WorkloadIdentities, WorkloadIdentityProvider, WorkloadX509Svid } from "./workload-api/types.ts";

/** A base64 DER PKCS#10 request for the key: the server issues only to the holder of the private key. */
const csrOf = (key: KeyObject | CompositePrivateKey) => Buffer.from(createCsr(key)).toString("base64");

export interface AgentOptions {
  trustDomain: string;
  server: { host: string; port: number };
  /** initial trust anchors (bootstrap bundle), DER; empty only with insecureBootstrap */
  bootstrapRoots: Uint8Array[];
  insecureBootstrap: boolean;
  dataDir: string;
  attestor: NodeAttestorClient;
  workloadAttestors: WorkloadAttestor[];
  workloadKeyType: SvidKeyAlg;
  syncIntervalMs: number;
  clock: Clock;
  logger: Logger;
}

interface CachedSvid {
  entry: RegistrationEntry;
  /** the algorithm of the SVID's key (composite ML-DSA + ECDSA included) */
  keyAlg: WorkloadKeyAlg;
  svid: WorkloadX509Svid;
  notBefore: number;
  /** ms epoch when to rotate */
  renewAt: number;
}

function entryFromJson(j: EntryJson): RegistrationEntry {
  return {
    id: j.id,
    spiffeId: j.spiffe_id,
    parentId: j.parent_id,
    selectors: j.selectors.map((s) => {
      const i = s.indexOf(":");
      return { type: s.slice(0, i), value: s.slice(i + 1) };
    }),
    namespace: j.namespace,
    labels: j.labels,
    x509SvidTtl: j.x509_svid_ttl,
    jwtSvidTtl: j.jwt_svid_ttl,
    dnsNames: j.dns_names,
    federatesWith: j.federates_with,
    admin: j.admin,
    expiresAt: j.expires_at,
    createdAt: j.created_at,
    updatedAt: j.updated_at,
    revision: j.revision,
  };
}

/** What the server's crypto policy says about an entry's key (sync): the one to generate, the ones allowed. */
interface KeyPolicy {
  keyAlg: WorkloadKeyAlg;
  allowed: readonly WorkloadKeyAlg[];
}

/**
 * An entry's key policy from sync: the server names the algorithm (`svid_key_alg`, null when its crypto
 * policy has no preference: the agent's configured `workloadKeyType`) and the allowed ones. Unknown names
 * (a newer server) are ignored rather than guessed.
 */
function keyPolicyOf(
  j: { svid_key_alg?: unknown; allowed_key_algs?: unknown },
  fallback: SvidKeyAlg,
): KeyPolicy {
  const allowed = Array.isArray(j.allowed_key_algs) ? j.allowed_key_algs.filter(isWorkloadKeyAlg) : [];
  const keyAlg = isWorkloadKeyAlg(j.svid_key_alg)
    ? j.svid_key_alg
    : allowed.length === 0 || allowed.includes(fallback)
      ? fallback
      : allowed[0]!;
  return { keyAlg, allowed: allowed.length ? allowed : SVID_KEY_ALGS };
}

/** Renew at half of the remaining life, plus up to 10% of the life as jitter (no rotation storms). */
export function renewTime(notBeforeMs: number, notAfterMs: number, random = Math.random()): number {
  const life = notAfterMs - notBeforeMs;
  return notBeforeMs + life / 2 + random * life * 0.1;
}

function selectorsMatch(entrySelectors: Selector[], have: Selector[]): boolean {
  const set = new Set(have.map((s) => `${s.type}:${s.value}`));
  return entrySelectors.every((s) => set.has(`${s.type}:${s.value}`));
}

export class Agent implements WorkloadIdentityProvider {
  private readonly o: AgentOptions;
  private readonly log: Logger;
  private readonly events = new EventEmitter();
  private client: ServerClient;
  private agentId = "";
  private assurance = "";
  private agentKey: KeyObject | undefined;
  private agentChain: Uint8Array[] = [];
  private agentNotAfter = 0;
  private agentRenewAt = 0;
  private bundle: TrustBundle | undefined;
  /** foreign bundles from federation, by trust domain (sync sends those this node's entries name) */
  private federated = new Map<string, TrustBundle>();
  private entries: RegistrationEntry[] = [];
  private keyPolicies = new Map<string, KeyPolicy>();
  private readonly cache = new Map<string, CachedSvid>();
  private readonly selectorCache = new Map<string, { selectors: Selector[]; until: number }>();
  private readonly jwtCache = new Map<string, { token: string; renewAt: number; expiresAt: number }>();
  private timer: NodeJS.Timeout | undefined;
  private policyHolder: PolicyHolder | undefined;
  private backoffMs = 0;
  private stopped = false;
  private syncing: Promise<void> | undefined;
  lastSyncOk = 0;

  constructor(o: AgentOptions) {
    this.o = o;
    this.log = o.logger;
    this.events.setMaxListeners(0);
    this.client = new ServerClient({
      host: o.server.host,
      port: o.server.port,
      trustDomain: o.trustDomain,
      roots: o.bootstrapRoots,
      insecure: o.insecureBootstrap && o.bootstrapRoots.length === 0,
    });
  }

  private get dir(): string {
    return path.join(this.o.dataDir, "agent");
  }

  private nowMs(): number {
    return this.o.clock.now().getTime();
  }

  get id(): string {
    return this.agentId;
  }

  get assuranceLevel(): string {
    return this.assurance;
  }

  trustBundle(): TrustBundle | undefined {
    return this.bundle;
  }

  /** Attest (or resume from a stored, still-valid agent SVID), sync once, then keep syncing. */
  async start(): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if (!this.resume()) await this.attest();
    await this.syncOnce();
    this.schedule(this.o.syncIntervalMs);
  }

  private resume(): boolean {
    try {
      const state = JSON.parse(fs.readFileSync(path.join(this.dir, "state.json"), "utf8")) as {
        agent_id: string;
        assurance: string;
      };
      const chain = fromPem(fs.readFileSync(path.join(this.dir, "svid.pem"), "utf8"));
      const key = crypto.createPrivateKey(fs.readFileSync(path.join(this.dir, "svid.key")));
      const bundle = parseSpiffeBundle(
        fs.readFileSync(path.join(this.dir, "bundle.json"), "utf8"),
        this.o.trustDomain,
      );
      const leaf = parseCertificate(chain[0]!);
      if (leaf.notAfter.getTime() <= this.nowMs() + 5000) {
        this.log.info({ agentId: state.agent_id }, "stored agent SVID expired; attesting again");
        return false;
      }
      this.agentId = state.agent_id;
      this.assurance = state.assurance;
      this.setAgentCredentials(chain, key);
      this.setBundle(bundle);
      this.log.info(
        { agentId: this.agentId, notAfter: leaf.notAfter.toISOString() },
        "resumed with stored agent SVID",
      );
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
        this.log.warn({ reason: formatError(e) }, "stored agent state unusable; attesting again");
      }
      return false;
    }
  }

  private setAgentCredentials(chain: Uint8Array[], key: KeyObject): void {
    const leaf = parseCertificate(chain[0]!);
    this.agentKey = key;
    this.agentChain = chain;
    this.agentNotAfter = leaf.notAfter.getTime();
    this.agentRenewAt = renewTime(leaf.notBefore.getTime(), leaf.notAfter.getTime());
    this.client.update({
      clientCert: {
        cert: chain.map((d) => toPem(d)).join(""),
        key: key.export({ type: "pkcs8", format: "pem" }) as string,
      },
    });
  }

  private setBundle(b: TrustBundle): void {
    const changed = !this.bundle || this.bundle.sequence !== b.sequence;
    this.bundle = b;
    if (changed) {
      this.client.update({ roots: b.x509Authorities, insecure: false });
      writeFileAtomic(path.join(this.dir, "bundle.json"), bundleToSpiffeJson(b), 0o644);
    }
  }

  /**
   * Replace the federated bundles with the sync's (a trust domain no longer there, e.g. its federation
   * was deleted, is dropped at once). A bundle that does not parse is left out and logged.
   */
  private setFederatedBundles(docs: Record<string, string>): void {
    const next = new Map<string, TrustBundle>();
    for (const [td, doc] of Object.entries(docs)) {
      if (td === this.o.trustDomain) continue;
      try {
        next.set(td, parseSpiffeBundle(doc, td));
      } catch (e) {
        this.log.warn({ trustDomain: td, reason: formatError(e) }, "federated bundle refused");
      }
    }
    const key = (m: Map<string, TrustBundle>) =>
      [...m.entries()]
        .map(([td, b]) => `${td}#${b.sequence}`)
        .sort()
        .join(",");
    const changed = key(next) !== key(this.federated);
    this.federated = next;
    if (changed) {
      this.log.info({ trustDomains: [...next.keys()] }, "federated bundles updated");
      this.events.emit("change");
    }
  }

  /** The own bundle, then the federated bundles the given entries name in federates_with. */
  private bundlesFor(entries: RegistrationEntry[]): TrustBundle[] {
    const out = this.bundle ? [this.bundle] : [];
    const tds = new Set(entries.flatMap((e) => e.federatesWith));
    for (const td of [...tds].sort()) {
      const b = this.federated.get(td);
      if (b) out.push(b);
    }
    return out;
  }

  private persistAgent(): void {
    writeFileAtomic(
      path.join(this.dir, "svid.key"),
      this.agentKey!.export({ type: "pkcs8", format: "pem" }) as string,
      0o600,
    );
    writeFileAtomic(path.join(this.dir, "svid.pem"), this.agentChain.map((d) => toPem(d)).join(""), 0o644);
    writeFileAtomic(
      path.join(this.dir, "state.json"),
      `${JSON.stringify({ agent_id: this.agentId, assurance: this.assurance })}\n`,
      0o644,
    );
  }

  private async attest(): Promise<void> {
    if (this.o.insecureBootstrap && this.o.bootstrapRoots.length === 0) {
      this.log.warn(
        "INSECURE BOOTSTRAP: the server's identity is NOT verified for node attestation; anyone on the path " +
          "can impersonate it. Give --trust-bundle instead.",
      );
    }
    const kp = generateKeyPair("ec-p256");
    const a = this.o.attestor;
    let r = await this.client.call<Record<string, unknown>>("POST", "/agent/v1/attest", {
      attestor: a.name,
      payload: await a.payload(),
      csr: csrOf(kp.privateKey),
    });
    for (let round = 0; r.challenge !== undefined; round++) {
      if (round >= 5) throw new QhxError("QHX_ATTESTATION_FAILED", "too many attestation rounds");
      r = await this.client.call<Record<string, unknown>>("POST", "/agent/v1/attest", {
        session: r.session,
        response: await a.answer(r.challenge),
        csr: csrOf(kp.privateKey),
      });
    }
    const res = r as { agent_id: string; svid: string[]; bundle: string; assurance: string };
    this.agentId = res.agent_id;
    this.assurance = res.assurance;
    this.setBundle(parseSpiffeBundle(res.bundle, this.o.trustDomain));
    this.setAgentCredentials(
      res.svid.flatMap((p) => fromPem(p)),
      kp.privateKey,
    );
    this.persistAgent();
    this.log.info({ agentId: this.agentId, attestor: a.name, assurance: this.assurance }, "node attested");
  }

  private async renewAgent(): Promise<void> {
    const kp = generateKeyPair("ec-p256");
    const r = await this.client.call<{ svid: string[] }>("POST", "/agent/v1/renew", {
      csr: csrOf(kp.privateKey),
    });
    this.setAgentCredentials(
      r.svid.flatMap((p) => fromPem(p)),
      kp.privateKey,
    );
    this.persistAgent();
    this.log.info(
      { agentId: this.agentId, notAfter: new Date(this.agentNotAfter).toISOString() },
      "agent SVID renewed",
    );
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.syncOnce().then(
        () => {
          this.backoffMs = 0;
          this.schedule(this.o.syncIntervalMs);
        },
        (e) => {
          this.backoffMs = Math.min(Math.max(this.backoffMs * 2, 500), 30_000);
          this.log.warn(
            { reason: formatError(e), retryInMs: this.backoffMs },
            "sync with server failed; serving cache",
          );
          this.schedule(this.backoffMs);
        },
      );
    }, ms);
    this.timer.unref?.();
  }

  /** One sync round: renew own SVID if due, fetch entries and bundle, (re)issue SVIDs that need it. */
  syncOnce(): Promise<void> {
    this.syncing ??= this.doSync().finally(() => {
      this.syncing = undefined;
    });
    return this.syncing;
  }

  private async doSync(): Promise<void> {
    if (this.nowMs() >= this.agentRenewAt) {
      if (this.nowMs() >= this.agentNotAfter) {
        this.log.warn({ agentId: this.agentId }, "agent SVID expired; attesting again");
        await this.attest();
      } else {
        await this.renewAgent();
      }
    }
    const s = await this.client.call<{
      entries: (EntryJson & { svid_key_alg?: unknown; allowed_key_algs?: unknown })[];
      bundle: string;
      bundle_sequence: number;
      federated_bundles?: Record<string, string>;
      assurance: string;
      policy?: { version: number; digest: string } | null;
    }>("GET", "/agent/v1/sync");
    if (s.policy && (this.policyHolder?.version?.digest ?? "") !== s.policy.digest) await this.fetchPolicy();
    this.setBundle(parseSpiffeBundle(s.bundle, this.o.trustDomain));
    this.setFederatedBundles(s.federated_bundles ?? {});
    this.assurance = s.assurance;
    this.entries = s.entries.map(entryFromJson);
    this.keyPolicies = new Map(s.entries.map((j) => [j.id, keyPolicyOf(j, this.o.workloadKeyType)]));
    let changed = false;
    const live = new Set(this.entries.map((e) => e.id));
    for (const id of this.cache.keys()) {
      if (!live.has(id)) {
        this.cache.delete(id);
        changed = true;
      }
    }
    const now = this.nowMs();
    const due = this.entries.filter((e) => {
      const c = this.cache.get(e.id);
      // a crypto policy change takes effect at the next rotation, at once if the key's algorithm is no
      // longer allowed
      return (
        !c ||
        c.renewAt <= now ||
        c.entry.revision !== e.revision ||
        !this.keyPolicyFor(e.id).allowed.includes(c.keyAlg)
      );
    });
    if (due.length > 0) {
      // the server takes at most 500 CSRs a request
      for (let i = 0; i < due.length; i += 500) await this.issueBatch(due.slice(i, i + 500));
      changed = true;
    } else {
      // entries may have changed in ways that don't need a new SVID (e.g. selectors)
      for (const e of this.entries) {
        const c = this.cache.get(e.id);
        // federatesWith also changes without an entry update: the server trims it per the crypto
        // policy's accept_from, so a policy apply must reach the cached entry at the next sync
        if (
          c &&
          (c.entry.updatedAt !== e.updatedAt || c.entry.federatesWith.join(",") !== e.federatesWith.join(","))
        ) {
          c.entry = e;
          changed = true;
        }
      }
    }
    this.lastSyncOk = now;
    if (changed) this.events.emit("change");
  }

  private keyPolicyFor(entryId: string): KeyPolicy {
    return this.keyPolicies.get(entryId) ?? { keyAlg: this.o.workloadKeyType, allowed: SVID_KEY_ALGS };
  }

  private async issueBatch(batch: RegistrationEntry[]): Promise<void> {
    const algs = new Map(batch.map((e) => [e.id, this.keyPolicyFor(e.id).keyAlg]));
    const keys = new Map(batch.map((e) => [e.id, generateWorkloadKeyPair(algs.get(e.id)!)]));
    const r = await this.client.call<{
      svids: { entry_id: string; spiffe_id: string; chain: string[]; expires_at: number }[];
      denied?: { entry_id: string; spiffe_id: string; code: string; message: string }[];
    }>("POST", "/agent/v1/svids", {
      csrs: batch.map((e) => ({ entry_id: e.id, csr: csrOf(keys.get(e.id)!.privateKey) })),
    });
    const byId = new Map(batch.map((e) => [e.id, e]));
    for (const d of r.denied ?? []) {
      // a denied entry keeps no SVID: drop what we had (it must not be served past the policy change)
      this.cache.delete(d.entry_id);
      this.log.warn(
        { spiffeId: d.spiffe_id, entryId: d.entry_id, reason: d.message },
        "SVID issuance denied by policy",
      );
    }
    for (const sv of r.svids) {
      const entry = byId.get(sv.entry_id)!;
      const chain = sv.chain.flatMap((p) => fromPem(p));
      const leaf = new crypto.X509Certificate(chain[0]!);
      const nb = Date.parse(leaf.validFrom);
      const na = Date.parse(leaf.validTo);
      this.cache.set(entry.id, {
        entry,
        keyAlg: algs.get(entry.id)!,
        notBefore: nb,
        renewAt: renewTime(nb, na),
        svid: {
          spiffeId: sv.spiffe_id,
          chain,
          privateKey: new Uint8Array(workloadPkcs8(keys.get(entry.id)!.privateKey)),
          expiresAt: sv.expires_at,
          ...(entry.labels.hint ? { hint: entry.labels.hint } : {}),
        },
      });
      this.log.debug(
        {
          spiffeId: sv.spiffe_id,
          entryId: entry.id,
          expiresAt: new Date(sv.expires_at * 1000).toISOString(),
        },
        "workload SVID issued",
      );
    }
    if (batch.length <= 20) {
      for (const sv of r.svids)
        this.log.info({ spiffeId: sv.spiffe_id, entryId: sv.entry_id }, "workload SVID issued");
    } else {
      this.log.info({ count: r.svids.length }, "workload SVIDs issued");
    }
  }

  /**
   * Fetch the current signed policy version, verify it with the server's policy key (received over the
   * authenticated channel) and swap it in. A version that fails verification or is older is refused and
   * the one in force keeps serving.
   */
  private async fetchPolicy(): Promise<void> {
    const r = await this.client.call<{ public_key: string; kid: string; version: unknown }>(
      "GET",
      "/agent/v1/policy",
    );
    if (!r.version) return;
    this.policyHolder ??= new PolicyHolder(r.public_key);
    try {
      if (await this.policyHolder.update(r.version)) {
        this.log.info({ policyVersion: this.policyHolder.version }, "policy version installed");
        this.events.emit("change");
      }
    } catch (e) {
      this.log.error({ reason: formatError(e) }, "policy version refused; keeping the one in force");
    }
  }

  /** The verified Cedar policy in force on this node (for tunnels and filters), if any. */
  get policy(): PolicyHolder | undefined {
    return this.policyHolder;
  }

  /** Entries currently cached (for `qhx agent` introspection and tests). */
  cachedSvids(): { entryId: string; spiffeId: string; expiresAt: number; keyAlg: WorkloadKeyAlg }[] {
    return [...this.cache.values()].map((c) => ({
      entryId: c.entry.id,
      spiffeId: c.svid.spiffeId,
      expiresAt: c.svid.expiresAt,
      keyAlg: c.keyAlg,
    }));
  }

  // --- WorkloadIdentityProvider -------------------------------------------------------------------------

  /**
   * Workload selectors, cached for 2 s per (pid, process start time): a stream re-resolves its caller on
   * every change, and a client may call many times a second. The start time guards against pid reuse.
   */
  private async selectorsOf(peer: PeerCred): Promise<Selector[]> {
    const start = await processStartTime(peer.pid);
    const key = `${peer.pid}:${start}:${peer.uid}:${peer.gid}`;
    const now = Date.now();
    const hit = this.selectorCache.get(key);
    if (hit && hit.until > now) return hit.selectors;
    const selectors = await attestWorkload(
      { ...peer, startTime: start } as PeerCred,
      this.o.workloadAttestors,
    );
    if (this.selectorCache.size > 10_000) this.selectorCache.clear();
    this.selectorCache.set(key, { selectors, until: now + 2000 });
    return selectors;
  }

  private async matchingEntries(peer: PeerCred): Promise<CachedSvid[]> {
    const selectors = await this.selectorsOf(peer);
    const nowS = Math.floor(this.nowMs() / 1000);
    return [...this.cache.values()]
      .filter((c) => c.svid.expiresAt > nowS && selectorsMatch(c.entry.selectors, selectors))
      .sort((a, b) => a.entry.createdAt - b.entry.createdAt || a.entry.id.localeCompare(b.entry.id));
  }

  async identitiesFor(peer: PeerCred): Promise<WorkloadIdentities> {
    const matched = await this.matchingEntries(peer);
    return { svids: matched.map((c) => c.svid), bundles: this.bundlesFor(matched.map((c) => c.entry)) };
  }

  onChange(listener: () => void): () => void {
    this.events.on("change", listener);
    return () => this.events.off("change", listener);
  }

  async fetchJwtSvids(
    peer: PeerCred,
    audience: string[],
    spiffeId?: string,
  ): Promise<{ spiffeId: string; token: string; hint?: string }[]> {
    let matched = await this.matchingEntries(peer);
    if (spiffeId !== undefined) matched = matched.filter((c) => c.svid.spiffeId === spiffeId);
    if (spiffeId === undefined) matched = matched.slice(0, 1);
    const out = [];
    for (const c of matched) {
      const key = `${c.entry.id}|${[...audience].sort().join(" ")}`;
      const hit = this.jwtCache.get(key);
      const now = this.nowMs();
      let token: string;
      if (hit && hit.renewAt > now) token = hit.token;
      else {
        const r = await this.client.call<{ token: string; expires_at: number }>("POST", "/agent/v1/jwt", {
          entry_id: c.entry.id,
          audience,
        });
        token = r.token;
        this.jwtCache.set(key, {
          token,
          expiresAt: r.expires_at * 1000,
          renewAt: renewTime(now, r.expires_at * 1000, 0),
        });
      }
      out.push({ spiffeId: c.svid.spiffeId, token, ...(c.svid.hint ? { hint: c.svid.hint } : {}) });
    }
    return out;
  }

  allBundles(): TrustBundle[] {
    return [...(this.bundle ? [this.bundle] : []), ...this.federated.values()];
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.syncing?.catch(() => undefined);
    this.client.close();
    this.events.removeAllListeners();
  }
}
