/**
 * Protobuf definitions served by the agent, kept as TypeScript strings (the build copies no .proto files)
 * and parsed with protobufjs at load, `keepCase: true` so field names are exactly the .proto ones.
 *
 * - WORKLOAD_PROTO: the SPIFFE Workload API, written from the public definition
 *   (github.com/spiffe/go-spiffe/v2/proto/spiffe/workload/workload.proto). It declares NO package: the
 *   service's full name is `SpiffeWorkloadAPI` and its method paths are `/SpiffeWorkloadAPI/FetchX509SVID`
 *   etc., which is what go-spiffe, SPIRE, java-spiffe, py-spiffe and rust-spiffe clients call. The WIT-SVID
 *   methods of the newest definition are left out (they answer UNIMPLEMENTED, as in SPIRE).
 * - SDS_PROTOS: the subset of Envoy's v3 API the Secret Discovery Service needs, with Envoy's field
 *   numbers (envoy/service/discovery/v3/discovery.proto, envoy/config/core/v3/{base,extension}.proto,
 *   envoy/type/v3/semantic_version.proto, envoy/extensions/transport_sockets/tls/v3/{secret,common,
 *   tls_spiffe_validator_config}.proto, envoy/service/secret/v3/sds.proto, google/rpc/status.proto).
 *   Fields not listed are skipped on decode (proto3 unknown-field rules), so Envoy's full requests parse.
 * - GOOGLE_PROTO: google.protobuf.Struct / Value / ListValue / NullValue / Any (well-known types).
 */
import protobuf from "protobufjs";

export const GOOGLE_PROTO = `
syntax = "proto3";
package google.protobuf;

message Any {
  string type_url = 1;
  bytes value = 2;
}

message Struct {
  map<string, Value> fields = 1;
}

message Value {
  oneof kind {
    NullValue null_value = 1;
    double number_value = 2;
    string string_value = 3;
    bool bool_value = 4;
    Struct struct_value = 5;
    ListValue list_value = 6;
  }
}

enum NullValue {
  NULL_VALUE = 0;
}

message ListValue {
  repeated Value values = 1;
}
`;

export const WORKLOAD_PROTO = `
syntax = "proto3";

import "google/protobuf/struct.proto";

service SpiffeWorkloadAPI {
  rpc FetchX509SVID(X509SVIDRequest) returns (stream X509SVIDResponse);
  rpc FetchX509Bundles(X509BundlesRequest) returns (stream X509BundlesResponse);
  rpc FetchJWTSVID(JWTSVIDRequest) returns (JWTSVIDResponse);
  rpc FetchJWTBundles(JWTBundlesRequest) returns (stream JWTBundlesResponse);
  rpc ValidateJWTSVID(ValidateJWTSVIDRequest) returns (ValidateJWTSVIDResponse);
}

message X509SVIDRequest {}

message X509SVIDResponse {
  repeated X509SVID svids = 1;
  repeated bytes crl = 2;
  map<string, bytes> federated_bundles = 3;
}

message X509SVID {
  string spiffe_id = 1;
  bytes x509_svid = 2;
  bytes x509_svid_key = 3;
  bytes bundle = 4;
  string hint = 5;
}

message X509BundlesRequest {}

message X509BundlesResponse {
  repeated bytes crl = 1;
  map<string, bytes> bundles = 2;
}

message JWTSVIDRequest {
  repeated string audience = 1;
  string spiffe_id = 2;
}

message JWTSVIDResponse {
  repeated JWTSVID svids = 1;
}

message JWTSVID {
  string spiffe_id = 1;
  string svid = 2;
  string hint = 3;
}

message JWTBundlesRequest {}

message JWTBundlesResponse {
  map<string, bytes> bundles = 1;
}

message ValidateJWTSVIDRequest {
  string audience = 1;
  string svid = 2;
}

message ValidateJWTSVIDResponse {
  string spiffe_id = 1;
  google.protobuf.Struct claims = 2;
}
`;

