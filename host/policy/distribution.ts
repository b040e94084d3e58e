/**
 * Consumer side of policy distribution (agents, tunnels, the Envoy filter): take a signed policy
 * version from the server (`GET /v1/policies/current`, or pushed), verify its signature with the
 * server's policy public key (`GET /v1/policies/public-key`), build the evaluator from the shipped
 * program, and swap it in atomically. A version that fails verification, is not newer than the current
 * one (no rollback), or does not load, is refused and the current set keeps serving.
 */
import { QhxError } from "../core/errors.ts";
import { type CompiledPolicySet, compilePolicies, type PolicyDecision, type PolicyRequest } from "./index.ts";
import { type PolicyVersion, verifyPolicyVersion } from "./signed.ts";

export class PolicyHolder {
  private readonly publicKeyPem: string;
  private cur: { version: number; digest: string; set: CompiledPolicySet } | undefined;

  constructor(publicKeyPem: string) {
    this.publicKeyPem = publicKeyPem;
  }

  /** The version now in force, if any. */
  get version(): { version: number; digest: string; engine: string } | undefined {
    return this.cur && { version: this.cur.version, digest: this.cur.digest, engine: this.cur.set.engine };
  }

  /**
   * Verify and install `doc`. Returns true when it was installed, false when it is the version already
   * in force; throws QHX_POLICY_TAMPERED (bad signature/digest) or QHX_POLICY_ROLLBACK (older).
   */
  async update(doc: unknown): Promise<boolean> {
    const v = doc as PolicyVersion;
    if (!verifyPolicyVersion(v, this.publicKeyPem)) {
      throw new QhxError(
        "QHX_POLICY_TAMPERED",
        "policy version fails signature verification; keeping the current one",
      );
    }
    if (this.cur && v.version === this.cur.version && v.digest === this.cur.digest) return false;
    if (this.cur && v.version <= this.cur.version) {
      throw new QhxError(
        "QHX_POLICY_ROLLBACK",
        `policy version ${v.version} is not newer than version ${this.cur.version} in force`,
      );
    }
    const set = await compilePolicies({
      policies: v.policies,
      ...(v.program ? { program: v.program } : { engine: "cedar" as const }),
    });
    this.cur = { version: v.version, digest: v.digest, set }; // one assignment: the swap is atomic
    return true;
  }

  authorize(request: PolicyRequest): PolicyDecision {
    if (!this.cur) throw new QhxError("QHX_POLICY_UNAVAILABLE", "no policy version received yet");
    return this.cur.set.authorize(request);
  }
}
