/**
 * Receipts end to end in process: statements signed with SVID keys of every algorithm, admitted by a
 * Notary on a real SQLite datastore, exported as transparent statements and verified offline — after
 * the SVID and its CA expired — and every tampering, each caught by the check that names it.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KeyAlg } from "../../host/core/alg.ts";
import { signCheckpoint, verifyCheckpoint } from "../../host/provenance/checkpoint.ts";
import { type CborValue, decodeCbor, encodeCbor, Tagged } from "../../host/provenance/cbor.ts";
import { decodeSign1, encodeSign1, HEADER, signSign1 } from "../../host/provenance/cose.ts";
import {
  claimsFromRecord,
  decodeClaims,
  decodeNotaryReceipt,
  encodeClaims,
  encodeNotaryReceipt,
  LABEL_ADMITTED_AT,
  LABEL_CONSISTENCY,
  signStatement,
} from "../../host/provenance/receipt.ts";
import {
  makeTrust,
  ReceiptCheckError,
  type TrustMaterial,
  verifyReceipt,
} from "../../host/provenance/verify.ts";
import {
  DAY,
  HOUR,
  makePki,
  makeRecord,
  makeSvid,
  openTestNotary,
  type Pki,
  type Svid,
  T0,
  type TestNotary,
  TD,
} from "./helpers.ts";

let pki: Pki;
let tn: TestNotary;
let web: Svid;
let db: Svid;
let trust: TrustMaterial;
const LATER = new Date(T0 + 3 * 365 * DAY); // SVID (1 h) and CA (30 days) long expired

beforeAll(async () => {
  pki = makePki();
  tn = await openTestNotary(pki);
  web = makeSvid(pki, `spiffe://${TD}/ns/demo/web`);
  db = makeSvid(pki, `spiffe://${TD}/ns/demo/db`);
  trust = makeTrust([pki.bundle], tn.notary.publicKey);
});

afterAll(async () => {
  await tn.close();
});

function expectCheck(fn: () => unknown, check: string, code?: string | RegExp): ReceiptCheckError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ReceiptCheckError);
    const r = e as ReceiptCheckError;
    expect(r.check, r.message).toBe(check);
    if (typeof code === "string") expect(r.code).toBe(code);
    else if (code) expect(r.message).toMatch(code);
    return r;
  }
  throw new Error(`expected check ${check} to fail`);
}

async function logged(svid: Svid = web, peer: Svid = db): Promise<{ index: number; file: Uint8Array }> {
  const stmt = signStatement(claimsFromRecord(makeRecord(svid, peer)), svid.key, svid.chainDer);
  const r = await tn.notary.submit(stmt, svid.id);
  return { index: r.index, file: await tn.notary.exportEntry(r.index) };
}

describe("receipt round trip", () => {
  it.each(["ec-p256", "ec-p384", "ed25519", "ml-dsa-44", "ml-dsa-65", "ml-dsa-87"] as KeyAlg[])(
    "%s: admitted, exported, verified years after the SVID and the CA expired",
    async (alg) => {
      const svid = makeSvid(pki, `spiffe://${TD}/ns/demo/${alg}`, alg);
      const rec = makeRecord(svid, db, {
        decision: "deny",
        reason: "no policy permits",
        policyVersion: null,
      });
      const stmt = signStatement(claimsFromRecord(rec), svid.key, svid.chainDer);
      const r = await tn.notary.submit(stmt, svid.id);
      const file = await tn.notary.exportEntry(r.index);
      const v = verifyReceipt(file, trust, { now: LATER });
      expect(v.spiffeId).toBe(svid.id);
      expect(v.leafIndex).toBe(r.index);
      expect(v.claims.decision).toBe("deny");
      expect(v.claims.policyVersion).toBeNull();
      expect(v.claims.peer.id).toBe(db.id);
      expect(Buffer.from(v.claims.request.sha256).toString("hex")).toBe(rec.requestSha256);
      expect(v.claims.response.bytes).toBe(rec.responseBytes);
      expect(v.admittedAt.getTime()).toBe(T0 + 10 * 60_000);
      expect(v.svidNotAfter.getTime()).toBeLessThan(LATER.getTime());
      expect(v.proved.map((p) => p.check)).toEqual([
        "statement",
        "signature",
        "claims",
        "inclusion",
        "tree-head",
        "svid-chain",
        "timing",
      ]);
    },
  );

  it("the streamed statement hash is the hash of the canonical statement", () => {
    for (const alg of ["ec-p256", "ml-dsa-65"] as KeyAlg[]) {
      const svid = makeSvid(pki, web.id, alg);
      const msg = decodeSign1(signStatement(claimsFromRecord(makeRecord(svid, db)), svid.key, svid.chainDer));
      const hx = (b: Uint8Array) => Buffer.from(b).toString("hex");
      expect(hx(receiptMod.statementHash(msg))).toBe(hx(sha(receiptMod.canonicalStatement(msg))));
    }
  });

  it("a resubmitted statement gets its existing receipt, not a second entry", async () => {
    const stmt = signStatement(claimsFromRecord(makeRecord(web, db)), web.key, web.chainDer);
    const a = await tn.notary.submit(stmt, web.id);
    const size = tn.notary.size;
    const [b, c] = await Promise.all([tn.notary.submit(stmt, web.id), tn.notary.submit(stmt)]);
    expect(b.index).toBe(a.index);
    expect(c.index).toBe(a.index);
    expect(b.existing).toBe(true);
    expect(tn.notary.size).toBe(size);
  });

  it("concurrent appends are group-committed under one tree head and every proof verifies", async () => {
    const before = tn.notary.size;
    const stmts = Array.from({ length: 150 }, () =>
      signStatement(claimsFromRecord(makeRecord(web, db)), web.key, web.chainDer),
    );
    const results = await Promise.all(stmts.map((s) => tn.notary.submit(s, web.id)));
    const sizes = new Set(results.map((r) => r.treeSize));
    expect(sizes.size).toBeLessThan(10); // batched, not one head per append
    expect(new Set(results.map((r) => r.index)).size).toBe(150);
    expect(tn.notary.size).toBe(before + 150);
    for (const r of results.slice(0, 20)) {
      const v = verifyReceipt(await tn.notary.exportEntry(r.index), trust, { now: LATER });
      expect(v.leafIndex).toBe(r.index);
    }
    const heads = await Promise.all([...sizes].map((s) => tn.ds.getLogHead(s)));
    for (const h of heads)
      expect(verifyCheckpoint(h!.checkpoint, tn.notary.publicKey).size).toBe(h!.treeSize);
  });

  it("a reopened notary rebuilds the same tree from the datastore", async () => {
    const cp = await tn.notary.checkpoint();
    const { Notary } = await import("../../host/server/notary.ts");
    const again = await Notary.open(tn.core);
    expect(again.size).toBe(tn.notary.size);
    expect(Buffer.from((await again.checkpoint()).root).equals(Buffer.from(cp.root))).toBe(true);
    expect(again.publicKeyPem()).toBe(tn.notary.publicKeyPem());
  });
});

describe("consistency with a trusted checkpoint", () => {
  it("older and newer trusted checkpoints, with embedded or separate proofs", async () => {
    const first = await logged();
    const old = await tn.notary.checkpoint();
    const oldTrust = makeTrust([pki.bundle], tn.notary.publicKey, old.checkpoint);
    // receipt tree == checkpoint tree
    expect(verifyReceipt(first.file, oldTrust, { now: LATER }).proved.at(-1)!.check).toBe("consistency");
    const second = await logged();
    // receipt tree newer than the trusted checkpoint: needs a proof old → new
    const nr = decodeNotaryReceipt(
      decodeSign1(second.file).unprotected.get(HEADER.receipts)![0 as never] as never,
    );
    expectCheck(
      () => verifyReceipt(second.file, oldTrust, { now: LATER }),
      "consistency",
      "QHX_RECEIPT_NO_CONSISTENCY",
    );
    const proof = tn.notary.consistency(old.treeSize, nr.proof.treeSize);
    const v = verifyReceipt(second.file, oldTrust, {
      now: LATER,
      consistency: [{ first: old.treeSize, second: nr.proof.treeSize, path: proof }],
    });
    expect(v.proved.at(-1)!.detail).toMatch(/consistent/);
    // the first receipt exported later carries an embedded proof to the newest tree; trust the newest
    const newest = await tn.notary.checkpoint();
    const newTrust = makeTrust([pki.bundle], tn.notary.publicKey, newest.checkpoint);
    const exported = await tn.notary.exportEntry(first.index);
    expect(decodeSign1(exported).unprotected.get(LABEL_CONSISTENCY)).toBeDefined();
    expect(verifyReceipt(exported, newTrust, { now: LATER }).proved.map((p) => p.check)).toContain(
      "consistency",
    );
    // a bad proof is caught
    const bad = [{ first: old.treeSize, second: nr.proof.treeSize, path: proof.map((h) => sha(h)) }];
    expectCheck(
      () => verifyReceipt(second.file, oldTrust, { now: LATER, consistency: bad }),
      "consistency",
      "QHX_MERKLE_BAD_PROOF",
    );
  });

  it("a checkpoint of a forked log (same size, other root) is detected", async () => {
    const { file } = await logged();
    const cp = await tn.notary.checkpoint();
    const nr = decodeNotaryReceipt(decodeSign1(file).unprotected.get(HEADER.receipts)![0 as never] as never);
    // the notary key signs a different root for the receipt's tree size: a split view
    const forged = signCheckpoint(
      { origin: tn.notary.origin, size: nr.proof.treeSize, root: sha(cp.root) },
      keyOf(tn),
    );
    const forkTrust = makeTrust([pki.bundle], tn.notary.publicKey, forged);
    expectCheck(() => verifyReceipt(file, forkTrust, { now: LATER }), "consistency", /forked/);
  });
});

function sha(b: Uint8Array): Uint8Array {
  return new Uint8Array(crypto.createHash("sha256").update(b).digest());
}

function keyOf(t: TestNotary): crypto.KeyObject {
  return crypto.createPrivateKey(fs.readFileSync(`${t.dir}/notary/signing-key.pem`));
}

/** Rebuild a transparent statement with one part changed. */
function mutate(
  file: Uint8Array,
  f: (p: {
    prot: Uint8Array;
    unprot: Map<CborValue, CborValue>;
    payload: Uint8Array;
    sig: Uint8Array;
  }) => void,
): Uint8Array {
  const m = decodeSign1(file);
  const p = { prot: m.protectedBytes, unprot: m.unprotected, payload: m.payload!, sig: m.signature };
  f(p);
  return encodeSign1({ protectedBytes: p.prot, unprotected: p.unprot, payload: p.payload, signature: p.sig });
}

