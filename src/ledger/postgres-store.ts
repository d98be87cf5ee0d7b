// The PostgreSQL ledger: the same schema, operations and lifecycle rules as the SQLite ledger
// (sqlite-ledger.ts), on a pg.Pool, so that several replicas can share one ledger. Every write is one
// transaction; what makes it safe across replicas is said where it happens: row locks for
// transitions, SKIP LOCKED for the sweepers, one advisory lock for the order of events.
import pg from "pg";
import {
  type Allocation,
  allocate,
  type BudgetClaim,
  type BudgetLine,
  budgetNames,
  consumableDimensions,
  counterId,
  type Reservation,
} from "../core/budget.js";
import {
  checkReview,
  checkTransition,
  eventTimeMs,
  expirableStates,
  isTerminal,
  settlesBudgets,
} from "../core/lifecycle.js";
import { LifecycleState } from "../gen/envelope/v1/execution_envelope_pb.js";
import { degradedBytes, regrantedBytes } from "./budget-rows.js";
import { envelopeRow, eventRow, type RawEnvelope, type RawEvent, type RawReservation } from "./columns.js";
import { createGroupCommit } from "./group-commit.js";
import {
  type AdmitEntry,
  type AdmitOutcome,
  type Durability,
  type EnvelopeRow,
  type EventRow,
  type ExpiryInput,
  type LedgerStore,
  LedgerUnavailableError,
  type ListFilter,
  type TransitionInput,
  type TransitionOutcome,
} from "./store.js";

export interface PostgresStoreOptions {
  /** A libpq connection URL, e.g. postgres://envelope:secret@db:5432/envelope. */
  readonly url: string;
  /**
   * "fsync": a commit is on the server's disk before it returns (synchronous_commit = on).
   * "process": synchronous_commit = off: Envelope's process dying loses nothing committed, but a
   * crash of the PostgreSQL server can lose the last few hundred ms of commits (up to three times
   * its wal_writer_delay), and with them seqs that a Watch may already have delivered.
   */
  readonly durability: Durability;
  /**
   * How long an admission waits for its budget counters' row locks before the budgets' failure
   * policy applies (fail closed: refused; fail open: admitted degraded). Default 1000 ms.
   */
  readonly budgetLockTimeoutMs?: number;
  /** At most this many admit() calls, or transition() calls, per transaction. Default 1024. */
  readonly maxBatch?: number;
  /** Connections in the pool. Default 10. */
  readonly poolSize?: number;
}

const terminalStates = Object.values(LifecycleState)
  .filter((s): s is LifecycleState => typeof s === "number" && isTerminal(s))
  .join(", ");
const expirable = expirableStates.join(", ");

/**
 * Envelope's advisory locks are pg_advisory_xact_lock(namespace, key), namespace "Enve" as an int4,
 * so that they do not meet another application's locks on a shared database.
 */
const lockNamespace = 0x456e7665;
/**
 * Every transaction that appends events takes this lock before its first insert into events and
 * holds it to commit. A seq is drawn from a sequence when the row is inserted, not when it commits:
 * with two writers, seq 8 can commit before seq 7, and a Watch that reads in between moves its
 * cursor to 8 and never sees 7. Under the lock, seqs are drawn and committed one transaction at a
 * time, so seq order is commit order and a cursor never passes an event yet to appear. The cost:
 * event appends serialise across replicas, which group commit keeps cheap (one lock per batch).
 * Row locks are always taken before this lock and nothing waits for a row lock while holding it,
 * so it cannot deadlock.
 */
const appendEventsLock = `SELECT pg_advisory_xact_lock(${lockNamespace}, 1)`;
/** Serialises migrations, so that replicas starting at once apply each one exactly once. */
const migrationLock = `SELECT pg_advisory_xact_lock(${lockNamespace}, 2)`;

/**
 * Versioned schema changes, applied in order on open, each in its own transaction. Ids, tenants and
 * keys use the "C" collation: byte order, as in SQLite, so that keyset pages by envelope id agree
 * whatever the database's locale.
 */
