/**
 * RFC 9162 (Certificate Transparency 2.0) §2.1 Merkle trees over SHA-256: leaf and node hashing, audit
 * (inclusion) paths and consistency proofs, and their verification (§2.1.3.2, §2.1.4.2).
 *
 *   MTH({})     = SHA-256()
 *   MTH({d0})   = SHA-256(0x00 || d0)
 *   MTH(D[n])   = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])),  k the largest power of 2 < n
 *
 * MerkleTree keeps every leaf hash and every complete (power-of-two, aligned) subtree hash, so an append
 * costs O(1) amortized hashes and any root, path or consistency proof O(log² n) at worst.
 */
import crypto from "node:crypto";
import { QhxError } from "../core/errors.ts";

export const HASH_SIZE = 32;
const LEAF_PREFIX = Buffer.of(0x00);
const NODE_PREFIX = Buffer.of(0x01);

export function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = crypto.createHash("sha256");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

export function leafHash(leafInput: Uint8Array): Uint8Array {
  return sha256(LEAF_PREFIX, leafInput);
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(NODE_PREFIX, left, right);
}

export const EMPTY_ROOT = sha256();

/** Largest power of two strictly less than n (n ≥ 2). */
export function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function isPow2(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

function log2(n: number): number {
  return 31 - Math.clz32(n);
}

export class MerkleError extends QhxError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = "MerkleError";
  }
}

/** An append-only RFC 9162 tree in memory (leaf hashes in, roots and proofs out). */
export class MerkleTree {
  /** levels[h][i]: hash of the complete subtree of 2^h leaves starting at leaf i·2^h */
  private readonly levels: Uint8Array[][] = [[]];

  get size(): number {
    return this.levels[0]!.length;
  }

  /** Append a leaf by its leaf hash (SHA-256(0x00 || input)). */
  appendHash(h: Uint8Array): number {
    if (h.length !== HASH_SIZE) throw new MerkleError("QHX_INVALID_ARGUMENT", "a leaf hash has 32 bytes");
    const index = this.levels[0]!.length;
    this.levels[0]!.push(h);
    let level = 0;
    let i = index;
    while (i % 2 === 1) {
      const row = this.levels[level]!;
      const parent = nodeHash(row[i - 1]!, row[i]!);
      level++;
      i = (i - 1) / 2;
      (this.levels[level] ??= []).push(parent);
    }
    return index;
  }

  appendLeaf(input: Uint8Array): number {
    return this.appendHash(leafHash(input));
  }

  /** Drop leaves back to `size` (undo an append whose commit failed). */
  truncate(size: number): void {
    if (size > this.size) throw new MerkleError("QHX_INVALID_ARGUMENT", "truncate beyond the end");
    for (let h = 0; h < this.levels.length; h++) this.levels[h]!.length = Math.floor(size / 2 ** h);
    this.edges.clear();
  }

  leafHashAt(i: number): Uint8Array {
    const h = this.levels[0]![i];
    if (!h) throw new MerkleError("QHX_NOT_FOUND", `no leaf ${i}`);
    return h;
  }

  /**
   * Hashes of incomplete (right-edge) subtrees computed so far, by `start,end`: immutable once computed
   * (leaves never change), dropped on truncate. Proofs of one batch share most of them.
   */
  private readonly edges = new Map<string, Uint8Array>();

  /** MTH(D[start:end]) for end ≤ size. */
  subtreeHash(start: number, end: number): Uint8Array {
    const n = end - start;
    if (n === 0) return EMPTY_ROOT;
    if (isPow2(n) && start % n === 0) return this.levels[log2(n)]![start / n]!;
    const key = `${start},${end}`;
    let h = this.edges.get(key);
    if (!h) {
      const k = splitPoint(n);
      h = nodeHash(this.subtreeHash(start, start + k), this.subtreeHash(start + k, end));
      if (this.edges.size >= 65_536) this.edges.clear();
      this.edges.set(key, h);
    }
    return h;
  }

  /** MTH of the tree of the first `size` leaves (default: all). */
  root(size = this.size): Uint8Array {
    this.checkSize(size);
    return this.subtreeHash(0, size);
  }

  private checkSize(size: number): void {
    if (!Number.isSafeInteger(size) || size < 0 || size > this.size) {
      throw new MerkleError("QHX_INVALID_ARGUMENT", `tree size ${size} is not between 0 and ${this.size}`);
    }
  }

  /** PATH(m, D[0:size]): the audit path of leaf m in the tree of `size` leaves (§2.1.3.1). */
  inclusionProof(m: number, size = this.size): Uint8Array[] {
    this.checkSize(size);
    if (!Number.isSafeInteger(m) || m < 0 || m >= size) {
      throw new MerkleError("QHX_INVALID_ARGUMENT", `leaf index ${m} is not in a tree of ${size}`);
    }
    const out: Uint8Array[] = [];
    const path = (m: number, start: number, end: number): void => {
      const n = end - start;
      if (n === 1) return;
      const k = splitPoint(n);
      if (m < k) {
        path(m, start, start + k);
        out.push(this.subtreeHash(start + k, end));
      } else {
        path(m - k, start + k, end);
        out.push(this.subtreeHash(start, start + k));
      }
    };
    path(m, 0, size);
    return out;
  }

