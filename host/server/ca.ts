/**
 * The trust-domain CA: X.509 signing CA and JWT signing key, their rotation, and the trust bundle.
 *
 * Rotation follows SPIRE's schedule: when the active CA has lived ½ of its lifetime a successor is
 * *prepared* (new key, new certificate) and published in the bundle at once, so every relying party has
 * it before it signs anything; when ⅙ of the active CA's lifetime remains the successor is *activated*.
 * Retired CAs stay in the bundle until they expire, so SVIDs they signed keep verifying to their end.
 * The JWT signing key follows the same schedule. Every state change is written to the CA journal in the
 * datastore before it takes effect, so a restart resumes exactly where the server stopped.
 */
import crypto, { type KeyObject } from "node:crypto";
import { type KeyAlg, type SvidKeyAlg, spki, type WorkloadPublicKey, workloadKeyAlgOf } from "../core/alg.ts";
import { bundleToSpiffeJson } from "../core/bundle.ts";
import type { JwtAuthority, TrustBundle } from "../core/bundle-types.ts";
import type { Clock } from "../core/clock.ts";
import { QhxError } from "../core/errors.ts";
import { type JwtAlg, jwtAlgForKey, mintJwtSvid } from "../core/jwtsvid.ts";
import { SpiffeId } from "../core/spiffeid.ts";
import { issueCaCertificate, issueX509Svid, parseCertificate, randomSerial } from "../core/x509.ts";
import type { CaKind, CaRecord, Datastore } from "./datastore/types.ts";
import type { KeyManager } from "./keymanager/types.ts";

export interface UpstreamCa {
  /** the upstream signing certificate first, then any intermediates up to (not including) the root */
  chain: Uint8Array[];
  privateKey: KeyObject;
  /** the upstream trust anchors published in the bundle */
  roots: Uint8Array[];
}

export interface CaConfig {
  trustDomain: string;
  keyAlg: SvidKeyAlg;
  /** lifetime of each X.509 CA and JWT key, ms */
  ttlMs: number;
  subject?: { commonName?: string; organization?: string; country?: string };
  jwtKeyAlg: KeyAlg;
  upstream?: UpstreamCa;
  /** spiffe_refresh_hint, seconds */
  refreshHintSeconds?: number;
}

export interface X509SvidResult {
  /** leaf first, then intermediates; the bundle holds the root(s) */
  chain: Uint8Array[];
  notAfter: Date;
  serial: string;
}

/** Backdating of notBefore to tolerate clock skew between server, agents and relying parties. */
const BACKDATE_MS = 10_000;

export class CaManager {
  private readonly ds: Datastore;
  private readonly km: KeyManager;
  readonly cfg: CaConfig;
  private readonly clock: Clock;
  private journal: CaRecord[] = [];
  private keys = new Map<string, KeyObject>();
  private bundle: TrustBundle | undefined;
  /** called after every journal change with a short description (logging, metrics) */
  onEvent: (event: string, rec: CaRecord) => void = () => {};

  constructor(ds: Datastore, km: KeyManager, cfg: CaConfig, clock: Clock) {
    this.ds = ds;
    this.km = km;
    this.cfg = cfg;
    this.clock = clock;
    SpiffeId.fromPath(cfg.trustDomain, "");
    if (!(cfg.ttlMs > 60_000))
      throw new QhxError("QHX_INVALID_CONFIG", "ca ttl must be longer than 1 minute");
  }

  /** Load the journal, create or activate what is missing, rotate as due, and publish the bundle. */
  async init(): Promise<void> {
    this.journal = await this.ds.listCas();
    for (const rec of this.journal) {
      if (rec.status === "retired") continue;
      if (!(await this.km.hasKey(rec.keyId))) {
        throw new QhxError(
          "QHX_CA_KEY_MISSING",
          `CA journal entry ${rec.id} (${rec.kind}, ${rec.status}) has no key ${rec.keyId} in the ${this.km.kind} key manager`,
          { hint: "restore the data directory's keys/ folder, or start from an empty data directory" },
        );
      }
    }
    await this.rotate();
  }

