// The durable ledger as the service sees it: contract messages in and out, rows in the store. It
// records admitted envelopes (with idempotency), applies lifecycle transitions, answers Get, List
// and Watch, and runs the deadline sweeper and retention compaction. Store-agnostic: the same code
// runs on SQLite and PostgreSQL, and the lifecycle rules themselves live in src/core/lifecycle.ts.
import { hash } from "node:crypto";
import { create, fromBinary, type JsonObject, type JsonValue, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { compileBinaryEncoder } from "../codec/binary-encoder.js";
import { type BudgetClaim, budgetRefusal, budgetsUnavailable } from "../core/budget.js";
import { serverContractVersion } from "../core/contract-version.js";
import { createErrorEnvelope } from "../core/errors.js";
import { stateName, usageAgainstGrant } from "../core/lifecycle.js";
import { timestampMs } from "../core/validate.js";
import { HumanReviewSchema } from "../gen/envelope/v1/common_pb.js";
import { type ErrorEnvelope, ErrorEnvelopeSchema } from "../gen/envelope/v1/error_pb.js";
import {
  type ExecutionEnvelope,
  ExecutionEnvelopeSchema,
  LifecycleState,
} from "../gen/envelope/v1/execution_envelope_pb.js";
import {
  type EnvelopeRecord,
  EnvelopeRecordSchema,
  type LifecycleEvent,
  LifecycleEventSchema,
  type RecordedUsage,
  RecordedUsageSchema,
} from "../gen/envelope/v1/lifecycle_service_pb.js";
import { type RuntimeRequest, RuntimeRequestSchema } from "../gen/envelope/v1/runtime_request_pb.js";
import { type RuntimeResponse, RuntimeResponseSchema, type Usage } from "../gen/envelope/v1/runtime_response_pb.js";
import type { EnvelopeRow, EventRow, LedgerStore, ListFilter, NewEvent } from "./store.js";

/** Events of calls on a port without authentication (loopback development) are recorded as caused by this caller. */
export const unauthenticatedCaller = "unauthenticated";

/** What recording an admitted envelope came to. */
export type RecordOutcome =
  /**
   * `regranted` is set when the budgets lowered the grant: the envelope (and its binary encoding)
   * as stored then differs from the one handed in.
   */
  | {
      readonly kind: "recorded";
      readonly envelope: ExecutionEnvelope;
      readonly regranted?: { readonly encoded: Uint8Array } | undefined;
    }
  /** The same request was admitted before: its envelope, in its current state. */
  | { readonly kind: "existing"; readonly envelope: ExecutionEnvelope }
  /**
   * Nothing was recorded: the request id or idempotency key was used for a different request, or a
   * budget cannot cover the caller's minimum.
   */
  | { readonly kind: "refused"; readonly error: ErrorEnvelope };

export type TransitionResult =
  | { readonly kind: "done"; readonly envelope: ExecutionEnvelope; readonly event: LifecycleEvent }
  | { readonly kind: "refused"; readonly error: ErrorEnvelope };

export interface TransitionRequest {
  readonly envelopeId: string;
  readonly to: LifecycleState;
  readonly caller: string;
  readonly reason: string;
  readonly response?: RuntimeResponse;
  readonly error?: ErrorEnvelope;
  /** What a failed or cancelled execution consumed; a completion's comes with its response. */
  readonly usage?: Usage | undefined;
  /** A review of an expired envelope (`to` is expired): settles its reservation with `usage`. */
  readonly review?: boolean | undefined;
}

export interface LedgerOptions {
  /** Defaults to Date.now. */
  readonly now?: () => number;
}

export interface Ledger {
  readonly store: LedgerStore;
  /** Records an admitted envelope, unless the same request was recorded before (idempotency). */
  record(
    envelope: ExecutionEnvelope,
    call: { readonly caller?: { readonly principal: string } | undefined },
    encoded?: Uint8Array | undefined,
    budget?: BudgetClaim | undefined,
  ): Promise<RecordOutcome>;
  /**
   * Records a refused request as an envelope in state rejected, with its error. It takes no
   * idempotency slot: the same request, corrected, is admitted later as any other.
   */
  recordRejection(
    envelope: ExecutionEnvelope,
    error: ErrorEnvelope,
    call: { readonly caller?: { readonly principal: string } | undefined },
  ): Promise<void>;
  transition(request: TransitionRequest): Promise<TransitionResult>;
  get(envelopeId: string): Promise<EnvelopeRecord | undefined>;
  /** The envelope alone, in its current state (no events read). */
  envelope(envelopeId: string): Promise<ExecutionEnvelope | undefined>;
  list(filter: ListFilter): Promise<ExecutionEnvelope[]>;
  /** Events after the cursor ("" for the beginning), in commit order. */
  eventsAfter(cursor: string, tenantId: string | undefined, limit: number): Promise<LifecycleEvent[]>;
  /** The cursor of the latest committed event: where "from now on" starts. */
  latestCursor(): Promise<string>;
  /** Moves envelopes whose deadline passed more than graceMs ago to expired; returns how many. */
  expireDue(graceMs: number, limit?: number): Promise<LifecycleEvent[]>;
  /** Deletes terminal envelopes whose last event is older than retentionMs; returns how many. */
  compact(retentionMs: number, limit?: number): Promise<number>;
  /**
   * Resolves after this process commits its next event, after maxWaitMs (other replicas commit
   * too, unseen), or when the signal aborts: what a Watch waits on when it has caught up.
   */
  nextCommit(signal: AbortSignal, maxWaitMs: number): Promise<void>;
}

export function createLedger(store: LedgerStore, options: LedgerOptions = {}): Ledger {
  const now = options.now ?? Date.now;
  let commitWaiters: (() => void)[] = [];
  const committed = <T>(value: T): T => {
    const waiters = commitWaiters;
    commitWaiters = [];
    for (const wake of waiters) wake();
    return value;
  };

  const toEnvelope = (row: EnvelopeRow): ExecutionEnvelope => {
    const envelope = fromBinary(ExecutionEnvelopeSchema, row.envelope);
    envelope.state = row.state;
    return envelope;
  };

  return {
    store,

    async record(envelope, call, encoded, budget) {
      const caller = call.caller?.principal ?? unauthenticatedCaller;
      const request = envelope.request;
      const requestHash = idempotencyHash(envelope);
      const receivedAtMs = timestampMs(envelope.receivedAt) ?? now();
      const decidedAtMs = timestampMs(envelope.decidedAt) ?? receivedAtMs;
      const { envelopeId, tenantId, actorSubject, kind } = whoAndWhat(envelope);
      const [outcome] = committed(
        await store.admit([
          {
            // Plain fields, no spread (docs/ARCHITECTURE.md: hot-path literals).
            row: {
              envelopeId,
              tenantId,
              actorSubject,
              kind,
              state: envelope.state,
              requestId: request?.requestId ?? "",
              idempotencyKey: request?.task?.idempotencyKey ?? "",
              requestHash,
              receivedAtMs,
              deadlineMs: timestampMs(envelope.granted?.deadline) ?? 0,
              envelope: encoded ?? toBinary(ExecutionEnvelopeSchema, envelope),
              response: null,
              error: null,
              usage: null,
            },
            events: [
              { toState: LifecycleState.RECEIVED, atMs: receivedAtMs, caller, reason: "" },
              { toState: envelope.state, atMs: decidedAtMs, caller, reason: decisionReason(envelope) },
            ],
            budget,
          },
        ]),
      );
      if (outcome === undefined || outcome.kind === "inserted") {
        if (outcome?.envelope === undefined) return { kind: "recorded", envelope };
        const stored = fromBinary(ExecutionEnvelopeSchema, outcome.envelope);
        return { kind: "recorded", envelope: stored, regranted: { encoded: outcome.envelope } };
      }
      if (outcome.kind === "unavailable") {
        return {
          kind: "refused",
          error: createErrorEnvelope(serverContractVersion, {
            ...budgetsUnavailable(outcome.budgets),
            requestId: request?.requestId ?? "",
            traceId: envelope.traceId,
          }),
        };
      }
      if (outcome.kind === "short") {
        return {
          kind: "refused",
          error: createErrorEnvelope(serverContractVersion, {
            ...budgetRefusal(outcome.shortfalls),
            requestId: request?.requestId ?? "",
            traceId: envelope.traceId,
          }),
        };
      }
      const existing = outcome.row;
      if (existing.requestHash === requestHash) return { kind: "existing", envelope: toEnvelope(existing) };
      const byKey = existing.requestId !== request?.requestId;
      // A request id is unique across tenants: another tenant's envelope is not named to this caller.
      const sameTenant = existing.tenantId === (envelope.policyScope?.tenantId ?? "");
      const which = sameTenant ? ` (envelope ${existing.envelopeId})` : "";
      return {
        kind: "refused",
        error: createErrorEnvelope(serverContractVersion, {
          category: "validation.conflict",
          code: byKey ? "IDEMPOTENCY_KEY_REUSED" : "REQUEST_ID_REUSED",
          message: byKey
            ? `idempotency key "${existing.idempotencyKey}" of tenant "${existing.tenantId}" was already used for a different request${which}`
            : `request id ${existing.requestId} was already used for a different request${which}`,
          requestId: request?.requestId ?? "",
          traceId: envelope.traceId,
          envelopeId: sameTenant ? existing.envelopeId : "",
          violations: [],
        }),
      };
    },

    async recordRejection(envelope, error, call) {
      const caller = call.caller?.principal ?? unauthenticatedCaller;
      const atMs = timestampMs(envelope.receivedAt) ?? now();
      const errorBytes = toBinary(ErrorEnvelopeSchema, error);
      const detail = error.error;
      committed(
        await store.admit([
          {
            row: {
              ...whoAndWhat(envelope),
              state: LifecycleState.REJECTED,
              // Unique and never a request's own id, so a refusal holds no idempotency slot.
              requestId: `rejected:${envelope.envelopeId}`,
              idempotencyKey: "",
              requestHash: "",
              receivedAtMs: atMs,
              deadlineMs: 0,
              envelope: toBinary(ExecutionEnvelopeSchema, envelope),
              response: null,
              error: errorBytes,
              usage: null,
            },
            events: [
              { toState: LifecycleState.RECEIVED, atMs, caller, reason: "" },
              {
                toState: LifecycleState.REJECTED,
                atMs,
                caller,
                reason: `${detail?.category ?? ""} ${detail?.code ?? ""}`.trim(),
                error: errorBytes,
              },
            ],
          },
        ]),
      );
    },

    async transition(t) {
      let usage: Uint8Array | null = null;
      let spent: Record<string, number> | undefined;
      const reported = t.to === LifecycleState.COMPLETED ? t.response?.usage : t.usage;
      if (t.to === LifecycleState.COMPLETED || reported !== undefined) {
        // The grant never changes after admission, so reading it outside the transition's own
        // transaction is safe; the state check happens atomically in the store.
        const row = await store.get(t.envelopeId);
        if (row === undefined) return { kind: "refused", error: envelopeNotFound(t.envelopeId) };
        const granted = fromBinary(ExecutionEnvelopeSchema, row.envelope).granted;
        const recorded = recordedUsage(reported, granted);
        usage = toBinary(RecordedUsageSchema, recorded);
        spent = {
          tokens: Number(recorded.tokens),
          costUsdMicros: Number(recorded.costUsdMicros),
          steps: Number(recorded.steps),
        };
      }
      const response = t.response === undefined ? null : toBinary(RuntimeResponseSchema, t.response);
      const error = t.error === undefined ? null : toBinary(ErrorEnvelopeSchema, t.error);
      const event: NewEvent = { toState: t.to, atMs: now(), caller: t.caller, reason: t.reason, usage, error };
      const outcome = committed(
        await store.transition({ envelopeId: t.envelopeId, event, response, error, usage, spent, review: t.review }),
      );
      switch (outcome.kind) {
        case "done":
          return { kind: "done", envelope: toEnvelope(outcome.row), event: toEvent(outcome.event) };
        case "not-found":
          return { kind: "refused", error: envelopeNotFound(t.envelopeId) };
        case "not-allowed":
          return {
            kind: "refused",
            error: createErrorEnvelope(serverContractVersion, {
              category: "validation.state",
              code: "TRANSITION_NOT_ALLOWED",
              message: outcome.message,
              envelopeId: t.envelopeId,
              detailsRef: `state:${stateName(outcome.current)}`,
            }),
          };
      }
    },

    async get(envelopeId) {
      const [row, events] = await Promise.all([store.get(envelopeId), store.events(envelopeId)]);
      if (row === undefined) return undefined;
      return create(EnvelopeRecordSchema, {
        envelope: toEnvelope(row),
        events: events.map(toEvent),
        ...(row.response === null ? {} : { response: fromBinary(RuntimeResponseSchema, row.response) }),
        ...(row.error === null ? {} : { error: fromBinary(ErrorEnvelopeSchema, row.error) }),
        ...(row.usage === null ? {} : { usage: fromBinary(RecordedUsageSchema, row.usage) }),
      });
    },

    async envelope(envelopeId) {
      const row = await store.get(envelopeId);
      return row === undefined ? undefined : toEnvelope(row);
    },

    async list(filter) {
      return (await store.list(filter)).map(toEnvelope);
    },

    async eventsAfter(cursor, tenantId, limit) {
      return (await store.eventsAfter(parseCursor(cursor), tenantId, limit)).map(toEvent);
    },

    async latestCursor() {
      return String(await store.latestSeq());
    },

    async expireDue(graceMs, limit = 1000) {
      const nowMs = now();
      const events = await store.expire({
        deadlineBeforeMs: nowMs - graceMs,
        nowMs,
        limit,
        errors: expiryErrors,
        reasons: expiryReasons,
      });
      return committed(events).map(toEvent);
    },

    nextCommit(signal, maxWaitMs) {
      return new Promise<void>((resolve) => {
        if (signal.aborted) {
          resolve();
          return;
        }
        const done = () => {
          clearTimeout(timer);
          signal.removeEventListener("abort", done);
          resolve();
        };
        const timer = setTimeout(done, maxWaitMs);
        signal.addEventListener("abort", done, { once: true });
        commitWaiters.push(done);
      });
    },

    compact: (retentionMs, limit = 10_000) => store.compact(now() - retentionMs, limit),
  };
}

/** A Watch cursor is the decimal commit sequence of an event; "" is the beginning. */
export function parseCursor(cursor: string): number {
  if (cursor === "") return 0;
  if (!/^\d{1,15}$/.test(cursor)) throw new RangeError("not a cursor");
  return Number(cursor);
}

/**
 * What idempotency compares: the request without its requestId and occurredAtUtc, which a client
 * may draw afresh when it retries, in a canonical encoding: map entries and JSON object keys sorted,
 * since clients need not send them in the same order twice (Go's maps iterate at random).
 */
function idempotencyHash(envelope: ExecutionEnvelope): string {
  const request = envelope.request;
  if (request === undefined) return "";
  // Copies made by a spread alone, then assigned to (docs/ARCHITECTURE.md: hot-path literals).
  const canonical: RuntimeRequest = { ...request };
  canonical.requestId = "";
  canonical.occurredAtUtc = undefined;
  canonical.contextPolicy = sortedJson(request.contextPolicy);
  canonical.modelRoute = sortedJson(request.modelRoute);
  canonical.memoryPolicy = sortedJson(request.memoryPolicy);
  if (request.task !== undefined) {
    const task = { ...request.task };
    task.input = sortedJson(request.task.input);
    canonical.task = task;
  }
  if (request.budget !== undefined) {
    const budget = { ...request.budget };
    budget.resources = sortedJson(request.budget.resources) as Record<string, number>;
    canonical.budget = budget;
  }
  const bytes = requestEncoder?.encode(canonical) ?? toBinary(RuntimeRequestSchema, canonical);
  return hash("sha256", bytes, "hex");
}

// toBinary's bytes, several times faster: the idempotency hash of every admission encodes its request.
const requestEncoder = compileBinaryEncoder(RuntimeRequestSchema);

/** A JSON value with every object's keys in sorted order, recursively. */
function sortedJson<T extends JsonValue | undefined>(value: T): T {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) return value.map(sortedJson) as T;
  const out: JsonObject = {};
  for (const key of Object.keys(value).sort()) out[key] = sortedJson((value as JsonObject)[key] as JsonValue);
  return out as T;
}