  /** PROOF(m, D[0:n]): consistency proof between tree sizes m ≤ n (§2.1.4.1). */
  consistencyProof(m: number, n = this.size): Uint8Array[] {
    this.checkSize(n);
    if (!Number.isSafeInteger(m) || m < 0 || m > n) {
      throw new MerkleError("QHX_INVALID_ARGUMENT", `tree size ${m} is not between 0 and ${n}`);
    }
    if (m === 0 || m === n) return [];
    const out: Uint8Array[] = [];
    const sub = (m: number, start: number, end: number, b: boolean): void => {
      const n = end - start;
      if (m === n) {
        if (!b) out.push(this.subtreeHash(start, end));
        return;
      }
      const k = splitPoint(n);
      if (m <= k) {
        sub(m, start, start + k, b);
        out.push(this.subtreeHash(start + k, end));
      } else {
        sub(m - k, start + k, end, false);
        out.push(this.subtreeHash(start, start + k));
      }
    };
    sub(m, 0, n, true);
    return out;
  }
}

const odd = (x: number) => x % 2 === 1;
const half = (x: number) => Math.floor(x / 2);

/**
 * The root an inclusion proof leads to (RFC 9162 §2.1.3.2 steps 1-5), or a MerkleError
 * QHX_MERKLE_BAD_PROOF naming the failed step. Compare the result with the signed root.
 */
export function rootFromInclusionProof(
  leafIndex: number,
  treeSize: number,
  leaf: Uint8Array,
  path: Uint8Array[],
): Uint8Array {
  if (
    !Number.isSafeInteger(treeSize) ||
    !Number.isSafeInteger(leafIndex) ||
    leafIndex < 0 ||
    leafIndex >= treeSize
  ) {
    throw new MerkleError(
      "QHX_MERKLE_BAD_PROOF",
      `leaf index ${leafIndex} is not within tree size ${treeSize}`,
    );
  }
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r = leaf;
  for (const p of path) {
    if (p.length !== HASH_SIZE) throw new MerkleError("QHX_MERKLE_BAD_PROOF", "a proof hash is not 32 bytes");
    if (sn === 0)
      throw new MerkleError("QHX_MERKLE_BAD_PROOF", "the inclusion path is longer than the tree is deep");
    if (odd(fn) || fn === sn) {
      r = nodeHash(p, r);
      if (!odd(fn)) {
        while (!odd(fn) && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  if (sn !== 0)
    throw new MerkleError("QHX_MERKLE_BAD_PROOF", "the inclusion path is shorter than the tree is deep");
  return r;
}

export function verifyInclusion(
  leafIndex: number,
  treeSize: number,
  leaf: Uint8Array,
  path: Uint8Array[],
  root: Uint8Array,
): boolean {
  try {
    return equal(rootFromInclusionProof(leafIndex, treeSize, leaf, path), root);
  } catch {
    return false;
  }
}

/**
 * Verify a consistency proof between (first, firstRoot) and (second, secondRoot) (RFC 9162 §2.1.4.2).
 * Throws MerkleError QHX_MERKLE_BAD_PROOF naming what failed.
 */
export function verifyConsistency(
  first: number,
  second: number,
  firstRoot: Uint8Array,
  secondRoot: Uint8Array,
  proof: Uint8Array[],
): void {
  const bad = (why: string): never => {
    throw new MerkleError("QHX_MERKLE_BAD_PROOF", `consistency ${first} → ${second}: ${why}`);
  };
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(second) || first < 0 || first > second) {
    bad("the first tree size must not exceed the second");
  }
  for (const p of proof) if (p.length !== HASH_SIZE) bad("a proof hash is not 32 bytes");
  if (first === second) {
    if (proof.length !== 0) bad("equal tree sizes take an empty proof");
    if (!equal(firstRoot, secondRoot)) bad("equal tree sizes with different roots");
    return;
  }
  if (first === 0) {
    if (proof.length !== 0) bad("the empty tree takes an empty proof");
    return;
  }
  if (proof.length === 0) bad("the proof is empty");
  const path = isPow2Big(first) ? [firstRoot, ...proof] : [...proof];
  let fn = first - 1;
  let sn = second - 1;
  while (odd(fn)) {
    fn = half(fn);
    sn = half(sn);
  }
  let fr = path[0]!;
  let sr = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) bad("the proof is too long");
    if (odd(fn) || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while (!odd(fn) && fn !== 0) {
        fn = half(fn);
        sn = half(sn);
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = half(fn);
    sn = half(sn);
  }
  if (sn !== 0) bad("the proof is too short");
  if (!equal(fr, firstRoot)) bad("it does not lead to the first root");
  if (!equal(sr, secondRoot)) bad("it does not lead to the second root");
}

function isPow2Big(n: number): boolean {
  while (n > 1) {
    if (n % 2 === 1) return false;
    n /= 2;
  }
  return n === 1;
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}
