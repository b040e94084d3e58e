/**
 * Fetching a SPIFFE bundle from a foreign bundle endpoint (SPIFFE Federation §5.2):
 * - `https_web`: ordinary Web PKI server authentication — the chain must lead to the system roots or to
 *   the operator's CA certificates, and the certificate must match the URL's host name;
 * - `https_spiffe`: the endpoint presents an X509-SVID; it must verify against the bundle of the endpoint
 *   SPIFFE ID's trust domain (the last accepted bundle when that is the foreign domain itself) and carry
 *   exactly the configured endpoint SPIFFE ID. The check runs when the TLS handshake completes, and the
 *   answer is read only from a connection that passed it.
 * Redirects are not followed (§7.5.1); only a 200 answer of at most 1 MiB is a bundle document.
 *
 * With either profile the fetching side may present its own server's X509-SVID as a TLS client certificate
 * (`clientIdentity`), so that a QHx endpoint can tell which trust domain asks and apply its crypto policy's
 * releasability; a 403 answer (publication refused) is QHX_FEDERATION_PUBLICATION_REFUSED with the
 * endpoint's reason.
 */
import https from "node:https";
import type { TLSSocket } from "node:tls";
import type { BundleSource } from "../../core/bundle-types.ts";
import { formatError } from "../../core/errors.ts";
import { verifyX509Svid } from "../../core/x509-verify.ts";
import type { FederationProfile } from "../datastore/types.ts";
import { FEDERATION_ERROR_CODES, FederationError } from "./relationship.ts";

export const MAX_BUNDLE_BYTES = 1 << 20;
const DEFAULT_TIMEOUT_MS = 10_000;

export interface FetchBundleOptions {
  url: string;
  profile: FederationProfile;
  /** https_web: PEM CA certificates instead of the system roots */
  webTrustRoots?: string | null;
  /** https_spiffe: the SPIFFE ID the endpoint must present */
  endpointSpiffeId?: string | null;
  /** https_spiffe: where the endpoint's trust domain bundle is found */
  endpointBundles?: BundleSource;
  /** PEM certificate chain and key presented as the TLS client certificate (this server's X509-SVID) */
  clientIdentity?: { cert: string; key: string };
  now: Date;
  timeoutMs?: number;
}

/** The peer's certificate chain (DER, leaf first) as presented in the handshake. */
function peerChain(sock: TLSSocket): Uint8Array[] {
  const chain: Uint8Array[] = [];
  for (let c = sock.getPeerCertificate(true); c?.raw && chain.length < 10; c = c.issuerCertificate) {
    if (chain.length > 0 && c.raw.equals(Buffer.from(chain[chain.length - 1]!))) break;
    chain.push(new Uint8Array(c.raw));
  }
  return chain;
}

function authenticateSpiffe(sock: TLSSocket, o: FetchBundleOptions): void {
  const chain = peerChain(sock);
  if (chain.length === 0) {
    throw new FederationError(FEDERATION_ERROR_CODES.endpointAuth, "the endpoint presented no certificate");
  }
  let id: string;
  try {
    id = verifyX509Svid(chain, o.endpointBundles!, o.now).spiffeId.toString();
  } catch (e) {
    throw new FederationError(
      FEDERATION_ERROR_CODES.endpointAuth,
      `the endpoint's X509-SVID does not verify: ${formatError(e)}`,
      {
        hint: "the endpoint is not the trust domain it claims, or its bundle changed past the last one known",
      },
    );
  }
  if (id !== o.endpointSpiffeId) {
    throw new FederationError(
      FEDERATION_ERROR_CODES.endpointAuth,
      `the endpoint authenticated as ${id}, not ${o.endpointSpiffeId}`,
    );
  }
}

/** At most 4 KiB of an error answer. */
function readSmall(res: import("node:http").IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    res.setEncoding("utf8");
    res.on("data", (c: string) => {
      if (text.length < 4096) text += c;
    });
    res.on("end", () => resolve(text.slice(0, 4096)));
    res.on("error", () => resolve(text.slice(0, 4096)));
  });
}

