/**
 * `qhx federation …`: explicit federation relationships with foreign trust domains. Register with
 * `registerFederationCommands(program)`.
 *
 *   qhx federation create --trust-domain TD --endpoint-url URL --profile https_spiffe|https_web
 *                         [--endpoint-spiffe-id ID] [--bundle FILE] [--web-ca FILE]
 *   qhx federation list
 *   qhx federation show TD [--bundle]
 *   qhx federation update TD [--endpoint-url URL] [--profile P] [--endpoint-spiffe-id ID] [--web-ca FILE]
 *   qhx federation delete TD
 *   qhx federation refresh TD
 *
 * Server commands take --socket PATH (running server) or --data-dir DIR (offline, on the data directory).
 */
import fs from "node:fs";
import type { Command } from "commander";
import { QhxError, ValidationError } from "../core/errors.ts";
import { type ConnectionOptions as ConnOpts, withClient, withConnection } from "./client.ts";

function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

function readText(file: string, what: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new QhxError("QHX_INVALID_ARGUMENT", `${what} ${file}: ${(e as NodeJS.ErrnoException).code}`);
  }
}

interface RelationshipJson {
  trust_domain: string;
  bundle_endpoint_url: string;
  profile: string;
  endpoint_spiffe_id: string | null;
  web_trust_roots: boolean;
  bundle: {
    sequence: number;
    refresh_hint: number | null;
    x509_authorities: number;
    jwt_authorities: number;
    updated_at: number;
    document?: string;
  } | null;
  refresh: {
    last_attempt_at: number | null;
    last_success_at: number | null;
    last_error: { code: string; message: string } | null;
    consecutive_failures: number;
    next_refresh_at: number;
  };
}

const iso = (s: number | null) => (s === null ? "never" : new Date(s * 1000).toISOString());

function printRelationship(r: RelationshipJson, withDocument = false): void {
  out(`trust domain:     ${r.trust_domain}`);
  out(`endpoint:         ${r.bundle_endpoint_url} (${r.profile})`);
  if (r.endpoint_spiffe_id) out(`endpoint id:      ${r.endpoint_spiffe_id}`);
  if (r.profile === "https_web")
    out(`web roots:        ${r.web_trust_roots ? "operator CA" : "system roots"}`);
  if (r.bundle) {
    out(
      `bundle:           sequence ${r.bundle.sequence}, ${r.bundle.x509_authorities} X.509 / ${r.bundle.jwt_authorities} JWT ` +
        `authorities, refresh hint ${r.bundle.refresh_hint ?? "none"}s, updated ${iso(r.bundle.updated_at)}`,
    );
  } else out("bundle:           none yet");
  out(`last refresh:     ${iso(r.refresh.last_success_at)} (attempted ${iso(r.refresh.last_attempt_at)})`);
  if (r.refresh.last_error) {
    out(
      `last error:       ${r.refresh.last_error.code}: ${r.refresh.last_error.message} ` +
        `(${r.refresh.consecutive_failures} in a row)`,
    );
  }
  out(`next refresh:     ${iso(r.refresh.next_refresh_at)}`);
  if (withDocument && r.bundle?.document) out(r.bundle.document);
}

interface RelFlags extends ConnOpts {
  trustDomain?: string;
  endpointUrl?: string;
  profile?: string;
  endpointSpiffeId?: string;
  bundle?: string;
  webCa?: string;
}

