import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { QhxError } from "../host/core/errors.ts";
import { openDatastore } from "../host/server/datastore/index.ts";
import { QHX_APPLICATION_ID, SCHEMA_VERSION, SqliteDatastore } from "../host/server/datastore/sqlite.ts";
import type { AttestedNode, CaRecord, RegistrationEntryInput } from "../host/server/datastore/types.ts";

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), "e2e", "fixtures");

let dir: string;
let dbPath: string;
let t: number;
const clock = () => t;
const opened: SqliteDatastore[] = [];

function open(p = dbPath): SqliteDatastore {
  const ds = SqliteDatastore.open(p, { clock });
  opened.push(ds);
  return ds;
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-ds-"));
  dbPath = path.join(dir, "qhx.db");
  t = 1_800_000_000;
});

afterEach(async () => {
  for (const ds of opened.splice(0)) await ds.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function rejectsWith(p: Promise<unknown> | (() => unknown), code: string): Promise<QhxError> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(QhxError);
    expect((e as QhxError).code).toBe(code);
    return e as QhxError;
  }
  throw new Error(`expected ${code}`);
}

const input = (over: Partial<RegistrationEntryInput> = {}): RegistrationEntryInput => ({
  spiffeId: "spiffe://example.org/web",
  parentId: "spiffe://example.org/qhx/agent/a1",
  selectors: [{ type: "unix", value: "uid:1000" }],
  ...over,
});

