import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Prometheus metrics of one server process (its own registry, so several servers can share a process in tests). */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly svidsIssued = new Counter({
    name: "qhx_svids_issued_total",
    help: "SVIDs issued, by type (x509|jwt) and key algorithm",
    labelNames: ["type", "alg"] as const,
    registers: [this.registry],
  });
  readonly caEvents = new Counter({
    name: "qhx_ca_events_total",
    help: "CA life-cycle events (created, prepared, active, retired, pruned, bundle_published)",
    labelNames: ["event"] as const,
    registers: [this.registry],
  });
  readonly entries = new Gauge({
    name: "qhx_registration_entries",
    help: "Registration entries in the datastore",
    registers: [this.registry],
  });
  readonly bundleSequence = new Gauge({
    name: "qhx_bundle_sequence",
    help: "spiffe_sequence of the trust domain's own bundle",
    registers: [this.registry],
  });
  readonly adminRequests = new Histogram({
    name: "qhx_admin_request_duration_seconds",
    help: "Admin API request duration by route and status",
    labelNames: ["route", "status"] as const,
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [this.registry],
  });

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry, prefix: "qhx_process_" });
  }
}