/** Envoy's messages, one package per proto file of Envoy's tree. */
export const SDS_PROTOS: readonly string[] = [
  `syntax = "proto3";
package envoy.type.v3;
message SemanticVersion {
  uint32 major_number = 1;
  uint32 minor_number = 2;
  uint32 patch = 3;
}`,
  `syntax = "proto3";
package google.rpc;
message Status {
  int32 code = 1;
  string message = 2;
  repeated google.protobuf.Any details = 3;
}`,
  `syntax = "proto3";
package envoy.config.core.v3;
message BuildVersion {
  envoy.type.v3.SemanticVersion version = 1;
  google.protobuf.Struct metadata = 2;
}
message Node {
  string id = 1;
  string cluster = 2;
  google.protobuf.Struct metadata = 3;
  string user_agent_name = 6;
  oneof user_agent_version_type {
    string user_agent_version = 7;
    BuildVersion user_agent_build_version = 8;
  }
  repeated string client_features = 10;
}
message DataSource {
  oneof specifier {
    string filename = 1;
    bytes inline_bytes = 2;
    string inline_string = 3;
    string environment_variable = 4;
  }
}
message TypedExtensionConfig {
  string name = 1;
  google.protobuf.Any typed_config = 2;
}`,
  `syntax = "proto3";
package envoy.service.discovery.v3;
message DiscoveryRequest {
  string version_info = 1;
  envoy.config.core.v3.Node node = 2;
  repeated string resource_names = 3;
  string type_url = 4;
  string response_nonce = 5;
  google.rpc.Status error_detail = 6;
}
message DiscoveryResponse {
  string version_info = 1;
  repeated google.protobuf.Any resources = 2;
  bool canary = 3;
  string type_url = 4;
  string nonce = 5;
}`,
  `syntax = "proto3";
package envoy.extensions.transport_sockets.tls.v3;
message TlsCertificate {
  envoy.config.core.v3.DataSource certificate_chain = 1;
  envoy.config.core.v3.DataSource private_key = 2;
}
message CertificateValidationContext {
  envoy.config.core.v3.DataSource trusted_ca = 1;
  envoy.config.core.v3.TypedExtensionConfig custom_validator_config = 12;
}
message SPIFFECertValidatorConfig {
  message TrustDomain {
    string name = 1;
    envoy.config.core.v3.DataSource trust_bundle = 2;
  }
  repeated TrustDomain trust_domains = 1;
}
message Secret {
  string name = 1;
  oneof type {
    TlsCertificate tls_certificate = 2;
    CertificateValidationContext validation_context = 4;
  }
}`,
  `syntax = "proto3";
package envoy.service.secret.v3;
service SecretDiscoveryService {
  rpc StreamSecrets(stream envoy.service.discovery.v3.DiscoveryRequest)
      returns (stream envoy.service.discovery.v3.DiscoveryResponse);
  rpc FetchSecrets(envoy.service.discovery.v3.DiscoveryRequest)
      returns (envoy.service.discovery.v3.DiscoveryResponse);
}`,
];

export const WORKLOAD_SERVICE_NAME = "SpiffeWorkloadAPI";
export const SDS_SERVICE_NAME = "envoy.service.secret.v3.SecretDiscoveryService";
export const SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
export const SPIFFE_VALIDATOR_CONFIG_TYPE_URL =
  "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";
/** The Envoy certificate validator extension SPIRE configures for SPIFFE trust domains. */
export const SPIFFE_VALIDATOR_NAME = "envoy.tls.cert_validator.spiffe";

let cached: protobuf.Root | undefined;

/** One resolved protobufjs Root holding every definition above (parsed once). */
export function workloadProtoRoot(): protobuf.Root {
  if (cached) return cached;
  const root = new protobuf.Root();
  const opts = { keepCase: true };
  protobuf.parse(GOOGLE_PROTO, root, opts);
  protobuf.parse(WORKLOAD_PROTO, root, opts);
  for (const p of SDS_PROTOS) protobuf.parse(p, root, opts);
  root.resolveAll();
  cached = root;
  return root;
}

/** A message type by full name, e.g. `X509SVIDResponse` or `envoy.service.discovery.v3.DiscoveryRequest`. */
export function protoType(name: string): protobuf.Type {
  return workloadProtoRoot().lookupType(name);
}

/** The JSON descriptor of every definition (what @grpc/proto-loader's fromJSON takes). */
export function workloadProtoJson(): protobuf.INamespace {
  return workloadProtoRoot().toJSON();
}