const migrations: readonly { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE envelopes (
        envelope_id     TEXT COLLATE "C" PRIMARY KEY,
        tenant_id       TEXT COLLATE "C" NOT NULL,
        actor_subject   TEXT NOT NULL,
        kind            INTEGER NOT NULL,
        state           INTEGER NOT NULL,
        request_id      TEXT COLLATE "C" NOT NULL UNIQUE,
        idempotency_key TEXT COLLATE "C",
        request_hash    TEXT NOT NULL,
        received_at_ms  BIGINT NOT NULL,
        deadline_ms     BIGINT NOT NULL,
        last_event_ms   BIGINT NOT NULL,
        event_count     INTEGER NOT NULL,
        envelope        BYTEA NOT NULL,
        response        BYTEA,
        error           BYTEA,
        usage           BYTEA
      );
      CREATE UNIQUE INDEX envelopes_idempotency ON envelopes (tenant_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
      CREATE INDEX envelopes_tenant ON envelopes (tenant_id, envelope_id);
      CREATE INDEX envelopes_expiry ON envelopes (deadline_ms) WHERE state IN (${expirable});
      CREATE INDEX envelopes_compaction ON envelopes (last_event_ms) WHERE state IN (${terminalStates});
      -- A sequence never goes back, so a seq is never reused after compaction deletes the newest events.
      CREATE TABLE events (
        seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        envelope_id       TEXT COLLATE "C" NOT NULL,
        envelope_sequence INTEGER NOT NULL,
        tenant_id         TEXT COLLATE "C" NOT NULL,
        kind              INTEGER NOT NULL,
        from_state        INTEGER NOT NULL,
        to_state          INTEGER NOT NULL,
        at_ms             BIGINT NOT NULL,
        caller            TEXT NOT NULL,
        reason            TEXT NOT NULL,
        usage             BYTEA,
        error             BYTEA,
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
        budget_key      TEXT COLLATE "C" NOT NULL,
        window_start_ms BIGINT NOT NULL,
        dimension       TEXT COLLATE "C" NOT NULL,
        reserved        BIGINT NOT NULL DEFAULT 0,
        spent           BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (budget_key, window_start_ms, dimension)
      );
      -- What each envelope reserved, until it is settled.
      CREATE TABLE budget_reservations (
        envelope_id     TEXT COLLATE "C" NOT NULL,
        budget_key      TEXT COLLATE "C" NOT NULL,
        window_start_ms BIGINT NOT NULL,
        dimension       TEXT COLLATE "C" NOT NULL,
        amount          BIGINT NOT NULL,
        PRIMARY KEY (envelope_id, budget_key, dimension)
      );
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

export const postgresSchemaVersion = migrations.at(-1)?.version ?? 0;

// Columns by name rather than `*`: a prepared statement's result type must not change when a later
// release adds a column while this one is still running.
const envelopeColumns = `envelope_id, tenant_id, actor_subject, kind, state, request_id, idempotency_key, request_hash,
  received_at_ms, deadline_ms, last_event_ms, event_count, envelope, response, error, usage`;
const eventColumns = `seq, envelope_id, envelope_sequence, tenant_id, kind, from_state, to_state, at_ms, caller, reason,
  usage, error`;

// Multi-row statements take one array per column and unnest them, so that the statement text (and
// its prepared plan) is the same for any number of rows. WITH ORDINALITY ... ORDER BY keeps the rows
// in the caller's order: the first of two duplicates in one batch is the one inserted, as in SQLite.
const insertEnvelopes = `
  INSERT INTO envelopes (envelope_id, tenant_id, actor_subject, kind, state, request_id, idempotency_key,
    request_hash, received_at_ms, deadline_ms, last_event_ms, event_count, envelope, response, error, usage)
  SELECT envelope_id, tenant_id, actor_subject, kind, state, request_id, idempotency_key, request_hash,
    received_at_ms, deadline_ms, last_event_ms, event_count, envelope, response, error, usage
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::text[], $7::text[], $8::text[],
    $9::bigint[], $10::bigint[], $11::bigint[], $12::int[], $13::bytea[], $14::bytea[], $15::bytea[], $16::bytea[])
    WITH ORDINALITY AS u(envelope_id, tenant_id, actor_subject, kind, state, request_id, idempotency_key,
      request_hash, received_at_ms, deadline_ms, last_event_ms, event_count, envelope, response, error, usage, ord)
  ORDER BY ord
  ON CONFLICT DO NOTHING
  RETURNING envelope_id`;

/** The stored envelope for each request that was not inserted: by request id first, as in SQLite. */
const selectExisting = `
  SELECT u.ord, e.* FROM unnest($1::text[], $2::text[], $3::text[])
    WITH ORDINALITY AS u(request_id, tenant_id, idempotency_key, ord)
  CROSS JOIN LATERAL (
    (SELECT ${envelopeColumns} FROM envelopes WHERE envelopes.request_id = u.request_id)
    UNION ALL
    (SELECT ${envelopeColumns} FROM envelopes
      WHERE envelopes.tenant_id = u.tenant_id AND envelopes.idempotency_key = u.idempotency_key)
    LIMIT 1
  ) AS e`;

const insertEvents = `
  INSERT INTO events (envelope_id, envelope_sequence, tenant_id, kind, from_state, to_state, at_ms, caller, reason,
    usage, error)
  SELECT envelope_id, envelope_sequence, tenant_id, kind, from_state, to_state, at_ms, caller, reason, usage, error
  FROM unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::int[], $6::int[], $7::bigint[], $8::text[],
    $9::text[], $10::bytea[], $11::bytea[])
    WITH ORDINALITY AS u(envelope_id, envelope_sequence, tenant_id, kind, from_state, to_state, at_ms, caller,
      reason, usage, error, ord)
  ORDER BY ord
  RETURNING seq, envelope_id, envelope_sequence`;

/**
 * Envelopes moved by a batch of events: the latest state, time and count of each, and a response,
 * error or usage where one was recorded (kept otherwise, like coalesce in SQLite's update).
 */
const moveEnvelopes = `
  UPDATE envelopes SET state = u.state, last_event_ms = u.last_event_ms, event_count = u.event_count,
    response = coalesce(u.response, envelopes.response), error = coalesce(u.error, envelopes.error),
    usage = coalesce(u.usage, envelopes.usage)
  FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::bytea[], $6::bytea[], $7::bytea[])
    AS u(envelope_id, state, last_event_ms, event_count, response, error, usage)
  WHERE envelopes.envelope_id = u.envelope_id`;

type Client = pg.ClientBase;
type NewEventRow = Omit<EventRow, "seq">;

async function appendEvents(client: Client, events: readonly NewEventRow[]): Promise<EventRow[]> {
  await client.query(appendEventsLock);
  const { rows } = await client.query<{ seq: string; envelope_id: string; envelope_sequence: number }>({
    name: "envelope-insert-events",
    text: insertEvents,
    values: [
      events.map((e) => e.envelopeId),
      events.map((e) => e.envelopeSequence),
      events.map((e) => e.tenantId),
      events.map((e) => e.kind),
      events.map((e) => e.fromState),
      events.map((e) => e.toState),
      events.map((e) => e.atMs),
      events.map((e) => e.caller),
      events.map((e) => e.reason),
      events.map((e) => e.usage),
      events.map((e) => e.error),
    ],
  });
  const seqs = new Map(rows.map((r) => [`${r.envelope_id}\n${r.envelope_sequence}`, Number(r.seq)]));
  return events
    .map((e) => ({ seq: seqs.get(`${e.envelopeId}\n${e.envelopeSequence}`) ?? 0, ...e }))
    .sort((a, b) => a.seq - b.seq);
}

async function admitEntries(
  client: Client,
  entries: readonly AdmitEntry[],
  budgetLockTimeoutMs: number,
): Promise<AdmitOutcome[]> {
  const rows = entries.map(({ row, events }) => ({
    ...row,
    idempotencyKey: row.idempotencyKey === "" ? null : row.idempotencyKey,
    state: events.at(-1)?.toState ?? row.state,
    lastEventMs: events.reduce((t, e) => eventTimeMs(e.atMs, t), 0),
    eventCount: events.length,
  }));
  const inserted = await client.query<{ envelope_id: string }>({
    name: "envelope-admit",
    text: insertEnvelopes,
    values: [
      rows.map((r) => r.envelopeId),
      rows.map((r) => r.tenantId),
      rows.map((r) => r.actorSubject),
      rows.map((r) => r.kind),
      rows.map((r) => r.state),
      rows.map((r) => r.requestId),
      rows.map((r) => r.idempotencyKey),
      rows.map((r) => r.requestHash),
      rows.map((r) => r.receivedAtMs),
      rows.map((r) => r.deadlineMs),
      rows.map((r) => r.lastEventMs),
      rows.map((r) => r.eventCount),
      rows.map((r) => r.envelope),
      rows.map((r) => r.response),
      rows.map((r) => r.error),
      rows.map((r) => r.usage),
    ],
  });
  const insertedIds = new Set(inserted.rows.map((r) => r.envelope_id));
  // delete: of two entries with one envelope id, only the first was inserted.
  const isInserted = rows.map((r) => insertedIds.delete(r.envelopeId));

  const outcomes: (AdmitOutcome | undefined)[] = isInserted.map((yes) => (yes ? { kind: "inserted" } : undefined));
  const rest = rows.filter((_, i) => !isInserted[i]);
  if (rest.length > 0) {
    // The insert waited for any concurrent transaction holding a conflicting key to finish, so the
    // winner's row is committed (or ours, from earlier in this batch) and this statement sees it.
    // Read before the events are appended, so that appendEventsLock is held for less.
    const existing = await client.query<RawEnvelope & { ord: string }>({
      name: "envelope-select-existing",
      text: selectExisting,
      values: [rest.map((r) => r.requestId), rest.map((r) => r.tenantId), rest.map((r) => r.idempotencyKey)],
    });
    const found = new Map(existing.rows.map((r) => [Number(r.ord) - 1, envelopeRow(r)]));
    let k = 0;
    outcomes.forEach((o, i) => {
      if (o !== undefined) return;
      const row = found.get(k++);
      if (row === undefined) throw new Error(`envelope id ${rows[i]?.envelopeId} is taken by another request`);
      outcomes[i] = { kind: "existing", row };
    });
  }

  const budgeted = entries.flatMap((e, i) =>
    isInserted[i] && e.budget !== undefined ? [{ index: i, envelopeId: e.row.envelopeId, claim: e.budget }] : [],
  );
  if (budgeted.length > 0) {
    const allocated = await allocateWithinTimeout(client, budgeted, budgetLockTimeoutMs);
    budgeted.forEach(({ index }, k) => {
      const allocation = allocated[k] as BudgetOutcome;
      const stored = (entries[index] as AdmitEntry).row.envelope;
      if (allocation.kind === "short" || allocation.kind === "unavailable") {
        outcomes[index] = allocation;
        isInserted[index] = false;
      } else if (allocation.kind === "degraded") {
        outcomes[index] = { kind: "inserted", envelope: degradedBytes(stored, allocation.budgets) };
      } else {
        outcomes[index] = { kind: "inserted", envelope: regrantedBytes(stored, allocation) };
      }
    });
    const dropped = budgeted.filter(({ index }) => !isInserted[index]).map((b) => b.envelopeId);
    const rewritten = budgeted.flatMap(({ index, envelopeId }) => {
      const o = outcomes[index];
      return o?.kind === "inserted" && o.envelope !== undefined ? [{ envelopeId, envelope: o.envelope }] : [];
    });
    if (dropped.length > 0) {
      await client.query({
        name: "envelope-drop-short",
        text: "DELETE FROM envelopes WHERE envelope_id = ANY($1::text[])",
        values: [dropped],
      });
    }
    if (rewritten.length > 0) {
      await client.query({
        name: "envelope-regrant",
        text: `UPDATE envelopes SET envelope = u.envelope FROM unnest($1::text[], $2::bytea[]) AS u(envelope_id, envelope)
          WHERE envelopes.envelope_id = u.envelope_id`,
        values: [rewritten.map((r) => r.envelopeId), rewritten.map((r) => r.envelope)],
      });
    }
  }

  const events: NewEventRow[] = [];
  entries.forEach(({ row, events: first }, i) => {
    if (!isInserted[i]) return;
    let from = LifecycleState.UNSPECIFIED;
    let previousMs = 0;
    first.forEach((e, j) => {
      previousMs = eventTimeMs(e.atMs, previousMs);
      events.push({
        envelopeId: row.envelopeId,
        envelopeSequence: j + 1,
        tenantId: row.tenantId,
        kind: row.kind,
        fromState: from,
        toState: e.toState,
        atMs: previousMs,
        caller: e.caller,
        reason: e.reason,
        usage: e.usage ?? null,
        error: e.error ?? null,
      });
      from = e.toState;
    });
  });
  if (events.length > 0) await appendEvents(client, events);
  return outcomes as AdmitOutcome[];
}

/** Joins budget_counters (as c) to the counters named by three arrays: keys, window starts, dimensions. */
const joinCounters = `JOIN unnest($1::text[], $2::bigint[], $3::text[]) AS u(k, w, d)
  ON c.budget_key = u.k AND c.window_start_ms = u.w AND c.dimension = u.d`;

type BudgetOutcome =
  | Allocation
  | { readonly kind: "unavailable"; readonly budgets: readonly string[] }
  | { readonly kind: "degraded"; readonly budgets: readonly string[] };

/**
 * allocateBudgets, waiting at most `timeoutMs` for the counters' row locks (another transaction
 * holding them: a hot tenant, a stuck session). When they cannot be had in time, nothing of the
 * budgets is kept (the savepoint), and each admission follows its budgets' failure policy: refused
 * if any of them fails closed, else admitted without reservations and marked degraded.
 */
async function allocateWithinTimeout(
  client: Client,
  admissions: readonly { envelopeId: string; claim: BudgetClaim }[],
  timeoutMs: number,
): Promise<BudgetOutcome[]> {
  await client.query(`SAVEPOINT envelope_budgets; SET LOCAL lock_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
  let allocated: Allocation[];
  try {
    allocated = await allocateBudgets(client, admissions);
  } catch (error) {
    if ((error as { code?: string }).code !== "55P03") throw error;
    // Rolling back to the savepoint also restores lock_timeout.
    await client.query("ROLLBACK TO SAVEPOINT envelope_budgets");
    return admissions.map(({ claim }): BudgetOutcome => {
      const closed = claim.lines.filter((l) => l.failOpen !== true);
      return closed.length > 0
        ? { kind: "unavailable", budgets: budgetNames(closed) }
        : { kind: "degraded", budgets: budgetNames(claim.lines) };
    });
  }
  await client.query("SET LOCAL lock_timeout TO DEFAULT; RELEASE SAVEPOINT envelope_budgets");
  return allocated;
}

/**
 * Locks every counter the batch touches, then allocates each admission in turn, each seeing what
 * the ones before it reserved, and records the reservations.
 */
async function allocateBudgets(
  client: Client,
  admissions: readonly { envelopeId: string; claim: BudgetClaim }[],
): Promise<Allocation[]> {
  const ids = new Set<string>();
  for (const { claim } of admissions)
    for (const l of claim.lines) ids.add(counterId(l.key, l.windowStartMs, l.dimension));
  // Created where missing (in key order too, since a concurrent insert of the same key waits).
  await client.query({
    name: "envelope-budget-counters",
    text: `INSERT INTO budget_counters (budget_key, window_start_ms, dimension)
      SELECT k, w, d FROM unnest($1::text[], $2::bigint[], $3::text[]) WITH ORDINALITY AS u(k, w, d, ord)
      ORDER BY ord ON CONFLICT DO NOTHING`,
    values: counterColumns([...ids].sort()),
  });
  const used = await lockCounters(client, ids);
  const reserved = new Map<string, number>();
  const reservations: { envelopeId: string; r: Reservation }[] = [];
  const allocations = admissions.map(({ envelopeId, claim }) => {
    const allocation = allocate(claim, (l) => used.get(counterId(l.key, l.windowStartMs, l.dimension)) ?? 0);
    if (allocation.kind === "granted") {
      for (const r of allocation.reservations) {
        const id = counterId(r.key, r.windowStartMs, r.dimension);
        used.set(id, (used.get(id) ?? 0) + r.amount);
        reserved.set(id, (reserved.get(id) ?? 0) + r.amount);
        reservations.push({ envelopeId, r });
      }
    }
    return allocation;
  });
  if (reservations.length > 0) {
    await addToCounters(client, reserved, new Map());
    await client.query({
      name: "envelope-budget-reserve",
      text: `INSERT INTO budget_reservations (envelope_id, budget_key, window_start_ms, dimension, amount)
        SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])`,
      values: [
        reservations.map((x) => x.envelopeId),
        reservations.map((x) => x.r.key),
        reservations.map((x) => x.r.windowStartMs),
        reservations.map((x) => x.r.dimension),
        reservations.map((x) => x.r.amount),
      ],
    });
  }
  return allocations;
}

/** Counter ids as the three arrays of joinCounters: keys, window starts, dimensions. */
function counterColumns(ids: readonly string[]): [string[], number[], string[]] {
  const parts = ids.map((id) => id.split("\n") as [string, string, string]);
  return [parts.map((p) => p[0]), parts.map((p) => Number(p[1])), parts.map((p) => p[2])];
}

/**
 * Locks the counters (FOR UPDATE, in key order, so that transactions on several replicas never
 * wait for each other in a cycle) and returns what each holds: reserved plus spent, by counter id.
 */
async function lockCounters(client: Client, ids: Iterable<string>): Promise<Map<string, number>> {
  const { rows } = await client.query<{ budget_key: string; window_start_ms: string; dimension: string; used: string }>(
    {
      name: "envelope-budget-lock",
      text: `SELECT c.budget_key, c.window_start_ms, c.dimension, c.reserved + c.spent AS used
      FROM budget_counters c ${joinCounters}
      ORDER BY c.budget_key, c.window_start_ms, c.dimension FOR UPDATE OF c`,
      values: counterColumns([...ids].sort()),
    },
  );
  return new Map(rows.map((r) => [counterId(r.budget_key, Number(r.window_start_ms), r.dimension), Number(r.used)]));
}

/** Adds to counters' reserved and spent amounts (negative to release); the rows are locked already. */
async function addToCounters(client: Client, reserved: Map<string, number>, spent: Map<string, number>) {
  const ids = [...new Set([...reserved.keys(), ...spent.keys()])];
  const [keys, windows, dimensions] = counterColumns(ids);
  await client.query({
    name: "envelope-budget-add",
    text: `UPDATE budget_counters c SET reserved = c.reserved + u.reserved, spent = c.spent + u.spent
      FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[]) AS u(k, w, d, reserved, spent)
      WHERE c.budget_key = u.k AND c.window_start_ms = u.w AND c.dimension = u.d`,
    values: [keys, windows, dimensions, ids.map((id) => reserved.get(id) ?? 0), ids.map((id) => spent.get(id) ?? 0)],
  });
}

/**
 * Releases the reservations of envelopes that ended, counting what each consumed as spent; the
 * counters are locked first, as allocateBudgets locks them.
 */
async function settleBudgets(client: Client, ended: ReadonlyMap<string, Readonly<Record<string, number>> | undefined>) {
  const { rows } = await client.query<RawReservation>({
    name: "envelope-budget-reservations",
    text: "DELETE FROM budget_reservations WHERE envelope_id = ANY($1::text[]) RETURNING *",
    values: [[...ended.keys()]],
  });
  if (rows.length === 0) return;
  const reserved = new Map<string, number>();
  const spent = new Map<string, number>();
  for (const r of rows) {
    const id = counterId(r.budget_key, Number(r.window_start_ms), r.dimension);
    reserved.set(id, (reserved.get(id) ?? 0) - Number(r.amount));
    const used = consumableDimensions.has(r.dimension) ? (ended.get(r.envelope_id)?.[r.dimension] ?? 0) : 0;
    spent.set(id, (spent.get(id) ?? 0) + used);
  }
  await lockCounters(client, reserved.keys());
  await addToCounters(client, reserved, spent);
}

interface Move {
  readonly envelopeId: string;
  readonly state: LifecycleState;
  readonly lastEventMs: number;
  readonly eventCount: number;
  readonly response: Uint8Array | null;
  readonly error: Uint8Array | null;
  readonly usage: Uint8Array | null;
}

/** Appends the events (under appendEventsLock) and moves their envelopes; returns the events with seqs. */
async function appendAndMove(client: Client, events: readonly NewEventRow[], moves: Iterable<Move>) {
  const appended = await appendEvents(client, events);
  const m = [...moves];
  await client.query({
    name: "envelope-move",
    text: moveEnvelopes,
    values: [
      m.map((x) => x.envelopeId),
      m.map((x) => x.state),
      m.map((x) => x.lastEventMs),
      m.map((x) => x.eventCount),
      m.map((x) => x.response),
      m.map((x) => x.error),
      m.map((x) => x.usage),
    ],
  });
  return appended;
}

/**
 * A batch of transitions in one transaction. FOR UPDATE: a transaction moving the same envelope on
 * another replica waits for this one, then reads the state it left, so two cannot both move it; rows
 * are locked in id order, so that two batches never wait for each other in a cycle. Within the
 * batch, transitions apply in order, each from the state the one before left.
 */
async function transitionBatch(client: Client, inputs: readonly TransitionInput[]): Promise<TransitionOutcome[]> {
  const { rows } = await client.query<RawEnvelope>({
    name: "envelope-lock-rows",
    text: `SELECT ${envelopeColumns} FROM envelopes WHERE envelope_id = ANY($1::text[]) ORDER BY envelope_id FOR UPDATE`,
    values: [[...new Set(inputs.map((i) => i.envelopeId))]],
  });
  const current = new Map(rows.map((r) => [r.envelope_id, envelopeRow(r)]));
  const moves = new Map<string, Move>();
  const events: NewEventRow[] = [];
  const outcomes: (TransitionOutcome | { kind: "pending"; row: EnvelopeRow; event: number })[] = [];
  for (const { envelopeId, event, ...recorded } of inputs) {
    const row = current.get(envelopeId);
    if (row === undefined) {
      outcomes.push({ kind: "not-found" });
      continue;
    }
    const check = recorded.review ? checkReview(row.state) : checkTransition(row.state, event.toState);
    if (!check.ok) {
      outcomes.push({ kind: "not-allowed", current: row.state, message: check.message });
      continue;
    }
    const atMs = eventTimeMs(event.atMs, row.lastEventMs);
    const next: EnvelopeRow = {
      ...row,
      state: event.toState,
      lastEventMs: atMs,
      eventCount: row.eventCount + 1,
      response: recorded.response ?? row.response,
      error: recorded.error ?? row.error,
      usage: recorded.usage ?? row.usage,
    };
    const earlier = moves.get(envelopeId);
    moves.set(envelopeId, {
      envelopeId,
      state: next.state,
      lastEventMs: next.lastEventMs,
      eventCount: next.eventCount,
      response: recorded.response ?? earlier?.response ?? null,
      error: recorded.error ?? earlier?.error ?? null,
      usage: recorded.usage ?? earlier?.usage ?? null,
    });
    current.set(envelopeId, next);
    outcomes.push({ kind: "pending", row: next, event: events.length });
    events.push({
      envelopeId,
      envelopeSequence: next.eventCount,
      tenantId: row.tenantId,
      kind: row.kind,
      fromState: row.state,
      toState: event.toState,
      atMs,
      caller: event.caller,
      reason: event.reason,
      usage: event.usage ?? null,
      error: event.error ?? null,
    });
  }
  if (events.length === 0) return outcomes as TransitionOutcome[];
  const ended = new Map<string, Readonly<Record<string, number>> | undefined>();
  inputs.forEach((input, i) => {
    const o = outcomes[i];
    if (o?.kind !== "pending") return;
    if (input.review || settlesBudgets((events[o.event] as NewEventRow).fromState, input.event.toState)) {
      ended.set(input.envelopeId, input.spent);
    }
  });
  if (ended.size > 0) await settleBudgets(client, ended);
  const appended = await appendAndMove(client, events, moves.values());
  const bySequence = new Map(appended.map((e) => [`${e.envelopeId}\n${e.envelopeSequence}`, e]));
  return outcomes.map((o) => {
    if (o.kind !== "pending") return o;
    const e = events[o.event] as NewEventRow;
    const event = bySequence.get(`${e.envelopeId}\n${e.envelopeSequence}`) as EventRow;
    return { kind: "done", row: o.row, event };
  });
}

async function expireDue(client: Client, input: ExpiryInput): Promise<EventRow[]> {
  // SKIP LOCKED: sweepers on several replicas take disjoint rows instead of queueing on each other,
  // and a row being moved by a transition right now is left for the next sweep.
  const { rows } = await client.query<RawEnvelope>({
    name: "envelope-lock-due",
    text: `SELECT ${envelopeColumns} FROM envelopes
      WHERE state IN (${expirable}) AND deadline_ms > 0 AND deadline_ms < $1
      ORDER BY deadline_ms LIMIT $2 FOR UPDATE SKIP LOCKED`,
    values: [input.deadlineBeforeMs, input.limit],
  });
  const events: NewEventRow[] = [];
  const moves: Move[] = [];
  for (const row of rows.map(envelopeRow)) {
    if (!checkTransition(row.state, LifecycleState.EXPIRED).ok) continue;
    const atMs = eventTimeMs(input.nowMs, row.lastEventMs);
    const error = input.errors.get(row.state) ?? null;
    events.push({
      envelopeId: row.envelopeId,
      envelopeSequence: row.eventCount + 1,
      tenantId: row.tenantId,
      kind: row.kind,
      fromState: row.state,
      toState: LifecycleState.EXPIRED,
      atMs,
      caller: "envelope",
      reason: input.reasons.get(row.state) ?? "",
      usage: null,
      error,
    });
    moves.push({
      envelopeId: row.envelopeId,
      state: LifecycleState.EXPIRED,
      lastEventMs: atMs,
      eventCount: row.eventCount + 1,
      response: null,
      error,
      usage: null,
    });
  }
  if (events.length === 0) return [];
  // Expiring while awaiting approval: nothing ran, so the reservation goes back.
  const neverRan = events
    .filter((e) => settlesBudgets(e.fromState, e.toState))
    .map((e) => [e.envelopeId, undefined] as const);
  if (neverRan.length > 0) await settleBudgets(client, new Map(neverRan));
  return appendAndMove(client, events, moves);
}

async function compactOld(client: Client, lastEventBeforeMs: number, limit: number): Promise<number> {
  // Terminal rows only, so a live envelope is never touched; SKIP LOCKED so that compactors on
  // several replicas split the work. Nothing here appends events, so no appendEventsLock.
  const { rows } = await client.query<{ removed: number }>({
    name: "envelope-compact",
    text: `
      WITH doomed AS (
        SELECT envelope_id FROM envelopes e WHERE state IN (${terminalStates}) AND last_event_ms < $1
          AND NOT EXISTS (SELECT 1 FROM budget_reservations r WHERE r.envelope_id = e.envelope_id)
        ORDER BY last_event_ms LIMIT $2 FOR UPDATE SKIP LOCKED
      ), gone_events AS (
        DELETE FROM events WHERE envelope_id IN (SELECT envelope_id FROM doomed)
      ), gone AS (
        DELETE FROM envelopes WHERE envelope_id IN (SELECT envelope_id FROM doomed) RETURNING 1
      )
      SELECT count(*)::int AS removed FROM gone`,
    values: [lastEventBeforeMs, limit],
  });
  return rows[0]?.removed ?? 0;
}

/** Runs `work` in a transaction holding `lock`; migrations run with the server's own durability. */
async function lockedTransaction<T>(client: Client, lock: string, work: () => Promise<T>): Promise<T> {
  await client.query("BEGIN");
  try {
    await client.query(lock);
    const value = await work();
    await client.query("COMMIT");
    return value;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  }
}

async function migrate(client: Client): Promise<number[]> {
  const applied = await lockedTransaction(client, migrationLock, async () => {
    await client.query(
      "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
    );
    const { rows } = await client.query<{ version: number }>("SELECT version FROM schema_migrations");
    return new Set(rows.map((r) => r.version));
  });
  const newest = Math.max(0, ...applied);
  if (newest > postgresSchemaVersion) {
    throw new Error(
      `the ledger's schema is version ${newest}, newer than this release knows (${postgresSchemaVersion}); upgrade Envelope`,
    );
  }
  const done: number[] = [];
  for (const m of migrations) {
    if (applied.has(m.version)) continue;
    const ran = await lockedTransaction(client, migrationLock, async () => {
      // Another replica may have applied it while this one waited for the lock.
      const again = await client.query("SELECT 1 FROM schema_migrations WHERE version = $1", [m.version]);
      if ((again.rowCount ?? 0) > 0) return false;
      await client.query(m.sql);
      await client.query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)", [
        m.version,
        Date.now(),
      ]);
      return true;
    });
    if (ran) done.push(m.version);
  }
  return done;
}

