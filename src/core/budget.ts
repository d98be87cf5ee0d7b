// Budgets: allowances per tenant (or per actor, or per session of a tenant) over windows, and the
// arithmetic of granting within what is left of them. Pure: the ledger stores keep the counters and
// call allocate() inside their own transaction, so that admissions on any number of replicas sharing
// one database are granted against the same numbers and can never, together, exceed a budget.
import { create } from "@bufbuild/protobuf";
import type { PolicyDecision } from "../gen/envelope/v1/common_pb.js";
import {
  DecisionOutcome,
  type DecisionReason,
  DecisionReasonSchema,
  type ExecutionEnvelope,
} from "../gen/envelope/v1/execution_envelope_pb.js";
import type { BudgetMinimum, RuntimeRequest } from "../gen/envelope/v1/runtime_request_pb.js";
import type { Amounts, Decided } from "./decide.js";
import type { ErrorInit } from "./errors.js";
import { usdToMicros, violation } from "./validate.js";

/**
 * "request" caps each request; the others are calendar windows in UTC that renew when they end.
 * "parent" is not configured: it is the grant of the envelope a delegated request derives from,
 * which its delegated requests draw on together and which never renews.
 */
export type BudgetWindow = "request" | "minute" | "hour" | "day" | "month" | "parent";
export const budgetWindows: readonly BudgetWindow[] = ["request", "minute", "hour", "day", "month"];

/** Whose allowance it is: the tenant's, or each actor's or each session's within the tenant. */
export type BudgetScope = "tenant" | "actor" | "session";

export interface BudgetDefinition {
  /** Unique; names the budget in decisions, errors and counters. */
  readonly name: string;
  /** A tenant id, or "*": every tenant has an allowance of its own. */
  readonly tenant: string;
  readonly per: BudgetScope;
  /** The window of the consumable dimensions (tokens, cost, steps). */
  readonly window: BudgetWindow;
  /** Limits per dimension, in accounting units: "tokens", "costUsdMicros", "steps", "concurrent", "resources.NAME". */
  readonly limits: Readonly<Record<string, number>>;
  /**
   * The failure policy: when the store cannot reach this budget's counters in time (PostgreSQL
   * row locks held past ledger.budgetLockTimeout), false refuses the request (fail closed, the
   * default), true admits it without reserving from this budget and marks the envelope degraded.
   */
  readonly failOpen?: boolean;
}

/**
 * Consumable dimensions are spent by usage and renew with their window. The others are held while
 * an execution has not ended and given back when it ends, whatever the window: "concurrent" counts
 * executions, "resources.NAME" counts units such as GPUs.
 */
export const consumableDimensions: ReadonlySet<string> = new Set(["tokens", "costUsdMicros", "steps"]);

/** One limit that applies to one admission: a counter in the store. */
export interface BudgetLine {
  readonly budget: string;
  /** The counter's key: the budget name and whose allowance it is, e.g. "daily/tenant:acme". */
  readonly key: string;
  readonly dimension: string;
  readonly limit: number;
  /** The window's start (the counter's second key part); 0 for held dimensions. */
  readonly windowStartMs: number;
  /** When the window renews; 0 for held dimensions, which free up when an execution ends. */
  readonly windowEndMs: number;
  readonly window: BudgetWindow;
  /** Admit without this line when its counter cannot be reached (the definition's failure policy). */
  readonly failOpen?: boolean;
}

/** One string per counter (key, window, dimension): what the stores and Explain index counters by. */
export function counterId(key: string, windowStartMs: number, dimension: string): string {
  return `${key}\n${windowStartMs}\n${dimension}`;
}

/** What an admission asks of the budgets: handed to the store with the envelope. */
export interface BudgetClaim {
  readonly lines: readonly BudgetLine[];
  /** Per dimension, the grant before budgets: after the limits and policy caps. */
  readonly wanted: Readonly<Record<string, number>>;
  /** Per dimension, the least the caller accepts. */
  readonly minimum: Readonly<Record<string, number>>;
}

export interface Reservation {
  readonly key: string;
  readonly windowStartMs: number;
  readonly dimension: string;
  readonly amount: number;
}

/** A budget that held a dimension below what was wanted. */
export interface BudgetShort {
  readonly line: BudgetLine;
  readonly remaining: number;
  readonly wanted: number;
  readonly minimum: number;
}

