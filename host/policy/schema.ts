/**
 * The QHx Cedar schema (global namespace) and the entity builders that map QHx identities onto it.
 * Documented in docs/policy.md.
 */

export const QHX_CEDAR_SCHEMA = `// QHx Cedar schema v1. Entities are identities; authorization never uses network position alone.

// A SPIFFE trust domain, id = its name ("example.org").
entity TrustDomain = { name: String };

// A namespace within a trust domain, id = "<trust domain>/<namespace>" ("example.org/payments").
entity Namespace in [TrustDomain] = { name: String, trustDomain: String };

// An attested node (agent), id = its SPIFFE ID.
entity Node in [TrustDomain] = {
  spiffeId: String,
  trustDomain: String,
  attestor: String,
  selectors: Set<String>,
} tags String;

// A workload, id = its SPIFFE ID. Labels are tags (principal.getTag("team")).
entity Workload in [Namespace] = {
  spiffeId: String,
  trustDomain: String,
  path: String,
  namespace: String,
  assurance: String,
  nodeId?: String,
  selectors: Set<String>,
} tags String;

// A service a workload connects to, id = "<namespace>/<name>" or its SPIFFE ID.
entity Service in [Namespace] = { name: String, spiffeId?: String } tags String;

// An HTTP route of a service, id = "<service id> <path prefix>".
entity Route in [Service] = { pathPrefix: String };

type Tls = { mode: String, pq: Bool };
type Headers = {
  "content-type"?: String,
  "user-agent"?: String,
  "x-request-id"?: String,
  "x-qhx-tenant"?: String,
};
type RequestContext = {
  time: Long,
  sourceAddress?: ipaddr,
  method?: String,
  path?: String,
  headers?: Headers,
  tls?: Tls,
};

// SVID issuance (admission): the workload asks its trust domain for an identity.
action issue appliesTo {
  principal: [Workload],
  resource: [TrustDomain],
  context: { time: Long, svidType: String, nodeId?: String },
};

// A connection (tunnel / mTLS) from one workload to a service or another workload.
action connect appliesTo {
  principal: [Workload],
  resource: [Service, Workload],
  context: RequestContext,
};

// HTTP methods; "http" groups them (action in Action::"http").
action http;
action "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" in [Action::"http"] appliesTo {
  principal: [Workload],
  resource: [Service, Route],
  context: RequestContext,
};
`;

export interface EntityUidJson {
  type: string;
  id: string;
}

export interface CedarEntity {
  uid: EntityUidJson;
  attrs: Record<string, unknown>;
  parents: EntityUidJson[];
  tags?: Record<string, unknown>;
}

/** What admission and the data plane know about a workload. */
export interface WorkloadIdentity {
  spiffeId: string;
  trustDomain: string;
  path: string;
  namespace: string;
  labels?: Record<string, string>;
  assurance?: string;
  nodeId?: string;
  selectors?: string[];
}

export const namespaceUid = (trustDomain: string, namespace: string): EntityUidJson => ({
  type: "Namespace",
  id: `${trustDomain}/${namespace}`,
});

export const trustDomainUid = (trustDomain: string): EntityUidJson => ({
  type: "TrustDomain",
  id: trustDomain,
});

export const workloadUid = (spiffeId: string): EntityUidJson => ({ type: "Workload", id: spiffeId });

/**
 * Deep-freeze entities (and return them). The evaluator encodes a deep-frozen entity object once and
 * reuses the encoding whenever the same object appears in later requests: freeze the entities you keep
 * (workloads, namespaces, services) and pass the same objects again.
 */
export function freezeEntities<T>(v: T): T {
  if (typeof v === "object" && v !== null && !Object.isFrozen(v)) {
    for (const k of Object.keys(v)) freezeEntities((v as Record<string, unknown>)[k]);
    Object.freeze(v);
  }
  return v;
}

/**
 * The Workload entity plus its Namespace and TrustDomain ancestors, in Cedar's JSON entity format
 * (deep-frozen: keep and reuse them across requests).
 */
export function workloadEntities(w: WorkloadIdentity): CedarEntity[] {
  const ns = namespaceUid(w.trustDomain, w.namespace);
  const td = trustDomainUid(w.trustDomain);
  const attrs: Record<string, unknown> = {
    spiffeId: w.spiffeId,
    trustDomain: w.trustDomain,
    path: w.path,
    namespace: w.namespace,
    assurance: w.assurance ?? "none",
    selectors: w.selectors ?? [],
  };
  if (w.nodeId !== undefined) attrs.nodeId = w.nodeId;
  return freezeEntities([
    { uid: workloadUid(w.spiffeId), attrs, parents: [ns], tags: { ...(w.labels ?? {}) } },
    { uid: ns, attrs: { name: w.namespace, trustDomain: w.trustDomain }, parents: [td] },
    { uid: td, attrs: { name: w.trustDomain }, parents: [] },
  ]);
}
