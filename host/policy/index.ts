/**
 * `qhx/policy`: Cedar policies compiled to a Wasm decision program.
 *
 *   const set = await compilePolicies({ policies, schema });
 *   set.authorize({ principal, action, resource, context, entities }) // → { decision, reasons, errors }
 *
 * Policies are parsed and (with a schema, strictly) validated by Cedar itself (cedar-wasm), compiled
 * from Cedar's JSON policy format into a program for the AssemblyScript evaluator, and evaluated with
 * Cedar's semantics: deny by default, forbid overrides permit, a policy whose condition errors does
 * not apply and is reported in `errors`. A policy set using any construct the compiler does not
 * support is evaluated by cedar-wasm instead (`engine: "cedar"`, `unsupported` names the constructs);
 * so is any single request the encoder cannot represent exactly. Never silently different from Cedar.
 */
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import { QhxError } from "../core/errors.ts";
import { compileProgram, type PolicyProgram, PROGRAM_FORMATS } from "./compiler.ts";
import { CompiledEvaluator } from "./runtime.ts";
import {
  type CedarEntity,
  type EntityUidJson,
  trustDomainUid,
  type WorkloadIdentity,
  workloadEntities,
  workloadUid,
} from "./schema.ts";

export {
  freezeEntities,
  QHX_CEDAR_SCHEMA,
  workloadEntities,
  namespaceUid,
  trustDomainUid,
  workloadUid,
} from "./schema.ts";
export type { CedarEntity, EntityUidJson, WorkloadIdentity } from "./schema.ts";
export type { PolicyProgram } from "./compiler.ts";

export type EntityRef = EntityUidJson | { __entity: EntityUidJson };

export interface PolicyRequest {
  principal: EntityRef;
  action: EntityRef;
  resource: EntityRef;
  context?: Record<string, unknown>;
  entities?: CedarEntity[];
}

export interface PolicyDecision {
  decision: "allow" | "deny";
  /** The determining policies: the satisfied forbids on deny, the satisfied permits on allow. */
  reasons: string[];
  errors: { policyId: string; message: string }[];
}

export interface CompilePoliciesOptions {
  /** Cedar policy text (ids policy0, policy1, … in order), or a record of policy id → text of one policy. */
  policies: string | Record<string, string>;
  /** Cedar schema (text or JSON). When given, policies are validated against it (strict mode). */
  schema?: string | Record<string, unknown>;
  /** `"auto"` (default): compiled when possible; `"cedar"`: always cedar-wasm. */
  engine?: "auto" | "cedar";
  /**
   * A program compiled earlier from these same policies (e.g. received, signature verified, from the
   * server): used instead of compiling. Its policy ids must match the policies'.
   */
  program?: PolicyProgram;
}

export interface CompiledPolicySet {
  /** Which engine evaluates this set. */
  readonly engine: "compiled" | "cedar";
  /** Policy ids in set order. */
  readonly policyIds: readonly string[];
  /** Each policy's Cedar text, by id. */
  readonly policyTexts: Readonly<Record<string, string>>;
  /** Why the set is not compiled (empty when it is). */
  readonly unsupported: readonly { policyId: string; construct: string }[];
  /** The decision program (undefined when the set is evaluated by cedar-wasm). */
  readonly program: PolicyProgram | undefined;
  /** How many requests each engine decided (requests the encoder cannot represent go to cedar). */
  readonly stats: { compiled: number; cedar: number };
  authorize(request: PolicyRequest): PolicyDecision;
  /** The reference path: the same request through cedar-wasm (`statefulIsAuthorized`, preparsed). */
  authorizeWithCedar(request: PolicyRequest): PolicyDecision;
}

type DetailedError = { message: string; help?: string | null };

function formatErrors(errs: DetailedError[]): string {
  return errs.map((e) => e.message + (e.help ? ` (${e.help})` : "")).join("; ");
}

/** Cedar assigns `policy<N>` ids in source order; policySetTextToParts returns them sorted by id. */
function splitPolicyText(text: string): [string, string][] {
  const r = cedar.policySetTextToParts(text);
  if (r.type === "failure") {
    throw new QhxError("QHX_POLICY_PARSE", `cannot parse policies: ${formatErrors(r.errors)}`);
  }
  if (r.policy_templates.length) {
    throw new QhxError("QHX_POLICY_PARSE", "policy templates are not supported; write static policies");
  }
  const ids = r.policies.map((_, i) => `policy${i}`).sort();
  const byId = new Map(r.policies.map((p, i) => [ids[i]!, p]));
  return r.policies.map((_, i) => [`policy${i}`, byId.get(`policy${i}`)!]);
}