/** Change the notary receipt inside a transparent statement. */
function mutateReceipt(
  file: Uint8Array,
  f: (r: ReturnType<typeof decodeNotaryReceipt>) => Uint8Array,
): Uint8Array {
  return mutate(file, (p) => {
    const r = decodeNotaryReceipt((p.unprot.get(HEADER.receipts) as Uint8Array[])[0]!);
    p.unprot.set(HEADER.receipts, [f(r)]);
  });
}

const flip = (b: Uint8Array, i: number) => {
  const c = new Uint8Array(b);
  c[i]! ^= 0x01;
  return c;
};

describe("tampering is detected, each by its check", () => {
  let file: Uint8Array;
  beforeAll(async () => {
    await logged(); // so that the receipt below is not leaf 0
    file = (await logged()).file;
    verifyReceipt(file, trust, { now: LATER });
  });

  it("payload: any claim changed", () => {
    const m = decodeSign1(file);
    const c = decodeClaims(m.payload!);
    for (const change of [
      () => (c.decision = c.decision === "allow" ? "deny" : "allow"),
      () => (c.request.bytes += 1),
      () => (c.peer.id = `spiffe://${TD}/ns/demo/other`),
      () => (c.time.end += 1),
    ]) {
      change();
      const bad = mutate(file, (p) => (p.payload = encodeClaims(c)));
      expectCheck(() => verifyReceipt(bad, trust, { now: LATER }), "signature", "QHX_COSE_BAD_SIGNATURE");
    }
    expectCheck(
      () =>
        verifyReceipt(
          mutate(file, (p) => (p.payload = flip(p.payload, 20))),
          trust,
        ),
      "signature",
    );
  });

  it("signature: flipped bit, truncated, another key's", () => {
    expectCheck(
      () =>
        verifyReceipt(
          mutate(file, (p) => (p.sig = flip(p.sig, 5))),
          trust,
        ),
      "signature",
      "QHX_COSE_BAD_SIGNATURE",
    );
    expectCheck(
      () =>
        verifyReceipt(
          mutate(file, (p) => (p.sig = p.sig.subarray(1))),
          trust,
        ),
      "signature",
      "QHX_COSE_BAD_SIGNATURE",
    );
    const other = makeSvid(pki, web.id);
    const resigned = signStatement(decodeClaims(decodeSign1(file).payload!), other.key, web.chainDer);
    const m = decodeSign1(resigned);
    expectCheck(
      () =>
        verifyReceipt(
          mutate(file, (p) => (p.sig = m.signature)),
          trust,
        ),
      "signature",
    );
  });

  it("header: algorithm, content type, x5chain swapped", () => {
    const prot = decodeSign1(file).protected;
    const reenc = (k: number, v: CborValue | undefined) => {
      const h = new Map(prot);
      if (v === undefined) h.delete(k);
      else h.set(k, v);
      return mutate(file, (p) => (p.prot = encodeCbor(h)));
    };
    expectCheck(() => verifyReceipt(reenc(HEADER.alg, -35), trust), "signature", "QHX_COSE_ALG_MISMATCH");
    expectCheck(() => verifyReceipt(reenc(HEADER.alg, -8), trust), "signature", "QHX_COSE_ALG_MISMATCH");
    expectCheck(() => verifyReceipt(reenc(HEADER.contentType, "application/json"), trust), "statement");
    expectCheck(() => verifyReceipt(reenc(HEADER.x5chain, undefined), trust), "statement", /x5chain/);
    expectCheck(() => verifyReceipt(reenc(HEADER.x5chain, db.chainDer[0]!), trust), "signature");
    expectCheck(
      () => verifyReceipt(reenc(HEADER.x5chain, [web.chainDer[0]!]), trust),
      "statement",
      /2 or more/,
    );
    // a header moved to the unprotected side is refused
    expectCheck(
      () =>
        verifyReceipt(
          mutate(file, (p) => p.unprot.set(HEADER.alg, -7)),
          trust,
        ),
      "statement",
      /both protected and unprotected/,
    );
  });

  it("claims: signer fingerprint or SPIFFE ID not the x5chain leaf's", () => {
    for (const change of ["fp", "id"] as const) {
      const rec = makeRecord(web, db);
      if (change === "fp") rec.localCertSha256 = "00".repeat(32);
      else rec.localId = db.id;
      const stmt = signStatement(claimsFromRecord(rec), web.key, web.chainDer);
      // forge a receipt around it with the notary's key (the notary itself would refuse it)
      const file2 = wrapWithForgedReceipt(stmt);
      expectCheck(
        () => verifyReceipt(file2, trust, { now: LATER }),
        change === "fp" ? "claims" : "svid-chain",
        "QHX_RECEIPT_SIGNER_MISMATCH",
      );
    }
  });

  it("proof path: any flipped hash, dropped or added hash", () => {
    const r0 = decodeNotaryReceipt((decodeSign1(file).unprotected.get(HEADER.receipts) as Uint8Array[])[0]!);
    expect(r0.proof.path.length).toBeGreaterThan(0);
    for (let j = 0; j < r0.proof.path.length; j++) {
      const bad = mutateReceipt(file, (r) =>
        reencode(r, { path: r.proof.path.map((h, i) => (i === j ? flip(h, 31) : h)) }),
      );
      expectCheck(() => verifyReceipt(bad, trust, { now: LATER }), "tree-head", "QHX_COSE_BAD_SIGNATURE");
    }
    expectCheck(
      () =>
        verifyReceipt(
          mutateReceipt(file, (r) => reencode(r, { path: r.proof.path.slice(1) })),
          trust,
        ),
      "inclusion",
      "QHX_MERKLE_BAD_PROOF",
    );
    expectCheck(
      () =>
        verifyReceipt(
          mutateReceipt(file, (r) => reencode(r, { path: [...r.proof.path, sha(new Uint8Array(1))] })),
          trust,
        ),
      "inclusion",
    );
  });

  it("tree size and leaf index", () => {
    expectCheck(
      () =>
        verifyReceipt(
          mutateReceipt(file, (r) => reencode(r, { treeSize: r.proof.treeSize * 4 })),
          trust,
        ),
      "inclusion",
    );
    expectCheck(
      () =>
        verifyReceipt(
          mutateReceipt(file, (r) => reencode(r, { leafIndex: r.proof.leafIndex - 1 })),
          trust,
        ),
      "tree-head",
    );
    expectCheck(
      () =>
        verifyReceipt(
          mutateReceipt(file, (r) => reencode(r, { leafIndex: r.proof.treeSize })),
          trust,
        ),
      "inclusion",
    );
  });

  it("admission time and tree head signature", () => {
    expectCheck(
      () =>
        verifyReceipt(
          mutateReceipt(file, (r) => reencode(r, { admittedAt: r.admittedAt + 1 })),
          trust,
        ),
      "tree-head",
    );
    expectCheck(
      () =>
        verifyReceipt(
          mutateReceipt(file, (r) =>
            encodeNotaryReceipt({
              protectedBytes: r.msg.protectedBytes,
              signature: flip(r.msg.signature, 0),
              proof: r.proof,
              admittedAt: r.admittedAt,
            }),
          ),
          trust,
        ),
      "tree-head",
      "QHX_COSE_BAD_SIGNATURE",
    );
    expectCheck(
      () =>
        verifyReceipt(
          mutate(file, (p) => p.unprot.delete(HEADER.receipts)),
          trust,
        ),
      "inclusion",
      "QHX_RECEIPT_NOT_LOGGED",
    );
    expectCheck(
      () =>
        verifyReceipt(
          mutate(file, (p) => p.unprot.set(HEADER.receipts, [new Uint8Array([1, 2, 3])])),
          trust,
        ),
      "inclusion",
    );
  });

  it("wrong notary key, wrong trust bundle", () => {
    const otherNotary = crypto.generateKeyPairSync("ed25519").publicKey;
    expectCheck(
      () => verifyReceipt(file, makeTrust([pki.bundle], otherNotary), { now: LATER }),
      "tree-head",
      "QHX_RECEIPT_WRONG_NOTARY",
    );
    const other = makePki();
    expectCheck(
      () => verifyReceipt(file, makeTrust([other.bundle], tn.notary.publicKey), { now: LATER }),
      "svid-chain",
      "QHX_SVID_UNTRUSTED",
    );
    const otherTd = makePki("ec-p256", "other.example");
    expectCheck(
      () => verifyReceipt(file, makeTrust([otherTd.bundle], tn.notary.publicKey), { now: LATER }),
      "svid-chain",
      "QHX_SVID_NO_BUNDLE",
    );
  });

  it("timing: verifying before the admission is refused", () => {
    expectCheck(() => verifyReceipt(file, trust, { now: new Date(T0) }), "timing", "QHX_RECEIPT_TIME");
  });

  it("not a receipt at all", () => {
    expectCheck(() => verifyReceipt(new Uint8Array([0xa0]), trust), "statement", "QHX_COSE_MALFORMED");
    expectCheck(() => verifyReceipt(new Uint8Array(0), trust), "statement");
    expectCheck(
      () =>
        verifyReceipt(
          encodeCbor(new Tagged(17, [new Uint8Array(0), new Map(), null, new Uint8Array(0)])),
          trust,
        ),
      "statement",
      /tag 17/,
    );
    expectCheck(() => verifyReceipt(Buffer.concat([file, Buffer.of(0)]), trust), "statement");
  });

  function wrapWithForgedReceipt(stmt: Uint8Array): Uint8Array {
    // a one-leaf "log" signed by the notary key: isolates the claims/chain checks from the log checks
    const { receiptLeafHash, statementHash, transparentStatement, notaryProtectedHeader } = receiptMod;
    const at = T0 + 10 * 60_000;
    const root = receiptLeafHash(at, statementHash(decodeSign1(stmt)));
    const prot = notaryProtectedHeader(trust.notaryKid);
    const sig = coseMod.signSign1Bytes(keyOf(tn), -8, prot, root);
    return transparentStatement(
      stmt,
      encodeNotaryReceipt({
        protectedBytes: prot,
        signature: sig,
        proof: { treeSize: 1, leafIndex: 0, path: [] },
        admittedAt: at,
      }),
    );
  }
});

