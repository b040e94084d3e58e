/**
 * Random Cedar policy sets and requests for the differential tests and the benchmark. Seeded, so
 * every failure reproduces. Policies use every construct the compiler supports, over a small universe
 * of entity ids, attribute names and values so that conditions are often true, often false and
 * sometimes erroring.
 */

export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Uid = { type: string; id: string };
export interface Entity {
  uid: Uid;
  attrs: Record<string, unknown>;
  parents: Uid[];
  tags?: Record<string, unknown>;
}
export interface Request {
  principal: Uid;
  action: Uid;
  resource: Uid;
  context: Record<string, unknown>;
  entities: Entity[];
}

const TYPES = ["Workload", "Namespace", "TrustDomain", "Service", "Route"];
const IDS = ["a", "b", "c", "d", "e"];
/** Ids that may have entity data; "e" never does (a dangling reference). */
const ENT_IDS = ["a", "b", "c", "d"];
const ACTIONS = ["issue", "connect", "GET", "POST", "http"];
const ATTRS = ["n", "m", "s", "t", "flag", "owner", "items", "rec", "addr", "ratio"];
const TAGS = ["env", "team", "tier"];
const STRS = ["", "a", "ab", "prod", "dev", "spiffe://example.org/a", "aXb", "é€", "a*b"];
const LONGS = [0, 1, 2, -1, 5, 42, 9_007_199_254_740_991, -9_007_199_254_740_991, 3_037_000_499];
const IPS = [
  "10.0.0.1",
  "10.0.0.0/8",
  "192.168.1.7/24",
  "127.0.0.1",
  "224.1.2.3",
  "::1",
  "ff02::1",
  "2001:db8::/32",
  "2001:db8::7",
];
const DECS = ["1.5", "2.0", "-3.25", "0.0001", "10.1234", "1.50"];