export type Allocation =
  | {
      readonly kind: "granted";
      /** Per dimension of the claim. */
      readonly granted: Readonly<Record<string, number>>;
      readonly reservations: readonly Reservation[];
      /** Budgets that granted less than wanted (but at least the minimum). */
      readonly clamped: readonly BudgetShort[];
    }
  | { readonly kind: "short"; readonly shortfalls: readonly BudgetShort[] };

/** The windows' bounds that contain `nowMs`, in UTC. */
export function windowBounds(window: BudgetWindow, nowMs: number): { startMs: number; endMs: number } {
  const unit = { minute: 60_000, hour: 3_600_000, day: 86_400_000 }[window as "minute" | "hour" | "day"];
  if (unit !== undefined) {
    const startMs = Math.floor(nowMs / unit) * unit;
    return { startMs, endMs: startMs + unit };
  }
  if (window === "month") {
    const d = new Date(nowMs);
    return {
      startMs: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1),
      endMs: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1),
    };
  }
  return { startMs: 0, endMs: 0 };
}

export interface BudgetSubject {
  readonly tenantId: string;
  readonly actorSubject: string;
  /** Empty when the request has no session: per-session budgets do not apply to it. */
  readonly sessionId: string;
}

/** Whose allowances a request draws on. */
export function budgetSubject(request: RuntimeRequest): BudgetSubject {
  return {
    tenantId: request.tenant?.id ?? "",
    actorSubject: request.actor?.subject ?? "",
    sessionId: request.session?.id ?? "",
  };
}

/** The budgets that apply to a request, as counters at `nowMs`. Per-request budgets are caps, not lines. */
export function budgetLines(
  definitions: readonly BudgetDefinition[],
  subject: BudgetSubject,
  nowMs: number,
): BudgetLine[] {
  const lines: BudgetLine[] = [];
  for (const d of definitions) {
    if (d.tenant !== "*" && d.tenant !== subject.tenantId) continue;
    const whose = scopeKey(d.per, subject);
    if (whose === undefined) continue;
    const key = `${d.name}/${whose}`;
    const bounds = windowBounds(d.window, nowMs);
    for (const [dimension, limit] of Object.entries(d.limits)) {
      const consumable = consumableDimensions.has(dimension);
      if (consumable && d.window === "request") continue;
      lines.push({
        budget: d.name,
        key,
        dimension,
        limit,
        windowStartMs: consumable ? bounds.startMs : 0,
        windowEndMs: consumable ? bounds.endMs : 0,
        window: d.window,
        ...(d.failOpen === true ? { failOpen: true } : {}),
      });
    }
  }
  return lines;
}

/**
 * A delegated request's budget is drawn from its parent's grant: all the requests delegated from
 * one envelope together get no more tokens, cost and steps than it was granted.
 */
export function parentLines(parent: ExecutionEnvelope): BudgetLine[] {
  const g = parent.granted;
  const limits = { tokens: g?.tokens ?? 0, costUsdMicros: Number(g?.costUsdMicros ?? 0n), steps: g?.steps ?? 0 };
  return Object.entries(limits).map(([dimension, limit]) => ({
    budget: `parent ${parent.envelopeId}`,
    key: `parent/${parent.envelopeId}`,
    dimension,
    limit,
    windowStartMs: 0,
    windowEndMs: 0,
    window: "parent" as const,
  }));
}

/** Per-request caps of the budgets that apply ("request" window): the lowest per dimension. */
export function requestCaps(
  definitions: readonly BudgetDefinition[],
  subject: BudgetSubject,
): { dimension: string; cap: number; budget: string }[] {
  const caps = new Map<string, { dimension: string; cap: number; budget: string }>();
  for (const d of definitions) {
    if (d.window !== "request" || (d.tenant !== "*" && d.tenant !== subject.tenantId)) continue;
    if (scopeKey(d.per, subject) === undefined) continue;
    for (const [dimension, cap] of Object.entries(d.limits)) {
      if (!consumableDimensions.has(dimension)) continue;
      const seen = caps.get(dimension);
      if (seen === undefined || cap < seen.cap) caps.set(dimension, { dimension, cap, budget: d.name });
    }
  }
  return [...caps.values()];
}

function scopeKey(per: BudgetScope, s: BudgetSubject): string | undefined {
  switch (per) {
    case "tenant":
      return `tenant:${s.tenantId}`;
    case "actor":
      return `tenant:${s.tenantId}/actor:${s.actorSubject}`;
    case "session":
      return s.sessionId === "" ? undefined : `tenant:${s.tenantId}/session:${s.sessionId}`;
  }
}

