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
 *   POST /agent/v1/svids    {csrs: [{entry_id, csr}]} -> {svids: [...], denied: [...]}    (mTLS)
 * `csr` is a base64 DER PKCS#10 request; its self-signature proves the agent holds the key.
 *   POST /agent/v1/jwt      {entry_id, audience[]} -> {token, expires_at}                  (mTLS)
 *   GET  /agent/v1/policy   -> {public_key, kid, version: signed policy version | null}    (mTLS)
 * Errors: `{error: {code, message, hint?}}` with 400/401/403/404.
 */
import crypto, { type KeyObject } from "node:crypto";
import { verifyCsr } from "../core/csr.ts";
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
import type { AttestedNode, RegistrationEntry } from "./datastore/types.ts";

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
function publicKeyOf(body: Record<string, unknown>): KeyObject {
  const csr = body.csr;
  if (typeof csr !== "string" || !/^[A-Za-z0-9+/]+={0,2}$/.test(csr)) {
    throw new ValidationError("is required (base64 DER PKCS#10)", "csr");
  }
  try {
    return verifyCsr(new Uint8Array(Buffer.from(csr, "base64")));
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
                e.code === "QHX_POLICY_DENIED"
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
    return {
      entries: entries.map(entryToJson),
      bundle: bundleToSpiffeJson(b),
      bundle_sequence: b.sequence,
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
      try {
        await this.admit(node, entry, "x509");
      } catch (e) {
        if (!isQhxError(e) || e.code !== "QHX_POLICY_DENIED") throw e;
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
        publicKey: publicKeyOf(req),
        ...(entry.x509SvidTtl ? { ttlMs: entry.x509SvidTtl * 1000 } : {}),
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
    const aud = body.audience;
    if (!Array.isArray(aud) || aud.length === 0 || !aud.every((a) => typeof a === "string" && a)) {
      throw new ValidationError("must be a non-empty list of strings", "audience");
    }
    const r = await this.core.issueJwt({
      spiffeId: entry.spiffeId,
      audience: aud as string[],
      ...(entry.jwtSvidTtl ? { ttlMs: entry.jwtSvidTtl * 1000 } : {}),
    });
    return { token: r.token, expires_at: Math.floor(r.expiresAt.getTime() / 1000) };
  }
}
