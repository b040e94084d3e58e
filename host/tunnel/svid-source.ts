/**
 * Where a tunnel gets its X509-SVID and the trust bundles it verifies peers against. A source always has
 * a current state once `ready()` resolved, and emits "change" whenever the SVID or a bundle changed
 * (rotation, bundle update). Sources: files (`--svid-dir`), the Workload API (workload-source.ts), and a
 * static one for tests and embedding.
 */
import crypto, { type KeyObject } from "node:crypto";
import { EventEmitter } from "node:events";
import fs from "node:fs";
import path from "node:path";
import type { TrustBundle } from "../core/bundle-types.ts";
import { QhxError } from "../core/errors.ts";
import { fromPem, toPemChain } from "../core/pem.ts";
import { SpiffeId } from "../core/spiffeid.ts";
import { parseCertificate } from "../core/x509.ts";

/** An X509-SVID with its private key. */
export interface Svid {
  spiffeId: string;
  trustDomain: string;
  key: KeyObject;
  /** leaf first, DER */
  chainDer: Uint8Array[];
  /** the leaf's key algorithm (alg.ts names, e.g. "ec-p256", "ml-dsa-65") */
  keyAlg: string;
  /** leaf notAfter */
  expiresAt: Date;
}

export interface SvidState {
  svid: Svid;
  /** X.509 authorities by trust domain name: the own trust domain and the federated ones */
  bundles: ReadonlyMap<string, TrustBundle>;
}

export interface SvidSource {
  /** The current state; throws before `ready()` resolved. */
  current(): SvidState;
  /** Resolves once a first state is available. */
  ready(): Promise<void>;
  on(event: "change", listener: (s: SvidState) => void): this;
  off(event: "change", listener: (s: SvidState) => void): this;
  close(): Promise<void>;
}

export class SvidSourceError extends QhxError {
  constructor(message: string, hint?: string) {
    super("QHX_TUNNEL_SVID", message, hint ? { hint } : undefined);
  }
}

/** Build an Svid from a chain and a private key; checks that the key matches the leaf. */
export function makeSvid(chainDer: Uint8Array[], key: KeyObject): Svid {
  if (chainDer.length === 0) throw new SvidSourceError("the SVID chain is empty");
  let leaf;
  try {
    leaf = parseCertificate(chainDer[0]!);
  } catch (e) {
    throw new SvidSourceError(`the SVID leaf cannot be parsed: ${(e as Error).message}`);
  }
  if (leaf.uriSans.length !== 1) throw new SvidSourceError("the SVID leaf must have exactly one URI SAN");
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(leaf.uriSans[0]!);
  } catch (e) {
    throw new SvidSourceError(`the SVID URI SAN is not a SPIFFE ID: ${(e as Error).message}`);
  }
  if (key.type !== "private") throw new SvidSourceError("the SVID key is not a private key");
  const pub = crypto.createPublicKey(key).export({ type: "spki", format: "der" });
  if (!Buffer.from(leaf.spki).equals(pub)) {
    throw new SvidSourceError("the SVID private key does not match the leaf certificate");
  }
  return {
    spiffeId: id.toString(),
    trustDomain: id.trustDomain,
    key,
    chainDer,
    keyAlg: leaf.keyAlg ?? "unknown",
    expiresAt: leaf.notAfter,
  };
}

/**
 * Group X.509 authorities into bundles: a CA certificate carrying a SPIFFE trust domain URI SAN belongs
 * to that trust domain, any other to `defaultTd`.
 */
export function bundlesFromAuthorities(ders: Uint8Array[], defaultTd: string): Map<string, TrustBundle> {
  const out = new Map<string, TrustBundle>();
  for (const der of ders) {
    let td = defaultTd;
    try {
      const c = parseCertificate(der);
      const uri = c.uriSans[0];
      if (uri) td = SpiffeId.parse(uri).trustDomain;
    } catch (e) {
      throw new SvidSourceError(`a bundle certificate cannot be parsed: ${(e as Error).message}`);
    }
    let b = out.get(td);
    if (!b) {
      b = { trustDomain: td, x509Authorities: [], jwtAuthorities: [], sequence: 0 };
      out.set(td, b);
    }
    if (!b.x509Authorities.some((a) => Buffer.from(a).equals(der))) b.x509Authorities.push(der);
  }
  return out;
}

