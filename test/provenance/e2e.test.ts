/**
 * The whole path with real processes and sockets: a `qhx server` process, the receipt emitter submitting
 * statements over TLS 1.3 mTLS with the workloads' own SVIDs, `qhx receipt list|show|export` and
 * `qhx log checkpoint|consistency` over the admin socket, then — with the server stopped — `qhx receipt
 * verify` on nothing but files, now and as of ten years later; and failures reported by check name.
 */
import crypto from "node:crypto";
import { once } from "node:events";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeyPair } from "../../host/core/alg.ts";
import { fromPem } from "../../host/core/pem.ts";
import { SocketClient } from "../../host/cli/client.ts";
import { ReceiptEmitter } from "../../host/provenance/emitter.ts";
import type { ExchangeRecord } from "../../host/tunnel/record.ts";
import { qhx, startServerProcess, tmpDir } from "../helpers/cli.ts";
import { qhxIn } from "./cli-inprocess.ts";

type Server = Awaited<ReturnType<typeof startServerProcess>>;
const TD = "example.org";
let server: Server;
let client: SocketClient;
let work: string;

interface Svid {
  id: string;
  key: crypto.KeyObject;
  chainDer: Uint8Array[];
}

async function mint(id: string, alg: "ec-p256" | "ml-dsa-65" = "ec-p256"): Promise<Svid> {
  const kp = generateKeyPair(alg);
  const r = await client.call<{ chain: string[] }>("POST", "/v1/svids/x509", {
    spiffe_id: id,
    public_key: kp.publicKey.export({ type: "spki", format: "pem" }),
    ttl: "1h",
  });
  return { id, key: kp.privateKey, chainDer: r.chain.flatMap((p) => fromPem(p)) };
}

const sha = (b: Uint8Array | string) => crypto.createHash("sha256").update(b).digest("hex");

function record(
  me: Svid,
  peer: Svid,
  role: "client" | "server",
  o: Partial<ExchangeRecord> = {},
): ExchangeRecord {
  const now = Date.now();
  return {
    id: crypto.randomUUID(),
    mode: "mtls",
    role,
    localId: me.id,
    peerId: peer.id,
    localCertSha256: sha(me.chainDer[0]!),
    peerCertSha256: sha(peer.chainDer[0]!),
    decision: "allow",
    reason: "allow-list",
    policyVersion: null,
    group: "X25519MLKEM768",
    peerSigAlg: "ecdsa_secp256r1_sha256",
    startedAt: now - 50,
    handshakeAt: now - 40,
    endedAt: now,
    requestBytes: 5,
    requestSha256: sha("hello"),
    responseBytes: 5,
    responseSha256: sha("world"),
    svid: { key: me.key, chainDer: me.chainDer },
    peerChainDer: peer.chainDer,
    ...o,
  };
}

function emitterFor(dir?: string, port?: number): ReceiptEmitter {
  const [host, p] = server.listen.split(":") as [string, string];
  const pem = fs.readFileSync(path.join(work, "bundle.pem"), "utf8");
  return new ReceiptEmitter({
    host,
    port: port ?? Number(p),
    trustDomain: TD,
    roots: fromPem(pem),
    batchSize: 8,
    retryBaseMs: 5,
    retryMaxMs: 20,
    ...(dir ? { dir } : {}),
  });
}

beforeAll(async () => {
  server = await startServerProcess();
  client = new SocketClient(server.adminSocket);
  work = tmpDir("qhx-receipts-e2e-");
  const b = await client.call<{ bundle: string }>("GET", "/v1/bundle?format=pem");
  fs.writeFileSync(path.join(work, "bundle.pem"), b.bundle);
}, 60_000);

afterAll(async () => {
  await client?.close();
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
  fs.rmSync(server.dir, { recursive: true, force: true });
});