/** The message of a `{error: {code, message}}` answer, else the (printable) text itself. */
function refusalReason(text: string): string {
  try {
    const e = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
    if (e && typeof e.message === "string") {
      return typeof e.code === "string" ? `${e.code}: ${e.message}` : e.message;
    }
  } catch {
    // not JSON
  }
  return JSON.stringify(text.replace(/[^\x20-\x7e]/g, "?").slice(0, 300)) || "HTTP 403";
}

/** GET the bundle document. Throws FederationError (endpointAuth / endpointUnavailable). */
export function fetchBundleDocument(o: FetchBundleOptions): Promise<string> {
  const spiffe = o.profile === "https_spiffe";
  if (spiffe && (!o.endpointSpiffeId || !o.endpointBundles)) {
    throw new FederationError(
      FEDERATION_ERROR_CODES.noBundle,
      "https_spiffe needs an endpoint SPIFFE ID and bundle",
    );
  }
  const url = new URL(o.url);
  return new Promise<string>((resolve, reject) => {
    let authenticated = !spiffe;
    let settled = false;
    const fail = (e: unknown) => {
      if (settled) return;
      settled = true;
      req.destroy();
      reject(e);
    };
    const req = https.request(
      url,
      {
        method: "GET",
        agent: false,
        headers: { accept: "application/json" },
        timeout: o.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        minVersion: "TLSv1.2",
        ...(o.clientIdentity ? { cert: o.clientIdentity.cert, key: o.clientIdentity.key } : {}),
        ...(spiffe
          ? { rejectUnauthorized: false }
          : { rejectUnauthorized: true, ...(o.webTrustRoots ? { ca: o.webTrustRoots } : {}) }),
      },
      (res) => {
        if (!authenticated) {
          fail(
            new FederationError(FEDERATION_ERROR_CODES.endpointAuth, "the endpoint was not authenticated"),
          );
          return;
        }
        if (res.statusCode === 403) {
          readSmall(res).then((text) =>
            fail(
              new FederationError(
                FEDERATION_ERROR_CODES.publicationRefused,
                `the endpoint refused to publish its bundle to this trust domain: ${refusalReason(text)}`,
                {
                  hint: "the foreign domain's crypto policy (releasable_to) does not release its bundle here",
                },
              ),
            ),
          );
          return;
        }
        if (res.statusCode !== 200) {
          res.resume();
          const where = res.headers.location ? ` (redirect to ${res.headers.location} not followed)` : "";
          fail(
            new FederationError(
              FEDERATION_ERROR_CODES.endpointUnavailable,
              `the endpoint answered HTTP ${res.statusCode}${where}`,
            ),
          );
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > MAX_BUNDLE_BYTES) {
            fail(
              new FederationError(
                FEDERATION_ERROR_CODES.endpointUnavailable,
                `the endpoint's answer exceeds ${MAX_BUNDLE_BYTES} bytes`,
              ),
            );
            return;
          }
          chunks.push(c);
        });
        res.on("end", () => {
          if (settled) return;
          settled = true;
          resolve(Buffer.concat(chunks).toString("utf8"));
        });
        res.on("error", fail);
      },
    );
    if (spiffe) {
      req.on("socket", (s) => {
        (s as TLSSocket).once("secureConnect", () => {
          try {
            authenticateSpiffe(s as TLSSocket, o);
            authenticated = true;
          } catch (e) {
            fail(e);
          }
        });
      });
    }
    req.on("timeout", () =>
      fail(
        new FederationError(FEDERATION_ERROR_CODES.endpointUnavailable, `no answer from ${o.url} in time`),
      ),
    );
    req.on("error", (e: NodeJS.ErrnoException) => {
      if (e instanceof FederationError) return fail(e);
      const tlsAuth =
        typeof e.code === "string" &&
        (e.code.startsWith("ERR_TLS_CERT") ||
          /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(e.code));
      fail(
        new FederationError(
          tlsAuth ? FEDERATION_ERROR_CODES.endpointAuth : FEDERATION_ERROR_CODES.endpointUnavailable,
          `${o.url}: ${e.code ? `${e.code}: ` : ""}${e.message}`,
        ),
      );
    });
    req.end();
  });
}
