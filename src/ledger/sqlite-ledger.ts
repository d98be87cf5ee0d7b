// The SQLite ledger: better-sqlite3 on a WAL-mode file. Its calls are synchronous, so this class runs
// inside a worker thread (sqlite-worker.ts) and never on the event loop that serves requests; the
// worker runs every batch of operations in one transaction with one sync (group commit).
import Database from "better-sqlite3";
import { allocate, type BudgetLine, consumableDimensions, counterId } from "../core/budget.js";
import {
  checkReview,
  checkTransition,
  eventTimeMs,
  expirableStates,
  isTerminal,
  settlesBudgets,
} from "../core/lifecycle.js";
import { LifecycleState } from "../gen/envelope/v1/execution_envelope_pb.js";
import { regrantedBytes } from "./budget-rows.js";
import { envelopeRow, eventRow, type RawEnvelope, type RawEvent, type RawReservation } from "./columns.js";
import type {
  AdmitEntry,
  AdmitOutcome,
  Durability,
  EnvelopeRow,
  EventRow,
  ExpiryInput,
  LedgerStore,
  ListFilter,
  NewEvent,
  TransitionInput,
  TransitionOutcome,
} from "./store.js";

const terminalStates = Object.values(LifecycleState)
  .filter((s): s is LifecycleState => typeof s === "number" && isTerminal(s))
  .join(", ");
const expirable = expirableStates.join(", ");

/** One operation of a batch: a LedgerStore method (other than close) and its arguments. */
export interface BatchOperation {
  readonly op: Exclude<keyof LedgerStore, "kind" | "close">;
  readonly args: unknown[];
}

export type BatchResult = { ok: true; value: unknown } | { ok: false; error: unknown };

/** Versioned schema changes, applied in order on open; each runs once, in its own transaction. */
const migrations: readonly { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE envelopes (
        envelope_id     TEXT PRIMARY KEY,
        tenant_id       TEXT NOT NULL,
        actor_subject   TEXT NOT NULL,
        kind            INTEGER NOT NULL,
        state           INTEGER NOT NULL,
        request_id      TEXT NOT NULL UNIQUE,
        idempotency_key TEXT,
        request_hash    TEXT NOT NULL,
        received_at_ms  INTEGER NOT NULL,
        deadline_ms     INTEGER NOT NULL,
        last_event_ms   INTEGER NOT NULL,
        event_count     INTEGER NOT NULL,
        envelope        BLOB NOT NULL,
        response        BLOB,
        error           BLOB,
        usage           BLOB
      );
      CREATE UNIQUE INDEX envelopes_idempotency ON envelopes (tenant_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
      CREATE INDEX envelopes_tenant ON envelopes (tenant_id, envelope_id);
      CREATE INDEX envelopes_expiry ON envelopes (deadline_ms) WHERE state IN (${expirable});
      CREATE INDEX envelopes_compaction ON envelopes (last_event_ms) WHERE state IN (${terminalStates});
      -- AUTOINCREMENT: a seq is never reused after compaction deletes the newest events.
      CREATE TABLE events (
        seq               INTEGER PRIMARY KEY AUTOINCREMENT,
        envelope_id       TEXT NOT NULL,
        envelope_sequence INTEGER NOT NULL,
        tenant_id         TEXT NOT NULL,
        kind              INTEGER NOT NULL,
        from_state        INTEGER NOT NULL,
        to_state          INTEGER NOT NULL,
        at_ms             INTEGER NOT NULL,
        caller            TEXT NOT NULL,
        reason            TEXT NOT NULL,
        usage             BLOB,
        error             BLOB,
        UNIQUE (envelope_id, envelope_sequence)
      );
    `,
  },
  {
    version: 2,
    sql: `
      -- One row per budget, window and dimension: what is reserved by envelopes that have not ended,
      -- and what ended ones spent. Held dimensions (concurrent, resources.*) have window 0.
      CREATE TABLE budget_counters (
        budget_key      TEXT NOT NULL,
        window_start_ms INTEGER NOT NULL,
        dimension       TEXT NOT NULL,
        reserved        INTEGER NOT NULL DEFAULT 0,
        spent           INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (budget_key, window_start_ms, dimension)
      ) WITHOUT ROWID;
      -- What each envelope reserved, until it is settled.
      CREATE TABLE budget_reservations (
        envelope_id     TEXT NOT NULL,
        budget_key      TEXT NOT NULL,
        window_start_ms INTEGER NOT NULL,
        dimension       TEXT NOT NULL,
        amount          INTEGER NOT NULL,
        PRIMARY KEY (envelope_id, budget_key, dimension)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 3,
    // Envelopes awaiting approval expire too: the sweeper's partial index covers their state.
    sql: `
      DROP INDEX envelopes_expiry;
      CREATE INDEX envelopes_expiry ON envelopes (deadline_ms) WHERE state IN (${expirable});
    `,
  },
];

export const sqliteSchemaVersion = migrations.at(-1)?.version ?? 0;

/** Applies pending migrations; returns the versions applied. */
export function migrateSqlite(db: Database.Database): number[] {
  db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)");
  const applied = new Set(
    (db.prepare("SELECT version FROM schema_migrations").all() as { version: number }[]).map((r) => r.version),
  );
  const newest = Math.max(0, ...applied);
  if (newest > sqliteSchemaVersion) {
    throw new Error(
      `the ledger's schema is version ${newest}, newer than this release knows (${sqliteSchemaVersion}); upgrade Envelope`,
    );
  }
  const done: number[] = [];
  for (const m of migrations) {
    if (applied.has(m.version)) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.prepare("INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?, ?)").run(m.version, Date.now());
    })();
    done.push(m.version);
  }
  return done;
}