/** A source whose state is set by its owner (tests, embedding, the demo). */
export class StaticSvidSource extends EventEmitter implements SvidSource {
  #state: SvidState;
  constructor(state: SvidState) {
    super();
    this.#state = state;
  }
  current(): SvidState {
    return this.#state;
  }
  async ready(): Promise<void> {}
  /** Replace the SVID and/or the bundles and emit "change". */
  set(next: Partial<SvidState>): void {
    this.#state = { svid: next.svid ?? this.#state.svid, bundles: next.bundles ?? this.#state.bundles };
    this.emit("change", this.#state);
  }
  async close(): Promise<void> {
    this.removeAllListeners();
  }
}

/** Read svid.pem, svid.key and bundle.pem from `dir` (throws SvidSourceError naming the problem). */
export function readSvidDir(dir: string): SvidState {
  const read = (name: string) => {
    try {
      return fs.readFileSync(path.join(dir, name), "utf8");
    } catch (e) {
      throw new SvidSourceError(
        `cannot read ${path.join(dir, name)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        "the SVID directory needs svid.pem, svid.key and bundle.pem (`qhx svid fetch --write DIR`)",
      );
    }
  };
  const certPem = read("svid.pem");
  const keyPem = read("svid.key");
  const bundlePem = read("bundle.pem");
  let chain: Uint8Array[];
  let roots: Uint8Array[];
  try {
    chain = fromPem(certPem);
    roots = fromPem(bundlePem);
  } catch (e) {
    throw new SvidSourceError(`bad PEM in ${dir}: ${(e as Error).message}`);
  }
  if (chain.length === 0) throw new SvidSourceError(`${dir}/svid.pem holds no certificate`);
  if (roots.length === 0) throw new SvidSourceError(`${dir}/bundle.pem holds no certificate`);
  let key: KeyObject;
  try {
    key = crypto.createPrivateKey(keyPem);
  } catch (e) {
    throw new SvidSourceError(`${dir}/svid.key is not a private key: ${(e as Error).message}`);
  }
  const svid = makeSvid(chain, key);
  return { svid, bundles: bundlesFromAuthorities(roots, svid.trustDomain) };
}

function sameState(a: SvidState, b: SvidState): boolean {
  const chain = (s: SvidState) => toPemChain(s.svid.chainDer);
  const bundles = (s: SvidState) =>
    [...s.bundles.values()]
      .map((x) => `${x.trustDomain}:${toPemChain(x.x509Authorities)}`)
      .sort()
      .join("|");
  return chain(a) === chain(b) && bundles(a) === bundles(b);
}

/**
 * SVID and bundle from files, reread when the directory changes (fs.watch, debounced; a half-written
 * set — key not matching the certificate — is ignored until it is complete). `reload()` forces a reread.
 */
export class FileSvidSource extends EventEmitter implements SvidSource {
  readonly dir: string;
  #state: SvidState;
  #watcher: fs.FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #onError: (e: Error) => void;

  constructor(dir: string, opts: { watch?: boolean; onError?: (e: Error) => void } = {}) {
    super();
    this.dir = path.resolve(dir);
    this.#state = readSvidDir(this.dir);
    this.#onError = opts.onError ?? (() => {});
    if (opts.watch !== false) {
      this.#watcher = fs.watch(this.dir, () => {
        clearTimeout(this.#timer);
        this.#timer = setTimeout(() => this.reload(), 50);
      });
      this.#watcher.on("error", (e) => this.#onError(e));
    }
  }
  current(): SvidState {
    return this.#state;
  }
  async ready(): Promise<void> {}
  /** Reread the files; emits "change" if they changed. Returns false (and reports) if they are invalid. */
  reload(): boolean {
    let next: SvidState;
    try {
      next = readSvidDir(this.dir);
    } catch (e) {
      this.#onError(e as Error);
      return false;
    }
    if (!sameState(next, this.#state)) {
      this.#state = next;
      this.emit("change", next);
    }
    return true;
  }
  async close(): Promise<void> {
    clearTimeout(this.#timer);
    this.#watcher?.close();
    this.removeAllListeners();
  }
}
