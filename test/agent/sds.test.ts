import crypto, { X509Certificate } from "node:crypto";
import fs from "node:fs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { GrpcServer } from "../../host/agent/grpc/server.ts";
import {
  protoType,
  SECRET_TYPE_URL,
  SPIFFE_VALIDATOR_CONFIG_TYPE_URL,
} from "../../host/agent/workload-api/proto.ts";
import { createWorkloadApiServer } from "../../host/agent/workload-api/server.ts";
import { toProtoStruct } from "../../host/agent/workload-api/watch.ts";
import { fromPem } from "../../host/core/pem.ts";
import { type Clients, connect, grpc, type Msg, StreamReader } from "./fixtures-api/client.ts";
import {
  DB_ID,
  FED_TD,
  PEER,
  TD,
  tempSocketPath,
  TestProvider,
  waitFor,
  WEB_ID,
} from "./fixtures-api/provider.ts";

let provider: TestProvider;
let server: GrpcServer;
let clients: Clients;
let dir: string;
let socket: string;

beforeEach(async () => {
  provider = new TestProvider();
  ({ dir, socket } = tempSocketPath());
  server = createWorkloadApiServer({ provider, peerOf: () => PEER });
  await server.listen(socket);
  clients = connect(socket);
});

afterEach(async () => {
  clients.close();
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** What Envoy 1.30 sends in a DiscoveryRequest's node. */
function envoyNode(metadata: Record<string, unknown> = {}): Msg {
  return {
    id: "sidecar~10.0.0.1~web-1~default.svc.cluster.local",
    cluster: "web",
    metadata: toProtoStruct(metadata),
    user_agent_name: "envoy",
    user_agent_build_version: { version: { major_number: 1, minor_number: 30, patch: 2 } },
    client_features: ["envoy.lb.does_not_support_overprovisioning"],
  };
}

function request(names: string[], extra: Msg = {}): Msg {
  return { node: envoyNode(), resource_names: names, type_url: SECRET_TYPE_URL, ...extra };
}

interface Secret {
  name: string;
  tls_certificate?: {
    certificate_chain: { inline_bytes: Buffer };
    private_key: { inline_bytes: Buffer };
  } | null;
  validation_context?: {
    trusted_ca?: { inline_bytes: Buffer } | null;
    custom_validator_config?: { name: string; typed_config: { type_url: string; value: Buffer } } | null;
  } | null;
}

function secrets(resp: Msg): Secret[] {
  const T = protoType("envoy.extensions.transport_sockets.tls.v3.Secret");
  return (resp["resources"] as { type_url: string; value: Buffer }[]).map((any) => {
    expect(any.type_url).toBe(SECRET_TYPE_URL);
    return T.toObject(T.decode(any.value), { defaults: false }) as Secret;
  });
}

function spiffeValidatorDomains(s: Secret): { name: string; certs: Uint8Array[] }[] {
  const cfg = s.validation_context?.custom_validator_config;
  expect(cfg?.name).toBe("envoy.tls.cert_validator.spiffe");
  expect(cfg?.typed_config.type_url).toBe(SPIFFE_VALIDATOR_CONFIG_TYPE_URL);
  const T = protoType("envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig");
  const decoded = T.toObject(T.decode(cfg!.typed_config.value)) as {
    trust_domains: { name: string; trust_bundle: { inline_bytes: Buffer } }[];
  };
  return decoded.trust_domains.map((td) => ({
    name: td.name,
    certs: fromPem(Buffer.from(td.trust_bundle.inline_bytes).toString("utf8")),
  }));
}

function checkTlsCertificate(s: Secret, spiffeId: string, svidIndex: number): void {
  const chainPem = Buffer.from(s.tls_certificate!.certificate_chain.inline_bytes).toString("utf8");
  const keyPem = Buffer.from(s.tls_certificate!.private_key.inline_bytes).toString("utf8");
  expect(keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  const leaf = new X509Certificate(fromPem(chainPem)[0]!);
  expect(leaf.subjectAltName).toContain(`URI:${spiffeId}`);
  expect(Buffer.from(leaf.raw).equals(Buffer.from(provider.svids[svidIndex]!.chain[0]!))).toBe(true);
  const key = crypto.createPrivateKey(keyPem);
  expect(leaf.checkPrivateKey(key)).toBe(true);
}

function openStream(): { reader: StreamReader; call: grpc.ClientDuplexStream<Msg, Msg> } {
  const call = (clients.sds["StreamSecrets"] as () => grpc.ClientDuplexStream<Msg, Msg>)();
  return { reader: new StreamReader(call), call };
}

describe("StreamSecrets", () => {
  it("serves `default` as a TlsCertificate with no security header, then follows Envoy's ACK / NACK flow and pushes rotations", async () => {
    const { reader, call } = openStream();
    call.write(request(["default"]));
    const r1 = await reader.next();
    expect(r1["type_url"]).toBe(SECRET_TYPE_URL);
    expect(r1["version_info"]).toBe("1");
    expect(r1["nonce"]).toMatch(/^[0-9a-f]{16}$/);
    const [s1, ...rest] = secrets(r1);
    expect(rest).toHaveLength(0);
    expect(s1!.name).toBe("default");
    checkTlsCertificate(s1!, WEB_ID, 0);

    // ACK: same names, the version and nonce just received: nothing more is sent
    call.write({
      version_info: "1",
      response_nonce: r1["nonce"],
      resource_names: ["default"],
      type_url: SECRET_TYPE_URL,
    });
    expect(await reader.quiet(300)).toBe(true);

    // a change that does not touch this caller's identities: nothing sent
    provider.emit();
    expect(await reader.quiet(300)).toBe(true);

    // rotation: a new version is pushed on the open stream
    provider.rotateDefault();
    const r2 = await reader.next();
    expect(r2["version_info"]).toBe("2");
    expect(r2["nonce"]).not.toBe(r1["nonce"]);
    const [s2] = secrets(r2);
    expect(s2!.name).toBe("default");
    checkTlsCertificate(s2!, WEB_ID, 0);

    // NACK (Envoy keeps version 1, reports an error): logged, not answered again
    call.write({
      version_info: "1",
      response_nonce: r2["nonce"],
      resource_names: ["default"],
      type_url: SECRET_TYPE_URL,
      error_detail: { code: 13, message: "bad secret" },
    });
    expect(await reader.quiet(300)).toBe(true);

    // a stale nonce is ignored, even when the names change
    call.write({
      version_info: "2",
      response_nonce: r1["nonce"],
      resource_names: ["ROOTCA"],
      type_url: SECRET_TYPE_URL,
    });
    expect(await reader.quiet(300)).toBe(true);

    // new names (with the current nonce): answered at once, current version
    call.write({
      version_info: "2",
      response_nonce: r2["nonce"],
      resource_names: ["default", "ROOTCA"],
      type_url: SECRET_TYPE_URL,
    });
    const r3 = await reader.next();
    expect(r3["version_info"]).toBe("2");
    expect(
      secrets(r3)
        .map((s) => s.name)
        .sort(),
    ).toEqual(["ROOTCA", "default"]);

    call.cancel();
    await waitFor(() => provider.listeners.size === 0 && server.calls.size === 0, 3000, "stream released");
  });

  it("serves ROOTCA as the own trust domain's SPIFFE validator config (Envoy ≥ 1.18)", async () => {
    const { reader, call } = openStream();
    call.write(request(["ROOTCA"]));
    const [s] = secrets(await reader.next());
    expect(s!.name).toBe("ROOTCA");
    expect(s!.tls_certificate ?? undefined).toBeUndefined();
    const domains = spiffeValidatorDomains(s!);
    expect(domains.map((d) => d.name)).toEqual([TD]);
    expect(domains[0]!.certs.map((c) => Buffer.from(c).toString("hex"))).toEqual([
      Buffer.from(provider.ca.cert).toString("hex"),
    ]);
    call.cancel();
  });

  it("serves ROOTCA as trusted_ca PEM when the Envoy node disables SPIFFE cert validation; ALL is then refused", async () => {
    const { reader, call } = openStream();
    call.write({ ...request(["ROOTCA"]), node: envoyNode({ disable_spiffe_cert_validation: true }) });
    const [s] = secrets(await reader.next());
    expect(s!.name).toBe("ROOTCA");
    expect(s!.validation_context?.custom_validator_config ?? undefined).toBeUndefined();
    const pem = Buffer.from(s!.validation_context!.trusted_ca!.inline_bytes).toString("utf8");
    expect(fromPem(pem).map((c) => Buffer.from(c).toString("hex"))).toEqual([
      Buffer.from(provider.ca.cert).toString("hex"),
    ]);
    call.cancel();

    const second = openStream();
    second.call.write({ ...request(["ALL"]), node: envoyNode({ disable_spiffe_cert_validation: "true" }) });
    const err = await second.reader.failure();
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
  });

  it("serves ALL as one SPIFFE validator with every trust domain, each with its own bundle", async () => {
    const { reader, call } = openStream();
    call.write(request(["ALL"]));
    const [s] = secrets(await reader.next());
    expect(s!.name).toBe("ALL");
    const domains = spiffeValidatorDomains(s!);
    expect(domains.map((d) => d.name)).toEqual([TD, FED_TD].sort());
    const fed = domains.find((d) => d.name === FED_TD)!;
    expect(Buffer.from(fed.certs[0]!).equals(Buffer.from(provider.fedCa.cert))).toBe(true);
    call.cancel();
  });

  it("serves SVIDs by SPIFFE ID and bundles by trust domain ID; a wildcard request gets everything", async () => {
    const { reader, call } = openStream();
    call.write(request([DB_ID, `spiffe://${FED_TD}`]));
    const got = secrets(await reader.next());
    expect(got.map((s) => s.name).sort()).toEqual([DB_ID, `spiffe://${FED_TD}`].sort());
    checkTlsCertificate(
      got.find((s) => s.name === DB_ID)!,
      DB_ID,
      1,
    );
    call.cancel();

    const all = openStream();
    all.call.write(request([]));
    const everything = secrets(await all.reader.next());
    expect(everything.map((s) => s.name).sort()).toEqual(
      [WEB_ID, DB_ID, `spiffe://${TD}`, `spiffe://${FED_TD}`].sort(),
    );
    all.call.cancel();
  });

  it("ends the stream with INVALID_ARGUMENT for a name the workload is not entitled to", async () => {
    const { reader, call } = openStream();
    call.write(request(["default", "spiffe://example.org/someone-else"]));
    const err = await reader.failure();
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toContain("workload is not authorized for the requested identities");
    expect(err.details).toContain("spiffe://example.org/someone-else");
    await waitFor(() => provider.listeners.size === 0, 3000, "unsubscribe");
  });

  it("answers UNAVAILABLE when attestation fails", async () => {
    provider.failWith = new Error("gone");
    const { reader, call } = openStream();
    call.write(request(["default"]));
    const err = await reader.failure();
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
  });
});

describe("FetchSecrets", () => {
  it("answers once with the requested secrets, version_info empty and no nonce", async () => {
    const resp = await new Promise<Msg>((resolve, reject) =>
      (clients.sds["FetchSecrets"] as (r: Msg, cb: (e: Error | null, v: Msg) => void) => void)(
        request(["default", "ROOTCA"]),
        (e, v) => (e ? reject(e) : resolve(v)),
      ),
    );
    expect(resp["version_info"]).toBe("");
    expect(resp["nonce"]).toBe("");
    const got = secrets(resp);
    expect(got.map((s) => s.name).sort()).toEqual(["ROOTCA", "default"]);
    checkTlsCertificate(
      got.find((s) => s.name === "default")!,
      WEB_ID,
      0,
    );
  });

  it("DeltaSecrets is UNIMPLEMENTED", async () => {
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      clients.sds.makeUnaryRequest(
        "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets",
        () => Buffer.alloc(0),
        (b: Buffer) => b,
        {},
        (e) => resolve(e!),
      ),
    );
    expect(err.code).toBe(grpc.status.UNIMPLEMENTED);
  });
});