export class Gen {
  r: () => number;
  constructor(seed: number) {
    this.r = rng(seed);
  }
  int(n: number): number {
    return Math.floor(this.r() * n);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  chance(p: number): boolean {
    return this.r() < p;
  }

  uid(): Uid {
    return { type: this.pick(TYPES), id: this.pick(IDS) };
  }
  uidText(u: Uid): string {
    return `${u.type}::${JSON.stringify(u.id)}`;
  }

  // ---- JSON values (entity attributes, context) ----
  jsonValue(depth = 0): unknown {
    const k = this.int(depth > 1 ? 6 : 9);
    switch (k) {
      case 0:
      case 1:
        return this.pick(LONGS);
      case 2:
      case 3:
        return this.pick(STRS);
      case 4:
        return this.chance(0.5);
      case 5:
        return { __entity: this.uid() };
      case 6:
        return Array.from({ length: this.int(4) }, () => this.jsonValue(depth + 1));
      case 7:
        return Object.fromEntries(
          Array.from({ length: this.int(3) }, () => [this.pick(ATTRS), this.jsonValue(depth + 1)]),
        );
      default:
        return this.chance(0.5)
          ? { __extn: { fn: "ip", arg: this.pick(IPS) } }
          : { __extn: { fn: "decimal", arg: this.pick(DECS) } };
    }
  }

  attrs(): Record<string, unknown> {
    const o: Record<string, unknown> = {};
    const n = this.int(6);
    for (let i = 0; i < n; i++) {
      const a = this.pick(ATTRS);
      // mostly well-typed per attribute name, so conditions evaluate rather than error
      o[a] = this.chance(0.75) ? this.typedValue(a) : this.jsonValue(1);
    }
    return o;
  }

  typedValue(a: string): unknown {
    switch (a) {
      case "n":
      case "m":
        return this.pick(LONGS.slice(0, 6));
      case "s":
      case "t":
        return this.pick(STRS);
      case "flag":
        return this.chance(0.5);
      case "owner":
        return { __entity: this.uid() };
      case "items":
        return Array.from({ length: this.int(4) }, () => (this.chance(0.5) ? this.pick(STRS) : this.int(4)));
      case "rec":
        return { n: this.int(5), s: this.pick(STRS) };
      case "addr":
        return { __extn: { fn: "ip", arg: this.pick(IPS) } };
      default:
        return { __extn: { fn: "decimal", arg: this.pick(DECS) } };
    }
  }

  request(opts: { cycles?: boolean } = {}): Request {
    const all: Uid[] = [];
    for (const t of TYPES) for (const id of ENT_IDS) if (this.chance(0.5)) all.push({ type: t, id });
    const acts: Uid[] = ACTIONS.map((id) => ({ type: "Action", id }));
    const entities: Entity[] = [];
    all.forEach((u, i) => {
      const parents: Uid[] = [];
      const np = this.int(3);
      for (let j = 0; j < np; j++) {
        // parents only among later entities (or unknown ids): acyclic unless cycles are asked for
        if (opts.cycles && this.chance(0.2)) parents.push(this.pick(all));
        else if (i + 1 < all.length) parents.push(all[i + 1 + this.int(all.length - i - 1)]!);
        else parents.push({ type: this.pick(TYPES), id: "e" });
      }
      const e: Entity = { uid: u, attrs: this.attrs(), parents };
      if (this.chance(0.6)) {
        e.tags = Object.fromEntries(
          Array.from({ length: this.int(3) }, () => [
            this.pick(TAGS),
            this.chance(0.8) ? this.pick(STRS) : 1,
          ]),
        );
      }
      entities.push(e);
    });
    // action hierarchy: HTTP methods in Action::"http"
    entities.push(
      { uid: acts[2]!, attrs: {}, parents: [acts[4]!] },
      { uid: acts[3]!, attrs: {}, parents: [acts[4]!] },
    );
    const principal = this.chance(0.8) && all.length ? this.pick(all) : this.uid();
    const resource = this.chance(0.8) && all.length ? this.pick(all) : this.uid();
    const context: Record<string, unknown> = {};
    for (const a of ATTRS)
      if (this.chance(0.6)) context[a] = this.chance(0.85) ? this.typedValue(a) : this.jsonValue(1);
    return { principal, action: this.pick(acts), resource, context, entities };
  }

  // ---- policy text ----
  /** An expression denoting an entity. */
  entExpr(d: number): string {
    const k = this.int(d > 2 ? 3 : 5);
    if (k === 0) return "principal";
    if (k === 1) return "resource";
    if (k === 2) return this.uidText(this.uid());
    if (k === 3) return `${this.recvExpr(d + 1)}.owner`;
    return "action";
  }
  /** Something with attributes: an entity or a record. */
  recvExpr(d: number): string {
    const k = this.int(d > 2 ? 3 : 5);
    if (k === 0) return "principal";
    if (k === 1) return "resource";
    if (k === 2) return "context";
    if (k === 3) return `${this.recvExpr(d + 1)}.owner`;
    return `context.rec`;
  }
  longExpr(d: number): string {
    const k = this.int(d > 3 ? 3 : 8);
    switch (k) {
      case 0:
        return String(this.pick(LONGS));
      case 1:
        return `${this.recvExpr(d + 1)}.${this.pick(["n", "m"])}`;
      case 2:
        return `context.${this.pick(["n", "m"])}`;
      case 3:
        return `(${this.longExpr(d + 1)} + ${this.longExpr(d + 1)})`;
      case 4:
        return `(${this.longExpr(d + 1)} - ${this.longExpr(d + 1)})`;
      case 5:
        return `(${this.longExpr(d + 1)} * ${this.longExpr(d + 1)})`;
      case 6:
        return `(-${this.longExpr(d + 1)})`;
      default:
        return `(if ${this.boolExpr(d + 1)} then ${this.longExpr(d + 1)} else ${this.longExpr(d + 1)})`;
    }
  }
  strExpr(d: number): string {
    const k = this.int(d > 3 ? 2 : 4);
    if (k === 0) return JSON.stringify(this.pick(STRS));
    if (k === 1) return `${this.recvExpr(d + 1)}.${this.pick(["s", "t"])}`;
    if (k === 2) return `${this.entExpr(d + 1)}.getTag(${JSON.stringify(this.pick(TAGS))})`;
    return `context.rec.s`;
  }
  setExpr(d: number): string {
    const k = this.int(d > 3 ? 2 : 3);
    if (k === 0) return `[${Array.from({ length: this.int(3) }, () => this.anyExpr(d + 1)).join(", ")}]`;
    if (k === 1) return `${this.recvExpr(d + 1)}.items`;
    return `[${this.strExpr(d + 1)}, ${this.longExpr(d + 1)}]`;
  }
  anyExpr(d: number): string {
    const k = this.int(d > 3 ? 3 : 7);
    switch (k) {
      case 0:
        return this.longExpr(d);
      case 1:
        return this.strExpr(d);
      case 2:
        return this.entExpr(d);
      case 3:
        return this.boolExpr(d);
      case 4:
        return this.setExpr(d);
      case 5:
        return `{ n: ${this.longExpr(d + 1)}, s: ${this.strExpr(d + 1)} }`;
      default:
        return `${this.recvExpr(d + 1)}.${this.pick(ATTRS)}`;
    }
  }
  pattern(): string {
    const parts = ["a", "b", "*", "\\*", "X", "é", "prod", ""];
    let p = "";
    const n = 1 + this.int(4);
    for (let i = 0; i < n; i++) p += this.pick(parts);
    return `"${p}"`;
  }
  boolExpr(d: number): string {
    return `(${this.boolInner(d)})`;
  }
  boolInner(d: number): string {
    const k = this.int(d > 3 ? 6 : 28);
    switch (k) {
      case 0:
        return this.chance(0.5) ? "true" : "false";
      case 1:
        return `${this.anyExpr(d + 1)} == ${this.anyExpr(d + 1)}`;
      case 2:
        return `${this.longExpr(d + 1)} ${this.pick(["<", "<=", ">", ">="])} ${this.longExpr(d + 1)}`;
      case 3:
        return `${this.recvExpr(d + 1)} has ${this.pick(ATTRS)}`;
      case 4:
        return `${this.entExpr(d + 1)} in ${this.uidText(this.uid())}`;
      case 5:
        return `${this.entExpr(d + 1)}.hasTag(${JSON.stringify(this.pick(TAGS))})`;
      case 6:
        return `(${this.boolExpr(d + 1)} && ${this.boolExpr(d + 1)})`;
      case 7:
        return `(${this.boolExpr(d + 1)} || ${this.boolExpr(d + 1)})`;
      case 8:
        return `!(${this.boolExpr(d + 1)})`;
      case 9:
        return `${this.strExpr(d + 1)} like ${this.pattern()}`;
      case 10:
        return `${this.entExpr(d + 1)} is ${this.pick(TYPES)}`;
      case 11:
        return `${this.entExpr(d + 1)} is ${this.pick(TYPES)} in ${this.uidText(this.uid())}`;
      case 12:
        return `${this.entExpr(d + 1)} in [${this.uidText(this.uid())}, ${this.uidText(this.uid())}]`;
      case 13:
        return `${this.setExpr(d + 1)}.contains(${this.anyExpr(d + 1)})`;
      case 14:
        return `${this.setExpr(d + 1)}.containsAll(${this.setExpr(d + 1)})`;
      case 15:
        return `${this.setExpr(d + 1)}.containsAny(${this.setExpr(d + 1)})`;
      case 16:
        return `${this.setExpr(d + 1)}.isEmpty()`;
      case 17:
        return `(if ${this.boolExpr(d + 1)} then ${this.boolExpr(d + 1)} else ${this.boolExpr(d + 1)})`;
      case 18:
        return `${this.recvExpr(d + 1)}.flag`;
      case 19: {
        const ip = `ip(${JSON.stringify(this.pick(IPS))})`;
        const v = this.chance(0.6) ? `${this.recvExpr(d + 1)}.addr` : ip;
        return this.chance(0.5)
          ? `${v}.${this.pick(["isIpv4", "isIpv6", "isLoopback", "isMulticast"])}()`
          : `${v}.isInRange(${this.chance(0.5) ? ip : `context.addr`})`;
      }
      case 20: {
        const dec = `decimal(${JSON.stringify(this.pick(DECS))})`;
        const v = this.chance(0.6) ? `${this.recvExpr(d + 1)}.ratio` : dec;
        return `${v}.${this.pick(["lessThan", "lessThanOrEqual", "greaterThan", "greaterThanOrEqual"])}(${dec})`;
      }
      case 21:
        return `${this.anyExpr(d + 1)} != ${this.anyExpr(d + 1)}`;
      case 22:
        return `${this.recvExpr(d + 1)}.rec == { n: ${this.longExpr(d + 1)}, s: ${this.strExpr(d + 1)} }`;
      case 23:
        return `${this.recvExpr(d + 1)} has rec.n`;
      case 24:
        return `action in Action::"http"`;
      case 25:
        // context as a whole value (the encoder then keeps every context key)
        return this.chance(0.5) ? `${this.anyExpr(d + 1)} == context` : `[context].contains(context)`;
      case 26:
        // a computed tag key (the encoder then keeps every tag)
        return `${this.entExpr(d + 1)}.hasTag(${this.strExpr(d + 1)})`;
      default:
        return `${this.entExpr(d + 1)} in ${this.entExpr(d + 1)}`;
    }
  }
  scope(v: "principal" | "resource"): string {
    const k = this.int(6);
    if (k <= 1) return v;
    if (k === 2) return `${v} == ${this.uidText(this.uid())}`;
    if (k === 3) return `${v} in ${this.uidText(this.uid())}`;
    if (k === 4) return `${v} is ${this.pick(TYPES)}`;
    return `${v} is ${this.pick(TYPES)} in ${this.uidText(this.uid())}`;
  }
  actionScope(): string {
    const k = this.int(4);
    if (k <= 1) return "action";
    if (k === 2) return `action == Action::${JSON.stringify(this.pick(ACTIONS))}`;
    return `action in [${Array.from({ length: 1 + this.int(2) }, () => `Action::${JSON.stringify(this.pick(ACTIONS))}`).join(", ")}]`;
  }
  policy(forbidRate = 0.3): string {
    const effect = this.chance(forbidRate) ? "forbid" : "permit";
    let conds = "";
    // a forbid always has a condition, so that large sets are not all-deny
    const n = effect === "forbid" ? 1 + this.int(2) : this.int(3);
    for (let i = 0; i < n; i++) conds += ` ${this.chance(0.7) ? "when" : "unless"} { ${this.boolExpr(0)} }`;
    const principal =
      effect === "forbid" ? `principal == ${this.uidText(this.uid())}` : this.scope("principal");
    return `${effect}(${principal}, ${this.actionScope()}, ${this.scope("resource")})${conds};`;
  }
  policySet(n: number): string {
    const forbidRate = n >= 100 ? 0.1 : 0.3;
    return Array.from({ length: n }, () => this.policy(forbidRate)).join("\n");
  }
}

/** A realistic 10-policy mesh set over the QHx schema (validates in strict mode). */
export const MESH_POLICIES = `
@id("issue-prod")
permit(principal is Workload in Namespace::"example.org/payments", action == Action::"issue", resource == TrustDomain::"example.org")
when { principal.assurance == "hardware" || context.svidType == "jwt" };

@id("issue-default")
permit(principal is Workload, action == Action::"issue", resource)
when { principal.trustDomain == resource.name && principal.path like "/ns/*" };

@id("no-issue-quarantine")
forbid(principal, action == Action::"issue", resource)
when { principal.hasTag("quarantine") && principal.getTag("quarantine") == "true" };

@id("connect-same-ns")
permit(principal is Workload, action == Action::"connect", resource is Service)
when { resource in Namespace::"example.org/payments" && principal in Namespace::"example.org/payments" };

@id("connect-frontend")
permit(principal, action == Action::"connect", resource == Service::"payments/api")
when { principal.hasTag("team") && principal.getTag("team") == "frontend" && principal.selectors.contains("k8s:sa:frontend") };

@id("http-read")
permit(principal is Workload, action in [Action::"GET", Action::"HEAD"], resource is Route in Service::"payments/api")
when { context has path && context.path like "/v1/*" };

@id("http-write")
permit(principal is Workload, action in Action::"http", resource is Route in Service::"payments/api")
when { principal.assurance == "hardware" && context has tls && context.tls.pq };

@id("internal-only")
forbid(principal, action, resource is Route)
unless { context has sourceAddress && context.sourceAddress.isInRange(ip("10.0.0.0/8")) };

@id("business-hours")
forbid(principal, action in Action::"http", resource)
when { context.time < 1700000000 };

@id("no-plain-tls")
forbid(principal, action == Action::"connect", resource)
when { context has tls && context.tls.mode == "plain" };
`;

const NS = ["payments", "web", "batch"];
const ASSURANCE = ["hardware", "software", "none"];

/** A random request against the mesh set (entities per the QHx schema). */
export function meshRequest(g: Gen): Request {
  const ns = g.pick(NS);
  const name = g.pick(["api", "db", "ui"]);
  const spiffeId = `spiffe://example.org/ns/${ns}/sa/${name}`;
  const labels: Record<string, string> = {};
  if (g.chance(0.5)) labels.team = g.pick(["frontend", "backend"]);
  if (g.chance(0.2)) labels.quarantine = g.pick(["true", "false"]);
  const w: Entity = {
    uid: { type: "Workload", id: spiffeId },
    attrs: {
      spiffeId,
      trustDomain: "example.org",
      path: g.chance(0.9) ? `/ns/${ns}/sa/${name}` : `/x/${name}`,
      namespace: ns,
      assurance: g.pick(ASSURANCE),
      selectors: g.chance(0.5) ? ["k8s:sa:frontend", "k8s:ns:web"] : ["k8s:ns:batch"],
    },
    parents: [{ type: "Namespace", id: `example.org/${ns}` }],
    tags: labels,
  };
  const entities: Entity[] = [
    w,
    ...NS.map((n) => ({
      uid: { type: "Namespace", id: `example.org/${n}` },
      attrs: { name: n, trustDomain: "example.org" },
      parents: [{ type: "TrustDomain", id: "example.org" }],
    })),
    { uid: { type: "TrustDomain", id: "example.org" }, attrs: { name: "example.org" }, parents: [] },
    {
      uid: { type: "Service", id: "payments/api" },
      attrs: { name: "api" },
      parents: [{ type: "Namespace", id: "example.org/payments" }],
    },
    {
      uid: { type: "Route", id: "payments/api /v1" },
      attrs: { pathPrefix: "/v1" },
      parents: [{ type: "Service", id: "payments/api" }],
    },
  ];
  const kind = g.int(3);
  const context: Record<string, unknown> = { time: g.chance(0.8) ? 1_800_000_000 : 1_600_000_000 };
  if (kind === 0) {
    context.svidType = g.pick(["x509", "jwt"]);
    return {
      principal: w.uid,
      action: { type: "Action", id: "issue" },
      resource: { type: "TrustDomain", id: "example.org" },
      context,
      entities,
    };
  }
  if (g.chance(0.7))
    context.sourceAddress = { __extn: { fn: "ip", arg: g.pick(["10.1.2.3", "192.168.0.1", "10.0.0.9"]) } };
  if (g.chance(0.7)) context.tls = { mode: g.pick(["mtls", "plain"]), pq: g.chance(0.5) };
  if (kind === 1) {
    return {
      principal: w.uid,
      action: { type: "Action", id: "connect" },
      resource: { type: "Service", id: "payments/api" },
      context,
      entities,
    };
  }
  const method = g.pick(["GET", "HEAD", "POST", "DELETE"]);
  context.method = method;
  context.path = g.pick(["/v1/pay", "/v2/pay", "/health"]);
  return {
    principal: w.uid,
    action: { type: "Action", id: method },
    resource: { type: "Route", id: "payments/api /v1" },
    context,
    entities,
  };
}