/**
 * Split Cedar text into a record of id → policy text, naming each policy by its `@id("…")` annotation
 * when it has one (else `policy<N>`, N its position). Throws QHX_POLICY_PARSE on syntax errors or
 * duplicate ids. The policy store keeps policies in this form.
 */
export function policiesFromText(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [defaultId, policy] of splitPolicyText(text)) {
    const j = cedar.policyToJson(policy);
    if (j.type === "failure")
      throw new QhxError("QHX_POLICY_PARSE", `${defaultId}: ${formatErrors(j.errors)}`);
    const id = j.json.annotations?.id ?? defaultId;
    if (id in out) throw new QhxError("QHX_POLICY_PARSE", `duplicate policy id "${id}"`);
    out[id] = policy;
  }
  return out;
}

function policyEntries(policies: string | Record<string, string>): [string, string][] {
  if (typeof policies === "string") return splitPolicyText(policies);
  if (policies === null || typeof policies !== "object" || Array.isArray(policies)) {
    throw new QhxError("QHX_POLICY_PARSE", "policies must be Cedar text or a record of policy id → text");
  }
  return Object.entries(policies).map(([id, text]) => {
    if (typeof text !== "string")
      throw new QhxError("QHX_POLICY_PARSE", `policy ${id}: text must be a string`);
    return [id, text];
  });
}

const typeNameCache = new Map<string, boolean>();
function cedarTypeNameOk(type: string): boolean {
  let ok = typeNameCache.get(type);
  if (ok === undefined) {
    const r = cedar.checkParseEntities({ entities: [{ uid: { type, id: "x" }, attrs: {}, parents: [] }] });
    ok = r.type === "success";
    if (typeNameCache.size > 10_000) typeNameCache.clear();
    typeNameCache.set(type, ok);
  }
  return ok;
}

const EXT_CHECK_REQ = {
  principal: { type: "P", id: "p" },
  action: { type: "Action", id: "a" },
  resource: { type: "R", id: "r" },
  context: {},
  entities: [],
};
/** `s` as a Cedar string literal (printable ASCII as is, everything else as \u{…}). */
function cedarStringLiteral(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0x20 && cp < 0x7f && ch !== '"' && ch !== "\\") out += ch;
    else out += `\\u{${cp.toString(16)}}`;
  }
  return `${out}"`;
}

/** Does Cedar accept `fn(arg)`? undefined when it cannot tell (the probe itself does not parse). */
function cedarExtOk(fn: "ip" | "decimal", arg: string): boolean | undefined {
  if (!arg.isWellFormed()) return undefined;
  const lit = `${fn}(${cedarStringLiteral(arg)})`;
  const r = cedar.isAuthorized({
    ...EXT_CHECK_REQ,
    policies: { staticPolicies: `permit(principal, action, resource) when { ${lit} == ${lit} };` },
  });
  if (r.type !== "success") return undefined;
  if (r.response.decision === "allow") return true;
  return r.response.diagnostics.errors.length === 1 ? false : undefined;
}

/** Action entities declared by a schema (with their action groups), to add to requests. */
function schemaActionEntities(schema: string | Record<string, unknown>): CedarEntity[] {
  let json: Record<string, { actions?: Record<string, { memberOf?: { id: string; type?: string }[] }> }>;
  if (typeof schema === "string") {
    const r = cedar.schemaToJson(schema);
    if (r.type === "failure")
      throw new QhxError("QHX_POLICY_SCHEMA", `invalid schema: ${formatErrors(r.errors)}`);
    json = r.json as typeof json;
  } else {
    json = schema as typeof json;
  }
  const out: CedarEntity[] = [];
  for (const [ns, def] of Object.entries(json)) {
    const actionType = ns ? `${ns}::Action` : "Action";
    for (const [id, a] of Object.entries(def.actions ?? {})) {
      out.push({
        uid: { type: actionType, id },
        attrs: {},
        parents: (a.memberOf ?? []).map((m) => ({
          type: m.type ? (m.type.includes("::") || !ns ? m.type : `${ns}::${m.type}`) : actionType,
          id: m.id,
        })),
      });
    }
  }
  return out;
}

