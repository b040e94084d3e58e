/** Prometheus metrics of the tunnels in one process (own registry; labels per peer SPIFFE ID). */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

export class TunnelMetrics {
  readonly registry = new Registry();
  readonly connections = new Counter({
    name: "qhx_tunnel_connections_total",
    help: "Tunnel connections by side, mode, peer SPIFFE ID and outcome (allowed|denied|refused|failed)",
    labelNames: ["role", "mode", "peer", "outcome"] as const,
    registers: [this.registry],
  });
  readonly refusals = new Counter({
    name: "qhx_tunnel_refusals_total",
    help: "Refused tunnel connections by side and reason code",
    labelNames: ["role", "mode", "reason"] as const,
    registers: [this.registry],
  });
  readonly active = new Gauge({
    name: "qhx_tunnel_active_connections",
    help: "Established tunnel connections by side, peer, key-exchange group and peer signature algorithm",
    labelNames: ["role", "mode", "peer", "group", "sig_alg"] as const,
    registers: [this.registry],
  });
  readonly bytes = new Counter({
    name: "qhx_tunnel_bytes_total",
    help: "Plaintext bytes carried by side, peer and direction (request: client side to server side)",
    labelNames: ["role", "peer", "direction"] as const,
    registers: [this.registry],
  });
  readonly handshake = new Histogram({
    name: "qhx_tunnel_handshake_seconds",
    help: "TCP accept/connect to verified peer, by side, mode, group, peer signature algorithm and peer",
    labelNames: ["role", "mode", "group", "sig_alg", "peer"] as const,
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1],
    registers: [this.registry],
  });
  readonly reused = new Counter({
    name: "qhx_tunnel_reused_connections_total",
    help: "Application connections carried over an already verified TLS connection (qhx-streams/1)",
    labelNames: ["role"] as const,
    registers: [this.registry],
  });
  readonly svidRotations = new Counter({
    name: "qhx_tunnel_svid_updates_total",
    help: "SVID or bundle updates applied (new secure context)",
    labelNames: ["role"] as const,
    registers: [this.registry],
  });

  constructor(defaults = false) {
    if (defaults) collectDefaultMetrics({ register: this.registry, prefix: "qhx_process_" });
  }
}