/**
 * WAL pages at which the writer checkpoints inside its own commit: a backstop only. The checkpointer
 * thread (sqlite-checkpointer.ts) copies the WAL into the database file every few milliseconds, and
 * SQLite starts the WAL over once it is all copied, so the WAL stays well below this (about 12,000
 * pages at most under the open-loop load of ADR-ENVELOPE-007's measurements).
 */
const walBackstopPages = 20_000;

/** The writer's connection: the one that migrates and commits. */
export function openSqlite(path: string, durability: Durability): Database.Database {
  const db = new Database(path);
  configureConnection(db, durability);
  db.pragma(`wal_autocheckpoint = ${walBackstopPages}`);
  // A WAL file grown by a burst is cut back to this when SQLite starts it over.
  db.pragma(`journal_size_limit = ${64 * 1024 * 1024}`);
  return db;
}

/** What every connection to the ledger's file sets: the writer's and the checkpointer's. */
export function configureConnection(db: Database.Database, durability: Durability): void {
  db.pragma("journal_mode = WAL");
  // NORMAL in WAL mode: a commit is in the WAL file (the OS has it) before it returns, so it
  // survives the process dying; FULL also waits for the disk, so it survives power loss. Either way
  // a checkpoint syncs the database file before SQLite may reuse the WAL.
  db.pragma(`synchronous = ${durability === "fsync" ? "FULL" : "NORMAL"}`);
  db.pragma("busy_timeout = 5000");
  // A batch's admissions share a savepoint (runBatch), and a savepoint keeps the first version of
  // every page it changes in a sub-journal: a temporary file by default, a write per page. In memory
  // it costs a copy; that took a quarter off the worker's time per admission (scratch measurement:
  // 101 to 75 µs of CPU per admission, 60,000 admissions in batches of 16).
  db.pragma("temp_store = MEMORY");
}

/** The ledger's operations on one SQLite connection. Not thread-safe; one instance per worker. */
export class SqliteLedger {
  private readonly insertEnvelope;
  private readonly insertEvent;
  private readonly selectEnvelope;
  private readonly selectExisting;
  private readonly updateEnvelope;
  private readonly selectEvents;
  private readonly selectLatestSeq;
  private readonly selectCounter;
  private readonly reserve;
  private readonly insertReservation;
  private readonly selectReservations;
  private readonly settle;
  private readonly deleteReservations;
  private readonly deleteEnvelope;
  private readonly updateEnvelopeBytes;