  private nowS(): number {
    return Math.floor(this.clock.now().getTime() / 1000);
  }

  private current(kind: CaKind, status: "active" | "prepared"): CaRecord | undefined {
    return this.journal
      .filter((r) => r.kind === kind && r.status === status)
      .sort((a, b) => b.notBefore - a.notBefore)[0];
  }

  /**
   * Advance the CA life cycle to the clock's now: prepare, activate, retire and prune. Idempotent;
   * returns true if anything changed (and the bundle was republished).
   */
  async rotate(): Promise<boolean> {
    let changed = false;
    for (const kind of ["x509", "jwt"] as const) changed = (await this.rotateKind(kind)) || changed;
    changed = (await this.prune()) || changed;
    await this.publishBundle();
    return changed;
  }

  private async rotateKind(kind: CaKind): Promise<boolean> {
    const now = this.nowS();
    let changed = false;
    let active = this.current(kind, "active");
    let prepared = this.current(kind, "prepared");
    if (prepared && prepared.notAfter <= now) {
      await this.setStatus(prepared, "retired");
      prepared = undefined;
      changed = true;
    }
    if (active && active.notAfter <= now) {
      await this.setStatus(active, "retired");
      active = undefined;
      changed = true;
    }
    if (!active) {
      if (prepared) {
        await this.setStatus(prepared, "active");
        active = prepared;
        prepared = undefined;
      } else {
        active = await this.create(kind, "active");
      }
      changed = true;
    }
    const life = active.notAfter - active.notBefore;
    if (!prepared && now >= active.notBefore + life / 2) {
      prepared = await this.create(kind, "prepared");
      changed = true;
    }
    if (prepared && now >= active.notAfter - life / 6) {
      await this.setStatus(active, "retired");
      await this.setStatus(prepared, "active");
      changed = true;
    }
    return changed;
  }

  private async setStatus(rec: CaRecord, status: CaRecord["status"]): Promise<void> {
    await this.ds.setCaStatus(rec.id, status);
    rec.status = status;
    this.onEvent(`${rec.kind}_ca_${status}`, rec);
  }

  private async prune(): Promise<boolean> {
    const now = this.nowS();
    let changed = false;
    for (const rec of [...this.journal]) {
      if (rec.status === "retired" && rec.notAfter <= now) {
        await this.ds.deleteCa(rec.id);
        await this.km.deleteKey(rec.keyId);
        this.keys.delete(rec.keyId);
        this.journal = this.journal.filter((r) => r !== rec);
        this.onEvent(`${rec.kind}_ca_pruned`, rec);
        changed = true;
      }
    }
    return changed;
  }

  private async create(kind: CaKind, status: "active" | "prepared"): Promise<CaRecord> {
    const now = this.clock.now();
    const stamp = now
      .toISOString()
      .replace(/[-:TZ.]/g, "")
      .slice(0, 14);
    const id = `${kind}-${stamp}-${crypto.randomBytes(4).toString("hex")}`;
    const keyId = `${kind}-ca-${id.slice(kind.length + 1)}`;
    const alg = kind === "x509" ? this.cfg.keyAlg : this.cfg.jwtKeyAlg;
    const publicKey = await this.km.generateKey(keyId, alg);
    const notBefore = new Date(now.getTime() - BACKDATE_MS);
    let notAfter = new Date(now.getTime() + this.cfg.ttlMs);
    let rec: CaRecord;
    if (kind === "x509") {
      const up = this.cfg.upstream;
      const certDer = issueCaCertificate({
        publicKey,
        signer: up
          ? { privateKey: up.privateKey, certDer: up.chain[0]! }
          : { privateKey: await this.km.getPrivateKey(keyId) },
        trustDomain: this.cfg.trustDomain,
        subject: {
          commonName: this.cfg.subject?.commonName ?? `QHx CA ${this.cfg.trustDomain}`,
          organization: this.cfg.subject?.organization ?? "QHx",
          ...(this.cfg.subject?.country ? { country: this.cfg.subject.country } : {}),
        },
        notBefore,
        notAfter,
      });
      const parsed = parseCertificate(certDer);
      notAfter = parsed.notAfter;
      rec = {
        id,
        kind,
        status,
        keyId,
        alg,
        certDer,
        upstreamChain: up ? up.chain : [],
        publicKeyDer: null,
        kid: null,
        notBefore: Math.floor(parsed.notBefore.getTime() / 1000),
        notAfter: Math.floor(notAfter.getTime() / 1000),
        createdAt: Math.floor(now.getTime() / 1000),
      };
    } else {
      rec = {
        id,
        kind,
        status,
        keyId,
        alg,
        certDer: null,
        upstreamChain: [],
        publicKeyDer: spki(publicKey),
        kid: crypto.randomBytes(16).toString("base64url"),
        notBefore: Math.floor(notBefore.getTime() / 1000),
        notAfter: Math.floor(notAfter.getTime() / 1000),
        createdAt: Math.floor(now.getTime() / 1000),
      };
    }
    await this.ds.putCa(rec);
    this.journal.push(rec);
    this.onEvent(`${kind}_ca_${status === "active" ? "created" : "prepared"}`, rec);
    return rec;
  }

