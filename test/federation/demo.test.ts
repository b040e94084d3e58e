/** `qhx demo --federation` from source, as a real process: every step passes and shows what it proves. */
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { CLI, ROOT } from "../helpers/cli.ts";

describe("qhx demo --federation", () => {
  it("federates two trust domains both ways, tunnels across, denies by releasability, revokes", () => {
    const r = spawnSync(process.execPath, ["--no-warnings", CLI, "demo", "--federation"], {
      encoding: "utf8",
      cwd: ROOT,
      timeout: 140_000,
    });
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/ok +two trust domains with independent roots/);
    expect(r.stdout).toMatch(/ok +cross-domain tunnel refused before federation .*refused by the alpha side/);
    expect(r.stdout).toMatch(/ok +federation declared both ways .*endpoint fetch: unchanged, sequence 1/);
    expect(r.stdout).toMatch(/ok +cross-domain tunnel alpha → bravo carries traffic .*over X25519MLKEM768/);
    expect(r.stdout).toMatch(/ok +releasability denial: .*verified, then refused: crypto policy "ns:vault"/);
    expect(r.stdout).toMatch(/ok +deleting the federation revokes access at the next sync/);
    expect(r.stdout).toMatch(/\n7 passed, 0 failed\n$/);
    expect(r.status).toBe(0);
  }, 150_000); // real processes: generous on a loaded machine
});
