/**
 * The Datastore conformance suite: every behaviour of the interface (results, ordering, error codes,
 * concurrency between two datastores on one database), run against each kind through its harness.
 */
import { createHash } from "node:crypto";
import { beforeEach, describe, expect, it } from "vitest";
import { QhxError } from "../../host/core/errors.ts";
import type {
  AttestedNode,
  CaRecord,
  Datastore,
  LogEntryRecord,
  LogHeadRecord,
  RegistrationEntryInput,
} from "../../host/server/datastore/types.ts";
import type { DatastoreHarness } from "./harness.ts";

export async function rejectsWith(p: Promise<unknown> | (() => unknown), code: string): Promise<QhxError> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(QhxError);
    expect((e as QhxError).code).toBe(code);
    return e as QhxError;
  }
  throw new Error(`expected ${code}`);
}

export const input = (over: Partial<RegistrationEntryInput> = {}): RegistrationEntryInput => ({
  spiffeId: "spiffe://example.org/web",
  parentId: "spiffe://example.org/qhx/agent/a1",
  selectors: [{ type: "unix", value: "uid:1000" }],
  ...over,
});

const sha = (s: string) => new Uint8Array(createHash("sha256").update(s).digest());

/** A log batch that extends a log of `size` entries by `n`, with a head of the new size. */
export function logBatch(
  size: number,
  n: number,
  tag = "x",
): { entries: LogEntryRecord[]; head: LogHeadRecord } {
  const entries = Array.from({ length: n }, (_, i): LogEntryRecord => {
    const idx = size + i;
    return {
      leafIndex: idx,
      leafHash: sha(`leaf:${tag}:${idx}`),
      statementHash: sha(`stmt:${tag}:${idx}`),
      admittedAt: 1_800_000_000_000 + idx,
      statement: Uint8Array.from([0xd2, 0x84, idx & 0xff, (idx >> 8) & 0xff]),
      signerId: `spiffe://example.org/signer/${idx % 3}`,
      peerId: `spiffe://example.org/peer/${idx % 2}`,
      decision: idx % 4 === 0 ? "deny" : "allow",
      exchangeId: `ex-${tag}-${idx}`,
      treeSize: size + n,
    };
  });
  const head: LogHeadRecord = {
    treeSize: size + n,
    rootHash: sha(`root:${tag}:${size + n}`),
    createdAt: 1_800_000_000_000 + size + n,
    protectedHeader: Uint8Array.from([0xa1, 0x01, 0x26]),
    signature: new Uint8Array(64).fill((size + n) & 0xff),
    checkpoint: `example.org/log\n${size + n}\nroot\n`,
  };
  return { entries, head };
}

