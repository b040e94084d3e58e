/**
 * The federation refresher: for every relationship, fetch the foreign bundle at its refresh hint
 * (`spiffe_refresh_hint`, bounded by refresh.min_interval … max_interval; refresh.default_interval when
 * the bundle has none), retry failures with exponential backoff and ±20 % jitter, and keep the last good
 * bundle whenever the endpoint is down or answers something that fails a rule. A fetched bundle is
 * refused when
 * - the endpoint's TLS authentication fails (fetch.ts),
 * - it is not a SPIFFE bundle, holds no key, or holds an X.509 authority of another trust domain,
 * - its spiffe_sequence is lower than the last accepted one, or equal with different keys.
 * Time comes from the server's clock; tests drive `refreshNow(td)` and `tick()` without sleeping.
 * Every fetch presents this server's X509-SVID (spiffe://<td>/qhx/server, an EC P-256 key, re-issued at
 * half its life) as the TLS client certificate, so the foreign endpoint can apply its releasability rules;
 * a refusal (403) is a failed refresh like any other: the last good bundle is kept.
 * Metrics per relationship: qhx_federation_refresh_total{trust_domain,result},
 * qhx_federation_bundle_sequence, qhx_federation_last_success_timestamp_seconds,
 * qhx_federation_consecutive_failures.
 */
import { Counter, Gauge } from "prom-client";
import { generateKeyPair } from "../../core/alg.ts";
import { toPem } from "../../core/pem.ts";
import { bundleToSpiffeJson, parseSpiffeBundle, sameBundleContent } from "../../core/bundle.ts";
import type { TrustBundle } from "../../core/bundle-types.ts";
import { formatError, isQhxError, NotFoundError, QhxError } from "../../core/errors.ts";
import { SpiffeId } from "../../core/spiffeid.ts";
import type { FederationConfig } from "../config.ts";
import type { ServerCore } from "../core.ts";
import type { FederationRelationship } from "../datastore/types.ts";
import { fetchBundleDocument } from "./fetch.ts";
import { checkForeignBundle, FEDERATION_ERROR_CODES, FederationError } from "./relationship.ts";

export interface RefreshState {
  lastAttemptAt: number | null;
  lastSuccessAt: number | null;
  lastError: { code: string; message: string } | null;
  consecutiveFailures: number;
  /** ms epoch of the next scheduled refresh */
  nextRefreshAt: number;
}

export interface RefreshResult {
  trustDomain: string;
  outcome: "updated" | "unchanged";
  sequence: number;
  nextRefreshAt: number;
}

const JITTER = 0.2;

export class FederationManager {
  readonly core: ServerCore;
  /** Uniform [0, 1) for backoff jitter; tests may replace it. */
  random: () => number = Math.random;
  private readonly states = new Map<string, RefreshState>();
  private readonly inflight = new Map<string, Promise<RefreshResult>>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private readonly refreshes: Counter<"trust_domain" | "result">;
  private readonly sequence: Gauge<"trust_domain">;
  private readonly lastSuccess: Gauge<"trust_domain">;
  private readonly failures: Gauge<"trust_domain">;
  private clientId: { cert: string; key: string; renewAt: number } | undefined;
  private clientIdIssuing: Promise<{ cert: string; key: string }> | undefined;

  constructor(core: ServerCore) {
    this.core = core;
    const registers = [core.metrics.registry];
    this.refreshes = new Counter({
      name: "qhx_federation_refresh_total",
      help: "Foreign bundle refreshes by trust domain and result (updated, unchanged, or the error code)",
      labelNames: ["trust_domain", "result"] as const,
      registers,
    });
    this.sequence = new Gauge({
      name: "qhx_federation_bundle_sequence",
      help: "spiffe_sequence of the last accepted bundle of each federated trust domain",
      labelNames: ["trust_domain"] as const,
      registers,
    });
    this.lastSuccess = new Gauge({
      name: "qhx_federation_last_success_timestamp_seconds",
      help: "When each federated trust domain's bundle was last refreshed successfully",
      labelNames: ["trust_domain"] as const,
      registers,
    });
    this.failures = new Gauge({
      name: "qhx_federation_consecutive_failures",
      help: "Refresh failures in a row per federated trust domain (0 after a success)",
      labelNames: ["trust_domain"] as const,
      registers,
    });
  }

  private get cfg(): FederationConfig["refresh"] {
    return this.core.cfg.federation.refresh;
  }

  private nowMs(): number {
    return this.core.clock.now().getTime();
  }

  /** The refresher state of a relationship (a fresh one is due at once). */
  state(td: string): RefreshState {
    let s = this.states.get(td);
    if (!s) {
      s = {
        lastAttemptAt: null,
        lastSuccessAt: null,
        lastError: null,
        consecutiveFailures: 0,
        nextRefreshAt: this.nowMs(),
      };
      this.states.set(td, s);
    }
    return s;
  }

  /** Forget a deleted relationship's state and metrics. */
  forget(td: string): void {
    this.states.delete(td);
    for (const g of [this.sequence, this.lastSuccess, this.failures]) g.remove({ trust_domain: td });
  }