function withActions(entities: CedarEntity[] | undefined, actions: CedarEntity[]): CedarEntity[] {
  const ents = entities ?? [];
  if (actions.length === 0) return ents;
  const have = new Set<string>();
  for (const e of ents) {
    const u = (e.uid as { __entity?: EntityUidJson }).__entity ?? (e.uid as EntityUidJson);
    if (u && typeof u.type === "string" && u.type.endsWith("Action")) have.add(`${u.type}\0${u.id}`);
  }
  const missing = actions.filter((a) => !have.has(`${a.uid.type}\0${a.uid.id}`));
  return missing.length ? [...ents, ...missing] : ents;
}

let setCounter = 0;

/** Parse, validate and compile a Cedar policy set. */
export async function compilePolicies(opts: CompilePoliciesOptions): Promise<CompiledPolicySet> {
  if (opts === null || typeof opts !== "object") {
    throw new QhxError("QHX_POLICY_PARSE", "compilePolicies: options object required");
  }
  const entries = policyEntries(opts.policies);
  const ids = entries.map(([id]) => id);
  const staticPolicies: Record<string, string> = Object.fromEntries(entries);
  const check = cedar.checkParsePolicySet({ staticPolicies });
  if (check.type === "failure") {
    throw new QhxError("QHX_POLICY_PARSE", `cannot parse policies: ${formatErrors(check.errors)}`);
  }
  let actions: CedarEntity[] = [];
  if (opts.schema !== undefined) {
    const v = cedar.validate({
      schema: opts.schema as cedar.Schema,
      policies: { staticPolicies },
      validationSettings: { mode: "strict" },
    });
    if (v.type === "failure") {
      throw new QhxError("QHX_POLICY_SCHEMA", `invalid schema: ${formatErrors(v.errors)}`);
    }
    if (v.validationErrors.length) {
      throw new QhxError(
        "QHX_POLICY_INVALID",
        `policies do not validate against the schema: ${v.validationErrors
          .map((e) => `${e.policyId}: ${e.error.message}${e.error.help ? ` (${e.error.help})` : ""}`)
          .join("; ")}`,
      );
    }
    actions = schemaActionEntities(opts.schema);
  }
  const jsons: [string, unknown][] = entries.map(([id, text]) => {
    const r = cedar.policyToJson(text);
    if (r.type === "failure") {
      throw new QhxError("QHX_POLICY_PARSE", `policy ${id}: ${formatErrors(r.errors)}`);
    }
    return [id, r.json];
  });
  const psetId = `qhx-policy-set-${++setCounter}`;
  const pre = cedar.preparsePolicySet(psetId, { staticPolicies });
  if (pre.type === "failure") {
    throw new QhxError("QHX_POLICY_PARSE", `cannot parse policies: ${formatErrors(pre.errors)}`);
  }
  const order = new Map(ids.map((id, i) => [id, i]));
  const byOrder = (a: string, b: string) => (order.get(a) ?? 0) - (order.get(b) ?? 0);
  const stats = { compiled: 0, cedar: 0 };

  const authorizeWithCedar = (req: PolicyRequest): PolicyDecision => {
    let r: cedar.AuthorizationAnswer;
    try {
      r = cedar.statefulIsAuthorized({
        principal: req.principal,
        action: req.action,
        resource: req.resource,
        context: (req.context ?? {}) as cedar.Context,
        entities: withActions(req.entities, actions) as cedar.Entities,
        preparsedPolicySetId: psetId,
      });
    } catch (e) {
      // cedar-wasm throws on input it cannot even deserialize (e.g. lone UTF-16 surrogates)
      throw new QhxError("QHX_POLICY_REQUEST_INVALID", `invalid authorization request: ${String(e)}`, {
        cause: e,
      });
    }
    if (r.type === "failure") {
      throw new QhxError(
        "QHX_POLICY_REQUEST_INVALID",
        `invalid authorization request: ${formatErrors(r.errors)}`,
      );
    }
    const d = r.response.diagnostics;
    return {
      decision: r.response.decision,
      reasons: [...d.reason].sort(byOrder),
      errors: d.errors
        .map((e) => ({ policyId: e.policyId, message: e.error.message }))
        .sort((a, b) => byOrder(a.policyId, b.policyId)),
    };
  };

  let compiled: { program?: PolicyProgram; unsupported: { policyId: string; construct: string }[] };
  if (opts.engine === "cedar") compiled = { unsupported: [] };
  else if (opts.program !== undefined) {
    const p = opts.program;
    if (
      p === null ||
      typeof p !== "object" ||
      !PROGRAM_FORMATS.includes(p.format) ||
      !Array.isArray(p.policies) ||
      p.policies.map((x) => x.id).join("\0") !== ids.join("\0")
    ) {
      throw new QhxError("QHX_POLICY_PROGRAM_INVALID", "the program does not match these policies");
    }
    compiled = { program: p, unsupported: [] };
  } else compiled = compileProgram(jsons, cedarExtOk);
  const evaluator = compiled.program
    ? new CompiledEvaluator(compiled.program, cedarTypeNameOk, cedarExtOk)
    : undefined;

  const authorize = evaluator
    ? (req: PolicyRequest): PolicyDecision => {
        if (req === null || typeof req !== "object") {
          throw new QhxError("QHX_POLICY_REQUEST_INVALID", "authorization request must be an object");
        }
        const r = evaluator.authorize(
          actions.length ? { ...req, entities: withActions(req.entities, actions) } : req,
        );
        if (r) {
          stats.compiled++;
          return r;
        }
        stats.cedar++;
        return authorizeWithCedar(req);
      }
    : (req: PolicyRequest): PolicyDecision => {
        if (req === null || typeof req !== "object") {
          throw new QhxError("QHX_POLICY_REQUEST_INVALID", "authorization request must be an object");
        }
        stats.cedar++;
        return authorizeWithCedar(req);
      };

  return {
    engine: evaluator ? "compiled" : "cedar",
    policyIds: ids,
    policyTexts: staticPolicies,
    unsupported: compiled.unsupported,
    program: compiled.program,
    stats,
    authorize,
    authorizeWithCedar,
  };
}