import * as coseMod from "../../host/provenance/cose.ts";
import * as receiptMod from "../../host/provenance/receipt.ts";

function reencode(
  r: ReturnType<typeof decodeNotaryReceipt>,
  o: { path?: Uint8Array[]; treeSize?: number; leafIndex?: number; admittedAt?: number },
): Uint8Array {
  return encodeNotaryReceipt({
    protectedBytes: r.msg.protectedBytes,
    signature: r.msg.signature,
    proof: {
      treeSize: o.treeSize ?? r.proof.treeSize,
      leafIndex: o.leafIndex ?? r.proof.leafIndex,
      path: o.path ?? r.proof.path,
    },
    admittedAt: o.admittedAt ?? r.admittedAt,
  });
}

describe("the notary refuses", () => {
  const submit = (stmt: Uint8Array, who?: string) => tn.notary.submit(stmt, who);
  const stmtOf = (s: Svid, o = {}) =>
    signStatement(claimsFromRecord(makeRecord(s, db, o)), s.key, s.chainDer);

  it("a statement signed by another workload than the submitter", async () => {
    await expect(submit(stmtOf(web), db.id)).rejects.toMatchObject({ code: "QHX_PERMISSION_DENIED" });
  });

  it("an SVID expired at submission time, or from another trust anchor", async () => {
    const short = makeSvid(pki, web.id, "ec-p256", T0 + 60_000);
    await expect(submit(stmtOf(short))).rejects.toThrow(/svid-chain: .*expired/);
    const other = makeSvid(makePki(), web.id);
    await expect(submit(stmtOf(other))).rejects.toThrow(/svid-chain/);
  });

  it("a bad signature, claims that do not name the signer, an exchange in the future", async () => {
    const good = decodeSign1(stmtOf(web));
    const bad = encodeSign1({
      protectedBytes: good.protectedBytes,
      unprotected: new Map(),
      payload: good.payload,
      signature: flip(good.signature, 3),
    });
    await expect(submit(bad)).rejects.toThrow(/signature/);
    await expect(submit(stmtOf(web, { localId: db.id }))).rejects.toThrow(/claims: signer.id/);
    await expect(submit(stmtOf(web, { localCertSha256: "11".repeat(32) }))).rejects.toThrow(
      /claims: signer.cert_sha256/,
    );
    await expect(submit(stmtOf(web, { endedAt: T0 + 2 * HOUR }))).rejects.toThrow(/timing/);
  });

  it("malformed statements: not COSE, wrong content type, claims with extra or missing fields", async () => {
    await expect(submit(new Uint8Array([1, 2, 3]))).rejects.toMatchObject({ code: "QHX_RECEIPT_REJECTED" });
    const other = signSign1({
      key: web.key,
      protected: new Map<CborValue, CborValue>([
        [HEADER.contentType, "text/plain"],
        [HEADER.x5chain, web.chainDer[0]!],
      ]),
      payload: new Uint8Array(3),
    });
    await expect(submit(other)).rejects.toThrow(/content type/);
    const claims = decodeCbor(encodeClaims(claimsFromRecord(makeRecord(web, db)))) as Map<
      CborValue,
      CborValue
    >;
    for (const change of [
      (m: Map<CborValue, CborValue>) => m.set("extra", 1),
      (m: Map<CborValue, CborValue>) => m.delete("decision"),
      (m: Map<CborValue, CborValue>) => m.set("v", 2),
      (m: Map<CborValue, CborValue>) => m.set("decision", "maybe"),
    ]) {
      const m = new Map(claims);
      change(m);
      const s = signSign1({
        key: web.key,
        protected: new Map<CborValue, CborValue>([
          [HEADER.contentType, "application/vnd.qhx.receipt+cbor"],
          [HEADER.x5chain, web.chainDer[0]!],
        ]),
        payload: encodeCbor(m),
      });
      await expect(submit(s)).rejects.toThrow(/claims/);
    }
  });

  it("a bundle rotated to other authorities invalidates admission of the old chain", async () => {
    const other = makePki();
    tn.setBundle(other.bundle);
    try {
      await expect(submit(stmtOf(web))).rejects.toThrow(/svid-chain/);
    } finally {
      tn.setBundle(pki.bundle);
    }
  });
});

