// The admission core: one request in, one decision out, no I/O. The caller (the service) supplies
// the clock reading and the ids, and owns whatever happens next (recording, answering).
import { clone, create } from "@bufbuild/protobuf";
import { type Timestamp, TimestampSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Warning } from "../gen/envelope/v1/common_pb.js";
import type { ErrorDetail, ErrorEnvelope } from "../gen/envelope/v1/error_pb.js";
import {
  DecisionOutcome,
  type DecisionReason,
  type ExecutionEnvelope,
  ExecutionEnvelopeSchema,
  type ExecutionKind,
  type GrantedResources,
  LifecycleState,
  type PolicyScope,
  type RequestedResources,
} from "../gen/envelope/v1/execution_envelope_pb.js";
import type { RuntimeRequest } from "../gen/envelope/v1/runtime_request_pb.js";
import type { PolicyBundle } from "../policy/bundle.js";
import { evaluatePolicy, type PolicyVerdict } from "../policy/evaluate.js";
import { type Authorization, type AuthorizationRules, authorizeAdmission } from "./authorize.js";
import {
  allocate,
  applyBudgets,
  type BudgetClaim,
  type BudgetDefinition,
  type BudgetLine,
  budgetRefusal,
  withAllocation,
} from "./budget.js";
import type { Caller } from "./caller.js";
import { serverContractVersion } from "./contract-version.js";
import { type Amounts, type Decided, decideStatic } from "./decide.js";
import { checkDelegation, type DelegationParent } from "./delegation.js";
import { createErrorEnvelope, type ErrorInit } from "./errors.js";
import { type KindRule, kindName, resolveKind } from "./execution-kind.js";
import type { AdmissionLimits } from "./limits.js";
import { applyCaps, approvalReasons, policyRefusal, policyWarnings } from "./policy.js";
import { checkRequest, type RequestCheck, usdToMicros } from "./validate.js";

/** Everything admission decides with, fixed for the life of a configuration. */
export interface AdmissionConfig {
  readonly limits: AdmissionLimits;
  /** Identifies the limits in policy decisions, e.g. "static-limits@3f9a1c2b7d10". */
  readonly limitsVersion: string;
  readonly kindRules: readonly KindRule[];
  readonly fallbackKind: ExecutionKind;
  /** Content mode when the request leaves trace.contentMode empty. */
  readonly defaultTraceContentMode: string;
  /** Which callers may act for which tenants, actors, scopes and tools; empty: no restriction. */
  readonly authorization: AuthorizationRules;
  /** Budgets per tenant, actor or session; empty: none. Windowed ones need a ledger to count in. */
  readonly budgets: readonly BudgetDefinition[];
  /** Identifies the budget definitions in policy decisions, e.g. "budgets@0b1c2d3e4f50". */
  readonly budgetsVersion: string;
  /**
   * The policy bundle in force, read once per call so that a reload (SIGHUP) takes effect for the
   * next call without rebuilding the configuration; unset or undefined: no policy.
   */
  readonly policy?: (() => PolicyBundle | undefined) | undefined;
}

type Granted = Extract<Decided, { kind: "granted" }>;

/** Per-call inputs the core does not produce itself. */
export interface AdmitInputs {
  readonly nowMs: number;
  /** Time the request was received, when it differs from nowMs. */
  readonly receivedAtMs?: number;
  readonly envelopeId: string;
  readonly traceId: string;
  /** Warnings found while decoding (e.g. unknown fields), carried into the decision. */
  readonly decodeWarnings?: readonly Warning[] | undefined;
  /** The authenticated caller; unset on a listener that does not authenticate. */
  readonly caller?: Caller | undefined;
  /** The parent envelope named by actor.delegationId, as the service found it; unset: not looked up. */
  readonly delegationParent?: DelegationParent | undefined;
}

export type AdmissionResult =
  | {
      readonly kind: "admitted";
      readonly envelope: ExecutionEnvelope;
      /** What the ledger must reserve, atomically with the envelope; unset when no budget applies. */
      readonly budget?: BudgetClaim | undefined;
    }
  | { readonly kind: "rejected"; readonly error: ErrorEnvelope };

