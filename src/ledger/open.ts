// Opens the configured ledger store. The SQLite store needs nothing but a directory; PostgreSQL is
// chosen by configuration for several replicas on one database.
import type { LedgerConfig } from "../config/config.js";
import type { Logger } from "../telemetry/log.js";
import { openSqliteStore } from "./sqlite-store.js";
import type { LedgerStore } from "./store.js";

export interface OpenedStore {
  readonly store: LedgerStore;
  /** Schema versions applied while opening. */
  readonly migrated: readonly number[];
  /** Where the data is, for the start-up log (credentials removed). */
  readonly location: string;
}

/** `log` hears of background failures that no caller sees (a failed checkpoint). */
export async function openLedgerStore(config: LedgerConfig, log?: Logger): Promise<OpenedStore | undefined> {
  switch (config.store) {
    case "none":
      return undefined;
    case "sqlite": {
      const store = await openSqliteStore({
        dataDir: config.dataDir,
        durability: config.durability,
        onCheckpointFailure: (message) => log?.error("ledger.checkpoint.failed", { message }),
      });
      return { store, migrated: store.migrated, location: config.dataDir };
    }
    case "postgres": {
      const { openPostgresStore } = await import("./postgres-store.js");
      const store = await openPostgresStore({
        url: config.postgresUrl,
        durability: config.durability,
        budgetLockTimeoutMs: config.budgetLockTimeoutMs,
      });
      return { store, migrated: store.migrated, location: withoutPassword(config.postgresUrl) };
    }
  }
}

/** A connection URL fit for logs: the password replaced. */
export function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== "") u.password = "***";
    return u.toString();
  } catch {
    return "(unparseable URL)";
  }
}
