import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { migrateSqlite, openSqlite } from "../../src/ledger/sqlite-ledger.js";
import { openSqliteStore, sqliteFileName } from "../../src/ledger/sqlite-store.js";
import type { Durability } from "../../src/ledger/store.js";
import { describeStoreConformance, entry } from "./store-conformance.js";

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

describe("SQLite group commit", () => {
  it("commits concurrent admissions together: far fewer transactions than admissions, none lost", async () => {
    dirs.push(mkdtempSync(join(tmpdir(), "envelope-group-commit-")));
    const transactions: number[] = [];
    const store = await openSqliteStore({
      dataDir: dirs.at(-1) as string,
      durability: "process",
      onTransaction: (operations) => transactions.push(operations),
    });
    const admissions = 400;
    const outcomes = await Promise.all(
      Array.from({ length: admissions }, (_, i) => store.admit([entry({ idempotencyKey: `k-${i}` })])),
    );
    expect(outcomes.every(([o]) => o?.kind === "inserted")).toBe(true);
    expect(transactions.reduce((a, b) => a + b, 0)).toBe(admissions);
    // Sent 16 at a time without waiting, and taken together by the worker when it is free.
    expect(transactions.length).toBeLessThanOrEqual(admissions / 16);
    expect((await store.list({ tenantId: "tenant-a", limit: 1000 })).length).toBe(admissions);
    await store.close();
  });
});

describe("SQLite checkpoints", () => {
  it("copies the WAL into the database file on its own thread, and the WAL starts over while writes go on", async () => {
    dirs.push(mkdtempSync(join(tmpdir(), "envelope-checkpoints-")));
    const checkpoints: { log: number; checkpointed: number }[] = [];
    const store = await openSqliteStore({
      dataDir: dirs.at(-1) as string,
      durability: "process",
      checkpointIntervalMs: 5,
      onCheckpoint: (log, checkpointed) => checkpoints.push({ log, checkpointed }),
    });
    // The WAL started over when a checkpoint reports fewer frames than one before it.
    const startedOver = () => checkpoints.some((c, i) => i > 0 && c.log < (checkpoints[i - 1] as { log: number }).log);
    let admitted = 0;
    for (let burst = 0; burst < 400 && !startedOver(); burst++) {
      const outcomes = await Promise.all(Array.from({ length: 50 }, () => store.admit([entry({})])));
      admitted += outcomes.filter(([o]) => o?.kind === "inserted").length;
    }
    expect(checkpoints.some((c) => c.log > 0 && c.checkpointed === c.log)).toBe(true);
    expect(startedOver()).toBe(true);
    expect((await store.list({ tenantId: "tenant-a", limit: 1000 })).length).toBe(Math.min(admitted, 1000));
    await store.close();
  });

  it("checkpoints everything on close: no WAL is left, and the data reopens", async () => {
    const dir = mkdtempSync(join(tmpdir(), "envelope-close-"));
    dirs.push(dir);
    const store = await openSqliteStore({ dataDir: dir, durability: "process" });
    await Promise.all(Array.from({ length: 100 }, () => store.admit([entry({})])));
    expect(existsSync(join(dir, `${sqliteFileName}-wal`))).toBe(true);
    await store.close();
    expect(existsSync(join(dir, `${sqliteFileName}-wal`))).toBe(false);
    const reopened = await openSqliteStore({ dataDir: dir, durability: "process" });
    expect((await reopened.list({ tenantId: "tenant-a", limit: 1000 })).length).toBe(100);
    await reopened.close();
  });
});
