import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { migrateSqlite, openSqlite } from "../../src/ledger/sqlite-ledger.js";
import { openSqliteStore } from "../../src/ledger/sqlite-store.js";
import type { Durability } from "../../src/ledger/store.js";
import { describeStoreConformance } from "./store-conformance.js";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describeStoreConformance("sqlite", {
  async fresh() {
    dirs.push(mkdtempSync(join(tmpdir(), "envelope-ledger-")));
    return openSqliteStore({ dataDir: dirs.at(-1) as string, durability: "process" });
  },
  reopen: () => openSqliteStore({ dataDir: dirs.at(-1) as string, durability: "fsync" }),
});

describe("SQLite durability levels", () => {
  it("uses WAL, syncing the disk on every commit only when power loss must be survived", () => {
    const dir = mkdtempSync(join(tmpdir(), "envelope-durability-"));
    dirs.push(dir);
    const levels = { process: 1, fsync: 2 } as const; // SQLite's NORMAL and FULL
    for (const [durability, synchronous] of Object.entries(levels)) {
      const db = openSqlite(join(dir, `${durability}.sqlite`), durability as Durability);
      expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
      expect(db.pragma("synchronous", { simple: true })).toBe(synchronous);
      db.close();
    }
  });

  it("refuses a ledger whose schema is newer than this release", () => {
    const dir = mkdtempSync(join(tmpdir(), "envelope-newer-"));
    dirs.push(dir);
    const db = openSqlite(join(dir, "ledger.sqlite"), "process");
    migrateSqlite(db);
    db.prepare("INSERT INTO schema_migrations (version, applied_at_ms) VALUES (999, 0)").run();
    expect(() => migrateSqlite(db)).toThrow(/schema is version 999, newer than this release knows/);
    db.close();
  });
});
