// The thread that checkpoints the SQLite ledger: on its own connection, every few milliseconds, it
// copies what was committed to the WAL into the database file and syncs that file (a PASSIVE
// checkpoint, which never blocks the writer). Commits therefore never wait for a checkpoint: with
// SQLite's own automatic checkpoints inside the commit, a commit now and then held every admission
// behind a disk sync, which on this class of machine took 10-600 ms (ADR-ENVELOPE-007).
//
// SQLite starts the WAL over, instead of growing it, at the writer's first transaction after a
// checkpoint has copied all of it; the writer keeps its own automatic checkpoint only as a backstop
// for a WAL that this thread cannot catch up with (openSqlite's `walBackstopPages`).

import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import { configureConnection } from "./sqlite-ledger.js";
import type { Durability } from "./store.js";

export interface SqliteCheckpointerData {
  readonly path: string;
  readonly durability: Durability;
  /** Pause between the end of one checkpoint and the start of the next. */
  readonly intervalMs: number;
  /** Whether to report each checkpoint that found the WAL changed (SqliteStoreOptions.onCheckpoint). */
  readonly report: boolean;
}

export type CheckpointerRequest = { readonly type: "close" };

/** `log`: frames in the WAL; `checkpointed`: of those, frames now in the database file. */
export type CheckpointerReply =
  | { readonly type: "checkpoint"; readonly log: number; readonly checkpointed: number }
  | { readonly type: "failed"; readonly message: string };

const port = parentPort;
if (port === null) throw new Error("sqlite-checkpointer.js runs as a worker thread");
const { path, durability, intervalMs, report } = workerData as SqliteCheckpointerData;

const db = new Database(path, { fileMustExist: true });
configureConnection(db, durability);
let timer: NodeJS.Timeout | undefined;
let lastLog = -1;

const checkpoint = () => {
  try {
    const [result] = db.pragma("wal_checkpoint(PASSIVE)") as { busy: number; log: number; checkpointed: number }[];
    // busy: the writer's backstop checkpoint is running; the next turn catches up.
    if (report && result !== undefined && result.busy === 0 && result.log !== lastLog) {
      lastLog = result.log;
      port.postMessage({
        type: "checkpoint",
        log: result.log,
        checkpointed: result.checkpointed,
      } satisfies CheckpointerReply);
    }
  } catch (error) {
    // An I/O error or a full disk: the writer's commits report it to callers; the backstop keeps
    // the WAL bounded. Say so, and try again next turn.
    port.postMessage({
      type: "failed",
      message: String((error as Error)?.message ?? error),
    } satisfies CheckpointerReply);
  }
  timer = setTimeout(checkpoint, intervalMs);
};
timer = setTimeout(checkpoint, intervalMs);

port.on("message", (message: CheckpointerRequest) => {
  if (message.type !== "close") return;
  clearTimeout(timer);
  db.close();
  port.close();
});