/** The URL without its password, for messages: postgres://envelope@db:5432/envelope. */
function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    u.password = "";
    return u.toString();
  } catch {
    return "the configured PostgreSQL database";
  }
}

/** An error's text for a user: its message and SQLSTATE, without the URL or its password. */
function safeMessage(error: unknown, url: string): string {
  const e = error as { message?: unknown; code?: unknown } | undefined;
  const message = typeof e?.message === "string" && e.message !== "" ? e.message : String(error);
  const code = typeof e?.code === "string" ? ` (${e.code})` : "";
  let text = `${message}${code}`.replaceAll(url, describeUrl(url));
  let password = "";
  try {
    password = decodeURIComponent(new URL(url).password);
  } catch {
    password = /password\s*=\s*'?([^\s']+)/.exec(url)?.[1] ?? "";
  }
  if (password !== "") text = text.replaceAll(password, "***");
  return text;
}

/** Applies pending migrations (for `envelope migrate`); returns the versions applied. */
export async function migratePostgres(url: string): Promise<number[]> {
  const client = new pg.Client({ connectionString: url, application_name: "envelope migrate" });
  client.on("error", () => undefined);
  try {
    await client.connect();
    return await migrate(client);
  } catch (error) {
    throw new LedgerUnavailableError(`cannot migrate the ledger at ${describeUrl(url)}: ${safeMessage(error, url)}`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The transaction failed before COMMIT and was rolled back on a connection that still works. */
class RolledBack extends Error {
  constructor(override readonly cause: unknown) {
    super("rolled back");
  }
}

const retryableCodes = new Set(["40P01", "40001"]);

export async function openPostgresStore(options: PostgresStoreOptions): Promise<LedgerStore & { migrated: number[] }> {
  const { url } = options;
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolSize ?? 10,
    application_name: "envelope",
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
  });
  // An idle connection that breaks (server restart) is dropped from the pool; the next query
  // connects again or reports the failure to its caller. Without a listener it would crash the process.
  pool.on("error", () => undefined);
  const begin = `BEGIN; SET LOCAL synchronous_commit = ${options.durability === "fsync" ? "on" : "off"}`;

  let migrated: number[];
  try {
    const client = await pool.connect();
    try {
      migrated = await migrate(client);
    } finally {
      client.release();
    }
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw new LedgerUnavailableError(`cannot open the ledger at ${describeUrl(url)}: ${safeMessage(error, url)}`);
  }

  /**
   * One transaction on a pooled connection. A deadlock (two replicas admitting the same keys in
   * opposite orders) or serialization failure is retried; a failure at COMMIT is not, since whether
   * it committed is unknown.
   */
  const transact = async <T>(work: (client: Client) => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      const client = await pool.connect();
      let committing = false;
      try {
        await client.query(begin);
        const value = await work(client);
        committing = true;
        await client.query("COMMIT");
        client.release();
        return value;
      } catch (error) {
        if (committing) {
          client.release(error as Error);
          throw error;
        }
        const rolledBack = await client.query("ROLLBACK").then(
          () => true,
          () => false,
        );
        client.release(rolledBack ? undefined : (error as Error));
        if (!rolledBack) throw error;
        if (retryableCodes.has((error as { code?: string }).code ?? "") && attempt < 3) continue;
        throw new RolledBack(error);
      }
    }
  };

  /**
   * Group commit: concurrent calls share one transaction. If a batch is rolled back while the
   * database still answers, the failure belongs to some item (a NUL in a text, say): each item then
   * runs alone, in order, so that only its own caller sees the failure.
   */
  const batched = <I, O>(run: (client: Client, items: readonly I[]) => Promise<O[]>) =>
    createGroupCommit<I, O>(
      async (items) => {
        try {
          const values = await transact((client) => run(client, items));
          return values.map((value) => ({ status: "fulfilled", value }));
        } catch (error) {
          if (!(error instanceof RolledBack) || items.length === 1) throw error;
          const results: PromiseSettledResult<O>[] = [];
          for (const item of items) {
            results.push(
              await transact(async (client) => (await run(client, [item]))[0] as O).then(
                (value) => ({ status: "fulfilled", value }),
                (reason: unknown) => ({ status: "rejected", reason }),
              ),
            );
          }
          return results;
        }
      },
      { maxBatch: options.maxBatch ?? 1024 },
    );
  const admissions = batched(async (client, calls: readonly (readonly AdmitEntry[])[]) => {
    const outcomes = await admitEntries(client, calls.flat(), options.budgetLockTimeoutMs ?? 1000);
    let start = 0;
    return calls.map((entries) => {
      start += entries.length;
      return outcomes.slice(start - entries.length, start);
    });
  });
  const transitions = batched(transitionBatch);

  let closed = false;
  const guard =
    <A extends unknown[], R>(op: string, fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      if (closed) throw new LedgerUnavailableError("the ledger is closed");
      try {
        return await fn(...args);
      } catch (error) {
        if (error instanceof LedgerUnavailableError) throw error;
        const cause = error instanceof RolledBack ? error.cause : error;
        throw new LedgerUnavailableError(`the ledger could not ${op}: ${safeMessage(cause, url)}`);
      }
    };

  const query = async <R extends pg.QueryResultRow>(name: string, text: string, values: unknown[]) =>
    (await pool.query<R>({ name, text, values })).rows;

  return {
    kind: "postgres",
    migrated,
    admit: guard("admit", async (entries: readonly AdmitEntry[]) =>
      entries.length === 0 ? [] : admissions.submit(entries),
    ),
    transition: guard("transition", (input: TransitionInput) => transitions.submit(input)),
    budgetUsage: guard("read budgets", async (lines: readonly BudgetLine[]) => {
      if (lines.length === 0) return [];
      const rows = await query<{ budget_key: string; window_start_ms: string; dimension: string; used: string }>(
        "envelope-budget-usage",
        `SELECT budget_key, window_start_ms, dimension, reserved + spent AS used FROM budget_counters c
          ${joinCounters}`,
        [lines.map((l) => l.key), lines.map((l) => l.windowStartMs), lines.map((l) => l.dimension)],
      );
      const used = new Map(
        rows.map((r) => [counterId(r.budget_key, Number(r.window_start_ms), r.dimension), Number(r.used)]),
      );
      return lines.map((l) => used.get(counterId(l.key, l.windowStartMs, l.dimension)) ?? 0);
    }),
    get: guard("get", async (envelopeId: string) => {
      const rows = await query<RawEnvelope>(
        "envelope-get",
        `SELECT ${envelopeColumns} FROM envelopes WHERE envelope_id = $1`,
        [envelopeId],
      );
      return rows[0] === undefined ? undefined : envelopeRow(rows[0]);
    }),
    events: guard("events", async (envelopeId: string) =>
      (
        await query<RawEvent>(
          "envelope-events",
          `SELECT ${eventColumns} FROM events WHERE envelope_id = $1 ORDER BY envelope_sequence`,
          [envelopeId],
        )
      ).map(eventRow),
    ),
    list: guard("list", async (filter: ListFilter) => {
      const where: string[] = [];
      const values: unknown[] = [];
      const add = (sql: (p: string) => string, value: unknown) => {
        values.push(value);
        where.push(sql(`$${values.length}`));
      };
      if (filter.tenantId) add((p) => `tenant_id = ${p}`, filter.tenantId);
      if (filter.actorSubject) add((p) => `actor_subject = ${p}`, filter.actorSubject);
      if (filter.states?.length) add((p) => `state = ANY(${p}::int[])`, filter.states);
      if (filter.kinds?.length) add((p) => `kind = ANY(${p}::int[])`, filter.kinds);
      if (filter.receivedAfterMs !== undefined) add((p) => `received_at_ms >= ${p}`, filter.receivedAfterMs);
      if (filter.receivedBeforeMs !== undefined) add((p) => `received_at_ms < ${p}`, filter.receivedBeforeMs);
      if (filter.beforeEnvelopeId) add((p) => `envelope_id < ${p}`, filter.beforeEnvelopeId);
      values.push(filter.limit);
      const sql = `SELECT ${envelopeColumns} FROM envelopes ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
        ORDER BY envelope_id DESC LIMIT $${values.length}`;
      return (await pool.query<RawEnvelope>(sql, values)).rows.map(envelopeRow);
    }),
    eventsAfter: guard("read events", async (afterSeq: number, tenantId: string | undefined, limit: number) =>
      (tenantId
        ? await query<RawEvent>(
            "envelope-events-after-tenant",
            `SELECT ${eventColumns} FROM events WHERE seq > $1 AND tenant_id = $2 ORDER BY seq LIMIT $3`,
            [afterSeq, tenantId, limit],
          )
        : await query<RawEvent>(
            "envelope-events-after",
            `SELECT ${eventColumns} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`,
            [afterSeq, limit],
          )
      ).map(eventRow),
    ),
    latestSeq: guard("read the latest seq", async () => {
      const rows = await query<{ seq: string }>(
        "envelope-latest-seq",
        "SELECT coalesce(max(seq), 0) AS seq FROM events",
        [],
      );
      return Number(rows[0]?.seq ?? 0);
    }),
    expire: guard("expire", (input: ExpiryInput) => transact((client) => expireDue(client, input))),
    compact: guard("compact", (lastEventBeforeMs: number, limit: number) =>
      transact((client) => compactOld(client, lastEventBeforeMs, limit)),
    ),
    async close() {
      if (closed) return;
      closed = true;
      // Let queued work finish first: what was acknowledged stays acknowledged.
      await Promise.all([admissions.drain(), transitions.drain()]);
      await pool.end();
    },
  };
}
