/**
 * RFC 9162 §2.1 Merkle trees: MerkleTree against (1) the published RFC 6962 reference tree
 * (transparency-dev/merkle vectors, vectors/rfc6962.json) and (2) a naive reference written here straight
 * from the RFC's definitions of MTH, PATH and SUBPROOF, for every tree size up to 48 and every index; and
 * the verifiers against every tampering of a proof.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  leafHash,
  MerkleTree,
  rootFromInclusionProof,
  verifyConsistency,
  verifyInclusion,
} from "../../host/provenance/merkle.ts";

const V = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, "vectors", "rfc6962.json"), "utf8")) as {
  leafInputs: string[];
  nodeHashes: string[][];
  roots: string[];
  inclusion: { index: number; size: number; path: string[] }[];
  consistency: { first: number; second: number; path: string[] }[];
};
const unhex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

// ---- the naive reference, from RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1 (inputs are leaf *inputs*)
const H = (...p: Uint8Array[]) => {
  const h = crypto.createHash("sha256");
  for (const x of p) h.update(x);
  return new Uint8Array(h.digest());
};
const k = (n: number) => 2 ** Math.ceil(Math.log2(n) - 1); // largest power of 2 < n, n > 1
function MTH(D: Uint8Array[]): Uint8Array {
  const n = D.length;
  if (n === 0) return H();
  if (n === 1) return H(Uint8Array.of(0), D[0]!);
  return H(Uint8Array.of(1), MTH(D.slice(0, k(n))), MTH(D.slice(k(n))));
}
function PATH(m: number, D: Uint8Array[]): Uint8Array[] {
  const n = D.length;
  if (n === 1) return [];
  return m < k(n)
    ? [...PATH(m, D.slice(0, k(n))), MTH(D.slice(k(n)))]
    : [...PATH(m - k(n), D.slice(k(n))), MTH(D.slice(0, k(n)))];
}
function SUBPROOF(m: number, D: Uint8Array[], b: boolean): Uint8Array[] {
  const n = D.length;
  if (m === n) return b ? [] : [MTH(D)];
  return m <= k(n)
    ? [...SUBPROOF(m, D.slice(0, k(n)), b), MTH(D.slice(k(n)))]
    : [...SUBPROOF(m - k(n), D.slice(k(n)), false), MTH(D.slice(0, k(n)))];
}
const PROOF = (m: number, D: Uint8Array[]) => SUBPROOF(m, D, true);

function treeOf(inputs: Uint8Array[]): MerkleTree {
  const t = new MerkleTree();
  for (const d of inputs) t.appendLeaf(d);
  return t;
}

describe("RFC 6962 reference tree (published vectors)", () => {
  const inputs = V.leafInputs.map(unhex);
  const t = treeOf(inputs);

  it("matches every published root, 0..8", () => {
    for (let n = 0; n <= 8; n++) expect(hex(t.root(n)), `size ${n}`).toBe(V.roots[n]);
  });

  it("matches every published complete-subtree hash", () => {
    V.nodeHashes.forEach((level, h) =>
      level.forEach((want, i) => expect(hex(t.subtreeHash(i * 2 ** h, (i + 1) * 2 ** h))).toBe(want)),
    );
  });

  it("produces and verifies the published inclusion paths", () => {
    for (const c of V.inclusion) {
      expect(t.inclusionProof(c.index, c.size).map(hex)).toEqual(c.path);
      const leaf = leafHash(inputs[c.index]!);
      expect(verifyInclusion(c.index, c.size, leaf, c.path.map(unhex), unhex(V.roots[c.size]!))).toBe(true);
    }
  });

  it("produces and verifies the published consistency proofs", () => {
    for (const c of V.consistency) {
      expect(t.consistencyProof(c.first, c.second).map(hex)).toEqual(c.path);
      expect(() =>
        verifyConsistency(
          c.first,
          c.second,
          unhex(V.roots[c.first]!),
          unhex(V.roots[c.second]!),
          c.path.map(unhex),
        ),
      ).not.toThrow();
    }
  });
});

describe("against the naive RFC 9162 reference", () => {
  const N = 48;
  const inputs = Array.from({ length: N }, (_, i) =>
    crypto
      .createHash("sha256")
      .update(`leaf ${i}`)
      .digest()
      .subarray(0, i % 13),
  );
  const t = treeOf(inputs);

  it("roots, inclusion paths and consistency proofs agree for every size and index", () => {
    for (let n = 1; n <= N; n++) {
      const D = inputs.slice(0, n);
      const root = MTH(D);
      expect(hex(t.root(n))).toBe(hex(root));
      for (let m = 0; m < n; m++) {
        const p = t.inclusionProof(m, n);
        expect(p.map(hex)).toEqual(PATH(m, D).map(hex));
        expect(hex(rootFromInclusionProof(m, n, leafHash(D[m]!), p))).toBe(hex(root));
      }
      for (let m = 1; m <= n; m++) {
        const p = t.consistencyProof(m, n);
        expect(p.map(hex)).toEqual(m === n ? [] : PROOF(m, D).map(hex));
        verifyConsistency(m, n, MTH(inputs.slice(0, m)), root, p);
      }
    }
  });

  it("truncate restores every earlier state", () => {
    const u = treeOf(inputs.slice(0, 40));
    u.truncate(23);
    expect(u.size).toBe(23);
    expect(hex(u.root())).toBe(hex(MTH(inputs.slice(0, 23))));
    for (const d of inputs.slice(23, 31)) u.appendLeaf(d);
    expect(hex(u.root())).toBe(hex(MTH(inputs.slice(0, 31))));
  });
});

describe("tampering is detected", () => {
  const inputs = Array.from({ length: 21 }, (_, i) => Uint8Array.of(i, i));
  const t = treeOf(inputs);
  const n = 21;
  const root = t.root(n);

  it("inclusion: every flipped bit, wrong index, size, leaf, truncated or extended path", () => {
    for (const m of [0, 7, 12, 20]) {
      const leaf = leafHash(inputs[m]!);
      const p = t.inclusionProof(m, n);
      expect(verifyInclusion(m, n, leaf, p, root)).toBe(true);
      for (let j = 0; j < p.length; j++) {
        for (const bit of [0, 77, 255]) {
          const q = p.map((x) => new Uint8Array(x));
          q[j]![bit >> 3]! ^= 1 << (bit & 7);
          expect(verifyInclusion(m, n, leaf, q, root)).toBe(false);
        }
      }
      expect(verifyInclusion(m === 0 ? 1 : m - 1, n, leaf, p, root)).toBe(false);
      // a size whose tree has another depth (sizes of the same shape are told apart by the signed head)
      expect(verifyInclusion(m, 2 * n, leaf, p, root)).toBe(false);
      expect(verifyInclusion(m, 16, leaf, p, root)).toBe(false);
      expect(verifyInclusion(m, n, leafHash(Uint8Array.of(99)), p, root)).toBe(false);
      expect(verifyInclusion(m, n, leaf, p.slice(0, -1), root)).toBe(false);
      expect(verifyInclusion(m, n, leaf, [...p, root], root)).toBe(false);
      expect(verifyInclusion(m, n, leaf, p, t.root(n - 1))).toBe(false);
      expect(verifyInclusion(n, n, leaf, p, root)).toBe(false);
      expect(verifyInclusion(-1, n, leaf, p, root)).toBe(false);
      expect(verifyInclusion(m, n, leaf, [new Uint8Array(31), ...p.slice(1)], root)).toBe(false);
    }
  });

  it("consistency: every flipped hash, wrong sizes or roots, short or long proofs", () => {
    for (const [a, b] of [
      [3, 21],
      [8, 21],
      [13, 17],
      [1, 2],
    ] as const) {
      const p = t.consistencyProof(a, b);
      const ra = t.root(a);
      const rb = t.root(b);
      verifyConsistency(a, b, ra, rb, p);
      for (let j = 0; j < p.length; j++) {
        const q = p.map((x) => new Uint8Array(x));
        q[j]![5]! ^= 0x40;
        expect(() => verifyConsistency(a, b, ra, rb, q)).toThrow(/QHX|consistency/);
      }
      expect(() => verifyConsistency(a, b, rb, ra, p)).toThrow();
      expect(() => verifyConsistency(a, 2 * b, ra, rb, p)).toThrow();
      expect(() => verifyConsistency(a + 1, b, ra, rb, p)).toThrow();
      expect(() => verifyConsistency(a, b, ra, rb, p.slice(0, -1))).toThrow();
      expect(() => verifyConsistency(a, b, ra, rb, [...p, rb])).toThrow();
      expect(() => verifyConsistency(a, b, ra, rb, [])).toThrow();
    }
    expect(() => verifyConsistency(5, 3, t.root(5), t.root(3), [])).toThrow(/must not exceed/);
    expect(() => verifyConsistency(5, 5, t.root(5), t.root(6), [])).toThrow(/different roots/);
    expect(() => verifyConsistency(5, 5, t.root(5), t.root(5), [t.root(1)])).toThrow(/empty proof/);
    verifyConsistency(5, 5, t.root(5), t.root(5), []);
  });

  it("rejects out-of-range arguments to the tree", () => {
    expect(() => t.inclusionProof(21, 21)).toThrow(/not in a tree/);
    expect(() => t.root(22)).toThrow(/tree size/);
    expect(() => t.consistencyProof(5, 22)).toThrow(/tree size/);
    expect(() => t.appendHash(new Uint8Array(31))).toThrow(/32 bytes/);
  });
});