  /** The interval after a success: the bundle's refresh hint (seconds) bounded, or the default. */
  intervalFor(hintS: number | undefined): number {
    const c = this.cfg;
    const want = hintS === undefined || hintS <= 0 ? c.defaultIntervalMs : hintS * 1000;
    return Math.min(c.maxIntervalMs, Math.max(c.minIntervalMs, want));
  }

  /** The delay after the n-th failure in a row (n ≥ 1): doubling from backoff_initial, capped, ±20 % jitter. */
  backoffFor(n: number): number {
    const c = this.cfg;
    const base = Math.min(c.backoffMaxMs, c.backoffInitialMs * 2 ** Math.min(n - 1, 40));
    const jittered = base * (1 - JITTER + 2 * JITTER * this.random());
    return Math.max(1, Math.round(Math.min(jittered, c.maxIntervalMs)));
  }

  /**
   * The TLS client identity presented to foreign bundle endpoints: an X509-SVID of this server
   * (spiffe://<td>/qhx/server), issued on first use and again once half its life has passed.
   */
  clientIdentity(): Promise<{ cert: string; key: string }> {
    const cur = this.clientId;
    if (cur && this.nowMs() < cur.renewAt) return Promise.resolve({ cert: cur.cert, key: cur.key });
    this.clientIdIssuing ??= (async () => {
      const kp = generateKeyPair("ec-p256");
      const r = await this.core.issueX509({
        spiffeId: `spiffe://${this.core.cfg.trustDomain}/qhx/server`,
        publicKey: kp.publicKey,
      });
      const now = this.nowMs();
      const id = {
        cert: r.chain.map((d) => toPem(d)).join(""),
        key: kp.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
      };
      this.clientId = { ...id, renewAt: now + (r.notAfter.getTime() - now) / 2 };
      return id;
    })().finally(() => {
      this.clientIdIssuing = undefined;
    });
    return this.clientIdIssuing;
  }

  /** The stored bundle of a federated trust domain, if any. */
  async bundleOf(td: string): Promise<TrustBundle | undefined> {
    const rec = await this.core.ds.getBundle(td);
    return rec ? parseSpiffeBundle(rec.document, td) : undefined;
  }

  /** The bundle to authenticate an https_spiffe endpoint with: of the endpoint SPIFFE ID's trust domain. */
  private async endpointBundle(rel: FederationRelationship): Promise<TrustBundle> {
    const etd = SpiffeId.parse(rel.endpointSpiffeId!).trustDomain;
    if (etd === this.core.cfg.trustDomain) return this.core.ca.trustBundle();
    const known =
      etd === rel.trustDomain || (await this.core.ds.getFederationRelationship(etd)) !== undefined;
    const b = known ? await this.bundleOf(etd) : undefined;
    if (!b) {
      throw new FederationError(
        FEDERATION_ERROR_CODES.noBundle,
        `no bundle of ${etd} is known to authenticate the endpoint ${rel.endpointSpiffeId}`,
        { hint: `federate with ${etd} first, or give ${rel.trustDomain}'s bundle out of band` },
      );
    }
    return b;
  }

  /**
   * Check a fetched document against the rules and store it if it is newer. Exposed for tests of the
   * rules; `refreshNow` is the path that fetches.
   */
  async accept(
    rel: FederationRelationship,
    document: string,
  ): Promise<{ outcome: "updated" | "unchanged"; bundle: TrustBundle }> {
    const td = rel.trustDomain;
    let b: TrustBundle;
    try {
      b = parseSpiffeBundle(document, td);
    } catch (e) {
      throw new FederationError(FEDERATION_ERROR_CODES.badBundle, `${td}: ${formatError(e)}`);
    }
    checkForeignBundle(b, td);
    const cur = await this.core.ds.getBundle(td);
    if (cur) {
      if (b.sequence < cur.sequence) {
        throw new FederationError(
          FEDERATION_ERROR_CODES.sequenceRegression,
          `${td} served spiffe_sequence ${b.sequence}, older than the accepted ${cur.sequence}`,
          { hint: "a stale or replayed bundle; the last good one is kept" },
        );
      }
      if (b.sequence === cur.sequence) {
        if (sameBundleContent(parseSpiffeBundle(cur.document, td), b))
          return { outcome: "unchanged", bundle: b };
        throw new FederationError(
          FEDERATION_ERROR_CODES.sequenceReused,
          `${td} served different keys under the accepted spiffe_sequence ${cur.sequence}`,
          { hint: "a bundle whose keys change must carry a greater sequence; the last good one is kept" },
        );
      }
    }
    // stored normalized (what QHx understood of it), as agents will parse it
    await this.core.ds.putBundle({
      trustDomain: td,
      document: bundleToSpiffeJson(b),
      sequence: b.sequence,
      updatedAt: Math.floor(this.nowMs() / 1000),
    });
    return { outcome: "updated", bundle: b };
  }