describe("entries", () => {
  it("creates, gets, lists and deletes with defaults filled", async () => {
    const ds = open();
    const e = await ds.createEntry(input());
    expect(e.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(e).toEqual({
      id: e.id,
      ...input(),
      namespace: "default",
      labels: {},
      x509SvidTtl: 0,
      jwtSvidTtl: 0,
      dnsNames: [],
      federatesWith: [],
      admin: false,
      expiresAt: null,
      createdAt: t,
      updatedAt: t,
      revision: 1,
    });
    expect(await ds.getEntry(e.id)).toEqual(e);
    expect(await ds.listEntries()).toEqual([e]);
    expect(await ds.getEntry("nope")).toBeUndefined();
    expect(await ds.deleteEntry(e.id)).toBe(true);
    expect(await ds.deleteEntry(e.id)).toBe(false);
    expect(await ds.getEntry(e.id)).toBeUndefined();
  });

  it("stores every field and keeps selector order", async () => {
    const ds = open();
    const full = input({
      selectors: [
        { type: "unix", value: "uid:1000" },
        { type: "k8s", value: "ns:prod" },
        { type: "a", value: "z" },
      ],
      namespace: "prod",
      labels: { app: "web", "team/owner": "alice" },
      x509SvidTtl: 3600,
      jwtSvidTtl: 300,
      dnsNames: ["web.example.org", "*.web.example.org"],
      federatesWith: ["partner.com"],
      admin: true,
      expiresAt: 1_900_000_000,
    });
    const e = await ds.createEntry(full);
    expect(e).toMatchObject(full);
    expect(await ds.getEntry(e.id)).toEqual(e);
  });

  it("generates distinct random ids", async () => {
    const ds = open();
    const ids = new Set<string>();
    for (let i = 0; i < 20; i++)
      ids.add((await ds.createEntry(input({ spiffeId: `spiffe://example.org/w${i}` }))).id);
    expect(ids.size).toBe(20);
  });

  it("filters by spiffeId, parentId, namespace and selector, combined with AND", async () => {
    const ds = open();
    const a = await ds.createEntry(
      input({
        spiffeId: "spiffe://example.org/a",
        selectors: [
          { type: "unix", value: "uid:1" },
          { type: "unix", value: "gid:9" },
        ],
      }),
    );
    const b = await ds.createEntry(
      input({
        spiffeId: "spiffe://example.org/b",
        namespace: "ns2",
        selectors: [{ type: "unix", value: "gid:9" }],
      }),
    );
    const c = await ds.createEntry(
      input({ spiffeId: "spiffe://example.org/a", parentId: "spiffe://example.org/qhx/agent/a2" }),
    );
    const ids = async (f: Parameters<typeof ds.listEntries>[0]) => (await ds.listEntries(f)).map((e) => e.id);
    expect(await ids({})).toEqual([a.id, b.id, c.id]);
    expect(await ids({ spiffeId: "spiffe://example.org/a" })).toEqual([a.id, c.id]);
    expect(await ids({ parentId: "spiffe://example.org/qhx/agent/a2" })).toEqual([c.id]);
    expect(await ids({ namespace: "ns2" })).toEqual([b.id]);
    expect(await ids({ namespace: "default" })).toEqual([a.id, c.id]);
    expect(await ids({ selector: { type: "unix", value: "gid:9" } })).toEqual([a.id, b.id]);
    expect(await ids({ selector: { type: "unix", value: "uid:1" } })).toEqual([a.id]);
    expect(await ids({ selector: { type: "unix", value: "uid:1000" } })).toEqual([c.id]);
    expect(await ids({ selector: { type: "unix", value: "uid" } })).toEqual([]);
    expect(await ids({ selector: { type: "unix", value: "gid:9" }, namespace: "ns2" })).toEqual([b.id]);
    expect(
      await ids({ spiffeId: "spiffe://example.org/a", selector: { type: "unix", value: "gid:9" } }),
    ).toEqual([a.id]);
    // listed entries carry all their selectors, not just the matching one
    expect((await ds.listEntries({ selector: { type: "unix", value: "gid:9" } }))[0]!.selectors).toHaveLength(
      2,
    );
  });

  it("uses the selector index for the selector filter", () => {
    const ds = open();
    const db = new DatabaseSync(dbPath);
    try {
      const plan = db
        .prepare(
          "EXPLAIN QUERY PLAN SELECT entry_id FROM entry_selectors WHERE type = 'unix' AND value = 'uid:1'",
        )
        .all()
        .map((r) => String(r.detail))
        .join("\n");
      expect(plan).toContain("entry_selectors_type_value");
    } finally {
      db.close();
    }
    expect(ds.schemaVersion()).toBe(SCHEMA_VERSION);
  });

  it("updates with revision +1, updatedAt from the clock, and keeps unpatched fields", async () => {
    const ds = open();
    const e = await ds.createEntry(input({ labels: { a: "1" }, expiresAt: 1_900_000_000 }));
    t += 60;
    const u = await ds.updateEntry(e.id, { namespace: "ns9", selectors: [{ type: "k8s", value: "sa:web" }] });
    expect(u).toEqual({
      ...e,
      namespace: "ns9",
      selectors: [{ type: "k8s", value: "sa:web" }],
      updatedAt: t,
      revision: 2,
    });
    expect(await ds.getEntry(e.id)).toEqual(u);
    expect(await ds.listEntries({ selector: { type: "unix", value: "uid:1000" } })).toEqual([]);
    expect((await ds.listEntries({ selector: { type: "k8s", value: "sa:web" } })).map((x) => x.id)).toEqual([
      e.id,
    ]);
    const cleared = await ds.updateEntry(e.id, { expiresAt: null, labels: undefined });
    expect(cleared.expiresAt).toBeNull();
    expect(cleared.labels).toEqual({ a: "1" });
    expect(cleared.revision).toBe(3);
  });

  it("optimistic concurrency: a stale expectedRevision is refused with QHX_CONFLICT and changes nothing", async () => {
    const ds = open();
    const e = await ds.createEntry(input());
    const u = await ds.updateEntry(e.id, { admin: true }, 1);
    expect(u.revision).toBe(2);
    const err = await rejectsWith(ds.updateEntry(e.id, { admin: false }, 1), "QHX_CONFLICT");
    expect(err.message).toContain("expected revision 1, found 2");
    expect(err.hint).toBeDefined();
    expect(await ds.getEntry(e.id)).toEqual(u);
    expect((await ds.updateEntry(e.id, { admin: false }, 2)).revision).toBe(3);
  });

  it("optimistic concurrency across two connections", async () => {
    const a = open();
    const b = open();
    const e = await a.createEntry(input());
    const [r1, r2] = await Promise.allSettled([
      a.updateEntry(e.id, { namespace: "from-a" }, 1),
      b.updateEntry(e.id, { namespace: "from-b" }, 1),
    ]);
    expect([r1.status, r2.status].sort()).toEqual(["fulfilled", "rejected"]);
    const winner = r1.status === "fulfilled" ? "from-a" : "from-b";
    expect((await b.getEntry(e.id))!.namespace).toBe(winner);
  });

  it("update of a missing entry is QHX_NOT_FOUND", async () => {
    const ds = open();
    await rejectsWith(ds.updateEntry("missing", { admin: true }), "QHX_NOT_FOUND");
  });

  it("refuses a duplicate (spiffe_id, parent_id, selector set) with QHX_ALREADY_EXISTS", async () => {
    const ds = open();
    const sels = [
      { type: "unix", value: "uid:1" },
      { type: "unix", value: "gid:2" },
    ];
    const e = await ds.createEntry(input({ selectors: sels }));
    const err = await rejectsWith(
      ds.createEntry(input({ selectors: [sels[1]!, sels[0]!], namespace: "other" })),
      "QHX_ALREADY_EXISTS",
    );
    expect(err.message).toContain(e.id);
    // differing in any part of the key is fine
    await ds.createEntry(input({ selectors: [sels[0]!] }));
    await ds.createEntry(input({ selectors: sels, parentId: "spiffe://example.org/qhx/agent/a2" }));
    const d = await ds.createEntry(input({ selectors: sels, spiffeId: "spiffe://example.org/web2" }));
    expect(await ds.listEntries()).toHaveLength(4);
    // an update that would collide is refused too, and rolled back entirely
    await rejectsWith(
      ds.updateEntry(d.id, { spiffeId: "spiffe://example.org/web", labels: { x: "y" } }),
      "QHX_ALREADY_EXISTS",
    );
    expect(await ds.getEntry(d.id)).toEqual(d);
    // updating an entry to its own key is not a collision
    expect((await ds.updateEntry(e.id, { selectors: [sels[1]!, sels[0]!] })).revision).toBe(2);
  });

  it("selector sets are compared exactly (no ambiguity with colons or separators)", async () => {
    const ds = open();
    await ds.createEntry(input({ selectors: [{ type: "a", value: "b:c" }] }));
    await ds.createEntry(
      input({
        selectors: [
          { type: "a", value: "b" },
          { type: "c", value: "x" },
        ],
      }),
    );
    await ds.createEntry(input({ selectors: [{ type: "a", value: 'b","c' }] }));
    expect(await ds.listEntries()).toHaveLength(3);
  });

  it("refuses an entry without selectors", async () => {
    const ds = open();
    await rejectsWith(ds.createEntry(input({ selectors: [] })), "QHX_INVALID_ARGUMENT");
    expect(await ds.listEntries()).toEqual([]);
  });

  it("deleting an entry removes its selectors (foreign key cascade)", async () => {
    const ds = open();
    const e = await ds.createEntry(input());
    await ds.deleteEntry(e.id);
    const db = new DatabaseSync(dbPath, { readOnly: true });
    try {
      expect(db.prepare("SELECT count(*) AS n FROM entry_selectors").get()!.n).toBe(0);
      expect(db.prepare("PRAGMA foreign_key_check").all()).toEqual([]);
    } finally {
      db.close();
    }
  });

  it("returned records are copies", async () => {
    const ds = open();
    const inp = input({ labels: { a: "1" } });
    const e = await ds.createEntry(inp);
    inp.selectors.push({ type: "x", value: "y" });
    inp.labels!.b = "2";
    e.selectors.push({ type: "z", value: "z" });
    const again = await ds.getEntry(e.id);
    expect(again!.selectors).toEqual([{ type: "unix", value: "uid:1000" }]);
    expect(again!.labels).toEqual({ a: "1" });
  });
});

describe("CA journal", () => {
  const bytes = (n: number, fill: number) => new Uint8Array(n).fill(fill);
  const x509: CaRecord = {
    id: "ca-1",
    kind: "x509",
    status: "prepared",
    keyId: "x509-ca-1",
    alg: "ec-p256",
    certDer: Uint8Array.from([0x30, 0x82, 0x00, 0xff, 0x00, 0x01, 0x02]),
    upstreamChain: [bytes(300, 0xaa), Uint8Array.from([0, 0, 0]), bytes(1, 0)],
    publicKeyDer: null,
    kid: null,
    notBefore: 1_800_000_000,
    notAfter: 1_800_086_400,
    createdAt: 1_800_000_000,
  };
  const jwt: CaRecord = {
    id: "jwt-1",
    kind: "jwt",
    status: "active",
    keyId: "jwt-key-1",
    alg: "ec-p256",
    certDer: null,
    upstreamChain: [],
    publicKeyDer: bytes(91, 0x42),
    kid: "kid-abc",
    notBefore: 1_800_000_000,
    notAfter: 1_800_003_600,
    createdAt: 1_800_000_001,
  };

  it("round-trips records with blobs, filters by kind, updates status", async () => {
    const ds = open();
    await ds.putCa(x509);
    await ds.putCa(jwt);
    const all = await ds.listCas();
    expect(all).toEqual([x509, jwt]);
    expect(all[0]!.certDer).toBeInstanceOf(Uint8Array);
    expect(all[0]!.upstreamChain[0]).toBeInstanceOf(Uint8Array);
    expect(await ds.listCas("jwt")).toEqual([jwt]);
    expect(await ds.listCas("x509")).toEqual([x509]);
    await ds.setCaStatus("ca-1", "active");
    await ds.setCaStatus("jwt-1", "retired");
    expect((await ds.listCas()).map((c) => c.status)).toEqual(["active", "retired"]);
    await rejectsWith(ds.setCaStatus("nope", "active"), "QHX_NOT_FOUND");
    await rejectsWith(ds.setCaStatus("ca-1", "bogus" as never), "QHX_INVALID_ARGUMENT");
  });

  it("putCa replaces an existing record, including its chain", async () => {
    const ds = open();
    await ds.putCa(x509);
    const replaced = {
      ...x509,
      status: "active" as const,
      upstreamChain: [bytes(5, 7)],
      certDer: bytes(10, 1),
    };
    await ds.putCa(replaced);
    expect(await ds.listCas()).toEqual([replaced]);
  });

  it("deleteCa removes the record and its chain; deleting again is fine", async () => {
    const ds = open();
    await ds.putCa(x509);
    await ds.deleteCa("ca-1");
    await ds.deleteCa("ca-1");
    expect(await ds.listCas()).toEqual([]);
    const db = new DatabaseSync(dbPath, { readOnly: true });
    try {
      expect(db.prepare("SELECT count(*) AS n FROM ca_upstream_chain").get()!.n).toBe(0);
    } finally {
      db.close();
    }
  });

  it("survives reopen byte-exact", async () => {
    const ds = open();
    await ds.putCa(x509);
    await ds.putCa(jwt);
    await ds.close();
    expect(await open().listCas()).toEqual([x509, jwt]);
  });
});

describe("bundles", () => {
  const rec = (sequence: number, td = "partner.com") => ({
    trustDomain: td,
    document: JSON.stringify({ keys: [], spiffe_sequence: sequence }),
    sequence,
    updatedAt: 1_800_000_000 + sequence,
  });

  it("puts, gets, lists and deletes", async () => {
    const ds = open();
    expect(await ds.getBundle("partner.com")).toBeUndefined();
    await ds.putBundle(rec(1));
    await ds.putBundle(rec(4, "another.org"));
    expect(await ds.getBundle("partner.com")).toEqual(rec(1));
    expect(await ds.listBundles()).toEqual([rec(4, "another.org"), rec(1)]);
    expect(await ds.deleteBundle("partner.com")).toBe(true);
    expect(await ds.deleteBundle("partner.com")).toBe(false);
    expect(await ds.listBundles()).toEqual([rec(4, "another.org")]);
  });

  it("refuses a sequence not greater than the stored one", async () => {
    const ds = open();
    await ds.putBundle(rec(5));
    const same = await rejectsWith(ds.putBundle(rec(5)), "QHX_CONFLICT");
    expect(same.message).toContain("has sequence 5; refusing sequence 5");
    await rejectsWith(ds.putBundle(rec(2)), "QHX_CONFLICT");
    expect(await ds.getBundle("partner.com")).toEqual(rec(5));
    await ds.putBundle(rec(6));
    expect(await ds.getBundle("partner.com")).toEqual(rec(6));
    // after delete, any sequence is accepted again
    await ds.deleteBundle("partner.com");
    await ds.putBundle(rec(0));
    await rejectsWith(ds.putBundle({ ...rec(1), sequence: -1 }), "QHX_INVALID_ARGUMENT");
  });
});

describe("join tokens", () => {
  const tok = { tokenHash: "a".repeat(64), expiresAt: 1_800_000_600, createdAt: 1_800_000_000 };

  it("can be consumed exactly once", async () => {
    const ds = open();
    await ds.createJoinToken(tok);
    await rejectsWith(ds.createJoinToken(tok), "QHX_ALREADY_EXISTS");
    expect(await ds.consumeJoinToken(tok.tokenHash, 1_800_000_100)).toEqual(tok);
    expect(await ds.consumeJoinToken(tok.tokenHash, 1_800_000_100)).toBeUndefined();
    expect(await ds.consumeJoinToken("b".repeat(64), 1_800_000_100)).toBeUndefined();
  });

  it("cannot be consumed at or after expiry, and is pruned", async () => {
    const ds = open();
    await ds.createJoinToken(tok);
    await ds.createJoinToken({ ...tok, tokenHash: "c".repeat(64), expiresAt: 1_800_009_999 });
    expect(await ds.consumeJoinToken(tok.tokenHash, tok.expiresAt)).toBeUndefined();
    expect(await ds.consumeJoinToken(tok.tokenHash, tok.expiresAt + 1)).toBeUndefined();
    expect(await ds.pruneJoinTokens(tok.expiresAt)).toBe(1);
    expect(await ds.pruneJoinTokens(tok.expiresAt)).toBe(0);
    expect(await ds.consumeJoinToken(tok.tokenHash, tok.expiresAt - 1)).toBeUndefined(); // pruned
    expect(await ds.consumeJoinToken("c".repeat(64), tok.expiresAt)).toMatchObject({
      tokenHash: "c".repeat(64),
    });
  });

  it("concurrent consumption from two connections to the same file: exactly one wins", async () => {
    const a = open();
    const b = open();
    for (let i = 0; i < 25; i++) {
      const h = i.toString(16).padStart(64, "0");
      await a.createJoinToken({ ...tok, tokenHash: h });
      const results = await Promise.all([
        a.consumeJoinToken(h, 1_800_000_001),
        b.consumeJoinToken(h, 1_800_000_001),
      ]);
      expect(results.filter((r) => r !== undefined)).toHaveLength(1);
    }
  });

  it("concurrent consumption from several processes: exactly one wins", async () => {
    const ds = open();
    await ds.createJoinToken(tok);
    const startAt = Date.now() + 1500;
    const script = path.join(FIXTURES, "consume-token.ts");
    const runs = Array.from({ length: 4 }, () => {
      const child = spawn(process.execPath, [script, dbPath, tok.tokenHash, "1800000001", String(startAt)], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      let err = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
      });
      child.stderr.on("data", (d: Buffer) => {
        err += d.toString();
      });
      return new Promise<string>((resolve, reject) =>
        child.on("exit", (code) =>
          code === 0 ? resolve(out.trim()) : reject(new Error(`exit ${code}: ${err}`)),
        ),
      );
    });
    const results = await Promise.all(runs);
    expect(results.sort()).toEqual(["lost", "lost", "lost", "won"]);
  });
});