export function admit(request: RuntimeRequest, config: AdmissionConfig, inputs: AdmitInputs): AdmissionResult {
  const ids = { requestId: request.requestId, traceId: inputs.traceId };
  const check = checkRequest(request, config.limits, inputs.nowMs);
  if (check.kind !== "valid") return rejected({ ...ids, ...validationRefusal(check) });
  // Only a valid request is judged against the caller's grant: its fields are known to be there.
  const unauthorized = authorizationRefusal(authorizeAdmission(inputs.caller, request, config.authorization));
  if (unauthorized !== undefined) return rejected({ ...ids, ...unauthorized });
  const widening = delegationRefusal(request, inputs.delegationParent);
  if (widening !== undefined) return rejected({ ...ids, ...widening });

  const normalized = normalize(request, config);
  const requested = requestedAmounts(normalized);
  const decided = decideStatic(requested, config.limits, config.limitsVersion, `${inputs.envelopeId}/limits`);
  if (decided.kind === "rejected") {
    return rejected({ ...ids, ...decided, envelopeId: "" });
  }
  const kind = resolveKind(
    normalized.task as NonNullable<RuntimeRequest["task"]>,
    config.kindRules,
    config.fallbackKind,
  );
  const bundle = config.policy?.();
  const judged =
    bundle === undefined
      ? undefined
      : judgePolicy(bundle, normalized, kind, requested, decided.granted, inputs.caller, `${inputs.envelopeId}/policy`);
  if (judged?.refusal !== undefined) return rejected({ ...ids, ...judged.refusal });
  // Budgets grant from what the limits and the policy leave, never more.
  const budgeted = applyBudgets(
    normalized,
    withPolicy(decided, judged),
    config,
    inputs.nowMs,
    `${inputs.envelopeId}/budgets`,
    parentEnvelope(inputs.delegationParent),
  );
  if (budgeted.kind === "rejected") return rejected({ ...ids, ...budgeted.refusal });
  const pending = judged !== undefined && judged.verdict.approvals.length > 0;

  // The envelope's messages are object literals of their generated types rather than create()
  // calls: create() converts every field of its init generically, which for these small messages
  // cost more than the rest of admission. The literals hold the same fields in the same order, and
  // leave out what create() leaves out (unset message and optional fields).
  const deadline = normalized.deadlineUtc;
  const now = timestampFromMs(inputs.nowMs);
  const envelope: ExecutionEnvelope = {
    $typeName: "envelope.v1.ExecutionEnvelope",
    envelopeId: inputs.envelopeId,
    contractVersion: serverContractVersion,
    request: normalized,
    kind,
    requested: resources<RequestedResources>("envelope.v1.RequestedResources", requested, deadline),
    policyScope: policyScope(normalized),
    granted: resources<GrantedResources>("envelope.v1.GrantedResources", budgeted.granted, deadline),
    decision: {
      $typeName: "envelope.v1.Decision",
      outcome: pending
        ? DecisionOutcome.PENDING_APPROVAL
        : budgeted.reasons.length > 0
          ? DecisionOutcome.ADMITTED_PARTIAL
          : DecisionOutcome.ADMITTED,
      reasons: judged === undefined ? [...budgeted.reasons] : [...budgeted.reasons, ...approvalReasons(judged.verdict)],
      policyDecisions: [...budgeted.policyDecisions],
      warnings:
        judged === undefined
          ? [...(inputs.decodeWarnings ?? []), ...check.warnings]
          : [...(inputs.decodeWarnings ?? []), ...check.warnings, ...policyWarnings(judged.verdict)],
    },
    // An envelope a rule holds for approval waits in pending_approval until Approve or Deny.
    state: pending ? LifecycleState.PENDING_APPROVAL : LifecycleState.ADMITTED,
    receivedAt: inputs.receivedAtMs === undefined ? now : timestampFromMs(inputs.receivedAtMs),
    decidedAt: now,
    traceId: inputs.traceId,
  };
  return { kind: "admitted", envelope, budget: budgeted.claim };
}

/**
 * The record of a refused request: what was asked, by whom for whom, and why it was refused; no
 * grant. The ledger keeps it (state rejected) so that refusals are reviewed with admissions.
 */
