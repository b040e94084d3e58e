/**
 * The agent API: what `qhx agent` talks to, over TLS 1.3 on the server's `listen` address (hybrid
 * post-quantum key exchange X25519MLKEM768 preferred). The server authenticates with its own X509-SVID
 * `spiffe://<td>/qhx/server`; after node attestation every call is mutually authenticated with the
 * agent's X509-SVID, verified here against the trust domain's bundle, and checked against the node
 * record (it must exist, not be evicted, and the certificate must be the node's current one).
 *
 *   POST /agent/v1/attest   {attestor, payload, csr} | {session, response, csr}
 *                           -> {challenge, session} | {agent_id, svid[PEM], bundle, assurance}
 *   POST /agent/v1/renew    {csr} -> {svid[PEM], expires_at}                               (mTLS)
 *   GET  /agent/v1/sync     -> {entries[], bundle, bundle_sequence, assurance, aliases}    (mTLS)
 *                           + federated_bundles {td: SPIFFE bundle} for the entries' federates_with
 *                             (each entry's federates_with cut to what its namespace's accept_from allows)
 *   POST /agent/v1/svids    {csrs: [{entry_id, csr}]} -> {svids: [...], denied: [...]}    (mTLS)
 * `csr` is a base64 DER PKCS#10 request; its self-signature proves the agent holds the key.
 *   POST /agent/v1/jwt      {entry_id, audience[]} -> {token, expires_at}                  (mTLS)
 *   GET  /agent/v1/policy   -> {public_key, kid, version: signed policy version | null}    (mTLS)
 *   POST /notary/v1/statements {statements: [base64]} -> {results: [...]}  (mTLS, any workload SVID; notary.ts)
 * Errors: `{error: {code, message, hint?}}` with 400/401/403/404.
 */
import crypto, { type KeyObject } from "node:crypto";
import { verifyCsr, verifyWorkloadCsr } from "../core/csr.ts";
import { type WorkloadPublicKey, workloadKeyAlgOf } from "../core/alg.ts";
import {
  acceptedFederatedDomains,
  BUILTIN_RULE_NAME,
  capTtl,
  checkAssurance,
  checkSignatureAlgorithm,
  CRYPTO_POLICY_ERROR,
  type CryptoPolicy,
  type EffectiveCryptoPolicy,
  resolveCryptoPolicy,
} from "../core/crypto-policy.ts";
import type { Assurance } from "../core/assurance.ts";
import { bundleToSpiffeJson } from "../core/bundle.ts";
import { parseDuration } from "../core/clock.ts";
import { entryToJson } from "../core/entry.ts";
import { QhxError, ValidationError, isQhxError } from "../core/errors.ts";
import { toPem } from "../core/pem.ts";
import { SpiffeId } from "../core/spiffeid.ts";
import { verifyX509Svid } from "../core/x509-verify.ts";
import type { NodeAttestorVerifier } from "./attestation/index.ts";
import type { AttestationStep } from "./attestation/types.ts";
import { policyAdmission, policyStoreFor, workloadIdentityFromEntry } from "./admin-policy.ts";
import type { ServerCore } from "./core.ts";
import { notaryFor } from "./notary.ts";
import type { AttestedNode, RegistrationEntry } from "./datastore/types.ts";
import { federatedBundlesFor } from "./federation/manager.ts";
import { currentCryptoPolicy } from "./crypto-policy-store.ts";

export interface AgentRequest {
  method: string;
  path: string;
  body: unknown;
  /** the client's certificate chain (DER, leaf first), if it presented one */
  peerChain: Uint8Array[];
}

interface Session {
  verifier: NodeAttestorVerifier;
  step: Extract<AttestationStep, { challenge: unknown }>;
  expires: number;
}

const SESSION_TTL_MS = 60_000;