/**
 * Grants each dimension min(wanted, what every budget on it has left), or refuses when that is
 * below the minimum somewhere. `used(line)` is what the counter holds now (reserved plus spent),
 * read in the same transaction that will record the reservations.
 */
export function allocate(claim: BudgetClaim, used: (line: BudgetLine) => number): Allocation {
  const granted: Record<string, number> = { ...claim.wanted };
  const limiting = new Map<string, BudgetShort>();
  for (const line of claim.lines) {
    const wanted = claim.wanted[line.dimension];
    if (wanted === undefined) continue;
    const remaining = line.limit - used(line);
    if (remaining < (granted[line.dimension] as number)) {
      granted[line.dimension] = Math.max(0, remaining);
      limiting.set(line.dimension, { line, remaining, wanted, minimum: claim.minimum[line.dimension] ?? 1 });
    }
  }
  const shortfalls = [...limiting.values()].filter((s) => Math.max(0, s.remaining) < s.minimum);
  if (shortfalls.length > 0) return { kind: "short", shortfalls };
  const reservations: Reservation[] = [];
  for (const line of claim.lines) {
    const amount = granted[line.dimension];
    if (amount === undefined) continue;
    reservations.push({ key: line.key, windowStartMs: line.windowStartMs, dimension: line.dimension, amount });
  }
  return { kind: "granted", granted, reservations, clamped: [...limiting.values()] };
}

/** The dimension's contract field, for errors: where the caller asked for it. */
function requestField(dimension: string): string {
  if (dimension === "tokens") return "budget.maxTokens";
  if (dimension === "costUsdMicros") return "budget.maxCostUsd";
  if (dimension === "steps") return "budget.maxSteps";
  if (dimension.startsWith("resources.")) return `budget.resources[${JSON.stringify(dimension.slice(10))}]`;
  return "";
}

function amountText(dimension: string, amount: number): string {
  if (dimension === "costUsdMicros") return `${amount} micro-dollars`;
  if (dimension === "concurrent") return `${amount} concurrent executions`;
  if (dimension.startsWith("resources.")) return `${amount} ${dimension.slice(10)}`;
  return `${amount} ${dimension}`;
}

/** "this day (until 2026-11-23T00:00:00.000Z)", or how a held dimension frees up. */
function renewal(line: BudgetLine): string {
  if (line.window === "parent") return "of the parent envelope's grant";
  if (line.windowEndMs === 0) return "until a running execution ends";
  return `this ${line.window} (it renews at ${new Date(line.windowEndMs).toISOString()})`;
}

/** Why a dimension was granted less than wanted, for the decision's reasons. */
function clampMessage(s: BudgetShort): string {
  return `budget "${s.line.budget}" has ${amountText(s.line.dimension, Math.max(0, s.remaining))} left ${renewal(s.line)}; ${amountText(s.line.dimension, s.wanted)} wanted`;
}

/**
 * The refusal of a request that no budget can serve now: a capacity error, retryable, with the
 * time the last of the short windows renews when every shortfall is in a window.
 */
export function budgetRefusal(shortfalls: readonly BudgetShort[]): ErrorInit {
  const ends = shortfalls.map((s) => s.line.windowEndMs);
  const retryAfterMs = ends.every((e) => e > 0) ? Math.max(...ends) : undefined;
  return {
    category: "capacity",
    code: "BUDGET_EXHAUSTED",
    retryable: true,
    message:
      shortfalls.length === 1
        ? `budget "${shortfalls[0]?.line.budget}" cannot cover the least this request accepts`
        : `${shortfalls.length} budgets cannot cover the least this request accepts`,
    violations: shortfalls.map((s) =>
      violation(
        requestField(s.line.dimension),
        "budget.remaining",
        `budget "${s.line.budget}" has ${amountText(s.line.dimension, Math.max(0, s.remaining))} left ${renewal(s.line)}; at least ${amountText(s.line.dimension, s.minimum)} are needed`,
      ),
    ),
    retryAfterMs,
  };
}

