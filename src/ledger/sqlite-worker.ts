// The worker thread that owns the SQLite connection. The main thread sends ledger operations in
// messages as it makes them; when free, the worker takes every message waiting (whole ones, until it
// holds maxBatch operations) into one transaction (one commit, one sync), each operation in its own
// savepoint, and sends one message back with every result in the order asked.
import { parentPort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { type BatchOperation, migrateSqlite, openSqlite, SqliteLedger } from "./sqlite-ledger.js";
import type { Durability } from "./store.js";

export interface SqliteWorkerData {
  readonly path: string;
  readonly durability: Durability;
  /** No further waiting message joins a transaction that holds this many operations. */
  readonly maxBatch: number;
}

/** The store's operations, as the worker runs them (every method except close). */
export type LedgerOperation = BatchOperation["op"];

export type WorkerRequest =
  | { readonly type: "batch"; readonly ops: readonly BatchOperation[] }
  | { readonly type: "close" };

export type WorkerReply =
  | { readonly type: "ready"; readonly migrated: number[] }
  | { readonly type: "batch"; readonly results: ({ ok: true; value: unknown } | { ok: false; message: string })[] }
  | { readonly type: "closed" }
  | { readonly type: "failed"; readonly message: string };

const port = parentPort;
if (port === null) throw new Error("sqlite-worker.js runs as a worker thread");
const { path, durability, maxBatch } = workerData as SqliteWorkerData;

try {
  const db = openSqlite(path, durability);
  const migrated = migrateSqlite(db);
  const ledger = new SqliteLedger(db);
  port.postMessage({ type: "ready", migrated } satisfies WorkerReply);
  const close = () => {
    db.close();
    port.postMessage({ type: "closed" } satisfies WorkerReply);
    port.close();
  };
  port.on("message", (first: WorkerRequest) => {
    if (first.type === "close") return close();
    // Whatever else arrived while the last transaction ran joins this one.
    const ops = [...first.ops];
    let closing = false;
    while (ops.length < maxBatch) {
      const next = receiveMessageOnPort(port)?.message as WorkerRequest | undefined;
      if (next === undefined) break;
      if (next.type === "close") {
        closing = true;
        break;
      }
      for (const op of next.ops) ops.push(op);
    }
    try {
      const results = ledger
        .runBatch(ops)
        .map((r) => (r.ok ? r : { ok: false as const, message: String((r.error as Error)?.message ?? r.error) }));
      port.postMessage({ type: "batch", results } satisfies WorkerReply);
    } catch (error) {
      // The transaction itself failed (disk full, I/O error): nothing of the batch was committed.
      const message = String((error as Error)?.message ?? error);
      port.postMessage({ type: "batch", results: ops.map(() => ({ ok: false, message })) } satisfies WorkerReply);
    }
    if (closing) close();
  });
} catch (error) {
  port.postMessage({ type: "failed", message: String((error as Error)?.message ?? error) } satisfies WorkerReply);
}