describe("nodes", () => {
  const node: AttestedNode = {
    spiffeId: "spiffe://example.org/qhx/agent/tpm/abc",
    attestationType: "tpm",
    selectors: [
      { type: "tpm", value: "pcr:7:ab12" },
      { type: "tpm", value: "ek:hash:ff" },
    ],
    assurance: "hardware",
    certSerial: "0a1b2c",
    certNotAfter: 1_800_003_600,
    banned: false,
    createdAt: 1_800_000_000,
    updatedAt: 1_800_000_000,
    aliases: ["spiffe://example.org/nodes/rack-1"],
  };

  it("upserts, gets, lists and deletes; re-attestation keeps createdAt", async () => {
    const ds = open();
    expect(await ds.getNode(node.spiffeId)).toBeUndefined();
    await ds.upsertNode(node);
    const other = {
      ...node,
      spiffeId: "spiffe://example.org/qhx/agent/join_token/x",
      assurance: "token" as const,
    };
    await ds.upsertNode(other);
    expect(await ds.getNode(node.spiffeId)).toEqual(node);
    const renewed = {
      ...node,
      certSerial: "0d0e",
      banned: true,
      selectors: [{ type: "tpm", value: "pcr:7:cd34" }],
      createdAt: 1_800_999_999,
      updatedAt: 1_800_001_000,
    };
    await ds.upsertNode(renewed);
    expect(await ds.getNode(node.spiffeId)).toEqual({ ...renewed, createdAt: node.createdAt });
    expect((await ds.listNodes()).map((n) => n.spiffeId)).toEqual([other.spiffeId, node.spiffeId]);
    expect(await ds.deleteNode(node.spiffeId)).toBe(true);
    expect(await ds.deleteNode(node.spiffeId)).toBe(false);
    expect(await ds.listNodes()).toEqual([other]);
    await rejectsWith(ds.upsertNode({ ...node, assurance: "magic" as never }), "QHX_INVALID_ARGUMENT");
  });
});