/** The caller's minimum per dimension of the wanted grant; unset dimensions accept any positive grant. */
function minimumAmounts(minimum: BudgetMinimum | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  if (minimum === undefined) return out;
  if (minimum.tokens !== undefined) out.tokens = minimum.tokens;
  if (minimum.costUsd !== undefined) out.costUsdMicros = Math.max(1, usdToMicros(minimum.costUsd));
  if (minimum.steps !== undefined) out.steps = minimum.steps;
  for (const [name, count] of Object.entries(minimum.resources)) out[`resources.${name}`] = count;
  return out;
}

/** Amounts by dimension name, as budgets count them. */
function dimensionsOf(a: Amounts): Record<string, number> {
  const out: Record<string, number> = { tokens: a.tokens, costUsdMicros: a.costUsdMicros, steps: a.steps };
  for (const [name, count] of Object.entries(a.resources)) out[`resources.${name}`] = count;
  return out;
}

function withDimensions(a: Amounts, dims: Readonly<Record<string, number>>): Amounts {
  const resources: Record<string, number> = {};
  for (const name of Object.keys(a.resources))
    resources[name] = dims[`resources.${name}`] ?? (a.resources[name] as number);
  return {
    tokens: dims.tokens ?? a.tokens,
    costUsdMicros: dims.costUsdMicros ?? a.costUsdMicros,
    steps: dims.steps ?? a.steps,
    resources,
  };
}

type Granted = Extract<Decided, { kind: "granted" }>;

export type Budgeted =
  /** `claim` unset: nothing to allocate from a counter. */
  (Granted & { readonly claim?: BudgetClaim | undefined }) | { readonly kind: "rejected"; readonly refusal: ErrorInit };

/**
 * The budgets' part of a decision that needs no counter: per-request budgets cap the grant, the
 * caller's minimum is held against every cap so far, and the windowed and held budgets become the
 * claim the ledger allocates. `decisionId` names the budgets' policy decision on the envelope.
 */
export function applyBudgets(
  request: RuntimeRequest,
  decided: Granted,
  config: { readonly budgets: readonly BudgetDefinition[]; readonly budgetsVersion: string },
  nowMs: number,
  decisionId: string,
  parent?: ExecutionEnvelope | undefined,
): Budgeted {
  const noMinimum = request.budget?.minimumAcceptable === undefined;
  // The Admit path without budgets: the same decision passed on, nothing allocated.
  if (config.budgets.length === 0 && noMinimum && parent === undefined) return decided;
  const minimum = minimumAmounts(request.budget?.minimumAcceptable);

  const subject = budgetSubject(request);
  const granted = dimensionsOf(decided.granted);
  const reasons = [...decided.reasons];
  for (const { dimension, cap, budget } of requestCaps(config.budgets, subject)) {
    const want = granted[dimension] as number;
    if (want <= cap) continue;
    granted[dimension] = cap;
    reasons.push(
      reason(
        dimension,
        decisionId,
        `${amountText(dimension, want)} wanted; budget "${budget}" allows ${cap} per request`,
      ),
    );
  }
  const below = Object.entries(minimum).filter(([dimension, least]) => (granted[dimension] ?? 0) < least);
  if (below.length > 0) {
    return {
      kind: "rejected",
      refusal: {
        category: "policy",
        code: "GRANT_BELOW_MINIMUM",
        message: "the most this service grants the request is less than its minimum acceptable grant",
        violations: below.map(([dimension, least]) =>
          violation(
            minimumField(dimension),
            "minimum.grantable",
            `at most ${amountText(dimension, granted[dimension] ?? 0)} can be granted per request; the minimum is ${least}`,
          ),
        ),
      },
    };
  }
  const lines = budgetLines(config.budgets, subject, nowMs);
  if (parent !== undefined) lines.push(...parentLines(parent));
  const capped = reasons.length > decided.reasons.length;
  if (lines.length === 0 && !capped) return decided;
  const policyDecisions = [
    ...decided.policyDecisions,
    budgetDecision(decisionId, capped ? "cap" : "reserve", config.budgetsVersion),
  ];
  const result = { ...decided, granted: withDimensions(decided.granted, granted), reasons, policyDecisions };
  if (lines.length === 0) return result;
  return { ...result, claim: { lines, wanted: { ...granted, concurrent: 1 }, minimum } };
}