  /** Fetch, check and store one relationship's bundle now. Throws the refusal (state and metrics updated). */
  refreshNow(td: string): Promise<RefreshResult> {
    let p = this.inflight.get(td);
    if (!p) {
      p = this.doRefresh(td).finally(() => this.inflight.delete(td));
      this.inflight.set(td, p);
    }
    return p;
  }

  private async doRefresh(td: string): Promise<RefreshResult> {
    const rel = await this.core.ds.getFederationRelationship(td);
    if (!rel) throw new NotFoundError("federation relationship", td);
    const st = this.state(td);
    const started = this.nowMs();
    st.lastAttemptAt = started;
    try {
      const document = await fetchBundleDocument({
        url: rel.bundleEndpointUrl,
        profile: rel.profile,
        webTrustRoots: rel.webTrustRoots,
        endpointSpiffeId: rel.endpointSpiffeId,
        ...(rel.profile === "https_spiffe"
          ? {
              endpointBundles: new Map([
                [SpiffeId.parse(rel.endpointSpiffeId!).trustDomain, await this.endpointBundle(rel)],
              ]),
            }
          : {}),
        clientIdentity: await this.clientIdentity(),
        now: this.core.clock.now(),
      });
      const { outcome, bundle } = await this.accept(rel, document);
      const now = this.nowMs();
      st.lastSuccessAt = now;
      st.lastError = null;
      st.consecutiveFailures = 0;
      st.nextRefreshAt = now + this.intervalFor(bundle.refreshHint);
      this.refreshes.inc({ trust_domain: td, result: outcome });
      this.sequence.set({ trust_domain: td }, bundle.sequence);
      this.lastSuccess.set({ trust_domain: td }, Math.floor(now / 1000));
      this.failures.set({ trust_domain: td }, 0);
      const log =
        outcome === "updated"
          ? this.core.log.info.bind(this.core.log)
          : this.core.log.debug.bind(this.core.log);
      log(
        {
          trustDomain: td,
          sequence: bundle.sequence,
          nextRefreshAt: new Date(st.nextRefreshAt).toISOString(),
        },
        outcome === "updated" ? "federated bundle updated" : "federated bundle unchanged",
      );
      return { trustDomain: td, outcome, sequence: bundle.sequence, nextRefreshAt: st.nextRefreshAt };
    } catch (e) {
      const err = isQhxError(e) ? e : new QhxError("QHX_INTERNAL", formatError(e));
      st.consecutiveFailures += 1;
      st.lastError = { code: err.code, message: err.message };
      st.nextRefreshAt = this.nowMs() + this.backoffFor(st.consecutiveFailures);
      this.refreshes.inc({ trust_domain: td, result: err.code });
      this.failures.set({ trust_domain: td }, st.consecutiveFailures);
      this.core.log.warn(
        {
          trustDomain: td,
          code: err.code,
          reason: err.message,
          failures: st.consecutiveFailures,
          retryAt: new Date(st.nextRefreshAt).toISOString(),
        },
        "federated bundle refresh failed; keeping the last good bundle",
      );
      throw err;
    }
  }

  /** Refresh every relationship that is due by the clock; failures are recorded, not thrown. */
  tick(): Promise<void> {
    this.ticking ??= (async () => {
      const now = this.nowMs();
      const rels = await this.core.ds.listFederationRelationships();
      const live = new Set(rels.map((r) => r.trustDomain));
      for (const td of this.states.keys()) if (!live.has(td)) this.forget(td);
      const due = rels.filter((r) => this.state(r.trustDomain).nextRefreshAt <= now);
      await Promise.allSettled(due.map((r) => this.refreshNow(r.trustDomain)));
    })().finally(() => {
      this.ticking = undefined;
    });
    return this.ticking;
  }

  /** Run `tick` every refresh.check_interval (real timer; the schedule itself follows the clock). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.tick().catch((e) => this.core.log.error({ err: e }, "federation refresher failed"));
    }, this.cfg.checkIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.ticking?.catch(() => undefined);
    await Promise.allSettled([...this.inflight.values()]);
  }
}

const managers = new WeakMap<ServerCore, FederationManager>();

/** The one federation manager of a server core (admin routes, agent API and the process share it). */
export function federationFor(core: ServerCore): FederationManager {
  let m = managers.get(core);
  if (!m) {
    m = new FederationManager(core);
    managers.set(core, m);
  }
  return m;
}

/**
 * The SPIFFE bundle documents of the federated trust domains among `tds` (an agent's entries'
 * federates_with): only domains with a relationship and a bundle. Deleting a relationship removes its
 * bundle, so it disappears from here at once and from agents at their next sync.
 */
export async function federatedBundlesFor(
  core: ServerCore,
  tds: Iterable<string>,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const td of new Set(tds)) {
    if (td === core.cfg.trustDomain) continue;
    if (!(await core.ds.getFederationRelationship(td))) continue;
    const rec = await core.ds.getBundle(td);
    if (rec) out[td] = rec.document;
  }
  return out;
}
