// The SQLite store as the main thread sees it: every operation goes to the worker thread that owns
// the database. Operations leave in messages of a few (at the end of the event loop's turn, or once
// `sendEvery` have gathered) without waiting for the worker; the worker takes every message waiting
// when it is free into one transaction: one commit, one sync for all of them (group commit). The
// event loop never waits for the disk, and a second thread checkpoints the WAL so that the worker's
// commits do not wait for that either (sqlite-checkpointer.ts).
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { Worker } from "node:worker_threads";
import type { CheckpointerReply, CheckpointerRequest, SqliteCheckpointerData } from "./sqlite-checkpointer.js";
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
  /** Pause between two background checkpoints (default 50 ms). */
  readonly checkpointIntervalMs?: number;
  /**
   * Called after each background checkpoint that found the WAL changed: `log` frames in the WAL,
   * `checkpointed` of them copied into the database file.
   */
  readonly onCheckpoint?: (log: number, checkpointed: number) => void;
  /** Called when a background checkpoint fails (it is tried again at the next interval). */
  readonly onCheckpointFailure?: (message: string) => void;
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
  const maxBatch = options.maxBatch ?? 1024;
  const workerData: SqliteWorkerData = { path, durability: options.durability, maxBatch };
  const worker = startThread("sqlite-worker", workerData);
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

  // Started once the writer has created and migrated the file.
  const checkpointerData: SqliteCheckpointerData = {
    path,
    durability: options.durability,
    intervalMs: options.checkpointIntervalMs ?? 50,
    report: options.onCheckpoint !== undefined,
  };
  const checkpointer = startThread("sqlite-checkpointer", checkpointerData);
  // It has nothing that must finish (an interrupted checkpoint is simply done again later), so it
  // never keeps the process alive.
  checkpointer.unref();
  let checkpointerRunning = true;
  checkpointer.on("message", (reply: CheckpointerReply) => {
    if (reply.type === "checkpoint") options.onCheckpoint?.(reply.log, reply.checkpointed);
    else if (reply.type === "failed") options.onCheckpointFailure?.(reply.message);
  });
  // Should it stop, the writer's backstop checkpoints (openSqlite) keep the WAL bounded.
  checkpointer.on("error", (e) => options.onCheckpointFailure?.(`the checkpointer stopped: ${e.message}`));
  const checkpointerExited = new Promise<void>((resolve) =>
    checkpointer.once("exit", () => {
      checkpointerRunning = false;
      resolve();
    }),
  );

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
  worker.on("exit", () => {
    failAll(new LedgerUnavailableError("the ledger is closed"));
    void checkpointer.terminate();
  });

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
      // The checkpointer stops first; closing the last connection then checkpoints the whole WAL
      // into the database file and removes it.
      if (checkpointerRunning) checkpointer.postMessage({ type: "close" } satisfies CheckpointerRequest);
      await checkpointerExited;
      await new Promise<void>((resolve) => {
        closed = resolve;
        worker.postMessage({ type: "close" } satisfies WorkerRequest);
      });
      await worker.terminate();
    },
  };
}

/**
 * Starts one of the store's threads. Under the test runner the sources are TypeScript; the built
 * package runs the compiled script.
 */
function startThread(name: "sqlite-worker" | "sqlite-checkpointer", workerData: unknown): Worker {
  if (!import.meta.url.endsWith(".ts")) return new Worker(new URL(`./${name}.js`, import.meta.url), { workerData });
  const source = JSON.stringify(new URL(`./${name}.ts`, import.meta.url).href);
  return new Worker(`import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${source}); })`, {
    eval: true,
    workerData,
  });
}