export function datastoreConformance(h: DatastoreHarness): void {
  let t: number;
  const clock = () => t;
  const open = (): Promise<Datastore> => h.open({ clock });

  beforeEach(() => {
    t = 1_800_000_000;
  });

  describe("entries", () => {
    it("creates, gets, lists and deletes with defaults filled", async () => {
      const ds = await open();
      expect(ds.kind).toBe(h.kind);
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
      const ds = await open();
      const full = input({
        selectors: [
          { type: "unix", value: "uid:1000" },
          { type: "k8s", value: "ns:prod" },
          { type: "a", value: "z" },
        ],
        namespace: "prod",
        labels: { app: "web", "team/owner": "alice", "ü-ñ": '✓ "quoted" \\ back' },
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
      expect(Object.keys((await ds.getEntry(e.id))!.labels)).toEqual(Object.keys(full.labels!));
    });

    it("generates distinct random ids", async () => {
      const ds = await open();
      const ids = new Set<string>();
      for (let i = 0; i < 20; i++)
        ids.add((await ds.createEntry(input({ spiffeId: `spiffe://example.org/w${i}` }))).id);
      expect(ids.size).toBe(20);
    });

    it("lists in creation order, which updates do not change", async () => {
      const ds = await open();
      // ids are random, spiffe ids descend: any other order would show
      const made = [];
      for (let i = 9; i >= 0; i--)
        made.push(await ds.createEntry(input({ spiffeId: `spiffe://example.org/w${i}` })));
      await ds.updateEntry(made[0]!.id, { namespace: "moved" });
      expect((await ds.listEntries()).map((e) => e.id)).toEqual(made.map((e) => e.id));
    });

    it("filters by spiffeId, parentId, namespace and selector, combined with AND", async () => {
      const ds = await open();
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
      const ids = async (f: Parameters<typeof ds.listEntries>[0]) =>
        (await ds.listEntries(f)).map((e) => e.id);
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
      expect(
        (await ds.listEntries({ selector: { type: "unix", value: "gid:9" } }))[0]!.selectors,
      ).toHaveLength(2);
    });

    it("updates with revision +1, updatedAt from the clock, and keeps unpatched fields", async () => {
      const ds = await open();
      const e = await ds.createEntry(input({ labels: { a: "1" }, expiresAt: 1_900_000_000 }));
      t += 60;
      const u = await ds.updateEntry(e.id, {
        namespace: "ns9",
        selectors: [{ type: "k8s", value: "sa:web" }],
      });
      expect(u).toEqual({
        ...e,
        namespace: "ns9",
        selectors: [{ type: "k8s", value: "sa:web" }],
        updatedAt: t,
        revision: 2,
      });
      expect(await ds.getEntry(e.id)).toEqual(u);
      expect(await ds.listEntries({ selector: { type: "unix", value: "uid:1000" } })).toEqual([]);
      expect((await ds.listEntries({ selector: { type: "k8s", value: "sa:web" } })).map((x) => x.id)).toEqual(
        [e.id],
      );
      const cleared = await ds.updateEntry(e.id, { expiresAt: null, labels: undefined });
      expect(cleared.expiresAt).toBeNull();
      expect(cleared.labels).toEqual({ a: "1" });
      expect(cleared.revision).toBe(3);
    });

    it("optimistic concurrency: a stale expectedRevision is refused with QHX_CONFLICT and changes nothing", async () => {
      const ds = await open();
      const e = await ds.createEntry(input());
      const u = await ds.updateEntry(e.id, { admin: true }, 1);
      expect(u.revision).toBe(2);
      const err = await rejectsWith(ds.updateEntry(e.id, { admin: false }, 1), "QHX_CONFLICT");
      expect(err.message).toContain("expected revision 1, found 2");
      expect(err.hint).toBeDefined();
      expect(await ds.getEntry(e.id)).toEqual(u);
      expect((await ds.updateEntry(e.id, { admin: false }, 2)).revision).toBe(3);
    });

    it("optimistic concurrency across two datastores on one database: exactly one update wins", async () => {
      const a = await open();
      const b = await open();
      const e = await a.createEntry(input());
      for (let round = 1; round <= 10; round++) {
        const [r1, r2] = await Promise.allSettled([
          a.updateEntry(e.id, { namespace: `a${round}` }, round),
          b.updateEntry(e.id, { namespace: `b${round}` }, round),
        ]);
        expect([r1.status, r2.status].sort()).toEqual(["fulfilled", "rejected"]);
        const lost = (r1.status === "rejected" ? r1 : r2) as PromiseRejectedResult;
        expect((lost.reason as QhxError).code).toBe("QHX_CONFLICT");
        const winner = r1.status === "fulfilled" ? `a${round}` : `b${round}`;
        const now = (await b.getEntry(e.id))!;
        expect(now.namespace).toBe(winner);
        expect(now.revision).toBe(round + 1);
      }
    });

    it("update of a missing entry is QHX_NOT_FOUND", async () => {
      const ds = await open();
      await rejectsWith(ds.updateEntry("missing", { admin: true }), "QHX_NOT_FOUND");
      await rejectsWith(ds.updateEntry("missing", { admin: true }, 1), "QHX_NOT_FOUND");
    });

    it("refuses a duplicate (spiffe_id, parent_id, selector set) with QHX_ALREADY_EXISTS", async () => {
      const ds = await open();
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

    it("concurrent creation of the same entry from two datastores: one wins, one QHX_ALREADY_EXISTS", async () => {
      const a = await open();
      const b = await open();
      for (let i = 0; i < 10; i++) {
        const inp = input({ spiffeId: `spiffe://example.org/race${i}` });
        const rs = await Promise.allSettled([a.createEntry(inp), b.createEntry(inp)]);
        expect(rs.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
        const lost = rs.find((r) => r.status === "rejected") as PromiseRejectedResult;
        expect((lost.reason as QhxError).code).toBe("QHX_ALREADY_EXISTS");
        expect((lost.reason as QhxError).message).toContain("already exists");
        expect((lost.reason as QhxError).hint).toMatch(/update the existing entry/);
      }
      expect(await a.listEntries()).toHaveLength(10);
      expect(await h.count("entry_selectors")).toBe(10);
    });

    it("selector sets are compared exactly (no ambiguity with colons or separators)", async () => {
      const ds = await open();
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
      const ds = await open();
      await rejectsWith(ds.createEntry(input({ selectors: [] })), "QHX_INVALID_ARGUMENT");
      expect(await ds.listEntries()).toEqual([]);
    });

    it("deleting an entry removes its selectors (foreign key cascade)", async () => {
      const ds = await open();
      const e = await ds.createEntry(input());
      expect(await h.count("entry_selectors")).toBe(1);
      await ds.deleteEntry(e.id);
      expect(await h.count("entry_selectors")).toBe(0);
    });

    it("returned records are copies", async () => {
      const ds = await open();
      const inp = input({ labels: { a: "1" } });
      const e = await ds.createEntry(inp);
      inp.selectors.push({ type: "x", value: "y" });
      inp.labels!.b = "2";
      e.selectors.push({ type: "z", value: "z" });
      const again = await ds.getEntry(e.id);
      expect(again!.selectors).toEqual([{ type: "unix", value: "uid:1000" }]);
      expect(again!.labels).toEqual({ a: "1" });
    });

    it("is visible to another datastore on the same database as soon as the write resolves", async () => {
      const a = await open();
      const b = await open();
      const e = await a.createEntry(input());
      expect(await b.getEntry(e.id)).toEqual(e);
      await b.deleteEntry(e.id);
      expect(await a.getEntry(e.id)).toBeUndefined();
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
      const ds = await open();
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
      await rejectsWith(ds.putCa({ ...x509, kind: "pgp" as never }), "QHX_INVALID_ARGUMENT");
      await rejectsWith(ds.putCa({ ...x509, status: "dead" as never }), "QHX_INVALID_ARGUMENT");
    });

    it("lists by createdAt, then insertion order", async () => {
      const ds = await open();
      const recs = ["z", "m", "a"].map((id, i) => ({ ...jwt, id, createdAt: i === 1 ? 5 : 9 }));
      for (const r of recs) await ds.putCa(r);
      expect((await ds.listCas()).map((c) => c.id)).toEqual(["m", "z", "a"]);
    });

    it("putCa replaces an existing record, including its chain", async () => {
      const ds = await open();
      await ds.putCa(x509);
      const replaced = {
        ...x509,
        status: "active" as const,
        upstreamChain: [bytes(5, 7)],
        certDer: bytes(10, 1),
      };
      await ds.putCa(replaced);
      expect(await ds.listCas()).toEqual([replaced]);
      expect(await h.count("ca_upstream_chain")).toBe(1);
    });

    it("deleteCa removes the record and its chain; deleting again is fine", async () => {
      const ds = await open();
      await ds.putCa(x509);
      await ds.deleteCa("ca-1");
      await ds.deleteCa("ca-1");
      expect(await ds.listCas()).toEqual([]);
      expect(await h.count("ca_upstream_chain")).toBe(0);
    });

    it("survives reopen byte-exact", async () => {
      const ds = await open();
      await ds.putCa(x509);
      await ds.putCa(jwt);
      await ds.close();
      expect(await (await open()).listCas()).toEqual([x509, jwt]);
    });
  });

  describe("bundles", () => {
    const rec = (sequence: number, td = "partner.com") => ({
      trustDomain: td,
      document: JSON.stringify({ keys: [], spiffe_sequence: sequence }),
      sequence,
      updatedAt: 1_800_000_000 + sequence,
    });

    it("puts, gets, lists (by trust domain, byte order) and deletes", async () => {
      const ds = await open();
      expect(await ds.getBundle("partner.com")).toBeUndefined();
      await ds.putBundle(rec(1));
      await ds.putBundle(rec(4, "another.org"));
      await ds.putBundle(rec(2, "Zeta.org"));
      await ds.putBundle(rec(3, "_under.org"));
      expect(await ds.getBundle("partner.com")).toEqual(rec(1));
      expect((await ds.listBundles()).map((b) => b.trustDomain)).toEqual([
        "Zeta.org",
        "_under.org",
        "another.org",
        "partner.com",
      ]);
      expect(await ds.deleteBundle("partner.com")).toBe(true);
      expect(await ds.deleteBundle("partner.com")).toBe(false);
      expect(await ds.listBundles()).toEqual([
        rec(2, "Zeta.org"),
        rec(3, "_under.org"),
        rec(4, "another.org"),
      ]);
    });

    it("refuses a sequence not greater than the stored one", async () => {
      const ds = await open();
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
      await rejectsWith(ds.putBundle({ ...rec(1), sequence: 1.5 }), "QHX_INVALID_ARGUMENT");
    });

    it("concurrent puts from two datastores: the greatest sequence stays, stale ones are refused", async () => {
      const a = await open();
      const b = await open();
      const rs = await Promise.allSettled([
        a.putBundle(rec(3)),
        b.putBundle(rec(7)),
        a.putBundle(rec(5)),
        b.putBundle(rec(1)),
      ]);
      expect(rs.filter((r) => r.status === "fulfilled").length).toBeGreaterThanOrEqual(1);
      for (const r of rs)
        if (r.status === "rejected") expect((r.reason as QhxError).code).toBe("QHX_CONFLICT");
      expect((await a.getBundle("partner.com"))!.sequence).toBe(7);
    });
  });

  describe("join tokens", () => {
    const tok = { tokenHash: "a".repeat(64), expiresAt: 1_800_000_600, createdAt: 1_800_000_000 };

    it("can be consumed exactly once", async () => {
      const ds = await open();
      await ds.createJoinToken(tok);
      await rejectsWith(ds.createJoinToken(tok), "QHX_ALREADY_EXISTS");
      expect(await ds.consumeJoinToken(tok.tokenHash, 1_800_000_100)).toEqual(tok);
      expect(await ds.consumeJoinToken(tok.tokenHash, 1_800_000_100)).toBeUndefined();
      expect(await ds.consumeJoinToken("b".repeat(64), 1_800_000_100)).toBeUndefined();
    });

    it("cannot be consumed at or after expiry, and is pruned", async () => {
      const ds = await open();
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

    it("fractional times compare as numbers: valid just before expiry, pruned just after", async () => {
      const ds = await open();
      await ds.createJoinToken(tok);
      await ds.createJoinToken({ ...tok, tokenHash: "d".repeat(64) });
      expect(await ds.consumeJoinToken(tok.tokenHash, tok.expiresAt + 0.5)).toBeUndefined();
      expect(await ds.consumeJoinToken(tok.tokenHash, tok.expiresAt - 0.5)).toEqual(tok);
      expect(await ds.pruneJoinTokens(tok.expiresAt - 0.5)).toBe(0);
      expect(await ds.pruneJoinTokens(tok.expiresAt + 0.5)).toBe(1);
    });

    it("carries an optional alias SPIFFE ID, returned once on consumption", async () => {
      const ds = await open();
      await ds.createJoinToken({ ...tok, spiffeId: "spiffe://td/n1" });
      await ds.createJoinToken({ ...tok, tokenHash: "b".repeat(64) });
      expect(await ds.consumeJoinToken("a".repeat(64), 10)).toEqual({ ...tok, spiffeId: "spiffe://td/n1" });
      const plain = await ds.consumeJoinToken("b".repeat(64), 10);
      expect(plain).toEqual({ ...tok, tokenHash: "b".repeat(64) });
      expect(plain && "spiffeId" in plain).toBe(false);
    });

    it("concurrent consumption from two datastores on one database: exactly one wins", async () => {
      const a = await open();
      const b = await open();
      for (let i = 0; i < 25; i++) {
        const hash = i.toString(16).padStart(64, "0");
        await a.createJoinToken({ ...tok, tokenHash: hash });
        const results = await Promise.all([
          a.consumeJoinToken(hash, 1_800_000_001),
          b.consumeJoinToken(hash, 1_800_000_001),
          a.consumeJoinToken(hash, 1_800_000_001),
          b.consumeJoinToken(hash, 1_800_000_001),
        ]);
        expect(results.filter((r) => r !== undefined)).toHaveLength(1);
      }
      expect(await h.count("join_tokens")).toBe(0);
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
      const ds = await open();
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

    it("a node without aliases reads back with an empty alias list; lists in byte order", async () => {
      const ds = await open();
      const { aliases: _drop, ...bare } = node;
      await ds.upsertNode({ ...bare, spiffeId: "spiffe://example.org/b" });
      await ds.upsertNode({ ...bare, spiffeId: "spiffe://example.org/B" });
      await ds.upsertNode({ ...bare, spiffeId: "spiffe://example.org/a" });
      expect((await ds.getNode("spiffe://example.org/b"))!.aliases).toEqual([]);
      expect((await ds.listNodes()).map((n) => n.spiffeId)).toEqual([
        "spiffe://example.org/B",
        "spiffe://example.org/a",
        "spiffe://example.org/b",
      ]);
    });
  });

  describe("notary log", () => {
    it("appends batches with their heads; reads entries, hashes and heads back", async () => {
      const ds = await open();
      expect(await ds.getLogHead()).toBeUndefined();
      expect(await ds.logHashes()).toEqual([]);
      const b1 = logBatch(0, 3);
      const b2 = logBatch(3, 2);
      await ds.appendLog(b1.entries, b1.head);
      await ds.appendLog(b2.entries, b2.head);
      const all = [...b1.entries, ...b2.entries];
      expect(await ds.logHashes()).toEqual(
        all.map((e) => ({ leafHash: e.leafHash, statementHash: e.statementHash })),
      );
      expect(await ds.getLogEntry(4)).toEqual(all[4]);
      expect(await ds.getLogEntry(5)).toBeUndefined();
      expect(await ds.findLogEntry(all[1]!.statementHash)).toEqual(all[1]);
      expect(await ds.findLogEntry(new Uint8Array(32))).toBeUndefined();
      expect(await ds.getLogHead()).toEqual(b2.head);
      expect(await ds.getLogHead(3)).toEqual(b1.head);
      expect(await ds.getLogHead(4)).toBeUndefined();
      const got = (await ds.getLogEntry(0))!;
      expect(got.leafHash).toBeInstanceOf(Uint8Array);
      expect(got.statement).toBeInstanceOf(Uint8Array);
    });

    it("lists with fromIndex, signer, peer and limit filters, in leaf order", async () => {
      const ds = await open();
      const b = logBatch(0, 12);
      await ds.appendLog(b.entries, b.head);
      const idx = async (f: Parameters<typeof ds.listLogEntries>[0]) =>
        (await ds.listLogEntries(f)).map((e) => e.leafIndex);
      expect(await idx({})).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      expect(await idx({ fromIndex: 9 })).toEqual([9, 10, 11]);
      expect(await idx({ limit: 2 })).toEqual([0, 1]);
      expect(await idx({ limit: 0 })).toEqual([]);
      expect(await idx({ signerId: "spiffe://example.org/signer/1" })).toEqual([1, 4, 7, 10]);
      expect(await idx({ peerId: "spiffe://example.org/peer/0", fromIndex: 5, limit: 2 })).toEqual([6, 8]);
      expect(
        await idx({ signerId: "spiffe://example.org/signer/0", peerId: "spiffe://example.org/peer/1" }),
      ).toEqual([3, 9]);
      expect(await idx({ signerId: "spiffe://nobody" })).toEqual([]);
    });

    it("refuses a batch that does not extend the log, and changes nothing", async () => {
      const ds = await open();
      const b1 = logBatch(0, 2);
      await ds.appendLog(b1.entries, b1.head);
      await rejectsWith(ds.appendLog(logBatch(0, 1, "y").entries, logBatch(0, 1, "y").head), "QHX_CONFLICT");
      await rejectsWith(ds.appendLog(logBatch(3, 1).entries, logBatch(3, 1).head), "QHX_CONFLICT");
      const gap = logBatch(2, 2);
      gap.entries[1]!.leafIndex = 5;
      await rejectsWith(ds.appendLog(gap.entries, gap.head), "QHX_CONFLICT");
      const badHead = logBatch(2, 2);
      badHead.head.treeSize = 5;
      await rejectsWith(ds.appendLog(badHead.entries, badHead.head), "QHX_CONFLICT");
      // a statement already in the log is a duplicate
      const dup = logBatch(2, 1);
      dup.entries[0]!.statementHash = b1.entries[0]!.statementHash;
      await rejectsWith(ds.appendLog(dup.entries, dup.head), "QHX_ALREADY_EXISTS");
      expect((await ds.logHashes()).length).toBe(2);
      expect(await h.count("log_heads")).toBe(1);
      expect(await ds.getLogHead()).toEqual(b1.head);
    });

    it("two datastores appending at once keep the log gapless and ordered", async () => {
      const a = await open();
      const b = await open();
      /** A writer that, like the notary, appends at the size it last saw and retries on conflict. */
      const writer = async (ds: Datastore, tag: string, batches: number) => {
        let conflicts = 0;
        for (let done = 0; done < batches;) {
          const size = (await ds.getLogHead())?.treeSize ?? 0;
          const batch = logBatch(size, 1 + (done % 3), `${tag}${done}`);
          try {
            await ds.appendLog(batch.entries, batch.head);
            done++;
          } catch (e) {
            if ((e as QhxError).code !== "QHX_CONFLICT") throw e;
            conflicts++;
          }
        }
        return conflicts;
      };
      await Promise.all([writer(a, "a", 15), writer(b, "b", 15)]);
      const entries = await a.listLogEntries();
      expect(entries.map((e) => e.leafIndex)).toEqual(entries.map((_, i) => i));
      expect(entries).toHaveLength(2 * (5 * (1 + 2 + 3)));
      // each head covers exactly the entries appended with it
      const head = (await b.getLogHead())!;
      expect(head.treeSize).toBe(entries.length);
      for (const e of entries) expect(await b.getLogHead(e.treeSize)).toBeDefined();
    });
  });

  describe("federation relationships", () => {
    const rel = (td: string) => ({
      trustDomain: td,
      bundleEndpointUrl: `https://${td}/`,
      profile: "https_spiffe" as const,
      endpointSpiffeId: `spiffe://${td}/qhx/server`,
      webTrustRoots: null,
      createdAt: 100,
      updatedAt: 100,
    });

    it("concurrent creation of the same relationship: one wins, one QHX_ALREADY_EXISTS", async () => {
      const a = await open();
      const b = await open();
      const rs = await Promise.allSettled([
        a.createFederationRelationship(rel("x.test")),
        b.createFederationRelationship(rel("x.test")),
      ]);
      expect(rs.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
      const lost = rs.find((r) => r.status === "rejected") as PromiseRejectedResult;
      expect((lost.reason as QhxError).code).toBe("QHX_ALREADY_EXISTS");
    });

    it("a refused creation stores nothing, not even the initial bundle", async () => {
      const ds = await open();
      await ds.createFederationRelationship(rel("x.test"));
      await rejectsWith(
        ds.createFederationRelationship(rel("x.test"), {
          trustDomain: "x.test",
          document: "{}",
          sequence: 1,
          updatedAt: 1,
        }),
        "QHX_ALREADY_EXISTS",
      );
      expect(await ds.getBundle("x.test")).toBeUndefined();
      await rejectsWith(
        ds.updateFederationRelationship("x.test", { profile: "ftp" as never }, 5),
        "QHX_INVALID_ARGUMENT",
      );
    });
  });

  describe("closing", () => {
    it("fails calls after close with QHX_DATASTORE_CLOSED; close is idempotent", async () => {
      const ds = await open();
      await ds.close();
      await ds.close();
      await rejectsWith(ds.listEntries(), "QHX_DATASTORE_CLOSED");
      await rejectsWith(ds.createEntry(input()), "QHX_DATASTORE_CLOSED");
    });

    it("persists across reopen", async () => {
      const ds = await open();
      const e = await ds.createEntry(input());
      await ds.putBundle({ trustDomain: "p.com", document: "{}", sequence: 1, updatedAt: 1 });
      await ds.close();
      const again = await open();
      expect(await again.getEntry(e.id)).toEqual(e);
      expect(await again.getBundle("p.com")).toMatchObject({ sequence: 1 });
    });
  });
}
