/**
 * Agent half of the `tpm` node attestor (server half: host/server/attestation/tpm.ts). Drives the node's
 * TPM 2.0 through tpm2-tools (child processes; the TCTI — e.g. `device:/dev/tpmrm0` or
 * `swtpm:host=127.0.0.1,port=2321` — goes in TPM2TOOLS_TCTI):
 *
 *   payload  tpm2_createek (RSA-2048 or ECC P-256 EK, TCG default template) and tpm2_createak (an
 *            RSA-2048 RSASSA or P-256 ECDSA AK under the EK); the EK certificate from NV index 0x01c00002
 *            (RSA) / 0x01c0000a (ECC) when present, or from a file.
 *   answer   tpm2_activatecredential under an EK policy session (PolicySecret(endorsement)), then
 *            tpm2_quote over the requested sha256 PCRs with the server's nonce.
 *
 * Files live in a private temporary directory only while tpm2-tools run (removed after each round; the
 * EK/AK context blobs, which only this TPM can load, are kept in memory in between), and objects are
 * flushed from the TPM after every command, so it also works without a resource manager.
 */
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { QhxError } from "../../core/errors.ts";
import { toToolsCredentialFile } from "../../server/attestation/tpm2/credential.ts";
import { parseTpm2bPublic, publicKeyOf } from "../../server/attestation/tpm2/structures.ts";
import type { NodeAttestorClient } from "./index.ts";

const fail = (m: string, cause?: unknown) =>
  new QhxError("QHX_ATTESTATION_FAILED", `tpm: ${m}`, cause === undefined ? undefined : { cause });

/** TCG EK Credential Profile: the NV indices of the RSA-2048 and ECC P-256 EK certificates. */
export const EK_CERT_NV_INDEX = { rsa: "0x01c00002", ecc: "0x01c0000a" } as const;

export interface TpmClientOptions {
  /** tpm2-tools TCTI, e.g. `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`; default: tpm2-tools' */
  tcti?: string;
  /** the EK to use: RSA-2048 (default) or ECC P-256, both from the TCG default templates */
  ekAlg?: "rsa" | "ecc";
  /** the AK: RSA-2048 RSASSA-SHA256 (default) or ECC P-256 ECDSA-SHA256 */
  akAlg?: "rsa" | "ecc";
  /** DER or PEM EK certificate to send when the TPM has none in NV */
  ekCertFile?: string;
  /** where the temporary work directory goes; default os.tmpdir() */
  workDir?: string;
  /** per-command timeout; default 30 s */
  commandTimeoutMs?: number;
}

export interface TpmChallenge {
  credential_blob: string;
  encrypted_secret: string;
  nonce: string;
  pcrs: number[];
  hash_alg: string;
}

export interface TpmQuoteAnswer {
  quote: string;
  signature: string;
  pcr_values: Record<string, string>;
}

/** Length of a DER TLV at the start of `b` (EK certificates in NV may be padded). */
function derLength(b: Buffer): number | undefined {
  if (b.length < 2 || b[0] !== 0x30) return undefined;
  const l = b[1]!;
  if (l < 0x80) return 2 + l;
  const n = l & 0x7f;
  if (n === 0 || n > 3 || b.length < 2 + n) return undefined;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + b[2 + i]!;
  return 2 + n + len;
}

function parseChallenge(c: unknown): TpmChallenge {
  const o = (c ?? {}) as Partial<TpmChallenge>;
  const b64 = (v: unknown) => typeof v === "string" && /^[A-Za-z0-9+/]*={0,2}$/.test(v);
  if (
    !b64(o.credential_blob) ||
    !b64(o.encrypted_secret) ||
    !b64(o.nonce) ||
    !Array.isArray(o.pcrs) ||
    o.pcrs.length === 0 ||
    !o.pcrs.every((p) => Number.isInteger(p) && p >= 0 && p <= 23) ||
    o.hash_alg !== "sha256"
  ) {
    throw fail("malformed challenge");
  }
  return o as TpmChallenge;
}