export function rejectedEnvelope(
  request: RuntimeRequest,
  error: ErrorEnvelope,
  config: Pick<AdmissionConfig, "kindRules" | "fallbackKind">,
  inputs: Pick<AdmitInputs, "nowMs" | "envelopeId" | "traceId">,
): ExecutionEnvelope {
  const now = timestampFromMs(inputs.nowMs);
  const detail = error.error;
  return create(ExecutionEnvelopeSchema, {
    envelopeId: inputs.envelopeId,
    contractVersion: serverContractVersion,
    request,
    kind: request.task === undefined ? 0 : resolveKind(request.task, config.kindRules, config.fallbackKind),
    policyScope: policyScope(request),
    decision: {
      outcome: DecisionOutcome.REJECTED,
      reasons: [{ code: detail?.code ?? "", message: detail?.message ?? "", dimension: "" }],
    },
    state: LifecycleState.REJECTED,
    receivedAt: now,
    decidedAt: now,
    traceId: inputs.traceId,
  });
}

/** What Admit would say of a request, every blocking reason included: Explain's answer. */
export interface Explanation {
  readonly outcome: DecisionOutcome;
  /** In the order Admit checks them: validation, authorization, policy (the limits, then the bundle's rules). */
  readonly blocking: readonly ErrorDetail[];
  /** Unset when the request is too malformed to judge its amounts. */
  readonly bestGrant: GrantedResources | undefined;
  readonly grantReasons: readonly DecisionReason[];
}

/**
 * Judges a request as admit() does, without stopping at the first refusal and without making an
 * envelope: a dry run. Only a request of another contract major stops it early (its shape is unknown).
 */
export function explain(
  request: RuntimeRequest,
  config: AdmissionConfig,
  inputs: Pick<AdmitInputs, "nowMs" | "caller" | "delegationParent"> & {
    /** What each budget counter holds now, read from the ledger; unset: budgets not consulted. */
    readonly budgetUsage?: ((line: BudgetLine) => number) | undefined;
  },
): Explanation {
  const blocking: ErrorDetail[] = [];
  const block = (init: ErrorInit) =>
    blocking.push(createErrorEnvelope(serverContractVersion, init).error as ErrorDetail);
  const check = checkRequest(request, config.limits, inputs.nowMs);
  if (check.kind !== "valid") block(validationRefusal(check));
  if (check.kind === "unsupported-version") {
    return { outcome: DecisionOutcome.REJECTED, blocking, bestGrant: undefined, grantReasons: [] };
  }
  const unauthorized = authorizationRefusal(authorizeAdmission(inputs.caller, request, config.authorization));
  if (unauthorized !== undefined) block(unauthorized);
  const widening = delegationRefusal(request, inputs.delegationParent);
  if (widening !== undefined) block(widening);
  if (check.kind === "invalid") {
    return { outcome: DecisionOutcome.REJECTED, blocking, bestGrant: undefined, grantReasons: [] };
  }
  const normalized = normalize(request, config);
  const requested = requestedAmounts(normalized);
  const static_ = decideStatic(requested, config.limits, config.limitsVersion, "explain/limits");
  if (static_.kind === "rejected") block(static_);
  // Policy rules judge the request even when the limits refuse it: every blocking reason is listed.
  const bundle = config.policy?.();
  const kind = resolveKind(
    normalized.task as NonNullable<RuntimeRequest["task"]>,
    config.kindRules,
    config.fallbackKind,
  );
  const granted = static_.kind === "granted" ? static_.granted : requested;
  const judged =
    bundle === undefined
      ? undefined
      : judgePolicy(bundle, normalized, kind, requested, granted, inputs.caller, "explain/policy");
  if (judged?.refusal !== undefined) block(judged.refusal);
  if (static_.kind === "rejected") {
    return { outcome: DecisionOutcome.REJECTED, blocking, bestGrant: undefined, grantReasons: [] };
  }
  const budgeted = applyBudgets(
    normalized,
    withPolicy(static_, judged),
    config,
    inputs.nowMs,
    "explain/budgets",
    parentEnvelope(inputs.delegationParent),
  );
  if (budgeted.kind === "rejected") {
    block(budgeted.refusal);
    return { outcome: DecisionOutcome.REJECTED, blocking, bestGrant: undefined, grantReasons: [] };
  }
  let decided = budgeted;
  if (budgeted.claim !== undefined && inputs.budgetUsage !== undefined) {
    // The best grant right now: the budgets' counters as the ledger has them, nothing reserved.
    const allocation = allocate(budgeted.claim, inputs.budgetUsage);
    if (allocation.kind === "short") block(budgetRefusal(allocation.shortfalls));
    else decided = withAllocation(budgeted, allocation, "explain/budgets");
  }
  const grantReasons = [...decided.reasons];
  const outcome =
    blocking.length > 0
      ? DecisionOutcome.REJECTED
      : judged !== undefined && judged.verdict.approvals.length > 0
        ? DecisionOutcome.PENDING_APPROVAL
        : grantReasons.length > 0
          ? DecisionOutcome.ADMITTED_PARTIAL
          : DecisionOutcome.ADMITTED;
  return {
    outcome,
    blocking,
    bestGrant: resources<GrantedResources>("envelope.v1.GrantedResources", decided.granted, normalized.deadlineUtc),
    grantReasons,
  };
}