/** The columns an envelope row takes from the envelope itself: its id, tenant, actor and kind. */
function whoAndWhat(envelope: ExecutionEnvelope) {
  return {
    envelopeId: envelope.envelopeId,
    tenantId: envelope.policyScope?.tenantId ?? "",
    actorSubject: envelope.policyScope?.actorSubject ?? "",
    kind: envelope.kind,
  };
}

function decisionReason(envelope: ExecutionEnvelope): string {
  const reasons = envelope.decision?.reasons ?? [];
  return reasons.length === 0 ? "within limits" : reasons.map((r) => r.code).join(", ");
}

function recordedUsage(usage: Usage | undefined, granted: ExecutionEnvelope["granted"]): RecordedUsage {
  const u = usageAgainstGrant(usage, granted);
  return create(RecordedUsageSchema, {
    tokens: BigInt(u.tokens),
    costUsdMicros: BigInt(u.costUsdMicros),
    steps: BigInt(u.steps),
    overrunDimensions: [...u.overrunDimensions],
  });
}

function toEvent(row: EventRow): LifecycleEvent {
  return create(LifecycleEventSchema, {
    cursor: String(row.seq),
    envelopeId: row.envelopeId,
    envelopeSequence: row.envelopeSequence,
    fromState: row.fromState,
    toState: row.toState,
    occurredAt: timestampFromMs(row.atMs),
    caller: row.caller,
    reason: row.reason,
    tenantId: row.tenantId,
    kind: row.kind,
    ...(row.usage === null ? {} : { usage: fromBinary(RecordedUsageSchema, row.usage) }),
    ...(row.error === null ? {} : { error: fromBinary(ErrorEnvelopeSchema, row.error) }),
  });
}

