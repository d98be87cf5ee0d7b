// Delegation: a request whose actor.delegationId names a parent envelope derives its authority from
// that parent, and may never widen it. Pure: the service looks the parent up in the ledger and
// hands it here; this decides whether the request fits inside it.
import type { FieldViolation } from "../gen/envelope/v1/error_pb.js";
import { type ExecutionEnvelope, LifecycleState } from "../gen/envelope/v1/execution_envelope_pb.js";
import type { RuntimeRequest } from "../gen/envelope/v1/runtime_request_pb.js";
import { stateName } from "./lifecycle.js";
import { timestampMs, usdToMicros, violation } from "./validate.js";

/** How the parent of a delegated request was found: looked up, or not looked up at all. */
export type DelegationParent =
  | { readonly kind: "found"; readonly envelope: ExecutionEnvelope }
  | { readonly kind: "not-found" }
  | { readonly kind: "no-ledger" };

const delegating: readonly LifecycleState[] = [LifecycleState.ADMITTED, LifecycleState.RUNNING];

/**
 * Every way the request would widen its parent's authority: another tenant, a parent that has
 * ended, a scope or tool the parent was not given, more budget than the parent was granted, a later
 * deadline. Empty when it fits.
 */
export function checkDelegation(request: RuntimeRequest, parent: DelegationParent): FieldViolation[] {
  const field = "actor.delegationId";
  if (parent.kind === "no-ledger") {
    return [violation(field, "delegation.verifiable", "cannot be checked: this server keeps no ledger of envelopes")];
  }
  if (parent.kind === "not-found") {
    return [violation(field, "delegation.exists", "names no envelope of this tenant in the ledger")];
  }
  const p = parent.envelope;
  const scope = p.policyScope;
  if (scope === undefined || scope.tenantId !== request.tenant?.id) {
    return [violation(field, "delegation.exists", "names no envelope of this tenant in the ledger")];
  }
  const out: FieldViolation[] = [];
  if (!delegating.includes(p.state)) {
    out.push(
      violation(
        field,
        "delegation.active",
        `names an envelope that is ${stateName(p.state)}; only an admitted or running one delegates`,
      ),
    );
  }
  request.permissions?.scopes.forEach((s, i) => {
    if (!scope.scopes.includes(s)) {
      out.push(
        violation(`permissions.scopes[${i}]`, "delegation.scope", `"${s}" is not among the parent envelope's scopes`),
      );
    }
  });
  request.permissions?.allowedTools.forEach((t, i) => {
    if (!scope.allowedTools.includes(t)) {
      out.push(
        violation(
          `permissions.allowedTools[${i}]`,
          "delegation.tool",
          `"${t}" is not among the parent envelope's tools`,
        ),
      );
    }
  });
  const granted = p.granted;
  const budget = request.budget;
  const over = (path: string, asked: number | undefined, limit: number, unit: string) => {
    if (asked !== undefined && asked > limit) {
      out.push(violation(path, "delegation.budget", `exceeds the parent envelope's grant of ${limit} ${unit}`));
    }
  };
  over("budget.maxTokens", budget?.maxTokens, granted?.tokens ?? 0, "tokens");
  over(
    "budget.maxCostUsd",
    budget?.maxCostUsd === undefined ? undefined : usdToMicros(budget.maxCostUsd),
    Number(granted?.costUsdMicros ?? 0n),
    "micro-dollars",
  );
  over("budget.maxSteps", budget?.maxSteps, granted?.steps ?? 0, "steps");
  const deadline = timestampMs(request.deadlineUtc);
  const parentDeadline = timestampMs(granted?.deadline);
  if (deadline !== undefined && parentDeadline !== undefined && deadline > parentDeadline) {
    out.push(violation("deadlineUtc", "delegation.deadline", "is later than the parent envelope's deadline"));
  }
  return out;
}
