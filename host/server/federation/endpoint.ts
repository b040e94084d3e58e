/**
 * This trust domain's SPIFFE bundle endpoint (SPIFFE Federation §4, §5): an HTTPS server answering
 * `GET <path>` with the current SPIFFE bundle (JWK Set with spiffe_sequence and spiffe_refresh_hint).
 * - profile `https_spiffe`: it authenticates with an X509-SVID of this trust domain
 *   (federation.bundle_endpoint.spiffe_id, default spiffe://<td>/qhx/server), issued by the server's own CA
 *   and re-issued at half its life;
 * - profile `https_web`: it serves the operator's certificate chain and key (cert_file, key_file).
 * Requests are counted in qhx_federation_bundle_endpoint_requests_total{status}.
 *
 * Publication (crypto policy releasability, host/core/crypto-policy.ts): the endpoint requests, but does
 * not require, a TLS client certificate. A client that presents one is identified by verifying it as an
 * X509-SVID against the bundles this server knows (its own and its federated domains'); the bundle is
 * served only when `mayPublishBundle(core, clientTrustDomain)` allows, else 403 naming the rule. An
 * anonymous client (or one whose certificate does not verify) is served only when the policy does not
 * restrict publication at all (`bundlePublicationRestricted`: some `releasable_to` that applies resolves
 * to "*" — the empty policy), so plain SPIFFE Federation fetchers keep working; otherwise 403. Refusals
 * are logged and counted in qhx_federation_bundle_publication_refused_total{reason}.
 */
import fs from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { Counter } from "prom-client";
import { generateKeyPair } from "../../core/alg.ts";
import type { TLSSocket } from "node:tls";
import { bundleToSpiffeJson, parseSpiffeBundle } from "../../core/bundle.ts";
import type { TrustBundle } from "../../core/bundle-types.ts";
import { formatError, QhxError } from "../../core/errors.ts";
import { toPem } from "../../core/pem.ts";
import { verifyX509Svid } from "../../core/x509-verify.ts";
import type { FederationConfig } from "../config.ts";
import type { ServerCore } from "../core.ts";
import { bundlePublicationRefusalFor } from "../crypto-policy-store.ts";
import { federatedBundlesFor } from "./manager.ts";

export interface BundleEndpoint {
  address: AddressInfo;
  /** the URL a foreign trust domain configures (host as listened on) */
  url: string;
  /** re-issue the https_spiffe serving SVID now (also done automatically at half its life) */
  renewIdentity(): Promise<void>;
  close(): Promise<void>;
}

type EndpointConfig = NonNullable<FederationConfig["bundleEndpoint"]>;

const counters = new WeakMap<ServerCore, Counter<"status">>();
const refusalCounters = new WeakMap<ServerCore, Counter<"reason">>();

/** Stable codes of the endpoint's publication refusals (403 answers). */
export const PUBLICATION_ERROR_CODES = {
  /** the client's trust domain may not receive this bundle (crypto policy releasable_to) */
  notReleasable: "QHX_FEDERATION_PUBLICATION_REFUSED",
  /** publication is restricted and the client presented no (verifiable) X509-SVID */
  unidentified: "QHX_FEDERATION_CLIENT_UNIDENTIFIED",
} as const;

function refusalCounter(core: ServerCore): Counter<"reason"> {
  let c = refusalCounters.get(core);
  if (!c) {
    c = new Counter({
      name: "qhx_federation_bundle_publication_refused_total",
      help: "Bundle endpoint requests refused by the crypto policy (not_releasable, anonymous, client_auth_failed)",
      labelNames: ["reason"] as const,
      registers: [core.metrics.registry],
    });
    refusalCounters.set(core, c);
  }
  return c;
}