/** The error of a call that found the ledger unreachable: retryable, thanks to idempotency. */
export function ledgerUnavailable(requestId = ""): ErrorEnvelope {
  return createErrorEnvelope(serverContractVersion, {
    category: "dependency",
    code: "LEDGER_UNAVAILABLE",
    message: "the envelope ledger is unavailable; retry with the same request id",
    requestId,
    retryable: true,
  });
}

/** The error of a call naming an envelope the ledger does not have (or the caller may not see). */
export function envelopeNotFound(envelopeId: string): ErrorEnvelope {
  return createErrorEnvelope(serverContractVersion, {
    category: "validation.not-found",
    code: "ENVELOPE_NOT_FOUND",
    message: `the ledger has no envelope ${JSON.stringify(envelopeId)}`,
    envelopeId,
  });
}

// An envelope that expires before it started never reached its backend as far as the ledger knows;
// one that expires while running may have had side effects: that outcome is ambiguous and needs
// review before anything is retried (the contract's tool ambiguous-outcome example).
const expiryErrors: ReadonlyMap<LifecycleState, Uint8Array> = new Map([
  [
    LifecycleState.PENDING_APPROVAL,
    toBinary(
      ErrorEnvelopeSchema,
      createErrorEnvelope(serverContractVersion, {
        category: "timeout",
        code: "EXPIRED_AWAITING_APPROVAL",
        message: "the deadline passed before anyone approved the request; nothing ran",
        retryable: false,
      }),
    ),
  ],
  [
    LifecycleState.ADMITTED,
    toBinary(
      ErrorEnvelopeSchema,
      createErrorEnvelope(serverContractVersion, {
        category: "timeout",
        code: "EXPIRED_BEFORE_START",
        message: "the deadline passed before the execution was reported started",
        retryable: false,
      }),
    ),
  ],
  [
    LifecycleState.RUNNING,
    toBinary(
      ErrorEnvelopeSchema,
      create(ErrorEnvelopeSchema, {
        ...createErrorEnvelope(serverContractVersion, {
          category: "timeout",
          code: "EXPIRED_AFTER_DISPATCH",
          message:
            "the deadline passed after dispatch without an outcome; authoritative state must be checked before retry",
          retryable: false,
        }),
        status: "expired",
        humanReview: create(HumanReviewSchema, {
          state: "required",
          reason: "Ambiguous outcome: expired after dispatch",
        }),
      }),
    ),
  ],
]);
const expiryReasons: ReadonlyMap<LifecycleState, string> = new Map([
  [LifecycleState.PENDING_APPROVAL, "deadline passed awaiting approval"],
  [LifecycleState.ADMITTED, "deadline passed before start"],
  [LifecycleState.RUNNING, "deadline passed after dispatch: ambiguous outcome, review required"],
]);
