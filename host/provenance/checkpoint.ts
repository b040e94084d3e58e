/**
 * Signed tree heads in the C2SP formats: the checkpoint body (c2sp.org/tlog-checkpoint)
 *
 *   <origin>\n<tree size, decimal>\n<root hash, base64>\n
 *
 * in a signed note (c2sp.org/signed-note) signed by the notary's Ed25519 key:
 *
 *   <body>\n— <key name> <base64(key hash (4 bytes) || Ed25519 signature (64 bytes))>\n
 *
 * key hash = SHA-256(key name || "\n" || 0x01 || 32-byte public key)[:4]. The key name is the origin.
 * Tools that speak these formats (e.g. golang.org/x/mod/sumdb/note, transparency-dev) read QHx checkpoints.
 */
import crypto, { type KeyObject } from "node:crypto";
import { QhxError } from "../core/errors.ts";
import { HASH_SIZE } from "./merkle.ts";

export interface Checkpoint {
  origin: string;
  size: number;
  root: Uint8Array;
}

export class CheckpointError extends QhxError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = "CheckpointError";
  }
}

const EM_DASH = "\u2014";

/** Raw 32-byte Ed25519 public key of a KeyObject. */
export function ed25519Raw(key: KeyObject): Uint8Array {
  const pub = key.type === "private" ? crypto.createPublicKey(key) : key;
  if (pub.asymmetricKeyType !== "ed25519")
    throw new CheckpointError("QHX_UNSUPPORTED_ALGORITHM", "signed notes need an Ed25519 key");
  const der = pub.export({ type: "spki", format: "der" });
  return new Uint8Array(der.subarray(der.length - 32));
}

export function noteKeyHash(name: string, key: KeyObject): Uint8Array {
  const h = crypto.createHash("sha256");
  h.update(`${name}\n`);
  h.update(Uint8Array.of(0x01));
  h.update(ed25519Raw(key));
  return new Uint8Array(h.digest().subarray(0, 4));
}

/** The verifier key string of signed-note tools: <name>+<hex key hash>+<base64(0x01 || key)>. */
export function noteVerifierKey(name: string, key: KeyObject): string {
  const hash = Buffer.from(noteKeyHash(name, key)).toString("hex");
  return `${name}+${hash}+${Buffer.concat([Buffer.of(1), ed25519Raw(key)]).toString("base64")}`;
}

function checkName(name: string): void {
  if (!name || /[\s+]/.test(name))
    throw new CheckpointError("QHX_INVALID_ARGUMENT", `invalid note key name "${name}"`);
}

export function checkpointBody(c: Checkpoint): string {
  checkName(c.origin);
  return `${c.origin}\n${c.size}\n${Buffer.from(c.root).toString("base64")}\n`;
}

/** Sign a checkpoint: the signed-note text. */
export function signCheckpoint(c: Checkpoint, key: KeyObject): string {
  const body = checkpointBody(c);
  const sig = crypto.sign(null, Buffer.from(body, "utf8"), key);
  const blob = Buffer.concat([noteKeyHash(c.origin, key), sig]).toString("base64");
  return `${body}\n${EM_DASH} ${c.origin} ${blob}\n`;
}

/** Parse a checkpoint note (no signature check). Throws CheckpointError QHX_CHECKPOINT_MALFORMED. */
export function parseCheckpoint(text: string): {
  checkpoint: Checkpoint;
  body: string;
  signatures: { name: string; blob: Buffer }[];
} {
  const bad = (why: string): never => {
    throw new CheckpointError("QHX_CHECKPOINT_MALFORMED", `checkpoint: ${why}`);
  };
  if (text.includes("\r")) bad("carriage returns are not allowed");
  const split = text.indexOf("\n\n");
  if (split < 0) bad("no blank line before the signatures");
  const body = text.slice(0, split + 1);
  const sigText = text.slice(split + 2);
  const lines = body.split("\n");
  lines.pop();
  if (lines.length < 3) bad("the body needs origin, tree size and root hash lines");
  const [origin, sizeText, rootText] = lines as [string, string, string];
  if (!/^(0|[1-9][0-9]{0,15})$/.test(sizeText)) bad(`tree size "${sizeText}" is not a decimal number`);
  const size = Number(sizeText);
  if (!Number.isSafeInteger(size)) bad("tree size is too large");
  if (!/^[A-Za-z0-9+/]{43}=$/.test(rootText)) bad("the root hash is not 32 bytes of base64");
  const root = new Uint8Array(Buffer.from(rootText, "base64"));
  if (root.length !== HASH_SIZE) bad("the root hash is not 32 bytes");
  if (!sigText.endsWith("\n")) bad("the signature block must end with a newline");
  const signatures = sigText
    .slice(0, -1)
    .split("\n")
    .map((l) => {
      const m = /^\u2014 (\S+) ([A-Za-z0-9+/]+={0,2})$/.exec(l);
      if (!m) return bad(`malformed signature line "${l.slice(0, 60)}"`);
      return { name: m[1]!, blob: Buffer.from(m[2]!, "base64") };
    });
  if (signatures.length === 0) bad("no signature");
  return { checkpoint: { origin, size, root }, body, signatures };
}

/**
 * Verify a checkpoint note against the notary key: a signature line by `origin` whose key hash matches
 * the key must verify. Throws CheckpointError QHX_CHECKPOINT_BAD_SIGNATURE / _UNKNOWN_KEY.
 */
export function verifyCheckpoint(text: string, key: KeyObject, expectedOrigin?: string): Checkpoint {
  const p = parseCheckpoint(text);
  const { origin } = p.checkpoint;
  if (expectedOrigin !== undefined && origin !== expectedOrigin) {
    throw new CheckpointError(
      "QHX_CHECKPOINT_WRONG_ORIGIN",
      `checkpoint origin "${origin}" is not "${expectedOrigin}"`,
    );
  }
  const want = Buffer.from(noteKeyHash(origin, key));
  const mine = p.signatures.filter(
    (s) => s.name === origin && s.blob.length === 68 && s.blob.subarray(0, 4).equals(want),
  );
  if (mine.length === 0) {
    throw new CheckpointError(
      "QHX_CHECKPOINT_UNKNOWN_KEY",
      `checkpoint for ${origin} carries no signature by the notary key`,
    );
  }
  for (const s of mine) {
    if (crypto.verify(null, Buffer.from(p.body, "utf8"), key, s.blob.subarray(4))) return p.checkpoint;
  }
  throw new CheckpointError(
    "QHX_CHECKPOINT_BAD_SIGNATURE",
    `the checkpoint signature of ${origin} does not verify`,
  );
}