/** The key to certify, from a PKCS#10 CSR (base64 DER) whose self-signature proves possession. */
function publicKeyOf(body: Record<string, unknown>): KeyObject;
function publicKeyOf(body: Record<string, unknown>, workload: true): WorkloadPublicKey;
function publicKeyOf(body: Record<string, unknown>, workload = false): WorkloadPublicKey {
  const csr = body.csr;
  if (typeof csr !== "string" || !/^[A-Za-z0-9+/]+={0,2}$/.test(csr)) {
    throw new ValidationError("is required (base64 DER PKCS#10)", "csr");
  }
  try {
    // a workload's key may be composite ML-DSA + ECDSA; an agent's own key (TLS) may not
    const der = new Uint8Array(Buffer.from(csr, "base64"));
    return workload ? verifyWorkloadCsr(der) : verifyCsr(der);
  } catch (e) {
    throw new ValidationError((e as Error).message, "csr");
  }
}

function obj(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ValidationError("request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

export class AgentApi {
  private readonly core: ServerCore;
  private readonly verifiers: Map<string, NodeAttestorVerifier>;
  private readonly sessions = new Map<string, Session>();
  readonly agentSvidTtlMs: number;

  constructor(
    core: ServerCore,
    verifiers: Map<string, NodeAttestorVerifier>,
    agentSvidTtlMs = parseDuration("1h"),
  ) {
    this.core = core;
    this.verifiers = verifiers;
    this.agentSvidTtlMs = agentSvidTtlMs;
  }

  agentIdFor(attestor: string, nodeId: string): string {
    return SpiffeId.fromSegments(this.core.cfg.trustDomain, "qhx", "agent", attestor, nodeId).toString();
  }

  private nowS(): number {
    return Math.floor(this.core.clock.now().getTime() / 1000);
  }

  async handle(req: AgentRequest): Promise<{ status: number; body: unknown }> {
    try {
      const key = `${req.method} ${req.path}`;
      switch (key) {
        case "POST /agent/v1/attest":
          return { status: 200, body: await this.attest(obj(req.body)) };
        case "POST /agent/v1/renew":
          return { status: 200, body: await this.renew(await this.authenticate(req), obj(req.body)) };
        case "GET /agent/v1/sync":
          return { status: 200, body: await this.sync(await this.authenticate(req)) };
        case "POST /agent/v1/svids":
          return { status: 200, body: await this.signSvids(await this.authenticate(req), obj(req.body)) };
        case "GET /agent/v1/policy":
          await this.authenticate(req);
          return { status: 200, body: this.policy() };
        case "POST /agent/v1/jwt":
          return { status: 200, body: await this.jwt(await this.authenticate(req), obj(req.body)) };
        case "POST /notary/v1/statements":
          return {
            status: 200,
            body: await (await notaryFor(this.core)).submitBatch(req.peerChain, req.body),
          };
        default:
          throw new QhxError("QHX_NOT_FOUND", `no such endpoint: ${key}`);
      }
    } catch (e) {
      const status = !isQhxError(e)
        ? 500
        : e.code === "QHX_NOT_FOUND"
          ? 404
          : e.code === "QHX_UNAUTHENTICATED"
            ? 401
            : e.code === "QHX_PERMISSION_DENIED" ||
                e.code === "QHX_ATTESTATION_FAILED" ||
                e.code === "QHX_POLICY_DENIED" ||
                e.code === CRYPTO_POLICY_ERROR
              ? 403
              : 400;
      if (status === 500) this.core.log.error({ err: e, path: req.path }, "agent API request failed");
      else if (status === 401 || status === 403)
        this.core.log.warn({ path: req.path, reason: (e as Error).message }, "agent refused");
      const err = isQhxError(e)
        ? { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) }
        : { code: "QHX_INTERNAL", message: "internal error; see the server log" };
      return { status, body: { error: err } };
    }
  }

  private async attest(body: Record<string, unknown>) {
    const publicKey = publicKeyOf(body);
    let verifier: NodeAttestorVerifier;
    let step: AttestationStep;
    if (typeof body.session === "string") {
      this.pruneSessions();
      const s = this.sessions.get(body.session);
      this.sessions.delete(body.session);
      if (!s) throw new QhxError("QHX_ATTESTATION_FAILED", "unknown or expired attestation session");
      verifier = s.verifier;
      step = await s.step.answer(body.response);
    } else {
      const name = body.attestor;
      if (typeof name !== "string") throw new ValidationError("is required", "attestor");
      const v = this.verifiers.get(name);
      if (!v) {
        throw new QhxError(
          "QHX_ATTESTATION_FAILED",
          `node attestor "${name}" is not enabled on this server`,
          {
            hint: `enabled: ${[...this.verifiers.keys()].join(", ")}`,
          },
        );
      }
      verifier = v;
      step = await v.begin(body.payload);
    }
    if ("challenge" in step) {
      const session = crypto.randomBytes(18).toString("base64url");
      this.sessions.set(session, { verifier, step, expires: Date.now() + SESSION_TTL_MS });
      return { challenge: step.challenge, session };
    }
    const a = step.done;
    const agentId = this.agentIdFor(verifier.name, a.nodeId);
    const existing = await this.core.ds.getNode(agentId);
    if (existing?.banned) {
      throw new QhxError("QHX_PERMISSION_DENIED", `node ${agentId} was evicted and banned`);
    }
    const svid = await this.issueAgentSvid(agentId, publicKey);
    const now = this.nowS();
    await this.core.ds.upsertNode({
      spiffeId: agentId,
      attestationType: verifier.name,
      selectors: a.selectors,
      assurance: verifier.assurance,
      certSerial: svid.serial,
      certNotAfter: Math.floor(svid.notAfter.getTime() / 1000),
      banned: false,
      createdAt: now,
      updatedAt: now,
      aliases: [...new Set([...(existing?.aliases ?? []), ...a.aliases])],
    });
    this.core.log.info({ agentId, attestor: verifier.name, assurance: verifier.assurance }, "node attested");
    return {
      agent_id: agentId,
      svid: svid.chain.map((d) => toPem(d)),
      expires_at: Math.floor(svid.notAfter.getTime() / 1000),
      bundle: bundleToSpiffeJson(this.core.ca.trustBundle()),
      assurance: verifier.assurance,
    };
  }

  private issueAgentSvid(agentId: string, publicKey: KeyObject) {
    return this.core.issueX509({ spiffeId: agentId, publicKey, ttlMs: this.agentSvidTtlMs });
  }

  private pruneSessions(): void {
    const now = Date.now();
    for (const [k, s] of this.sessions) if (s.expires < now) this.sessions.delete(k);
  }

  /** Verify the caller's X509-SVID and load its node record. */
  private async authenticate(req: AgentRequest): Promise<AttestedNode> {
    if (req.peerChain.length === 0) {
      throw new QhxError(
        "QHX_UNAUTHENTICATED",
        "this endpoint needs the agent's X509-SVID as TLS client certificate",
      );
    }
    let id: string;
    let serial: string;
    try {
      const v = verifyX509Svid(
        req.peerChain,
        new Map([[this.core.cfg.trustDomain, this.core.ca.trustBundle()]]),
        this.core.clock.now(),
      );
      id = v.spiffeId.toString();
      serial = v.leaf.serial;
    } catch (e) {
      throw new QhxError("QHX_UNAUTHENTICATED", `client certificate refused: ${(e as Error).message}`);
    }
    const node = await this.core.ds.getNode(id);
    if (!node) throw new QhxError("QHX_UNAUTHENTICATED", `${id} is not an attested node`);
    if (node.banned) throw new QhxError("QHX_PERMISSION_DENIED", `node ${id} was evicted`);
    if (node.certSerial !== serial) {
      throw new QhxError("QHX_UNAUTHENTICATED", `${id} presented a superseded agent SVID (serial ${serial})`);
    }
    return node;
  }

  private async renew(node: AttestedNode, body: Record<string, unknown>) {
    const svid = await this.issueAgentSvid(node.spiffeId, publicKeyOf(body));
    await this.core.ds.upsertNode({
      ...node,
      certSerial: svid.serial,
      certNotAfter: Math.floor(svid.notAfter.getTime() / 1000),
      updatedAt: this.nowS(),
    });
    return { svid: svid.chain.map((d) => toPem(d)), expires_at: Math.floor(svid.notAfter.getTime() / 1000) };
  }

  /** The entries that apply to this node: parented to its agent ID or to one of its aliases, not expired. */
  async entriesFor(node: AttestedNode): Promise<RegistrationEntry[]> {
    const now = this.nowS();
    const parents = [node.spiffeId, ...(node.aliases ?? [])];
    const lists = await Promise.all(parents.map((p) => this.core.ds.listEntries({ parentId: p })));
    return lists.flat().filter((e) => e.expiresAt === null || e.expiresAt > now);
  }

  private async sync(node: AttestedNode) {
    const entries = await this.entriesFor(node);
    const b = this.core.ca.trustBundle();
    const pv = policyStoreFor(this.core).get("current");
    const cryptoPolicy = currentCryptoPolicy(this.core);
    // ingress releasability: an entry keeps only the federated domains its namespace accepts (accept_from),
    // so neither the node nor the entry's workloads receive a foreign bundle the crypto policy refuses
    const federatesWith = new Map(
      entries.map((e) => {
        const r = acceptedFederatedDomains(
          cryptoPolicy,
          { trustDomain: this.core.cfg.trustDomain, namespace: e.namespace },
          e.federatesWith,
        );
        for (const f of r.refused) {
          this.core.log.info(
            { entryId: e.id, spiffeId: e.spiffeId, namespace: e.namespace, ...f, node: node.spiffeId },
            "federated bundle withheld: the namespace's crypto policy does not accept from this trust domain",
          );
        }
        return [e.id, r.accepted] as const;
      }),
    );
    return {
      // with each entry, the key algorithm the crypto policy wants (the agent generates it at the next
      // rotation) and the ones it allows (a cached SVID of another algorithm is replaced at once)
      entries: entries.map((e) => {
        const sa = this.cryptoPolicyFor(e, cryptoPolicy).signatureAlgorithms;
        return {
          ...entryToJson(e),
          federates_with: federatesWith.get(e.id) ?? [],
          svid_key_alg: sa.rule === BUILTIN_RULE_NAME ? null : sa.value.default,
          allowed_key_algs: [...sa.value.allowed],
        };
      }),
      bundle: bundleToSpiffeJson(b),
      bundle_sequence: b.sequence,
      // foreign bundles of federation relationships, only for trust domains this node's entries name
      federated_bundles: await federatedBundlesFor(this.core, [...federatesWith.values()].flat()),
      assurance: node.assurance,
      aliases: node.aliases ?? [],
      policy: pv ? { version: pv.version, digest: pv.digest } : null,
    };
  }

  /** The current signed policy version and the key that verifies it (the agent checks the signature). */
  private policy() {
    const store = policyStoreFor(this.core);
    return { public_key: store.publicKeyPem, kid: store.kid, version: store.get("current") ?? null };
  }

  private async entryFor(
    node: AttestedNode,
    entryId: unknown,
    known?: Map<string, RegistrationEntry>,
  ): Promise<RegistrationEntry> {
    if (typeof entryId !== "string") throw new ValidationError("is required", "entry_id");
    const entry = known ? known.get(entryId) : (await this.entriesFor(node)).find((e) => e.id === entryId);
    if (!entry) {
      throw new QhxError("QHX_PERMISSION_DENIED", `entry ${entryId} does not apply to node ${node.spiffeId}`);
    }
    return entry;
  }

  /** Admission: the `issue` action of the current Cedar policy version (none applied yet: allowed). */
  private async admit(node: AttestedNode, entry: RegistrationEntry, svidType: "x509" | "jwt"): Promise<void> {
    await policyAdmission(this.core, {
      workload: workloadIdentityFromEntry(entry, { nodeId: node.spiffeId, assurance: node.assurance }),
      svidType,
    });
  }

  private cryptoPolicyFor(
    entry: RegistrationEntry,
    policy: CryptoPolicy = currentCryptoPolicy(this.core),
  ): EffectiveCryptoPolicy {
    return resolveCryptoPolicy(policy, {
      trustDomain: this.core.cfg.trustDomain,
      namespace: entry.namespace,
    });
  }

  /**
   * The crypto policy at issuance: the key (X509-SVID) or the server's JWT key must be of an allowed
   * algorithm and the node's assurance at least the minimum (else QHX_CRYPTO_POLICY naming the rule);
   * the lifetime is capped to the rule's maximum. Returns the TTL to issue with, in ms.
   */
  private enforceCryptoPolicy(
    node: AttestedNode,
    entry: RegistrationEntry,
    kind: "x509" | "jwt",
    publicKey?: WorkloadPublicKey,
  ): number {
    const eff = this.cryptoPolicyFor(entry);
    // the built-in default restricts nothing (not even what it does not list, e.g. an RSA JWT key)
    if (eff.signatureAlgorithms.rule !== BUILTIN_RULE_NAME) {
      if (publicKey) checkSignatureAlgorithm(eff, workloadKeyAlgOf(publicKey));
      else checkSignatureAlgorithm(eff, this.core.cfg.jwtKeyType, "JWT-SVIDs (the server's JWT key)");
    }
    checkAssurance(eff, node.assurance);
    const requestedMs =
      kind === "x509"
        ? entry.x509SvidTtl * 1000 || this.core.cfg.defaultX509SvidTtlMs
        : entry.jwtSvidTtl * 1000 || this.core.cfg.defaultJwtSvidTtlMs;
    const cap = capTtl(eff, kind, Math.ceil(requestedMs / 1000));
    if (!cap.capped) return requestedMs;
    this.core.log.info(
      { spiffeId: entry.spiffeId, rule: cap.rule, requestedMs, ttlMs: cap.ttlS * 1000, kind },
      "SVID lifetime capped by crypto policy",
    );
    return cap.ttlS * 1000;
  }

  private async signSvids(node: AttestedNode, body: Record<string, unknown>) {
    const csrs = body.csrs;
    if (!Array.isArray(csrs) || csrs.length === 0 || csrs.length > 500) {
      throw new ValidationError("must be a list of 1..500 {entry_id, csr}", "csrs");
    }
    const out = [];
    const denied: { entry_id: string; spiffe_id: string; code: string; message: string }[] = [];
    const known = new Map((await this.entriesFor(node)).map((e) => [e.id, e]));
    for (const c of csrs) {
      const req = obj(c);
      const entry = await this.entryFor(node, req.entry_id, known);
      const publicKey = publicKeyOf(req, true);
      let ttlMs: number;
      try {
        await this.admit(node, entry, "x509");
        ttlMs = this.enforceCryptoPolicy(node, entry, "x509", publicKey);
      } catch (e) {
        if (!isQhxError(e) || (e.code !== "QHX_POLICY_DENIED" && e.code !== CRYPTO_POLICY_ERROR)) throw e;
        // one entry's denial must not starve the others: report it beside the issued SVIDs
        this.core.log.warn(
          { spiffeId: entry.spiffeId, agentId: node.spiffeId, reason: e.message },
          "issuance denied by policy",
        );
        denied.push({ entry_id: entry.id, spiffe_id: entry.spiffeId, code: e.code, message: e.message });
        continue;
      }
      const r = await this.core.issueX509({
        spiffeId: entry.spiffeId,
        publicKey,
        ttlMs,
        ...(entry.dnsNames.length ? { dnsNames: entry.dnsNames } : {}),
        assurance: node.assurance as Assurance,
      });
      out.push({
        entry_id: entry.id,
        spiffe_id: entry.spiffeId,
        chain: r.chain.map((d) => toPem(d)),
        expires_at: Math.floor(r.notAfter.getTime() / 1000),
        assurance: node.assurance,
      });
    }
    return { svids: out, denied };
  }

  private async jwt(node: AttestedNode, body: Record<string, unknown>) {
    const entry = await this.entryFor(node, body.entry_id);
    await this.admit(node, entry, "jwt");
    const ttlMs = this.enforceCryptoPolicy(node, entry, "jwt");
    const aud = body.audience;
    if (!Array.isArray(aud) || aud.length === 0 || !aud.every((a) => typeof a === "string" && a)) {
      throw new ValidationError("must be a non-empty list of strings", "audience");
    }
    const r = await this.core.issueJwt({
      spiffeId: entry.spiffeId,
      audience: aud as string[],
      ttlMs,
    });
    return { token: r.token, expires_at: Math.floor(r.expiresAt.getTime() / 1000) };
  }
}