describe("opening", () => {
  it("creates the file 0600 in WAL mode with synchronous=FULL and foreign keys on", async () => {
    const ds = open();
    expect(fs.statSync(dbPath).mode & 0o777).toBe(0o600);
    const db = new DatabaseSync(dbPath, { readOnly: true });
    try {
      expect(db.prepare("PRAGMA journal_mode").get()!.journal_mode).toBe("wal");
      expect(db.prepare("PRAGMA user_version").get()!.user_version).toBe(SCHEMA_VERSION);
      expect(db.prepare("PRAGMA application_id").get()!.application_id).toBe(QHX_APPLICATION_ID);
      expect(db.prepare("SELECT value FROM qhx_meta WHERE key = 'application'").get()!.value).toBe("qhx");
    } finally {
      db.close();
    }
    await ds.close();
  });

  it("persists across reopen", async () => {
    const ds = open();
    const e = await ds.createEntry(input());
    await ds.putBundle({ trustDomain: "p.com", document: "{}", sequence: 1, updatedAt: 1 });
    await ds.close();
    const again = open();
    expect(await again.getEntry(e.id)).toEqual(e);
    expect(await again.getBundle("p.com")).toMatchObject({ sequence: 1 });
  });

  it("migrations are idempotent: reopening, and opening concurrently, leaves one schema", async () => {
    const first = open();
    const schema = () => {
      const db = new DatabaseSync(dbPath, { readOnly: true });
      try {
        return db.prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY name").all();
      } finally {
        db.close();
      }
    };
    const before = schema();
    await first.close();
    for (let i = 0; i < 3; i++) await open().close();
    const a = open();
    const b = open();
    expect(a.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(b.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(schema()).toEqual(before);
  });

  it("refuses a non-SQLite file and leaves it byte-identical", async () => {
    const garbage = Buffer.from("this is definitely not a database\n".repeat(200));
    fs.writeFileSync(dbPath, garbage);
    const err = await rejectsWith(() => open(), "QHX_DATASTORE_CORRUPT");
    expect(err.message).toContain("not a SQLite database");
    expect(err.hint).toContain("backup");
    expect(fs.readFileSync(dbPath).equals(garbage)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(["qhx.db"]);
  });

  it("refuses a corrupt SQLite file (valid header, damaged pages) and leaves it byte-identical", async () => {
    const ds = open();
    for (let i = 0; i < 50; i++) await ds.createEntry(input({ spiffeId: `spiffe://example.org/w${i}` }));
    await ds.close();
    const good = fs.readFileSync(dbPath);
    const pageSize = good.readUInt16BE(16);
    const bad = Buffer.from(good);
    for (let i = pageSize; i < Math.min(bad.length, 4 * pageSize); i++) bad[i] = (i * 31) & 0xff;
    fs.writeFileSync(dbPath, bad);
    const err = await rejectsWith(() => open(), "QHX_DATASTORE_CORRUPT");
    expect(err.message).toContain(dbPath);
    expect(fs.readFileSync(dbPath).equals(bad)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(["qhx.db"]);
  });

  it("refuses a database with a newer schema version and leaves it byte-identical", async () => {
    await open().close();
    const raw = new DatabaseSync(dbPath);
    raw.exec("PRAGMA user_version = 99");
    raw.close();
    const before = fs.readFileSync(dbPath);
    const err = await rejectsWith(() => open(), "QHX_DATASTORE_TOO_NEW");
    expect(err.message).toContain("schema version 99");
    expect(err.message).toContain(`supports up to version ${SCHEMA_VERSION}`);
    expect(err.hint).toMatch(/newer QHx/);
    expect(fs.readFileSync(dbPath).equals(before)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(["qhx.db"]);
  });

  it("refuses another application's SQLite database and leaves it byte-identical", async () => {
    const raw = new DatabaseSync(dbPath);
    raw.exec(
      "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('bob')",
    );
    raw.close();
    const before = fs.readFileSync(dbPath);
    const err = await rejectsWith(() => open(), "QHX_DATASTORE_FOREIGN");
    expect(err.message).toContain("another application");
    expect(err.message).toContain("users");
    expect(fs.readFileSync(dbPath).equals(before)).toBe(true);
    // even one that happens to have a user_version but no tables
    fs.rmSync(dbPath);
    const raw2 = new DatabaseSync(dbPath);
    raw2.exec("PRAGMA user_version = 7");
    raw2.close();
    const before2 = fs.readFileSync(dbPath);
    await rejectsWith(() => open(), "QHX_DATASTORE_FOREIGN");
    expect(fs.readFileSync(dbPath).equals(before2)).toBe(true);
  });

  it("initializes an existing empty file", async () => {
    fs.writeFileSync(dbPath, "");
    const ds = open();
    expect(ds.schemaVersion()).toBe(SCHEMA_VERSION);
  });

  it("reports a missing directory clearly", async () => {
    const err = await rejectsWith(
      () => open(path.join(dir, "no", "such", "x.db")),
      "QHX_DATASTORE_OPEN_FAILED",
    );
    expect(err.hint).toContain("directory");
  });

  it("supports :memory:", async () => {
    const ds = open(":memory:");
    const e = await ds.createEntry(input());
    expect(await ds.getEntry(e.id)).toEqual(e);
  });

  it("fails calls after close with QHX_DATASTORE_CLOSED; close is idempotent", async () => {
    const ds = open();
    await ds.close();
    await ds.close();
    await rejectsWith(ds.listEntries(), "QHX_DATASTORE_CLOSED");
    await rejectsWith(ds.createEntry(input()), "QHX_DATASTORE_CLOSED");
  });
});

describe("openDatastore", () => {
  it("opens sqlite", async () => {
    const ds = await openDatastore({ kind: "sqlite", path: dbPath });
    expect(ds.kind).toBe("sqlite");
    expect(ds).toBeInstanceOf(SqliteDatastore);
    await ds.close();
  });

  it("postgres is planned, not available", async () => {
    const err = await rejectsWith(
      openDatastore({ kind: "postgres", connectionString: "postgres://x/y" }),
      "QHX_UNSUPPORTED",
    );
    expect(err.hint).toContain("planned");
  });

  it("rejects an unknown kind", async () => {
    const err = await rejectsWith(openDatastore({ kind: "mysql" } as never), "QHX_UNSUPPORTED");
    expect(err.message).toContain('"mysql"');
  });
});

describe("schema v2: node aliases", () => {
  it("a join token carries an optional alias SPIFFE ID, returned once on consumption", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qhx-ds-v2-"));
    const ds = SqliteDatastore.open(path.join(dir, "ds.sqlite3"));
    await ds.createJoinToken({
      tokenHash: "a".repeat(64),
      expiresAt: 2e9,
      createdAt: 1,
      spiffeId: "spiffe://td/n1",
    });
    await ds.createJoinToken({ tokenHash: "b".repeat(64), expiresAt: 2e9, createdAt: 1 });
    expect(await ds.consumeJoinToken("a".repeat(64), 10)).toMatchObject({ spiffeId: "spiffe://td/n1" });
    expect((await ds.consumeJoinToken("b".repeat(64), 10))?.spiffeId).toBeUndefined();
    expect(ds.schemaVersion()).toBe(SCHEMA_VERSION);
    await ds.close();
  });
});