/** The client's certificate chain (DER, leaf first), empty when it presented none. */
function clientChain(sock: TLSSocket): Uint8Array[] {
  const chain: Uint8Array[] = [];
  const first = sock.getPeerCertificate(true);
  for (let c = first; c?.raw && chain.length < 10; c = c.issuerCertificate) {
    if (chain.length > 0 && c.raw.equals(Buffer.from(chain[chain.length - 1]!))) break;
    chain.push(new Uint8Array(c.raw));
  }
  return chain;
}

/** Every bundle this server knows: its own and those of its federation relationships. */
async function knownBundles(core: ServerCore): Promise<Map<string, TrustBundle>> {
  const out = new Map<string, TrustBundle>([[core.cfg.trustDomain, core.ca.trustBundle()]]);
  const rels = await core.ds.listFederationRelationships();
  const docs = await federatedBundlesFor(
    core,
    rels.map((r) => r.trustDomain),
  );
  for (const [td, doc] of Object.entries(docs)) {
    try {
      out.set(td, parseSpiffeBundle(doc, td));
    } catch (e) {
      core.log.warn({ trustDomain: td, err: formatError(e) }, "stored federated bundle does not parse");
    }
  }
  return out;
}

type Client =
  | { kind: "anonymous" }
  | { kind: "unverified"; reason: string }
  | { kind: "svid"; spiffeId: string; trustDomain: string };

async function identifyClient(core: ServerCore, sock: TLSSocket): Promise<Client> {
  const chain = clientChain(sock);
  if (chain.length === 0) return { kind: "anonymous" };
  try {
    const id = verifyX509Svid(chain, await knownBundles(core), core.clock.now()).spiffeId;
    return { kind: "svid", spiffeId: id.toString(), trustDomain: id.trustDomain };
  } catch (e) {
    return { kind: "unverified", reason: formatError(e) };
  }
}

function requestCounter(core: ServerCore): Counter<"status"> {
  let c = counters.get(core);
  if (!c) {
    c = new Counter({
      name: "qhx_federation_bundle_endpoint_requests_total",
      help: "Requests to this trust domain's SPIFFE bundle endpoint by HTTP status",
      labelNames: ["status"] as const,
      registers: [core.metrics.registry],
    });
    counters.set(core, c);
  }
  return c;
}

function readFile(file: string, what: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new QhxError(
      "QHX_INVALID_CONFIG",
      `federation.bundle_endpoint.${what}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code}`,
    );
  }
}

/** A client certificate is requested, never required: anonymous SPIFFE Federation fetchers still connect. */
function tlsOptions(identity: { cert: string; key: string }): https.ServerOptions {
  return { ...identity, minVersion: "TLSv1.2", requestCert: true, rejectUnauthorized: false };
}

