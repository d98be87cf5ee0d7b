// The SQLite store as the main thread sees it: every operation goes to the worker thread that owns
// the database. Operations leave in messages of a few (at the end of the event loop's turn, or once
// `sendEvery` have gathered) without waiting for the worker; the worker takes every message waiting
// when it is free into one transaction: one commit, one sync for all of them (group commit). The
// event loop never waits for the disk.
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { Worker } from "node:worker_threads";
import type { LedgerOperation, SqliteWorkerData, WorkerReply, WorkerRequest } from "./sqlite-worker.js";
import { type Durability, type LedgerStore, LedgerUnavailableError } from "./store.js";

export interface SqliteStoreOptions {
  /** Directory of the database file (created if missing). */
  readonly dataDir: string;
  readonly durability: Durability;
  /**
   * The most operations in one message, and the size past which the worker takes no further waiting
   * message into a transaction (default 1024).
   */
  readonly maxBatch?: number;
  /**
   * Operations gathered before they are sent even though the event loop's turn goes on (default
   * 16). A burst of calls read together would otherwise reach the worker only when this thread has
   * handled all of them, and the worker would sit idle until then.
   */
  readonly sendEvery?: number;
  /** Called with the number of operations of every transaction the worker commits (or fails). */
  readonly onTransaction?: (operations: number) => void;
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
  const maxBatch = options.maxBatch ?? 1024;
  const workerData: SqliteWorkerData = { path, durability: options.durability, maxBatch };
  const worker = fromSource
    ? new Worker(
        `import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${JSON.stringify(new URL("./sqlite-worker.ts", import.meta.url).href)}); })`,
        { eval: true, workerData },
      )
    : new Worker(new URL("./sqlite-worker.js", import.meta.url), { workerData });
  // Operations not yet sent, and those sent whose results have not come back, in order: the worker
  // answers in the order it was asked.
  let queued: Pending[] = [];
  let sent: Pending[] = [];
  let flushing = false;
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

  // Sent without waiting for the batch before to commit: the worker starts on the first admissions
  // of a burst while this thread still decodes the next ones. A message per operation would cost
  // more than it saves (each wakes a thread, and the worker commits more often).
  const sendEvery = options.sendEvery ?? 16;
  const flush = () => {
    flushing = false;
    if (failure !== undefined) return;
    while (queued.length > 0) {
      const batch = queued.length <= maxBatch ? queued : queued.slice(0, maxBatch);
      queued = batch === queued ? [] : queued.slice(batch.length);
      sent = sent.length === 0 ? batch : sent.concat(batch);
      worker.postMessage({ type: "batch", ops: batch.map(({ op, args }) => ({ op, args })) } satisfies WorkerRequest);
    }
  };

  const failAll = (error: Error) => {
    failure = error;
    for (const p of [...sent, ...queued]) p.reject(error);
    sent = [];
    queued = [];
  };

  worker.on("message", (reply: WorkerReply) => {
    if (reply.type === "closed") {
      closed?.();
      return;
    }
    if (reply.type !== "batch") return;
    options.onTransaction?.(reply.results.length);
    const answered = sent.slice(0, reply.results.length);
    sent = sent.slice(reply.results.length);
    reply.results.forEach((r, i) => {
      const p = answered[i];
      if (p === undefined) return;
      if (r.ok) p.resolve(r.value);
      else p.reject(new LedgerUnavailableError(`the ledger could not ${p.op}: ${r.message}`));
    });
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
        if (queued.length >= sendEvery) flush();
        else if (!flushing) {
          flushing = true;
          setImmediate(flush);
        }
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
      while (sent.length > 0 || queued.length > 0) await new Promise((r) => setImmediate(r));
      await new Promise<void>((resolve) => {
        closed = resolve;
        worker.postMessage({ type: "close" } satisfies WorkerRequest);
      });
      await worker.terminate();
    },
  };
}