describe("CBOR and COSE parsers refuse non-deterministic or malformed input", () => {
  it("CBOR", () => {
    for (const hex of [
      "1800",
      "a2616101616101",
      "a2616201616102",
      "f93c00",
      "9f01ff",
      "0102",
      "f7",
      "5f4101ff",
      "c11a00",
    ]) {
      expect(() => decodeCbor(Buffer.from(hex, "hex")), hex).toThrow();
    }
    expect(() => encodeCbor(1.5 as never)).toThrow(/integers/);
    expect(() => encodeCbor({ a: undefined } as never)).toThrow(/undefined/);
    expect(
      Buffer.from(
        encodeCbor(
          new Map<CborValue, CborValue>([
            [33, 1],
            [1, 2],
            [-1, 3],
            ["b", 4],
            ["aa", 5],
          ]),
        ),
      ).toString("hex"),
    ).toBe("a501021821012003616204626161" + "05");
  });

  it("COSE_Sign1 shapes", () => {
    const ok = decodeSign1(signStatement(claimsFromRecord(makeRecord(web, db)), web.key, web.chainDer));
    const enc = (a: CborValue) => encodeCbor(new Tagged(18, a));
    expect(() => decodeSign1(enc([ok.protectedBytes, new Map(), ok.payload]))).toThrow(/4 elements/);
    expect(() => decodeSign1(enc([new Uint8Array([1]), new Map(), ok.payload, ok.signature]))).toThrow(
      /protected header/,
    );
    expect(() => decodeSign1(enc([ok.protectedBytes, [], ok.payload, ok.signature]))).toThrow(/unprotected/);
    expect(() => decodeSign1(enc([ok.protectedBytes, new Map(), "text", ok.signature]))).toThrow(/payload/);
    expect(() =>
      decodeSign1(
        enc([
          encodeCbor(
            new Map<CborValue, CborValue>([
              [2, [1]],
              [1, -7],
            ]),
          ),
          new Map(),
          ok.payload,
          ok.signature,
        ]),
      ),
    ).toThrow(/crit/);
    expect(() =>
      decodeSign1(
        enc([encodeCbor(new Map<CborValue, CborValue>([[3, "x"]])), new Map(), ok.payload, ok.signature]),
      ),
    ).toThrow(/alg/);
  });

  it("checkpoints: malformed notes and wrong keys", () => {
    const key = keyOf(tn);
    const good = signCheckpoint({ origin: tn.notary.origin, size: 5, root: sha(new Uint8Array(1)) }, key);
    expect(verifyCheckpoint(good, tn.notary.publicKey).size).toBe(5);
    expect(() => verifyCheckpoint(good.replace("\n5\n", "\n6\n"), tn.notary.publicKey)).toThrow(
      /does not verify/,
    );
    expect(() => verifyCheckpoint(good, crypto.generateKeyPairSync("ed25519").publicKey)).toThrow(
      /no signature by the notary key/,
    );
    expect(() => verifyCheckpoint(good, tn.notary.publicKey, "other/origin")).toThrow(/origin/);
    expect(() => verifyCheckpoint(good.replace("\n\n", "\n"), tn.notary.publicKey)).toThrow(/blank line/);
    expect(() => verifyCheckpoint(good.replace("\n5\n", "\n05\n"), tn.notary.publicKey)).toThrow(/decimal/);
    expect(() => verifyCheckpoint(good.replace(/\n$/, ""), tn.notary.publicKey)).toThrow(/newline/);
    expect(() => verifyCheckpoint(good.replace("\u2014", "-"), tn.notary.publicKey)).toThrow(
      /signature line/,
    );
  });
});

void LABEL_ADMITTED_AT;
void HOUR;