/** A decision with what the ledger allocated from the budgets; the same decision when nothing was clamped. */
export function withAllocation(
  decided: Budgeted & { kind: "granted" },
  allocation: Extract<Allocation, { kind: "granted" }>,
  decisionId: string,
): Budgeted & { kind: "granted" } {
  if (allocation.clamped.length === 0) return decided;
  return {
    ...decided,
    granted: withDimensions(decided.granted, allocation.granted),
    reasons: [
      ...decided.reasons,
      ...allocation.clamped.map((s) => reason(s.line.dimension, decisionId, clampMessage(s))),
    ],
    policyDecisions: decided.policyDecisions.map((d) =>
      d.checkpoint === budgetCheckpoint ? { ...d, effect: "cap" } : d,
    ),
  };
}

/**
 * The envelope as allocated: granted amounts lowered where a budget had less left, with a reason
 * each, and the outcome partial. Applied by the ledger inside the transaction that reserved them.
 */
export function regrantEnvelope(
  envelope: ExecutionEnvelope,
  allocation: Extract<Allocation, { kind: "granted" }>,
): void {
  if (allocation.clamped.length === 0 || envelope.granted === undefined || envelope.decision === undefined) return;
  const g = envelope.granted;
  const dims = allocation.granted;
  if (dims.tokens !== undefined) g.tokens = dims.tokens;
  if (dims.costUsdMicros !== undefined) g.costUsdMicros = BigInt(dims.costUsdMicros);
  if (dims.steps !== undefined) g.steps = dims.steps;
  for (const name of Object.keys(g.resources))
    g.resources[name] = dims[`resources.${name}`] ?? (g.resources[name] as number);
  const decision = envelope.decision;
  const budgetDecisionId = decision.policyDecisions.find((d) => d.checkpoint === budgetCheckpoint)?.decisionId ?? "";
  decision.reasons.push(...allocation.clamped.map((s) => reason(s.line.dimension, budgetDecisionId, clampMessage(s))));
  for (const d of decision.policyDecisions) if (d.checkpoint === budgetCheckpoint) d.effect = "cap";
  // An envelope held for approval stays pending; the reasons say its grant is smaller.
  if (decision.outcome === DecisionOutcome.ADMITTED) decision.outcome = DecisionOutcome.ADMITTED_PARTIAL;
}

const budgetCheckpoint = "admission.budget";

/** The budgets of lines, each named once, in order. */
export function budgetNames(lines: readonly BudgetLine[]): string[] {
  return [...new Set(lines.map((l) => l.budget))];
}

/** A refusal when budgets that fail closed could not be reached: retryable, nothing was reserved. */
export function budgetsUnavailable(budgets: readonly string[]): ErrorInit {
  return {
    category: "dependency.unavailable",
    code: "BUDGET_UNAVAILABLE",
    retryable: true,
    message: `the counters of ${budgets.map((b) => `budget "${b}"`).join(", ")} could not be reached in time, and ${budgets.length === 1 ? "it fails" : "they fail"} closed; nothing was reserved`,
  };
}

/**
 * Marks an envelope admitted without reserving from budgets whose counters could not be reached
 * (they fail open): a DEGRADED warning naming them, and the budgets' policy decision "degraded".
 */
export function degradeEnvelope(envelope: ExecutionEnvelope, budgets: readonly string[]): void {
  const decision = envelope.decision;
  if (decision === undefined) return;
  decision.warnings.push({
    $typeName: "envelope.v1.Warning",
    code: "DEGRADED",
    field: "",
    message: `admitted without reserving from ${budgets.map((b) => `budget "${b}"`).join(", ")}: the counters could not be reached in time, and the budget fails open; this execution is not counted against it`,
  });
  for (const d of decision.policyDecisions) if (d.checkpoint === budgetCheckpoint) d.effect = "degraded";
}

function budgetDecision(decisionId: string, effect: string, policyVersion: string): PolicyDecision {
  return { $typeName: "envelope.v1.PolicyDecision", decisionId, checkpoint: budgetCheckpoint, effect, policyVersion };
}

function reason(dimension: string, policyDecisionId: string, message: string): DecisionReason {
  return create(DecisionReasonSchema, { code: "GRANT_CLAMPED", dimension, policyDecisionId, message });
}

function minimumField(dimension: string): string {
  if (dimension === "costUsdMicros") return "budget.minimumAcceptable.costUsd";
  if (dimension.startsWith("resources."))
    return `budget.minimumAcceptable.resources[${JSON.stringify(dimension.slice(10))}]`;
  return `budget.minimumAcceptable.${dimension}`;
}
