// The SQLite store as the main thread sees it: every operation goes to the worker thread that owns
// the database. Operations made while a batch is being committed wait and go together in the next
// batch: one message, one transaction, one sync for all of them (group commit). The event loop
// never waits for the disk.
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { Worker } from "node:worker_threads";
import type { LedgerOperation, SqliteWorkerData, WorkerReply, WorkerRequest } from "./sqlite-worker.js";
import { type Durability, type LedgerStore, LedgerUnavailableError } from "./store.js";

export interface SqliteStoreOptions {
  /** Directory of the database file (created if missing). */
  readonly dataDir: string;
  readonly durability: Durability;
  /** At most this many operations per transaction. */
  readonly maxBatch?: number;
}

interface Pending {
  readonly op: LedgerOperation;
  readonly args: unknown[];
  resolve(value: unknown): void;
  reject(error: Error): void;
}

export const sqliteFileName = "envelope-ledger.sqlite";

export async function openSqliteStore(options: SqliteStoreOptions): Promise<LedgerStore & { migrated: number[] }> {
  mkdirSync(options.dataDir, { recursive: true });
  const path = resolve(join(options.dataDir, sqliteFileName));
  // Under the test runner the sources are TypeScript; the built package runs the compiled worker.
  const fromSource = import.meta.url.endsWith(".ts");
  const workerData: SqliteWorkerData = { path, durability: options.durability };
  const worker = fromSource
    ? new Worker(
        `import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${JSON.stringify(new URL("./sqlite-worker.ts", import.meta.url).href)}); })`,
        { eval: true, workerData },
      )
    : new Worker(new URL("./sqlite-worker.js", import.meta.url), { workerData });
  const maxBatch = options.maxBatch ?? 1024;
  let queued: Pending[] = [];
  let inFlight: Pending[] | undefined;
  let failure: Error | undefined;
  let closed: (() => void) | undefined;

  const migrated = await new Promise<number[]>((ok, fail) => {
    worker.once("message", (reply: WorkerReply) => {
      if (reply.type === "ready") ok(reply.migrated);
      else
        fail(
          new LedgerUnavailableError(`cannot open the ledger at ${path}: ${(reply as { message?: string }).message}`),
        );
    });
    worker.once("error", (e) => fail(new LedgerUnavailableError(`cannot open the ledger at ${path}: ${e.message}`)));
  });

  const send = () => {
    if (inFlight !== undefined || queued.length === 0 || failure !== undefined) return;
    inFlight = queued.slice(0, maxBatch);
    queued = queued.slice(inFlight.length);
    worker.postMessage({
      type: "batch",
      ops: inFlight.map(({ op, args }) => ({ op, args })),
    } satisfies WorkerRequest);
  };

  const failAll = (error: Error) => {
    failure = error;
    for (const p of [...(inFlight ?? []), ...queued]) p.reject(error);
    inFlight = undefined;
    queued = [];
  };

  worker.on("message", (reply: WorkerReply) => {
    if (reply.type === "closed") {
      closed?.();
      return;
    }
    if (reply.type !== "batch" || inFlight === undefined) return;
    const batch = inFlight;
    inFlight = undefined;
    reply.results.forEach((r, i) => {
      const p = batch[i] as Pending;
      if (r.ok) p.resolve(r.value);
      else p.reject(new LedgerUnavailableError(`the ledger could not ${p.op}: ${r.message}`));
    });
    send();
  });
  worker.on("error", (e) => failAll(new LedgerUnavailableError(`the ledger's worker failed: ${e.message}`)));
  worker.on("exit", () => failAll(new LedgerUnavailableError("the ledger is closed")));

  const call =
    <K extends LedgerOperation>(op: K) =>
    (...args: Parameters<LedgerStore[K]>): ReturnType<LedgerStore[K]> =>
      new Promise((resolve, reject) => {
        if (failure !== undefined) {
          reject(failure);
          return;
        }
        queued.push({ op, args, resolve, reject });
        // Operations made in the same turn of the event loop leave together.
        if (queued.length === 1 && inFlight === undefined) setImmediate(send);
      }) as ReturnType<LedgerStore[K]>;

  return {
    kind: "sqlite",
    migrated,
    admit: call("admit"),
    transition: call("transition"),
    get: call("get"),
    events: call("events"),
    list: call("list"),
    eventsAfter: call("eventsAfter"),
    latestSeq: call("latestSeq"),
    expire: call("expire"),
    compact: call("compact"),
    budgetUsage: call("budgetUsage"),
    async close() {
      if (failure !== undefined) return;
      // Let queued work finish first: what was acknowledged stays acknowledged.
      while (inFlight !== undefined || queued.length > 0) await new Promise((r) => setImmediate(r));
      await new Promise<void>((resolve) => {
        closed = resolve;
        worker.postMessage({ type: "close" } satisfies WorkerRequest);
      });
      await worker.terminate();
    },
  };
}