/** The limits' decision with the policy's caps and decisions added; the same object without a bundle. */
function withPolicy(decided: Granted, judged: PolicyJudgement | undefined): Granted {
  if (judged === undefined) return decided;
  return {
    kind: "granted",
    granted: judged.granted,
    reasons: [...decided.reasons, ...judged.capReasons],
    policyDecisions: [...decided.policyDecisions, ...judged.verdict.decisions],
  };
}

interface PolicyJudgement {
  readonly verdict: PolicyVerdict;
  /** Set when a rule denies the request (or could not be evaluated). */
  readonly refusal: ErrorInit | undefined;
  /** The grant after the bundle's caps. */
  readonly granted: Amounts;
  readonly capReasons: readonly DecisionReason[];
}

/** Evaluates the bundle on a valid, normalized request, after the static limits. */
function judgePolicy(
  bundle: PolicyBundle,
  normalized: RuntimeRequest,
  kind: ExecutionKind,
  requested: Amounts,
  granted: Amounts,
  caller: Caller | undefined,
  decisionId: string,
): PolicyJudgement {
  const verdict = evaluatePolicy(bundle, { request: normalized, kind: kindName(kind), requested, caller, decisionId });
  const capped = applyCaps(granted, verdict.caps);
  return {
    verdict,
    refusal: policyRefusal(verdict, bundle.version),
    granted: capped.granted,
    capReasons: capped.reasons,
  };
}

function validationRefusal(check: Exclude<RequestCheck, { kind: "valid" }>): ErrorInit {
  switch (check.kind) {
    case "unsupported-version":
      return {
        category: "validation",
        code: "CONTRACT_VERSION_UNSUPPORTED",
        message: check.violation.message,
        violations: [check.violation],
      };
    case "invalid":
      return {
        category: "validation",
        code: "REQUEST_INVALID",
        message: invalidMessage(check.violations.length),
        violations: check.violations,
      };
  }
}

function authorizationRefusal(authorization: Authorization): ErrorInit | undefined {
  switch (authorization.kind) {
    case "permitted":
      return undefined;
    case "unknown-caller":
      return { category: "authorization", code: "CALLER_NOT_AUTHORIZED", message: authorization.message };
    case "not-permitted":
      return {
        category: "authorization",
        code: "REQUEST_NOT_PERMITTED",
        message:
          authorization.violations.length === 1
            ? "the caller is not entitled to 1 field of the request"
            : `the caller is not entitled to ${authorization.violations.length} fields of the request`,
        violations: authorization.violations,
      };
  }
}

/** A delegated request that would widen its parent's authority, as an authorization refusal. */
function delegationRefusal(request: RuntimeRequest, parent: DelegationParent | undefined): ErrorInit | undefined {
  if (!request.actor?.delegationId) return undefined;
  const violations = checkDelegation(request, parent ?? { kind: "no-ledger" });
  if (violations.length === 0) return undefined;
  return {
    category: "authorization",
    code: "DELEGATION_NOT_PERMITTED",
    message:
      violations.length === 1
        ? "the delegated request does not fit inside its parent envelope in 1 field"
        : `the delegated request does not fit inside its parent envelope in ${violations.length} fields`,
    violations,
  };
}

