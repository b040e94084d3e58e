/** PEM encoding (RFC 7468) of DER blobs. */
import { QhxError } from "./errors.ts";

export function toPem(der: Uint8Array, label = "CERTIFICATE"): string {
  const b64 = Buffer.from(der).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

export function toPemChain(ders: readonly Uint8Array[], label = "CERTIFICATE"): string {
  return ders.map((d) => toPem(d, label)).join("");
}

/** All PEM blocks of `label` in `text`, as DER, in order. Throws if a block is malformed. */
export function fromPem(text: string, label = "CERTIFICATE"): Uint8Array[] {
  const out: Uint8Array[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
  for (const m of text.matchAll(re)) {
    if (m[1] !== m[3]) throw new QhxError("QHX_BAD_PEM", `PEM block BEGIN ${m[1]} ends with END ${m[3]}`);
    if (m[1] !== label) continue;
    const body = m[2]!.replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 !== 0) {
      throw new QhxError("QHX_BAD_PEM", `PEM block ${label} has invalid base64`);
    }
    out.push(new Uint8Array(Buffer.from(body, "base64")));
  }
  return out;
}