describe("receipts through a real server", () => {
  let web: Svid;
  let db: Svid;
  const localDir = () => path.join(work, "local");

  it("the emitter submits over mTLS with the workloads' own SVIDs; refusals are counted, never thrown", async () => {
    web = await mint(`spiffe://${TD}/ns/demo/web`);
    db = await mint(`spiffe://${TD}/ns/demo/db`, "ml-dsa-65");
    const em = emitterFor(localDir());
    for (let i = 0; i < 12; i++) {
      em.record(record(web, db, "client"));
      em.record(record(db, web, "server"));
    }
    // a record that names another workload than its SVID: the notary refuses it
    em.record(record(web, db, "client", { localId: db.id }));
    // a record whose key is unusable: signing fails inside the emitter, record() still returns
    em.record(record(web, db, "client", { svid: { key: null as never, chainDer: web.chainDer } }));
    await em.flush();
    expect(em.stats).toMatchObject({ queued: 26, admitted: 24, rejected: 1, failed: 1, dropped: 0 });
    await em.close();
    expect(fs.readdirSync(localDir()).filter((f) => f.endsWith(".cose"))).toHaveLength(24);
  });

  it("an unreachable notary: retries with backoff, then close() drops and counts", async () => {
    const em = emitterFor(undefined, 1); // nothing listens on port 1
    em.record(record(web, db, "client"));
    await once(em, "retry");
    await em.close(50);
    expect(em.stats.retries).toBeGreaterThan(0);
    expect(em.stats.dropped).toBe(1);
    expect(em.stats.admitted).toBe(0);
  });

  it("a client without an SVID cannot submit", async () => {
    const [host, port] = server.listen.split(":") as [string, string];
    const { default: https } = await import("node:https");
    const status = await new Promise<number>((resolve, reject) => {
      const req = https.request(
        {
          host,
          port: Number(port),
          method: "POST",
          path: "/notary/v1/statements",
          rejectUnauthorized: false,
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on("error", reject);
      req.end(JSON.stringify({ statements: ["AAAA"] }));
    });
    expect(status).toBe(401);
  });

  it("qhx receipt list / show, qhx log checkpoint / consistency over the admin socket", async () => {
    const list = await qhxIn(["receipt", "list", "--socket", server.adminSocket, "--json"]);
    expect(list.status, list.stderr).toBe(0);
    const j = JSON.parse(list.stdout) as { tree_size: number; entries: { signer: string }[] };
    expect(j.tree_size).toBe(24);
    expect(new Set(j.entries.map((e) => e.signer))).toEqual(new Set([web.id, db.id]));
    const only = await qhxIn(["receipt", "list", "--socket", server.adminSocket, "--signer", db.id]);
    expect(only.stdout.split("\n").filter((l) => l.includes(" allow ")).length).toBe(12);
    const show = await qhxIn(["receipt", "show", "0", "--socket", server.adminSocket]);
    expect(show.status, show.stderr).toBe(0);
    expect(JSON.parse(show.stdout)).toMatchObject({
      index: 0,
      claims: { decision: "allow", request: { bytes: 5, sha256: sha("hello") } },
    });
    const missing = await qhxIn(["receipt", "show", "999", "--socket", server.adminSocket]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/QHX_NOT_FOUND/);
    const cp = await qhxIn(["log", "checkpoint", "--socket", server.adminSocket]);
    expect(cp.stdout).toMatch(new RegExp(`^${TD}/qhx/notary\\n24\\n[A-Za-z0-9+/]{43}=\\n\\n\u2014 `));
    const cons = await qhxIn([
      "log",
      "consistency",
      "--from",
      "3",
      "--to",
      "24",
      "--socket",
      server.adminSocket,
    ]);
    expect(JSON.parse(cons.stdout)).toMatchObject({ first: 3, second: 24 });
    const bad = await qhxIn(["log", "consistency", "--from", "30", "--socket", server.adminSocket]);
    expect(bad.status).toBe(1);
  });

  it(
    "export, stop every QHx process, verify offline with files only — now and ten years later",
    { timeout: 120_000 },
    async () => {
      const rdir = path.join(work, "receipts");
      const tdir = path.join(work, "trust");
      const ex = qhx([
        "receipt",
        "export",
        "--all",
        "--out",
        rdir,
        "--trust-out",
        tdir,
        "--socket",
        server.adminSocket,
      ]);
      expect(ex.status, ex.stderr).toBe(0);
      fs.writeFileSync(
        path.join(work, "cons.json"),
        (await qhxIn(["log", "consistency", "--from", "10", "--socket", server.adminSocket])).stdout,
      );
      expect(await server.stop()).toBe(0);

      const files = fs.readdirSync(rdir).map((f) => path.join(rdir, f));
      expect(files).toHaveLength(24);
      const v = qhx(["receipt", "verify", ...files, "--trust", tdir]);
      expect(v.status, v.stdout + v.stderr).toBe(0);
      expect(v.stdout).toMatch(/24 verified, 0 failed/);
      expect(v.stdout).toMatch(
        /✓ svid-chain: X509-SVID spiffe:\/\/example.org\/ns\/demo\/db valid at admission/,
      );
      expect(v.stdout).toMatch(
        /✓ consistency: tree \d+ is consistent with the trusted checkpoint of size 24/,
      );
      const later = await qhxIn([
        "receipt",
        "verify",
        ...files.slice(0, 3),
        "--trust",
        tdir,
        "--now",
        "2036-11-24T00:00:00Z",
        "--json",
      ]);
      expect(later.status, later.stdout).toBe(0);
      expect((JSON.parse(later.stdout) as { ok: boolean }[]).every((x) => x.ok)).toBe(true);

      // the emitter's own copies: receipts at their admission tree sizes, no embedded consistency proofs
      const local = fs.readdirSync(localDir()).map((f) => path.join(localDir(), f));
      const noCp = path.join(work, "trust-nocp");
      fs.cpSync(tdir, noCp, { recursive: true });
      fs.rmSync(path.join(noCp, "checkpoint"));
      expect((await qhxIn(["receipt", "verify", ...local, "--trust", noCp])).status).toBe(0);
      // against the checkpoint they need consistency proofs: the separate proof file covers 10 → 24 only
      const some = await qhxIn([
        "receipt",
        "verify",
        ...local,
        "--trust",
        tdir,
        "--consistency",
        path.join(work, "cons.json"),
        "--json",
      ]);
      const outcome = JSON.parse(some.stdout) as {
        ok: boolean;
        check?: string;
        code?: string;
        tree_size?: number;
      }[];
      // verified: trees of size 10 (the proof file) or 24 (the checkpoint itself); the rest lack a proof
      for (const x of outcome) {
        if (x.ok) expect([10, 24]).toContain(x.tree_size);
        else expect([x.check, x.code]).toEqual(["consistency", "QHX_RECEIPT_NO_CONSISTENCY"]);
      }
      expect(outcome.some((x) => x.ok)).toBe(true);
      expect(some.status).toBe(outcome.every((x) => x.ok) ? 0 : 1);

      // tampering: one failed file fails the run and names its check
      const bad = path.join(work, "bad.cose");
      const bytes = fs.readFileSync(files[0]!);
      bytes[bytes.length - 3]! ^= 0x10; // inside the statement's signature
      fs.writeFileSync(bad, bytes);
      const t = await qhxIn(["receipt", "verify", files[1]!, bad, "--trust", tdir]);
      expect(t.status).toBe(1);
      expect(t.stdout).toMatch(/FAIL .*bad\.cose: check "signature" failed: QHX_COSE_BAD_SIGNATURE/);
      expect(t.stdout).toMatch(/1 verified, 1 failed/);
      // wrong notary key
      const wrong = path.join(work, "trust-wrong");
      fs.cpSync(noCp, wrong, { recursive: true });
      fs.writeFileSync(
        path.join(wrong, "notary.pem"),
        crypto.generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }),
      );
      const w = await qhxIn(["receipt", "verify", files[0]!, "--trust", wrong]);
      expect(w.status).toBe(1);
      expect(w.stdout).toMatch(/check "tree-head" failed: QHX_RECEIPT_WRONG_NOTARY/);
      // a trust directory that is not one
      const none = await qhxIn(["receipt", "verify", files[0]!, "--trust", path.join(work, "nope")]);
      expect(none.status).toBe(1);
      expect(none.stderr).toMatch(/QHX_TRUST_DIR_INVALID/);
      expect(
        (await qhxIn(["receipt", "verify", files[0]!, "--trust", tdir, "--now", "yesterday"])).stderr,
      ).toMatch(/ISO 8601/);
    },
  );
});