export function registerFederationCommands(program: Command): void {
  const fed = program
    .command("federation")
    .description("federation relationships with foreign trust domains (SPIFFE bundle endpoints)");

  withConnection(fed.command("create"))
    .description("declare a federation relationship: fetch and trust a foreign trust domain's bundle")
    .requiredOption("--trust-domain <td>", "the foreign trust domain")
    .requiredOption("--endpoint-url <url>", "its bundle endpoint, https://…")
    .requiredOption("--profile <profile>", "https_spiffe | https_web")
    .option("--endpoint-spiffe-id <id>", "https_spiffe: the SPIFFE ID the endpoint authenticates as")
    .option(
      "--bundle <file>",
      "the foreign trust domain's current bundle, given out of band (SPIFFE JSON or PEM)",
    )
    .option(
      "--web-ca <file>",
      "https_web: CA certificates (PEM) to validate the endpoint with instead of the system roots",
    )
    .addHelpText(
      "after",
      `
Examples:
  qhx federation create --socket ./a/admin.sock --trust-domain b.example --profile https_spiffe \\
      --endpoint-url https://bundle.b.example:8443/ --endpoint-spiffe-id spiffe://b.example/qhx/server \\
      --bundle b-bundle.json
  qhx federation create --socket ./a/admin.sock --trust-domain c.example --profile https_web \\
      --endpoint-url https://c.example/bundle --web-ca c-web-ca.pem

Entries opt in with --federates-with TD; their workloads receive TD's bundle at the agent's next sync.`,
    )
    .action(async (o: RelFlags) => {
      const body = {
        trust_domain: o.trustDomain,
        bundle_endpoint_url: o.endpointUrl,
        profile: o.profile,
        ...(o.endpointSpiffeId ? { endpoint_spiffe_id: o.endpointSpiffeId } : {}),
        ...(o.bundle ? { bundle: readText(o.bundle, "--bundle") } : {}),
        ...(o.webCa ? { web_trust_roots: readText(o.webCa, "--web-ca") } : {}),
      };
      const r = await withClient(o, (c) => c.call<RelationshipJson>("POST", "/v1/federation", body));
      out(`Created federation with ${r.trust_domain}`);
      printRelationship(r);
    });

  withConnection(fed.command("list"))
    .description("list federation relationships")
    .option("--json", "print JSON")
    .action(async (o: ConnOpts & { json?: boolean }) => {
      const r = await withClient(o, (c) =>
        c.call<{ relationships: RelationshipJson[] }>("GET", "/v1/federation"),
      );
      if (o.json) return out(JSON.stringify(r, null, 2));
      if (r.relationships.length === 0) return out("no federation relationships");
      for (const x of r.relationships) {
        const seq = x.bundle ? `seq ${x.bundle.sequence}` : "no bundle";
        const err = x.refresh.last_error ? `  last error ${x.refresh.last_error.code}` : "";
        out(`${x.trust_domain}\t${x.profile}\t${x.bundle_endpoint_url}\t${seq}${err}`);
      }
    });

  withConnection(fed.command("show").argument("<td>", "foreign trust domain"))
    .description("show a relationship, its bundle and the refresher's state")
    .option("--bundle", "also print the stored SPIFFE bundle document")
    .option("--json", "print JSON")
    .action(async (td: string, o: ConnOpts & { bundle?: boolean; json?: boolean }) => {
      const r = await withClient(o, (c) =>
        c.call<RelationshipJson>("GET", `/v1/federation/${encodeURIComponent(td)}`),
      );
      if (o.json) return out(JSON.stringify(r, null, 2));
      printRelationship(r, Boolean(o.bundle));
    });

  withConnection(fed.command("update").argument("<td>", "foreign trust domain"))
    .description("change a relationship's endpoint, profile or authentication")
    .option("--endpoint-url <url>", "its bundle endpoint, https://…")
    .option("--profile <profile>", "https_spiffe | https_web")
    .option("--endpoint-spiffe-id <id>", "https_spiffe: the SPIFFE ID the endpoint authenticates as")
    .option("--web-ca <file>", "https_web: CA certificates (PEM)")
    .action(async (td: string, o: RelFlags) => {
      const body = {
        ...(o.endpointUrl ? { bundle_endpoint_url: o.endpointUrl } : {}),
        ...(o.profile ? { profile: o.profile } : {}),
        ...(o.endpointSpiffeId ? { endpoint_spiffe_id: o.endpointSpiffeId } : {}),
        ...(o.webCa ? { web_trust_roots: readText(o.webCa, "--web-ca") } : {}),
      };
      if (Object.keys(body).length === 0)
        throw new ValidationError("nothing to update: give at least one option");
      const r = await withClient(o, (c) =>
        c.call<RelationshipJson>("PATCH", `/v1/federation/${encodeURIComponent(td)}`, body),
      );
      out(`Updated federation with ${r.trust_domain}`);
      printRelationship(r);
    });

  withConnection(fed.command("delete").argument("<td>", "foreign trust domain"))
    .description("end a relationship: its bundle is removed and leaves agents at their next sync")
    .action(async (td: string, o: ConnOpts) => {
      const r = await withClient(o, (c) =>
        c.call<{ deleted: string }>("DELETE", `/v1/federation/${encodeURIComponent(td)}`),
      );
      out(`Deleted federation with ${r.deleted}`);
    });

  withConnection(fed.command("refresh").argument("<td>", "foreign trust domain"))
    .description("fetch the foreign bundle now (exit 1 with the reason when it is refused)")
    .action(async (td: string, o: ConnOpts) => {
      const r = await withClient(o, (c) =>
        c.call<{ trust_domain: string; outcome: string; sequence: number; next_refresh_at: number }>(
          "POST",
          `/v1/federation/${encodeURIComponent(td)}/refresh`,
        ),
      );
      out(
        `${r.trust_domain}: bundle ${r.outcome}, sequence ${r.sequence}, next refresh ${iso(r.next_refresh_at)}`,
      );
    });
}
