/**
 * `qhx`: the command line. Thin: every command parses flags, calls the modules under host/, and prints.
 * Errors print one line (code, cause, hint) on stderr and exit non-zero.
 *
 * The modules a command needs (server, agent, demo, Workload API client, …) load when it runs, not at
 * start-up: `qhx --help` or an admin command does not pay for the whole control plane.
 */
import { configurePq } from "../crypto/index.ts";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Command, Option } from "commander";
import { generateKeyPair, parseKeyAlg, SVID_KEY_ALGS } from "../core/alg.ts";
import { parseDuration, systemClock } from "../core/clock.ts";
import { formatError, QhxError, ValidationError } from "../core/errors.ts";
import { checkSpiffeId, spiffeIdReason } from "../core/spiffeid.ts";
import { writeFileAtomic } from "../server/keymanager/disk.ts";
import { type Logger, createLogger } from "../server/logger.ts";
import type { EntryJson } from "../core/entry.ts";
import { withClient, withConnection } from "./client.ts";
import { registerPolicyCommands } from "./policy.ts";
import { registerReceiptCommands } from "./receipt.ts";
import { registerFederationCommands } from "./federation.ts";
import { registerTunnelCommands } from "./tunnel.ts";
import { registerCryptoPolicyCommands } from "./crypto-policy.ts";
import { registerFilterCommands } from "./filter.ts";
import { defaultWorkloadSocket, workloadCall } from "./workload-client.ts";
import { toPem } from "../core/pem.ts";
import { readTlv } from "../core/x509.ts";

const VERSION = "0.1.0";

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

function ttlSeconds(v: string | undefined, field: string): number | undefined {
  if (v === undefined) return undefined;
  try {
    return Math.round(parseDuration(v) / 1000);
  } catch (e) {
    throw new ValidationError((e as Error).message, field);
  }
}

function parseExpiresAt(v: string | undefined): number | null | undefined {
  if (v === undefined) return undefined;
  if (v === "never" || v === "") return null;
  if (/^\d+$/.test(v)) return Number(v);
  const t = Date.parse(v);
  if (Number.isNaN(t))
    throw new ValidationError(`"${v}" is neither unix seconds nor an ISO 8601 time`, "expires_at");
  return Math.floor(t / 1000);
}

function parseLabels(list: string[] | undefined): Record<string, string> | undefined {
  if (!list) return undefined;
  const labels: Record<string, string> = {};
  for (const l of list) {
    const i = l.indexOf("=");
    if (i <= 0) throw new ValidationError(`"${l}" is not KEY=VALUE`, "label");
    labels[l.slice(0, i)] = l.slice(i + 1);
  }
  return labels;
}

interface EntryFlags {
  spiffeId?: string;
  parentId?: string;
  selector?: string[];
  namespace?: string;
  label?: string[];
  x509SvidTtl?: string;
  jwtSvidTtl?: string;
  dnsName?: string[];
  federatesWith?: string[];
  admin?: boolean;
  expiresAt?: string;
  data?: string;
}

function entryBody(f: EntryFlags): Record<string, unknown> {
  const fromFile = f.data ? (JSON.parse(fs.readFileSync(f.data, "utf8")) as Record<string, unknown>) : {};
  const b: Record<string, unknown> = { ...fromFile };
  const set = (k: string, v: unknown) => {
    if (v !== undefined) b[k] = v;
  };
  set("spiffe_id", f.spiffeId);
  set("parent_id", f.parentId);
  set("selectors", f.selector);
  set("namespace", f.namespace);
  set("labels", parseLabels(f.label));
  set("x509_svid_ttl", ttlSeconds(f.x509SvidTtl, "x509_svid_ttl"));
  set("jwt_svid_ttl", ttlSeconds(f.jwtSvidTtl, "jwt_svid_ttl"));
  set("dns_names", f.dnsName);
  set("federates_with", f.federatesWith);
  set("admin", f.admin);
  set("expires_at", parseExpiresAt(f.expiresAt));
  return b;
}

function entryOptions(cmd: Command): Command {
  return cmd
    .option("--spiffe-id <id>", "the workload's SPIFFE ID")
    .option("--parent-id <id>", "the node (agent) SPIFFE ID the entry hangs under")
    .option("--selector <type:value>", "a selector the workload must match (repeatable)", collect)
    .option("--namespace <ns>", "namespace (default: default)")
    .option("--label <key=value>", "a label (repeatable)", collect)
    .option("--x509-svid-ttl <duration>", "X509-SVID lifetime, e.g. 1h (0: server default)")
    .option("--jwt-svid-ttl <duration>", "JWT-SVID lifetime, e.g. 5m (0: server default)")
    .option("--dns-name <name>", "a DNS SAN for the X509-SVID (repeatable)", collect)
    .option(
      "--federates-with <td>",
      "a trust domain whose bundle the workload receives (repeatable)",
      collect,
    )
    .option("--admin", "the workload may use the admin API")
    .option("--expires-at <time>", "ISO 8601 time or unix seconds when the entry expires (never: no expiry)")
    .option("--data <file>", "read the entry from a JSON file (snake_case fields); flags override it");
}

