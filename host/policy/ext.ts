/**
 * Parsers for Cedar's `ipaddr` and `decimal` extension literals. Deliberately conservative: they accept
 * only the plain canonical spellings and return `undefined` for anything else (leading zeros, `+`
 * signs, IPv4-in-IPv6, ...), in which case the caller leaves the value to cedar-wasm. A value they
 * accept is the value Cedar computes.
 */

export interface IpValue {
  v6: boolean;
  prefix: number;
  /** 16 bytes, network order; an IPv4 address uses the first 4. */
  bytes: number[];
}

const V4 = /^(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})$/;
const PREFIX = /^(0|[1-9][0-9]{0,2})$/;
const HEX = /^[0-9a-fA-F]{1,4}$/;

function parseV6(s: string): number[] | undefined {
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const groups = (h: string) => (h === "" ? [] : h.split(":"));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  const all = [...head, ...tail];
  if (!all.every((g) => HEX.test(g))) return undefined;
  // with "::", require it to stand for at least two groups (the unambiguous spelling)
  if (halves.length === 2 ? all.length > 6 : all.length !== 8) return undefined;
  const words = [...head.map((g) => parseInt(g, 16))];
  for (let i = all.length; i < 8; i++) words.push(0);
  words.push(...tail.map((g) => parseInt(g, 16)));
  const bytes: number[] = [];
  for (const w of words) bytes.push(w >> 8, w & 0xff);
  return bytes;
}

export function parseIp(s: string): IpValue | undefined {
  if (s.length > 64) return undefined;
  const slash = s.indexOf("/");
  const addr = slash < 0 ? s : s.slice(0, slash);
  let prefix: number | undefined;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!PREFIX.test(p)) return undefined;
    prefix = Number(p);
  }
  const m = V4.exec(addr);
  if (m) {
    const b = [m[1], m[2], m[3], m[4]].map(Number);
    if (b.some((x) => x > 255)) return undefined;
    if (prefix !== undefined && prefix > 32) return undefined;
    return { v6: false, prefix: prefix ?? 32, bytes: [...b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] };
  }
  if (addr.includes(".") || !addr.includes(":")) return undefined;
  const bytes = parseV6(addr);
  if (!bytes) return undefined;
  if (prefix !== undefined && prefix > 128) return undefined;
  return { v6: true, prefix: prefix ?? 128, bytes };
}

const DEC = /^(-?)(0|[1-9][0-9]{0,18})\.([0-9]{1,4})$/;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** A decimal as its i64 value × 10^4, or undefined. */
export function parseDecimal(s: string): bigint | undefined {
  const m = DEC.exec(s);
  if (!m) return undefined;
  if (m[1] === "-" && m[2] === "0") return undefined; // "-0.x": leave to Cedar
  const int = BigInt(m[2]!);
  const frac = BigInt(m[3]!.padEnd(4, "0"));
  const v = m[1] === "-" ? -(int * 10000n + frac) : int * 10000n + frac;
  if (v < I64_MIN || v > I64_MAX) return undefined;
  return v;
}
