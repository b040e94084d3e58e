/**
 * Signed policy versions: the document the server's policy store writes and agents receive. Shared by
 * the store (host/server/policy-store.ts) and the agent side (host/policy/distribution.ts).
 */
import crypto from "node:crypto";
import type { PolicyProgram } from "./compiler.ts";

export const POLICY_VERSION_FORMAT = "qhx-policy-version/1";

export interface PolicySignature {
  alg: "ed25519";
  kid: string;
  /** base64 */
  value: string;
}

export interface PolicyVersion {
  format: typeof POLICY_VERSION_FORMAT;
  version: number;
  created_at: string;
  comment: string | null;
  /** sha256 (hex) of the canonical JSON of this version without `digest` and `signature`. */
  digest: string;
  previous_digest: string | null;
  policies: Record<string, string>;
  schema: string;
  engine: "compiled" | "cedar";
  unsupported: { policyId: string; construct: string }[];
  program: PolicyProgram | null;
  signature: PolicySignature;
}

/** Deterministic JSON: object keys sorted, no whitespace. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map((x) => canonicalJson(x === undefined ? null : x)).join(",")}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
    .join(",")}}`;
}

export function signedContent(v: PolicyVersion): Buffer {
  const rest: Record<string, unknown> = { ...v };
  delete rest.signature;
  return Buffer.from(canonicalJson(rest));
}

export function digestOf(v: Omit<PolicyVersion, "digest" | "signature">): string {
  const rest: Record<string, unknown> = { ...v };
  delete rest.digest;
  delete rest.signature;
  return crypto.createHash("sha256").update(canonicalJson(rest)).digest("hex");
}

/** Verify a version's digest and signature against the server's policy public key (PEM). */
export function verifyPolicyVersion(v: PolicyVersion, publicKeyPem: string): boolean {
  if (v?.format !== POLICY_VERSION_FORMAT || v.signature?.alg !== "ed25519") return false;
  if (digestOf(v) !== v.digest) return false;
  try {
    return crypto.verify(
      null,
      signedContent(v),
      crypto.createPublicKey(publicKeyPem),
      Buffer.from(v.signature.value, "base64"),
    );
  } catch {
    return false;
  }
}
