/** Test PKI and plumbing for the tunnel tests: CAs and SVIDs minted in-process, SVID dirs on disk. */
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { KeyObject } from "node:crypto";
import { generateKeyPair, type KeyAlg } from "../../host/core/alg.ts";
import { toPem, toPemChain } from "../../host/core/pem.ts";
import { issueCaCertificate, issueX509Svid } from "../../host/core/x509.ts";
import type { ExchangeRecord, RecordSink } from "../../host/tunnel/record.ts";
import {
  bundlesFromAuthorities,
  makeSvid,
  type Svid,
  type SvidState,
} from "../../host/tunnel/svid-source.ts";

const HOUR = 3_600_000;

export interface TestCa {
  trustDomain: string;
  der: Uint8Array;
  key: KeyObject;
}

export function mkCa(trustDomain: string, alg: KeyAlg = "ec-p256"): TestCa {
  const k = generateKeyPair(alg);
  const now = Date.now();
  const der = issueCaCertificate({
    publicKey: k.publicKey,
    signer: { privateKey: k.privateKey },
    trustDomain,
    notBefore: new Date(now - HOUR),
    notAfter: new Date(now + 48 * HOUR),
  });
  return { trustDomain, der, key: k.privateKey };
}

export function mkSvid(
  ca: TestCa,
  spiffeId: string,
  alg: KeyAlg = "ec-p256",
  o: { notBefore?: Date; notAfter?: Date } = {},
): Svid {
  const k = generateKeyPair(alg);
  const now = Date.now();
  const der = issueX509Svid({
    spiffeId,
    publicKey: k.publicKey,
    issuerCertDer: ca.der,
    issuerKey: ca.key,
    notBefore: o.notBefore ?? new Date(now - 60_000),
    notAfter: o.notAfter ?? new Date(now + HOUR),
  });
  return makeSvid([der], k.privateKey);
}

export function stateOf(svid: Svid, ...cas: TestCa[]): SvidState {
  return {
    svid,
    bundles: bundlesFromAuthorities(
      cas.map((c) => c.der),
      svid.trustDomain,
    ),
  };
}

/** svid.pem, svid.key, bundle.pem in a fresh directory. */
export function writeSvidDir(svid: Svid, cas: TestCa[], dir = tmp()): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "svid.pem"), toPemChain(svid.chainDer));
  fs.writeFileSync(path.join(dir, "svid.key"), svid.key.export({ type: "pkcs8", format: "pem" }) as string, {
    mode: 0o600,
  });
  fs.writeFileSync(path.join(dir, "bundle.pem"), cas.map((c) => toPem(c.der)).join(""));
  return dir;
}

export function tmp(prefix = "qhx-tunnel-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export class MemorySink implements RecordSink {
  readonly records: ExchangeRecord[] = [];
  #waiters: (() => void)[] = [];
  record(rec: ExchangeRecord): void {
    this.records.push(rec);
    for (const w of this.#waiters.splice(0)) w();
  }
  /** Resolves once `n` records arrived. */
  async waitFor(n: number): Promise<ExchangeRecord[]> {
    while (this.records.length < n) await new Promise<void>((r) => this.#waiters.push(r));
    return this.records;
  }
}

/** An echo server on 127.0.0.1:0 ("unmodified app"). */
export async function echoServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const s = net.createServer({ allowHalfOpen: true }, (c) => {
    sockets.add(c);
    c.on("close", () => sockets.delete(c));
    c.on("error", () => {});
    c.pipe(c);
  });
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  return {
    port: (s.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const c of sockets) c.destroy();
        s.close(() => r());
      }),
  };
}

/** A node:http server answering "hello <path>". */
export async function httpServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const s = http.createServer((req, res) => res.end(`hello ${req.url}`));
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  return {
    port: (s.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        s.closeAllConnections();
        s.close(() => r());
      }),
  };
}

/** Connect, send `data`, half-close, and collect everything until the peer closes. */
export function roundTrip(port: number, data: Buffer | string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const chunks: Buffer[] = [];
    c.on("data", (b) => chunks.push(b));
    // a refused connection may end in a reset: what arrived until then is the answer
    c.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code !== "ECONNRESET" && e.code !== "EPIPE") reject(e);
    });
    c.on("close", () => resolve(Buffer.concat(chunks)));
    c.end(data);
  });
}

/** Resolves with the first line of `stream` that parses as JSON with this `msg`. */
export function waitForLog(
  stream: NodeJS.ReadableStream,
  msg: string,
  pred: (r: Record<string, unknown>) => boolean = () => true,
): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    let buf = "";
    const onData = (c: Buffer) => {
      buf += c.toString();
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const r = JSON.parse(line) as Record<string, unknown>;
          if (r.msg === msg && pred(r)) {
            stream.off("data", onData);
            resolve(r);
            return;
          }
        } catch {
          /* not JSON */
        }
      }
    };
    stream.on("data", onData);
  });
}
