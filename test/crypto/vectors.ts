import { readFileSync } from "node:fs";

export interface WycheproofTest {
  tcId: number | string;
  comment?: string;
  result: "valid" | "invalid" | "acceptable";
  flags: string[];
  [field: string]: unknown;
}
export interface WycheproofGroup {
  tests: WycheproofTest[];
  [field: string]: unknown;
}

export function loadWycheproof(name: string): { numberOfTests: number; testGroups: WycheproofGroup[] } {
  return JSON.parse(readFileSync(new URL(`../vectors/wycheproof/${name}`, import.meta.url), "utf8"));
}

export function hex(s: unknown): Uint8Array {
  return new Uint8Array(Buffer.from(typeof s === "string" ? s : "", "hex"));
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

/** Number of random differential cases per parameter set: QHX_LONG_TESTS=1 runs the full 10,000. */
export function caseCount(short: number): number {
  return process.env["QHX_LONG_TESTS"] === "1" ? 10_000 : short;
}