function parentEnvelope(parent: DelegationParent | undefined): ExecutionEnvelope | undefined {
  return parent?.kind === "found" ? parent.envelope : undefined;
}

function requestedAmounts(normalized: RuntimeRequest): Amounts {
  const budget = normalized.budget as NonNullable<RuntimeRequest["budget"]>;
  return {
    tokens: budget.maxTokens ?? 0,
    costUsdMicros: usdToMicros(budget.maxCostUsd ?? 0),
    steps: budget.maxSteps ?? 0,
    resources: budget.resources,
  };
}

function rejected(init: Parameters<typeof createErrorEnvelope>[1]): AdmissionResult {
  return { kind: "rejected", error: createErrorEnvelope(serverContractVersion, init) };
}

export function invalidMessage(count: number): string {
  return count === 1 ? "the request has 1 invalid field" : `the request has ${count} invalid fields`;
}

/**
 * Applies defaults the contract leaves to the server and removes duplicates from sets, without
 * touching the caller's object. Returns the request itself when nothing changes (the common case),
 * so that callers can tell by identity that the normalized request is the one received.
 */
function normalize(request: RuntimeRequest, config: AdmissionConfig): RuntimeRequest {
  const trace = request.trace as NonNullable<RuntimeRequest["trace"]>;
  const permissions = request.permissions as NonNullable<RuntimeRequest["permissions"]>;
  const risk = request.risk as NonNullable<RuntimeRequest["risk"]>;
  const scopes = unique(permissions.scopes);
  const allowedTools = unique(permissions.allowedTools);
  const dataClasses = unique(risk.dataClasses);
  const defaultMode = trace.contentMode === "";
  const samePermissions = scopes === permissions.scopes && allowedTools === permissions.allowedTools;
  if (!defaultMode && samePermissions && dataClasses === risk.dataClasses) return request;
  return {
    ...request,
    trace: defaultMode ? { ...trace, contentMode: config.defaultTraceContentMode } : trace,
    permissions: samePermissions ? permissions : { ...permissions, scopes, allowedTools },
    risk: dataClasses === risk.dataClasses ? risk : { ...risk, dataClasses },
  };
}

/** The items without repeats, in first-seen order; the same array when it has none. */
function unique(items: string[]): string[] {
  if (items.length < 2) return items;
  if (items.length === 2) return items[0] === items[1] ? [items[0] as string] : items;
  const set = new Set(items);
  return set.size === items.length ? items : [...set];
}

/** Requested or granted resources. Each gets its own copy of the deadline: they are separate facts. */
function resources<R extends RequestedResources | GrantedResources>(
  typeName: R["$typeName"],
  a: Amounts,
  deadline: Timestamp | undefined,
): R {
  // The optional field is set after the literal, not spread into it (docs/ARCHITECTURE.md: hot-path
  // literals).
  const r = {
    $typeName: typeName,
    tokens: a.tokens,
    costUsdMicros: BigInt(a.costUsdMicros),
    steps: a.steps,
    resources: { ...a.resources },
  } as R;
  if (deadline !== undefined) r.deadline = copyTimestamp(deadline);
  return r;
}

/** A copy of a Timestamp; clone() (reflection) only when it carries unknown fields to copy too. */
function copyTimestamp(t: Timestamp): Timestamp {
  if (t.$unknown !== undefined) return clone(TimestampSchema, t);
  return { $typeName: "google.protobuf.Timestamp", seconds: t.seconds, nanos: t.nanos };
}

function policyScope(r: RuntimeRequest): PolicyScope {
  const scope: PolicyScope = {
    $typeName: "envelope.v1.PolicyScope",
    tenantId: r.tenant?.id ?? "",
    actorSubject: r.actor?.subject ?? "",
    riskLevel: r.risk?.level ?? "",
    dataClasses: r.risk?.dataClasses ?? [],
    scopes: r.permissions?.scopes ?? [],
    allowedTools: r.permissions?.allowedTools ?? [],
    approvalPolicy: r.permissions?.approvalPolicy ?? "",
    traceContentMode: r.trace?.contentMode ?? "",
  };
  // Set after the literal, as in resources().
  if (r.actor?.delegationId !== undefined) scope.delegationId = r.actor.delegationId;
  return scope;
}
