// The ledger's tables as both stores read them back: column rows to the store interface's rows,
// one mapping for SQLite and PostgreSQL alike.
import type { EnvelopeRow, EventRow } from "./store.js";

/**
 * A row as the drivers return it: pg gives BIGINT as a string (it may exceed 2^53), SQLite a
 * number; blobs are Buffers.
 */
export interface RawEnvelope {
  envelope_id: string;
  tenant_id: string;
  actor_subject: string;
  kind: number;
  state: number;
  request_id: string;
  idempotency_key: string | null;
  request_hash: string;
  received_at_ms: string | number;
  deadline_ms: string | number;
  last_event_ms: string | number;
  event_count: number;
  envelope: Uint8Array;
  response: Uint8Array | null;
  error: Uint8Array | null;
  usage: Uint8Array | null;
}

export interface RawEvent {
  seq: string | number;
  envelope_id: string;
  envelope_sequence: number;
  tenant_id: string;
  kind: number;
  from_state: number;
  to_state: number;
  at_ms: string | number;
  caller: string;
  reason: string;
  usage: Uint8Array | null;
  error: Uint8Array | null;
}

export const envelopeRow = (r: RawEnvelope): EnvelopeRow => ({
  envelopeId: r.envelope_id,
  tenantId: r.tenant_id,
  actorSubject: r.actor_subject,
  kind: r.kind,
  state: r.state,
  requestId: r.request_id,
  idempotencyKey: r.idempotency_key ?? "",
  requestHash: r.request_hash,
  receivedAtMs: Number(r.received_at_ms),
  deadlineMs: Number(r.deadline_ms),
  lastEventMs: Number(r.last_event_ms),
  eventCount: r.event_count,
  envelope: r.envelope,
  response: r.response,
  error: r.error,
  usage: r.usage,
});

export const eventRow = (r: RawEvent): EventRow => ({
  seq: Number(r.seq),
  envelopeId: r.envelope_id,
  envelopeSequence: r.envelope_sequence,
  tenantId: r.tenant_id,
  kind: r.kind,
  fromState: r.from_state,
  toState: r.to_state,
  atMs: Number(r.at_ms),
  caller: r.caller,
  reason: r.reason,
  usage: r.usage,
  error: r.error,
});

/** A budget_reservations row as both stores return it. */
export interface RawReservation {
  readonly envelope_id: string;
  readonly budget_key: string;
  readonly window_start_ms: number | string;
  readonly dimension: string;
  readonly amount: number | string;
}
