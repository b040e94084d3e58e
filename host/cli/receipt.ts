/**
 * `qhx receipt …` and `qhx log …`: the notary's log from the command line, and offline verification.
 * Register with `registerReceiptCommands(program)`.
 *
 *   qhx receipt list [--signer ID] [--peer ID] [--from N] [--limit N] [--json]
 *   qhx receipt show INDEX [--json]
 *   qhx receipt export (INDEX… | --all) --out DIR [--trust-out DIR]   DIR/receipt-<index>.cose
 *   qhx receipt verify FILE… --trust DIR [--now TIME] [--consistency FILE] [--json]   (offline: files only)
 *   qhx log checkpoint [--out FILE] [--trust-out DIR]
 *   qhx log consistency --from N [--to M] [--out FILE]
 *
 * Server commands take --socket PATH (running server) or --data-dir DIR (offline, on its data directory).
 * `--trust-out DIR` writes what an auditor needs: DIR/bundles/<trust-domain>.pem, DIR/notary.pem and
 * DIR/checkpoint (the current signed tree head).
 */
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { formatError, type QhxError, ValidationError } from "../core/errors.ts";
import {
  loadTrustDir,
  parseConsistencyFile,
  type VerifiedReceipt,
  verifyReceipt,
} from "../provenance/verify.ts";
import type { ConsistencyProof } from "../provenance/receipt.ts";
import {
  type AdminClient,
  type ConnectionOptions as ConnOpts,
  withClient,
  withConnection,
} from "./client.ts";

function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

function nonNegInt(v: string, field: string): number {
  if (!/^\d{1,15}$/.test(v)) throw new ValidationError("must be a non-negative integer", field);
  return Number(v);
}

/** `--now`: ISO 8601 or unix seconds. */
export function parseTime(v: string): Date {
  const t = /^\d+$/.test(v) ? Number(v) * 1000 : Date.parse(v);
  if (Number.isNaN(t))
    throw new ValidationError(`"${v}" is neither an ISO 8601 time nor unix seconds`, "now");
  return new Date(t);
}

interface TrustAnswer {
  trust_domain: string;
  bundle: string;
  notary_public_key: string;
}

/** Write an auditor's trust directory from a server: bundle snapshot, notary key, current checkpoint. */
export async function writeTrustDir(
  c: AdminClient,
  dir: string,
): Promise<{ checkpoint: string; treeSize: number }> {
  const t = await c.call<TrustAnswer>("GET", "/v1/log/trust");
  const cp = await c.call<{ checkpoint: string; tree_size: number }>("GET", "/v1/log/checkpoint");
  fs.mkdirSync(path.join(dir, "bundles"), { recursive: true });
  fs.writeFileSync(path.join(dir, "bundles", `${t.trust_domain}.pem`), t.bundle);
  fs.writeFileSync(path.join(dir, "notary.pem"), t.notary_public_key);
  fs.writeFileSync(path.join(dir, "checkpoint"), cp.checkpoint);
  return { checkpoint: cp.checkpoint, treeSize: cp.tree_size };
}

/** Export receipts (transparent statements) of the given log indexes into `dir`. Returns the files. */
export async function exportReceipts(c: AdminClient, indexes: number[], dir: string): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (const i of indexes) {
    const r = await c.call<{ receipt: string }>("GET", `/v1/log/entries/${i}/receipt`);
    const f = path.join(dir, `receipt-${i}.cose`);
    fs.writeFileSync(f, Buffer.from(r.receipt, "base64"));
    files.push(f);
  }
  return files;
}

interface EntrySummary {
  index: number;
  signer: string;
  peer: string;
  decision: string;
  exchange_id: string;
  admitted_at: string;
  tree_size: number;
}

export interface VerifyOutcome {
  file: string;
  ok: boolean;
  result?: VerifiedReceipt;
  check?: string;
  code?: string;
  error?: string;
}