export class TpmClient implements NodeAttestorClient {
  readonly name = "tpm";
  private readonly o: TpmClientOptions;
  private dir: string | undefined;
  /** the EK and AK context files (TPM-protected blobs), kept in memory between payload and answer */
  private contexts = new Map<string, Buffer>();

  constructor(o: TpmClientOptions = {}) {
    for (const [what, alg] of [
      ["EK", o.ekAlg],
      ["AK", o.akAlg],
    ] as const) {
      if (alg !== undefined && alg !== "rsa" && alg !== "ecc") {
        throw new QhxError(
          "QHX_INVALID_CONFIG",
          `tpm: ${what} algorithm "${String(alg)}" is neither rsa nor ecc`,
        );
      }
    }
    this.o = o;
  }

  private get ekAlg(): "rsa" | "ecc" {
    return this.o.ekAlg ?? "rsa";
  }

  /** Run one tpm2-tools command in the work directory; returns stdout. */
  private async tool(cmd: string, args: string[]): Promise<string> {
    const env = { ...process.env };
    if (this.o.tcti) env.TPM2TOOLS_TCTI = this.o.tcti;
    return new Promise((resolve, reject) => {
      execFile(
        cmd,
        args,
        { cwd: this.workDir(), env, timeout: this.o.commandTimeoutMs ?? 30_000, maxBuffer: 1 << 20 },
        (err, stdout, stderr) => {
          if (err) {
            const why = (stderr || err.message).trim().split("\n").slice(-2).join("; ");
            reject(fail(`${cmd} failed: ${why}`, err));
          } else resolve(stdout);
        },
      );
    });
  }

  private workDir(): string {
    if (!this.dir) {
      this.dir = fs.mkdtempSync(path.join(this.o.workDir ?? os.tmpdir(), "qhx-tpm-"));
      for (const [name, data] of this.contexts)
        fs.writeFileSync(path.join(this.dir, name), data, { mode: 0o600 });
    }
    return this.dir;
  }

  private file(name: string): string {
    return path.join(this.workDir(), name);
  }

  /** Flush transient objects: without a resource manager the TPM has only a few slots. */
  private async flush(): Promise<void> {
    await this.tool("tpm2_flushcontext", ["-t"]);
  }

  async payload(): Promise<{ ek_pub: string; ak_pub: string; ek_cert?: string }> {
    this.cleanup();
    this.contexts.clear();
    try {
      return await this.createKeys();
    } finally {
      this.cleanup();
    }
  }

  private async createKeys(): Promise<{ ek_pub: string; ak_pub: string; ek_cert?: string }> {
    await this.tool("tpm2_createek", ["-c", "ek.ctx", "-G", this.ekAlg, "-u", "ek.pub"]);
    await this.flush();
    const ak = this.o.akAlg ?? "rsa";
    await this.tool("tpm2_createak", [
      ...["-C", "ek.ctx", "-c", "ak.ctx", "-G", ak, "-g", "sha256", "-s", ak === "rsa" ? "rsassa" : "ecdsa"],
      ...["-u", "ak.pub", "-n", "ak.name"],
    ]);
    await this.flush();
    const cert = await this.ekCertificate();
    for (const f of ["ek.ctx", "ak.ctx"]) this.contexts.set(f, fs.readFileSync(this.file(f)));
    return {
      ek_pub: fs.readFileSync(this.file("ek.pub")).toString("base64"),
      ak_pub: fs.readFileSync(this.file("ak.pub")).toString("base64"),
      ...(cert ? { ek_cert: cert.toString("base64") } : {}),
    };
  }

  /** The EK certificate: the configured file, else the TCG NV index for the EK algorithm, else none. */
  private async ekCertificate(): Promise<Buffer | undefined> {
    if (this.o.ekCertFile) {
      const raw = fs.readFileSync(this.o.ekCertFile);
      const pem = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/.exec(
        raw.toString("latin1"),
      );
      return pem ? Buffer.from(pem[1]!.replace(/\s+/g, ""), "base64") : raw;
    }
    try {
      await this.tool("tpm2_nvreadpublic", [EK_CERT_NV_INDEX[this.ekAlg]]);
    } catch {
      return undefined; // no EK certificate provisioned
    }
    try {
      await this.tool("tpm2_nvread", [EK_CERT_NV_INDEX[this.ekAlg], "-o", "ekcert.der"]);
    } catch {
      await this.tool("tpm2_nvread", ["-C", "o", EK_CERT_NV_INDEX[this.ekAlg], "-o", "ekcert.der"]);
    }
    const der = fs.readFileSync(this.file("ekcert.der"));
    const n = derLength(der);
    if (n === undefined || n > der.length) throw fail("the EK certificate in NV is not DER");
    return der.subarray(0, n);
  }

