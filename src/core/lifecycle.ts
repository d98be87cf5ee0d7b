// The lifecycle graph of an envelope and the arithmetic of recorded usage: pure rules that every
// ledger store applies inside its own transaction, so that the rules cannot differ between stores.
import { type GrantedResources, LifecycleState } from "../gen/envelope/v1/execution_envelope_pb.js";
import type { Usage } from "../gen/envelope/v1/runtime_response_pb.js";

const S = LifecycleState;

/**
 * Where each state may go. received is the first event of every envelope; admitted, rejected and
 * pending_approval come from the decision; the rest from the lifecycle RPCs and the deadline sweeper.
 * An admitted envelope may fail before it starts (dispatch failed); only a running one completes.
 */
const successors: Readonly<Record<LifecycleState, readonly LifecycleState[]>> = {
  [S.UNSPECIFIED]: [S.RECEIVED],
  [S.RECEIVED]: [S.ADMITTED, S.REJECTED, S.PENDING_APPROVAL],
  [S.PENDING_APPROVAL]: [S.ADMITTED, S.REJECTED, S.CANCELLED, S.EXPIRED],
  [S.ADMITTED]: [S.RUNNING, S.FAILED, S.CANCELLED, S.EXPIRED],
  [S.RUNNING]: [S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED],
  [S.REJECTED]: [],
  [S.COMPLETED]: [],
  [S.FAILED]: [],
  [S.CANCELLED]: [],
  [S.EXPIRED]: [],
};

export function isTerminal(state: LifecycleState): boolean {
  return successors[state].length === 0;
}

/**
 * Whether a move settles the envelope's budget reservations. An envelope that expires once admitted
 * keeps them: whether the work ran, and what it consumed, is unknown until someone reviews it. One
 * that expires awaiting approval never ran.
 */
export function settlesBudgets(from: LifecycleState, to: LifecycleState): boolean {
  return isTerminal(to) && (to !== S.EXPIRED || from === S.PENDING_APPROVAL);
}

/** States the deadline sweeper moves to expired once their deadline and the grace period pass. */
export const expirableStates: readonly LifecycleState[] = [S.PENDING_APPROVAL, S.ADMITTED, S.RUNNING];

/** "pending_approval" for PENDING_APPROVAL: the contract's spelling of a state. */
export function stateName(state: LifecycleState): string {
  return (S[state] ?? "UNSPECIFIED").toLowerCase();
}

export type TransitionCheck =
  | { readonly ok: true }
  | { readonly ok: false; readonly code: "TRANSITION_NOT_ALLOWED"; readonly message: string };

export function checkTransition(from: LifecycleState, to: LifecycleState): TransitionCheck {
  if (successors[from].includes(to)) return { ok: true };
  const allowed = successors[from].map(stateName);
  const message = isTerminal(from)
    ? `the envelope is ${stateName(from)}, a final state; it cannot become ${stateName(to)}`
    : `the envelope is ${stateName(from)}; it can become ${allowed.join(", ")}, not ${stateName(to)}`;
  return { ok: false, code: "TRANSITION_NOT_ALLOWED", message };
}

/** A review (ReviewExpired) records a finding on an expired envelope, and only on one. */
export function checkReview(state: LifecycleState): TransitionCheck {
  if (state === S.EXPIRED) return { ok: true };
  return {
    ok: false,
    code: "TRANSITION_NOT_ALLOWED",
    message: `the envelope is ${stateName(state)}; only an expired envelope is reviewed`,
  };
}

/** An event's time: never earlier than the envelope's previous event, whatever the clocks say. */
export function eventTimeMs(nowMs: number, previousEventMs: number): number {
  return Math.max(nowMs, previousEventMs);
}

export interface UsageAgainstGrant {
  readonly tokens: number;
  readonly costUsdMicros: number;
  readonly steps: number;
  /** Dimensions where usage exceeded the grant, in the grant's field names. */
  readonly overrunDimensions: readonly string[];
}

/**
 * Usage in the grant's units: tokens are prompt plus output tokens (cached tokens are part of the
 * prompt), cost is rounded up to a whole micro-dollar so that rounding never hides an overrun.
 * Nothing is clipped: usage above the grant is kept as reported and flagged.
 */
export function usageAgainstGrant(usage: Usage | undefined, granted: GrantedResources | undefined): UsageAgainstGrant {
  const tokens = (usage?.promptTokens ?? 0) + (usage?.outputTokens ?? 0);
  const costUsdMicros = Math.ceil(Math.round((usage?.estimatedCostUsd ?? 0) * 1e9) / 1e3);
  const steps = usage?.steps ?? 0;
  const overrunDimensions: string[] = [];
  if (tokens > (granted?.tokens ?? 0)) overrunDimensions.push("tokens");
  if (costUsdMicros > Number(granted?.costUsdMicros ?? 0n)) overrunDimensions.push("cost_usd_micros");
  if (steps > (granted?.steps ?? 0)) overrunDimensions.push("steps");
  return { tokens, costUsdMicros, steps, overrunDimensions };
}