/**
 * SIGTERM/SIGINT: close the process's listeners and state cleanly, then exit 0 (1 if that fails). The
 * handlers are installed before start-up finishes (the "started" log line is written inside it), so a
 * signal that arrives right after that line still shuts down cleanly instead of killing the process.
 */
async function stopOnSignals(starting: Promise<{ close(): Promise<void> }>, log: Logger): Promise<void> {
  const stop = (signal: string) => {
    log.info({ signal }, "shutting down");
    starting
      .then((running) => running.close())
      .then(
        () => process.exit(0),
        (e) => {
          log.error({ err: e }, "shutdown failed");
          process.exit(1);
        },
      );
  };
  const onTerm = () => stop("SIGTERM");
  const onInt = () => stop("SIGINT");
  process.once("SIGTERM", onTerm);
  process.once("SIGINT", onInt);
  try {
    await starting;
  } catch (e) {
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
    throw e;
  }
}

function printEntry(e: EntryJson): void {
  out(`Entry ID         : ${e.id}`);
  out(`SPIFFE ID        : ${e.spiffe_id}`);
  out(`Parent ID        : ${e.parent_id}`);
  out(`Revision         : ${e.revision}`);
  out(`Namespace        : ${e.namespace}`);
  for (const s of e.selectors) out(`Selector         : ${s}`);
  for (const [k, v] of Object.entries(e.labels)) out(`Label            : ${k}=${v}`);
  out(`X509-SVID TTL    : ${e.x509_svid_ttl || "default"}`);
  out(`JWT-SVID TTL     : ${e.jwt_svid_ttl || "default"}`);
  for (const d of e.dns_names) out(`DNS name         : ${d}`);
  for (const f of e.federates_with) out(`Federates with   : ${f}`);
  if (e.admin) out("Admin            : true");
  if (e.expires_at !== null) out(`Expires at       : ${new Date(e.expires_at * 1000).toISOString()}`);
  out();
}

const outputOption = () =>
  new Option("-o, --output <format>", "output format").choices(["text", "json"]).default("text");