  /** TPM2_ActivateCredential with the AK and EK (EK authorised by PolicySecret(endorsement)). */
  async activate(challenge: unknown): Promise<Buffer> {
    const c = parseChallenge(challenge);
    const blob = Buffer.from(c.credential_blob, "base64");
    const secret = Buffer.from(c.encrypted_secret, "base64");
    fs.writeFileSync(
      this.file("cred.blob"),
      toToolsCredentialFile({ credentialBlob: blob, encryptedSecret: secret }),
      { mode: 0o600 },
    );
    await this.tool("tpm2_startauthsession", ["--policy-session", "-S", "session.ctx"]);
    try {
      await this.tool("tpm2_policysecret", ["-S", "session.ctx", "-c", "e"]);
      await this.tool("tpm2_activatecredential", [
        ...["-c", "ak.ctx", "-C", "ek.ctx", "-i", "cred.blob", "-o", "secret.out"],
        "-P",
        "session:session.ctx",
      ]);
    } finally {
      await this.tool("tpm2_flushcontext", ["session.ctx"]).catch(() => undefined);
      await this.flush();
    }
    return fs.readFileSync(this.file("secret.out"));
  }

  /** TPM2_Quote by the AK over sha256 PCRs `pcrs`, qualified by `nonce`; with the PCR values. */
  async quote(nonce: Buffer, pcrs: number[]): Promise<TpmQuoteAnswer> {
    const sorted = [...new Set(pcrs)].sort((a, b) => a - b);
    try {
      await this.tool("tpm2_quote", [
        ...["-c", "ak.ctx", "-l", `sha256:${sorted.join(",")}`, "-q", nonce.toString("hex")],
        ...["-m", "quote.msg", "-s", "quote.sig", "-o", "pcrs.out", "-F", "values", "-g", "sha256"],
      ]);
    } finally {
      await this.flush();
    }
    const values = fs.readFileSync(this.file("pcrs.out"));
    if (values.length !== 32 * sorted.length)
      throw fail("tpm2_quote returned an unexpected number of PCR values");
    return {
      quote: fs.readFileSync(this.file("quote.msg")).toString("base64"),
      signature: fs.readFileSync(this.file("quote.sig")).toString("base64"),
      pcr_values: Object.fromEntries(
        sorted.map((p, i) => [String(p), values.subarray(32 * i, 32 * (i + 1)).toString("hex")]),
      ),
    };
  }

  async answer(challenge: unknown): Promise<unknown> {
    try {
      const c = parseChallenge(challenge);
      const secret = await this.activate(c);
      const q = await this.quote(Buffer.from(c.nonce, "base64"), c.pcrs);
      return { secret: secret.toString("base64"), ...q };
    } finally {
      this.cleanup();
    }
  }

  /**
   * SHA-256 (hex) of this TPM's EK SubjectPublicKeyInfo: what an operator puts in the server's EK
   * allow-list (`tpm.ekPublicKeyHashes`).
   */
  async ekPublicKeyHash(): Promise<string> {
    try {
      await this.tool("tpm2_createek", ["-c", "ek.ctx", "-G", this.ekAlg, "-u", "ek.pub"]);
      await this.flush();
      const ek = publicKeyOf(parseTpm2bPublic(fs.readFileSync(this.file("ek.pub"))));
      return crypto
        .createHash("sha256")
        .update(ek.export({ type: "spki", format: "der" }))
        .digest("hex");
    } finally {
      this.cleanup();
    }
  }

  /** Remove the work directory (credential, secret, quote; the contexts stay in memory). */
  cleanup(): void {
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }
}