  private async key(rec: CaRecord): Promise<KeyObject> {
    let k = this.keys.get(rec.keyId);
    if (!k) {
      k = await this.km.getPrivateKey(rec.keyId);
      this.keys.set(rec.keyId, k);
    }
    return k;
  }

  private activeOrThrow(kind: CaKind): CaRecord {
    const a = this.current(kind, "active");
    if (!a || a.notAfter <= this.nowS()) {
      throw new QhxError("QHX_CA_UNAVAILABLE", `no active ${kind} CA`, {
        hint: "the CA has not been rotated in time",
      });
    }
    return a;
  }

  /** The CA journal as it stands (for `qhx ca list`, tests and metrics). */
  records(): readonly CaRecord[] {
    return this.journal;
  }

  /** Sign an X.509-SVID for `publicKey`. The TTL is capped by the CA's own remaining life. */
  async signX509Svid(req: {
    spiffeId: string;
    /** composite ML-DSA + ECDSA keys included (host/core/composite.ts) */
    publicKey: WorkloadPublicKey;
    ttlMs: number;
    dnsNames?: string[];
    extraExtensions?: { oid: string; critical: boolean; value: Uint8Array }[];
  }): Promise<X509SvidResult> {
    const id = SpiffeId.parse(req.spiffeId);
    if (!id.memberOf(this.cfg.trustDomain)) {
      throw new QhxError(
        "QHX_WRONG_TRUST_DOMAIN",
        `${id} is not in trust domain ${this.cfg.trustDomain}; this CA signs only its own trust domain`,
      );
    }
    workloadKeyAlgOf(req.publicKey);
    const ca = this.activeOrThrow("x509");
    const now = this.clock.now();
    const serial = randomSerial();
    // X.509 times have whole seconds; an SVID never outlives its CA (issueX509Svid clamps the same way)
    const notAfterS = Math.min(Math.floor((now.getTime() + req.ttlMs) / 1000), ca.notAfter);
    const notAfter = new Date(notAfterS * 1000);
    const leaf = issueX509Svid({
      spiffeId: id.toString(),
      publicKey: req.publicKey,
      issuerCertDer: ca.certDer!,
      issuerKey: await this.key(ca),
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter,
      serial,
      ...(req.dnsNames?.length ? { dnsNames: req.dnsNames } : {}),
      ...(req.extraExtensions?.length ? { extraExtensions: req.extraExtensions } : {}),
    });
    const chain = this.cfg.upstream ? [leaf, ca.certDer!, ...ca.upstreamChain.slice(1)] : [leaf];
    return { chain, notAfter, serial: Buffer.from(serial).toString("hex") };
  }