export async function startBundleEndpoint(core: ServerCore, cfg: EndpointConfig): Promise<BundleEndpoint> {
  const requests = requestCounter(core);
  const refusals = refusalCounter(core);
  let renewAt = Number.POSITIVE_INFINITY;
  const spiffeIdentity = async () => {
    const kp = generateKeyPair("ec-p256");
    const r = await core.issueX509({ spiffeId: cfg.spiffeId, publicKey: kp.publicKey });
    const now = core.clock.now().getTime();
    renewAt = now + (r.notAfter.getTime() - now) / 2;
    return {
      key: kp.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
      cert: r.chain.map((d) => toPem(d)).join(""),
    };
  };
  const identity =
    cfg.profile === "https_spiffe"
      ? await spiffeIdentity()
      : { cert: readFile(cfg.certFile!, "cert_file"), key: readFile(cfg.keyFile!, "key_file") };

  /** null: serve the bundle; else the 403 error body, logged and counted. */
  const publish = async (
    sock: TLSSocket,
  ): Promise<{ code: string; message: string; hint?: string } | null> => {
    const client = await identifyClient(core, sock);
    const remote = sock.remoteAddress;
    if (client.kind === "svid") {
      const reason = bundlePublicationRefusalFor(core, client.trustDomain);
      if (!reason) return null;
      refusals.inc({ reason: "not_releasable" });
      core.log.warn(
        { client: client.spiffeId, trustDomain: client.trustDomain, remote, reason },
        "bundle publication refused",
      );
      return { code: PUBLICATION_ERROR_CODES.notReleasable, message: reason };
    }
    const reason = bundlePublicationRefusalFor(core, null);
    if (!reason) {
      if (client.kind === "unverified") {
        core.log.debug(
          { remote, reason: client.reason },
          "bundle endpoint client certificate does not verify; served as anonymous (publication unrestricted)",
        );
      }
      return null;
    }
    const label = client.kind === "anonymous" ? "anonymous" : "client_auth_failed";
    refusals.inc({ reason: label });
    const message =
      client.kind === "anonymous"
        ? reason
        : `the client certificate is not an X509-SVID of a known trust domain (${client.reason}); ${reason}`;
    core.log.warn({ remote, reason: message }, "bundle publication refused");
    return {
      code: PUBLICATION_ERROR_CODES.unidentified,
      message,
      hint: "fetch with this domain's federation relationship declared on both sides (the fetching server presents its X509-SVID)",
    };
  };

  const send = (res: import("node:http").ServerResponse, status: number, body: string) => {
    requests.inc({ status: String(status) });
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      "cache-control": "no-store",
    });
    res.end(body);
  };
  let server: https.Server;
  try {
    server = https.createServer(tlsOptions(identity), (req, res) => {
      const url = new URL(req.url ?? "/", "https://endpoint");
      if (url.pathname !== cfg.path) {
        send(res, 404, JSON.stringify({ error: { code: "QHX_NOT_FOUND", message: url.pathname } }));
        return;
      }
      if (req.method !== "GET" && req.method !== "HEAD") {
        send(
          res,
          405,
          JSON.stringify({ error: { code: "QHX_METHOD_NOT_ALLOWED", message: req.method ?? "" } }),
        );
        return;
      }
      publish(req.socket as TLSSocket).then(
        (refusal) => {
          if (refusal) send(res, 403, JSON.stringify({ error: refusal }));
          else send(res, 200, bundleToSpiffeJson(core.ca.trustBundle()));
        },
        (e) => {
          core.log.error({ err: e }, "bundle endpoint failed");
          send(res, 500, JSON.stringify({ error: { code: "QHX_INTERNAL", message: "internal error" } }));
        },
      );
    });
  } catch (e) {
    throw new QhxError(
      "QHX_INVALID_CONFIG",
      `federation.bundle_endpoint: cannot use the serving certificate and key: ${(e as Error).message}`,
    );
  }
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(
        new QhxError(
          "QHX_LISTEN_FAILED",
          `cannot listen on ${cfg.listen.host}:${cfg.listen.port} (bundle endpoint): ${e.code ?? e.message}`,
        ),
      ),
    );
    server.listen(cfg.listen.port, cfg.listen.host, () => resolve());
  });
  const address = server.address() as AddressInfo;

  let renewing: Promise<void> | undefined;
  const renewIdentity = () => {
    renewing ??= (async () => {
      if (cfg.profile !== "https_spiffe") return;
      server.setSecureContext({ ...(await spiffeIdentity()), minVersion: "TLSv1.2" });
      core.log.info({ spiffeId: cfg.spiffeId }, "bundle endpoint identity renewed");
    })().finally(() => {
      renewing = undefined;
    });
    return renewing;
  };
  const timer = setInterval(() => {
    if (core.clock.now().getTime() < renewAt) return;
    renewIdentity().catch((e) => core.log.error({ err: e }, "bundle endpoint identity renewal failed"));
  }, core.cfg.rotationCheckIntervalMs);
  timer.unref();

  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    address,
    url: `https://${host}:${address.port}${cfg.path}`,
    renewIdentity,
    close: async () => {
      clearInterval(timer);
      await renewing?.catch(() => undefined);
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      await closed;
    },
  };
}