  constructor(private readonly db: Database.Database) {
    this.insertEnvelope = db.prepare(
      `INSERT INTO envelopes (envelope_id, tenant_id, actor_subject, kind, state, request_id, idempotency_key,
         request_hash, received_at_ms, deadline_ms, last_event_ms, event_count, envelope, response, error, usage)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT DO NOTHING`,
    );
    this.insertEvent = db.prepare(
      `INSERT INTO events (envelope_id, envelope_sequence, tenant_id, kind, from_state, to_state, at_ms, caller,
         reason, usage, error)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.selectEnvelope = db.prepare("SELECT * FROM envelopes WHERE envelope_id = ?");
    this.selectExisting = db.prepare(
      `SELECT * FROM envelopes WHERE request_id = ?
       UNION ALL SELECT * FROM envelopes WHERE tenant_id = ? AND idempotency_key = ? LIMIT 1`,
    );
    this.updateEnvelope = db.prepare(
      `UPDATE envelopes SET state = ?, last_event_ms = ?, event_count = ?,
         response = coalesce(?, response), error = coalesce(?, error), usage = coalesce(?, usage)
       WHERE envelope_id = ?`,
    );
    this.selectEvents = db.prepare("SELECT * FROM events WHERE envelope_id = ? ORDER BY envelope_sequence");
    this.selectLatestSeq = db.prepare("SELECT coalesce(max(seq), 0) AS seq FROM events").pluck();
    this.selectCounter = db
      .prepare(
        "SELECT reserved + spent FROM budget_counters WHERE budget_key = ? AND window_start_ms = ? AND dimension = ?",
      )
      .pluck();
    this.reserve = db.prepare(
      `INSERT INTO budget_counters (budget_key, window_start_ms, dimension, reserved) VALUES (?, ?, ?, ?)
       ON CONFLICT DO UPDATE SET reserved = reserved + excluded.reserved`,
    );
    this.insertReservation = db.prepare(
      `INSERT INTO budget_reservations (envelope_id, budget_key, window_start_ms, dimension, amount)
       VALUES (?, ?, ?, ?, ?)`,
    );
    this.selectReservations = db.prepare("SELECT * FROM budget_reservations WHERE envelope_id = ?");
    this.settle = db.prepare(
      `UPDATE budget_counters SET reserved = reserved - ?, spent = spent + ?
       WHERE budget_key = ? AND window_start_ms = ? AND dimension = ?`,
    );
    this.deleteReservations = db.prepare("DELETE FROM budget_reservations WHERE envelope_id = ?");
    this.deleteEnvelope = db.prepare("DELETE FROM envelopes WHERE envelope_id = ?");
    this.updateEnvelopeBytes = db.prepare("UPDATE envelopes SET envelope = ? WHERE envelope_id = ?");
  }

  /**
   * Runs a batch of operations in one transaction (one commit for all: group commit), each in its
   * own savepoint so that one failure stays its own. Consecutive admissions share one savepoint,
   * since a savepoint per row costs as much as the row; if that shared one fails, they run again
   * one by one, so only the failing one fails.
   */
  runBatch(ops: readonly BatchOperation[]): BatchResult[] {
    return this.db.transaction(() => {
      const results: BatchResult[] = [];
      for (let i = 0; i < ops.length; ) {
        let end = i;
        while (end < ops.length && ops[end]?.op === "admit") end++;
        if (end - i > 1) {
          const group = ops.slice(i, end) as { op: "admit"; args: [AdmitEntry[]] }[];
          const merged = this.attempt(() => this.admit(group.flatMap((g) => g.args[0])));
          if (merged.ok) {
            let at = 0;
            for (const g of group) {
              results.push({ ok: true, value: merged.value.slice(at, at + g.args[0].length) });
              at += g.args[0].length;
            }
          } else {
            for (const g of group) results.push(this.attempt(() => this.admit(g.args[0])));
          }
          i = end;
          continue;
        }
        const { op, args } = ops[i] as BatchOperation;
        results.push(this.attempt(() => (this[op] as (...a: unknown[]) => unknown)(...args)));
        i++;
      }
      return results;
    })();
  }

  private attempt<T>(work: () => T): { ok: true; value: T } | { ok: false; error: unknown } {
    try {
      return { ok: true, value: this.db.transaction(work)() };
    } catch (error) {
      return { ok: false, error };
    }
  }

  admit(entries: readonly AdmitEntry[]): AdmitOutcome[] {
    // A batch's admissions mostly draw on the same few counters: each is read once, kept here as
    // reservations add to it, and written once at the end, all in this transaction.
    const counters = new Map<
      string,
      { key: string; windowStartMs: number; dimension: string; used: number; added: number }
    >();
    const counter = (key: string, windowStartMs: number, dimension: string) => {
      const id = counterId(key, windowStartMs, dimension);
      let c = counters.get(id);
      if (c === undefined) {
        c = { key, windowStartMs, dimension, used: this.counter(key, windowStartMs, dimension), added: 0 };
        counters.set(id, c);
      }
      return c;
    };
    const outcomes = entries.map(({ row, events, budget }): AdmitOutcome => {
      const last = events.at(-1);
      // Positional parameters: binding by name looks each one up in an object, a measurable share
      // of the worker's time per admission.
      const inserted = this.insertEnvelope.run(
        row.envelopeId,
        row.tenantId,
        row.actorSubject,
        row.kind,
        last?.toState ?? row.state,
        row.requestId,
        row.idempotencyKey === "" ? null : row.idempotencyKey,
        row.requestHash,
        row.receivedAtMs,
        row.deadlineMs,
        events.reduce((t, e) => eventTimeMs(e.atMs, t), 0),
        events.length,
        row.envelope,
        row.response,
        row.error,
        row.usage,
      );
      if (inserted.changes === 0) {
        const existing = this.selectExisting.get(row.requestId, row.tenantId, row.idempotencyKey) as RawEnvelope;
        return { kind: "existing", row: envelopeRow(existing) };
      }
      let regranted: Uint8Array | undefined;
      if (budget !== undefined) {
        // Inserted first, so that a repeated request reserves nothing; undone when a budget is short.
        const allocation = allocate(budget, (l) => counter(l.key, l.windowStartMs, l.dimension).used);
        if (allocation.kind === "short") {
          this.deleteEnvelope.run(row.envelopeId);
          return allocation;
        }
        for (const r of allocation.reservations) {
          const c = counter(r.key, r.windowStartMs, r.dimension);
          c.used += r.amount;
          c.added += r.amount;
          this.insertReservation.run(row.envelopeId, r.key, r.windowStartMs, r.dimension, r.amount);
        }
        regranted = regrantedBytes(row.envelope, allocation);
        if (regranted !== undefined) this.updateEnvelopeBytes.run(regranted, row.envelopeId);
      }
      let from = LifecycleState.UNSPECIFIED;
      let previousMs = 0;
      events.forEach((e, i) => {
        previousMs = eventTimeMs(e.atMs, previousMs);
        this.appendEvent(row.envelopeId, i + 1, row.tenantId, row.kind, from, previousMs, e);
        from = e.toState;
      });
      return { kind: "inserted", envelope: regranted };
    });
    for (const c of counters.values()) {
      if (c.added > 0) this.reserve.run(c.key, c.windowStartMs, c.dimension, c.added);
    }
    return outcomes;
  }

  private counter(key: string, windowStartMs: number, dimension: string): number {
    return (this.selectCounter.get(key, windowStartMs, dimension) as number | undefined) ?? 0;
  }

  /** Releases an ended envelope's reservations and counts what it consumed as spent. */
  private settleBudgets(envelopeId: string, spent: Readonly<Record<string, number>> | undefined): void {
    const reservations = this.selectReservations.all(envelopeId) as RawReservation[];
    for (const r of reservations) {
      const used = consumableDimensions.has(r.dimension) ? (spent?.[r.dimension] ?? 0) : 0;
      this.settle.run(r.amount, used, r.budget_key, r.window_start_ms, r.dimension);
    }
    if (reservations.length > 0) this.deleteReservations.run(envelopeId);
  }

  budgetUsage(lines: readonly BudgetLine[]): number[] {
    return lines.map((l) => this.counter(l.key, l.windowStartMs, l.dimension));
  }

  private appendEvent(
    envelopeId: string,
    sequence: number,
    tenantId: string,
    kind: number,
    from: LifecycleState,
    atMs: number,
    e: NewEvent,
  ): number {
    const result = this.insertEvent.run(
      envelopeId,
      sequence,
      tenantId,
      kind,
      from,
      e.toState,
      atMs,
      e.caller,
      e.reason,
      e.usage ?? null,
      e.error ?? null,
    );
    return Number(result.lastInsertRowid);
  }

  transition(input: TransitionInput): TransitionOutcome {
    const found = this.selectEnvelope.get(input.envelopeId) as RawEnvelope | undefined;
    if (found === undefined) return { kind: "not-found" };
    const raw = envelopeRow(found);
    const check = input.review ? checkReview(raw.state) : checkTransition(raw.state, input.event.toState);
    if (!check.ok) return { kind: "not-allowed", current: raw.state, message: check.message };
    const atMs = eventTimeMs(input.event.atMs, raw.lastEventMs);
    const sequence = raw.eventCount + 1;
    const seq = this.appendEvent(raw.envelopeId, sequence, raw.tenantId, raw.kind, raw.state, atMs, input.event);
    this.updateEnvelope.run(
      input.event.toState,
      atMs,
      sequence,
      input.response ?? null,
      input.error ?? null,
      input.usage ?? null,
      raw.envelopeId,
    );
    if (input.review || settlesBudgets(raw.state, input.event.toState)) {
      this.settleBudgets(raw.envelopeId, input.spent);
    }
    return {
      kind: "done",
      row: envelopeRow(this.selectEnvelope.get(raw.envelopeId) as RawEnvelope),
      event: {
        seq,
        envelopeId: raw.envelopeId,
        envelopeSequence: sequence,
        tenantId: raw.tenantId,
        kind: raw.kind,
        fromState: raw.state,
        toState: input.event.toState,
        atMs,
        caller: input.event.caller,
        reason: input.event.reason,
        usage: input.event.usage ?? null,
        error: input.event.error ?? null,
      },
    };
  }

  get(envelopeId: string): EnvelopeRow | undefined {
    const raw = this.selectEnvelope.get(envelopeId) as RawEnvelope | undefined;
    return raw === undefined ? undefined : envelopeRow(raw);
  }

  events(envelopeId: string): EventRow[] {
    return (this.selectEvents.all(envelopeId) as RawEvent[]).map(eventRow);
  }

  list(filter: ListFilter): EnvelopeRow[] {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (sql: string, ...values: unknown[]) => {
      where.push(sql);
      args.push(...values);
    };
    if (filter.tenantId) add("tenant_id = ?", filter.tenantId);
    if (filter.actorSubject) add("actor_subject = ?", filter.actorSubject);
    if (filter.states?.length) add(`state IN (${filter.states.map(() => "?").join(", ")})`, ...filter.states);
    if (filter.kinds?.length) add(`kind IN (${filter.kinds.map(() => "?").join(", ")})`, ...filter.kinds);
    if (filter.receivedAfterMs !== undefined) add("received_at_ms >= ?", filter.receivedAfterMs);
    if (filter.receivedBeforeMs !== undefined) add("received_at_ms < ?", filter.receivedBeforeMs);
    if (filter.beforeEnvelopeId) add("envelope_id < ?", filter.beforeEnvelopeId);
    const sql = `SELECT * FROM envelopes ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
      ORDER BY envelope_id DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, filter.limit) as RawEnvelope[]).map(envelopeRow);
  }

  eventsAfter(afterSeq: number, tenantId: string | undefined, limit: number): EventRow[] {
    const sql = tenantId
      ? "SELECT * FROM events WHERE seq > ? AND tenant_id = ? ORDER BY seq LIMIT ?"
      : "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?";
    const args = tenantId ? [afterSeq, tenantId, limit] : [afterSeq, limit];
    return (this.db.prepare(sql).all(...args) as RawEvent[]).map(eventRow);
  }

  latestSeq(): number {
    return this.selectLatestSeq.get() as number;
  }

  expire(input: ExpiryInput): EventRow[] {
    const due = this.db
      .prepare(
        `SELECT envelope_id, state FROM envelopes
         WHERE state IN (${expirable}) AND deadline_ms > 0 AND deadline_ms < ? ORDER BY deadline_ms LIMIT ?`,
      )
      .all(input.deadlineBeforeMs, input.limit) as { envelope_id: string; state: LifecycleState }[];
    const events: EventRow[] = [];
    for (const { envelope_id, state } of due) {
      const error = input.errors.get(state) ?? null;
      const outcome = this.transition({
        envelopeId: envelope_id,
        event: {
          toState: LifecycleState.EXPIRED,
          atMs: input.nowMs,
          caller: "envelope",
          reason: input.reasons.get(state) ?? "",
          error,
        },
        error,
      });
      if (outcome.kind === "done") events.push(outcome.event);
    }
    return events;
  }

  compact(lastEventBeforeMs: number, limit: number): number {
    const ids = this.db
      .prepare(
        `SELECT envelope_id FROM envelopes e WHERE state IN (${terminalStates}) AND last_event_ms < ?
           AND NOT EXISTS (SELECT 1 FROM budget_reservations r WHERE r.envelope_id = e.envelope_id)
         ORDER BY last_event_ms LIMIT ?`,
      )
      .pluck()
      .all(lastEventBeforeMs, limit) as string[];
    const deleteEvents = this.db.prepare("DELETE FROM events WHERE envelope_id = ?");
    const deleteEnvelope = this.db.prepare("DELETE FROM envelopes WHERE envelope_id = ?");
    for (const id of ids) {
      deleteEvents.run(id);
      deleteEnvelope.run(id);
    }
    return ids.length;
  }
}