  /** Mint a JWT-SVID with the active JWT key. ML-DSA algorithms only when the key is ML-DSA. */
  async signJwtSvid(req: {
    spiffeId: string;
    audience: string[];
    ttlMs: number;
    extraClaims?: Record<string, unknown>;
  }): Promise<{ token: string; expiresAt: Date; alg: JwtAlg }> {
    const id = SpiffeId.parse(req.spiffeId);
    if (!id.memberOf(this.cfg.trustDomain)) {
      throw new QhxError("QHX_WRONG_TRUST_DOMAIN", `${id} is not in trust domain ${this.cfg.trustDomain}`);
    }
    const k = this.activeOrThrow("jwt");
    const remainingMs = k.notAfter * 1000 - this.clock.now().getTime();
    const ttlMs = Math.max(1000, Math.min(req.ttlMs, remainingMs));
    const privateKey = await this.key(k);
    const alg = jwtAlgForKey(privateKey);
    const token = await mintJwtSvid({
      spiffeId: id.toString(),
      alg,
      audience: req.audience,
      ttlSeconds: Math.floor(ttlMs / 1000),
      privateKey,
      kid: k.kid!,
      now: this.clock.now(),
      ...(req.extraClaims ? { extraClaims: req.extraClaims } : {}),
    });
    return { token, expiresAt: new Date(this.clock.now().getTime() + ttlMs), alg };
  }

  /** The trust domain's own bundle: every unexpired CA (prepared, active, retired) or the upstream roots. */
  trustBundle(): TrustBundle {
    if (!this.bundle) throw new QhxError("QHX_CA_UNAVAILABLE", "CA not initialized");
    return this.bundle;
  }

  private computeBundleContent(): { x509: Uint8Array[]; jwt: JwtAuthority[] } {
    const now = this.nowS();
    const live = this.journal
      .filter((r) => r.notAfter > now)
      .sort((a, b) => a.notBefore - b.notBefore || a.id.localeCompare(b.id));
    const x509 = this.cfg.upstream
      ? this.cfg.upstream.roots
      : live.filter((r) => r.kind === "x509").map((r) => r.certDer!);
    const jwt = live
      .filter((r) => r.kind === "jwt")
      .map((r) => ({
        kid: r.kid!,
        publicKey: crypto.createPublicKey({ key: Buffer.from(r.publicKeyDer!), format: "der", type: "spki" }),
        expiresAt: r.notAfter,
      }));
    return { x509, jwt };
  }

  private async publishBundle(): Promise<void> {
    const { x509, jwt } = this.computeBundleContent();
    const fingerprint = [
      ...x509.map((d) => Buffer.from(d).toString("base64")),
      ...jwt.map((j) => `kid:${j.kid}`),
    ].join("|");
    const stored = await this.ds.getBundle(this.cfg.trustDomain);
    const storedFp = stored ? bundleFingerprint(stored.document) : undefined;
    const sequence = stored ? (storedFp === fingerprint ? stored.sequence : stored.sequence + 1) : 1;
    const bundle: TrustBundle = {
      trustDomain: this.cfg.trustDomain,
      x509Authorities: x509,
      jwtAuthorities: jwt,
      sequence,
      refreshHint: this.cfg.refreshHintSeconds ?? 300,
    };
    if (!stored || storedFp !== fingerprint) {
      const document = bundleToSpiffeJson(bundle);
      await this.ds.putBundle({
        trustDomain: this.cfg.trustDomain,
        document,
        sequence,
        updatedAt: this.nowS(),
      });
      this.onEvent("bundle_published", { sequence } as unknown as CaRecord);
    }
    this.bundle = bundle;
  }
}

/** Fingerprint of a stored bundle document's content (ignores sequence and refresh hint). */
function bundleFingerprint(document: string): string {
  const doc = JSON.parse(document) as { keys?: { use?: string; x5c?: string[]; kid?: string }[] };
  const keys = doc.keys ?? [];
  return [
    ...keys.filter((k) => k.use === "x509-svid").map((k) => k.x5c?.[0] ?? ""),
    ...keys.filter((k) => k.use === "jwt-svid").map((k) => `kid:${k.kid}`),
  ].join("|");
}