/** Verify files offline; never throws for a bad receipt (the outcome says which check failed). */
export function verifyFiles(
  files: string[],
  trustDir: string,
  opts: { now?: Date; consistency?: ConsistencyProof[] } = {},
): VerifyOutcome[] {
  const trust = loadTrustDir(trustDir);
  return files.map((file) => {
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(fs.readFileSync(file));
    } catch (e) {
      return {
        file,
        ok: false,
        check: "statement",
        code: "QHX_FILE_UNREADABLE",
        error: (e as Error).message,
      };
    }
    try {
      const result = verifyReceipt(bytes, trust, opts);
      return { file, ok: true, result };
    } catch (e) {
      const q = e as QhxError & { check?: string };
      return { file, ok: false, check: q.check ?? "statement", code: q.code, error: formatError(e) };
    }
  });
}

export function registerReceiptCommands(program: Command): void {
  const receipt = program.command("receipt").description("signed exchange receipts in the notary's log");

  withConnection(receipt.command("list"))
    .description("list logged receipts")
    .option("--signer <id>", "only receipts signed by this SPIFFE ID")
    .option("--peer <id>", "only receipts whose peer is this SPIFFE ID")
    .option("--from <n>", "first log index", "0")
    .option("--limit <n>", "at most this many", "100")
    .option("--json", "print JSON")
    .action(
      async (
        o: ConnOpts & { signer?: string; peer?: string; from: string; limit: string; json?: boolean },
      ) => {
        const q = new URLSearchParams({
          from: String(nonNegInt(o.from, "from")),
          limit: String(nonNegInt(o.limit, "limit")),
        });
        if (o.signer) q.set("signer", o.signer);
        if (o.peer) q.set("peer", o.peer);
        const r = await withClient(o, (c) =>
          c.call<{ tree_size: number; entries: EntrySummary[] }>("GET", `/v1/log/entries?${q}`),
        );
        if (o.json) return out(JSON.stringify(r, null, 2));
        out(`log size ${r.tree_size}`);
        for (const e of r.entries) {
          out(
            `${String(e.index).padStart(6)}  ${e.admitted_at}  ${e.decision.padEnd(5)}  ${e.signer} → ${e.peer || "-"}  (${e.exchange_id})`,
          );
        }
      },
    );

  withConnection(receipt.command("show"))
    .description("show one logged receipt: claims, hashes, admission")
    .argument("<index>", "log index")
    .option("--json", "print JSON")
    .action(async (index: string, o: ConnOpts & { json?: boolean }) => {
      const i = nonNegInt(index, "index");
      const r = await withClient(o, (c) => c.call<Record<string, unknown>>("GET", `/v1/log/entries/${i}`));
      out(JSON.stringify(r, null, 2));
    });

  withConnection(receipt.command("export"))
    .description(
      "write receipts (COSE transparent statements with inclusion and consistency proofs) to files",
    )
    .argument("[index...]", "log indexes")
    .option("--all", "every receipt in the log")
    .requiredOption("--out <dir>", "directory for receipt-<index>.cose files")
    .option(
      "--trust-out <dir>",
      "also write the trust material an auditor needs (bundle, notary key, checkpoint)",
    )
    .action(async (indexes: string[], o: ConnOpts & { all?: boolean; out: string; trustOut?: string }) => {
      await withClient(o, async (c) => {
        let list = indexes.map((x) => nonNegInt(x, "index"));
        if (o.all) {
          const size = (await c.call<{ tree_size: number }>("GET", "/v1/log/checkpoint")).tree_size;
          list = Array.from({ length: size }, (_, i) => i);
        }
        if (list.length === 0) throw new ValidationError("give log indexes or --all");
        // the checkpoint first: every exported receipt then carries a proof up to at least its size
        if (o.trustOut) {
          const t = await writeTrustDir(c, o.trustOut);
          out(`trust material in ${o.trustOut} (checkpoint of tree size ${t.treeSize})`);
        }
        const files = await exportReceipts(c, list, o.out);
        out(`${files.length} receipt(s) written to ${o.out}`);
      });
    });

  receipt
    .command("verify")
    .description("verify receipt files offline against a trust directory")
    .argument("<file...>", "receipt files (.cose)")
    .requiredOption("--trust <dir>", "trust directory: bundles/<td>.pem, notary.pem, optional checkpoint")
    .option("--now <time>", "verify as of this time (ISO 8601 or unix seconds)")
    .option("--consistency <file>", "consistency proofs (qhx log consistency --out)")
    .option("--json", "print JSON")
    .action((files: string[], o: { trust: string; now?: string; consistency?: string; json?: boolean }) => {
      const opts: { now?: Date; consistency?: ConsistencyProof[] } = {};
      if (o.now) opts.now = parseTime(o.now);
      if (o.consistency) opts.consistency = parseConsistencyFile(fs.readFileSync(o.consistency, "utf8"));
      const outcomes = verifyFiles(files, o.trust, opts);
      if (o.json) {
        out(
          JSON.stringify(
            outcomes.map((x) =>
              x.ok
                ? {
                    file: x.file,
                    ok: true,
                    index: x.result!.leafIndex,
                    tree_size: x.result!.treeSize,
                    signer: x.result!.spiffeId,
                    admitted_at: x.result!.admittedAt.toISOString(),
                    proved: x.result!.proved,
                  }
                : { file: x.file, ok: false, check: x.check, code: x.code, error: x.error },
            ),
            null,
            2,
          ),
        );
      } else {
        for (const x of outcomes) {
          if (x.ok) {
            out(`OK    ${x.file}: receipt ${x.result!.leafIndex} of ${x.result!.claims.id}`);
            for (const p of x.result!.proved) out(`        ✓ ${p.check}: ${p.detail}`);
          } else {
            out(`FAIL  ${x.file}: check "${x.check}" failed: ${x.error}`);
          }
        }
        const failed = outcomes.filter((x) => !x.ok).length;
        out(`${outcomes.length - failed} verified, ${failed} failed`);
      }
      if (outcomes.some((x) => !x.ok)) process.exitCode = 1;
    });

  const log = program.command("log").description("the notary's Merkle log: signed tree heads and proofs");

  withConnection(log.command("checkpoint"))
    .description("print (or write) the latest signed tree head, a C2SP checkpoint")
    .option("--out <file>", "write the checkpoint to this file")
    .option("--trust-out <dir>", "write the trust material an auditor needs (bundle, notary key, checkpoint)")
    .action(async (o: ConnOpts & { out?: string; trustOut?: string }) => {
      await withClient(o, async (c) => {
        if (o.trustOut) {
          const t = await writeTrustDir(c, o.trustOut);
          out(`trust material in ${o.trustOut} (checkpoint of tree size ${t.treeSize})`);
          if (o.out) fs.writeFileSync(o.out, t.checkpoint);
          return;
        }
        const r = await c.call<{ checkpoint: string }>("GET", "/v1/log/checkpoint");
        if (o.out) fs.writeFileSync(o.out, r.checkpoint);
        else process.stdout.write(r.checkpoint);
      });
    });

  withConnection(log.command("consistency"))
    .description("a consistency proof between two tree sizes (RFC 9162 §2.1.4)")
    .requiredOption("--from <n>", "the older tree size")
    .option("--to <m>", "the newer tree size (default: the latest)")
    .option("--out <file>", "write the proof (JSON) to this file")
    .action(async (o: ConnOpts & { from: string; to?: string; out?: string }) => {
      const q = new URLSearchParams({ from: String(nonNegInt(o.from, "from")) });
      if (o.to !== undefined) q.set("to", String(nonNegInt(o.to, "to")));
      const r = await withClient(o, (c) =>
        c.call<Record<string, unknown>>("GET", `/v1/log/consistency?${q}`),
      );
      const text = `${JSON.stringify(r, null, 2)}\n`;
      if (o.out) fs.writeFileSync(o.out, text);
      else process.stdout.write(text);
    });
}
