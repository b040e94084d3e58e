/**
 * The agent's client for the server's agent API: HTTPS, TLS 1.3 with the hybrid X25519MLKEM768 group
 * preferred. The server is authenticated by OpenSSL path validation against the trust bundle's X.509
 * authorities plus a check that its certificate's URI SAN is `spiffe://<td>/qhx/server`; the agent
 * presents its own X509-SVID once it has one.
 */
import crypto from "node:crypto";
import https from "node:https";
import type { TLSSocket } from "node:tls";
import { QhxError, parseJsonAnswer } from "../core/errors.ts";
import { toPem } from "../core/pem.ts";

export interface ServerClientOptions {
  host: string;
  port: number;
  trustDomain: string;
  /** X.509 authorities (DER); empty with `insecure` only */
  roots: Uint8Array[];
  /** skip server authentication (explicit insecure bootstrap) */
  insecure?: boolean;
  /** agent credentials: PEM chain and PKCS#8 PEM key */
  clientCert?: { cert: string; key: string };
  timeoutMs?: number;
}

export class ServerClient {
  private readonly opts: ServerClientOptions;
  private agent: https.Agent;

  constructor(opts: ServerClientOptions) {
    this.opts = opts;
    this.agent = this.makeAgent();
  }

  private makeAgent(): https.Agent {
    const o = this.opts;
    const expected = `spiffe://${o.trustDomain}/qhx/server`;
    return new https.Agent({
      keepAlive: true,
      maxSockets: 4,
      minVersion: "TLSv1.3",
      ecdhCurve: "X25519MLKEM768:X25519:P-256",
      ...(o.insecure
        ? { rejectUnauthorized: false }
        : {
            ca: o.roots.map((d) => toPem(d)),
            rejectUnauthorized: true,
            checkServerIdentity: (_host: string, cert: { subjectaltname?: string }) => {
              const uris = (cert.subjectaltname ?? "")
                .split(", ")
                .filter((x) => x.startsWith("URI:"))
                .map((x) => x.slice(4));
              if (uris.length !== 1 || uris[0] !== expected) {
                return new Error(
                  `server presented ${uris.join(",") || "no SPIFFE ID"}, expected ${expected}`,
                );
              }
              return undefined;
            },
          }),
      ...(o.clientCert ? { cert: o.clientCert.cert, key: o.clientCert.key } : {}),
    });
  }

  /** Change trust anchors or client credentials; open connections are dropped. */
  update(patch: Partial<Pick<ServerClientOptions, "roots" | "clientCert" | "insecure">>): void {
    Object.assign(this.opts, patch);
    this.agent.destroy();
    this.agent = this.makeAgent();
  }

  async call<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = https.request(
        {
          host: this.opts.host,
          port: this.opts.port,
          method,
          path,
          agent: this.agent,
          timeout: this.opts.timeoutMs ?? 15_000,
          headers: payload
            ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }
            : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            try {
              resolve(parseJsonAnswer(res.statusCode ?? 500, Buffer.concat(chunks).toString("utf8")) as T);
            } catch (e) {
              reject(e);
            }
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error("request timed out")));
      req.on("error", (e: NodeJS.ErrnoException) =>
        reject(
          new QhxError(
            "QHX_SERVER_UNREACHABLE",
            `cannot reach the server at ${this.opts.host}:${this.opts.port}: ${e.code ?? e.message}`,
          ),
        ),
      );
      if (payload) req.write(payload);
      req.end();
    });
  }

  /** The TLS group negotiated with the server (for logs and tests). */
  async negotiatedGroup(): Promise<string | undefined> {
    return new Promise((resolve) => {
      const req = https.request(
        { host: this.opts.host, port: this.opts.port, path: "/", agent: this.agent },
        (res) => {
          const info = (res.socket as TLSSocket).getEphemeralKeyInfo() as { name?: string } | null;
          resolve(info?.name);
          res.resume();
        },
      );
      req.on("error", () => resolve(undefined));
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export function spkiPem(key: crypto.KeyObject): string {
  const pub = key.type === "public" ? key : crypto.createPublicKey(key);
  return pub.export({ type: "spki", format: "pem" }) as string;
}
