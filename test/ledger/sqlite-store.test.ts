import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll } from "vitest";
import { openSqliteStore } from "../../src/ledger/sqlite-store.js";
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