export function buildProgram(): Command {
  const program = new Command("qhx")
    .description(
      "QHx: workload identity and zero-trust runtime.\nSPIFFE IDs, X509-/JWT-SVIDs, trust bundles, and the server that issues them.",
    )
    .version(VERSION)
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ outputError: (s, write) => write(s) });

  // ----------------------------------------------------------------------------------------- server
  const server = program.command("server").description("run and manage the trust-domain server");
  const serverFlags = (cmd: Command) =>
    cmd
      .option("-c, --config <file>", "server.yaml (flags override it)")
      .option("--trust-domain <td>", "trust domain name, e.g. example.org")
      .option("--data-dir <dir>", "data directory (datastore, keys); initialized on first start")
      .option("--listen <host:port>", "agent API listener, TLS (default 127.0.0.1:8081)")
      .option("--health-listen <host:port>", "health/metrics/bundle listener, HTTP (default 127.0.0.1:8080)")
      .option("--admin-socket <path>", "admin API Unix socket (default <data-dir>/admin.sock)")
      .option("--log-level <level>", "trace|debug|info|warn|error (default info)")
      .option("--ca-key-type <alg>", `CA key: ${SVID_KEY_ALGS.join("|")} (default ec-p256)`)
      .option("--ca-ttl <duration>", "lifetime of each CA (default 7d)")
      .option(
        "--jwt-key-type <alg>",
        "JWT signing key: ec-p256|ec-p384|rsa-2048|ml-dsa-44|ml-dsa-65|ml-dsa-87",
      )
      .option("--default-x509-svid-ttl <duration>", "default X509-SVID lifetime (default 1h)")
      .option("--default-jwt-svid-ttl <duration>", "default JWT-SVID lifetime (default 5m)")
      .option("--key-manager <kind>", "disk|memory (default disk)")
      .option("--agent-svid-ttl <duration>", "lifetime of agent SVIDs (default 1h)")
      .option("--x509pop-ca-bundle <file>", "enable x509pop node attestation: operator CA certificates (PEM)")
      .option("--tpm-ek-ca-bundle <file>", "enable TPM attestation: EK manufacturer CA certificates (PEM)")
      .option(
        "--tpm-ek-hash <sha256>",
        "enable TPM attestation: an allowed EK public key hash (repeatable)",
        collect,
      )
      .option("--tpm-pcrs <list>", "PCRs the TPM quote must cover, e.g. 0,1,7 (default 0-7)");
  const loadServerConfig = async (o: Record<string, string | undefined>) => {
    const { mergeConfig, parseServerConfig, readConfigFile } = await import("../server/config.ts");
    const file = o.config ? readConfigFile(o.config) : {};
    const merged = mergeConfig(file, {
      trust_domain: o.trustDomain,
      data_dir: o.dataDir,
      listen: o.listen,
      health_listen: o.healthListen,
      admin_socket: o.adminSocket,
      log_level: o.logLevel,
      "ca.key_type": o.caKeyType,
      "ca.ttl": o.caTtl,
      "jwt.key_type": o.jwtKeyType,
      default_x509_svid_ttl: o.defaultX509SvidTtl,
      default_jwt_svid_ttl: o.defaultJwtSvidTtl,
      key_manager: o.keyManager,
      agent_svid_ttl: o.agentSvidTtl,
      ...(o.x509popCaBundle || o.tpmEkCaBundle || o.tpmEkHash
        ? {
            node_attestors: {
              ...((file.node_attestors as object) ?? {}),
              ...(o.x509popCaBundle ? { x509pop: { ca_bundle_file: o.x509popCaBundle } } : {}),
              ...(o.tpmEkCaBundle || o.tpmEkHash
                ? {
                    tpm: {
                      ...(o.tpmEkCaBundle ? { ek_ca_bundle_file: o.tpmEkCaBundle } : {}),
                      ...(o.tpmEkHash ? { ek_public_key_hashes: o.tpmEkHash } : {}),
                      ...(o.tpmPcrs ? { pcrs: String(o.tpmPcrs).split(",").map(Number) } : {}),
                    },
                  }
                : {}),
            },
          }
        : {}),
    });
    return parseServerConfig(merged, o.config ?? "flags");
  };

  serverFlags(server.command("start"))
    .description("start the server (initializes a fresh data directory on first start)")
    .addHelpText(
      "after",
      `
Examples:
  qhx server start --trust-domain example.org --data-dir /var/lib/qhx
  qhx server start --config /etc/qhx/server.yaml --log-level debug
  qhx server start --trust-domain example.org --data-dir ./data --listen 127.0.0.1:0 --ca-key-type ml-dsa-65`,
    )
    .action(async (o) => {
      const cfg = await loadServerConfig(o);
      const log = createLogger(cfg.logLevel, "qhx-server");
      const { startServer } = await import("../server/server.ts");
      await stopOnSignals(startServer(cfg, { clock: systemClock, logger: log }), log);
    });

  serverFlags(server.command("init"))
    .description("initialize a data directory (CA, keys, datastore) without starting the server")
    .addHelpText(
      "after",
      "\nExample:\n  qhx server init --trust-domain example.org --data-dir ./data --ca-key-type ml-dsa-65",
    )
    .action(async (o) => {
      const cfg = await loadServerConfig(o);
      const { ServerCore } = await import("../server/core.ts");
      const core = await ServerCore.open(cfg, { clock: systemClock, create: true });
      try {
        const b = core.ca.trustBundle();
        out(`Initialized ${cfg.dataDir} for trust domain ${cfg.trustDomain}`);
        out(
          `Bundle sequence ${b.sequence}: ${b.x509Authorities.length} X.509 authority, ${b.jwtAuthorities.length} JWT key`,
        );
      } finally {
        await core.close();
      }
    });

  server
    .command("healthcheck")
    .description("exit 0 if the server answers, 1 otherwise")
    .option("--socket <path>", "check the admin socket")
    .option("--address <host:port>", "check the health listener's /healthz")
    .option("--verbose", "print the answer")
    .addHelpText(
      "after",
      "\nExamples:\n  qhx server healthcheck --socket ./data/admin.sock\n  qhx server healthcheck --address 127.0.0.1:8081",
    )
    .action(async (o: { socket?: string; address?: string; verbose?: boolean }) => {
      if (!o.socket && !o.address) throw new ValidationError("give --socket PATH or --address HOST:PORT");
      if (o.socket) {
        const r = await withClient({ socket: o.socket }, (c) => c.call("GET", "/v1/health"));
        if (o.verbose) out(JSON.stringify(r));
      }
      if (o.address) {
        let res: Response;
        try {
          res = await fetch(`http://${o.address}/healthz`, { signal: AbortSignal.timeout(5000) });
        } catch (e) {
          throw new QhxError("QHX_UNAVAILABLE", `no answer from ${o.address}: ${(e as Error).message}`);
        }
        if (!res.ok) throw new QhxError("QHX_UNHEALTHY", `${o.address}/healthz answered ${res.status}`);
        if (o.verbose) out(await res.text());
      }
      out("server is healthy");
    });

  // ----------------------------------------------------------------------------------------- entry
  const entry = program.command("entry").description("manage registration entries");
  withConnection(entryOptions(entry.command("create")))
    .description("create a registration entry")
    .addHelpText(
      "after",
      `
Example:
  qhx entry create --socket ./data/admin.sock \\
    --spiffe-id spiffe://example.org/ns/prod/web --parent-id spiffe://example.org/qhx/agent/join_token/n1 \\
    --selector unix:uid:1000 --selector unix:path:/usr/bin/web --namespace prod --label app=web`,
    )
    .action(async (o) => {
      const e = await withClient(o, (c) => c.call<EntryJson>("POST", "/v1/entries", entryBody(o)));
      printEntry(e);
    });

  withConnection(entry.command("list"))
    .description("list registration entries")
    .option("--spiffe-id <id>", "only this SPIFFE ID")
    .option("--parent-id <id>", "only entries under this parent")
    .option("--selector <type:value>", "only entries with this selector")
    .option("--namespace <ns>", "only this namespace")
    .addOption(outputOption())
    .action(async (o) => {
      const q = new URLSearchParams();
      if (o.spiffeId) q.set("spiffe_id", o.spiffeId);
      if (o.parentId) q.set("parent_id", o.parentId);
      if (o.selector) q.set("selector", o.selector);
      if (o.namespace) q.set("namespace", o.namespace);
      const r = await withClient(o, (c) => c.call<{ entries: EntryJson[] }>("GET", `/v1/entries?${q}`));
      if (o.output === "json") return out(JSON.stringify(r.entries, null, 2));
      out(`Found ${r.entries.length} ${r.entries.length === 1 ? "entry" : "entries"}`);
      out();
      for (const e of r.entries) printEntry(e);
    });

  withConnection(entry.command("show"))
    .argument("<id>", "entry ID")
    .description("show one registration entry")
    .addOption(outputOption())
    .action(async (id: string, o) => {
      const e = await withClient(o, (c) => c.call<EntryJson>("GET", `/v1/entries/${encodeURIComponent(id)}`));
      if (o.output === "json") out(JSON.stringify(e, null, 2));
      else printEntry(e);
    });

  withConnection(entryOptions(entry.command("update")))
    .argument("<id>", "entry ID")
    .option("--revision <n>", "fail if the entry is no longer at this revision")
    .description("change fields of a registration entry (only the flags given)")
    .addHelpText(
      "after",
      "\nExample:\n  qhx entry update 6f1c… --socket ./data/admin.sock --x509-svid-ttl 30m --label tier=gold",
    )
    .action(async (id: string, o) => {
      const body = entryBody(o);
      if (o.revision !== undefined) body.revision = Number(o.revision);
      const e = await withClient(o, (c) =>
        c.call<EntryJson>("PATCH", `/v1/entries/${encodeURIComponent(id)}`, body),
      );
      printEntry(e);
    });

  withConnection(entry.command("delete"))
    .argument("<id>", "entry ID")
    .description("delete a registration entry")
    .action(async (id: string, o) => {
      await withClient(o, (c) => c.call("DELETE", `/v1/entries/${encodeURIComponent(id)}`));
      out(`Deleted entry ${id}`);
    });

  // ----------------------------------------------------------------------------------------- token
  const token = program.command("token").description("join tokens for node attestation");
  withConnection(token.command("generate"))
    .description("generate a single-use join token")
    .option("--ttl <duration>", "how long the token stays usable", "10m")
    .option("--spiffe-id <id>", "make this SPIFFE ID the alias of the node that redeems the token")
    .addHelpText(
      "after",
      "\nThe token is printed on the last line.\n\nExample:\n  qhx token generate --socket ./data/admin.sock --spiffe-id spiffe://example.org/nodes/web-1",
    )
    .action(async (o) => {
      const r = await withClient(o, (c) =>
        c.call<{ token: string; expires_at: number }>("POST", "/v1/join-tokens", {
          ttl: o.ttl,
          ...(o.spiffeId ? { spiffe_id: o.spiffeId } : {}),
        }),
      );
      out(`Expires at: ${new Date(r.expires_at * 1000).toISOString()}`);
      if (o.spiffeId) out(`Node alias: ${o.spiffeId}`);
      out(`Token: ${r.token}`);
    });

  // ----------------------------------------------------------------------------------------- bundle
  const bundle = program.command("bundle").description("the trust domain's trust bundle");
  withConnection(bundle.command("show"))
    .description("print the trust bundle")
    .addOption(
      new Option("--format <format>", "pem or spiffe (JWK Set)").choices(["pem", "spiffe"]).default("pem"),
    )
    .action(async (o) => {
      const r = await withClient(o, (c) =>
        c.call<{ bundle: string }>("GET", `/v1/bundle?format=${o.format}`),
      );
      process.stdout.write(r.bundle.endsWith("\n") ? r.bundle : `${r.bundle}\n`);
    });

  // ----------------------------------------------------------------------------------------- id
  program
    .command("id")
    .description("SPIFFE ID tools")
    .command("check")
    .argument("<ids...>", "SPIFFE IDs")
    .description("validate SPIFFE IDs: prints each normalized ID; exits 1 if any is invalid")
    .addHelpText("after", "\nExample:\n  qhx id check spiffe://example.org/ns/prod/web")
    .action((ids: string[]) => {
      let bad = 0;
      for (const id of ids) {
        const code = checkSpiffeId(id);
        if (code === "OK") out(id);
        else {
          bad++;
          process.stderr.write(`invalid: ${code}: ${spiffeIdReason(code)}: ${JSON.stringify(id)}\n`);
        }
      }
      if (bad) process.exitCode = 1;
    });

  // ----------------------------------------------------------------------------------------- svid
  const svid = program.command("svid").description("X509-SVIDs");
  withConnection(svid.command("mint"))
    .description("mint an X509-SVID; the private key is generated here and never sent")
    .requiredOption("--spiffe-id <id>", "SPIFFE ID to certify")
    .option("--alg <alg>", `key algorithm: ${SVID_KEY_ALGS.join("|")}`, "ec-p256")
    .option("--ttl <duration>", "lifetime (default: the server's default X509-SVID TTL)")
    .option("--dns-name <name>", "a DNS SAN (repeatable)", collect)
    .requiredOption("--out <dir>", "directory for svid.pem, svid.key and bundle.pem")
    .addHelpText(
      "after",
      "\nExample:\n  qhx svid mint --socket ./data/admin.sock --spiffe-id spiffe://example.org/web --alg ml-dsa-65 --out ./web",
    )
    .action(async (o) => {
      const alg = parseKeyAlg(o.alg);
      const kp = generateKeyPair(alg);
      const r = await withClient(o, (c) =>
        c.call<{ chain: string[]; bundle: string; expires_at: number; serial: string }>(
          "POST",
          "/v1/svids/x509",
          {
            spiffe_id: o.spiffeId,
            public_key: kp.publicKey.export({ type: "spki", format: "pem" }),
            ...(o.ttl ? { ttl: o.ttl } : {}),
            ...(o.dnsName ? { dns_names: o.dnsName } : {}),
          },
        ),
      );
      const dir = path.resolve(o.out);
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileAtomic(
        path.join(dir, "svid.key"),
        kp.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
        0o600,
      );
      writeFileAtomic(path.join(dir, "svid.pem"), r.chain.join(""), 0o644);
      writeFileAtomic(path.join(dir, "bundle.pem"), r.bundle, 0o644);
      out(`X509-SVID for ${o.spiffeId} (${alg}, serial ${r.serial})`);
      out(`Expires at : ${new Date(r.expires_at * 1000).toISOString()}`);
      out(`Written    : ${path.join(dir, "svid.pem")}, svid.key (0600), bundle.pem`);
    });

  // ----------------------------------------------------------------------------------------- jwt
  const jwt = program.command("jwt").description("JWT-SVIDs");
  withConnection(jwt.command("mint"))
    .description("mint a JWT-SVID and print it")
    .requiredOption("--spiffe-id <id>", "subject SPIFFE ID")
    .requiredOption("--audience <aud>", "audience (repeatable)", collect)
    .option("--ttl <duration>", "lifetime (default: the server's default JWT-SVID TTL)")
    .addHelpText(
      "after",
      "\nThe signing algorithm is the server's JWT key type (--jwt-key-type at server start: ES256 by default,\nML-DSA-44/65/87 as an explicit extension).\n\nExample:\n  qhx jwt mint --socket ./data/admin.sock --spiffe-id spiffe://example.org/web --audience spiffe://example.org/db",
    )
    .action(async (o) => {
      const r = await withClient(o, (c) =>
        c.call<{ token: string }>("POST", "/v1/svids/jwt", {
          spiffe_id: o.spiffeId,
          audience: o.audience,
          ...(o.ttl ? { ttl: o.ttl } : {}),
        }),
      );
      out(r.token);
    });

  jwt
    .command("verify")
    .argument("<token>", "the JWT-SVID (or - to read it from stdin)")
    .description(
      "validate a JWT-SVID offline against a SPIFFE bundle file; exit 0 if valid, 1 with the reason if not",
    )
    .requiredOption("--audience <aud>", "the audience you are")
    .requiredOption(
      "--bundle <file>",
      "SPIFFE bundle (JWK Set) of the token's trust domain (qhx bundle show --format spiffe)",
    )
    .option("--trust-domain <td>", "trust domain of the bundle (default: the token subject's)")
    .option("--leeway <seconds>", "clock skew tolerated", "30")
    .option("--allow-ml-dsa", "accept ML-DSA-44/65/87 signatures (QHx extension)")
    .action(async (tokenArg: string, o) => {
      const token = (tokenArg === "-" ? fs.readFileSync(0, "utf8") : tokenArg).trim();
      let td = o.trustDomain as string | undefined;
      if (!td) {
        try {
          const payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8"));
          td = /^spiffe:\/\/([^/]+)/.exec(String(payload.sub))?.[1];
        } catch {
          /* the validator reports the malformed token */
        }
      }
      const [{ parseSpiffeBundle }, { validateJwtSvid }] = await Promise.all([
        import("../core/bundle.ts"),
        import("../core/jwtsvid.ts"),
      ]);
      const b = parseSpiffeBundle(fs.readFileSync(o.bundle, "utf8"), td ?? "unknown");
      const r = await validateJwtSvid(token, {
        audience: o.audience,
        bundles: new Map([[b.trustDomain, b]]),
        now: systemClock.now(),
        leewaySeconds: Number(o.leeway),
        allowPostQuantum: Boolean(o.allowMlDsa),
      });
      out(
        `valid: ${r.spiffeId} (alg ${r.header.alg}, expires ${new Date(Number(r.claims.exp) * 1000).toISOString()})`,
      );
    });

  // ----------------------------------------------------------------------------------------- agent
  const agentCmd = program.command("agent").description("the node agent: attestation, Workload API, SDS");
  agentCmd
    .command("start")
    .description("attest this node, then serve the SPIFFE Workload API and Envoy SDS on a Unix socket")
    .option("-c, --config <file>", "agent.yaml (flags override it)")
    .option("--server <host:port>", "the server's agent API address")
    .option("--trust-bundle <file>", "the server's trust bundle (PEM or SPIFFE JSON) to authenticate it")
    .option(
      "--insecure-bootstrap",
      "do not authenticate the server for attestation (tests only; loud warning)",
    )
    .option("--trust-domain <td>", "trust domain (default: read from the bundle)")
    .option("--join-token <token>", "join token for node attestation (qhx token generate)")
    .option("--x509pop-cert <file>", "x509pop: node certificate chain (PEM)")
    .option("--x509pop-key <file>", "x509pop: node private key (PKCS#8, mode 0600)")
    .option("--tpm-tcti <tcti>", "TPM 2.0 attestation through tpm2-tools, e.g. device:/dev/tpmrm0")
    .option("--tpm-ek-cert <file>", "TPM: EK certificate to send when the TPM has none in NV")
    .option("--data-dir <dir>", "agent state (its SVID, key, bundle)")
    .option("--socket <path>", "Workload API socket (default <data-dir>/public/api.sock)")
    .option("--health-listen <host:port>", "health/metrics listener (default 127.0.0.1:8082)")
    .option("--sync-interval <duration>", "how often to sync with the server (default 5s)")
    .option("--workload-key-type <alg>", `workload key algorithm: ${SVID_KEY_ALGS.join("|")}`)
    .option("--log-level <level>", "trace|debug|info|warn|error")
    .addHelpText(
      "after",
      `
Example:
  qhx agent start --server 127.0.0.1:8081 --trust-bundle bundle.pem --join-token TOKEN \
    --data-dir /var/lib/qhx-agent --socket /run/qhx/api.sock
Workloads then use SPIFFE_ENDPOINT_SOCKET=unix:///run/qhx/api.sock.`,
    )
    .action(async (o) => {
      const [{ mergeConfig, readConfigFile }, { parseAgentConfig }, { startAgent }] = await Promise.all([
        import("../server/config.ts"),
        import("../agent/config.ts"),
        import("../agent/run.ts"),
      ]);
      const file = o.config ? readConfigFile(o.config) : {};
      const merged = mergeConfig(file, {
        server_address: o.server,
        trust_bundle_file: o.trustBundle,
        insecure_bootstrap: o.insecureBootstrap,
        trust_domain: o.trustDomain,
        join_token: o.joinToken,
        ...(o.x509popCert || o.x509popKey
          ? { "x509pop.cert_file": o.x509popCert, "x509pop.key_file": o.x509popKey }
          : {}),
        data_dir: o.dataDir,
        socket_path: o.socket,
        health_listen: o.healthListen,
        sync_interval: o.syncInterval,
        workload_key_type: o.workloadKeyType,
        log_level: o.logLevel,
      });
      const cfg = parseAgentConfig(merged, o.config ?? "flags");
      const log = createLogger(cfg.logLevel, "qhx-agent");
      await stopOnSignals(startAgent(cfg, { clock: systemClock, logger: log }), log);
    });

  agentCmd
    .command("healthcheck")
    .description("exit 0 if the agent's Workload API answers (and, with --address, its /readyz)")
    .option("--socket <path>", "Workload API socket (default: SPIFFE_ENDPOINT_SOCKET)")
    .option("--address <host:port>", "the agent's health listener")
    .action(async (o: { socket?: string; address?: string }) => {
      const sock = o.socket ?? defaultWorkloadSocket();
      if (!sock && !o.address) throw new ValidationError("give --socket PATH or --address HOST:PORT");
      if (sock) {
        // any well-formed answer proves the API is up, including PermissionDenied for an unregistered caller
        await workloadCall(sock, "FetchX509Bundles", "X509BundlesRequest", "X509BundlesResponse", {}).catch(
          (e) => {
            if (!String((e as { code?: string }).code).startsWith("WORKLOAD_API_PERMISSION_DENIED")) throw e;
          },
        );
      }
      if (o.address) {
        const r = await fetch(`http://${o.address}/readyz`, { signal: AbortSignal.timeout(5000) }).catch(
          (e) => {
            throw new QhxError("QHX_UNAVAILABLE", `no answer from ${o.address}: ${(e as Error).message}`);
          },
        );
        if (!r.ok)
          throw new QhxError(
            "QHX_UNHEALTHY",
            `agent at ${o.address} answered ${r.status}: ${await r.text()}`,
          );
      }
      out("agent is healthy");
    });

  agentCmd
    .command("tpm-ek-hash")
    .description("print this TPM's EK public key hash, for the server's TPM allow-list (--tpm-ek-hash)")
    .option("--tpm-tcti <tcti>", "tpm2-tools TCTI, e.g. device:/dev/tpmrm0")
    .option("--ek-alg <alg>", "rsa or ecc", "rsa")
    .action(async (o: { tpmTcti?: string; ekAlg: "rsa" | "ecc" }) => {
      const { TpmClient } = await import("../agent/attestors/tpm.ts");
      const c = new TpmClient({ ...(o.tpmTcti ? { tcti: o.tpmTcti } : {}), ekAlg: o.ekAlg });
      out(await c.ekPublicKeyHash());
    });

  withConnection(agentCmd.command("list"))
    .description("list attested nodes with their attestor, selectors and assurance level")
    .addOption(outputOption())
    .action(async (o) => {
      const r = await withClient(o, (c) =>
        c.call<{
          agents: {
            spiffe_id: string;
            attestation_type: string;
            selectors: string[];
            assurance: string;
            aliases: string[];
            expires_at: number;
            banned: boolean;
          }[];
        }>("GET", "/v1/agents"),
      );
      if (o.output === "json") return out(JSON.stringify(r.agents, null, 2));
      out(`Found ${r.agents.length} attested ${r.agents.length === 1 ? "node" : "nodes"}`);
      for (const a of r.agents) {
        out();
        out(`Agent ID         : ${a.spiffe_id}`);
        out(`Attestation type : ${a.attestation_type}`);
        out(`Assurance        : ${a.assurance}`);
        for (const al of a.aliases) out(`Alias            : ${al}`);
        for (const sel of a.selectors) out(`Selector         : ${sel}`);
        out(`SVID expires at  : ${new Date(a.expires_at * 1000).toISOString()}`);
      }
    });

  withConnection(agentCmd.command("evict"))
    .argument("<spiffe-id>", "the agent's SPIFFE ID")
    .description("forget an attested node: its agent SVID stops working and it must attest again")
    .action(async (id: string, o) => {
      await withClient(o, (c) => c.call("DELETE", `/v1/agents/${encodeURIComponent(id)}`));
      out(`Evicted ${id}`);
    });

  svid
    .command("fetch")
    .description("fetch this process's X509-SVID from the Workload API (as any SPIFFE workload does)")
    .option("--socket <path>", "Workload API socket (default: SPIFFE_ENDPOINT_SOCKET)")
    .option("--write <dir>", "write svid.pem, svid.key (0600) and bundle.pem there")
    .action(async (o: { socket?: string; write?: string }) => {
      const sock = o.socket ?? defaultWorkloadSocket();
      if (!sock) throw new ValidationError("give --socket PATH or set SPIFFE_ENDPOINT_SOCKET");
      const r = await workloadCall(sock, "FetchX509SVID", "X509SVIDRequest", "X509SVIDResponse", {});
      const svids = r.svids as {
        spiffe_id: string;
        x509_svid: Buffer;
        x509_svid_key: Buffer;
        bundle: Buffer;
        hint: string;
      }[];
      for (const [i, s] of svids.entries()) {
        const chain = splitDer(s.x509_svid);
        const leaf = new crypto.X509Certificate(chain[0]!);
        out(`SPIFFE ID : ${s.spiffe_id}${i === 0 ? " (default)" : ""}`);
        out(`Expires   : ${new Date(leaf.validTo).toISOString()}`);
        out(`Key       : ${leaf.publicKey.asymmetricKeyType}`);
        if (o.write && i === 0) {
          const dir = path.resolve(o.write);
          fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
          const key = crypto.createPrivateKey({ key: s.x509_svid_key, format: "der", type: "pkcs8" });
          writeFileAtomic(
            path.join(dir, "svid.key"),
            key.export({ type: "pkcs8", format: "pem" }) as string,
            0o600,
          );
          writeFileAtomic(path.join(dir, "svid.pem"), chain.map((d) => toPem(d)).join(""), 0o644);
          writeFileAtomic(
            path.join(dir, "bundle.pem"),
            splitDer(s.bundle)
              .map((d) => toPem(d))
              .join(""),
            0o644,
          );
          out(`Written   : ${dir}/svid.pem, svid.key, bundle.pem`);
        }
      }
    });

  jwt
    .command("fetch")
    .description("fetch a JWT-SVID for this process from the Workload API")
    .requiredOption("--audience <aud>", "audience (repeatable)", collect)
    .option("--spiffe-id <id>", "one of this workload's SPIFFE IDs (default: its default)")
    .option("--socket <path>", "Workload API socket (default: SPIFFE_ENDPOINT_SOCKET)")
    .action(async (o: { audience: string[]; spiffeId?: string; socket?: string }) => {
      const sock = o.socket ?? defaultWorkloadSocket();
      if (!sock) throw new ValidationError("give --socket PATH or set SPIFFE_ENDPOINT_SOCKET");
      const r = await workloadCall(sock, "FetchJWTSVID", "JWTSVIDRequest", "JWTSVIDResponse", {
        audience: o.audience,
        ...(o.spiffeId ? { spiffe_id: o.spiffeId } : {}),
      });
      for (const s of r.svids as { spiffe_id: string; svid: string }[]) out(s.svid);
    });

  registerPolicyCommands(program);
  registerReceiptCommands(program);
  registerFederationCommands(program);
  registerTunnelCommands(program);
  registerCryptoPolicyCommands(program);
  registerFilterCommands(program);

  // ----------------------------------------------------------------------------------------- demo
  program
    .command("demo")
    .description("run a server, mint and verify SVIDs end to end, and report")
    .option(
      "--keep [dir]",
      "keep the demo's data directory; with DIR, leave receipts in DIR/receipts and trust material in DIR/trust",
    )
    .option(
      "--federation",
      "two trust domains federated both ways: a cross-domain tunnel and a releasability denial",
    )
    .action(async (o) => {
      const { runDemo } = await import("./demo.ts");
      process.exitCode = await runDemo({
        keep: Boolean(o.keep),
        ...(typeof o.keep === "string" ? { keepDir: o.keep } : {}),
        federation: Boolean(o.federation),
      });
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    // QHX_PQ_BACKEND=wasm: the CLI's own ML-DSA work (offline minting, verification) on the Wasm kernels
    if (process.env["QHX_PQ_BACKEND"]) configurePq({});
    await buildProgram().parseAsync(argv);
  } catch (e) {
    process.stderr.write(`qhx: ${formatError(e)}\n`);
    process.exitCode = 1;
  }
}

/** Split concatenated DER certificates (the Workload API's wire form). */
function splitDer(buf: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < buf.length;) {
    const t = readTlv(buf, i);
    out.push(buf.subarray(i, t.end));
    i = t.end;
  }
  return out;
}