// ---- admission ----

export interface IssuanceInput {
  workload: WorkloadIdentity;
  svidType: "x509" | "jwt";
  /** Unix seconds; defaults to now. */
  time?: number;
  /** Extra entities (e.g. the Node), in Cedar's JSON entity format. */
  entities?: CedarEntity[];
}

/** The Cedar request for action `issue` on the workload's trust domain. */
export function issuanceRequest(input: IssuanceInput): PolicyRequest {
  const w = input.workload;
  const context: Record<string, unknown> = {
    time: input.time ?? Math.floor(Date.now() / 1000),
    svidType: input.svidType,
  };
  if (w.nodeId !== undefined) context.nodeId = w.nodeId;
  return {
    principal: workloadUid(w.spiffeId),
    action: { type: "Action", id: "issue" },
    resource: trustDomainUid(w.trustDomain),
    context,
    entities: [...workloadEntities(w), ...(input.entities ?? [])],
  };
}

/** Evaluate action `issue` for a workload. */
export function authorizeIssuance(set: CompiledPolicySet, input: IssuanceInput): PolicyDecision {
  return set.authorize(issuanceRequest(input));
}

/**
 * Admission gate for SVID issuance: throws QhxError `QHX_POLICY_DENIED` naming the deciding policies
 * (and any erroring ones) when policy does not allow action `issue`; returns the decision otherwise.
 */
export function assertIssuanceAllowed(set: CompiledPolicySet, input: IssuanceInput): PolicyDecision {
  const d = authorizeIssuance(set, input);
  if (d.decision === "allow") return d;
  const why = d.reasons.length
    ? `forbidden by ${d.reasons.join(", ")}`
    : "no policy permits it (deny by default)";
  const errs = d.errors.length ? `; erroring policies: ${d.errors.map((e) => e.policyId).join(", ")}` : "";
  throw new QhxError(
    "QHX_POLICY_DENIED",
    `issuance of ${input.workload.spiffeId} denied by policy: ${why}${errs}`,
    { hint: "see `qhx policy show` and `qhx policy test`" },
  );
}

export { PolicyHolder } from "./distribution.ts";
export { verifyPolicyVersion } from "./signed.ts";
export type { PolicySignature, PolicyVersion } from "./signed.ts";
