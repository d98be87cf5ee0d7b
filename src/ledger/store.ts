// The ledger's storage interface: what every store (SQLite, PostgreSQL) must do, in plain rows. The
// stores hold bytes and columns; src/ledger/ledger.ts turns them into contract messages. Every write
// is atomic, and the lifecycle rules (src/core/lifecycle.ts) are applied inside the store's own
// transaction, so that two replicas on one database cannot both move an envelope.
import type { BudgetClaim, BudgetLine, BudgetShort } from "../core/budget.js";
import type { LifecycleState } from "../gen/envelope/v1/execution_envelope_pb.js";

/** "process": a commit survives the process crashing; "fsync": it also survives power loss. */
export type Durability = "process" | "fsync";

/** One envelope as stored. Blobs are protobuf binary of the named message. */
export interface EnvelopeRow {
  readonly envelopeId: string;
  readonly tenantId: string;
  readonly actorSubject: string;
  readonly kind: number;
  readonly state: LifecycleState;
  readonly requestId: string;
  /** Empty when the request has none. */
  readonly idempotencyKey: string;
  /** sha256 (hex) of the request as far as idempotency compares it. */
  readonly requestHash: string;
  readonly receivedAtMs: number;
  /** The granted deadline; 0 when none. */
  readonly deadlineMs: number;
  /** Time of the latest event. */
  readonly lastEventMs: number;
  /** Number of events, i.e. the latest event's envelope_sequence. */
  readonly eventCount: number;
  /** ExecutionEnvelope as decided (its state field is the state at admission). */
  readonly envelope: Uint8Array;
  /** RuntimeResponse recorded by Complete. */
  readonly response: Uint8Array | null;
  /** ErrorEnvelope recorded by Fail or expiry. */
  readonly error: Uint8Array | null;
  /** RecordedUsage recorded by Complete. */
  readonly usage: Uint8Array | null;
}

/** One lifecycle event as stored. */
export interface EventRow {
  /** Commit order across the whole ledger; the Watch cursor. */
  readonly seq: number;
  readonly envelopeId: string;
  readonly envelopeSequence: number;
  readonly tenantId: string;
  readonly kind: number;
  readonly fromState: LifecycleState;
  readonly toState: LifecycleState;
  readonly atMs: number;
  readonly caller: string;
  readonly reason: string;
  readonly usage: Uint8Array | null;
  readonly error: Uint8Array | null;
}

/** An event to append; the store assigns seq and envelopeSequence and clamps the time. */
export interface NewEvent {
  readonly toState: LifecycleState;
  readonly atMs: number;
  readonly caller: string;
  readonly reason: string;
  readonly usage?: Uint8Array | null;
  readonly error?: Uint8Array | null;
}

export interface AdmitEntry {
  readonly row: Omit<EnvelopeRow, "lastEventMs" | "eventCount">;
  /** The envelope's first events, in order (received, then the decision). */
  readonly events: readonly NewEvent[];
  /**
   * What to reserve from the budgets, in the same transaction. The store allocates with the core's
   * allocate() against its counters: it lowers the grant (re-encoding the envelope) where a budget
   * has less left, or inserts nothing when a budget is short of the caller's minimum.
   */
  readonly budget?: BudgetClaim | undefined;
}

export type AdmitOutcome =
  /** `envelope` is set when the budgets lowered the grant: the envelope as stored. */
  | { readonly kind: "inserted"; readonly envelope?: Uint8Array | undefined }
  /** A budget cannot cover the minimum; nothing was inserted or reserved. */
  | { readonly kind: "short"; readonly shortfalls: readonly BudgetShort[] }
  /** Budgets that fail closed could not be reached in time; nothing was inserted or reserved. */
  | { readonly kind: "unavailable"; readonly budgets: readonly string[] }
  /** An envelope with the same requestId, or the same tenant and idempotency key, exists. */
  | { readonly kind: "existing"; readonly row: EnvelopeRow };

export interface TransitionInput {
  readonly envelopeId: string;
  readonly event: NewEvent;
  /** Stored on the envelope with the transition. */
  readonly response?: Uint8Array | null;
  readonly error?: Uint8Array | null;
  readonly usage?: Uint8Array | null;
  /**
   * What the execution consumed, per consumable budget dimension ("tokens", "costUsdMicros",
   * "steps"). On a move to an end state other than expired, the envelope's reservations are
   * released and this much is counted as spent in each budget it reserved from.
   */
  readonly spent?: Readonly<Record<string, number>> | undefined;
  /**
   * A review of an expired envelope (the event goes from expired to expired): allowed only from
   * expired, and it settles whatever reservation is still open with `spent`.
   */
  readonly review?: boolean | undefined;
}

export type TransitionOutcome =
  | { readonly kind: "done"; readonly row: EnvelopeRow; readonly event: EventRow }
  | { readonly kind: "not-found" }
  | { readonly kind: "not-allowed"; readonly current: LifecycleState; readonly message: string };

export interface ListFilter {
  readonly tenantId?: string;
  readonly actorSubject?: string;
  readonly states?: readonly LifecycleState[];
  readonly kinds?: readonly number[];
  readonly receivedAfterMs?: number;
  readonly receivedBeforeMs?: number;
  /** Envelopes with an id below this one (ids sort by admission time): the keyset cursor. */
  readonly beforeEnvelopeId?: string;
  readonly limit: number;
}

export interface ExpiryInput {
  /** Envelopes whose deadline is before this time expire. */
  readonly deadlineBeforeMs: number;
  readonly nowMs: number;
  readonly limit: number;
  /** The ErrorEnvelope recorded for each state expired from, e.g. ambiguous once running. */
  readonly errors: ReadonlyMap<LifecycleState, Uint8Array>;
  readonly reasons: ReadonlyMap<LifecycleState, string>;
}

export interface LedgerStore {
  /** "sqlite" or "postgres": for logs and capabilities. */
  readonly kind: string;
  /**
   * Inserts new envelopes with their first events, in one transaction. Entries whose requestId or
   * (tenant, idempotency key) already exists are not inserted; their outcome carries the stored row.
   */
  admit(entries: readonly AdmitEntry[]): Promise<AdmitOutcome[]>;
  /** Appends one event if the lifecycle graph allows it from the current state. */
  transition(input: TransitionInput): Promise<TransitionOutcome>;
  get(envelopeId: string): Promise<EnvelopeRow | undefined>;
  events(envelopeId: string): Promise<EventRow[]>;
  /** Newest first. */
  list(filter: ListFilter): Promise<EnvelopeRow[]>;
  /** Events after the cursor in commit order; seq 0 means from the beginning. */
  eventsAfter(afterSeq: number, tenantId: string | undefined, limit: number): Promise<EventRow[]>;
  /** The seq of the latest committed event (0 when none): where a Watch "from now" starts. */
  latestSeq(): Promise<number>;
  /** What each budget counter holds now (reserved plus spent), in the order of the lines. */
  budgetUsage(lines: readonly BudgetLine[]): Promise<number[]>;
  /** Moves envelopes past their deadline to expired; returns the events appended. */
  expire(input: ExpiryInput): Promise<EventRow[]>;
  /** Deletes terminal envelopes (and their events) whose latest event is before the time. */
  compact(lastEventBeforeMs: number, limit: number): Promise<number>;
  close(): Promise<void>;
}

/**
 * The store could not be reached or could not commit. Whether a write in flight was committed is
 * unknown, so callers retry with the same request id: the ledger's idempotency makes that safe.
 */
export class LedgerUnavailableError extends Error {
  override readonly name = "LedgerUnavailableError";
}
